//! Policies for the people who own them: every version, any version's files, the diff
//! between any two, and a draft edited in the page, simulated against recorded requests
//! (what would change, and the recommendations) before it is applied, or proposed where
//! changes need approvals. The same core calls, checks and audit events as the CLI.

use crate::Console;
use crate::error::{PageError, PageResult, message_of, status_of};
use crate::pages::{html, nav};
use crate::session::{Posted, Viewer};
use crate::view::{Nav, short_time};
use askama::Template;
use axum::Router;
use axum::extract::{Path, Query, State};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::get;
use jiff::SignedDuration;
use pedm_core::model::{PolicySource, PolicyVersion};
use pedm_core::service::{PolicySubmission, SimulationReport, policy_diff};
use serde::Deserialize;

pub fn router() -> Router<Console> {
    Router::new()
        .route("/ui/policies", get(versions))
        .route("/ui/policies/diff", get(diff))
        .route("/ui/policies/draft", get(draft).post(draft_post))
        .route("/ui/policies/{version}", get(version))
}

struct VersionRow {
    version: i64,
    at: String,
    by: String,
    comment: String,
    digest: String,
}

#[derive(Template)]
#[template(path = "policies.html")]
struct VersionsPage {
    nav: Option<Nav>,
    rows: Vec<VersionRow>,
    latest: i64,
    previous: i64,
}

async fn versions(State(c): State<Console>, v: Viewer) -> PageResult<Response> {
    let mut all = c.cp.list_policy_versions(&v.actor).await?;
    all.sort_by_key(|p| std::cmp::Reverse(p.version));
    let latest = all.first().map_or(0, |p| p.version);
    html(VersionsPage {
        nav: nav(&c, &v, "policies"),
        previous: all.get(1).map_or(latest, |p| p.version),
        latest,
        rows: all
            .iter()
            .map(|p| VersionRow {
                version: p.version,
                at: short_time(p.created_at),
                by: p.created_by.clone(),
                comment: p.comment.clone().unwrap_or_default(),
                digest: p.digest.chars().take(12).collect(),
            })
            .collect(),
    })
}

#[derive(Template)]
#[template(path = "policy_version.html")]
struct VersionPage {
    nav: Option<Nav>,
    version: i64,
    at: String,
    by: String,
    comment: String,
    sources: Vec<PolicySource>,
}

fn parse_version(s: &str) -> PageResult<i64> {
    s.parse::<i64>()
        .ok()
        .filter(|v| *v > 0)
        .ok_or_else(|| PageError::Invalid(format!("invalid policy version {s:?}")))
}

async fn version(
    State(c): State<Console>,
    v: Viewer,
    Path(ver): Path<String>,
) -> PageResult<Response> {
    let p =
        c.cp.get_policies(&v.actor, Some(parse_version(&ver)?))
            .await?;
    html(VersionPage {
        nav: nav(&c, &v, "policies"),
        version: p.version,
        at: short_time(p.created_at),
        by: p.created_by,
        comment: p.comment.unwrap_or_default(),
        sources: p.sources,
    })
}

/// One line of a unified diff, classed for colour (and marked by its first character for
/// those who cannot see colour).
struct DiffLine {
    class: &'static str,
    text: String,
}

fn diff_lines(d: &str) -> Vec<DiffLine> {
    d.lines()
        .map(|l| DiffLine {
            class: match l.as_bytes().first() {
                Some(b'+') if !l.starts_with("+++") => "add",
                Some(b'-') if !l.starts_with("---") => "del",
                Some(b'@') => "hunk",
                _ => "ctx",
            },
            text: l.to_string(),
        })
        .collect()
}

#[derive(Template)]
#[template(path = "policy_diff.html")]
struct DiffPage {
    nav: Option<Nav>,
    from: i64,
    to: i64,
    lines: Vec<DiffLine>,
}

#[derive(Deserialize)]
struct DiffQuery {
    #[serde(default)]
    from: String,
    #[serde(default)]
    to: String,
}

async fn diff(
    State(c): State<Console>,
    v: Viewer,
    Query(q): Query<DiffQuery>,
) -> PageResult<Response> {
    let (from, to) = (parse_version(&q.from)?, parse_version(&q.to)?);
    let a = c.cp.get_policies(&v.actor, Some(from)).await?;
    let b = c.cp.get_policies(&v.actor, Some(to)).await?;
    html(DiffPage {
        nav: nav(&c, &v, "policies"),
        from,
        to,
        lines: diff_lines(&policy_diff(&a.sources, &b.sources)),
    })
}

#[derive(Default, Deserialize)]
struct DraftForm {
    #[serde(default)]
    file: String,
    #[serde(default)]
    text: String,
    #[serde(default)]
    comment: String,
    #[serde(default)]
    days: String,
    #[serde(default)]
    action: String,
}

