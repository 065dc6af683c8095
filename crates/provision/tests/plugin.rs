//! The plugin provisioner against a real program speaking the protocol
//! (`tests/support/crm_plugin.py`, a stand-in SaaS kept in a JSON file), with every line both
//! sides sent checked against the protocol's JSON Schemas (`docs/schemas/provisioner/`, by
//! Python's `jsonschema`, which `scripts/install-test-deps` installs).

use std::path::{Path, PathBuf};
use std::time::Duration;

use pedm_provision::{
    GrantSpec, PluginConfig, PluginProvisioner, ProvisionError, Provisioner, StandingPrivilege,
};
use serde_json::json;
use uuid::Uuid;

fn program() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/crm_plugin.py")
}

struct Crm {
    dir: tempfile::TempDir,
}

impl Crm {
    fn new() -> Crm {
        Crm {
            dir: tempfile::tempdir().unwrap(),
        }
    }
    fn state(&self) -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(self.dir.path().join("state.json")).unwrap())
            .unwrap()
    }
    fn plant(&self, account: &str, privilege: &str) {
        let mut s = json!({"members": {}, "standing": [], "keys": []});
        if let Ok(t) = std::fs::read_to_string(self.dir.path().join("state.json")) {
            s = serde_json::from_str(&t).unwrap();
        }
        s["standing"]
            .as_array_mut()
            .unwrap()
            .push(json!({"account": account, "privilege": privilege, "source": "crm admin UI"}));
        std::fs::write(self.dir.path().join("state.json"), s.to_string()).unwrap();
    }
    fn config(&self, extra: &[(&str, &str)]) -> PluginConfig {
        let mut c = PluginConfig::new(program());
        c.env.insert(
            "STATE".into(),
            self.dir.path().join("state.json").display().to_string(),
        );
        c.env.insert(
            "TRANSCRIPT".into(),
            self.dir.path().join("transcript").display().to_string(),
        );
        for (k, v) in extra {
            c.env.insert(k.to_string(), v.to_string());
        }
        c
    }
    fn provisioner(&self, extra: &[(&str, &str)]) -> PluginProvisioner {
        PluginProvisioner::new("crm", self.config(extra)).unwrap()
    }
    /// Every line each side wrote, checked against its schema; returns them.
    fn check_transcript(&self) -> Vec<(String, serde_json::Value)> {
        let schemas = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/schemas/provisioner");
        let transcript = self.dir.path().join("transcript");
        let check = r#"
import json, sys, pathlib
from jsonschema import Draft202012Validator
from referencing import Registry, Resource
d = pathlib.Path(sys.argv[1])
schemas = {n: json.loads((d / n).read_text()) for n in ["pedm-to-plugin.schema.json", "plugin-to-pedm.schema.json"]}
registry = Registry().with_resources([(s["$id"], Resource.from_contents(s)) for s in schemas.values()])
v = {"<": Draft202012Validator(schemas["pedm-to-plugin.schema.json"], registry=registry, format_checker=Draft202012Validator.FORMAT_CHECKER),
     ">": Draft202012Validator(schemas["plugin-to-pedm.schema.json"], registry=registry, format_checker=Draft202012Validator.FORMAT_CHECKER)}
bad = 0
for n, line in enumerate(open(sys.argv[2]), 1):
    side, text = line[0], line[2:].rstrip("\n")
    for e in v[side].iter_errors(json.loads(text)):
        bad += 1
        print(f"line {n} ({'pedm' if side == '<' else 'plugin'}): {e.message}: {text}")
sys.exit(1 if bad else 0)
"#;
        let out = std::process::Command::new("python3")
            .arg("-c")
            .arg(check)
            .arg(&schemas)
            .arg(&transcript)
            .output()
            .expect("python3");
        assert!(
            out.status.success(),
            "messages off the schema (or jsonschema missing: scripts/install-test-deps):\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        std::fs::read_to_string(&transcript)
            .unwrap()
            .lines()
            .map(|l| (l[..1].to_string(), serde_json::from_str(&l[2..]).unwrap()))
            .collect()
    }
}

fn spec(user: &str, settings: serde_json::Value) -> GrantSpec {
    GrantSpec {
        grant_id: Uuid::now_v7(),
        user: user.into(),
        target: "crm".into(),
        role: "admin".into(),
        run_as: None,
        expires_at: jiff::Timestamp::now() + jiff::SignedDuration::from_hours(1),
        settings,
    }
}

