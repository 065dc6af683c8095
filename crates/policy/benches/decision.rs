//! Decision latency: sliced engine vs plain Cedar on the whole set.
//!
//! `cargo bench -p pedm-policy --bench decision`
//!
//! 10,000 users in 500 groups, 2,000 labelled targets with 3 roles each, policy sets of
//! 1,000 and 10,000 policies (per-group permits on targets, roles and labels, time
//! windows in several zones, CIDR and device conditions, per-target and global forbids,
//! a few per-user permits and exec rules). Each query is decided by both engines' code
//! paths in the same run; sliced and full verdicts are compared on every full sample.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use pedm_policy::*;

const USERS: usize = 10_000;
const GROUPS: usize = 500;
const TARGETS: usize = 2_000;
const ROLES: [&str; 3] = ["root", "admin", "app"];
const ENVS: [&str; 3] = ["prod", "staging", "dev"];
const ZONES: [&str; 3] = ["Europe/Berlin", "America/New_York", "Asia/Tokyo"];

/// splitmix64: deterministic, dependency-free.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn chance(&mut self, pct: usize) -> bool {
        self.below(100) < pct
    }
}

struct World {
    user_groups: Vec<Vec<usize>>,
    targets: Vec<TargetRef>,
}

fn world(rng: &mut Rng) -> World {
    let user_groups = (0..USERS)
        .map(|_| {
            let n = 1 + rng.below(3);
            let mut g: Vec<usize> = (0..n).map(|_| rng.below(GROUPS)).collect();
            g.sort();
            g.dedup();
            g
        })
        .collect();
    let targets = (0..TARGETS)
        .map(|i| {
            let mut labels = BTreeMap::new();
            labels.insert("env".to_string(), ENVS[rng.below(3)].to_string());
            labels.insert("team".to_string(), format!("team{}", rng.below(50)));
            labels.insert("region".to_string(), ["eu", "us"][rng.below(2)].to_string());
            TargetRef {
                name: format!("t{i:04}"),
                kind: if i % 5 == 0 { "postgres" } else { "host" }.to_string(),
                labels,
            }
        })
        .collect();
    World {
        user_groups,
        targets,
    }
}

/// Policies, plus for each group the targets its permits name (to aim queries).
fn policies(n: usize, rng: &mut Rng) -> (String, Vec<Vec<usize>>) {
    let mut text = String::new();
    let mut group_targets = vec![Vec::new(); GROUPS];
    let req = r#"action == Pedm::Action::"request""#;
    // a handful of global forbids
    text.push_str(&format!(
        "@id(\"prod-needs-ticket\")\nforbid(principal, {req}, resource)\n  when {{ resource.labels.contains(\"env=prod\") && !context.has_ticket && !context.break_glass }};\n\
         @id(\"unmanaged-device\")\nforbid(principal, {req}, resource)\n  when {{ resource.labels.contains(\"env=prod\") && context.device has managed && !context.device.managed }};\n\
         @id(\"no-week-long\")\nforbid(principal, {req}, resource) when {{ context.duration_secs > 604800 }};\n\
         @id(\"no-shells\")\nforbid(principal, action == Pedm::Action::\"exec\", resource) when {{ [\"/bin/sh\", \"/bin/bash\"].contains(resource.path) }};\n\
         @id(\"admins-manage\")\npermit(principal, action in [Pedm::Action::\"manage_users\", Pedm::Action::\"manage_targets\", Pedm::Action::\"manage_policies\", Pedm::Action::\"read_audit\"], resource) when {{ principal.admin }};\n"
    ));
    let mut count = 5;
    let mut i = 0usize;
    while count < n {
        i += 1;
        let g = rng.below(GROUPS);
        let t = rng.below(TARGETS);
        let hours = [(8, 18), (7, 19), (9, 17), (0, 24)][rng.below(4)];
        let zone = if rng.chance(15) {
            format!("@timezone(\"{}\") ", ZONES[rng.below(3)])
        } else {
            String::new()
        };
        let terms = match rng.below(6) {
            0 => "@auto_approve(\"true\") @max_duration(\"1h\")".to_string(),
            1 => "@approvals(\"team-leads:1\") @max_duration(\"8h\")".to_string(),
            2 => "@approvals(\"team-leads:1, security:1\") @max_duration(\"4h\")".to_string(),
            3 => "@approvals(\"2\")".to_string(),
            4 => "@auto_approve(\"true\") @max_duration(\"30m\")".to_string(),
            _ => String::new(),
        };
        let window = format!(
            "context.time.weekday <= 5 && context.time.hour >= {} && context.time.hour < {}",
            hours.0, hours.1
        );
        let kind = rng.below(100);
        let p = if kind < 55 {
            group_targets[g].push(t);
            format!(
                "@id(\"p{i}\") {zone}{terms}\npermit(principal in Pedm::Group::\"g{g:03}\", {req}, resource in Pedm::Target::\"t{t:04}\")\n  when {{ {window} }};\n"
            )
        } else if kind < 70 {
            group_targets[g].push(t);
            let role = ROLES[rng.below(3)];
            format!(
                "@id(\"p{i}\") {zone}{terms}\npermit(principal in Pedm::Group::\"g{g:03}\", {req}, resource == Pedm::Role::\"t{t:04}/{role}\")\n  when {{ context.has_ticket || {window} }};\n"
            )
        } else if kind < 82 {
            let team = rng.below(50);
            let env = ENVS[rng.below(3)];
            format!(
                "@id(\"p{i}\") {zone}{terms}\npermit(principal in Pedm::Group::\"g{g:03}\", {req}, resource)\n  when {{ resource.labels.contains(\"team=team{team}\") && resource.labels.contains(\"env={env}\") && {window} }};\n"
            )
        } else if kind < 88 {
            group_targets[g].push(t);
            format!(
                "@id(\"p{i}\") {terms}\npermit(principal in Pedm::Group::\"g{g:03}\", {req}, resource in Pedm::Target::\"t{t:04}\")\n  when {{ context has source_ip && context.source_ip.isInRange(ip(\"10.{}.0.0/16\")) }};\n",
                rng.below(256)
            )
        } else if kind < 92 {
            let u = rng.below(USERS);
            format!(
                "@id(\"p{i}\") {terms}\npermit(principal == Pedm::User::\"u{u:05}\", {req}, resource in Pedm::Target::\"t{t:04}\");\n"
            )
        } else if kind < 96 {
            format!(
                "@id(\"p{i}\") {zone}\nforbid(principal, {req}, resource in Pedm::Target::\"t{t:04}\")\n  when {{ context.time.hour < 6 || context.time.day_of_month == 1 }};\n"
            )
        } else if kind < 98 {
            format!(
                "@id(\"p{i}\")\npermit(principal in Pedm::Group::\"g{g:03}\", action == Pedm::Action::\"exec\", resource in Pedm::Target::\"t{t:04}\")\n  when {{ [\"/usr/bin/systemctl\", \"/usr/bin/journalctl\"].contains(resource.path) }};\n"
            )
        } else {
            format!(
                "@id(\"p{i}\")\npermit(principal in Pedm::Group::\"g{g:03}\", action == Pedm::Action::\"approve\", resource in Pedm::Target::\"t{t:04}\")\n  when {{ !(context.requester in Pedm::Group::\"g{g:03}\") || principal.admin }};\n"
            )
        };
        text.push_str(&p);
        count += 1;
    }
    (text, group_targets)
}

