//! What sealing personal data in the audit log costs: auto-approved request → active grant
//! (three audit events, each with a person's name and the justification to seal) on a pedmd
//! with `[privacy] seal_personal_data` against the same on a plain pedmd, in the same run.
//!
//! `cargo bench -p pedm --bench privacy`

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "support/mod.rs"]
mod support;

use common::*;
use std::time::Duration;

const CLIENTS: [usize; 2] = [1, 16];

async fn ready(s: &Server, n: usize) -> Vec<pedm_api::Client> {
    standard_targets(s).await;
    allow_parallel_auto_approved(&s.admin()).await;
    let mut clients = vec![];
    for i in 0..n {
        clients.push(s.client(&user_with_token(s, &format!("bench{i}"), false).await));
    }
    clients
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let run = Duration::from_secs(5);
    let dir = tempfile::tempdir().expect("tempdir");
    let kek = kek_file(dir.path(), "kek");
    let sealed = Server::start_with(Options {
        config: Some(format!(
            "{}[privacy]\nseal_personal_data = true\n",
            with_kek(&kek)
        )),
        ..Default::default()
    });
    let plain = Server::start();
    let max = CLIENTS.iter().copied().max().unwrap_or(1);
    let (sealed_clients, plain_clients) = (ready(&sealed, max).await, ready(&plain, max).await);
    let body = req(
        "web1",
        "docker",
        "1h",
        "deploy the new build for ticket OPS-1",
    );
    println!(
        "auto-approved request -> grant, SQLite, {}s per row",
        run.as_secs()
    );
    println!(
        "{:>8}  {:>14} {:>9}  {:>14} {:>9}  {:>6}",
        "clients", "sealed req/s", "p99 ms", "plain req/s", "p99 ms", "ratio"
    );
    for n in CLIENTS {
        let (sl, se) = support::request_load(&sealed_clients, n, run, &body).await;
        let (pl, pe) = support::request_load(&plain_clients, n, run, &body).await;
        let rate = |l: &[Duration], e: Duration| l.len() as f64 / e.as_secs_f64();
        let p99 = |mut l: Vec<Duration>| {
            l.sort_unstable();
            l[((l.len() as f64 * 0.99) as usize).min(l.len() - 1)].as_secs_f64() * 1e3
        };
        let (s_rate, p_rate) = (rate(&sl, se), rate(&pl, pe));
        println!(
            "{n:>8}  {s_rate:>14.0} {:>9.2}  {p_rate:>14.0} {:>9.2}  {:>5.0}%",
            p99(sl),
            p99(pl),
            100.0 * s_rate / p_rate
        );
        support::bench_line(
            &format!("privacy_rps_{n}"),
            "req/s",
            s_rate,
            Some((p_rate, "same_without_sealing")),
            "-",
            "higher",
            &format!("Sealed personal data, request -> grant, {n} clients, req/s"),
        );
    }
    println!("load average: {}", support::load_average());
}
