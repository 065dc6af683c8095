use jiff::Timestamp;
use pedm_audit::{
    CsvWriter, ExportHeader, FailureKind, OcsfWriter, SignedCheckpoint, SigningKey, VerifyFailure,
    VerifyOptions, VerifyReport, root, verify_events, verify_export_with, write_export,
};
use pedm_core::audit::{AuditEvent, GENESIS_HASH, NewAuditEvent, Outcome, chain};
use serde_json::json;

const N: i64 = 100;
/// Checkpoint sizes written into the export (lines 2, 3, 4).
const CPS: [u64; 3] = [10, 50, 100];
/// Line of the event `seq`: header, three checkpoint lines, then events.
fn line_of(seq: i64) -> u64 {
    4 + seq as u64
}

fn new_event(i: i64) -> NewAuditEvent {
    let at = Timestamp::from_second(1_780_000_000 + i).unwrap();
    let at = at
        .checked_add(jiff::SignedDuration::from_micros(i * 1013 % 1_000_000))
        .unwrap();
    let (action, outcome) = match i % 5 {
        0 => ("grant.started", Outcome::Success),
        1 => ("request.created", Outcome::Success),
        2 => ("request.denied", Outcome::Denied),
        3 => ("auth.failed", Outcome::Failure),
        _ => ("user.created", Outcome::Success),
    };
    let subject = (i % 7 != 0).then(|| format!("request:{i:04}"));
    NewAuditEvent::new(
        at,
        if i % 3 == 0 {
            "alice"
        } else {
            "bob \"the, builder\""
        },
        action,
        subject,
    )
    .outcome(outcome)
    .data(json!({
        "reason": format!("ticket #{i}, line1\nline2 é"),
        "n": i,
        "ratio": i as f64 / 7.0,
        "policies": ["p1", {"id": i}],
    }))
}

fn events(n: i64) -> Vec<AuditEvent> {
    let mut prev = GENESIS_HASH;
    (1..=n)
        .map(|i| {
            let e = chain(i, prev, new_event(i));
            prev = e.hash;
            e
        })
        .collect()
}

fn key() -> SigningKey {
    SigningKey::from_seed(&[7; 32])
}

fn checkpoints(k: &SigningKey, evs: &[AuditEvent], sizes: &[u64]) -> Vec<SignedCheckpoint> {
    let hashes: Vec<[u8; 32]> = evs.iter().map(|e| e.hash).collect();
    sizes
        .iter()
        .map(|&s| {
            let t = Timestamp::from_second(1_790_000_000 + s as i64).unwrap();
            k.sign_checkpoint(s, root(&hashes[..s as usize]), t)
        })
        .collect()
}

fn export_with(k: &SigningKey, evs: &[AuditEvent], sizes: &[u64]) -> String {
    let header = ExportHeader::new(
        Timestamp::from_second(1_790_000_000).unwrap(),
        Some(k.key_id().into()),
    );
    let out = write_export(Vec::new(), &header, &checkpoints(k, evs, sizes), evs).unwrap();
    String::from_utf8(out).unwrap()
}

fn export() -> String {
    export_with(&key(), &events(N), &CPS)
}

fn lines(s: &str) -> Vec<String> {
    s.lines().map(str::to_string).collect()
}

fn join(l: &[String]) -> String {
    let mut s = l.join("\n");
    s.push('\n');
    s
}

fn verify_opts(s: &str, opts: &VerifyOptions) -> Result<VerifyReport, VerifyFailure> {
    let k = key();
    // Same answer whatever the thread count.
    let one = verify_export_with(
        s.as_bytes(),
        k.public_key(),
        &VerifyOptions {
            threads: Some(1),
            ..opts.clone()
        },
    );
    for threads in [2, 3, 8] {
        let many = verify_export_with(
            s.as_bytes(),
            k.public_key(),
            &VerifyOptions {
                threads: Some(threads),
                ..opts.clone()
            },
        );
        assert_eq!(one, many, "threads={threads}");
    }
    one
}

