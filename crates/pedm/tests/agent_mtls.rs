//! Agents over HTTPS authenticate with short-lived client certificates from pedmd's client CA:
//! `pedm-agent enroll` spends the registration token once for a certificate whose key is made
//! on the host; the agent renews it with the current one; a bearer host token is refused; a
//! certificate of another CA is refused at the handshake, and so is a revoked host's.
//! Real binaries: `pedmd --dev`, `pedm`, `pedm-agent`.

mod common;

use common::agent::*;
use common::*;
use pedm_api::*;
use x509_parser::prelude::*;

async fn https_server() -> (Server, serde_json::Value) {
    let s = Server::start_with(Options {
        dev: true,
        ..Default::default()
    });
    standard_targets(&s).await;
    let out = s.cli(&s.admin_token, &["--json", "host", "register", "web1"]);
    assert!(out.status.success(), "{}", stderr(&out));
    (s, serde_json::from_slice(&out.stdout).unwrap())
}

fn pem_san_host(pem: &str) -> Option<String> {
    let (_, p) = parse_x509_pem(pem.as_bytes()).ok()?;
    let c = p.parse_x509().ok()?;
    let san = c.subject_alternative_name().ok()??;
    san.value.general_names.iter().find_map(|n| match n {
        GeneralName::URI(u) => Some(u.to_string()),
        _ => None,
    })
}

