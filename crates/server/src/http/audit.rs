//! Audit-log cryptography over HTTP: the public key, signed checkpoints, Merkle proofs, and
//! streaming exports. Reads need the `read_audit` right, except the public key.

use super::AppState;
use super::error::{ApiErr, ApiResult};
use super::extract::{Caller, Query};
use crate::audit_signer::{AuditSigner, from_record};
use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use pedm_api::*;
use pedm_audit::{CsvWriter, ExportHeader, ExportWriter, OcsfWriter, SignedCheckpoint};
use pedm_core::store::{AuditFilter, Store};
use std::io::Write;
use std::sync::{Arc, Mutex};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// Events read from the store per page of an export.
const EXPORT_PAGE: u32 = 5_000;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(audit_pubkey))
        .routes(routes!(list_checkpoints, sign_checkpoint))
        .routes(routes!(inclusion_proof))
        .routes(routes!(consistency_proof))
        .routes(routes!(export))
        .routes(routes!(checkpoint_note))
        .routes(routes!(elevation_report))
        .routes(routes!(evidence))
}

pub(super) fn internal(e: impl std::fmt::Display) -> ApiErr {
    tracing::error!(error = %e, "audit");
    ApiErr::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "internal",
        format!("audit log: {e}"),
    )
}

pub(super) fn store_err(e: pedm_core::store::StoreError) -> ApiErr {
    ApiErr::from(pedm_core::Error::from(e))
}

/// The log does not match what was signed: 409 naming the problem. A storage failure while
/// checking: 503. Either way nothing is served.
pub(super) fn integrity(e: anyhow::Error) -> ApiErr {
    if e.downcast_ref::<crate::audit_signer::Broken>().is_some() {
        return ApiErr::new(StatusCode::CONFLICT, "audit_integrity", format!("{e:#}"));
    }
    tracing::error!(error = %format!("{e:#}"), "audit log check failed");
    ApiErr::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "unavailable",
        "the audit log cannot be checked now; try again",
    )
}

/// Fails closed unless the whole log has been checked and matches its checkpoints.
pub(super) async fn checked(s: &AppState) -> ApiResult<u64> {
    signer(s)?.check().await.map_err(integrity)
}

pub(super) fn signer(s: &AppState) -> ApiResult<&Arc<AuditSigner>> {
    s.audit.as_ref().ok_or_else(|| {
        ApiErr::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "audit checkpoint signing is not configured",
        )
    })
}

pub fn wire(cp: &SignedCheckpoint) -> AuditCheckpoint {
    // The JSON forms are the same by construction.
    serde_json::from_value(serde_json::to_value(cp).expect("serialisable"))
        .expect("same JSON shape")
}

async fn sign(s: &AppState) -> ApiResult<SignedCheckpoint> {
    signer(s)?
        .sign_now()
        .await
        .map_err(integrity)?
        .ok_or_else(|| {
            ApiErr::new(
                StatusCode::CONFLICT,
                "conflict",
                "the audit log is empty: nothing to sign",
            )
        })
}

/// The public key that signs audit checkpoints (no token needed; an auditor should obtain it
/// out of band too, and pass it to `pedm audit verify --pubkey`).
#[utoipa::path(get, path = "/audit/pubkey", tag = "audit", security(()),
    responses((status = 200, body = AuditPublicKey)))]
async fn audit_pubkey(State(s): State<AppState>) -> ApiResult<Json<AuditPublicKey>> {
    let signer = signer(&s)?;
    let k = signer.public_key();
    Ok(Json(AuditPublicKey {
        public_key: k.to_string(),
        key_id: k.key_id().to_string(),
        origin: Some(signer.origin().to_string()),
        vkey: Some(pedm_audit::note::log_vkey(k, signer.origin()).to_string()),
    }))
}

/// Every signed checkpoint, by ascending size (needs `read_audit`).
#[utoipa::path(get, path = "/audit/checkpoints", tag = "audit",
    responses((status = 200, body = Vec<AuditCheckpoint>), (status = 403, body = ErrorBody),
        (status = 409, description = "the log does not match its checkpoints", body = ErrorBody)))]
async fn list_checkpoints(
    State(s): State<AppState>,
    c: Caller,
) -> ApiResult<Json<Vec<AuditCheckpoint>>> {
    s.cp.require_audit_reader(&c.actor).await?;
    checked(&s).await?;
    let all = s.cp.store().checkpoints().await.map_err(store_err)?;
    let mut out = Vec::with_capacity(all.len());
    for r in &all {
        out.push(wire(&from_record(r).map_err(internal)?));
    }
    Ok(Json(out))
}

