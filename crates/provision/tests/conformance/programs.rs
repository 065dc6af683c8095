//! The conformance fixtures of the kinds that reach a program of the admin's: `command`, `webhook` and `plugin`.

use super::*;

// ---------------------------------------------------------------------------------------
// command
// ---------------------------------------------------------------------------------------

/// The command fixture's admin tool: a stand-in SaaS in the JSON file `$STATE` (members by
/// pedm role), down (exit 75) while `$STATE.down` exists.
const COMMAND_SCRIPT: &str = r#"#!/usr/bin/env python3
import json, os, sys

STATE = os.environ["STATE"]
action = sys.argv[-1]
if os.path.exists(STATE + ".down"):
    sys.stderr.write("CRM API unavailable (HTTP 503), try again later\n")
    sys.exit(75)
request = json.load(sys.stdin)
try:
    with open(STATE) as f:
        state = json.load(f)
except FileNotFoundError:
    state = {"members": {}, "standing": [], "keys": []}
if action in ("grant", "revoke", "observe"):
    role, user = request["role"], request["user"]
    members = state["members"].setdefault(role, [])
if action == "grant":
    if user not in members:
        members.append(user)
    print(json.dumps({"detail": "added %s to %s" % (user, role)}))
elif action == "revoke":
    if user in members:
        members.remove(user)
elif action == "observe":
    print(json.dumps({"present": user in members, "detail": "members of %s: %s" % (role, members)}))
elif action == "discover":
    print(json.dumps(state["standing"]))
elif action == "remove_standing":
    state["standing"] = [s for s in state["standing"]
                         if (s["account"], s["privilege"]) != (request["account"], request["privilege"])]
    print("took %s from %s" % (request["privilege"], request["account"]))
else:
    sys.stderr.write("unknown action %s\n" % action)
    sys.exit(64)
tmp = STATE + ".tmp"
with open(tmp, "w") as f:
    json.dump(state, f)
os.replace(tmp, STATE)
"#;

pub(super) struct CommandFixture {
    _dir: tempfile::TempDir,
    saas: SaasFile,
    p: Arc<dyn Provisioner>,
}

impl CommandFixture {
    pub(super) fn start() -> Self {
        let dir = tempfile::tempdir().expect("a temporary directory");
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700))
            .expect("chmod");
        let program = dir.path().join("crm-admin");
        std::fs::write(&program, COMMAND_SCRIPT).expect("writing the script");
        std::fs::set_permissions(&program, std::fs::Permissions::from_mode(0o700)).expect("chmod");
        let saas = SaasFile {
            path: dir.path().join("state.json"),
        };
        let p = program_target("command", &program, &saas);
        CommandFixture { _dir: dir, saas, p }
    }
}

/// A `command` or `plugin` target running `program` on `saas`'s state file.
fn program_target(kind: &str, program: &Path, saas: &SaasFile) -> Arc<dyn Provisioner> {
    target(&format!(
        "kind = {}\nprogram = {}\ntimeout = \"20s\"\nenv = {{ STATE = {} }}\n\
         remove_drift = true\nkeep = [{}]\n",
        q(kind),
        q(&program.display().to_string()),
        q(&saas.path.display().to_string()),
        q(saas_account(Whom::Kept)),
    ))
}

#[async_trait]
impl Fixture for CommandFixture {
    fn kind(&self) -> &'static str {
        "command"
    }
    fn provisioner(&self) -> Arc<dyn Provisioner> {
        self.p.clone()
    }
    fn grant(&self, holder: &str) -> GrantSpec {
        spec(holder, "org-admin", json!({"team": "admins"}))
    }
    async fn holds(&self, g: &GrantSpec) -> bool {
        self.saas.holds(&g.role, &g.user)
    }
    async fn remove_by_hand(&self, g: &GrantSpec) {
        self.saas.remove_member(&g.role, &g.user);
    }
    async fn plant_standing(&self, whom: Whom) -> (String, String) {
        self.saas.plant(saas_account(whom), SAAS_PRIVILEGE);
        (saas_account(whom).into(), SAAS_PRIVILEGE.into())
    }
    async fn plant_protected(&self) -> Vec<Protected> {
        vec![]
    }
    async fn holds_standing(&self, account: &str, privilege: &str) -> bool {
        self.saas.has_standing(account, privilege)
    }
    async fn take_down(&self) {
        self.saas.set_down(true);
    }
    async fn bring_up(&self) {
        self.saas.set_down(false);
    }
    fn down_says(&self) -> String {
        "exited with 75".into()
    }
}

// ---------------------------------------------------------------------------------------
// webhook
// ---------------------------------------------------------------------------------------

/// The webhook receiver's SaaS: members by pedm role, standing privileges, and whether it is
/// down (then it answers every call with HTTP 503).
#[derive(Default)]
struct Saas {
    members: BTreeMap<String, BTreeSet<String>>,
    standing: Vec<StandingPrivilege>,
    down: bool,
}

#[derive(Clone)]
struct Receiver {
    secret: Vec<u8>,
    saas: Arc<Mutex<Saas>>,
}

impl Receiver {
    fn saas(&self) -> std::sync::MutexGuard<'_, Saas> {
        self.saas.lock().unwrap_or_else(|e| e.into_inner())
    }
}

