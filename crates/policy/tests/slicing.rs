//! Property: the sliced engine decides exactly like Cedar on the whole set
//! (decision, determining policy ids and errors) for random policy sets and queries.

use std::net::IpAddr;

use pedm_policy::*;
use proptest::prelude::*;

const USERS: [&str; 5] = ["u0", "u1", "u2", "u3", "u4"];
const GROUPS: [&str; 4] = ["g0", "g1", "g2", "g3"];
const TARGETS: [&str; 3] = ["t0", "t1", "t2"];
const ROLES: [&str; 2] = ["r0", "r1"];
const ACTIONS: [&str; 9] = [
    "request",
    "approve",
    "exec",
    "run_task",
    "delegate",
    "manage_users",
    "manage_targets",
    "manage_policies",
    "read_audit",
];

fn principal_scope(i: u8, a: usize, b: usize) -> String {
    let u = USERS[a % USERS.len()];
    let g = GROUPS[b % GROUPS.len()];
    match i % 7 {
        0 => "principal".into(),
        1 => format!("principal == Pedm::User::\"{u}\""),
        2 => format!("principal in Pedm::Group::\"{g}\""),
        3 => format!("principal in Pedm::User::\"{u}\""),
        4 => "principal is Pedm::User".into(),
        5 => format!("principal is Pedm::User in Pedm::Group::\"{g}\""),
        _ => format!("principal in Pedm::Group::\"{g}\""),
    }
}

fn action_scope(i: u8) -> String {
    let i = i as usize % (ACTIONS.len() + 4);
    if i < ACTIONS.len() {
        return format!("action == Pedm::Action::\"{}\"", ACTIONS[i]);
    }
    match i - ACTIONS.len() {
        0 => "action".into(),
        1 => r#"action in [Pedm::Action::"request", Pedm::Action::"approve"]"#.into(),
        2 => r#"action in [Pedm::Action::"run_task", Pedm::Action::"delegate"]"#.into(),
        _ => r#"action == Pedm::Action::"request""#.into(),
    }
}

fn resource_scope(i: u8, a: usize, b: usize) -> String {
    let t = TARGETS[a % TARGETS.len()];
    let r = ROLES[b % ROLES.len()];
    match i % 11 {
        0 | 1 => "resource".into(),
        2 => format!("resource == Pedm::Role::\"{t}/{r}\""),
        3 | 4 => format!("resource in Pedm::Target::\"{t}\""),
        5 => format!("resource in Pedm::Role::\"{t}/{r}\""),
        6 => "resource is Pedm::Role".into(),
        7 => format!("resource is Pedm::Role in Pedm::Target::\"{t}\""),
        8 => format!("resource == Pedm::Target::\"{t}\""),
        9 => format!("resource == Pedm::Task::\"{t}/backup\""),
        _ => "resource == Pedm::System::\"pedm\"".into(),
    }
}

const CONDITIONS: [&str; 18] = [
    "true",
    "context.time.hour >= 9 && context.time.hour < 17",
    "context.time.weekday <= 5",
    "context has source_ip && context.source_ip.isInRange(ip(\"10.0.0.0/8\"))",
    "context.device has managed && context.device.managed",
    "context.has_ticket",
    "context.break_glass",
    "context.duration_secs <= 3600",
    // overflows for long durations: an evaluation error
    "context.duration_secs * 1000000000000 > 1000",
    "principal.admin",
    "resource has labels && resource.labels.contains(\"env=prod\")",
    "resource has labels && resource.labels.contains(\"env=dev\")",
    "context.time.minute_of_day < 600",
    "!(context has source_ip)",
    "context.device has os && context.device.os == \"linux\"",
    "context.time.day_of_month % 2 == 0",
    // leading label conditions: the slicer's label filter
    "resource.labels.contains(\"env=prod\")",
    "resource.labels.contains(\"env=dev\")",
];

const ANNOTATIONS: [&str; 8] = [
    "",
    "@auto_approve(\"true\")",
    "@approvals(\"g1:1\")",
    "@approvals(\"2\")",
    "@approvals(\"g0:1, g2:2\")",
    "@max_duration(\"1h\")",
    "@break_glass(\"true\")",
    "@auto_approve(\"true\") @max_duration(\"30m\")",
];

