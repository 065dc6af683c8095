//! What the scale benchmarks share: running the real `pedmd` of this build on a prepared
//! database, its memory, percentiles, and the machine-readable result lines `scripts/bench`
//! collects.

#![allow(dead_code)]

// Benches that also include `tests/common` load this file twice; it holds one function.
#[allow(clippy::duplicate_mod)]
#[path = "../../tests/common/spawn.rs"]
mod spawn;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A whole-number setting from the environment (`PEDM_BENCH_*`), or `default` when unset,
/// unparsable or 0.
pub fn setting(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|&n| n > 0)
        .unwrap_or(default)
}

/// 1M, 10M, 60k: a count as the benches name it.
pub fn count(n: i64) -> String {
    if n % 1_000_000 == 0 {
        format!("{}M", n / 1_000_000)
    } else if n % 1_000 == 0 {
        format!("{}k", n / 1_000)
    } else {
        n.to_string()
    }
}

/// Runs a benchmark's async body on a two-worker runtime (the machine's cores).
pub fn block_on<F: std::future::Future>(body: F) -> F::Output {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
        .block_on(body)
}

/// One result line for `scripts/bench`, `key=value` words (`figure`, the row's label, last: it
/// takes the rest of the line):
/// `BENCH name=<id> unit=<unit> pedm=<value> peer=<value or -> peer_name=<what the peer is>
/// goal=<op><value or -> better=<lower|higher> figure=<label>` where `op` is one of `<`, `<=`,
/// `>`, `>=`. The same words as the other benches print (`exec`).
pub fn bench_line(
    name: &str,
    unit: &str,
    pedm: f64,
    peer: Option<(f64, &str)>,
    goal: &str,
    better: &str,
    figure: &str,
) {
    let (peer, peer_name) = peer.map_or(("-".to_string(), "-"), |(v, n)| (format!("{v:.3}"), n));
    println!(
        "BENCH name={name} unit={unit} pedm={pedm:.3} peer={peer} peer_name={peer_name} \
         goal={goal} better={better} figure={figure}"
    );
}

