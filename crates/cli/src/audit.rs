//! `pedm audit verify|prove|consistency|checkpoint|checkpoints|export|pubkey` and
//! `pedm report elevations`: the auditor's side. Everything that is checked is checked here,
//! locally, with `pedm-audit`; the server is trusted for nothing but delivering bytes (when
//! `--pubkey` is given).

use crate::UsageError;
use crate::args::{AuditCmd, ReportCmd};
use crate::ctx::Ctx;
use crate::output::{self, Table, opt_time, time};
use anyhow::{Context, Result, anyhow, bail};
use pedm_api::*;
use pedm_audit::{PublicKey, SignedCheckpoint, Verifier, VerifyOptions, VerifyReport};

/// Events fetched per page during a live verify.
const PAGE: u32 = 5_000;

pub async fn run(ctx: &Ctx, cmd: AuditCmd) -> Result<()> {
    match cmd {
        AuditCmd::List { .. } => unreachable!("handled in commands"),
        AuditCmd::Verify {
            file,
            pubkey,
            require_covered,
            trusted_checkpoint,
            witnesses,
            witness_key,
        } => {
            let witness_keys = witness_keys(&witness_key, witnesses)?;
            let mut opts = VerifyOptions {
                require_covered,
                ..Default::default()
            };
            match file {
                Some(path) => {
                    let key = parse_key(pubkey.as_deref().ok_or_else(|| {
                        UsageError(
                            "--file needs --pubkey: an export is verified against a key you \
                             obtained from elsewhere, not one inside the file"
                                .into(),
                        )
                    })?)?;
                    if witnesses > 0 && trusted_checkpoint.is_empty() {
                        return Err(UsageError(
                            "--witnesses with --file needs --trusted-checkpoint: the cosigned \
                             checkpoint note to hold the export to"
                                .into(),
                        )
                        .into());
                    }
                    for t in &trusted_checkpoint {
                        let (note, text) = load_note(t)?;
                        opts.trusted_heads.push(trusted_head(
                            &note,
                            &key,
                            &t.display().to_string(),
                        )?);
                        require_cosigned(&note, &witness_keys, witnesses, &text)?;
                    }
                    let f = std::fs::File::open(&path).map_err(|e| {
                        UsageError(format!("--file: cannot open {}: {e}", path.display()))
                    })?;
                    let r = pedm_audit::verify_export_with(std::io::BufReader::new(f), &key, &opts)
                        .map_err(|f| {
                            anyhow!("audit export {} FAILED verification: {f}", path.display())
                        })?;
                    report_ok(ctx, &r, &key, &format!("export {}", path.display()))
                }
                None => {
                    let key = key(ctx, pubkey.as_deref()).await?;
                    for t in &trusted_checkpoint {
                        let (note, _) = load_note(t)?;
                        opts.trusted_heads.push(trusted_head(
                            &note,
                            &key,
                            &t.display().to_string(),
                        )?);
                    }
                    if witnesses > 0 {
                        let text = ctx.client.audit_note().await?;
                        let note = pedm_audit::CheckpointNote::parse(&text)
                            .map_err(|e| anyhow!("the server's checkpoint note: {e}"))?;
                        opts.trusted_heads.push(trusted_head(
                            &note,
                            &key,
                            "the server's newest note",
                        )?);
                        require_cosigned(
                            &note,
                            &witness_keys,
                            witnesses,
                            "the server's newest note",
                        )?;
                    }
                    verify_live(ctx, &key, &opts).await
                }
            }
        }
        AuditCmd::Show { seq } => show(ctx, seq).await,
        AuditCmd::Prove { seq, size, pubkey } => prove(ctx, seq, size, pubkey.as_deref()).await,
        AuditCmd::Consistency { from, to, pubkey } => {
            consistency(ctx, from, to, pubkey.as_deref()).await
        }
        AuditCmd::Checkpoint { output } => {
            let cp = ctx.client.sign_audit_checkpoint().await?;
            if let Some(path) = output {
                let note = ctx.client.audit_note().await?;
                let parsed = pedm_audit::CheckpointNote::parse(&note)
                    .map_err(|e| anyhow!("the server sent a malformed checkpoint note: {e}"))?;
                if parsed.size < cp.size {
                    bail!(
                        "the server's note signs {} events, fewer than its checkpoint of {}",
                        parsed.size,
                        cp.size
                    );
                }
                crate::files::write_atomic(&path, note.as_bytes(), 0o666)?;
                eprintln!(
                    "saved the checkpoint of {} events to {}; later: pedm audit verify \
                     --pubkey KEY --trusted-checkpoint {}",
                    parsed.size,
                    path.display(),
                    path.display()
                );
            }
            print_checkpoints(ctx, &[cp])
        }
        AuditCmd::Checkpoints => print_checkpoints(ctx, &ctx.client.audit_checkpoints().await?),
        AuditCmd::Export { format, output } => {
            let q = ExportQuery {
                format: Some(format),
            };
            match output {
                Some(path) => {
                    // Into a temporary file, renamed only when the whole export arrived: a
                    // refused or cut export leaves nothing that looks like one.
                    let mut tmp = path.as_os_str().to_owned();
                    tmp.push(".partial");
                    let tmp = std::path::PathBuf::from(tmp);
                    let f = std::fs::File::create(&tmp)
                        .with_context(|| format!("cannot create {}", tmp.display()))?;
                    let mut w = std::io::BufWriter::with_capacity(1 << 16, f);
                    let done = async {
                        let n = ctx.client.export_audit(&q, &mut w).await?;
                        w.into_inner()
                            .map_err(|e| anyhow!("writing {}: {e}", tmp.display()))?
                            .sync_all()?;
                        std::fs::rename(&tmp, &path)
                            .with_context(|| format!("cannot write {}", path.display()))?;
                        anyhow::Ok(n)
                    }
                    .await;
                    match done {
                        Ok(n) => {
                            eprintln!("wrote {n} bytes to {}", path.display());
                            Ok(())
                        }
                        Err(e) => {
                            let _ = std::fs::remove_file(&tmp);
                            Err(e)
                        }
                    }
                }
                None => {
                    let mut out = std::io::BufWriter::with_capacity(1 << 16, std::io::stdout());
                    ctx.client.export_audit(&q, &mut out).await?;
                    Ok(())
                }
            }
        }
        AuditCmd::Archive {
            output,
            before,
            pubkey,
            keep,
        } => archive(ctx, &output, before, pubkey.as_deref(), keep).await,
        AuditCmd::Pubkey { vkey } => {
            let k = ctx.client.audit_pubkey().await?;
            if vkey {
                let v = k
                    .vkey
                    .clone()
                    .ok_or_else(|| anyhow!("the server does not publish a note verifier key"))?;
                return ctx.emit(&k, || format!("{v}\n"));
            }
            ctx.emit(&k, || format!("{}\n", k.public_key))
        }
    }
}

