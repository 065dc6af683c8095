//! The `Store` implementation shared by both dialects: commits through the group committer
//! (`crate::group_commit`, writes in `crate::writes`, the chain in `crate::chain`), and reads.

use crate::chain::{read_head, write_head};
use crate::db::{Arg, args};
use crate::engine::{Engine, Pools, backend, push_eq, push_limit};
use crate::rows::{self, *};
use async_trait::async_trait;
use jiff::Timestamp;
use pedm_core::audit::AuditEvent;
use pedm_core::model::*;
use pedm_core::store::{AuditFilter, Changeset, CheckpointRecord, Store, StoreError, Write};
use uuid::Uuid;

const GROUPS_SQL: &str = "SELECT g.name, g.description, g.created_at, m.user_name AS member \
     FROM groups g LEFT JOIN group_members m ON m.group_name = g.name";

#[async_trait]
impl Store for Engine {
    async fn commit(&self, changes: Changeset) -> Result<Vec<AuditEvent>, StoreError> {
        if changes.is_empty() {
            return Ok(vec![]);
        }
        let erases = changes.writes.iter().any(|w| {
            matches!(
                w,
                Write::Privacy(pedm_core::privacy::PrivacyWrite::Erase { .. })
            )
        });
        let plain = self.privacy.get().map(|_| changes.events.clone());
        let changes = self.seal_changeset(changes).await?;
        let r = match &self.pools {
            // Several queued changesets share one durable transaction (one fsync).
            Pools::Sqlite {
                committer, catalog, ..
            }
            | Pools::Pg {
                committer, catalog, ..
            } => {
                let touches_catalog = crate::catalog::may_change(&changes.writes);
                let touches_guards = crate::catalog::may_change_guards(&changes.writes);
                let r = committer.commit(changes).await;
                // Whatever the outcome: a failed commit may still have been applied.
                if touches_catalog {
                    catalog.invalidate();
                }
                if touches_guards {
                    catalog.invalidate_guards();
                }
                r
            }
        };
        if erases && r.is_ok() {
            self.purge_erased().await?;
        }
        match plain {
            Some(plain) => r.map(|sealed| Engine::unsealed_results(&plain, sealed)),
            None => r,
        }
    }

    async fn user(&self, name: &str) -> Result<Option<User>, StoreError> {
        let sql = format!("SELECT {USER_COLS} FROM users WHERE name = $1");
        self.fetch_optional(&sql, args![name], rows::user).await
    }

    async fn users(&self) -> Result<Vec<User>, StoreError> {
        let sql = format!("SELECT {USER_COLS} FROM users ORDER BY name");
        self.fetch_all(&sql, vec![], rows::user).await
    }

    async fn user_count(&self) -> Result<i64, StoreError> {
        let n = self
            .fetch_optional("SELECT COUNT(*) AS n FROM users", vec![], |r| {
                r.get::<i64>("n")
            })
            .await?;
        Ok(n.unwrap_or(0))
    }

    async fn group(&self, name: &str) -> Result<Option<Group>, StoreError> {
        let sql = format!("{GROUPS_SQL} WHERE g.name = $1 ORDER BY m.user_name");
        let mut c = self.read().await?;
        let rows = c
            .conn()
            .fetch_all(&sql, args![name])
            .await
            .map_err(backend)?;
        Ok(rows::groups(&rows)?.pop())
    }

    async fn groups(&self) -> Result<Vec<Group>, StoreError> {
        let sql = format!("{GROUPS_SQL} ORDER BY g.name, m.user_name");
        let mut c = self.read().await?;
        let rows = c.conn().fetch_all(&sql, vec![]).await.map_err(backend)?;
        rows::groups(&rows)
    }

    async fn groups_of(&self, user: &str) -> Result<Vec<String>, StoreError> {
        self.fetch_all(
            "SELECT group_name FROM group_members WHERE user_name = $1 ORDER BY group_name",
            args![user],
            |r| r.get::<String>("group_name"),
        )
        .await
    }

    async fn token(&self, id: &str) -> Result<Option<TokenRecord>, StoreError> {
        let sql = format!("SELECT {TOKEN_COLS} FROM tokens WHERE id = $1");
        self.fetch_optional(&sql, args![id], rows::token).await
    }

