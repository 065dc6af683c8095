//! SSH certificates: serials unique (all 64 bits kept), and the KRL's list: user
//! certificates still valid whose grant has ended.

use super::*;
use pedm_core::ssh::{CertKind, SshCertificate};

pub(crate) async fn ssh_certificates_and_what_to_revoke(db: Db) {
    let s = db.open().await;
    let r1 = request("alice", "web1", 0);
    let g1 = grant_for(&r1, 100);
    let r2 = request("alice", "web1", 1);
    let g2 = grant_for(&r2, 100);
    ok(
        &s,
        Changeset::new()
            .write(Write::InsertRequest(r1.clone()))
            .write(Write::InsertGrant(g1.clone()))
            .write(Write::InsertRequest(r2.clone()))
            .write(Write::InsertGrant(g2.clone())),
    )
    .await;
    let cert = |serial: u64, kind: CertKind, grant: Option<Uuid>, until: i64| SshCertificate {
        serial,
        kind,
        grant_id: grant,
        key_id: grant.map_or("host:web1".into(), |g| g.to_string()),
        principals: vec!["root".into()],
        key_fingerprint: "SHA256:key".into(),
        ca_fingerprint: "SHA256:ca".into(),
        valid_after: t(100),
        valid_before: t(until),
        issued_by: "alice".into(),
        issued_at: t(150),
    };
    let big = u64::MAX - 7; // beyond i64: kept exactly
    for c in [
        cert(big, CertKind::User, Some(g1.id), 3700),
        cert(2, CertKind::User, Some(g1.id), 200), // over before the grant ends
        cert(3, CertKind::User, Some(g2.id), 3700),
        cert(4, CertKind::Host, None, 90_000),
    ] {
        ok(&s, cs(Write::SshCertificate(c))).await;
    }
    exists(
        fails(
            &s,
            cs(Write::SshCertificate(cert(
                3,
                CertKind::User,
                Some(g1.id),
                3700,
            ))),
        )
        .await,
        "serial 3",
    );
    // Both grants active: nothing to revoke.
    assert!(
        s.ssh_certificates_to_revoke(t(300))
            .await
            .unwrap()
            .is_empty()
    );
    ok(
        &s,
        cs(Write::EndGrant {
            id: g1.id,
            state: GrantState::Revoked,
            at: t(300),
            by: "admin".into(),
            reason: None,
        }),
    )
    .await;
    let listed = s.ssh_certificates_to_revoke(t(300)).await.unwrap();
    assert_eq!(listed, vec![cert(big, CertKind::User, Some(g1.id), 3700)]);
    // Once it is past its own end, it leaves the list.
    assert!(
        s.ssh_certificates_to_revoke(t(3700))
            .await
            .unwrap()
            .is_empty()
    );
}
