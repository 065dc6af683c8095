//! Verify rate of a 1,000,000-event export against the raw rate of reading and parsing the same
//! file, in one run. `cargo bench -p pedm-audit --bench verify` (set `PEDM_BENCH_EVENTS` for
//! another size).

use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::sync::{Mutex, mpsc};
use std::time::{Duration, Instant};

use jiff::Timestamp;
use pedm_audit::{
    CsvWriter, ExportHeader, MerkleAccumulator, OcsfWriter, SigningKey, VerifyOptions,
    verify_events, verify_export_with, write_export,
};
use pedm_core::audit::{AuditEvent, GENESIS_HASH, NewAuditEvent, Outcome, chain};
use serde_json::json;
use sha2::{Digest, Sha256};

fn event(i: i64) -> NewAuditEvent {
    let at = Timestamp::from_microsecond(1_780_000_000_000_000 + i * 1_234_567).unwrap();
    let (action, outcome) = match i % 4 {
        0 => ("request.created", Outcome::Success),
        1 => ("request.approved", Outcome::Success),
        2 => ("grant.started", Outcome::Success),
        _ => ("request.denied", Outcome::Denied),
    };
    NewAuditEvent::new(
        at,
        "alice@example.com",
        action,
        Some(format!("request:0190a1b2-{i:012x}")),
    )
    .outcome(outcome)
    .data(json!({
        "target": format!("db-{:02}.prod", i % 17),
        "role": "postgres-admin",
        "reason": format!("INC-{} restore a broken replica", i % 9973),
        "duration_s": 3600,
        "policies": ["oncall-dba"],
    }))
}

struct Row {
    what: String,
    secs: f64,
    n: u64,
}

fn rate(n: u64, d: Duration) -> f64 {
    n as f64 / d.as_secs_f64()
}

