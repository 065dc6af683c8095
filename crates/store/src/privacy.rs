//! Sealed personal data in the audit log (migration 0032; see `pedm_core::privacy`): subject
//! keys and legal holds, sealing events before they are chained, opening them on reads, and
//! erasure.

use crate::db::{Conn, Row, args};
use crate::engine::{Engine, Pools, backend, exists};
use crate::rows::{opt_ts, ts};
use pedm_core::audit::{AuditEvent, NewAuditEvent};
use pedm_core::privacy::{
    ERASED, LegalHold, PersonalDataCipher, PrivacyWrite, SubjectKey, key_ids, open_event, persons,
    seal_event, sealed_form,
};
use pedm_core::store::{AuditFilter, Changeset, Store, StoreError, Write};
use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

const COLS: &str = "subject, key_id, wrapped_key, created_at, hold_reason, hold_by, hold_at";

fn subject_key(r: &Row) -> Result<SubjectKey, StoreError> {
    let reason: Option<String> = r.get("hold_reason")?;
    let by: Option<String> = r.get("hold_by")?;
    let at = opt_ts(r, "hold_at")?;
    Ok(SubjectKey {
        subject: r.get("subject")?,
        key_id: r.get("key_id")?,
        wrapped: r.get("wrapped_key")?,
        created_at: ts(r, "created_at")?,
        hold: match (reason, by, at) {
            (Some(reason), Some(by), Some(at)) => Some(LegalHold { reason, by, at }),
            _ => None,
        },
    })
}

fn privacy_error(e: pedm_core::privacy::PrivacyError) -> StoreError {
    StoreError::Backend(e.to_string())
}

/// Where erasing a subject replaces their name (`pseudonym`) and their free text (`[erased]`):
/// (table, name column, text columns written by that person).
const SCRUB: &[(&str, &str, &[&str])] = &[
    ("requests", "requester", &["justification"]),
    ("requests", "decided_by", &["decision_reason"]),
    ("approvals", "approver", &["comment"]),
    ("grants", "user_name", &[]),
    ("grants", "ended_by", &["end_reason"]),
    ("sessions", "user_name", &[]),
    ("sessions", "ended_by", &[]),
    ("delegations", "delegator", &["reason"]),
    ("delegations", "revoked_by", &["revoke_reason"]),
    ("review_items", "subject_user", &[]),
    ("review_items", "decided_by", &["comment"]),
    ("locks", "created_by", &["reason"]),
    ("web_sessions", "user_name", &["source"]),
    ("external_accounts", "created_by", &[]),
];

pub(crate) async fn apply(c: &mut Conn<'_>, w: &PrivacyWrite) -> Result<(), StoreError> {
    match w {
        PrivacyWrite::AddKeys(keys) => {
            for k in keys {
                c.execute(
                    &format!(
                        "INSERT INTO privacy_subjects ({COLS}) VALUES ($1, $2, $3, $4, NULL, \
                         NULL, NULL) ON CONFLICT (subject) DO NOTHING"
                    ),
                    args![&k.subject, &k.key_id, &k.wrapped, k.created_at],
                )
                .await
                .map_err(backend)?;
            }
            Ok(())
        }
        PrivacyWrite::SetHold { subject, hold } => {
            let n = c
                .execute(
                    "UPDATE privacy_subjects SET hold_reason = $2, hold_by = $3, hold_at = $4 \
                     WHERE subject = $1",
                    args![
                        subject,
                        hold.as_ref().map(|h| h.reason.clone()),
                        hold.as_ref().map(|h| h.by.clone()),
                        hold.as_ref().map(|h| h.at)
                    ],
                )
                .await
                .map_err(backend)?;
            if n == 0 {
                return Err(StoreError::NotFound(format!(
                    "personal data of {subject} (nothing of theirs is sealed)"
                )));
            }
            Ok(())
        }
        PrivacyWrite::Erase { subject, pseudonym } => {
            let n = c
                .execute(
                    "DELETE FROM privacy_subjects WHERE subject = $1 AND hold_reason IS NULL",
                    args![subject],
                )
                .await
                .map_err(backend)?;
            if n == 0 {
                let held = exists(
                    c,
                    "SELECT 1 FROM privacy_subjects WHERE subject = $1",
                    args![subject],
                )
                .await?;
                return Err(match held {
                    true => StoreError::Conflict(format!("{subject} is under legal hold")),
                    false => StoreError::NotFound(format!("the personal data key of {subject}")),
                });
            }
            rename_user(c, subject, pseudonym).await?;
            // Where their requests came from (before the requester column is renamed).
            let drop_addr = match c {
                Conn::Pg(_) => "(context::jsonb - 'source_addr')::text",
                _ => "json_remove(context, '$.source_addr')",
            };
            c.execute(
                &format!("UPDATE requests SET context = {drop_addr} WHERE requester = $1"),
                args![subject],
            )
            .await
            .map_err(backend)?;
            for (table, name, texts) in SCRUB {
                let mut set = format!("{name} = $2");
                for t in *texts {
                    set.push_str(&format!(
                        ", {t} = CASE WHEN {t} IS NULL THEN NULL ELSE $3 END"
                    ));
                }
                c.execute(
                    &format!("UPDATE {table} SET {set} WHERE {name} = $1"),
                    args![subject, pseudonym, ERASED],
                )
                .await
                .map_err(backend)?;
            }
            Ok(())
        }
    }
}

