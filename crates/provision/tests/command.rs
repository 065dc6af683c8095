//! The command provisioner with real shell scripts written by the tests.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use pedm_provision::{
    CommandConfig, CommandProvisioner, GrantSpec, MAX_CAPTURE, ProvisionError, Provisioner,
    StandingPrivilege,
};
use serde_json::json;
use uuid::Uuid;

/// Writes `body` as an executable `/bin/sh` script in a fresh 0700 directory.
fn script(body: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
    let path = dir.path().join("provision.sh");
    std::fs::write(
        &path,
        format!("#!/bin/sh\ndir=\"$(dirname \"$0\")\"\n{body}"),
    )
    .unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o700)).unwrap();
    (dir, path)
}

fn spec() -> GrantSpec {
    GrantSpec {
        grant_id: Uuid::now_v7(),
        user: "alice".into(),
        target: "aws-prod".into(),
        role: "admin".into(),
        run_as: Some("root".into()),
        expires_at: jiff::Timestamp::now() + jiff::SignedDuration::from_hours(1),
        settings: json!({"account": "123456789012", "permission_set": "Admin"}),
    }
}

fn provisioner(program: &Path, f: impl FnOnce(&mut CommandConfig)) -> CommandProvisioner {
    let mut c = CommandConfig::new(program);
    f(&mut c);
    CommandProvisioner::new("aws-prod", c).unwrap()
}

const RECORDER: &str = r#"
for a; do action="$a"; done
echo "$@" >> "$dir/argv.log"
cat > "$dir/stdin.$action.json"
env | sort > "$dir/env.$action"
case "$action" in
  grant)
    touch "$dir/present"
    echo "granting for real" >&2
    echo '{"secret": "s3cr3t-token", "detail": "granted via script"}' ;;
  revoke) rm -f "$dir/present" ;;
  observe)
    if [ -f "$dir/present" ]; then echo '{"present": true}'; else echo '{"present": false, "detail": "nothing"}'; fi ;;
  discover) echo '[{"account": "root-user", "privilege": "AdministratorAccess", "source": "iam"}]' ;;
esac
"#;