/// A client authenticating with the agent's certificate and key.
fn agent_client(s: &Server, agent: &Agent) -> Client {
    let mut pem = std::fs::read(agent.dir().join("agent-cert.pem")).unwrap();
    pem.extend(std::fs::read(agent.dir().join("agent-key.pem")).unwrap());
    Client::with_identity(&s.url, s.ca().as_deref(), &pem).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_enrolls_for_a_client_certificate_renews_it_and_is_cut_off_when_revoked() {
    if !root_or_skip("agent_mtls") {
        return;
    }
    let (s, reg) = https_server().await;
    let token = reg["token"].as_str().unwrap();
    let key = reg["server_key"].as_str().unwrap();
    assert!(reg["enroll_expires_at"].is_string(), "{reg}");

    // Enrollment writes a certificate for web1 and a private key only root can read, and a
    // configuration without the token.
    let agent = Agent::start_enrolled(&s, token, key);
    agent.wait_snapshot(0, None);
    let config = std::fs::read_to_string(agent.config_path()).unwrap();
    assert!(
        config.contains("cert_file") && !config.contains("token_file"),
        "{config}"
    );
    let cert = std::fs::read_to_string(agent.dir().join("agent-cert.pem")).unwrap();
    assert_eq!(pem_san_host(&cert).as_deref(), Some("urn:pedm:host:web1"));
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(agent.dir().join("agent-key.pem"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o077, 0, "key mode {mode:o}");
    let hosts = s.admin().list_hosts().await.unwrap();
    assert!(hosts[0].enrolled_at.is_some() && hosts[0].cert_not_after.is_some());

    // The agent works over its certificate: a grant reaches it.
    let alice = s.client(&user_with_token(&s, "alice", false).await);
    alice
        .create_request(&req("web1", "docker", "10m", "build"))
        .await
        .unwrap();
    agent.wait_snapshot(1, None);

    // The token was spent: enrolling again with it is refused, and recorded.
    let again = s
        .client(token)
        .agent_enroll("not even a CSR")
        .await
        .unwrap_err();
    assert_eq!(again.status(), Some(401), "{again}");
    let refused = audit_of(&s, "host.enroll").await;
    assert!(refused.iter().any(|e| {
        e.outcome == Outcome::Denied
            && e.data["reason"]
                .as_str()
                .unwrap_or("")
                .contains("used already")
    }));
    // Over HTTPS a host token is not a credential for the agent routes.
    let e = s.client(token).agent_snapshot().await.unwrap_err();
    assert_eq!(e.status(), Some(401), "{e}");
    assert!(e.to_string().contains("client certificate"), "{e}");

    // Renewal with the current certificate: a new key, a new serial.
    let c = agent_client(&s, &agent);
    let (_, csr) = pedm_agent::identity::new_key_and_csr("web1").unwrap();
    let renewed = c.agent_renew(&csr).await.unwrap();
    let first = s.admin().list_hosts().await.unwrap()[0].clone();
    assert_eq!(
        pem_san_host(&renewed.certificate).as_deref(),
        Some("urn:pedm:host:web1")
    );
    assert_eq!(audit_of(&s, "host.cert_renewed").await.len(), 1);
    assert!(first.cert_not_after.is_some());
    // A CSR that is not one is refused (422: well-formed JSON the server cannot act on).
    let e = c
        .agent_renew(
            "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n",
        )
        .await
        .unwrap_err();
    assert_eq!(e.status(), Some(422), "{e}");
    assert!(e.to_string().contains("csr"), "{e}");

    // A certificate for web1 from another CA never passes the handshake.
    let rogue_key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut p = rcgen::CertificateParams::default();
    p.subject_alt_names = vec![rcgen::SanType::URI(
        "urn:pedm:host:web1".try_into().unwrap(),
    )];
    let rogue = p.self_signed(&rogue_key).unwrap();
    let pem = format!("{}{}", rogue.pem(), rogue_key.serialize_pem());
    let e = Client::with_identity(&s.url, s.ca().as_deref(), pem.as_bytes())
        .unwrap()
        .agent_snapshot()
        .await
        .unwrap_err();
    assert_eq!(
        e.status(),
        None,
        "refused at the handshake, not by a handler: {e}"
    );

    // Revoked: the agent's certificate fails at the handshake at once, the running agent's
    // stream ends and it cannot come back.
    let o = s.cli(
        &s.admin_token,
        &["host", "revoke", "web1", "--reason", "disk stolen"],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("revoked"), "{}", stdout(&o));
    let e = agent_client(&s, &agent).agent_snapshot().await.unwrap_err();
    assert_eq!(e.status(), None, "refused at the handshake: {e}");
    agent.wait_for("the server refusing it", |l| {
        l.contains("server unreachable")
    });
    assert_eq!(
        audit_of(&s, "host.revoked").await[0].data["reason"],
        "disk stolen"
    );
}

#[tokio::test]
async fn enrollment_refuses_a_bad_or_unknown_token_and_plain_http_has_no_certificates() {
    let (s, reg) = https_server().await;
    let token = reg["token"].as_str().unwrap();
    let (_, csr) = pedm_agent::identity::new_key_and_csr("web1").unwrap();
    // A wrong secret with the right id, and an unknown token: 401, nothing issued.
    let id = token.split('_').nth(1).unwrap();
    let forged = format!("pedm_{id}_{}", "A".repeat(43));
    for t in [forged.as_str(), "pedm_0000000000000000_bad"] {
        let e = s.client(t).agent_enroll(&csr).await.unwrap_err();
        assert_eq!(e.status(), Some(401), "{e}");
    }
    assert!(
        s.admin().list_hosts().await.unwrap()[0]
            .enrolled_at
            .is_none()
    );
    // The real token still works once.
    let cert = s.client(token).agent_enroll(&csr).await.unwrap();
    assert!(cert.ca.contains("BEGIN CERTIFICATE"));

    // On a plain-HTTP (loopback) server agents keep their host token; there is no CA.
    let plain = Server::start();
    standard_targets(&plain).await;
    let r = plain.admin().register_host("web1").await.unwrap();
    assert!(r.enroll_expires_at.is_none());
    let e = plain.client(&r.token).agent_enroll(&csr).await.unwrap_err();
    assert_eq!(e.status(), Some(404), "{e}");
    plain
        .client(&r.token)
        .agent_snapshot()
        .await
        .expect("token works on plain HTTP");
}