fn main() {
    let n: i64 = std::env::var("PEDM_BENCH_EVENTS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1_000_000);
    let cores = std::thread::available_parallelism().map_or(1, |c| c.get());
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    let key = SigningKey::from_seed(&[42; 32]);
    let mut rows: Vec<Row> = Vec::new();

    // Build the log in memory, through the real chain.
    let t = Instant::now();
    let mut prev = GENESIS_HASH;
    let events: Vec<AuditEvent> = (1..=n)
        .map(|i| {
            let e = chain(i, prev, event(i));
            prev = e.hash;
            e
        })
        .collect();
    rows.push(Row {
        what: "build events (core::chain, 1 thread)".into(),
        secs: t.elapsed().as_secs_f64(),
        n: n as u64,
    });

    // Checkpoints every 100,000 events and at the end, from the accumulator.
    let t = Instant::now();
    let mut acc = MerkleAccumulator::new();
    let mut cps = Vec::new();
    let now = Timestamp::from_second(1_790_000_000).unwrap();
    for e in &events {
        acc.push(&e.hash);
        if acc.size().is_multiple_of(100_000) || acc.size() == n as u64 {
            cps.push(key.sign_checkpoint(acc.size(), acc.root(), now));
        }
    }
    rows.push(Row {
        what: "Merkle accumulator + sign checkpoints".into(),
        secs: t.elapsed().as_secs_f64(),
        n: n as u64,
    });

    // Exports.
    let t = Instant::now();
    let header = ExportHeader::new(now, Some(key.key_id().to_string()));
    write_export(
        BufWriter::new(File::create(&path).unwrap()),
        &header,
        &cps,
        &events,
    )
    .unwrap()
    .into_inner()
    .unwrap()
    .sync_all()
    .unwrap();
    rows.push(Row {
        what: "write JSON Lines export (fsync)".into(),
        secs: t.elapsed().as_secs_f64(),
        n: n as u64,
    });
    let size = std::fs::metadata(&path).unwrap().len();

    let t = Instant::now();
    let mut w = CsvWriter::new(BufWriter::new(std::io::sink())).unwrap();
    for e in &events {
        w.write(e).unwrap();
    }
    w.finish().unwrap();
    rows.push(Row {
        what: "write CSV (to sink)".into(),
        secs: t.elapsed().as_secs_f64(),
        n: n as u64,
    });
    let t = Instant::now();
    let mut w = OcsfWriter::new(BufWriter::new(std::io::sink()));
    for e in &events {
        w.write(e).unwrap();
    }
    w.finish().unwrap();
    rows.push(Row {
        what: "write OCSF JSON Lines (to sink)".into(),
        secs: t.elapsed().as_secs_f64(),
        n: n as u64,
    });

    // Raw limits: read lines; read + parse each event line into AuditEvent.
    let t = Instant::now();
    let mut r = BufReader::with_capacity(1 << 16, File::open(&path).unwrap());
    let mut buf = Vec::new();
    let mut lines = 0u64;
    while r.read_until(b'\n', &mut buf).unwrap() > 0 {
        lines += 1;
        buf.clear();
    }
    assert_eq!(lines, n as u64 + cps.len() as u64 + 2);
    let raw_read = t.elapsed();
    rows.push(Row {
        what: "raw: read lines only".into(),
        secs: raw_read.as_secs_f64(),
        n: n as u64,
    });

    let t = Instant::now();
    let parsed = raw_parse(&path, 1);
    assert_eq!(parsed, n as u64);
    let raw_parse_1 = t.elapsed();
    rows.push(Row {
        what: "raw: read + parse to AuditEvent, 1 thread".into(),
        secs: raw_parse_1.as_secs_f64(),
        n: n as u64,
    });

    let t = Instant::now();
    let parsed = raw_parse(&path, cores);
    assert_eq!(parsed, n as u64);
    let raw_parse_n = t.elapsed();
    rows.push(Row {
        what: format!("raw: read + parse to AuditEvent, {cores} threads"),
        secs: raw_parse_n.as_secs_f64(),
        n: n as u64,
    });

    // The SHA-256 limit: what any verifier of this log must hash, on every core, with the
    // lines already in memory (no I/O, no parsing): each event line once (about the bytes
    // its content hash covers), its Merkle leaf and one interior node.
    let event_lines: Vec<Vec<u8>> = std::fs::read(&path)
        .unwrap()
        .split(|&b| b == b'\n')
        .filter(|l| l.starts_with(b"{\"seq\":"))
        .map(<[u8]>::to_vec)
        .collect();
    assert_eq!(event_lines.len(), n as usize);
    let t = Instant::now();
    let per = event_lines.len().div_ceil(cores);
    std::thread::scope(|s| {
        for part in event_lines.chunks(per) {
            s.spawn(move || {
                let mut prev = [0u8; 32];
                for line in part {
                    let h: [u8; 32] = Sha256::digest(line).into();
                    let leaf: [u8; 32] = Sha256::new()
                        .chain_update([0u8])
                        .chain_update(h)
                        .finalize()
                        .into();
                    prev = Sha256::new()
                        .chain_update([1u8])
                        .chain_update(prev)
                        .chain_update(leaf)
                        .finalize()
                        .into();
                }
                std::hint::black_box(prev);
            });
        }
    });
    let sha_limit = t.elapsed();
    drop(event_lines);
    rows.push(Row {
        what: format!("limit: SHA-256 of lines, leaves, nodes, {cores} threads"),
        secs: sha_limit.as_secs_f64(),
        n: n as u64,
    });

    // Verification.
    let verify = |threads: usize| {
        let t = Instant::now();
        let r = verify_export_with(
            BufReader::with_capacity(1 << 16, File::open(&path).unwrap()),
            key.public_key(),
            &VerifyOptions {
                threads: Some(threads),
                require_covered: true,
                ..Default::default()
            },
        )
        .unwrap();
        let d = t.elapsed();
        assert_eq!(r.events, n as u64);
        assert_eq!(r.covered, n as u64);
        assert_eq!(r.root, acc.root());
        d
    };
    let v1 = verify(1);
    rows.push(Row {
        what: "verify_export, 1 thread".into(),
        secs: v1.as_secs_f64(),
        n: n as u64,
    });
    let vn = verify(cores);
    rows.push(Row {
        what: format!("verify_export, {cores} threads"),
        secs: vn.as_secs_f64(),
        n: n as u64,
    });

    let t = Instant::now();
    let r = verify_events(
        &events,
        cps.clone(),
        key.public_key(),
        &VerifyOptions::default(),
    )
    .unwrap();
    assert_eq!(r.covered, n as u64);
    rows.push(Row {
        what: "verify_events (parsed events in memory, 1 thread)".into(),
        secs: t.elapsed().as_secs_f64(),
        n: n as u64,
    });

    println!();
    println!(
        "pedm-audit verify benchmark: {n} events, export {:.1} MB ({:.0} B/event), {} checkpoints, {cores} cores",
        size as f64 / 1e6,
        size as f64 / n as f64,
        cps.len()
    );
    println!("{:<52} {:>9} {:>14}", "step", "seconds", "events/s");
    println!("{}", "-".repeat(77));
    for r in &rows {
        println!(
            "{:<52} {:>9.3} {:>14.0}",
            r.what,
            r.secs,
            r.n as f64 / r.secs
        );
    }
    println!("{}", "-".repeat(77));
    let nn = n as u64;
    println!(
        "verify ({cores} threads) / raw read+parse ({cores} threads): {:.2}",
        rate(nn, vn) / rate(nn, raw_parse_n)
    );
    println!(
        "verify ({cores} threads) / raw read+parse (1 thread):  {:.2}",
        rate(nn, vn) / rate(nn, raw_parse_1)
    );
    println!(
        "verify (1 thread) / raw read+parse (1 thread):   {:.2}",
        rate(nn, v1) / rate(nn, raw_parse_1)
    );
    println!(
        "verify ({cores} threads) / raw read lines:            {:.2}",
        rate(nn, vn) / rate(nn, raw_read)
    );
    println!(
        "verify ({cores} threads) / SHA-256 limit ({cores} threads): {:.2}",
        rate(nn, vn) / rate(nn, sha_limit)
    );
    println!(
        "goal verify >= 1,000,000 events/s: {}",
        if rate(nn, vn) >= 1e6 {
            "met"
        } else {
            "NOT met"
        }
    );
    println!(
        "goal verify >= 5,000,000 events/s on all cores (issue 21): {}",
        if rate(nn, vn) >= 5e6 {
            "met"
        } else {
            "NOT met"
        }
    );
}

/// Reads the export and parses every event line into `AuditEvent` (the others are skipped), on
/// `threads` threads in chunks of lines: the cost floor of any verifier that parses events.
fn raw_parse(path: &std::path::Path, threads: usize) -> u64 {
    let mut r = BufReader::with_capacity(1 << 16, File::open(path).unwrap());
    let parse = |chunk: &[u8]| -> u64 {
        let mut k = 0;
        for line in chunk.split(|&b| b == b'\n') {
            if line.starts_with(b"{\"seq\":") {
                let e: AuditEvent = serde_json::from_slice(line).unwrap();
                std::hint::black_box(&e);
                k += 1;
            }
        }
        k
    };
    let next_chunk = |r: &mut BufReader<File>| -> Option<Vec<u8>> {
        let mut c = Vec::with_capacity(300 * 1024);
        while c.len() < 256 * 1024 {
            if r.read_until(b'\n', &mut c).unwrap() == 0 {
                break;
            }
        }
        (!c.is_empty()).then_some(c)
    };
    if threads <= 1 {
        let mut total = 0;
        while let Some(c) = next_chunk(&mut r) {
            total += parse(&c);
        }
        return total;
    }
    let (tx, rx) = mpsc::sync_channel::<Vec<u8>>(threads * 2);
    let rx = Mutex::new(rx);
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                let rx = &rx;
                s.spawn(move || {
                    let mut k = 0;
                    while let Ok(c) = { rx.lock().unwrap().recv() } {
                        k += parse(&c);
                    }
                    k
                })
            })
            .collect();
        while let Some(c) = next_chunk(&mut r) {
            tx.send(c).unwrap();
        }
        drop(tx);
        let _ = std::io::stdout().flush();
        handles.into_iter().map(|h| h.join().unwrap()).sum()
    })
}
