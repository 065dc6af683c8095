//! Token exchange for workload identities (RFC 8693, `POST /oauth/token`): a CI job or service
//! trades the OIDC token its platform gave it for a short-lived pedm token.

use crate::client::{ApiError, Client};
use serde::{Deserialize, Serialize};

/// What `POST /oauth/token` answers (RFC 8693 §2.2.1).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ExchangedToken {
    pub access_token: String,
    pub issued_token_type: String,
    pub token_type: String,
    /// Seconds.
    pub expires_in: i64,
}

/// An OAuth error answer (RFC 6749 §5.2).
#[derive(Debug, Deserialize)]
struct OauthError {
    error: String,
    #[serde(default)]
    error_description: String,
}

/// `application/x-www-form-urlencoded` encoding of one value.
fn form_value(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for b in v.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'*' => {
                out.push(b as char)
            }
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

impl Client {
    /// Exchanges `subject_token` (an OIDC ID token from a `[[auth.workload]]` issuer) for a
    /// pedm token. Needs no pedm token.
    pub async fn exchange_workload_token(
        &self,
        subject_token: &str,
    ) -> Result<ExchangedToken, ApiError> {
        let body = format!(
            "grant_type={}&subject_token={}&subject_token_type={}",
            form_value("urn:ietf:params:oauth:grant-type:token-exchange"),
            form_value(subject_token),
            form_value("urn:ietf:params:oauth:token-type:id_token"),
        );
        let transport = |e: reqwest::Error| ApiError::Transport {
            url: self.base_url().to_string(),
            message: e.without_url().to_string(),
        };
        let resp = self
            .http_client()
            .post(format!("{}/oauth/token", self.base_url()))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
            .await
            .map_err(transport)?;
        let status = resp.status();
        let bytes = resp.bytes().await.map_err(transport)?;
        if status.is_success() {
            return serde_json::from_slice(&bytes).map_err(|e| ApiError::Transport {
                url: self.base_url().to_string(),
                message: format!("unexpected response body: {e}"),
            });
        }
        let e: OauthError = serde_json::from_slice(&bytes).unwrap_or(OauthError {
            error: "http".into(),
            error_description: String::from_utf8_lossy(&bytes).chars().take(500).collect(),
        });
        Err(ApiError::Server {
            status: status.as_u16(),
            code: e.error,
            message: e.error_description,
        })
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn form_values_are_encoded() {
        assert_eq!(super::form_value("a b+c/=&é"), "a+b%2Bc%2F%3D%26%C3%A9");
    }
}
