//! Durable audit append rate against the raw limit of the same storage, in the same run.
//!
//! `cargo bench -p pedm-store --bench audit_append`
//!
//! * `store`: `Store::commit` of a changeset holding one audit event (hash-chained, head row
//!   updated), on a `SqliteStore` in a temp dir (WAL, `synchronous=FULL`).
//! * `raw`: a plain `INSERT` of a row of the same size into a table of the same shape, one
//!   durable transaction (`BEGIN IMMEDIATE` … `COMMIT`) each, same pragmas, one write connection
//!   (as the store has): what this disk can do with the same durability.
//!
//! Each is run with 1, 16 and 64 concurrent committers for a fixed time. The store commits
//! concurrent changesets together (group commit: several per transaction, one fsync); the raw
//! side is one transaction per insert, i.e. what a store without group commit could at best do.

use jiff::Timestamp;
use pedm_core::audit::NewAuditEvent;
use pedm_core::store::{Changeset, Store};
use pedm_store::SqliteStore;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

const RUN: Duration = Duration::from_secs(4);

fn event(i: u64) -> NewAuditEvent {
    NewAuditEvent::new(
        Timestamp::now(),
        "alice",
        "request.created",
        Some(format!("request:0190f5c6-7b1e-7c3a-9f00-{i:012}")),
    )
    .data(serde_json::json!({
        "target": "web1", "role": "docker", "duration_secs": 1800,
        "justification": "deploy the new build", "policy": "auto-docker"
    }))
}

/// Events per second, and changesets per transaction.
async fn run_store(concurrency: usize) -> (f64, f64) {
    let dir = tempfile::tempdir().unwrap();
    let sqlite = Arc::new(
        SqliteStore::open(&dir.path().join("pedm.db"))
            .await
            .unwrap(),
    );
    let s: Arc<dyn Store> = sqlite.clone();
    let n = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let mut tasks = vec![];
    for _ in 0..concurrency {
        let (s, n) = (s.clone(), n.clone());
        tasks.push(tokio::spawn(async move {
            while start.elapsed() < RUN {
                let i = n.fetch_add(1, Ordering::Relaxed);
                s.commit(Changeset::new().event(event(i))).await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let events = s
        .audit_head()
        .await
        .unwrap()
        .map_or(0, |(seq, _)| seq as u64);
    let stats = sqlite.group_commit_stats();
    (
        events as f64 / start.elapsed().as_secs_f64(),
        stats.changesets as f64 / stats.transactions.max(1) as f64,
    )
}

async fn run_raw(concurrency: usize) -> f64 {
    let dir = tempfile::tempdir().unwrap();
    let opts = SqliteConnectOptions::new()
        .filename(dir.path().join("raw.db"))
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Full)
        .foreign_keys(true)
        .busy_timeout(Duration::from_secs(10));
    let pool = SqlitePoolOptions::new()
        .max_connections(1)
        .connect_with(opts)
        .await
        .unwrap();
    sqlx::query(
        "CREATE TABLE audit_events (seq BIGINT PRIMARY KEY, at BIGINT NOT NULL, actor TEXT NOT NULL, \
         action TEXT NOT NULL, outcome TEXT NOT NULL, subject TEXT, data TEXT NOT NULL, \
         prev_hash BLOB NOT NULL, hash BLOB NOT NULL)",
    )
    .execute(&pool)
    .await
    .unwrap();
    let n = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let mut tasks = vec![];
    for _ in 0..concurrency {
        let (pool, n) = (pool.clone(), n.clone());
        tasks.push(tokio::spawn(async move {
            while start.elapsed() < RUN {
                let e = event(0);
                let data = serde_json::to_string(&e.data).unwrap();
                let mut tx = pool.begin_with("BEGIN IMMEDIATE").await.unwrap();
                let seq = n.fetch_add(1, Ordering::Relaxed) as i64 + 1;
                sqlx::query(
                    "INSERT INTO audit_events (seq, at, actor, action, outcome, subject, data, \
                     prev_hash, hash) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
                )
                .bind(seq)
                .bind(e.at.as_microsecond())
                .bind(&e.actor)
                .bind(&e.action)
                .bind("success")
                .bind(&e.subject)
                .bind(data)
                .bind(vec![7u8; 32])
                .bind(vec![9u8; 32])
                .execute(&mut *tx)
                .await
                .unwrap();
                tx.commit().await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let rows: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM audit_events")
        .fetch_one(&pool)
        .await
        .unwrap();
    rows as f64 / start.elapsed().as_secs_f64()
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    println!(
        "durable audit append on SQLite (WAL, synchronous=FULL), {} s per run",
        RUN.as_secs()
    );
    println!(
        "{:<12} {:>16} {:>16} {:>8}",
        "committers", "store ev/s", "raw inserts/s", "ratio"
    );
    for c in [1usize, 16, 64] {
        let raw = rt.block_on(run_raw(c));
        let (store, per_tx) = rt.block_on(run_store(c));
        println!(
            "{c:<12} {store:>16.0} {raw:>16.0} {:>7.0}%   ({per_tx:.1} changesets per transaction)",
            100.0 * store / raw,
        );
        // For scripts/bench (the format of crates/pedm/benches/support).
        println!(
            "BENCH name=audit_append_{c} unit=events/s pedm={store:.3} peer={raw:.3} \
             peer_name=raw_durable_insert goal={} better=higher \
             figure=durable audit append, {c} committers, events/s",
            if c == 1 { "-" } else { ">=50%" }
        );
    }
    println!(
        "load average: {}",
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .trim()
    );
}
