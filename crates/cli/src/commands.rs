//! Runs one parsed command against the server and prints the result.

use crate::UsageError;
use crate::args::*;
pub use crate::ctx::Ctx;
use crate::output::{self, Row, Table, detail_table, list_table, time};
use anyhow::{Context, Result, bail};
use jiff::Timestamp;
use pedm_api::policy_review::Held;
use pedm_api::*;
use std::collections::BTreeMap;

pub async fn run(ctx: &Ctx, command: Command) -> Result<()> {
    match command {
        Command::Whoami => whoami(ctx).await,
        Command::Mcp => crate::mcp::serve(ctx.client.clone()).await,
        Command::Notify(NotifyCmd::Status) => ctx.list(&ctx.client.notify_status().await?),
        Command::Link(LinkCmd::Slack { code }) => {
            let l = ctx.client.link_slack(&SlackLink { code }).await?;
            ctx.emit(&l, || {
                format!(
                    "linked Slack user {} (workspace {}) to {}: your clicks in Slack now act as {}\n",
                    pedm_core::text::terminal_safe(&l.slack_user),
                    pedm_core::text::terminal_safe(&l.team),
                    l.user,
                    l.user
                )
            })
        }
        Command::User(c) => user(ctx, c).await,
        Command::Group(c) => group(ctx, c).await,
        Command::Token(c) => token(ctx, c).await,
        Command::Target(c) => target(ctx, c).await,
        Command::Role(c) => role(ctx, c).await,
        Command::Request(c) => request(ctx, c).await,
        Command::Grant(c) => grant(ctx, c).await,
        Command::Audit(c) => audit(ctx, c).await,
        Command::Policy(c) => crate::policy::run(ctx, c).await,
        Command::Report(ReportsCmd::Elevations { since, format }) => {
            crate::audit::report(ctx, ReportCmd::Elevations { since, format }).await
        }
        Command::Report(ReportsCmd::External { since, format }) => {
            crate::external::report(ctx, since, &format).await
        }
        Command::Report(ReportsCmd::Standing { format }) => standing(ctx, &format).await,
        Command::Report(ReportsCmd::Evidence {
            framework,
            period,
            output,
        }) => crate::evidence::write(ctx, &framework, &period, &output).await,
        Command::Report(ReportsCmd::VerifyBundle { dir, pubkey }) => {
            crate::evidence::verify(ctx, &dir, &pubkey)
        }
        Command::BreakGlass(c) => break_glass(ctx, c).await,
        Command::Discover { target } => ctx.list(&ctx.client.discover(&target).await?),
        Command::Host(c) => host(ctx, c).await,
        Command::Ssh(a) => crate::ssh::login(ctx, a).await,
        Command::Aws(AwsCmd::Credentials { grant, target }) => {
            crate::credentials::print(ctx, grant, target, "aws").await
        }
        Command::Aws(AwsCmd::Console { grant, target }) => {
            crate::credentials::console(ctx, grant, target).await
        }
        Command::Kube(KubeCmd::Credentials { grant, target }) => {
            crate::credentials::print(ctx, grant, target, "kubernetes").await
        }
        Command::Lock(c) => match c {
            LockCmd::Add {
                user,
                host,
                duration,
                reason,
            } => {
                let body = pedm_api::lock::CreateLock {
                    user,
                    host,
                    duration: duration.canonical(),
                    reason,
                };
                ctx.detail(&ctx.client.add_lock(&body).await?)
            }
            LockCmd::List { all } => ctx.list(&ctx.client.list_locks(all).await?),
            LockCmd::Lift { id } => ctx.detail(&ctx.client.lift_lock(id).await?),
        },
        Command::Review(c) => crate::review::run(ctx, c).await,
        Command::Privacy(c) => crate::privacy::run(ctx, c).await,
        Command::Scim(ScimCmd::Token(c)) => match c {
            ScimTokenCmd::Create { name } => crate::scim::create(ctx, name).await,
            ScimTokenCmd::List => ctx.list(&ctx.client.list_scim_tokens().await?),
            ScimTokenCmd::Revoke { id } => ctx.detail(&ctx.client.revoke_scim_token(&id).await?),
        },
        Command::Device(c) => match c {
            DeviceCmd::Enroll { name } => crate::device::enroll(ctx, name).await,
            DeviceCmd::List { all } => ctx.list(&ctx.client.list_devices(all).await?),
            DeviceCmd::Approve { id } => ctx.detail(&ctx.client.approve_device(&id).await?),
            DeviceCmd::Revoke { id } => ctx.detail(&ctx.client.revoke_device(&id).await?),
        },
        Command::Session(c) => session(ctx, c).await,
        Command::Delegate(c) => crate::delegation::delegate(ctx, c).await,
        Command::Task(c) => crate::delegation::task(ctx, c).await,
        // Run by `crate::run` before a client exists: they talk to the local agent.
        Command::Exec(_) | Command::Shell { .. } => {
            bail!("exec and shell talk to pedm-agent, not to the server")
        }
        Command::Completions { shell } => completions(shell),
        Command::Login {
            device,
            provider,
            no_browser,
        } => crate::login::login(ctx, device, provider, !no_browser).await,
        Command::Logout => crate::login::logout(ctx).await,
    }
}

