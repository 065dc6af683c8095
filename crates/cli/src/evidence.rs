//! `pedm report evidence` (the server's signed bundle, written to a directory) and `pedm
//! report verify-bundle` (checked offline with the audit public key: `pedm_audit::bundle`).

use crate::ctx::Ctx;
use anyhow::{Context, Result, bail};
use pedm_api::evidence::EvidenceQuery;
use pedm_audit::bundle;
use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

pub async fn write(ctx: &Ctx, framework: &str, period: &str, out: &Path) -> Result<()> {
    if out.exists() && out.read_dir()?.next().is_some() {
        bail!("{} is not empty: give a new directory", out.display());
    }
    let b = ctx
        .client
        .evidence_bundle(&EvidenceQuery {
            framework: framework.into(),
            period: period.into(),
        })
        .await?;
    // Names come from the server: plain names only, never a path.
    if let Some(f) = b.files.iter().find(|f| !bundle::plain_name(&f.name)) {
        bail!(
            "the server sent a file named {:?}: refusing to write it",
            f.name
        );
    }
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    for f in &b.files {
        let path = out.join(&f.name);
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .with_context(|| format!("writing {}", path.display()))?;
        file.write_all(f.content.as_bytes())?;
        file.sync_all()?;
    }
    let names: Vec<&str> = b.files.iter().map(|f| f.name.as_str()).collect();
    ctx.emit(&names, || {
        format!(
            "wrote {} files to {} (check them with `pedm report verify-bundle {} --pubkey KEY`)\n",
            names.len(),
            out.display(),
            out.display()
        )
    })
}

pub fn verify(ctx: &Ctx, dir: &Path, pubkey: &str) -> Result<()> {
    let key = crate::audit::parse_key(pubkey)?;
    let mut files = BTreeMap::new();
    for e in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let e = e?;
        let name = e.file_name().to_string_lossy().into_owned();
        if !e.file_type()?.is_file() {
            bail!(
                "{name} in {} is not a file: not part of a bundle",
                dir.display()
            );
        }
        files.insert(name, std::fs::read(e.path())?);
    }
    let r =
        bundle::verify_bundle(&files, &key).map_err(|e| anyhow::anyhow!("NOT VERIFIED: {e}"))?;
    let m = &r.manifest;
    let summary = serde_json::json!({
        "verified": true, "framework": m.framework, "period": m.period, "since": m.since,
        "until": m.until, "files": m.files.len(), "log_size_at_start": r.start_size,
        "log_size_at_end": r.end_size,
    });
    ctx.emit(&summary, || {
        format!(
            "VERIFIED: {} evidence for {} ({} to {}): {} files signed by key {}; the audit log \
             grew from {} to {} events without being rewritten\n",
            m.framework,
            m.period,
            m.since,
            m.until,
            m.files.len(),
            m.key_id,
            r.start_size,
            r.end_size
        )
    })
}
