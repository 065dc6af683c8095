//! pedmd on a real PostgreSQL HA stack: Patroni with etcd, one primary and one synchronous
//! standby (started by `scripts/ha-postgres` on loopback ports), two pedmd instances given
//! both hosts in one `database_url`. Under load from 16 clients the primary's machine dies
//! (Patroni and postgres killed with SIGKILL); Patroni promotes the standby; pedmd follows it
//! without a restart. Every request acknowledged before or after is in the database, every
//! grant expires exactly once, the audit chain verifies and checkpoints go on.

mod common;

use common::*;
use jiff::Timestamp;
use pedm_api::*;
use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use uuid::Uuid;

/// A Patroni cluster for one test; stopped when dropped.
struct HaCluster {
    dir: PathBuf,
    info: serde_json::Value,
    _tmp: tempfile::TempDir,
}

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/ha-postgres")
}

impl HaCluster {
    /// `None` (with the reason printed) where Patroni or etcd is not installed.
    async fn start_or_skip() -> Option<HaCluster> {
        for bin in ["/usr/bin/patroni", "/usr/bin/etcd"] {
            if !Path::new(bin).exists() {
                eprintln!(
                    "skipped: {bin} is not installed (scripts/install-test-deps installs it)"
                );
                return None;
            }
        }
        let tmp = tempfile::Builder::new()
            .prefix("pedm-ha-")
            .tempdir()
            .expect("tempdir");
        // PostgreSQL runs as the postgres user when we are root: it must reach the directory.
        std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755))
            .expect("chmod");
        let dir = tmp.path().join("cluster");
        let pid = std::process::id().to_string();
        let out = run_script(&["start", path_str(&dir), "--parent-pid", &pid]).await;
        let info: serde_json::Value = serde_json::from_str(&out).expect("cluster.json");
        Some(HaCluster {
            dir,
            info,
            _tmp: tmp,
        })
    }

    fn url(&self) -> String {
        self.info["url"].as_str().expect("url").to_string()
    }

    async fn leader(&self) -> String {
        run_script(&["leader", path_str(&self.dir)])
            .await
            .trim()
            .to_string()
    }

    /// Kills the primary's machine (Patroni and postgres, SIGKILL); returns its node name.
    async fn kill_primary(&self) -> String {
        run_script(&["kill-primary", path_str(&self.dir)])
            .await
            .trim()
            .to_string()
    }

    /// Waits until another node than `old` is the writable leader; its name and the seconds
    /// Patroni took (`pg1 4.7`).
    async fn wait_leader_not(&self, old: &str) -> String {
        run_script(&[
            "wait-leader",
            path_str(&self.dir),
            "--not",
            old,
            "--timeout",
            "90",
        ])
        .await
    }
}

impl Drop for HaCluster {
    fn drop(&mut self) {
        let _ = Command::new(script())
            .args(["stop", path_str(&self.dir)])
            .status();
    }
}

