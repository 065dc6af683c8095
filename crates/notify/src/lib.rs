//! pedm notifications: HTTP webhooks for workflow events (new pending
//! request, decision, grant start/end, break-glass).
//!
//! * [`Notifier::notify`] never blocks the request path: it puts the
//!   notification into a bounded per-sink queue (dropping, logging and
//!   counting it when the queue is full) and a background task per sink
//!   delivers it, retrying connect errors, timeouts, 408, 429 and 5xx with
//!   exponential backoff and jitter.
//! * With a secret, every request is signed: `X-Pedm-Timestamp: <unix
//!   seconds>`, `X-Pedm-Signature: v1=<hex HMAC-SHA256(secret,
//!   "<timestamp>.<raw body>")>`, plus `X-Pedm-Delivery: <notification id>`
//!   (stable across retries, for deduplication). Receivers check with
//!   [`verify_signature`].
//! * Payloads: the [`Notification`] as JSON ([`Format::Generic`]) or a Slack
//!   incoming-webhook message ([`Format::Slack`]).
//!
//! Metrics: `pedm_notifications_delivered_total{sink}`,
//! `pedm_notifications_failed_total{sink,reason}`,
//! `pedm_notifications_dropped_total{sink,reason}`,
//! `pedm_notification_retries_total{sink}`.

mod config;
pub mod email;
mod notification;
mod notifier;
pub mod payload;
mod signature;
pub mod slack;
pub mod tls;

pub use config::{
    ConfigError, Format, NotifierOptions, NotifyConfig, RetryPolicy, SinkConfig, duration,
    validate_sinks,
};
pub use notification::{Notification, Severity, kinds};
pub use notifier::{AttemptOutcome, DeliveryEvent, DropReason, FailReason, Notifier, SinkStats};
/// An HTTP answer's `Retry-After` in seconds; an HTTP date, or anything unreadable, is taken
/// as absent (the caller's own backoff applies).
pub fn retry_after(h: &reqwest::header::HeaderMap) -> Option<std::time::Duration> {
    h.get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse::<u64>()
        .ok()
        .map(std::time::Duration::from_secs)
}

pub use signature::{
    DELIVERY_HEADER, KIND_HEADER, SIGNATURE_HEADER, SignatureError, TIMESTAMP_HEADER, sign,
    signature_header, verify_signature,
};
