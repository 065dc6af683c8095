//! Compliance evidence bundles (`GET /reports/evidence`): the core's record of a period
//! rendered as files, a manifest naming each with its SHA-256 and the controls it supports,
//! signed with the audit key, and the audit checkpoints that pin the log (see
//! `pedm_audit::bundle`, which `pedm report verify-bundle` runs offline).

use crate::audit_signer::AuditSigner;
use anyhow::Context;
use pedm_audit::bundle::{self, Checkpoints, Control, Manifest};
use pedm_core::evidence::{FILES, Framework};
use pedm_core::service::EvidenceData;
use pedm_core::text::csv_cell;
use std::collections::BTreeMap;

fn csv(header: &[&str], rows: impl IntoIterator<Item = Vec<String>>) -> String {
    let line = |cells: Vec<String>| {
        cells
            .iter()
            .map(|c| csv_cell(c).into_owned())
            .collect::<Vec<_>>()
            .join(",")
    };
    let mut out = line(header.iter().map(|h| h.to_string()).collect());
    out.push('\n');
    for r in rows {
        out.push_str(&line(r));
        out.push('\n');
    }
    out
}

fn t(ts: Option<jiff::Timestamp>) -> String {
    ts.map(|t| t.to_string()).unwrap_or_default()
}

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

/// The files of a bundle, by name (without the checkpoints, manifest and signature).
fn render(
    d: &EvidenceData,
    since: jiff::Timestamp,
) -> anyhow::Result<BTreeMap<&'static str, String>> {
    let mut files = BTreeMap::new();
    files.insert(
        "elevations.csv",
        csv(
            &[
                "user",
                "target",
                "role",
                "requested_at",
                "started_at",
                "ended_at",
                "held_secs",
                "state",
                "justification",
                "ticket",
                "approvers",
                "decided_by",
                "break_glass",
                "ended_by",
                "end_reason",
                "sessions",
                "grant_id",
                "request_id",
            ],
            d.elevations.iter().map(|r| {
                vec![
                    r.user.clone(),
                    r.target.clone(),
                    r.role.clone(),
                    t(r.requested_at),
                    r.started_at.to_string(),
                    t(r.ended_at),
                    r.held_secs.to_string(),
                    r.state.to_string(),
                    r.justification.clone().unwrap_or_default(),
                    r.ticket.clone().unwrap_or_default(),
                    r.approvers.join(" "),
                    r.decided_by.clone().unwrap_or_default(),
                    r.break_glass.to_string(),
                    r.ended_by.clone().unwrap_or_default(),
                    r.end_reason.clone().unwrap_or_default(),
                    r.sessions.to_string(),
                    r.grant_id.to_string(),
                    r.request_id.to_string(),
                ]
            }),
        ),
    );
    files.insert(
        "break_glass.csv",
        csv(
            &[
                "request_id",
                "requester",
                "target",
                "role",
                "created_at",
                "justification",
                "review_state",
                "reviewed_by",
                "reviewed_at",
                "review_comment",
            ],
            d.break_glass.iter().map(|r| {
                let rv = r.review.as_ref();
                vec![
                    r.id.to_string(),
                    r.requester.clone(),
                    r.target.clone(),
                    r.role.clone(),
                    r.created_at.to_string(),
                    r.justification.clone(),
                    rv.map(|v| v.state.to_string()).unwrap_or_default(),
                    rv.and_then(|v| v.reviewed_by.clone()).unwrap_or_default(),
                    t(rv.and_then(|v| v.reviewed_at)),
                    rv.and_then(|v| v.comment.clone()).unwrap_or_default(),
                ]
            }),
        ),
    );
    files.insert(
        "access_reviews.csv",
        csv(
            &[
                "campaign",
                "campaign_id",
                "due_at",
                "stage",
                "kind",
                "user",
                "target",
                "role",
                "group",
                "delegation",
                "detail",
                "reviewer",
                "requests",
                "grants",
                "sessions",
                "last_used",
                "suggested",
                "state",
                "decided_by",
                "decided_at",
                "comment",
                "outcome",
            ],
            d.reviews.iter().flat_map(|v| {
                v.items.iter().map(move |i| {
                    vec![
                        v.campaign.name.clone(),
                        v.campaign.id.to_string(),
                        v.campaign.due_at.to_string(),
                        v.campaign.stage.to_string(),
                        i.kind.to_string(),
                        i.user.clone(),
                        i.target.clone().unwrap_or_default(),
                        i.role.clone().unwrap_or_default(),
                        i.group.clone().unwrap_or_default(),
                        i.delegation.map(|d| d.to_string()).unwrap_or_default(),
                        i.detail.clone(),
                        i.reviewer.to_string(),
                        i.usage.requests.to_string(),
                        i.usage.grants.to_string(),
                        i.usage.sessions.to_string(),
                        t(i.usage.last_used),
                        i.suggested.map(|s| s.to_string()).unwrap_or_default(),
                        i.state.to_string(),
                        i.decided_by.clone().unwrap_or_default(),
                        t(i.decided_at),
                        i.comment.clone().unwrap_or_default(),
                        i.outcome.clone().unwrap_or_default(),
                    ]
                })
            }),
        ),
    );
    let mut versions = vec![];
    let mut previous: Vec<pedm_core::model::PolicySource> = vec![];
    for (n, v) in d.policy_versions.iter().enumerate() {
        versions.push(serde_json::json!({
            "version": v.version, "created_at": v.created_at, "created_by": v.created_by,
            "comment": v.comment, "digest": v.digest,
            "in_force_at_start": n == 0 && v.created_at < since,
            "diff": if n == 0 { None } else { Some(pedm_core::service::policy_diff(&previous, &v.sources)) },
            "sources": v.sources,
        }));
        previous = v.sources.clone();
    }
    files.insert(
        "policy_versions.json",
        serde_json::to_string_pretty(&versions).context("policy versions")? + "\n",
    );
    files.insert(
        "sessions.csv",
        csv(
            &[
                "session_id",
                "host",
                "user",
                "run_as",
                "started_at",
                "ended_at",
                "grant_id",
                "argv",
                "exit_code",
                "ended_by",
                "recording_sha256",
                "recording_bytes",
            ],
            d.sessions.iter().map(|s| {
                vec![
                    s.id.to_string(),
                    s.host.clone(),
                    s.user.clone(),
                    s.run_as.clone(),
                    s.started_at.to_string(),
                    s.ended_at.to_string(),
                    s.grant_id.map(|g| g.to_string()).unwrap_or_default(),
                    s.argv.join(" "),
                    s.exit_code.map(|c| c.to_string()).unwrap_or_default(),
                    s.ended_by.clone().unwrap_or_default(),
                    s.recording_sha256.clone(),
                    s.recording_bytes.to_string(),
                ]
            }),
        ),
    );
    files.insert(
        "standing.csv",
        csv(
            &[
                "seq",
                "at",
                "event",
                "target",
                "account",
                "privilege",
                "source",
                "removal",
            ],
            d.drift.iter().map(|e| {
                let f = |k: &str| {
                    e.data
                        .get(k)
                        .and_then(|v| v.as_str())
                        .unwrap_or("")
                        .to_string()
                };
                vec![
                    e.seq.to_string(),
                    e.at.to_string(),
                    e.action.clone(),
                    f("target"),
                    f("account"),
                    f("privilege"),
                    f("source"),
                    f("removal"),
                ]
            }),
        ),
    );
    Ok(files)
}

