//! The `aws` target against moto in server mode (the AWS API emulator the tests use), each
//! figure next to its limit measured in the same run:
//!
//! - grants per second: the aws provisioner attaching a policy to N users, C at a time, vs the
//!   same attachments made straight with the SDK (moto's own speed: the limit);
//! - revoke latency p50: the provisioner's revoke (detach, then a check that it is gone) vs a
//!   bare detach;
//! - the credential_process path: `aws sts get-caller-identity` with a profile whose
//!   `credential_process` is `pedm aws credentials` (pedmd issues STS credentials for the
//!   grant) vs the same command with static keys in the profile (ratio).
//!
//! `cargo bench -p pedm --bench aws` (needs target/aws-venv: scripts/install-aws-emulator).

#[path = "../tests/common/mod.rs"]
mod common;
#[allow(dead_code)]
#[path = "../../provision/tests/support/moto.rs"]
mod moto;
#[path = "support/mod.rs"]
mod support;

use common::*;
use moto::{ACCOUNT, Moto, credentials_file, venv_bin};
use pedm_api::{CreateRole, CreateTarget, TargetKind};
use pedm_provision::{GrantSpec, Provisioner, TargetConfig};
use std::process::Command;
use std::sync::Arc;
use std::time::Instant;
use support::{bench_line, block_on, load_average, quantile, setting};

const POLICY: &str = "arn:aws:iam::aws:policy/ReadOnlyAccess";

fn main() {
    if !venv_bin_exists() {
        println!("SKIP aws bench: moto is not installed (scripts/install-aws-emulator)");
        return;
    }
    println!("load before: {}", load_average());
    block_on(run());
    println!("load after: {}", load_average());
}

fn venv_bin_exists() -> bool {
    std::panic::catch_unwind(|| venv_bin("moto_server")).is_ok()
}

async fn run() {
    let users = setting("PEDM_BENCH_AWS_USERS", 200) as usize;
    let clients = setting("PEDM_BENCH_AWS_CLIENTS", 16) as usize;
    let moto = Moto::start().await;
    let iam = aws_sdk_iam::Client::new(&moto.sdk().await);
    let names: Vec<String> = (0..users).map(|i| format!("user{i:04}")).collect();
    for n in &names {
        iam.create_user().user_name(n).send().await.expect("user");
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let config: TargetConfig = toml::from_str(&format!(
        "kind = \"aws\"\nendpoint_url = \"{}\"\ncredentials_file = \"{}\"\n",
        moto.direct_url(),
        credentials_file(dir.path()).display()
    ))
    .expect("config");
    let p = pedm_provision::build("aws-bench", &config).expect("provisioner");
    let specs: Vec<GrantSpec> = names
        .iter()
        .map(|n| GrantSpec {
            grant_id: uuid::Uuid::now_v7(),
            user: n.clone(),
            target: "aws-bench".into(),
            role: "readonly".into(),
            run_as: None,
            expires_at: jiff::Timestamp::now() + jiff::SignedDuration::from_hours(1),
            settings: serde_json::json!({ "policy_arn": POLICY }),
        })
        .collect();

    // Grants per second: the SDK straight (the limit), then the provisioner.
    let direct = timed_concurrently(clients, names.clone(), {
        let iam = iam.clone();
        move |n: String| {
            let iam = iam.clone();
            async move {
                iam.attach_user_policy()
                    .user_name(n)
                    .policy_arn(POLICY)
                    .send()
                    .await
                    .expect("attach");
            }
        }
    })
    .await;
    for n in &names {
        iam.detach_user_policy()
            .user_name(n)
            .policy_arn(POLICY)
            .send()
            .await
            .expect("detach");
    }
    let via_pedm = timed_concurrently(clients, specs.clone(), {
        let p = p.clone();
        move |g: GrantSpec| {
            let p: Arc<dyn Provisioner> = p.clone();
            async move {
                p.grant(&g).await.expect("grant");
            }
        }
    })
    .await;
    bench_line(
        "aws_grants_per_s",
        "grants/s",
        users as f64 / via_pedm,
        Some((users as f64 / direct, "SDK_attach")),
        "-",
        "higher",
        &format!("aws grants/s against moto, {clients} at a time (vs bare AttachUserPolicy)"),
    );

    // Revoke latency, one at a time: the provisioner (detach + check) vs a bare detach.
    let mut pedm_ms = Vec::new();
    for g in &specs[..users / 2] {
        let t = Instant::now();
        p.revoke(g).await.expect("revoke");
        pedm_ms.push(t.elapsed().as_secs_f64() * 1e3);
    }
    let mut bare_ms = Vec::new();
    for n in &names[users / 2..] {
        let t = Instant::now();
        iam.detach_user_policy()
            .user_name(n)
            .policy_arn(POLICY)
            .send()
            .await
            .expect("detach");
        bare_ms.push(t.elapsed().as_secs_f64() * 1e3);
    }
    pedm_ms.sort_by(f64::total_cmp);
    bare_ms.sort_by(f64::total_cmp);
    bench_line(
        "aws_revoke_p50",
        "ms",
        quantile(&pedm_ms, 0.5),
        Some((quantile(&bare_ms, 0.5), "SDK_detach")),
        "-",
        "lower",
        "aws revoke latency p50 (detach and confirm vs bare DetachUserPolicy)",
    );

    credential_process(&moto, &iam).await;
}

/// Seconds to run `work` on every item, `clients` at a time.
async fn timed_concurrently<T, F, Fut>(clients: usize, items: Vec<T>, work: F) -> f64
where
    T: Send + 'static,
    F: Fn(T) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let queue = Arc::new(std::sync::Mutex::new(items));
    let t = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let queue = queue.clone();
        let work = work.clone();
        tasks.push(tokio::spawn(async move {
            loop {
                let next = queue.lock().expect("queue").pop();
                match next {
                    Some(item) => work(item).await,
                    None => break,
                }
            }
        }));
    }
    for t in tasks {
        t.await.expect("worker");
    }
    t.elapsed().as_secs_f64()
}

