//! Task runs ordered through the server (a person ran a delegated task from the console):
//! the order is signed with the server's key like a snapshot, is for this host, runs once and
//! only before it expires. It is then checked exactly as a local `pedm task run` is (the
//! delegation in the signed snapshot, the parameters against the task's definition) and run
//! through the same session path (recorded, contained, reported), with an in-process client
//! instead of a terminal; its end and output go back to the server.

use super::Agent;
use crate::user::TargetUser;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use jiff::Timestamp;
use pedm_api::agent::{
    SignedTaskDispatch, TASK_DISPATCH_CONTEXT, TASK_OUTPUT_BYTES, TaskDispatch, TaskRunResult,
};
use pedm_api::socket::{Frame, StartExec, TaskRun, read_frame, write_frame};
use pedm_audit::PublicKey;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use uuid::Uuid;

/// Buffered between the session and the in-process client.
const PIPE_BYTES: usize = 64 * 1024;
/// Tries at reporting the end before giving up (the session's record is uploaded anyway).
const REPORT_TRIES: u32 = 6;

impl Agent {
    /// Checks an order from the event stream and, if it holds, runs it in the background.
    pub(super) fn take_order(self: Arc<Self>, signed: SignedTaskDispatch) {
        let order = match self.verify_order(&signed) {
            Ok(o) => o,
            Err(why) => {
                tracing::error!(reason = %why, "refusing a task run order");
                return;
            }
        };
        tokio::spawn(async move {
            let id = order.id;
            let result = self.clone().run_order(order).await;
            self.report_end(id, result).await;
        });
    }

    /// The order, if it holds (see [`verify_order`]); taken once.
    fn verify_order(&self, signed: &SignedTaskDispatch) -> Result<TaskDispatch, String> {
        let mut seen = self.orders_seen.lock().unwrap_or_else(|e| e.into_inner());
        verify_order(
            signed,
            &self.cfg.server_key,
            &self.cfg.host,
            Timestamp::now(),
            &mut seen,
        )
    }

    /// Runs the order as its caller would from a terminal, with no input but what the task
    /// feeds itself; collects the end and the last of the output.
    async fn run_order(self: Arc<Self>, order: TaskDispatch) -> TaskRunResult {
        let caller = TargetUser::remote(&order.user);
        let task = order.task.clone();
        let start = StartExec {
            argv: vec![],
            grant: None,
            shell: false,
            cwd: None,
            tty: None,
            env: vec![],
            task: Some(TaskRun {
                name: order.task,
                params: order.params,
            }),
        };
        let prepared = match self.prepare(&caller, start) {
            Ok(p) => p,
            Err((refusal, sha)) => {
                tracing::info!(user = %caller.name, reason = %refusal, "task run order refused");
                let report = Self::refusal(&caller, &[], Some(task), sha, &refusal.0);
                self.report_refusal(caller.uid, report);
                return TaskRunResult {
                    refused: Some(refusal.0),
                    ..Default::default()
                };
            }
        };
        let (mut client, session_end) = tokio::io::duplex(PIPE_BYTES);
        let runner = tokio::spawn(self.clone().run(session_end, caller, prepared));
        let mut result = TaskRunResult::default();
        let mut output: Vec<u8> = vec![];
        loop {
            match read_frame(&mut client).await {
                Ok(Some(Frame::Accepted(a))) => {
                    result.session = Some(a.session);
                    // Nothing to type: the task's input is its rendered template.
                    if write_frame(&mut client, &Frame::StdinEof).await.is_err() {
                        break;
                    }
                }
                Ok(Some(Frame::Refused(r))) => {
                    result.refused = Some(r.reason);
                    break;
                }
                Ok(Some(Frame::Stdout(b) | Frame::Stderr(b))) => {
                    output.extend_from_slice(&b);
                    if output.len() > TASK_OUTPUT_BYTES {
                        output.drain(..output.len() - TASK_OUTPUT_BYTES);
                    }
                }
                Ok(Some(Frame::Exited(e))) => {
                    result.exit_code = e.code;
                    result.signal = e.signal;
                    break;
                }
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => break,
            }
        }
        drop(client);
        let _ = runner.await;
        result.output = String::from_utf8_lossy(&output).into_owned();
        result
    }

    /// Tells the server how the run ended, retrying a while if it is away.
    async fn report_end(&self, id: uuid::Uuid, result: TaskRunResult) {
        let mut wait = Duration::from_millis(500);
        for _ in 0..REPORT_TRIES {
            match self.client().task_run_result(id, &result).await {
                Ok(_) => return,
                // The server no longer knows the run (restarted): the session says the rest.
                Err(e) if e.status() == Some(404) => {
                    tracing::warn!(run = %id, error = %e, "the server does not know this task run");
                    return;
                }
                Err(e) => {
                    tracing::warn!(run = %id, error = %e, retry_in = ?wait, "cannot report a task run's end");
                    tokio::time::sleep(wait).await;
                    wait *= 2;
                }
            }
        }
    }
}

