//! One conformance suite for every provisioner kind: the same checks, through the
//! [`Provisioner`] trait, against each kind's real target, with each provisioner built by
//! [`build`] from the TOML pedmd reads (`remove_drift = true`, one account in `keep`).
//!
//! What [`conformance`] checks, asking the target itself (not `observe`) where it says "holds":
//!
//! 1. grant is idempotent: granting twice succeeds; the target holds the privilege and
//!    `observe` says present;
//! 2. observe is truthful: once an admin takes the privilege away by hand, `observe` says
//!    absent; granting again puts it back;
//! 3. revoke is idempotent: revoking twice succeeds; the target no longer holds it and
//!    `observe` says absent;
//! 4. discover reports a standing privilege planted by hand, as the account and privilege it
//!    was planted as;
//! 5. drift is removed: `removable` agrees, `remove_standing` succeeds twice, the target no
//!    longer holds it and `discover` no longer reports it; a privilege of the account listed
//!    in `keep`, and one the kind protects by itself (where it has such accounts), is refused
//!    as [`ProvisionError::Invalid`] and stays in the target;
//! 6. a revoke while the target is down fails as retryable (`Unreachable`, saying why) and
//!    changes nothing; once the target is back the same revoke succeeds.
//!
//! The real part each kind runs against, and what "down" and "standing" are there:
//!
//! | kind | target | down | standing privilege planted by hand | protected by the kind |
//! |---|---|---|---|---|
//! | `postgres` | a throwaway PostgreSQL cluster of its own (`TestPostgres`) | the cluster stopped (`pg_ctl stop -m immediate`) | `GRANT ct_priv TO ct_eve` (`member:ct_priv`) | the login pedm connects as (`postgres`) |
//! | `mariadb` | a throwaway MariaDB server of its own (`support/mariadb.rs`) | the server killed | `GRANT ct_priv TO 'ct_eve'@'%'` | `root@localhost` and the account pedm connects as, members of `ct_priv` as its administrators |
//! | `linux_group` | this host's users and groups (`groupadd`/`useradd`, root only) | `/etc/group.lock` held the way shadow-utils holds it: `gpasswd` says "cannot lock /etc/group; try again later" | `gpasswd -a` into a group listed in `privileged_groups` | `root` |
//! | `command` | a Python script keeping a stand-in SaaS in a JSON file | the script exits 75 (`EX_TEMPFAIL`) | an org owner added to the file | none (only `keep`) |
//! | `webhook` | an axum server on 127.0.0.1 checking signatures, state in memory | it answers HTTP 503 | an org owner added to its state | none (only `keep`) |
//! | `plugin` | `support/crm_plugin.py` speaking the plugin protocol, state in a JSON file | it answers every request with a `retryable` error | an entry in its `standing` list | none (only `keep`) |
//! | `kubernetes` | a stand-in of the API server's RBAC API (`support/kube_standin.rs`, HTTPS; checked with the official `kubernetes` client) | it answers 503 | a ClusterRoleBinding of `cluster-admin` | the identity pedm calls the API server as (`SelfSubjectReview`), `system:` subjects |
//! | `aws` (IAM) | moto in server mode (`support/moto.rs`), a managed policy attached to an IAM user | the TCP relay in front of moto cut (connections refused, moto's state kept) | `AdministratorAccess` attached to an IAM user | the identity pedm calls AWS as (moto's `user/moto`) |
//! | `aws` (Identity Center) | moto, a permission set assigned in a member account | as above | a privileged permission set assigned by hand | none (only `keep`) |
//! | `gcp` | a stand-in of Resource Manager v3 IAM (`support/gcp_standin.rs`; Google Cloud's IAM cannot run here), a conditional binding of `roles/compute.admin` expiring at the grant's end | it answers 503 `UNAVAILABLE` with a `Retry-After` longer than the timeout | an unconditional `roles/owner` binding | the service account pedm calls Google Cloud as |
//! | `azure` (RBAC) | a stand-in of Entra ID, Resource Manager and Graph (`support/azure_standin.rs`, HTTPS; checked with the official `azure-mgmt-authorization`), a Reader assignment at a resource group | it answers 503 with `Retry-After` | Owner assigned at the subscription | the identity pedm calls Azure as (its service principal, `sp/<client_id>`) |
//! | `azure` (Entra ID group) | the same stand-in, membership of a group through Graph | as above | as above | as above |
//!
//! Skipped with `SKIP:` printed: `postgres` and `mariadb` when their server binaries are not
//! installed, `linux_group` when not run as root.