/// Shell completion script on stdout; needs neither server nor token.
pub fn completions(shell: clap_complete::Shell) -> Result<()> {
    use clap::CommandFactory;
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "pedm", &mut script);
    Ok(output::write_out(&String::from_utf8_lossy(&script))?)
}

async fn whoami(ctx: &Ctx) -> Result<()> {
    let me = ctx.client.whoami().await?;
    ctx.emit(&me, || {
        let mut t = detail_table(&me.user, ctx.now);
        t.row(vec!["groups:".into(), me.groups.join(",")]);
        let token = me.token.as_ref().map(|t| match t.kind.as_str() {
            "api" => t.id.clone(),
            kind => format!("{} ({kind})", t.id),
        });
        t.row(vec!["token:".into(), token.unwrap_or_default()]);
        t.render()
    })
}

async fn user(ctx: &Ctx, cmd: UserCmd) -> Result<()> {
    let c = &ctx.client;
    let update = |admin, disabled| UpdateUser {
        admin,
        disabled,
        email: None,
    };
    let user = match cmd {
        UserCmd::Add {
            name,
            display_name,
            external: true,
            sponsor,
            expires,
            ..
        } => return crate::external::add(ctx, name, display_name, sponsor, expires).await,
        UserCmd::External => return crate::external::list(ctx).await,
        UserCmd::Extend { name, expires } => {
            return crate::external::extend(ctx, name, expires).await;
        }
        UserCmd::Add {
            name,
            display_name,
            email,
            admin,
            ..
        } => {
            let body = CreateUser {
                name,
                display_name,
                email,
                admin,
            };
            Held::Done(c.create_user(&body).await?)
        }
        UserCmd::List => return ctx.list(&c.list_users().await?),
        UserCmd::Disable { name } => c.update_user(&name, &update(None, Some(true))).await?,
        UserCmd::Enable { name } => c.update_user(&name, &update(None, Some(false))).await?,
        UserCmd::SetAdmin { name, admin } => {
            c.update_user(&name, &update(Some(admin), None)).await?
        }
        UserCmd::SetEmail { name, email } => {
            let body = UpdateUser {
                email: Some(email.unwrap_or_default()),
                ..update(None, None)
            };
            c.update_user(&name, &body).await?
        }
    };
    match user {
        Held::Done(u) => ctx.detail(&u),
        Held::Pending(p) => crate::policy_review::held(ctx, &p),
    }
}

async fn group(ctx: &Ctx, cmd: GroupCmd) -> Result<()> {
    let c = &ctx.client;
    let group = match cmd {
        GroupCmd::Add { name, description } => {
            c.create_group(&CreateGroup { name, description }).await?
        }
        GroupCmd::List => return ctx.list(&c.list_groups().await?),
        GroupCmd::AddMember { group, user } => match c.add_group_member(&group, &user).await? {
            Held::Done(g) => g,
            Held::Pending(p) => return crate::policy_review::held(ctx, &p),
        },
        GroupCmd::RemoveMember { group, user } => c.remove_group_member(&group, &user).await?,
    };
    ctx.detail(&group)
}