/// Distinct client addresses in the query stream.
const IP_POOL: usize = 5_000;

fn queries(n: usize, w: &World, group_targets: &[Vec<usize>], rng: &mut Rng) -> Vec<RequestQuery> {
    let base: jiff::Timestamp = "2026-11-02T00:00:00Z".parse().unwrap();
    let pool: Vec<IpAddr> = (0..IP_POOL)
        .map(|_| {
            format!(
                "10.{}.{}.{}",
                rng.below(256),
                rng.below(256),
                1 + rng.below(250)
            )
            .parse()
            .unwrap()
        })
        .collect();
    (0..n)
        .map(|_| {
            let u = rng.below(USERS);
            let groups = &w.user_groups[u];
            // aim at a target the user's groups have permits on half of the time
            let aimed: Vec<usize> = groups
                .iter()
                .flat_map(|g| group_targets[*g].iter().copied())
                .collect();
            let t = if !aimed.is_empty() && rng.chance(50) {
                aimed[rng.below(aimed.len())]
            } else {
                rng.below(TARGETS)
            };
            // client addresses come from a pool (workstations, VPN pools): see ip_pool
            let ip: Option<IpAddr> = if rng.chance(80) {
                Some(pool[rng.below(pool.len())])
            } else {
                None
            };
            RequestQuery {
                principal: Principal {
                    user: format!("u{u:05}"),
                    groups: groups.iter().map(|g| format!("g{g:03}")).collect(),
                    admin: rng.chance(1),
                    ..Default::default()
                },
                target: w.targets[t].clone(),
                role: RoleRef {
                    name: ROLES[rng.below(3)].to_string(),
                    run_as: Some("root".into()),
                    auto_approve: false,
                },
                context: Ctx {
                    duration_secs: [900, 3600, 4 * 3600][rng.below(3)],
                    break_glass: rng.chance(2),
                    has_ticket: rng.chance(50),
                    extension: false,
                    starts_in_secs: 0,
                    via_agent: false,
                    risk: 0,
                    ticket: None,
                    source_ip: ip,
                    device: Device {
                        managed: if rng.chance(70) {
                            Some(rng.chance(90))
                        } else {
                            None
                        },
                        compliant: None,
                        os: Some("linux".into()),
                        ..Default::default()
                    },
                    now: base + jiff::SignedDuration::from_mins(rng.below(7 * 24 * 60) as i64),
                },
            }
        })
        .collect()
}

fn pct(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1e6
}

struct Row {
    policies: usize,
    engine: &'static str,
    samples: usize,
    p50: f64,
    p99: f64,
    mean_slice: f64,
}