#[path = "conformance/aws.rs"]
mod aws_fixtures;
#[path = "conformance/azure.rs"]
mod azure_fixture;
#[path = "support/azure_standin.rs"]
mod azure_standin;
#[path = "conformance/databases.rs"]
mod databases;
#[path = "conformance/gcp.rs"]
mod gcp_fixture;
#[allow(dead_code)] // each test uses part of it
#[path = "support/gcp_standin.rs"]
mod gcp_standin;
#[allow(dead_code)]
#[path = "support/kube_standin.rs"]
mod kube_standin;
#[path = "conformance/kubernetes.rs"]
mod kubernetes_fixture;
#[path = "conformance/linux_group.rs"]
mod linux_group_fixture;
#[allow(dead_code)] // shared with tests/mariadb.rs, which uses the rest of it
#[path = "support/mariadb.rs"]
mod mariadb_support;
#[allow(dead_code)] // shared with the pedm crate's tests
#[path = "support/moto.rs"]
mod moto;
#[path = "conformance/programs.rs"]
mod programs;
#[allow(dead_code)] // each stand-in uses part of it
#[path = "support/standin.rs"]
mod standin;

use aws_fixtures::{AwsIamFixture, AwsIdentityCenterFixture};
use azure_fixture::AzureFixture;

use databases::{MariaDbFixture, PostgresFixture};
use gcp_fixture::GcpFixture;
use linux_group_fixture::LinuxGroupFixture;
use programs::{CommandFixture, PluginFixture, WebhookFixture};

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use mariadb_support::TestMariaDb;
use pedm_provision::{
    GrantSpec, ProvisionError, Provisioner, StandingPrivilege, TargetConfig, build,
};
use pedm_store::testing::TestPostgres;
use serde_json::{Value, json};
use sqlx::{Connection, PgConnection};
use uuid::Uuid;

// ---------------------------------------------------------------------------------------
// The suite
// ---------------------------------------------------------------------------------------

/// Who a standing privilege planted by hand is given to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Whom {
    /// An account nothing exempts: drift, to be removed.
    Drift,
    /// The account the fixture's configuration lists in `keep`.
    Kept,
}

/// A standing privilege the provisioner protects by itself, whatever `keep` says.
struct Protected {
    account: String,
    privilege: String,
    /// Part of the refusal's message.
    why: &'static str,
}

/// One kind's real target and the provisioner built for it.
#[async_trait]
trait Fixture: Send + Sync {
    fn kind(&self) -> &'static str;
    /// The real provisioner, built from configuration with drift removal on.
    fn provisioner(&self) -> Arc<dyn Provisioner>;
    /// A grant this target provisions, to `holder` (an account the fixture has made).
    fn grant(&self, holder: &str) -> GrantSpec;
    /// Whether the target holds `g`'s privilege, asked of the target directly.
    async fn holds(&self, g: &GrantSpec) -> bool;
    /// An admin takes `g`'s privilege away outside pedm.
    async fn remove_by_hand(&self, g: &GrantSpec);
    /// An admin gives an account a standing privilege outside pedm; `(account, privilege)`
    /// as discover must report it.
    async fn plant_standing(&self, whom: Whom) -> (String, String);
    /// Like [`Fixture::plant_standing`] (or found already there), for accounts the kind
    /// itself never removes anything from; none for kinds that protect nothing of their own.
    async fn plant_protected(&self) -> Vec<Protected>;
    /// Whether `account` holds `privilege` in the target, asked of the target directly.
    async fn holds_standing(&self, account: &str, privilege: &str) -> bool;
    /// Makes the target unreachable (or answer "not now").
    async fn take_down(&self);
    async fn bring_up(&self);
    /// Part of the message of an error while the target is down.
    fn down_says(&self) -> String;
}

