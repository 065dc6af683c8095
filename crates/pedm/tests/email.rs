//! Approving from mail, end to end, against a real SMTP server (aiosmtpd, STARTTLS and AUTH
//! required): each approver who may decide a request gets a multipart mail with a link of
//! their own; the link opens the console page only for that approver once signed in (coming
//! back to the link after sign-in), acts by a POST with the CSRF token, once; requesters hear
//! of their grant. A relay that is down is retried and counted.

mod common;

use common::smtp::{MailServer, Received};
use common::*;
use pedm_api::RequestState;
use reqwest::StatusCode;
use reqwest::header::{CONTENT_TYPE, COOKIE, LOCATION, SET_COOKIE};
use std::time::Duration;

const FORM: &str = "application/x-www-form-urlencoded";

/// A form body, every byte but letters and digits percent-encoded.
fn form(pairs: &[(&str, &str)]) -> String {
    let enc = |s: &str| {
        s.bytes()
            .map(|b| {
                if b.is_ascii_alphanumeric() {
                    (b as char).to_string()
                } else {
                    format!("%{b:02X}")
                }
            })
            .collect::<String>()
    };
    pairs
        .iter()
        .map(|(k, v)| format!("{}={}", enc(k), enc(v)))
        .collect::<Vec<_>>()
        .join("&")
}

fn browser() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client")
}

/// The value of cookie `name` that a response sets.
fn set_cookie(r: &reqwest::Response, name: &str) -> Option<String> {
    r.headers().get_all(SET_COOKIE).iter().find_map(|h| {
        let v = h.to_str().ok()?;
        let (k, rest) = v.split_once('=')?;
        (k == name).then(|| rest.split(';').next().unwrap_or("").to_string())
    })
}

fn link_in(mail: &Received, base: &str) -> String {
    let text = mail.part("text/plain");
    let start = text
        .find(&format!("{base}/ui/mail/"))
        .unwrap_or_else(|| panic!("no link in:\n{text}"));
    text[start..]
        .split_whitespace()
        .next()
        .expect("link")
        .to_string()
}

fn csrf_in(page: &str) -> String {
    let at = page.find("name=\"csrf\" value=\"").expect("a CSRF field") + 19;
    page[at..].split('"').next().expect("csrf").to_string()
}

/// Signs in to the console with a pedm token, carrying the cookie a mail link left; returns
/// the session cookie and where the console sends the browser next.
async fn sign_in(b: &reqwest::Client, s: &Server, token: &str, back: &str) -> (String, String) {
    let r = b
        .post(format!("{}/ui/sign-in", s.url))
        .header("Origin", &s.url)
        .header(COOKIE, format!("__Host-pedm_return={back}"))
        .header(CONTENT_TYPE, FORM)
        .body(form(&[("token", token)]))
        .send()
        .await
        .expect("sign in");
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let session = set_cookie(&r, "__Host-pedm_session").expect("a session cookie");
    let to = r.headers()[LOCATION].to_str().unwrap().to_string();
    (session, to)
}

async fn set_email(s: &Server, user: &str, address: &str) {
    let out = s.cli(&s.admin_token, &["user", "set-email", user, address]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains(address), "{}", stdout(&out));
}

