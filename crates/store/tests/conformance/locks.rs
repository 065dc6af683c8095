//! Locks: kept as written, newest first, lifted once.

use super::*;
use pedm_core::lock::{Lock, LockKind, LockWrite};

pub(crate) async fn locks_added_and_lifted(db: Db) {
    let s = db.open().await;
    let lock = |n: u128, at: i64| Lock {
        id: uuid::Uuid::from_u128(n),
        kind: if n.is_multiple_of(2) {
            LockKind::Host
        } else {
            LockKind::User
        },
        subject: format!("s{n}"),
        reason: "why".into(),
        created_by: "admin".into(),
        created_at: t(at),
        expires_at: t(at + 3600),
        lifted_at: None,
        lifted_by: None,
    };
    let lw = |w: LockWrite| cs(Write::Lock(w));
    ok(&s, lw(LockWrite::Insert(lock(1, 10)))).await;
    ok(&s, lw(LockWrite::Insert(lock(2, 20)))).await;
    exists(fails(&s, lw(LockWrite::Insert(lock(1, 30)))).await, "lock");
    assert_eq!(s.locks().await.unwrap(), vec![lock(2, 20), lock(1, 10)]);
    let lift = |n: u128| {
        lw(LockWrite::Lift {
            id: uuid::Uuid::from_u128(n),
            at: t(40),
            by: "bob".into(),
        })
    };
    ok(&s, lift(1)).await;
    conflict(fails(&s, lift(1)).await, "lifted already");
    not_found(fails(&s, lift(9)).await, "lock");
    let l = s.locks().await.unwrap().remove(1);
    assert_eq!(
        (l.lifted_at, l.lifted_by.as_deref()),
        (Some(t(40)), Some("bob"))
    );
    whole_chain(&s).await;
}