/// The people's summary: figures, elevations per target as a chart, the control mapping.
fn summary(d: &EvidenceData, m: &Manifest) -> String {
    let mut per_target: BTreeMap<&str, f64> = BTreeMap::new();
    for r in &d.elevations {
        *per_target.entry(r.target.as_str()).or_default() += 1.0;
    }
    let bars: Vec<(String, f64)> = per_target
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
    let chart = pedm_console::charts::bar_chart("Elevations per target", &bars, "");
    let reviewed: usize = d.reviews.iter().map(|v| v.items.len()).sum();
    let revoked: usize = d
        .reviews
        .iter()
        .flat_map(|v| &v.items)
        .filter(|i| i.state == pedm_core::access_review::ItemState::Revoked)
        .count();
    let figures = [
        ("Elevations", d.elevations.len()),
        (
            "Approved by a person",
            d.elevations
                .iter()
                .filter(|r| !r.approvers.is_empty())
                .count(),
        ),
        ("Break-glass", d.break_glass.len()),
        ("Access review items", reviewed),
        ("Revoked in reviews", revoked),
        ("Policy versions", d.policy_versions.len()),
        ("Recorded sessions", d.sessions.len()),
        ("Standing privilege findings", d.drift.len()),
    ];
    let mut out = format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'\">\
         <title>pedm evidence: {fw} {period}</title>\
         <style>body{{font-family:sans-serif;max-width:60rem;margin:2rem auto}}table{{border-collapse:collapse}}\
         td,th{{border:1px solid #999;padding:.3rem .6rem;text-align:left}}</style></head><body>\n\
         <h1>Access evidence: {fw}, {period}</h1>\n<p>From {since} to {until}, generated {at} by {by}; \
         signed with audit key {key} (<code>pedm report verify-bundle</code> checks every file).</p>\n\
         <h2>Figures</h2>\n<table>",
        fw = html_escape(&m.framework.to_uppercase()),
        period = html_escape(&m.period),
        since = m.since,
        until = m.until,
        at = m.generated_at,
        by = html_escape(&m.generated_by),
        key = html_escape(&m.key_id),
    );
    for (name, n) in figures {
        out.push_str(&format!(
            "<tr><th scope=\"row\">{name}</th><td>{n}</td></tr>"
        ));
    }
    out.push_str("</table>\n<h2>Elevations per target</h2>\n");
    out.push_str(&chart);
    out.push_str(
        "\n<h2>Controls</h2>\n<table><thead><tr><th scope=\"col\">Control</th>\
         <th scope=\"col\">What it asks</th><th scope=\"col\">Evidence</th></tr></thead><tbody>",
    );
    for c in &m.controls {
        out.push_str(&format!(
            "<tr><td>{}</td><td>{}</td><td>{}</td></tr>",
            html_escape(&c.id),
            html_escape(&c.title),
            c.files
                .iter()
                .map(|f| format!("<code>{}</code>", html_escape(f)))
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    out.push_str("</tbody></table>\n</body></html>\n");
    out
}

/// Signs a checkpoint now and pairs it with the newest one signed at or before `since`, with
/// the consistency proof between them.
async fn checkpoints(
    signer: &AuditSigner,
    store: &dyn pedm_core::store::Store,
    since: jiff::Timestamp,
) -> anyhow::Result<Checkpoints> {
    signer.check().await?;
    let end = signer
        .sign_now()
        .await?
        .context("the audit log is empty: nothing to sign")?;
    let mut start = None;
    for r in store.checkpoints().await? {
        let cp = crate::audit_signer::from_record(&r)?;
        if cp.checkpoint.time <= since
            && start
                .as_ref()
                .is_none_or(|s: &pedm_audit::SignedCheckpoint| {
                    s.checkpoint.size < cp.checkpoint.size
                })
        {
            start = Some(cp);
        }
    }
    let old = start.as_ref().map_or(0, |s| s.checkpoint.size);
    let (proof, _, _) = signer.consistency_proof(old, end.checkpoint.size).await?;
    Ok(Checkpoints {
        start,
        end,
        consistency: proof.iter().map(hex::encode).collect(),
    })
}

/// Every file of the bundle, the manifest and its signature last.
#[allow(clippy::too_many_arguments)]
pub async fn bundle(
    signer: &AuditSigner,
    store: &dyn pedm_core::store::Store,
    data: &EvidenceData,
    framework: Framework,
    period: &str,
    since: jiff::Timestamp,
    until: jiff::Timestamp,
    by: &str,
) -> anyhow::Result<Vec<(String, String)>> {
    let mut files: Vec<(String, String)> = render(data, since)?
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
    let cps = checkpoints(signer, store, since).await?;
    files.push((
        bundle::CHECKPOINTS.to_string(),
        serde_json::to_string_pretty(&cps)? + "\n",
    ));
    let what = |name: &str| {
        FILES
            .iter()
            .find(|(n, _)| *n == name)
            .map_or("", |(_, w)| *w)
    };
    let mut m = Manifest {
        format: bundle::FORMAT.into(),
        framework: framework.as_str().into(),
        period: period.into(),
        since,
        until,
        generated_at: cps.end.checkpoint.time,
        generated_by: by.into(),
        key_id: signer.public_key().key_id().to_string(),
        files: vec![],
        controls: framework
            .controls()
            .iter()
            .map(|(id, title, files)| Control {
                id: id.to_string(),
                title: title.to_string(),
                files: files.iter().map(|f| f.to_string()).collect(),
            })
            .collect(),
    };
    let html = summary(data, &m);
    files.push(("summary.html".into(), html));
    m.files = files
        .iter()
        .map(|(n, c)| bundle::entry(n, what(n), c.as_bytes()))
        .collect();
    let (manifest, sig) = signer.sign_manifest(&m);
    files.push((
        bundle::MANIFEST.into(),
        String::from_utf8(manifest).context("manifest")?,
    ));
    files.push((bundle::SIGNATURE.into(), sig));
    Ok(files)
}
