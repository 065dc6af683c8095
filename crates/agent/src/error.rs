//! The errors of the execution engine.
//!
//! Their messages go back to the caller in `Refused` frames and into the audit log, so each
//! one names the path, user or setting at fault and why it was refused.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    #[error("no command given")]
    EmptyCommand,
    #[error("relative path {0} refused: give an absolute path or a name found in the secure PATH")]
    RelativePath(String),
    #[error("command {name} not found in secure PATH {secure_path}")]
    NotFound { name: String, secure_path: String },
    #[error("{path} is writable by {who}")]
    Writable { path: PathBuf, who: String },
    /// `owner` reads "uid 1001" or "uid 1001 (the caller)".
    #[error("{path} is owned by {owner}, not root")]
    NotRootOwned { path: PathBuf, owner: String },
    #[error("{path} is not a regular file")]
    NotRegularFile { path: PathBuf },
    #[error("{path} is not executable")]
    NotExecutable { path: PathBuf },
    #[error("{path}: {source}")]
    Path {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("working directory {dir} refused: {why}")]
    WorkingDir { dir: String, why: String },
    #[error("script {script} refused: {why}")]
    Interpreter { script: PathBuf, why: String },
    #[error("unknown user {0}")]
    UnknownUser(String),
    #[error("no user has uid {0}")]
    UnknownUid(u32),
    #[error("looking up user {user}: {source}")]
    UserLookup {
        user: String,
        #[source]
        source: nix::Error,
    },
    #[error("cannot start {path}: {source}")]
    Spawn {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("pseudo-terminal: {0}")]
    Pty(#[source] nix::Error),
    #[error("recording {path}: {source}")]
    Recording {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("session I/O: {0}")]
    Io(#[from] std::io::Error),
}
