//! Containment: keeping every process a session starts within reach, so that it ends when
//! the grant does.
//!
//! - [`cgroup`]: a cgroup v2 per session under one per grant, killed with `cgroup.kill`
//! - [`procs`]: the fallback, finding a session's processes in `/proc` by session id and by
//!   the `PEDM_SESSION` marker in their environment
//! - [`execs`]: a seccomp filter that stops every exec after the session's program's own:
//!   refused (NOEXEC), or read, decided by policy and recorded (intercept)
//! - [`verify`]: an intercepted exec checked again once it happened, killed if it runs
//!   something other than what was decided
//! - [`watch`]: files a session writes under a role's watched paths, seen through a mount
//!   namespace of the session's own

pub mod cgroup;
pub mod execs;
pub mod procs;
pub mod verify;
pub mod watch;
