//! The webhook provisioner against a real local HTTP receiver (axum on 127.0.0.1) that checks
//! signatures with `pedm_notify::verify_signature`.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use pedm_provision::{
    GrantSpec, ProvisionError, Provisioner, StandingPrivilege, WebhookConfig, WebhookProvisioner,
};
use serde_json::{Value, json};
use uuid::Uuid;

#[derive(Default)]
struct Inner {
    present: bool,
    /// Answer every call with this status instead.
    force_status: Option<u16>,
    delay: Duration,
    seen: Vec<(String, Value)>,
}

#[derive(Clone)]
struct Receiver {
    secret: Vec<u8>,
    inner: Arc<Mutex<Inner>>,
}

async fn handle(
    State(r): State<Receiver>,
    headers: HeaderMap,
    body: Bytes,
) -> (StatusCode, String) {
    let h = |n: &str| {
        headers
            .get(n)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string()
    };
    if let Err(e) = pedm_notify::verify_signature(
        &r.secret,
        &h(pedm_notify::TIMESTAMP_HEADER),
        &h(pedm_notify::SIGNATURE_HEADER),
        &body,
        jiff::Timestamp::now(),
        Duration::from_secs(300),
    ) {
        return (StatusCode::UNAUTHORIZED, format!("bad signature: {e}"));
    }
    let delay = r.inner.lock().unwrap().delay;
    tokio::time::sleep(delay).await;
    let msg: Value = serde_json::from_slice(&body).unwrap();
    let action = msg["action"].as_str().unwrap().to_string();
    let mut inner = r.inner.lock().unwrap();
    inner.seen.push((h(pedm_notify::KIND_HEADER), msg));
    if let Some(s) = inner.force_status {
        return (StatusCode::from_u16(s).unwrap(), "nope".into());
    }
    let reply = match action.as_str() {
        "grant" => {
            inner.present = true;
            json!({"secret": "tok-123", "detail": "added to admins"})
        }
        "revoke" => {
            inner.present = false;
            return (StatusCode::NO_CONTENT, String::new());
        }
        "observe" => json!({"present": inner.present}),
        "discover" => {
            json!([{"account": "owner@example.com", "privilege": "org-owner", "source": "saas"}])
        }
        "remove_standing" => json!({"detail": "removed from the org owners"}),
        _ => return (StatusCode::BAD_REQUEST, "unknown action".into()),
    };
    (StatusCode::OK, reply.to_string())
}

