//! Trusted devices, with the real binaries over `pedmd --dev` HTTPS: `pedm device enroll`
//! makes a key on "this machine" (a config directory) and gets a certificate; once an admin
//! approves it, requests made from it carry `context.device.trusted`, so a policy can ask for a
//! trusted device. The same token from another machine, or another user's token with this
//! machine's certificate, carries no trusted device; a revoked device fails the handshake.

mod common;

use common::*;
use pedm_api::*;
use std::path::Path;
use std::process::{Command, Output, Stdio};

const POLICY: &str = r#"
@id("admins-administer")
permit (principal, action in [Pedm::Action::"manage_users", Pedm::Action::"manage_targets",
    Pedm::Action::"manage_policies", Pedm::Action::"manage_grants", Pedm::Action::"read_audit"], resource)
when { principal.admin };

// Root only from a trusted device.
@id("root-from-trusted-device")
@auto_approve("true")
permit (principal, action == Pedm::Action::"request", resource)
when { resource.name == "root" && context.device has trusted && context.device.trusted };
"#;

/// `pedm` on a machine whose configuration directory is `home`.
fn pedm_on(s: &Server, home: &Path, token: &str, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_pedm"))
        .args(args)
        .env("PEDM_URL", &s.url)
        .env("PEDM_TOKEN", token)
        .env("PEDM_CA", s.ca().expect("https"))
        .env("XDG_CONFIG_HOME", home)
        .env_remove("PEDM_TOKEN_FILE")
        .stdin(Stdio::null())
        .output()
        .expect("pedm")
}

/// The state of a root request made from `home`.
fn root_from(s: &Server, home: &Path, token: &str) -> String {
    let o = pedm_on(
        s,
        home,
        token,
        &[
            "--json",
            "request",
            "create",
            "--target",
            "web1",
            "--role",
            "root",
            "--duration",
            "10m",
            "--justification",
            "rotate keys",
        ],
    );
    if !o.status.success() {
        assert!(stderr(&o).contains("denied by policy"), "{}", stderr(&o));
        return "denied".into();
    }
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json");
    v["request"]["state"].as_str().expect("state").to_string()
}

#[tokio::test]
async fn policy_can_require_a_trusted_device() {
    let s = Server::start_with(Options {
        dev: true,
        ..Default::default()
    });
    standard_targets(&s).await;
    s.admin()
        .apply_policies(&ApplyPolicies {
            sources: vec![PolicySource {
                name: "devices.cedar".into(),
                text: POLICY.into(),
            }],
            comment: None,
        })
        .await
        .unwrap();
    let alice = user_with_token(&s, "alice", false).await;
    let bob = user_with_token(&s, "bob", false).await;
    let laptop = tempfile::tempdir().unwrap();
    let elsewhere = tempfile::tempdir().unwrap();

    // Enroll the laptop: key and certificate in its config directory, key private.
    let o = pedm_on(
        &s,
        laptop.path(),
        &alice,
        &["device", "enroll", "--name", "laptop"],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    let id = out
        .split("pedm device approve ")
        .nth(1)
        .map(|t| t.trim().to_string())
        .expect("the approve command");
    let key = laptop.path().join("pedm/device-key.pem");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&key).unwrap().permissions().mode() & 0o077,
        0
    );

    // Not approved yet: the laptop is not trusted.
    assert_eq!(root_from(&s, laptop.path(), &alice), "denied");
    // Nobody approves their own device, nor a non-admin anyone's.
    let e = s.client(&alice).approve_device(&id).await.unwrap_err();
    assert_eq!(e.status(), Some(403), "{e}");
    let d = s.admin().approve_device(&id).await.unwrap();
    assert!(d.approved_at.is_some());

    // From the trusted laptop: granted. The same token from another machine: denied.
    assert_eq!(root_from(&s, laptop.path(), &alice), "approved");
    assert_eq!(root_from(&s, elsewhere.path(), &alice), "denied");
    // Bob with alice's laptop certificate: the device is not his; recorded.
    assert_eq!(root_from(&s, laptop.path(), &bob), "denied");
    let misuse = s
        .admin()
        .audit_events(&AuditQuery {
            action: Some("device.use".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(misuse.len(), 1);
    assert_eq!(misuse[0].actor, "bob");

    // The device as policy saw it, and as listed.
    let enrolled = s
        .admin()
        .audit_events(&AuditQuery {
            action: Some("device.enrolled".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(enrolled[0].data["posture"]["os"], "linux");
    let o = pedm_on(&s, laptop.path(), &alice, &["device", "list"]);
    assert!(
        stdout(&o).contains("trusted") && stdout(&o).contains("laptop"),
        "{}",
        stdout(&o)
    );

    // Revoked by its owner: the laptop's certificate no longer passes the handshake.
    let o = pedm_on(&s, laptop.path(), &alice, &["device", "revoke", &id]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = pedm_on(&s, laptop.path(), &alice, &["whoami"]);
    assert!(!o.status.success(), "a revoked device still connects");
    // Other machines are unaffected.
    let o = pedm_on(&s, elsewhere.path(), &alice, &["whoami"]);
    assert!(o.status.success(), "{}", stderr(&o));
}
