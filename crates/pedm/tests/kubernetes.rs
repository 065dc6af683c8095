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

    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(
        &kubeconfig,
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
