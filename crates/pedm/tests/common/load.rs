//! Request load for failure tests (a database failover, an instance killed): clients ask for
//! short auto-approved grants until stopped, and what was acknowledged is kept, to be checked
//! against the database afterwards.

use super::{
    Options, Server, allow_parallel_auto_approved, eventually, req, sleep_past, standard_targets,
    user_with_token,
};
use jiff::Timestamp;
use pedm_api::{ApiError, AuditQuery, Client, GrantQuery, GrantState};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::watch;
use uuid::Uuid;

/// Two instances on one database, ready for load: A (started with `a`) gets the standard
/// targets and parallel auto-approved grants, then B starts (after that policy change, so both
/// decide with it from the first request) with A's admin token; 16 users, the even ones
/// talking to A and the odd ones to B.
pub async fn two_instances(a: Options, b: Options) -> (Server, Server, Vec<Client>) {
    let a = Server::start_with(a);
    standard_targets(&a).await;
    allow_parallel_auto_approved(&a.admin()).await;
    let b = Server::start_with(Options {
        admin_token: Some(a.admin_token.clone()),
        ..b
    });
    let mut clients = vec![];
    for i in 0..16 {
        let token = user_with_token(&a, &format!("user{i}"), false).await;
        clients.push(if i % 2 == 0 {
            a.client(&token)
        } else {
            b.client(&token)
        });
    }
    (a, b, clients)
}

/// What the clients saw.
#[derive(Default)]
pub struct Seen {
    /// Acknowledged requests: (request, its grant, the grant's end).
    pub acked: Vec<(Uuid, Uuid, Timestamp)>,
    /// Requests that failed in a way the test allows (e.g. 503 while there is no primary).
    pub refused: usize,
    /// The longest time between two acknowledgements (the outage as clients saw it).
    pub longest_gap: Duration,
}

pub struct Load {
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    acks: watch::Receiver<usize>,
    seen: Arc<Mutex<Seen>>,
}

impl Load {
    /// Each client requests `docker` on `web1` for `duration`, over and over (the policy must
    /// allow parallel grants). An error `allowed` refuses (given the client's index) fails the
    /// test.
    pub fn start(
        clients: Vec<Client>,
        duration: &str,
        allowed: fn(usize, &ApiError) -> bool,
    ) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let (acks_tx, acks) = watch::channel(0usize);
        let acks_tx = Arc::new(acks_tx);
        let seen = Arc::new(Mutex::new(Seen::default()));
        let last_ack = Arc::new(Mutex::new(Instant::now()));
        let tasks = clients
            .into_iter()
            .enumerate()
            .map(|(i, c)| {
                let (stop, acks_tx, seen, last_ack) = (
                    stop.clone(),
                    acks_tx.clone(),
                    seen.clone(),
                    last_ack.clone(),
                );
                let duration = duration.to_string();
                tokio::spawn(async move {
                    let mut n = 0;
                    while !stop.load(Ordering::Relaxed) {
                        n += 1;
                        let why = format!("client {i} request {n}");
                        match c
                            .create_request(&req("web1", "docker", &duration, &why))
                            .await
                        {
                            Ok(r) => {
                                let g = r.grant.expect("auto-approved: a grant");
                                let now = Instant::now();
                                let gap =
                                    now - std::mem::replace(&mut *last_ack.lock().unwrap(), now);
                                let mut s = seen.lock().unwrap();
                                s.longest_gap = s.longest_gap.max(gap);
                                s.acked.push((r.request.id, g.id, g.expires_at));
                                drop(s);
                                acks_tx.send_modify(|n| *n += 1);
                            }
                            Err(e) => {
                                assert!(allowed(i, &e), "client {i}: {e}");
                                seen.lock().unwrap().refused += 1;
                                tokio::time::sleep(Duration::from_millis(50)).await;
                            }
                        }
                    }
                })
            })
            .collect();
        Load {
            stop,
            tasks,
            acks,
            seen,
        }
    }

    /// Acknowledgements so far.
    pub fn acked(&self) -> usize {
        *self.acks.borrow()
    }

    /// Waits until `n` requests in all have been acknowledged, at most `limit`.
    pub async fn wait_acked(&mut self, n: usize, limit: Duration, what: &str) {
        tokio::time::timeout(limit, self.acks.wait_for(|a| *a >= n))
            .await
            .unwrap_or_else(|_| panic!("{what}: {n} acknowledgements not reached in {limit:?}"))
            .expect("load runs");
    }

    /// Stops the clients; fails if one met an error it should not have.
    pub async fn finish(self) -> Seen {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.tasks {
            t.await.expect("client task");
        }
        std::mem::take(&mut *self.seen.lock().unwrap())
    }
}

/// Every acknowledged request and its grant are stored; once all have ended, every grant in
/// the database (acknowledged or not) has expired with exactly one `grant.expired` event, and
/// every grant's request was recorded once (no half-written changeset).
pub async fn assert_stored_and_expired_once(admins: &[Client], seen: &Seen) {
    for (i, (request, grant, _)) in seen.acked.iter().enumerate() {
        let admin = &admins[i % admins.len()];
        admin
            .get_request(*request)
            .await
            .expect("acknowledged request stored");
        let g = admin.get_grant(*grant).await.expect("its grant stored");
        assert_eq!(g.request_id, *request);
    }
    let admin = &admins[0];
    let last_end = seen.acked.iter().map(|x| x.2).max().expect("acknowledged");
    sleep_past(last_end).await;
    let grants = eventually(Duration::from_secs(60), "every grant expired", || async {
        let all = admin
            .list_grants(&GrantQuery::default())
            .await
            .expect("grants");
        all.iter()
            .all(|g| g.state == GrantState::Expired)
            .then_some(all)
    })
    .await;
    assert!(grants.len() >= seen.acked.len());
    let count = |action: &'static str| async move {
        let mut per: BTreeMap<String, usize> = BTreeMap::new();
        for e in admin
            .audit_events(&AuditQuery {
                action: Some(action.into()),
                ..Default::default()
            })
            .await
            .expect("events")
        {
            *per.entry(e.subject.unwrap_or_default()).or_default() += 1;
        }
        per
    };
    let expired = eventually(
        Duration::from_secs(30),
        "an expiry event per grant",
        || async {
            let per = count("grant.expired").await;
            (per.len() >= grants.len()).then_some(per)
        },
    )
    .await;
    assert_eq!(expired.len(), grants.len(), "no expiry of an unknown grant");
    let created = count("request.created").await;
    for g in &grants {
        assert_eq!(
            expired.get(&format!("grant:{}", g.id)),
            Some(&1),
            "grant {} expired exactly once",
            g.id
        );
        assert_eq!(
            created.get(&format!("request:{}", g.request_id)),
            Some(&1),
            "grant {}'s request recorded once",
            g.id
        );
    }
}

/// The whole audit chain, read through `admin`, verifies; returns its length.
pub async fn assert_chain_verifies(admin: &Client) -> usize {
    let events = admin
        .audit_events(&AuditQuery::default())
        .await
        .expect("events");
    pedm_core::audit::verify_chain(pedm_core::audit::GENESIS_HASH, 1, &events)
        .expect("the audit chain verifies");
    events.len()
}
