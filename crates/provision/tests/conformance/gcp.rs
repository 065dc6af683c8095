//! The conformance fixture of the `gcp` kind, and the Google Cloud behaviour the suite does
//! not cover (concurrent changes, throttling, the condition's end, extend, the metadata
//! server, Google's own client). Against `support/gcp_standin.rs`, a stand-in of Resource
//! Manager v3 IAM: it exists because Google Cloud's IAM cannot run on this machine.

use super::*;
use crate::gcp_standin::{GcpStandIn, METADATA_ACCOUNT, SERVICE_ACCOUNT};

const RESOURCE: &str = "projects/pedm-conformance";
const ROLE: &str = "roles/compute.admin";
const OWNER: &str = "roles/owner";

fn member(user: &str) -> String {
    format!("user:{user}@example.com")
}

fn whom(w: Whom) -> String {
    match w {
        Whom::Drift => member("eve"),
        Whom::Kept => member("ops"),
    }
}

/// The `gcp` target pedmd would build against the stand-in, drift removal on,
/// `user:ops@example.com` kept; `auth` is the credentials line(s).
fn gcp_target(s: &GcpStandIn, auth: &str) -> Arc<dyn Provisioner> {
    target(&format!(
        "kind = \"gcp\"\nresource = {}\nendpoint_url = {}\nca_file = {}\ntimeout = \"10s\"\n\
         {auth}\nremove_drift = true\nkeep = [{}]\n",
        q(RESOURCE),
        q(&s.server.url),
        q(&s.server.ca_file.display().to_string()),
        q(&member("ops")),
    ))
}

pub(super) struct GcpFixture {
    _dir: tempfile::TempDir,
    s: GcpStandIn,
    p: Arc<dyn Provisioner>,
}

impl GcpFixture {
    pub(super) async fn start() -> Self {
        let s = GcpStandIn::start(&[RESOURCE]).await;
        let dir = tempfile::tempdir().expect("a temporary directory");
        let key = s.key_file(dir.path());
        let p = gcp_target(
            &s,
            &format!("credentials_file = {}", q(&key.display().to_string())),
        );
        GcpFixture { _dir: dir, s, p }
    }

    /// The stored binding of `g`'s grant, if any.
    fn grant_binding(&self, g: &GrantSpec) -> Option<Value> {
        let title = g.grant_id.to_string();
        self.s.bindings(RESOURCE).into_iter().find(|b| {
            b["role"] == ROLE
                && b["condition"]["title"] == title.as_str()
                && b["members"]
                    .as_array()
                    .is_some_and(|m| m.iter().any(|x| *x == member(&g.user)))
        })
    }
}

/// The end of a binding's `request.time < timestamp("…")` condition.
fn end_of(binding: &Value) -> jiff::Timestamp {
    let e = binding["condition"]["expression"]
        .as_str()
        .expect("a condition expression");
    e.strip_prefix("request.time < timestamp(\"")
        .and_then(|r| r.strip_suffix("\")"))
        .unwrap_or_else(|| panic!("not an expiry condition: {e}"))
        .parse()
        .expect("an RFC 3339 timestamp")
}

fn grant_spec(holder: &str) -> GrantSpec {
    spec(
        holder,
        "compute-admin",
        json!({"role": ROLE, "member": "user:{user}@example.com"}),
    )
}

#[async_trait]
impl Fixture for GcpFixture {
    fn kind(&self) -> &'static str {
        "gcp"
    }
    fn provisioner(&self) -> Arc<dyn Provisioner> {
        self.p.clone()
    }
    fn grant(&self, holder: &str) -> GrantSpec {
        grant_spec(holder)
    }
    async fn holds(&self, g: &GrantSpec) -> bool {
        self.grant_binding(g)
            .is_some_and(|b| end_of(&b) > jiff::Timestamp::now())
    }
    async fn remove_by_hand(&self, g: &GrantSpec) {
        let title = g.grant_id.to_string();
        let mut b = self.s.bindings(RESOURCE);
        b.retain(|b| b["condition"]["title"] != title.as_str());
        self.s.set_bindings(RESOURCE, b);
    }
    async fn plant_standing(&self, w: Whom) -> (String, String) {
        self.s
            .plant(RESOURCE, json!({"role": OWNER, "members": [whom(w)]}));
        (whom(w), format!("role:{OWNER}"))
    }
    async fn plant_protected(&self) -> Vec<Protected> {
        let own = format!("serviceAccount:{SERVICE_ACCOUNT}");
        self.s
            .plant(RESOURCE, json!({"role": OWNER, "members": [own]}));
        vec![Protected {
            account: own,
            privilege: format!("role:{OWNER}"),
            why: "the identity pedm calls Google Cloud as",
        }]
    }
    async fn holds_standing(&self, account: &str, privilege: &str) -> bool {
        let role = privilege.strip_prefix("role:").expect("a role privilege");
        self.s.bindings(RESOURCE).iter().any(|b| {
            b["role"] == role
                && b.get("condition").is_none()
                && b["members"]
                    .as_array()
                    .is_some_and(|m| m.iter().any(|x| x == account))
        })
    }
    async fn take_down(&self) {
        self.s.set_down(true);
    }
    async fn bring_up(&self) {
        self.s.set_down(false);
    }
    fn down_says(&self) -> String {
        "UNAVAILABLE".into()
    }
}

