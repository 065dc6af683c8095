//! The built `pedm` binary without a server: exit statuses and messages.

use std::process::{Command, Output};

fn pedm(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_pedm"))
        .args(args)
        .env_remove("PEDM_URL")
        .env_remove("PEDM_TOKEN")
        .env_remove("PEDM_TOKEN_FILE")
        .output()
        .expect("run pedm")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn unreachable_server_exits_3_with_a_clear_message() {
    let secret = "pedm_do-not-print-me";
    let o = pedm(&["--url", "http://127.0.0.1:9", "--token", secret, "whoami"]);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(3), "{err}");
    assert!(
        err.starts_with("error: cannot reach pedm server at http://127.0.0.1:9"),
        "{err}"
    );
    assert!(!err.contains(secret), "token leaked: {err}");
    assert!(o.stdout.is_empty());
}

#[test]
fn bad_arguments_exit_2_naming_the_argument() {
    let o = pedm(&["--url", "http://127.0.0.1:9", "grant", "show", "nope"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("<ID>"), "{}", stderr(&o));

    let o = pedm(&[
        "--url",
        "http://127.0.0.1:9",
        "request",
        "create",
        "--target",
        "db",
        "--role",
        "rw",
        "--duration",
        "forever",
        "-r",
        "why",
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("--duration"), "{}", stderr(&o));
}

#[test]
fn completions_need_no_server() {
    let o = pedm(&["--url", "http://127.0.0.1:9", "completions", "bash"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains("pedm"));
}

/// `pedm` runs the agent commands itself and hands every other command line to `pedm-cli`
/// beside it, under its own name: the same usage messages and exit statuses. Without
/// `pedm-cli` the agent commands still work and everything else says what is missing.
#[test]
fn pedm_hands_all_but_the_agent_commands_to_pedm_cli() {
    let o = pedm(&["--help"]);
    assert_eq!(o.status.code(), Some(0));
    let help = String::from_utf8_lossy(&o.stdout);
    assert!(help.contains("Usage: pedm "), "{help}");
    assert!(!help.contains("pedm-cli"), "{help}");
    // Help for an agent command comes from the whole client too.
    let o = pedm(&["exec", "--help"]);
    assert_eq!(o.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&o.stdout).contains("Usage: pedm exec"));

    let dir = tempfile::tempdir().unwrap();
    let alone = dir.path().join("pedm");
    std::fs::copy(env!("CARGO_BIN_EXE_pedm"), &alone).unwrap();
    let run = |args: &[&str]| {
        Command::new(&alone)
            .args(args)
            .env("PATH", dir.path())
            .env_remove("PEDM_AGENT_SOCKET")
            .output()
            .expect("run pedm")
    };
    let o = run(&["--url", "http://127.0.0.1:9", "whoami"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("cannot run pedm-cli, the rest of the pedm client"),
        "{}",
        stderr(&o)
    );
    let missing = dir.path().join("no-agent.sock");
    let o = run(&[
        "exec",
        "--socket",
        missing.to_str().unwrap(),
        "--",
        "/bin/true",
    ]);
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    assert!(stderr(&o).contains("no-agent.sock"), "{}", stderr(&o));
    let o = run(&[
        "task",
        "run",
        "reset",
        "--socket",
        missing.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    let o = run(&["shell", "--socket", missing.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
}