/// The order, if the server's key signed it, it is for `host`, it has not expired at `now`
/// and it is not in `seen` (orders taken and not yet expired), where it is then noted.
fn verify_order(
    signed: &SignedTaskDispatch,
    key: &PublicKey,
    host: &str,
    now: Timestamp,
    seen: &mut HashMap<Uuid, Timestamp>,
) -> Result<TaskDispatch, String> {
    if signed.key_id != key.key_id() {
        return Err(format!(
            "signed by key {}, this agent trusts {}",
            signed.key_id,
            key.key_id()
        ));
    }
    let sig: [u8; 64] = B64
        .decode(signed.signature.trim())
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or("malformed signature")?;
    key.verify_for(TASK_DISPATCH_CONTEXT, signed.dispatch.as_bytes(), &sig)
        .map_err(|_| "the signature does not verify".to_string())?;
    let order: TaskDispatch =
        serde_json::from_str(&signed.dispatch).map_err(|e| format!("malformed: {e}"))?;
    if order.host != host {
        return Err(format!("it is for host {}", order.host));
    }
    if order.expires_at <= now {
        return Err(format!(
            "order {} expired at {}",
            order.id, order.expires_at
        ));
    }
    seen.retain(|_, until| *until > now);
    if seen.insert(order.id, order.expires_at).is_some() {
        return Err(format!("order {} was taken already", order.id));
    }
    Ok(order)
}

#[cfg(test)]
mod tests {
    use super::*;
    use pedm_audit::SigningKey;

    fn order(host: &str, expires_at: Timestamp) -> TaskDispatch {
        TaskDispatch {
            id: Uuid::now_v7(),
            host: host.into(),
            user: "helpdesk".into(),
            task: "reset-password".into(),
            params: [("password".to_string(), "s3cret".to_string())].into(),
            expires_at,
        }
    }

    fn sign(key: &SigningKey, o: &TaskDispatch, context: &str) -> SignedTaskDispatch {
        let text = serde_json::to_string(o).unwrap();
        SignedTaskDispatch {
            signature: B64.encode(key.sign_for(context, text.as_bytes())),
            key_id: key.key_id().to_string(),
            dispatch: text,
        }
    }

    #[test]
    fn only_a_fresh_order_signed_for_this_host_runs_and_only_once() {
        let server = SigningKey::from_seed(&[7; 32]);
        let key = server.public_key();
        let now = Timestamp::from_second(1_800_000_000).unwrap();
        let later = now
            .checked_add(jiff::SignedDuration::from_secs(60))
            .unwrap();
        let mut seen = HashMap::new();
        let good = order("web1", later);
        let signed = sign(&server, &good, TASK_DISPATCH_CONTEXT);
        assert_eq!(
            verify_order(&signed, key, "web1", now, &mut seen)
                .unwrap()
                .id,
            good.id
        );
        // The same order again (a replay) is refused.
        let again = verify_order(&signed, key, "web1", now, &mut seen).unwrap_err();
        assert!(again.contains("taken already"), "{again}");
        // For another host, expired, signed for another purpose or by another key, altered.
        let other = sign(&server, &order("web2", later), TASK_DISPATCH_CONTEXT);
        assert!(
            verify_order(&other, key, "web1", now, &mut seen)
                .unwrap_err()
                .contains("web2")
        );
        let stale = sign(&server, &order("web1", now), TASK_DISPATCH_CONTEXT);
        assert!(
            verify_order(&stale, key, "web1", now, &mut seen)
                .unwrap_err()
                .contains("expired")
        );
        let snapshot_sig = sign(
            &server,
            &order("web1", later),
            pedm_api::agent::SNAPSHOT_CONTEXT,
        );
        assert!(verify_order(&snapshot_sig, key, "web1", now, &mut seen).is_err());
        let mallory = SigningKey::from_seed(&[9; 32]);
        let forged = sign(&mallory, &order("web1", later), TASK_DISPATCH_CONTEXT);
        assert!(
            verify_order(&forged, key, "web1", now, &mut seen)
                .unwrap_err()
                .contains("trusts")
        );
        let mut altered = sign(&server, &order("web1", later), TASK_DISPATCH_CONTEXT);
        altered.dispatch = altered.dispatch.replace("helpdesk", "admin");
        assert!(
            verify_order(&altered, key, "web1", now, &mut seen)
                .unwrap_err()
                .contains("does not verify")
        );
        // Taken orders are forgotten once expired.
        let after = later
            .checked_add(jiff::SignedDuration::from_secs(1))
            .unwrap();
        let fresh = sign(
            &server,
            &order(
                "web1",
                after
                    .checked_add(jiff::SignedDuration::from_secs(60))
                    .unwrap(),
            ),
            TASK_DISPATCH_CONTEXT,
        );
        verify_order(&fresh, key, "web1", after, &mut seen).unwrap();
        assert_eq!(seen.len(), 1);
    }
}