async fn token(ctx: &Ctx, cmd: TokenCmd) -> Result<()> {
    let c = &ctx.client;
    match cmd {
        TokenCmd::Create {
            user,
            description,
            expires_in,
            for_agent,
        } => {
            if for_agent && matches!(expires_in, Some(TokenExpiry::Never)) {
                return Err(UsageError(
                    "--for-agent: an AI agent's token must expire; give --expires-in 8h or so"
                        .into(),
                )
                .into());
            }
            let body = CreateToken {
                user,
                description,
                expires_in: expires_in.map(TokenExpiry::canonical),
                for_agent,
            };
            token_created(ctx, &c.create_token(&body).await?)
        }
        TokenCmd::List { user } => ctx.list(&c.list_tokens(&TokenQuery { user }).await?),
        TokenCmd::Revoke { id } => ctx.detail(&c.revoke_token(&id).await?),
        TokenCmd::Exchange {
            subject_token_file,
            subject_token_env,
        } => {
            let subject = match (subject_token_file, subject_token_env) {
                (Some(p), _) if p.as_os_str() == "-" => {
                    std::io::read_to_string(std::io::stdin()).context("reading standard input")?
                }
                (Some(p), _) => std::fs::read_to_string(&p)
                    .with_context(|| format!("reading {}", p.display()))?,
                (None, Some(var)) => std::env::var(&var)
                    .with_context(|| format!("environment variable {var} is not set"))?,
                (None, None) => bail!("give --subject-token-file or --subject-token-env"),
            };
            let subject = subject.trim();
            if subject.is_empty() {
                bail!("the subject token is empty");
            }
            let t = c.exchange_workload_token(subject).await?;
            if ctx.json {
                return ctx.emit(&t, String::new);
            }
            eprintln!("pedm token valid for {}s", t.expires_in);
            Ok(output::write_out(&format!("{}\n", t.access_token))?)
        }
    }
}

/// The secret alone on stdout (so `TOKEN=$(pedm token create)` works), details on stderr.
fn token_created(ctx: &Ctx, created: &CreatedToken) -> Result<()> {
    if ctx.json {
        return ctx.emit(created, String::new);
    }
    eprint!("{}", detail_table(&created.info, ctx.now).render());
    eprintln!("This token is shown once; store it now.");
    Ok(output::write_out(&format!("{}\n", created.token))?)
}

async fn target(ctx: &Ctx, cmd: TargetCmd) -> Result<()> {
    let c = &ctx.client;
    match cmd {
        TargetCmd::Add {
            name,
            kind,
            description,
            labels,
        } => {
            let labels = label_map(labels)?;
            let body = CreateTarget {
                name,
                kind,
                description,
                labels,
            };
            ctx.detail(&c.create_target(&body).await?)
        }
        TargetCmd::List => ctx.list(&c.list_targets().await?),
        TargetCmd::Show { name } => {
            let d = c.get_target(&name).await?;
            ctx.emit(&d, || {
                with_list(detail_table(&d.target, ctx.now), "roles", &d.roles, ctx.now)
            })
        }
    }
}

/// Labels as a map; the same key twice is a usage error rather than a silent overwrite.
pub fn label_map(labels: Vec<(String, String)>) -> Result<BTreeMap<String, String>, UsageError> {
    let mut map = BTreeMap::new();
    for (k, v) in labels {
        if map.insert(k.clone(), v).is_some() {
            return Err(UsageError(format!(
                "--label: key {k:?} is given more than once"
            )));
        }
    }
    Ok(map)
}

/// A detail view followed by a titled list (a target's roles, a request's approvals).
fn with_list<T: Row>(detail: Table, title: &str, items: &[T], now: Timestamp) -> String {
    let mut out = detail.render();
    out.push_str(&format!("\n{title}:\n"));
    if items.is_empty() {
        out.push_str("  (none)\n");
    } else {
        out.push_str(&list_table(items, now).render());
    }
    out
}

