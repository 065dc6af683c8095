//! Trusted devices (migration 0017).

use crate::db::{Conn, Row, args};
use crate::engine::{Engine, backend, exists, insert, json_text};
use crate::rows::{corrupt, opt_ts, ts};
use pedm_core::device::{Device, DeviceWrite};
use pedm_core::store::StoreError;

const COLS: &str = "id, owner, name, posture, cert_serial, cert_not_after, enrolled_at, \
     approved_at, approved_by, revoked_at";

fn device(r: &Row) -> Result<Device, StoreError> {
    Ok(Device {
        id: r.get("id")?,
        owner: r.get("owner")?,
        name: r.get("name")?,
        posture: serde_json::from_str(&r.get::<String>("posture")?)
            .map_err(|e| corrupt("posture", e))?,
        cert_serial: r.get("cert_serial")?,
        cert_not_after: ts(r, "cert_not_after")?,
        enrolled_at: ts(r, "enrolled_at")?,
        approved_at: opt_ts(r, "approved_at")?,
        approved_by: r.get("approved_by")?,
        revoked_at: opt_ts(r, "revoked_at")?,
    })
}

async fn not_updated(c: &mut Conn<'_>, id: &str, why: &str) -> StoreError {
    match exists(c, "SELECT 1 FROM devices WHERE id = $1", args![id]).await {
        Ok(true) => StoreError::Conflict(format!("device {id} {why}")),
        Ok(false) => StoreError::NotFound(format!("device {id} does not exist")),
        Err(e) => e,
    }
}

pub(crate) async fn apply(c: &mut Conn<'_>, w: &DeviceWrite) -> Result<(), StoreError> {
    match w {
        DeviceWrite::Insert(d) => {
            insert(
                c,
                &format!(
                    "INSERT INTO devices ({COLS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"
                ),
                args![
                    &d.id,
                    &d.owner,
                    &d.name,
                    json_text(&d.posture)?,
                    &d.cert_serial,
                    d.cert_not_after,
                    d.enrolled_at,
                    d.approved_at,
                    &d.approved_by,
                    d.revoked_at
                ],
                || StoreError::AlreadyExists(format!("device {}", d.id)),
                || StoreError::NotFound(format!("user {}", d.owner)),
            )
            .await
        }
        DeviceWrite::Approve { id, at, by } => {
            let n = c
                .execute(
                    "UPDATE devices SET approved_at = $2, approved_by = $3 \
                     WHERE id = $1 AND approved_at IS NULL AND revoked_at IS NULL",
                    args![id, *at, by],
                )
                .await
                .map_err(backend)?;
            if n == 0 {
                return Err(not_updated(c, id, "is approved or revoked already").await);
            }
            Ok(())
        }
        DeviceWrite::Revoke { id, at } => {
            let n = c
                .execute(
                    "UPDATE devices SET revoked_at = $2 WHERE id = $1 AND revoked_at IS NULL",
                    args![id, *at],
                )
                .await
                .map_err(backend)?;
            if n == 0 {
                return Err(not_updated(c, id, "is revoked already").await);
            }
            Ok(())
        }
    }
}

impl Engine {
    pub(crate) async fn device_row(&self, id: &str) -> Result<Option<Device>, StoreError> {
        let sql = format!("SELECT {COLS} FROM devices WHERE id = $1");
        self.fetch_optional(&sql, args![id], device).await
    }

    pub(crate) async fn device_rows(&self, owner: Option<&str>) -> Result<Vec<Device>, StoreError> {
        match owner {
            Some(o) => {
                let sql = format!(
                    "SELECT {COLS} FROM devices WHERE owner = $1 ORDER BY enrolled_at DESC, id"
                );
                self.fetch_all(&sql, args![o], device).await
            }
            None => {
                let sql = format!("SELECT {COLS} FROM devices ORDER BY enrolled_at DESC, id");
                self.fetch_all(&sql, vec![], device).await
            }
        }
    }
}