async fn observed(k: &str, p: &dyn Provisioner, g: &GrantSpec, want: bool, when: &str) {
    let seen = p
        .observe(g)
        .await
        .unwrap_or_else(|e| panic!("{k}: observe {when}: {e}"));
    assert_eq!(
        seen.present, want,
        "{k}: observe {when} says present = {}, want {want} ({})",
        seen.present, seen.detail
    );
}

async fn discover(k: &str, p: &dyn Provisioner, when: &str) -> Vec<StandingPrivilege> {
    p.discover()
        .await
        .unwrap_or_else(|e| panic!("{k}: discover {when}: {e}"))
}

fn find(found: &[StandingPrivilege], account: &str, privilege: &str) -> Option<StandingPrivilege> {
    found
        .iter()
        .find(|s| s.account == account && s.privilege == privilege)
        .cloned()
}

/// The checks every provisioner kind must pass (see the module documentation).
async fn conformance(f: &dyn Fixture) {
    let k = f.kind();
    let p = f.provisioner();
    let p = &*p;
    assert_eq!(
        p.kind(),
        k,
        "{k}: the provisioner built calls itself {}",
        p.kind()
    );
    assert!(p.removes_drift(), "{k}: built with remove_drift = true");

    // 1. Grant is idempotent.
    let g = f.grant("alice");
    assert!(
        !f.holds(&g).await,
        "{k}: alice holds the privilege before any grant"
    );
    observed(k, p, &g, false, "before the grant").await;
    for n in 1..=2 {
        p.grant(&g)
            .await
            .unwrap_or_else(|e| panic!("{k}: grant #{n}: {e}"));
    }
    assert!(
        f.holds(&g).await,
        "{k}: the target does not hold the granted privilege"
    );
    observed(k, p, &g, true, "after granting twice").await;

    // 2. Observe tells the truth: taken away by hand, it is absent; a grant puts it back.
    f.remove_by_hand(&g).await;
    assert!(!f.holds(&g).await, "{k}: still held after removal by hand");
    observed(k, p, &g, false, "after removal by hand").await;
    p.grant(&g)
        .await
        .unwrap_or_else(|e| panic!("{k}: grant after removal by hand: {e}"));
    assert!(
        f.holds(&g).await,
        "{k}: the grant after removal by hand did not restore it"
    );
    observed(k, p, &g, true, "after granting again").await;

    // 3. Revoke is idempotent.
    for n in 1..=2 {
        p.revoke(&g)
            .await
            .unwrap_or_else(|e| panic!("{k}: revoke #{n}: {e}"));
    }
    assert!(!f.holds(&g).await, "{k}: still held after revoking twice");
    observed(k, p, &g, false, "after revoking twice").await;

    // 4. Discover reports standing privileges planted by hand.
    let (account, privilege) = f.plant_standing(Whom::Drift).await;
    let (kept_account, kept_privilege) = f.plant_standing(Whom::Kept).await;
    let protected = f.plant_protected().await;
    assert!(
        f.holds_standing(&account, &privilege).await,
        "{k}: planting {privilege} for {account} did not take"
    );
    let found = discover(k, p, "after planting").await;
    let drift = find(&found, &account, &privilege).unwrap_or_else(|| {
        panic!("{k}: discover does not report {account} with {privilege}: {found:#?}")
    });
    let kept = find(&found, &kept_account, &kept_privilege).unwrap_or_else(|| {
        panic!("{k}: discover does not report {kept_account} with {kept_privilege}: {found:#?}")
    });
    let mut refused = vec![(kept, "keep")];
    for own in &protected {
        let sp = find(&found, &own.account, &own.privilege).unwrap_or_else(|| {
            panic!(
                "{k}: discover does not report {} with {}: {found:#?}",
                own.account, own.privilege
            )
        });
        refused.push((sp, own.why));
    }

    // 5. Drift is removed, idempotently; what is protected is refused and stays.
    assert_eq!(
        p.removable(&drift),
        Ok(()),
        "{k}: {account} {privilege} is not removable"
    );
    for n in 1..=2 {
        p.remove_standing(&drift)
            .await
            .unwrap_or_else(|e| panic!("{k}: remove_standing #{n} of {account} {privilege}: {e}"));
    }
    assert!(
        !f.holds_standing(&account, &privilege).await,
        "{k}: {account} still holds {privilege} after remove_standing"
    );
    let found = discover(k, p, "after drift removal").await;
    assert!(
        find(&found, &account, &privilege).is_none(),
        "{k}: discover still reports removed drift {account} {privilege}: {found:#?}"
    );
    for (sp, why) in refused {
        let who = format!("{} {}", sp.account, sp.privilege);
        match p.removable(&sp) {
            Err(m) if m.contains(why) => {}
            other => panic!("{k}: removable({who}) = {other:?}, want a refusal saying {why:?}"),
        }
        match p.remove_standing(&sp).await {
            Err(ProvisionError::Invalid(m)) if m.contains(why) => {}
            other => panic!("{k}: remove_standing({who}) = {other:?}, want Invalid saying {why:?}"),
        }
        assert!(
            f.holds_standing(&sp.account, &sp.privilege).await,
            "{k}: the refused removal of {who} changed the target"
        );
        let found = discover(k, p, "after a refused removal").await;
        assert!(
            find(&found, &sp.account, &sp.privilege).is_some(),
            "{k}: {who} is no longer reported after a refused removal: {found:#?}"
        );
    }

    // 6. A revoke while the target is down is retryable and loses nothing.
    let g2 = f.grant("bob");
    p.grant(&g2)
        .await
        .unwrap_or_else(|e| panic!("{k}: grant to bob: {e}"));
    assert!(f.holds(&g2).await, "{k}: bob's grant is not in the target");
    f.take_down().await;
    let e = match p.revoke(&g2).await {
        Ok(()) => panic!("{k}: revoke succeeded while the target was down"),
        Err(e) => e,
    };
    assert!(
        e.is_retryable() && matches!(e, ProvisionError::Unreachable(_)),
        "{k}: a revoke while down is not retryable: {e:?}"
    );
    let says = f.down_says();
    assert!(
        e.to_string().contains(&says),
        "{k}: the error while down does not say {says:?}: {e}"
    );
    f.bring_up().await;
    assert!(
        f.holds(&g2).await,
        "{k}: the revoke that failed while the target was down changed it anyway"
    );
    p.revoke(&g2)
        .await
        .unwrap_or_else(|e| panic!("{k}: revoke retried once the target is back: {e}"));
    assert!(
        !f.holds(&g2).await,
        "{k}: bob still holds it after the retried revoke"
    );
    observed(k, p, &g2, false, "after the retried revoke").await;
}

