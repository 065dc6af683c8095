//! Console sessions (migration 0023).

use crate::db::{Conn, Row, args};
use crate::engine::{Engine, backend, insert};
use crate::rows::{opt_ts, ts};
use pedm_core::store::StoreError;
use pedm_core::web_session::{WebSession, WebSessionWrite};

const COLS: &str =
    "token_id, user_name, method, provider, source, created_at, last_seen_at, ended_at";

fn session(r: &Row) -> Result<WebSession, StoreError> {
    Ok(WebSession {
        token_id: r.get("token_id")?,
        user: r.get("user_name")?,
        method: r.get("method")?,
        provider: r.get("provider")?,
        source: r.get("source")?,
        created_at: ts(r, "created_at")?,
        last_seen_at: ts(r, "last_seen_at")?,
        ended_at: opt_ts(r, "ended_at")?,
    })
}

pub(crate) async fn apply(c: &mut Conn<'_>, w: &WebSessionWrite) -> Result<(), StoreError> {
    match w {
        WebSessionWrite::Insert(s) => {
            insert(
                c,
                &format!(
                    "INSERT INTO web_sessions ({COLS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"
                ),
                args![
                    &s.token_id,
                    &s.user,
                    &s.method,
                    &s.provider,
                    &s.source,
                    s.created_at,
                    s.last_seen_at,
                    s.ended_at
                ],
                || StoreError::AlreadyExists(format!("token {} backs a session", s.token_id)),
                || StoreError::NotFound(format!("token {} does not exist", s.token_id)),
            )
            .await
        }
        WebSessionWrite::Touch { token_id, at } => {
            c.execute(
                "UPDATE web_sessions SET last_seen_at = $2 \
                 WHERE token_id = $1 AND ended_at IS NULL AND last_seen_at < $2",
                args![token_id, *at],
            )
            .await
            .map_err(backend)?;
            Ok(())
        }
        WebSessionWrite::End { token_id, at } => {
            let n = c
                .execute(
                    "UPDATE web_sessions SET ended_at = $2 \
                     WHERE token_id = $1 AND ended_at IS NULL",
                    args![token_id, *at],
                )
                .await
                .map_err(backend)?;
            if n == 0 {
                return Err(StoreError::Conflict(format!(
                    "session {token_id} is not open"
                )));
            }
            Ok(())
        }
    }
}

impl Engine {
    pub(crate) async fn get_web_session(
        &self,
        token_id: &str,
    ) -> Result<Option<WebSession>, StoreError> {
        self.fetch_optional(
            &format!("SELECT {COLS} FROM web_sessions WHERE token_id = $1"),
            args![token_id],
            session,
        )
        .await
    }
}
