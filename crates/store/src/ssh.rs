//! SSH certificates pedmd issued (migration 0022).

use crate::db::{Conn, Row, args};
use crate::engine::{Engine, insert, json_text};
use crate::rows::{corrupt, json, opt_uuid, ts};
use pedm_core::ssh::{CertKind, SshCertificate};
use pedm_core::store::StoreError;

const COLS: &str = "serial, kind, grant_id, key_id, principals, key_fingerprint, ca_fingerprint, \
     valid_after, valid_before, issued_by, issued_at";

fn certificate(r: &Row) -> Result<SshCertificate, StoreError> {
    let kind = match r.get::<String>("kind")?.as_str() {
        "user" => CertKind::User,
        "host" => CertKind::Host,
        other => return Err(corrupt("kind", format!("unknown kind {other}"))),
    };
    Ok(SshCertificate {
        serial: r
            .get::<String>("serial")?
            .parse()
            .map_err(|e| corrupt("serial", e))?,
        kind,
        grant_id: opt_uuid(r, "grant_id")?,
        key_id: r.get("key_id")?,
        principals: json(r, "principals")?,
        key_fingerprint: r.get("key_fingerprint")?,
        ca_fingerprint: r.get("ca_fingerprint")?,
        valid_after: ts(r, "valid_after")?,
        valid_before: ts(r, "valid_before")?,
        issued_by: r.get("issued_by")?,
        issued_at: ts(r, "issued_at")?,
    })
}

pub(crate) async fn insert_certificate(
    c: &mut Conn<'_>,
    cert: &SshCertificate,
) -> Result<(), StoreError> {
    insert(
        c,
        &format!(
            "INSERT INTO ssh_certificates ({COLS}) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)"
        ),
        args![
            cert.serial.to_string(),
            cert.kind.as_str(),
            cert.grant_id,
            &cert.key_id,
            json_text(&cert.principals)?,
            &cert.key_fingerprint,
            &cert.ca_fingerprint,
            cert.valid_after,
            cert.valid_before,
            &cert.issued_by,
            cert.issued_at
        ],
        || StoreError::AlreadyExists(format!("ssh certificate serial {}", cert.serial)),
        || StoreError::NotFound("the certificate's grant".into()),
    )
    .await
}

impl Engine {
    /// User certificates still valid at `now` whose grant has ended (released, revoked or
    /// expired early): what the KRL must list.
    pub(crate) async fn ssh_certificates_to_revoke(
        &self,
        now: jiff::Timestamp,
    ) -> Result<Vec<SshCertificate>, StoreError> {
        let cols = COLS
            .split(", ")
            .map(|c| format!("c.{c}"))
            .collect::<Vec<_>>()
            .join(", ");
        let sql = format!(
            "SELECT {cols} FROM ssh_certificates c JOIN grants g ON g.id = c.grant_id \
             WHERE c.kind = 'user' AND c.valid_before > $1 AND g.state <> 'active' \
             ORDER BY c.issued_at, c.serial"
        );
        self.fetch_all(&sql, args![now], certificate).await
    }
}
