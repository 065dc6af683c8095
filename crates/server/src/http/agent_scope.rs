//! What an AI agent's token may do: the one allow-list, applied by the [`Caller`] extractor
//! to every authenticated API call (deny by default: a route not listed here is refused to
//! an agent token with 403 and an `auth.refused` event, whatever policy would say).
//!
//! A person mints the token for the agent acting for them (`pedm token create
//! --for-agent`, kind `agent`); `pedm mcp` serves it to the agent over the Model Context
//! Protocol. The agent reads its person's identity, what they may request, their requests and
//! grants, and creates, waits on (by reading) and cancels their requests; those requests carry
//! `context.via_agent`, set by the control plane from the authentication. It approves, denies,
//! mints, administers, executes, delegates, extends, releases and reads secrets never: a
//! person does those. Behind the list, the core holds an agent actor to its person's own
//! records (`ControlPlane::holds` is false and `decision_tier_on` refuses for it), so a route
//! added here by mistake still cannot widen what it sees or decide anything.
//!
//! [`Caller`]: super::extract::Caller

use axum::http::Method;
use pedm_api::API_PREFIX;

/// `(method, route under /api/v1)`: the operations an agent token may call.
pub const ALLOWED: &[(&str, &str)] = &[
    ("GET", "/whoami"),
    ("GET", "/me/requestable"),
    ("GET", "/requests"),
    ("POST", "/requests"),
    ("GET", "/requests/{id}"),
    ("POST", "/requests/{id}/cancel"),
    ("GET", "/grants"),
    ("GET", "/grants/{id}"),
];

/// Whether an agent token may call `method` on the matched route template `route` (the full
/// path, `/api/v1/requests/{id}`).
pub fn allows(method: &Method, route: &str) -> bool {
    let Some(route) = route.strip_prefix(API_PREFIX) else {
        return false;
    };
    ALLOWED
        .iter()
        .any(|(m, r)| *r == route && method.as_str() == *m)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_allowed_operation_exists_in_the_api() {
        let doc = super::super::openapi();
        for (m, r) in ALLOWED {
            let path = format!("{API_PREFIX}{r}");
            assert!(
                doc["paths"][&path][m.to_ascii_lowercase()].is_object(),
                "{m} {path} is not an operation of the API"
            );
        }
    }

    #[test]
    fn only_listed_operations_are_allowed() {
        assert!(allows(&Method::GET, "/api/v1/requests/{id}"));
        assert!(allows(&Method::POST, "/api/v1/requests"));
        for (m, r) in [
            (Method::POST, "/api/v1/requests/{id}/approve"),
            (Method::POST, "/api/v1/requests/{id}/deny"),
            (Method::POST, "/api/v1/tokens"),
            (Method::GET, "/api/v1/tokens"),
            (Method::POST, "/api/v1/grants/{id}/extend"),
            (Method::GET, "/api/v1/grants/{id}/secret"),
            (Method::PUT, "/api/v1/policies"),
            (Method::DELETE, "/api/v1/requests/{id}"),
            (Method::GET, "/requests"),
            (Method::GET, "/api/v1/requests/{id}/extra"),
        ] {
            assert!(!allows(&m, r), "{m} {r}");
        }
    }
}