    async fn tokens(&self, user: Option<&str>) -> Result<Vec<TokenRecord>, StoreError> {
        let mut sql = format!("SELECT {TOKEN_COLS} FROM tokens WHERE 1 = 1");
        let mut a = vec![];
        push_eq(&mut sql, &mut a, "user_name", user.map(Arg::from));
        sql.push_str(" ORDER BY created_at DESC, id DESC");
        self.fetch_all(&sql, a, rows::token).await
    }

    async fn target(&self, name: &str) -> Result<Option<Target>, StoreError> {
        let catalog = self.catalog();
        if let Some(t) = catalog.target(name) {
            return Ok(Some(t));
        }
        let generation = catalog.generation();
        let sql = format!("SELECT {TARGET_COLS} FROM targets WHERE name = $1");
        let t = self.fetch_optional(&sql, args![name], rows::target).await?;
        if let Some(t) = &t {
            catalog.keep_target(generation, t);
        }
        Ok(t)
    }

    async fn targets(&self) -> Result<Vec<Target>, StoreError> {
        let sql = format!("SELECT {TARGET_COLS} FROM targets ORDER BY name");
        self.fetch_all(&sql, vec![], rows::target).await
    }

    async fn role(&self, target: &str, name: &str) -> Result<Option<Role>, StoreError> {
        let catalog = self.catalog();
        if let Some(r) = catalog.role(target, name) {
            return Ok(Some(r));
        }
        let generation = catalog.generation();
        let sql = format!("SELECT {ROLE_COLS} FROM roles WHERE target = $1 AND name = $2");
        let r = self
            .fetch_optional(&sql, args![target, name], rows::role)
            .await?;
        if let Some(r) = &r {
            catalog.keep_role(generation, r);
        }
        Ok(r)
    }

    async fn roles(&self, target: Option<&str>) -> Result<Vec<Role>, StoreError> {
        let mut sql = format!("SELECT {ROLE_COLS} FROM roles WHERE 1 = 1");
        let mut a = vec![];
        push_eq(&mut sql, &mut a, "target", target.map(Arg::from));
        sql.push_str(" ORDER BY target, name");
        self.fetch_all(&sql, a, rows::role).await
    }

    async fn request(&self, id: Uuid) -> Result<Option<Request>, StoreError> {
        let sql = format!("SELECT {REQUEST_COLS} FROM requests WHERE id = $1");
        self.fetch_optional(&sql, args![id], rows::request).await
    }

    async fn requests(&self, f: &RequestFilter) -> Result<Vec<Request>, StoreError> {
        let mut sql = format!("SELECT {REQUEST_COLS} FROM requests WHERE 1 = 1");
        let mut a = vec![];
        push_eq(
            &mut sql,
            &mut a,
            "requester",
            f.requester.as_deref().map(Arg::from),
        );
        push_eq(
            &mut sql,
            &mut a,
            "state",
            f.state.map(|s| s.as_str().into()),
        );
        push_eq(
            &mut sql,
            &mut a,
            "target",
            f.target.as_deref().map(Arg::from),
        );
        push_eq(
            &mut sql,
            &mut a,
            "review_state",
            f.review.map(|s| s.as_str().into()),
        );
        if let Some(since) = f.since {
            a.push(since.into());
            sql.push_str(&format!(" AND created_at >= ${}", a.len()));
        }
        sql.push_str(" ORDER BY created_at DESC, id DESC");
        push_limit(&mut sql, &mut a, f.limit);
        self.fetch_all(&sql, a, rows::request).await
    }

    async fn approvals(&self, request_id: Uuid) -> Result<Vec<Approval>, StoreError> {
        let sql = format!(
            "SELECT {APPROVAL_COLS} FROM approvals WHERE request_id = $1 ORDER BY at, approver"
        );
        self.fetch_all(&sql, args![request_id], rows::approval)
            .await
    }

    async fn pending_approvals(&self) -> Result<Vec<Approval>, StoreError> {
        let cols = APPROVAL_COLS
            .split(", ")
            .map(|c| format!("a.{c}"))
            .collect::<Vec<_>>()
            .join(", ");
        let sql = format!(
            "SELECT {cols} FROM approvals a JOIN requests r ON r.id = a.request_id \
             WHERE r.state = 'pending' ORDER BY a.request_id, a.at, a.approver"
        );
        self.fetch_all(&sql, vec![], rows::approval).await
    }

