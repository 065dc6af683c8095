//! Live updates (an event with empty data is never dispatched by browsers, so each carries
//! its region name as data): the core tells [`LiveChanges`] (an observer) what it committed; each open
//! page holds one Server-Sent Events stream and, on an event naming one of its regions,
//! fetches that region again. The events carry no data: what the page then shows is read
//! through the same checks as any page, so a stream cannot leak what its viewer may not see.
//!
//! In memory and per instance: a page connected to one `pedmd` hears of changes made through
//! that instance (with several instances behind a load balancer, the page still refreshes on
//! its own changes and on every navigation).

use crate::Console;
use crate::session::Viewer;
use axum::Router;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::routing::get;
use futures_util::{Stream, StreamExt};
use pedm_core::notice::{Notice, Observer};
use std::convert::Infallible;
use std::time::Duration;
use tokio::sync::broadcast;
use tokio_stream::wrappers::BroadcastStream;

/// A page region to fetch again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// `access` (someone's own requests and grants), `inbox` (what approvers decide) or
    /// `tasks` (someone's task runs).
    pub region: &'static str,
    /// Whose `access` region changed; `None`: everyone's (the inbox: whoever may approve).
    pub user: Option<String>,
}

pub struct LiveChanges {
    tx: broadcast::Sender<Change>,
}

impl Default for LiveChanges {
    fn default() -> Self {
        LiveChanges {
            tx: broadcast::channel(1024).0,
        }
    }
}

impl LiveChanges {
    fn send(&self, region: &'static str, user: Option<&str>) {
        // Nobody watching is not an error.
        let _ = self.tx.send(Change {
            region,
            user: user.map(Into::into),
        });
    }
}

impl Observer for LiveChanges {
    fn notice(&self, notice: &Notice) {
        match notice {
            Notice::RequestPending(r) | Notice::RequestDecided(r) => {
                self.send("access", Some(&r.requester));
                self.send("inbox", None);
            }
            // An escalation lets more people decide.
            Notice::RequestFollowUp { .. } => self.send("inbox", None),
            Notice::GrantStarted(g)
            | Notice::GrantScheduled(g)
            | Notice::GrantExtended(g)
            | Notice::GrantEnded(g) => {
                self.send("access", Some(&g.user));
            }
            Notice::TaskRunFinished { user, .. } => self.send("tasks", Some(user)),
            Notice::BreakGlass { request, .. } => {
                self.send("access", Some(&request.requester));
                self.send("inbox", None);
            }
            _ => {}
        }
    }
}

pub fn router() -> Router<Console> {
    Router::new().route("/ui/events", get(events))
}

/// One stream per open page: `event: access` or `event: inbox` (the region as data).
async fn events(
    axum::extract::State(c): axum::extract::State<Console>,
    v: Viewer,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let me = v.actor.user;
    let stream = BroadcastStream::new(c.live.tx.subscribe()).filter_map(move |m| {
        let out = match m {
            Ok(ch) if ch.user.as_deref().is_none_or(|u| u == me) => {
                Some(Ok(Event::default().event(ch.region).data(ch.region)))
            }
            Ok(_) => None,
            // Fell behind: tell the page to fetch everything again.
            Err(_) => Some(Ok(Event::default().event("all").data("all"))),
        };
        std::future::ready(out)
    });
    Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
}
