//! `pedm audit verify|prove|consistency|checkpoint|checkpoints|export|pubkey` and
//! `pedm report elevations`: the auditor's side. Everything that is checked is checked here,
//! locally, with `pedm-audit`; the server is trusted for nothing but delivering bytes (when
//! `--pubkey` is given).

use crate::UsageError;
use crate::args::{AuditCmd, ReportCmd};
use crate::commands::Ctx;
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
        } => {
            let opts = VerifyOptions {
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
                    let f = std::fs::File::open(&path).map_err(|e| {
                        UsageError(format!("--file: cannot open {}: {e}", path.display()))
                    })?;
                    let r = pedm_audit::verify_export_with(std::io::BufReader::new(f), &key, &opts)
                        .map_err(|f| {
                            anyhow!("audit export {} FAILED verification: {f}", path.display())
                        })?;
                    report_ok(ctx, &r, &key, &format!("export {}", path.display()))
                }
                None => verify_live(ctx, pubkey.as_deref(), &opts).await,
            }
        }
        AuditCmd::Prove { seq, size, pubkey } => prove(ctx, seq, size, pubkey.as_deref()).await,
        AuditCmd::Consistency { from, to, pubkey } => {
            consistency(ctx, from, to, pubkey.as_deref()).await
        }
        AuditCmd::Checkpoint => {
            let cp = ctx.client.sign_audit_checkpoint().await?;
            print_checkpoints(ctx, &[cp])
        }
        AuditCmd::Checkpoints => print_checkpoints(ctx, &ctx.client.audit_checkpoints().await?),
        AuditCmd::Export { format, output } => {
            let q = ExportQuery {
                format: Some(format),
            };
            match output {
                Some(path) => {
                    let f = std::fs::File::create(&path)
                        .with_context(|| format!("cannot create {}", path.display()))?;
                    let mut w = std::io::BufWriter::with_capacity(1 << 16, f);
                    let n = ctx.client.export_audit(&q, &mut w).await?;
                    w.into_inner()
                        .map_err(|e| anyhow!("writing {}: {e}", path.display()))?
                        .sync_all()?;
                    eprintln!("wrote {n} bytes to {}", path.display());
                    Ok(())
                }
                None => {
                    let mut out = std::io::BufWriter::with_capacity(1 << 16, std::io::stdout());
                    ctx.client.export_audit(&q, &mut out).await?;
                    Ok(())
                }
            }
        }
        AuditCmd::Pubkey => {
            let k = ctx.client.audit_pubkey().await?;
            ctx.emit(&k, || format!("{}\n", k.public_key))
        }
    }
}

fn parse_key(s: &str) -> Result<PublicKey> {
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

async fn verify_live(ctx: &Ctx, pubkey: Option<&str>, opts: &VerifyOptions) -> Result<()> {
    let key = key(ctx, pubkey).await?;
    let mut v =
        Verifier::new(&key, opts).map_err(|f| anyhow!("audit log FAILED verification: {f}"))?;
    // Checkpoints first, so none signs more than the events fetched afterwards.
    for cp in ctx.client.audit_checkpoints().await? {
        v.add_checkpoint(signed(&cp)?)
            .map_err(|f| anyhow!("audit log FAILED verification: {f}"))?;
    }
    let mut after = 0i64;
    loop {
        let page = ctx
            .client
            .audit_events(&AuditQuery {
                after: Some(after),
                limit: Some(PAGE),
                ..Default::default()
            })
            .await?;
        let Some(last) = page.last().map(|e| e.seq) else {
            break;
        };
        for e in &page {
            v.push_event(e)
                .map_err(|f| anyhow!("audit log FAILED verification: {f}"))?;
        }
        if last <= after {
            bail!("the server returned events out of order");
        }
        after = last;
    }
    let r = v
        .finish()
        .map_err(|f| anyhow!("audit log FAILED verification: {f}"))?;
    report_ok(ctx, &r, &key, ctx.client.base_url())
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
        "latest_checkpoint": r.latest_checkpoint,
        "key": key.to_string(),
        "warnings": r.warnings,
    });
    ctx.emit(&json, || {
        let mut t = Table::plain();
        t.row(vec!["verified".into(), what.into()]);
        t.row(vec!["events".into(), r.events.to_string()]);
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
            None if size == 0 => {}
            None => checks.push((
                format!("{name} checkpoint (size {size})"),
                Err("no signed checkpoint of this size: the root is the server's word only".into()),
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

const COLUMNS: [&str; 15] = [
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