pub(crate) fn parse_key(s: &str) -> Result<PublicKey> {
    s.trim().parse::<PublicKey>().map_err(|e| {
        UsageError(format!(
            "--pubkey: {s:?} is not a public key like ed25519:<base64> ({e})"
        ))
        .into()
    })
}

fn signed(cp: &AuditCheckpoint) -> Result<SignedCheckpoint> {
    serde_json::from_value(serde_json::to_value(cp)?)
        .map_err(|e| anyhow!("the server sent a malformed checkpoint: {e}"))
}

/// The key to check against: the one given, or the server's (with a warning).
async fn key(ctx: &Ctx, pubkey: Option<&str>) -> Result<PublicKey> {
    match pubkey {
        Some(k) => parse_key(k),
        None => {
            let k = ctx.client.audit_pubkey().await?;
            eprintln!(
                "note: using the public key the server presents ({}); pass --pubkey with a key \
                 obtained out of band to not trust the server",
                k.public_key
            );
            parse_key(&k.public_key)
        }
    }
}

async fn verify_live(ctx: &Ctx, key: &PublicKey, opts: &VerifyOptions) -> Result<()> {
    let fail = |f: pedm_audit::VerifyFailure| anyhow!("audit log FAILED verification: {f}");
    let mut v = Verifier::new(key, opts).map_err(fail)?;
    // Checkpoints first, so none signs more than the events fetched afterwards. A server that
    // found its log broken refuses them: then check the chain alone to name the first bad
    // event, and fail either way.
    // A log whose oldest events were archived starts after them: the verifier holds that start
    // to its checkpoint and to the event that records the pruning; earlier checkpoints belong
    // to the archive.
    let pruned = ctx.client.audit_pruned().await?;
    let start = pruned.as_ref().map_or(0, |p| p.through);
    let refused = match ctx.client.audit_checkpoints().await {
        Ok(cps) => {
            for cp in cps.iter().filter(|c| c.size as i64 >= start) {
                v.add_checkpoint(signed(cp)?).map_err(fail)?;
            }
            None
        }
        Err(pedm_api::ApiError::Server {
            status: 409,
            message,
            ..
        }) => Some(message),
        Err(e) => return Err(e.into()),
    };
    let mut after = 0i64;
    if let Some(p) = pruned {
        v.start_after(
            &pedm_audit::PrunedBase {
                through: p.through as u64,
                hash: p.hash,
                peaks: p.peaks,
            },
            None,
        )
        .map_err(fail)?;
        after = p.through;
    }
    loop {
        let page = ctx
            .client
            .audit_events(&AuditQuery {
                after: Some(after),
                limit: Some(PAGE),
                sealed: Some(true),
                ..Default::default()
            })
            .await?;
        let Some(last) = page.last().map(|e| e.seq) else {
            break;
        };
        for e in &page {
            if let Err(f) = v.push_event(e) {
                return Err(match &refused {
                    Some(m) => anyhow!("audit log FAILED verification: {f} (the server: {m})"),
                    None => fail(f),
                });
            }
        }
        if last <= after {
            bail!("the server returned events out of order");
        }
        after = last;
    }
    let r = v.finish();
    if let Some(m) = refused {
        return Err(match r {
            Err(f) => anyhow!("audit log FAILED verification: {f} (the server: {m})"),
            Ok(_) => anyhow!("audit log FAILED verification: the server reports: {m}"),
        });
    }
    report_ok(ctx, &r.map_err(fail)?, key, ctx.client.base_url())
}