    async fn next_request_deadline(&self) -> Result<Option<Timestamp>, StoreError> {
        self.min_ts("SELECT MIN(pending_until) AS t FROM requests WHERE state = 'pending'")
            .await
    }

    async fn overdue_requests(
        &self,
        now: Timestamp,
        limit: u32,
    ) -> Result<Vec<Request>, StoreError> {
        let sql = format!(
            "SELECT {REQUEST_COLS} FROM requests WHERE state = 'pending' AND pending_until <= $1 \
             ORDER BY pending_until, id LIMIT $2"
        );
        self.fetch_all(&sql, args![now, i64::from(limit)], rows::request)
            .await
    }

    async fn grant(&self, id: Uuid) -> Result<Option<Grant>, StoreError> {
        let sql = format!("SELECT {GRANT_COLS} FROM grants WHERE id = $1");
        self.fetch_optional(&sql, args![id], rows::grant).await
    }

    async fn grants(&self, f: &GrantFilter) -> Result<Vec<Grant>, StoreError> {
        let mut sql = format!("SELECT {GRANT_COLS} FROM grants WHERE 1 = 1");
        let mut a = vec![];
        push_eq(
            &mut sql,
            &mut a,
            "user_name",
            f.user.as_deref().map(Arg::from),
        );
        push_eq(
            &mut sql,
            &mut a,
            "state",
            f.state.map(|s| s.as_str().into()),
        );
        push_eq(
            &mut sql,
            &mut a,
            "target",
            f.target.as_deref().map(Arg::from),
        );
        if let Some((from, to)) = f.held_between {
            a.push(to.into());
            a.push(from.into());
            let n = a.len();
            sql.push_str(&format!(
                " AND starts_at <= ${} AND (expires_at >= ${n} OR ended_at >= ${n})",
                n - 1
            ));
        }
        sql.push_str(" ORDER BY starts_at DESC, id DESC");
        push_limit(&mut sql, &mut a, f.limit);
        self.fetch_all(&sql, a, rows::grant).await
    }

    async fn next_grant_deadline(&self) -> Result<Option<Timestamp>, StoreError> {
        let ends = self
            .min_ts("SELECT MIN(expires_at) AS t FROM grants WHERE state = 'active'")
            .await?;
        let starts = self
            .min_ts("SELECT MIN(starts_at) AS t FROM grants WHERE state = 'scheduled'")
            .await?;
        Ok(ends.into_iter().chain(starts).min())
    }

    async fn due_scheduled_grants(
        &self,
        now: Timestamp,
        limit: u32,
    ) -> Result<Vec<Grant>, StoreError> {
        let sql = format!(
            "SELECT {GRANT_COLS} FROM grants WHERE state = 'scheduled' AND starts_at <= $1 \
             ORDER BY starts_at, id LIMIT $2"
        );
        self.fetch_all(&sql, args![now, i64::from(limit)], rows::grant)
            .await
    }

    async fn overdue_grants(&self, now: Timestamp, limit: u32) -> Result<Vec<Grant>, StoreError> {
        let sql = format!(
            "SELECT {GRANT_COLS} FROM grants WHERE state = 'active' AND expires_at <= $1 \
             ORDER BY expires_at, id LIMIT $2"
        );
        self.fetch_all(&sql, args![now, i64::from(limit)], rows::grant)
            .await
    }

    async fn due_jobs(&self, now: Timestamp, limit: u32) -> Result<Vec<ProvisionJob>, StoreError> {
        let sql = format!(
            "SELECT {JOB_COLS} FROM provision_jobs WHERE NOT done AND next_attempt_at <= $1 \
             ORDER BY next_attempt_at, id LIMIT $2"
        );
        self.fetch_all(&sql, args![now, i64::from(limit)], rows::job)
            .await
    }

    async fn next_job_at(&self) -> Result<Option<Timestamp>, StoreError> {
        self.min_ts("SELECT MIN(next_attempt_at) AS t FROM provision_jobs WHERE NOT done")
            .await
    }

    async fn grant_jobs(&self, grant_id: Uuid) -> Result<Vec<ProvisionJob>, StoreError> {
        let sql = format!(
            "SELECT {JOB_COLS} FROM provision_jobs WHERE grant_id = $1 ORDER BY created_at, id"
        );
        self.fetch_all(&sql, args![grant_id], rows::job).await
    }

