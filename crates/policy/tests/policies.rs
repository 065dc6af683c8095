//! One test (at least) per capability of "What policies can say".

use std::net::IpAddr;

use pedm_policy::*;

fn ts(s: &str) -> jiff::Timestamp {
    if let Ok(t) = s.parse() {
        return t;
    }
    s.parse::<jiff::Zoned>().unwrap().timestamp()
}

/// Monday 2026-11-02 10:00 in Berlin (09:00 UTC).
const MON_10_BERLIN: &str = "2026-11-02T10:00:00+01:00[Europe/Berlin]";

fn engine(text: &str) -> Engine {
    match Engine::load(
        &[("t".to_string(), text.to_string())],
        EngineOptions::default(),
    ) {
        Ok(e) => e,
        Err(e) => panic!("load failed: {e}"),
    }
}

fn load_err(text: &str) -> PolicyError {
    Engine::load(
        &[("t".to_string(), text.to_string())],
        EngineOptions::default(),
    )
    .expect_err(text)
}

fn rq(user: &str, groups: &[&str], target: TargetRef, role: &str, now: &str) -> RequestQuery {
    RequestQuery {
        principal: Principal::new(user, groups),
        target,
        role: RoleRef::new(role),
        context: Ctx::at(ts(now)),
    }
}

fn web1() -> TargetRef {
    TargetRef::new("web1", "host", &[("env", "prod"), ("team", "web")])
}
fn dev1() -> TargetRef {
    TargetRef::new("dev1", "host", &[("env", "dev"), ("team", "web")])
}

fn permit(v: &RequestVerdict) -> &Requirements {
    match v {
        RequestVerdict::Permit(r) => r,
        RequestVerdict::Deny { reason, .. } => panic!("expected permit, got deny: {reason}"),
    }
}

fn deny(v: &RequestVerdict) -> (Vec<String>, String) {
    match v {
        RequestVerdict::Deny {
            policies, reason, ..
        } => (policies.clone(), reason.clone()),
        RequestVerdict::Permit(r) => panic!("expected deny, got permit by {}", r.policy),
    }
}

/// Decide both ways and check they agree.
fn decide(e: &Engine, q: &RequestQuery) -> RequestVerdict {
    let a = e.decide_request(q);
    let b = e.decide_request_full(q);
    assert_eq!(a, b, "sliced and full disagree");
    a
}

#[test]
fn schema_parses() {
    assert!(schema_text().contains("namespace Pedm"));
    schema().unwrap();
}

#[test]
fn timezone_database_available() {
    jiff::tz::TimeZone::get("Europe/Berlin").unwrap();
}

#[test]
fn user_based_permit() {
    let e = engine(
        r#"@id("alice-web1") @auto_approve("true")
        permit(principal == Pedm::User::"alice", action == Pedm::Action::"request", resource == Pedm::Role::"web1/root");"#,
    );
    let v = decide(&e, &rq("alice", &[], web1(), "root", MON_10_BERLIN));
    assert_eq!(permit(&v).policy, "alice-web1");
    assert!(permit(&v).auto_approve);
    // another role, another user: no
    deny(&decide(
        &e,
        &rq("alice", &[], web1(), "admin", MON_10_BERLIN),
    ));
    let (p, reason) = deny(&decide(&e, &rq("bob", &[], web1(), "root", MON_10_BERLIN)));
    assert!(p.is_empty());
    assert!(reason.contains("no policy permits"), "{reason}");
}

#[test]
fn group_based_permit_on_a_target() {
    let e = engine(
        r#"permit(principal in Pedm::Group::"web-admins", action == Pedm::Action::"request", resource in Pedm::Target::"web1");"#,
    );
    let v = decide(
        &e,
        &rq(
            "carol",
            &["staff", "web-admins"],
            web1(),
            "root",
            MON_10_BERLIN,
        ),
    );
    let r = permit(&v);
    assert_eq!(r.policy, "t#0");
    assert!(!r.auto_approve);
    // unannotated: one approval from anyone `approve` permits
    assert_eq!(
        r.tiers,
        vec![ApprovalTier {
            group: None,
            required: 1
        }]
    );
    deny(&decide(
        &e,
        &rq("carol", &["staff"], web1(), "root", MON_10_BERLIN),
    ));
    deny(&decide(
        &e,
        &rq("carol", &["web-admins"], dev1(), "root", MON_10_BERLIN),
    ));
}

#[test]
fn label_based_permit() {
    let e = engine(
        r#"@auto_approve("true")
        permit(principal in Pedm::Group::"devs", action == Pedm::Action::"request", resource)
        when { resource.labels.contains("env=dev") && resource.kind == "host" && resource.name == "root" };"#,
    );
    assert!(
        permit(&decide(
            &e,
            &rq("d", &["devs"], dev1(), "root", MON_10_BERLIN)
        ))
        .auto_approve
    );
    deny(&decide(
        &e,
        &rq("d", &["devs"], web1(), "root", MON_10_BERLIN),
    ));
    deny(&decide(
        &e,
        &rq("d", &["devs"], dev1(), "other", MON_10_BERLIN),
    ));
}

const BUSINESS_HOURS: &str = r#"
@id("business-hours") @timezone("Europe/Berlin") @auto_approve("true")
permit(principal in Pedm::Group::"ops", action == Pedm::Action::"request", resource)
when { context.time.weekday <= 5 && context.time.hour >= 9 && context.time.hour < 17 };
"#;

