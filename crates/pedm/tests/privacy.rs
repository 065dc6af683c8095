//! Privacy-preserving audit: personal data in audit events sealed under a key per data
//! subject, erasure by destroying the key (the chain still verifies, the data is unreadable
//! in the API, exports and the database file), legal holds.

mod common;

use common::*;
use pedm_api::{AuditQuery, UpdateUser};

const WHO: &str = "zelda-subject";
const WHY: &str = "NEEDLE-justification-7781";
const MAIL: &str = "zelda.needle@example.org";

fn privacy_server(dir: &std::path::Path) -> Server {
    let kek = kek_file(dir, "kek");
    Server::start_with(Options {
        config: Some(format!(
            "{}[privacy]\nseal_personal_data = true\n",
            with_kek(&kek)
        )),
        ..Default::default()
    })
}

async fn events(s: &Server, q: AuditQuery) -> Vec<pedm_api::AuditEvent> {
    s.admin().audit_events(&q).await.expect("audit events")
}

fn text_of(events: &[pedm_api::AuditEvent]) -> String {
    serde_json::to_string(events).unwrap()
}

/// Every file pedmd keeps its database in (with the WAL), as bytes.
fn database_bytes(s: &Server) -> Vec<u8> {
    let mut all = vec![];
    for entry in std::fs::read_dir(s.data_path()).unwrap() {
        let p = entry.unwrap().path();
        let name = p.file_name().unwrap().to_string_lossy().to_string();
        if name.contains(".db") || name.contains("sqlite") {
            all.extend(std::fs::read(&p).unwrap_or_default());
        }
    }
    assert!(
        !all.is_empty(),
        "no database file in {}",
        s.data_path().display()
    );
    all
}

fn contains(hay: &[u8], needle: &str) -> bool {
    hay.windows(needle.len()).any(|w| w == needle.as_bytes())
}

