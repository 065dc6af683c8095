//! Access reviews: the campaigns a person reviews in, and their items, each kept or revoked
//! with a comment, one at a time (the core checks who may decide what, again).

use crate::Console;
use crate::error::PageResult;
use crate::pages::{html, nav, parse_id};
use crate::session::{Posted, Viewer};
use crate::view::{Nav, short_time};
use askama::Template;
use axum::Router;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use pedm_core::access_review::{Campaign, ItemState, ReviewDecision, ReviewItem};
use serde::Deserialize;

pub fn router() -> Router<Console> {
    Router::new()
        .route("/ui/reviews", get(list))
        .route("/ui/reviews/{id}", get(campaign))
        .route("/ui/reviews/{id}/close", post(close))
        .route("/ui/review-items/{id}", post(decide))
}

struct CampaignRow {
    id: String,
    name: String,
    stage: String,
    due: String,
    counts: String,
}

impl CampaignRow {
    fn new(k: &Campaign) -> Self {
        let c = k.counts;
        CampaignRow {
            id: k.id.to_string(),
            name: k.name.clone(),
            stage: k.stage.to_string(),
            due: short_time(k.due_at),
            counts: format!(
                "{} to decide, {} kept, {} revoked, {} flagged",
                c.pending, c.kept, c.revoked, c.flagged
            ),
        }
    }
}

#[derive(Template)]
#[template(path = "reviews.html")]
struct ListPage {
    nav: Option<Nav>,
    rows: Vec<CampaignRow>,
}

async fn list(State(c): State<Console>, v: Viewer) -> PageResult<Response> {
    let rows =
        c.cp.list_reviews(&v.actor)
            .await?
            .iter()
            .map(CampaignRow::new)
            .collect();
    html(ListPage {
        nav: nav(&c, &v, "reviews"),
        rows,
    })
}

struct ItemRow {
    id: String,
    kind: String,
    user: String,
    detail: String,
    reviewer: String,
    usage: String,
    unused: bool,
    open: bool,
    /// The viewer's own access: someone else decides it.
    own: bool,
    outcome: String,
}

impl ItemRow {
    fn new(i: &ReviewItem, viewer: &str) -> Self {
        let u = &i.usage;
        ItemRow {
            id: i.id.to_string(),
            kind: i.kind.to_string(),
            user: i.user.clone(),
            detail: i.detail.clone(),
            reviewer: i.reviewer.to_string(),
            usage: format!(
                "{} requests, {} grants, {} sessions; last used {}",
                u.requests,
                u.grants,
                u.sessions,
                u.last_used.map_or("never".to_string(), short_time)
            ),
            unused: i.suggested == Some(ReviewDecision::Revoke),
            open: i.state == ItemState::Pending,
            own: i.kind != pedm_core::access_review::ItemKind::Standing
                && i.user.eq_ignore_ascii_case(viewer),
            outcome: format!(
                "{} by {}: {} ({})",
                i.state,
                i.decided_by.as_deref().unwrap_or("?"),
                i.comment.as_deref().unwrap_or(""),
                i.outcome.as_deref().unwrap_or("")
            ),
        }
    }
}

#[derive(Template)]
#[template(path = "review.html")]
struct CampaignPage {
    nav: Option<Nav>,
    csrf: String,
    k: CampaignRow,
    default_action: String,
    closed: bool,
    /// The viewer may close it early (`manage_grants`; the core checks again).
    may_close: bool,
    items: Vec<ItemRow>,
}

async fn campaign(
    State(c): State<Console>,
    v: Viewer,
    Path(id): Path<String>,
) -> PageResult<Response> {
    let id = parse_id(&id)?;
    let view = c.cp.review_view(&v.actor, &id.to_string(), false).await?;
    // Undecided items first.
    let mut items: Vec<ItemRow> = view
        .items
        .iter()
        .map(|i| ItemRow::new(i, &v.actor.user))
        .collect();
    items.sort_by_key(|i| !i.open);
    html(CampaignPage {
        nav: nav(&c, &v, "reviews"),
        csrf: v.csrf.clone(),
        k: CampaignRow::new(&view.campaign),
        default_action: view.campaign.default_action.to_string(),
        closed: view.campaign.stage == pedm_core::access_review::CampaignStage::Closed,
        may_close: c
            .cp
            .may(&v.actor, pedm_core::decision::AdminAction::ManageGrants),
        items,
    })
}

#[derive(Deserialize)]
struct DecideForm {
    decision: String,
    #[serde(default)]
    comment: String,
}

async fn decide(
    State(c): State<Console>,
    Path(id): Path<String>,
    p: Posted<DecideForm>,
) -> PageResult<Response> {
    let id = parse_id(&id)?;
    let decision = ReviewDecision::parse(&p.form.decision).ok_or_else(|| {
        crate::error::PageError::Invalid(format!("unknown decision {:?}", p.form.decision))
    })?;
    let item =
        c.cp.decide_review_item(&p.viewer.actor, id, decision, Some(p.form.comment.clone()))
            .await?;
    Ok(Redirect::to(&format!("/ui/reviews/{}#item-{}", item.campaign, item.id)).into_response())
}

#[derive(Deserialize)]
struct CloseForm {}

async fn close(
    State(c): State<Console>,
    Path(id): Path<String>,
    p: Posted<CloseForm>,
) -> PageResult<Response> {
    let id = parse_id(&id)?;
    let view = c.cp.close_review(&p.viewer.actor, &id.to_string()).await?;
    Ok(Redirect::to(&format!("/ui/reviews/{}", view.campaign.id)).into_response())
}