#[tokio::test]
async fn approve_by_mail_link() {
    let mut smtp = MailServer::start(None);
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let s = Server::start_with(Options {
        config: Some(smtp.config(&base)),
        port: Some(port),
        ..Default::default()
    });
    assert_eq!(s.url, base);
    standard_targets(&s).await;
    let alice_token = user_with_token(&s, "alice", false).await;
    let bob_token = user_with_token(&s, "bob", true).await;
    let carol_token = user_with_token(&s, "carol", true).await;
    for u in ["alice", "bob", "carol"] {
        set_email(&s, u, &format!("{u}@example.com")).await;
    }
    // An address that would smuggle in a second recipient is refused and changes nothing.
    let out = s.cli(
        &s.admin_token,
        &[
            "user",
            "set-email",
            "bob",
            "bob@example.com, eve@evil.example",
        ],
    );
    assert!(!out.status.success());
    assert!(stderr(&out).contains("email"), "{}", stderr(&out));
    let users = s.admin().list_users().await.unwrap();
    let bob_user = users.iter().find(|u| u.name == "bob").unwrap();
    assert_eq!(bob_user.email.as_deref(), Some("bob@example.com"));

    let alice = s.client(&alice_token);
    let why = "<script>alert(1)</script> & reboot \"now\"";
    let id = alice
        .create_request(&req("web1", "root", "30m", why))
        .await
        .unwrap()
        .request
        .id;

    // Both admins may decide, each gets a mail of their own; alice (the requester) does not.
    let mut mails = [smtp.next_mail().await, smtp.next_mail().await];
    mails.sort_by_key(|m| m.to.clone());
    assert_eq!(mails[0].to, vec!["bob@example.com"]);
    assert_eq!(mails[1].to, vec!["carol@example.com"]);
    let bob_mail = &mails[0];
    let subject = bob_mail.header("Subject").unwrap();
    assert!(subject.contains("alice asks for root on web1"), "{subject}");
    assert!(
        bob_mail
            .header("Content-Type")
            .unwrap()
            .starts_with("multipart/alternative"),
        "{}",
        bob_mail.raw
    );
    let html = bob_mail.part("text/html");
    assert!(!html.contains("<script>"), "{html}");
    assert!(
        html.contains("&lt;script&gt;alert(1)&lt;/script&gt; &amp; reboot &quot;now&quot;"),
        "{html}"
    );
    assert!(bob_mail.part("text/plain").contains(why));
    // How unusual the request is, for the approver.
    assert!(
        bob_mail
            .part("text/plain")
            .contains("first elevation on web1"),
        "{}",
        bob_mail.raw
    );
    let bob_link = link_in(bob_mail, &base);
    let carol_link = link_in(&mails[1], &base);
    assert_ne!(bob_link, carol_link);
    let path = bob_link.strip_prefix(&base).unwrap().to_string();

    // Opened without a session: sign in first, and come back here afterwards.
    let b = browser();
    let r = b.get(&bob_link).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(r.headers()[LOCATION], "/ui/sign-in");
    assert_eq!(
        set_cookie(&r, "__Host-pedm_return").as_deref(),
        Some(path.as_str())
    );

    // carol signs in and opens bob's link: refused and recorded.
    let (carol_session, to) = sign_in(&b, &s, &carol_token, &path).await;
    assert_eq!(to, path);
    let r = b
        .get(&bob_link)
        .header(COOKIE, format!("__Host-pedm_session={carol_session}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert!(r.text().await.unwrap().contains("another approver"));
    let refused = wait_event(&s, "email.refused", &format!("request:{id}")).await;
    assert_eq!(refused.actor, "carol");

    // bob signs in, comes back to his link, sees the request, approves with one POST.
    let (bob_session, to) = sign_in(&b, &s, &bob_token, &path).await;
    assert_eq!(to, path);
    let bob_cookie = format!("__Host-pedm_session={bob_session}");
    let r = b
        .get(&bob_link)
        .header(COOKIE, &bob_cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let page = r.text().await.unwrap();
    assert!(page.contains("alice asks for root on web1"), "{page}");
    assert!(!page.contains("<script>alert"), "{page}");
    let csrf = csrf_in(&page);
    // Without the CSRF token nothing happens.
    let r = b
        .post(&bob_link)
        .header(COOKIE, &bob_cookie)
        .header("Origin", &s.url)
        .header(CONTENT_TYPE, FORM)
        .body(form(&[("decision", "approve")]))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert_eq!(
        alice.get_request(id).await.unwrap().request.state,
        RequestState::Pending
    );
    let r = b
        .post(&bob_link)
        .header(COOKIE, &bob_cookie)
        .header("Origin", &s.url)
        .header(CONTENT_TYPE, FORM)
        .body(form(&[("csrf", csrf.as_str()), ("decision", "approve")]))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(r.headers()[LOCATION], format!("/ui/requests/{id}").as_str());
    let got = alice.get_request(id).await.unwrap();
    assert_eq!(got.request.state, RequestState::Approved);
    assert_eq!(got.approvals[0].approver, "bob");

    // The link acts once.
    let r = b
        .post(&bob_link)
        .header(COOKIE, &bob_cookie)
        .header("Origin", &s.url)
        .header(CONTENT_TYPE, FORM)
        .body(form(&[
            ("csrf", csrf.as_str()),
            ("decision", "deny"),
            ("comment", "again"),
        ]))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CONFLICT);
    assert!(r.text().await.unwrap().contains("used already"));
    // A link pedm did not sign is refused.
    let mut forged = bob_link.clone();
    let last = forged.pop().unwrap();
    forged.push(if last == 'A' { 'B' } else { 'A' });
    let r = b
        .get(&forged)
        .header(COOKIE, &bob_cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let reasons: Vec<String> = audit_of(&s, "email.refused")
        .await
        .iter()
        .map(|e| e.data["reason"].as_str().unwrap_or_default().to_string())
        .collect();
    for want in ["another approver", "used already", "not one pedm signed"] {
        assert!(reasons.iter().any(|r| r.contains(want)), "{reasons:?}");
    }

    // alice hears that her access started.
    let started = smtp.next_mail().await;
    assert_eq!(started.to, vec!["alice@example.com"]);
    let subject = started.header("Subject").unwrap();
    assert!(
        subject.contains("your access to root on web1 started"),
        "{subject}"
    );

    // pedm notify status counts what went out: two approvers' mails and alice's (the relay
    // announces a mail just before pedmd reads its answer, hence the wait).
    let status = || {
        let out = s.cli(&s.admin_token, &["notify", "status"]);
        assert!(out.status.success(), "{}", stderr(&out));
        stdout(&out)
            .lines()
            .find(|l| l.starts_with("email"))
            .unwrap_or_else(|| panic!("{}", stdout(&out)))
            .split_whitespace()
            .map(String::from)
            .collect::<Vec<String>>()
    };
    // NAME KIND QUEUED DELIVERED FAILED DROPPED RETRIES
    let cells = eventually(Duration::from_secs(10), "3 mails counted", || async {
        let c = status();
        (c[3] == "3").then_some(c)
    })
    .await;
    assert_eq!(cells[1], "email", "{cells:?}");
    assert_eq!(cells[4], "0", "{cells:?}");
}

#[tokio::test]
async fn a_relay_that_is_down_is_retried_and_counted() {
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    // The relay is down when pedmd starts and when the request comes: the mail waits.
    let mut smtp = MailServer::start(None);
    smtp.stop();
    let config = smtp.config(&base);
    let s = Server::start_with(Options {
        config: Some(config),
        port: Some(port),
        ..Default::default()
    });
    standard_targets(&s).await;
    let alice_token = user_with_token(&s, "alice", false).await;
    user_with_token(&s, "bob", true).await;
    set_email(&s, "bob", "bob@example.com").await;
    s.client(&alice_token)
        .create_request(&req("web1", "root", "30m", "while mail is down"))
        .await
        .unwrap();
    eventually(Duration::from_secs(30), "a retried mail", || async {
        (metric(&s, "pedm_email_failed_attempts_total", "retry=\"yes\"").await >= 1.0).then_some(())
    })
    .await;
    // The relay comes up: the mail goes out.
    smtp.start_again();
    let mail = smtp.next_mail().await;
    assert_eq!(mail.to, vec!["bob@example.com"]);
    // Counted once pedmd has read the relay's answer (the relay announces the mail first).
    eventually(
        Duration::from_secs(10),
        "the mail counted as sent",
        || async { (metric(&s, "pedm_email_sent_total", "").await >= 1.0).then_some(()) },
    )
    .await;
}

#[tokio::test]
async fn a_relay_refusing_the_password_is_a_failure_not_a_retry() {
    let mut smtp = MailServer::start(None);
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let dir = tempfile::tempdir().unwrap();
    let wrong = dir.path().join("wrong-password");
    std::fs::write(&wrong, "not-the-password\n").unwrap();
    let s = Server::start_with(Options {
        config: Some(smtp.config_with(&base, &wrong)),
        port: Some(port),
        ..Default::default()
    });
    standard_targets(&s).await;
    let alice_token = user_with_token(&s, "alice", false).await;
    user_with_token(&s, "bob", true).await;
    set_email(&s, "bob", "bob@example.com").await;
    s.client(&alice_token)
        .create_request(&req("web1", "root", "30m", "with a wrong relay password"))
        .await
        .unwrap();
    let event = smtp.next_event(Duration::from_secs(30)).await;
    assert!(event.get("auth_failed").is_some(), "{event}");
    eventually(Duration::from_secs(30), "the mail given up", || async {
        (metric(&s, "pedm_email_failed_total", "").await >= 1.0).then_some(())
    })
    .await;
    assert_eq!(
        metric(&s, "pedm_email_failed_attempts_total", "retry=\"yes\"").await,
        0.0
    );
    assert!(
        !s.log().contains("not-the-password"),
        "the password is logged"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn holders_are_warned_before_their_grant_ends() {
    let mut smtp = MailServer::start(None);
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    // Warned 100 s before the end: a 2-minute grant is warned 20 s after it starts.
    let config = format!(
        "[notify]\nexpiry_warning = \"100s\"\n{}",
        smtp.config(&base)
    );
    let s = Server::start_with(Options {
        config: Some(config),
        port: Some(port),
        ..Default::default()
    });
    app_target(&s, true).await;
    let alice = s.client(&user_with_token(&s, "alice", false).await);
    set_email(&s, "alice", "alice@example.com").await;
    let long = alice
        .create_request(&req("app", "deploy", "2m", "a short change"))
        .await
        .unwrap()
        .grant
        .expect("granted");
    // Never warned: it lasts no longer than the warning time (the pass that warns the
    // first grant sees it too).
    s.admin()
        .create_role(
            "app",
            &pedm_api::CreateRole {
                auto_approve: true,
                ..pedm_api::CreateRole::new("read", "1h")
            },
        )
        .await
        .unwrap();
    alice
        .create_request(&req("app", "read", "90s", "a quick look"))
        .await
        .unwrap()
        .grant
        .expect("granted");
    let warning = loop {
        let m = smtp.next_mail().await;
        let subject = m.header("subject").unwrap_or_default();
        if subject.contains("ends soon") {
            break m;
        }
        assert!(subject.contains("started"), "{subject}");
    };
    assert!(
        warning
            .header("subject")
            .unwrap_or_default()
            .contains("deploy"),
        "the long grant is the one warned"
    );
    assert_eq!(warning.to, vec!["alice@example.com"]);
    let text = warning.part("text/plain");
    assert!(
        text.contains(&format!("pedm grant extend {}", long.id)),
        "{text}"
    );
    let ev = wait_event(&s, "grant.expiry_warned", &format!("grant:{}", long.id)).await;
    assert_eq!(ev.data["user"], "alice");
    assert!(ev.data["seconds_left"].as_i64().unwrap() <= 100);
    assert_eq!(audit_of(&s, "grant.expiry_warned").await.len(), 1);
}
