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

use std::path::{Path, PathBuf};

/// Interpreters that read and run whatever is typed at them (matched on the file name, with
/// version suffixes: `python3.11`, `perl5.36`).
const INTERPRETERS: &[&str] = &[
    "sh", "bash", "dash", "zsh", "ksh", "mksh", "fish", "csh", "tcsh", "busybox", "python", "perl",
    "ruby", "irb", "node", "nodejs", "lua", "php", "tclsh", "wish", "guile", "R", "julia", "pwsh",
    "expect", "gdb", "sqlite3", "psql", "mysql", "mariadb",
];

/// See the module documentation. `path` is the canonical path that runs.
pub fn is_shell(path: &Path, args: &[String], tty: bool) -> bool {
    (tty || args.is_empty()) && (is_interpreter(path) || listed_in_etc_shells(path))
}

fn is_interpreter(path: &Path) -> bool {
    let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
        return false;
    };
    // `python3.11` -> `python`, `perl5.36` -> `perl`, `lua5.4` -> `lua`.
    let base = name.trim_end_matches(|c: char| c.is_ascii_digit() || c == '.');
    INTERPRETERS.contains(&base) || INTERPRETERS.contains(&name)
}

/// The canonical paths of `/etc/shells`, read again whenever the file changes (its inode,
/// size or modification time): every session asks, and canonicalising each line costs a
/// system call per path component.
static ETC_SHELLS: std::sync::Mutex<Option<(FileStamp, Vec<PathBuf>)>> =
    std::sync::Mutex::new(None);

type FileStamp = (u64, u64, u64, i64, i64);

fn listed_in_etc_shells(path: &Path) -> bool {
    const FILE: &str = "/etc/shells";
    let Ok(meta) = std::fs::metadata(FILE) else {
        return false;
    };
    use std::os::unix::fs::MetadataExt;
    let stamp = (
        meta.dev(),
        meta.ino(),
        meta.size(),
        meta.mtime(),
        meta.mtime_nsec(),
    );
    let mut cache = ETC_SHELLS.lock().unwrap_or_else(|e| e.into_inner());
    if cache.as_ref().is_none_or(|(s, _)| *s != stamp) {
        let Ok(text) = std::fs::read_to_string(FILE) else {
            return false;
        };
        let shells = text
            .lines()
            .map(str::trim)
            .filter(|l| l.starts_with('/'))
            .filter_map(|l| std::fs::canonicalize(l).ok())
            .collect();
        *cache = Some((stamp, shells));
    }
    cache
        .as_ref()
        .is_some_and(|(_, shells)| shells.iter().any(|c| c == path))
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