/// Signs a checkpoint of the whole log now and returns it (needs `read_audit`).
#[utoipa::path(post, path = "/audit/checkpoints", tag = "audit",
    responses((status = 200, body = AuditCheckpoint), (status = 403, body = ErrorBody),
        (status = 409, body = ErrorBody)))]
async fn sign_checkpoint(State(s): State<AppState>, c: Caller) -> ApiResult<Json<AuditCheckpoint>> {
    s.cp.require_audit_reader(&c.actor).await?;
    Ok(Json(wire(&sign(&s).await?)))
}

async fn checkpoint_of_size(s: &AppState, size: u64) -> ApiResult<Option<SignedCheckpoint>> {
    let Ok(size) = i64::try_from(size) else {
        return Ok(None);
    };
    let found = s.cp.store().checkpoints_between(size - 1, size).await;
    found
        .map_err(store_err)?
        .first()
        .map(|r| from_record(r).map_err(internal))
        .transpose()
}

/// RFC 6962 inclusion proof of event `seq` in a signed checkpoint (needs `read_audit`).
#[utoipa::path(get, path = "/audit/proof/inclusion", tag = "audit", params(InclusionQuery),
    responses((status = 200, body = InclusionProof), (status = 400, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, description = "the log does not match its checkpoints", body = ErrorBody)))]
async fn inclusion_proof(
    State(s): State<AppState>,
    c: Caller,
    Query(q): Query<InclusionQuery>,
) -> ApiResult<Json<InclusionProof>> {
    s.cp.require_audit_reader(&c.actor).await?;
    if q.seq < 1 {
        return Err(ApiErr::invalid("invalid seq: must be 1 or more"));
    }
    let not_found = |m: String| ApiErr::new(StatusCode::NOT_FOUND, "not_found", m);
    checked(&s).await?;
    let store = s.cp.store();
    let cp = match q.size {
        Some(size) => checkpoint_of_size(&s, size).await?.ok_or_else(|| {
            ApiErr::new(
                StatusCode::NOT_FOUND,
                "not_found",
                format!("no signed checkpoint of size {size}"),
            )
        })?,
        None => {
            let latest = store.latest_checkpoint().await.map_err(store_err)?;
            match latest {
                Some(r) if r.size >= q.seq => from_record(&r).map_err(internal)?,
                _ => {
                    let head = store.audit_head().await.map_err(store_err)?;
                    if head.is_none_or(|(h, _)| h < q.seq) {
                        return Err(ApiErr::new(
                            StatusCode::NOT_FOUND,
                            "not_found",
                            format!("audit event {} not found", q.seq),
                        ));
                    }
                    sign(&s).await?
                }
            }
        }
    };
    let size = cp.checkpoint.size;
    if q.seq as u64 > size {
        return Err(not_found(format!(
            "event {} is not in the checkpoint of size {size}",
            q.seq
        )));
    }
    let index = q.seq as u64 - 1;
    let (leaf, proof) = signer(&s)?
        .inclusion_proof(index, size)
        .await
        .map_err(integrity)?;
    Ok(Json(InclusionProof {
        seq: q.seq,
        leaf_index: index,
        leaf: hex(&leaf),
        tree_size: size,
        proof: proof.iter().map(hex).collect(),
        checkpoint: wire(&cp),
    }))
}

pub(super) fn hex(b: &[u8; 32]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// RFC 6962 consistency proof between two tree sizes: the log of size `to` extends the one of
/// size `from` (needs `read_audit`).
#[utoipa::path(get, path = "/audit/proof/consistency", tag = "audit", params(ConsistencyQuery),
    responses((status = 200, body = ConsistencyProof), (status = 400, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, description = "the log does not match its checkpoints", body = ErrorBody),
        (status = 422, body = ErrorBody)))]