#[test]
fn time_window_in_named_zone() {
    let e = engine(BUSINESS_HOURS);
    let q = |now: &str| rq("o", &["ops"], web1(), "root", now);
    // Monday 09:30 Berlin = 08:30 UTC: inside (a UTC evaluation would say outside)
    assert!(decide(&e, &q("2026-11-02T08:30:00Z")).is_permit());
    // Monday 08:30 Berlin = 07:30 UTC: outside
    deny(&decide(&e, &q("2026-11-02T07:30:00Z")));
    // Monday 16:59 Berlin inside, 17:00 Berlin outside
    assert!(decide(&e, &q("2026-11-02T16:59:00+01:00[Europe/Berlin]")).is_permit());
    deny(&decide(&e, &q("2026-11-02T17:00:00+01:00[Europe/Berlin]")));
    // Saturday noon: weekend
    deny(&decide(&e, &q("2026-11-07T12:00:00+01:00[Europe/Berlin]")));
    // Summer time: Monday 2026-06-01 09:10 CEST = 07:10 UTC: inside
    assert!(decide(&e, &q("2026-06-01T07:10:00Z")).is_permit());
    // Sunday 23:30 UTC is already Monday 00:30 in Berlin, but outside the hours
    deny(&decide(&e, &q("2026-11-01T23:30:00Z")));
}

#[test]
fn default_zone_applies_to_unannotated_policies() {
    let text = r#"@auto_approve("true")
        permit(principal, action == Pedm::Action::"request", resource) when { context.time.hour == 10 };"#;
    let utc = engine(text);
    let berlin = Engine::load(
        &[("t".into(), text.into())],
        EngineOptions::with_timezone("Europe/Berlin").unwrap(),
    )
    .unwrap();
    let q = rq("u", &[], web1(), "root", "2026-11-02T10:15:00Z");
    assert!(decide(&utc, &q).is_permit());
    deny(&decide(&berlin, &q)); // 11:15 in Berlin
    assert_eq!(berlin.policies()[0].timezone, "Europe/Berlin");
}

#[test]
fn zones_combine_like_one_set() {
    // A forbid in Tokyo time and a permit in Berlin time: evaluated with different clocks.
    let e = engine(
        r#"@timezone("Europe/Berlin") @auto_approve("true")
        permit(principal, action == Pedm::Action::"request", resource) when { context.time.hour >= 9 && context.time.hour < 17 };
        @id("tokyo-night") @timezone("Asia/Tokyo")
        forbid(principal, action == Pedm::Action::"request", resource) when { context.time.hour < 6 };"#,
    );
    // 10:00 Berlin = 18:00 Tokyo: permit, no forbid
    assert!(decide(&e, &rq("u", &[], web1(), "r", "2026-11-02T09:00:00Z")).is_permit());
    // 16:30 Berlin = 00:30 Tokyo next day: forbid wins
    let v = decide(&e, &rq("u", &[], web1(), "r", "2026-11-02T15:30:00Z"));
    assert_eq!(deny(&v).0, vec!["tokyo-night".to_string()]);
}

#[test]
fn source_cidr() {
    let e = engine(
        r#"@auto_approve("true")
        permit(principal, action == Pedm::Action::"request", resource)
        when { context has source_ip && context.source_ip.isInRange(ip("10.0.0.0/8")) };"#,
    );
    let mut q = rq("u", &[], web1(), "root", MON_10_BERLIN);
    q.context.source_ip = Some("10.1.2.3".parse::<IpAddr>().unwrap());
    assert!(decide(&e, &q).is_permit());
    q.context.source_ip = Some("192.168.1.1".parse().unwrap());
    deny(&decide(&e, &q));
    q.context.source_ip = None; // unknown source: the guard keeps it false, no error
    deny(&decide(&e, &q));
    q.context.source_ip = Some("::1".parse().unwrap());
    deny(&decide(&e, &q));
}

#[test]
fn forbid_unknown_or_outside_source() {
    let e = engine(
        r#"@auto_approve("true") permit(principal, action == Pedm::Action::"request", resource);
        @id("office-only")
        forbid(principal, action == Pedm::Action::"request", resource)
        unless { context has source_ip && context.source_ip.isInRange(ip("10.0.0.0/8")) };"#,
    );
    let mut q = rq("u", &[], web1(), "root", MON_10_BERLIN);
    assert_eq!(deny(&decide(&e, &q)).0, vec!["office-only".to_string()]);
    q.context.source_ip = Some("10.9.9.9".parse().unwrap());
    assert!(decide(&e, &q).is_permit());
}

#[test]
fn source_ip_without_has_is_refused() {
    let err = load_err(
        r#"forbid(principal, action == Pedm::Action::"request", resource)
        unless { context.source_ip.isInRange(ip("10.0.0.0/8")) };"#,
    );
    assert!(matches!(err, PolicyError::Validation { .. }), "{err}");
    assert!(err.to_string().contains("t#0"), "{err}");
}

#[test]
fn device_posture_with_has_guards() {
    let e = engine(
        r#"@auto_approve("true")
        permit(principal, action == Pedm::Action::"request", resource)
        when { context.device has managed && context.device.managed
               && context.device has compliant && context.device.compliant };
        @id("no-windows-on-prod")
        forbid(principal, action == Pedm::Action::"request", resource)
        when { resource.labels.contains("env=prod") && context.device has os && context.device.os == "windows" };"#,
    );
    let mut q = rq("u", &[], web1(), "root", MON_10_BERLIN);
    deny(&decide(&e, &q)); // no claims at all
    q.context.device.managed = Some(true);
    deny(&decide(&e, &q)); // compliance unknown
    q.context.device.compliant = Some(true);
    assert!(decide(&e, &q).is_permit());
    q.context.device.os = Some("windows".into());
    assert_eq!(
        deny(&decide(&e, &q)).0,
        vec!["no-windows-on-prod".to_string()]
    );
    q.target = dev1();
    assert!(decide(&e, &q).is_permit());
    // an unguarded claim is refused at load
    let err = load_err(
        r#"permit(principal, action == Pedm::Action::"request", resource) when { context.device.managed };"#,
    );
    assert!(matches!(err, PolicyError::Validation { .. }), "{err}");
}