const ZONES: [&str; 3] = [
    "",
    "@timezone(\"Europe/Berlin\")",
    "@timezone(\"Asia/Tokyo\")",
];

#[derive(Debug, Clone)]
struct P {
    forbid: bool,
    principal: (u8, usize, usize),
    action: u8,
    resource: (u8, usize, usize),
    when: (usize, usize),
    unless: Option<usize>,
    ann: usize,
    zone: usize,
}

fn policy_text(p: &P) -> String {
    let is_request = (p.action as usize).is_multiple_of(ACTIONS.len() + 4)
        || p.action as usize % (ACTIONS.len() + 4) == ACTIONS.len() + 3;
    let ann = if !p.forbid && is_request {
        ANNOTATIONS[p.ann % ANNOTATIONS.len()]
    } else {
        ""
    };
    let mut s = format!(
        "{} {} {}({}, {}, {}) when {{ {} && {} }}",
        ZONES[p.zone % ZONES.len()],
        ann,
        if p.forbid { "forbid" } else { "permit" },
        principal_scope(p.principal.0, p.principal.1, p.principal.2),
        action_scope(p.action),
        resource_scope(p.resource.0, p.resource.1, p.resource.2),
        CONDITIONS[p.when.0 % CONDITIONS.len()],
        CONDITIONS[p.when.1 % CONDITIONS.len()],
    );
    if let Some(u) = p.unless {
        s.push_str(&format!(
            " unless {{ {} }}",
            CONDITIONS[u % CONDITIONS.len()]
        ));
    }
    s.push(';');
    s
}

fn arb_policy() -> impl Strategy<Value = P> {
    (
        prop::bool::weighted(0.3),
        (0u8..7, 0usize..5, 0usize..4),
        0u8..13,
        (0u8..11, 0usize..3, 0usize..2),
        (0usize..18, 0usize..18),
        prop::option::weighted(0.2, 0usize..18),
        0usize..8,
        prop_oneof![4 => Just(0usize), 1 => Just(1usize), 1 => Just(2usize)],
    )
        .prop_map(
            |(forbid, principal, action, resource, when, unless, ann, zone)| P {
                forbid,
                principal,
                action,
                resource,
                when,
                unless,
                ann,
                zone,
            },
        )
}

/// Keep the policies that are valid on their own, then load them together.
fn build(policies: &[P]) -> Option<Engine> {
    let mut texts = Vec::new();
    for (i, p) in policies.iter().enumerate() {
        let t = format!("@id(\"p{i:02}\") {}", policy_text(p));
        if Engine::load(&[("x".into(), t.clone())], EngineOptions::default()).is_ok() {
            texts.push(t);
        }
    }
    Engine::load(
        &[("set".into(), texts.join("\n"))],
        EngineOptions::default(),
    )
    .ok()
}

#[derive(Debug, Clone)]
struct Q {
    user: usize,
    groups: Vec<usize>,
    admin: bool,
    action: usize,
    target: usize,
    role: usize,
    resource_kind: u8,
    minutes: i64,
    duration: usize,
    break_glass: bool,
    has_ticket: bool,
    ip: usize,
    managed: Option<bool>,
    os: bool,
    requester: usize,
}

fn arb_query() -> impl Strategy<Value = Q> {
    (
        (
            0usize..5,
            prop::collection::vec(0usize..4, 0..3),
            any::<bool>(),
        ),
        (0usize..9, 0usize..3, 0usize..2, 0u8..4),
        (0i64..(14 * 24 * 60), 0usize..3),
        (
            any::<bool>(),
            any::<bool>(),
            0usize..3,
            prop::option::of(any::<bool>()),
            any::<bool>(),
        ),
        0usize..5,
    )
        .prop_map(
            |(
                (user, groups, admin),
                (action, target, role, resource_kind),
                (minutes, duration),
                (break_glass, has_ticket, ip, managed, os),
                requester,
            )| Q {
                user,
                groups,
                admin,
                action,
                target,
                role,
                resource_kind,
                minutes,
                duration,
                break_glass,
                has_ticket,
                ip,
                managed,
                os,
                requester,
            },
        )
}

fn target(i: usize) -> TargetRef {
    let env = ["prod", "dev", "staging"][i % 3];
    TargetRef::new(TARGETS[i], "host", &[("env", env)])
}

