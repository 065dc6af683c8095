//! Break-glass reviews: every emergency grant, the open reviews first, closed with what the
//! reviewer found (`manage_grants`; never by the person who broke the glass: the core refuses
//! that). One at a time: no bulk closing.

use crate::Console;
use crate::error::PageResult;
use crate::pages::{html, nav, parse_id};
use crate::session::{Posted, Viewer};
use crate::view::{Nav, RequestRow};
use askama::Template;
use axum::Router;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use pedm_core::model::ReviewState;
use serde::Deserialize;

pub fn router() -> Router<Console> {
    Router::new()
        .route("/ui/break-glass", get(list))
        .route("/ui/break-glass/{id}/review", post(review))
}

struct ReviewRow {
    r: RequestRow,
    open: bool,
    outcome: String,
}

#[derive(Template)]
#[template(path = "break_glass.html")]
struct ListPage {
    nav: Option<Nav>,
    csrf: String,
    rows: Vec<ReviewRow>,
}

async fn list(State(c): State<Console>, v: Viewer) -> PageResult<Response> {
    let mut all = c.cp.break_glass_requests(&v.actor, false).await?;
    // Open reviews first, then the newest.
    all.sort_by_key(|r| {
        (
            r.review
                .as_ref()
                .is_none_or(|x| x.state != ReviewState::Open),
            std::cmp::Reverse(r.created_at),
        )
    });
    let rows = all
        .iter()
        .map(|r| {
            let review = r.review.as_ref();
            let open = review.is_some_and(|x| x.state == ReviewState::Open);
            ReviewRow {
                r: RequestRow::new(r, &[]),
                open,
                outcome: review
                    .filter(|_| !open)
                    .map(|x| {
                        format!(
                            "closed by {}{}",
                            x.reviewed_by.as_deref().unwrap_or("?"),
                            x.comment
                                .as_deref()
                                .map(|c| format!(": {c}"))
                                .unwrap_or_default()
                        )
                    })
                    .unwrap_or_default(),
            }
        })
        .collect();
    html(ListPage {
        nav: nav(&c, &v, "break-glass"),
        csrf: v.csrf.clone(),
        rows,
    })
}

#[derive(Deserialize)]
struct ReviewForm {
    #[serde(default)]
    comment: String,
}

async fn review(
    State(c): State<Console>,
    Path(id): Path<String>,
    p: Posted<ReviewForm>,
) -> PageResult<Response> {
    let id = parse_id(&id)?;
    let comment = Some(p.form.comment.trim().to_string()).filter(|c| !c.is_empty());
    c.cp.review_break_glass(&p.viewer.actor, id, comment)
        .await?;
    Ok(Redirect::to("/ui/break-glass").into_response())
}