fn exec_query(path: &str, args: &str) -> AuthzQuery {
    AuthzQuery {
        principal: Principal::new("alice", &["ops"]),
        action: Action::Exec,
        resource: Resource::Command {
            target: web1(),
            role: RoleRef::new("root"),
            command: CommandRef {
                path: path.into(),
                args: args.into(),
                sha256: None,
                shell: false,
                cwd: None,
            },
        },
        context: Ctx::at(ts(MON_10_BERLIN)),
        requester: None,
    }
}

#[test]
fn step_up_permits_make_an_exec_approvable_but_never_allow_it() {
    let e = engine(
        r#"@id("restart-needs-security")
        @step_up("security:1")
        permit(principal, action == Pedm::Action::"exec", resource)
        when { resource.path == "/usr/bin/systemctl" };
        @id("journal-ok")
        permit(principal, action == Pedm::Action::"exec", resource)
        when { resource.path == "/usr/bin/journalctl" };
        @id("journal-step-up")
        @step_up("")
        permit(principal, action == Pedm::Action::"exec", resource)
        when { resource.path == "/usr/bin/journalctl" };
        @id("no-reboot")
        forbid(principal, action == Pedm::Action::"exec", resource)
        when { resource.args like "*reboot*" };
        @id("reboot-step-up")
        @step_up("")
        permit(principal, action == Pedm::Action::"exec", resource)
        when { resource.args like "*reboot*" };"#,
    );
    // Only a step-up permit matches: refused, and approvable by one of security.
    let q = exec_query("/usr/bin/systemctl", "restart nginx");
    let v = e.authorize(&q);
    assert!(!v.allowed, "{v:?}");
    let s = e.step_up(&q).expect("approvable");
    assert_eq!(s.policies, vec!["restart-needs-security".to_string()]);
    assert_eq!(s.tiers[0].group.as_deref(), Some("security"));
    assert_eq!(s.tiers[0].required, 1);
    // A plain permit allows outright: nothing to approve.
    let q = exec_query("/usr/bin/journalctl", "-u nginx");
    assert!(e.authorize(&q).allowed);
    assert_eq!(e.step_up(&q), None);
    // A forbid wins over a step-up permit too.
    let q = exec_query("/usr/bin/systemctl", "reboot");
    assert!(!e.authorize(&q).allowed);
    assert_eq!(e.step_up(&q), None);
    // Nothing matches: not approvable.
    assert_eq!(e.step_up(&exec_query("/usr/bin/id", "")), None);
    // Only on exec permits.
    let err = load_err(
        r#"@id("x") @step_up("") permit(principal, action == Pedm::Action::"request", resource);"#,
    );
    assert!(err.to_string().contains("action exec"), "{err}");
    let err = load_err(
        r#"@id("x") @step_up("") forbid(principal, action == Pedm::Action::"exec", resource);"#,
    );
    assert!(err.to_string().contains("action exec"), "{err}");
    let err = load_err(
        r#"@id("x") @stepup("") permit(principal, action == Pedm::Action::"exec", resource);"#,
    );
    assert!(err.to_string().contains("@step_up"), "{err}");
}

#[test]
fn exec_allowlist_and_blocklist_forbid_wins() {
    let e = engine(
        r#"@id("ops-allowlist")
        permit(principal in Pedm::Group::"ops", action == Pedm::Action::"exec", resource in Pedm::Target::"web1")
        when { ["/usr/bin/systemctl", "/usr/bin/journalctl", "/bin/rm"].contains(resource.path) };
        @id("no-rm-rf")
        forbid(principal, action == Pedm::Action::"exec", resource)
        when { resource.path == "/bin/rm" && resource.args like "*-rf*" };
        @id("pinned-binary")
        forbid(principal, action == Pedm::Action::"exec", resource)
        when { resource.path == "/usr/bin/journalctl" && !(resource has sha256 && resource.sha256 == "abc") };"#,
    );
    let v = e.authorize(&exec_query("/usr/bin/systemctl", "restart nginx"));
    assert!(v.allowed, "{}", v.reason);
    assert_eq!(v.policies, vec!["ops-allowlist"]);
    let v = e.authorize(&exec_query("/bin/bash", ""));
    assert!(!v.allowed);
    assert!(v.policies.is_empty());
    let v = e.authorize(&exec_query("/bin/rm", "/tmp/x"));
    assert!(v.allowed);
    let v = e.authorize(&exec_query("/bin/rm", "-rf /"));
    assert!(!v.allowed);
    assert_eq!(v.policies, vec!["no-rm-rf"]);
    assert!(v.reason.contains("no-rm-rf"));
    // hash pinning with the optional attribute
    assert!(
        !e.authorize(&exec_query("/usr/bin/journalctl", "-u x"))
            .allowed
    );
    let mut q = exec_query("/usr/bin/journalctl", "-u x");
    if let Resource::Command { command, .. } = &mut q.resource {
        command.sha256 = Some("abc".into());
    }
    assert!(e.authorize(&q).allowed);
    assert_eq!(e.authorize(&q), e.authorize_full(&q));
}

