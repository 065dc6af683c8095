//! `pedm policy`: apply, list, show, test (locally, with the same engine as the server),
//! simulate (on the server, against recorded history).

use crate::args::PolicyCmd;
use crate::ctx::Ctx;
use crate::output::{self, list_table};
use anyhow::{Context, Result, bail};
use pedm_api::*;
use std::path::Path;

pub async fn run(ctx: &Ctx, cmd: PolicyCmd) -> Result<()> {
    let c = &ctx.client;
    match cmd {
        PolicyCmd::Apply { paths, comment } => {
            let sources = crate::policy_files::read_sources(&paths)?;
            let submitted = c
                .submit_policies(&ApplyPolicies { sources, comment })
                .await?;
            let v = match submitted {
                pedm_api::policy_review::PolicySubmitted::Applied(v) => v,
                pedm_api::policy_review::PolicySubmitted::Pending(p) => {
                    return crate::policy_review::proposed(ctx, &p);
                }
            };
            ctx.emit(&v, || {
                format!(
                    "policy version {} in force ({} files, digest {})\n",
                    v.version,
                    v.sources.len(),
                    &v.digest[..12.min(v.digest.len())]
                )
            })
        }
        PolicyCmd::Pending { all } => crate::policy_review::pending(ctx, all).await,
        PolicyCmd::Approve { id, comment } => crate::policy_review::approve(ctx, id, comment).await,
        PolicyCmd::Reject { id, comment } => crate::policy_review::reject(ctx, id, comment).await,
        PolicyCmd::List => {
            let versions = c.policy_versions().await?;
            ctx.emit(&versions, || list_table(&versions, ctx.now).render())
        }
        PolicyCmd::Show { number } => {
            let v = match number {
                Some(n) => c.policy_version(n).await?,
                None => c.policies().await?,
            };
            ctx.emit(&v, || {
                let mut out = format!(
                    "// policy version {} applied {} by {}\n",
                    v.version, v.created_at, v.created_by
                );
                for s in &v.sources {
                    out.push_str(&format!("\n// ---- {}\n{}\n", s.name, s.text.trim_end()));
                }
                out
            })
        }
        PolicyCmd::Test { cases, policies } => {
            let sources = if policies.is_empty() {
                c.policies().await?.sources
            } else {
                crate::policy_files::read_sources(&policies)?
            };
            let pairs: Vec<(String, String)> =
                sources.into_iter().map(|s| (s.name, s.text)).collect();
            let engine = pedm_policy::Engine::load(&pairs, pedm_policy::EngineOptions::default())
                .context("the policies do not load")?;
            let text = std::fs::read_to_string(&cases)
                .with_context(|| format!("cannot read {}", cases.display()))?;
            let report = pedm_policy::run_cases(&engine, &text)
                .with_context(|| format!("bad case file {}", cases.display()))?;
            ctx.emit(&report, || format!("{report}\n"))?;
            if !report.all_passed() {
                bail!(
                    "{} of {} policy test cases failed",
                    report.failed,
                    report.failed + report.passed
                );
            }
            Ok(())
        }
        PolicyCmd::Check {
            policies,
            properties,
        } => crate::policy_check::check(ctx, &policies, properties).await,
        PolicyCmd::Owners { overdue } => crate::review::owners(ctx, overdue).await,
        PolicyCmd::Simulate {
            suggest_commands: true,
            since,
            target,
            role,
            output,
            ..
        } => {
            let r = c
                .suggest_commands(&CommandSuggestionQuery {
                    since: Some(since),
                    target,
                    role,
                })
                .await?;
            if let Some(dir) = &output {
                std::fs::create_dir_all(dir)
                    .with_context(|| format!("cannot create {}", dir.display()))?;
                for role in &r.roles {
                    let path = dir.join(suggestion_file(role));
                    std::fs::write(&path, &role.policy)
                        .with_context(|| format!("cannot write {}", path.display()))?;
                }
            }
            ctx.emit(&r, || suggestions_text(&r, output.as_deref()))
        }
        PolicyCmd::Simulate {
            policies, since, ..
        } => {
            let sources = crate::policy_files::read_sources(&policies)?;
            let r = c
                .simulate_policies(&SimulatePolicies {
                    sources,
                    since: Some(since),
                })
                .await?;
            ctx.emit(&r, || simulation_text(&r))
        }
    }
}