/// The user row becomes the pseudonym's (disabled, nothing personal), with what points at it.
async fn rename_user(c: &mut Conn<'_>, name: &str, pseudonym: &str) -> Result<(), StoreError> {
    let had_row = c
        .execute(
            "INSERT INTO users (name, display_name, admin, disabled, created_at, email) \
             SELECT $2, NULL, FALSE, TRUE, created_at, NULL FROM users WHERE name = $1",
            args![name, pseudonym],
        )
        .await
        .map_err(backend)?;
    for sql in [
        "DELETE FROM sso_group_members WHERE user_name = $1",
        "DELETE FROM sso_identities WHERE user_name = $1",
        "DELETE FROM scim_users WHERE user_name = $1",
    ] {
        c.execute(sql, args![name]).await.map_err(backend)?;
    }
    if had_row == 0 {
        return Ok(());
    }
    for (table, column) in [
        ("group_members", "user_name"),
        ("tokens", "user_name"),
        ("external_accounts", "user_name"),
        ("external_accounts", "sponsor"),
        ("devices", "owner"),
    ] {
        c.execute(
            &format!("UPDATE {table} SET {column} = $2 WHERE {column} = $1"),
            args![name, pseudonym],
        )
        .await
        .map_err(backend)?;
    }
    c.execute("DELETE FROM users WHERE name = $1", args![name])
        .await
        .map_err(backend)?;
    Ok(())
}

impl Engine {
    fn cipher(&self) -> Option<&Arc<dyn PersonalDataCipher>> {
        self.privacy.get()
    }

    pub(crate) async fn subject_key_row(
        &self,
        subject: &str,
    ) -> Result<Option<SubjectKey>, StoreError> {
        let sql = format!("SELECT {COLS} FROM privacy_subjects WHERE subject = $1");
        self.fetch_optional(&sql, args![subject], subject_key).await
    }

    pub(crate) async fn held_rows(&self) -> Result<Vec<SubjectKey>, StoreError> {
        let sql = format!(
            "SELECT {COLS} FROM privacy_subjects WHERE hold_reason IS NOT NULL ORDER BY subject"
        );
        self.fetch_all(&sql, vec![], subject_key).await
    }

    /// Keys whose `column` (subject or key_id) is one of `values`.
    async fn keys_where(
        &self,
        column: &str,
        values: &BTreeSet<String>,
    ) -> Result<Vec<SubjectKey>, StoreError> {
        if values.is_empty() {
            return Ok(vec![]);
        }
        let marks: Vec<String> = (1..=values.len()).map(|i| format!("${i}")).collect();
        let sql = format!(
            "SELECT {COLS} FROM privacy_subjects WHERE {column} IN ({})",
            marks.join(", ")
        );
        let a = values.iter().map(|v| v.as_str().into()).collect();
        self.fetch_all(&sql, a, subject_key).await
    }