    async fn grant_secret(&self, grant_id: Uuid) -> Result<Option<String>, StoreError> {
        self.fetch_optional(
            "SELECT secret FROM grant_secrets WHERE grant_id = $1",
            args![grant_id],
            |r| r.get::<String>("secret"),
        )
        .await
    }

    async fn policy_version(
        &self,
        version: Option<i64>,
    ) -> Result<Option<PolicyVersion>, StoreError> {
        match version {
            Some(v) => {
                let sql = format!("SELECT {POLICY_COLS} FROM policy_versions WHERE version = $1");
                self.fetch_optional(&sql, args![v], rows::policy_version)
                    .await
            }
            None => {
                let sql = format!(
                    "SELECT {POLICY_COLS} FROM policy_versions ORDER BY version DESC LIMIT 1"
                );
                self.fetch_optional(&sql, vec![], rows::policy_version)
                    .await
            }
        }
    }

    async fn policy_versions(&self) -> Result<Vec<PolicyVersion>, StoreError> {
        let sql = format!("SELECT {POLICY_COLS} FROM policy_versions ORDER BY version DESC");
        self.fetch_all(&sql, vec![], rows::policy_version).await
    }

    async fn latest_policy_version_number(&self) -> Result<Option<i64>, StoreError> {
        let v = self
            .fetch_optional(
                "SELECT MAX(version) AS v FROM policy_versions",
                vec![],
                |r| r.get::<Option<i64>>("v"),
            )
            .await?;
        Ok(v.flatten())
    }

    async fn policy_proposal(
        &self,
        id: i64,
    ) -> Result<Option<pedm_core::policy_review::PolicyProposal>, StoreError> {
        Engine::proposal(self, id).await
    }
    async fn policy_proposals(
        &self,
        state: Option<pedm_core::policy_review::ProposalState>,
    ) -> Result<Vec<pedm_core::policy_review::PolicyProposal>, StoreError> {
        Engine::proposals(self, state).await
    }
    async fn latest_policy_proposal_id(&self) -> Result<i64, StoreError> {
        Engine::latest_proposal_id(self).await
    }

    async fn external_account(
        &self,
        user: &str,
    ) -> Result<Option<pedm_core::external::ExternalAccount>, StoreError> {
        let catalog = self.catalog();
        if let Some(x) = catalog.external(user) {
            return Ok(x);
        }
        let generation = catalog.guard_generation();
        let x = Engine::external_account_row(self, user).await?;
        catalog.keep_external(generation, user, &x);
        Ok(x)
    }
    async fn external_accounts(
        &self,
    ) -> Result<Vec<pedm_core::external::ExternalAccount>, StoreError> {
        Engine::external_account_rows(self).await
    }
    async fn scim_token(&self, id: &str) -> Result<Option<pedm_core::scim::ScimToken>, StoreError> {
        Engine::scim_token_row(self, id).await
    }
    async fn scim_tokens(&self) -> Result<Vec<pedm_core::scim::ScimToken>, StoreError> {
        Engine::scim_token_rows(self).await
    }
    async fn scim_link(&self, user: &str) -> Result<Option<pedm_core::scim::ScimLink>, StoreError> {
        Engine::scim_link_row(self, user).await
    }
    async fn scim_links(&self) -> Result<Vec<pedm_core::scim::ScimLink>, StoreError> {
        Engine::scim_link_rows(self).await
    }
    async fn scim_group_link(
        &self,
        group: &str,
    ) -> Result<Option<pedm_core::scim::ScimGroupLink>, StoreError> {
        Engine::scim_group_link_row(self, group).await
    }
    async fn scim_group_links(&self) -> Result<Vec<pedm_core::scim::ScimGroupLink>, StoreError> {
        Engine::scim_group_link_rows(self).await
    }
    async fn device(&self, id: &str) -> Result<Option<pedm_core::device::Device>, StoreError> {
        Engine::device_row(self, id).await
    }
    async fn locks(&self) -> Result<Vec<pedm_core::lock::Lock>, StoreError> {
        Engine::lock_rows(self).await
    }
    async fn review_campaigns(
        &self,
    ) -> Result<Vec<pedm_core::access_review::Campaign>, StoreError> {
        Engine::campaign_rows(self).await
    }
    async fn review_campaign(
        &self,
        id: Uuid,
    ) -> Result<Option<pedm_core::access_review::Campaign>, StoreError> {
        Engine::campaign_row(self, id).await
    }
    async fn review_items(
        &self,
        campaign: Uuid,
    ) -> Result<Vec<pedm_core::access_review::ReviewItem>, StoreError> {
        Engine::review_item_rows(self, campaign).await
    }
    async fn review_item(
        &self,
        id: Uuid,
    ) -> Result<Option<pedm_core::access_review::ReviewItem>, StoreError> {
        Engine::review_item_row(self, id).await
    }
    async fn locks_in_force(
        &self,
        now: jiff::Timestamp,
    ) -> Result<Vec<pedm_core::lock::Lock>, StoreError> {
        let catalog = self.catalog();
        let mut locks = match catalog.unlifted_locks() {
            Some(l) => l,
            None => {
                let generation = catalog.guard_generation();
                let mut all = Engine::lock_rows(self).await?;
                all.retain(|l| l.lifted_at.is_none());
                catalog.keep_unlifted_locks(generation, &all);
                all
            }
        };
        locks.retain(|l| l.holds(now));
        Ok(locks)
    }
    async fn ssh_certificates_to_revoke(
        &self,
        now: jiff::Timestamp,
    ) -> Result<Vec<pedm_core::ssh::SshCertificate>, StoreError> {
        Engine::ssh_certificates_to_revoke(self, now).await
    }
    async fn web_session(
        &self,
        token_id: &str,
    ) -> Result<Option<pedm_core::web_session::WebSession>, StoreError> {
        self.get_web_session(token_id).await
    }
    async fn outbox_after(
        &self,
        after: i64,
        limit: i64,
    ) -> Result<Vec<pedm_core::notice::OutboxItem>, StoreError> {
        self.outbox_rows(after, limit).await
    }

