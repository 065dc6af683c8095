//! A typed client for the pedm API.

use crate::types::*;
use crate::{
    API_PREFIX, AuditEvent, Grant, GrantCheck, Group, PolicyVersion, Request, Role,
    SimulationReport, StandingPrivilege, StandingReport, Target, User,
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
    if msg.contains("invalid peer certificate") || msg.contains("UnknownIssuer") {
        msg.push_str(
            " (the server's certificate is not trusted: give its CA with --ca-file or PEDM_CA; \
             `pedmd --dev` prints the path)",
        );
    }
    msg
}

#[derive(Debug, Clone)]
pub struct Client {
    base: String,
    token: Option<String>,
    http: reqwest::Client,
    /// Without the overall timeout: downloads, uploads and event streams take as long as
    /// they take.
    streaming: reqwest::Client,
}

impl Client {
    pub fn new(base_url: &str, token: Option<String>) -> Result<Self, ApiError> {
        Self::with_ca(base_url, token, None)
    }

    /// Like [`Self::new`], trusting the CA certificate(s) in the PEM file `ca_file` in
    /// addition to the system's roots (rustls-platform-verifier). `None`: the system's roots
    /// only. Nothing is pinned and nothing unverified is accepted.
    pub fn with_ca(
        base_url: &str,
        token: Option<String>,
        ca_file: Option<&std::path::Path>,
    ) -> Result<Self, ApiError> {
        Self::build(base_url, token, ca_file, None)
    }

    /// Like [`Self::with_ca`], presenting a client certificate as well (a person's enrolled
    /// device: requests then carry it as `context.device`).
    pub fn with_ca_and_identity(
        base_url: &str,
        token: Option<String>,
        ca_file: Option<&std::path::Path>,
        identity_pem: &[u8],
    ) -> Result<Self, ApiError> {
        let id = reqwest::Identity::from_pem(identity_pem)
            .map_err(|e| ApiError::Usage(format!("device certificate: {e}")))?;
        Self::build(base_url, token, ca_file, Some(id))
    }

    /// Like [`Self::with_ca`], authenticating with a client certificate instead of a token:
    /// `identity_pem` holds the certificate (and its chain) and its private key (an agent
    /// enrolled over HTTPS).
    pub fn with_identity(
        base_url: &str,
        ca_file: Option<&std::path::Path>,
        identity_pem: &[u8],
    ) -> Result<Self, ApiError> {
        let id = reqwest::Identity::from_pem(identity_pem)
            .map_err(|e| ApiError::Usage(format!("client certificate: {e}")))?;
        Self::build(base_url, None, ca_file, Some(id))
    }

