//! The conformance fixtures of the `azure` kind, against `support/azure_standin.rs`: the
//! stand-in exists because Azure's APIs (Entra ID, Resource Manager, Microsoft Graph)
//! cannot run on this machine; `azure_official_client_agrees_with_the_standin` checks it
//! with Microsoft's own Python client. Fixtures: an RBAC role assignment at a resource
//! group, and an Entra ID group membership; standing privileges are Owner assignments at
//! the subscription. Also here: throttling, pagination, the token cache, a wrong secret.

use super::*;
use crate::azure_standin::AzureStandIn;

const TENANT: &str = "contoso.onmicrosoft.com";
const CLIENT_ID: &str = "a0b1c2d3-e4f5-4a6b-8c7d-9e0f1a2b3c4d";
const SECRET: &str = "conformance-azure-secret";
const SUB: &str = "6a7b8c9d-0e1f-4a2b-8c3d-4e5f6a7b8c9d";
const READER: &str = "acdd72a7-3385-48ef-bd42-f606fba81ae7";
const OWNER: &str = "8e3af657-a8ff-443c-a75c-2fe8c4bcb635";
const CONTRIBUTOR: &str = "b24988ac-6180-42a0-ab88-20f7382dd24c";

fn sub_scope() -> String {
    format!("/subscriptions/{SUB}")
}
fn rg_scope() -> String {
    format!("/subscriptions/{SUB}/resourceGroups/rg-app")
}
fn upn(user: &str) -> String {
    format!("{user}@contoso.com")
}
fn whom(w: Whom) -> String {
    match w {
        Whom::Drift => upn("eve"),
        Whom::Kept => upn("ops"),
    }
}

enum Mode {
    Role,
    Group(String),
}

pub(super) struct AzureFixture {
    pub(super) standin: AzureStandIn,
    /// pedm's own service principal (`appId` = `CLIENT_ID`).
    own_sp: String,
    mode: Mode,
    p: Arc<dyn Provisioner>,
}

impl AzureFixture {
    pub(super) async fn role() -> Self {
        Self::start(false, "").await
    }
    pub(super) async fn group() -> Self {
        Self::start(true, "").await
    }

    /// `extra` adds TOML lines to the target's configuration.
    async fn start(group: bool, extra: &str) -> Self {
        let standin = AzureStandIn::start(TENANT, CLIENT_ID, SECRET).await;
        for u in ["alice", "bob", "eve", "ops"] {
            standin.add_user(&upn(u));
        }
        let own_sp = standin.add_service_principal(CLIENT_ID, "pedm");
        let mode = if group {
            Mode::Group(standin.add_group("pim-admins"))
        } else {
            Mode::Role
        };
        let p = azure_target(&standin, SECRET, extra);
        AzureFixture {
            standin,
            own_sp,
            mode,
            p,
        }
    }

    fn principal(&self, account: &str) -> String {
        match account.strip_prefix("sp/") {
            Some(app) => {
                assert_eq!(app, CLIENT_ID);
                self.own_sp.clone()
            }
            None => self.standin.user_id(account),
        }
    }
}

/// The `azure` target pedmd would build against the stand-in: drift removal on, ops kept.
fn azure_target(s: &AzureStandIn, secret: &str, extra: &str) -> Arc<dyn Provisioner> {
    target(&format!(
        "kind = \"azure\"\ntenant_id = {}\nclient_id = {}\nclient_secret = {}\nscope = {}\n\
         authority_url = {u}\nmanagement_url = {u}\ngraph_url = {u}\nca_file = {}\n\
         timeout = \"5s\"\nremove_drift = true\nkeep = [{}]\n{extra}",
        q(TENANT),
        q(CLIENT_ID),
        q(secret),
        q(&sub_scope()),
        q(&s.ca_file.display().to_string()),
        q(&upn("ops")),
        u = q(&s.url),
    ))
}

