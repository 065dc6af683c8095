//! The HTTP side of the `azure` kind: Entra ID client-credentials tokens (cached until a
//! minute before they expire), Azure Resource Manager and Microsoft Graph calls with
//! throttling and 5xx retried as `Retry-After` says within the timeout budget, a 401 on a
//! cached token answered by fetching a new one once, and `nextLink` pagination.

use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode, Url};
use serde_json::Value;
use tokio::sync::Mutex;

use super::AzureConfig;
use crate::config::ConfigError;
use crate::{ProvisionError, truncate};

/// Attempts of one request while the API answers 429 or 5xx.
const MAX_ATTEMPTS: u32 = 4;
/// Pages followed before a listing is taken to be looping.
const MAX_PAGES: usize = 1000;
/// A token is used until this long before Entra ID says it expires.
const TOKEN_MARGIN: Duration = Duration::from_secs(60);

/// Which API a call goes to (each has its own token audience).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Api {
    Arm,
    Graph,
}

/// A bearer token, never shown by `Debug`.
#[derive(Clone)]
struct Token {
    value: String,
    until: Instant,
}

/// A non-retryable answer: its status and JSON body (or the body as a JSON string).
pub(super) struct Reply {
    pub status: StatusCode,
    pub body: Value,
}

pub(super) struct Client {
    http: reqwest::Client,
    config: AzureConfig,
    arm_token: Mutex<Option<Token>>,
    graph_token: Mutex<Option<Token>>,
}

/// `error.code: error.message` of an ARM or Graph error body, or Entra ID's
/// `error: error_description`; the raw body (cut short) otherwise.
pub(super) fn error_text(body: &Value) -> String {
    match body.get("error") {
        Some(Value::Object(e)) => format!(
            "{}: {}",
            e.get("code").and_then(Value::as_str).unwrap_or("unknown"),
            truncate(e.get("message").and_then(Value::as_str).unwrap_or(""), 500)
        ),
        Some(Value::String(code)) => format!(
            "{code}: {}",
            truncate(
                body.get("error_description")
                    .and_then(Value::as_str)
                    .unwrap_or(""),
                500
            )
        ),
        _ => match body {
            Value::String(s) => truncate(s, 300),
            other => truncate(&other.to_string(), 300),
        },
    }
}

/// What to do with an answer: `Ok(None)` hand it to the caller, `Ok(Some(wait))` retry after
/// `wait`, `Err` give up. Retries only 429 and 5xx, and only while `wait` fits in what is
/// left of the budget.
pub(super) fn classify(
    what: &str,
    status: StatusCode,
    retry_after: Option<Duration>,
    body: &Value,
    attempt: u32,
    left: Duration,
) -> Result<Option<Duration>, ProvisionError> {
    if status != StatusCode::TOO_MANY_REQUESTS && !status.is_server_error() {
        return Ok(None);
    }
    // Without Retry-After: 1 s, 2 s, 3 s.
    let wait = retry_after.unwrap_or(Duration::from_secs(u64::from(attempt)));
    if attempt < MAX_ATTEMPTS && wait < left {
        return Ok(Some(wait));
    }
    let why = match retry_after {
        Some(w) if w >= left => format!(" (Retry-After {}s exceeds the timeout)", w.as_secs()),
        _ => String::new(),
    };
    Err(ProvisionError::unreachable(format!(
        "{what}: HTTP {}: {}{why}",
        status.as_u16(),
        error_text(body)
    )))
}

/// A refusal naming the API's error code and message.
pub(super) fn refused(what: &str, r: &Reply) -> ProvisionError {
    ProvisionError::refused(format!(
        "{what}: HTTP {}: {}",
        r.status.as_u16(),
        error_text(&r.body)
    ))
}

impl Client {
    pub(super) fn new(config: &AzureConfig) -> Result<Self, ConfigError> {
        let http = crate::http_client(config.timeout, config.ca_file.as_deref())?;
        Ok(Client {
            http,
            config: config.clone(),
            arm_token: Mutex::new(None),
            graph_token: Mutex::new(None),
        })
    }

    fn base(&self, api: Api) -> &str {
        match api {
            Api::Arm => &self.config.management_url,
            Api::Graph => &self.config.graph_url,
        }
    }

    /// `base` + `path` (already safe: checked scopes, GUIDs) with `query`.
    pub(super) fn url(
        &self,
        api: Api,
        path: &str,
        query: &[(&str, &str)],
    ) -> Result<Url, ProvisionError> {
        let mut u = Url::parse(&format!("{}{path}", self.base(api)))
            .map_err(|e| ProvisionError::invalid(format!("URL for {path}: {e}")))?;
        if !query.is_empty() {
            let mut q = u.query_pairs_mut();
            for (k, v) in query {
                q.append_pair(k, v);
            }
        }
        Ok(u)
    }

