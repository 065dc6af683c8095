//! `pedm policy check` (policy properties proved over everyone pedm knows) and the blast
//! radius section of `pedm policy simulate`.

use crate::ctx::Ctx;
use crate::output;
use anyhow::{Context, Result, bail};
use pedm_api::*;
use pedm_core::text::terminal_safe;
use std::path::PathBuf;

pub async fn check(ctx: &Ctx, policies: &[PathBuf], properties: Option<PathBuf>) -> Result<()> {
    let sources = if policies.is_empty() {
        None
    } else {
        Some(crate::policy_files::read_sources(policies)?)
    };
    let properties = match properties {
        Some(path) => {
            let text = std::fs::read_to_string(&path)
                .with_context(|| format!("cannot read {}", path.display()))?;
            let file: PropertyFile = toml::from_str(&text)
                .with_context(|| format!("bad property file {}", path.display()))?;
            if file.properties.is_empty() {
                bail!("{} states no [[property]]", path.display());
            }
            Some(file.properties)
        }
        None => None,
    };
    let r = ctx
        .client
        .check_policies(&CheckPolicies {
            sources,
            properties,
        })
        .await?;
    ctx.emit(&r, || properties_text(&r))?;
    let broken = r.broken().count();
    if broken > 0 {
        bail!(
            "{broken} of {} policy properties broken",
            r.properties.len()
        );
    }
    Ok(())
}

fn coverage_text(c: &Coverage) -> String {
    let mut out = format!(
        "over {} users ({} kinds the policies tell apart), {} roles ({} kinds) and {} contexts: \
         {} decisions\n",
        c.users, c.principal_classes, c.roles, c.role_classes, c.contexts, c.decisions
    );
    for v in &c.varied {
        out.push_str(&format!("  varied {}\n", terminal_safe(v)));
    }
    if !c.complete {
        out.push_str("  NOT EXHAUSTIVE: some contexts may be missed (see above)\n");
    }
    out
}

pub fn properties_text(r: &PropertyReport) -> String {
    let mut out = String::from("policy properties, ");
    out.push_str(&coverage_text(&r.coverage));
    let mut t = output::Table::new(&["RESULT", "CASES", "PROPERTY", "COUNTEREXAMPLE"]);
    for p in &r.properties {
        t.row(vec![
            if p.holds { "holds" } else { "BROKEN" }.into(),
            p.cases.to_string(),
            p.name.clone(),
            p.counterexample
                .as_ref()
                .map(|c| c.to_string())
                .unwrap_or_default(),
        ]);
    }
    out.push_str(&t.render());
    out
}

pub fn blast_text(b: &BlastRadius) -> String {
    let mut out = String::from("\nblast radius (who gains and loses what), ");
    out.push_str(&coverage_text(&b.coverage));
    if b.changes.is_empty() {
        out.push_str("nobody gains or loses anything\n");
        return out;
    }
    let mut t = output::Table::new(&[
        "CHANGE", "USER", "TARGET", "ROLE", "BEFORE", "AFTER", "CONTEXT",
    ]);
    for c in &b.changes {
        t.row(vec![
            match c.kind {
                ChangeKind::Gains => "+ gains",
                ChangeKind::Loses => "- loses",
                ChangeKind::Changes => "~ changes",
            }
            .into(),
            c.user.clone(),
            c.target.clone(),
            c.role.clone(),
            c.before.clone(),
            c.after.clone(),
            c.context.clone(),
        ]);
    }
    out.push_str(&t.render());
    if b.truncated > 0 {
        out.push_str(&format!(
            "... and {} more changes not listed\n",
            b.truncated
        ));
    }
    out
}