// ---------------------------------------------------------------------------------------
// What the suite does not cover
// ---------------------------------------------------------------------------------------

/// Against the stand-in, because Google Cloud's IAM cannot run on this machine.
/// Someone else's write lands between pedm's read and write: Google answers 409 ABORTED,
/// pedm reads again and reapplies its change, and the other binding survives.
#[tokio::test]
async fn a_concurrent_change_is_retried_and_kept() {
    let f = GcpFixture::start().await;
    f.s.plant(RESOURCE, json!({"role": OWNER, "members": [member("ops")]}));
    let g = grant_spec("alice");
    f.s.conflict_next();
    f.p.grant(&g)
        .await
        .expect("grant despite a concurrent change");
    assert!(
        f.grant_binding(&g).is_some(),
        "the grant is not in the policy"
    );
    let b = f.s.bindings(RESOURCE);
    assert!(
        b.iter().any(|b| b["role"] == "roles/viewer"
            && b["members"] == json!(["user:someone-else@example.com"])),
        "the concurrent change was overwritten: {b:#?}"
    );
    assert!(
        b.iter()
            .any(|b| b["role"] == OWNER && b["members"] == json!([member("ops")])),
        "a binding from before was lost: {b:#?}"
    );
    let sets: Vec<u16> =
        f.s.seen()
            .iter()
            .filter(|s| s.method == "setIamPolicy")
            .map(|s| s.status)
            .collect();
    assert_eq!(sets, [409, 200], "setIamPolicy answers");
}

/// Against the stand-in, because Google Cloud's IAM cannot run on this machine.
/// 429 with `Retry-After: 1`: pedm waits that long, then the grant succeeds.
#[tokio::test]
async fn throttling_is_honoured() {
    let f = GcpFixture::start().await;
    let g = grant_spec("alice");
    f.s.throttle_next(1);
    f.p.grant(&g).await.expect("grant after throttling");
    assert!(f.grant_binding(&g).is_some());
    let seen: Vec<_> =
        f.s.seen()
            .into_iter()
            .filter(|s| s.method != "token")
            .collect();
    let i = seen
        .iter()
        .position(|s| s.status == 429)
        .expect("a throttled request");
    let next = seen.get(i + 1).expect("a request after the 429");
    assert!(
        next.at.duration_since(seen[i].at) >= Duration::from_secs(1),
        "retried {:?} after a Retry-After of 1s",
        next.at.duration_since(seen[i].at)
    );
    assert_eq!(next.status, 200);
    // Throttled longer than the timeout allows: retryable, saying so.
    f.s.throttle_next(100);
    let e = f.p.revoke(&g).await.expect_err("revoke while throttled");
    assert!(
        matches!(&e, ProvisionError::Unreachable(m) if m.contains("RESOURCE_EXHAUSTED")),
        "{e:?}"
    );
    f.s.throttle_next(0);
}

/// Against the stand-in, because Google Cloud's IAM cannot run on this machine.
/// The binding's condition ends exactly at the grant's end, and `extend` moves it.
#[tokio::test]
async fn the_condition_ends_at_the_grant_end_and_extend_moves_it() {
    let f = GcpFixture::start().await;
    let mut g = grant_spec("alice");
    assert!(f.p.keeps_expiry(&g));
    f.p.grant(&g).await.expect("grant");
    let b = f.grant_binding(&g).expect("the grant's binding");
    assert_eq!(end_of(&b), g.expires_at);
    assert_eq!(
        b["condition"]["expression"],
        format!("request.time < timestamp(\"{}\")", g.expires_at)
    );
    assert_eq!(b["condition"]["title"], g.grant_id.to_string());
    assert_eq!(b["members"], json!([member("alice")]));
    assert_eq!(f.p.account(&g).as_deref(), Some("user:alice@example.com"));
    assert_eq!(
        f.p.privilege(&g).as_deref(),
        Some("role:roles/compute.admin")
    );

    g.expires_at += jiff::SignedDuration::from_hours(2);
    let done = f.p.extend(&g).await.expect("extend");
    assert!(done.contains("now ends"), "{done}");
    let b = f.grant_binding(&g).expect("the grant's binding");
    assert_eq!(end_of(&b), g.expires_at);
    assert_eq!(
        f.s.bindings(RESOURCE).len(),
        1,
        "extend added a binding instead of moving the end"
    );
    assert!(f.p.observe(&g).await.expect("observe").present);

    // A binding whose end has passed is not held, whatever is still in the policy.
    let mut b = f.s.bindings(RESOURCE);
    b[0]["condition"]["expression"] = json!("request.time < timestamp(\"2020-01-01T00:00:00Z\")");
    f.s.set_bindings(RESOURCE, b);
    assert!(!f.p.observe(&g).await.expect("observe").present);
    // Extending a grant whose binding is gone is refused, not silently re-granted.
    f.p.revoke(&g).await.expect("revoke");
    assert!(matches!(
        f.p.extend(&g).await,
        Err(ProvisionError::Refused(_))
    ));
}