/// `pedm audit archive`: the oldest events into a segment file, verified here with the public
/// key, then (unless `keep`) pruned from the server, which records the segment's SHA-256.
async fn archive(
    ctx: &Ctx,
    output: &std::path::Path,
    before: Option<String>,
    pubkey: Option<&str>,
    keep: bool,
) -> Result<()> {
    use sha2::Digest as _;
    let key = key(ctx, pubkey).await?;
    let mut tmp = output.as_os_str().to_owned();
    tmp.push(".partial");
    let tmp = std::path::PathBuf::from(tmp);
    let f = std::fs::File::create_new(&tmp)
        .with_context(|| format!("cannot create {}", tmp.display()))?;
    let mut w = std::io::BufWriter::with_capacity(1 << 16, f);
    let fetched = ctx
        .client
        .audit_archive(&pedm_api::ArchiveQuery { before }, &mut w)
        .await;
    let written = fetched.map_err(anyhow::Error::from).and_then(|_| {
        w.into_inner()
            .map_err(|e| anyhow!("writing {}: {e}", tmp.display()))?
            .sync_all()?;
        Ok(())
    });
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    let opts = VerifyOptions {
        require_covered: true,
        ..Default::default()
    };
    let report = std::fs::File::open(&tmp)
        .map_err(anyhow::Error::from)
        .and_then(|f| {
            pedm_audit::verify_export_with(std::io::BufReader::new(f), &key, &opts)
                .map_err(|f| anyhow!("the archive segment FAILED verification: {f}"))
        });
    let report = match report {
        Ok(r) => r,
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
    };
    std::fs::rename(&tmp, output).with_context(|| format!("cannot write {}", output.display()))?;
    let digest = ::hex::encode(sha2::Sha256::digest(std::fs::read(output)?));
    let first = report.pruned + 1;
    if keep {
        eprintln!(
            "archived events {first}..={} to {} (sha256 {digest}); nothing pruned (--keep)",
            report.events,
            output.display()
        );
        return Ok(());
    }
    let p = ctx
        .client
        .prune_audit(&pedm_api::PruneAudit {
            through: report.events as i64,
            archive_sha256: digest.clone(),
        })
        .await?;
    ctx.emit(&p, || {
        format!(
            "archived events {first}..={} to {} (verified; sha256 {digest}) and pruned them              from the server; keep the file: it is their only copy\n",
            p.through,
            output.display()
        )
    })
}