#[tokio::test]
async fn postgres() {
    let Some(f) = PostgresFixture::start().await else {
        return;
    };
    conformance(&f).await;
}

#[tokio::test]
async fn mariadb() {
    let Some(f) = MariaDbFixture::start() else {
        return;
    };
    conformance(&f).await;
}

#[tokio::test]
async fn linux_group() {
    let Some(f) = LinuxGroupFixture::start() else {
        return;
    };
    conformance(&f).await;
}

#[tokio::test]
async fn command() {
    conformance(&CommandFixture::start()).await;
}

#[tokio::test]
async fn webhook() {
    conformance(&WebhookFixture::start().await).await;
}

#[tokio::test]
async fn plugin() {
    conformance(&PluginFixture::start()).await;
}

#[tokio::test]
async fn kubernetes() {
    conformance(&kubernetes_fixture::KubernetesFixture::start().await).await;
}

#[tokio::test]
async fn aws_iam() {
    conformance(&AwsIamFixture::start().await).await;
}

#[tokio::test]
async fn aws_identity_center() {
    conformance(&AwsIdentityCenterFixture::start().await).await;
}

/// Against a stand-in of Resource Manager's IAM: Google Cloud's IAM cannot run on this machine.
#[tokio::test]
async fn gcp() {
    conformance(&GcpFixture::start().await).await;
}