async fn role(ctx: &Ctx, cmd: RoleCmd) -> Result<()> {
    let c = &ctx.client;
    match cmd {
        RoleCmd::Add {
            target,
            name,
            max_duration,
            auto_approve,
            run_as,
            description,
            noexec,
            allow_setuid,
            record_input,
            intercept,
            limits,
            watch_paths,
            ssh,
        } => {
            let body = CreateRole {
                name,
                description,
                max_duration: max_duration.canonical(),
                auto_approve,
                run_as,
                noexec,
                allow_setuid,
                record_input,
                intercept,
                limits: limits.apply(SessionLimits::default()),
                watch_paths,
                ssh: ssh.access(),
            };
            ctx.detail(&c.create_role(&target, &body).await?)
        }
        RoleCmd::Update {
            target,
            name,
            max_duration,
            description,
            auto_approve,
            noexec,
            allow_setuid,
            record_input,
            intercept,
            limits,
            watch_paths,
            ssh,
            no_watch,
        } => {
            // Limits not named keep their values: the server takes the whole set.
            let limits = if limits.given() {
                let current = c
                    .list_roles(&target)
                    .await?
                    .into_iter()
                    .find(|r| r.name.eq_ignore_ascii_case(&name))
                    .ok_or_else(|| anyhow::anyhow!("no role {name} on target {target}"))?;
                Some(limits.apply(current.limits))
            } else {
                None
            };
            let body = UpdateRole {
                description,
                max_duration: max_duration.map(|d| d.canonical()),
                auto_approve,
                noexec,
                allow_setuid,
                record_input,
                intercept,
                limits,
                watch_paths: (no_watch || !watch_paths.is_empty()).then_some(watch_paths),
                ssh: ssh.given().then(|| ssh.access()),
            };
            ctx.detail(&c.update_role(&target, &name, &body).await?)
        }
        RoleCmd::List { target } => ctx.list(&c.list_roles(&target).await?),
    }
}

async fn request(ctx: &Ctx, cmd: RequestCmd) -> Result<()> {
    let c = &ctx.client;
    match cmd {
        RequestCmd::Create(a) => request_create(ctx, a).await,
        RequestCmd::List {
            state,
            requester,
            target,
            approvable,
            since,
            limit: Limit { limit },
        } => {
            let q = RequestQuery {
                approvable: approvable.then_some(true),
                since: since.map(|t| t.to_string()),
                state,
                requester,
                target,
                limit,
            };
            ctx.list(&c.list_requests(&q).await?)
        }
        RequestCmd::Show { id } => {
            let d = c.get_request(id).await?;
            ctx.emit(&d, || {
                let mut t = detail_table(&d.request, ctx.now);
                if d.request.state == RequestState::Pending {
                    t.row(vec![
                        "progress:".into(),
                        approval_progress(&d.request, &d.approvals),
                    ]);
                }
                with_list(t, "approvals", &d.approvals, ctx.now)
            })
        }
        RequestCmd::Cancel { id, reason } => {
            ctx.detail(&c.cancel_request(id, &Reason { reason }).await?)
        }
        RequestCmd::Approve { id, comment } => {
            let d = c.approve_request(id, &Decide { comment }).await?;
            // Still pending: say how far it got and who is next.
            let progress = match d.request.state {
                RequestState::Pending => c
                    .get_request(id)
                    .await
                    .ok()
                    .map(|r| approval_progress(&r.request, &r.approvals)),
                _ => None,
            };
            ctx.emit(&d, || {
                let mut text = outcome(&d.request, d.grant.as_ref(), ctx.now);
                if let Some(p) = &progress {
                    text.push_str(&format!("progress: {p}\n"));
                }
                text
            })
        }
        RequestCmd::Deny { id, comment } => {
            let body = Decide {
                comment: Some(comment),
            };
            let d = c.deny_request(id, &body).await?;
            ctx.emit(&d, || outcome(&d.request, d.grant.as_ref(), ctx.now))
        }
    }
}

async fn request_create(ctx: &Ctx, a: CreateRequestArgs) -> Result<()> {
    let body = CreateRequest {
        target: a.target,
        role: a.role,
        duration: a.duration.canonical(),
        justification: a.justification,
        task: a.task,
        ticket: a.ticket,
        break_glass: a.break_glass,
        start: a.start.map(|t| t.to_string()),
    };
    let created = ctx.client.create_request(&body).await?;
    let r = &created.request;
    if r.state == RequestState::Denied {
        if ctx.json {
            ctx.emit(&created, String::new)?;
        }
        let why = r.decision_reason.as_deref().unwrap_or("no reason given");
        bail!("request {} was denied by {}: {why}", r.id, decided_by(r));
    }
    ctx.emit(&created, || outcome(r, created.grant.as_ref(), ctx.now))
}

