//! Sealed personal data: sealed before chaining, opened on reads, filters on sealed names,
//! one key per subject across instances, legal hold blocking erasure, erasure leaving the
//! chain verifying and the rows pseudonymous.
//!
//! The cipher here is a reversible stand-in (the store's part is what is tested; the real
//! AES-256-GCM-SIV cipher is tested in `pedm-pki`).

use super::*;
use pedm_core::privacy::*;

struct Reverse;
impl PersonalDataCipher for Reverse {
    fn new_key(&self) -> Result<(String, String), PrivacyError> {
        let id = format!("{:016x}", Uuid::now_v7().as_u128() as u64);
        Ok((id.clone(), format!("wrapped-{id}")))
    }
    fn seal(&self, key: &SubjectKey, plain: &str) -> Result<String, PrivacyError> {
        Ok(hex::encode(format!("{}|{plain}", key.wrapped)))
    }
    fn open(&self, key: &SubjectKey, sealed: &str) -> Result<String, PrivacyError> {
        let s = String::from_utf8(
            hex::decode(sealed).map_err(|e| PrivacyError::Crypto(e.to_string()))?,
        )
        .map_err(|e| PrivacyError::Crypto(e.to_string()))?;
        s.strip_prefix(&format!("{}|", key.wrapped))
            .map(str::to_string)
            .ok_or_else(|| PrivacyError::Crypto("another key".into()))
    }
}

async fn sealing(db: &Db) -> Arc<dyn Store> {
    let s = db.open().await;
    s.seal_personal_data(Arc::new(Reverse)).unwrap();
    s
}

pub(crate) async fn personal_data_sealed_opened_and_erased(db: Db) {
    let s = sealing(&db).await;
    assert!(s.seals_personal_data());
    let mut carol = user("carol");
    carol.email = Some("carol@example.org".into());
    let mut r = request("carol", "db1", 5);
    r.justification = "carol's private reason".into();
    let said = NewAuditEvent::new(
        t(10),
        "carol",
        "request.created",
        Some(format!("request:{}", r.id)),
    )
    .data(json!({"justification": r.justification, "target": "db1"}));
    let back = ok(
        &s,
        Changeset::new()
            .write(Write::InsertUser(carol))
            .write(Write::InsertRequest(r.clone()))
            .event(said),
    )
    .await;
    // What the commit returns is what was given.
    assert_eq!(back[0].actor, "carol");

    let stored = s
        .audit_events(&AuditFilter {
            sealed: true,
            ..Default::default()
        })
        .await
        .unwrap();
    let text = serde_json::to_string(&stored).unwrap();
    assert!(!text.contains("carol"), "{text}");
    assert!(stored[0].actor.starts_with("sealed:v1:"));
    assert_eq!(stored[0].data["target"], "db1");
    verify_chain(GENESIS_HASH, 1, &stored).unwrap();

    let opened = s.audit_events(&AuditFilter::default()).await.unwrap();
    assert_eq!(opened[0].actor, "carol");
    assert_eq!(opened[0].data["justification"], "carol's private reason");
    let by_actor = |who: &str| AuditFilter {
        actor: Some(who.into()),
        ..Default::default()
    };
    assert_eq!(s.audit_events(&by_actor("carol")).await.unwrap().len(), 1);
    assert!(s.audit_events(&by_actor("dave")).await.unwrap().is_empty());

    // Two instances sealing for a new subject at once end up with one key, and both events
    // open with it.
    let other = sealing(&db).await;
    let (a, b) = tokio::join!(
        s.commit(Changeset::new().event(NewAuditEvent::new(t(11), "erin", "x.one", None))),
        other.commit(Changeset::new().event(NewAuditEvent::new(t(11), "erin", "x.two", None))),
    );
    a.unwrap();
    b.unwrap();
    let erin = s.audit_events(&by_actor("erin")).await.unwrap();
    assert_eq!(erin.len(), 2, "{erin:?}");
    let key = s.subject_key("erin").await.unwrap().unwrap();
    assert_eq!(key.key_id.len(), 16);

    // A legal hold blocks erasure; lifted, the erasure goes through.
    let hold = |h: Option<LegalHold>| {
        cs(Write::Privacy(PrivacyWrite::SetHold {
            subject: "carol".into(),
            hold: h,
        }))
    };
    ok(
        &s,
        hold(Some(LegalHold {
            reason: "case 7".into(),
            by: "admin".into(),
            at: t(20),
        })),
    )
    .await;
    assert_eq!(
        s.subject_key("carol")
            .await
            .unwrap()
            .unwrap()
            .hold
            .unwrap()
            .reason,
        "case 7"
    );
    let erase = || {
        cs(Write::Privacy(PrivacyWrite::Erase {
            subject: "carol".into(),
            pseudonym: "erased:c0".into(),
        }))
    };
    assert!(
        matches!(fails(&s, erase()).await, StoreError::Conflict(m) if m.contains("legal hold"))
    );
    ok(&s, hold(None)).await;
    ok(&s, erase()).await;
    assert!(s.subject_key("carol").await.unwrap().is_none());
    assert!(matches!(fails(&s, erase()).await, StoreError::NotFound(_)));

    let opened = s.audit_events(&AuditFilter::default()).await.unwrap();
    assert_eq!(opened[0].actor, ERASED);
    assert_eq!(opened[0].data["justification"], ERASED);
    assert_eq!(opened[0].data["target"], "db1");
    assert!(s.audit_events(&by_actor("carol")).await.unwrap().is_empty());
    // The chain over the sealed form is unchanged.
    let after = s
        .audit_events(&AuditFilter {
            sealed: true,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(after[0], stored[0]);
    verify_chain(GENESIS_HASH, 1, &after).unwrap();
    // The rows: her user row and request carry the pseudonym, nothing of her own.
    assert!(s.user("carol").await.unwrap().is_none());
    let p = s.user("erased:c0").await.unwrap().unwrap();
    assert!(p.disabled && p.email.is_none() && p.display_name.is_none());
    let r = s.request(r.id).await.unwrap().unwrap();
    assert_eq!(r.requester, "erased:c0");
    assert_eq!(r.justification, ERASED);
    assert_eq!(r.context.source_addr, None);
}
