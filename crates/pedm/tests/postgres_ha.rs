//! pedmd on a real PostgreSQL HA stack: Patroni with etcd, one primary and one synchronous
//! standby (started by `scripts/ha-postgres` on loopback ports), two pedmd instances given
//! both hosts in one `database_url`. Under load from 16 clients the primary's machine dies
//! (Patroni and postgres killed with SIGKILL); Patroni promotes the standby; pedmd follows it
//! without a restart. Every request acknowledged before or after is in the database, every
//! grant expires exactly once, the audit chain verifies and checkpoints go on.

mod common;

use common::load::{Load, assert_chain_verifies, assert_stored_and_expired_once, two_instances};
use common::*;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

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
    let (a, b, clients) = two_instances(
        Options {
            database_url: Some(url.clone()),
            config: Some(with_kek(&kek)),
            ..Default::default()
        },
        Options {
            database_url: Some(url),
            config: Some(with_kek(&kek)),
            ..Default::default()
        },
    )
    .await;
    let before = a
        .admin()
        .sign_audit_checkpoint()
        .await
        .expect("checkpoint before");

    // 16 clients request short grants (they expire during and after the failover); the only
    // error allowed is 503 while there is no primary: never a wrong answer.
    let mut load = Load::start(clients, "3s", |_, e| e.status() == Some(503));
    load.wait_acked(100, Duration::from_secs(60), "before the failover")
        .await;
    let killed = cluster.kill_primary().await;
    assert_eq!(killed, first_leader);
    let killed_at = Instant::now();
    let acked_at_kill = load.acked();
    let new_leader = cluster.wait_leader_not(&killed).await;
    println!(
        "Patroni promoted (name, seconds after the kill): {}",
        new_leader.trim()
    );
    assert_ne!(new_leader.split_whitespace().next(), Some(killed.as_str()));
    // Service resumes: 200 more acknowledgements after the failover.
    load.wait_acked(
        acked_at_kill + 200,
        Duration::from_secs(60),
        "after the failover",
    )
    .await;
    let resumed_after = killed_at.elapsed();
    let seen = load.finish().await;
    println!(
        "acknowledged {} requests ({} before the kill), {} answered 503; longest gap between \
         acknowledgements {:?}; 200 more acknowledged {:?} after the kill",
        seen.acked.len(),
        acked_at_kill,
        seen.refused,
        seen.longest_gap,
        resumed_after
    );
    let (admin_a, admin_b) = (a.admin(), b.admin());
    assert_stored_and_expired_once(&[admin_a.clone(), admin_b.clone()], &seen).await;

    // One chain, unbroken across the failover, and checkpoints go on from before it.
    let events = assert_chain_verifies(&admin_b).await;
    let after = admin_b
        .sign_audit_checkpoint()
        .await
        .expect("checkpoint after the failover");
    assert!(
        after.size > before.size && after.size as usize == events,
        "checkpoint after: {} events, before: {}, log: {events}",
        after.size,
        before.size
    );
    // Signed by one instance before and the other after, verified with the one key.
    let key = a.anonymous().audit_pubkey().await.expect("key").public_key;
    let o = a.cli(&a.admin_token, &["audit", "verify", "--pubkey", &key]);
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
}
