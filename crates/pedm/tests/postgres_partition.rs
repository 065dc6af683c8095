//! A network cut between one pedmd and PostgreSQL, under load, with a second instance that
//! still reaches the database.
//!
//! pedmd A runs in a network namespace the test makes, with two veth links to this machine:
//! one to PostgreSQL, one for its API. The database link is taken down (packets vanish, nothing
//! is refused: the nasty kind of cut) while A's committer is busy. A cut-off instance may be
//! inside a batch holding the audit chain's head lock; PostgreSQL ends its idle transaction
//! after 5 s (`idle_in_transaction_session_timeout`, set by pedmd), so B goes on; A answers
//! 503 (or its request timeout) instead of hanging; when the link comes back A works again.
//! Every acknowledged request is stored, every grant ends once, the chain verifies.
//!
//! Needs root (network namespaces); skipped with the reason otherwise.

mod common;

use common::load::{Load, assert_chain_verifies, assert_stored_and_expired_once, two_instances};
use common::*;
use pedm_store::testing::TestPostgres;
use std::process::Command;
use std::time::{Duration, Instant};

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("running ip");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A network namespace with veth links to this machine; removed when dropped.
struct Netns {
    name: String,
    /// This machine's ends of the links.
    links: Vec<String>,
}

impl Netns {
    fn make_or_skip(name: &str) -> Option<Netns> {
        let uid = Command::new("id").arg("-u").output().expect("id");
        if String::from_utf8_lossy(&uid.stdout).trim() != "0" {
            eprintln!("skipped: network namespaces need root");
            return None;
        }
        let probe = Command::new("ip").args(["netns", "add", name]).output();
        match probe {
            Ok(o) if o.status.success() => {}
            Ok(o) => {
                eprintln!(
                    "skipped: cannot make a network namespace here: {}",
                    String::from_utf8_lossy(&o.stderr).trim()
                );
                return None;
            }
            Err(e) => {
                eprintln!("skipped: `ip` (iproute2) is not runnable: {e}");
                return None;
            }
        }
        let ns = Netns {
            name: name.to_string(),
            links: vec![],
        };
        ip(&["-n", name, "link", "set", "lo", "up"]);
        Some(ns)
    }

    /// A veth link: `host` here with `.1` of `net` (a /30 like `10.231.7`), its peer in the
    /// namespace with `.2`. Returns (this machine's address, the namespace's).
    fn link(&mut self, host: &str, peer: &str, net: &str) -> (String, String) {
        let (here, there) = (format!("{net}.1"), format!("{net}.2"));
        ip(&["link", "add", host, "type", "veth", "peer", "name", peer]);
        self.links.push(host.to_string());
        ip(&["link", "set", peer, "netns", &self.name]);
        ip(&["addr", "add", &format!("{here}/30"), "dev", host]);
        ip(&["link", "set", host, "up"]);
        ip(&[
            "-n",
            &self.name,
            "addr",
            "add",
            &format!("{there}/30"),
            "dev",
            peer,
        ]);
        ip(&["-n", &self.name, "link", "set", peer, "up"]);
        (here, there)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        for l in &self.links {
            let _ = Command::new("ip").args(["link", "del", l]).status();
        }
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_network_cut_between_one_instance_and_postgres_stops_neither_the_other_nor_the_truth() {
    let Some(pg) = TestPostgres::start_or_skip() else {
        return;
    };
    // Unique per run: names and subnets must not meet another run's on this machine.
    let k = std::process::id() % 250 + 1;
    let Some(mut ns) = Netns::make_or_skip(&format!("pedmcut{k}")) else {
        return;
    };
    let (db_here, _) = ns.link(
        &format!("pcdb{k}"),
        &format!("pcdbn{k}"),
        &format!("10.231.{k}"),
    );
    let (_, api_there) = ns.link(
        &format!("pcapi{k}"),
        &format!("pcapin{k}"),
        &format!("10.232.{k}"),
    );
    pg.listen_also(&db_here, &format!("10.231.{k}.0/30"))
        .expect("PostgreSQL on the link");
    let db = pg.fresh_database("partition").expect("database");
    let db_over_link = db.replace("127.0.0.1", &db_here);

    let (a, b, clients) = two_instances(
        Options {
            database_url: Some(db_over_link),
            netns: Some((ns.name.clone(), api_there)),
            ..Default::default()
        },
        Options {
            database_url: Some(db),
            ..Default::default()
        },
    )
    .await;
    let alice = a.client(&user_with_token(&a, "alice", false).await);

    // A's clients may hear "unavailable" (503) or A's request timeout (408) while it is cut
    // off; B's only 503 while A's stale lock is held. Never anything else.
    let mut load = Load::start(clients, "3s", |i, e| match e.status() {
        Some(503) => true,
        Some(408) => i % 2 == 0,
        _ => false,
    });
    load.wait_acked(100, Duration::from_secs(60), "before the cut")
        .await;
    ip(&["link", "set", ns.links[0].as_str(), "down"]);
    let cut_at = Instant::now();
    let at_cut = load.acked();
    // B goes on (A acknowledges nothing while cut off).
    load.wait_acked(at_cut + 100, Duration::from_secs(60), "B during the cut")
        .await;
    let b_resumed = cut_at.elapsed();
    // A says it cannot, rather than hanging or answering wrong.
    let e = alice
        .create_request(&req("web1", "docker", "3s", "while cut off"))
        .await
        .expect_err("A cannot reach the database");
    assert!(matches!(e.status(), Some(503) | Some(408)), "{e}");
    let a_answered = cut_at.elapsed();

    ip(&["link", "set", ns.links[0].as_str(), "up"]);
    let healed_at = Instant::now();
    eventually(
        Duration::from_secs(120),
        "A works again after the cut",
        || {
            let alice = alice.clone();
            async move {
                alice
                    .create_request(&req("web1", "docker", "3s", "after the cut"))
                    .await
                    .ok()
            }
        },
    )
    .await;
    let a_back = healed_at.elapsed();
    let seen = load.finish().await;
    println!(
        "cut: B acknowledged 100 more within {b_resumed:?}; A answered {} after {a_answered:?}; \
         A worked again {a_back:?} after the link came back; {} acknowledged, {} refused",
        e.status().unwrap_or_default(),
        seen.acked.len(),
        seen.refused
    );
    assert_stored_and_expired_once(&[b.admin(), a.admin()], &seen).await;
    assert!(assert_chain_verifies(&a.admin()).await > 0);
}
