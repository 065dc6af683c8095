//! `pedm policy pending|approve|reject`: two-person control of policy changes.

use crate::ctx::Ctx;
use crate::output;
use anyhow::Result;
use pedm_api::policy_review::{PolicyProposal, ProposalState};

fn approvers(p: &PolicyProposal) -> String {
    if p.approvals.is_empty() {
        return "none yet".into();
    }
    p.approvals
        .iter()
        .map(|a| a.approver.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// One proposal for people: who, on top of what, how far along, and the diff.
fn text(p: &PolicyProposal) -> String {
    let mut out = match &p.change {
        Some(change) => format!(
            "proposal {} by {} at {} to {}: {}",
            p.id,
            p.created_by,
            output::time(p.created_at),
            change,
            p.state
        ),
        None => format!(
            "policy proposal {} by {} at {} on top of version {}: {}",
            p.id,
            p.created_by,
            output::time(p.created_at),
            p.base_version,
            p.state
        ),
    };
    match p.state {
        ProposalState::Pending => out.push_str(&format!(
            ", {} of {} approvals ({})",
            p.approvals.len(),
            p.required,
            approvers(p)
        )),
        ProposalState::Applied => match p.applied_version {
            Some(v) => out.push_str(&format!(" as version {v} (approved by {})", approvers(p))),
            None => out.push_str(&format!(" (approved by {})", approvers(p))),
        },
        ProposalState::Rejected => out.push_str(&format!(
            " by {} ({})",
            p.decided_by.as_deref().unwrap_or("?"),
            p.decision_comment.as_deref().unwrap_or("")
        )),
    }
    out.push('\n');
    if p.stale {
        out.push_str(&format!(
            "  STALE: version {} is no longer in force; it cannot be approved (reject it and \
             apply again)\n",
            p.base_version
        ));
    }
    if let Some(c) = &p.comment {
        out.push_str(&format!("  comment: {c}\n"));
    }
    if p.diff.is_empty() {
        out.push_str("  (no textual change)\n");
    } else {
        out.push_str(&p.diff);
        if !p.diff.ends_with('\n') {
            out.push('\n');
        }
    }
    out
}

/// What `pedm policy apply` says when the set became a proposal.
pub fn proposed(ctx: &Ctx, p: &PolicyProposal) -> Result<()> {
    ctx.emit(p, || {
        format!(
            "policy set NOT in force yet: pending as proposal {} on top of version {} (it would \
             become version {}); it waits for {} approvals by other admins (pedm policy approve \
             {})\n",
            p.id,
            p.base_version,
            p.base_version + 1,
            p.required,
            p.id
        )
    })
}

/// What `pedm group add-member` or `pedm user set-admin` says when the change was held.
pub fn held(ctx: &Ctx, p: &PolicyProposal) -> Result<()> {
    ctx.emit(p, || {
        let what = p
            .change
            .as_ref()
            .map_or_else(|| "the change".to_string(), ToString::to_string);
        format!(
            "NOT done yet: changes to who approves need approvals; \"{what}\" is pending as \
             proposal {} and waits for {} approvals by other admins (pedm policy approve {})\n",
            p.id, p.required, p.id
        )
    })
}

pub async fn pending(ctx: &Ctx, all: bool) -> Result<()> {
    let ps = ctx.client.policy_proposals(all).await?;
    ctx.emit(&ps, || {
        if ps.is_empty() {
            return "no policy proposals waiting\n".into();
        }
        ps.iter().map(text).collect::<Vec<_>>().join("\n")
    })
}

pub async fn approve(ctx: &Ctx, id: i64, comment: Option<String>) -> Result<()> {
    let p = ctx.client.approve_policy_proposal(id, comment).await?;
    ctx.emit(&p, || match (p.state, &p.change) {
        (ProposalState::Applied, Some(change)) => {
            format!("proposal {id} approved; done: {change}\n")
        }
        (ProposalState::Applied, None) => format!(
            "policy proposal {id} approved; it is in force as version {}\n",
            p.applied_version.unwrap_or_default()
        ),
        _ => format!(
            "policy proposal {id} approved ({} of {} approvals)\n",
            p.approvals.len(),
            p.required
        ),
    })
}

pub async fn reject(ctx: &Ctx, id: i64, comment: String) -> Result<()> {
    let p = ctx.client.reject_policy_proposal(id, &comment).await?;
    ctx.emit(&p, || {
        format!("policy proposal {id} rejected; it will never take effect\n")
    })
}
