//! Hosts, agent report receipts and recorded sessions (migration 0006).

use crate::db::{Conn, args};
use crate::engine::{Engine, backend, exists, insert, json_text};
use crate::rows::{self, SESSION_COLS};
use pedm_core::host::{Host, HostWrite, Session, SessionFilter};
use pedm_core::store::StoreError;
use uuid::Uuid;

const HOST_COLS: &str = "name, token_id, token_hash, registered_at, registered_by, last_seen_at, \
     enroll_expires_at, enrolled_at, revoked_at, cert_serial, cert_not_after";

/// Why a conditional update of host `name` matched nothing.
async fn not_changed(c: &mut Conn<'_>, name: &str, why: &str) -> StoreError {
    match exists(c, "SELECT 1 FROM hosts WHERE name = $1", args![name]).await {
        Ok(true) => StoreError::Conflict(format!("host {name} {why}")),
        Ok(false) => StoreError::NotFound(format!("host {name} is not registered")),
        Err(e) => e,
    }
}

pub(crate) async fn apply(c: &mut Conn<'_>, w: &HostWrite) -> Result<(), StoreError> {
    match w {
        HostWrite::Register(h) => {
            if !exists(c, "SELECT 1 FROM targets WHERE name = $1", args![&h.name]).await? {
                return Err(StoreError::NotFound(format!(
                    "target {} does not exist",
                    h.name
                )));
            }
            c.execute(
                "INSERT INTO hosts (name, token_id, token_hash, registered_at, registered_by, \
                 last_seen_at, enroll_expires_at, enrolled_at, revoked_at, cert_serial, \
                 cert_not_after) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) \
                 ON CONFLICT (name) DO UPDATE SET token_id = excluded.token_id, \
                 token_hash = excluded.token_hash, registered_at = excluded.registered_at, \
                 registered_by = excluded.registered_by, last_seen_at = excluded.last_seen_at, \
                 enroll_expires_at = excluded.enroll_expires_at, \
                 enrolled_at = excluded.enrolled_at, revoked_at = excluded.revoked_at, \
                 cert_serial = excluded.cert_serial, cert_not_after = excluded.cert_not_after",
                args![
                    &h.name,
                    &h.token_id,
                    &h.token_hash[..],
                    h.registered_at,
                    &h.registered_by,
                    h.last_seen_at,
                    h.enroll_expires_at,
                    h.enrolled_at,
                    h.revoked_at,
                    &h.cert_serial,
                    h.cert_not_after
                ],
            )
            .await
            .map_err(backend)?;
            Ok(())
        }
        HostWrite::Seen { name, at } => {
            let n = c
                .execute(
                    "UPDATE hosts SET last_seen_at = $2 WHERE name = $1",
                    args![name, *at],
                )
                .await
                .map_err(backend)?;
            if n == 0 {
                return Err(StoreError::NotFound(format!(
                    "host {name} is not registered"
                )));
            }
            Ok(())
        }
        HostWrite::Enroll {
            name,
            token_id,
            at,
            serial,
            not_after,
        } => {
            let n = c
                .execute(
                    "UPDATE hosts SET enrolled_at = $3, cert_serial = $4, cert_not_after = $5 \
                     WHERE name = $1 AND token_id = $2 AND enrolled_at IS NULL \
                     AND revoked_at IS NULL",
                    args![name, token_id, *at, serial, *not_after],
                )
                .await
                .map_err(backend)?;
            if n == 0 {
                return Err(not_changed(
                    c,
                    name,
                    "was enrolled already, revoked or registered again",
                )
                .await);
            }
            Ok(())
        }
        HostWrite::Certify {
            name,
            serial,
            not_after,
        } => {
            let n = c
                .execute(
                    "UPDATE hosts SET cert_serial = $2, cert_not_after = $3 \
                     WHERE name = $1 AND enrolled_at IS NOT NULL AND revoked_at IS NULL",
                    args![name, serial, *not_after],
                )
                .await
                .map_err(backend)?;
            if n == 0 {
                return Err(not_changed(c, name, "is revoked or not enrolled").await);
            }
            Ok(())
        }
        HostWrite::Revoke { name, at } => {
            let n = c
                .execute(
                    "UPDATE hosts SET revoked_at = $2 WHERE name = $1 AND revoked_at IS NULL",
                    args![name, *at],
                )
                .await
                .map_err(backend)?;
            if n == 0 {
                return Err(not_changed(c, name, "is revoked already").await);
            }
            Ok(())
        }
        HostWrite::Receipt { id, host, at } => {
            insert(
                c,
                "INSERT INTO agent_receipts (id, host, received_at) VALUES ($1, $2, $3)",
                args![*id, host, *at],
                || StoreError::AlreadyExists(format!("report {id} was already accepted")),
                || StoreError::NotFound(format!("host {host} is not registered")),
            )
            .await
        }
        HostWrite::InsertSession(s) => {
            insert(
                c,
                &format!(
                    "INSERT INTO sessions ({SESSION_COLS}) VALUES ($1, $2, $3, $4, $5, $6, $7, \
                     $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20)"
                ),
                args![
                    s.id,
                    s.grant_id,
                    s.delegation_id,
                    &s.task,
                    s.params.as_ref().map(json_text).transpose()?,
                    &s.host,
                    &s.user,
                    &s.run_as,
                    json_text(&s.argv)?,
                    &s.binary_sha256,
                    s.shell,
                    s.started_at,
                    s.ended_at,
                    s.exit_code.map(i64::from),
                    s.signal.map(i64::from),
                    &s.ended_by,
                    &s.recording_sha256,
                    s.recording_bytes,
                    s.uploaded_at,
                    s.via.map(|v| v.as_str())
                ],
                || StoreError::AlreadyExists(format!("session {} was already recorded", s.id)),
                || {
                    StoreError::NotFound(format!(
                        "grant {} or host {} does not exist",
                        s.grant_id.map(|g| g.to_string()).unwrap_or_default(),
                        s.host
                    ))
                },
            )
            .await
        }
    }
}

