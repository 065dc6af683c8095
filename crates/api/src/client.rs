//! A typed client for the pedm API.

use crate::types::*;
use crate::{
    API_PREFIX, AuditEvent, Grant, Group, PolicyVersion, Request, Role, SimulationReport,
    StandingPrivilege, StandingReport, Target, User,
};
use reqwest::Method;
use serde::Serialize;
use serde::de::DeserializeOwned;
use uuid::Uuid;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The server answered with an error body.
    #[error("{message} (HTTP {status}, {code})")]
    Server {
        status: u16,
        code: String,
        message: String,
    },
    /// The server could not be reached or answered something that is not our API.
    #[error("cannot reach pedm server at {url}: {message}")]
    Transport { url: String, message: String },
    #[error("{0}")]
    Usage(String),
}

impl ApiError {
    pub fn status(&self) -> Option<u16> {
        match self {
            ApiError::Server { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// "error sending request: connection refused" rather than the first link alone.
fn with_causes(e: &dyn std::error::Error) -> String {
    let mut msg = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let s = c.to_string();
        if !msg.contains(&s) {
            msg.push_str(": ");
            msg.push_str(&s);
        }
        cur = c.source();
    }
    msg
}

#[derive(Debug, Clone)]
pub struct Client {
    base: String,
    token: Option<String>,
    http: reqwest::Client,
}

impl Client {
    pub fn new(base_url: &str, token: Option<String>) -> Result<Self, ApiError> {
        let base = base_url.trim_end_matches('/').to_string();
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(ApiError::Usage(format!(
                "server URL {base_url:?} must start with http:// or https://"
            )));
        }
        let http = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(60))
            .user_agent(concat!("pedm/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| ApiError::Usage(format!("cannot build HTTP client: {e}")))?;
        Ok(Client { base, token, http })
    }

    pub fn base_url(&self) -> &str {
        &self.base
    }

    async fn call<B: Serialize, Q: Serialize, T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        query: Option<&Q>,
        body: Option<&B>,
    ) -> Result<T, ApiError> {
        let url = format!("{}{}{}", self.base, API_PREFIX, path);
        let mut rb = self.http.request(method, &url);
        if let Some(t) = &self.token {
            rb = rb.bearer_auth(t);
        }
        if let Some(q) = query {
            rb = rb.query(q);
        }
        if let Some(b) = body {
            rb = rb.json(b);
        }
        let transport = |e: reqwest::Error| ApiError::Transport {
            url: self.base.clone(),
            message: with_causes(&e.without_url()),
        };
        let resp = rb.send().await.map_err(transport)?;
        let status = resp.status();
        let bytes = resp.bytes().await.map_err(transport)?;
        if status.is_success() {
            return serde_json::from_slice(&bytes).map_err(|e| ApiError::Transport {
                url: self.base.clone(),
                message: format!("unexpected response body: {e}"),
            });
        }
        match serde_json::from_slice::<ErrorBody>(&bytes) {
            Ok(b) => Err(ApiError::Server {
                status: status.as_u16(),
                code: b.error.code,
                message: b.error.message,
            }),
            Err(_) => Err(ApiError::Server {
                status: status.as_u16(),
                code: "http".into(),
                message: String::from_utf8_lossy(&bytes).chars().take(500).collect(),
            }),
        }
    }

    async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, ApiError> {
        self.call::<(), (), T>(Method::GET, path, None, None).await
    }

    async fn get_q<Q: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        q: &Q,
    ) -> Result<T, ApiError> {
        self.call::<(), Q, T>(Method::GET, path, Some(q), None)
            .await
    }

    async fn send<B: Serialize, T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: &B,
    ) -> Result<T, ApiError> {
        self.call::<B, (), T>(method, path, None, Some(body)).await
    }

    pub async fn whoami(&self) -> Result<WhoAmI, ApiError> {
        self.get("/whoami").await
    }

    pub async fn create_user(&self, body: &CreateUser) -> Result<User, ApiError> {
        self.send(Method::POST, "/users", body).await
    }
    pub async fn update_user(&self, name: &str, body: &UpdateUser) -> Result<User, ApiError> {
        self.send(Method::PATCH, &format!("/users/{name}"), body)
            .await
    }
    pub async fn list_users(&self) -> Result<Vec<User>, ApiError> {
        self.get("/users").await
    }

