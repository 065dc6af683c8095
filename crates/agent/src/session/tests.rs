//! Sessions run for real: as root, with throw-away users (`pedmtest_*`), speaking frames
//! over an in-memory duplex stream. Without root every test here is skipped.

use super::*;
use crate::command::resolve;
use crate::command::tests::{is_root, secure_tempdir};
use crate::env::sanitise;
use crate::recording::{Cast, EventKind, parse};
use sha2::{Digest, Sha256};
use std::os::fd::RawFd;
use std::path::Path;
use std::process::{Command as StdCommand, Stdio};
use std::sync::Mutex;
use tokio::io::{DuplexStream, ReadHalf, WriteHalf};

const SECURE: &str = "/usr/sbin:/usr/bin:/sbin:/bin";
/// Only a guard against a hung test; nothing waits for it in a passing run.
const TEST_LIMIT: Duration = Duration::from_secs(60);

/// useradd/userdel take a lock on /etc/passwd and fail when another holds it.
static ACCOUNTS: Mutex<()> = Mutex::new(());

pub(super) fn skip() -> bool {
    if !is_root() {
        eprintln!("skipped: running sessions as other users needs root");
        return true;
    }
    false
}

fn run_tool(args: &[&str]) -> bool {
    StdCommand::new(args[0])
        .args(&args[1..])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// A user (and optionally a group it belongs to) that exists for one test.
struct TestUser {
    user: TargetUser,
    group: Option<(String, u32)>,
}

impl TestUser {
    fn create(tag: &str, with_group: bool) -> TestUser {
        let _lock = ACCOUNTS.lock().unwrap_or_else(|e| e.into_inner());
        let id = std::process::id();
        let name = format!("pedmtest_{tag}{id}");
        run_tool(&["userdel", &name]);
        let group = with_group.then(|| {
            let g = format!("pedmtg_{tag}{id}");
            run_tool(&["groupdel", &g]);
            assert!(run_tool(&["groupadd", &g]), "groupadd {g}");
            let gid = nix::unistd::Group::from_name(&g).unwrap().unwrap().gid;
            (g, gid.as_raw())
        });
        let mut args = vec!["useradd", "-M", "-s", "/bin/sh"];
        if let Some((g, _)) = &group {
            args.extend(["-G", g.as_str()]);
        }
        args.push(&name);
        assert!(run_tool(&args), "useradd {name}");
        TestUser {
            user: TargetUser::lookup(&name).unwrap(),
            group,
        }
    }
}

impl Drop for TestUser {
    fn drop(&mut self) {
        let _lock = ACCOUNTS.lock().unwrap_or_else(|e| e.into_inner());
        run_tool(&["userdel", &self.user.name]);
        if let Some((g, _)) = &self.group {
            run_tool(&["groupdel", g]);
        }
    }
}

pub(super) fn root() -> TargetUser {
    TargetUser::lookup("root").unwrap()
}

pub(super) fn spec(
    path: &str,
    argv: &[&str],
    user: &TargetUser,
    tty: Option<WinSize>,
    dir: &Path,
) -> SessionSpec {
    let caller_env = [
        ("LD_PRELOAD", "/tmp/evil.so"),
        ("PATH", "/tmp:/usr/bin"),
        ("TERM", "xterm-256color"),
        ("BASH_ENV", "/tmp/evil"),
    ]
    .map(|(k, v)| (k.to_string(), v.to_string()));
    let caller = TargetUser {
        name: "alice".into(),
        uid: 4242,
        gid: 4242,
        groups: vec![4242],
        home: "/home/alice".into(),
        shell: "/bin/bash".into(),
    };
    SessionSpec {
        command: resolve(path, SECURE, 4242).unwrap(),
        argv: argv.iter().map(|s| s.to_string()).collect(),
        user: user.clone(),
        env: sanitise(&caller_env, &caller, user, &argv.join(" "), SECURE),
        cwd: None,
        tty,
        recording: dir.join("session.cast"),
        title: "test session".into(),
        finished: None,
        stdin_data: None,
        started: None,
        durable: None,
        marker: None,
        cgroup: Default::default(),
        live: None,
        mount_ns: None,
        no_new_privs: true,
        noexec: false,
        record_input: true,
        exec_gate: None,
        entry_gate: None,
    }
}

/// The test's side of the connection.
struct Client {
    rd: ReadHalf<DuplexStream>,
    wr: WriteHalf<DuplexStream>,
    stdout: Vec<u8>,
    stderr: Vec<u8>,
}

impl Client {
    async fn send(&mut self, frame: Frame) {
        write_frame(&mut self.wr, &frame).await.unwrap();
    }

    fn out_text(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    /// Reads frames until stdout contains `needle`.
    async fn wait_for(&mut self, needle: &str) {
        while !String::from_utf8_lossy(&self.stdout).contains(needle) {
            match read_frame(&mut self.rd).await.unwrap() {
                Some(Frame::Stdout(d)) => self.stdout.extend(d),
                Some(Frame::Stderr(d)) => self.stderr.extend(d),
                other => panic!(
                    "waiting for {needle:?}, got {other:?}; stdout so far: {:?}",
                    String::from_utf8_lossy(&self.stdout)
                ),
            }
        }
    }

    /// Reads frames until `Exited`, which must be followed by the end of the stream.
    async fn finish(mut self) -> Output {
        loop {
            match read_frame(&mut self.rd).await.unwrap() {
                Some(Frame::Stdout(d)) => self.stdout.extend(d),
                Some(Frame::Stderr(d)) => self.stderr.extend(d),
                Some(Frame::Exited(exited)) => {
                    assert!(read_frame(&mut self.rd).await.unwrap().is_none());
                    return Output {
                        stdout: self.stdout,
                        stderr: self.stderr,
                        exited,
                    };
                }
                other => panic!("unexpected {other:?}"),
            }
        }
    }
}

struct Output {
    stdout: Vec<u8>,
    stderr: Vec<u8>,
    exited: Exited,
}

impl Output {
    fn out(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }
}

/// Runs `spec` with `script` as the client; returns the outcome, what the script returned
/// and the parsed recording (checked against the reported hash and size).
async fn session<T, F>(
    spec: SessionSpec,
    stop: watch::Receiver<Option<String>>,
    grace: Duration,
    script: impl FnOnce(Client) -> F,
) -> (SessionOutcome, T, Cast)
where
    F: Future<Output = T>,
{
    let recording = spec.recording.clone();
    let (agent_side, client_side) = tokio::io::duplex(1 << 20);
    let (rd, wr) = tokio::io::split(client_side);
    let client = Client {
        rd,
        wr,
        stdout: Vec::new(),
        stderr: Vec::new(),
    };
    let both = async { tokio::join!(run_session(spec, agent_side, stop, grace), script(client)) };
    let (outcome, t) = tokio::time::timeout(TEST_LIMIT, both)
        .await
        .expect("session hung");
    let outcome = outcome.unwrap();
    let bytes = std::fs::read(&recording).unwrap();
    assert_eq!(outcome.recording_bytes, bytes.len() as u64);
    assert_eq!(
        outcome.recording_sha256,
        hex::encode(Sha256::digest(&bytes))
    );
    assert_eq!(outcome.recording_error, None);
    let cast = parse(&bytes[..]).unwrap();
    (outcome, t, cast)
}

fn no_stop() -> watch::Receiver<Option<String>> {
    // The sender is dropped: the session must keep running.
    watch::channel(None).1
}

/// Runs a command with no input and returns its output.
async fn run_simple(spec: SessionSpec) -> (SessionOutcome, Output, Cast) {
    session(spec, no_stop(), Duration::from_secs(5), |c| c.finish()).await
}

fn sh(script: &str) -> [&str; 3] {
    ["sh", "-c", script]
}

#[tokio::test]
async fn runs_as_the_target_user_with_its_supplementary_groups() {
    if skip() {
        return;
    }
    let u = TestUser::create("ids", true);
    let dir = tempfile::tempdir().unwrap();
    let s = spec(
        "/bin/sh",
        &sh("id -u; id -g; id -G; id -un"),
        &u.user,
        None,
        dir.path(),
    );
    let (outcome, out, _) = run_simple(s).await;
    assert_eq!(
        outcome.exited.code,
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = out.out();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], u.user.uid.to_string());
    assert_eq!(lines[1], u.user.gid.to_string());
    let groups: Vec<u32> = lines[2].split(' ').map(|g| g.parse().unwrap()).collect();
    let (_, extra_gid) = u.group.as_ref().unwrap();
    assert!(groups.contains(extra_gid), "{groups:?}");
    assert!(!groups.contains(&0), "root's group leaked: {groups:?}");
    assert_eq!(lines[3], u.user.name);
}

/// The uid, gid and group lines of every thread of this process.
fn own_ids() -> Vec<String> {
    let mut ids = vec![];
    for task in std::fs::read_dir("/proc/self/task").unwrap().flatten() {
        let Ok(status) = std::fs::read_to_string(task.path().join("status")) else {
            continue;
        };
        ids.extend(
            status
                .lines()
                .filter(|l| {
                    l.starts_with("Uid:") || l.starts_with("Gid:") || l.starts_with("Groups:")
                })
                .map(String::from),
        );
    }
    ids.sort();
    ids.dedup();
    ids
}

fn blocked_signals() -> String {
    let status = std::fs::read_to_string("/proc/thread-self/status").unwrap();
    status
        .lines()
        .find(|l| l.starts_with("SigBlk:"))
        .unwrap()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn becoming_the_user_changes_nothing_in_the_agent_itself() {
    // The child shares the agent's memory until it execs: its setuid/setgroups must stay
    // its own, and the agent's signal mask must come back as it was.
    if skip() {
        return;
    }
    let u = TestUser::create("own", true);
    let before = own_ids();
    assert!(
        before.iter().any(|l| l.starts_with("Uid:\t0\t0\t0\t0")),
        "{before:?}"
    );
    let dir = tempfile::tempdir().unwrap();
    for _ in 0..3 {
        let s = spec("/bin/sh", &sh("id -u"), &u.user, None, dir.path());
        let _ = std::fs::remove_file(&s.recording);
        let (outcome, out, _) = run_simple(s).await;
        assert_eq!(outcome.exited.code, Some(0));
        assert_eq!(out.out().trim(), u.user.uid.to_string());
    }
    assert_eq!(own_ids(), before);
    // Started on this thread: the mask is restored after the clone.
    let mask = blocked_signals();
    let mut s = spec("/bin/true", &["true"], &u.user, None, dir.path());
    let _ = std::fs::remove_file(&s.recording);
    let image = ExecImage::new(&mut s).unwrap();
    let (r, w) = pipe().unwrap();
    let mut child = spawn(&image, [r.as_raw_fd(), w.as_raw_fd(), w.as_raw_fd()]).unwrap();
    assert_eq!(blocked_signals(), mask);
    assert!(child.wait().await.unwrap().success());
}

#[tokio::test]
async fn exits_are_seen_with_and_without_a_pidfd_and_a_dropped_child_is_killed() {
    for pidfd in [true, false] {
        // Reaped by the `ChildProc`, not by std.
        let pid = StdCommand::new("/bin/sh")
            .args(["-c", "exit 3"])
            .spawn()
            .unwrap()
            .id() as i32;
        // SAFETY: pidfd_open(2) returns a new descriptor or -1.
        let fd = pidfd.then(|| unsafe {
            <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(libc::syscall(
                libc::SYS_pidfd_open,
                pid,
                0,
            ) as RawFd)
        });
        let mut c = ChildProc::new(pid, fd).unwrap();
        let status = tokio::time::timeout(TEST_LIMIT, c.wait())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(status.code(), Some(3), "pidfd: {pidfd}");
        assert_eq!(c.wait().await.unwrap().code(), Some(3));

        let pid = StdCommand::new("sleep").arg("1000").spawn().unwrap().id() as i32;
        drop(ChildProc::new(pid, None).unwrap());
        let gone = async {
            while std::fs::metadata(format!("/proc/{pid}")).is_ok() {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        };
        tokio::time::timeout(TEST_LIMIT, gone)
            .await
            .expect("a dropped child was neither killed nor reaped");
    }
}

#[tokio::test]
async fn data_frames_encoded_in_place_are_read_as_frames() {
    let mut bytes = vec![0u8; FRAME_HEAD];
    bytes.extend_from_slice(b"out\x00\xff");
    encode_head(&mut bytes, STDOUT_KIND);
    let mut err = vec![0u8; FRAME_HEAD];
    encode_head(&mut err, STDERR_KIND);
    bytes.extend_from_slice(&err);
    let mut r = &bytes[..];
    assert_eq!(
        read_frame(&mut r).await.unwrap(),
        Some(Frame::Stdout(b"out\x00\xff".to_vec()))
    );
    assert_eq!(
        read_frame(&mut r).await.unwrap(),
        Some(Frame::Stderr(vec![]))
    );
    assert_eq!(read_frame(&mut r).await.unwrap(), None);
}

#[tokio::test]
async fn large_output_arrives_whole_and_in_order() {
    if skip() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // 3 MiB of numbered lines: several full pipes and frames, small and large reads.
    let s = spec(
        "/bin/sh",
        &sh("seq 1 400000; echo done >&2"),
        &root(),
        None,
        dir.path(),
    );
    let (outcome, out, cast) = run_simple(s).await;
    assert_eq!(outcome.exited.code, Some(0));
    let expected: String = (1..=400_000).map(|i| format!("{i}\n")).collect();
    assert!(out.stdout == expected.as_bytes(), "stdout differs");
    assert_eq!(out.stderr, b"done\n");
    assert_eq!(cast.output(), format!("{expected}done\n"));
}

#[tokio::test]
async fn the_command_sees_only_the_sanitised_environment() {
    if skip() {
        return;
    }
    let u = TestUser::create("env", false);
    let dir = tempfile::tempdir().unwrap();
    let s = spec("env", &["env"], &u.user, None, dir.path());
    let (_, out, _) = run_simple(s).await;
    let text = out.out();
    let env: Vec<(&str, &str)> = text.lines().filter_map(|l| l.split_once('=')).collect();
    let get = |k: &str| env.iter().find(|(n, _)| *n == k).map(|(_, v)| *v);
    assert_eq!(get("PATH"), Some(SECURE));
    assert_eq!(get("HOME"), Some(u.user.home.to_str().unwrap()));
    assert_eq!(get("USER"), Some(u.user.name.as_str()));
    assert_eq!(get("PEDM_USER"), Some("alice"));
    assert_eq!(get("TERM"), Some("xterm-256color"));
    for bad in [
        "LD_PRELOAD",
        "BASH_ENV",
        "CARGO_PKG_NAME",
        "RUST_TEST_THREADS",
    ] {
        assert_eq!(get(bad), None, "{bad} leaked: {text}");
    }
}

#[tokio::test]
async fn exit_codes_and_signal_deaths_are_reported_and_recorded() {
    if skip() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (outcome, out, cast) =
        run_simple(spec("/bin/sh", &sh("exit 3"), &root(), None, dir.path())).await;
    assert_eq!(out.exited, outcome.exited);
    assert_eq!(
        (outcome.exited.code, outcome.exited.signal),
        (Some(3), None)
    );
    assert_eq!(outcome.exited.ended_by, None);
    assert_eq!(cast.markers(), ["exit 3"]);
    assert!(outcome.started_at <= outcome.ended_at);

    let dir = tempfile::tempdir().unwrap();
    let s = spec("/bin/sh", &sh("kill -KILL $$"), &root(), None, dir.path());
    let (outcome, _, cast) = run_simple(s).await;
    assert_eq!(
        (outcome.exited.code, outcome.exited.signal),
        (None, Some(9))
    );
    assert_eq!(outcome.exited.status(), 137);
    assert_eq!(cast.markers(), ["signal 9"]);
}

#[tokio::test]
async fn stdin_is_forwarded_through_pipes() {
    if skip() {
        return;
    }
    let u = TestUser::create("cat", false);
    let dir = tempfile::tempdir().unwrap();
    let s = spec("cat", &["cat"], &u.user, None, dir.path());
    let (outcome, out, cast) = session(s, no_stop(), Duration::from_secs(5), |mut c| async {
        c.send(Frame::Stdin(b"hello\n".to_vec())).await;
        c.wait_for("hello\n").await;
        c.send(Frame::Stdin(b"world".to_vec())).await;
        c.send(Frame::StdinEof).await;
        c.finish().await
    })
    .await;
    assert_eq!(outcome.exited.code, Some(0));
    assert_eq!(out.stdout, b"hello\nworld");
    let input: String = cast
        .events
        .iter()
        .filter(|e| e.kind == EventKind::Input)
        .map(|e| e.data.as_str())
        .collect();
    assert_eq!(input, "hello\nworld");
    assert_eq!(cast.output(), "hello\nworld");
}

#[tokio::test]
async fn stdout_and_stderr_stay_apart_in_pipes_and_both_are_recorded() {
    if skip() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let s = spec(
        "/bin/sh",
        &sh("echo out; echo err >&2"),
        &root(),
        None,
        dir.path(),
    );
    let (_, out, cast) = run_simple(s).await;
    assert_eq!(out.stdout, b"out\n");
    assert_eq!(out.stderr, b"err\n");
    let rec = cast.output();
    assert!(rec.contains("out\n") && rec.contains("err\n"), "{rec:?}");
}

#[tokio::test]
async fn a_pty_session_has_a_terminal_of_the_given_size_that_follows_resizes() {
    if skip() {
        return;
    }
    let u = TestUser::create("pty", false);
    let dir = tempfile::tempdir().unwrap();
    let tty = Some(WinSize {
        rows: 30,
        cols: 100,
    });
    let script = "tty; stty size; read x; stty size";
    let s = spec("/bin/sh", &sh(script), &u.user, tty, dir.path());
    let (outcome, out, cast) = session(s, no_stop(), Duration::from_secs(5), |mut c| async {
        c.wait_for("30 100").await;
        c.send(Frame::Resize(WinSize {
            rows: 50,
            cols: 132,
        }))
        .await;
        c.send(Frame::Stdin(b"\n".to_vec())).await;
        c.finish().await
    })
    .await;
    assert_eq!(outcome.exited.code, Some(0));
    let text = out.out();
    assert!(text.starts_with("/dev/pts/"), "{text:?}");
    assert!(text.contains("30 100\r\n"), "{text:?}");
    assert!(text.ends_with("50 132\r\n"), "{text:?}");
    assert!(out.stderr.is_empty(), "a terminal has one output stream");
    assert_eq!(cast.header.width, 100);
    assert_eq!(cast.header.height, 30);
    assert_eq!(
        cast.header.env.get("TERM").map(String::as_str),
        Some("xterm-256color")
    );
    let resizes: Vec<&str> = cast
        .events
        .iter()
        .filter(|e| e.kind == EventKind::Resize)
        .map(|e| e.data.as_str())
        .collect();
    assert_eq!(resizes, ["132x50"]);
    assert_eq!(cast.output(), text);
}

fn typed(cast: &crate::recording::Cast) -> String {
    cast.events
        .iter()
        .filter(|e| e.kind == EventKind::Input)
        .map(|e| e.data.as_str())
        .collect()
}

#[tokio::test]
async fn input_typed_with_echo_off_is_not_recorded() {
    if skip() {
        return;
    }
    let u = TestUser::create("noecho", false);
    let tty = Some(WinSize { rows: 24, cols: 80 });
    let script =
        "stty -echo; echo ready; read -r pw; stty echo; echo got; read -r x; echo \"$pw/$x\"";
    for record_input in [true, false] {
        let dir = tempfile::tempdir().unwrap();
        let mut s = spec("/bin/sh", &sh(script), &u.user, tty, dir.path());
        s.record_input = record_input;
        let (outcome, out, cast) = session(s, no_stop(), Duration::from_secs(5), |mut c| async {
            c.wait_for("ready").await;
            c.send(Frame::Stdin(b"hunter2\r".to_vec())).await;
            c.wait_for("got").await;
            c.send(Frame::Stdin(b"visible\r".to_vec())).await;
            c.finish().await
        })
        .await;
        assert_eq!(outcome.exited.code, Some(0));
        // The program read both; the password never reached the screen.
        let text = out.out();
        assert!(text.contains("hunter2/visible"), "{text:?}");
        assert!(!text.contains("hunter2\r\n"), "{text:?}");
        let raw = std::fs::read_to_string(dir.path().join("session.cast")).unwrap();
        let recorded_secret = raw.matches("hunter2").count();
        // Once: the program's own output of it at the end (`echo "$pw/$x"`), never as input.
        assert_eq!(recorded_secret, 1, "{raw}");
        if record_input {
            assert_eq!(typed(&cast), "visible\r");
            assert_eq!(cast.markers(), [crate::session::UNECHOED_MARKER, "exit 0"]);
        } else {
            assert_eq!(typed(&cast), "", "input recording is off for this role");
            assert_eq!(cast.markers(), ["exit 0"]);
        }
    }
}

#[tokio::test]
async fn end_of_input_reaches_a_program_reading_the_terminal() {
    if skip() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let tty = Some(WinSize { rows: 24, cols: 80 });
    let s = spec("cat", &["cat"], &root(), tty, dir.path());
    let (outcome, out, _) = session(s, no_stop(), Duration::from_secs(5), |mut c| async {
        // A partial line: EOF needs two VEOF characters.
        c.send(Frame::Stdin(b"abc".to_vec())).await;
        c.send(Frame::StdinEof).await;
        c.finish().await
    })
    .await;
    assert_eq!(
        outcome.exited.code,
        Some(0),
        "{:?} {:?}",
        outcome.exited,
        out.out()
    );
    // The terminal echoes "abc", then cat writes it.
    assert!(out.out().contains("abcabc"), "{:?}", out.out());
}

#[tokio::test]
async fn a_stop_hangs_the_session_up() {
    if skip() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let s = spec("sleep", &["sleep", "1000"], &root(), None, dir.path());
    let (tx, rx) = watch::channel(None);
    let started = std::time::Instant::now();
    let (outcome, out, cast) = session(s, rx, Duration::from_secs(30), |c| async {
        tx.send(Some("grant revoked".to_string())).unwrap();
        c.finish().await
    })
    .await;
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "SIGHUP, not the grace SIGKILL"
    );
    assert_eq!(outcome.exited.signal, Some(libc::SIGHUP));
    assert_eq!(outcome.exited.ended_by.as_deref(), Some("grant revoked"));
    assert_eq!(out.exited, outcome.exited);
    assert_eq!(cast.markers(), ["signal 1", "ended_by: grant revoked"]);
}

#[tokio::test]
async fn a_command_that_ignores_sighup_is_killed_after_the_grace_period() {
    if skip() {
        return;
    }
    let u = TestUser::create("hup", false);
    let dir = tempfile::tempdir().unwrap();
    let script = "trap '' HUP; echo ready; exec sleep 1000";
    let s = spec("/bin/sh", &sh(script), &u.user, None, dir.path());
    let (tx, rx) = watch::channel(None);
    let grace = Duration::from_millis(300);
    let (outcome, stopped_at, _) = session(s, rx, grace, |mut c| async {
        c.wait_for("ready").await;
        tx.send(Some("grant expired".to_string())).unwrap();
        let at = std::time::Instant::now();
        c.finish().await;
        at
    })
    .await;
    assert!(stopped_at.elapsed() >= grace);
    assert_eq!(outcome.exited.signal, Some(libc::SIGKILL));
    assert_eq!(outcome.exited.ended_by.as_deref(), Some("grant expired"));
}

#[tokio::test]
async fn a_client_that_goes_away_hangs_the_session_up() {
    if skip() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let s = spec("sleep", &["sleep", "1000"], &root(), None, dir.path());
    let (outcome, (), cast) = session(s, no_stop(), Duration::from_secs(30), |c| async {
        drop(c);
    })
    .await;
    assert_eq!(outcome.exited.signal, Some(libc::SIGHUP));
    assert_eq!(
        outcome.exited.ended_by.as_deref(),
        Some("client disconnected")
    );
    assert_eq!(
        cast.markers(),
        ["signal 1", "ended_by: client disconnected"]
    );
}

#[tokio::test]
async fn only_the_signals_on_the_safe_list_are_forwarded() {
    if skip() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let script = "trap 'echo got USR1; exit 7' USR1; echo ready; while :; do sleep 0.05; done";
    let s = spec("/bin/sh", &sh(script), &root(), None, dir.path());
    let (outcome, out, _) = session(s, no_stop(), Duration::from_secs(5), |mut c| async {
        c.wait_for("ready").await;
        c.send(Frame::Signal(libc::SIGKILL)).await;
        c.send(Frame::Signal(libc::SIGSEGV)).await;
        c.send(Frame::Signal(libc::SIGUSR1)).await;
        c.finish().await
    })
    .await;
    assert_eq!(outcome.exited.code, Some(7), "{:?}", outcome.exited);
    assert!(out.out().contains("got USR1"));
}

/// A command that gives up its terminal (`TIOCNOTTY`) makes the terminal's foreground group
/// read 0: a client's signal must then go to the session's own group, never to `kill(0)`,
/// which would be the agent's (here: this test process's) own group.
#[tokio::test]
async fn a_signal_never_reaches_the_agents_own_group() {
    if skip() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let script = "import fcntl, signal, termios, time\n\
        signal.signal(signal.SIGHUP, signal.SIG_IGN)\n\
        fcntl.ioctl(0, termios.TIOCNOTTY)\n\
        print('detached', flush=True)\n\
        time.sleep(60)\n";
    let s = spec(
        "/usr/bin/python3",
        &["python3", "-c", script],
        &root(),
        Some(WinSize { rows: 24, cols: 80 }),
        dir.path(),
    );
    let (outcome, _, _) = session(s, no_stop(), Duration::from_secs(5), |mut c| async {
        c.wait_for("detached").await;
        for sig in [libc::SIGUSR2, libc::SIGQUIT, libc::SIGUSR1] {
            c.send(Frame::Signal(sig)).await;
        }
        c.finish().await
    })
    .await;
    // This process is alive to see it: the first signal went to the command's group.
    assert_eq!(
        outcome.exited.signal,
        Some(libc::SIGUSR2),
        "{:?}",
        outcome.exited
    );
}

#[tokio::test]
async fn elevated_commands_dump_no_core() {
    if skip() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let s = spec(
        "/bin/sh",
        &sh("ulimit -c; ulimit -Hc"),
        &root(),
        None,
        dir.path(),
    );
    let (_, out, _) = run_simple(s).await;
    assert_eq!(out.out(), "0\n0\n");
}

#[tokio::test]
async fn the_command_inherits_no_descriptor_but_0_1_2() {
    if skip() {
        return;
    }
    // A descriptor without close-on-exec in the agent must not reach the command.
    // SAFETY: plain open(2); closed below.
    let leak = unsafe { libc::open(c"/dev/null".as_ptr(), libc::O_RDONLY) };
    assert!(leak > 2);
    for tty in [None, Some(WinSize { rows: 24, cols: 80 })] {
        let dir = tempfile::tempdir().unwrap();
        let s = spec("/bin/sh", &sh("ls /proc/$$/fd"), &root(), tty, dir.path());
        let (_, out, _) = run_simple(s).await;
        let fds: Vec<String> = out.out().split_whitespace().map(String::from).collect();
        assert_eq!(fds, ["0", "1", "2"], "tty: {tty:?}");
    }
    // SAFETY: closes the descriptor opened above.
    unsafe { libc::close(leak) };
}

#[tokio::test]
async fn the_recording_holds_exactly_what_the_client_received() {
    if skip() {
        return;
    }
    let printf = r"printf 'h\303\251llo \342\202\254 \360\237\246\200 \001\002\033[1mbold\033[0m\n'; seq 1 40000";
    for tty in [None, Some(WinSize { rows: 24, cols: 80 })] {
        let dir = tempfile::tempdir().unwrap();
        let s = spec("/bin/sh", &sh(printf), &root(), tty, dir.path());
        let (_, out, cast) = run_simple(s).await;
        assert!(out.stdout.len() > 200_000);
        assert!(out.out().contains("héllo € 🦀"));
        assert_eq!(cast.output().as_bytes(), &out.stdout[..], "tty: {tty:?}");
    }
    // Not UTF-8 at all: the recording is the lossy decoding of the whole stream, however
    // the reads split it.
    let dir = tempfile::tempdir().unwrap();
    let s = spec(
        "head",
        &["head", "-c", "300000", "/bin/sh"],
        &root(),
        None,
        dir.path(),
    );
    let (_, out, cast) = run_simple(s).await;
    assert_eq!(
        out.stdout.len(),
        300_000.min(std::fs::metadata("/bin/sh").unwrap().len() as usize)
    );
    assert_eq!(cast.output(), String::from_utf8_lossy(&out.stdout));
}

#[tokio::test]
async fn a_binary_replaced_after_the_check_does_not_change_what_runs() {
    if skip() {
        return;
    }
    let bin = secure_tempdir();
    let prog = bin.path().join("prog");
    std::fs::copy("/bin/echo", &prog).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let s = spec(
        prog.to_str().unwrap(),
        &["prog", "hello"],
        &root(),
        None,
        dir.path(),
    );
    let checked_hash = s.command.sha256().to_string();
    // Swap another binary in under the same name, after the check.
    let other = bin.path().join("other");
    std::fs::copy("/bin/false", &other).unwrap();
    std::fs::rename(&other, &prog).unwrap();
    let (outcome, out, _) = run_simple(s).await;
    assert_eq!(outcome.exited.code, Some(0));
    assert_eq!(out.stdout, b"hello\n");
    let echo = resolve("/bin/echo", SECURE, 0).unwrap();
    assert_eq!(checked_hash, echo.sha256());
}

#[tokio::test]
async fn scripts_run_through_their_interpreter_as_the_target_user() {
    if skip() {
        return;
    }
    let u = TestUser::create("scr", false);
    let bin = secure_tempdir();
    let script = bin.path().join("hello.sh");
    std::fs::write(&script, "#!/bin/sh\necho \"script as $(id -un): $1\"\n").unwrap();
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let s = spec(
        script.to_str().unwrap(),
        &["hello.sh", "arg"],
        &u.user,
        None,
        dir.path(),
    );
    let (outcome, out, _) = run_simple(s).await;
    assert_eq!(
        outcome.exited.code,
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.out(), format!("script as {}: arg\n", u.user.name));
}

#[tokio::test]
async fn the_working_directory_is_the_home_unless_one_is_asked_for() {
    if skip() {
        return;
    }
    let u = TestUser::create("cwd", false);
    for (cwd, expected) in [(Some("/usr/share"), "/usr/share\n"), (None, "/\n")] {
        let dir = tempfile::tempdir().unwrap();
        let mut s = spec("/bin/sh", &sh("pwd"), &u.user, None, dir.path());
        s.cwd = cwd.map(PathBuf::from);
        let (_, out, _) = run_simple(s).await;
        assert_eq!(out.out(), expected, "cwd {cwd:?}");
    }
    // A directory the user cannot enter: nothing runs (no silent fallback elsewhere).
    let dir = tempfile::tempdir().unwrap();
    let mut s = spec("/bin/sh", &sh("pwd"), &u.user, None, dir.path());
    s.cwd = Some(PathBuf::from("/root"));
    let (agent_side, _client) = tokio::io::duplex(1 << 16);
    let r = run_session(s, agent_side, no_stop(), Duration::from_secs(1)).await;
    assert!(r.is_err(), "started in a directory the user cannot enter");
}

#[tokio::test]
async fn a_failed_start_is_reported_to_the_client_and_leaves_no_recording() {
    if skip() {
        return;
    }
    let bin = secure_tempdir();
    let junk = bin.path().join("junk");
    std::fs::write(&junk, b"\x00\x01 not a program").unwrap();
    std::fs::set_permissions(&junk, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let s = spec(junk.to_str().unwrap(), &["junk"], &root(), None, dir.path());
    let recording = s.recording.clone();
    let (agent_side, client_side) = tokio::io::duplex(1 << 16);
    let (rd, wr) = tokio::io::split(client_side);
    let client = Client {
        rd,
        wr,
        stdout: Vec::new(),
        stderr: Vec::new(),
    };
    let (r, out) = tokio::join!(
        run_session(s, agent_side, no_stop(), Duration::from_secs(1)),
        client.finish()
    );
    let e = r.unwrap_err();
    assert!(e.to_string().starts_with("cannot start "), "{e}");
    assert_eq!(out.exited.code, Some(127));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot start"));
    assert!(!recording.exists());
}

#[tokio::test]
async fn what_the_command_leaves_behind_is_killed_when_the_grace_period_ends() {
    if skip() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // The inner shell prints its pid once it ignores SIGHUP, then becomes the sleep.
    let script = r#"sh -c 'trap "" HUP; echo $$; exec sleep 1000' & wait"#;
    let s = spec("/bin/sh", &sh(script), &root(), None, dir.path());
    let (tx, rx) = watch::channel(None);
    let grace = Duration::from_millis(300);
    let (outcome, (pidfd, stopped_at), _) = session(s, rx, grace, |mut c| async {
        c.wait_for("\n").await;
        let pid: i32 = c.out_text().trim().parse().unwrap();
        // SAFETY: pidfd_open(2) returns a new descriptor or -1.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) } as RawFd;
        assert!(fd >= 0, "pidfd_open: {}", io::Error::last_os_error());
        // SAFETY: the descriptor was just opened and is owned here only.
        let fd = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
        tx.send(Some("grant revoked".to_string())).unwrap();
        let at = std::time::Instant::now();
        c.finish().await;
        (fd, at)
    })
    .await;
    // The shell died of the hang-up; the sleep ignoring it outlived the session...
    assert_eq!(outcome.exited.signal, Some(libc::SIGHUP));
    let pidfd = async_fd(pidfd).unwrap();
    // ...and becomes readable (exits) once the grace period is over.
    tokio::time::timeout(TEST_LIMIT, pidfd.readable())
        .await
        .expect("the leftover process was never killed")
        .unwrap()
        .retain_ready();
    assert!(
        stopped_at.elapsed() >= grace,
        "{:?} {outcome:?}",
        stopped_at.elapsed()
    );
}
