//! Audit retention over HTTP: the archive segment of the oldest events, pruning them once it
//! is verified, and the pruned start of the log (see `pedm_core::service::retention`). The
//! Merkle arithmetic is done here, with `pedm-audit`.

use super::AppState;
use super::audit::{checked, hex as hex32, internal, signer, store_err, stream};
use super::error::{ApiErr, ApiResult};
use super::extract::{Body, Caller, Query};
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use pedm_api::*;
use pedm_audit::MerkleAccumulator;
use pedm_core::store::AuditFilter;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// Hashes read per page while summing the pruned events' tree.
const HASH_PAGE: i64 = 100_000;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(archive))
        .routes(routes!(prune))
        .routes(routes!(pruned))
}

/// The oldest events as a verifiable export (`read_audit`): from the pruned start (if any) up
/// to the newest signed checkpoint whose events are all from before `before` (default: now
/// minus `[audit] retention`), with the checkpoints of that range. `pedm audit archive` keeps
/// it, verifies it, then prunes what it holds.
#[utoipa::path(get, path = "/audit/archive", tag = "audit", params(ArchiveQuery),
    responses((status = 200, description = "the segment, streamed (JSON Lines)",
            content((String = "application/x-ndjson"))),
        (status = 400, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, description = "no checkpoint covers only events that old", body = ErrorBody),
        (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn archive(
    State(s): State<AppState>,
    c: Caller,
    Query(q): Query<ArchiveQuery>,
) -> ApiResult<Response> {
    s.cp.require_audit_reader(&c.actor).await?;
    let before = match super::routes::parse_time("before", q.before.as_deref())? {
        Some(t) => t,
        None => {
            let secs = s.cp.audit_retention_secs().ok_or_else(|| {
                ApiErr::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "unprocessable",
                    "no retention period is configured ([audit] retention): give before",
                )
            })?;
            jiff::Timestamp::now()
                .checked_sub(jiff::SignedDuration::from_secs(secs))
                .map_err(internal)?
        }
    };
    checked(&s).await?;
    let store = s.cp.store();
    let start = s.cp.pruned_prefix().await?.map_or(0, |p| p.through);
    // A segment after an earlier pruning must hold the event that records it (a verifier takes
    // the pruned start only with it).
    let recorded = match start {
        0 => 0,
        _ => store
            .audit_events(&AuditFilter {
                action: Some("audit.pruned".into()),
                newest_first: true,
                limit: Some(1),
                sealed: true,
                ..Default::default()
            })
            .await
            .map_err(store_err)?
            .first()
            .map_or(0, |e| e.seq),
    };
    let mut sizes: Vec<i64> = store
        .checkpoints()
        .await
        .map_err(store_err)?
        .iter()
        .map(|c| c.size)
        .filter(|&n| n > start && n >= recorded)
        .collect();
    sizes.sort_unstable_by(|a, b| b.cmp(a));
    sizes.dedup();
    for n in sizes {
        let last = store
            .audit_events(&AuditFilter {
                after_seq: Some(n - 1),
                limit: Some(1),
                sealed: true,
                ..Default::default()
            })
            .await
            .map_err(store_err)?;
        if last.first().is_some_and(|e| e.seq == n && e.at < before) {
            return stream(
                &s,
                "jsonl",
                n,
                &format!("pedm-audit-archive-{}-{n}", start + 1),
            )
            .await;
        }
    }
    Err(ApiErr::new(
        StatusCode::NOT_FOUND,
        "not_found",
        format!(
            "no signed checkpoint covers only events from before {before} (after the {start} \
             pruned already)"
        ),
    ))
}

/// Prune events `1..=through` (`manage_policies`) once their archive segment is verified: their
/// content leaves the database, their hashes stay, and `audit.pruned` records the size, root
/// and archive digest. Refused (audited) without `[audit] retention`, for events within it, and
/// while a legal hold is set.
#[utoipa::path(post, path = "/audit/prune", tag = "audit", request_body = PruneAudit,
    responses((status = 200, body = PrunedPrefix), (status = 400, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn prune(
    State(s): State<AppState>,
    c: Caller,
    Body(b): Body<PruneAudit>,
) -> ApiResult<Json<PrunedPrefix>> {
    if b.archive_sha256.len() != 64 || !b.archive_sha256.bytes().all(|c| c.is_ascii_hexdigit()) {
        return Err(ApiErr::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "unprocessable",
            "unprocessable archive_sha256: not 64 hex digits",
        ));
    }
    if b.through < 1 {
        return Err(ApiErr::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "unprocessable",
            "unprocessable through: must be at least 1",
        ));
    }
    checked(&s).await?;
    signer(&s)?;
    let store = s.cp.store();
    let cp = store
        .checkpoints()
        .await
        .map_err(store_err)?
        .into_iter()
        .find(|c| c.size == b.through)
        .ok_or_else(|| {
            ApiErr::new(
                StatusCode::NOT_FOUND,
                "not_found",
                format!(
                    "no signed checkpoint of size {}: prune only what a checkpoint covers \
                     (pedm audit archive picks one)",
                    b.through
                ),
            )
        })?;
    let mut acc = MerkleAccumulator::new();
    let mut last = pedm_core::audit::GENESIS_HASH;
    let mut from = 1;
    while from <= b.through {
        let to = (from + HASH_PAGE - 1).min(b.through);
        let hashes = store.audit_hashes(from, to).await.map_err(store_err)?;
        if hashes.len() as i64 != to - from + 1 {
            return Err(internal(format!("events {from}..={to}: hashes missing")));
        }
        for h in &hashes {
            acc.push(h);
            last = *h;
        }
        from = to + 1;
    }
    if acc.root() != cp.root {
        return Err(ApiErr::new(
            StatusCode::CONFLICT,
            "audit_integrity",
            format!(
                "events 1..={} do not have the root their checkpoint signs",
                b.through
            ),
        ));
    }
    let prefix = PrunedPrefix {
        through: b.through,
        hash: hex32(&last),
        peaks: acc.peaks().iter().map(hex32).collect(),
        root: hex32(&acc.root()),
        archive_sha256: b.archive_sha256.to_ascii_lowercase(),
        at: jiff::Timestamp::now(),
        by: String::new(),
    };
    Ok(Json(s.cp.prune_audit(&c.actor, prefix).await?))
}

/// The pruned start of the log (`read_audit`): `null` when nothing was pruned.
#[utoipa::path(get, path = "/audit/pruned", tag = "audit",
    responses((status = 200, body = Option<PrunedPrefix>), (status = 403, body = ErrorBody)))]
async fn pruned(State(s): State<AppState>, c: Caller) -> ApiResult<Json<Option<PrunedPrefix>>> {
    s.cp.require_audit_reader(&c.actor).await?;
    Ok(Json(s.cp.pruned_prefix().await?))
}