/// `n` of `clients` each making `body`'s request (auto-approved: each answer must carry a
/// grant) as fast as answered, for `run`: every latency, and the time taken.
pub async fn request_load(
    clients: &[pedm_api::Client],
    n: usize,
    run: Duration,
    body: &pedm_api::CreateRequest,
) -> (Vec<Duration>, Duration) {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    let stop = Arc::new(AtomicBool::new(false));
    let start = Instant::now();
    let tasks: Vec<_> = clients[..n]
        .iter()
        .cloned()
        .map(|c| {
            let (stop, body) = (stop.clone(), body.clone());
            tokio::spawn(async move {
                let mut lat = vec![];
                while !stop.load(Ordering::Relaxed) {
                    let t = Instant::now();
                    let r = c.create_request(&body).await.expect("request");
                    assert!(r.grant.is_some(), "auto-approved");
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
    (all, start.elapsed())
}

/// The value at quantile `q` (0..=1) of sorted `v`.
pub fn quantile(v: &[f64], q: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v[((v.len() as f64 * q) as usize).min(v.len() - 1)]
}

/// A running `pedmd` on a given data directory and database.
pub struct Pedmd {
    pub child: Child,
    pub url: String,
    pub started: Instant,
    /// When the "listening" line was printed.
    pub listening: Duration,
    log: PathBuf,
}

impl Pedmd {
    /// Starts `pedmd` (this build) on `data_dir` with the database `database_url`, waits for its
    /// "listening" line.
    pub fn start(data_dir: &Path, database_url: &str, env: &[(&str, &str)]) -> Pedmd {
        let log = data_dir.with_extension("log");
        let log_file = std::fs::File::create(&log).expect("log file");
        let started = Instant::now();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_pedmd"));
        cmd.arg("--listen")
            .arg("127.0.0.1:0")
            .arg("--data-dir")
            .arg(data_dir)
            .arg("--database-url")
            .arg(database_url)
            .env_remove("PEDM_URL")
            .env_remove("PEDM_TOKEN")
            .env("PEDM_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log_file));
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn pedmd");
        let Some(url) = spawn::wait_listening(&mut child, Duration::from_secs(300)) else {
            panic!(
                "pedmd did not start; log:\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        };
        Pedmd {
            child,
            url,
            listening: started.elapsed(),
            started,
            log,
        }
    }

    /// Polls `/healthz` until it answers 200; returns the time since the process started.
    pub async fn wait_healthy(&self) -> Duration {
        let http = reqwest::Client::new();
        let url = format!("{}/healthz", self.url);
        loop {
            if let Ok(r) = http.get(&url).send().await
                && r.status().is_success()
            {
                return self.started.elapsed();
            }
            assert!(
                self.started.elapsed() < Duration::from_secs(600),
                "pedmd never became healthy"
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    /// `VmHWM` (peak resident set) of the process, in MiB.
    pub fn peak_rss_mib(&self) -> f64 {
        status_kib(self.child.id(), "VmHWM:") as f64 / 1024.0
    }

    /// `VmRSS` (current resident set) of the process, in MiB.
    pub fn rss_mib(&self) -> f64 {
        status_kib(self.child.id(), "VmRSS:") as f64 / 1024.0
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGTERM and wait (SIGKILL after 20 s).
    pub fn stop(mut self) {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Pedmd {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn status_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// Load average over the last minute, for the record next to timings.
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

/// The pid of this process's child named `comm` (e.g. the `pedmd` a test harness started).
pub fn child_pid(comm: &str) -> Option<u32> {
    let me = std::process::id();
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
        let pid: u32 = e.file_name().to_str()?.parse().ok()?;
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // pid (comm) state ppid ...
        let (name, rest) = stat.split_once(" (")?.1.rsplit_once(") ")?;
        let ppid: u32 = rest.split_whitespace().nth(1)?.parse().ok()?;
        (name == comm && ppid == me).then_some(pid)
    })
}

/// CPU time (user + system) the process `pid` has used so far.
pub fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit_once(") ")
        .map_or(vec![], |(_, r)| r.split_whitespace().collect());
    // After the comm: state is field 0, utime field 11, stime field 12 (clock ticks).
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    let hz = 100; // sysconf(_SC_CLK_TCK) on Linux
    Duration::from_millis((ticks(11) + ticks(12)) * 1000 / hz)
}

// ------------------------------------------------------------ bulk set-up in SQL

use jiff::Timestamp;
use sqlx::Connection;
use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection};

/// Rows per multi-row INSERT of audit events (9 parameters each, below SQLite's limit).
const EVENT_BATCH: i64 = 1_000;

/// The audit events the API would have written for the grants, chained from seq 1.
pub async fn insert_chained_events(c: &mut SqliteConnection, events: i64, at: Timestamp) {
    let mut prev = pedm_core::audit::GENESIS_HASH;
    let mut seq = 1i64;
    while seq <= events {
        let to = (seq + EVENT_BATCH - 1).min(events);
        let mut sql = String::from(
            "INSERT INTO audit_events (seq, at, actor, action, outcome, subject, data, \
             prev_hash, hash) VALUES ",
        );
        let mut rows = Vec::with_capacity((to - seq + 1) as usize);
        for i in seq..=to {
            let action = match i % 3 {
                1 => "request.created",
                2 => "request.approved",
                _ => "grant.started",
            };
            let e = pedm_core::audit::NewAuditEvent::new(
                at,
                &format!("user{}", (i / 3) % 1000),
                action,
                Some(format!(
                    "request:00000000-0000-7000-8000-{:012x}",
                    (i + 2) / 3
                )),
            )
            .data(serde_json::json!({"target": "web1", "role": "docker"}));
            let e = pedm_core::audit::chain(i, prev, e);
            prev = e.hash;
            if i > seq {
                sql.push(',');
            }
            sql.push_str("(?, ?, ?, ?, 'success', ?, ?, ?, ?)");
            rows.push(e);
        }
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
        for e in &rows {
            q = q
                .bind(e.seq)
                .bind(e.at.as_microsecond())
                .bind(e.actor.clone())
                .bind(e.action.clone())
                .bind(e.subject.clone())
                .bind(e.data.to_string())
                .bind(e.prev_hash.to_vec())
                .bind(e.hash.to_vec());
        }
        q.execute(&mut *c).await.expect("insert audit events");
        seq = to + 1;
    }
}

/// `n` approved requests and their active grants in bulk SQL (one `INSERT … SELECT` each),
/// created at `created` (µs), the i-th grant expiring at `first_expiry + i * spacing` (µs).
/// Ids are `00000000-…-{i}` (requests) and `00000001-…-{i}` (grants).
pub async fn insert_active_grants(
    c: &mut SqliteConnection,
    n: i64,
    created: i64,
    first_expiry: i64,
    spacing: i64,
) {
    let rows =
        format!("WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {n})");
    exec(
        c,
        &format!(
            "{rows} INSERT INTO requests (id, requester, target, role, duration_secs, \
             justification, context, state, created_at, pending_until, decided_at, decided_by, \
             decision_reason, grant_id, approvals_required, version, policy) \
             SELECT printf('00000000-0000-7000-8000-%012x', i), 'user' || (i % 1000), 'web1', \
             'docker', 86400, 'deploy the new build', '{{\"source_addr\":\"10.0.0.1\"}}', \
             'approved', {created}, {created}, {created}, 'policy', 'auto-approved', \
             printf('00000001-0000-7000-8000-%012x', i), 0, 1, 'auto-docker' FROM n"
        ),
    )
    .await;
    exec(
        c,
        &format!(
            "{rows} INSERT INTO grants (id, request_id, user_name, target, role, starts_at, \
             expires_at, state) \
             SELECT printf('00000001-0000-7000-8000-%012x', i), \
             printf('00000000-0000-7000-8000-%012x', i), 'user' || (i % 1000), 'web1', \
             'docker', {created}, {first_expiry} + i * {spacing}, 'active' FROM n"
        ),
    )
    .await;
}

pub async fn raw(db: &std::path::Path) -> SqliteConnection {
    SqliteConnection::connect_with(
        &SqliteConnectOptions::new()
            .filename(db)
            .busy_timeout(Duration::from_secs(30)),
    )
    .await
    .expect("raw connection")
}

pub async fn exec(c: &mut SqliteConnection, sql: &str) {
    sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
        .execute(&mut *c)
        .await
        .unwrap_or_else(|e| panic!("{e}: {sql}"));
}
