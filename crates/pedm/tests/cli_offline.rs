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
