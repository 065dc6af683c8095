//! Tickets checked against the ticket system they live in (Jira, ServiceNow, ...): the port
//! the server's adapters implement, and what a check found, kept with the request
//! (`RequestContext::ticket`) so that policy (`context.ticket`), approvers and auditors see
//! what the system said at the time.

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

/// What a ticket system said about a ticket when the request was made.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TicketFacts {
    /// The configured system's name (`[[tickets.system]] name`).
    pub system: String,
    pub key: String,
    pub state: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<String>,
    /// The assignee as the system names them (a login or an address).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub assignee: Option<String>,
    pub assigned_to_requester: bool,
    /// The change's implementation window, when the ticket has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window_start: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window_end: Option<Timestamp>,
}

impl TicketFacts {
    /// Whether `at` is inside the ticket's implementation window (false without one).
    pub fn in_window(&self, at: Timestamp) -> bool {
        match (self.window_start, self.window_end) {
            (Some(s), Some(e)) => s <= at && at < e,
            _ => false,
        }
    }
}

/// The answer of a ticket check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TicketCheck {
    /// No configured system handles tickets written like this one.
    NotHandled,
    /// The ticket exists and may back a request.
    Valid(TicketFacts),
    /// The system refuses it for requests: unknown, in a state not allowed, assigned to
    /// someone else. The reason names the ticket and the system.
    Refused { system: String, reason: String },
    /// The system could not be asked. `to_approvers`: the system is configured to send such
    /// requests to people (`on_unavailable = "approval"`) rather than refuse them.
    Unavailable {
        system: String,
        error: String,
        to_approvers: bool,
    },
}

/// Checks tickets against the systems they live in (implemented by the server).
#[async_trait::async_trait]
pub trait TicketChecker: Send + Sync {
    /// Checks `key` for a request by `requester` (with their mail address, if known).
    async fn check(&self, key: &str, requester: &str, requester_email: Option<&str>)
    -> TicketCheck;
}