#[async_trait]
impl Fixture for AzureFixture {
    fn kind(&self) -> &'static str {
        "azure"
    }
    fn provisioner(&self) -> Arc<dyn Provisioner> {
        self.p.clone()
    }
    fn grant(&self, holder: &str) -> GrantSpec {
        match &self.mode {
            Mode::Role => spec(
                holder,
                "reader",
                json!({"role_definition_id": READER, "scope": rg_scope(),
                       "login": "{user}@contoso.com"}),
            ),
            Mode::Group(gid) => spec(
                holder,
                "pim-admins",
                json!({"group_id": gid, "login": "{user}@contoso.com"}),
            ),
        }
    }
    async fn holds(&self, g: &GrantSpec) -> bool {
        let id = self.standin.user_id(&upn(&g.user));
        match &self.mode {
            Mode::Role => self.standin.has(&rg_scope(), READER, &id),
            Mode::Group(gid) => self.standin.is_member(gid, &id),
        }
    }
    async fn remove_by_hand(&self, g: &GrantSpec) {
        let id = self.standin.user_id(&upn(&g.user));
        match &self.mode {
            Mode::Role => self.standin.remove(&rg_scope(), READER, &id),
            Mode::Group(gid) => self.standin.remove_member(gid, &id),
        }
    }
    async fn plant_standing(&self, w: Whom) -> (String, String) {
        let account = whom(w);
        let id = self.standin.user_id(&account);
        self.standin.plant(&sub_scope(), OWNER, &id);
        (account, format!("role:{OWNER}@{}", sub_scope()))
    }
    async fn plant_protected(&self) -> Vec<Protected> {
        self.standin.plant(&sub_scope(), OWNER, &self.own_sp);
        vec![Protected {
            account: format!("sp/{CLIENT_ID}"),
            privilege: format!("role:{OWNER}@{}", sub_scope()),
            why: "the identity pedm calls Azure as",
        }]
    }
    async fn holds_standing(&self, account: &str, privilege: &str) -> bool {
        let (role, scope) = privilege
            .strip_prefix("role:")
            .and_then(|r| r.split_once('@'))
            .expect("a role privilege");
        self.standin.has(scope, role, &self.principal(account))
    }
    async fn take_down(&self) {
        self.standin.set_down(true);
    }
    async fn bring_up(&self) {
        self.standin.set_down(false);
    }
    fn down_says(&self) -> String {
        "HTTP 503".into()
    }
}

// ---------------------------------------------------------------------------------------
// Beyond the suite. Each uses the stand-in because Azure's APIs cannot run here.
// ---------------------------------------------------------------------------------------

/// 429 with `Retry-After: 1` twice: the provisioner waits as told and the grant succeeds.
#[tokio::test]
async fn azure_throttling_waits_as_retry_after_says() {
    let f = AzureFixture::role().await;
    let g = f.grant("alice");
    f.standin.throttle_next(2);
    let started = std::time::Instant::now();
    f.p.grant(&g).await.expect("a grant through throttling");
    assert_eq!(f.standin.throttled(), 2);
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "Retry-After was not honoured: {:?}",
        started.elapsed()
    );
    assert!(f.holds(&g).await);
    // Throttled for longer than the attempts allow: retryable, nothing changed.
    f.standin.throttle_next(10);
    let e =
        f.p.revoke(&g)
            .await
            .expect_err("throttled past the attempts");
    assert!(e.is_retryable(), "{e}");
    assert!(e.to_string().contains("TooManyRequests"), "{e}");
    f.standin.throttle_next(0);
    assert!(f.holds(&g).await, "a failed revoke changed the target");
}

/// More assignments than fit a page: discovery and observe follow `nextLink`.
#[tokio::test]
async fn azure_pagination_follows_next_link() {
    let f = AzureFixture::role().await;
    let s = &f.standin;
    s.set_page_size(2);
    let group = s.add_group("platform-admins");
    let alice = s.user_id(&upn("alice"));
    for (principal, role) in [
        (s.user_id(&upn("eve")), OWNER),
        (s.user_id(&upn("ops")), CONTRIBUTOR),
        (group.clone(), OWNER),
        (f.own_sp.clone(), OWNER),
        (alice.clone(), READER),
        (alice.clone(), CONTRIBUTOR),
    ] {
        s.plant(&sub_scope(), role, &principal);
    }
    let found = f.p.discover().await.expect("discover");
    let accounts: BTreeSet<(String, String)> = found
        .iter()
        .map(|p| (p.account.clone(), p.privilege.clone()))
        .collect();
    let at_sub = |role: &str| format!("role:{role}@{}", sub_scope());
    let want: BTreeSet<(String, String)> = [
        (upn("eve"), at_sub(OWNER)),
        (upn("ops"), at_sub(CONTRIBUTOR)),
        ("group/platform-admins".to_string(), at_sub(OWNER)),
        (format!("sp/{CLIENT_ID}"), at_sub(OWNER)),
        (upn("alice"), at_sub(CONTRIBUTOR)),
    ]
    .into_iter()
    .collect();
    assert_eq!(accounts, want, "{found:#?}");
    // alice's grant lands on the third page of her assignments.
    s.plant(&rg_scope(), CONTRIBUTOR, &alice);
    let g = f.grant("alice");
    f.p.grant(&g).await.expect("grant");
    let n = s.assignment_count();
    f.p.grant(&g).await.expect("grant again");
    assert_eq!(
        s.assignment_count(),
        n,
        "a second grant made a second assignment"
    );
    assert!(f.p.observe(&g).await.expect("observe").present);
    f.p.revoke(&g).await.expect("revoke");
    assert!(!f.holds(&g).await);
    assert!(
        s.has(&rg_scope(), CONTRIBUTOR, &alice),
        "revoke took another role"
    );
}