#[tokio::test]
async fn round_trip_with_recorded_argv_stdin_and_clean_env() {
    // Set by cargo for the test process: must not reach the script.
    assert!(std::env::var_os("CARGO_MANIFEST_DIR").is_some());
    let (dir, path) = script(RECORDER);
    let p = provisioner(&path, |c| {
        c.args = vec!["--profile".into(), "prod".into()];
        c.env.insert("AWS_REGION".into(), "eu-west-1".into());
    });
    let g = spec();

    assert!(!p.observe(&g).await.unwrap().present);
    let out = p.grant(&g).await.unwrap();
    assert_eq!(out.secret.as_deref(), Some("s3cr3t-token"));
    assert_eq!(out.detail, "granted via script");
    assert!(!format!("{out:?}").contains("s3cr3t"));
    assert!(p.observe(&g).await.unwrap().present);
    p.revoke(&g).await.unwrap();
    let seen = p.observe(&g).await.unwrap();
    assert!(!seen.present);
    assert_eq!(seen.detail, "nothing");
    let found = p.discover().await.unwrap();
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].account, "root-user");

    let argv = std::fs::read_to_string(dir.path().join("argv.log")).unwrap();
    assert_eq!(
        argv.lines().collect::<Vec<_>>(),
        [
            "--profile prod observe",
            "--profile prod grant",
            "--profile prod observe",
            "--profile prod revoke",
            "--profile prod observe",
            "--profile prod discover",
        ]
    );
    let stdin: GrantSpec = serde_json::from_str(
        &std::fs::read_to_string(dir.path().join("stdin.grant.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(stdin, g);
    let stdin: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.path().join("stdin.discover.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(stdin, json!({"target": "aws-prod"}));

    let env = std::fs::read_to_string(dir.path().join("env.grant")).unwrap();
    let names: Vec<&str> = env
        .lines()
        .filter_map(|l| l.split_once('=').map(|(k, _)| k))
        .collect();
    for want in [
        "PATH",
        "PEDM_ACTION",
        "PEDM_TARGET",
        "PEDM_GRANT_ID",
        "AWS_REGION",
    ] {
        assert!(names.contains(&want), "{want} missing: {env}");
    }
    assert!(env.contains("PATH=/usr/bin:/bin\n"), "{env}");
    assert!(
        env.contains(&format!("PEDM_GRANT_ID={}\n", g.grant_id)),
        "{env}"
    );
    assert!(env.contains("PEDM_ACTION=grant\n"), "{env}");
    assert!(!env.contains("CARGO"), "inherited variable leaked: {env}");
    // Only the documented variables (plus what sh itself sets: PWD, SHLVL, _).
    for n in names {
        assert!(
            [
                "PATH",
                "PEDM_ACTION",
                "PEDM_TARGET",
                "PEDM_GRANT_ID",
                "AWS_REGION",
                "PWD",
                "SHLVL",
                "_",
                "OLDPWD"
            ]
            .contains(&n),
            "unexpected variable {n}: {env}"
        );
    }
    let env = std::fs::read_to_string(dir.path().join("env.discover")).unwrap();
    assert!(!env.contains("PEDM_GRANT_ID"), "{env}");
}

#[tokio::test]
async fn exit_75_is_retryable_and_other_failures_are_refused() {
    let (_dir, path) = script("echo 'api throttled' >&2\nexit 75\n");
    let e = provisioner(&path, |_| {}).grant(&spec()).await.unwrap_err();
    assert!(matches!(e, ProvisionError::Unreachable(_)), "{e:?}");
    assert!(e.is_retryable());
    assert!(e.to_string().contains("api throttled"), "{e}");

    let (_dir, path) = script("echo 'no such account' >&2\nexit 3\n");
    let e = provisioner(&path, |_| {})
        .revoke(&spec())
        .await
        .unwrap_err();
    assert!(matches!(e, ProvisionError::Refused(_)), "{e:?}");
    assert!(!e.is_retryable());
    assert!(e.to_string().contains("exited with 3"), "{e}");
    assert!(e.to_string().contains("no such account"), "{e}");

    // Malformed observe output is refused, not taken as "absent".
    let (_dir, path) = script("echo maybe\n");
    let e = provisioner(&path, |_| {})
        .observe(&spec())
        .await
        .unwrap_err();
    assert!(matches!(e, ProvisionError::Refused(_)), "{e:?}");

    // A missing program is a configuration error.
    let e = provisioner(Path::new("/nonexistent/pedm-provision"), |_| {})
        .grant(&spec())
        .await
        .unwrap_err();
    assert!(matches!(e, ProvisionError::Invalid(_)), "{e:?}");
}

#[tokio::test]
async fn output_is_bounded() {
    let (_dir, path) = script("head -c 300000 /dev/zero | tr '\\0' x\nexit 1\n");
    // (`revoke`: the output of `grant` is never shown at all.)
    let e = provisioner(&path, |_| {})
        .revoke(&spec())
        .await
        .unwrap_err();
    let msg = e.to_string();
    assert!(msg.len() < MAX_CAPTURE + 1024, "{}", msg.len());
    assert!(
        msg.contains("more bytes dropped"),
        "{}",
        &msg[msg.len() - 100..]
    );
}

fn gone(pid: i32) -> bool {
    // Gone, or a zombie nobody has reaped yet (the killed script's orphan).
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(s) => s
            .rsplit_once(") ")
            .is_some_and(|(_, rest)| rest.starts_with('Z')),
    }
}

#[tokio::test]
async fn timeout_kills_the_whole_process_group() {
    let (dir, path) =
        script("sleep 300 &\necho $! > \"$dir/bg.pid\"\necho $$ > \"$dir/fg.pid\"\nsleep 300\n");
    let p = provisioner(&path, |c| c.timeout = Duration::from_secs(1));
    let started = Instant::now();
    let e = p.revoke(&spec()).await.unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(10));
    assert!(matches!(e, ProvisionError::Unreachable(_)), "{e:?}");
    assert!(e.to_string().contains("timed out"), "{e}");
    for f in ["bg.pid", "fg.pid"] {
        let pid: i32 = std::fs::read_to_string(dir.path().join(f))
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(3);
        while !gone(pid) && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(gone(pid), "{f} ({pid}) still running");
    }
}

#[test]
fn configuration_is_checked() {
    assert!(CommandProvisioner::new("t", CommandConfig::new("relative/prog")).is_err());
    let mut c = CommandConfig::new("/bin/true");
    c.env.insert("PATH".into(), "/tmp".into());
    assert!(CommandProvisioner::new("t", c).is_err());
    let mut c = CommandConfig::new("/bin/true");
    c.env.insert("TOKEN".into(), "hunter2".into());
    assert!(!format!("{c:?}").contains("hunter2"));
    assert!(CommandProvisioner::new("t", c).is_ok());
}

/// Drift removal: `remove_standing` with the finding on stdin, no grant id; the output is
/// the detail; a failure is refused like any other step.
#[tokio::test]
async fn remove_standing_runs_the_program_with_the_finding() {
    let (dir, path) = script(
        "for a; do action=\"$a\"; done\ncat > \"$dir/stdin.$action.json\"\n\
         env | sort > \"$dir/env.$action\"\necho \"detached policy from $PEDM_TARGET\"\n",
    );
    let p = provisioner(&path, |_| {});
    let found = StandingPrivilege {
        account: "root-user".into(),
        privilege: "AdministratorAccess".into(),
        source: "iam".into(),
    };
    assert_eq!(p.removable(&found), Ok(()));
    let detail = p.remove_standing(&found).await.unwrap();
    assert!(detail.contains("detached policy from aws-prod"), "{detail}");
    let stdin: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.path().join("stdin.remove_standing.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(
        stdin,
        json!({"target": "aws-prod", "account": "root-user",
               "privilege": "AdministratorAccess", "source": "iam"})
    );
    let env = std::fs::read_to_string(dir.path().join("env.remove_standing")).unwrap();
    assert!(env.contains("PEDM_ACTION=remove_standing\n"), "{env}");
    assert!(!env.contains("PEDM_GRANT_ID"), "{env}");

    let (_dir, path) = script("echo 'unknown action' >&2\nexit 2\n");
    let e = provisioner(&path, |_| {})
        .remove_standing(&found)
        .await
        .unwrap_err();
    assert!(matches!(e, ProvisionError::Refused(_)), "{e:?}");
}

/// Whatever `grant` prints that is not one JSON object may hold the secret: it is a failure
/// whose message says how much was printed, never what.
#[tokio::test]
async fn grant_output_is_never_echoed() {
    for (body, ok) in [
        ("echo 'password: hunter2-secret'", false),
        (
            "echo '{\"secret\": \"hunter2-secret\", \"extra\": 1}'",
            false,
        ),
        ("echo 'hunter2-secret' ; exit 3", false),
        ("echo '{\"secret\": \"hunter2-secret\"}'", true),
        (":", true),
    ] {
        let (_dir, path) = script(&format!(
            "for a; do action=\"$a\"; done\nif [ \"$action\" = grant ]; then {body}; fi\n"
        ));
        let p = provisioner(&path, |_| {});
        match p.grant(&spec()).await {
            Ok(out) => {
                assert!(ok, "{body}: accepted");
                assert!(!out.detail.contains("hunter2"), "{body}: {}", out.detail);
            }
            Err(e) => {
                assert!(!ok, "{body}: {e}");
                assert!(matches!(e, ProvisionError::Refused(_)), "{body}: {e}");
                let msg = e.to_string();
                assert!(!msg.contains("hunter2"), "{body}: {msg}");
                assert!(msg.contains("not shown"), "{body}: {msg}");
            }
        }
    }
}