fn verify(s: &str) -> Result<VerifyReport, VerifyFailure> {
    verify_opts(s, &VerifyOptions::default())
}

fn fails(s: &str) -> VerifyFailure {
    let f = verify(s).expect_err("tampered export must fail");
    eprintln!("{f}");
    f
}

fn event_at(l: &[String], seq: i64) -> AuditEvent {
    serde_json::from_str(&l[line_of(seq) as usize - 1]).unwrap()
}

fn set_event(l: &mut [String], seq: i64, e: &AuditEvent) {
    l[line_of(seq) as usize - 1] = serde_json::to_string(e).unwrap();
}

#[test]
fn round_trip() {
    let evs = events(N);
    let s = export();
    let r = verify(&s).unwrap();
    let hashes: Vec<[u8; 32]> = evs.iter().map(|e| e.hash).collect();
    assert_eq!(r.events, N as u64);
    assert_eq!(r.checkpoints, 3);
    assert_eq!(r.covered, N as u64);
    assert_eq!(r.head_hash, evs.last().unwrap().hash);
    assert_eq!(r.root, root(&hashes));
    assert_eq!(r.latest_checkpoint.as_ref().unwrap().checkpoint.size, 100);
    assert!(r.warnings.is_empty(), "{:?}", r.warnings);

    // The export is what the docs say.
    let l = lines(&s);
    assert_eq!(l.len(), 1 + 3 + N as usize + 1);
    assert!(
        l[0].starts_with(r#"{"format":"pedm-audit-export","version":1,"#),
        "{}",
        l[0]
    );
    assert!(l[1].starts_with(r#"{"checkpoint":{"size":10,"#), "{}", l[1]);
    assert_eq!(
        l.last().unwrap(),
        r#"{"end":{"events":100,"checkpoints":3}}"#
    );
    assert_eq!(event_at(&l, 5), evs[4]);

    // The live-log path agrees.
    let live = verify_events(
        &evs,
        checkpoints(&key(), &evs, &CPS),
        key().public_key(),
        &VerifyOptions::default(),
    )
    .unwrap();
    assert_eq!(live, r);

    // Events re-serialised differently (pretty-printed data, key order) still verify: the
    // fast path falls back to parsing.
    let mut l2 = l.clone();
    let v: serde_json::Value = serde_json::from_str(&l2[line_of(3) as usize - 1]).unwrap();
    let mut m: Vec<(String, serde_json::Value)> =
        v.as_object().unwrap().clone().into_iter().collect();
    m.reverse();
    let body: Vec<String> = m
        .iter()
        .map(|(k, v)| {
            format!(
                "{:?}: {}",
                k,
                serde_json::to_string_pretty(v).unwrap().replace('\n', " ")
            )
        })
        .collect();
    l2[line_of(3) as usize - 1] = format!("{{ {} }}", body.join(" , "));
    assert!(!l2[line_of(3) as usize - 1].starts_with("{\"seq\""));
    verify(&join(&l2)).unwrap();
}

#[test]
fn empty_log_round_trip() {
    let k = key();
    let s = export_with(&k, &[], &[0]);
    let r = verify(&s).unwrap();
    assert_eq!((r.events, r.checkpoints, r.covered), (0, 1, 0));
    assert_eq!(r.root, pedm_audit::EMPTY_ROOT);
}

#[test]
fn altered_field() {
    let mut l = lines(&export());
    let mut e = event_at(&l, 37);
    e.actor = "mallory".into();
    set_event(&mut l, 37, &e);
    let f = fails(&join(&l));
    assert_eq!(
        (f.kind, f.seq, f.line),
        (FailureKind::Altered, Some(37), Some(line_of(37)))
    );

    // Altered data, outcome, time: same verdict.
    let mut l = lines(&export());
    let mut e = event_at(&l, 60);
    e.data["n"] = json!(61);
    set_event(&mut l, 60, &e);
    assert_eq!(fails(&join(&l)).kind, FailureKind::Altered);
    let mut l = lines(&export());
    let mut e = event_at(&l, 62);
    e.outcome = Outcome::Success;
    set_event(&mut l, 62, &e);
    assert_eq!(
        (fails(&join(&l)).kind, fails(&join(&l)).seq),
        (FailureKind::Altered, Some(62))
    );
    // Textual edit of the line without re-serialising.
    let mut l = lines(&export());
    let i = line_of(12) as usize - 1;
    l[i] = l[i].replacen("ticket #12", "ticket #13", 1);
    assert_eq!(fails(&join(&l)).seq, Some(12));
}

#[test]
fn altered_and_rehashed_breaks_the_next_link() {
    let mut l = lines(&export());
    let e = event_at(&l, 37);
    let mut ne = new_event(37);
    ne.actor = "mallory".into();
    let forged = chain(37, e.prev_hash, ne);
    set_event(&mut l, 37, &forged);
    let f = fails(&join(&l));
    assert_eq!(
        (f.kind, f.seq, f.line),
        (FailureKind::BrokenLink, Some(38), Some(line_of(38)))
    );
}

#[test]
fn deleted_event() {
    let mut l = lines(&export());
    l.remove(line_of(37) as usize - 1);
    let f = fails(&join(&l));
    assert_eq!(
        (f.kind, f.seq, f.line),
        (FailureKind::Missing, Some(37), Some(line_of(37)))
    );
    // Deleting the very last event: the end line and the checkpoint both say more.
    let mut l = lines(&export());
    l.remove(line_of(N) as usize - 1);
    let f = fails(&join(&l));
    assert_eq!(
        (f.kind, f.seq, f.seq_end),
        (FailureKind::Truncated, Some(N), Some(N))
    );
}

#[test]
fn swapped_events() {
    let mut l = lines(&export());
    l.swap(line_of(37) as usize - 1, line_of(38) as usize - 1);
    let f = fails(&join(&l));
    assert_eq!(
        (f.kind, f.seq, f.line),
        (FailureKind::Reordered, Some(37), Some(line_of(37)))
    );
    // Far apart.
    let mut l = lines(&export());
    l.swap(line_of(20) as usize - 1, line_of(90) as usize - 1);
    let f = fails(&join(&l));
    assert_eq!((f.kind, f.seq), (FailureKind::Reordered, Some(20)));
}

#[test]
fn truncated_file() {
    let s = export();
    // Cut inside a line.
    let cut = s.find(r#"{"seq":61,"#).unwrap() + 40;
    let f = fails(&s[..cut]);
    assert_eq!(
        (f.kind, f.seq, f.line),
        (FailureKind::Truncated, Some(61), Some(line_of(61)))
    );
    // Cut at a line boundary: the signed checkpoint of 100 events catches it.
    let cut = s.find(r#"{"seq":61,"#).unwrap();
    let f = fails(&s[..cut]);
    assert_eq!(
        (f.kind, f.seq, f.seq_end, f.line),
        (FailureKind::Truncated, Some(61), Some(100), Some(4))
    );
    // Even with a matching end line appended by the attacker.
    let fixed = format!(
        "{}{}\n",
        &s[..cut],
        r#"{"end":{"events":60,"checkpoints":3}}"#
    );
    assert_eq!(fails(&fixed).kind, FailureKind::Truncated);
    // Cut off the end line only.
    let l = lines(&s);
    let f = fails(&join(&l[..l.len() - 1]));
    assert_eq!(f.kind, FailureKind::Truncated);
    // A truncated log whose checkpoint lines were also removed passes on its own, but not against
    // a checkpoint the auditor already holds.
    let mut l = lines(&s);
    l.truncate(line_of(50) as usize);
    l.remove(3); // the checkpoint of size 100
    l.push(r#"{"end":{"events":50,"checkpoints":2}}"#.into());
    let t = join(&l);
    assert_eq!(verify(&t).unwrap().events, 50);
    let held = checkpoints(&key(), &events(N), &[100]);
    let f = verify_opts(
        &t,
        &VerifyOptions {
            trusted_checkpoints: held,
            ..Default::default()
        },
    )
    .unwrap_err();
    assert_eq!(
        (f.kind, f.seq, f.seq_end),
        (FailureKind::Truncated, Some(51), Some(100))
    );
    // Empty file.
    assert_eq!(fails("").kind, FailureKind::Truncated);
}

#[test]
fn inserted_forged_event_with_recomputed_chain() {
    let evs = events(N);
    let mut forged: Vec<AuditEvent> = Vec::new();
    let mut prev = GENESIS_HASH;
    let mut seq = 0;
    for e in &evs {
        if e.seq == 37 {
            seq += 1;
            let fake =
                NewAuditEvent::new(e.at, "mallory", "grant.started", Some("grant:evil".into()));
            let f = chain(seq, prev, fake);
            prev = f.hash;
            forged.push(f);
        }
        seq += 1;
        let mut ne = new_event(e.seq);
        ne.at = e.at;
        let f = chain(seq, prev, ne);
        prev = f.hash;
        forged.push(f);
    }
    assert_eq!(forged.len(), N as usize + 1);
    // Keep the genuine signed checkpoints; everything else is consistent.
    let k = key();
    let header = ExportHeader::new(
        Timestamp::from_second(1_790_000_000).unwrap(),
        Some(k.key_id().into()),
    );
    let out = write_export(Vec::new(), &header, &checkpoints(&k, &evs, &CPS), &forged).unwrap();
    let f = fails(std::str::from_utf8(&out).unwrap());
    // The checkpoint of size 10 still matches; the one of size 50 does not.
    assert_eq!(
        (f.kind, f.seq, f.seq_end, f.line),
        (FailureKind::Forged, Some(11), Some(50), Some(3))
    );
}

#[test]
fn inserted_duplicate_seq() {
    let mut l = lines(&export());
    // A forged event 38 placed after 37, with a valid own hash and link; the genuine 38 follows.
    let e37 = event_at(&l, 37);
    let fake = chain(
        38,
        e37.hash,
        NewAuditEvent::new(e37.at, "mallory", "grant.started", None),
    );
    l.insert(
        line_of(38) as usize - 1,
        serde_json::to_string(&fake).unwrap(),
    );
    let f = fails(&join(&l));
    assert_eq!(
        (f.kind, f.seq, f.line),
        (FailureKind::Inserted, Some(38), Some(line_of(38) + 1))
    );
}

#[test]
fn replaced_signing_key() {
    let evs = events(N);
    let mallory = SigningKey::from_seed(&[66; 32]);
    // Re-signed with another key, header and all.
    let f = fails(&export_with(&mallory, &evs, &CPS));
    assert_eq!((f.kind, f.line), (FailureKind::WrongKey, Some(1)));
    // Header left alone: the first checkpoint line is refused.
    let good = lines(&export());
    let mut l = lines(&export_with(&mallory, &evs, &CPS));
    l[0] = good[0].clone();
    let f = fails(&join(&l));
    assert_eq!((f.kind, f.line), (FailureKind::WrongKey, Some(2)));
    // Another key's signature under our key id.
    let mut l = good.clone();
    let mut cp = mallory.sign(checkpoints(&key(), &evs, &[50])[0].checkpoint.clone());
    cp.checkpoint.key_id = key().key_id().into();
    l[2] = serde_json::to_string(&json!({ "checkpoint": cp })).unwrap();
    let f = fails(&join(&l));
    assert_eq!((f.kind, f.line), (FailureKind::BadSignature, Some(3)));
}

#[test]
fn altered_checkpoint() {
    let mut l = lines(&export());
    l[2] = l[2].replacen(r#""size":50"#, r#""size":49"#, 1);
    let f = fails(&join(&l));
    assert_eq!((f.kind, f.line), (FailureKind::BadSignature, Some(3)));
}

#[test]
fn coverage() {
    let evs = events(N);
    // Checkpoints that stop at 50.
    let s = export_with(&key(), &evs, &[10, 50]);
    let r = verify(&s).unwrap();
    assert_eq!(r.covered, 50);
    assert_eq!(
        r.warnings,
        vec!["events after the last signed checkpoint are not covered: 51..=100".to_string()]
    );
    let f = verify_opts(
        &s,
        &VerifyOptions {
            require_covered: true,
            ..Default::default()
        },
    )
    .unwrap_err();
    assert_eq!(
        (f.kind, f.seq, f.seq_end),
        (FailureKind::Uncovered, Some(51), Some(100))
    );
    // None at all.
    let r = verify(&export_with(&key(), &evs, &[])).unwrap();
    assert_eq!(r.covered, 0);
    assert!(
        r.warnings[0].starts_with("no signed checkpoint"),
        "{:?}",
        r.warnings
    );
}

#[test]
fn malformed_lines() {
    let good = lines(&export());
    let mut l = good.clone();
    let i = line_of(5) as usize - 1;
    l[i] = l[i].replacen("{", r#"{"note":"x","#, 1);
    let f = fails(&join(&l));
    assert_eq!((f.kind, f.line), (FailureKind::Malformed, Some(line_of(5))));
    let mut l = good.clone();
    l.insert(10, String::new());
    assert_eq!(fails(&join(&l)).kind, FailureKind::Malformed);
    let mut l = good.clone();
    l.push(good[5].clone());
    assert_eq!(fails(&join(&l)).kind, FailureKind::Malformed);
    let mut l = good.clone();
    l.remove(0);
    assert_eq!(
        (fails(&join(&l)).kind, fails(&join(&l)).line),
        (FailureKind::Malformed, Some(1))
    );
    // A checkpoint after the events it covers.
    let mut l = good.clone();
    let cp = l.remove(1);
    l.insert(line_of(20) as usize - 1, cp);
    let f = fails(&join(&l));
    assert_eq!(f.kind, FailureKind::Malformed);
    // ... but right after its last event is fine (interleaved layout).
    let mut l = good.clone();
    let cp = l.remove(1);
    l.insert(line_of(10) as usize - 1, cp);
    verify(&join(&l)).unwrap();
}

#[test]
fn live_log_failures_name_the_seq() {
    let k = key();
    let evs = events(N);
    let cps = checkpoints(&k, &evs, &CPS);
    let opts = VerifyOptions::default();
    let mut bad = evs.clone();
    bad[40].action = "grant.revoked".into();
    let f = verify_events(&bad, cps.clone(), k.public_key(), &opts).unwrap_err();
    assert_eq!(
        (f.kind, f.seq, f.line),
        (FailureKind::Altered, Some(41), None)
    );
    let mut bad = evs.clone();
    bad.remove(40);
    let f = verify_events(&bad, cps.clone(), k.public_key(), &opts).unwrap_err();
    assert_eq!((f.kind, f.seq), (FailureKind::Missing, Some(41)));
    let mut bad = evs.clone();
    bad.swap(40, 41);
    let f = verify_events(&bad, cps.clone(), k.public_key(), &opts).unwrap_err();
    assert_eq!((f.kind, f.seq), (FailureKind::Reordered, Some(41)));
    let f = verify_events(&evs[..70], cps.clone(), k.public_key(), &opts).unwrap_err();
    assert_eq!(
        (f.kind, f.seq, f.seq_end),
        (FailureKind::Truncated, Some(71), Some(100))
    );
}

#[test]
fn csv_export() {
    let evs = events(20);
    let mut w = CsvWriter::new(Vec::new()).unwrap();
    for e in &evs {
        w.write(e).unwrap();
    }
    let out = w.finish().unwrap();
    let text = String::from_utf8(out.clone()).unwrap();
    assert!(text.starts_with("seq,at,actor,action,outcome,subject,data,prev_hash,hash\r\n"));
    let mut r = csv::Reader::from_reader(&out[..]);
    let rows: Vec<csv::StringRecord> = r.records().map(Result::unwrap).collect();
    assert_eq!(rows.len(), 20);
    for (row, e) in rows.iter().zip(&evs) {
        assert_eq!(row[0], e.seq.to_string());
        assert_eq!(row[1].parse::<Timestamp>().unwrap(), e.at);
        assert_eq!(&row[2], e.actor);
        assert_eq!(&row[5], e.subject.as_deref().unwrap_or(""));
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(&row[6]).unwrap(),
            e.data
        );
        assert_eq!(row[8], hex::encode(e.hash));
    }
    // The actor with a quote and a comma is quoted RFC 4180 style.
    assert!(text.contains(r#","bob ""the, builder""","#));
}

#[test]
fn ocsf_export() {
    let evs = events(10);
    let mut w = OcsfWriter::new(Vec::new());
    for e in &evs {
        w.write(e).unwrap();
    }
    let out = String::from_utf8(w.finish().unwrap()).unwrap();
    let recs: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(recs.len(), 10);
    // seq 5: grant.started, success.
    let g = &recs[4];
    assert_eq!(g["class_uid"], 3005);
    assert_eq!(g["category_uid"], 3);
    assert_eq!(g["activity_id"], 1);
    assert_eq!(g["type_uid"], 300501);
    assert_eq!(g["status_id"], 1);
    assert_eq!(g["time"], evs[4].at.as_millisecond());
    assert_eq!(g["metadata"]["uid"], "5");
    assert_eq!(g["metadata"]["product"]["name"], "pedm");
    assert_eq!(g["unmapped"]["data"], evs[4].data);
    assert_eq!(g["privileges"][0], "request:0005");
    // seq 2: request.denied.
    let d = &recs[1];
    assert_eq!(d["class_uid"], 6003);
    assert_eq!(d["category_uid"], 6);
    assert_eq!(d["activity_id"], 3);
    assert_eq!(d["status_id"], 2);
    assert_eq!(d["status_detail"], "denied");
    assert_eq!(d["api"]["operation"], "request.denied");
    assert_eq!(d["actor"]["user"]["name"], "bob \"the, builder\"");
    // seq 3: auth.failed.
    assert_eq!(recs[2]["class_uid"], 3002);
    assert_eq!(recs[2]["activity_id"], 1);
    assert_eq!(recs[2]["status"], "Failure");
}

#[test]
fn trusted_heads_must_be_extended_and_both_sizes_are_named() {
    use pedm_audit::{TrustedHead, merkle::root};
    let key = SigningKey::from_seed(&[21; 32]);
    let events = events(20);
    let hashes: Vec<[u8; 32]> = events.iter().map(|e| e.hash).collect();
    let verify = |heads: Vec<TrustedHead>| {
        pedm_audit::verify_events(
            &events,
            [],
            key.public_key(),
            &VerifyOptions {
                trusted_heads: heads,
                ..Default::default()
            },
        )
    };
    let head = |size: u64, root: [u8; 32]| TrustedHead {
        size,
        root,
        what: "saved.note".into(),
    };
    // The log extends a head it has: fine.
    verify(vec![head(12, root(&hashes[..12]))]).unwrap();
    // Longer than the log: truncated, both sizes named.
    let f = verify(vec![head(25, [7; 32])]).unwrap_err();
    assert_eq!(f.kind, FailureKind::Truncated);
    assert!(
        f.detail.contains("20 events") && f.detail.contains("25"),
        "{f}"
    );
    // Another root at its size: forked, both sizes named.
    let f = verify(vec![head(12, root(&hashes[..11]))]).unwrap_err();
    assert_eq!(f.kind, FailureKind::Forged);
    assert!(
        f.detail.contains("20 events") && f.detail.contains("12 events"),
        "{f}"
    );
}

#[test]
fn require_covered_fails_an_empty_log_without_checkpoints() {
    let key = SigningKey::from_seed(&[22; 32]);
    let opts = VerifyOptions {
        require_covered: true,
        ..Default::default()
    };
    let f = pedm_audit::verify_events(
        Vec::<pedm_core::audit::AuditEvent>::new(),
        [],
        key.public_key(),
        &opts,
    )
    .unwrap_err();
    assert_eq!(f.kind, FailureKind::Uncovered);
}

/// A log whose first `p` events were archived and pruned: the export starts with their
/// Merkle peaks, vouched for by the checkpoint at `p` and by the `audit.pruned` event that
/// records them (event `p + 2` here), with `record` false for a log that lacks that event.
fn pruned_export(p: u64, n: i64, sizes: &[u64], record: bool, peaks_of: u64) -> String {
    use pedm_audit::{ExportWriter, MerkleAccumulator, PrunedBase};
    let k = key();
    let mut prefix = MerkleAccumulator::new();
    let mut prev = GENESIS_HASH;
    let mut evs = vec![];
    for i in 1..=n {
        let mut ne = new_event(i);
        if record && i == p as i64 + 2 {
            ne = NewAuditEvent::new(ne.at, "admin", "audit.pruned", None).data(json!({
                "through": p, "root": hex::encode(prefix.root()), "last_hash": hex::encode(prev),
            }));
        }
        let e = chain(i, prev, ne);
        prev = e.hash;
        if (i as u64) <= peaks_of {
            prefix.push(&e.hash);
        }
        evs.push(e);
    }
    let mut w = ExportWriter::new(
        Vec::new(),
        &ExportHeader::new(Timestamp::from_second(1_790_000_000).unwrap(), None),
    )
    .unwrap();
    for c in checkpoints(&k, &evs, sizes) {
        w.write_checkpoint(&c).unwrap();
    }
    w.write_pruned(&PrunedBase {
        through: p,
        hash: hex::encode(evs[p as usize - 1].hash),
        peaks: prefix.peaks().iter().map(hex::encode).collect(),
    })
    .unwrap();
    for e in &evs[p as usize..] {
        w.write_event(e).unwrap();
    }
    String::from_utf8(w.finish().unwrap()).unwrap()
}

#[test]
fn a_pruned_start_verifies_only_with_its_checkpoint_and_the_event_that_records_it() {
    let r = verify(&pruned_export(37, 60, &[37, 60], true, 37)).expect("verifies");
    assert_eq!((r.pruned, r.events, r.covered), (37, 60, 60));

    // No checkpoint at the pruned size: nothing vouches for what was pruned.
    let f = fails(&pruned_export(37, 60, &[60], true, 37));
    assert_eq!(f.kind, FailureKind::Forged, "{f}");
    assert!(f.detail.contains("no signed checkpoint"), "{f}");
    // Peaks of another prefix: not the root the checkpoint signs.
    let f = fails(&pruned_export(37, 60, &[37, 60], true, 36));
    assert!(
        matches!(f.kind, FailureKind::Forged | FailureKind::Malformed),
        "{f}"
    );
    // A start nobody recorded: the first events were removed, not archived.
    let f = fails(&pruned_export(37, 60, &[37, 60], false, 37));
    assert_eq!(f.kind, FailureKind::Forged, "{f}");
    assert!(f.detail.contains("no audit.pruned event"), "{f}");
    // A checkpoint of the pruned events themselves belongs to the archive.
    let f = fails(&pruned_export(37, 60, &[20, 37, 60], true, 37));
    assert_eq!(f.kind, FailureKind::Malformed, "{f}");
    // The first kept event must link to the last pruned one.
    let text = pruned_export(37, 60, &[37, 60], true, 37);
    let mut l = lines(&text);
    let at = l.iter().position(|x| x.starts_with("{\"pruned\"")).unwrap();
    let mut base: serde_json::Value = serde_json::from_str(&l[at]).unwrap();
    base["pruned"]["hash"] = json!(hex::encode([9u8; 32]));
    l[at] = base.to_string();
    assert_eq!(fails(&join(&l)).kind, FailureKind::BrokenLink);
}
