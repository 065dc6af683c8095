//! PostgreSQL at full speed: auto-approved request → active grant through the API against one
//! PostgreSQL, with one and with three `pedmd` instances sharing it, next to `pgbench`'s limit
//! for the same database in the same run (one durable `INSERT` of a ~1.5 KB row per
//! transaction, the same client counts).
//!
//! `cargo bench -p pedm --bench postgres` (`scripts/bench postgres`). PostgreSQL runs as
//! production does: fsync and full-page writes on, `synchronous_commit = on`. Needs PostgreSQL's
//! server binaries and `pgbench` (Debian `postgresql`, `postgresql-contrib`); says SKIP
//! otherwise. `PEDM_BENCH_SECS` (seconds per row, default 5), `PEDM_BENCH_CLIENTS` (`1,16,64`).

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "support/mod.rs"]
mod support;

use common::*;
use pedm_store::testing::TestPostgres;
use std::process::Command;
use std::time::Duration;

struct Row {
    per_sec: f64,
    p50_ms: f64,
    p99_ms: f64,
}

fn summarize(mut lat_ms: Vec<f64>, elapsed: Duration) -> Row {
    lat_ms.sort_by(f64::total_cmp);
    Row {
        per_sec: lat_ms.len() as f64 / elapsed.as_secs_f64(),
        p50_ms: support::quantile(&lat_ms, 0.50),
        p99_ms: support::quantile(&lat_ms, 0.99),
    }
}

/// `n` clients (spread over the instances as `clients` are), each making auto-approved
/// requests.
async fn run_pedm(clients: &[pedm_api::Client], n: usize, run: Duration) -> Row {
    let body = req("web1", "docker", "1h", "deploy the new build");
    let (lat, elapsed) = support::request_load(clients, n, run, &body).await;
    summarize(lat.iter().map(|d| d.as_secs_f64() * 1e3).collect(), elapsed)
}

