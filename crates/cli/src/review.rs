//! `pedm review start|list|show|keep|revoke|close`: access review campaigns.

use crate::args::ReviewCmd;
use crate::ctx::Ctx;
use crate::output::{Table, opt, opt_time, time};
use anyhow::{Result, bail};
use pedm_api::review::*;

/// A campaign as a CLI argument: its id, or a name (never anything that would change the
/// request's path).
fn campaign_key(s: &str) -> Result<&str> {
    if s.is_empty()
        || s.len() > 64
        || !s
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        bail!("{s:?} is not a campaign name or id");
    }
    Ok(s)
}

fn usage(u: &Usage) -> String {
    let last = u.last_used.map_or("never".to_string(), time);
    format!(
        "{} req / {} grants / {} sessions, last {last}",
        u.requests, u.grants, u.sessions
    )
}

fn counts(c: &ItemCounts) -> String {
    format!(
        "{} pending, {} kept, {} revoked, {} flagged",
        c.pending, c.kept, c.revoked, c.flagged
    )
}

const ITEM_COLUMNS: [&str; 9] = [
    "ITEM",
    "KIND",
    "USER",
    "WHAT",
    "REVIEWER",
    "USE",
    "SUGGESTED",
    "STATE",
    "OUTCOME",
];

fn item_rows(t: &mut Table, items: &[ReviewItem]) {
    for i in items {
        t.row(vec![
            i.id.to_string(),
            i.kind.to_string(),
            i.user.clone(),
            i.detail.clone(),
            i.reviewer.to_string(),
            usage(&i.usage),
            i.suggested.map(|s| s.to_string()).unwrap_or_default(),
            i.state.to_string(),
            opt(&i.outcome),
        ]);
    }
}

fn campaign_text(k: &Campaign) -> String {
    let mut t = Table::plain();
    for (name, value) in [
        ("campaign", format!("{} ({})", k.name, k.id)),
        ("stage", k.stage.to_string()),
        ("due", time(k.due_at)),
        ("default", k.default_action.to_string()),
        ("reviewers", k.reviewers.clone()),
        ("escalate to", k.escalate_to.clone()),
        ("evidence", format!("the last {} days", k.unused_days)),
        ("items", counts(&k.counts)),
        (
            "started",
            format!("{} by {}", time(k.created_at), k.created_by),
        ),
        ("closed", opt_time(k.closed_at)),
        (
            "proposal",
            k.proposal.map_or(String::new(), |p| {
                format!("{p} (`pedm policy pending`: approve it to forbid the revoked eligibility)")
            }),
        ),
    ] {
        t.row(vec![name.to_uppercase(), value]);
    }
    t.render()
}

fn view_text(v: &CampaignView) -> String {
    let mut t = Table::new(&ITEM_COLUMNS);
    item_rows(&mut t, &v.items);
    format!("{}\n{}", campaign_text(&v.campaign), t.render())
}

pub async fn run(ctx: &Ctx, c: ReviewCmd) -> Result<()> {
    match c {
        ReviewCmd::Start {
            name,
            kinds,
            targets,
            due,
            default,
            reviewers,
            escalate_to,
            unused_days,
        } => {
            let kinds = kinds
                .iter()
                .map(|k| {
                    ItemKind::parse(k.trim()).ok_or_else(|| {
                        anyhow::anyhow!("unknown item kind {k:?} (one of: {})", ItemKind::words())
                    })
                })
                .collect::<Result<Vec<_>>>()?;
            let default = default
                .map(|d| {
                    DefaultAction::parse(&d).ok_or_else(|| {
                        anyhow::anyhow!("--default is {d:?}; one of: {}", DefaultAction::words())
                    })
                })
                .transpose()?;
            let body = StartReview {
                name,
                kinds,
                targets,
                due: due.canonical(),
                default,
                reviewers,
                escalate_to,
                unused_days,
            };
            let v = ctx.client.start_review(&body).await?;
            ctx.emit(&v, || view_text(&v))
        }
        ReviewCmd::List => {
            let all = ctx.client.list_reviews().await?;
            ctx.emit(&all, || {
                let mut t = Table::new(&["NAME", "STAGE", "DUE", "DEFAULT", "ITEMS", "PROPOSAL"]);
                for k in &all {
                    t.row(vec![
                        k.name.clone(),
                        k.stage.to_string(),
                        time(k.due_at),
                        k.default_action.to_string(),
                        counts(&k.counts),
                        k.proposal.map(|p| p.to_string()).unwrap_or_default(),
                    ]);
                }
                t.render()
            })
        }
        ReviewCmd::Show { campaign, mine } => {
            let v = ctx
                .client
                .get_review(campaign_key(&campaign)?, mine)
                .await?;
            ctx.emit(&v, || view_text(&v))
        }
        ReviewCmd::Keep { item, comment } => decide(ctx, item, ReviewDecision::Keep, comment).await,
        ReviewCmd::Revoke { item, comment } => {
            decide(ctx, item, ReviewDecision::Revoke, comment).await
        }
        ReviewCmd::Close { campaign } => {
            let v = ctx.client.close_review(campaign_key(&campaign)?).await?;
            ctx.emit(&v, || view_text(&v))
        }
    }
}

async fn decide(
    ctx: &Ctx,
    item: uuid::Uuid,
    decision: ReviewDecision,
    comment: String,
) -> Result<()> {
    let i = ctx
        .client
        .decide_review_item(item, &DecideItem { decision, comment })
        .await?;
    ctx.emit(&i, || {
        let mut t = Table::new(&ITEM_COLUMNS);
        item_rows(&mut t, std::slice::from_ref(&i));
        t.render()
    })
}

/// `pedm policy owners`: each policy in force, its owner and review date.
pub async fn owners(ctx: &Ctx, overdue: bool) -> Result<()> {
    let all = ctx.client.policy_owners(overdue).await?;
    ctx.emit(&all, || {
        let mut t = Table::new(&["POLICY", "FILE", "OWNER", "REVIEW BY", "STATUS"]);
        for p in &all {
            t.row(vec![
                p.policy.clone(),
                p.file.clone(),
                opt(&p.owner),
                p.review_by.map(|d| d.to_string()).unwrap_or_default(),
                p.status.clone(),
            ]);
        }
        t.render()
    })
}