    async fn outbox_head(&self) -> Result<i64, StoreError> {
        self.outbox_last().await
    }

    async fn integration_entry(
        &self,
        integration: &str,
        key: &str,
    ) -> Result<Option<pedm_core::integration::IntegrationEntry>, StoreError> {
        self.get_integration_entry(integration, key).await
    }
    async fn devices(
        &self,
        owner: Option<&str>,
    ) -> Result<Vec<pedm_core::device::Device>, StoreError> {
        Engine::device_rows(self, owner).await
    }

    async fn host(&self, name: &str) -> Result<Option<pedm_core::host::Host>, StoreError> {
        Engine::host(self, name).await
    }
    async fn host_by_token(
        &self,
        token_id: &str,
    ) -> Result<Option<pedm_core::host::Host>, StoreError> {
        Engine::host_by_token(self, token_id).await
    }
    async fn hosts(&self) -> Result<Vec<pedm_core::host::Host>, StoreError> {
        Engine::hosts(self).await
    }
    async fn session(&self, id: Uuid) -> Result<Option<pedm_core::host::Session>, StoreError> {
        Engine::session(self, id).await
    }
    async fn sessions(
        &self,
        f: &pedm_core::host::SessionFilter,
    ) -> Result<Vec<pedm_core::host::Session>, StoreError> {
        Engine::sessions(self, f).await
    }

    async fn task(&self, name: &str) -> Result<Option<pedm_core::delegation::TaskDef>, StoreError> {
        Engine::task(self, name).await
    }
    async fn tasks(&self) -> Result<Vec<pedm_core::delegation::TaskDef>, StoreError> {
        Engine::tasks(self).await
    }
    async fn delegation(
        &self,
        id: Uuid,
    ) -> Result<Option<pedm_core::delegation::Delegation>, StoreError> {
        Engine::delegation(self, id).await
    }
    async fn delegations(
        &self,
        f: &pedm_core::delegation::DelegationFilter,
    ) -> Result<Vec<pedm_core::delegation::Delegation>, StoreError> {
        Engine::delegations(self, f).await
    }
    async fn grant_link(
        &self,
        grant_id: Uuid,
    ) -> Result<Option<pedm_core::delegation::GrantLink>, StoreError> {
        Engine::grant_link(self, grant_id).await
    }
    async fn grant_links(
        &self,
        f: &pedm_core::delegation::GrantLinkFilter,
    ) -> Result<Vec<pedm_core::delegation::GrantLink>, StoreError> {
        Engine::grant_links(self, f).await
    }

