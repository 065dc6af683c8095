//! What proving policy properties and computing a blast radius cost, over an organisation of
//! `PEDM_BENCH_USERS` users (default 1,000, in 20 teams) and `PEDM_BENCH_ROLES` roles
//! (default 1,000: four per target), made through the API of a real `pedmd` on SQLite.
//!
//! `cargo bench -p pedm --bench policy_check`
//!
//! * `policy_check`: `POST /policies/check` with three properties (root on prod, external
//!   accounts, tier-0) against the set in force: the enumeration every apply runs.
//! * `blast_radius`: `POST /policies/simulate` with a draft that widens one team's rule.
//!
//! The limit each is compared with: the same number of decisions (as the report counts them)
//! made one after another directly in the Cedar engine (`pedm_policy::Engine`), in this
//! process, over the same policies, principals, roles and contexts. The ratio says what the
//! enumeration, the directory reads and the HTTP round trip add to the decisions themselves.

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "support/mod.rs"]
mod support;

use common::*;
use pedm_api::*;
use std::time::Instant;

const TEAMS: usize = 20;

/// The set in force: each team asks for its own targets' roles with one approval; team 0 gets
/// its roles at once at night from a trusted device, for up to 30 minutes; team 1 asks for
/// tier-0 roles with two approvals; team 2 may break the glass on prod.
fn policies(widen: bool) -> String {
    let mut p = String::from(
        r#"
@id("admins-administer")
permit (principal, action in [Pedm::Action::"manage_users", Pedm::Action::"manage_targets",
    Pedm::Action::"manage_policies", Pedm::Action::"manage_grants", Pedm::Action::"read_audit"], resource)
when { principal.admin };

@id("night-team0")
@auto_approve("true")
@max_duration("30m")
permit (principal in Pedm::Group::"team0", action == Pedm::Action::"request", resource)
when { resource.labels.contains("team=team0") && !resource.labels.contains("env=prod")
       && (context.time.hour < 7 || context.time.hour >= 22)
       && context.device has trusted && context.device.trusted };

@id("tier0-team1")
@approvals("2")
permit (principal in Pedm::Group::"team1", action == Pedm::Action::"request", resource)
when { resource.labels.contains("tier=0") };

@id("glass-team2")
@break_glass("true")
permit (principal in Pedm::Group::"team2", action == Pedm::Action::"request", resource)
when { resource.labels.contains("env=prod") };
"#,
    );
    for t in 0..TEAMS {
        let also = if widen && t == 3 {
            " || resource.labels.contains(\"team=team4\")"
        } else {
            ""
        };
        let approvals = if t == 1 { 2 } else { 1 };
        p.push_str(&format!(
            "\n@id(\"team{t}\")\n@approvals(\"{approvals}\")\npermit (principal in Pedm::Group::\"team{t}\", action == Pedm::Action::\"request\", resource)\nwhen {{ (resource.labels.contains(\"team=team{t}\"){also}) && !resource.labels.contains(\"tier=0\") }};\n"
        ));
    }
    p
}

