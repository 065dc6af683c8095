//! The tamper-evident audit log end to end: the real `pedmd` signs checkpoints, the real `pedm`
//! verifies the live log and exports with only the public key, proofs verify, and edits to the
//! real SQLite file (made with the `sqlite3` tool while the server is down) are caught and named.

mod common;

use common::*;
use pedm_api::*;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

fn req(target: &str, role: &str, justification: &str) -> CreateRequest {
    CreateRequest {
        target: target.into(),
        role: role.into(),
        duration: "30m".into(),
        justification: justification.into(),
        task: None,
        ticket: None,
        break_glass: false,
        start: None,
    }
}

/// Users, a target, auto-approved and approved requests, a release: a few dozen events.
async fn workload(s: &Server) -> (Client, Client) {
    standard_targets(s).await;
    let alice = s.client(&user_with_token(s, "alice", false).await);
    let bob = s.client(&user_with_token(s, "bob", true).await);
    for i in 0..3 {
        let c = alice
            .create_request(&req("web1", "docker", &format!("deploy {i}")))
            .await
            .expect("docker request");
        let g = c.grant.expect("auto-approved");
        // Released before the next: a second live grant of one role is refused.
        if i < 2 {
            alice
                .release_grant(
                    g.id,
                    &Reason {
                        reason: Some("done".into()),
                    },
                )
                .await
                .expect("release");
        }
    }
    let mut r = req("web1", "root", "patch openssl");
    r.ticket = Some("CHG-7".into());
    let c = alice.create_request(&r).await.expect("root request");
    bob.approve_request(
        c.request.id,
        &Decide {
            comment: Some("ok".into()),
        },
    )
    .await
    .expect("approve");
    (alice, bob)
}

