//! Audit retention: the oldest events archived to a segment that verifies on its own, then
//! pruned from the database; the rest of the log still verifies live, after a restart and from
//! an export; legal holds and the retention period stop it.

mod common;

use common::*;
use pedm_api::AuditQuery;

fn ok(o: &std::process::Output) -> String {
    assert!(o.status.success(), "{}{}", stdout(o), stderr(o));
    stdout(o)
}

#[tokio::test(flavor = "multi_thread")]
async fn old_events_are_archived_verifiably_then_pruned_and_the_log_still_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let kek = kek_file(dir.path(), "kek");
    let mut s = Server::start_with(Options {
        config: Some(format!(
            "{}[privacy]\nseal_personal_data = true\n[audit]\nretention = \"1s\"\n",
            with_kek(&kek)
        )),
        ..Default::default()
    });
    standard_targets(&s).await;
    user_with_token(&s, "hal", false).await;
    let old = sign_checkpoint(&s);
    let key = s.anonymous().audit_pubkey().await.unwrap().public_key;
    // The scenario: those events grow older than the retention period.
    sleep_past(jiff::Timestamp::now() + jiff::SignedDuration::from_millis(1100)).await;
    user_with_token(&s, "ivy", false).await;
    sign_checkpoint(&s);
    let seg = dir.path().join("segment.jsonl");
    let seg_path = seg.to_str().unwrap();

    // A legal hold keeps the whole log: the segment is written and verified, nothing pruned.
    ok(&s.cli(
        &s.admin_token,
        &["privacy", "hold", "--user", "hal", "-r", "case 9"],
    ));
    let o = s.cli(&s.admin_token, &["audit", "archive", "-o", seg_path]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("legal hold on hal"), "{}", stderr(&o));
    assert!(
        audit_of(&s, "audit.prune")
            .await
            .iter()
            .any(|e| e.outcome == pedm_api::Outcome::Denied)
    );
    std::fs::remove_file(&seg).unwrap();
    ok(&s.cli(&s.admin_token, &["privacy", "release", "--user", "hal"]));

    // Archived: up to the checkpoint whose events are all older than the retention.
    let out = ok(&s.cli(&s.admin_token, &["audit", "archive", "-o", seg_path]));
    assert!(out.contains(&format!("events 1..={old}")), "{out}");
    // The segment verifies on its own, offline, with the public key.
    let v = ok(&offline(&[
        "--json",
        "audit",
        "verify",
        "--file",
        seg_path,
        "--pubkey",
        &key,
        "--require-covered",
    ]));
    let v: serde_json::Value = serde_json::from_str(&v).unwrap();
    assert_eq!(v["events"], old);
    // The server keeps no event content up to there; what is left starts after it.
    let left = s
        .admin()
        .audit_events(&AuditQuery::default())
        .await
        .unwrap();
    assert_eq!(left[0].seq, old as i64 + 1, "{:?}", left[0]);
    let pruned = audit_of(&s, "audit.pruned").await;
    assert_eq!(pruned.len(), 1);
    assert_eq!(pruned[0].data["through"], old);
    let digest = {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(std::fs::read(&seg).unwrap()))
    };
    assert_eq!(pruned[0].data["archive_sha256"], digest);

    // The rest verifies live (from the pruned start), after a restart, and from an export.
    let live = |s: &Server| {
        s.cli(
            &s.admin_token,
            &["audit", "verify", "--pubkey", &key, "--require-covered"],
        )
    };
    sign_checkpoint(&s);
    assert!(ok(&live(&s)).contains(&format!("1..={old}")));
    s.restart();
    sign_checkpoint(&s);
    ok(&live(&s));
    let export = dir.path().join("export.jsonl");
    let export_path = export.to_str().unwrap();
    ok(&s.cli(&s.admin_token, &["audit", "export", "-o", export_path]));
    ok(&verify_file(&export, &key, &["--require-covered"]));
    let text = std::fs::read_to_string(&export).unwrap();
    assert!(text.lines().any(|l| l.starts_with("{\"pruned\"")));
    assert!(
        !text.contains("\"seq\":1,"),
        "no pruned event in the export"
    );

    // An altered segment or export fails.
    let seg_text = std::fs::read_to_string(&seg).unwrap();
    let line = seg_text
        .lines()
        .find(|l| l.contains("\"action\":\"target.created\""))
        .expect("an event in the segment");
    let bad = dir.path().join("bad-segment.jsonl");
    std::fs::write(
        &bad,
        seg_text.replacen(line, &line.replace("web1", "web2"), 1),
    )
    .unwrap();
    let o = verify_file(&bad, &key, &[]);
    assert!(!o.status.success());
    let base_line = text.lines().find(|l| l.starts_with("{\"pruned\"")).unwrap();
    let mut base: serde_json::Value = serde_json::from_str(base_line).unwrap();
    base["pruned"]["peaks"][0] = serde_json::json!("00".repeat(32));
    let bad = dir.path().join("bad-export.jsonl");
    std::fs::write(&bad, text.replacen(base_line, &base.to_string(), 1)).unwrap();
    let o = verify_file(&bad, &key, &[]);
    assert!(!o.status.success(), "{}", stdout(&o));

    // Nothing older is left to archive; the retention period protects recent events.
    let again = dir.path().join("again.jsonl");
    let o = s.cli(
        &s.admin_token,
        &["audit", "archive", "-o", again.to_str().unwrap()],
    );
    assert!(!o.status.success());
    assert!(!again.exists(), "a refused archive leaves no file");

    // Later, the next segment: it starts where the first ended, and holds the event that
    // recorded the first pruning.
    let second = sign_checkpoint(&s);
    sleep_past(jiff::Timestamp::now() + jiff::SignedDuration::from_millis(1100)).await;
    let out = ok(&s.cli(
        &s.admin_token,
        &["audit", "archive", "-o", again.to_str().unwrap()],
    ));
    assert!(
        out.contains(&format!("events {}..={second}", old + 1)),
        "{out}"
    );
    let seg2 = std::fs::read_to_string(&again).unwrap();
    assert!(seg2.lines().any(|l| l.starts_with("{\"pruned\"")));
    ok(&verify_file(&again, &key, &["--require-covered"]));
    assert_eq!(
        audit_of(&s, "audit.pruned").await.len(),
        1,
        "the first one is pruned now"
    );
    sign_checkpoint(&s);
    ok(&live(&s));
}

#[tokio::test(flavor = "multi_thread")]
async fn without_a_retention_period_nothing_is_archived() {
    let s = Server::start();
    let size = sign_checkpoint(&s);
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("seg.jsonl");
    let o = s.cli(
        &s.admin_token,
        &["audit", "archive", "-o", f.to_str().unwrap()],
    );
    assert!(!o.status.success());
    assert!(stderr(&o).contains("no retention period"), "{}", stderr(&o));
    assert!(!f.exists());
    // Pruning directly is refused and audited too.
    let e = s
        .admin()
        .prune_audit(&pedm_api::PruneAudit {
            through: size as i64,
            archive_sha256: "ab".repeat(32),
        })
        .await
        .unwrap_err();
    assert!(e.to_string().contains("no retention period"), "{e}");
    assert!(
        audit_of(&s, "audit.prune")
            .await
            .iter()
            .any(|e| e.outcome == pedm_api::Outcome::Denied)
    );
}
