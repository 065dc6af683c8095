//! Access review campaigns and their items (migration 0031).

use crate::db::{Conn, Row, args};
use crate::engine::{Engine, backend, exists, insert, json_text};
use crate::rows::{corrupt, json, opt_ts, opt_uuid, ts, uuid};
use pedm_core::access_review::*;
use pedm_core::delegation::{DelegateKind, Delegatee};
use pedm_core::store::StoreError;
use uuid::Uuid;

const CAMPAIGN_COLS: &str = "id, name, scope, created_by, created_at, due_at, default_action, \
     reviewers, escalate_to, unused_days, stage, closed_at, proposal";
const ITEM_COLS: &str = "id, campaign, kind, subject_user, target, role, group_name, \
     delegation, detail, reviewer_kind, reviewer, usage, suggested, state, comment, decided_by, \
     decided_at, outcome";

fn word<T>(r: &Row, col: &str, parse: fn(&str) -> Option<T>) -> Result<T, StoreError> {
    let s: String = r.get(col)?;
    parse(&s).ok_or_else(|| corrupt(col, s))
}

fn campaign(r: &Row) -> Result<Campaign, StoreError> {
    Ok(Campaign {
        id: uuid(r, "id")?,
        name: r.get("name")?,
        scope: json(r, "scope")?,
        created_by: r.get("created_by")?,
        created_at: ts(r, "created_at")?,
        due_at: ts(r, "due_at")?,
        default_action: word(r, "default_action", DefaultAction::parse)?,
        reviewers: r.get("reviewers")?,
        escalate_to: r.get("escalate_to")?,
        unused_days: r.get("unused_days")?,
        stage: word(r, "stage", CampaignStage::parse)?,
        closed_at: opt_ts(r, "closed_at")?,
        proposal: r.get("proposal")?,
        counts: ItemCounts::default(),
    })
}

fn delegate_kind(s: &str) -> Option<DelegateKind> {
    match s {
        "user" => Some(DelegateKind::User),
        "group" => Some(DelegateKind::Group),
        _ => None,
    }
}

fn delegate_word(k: DelegateKind) -> &'static str {
    match k {
        DelegateKind::User => "user",
        DelegateKind::Group => "group",
    }
}

fn item(r: &Row) -> Result<ReviewItem, StoreError> {
    let suggested: Option<String> = r.get("suggested")?;
    Ok(ReviewItem {
        id: uuid(r, "id")?,
        campaign: uuid(r, "campaign")?,
        kind: word(r, "kind", ItemKind::parse)?,
        user: r.get("subject_user")?,
        target: r.get("target")?,
        role: r.get("role")?,
        group: r.get("group_name")?,
        delegation: opt_uuid(r, "delegation")?,
        detail: r.get("detail")?,
        reviewer: Delegatee {
            kind: word(r, "reviewer_kind", delegate_kind)?,
            name: r.get("reviewer")?,
        },
        usage: json(r, "usage")?,
        suggested: suggested
            .map(|s| ReviewDecision::parse(&s).ok_or_else(|| corrupt("suggested", s)))
            .transpose()?,
        state: word(r, "state", ItemState::parse)?,
        comment: r.get("comment")?,
        decided_by: r.get("decided_by")?,
        decided_at: opt_ts(r, "decided_at")?,
        outcome: r.get("outcome")?,
    })
}

async fn insert_item(c: &mut Conn<'_>, i: &ReviewItem) -> Result<(), StoreError> {
    insert(
        c,
        &format!(
            "INSERT INTO review_items ({ITEM_COLS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, \
             $10, $11, $12, $13, $14, $15, $16, $17, $18)"
        ),
        args![
            i.id,
            i.campaign,
            i.kind.as_str(),
            &i.user,
            &i.target,
            &i.role,
            &i.group,
            i.delegation,
            &i.detail,
            delegate_word(i.reviewer.kind),
            &i.reviewer.name,
            json_text(&i.usage)?,
            i.suggested.map(|s| s.as_str()),
            i.state.as_str(),
            &i.comment,
            &i.decided_by,
            i.decided_at,
            &i.outcome
        ],
        || StoreError::AlreadyExists(format!("review item {}", i.id)),
        || StoreError::NotFound(format!("campaign {}", i.campaign)),
    )
    .await
}

