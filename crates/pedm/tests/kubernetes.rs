//! A `kubernetes` target end to end through pedmd: a grant binds the holder's service account,
//! and the official `kubernetes` Python client, with `pedm kube credentials` as its kubeconfig
//! exec credential plugin, is that service account until the grant ends, then refused.
//!
//! No Kubernetes API server runs on this machine: the cluster is the protocol-faithful stand-in
//! of `crates/provision/tests/support/kube_standin.rs` (HTTPS, bound service-account tokens
//! refused once their Secret is deleted), which the provisioner conformance tests check
//! against the same official client.

mod common;

#[allow(dead_code)]
#[path = "../../provision/tests/support/kube_standin.rs"]
mod kube_standin;
#[allow(dead_code)]
#[path = "../../provision/tests/support/standin.rs"]
mod standin;

use common::*;
use kube_standin::KubeStandIn;
use pedm_api::{CreateRole, CreateTarget, TargetKind};
use std::path::Path;

/// A kubeconfig in `dir` for alice on the stand-in, whose user runs `pedm kube credentials
/// --target k8s-prod` as its exec credential plugin against `s` with `token`.
fn kubeconfig(dir: &Path, kube: &KubeStandIn, s: &Server, token: &str) -> std::path::PathBuf {
    let path = dir.join("kubeconfig");
    std::fs::write(
        &path,
        format!(
            r#"apiVersion: v1
kind: Config
clusters:
- name: prod
  cluster:
    server: {url}
    certificate-authority: {ca}
users:
- name: alice
  user:
    exec:
      apiVersion: client.authentication.k8s.io/v1
      command: {pedm}
      args: [kube, credentials, --target, k8s-prod]
      env:
      - name: PEDM_URL
        value: {server}
      - name: PEDM_TOKEN
        value: {token}
      interactiveMode: Never
contexts:
- name: prod
  context: {{cluster: prod, user: alice}}
current-context: prod
"#,
            url = kube.tls.url,
            ca = kube.tls.ca_file.display(),
            pedm = env!("CARGO_BIN_EXE_pedm"),
            server = s.url,
        ),
    )
    .unwrap();
    path
}

