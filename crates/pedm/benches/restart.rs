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
//! again: that start is measured. Once its audit signer has rebuilt its Merkle tree, 500
//! inclusion proofs of events all over the log are asked over HTTP, one at a time, and each is
//! verified against the signed root.
//!
//! `PEDM_BENCH_GRANTS=10000000` runs the 10M grants and 30M events (goals: ready < 1 s,
//! peak RSS < 500 MB, inclusion proof < 1 ms); `scripts/bench restart10m` runs it.

#[path = "support/mod.rs"]
mod support;

use jiff::Timestamp;
use pedm_store::SqliteStore;
use sqlx::Connection;
use std::time::{Duration, Instant};
use support::*;

const EVENTS_PER_GRANT: i64 = 3;
const OVERDUE: i64 = 1_000;

/// 1,000,000, or `PEDM_BENCH_GRANTS` (10M for the large run, a few thousand for a smoke run:
/// `cargo test --bench restart`).
fn grants() -> i64 {
    setting("PEDM_BENCH_GRANTS", 1_000_000) as i64
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
    insert_active_grants(&mut c, n_grants, now - hour, now + hour, 50_000).await;
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

struct Proofs {
    p50: f64,
    p99: f64,
    /// The same client's `GET /whoami` (authenticated, no audit work), interleaved: the floor
    /// of one API round trip on this machine.
    floor_p50: f64,
    floor_p99: f64,
}

/// Inclusion proofs of `PROOFS` events spread over the whole log, asked one at a time over
/// HTTP against a checkpoint of the whole log; each is checked against the signed root. Each
/// is followed by a `GET /whoami` of the same client, the round trip's floor.
async fn inclusion_proofs(p: &Pedmd, data_dir: &std::path::Path) -> Proofs {
    const PROOFS: usize = 500;
    let token = std::fs::read_to_string(data_dir.join("admin.token")).expect("admin token");
    let admin = pedm_api::Client::new(&p.url, Some(token.trim().to_string())).expect("client");
    let cp = admin.sign_audit_checkpoint().await.expect("checkpoint");
    let h = |x: &str| -> [u8; 32] { hex::decode(x).expect("hex").try_into().expect("32 bytes") };
    let root = h(&cp.root);
    let mut lat = Vec::with_capacity(PROOFS);
    let mut floor = Vec::with_capacity(PROOFS);
    // A fixed stride coprime to the size visits events all over the log.
    let stride = 7_919_993u64;
    for i in 0..PROOFS as u64 {
        let seq = (i * stride) % cp.size + 1;
        let t = Instant::now();
        let proof = admin
            .inclusion_proof(&pedm_api::InclusionQuery {
                seq: seq as i64,
                size: Some(cp.size),
            })
            .await
            .expect("inclusion proof");
        lat.push(t.elapsed().as_secs_f64() * 1e3);
        let path: Vec<[u8; 32]> = proof.proof.iter().map(|x| h(x)).collect();
        pedm_audit::verify_inclusion(&h(&proof.leaf), seq - 1, cp.size, &path, &root)
            .expect("the proof verifies against the signed root");
        let t = Instant::now();
        admin.whoami().await.expect("whoami");
        floor.push(t.elapsed().as_secs_f64() * 1e3);
    }
    lat.sort_by(f64::total_cmp);
    floor.sort_by(f64::total_cmp);
    let r = Proofs {
        p50: quantile(&lat, 0.5),
        p99: quantile(&lat, 0.99),
        floor_p50: quantile(&floor, 0.5),
        floor_p99: quantile(&floor, 0.99),
    };
    println!(
        "inclusion proofs at {} events: {PROOFS} one at a time over HTTP, p50 {:.3} ms, p99 \
         {:.3} ms, max {:.3} ms (each verified against the signed root); GET /whoami between \
         them p50 {:.3} ms, p99 {:.3} ms",
        cp.size,
        r.p50,
        r.p99,
        lat.last().copied().unwrap_or(0.0),
        r.floor_p50,
        r.floor_p99
    );
    r
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
    let proofs = inclusion_proofs(&p, &data_dir).await;
    let load_after = load_average();
    p.stop();

    // The goals at 10M grants; the earlier ones at 1M. Bench names carry the scale
    // when it is not the default.
    let scale = count(n_grants);
    let (ready_goal, rss_goal) = if n_grants >= 10_000_000 {
        (1000.0, 500.0)
    } else {
        (2000.0, 200.0)
    };
    let name = |base: &str| match n_grants {
        1_000_000 => base.to_string(),
        n => format!("{base}_{}", count(n).to_lowercase()),
    };
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
        &name("restart_ready"),
        "ms",
        ready_ms,
        Some((ready_goal, "goal")),
        &format!("<{ready_goal}"),
        "lower",
        &format!("restart to /healthz ready, {scale} grants"),
    );
    bench_line(
        &name("restart_first_expiry"),
        "ms",
        first_end_ms,
        None,
        "-",
        "lower",
        &format!("restart to first overdue grant ended, {scale} grants"),
    );
    bench_line(
        &name("restart_audit_rebuilt"),
        "ms",
        rebuilt.as_secs_f64() * 1e3,
        None,
        "-",
        "lower",
        &format!(
            "restart to audit signer rebuilt (background, {} events)",
            count(n_grants * EVENTS_PER_GRANT)
        ),
    );
    bench_line(
        &name("audit_inclusion_proof"),
        "ms",
        proofs.p99,
        Some((1.0, "goal")),
        "<1",
        "lower",
        &format!(
            "inclusion proof p99 over HTTP at {} events (p50 {:.3} ms)",
            count(n_grants * EVENTS_PER_GRANT),
            proofs.p50
        ),
    );
    bench_line(
        &name("audit_inclusion_proof_vs_whoami"),
        "ms",
        proofs.p99,
        Some((proofs.floor_p99, "GET_/whoami")),
        "-",
        "lower",
        &format!(
            "inclusion proof p99 at {} events vs an authenticated GET /whoami p99 (p50 {:.3} \
             vs {:.3} ms)",
            count(n_grants * EVENTS_PER_GRANT),
            proofs.p50,
            proofs.floor_p50
        ),
    );
    bench_line(
        &name("rss_peak"),
        "MiB",
        rss,
        Some((rss_goal, "goal")),
        &format!("<{rss_goal}"),
        "lower",
        &format!("pedmd peak RSS (VmHWM), {scale} grants"),
    );
}
