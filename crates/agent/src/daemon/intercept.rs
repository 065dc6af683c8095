//! The gate of `intercept` sessions ([`crate::contain::execs`]): every exec after the
//! session's first is checked as the first was (the binary resolved under the same rules, the
//! same Cedar `exec` decision for the session's grant) and recorded as a `session.exec`
//! report, allowed or not, before the caller learns the answer.
//!
//! Step-up: an exec that policy refuses but an `@step_up` permit makes approvable is held
//! (the caller waits in `execve`) while the server routes a request to approvers; the
//! caller's terminal says what it waits for. It runs once approved, and fails with EACCES
//! when denied, when nobody decides in time, or when the caller goes away. The server checks
//! with its own policy that the exec is approvable. While one exec is held, the session's
//! other execs wait behind it (one supervisor per session).

use super::Agent;
use crate::command::resolve;
use crate::contain::execs::{ExecCall, ExecGate};
use crate::user::TargetUser;
use jiff::Timestamp;
use pedm_api::RequestState;
use pedm_api::agent::{AgentReport, ExecVerdict, HeldExec, SessionExec};
use pedm_policy::CommandRef;
use std::os::fd::{FromRawFd, OwnedFd};
use std::sync::Arc;
use std::time::Duration;
use uuid::Uuid;

/// How often a held exec's request is looked at.
const STEP_UP_POLL: Duration = Duration::from_millis(300);

pub(super) struct SessionGate {
    pub(super) agent: Arc<Agent>,
    pub(super) grant: Uuid,
    pub(super) session: Uuid,
    /// The person (their uid makes resolution errors clearer; their name picks the grant).
    pub(super) caller: TargetUser,
    pub(super) tty: bool,
    /// The session's live stream: each exec shows there as an `x` event.
    pub(super) live: crate::live::WeakLiveTap,
    /// The agent's runtime: the gate runs on a thread of its own and asks the server through it.
    pub(super) rt: tokio::runtime::Handle,
}

impl std::fmt::Debug for SessionGate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionGate")
            .field("grant", &self.grant)
            .field("session", &self.session)
            .finish()
    }
}

/// What the gate learnt of the binary an exec names.
struct Checked {
    sha256: String,
    path: String,
    /// Device and inode of the file checked; `None` for a script (its interpreter runs).
    binary: Option<(u64, u64)>,
}

/// An exec's verdict: the policies that allowed it, or why not; the binary if resolved;
/// whether approval could allow it.
struct Verdict {
    decided: Result<String, String>,
    known: Option<Checked>,
    step_up: bool,
    shell: bool,
}

impl Verdict {
    fn refused(why: String, known: Option<Checked>) -> Verdict {
        Verdict {
            decided: Err(why),
            known,
            step_up: false,
            shell: false,
        }
    }
}

impl SessionGate {
    fn check(&self, c: &ExecCall, now: Timestamp) -> Verdict {
        let Some(path) = c.path.to_str() else {
            return Verdict::refused("the program's path is not UTF-8".into(), None);
        };
        let resolved = match resolve(path, &self.agent.cfg.secure_path, self.caller.uid) {
            Ok(r) => r,
            Err(e) => return Verdict::refused(e.to_string(), None),
        };
        let sha = resolved.sha256().to_string();
        let binary = nix::sys::stat::fstat(resolved.fd())
            .ok()
            .filter(|_| !resolved.is_script())
            .map(|st| (st.st_dev, st.st_ino));
        let known = Some(Checked {
            sha256: sha.clone(),
            path: resolved.path().to_string_lossy().into_owned(),
            binary,
        });
        let args = c.argv.get(1..).unwrap_or_default();
        let command = CommandRef {
            path: resolved.path().to_string_lossy().into_owned(),
            args: args.join(" "),
            sha256: Some(sha.clone()),
            shell: crate::shells::is_shell(resolved.path(), args, self.tty),
            cwd: Some(c.cwd.to_string_lossy().into_owned()),
        };
        let guard = self
            .agent
            .enforced
            .read()
            .unwrap_or_else(|e| e.into_inner());
        let Some(enforced) = guard.as_ref() else {
            return Verdict::refused("no grants are in force on this host".into(), known);
        };
        let chosen = enforced
            .pick_grant(&self.caller.name, Some(self.grant), now)
            .cloned();
        let decided = chosen
            .clone()
            .and_then(|g| enforced.authorize(&g, &command, now))
            .map(|a| format!("allowed by {}", a.policies.join(", ")))
            .map_err(|r| r.0);
        let step_up = decided.is_err()
            && chosen
                .ok()
                .is_some_and(|g| enforced.step_up(&g, &command, now).is_some());
        Verdict {
            decided,
            known,
            step_up,
            shell: command.shell,
        }
    }

