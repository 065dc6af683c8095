//! `pedm-agent`: the root daemon on a Linux host.
//!
//! It listens on a Unix socket, takes the caller's identity from the kernel (peer
//! credentials), checks a grant signed by the server and the policy for the exact command,
//! then runs it as the role's run-as user with a sanitised environment, in a pseudo-terminal
//! or pipes, recording the session as asciicast v2; it ends sessions when their grant ends.
//!
//! The daemon around it:
//! - [`config`]: the TOML configuration
//! - [`daemon`]: the socket, peer credentials, the decision, the link to the server
//! - [`snapshot`]: the signed grant snapshot, kept on disk, and the local policy engine
//! - [`outbox`]: reports and recordings kept on disk until the server has them
//! - [`admission`]: connections per user, refusals aggregated per user
//!
//! The privileged execution engine (what sudo-rs calls `exec` and `system`):
//! - [`env`]: environment sanitising the way sudo's `env_reset` does it
//! - [`command`]: resolving and checking the binary (absolute path, not writable by the
//!   caller, hashed and executed from the same open file so a swap after the check is harmless)
//! - [`shells`]: whether a command is a shell (the agent decides, not the client)
//! - [`user`]: the run-as account (uid, gid, supplementary groups, home, shell)
//! - [`session`]: spawning and running one session, pumping I/O, signals, window size,
//!   de-escalation
//! - [`recording`]: the asciicast v2 writer and reader
//! - [`contain`]: a cgroup v2 per session under one per grant, or a `/proc` scan where cgroups
//!   are not writable: nothing a session started outlives its grant
//! - [`error`]: what can go wrong, worded for the caller and the audit log

pub mod admission;
pub mod command;
pub mod config;
pub mod contain;
pub mod daemon;
pub mod enroll;
pub mod env;
pub mod error;
pub mod identity;
pub mod live;
pub mod outbox;
pub mod renew;
/// Session recordings (asciicast v2), shared with pedmd and the players.
pub use pedm_cast as recording;
pub mod session;
pub mod shells;
pub mod snapshot;
pub mod status;
pub mod user;
