//! Calls to Resource Manager: one `POST …/v3/{resource}:{method}` with Google's errors sorted
//! into retry-later and refused (honouring `Retry-After` within the timeout), and the etag
//! read-modify-write every change goes through.

use std::time::{Duration, Instant};

use jiff::Timestamp;
use serde_json::{Value, json};

use super::policy::Policy;
use super::{GcpProvisioner, MAX_ANSWER, MAX_CONFLICTS, MAX_WAITS};
use crate::{ProvisionError, truncate};

impl GcpProvisioner {
    /// `POST {endpoint}/v3/{resource}:{method}`; the JSON of a 2xx answer.
    pub(super) async fn call(
        &self,
        method: &str,
        body: &Value,
        deadline: Instant,
    ) -> Result<Value, Failure> {
        let url = format!("{}/v3/{}:{method}", self.endpoint, self.config.resource);
        let what = format!("{method} on {}", self.config.resource);
        let mut reauthenticated = false;
        let mut waits = 0;
        loop {
            let token = self.tokens.token(&self.client).await?;
            let sent = self
                .client
                .post(&url)
                .bearer_auth(&token)
                .json(body)
                .send()
                .await;
            let resp = match sent {
                Ok(r) => r,
                Err(e) => {
                    let why = crate::transport_error(&e);
                    return Err(ProvisionError::unreachable(format!("{what}: {why}")).into());
                }
            };
            let status = resp.status().as_u16();
            let retry_after = resp
                .headers()
                .get(reqwest::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(parse_retry_after);
            let bytes = read_limited(resp, MAX_ANSWER).await.map_err(|e| {
                ProvisionError::unreachable(format!("{what}: reading the answer: {e}"))
            })?;
            if (200..300).contains(&status) {
                return serde_json::from_slice(&bytes).map_err(|e| {
                    ProvisionError::refused(format!("{what}: the answer is not JSON: {e}")).into()
                });
            }
            let (code, message) = google_error(&bytes);
            let mut msg = format!("{what}: {code}: {message} (HTTP {status})");
            match status {
                // The cached token was revoked or has expired early: one fresh token.
                401 if !reauthenticated => {
                    reauthenticated = true;
                    self.tokens.forget().await;
                    continue;
                }
                409 if code == "ABORTED" => return Err(Failure::Conflict(msg)),
                429 | 503 => {
                    if let Some(wait) = retry_after {
                        if waits < MAX_WAITS && Instant::now() + wait <= deadline {
                            waits += 1;
                            tracing::debug!(%what, ?wait, "Google Cloud asked to retry later");
                            tokio::time::sleep(wait).await;
                            continue;
                        }
                        msg.push_str(&format!(
                            "; Retry-After {}s does not fit in the {:?} timeout",
                            wait.as_secs(),
                            self.config.timeout
                        ));
                    }
                    return Err(ProvisionError::Unreachable(msg).into());
                }
                408 | 500..=599 => return Err(ProvisionError::Unreachable(msg).into()),
                _ => return Err(ProvisionError::Refused(msg).into()),
            }
        }
    }

    /// The resource's IAM policy (version 3: conditions included).
    pub(super) async fn policy(&self, deadline: Instant) -> Result<Policy, ProvisionError> {
        let body = json!({"options": {"requestedPolicyVersion": 3}});
        match self.call("getIamPolicy", &body, deadline).await {
            Ok(Value::Object(p)) => Ok(p),
            Ok(other) => Err(ProvisionError::refused(format!(
                "getIamPolicy on {} answered {}, not a policy",
                self.config.resource,
                truncate(&other.to_string(), 200)
            ))),
            Err(Failure::Conflict(m)) => Err(ProvisionError::Unreachable(m)),
            Err(Failure::Error(e)) => Err(e),
        }
    }

    /// Read, `edit`, write with the etag read; again from the read when Google says the policy
    /// changed in between. `edit` says whether it changed anything and what.
    pub(super) async fn modify(
        &self,
        mut edit: impl FnMut(&mut Policy) -> Result<(bool, String), ProvisionError>,
    ) -> Result<String, ProvisionError> {
        let deadline = Instant::now() + self.config.timeout;
        let mut last = String::new();
        for attempt in 0..MAX_CONFLICTS {
            if attempt > 0 {
                // Google asks for backoff before the whole read-modify-write is retried.
                let pause = Duration::from_millis(100 << attempt);
                if Instant::now() + pause > deadline {
                    break;
                }
                tokio::time::sleep(pause).await;
            }
            let mut p = self.policy(deadline).await?;
            if p.get("etag")
                .and_then(Value::as_str)
                .is_none_or(str::is_empty)
            {
                // Without an etag setIamPolicy overwrites blindly: never do that.
                return Err(ProvisionError::refused(format!(
                    "getIamPolicy on {} answered a policy without an etag",
                    self.config.resource
                )));
            }
            let (changed, detail) = edit(&mut p)?;
            if !changed {
                return Ok(detail);
            }
            let body = json!({"policy": p, "updateMask": "bindings,etag"});
            match self.call("setIamPolicy", &body, deadline).await {
                Ok(_) => return Ok(detail),
                Err(Failure::Conflict(m)) => {
                    tracing::debug!(resource = %self.config.resource, "concurrent IAM policy change, reading again");
                    last = m;
                }
                Err(Failure::Error(e)) => return Err(e),
            }
        }
        Err(ProvisionError::Unreachable(format!(
            "{last} (the policy kept changing under pedm; nothing was overwritten)"
        )))
    }
}

/// A call that failed: a concurrent policy change (retry the read-modify-write) or anything else.
pub(super) enum Failure {
    Conflict(String),
    Error(ProvisionError),
}

impl From<ProvisionError> for Failure {
    fn from(e: ProvisionError) -> Self {
        Failure::Error(e)
    }
}

/// Google's error body `{"error": {"code", "message", "status"}}`: `(status, message)`.
fn google_error(body: &[u8]) -> (String, String) {
    let v: Value = serde_json::from_slice(body).unwrap_or_default();
    let e = &v["error"];
    match (e["status"].as_str(), e["message"].as_str()) {
        (status, Some(m)) => (status.unwrap_or("UNKNOWN").to_string(), truncate(m, 500)),
        _ => (
            "UNKNOWN".into(),
            truncate(String::from_utf8_lossy(body).trim(), 500),
        ),
    }
}

/// `Retry-After`: seconds, or an HTTP date.
fn parse_retry_after(v: &str) -> Option<Duration> {
    if let Ok(s) = v.trim().parse::<u64>() {
        return Some(Duration::from_secs(s));
    }
    let at = jiff::fmt::rfc2822::parse(v.trim()).ok()?.timestamp();
    let d = at.duration_since(Timestamp::now());
    Some(Duration::try_from(d).unwrap_or(Duration::ZERO))
}

/// The body of an answer, at most `max` bytes of it.
pub(super) async fn read_limited(
    mut resp: reqwest::Response,
    max: usize,
) -> Result<Vec<u8>, reqwest::Error> {
    let mut bytes = Vec::new();
    while let Some(c) = resp.chunk().await? {
        let room = max.saturating_sub(bytes.len());
        bytes.extend_from_slice(&c[..c.len().min(room)]);
        if room < c.len() {
            break;
        }
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn google_errors_and_retry_after_are_read() {
        let body = br#"{"error":{"code":409,"message":"There were concurrent policy changes.","status":"ABORTED"}}"#;
        assert_eq!(
            google_error(body),
            (
                "ABORTED".to_string(),
                "There were concurrent policy changes.".to_string()
            )
        );
        assert_eq!(google_error(b"oops").0, "UNKNOWN");
        assert_eq!(parse_retry_after("7"), Some(Duration::from_secs(7)));
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon"), None);
    }
}
