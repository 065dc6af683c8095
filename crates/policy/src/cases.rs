//! Policy test cases (`pedm policy test FILE`). Format: see the crate docs.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::engine::Engine;
use crate::error::PolicyError;
use crate::query::*;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CaseFile {
    #[serde(default, rename = "case")]
    cases: Vec<Case>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Case {
    name: Option<String>,
    principal: Principal,
    #[serde(default)]
    action: Option<String>,
    target: Option<TargetRef>,
    role: Option<RoleRef>,
    command: Option<CommandRef>,
    task: Option<String>,
    requester: Option<Principal>,
    #[serde(default)]
    context: CaseContext,
    expect: String,
    approvals: Option<String>,
    max_duration: Option<String>,
    policy: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct CaseContext {
    now: Option<String>,
    duration: Option<String>,
    duration_secs: Option<i64>,
    #[serde(default)]
    break_glass: bool,
    #[serde(default)]
    has_ticket: bool,
    #[serde(default)]
    extension: bool,
    #[serde(default)]
    starts_in_secs: i64,
    #[serde(default)]
    via_agent: bool,
    #[serde(default)]
    risk: i64,
    #[serde(default)]
    ticket: Option<crate::query::Ticket>,
    source_ip: Option<IpAddr>,
    #[serde(default)]
    device: Device,
}

/// Result of one case.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CaseResult {
    pub name: String,
    pub passed: bool,
    /// What the engine decided, e.g. `needs_approval (team-leads:1) by dev-hosts`.
    pub actual: String,
    /// Why it failed (`None` when it passed).
    pub failure: Option<String>,
}

/// Results of a case file, in file order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CaseReport {
    pub cases: Vec<CaseResult>,
    pub passed: usize,
    pub failed: usize,
}

impl CaseReport {
    pub fn all_passed(&self) -> bool {
        self.failed == 0
    }
}

impl std::fmt::Display for CaseReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for c in &self.cases {
            match &c.failure {
                None => writeln!(f, "ok    {}", c.name)?,
                Some(why) => writeln!(f, "FAIL  {}: {why}", c.name)?,
            }
        }
        write!(f, "{} passed, {} failed", self.passed, self.failed)
    }
}

fn parse_now(s: &str) -> Result<jiff::Timestamp, String> {
    if let Ok(t) = s.parse::<jiff::Timestamp>() {
        return Ok(t);
    }
    s.parse::<jiff::Zoned>()
        .map(|z| z.timestamp())
        .map_err(|e| format!("context.now {s:?}: {e}"))
}

fn fmt_secs(s: Option<i64>) -> String {
    match s {
        None => "none".into(),
        Some(s) => format!("{s}s"),
    }
}

/// Run every case of a TOML case file against `engine`. A malformed file is an error;
/// a case that cannot be built (missing role, bad time…) is reported as failed.
pub fn run_cases(engine: &Engine, cases_toml: &str) -> Result<CaseReport, PolicyError> {
    let file: CaseFile =
        toml::from_str(cases_toml).map_err(|e| PolicyError::Cases(e.to_string()))?;
    let mut out = Vec::new();
    for (i, case) in file.cases.into_iter().enumerate() {
        let name = case
            .name
            .clone()
            .unwrap_or_else(|| format!("case {}", i + 1));
        let (actual, failure) = match run_one(engine, &case) {
            Ok(r) => r,
            Err(e) => ("error".to_string(), Some(e)),
        };
        out.push(CaseResult {
            name,
            passed: failure.is_none(),
            actual,
            failure,
        });
    }
    let passed = out.iter().filter(|c| c.passed).count();
    Ok(CaseReport {
        failed: out.len() - passed,
        passed,
        cases: out,
    })
}