    /// Holds the exec of `pid` until approvers decide its step-up request (see the module
    /// docs): `Ok` with who approved, or why it may not run.
    fn ask_approval(
        &self,
        pid: i32,
        c: &ExecCall,
        k: &Checked,
        shell: bool,
        waiting: &dyn Fn() -> bool,
    ) -> Result<String, String> {
        let ask = HeldExec {
            grant: self.grant,
            session: self.session,
            argv: c.argv.clone(),
            path: k.path.clone(),
            sha256: Some(k.sha256.clone()),
            cwd: c.cwd.to_string_lossy().into_owned(),
            pid: c.pid,
            shell,
        };
        let client = self.agent.client();
        let shown = pedm_core::text::terminal_safe(&c.argv.join(" ")).into_owned();
        let req = self
            .rt
            .block_on(client.agent_step_up(&ask))
            .map_err(|e| format!("could not ask approval: {e}"))?;
        let id = req.id;
        let deadline = req.pending_until;
        tell(
            pid,
            &format!(
                "pedm: `{shown}` needs approval; waiting for step-up request {id} (until {}).\r\n",
                deadline.strftime("%H:%M:%S UTC")
            ),
        );
        let outcome = loop {
            std::thread::sleep(STEP_UP_POLL);
            if !waiting() {
                break Err(format!(
                    "the caller went away while step-up request {id} was pending"
                ));
            }
            let late = Timestamp::now() >= deadline;
            match self.rt.block_on(client.agent_step_up_state(id)) {
                Ok(r) if r.state == RequestState::Approved => {
                    break Ok(format!(
                        "step-up request {id} approved by {}",
                        r.decided_by.unwrap_or_default()
                    ));
                }
                Ok(r) if r.state == RequestState::Pending && !late => {}
                Ok(r) if r.state == RequestState::Pending => {
                    break Err(format!("step-up request {id} was not decided in time"));
                }
                Ok(r) => {
                    break Err(format!(
                        "step-up request {id} is {}{}{}",
                        r.state,
                        r.decided_by.map(|b| format!(" by {b}")).unwrap_or_default(),
                        r.decision_reason
                            .map(|w| format!(": {w}"))
                            .unwrap_or_default()
                    ));
                }
                // The server away: the request may still be decided until its deadline.
                Err(_) if !late => {}
                Err(e) => {
                    break Err(format!(
                        "step-up request {id}: no answer from the server by its deadline: {e}"
                    ));
                }
            }
        };
        // Names and reasons come from people: escaped before they reach a terminal.
        let line = match &outcome {
            Ok(why) => format!("pedm: {}.\r\n", pedm_core::text::terminal_safe(why)),
            Err(why) => format!(
                "pedm: refused: {}.\r\n",
                pedm_core::text::terminal_safe(why)
            ),
        };
        tell(pid, &line);
        outcome
    }
}

impl SessionGate {
    /// Has the exec checked again once it happened; what does not match is killed and
    /// recorded as a refused `session.exec`.
    fn verify_after(
        &self,
        v: &crate::contain::verify::ExecVerifier,
        pid: i32,
        c: &crate::contain::execs::ExecCall,
        binary: Option<(u64, u64)>,
    ) {
        let agent = self.agent.clone();
        let (user, grant, session, argv) = (
            self.caller.name.clone(),
            self.grant,
            self.session,
            c.argv.clone(),
        );
        let exec = SessionExec {
            pid: c.pid,
            ppid: c.ppid,
            cwd: c.cwd.to_string_lossy().into_owned(),
            path: c.path.to_string_lossy().into_owned(),
            resolved: None,
        };
        let live = self.live.clone();
        v.expect(
            pid,
            crate::contain::verify::Allowed {
                binary,
                argv: c.argv.clone(),
            },
            Box::new(move |_, checked| {
                let Err(why) = checked else { return };
                let reason = format!("changed after it was checked and killed: {why}");
                let mut report =
                    AgentReport::in_session(&user, grant, session, ExecVerdict::Denied, argv);
                report.reason = Some(reason);
                report.exec = Some(exec);
                show(&live, &report);
                agent.queue_report(&report);
            }),
        );
    }
}

