//! Sink and notifier configuration, readable from the server's TOML file
//! (`[notify]` with `[[notify.webhook]]` entries).

use std::collections::HashSet;
use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::notification::Severity;

/// Payload format of a webhook sink.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// The [`Notification`](crate::Notification) as JSON.
    #[default]
    Generic,
    /// A Slack incoming-webhook message (`text` + `blocks`).
    Slack,
}

/// One webhook destination.
///
/// Serializing it (e.g. to show the effective configuration) leaves
/// `secret` and `previous_secret` out; the URL is kept.
///
/// `Debug` never shows the secret, and shows only the scheme and host of the
/// URL (a Slack webhook URL is itself a credential).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SinkConfig {
    /// Unique name, used in logs and metric labels.
    pub name: String,
    /// `http://` or `https://` URL the notification is POSTed to.
    pub url: String,
    /// HMAC-SHA256 key. When set, every delivery carries `X-Pedm-Timestamp`
    /// and `X-Pedm-Signature`.
    #[serde(default, skip_serializing)]
    pub secret: Option<String>,
    /// During a key rotation: also sign with this key, so the signature header
    /// carries two `v1=` values and receivers holding either key accept it.
    #[serde(default, skip_serializing)]
    pub previous_secret: Option<String>,
    /// Payload format.
    #[serde(default)]
    pub format: Format,
    /// Kinds delivered to this sink; empty means all. An entry matches a kind
    /// exactly, or as a prefix when it ends with `.` or `.*` (`"request."`),
    /// and `"*"` matches everything.
    #[serde(default)]
    pub kinds: Vec<String>,
    /// Notifications below this severity are not sent to this sink.
    #[serde(default)]
    pub min_severity: Severity,
    /// Time limit of one delivery attempt (connect + response), e.g. `"10s"`.
    #[serde(default = "default_timeout", with = "duration")]
    pub timeout: Duration,
    /// PEM CA certificate(s) trusted for this webhook's `https://` URL besides the system's
    /// roots (a private CA). The certificate is always verified.
    #[serde(default)]
    pub ca_file: Option<std::path::PathBuf>,
}

fn default_timeout() -> Duration {
    Duration::from_secs(10)
}

impl SinkConfig {
    /// A generic, unsigned sink for every kind with default settings.
    pub fn new(name: impl Into<String>, url: impl Into<String>) -> Self {
        SinkConfig {
            name: name.into(),
            url: url.into(),
            secret: None,
            previous_secret: None,
            format: Format::Generic,
            kinds: Vec::new(),
            min_severity: Severity::Info,
            timeout: default_timeout(),
            ca_file: None,
        }
    }

    /// Whether a notification of this kind and severity goes to this sink.
    pub fn accepts(&self, kind: &str, severity: Severity) -> bool {
        severity >= self.min_severity
            && (self.kinds.is_empty() || self.kinds.iter().any(|k| kind_matches(k, kind)))
    }

    /// Checks the sink on its own (names are checked for uniqueness by
    /// [`validate_sinks`]).
    pub fn validate(&self) -> Result<(), ConfigError> {
        let name = self.name.trim();
        if name.is_empty() {
            return Err(ConfigError::new("(unnamed)", "name is empty"));
        }
        let err = |msg: String| ConfigError::new(name, msg);
        let url = reqwest::Url::parse(&self.url)
            .map_err(|e| err(format!("url is not a valid URL: {e}")))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(err(format!(
                "url scheme must be http or https, not {:?}",
                url.scheme()
            )));
        }
        if url.host_str().is_none_or(str::is_empty) {
            return Err(err("url has no host".into()));
        }
        for (field, s) in [
            ("secret", &self.secret),
            ("previous_secret", &self.previous_secret),
        ] {
            if s.as_deref().is_some_and(|s| s.is_empty()) {
                return Err(err(format!("{field} is empty (omit it to send unsigned)")));
            }
        }
        if self.previous_secret.is_some() && self.secret.is_none() {
            return Err(err("previous_secret is set but secret is not".into()));
        }
        if self.timeout.is_zero() {
            return Err(err("timeout must be greater than zero".into()));
        }
        if let Some(k) = self
            .kinds
            .iter()
            .find(|k| k.trim().is_empty() || k.trim() != k.as_str())
        {
            return Err(err(format!(
                "kinds contains an empty or padded entry {k:?}"
            )));
        }
        Ok(())
    }
}

/// Checks every sink and that names are unique.
pub fn validate_sinks(sinks: &[SinkConfig]) -> Result<(), ConfigError> {
    let mut seen = HashSet::new();
    for s in sinks {
        s.validate()?;
        if !seen.insert(s.name.as_str()) {
            return Err(ConfigError::new(
                &s.name,
                "another webhook has the same name",
            ));
        }
    }
    Ok(())
}