/// The working directory a caller asks for is `context.cwd` (absent without one), so a
/// policy can confine or refuse it.
#[test]
fn exec_context_carries_the_requested_working_directory() {
    let e = engine(
        r#"@id("ops-exec")
        permit(principal in Pedm::Group::"ops", action == Pedm::Action::"exec", resource);
        @id("cwd-only-under-srv")
        forbid(principal, action == Pedm::Action::"exec", resource)
        when { context has cwd && !(context.cwd like "/srv/*") };"#,
    );
    let with_cwd = |cwd: Option<&str>| {
        let mut q = exec_query("/usr/bin/python3", "-m json.tool x.json");
        if let Resource::Command { command, .. } = &mut q.resource {
            command.cwd = cwd.map(String::from);
        }
        e.authorize(&q)
    };
    assert!(with_cwd(None).allowed);
    assert!(with_cwd(Some("/srv/app")).allowed);
    let v = with_cwd(Some("/home/alice"));
    assert!(!v.allowed);
    assert_eq!(v.policies, vec!["cwd-only-under-srv"]);
}

#[test]
fn max_duration() {
    let e = engine(
        r#"@id("short") @auto_approve("true") @max_duration("1h")
        permit(principal, action == Pedm::Action::"request", resource == Pedm::Role::"web1/root");
        @id("long") @approvals("security:1") @max_duration("8h")
        permit(principal, action == Pedm::Action::"request", resource == Pedm::Role::"web1/root");
        @id("unbounded") @approvals("security:2")
        permit(principal, action == Pedm::Action::"request", resource == Pedm::Role::"web1/admin");"#,
    );
    // The strictest permit that applies decides, whatever the duration.
    let mut q = rq("u", &[], web1(), "root", MON_10_BERLIN);
    q.context.duration_secs = 1800;
    let v = decide(&e, &q);
    assert_eq!(permit(&v).policy, "long");
    assert_eq!(permit(&v).max_duration_secs, Some(8 * 3600));
    q.context.duration_secs = 4 * 3600;
    assert_eq!(permit(&decide(&e, &q)).policy, "long");
    // Too long for the strictest: refused, never handed to a looser permit.
    q.context.duration_secs = 9 * 3600;
    let (p, reason) = deny(&decide(&e, &q));
    assert_eq!(p, vec!["long"]);
    assert!(reason.contains("exceeds"), "{reason}");
    let v = decide(&e, &rq("u", &[], web1(), "admin", MON_10_BERLIN));
    assert_eq!(permit(&v).max_duration_secs, None);
}

/// The combining rule: the strictest applicable permit wins (approvals beat auto-approve,
/// more approvals beat fewer, more tiers beat fewer, then the lowest id), so a stricter
/// policy is never shadowed by a looser one.
#[test]
fn strictest_permit_wins() {
    let e = engine(
        r#"@id("b-two") @approvals("2")
        permit(principal in Pedm::Group::"ops", action == Pedm::Action::"request", resource);
        @id("a-three") @approvals("leads:1, security:2")
        permit(principal in Pedm::Group::"ops", action == Pedm::Action::"request", resource)
        when { resource.labels.contains("env=prod") };
        @id("c-auto") @auto_approve("true")
        permit(principal in Pedm::Group::"ops", action == Pedm::Action::"request", resource)
        when { resource.labels.contains("env=dev") };
        @id("d-two") @approvals("leads:2")
        permit(principal in Pedm::Group::"ops", action == Pedm::Action::"request", resource);
        @id("e-auto") @auto_approve("true")
        permit(principal in Pedm::Group::"qa", action == Pedm::Action::"request", resource)
        when { resource.labels.contains("env=dev") };"#,
    );
    // On dev, c-auto applies but b-two and d-two need approvals: they win.
    let v = decide(&e, &rq("o", &["ops"], dev1(), "root", MON_10_BERLIN));
    assert_eq!(permit(&v).policy, "b-two");
    assert!(!permit(&v).auto_approve);
    // Only an auto-approve permit applies: granted at once.
    let v = decide(&e, &rq("q", &["qa"], dev1(), "root", MON_10_BERLIN));
    assert_eq!(permit(&v).policy, "e-auto");
    assert!(permit(&v).tiers.is_empty());
    // On prod, three approvals in two tiers beat two.
    let v = decide(&e, &rq("o", &["ops"], web1(), "root", MON_10_BERLIN));
    assert_eq!(permit(&v).policy, "a-three");
    assert_eq!(permit(&v).total_approvals(), 3);
    // b-two and d-two both need 2 in one tier: tie → lowest id
    let v = decide(&e, &rq("o", &["ops"], dev1(), "admin", MON_10_BERLIN));
    assert_eq!(permit(&v).policy, "b-two");
    assert_eq!(
        permit(&v).tiers,
        vec![ApprovalTier {
            group: None,
            required: 2
        }]
    );
}

#[test]
fn ordered_tiers() {
    let e = engine(
        r#"@approvals("team-leads:1, security:2")
        permit(principal, action == Pedm::Action::"request", resource in Pedm::Target::"web1");"#,
    );
    let v = decide(&e, &rq("u", &[], web1(), "root", MON_10_BERLIN));
    let r = permit(&v);
    assert!(!r.auto_approve);
    assert_eq!(
        r.tiers,
        vec![
            ApprovalTier {
                group: Some("team-leads".into()),
                required: 1
            },
            ApprovalTier {
                group: Some("security".into()),
                required: 2
            }
        ]
    );
    assert_eq!(r.total_approvals(), 3);
    assert_eq!(r.tiers_text(), "team-leads:1, security:2");
}