impl Engine {
    pub(crate) async fn host(&self, name: &str) -> Result<Option<Host>, StoreError> {
        let sql = format!("SELECT {HOST_COLS} FROM hosts WHERE name = $1");
        self.fetch_optional(&sql, args![name], rows::host).await
    }

    pub(crate) async fn host_by_token(&self, token_id: &str) -> Result<Option<Host>, StoreError> {
        let sql = format!("SELECT {HOST_COLS} FROM hosts WHERE token_id = $1");
        self.fetch_optional(&sql, args![token_id], rows::host).await
    }

    pub(crate) async fn hosts(&self) -> Result<Vec<Host>, StoreError> {
        let sql = format!("SELECT {HOST_COLS} FROM hosts ORDER BY name");
        self.fetch_all(&sql, vec![], rows::host).await
    }

    pub(crate) async fn session(&self, id: Uuid) -> Result<Option<Session>, StoreError> {
        let sql = format!("SELECT {SESSION_COLS} FROM sessions WHERE id = $1");
        self.fetch_optional(&sql, args![id], rows::session).await
    }

    pub(crate) async fn sessions(&self, f: &SessionFilter) -> Result<Vec<Session>, StoreError> {
        let mut sql = format!("SELECT {SESSION_COLS} FROM sessions WHERE 1 = 1");
        let mut a = vec![];
        crate::engine::push_eq(
            &mut sql,
            &mut a,
            "user_name",
            f.user.as_ref().map(Into::into),
        );
        crate::engine::push_eq(&mut sql, &mut a, "host", f.host.as_ref().map(Into::into));
        crate::engine::push_eq(&mut sql, &mut a, "grant_id", f.grant.map(Into::into));
        for (op, at) in [(">=", f.since), ("<", f.until)] {
            if let Some(at) = at {
                a.push(at.into());
                sql.push_str(&format!(" AND started_at {op} ${}", a.len()));
            }
        }
        sql.push_str(" ORDER BY started_at DESC, id DESC");
        crate::engine::push_limit(&mut sql, &mut a, f.limit);
        self.fetch_all(&sql, a, rows::session).await
    }
}