async fn break_glass(ctx: &Ctx, cmd: BreakGlassCmd) -> Result<()> {
    let c = &ctx.client;
    match cmd {
        BreakGlassCmd::List { all } => {
            let list = c.break_glass(&BreakGlassQuery { open: Some(!all) }).await?;
            // Unreviewed break-glass is the loudest thing an admin can see: say so on stderr,
            // above the table, with what to do.
            let open: Vec<&Request> = list
                .iter()
                .filter(|r| {
                    r.review
                        .as_ref()
                        .is_some_and(|v| v.state == ReviewState::Open)
                })
                .collect();
            if !open.is_empty() && !ctx.json {
                eprintln!(
                    "WARNING: {} break-glass grant(s) NOT REVIEWED: {} (review each with \
                     `pedm breakglass review <ID> --reason \"...\"`)",
                    open.len(),
                    open.iter()
                        .map(|r| format!(
                            "{} ({} took {} on {})",
                            r.id, r.requester, r.role, r.target
                        ))
                        .collect::<Vec<_>>()
                        .join(", ")
                );
            }
            ctx.list(&list)
        }
        BreakGlassCmd::Review { id, comment } => {
            let body = Decide {
                comment: Some(comment),
            };
            ctx.detail(&c.review_break_glass(id, &body).await?)
        }
    }
}

fn decided_by(r: &Request) -> &str {
    r.decided_by.as_deref().unwrap_or("policy")
}

/// `1 of 3: waiting for security:2`: approvals given of those required, and the tier that
/// is next (its group and how many approvals it still needs).
pub fn approval_progress(r: &Request, approvals: &[Approval]) -> String {
    let total: u32 = r.tiers().iter().map(|t| t.required).sum();
    let outstanding = r.outstanding(approvals);
    let given = total - outstanding.iter().map(|(_, t)| t.required).sum::<u32>();
    match outstanding.first() {
        Some((_, t)) => format!(
            "{given} of {total}: waiting for {}:{}",
            t.group.as_deref().unwrap_or("any approver"),
            t.required
        ),
        None => format!("{given} of {total}"),
    }
}

/// Where a request stands after it was created or decided, and its grant if there is one.
fn outcome(r: &Request, grant: Option<&Grant>, now: Timestamp) -> String {
    let mut t = Table::plain();
    t.row(vec!["request:".into(), r.id.to_string()]);
    t.row(vec!["state:".into(), r.state.to_string()]);
    match r.state {
        RequestState::Pending => {
            t.row(vec![
                "approvals required:".into(),
                r.approvals_required.to_string(),
            ]);
            t.row(vec!["pending until:".into(), time(r.pending_until)]);
        }
        _ => t.row(vec![
            "reason:".into(),
            r.decision_reason.clone().unwrap_or_default(),
        ]),
    }
    if let Some(s) = r.context.starts_at {
        t.row(vec!["window starts:".into(), time(s)]);
    }
    if let Some(g) = grant {
        t.row(vec!["grant:".into(), g.id.to_string()]);
        if g.state == GrantState::Scheduled {
            t.row(vec!["scheduled: starts".into(), time(g.starts_at)]);
        }
        t.row(vec!["expires:".into(), time(g.expires_at)]);
        t.row(vec![
            "remaining:".into(),
            output::remaining(g.expires_at, now),
        ]);
    }
    t.render()
}