#[derive(Template)]
#[template(path = "policy_draft.html")]
struct DraftPage {
    nav: Option<Nav>,
    csrf: String,
    files: Vec<String>,
    form: DraftForm,
    base: i64,
    report: Option<SimulationReport>,
    lines: Vec<DiffLine>,
    error: Option<String>,
    notice: Option<String>,
}

#[derive(Deserialize)]
struct DraftQuery {
    #[serde(default)]
    file: String,
}

async fn current(c: &Console, v: &Viewer) -> PageResult<Option<PolicyVersion>> {
    match c.cp.get_policies(&v.actor, None).await {
        Ok(p) => Ok(Some(p)),
        Err(pedm_core::Error::NotFound(_)) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// A draft starts as one file of the set in force (or a new file).
async fn draft(
    State(c): State<Console>,
    v: Viewer,
    Query(q): Query<DraftQuery>,
) -> PageResult<Response> {
    let cur = current(&c, &v).await?;
    let sources = cur.as_ref().map(|p| p.sources.clone()).unwrap_or_default();
    let file = if q.file.is_empty() {
        sources.first().map(|s| s.name.clone()).unwrap_or_default()
    } else {
        q.file
    };
    let text = sources
        .iter()
        .find(|s| s.name == file)
        .map(|s| s.text.clone())
        .unwrap_or_default();
    html(DraftPage {
        nav: nav(&c, &v, "policies"),
        csrf: v.csrf.clone(),
        files: sources.iter().map(|s| s.name.clone()).collect(),
        form: DraftForm {
            file,
            text,
            days: "30".into(),
            ..Default::default()
        },
        base: cur.map_or(0, |p| p.version),
        report: None,
        lines: vec![],
        error: None,
        notice: None,
    })
}

async fn draft_post(State(c): State<Console>, p: Posted<DraftForm>) -> PageResult<Response> {
    let v = &p.viewer;
    let f = p.form;
    let cur = current(&c, v).await?;
    let base = cur.as_ref().map_or(0, |p| p.version);
    let old = cur.map(|p| p.sources).unwrap_or_default();
    // The draft: the set in force with this one file replaced (an empty text removes it).
    let mut sources: Vec<PolicySource> = old.iter().filter(|s| s.name != f.file).cloned().collect();
    if !f.text.trim().is_empty() {
        sources.push(PolicySource {
            name: f.file.clone(),
            // Browsers send CRLF from a textarea; the files are kept as written elsewhere.
            text: f.text.replace("\r\n", "\n"),
        });
    }
    sources.sort_by(|a, b| a.name.cmp(&b.name));
    let page = |report, error: Option<String>, notice: Option<String>, f: DraftForm| DraftPage {
        nav: nav(&c, v, "policies"),
        csrf: v.csrf.clone(),
        files: old.iter().map(|s| s.name.clone()).collect(),
        lines: diff_lines(&policy_diff(&old, &sources)),
        form: f,
        base,
        report,
        error,
        notice,
    };
    let answer = |pg: DraftPage, status| -> PageResult<Response> {
        Ok((status, Html(pg.render()?)).into_response())
    };
    match f.action.as_str() {
        "simulate" => {
            let days: i64 = match f.days.trim().parse() {
                Ok(d) if (1..=366).contains(&d) => d,
                _ => {
                    let pg = page(None, Some("history: 1 to 366 days".into()), None, f);
                    return answer(pg, axum::http::StatusCode::BAD_REQUEST);
                }
            };
            let since = c.cp.now() - SignedDuration::from_hours(24 * days);
            match c
                .cp
                .simulate_policies(&v.actor, sources.clone(), since)
                .await
            {
                Ok(r) => answer(page(Some(r), None, None, f), axum::http::StatusCode::OK),
                Err(e) => {
                    let status = status_of(&e);
                    answer(page(None, Some(message_of(&e)), None, f), status)
                }
            }
        }
        "apply" => {
            let comment = Some(f.comment.trim().to_string()).filter(|c| !c.is_empty());
            match c
                .cp
                .submit_policies(&v.actor, sources.clone(), comment)
                .await
            {
                Ok(PolicySubmission::Applied(pv)) if pv.version == base => {
                    let note = "Nothing to apply: the draft is the set in force.".to_string();
                    answer(page(None, None, Some(note), f), axum::http::StatusCode::OK)
                }
                Ok(PolicySubmission::Applied(pv)) => Ok(Redirect::to(&format!(
                    "/ui/policies/diff?from={base}&to={}",
                    pv.version
                ))
                .into_response()),
                Ok(PolicySubmission::Pending(prop)) => {
                    let note = format!(
                        "Proposed as proposal {}: it is applied once approved \
                         (pedm policy proposals).",
                        prop.id
                    );
                    answer(page(None, None, Some(note), f), axum::http::StatusCode::OK)
                }
                Err(e) => {
                    let status = status_of(&e);
                    answer(page(None, Some(message_of(&e)), None, f), status)
                }
            }
        }
        other => Err(PageError::Invalid(format!(
            "invalid action {other:?}: simulate or apply"
        ))),
    }
}
