//! Delegated tasks run from the console: each order (checked and recorded by the core) is
//! handed to its host's agent over the agent's event stream, signed like a snapshot, and how
//! it ended is kept here for the page that asked.
//!
//! In memory and per instance, like the live hub: an order reaches an agent only if its event
//! stream is connected to this instance (otherwise the person is told at once and the refusal
//! recorded); the run's record (`task.run_requested`, `task.run_finished`, the recorded
//! session) is in the audit log and outlives a restart, its output kept here does not.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use jiff::{SignedDuration, Timestamp};
use pedm_api::agent::{
    SignedTaskDispatch, TASK_DISPATCH_CONTEXT, TASK_OUTPUT_BYTES, TaskDispatch, TaskRunResult,
};
use pedm_audit::SigningKey;
use pedm_core::service::{TaskRunEnd, TaskRunOrder};
use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::sync::mpsc;
use uuid::Uuid;

/// How long an order may wait on the way to the agent before the agent refuses it.
const ORDER_TTL_SECS: i64 = 60;
/// Runs remembered for their pages (the oldest forgotten first).
const KEPT_RUNS: usize = 1000;

/// A run handed to an agent, and its end once the agent reported it.
#[derive(Debug, Clone)]
pub struct TaskRunRecord {
    pub id: Uuid,
    pub host: String,
    pub user: String,
    pub task: String,
    pub requested_at: Timestamp,
    pub end: Option<(TaskRunEnd, String)>,
}

#[derive(Default)]
pub struct TaskDispatcher {
    /// Each host's connected event stream (the newest wins).
    agents: Mutex<HashMap<String, (u64, mpsc::Sender<SignedTaskDispatch>)>>,
    next_stream: AtomicU64,
    runs: Mutex<HashMap<Uuid, TaskRunRecord>>,
}

/// Unregisters an agent's stream when it ends.
pub struct Connected<'a> {
    dispatcher: &'a TaskDispatcher,
    host: String,
    stream: u64,
    pub orders: mpsc::Receiver<SignedTaskDispatch>,
}

impl Drop for Connected<'_> {
    fn drop(&mut self) {
        let mut agents = self
            .dispatcher
            .agents
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if agents
            .get(&self.host)
            .is_some_and(|(s, _)| *s == self.stream)
        {
            agents.remove(&self.host);
        }
    }
}