fn kind_matches(pattern: &str, kind: &str) -> bool {
    if pattern == "*" || pattern == kind {
        return true;
    }
    if let Some(prefix) = pattern.strip_suffix('*') {
        return prefix.ends_with('.') && kind.starts_with(prefix);
    }
    pattern.ends_with('.') && kind.starts_with(pattern)
}

impl fmt::Debug for SinkConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let redact = |s: &Option<String>| s.as_ref().map(|_| "<redacted>");
        f.debug_struct("SinkConfig")
            .field("name", &self.name)
            .field("url", &redacted_url(&self.url))
            .field("secret", &redact(&self.secret))
            .field("previous_secret", &redact(&self.previous_secret))
            .field("format", &self.format)
            .field("kinds", &self.kinds)
            .field("min_severity", &self.min_severity)
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// `scheme://host[:port]/…`: enough to recognise the sink, without path or
/// query (which often carry tokens).
pub(crate) fn redacted_url(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(u) => {
            let host = u.host_str().unwrap_or("");
            match u.port() {
                Some(p) => format!("{}://{host}:{p}/…", u.scheme()),
                None => format!("{}://{host}/…", u.scheme()),
            }
        }
        Err(_) => "<invalid url>".to_string(),
    }
}

/// Retry schedule: attempt `n` (1-based) that fails retryably waits
/// `min(max, base * 2^(n-1))`, jittered to between half and all of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetryPolicy {
    /// First delay, e.g. `"500ms"`.
    #[serde(with = "duration")]
    pub base: Duration,
    /// Largest delay, e.g. `"60s"`.
    #[serde(with = "duration")]
    pub max: Duration,
    /// Total attempts per notification, including the first.
    pub attempts: u32,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            base: Duration::from_millis(500),
            max: Duration::from_secs(60),
            attempts: 8,
        }
    }
}

impl RetryPolicy {
    /// Un-jittered delay after failed attempt `attempt` (1-based).
    pub fn delay(&self, attempt: u32) -> Duration {
        let shift = attempt.saturating_sub(1).min(31);
        self.base.saturating_mul(1u32 << shift).min(self.max)
    }

    /// Jittered delay after failed attempt `attempt`: uniform in `[d/2, d]`.
    pub fn jittered_delay(&self, attempt: u32) -> Duration {
        let d = self.delay(attempt);
        let half = d / 2;
        let span = (d - half).as_nanos() as u64;
        let r = getrandom::u64().unwrap_or(0);
        half + Duration::from_nanos(if span == 0 { 0 } else { r % (span + 1) })
    }
}

/// Settings shared by all sinks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NotifierOptions {
    /// Notifications that may wait per sink; beyond it new ones are dropped.
    pub queue_capacity: usize,
    /// Retry schedule.
    pub retry: RetryPolicy,
}

impl Default for NotifierOptions {
    fn default() -> Self {
        NotifierOptions {
            queue_capacity: 1024,
            retry: RetryPolicy::default(),
        }
    }
}

impl NotifierOptions {
    /// Checks the options.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let err = |m: &str| Err(ConfigError::options(m));
        if self.queue_capacity == 0 {
            return err("queue_capacity must be at least 1");
        }
        if self.retry.attempts == 0 {
            return err("retry.attempts must be at least 1");
        }
        if self.retry.base.is_zero() {
            return err("retry.base must be greater than zero");
        }
        if self.retry.max < self.retry.base {
            return err("retry.max must not be smaller than retry.base");
        }
        Ok(())
    }
}

/// The whole `[notify]` section of the server configuration.
///
/// ```toml
/// [notify]
/// queue_capacity = 1024
/// retry = { base = "500ms", max = "60s", attempts = 8 }
///
/// [[notify.webhook]]
/// name = "security"
/// url = "https://hooks.example.com/pedm"
/// secret = "…"
/// kinds = ["break_glass", "request."]
/// min_severity = "info"
/// timeout = "10s"
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NotifyConfig {
    /// See [`NotifierOptions::queue_capacity`].
    pub queue_capacity: usize,
    /// See [`NotifierOptions::retry`].
    pub retry: RetryPolicy,
    /// The webhook sinks.
    pub webhook: Vec<SinkConfig>,
    /// Slack apps (`[[notify.slack]]`): interactive approval messages.
    pub slack: Vec<crate::slack::SlackConfig>,
    /// Mail to approvers and requesters (`[notify.email]`).
    pub email: Option<crate::email::EmailConfig>,
    /// Tell holders this long before a grant ends (`grant.expiring`: webhooks, mail); off
    /// when absent. Grants that last no longer than this are not warned.
    #[serde(
        default,
        with = "opt_duration",
        skip_serializing_if = "Option::is_none"
    )]
    pub expiry_warning: Option<Duration>,
}

