//! Policy proposals under two-person control and their approvals (migration 0009), and the
//! approver changes held the same way (migration 0012).

use crate::db::{Arg, Conn, Row, args};
use crate::engine::{Engine, backend, exists, insert, json_text};
use crate::rows::{corrupt, opt_ts, ts};
use pedm_core::policy_review::{
    PolicyProposal, PolicyReviewWrite, ProposalApproval, ProposalState,
};
use pedm_core::store::StoreError;

const PROPOSAL_COLS: &str = "id, base_version, created_at, created_by, comment, digest, sources, \
     diff, required, state, decided_at, decided_by, decision_comment, applied_version, \
     approver_change";

fn proposal(r: &Row) -> Result<PolicyProposal, StoreError> {
    let state: String = r.get("state")?;
    Ok(PolicyProposal {
        id: r.get("id")?,
        base_version: r.get("base_version")?,
        created_at: ts(r, "created_at")?,
        created_by: r.get("created_by")?,
        comment: r.get("comment")?,
        digest: r.get("digest")?,
        sources: serde_json::from_str(&r.get::<String>("sources")?)
            .map_err(|e| corrupt("sources", e))?,
        diff: r.get("diff")?,
        required: r.get("required")?,
        state: ProposalState::parse(&state)
            .ok_or_else(|| corrupt("state", format!("unknown state {state:?}")))?,
        approvals: vec![],
        decided_at: opt_ts(r, "decided_at")?,
        decided_by: r.get("decided_by")?,
        decision_comment: r.get("decision_comment")?,
        applied_version: r.get("applied_version")?,
        change: r
            .get::<Option<String>>("approver_change")?
            .map(|c| serde_json::from_str(&c).map_err(|e| corrupt("approver_change", e)))
            .transpose()?,
        stale: false,
    })
}

fn approval(r: &Row) -> Result<ProposalApproval, StoreError> {
    Ok(ProposalApproval {
        approver: r.get("approver")?,
        at: ts(r, "at")?,
        comment: r.get("comment")?,
    })
}

/// Why a conditional update of proposal `id` matched nothing.
async fn not_updated(c: &mut Conn<'_>, id: i64, why: &str) -> StoreError {
    match exists(c, "SELECT 1 FROM policy_proposals WHERE id = $1", args![id]).await {
        Ok(true) => StoreError::Conflict(format!("policy proposal {id} {why}")),
        Ok(false) => StoreError::NotFound(format!("policy proposal {id} does not exist")),
        Err(e) => e,
    }
}

pub(crate) async fn apply(c: &mut Conn<'_>, w: &PolicyReviewWrite) -> Result<(), StoreError> {
    match w {
        PolicyReviewWrite::Propose(p) => {
            if p.state != ProposalState::Pending {
                return Err(StoreError::Backend(format!(
                    "a new policy proposal must be pending, not {}",
                    p.state
                )));
            }
            insert(
                c,
                &format!(
                    "INSERT INTO policy_proposals ({PROPOSAL_COLS}) VALUES ($1, $2, $3, $4, $5, \
                     $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)"
                ),
                args![
                    p.id,
                    p.base_version,
                    p.created_at,
                    &p.created_by,
                    &p.comment,
                    &p.digest,
                    json_text(&p.sources)?,
                    &p.diff,
                    p.required,
                    p.state.as_str(),
                    p.decided_at,
                    &p.decided_by,
                    &p.decision_comment,
                    p.applied_version,
                    p.change.as_ref().map(json_text).transpose()?
                ],
                || StoreError::AlreadyExists(format!("policy proposal {} already exists", p.id)),
                || {
                    StoreError::Backend(
                        "unexpected foreign key violation inserting a proposal".into(),
                    )
                },
            )
            .await
        }
        PolicyReviewWrite::Approve { id, approval, seen } => {
            let n = c
                .execute(
                    "UPDATE policy_proposals SET approvals = approvals + 1 \
                     WHERE id = $1 AND state = 'pending' AND approvals = $2",
                    args![*id, *seen],
                )
                .await
                .map_err(backend)?;
            if n == 0 {
                return Err(not_updated(
                    c,
                    *id,
                    "is no longer pending or was approved by someone else at the same moment",
                )
                .await);
            }
            insert(
                c,
                "INSERT INTO policy_proposal_approvals (proposal_id, approver, at, comment) \
                 VALUES ($1, $2, $3, $4)",
                args![*id, &approval.approver, approval.at, &approval.comment],
                || {
                    StoreError::Conflict(format!(
                        "{} has already approved policy proposal {id}",
                        approval.approver
                    ))
                },
                || StoreError::NotFound(format!("policy proposal {id} does not exist")),
            )
            .await
        }
        PolicyReviewWrite::Close {
            id,
            state,
            at,
            by,
            comment,
            applied_version,
        } => {
            if *state == ProposalState::Pending {
                return Err(StoreError::Backend(
                    "closing a policy proposal needs applied or rejected".into(),
                ));
            }
            let n = c
                .execute(
                    "UPDATE policy_proposals SET state = $2, decided_at = $3, decided_by = $4, \
                     decision_comment = $5, applied_version = $6 \
                     WHERE id = $1 AND state = 'pending'",
                    args![*id, state.as_str(), *at, by, comment, *applied_version],
                )
                .await
                .map_err(backend)?;
            if n == 0 {
                return Err(not_updated(c, *id, "is no longer pending").await);
            }
            Ok(())
        }
    }
}

impl Engine {
    async fn with_approvals(
        &self,
        mut ps: Vec<PolicyProposal>,
    ) -> Result<Vec<PolicyProposal>, StoreError> {
        for p in &mut ps {
            p.approvals = self
                .fetch_all(
                    "SELECT approver, at, comment FROM policy_proposal_approvals \
                     WHERE proposal_id = $1 ORDER BY at, approver",
                    args![p.id],
                    approval,
                )
                .await?;
        }
        Ok(ps)
    }

    pub(crate) async fn proposal(&self, id: i64) -> Result<Option<PolicyProposal>, StoreError> {
        let sql = format!("SELECT {PROPOSAL_COLS} FROM policy_proposals WHERE id = $1");
        let p = self.fetch_optional(&sql, args![id], proposal).await?;
        Ok(self.with_approvals(p.into_iter().collect()).await?.pop())
    }

    pub(crate) async fn proposals(
        &self,
        state: Option<ProposalState>,
    ) -> Result<Vec<PolicyProposal>, StoreError> {
        let mut sql = format!("SELECT {PROPOSAL_COLS} FROM policy_proposals WHERE 1 = 1");
        let mut a: Vec<Arg> = vec![];
        if let Some(s) = state {
            a.push(s.as_str().into());
            sql.push_str(" AND state = $1");
        }
        sql.push_str(" ORDER BY id DESC");
        let ps = self.fetch_all(&sql, a, proposal).await?;
        self.with_approvals(ps).await
    }

    pub(crate) async fn latest_proposal_id(&self) -> Result<i64, StoreError> {
        let v = self
            .fetch_optional("SELECT MAX(id) AS v FROM policy_proposals", vec![], |r| {
                r.get::<Option<i64>>("v")
            })
            .await?;
        Ok(v.flatten().unwrap_or(0))
    }
}