pub(crate) async fn apply(c: &mut Conn<'_>, w: &ReviewWrite) -> Result<(), StoreError> {
    match w {
        ReviewWrite::Start { campaign: k, items } => {
            insert(
                c,
                &format!(
                    "INSERT INTO review_campaigns ({CAMPAIGN_COLS}) VALUES ($1, $2, $3, $4, $5, \
                     $6, $7, $8, $9, $10, $11, $12, $13)"
                ),
                args![
                    k.id,
                    &k.name,
                    json_text(&k.scope)?,
                    &k.created_by,
                    k.created_at,
                    k.due_at,
                    k.default_action.as_str(),
                    &k.reviewers,
                    &k.escalate_to,
                    k.unused_days,
                    k.stage.as_str(),
                    k.closed_at,
                    k.proposal
                ],
                || StoreError::AlreadyExists(format!("a campaign named {}", k.name)),
                || StoreError::Backend("unexpected foreign key violation".into()),
            )
            .await?;
            for i in items {
                insert_item(c, i).await?;
            }
            Ok(())
        }
        ReviewWrite::Decide {
            id,
            state,
            comment,
            by,
            at,
            outcome,
        } => {
            let n = c
                .execute(
                    "UPDATE review_items SET state = $2, comment = $3, decided_by = $4, \
                     decided_at = $5, outcome = $6 WHERE id = $1 AND state = 'pending'",
                    args![*id, state.as_str(), comment, by, *at, outcome],
                )
                .await
                .map_err(backend)?;
            if n == 0 {
                return Err(
                    match exists(c, "SELECT 1 FROM review_items WHERE id = $1", args![*id]).await? {
                        true => {
                            StoreError::Conflict(format!("review item {id} is decided already"))
                        }
                        false => StoreError::NotFound(format!("review item {id}")),
                    },
                );
            }
            Ok(())
        }
        ReviewWrite::Advance {
            id,
            from,
            to,
            at,
            escalate_to,
        } => {
            let closed_at = (*to == CampaignStage::Closed).then_some(*at);
            let n = c
                .execute(
                    "UPDATE review_campaigns SET stage = $3, closed_at = $4 \
                     WHERE id = $1 AND stage = $2",
                    args![*id, from.as_str(), to.as_str(), closed_at],
                )
                .await
                .map_err(backend)?;
            if n == 0 {
                return Err(
                    match exists(
                        c,
                        "SELECT 1 FROM review_campaigns WHERE id = $1",
                        args![*id],
                    )
                    .await?
                    {
                        true => StoreError::Conflict(format!("campaign {id} is past {from}")),
                        false => StoreError::NotFound(format!("campaign {id}")),
                    },
                );
            }
            if let Some(r) = escalate_to {
                c.execute(
                    "UPDATE review_items SET reviewer_kind = $2, reviewer = $3 \
                     WHERE campaign = $1 AND state = 'pending'",
                    args![*id, delegate_word(r.kind), &r.name],
                )
                .await
                .map_err(backend)?;
            }
            Ok(())
        }
        ReviewWrite::SetProposal { id, proposal } => {
            let n = c
                .execute(
                    "UPDATE review_campaigns SET proposal = $2 WHERE id = $1 AND proposal IS NULL",
                    args![*id, *proposal],
                )
                .await
                .map_err(backend)?;
            if n == 0 {
                return Err(StoreError::Conflict(format!(
                    "campaign {id} has a proposal already, or does not exist"
                )));
            }
            Ok(())
        }
    }
}

impl Engine {
    /// Every campaign, newest first, with its items counted.
    pub(crate) async fn campaign_rows(&self) -> Result<Vec<Campaign>, StoreError> {
        let sql = format!("SELECT {CAMPAIGN_COLS} FROM review_campaigns ORDER BY created_at DESC");
        let mut all = self.fetch_all(&sql, vec![], campaign).await?;
        let counts = self
            .fetch_all(
                "SELECT campaign, state, COUNT(*) AS n FROM review_items GROUP BY campaign, state",
                vec![],
                |r| {
                    Ok((
                        uuid(r, "campaign")?,
                        word(r, "state", ItemState::parse)?,
                        r.get::<i64>("n")?,
                    ))
                },
            )
            .await?;
        for k in &mut all {
            for (_, state, n) in counts.iter().filter(|(c, _, _)| *c == k.id) {
                count(&mut k.counts, *state, *n as u64);
            }
        }
        Ok(all)
    }

    pub(crate) async fn campaign_row(&self, id: Uuid) -> Result<Option<Campaign>, StoreError> {
        let sql = format!("SELECT {CAMPAIGN_COLS} FROM review_campaigns WHERE id = $1");
        let Some(mut k) = self.fetch_optional(&sql, args![id], campaign).await? else {
            return Ok(None);
        };
        for i in self.review_item_rows(id).await? {
            count(&mut k.counts, i.state, 1);
        }
        Ok(Some(k))
    }

    pub(crate) async fn review_item_rows(
        &self,
        campaign_id: Uuid,
    ) -> Result<Vec<ReviewItem>, StoreError> {
        let sql = format!(
            "SELECT {ITEM_COLS} FROM review_items WHERE campaign = $1 \
             ORDER BY kind, target, role, group_name, subject_user, id"
        );
        self.fetch_all(&sql, args![campaign_id], item).await
    }

    pub(crate) async fn review_item_row(&self, id: Uuid) -> Result<Option<ReviewItem>, StoreError> {
        let sql = format!("SELECT {ITEM_COLS} FROM review_items WHERE id = $1");
        self.fetch_optional(&sql, args![id], item).await
    }
}

fn count(c: &mut ItemCounts, state: ItemState, n: u64) {
    match state {
        ItemState::Pending => c.pending += n,
        ItemState::Kept => c.kept += n,
        ItemState::Revoked => c.revoked += n,
        ItemState::Flagged => c.flagged += n,
    }
}