    async fn audit_events(&self, f: &AuditFilter) -> Result<Vec<AuditEvent>, StoreError> {
        if self.privacy.get().is_none() || f.sealed {
            return self.stored_audit_events(f).await;
        }
        let mut events = self
            .stored_audit_events(&self.sealed_filter(f).await?)
            .await?;
        self.open_events(&mut events).await?;
        Ok(events)
    }
    fn seal_personal_data(
        &self,
        cipher: std::sync::Arc<dyn pedm_core::privacy::PersonalDataCipher>,
    ) -> Result<(), StoreError> {
        self.privacy
            .set(cipher)
            .map_err(|_| StoreError::Backend("personal data sealing is set already".into()))
    }
    fn seals_personal_data(&self) -> bool {
        self.privacy.get().is_some()
    }
    async fn subject_key(
        &self,
        subject: &str,
    ) -> Result<Option<pedm_core::privacy::SubjectKey>, StoreError> {
        self.subject_key_row(subject).await
    }
    async fn legal_holds(&self) -> Result<Vec<pedm_core::privacy::SubjectKey>, StoreError> {
        self.held_rows().await
    }

    async fn audit_head(&self) -> Result<Option<(i64, [u8; 32])>, StoreError> {
        let head = self
            .fetch_optional(
                "SELECT seq, hash FROM audit_head WHERE id = 1",
                vec![],
                rows::head,
            )
            .await?;
        Ok(head.filter(|(seq, _)| *seq > 0))
    }

    async fn audit_hashes(&self, from_seq: i64, to_seq: i64) -> Result<Vec<[u8; 32]>, StoreError> {
        self.fetch_all(
            "SELECT hash FROM audit_events WHERE seq >= $1 AND seq <= $2 ORDER BY seq",
            args![from_seq, to_seq],
            rows::leaf,
        )
        .await
    }

    async fn save_checkpoint(&self, cp: &CheckpointRecord) -> Result<(), StoreError> {
        let mut tx = self.begin().await?;
        let mut c = tx.conn();
        c.execute(
            "INSERT INTO audit_checkpoints (size, root, time, key_id, signature) \
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (size) DO NOTHING",
            args![
                cp.size,
                &cp.root[..],
                cp.time,
                &cp.key_id,
                &cp.signature[..]
            ],
        )
        .await
        .map_err(backend)?;
        let row = c
            .fetch_optional(
                "SELECT size, root, time, key_id, signature FROM audit_checkpoints WHERE size = $1",
                args![cp.size],
            )
            .await
            .map_err(backend)?
            .ok_or_else(|| StoreError::Backend("checkpoint vanished after insert".into()))?;
        let stored = rows::checkpoint(&row)?;
        if stored.root != cp.root {
            return Err(StoreError::Conflict(format!(
                "a checkpoint of size {} with a different root is already stored (the audit log \
                 would fork)",
                cp.size
            )));
        }
        tx.commit().await.map_err(backend)
    }

    async fn checkpoints(&self) -> Result<Vec<CheckpointRecord>, StoreError> {
        self.fetch_all(
            "SELECT size, root, time, key_id, signature FROM audit_checkpoints ORDER BY size",
            vec![],
            rows::checkpoint,
        )
        .await
    }

    async fn checkpoints_between(
        &self,
        after: i64,
        through: i64,
    ) -> Result<Vec<CheckpointRecord>, StoreError> {
        self.fetch_all(
            "SELECT size, root, time, key_id, signature FROM audit_checkpoints \
             WHERE size > $1 AND size <= $2 ORDER BY size",
            args![after, through],
            rows::checkpoint,
        )
        .await
    }

    async fn latest_checkpoint(&self) -> Result<Option<CheckpointRecord>, StoreError> {
        self.fetch_optional(
            "SELECT size, root, time, key_id, signature FROM audit_checkpoints \
             ORDER BY size DESC LIMIT 1",
            vec![],
            rows::checkpoint,
        )
        .await
    }

