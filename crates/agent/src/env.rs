//! The environment of a privileged command, built the way sudo's `env_reset` builds it.
//!
//! The caller controls its own environment completely, and many variables change what a
//! program does (`LD_PRELOAD`, `BASH_ENV`, `PYTHONPATH`, `IFS`, `PATH`, exported shell
//! functions...). So nothing is inherited by default: the result starts empty, takes a short
//! list of cosmetic variables from the caller when their values are harmless, and sets the
//! rest from facts the agent knows.

use crate::user::TargetUser;
use std::collections::BTreeMap;

/// Where `TZ` may point when it names a file.
const ZONEINFO: &str = "/usr/share/zoneinfo";
/// sudo's limit on `TZ` (PATH_MAX) and on `SUDO_COMMAND`.
const MAX_TZ: usize = 4096;
const MAX_COMMAND: usize = 4096;

/// Kept as given (sudo's `env_keep` defaults that matter on a server).
const KEEP: &[&str] = &["COLORS", "DISPLAY", "LS_COLORS", "XAUTHORITY"];
/// Kept only when the value holds neither '/' nor '%' (sudo's `env_check`): a locale or
/// terminal name with a path in it would make the C library or curses load a file the
/// caller chose.
const CHECK: &[&str] = &["COLORTERM", "LANG", "LANGUAGE", "LINGUAS", "TERM"];

/// Builds the command's environment from the caller's, keeping only safe cosmetic
/// variables, and setting `PATH` to `secure_path`, `HOME`, `SHELL`, `USER`, `LOGNAME`,
/// `USERNAME` from `target`, and `PEDM_USER`, `PEDM_UID`, `PEDM_GID`, `PEDM_COMMAND` from the
/// caller, so the program knows who asked (as sudo's `SUDO_*`). The result is sorted by name.
pub fn sanitise(
    caller_env: &[(String, String)],
    caller: &TargetUser,
    target: &TargetUser,
    command: &str,
    secure_path: &str,
) -> Vec<(String, String)> {
    let mut env: BTreeMap<String, String> = caller_env
        .iter()
        .filter(|(k, v)| should_keep(k, v))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    env.entry("TERM".into()).or_insert_with(|| "unknown".into());
    let mut set = |k: &str, v: String| {
        env.insert(k.to_string(), v);
    };
    // Only absolute directories: a relative entry would make the command search the
    // directory it happens to run in.
    let path: Vec<&str> = secure_path
        .split(':')
        .filter(|d| d.starts_with('/'))
        .collect();
    set("PATH", path.join(":"));
    set("HOME", target.home.to_string_lossy().into_owned());
    set("SHELL", target.shell.to_string_lossy().into_owned());
    set("USER", target.name.clone());
    set("LOGNAME", target.name.clone());
    set("USERNAME", target.name.clone());
    set("PEDM_USER", caller.name.clone());
    set("PEDM_UID", caller.uid.to_string());
    set("PEDM_GID", caller.gid.to_string());
    set("PEDM_COMMAND", truncate(command, MAX_COMMAND).to_string());
    env.into_iter().filter(|(_, v)| !v.contains('\0')).collect()
}

fn should_keep(key: &str, value: &str) -> bool {
    // Exported bash functions ("() { ...; }") run code in every bash the command starts.
    if value.starts_with("()") || value.contains('\0') {
        return false;
    }
    if key == "TZ" {
        return is_safe_tz(value);
    }
    if CHECK.contains(&key) || is_locale_category(key) {
        return !value.contains(['/', '%']);
    }
    KEEP.contains(&key)
}

/// `LC_ALL`, `LC_CTYPE`, ... (sudo's `LC_*`), with a name a shell could export.
fn is_locale_category(key: &str) -> bool {
    key.strip_prefix("LC_").is_some_and(|rest| {
        !rest.is_empty()
            && rest
                .bytes()
                .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_')
    })
}

/// sudo's rule: a `TZ` that names a file must name one under the zoneinfo directory, never
/// climb out of it with `..`, and hold only printable characters without spaces (and, here,
/// no '%'), so the C library never parses a file the caller wrote.
fn is_safe_tz(value: &str) -> bool {
    let v = value.strip_prefix(':').unwrap_or(value);
    if v.starts_with('/') {
        let inside = v
            .strip_prefix(ZONEINFO)
            .is_some_and(|rest| rest.starts_with('/'));
        if !inside {
            return false;
        }
    }
    !v.contains("..")
        && !v.contains('%')
        && v.bytes().all(|b| b.is_ascii_graphic())
        && v.len() < MAX_TZ
}

fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    const SECURE: &str = "/usr/sbin:/usr/bin:/sbin:/bin";

    fn user(name: &str, uid: u32) -> TargetUser {
        TargetUser {
            name: name.into(),
            uid,
            gid: uid,
            groups: vec![uid],
            home: PathBuf::from(format!("/home/{name}")),
            shell: PathBuf::from("/bin/bash"),
        }
    }

    fn run(caller_env: &[(&str, &str)]) -> BTreeMap<String, String> {
        let caller_env: Vec<(String, String)> = caller_env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let out = sanitise(
            &caller_env,
            &user("alice", 1001),
            &user("root", 0),
            "/usr/bin/id -u",
            SECURE,
        );
        let map: BTreeMap<_, _> = out.iter().cloned().collect();
        assert_eq!(map.len(), out.len(), "names are unique");
        map
    }

    fn kept(key: &str, value: &str) -> bool {
        run(&[(key, value)]).get(key).map(String::as_str) == Some(value)
    }

    #[test]
    fn loader_and_interpreter_variables_never_pass() {
        for key in [
            "LD_PRELOAD",
            "LD_LIBRARY_PATH",
            "LD_AUDIT",
            "BASH_ENV",
            "ENV",
            "IFS",
            "PYTHONPATH",
            "PERL5LIB",
            "PS4",
            "SHELLOPTS",
            "GCONV_PATH",
            "NLSPATH",
            "HOSTALIASES",
            "RANDOM_NAME",
        ] {
            assert!(!run(&[(key, "/tmp/evil")]).contains_key(key), "{key}");
            assert!(!run(&[(key, "harmless")]).contains_key(key), "{key}");
        }
    }

    #[test]
    fn path_is_the_secure_path_whatever_the_caller_says() {
        let env = run(&[("PATH", "/tmp:/home/alice/bin:/usr/bin")]);
        assert_eq!(env["PATH"], SECURE);
        let caller = user("alice", 1001);
        let env = sanitise(&[], &caller, &caller, "x", ".:/usr/bin::bin:/bin");
        let path = env.iter().find(|(k, _)| k == "PATH").unwrap();
        assert_eq!(path.1, "/usr/bin:/bin");
    }

    #[test]
    fn identity_variables_come_from_the_agent() {
        let env = run(&[
            ("HOME", "/tmp"),
            ("USER", "mallory"),
            ("LOGNAME", "mallory"),
            ("SHELL", "/tmp/sh"),
            ("PEDM_USER", "root"),
            ("PEDM_UID", "0"),
        ]);
        assert_eq!(env["HOME"], "/home/root");
        assert_eq!(env["SHELL"], "/bin/bash");
        for k in ["USER", "LOGNAME", "USERNAME"] {
            assert_eq!(env[k], "root");
        }
        assert_eq!(env["PEDM_USER"], "alice");
        assert_eq!(env["PEDM_UID"], "1001");
        assert_eq!(env["PEDM_GID"], "1001");
        assert_eq!(env["PEDM_COMMAND"], "/usr/bin/id -u");
    }

    #[test]
    fn exported_functions_are_dropped_even_from_the_safe_list() {
        for key in ["TERM", "DISPLAY", "LANG", "LC_ALL", "TZ", "LS_COLORS"] {
            assert!(!kept(key, "() { :; }; echo pwned"), "{key}");
            assert!(!kept(key, "()"), "{key}");
        }
    }

    #[test]
    fn cosmetic_variables_are_kept() {
        for (k, v) in [
            ("TERM", "xterm-256color"),
            ("COLORTERM", "truecolor"),
            ("LANG", "en_GB.UTF-8"),
            ("LANGUAGE", "en_GB:en"),
            ("LC_ALL", "C.UTF-8"),
            ("LC_TIME", "de_DE.UTF-8"),
            ("LINGUAS", "en de"),
            ("DISPLAY", ":0"),
            ("XAUTHORITY", "/home/alice/.Xauthority"),
            ("COLORS", "/etc/DIR_COLORS"),
            ("LS_COLORS", "di=01;34:ln=01;36"),
        ] {
            assert!(kept(k, v), "{k}={v}");
        }
    }

    #[test]
    fn checked_variables_with_a_path_or_percent_are_dropped() {
        for (k, v) in [
            ("TERM", "../../tmp/evil"),
            ("TERM", "/tmp/terminfo"),
            ("LANG", "/tmp/locale"),
            ("LANGUAGE", "%n%n"),
            ("LC_MESSAGES", "../../../tmp/x"),
            ("COLORTERM", "a/b"),
        ] {
            assert!(!kept(k, v), "{k}={v}");
        }
        // Not a locale category name: dropped whatever its value.
        assert!(!kept("LC_", "C"));
        assert!(!kept("LC_all", "C"));
    }

    #[test]
    fn term_defaults_to_unknown() {
        assert_eq!(run(&[])["TERM"], "unknown");
    }

    #[test]
    fn tz_follows_sudos_rules() {
        for ok in [
            "Europe/Amsterdam",
            "UTC",
            ":Europe/Berlin",
            "/usr/share/zoneinfo/Europe/London",
            ":/usr/share/zoneinfo/Asia/Tokyo",
            "EST5EDT",
        ] {
            assert!(kept("TZ", ok), "{ok}");
        }
        for bad in [
            "../../../tmp/evil",
            "Europe/../../../tmp/evil",
            "/usr/share/zoneinfo/../../../tmp/evil",
            "/tmp/evil",
            ":/tmp/evil",
            "/usr/share/zoneinfoX/evil",
            "/usr/share/zoneinfo",
            "Europe/Amsterdam %n",
            "%s%s",
            "Euro pe",
            "Europe/\u{7}Bell",
        ] {
            assert!(!kept("TZ", bad), "{bad}");
        }
        assert!(!kept("TZ", &"A".repeat(MAX_TZ)));
    }

    #[test]
    fn long_commands_are_cut_on_a_character_boundary() {
        let long = "é".repeat(MAX_COMMAND);
        let cut = truncate(&long, MAX_COMMAND);
        assert!(cut.len() <= MAX_COMMAND && long.starts_with(cut));
    }
}