    fn build(
        base_url: &str,
        token: Option<String>,
        ca_file: Option<&std::path::Path>,
        identity: Option<reqwest::Identity>,
    ) -> Result<Self, ApiError> {
        let roots = match ca_file {
            None => vec![],
            Some(p) => {
                let pem = std::fs::read(p).map_err(|e| {
                    ApiError::Usage(format!("CA file {} (PEDM_CA): {e}", p.display()))
                })?;
                let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| {
                    ApiError::Usage(format!(
                        "CA file {} (PEDM_CA): not PEM certificates: {e}",
                        p.display()
                    ))
                })?;
                if certs.is_empty() {
                    return Err(ApiError::Usage(format!(
                        "CA file {} (PEDM_CA): holds no CERTIFICATE block",
                        p.display()
                    )));
                }
                certs
            }
        };
        let base = base_url.trim_end_matches('/').to_string();
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(ApiError::Usage(format!(
                "server URL {base_url:?} must start with http:// or https://"
            )));
        }
        let with_id = |b: reqwest::ClientBuilder| match &identity {
            Some(id) => b.identity(id.clone()),
            None => b,
        };
        let http = with_id(
            reqwest::Client::builder()
                .timeout(std::time::Duration::from_secs(60))
                .user_agent(concat!("pedm/", env!("CARGO_PKG_VERSION")))
                .tls_certs_merge(roots.clone()),
        )
        .build()
        .map_err(|e| ApiError::Usage(format!("cannot build HTTP client: {e}")))?;
        let streaming = with_id(
            reqwest::Client::builder()
                .connect_timeout(std::time::Duration::from_secs(10))
                .user_agent(concat!("pedm/", env!("CARGO_PKG_VERSION")))
                .tls_certs_merge(roots.clone()),
        )
        .build()
        .map_err(|e| ApiError::Usage(format!("cannot build HTTP client: {e}")))?;
        Ok(Client {
            base,
            token,
            http,
            streaming,
        })
    }

    pub fn base_url(&self) -> &str {
        &self.base
    }

    /// The HTTP client, for the routes outside `/api/v1` (`/oauth/token`).
    pub(crate) fn http_client(&self) -> &reqwest::Client {
        &self.http
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

    pub(crate) async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, ApiError> {
        self.call::<(), (), T>(Method::GET, path, None, None).await
    }

    pub(crate) async fn get_q<Q: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        q: &Q,
    ) -> Result<T, ApiError> {
        self.call::<(), Q, T>(Method::GET, path, Some(q), None)
            .await
    }

    pub(crate) async fn send<B: Serialize, T: DeserializeOwned>(
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
    /// Changes a user; making an administrator is held for approvals while
    /// `policy.require_approvals` is on.
    pub async fn update_user(
        &self,
        name: &str,
        body: &UpdateUser,
    ) -> Result<crate::types::Held<User>, ApiError> {
        self.send(Method::PATCH, &format!("/users/{name}"), body)
            .await
    }
    pub async fn create_external_user(
        &self,
        body: &crate::external::CreateExternalUser,
    ) -> Result<crate::external::ExternalUser, ApiError> {
        self.send(Method::POST, "/external-users", body).await
    }
    pub async fn extend_external_user(
        &self,
        name: &str,
        body: &crate::external::ExtendExternalUser,
    ) -> Result<crate::external::ExternalAccount, ApiError> {
        self.send(
            Method::POST,
            &format!("/external-users/{name}/extend"),
            body,
        )
        .await
    }
    pub async fn list_external_users(
        &self,
    ) -> Result<Vec<crate::external::ExternalAccount>, ApiError> {
        self.get("/external-users").await
    }
    pub async fn external_report(
        &self,
        q: &ReportQuery,
    ) -> Result<Vec<crate::external::ExternalReportRow>, ApiError> {
        self.get_q("/reports/external", q).await
    }
    pub async fn add_lock(
        &self,
        body: &crate::lock::CreateLock,
    ) -> Result<crate::lock::Lock, ApiError> {
        self.send(Method::POST, "/locks", body).await
    }
    pub async fn list_locks(&self, all: bool) -> Result<Vec<crate::lock::Lock>, ApiError> {
        self.get_q(
            "/locks",
            &crate::lock::LockQuery {
                all: all.then_some(true),
            },
        )
        .await
    }
    pub async fn kill_session(
        &self,
        id: uuid::Uuid,
        reason: &str,
    ) -> Result<crate::lock::Lock, ApiError> {
        let body = crate::lock::KillSession {
            reason: reason.to_string(),
        };
        self.send(Method::POST, &format!("/sessions/{id}/kill"), &body)
            .await
    }
    pub async fn privacy_status(
        &self,
        user: &str,
    ) -> Result<crate::privacy::PrivacyStatus, ApiError> {
        self.get(&format!("/privacy/subjects/{user}")).await
    }
    pub async fn privacy_hold(
        &self,
        body: &crate::privacy::SubjectAct,
    ) -> Result<crate::privacy::PrivacyStatus, ApiError> {
        self.send(Method::POST, "/privacy/hold", body).await
    }
    pub async fn privacy_release(
        &self,
        body: &crate::privacy::ReleaseHold,
    ) -> Result<crate::privacy::PrivacyStatus, ApiError> {
        self.send(Method::POST, "/privacy/release", body).await
    }
    pub async fn privacy_erase(
        &self,
        body: &crate::privacy::SubjectAct,
    ) -> Result<crate::privacy::Erasure, ApiError> {
        self.send(Method::POST, "/privacy/erase", body).await
    }
    pub async fn lift_lock(&self, id: uuid::Uuid) -> Result<crate::lock::Lock, ApiError> {
        self.send(Method::POST, &format!("/locks/{id}/lift"), &())
            .await
    }
    pub async fn create_scim_token(
        &self,
        body: &crate::scim::CreateScimToken,
    ) -> Result<crate::scim::CreatedScimToken, ApiError> {
        self.send(Method::POST, "/scim/tokens", body).await
    }
    pub async fn list_scim_tokens(&self) -> Result<Vec<crate::scim::ScimToken>, ApiError> {
        self.get("/scim/tokens").await
    }
    pub async fn revoke_scim_token(&self, id: &str) -> Result<crate::scim::ScimToken, ApiError> {
        self.send(Method::POST, &format!("/scim/tokens/{id}/revoke"), &())
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
    /// Adds a member; adding one to a group that decides approvals is held for approvals while
    /// `policy.require_approvals` is on.
    pub async fn add_group_member(
        &self,
        group: &str,
        user: &str,
    ) -> Result<crate::types::Held<Group>, ApiError> {
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
    pub async fn update_role(
        &self,
        target: &str,
        role: &str,
        body: &UpdateRole,
    ) -> Result<Role, ApiError> {
        self.send(
            Method::PATCH,
            &format!("/targets/{target}/roles/{role}"),
            body,
        )
        .await
    }
    pub async fn list_roles(&self, target: &str) -> Result<Vec<Role>, ApiError> {
        self.get(&format!("/targets/{target}/roles")).await
    }

    /// The roles the caller may ask for now, as policy judges a one-minute request.
    pub async fn requestable(&self) -> Result<Vec<Requestable>, ApiError> {
        self.get("/me/requestable").await
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
    /// Asks to extend a grant: granted at once (the grant with its new expiry) or pending.
    pub async fn extend_grant(
        &self,
        id: Uuid,
        body: &ExtendGrant,
    ) -> Result<RequestCreated, ApiError> {
        self.send(Method::POST, &format!("/grants/{id}/extend"), body)
            .await
    }
    pub async fn release_grant(&self, id: Uuid, body: &Reason) -> Result<Grant, ApiError> {
        self.send(Method::POST, &format!("/grants/{id}/release"), body)
            .await
    }
    /// The secret the grant produced; readable once.
    pub async fn verify_grant(&self, id: Uuid) -> Result<GrantCheck, ApiError> {
        self.get(&format!("/grants/{id}/verify")).await
    }
    pub async fn grant_secret(&self, id: Uuid) -> Result<GrantSecret, ApiError> {
        self.get(&format!("/grants/{id}/secret")).await
    }
    /// Short-lived credentials (or a console sign-in) for the caller's grant `id` from its
    /// target.
    pub async fn grant_credentials(
        &self,
        id: Uuid,
        form: crate::CredentialsForm,
    ) -> Result<GrantCredentials, ApiError> {
        self.send(
            Method::POST,
            &format!("/grants/{id}/credentials"),
            &crate::IssueCredentials { form },
        )
        .await
    }
    /// A certificate for `public_key` under the caller's grant `id` on an `ssh` target.
    pub async fn ssh_certificate(
        &self,
        id: Uuid,
        public_key: &str,
    ) -> Result<crate::ssh::SshCertificateIssued, ApiError> {
        let body = crate::ssh::IssueSshCertificate {
            public_key: public_key.to_string(),
        };
        self.send(
            Method::POST,
            &format!("/grants/{id}/ssh-certificate"),
            &body,
        )
        .await
    }
    /// Signs a host key with the SSH host CA (admin).
    pub async fn sign_ssh_host_key(
        &self,
        body: &crate::ssh::SignHostKey,
    ) -> Result<crate::ssh::HostCertificateIssued, ApiError> {
        self.send(Method::POST, "/ssh/host-certificates", body)
            .await
    }
    /// The SSH CA public keys (no token needed).
    pub async fn ssh_ca_keys(&self) -> Result<crate::ssh::SshCaKeys, ApiError> {
        self.get("/ssh/ca").await
    }
    /// The OpenSSH KRL, binary (no token needed).
    pub async fn ssh_krl(&self) -> Result<Vec<u8>, ApiError> {
        let resp = self.stream_get::<()>("/ssh/krl", None).await?;
        let bytes = resp.bytes().await.map_err(self.transport())?;
        Ok(bytes.to_vec())
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
    /// Applies a policy set; an error if the server stored it as a proposal waiting for
    /// approvals instead (see [`Client::submit_policies`]).
    pub async fn apply_policies(&self, body: &ApplyPolicies) -> Result<PolicyVersion, ApiError> {
        match self.submit_policies(body).await? {
            crate::types::PolicySubmitted::Applied(v) => Ok(v),
            crate::types::PolicySubmitted::Pending(p) => Err(ApiError::Usage(format!(
                "the policy set was not applied: it is pending as proposal {} and waits for {} \
                 approvals",
                p.id, p.required
            ))),
        }
    }
    pub async fn simulate_policies(
        &self,
        body: &SimulatePolicies,
    ) -> Result<SimulationReport, ApiError> {
        self.send(Method::POST, "/policies/simulate", body).await
    }

    /// Proves policy properties for a set (see [`CheckPolicies`]).
    pub async fn check_policies(
        &self,
        body: &CheckPolicies,
    ) -> Result<crate::PropertyReport, ApiError> {
        self.send(Method::POST, "/policies/check", body).await
    }

    /// The commands each role's holders ran, with an allowlist policy per role.
    pub async fn suggest_commands(
        &self,
        q: &CommandSuggestionQuery,
    ) -> Result<crate::CommandSuggestions, ApiError> {
        self.get_q("/policies/suggestions/commands", q).await
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

    /// The newest checkpoint as a C2SP signed note, with the witness cosignatures collected.
    pub async fn audit_note(&self) -> Result<String, ApiError> {
        let resp = self
            .stream_get::<()>("/audit/checkpoint.note", None)
            .await?;
        let mut out = Vec::new();
        self.copy_body(resp, &mut out, "the checkpoint note")
            .await?;
        String::from_utf8(out).map_err(|_| ApiError::Transport {
            url: self.base_url().to_string(),
            message: "the checkpoint note is not UTF-8".into(),
        })
    }

    /// Streams an export (`jsonl`, `csv` or `ocsf`) into `out` as it arrives; returns the bytes
    /// written. Memory stays bounded whatever the size of the log.
    pub async fn export_audit(
        &self,
        q: &ExportQuery,
        out: &mut (dyn std::io::Write + Send),
    ) -> Result<u64, ApiError> {
        let resp = self.stream_get("/audit/export", Some(q)).await?;
        self.copy_body(resp, out, "the export").await
    }

    /// Streams the archive segment of the oldest events into `out`; returns the bytes written.
    pub async fn audit_archive(
        &self,
        q: &ArchiveQuery,
        out: &mut (dyn std::io::Write + Send),
    ) -> Result<u64, ApiError> {
        let resp = self.stream_get("/audit/archive", Some(q)).await?;
        self.copy_body(resp, out, "the archive segment").await
    }
    pub async fn prune_audit(&self, body: &PruneAudit) -> Result<PrunedPrefix, ApiError> {
        self.send(Method::POST, "/audit/prune", body).await
    }
    /// The pruned start of the log, if any.
    pub async fn audit_pruned(&self) -> Result<Option<PrunedPrefix>, ApiError> {
        self.get("/audit/pruned").await
    }

    /// Streams a session's asciicast recording into `out`; returns the bytes written.
    pub async fn download_recording(
        &self,
        id: Uuid,
        out: &mut (dyn std::io::Write + Send),
    ) -> Result<u64, ApiError> {
        let resp = self
            .stream_get::<()>(&format!("/sessions/{id}/recording"), None)
            .await?;
        self.copy_body(resp, out, "the recording").await
    }

    fn transport(&self) -> impl Fn(reqwest::Error) -> ApiError + '_ {
        |e: reqwest::Error| ApiError::Transport {
            url: self.base.clone(),
            message: with_causes(&e.without_url()),
        }
    }

    /// A GET without the client's overall timeout (long downloads, event streams); error
    /// statuses become [`ApiError::Server`].
    async fn stream_get<Q: Serialize>(
        &self,
        path: &str,
        q: Option<&Q>,
    ) -> Result<reqwest::Response, ApiError> {
        let url = format!("{}{}{}", self.base, API_PREFIX, path);
        let mut rb = self.streaming.get(&url);
        if let Some(q) = q {
            rb = rb.query(q);
        }
        if let Some(t) = &self.token {
            rb = rb.bearer_auth(t);
        }
        let resp = rb.send().await.map_err(self.transport())?;
        self.check(resp).await
    }

    async fn check(&self, resp: reqwest::Response) -> Result<reqwest::Response, ApiError> {
        let status = resp.status();
        if status.is_success() {
            return Ok(resp);
        }
        let bytes = resp.bytes().await.map_err(self.transport())?;
        Err(match serde_json::from_slice::<ErrorBody>(&bytes) {
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
        })
    }

    async fn copy_body(
        &self,
        mut resp: reqwest::Response,
        out: &mut (dyn std::io::Write + Send),
        what: &str,
    ) -> Result<u64, ApiError> {
        let mut n = 0u64;
        while let Some(chunk) = resp.chunk().await.map_err(self.transport())? {
            out.write_all(&chunk)
                .map_err(|e| ApiError::Usage(format!("writing {what}: {e}")))?;
            n += chunk.len() as u64;
        }
        out.flush()
            .map_err(|e| ApiError::Usage(format!("writing {what}: {e}")))?;
        Ok(n)
    }

    // ------------------------------------------------------------- hosts and sessions

    pub async fn register_host(
        &self,
        name: &str,
    ) -> Result<crate::agent::HostRegistered, ApiError> {
        self.send(Method::POST, &format!("/hosts/{name}/register"), &())
            .await
    }
    pub async fn list_hosts(&self) -> Result<Vec<crate::agent::HostView>, ApiError> {
        self.get("/hosts").await
    }
    pub async fn list_sessions(&self, q: &SessionQuery) -> Result<Vec<crate::Session>, ApiError> {
        self.get_q("/sessions", q).await
    }
    pub async fn get_session(&self, id: Uuid) -> Result<crate::Session, ApiError> {
        self.get(&format!("/sessions/{id}")).await
    }

    // ------------------------------------------------- agent side (with a host token)

    /// Enrolls an agent with its registration token (this client's token): `csr` is a PEM
    /// certificate signing request for the key the agent made; the answer is its client
    /// certificate.
    pub async fn agent_enroll(
        &self,
        csr: &str,
    ) -> Result<crate::agent::AgentCertificate, ApiError> {
        let body = crate::agent::AgentCsr { csr: csr.into() };
        self.send(Method::POST, "/agent/enroll", &body).await
    }
    /// Renews the agent's client certificate (this client authenticates with the current one).
    pub async fn agent_renew(&self, csr: &str) -> Result<crate::agent::AgentCertificate, ApiError> {
        let body = crate::agent::AgentCsr { csr: csr.into() };
        self.send(Method::POST, "/agent/renew", &body).await
    }
    pub async fn revoke_host(
        &self,
        name: &str,
        reason: &crate::Reason,
    ) -> Result<crate::agent::HostView, ApiError> {
        self.send(Method::POST, &format!("/hosts/{name}/revoke"), reason)
            .await
    }

    pub async fn agent_snapshot(&self) -> Result<crate::agent::SignedSnapshot, ApiError> {
        self.get("/agent/snapshot").await
    }
    pub async fn agent_reports(
        &self,
        body: &crate::agent::AgentReports,
    ) -> Result<crate::agent::ReportsAccepted, ApiError> {
        self.send(Method::POST, "/agent/reports", body).await
    }

    /// Asks approval for an exec held in a session (step-up); returns the pending request.
    pub async fn agent_step_up(
        &self,
        ask: &crate::agent::HeldExec,
    ) -> Result<crate::Request, ApiError> {
        self.send(Method::POST, "/agent/step-ups", ask).await
    }

    /// A step-up request this host asked for, as it stands.
    pub async fn agent_step_up_state(&self, id: Uuid) -> Result<crate::Request, ApiError> {
        self.get(&format!("/agent/step-ups/{id}")).await
    }

    pub async fn agent_undelivered(
        &self,
        body: &crate::agent::UndeliveredItems,
    ) -> Result<serde_json::Value, ApiError> {
        self.send(Method::POST, "/agent/undelivered", body).await
    }

    /// Uploads a recording file with its description (streamed, no overall timeout).
    pub async fn upload_session(
        &self,
        id: Uuid,
        meta: &crate::agent::SessionUpload,
        recording: tokio::fs::File,
    ) -> Result<crate::agent::SessionStored, ApiError> {
        use base64::Engine as _;
        let header = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(serde_json::to_vec(meta).unwrap_or_default());
        let url = format!("{}{}/agent/sessions/{id}", self.base, API_PREFIX);
        let mut rb = self
            .streaming
            .put(&url)
            .header(crate::agent::SESSION_HEADER, header)
            .header(reqwest::header::CONTENT_TYPE, "application/x-asciicast")
            .header(reqwest::header::CONTENT_LENGTH, meta.recording_bytes)
            .body(reqwest::Body::wrap_stream(
                tokio_util::io::ReaderStream::new(recording),
            ));
        if let Some(t) = &self.token {
            rb = rb.bearer_auth(t);
        }
        let resp = rb.send().await.map_err(self.transport())?;
        let resp = self.check(resp).await?;
        let bytes = resp.bytes().await.map_err(self.transport())?;
        serde_json::from_slice(&bytes).map_err(|e| ApiError::Transport {
            url: self.base.clone(),
            message: format!("unexpected response body: {e}"),
        })
    }

    /// The agent's event stream: calls `on_event` for every `snapshot` and `task` event
    /// until the stream ends (server gone: `Err(Transport)`) or `on_event` returns false.
    pub async fn agent_events(
        &self,
        mut on_event: impl FnMut(crate::agent::AgentEvent) -> bool,
    ) -> Result<(), ApiError> {
        use crate::agent::AgentEvent;
        let resp = self.stream_get::<()>("/agent/events", None).await?;
        let mut malformed = None;
        let ended = self
            .sse(resp, |event, data| {
                let parsed = match event {
                    "snapshot" => serde_json::from_str(data).map(AgentEvent::Snapshot),
                    "task" => serde_json::from_str(data).map(AgentEvent::Task),
                    _ => return true,
                };
                match parsed {
                    Ok(e) => on_event(e),
                    Err(e) => {
                        malformed = Some(format!("malformed {event} event: {e}"));
                        false
                    }
                }
            })
            .await?;
        match (malformed, ended) {
            (Some(message), _) => Err(ApiError::Transport {
                url: self.base.clone(),
                message,
            }),
            (None, true) => Err(ApiError::Transport {
                url: self.base.clone(),
                message: "event stream ended".into(),
            }),
            (None, false) => Ok(()),
        }
    }

    /// Reports how a task run pedmd dispatched to this host ended (agents).
    pub async fn task_run_result(
        &self,
        id: Uuid,
        result: &crate::agent::TaskRunResult,
    ) -> Result<serde_json::Value, ApiError> {
        self.send(Method::POST, &format!("/agent/task-runs/{id}"), result)
            .await
    }

    /// Streams a session's events as they happen (agents): `lines` is the
    /// [`crate::live::LiveHeader`] line and then asciicast event lines, each ending in `\n`.
    /// Returns when the stream ends or the server refuses it.
    pub async fn stream_live<S>(&self, id: Uuid, lines: S) -> Result<(), ApiError>
    where
        S: futures_util::Stream<Item = Result<Vec<u8>, std::io::Error>> + Send + 'static,
    {
        let url = format!("{}{}/agent/sessions/{id}/live", self.base, API_PREFIX);
        let mut rb = self
            .streaming
            .post(&url)
            .header(reqwest::header::CONTENT_TYPE, "application/x-ndjson")
            .body(reqwest::Body::wrap_stream(lines));
        if let Some(t) = &self.token {
            rb = rb.bearer_auth(t);
        }
        let resp = rb.send().await.map_err(self.transport())?;
        self.check(resp).await.map(drop)
    }

    /// Sessions streaming to this server now (the caller's own, or anyone's with
    /// read_audit).
    pub async fn live_sessions(&self) -> Result<Vec<crate::live::LiveSession>, ApiError> {
        self.get("/sessions/live").await
    }

    /// Watches a live session: `on_event(name, data)` for each server-sent event (see
    /// [`crate::live::WATCH_EVENTS`]) until it returns false or the stream ends. Returns
    /// whether the stream ended by itself.
    pub async fn watch_session(
        &self,
        id: Uuid,
        on_event: impl FnMut(&str, &str) -> bool,
    ) -> Result<bool, ApiError> {
        let resp = self
            .stream_get::<()>(&format!("/sessions/{id}/live"), None)
            .await?;
        self.sse(resp, on_event).await
    }

    /// Reads server-sent events, calling `on_event(name, data)` for each until it returns
    /// false (`Ok(false)`) or the stream ends (`Ok(true)`).
    async fn sse(
        &self,
        mut resp: reqwest::Response,
        mut on_event: impl FnMut(&str, &str) -> bool,
    ) -> Result<bool, ApiError> {
        let mut buf: Vec<u8> = Vec::new();
        let mut event = String::new();
        let mut data = String::new();
        loop {
            let Some(chunk) = resp.chunk().await.map_err(self.transport())? else {
                return Ok(true);
            };
            buf.extend_from_slice(&chunk);
            while let Some(nl) = buf.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = buf.drain(..=nl).collect();
                let line = String::from_utf8_lossy(&line);
                let line = line.trim_end_matches(['\r', '\n']);
                if line.is_empty() {
                    // End of one event (comments and keep-alives carry no data).
                    if !data.is_empty() || !event.is_empty() {
                        let name = if event.is_empty() { "message" } else { &event };
                        if !on_event(name, &data) {
                            return Ok(false);
                        }
                    }
                    event.clear();
                    data.clear();
                } else if let Some(v) = line.strip_prefix("event:") {
                    event = v.trim().to_string();
                } else if let Some(v) = line.strip_prefix("data:") {
                    if !data.is_empty() {
                        data.push('\n');
                    }
                    data.push_str(v.strip_prefix(' ').unwrap_or(v));
                }
            }
        }
    }
}