/// What the official client, through the kubeconfig's exec plugin, is told it is.
async fn whoami(kubeconfig: &Path) -> Result<String, String> {
    let out = tokio::process::Command::new(standin::cloud_python())
        .arg(standin::cloud_script("kube_whoami.py"))
        .arg(kubeconfig)
        .output()
        .await
        .expect("running kube_whoami.py");
    let said = String::from_utf8_lossy(&out.stdout).trim().to_string();
    if out.status.success() {
        Ok(said)
    } else {
        Err(format!("{said} {}", String::from_utf8_lossy(&out.stderr)))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kubectl_style_exec_credentials_follow_the_grant() {
    let kube = KubeStandIn::start(&[("pedm-token", "pedm-controller")]).await;
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, "pedm-token").unwrap();
    let config = format!(
        r#"
[provision.targets.k8s-prod]
kind = "kubernetes"
api_url = "{url}"
ca_file = "{ca}"
token_file = "{token}"

[provision.roles.k8s-prod.deployer]
cluster_role = "edit"
namespace = "payments"
service_account = "pedm-{{user}}"
"#,
        url = kube.tls.url,
        ca = kube.tls.ca_file.display(),
        token = token_file.display(),
    );
    let s = Server::start_with(Options {
        config: Some(config),
        ..Default::default()
    });
    let a = s.admin();
    a.create_target(&CreateTarget {
        name: "k8s-prod".into(),
        kind: TargetKind::Kubernetes,
        description: Some("the production cluster".into()),
        labels: Default::default(),
    })
    .await
    .unwrap();
    a.create_role(
        "k8s-prod",
        &CreateRole {
            auto_approve: true,
            ..CreateRole::new("deployer", "1h")
        },
    )
    .await
    .unwrap();
    let token = user_with_token(&s, "alice", false).await;
    let alice = s.client(&token);
    let g = alice
        .create_request(&req(
            "k8s-prod",
            "deployer",
            "30m",
            "roll back payments-api",
        ))
        .await
        .unwrap()
        .grant
        .unwrap();
    wait_provision(&s, g.id, "active").await;
    assert!(kube.holds(Some("payments"), "edit", "ServiceAccount", "pedm-alice"));

    let kubeconfig = kubeconfig(dir.path(), &kube, &s, &token);
    assert_eq!(
        whoami(&kubeconfig).await.as_deref(),
        Ok("system:serviceaccount:pedm:pedm-alice")
    );
    let issued = audit_of(&s, "grant.credentials_issued").await;
    assert!(
        issued.len() == 1
            && issued[0].data["detail"]
                .as_str()
                .is_some_and(|d| d.contains("bound to secret pedm-grant-")),
        "{issued:#?}"
    );

    // Released: the grant's Secret is deleted, so the token it was bound to is refused, and no
    // new one is issued.
    alice
        .release_grant(g.id, &pedm_api::Reason { reason: None })
        .await
        .unwrap();
    wait_provision(&s, g.id, "revoked").await;
    let refused = whoami(&kubeconfig)
        .await
        .expect_err("a released grant still works");
    assert!(refused.contains("no active grant on k8s-prod"), "{refused}");
    assert!(!kube.holds(Some("payments"), "edit", "ServiceAccount", "pedm-alice"));
    let st = kube.state.lock().unwrap();
    assert!(
        !st.bound_tokens.is_empty()
            && st
                .bound_tokens
                .values()
                .all(|(_, secret)| !st.secrets.contains_key(secret)),
        "a bound token's Secret survived the revoke"
    );
}

/// The claims of `token` as a relying party independent of pedm's code checks them
/// (`scripts/cloud-clients/oidc_verify.py`: google-auth and cryptography), or why it refused.
async fn verified_elsewhere(
    issuer: &str,
    audience: &str,
    token: &str,
) -> Result<serde_json::Value, String> {
    let out = tokio::process::Command::new(standin::cloud_python())
        .arg(standin::cloud_script("oidc_verify.py"))
        .args([issuer, audience, token])
        .output()
        .await
        .expect("running oidc_verify.py");
    let said = String::from_utf8_lossy(&out.stdout).trim().to_string();
    if out.status.success() {
        Ok(serde_json::from_str(&said).expect("claims"))
    } else {
        Err(format!("{said} {}", String::from_utf8_lossy(&out.stderr)))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_cluster_that_trusts_pedms_oidc_issuer_takes_its_id_tokens_for_the_grant() {
    let kube = KubeStandIn::start(&[("pedm-token", "pedm-controller")]).await;
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, "pedm-token").unwrap();
    let port = free_port();
    let issuer = format!("http://127.0.0.1:{port}");
    let config = format!(
        r#"
[oidc_issuer]
url = "{issuer}"

[provision.targets.k8s-prod]
kind = "kubernetes"
api_url = "{url}"
ca_file = "{ca}"
token_file = "{token}"
oidc_audience = "prod-cluster"

[provision.roles.k8s-prod.viewer]
cluster_role = "view"
namespace = "payments"
subject = "pedm:{{user}}"

[provision.roles.k8s-prod.misbound]
cluster_role = "view"
namespace = "payments"
subject = "{{user}}@example.com"
"#,
        url = kube.tls.url,
        ca = kube.tls.ca_file.display(),
        token = token_file.display(),
    );
    let s = Server::start_with(Options {
        config: Some(config),
        port: Some(port),
        ..Default::default()
    });
    assert_eq!(s.url, issuer);
    // As the API server does at start: discovery, then the keys.
    kube.trust_oidc(&issuer, "prod-cluster", "pedm:").await;
    let a = s.admin();
    a.create_target(&CreateTarget {
        name: "k8s-prod".into(),
        kind: TargetKind::Kubernetes,
        description: None,
        labels: Default::default(),
    })
    .await
    .unwrap();
    for role in ["viewer", "misbound"] {
        a.create_role(
            "k8s-prod",
            &CreateRole {
                auto_approve: true,
                ..CreateRole::new(role, "1h")
            },
        )
        .await
        .unwrap();
    }
    let token = user_with_token(&s, "alice", false).await;
    let alice = s.client(&token);
    let g = alice
        .create_request(&req("k8s-prod", "viewer", "30m", "read payments logs"))
        .await
        .unwrap()
        .grant
        .unwrap();
    wait_provision(&s, g.id, "active").await;
    assert!(kube.holds(Some("payments"), "view", "User", "pedm:alice"));

    // The official client through the exec plugin is the User the binding names.
    let kubeconfig = kubeconfig(dir.path(), &kube, &s, &token);
    assert_eq!(whoami(&kubeconfig).await.as_deref(), Ok("pedm:alice"));

    // The token, checked by libraries that share nothing with pedm's: signed by the issuer's
    // published key, for the cluster, the holder and the grant, ending with it.
    let o = s.cli(
        &token,
        &["kube", "credentials", "--grant", &g.id.to_string()],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let cred: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let id_token = cred["status"]["token"].as_str().unwrap().to_string();
    let claims = verified_elsewhere(&issuer, "prod-cluster", &id_token)
        .await
        .expect("a valid ID token");
    assert_eq!(claims["sub"], "alice");
    assert_eq!(claims["pedm_grant"], g.id.to_string());
    let grant = alice.get_grant(g.id).await.unwrap();
    assert!(claims["exp"].as_i64().unwrap() <= grant.expires_at.as_second());
    assert!(
        verified_elsewhere(&issuer, "another-cluster", &id_token)
            .await
            .is_err(),
        "accepted for another audience"
    );
    let mut forged: Vec<&str> = id_token.split('.').collect();
    use base64::Engine;
    let root = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(
        serde_json::json!({"sub": "root", "aud": "prod-cluster", "iss": issuer,
            "exp": claims["exp"], "nbf": 0})
        .to_string(),
    );
    forged[1] = &root;
    assert!(
        verified_elsewhere(&issuer, "prod-cluster", &forged.join("."))
            .await
            .is_err(),
        "a forged token verified"
    );
    let issued = audit_of(&s, "grant.credentials_issued").await;
    assert!(
        issued
            .iter()
            .all(|e| !e.data.to_string().contains(&id_token))
            && issued.iter().any(|e| e.data["detail"]
                .as_str()
                .is_some_and(|d| d.contains("ID token of http://127.0.0.1"))),
        "{issued:#?}"
    );

    // A role whose subject is not the user the cluster takes the token for says so.
    let bad = alice
        .create_request(&req("k8s-prod", "misbound", "30m", "read payments logs"))
        .await
        .unwrap()
        .grant
        .unwrap();
    wait_provision(&s, bad.id, "active").await;
    let o = s.cli(
        &token,
        &["kube", "credentials", "--grant", &bad.id.to_string()],
    );
    assert!(!o.status.success() && o.stdout.is_empty());
    assert!(
        stderr(&o).contains(r#"subject = "pedm:{user}""#),
        "{}",
        stderr(&o)
    );

    // Released: the binding is gone, so the token (valid until it expires) authorizes
    // nothing, and no new one is issued.
    alice
        .release_grant(g.id, &pedm_api::Reason { reason: None })
        .await
        .unwrap();
    wait_provision(&s, g.id, "revoked").await;
    assert!(!kube.holds(Some("payments"), "view", "User", "pedm:alice"));
    let o = s.cli(
        &token,
        &["kube", "credentials", "--grant", &g.id.to_string()],
    );
    assert!(
        !o.status.success(),
        "{}",
        String::from_utf8_lossy(&o.stdout)
    );
}