/// Reads a checkpoint note saved with `pedm audit checkpoint --output`.
fn load_note(path: &std::path::Path) -> Result<(pedm_audit::CheckpointNote, String)> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        UsageError(format!(
            "--trusted-checkpoint: cannot read {}: {e}",
            path.display()
        ))
    })?;
    let note = pedm_audit::CheckpointNote::parse(&text)
        .map_err(|e| UsageError(format!("--trusted-checkpoint {}: {e}", path.display())))?;
    Ok((note, path.display().to_string()))
}

/// Checks the log's signature on `note` with `key` and turns it into a trusted head.
fn trusted_head(
    note: &pedm_audit::CheckpointNote,
    key: &PublicKey,
    what: &str,
) -> Result<pedm_audit::TrustedHead> {
    note.verify_log(&pedm_audit::note::log_vkey(key, &note.origin))
        .map_err(|e| anyhow!("checkpoint {what} is not signed by {key}: {e}"))?;
    Ok(pedm_audit::TrustedHead {
        size: note.size,
        root: note.root,
        what: what.to_string(),
    })
}

fn witness_keys(keys: &[String], required: usize) -> Result<Vec<pedm_audit::VerifierKey>> {
    let keys: Vec<pedm_audit::VerifierKey> = keys
        .iter()
        .map(|k| {
            k.parse::<pedm_audit::VerifierKey>()
                .map_err(|e| UsageError(format!("--witness-key {k:?}: {e}")).into())
                .and_then(|k| {
                    if k.alg == pedm_audit::note::ALG_COSIGNATURE_V1 {
                        Ok(k)
                    } else {
                        Err(UsageError(format!(
                            "--witness-key {k}: not a witness (cosignature/v1) key"
                        ))
                        .into())
                    }
                })
        })
        .collect::<Result<_>>()?;
    if required > keys.len() {
        return Err(UsageError(format!(
            "--witnesses {required} needs at least {required} --witness-key (got {})",
            keys.len()
        ))
        .into());
    }
    Ok(keys)
}

fn require_cosigned(
    note: &pedm_audit::CheckpointNote,
    keys: &[pedm_audit::VerifierKey],
    required: usize,
    what: &str,
) -> Result<()> {
    if required == 0 {
        return Ok(());
    }
    let valid: Vec<&str> = keys
        .iter()
        .filter(|k| note.cosigned_by(k).is_some())
        .map(|k| k.name.as_str())
        .collect();
    if valid.len() < required {
        bail!(
            "audit log FAILED verification: the checkpoint of {} events ({what}) carries {} valid \
             witness cosignature(s){}, {required} required (a witness refuses to cosign a log \
             that was rolled back or forked)",
            note.size,
            valid.len(),
            if valid.is_empty() {
                String::new()
            } else {
                format!(" ({})", valid.join(", "))
            }
        );
    }
    Ok(())
}

