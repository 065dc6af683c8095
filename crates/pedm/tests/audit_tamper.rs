//! Audit guarantees under attack, end to end with the real binaries: a tampered log is never
//! exported, listed, proved or signed (fail closed, 409 with a JSON body naming the problem); a
//! rolled-back database is refused at start and later detected by an auditor's saved checkpoint
//! and by a witness; checkpoints are C2SP signed notes that an independent Python check
//! verifies; and the untouched log raises no false alarm.

mod common;

use common::*;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

async fn workload(s: &Server) {
    standard_targets(s).await;
    // One live grant per user and role (a second one may be refused by policy).
    for i in 0..4 {
        let c = s.client(&user_with_token(s, &format!("dev{i}"), false).await);
        c.create_request(&req("web1", "docker", "30m", &format!("deploy {i}")))
            .await
            .expect("docker request");
    }
}

async fn more(s: &Server, n: usize) {
    for i in 0..n {
        user_with_token(s, &format!("u{i}x{}", rand_suffix()), false).await;
    }
}

fn rand_suffix() -> u32 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0)
        % 100_000
}

fn pubkey(s: &Server) -> String {
    let o = s.cli(&s.admin_token, &["audit", "pubkey"]);
    assert!(o.status.success(), "{}", stderr(&o));
    stdout(&o).trim().to_string()
}