#[test]
fn approve_is_authorised_by_policy_and_never_by_the_requester() {
    let e = engine(
        r#"@id("leads-approve")
        permit(principal in Pedm::Group::"team-leads", action == Pedm::Action::"approve", resource)
        when { context.requester in Pedm::Group::"devs" };"#,
    );
    let q = |approver: &str, groups: &[&str], requester: &str| AuthzQuery {
        principal: Principal::new(approver, groups),
        action: Action::Approve,
        resource: Resource::Role {
            target: web1(),
            role: RoleRef::new("root"),
        },
        context: Ctx::at(ts(MON_10_BERLIN)),
        requester: Some(Principal::new(requester, &["devs", "team-leads"])),
    };
    let v = e.authorize(&q("lead", &["team-leads"], "dev"));
    assert!(v.allowed, "{}", v.reason);
    assert_eq!(v.policies, vec!["leads-approve"]);
    assert!(!e.authorize(&q("someone", &["devs"], "dev")).allowed);
    // the requester is a team lead too, yet may not approve their own request
    let v = e.authorize(&q("dev", &["team-leads"], "dev"));
    assert!(!v.allowed);
    assert!(v.reason.contains("own request"));
    let mut no_req = q("lead", &["team-leads"], "dev");
    no_req.requester = None;
    assert!(!e.authorize(&no_req).allowed);
}

#[test]
fn break_glass() {
    let e = engine(
        r#"@id("oncall-bg") @break_glass("true") @max_duration("2h")
        permit(principal in Pedm::Group::"oncall", action == Pedm::Action::"request", resource in Pedm::Target::"web1");
        @id("normal") @approvals("security:1")
        permit(principal in Pedm::Group::"ops", action == Pedm::Action::"request", resource in Pedm::Target::"web1");"#,
    );
    // not flagged: the break-glass policy does not apply
    let q = rq("o", &["oncall"], web1(), "root", MON_10_BERLIN);
    let (p, reason) = deny(&decide(&e, &q));
    assert_eq!(p, vec!["oncall-bg"]);
    assert!(reason.contains("break-glass"), "{reason}");
    // flagged: granted at once, flagged for review
    let mut q = rq("o", &["oncall", "ops"], web1(), "root", MON_10_BERLIN);
    q.context.break_glass = true;
    let v = decide(&e, &q);
    let r = permit(&v);
    assert_eq!(r.policy, "oncall-bg");
    assert!(r.break_glass && r.auto_approve && r.tiers.is_empty());
    assert_eq!(r.max_duration_secs, Some(7200));
    // flagged but only an ordinary permit: ordinary terms, not break-glass
    let mut q = rq("o", &["ops"], web1(), "root", MON_10_BERLIN);
    q.context.break_glass = true;
    let v = decide(&e, &q);
    assert_eq!(permit(&v).policy, "normal");
    assert!(!permit(&v).break_glass);
    // no policy at all for this principal
    let mut q = rq("x", &[], web1(), "root", MON_10_BERLIN);
    q.context.break_glass = true;
    deny(&decide(&e, &q));
}

#[test]
fn denial_names_every_forbid() {
    let e = engine(
        r#"@auto_approve("true") permit(principal, action == Pedm::Action::"request", resource);
        @id("prod-needs-ticket")
        forbid(principal, action == Pedm::Action::"request", resource)
        when { resource.labels.contains("env=prod") && !context.has_ticket };
        @id("no-contractors")
        forbid(principal in Pedm::Group::"contractors", action, resource in Pedm::Target::"web1");"#,
    );
    let v = decide(
        &e,
        &rq("c", &["contractors"], web1(), "root", MON_10_BERLIN),
    );
    let (p, reason) = deny(&v);
    assert_eq!(
        p,
        vec![
            "no-contractors".to_string(),
            "prod-needs-ticket".to_string()
        ]
    );
    assert!(reason.contains("no-contractors") && reason.contains("prod-needs-ticket"));
    let mut q = rq("c", &["staff"], web1(), "root", MON_10_BERLIN);
    q.context.has_ticket = true;
    assert!(decide(&e, &q).is_permit());
}

#[test]
fn never_fail_open_on_evaluation_error() {
    // Valid under strict validation, but overflows at run time for long durations.
    let e = engine(
        r#"@auto_approve("true") permit(principal, action == Pedm::Action::"request", resource);
        @id("overflowing-forbid")
        forbid(principal, action == Pedm::Action::"request", resource)
        when { context.duration_secs * 1000000000000 > 5000000000000000000 };"#,
    );
    let mut q = rq("u", &[], web1(), "root", MON_10_BERLIN);
    q.context.duration_secs = 60;
    assert!(decide(&e, &q).is_permit());
    q.context.duration_secs = 3600 * 24 * 365; // overflows: Cedar would skip the forbid
    let v = decide(&e, &q);
    match &v {
        RequestVerdict::Deny {
            policies, errors, ..
        } => {
            assert_eq!(policies, &vec!["overflowing-forbid".to_string()]);
            assert_eq!(errors.len(), 1);
            assert!(errors[0].contains("overflow"), "{errors:?}");
        }
        other => panic!("failed open: {other:?}"),
    }
    // the same for a plain authorization
    let e = engine(
        r#"permit(principal, action == Pedm::Action::"run_task", resource);
        forbid(principal, action == Pedm::Action::"run_task", resource)
        when { context.duration_secs + 9223372036854775807 > 0 };"#,
    );
    let q = AuthzQuery {
        principal: Principal::new("u", &[]),
        action: Action::RunTask,
        resource: Resource::Task {
            target: web1(),
            task: "backup".into(),
        },
        context: Ctx::at(ts(MON_10_BERLIN)),
        requester: None,
    };
    let v = e.authorize(&q);
    assert!(!v.allowed);
    assert_eq!(v.errors.len(), 1);
    assert_eq!(v.policies, vec!["t#1"]);
}

