//! Elevation latency and recording throughput of `pedm exec`, against `sudo` and a direct run
//! in the same run.
//!
//! `cargo bench -p pedm --bench exec` (as root; needs `sudo`: `apt-get install sudo`)
//!
//! * latency: `/bin/true` run by an unprivileged user directly, through `sudo -n` (a
//!   NOPASSWD rule for that user, Debian's defaults) and through `pedm exec` (the real
//!   pedmd, pedm-agent and pedm; the session is recorded and reported), interleaved, 300 each.
//! * recording throughput: `cat` of a 200 MB text file, output to /dev/null, through
//!   `pedm exec` (recorded as asciicast), `sudo` with I/O logging on (`log_output`,
//!   `log_input`), `script` (recording to a file) and directly; best of 3.
//! * sudo's plugin: `sudo -n /bin/true` with the pedm approval plugin in `sudo.conf` and
//!   without it (same sudoers), rounds alternating, each run timed by the user's bash.
//! * intercept: a shell running `/bin/true` 500 times through `pedm exec`, under a role with
//!   `--intercept` (each exec stopped, read, decided, recorded as `session.exec`) and under
//!   one without; the difference per exec, best of 3.

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "support/mod.rs"]
mod support;

use common::agent::*;
use std::io::Write;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const LATENCY_RUNS: usize = 300;
const INTERCEPTED_EXECS: usize = 500;
const FILE_MB: usize = 200;
/// Between paced runs.
const PACE: Duration = Duration::from_millis(50);

fn main() {
    if !nix::unistd::geteuid().is_root() {
        println!("SKIP exec bench: needs root (creates a user, runs pedm-agent)");
        return;
    }
    if Command::new("sudo").arg("--version").output().is_err() {
        println!("SKIP exec bench: sudo is not installed (apt-get install sudo)");
        return;
    }
    support::block_on(run());
}

struct Sudoers(std::path::PathBuf);

