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