    pub async fn create_group(&self, body: &CreateGroup) -> Result<Group, ApiError> {
        self.send(Method::POST, "/groups", body).await
    }
    pub async fn list_groups(&self) -> Result<Vec<Group>, ApiError> {
        self.get("/groups").await
    }
    pub async fn add_group_member(&self, group: &str, user: &str) -> Result<Group, ApiError> {
        self.send(Method::PUT, &format!("/groups/{group}/members/{user}"), &())
            .await
    }
    pub async fn remove_group_member(&self, group: &str, user: &str) -> Result<Group, ApiError> {
        self.send(
            Method::DELETE,
            &format!("/groups/{group}/members/{user}"),
            &(),
        )
        .await
    }

    pub async fn create_token(&self, body: &CreateToken) -> Result<CreatedToken, ApiError> {
        self.send(Method::POST, "/tokens", body).await
    }
    pub async fn list_tokens(&self, q: &TokenQuery) -> Result<Vec<TokenInfo>, ApiError> {
        self.get_q("/tokens", q).await
    }
    pub async fn revoke_token(&self, id: &str) -> Result<TokenInfo, ApiError> {
        self.send(Method::POST, &format!("/tokens/{id}/revoke"), &())
            .await
    }

    pub async fn create_target(&self, body: &CreateTarget) -> Result<Target, ApiError> {
        self.send(Method::POST, "/targets", body).await
    }
    pub async fn list_targets(&self) -> Result<Vec<Target>, ApiError> {
        self.get("/targets").await
    }
    pub async fn get_target(&self, name: &str) -> Result<TargetDetail, ApiError> {
        self.get(&format!("/targets/{name}")).await
    }
    pub async fn create_role(&self, target: &str, body: &CreateRole) -> Result<Role, ApiError> {
        self.send(Method::POST, &format!("/targets/{target}/roles"), body)
            .await
    }
    pub async fn list_roles(&self, target: &str) -> Result<Vec<Role>, ApiError> {
        self.get(&format!("/targets/{target}/roles")).await
    }

    pub async fn create_request(&self, body: &CreateRequest) -> Result<RequestCreated, ApiError> {
        self.send(Method::POST, "/requests", body).await
    }
    pub async fn list_requests(&self, q: &RequestQuery) -> Result<Vec<Request>, ApiError> {
        self.get_q("/requests", q).await
    }
    pub async fn get_request(&self, id: Uuid) -> Result<RequestDetail, ApiError> {
        self.get(&format!("/requests/{id}")).await
    }
    pub async fn cancel_request(&self, id: Uuid, body: &Reason) -> Result<Request, ApiError> {
        self.send(Method::POST, &format!("/requests/{id}/cancel"), body)
            .await
    }
    pub async fn approve_request(&self, id: Uuid, body: &Decide) -> Result<Decided, ApiError> {
        self.send(Method::POST, &format!("/requests/{id}/approve"), body)
            .await
    }
    pub async fn deny_request(&self, id: Uuid, body: &Decide) -> Result<Decided, ApiError> {
        self.send(Method::POST, &format!("/requests/{id}/deny"), body)
            .await
    }

    pub async fn list_grants(&self, q: &GrantQuery) -> Result<Vec<Grant>, ApiError> {
        self.get_q("/grants", q).await
    }
    pub async fn get_grant(&self, id: Uuid) -> Result<Grant, ApiError> {
        self.get(&format!("/grants/{id}")).await
    }
    pub async fn release_grant(&self, id: Uuid, body: &Reason) -> Result<Grant, ApiError> {
        self.send(Method::POST, &format!("/grants/{id}/release"), body)
            .await
    }
    /// The secret the grant produced; readable once.
    pub async fn grant_secret(&self, id: Uuid) -> Result<GrantSecret, ApiError> {
        self.get(&format!("/grants/{id}/secret")).await
    }
    /// Standing privileged accounts in a target that has a provisioner (admin).
    pub async fn discover(&self, target: &str) -> Result<Vec<StandingPrivilege>, ApiError> {
        self.get(&format!("/targets/{target}/discover")).await
    }
    /// Standing privileges over every target with a provisioner (auditors).
    pub async fn standing_report(&self) -> Result<StandingReport, ApiError> {
        self.get("/reports/standing").await
    }
    pub async fn revoke_grant(&self, id: Uuid, body: &Reason) -> Result<Grant, ApiError> {
        self.send(Method::POST, &format!("/grants/{id}/revoke"), body)
            .await
    }