async fn consistency_proof(
    State(s): State<AppState>,
    c: Caller,
    Query(q): Query<ConsistencyQuery>,
) -> ApiResult<Json<ConsistencyProof>> {
    s.cp.require_audit_reader(&c.actor).await?;
    checked(&s).await?;
    let store = s.cp.store();
    let to = match q.to {
        Some(t) => t,
        None => store
            .latest_checkpoint()
            .await
            .map_err(store_err)?
            .map(|r| r.size as u64)
            .ok_or_else(|| {
                ApiErr::new(
                    StatusCode::NOT_FOUND,
                    "not_found",
                    "no checkpoint is signed yet: give to",
                )
            })?,
    };
    if q.from > to {
        return Err(ApiErr::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "unprocessable",
            format!("unprocessable from: {} is larger than to ({to})", q.from),
        ));
    }
    let head = store
        .audit_head()
        .await
        .map_err(store_err)?
        .map_or(0, |h| h.0) as u64;
    if to > head {
        return Err(ApiErr::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no tree of size {to}: the log has {head} events"),
        ));
    }
    let (proof, from_root, to_root) = signer(&s)?
        .consistency_proof(q.from, to)
        .await
        .map_err(integrity)?;
    Ok(Json(ConsistencyProof {
        from: q.from,
        to,
        from_root: hex(&from_root),
        to_root: hex(&to_root),
        proof: proof.iter().map(hex).collect(),
        from_checkpoint: checkpoint_of_size(&s, q.from).await?.as_ref().map(wire),
        to_checkpoint: checkpoint_of_size(&s, to).await?.as_ref().map(wire),
    }))
}

/// A `Write` whose bytes are taken out between pages and sent down the response.
#[derive(Clone, Default)]
struct Buf(Arc<Mutex<Vec<u8>>>);

impl Write for Buf {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("not poisoned").extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Buf {
    fn take(&self) -> Vec<u8> {
        std::mem::take(&mut *self.0.lock().expect("not poisoned"))
    }
}

/// One per export: its size does not matter.
#[allow(clippy::large_enum_variant)]
enum Sink {
    Jsonl(ExportWriter<Buf>),
    Csv(CsvWriter<Buf>),
    Ocsf(OcsfWriter<Buf>),
}

type Chunk = Result<Vec<u8>, std::io::Error>;

/// Pages through the log up to event `last`, checking the chain as it goes, writing each page
/// into `buf` and sending it; memory stays at about one page whatever the size of the log. A
/// gap, a broken link or an altered event aborts the stream (the client sees a cut response,
/// never a complete-looking one).
async fn produce(
    store: Arc<dyn Store>,
    mut sink: Sink,
    buf: Buf,
    (mut after, mut prev): (i64, [u8; 32]),
    last: i64,
    tx: tokio::sync::mpsc::Sender<Chunk>,
) {
    let fail = |msg: String| {
        tracing::error!(problem = %msg, "audit export aborted");
        std::io::Error::other(msg)
    };
    loop {
        if tx.send(Ok(buf.take())).await.is_err() {
            return; // the client went away
        }
        if after >= last {
            break;
        }
        let page = match store
            .audit_events(&AuditFilter {
                after_seq: Some(after),
                limit: Some(EXPORT_PAGE.min((last - after) as u32)),
                sealed: true,
                ..Default::default()
            })
            .await
        {
            Ok(p) => p,
            Err(e) => {
                let _ = tx
                    .send(Err(fail(format!("cannot read the log: {e}"))))
                    .await;
                return;
            }
        };
        match pedm_core::audit::verify_chain(prev, after + 1, &page) {
            Ok(h) if !page.is_empty() => prev = h,
            Ok(_) => {
                let msg = format!(
                    "event {}: missing (the export should reach {last})",
                    after + 1
                );
                let _ = tx.send(Err(fail(msg))).await;
                return;
            }
            Err(e) => {
                let _ = tx.send(Err(fail(e.to_string()))).await;
                return;
            }
        }
        for e in &page {
            let r = match &mut sink {
                Sink::Jsonl(w) => w.write_event(e),
                Sink::Csv(w) => w.write(e),
                Sink::Ocsf(w) => w.write(e),
            };
            if let Err(e) = r {
                let _ = tx.send(Err(e)).await;
                return;
            }
        }
        after = page.last().map_or(after, |e| e.seq);
    }
    let r = match sink {
        Sink::Jsonl(w) => w.finish().map(drop),
        Sink::Csv(w) => w.finish().map(drop),
        Sink::Ocsf(w) => w.finish().map(drop),
    };
    match r {
        Ok(()) => {
            let _ = tx.send(Ok(buf.take())).await;
        }
        Err(e) => {
            let _ = tx.send(Err(e)).await;
        }
    }
}

/// The audit log as a streaming download (needs `read_audit`): `jsonl` (the verifiable export:
/// a checkpoint of the current head is signed first, so every event is covered), `csv`, or
/// `ocsf` (JSON Lines shaped after OCSF 1.1 for SIEMs). Every format is refused with 409 when
/// the log does not match its signed checkpoints (edited, cut, reordered, rolled back): never a
/// partial or empty success.
#[utoipa::path(get, path = "/audit/export", tag = "audit", params(ExportQuery),
    responses((status = 200, description = "the export, streamed: JSON Lines (jsonl, ocsf) or CSV",
            content((String = "application/x-ndjson"), (String = "text/csv"))),
        (status = 400, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 409, description = "the log does not match its checkpoints", body = ErrorBody)))]
