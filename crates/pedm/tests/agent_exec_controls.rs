//! What a granted program may start, on the real binaries: `no_new_privs` (setuid programs
//! give nothing unless the role says `--allow-setuid`) and NOEXEC (`--noexec`: the program
//! runs, nothing it starts does; the GTFOBins escapes of less, vi, find, awk and tar start no
//! shell). Every refusal is shown next to the same escape working without the option. Root
//! only (real Linux users, a root daemon); skipped with the reason printed otherwise.

mod common;

use common::agent::*;
use common::*;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

async fn grant_of(c: &pedm_api::Client, role: &str) -> String {
    let r = c
        .create_request(&req("web1", role, "30m", "a pager for the logs"))
        .await
        .unwrap();
    r.grant.expect("auto-approved").id.to_string()
}

/// `pedm exec --grant GRANT -- ARGV` as `user`.
fn exec_under(agent: &Agent, user: &LinuxUser, grant: &str, argv: &[&str]) -> std::process::Output {
    let mut args = vec!["exec", "--grant", grant, "--"];
    args.extend_from_slice(argv);
    agent.pedm_as(user, &args).output().expect("run pedm exec")
}

/// A directory root owns and nobody else may write, all the way up (the agent runs
/// binaries only from such places), removed at the end.
struct RootDir(PathBuf);

impl RootDir {
    fn new() -> RootDir {
        let dir = PathBuf::from(format!("/usr/local/lib/pedm-test-{}", uuid::Uuid::now_v7()));
        std::fs::create_dir(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        RootDir(dir)
    }
}

impl Drop for RootDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn setuid_programs_give_nothing_unless_the_role_allows_them() {
    if !root_or_skip("setuid_programs_give_nothing_unless_the_role_allows_them") {
        return;
    }
    let (s, agent, alice, client) = setup("pedmnn").await;
    let svc = LinuxUser::create("pedmsv");
    add_role(&s, "svc", &svc.name, &[]);
    add_role(&s, "svc-setuid", &svc.name, &["--allow-setuid"]);
    let listed = s.cli(&s.admin_token, &["role", "list", "web1"]);
    assert!(
        stdout(&listed).contains("no_new_privs"),
        "{}",
        stdout(&listed)
    );
    assert!(
        stdout(&listed).contains("setuid allowed"),
        "{}",
        stdout(&listed)
    );
    // A setuid-root copy of `id`, as a setuid helper a grant holder could reach.
    let dir = RootDir::new();
    let id = dir.0.join("id");
    std::fs::copy("/usr/bin/id", &id).unwrap();
    std::fs::set_permissions(&id, std::fs::Permissions::from_mode(0o4755)).unwrap();
    let id = id.to_str().unwrap();
    let plain = grant_of(&client, "svc").await;
    let setuid = grant_of(&client, "svc-setuid").await;
    agent.wait_snapshot(2, None);

    // Without allow_setuid: the effective uid stays the run-as user's, and the kernel says
    // no_new_privs is set; core dumps stay off.
    let out = exec_under(&agent, &alice, &plain, &[id, "-u"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out).trim(), svc.uid.to_string(), "setuid gave root");
    let out = exec_under(&agent, &alice, &plain, &["/bin/cat", "/proc/self/status"]);
    assert!(stdout(&out).contains("NoNewPrivs:\t1"), "{}", stdout(&out));
    let out = exec_under(&agent, &alice, &plain, &["/bin/cat", "/proc/self/limits"]);
    let limits = stdout(&out);
    let core = limits
        .lines()
        .find(|l| l.starts_with("Max core file size"))
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .unwrap_or_default();
    assert_eq!(core.get(4..6), Some(&["0", "0"][..]), "{limits}");