/// `commands-<target>-<role>.cedar` (names are checked by the server; kept to file-safe
/// characters anyway).
fn suggestion_file(r: &RoleCommands) -> String {
    let safe = |s: &str| -> String {
        s.chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                    c
                } else {
                    '_'
                }
            })
            .collect()
    };
    format!("commands-{}-{}.cedar", safe(&r.target), safe(&r.role))
}

fn suggestions_text(r: &CommandSuggestions, written: Option<&Path>) -> String {
    let mut out = format!(
        "{} commands run since {} under {} role(s)\n",
        r.events,
        output::time(r.since),
        r.roles.len()
    );
    for role in &r.roles {
        out.push_str(&format!(
            "\n{} on {}: {} distinct command(s)\n",
            role.role,
            role.target,
            role.commands.len()
        ));
        let mut t = output::Table::new(&["COUNT", "LAST", "USERS", "COMMAND"]);
        for c in &role.commands {
            let command = if c.args.is_empty() {
                c.path.clone()
            } else {
                format!("{} {}", c.path, c.args)
            };
            t.row(vec![
                c.count.to_string(),
                output::time(c.last_at),
                c.users.join(","),
                command,
            ]);
        }
        out.push_str(&t.render());
        match written {
            Some(dir) => out.push_str(&format!(
                "policy: {}\n",
                dir.join(suggestion_file(role)).display()
            )),
            None => {
                out.push('\n');
                for line in role.policy.lines() {
                    out.push_str(&pedm_core::text::terminal_safe(line));
                    out.push('\n');
                }
            }
        }
    }
    out
}

fn simulation_text(r: &SimulationReport) -> String {
    let mut out = format!(
        "replayed {} requests since {} ({} skipped: role or user gone)\n",
        r.evaluated,
        output::time(r.since),
        r.skipped
    );
    if r.changes.is_empty() {
        out.push_str("no decision would change\n");
    } else {
        out.push_str(&format!("{} decisions would change:\n", r.changes.len()));
        let mut t = output::Table::new(&[
            "REQUEST",
            "REQUESTER",
            "TARGET",
            "ROLE",
            "CREATED",
            "RECORDED",
            "CANDIDATE",
            "POLICY",
        ]);
        for c in &r.changes {
            t.row(vec![
                c.request_id.to_string(),
                c.requester.clone(),
                c.target.clone(),
                c.role.clone(),
                output::time(c.created_at),
                c.recorded.clone(),
                c.candidate.clone(),
                c.candidate_policy.clone().unwrap_or_default(),
            ]);
        }
        out.push_str(&t.render());
    }
    out.push_str(&format!(
        "\nauto-approval is recommended only after at least {} decisions, never for roles \
         that run as root, sensitive targets (env=prod) or break-glass roles\n",
        r.min_sample
    ));
    if !r.auto_approve_candidates.is_empty() {
        out.push_str("\ncould auto-approve:\n");
        for a in &r.auto_approve_candidates {
            out.push_str(&format!("  {a}\n"));
        }
    }
    if !r.not_recommended.is_empty() {
        out.push_str(&format!(
            "\nnot recommended for auto-approval (minimum sample {}):\n",
            r.min_sample
        ));
        for a in &r.not_recommended {
            out.push_str(&format!("  {a}\n"));
        }
    }
    if !r.unused_eligibilities.is_empty() {
        out.push_str("\nnever used in this period (privilege creep?):\n");
        for p in &r.unused_eligibilities {
            out.push_str(&format!("  {p}\n"));
        }
    }
    if let Some(b) = &r.blast_radius {
        out.push_str(&crate::policy_check::blast_text(b));
    }
    if let Some(p) = &r.properties {
        out.push('\n');
        out.push_str(&crate::policy_check::properties_text(p));
    }
    out
}
