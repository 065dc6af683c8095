//! Containment on the real binaries: nothing a session starts outlives its grant, however it
//! tries to get away (the escape matrix), and a role's resource limits hold for everything a
//! grant's sessions run. Root only, with cgroups; skipped with the reason printed otherwise.

mod common;

use common::agent::*;
use common::*;
use std::time::{Duration, Instant};

/// Prints the limits the session's cgroups hold, as seen from inside: `pids=N memory=N
/// cpu=QUOTA/PERIOD` (`-` where none is set), from the v2 tree (the grant's cgroup is a parent
/// of the session's) and from v1 hierarchies (hybrid hosts).
const SHOW_LIMITS: &str = r#"
import os
mounts = {}
for l in open('/proc/self/mountinfo'):
    left, right = l.split(' - ')
    fs, _, opts = right.split()[:3]
    point = left.split()[4]
    if fs == 'cgroup2':
        mounts['v2'] = point
    elif fs == 'cgroup':
        for o in opts.split(','):
            mounts[o] = point
paths = {}
for l in open('/proc/self/cgroup'):
    _, names, path = l.strip().split(':', 2)
    for n in (names.split(',') if names else ['v2']):
        paths[n] = path
def chain(h):
    if h not in mounts or h not in paths:
        return []
    d = mounts[h] + paths[h]
    out = []
    while d.startswith(mounts[h]):
        out.append(d)
        if d == mounts[h]:
            break
        d = os.path.dirname(d)
    return out
def first(files):
    for h, f, unset in files:
        for d in chain(h):
            try:
                v = open(os.path.join(d, f)).read().strip()
            except OSError:
                continue
            if v not in unset:
                return v, d
    return '-', ''
pids = first([('v2', 'pids.max', ['max']), ('pids', 'pids.max', ['max'])])
mem = first([('v2', 'memory.max', ['max']), ('memory', 'memory.limit_in_bytes', ['9223372036854771712'])])
cpu = first([('v2', 'cpu.max', ['max 100000'])])
if cpu[0] == '-':
    q = first([('cpu', 'cpu.cfs_quota_us', ['-1'])])
    cpu = (q[0] + ' 100000', q[1]) if q[0] != '-' else q
print('pids=%s memory=%s cpu=%s' % (pids[0], mem[0], cpu[0].replace(' ', '/')))
"#;

/// Every way a process tries to outlive its session, each printing `<kind> <pid>` of the
/// process that stays behind, with its output detached.
const ESCAPES: &str = r#"
q='</dev/null >/dev/null 2>&1'
echo marker $PEDM_SESSION
eval "setsid /bin/sleep 1000 $q &"; echo setsid $!
eval "nohup /bin/sleep 1000 $q &"; echo nohup $!
/bin/sh -c "/bin/sleep 1000 $q & echo double-fork \$!"
/bin/bash -c "/bin/sleep 1000 $q & echo disown \$!; disown -a"
/usr/bin/python3 -c '
import os, sys, time
r, w = os.pipe()
if os.fork():
    os.close(w); print("daemon", os.read(r, 32).decode().strip(), flush=True); sys.exit(0)
os.setsid()
if os.fork():
    os._exit(0)
os.chdir("/")
os.write(w, str(os.getpid()).encode()); os.close(w)
for fd in range(3):
    os.close(fd)
time.sleep(1000)
'
/usr/bin/python3 -c '
import os, sys, time
r, w = os.pipe()
pid = os.fork()
if pid:
    os.close(w); os.read(r, 1); print("setpgid", pid, flush=True); sys.exit(0)
os.setpgid(0, 0)
os.close(1); os.close(2)
os.write(w, b"."); os.close(w)
time.sleep(1000)
'
"#;

/// A bounded fork bomb: forks up to 500 sleeping children and says how many it got.
const FORK_BOMB: &str = r#"
import os, time
made = 0
for _ in range(500):
    try:
        pid = os.fork()
    except OSError:
        break
    if pid == 0:
        os.close(1); os.close(2)
        time.sleep(1000)
        os._exit(0)
    made += 1
print('forked', made, 'marker', os.environ['PEDM_SESSION'], flush=True)
"#;

fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rsplit(')').next().map(|r| !r.trim().starts_with('Z')))
        .unwrap_or(false)
}

