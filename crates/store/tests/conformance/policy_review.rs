//! Policy proposals (two-person control): numbering, one approval per approver, approvals
//! counted with a precondition so concurrent ones are never lost, closing exactly once, and
//! applying in the same transaction as the version it becomes.

use super::*;
use pedm_core::policy_review::{
    ApproverChange, PolicyProposal, PolicyReviewWrite, ProposalApproval, ProposalState,
};

fn proposal(id: i64, base: i64) -> PolicyProposal {
    PolicyProposal {
        id,
        base_version: base,
        created_at: t(id),
        created_by: "alice".into(),
        comment: Some(format!("p{id}")),
        digest: format!("{id:064}"),
        sources: vec![PolicySource {
            name: "p.cedar".into(),
            text: format!("// proposal {id}\npermit(principal, action, resource);"),
        }],
        diff: format!("+// proposal {id}\n"),
        required: 2,
        state: ProposalState::Pending,
        approvals: vec![],
        decided_at: None,
        decided_by: None,
        decision_comment: None,
        applied_version: None,
        change: None,
        stale: false,
    }
}

fn pw(w: PolicyReviewWrite) -> Changeset {
    cs(Write::PolicyReview(w))
}

fn approve(id: i64, who: &str, seen: i64) -> PolicyReviewWrite {
    PolicyReviewWrite::Approve {
        id,
        approval: ProposalApproval {
            approver: who.into(),
            at: t(20 + seen),
            comment: Some(format!("ok from {who}")),
        },
        seen,
    }
}

fn close(id: i64, state: ProposalState, applied_version: Option<i64>) -> PolicyReviewWrite {
    PolicyReviewWrite::Close {
        id,
        state,
        at: t(30),
        by: "carol".into(),
        comment: Some("done".into()),
        applied_version,
    }
}

fn version(n: i64) -> PolicyVersion {
    PolicyVersion {
        version: n,
        created_at: t(n),
        created_by: "admin".into(),
        comment: None,
        digest: format!("{n:064}"),
        sources: vec![],
    }
}