async fn export(
    State(s): State<AppState>,
    c: Caller,
    Query(q): Query<ExportQuery>,
) -> ApiResult<Response> {
    s.cp.require_audit_reader(&c.actor).await?;
    let format = q.format.as_deref().unwrap_or("jsonl");
    if !matches!(format, "jsonl" | "csv" | "ocsf") {
        return Err(ApiErr::invalid(format!(
            "invalid format: {format:?} is not one of jsonl, csv, ocsf"
        )));
    }
    download(&s, format).await
}

/// The export of `format` (checked by the caller, as is the reader's right), streamed.
async fn download(s: &AppState, format: &str) -> ApiResult<Response> {
    // Sign (jsonl) or check (csv, ocsf) the whole log first: a broken log fails here, before
    // any byte is sent.
    let last = if format == "jsonl" {
        sign_or_empty(s).await?
    } else {
        checked(s).await?
    } as i64;
    stream(s, format, last, "pedm-audit").await
}

/// Events up to `last` (checked by the caller) as `format`, streamed, after the pruned start
/// of the log if there is one: a jsonl export then carries that start (`{"pruned":...}`) and
/// only the checkpoints from its size on (the archive holds the earlier ones).
pub(super) async fn stream(
    s: &AppState,
    format: &str,
    last: i64,
    name: &str,
) -> ApiResult<Response> {
    let buf = Buf::default();
    let store = s.cp.store().clone();
    let signer = signer(s)?;
    let base = s.cp.pruned_prefix().await?;
    let start = base.as_ref().map_or(0, |b| b.through);
    if start > last {
        return Err(ApiErr::new(
            StatusCode::CONFLICT,
            "conflict",
            format!("events 1..={start} are pruned: only their archive holds them"),
        ));
    }
    let prev = match &base {
        Some(b) => hex::decode(&b.hash)
            .ok()
            .and_then(|h| <[u8; 32]>::try_from(h).ok())
            .ok_or_else(|| internal("the pruned start's hash is not 32 bytes of hex"))?,
        None => pedm_core::audit::GENESIS_HASH,
    };
    let (sink, content_type, ext) = match format {
        "jsonl" => {
            let mut header = ExportHeader::new(
                jiff::Timestamp::now(),
                Some(signer.public_key().key_id().to_string()),
            );
            header.source = Some("pedmd".into());
            let mut w = ExportWriter::new(buf.clone(), &header).map_err(internal)?;
            for r in store.checkpoints().await.map_err(store_err)? {
                if r.size <= last && r.size >= start {
                    w.write_checkpoint(&from_record(&r).map_err(internal)?)
                        .map_err(internal)?;
                }
            }
            if let Some(b) = &base {
                w.write_pruned(&pedm_audit::PrunedBase {
                    through: b.through as u64,
                    hash: b.hash.clone(),
                    peaks: b.peaks.clone(),
                })
                .map_err(internal)?;
            }
            (Sink::Jsonl(w), "application/x-ndjson", "jsonl")
        }
        "csv" => (
            Sink::Csv(CsvWriter::new(buf.clone()).map_err(internal)?),
            "text/csv",
            "csv",
        ),
        _ => (
            Sink::Ocsf(OcsfWriter::new(buf.clone())),
            "application/x-ndjson",
            "ocsf.jsonl",
        ),
    };
    let (tx, rx) = tokio::sync::mpsc::channel::<Chunk>(4);
    tokio::spawn(produce(store, sink, buf, (start, prev), last, tx));
    let stream =
        futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|c| (c, rx)) });
    Ok((
        [
            (header::CONTENT_TYPE, content_type.to_string()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{name}.{ext}\""),
            ),
        ],
        Body::from_stream(stream),
    )
        .into_response())
}

/// Signs the head; 0 for an empty log (nothing to sign, nothing to export).
async fn sign_or_empty(s: &AppState) -> ApiResult<u64> {
    Ok(signer(s)?
        .sign_now()
        .await
        .map_err(integrity)?
        .map_or(0, |c| c.checkpoint.size))
}

/// The newest checkpoint as a C2SP signed note (`text/plain`): origin line, size, base64 root,
/// an empty line, the log's Ed25519 note signature and any witness cosignatures collected for
/// it. Needs `read_audit`.
#[utoipa::path(get, path = "/audit/checkpoint.note", tag = "audit",
    responses((status = 200, description = "the signed note", content_type = "text/plain"),
        (status = 403, body = ErrorBody),
        (status = 409, description = "the log does not match its checkpoints, or is empty", body = ErrorBody)))]