/// `aws sts get-caller-identity` through `credential_process = pedm aws credentials` vs static
/// keys, median of `runs` each, interleaved.
async fn credential_process(moto: &Moto, iam: &aws_sdk_iam::Client) {
    let runs = setting("PEDM_BENCH_AWS_CLI_RUNS", 10) as usize;
    iam.create_role()
        .role_name("pedm-admin")
        .assume_role_policy_document("{\"Version\":\"2012-10-17\",\"Statement\":[]}")
        .send()
        .await
        .expect("role");
    let dir = tempfile::tempdir().expect("tempdir");
    let s = Server::start_with(Options {
        config: Some(format!(
            "[provision.targets.aws-prod]\nkind = \"aws\"\nendpoint_url = \"{}\"\n\
             credentials_file = \"{}\"\n\n[provision.roles.aws-prod.admin]\n\
             assume_role_arn = \"arn:aws:iam::{ACCOUNT}:role/pedm-admin\"\n",
            moto.direct_url(),
            credentials_file(dir.path()).display()
        )),
        ..Default::default()
    });
    let a = s.admin();
    a.create_target(&CreateTarget {
        name: "aws-prod".into(),
        kind: TargetKind::Aws,
        description: None,
        labels: Default::default(),
    })
    .await
    .expect("target");
    a.create_role(
        "aws-prod",
        &CreateRole {
            auto_approve: true,
            ..CreateRole::new("admin", "1h")
        },
    )
    .await
    .expect("role");
    let token = user_with_token(&s, "alice", false).await;
    s.client(&token)
        .create_request(&req("aws-prod", "admin", "30m", "benchmark"))
        .await
        .expect("request");
    let config = dir.path().join("config");
    std::fs::write(
        &config,
        format!(
            "[profile pedm]\nregion = us-east-1\ncredential_process = {} aws credentials --target aws-prod\n\n\
             [profile static]\nregion = us-east-1\naws_access_key_id = testing\naws_secret_access_key = testing\n",
            env!("CARGO_BIN_EXE_pedm")
        ),
    )
    .expect("aws config");
    let aws = |profile: &str| {
        let t = Instant::now();
        let out = Command::new(venv_bin("aws"))
            .args(["sts", "get-caller-identity", "--profile", profile])
            .env("AWS_CONFIG_FILE", &config)
            .env("AWS_SHARED_CREDENTIALS_FILE", dir.path().join("none"))
            .env("AWS_ENDPOINT_URL", moto.direct_url())
            .env("PEDM_URL", &s.url)
            .env("PEDM_TOKEN", &token)
            .env_remove("PEDM_TOKEN_FILE")
            .env_remove("AWS_ACCESS_KEY_ID")
            .env_remove("AWS_PROFILE")
            .output()
            .expect("aws");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        t.elapsed().as_secs_f64() * 1e3
    };
    let (mut with, mut without) = (Vec::new(), Vec::new());
    for _ in 0..runs {
        with.push(aws("pedm"));
        without.push(aws("static"));
    }
    with.sort_by(f64::total_cmp);
    without.sort_by(f64::total_cmp);
    bench_line(
        "aws_credential_process_p50",
        "ms",
        quantile(&with, 0.5),
        Some((quantile(&without, 0.5), "static_profile")),
        "-",
        "lower",
        "aws sts get-caller-identity: credential_process = pedm aws credentials vs static keys",
    );
}