#[test]
fn admin_actions_and_delegate() {
    let e = engine(
        r#"@id("admins") permit(principal, action in [Pedm::Action::"manage_users", Pedm::Action::"manage_policies", Pedm::Action::"read_audit"], resource) when { principal.admin };
        @id("auditors") permit(principal in Pedm::Group::"auditors", action == Pedm::Action::"read_audit", resource == Pedm::System::"pedm");
        @id("web-delegate") permit(principal in Pedm::Group::"web-leads", action == Pedm::Action::"delegate", resource in Pedm::Target::"web1");"#,
    );
    let q = |p: Principal, action: Action, resource: Resource| AuthzQuery {
        principal: p,
        action,
        resource,
        context: Ctx::at(ts(MON_10_BERLIN)),
        requester: None,
    };
    let mut admin = Principal::new("root", &[]);
    admin.admin = true;
    assert!(
        e.authorize(&q(admin.clone(), Action::ManageUsers, Resource::System))
            .allowed
    );
    assert!(
        !e.authorize(&q(admin.clone(), Action::ManageTargets, Resource::System))
            .allowed
    );
    assert!(
        !e.authorize(&q(
            Principal::new("x", &[]),
            Action::ManageUsers,
            Resource::System
        ))
        .allowed
    );
    assert!(
        e.authorize(&q(
            Principal::new("a", &["auditors"]),
            Action::ReadAudit,
            Resource::System
        ))
        .allowed
    );
    assert!(
        !e.authorize(&q(
            Principal::new("a", &["auditors"]),
            Action::ReadAudit,
            Resource::Target(web1())
        ))
        .allowed
    );
    let lead = Principal::new("l", &["web-leads"]);
    assert!(
        e.authorize(&q(
            lead.clone(),
            Action::Delegate,
            Resource::Task {
                target: web1(),
                task: "backup".into()
            }
        ))
        .allowed
    );
    assert!(
        e.authorize(&q(
            lead.clone(),
            Action::Delegate,
            Resource::Role {
                target: web1(),
                role: RoleRef::new("root")
            }
        ))
        .allowed
    );
    assert!(
        !e.authorize(&q(
            lead,
            Action::Delegate,
            Resource::Role {
                target: dev1(),
                role: RoleRef::new("root")
            }
        ))
        .allowed
    );
}

#[test]
fn run_as_and_role_attributes() {
    let e = engine(
        r#"@auto_approve("true") permit(principal, action == Pedm::Action::"request", resource)
        when { resource has run_as && resource.run_as == "postgres" && resource.target == "web1" };"#,
    );
    let mut q = rq("u", &[], web1(), "dba", MON_10_BERLIN);
    deny(&decide(&e, &q));
    q.role.run_as = Some("postgres".into());
    assert!(decide(&e, &q).is_permit());
}

// ---- bad input ----

