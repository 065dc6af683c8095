//! Integration state (migration 0024).

use crate::db::{Conn, Row, args};
use crate::engine::{Engine, backend};
use crate::rows::opt_ts;
use pedm_core::integration::{IntegrationEntry, IntegrationWrite};
use pedm_core::store::StoreError;

fn entry(r: &Row) -> Result<IntegrationEntry, StoreError> {
    Ok(IntegrationEntry {
        integration: r.get("integration")?,
        key: r.get("key")?,
        value: r.get("value")?,
        expires_at: opt_ts(r, "expires_at")?,
    })
}

pub(crate) async fn apply(c: &mut Conn<'_>, w: &IntegrationWrite) -> Result<(), StoreError> {
    match w {
        IntegrationWrite::Put(e) => {
            c.execute(
                "INSERT INTO integration_state (integration, key, value, expires_at) \
                 VALUES ($1, $2, $3, $4) ON CONFLICT (integration, key) \
                 DO UPDATE SET value = excluded.value, expires_at = excluded.expires_at",
                args![&e.integration, &e.key, &e.value, e.expires_at],
            )
            .await
            .map_err(backend)?;
            Ok(())
        }
        IntegrationWrite::Claim { entry: e, now } => {
            let n = c
                .execute(
                    "INSERT INTO integration_state (integration, key, value, expires_at) \
                     VALUES ($1, $2, $3, $4) ON CONFLICT (integration, key) \
                     DO UPDATE SET value = excluded.value, expires_at = excluded.expires_at \
                     WHERE integration_state.expires_at IS NOT NULL \
                       AND integration_state.expires_at <= $5",
                    args![&e.integration, &e.key, &e.value, e.expires_at, *now],
                )
                .await
                .map_err(backend)?;
            if n == 0 {
                return Err(StoreError::AlreadyExists(format!(
                    "{} {} was taken already",
                    e.integration, e.key
                )));
            }
            Ok(())
        }
        IntegrationWrite::Lease { entry: e, now } => {
            let n = c
                .execute(
                    "INSERT INTO integration_state (integration, key, value, expires_at) \
                     VALUES ($1, $2, $3, $4) ON CONFLICT (integration, key) \
                     DO UPDATE SET value = excluded.value, expires_at = excluded.expires_at \
                     WHERE integration_state.value = excluded.value \
                        OR (integration_state.expires_at IS NOT NULL \
                            AND integration_state.expires_at <= $5)",
                    args![&e.integration, &e.key, &e.value, e.expires_at, *now],
                )
                .await
                .map_err(backend)?;
            if n == 0 {
                return Err(StoreError::AlreadyExists(format!(
                    "{} {} is held by another",
                    e.integration, e.key
                )));
            }
            Ok(())
        }
        IntegrationWrite::Purge { before } => {
            c.execute(
                "DELETE FROM integration_state WHERE expires_at IS NOT NULL AND expires_at < $1",
                args![*before],
            )
            .await
            .map_err(backend)?;
            Ok(())
        }
    }
}

impl Engine {
    pub(crate) async fn get_integration_entry(
        &self,
        integration: &str,
        key: &str,
    ) -> Result<Option<IntegrationEntry>, StoreError> {
        self.fetch_optional(
            "SELECT integration, key, value, expires_at FROM integration_state \
             WHERE integration = $1 AND key = $2",
            args![integration, key],
            entry,
        )
        .await
    }
}
