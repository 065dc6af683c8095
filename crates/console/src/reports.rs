//! Reports where people would rather look than read: elevations per day, by target and role,
//! approval latency, break-glass, drift found over a window, and the standing privileges the
//! targets hold now (`read_audit`). Charts are SVG drawn on the server (`charts.rs`) with the
//! numbers as tables underneath.

use crate::Console;
use crate::charts::bar_chart;
use crate::error::{PageError, PageResult};
use crate::pages::{html, nav};
use crate::session::Viewer;
use crate::view::Nav;
use askama::Template;
use axum::Router;
use axum::extract::{Query, State};
use axum::response::Response;
use axum::routing::get;
use jiff::{SignedDuration, tz::TimeZone};
use pedm_core::duration::format_duration;
use serde::Deserialize;
use std::collections::BTreeMap;

pub fn router() -> Router<Console> {
    Router::new().route("/ui/reports", get(reports))
}

#[derive(Deserialize)]
struct ReportQuery {
    #[serde(default)]
    days: String,
}

struct Chart {
    id: &'static str,
    title: String,
    svg: String,
    rows: Vec<(String, String)>,
    /// The table's two column headings.
    label: &'static str,
    column: &'static str,
}

impl Chart {
    fn new(
        id: &'static str,
        title: String,
        bars: &[(String, f64)],
        (label, column): (&'static str, &'static str),
    ) -> Self {
        Chart {
            id,
            label,
            svg: bar_chart(&title, bars, ""),
            title,
            rows: bars
                .iter()
                .map(|(l, v)| (l.clone(), format!("{v:.0}")))
                .collect(),
            column,
        }
    }
}

#[derive(Template)]
#[template(path = "reports.html")]
struct ReportsPage {
    nav: Option<Nav>,
    days: i64,
    total: usize,
    break_glass: usize,
    approved: usize,
    latency_p50: String,
    latency_p90: String,
    charts: Vec<Chart>,
    /// Drift findings of the window, newest first (at most [`LISTED`]).
    drift: Vec<DriftRow>,
    drift_total: usize,
    /// Standing privileges the targets hold now, and the targets that could not be read.
    standing: Vec<pedm_core::model::StandingRow>,
    standing_total: usize,
    standing_errors: Vec<pedm_core::model::TargetError>,
}

/// Rows listed under a chart at most.
const LISTED: usize = 100;

struct DriftRow {
    at: String,
    target: String,
    account: String,
    privilege: String,
    removal: String,
}

/// Counts per key as bars, largest first, the top 20.
fn top_bars(counts: BTreeMap<String, f64>) -> Vec<(String, f64)> {
    let mut bars: Vec<(String, f64)> = counts.into_iter().collect();
    bars.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    bars.truncate(20);
    bars
}

