//! A provisioner plugin end to end through pedmd: `kind = "plugin"` in the configuration, the
//! stand-in SaaS program of `crates/provision/tests/support/crm_plugin.py` as the target. The
//! grant switches the membership on (its token handed to the holder once), reconciliation puts
//! back a membership removed by hand, releasing the grant takes it away.

mod common;

use common::*;
use pedm_api::{CreateRole, CreateTarget, TargetKind};
use std::path::Path;

fn members(state: &Path) -> serde_json::Value {
    let s: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(state).unwrap()).unwrap();
    s["members"]["Administrator"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_plugin_target_through_pedmd() {
    let tmp = tempfile::tempdir().unwrap();
    let state = tmp.path().join("state.json");
    let program =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../provision/tests/support/crm_plugin.py");
    let config = format!(
        r#"
[provision]
reconcile_interval = "1s"

[provision.targets.crm]
kind = "plugin"
program = "{program}"
timeout = "10s"
env = {{ STATE = "{state}" }}

[provision.roles.crm.admin]
crm_role = "Administrator"
secret = true
"#,
        program = program.canonicalize().unwrap().display(),
        state = state.display()
    );
    let s = Server::start_with(Options {
        config: Some(config),
        ..Default::default()
    });
    let a = s.admin();
    a.create_target(&CreateTarget {
        name: "crm".into(),
        kind: TargetKind::Command,
        description: Some("the CRM, through its provisioner plugin".into()),
        labels: Default::default(),
    })
    .await
    .unwrap();
    let role = CreateRole {
        auto_approve: true,
        ..CreateRole::new("admin", "1h")
    };
    a.create_role("crm", &role).await.unwrap();
    let token = user_with_token(&s, "alice", false).await;
    let alice = s.client(&token);
    let g = alice
        .create_request(&req("crm", "admin", "30m", "clean up the accounts"))
        .await
        .unwrap()
        .grant
        .unwrap();
    let g = wait_provision(&s, g.id, "active").await;
    assert_eq!(
        g.provision_detail.as_deref(),
        Some("added alice to Administrator")
    );
    assert_eq!(members(&state), serde_json::json!(["alice"]));
    let o = s.cli(&token, &["grant", "secret", &g.id.to_string()]);
    assert_eq!(
        stdout(&o).trim(),
        format!("tok-{}", &g.id.to_string()[..8]),
        "{}",
        stderr(&o)
    );

    // Removed by hand in the "SaaS": the next pass puts it back.
    std::fs::write(
        &state,
        r#"{"members": {"Administrator": []}, "standing": [], "keys": []}"#,
    )
    .unwrap();
    wait_event(&s, "provision.reapplied", &format!("grant:{}", g.id)).await;
    assert_eq!(members(&state), serde_json::json!(["alice"]));

    alice
        .release_grant(g.id, &pedm_api::Reason { reason: None })
        .await
        .unwrap();
    wait_provision(&s, g.id, "revoked").await;
    assert_eq!(members(&state), serde_json::json!([]));
}
