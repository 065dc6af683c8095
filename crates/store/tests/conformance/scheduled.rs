//! Scheduled grants: found when due, counted in the next deadline, switched on exactly once,
//! ended before their start.

use super::*;

pub(crate) async fn scheduled_grants_start_once(db: Db) {
    let s = db.open().await;
    let r = request("alice", "web1", 0);
    let mut g = grant_for(&r, 1000);
    g.state = GrantState::Scheduled;
    let r2 = request("alice", "web1", 0);
    let active = grant_for(&r2, 0);
    ok(
        &s,
        Changeset::new()
            .write(Write::InsertRequest(r.clone()))
            .write(Write::InsertRequest(r2.clone()))
            .write(Write::InsertGrant(g.clone()))
            .write(Write::InsertGrant(active.clone()))
            .event(ev("grant.scheduled", "grant:1")),
    )
    .await;
    // The next deadline is the scheduled start (before the active grant's expiry at 1800).
    assert_eq!(s.next_grant_deadline().await.unwrap(), Some(t(1000)));
    assert!(s.due_scheduled_grants(t(999), 10).await.unwrap().is_empty());
    let due = s.due_scheduled_grants(t(1000), 10).await.unwrap();
    assert_eq!(due.iter().map(|d| d.id).collect::<Vec<_>>(), [g.id]);
    // A scheduled grant is not overdue for expiry, and not an active one.
    assert!(
        s.overdue_grants(t(5000), 10)
            .await
            .unwrap()
            .iter()
            .all(|o| o.id != g.id)
    );

    let start = || Write::StartScheduledGrant {
        id: g.id,
        provision_state: ProvisionState::Provisioning,
        provision_detail: None,
    };
    ok(&s, cs(start())).await;
    let started = s.grant(g.id).await.unwrap().unwrap();
    assert_eq!(started.state, GrantState::Active);
    assert_eq!(started.provision_state, ProvisionState::Provisioning);
    // Once: another instance's attempt is refused and changes nothing.
    conflict(fails(&s, cs(start())).await, "not scheduled");
    assert!(
        s.due_scheduled_grants(t(5000), 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(s.next_grant_deadline().await.unwrap(), Some(t(1800)));
    let nobody = Uuid::now_v7();
    not_found(
        fails(
            &s,
            cs(Write::StartScheduledGrant {
                id: nobody,
                provision_state: ProvisionState::Active,
                provision_detail: None,
            }),
        )
        .await,
        &nobody.to_string(),
    );

    // Ended before its start: revoked, and then never started.
    let r3 = request("alice", "web1", 0);
    let mut later = grant_for(&r3, 9000);
    later.state = GrantState::Scheduled;
    ok(
        &s,
        Changeset::new()
            .write(Write::InsertRequest(r3))
            .write(Write::InsertGrant(later.clone()))
            .event(ev("grant.scheduled", "grant:3")),
    )
    .await;
    ok(
        &s,
        cs(Write::EndGrant {
            id: later.id,
            state: GrantState::Revoked,
            at: t(100),
            by: "admin".into(),
            reason: Some("cancelled".into()),
        }),
    )
    .await;
    assert_eq!(
        s.grant(later.id).await.unwrap().unwrap().state,
        GrantState::Revoked
    );
    conflict(
        fails(
            &s,
            cs(Write::StartScheduledGrant {
                id: later.id,
                provision_state: ProvisionState::Active,
                provision_detail: None,
            }),
        )
        .await,
        "not scheduled",
    );
    // Ending into `scheduled` is refused like ending into `active`.
    conflict(
        fails(
            &s,
            cs(Write::EndGrant {
                id: active.id,
                state: GrantState::Scheduled,
                at: t(100),
                by: "admin".into(),
                reason: None,
            }),
        )
        .await,
        "cannot be ended into scheduled",
    );
}