    pub async fn break_glass(&self, q: &BreakGlassQuery) -> Result<Vec<Request>, ApiError> {
        self.get_q("/breakglass", q).await
    }
    pub async fn review_break_glass(&self, id: Uuid, body: &Decide) -> Result<Request, ApiError> {
        self.send(Method::POST, &format!("/requests/{id}/review"), body)
            .await
    }

    pub async fn policies(&self) -> Result<PolicyVersion, ApiError> {
        self.get("/policies").await
    }
    pub async fn policy_versions(&self) -> Result<Vec<PolicyVersion>, ApiError> {
        self.get("/policies/versions").await
    }
    pub async fn policy_version(&self, version: i64) -> Result<PolicyVersion, ApiError> {
        self.get(&format!("/policies/versions/{version}")).await
    }
    pub async fn apply_policies(&self, body: &ApplyPolicies) -> Result<PolicyVersion, ApiError> {
        self.send(Method::POST, "/policies", body).await
    }
    pub async fn simulate_policies(
        &self,
        body: &SimulatePolicies,
    ) -> Result<SimulationReport, ApiError> {
        self.send(Method::POST, "/policies/simulate", body).await
    }

    pub async fn audit_events(&self, q: &AuditQuery) -> Result<Vec<AuditEvent>, ApiError> {
        self.get_q("/audit/events", q).await
    }

    /// The checkpoint-signing public key (no token needed).
    pub async fn audit_pubkey(&self) -> Result<AuditPublicKey, ApiError> {
        self.get("/audit/pubkey").await
    }
    /// Every signed checkpoint, by ascending size.
    pub async fn audit_checkpoints(&self) -> Result<Vec<AuditCheckpoint>, ApiError> {
        self.get("/audit/checkpoints").await
    }
    /// Signs a checkpoint of the whole log now.
    pub async fn sign_audit_checkpoint(&self) -> Result<AuditCheckpoint, ApiError> {
        self.send(Method::POST, "/audit/checkpoints", &()).await
    }
    pub async fn inclusion_proof(&self, q: &InclusionQuery) -> Result<InclusionProof, ApiError> {
        self.get_q("/audit/proof/inclusion", q).await
    }
    pub async fn consistency_proof(
        &self,
        q: &ConsistencyQuery,
    ) -> Result<ConsistencyProof, ApiError> {
        self.get_q("/audit/proof/consistency", q).await
    }
    pub async fn elevation_report(
        &self,
        q: &ReportQuery,
    ) -> Result<Vec<crate::ElevationRow>, ApiError> {
        self.get_q("/reports/elevations", q).await
    }

    /// Streams an export (`jsonl`, `csv` or `ocsf`) into `out` as it arrives; returns the bytes
    /// written. Memory stays bounded whatever the size of the log.
    pub async fn export_audit(
        &self,
        q: &ExportQuery,
        out: &mut (dyn std::io::Write + Send),
    ) -> Result<u64, ApiError> {
        let url = format!("{}{}/audit/export", self.base, API_PREFIX);
        let http = reqwest::Client::builder()
            .user_agent(concat!("pedm/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| ApiError::Usage(format!("cannot build HTTP client: {e}")))?;
        let mut rb = http.get(&url).query(q);
        if let Some(t) = &self.token {
            rb = rb.bearer_auth(t);
        }
        let transport = |e: reqwest::Error| ApiError::Transport {
            url: self.base.clone(),
            message: with_causes(&e.without_url()),
        };
        let mut resp = rb.send().await.map_err(transport)?;
        let status = resp.status();
        if !status.is_success() {
            let bytes = resp.bytes().await.map_err(transport)?;
            return Err(match serde_json::from_slice::<ErrorBody>(&bytes) {
                Ok(b) => ApiError::Server {
                    status: status.as_u16(),
                    code: b.error.code,
                    message: b.error.message,
                },
                Err(_) => ApiError::Server {
                    status: status.as_u16(),
                    code: "http".into(),
                    message: String::from_utf8_lossy(&bytes).chars().take(500).collect(),
                },
            });
        }
        let mut n = 0u64;
        while let Some(chunk) = resp.chunk().await.map_err(transport)? {
            out.write_all(&chunk)
                .map_err(|e| ApiError::Usage(format!("writing the export: {e}")))?;
            n += chunk.len() as u64;
        }
        out.flush()
            .map_err(|e| ApiError::Usage(format!("writing the export: {e}")))?;
        Ok(n)
    }
}