impl Drop for Sudoers {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn percentile(v: &mut [Duration], p: f64) -> f64 {
    v.sort_unstable();
    v[((v.len() as f64 * p) as usize).min(v.len() - 1)].as_secs_f64() * 1e3
}

async fn run() {
    // PEDM_BENCH_RUNS / PEDM_BENCH_MB shorten a run while iterating.
    let latency_runs = support::setting("PEDM_BENCH_RUNS", LATENCY_RUNS as u64) as usize;
    let file_mb = support::setting("PEDM_BENCH_MB", FILE_MB as u64) as usize;
    let (s, agent, user, client) = setup("pedmbx").await;
    let g = grant(&client, "1h").await;
    add_role(&s, "audited", "root", &["--intercept"]);
    common::add_policy(
        &s.admin(),
        "bench-shells.cedar",
        "@id(\"bench-shells\")\npermit (principal, action == Pedm::Action::\"exec\", resource)\n\
         when { resource.shell };\n",
    )
    .await;
    let audited = client
        .create_request(&common::req("web1", "audited", "1h", "bench"))
        .await
        .unwrap()
        .grant
        .expect("auto-approved");
    agent.wait_snapshot(2, None);
    let iolog = agent.dir.path().join("sudo-io");
    let sudoers = Sudoers(std::path::PathBuf::from(format!(
        "/etc/sudoers.d/pedm-bench-{}",
        user.name
    )));
    std::fs::write(
        &sudoers.0,
        format!(
            "{u} ALL=(root) NOPASSWD: ALL\n\
             Defaults!/usr/bin/cat log_output, log_input, iolog_dir={iolog}\n",
            u = user.name,
            iolog = iolog.display()
        ),
    )
    .unwrap();
    let as_user = |program: &str, args: &[&str]| {
        let mut c = Command::new(program);
        c.args(args)
            .uid(user.uid)
            .gid(user.gid)
            .current_dir(agent.dir.path())
            .env_clear()
            .env("PATH", "/usr/bin:/bin")
            .env("PEDM_AGENT_SOCKET", agent.socket())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        c
    };
    let pedm = agent.dir.path().join("pedm");
    let pedm = pedm.to_str().unwrap();
    let time = |mut c: Command| {
        let t = Instant::now();
        let st = c.status().expect("run");
        assert!(st.success(), "{c:?} failed: {st}");
        t.elapsed()
    };

    let gid = g.id.to_string();
    // Latency, interleaved so that load changes hit all three alike.
    let (mut direct, mut sudo, mut pedm_l) = (vec![], vec![], vec![]);
    for _ in 0..latency_runs {
        direct.push(time(as_user("/bin/true", &[])));
        sudo.push(time(as_user("sudo", &["-n", "/bin/true"])));
        pedm_l.push(time(as_user(
            pedm,
            &["exec", "--grant", &gid, "--", "/bin/true"],
        )));
    }
    // At a person's pace: a pause before each run, so that nothing the previous run did is
    // still warm in the kernel (a move between cgroups, for one, waits for an RCU grace
    // period unless another happened just before). The pause paces the runs; it
    // synchronises nothing.
    let paced_runs = latency_runs.min(100);
    let (mut sudo_paced, mut pedm_paced) = (vec![], vec![]);
    for _ in 0..paced_runs {
        std::thread::sleep(PACE);
        sudo_paced.push(time(as_user("sudo", &["-n", "/bin/true"])));
        std::thread::sleep(PACE);
        pedm_paced.push(time(as_user(
            pedm,
            &["exec", "--grant", &gid, "--", "/bin/true"],
        )));
    }
    let sp50 = percentile(&mut sudo_paced, 0.5);
    let pp50 = percentile(&mut pedm_paced, 0.5);
    let d50 = percentile(&mut direct, 0.5);
    let s50 = percentile(&mut sudo, 0.5);
    let p50 = percentile(&mut pedm_l, 0.5);
    let s99 = percentile(&mut sudo, 0.99);
    let p99 = percentile(&mut pedm_l, 0.99);

    // Throughput of recorded output.
    let file = agent.dir.path().join("big.txt");
    {
        let mut f = std::io::BufWriter::new(std::fs::File::create(&file).unwrap());
        let line = b"2026-11-23T04:00:00Z web1 nginx[1234]: GET /api/v1/requests 200 0.004s\n";
        for _ in 0..(file_mb * 1024 * 1024 / line.len()) {
            f.write_all(line).unwrap();
        }
    }
    std::fs::set_permissions(&file, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    let bytes = std::fs::metadata(&file).unwrap().len() as f64;
    let f = file.to_str().unwrap();
    let typescript = agent.dir.path().join("typescript");
    let best = |mk: &dyn Fn() -> Command| (0..3).map(|_| time(mk())).min().unwrap().as_secs_f64();
    let mbs = |secs: f64| bytes / secs / 1e6;
    let t_direct = best(&|| as_user("/bin/cat", &[f]));
    let t_sudo = best(&|| as_user("sudo", &["-n", "/usr/bin/cat", f]));
    let t_script = best(&|| {
        let mut c = Command::new("script");
        c.args([
            "-q",
            "-c",
            &format!("cat {f}"),
            typescript.to_str().unwrap(),
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
        c
    });
    let t_pedm = best(&|| as_user(pedm, &["exec", "--grant", &gid, "--", "/usr/bin/cat", f]));

    // Per-exec cost of intercept.
    let loop_script =
        format!("i=0; while [ $i -lt {INTERCEPTED_EXECS} ]; do /bin/true; i=$((i+1)); done");
    let in_shell = |grant: String| {
        let script = loop_script.clone();
        move || {
            as_user(
                pedm,
                &["exec", "--grant", &grant, "--", "/bin/sh", "-c", &script],
            )
        }
    };
    let t_plain = best(&in_shell(g.id.to_string()));
    let t_intercepted = best(&in_shell(audited.id.to_string()));
    let per_exec_ms = |t: f64| t * 1e3 / INTERCEPTED_EXECS as f64;

    // sudo with the pedm approval plugin against sudo without it: the same sudoers, each
    // round in a mount namespace where the bench's sudo.conf is /etc/sudo.conf, the user's
    // bash timing each `sudo -n /bin/true` (EPOCHREALTIME: no fork), rounds alternating.
    let plugin_dir = tempfile::tempdir().unwrap();
    let plugin = built_library("libpedm_sudo.so", plugin_dir.path());
    let conf = |with_plugin: bool| {
        let path = plugin_dir.path().join(if with_plugin {
            "pedm.conf"
        } else {
            "plain.conf"
        });
        let mut text = "Plugin sudoers_policy sudoers.so\n".to_string();
        if with_plugin {
            text += &format!(
                "Plugin pedm_approval {} socket={}\n",
                plugin.display(),
                agent.socket().display()
            );
        }
        std::fs::write(&path, text).unwrap();
        path
    };
    let (plain_conf, pedm_conf) = (conf(false), conf(true));
    let sudo_round = |conf: &std::path::Path, n: usize| -> Vec<Duration> {
        let timed = format!(
            "for i in $(seq {n}); do a=$EPOCHREALTIME; sudo -n /bin/true || exit 1; \
             b=$EPOCHREALTIME; echo \"$a $b\"; done"
        );
        let script = format!(
            "mount --bind {} /etc/sudo.conf && exec runuser -u {} -- /bin/bash -c '{}'",
            conf.display(),
            user.name,
            timed
        );
        let out = in_mount_namespace(&script).output().expect("unshare");
        assert!(
            out.status.success(),
            "sudo round failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| {
                let (a, b) = l.split_once(' ')?;
                let secs = b.parse::<f64>().ok()? - a.parse::<f64>().ok()?;
                Some(Duration::from_secs_f64(secs.max(0.0)))
            })
            .collect()
    };
    let (mut sudo_plain, mut sudo_pedm) = (vec![], vec![]);
    let per_round = (latency_runs / 5).max(10);
    for _ in 0..5 {
        sudo_plain.extend(sudo_round(&plain_conf, per_round));
        sudo_pedm.extend(sudo_round(&pedm_conf, per_round));
    }
    let sudo_plain50 = percentile(&mut sudo_plain, 0.5);
    let sudo_pedm50 = percentile(&mut sudo_pedm, 0.5);

    println!(
        "\npedm exec vs sudo (grant {}, {latency_runs} runs each, interleaved)",
        g.id
    );
    println!(
        "{:<40} {:>10} {:>10}",
        "elevation latency /bin/true", "p50 ms", "p99 ms"
    );
    println!("{:<40} {:>10.2} {:>10}", "direct (no elevation)", d50, "");
    println!("{:<40} {:>10.2} {:>10.2}", "sudo -n (NOPASSWD)", s50, s99);
    println!(
        "{:<40} {:>10.2} {:>10.2}",
        "pedm exec (recorded, reported)", p50, p99
    );
    println!("pedm/sudo p50 ratio: {:.2}", p50 / s50);
    println!(
        "{:<40} {:>10.2}\n{:<40} {:>10.2}\npedm/sudo p50 ratio at a person's pace: {:.2}",
        format!("sudo -n, {}ms apart ({paced_runs} runs)", PACE.as_millis()),
        sp50,
        format!("pedm exec, {}ms apart", PACE.as_millis()),
        pp50,
        pp50 / sp50
    );
    println!(
        "{:<40} {:>10.2}\n{:<40} {:>10.2}\nsudo with/without the plugin p50 ratio: {:.2} (+{:.2} ms)",
        format!("sudo -n, no plugin ({} runs)", sudo_plain.len()),
        sudo_plain50,
        "sudo -n, pedm approval plugin",
        sudo_pedm50,
        sudo_pedm50 / sudo_plain50,
        sudo_pedm50 - sudo_plain50
    );
    println!(
        "\n{:<40} {:>10}",
        format!("recorded output, cat {file_mb} MB"),
        "MB/s"
    );
    println!(
        "{:<40} {:>10.0}",
        "direct cat (no recording)",
        mbs(t_direct)
    );
    println!(
        "{:<40} {:>10.0}",
        "sudo with log_output/log_input",
        mbs(t_sudo)
    );
    println!("{:<40} {:>10.0}", "script (pty, to a file)", mbs(t_script));
    println!("{:<40} {:>10.0}", "pedm exec (asciicast)", mbs(t_pedm));
    println!("pedm/sudo throughput ratio: {:.2}", t_sudo / t_pedm);
    println!(
        "\n{:<40} {:>10}",
        format!("a shell running /bin/true {INTERCEPTED_EXECS} times"),
        "ms/exec"
    );
    println!("{:<40} {:>10.3}", "without intercept", per_exec_ms(t_plain));
    println!(
        "{:<40} {:>10.3}",
        "with intercept (decided, recorded)",
        per_exec_ms(t_intercepted)
    );
    println!(
        "intercept overhead per exec: {:.3} ms",
        per_exec_ms(t_intercepted - t_plain)
    );
    // One line per figure for scripts/bench: lower is better for latency, higher for MB/s.
    println!(
        "BENCH name=exec_latency_p50 unit=ms pedm={p50:.3} peer={s50:.3} peer_name=sudo better=lower goal=<=60%"
    );
    println!(
        "BENCH name=exec_latency_paced_p50 unit=ms pedm={pp50:.3} peer={sp50:.3} peer_name=sudo better=lower goal=<=60% figure=elevation at a person's pace (50 ms apart), pedm exec vs sudo -n, p50"
    );
    println!(
        "BENCH name=sudo_plugin_p50 unit=ms pedm={sudo_pedm50:.3} peer={sudo_plain50:.3} peer_name=sudo_without_plugin better=lower figure=sudo -n /bin/true with the pedm approval plugin vs without, p50"
    );
    println!(
        "BENCH name=recording_throughput unit=MB/s pedm={:.1} peer={:.1} peer_name=sudo_iolog better=higher",
        mbs(t_pedm),
        mbs(t_sudo)
    );
    println!(
        "BENCH name=intercepted_exec unit=ms pedm={:.3} peer={:.3} peer_name=no_intercept better=lower figure=per_exec",
        per_exec_ms(t_intercepted),
        per_exec_ms(t_plain)
    );
    println!(
        "BENCH name=recording_throughput_vs_script unit=MB/s pedm={:.1} peer={:.1} peer_name=script better=higher",
        mbs(t_pedm),
        mbs(t_script)
    );
}