/// `pedm audit show SEQ`: one event in full, its content checked against its hash.
async fn show(ctx: &Ctx, seq: i64) -> Result<()> {
    // The content is checked as stored (personal data sealed, where it is) and shown opened.
    let one = |sealed: bool| async move {
        ctx.client
            .audit_events(&AuditQuery {
                after: Some(seq - 1),
                limit: Some(1),
                sealed: Some(sealed),
                ..Default::default()
            })
            .await?
            .into_iter()
            .next()
            .filter(|e| e.seq == seq)
            .ok_or_else(|| anyhow!("audit event {seq} not found"))
    };
    let stored = one(true).await?;
    let content = pedm_core::audit::verify_chain(stored.prev_hash, stored.seq, [&stored]).map(drop);
    let e = one(false).await?;
    let json = serde_json::json!({ "event": e, "content_matches_hash": content.is_ok() });
    ctx.emit(&json, || {
        let mut t = Table::plain();
        t.row(vec!["seq".into(), e.seq.to_string()]);
        t.row(vec!["at".into(), time(e.at)]);
        t.row(vec!["actor".into(), e.actor.clone()]);
        t.row(vec!["action".into(), e.action.clone()]);
        t.row(vec!["outcome".into(), e.outcome.as_str().to_string()]);
        t.row(vec![
            "subject".into(),
            e.subject.clone().unwrap_or_default(),
        ]);
        t.row(vec![
            "data".into(),
            serde_json::to_string_pretty(&e.data).unwrap_or_default(),
        ]);
        t.row(vec!["prev_hash".into(), hex(&e.prev_hash)]);
        t.row(vec!["hash".into(), hex(&e.hash)]);
        t.row(vec![
            "content".into(),
            if content.is_ok() {
                "matches its hash".into()
            } else {
                "DOES NOT match its hash (altered)".into()
            },
        ]);
        t.render()
    })?;
    if content.is_err() {
        bail!("audit event {seq}: content does not match its hash (altered event)");
    }
    Ok(())
}

fn report_ok(ctx: &Ctx, r: &VerifyReport, key: &PublicKey, what: &str) -> Result<()> {
    let latest = r.latest_checkpoint.as_ref().map(|c| &c.checkpoint);
    let json = serde_json::json!({
        "ok": true,
        "source": what,
        "events": r.events,
        "head_hash": hex(&r.head_hash),
        "root": hex(&r.root),
        "checkpoints": r.checkpoints,
        "covered": r.covered,
        "pruned": r.pruned,
        "latest_checkpoint": r.latest_checkpoint,
        "key": key.to_string(),
        "warnings": r.warnings,
    });
    ctx.emit(&json, || {
        let mut t = Table::plain();
        t.row(vec!["verified".into(), what.into()]);
        t.row(vec!["events".into(), r.events.to_string()]);
        if r.pruned > 0 {
            t.row(vec![
                "pruned".into(),
                format!("1..={} (archived; their root is signed)", r.pruned),
            ]);
        }
        t.row(vec!["checkpoints".into(), r.checkpoints.to_string()]);
        t.row(vec![
            "covered".into(),
            if r.covered == 0 {
                "none".into()
            } else {
                format!("1..={}", r.covered)
            },
        ]);
        t.row(vec![
            "latest checkpoint".into(),
            latest.map_or(String::new(), |c| {
                format!("size {} at {} by key {}", c.size, time(c.time), c.key_id)
            }),
        ]);
        t.row(vec!["head hash".into(), hex(&r.head_hash)]);
        t.row(vec!["merkle root".into(), hex(&r.root)]);
        t.row(vec!["key".into(), key.to_string()]);
        let mut s = t.render();
        for w in &r.warnings {
            s.push_str(&format!("warning: {w}\n"));
        }
        s.push_str("OK\n");
        s
    })
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn unhex32(s: &str) -> Result<[u8; 32]> {
    if s.len() != 64 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        bail!("the server sent a malformed hash {s:?}");
    }
    let mut out = [0u8; 32];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(&s[2 * i..2 * i + 2], 16)?;
    }
    Ok(out)
}