fn assert_fails(o: &std::process::Output, words: &[&str]) {
    assert!(!o.status.success(), "should fail: {}", stdout(o));
    for w in words {
        assert!(stderr(o).contains(w), "{w:?} not in {}", stderr(o));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn erasing_a_subject_leaves_the_chain_verifying_and_their_data_unreadable() {
    let dir = tempfile::tempdir().unwrap();
    let s = privacy_server(dir.path());
    standard_targets(&s).await;
    let admin = s.admin();
    admin
        .create_user(&pedm_api::CreateUser {
            name: WHO.into(),
            display_name: Some("Zelda Needle".into()),
            email: Some(MAIL.into()),
            admin: false,
        })
        .await
        .unwrap();
    let token = admin
        .create_token(&pedm_api::CreateToken {
            user: Some(WHO.into()),
            ..Default::default()
        })
        .await
        .unwrap()
        .token;
    let zelda = s.client(&token);
    let created = zelda
        .create_request(&req("web1", "docker", "30m", WHY))
        .await
        .unwrap();
    let grant = created.grant.expect("auto-approved").id;

    // Read through the API, personal data is opened; filters by actor still work.
    let mine = events(
        &s,
        AuditQuery {
            actor: Some(WHO.into()),
            ..Default::default()
        },
    )
    .await;
    assert!(
        mine.iter().any(|e| e.action == "request.created"),
        "{mine:?}"
    );
    assert!(mine.iter().all(|e| e.actor == WHO));
    assert!(text_of(&mine).contains(WHY));
    let about = events(
        &s,
        AuditQuery {
            subject: Some(format!("user:{WHO}")),
            ..Default::default()
        },
    )
    .await;
    assert!(about.iter().any(|e| e.action == "user.created"));
    assert!(text_of(&about).contains(MAIL));

    // As stored, it is sealed: not one name, mail or justification in the clear, and every
    // event's content matches its hash.
    let stored = events(
        &s,
        AuditQuery {
            sealed: Some(true),
            ..Default::default()
        },
    )
    .await;
    let stored_text = text_of(&stored);
    for plain in [WHO, WHY, MAIL, "Zelda Needle"] {
        assert!(!stored_text.contains(plain), "{plain} stored in the clear");
    }
    assert!(stored_text.contains("sealed:v1:"));
    pedm_core::audit::verify_chain(pedm_core::audit::GENESIS_HASH, 1, &stored).unwrap();

    let erase_args = [
        "privacy",
        "erase",
        "--user",
        WHO,
        "--reason",
        "ticket GDPR-1",
    ];
    let erase = || s.cli(&s.admin_token, &erase_args);
    // Erasure is refused while Zelda is active, while she holds a grant, under legal hold;
    // each refusal is audited and changes nothing.
    let o = erase();
    assert_fails(&o, &["active user", "disable them first"]);
    admin
        .update_user(
            WHO,
            &UpdateUser {
                disabled: Some(true),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let o = erase();
    assert_fails(&o, &["1 live grant"]);
    admin
        .revoke_grant(
            grant,
            &pedm_api::Reason {
                reason: Some("leaving".into()),
            },
        )
        .await
        .unwrap();
    let o = s.cli(
        &s.admin_token,
        &[
            "privacy",
            "hold",
            "--user",
            WHO,
            "--reason",
            "litigation 2026-77",
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("litigation 2026-77"), "{}", stdout(&o));
    let o = erase();
    assert_fails(&o, &["legal hold", "litigation 2026-77"]);
    let refused = audit_of(&s, "privacy.erase").await;
    assert_eq!(refused.len(), 3, "{refused:?}");
    assert!(
        refused
            .iter()
            .all(|e| e.outcome == pedm_api::Outcome::Denied)
    );
    assert!(
        text_of(&mine_now(&s).await).contains(WHY),
        "nothing erased yet"
    );
    let o = s.cli(&s.admin_token, &["privacy", "release", "--user", WHO]);
    assert!(o.status.success(), "{}", stderr(&o));

    // Before the erasure her justification is in the database (the requests table): the
    // check below can see it.
    assert!(contains(&database_bytes(&s), WHY));

    // Erased: her key is gone.
    let o = s.cli(&s.admin_token, &[&["--json"], &erase_args[..]].concat());
    assert!(o.status.success(), "{}", stderr(&o));
    let erasure: pedm_api::privacy::Erasure = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(erasure.pseudonym, format!("erased:{}", erasure.key_id));
    let o = s.cli(
        &s.admin_token,
        &["privacy", "erase", "--user", WHO, "-r", "again"],
    );
    assert!(!o.status.success(), "a second erasure has nothing to erase");

    // The API: her events are still there, reading [erased]; others' are untouched.
    let all = events(&s, AuditQuery::default()).await;
    let created_ev = all
        .iter()
        .find(|e| {
            e.action == "request.created"
                && e.subject.as_deref() == Some(&format!("request:{}", created.request.id))
        })
        .expect("request.created is still in the log");
    assert_eq!(created_ev.actor, "[erased]");
    assert_eq!(created_ev.data["justification"], "[erased]");
    let user_created = all
        .iter()
        .find(|e| e.action == "user.created" && e.actor == "admin");
    assert!(user_created.is_some());
    let all_text = text_of(&all);
    for plain in [WHO, WHY, MAIL, "Zelda Needle"] {
        assert!(!all_text.contains(plain), "{plain} still readable");
    }
    assert!(
        events(
            &s,
            AuditQuery {
                actor: Some(WHO.into()),
                ..Default::default()
            }
        )
        .await
        .is_empty()
    );
    let erased_ev = all.iter().find(|e| e.action == "privacy.erased").unwrap();
    assert_eq!(erased_ev.actor, "admin");
    assert_eq!(erased_ev.subject.as_deref(), Some("user:[erased]"));
    // The operational tables: her request and user row carry the pseudonym.
    let reqs = admin
        .list_requests(&pedm_api::RequestQuery::default())
        .await
        .unwrap();
    let r = reqs.iter().find(|r| r.id == created.request.id).unwrap();
    assert_eq!(r.requester, erasure.pseudonym);
    assert_eq!(r.justification, "[erased]");

    // The chain verifies live and from an export; the export holds nothing of hers.
    let key = s.anonymous().audit_pubkey().await.unwrap().public_key;
    let o = s.cli(&s.admin_token, &["audit", "verify", "--pubkey", &key]);
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    let file = dir.path().join("export.jsonl");
    let f = file.to_str().unwrap();
    let o = s.cli(&s.admin_token, &["audit", "export", "-o", f]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = verify_file(&file, &key, &["--require-covered"]);
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    let export = std::fs::read(&file).unwrap();
    for plain in [WHO, WHY, MAIL, "Zelda Needle"] {
        assert!(!contains(&export, plain), "{plain} in the export");
    }

    // And the database files themselves (pedmd stopped: nothing left in memory to flush).
    let mut s = s;
    s.stop();
    let db = database_bytes(&s);
    for plain in [WHO, WHY, MAIL, "Zelda Needle"] {
        assert!(!contains(&db, plain), "{plain} still in the database file");
    }
}

async fn mine_now(s: &Server) -> Vec<pedm_api::AuditEvent> {
    events(
        s,
        AuditQuery {
            actor: Some(WHO.into()),
            ..Default::default()
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn privacy_needs_a_kek_and_erasure_needs_sealing() {
    // Sealing without a KEK stops pedmd at start, saying why.
    let err = Server::try_start_with(Options {
        config: Some("[privacy]\nseal_personal_data = true\n".into()),
        ..Default::default()
    })
    .err()
    .expect("pedmd must refuse");
    assert!(err.contains("needs key_encryption_key"), "{err}");

    // Without sealing, erasure is refused with how to switch it on; nothing is erased.
    let s = Server::start();
    user_with_token(&s, "yann", false).await;
    let o = s.cli(
        &s.admin_token,
        &["privacy", "erase", "--user", "yann", "-r", "x"],
    );
    assert_fails(&o, &["seal_personal_data"]);
    // A name that is not a user name never reaches the server.
    let o = s.cli(&s.admin_token, &["privacy", "status", "--user", "../admin"]);
    assert_fails(&o, &["not a valid user name"]);
    // Only manage_users may erase or hold.
    let t = user_with_token(&s, "xena", false).await;
    let o = s.cli(&t, &["privacy", "hold", "--user", "yann", "-r", "x"]);
    assert!(!o.status.success());
    assert!(
        audit_of(&s, "privacy.hold_set")
            .await
            .iter()
            .any(|e| e.outcome == pedm_api::Outcome::Denied && e.actor == "xena")
    );
}
