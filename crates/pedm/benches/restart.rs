//! Restart at scale: `pedmd` (this build) on SQLite with 1,000,000 active grants and 3,000,000
//! audit events: time from process start until `/healthz` answers and until the first overdue
//! grant is ended, and the peak resident memory (`VmHWM`) of `pedmd`.
//!
//! `cargo bench -p pedm --bench restart`
//!
//! Set-up (not measured), for speed in bulk SQL into the database file (after the real
//! migrations): 1M requests and their 1M active grants (expiring hours from now), and 3M audit
//! events (three per grant, as the API writes them), chained and hashed here (the audit signer
//! checks every event's seq, link and content as it folds it into its Merkle state, and
//! refuses a log that does not verify). Then `pedmd` is started once and
//! stopped (so the log has a signed checkpoint, as any server that ran has), 1,000 grants are
//! moved into the past (they came due while the server was down), and `pedmd` is started
//! again: that start is measured.

#[path = "support/mod.rs"]
mod support;

use jiff::Timestamp;
use pedm_store::SqliteStore;
use sqlx::Connection;
use std::time::{Duration, Instant};
use support::*;

const EVENTS_PER_GRANT: i64 = 3;
const OVERDUE: i64 = 1_000;

/// 1,000,000, or `PEDM_BENCH_GRANTS` for a smoke run (e.g. `cargo test --bench restart`).
fn grants() -> i64 {
    std::env::var("PEDM_BENCH_GRANTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000)
}

async fn setup(db: &std::path::Path) {
    let n_grants = grants();
    let started = Instant::now();
    // The real schema.
    SqliteStore::open(db)
        .await
        .expect("open store")
        .close()
        .await;
    let now = Timestamp::now().as_microsecond();
    let hour = 3_600_000_000i64;
    let mut c = raw(db).await;
    exec(&mut c, "PRAGMA synchronous = OFF").await;
    exec(&mut c, "BEGIN").await;
    exec(
        &mut c,
        &format!(
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {n_grants}) \
             INSERT INTO requests (id, requester, target, role, duration_secs, justification, \
             context, state, created_at, pending_until, decided_at, decided_by, \
             decision_reason, grant_id, approvals_required, version, policy) \
             SELECT printf('00000000-0000-7000-8000-%012x', i), 'user' || (i % 1000), 'web1', \
             'docker', 86400, 'deploy the new build', '{{\"source_addr\":\"10.0.0.1\"}}', \
             'approved', {created}, {created}, {created}, 'policy', 'auto-approved', \
             printf('00000001-0000-7000-8000-%012x', i), 0, 1, 'auto-docker' FROM n",
            created = now - hour
        ),
    )
    .await;
    exec(
        &mut c,
        &format!(
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {n_grants}) \
             INSERT INTO grants (id, request_id, user_name, target, role, starts_at, \
             expires_at, state) \
             SELECT printf('00000001-0000-7000-8000-%012x', i), \
             printf('00000000-0000-7000-8000-%012x', i), 'user' || (i % 1000), 'web1', \
             'docker', {created}, {first} + i * 50000, 'active' FROM n",
            created = now - hour,
            first = now + hour
        ),
    )
    .await;
    let events = n_grants * EVENTS_PER_GRANT;
    insert_chained_events(
        &mut c,
        events,
        Timestamp::from_microsecond(now - hour).expect("time"),
    )
    .await;
    exec(
        &mut c,
        "UPDATE audit_head SET seq = (SELECT MAX(seq) FROM audit_events), \
         hash = (SELECT hash FROM audit_events ORDER BY seq DESC LIMIT 1) WHERE id = 1",
    )
    .await;
    exec(&mut c, "COMMIT").await;
    exec(&mut c, "PRAGMA wal_checkpoint(TRUNCATE)").await;
    c.close().await.expect("close");
    println!(
        "set-up: {n_grants} grants, {events} events (grants in bulk SQL, events chained) in {:.1} s",
        started.elapsed().as_secs_f64()
    );
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let n_grants = grants();
    let tmp = tempfile::tempdir().expect("tempdir");
    let data_dir = tmp.path().join("data");
    std::fs::create_dir_all(&data_dir).expect("data dir");
    let db = data_dir.join("pedm.db");
    setup(&db).await;
    let url = format!("sqlite://{}", db.display());
    let size_mib = std::fs::metadata(&db).map_or(0, |m| m.len()) / (1 << 20);

    // A first start: the server that ran before (bootstrap, its audit state, a checkpoint).
    let mut c = raw(&db).await;
    let first = Pedmd::start(&data_dir, &url, &[("PEDM_LOG", "info")]);
    let first_ready = first.wait_healthy().await;
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM audit_checkpoints")
            .fetch_one(&mut c)
            .await
            .expect("checkpoints");
        if n > 0 {
            break;
        }
        assert!(Instant::now() < deadline, "no checkpoint signed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let first_signed = first.started.elapsed();
    let first_rss = first.peak_rss_mib();
    first.stop();
    println!(
        "first start: ready after {:.0} ms, audit state rebuilt and first checkpoint signed \
         after {:.0} ms, peak RSS {first_rss:.0} MiB",
        first_ready.as_secs_f64() * 1e3,
        first_signed.as_secs_f64() * 1e3
    );

    // While it is down, OVERDUE grants come due.
    let now = Timestamp::now().as_microsecond();
    exec(
        &mut c,
        &format!(
            "UPDATE grants SET expires_at = {past} + rowid WHERE rowid <= {OVERDUE}",
            past = now - 60_000_000
        ),
    )
    .await;

    let load_before = load_average();
    let spawned_at = Timestamp::now();
    let p = Pedmd::start(&data_dir, &url, &[("PEDM_LOG", "info")]);
    let listening = p.listening;
    let ready = p.wait_healthy().await;
    // Until every overdue grant has ended.
    let deadline = Instant::now() + Duration::from_secs(600);
    let first_end = loop {
        let (ended, first): (i64, Option<i64>) =
            sqlx::query_as("SELECT COUNT(*), MIN(ended_at) FROM grants WHERE state = 'expired'")
                .fetch_one(&mut c)
                .await
                .expect("poll");
        if ended >= OVERDUE {
            break first.expect("ended_at");
        }
        assert!(Instant::now() < deadline, "overdue grants never ended");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let last_end: i64 =
        sqlx::query_scalar("SELECT MAX(ended_at) FROM grants WHERE state = 'expired'")
            .fetch_one(&mut c)
            .await
            .expect("last end");
    // The audit signer rebuilds its state from every event hash in the background (it signs
    // nothing before): wait for it, so the peak memory includes it.
    let rebuilt = loop {
        if p.log().contains("audit log matches its signed checkpoints") {
            break p.started.elapsed();
        }
        assert!(
            Instant::now() < deadline,
            "the audit state was never rebuilt; log:\n{}",
            p.log()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let rss = p.peak_rss_mib();
    let rss_now = p.rss_mib();
    let load_after = load_average();
    p.stop();

    let since_spawn = |us: i64| (us - spawned_at.as_microsecond()) as f64 / 1e3;
    let ready_ms = ready.as_secs_f64() * 1e3;
    let first_end_ms = since_spawn(first_end);
    println!(
        "restart with {n_grants} active grants, {} audit events ({size_mib} MiB file): \
         listening after {:.0} ms, /healthz ready after {ready_ms:.0} ms, first overdue grant \
         ended after {first_end_ms:.0} ms, all {OVERDUE} after {:.0} ms, audit state rebuilt \
         (in the background) after {:.0} ms; pedmd peak RSS {rss:.0} MiB (now {rss_now:.0} \
         MiB); load {load_before} -> {load_after}",
        n_grants * EVENTS_PER_GRANT,
        listening.as_secs_f64() * 1e3,
        since_spawn(last_end),
        rebuilt.as_secs_f64() * 1e3,
    );
    bench_line(
        "restart_ready",
        "ms",
        ready_ms,
        Some((2000.0, "goal")),
        "<2000",
        "lower",
        "restart to /healthz ready, 1M grants",
    );
    bench_line(
        "restart_first_expiry",
        "ms",
        first_end_ms,
        None,
        "-",
        "lower",
        "restart to first overdue grant ended, 1M grants",
    );
    bench_line(
        "restart_audit_rebuilt",
        "ms",
        rebuilt.as_secs_f64() * 1e3,
        None,
        "-",
        "lower",
        "restart to audit signer rebuilt (background, 3M events)",
    );
    bench_line(
        "rss_peak_1m",
        "MiB",
        rss,
        Some((200.0, "goal")),
        "<200",
        "lower",
        "pedmd peak RSS (VmHWM), 1M grants",
    );
}