    // With it: the setuid bit works as it would without pedm (the role's choice).
    let out = exec_under(&agent, &alice, &setuid, &[id, "-u"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        stdout(&out).trim(),
        "0",
        "allow_setuid should keep setuid working"
    );
    let out = exec_under(&agent, &alice, &setuid, &["/bin/cat", "/proc/self/status"]);
    assert!(stdout(&out).contains("NoNewPrivs:\t0"), "{}", stdout(&out));
}

/// Runs `argv` under `grant` in a terminal as `user`, typing `keys` once `ready` shows.
fn in_terminal(
    agent: &Agent,
    user: &LinuxUser,
    grant: &str,
    argv: &[&str],
    ready: &str,
    keys: &str,
) -> String {
    let start = serde_json::json!({
        "argv": argv,
        "grant": grant,
        "tty": {"rows": 24, "cols": 80},
        "env": [["TERM", "xterm"]],
    });
    let steps = serde_json::json!([{"wait": ready}, {"type": keys}]);
    let out = scripted_start(agent, user, start, steps);
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    assert!(!stdout(&out).starts_with("refused:"), "{}", stdout(&out));
    format!("{}{}", stdout(&out), stderr(&out))
}

/// The GTFOBins escapes, each a shell that would leave `marker.PROGRAM` behind (the escape's
/// visible effect): `(name, argv)`. tar and vi also leave `marker.tar-archive` and
/// `marker.vi-ran` (written before the escape), the proof that they ran.
fn escapes(marker: &Path) -> Vec<(&'static str, Vec<String>)> {
    let m = marker.display();
    let sh = format!("/bin/sh -c 'echo escaped > {m}.SUFFIX'");
    let with = |suffix: &str| sh.replace("SUFFIX", suffix);
    let v = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    vec![
        (
            "find -exec",
            v(&[
                "/usr/bin/find",
                "/etc/hostname",
                "-print",
                "-exec",
                "/bin/sh",
                "-c",
                &format!("echo escaped > {m}.find"),
                ";",
            ]),
        ),
        (
            "awk system()",
            v(&[
                "/usr/bin/awk",
                &format!("BEGIN {{ print \"awk ran\"; system(\"{}\") }}", with("awk")),
            ]),
        ),
        (
            "tar --checkpoint-action=exec",
            v(&[
                "/usr/bin/tar",
                "-cf",
                &format!("{m}.tar-archive"),
                "/etc/hostname",
                "--checkpoint=1",
                &format!("--checkpoint-action=exec={}", with("tar")),
            ]),
        ),
        (
            "vi :!sh",
            v(&[
                "/usr/bin/vi",
                "-e",
                "-s",
                "-c",
                &format!("w! {m}.vi-ran"),
                "-c",
                &format!("!{}", with("vi")),
                "-c",
                "q!",
            ]),
        ),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn noexec_lets_the_program_run_but_no_shell_escape() {
    if !root_or_skip("noexec_lets_the_program_run_but_no_shell_escape") {
        return;
    }
    if !pedm_agent::contain::execs::available() {
        println!(
            "SKIP noexec_lets_the_program_run_but_no_shell_escape: this kernel (or the \
             container's seccomp profile) offers no seccomp user notification"
        );
        return;
    }
    for tool in [
        "/usr/bin/less",
        "/usr/bin/vi",
        "/usr/bin/awk",
        "/usr/bin/tar",
    ] {
        assert!(
            Path::new(tool).exists(),
            "{tool} is missing: run scripts/install-test-deps"
        );
    }
    let (s, agent, alice, client) = setup("pedmnx").await;
    add_role(&s, "pager", "root", &["--noexec"]);
    let listed = s.cli(&s.admin_token, &["--json", "role", "list", "web1"]);
    let roles: serde_json::Value = serde_json::from_slice(&listed.stdout).unwrap();
    let pager = roles
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "pager")
        .unwrap();
    assert_eq!(pager["noexec"], true, "{pager}");
    let open = grant_of(&client, "root").await;
    let noexec = grant_of(&client, "pager").await;
    agent.wait_snapshot(2, None);
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();

    for (name, argv) in escapes(&dir.path().join("without")) {
        let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
        let out = exec_under(&agent, &alice, &open, &argv);
        let suffix = argv[0].rsplit('/').next().unwrap();
        let marker = dir.path().join(format!("without.{suffix}"));
        assert!(
            marker.exists(),
            "{name}: the escape does not even work without noexec ({}): {}",
            marker.display(),
            stderr(&out)
        );
    }
    for (name, argv) in escapes(&dir.path().join("with")) {
        let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
        let out = exec_under(&agent, &alice, &noexec, &argv);
        let suffix = argv[0].rsplit('/').next().unwrap();
        let marker = dir.path().join(format!("with.{suffix}"));
        assert!(
            !marker.exists(),
            "{name}: the shell ran under noexec: {}",
            stderr(&out)
        );
        // The granted program itself ran.
        match suffix {
            "find" => assert!(stdout(&out).contains("/etc/hostname"), "{name}: {out:?}"),
            "awk" => assert!(stdout(&out).contains("awk ran"), "{name}: {out:?}"),
            "tar" | "vi" => {
                let ran = dir.path().join(match suffix {
                    "tar" => "with.tar-archive",
                    _ => "with.vi-ran",
                });
                assert!(ran.exists(), "{name}: the program did not run: {out:?}");
            }
            other => panic!("no check that {other} ran"),
        }
        if suffix == "find" {
            assert!(
                stderr(&out).contains("Permission denied"),
                "{}",
                stderr(&out)
            );
        }
    }

    // less: `!cmd` at its prompt, in a terminal.
    let note = dir.path().join("note.txt");
    std::fs::write(&note, "pedm-noexec-note\n").unwrap();
    let note = note.to_str().unwrap();
    for (grant, tag) in [(&open, "without"), (&noexec, "with")] {
        let marker = dir.path().join(format!("{tag}.less"));
        let keys = format!("!echo escaped > {}\r\rq", marker.display());
        let text = in_terminal(
            &agent,
            &alice,
            grant,
            &["/usr/bin/less", note],
            "pedm-noexec-note",
            &keys,
        );
        assert_eq!(
            marker.exists(),
            tag == "without",
            "less {tag} noexec: {text}"
        );
    }
    // The agent serves on; the noexec supervisors of finished sessions are gone.
    let out = exec_under(&agent, &alice, &noexec, &["/bin/echo", "still served"]);
    assert_eq!(stdout(&out).trim(), "still served", "{}", stderr(&out));
    eventually(Duration::from_secs(5), "noexec supervisors to end", || {
        let n = agent_threads(&agent);
        async move { (n == 0).then_some(()) }
    })
    .await;
}

/// The agent's `pedm-noexec` threads now.
fn agent_threads(agent: &Agent) -> usize {
    let Some(pid) = agent.pid() else { return 0 };
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .map(|d| {
            d.flatten()
                .filter(|t| {
                    std::fs::read_to_string(t.path().join("comm"))
                        .is_ok_and(|c| c.trim() == "pedm-noexec")
                })
                .count()
        })
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn intercept_decides_and_records_every_command_of_a_shell() {
    if !root_or_skip("intercept_decides_and_records_every_command_of_a_shell") {
        return;
    }
    if !pedm_agent::contain::execs::available() {
        println!(
            "SKIP intercept_decides_and_records_every_command_of_a_shell: no seccomp user \
             notification here"
        );
        return;
    }
    let (s, agent, alice, client) = setup("pedmic").await;
    add_role(&s, "audited", "root", &["--intercept"]);
    add_policy(
        &s.admin(),
        "audited.cedar",
        "@id(\"audited-shells\")\npermit (principal, action == Pedm::Action::\"exec\", resource)\n\
         when { resource.shell && resource.role == \"audited\" };\n\
         @id(\"no-id-when-audited\")\nforbid (principal, action == Pedm::Action::\"exec\", resource)\n\
         when { resource.role == \"audited\" && resource.path == \"/usr/bin/id\" };\n",
    )
    .await;
    let grant = grant_of(&client, "audited").await;
    agent.wait_snapshot(1, None);
    let own = format!("/tmp/pedm-own-true-{}", uuid::Uuid::now_v7());
    let script = format!(
        "cd /etc && /bin/echo one two | /usr/bin/tr a-z A-Z; /usr/bin/id -u || echo id refused; \
         cp /bin/true {own}; {own} || echo own refused; rm -f {own}"
    );
    let out = exec_under(&agent, &alice, &grant, &["/bin/sh", "-c", &script]);
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    // The pipeline ran; policy's forbid and the binary rules (a program in a directory
    // anyone may write) refused the others inside the shell, which went on.
    assert_eq!(
        stdout(&out),
        "ONE TWO\nid refused\nown refused\n",
        "{}",
        stderr(&out)
    );

    let events = eventually(
        Duration::from_secs(20),
        "six session.exec events",
        || async {
            let ev = s
                .admin()
                .audit_events(&pedm_api::AuditQuery {
                    action: Some("session.exec".into()),
                    ..Default::default()
                })
                .await
                .ok()?;
            (ev.len() == 6).then_some(ev)
        },
    )
    .await;
    let find = |path: &str| {
        events
            .iter()
            .find(|e| e.data["exec"]["path"] == path)
            .unwrap_or_else(|| panic!("no session.exec of {path}: {events:#?}"))
    };
    let echo = find("/bin/echo");
    assert_eq!(echo.actor, alice.name);
    assert_eq!(echo.outcome, pedm_api::Outcome::Success);
    assert_eq!(
        echo.data["argv"],
        serde_json::json!(["/bin/echo", "one", "two"])
    );
    assert_eq!(echo.data["exec"]["cwd"], "/etc");
    assert_eq!(echo.data["grant"], grant);
    assert!(echo.data["session"].is_string(), "{echo:?}");
    assert!(echo.data["binary_sha256"].is_string());
    assert!(echo.data["exec"]["pid"].as_i64() > Some(1));
    assert!(echo.data["exec"]["ppid"].as_i64() > Some(1));
    let tr = find("/usr/bin/tr");
    assert_eq!(
        tr.data["argv"],
        serde_json::json!(["/usr/bin/tr", "a-z", "A-Z"])
    );
    let id = find("/usr/bin/id");
    assert_eq!(id.outcome, pedm_api::Outcome::Denied);
    assert!(
        id.data["reason"]
            .as_str()
            .unwrap_or("")
            .contains("no-id-when-audited"),
        "{id:?}"
    );
    let cp = find("/usr/bin/cp");
    assert_eq!(cp.data["argv"][0], "cp", "argv as the shell passed it");
    let mine = find(&own);
    assert_eq!(mine.outcome, pedm_api::Outcome::Denied);
    assert!(
        events
            .iter()
            .all(|e| e.data["session"] == echo.data["session"]),
        "one session"
    );
    find("/usr/bin/rm");
}
