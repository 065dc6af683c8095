//! The conformance fixture of the `kubernetes` kind, and what only it has: throttling
//! honoured, and its stand-in checked against the official client.
//!
//! No Kubernetes API server runs on this machine, so these run against a protocol-faithful
//! stand-in (`support/kube_standin.rs`, written from the Kubernetes API reference, over HTTPS
//! with a test CA), which `kubernetes_standin_speaks_the_real_api` drives with the official
//! `kubernetes` Python client.

use super::*;
use crate::kube_standin::KubeStandIn;

const PEDM_TOKEN: &str = "pedm-controller-token";
const ADMIN_TOKEN: &str = "kubernetes-admin-token";

fn subject(holder: &str) -> String {
    format!("{holder}@example.com")
}

pub(super) struct KubernetesFixture {
    _dir: tempfile::TempDir,
    kube: KubeStandIn,
    p: Arc<dyn Provisioner>,
}

impl KubernetesFixture {
    pub(super) async fn start() -> Self {
        let kube = KubeStandIn::start(&[
            (PEDM_TOKEN, "pedm-controller"),
            (ADMIN_TOKEN, "kubernetes-admin"),
        ])
        .await;
        let dir = tempfile::tempdir().expect("a temporary directory");
        let token_file = dir.path().join("token");
        std::fs::write(&token_file, format!("{PEDM_TOKEN}\n")).expect("writing the token");
        let p = target(&format!(
            "kind = \"kubernetes\"\napi_url = {}\nca_file = {}\ntoken_file = {}\n\
             timeout = \"10s\"\nremove_drift = true\nkeep = [\"ops@example.com\"]\n",
            q(&kube.tls.url),
            q(&kube.tls.ca_file.display().to_string()),
            q(&token_file.display().to_string()),
        ));
        KubernetesFixture { _dir: dir, kube, p }
    }
}

