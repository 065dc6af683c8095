//! Resolving and checking the binary a session runs.
//!
//! The check and the execution must concern the same file: the path is walked one component
//! at a time with `openat(O_NOFOLLOW)` from `/`, each directory checked on its open
//! descriptor, the file opened and hashed from its descriptor, and the session later executes
//! that very descriptor (`execveat(fd, "", AT_EMPTY_PATH)`). A rename, symlink or copy over
//! the path after the check changes nothing about what runs.

use crate::error::ExecError;
use nix::fcntl::{OFlag, openat};
use nix::sys::stat::{FileStat, Mode, SFlag, fstat};
use nix::unistd::{Gid, Group};
use sha2::{Digest, Sha256};
use std::ffi::OsStr;
use std::fs::File;
use std::io::Read;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};

/// A checked binary, held open: what the policy saw (path and hash) and what will run (the
/// descriptor) cannot drift apart.
#[derive(Debug)]
pub struct ResolvedCommand {
    path: PathBuf,
    sha256: String,
    fd: OwnedFd,
    script: bool,
}

impl ResolvedCommand {
    /// The canonical absolute path (symlinks resolved), for policy matching and the audit.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Hex SHA-256 of the content that will run, for hash-pinned policies and the audit.
    pub fn sha256(&self) -> &str {
        &self.sha256
    }

    /// The open file that the session executes.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// Whether the file starts with `#!`: its interpreter must be able to open it through
    /// `/dev/fd/N`, so the descriptor has to survive the exec.
    pub fn is_script(&self) -> bool {
        self.script
    }
}

/// Finds the binary for `argv0` and checks it: an absolute path, or a bare name looked up in
/// `secure_path` (absolute directories only; a caller's `PATH` plays no part); relative paths
/// are refused. The file and every directory above it must be owned by root and writable by
/// nobody else, so no one but root can change what the name means; `caller_uid` only makes
/// the error clearer.
pub fn resolve(
    argv0: &str,
    secure_path: &str,
    caller_uid: u32,
) -> Result<ResolvedCommand, ExecError> {
    if argv0.is_empty() {
        return Err(ExecError::EmptyCommand);
    }
    let candidate = if argv0.starts_with('/') {
        PathBuf::from(argv0)
    } else if argv0.contains('/') {
        return Err(ExecError::RelativePath(argv0.to_string()));
    } else {
        search(argv0, secure_path).ok_or_else(|| ExecError::NotFound {
            name: argv0.to_string(),
            secure_path: secure_path.to_string(),
        })?
    };
    let canonical = std::fs::canonicalize(&candidate).map_err(|source| ExecError::Path {
        path: candidate.clone(),
        source,
    })?;
    let fd = open_checked(&canonical, caller_uid)?;
    let (sha256, shebang) = hash(&fd).map_err(|source| ExecError::Path {
        path: canonical.clone(),
        source,
    })?;
    let script = shebang.is_some();
    if let Some(line) = shebang {
        check_interpreter(&canonical, &line, secure_path, caller_uid, 0)?;
    }
    Ok(ResolvedCommand {
        path: canonical,
        sha256,
        fd,
        script,
    })
}

/// The first executable regular file named `name` in the absolute directories of `path`.
fn search(name: &str, path: &str) -> Option<PathBuf> {
    path.split(':')
        .filter(|dir| dir.starts_with('/'))
        .map(|dir| Path::new(dir).join(name))
        .find(|p| {
            std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

/// Walks `path` (canonical, absolute) from `/` without following any symlink, checking each
/// directory, and opens the file read-only.
fn open_checked(path: &Path, caller_uid: u32) -> Result<OwnedFd, ExecError> {
    let io = |p: &Path, e: nix::Error| ExecError::Path {
        path: p.to_path_buf(),
        source: e.into(),
    };
    let dir_flags = OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    let root = Path::new("/");
    let mut dir = nix::fcntl::open(root, dir_flags, Mode::empty()).map_err(|e| io(root, e))?;
    check_owner_and_mode(root, &fstat(&dir).map_err(|e| io(root, e))?, caller_uid)?;

    let names: Vec<&OsStr> = path
        .components()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n),
            _ => None,
        })
        .collect();
    let Some((file_name, dirs)) = names.split_last() else {
        return Err(ExecError::NotRegularFile {
            path: path.to_path_buf(),
        });
    };
    let mut walked = PathBuf::from("/");
    for name in dirs {
        walked.push(name);
        dir = openat(&dir, *name, dir_flags, Mode::empty()).map_err(|e| io(&walked, e))?;
        check_owner_and_mode(
            &walked,
            &fstat(&dir).map_err(|e| io(&walked, e))?,
            caller_uid,
        )?;
    }
    walked.push(file_name);
    // O_NONBLOCK: opening a FIFO planted at the path must not hang the agent.
    let file_flags = OFlag::O_RDONLY
        | OFlag::O_CLOEXEC
        | OFlag::O_NOFOLLOW
        | OFlag::O_NOCTTY
        | OFlag::O_NONBLOCK;
    let fd = openat(&dir, *file_name, file_flags, Mode::empty()).map_err(|e| io(&walked, e))?;
    let st = fstat(&fd).map_err(|e| io(&walked, e))?;
    if SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT != SFlag::S_IFREG {
        return Err(ExecError::NotRegularFile { path: walked });
    }
    if st.st_mode & 0o111 == 0 {
        return Err(ExecError::NotExecutable { path: walked });
    }
    check_owner_and_mode(&walked, &st, caller_uid)?;
    Ok(fd)
}