/// One token per API for many operations; a token the API stops taking is replaced once.
#[tokio::test]
async fn azure_token_is_cached_until_refused() {
    let f = AzureFixture::role().await;
    let g = f.grant("alice");
    f.p.grant(&g).await.expect("grant");
    f.p.observe(&g).await.expect("observe");
    f.p.discover().await.expect("discover");
    f.p.revoke(&g).await.expect("revoke");
    assert_eq!(
        f.standin.token_requests(),
        2,
        "one token for Resource Manager, one for Graph"
    );
    f.standin.forget_tokens();
    f.p.grant(&g).await.expect("grant with refused tokens");
    assert!(f.holds(&g).await);
    assert_eq!(
        f.standin.token_requests(),
        4,
        "each refused token fetched again once"
    );
}

/// A wrong client secret is a refusal naming Entra ID's error, never showing the secret.
#[tokio::test]
async fn azure_wrong_secret_is_refused_without_showing_it() {
    let f = AzureFixture::role().await;
    let wrong = "wrong-secret-value-42";
    let p = azure_target(&f.standin, wrong, "");
    match p.grant(&f.grant("alice")).await {
        Err(ProvisionError::Refused(m)) => {
            assert!(m.contains("invalid_client"), "{m}");
            assert!(!m.contains(wrong), "{m}");
        }
        other => panic!("grant with a wrong secret: {other:?}"),
    }
    // An unknown user is refused by name.
    let g = spec(
        "mallory",
        "reader",
        json!({"role_definition_id": READER, "login": "{user}@contoso.com"}),
    );
    match f.p.grant(&g).await {
        Err(ProvisionError::Refused(m)) => assert!(m.contains("mallory@contoso.com"), "{m}"),
        other => panic!("grant to an unknown user: {other:?}"),
    }
}

/// Microsoft's `azure-mgmt-authorization` creates, lists (across pages), reads and deletes
/// a role assignment against the stand-in: a stand-in that drifts from ARM fails here.
#[tokio::test]
async fn azure_official_client_agrees_with_the_standin() {
    let f = AzureFixture::role().await;
    let s = &f.standin;
    s.set_page_size(1);
    s.plant(&sub_scope(), OWNER, &s.user_id(&upn("eve")));
    s.plant(&sub_scope(), OWNER, &f.own_sp);
    let before = s.assignment_count();
    let python = crate::standin::cloud_python();
    let script = crate::standin::cloud_script("azure_check.py");
    let out = tokio::process::Command::new(python)
        .arg(script)
        .arg(&s.url)
        .arg(&s.ca_file)
        .arg(SUB)
        .env("AZURE_TENANT_ID", TENANT)
        .env("AZURE_CLIENT_ID", CLIENT_ID)
        .env("AZURE_CLIENT_SECRET", SECRET)
        .env("AZURE_PRINCIPAL_ID", s.user_id(&upn("alice")))
        .output()
        .await
        .expect("running azure_check.py");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("OK"),
        "azure_check.py failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("listed 3 assignments"), "{stdout}");
    assert_eq!(
        s.assignment_count(),
        before,
        "the client's assignment was not deleted"
    );
}

/// The stand-in itself answers as ARM does where the provisioner never goes wrong: no
/// `api-version`, no token. (A stand-in because Azure's APIs cannot run on this machine.)
#[tokio::test]
async fn azure_standin_refuses_like_resource_manager() {
    let f = AzureFixture::role().await;
    let s = &f.standin;
    let http = pedm_notify::tls::with_ca(reqwest::Client::builder(), Some(s.ca_file.as_path()))
        .expect("the stand-in's CA")
        .build()
        .expect("an HTTP client");
    let list = format!(
        "{}{}/providers/Microsoft.Authorization/roleAssignments",
        s.url,
        sub_scope()
    );
    let token = s.issue_token();
    let r = http
        .get(&list)
        .bearer_auth(&token)
        .send()
        .await
        .expect("GET");
    assert_eq!(r.status(), 400);
    let body: Value = r.json().await.expect("JSON");
    assert_eq!(
        body["error"]["code"], "MissingApiVersionParameter",
        "{body}"
    );
    let r = http
        .get(format!("{list}?api-version=2022-04-01"))
        .send()
        .await
        .expect("GET");
    assert_eq!(r.status(), 401);
    let body: Value = r.json().await.expect("JSON");
    assert_eq!(body["error"]["code"], "AuthenticationFailed", "{body}");
    let r = http
        .get(format!("{list}?api-version=2022-04-01"))
        .bearer_auth(&token)
        .send()
        .await
        .expect("GET");
    assert_eq!(r.status(), 200);
}