fn sign(s: &Server) -> u64 {
    let o = s.cli(&s.admin_token, &["--json", "audit", "checkpoint"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: Vec<serde_json::Value> = serde_json::from_str(&stdout(&o)).expect("json");
    v[0]["size"].as_u64().expect("size")
}

fn save_checkpoint(s: &Server, file: &Path) -> u64 {
    let o = s.cli(
        &s.admin_token,
        &["audit", "checkpoint", "--output", file.to_str().unwrap()],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let text = std::fs::read_to_string(file).unwrap();
    text.lines().nth(1).unwrap().parse().unwrap()
}

fn db(s: &Server) -> PathBuf {
    s.data_path().join("pedm.db")
}

fn sql(db: &Path, statements: &str) {
    let o = Command::new("sqlite3")
        .arg(db)
        .arg(statements)
        .output()
        .expect("sqlite3");
    assert!(o.status.success(), "sqlite3: {}", stderr(&o));
}

fn assert_fails(o: &Output, needles: &[&str]) {
    let err = stderr(o);
    assert_eq!(
        o.status.code(),
        Some(1),
        "stdout: {}\nstderr: {err}",
        stdout(o)
    );
    for n in needles {
        assert!(err.contains(n), "expected {n:?} in: {err}");
    }
}

/// GET (or POST) an audit route; returns the status and the JSON error body.
async fn raw(s: &Server, post: bool, path: &str) -> (u16, serde_json::Value) {
    let url = format!("{}/api/v1{path}", s.url);
    let c = reqwest::Client::new();
    let rb = if post { c.post(&url) } else { c.get(&url) };
    let r = rb.bearer_auth(&s.admin_token).send().await.unwrap();
    let status = r.status().as_u16();
    let body = r.text().await.unwrap();
    (
        status,
        serde_json::from_str(&body).unwrap_or(serde_json::Value::Null),
    )
}

/// Every audit route that signs, lists, proves or exports refuses a broken log with 409 and a
/// JSON error naming the problem; the CLI exits 1.
async fn assert_fail_closed(s: &Server, needle: &str) {
    for (post, path) in [
        (false, "/audit/export?format=jsonl"),
        (false, "/audit/export?format=csv"),
        (false, "/audit/export?format=ocsf"),
        (false, "/audit/checkpoints"),
        (true, "/audit/checkpoints"),
        (false, "/audit/checkpoint.note"),
        (false, "/audit/proof/inclusion?seq=1"),
        (false, "/audit/proof/consistency?from=1"),
    ] {
        let (status, body) = raw(s, post, path).await;
        assert_eq!(status, 409, "{path}: {body}");
        assert_eq!(body["error"]["code"], "audit_integrity", "{path}: {body}");
        let msg = body["error"]["message"].as_str().unwrap_or_default();
        assert!(msg.contains(needle), "{path}: expected {needle:?} in {msg}");
    }
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("x.jsonl");
    let o = s.cli(
        &s.admin_token,
        &["audit", "export", "-o", f.to_str().unwrap()],
    );
    assert_fails(&o, &[needle]);
    assert!(
        std::fs::read_dir(dir.path()).unwrap().next().is_none(),
        "a refused export leaves no file"
    );
    let o = s.cli(&s.admin_token, &["audit", "checkpoint"]);
    assert_fails(&o, &[needle]);
}

/// SQL that rewrites event `from` (actor changed) and recomputes the hash chain after it, as
/// an attacker with the database would to hide an edit from a chain check.
fn rechain_from(events: &[pedm_api::AuditEvent], from: i64) -> String {
    let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02X}")).collect::<String>();
    let mut prev = events[(from - 2) as usize].hash;
    let mut sql = String::new();
    for e in events.iter().filter(|e| e.seq >= from) {
        let mut ne =
            pedm_core::audit::NewAuditEvent::new(e.at, &e.actor, &e.action, e.subject.clone())
                .outcome(e.outcome)
                .data(e.data.clone());
        if e.seq == from {
            ne.actor = "mallory".into();
        }
        let c = pedm_core::audit::chain(e.seq, prev, ne);
        sql.push_str(&format!(
            "UPDATE audit_events SET actor = '{}', prev_hash = X'{}', hash = X'{}' WHERE seq = {};",
            c.actor,
            hex(&c.prev_hash),
            hex(&c.hash),
            c.seq
        ));
        prev = c.hash;
    }
    sql
}

#[tokio::test]
async fn a_tampered_log_is_never_exported_signed_listed_or_proved() {
    // (tamper, what the server names, what the auditor's live verify names)
    let cases: [(&str, &str, &[&str]); 4] = [
        (
            "UPDATE audit_events SET data = '{\"x\":1}' WHERE seq = 5",
            "event 5: altered",
            &["event 5", "altered"],
        ),
        (
            "DELETE FROM audit_events WHERE seq = 6",
            "event 6: missing",
            &["event 6", "missing"],
        ),
        (
            "UPDATE audit_events SET seq = -1 WHERE seq = 7; \
             UPDATE audit_events SET seq = 7 WHERE seq = 8; \
             UPDATE audit_events SET seq = 8 WHERE seq = -1;",
            "event 7: broken link",
            &["event 7"],
        ),
        ("rechain", "forged", &["forged"]),
    ];
    for (tamper, server_says, verify_says) in cases {
        let mut s = Server::start();
        workload(&s).await;
        let key = pubkey(&s);
        sign(&s);
        let events = s
            .admin()
            .audit_events(&pedm_api::AuditQuery::default())
            .await
            .unwrap();
        s.stop();
        if tamper == "rechain" {
            sql(&db(&s), &rechain_from(&events, 4));
        } else {
            sql(&db(&s), tamper);
        }
        s.start_again();
        assert_fail_closed(&s, server_says).await;
        let o = s.cli(&s.admin_token, &["audit", "verify", "--pubkey", &key]);
        assert_fails(&o, verify_says);
    }
}

#[tokio::test]
async fn an_export_no_checkpoint_covers_fails_require_covered() {
    let dir = tempfile::tempdir().unwrap();
    let key = pedm_audit::SigningKey::from_seed(&[9; 32])
        .public_key()
        .to_string();
    let empty = dir.path().join("empty.jsonl");
    std::fs::write(
        &empty,
        "{\"format\":\"pedm-audit-export\",\"version\":1,\"created\":\"2026-01-01T00:00:00Z\"}\n\
         {\"end\":{\"events\":0,\"checkpoints\":0}}\n",
    )
    .unwrap();
    let f = empty.to_str().unwrap();
    let o = offline(&[
        "audit",
        "verify",
        "--file",
        f,
        "--pubkey",
        &key,
        "--require-covered",
    ]);
    assert_fails(&o, &["not covered", "no signed checkpoint"]);
    // Without --require-covered the (empty) chain is fine.
    let o = offline(&["audit", "verify", "--file", f, "--pubkey", &key]);
    assert!(o.status.success(), "{}", stderr(&o));
}

/// Copies the SQLite database of a stopped server (its WAL is checkpointed at a clean stop).
fn copy_db(s: &Server, to: &Path) {
    sql(&db(s), "PRAGMA wal_checkpoint(TRUNCATE);");
    std::fs::copy(db(s), to).unwrap();
}

fn restore_db(s: &Server, from: &Path) {
    for ext in ["db-wal", "db-shm"] {
        let _ = std::fs::remove_file(s.data_path().join(format!("pedm.{ext}")));
    }
    std::fs::copy(from, db(s)).unwrap();
}

fn accept_rollback(s: &Server, yes: bool) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_pedmd"));
    c.arg("--data-dir")
        .arg(s.data_path())
        .args(["audit", "accept-rollback"]);
    if yes {
        c.arg("--yes");
    }
    c.env("PEDM_LOG", "warn").output().unwrap()
}

#[tokio::test]
async fn a_rolled_back_database_is_refused_until_accepted_and_auditors_still_see_it() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Server::start();
    workload(&s).await;
    let key = pubkey(&s);
    let early = dir.path().join("early.note");
    let early_size = save_checkpoint(&s, &early);
    s.stop();
    let old = dir.path().join("old.db");
    copy_db(&s, &old);
    s.start_again();
    more(&s, 5).await;
    let late = dir.path().join("late.note");
    let late_size = save_checkpoint(&s, &late);
    assert!(late_size > early_size + 4, "{early_size} {late_size}");
    // The untouched log verifies against both saved checkpoints: no false alarm.
    for f in [&early, &late] {
        let o = s.cli(
            &s.admin_token,
            &[
                "audit",
                "verify",
                "--pubkey",
                &key,
                "--require-covered",
                "--trusted-checkpoint",
                f.to_str().unwrap(),
            ],
        );
        assert!(o.status.success(), "{}", stderr(&o));
    }
    s.stop();

    // Restore the old copy: pedmd refuses to start, naming both sizes.
    restore_db(&s, &old);
    let log = s
        .try_start_again()
        .expect_err("must refuse a rolled-back database");
    assert!(
        log.contains(&format!("holds {early_size} events"))
            && log.contains(&format!("checkpoint of {late_size} events")),
        "{log}"
    );
    // Taking it on is explicit.
    let o = accept_rollback(&s, false);
    assert_eq!(o.status.code(), Some(1), "{}", stdout(&o));
    assert!(stderr(&o).contains("--yes"), "{}", stderr(&o));
    let o = accept_rollback(&s, true);
    assert!(o.status.success(), "{}", stderr(&o));
    s.start_again();
    let o = s.cli(
        &s.admin_token,
        &[
            "--json",
            "audit",
            "list",
            "--action",
            "audit.rollback_accepted",
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let events: Vec<serde_json::Value> = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0]["data"]["trusted_head"]["size"], late_size);
    assert_eq!(events[0]["data"]["database_events"], early_size);

    // The auditor who saved the late checkpoint sees the rollback, with both sizes...
    let o = s.cli(
        &s.admin_token,
        &[
            "audit",
            "verify",
            "--pubkey",
            &key,
            "--trusted-checkpoint",
            late.to_str().unwrap(),
        ],
    );
    assert_fails(&o, &[&late_size.to_string(), "trusted checkpoint"]);
    // ...offline too, from an export...
    let export = dir.path().join("after.jsonl");
    let o = s.cli(
        &s.admin_token,
        &["audit", "export", "-o", export.to_str().unwrap()],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let o = offline(&[
        "audit",
        "verify",
        "--file",
        export.to_str().unwrap(),
        "--pubkey",
        &key,
        "--trusted-checkpoint",
        late.to_str().unwrap(),
    ]);
    assert_fails(&o, &[&late_size.to_string(), "trusted checkpoint"]);
    // ...while the log still extends the early checkpoint.
    let o = offline(&[
        "audit",
        "verify",
        "--file",
        export.to_str().unwrap(),
        "--pubkey",
        &key,
        "--trusted-checkpoint",
        early.to_str().unwrap(),
        "--require-covered",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
}

#[tokio::test]
async fn cutting_the_tail_with_its_checkpoints_is_refused_at_start() {
    let mut s = Server::start();
    workload(&s).await;
    let size = sign(&s) as i64;
    s.stop();
    sql(
        &db(&s),
        &format!(
            "DELETE FROM audit_events WHERE seq > {k}; DELETE FROM audit_checkpoints WHERE size > {k};",
            k = size - 4
        ),
    );
    let log = s.try_start_again().expect_err("must refuse");
    assert!(
        log.contains(&format!("holds {} events", size - 4)) && log.contains(&size.to_string()),
        "{log}"
    );
}

// ------------------------------------------------------------------ witness

struct Witness {
    child: Child,
    url: String,
    vkey: String,
}

impl Drop for Witness {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_witness(dir: &Path, log_vkey: &str) -> Witness {
    let mut child = Command::new(env!("CARGO_BIN_EXE_pedmd"))
        .args([
            "witness",
            "--listen",
            "127.0.0.1:0",
            "--name",
            "witness.test/w1",
            "--log",
            log_vkey,
        ])
        .arg("--key")
        .arg(dir.join("witness.key"))
        .arg("--state")
        .arg(dir.join("witness.state"))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    use std::io::BufRead;
    let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let url = lines
        .next()
        .and_then(|l| l.ok())
        .and_then(|l| {
            l.strip_prefix("pedmd witness listening on ")
                .map(String::from)
        })
        .expect("witness url");
    let vkey = lines
        .next()
        .and_then(|l| l.ok())
        .and_then(|l| l.strip_prefix("witness key: ").map(String::from))
        .expect("witness key");
    Witness { child, url, vkey }
}

#[tokio::test]
async fn a_witness_cosigns_growth_and_catches_a_rollback() {
    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("log.key");
    let log_key = pedm_audit::SigningKey::from_seed(&[42; 32]);
    log_key.save(&key_file).unwrap();
    let origin = "pedm.test/audit";
    let log_vkey = log_key.note_vkey(origin).to_string();
    let w = start_witness(dir.path(), &log_vkey);
    let mut s = Server::start_with(Options {
        config: Some(format!(
            "[audit]\nsigning_key = \"{}\"\norigin = \"{origin}\"\n\
             [[audit.witnesses]]\nurl = \"{}\"\nkey = \"{}\"\n",
            key_file.display(),
            w.url,
            w.vkey
        )),
        ..Default::default()
    });
    let key = pubkey(&s);
    let o = s.cli(&s.admin_token, &["audit", "pubkey", "--vkey"]);
    assert_eq!(stdout(&o).trim(), log_vkey);
    workload(&s).await;
    let first = dir.path().join("first.note");
    save_checkpoint(&s, &first);
    s.stop();
    let old_db = dir.path().join("old.db");
    copy_db(&s, &old_db);
    let old_head = dir.path().join("old.head");
    let head = PathBuf::from(format!("{}.head", key_file.display()));
    std::fs::copy(&head, &old_head).unwrap();
    s.start_again();
    more(&s, 3).await;
    let grown = dir.path().join("grown.note");
    let grown_size = save_checkpoint(&s, &grown);
    let text = std::fs::read_to_string(&grown).unwrap();
    assert!(text.contains("\u{2014} witness.test/w1 "), "{text}");
    // The cosignature checks out independently too (C2SP tlog-cosignature, in Python).
    let o = Command::new("python3")
        .args(["-c", PYTHON_COSIGNATURE])
        .arg(&grown)
        .arg(&w.vkey)
        .output()
        .expect("python3");
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    // Growing again: cosigned again.
    more(&s, 2).await;
    let again = dir.path().join("again.note");
    let again_size = save_checkpoint(&s, &again);
    assert!(again_size > grown_size);
    let text = std::fs::read_to_string(&again).unwrap();
    assert!(text.contains("\u{2014} witness.test/w1 "), "{text}");
    let verify_witnessed = |s: &Server| {
        s.cli(
            &s.admin_token,
            &[
                "audit",
                "verify",
                "--pubkey",
                &key,
                "--witnesses",
                "1",
                "--witness-key",
                &w.vkey,
            ],
        )
    };
    let o = verify_witnessed(&s);
    assert!(o.status.success(), "{}", stderr(&o));
    // Offline: the saved note carries the cosignature.
    let export = dir.path().join("e.jsonl");
    let o = s.cli(
        &s.admin_token,
        &["audit", "export", "-o", export.to_str().unwrap()],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let o = offline(&[
        "audit",
        "verify",
        "--file",
        export.to_str().unwrap(),
        "--pubkey",
        &key,
        "--trusted-checkpoint",
        grown.to_str().unwrap(),
        "--witnesses",
        "1",
        "--witness-key",
        &w.vkey,
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    // Requiring a cosignature the note lacks fails.
    let o = offline(&[
        "audit",
        "verify",
        "--file",
        export.to_str().unwrap(),
        "--pubkey",
        &key,
        "--trusted-checkpoint",
        grown.to_str().unwrap(),
        "--witnesses",
        "1",
        "--witness-key",
        &log_key.cosigner_vkey("witness.test/other").to_string(),
    ]);
    assert_fails(&o, &["0 valid witness cosignature"]);
    // The cosignature is kept across a restart.
    s.restart();
    let o = verify_witnessed(&s);
    assert!(o.status.success(), "after a restart: {}", stderr(&o));
    s.stop();

    // The attacker restores the database and the head file together: pedmd starts, but the
    // witness has seen more and refuses to cosign the older (then forked) log.
    restore_db(&s, &old_db);
    std::fs::copy(&old_head, &head).unwrap();
    s.start_again();
    more(&s, 1).await;
    let o = s.cli(&s.admin_token, &["audit", "checkpoint"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = verify_witnessed(&s);
    assert_fails(&o, &["0 valid witness cosignature"]);
    assert!(s.log().contains("rolled back or forked"), "{}", s.log());
    // Growing past the witnessed size does not help: the fork is refused (422).
    more(&s, grown_size as usize).await;
    let o = s.cli(&s.admin_token, &["audit", "checkpoint"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = verify_witnessed(&s);
    assert_fails(&o, &["0 valid witness cosignature"]);
    assert!(s.log().contains("does not extend"), "{}", s.log());
}

// ------------------------------------------------------------------ C2SP notes, independently

const PYTHON_CHECK: &str = r#"
import base64, hashlib, json, sys
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
note, export, pub = open(sys.argv[1]).read(), open(sys.argv[2]).read(), sys.argv[3]
body, sigs = note.split("\n\n", 1)
origin, size, root = body.split("\n")
size, root = int(size), base64.b64decode(root)
key = base64.b64decode(pub.removeprefix("ed25519:"))
kid = hashlib.sha256(origin.encode() + b"\n\x01" + key).digest()[:4]
ok = False
for line in sigs.splitlines():
    name, b64 = line.removeprefix("\u2014 ").split(" ")
    raw = base64.b64decode(b64)
    if name == origin and raw[:4] == kid:
        Ed25519PublicKey.from_public_bytes(key).verify(raw[4:], (body + "\n").encode())
        ok = True
assert ok, "no log signature"
leaves = [bytes.fromhex(json.loads(l)["hash"]) for l in export.splitlines() if l.startswith('{"seq"')]
def mth(d):
    if len(d) == 1: return hashlib.sha256(b"\0" + d[0]).digest()
    k = 1
    while k * 2 < len(d): k *= 2
    return hashlib.sha256(b"\1" + mth(d[:k]) + mth(d[k:])).digest()
assert len(leaves) >= size, (len(leaves), size)
assert mth(leaves[:size]) == root, "root differs"
print("python verified", origin, size)
"#;

const PYTHON_COSIGNATURE: &str = r#"
import base64, hashlib, struct, sys
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
note, vkey = open(sys.argv[1]).read(), sys.argv[2]
name, kid_hex, material = vkey.split("+", 2)
material = base64.b64decode(material)
assert material[0] == 4, "not a cosignature/v1 key"
key = material[1:]
kid = hashlib.sha256(name.encode() + b"\n\x04" + key).digest()[:4]
assert kid.hex() == kid_hex
body, sigs = note.split("\n\n", 1)
for line in sigs.splitlines():
    n, b64 = line.removeprefix("\u2014 ").split(" ")
    raw = base64.b64decode(b64)
    if n == name and raw[:4] == kid:
        (t,) = struct.unpack(">Q", raw[4:12])
        msg = ("cosignature/v1\ntime %d\n" % t + body + "\n").encode()
        Ed25519PublicKey.from_public_bytes(key).verify(raw[12:], msg)
        print("cosigned by", name, "at", t)
        sys.exit(0)
sys.exit("no cosignature by " + name)
"#;

#[tokio::test]
async fn checkpoint_notes_verify_with_an_independent_python_check() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start();
    // Each key created at the first start is named for what it signs.
    let log = s.log();
    assert!(
        log.contains("created the agent snapshot signing key")
            && log.contains("created the audit signing key"),
        "{log}"
    );
    workload(&s).await;
    let key = pubkey(&s);
    let note = dir.path().join("cp.note");
    let size = save_checkpoint(&s, &note);
    let export = dir.path().join("e.jsonl");
    let o = s.cli(
        &s.admin_token,
        &["audit", "export", "-o", export.to_str().unwrap()],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let run = |note: &Path| {
        Command::new("python3")
            .args(["-c", PYTHON_CHECK])
            .arg(note)
            .arg(&export)
            .arg(&key)
            .output()
            .expect("python3")
    };
    let o = run(&note);
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    assert!(stdout(&o).contains(&format!(" {size}")), "{}", stdout(&o));
    // The same check fails on a note whose size was edited.
    let text = std::fs::read_to_string(&note).unwrap();
    let forged = dir.path().join("forged.note");
    std::fs::write(
        &forged,
        text.replacen(&format!("\n{size}\n"), &format!("\n{}\n", size - 1), 1),
    )
    .unwrap();
    assert!(!run(&forged).status.success());
    // pedm rejects it too.
    let o = offline(&[
        "audit",
        "verify",
        "--file",
        export.to_str().unwrap(),
        "--pubkey",
        &key,
        "--trusted-checkpoint",
        forged.to_str().unwrap(),
    ]);
    assert_fails(&o, &["not signed"]);
}

#[tokio::test]
async fn consistency_from_any_earlier_size_and_show_one_event() {
    let s = Server::start();
    workload(&s).await;
    let key = pubkey(&s);
    let size = sign(&s);
    let from = (size / 2).to_string();
    let o = s.cli(
        &s.admin_token,
        &["audit", "consistency", &from, "--pubkey", &key],
    );
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    assert!(stdout(&o).contains("VERIFIED"), "{}", stdout(&o));
    let o = s.cli(
        &s.admin_token,
        &[
            "audit",
            "consistency",
            &from,
            &size.to_string(),
            "--pubkey",
            &key,
        ],
    );
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    // TO must be signed.
    let o = s.cli(
        &s.admin_token,
        &[
            "audit",
            "consistency",
            "1",
            &(size - 1).to_string(),
            "--pubkey",
            &key,
        ],
    );
    assert_eq!(o.status.code(), Some(1), "{}", stdout(&o));
    assert!(
        stdout(&o).contains("no signed checkpoint of this size"),
        "{}",
        stdout(&o)
    );

    let o = s.cli(&s.admin_token, &["audit", "show", "2"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("matches its hash"), "{}", stdout(&o));
    let o = s.cli(&s.admin_token, &["--json", "audit", "show", "2"]);
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(v["event"]["seq"], 2);
    assert_eq!(v["content_matches_hash"], true);
    let o = s.cli(&s.admin_token, &["audit", "show", "99999"]);
    assert_fails(&o, &["audit event 99999 not found"]);
}

/// Proofs come from the Merkle tree the server keeps as it checks the log (its subtrees of a
/// block of events and more), reading at most two blocks of event hashes: over many blocks they
/// verify; and an event hash rewritten in the database after the server checked it is caught
/// by the proof that reads its block (409, naming the block), after which everything fails
/// closed.
#[tokio::test]
async fn proofs_across_blocks_verify_and_a_hash_rewritten_after_the_check_is_caught() {
    let s = Server::start();
    workload(&s).await;
    more(&s, 300).await;
    let key = pubkey(&s);
    let a = sign(&s);
    assert!(a > 600, "{a}");
    more(&s, 5).await;
    let b = sign(&s);
    let verified = |args: &[&str]| {
        let o = s.cli(&s.admin_token, args);
        assert!(o.status.success(), "{args:?}: {}{}", stdout(&o), stderr(&o));
        assert!(
            stdout(&o).contains("VERIFIED") && !stdout(&o).contains("NOT VERIFIED"),
            "{args:?}: {}",
            stdout(&o)
        );
    };
    let (a_s, b_s) = (a.to_string(), b.to_string());
    for seq in [1, 3, 256, 257, 300, 512, 513, a, a + 1, b] {
        let seq = seq.to_string();
        verified(&["audit", "prove", &seq, "--pubkey", &key]);
    }
    for seq in [1, 255, 300, a] {
        let seq = seq.to_string();
        verified(&["audit", "prove", &seq, "--size", &a_s, "--pubkey", &key]);
    }
    for from in ["1", "255", "256", "300", "512", &a_s] {
        verified(&["audit", "consistency", from, &b_s, "--pubkey", &key]);
    }

    // Event 300 rewritten while the server runs: the proof reads its block and finds it changed.
    let block = 299 / pedm_audit::BLOCK;
    let leaves = format!(
        "leaves {}..{}",
        block * pedm_audit::BLOCK,
        (block + 1) * pedm_audit::BLOCK
    );
    let hash = format!("X'{}'", "AB".repeat(32));
    sql(
        &db(&s),
        &format!("UPDATE audit_events SET hash = {hash} WHERE seq = 300"),
    );
    let (status, body) = raw(&s, false, "/audit/proof/inclusion?seq=300").await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["error"]["code"], "audit_integrity", "{body}");
    let msg = body["error"]["message"].as_str().unwrap_or_default();
    assert!(
        msg.contains("rewritten after they were checked") && msg.contains(&leaves),
        "{msg}"
    );
    assert_fail_closed(&s, "rewritten after they were checked").await;
}

// ------------------------------------------------------------------ the same on PostgreSQL

async fn pg_exec(url: &str, statements: &str) {
    use sqlx::Connection;
    let mut c = sqlx::PgConnection::connect(url).await.expect("connect");
    sqlx::raw_sql(sqlx::AssertSqlSafe(statements.to_string()))
        .execute(&mut c)
        .await
        .expect("tamper");
    c.close().await.unwrap();
}

#[tokio::test]
async fn postgres_tampering_is_caught_and_the_untouched_log_verifies() {
    let Some(pg) = pedm_store::testing::TestPostgres::start_or_skip() else {
        return;
    };
    let cases: [(&str, &str); 3] = [
        ("", ""),
        (
            "UPDATE audit_events SET actor = 'mallory' WHERE seq = 5",
            "event 5: altered",
        ),
        ("DELETE FROM audit_events WHERE seq = 6", "event 6: missing"),
    ];
    for (i, (tamper, says)) in cases.into_iter().enumerate() {
        let url = pg.fresh_database(&format!("tamper{i}")).expect("database");
        let mut s = Server::start_with(Options {
            database_url: Some(url.clone()),
            ..Default::default()
        });
        workload(&s).await;
        let key = pubkey(&s);
        sign(&s);
        s.stop();
        if !tamper.is_empty() {
            pg_exec(&url, tamper).await;
        }
        s.start_again();
        if tamper.is_empty() {
            // No false alarm.
            let o = s.cli(
                &s.admin_token,
                &["audit", "verify", "--pubkey", &key, "--require-covered"],
            );
            assert!(o.status.success(), "{}", stderr(&o));
            let (status, _) = raw(&s, false, "/audit/export").await;
            assert_eq!(status, 200);
        } else {
            assert_fail_closed(&s, says).await;
        }
    }
    // Cutting the tail (head row included) with its checkpoints: refused at start.
    let url = pg.fresh_database("tamper_cut").expect("database");
    let mut s = Server::start_with(Options {
        database_url: Some(url.clone()),
        ..Default::default()
    });
    workload(&s).await;
    let size = sign(&s) as i64;
    s.stop();
    pg_exec(
        &url,
        &format!(
            "DELETE FROM audit_events WHERE seq > {k}; DELETE FROM audit_checkpoints WHERE size > {k}; \
             UPDATE audit_head SET seq = {k}, hash = (SELECT hash FROM audit_events WHERE seq = {k});",
            k = size - 2
        ),
    )
    .await;
    let log = s.try_start_again().expect_err("must refuse");
    assert!(
        log.contains(&format!("holds {} events", size - 2)) && log.contains(&size.to_string()),
        "{log}"
    );
}

// ------------------------------------------------------------------ loud

async fn integrity_notice(
    rx: &mut tokio::sync::mpsc::UnboundedReceiver<serde_json::Value>,
) -> serde_json::Value {
    tokio::time::timeout(std::time::Duration::from_secs(20), async {
        loop {
            let v = rx.recv().await.expect("receiver open");
            if v["kind"] == "audit.integrity" {
                return v;
            }
        }
    })
    .await
    .expect("an audit.integrity notification")
}

#[tokio::test]
async fn a_broken_or_rolled_back_log_raises_a_high_severity_notice() {
    let (url, mut rx) = receiver().await;
    let mut s = Server::start_with(Options {
        config: Some(format!(
            "[[notify.webhook]]\nname = \"security\"\nurl = \"{url}\"\nsecret = \"k\"\n"
        )),
        ..Default::default()
    });
    workload(&s).await;
    let size = sign(&s);
    s.stop();
    sql(&db(&s), "DELETE FROM audit_events WHERE seq = 6");
    s.start_again();
    let n = integrity_notice(&mut rx).await;
    assert_eq!(n["severity"], "high", "{n}");
    assert!(
        n["summary"].as_str().unwrap().contains("event 6: missing"),
        "{n}"
    );
    s.stop();
    sql(
        &db(&s),
        "DELETE FROM audit_events WHERE seq > 3; DELETE FROM audit_checkpoints; \
         UPDATE audit_head SET seq = 3, hash = (SELECT hash FROM audit_events WHERE seq = 3);",
    );
    assert!(s.try_start_again().is_err());
    let n = integrity_notice(&mut rx).await;
    let summary = n["summary"].as_str().unwrap();
    assert!(
        summary.contains("ROLLBACK")
            && summary.contains("holds 3 events")
            && summary.contains(&size.to_string()),
        "{n}"
    );
}

/// A tail cut while its checkpoints stay: once the rollback is accepted, the checkpoints that
/// sign the lost events are retired (listed in full in the event), so the log can grow past
/// their sizes again and be signed, instead of colliding with them for ever.
#[tokio::test]
async fn accepting_a_rollback_retires_the_checkpoints_of_lost_events() {
    let mut s = Server::start();
    workload(&s).await;
    let size = sign(&s) as i64;
    s.stop();
    let kept = size - 4;
    sql(
        &db(&s),
        &format!("DELETE FROM audit_events WHERE seq > {kept};"),
    );
    s.try_start_again().expect_err("must refuse");
    let o = accept_rollback(&s, true);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stdout(&o).contains(&format!("1 checkpoints beyond {kept} events removed")),
        "{}",
        stdout(&o)
    );
    s.start_again();
    more(&s, 6).await;
    let grown = sign(&s) as i64;
    assert!(
        grown > size,
        "signed again past the retired size: {grown} > {size}"
    );
    let o = s.cli(
        &s.admin_token,
        &[
            "--json",
            "audit",
            "list",
            "--action",
            "audit.rollback_accepted",
        ],
    );
    let events: Vec<serde_json::Value> = serde_json::from_str(&stdout(&o)).unwrap();
    let retired = events[0]["data"]["retired_checkpoints"]
        .as_array()
        .expect("the retired checkpoints are listed");
    assert_eq!(retired.len(), 1, "{retired:?}");
    assert_eq!(retired[0]["size"], size);
    // And the whole log, rollback included, verifies and is covered.
    let key = pubkey(&s);
    let o = s.cli(
        &s.admin_token,
        &["audit", "verify", "--pubkey", &key, "--require-covered"],
    );
    assert!(o.status.success(), "{}", stderr(&o));
}