/// Checks a working directory asked for (`pedm exec --chdir`): an absolute path, every
/// component a directory (symlinks resolved first) owned by root or the run-as user and
/// writable by neither group nor others. A directory someone else can write would let them
/// plant what the command loads from its working directory (`python3 -m` finds modules
/// there) and run it as the run-as user. Returns the canonical path.
pub fn check_working_dir(
    dir: &str,
    run_as: &crate::user::TargetUser,
) -> Result<PathBuf, ExecError> {
    let bad = |why: String| ExecError::WorkingDir {
        dir: dir.to_string(),
        why,
    };
    if !dir.starts_with('/') {
        return Err(bad("is not an absolute path".into()));
    }
    let canonical = std::fs::canonicalize(dir).map_err(|e| bad(e.to_string()))?;
    let dir_flags = OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    let mut walked = PathBuf::from("/");
    let mut fd =
        nix::fcntl::open(&walked, dir_flags, Mode::empty()).map_err(|e| bad(e.to_string()))?;
    let check = |p: &Path, st: &FileStat| -> Result<(), ExecError> {
        let by = if st.st_uid != 0 && st.st_uid != run_as.uid {
            Some(format!("uid {}", st.st_uid))
        } else if st.st_mode & 0o002 != 0 {
            Some("every user".to_string())
        } else if st.st_mode & 0o020 != 0 {
            Some(format!("group gid {}", st.st_gid))
        } else {
            None
        };
        match by {
            Some(who) => Err(ExecError::WorkingDir {
                dir: dir.to_string(),
                why: format!(
                    "{} can be changed by {who}, not only by root or {}",
                    p.display(),
                    run_as.name
                ),
            }),
            None => Ok(()),
        }
    };
    check(&walked, &fstat(&fd).map_err(|e| bad(e.to_string()))?)?;
    for c in canonical.components() {
        let Component::Normal(name) = c else {
            continue;
        };
        walked.push(name);
        fd = openat(&fd, name, dir_flags, Mode::empty())
            .map_err(|e| bad(format!("{}: {e}", walked.display())))?;
        check(&walked, &fstat(&fd).map_err(|e| bad(e.to_string()))?)?;
    }
    Ok(canonical)
}

/// The strict rule: owned by root, writable by neither group nor others.
fn check_owner_and_mode(path: &Path, st: &FileStat, caller_uid: u32) -> Result<(), ExecError> {
    if st.st_uid != 0 {
        let caller = if st.st_uid == caller_uid {
            " (the caller)"
        } else {
            ""
        };
        return Err(ExecError::NotRootOwned {
            path: path.to_path_buf(),
            owner: format!("uid {}{caller}", st.st_uid),
        });
    }
    if st.st_mode & 0o002 != 0 {
        return Err(ExecError::Writable {
            path: path.to_path_buf(),
            who: "every user".into(),
        });
    }
    if st.st_mode & 0o020 != 0 {
        let who = match Group::from_gid(Gid::from_raw(st.st_gid)) {
            Ok(Some(g)) => format!("group {} (gid {})", g.name, st.st_gid),
            _ => format!("group gid {}", st.st_gid),
        };
        return Err(ExecError::Writable {
            path: path.to_path_buf(),
            who,
        });
    }
    Ok(())
}