fn main() {
    let users = support::setting("PEDM_BENCH_USERS", 1000) as usize;
    let roles = support::setting("PEDM_BENCH_ROLES", 1000) as usize;
    println!("load average before: {}", support::load_average());
    support::block_on(async move {
        let s = Server::start();
        let a = s.admin();
        let t0 = Instant::now();
        for t in 0..TEAMS {
            a.create_group(&CreateGroup {
                name: format!("team{t}"),
                description: None,
            })
            .await
            .unwrap();
        }
        for u in 0..users {
            let name = format!("u{u}");
            a.create_user(&CreateUser {
                name: name.clone(),
                display_name: None,
                email: None,
                admin: false,
            })
            .await
            .unwrap();
            a.add_group_member(&format!("team{}", u % TEAMS), &name)
                .await
                .unwrap();
        }
        let targets = roles.div_ceil(4);
        let mut made = 0;
        for t in 0..targets {
            let name = format!("h{t}");
            let mut labels = vec![("team".to_string(), format!("team{}", t % TEAMS))];
            labels.push(("env".into(), if t % 4 == 0 { "prod" } else { "dev" }.into()));
            if t % 16 == 0 {
                labels.push(("tier".into(), "0".into()));
            }
            a.create_target(&CreateTarget {
                name: name.clone(),
                kind: TargetKind::Host,
                description: None,
                labels: labels.into_iter().collect(),
            })
            .await
            .unwrap();
            for (role, run_as) in [
                ("root", "root"),
                ("app", "app"),
                ("read", "reader"),
                ("logs", "adm"),
            ] {
                if made == roles {
                    break;
                }
                made += 1;
                a.create_role(
                    &name,
                    &CreateRole {
                        run_as: Some(run_as.into()),
                        ..CreateRole::new(role, "1h")
                    },
                )
                .await
                .unwrap();
            }
        }
        let sources = vec![PolicySource {
            name: "org.cedar".into(),
            text: policies(false),
        }];
        a.apply_policies(&ApplyPolicies {
            sources: sources.clone(),
            comment: None,
        })
        .await
        .unwrap();
        println!(
            "set-up: {users} users in {TEAMS} teams, {made} roles on {targets} targets, {:.1} s",
            t0.elapsed().as_secs_f64()
        );
        let props: PropertyFile = toml::from_str(EXAMPLE_PROPERTIES).expect("properties");

        // pedm: the property check, three runs, the median.
        let mut check_ms = vec![];
        let mut report = None;
        for _ in 0..3 {
            let t = Instant::now();
            let r = a
                .check_policies(&CheckPolicies {
                    sources: None,
                    properties: Some(props.properties.clone()),
                })
                .await
                .unwrap();
            check_ms.push(t.elapsed().as_secs_f64() * 1000.0);
            report = Some(r);
        }
        let report = report.unwrap();
        assert!(report.coverage.complete, "{:?}", report.coverage);
        let mut blast_ms = vec![];
        let mut blast = None;
        for _ in 0..3 {
            let t = Instant::now();
            let r = a
                .simulate_policies(&SimulatePolicies {
                    sources: vec![PolicySource {
                        name: "org.cedar".into(),
                        text: policies(true),
                    }],
                    since: Some("1h".into()),
                })
                .await
                .unwrap();
            blast_ms.push(t.elapsed().as_secs_f64() * 1000.0);
            blast = r.blast_radius;
        }
        let blast = blast.expect("blast radius");
        assert!(!blast.changes.is_empty(), "team3 gains team4's roles");

        // The limit: one decision at a time in the engine, over the same principals, roles
        // and contexts.
        let engine = pedm_policy::Engine::load(
            &[("org.cedar".to_string(), policies(false))],
            pedm_policy::EngineOptions::default(),
        )
        .unwrap();
        let corners = engine.context_corners(jiff::Timestamp::now());
        let mut all_roles = vec![];
        for t in a.list_targets().await.unwrap() {
            for r in a.list_roles(&t.name).await.unwrap() {
                all_roles.push((
                    pedm_policy::TargetRef::from(&t),
                    pedm_policy::RoleRef::from(&r),
                ));
            }
        }
        let samples = 200_000usize;
        let t = Instant::now();
        let mut permits = 0usize;
        for i in 0..samples {
            let (target, role) = &all_roles[i % all_roles.len()];
            let corner = &corners.points[i % corners.points.len()];
            let q = pedm_policy::RequestQuery {
                principal: pedm_policy::Principal {
                    user: format!("u{}", i % users),
                    groups: vec![format!("team{}", i % TEAMS)],
                    ..Default::default()
                },
                target: target.clone(),
                role: role.clone(),
                context: corner.ctx.clone(),
            };
            if matches!(
                engine.decide_request(&q),
                pedm_policy::RequestVerdict::Permit(_)
            ) {
                permits += 1;
            }
        }
        let per_decision_ms = t.elapsed().as_secs_f64() * 1000.0 / samples as f64;
        let check = support::quantile(&check_ms, 0.5);
        let blast_time = support::quantile(&blast_ms, 0.5);
        let c = &report.coverage;
        println!(
            "coverage: {} users in {} classes, {} roles in {} classes, {} contexts ({}); {} \
             decisions; engine {:.2} µs per decision ({permits} of {samples} permits); {} \
             blast-radius changes",
            c.users,
            c.principal_classes,
            c.roles,
            c.role_classes,
            c.contexts,
            c.varied.join("; "),
            c.decisions,
            per_decision_ms * 1000.0,
            blast.changes.len() + blast.truncated,
        );
        let n = support::count(users as i64);
        support::bench_line(
            &format!("policy_check_{n}"),
            "ms",
            check,
            Some((
                c.decisions as f64 * per_decision_ms,
                "same_decisions_in_engine",
            )),
            "<=200%",
            "lower",
            &format!(
                "3 policy properties proved over {} users, {} roles, {} contexts ({} decisions)",
                c.users, c.roles, c.contexts, c.decisions
            ),
        );
        support::bench_line(
            &format!("blast_radius_{n}"),
            "ms",
            blast_time,
            Some((
                blast.coverage.decisions as f64 * per_decision_ms,
                "same_decisions_in_engine",
            )),
            "<=200%",
            "lower",
            &format!(
                "blast radius of a draft over {} users, {} roles, {} contexts ({} decisions)",
                blast.coverage.users,
                blast.coverage.roles,
                blast.coverage.contexts,
                blast.coverage.decisions
            ),
        );
    });
    println!("load average after: {}", support::load_average());
}