#[test]
fn invalid_cedar_is_refused_with_location() {
    let err = load_err("permit(principal, action, resource) when { 1 + };");
    match &err {
        PolicyError::Parse { source_id, message } => {
            assert_eq!(source_id, "t");
            assert!(message.contains("line 1"), "{message}");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn schema_violations_are_refused() {
    // unknown attribute
    let err = load_err(
        r#"permit(principal, action == Pedm::Action::"request", resource) when { principal.department == "x" };"#,
    );
    let PolicyError::Validation { errors } = &err else {
        panic!("{err:?}")
    };
    assert_eq!(errors[0].0, "t#0");
    assert!(errors[0].1.contains("department"), "{err}");
    // unknown entity type
    let err = load_err(r#"permit(principal == Pedm::Robot::"r2", action, resource);"#);
    assert!(matches!(err, PolicyError::Validation { .. }), "{err}");
    assert!(err.to_string().contains("Robot"), "{err}");
    // entity type without namespace
    let err = load_err(r#"permit(principal == User::"alice", action, resource);"#);
    assert!(matches!(err, PolicyError::Validation { .. }), "{err}");
    // unknown action
    let err = load_err(r#"permit(principal, action == Pedm::Action::"reboot", resource);"#);
    assert!(matches!(err, PolicyError::Validation { .. }), "{err}");
    // wrong type
    let err = load_err(
        r#"permit(principal, action == Pedm::Action::"request", resource) when { context.duration_secs == "long" };"#,
    );
    assert!(matches!(err, PolicyError::Validation { .. }), "{err}");
    // action applied to a wrong resource type
    let err = load_err(
        r#"permit(principal, action == Pedm::Action::"exec", resource == Pedm::Role::"web1/root");"#,
    );
    assert!(matches!(err, PolicyError::Validation { .. }), "{err}");
}

#[test]
fn contradictory_annotations_are_refused() {
    let cases = [
        (
            r#"@auto_approve("true") @approvals("security:1") permit(principal, action == Pedm::Action::"request", resource);"#,
            "contradicts",
        ),
        (
            r#"@approvals("security:0") permit(principal, action == Pedm::Action::"request", resource);"#,
            "at least one",
        ),
        (
            r#"@approvals("security:") permit(principal, action == Pedm::Action::"request", resource);"#,
            "GROUP:N",
        ),
        (
            r#"@approvals("security:1,,x:2") permit(principal, action == Pedm::Action::"request", resource);"#,
            "GROUP:N",
        ),
        (
            r#"@max_duration("forever") permit(principal, action == Pedm::Action::"request", resource);"#,
            "max_duration",
        ),
        (
            r#"@approvals("1") forbid(principal, action == Pedm::Action::"request", resource);"#,
            "forbid",
        ),
        (
            r#"@approvals("1") permit(principal, action == Pedm::Action::"exec", resource);"#,
            "only meaningful",
        ),
        (
            r#"@auto_approve("true") permit(principal, action, resource);"#,
            "only meaningful",
        ),
        (
            r#"@break_glass("true") @approvals("1") permit(principal, action == Pedm::Action::"request", resource);"#,
            "contradicts",
        ),
        (
            r#"@auto_approve("yes") permit(principal, action == Pedm::Action::"request", resource);"#,
            "expected",
        ),
        (
            r#"@approval("1") permit(principal, action == Pedm::Action::"request", resource);"#,
            "did you mean @approvals",
        ),
        (
            r#"@timezone("Mars/Olympus") permit(principal, action == Pedm::Action::"request", resource);"#,
            "unknown time zone",
        ),
    ];
    for (text, needle) in cases {
        let err = load_err(text);
        let msg = err.to_string();
        assert!(msg.contains("policy t#0"), "{text}: {msg}");
        assert!(msg.contains(needle), "{text}: {msg}");
    }
    // other annotations are fine and listed
    let e = engine(
        r#"@description("ok") @owner("sec") permit(principal, action == Pedm::Action::"request", resource);"#,
    );
    assert_eq!(e.policies()[0].annotations["owner"], "sec");
}

#[test]
fn oversized_input_is_refused_fast() {
    let big = "x".repeat(10 * 1024 * 1024);
    let start = std::time::Instant::now();
    let err = Engine::load(&[("big.cedar".into(), big)], EngineOptions::default()).unwrap_err();
    assert!(matches!(err, PolicyError::TooLarge { .. }), "{err}");
    assert!(start.elapsed() < std::time::Duration::from_millis(100));
    assert!(err.to_string().contains("limit"));
    // several sources add up
    let half = "// c\n".repeat(120_000);
    let err = Engine::load(
        &[("a".into(), half.clone()), ("b".into(), half)],
        EngineOptions::default(),
    )
    .unwrap_err();
    assert!(matches!(err, PolicyError::TooLarge { .. }));
}

#[test]
fn ids_numbering_and_duplicates() {
    let e = Engine::load(
        &[
            (
                "base.cedar".into(),
                r#"permit(principal, action == Pedm::Action::"request", resource);
                   @id("named") permit(principal, action == Pedm::Action::"exec", resource);
                   forbid(principal, action == Pedm::Action::"exec", resource) when { resource.path == "/bin/sh" };"#
                    .into(),
            ),
            ("other.cedar".into(), r#"permit(principal, action == Pedm::Action::"run_task", resource);"#.into()),
        ],
        EngineOptions::default(),
    )
    .unwrap();
    let ids: Vec<String> = e.policies().into_iter().map(|p| p.id).collect();
    assert_eq!(
        ids,
        vec!["base.cedar#0", "named", "base.cedar#2", "other.cedar#0"]
    );
    let info = &e.policies()[2];
    assert_eq!(info.effect, "forbid");
    assert_eq!(info.actions, Some(vec!["exec".to_string()]));
    assert!(info.text.contains("/bin/sh"));

    let err = Engine::load(
        &[
            (
                "a".into(),
                r#"@id("x") permit(principal, action, resource);"#.into(),
            ),
            (
                "b".into(),
                r#"@id("x") permit(principal, action, resource);"#.into(),
            ),
        ],
        EngineOptions::default(),
    )
    .unwrap_err();
    assert!(matches!(err, PolicyError::DuplicateId { .. }), "{err}");
}

#[test]
fn nothing_partial_on_error() {
    // the first source is fine, the second has an error: nothing loads
    let r = Engine::load(
        &[
            (
                "good".into(),
                r#"permit(principal, action, resource);"#.into(),
            ),
            (
                "bad".into(),
                r#"permit(principal, action, resource) when { context.nope };"#.into(),
            ),
        ],
        EngineOptions::default(),
    );
    let err = r.unwrap_err();
    let PolicyError::Validation { errors } = err else {
        panic!()
    };
    assert!(!errors.is_empty());
    assert!(errors.iter().all(|(id, _)| id == "bad#0"), "{errors:?}");
}

#[test]
fn templates_are_refused() {
    let err = load_err(r#"permit(principal == ?principal, action, resource);"#);
    assert!(err.to_string().contains("template"), "{err}");
}

// ---- test cases ----

const CASE_POLICIES: &str = r#"
@id("dev-hosts") @timezone("Europe/Berlin") @approvals("team-leads:1, security:1") @max_duration("8h")
permit(principal in Pedm::Group::"devs", action == Pedm::Action::"request", resource)
when { resource.labels.contains("env=dev") && context.time.weekday <= 5 };

@id("dev-auto") @auto_approve("true") @max_duration("1h")
permit(principal in Pedm::Group::"devs", action == Pedm::Action::"request", resource)
when { resource.labels.contains("env=dev") && context has source_ip && context.source_ip.isInRange(ip("10.0.0.0/8")) };

@id("bg") @break_glass("true")
permit(principal in Pedm::Group::"oncall", action == Pedm::Action::"request", resource);

@id("no-rm")
forbid(principal, action == Pedm::Action::"exec", resource) when { resource.path == "/bin/rm" };

@id("ops-exec")
permit(principal in Pedm::Group::"ops", action == Pedm::Action::"exec", resource);
"#;

const CASES: &str = r#"
[[case]]
name = "dev on a dev host needs two tiers"
principal = { user = "alice", groups = ["devs"] }
target = { name = "dev1", kind = "host", labels = { env = "dev" } }
role = { name = "root" }
context = { now = "2026-11-02T10:00:00+01:00[Europe/Berlin]", duration = "2h" }
expect = "needs_approval"
approvals = "team-leads:1, security:1"
max_duration = "8h"
policy = "dev-hosts"

[[case]]
name = "dev from the office at the weekend auto-approves for short grants"
principal = { user = "alice", groups = ["devs"] }
target = { name = "dev1", kind = "host", labels = { env = "dev" } }
role = { name = "root" }
context = { now = "2026-11-07T09:00:00Z", duration = "30m", source_ip = "10.0.0.7" }
expect = "auto_approve"
max_duration = "1h"

[[case]]
name = "not on prod"
principal = { user = "alice", groups = ["devs"] }
target = { name = "web1", kind = "host", labels = { env = "prod" } }
role = { name = "root" }
expect = "deny"

[[case]]
name = "break glass"
principal = { user = "bob", groups = ["oncall"] }
target = { name = "web1", kind = "host", labels = { env = "prod" } }
role = { name = "root" }
context = { break_glass = true }
expect = "break_glass"

[[case]]
name = "rm is blocked"
principal = { user = "carol", groups = ["ops"] }
action = "exec"
target = { name = "web1", kind = "host" }
role = { name = "root" }
command = { path = "/bin/rm", args = "-rf /tmp/x" }
expect = "deny"
policy = "no-rm"

[[case]]
name = "systemctl is fine"
principal = { user = "carol", groups = ["ops"] }
action = "exec"
target = { name = "web1", kind = "host" }
role = { name = "root" }
command = { path = "/usr/bin/systemctl", args = "status" }
expect = "allow"

[[case]]
name = "wrong expectation (fails on purpose)"
principal = { user = "alice", groups = ["devs"] }
target = { name = "dev1", kind = "host", labels = { env = "dev" } }
role = { name = "root" }
context = { now = "2026-11-07T10:00:00Z" }
expect = "needs_approval"
"#;

#[test]
fn run_policy_cases() {
    let e = engine(CASE_POLICIES);
    let report = run_cases(&e, CASES).unwrap();
    let failed: Vec<_> = report.cases.iter().filter(|c| !c.passed).collect();
    assert_eq!(report.passed, 6, "{report}");
    assert_eq!(failed.len(), 1, "{report}");
    assert_eq!(failed[0].name, "wrong expectation (fails on purpose)");
    let why = failed[0].failure.as_deref().unwrap();
    assert!(why.contains("expected needs_approval, got deny"), "{why}");
    assert!(!report.all_passed());
    let text = report.to_string();
    assert!(text.contains("FAIL  wrong expectation"), "{text}");

    // mismatching approvals / max_duration are reported
    let cases = r#"
[[case]]
principal = { user = "alice", groups = ["devs"] }
target = { name = "dev1", kind = "host", labels = { env = "dev" } }
role = { name = "root" }
context = { now = "2026-11-02T10:00:00Z" }
expect = "needs_approval"
approvals = "security:2"
max_duration = "1h"
"#;
    let report = run_cases(&e, cases).unwrap();
    let why = report.cases[0].failure.as_deref().unwrap();
    assert!(
        why.contains("expected approvals") && why.contains("expected max_duration"),
        "{why}"
    );

    // a malformed file is an error
    assert!(matches!(
        run_cases(&e, "[[case]]\nfoo = 1"),
        Err(PolicyError::Cases(_))
    ));
}

#[test]
fn slice_holds_only_policies_that_can_apply() {
    let e = engine(
        r#"permit(principal in Pedm::Group::"a", action == Pedm::Action::"request", resource in Pedm::Target::"web1");
        permit(principal in Pedm::Group::"b", action == Pedm::Action::"request", resource in Pedm::Target::"web1");
        permit(principal in Pedm::Group::"a", action == Pedm::Action::"request", resource) when { resource.labels.contains("env=dev") && context.has_ticket };
        permit(principal in Pedm::Group::"a", action == Pedm::Action::"request", resource) when { resource.labels.contains("env=prod") };
        permit(principal in Pedm::Group::"a", action == Pedm::Action::"exec", resource);
        forbid(principal, action, resource in Pedm::Target::"dev1");"#,
    );
    let q = |target: TargetRef| AuthzQuery {
        principal: Principal::new("u", &["a"]),
        action: Action::Request,
        resource: Resource::Role {
            target,
            role: RoleRef::new("root"),
        },
        context: Ctx::at(ts(MON_10_BERLIN)),
        requester: None,
    };
    assert_eq!(e.slice_len(&q(web1())), 2); // t#0 and the env=prod label policy
    assert_eq!(e.slice_len(&q(dev1())), 2); // the env=dev label policy and the forbid
    assert_eq!(e.evaluate(&q(web1()), true), e.evaluate(&q(web1()), false));
    assert_eq!(e.evaluate(&q(dev1()), true), e.evaluate(&q(dev1()), false));
}

#[test]
fn approver_groups_are_those_that_decide_approvals() {
    let e = engine(
        r#"
        @approvals("leads:1, security:2")
        permit (principal in Pedm::Group::"devs", action == Pedm::Action::"request", resource);

        permit (principal in Pedm::Group::"approvers", action == Pedm::Action::"approve", resource);

        permit (principal, action in [Pedm::Action::"manage_policies", Pedm::Action::"read_audit"], resource)
        when { principal in Pedm::Group::"policy-admins" };

        permit (principal in Pedm::Group::"auditors", action == Pedm::Action::"read_audit", resource);

        forbid (principal in Pedm::Group::"contractors", action == Pedm::Action::"approve", resource);
        "#,
    );
    let groups: Vec<String> = e.approver_groups().expect("known").into_iter().collect();
    // devs only request, auditors only read, and a forbid takes power away.
    assert_eq!(groups, ["approvers", "leads", "policy-admins", "security"]);
}