    async fn rewind_audit(&self, size: i64) -> Result<u64, StoreError> {
        let mut tx = self.begin().await?;
        let mut c = tx.conn();
        read_head(&mut c).await?;
        let later = c
            .fetch_optional(
                "SELECT seq FROM audit_events WHERE seq > $1 LIMIT 1",
                args![size],
            )
            .await
            .map_err(backend)?;
        if later.is_some() {
            return Err(StoreError::Conflict(format!(
                "the log holds events after {size}: nothing to rewind"
            )));
        }
        let hash = if size == 0 {
            [0u8; 32]
        } else {
            let row = c
                .fetch_optional("SELECT hash FROM audit_events WHERE seq = $1", args![size])
                .await
                .map_err(backend)?
                .ok_or_else(|| StoreError::NotFound(format!("audit event {size}")))?;
            rows::leaf(&row)?
        };
        write_head(&mut c, size, &hash).await?;
        let n = c
            .execute("DELETE FROM audit_checkpoints WHERE size > $1", args![size])
            .await
            .map_err(backend)?;
        tx.commit().await.map_err(backend)?;
        Ok(n)
    }
    async fn sso_identity(
        &self,
        issuer: &str,
        subject: &str,
    ) -> Result<Option<String>, StoreError> {
        self.get_sso_identity(issuer, subject).await
    }
    async fn identities_of(&self, user: &str) -> Result<Vec<(String, String)>, StoreError> {
        self.get_identities_of(user).await
    }
    async fn sso_session(
        &self,
        token_id: &str,
    ) -> Result<Option<pedm_core::sso::SsoSession>, StoreError> {
        self.get_sso_session(token_id).await
    }
    async fn sso_session_ids(&self, user: Option<&str>) -> Result<Vec<String>, StoreError> {
        self.get_sso_session_ids(user).await
    }
    async fn sso_groups(&self, user: &str) -> Result<Vec<String>, StoreError> {
        self.get_sso_groups(user).await
    }
    async fn sso_flow(&self, id: &str) -> Result<Option<pedm_core::sso::SsoFlow>, StoreError> {
        self.get_sso_flow(id).await
    }
}
impl Engine {
    /// Audit events as stored (personal data sealed, if it is); pruned ones are left out.
    pub(crate) async fn stored_audit_events(
        &self,
        f: &AuditFilter,
    ) -> Result<Vec<AuditEvent>, StoreError> {
        let mut sql = format!("SELECT {AUDIT_COLS} FROM audit_events WHERE action <> ''");
        let mut a: Vec<Arg> = vec![];
        if let Some(after) = f.after_seq {
            a.push(after.into());
            sql.push_str(&format!(" AND seq > ${}", a.len()));
        }
        if let Some(before) = f.before_seq {
            a.push(before.into());
            sql.push_str(&format!(" AND seq < ${}", a.len()));
        }
        push_eq(&mut sql, &mut a, "actor", f.actor.as_deref().map(Arg::from));
        push_eq(
            &mut sql,
            &mut a,
            "action",
            f.action.as_deref().map(Arg::from),
        );
        push_eq(
            &mut sql,
            &mut a,
            "subject",
            f.subject.as_deref().map(Arg::from),
        );
        if let Some(t) = &f.target {
            a.push(format!("target:{t}").into());
            a.push(format!("role:{t}/%").into());
            a.push(t.into());
            let n = a.len();
            sql.push_str(&format!(
                " AND (subject = ${} OR subject LIKE ${} OR {} = ${n})",
                n - 2,
                n - 1,
                self.json_text_field("data", "target")
            ));
        }
        if let Some(r) = f.request {
            a.push(format!("request:{r}").into());
            a.push(r.to_string().into());
            let n = a.len();
            sql.push_str(&format!(
                " AND (subject = ${} OR {} = ${n})",
                n - 1,
                self.json_text_field("data", "request")
            ));
        }
        // [since, until): inclusive start, exclusive end, so adjacent windows don't overlap.
        if let Some(since) = f.since {
            a.push(since.into());
            sql.push_str(&format!(" AND at >= ${}", a.len()));
        }
        if let Some(until) = f.until {
            a.push(until.into());
            sql.push_str(&format!(" AND at < ${}", a.len()));
        }
        sql.push_str(if f.newest_first {
            " ORDER BY seq DESC"
        } else {
            " ORDER BY seq"
        });
        push_limit(&mut sql, &mut a, f.limit);
        self.fetch_all(&sql, a, rows::audit_event).await
    }
}