fn measure(
    engine: &Engine,
    qs: &[RequestQuery],
    warmup: usize,
    full: bool,
) -> (Vec<Duration>, Vec<RequestVerdict>) {
    for q in qs.iter().cycle().take(warmup) {
        std::hint::black_box(if full {
            engine.decide_request_full(q)
        } else {
            engine.decide_request(q)
        });
    }
    let mut times = Vec::with_capacity(qs.len());
    let mut verdicts = Vec::with_capacity(qs.len());
    for q in qs {
        let start = Instant::now();
        let v = if full {
            engine.decide_request_full(q)
        } else {
            engine.decide_request(q)
        };
        times.push(start.elapsed());
        verdicts.push(std::hint::black_box(v));
    }
    times.sort();
    (times, verdicts)
}

fn main() {
    // `cargo bench` passes `--bench`; ignore arguments.
    let mut rng = Rng(0x5EED);
    let w = world(&mut rng);
    let mut rows = Vec::new();
    let mut notes = String::new();
    for &(n, sliced_samples, full_samples) in
        &[(1_000usize, 20_000usize, 1_000usize), (10_000, 20_000, 200)]
    {
        let (text, group_targets) = policies(n, &mut rng);
        let opts = EngineOptions {
            max_input_bytes: 16 * 1024 * 1024,
            ..EngineOptions::default()
        };
        let start = Instant::now();
        let engine = Engine::load(&[("bench.cedar".into(), text.clone())], opts)
            .expect("bench policies load");
        let load = start.elapsed();
        assert_eq!(engine.len(), n);
        let qs = queries(sliced_samples, &w, &group_targets, &mut rng);
        let slice_total: usize = qs
            .iter()
            .map(|q| {
                engine.slice_len(&AuthzQuery {
                    principal: q.principal.clone(),
                    action: Action::Request,
                    resource: Resource::Role {
                        target: q.target.clone(),
                        role: q.role.clone(),
                    },
                    context: q.context.clone(),
                    requester: None,
                })
            })
            .sum();
        let (st, sv) = measure(&engine, &qs, 2_000, false);
        // PEDM_BENCH_SLICED_ONLY=1 skips most of the full-set runs (for profiling).
        let full_samples = if std::env::var_os("PEDM_BENCH_SLICED_ONLY").is_some() {
            5
        } else {
            full_samples
        };
        let full_qs = &qs[..full_samples];
        let (ft, fv) = measure(&engine, full_qs, 20, true);
        let mismatches = fv.iter().zip(&sv).filter(|(a, b)| a != b).count();
        assert_eq!(mismatches, 0, "sliced and full verdicts differ");
        let permits = sv.iter().filter(|v| v.is_permit()).count();
        let _ = writeln!(
            notes,
            "{n} policies: {} KiB of Cedar, load+validate+index {:.2} s; {:.1}% of queries permitted; {} full-set verdicts compared, 0 differ",
            text.len() / 1024,
            load.as_secs_f64(),
            100.0 * permits as f64 / sv.len() as f64,
            fv.len()
        );
        rows.push(Row {
            policies: n,
            engine: "sliced",
            samples: st.len(),
            p50: pct(&st, 0.5),
            p99: pct(&st, 0.99),
            mean_slice: slice_total as f64 / qs.len() as f64,
        });
        rows.push(Row {
            policies: n,
            engine: "full Cedar",
            samples: ft.len(),
            p50: pct(&ft, 0.5),
            p99: pct(&ft, 0.99),
            mean_slice: n as f64,
        });
    }
    println!(
        "\nrequest decision latency ({USERS} users, {GROUPS} groups, {TARGETS} targets, {IP_POOL} client addresses)\n"
    );
    println!(
        "| {:>8} | {:<10} | {:>7} | {:>10} | {:>10} | {:>14} |",
        "policies", "engine", "samples", "p50 µs", "p99 µs", "policies/query"
    );
    println!("|---------:|:-----------|--------:|-----------:|-----------:|---------------:|");
    for r in &rows {
        println!(
            "| {:>8} | {:<10} | {:>7} | {:>10.1} | {:>10.1} | {:>14.1} |",
            r.policies, r.engine, r.samples, r.p50, r.p99, r.mean_slice
        );
    }
    println!();
    for pair in rows.chunks(2) {
        println!(
            "{:>6} policies: full/sliced p50 ratio {:.0}x, p99 ratio {:.0}x",
            pair[0].policies,
            pair[1].p50 / pair[0].p50,
            pair[1].p99 / pair[0].p99
        );
    }
    println!();
    print!("{notes}");
    let goal = rows
        .iter()
        .find(|r| r.policies == 10_000 && r.engine == "sliced")
        .map(|r| r.p50);
    if let Some(p50) = goal {
        println!(
            "goal (sliced p50 < 20 µs at 10,000 policies): {} ({p50:.1} µs)",
            if p50 < 20.0 { "met" } else { "NOT met" }
        );
    }
}