/// How much of a script's first line the kernel reads for its `#!` line (`BINPRM_BUF_SIZE`).
const SHEBANG_MAX: usize = 256;
/// How deep interpreters may nest (a script whose interpreter is a script...): the kernel's
/// own limit is 4 (`binfmt_script` recursion).
const INTERPRETER_DEPTH: usize = 4;

/// SHA-256 of the file behind `fd` (read through a duplicate; the offset is irrelevant to
/// exec) and, when it starts with `#!`, its first line (at most what the kernel reads).
fn hash(fd: &OwnedFd) -> std::io::Result<(String, Option<Vec<u8>>)> {
    let mut file = File::from(fd.try_clone()?);
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut first = Vec::with_capacity(SHEBANG_MAX);
    loop {
        let n = match file.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if first.len() < SHEBANG_MAX {
            let take = (SHEBANG_MAX - first.len()).min(n);
            first.extend_from_slice(&buf[..take]);
        }
        hasher.update(&buf[..n]);
    }
    let shebang = first.starts_with(b"#!").then(|| {
        let end = first
            .iter()
            .position(|&b| b == b'\n')
            .unwrap_or(first.len());
        first[2..end].to_vec()
    });
    Ok((hex::encode(hasher.finalize()), shebang))
}

/// A script runs its interpreter with the script's privileges: the interpreter (and, for
/// `#!/usr/bin/env NAME`, the program `env` finds in the secure PATH, which is the PATH the
/// session gets) must pass the same checks as the script itself, recursively for an
/// interpreter that is a script.
fn check_interpreter(
    script: &Path,
    line: &[u8],
    secure_path: &str,
    caller_uid: u32,
    depth: usize,
) -> Result<(), ExecError> {
    use std::os::unix::ffi::OsStrExt;
    let refuse = |why: String| ExecError::Interpreter {
        script: script.to_path_buf(),
        why,
    };
    if depth >= INTERPRETER_DEPTH {
        return Err(refuse(format!(
            "interpreters nested more than {INTERPRETER_DEPTH} deep"
        )));
    }
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let mut words = line
        .split(|b| *b == b' ' || *b == b'\t')
        .filter(|w| !w.is_empty());
    let Some(interp) = words.next() else {
        return Err(refuse("the #! line names no interpreter".into()));
    };
    let interp = Path::new(OsStr::from_bytes(interp));
    if !interp.is_absolute() {
        return Err(refuse(format!(
            "interpreter {} is not an absolute path",
            interp.display()
        )));
    }
    let mut to_check = vec![interp.to_path_buf()];
    if interp.file_name() == Some(OsStr::new("env")) {
        // The kernel passes everything after the interpreter as one argument.
        let rest: Vec<&[u8]> = words.collect();
        let Some(name) = rest.first() else {
            return Err(refuse("#!/usr/bin/env names no program".into()));
        };
        if rest.len() > 1 || name.starts_with(b"-") || name.contains(&b'=') {
            return Err(refuse(format!(
                "#!{} with options or assignments is not supported: name the interpreter's absolute path",
                String::from_utf8_lossy(line)
            )));
        }
        let name = String::from_utf8_lossy(name).into_owned();
        let found = if name.contains('/') {
            PathBuf::from(&name)
        } else {
            search(&name, secure_path).ok_or_else(|| {
                refuse(format!(
                    "{name} (run through env) is not found in secure PATH {secure_path}"
                ))
            })?
        };
        to_check.push(found);
    }
    for path in to_check {
        let canonical = std::fs::canonicalize(&path).map_err(|source| ExecError::Path {
            path: path.clone(),
            source,
        })?;
        let fd = open_checked(&canonical, caller_uid)
            .map_err(|e| refuse(format!("interpreter {}: {e}", path.display())))?;
        let (_, nested) = hash(&fd).map_err(|source| ExecError::Path {
            path: canonical.clone(),
            source,
        })?;
        if let Some(nested) = nested {
            check_interpreter(&canonical, &nested, secure_path, caller_uid, depth + 1)?;
        }
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::os::unix::fs::{PermissionsExt, chown};

    const SECURE: &str = "/usr/sbin:/usr/bin:/sbin:/bin";

    pub(crate) fn is_root() -> bool {
        nix::unistd::geteuid().is_root()
    }

    /// A root-owned 0700 directory whose ancestors pass the checks (not under /tmp, which
    /// is writable by everyone).
    pub(crate) fn secure_tempdir() -> tempfile::TempDir {
        tempfile::Builder::new()
            .prefix("pedm-agent-test-")
            .tempdir_in("/run")
            .expect("create a directory under /run")
    }

    #[test]
    fn absolute_paths_resolve_to_the_canonical_file() {
        let c = resolve("/bin/sh", SECURE, 1000).unwrap();
        assert!(c.path().is_absolute());
        assert_eq!(c.path(), std::fs::canonicalize("/bin/sh").unwrap());
        assert_eq!(c.sha256().len(), 64);
        assert!(!c.is_script());
    }

    #[test]
    fn bare_names_are_found_in_the_secure_path() {
        let c = resolve("env", SECURE, 1000).unwrap();
        assert_eq!(c.path(), std::fs::canonicalize("/usr/bin/env").unwrap());
        // Relative directories in the secure PATH are ignored.
        let e = resolve("env", ".:bin", 1000).unwrap_err();
        assert_eq!(e.to_string(), "command env not found in secure PATH .:bin");
        let e = resolve("pedm-no-such-command", SECURE, 1000).unwrap_err();
        assert_eq!(
            e.to_string(),
            "command pedm-no-such-command not found in secure PATH /usr/sbin:/usr/bin:/sbin:/bin"
        );
    }

    #[test]
    fn relative_paths_are_refused() {
        for p in ["bin/x", "./x", "../usr/bin/id"] {
            let e = resolve(p, SECURE, 1000).unwrap_err();
            assert_eq!(
                e.to_string(),
                format!(
                    "relative path {p} refused: give an absolute path or a name found in the secure PATH"
                )
            );
        }
        assert!(matches!(
            resolve("", SECURE, 1000),
            Err(ExecError::EmptyCommand)
        ));
    }

    #[test]
    fn a_binary_in_a_world_writable_directory_is_refused() {
        let dir = tempfile::tempdir_in("/tmp").unwrap();
        let bin = dir.path().join("echo");
        std::fs::copy("/bin/echo", &bin).unwrap();
        let e = resolve(bin.to_str().unwrap(), SECURE, 1000).unwrap_err();
        assert_eq!(e.to_string(), "/tmp is writable by every user");
    }

    #[test]
    fn directories_and_non_executables_are_refused() {
        assert!(matches!(
            resolve("/usr/bin", SECURE, 1000),
            Err(ExecError::NotRegularFile { .. })
        ));
        assert!(matches!(
            resolve("/etc/passwd", SECURE, 1000),
            Err(ExecError::NotExecutable { .. })
        ));
        assert!(matches!(
            resolve("/nonexistent/x", SECURE, 1000),
            Err(ExecError::Path { .. })
        ));
    }

    #[test]
    fn a_binary_a_user_can_change_is_refused() {
        if !is_root() {
            eprintln!("skipped: needs root to create root-owned directories");
            return;
        }
        let dir = secure_tempdir();
        let bin = dir.path().join("echo");
        std::fs::copy("/bin/echo", &bin).unwrap();
        let path = bin.to_str().unwrap();
        assert!(resolve(path, SECURE, 1001).is_ok());

        chown(&bin, Some(1001), None).unwrap();
        let e = resolve(path, SECURE, 1001).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!("{path} is owned by uid 1001 (the caller), not root")
        );
        chown(&bin, Some(0), None).unwrap();

        std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o777)).unwrap();
        let e = resolve(path, SECURE, 1001).unwrap_err();
        assert_eq!(e.to_string(), format!("{path} is writable by every user"));

        std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o775)).unwrap();
        let e = resolve(path, SECURE, 1001).unwrap_err();
        assert!(
            e.to_string()
                .starts_with(&format!("{path} is writable by group ")),
            "{e}"
        );
        std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();

        // A directory in between owned by a user.
        let sub = dir.path().join("sub");
        std::fs::create_dir(&sub).unwrap();
        std::fs::copy("/bin/echo", sub.join("echo")).unwrap();
        chown(&sub, Some(1001), None).unwrap();
        let e = resolve(sub.join("echo").to_str().unwrap(), SECURE, 4242).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!("{} is owned by uid 1001, not root", sub.display())
        );
    }

    #[test]
    fn symlinks_resolve_to_their_target_and_are_checked_there() {
        if !is_root() {
            eprintln!("skipped: needs root to create root-owned directories");
            return;
        }
        let dir = secure_tempdir();
        let link = dir.path().join("link");
        std::os::unix::fs::symlink("/usr/bin/env", &link).unwrap();
        let c = resolve(link.to_str().unwrap(), SECURE, 1000).unwrap();
        assert_eq!(c.path(), std::fs::canonicalize("/usr/bin/env").unwrap());

        // A symlink into /tmp is refused at /tmp.
        let tmp = tempfile::tempdir_in("/tmp").unwrap();
        std::fs::copy("/bin/echo", tmp.path().join("echo")).unwrap();
        std::os::unix::fs::symlink(tmp.path().join("echo"), dir.path().join("bad")).unwrap();
        let e = resolve(dir.path().join("bad").to_str().unwrap(), SECURE, 1000).unwrap_err();
        assert_eq!(e.to_string(), "/tmp is writable by every user");
    }

    #[test]
    fn the_hash_is_sha256sum_of_the_file() {
        let c = resolve("/bin/sh", SECURE, 1000).unwrap();
        let out = std::process::Command::new("sha256sum")
            .arg(c.path())
            .output()
            .unwrap();
        let expected = String::from_utf8(out.stdout).unwrap();
        assert_eq!(c.sha256(), expected.split_whitespace().next().unwrap());
    }

    #[test]
    fn scripts_are_recognised() {
        if !is_root() {
            eprintln!("skipped: needs root to create root-owned directories");
            return;
        }
        let dir = secure_tempdir();
        let script = dir.path().join("s");
        std::fs::write(&script, "#!/bin/sh\necho hi\n").unwrap();
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        assert!(
            resolve(script.to_str().unwrap(), SECURE, 1000)
                .unwrap()
                .is_script()
        );
    }

    /// A root-owned, pinned script whose interpreter someone else can replace would run that
    /// someone's code with the script's privileges: refused, directly and through `env`.
    #[test]
    fn a_script_whose_interpreter_a_user_can_change_is_refused() {
        if !is_root() {
            eprintln!("skipped: needs root to create root-owned directories");
            return;
        }
        let dir = secure_tempdir();
        let user_dir = dir.path().join("user");
        std::fs::create_dir(&user_dir).unwrap();
        chown(&user_dir, Some(1001), None).unwrap();
        let interp = user_dir.join("python3");
        std::fs::copy("/bin/sh", &interp).unwrap();
        chown(&interp, Some(0), Some(0)).unwrap();
        let script = |name: &str, line: &str| {
            let p = dir.path().join(name);
            std::fs::write(&p, format!("{line}\necho hi\n")).unwrap();
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
            p.to_str().unwrap().to_string()
        };
        let direct = script("direct", &format!("#!{}", interp.display()));
        let e = resolve(&direct, SECURE, 1000).unwrap_err();
        assert!(matches!(e, ExecError::Interpreter { .. }), "{e}");
        assert!(e.to_string().contains("owned by uid 1001"), "{e}");

        // Through env: the program env would find in a secure PATH holding a user's directory.
        let path_with_user_dir = format!("{}:{SECURE}", user_dir.display());
        let via_env = script("via-env", "#!/usr/bin/env python3");
        let e = resolve(&via_env, &path_with_user_dir, 1000).unwrap_err();
        assert!(e.to_string().contains("interpreter"), "{e}");
        assert!(
            resolve(&script("env-opts", "#!/usr/bin/env -S sh -e"), SECURE, 1000).is_err(),
            "env with options is refused"
        );
        assert!(
            resolve(&script("relative", "#!sh"), SECURE, 1000).is_err(),
            "a relative interpreter is refused"
        );
        // Sound interpreters pass, directly and through env.
        assert!(resolve(&script("ok", "#!/bin/sh -e"), SECURE, 1000).is_ok());
        assert!(resolve(&script("ok-env", "#!/usr/bin/env sh"), SECURE, 1000).is_ok());
        // An interpreter that is itself a script is checked too.
        let nested_interp = script("nested-interp", &format!("#!{}", interp.display()));
        let e = resolve(
            &script("nested", &format!("#!{nested_interp}")),
            SECURE,
            1000,
        )
        .unwrap_err();
        assert!(e.to_string().contains("owned by uid 1001"), "{e}");
    }
}