impl ExecGate for SessionGate {
    fn decide(
        &mut self,
        pid: i32,
        call: Result<ExecCall, String>,
        waiting: &dyn Fn() -> bool,
    ) -> bool {
        let now = Timestamp::now();
        let (verdict, argv, mut exec) = match &call {
            Err(why) => (
                Verdict::refused(format!("cannot read the exec call: {why}"), None),
                vec![],
                SessionExec {
                    pid,
                    ppid: 0,
                    cwd: String::new(),
                    path: String::new(),
                    resolved: None,
                },
            ),
            Ok(c) => (
                self.check(c, now),
                c.argv.clone(),
                SessionExec {
                    pid: c.pid,
                    ppid: c.ppid,
                    cwd: c.cwd.to_string_lossy().into_owned(),
                    path: c.path.to_string_lossy().into_owned(),
                    resolved: None,
                },
            ),
        };
        let Verdict {
            mut decided,
            known,
            step_up,
            shell,
        } = verdict;
        if let (true, Ok(c), Some(k)) = (step_up, &call, &known) {
            decided = self.ask_approval(pid, c, k, shell, waiting);
        }
        let allowed = decided.is_ok();
        if let (true, Some(v), Some(k), Ok(c)) = (allowed, &self.agent.verifier, &known, &call) {
            self.verify_after(v, pid, c, k.binary);
        }
        let sha = known.map(|k| {
            exec.resolved = Some(k.path);
            k.sha256
        });
        let mut report = AgentReport::in_session(
            &self.caller.name,
            self.grant,
            self.session,
            if allowed {
                ExecVerdict::Allowed
            } else {
                ExecVerdict::Denied
            },
            argv,
        );
        report.at = now;
        report.binary_sha256 = sha;
        report.reason = Some(decided.unwrap_or_else(|why| why));
        report.exec = Some(exec);
        show(&self.live, &report);
        // On disk before the program runs (or learns it may not).
        self.agent.queue_report(&report);
        allowed
    }
}

/// Writes `text` to the standard error of process `pid` when that is a terminal or a pipe
/// (the session's own streams), through a copy of its own descriptor, so nothing is opened
/// with the agent's rights. Best effort.
fn tell(pid: i32, text: &str) {
    // SAFETY: pidfd_open and pidfd_getfd return new descriptors that only we own, or -1.
    let fd = unsafe {
        let pidfd = libc::syscall(libc::SYS_pidfd_open, pid, 0) as libc::c_int;
        if pidfd < 0 {
            return;
        }
        let pidfd = OwnedFd::from_raw_fd(pidfd);
        let fd = libc::syscall(
            libc::SYS_pidfd_getfd,
            std::os::fd::AsRawFd::as_raw_fd(&pidfd),
            2,
            0,
        ) as libc::c_int;
        if fd < 0 {
            return;
        }
        OwnedFd::from_raw_fd(fd)
    };
    let Ok(st) = nix::sys::stat::fstat(&fd) else {
        return;
    };
    let kind = st.st_mode & libc::S_IFMT;
    let terminal = kind == libc::S_IFCHR && nix::unistd::isatty(&fd).unwrap_or(false);
    if terminal || kind == libc::S_IFIFO {
        let _ = nix::unistd::write(&fd, text.as_bytes());
    }
}

/// An exec on the session's live stream (`x` events).
fn show(live: &crate::live::WeakLiveTap, r: &AgentReport) {
    live.offer_event(
        "x",
        &serde_json::json!({
            "verdict": r.verdict,
            "pid": r.exec.as_ref().map(|e| e.pid),
            "path": r.exec.as_ref().map(|e| e.path.clone()),
            "argv": r.argv,
            "reason": r.reason,
        }),
    );
}
