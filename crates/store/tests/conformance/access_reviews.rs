//! Access reviews: a campaign and its items kept as written, each item decided once, each
//! step of a campaign taken once, escalation handing undecided items over.

use super::*;
use pedm_core::access_review::*;
use pedm_core::delegation::{DelegateKind, Delegatee};

pub(crate) async fn review_campaigns_and_items(db: Db) {
    let s = db.open().await;
    let id = uuid::Uuid::from_u128(1);
    let k = Campaign {
        id,
        name: "2026-Q4".into(),
        scope: ReviewScope {
            kinds: vec![ItemKind::Membership],
            targets: vec!["env=prod".into()],
        },
        created_by: "admin".into(),
        created_at: t(10),
        due_at: t(1000),
        default_action: DefaultAction::Flag,
        reviewers: "reviewers".into(),
        escalate_to: "security".into(),
        unused_days: 90,
        stage: CampaignStage::Open,
        closed_at: None,
        proposal: None,
        counts: ItemCounts::default(),
    };
    let item = |n: u128, user: &str| ReviewItem {
        id: uuid::Uuid::from_u128(100 + n),
        campaign: id,
        kind: ItemKind::Membership,
        user: user.into(),
        target: None,
        role: None,
        group: Some("ops".into()),
        delegation: None,
        detail: "member of group ops".into(),
        reviewer: Delegatee {
            kind: DelegateKind::Group,
            name: "reviewers".into(),
        },
        usage: Usage {
            requests: 3,
            grants: 2,
            sessions: 1,
            last_used: Some(t(5)),
        },
        suggested: (n == 2).then_some(ReviewDecision::Revoke),
        state: ItemState::Pending,
        comment: None,
        decided_by: None,
        decided_at: None,
        outcome: None,
    };
    let rw = |w: ReviewWrite| cs(Write::Review(w));
    let start = |k: &Campaign| {
        rw(ReviewWrite::Start {
            campaign: Box::new(k.clone()),
            items: vec![item(1, "alice"), item(2, "bob")],
        })
    };
    ok(&s, start(&k)).await;
    // The same name again, under another id: refused, nothing written.
    let mut again = k.clone();
    again.id = uuid::Uuid::from_u128(2);
    exists(fails(&s, start(&again)).await, "campaign");
    assert_eq!(s.review_campaigns().await.unwrap().len(), 1);
    let read = s.review_campaign(id).await.unwrap().unwrap();
    assert_eq!(read.counts.pending, 2);
    assert_eq!(read.scope, k.scope);
    assert_eq!(
        s.review_items(id).await.unwrap(),
        vec![item(1, "alice"), item(2, "bob")]
    );

    let decide = |n: u128| {
        rw(ReviewWrite::Decide {
            id: uuid::Uuid::from_u128(100 + n),
            state: ItemState::Revoked,
            comment: Some("left".into()),
            by: "rita".into(),
            at: t(20),
            outcome: Some("removed from group ops".into()),
        })
    };
    ok(&s, decide(2)).await;
    conflict(fails(&s, decide(2)).await, "decided already");
    not_found(fails(&s, decide(9)).await, "review item");
    let bob = s
        .review_item(uuid::Uuid::from_u128(102))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (bob.state, bob.decided_by.as_deref(), bob.decided_at),
        (ItemState::Revoked, Some("rita"), Some(t(20)))
    );

    let advance = |from, to, escalate: bool| {
        rw(ReviewWrite::Advance {
            id,
            from,
            to,
            at: t(30),
            escalate_to: escalate.then(|| Delegatee {
                kind: DelegateKind::Group,
                name: "security".into(),
            }),
        })
    };
    ok(
        &s,
        advance(CampaignStage::Open, CampaignStage::Reminded, false),
    )
    .await;
    conflict(
        fails(
            &s,
            advance(CampaignStage::Open, CampaignStage::Reminded, false),
        )
        .await,
        "past open",
    );
    ok(
        &s,
        advance(CampaignStage::Reminded, CampaignStage::Escalated, true),
    )
    .await;
    let items = s.review_items(id).await.unwrap();
    assert_eq!(
        items[0].reviewer.name, "security",
        "the undecided one moved"
    );
    assert_eq!(items[1].reviewer.name, "reviewers", "the decided one stays");
    let set = |p| rw(ReviewWrite::SetProposal { id, proposal: p });
    ok(&s, set(7)).await;
    conflict(fails(&s, set(8)).await, "has a proposal already");
    ok(
        &s,
        advance(CampaignStage::Escalated, CampaignStage::Closed, false),
    )
    .await;
    let k = s.review_campaign(id).await.unwrap().unwrap();
    assert_eq!(
        (k.stage, k.closed_at, k.proposal),
        (CampaignStage::Closed, Some(t(30)), Some(7))
    );
    assert_eq!((k.counts.pending, k.counts.revoked), (1, 1));
    whole_chain(&s).await;
}
