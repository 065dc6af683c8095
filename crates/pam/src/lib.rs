//! `pam_pedm.so`, a PAM **account** module: `sshd`, `login` or any PAM service lets a user in
//! to this host only while they hold a live pedm grant for it (of a given role, optionally),
//! as `pedm-agent` decides it from its signed snapshot (so it holds while pedmd is away). For
//! hosts where logging in is itself the privilege.
//!
//! ```text
//! # /etc/pam.d/sshd, after the other account lines
//! account required pam_pedm.so
//! # or: only with a grant of role "login", another socket
//! account required pam_pedm.so role=login socket=/run/pedm/agent.sock timeout=10
//! ```
//!
//! Each decision is recorded by the agent (`host.login`, allowed or denied, with the service
//! and the remote host). Fails closed: an agent out of reach, a bad option or a malformed
//! answer deny (`PAM_PERM_DENIED` / `PAM_SERVICE_ERR`), never allow. Only the account stage
//! is implemented: authentication stays with the modules that do it (a password, keys).

use pamsm::{Pam, PamError, PamFlags, PamLibExt, PamMsgStyle, PamServiceModule, pam_module};
use pedm_api::socket::{AccessCheck, AskOptions};

/// The module's arguments from its PAM line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    pub ask: AskOptions,
    pub role: Option<String>,
}

impl Options {
    /// `socket=PATH`, `timeout=SECONDS` (1–300, default 10), `role=NAME`.
    pub fn parse(args: &[String]) -> Result<Options, String> {
        let mut o = Options {
            ask: AskOptions::default(),
            role: None,
        };
        for a in args {
            if o.ask.take(a)? {
                continue;
            }
            match a.split_once('=') {
                Some(("role", v)) if !v.is_empty() => o.role = Some(v.to_string()),
                _ => {
                    return Err(format!(
                        "unknown argument {a:?} (known: socket=, timeout=, role=)"
                    ));
                }
            }
        }
        Ok(o)
    }
}

/// The decision for one login: `Ok` lets the user in, `Err` is the message for them.
pub fn decide(
    options: &Options,
    user: &str,
    service: &str,
    rhost: Option<&str>,
) -> Result<(), String> {
    let check = AccessCheck::Login {
        user: user.to_string(),
        service: service.to_string(),
        rhost: rhost.map(str::to_string),
        role: options.role.clone(),
    };
    match options.ask.ask(&check) {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(refused)) => Err(format!("pedm: {}", refused.reason)),
        Err(e) => Err(format!(
            "pedm: cannot ask pedm-agent at {}: {e}; no login without its answer",
            options.ask.socket.display()
        )),
    }
}

struct PamPedm;

impl PamServiceModule for PamPedm {
    fn acct_mgmt(pamh: Pam, _flags: PamFlags, args: Vec<String>) -> PamError {
        let options = match Options::parse(&args) {
            Ok(o) => o,
            Err(e) => {
                let _ = pamh.syslog(pamsm::LogLvl::ERR, &format!("pam_pedm: {e}"));
                return PamError::SERVICE_ERR;
            }
        };
        let text = |c: pamsm::PamResult<Option<&std::ffi::CStr>>| {
            c.ok().flatten().map(|s| s.to_string_lossy().into_owned())
        };
        let Some(user) = text(pamh.get_cached_user()) else {
            return PamError::USER_UNKNOWN;
        };
        let service = text(pamh.get_service()).unwrap_or_else(|| "unknown".into());
        let rhost = text(pamh.get_rhost());
        match decide(&options, &user, &service, rhost.as_deref()) {
            Ok(()) => PamError::SUCCESS,
            Err(msg) => {
                let _ = pamh.syslog(pamsm::LogLvl::NOTICE, &format!("{user}: {msg}"));
                let _ = pamh.conv(Some(&msg), PamMsgStyle::ERROR_MSG);
                PamError::PERM_DENIED
            }
        }
    }
}

pam_module!(PamPedm);

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;
    use std::time::Duration;

    fn list(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn arguments_are_checked() {
        let o = Options::parse(&list(&["role=login", "socket=/tmp/a.sock", "timeout=2"])).unwrap();
        assert_eq!(o.role.as_deref(), Some("login"));
        assert_eq!(o.ask.socket, PathBuf::from("/tmp/a.sock"));
        assert_eq!(o.ask.timeout, Duration::from_secs(2));
        assert!(
            Options::parse(&list(&["socket=x"]))
                .unwrap_err()
                .contains("absolute")
        );
        assert!(Options::parse(&list(&["timeout=301"])).is_err());
        assert!(
            Options::parse(&list(&["role="]))
                .unwrap_err()
                .contains("unknown argument")
        );
        assert!(Options::parse(&list(&["debug"])).is_err());
    }

    #[test]
    fn an_agent_out_of_reach_denies() {
        let o = Options {
            ask: AskOptions {
                socket: PathBuf::from("/nonexistent/pedm-agent.sock"),
                timeout: Duration::from_secs(1),
            },
            role: None,
        };
        let e = decide(&o, "alice", "sshd", None).unwrap_err();
        assert!(e.contains("cannot ask pedm-agent"), "{e}");
    }
}