async fn receiver(secret: &str) -> (Receiver, String) {
    let r = Receiver {
        secret: secret.as_bytes().to_vec(),
        inner: Arc::default(),
    };
    let app = Router::new()
        .route("/hook", post(handle))
        .with_state(r.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (r, format!("http://{addr}/hook"))
}

fn spec() -> GrantSpec {
    GrantSpec {
        grant_id: Uuid::now_v7(),
        user: "alice".into(),
        target: "saas".into(),
        role: "org-admin".into(),
        run_as: None,
        expires_at: jiff::Timestamp::now() + jiff::SignedDuration::from_hours(1),
        settings: json!({"team": "admins"}),
    }
}

fn provisioner(url: &str, secret: &str) -> WebhookProvisioner {
    let mut c = WebhookConfig::new(url, secret);
    c.timeout = Duration::from_secs(2);
    WebhookProvisioner::new("saas", c).unwrap()
}

#[tokio::test]
async fn signed_round_trip_with_secret() {
    let (r, url) = receiver("hook-key").await;
    let p = provisioner(&url, "hook-key");
    let g = spec();
    assert!(!p.observe(&g).await.unwrap().present);
    let out = p.grant(&g).await.unwrap();
    assert_eq!(out.secret.as_deref(), Some("tok-123"));
    assert_eq!(out.detail, "added to admins");
    assert!(p.observe(&g).await.unwrap().present);
    p.revoke(&g).await.unwrap();
    assert!(!p.observe(&g).await.unwrap().present);
    let found = p.discover().await.unwrap();
    assert_eq!(found[0].privilege, "org-owner");

    let seen = r.inner.lock().unwrap().seen.clone();
    let kinds: Vec<&str> = seen.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(
        kinds,
        [
            "provision.observe",
            "provision.grant",
            "provision.observe",
            "provision.revoke",
            "provision.observe",
            "provision.discover"
        ]
    );
    let (_, grant_body) = &seen[1];
    assert_eq!(grant_body["action"], "grant");
    assert_eq!(grant_body["target"], "saas");
    let sent: GrantSpec = serde_json::from_value(grant_body["grant"].clone()).unwrap();
    assert_eq!(sent, g);
    assert_eq!(seen[5].1["grant"], Value::Null);
}

#[tokio::test]
async fn statuses_map_to_retry_or_refuse() {
    let (r, url) = receiver("k").await;
    let p = provisioner(&url, "k");
    for (status, retry) in [
        (500, true),
        (503, true),
        (429, true),
        (403, false),
        (404, false),
    ] {
        r.inner.lock().unwrap().force_status = Some(status);
        let e = p.revoke(&spec()).await.unwrap_err();
        assert_eq!(e.is_retryable(), retry, "{status}: {e:?}");
        if retry {
            assert!(matches!(e, ProvisionError::Unreachable(_)), "{e:?}");
        } else {
            assert!(matches!(e, ProvisionError::Refused(_)), "{e:?}");
        }
        assert!(e.to_string().contains(&status.to_string()), "{e}");
    }
    r.inner.lock().unwrap().force_status = None;

    // A wrong key: the receiver refuses it (401), permanent.
    let e = provisioner(&url, "wrong").grant(&spec()).await.unwrap_err();
    assert!(matches!(e, ProvisionError::Refused(_)), "{e:?}");
    assert!(e.to_string().contains("bad signature"), "{e}");

    // Too slow: retry later.
    r.inner.lock().unwrap().delay = Duration::from_secs(5);
    let e = p.grant(&spec()).await.unwrap_err();
    assert!(matches!(e, ProvisionError::Unreachable(_)), "{e:?}");
    assert!(e.to_string().contains("timed out"), "{e}");
}

#[tokio::test]
async fn nobody_listening_is_unreachable() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let p = provisioner(&format!("http://127.0.0.1:{port}/hook"), "k");
    let e = p.revoke(&spec()).await.unwrap_err();
    assert!(matches!(e, ProvisionError::Unreachable(_)), "{e:?}");
}

#[tokio::test]
async fn signs_with_the_previous_key_during_rotation() {
    let (_r, url) = receiver("old-key").await;
    let mut c = WebhookConfig::new(&url, "new-key");
    c.previous_secret = Some("old-key".into());
    assert!(!format!("{c:?}").contains("key"), "{c:?}");
    let p = WebhookProvisioner::new("saas", c).unwrap();
    p.grant(&spec()).await.unwrap();
}

#[test]
fn configuration_is_checked() {
    assert!(WebhookProvisioner::new("t", WebhookConfig::new("ftp://x/", "k")).is_err());
    assert!(WebhookProvisioner::new("t", WebhookConfig::new("not a url", "k")).is_err());
    assert!(WebhookProvisioner::new("t", WebhookConfig::new("http://x/", "")).is_err());
    // A ca_file that holds no certificate is named, not ignored.
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad-ca.pem");
    std::fs::write(&bad, "no certificate here\n").unwrap();
    let mut c = WebhookConfig::new("https://x/", "k");
    c.ca_file = Some(bad);
    let e = WebhookProvisioner::new("t", c).unwrap_err().to_string();
    assert!(e.contains("bad-ca.pem") && e.contains("CERTIFICATE"), "{e}");
}

#[tokio::test]
async fn remove_standing_sends_the_finding() {
    let (r, url) = receiver("k").await;
    let p = provisioner(&url, "k");
    let found = StandingPrivilege {
        account: "owner@example.com".into(),
        privilege: "org-owner".into(),
        source: "saas".into(),
    };
    assert_eq!(p.removable(&found), Ok(()));
    assert_eq!(
        p.remove_standing(&found).await.unwrap(),
        "removed from the org owners"
    );
    let (kind, body) = r.inner.lock().unwrap().seen.last().cloned().unwrap();
    assert_eq!(kind, "provision.remove_standing");
    assert_eq!(body["grant"], Value::Null);
    assert_eq!(
        body["standing"],
        json!({"account": "owner@example.com", "privilege": "org-owner", "source": "saas"})
    );
    r.inner.lock().unwrap().force_status = Some(503);
    let e = p.remove_standing(&found).await.unwrap_err();
    assert!(e.is_retryable(), "{e:?}");
}
