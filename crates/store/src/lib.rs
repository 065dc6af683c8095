//! pedm storage: the [`pedm_core::store::Store`] trait on SQLite (the embedded default,
//! [`SqliteStore`]) and PostgreSQL (shared state for several `pedmd` instances,
//! [`PostgresStore`]), through sqlx. [`open_store`] picks one from a URL.
//!
//! Both dialects share one schema shape (see `migrations/`), one set of queries and one
//! implementation of changesets and the audit hash chain; only connection setup and the way
//! audit appends are serialised differ.

mod access_review;
mod arg;
mod catalog;
mod chain;
mod commit_queue;
mod db;
mod delegation;
mod devices;
mod engine;
mod external;
mod group_commit;
mod hosts;
mod integration;
mod locks;
mod outbox;
mod policy_review;
mod postgres;
mod privacy;
mod rows;
mod scim;
mod sql;
mod sqlite;
mod ssh;
mod sso;
#[cfg(feature = "testing")]
pub mod testing;
mod web_sessions;
mod writes;

pub use commit_queue::GroupCommitStats;
pub use postgres::PostgresStore;
pub use sqlite::SqliteStore;

use pedm_core::store::{Store, StoreError};
use std::path::Path;
use std::sync::Arc;

/// Opens the store a URL names: `sqlite://PATH` or `sqlite:PATH` (the file is created if
/// missing; `sqlite:///abs/path` for an absolute path), or `postgres://…` / `postgresql://…`.
/// Migrations are applied before it returns.
pub async fn open_store(url: &str) -> Result<Arc<dyn Store>, StoreError> {
    if let Some(rest) = url.strip_prefix("sqlite:") {
        let rest = rest.strip_prefix("//").unwrap_or(rest);
        // Connection parameters (`?mode=rwc`) are ours to set; ignore any given.
        let path = rest.split('?').next().unwrap_or_default();
        if path.is_empty() || path == ":memory:" {
            return Err(StoreError::Backend(format!(
                "{url:?} names no database file: use sqlite://PATH (an in-memory database would \
                 be lost at exit)"
            )));
        }
        Ok(Arc::new(SqliteStore::open(Path::new(path)).await?))
    } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok(Arc::new(PostgresStore::connect(url).await?))
    } else {
        Err(StoreError::Backend(format!(
            "unsupported database URL {}: expected sqlite://PATH or postgres://USER@HOST/DB",
            redact_url(url)
        )))
    }
}

/// The URL with any password replaced by `***`, for messages and logs.
pub fn redact_url(url: &str) -> String {
    let Some(scheme_end) = url.find("://").map(|i| i + 3) else {
        return url.to_string();
    };
    let authority_end = url[scheme_end..]
        .find(['/', '?', '#'])
        .map_or(url.len(), |i| scheme_end + i);
    let authority = &url[scheme_end..authority_end];
    let Some(at) = authority.rfind('@') else {
        return url.to_string();
    };
    let userinfo = &authority[..at];
    match userinfo.find(':') {
        Some(colon) => format!(
            "{}{}:***{}",
            &url[..scheme_end],
            &userinfo[..colon],
            &url[scheme_end + at..]
        ),
        None => url.to_string(),
    }
}

