//! The console's port to the agents' hub (`pedm_console::HostAgents`): the key agents
//! check the server with, the sessions streaming here, and task runs handed to agents.

use crate::live::LiveEvent;
use axum::body::Bytes;
use pedm_api::live::LiveSession;
use std::sync::Arc;
use tokio::sync::broadcast;
use uuid::Uuid;

/// The console's view of the agents' hub (its `HostAgents` port).
pub struct ConsoleAgents(pub Arc<crate::agents::AgentHub>);

fn console_info(l: &LiveSession) -> pedm_console::LiveInfo {
    pedm_console::LiveInfo {
        id: l.id,
        host: l.host.clone(),
        user: l.user.clone(),
        run_as: l.run_as.clone(),
        argv: l.argv.clone(),
        grant_id: l.grant_id,
        delegation_id: l.delegation_id,
        started_at: l.started_at,
        width: l.width,
        height: l.height,
        watchers: l.watchers,
    }
}

/// Lines are UTF-8 (the feed checks each before publishing it).
fn text(l: &Bytes) -> String {
    String::from_utf8_lossy(l).into_owned()
}

impl pedm_console::HostAgents for ConsoleAgents {
    fn server_key(&self) -> String {
        self.0.public_key()
    }

    fn live(&self) -> Vec<pedm_console::LiveInfo> {
        self.0.live.list().iter().map(console_info).collect()
    }

    fn run_task(&self, order: &pedm_core::service::TaskRunOrder) -> Result<(), String> {
        self.0.dispatch_task(order)
    }

    fn task_run(&self, id: Uuid) -> Option<pedm_console::TaskRunView> {
        let r = self.0.tasks.get(id)?;
        Some(pedm_console::TaskRunView {
            id: r.id,
            host: r.host,
            user: r.user,
            task: r.task,
            requested_at: r.requested_at,
            end: r.end,
        })
    }

    fn watch(&self, id: Uuid) -> Option<pedm_console::LiveWatch> {
        use pedm_console::LiveItem;
        let mut w = self.0.live.get(id)?.watch();
        let info = console_info(&w.live.info());
        let backlog = std::mem::take(&mut w.backlog).iter().map(text).collect();
        // Ends after the first `End` (or when the hub drops the session's sender).
        let events = futures_util::stream::unfold(Some(w), |w| async move {
            let mut w = w?;
            let item = match w.rx.recv().await {
                Ok(LiveEvent::Line(l)) => LiveItem::Line(text(&l)),
                Ok(LiveEvent::End(why)) => return Some((LiveItem::End(why), None)),
                Err(broadcast::error::RecvError::Lagged(n)) => LiveItem::Missed(n),
                Err(broadcast::error::RecvError::Closed) => {
                    return Some((LiveItem::End("the stream closed".into()), None));
                }
            };
            Some((item, Some(w)))
        });
        Some(pedm_console::LiveWatch {
            info,
            backlog,
            events: Box::pin(events),
        })
    }
}