/// The processes in the system whose environment carries this marker value.
fn with_marker(marker: &str) -> Vec<i32> {
    let needle = format!("PEDM_SESSION={marker}");
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/environ"))
                .is_ok_and(|env| env.split(|b| *b == 0).any(|kv| kv == needle.as_bytes()))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_a_session_starts_outlives_its_grant_and_limits_hold() {
    if !root_or_skip("nothing_a_session_starts_outlives_its_grant_and_limits_hold") {
        return;
    }
    let (s, agent, alice, client) = setup("pedmct").await;
    if !agent.contained() {
        println!("SKIP: no writable cgroup v2 hierarchy here; the escape matrix needs one");
        return;
    }
    let log = agent.log_text();
    let has = |c: &str| log.contains(&format!("{c} (v1)")) || log.contains(&format!("{c} (v2)"));
    let limited = ["memory", "pids", "cpu"].map(has);
    println!("controllers (memory, pids, cpu): {limited:?}");

    // Limits on the role, through the CLI.
    let out = s.cli(
        &s.admin_token,
        &[
            "role",
            "update",
            "web1",
            "root",
            "--pids-max",
            "64",
            "--memory-max",
            "64M",
            "--cpu-max",
            "50%",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("memory 64M, pids 64, cpu 50%"),
        "{}",
        stdout(&out)
    );
    let g = grant(&client, "30m").await;
    agent.wait_snapshot(1, None);
    if limited != [true; 3] {
        // A host that cannot enforce a limit runs nothing under it, and says which.
        let out = agent.exec(&alice, &["/bin/true"]);
        assert!(!out.status.success(), "ran without its limits");
        assert!(stderr(&out).contains("controller"), "{}", stderr(&out));
        println!("SKIP limits part: this host's cgroups lack a controller the role limits");
        let out = s.cli(
            &s.admin_token,
            &[
                "role",
                "update",
                "web1",
                "root",
                "--pids-max",
                "none",
                "--memory-max",
                "none",
                "--cpu-max",
                "none",
            ],
        );
        assert!(out.status.success(), "{}", stderr(&out));
    } else {
        // The limits are in force inside the session.
        let out = agent.exec(&alice, &["/usr/bin/python3", "-c", SHOW_LIMITS]);
        assert!(out.status.success(), "{}", stderr(&out));
        assert_eq!(
            stdout(&out).trim(),
            format!("pids=64 memory={} cpu=50000/100000", 64 << 20)
        );
        // A fork bomb meets the pids limit (the count includes the bomb itself).
        let out = agent.exec(&alice, &["/usr/bin/python3", "-c", FORK_BOMB]);
        assert!(out.status.success(), "{}", stderr(&out));
        let text = stdout(&out);
        let made: usize = text.split_whitespace().nth(1).unwrap().parse().unwrap();
        assert!((1..64).contains(&made), "{text}");
        // A process past the memory limit is ended by the kernel.
        let out = agent.exec(
            &alice,
            &[
                "/usr/bin/python3",
                "-c",
                "b = bytearray(256 << 20); print('survived')",
            ],
        );
        assert!(!out.status.success(), "{}", stdout(&out));
        assert!(!stdout(&out).contains("survived"));
    }
    // Lifting one limit leaves the others (role update merges).
    if limited == [true; 3] {
        let out = s.cli(
            &s.admin_token,
            &["role", "update", "web1", "root", "--cpu-max", "none"],
        );
        assert!(out.status.success(), "{}", stderr(&out));
        assert!(
            stdout(&out).contains("memory 64M, pids 64"),
            "{}",
            stdout(&out)
        );
        assert!(!stdout(&out).contains("cpu 50%"), "{}", stdout(&out));
    }

    // The escape matrix, under a grant that runs out.
    revoke(&s, g.id, "limits checked").await;
    agent.wait_snapshot(0, None);
    let g = grant(&client, "20s").await;
    agent.wait_snapshot(1, None);
    // Each way stays behind after its command ended...
    let out = agent.exec(&alice, &["/bin/bash", "-c", ESCAPES]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    let mut escaped: Vec<(String, String)> = text
        .lines()
        .filter_map(|l| l.split_once(' '))
        .map(|(k, v)| (k.to_string(), v.trim().to_string()))
        .collect();
    assert_eq!(escaped.len(), 7, "{text}");
    escaped.retain(|(k, _)| k != "marker");
    let mut escaped: Vec<(String, i32)> = escaped
        .into_iter()
        .map(|(k, p)| {
            let pid = p.parse().unwrap_or_else(|_| panic!("{k}: {p:?}"));
            (k, pid)
        })
        .collect();
    // ... and a fork bomb's children (the bomb exits, they sleep on).
    let out = agent.exec(&alice, &["/usr/bin/python3", "-c", FORK_BOMB]);
    assert!(out.status.success(), "{}", stderr(&out));
    let bomb = stdout(&out);
    let bomb_marker = bomb.split_whitespace().nth(3).expect("the bomb's marker");
    let children = with_marker(bomb_marker);
    assert!(!children.is_empty(), "the bomb's children run: {bomb}");
    escaped.extend(
        children
            .into_iter()
            .map(|p| ("fork-bomb child".to_string(), p)),
    );
    for (kind, pid) in &escaped {
        assert!(
            alive(*pid),
            "{kind} ({pid}) should run until the grant ends"
        );
    }

    // The grant runs out: the agent's own clock ends it, whatever pedmd says.
    let expires = std::time::SystemTime::UNIX_EPOCH
        + Duration::from_millis(g.expires_at.as_millisecond() as u64);
    let deadline = Instant::now() + Duration::from_secs(60);
    for (_, pid) in &escaped {
        while alive(*pid) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    let last = std::time::SystemTime::now()
        .duration_since(expires)
        .unwrap_or_default();
    let survivors: Vec<String> = escaped
        .iter()
        .filter(|(_, p)| alive(*p))
        .map(|(k, p)| format!("{k} ({p})"))
        .collect();
    assert!(survivors.is_empty(), "outlived the grant: {survivors:?}");
    println!(
        "all {} processes gone at most {:.0} ms after the grant's expiry (the agent's kill_grace is 1 s)",
        escaped.len(),
        last.as_secs_f64() * 1000.0
    );
}