fn user_subject(name: &str) -> Value {
    json!([{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": name}])
}

#[async_trait]
impl Fixture for KubernetesFixture {
    fn kind(&self) -> &'static str {
        "kubernetes"
    }
    fn provisioner(&self) -> Arc<dyn Provisioner> {
        self.p.clone()
    }
    fn grant(&self, holder: &str) -> GrantSpec {
        spec(
            holder,
            "viewer",
            json!({"cluster_role": "view", "subject": "{user}@example.com"}),
        )
    }
    async fn holds(&self, g: &GrantSpec) -> bool {
        self.kube.holds(None, "view", "User", &subject(&g.user))
    }
    async fn remove_by_hand(&self, g: &GrantSpec) {
        self.kube
            .delete_matching(None, "view", "User", &subject(&g.user));
    }
    async fn plant_standing(&self, whom: Whom) -> (String, String) {
        let account = match whom {
            Whom::Drift => "eve@example.com",
            Whom::Kept => "ops@example.com",
        };
        self.kube.plant(
            None,
            &format!("standing-{}", account.replace('@', "-")),
            "cluster-admin",
            user_subject(account),
        );
        (account.into(), "clusterrole:cluster-admin".into())
    }
    async fn plant_protected(&self) -> Vec<Protected> {
        self.kube.plant(
            None,
            "pedm-controller",
            "cluster-admin",
            user_subject("pedm-controller"),
        );
        // What every cluster has: the cluster's own administrators' group.
        self.kube.plant(
            None,
            "cluster-admin",
            "cluster-admin",
            json!([{"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": "system:masters"}]),
        );
        vec![
            Protected {
                account: "pedm-controller".into(),
                privilege: "clusterrole:cluster-admin".into(),
                why: "the identity pedm calls the API server as",
            },
            Protected {
                account: "group/system:masters".into(),
                privilege: "clusterrole:cluster-admin".into(),
                why: "the cluster's own",
            },
        ]
    }
    async fn holds_standing(&self, account: &str, privilege: &str) -> bool {
        let role = privilege
            .strip_prefix("clusterrole:")
            .expect("a clusterrole privilege");
        match account.strip_prefix("group/") {
            Some(g) => self.kube.holds(None, role, "Group", g),
            None => self.kube.holds(None, role, "User", account),
        }
    }
    async fn take_down(&self) {
        self.kube.state.lock().expect("state").down = true;
    }
    async fn bring_up(&self) {
        self.kube.state.lock().expect("state").down = false;
    }
    fn down_says(&self) -> String {
        "HTTP 503".into()
    }
}

/// 429 with `Retry-After` is waited out within the timeout, and the grant then succeeds; a
/// namespaced RoleBinding is found by discovery in an all-namespaces list spread over pages.
#[tokio::test]
async fn kubernetes_throttling_is_honoured_and_namespaces_are_discovered() {
    let f = KubernetesFixture::start().await;
    f.kube.state.lock().expect("state").throttle = 2;
    let g = spec(
        "carol",
        "payments-admin",
        json!({"cluster_role": "admin", "namespace": "payments", "subject": "{user}@example.com"}),
    );
    f.p.grant(&g)
        .await
        .expect("granted after the throttling passed");
    assert_eq!(f.kube.state.lock().expect("state").throttled, 2);
    assert!(
        f.kube
            .holds(Some("payments"), "admin", "User", "carol@example.com")
    );
    for (ns, who) in [
        ("a", "x@example.com"),
        ("b", "y@example.com"),
        ("c", "z@example.com"),
    ] {
        f.kube.plant(
            Some(ns),
            &format!("admins-{ns}"),
            "admin",
            user_subject(who),
        );
    }
    let found = f.p.discover().await.expect("discover");
    for want in [
        ("carol@example.com", "clusterrole:admin@payments"),
        ("z@example.com", "clusterrole:admin@c"),
    ] {
        assert!(
            found
                .iter()
                .any(|s| (s.account.as_str(), s.privilege.as_str()) == want),
            "{want:?} not in {found:#?}"
        );
    }
    // Throttled for longer than the timeout allows: retryable, saying so.
    f.kube.state.lock().expect("state").throttle = 100;
    let slow = target(&format!(
        "kind = \"kubernetes\"\napi_url = {}\nca_file = {}\ntoken_file = {}\ntimeout = \"1s\"\n",
        q(&f.kube.tls.url),
        q(&f.kube.tls.ca_file.display().to_string()),
        q(&f._dir.path().join("token").display().to_string()),
    ));
    match slow.revoke(&g).await {
        Err(ProvisionError::Unreachable(m)) if m.contains("HTTP 429") => {}
        other => panic!("a revoke throttled past its timeout: {other:?}"),
    }
}

/// The stand-in answers as the real API server does, as far as the official client can tell.
#[tokio::test]
async fn kubernetes_standin_speaks_the_real_api() {
    let f = KubernetesFixture::start().await;
    let python = crate::standin::cloud_python();
    // Awaited, not blocking: the stand-in answers on this test's own runtime.
    let out = tokio::process::Command::new(python)
        .arg(crate::standin::cloud_script("kube_check.py"))
        .args([
            f.kube.tls.url.as_str(),
            &f.kube.tls.ca_file.display().to_string(),
            ADMIN_TOKEN,
        ])
        .output()
        .await
        .expect("running kube_check.py");
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && said.contains("ok kubernetes-admin"),
        "the official client disagrees with the stand-in: {said}{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Who the API server says the bearer of `token` is; `None` when it refuses the token.
async fn whoami(f: &KubernetesFixture, token: &str) -> Option<String> {
    let ca = std::fs::read(&f.kube.tls.ca_file).expect("the stand-in's CA");
    let http = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&ca).expect("a PEM"))
        .build()
        .expect("a client");
    let r = http
        .post(format!(
            "{}/apis/authentication.k8s.io/v1/selfsubjectreviews",
            f.kube.tls.url
        ))
        .bearer_auth(token)
        .json(&json!({"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"}))
        .send()
        .await
        .expect("the stand-in answers");
    if r.status() == reqwest::StatusCode::UNAUTHORIZED {
        return None;
    }
    let v: Value = r.json().await.expect("JSON");
    v["status"]["userInfo"]["username"]
        .as_str()
        .map(str::to_string)
}

/// A service-account role: the binding names the holder's own service account, `credentials`
/// gives a kubectl ExecCredential whose token is bound to the grant's Secret, lasts no longer
/// than the grant, and is refused by the API server the moment the grant is revoked.
#[tokio::test]
async fn kubernetes_service_account_tokens_end_with_their_grant() {
    let f = KubernetesFixture::start().await;
    let now = jiff::Timestamp::now();
    let mut g = spec(
        "Dave",
        "deployer",
        json!({"cluster_role": "edit", "namespace": "payments", "service_account": "pedm-{user}"}),
    );
    g.expires_at = now + jiff::SignedDuration::from_mins(30);
    f.p.grant(&g).await.expect("grant");
    assert!(
        f.kube
            .holds(Some("payments"), "edit", "ServiceAccount", "pedm-dave")
    );
    assert_eq!(
        f.p.account(&g).as_deref(),
        Some("system:serviceaccount:pedm:pedm-dave")
    );
    let c = f.p.credentials(&g, now).await.expect("credentials");
    assert_eq!(
        (c.kind, &c.value["apiVersion"], &c.value["kind"]),
        (
            "kubernetes",
            &json!("client.authentication.k8s.io/v1"),
            &json!("ExecCredential")
        )
    );
    assert!(
        c.expires_at <= g.expires_at,
        "{} after {}",
        c.expires_at,
        g.expires_at
    );
    assert!(
        !format!("{c:?}").contains("sa-token"),
        "Debug shows the token"
    );
    let asked = *f
        .kube
        .state
        .lock()
        .expect("state")
        .token_requests
        .last()
        .expect("a request");
    assert_eq!(asked, 1800, "the grant's remaining time");
    let token = c.value["status"]["token"]
        .as_str()
        .expect("a token")
        .to_string();
    assert_eq!(
        whoami(&f, &token).await.as_deref(),
        Some("system:serviceaccount:pedm:pedm-dave")
    );

    // Five minutes left (by the control plane's clock): the API server issues no less than
    // ten, and the credential never says later than the grant's end.
    let late = now + jiff::SignedDuration::from_mins(25);
    let c =
        f.p.credentials(&g, late)
            .await
            .expect("credentials near the end");
    assert_eq!(
        *f.kube
            .state
            .lock()
            .expect("state")
            .token_requests
            .last()
            .expect("a request"),
        600
    );
    assert!(c.expires_at <= g.expires_at);

    f.p.revoke(&g).await.expect("revoke");
    assert_eq!(
        whoami(&f, &token).await,
        None,
        "a revoked grant's token still works"
    );
    assert!(
        !f.kube
            .holds(Some("payments"), "edit", "ServiceAccount", "pedm-dave")
    );
    f.p.revoke(&g).await.expect("revoking again");

    // A role bound to the cluster's own users has no service account to issue tokens for.
    let user = spec("dave", "viewer", json!({"cluster_role": "view"}));
    match f.p.credentials(&user, now).await {
        Err(ProvisionError::Invalid(m)) if m.contains("service_account") => {}
        other => panic!("credentials for a user-bound role: {other:?}"),
    }
}