    /// Graph `/v1.0/<segment>/<value>…`, each value percent-encoded as one path segment.
    pub(super) fn graph_url(
        &self,
        segments: &[&str],
        query: &[(&str, &str)],
    ) -> Result<Url, ProvisionError> {
        let mut u = self.url(Api::Graph, "/v1.0", query)?;
        u.path_segments_mut()
            .map_err(|_| ProvisionError::invalid("graph_url cannot take a path"))?
            .extend(segments);
        Ok(u)
    }

    /// Sends one request built by `req`, retrying 429 and 5xx (see [`classify`]).
    async fn exchange(
        &self,
        what: &str,
        req: impl Fn() -> reqwest::RequestBuilder,
    ) -> Result<Reply, ProvisionError> {
        let start = Instant::now();
        let mut attempt = 0;
        loop {
            attempt += 1;
            let resp = req().send().await.map_err(|e| {
                ProvisionError::unreachable(format!("{what}: {}", truncate(&e.to_string(), 500)))
            })?;
            let status = resp.status();
            let wait = pedm_notify::retry_after(resp.headers());
            let bytes = resp.bytes().await.map_err(|e| {
                ProvisionError::unreachable(format!("{what}: reading the answer: {e}"))
            })?;
            let body = if bytes.is_empty() {
                Value::Null
            } else {
                serde_json::from_slice(&bytes).unwrap_or_else(|_| {
                    Value::String(truncate(&String::from_utf8_lossy(&bytes), 300))
                })
            };
            let left = self.config.timeout.saturating_sub(start.elapsed());
            match classify(what, status, wait, &body, attempt, left)? {
                None => return Ok(Reply { status, body }),
                Some(wait) => {
                    tracing::debug!(what, status = status.as_u16(), ?wait, "Azure asks to retry");
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }

    fn token_slot(&self, api: Api) -> &Mutex<Option<Token>> {
        match api {
            Api::Arm => &self.arm_token,
            Api::Graph => &self.graph_token,
        }
    }

    /// A token for `api`, from the cache or Entra ID (one fetch at a time per API).
    async fn token(&self, api: Api) -> Result<String, ProvisionError> {
        let mut slot = self.token_slot(api).lock().await;
        if let Some(t) = slot.as_ref()
            && Instant::now() < t.until
        {
            return Ok(t.value.clone());
        }
        let c = &self.config;
        let secret = c.secret()?;
        let scope = format!("{}/.default", self.base(api));
        let url = format!("{}/{}/oauth2/v2.0/token", c.authority_url, c.tenant_id);
        let what = format!("Entra ID token for client {}", c.client_id);
        let form = [
            ("grant_type", "client_credentials"),
            ("client_id", c.client_id.as_str()),
            ("client_secret", secret.as_str()),
            ("scope", scope.as_str()),
        ];
        let r = self
            .exchange(&what, || self.http.post(&url).form(&form))
            .await?;
        if !r.status.is_success() {
            return Err(refused(&what, &r));
        }
        let value = r
            .body
            .get("access_token")
            .and_then(Value::as_str)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| ProvisionError::refused(format!("{what}: no access_token")))?
            .to_string();
        // v2.0 sends a number, v1.0 a string.
        let expires_in = match r.body.get("expires_in") {
            Some(Value::Number(n)) => n.as_u64(),
            Some(Value::String(s)) => s.parse().ok(),
            _ => None,
        }
        .unwrap_or(0);
        let until = Instant::now() + Duration::from_secs(expires_in).saturating_sub(TOKEN_MARGIN);
        *slot = Some(Token {
            value: value.clone(),
            until,
        });
        Ok(value)
    }

    /// Forgets `api`'s token if it is still `used` (another call may have replaced it).
    async fn drop_token(&self, api: Api, used: &str) {
        let mut slot = self.token_slot(api).lock().await;
        if slot.as_ref().is_some_and(|t| t.value == used) {
            *slot = None;
        }
    }

    /// One authenticated call; any answer but 429/5xx is returned (the caller decides).
    pub(super) async fn call(
        &self,
        api: Api,
        what: &str,
        method: Method,
        url: &Url,
        body: Option<&Value>,
    ) -> Result<Reply, ProvisionError> {
        let mut fresh = false;
        loop {
            let token = self.token(api).await?;
            let r = self
                .exchange(what, || {
                    let req = self
                        .http
                        .request(method.clone(), url.clone())
                        .bearer_auth(&token);
                    match body {
                        Some(b) => req.json(b),
                        None => req,
                    }
                })
                .await?;
            // A cached token the API no longer takes (revoked, clock skew): one fresh try.
            if r.status == StatusCode::UNAUTHORIZED && !fresh {
                self.drop_token(api, &token).await;
                fresh = true;
                continue;
            }
            return Ok(r);
        }
    }

    /// Every item of a listing (`value`), following `nextLink` / `@odata.nextLink` on the
    /// same API only (the bearer token goes nowhere else).
    pub(super) async fn list(
        &self,
        api: Api,
        what: &str,
        first: Url,
    ) -> Result<Vec<Value>, ProvisionError> {
        let mut out = Vec::new();
        let mut next = Some(first);
        let mut pages = 0;
        while let Some(url) = next.take() {
            pages += 1;
            if pages > MAX_PAGES {
                return Err(ProvisionError::refused(format!(
                    "{what}: more than {MAX_PAGES} pages"
                )));
            }
            let r = self.call(api, what, Method::GET, &url, None).await?;
            if !r.status.is_success() {
                return Err(refused(what, &r));
            }
            match r.body.get("value") {
                Some(Value::Array(items)) => out.extend(items.iter().cloned()),
                _ => {
                    return Err(ProvisionError::refused(format!(
                        "{what}: the answer has no value list"
                    )));
                }
            }
            let link = r
                .body
                .get("nextLink")
                .or_else(|| r.body.get("@odata.nextLink"))
                .and_then(Value::as_str);
            if let Some(link) = link {
                let base = self.base(api);
                let origin = Url::parse(base).ok().map(|b| b.origin());
                let u = Url::parse(link)
                    .ok()
                    .filter(|u| Some(u.origin()) == origin)
                    .ok_or_else(|| {
                        ProvisionError::refused(format!(
                            "{what}: nextLink {} is not on {base}",
                            truncate(link, 200)
                        ))
                    })?;
                next = Some(u);
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn errors_are_sorted_into_retry_and_refusal() {
        let arm = json!({"error": {"code": "AuthorizationFailed", "message": "no write"}});
        let big = Duration::from_secs(30);
        for s in [200, 201, 204, 400, 401, 403, 404, 409] {
            let st = StatusCode::from_u16(s).unwrap();
            assert!(
                matches!(classify("x", st, None, &arm, 1, big), Ok(None)),
                "{s}"
            );
        }
        // 429 and 5xx wait as Retry-After says while it fits.
        let wait = Some(Duration::from_secs(2));
        assert_eq!(
            classify("x", StatusCode::TOO_MANY_REQUESTS, wait, &arm, 1, big).unwrap(),
            wait
        );
        assert_eq!(
            classify("x", StatusCode::SERVICE_UNAVAILABLE, None, &arm, 2, big).unwrap(),
            Some(Duration::from_secs(2))
        );
        // Beyond the budget or the attempts: unreachable, saying why.
        let e = classify(
            "list",
            StatusCode::TOO_MANY_REQUESTS,
            Some(Duration::from_secs(60)),
            &arm,
            1,
            big,
        )
        .unwrap_err();
        assert!(e.is_retryable(), "{e}");
        assert!(e.to_string().contains("Retry-After 60s"), "{e}");
        assert!(
            e.to_string().contains("AuthorizationFailed: no write"),
            "{e}"
        );
        let e = classify("x", StatusCode::BAD_GATEWAY, wait, &arm, MAX_ATTEMPTS, big).unwrap_err();
        assert!(matches!(e, ProvisionError::Unreachable(_)), "{e}");
    }

    #[test]
    fn error_bodies_name_code_and_message() {
        assert_eq!(
            error_text(&json!({"error": {"code": "RoleAssignmentExists", "message": "exists"}})),
            "RoleAssignmentExists: exists"
        );
        assert_eq!(
            error_text(&json!({"error": "invalid_client", "error_description": "AADSTS7000215"})),
            "invalid_client: AADSTS7000215"
        );
        assert_eq!(error_text(&json!("Bad Gateway")), "Bad Gateway");
        let r = Reply {
            status: StatusCode::FORBIDDEN,
            body: json!({"error": {"code": "AuthorizationFailed", "message": "m"}}),
        };
        assert!(
            matches!(refused("put", &r), ProvisionError::Refused(m) if m.contains("HTTP 403: AuthorizationFailed: m"))
        );
    }
}