async fn receive(
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
    if r.saas().down {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "down for maintenance".into(),
        );
    }
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
    let Ok(msg) = serde_json::from_slice::<Value>(&body) else {
        return (StatusCode::BAD_REQUEST, "not JSON".into());
    };
    let user = msg["grant"]["user"].as_str().unwrap_or("").to_string();
    let role = msg["grant"]["role"].as_str().unwrap_or("").to_string();
    let mut saas = r.saas();
    let reply = match msg["action"].as_str().unwrap_or("") {
        "grant" => {
            saas.members
                .entry(role.clone())
                .or_default()
                .insert(user.clone());
            json!({"detail": format!("added {user} to {role}")})
        }
        "revoke" => {
            if let Some(m) = saas.members.get_mut(&role) {
                m.remove(&user);
            }
            return (StatusCode::NO_CONTENT, String::new());
        }
        "observe" => {
            json!({"present": saas.members.get(&role).is_some_and(|m| m.contains(&user))})
        }
        "discover" => json!(saas.standing),
        "remove_standing" => {
            let Ok(p) = serde_json::from_value::<StandingPrivilege>(msg["standing"].clone()) else {
                return (StatusCode::BAD_REQUEST, "no standing privilege".into());
            };
            saas.standing
                .retain(|s| (&s.account, &s.privilege) != (&p.account, &p.privilege));
            json!({"detail": format!("took {} from {}", p.privilege, p.account)})
        }
        other => return (StatusCode::BAD_REQUEST, format!("unknown action {other:?}")),
    };
    (StatusCode::OK, reply.to_string())
}

pub(super) struct WebhookFixture {
    receiver: Receiver,
    p: Arc<dyn Provisioner>,
}

impl WebhookFixture {
    pub(super) async fn start() -> Self {
        let secret = "conformance-hook-key";
        let receiver = Receiver {
            secret: secret.as_bytes().to_vec(),
            saas: Arc::default(),
        };
        let app = Router::new()
            .route("/hook", post(receive))
            .with_state(receiver.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a local port");
        let addr = listener.local_addr().expect("its address");
        tokio::spawn(async move { axum::serve(listener, app).await });
        let p = target(&format!(
            "kind = \"webhook\"\nurl = {}\nsecret = {}\ntimeout = \"5s\"\n\
             remove_drift = true\nkeep = [{}]\n",
            q(&format!("http://{addr}/hook")),
            q(secret),
            q(saas_account(Whom::Kept)),
        ));
        WebhookFixture { receiver, p }
    }
}

#[async_trait]
impl Fixture for WebhookFixture {
    fn kind(&self) -> &'static str {
        "webhook"
    }
    fn provisioner(&self) -> Arc<dyn Provisioner> {
        self.p.clone()
    }
    fn grant(&self, holder: &str) -> GrantSpec {
        spec(holder, "org-admin", json!({"team": "admins"}))
    }
    async fn holds(&self, g: &GrantSpec) -> bool {
        self.receiver
            .saas()
            .members
            .get(&g.role)
            .is_some_and(|m| m.contains(&g.user))
    }
    async fn remove_by_hand(&self, g: &GrantSpec) {
        if let Some(m) = self.receiver.saas().members.get_mut(&g.role) {
            m.remove(&g.user);
        }
    }
    async fn plant_standing(&self, whom: Whom) -> (String, String) {
        self.receiver.saas().standing.push(StandingPrivilege {
            account: saas_account(whom).into(),
            privilege: SAAS_PRIVILEGE.into(),
            source: "admin UI".into(),
        });
        (saas_account(whom).into(), SAAS_PRIVILEGE.into())
    }
    async fn plant_protected(&self) -> Vec<Protected> {
        vec![]
    }
    async fn holds_standing(&self, account: &str, privilege: &str) -> bool {
        self.receiver
            .saas()
            .standing
            .iter()
            .any(|s| s.account == account && s.privilege == privilege)
    }
    async fn take_down(&self) {
        self.receiver.saas().down = true;
    }
    async fn bring_up(&self) {
        self.receiver.saas().down = false;
    }
    fn down_says(&self) -> String {
        "HTTP 503".into()
    }
}

// ---------------------------------------------------------------------------------------
// plugin
// ---------------------------------------------------------------------------------------

/// `support/crm_plugin.py` with its state in a directory of the test's own.
pub(super) struct PluginFixture {
    _dir: tempfile::TempDir,
    saas: SaasFile,
    p: Arc<dyn Provisioner>,
}

/// The role the plugin's grants give (`crm_role` in the role settings).
const CRM_ROLE: &str = "Administrator";

impl PluginFixture {
    pub(super) fn start() -> Self {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let saas = SaasFile {
            path: dir.path().join("state.json"),
        };
        let program = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/crm_plugin.py");
        let p = program_target("plugin", &program, &saas);
        PluginFixture { _dir: dir, saas, p }
    }
}

#[async_trait]
impl Fixture for PluginFixture {
    fn kind(&self) -> &'static str {
        "plugin"
    }
    fn provisioner(&self) -> Arc<dyn Provisioner> {
        self.p.clone()
    }
    fn grant(&self, holder: &str) -> GrantSpec {
        spec(holder, "crm-admin", json!({"crm_role": CRM_ROLE}))
    }
    async fn holds(&self, g: &GrantSpec) -> bool {
        self.saas.holds(CRM_ROLE, &g.user)
    }
    async fn remove_by_hand(&self, g: &GrantSpec) {
        self.saas.remove_member(CRM_ROLE, &g.user);
    }
    async fn plant_standing(&self, whom: Whom) -> (String, String) {
        self.saas.plant(saas_account(whom), SAAS_PRIVILEGE);
        (saas_account(whom).into(), SAAS_PRIVILEGE.into())
    }
    async fn plant_protected(&self) -> Vec<Protected> {
        vec![]
    }
    async fn holds_standing(&self, account: &str, privilege: &str) -> bool {
        self.saas.has_standing(account, privilege)
    }
    async fn take_down(&self) {
        self.saas.set_down(true);
    }
    async fn bring_up(&self) {
        self.saas.set_down(false);
    }
    fn down_says(&self) -> String {
        "CRM API unavailable".into()
    }
}
