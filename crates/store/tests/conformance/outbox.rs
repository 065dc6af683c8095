//! The outbox: notices are kept with the changeset that causes them (or not at all), in
//! commit order, so a reader moving a cursor never steps over one that commits later; a
//! lease is held by one holder at a time; purge drops old entries.

use super::*;
use pedm_core::integration::{IntegrationEntry, IntegrationWrite};
use pedm_core::notice::Notice;

fn notice(user: &str) -> Notice {
    Notice::ExternalExpiring {
        user: user.into(),
        sponsor: "alice".into(),
        expires_at: t(1000),
    }
}

fn user_of(n: &Option<Notice>) -> String {
    match n {
        Some(Notice::ExternalExpiring { user, .. }) => user.clone(),
        other => panic!("unexpected {other:?}"),
    }
}

pub(crate) async fn outbox_in_commit_order_with_its_changeset(db: Db) {
    let s = db.open().await;
    assert_eq!(s.outbox_head().await.unwrap(), 0);
    assert!(s.outbox_after(0, 10).await.unwrap().is_empty());

    let evs = ok(
        &s,
        Changeset::new()
            .event(ev("user.expiry_notice", "user:v1"))
            .notice(notice("v1"))
            .notice(notice("v2")),
    )
    .await;
    let items = s.outbox_after(0, 10).await.unwrap();
    assert_eq!(items.len(), 2);
    assert!(items[0].seq < items[1].seq);
    assert_eq!(items[0].event_seq, Some(evs[0].seq));
    assert_eq!(items[0].notice, Some(notice("v1")));
    assert_eq!(user_of(&items[1].notice), "v2");
    assert_eq!(s.outbox_head().await.unwrap(), items[1].seq);

    // Without events: kept, with no event to point at.
    ok(&s, Changeset::new().notice(notice("v3"))).await;
    let third = s.outbox_after(items[1].seq, 10).await.unwrap();
    assert_eq!(third.len(), 1);
    assert_eq!(third[0].event_seq, None);

    // A refused changeset keeps none of its notices.
    let refused = Changeset::new()
        .write(Write::AddGroupMember {
            group: "nope".into(),
            user: "nobody".into(),
        })
        .event(ev("x.y", "x:1"))
        .notice(notice("never"));
    fails(&s, refused).await;
    assert_eq!(s.outbox_head().await.unwrap(), third[0].seq);

    // Many writers at once, one reader following a cursor: the reader sees every notice,
    // in increasing order, none skipped (a later one never shows before an earlier commits).
    let head = s.outbox_head().await.unwrap();
    let writers: Vec<_> = (0..8)
        .map(|w| {
            let s = s.clone();
            tokio::spawn(async move {
                for i in 0..25 {
                    s.commit(
                        Changeset::new()
                            .event(ev("thing.done", &format!("x:{w}-{i}")))
                            .notice(notice(&format!("w{w}-{i}"))),
                    )
                    .await
                    .unwrap();
                }
            })
        })
        .collect();
    let reader = {
        let s = s.clone();
        tokio::spawn(async move {
            let mut cursor = head;
            let mut seen = vec![];
            while seen.len() < 200 {
                for item in s.outbox_after(cursor, 7).await.unwrap() {
                    assert!(item.seq > cursor);
                    cursor = item.seq;
                    seen.push(user_of(&item.notice));
                }
                tokio::task::yield_now().await;
            }
            seen
        })
    };
    for w in writers {
        w.await.unwrap();
    }
    let mut seen = tokio::time::timeout(std::time::Duration::from_secs(60), reader)
        .await
        .expect("the reader saw every notice")
        .unwrap();
    seen.sort();
    seen.dedup();
    assert_eq!(seen.len(), 200, "a notice was skipped or repeated");

    // Purge by age.
    let cs = Changeset::new().write(Write::PurgeOutbox {
        before: Timestamp::now() + jiff::SignedDuration::from_secs(60),
    });
    ok(&s, cs).await;
    assert!(s.outbox_after(0, 10).await.unwrap().is_empty());
    // Sequence numbers are never reused.
    ok(&s, Changeset::new().notice(notice("after"))).await;
    assert!(s.outbox_head().await.unwrap() > head + 200);
}

pub(crate) async fn leases_have_one_holder(db: Db) {
    let s = db.open().await;
    let lease = |holder: &str, exp: i64, now: i64| {
        Changeset::new().write(Write::Integration(IntegrationWrite::Lease {
            entry: IntegrationEntry {
                integration: "outbox".into(),
                key: "lease:webhook:a".into(),
                value: holder.into(),
                expires_at: Some(t(exp)),
            },
            now: t(now),
        }))
    };
    s.commit(lease("one", 30, 0)).await.unwrap();
    // Another holder waits while the lease is live; the holder renews.
    assert!(matches!(
        s.commit(lease("two", 40, 10)).await,
        Err(StoreError::AlreadyExists(_))
    ));
    s.commit(lease("one", 45, 15)).await.unwrap();
    assert!(matches!(
        s.commit(lease("two", 70, 40)).await,
        Err(StoreError::AlreadyExists(_))
    ));
    // Run out: taken over; the old holder cannot renew any more.
    s.commit(lease("two", 75, 45)).await.unwrap();
    assert!(matches!(
        s.commit(lease("one", 80, 50)).await,
        Err(StoreError::AlreadyExists(_))
    ));
    let e = s
        .integration_entry("outbox", "lease:webhook:a")
        .await
        .unwrap()
        .unwrap();
    assert_eq!((e.value.as_str(), e.expires_at), ("two", Some(t(75))));
}
