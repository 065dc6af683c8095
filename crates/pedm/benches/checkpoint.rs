//! What audit checkpoints cost request throughput: the same `pedmd` set-up with and without
//! checkpoint signing during the run, in the same run, alternating.
//!
//! `cargo bench -p pedm --bench checkpoint`
//!
//! * `with`: `checkpoint_interval = "1s"`, so a checkpoint is signed every second while
//!   requests arrive: the whole log re-checked against the trusted head (an RFC 6962
//!   consistency proof), the head written outside the database (atomically, fsynced) before the
//!   checkpoint is stored, and the checkpoint sent to one witness (`pedmd witness`, a separate
//!   process on loopback) for its cosignature.
//! * `without`: `checkpoint_interval = "1h"`: no checkpoint is signed during the run (what the
//!   request path costs alone).
//!
//! 16 clients, auto-approved request → grant, durable on SQLite. Each round runs both, in
//! alternating order (without first, then with first, ...), so that drift (the databases grow,
//! other work on the machine comes and goes) hits both alike; the figure is the median of the
//! rounds' ratios. Goal: with/without ≥ 95%.

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "support/mod.rs"]
mod support;

use common::*;
use pedm_api::*;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

const CLIENTS: usize = 16;
const ROUNDS: usize = 6;

fn run_secs() -> u64 {
    std::env::var("PEDM_BENCH_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5)
}

struct Witness(Child);

impl Drop for Witness {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `pedmd witness` for the log of `log_vkey`; returns it, its URL and its key.
fn start_witness(dir: &Path, log_vkey: &str) -> (Witness, String, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_pedmd"))
        .args([
            "witness",
            "--listen",
            "127.0.0.1:0",
            "--name",
            "bench.witness/w1",
        ])
        .args(["--log", log_vkey])
        .arg("--key")
        .arg(dir.join("witness.key"))
        .arg("--state")
        .arg(dir.join("witness.state"))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("pedmd witness");
    use std::io::BufRead;
    let mut lines = std::io::BufReader::new(child.stdout.take().expect("stdout")).lines();
    let mut next = |prefix: &str| {
        lines
            .next()
            .and_then(|l| l.ok())
            .and_then(|l| l.strip_prefix(prefix).map(String::from))
            .unwrap_or_else(|| panic!("witness did not print {prefix:?}"))
    };
    let url = next("pedmd witness listening on ");
    let key = next("witness key: ");
    (Witness(child), url, key)
}

/// Requests per second of `clients` for `run`.
async fn throughput(clients: &[Client], run: Duration) -> f64 {
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let tasks: Vec<_> = clients
        .iter()
        .cloned()
        .map(|c| {
            let (stop, done) = (stop.clone(), done.clone());
            tokio::spawn(async move {
                let body = req("web1", "docker", "1h", "deploy the new build");
                while !stop.load(Ordering::Relaxed) {
                    let r = c.create_request(&body).await.expect("request");
                    assert!(r.grant.is_some(), "auto-approved");
                    done.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    tokio::time::sleep(run).await;
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.expect("client");
    }
    done.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64()
}

async fn setup(config: String) -> (Server, Vec<Client>) {
    let s = Server::start_with(Options {
        config: Some(config),
        ..Default::default()
    });
    standard_targets(&s).await;
    allow_parallel_auto_approved(&s.admin()).await;
    let mut clients = vec![];
    for i in 0..CLIENTS {
        clients.push(s.client(&user_with_token(&s, &format!("bench{i}"), false).await));
    }
    (s, clients)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let run = Duration::from_secs(run_secs());
    let dir = tempfile::tempdir().expect("tempdir");
    let key_file = dir.path().join("log.key");
    let log_key = pedm_audit::SigningKey::from_seed(&[7; 32]);
    log_key.save(&key_file).expect("log key");
    let origin = "pedm.bench/audit";
    let (_witness, witness_url, witness_key) =
        start_witness(dir.path(), &log_key.note_vkey(origin).to_string());

    let (_plain, plain) = setup("[audit]\ncheckpoint_interval = \"1h\"\n".into()).await;
    let (signing, with) = setup(format!(
        "[audit]\ncheckpoint_interval = \"1s\"\nsigning_key = \"{}\"\norigin = \"{origin}\"\n\
         [[audit.witnesses]]\nurl = \"{witness_url}\"\nkey = \"{witness_key}\"\n",
        key_file.display()
    ))
    .await;
    let admin = signing.admin();
    let before = admin.audit_checkpoints().await.expect("checkpoints").len();

    println!(
        "audit checkpoints every second (trusted head file + one witness) vs none during the \
         run: {CLIENTS} clients, {}s per round, {ROUNDS} rounds each, alternating",
        run.as_secs()
    );
    let (mut a, mut b, mut ratios) = (vec![], vec![], vec![]);
    for round in 1..=ROUNDS {
        let (without, with_) = if round % 2 == 1 {
            let w = throughput(&plain, run).await;
            (w, throughput(&with, run).await)
        } else {
            let w = throughput(&with, run).await;
            (throughput(&plain, run).await, w)
        };
        println!(
            "round {round}: without {without:>8.0} req/s   with {with_:>8.0} req/s   {:>6.1}%",
            100.0 * with_ / without
        );
        a.push(without);
        b.push(with_);
        ratios.push(with_ / without);
    }
    let signed = admin.audit_checkpoints().await.expect("checkpoints").len() - before;
    assert!(
        signed as u64 >= ROUNDS as u64 * run.as_secs() / 2,
        "only {signed} checkpoints were signed during the runs"
    );
    let (without, with_, ratio) = (median(a), median(b), median(ratios));
    println!(
        "median: without {without:.0} req/s, with {with_:.0} req/s; median ratio {:.1}%; \
         {signed} checkpoints signed and witnessed during the runs",
        100.0 * ratio
    );
    support::bench_line(
        "checkpoint_rps_16",
        "req/s",
        without * ratio,
        Some((without, "no_checkpoints_during_run")),
        ">=95%",
        "higher",
        "API throughput with a witnessed checkpoint every second, 16 clients (median round ratio x median without)",
    );
    println!("load average: {}", support::load_average());
}
