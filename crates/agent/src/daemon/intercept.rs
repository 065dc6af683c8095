//! The gate of `intercept` sessions ([`crate::contain::execs`]): every exec after the
//! session's first is checked as the first was (the binary resolved under the same rules, the
//! same Cedar `exec` decision for the session's grant) and recorded as a `session.exec`
//! report, allowed or not, before the caller learns the answer.

use super::Agent;
use crate::command::resolve;
use crate::contain::execs::{ExecCall, ExecGate};
use crate::user::TargetUser;
use jiff::Timestamp;
use pedm_api::agent::{AgentReport, ExecVerdict, SessionExec};
use pedm_policy::CommandRef;
use std::sync::Arc;
use uuid::Uuid;

pub(super) struct SessionGate {
    pub(super) agent: Arc<Agent>,
    pub(super) grant: Uuid,
    pub(super) session: Uuid,
    /// The person (their uid makes resolution errors clearer; their name picks the grant).
    pub(super) caller: TargetUser,
    pub(super) tty: bool,
    /// The session's live stream: each exec shows there as an `x` event.
    pub(super) live: crate::live::WeakLiveTap,
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

/// An exec's verdict: the policies that allowed it, or why not; the binary if resolved.
type Verdict = (Result<String, String>, Option<Checked>);

impl SessionGate {
    fn check(&self, c: &ExecCall, now: Timestamp) -> Verdict {
        let Some(path) = c.path.to_str() else {
            return (Err("the program's path is not UTF-8".into()), None);
        };
        let resolved = match resolve(path, &self.agent.cfg.secure_path, self.caller.uid) {
            Ok(r) => r,
            Err(e) => return (Err(e.to_string()), None),
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
            return (Err("no grants are in force on this host".into()), known);
        };
        let decided = enforced
            .pick_grant(&self.caller.name, Some(self.grant), now)
            .and_then(|g| {
                let g = g.clone();
                enforced.authorize(&g, &command, now)
            })
            .map(|a| format!("allowed by {}", a.policies.join(", ")))
            .map_err(|r| r.0);
        (decided, known)
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
    fn decide(&mut self, pid: i32, call: Result<ExecCall, String>) -> bool {
        let now = Timestamp::now();
        let ((decided, known), argv, mut exec) = match &call {
            Err(why) => (
                (Err(format!("cannot read the exec call: {why}")), None),
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