/// Implements `Store` for a wrapper around [`engine::Engine`] by forwarding every method.
macro_rules! forward_store {
    ($t:ty) => {
        #[async_trait::async_trait]
        impl pedm_core::store::Store for $t {
            async fn commit(
                &self,
                c: pedm_core::store::Changeset,
            ) -> Result<Vec<pedm_core::audit::AuditEvent>, StoreError> {
                self.engine.commit(c).await
            }
            async fn user(&self, name: &str) -> Result<Option<User>, StoreError> {
                self.engine.user(name).await
            }
            async fn users(&self) -> Result<Vec<User>, StoreError> {
                self.engine.users().await
            }
            async fn user_count(&self) -> Result<i64, StoreError> {
                self.engine.user_count().await
            }
            async fn group(&self, name: &str) -> Result<Option<Group>, StoreError> {
                self.engine.group(name).await
            }
            async fn groups(&self) -> Result<Vec<Group>, StoreError> {
                self.engine.groups().await
            }
            async fn groups_of(&self, user: &str) -> Result<Vec<String>, StoreError> {
                self.engine.groups_of(user).await
            }
            async fn due_jobs(
                &self,
                now: jiff::Timestamp,
                limit: u32,
            ) -> Result<Vec<ProvisionJob>, StoreError> {
                self.engine.due_jobs(now, limit).await
            }
            async fn next_job_at(&self) -> Result<Option<jiff::Timestamp>, StoreError> {
                self.engine.next_job_at().await
            }
            async fn grant_jobs(
                &self,
                grant_id: uuid::Uuid,
            ) -> Result<Vec<ProvisionJob>, StoreError> {
                self.engine.grant_jobs(grant_id).await
            }
            async fn grant_secret(
                &self,
                grant_id: uuid::Uuid,
            ) -> Result<Option<String>, StoreError> {
                self.engine.grant_secret(grant_id).await
            }
            async fn token(&self, id: &str) -> Result<Option<TokenRecord>, StoreError> {
                self.engine.token(id).await
            }
            async fn tokens(&self, user: Option<&str>) -> Result<Vec<TokenRecord>, StoreError> {
                self.engine.tokens(user).await
            }
            async fn target(&self, name: &str) -> Result<Option<Target>, StoreError> {
                self.engine.target(name).await
            }
            async fn targets(&self) -> Result<Vec<Target>, StoreError> {
                self.engine.targets().await
            }
            async fn role(&self, target: &str, name: &str) -> Result<Option<Role>, StoreError> {
                self.engine.role(target, name).await
            }
            async fn roles(&self, target: Option<&str>) -> Result<Vec<Role>, StoreError> {
                self.engine.roles(target).await
            }
            async fn request(&self, id: uuid::Uuid) -> Result<Option<Request>, StoreError> {
                self.engine.request(id).await
            }
            async fn requests(&self, f: &RequestFilter) -> Result<Vec<Request>, StoreError> {
                self.engine.requests(f).await
            }
            async fn approvals(&self, id: uuid::Uuid) -> Result<Vec<Approval>, StoreError> {
                self.engine.approvals(id).await
            }
            async fn pending_approvals(&self) -> Result<Vec<Approval>, StoreError> {
                self.engine.pending_approvals().await
            }
            async fn next_request_deadline(&self) -> Result<Option<jiff::Timestamp>, StoreError> {
                self.engine.next_request_deadline().await
            }
            async fn overdue_requests(
                &self,
                now: jiff::Timestamp,
                limit: u32,
            ) -> Result<Vec<Request>, StoreError> {
                self.engine.overdue_requests(now, limit).await
            }
            async fn grant(&self, id: uuid::Uuid) -> Result<Option<Grant>, StoreError> {
                self.engine.grant(id).await
            }
            async fn grants(&self, f: &GrantFilter) -> Result<Vec<Grant>, StoreError> {
                self.engine.grants(f).await
            }
            async fn next_grant_deadline(&self) -> Result<Option<jiff::Timestamp>, StoreError> {
                self.engine.next_grant_deadline().await
            }
            async fn overdue_grants(
                &self,
                now: jiff::Timestamp,
                limit: u32,
            ) -> Result<Vec<Grant>, StoreError> {
                self.engine.overdue_grants(now, limit).await
            }
            async fn due_scheduled_grants(
                &self,
                now: jiff::Timestamp,
                limit: u32,
            ) -> Result<Vec<Grant>, StoreError> {
                self.engine.due_scheduled_grants(now, limit).await
            }
            async fn policy_version(
                &self,
                v: Option<i64>,
            ) -> Result<Option<PolicyVersion>, StoreError> {
                self.engine.policy_version(v).await
            }
            async fn policy_versions(&self) -> Result<Vec<PolicyVersion>, StoreError> {
                self.engine.policy_versions().await
            }
            async fn latest_policy_version_number(&self) -> Result<Option<i64>, StoreError> {
                self.engine.latest_policy_version_number().await
            }
            async fn policy_proposal(
                &self,
                id: i64,
            ) -> Result<Option<pedm_core::policy_review::PolicyProposal>, StoreError> {
                pedm_core::store::Store::policy_proposal(&self.engine, id).await
            }
            async fn policy_proposals(
                &self,
                state: Option<pedm_core::policy_review::ProposalState>,
            ) -> Result<Vec<pedm_core::policy_review::PolicyProposal>, StoreError> {
                pedm_core::store::Store::policy_proposals(&self.engine, state).await
            }
            async fn latest_policy_proposal_id(&self) -> Result<i64, StoreError> {
                pedm_core::store::Store::latest_policy_proposal_id(&self.engine).await
            }
            async fn external_account(
                &self,
                user: &str,
            ) -> Result<Option<pedm_core::external::ExternalAccount>, StoreError> {
                pedm_core::store::Store::external_account(&self.engine, user).await
            }
            async fn external_accounts(
                &self,
            ) -> Result<Vec<pedm_core::external::ExternalAccount>, StoreError> {
                pedm_core::store::Store::external_accounts(&self.engine).await
            }
            async fn scim_token(
                &self,
                id: &str,
            ) -> Result<Option<pedm_core::scim::ScimToken>, StoreError> {
                pedm_core::store::Store::scim_token(&self.engine, id).await
            }
            async fn scim_tokens(&self) -> Result<Vec<pedm_core::scim::ScimToken>, StoreError> {
                pedm_core::store::Store::scim_tokens(&self.engine).await
            }
            async fn scim_link(
                &self,
                user: &str,
            ) -> Result<Option<pedm_core::scim::ScimLink>, StoreError> {
                pedm_core::store::Store::scim_link(&self.engine, user).await
            }
            async fn scim_links(&self) -> Result<Vec<pedm_core::scim::ScimLink>, StoreError> {
                pedm_core::store::Store::scim_links(&self.engine).await
            }
            async fn scim_group_link(
                &self,
                group: &str,
            ) -> Result<Option<pedm_core::scim::ScimGroupLink>, StoreError> {
                pedm_core::store::Store::scim_group_link(&self.engine, group).await
            }
            async fn scim_group_links(
                &self,
            ) -> Result<Vec<pedm_core::scim::ScimGroupLink>, StoreError> {
                pedm_core::store::Store::scim_group_links(&self.engine).await
            }
            async fn device(
                &self,
                id: &str,
            ) -> Result<Option<pedm_core::device::Device>, StoreError> {
                pedm_core::store::Store::device(&self.engine, id).await
            }
            async fn locks(&self) -> Result<Vec<pedm_core::lock::Lock>, StoreError> {
                pedm_core::store::Store::locks(&self.engine).await
            }
            async fn review_campaigns(
                &self,
            ) -> Result<Vec<pedm_core::access_review::Campaign>, StoreError> {
                pedm_core::store::Store::review_campaigns(&self.engine).await
            }
            async fn review_campaign(
                &self,
                id: uuid::Uuid,
            ) -> Result<Option<pedm_core::access_review::Campaign>, StoreError> {
                pedm_core::store::Store::review_campaign(&self.engine, id).await
            }
            async fn review_items(
                &self,
                campaign: uuid::Uuid,
            ) -> Result<Vec<pedm_core::access_review::ReviewItem>, StoreError> {
                pedm_core::store::Store::review_items(&self.engine, campaign).await
            }
            async fn review_item(
                &self,
                id: uuid::Uuid,
            ) -> Result<Option<pedm_core::access_review::ReviewItem>, StoreError> {
                pedm_core::store::Store::review_item(&self.engine, id).await
            }
            async fn locks_in_force(
                &self,
                now: jiff::Timestamp,
            ) -> Result<Vec<pedm_core::lock::Lock>, StoreError> {
                pedm_core::store::Store::locks_in_force(&self.engine, now).await
            }
            async fn outbox_after(
                &self,
                after: i64,
                limit: i64,
            ) -> Result<Vec<pedm_core::notice::OutboxItem>, StoreError> {
                pedm_core::store::Store::outbox_after(&self.engine, after, limit).await
            }
            async fn outbox_head(&self) -> Result<i64, StoreError> {
                pedm_core::store::Store::outbox_head(&self.engine).await
            }
            async fn integration_entry(
                &self,
                integration: &str,
                key: &str,
            ) -> Result<Option<pedm_core::integration::IntegrationEntry>, StoreError> {
                pedm_core::store::Store::integration_entry(&self.engine, integration, key).await
            }
            async fn web_session(
                &self,
                token_id: &str,
            ) -> Result<Option<pedm_core::web_session::WebSession>, StoreError> {
                pedm_core::store::Store::web_session(&self.engine, token_id).await
            }
            async fn ssh_certificates_to_revoke(
                &self,
                now: jiff::Timestamp,
            ) -> Result<Vec<pedm_core::ssh::SshCertificate>, StoreError> {
                pedm_core::store::Store::ssh_certificates_to_revoke(&self.engine, now).await
            }
            async fn devices(
                &self,
                owner: Option<&str>,
            ) -> Result<Vec<pedm_core::device::Device>, StoreError> {
                pedm_core::store::Store::devices(&self.engine, owner).await
            }
            async fn host(&self, name: &str) -> Result<Option<pedm_core::host::Host>, StoreError> {
                pedm_core::store::Store::host(&self.engine, name).await
            }
            async fn host_by_token(
                &self,
                token_id: &str,
            ) -> Result<Option<pedm_core::host::Host>, StoreError> {
                pedm_core::store::Store::host_by_token(&self.engine, token_id).await
            }
            async fn hosts(&self) -> Result<Vec<pedm_core::host::Host>, StoreError> {
                pedm_core::store::Store::hosts(&self.engine).await
            }
            async fn session(
                &self,
                id: uuid::Uuid,
            ) -> Result<Option<pedm_core::host::Session>, StoreError> {
                pedm_core::store::Store::session(&self.engine, id).await
            }
            async fn sessions(
                &self,
                f: &pedm_core::host::SessionFilter,
            ) -> Result<Vec<pedm_core::host::Session>, StoreError> {
                pedm_core::store::Store::sessions(&self.engine, f).await
            }
            async fn task(
                &self,
                name: &str,
            ) -> Result<Option<pedm_core::delegation::TaskDef>, StoreError> {
                pedm_core::store::Store::task(&self.engine, name).await
            }
            async fn tasks(&self) -> Result<Vec<pedm_core::delegation::TaskDef>, StoreError> {
                pedm_core::store::Store::tasks(&self.engine).await
            }
            async fn delegation(
                &self,
                id: uuid::Uuid,
            ) -> Result<Option<pedm_core::delegation::Delegation>, StoreError> {
                pedm_core::store::Store::delegation(&self.engine, id).await
            }
            async fn delegations(
                &self,
                f: &pedm_core::delegation::DelegationFilter,
            ) -> Result<Vec<pedm_core::delegation::Delegation>, StoreError> {
                pedm_core::store::Store::delegations(&self.engine, f).await
            }
            async fn grant_link(
                &self,
                grant_id: uuid::Uuid,
            ) -> Result<Option<pedm_core::delegation::GrantLink>, StoreError> {
                pedm_core::store::Store::grant_link(&self.engine, grant_id).await
            }
            async fn grant_links(
                &self,
                f: &pedm_core::delegation::GrantLinkFilter,
            ) -> Result<Vec<pedm_core::delegation::GrantLink>, StoreError> {
                pedm_core::store::Store::grant_links(&self.engine, f).await
            }
            async fn audit_events(
                &self,
                f: &pedm_core::store::AuditFilter,
            ) -> Result<Vec<pedm_core::audit::AuditEvent>, StoreError> {
                self.engine.audit_events(f).await
            }
            fn seal_personal_data(
                &self,
                cipher: std::sync::Arc<dyn pedm_core::privacy::PersonalDataCipher>,
            ) -> Result<(), StoreError> {
                pedm_core::store::Store::seal_personal_data(&self.engine, cipher)
            }
            fn seals_personal_data(&self) -> bool {
                pedm_core::store::Store::seals_personal_data(&self.engine)
            }
            async fn subject_key(
                &self,
                subject: &str,
            ) -> Result<Option<pedm_core::privacy::SubjectKey>, StoreError> {
                pedm_core::store::Store::subject_key(&self.engine, subject).await
            }
            async fn legal_holds(&self) -> Result<Vec<pedm_core::privacy::SubjectKey>, StoreError> {
                pedm_core::store::Store::legal_holds(&self.engine).await
            }
            async fn audit_head(&self) -> Result<Option<(i64, [u8; 32])>, StoreError> {
                self.engine.audit_head().await
            }
            async fn audit_hashes(
                &self,
                from_seq: i64,
                to_seq: i64,
            ) -> Result<Vec<[u8; 32]>, StoreError> {
                self.engine.audit_hashes(from_seq, to_seq).await
            }
            async fn save_checkpoint(
                &self,
                cp: &pedm_core::store::CheckpointRecord,
            ) -> Result<(), StoreError> {
                self.engine.save_checkpoint(cp).await
            }
            async fn checkpoints(
                &self,
            ) -> Result<Vec<pedm_core::store::CheckpointRecord>, StoreError> {
                self.engine.checkpoints().await
            }
            async fn checkpoints_between(
                &self,
                after: i64,
                through: i64,
            ) -> Result<Vec<pedm_core::store::CheckpointRecord>, StoreError> {
                self.engine.checkpoints_between(after, through).await
            }
            async fn latest_checkpoint(
                &self,
            ) -> Result<Option<pedm_core::store::CheckpointRecord>, StoreError> {
                self.engine.latest_checkpoint().await
            }
            async fn rewind_audit(&self, size: i64) -> Result<u64, StoreError> {
                self.engine.rewind_audit(size).await
            }
            async fn sso_identity(
                &self,
                issuer: &str,
                subject: &str,
            ) -> Result<Option<String>, StoreError> {
                pedm_core::store::Store::sso_identity(&self.engine, issuer, subject).await
            }
            async fn identities_of(&self, user: &str) -> Result<Vec<(String, String)>, StoreError> {
                pedm_core::store::Store::identities_of(&self.engine, user).await
            }
            async fn sso_session(
                &self,
                token_id: &str,
            ) -> Result<Option<pedm_core::sso::SsoSession>, StoreError> {
                pedm_core::store::Store::sso_session(&self.engine, token_id).await
            }
            async fn sso_session_ids(&self, user: Option<&str>) -> Result<Vec<String>, StoreError> {
                pedm_core::store::Store::sso_session_ids(&self.engine, user).await
            }
            async fn sso_groups(&self, user: &str) -> Result<Vec<String>, StoreError> {
                pedm_core::store::Store::sso_groups(&self.engine, user).await
            }
            async fn sso_flow(
                &self,
                id: &str,
            ) -> Result<Option<pedm_core::sso::SsoFlow>, StoreError> {
                pedm_core::store::Store::sso_flow(&self.engine, id).await
            }
        }
    };
}
use forward_store;

#[cfg(test)]
mod tests {
    use super::redact_url;

    #[test]
    fn redacts_passwords() {
        assert_eq!(
            redact_url("postgres://pedm:s3cret@db:5432/pedm?sslmode=require"),
            "postgres://pedm:***@db:5432/pedm?sslmode=require"
        );
        assert_eq!(
            redact_url("postgres://pedm@db/pedm"),
            "postgres://pedm@db/pedm"
        );
        assert_eq!(redact_url("postgres://a:b@c@h/d"), "postgres://a:***@h/d");
        assert_eq!(redact_url("sqlite:///x/y.db"), "sqlite:///x/y.db");
    }
}