/// Against a stand-in: Azure's APIs cannot run on this machine.
#[tokio::test]
async fn azure_role_assignment() {
    conformance(&AzureFixture::role().await).await;
}

/// Against a stand-in: Azure's APIs cannot run on this machine.
#[tokio::test]
async fn azure_group_membership() {
    conformance(&AzureFixture::group().await).await;
}

// ---------------------------------------------------------------------------------------
// Shared helpers
// ---------------------------------------------------------------------------------------

/// `s` as a TOML string.
fn q(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

/// The provisioner pedmd would build from the `[provision.targets.conformance]` table `text`.
fn target(text: &str) -> Arc<dyn Provisioner> {
    let config: TargetConfig =
        toml::from_str(text).unwrap_or_else(|e| panic!("target configuration {text}: {e}"));
    build("conformance", &config).unwrap_or_else(|e| panic!("building {text}: {e}"))
}

fn spec(user: &str, role: &str, settings: Value) -> GrantSpec {
    GrantSpec {
        grant_id: Uuid::now_v7(),
        user: user.into(),
        target: "conformance".into(),
        role: role.into(),
        run_as: None,
        expires_at: jiff::Timestamp::now() + jiff::SignedDuration::from_hours(1),
        settings,
    }
}

/// Runs a program to completion; its standard output. Panics unless it succeeds.
fn run(args: &[&str]) -> String {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("{args:?}: {e}"));
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A stand-in SaaS kept in a JSON file, as `support/crm_plugin.py` keeps it (and the command
/// fixture's script): `{"members": {role: [user]}, "standing": [{account, privilege,
/// source}], "keys": [...]}`; while `<file>.down` exists the SaaS is down.
struct SaasFile {
    path: PathBuf,
}

impl SaasFile {
    fn load(&self) -> Value {
        match std::fs::read_to_string(&self.path) {
            Ok(t) => serde_json::from_str(&t).expect("the SaaS state is JSON"),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                json!({"members": {}, "standing": [], "keys": []})
            }
            Err(e) => panic!("{}: {e}", self.path.display()),
        }
    }
    fn save(&self, v: &Value) {
        let tmp = self.path.with_extension("by-hand");
        std::fs::write(&tmp, v.to_string()).expect("writing the SaaS state");
        std::fs::rename(&tmp, &self.path).expect("replacing the SaaS state");
    }
    fn holds(&self, role: &str, user: &str) -> bool {
        self.load()["members"][role]
            .as_array()
            .is_some_and(|m| m.iter().any(|u| u == user))
    }
    fn remove_member(&self, role: &str, user: &str) {
        let mut s = self.load();
        if let Some(m) = s["members"][role].as_array_mut() {
            m.retain(|u| u != user);
        }
        self.save(&s);
    }
    fn plant(&self, account: &str, privilege: &str) {
        let mut s = self.load();
        s["standing"]
            .as_array_mut()
            .expect("a standing list")
            .push(json!({"account": account, "privilege": privilege, "source": "admin UI"}));
        self.save(&s);
    }
    fn has_standing(&self, account: &str, privilege: &str) -> bool {
        self.load()["standing"].as_array().is_some_and(|l| {
            l.iter()
                .any(|s| s["account"] == account && s["privilege"] == privilege)
        })
    }
    fn down_flag(&self) -> PathBuf {
        let mut p = self.path.clone().into_os_string();
        p.push(".down");
        PathBuf::from(p)
    }
    fn set_down(&self, down: bool) {
        if down {
            std::fs::write(self.down_flag(), "").expect("writing the down flag");
        } else {
            std::fs::remove_file(self.down_flag()).expect("removing the down flag");
        }
    }
}

/// The SaaS accounts of the command, webhook and plugin fixtures.
fn saas_account(whom: Whom) -> &'static str {
    match whom {
        Whom::Drift => "eve@example.com",
        Whom::Kept => "keeper@example.com",
    }
}

const SAAS_PRIVILEGE: &str = "org-owner";
