//! Integration state: put replaces, a claim is taken once while live, purge drops expired.

use super::*;
use pedm_core::integration::{IntegrationEntry, IntegrationWrite};

pub(crate) async fn integration_state_put_claim_purge(db: Db) {
    let s = db.open().await;
    let entry = |key: &str, value: &str, exp: Option<i64>| IntegrationEntry {
        integration: "slack".into(),
        key: key.into(),
        value: value.into(),
        expires_at: exp.map(t),
    };
    let w = |w: IntegrationWrite| cs(Write::Integration(w));
    assert_eq!(s.integration_entry("slack", "m").await.unwrap(), None);
    ok(&s, w(IntegrationWrite::Put(entry("m", "C1/1.0", None)))).await;
    ok(&s, w(IntegrationWrite::Put(entry("m", "C1/2.0", None)))).await;
    assert_eq!(
        s.integration_entry("slack", "m").await.unwrap(),
        Some(entry("m", "C1/2.0", None))
    );
    assert_eq!(s.integration_entry("email", "m").await.unwrap(), None);

    let claim = |value: &str, exp: i64, now: i64| {
        w(IntegrationWrite::Claim {
            entry: entry("sig", value, Some(exp)),
            now: t(now),
        })
    };
    ok(&s, claim("first", 100, 10)).await;
    exists(fails(&s, claim("second", 200, 50)).await, "sig");
    assert_eq!(
        s.integration_entry("slack", "sig").await.unwrap(),
        Some(entry("sig", "first", Some(100)))
    );
    // Once expired, the key can be taken again.
    ok(&s, claim("third", 300, 100)).await;
    assert_eq!(
        s.integration_entry("slack", "sig")
            .await
            .unwrap()
            .unwrap()
            .value,
        "third"
    );
    // A key kept for ever is never claimable.
    exists(
        fails(
            &s,
            w(IntegrationWrite::Claim {
                entry: entry("m", "x", Some(999)),
                now: t(500),
            }),
        )
        .await,
        "m",
    );

    ok(&s, w(IntegrationWrite::Purge { before: t(301) })).await;
    assert_eq!(s.integration_entry("slack", "sig").await.unwrap(), None);
    assert!(s.integration_entry("slack", "m").await.unwrap().is_some());
}

/// Identities linked to a user are found from either side; one identity links one user.
pub(crate) async fn identities_linked_both_ways(db: Db) {
    use pedm_core::sso::SsoWrite;
    let s = db.open().await;
    for n in ["alice", "bob"] {
        ok(&s, cs(Write::InsertUser(user(n)))).await;
    }
    let link = |issuer: &str, subject: &str, u: &str| {
        cs(Write::Sso(SsoWrite::LinkIdentity {
            issuer: issuer.into(),
            subject: subject.into(),
            user: u.into(),
        }))
    };
    ok(&s, link("slack:T1", "U1", "alice")).await;
    ok(&s, link("https://idp.example", "a-1", "alice")).await;
    ok(&s, link("slack:T1", "U2", "bob")).await;
    exists(fails(&s, link("slack:T1", "U1", "bob")).await, "");
    assert_eq!(
        s.identities_of("alice").await.unwrap(),
        vec![
            ("https://idp.example".to_string(), "a-1".to_string()),
            ("slack:T1".to_string(), "U1".to_string()),
        ]
    );
    assert_eq!(
        s.sso_identity("slack:T1", "U2").await.unwrap().as_deref(),
        Some("bob")
    );
    assert!(s.identities_of("carol").await.unwrap().is_empty());
}