    /// Seals the personal data in `changes`' events, creating keys for new subjects first
    /// (committed on their own: a key another instance created meanwhile wins, and is used).
    pub(crate) async fn seal_changeset(
        &self,
        mut changes: Changeset,
    ) -> Result<Changeset, StoreError> {
        let Some(cipher) = self.cipher().cloned() else {
            return Ok(changes);
        };
        let needed: BTreeSet<String> = changes.events.iter().flat_map(persons).collect();
        if needed.is_empty() {
            return Ok(changes);
        }
        let mut keys: HashMap<String, SubjectKey> = self
            .keys_where("subject", &needed)
            .await?
            .into_iter()
            .map(|k| (k.subject.clone(), k))
            .collect();
        let missing: BTreeSet<String> = needed
            .iter()
            .filter(|n| !keys.contains_key(*n))
            .cloned()
            .collect();
        if !missing.is_empty() {
            let now = changes
                .events
                .first()
                .map(|e| e.at)
                .unwrap_or_else(jiff::Timestamp::now);
            let mut new = vec![];
            for subject in &missing {
                let (key_id, wrapped) = cipher.new_key().map_err(privacy_error)?;
                new.push(SubjectKey {
                    subject: subject.clone(),
                    wrapped,
                    key_id,
                    created_at: now,
                    hold: None,
                });
            }
            Store::commit(
                self,
                Changeset::new().write(Write::Privacy(PrivacyWrite::AddKeys(new))),
            )
            .await?;
            keys.extend(
                self.keys_where("subject", &missing)
                    .await?
                    .into_iter()
                    .map(|k| (k.subject.clone(), k)),
            );
        }
        for e in &mut changes.events {
            seal_event(e, &keys, cipher.as_ref()).map_err(privacy_error)?;
        }
        Ok(changes)
    }

    /// The events as the caller gave them, chained as `sealed` was: what a commit returns.
    pub(crate) fn unsealed_results(
        plain: &[NewAuditEvent],
        sealed: Vec<AuditEvent>,
    ) -> Vec<AuditEvent> {
        sealed
            .into_iter()
            .zip(plain)
            .map(|(s, p)| AuditEvent {
                actor: p.actor.clone(),
                subject: p.subject.clone(),
                data: p.data.clone(),
                ..s
            })
            .collect()
    }

    /// Opens the sealed values of `events` (those whose key is gone read `[erased]`).
    pub(crate) async fn open_events(&self, events: &mut [AuditEvent]) -> Result<(), StoreError> {
        let Some(cipher) = self.cipher().cloned() else {
            return Ok(());
        };
        let ids: BTreeSet<String> = events.iter().flat_map(key_ids).collect();
        let keys: HashMap<String, SubjectKey> = self
            .keys_where("key_id", &ids)
            .await?
            .into_iter()
            .map(|k| (k.key_id.clone(), k))
            .collect();
        for e in events.iter_mut() {
            open_event(e, &keys, cipher.as_ref())
                .map_err(|err| StoreError::Backend(format!("audit event {}: {err}", e.seq)))?;
        }
        Ok(())
    }

    /// `f` with its actor and `user:` subject as stored, when they are sealed.
    pub(crate) async fn sealed_filter(&self, f: &AuditFilter) -> Result<AuditFilter, StoreError> {
        let mut f = f.clone();
        let Some(cipher) = self.cipher().cloned() else {
            return Ok(f);
        };
        if let Some(actor) = f.actor.clone()
            && let Some(k) = self.subject_key_row(&actor).await?
        {
            f.actor = Some(sealed_form(&k, &actor, cipher.as_ref()).map_err(privacy_error)?);
        }
        if let Some(user) = f.subject.as_deref().and_then(|s| s.strip_prefix("user:"))
            && let Some(k) = self.subject_key_row(user).await?
        {
            f.subject = Some(format!(
                "user:{}",
                sealed_form(&k, user, cipher.as_ref()).map_err(privacy_error)?
            ));
        }
        Ok(f)
    }

    /// After an erasure: the old row images are removed from the database files too (SQLite:
    /// the WAL is checkpointed and truncated, freed cells were zeroed by `secure_delete`;
    /// PostgreSQL: the touched tables are vacuumed).
    pub(crate) async fn purge_erased(&self) -> Result<(), StoreError> {
        match &self.pools {
            Pools::Sqlite { write, .. } => {
                let (busy, _, _): (i64, i64, i64) =
                    sqlx::query_as("PRAGMA wal_checkpoint(TRUNCATE)")
                        .fetch_one(write)
                        .await
                        .map_err(backend)?;
                if busy != 0 {
                    tracing::warn!(
                        "after an erasure the WAL could not be truncated (readers were busy); \
                         the next checkpoint removes the old rows"
                    );
                }
            }
            Pools::Pg { pool, .. } => {
                let tables: BTreeSet<&str> = SCRUB.iter().map(|(t, _, _)| *t).collect();
                for t in tables.into_iter().chain(["privacy_subjects"]) {
                    sqlx::query(sqlx::AssertSqlSafe(format!("VACUUM {t}")))
                        .execute(pool)
                        .await
                        .map_err(backend)?;
                }
            }
        }
        Ok(())
    }
}
