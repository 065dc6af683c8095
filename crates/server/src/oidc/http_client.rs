//! The `openidconnect` crate's HTTP port wired to the workspace's reqwest 0.13 (its own
//! reqwest feature would pull reqwest 0.12 and a second TLS stack).

use openidconnect::{HttpRequest, HttpResponse};
use std::future::Future;
use std::pin::Pin;

#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("{0}")]
    Transport(String),
    #[error("response too large")]
    TooLarge,
}

/// Largest discovery document, JWKS or token response accepted.
const MAX_BODY: usize = 1 << 20;

/// A reqwest client that follows no redirects (a provider's endpoints are fixed by discovery)
/// and gives up after 10 s.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(std::time::Duration::from_secs(10))
        .build()
        .unwrap_or_else(|_| reqwest::Client::new())
}

/// Sends one request for the `openidconnect` crate.
#[derive(Clone)]
pub struct Adapter(pub reqwest::Client);

type Fut = Pin<Box<dyn Future<Output = Result<HttpResponse, HttpError>> + Send>>;

impl Adapter {
    pub fn call(&self, req: HttpRequest) -> Fut {
        let client = self.0.clone();
        Box::pin(async move {
            let (parts, body) = req.into_parts();
            let mut rb = client
                .request(parts.method, parts.uri.to_string())
                .headers(parts.headers)
                .body(body);
            rb = rb.header(http::header::ACCEPT, "application/json");
            let resp = rb
                .send()
                .await
                .map_err(|e| HttpError::Transport(e.without_url().to_string()))?;
            let status = resp.status();
            let headers = resp.headers().clone();
            let bytes = resp
                .bytes()
                .await
                .map_err(|e| HttpError::Transport(e.without_url().to_string()))?;
            if bytes.len() > MAX_BODY {
                return Err(HttpError::TooLarge);
            }
            let mut out = http::Response::new(bytes.to_vec());
            *out.status_mut() = status;
            *out.headers_mut() = headers;
            Ok(out)
        })
    }

    /// A closure the crate accepts as its async HTTP client.
    pub fn as_fn(&self) -> impl Fn(HttpRequest) -> Fut + '_ {
        move |req| self.call(req)
    }
}
