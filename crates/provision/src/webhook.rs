//! A signed HTTP call for each step.
//!
//! `POST <url>` with a JSON body `{"action": "grant"|"revoke"|"observe"|"discover",
//! "target": NAME, "grant": <GrantSpec> | null}` (for `remove_standing`, drift removal when
//! the target has `remove_drift = true`: `"grant": null, "standing": {"account",
//! "privilege", "source"}` as `discover` returned it) and the headers of pedm-notify webhooks:
//! `X-Pedm-Timestamp` (Unix seconds), `X-Pedm-Signature` (`v1=<hex HMAC-SHA256(secret,
//! "<timestamp>.<body>")>`, a second value with `previous_secret` during a rotation; check
//! it with `pedm_notify::verify_signature`), `X-Pedm-Delivery` (a fresh id per call) and
//! `X-Pedm-Kind: provision.<action>`. Redirects are not followed.
//!
//! Answers: 2xx is success; 5xx, 408, 429, a timeout or a connection error is
//! [`ProvisionError::Unreachable`]; anything else (other 4xx, 3xx) is
//! [`ProvisionError::Refused`], carrying the start of the body. Response bodies (at most
//! 1 MiB read):
//!
//! - `grant`: empty, or `{"secret": "...", "detail": "..."}` (both optional).
//! - `revoke`: ignored.
//! - `observe`: `{"present": true|false, "detail": "..."}`.
//! - `discover`: a JSON array of `{"account", "privilege", "source"}`.
//! - `remove_standing`: empty, or `{"detail": "..."}`. Removing what is gone must succeed.

use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::config::ConfigError;
use crate::{
    GrantOutcome, GrantSpec, Observed, ProvisionError, Provisioner, StandingPrivilege, redact_url,
    truncate,
};

const MAX_RESPONSE: usize = 1024 * 1024;

/// `kind = "webhook"` in the server configuration.
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// `http://` or `https://` endpoint.
    pub url: String,
    /// HMAC key the receiver checks. Not shown by `Debug`.
    pub secret: String,
    /// The key being rotated out, also signed with while set.
    #[serde(default)]
    pub previous_secret: Option<String>,
    /// Longest one call may take (`"10s"` or seconds).
    #[serde(default = "default_timeout", with = "pedm_notify::duration")]
    pub timeout: Duration,
    /// PEM CA certificate(s) trusted for an `https://` endpoint besides the system's roots.
    #[serde(default)]
    pub ca_file: Option<std::path::PathBuf>,
}

fn default_timeout() -> Duration {
    Duration::from_secs(10)
}

impl WebhookConfig {
    pub fn new(url: impl Into<String>, secret: impl Into<String>) -> Self {
        WebhookConfig {
            url: url.into(),
            secret: secret.into(),
            previous_secret: None,
            timeout: default_timeout(),
            ca_file: None,
        }
    }
}

impl std::fmt::Debug for WebhookConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookConfig")
            .field("url", &redact_url(&self.url))
            .field("secret", &"<redacted>")
            .field(
                "previous_secret",
                &self.previous_secret.as_ref().map(|_| "<redacted>"),
            )
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// Calls a signed webhook for each step.
pub struct WebhookProvisioner {
    target: String,
    config: WebhookConfig,
    url: reqwest::Url,
    client: reqwest::Client,
}

impl std::fmt::Debug for WebhookProvisioner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookProvisioner")
            .field("target", &self.target)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

#[derive(Serialize)]
struct Body<'a> {
    action: &'a str,
    target: &'a str,
    grant: Option<&'a GrantSpec>,
    #[serde(skip_serializing_if = "Option::is_none")]
    standing: Option<&'a StandingPrivilege>,
}

#[derive(Deserialize)]
struct DetailReply {
    detail: Option<String>,
}

#[derive(Deserialize)]
struct GrantReply {
    secret: Option<String>,
    detail: Option<String>,
}