async fn prove(ctx: &Ctx, seq: i64, size: Option<u64>, pubkey: Option<&str>) -> Result<()> {
    let key = key(ctx, pubkey).await?;
    let p = ctx
        .client
        .inclusion_proof(&InclusionQuery { seq, size })
        .await?;
    let events = ctx
        .client
        .audit_events(&AuditQuery {
            after: Some(seq - 1),
            limit: Some(1),
            sealed: Some(true),
            ..Default::default()
        })
        .await?;
    let e = events
        .into_iter()
        .next()
        .filter(|e| e.seq == seq)
        .ok_or_else(|| anyhow!("audit event {seq} not found"))?;
    let cp = signed(&p.checkpoint)?;
    let proof: Vec<[u8; 32]> = p.proof.iter().map(|h| unhex32(h)).collect::<Result<_>>()?;
    // Each check names what failed; all must pass.
    let mut checks: Vec<(&str, std::result::Result<(), String>)> = vec![];
    checks.push((
        "event content matches its hash",
        pedm_core::audit::verify_chain(e.prev_hash, e.seq, [&e])
            .map(drop)
            .map_err(|e| e.to_string()),
    ));
    checks.push((
        "proof is for this event",
        (unhex32(&p.leaf)? == e.hash && p.leaf_index + 1 == seq as u64)
            .then_some(())
            .ok_or_else(|| "the proof's leaf is not this event's hash".to_string()),
    ));
    checks.push((
        "checkpoint signature",
        pedm_audit::verify(&cp, &key).map_err(|e| e.to_string()),
    ));
    checks.push((
        "inclusion in the signed root",
        (p.tree_size == cp.checkpoint.size)
            .then_some(())
            .ok_or_else(|| "proof tree size differs from the checkpoint".to_string())
            .and_then(|()| {
                pedm_audit::verify_inclusion(
                    &e.hash,
                    p.leaf_index,
                    p.tree_size,
                    &proof,
                    &cp.checkpoint.root,
                )
                .map_err(|e| e.to_string())
            }),
    ));
    let ok = checks.iter().all(|(_, r)| r.is_ok());
    let json = serde_json::json!({
        "ok": ok,
        "event": e,
        "proof": p,
        "checks": checks.iter().map(|(n, r)| serde_json::json!({"check": n, "ok": r.is_ok(), "error": r.as_ref().err()})).collect::<Vec<_>>(),
    });
    ctx.emit(&json, || {
        let mut t = Table::plain();
        t.row(vec![
            "event".into(),
            format!("{seq} ({} by {} at {})", e.action, e.actor, time(e.at)),
        ]);
        t.row(vec!["leaf (event hash)".into(), p.leaf.clone()]);
        t.row(vec!["leaf index".into(), p.leaf_index.to_string()]);
        t.row(vec!["tree size".into(), p.tree_size.to_string()]);
        t.row(vec!["signed root".into(), p.checkpoint.root.clone()]);
        t.row(vec!["signed at".into(), p.checkpoint.time.clone()]);
        t.row(vec!["key id".into(), p.checkpoint.key_id.clone()]);
        for (i, h) in p.proof.iter().enumerate() {
            t.row(vec![format!("path[{i}]"), h.clone()]);
        }
        t.render() + &checks_text(&checks, ok)
    })?;
    if !ok {
        bail!("the inclusion proof of event {seq} does not verify");
    }
    Ok(())
}

async fn consistency(ctx: &Ctx, from: u64, to: Option<u64>, pubkey: Option<&str>) -> Result<()> {
    let key = key(ctx, pubkey).await?;
    let p = ctx
        .client
        .consistency_proof(&ConsistencyQuery { from, to })
        .await?;
    let old_root = unhex32(&p.from_root)?;
    let new_root = unhex32(&p.to_root)?;
    let proof: Vec<[u8; 32]> = p.proof.iter().map(|h| unhex32(h)).collect::<Result<_>>()?;
    let mut checks: Vec<(String, std::result::Result<(), String>)> = vec![];
    for (name, cp, size, root) in [
        ("from", &p.from_checkpoint, p.from, old_root),
        ("to", &p.to_checkpoint, p.to, new_root),
    ] {
        match cp {
            Some(c) => {
                let c = signed(c)?;
                checks.push((
                    format!("{name} checkpoint (size {size}) signature and root"),
                    pedm_audit::verify(&c, &key)
                        .map_err(|e| e.to_string())
                        .and_then(|()| {
                            (c.checkpoint.root == root && c.checkpoint.size == size)
                                .then_some(())
                                .ok_or_else(|| "root differs from the signed one".into())
                        }),
                ));
            }
            // Any earlier size: its root is proven to be a prefix of the signed `to` root.
            None if size == 0 || name == "from" => {}
            None => checks.push((
                format!("{name} checkpoint (size {size})"),
                Err(
                    "no signed checkpoint of this size: the root is the server's word only \
                     (omit TO to prove against the newest checkpoint)"
                        .into(),
                ),
            )),
        }
    }
    checks.push((
        "consistency proof".into(),
        pedm_audit::verify_consistency(p.from, p.to, &old_root, &new_root, &proof)
            .map_err(|e| e.to_string()),
    ));
    let ok = checks.iter().all(|(_, r)| r.is_ok());
    let json = serde_json::json!({
        "ok": ok,
        "proof": p,
        "checks": checks.iter().map(|(n, r)| serde_json::json!({"check": n, "ok": r.is_ok(), "error": r.as_ref().err()})).collect::<Vec<_>>(),
    });
    ctx.emit(&json, || {
        let mut t = Table::plain();
        t.row(vec![
            "from".into(),
            format!("{} root {}", p.from, p.from_root),
        ]);
        t.row(vec!["to".into(), format!("{} root {}", p.to, p.to_root)]);
        for (i, h) in p.proof.iter().enumerate() {
            t.row(vec![format!("proof[{i}]"), h.clone()]);
        }
        t.render() + &checks_text(&checks, ok)
    })?;
    if !ok {
        bail!("the consistency proof {}..{} does not verify", p.from, p.to);
    }
    Ok(())
}

