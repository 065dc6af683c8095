//! The outbox (migration 0028): durable notices written with the change that causes them.

use crate::chain::read_head;
use crate::db::{Conn, Row, args};
use crate::engine::{Engine, backend};
use crate::rows::ts;
use jiff::Timestamp;
use pedm_core::notice::{Notice, OutboxItem};
use pedm_core::store::StoreError;

/// Writes `notices` after the changeset's writes and events, in its transaction. On
/// PostgreSQL the chain head row is locked first (a no-op when the changeset's events took it
/// already), so `seq` is drawn in commit order; SQLite has one writer.
pub(crate) async fn insert(
    c: &mut Conn<'_>,
    notices: &[Notice],
    event_seq: Option<i64>,
    at: Timestamp,
) -> Result<(), StoreError> {
    if notices.is_empty() {
        return Ok(());
    }
    if c.is_postgres() {
        read_head(c).await?;
    }
    for n in notices {
        let body = serde_json::to_string(n)
            .map_err(|e| StoreError::Backend(format!("a notice does not serialise: {e}")))?;
        c.execute(
            "INSERT INTO outbox (event_seq, at, notice) VALUES ($1, $2, $3)",
            args![event_seq, at, &body],
        )
        .await
        .map_err(backend)?;
    }
    Ok(())
}

pub(crate) async fn purge(c: &mut Conn<'_>, before: Timestamp) -> Result<(), StoreError> {
    c.execute("DELETE FROM outbox WHERE at < $1", args![before])
        .await
        .map_err(backend)?;
    Ok(())
}

fn item(r: &Row) -> Result<OutboxItem, StoreError> {
    let seq: i64 = r.get("seq")?;
    let body: String = r.get("notice")?;
    let notice = match serde_json::from_str(&body) {
        Ok(n) => Some(n),
        Err(e) => {
            tracing::error!(seq, error = %e, "an outbox entry does not read as a notice");
            None
        }
    };
    Ok(OutboxItem {
        seq,
        event_seq: r.get("event_seq")?,
        at: ts(r, "at")?,
        notice,
    })
}

impl Engine {
    pub(crate) async fn outbox_rows(
        &self,
        after: i64,
        limit: i64,
    ) -> Result<Vec<OutboxItem>, StoreError> {
        self.fetch_all(
            "SELECT seq, event_seq, at, notice FROM outbox WHERE seq > $1 ORDER BY seq LIMIT $2",
            args![after, limit.clamp(1, 10_000)],
            item,
        )
        .await
    }

    pub(crate) async fn outbox_last(&self) -> Result<i64, StoreError> {
        let n = self
            .fetch_optional(
                "SELECT COALESCE(MAX(seq), 0) AS n FROM outbox",
                vec![],
                |r| r.get::<i64>("n"),
            )
            .await?;
        Ok(n.unwrap_or(0))
    }
}