/// Against the stand-in, because Google Cloud's IAM cannot run on this machine.
/// Google's refusals are not retried and say what Google said.
#[tokio::test]
async fn refusals_carry_googles_status_and_message() {
    let s = GcpStandIn::start(&["projects/somewhere-else"]).await;
    let dir = tempfile::tempdir().expect("a temporary directory");
    let key = s.key_file(dir.path());
    let p = gcp_target(
        &s,
        &format!("credentials_file = {}", q(&key.display().to_string())),
    );
    match p.grant(&grant_spec("alice")).await {
        Err(ProvisionError::Refused(m)) => assert!(
            m.contains("PERMISSION_DENIED") && m.contains("The caller does not have permission"),
            "{m}"
        ),
        other => panic!("grant on an unknown project: {other:?}"),
    }
    // A key the token endpoint does not accept (another account): invalid_grant, refused.
    let text = std::fs::read_to_string(&key).expect("the key file");
    let other = text.replace(
        SERVICE_ACCOUNT,
        "someone@pedm-standin.iam.gserviceaccount.com",
    );
    std::fs::write(&key, other).expect("rewriting the key file");
    let p = gcp_target(
        &s,
        &format!("credentials_file = {}", q(&key.display().to_string())),
    );
    match p.discover().await {
        Err(ProvisionError::Refused(m)) => {
            assert!(m.contains("invalid_grant"), "{m}");
            assert!(!m.contains("PRIVATE KEY") && !m.contains("ya29."), "{m}");
        }
        other => panic!("discover with an unknown key: {other:?}"),
    }
}

/// Against the stand-in, because Google Cloud's IAM and metadata server cannot run on this
/// machine.
/// Without a key file, tokens and pedm's own identity come from the metadata server.
#[tokio::test]
async fn the_metadata_server_provides_tokens_and_identity() {
    let s = GcpStandIn::start(&[RESOURCE]).await;
    let p = gcp_target(&s, &format!("metadata_url = {}", q(&s.server.url)));
    let own = format!("serviceAccount:{METADATA_ACCOUNT}");
    s.plant(RESOURCE, json!({"role": OWNER, "members": [own]}));
    let g = grant_spec("alice");
    p.grant(&g).await.expect("grant with a metadata token");
    assert!(p.observe(&g).await.expect("observe").present);
    let found = p.discover().await.expect("discover");
    let mine = found
        .iter()
        .find(|sp| sp.account == own)
        .expect("pedm's own owner binding is reported");
    let why = p
        .removable(mine)
        .expect_err("pedm's own identity is not removable");
    assert!(
        why.contains("the identity pedm calls Google Cloud as"),
        "{why}"
    );
    assert!(
        !found.iter().any(|sp| sp.account == member("alice")),
        "a grant's conditional binding is reported as standing: {found:#?}"
    );
}

/// Against the stand-in, because Google Cloud's IAM cannot run on this machine.
/// Google's own client (google-auth's JWT bearer grant, google-cloud-resource-manager's REST
/// transport) reads and writes the stand-in as it would Google, so a stand-in that drifts
/// from the real API fails here; what pedm wrote survives its write, and pedm reads its.
#[tokio::test]
async fn googles_own_client_agrees_with_the_standin() {
    let python = crate::standin::cloud_python();
    let script = crate::standin::cloud_script("gcp_check.py");
    let f = GcpFixture::start().await;
    let g = grant_spec("alice");
    f.p.grant(&g).await.expect("grant");
    let key = f.s.key_file(f._dir.path());
    let out = tokio::process::Command::new(&python)
        .arg(&script)
        .arg(&f.s.server.url)
        .arg(&f.s.server.ca_file)
        .arg(RESOURCE)
        .arg(&key)
        .output()
        .await
        .expect("running gcp_check.py");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "gcp_check.py: {}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let seen: Value = serde_json::from_str(&stdout).expect("gcp_check.py prints JSON");
    assert_eq!(seen["version"], 3);
    let bindings = seen["bindings"].as_array().expect("bindings");
    assert!(
        bindings
            .iter()
            .any(|b| b["members"] == json!([member("alice")])
                && b["condition"] == format!("request.time < timestamp(\"{}\")", g.expires_at)),
        "the official client does not read pedm's binding as written: {stdout}"
    );
    // pedm still sees its grant, and the official client's binding survives pedm's revoke.
    assert!(f.p.observe(&g).await.expect("observe").present);
    f.p.revoke(&g).await.expect("revoke");
    let b = f.s.bindings(RESOURCE);
    assert!(
        b.iter().any(|b| b["role"] == "roles/storage.admin"),
        "pedm's revoke dropped the official client's binding: {b:#?}"
    );
    assert!(f.grant_binding(&g).is_none());
}