async fn checkpoint_note(State(s): State<AppState>, c: Caller) -> ApiResult<Response> {
    s.cp.require_audit_reader(&c.actor).await?;
    let note = signer(&s)?
        .note()
        .await
        .map_err(integrity)?
        .ok_or_else(|| {
            ApiErr::new(
                StatusCode::CONFLICT,
                "conflict",
                "the audit log is empty: no checkpoint to show",
            )
        })?;
    Ok((
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        note.text(),
    )
        .into_response())
}

/// One row per elevation held in the window: who, what, when, how long, why, who approved,
/// break-glass (needs `read_audit`).
#[utoipa::path(get, path = "/reports/elevations", tag = "audit", params(ReportQuery),
    responses((status = 200, body = Vec<ElevationRow>), (status = 400, body = ErrorBody),
        (status = 403, body = ErrorBody)))]
async fn elevation_report(
    State(s): State<AppState>,
    c: Caller,
    Query(q): Query<ReportQuery>,
) -> ApiResult<Json<Vec<ElevationRow>>> {
    let since = super::routes::parse_since(q.since.as_deref(), s.cp.now())?;
    Ok(Json(s.cp.elevation_report(&c.actor, since).await?))
}

/// A compliance evidence bundle for a period (`read_audit`): elevations, break-glass, access
/// reviews, policy versions, sessions, standing privileges, the audit checkpoints pinning the
/// log, an HTML summary and a control mapping, with a manifest signed by the audit key
/// (`pedm report verify-bundle` checks it offline).
#[utoipa::path(get, path = "/reports/evidence", tag = "audit", params(pedm_api::evidence::EvidenceQuery),
    responses((status = 200, body = pedm_api::evidence::EvidenceBundle), (status = 400, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 409, body = ErrorBody),
        (status = 422, body = ErrorBody), (status = 503, body = ErrorBody)))]
async fn evidence(
    State(s): State<AppState>,
    c: Caller,
    Query(q): Query<pedm_api::evidence::EvidenceQuery>,
) -> ApiResult<Json<pedm_api::evidence::EvidenceBundle>> {
    let framework = pedm_core::evidence::Framework::parse(&q.framework).ok_or_else(|| {
        ApiErr::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "unprocessable",
            format!("framework {:?}: one of soc2, hipaa, gdpr", q.framework),
        )
    })?;
    let (since, until) = pedm_core::evidence::parse_period(&q.period)
        .map_err(|m| ApiErr::new(StatusCode::UNPROCESSABLE_ENTITY, "unprocessable", m))?;
    let signer = signer(&s)?;
    let data =
        s.cp.evidence(&c.actor, framework.as_str(), since, until)
            .await?;
    let files = crate::evidence::bundle(
        signer,
        s.cp.store().as_ref(),
        &data,
        framework,
        &q.period,
        since,
        until,
        &c.actor.user,
    )
    .await
    .map_err(integrity)?;
    Ok(Json(pedm_api::evidence::EvidenceBundle {
        files: files
            .into_iter()
            .map(|(name, content)| pedm_api::evidence::BundleFile { name, content })
            .collect(),
    }))
}

/// The audit log for the web console (its port, [`pedm_console::AuditIntegrity`]): the same
/// check and the same exports as the API.
pub struct ConsoleAudit(pub AppState);

#[async_trait::async_trait]
impl pedm_console::AuditIntegrity for ConsoleAudit {
    async fn status(&self) -> pedm_console::AuditStatus {
        let mut verified = checked(&self.0).await.map_err(|e| e.message);
        // A checkpoint that cannot be read is not shown as "none signed": the status fails.
        let newest_checkpoint = match self.0.cp.store().latest_checkpoint().await {
            Ok(c) => c.map(|c| pedm_console::CheckpointInfo {
                size: c.size as u64,
                time: c.time,
                key_id: c.key_id,
            }),
            Err(e) => {
                tracing::warn!(error = %e, "console: cannot read the newest checkpoint");
                verified = Err("the newest checkpoint cannot be read now".into());
                None
            }
        };
        pedm_console::AuditStatus {
            verified,
            newest_checkpoint,
        }
    }

    async fn export(&self, format: &str) -> Response {
        match download(&self.0, format).await {
            Ok(r) => r,
            Err(e) => e.into_response(),
        }
    }
}