async fn reports(
    State(c): State<Console>,
    v: Viewer,
    Query(q): Query<ReportQuery>,
) -> PageResult<Response> {
    let days: i64 = match q.days.trim() {
        "" => 30,
        d => d
            .parse()
            .ok()
            .filter(|n| (1..=366).contains(n))
            .ok_or_else(|| PageError::Invalid(format!("invalid days {d:?}: 1 to 366")))?,
    };
    let now = c.cp.now();
    let since = now - SignedDuration::from_hours(24 * days);
    let rows = c.cp.elevation_report(&v.actor, since).await?;

    // Per day (UTC), every day of the window shown, empty ones too.
    let mut per_day: BTreeMap<jiff::civil::Date, f64> = BTreeMap::new();
    let first = since.to_zoned(TimeZone::UTC).date();
    let last = now.to_zoned(TimeZone::UTC).date();
    let mut d = first;
    loop {
        per_day.insert(d, 0.0);
        match d.tomorrow() {
            Ok(next) if d < last => d = next,
            _ => break,
        }
    }
    let mut per_role: BTreeMap<String, f64> = BTreeMap::new();
    let mut latencies: Vec<i64> = vec![];
    let (mut break_glass, mut approved) = (0, 0);
    for r in &rows {
        let day = r.started_at.to_zoned(TimeZone::UTC).date();
        if let Some(n) = per_day.get_mut(&day) {
            *n += 1.0;
        }
        *per_role
            .entry(format!("{}/{}", r.target, r.role))
            .or_default() += 1.0;
        if r.break_glass {
            break_glass += 1;
        }
        if !r.approvers.is_empty() {
            approved += 1;
            if let Some(at) = r.requested_at {
                latencies.push(r.started_at.duration_since(at).as_secs().max(0));
            }
        }
    }
    latencies.sort_unstable();
    let q = |p: f64| -> String {
        if latencies.is_empty() {
            return "-".into();
        }
        let i = ((latencies.len() as f64 * p) as usize).min(latencies.len() - 1);
        format_duration(latencies[i].max(1))
    };
    // Approval latency in buckets people think in.
    let buckets = [
        ("< 1m", 60),
        ("1-5m", 300),
        ("5-15m", 900),
        ("15-60m", 3600),
        ("1-4h", 4 * 3600),
        ("> 4h", i64::MAX),
    ];
    let mut latency_bars: Vec<(String, f64)> =
        buckets.iter().map(|(l, _)| (l.to_string(), 0.0)).collect();
    for l in &latencies {
        let i = buckets
            .iter()
            .position(|(_, up)| l < up)
            .unwrap_or(buckets.len() - 1);
        latency_bars[i].1 += 1.0;
    }
    let day_bars: Vec<(String, f64)> = per_day
        .iter()
        .map(|(d, n)| (d.strftime("%m-%d").to_string(), *n))
        .collect();
    let role_bars = top_bars(per_role);

    // Drift: what reconciliation found that no grant explains, in the window.
    let found =
        c.cp.audit_events(
            &v.actor,
            pedm_core::store::AuditFilter {
                action: Some("provision.drift".into()),
                since: Some(since),
                newest_first: true,
                ..Default::default()
            },
        )
        .await?;
    let text = |e: &pedm_core::audit::AuditEvent, k: &str| {
        e.data[k].as_str().unwrap_or_default().to_string()
    };
    let mut drift_per_target: BTreeMap<String, f64> = BTreeMap::new();
    for e in &found {
        *drift_per_target.entry(text(e, "target")).or_default() += 1.0;
    }
    let drift: Vec<DriftRow> = found
        .iter()
        .take(LISTED)
        .map(|e| DriftRow {
            at: crate::view::short_time(e.at),
            target: text(e, "target"),
            account: text(e, "account"),
            privilege: text(e, "privilege"),
            removal: match text(e, "removal") {
                r if r.is_empty() => "reported".into(),
                r => r,
            },
        })
        .collect();

    // Standing privilege: what the targets hold now that no live grant gave.
    let report = c.cp.standing_report(&v.actor).await?;
    let standing: Vec<_> = report
        .rows
        .into_iter()
        .filter(|r| r.temporary_grant.is_none())
        .collect();
    let mut standing_per_target: BTreeMap<String, f64> = BTreeMap::new();
    for r in &standing {
        *standing_per_target.entry(r.target.clone()).or_default() += 1.0;
    }
    let standing_total = standing.len();
    let mut standing = standing;
    standing.truncate(LISTED);

    let charts = vec![
        Chart::new(
            "per-day",
            format!("Elevations started per day, last {days} days (UTC)"),
            &day_bars,
            ("Day", "Elevations"),
        ),
        Chart::new(
            "per-role",
            "Elevations by target and role (top 20)".into(),
            &role_bars,
            ("Target/role", "Elevations"),
        ),
        Chart::new(
            "latency",
            "Approval latency (request to grant)".into(),
            &latency_bars,
            ("Latency", "Approved elevations"),
        ),
        Chart::new(
            "drift",
            format!("Drift found per target, last {days} days"),
            &top_bars(drift_per_target),
            ("Target", "Findings"),
        ),
        Chart::new(
            "standing",
            "Standing privileges per target, now".into(),
            &top_bars(standing_per_target),
            ("Target", "Privileges"),
        ),
    ];
    html(ReportsPage {
        nav: nav(&c, &v, "reports"),
        days,
        total: rows.len(),
        break_glass,
        approved,
        latency_p50: q(0.5),
        latency_p90: q(0.9),
        charts,
        drift_total: found.len(),
        drift,
        standing,
        standing_total,
        standing_errors: report.errors,
    })
}