fn run_one(engine: &Engine, c: &Case) -> Result<(String, Option<String>), String> {
    let action = match &c.action {
        None => Action::Request,
        Some(a) => Action::parse(a).ok_or_else(|| format!("unknown action {a:?}"))?,
    };
    let now = match &c.context.now {
        Some(s) => parse_now(s)?,
        None => "2026-01-05T12:00:00Z".parse().expect("static timestamp"),
    };
    let duration_secs = match (&c.context.duration, c.context.duration_secs) {
        (Some(d), _) => pedm_core::duration::parse_duration(d)
            .map_err(|e| format!("context.duration {d:?}: {e}"))?,
        (None, Some(s)) => s,
        (None, None) => 3600,
    };
    let context = Ctx {
        duration_secs,
        break_glass: c.context.break_glass,
        has_ticket: c.context.has_ticket,
        extension: c.context.extension,
        starts_in_secs: c.context.starts_in_secs,
        via_agent: c.context.via_agent,
        risk: c.context.risk,
        ticket: c.context.ticket.clone(),
        source_ip: c.context.source_ip,
        device: c.context.device.clone(),
        now,
    };
    let need_target = || {
        c.target
            .clone()
            .ok_or_else(|| format!("action {action} needs `target`"))
    };
    let need_role = || {
        c.role
            .clone()
            .ok_or_else(|| format!("action {action} needs `role`"))
    };
    let expect = c.expect.as_str();
    if !matches!(
        expect,
        "deny" | "auto_approve" | "needs_approval" | "break_glass" | "allow"
    ) {
        return Err(format!(
            "expect = {expect:?}: use deny, auto_approve, needs_approval, break_glass or allow"
        ));
    }

    if action == Action::Request {
        if expect == "allow" {
            return Err(
                "expect = \"allow\" is for non-request actions; use auto_approve, needs_approval or break_glass"
                    .into(),
            );
        }
        let q = RequestQuery {
            principal: c.principal.clone(),
            target: need_target()?,
            role: need_role()?,
            context,
        };
        let v = engine.decide_request(&q);
        let (actual, mut failures) = match &v {
            RequestVerdict::Deny {
                policies, reason, ..
            } => {
                let mut f = Vec::new();
                if expect != "deny" {
                    f.push(format!("expected {expect}, got deny: {reason}"));
                }
                if let Some(p) = &c.policy
                    && expect == "deny"
                    && !policies.contains(p)
                {
                    f.push(format!(
                        "expected denial by {p}, denied by [{}]: {reason}",
                        policies.join(", ")
                    ));
                }
                (format!("deny ({reason})"), f)
            }
            RequestVerdict::Permit(r) => {
                let got = if r.break_glass {
                    "break_glass"
                } else if r.auto_approve {
                    "auto_approve"
                } else {
                    "needs_approval"
                };
                let mut f = Vec::new();
                if expect != got {
                    f.push(format!("expected {expect}, got {got} by {}", r.policy));
                }
                if let Some(p) = &c.policy
                    && *p != r.policy
                {
                    f.push(format!("expected policy {p}, got {}", r.policy));
                }
                if let Some(a) = &c.approvals {
                    match crate::annotations::parse_approvals(a) {
                        Err(e) => f.push(format!("approvals = {a:?}: {e}")),
                        Ok(tiers) if tiers != r.tiers => f.push(format!(
                            "expected approvals {a:?}, got {:?}",
                            r.tiers_text()
                        )),
                        Ok(_) => {}
                    }
                }
                if let Some(m) = &c.max_duration {
                    let want = if m == "none" {
                        None
                    } else {
                        Some(
                            pedm_core::duration::parse_duration(m)
                                .map_err(|e| format!("max_duration {m:?}: {e}"))?,
                        )
                    };
                    if want != r.max_duration_secs {
                        f.push(format!(
                            "expected max_duration {}, got {}",
                            fmt_secs(want),
                            fmt_secs(r.max_duration_secs)
                        ));
                    }
                }
                let tiers = if r.tiers.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", r.tiers_text())
                };
                (format!("{got}{tiers} by {}", r.policy), f)
            }
        };
        let failure = if failures.is_empty() {
            None
        } else {
            Some(std::mem::take(&mut failures).join("; "))
        };
        return Ok((actual, failure));
    }

    if matches!(expect, "auto_approve" | "needs_approval" | "break_glass") {
        return Err(format!(
            "expect = {expect:?} is only for action request; use allow or deny"
        ));
    }
    if c.approvals.is_some() || c.max_duration.is_some() {
        return Err("approvals / max_duration are only checked for action request".into());
    }
    let resource = match action {
        Action::Request => unreachable!("handled above"),
        Action::Approve => Resource::Role {
            target: need_target()?,
            role: need_role()?,
        },
        Action::Exec => Resource::Command {
            target: need_target()?,
            role: need_role()?,
            command: c.command.clone().ok_or("action exec needs `command`")?,
        },
        Action::RunTask => Resource::Task {
            target: need_target()?,
            task: c.task.clone().ok_or("action run_task needs `task`")?,
        },
        Action::Delegate => match (&c.role, &c.task) {
            (Some(r), None) => Resource::Role {
                target: need_target()?,
                role: r.clone(),
            },
            (None, Some(t)) => Resource::Task {
                target: need_target()?,
                task: t.clone(),
            },
            _ => return Err("action delegate needs exactly one of `role` or `task`".into()),
        },
        Action::ManageUsers
        | Action::ManageTargets
        | Action::ManagePolicies
        | Action::ReadAudit
        | Action::ManageGrants => match &c.target {
            Some(t) => Resource::Target(t.clone()),
            None => Resource::System,
        },
        Action::TrustDevice => Resource::System,
    };
    let q = AuthzQuery {
        principal: c.principal.clone(),
        action,
        resource,
        context,
        requester: c.requester.clone(),
    };
    let v = engine.authorize(&q);
    let got = if v.allowed { "allow" } else { "deny" };
    let mut f = Vec::new();
    if got != expect {
        f.push(format!("expected {expect}, got {got}: {}", v.reason));
    }
    if let Some(p) = &c.policy
        && !v.policies.contains(p)
    {
        f.push(format!(
            "expected policy {p} to decide, got [{}]",
            v.policies.join(", ")
        ));
    }
    let failure = if f.is_empty() {
        None
    } else {
        Some(f.join("; "))
    };
    Ok((format!("{got} ({})", v.reason), failure))
}
