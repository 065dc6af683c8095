//! Whether a command is a shell, decided by the agent (policy sees it as `resource.shell`),
//! not by the client: `pedm exec -- /bin/bash -il` is as much a shell as `pedm shell`.
//!
//! A command is a shell when its binary is a login shell listed in `/etc/shells` or a known
//! interactive interpreter, and it either has a terminal (anything typed then runs) or no
//! argument at all (it reads its program from standard input). `sh -c 'one command'` without
//! a terminal stays one command, visible in `resource.args` for policies to match.
//!
//! What this cannot see: a program that is not a known shell or interpreter but offers a
//! shell of its own (`vi` with `:!sh`, `less` with `!`, `find -exec`, `awk 'BEGIN{system()}'`).
//! Policies confine those with allowlists of exact commands, not with `resource.shell`.

use std::path::Path;

/// Interpreters that read and run whatever is typed at them (matched on the file name, with
/// version suffixes: `python3.11`, `perl5.36`).
const INTERPRETERS: &[&str] = &[
    "sh", "bash", "dash", "zsh", "ksh", "mksh", "fish", "csh", "tcsh", "busybox", "python", "perl",
    "ruby", "irb", "node", "nodejs", "lua", "php", "tclsh", "wish", "guile", "R", "julia", "pwsh",
    "expect", "gdb", "sqlite3", "psql", "mysql", "mariadb",
];

/// See the module documentation. `path` is the canonical path that runs.
pub fn is_shell(path: &Path, args: &[String], tty: bool) -> bool {
    (tty || args.is_empty()) && (listed_in_etc_shells(path) || is_interpreter(path))
}

fn is_interpreter(path: &Path) -> bool {
    let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
        return false;
    };
    // `python3.11` -> `python`, `perl5.36` -> `perl`, `lua5.4` -> `lua`.
    let base = name.trim_end_matches(|c: char| c.is_ascii_digit() || c == '.');
    INTERPRETERS.contains(&base) || INTERPRETERS.contains(&name)
}

fn listed_in_etc_shells(path: &Path) -> bool {
    let Ok(text) = std::fs::read_to_string("/etc/shells") else {
        return false;
    };
    text.lines()
        .map(str::trim)
        .filter(|l| l.starts_with('/'))
        .any(|l| std::fs::canonicalize(l).is_ok_and(|c| c == path))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn canon(p: &str) -> std::path::PathBuf {
        std::fs::canonicalize(p).unwrap()
    }

    #[test]
    fn shells_and_interpreters_with_a_terminal_or_no_arguments_are_shells() {
        let bash = canon("/bin/bash");
        assert!(is_shell(&bash, &["-il".into()], true));
        assert!(is_shell(&bash, &[], false), "reads its program from stdin");
        assert!(!is_shell(&bash, &["-c".into(), "id".into()], false));
        assert!(is_shell(&bash, &["-c".into(), "id".into()], true));
        assert!(is_shell(Path::new("/usr/bin/python3.11"), &[], true));
        assert!(is_shell(Path::new("/usr/bin/perl"), &["-de0".into()], true));
        assert!(!is_shell(&canon("/bin/true"), &[], true));
        assert!(!is_shell(Path::new("/usr/bin/systemctl"), &[], true));
    }
}