fn print_checkpoints(ctx: &Ctx, cps: &[AuditCheckpoint]) -> Result<()> {
    ctx.emit(&cps, || {
        let mut t = Table::new(&["SIZE", "TIME", "KEY ID", "ROOT"]);
        for c in cps {
            t.row(vec![
                c.size.to_string(),
                c.time.clone(),
                c.key_id.clone(),
                c.root.clone(),
            ]);
        }
        t.render()
    })
}

// ------------------------------------------------------------------ reports

pub async fn report(ctx: &Ctx, cmd: ReportCmd) -> Result<()> {
    let ReportCmd::Elevations { since, format } = cmd;
    let rows = ctx
        .client
        .elevation_report(&ReportQuery { since: Some(since) })
        .await?;
    let format = if ctx.json { "json" } else { format.as_str() };
    let text = match format {
        "json" => output::json_text(&rows)?,
        "csv" => output::csv_text(&COLUMNS, rows.iter().map(|r| cells(r, true)))?,
        _ => {
            let mut t = Table::new(&COLUMNS);
            for r in &rows {
                t.row(cells(r, false));
            }
            t.render()
        }
    };
    Ok(output::write_out(&text)?)
}

const COLUMNS: [&str; 16] = [
    "USER",
    "TARGET",
    "ROLE",
    "REQUESTED",
    "STARTED",
    "ENDED",
    "HELD",
    "STATE",
    "JUSTIFICATION",
    "TICKET",
    "APPROVERS",
    "BREAK-GLASS",
    "END REASON",
    "ENDED BY",
    "SESSIONS",
    "GRANT",
];

fn cells(r: &ElevationRow, machine: bool) -> Vec<String> {
    let held = if machine {
        r.held_secs.to_string()
    } else {
        format_duration(r.held_secs)
    };
    vec![
        r.user.clone(),
        r.target.clone(),
        r.role.clone(),
        opt_time(r.requested_at),
        time(r.started_at),
        opt_time(r.ended_at),
        held,
        r.state.to_string(),
        r.justification.clone().unwrap_or_default(),
        r.ticket.clone().unwrap_or_default(),
        r.approvers.join(" "),
        if r.break_glass { "yes" } else { "no" }.into(),
        r.end_reason.clone().unwrap_or_default(),
        r.ended_by.clone().unwrap_or_default(),
        r.sessions.to_string(),
        r.grant_id.to_string(),
    ]
}

/// One line per check, then the verdict.
fn checks_text<N: std::fmt::Display, E: std::fmt::Display>(
    checks: &[(N, Result<(), E>)],
    ok: bool,
) -> String {
    let mut s = String::new();
    for (n, r) in checks {
        match r {
            Ok(()) => s.push_str(&format!("ok    {n}\n")),
            Err(e) => s.push_str(&format!("FAIL  {n}: {e}\n")),
        }
    }
    s.push_str(if ok { "VERIFIED\n" } else { "NOT VERIFIED\n" });
    s
}