/// pgbench with one durable INSERT per transaction, `n` clients, per-transaction latencies
/// from its log.
fn run_pgbench(pg: &TestPostgres, db: &str, n: usize, run: Duration) -> Row {
    let dir = tempfile::tempdir().expect("tempdir");
    let script = dir.path().join("insert.sql");
    std::fs::write(
        &script,
        "INSERT INTO t (body) VALUES (repeat('x', 1500));\n",
    )
    .expect("script");
    let prefix = dir.path().join("pgb");
    let out = Command::new("pgbench")
        .args(["-n", "-M", "prepared", "-h", "127.0.0.1", "-U", "postgres"])
        .args(["-p", &pg.port().to_string()])
        .args(["-c", &n.to_string(), "-j", &n.min(2).to_string()])
        .args(["-T", &run.as_secs().to_string(), "-l", "--log-prefix"])
        .arg(&prefix)
        .arg("-f")
        .arg(&script)
        .arg(db)
        .current_dir(dir.path())
        .output()
        .expect("running pgbench");
    assert!(
        out.status.success(),
        "pgbench: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Each log line: client, transaction, latency (µs), script, epoch s, µs.
    let mut lat = vec![];
    for f in std::fs::read_dir(dir.path()).expect("logs").flatten() {
        if !f.file_name().to_string_lossy().starts_with("pgb") {
            continue;
        }
        for line in std::fs::read_to_string(f.path())
            .unwrap_or_default()
            .lines()
        {
            if let Some(us) = line.split(' ').nth(2).and_then(|v| v.parse::<f64>().ok()) {
                lat.push(us / 1e3);
            }
        }
    }
    summarize(lat, run)
}

fn main() {
    let pg = match TestPostgres::start_durable() {
        Ok(pg) => pg,
        Err(e) => {
            println!("SKIP: {e}");
            return;
        }
    };
    if Command::new("pgbench").arg("--version").output().is_err() {
        println!("SKIP: pgbench is not installed (Debian postgresql-contrib)");
        return;
    }
    let run = Duration::from_secs(support::setting("PEDM_BENCH_SECS", 5));
    let levels: Vec<usize> = std::env::var("PEDM_BENCH_CLIENTS")
        .ok()
        .map(|v| v.split(',').filter_map(|n| n.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![1, 16, 64]);
    let url = pg.fresh_database("pedm_bench").expect("database");
    let limit_db = "pgbench_limit";
    pg.create_database(limit_db).expect("database");
    support::block_on(async {
        let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&pg.url_for(limit_db))
            .await
            .expect("connect");
        sqlx::raw_sql("CREATE TABLE t (id bigserial PRIMARY KEY, body text NOT NULL)")
            .execute(&mut conn)
            .await
            .expect("table");

        let first = Server::start_with(Options {
            database_url: Some(url.clone()),
            ..Default::default()
        });
        let others: Vec<Server> = (0..2)
            .map(|_| {
                Server::start_with(Options {
                    database_url: Some(url.clone()),
                    admin_token: Some(first.admin_token.clone()),
                    ..Default::default()
                })
            })
            .collect();
        standard_targets(&first).await;
        allow_parallel_auto_approved(&first.admin()).await;
        let most = levels.iter().copied().max().unwrap_or(1);
        let mut tokens = vec![];
        for i in 0..most {
            tokens.push(user_with_token(&first, &format!("bench{i}"), false).await);
        }
        let servers: Vec<&Server> = std::iter::once(&first).chain(others.iter()).collect();
        let one: Vec<_> = tokens.iter().map(|t| first.client(t)).collect();
        let three: Vec<_> = tokens
            .iter()
            .enumerate()
            .map(|(i, t)| servers[i % 3].client(t))
            .collect();

        println!(
            "auto-approved request -> active grant on PostgreSQL (fsync on, synchronous_commit \
             on), {}s per row; limit: pgbench, one durable INSERT per transaction",
            run.as_secs()
        );
        println!(
            "{:>8}  {:>10} {:>8} {:>8}  {:>10} {:>8} {:>8}  {:>10} {:>8} {:>8}  {:>7} {:>7}",
            "clients",
            "1× req/s",
            "p50 ms",
            "p99 ms",
            "3× req/s",
            "p50 ms",
            "p99 ms",
            "pgbench/s",
            "p50 ms",
            "p99 ms",
            "1×",
            "3×"
        );
        for n in levels {
            let a = run_pedm(&one, n, run).await;
            let b = run_pedm(&three, n, run).await;
            let l = run_pgbench(&pg, limit_db, n, run);
            println!(
                "{n:>8}  {:>10.0} {:>8.2} {:>8.2}  {:>10.0} {:>8.2} {:>8.2}  {:>10.0} {:>8.2} {:>8.2}  {:>6.0}% {:>6.0}%",
                a.per_sec,
                a.p50_ms,
                a.p99_ms,
                b.per_sec,
                b.p50_ms,
                b.p99_ms,
                l.per_sec,
                l.p50_ms,
                l.p99_ms,
                100.0 * a.per_sec / l.per_sec,
                100.0 * b.per_sec / l.per_sec,
            );
            for (inst, r) in [(1, &a), (3, &b)] {
                let figure = format!(
                    "PostgreSQL: request -> grant, {n} clients, {inst} pedmd instance{}",
                    if inst > 1 { "s" } else { "" }
                );
                support::bench_line(
                    &format!("pg_rps_{n}_{inst}"),
                    "req/s",
                    r.per_sec,
                    Some((l.per_sec, "pgbench_insert")),
                    if n == 64 { ">=50%" } else { "-" },
                    "higher",
                    &format!("{figure}, req/s"),
                );
                if n == 64 {
                    support::bench_line(
                        &format!("pg_p99_{n}_{inst}"),
                        "ms",
                        r.p99_ms,
                        Some((l.p99_ms, "pgbench_insert")),
                        "<20",
                        "lower",
                        &format!("{figure}, p99 latency"),
                    );
                }
            }
        }
        println!("load average: {}", support::load_average());
    });
}