fn path_str(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

async fn run_script(args: &[&str]) -> String {
    let out = tokio::process::Command::new(script())
        .args(args)
        .output()
        .await
        .expect("running scripts/ha-postgres");
    assert!(
        out.status.success(),
        "scripts/ha-postgres {args:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8")
}

/// What the load saw: acknowledged requests (request, grant, grant's end) and refusals.
#[derive(Default)]
struct Seen {
    acked: Vec<(Uuid, Uuid, Timestamp)>,
    unavailable: usize,
    /// The longest time between two acknowledgements (the outage as clients saw it).
    longest_gap: Duration,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_primary_failover_under_load_loses_no_acknowledged_request_and_expires_each_grant_once() {
    let Some(cluster) = HaCluster::start_or_skip().await else {
        return;
    };
    let url = cluster.url();
    let first_leader = cluster.leader().await;
    // Both instances sign with one key, sealed in the database under this KEK.
    let keys = tempfile::tempdir().expect("tempdir");
    let kek = kek_file(keys.path(), "kek");
    let a = Server::start_with(Options {
        database_url: Some(url.clone()),
        config: Some(with_kek(&kek)),
        ..Default::default()
    });
    standard_targets(&a).await;
    allow_parallel_auto_approved(&a.admin()).await;
    // Started after the policy change, so both decide with it from the first request.
    let b = Server::start_with(Options {
        database_url: Some(url),
        admin_token: Some(a.admin_token.clone()),
        config: Some(with_kek(&kek)),
        ..Default::default()
    });
    let mut clients = vec![];
    for i in 0..16 {
        let token = user_with_token(&a, &format!("user{i}"), false).await;
        clients.push(if i % 2 == 0 {
            a.client(&token)
        } else {
            b.client(&token)
        });
    }
    let before = a
        .admin()
        .sign_audit_checkpoint()
        .await
        .expect("checkpoint before");

    // 16 clients request short grants (they expire during and after the failover) until told.
    let stop = Arc::new(AtomicBool::new(false));
    let (acks, mut acks_rx) = tokio::sync::watch::channel(0usize);
    let acks = Arc::new(acks);
    let seen = Arc::new(std::sync::Mutex::new(Seen::default()));
    let last_ack = Arc::new(std::sync::Mutex::new(Instant::now()));
    let tasks: Vec<_> = clients
        .into_iter()
        .enumerate()
        .map(|(i, c)| {
            let (stop, acks, seen, last_ack) =
                (stop.clone(), acks.clone(), seen.clone(), last_ack.clone());
            tokio::spawn(async move {
                let mut n = 0;
                while !stop.load(Ordering::Relaxed) {
                    n += 1;
                    let why = format!("client {i} request {n}");
                    match c.create_request(&req("web1", "docker", "3s", &why)).await {
                        Ok(r) => {
                            let g = r.grant.expect("auto-approved: a grant");
                            let now = Instant::now();
                            let gap = now - std::mem::replace(&mut *last_ack.lock().unwrap(), now);
                            let mut s = seen.lock().unwrap();
                            s.longest_gap = s.longest_gap.max(gap);
                            s.acked.push((r.request.id, g.id, g.expires_at));
                            drop(s);
                            acks.send_modify(|n| *n += 1);
                        }
                        // Never a wrong answer: only "unavailable, try again" while there is
                        // no primary.
                        Err(e) => {
                            assert_eq!(e.status(), Some(503), "client {i}: {e}");
                            seen.lock().unwrap().unavailable += 1;
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                    }
                }
            })
        })
        .collect();

    acks_rx.wait_for(|n| *n >= 100).await.expect("load runs");
    let killed = cluster.kill_primary().await;
    assert_eq!(killed, first_leader);
    let killed_at = Instant::now();
    let acked_at_kill = *acks_rx.borrow();
    let new_leader = cluster.wait_leader_not(&killed).await;
    println!(
        "Patroni promoted (name, seconds after the kill): {}",
        new_leader.trim()
    );
    assert_ne!(new_leader.split_whitespace().next(), Some(killed.as_str()));
    // Service resumes: 100 more acknowledgements after the failover.
    tokio::time::timeout(
        Duration::from_secs(60),
        acks_rx.wait_for(|n| *n >= acked_at_kill + 200),
    )
    .await
    .expect("requests are acknowledged again after the failover")
    .expect("load runs");
    let resumed_after = killed_at.elapsed();
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.expect("client task");
    }
    let seen = std::mem::take(&mut *seen.lock().unwrap());
    println!(
        "acknowledged {} requests ({} before the kill), {} answered 503; longest gap between \
         acknowledgements {:?}; 200 more acknowledged {:?} after the kill",
        seen.acked.len(),
        acked_at_kill,
        seen.unavailable,
        seen.longest_gap,
        resumed_after
    );

    // Every acknowledged request and its grant are in the database (read through both).
    let admin_a = a.admin();
    let admin_b = b.admin();
    for (i, (request, grant, _)) in seen.acked.iter().enumerate() {
        let admin = if i % 2 == 0 { &admin_a } else { &admin_b };
        admin
            .get_request(*request)
            .await
            .expect("acknowledged request stored");
        let g = admin.get_grant(*grant).await.expect("its grant stored");
        assert_eq!(g.request_id, *request);
    }

    // Every grant in the database (acknowledged or not) ends exactly once.
    let last_end = seen.acked.iter().map(|x| x.2).max().expect("acked");
    sleep_past(last_end).await;
    let grants = eventually(Duration::from_secs(60), "every grant expired", || async {
        let all = admin_a
            .list_grants(&GrantQuery::default())
            .await
            .expect("grants");
        all.iter()
            .all(|g| g.state == GrantState::Expired)
            .then_some(all)
    })
    .await;
    assert!(grants.len() >= seen.acked.len());
    let expired = eventually(
        Duration::from_secs(30),
        "an expiry event per grant",
        || async {
            let events = admin_a
                .audit_events(&AuditQuery {
                    action: Some("grant.expired".into()),
                    ..Default::default()
                })
                .await
                .expect("events");
            (events.len() >= grants.len()).then_some(events)
        },
    )
    .await;
    let mut per_grant: BTreeMap<String, usize> = BTreeMap::new();
    for e in &expired {
        *per_grant
            .entry(e.subject.clone().unwrap_or_default())
            .or_default() += 1;
    }
    for g in &grants {
        assert_eq!(
            per_grant.get(&format!("grant:{}", g.id)),
            Some(&1),
            "grant {} expired exactly once",
            g.id
        );
    }
    assert_eq!(
        per_grant.len(),
        grants.len(),
        "no expiry of an unknown grant"
    );

    // One chain, unbroken across the failover, and checkpoints go on from before it.
    let events = admin_b
        .audit_events(&AuditQuery::default())
        .await
        .expect("events");
    pedm_core::audit::verify_chain(pedm_core::audit::GENESIS_HASH, 1, &events)
        .expect("the audit chain verifies");
    let after = admin_b
        .sign_audit_checkpoint()
        .await
        .expect("checkpoint after the failover");
    assert!(
        after.size > before.size && after.size as usize == events.len(),
        "checkpoint after: {} events, before: {}, log: {}",
        after.size,
        before.size,
        events.len()
    );
    // Signed by one instance before and the other after, verified with the one key.
    let key = a.anonymous().audit_pubkey().await.expect("key").public_key;
    let o = a.cli(&a.admin_token, &["audit", "verify", "--pubkey", &key]);
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
}