mod opt_duration {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => super::duration::serialize(d, s),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        #[derive(Deserialize)]
        struct W(#[serde(with = "super::duration")] Duration);
        Ok(Option::<W>::deserialize(d)?.map(|w| w.0))
    }
}

impl Default for NotifyConfig {
    fn default() -> Self {
        let o = NotifierOptions::default();
        NotifyConfig {
            queue_capacity: o.queue_capacity,
            retry: o.retry,
            webhook: Vec::new(),
            slack: Vec::new(),
            email: None,
            expiry_warning: None,
        }
    }
}

impl NotifyConfig {
    /// Splits into what [`Notifier::start`](crate::Notifier::start) takes.
    pub fn into_parts(self) -> (Vec<SinkConfig>, NotifierOptions) {
        (
            self.webhook,
            NotifierOptions {
                queue_capacity: self.queue_capacity,
                retry: self.retry,
            },
        )
    }
}

/// A configuration problem, naming the webhook (when it is about one) and
/// what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}: {message}", match sink { Some(s) => format!("notify.webhook {s:?}"), None => "notify".to_string() })]
pub struct ConfigError {
    /// The webhook name, or `None` for the shared `[notify]` options.
    pub sink: Option<String>,
    /// What is wrong.
    pub message: String,
}

impl ConfigError {
    pub(crate) fn new(sink: &str, message: impl Into<String>) -> Self {
        ConfigError {
            sink: Some(sink.to_string()),
            message: message.into(),
        }
    }

    pub(crate) fn options(message: impl Into<String>) -> Self {
        ConfigError {
            sink: None,
            message: message.into(),
        }
    }
}

/// Serde for `std::time::Duration` as a human string (`"500ms"`, `"1m30s"`,
/// ISO 8601 `"PT10S"`) via jiff, or a number of seconds.
pub mod duration {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer, de};

    /// Serializes as jiff's friendly format (`"1m 30s"`).
    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        let sd = jiff::SignedDuration::try_from(*d).map_err(serde::ser::Error::custom)?;
        s.collect_str(&format_args!("{sd:#}"))
    }

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Secs(u64),
        Text(String),
    }

    /// Deserializes a string duration or whole seconds; rejects negatives.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        match Raw::deserialize(d)? {
            Raw::Secs(s) => Ok(Duration::from_secs(s)),
            Raw::Text(t) => {
                let sd: jiff::SignedDuration = t
                    .parse()
                    .map_err(|e| de::Error::custom(format!("invalid duration {t:?}: {e}")))?;
                Duration::try_from(sd)
                    .map_err(|_| de::Error::custom(format!("duration {t:?} must not be negative")))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kind_patterns() {
        for (pattern, kind, want) in [
            ("request.pending", "request.pending", true),
            ("request.pending", "request.decided", false),
            ("request.", "request.pending", true),
            ("request.*", "request.decided", true),
            ("request.", "requests.x", false),
            ("request", "request.pending", false),
            ("*", "anything", true),
            ("req*", "request.pending", false),
        ] {
            assert_eq!(kind_matches(pattern, kind), want, "{pattern} vs {kind}");
        }
    }

    #[test]
    fn backoff_grows_caps_and_jitters_within_bounds() {
        let r = RetryPolicy::default();
        let delays: Vec<u64> = (1..=9).map(|a| r.delay(a).as_millis() as u64).collect();
        assert_eq!(
            delays,
            [500, 1000, 2000, 4000, 8000, 16000, 32000, 60000, 60000]
        );
        assert_eq!(r.delay(u32::MAX), r.max);
        for a in 1..=10 {
            let d = r.delay(a);
            for _ in 0..50 {
                let j = r.jittered_delay(a);
                assert!(j >= d / 2 && j <= d, "{j:?} outside [{:?}, {d:?}]", d / 2);
            }
        }
    }

    #[test]
    fn durations_round_trip() {
        let r = RetryPolicy {
            base: Duration::from_millis(1500),
            max: Duration::from_secs(90),
            attempts: 3,
        };
        let s = serde_json::to_string(&r).unwrap();
        assert_eq!(serde_json::from_str::<RetryPolicy>(&s).unwrap(), r);
        let p: RetryPolicy = serde_json::from_str(r#"{"base": 2, "max": "PT1M"}"#).unwrap();
        assert_eq!(
            (p.base, p.max, p.attempts),
            (Duration::from_secs(2), Duration::from_secs(60), 8)
        );
    }
}