#[tokio::test]
async fn every_operation_round_trips_and_every_message_fits_the_schema() {
    let crm = Crm::new();
    let p = crm.provisioner(&[]);
    let g = spec(
        "alice",
        json!({"crm_role": "Administrator", "secret": true}),
    );
    let out = p.grant(&g).await.unwrap();
    assert_eq!(out.detail, "added alice to Administrator");
    assert_eq!(
        out.secret.as_deref(),
        Some(&format!("tok-{}", &g.grant_id.to_string()[..8])[..])
    );
    assert_eq!(crm.state()["members"]["Administrator"], json!(["alice"]));
    // A retry carries the same idempotency key and changes nothing.
    p.grant(&g).await.unwrap();
    assert_eq!(crm.state()["members"]["Administrator"], json!(["alice"]));
    let keys = crm.state()["keys"].clone();
    assert_eq!(keys, json!([g.grant_id, g.grant_id]));
    assert!(p.observe(&g).await.unwrap().present);
    let hello = p.hello().unwrap();
    assert_eq!(hello.name, "crm-standin");
    assert_eq!(hello.capabilities.len(), 5);

    crm.plant("mallory", "role:Administrator");
    let found = p.discover().await.unwrap();
    assert_eq!(
        found,
        vec![StandingPrivilege {
            account: "mallory".into(),
            privilege: "role:Administrator".into(),
            source: "crm admin UI".into()
        }]
    );
    let done = p.remove_standing(&found[0]).await.unwrap();
    assert_eq!(done, "took role:Administrator from mallory");
    assert!(p.discover().await.unwrap().is_empty());

    p.revoke(&g).await.unwrap();
    p.revoke(&g).await.unwrap();
    let seen = p.observe(&g).await.unwrap();
    assert!(!seen.present, "{}", seen.detail);

    let lines = crm.check_transcript();
    // One hello each way, then requests answered in order with increasing ids.
    assert_eq!(lines[0].1["type"], "hello");
    assert_eq!(lines[0].1["target"], "crm");
    assert_eq!(lines[1].1["type"], "hello");
    let ids: Vec<u64> = lines
        .iter()
        .filter(|(side, _)| side == "<")
        .filter_map(|(_, m)| m["id"].as_u64())
        .collect();
    assert_eq!(ids, (1..=ids.len() as u64).collect::<Vec<_>>());
}

#[tokio::test]
async fn error_kinds_map_to_retry_decisions() {
    let crm = Crm::new();
    let p = crm.provisioner(&[]);
    for (kind, check) in [
        (
            "retryable",
            (|e: &ProvisionError| matches!(e, ProvisionError::Unreachable(_)))
                as fn(&ProvisionError) -> bool,
        ),
        ("refused", |e| matches!(e, ProvisionError::Refused(_))),
        ("invalid", |e| matches!(e, ProvisionError::Invalid(_))),
    ] {
        let e = p
            .grant(&spec("bob", json!({"fail": kind})))
            .await
            .unwrap_err();
        assert!(check(&e), "{kind}: {e:?}");
        assert!(e.to_string().contains(&format!("scripted {kind}")), "{e}");
    }
    crm.check_transcript();
}

#[tokio::test]
async fn a_program_that_crashes_hangs_or_babbles_is_restarted_and_nothing_is_lost() {
    let crm = Crm::new();
    let mut config = crm.config(&[]);
    config.timeout = Duration::from_secs(2);
    let p = PluginProvisioner::new("crm", config).unwrap();
    let ok = spec("carol", json!({}));
    p.grant(&ok).await.unwrap();
    for (settings, says) in [
        (json!({"crash": true}), "exited"),
        (json!({"garbage": true}), "broke the protocol"),
        (json!({"wrong_id": true}), "answers id"),
        (json!({"hang": true}), "no answer"),
    ] {
        let e = p
            .revoke(&spec("carol", settings.clone()))
            .await
            .unwrap_err();
        assert!(e.is_retryable(), "{settings}: {e:?}");
        assert!(e.to_string().contains(says), "{settings}: {e}");
        // The next call starts it afresh (a new hello) and works.
        assert!(p.observe(&ok).await.unwrap().present);
    }
    let lines = crm.check_transcript();
    let hellos = lines
        .iter()
        .filter(|(side, m)| side == "<" && m["type"] == "hello")
        .count();
    assert_eq!(hellos, 5, "started once, then once after each failure");
}

#[tokio::test]
async fn undeclared_operations_are_never_sent_and_versions_must_match() {
    let crm = Crm::new();
    let p = crm.provisioner(&[("CAPS", "grant,revoke")]);
    let g = spec("dave", json!({}));
    p.grant(&g).await.unwrap();
    for e in [
        p.observe(&g).await.unwrap_err(),
        p.discover().await.unwrap_err(),
    ] {
        assert!(matches!(e, ProvisionError::Invalid(_)), "{e:?}");
        assert!(e.to_string().contains("does not declare"), "{e}");
    }
    let sp = StandingPrivilege {
        account: "x".into(),
        privilege: "y".into(),
        source: String::new(),
    };
    assert!(p.removable(&sp).is_err());
    let sent: Vec<String> = crm
        .check_transcript()
        .into_iter()
        .filter(|(side, _)| side == "<")
        .filter_map(|(_, m)| m["op"].as_str().map(String::from))
        .collect();
    assert_eq!(sent, ["grant"]);

    let other = Crm::new();
    let p = other.provisioner(&[("PROTO", "2")]);
    let e = p.grant(&spec("erin", json!({}))).await.unwrap_err();
    assert!(matches!(e, ProvisionError::Invalid(_)), "{e:?}");
    assert!(e.to_string().contains("protocol Some(2)"), "{e}");

    for bad in [PluginConfig::new("relative/plugin"), {
        let mut c = PluginConfig::new("/bin/true");
        c.env.insert("A=B".into(), "x".into());
        c
    }] {
        assert!(PluginProvisioner::new("crm", bad).is_err());
    }
    let missing = PluginProvisioner::new("crm", PluginConfig::new("/nonexistent/plugin")).unwrap();
    let e = missing.grant(&spec("fay", json!({}))).await.unwrap_err();
    assert!(matches!(e, ProvisionError::Invalid(_)), "{e:?}");
}