async fn grant(ctx: &Ctx, cmd: GrantCmd) -> Result<()> {
    let c = &ctx.client;
    let grant = match cmd {
        GrantCmd::List {
            state,
            user,
            target,
            limit: Limit { limit },
        } => {
            let q = GrantQuery {
                state,
                user,
                target,
                limit,
            };
            return ctx.list(&c.list_grants(&q).await?);
        }
        GrantCmd::Show { id } => c.get_grant(id).await?,
        GrantCmd::Extend {
            id,
            by,
            justification,
            ticket,
        } => {
            let body = ExtendGrant {
                by: by.canonical(),
                justification,
                ticket,
            };
            let created = c.extend_grant(id, &body).await?;
            let r = &created.request;
            if r.state == RequestState::Denied {
                let why = r.decision_reason.as_deref().unwrap_or("no reason given");
                bail!("extension {} was denied by {}: {why}", r.id, decided_by(r));
            }
            return ctx.emit(&created, || outcome(r, created.grant.as_ref(), ctx.now));
        }
        GrantCmd::Release { id, reason } => c.release_grant(id, &Reason { reason }).await?,
        GrantCmd::Revoke { id, reason } => {
            let body = Reason {
                reason: Some(reason),
            };
            c.revoke_grant(id, &body).await?
        }
        GrantCmd::Delegate {
            id,
            to,
            duration,
            reason,
        } => return crate::delegation::grant_delegate(ctx, id, to, duration, reason).await,
        GrantCmd::Secret { id } => {
            let s = c.grant_secret(id).await?;
            return ctx.emit(&s, || format!("{}\n", s.secret));
        }
        GrantCmd::Verify { id } => {
            let v = c.verify_grant(id).await?;
            let show = |b: Option<bool>| match b {
                Some(true) => "yes".to_string(),
                Some(false) => "no".to_string(),
                None => "-".to_string(),
            };
            ctx.emit(&v, || {
                let mut t = Table::plain();
                t.row(vec!["grant:".into(), v.grant_id.to_string()]);
                t.row(vec!["provision:".into(), v.provision_state.to_string()]);
                t.row(vec!["expected:".into(), show(v.expected)]);
                t.row(vec!["present:".into(), show(v.present)]);
                t.row(vec!["detail:".into(), v.detail.clone()]);
                t.row(vec!["consistent:".into(), output::yes_no(v.consistent)]);
                t.render()
            })?;
            if !v.consistent {
                bail!(
                    "grant {id}: the target does not match its provision state ({})",
                    v.detail
                );
            }
            return Ok(());
        }
    };
    ctx.detail(&grant)
}

async fn audit(ctx: &Ctx, cmd: AuditCmd) -> Result<()> {
    let AuditCmd::List {
        after,
        actor,
        target,
        request,
        action,
        subject,
        since,
        until,
        limit: Limit { limit },
    } = cmd
    else {
        return crate::audit::run(ctx, cmd).await;
    };
    let q = AuditQuery {
        after,
        actor,
        target,
        request,
        action,
        subject,
        since: since.map(|t| t.to_string()),
        until: until.map(|t| t.to_string()),
        limit,
        ..Default::default()
    };
    ctx.list(&ctx.client.audit_events(&q).await?)
}

/// `pedm report standing`: table, CSV or JSON; unreadable targets are named on stderr and
/// make the exit status non-zero.
async fn standing(ctx: &Ctx, format: &str) -> Result<()> {
    let report = ctx.client.standing_report().await?;
    let format = if ctx.json { "json" } else { format };
    const COLUMNS: [&str; 5] = ["TARGET", "ACCOUNT", "PRIVILEGE", "SOURCE", "KIND"];
    let cells = |r: &pedm_api::StandingRow| {
        vec![
            r.target.clone(),
            r.account.clone(),
            r.privilege.clone(),
            r.source.clone(),
            match r.temporary_grant {
                Some(g) => format!("temporary (pedm grant {g})"),
                None => "standing".into(),
            },
        ]
    };
    let text = match format {
        "json" => output::json_text(&report)?,
        "csv" => output::csv_text(&COLUMNS, report.rows.iter().map(cells))?,
        _ => {
            let mut t = output::Table::new(&COLUMNS);
            for r in &report.rows {
                t.row(cells(r));
            }
            t.render()
        }
    };
    output::write_out(&text)?;
    if !report.errors.is_empty() {
        for e in &report.errors {
            eprintln!(
                "error: target {}: {}",
                e.target,
                pedm_core::text::terminal_safe(&e.error)
            );
        }
        anyhow::bail!("{} target(s) could not be read", report.errors.len());
    }
    Ok(())
}

async fn host(ctx: &Ctx, cmd: HostCmd) -> Result<()> {
    match cmd {
        HostCmd::Register { name } => {
            let r = ctx.client.register_host(&name).await?;
            if ctx.json {
                return ctx.emit(&r, String::new);
            }
            // The token alone on stdout (`pedm host register web1 > agent.token`, like
            // `token create`); everything else on stderr.
            let mut t = output::Table::plain();
            t.row(vec!["host:".into(), r.host.clone()]);
            t.row(vec!["server key:".into(), r.server_key.clone()]);
            if r.rotated {
                t.row(vec![
                    "note:".into(),
                    "the host's previous token no longer works".into(),
                ]);
            }
            if let Some(until) = r.enroll_expires_at {
                t.row(vec!["enroll before:".into(), output::time(until)]);
            }
            eprintln!(
                "{}Put the token (printed on stdout) in a file of mode 0600 and run `pedm-agent \
                 enroll --token-file FILE --server-key KEY`; over HTTPS the token enrolls the \
                 agent once, for a client certificate. It is not shown again.",
                t.render()
            );
            Ok(output::write_out(&format!("{}\n", r.token))?)
        }
        HostCmd::List => ctx.list(&ctx.client.list_hosts().await?),
        HostCmd::SshCert {
            key,
            principals,
            validity,
            output,
        } => crate::ssh::sign_host(ctx, key, principals, validity, output).await,
        HostCmd::SshCa { user, host } => crate::ssh::ca_keys(ctx, user, host).await,
        HostCmd::SshKrl { output } => crate::ssh::krl(ctx, output).await,
        HostCmd::Revoke { name, reason } => {
            ctx.detail(&ctx.client.revoke_host(&name, &Reason { reason }).await?)
        }
    }
}