impl TaskDispatcher {
    /// `host`'s agent opened its event stream: orders for it go there from now on.
    pub fn connect(&self, host: &str) -> Connected<'_> {
        let stream = self.next_stream.fetch_add(1, Ordering::Relaxed);
        let (tx, orders) = mpsc::channel(16);
        self.agents
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(host.to_string(), (stream, tx));
        Connected {
            dispatcher: self,
            host: host.to_string(),
            stream,
            orders,
        }
    }

    /// Signs `order` and hands it to its host's agent. `Err`: the agent cannot be reached
    /// from this instance (the order was not sent).
    pub fn dispatch(&self, key: &SigningKey, order: &TaskRunOrder) -> Result<(), String> {
        let now = Timestamp::now();
        let dispatch = TaskDispatch {
            id: order.id,
            host: order.host.clone(),
            user: order.user.clone(),
            task: order.task.name.clone(),
            params: order.params.clone(),
            expires_at: now
                .checked_add(SignedDuration::from_secs(ORDER_TTL_SECS))
                .unwrap_or(now),
        };
        let text = serde_json::to_string(&dispatch)
            .map_err(|e| format!("cannot write the order for {}: {e}", order.host))?;
        let signed = SignedTaskDispatch {
            signature: B64.encode(key.sign_for(TASK_DISPATCH_CONTEXT, text.as_bytes())),
            key_id: key.key_id().to_string(),
            dispatch: text,
        };
        let sender = self
            .agents
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&order.host)
            .map(|(_, tx)| tx.clone());
        let not_here = || {
            format!(
                "the agent of {} is not connected to this server (it is down, or its event \
                 stream is with another instance)",
                order.host
            )
        };
        sender
            .ok_or_else(not_here)?
            .try_send(signed)
            .map_err(|_| not_here())?;
        let mut runs = self.runs.lock().unwrap_or_else(|e| e.into_inner());
        if runs.len() >= KEPT_RUNS
            && let Some(oldest) = runs.values().min_by_key(|r| r.requested_at).map(|r| r.id)
        {
            runs.remove(&oldest);
        }
        runs.insert(
            order.id,
            TaskRunRecord {
                id: order.id,
                host: order.host.clone(),
                user: order.user.clone(),
                task: order.task.name.clone(),
                requested_at: now,
                end: None,
            },
        );
        Ok(())
    }

    /// Host `host` reports how run `id` ended. `Err`: not a run this instance handed to that
    /// host, or one already reported.
    pub fn finish(
        &self,
        host: &str,
        id: Uuid,
        result: TaskRunResult,
    ) -> Result<TaskRunRecord, String> {
        let mut runs = self.runs.lock().unwrap_or_else(|e| e.into_inner());
        let run = runs
            .get_mut(&id)
            .filter(|r| r.host == host)
            .ok_or_else(|| format!("task run {id} was not handed to {host} by this server"))?;
        if run.end.is_some() {
            return Err(format!("task run {id} was reported already"));
        }
        let mut output = result.output;
        if output.len() > TASK_OUTPUT_BYTES {
            let mut cut = output.len() - TASK_OUTPUT_BYTES;
            while !output.is_char_boundary(cut) {
                cut += 1;
            }
            output = output.split_off(cut);
        }
        run.end = Some((
            TaskRunEnd {
                session: result.session,
                exit_code: result.exit_code,
                signal: result.signal,
                refused: result.refused,
            },
            output,
        ));
        Ok(run.clone())
    }

    pub fn get(&self, id: Uuid) -> Option<TaskRunRecord> {
        self.runs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&id)
            .cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pedm_core::delegation::TaskDef;

    fn order(host: &str) -> TaskRunOrder {
        let task: TaskDef = serde_json::from_value(serde_json::json!({
            "name": "restart", "targets": [host], "argv": ["/bin/true"],
        }))
        .unwrap();
        TaskRunOrder {
            id: Uuid::now_v7(),
            host: host.into(),
            user: "helpdesk".into(),
            task,
            delegation: Uuid::now_v7(),
            params: Default::default(),
        }
    }

    #[tokio::test]
    async fn orders_reach_only_a_connected_agent_and_each_end_is_taken_once_from_its_host() {
        let key = SigningKey::from_seed(&[3; 32]);
        let d = TaskDispatcher::default();
        let why = d.dispatch(&key, &order("web1")).unwrap_err();
        assert!(why.contains("web1 is not connected"), "{why}");
        {
            let mut agent = d.connect("web1");
            let o = order("web1");
            d.dispatch(&key, &o).unwrap();
            let got = agent.orders.recv().await.unwrap();
            let sent: TaskDispatch = serde_json::from_str(&got.dispatch).unwrap();
            assert_eq!(sent.id, o.id);
            let sig: [u8; 64] = B64.decode(&got.signature).unwrap().try_into().unwrap();
            key.public_key()
                .verify_for(TASK_DISPATCH_CONTEXT, got.dispatch.as_bytes(), &sig)
                .unwrap();
            assert!(d.get(o.id).unwrap().end.is_none());
            // Only its host reports its end, once.
            assert!(d.finish("web2", o.id, TaskRunResult::default()).is_err());
            let done = TaskRunResult {
                exit_code: Some(0),
                output: "x".repeat(TASK_OUTPUT_BYTES + 10),
                ..Default::default()
            };
            let r = d.finish("web1", o.id, done.clone()).unwrap();
            assert_eq!(r.end.as_ref().unwrap().0.exit_code, Some(0));
            assert_eq!(r.end.unwrap().1.len(), TASK_OUTPUT_BYTES);
            assert!(
                d.finish("web1", o.id, done)
                    .unwrap_err()
                    .contains("already")
            );
            assert!(
                d.finish("web1", Uuid::now_v7(), TaskRunResult::default())
                    .is_err()
            );
        }
        // The stream went away: orders fail again instead of vanishing.
        assert!(d.dispatch(&key, &order("web1")).is_err());
    }
}
