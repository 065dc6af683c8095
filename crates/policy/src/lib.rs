//! # pedm-policy: the pedm policy engine
//!
//! Policies are [Cedar](https://www.cedarpolicy.com) policies, validated strictly against the
//! published schema ([`schema_text`], namespace `Pedm`). This crate is a pure library: no
//! HTTP, no SQL, no files.
//!
//! ## Schema in short
//!
//! | entity | parents | attributes |
//! |---|---|---|
//! | `Pedm::Group` | | |
//! | `Pedm::User` | `Group` | `admin: Bool`, `external: Bool`, `sponsor?`, `workload?`, `on_call: Bool` (on call now per pedmd's `[oncall]`; false on host agents) |
//! | `Pedm::Target` | | `name`, `kind: String`, `labels: Set<String>` |
//! | `Pedm::Role` id `"<target>/<role>"` | its `Target` | `name`, `target`, `kind`, `labels`, `run_as?`, `auto_approve: Bool` (the role's owner marked it low-risk) |
//! | `Pedm::Command` id `"<target>/<role>/<path>"` | its `Role` | `path`, `args`, `sha256?`, `role`, `target`, `kind`, `labels` |
//! | `Pedm::Task` id `"<target>/<task>"` | its `Target` | `name`, `target`, `kind`, `labels` |
//! | `Pedm::System` (one entity, `"pedm"`) | | |
//!
//! Labels are the set of `"key=value"` strings (`resource.labels.contains("env=prod")`), and
//! every resource type carries its target's `kind` and `labels`, so one condition works for
//! roles, commands and tasks alike. `resource in Pedm::Target::"web1"` matches every role,
//! command and task of `web1`.
//!
//! Actions: `request` and `approve` (resource `Role`), `exec` (`Command`), `run_task`
//! (`Task`), `delegate` (`Role` or `Task`), and the admin actions `manage_users`,
//! `manage_targets`, `manage_policies`, `manage_grants` (revoke others' grants, review
//! break-glass), `read_audit` (`System` or `Target`).
//!
//! Context (every action):
//! - `duration_secs: Long`, `break_glass: Bool`, `has_ticket: Bool`, `extension: Bool` (the
//!   request lengthens a live grant; `duration_secs` is then the extension),
//!   `starts_in_secs: Long` (scheduled access: seconds until the window starts, 0 when at
//!   once; `time` is then the window's start), `via_agent: Bool` (an AI agent asked for its
//!   person, with an agent token: `pedm mcp`; false on host agents), `risk: Long` (0..100:
//!   how unusual the request is for its requester, `pedm_core::risk`; 0 outside requests and
//!   their approvals) — always present;
//! - `source_ip?: ipaddr` — **absent when unknown**. Strict validation refuses any access
//!   without a `context has source_ip` guard, so a policy can never error on it; write
//!   `forbid ... unless { context has source_ip && context.source_ip.isInRange(ip("10.0.0.0/8")) }`
//!   to deny unknown sources too;
//! - `device: { managed?: Bool, compliant?: Bool, os?: String }` — claims the client made;
//!   guard with `context.device has managed` (validation enforces it);
//! - `time: { hour, minute_of_day, weekday /* 1 = Mon .. 7 = Sun */, day_of_month }` — `Long`s
//!   in the policy's time zone (not Cedar `datetime`, which is slow);
//! - `approve` only: `requester: User` (who asked; `context.requester in Pedm::Group::"devs"`).
//!
//! ## Annotations
//!
//! | annotation | on | meaning |
//! |---|---|---|
//! | `@id("name")` | any | the policy id (default `<source-id>#<n>`, n counting from 0 in the source); ids are unique |
//! | `@timezone("Europe/Berlin")` | any | `context.time` for this policy is computed in that IANA zone; default: [`EngineOptions::default_timezone`] (UTC) |
//! | `@auto_approve("true")` | permit of `request` | granted without approvers |
//! | `@approvals("team-leads:1, security:2")` | permit of `request` | ordered tiers: each `GROUP:N` needs N distinct approvals from members of GROUP (who must also be permitted `approve`), tier by tier; a bare `N` means N approvals from anyone `approve` permits (`@approvals("2")`) |
//! | `@max_duration("8h")` | permit of `request` | longest grant; requests for longer cannot use this permit |
//! | `@break_glass("true")` | permit of `request` | applies **only** to break-glass requests; grants at once (flagged for notification and review) |
//! | `@allow_parallel("true")` | permit of `request` | the requester may hold several live grants of the role at once; without it a request for a role the requester already holds live on the target extends that grant (or is refused, naming it, when it already lasts as long) |
//! | `@remind_after("30m")` | permit of `request` needing approval | nobody answered by then: the approvers it waits for are reminded (`request.reminded`, once) |
//! | `@escalate_after("2h")`, `@escalate_to("GROUP")` | permit of `request` needing approval | nobody answered by then: GROUP is told (`request.escalated`, once) and its members may decide the step the request waits for, if a permit lets them `approve` the role |
//!
//! "Permit of `request`" means a permit whose action scope is exactly
//! `action == Pedm::Action::"request"`. Refused at load, naming the policy: those four
//! annotations (and `@allow_parallel`) on a forbid or on other permits, `@auto_approve("true")` or `@break_glass`
//! together with `@approvals`, a tier with N = 0 or a malformed tier, a bad duration, an
//! unknown zone, and unknown keys that look like a typo of a known one (`@approval`,
//! `@time_zone`, `@tz`…). Other annotations (e.g. `@description`) are kept and listed.
//! A `request` permit without `@auto_approve`/`@approvals` needs one approval from anyone
//! `approve` permits.
//!
//! **Break-glass** is checked by the engine, not left to the policy body: a
//! `@break_glass("true")` permit is ignored unless `context.break_glass` is true.
//!
//! ## Combining rule ([`Engine::decide_request`])
//!
//! 1. Any evaluation error in a candidate policy → `Deny`, listing the errors (never fail
//!    open; Cedar alone would skip an erroring `forbid`).
//! 2. Any applicable `forbid` → `Deny` naming every applicable forbid.
//! 3. No applicable permit → `Deny("no policy permits …")`.
//! 4. Applicable permits that cannot be used are dropped: `@break_glass` permits for a
//!    non-break-glass request, and permits whose `@max_duration` is below the requested
//!    `duration_secs`. If none is left → `Deny` naming them and why.
//! 5. A break-glass request uses a `@break_glass` permit that applies to it (the lowest id
//!    if several; granted at once, flagged, reviewed afterwards) — break-glass is never
//!    slowed by an approval rule.
//! 6. Otherwise **the strictest applicable permit wins** and its terms are returned
//!    ([`Requirements`]): a permit that needs approvals beats an auto-approving one, more
//!    total approvals beat fewer, more tiers beat fewer; ties → the lexicographically
//!    lowest policy id. If the requested duration exceeds that permit's `@max_duration`
//!    the request is denied naming it: it never falls through to a looser permit.
//!    `max_duration_secs` is that policy's (`None` if unannotated). A break-glass request
//!    that only ordinary permits allow gets their terms with `break_glass: false` (the
//!    workflow then refuses it as break-glass).
//!
//! Why strictest: an admin who adds a stricter rule (`@approvals("leads:1, security:2")`
//! on prod root) must get it, even next to a general rule (`request-with-approval`, one
//! approval). The price: a looser permit does not loosen anything where a stricter one
//! applies, so a general permit must exclude what should be looser (the default
//! `request-with-approval` excludes roles marked auto-approved:
//! `when { !resource.auto_approve }`).
//!
//! [`Engine::authorize`] (other actions) is Cedar's rule plus rule 1. `approve` is never
//! allowed when the approver is the requester, whatever the policies say.
//!
//! ## Time zones
//!
//! Candidate policies are grouped by zone; each group is evaluated with its own
//! `context.time` and the groups are combined as Cedar combines one set (any forbid denies,
//! otherwise any permit allows).
//!
//! ## Slicing
//!
//! Policies are indexed per action by the (interned) entities of their scope: principal and
//! resource both `==`/`in` an entity, only the principal, only the resource, or neither
//! ("always"; also `is` forms). A query looks up the buckets of the principal, its groups,
//! the resource and its ancestors, keeps the policies whose scope matches exactly by Cedar's
//! rules, and drops policies whose condition *starts* with
//! `resource.labels.contains("k=v")` (first conjunct of a leading `when`) when the target
//! lacks that label. Such policies can neither apply nor error (Cedar short-circuits), so
//! the result equals evaluating the whole set ([`Engine::decide_request_full`]); a property
//! test checks it (decision, determining policies and errors) on random sets and queries.
//! The per-query entity store holds only the principal (parents: its groups), the
//! resource (parents: all its ancestors) and, for `approve`, the requester.
//!
//! ## Loading
//!
//! [`Engine::load`] takes `(source id, text)` pairs; more than
//! [`EngineOptions::max_input_bytes`] (default [`MAX_POLICY_BYTES`], 1 MiB) in total is
//! refused before parsing. 1 MiB holds about 4,000 policies of the benchmark's shape; the
//! benchmark raises the limit for its 10,000-policy set. Templates are refused. Validation is Cedar's strict
//! mode, and Cedar's validation *warnings* are refused too (an impossible policy, an action
//! applied to the wrong resource type, bidi or confusable characters). Any parse, annotation or
//! validation error refuses the whole set ([`PolicyError`], with Cedar's message and the
//! policy id).
//!
//! ## Policy test cases ([`run_cases`])
//!
//! A TOML file of `[[case]]` tables:
//!
//! ```toml
//! [[case]]
//! name = "dev may request root on a dev host in business hours"
//! principal = { user = "alice", groups = ["devs"], admin = false }
//! action = "request"                 # default; or approve, exec, run_task, delegate, manage_users, ...
//! target = { name = "web1", kind = "host", labels = { env = "dev" } }
//! role = { name = "root", run_as = "root" }
//! context = { now = "2026-11-02T10:00:00+01:00[Europe/Berlin]", duration = "1h", source_ip = "10.1.2.3", has_ticket = true, break_glass = false, device = { managed = true } }
//! expect = "needs_approval"          # deny | auto_approve | needs_approval | break_glass | allow
//! approvals = "team-leads:1, security:1"   # optional, request only
//! max_duration = "8h"                # optional, request only; "none" = unannotated
//! policy = "dev-hosts"               # optional: the determining policy (one of them, for deny)
//!
//! [[case]]
//! name = "no rm -rf"
//! principal = { user = "alice", groups = ["devs"] }
//! action = "exec"
//! target = { name = "web1", kind = "host" }
//! role = { name = "root" }
//! command = { path = "/bin/rm", args = "-rf /" }
//! expect = "deny"
//! ```
//!
//! Resource by action: `request`, `approve` → `target` + `role`; `exec` → `target` + `role` +
//! `command`; `run_task` → `target` + `task = "name"`; `delegate` → `target` + `role` or
//! `task`; admin actions → `target` if given, else `Pedm::System::"pedm"`. `approve` needs
//! `requester = { user = "...", groups = [...] }`. Context fields are optional: `now`
//! (RFC 3339 timestamp or zoned date-time; default 2026-01-05T12:00:00Z, a Monday),
//! `duration` (e.g. `"1h"`) or `duration_secs` (default 3600), `break_glass`, `has_ticket`,
//! `extension`, `starts_in_secs`, `via_agent`, `ticket`, `source_ip`, `device`. `auto_approve`, `needs_approval` and `break_glass` are for
//! `request` only; `allow` for the other actions.

mod annotations;
mod cases;
mod engine;
mod error;
mod query;

pub use annotations::{parse_approvals, review_date};
pub use cases::{CaseReport, CaseResult, run_cases};
pub use engine::corners::{Corner, Corners, MAX_CORNERS};
pub use engine::{
    Engine, EngineOptions, Evaluation, MAX_POLICY_BYTES, PolicyInfo, SYSTEM_ID, command_id,
    role_id, schema, schema_text, task_id,
};
pub use error::PolicyError;
pub use query::*;
