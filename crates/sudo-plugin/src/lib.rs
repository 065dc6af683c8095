//! `libpedm_sudo.so`, a sudo **approval** plugin (sudo_plugin(5), sudo 1.9): `sudo CMD`
//! succeeds only while the caller holds a live pedm grant on this host that allows `CMD`, as
//! `pedm-agent` decides it, from the same signed snapshot (so it holds while pedmd is away)
//! and the same policy as `pedm exec`. Otherwise sudo prints why, and how to ask for access.
//!
//! ```text
//! # /etc/sudo.conf
//! Plugin sudoers_policy sudoers.so
//! Plugin pedm_approval /usr/local/lib/pedm/libpedm_sudo.so socket=/run/pedm/agent.sock
//! ```
//!
//! Why an approval plugin and not a policy plugin: sudoers keeps doing what it does well
//! (authentication, the environment, `secure_path`, logging, I/O logs) and still says who may
//! *ever* run what; pedm adds *only now, with a grant, under policy*. Every plugin must
//! approve, so pedm can only narrow what sudoers allows, never widen it.
//!
//! What a yes carries: the grant's cgroup, which this plugin (running in sudo as root) joins
//! before sudo starts the command, so that the grant's end ends the command and everything it
//! started, as it ends a `pedm exec` session. The decision is recorded by the agent
//! (`exec.allowed` / `exec.denied` with `via: sudo`). Not recorded by pedm: the session's
//! terminal (sudo's own `log_output` can keep it); roles that need pedm to run the command
//! itself (`noexec`, `intercept`, watched paths) are refused here, with the `pedm exec` line.
//!
//! Fails closed: an agent that cannot be reached, a malformed answer, a cgroup that cannot be
//! joined or a panic all deny. All `unsafe` (the C interface) is in [`ffi`].

mod ffi;

use pedm_api::socket::{AccessCheck, AskOptions};

/// The plugin's settings, from its line in `sudo.conf`: `socket=PATH` (default the agent's),
/// `timeout=SECONDS` (default 10).
pub type Options = AskOptions;

/// Parses the plugin's options.
pub fn options(list: &[String]) -> Result<Options, String> {
    let mut o = Options::default();
    for opt in list {
        if !o.take(opt)? {
            return Err(format!("unknown option {opt:?} (known: socket=, timeout=)"));
        }
    }
    Ok(o)
}

/// The value of `key` in a sudo `name=value` list (split on the first `=`).
fn value<'a>(list: &'a [String], key: &str) -> Option<&'a str> {
    list.iter().find_map(|kv| match kv.split_once('=') {
        Some((k, v)) if k == key => Some(v),
        _ => None,
    })
}

/// The account the command will run as: `runas_euid` (else `runas_uid`) from sudo's
/// `command_info`, looked up by id (`runas_user` is for auditing only, as sudo_plugin(5) says).
fn run_as(command_info: &[String]) -> Result<String, String> {
    let uid = value(command_info, "runas_euid")
        .or_else(|| value(command_info, "runas_uid"))
        .ok_or("sudo gave no runas_uid")?;
    let uid: u32 = uid
        .parse()
        .map_err(|_| format!("sudo gave runas_uid={uid}"))?;
    match nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid)) {
        Ok(Some(u)) => Ok(u.name),
        Ok(None) => Err(format!("no account has uid {uid}")),
        Err(e) => Err(format!("cannot look uid {uid} up: {e}")),
    }
}

/// The question sudo's answer depends on: who (`user_info`'s `user`), what (`command_info`'s
/// `command`, the path sudo resolved, and the arguments of `run_argv`), as whom.
pub fn check_of(
    user_info: &[String],
    command_info: &[String],
    run_argv: &[String],
) -> Result<AccessCheck, String> {
    let user = value(user_info, "user").ok_or("sudo gave no user")?;
    let command = value(command_info, "command").ok_or("sudo gave no command")?;
    let mut argv = vec![command.to_string()];
    argv.extend(run_argv.iter().skip(1).cloned());
    Ok(AccessCheck::Sudo {
        user: user.to_string(),
        argv,
        run_as: run_as(command_info)?,
    })
}

/// Asks the agent; on a yes, joins the grant's cgroups. `Err` is the message sudo prints.
pub fn approve(options: &Options, check: &AccessCheck) -> Result<(), String> {
    match options.ask(check) {
        Ok(Ok(allowed)) => {
            // This process is sudo; the command it starts next is born where it is.
            for procs in &allowed.join {
                std::fs::write(procs, "0").map_err(|e| {
                    format!("pedm: cannot join the grant's cgroup {procs}: {e}; nothing runs")
                })?;
            }
            Ok(())
        }
        Ok(Err(refused)) => Err(format!("pedm: {}", refused.reason)),
        Err(e) => Err(format!(
            "pedm: cannot ask pedm-agent at {}: {e}; nothing runs without its answer",
            options.socket.display()
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;
    use std::time::Duration;

    fn list(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn options_are_checked() {
        assert_eq!(
            options(&list(&["socket=/tmp/a.sock", "timeout=3"])),
            Ok(Options {
                socket: PathBuf::from("/tmp/a.sock"),
                timeout: Duration::from_secs(3)
            })
        );
        assert_eq!(
            options(&[]).unwrap().socket,
            PathBuf::from(pedm_api::socket::DEFAULT_SOCKET)
        );
        assert!(
            options(&list(&["socket=rel.sock"]))
                .unwrap_err()
                .contains("absolute")
        );
        assert!(
            options(&list(&["timeout=0"]))
                .unwrap_err()
                .contains("1 to 300")
        );
        assert!(
            options(&list(&["verbose"]))
                .unwrap_err()
                .contains("unknown option")
        );
    }

    #[test]
    fn the_question_comes_from_what_sudo_resolved() {
        let c = check_of(
            &list(&["uid=1000", "user=alice", "cwd=/home/alice"]),
            &list(&["command=/usr/bin/id", "runas_uid=0", "runas_user=mallory"]),
            &list(&["id", "-u", "a=b"]),
        )
        .unwrap();
        assert_eq!(
            c,
            AccessCheck::Sudo {
                user: "alice".into(),
                argv: list(&["/usr/bin/id", "-u", "a=b"]),
                // By id, not by the name sudo gives for auditing.
                run_as: "root".into(),
            }
        );
        assert!(check_of(&list(&["user=alice"]), &list(&["runas_uid=0"]), &[]).is_err());
        assert!(
            check_of(
                &list(&["user=alice"]),
                &list(&["command=/bin/true", "runas_uid=x"]),
                &[]
            )
            .unwrap_err()
            .contains("runas_uid=x")
        );
    }

    #[test]
    fn an_agent_out_of_reach_denies() {
        let dir = std::env::temp_dir().join(format!("pedm-sudo-{}", std::process::id()));
        let o = Options {
            socket: dir.join("missing.sock"),
            timeout: Duration::from_secs(1),
        };
        let check = AccessCheck::Sudo {
            user: "alice".into(),
            argv: list(&["/bin/true"]),
            run_as: "root".into(),
        };
        let e = approve(&o, &check).unwrap_err();
        assert!(
            e.contains("cannot ask pedm-agent") && e.contains("missing.sock"),
            "{e}"
        );
    }
}