pub(crate) async fn policy_proposals_and_approvals(db: Db) {
    let s = db.open().await;
    assert_eq!(s.latest_policy_proposal_id().await.unwrap(), 0);
    assert_eq!(s.policy_proposal(1).await.unwrap(), None);
    ok(&s, cs(Write::InsertPolicyVersion(version(1)))).await;
    ok(&s, pw(PolicyReviewWrite::Propose(Box::new(proposal(1, 1))))).await;
    ok(&s, pw(PolicyReviewWrite::Propose(Box::new(proposal(2, 1))))).await;
    exists(
        fails(&s, pw(PolicyReviewWrite::Propose(Box::new(proposal(2, 1))))).await,
        "policy proposal 2",
    );
    assert_eq!(s.latest_policy_proposal_id().await.unwrap(), 2);
    assert_eq!(s.policy_proposal(1).await.unwrap(), Some(proposal(1, 1)));

    // Approvals: counted with a precondition, once per approver.
    ok(&s, pw(approve(1, "bob", 0))).await;
    conflict(
        fails(&s, pw(approve(1, "dave", 0))).await,
        "at the same moment",
    );
    conflict(
        fails(&s, pw(approve(1, "bob", 1))).await,
        "already approved",
    );
    not_found(fails(&s, pw(approve(9, "bob", 0))).await, "does not exist");
    let one = s.policy_proposal(1).await.unwrap().unwrap();
    assert_eq!(one.approvals.len(), 1);
    assert_eq!(one.approvals[0].approver, "bob");
    assert_eq!(one.approvals[0].comment.as_deref(), Some("ok from bob"));
    assert_eq!(one.approvals[0].at, t(20));

    // The last approval, the close and the version it becomes: all or nothing. A version
    // that does not follow the newest refuses the whole changeset.
    let refused = Changeset::new()
        .write(Write::PolicyReview(approve(1, "carol", 1)))
        .write(Write::PolicyReview(close(
            1,
            ProposalState::Applied,
            Some(3),
        )))
        .write(Write::InsertPolicyVersion(version(3)))
        .event(ev("policy.applied", "policy:3"));
    conflict(fails(&s, refused).await, "cannot follow");
    let still = s.policy_proposal(1).await.unwrap().unwrap();
    assert_eq!(
        (still.state, still.approvals.len()),
        (ProposalState::Pending, 1)
    );
    let applied = Changeset::new()
        .write(Write::PolicyReview(approve(1, "carol", 1)))
        .write(Write::PolicyReview(close(
            1,
            ProposalState::Applied,
            Some(2),
        )))
        .write(Write::InsertPolicyVersion(version(2)))
        .event(ev("policy.applied", "policy:2"));
    ok(&s, applied).await;
    let done = s.policy_proposal(1).await.unwrap().unwrap();
    assert_eq!(done.state, ProposalState::Applied);
    assert_eq!(done.applied_version, Some(2));
    assert_eq!(done.decided_by.as_deref(), Some("carol"));
    assert_eq!(done.decided_at, Some(t(30)));
    assert_eq!(
        done.approvals
            .iter()
            .map(|a| a.approver.as_str())
            .collect::<Vec<_>>(),
        ["bob", "carol"]
    );
    assert_eq!(s.latest_policy_version_number().await.unwrap(), Some(2));

    // Closed exactly once; a closed proposal takes no more approvals.
    conflict(
        fails(&s, pw(close(1, ProposalState::Rejected, None))).await,
        "no longer pending",
    );
    conflict(
        fails(&s, pw(approve(1, "dave", 2))).await,
        "no longer pending",
    );
    ok(&s, pw(close(2, ProposalState::Rejected, None))).await;
    let rejected = s.policy_proposal(2).await.unwrap().unwrap();
    assert_eq!(rejected.state, ProposalState::Rejected);
    assert_eq!(rejected.decision_comment.as_deref(), Some("done"));
    not_found(
        fails(&s, pw(close(9, ProposalState::Rejected, None))).await,
        "does not exist",
    );

    // Listing: newest first, by state.
    ok(&s, pw(PolicyReviewWrite::Propose(Box::new(proposal(3, 2))))).await;
    let ids = |ps: Vec<PolicyProposal>| ps.into_iter().map(|p| p.id).collect::<Vec<_>>();
    assert_eq!(ids(s.policy_proposals(None).await.unwrap()), [3, 2, 1]);
    assert_eq!(
        ids(s
            .policy_proposals(Some(ProposalState::Pending))
            .await
            .unwrap()),
        [3]
    );
    assert_eq!(
        ids(s
            .policy_proposals(Some(ProposalState::Applied))
            .await
            .unwrap()),
        [1]
    );
    // A held change to who approves is kept as written, with no sources.
    let held = PolicyProposal {
        sources: vec![],
        change: Some(ApproverChange::GroupMember {
            group: "security".into(),
            user: "mallory's friend".into(),
        }),
        ..proposal(4, 2)
    };
    ok(&s, pw(PolicyReviewWrite::Propose(Box::new(held.clone())))).await;
    assert_eq!(s.policy_proposal(4).await.unwrap(), Some(held));
    ok(&s, pw(close(4, ProposalState::Rejected, None))).await;
    whole_chain(&s).await;

    // Concurrent approvals of one proposal, each as the first: exactly one wins.
    let mut tasks = vec![];
    for who in ["u1", "u2", "u3", "u4"] {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            s.commit(pw(approve(3, who, 0))).await.is_ok()
        }));
    }
    let mut wins = 0;
    for t in tasks {
        wins += usize::from(t.await.unwrap());
    }
    assert_eq!(wins, 1);
    assert_eq!(
        s.policy_proposal(3).await.unwrap().unwrap().approvals.len(),
        1
    );

    // Everything is still there after reopening.
    drop(s);
    let s = db.open().await;
    assert_eq!(s.policy_proposal(1).await.unwrap(), Some(done));
    whole_chain(&s).await;
}
