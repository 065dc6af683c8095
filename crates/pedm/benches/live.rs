//! Live watching latency: how long after a keystroke a person watching the session sees its
//! echo, against how long the typist's own terminal takes to show it, in the same run.
//!
//! `cargo bench -p pedm --bench live` (as root: creates a user, runs pedm-agent)
//!
//! A client speaking the agent's socket protocol as the user (Python, like the tests' scripted
//! client) runs `/bin/cat` in a pseudo-terminal and types one character every 20 ms; the
//! terminal echoes each at once. For each keystroke: the time until the typist's client
//! receives the echo (the peer: the session's own path, agent included) and the time until
//! `pedm session watch`'s API (`Client::watch_session`, server-sent events through pedmd)
//! delivers it. Both clocks are CLOCK_MONOTONIC on the same machine.

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "support/mod.rs"]
mod support;

use common::agent::*;
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const KEYSTROKES: usize = 300;

/// Types `n` keystrokes into `/bin/cat` in a terminal; prints `t0 t1` (ns, CLOCK_MONOTONIC)
/// per keystroke: sent, echo received. Waits for a line on stdin before typing.
const TYPIST: &str = r#"
import json, socket, struct, sys, time
sock, n = sys.argv[1], int(sys.argv[2])
s = socket.socket(socket.AF_UNIX)
s.connect(sock)
def frame(kind, payload):
    return struct.pack('>I', len(payload) + 1) + bytes([kind]) + payload
buf = b''
def read_frame():
    global buf
    while True:
        if len(buf) >= 4:
            n = struct.unpack('>I', buf[:4])[0]
            if len(buf) >= 4 + n:
                body = buf[4:4 + n]
                buf = buf[4 + n:]
                return body[0], body[1:]
        c = s.recv(65536)
        if not c:
            sys.exit('connection closed')
        buf += c
start = {"argv": ["/bin/cat"], "tty": {"rows": 24, "cols": 80}}
s.sendall(frame(1, json.dumps(start).encode()))
kind, body = read_frame()
if kind == 17:
    sys.exit('refused: ' + body.decode())
print('started', flush=True)
sys.stdin.readline()
for i in range(n):
    key = bytes([97 + i % 26])
    t0 = time.monotonic_ns()
    s.sendall(frame(2, key))
    while True:
        kind, body = read_frame()
        if kind == 18 and key in body:
            break
    t1 = time.monotonic_ns()
    print(t0, t1, flush=True)
    time.sleep(0.02)
s.sendall(frame(2, b'\n\x04'))
while True:
    kind, body = read_frame()
    if kind == 20:
        break
"#;

fn monotonic_ns() -> i64 {
    let t = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC).expect("clock");
    t.tv_sec() * 1_000_000_000 + t.tv_nsec()
}

fn percentile(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    v[((v.len() as f64 * p) as usize).min(v.len() - 1)]
}

fn main() {
    if !nix::unistd::geteuid().is_root() {
        println!("SKIP live bench: needs root (creates a user, runs pedm-agent)");
        return;
    }
    support::block_on(run());
}

async fn run() {
    let n = std::env::var("PEDM_BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(KEYSTROKES);
    let (s, agent, user, client) = setup("pedmbl").await;
    grant(&client, "1h").await;
    agent.wait_snapshot(1, None);
    let mut typist = Command::new("/usr/bin/python3");
    typist
        .args([
            "-c",
            TYPIST,
            agent.socket().to_str().unwrap(),
            &n.to_string(),
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped());
    let mut typist = as_user(typist, &agent, &user)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3");
    let mut lines = BufReader::new(typist.stdout.take().unwrap()).lines();
    let first = lines.next().unwrap().unwrap();
    assert_eq!(first, "started", "{first}");

    // Watch it, as an auditor would, timing each output event's arrival.
    let live = common::eventually(Duration::from_secs(30), "the live session", || async {
        s.admin().live_sessions().await.unwrap().into_iter().next()
    })
    .await;
    let arrivals: Arc<Mutex<Vec<(i64, String)>>> = Arc::default();
    let seen = arrivals.clone();
    let watcher = s.admin();
    let (header_tx, header_rx) = tokio::sync::oneshot::channel();
    let mut header_tx = Some(header_tx);
    let watching = tokio::spawn(async move {
        watcher
            .watch_session(live.id, move |name, data| {
                if name == "header"
                    && let Some(tx) = header_tx.take()
                {
                    let _ = tx.send(());
                }
                if name == "event"
                    && let Ok(serde_json::Value::Array(ev)) = serde_json::from_str(data)
                    && ev.get(1).and_then(|c| c.as_str()) == Some("o")
                {
                    let text = ev[2].as_str().unwrap_or_default().to_string();
                    seen.lock().unwrap().push((monotonic_ns(), text));
                }
                name != "end"
            })
            .await
    });
    // The watcher is in place before typing starts.
    header_rx.await.expect("the watcher's header");
    let load_before = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let mut stdin = typist.stdin.take().unwrap();
    writeln!(stdin, "go").unwrap();
    let mut typed = vec![];
    for _ in 0..n {
        let l = lines.next().unwrap().unwrap();
        let mut it = l.split_whitespace().map(|x| x.parse::<i64>().unwrap());
        typed.push((it.next().unwrap(), it.next().unwrap()));
    }
    assert!(typist.wait().unwrap().success());
    let _ = tokio::time::timeout(Duration::from_secs(30), watching).await;
    let load_after = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();

    // Pair each keystroke with the first later output event holding its character.
    let arrivals = arrivals.lock().unwrap().clone();
    let (mut local, mut watched) = (vec![], vec![]);
    let mut next = 0;
    for (i, (t0, t1)) in typed.iter().enumerate() {
        let key = char::from(b'a' + (i % 26) as u8).to_string();
        while next < arrivals.len() && !(arrivals[next].0 >= *t0 && arrivals[next].1.contains(&key))
        {
            next += 1;
        }
        if next == arrivals.len() {
            break;
        }
        local.push((t1 - t0) as f64 / 1e6);
        watched.push((arrivals[next].0 - t0) as f64 / 1e6);
        next += 1;
    }
    assert_eq!(
        watched.len(),
        n,
        "every keystroke reached the watcher ({} of {n})",
        watched.len()
    );
    let (l50, l99) = (percentile(&mut local, 0.5), percentile(&mut local, 0.99));
    let (w50, w99) = (
        percentile(&mut watched, 0.5),
        percentile(&mut watched, 0.99),
    );
    println!(
        "\nkeystroke to echo, {n} keystrokes 20 ms apart (load before: {}, after: {})",
        load_before.trim(),
        load_after.trim()
    );
    println!("{:<44} {:>9} {:>9}", "", "p50 ms", "p99 ms");
    println!(
        "{:<44} {:>9.2} {:>9.2}",
        "the typist's own terminal", l50, l99
    );
    println!(
        "{:<44} {:>9.2} {:>9.2}",
        "a watcher (agent -> pedmd -> SSE)", w50, w99
    );
    println!("watcher/typist p99 ratio: {:.2}", w99 / l99);
    println!(
        "BENCH name=live_watch_latency_p99 unit=ms pedm={w99:.3} peer={l99:.3} peer_name=typist_echo goal=<100 better=lower figure=live watch keystroke to watcher p99"
    );
    println!(
        "BENCH name=live_watch_latency_p50 unit=ms pedm={w50:.3} peer={l50:.3} peer_name=typist_echo better=lower figure=live watch keystroke to watcher p50"
    );
}