impl WebhookProvisioner {
    pub fn new(target: &str, config: WebhookConfig) -> Result<Self, ConfigError> {
        let shown = redact_url(&config.url);
        let url = reqwest::Url::parse(&config.url)
            .map_err(|e| ConfigError(format!("invalid webhook URL {shown}: {e}")))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(ConfigError(format!(
                "webhook URL {shown} must be http:// or https://"
            )));
        }
        if config.secret.is_empty() {
            return Err(ConfigError("webhook secret must not be empty".into()));
        }
        if config.timeout.is_zero() {
            return Err(ConfigError("timeout must be greater than zero".into()));
        }
        let client = crate::http_client(config.timeout, config.ca_file.as_deref())?;
        Ok(WebhookProvisioner {
            target: target.to_string(),
            config,
            url,
            client,
        })
    }

    /// Sends one step; the response body of a 2xx answer.
    async fn call(
        &self,
        action: &str,
        grant: Option<&GrantSpec>,
    ) -> Result<Vec<u8>, ProvisionError> {
        self.send(Body {
            action,
            target: &self.target,
            grant,
            standing: None,
        })
        .await
    }

    async fn send(&self, body: Body<'_>) -> Result<Vec<u8>, ProvisionError> {
        let action = body.action;
        let body = serde_json::to_vec(&body).expect("body serializes");
        let ts = jiff::Timestamp::now().as_second();
        let mut secrets: Vec<&[u8]> = vec![self.config.secret.as_bytes()];
        if let Some(p) = &self.config.previous_secret {
            secrets.push(p.as_bytes());
        }
        let shown = redact_url(self.url.as_str());
        let send = self
            .client
            .post(self.url.clone())
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(pedm_notify::TIMESTAMP_HEADER, ts.to_string())
            .header(
                pedm_notify::SIGNATURE_HEADER,
                pedm_notify::signature_header(&secrets, ts, &body),
            )
            .header(
                pedm_notify::DELIVERY_HEADER,
                uuid::Uuid::now_v7().to_string(),
            )
            .header(pedm_notify::KIND_HEADER, format!("provision.{action}"))
            .body(body)
            .send()
            .await;
        let mut resp = match send {
            Ok(r) => r,
            Err(e) if e.is_builder() => {
                return Err(ProvisionError::invalid(format!("{action} to {shown}: {e}")));
            }
            Err(e) => {
                let why = crate::transport_error(&e);
                return Err(ProvisionError::unreachable(format!(
                    "{action} to {shown}: {why}"
                )));
            }
        };
        let status = resp.status();
        let mut bytes = Vec::new();
        loop {
            match resp.chunk().await {
                Ok(Some(c)) => {
                    let room = MAX_RESPONSE.saturating_sub(bytes.len());
                    bytes.extend_from_slice(&c[..c.len().min(room)]);
                    if room < c.len() {
                        break;
                    }
                }
                Ok(None) => break,
                Err(e) if status.is_success() => {
                    return Err(ProvisionError::unreachable(format!(
                        "{action} to {shown}: reading the answer: {e}"
                    )));
                }
                Err(_) => break,
            }
        }
        if status.is_success() {
            return Ok(bytes);
        }
        let msg = format!(
            "{action} to {shown}: HTTP {status}: {}",
            truncate(String::from_utf8_lossy(&bytes).trim(), 4096)
        );
        if status.is_server_error()
            || status == reqwest::StatusCode::TOO_MANY_REQUESTS
            || status == reqwest::StatusCode::REQUEST_TIMEOUT
        {
            Err(ProvisionError::Unreachable(msg))
        } else {
            Err(ProvisionError::Refused(msg))
        }
    }
}

#[async_trait]
impl Provisioner for WebhookProvisioner {
    fn kind(&self) -> &'static str {
        "webhook"
    }

    async fn grant(&self, g: &GrantSpec) -> Result<GrantOutcome, ProvisionError> {
        let body = self.call("grant", Some(g)).await?;
        let reply = if body.iter().all(u8::is_ascii_whitespace) {
            GrantReply {
                secret: None,
                detail: None,
            }
        } else {
            serde_json::from_slice::<GrantReply>(&body).map_err(|e| {
                ProvisionError::refused(format!(
                    "grant: the webhook answered 2xx with a body that is not \
                     {{\"secret\", \"detail\"}} JSON ({e})"
                ))
            })?
        };
        Ok(GrantOutcome {
            secret: reply.secret.filter(|s| !s.is_empty()),
            detail: reply.detail.unwrap_or_else(|| {
                format!(
                    "webhook {} accepted the grant",
                    redact_url(self.url.as_str())
                )
            }),
        })
    }

    async fn revoke(&self, g: &GrantSpec) -> Result<(), ProvisionError> {
        self.call("revoke", Some(g)).await.map(|_| ())
    }

    async fn observe(&self, g: &GrantSpec) -> Result<Observed, ProvisionError> {
        let body = self.call("observe", Some(g)).await?;
        serde_json::from_slice(&body).map_err(|e| {
            ProvisionError::refused(format!(
                "observe: expected {{\"present\": true|false}} from the webhook ({e})"
            ))
        })
    }

    async fn discover(&self) -> Result<Vec<StandingPrivilege>, ProvisionError> {
        let body = self.call("discover", None).await?;
        serde_json::from_slice(&body).map_err(|e| {
            ProvisionError::refused(format!(
                "discover: expected a JSON array of {{account, privilege, source}} ({e})"
            ))
        })
    }

    fn removable(&self, _: &StandingPrivilege) -> Result<(), String> {
        Ok(())
    }

    async fn remove_standing(&self, p: &StandingPrivilege) -> Result<String, ProvisionError> {
        let body = self
            .send(Body {
                action: "remove_standing",
                target: &self.target,
                grant: None,
                standing: Some(p),
            })
            .await?;
        let detail = serde_json::from_slice::<DetailReply>(&body)
            .ok()
            .and_then(|r| r.detail);
        Ok(detail.unwrap_or_else(|| {
            format!(
                "webhook {} removed {} from {}",
                redact_url(self.url.as_str()),
                p.privilege,
                p.account
            )
        }))
    }
}
