//! End-to-end API throughput: auto-approved request → active grant, durable, against the
//! limit of the same storage (a bare durable insert per request), in the same run.
//!
//! `cargo bench -p pedm --bench api`
//!
//! * `pedm`: the real `pedmd` (this build) on SQLite in a temp dir, N concurrent HTTP clients,
//!   each a different user, each call `POST /api/v1/requests` for an auto-approved role; the
//!   response arrives after the request, its grant and three audit events are durably committed.
//! * `limit`: one `INSERT` of a row the size of that work (~1.5 KB) per durable transaction on
//!   SQLite with the same pragmas (WAL, `synchronous=FULL`) and one write connection, N
//!   concurrent tasks: what this disk does with the same durability and no HTTP, no policy.

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "support/mod.rs"]
mod support;

use common::*;
use pedm_api::*;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

const RUN_SECS: u64 = 5;
const LEVELS: [usize; 3] = [1, 16, 64];

/// For profiling: `PEDM_BENCH_SECS` (seconds per row) and `PEDM_BENCH_CLIENTS` (e.g. `64`).
fn settings() -> (Duration, Vec<usize>) {
    let secs = std::env::var("PEDM_BENCH_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(RUN_SECS);
    let levels = std::env::var("PEDM_BENCH_CLIENTS")
        .ok()
        .map(|v| v.split(',').filter_map(|n| n.trim().parse().ok()).collect())
        .unwrap_or_else(|| LEVELS.to_vec());
    (Duration::from_secs(secs), levels)
}

struct Result_ {
    per_sec: f64,
    p50_ms: f64,
    p99_ms: f64,
    count: usize,
}

fn summarize(mut lat: Vec<Duration>, elapsed: Duration) -> Result_ {
    lat.sort_unstable();
    let q = |p: f64| lat[((lat.len() as f64 * p) as usize).min(lat.len() - 1)].as_secs_f64() * 1e3;
    Result_ {
        count: lat.len(),
        per_sec: lat.len() as f64 / elapsed.as_secs_f64(),
        p50_ms: q(0.50),
        p99_ms: q(0.99),
    }
}

async fn run_pedm(clients: &[Client], n: usize, run: Duration) -> Result_ {
    let body = req("web1", "docker", "1h", "deploy the new build");
    let (lat, elapsed) = support::request_load(clients, n, run, &body).await;
    summarize(lat, elapsed)
}

async fn run_limit(n: usize, run: Duration) -> Result_ {
    let dir = tempfile::tempdir().expect("tempdir");
    let opts = SqliteConnectOptions::new()
        .filename(dir.path().join("raw.db"))
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Full);
    let pool = SqlitePoolOptions::new()
        .max_connections(1)
        .connect_with(opts)
        .await
        .expect("pool");
    sqlx::query("CREATE TABLE t (id INTEGER PRIMARY KEY, body TEXT NOT NULL)")
        .execute(&pool)
        .await
        .expect("table");
    let body = "x".repeat(1500);
    let stop = Arc::new(AtomicBool::new(false));
    let start = Instant::now();
    let tasks: Vec<_> = (0..n)
        .map(|_| {
            let (pool, stop, body) = (pool.clone(), stop.clone(), body.clone());
            tokio::spawn(async move {
                let mut lat = vec![];
                while !stop.load(Ordering::Relaxed) {
                    let t = Instant::now();
                    let mut tx = pool.begin_with("BEGIN IMMEDIATE").await.expect("begin");
                    sqlx::query("INSERT INTO t (body) VALUES (?)")
                        .bind(&body)
                        .execute(&mut *tx)
                        .await
                        .expect("insert");
                    tx.commit().await.expect("commit");
                    lat.push(t.elapsed());
                }
                lat
            })
        })
        .collect();
    tokio::time::sleep(run).await;
    stop.store(true, Ordering::Relaxed);
    let mut all = vec![];
    for t in tasks {
        all.extend(t.await.expect("task"));
    }
    summarize(all, start.elapsed())
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let s = Server::start();
    standard_targets(&s).await;
    allow_parallel_auto_approved(&s.admin()).await;
    let mut clients = vec![];
    let (run, levels) = settings();
    for i in 0..*levels.iter().max().unwrap_or(&1) {
        clients.push(s.client(&user_with_token(&s, &format!("bench{i}"), false).await));
    }
    println!(
        "auto-approved request -> active grant, durable (SQLite, synchronous=FULL), {}s per row",
        run.as_secs()
    );
    println!(
        "{:>8}  {:>12} {:>9} {:>9}  {:>12} {:>9} {:>9}  {:>6}  {:>14}",
        "clients",
        "pedm req/s",
        "p50 ms",
        "p99 ms",
        "limit ops/s",
        "p50 ms",
        "p99 ms",
        "ratio",
        "pedmd CPU/req"
    );
    let pid = support::child_pid("pedmd");
    for n in levels {
        let cpu_before = pid.map(support::cpu_time);
        let p = run_pedm(&clients, n, run).await;
        let cpu = pid
            .zip(cpu_before)
            .map(|(pid, b)| (support::cpu_time(pid) - b).as_secs_f64() * 1e6 / p.count as f64);
        let l = run_limit(n, run).await;
        println!(
            "{n:>8}  {:>12.0} {:>9.2} {:>9.2}  {:>12.0} {:>9.2} {:>9.2}  {:>5.0}%  {:>11.0} µs",
            p.per_sec,
            p.p50_ms,
            p.p99_ms,
            l.per_sec,
            l.p50_ms,
            l.p99_ms,
            100.0 * p.per_sec / l.per_sec,
            cpu.unwrap_or(f64::NAN)
        );
        let figure = format!("API auto-approved request -> grant, {n} clients");
        support::bench_line(
            &format!("api_rps_{n}"),
            "req/s",
            p.per_sec,
            Some((l.per_sec, "durable_insert_per_request")),
            if n == 64 { ">=5000" } else { "-" },
            "higher",
            &format!("{figure}, req/s"),
        );
        if n == 64 {
            support::bench_line(
                "api_p99_64",
                "ms",
                p.p99_ms,
                Some((l.p99_ms, "durable_insert_per_request")),
                "<20",
                "lower",
                &format!("{figure}, p99 latency"),
            );
        }
    }
    println!("load average: {}", support::load_average());
}