fn query(q: &Q) -> AuthzQuery {
    let action = Action::parse(ACTIONS[q.action]).unwrap();
    let t = target(q.target);
    let role = RoleRef::new(ROLES[q.role]);
    let resource = match action {
        Action::Request | Action::Approve => Resource::Role { target: t, role },
        Action::Exec => Resource::Command {
            target: t,
            role,
            command: CommandRef {
                path: "/bin/ls".into(),
                args: String::new(),
                sha256: None,
                shell: false,
                cwd: None,
            },
        },
        Action::RunTask => Resource::Task {
            target: t,
            task: "backup".into(),
        },
        Action::Delegate => {
            if q.resource_kind.is_multiple_of(2) {
                Resource::Role { target: t, role }
            } else {
                Resource::Task {
                    target: t,
                    task: "backup".into(),
                }
            }
        }
        _ => {
            if q.resource_kind.is_multiple_of(2) {
                Resource::Target(t)
            } else {
                Resource::System
            }
        }
    };
    let base: jiff::Timestamp = "2026-11-02T00:00:00Z".parse().unwrap();
    let now = base + jiff::SignedDuration::from_mins(q.minutes);
    let ip: Option<IpAddr> = [
        None,
        Some("10.1.2.3".parse().unwrap()),
        Some("192.0.2.1".parse().unwrap()),
    ][q.ip];
    let mut principal = Principal {
        user: USERS[q.user].into(),
        groups: q.groups.iter().map(|g| GROUPS[*g].to_string()).collect(),
        admin: q.admin,
        ..Default::default()
    };
    principal.groups.dedup();
    AuthzQuery {
        principal,
        action,
        resource,
        context: Ctx {
            duration_secs: [600, 7200, 100_000_000][q.duration],
            break_glass: q.break_glass,
            has_ticket: q.has_ticket,
            extension: false,
            starts_in_secs: 0,
            via_agent: false,
            risk: 0,
            ticket: None,
            source_ip: ip,
            device: Device {
                managed: q.managed,
                compliant: None,
                os: q.os.then(|| "linux".to_string()),
                ..Default::default()
            },
            now,
        },
        requester: Some(Principal::new(USERS[q.requester], &["g1"])),
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn sliced_equals_full(
        policies in prop::collection::vec(arb_policy(), 1..40),
        queries in prop::collection::vec(arb_query(), 1..40),
    ) {
        let Some(engine) = build(&policies) else { return Ok(()) };
        for q in &queries {
            let aq = query(q);
            let sliced = engine.evaluate(&aq, true);
            let full = engine.evaluate(&aq, false);
            prop_assert_eq!(&sliced, &full, "query {:?}", aq);
            prop_assert_eq!(engine.authorize(&aq), engine.authorize_full(&aq));
            if let Resource::Role { target, role } = &aq.resource {
                let rq = RequestQuery {
                    principal: aq.principal.clone(),
                    target: target.clone(),
                    role: role.clone(),
                    context: aq.context.clone(),
                };
                prop_assert_eq!(engine.decide_request(&rq), engine.decide_request_full(&rq));
            }
        }
    }
}

/// The generator must produce interesting sets: loads, permits, forbids and errors all occur.
#[test]
fn generator_covers_outcomes() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;
    let mut runner = TestRunner::deterministic();
    let (mut permits, mut forbids, mut errors, mut loaded) = (0, 0, 0, 0);
    let (mut kept, mut generated) = (0, 0);
    for _ in 0..40 {
        let ps = prop::collection::vec(arb_policy(), 10..40)
            .new_tree(&mut runner)
            .unwrap()
            .current();
        let Some(engine) = build(&ps) else { continue };
        loaded += 1;
        generated += ps.len();
        kept += engine.len();
        for _ in 0..40 {
            let q = arb_query().new_tree(&mut runner).unwrap().current();
            let ev = engine.evaluate(&query(&q), false);
            permits += usize::from(!ev.permits.is_empty());
            forbids += usize::from(!ev.forbids.is_empty());
            errors += usize::from(!ev.errors.is_empty());
        }
    }
    assert!(loaded > 30, "loaded {loaded}");
    assert!(
        kept * 2 > generated,
        "only {kept} of {generated} generated policies are valid"
    );
    assert!(
        permits > 50 && forbids > 25 && errors > 10,
        "{permits} {forbids} {errors}"
    );
}
