//! Containment: keeping every process a session starts within reach, so that it ends when
//! the grant does.
//!
//! - [`cgroup`]: a cgroup v2 per session under one per grant, killed with `cgroup.kill`
//! - [`procs`]: the fallback, finding a session's processes in `/proc` by session id and by
//!   the `PEDM_SESSION` marker in their environment
//! - [`noexec`]: a seccomp filter that lets a session's program run but not start another

pub mod cgroup;
pub mod noexec;
pub mod procs;