async fn session(ctx: &Ctx, cmd: SessionCmd) -> Result<()> {
    match cmd {
        SessionCmd::List {
            user,
            host,
            grant,
            limit,
        } => {
            let q = SessionQuery {
                user,
                host,
                grant,
                limit: limit.limit,
            };
            ctx.list(&ctx.client.list_sessions(&q).await?)
        }
        SessionCmd::Show { id } => ctx.detail(&ctx.client.get_session(id).await?),
        SessionCmd::Live => ctx.list(&ctx.client.live_sessions().await?),
        SessionCmd::Watch { id, raw, execs } => {
            let opts = crate::watch::WatchOptions { raw, execs };
            let mut w = crate::watch::Watch::new(std::io::stdout(), std::io::stderr(), opts);
            let mut failed = None;
            ctx.client
                .watch_session(id, |name, data| match w.event(name, data) {
                    Ok(more) => more,
                    Err(e) => {
                        failed = Some(e);
                        false
                    }
                })
                .await?;
            if let Some(e) = failed {
                anyhow::bail!("cannot write the session out: {e}");
            }
            let withheld = w.withheld();
            if !withheld.is_empty() {
                eprintln!("pedm: withheld {withheld}; --raw shows them");
            }
            if w.ended.is_none() {
                anyhow::bail!("the stream from the server broke off before the session ended");
            }
            Ok(())
        }
        SessionCmd::Kill { id, reason } => ctx.detail(&ctx.client.kill_session(id, &reason).await?),
        SessionCmd::Play {
            id,
            speed,
            max_idle,
            raw,
        } => {
            let cast = verified_recording(ctx, id).await?;
            let out = std::io::stdout();
            let how = crate::play::Replay {
                speed,
                max_idle,
                raw,
            };
            let withheld = crate::play::play(&cast[..], out.lock(), how)?;
            if !withheld.is_empty() {
                eprintln!("\npedm: withheld {withheld}; --raw replays them");
            }
            Ok(())
        }
        SessionCmd::Export { id, output } => {
            let cast = verified_recording(ctx, id).await?;
            match output {
                Some(path) => std::fs::write(&path, &cast)
                    .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display())),
                None => {
                    use std::io::Write;
                    let mut out = std::io::stdout().lock();
                    out.write_all(&cast)?;
                    Ok(out.flush()?)
                }
            }
        }
    }
}

/// A session's recording, checked against the SHA-256 the server recorded in the audit log
/// when the agent uploaded it.
async fn verified_recording(ctx: &Ctx, id: uuid::Uuid) -> Result<Vec<u8>> {
    use sha2::Digest;
    let session = ctx.client.get_session(id).await?;
    let mut cast = Vec::new();
    ctx.client.download_recording(id, &mut cast).await?;
    let sha = hex::encode(sha2::Sha256::digest(&cast));
    if sha != session.recording_sha256 {
        bail!(
            "the recording of session {id} has SHA-256 {sha}, but {} was recorded when it was \
             uploaded: it was altered",
            session.recording_sha256
        );
    }
    Ok(cast)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duplicate_label_is_a_usage_error() {
        let ok = label_map(vec![("a".into(), "1".into()), ("b".into(), "2".into())]).unwrap();
        assert_eq!(ok.len(), 2);
        let e = label_map(vec![("a".into(), "1".into()), ("a".into(), "2".into())]).unwrap_err();
        assert!(e.0.contains("--label"), "{}", e.0);
        assert_eq!(crate::exit_code(&anyhow::Error::new(e)), 2);
    }
}