fn pubkey(s: &Server) -> String {
    let o = s.cli(&s.admin_token, &["audit", "pubkey"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let k = stdout(&o).trim().to_string();
    assert!(k.starts_with("ed25519:"), "{k}");
    k
}

fn verify_live(s: &Server, key: &str) -> std::process::Output {
    s.cli(&s.admin_token, &["audit", "verify", "--pubkey", key])
}

fn db(s: &Server) -> PathBuf {
    s.data_path().join("pedm.db")
}

fn sql(db: &Path, statements: &str) {
    let o = Command::new("sqlite3")
        .arg(db)
        .arg(statements)
        .output()
        .expect("sqlite3 (install the sqlite3 command-line tool)");
    assert!(o.status.success(), "sqlite3: {}", stderr(&o));
}

fn count(db: &Path) -> i64 {
    let o = Command::new("sqlite3")
        .arg(db)
        .arg("SELECT COUNT(*) FROM audit_events")
        .output()
        .expect("sqlite3");
    stdout(&o).trim().parse().expect("count")
}

/// Runs the workload, signs a checkpoint, stops the server, applies `tamper` to the database,
/// starts it again, and returns the live verify's output.
async fn tampered(tamper: impl FnOnce(&Path, i64)) -> (Server, std::process::Output, String) {
    let mut s = Server::start();
    workload(&s).await;
    let key = pubkey(&s);
    let size = sign_checkpoint(&s);
    let ok = verify_live(&s, &key);
    assert!(ok.status.success(), "before tampering: {}", stderr(&ok));
    s.stop();
    tamper(&db(&s), size as i64);
    s.start_again();
    let o = verify_live(&s, &key);
    (s, o, key)
}

fn assert_fails(o: &std::process::Output, needles: &[&str]) {
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

#[tokio::test]
async fn live_verify_export_and_offline_verify() {
    let s = Server::start();
    workload(&s).await;
    let key = pubkey(&s);
    // No checkpoint yet (the schedule is 60 s): the chain verifies, with a warning, and
    // --require-covered refuses.
    let o = verify_live(&s, &key);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("not covered"), "{}", stdout(&o));
    let o = s.cli(
        &s.admin_token,
        &["audit", "verify", "--pubkey", &key, "--require-covered"],
    );
    assert_fails(&o, &["not covered"]);

    let size = sign_checkpoint(&s);
    assert!(size > 10, "{size}");
    let o = s.cli(
        &s.admin_token,
        &["audit", "verify", "--pubkey", &key, "--require-covered"],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("OK"), "{}", stdout(&o));

    // Export (signs a fresh checkpoint of the head first) and verify offline: no server URL,
    // no token, only the public key.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("export.jsonl");
    let f = file.to_str().unwrap();
    let o = s.cli(
        &s.admin_token,
        &["audit", "export", "--format", "jsonl", "-o", f],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let o = offline(&[
        "audit",
        "verify",
        "--file",
        f,
        "--pubkey",
        &key,
        "--require-covered",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = std::fs::read_to_string(&file).unwrap();
    let events = text.lines().filter(|l| l.starts_with("{\"seq\":")).count();
    assert!(
        stdout(&o).contains(&format!("events  {events}"))
            || stdout(&o).contains(&events.to_string())
    );

    // --file without --pubkey is a usage error; a wrong key fails.
    let o = offline(&["audit", "verify", "--file", f]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let other = "ed25519:".to_string() + "A".repeat(43).as_str() + "=";
    let o = offline(&["audit", "verify", "--file", f, "--pubkey", &other]);
    assert_ne!(o.status.code(), Some(0));

    // One changed field in the export file: named by seq and line.
    let lines: Vec<&str> = text.lines().collect();
    let (idx, line) = lines
        .iter()
        .enumerate()
        .find(|(_, l)| l.contains("\"seq\":4,"))
        .unwrap();
    let forged = line.replacen("\"actor\":\"", "\"actor\":\"x", 1);
    let mut edited = lines.clone();
    edited[idx] = &forged;
    let bad = dir.path().join("bad.jsonl");
    std::fs::write(&bad, edited.join("\n") + "\n").unwrap();
    let o = offline(&[
        "audit",
        "verify",
        "--file",
        bad.to_str().unwrap(),
        "--pubkey",
        &key,
    ]);
    assert_fails(&o, &["event 4", "altered", &format!("line {}", idx + 1)]);

    // Cut off the tail (events and end line): truncated.
    let cut = dir.path().join("cut.jsonl");
    std::fs::write(&cut, lines[..lines.len() - 4].join("\n") + "\n").unwrap();
    let o = offline(&[
        "audit",
        "verify",
        "--file",
        cut.to_str().unwrap(),
        "--pubkey",
        &key,
    ]);
    assert_fails(&o, &["truncated"]);

    // CSV and OCSF exports stream too.
    let o = s.cli(&s.admin_token, &["audit", "export", "--format", "csv"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).starts_with("seq,at,actor,action,outcome,subject,data,prev_hash,hash"));
    let o = s.cli(&s.admin_token, &["audit", "export", "--format", "ocsf"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let first: serde_json::Value =
        serde_json::from_str(stdout(&o).lines().next().unwrap()).unwrap();
    assert_eq!(first["metadata"]["sequence"], 1);

    // A non-admin may not read or sign.
    let carol = user_with_token(&s, "carol", false).await;
    let o = s.cli(&carol, &["audit", "checkpoint"]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let o = s.cli(&carol, &["audit", "export"]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
}

#[tokio::test]
async fn tamper_change_one_field() {
    let (_s, o, _) = tampered(|db, _| {
        sql(
            db,
            "UPDATE audit_events SET actor = 'mallory' WHERE seq = 5",
        );
    })
    .await;
    assert_fails(&o, &["event 5", "altered"]);
}

#[tokio::test]
async fn tamper_delete_one_event() {
    let (s, o, _) = tampered(|db, _| {
        sql(db, "DELETE FROM audit_events WHERE seq = 6");
    })
    .await;
    assert_fails(&o, &["event 6", "missing"]);
    // The server noticed too, and refuses to sign over the damage.
    let o = s.cli(&s.admin_token, &["audit", "checkpoint"]);
    assert_eq!(o.status.code(), Some(1), "{}", stdout(&o));
    assert!(stderr(&o).contains("refusing to sign"), "{}", stderr(&o));
}

#[tokio::test]
async fn tamper_swap_two_events() {
    let (_s, o, _) = tampered(|db, _| {
        sql(
            db,
            "UPDATE audit_events SET seq = -1 WHERE seq = 7; \
             UPDATE audit_events SET seq = 7 WHERE seq = 8; \
             UPDATE audit_events SET seq = 8 WHERE seq = -1;",
        );
    })
    .await;
    // Event 7 is now the old event 8: it does not link to event 6.
    assert_fails(&o, &["event 7"]);
}

#[tokio::test]
async fn tamper_truncate_the_tail() {
    // The checkpoints stay, the tail goes: the trusted head beside the key (and the stored
    // checkpoints) sign more events than the database holds, so pedmd refuses to start.
    let mut s = Server::start();
    workload(&s).await;
    let size = sign_checkpoint(&s) as i64;
    s.stop();
    sql(
        &db(&s),
        &format!("DELETE FROM audit_events WHERE seq > {}", size - 3),
    );
    assert_eq!(count(&db(&s)), size - 3);
    let log = s
        .try_start_again()
        .expect_err("pedmd must not start on a truncated log");
    assert!(
        log.contains(&format!("holds {} events", size - 3))
            && log.contains(&format!("checkpoint of {size} events")),
        "{log}"
    );
}

#[tokio::test]
async fn tamper_insert_a_forged_event() {
    let (_s, o, _) = tampered(|db, size| {
        // Make room after event 3 and insert a well-formed event chained to event 3.
        let out = Command::new("sqlite3")
            .arg(db)
            .arg("SELECT hex(hash) FROM audit_events WHERE seq = 3")
            .output()
            .unwrap();
        let prev_hex = stdout(&out).trim().to_lowercase();
        let mut prev = [0u8; 32];
        for (i, b) in prev.iter_mut().enumerate() {
            *b = u8::from_str_radix(&prev_hex[2 * i..2 * i + 2], 16).unwrap();
        }
        let e = pedm_core::audit::chain(
            4,
            prev,
            pedm_core::audit::NewAuditEvent::new(
                jiff::Timestamp::from_second(1_800_000_000).unwrap(),
                "admin",
                "user.created",
                Some("user:mallory".into()),
            ),
        );
        let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02X}")).collect::<String>();
        sql(
            db,
            &format!(
                "UPDATE audit_events SET seq = seq + 1000000 WHERE seq > 3; \
                 UPDATE audit_events SET seq = seq - 999999 WHERE seq > 1000000; \
                 INSERT INTO audit_events (seq, at, actor, action, outcome, subject, data, \
                 prev_hash, hash) VALUES (4, {}, 'admin', 'user.created', 'success', \
                 'user:mallory', '{{}}', X'{}', X'{}');",
                e.at.as_microsecond(),
                hex(&e.prev_hash),
                hex(&e.hash)
            ),
        );
        assert_eq!(count(db), size + 1);
    })
    .await;
    // The forged event itself is consistent; the next one no longer links (and the signed
    // root no longer matches).
    assert_fails(&o, &["event 5"]);
}

#[tokio::test]
async fn tamper_replace_the_signing_key() {
    let (s, o, key) = tampered(|_, _| {}).await;
    assert!(o.status.success(), "untouched log: {}", stderr(&o));
    let mut s = s;
    s.stop();
    let key_file = s.data_path().join("audit.key");
    std::fs::remove_file(&key_file).unwrap();
    s.start_again();
    let new_key = pubkey(&s);
    assert_ne!(new_key, key);
    // The server says so (the trusted head beside the key was signed by the old one).
    eventually(Duration::from_secs(10), "key change reported", || async {
        s.log().contains("the signing key changed").then_some(())
    })
    .await;
    user_with_token(&s, "dave", false).await;
    sign_checkpoint(&s);
    // With the key the auditor holds: the new checkpoint is not signed by it.
    assert_fails(&verify_live(&s, &key), &["wrong key"]);
    // Trusting the server's (new) key: the old checkpoints are not signed by it.
    assert_fails(&verify_live(&s, &new_key), &["wrong key"]);
}

#[tokio::test]
async fn crash_during_writes_loses_no_acknowledged_event() {
    let mut s = Server::start();
    standard_targets(&s).await;
    let alice_token = user_with_token(&s, "alice", false).await;
    let key = pubkey(&s);
    let acked: Arc<Mutex<Vec<String>>> = Arc::default();
    let mut tasks = vec![];
    for w in 0..8 {
        let c = s.client(&alice_token);
        let acked = acked.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0.. {
                match c
                    // Pending requests: any number may be open at once.
                    .create_request(&req("web1", "root", &format!("w{w} i{i}")))
                    .await
                {
                    Ok(r) => acked.lock().unwrap().push(r.request.id.to_string()),
                    Err(_) => break,
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    s.kill();
    for t in tasks {
        let _ = t.await;
    }
    let acked = acked.lock().unwrap().clone();
    assert!(
        acked.len() > 10,
        "only {} writes before the kill",
        acked.len()
    );
    s.start_again();
    let o = verify_live(&s, &key);
    assert!(o.status.success(), "{}", stderr(&o));
    let a = s.admin();
    let all = a
        .audit_events(&AuditQuery {
            action: Some("request.created".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    let recorded: std::collections::HashSet<String> =
        all.iter().filter_map(|e| e.subject.clone()).collect();
    for id in &acked {
        assert!(
            recorded.contains(&format!("request:{id}")),
            "acknowledged request {id} has no request.created event"
        );
        a.get_request(id.parse().unwrap())
            .await
            .unwrap_or_else(|e| panic!("acknowledged request {id} is missing: {e}"));
    }
    // The restarted server signs over the recovered log, and it still verifies.
    sign_checkpoint(&s);
    let o = s.cli(
        &s.admin_token,
        &["audit", "verify", "--pubkey", &key, "--require-covered"],
    );
    assert!(o.status.success(), "{}", stderr(&o));
}

#[tokio::test]
async fn inclusion_and_consistency_proofs() {
    let s = Server::start();
    workload(&s).await;
    let key = pubkey(&s);
    let a = sign_checkpoint(&s);
    s.admin().list_users().await.unwrap();
    user_with_token(&s, "carol", false).await;
    let b = sign_checkpoint(&s);
    assert!(b > a, "{a} {b}");

    let o = s.cli(&s.admin_token, &["audit", "prove", "3", "--pubkey", &key]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(
        out.contains("VERIFIED") && !out.contains("NOT VERIFIED"),
        "{out}"
    );
    assert!(
        out.contains(&format!("tree size          {b}")) || out.contains(&b.to_string()),
        "{out}"
    );
    assert!(out.contains("path[0]"), "{out}");

    let o = s.cli(
        &s.admin_token,
        &[
            "audit",
            "prove",
            "3",
            "--size",
            &a.to_string(),
            "--pubkey",
            &key,
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));

    let o = s.cli(
        &s.admin_token,
        &[
            "audit",
            "consistency",
            &a.to_string(),
            &b.to_string(),
            "--pubkey",
            &key,
        ],
    );
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    assert!(stdout(&o).contains("VERIFIED"), "{}", stdout(&o));

    // The same proof, checked here with pedm-audit directly.
    let p = s
        .admin()
        .consistency_proof(&ConsistencyQuery {
            from: a,
            to: Some(b),
        })
        .await
        .unwrap();
    let h = |x: &str| -> [u8; 32] {
        let mut o = [0u8; 32];
        for (i, b) in o.iter_mut().enumerate() {
            *b = u8::from_str_radix(&x[2 * i..2 * i + 2], 16).unwrap();
        }
        o
    };
    let proof: Vec<[u8; 32]> = p.proof.iter().map(|x| h(x)).collect();
    assert_eq!(p.from_checkpoint.as_ref().unwrap().root, p.from_root);
    assert_eq!(p.to_checkpoint.as_ref().unwrap().root, p.to_root);
    pedm_audit::verify_consistency(a, b, &h(&p.from_root), &h(&p.to_root), &proof).unwrap();

    // Past the end: a clear error.
    let o = s.cli(
        &s.admin_token,
        &["audit", "prove", "99999", "--pubkey", &key],
    );
    assert_eq!(o.status.code(), Some(1), "{}", stdout(&o));
    assert!(stderr(&o).contains("not found"), "{}", stderr(&o));
}

#[tokio::test]
async fn elevation_report() {
    let s = Server::start();
    workload(&s).await;
    let o = s.cli(
        &s.admin_token,
        &["report", "elevations", "--since", "30d", "--format", "json"],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let rows: Vec<ElevationRow> = serde_json::from_str(&stdout(&o)).expect("json");
    assert_eq!(rows.len(), 4, "{rows:?}");
    let root = rows.iter().find(|r| r.role == "root").expect("root row");
    assert_eq!(root.user, "alice");
    assert_eq!(root.approvers, vec!["bob".to_string()]);
    assert_eq!(root.ticket.as_deref(), Some("CHG-7"));
    assert_eq!(root.justification.as_deref(), Some("patch openssl"));
    assert!(!root.break_glass);
    assert_eq!(root.state, GrantState::Active);
    let docker: Vec<_> = rows.iter().filter(|r| r.role == "docker").collect();
    assert_eq!(docker.len(), 3);
    assert!(
        docker
            .iter()
            .all(|r| r.approvers.is_empty() && !r.break_glass)
    );
    let released = docker
        .iter()
        .find(|r| r.state == GrantState::Released)
        .expect("released");
    assert_eq!(released.end_reason.as_deref(), Some("done"));
    assert!(released.held_secs >= 0 && released.held_secs < 60);
    assert!(released.ended_at.is_some());
    assert!(
        rows.iter()
            .all(|r| r.requested_at.is_some() && r.requested_at.unwrap() <= r.started_at)
    );

    let o = s.cli(&s.admin_token, &["report", "elevations", "--format", "csv"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let csv = stdout(&o);
    assert!(
        csv.starts_with("USER,TARGET,ROLE,REQUESTED,STARTED"),
        "{csv}"
    );
    assert_eq!(csv.lines().count(), 5);
    assert!(csv.contains(",bob,no,"), "{csv}");

    let o = s.cli(&s.admin_token, &["report", "elevations"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("CHG-7"));

    let o = s.cli(
        &s.admin_token,
        &["report", "elevations", "--since", "forever"],
    );
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("invalid since"), "{}", stderr(&o));

    // Nothing held in a window that starts in the future.
    let rows = s
        .admin()
        .elevation_report(&ReportQuery {
            since: Some("2100-01-01T00:00:00Z".into()),
        })
        .await
        .unwrap();
    assert!(rows.is_empty());
}

#[tokio::test]
async fn a_new_kek_takes_over_the_sealed_keys_without_a_new_identity() {
    let keys = tempfile::tempdir().expect("tempdir");
    let (old, new) = (kek_file(keys.path(), "old"), kek_file(keys.path(), "new"));
    let mut s = Server::start_with(Options {
        config: Some(with_kek(&old)),
        ..Default::default()
    });
    let key = s.anonymous().audit_pubkey().await.unwrap().public_key;
    s.admin().sign_audit_checkpoint().await.unwrap();

    // The new KEK with the old one still given: the keys are sealed again under the new one.
    s.reconfigure(
        Some(&format!(
            "{}previous_key_encryption_keys = [{:?}]\n",
            with_kek(&new),
            old
        )),
        &[],
    );
    assert_eq!(s.anonymous().audit_pubkey().await.unwrap().public_key, key);
    let resealed = audit_of(&s, "key.resealed").await;
    assert_eq!(resealed.len(), 2, "audit and agent keys: {resealed:?}");
    assert!(resealed.iter().all(|e| e.actor == "system"));
    // From now on the new KEK alone opens them, the old one no longer does.
    s.reconfigure(Some(&with_kek(&new)), &[]);
    assert_eq!(s.anonymous().audit_pubkey().await.unwrap().public_key, key);
    assert_eq!(
        audit_of(&s, "key.resealed").await.len(),
        2,
        "sealed again only once"
    );
    s.stop();
    let log = {
        std::fs::write(s.data_dir.with_extension("toml"), with_kek(&old)).unwrap();
        s.try_start_again()
            .expect_err("the old KEK alone no longer opens the keys")
    };
    assert!(
        log.contains("sealed under another key-encryption key"),
        "{log}"
    );
    // Checkpoints from before and after the change verify with the one key.
    std::fs::write(s.data_dir.with_extension("toml"), with_kek(&new)).unwrap();
    s.start_again();
    s.admin().sign_audit_checkpoint().await.unwrap();
    let o = s.cli(&s.admin_token, &["audit", "verify", "--pubkey", &key]);
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
}
