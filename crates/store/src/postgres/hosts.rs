//! Several hosts in one `database_url`, as libpq takes them
//! (`postgres://u@h1:5432,h2:5432/pedm?target_session_attrs=read-write`), and following the
//! primary among them after a failover (Patroni, repmgr, a cloud's HA pair) without a restart.
//!
//! sqlx connects to one host, so the URL is split into one single-host option set per host.
//! The pool's connections go to the host found writable; each new connection checks that it
//! still is (a standby is refused), and a follower task looks again whenever that check or the
//! periodic probe fails, then points the pool at the new primary. Until one is found, acquiring
//! fails and callers answer 503: never a write to a standby, never a wrong answer.

use pedm_core::store::StoreError;
use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, Connection, PgPool};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::Notify;

/// How often the follower checks that the pool's host is still the primary.
const PROBE_EVERY: Duration = Duration::from_millis(500);
/// How long one host may take to connect and answer before the next is tried.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// The hosts of a `database_url`, in the order given.
#[derive(Debug, Clone)]
pub(crate) struct Hosts {
    /// One option set per host, as sqlx parsed the single-host URL made for it.
    pub options: Vec<PgConnectOptions>,
    /// `host:port` of each, for messages (never the password).
    pub names: Vec<String>,
    /// Only a writable session will do (several hosts, or `target_session_attrs` says so).
    pub require_primary: bool,
}

/// Splits `url` into its hosts. Errors name what is wrong, never the password.
pub(crate) fn parse(url: &str) -> Result<Hosts, String> {
    let (scheme, rest) = url
        .split_once("://")
        .ok_or("a PostgreSQL URL starts with postgres:// or postgresql://")?;
    if scheme != "postgres" && scheme != "postgresql" {
        return Err(format!(
            "scheme {scheme:?}: a PostgreSQL URL starts with postgres:// or postgresql://"
        ));
    }
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    let (userinfo, hostlist) = match authority.rsplit_once('@') {
        Some((u, h)) => (Some(u), h),
        None => (None, authority),
    };
    let (path, query) = match tail.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (tail, None),
    };
    let mut require_primary = false;
    let mut kept = Vec::new();
    for pair in query.into_iter().flat_map(|q| q.split('&')) {
        match pair.split_once('=') {
            Some(("target_session_attrs", value)) => match value {
                "read-write" | "primary" => require_primary = true,
                "any" => {}
                other => {
                    return Err(format!(
                        "target_session_attrs={other:?}: pedmd writes, so it takes \
                         read-write, primary or any"
                    ));
                }
            },
            _ => kept.push(pair),
        }
    }
    let hosts: Vec<&str> = hostlist.split(',').collect();
    if hosts.len() > 1 {
        // A session that may land on a standby is of no use to a server that writes.
        require_primary = true;
    }
    let mut options = Vec::with_capacity(hosts.len());
    let mut names = Vec::with_capacity(hosts.len());
    for host in hosts {
        if host.is_empty() {
            return Err("an empty host in the URL's host list".into());
        }
        let mut single = format!("{scheme}://");
        if let Some(u) = userinfo {
            single.push_str(u);
            single.push('@');
        }
        single.push_str(host);
        single.push_str(path);
        if !kept.is_empty() {
            single.push('?');
            single.push_str(&kept.join("&"));
        }
        let opts: PgConnectOptions = single.parse().map_err(|e| format!("host {host}: {e}"))?;
        options.push(opts);
        names.push(host.to_string());
    }
    Ok(Hosts {
        options,
        names,
        require_primary,
    })
}

/// Whether the server behind `conn` takes writes (not a standby in recovery, not a
/// read-only default).
pub(crate) async fn is_writable(conn: &mut sqlx::PgConnection) -> Result<bool, sqlx::Error> {
    let (recovery, read_only): (bool, String) =
        sqlx::query_as("SELECT pg_is_in_recovery(), current_setting('transaction_read_only')")
            .fetch_one(conn)
            .await?;
    Ok(!recovery && read_only == "off")
}

impl Hosts {
    /// The index of the first host (in order) that accepts a connection and, where
    /// required, takes writes; `Err` lists why each was passed over.
    pub(crate) async fn locate(&self) -> Result<usize, StoreError> {
        let mut why = Vec::new();
        for (i, opts) in self.options.iter().enumerate() {
            match tokio::time::timeout(PROBE_TIMEOUT, self.check(opts)).await {
                Ok(Ok(())) => return Ok(i),
                Ok(Err(e)) => why.push(format!("{}: {e}", self.names[i])),
                Err(_) => why.push(format!(
                    "{}: no answer within {PROBE_TIMEOUT:?}",
                    self.names[i]
                )),
            }
        }
        Err(StoreError::Backend(format!(
            "no usable PostgreSQL primary among the URL's hosts ({})",
            why.join("; ")
        )))
    }

    async fn check(&self, opts: &PgConnectOptions) -> Result<(), String> {
        let mut conn = opts.connect().await.map_err(|e| e.to_string())?;
        let ok =
            !self.require_primary || is_writable(&mut conn).await.map_err(|e| e.to_string())?;
        let _ = conn.close().await;
        if ok {
            Ok(())
        } else {
            Err("a standby (read-only)".into())
        }
    }
}

/// When the pool last moved to another host: connections older than that go to the old one
/// (which may still answer, as a standby) and are dropped rather than handed out.
pub(crate) struct Moves {
    base: Instant,
    /// Microseconds after `base` of the last move; 0 = never moved.
    last: AtomicU64,
}

impl Moves {
    pub(crate) fn new() -> Moves {
        Moves {
            base: Instant::now(),
            last: AtomicU64::new(0),
        }
    }

    fn record(&self) {
        let micros = u64::try_from(self.base.elapsed().as_micros()).unwrap_or(u64::MAX);
        self.last.store(micros.max(1), Ordering::Release);
    }

    /// Whether a connection of this age was made before the last move.
    pub(crate) fn predates(&self, age: Duration) -> bool {
        match self.last.load(Ordering::Acquire) {
            0 => false,
            last => {
                let since_move = self
                    .base
                    .elapsed()
                    .saturating_sub(Duration::from_micros(last));
                age > since_move
            }
        }
    }
}

/// Keeps a pool on the writable host: a task that checks the pool's host (on a connection of
/// its own) every [`PROBE_EVERY`] or when woken, and on failure points the pool at the first
/// writable one. Stopped when dropped.
pub(crate) struct Follower {
    task: tokio::task::AbortHandle,
}

impl Drop for Follower {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Follower {
    /// `current` is the host the pool was made for; `wake` is notified by the pool's
    /// connection check when it meets a standby.
    pub(crate) fn start(
        hosts: Hosts,
        pool: PgPool,
        current: usize,
        wake: Arc<Notify>,
        moves: Arc<Moves>,
    ) -> Follower {
        let task = tokio::spawn(follow(hosts, pool, current, wake, moves));
        Follower {
            task: task.abort_handle(),
        }
    }
}

async fn follow(
    hosts: Hosts,
    pool: PgPool,
    mut current: usize,
    wake: Arc<Notify>,
    moves: Arc<Moves>,
) {
    let mut probe: Option<sqlx::PgConnection> = None;
    loop {
        tokio::select! {
            _ = wake.notified() => {}
            _ = tokio::time::sleep(PROBE_EVERY) => {}
        }
        if pool.is_closed() {
            return;
        }
        // Its own connection, not one of the pool's: a pool busy with load must not look
        // like a lost primary, nor the probe wait behind the load.
        let healthy = tokio::time::timeout(PROBE_TIMEOUT, async {
            if probe.is_none() {
                probe = Some(hosts.options[current].connect().await?);
            }
            match probe.as_mut() {
                Some(conn) => is_writable(conn).await,
                None => Ok(false),
            }
        })
        .await;
        if matches!(healthy, Ok(Ok(true))) {
            continue;
        }
        // Whatever went wrong, the next probe starts from a new connection.
        probe = None;
        match hosts.locate().await {
            Ok(found) if found != current => {
                tracing::warn!(
                    from = %hosts.names[current],
                    to = %hosts.names[found],
                    "PostgreSQL primary moved; following it"
                );
                pool.set_connect_options(hosts.options[found].clone());
                moves.record();
                current = found;
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "waiting for a PostgreSQL primary"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::parse;

    #[test]
    fn splits_hosts_and_keeps_the_rest() {
        let h = parse(
            "postgres://u:p%40ss@127.0.0.1:5432,db2:6543/pedm?sslmode=disable&target_session_attrs=read-write",
        )
        .unwrap();
        assert_eq!(h.names, ["127.0.0.1:5432", "db2:6543"]);
        assert!(h.require_primary);
        assert_eq!(h.options[1].get_host(), "db2");
        assert_eq!(h.options[1].get_port(), 6543);
        assert_eq!(h.options[0].get_database(), Some("pedm"));
        assert_eq!(h.options[0].get_username(), "u");
    }

    #[test]
    fn one_host_needs_no_primary_unless_asked() {
        assert!(!parse("postgres://h/pedm").unwrap().require_primary);
        assert!(
            parse("postgres://h/pedm?target_session_attrs=primary")
                .unwrap()
                .require_primary
        );
        // Several hosts: a standby would be useless, whatever the URL says.
        assert!(
            parse("postgres://a,b/pedm?target_session_attrs=any")
                .unwrap()
                .require_primary
        );
    }

    #[test]
    fn refuses_what_cannot_work_and_says_why() {
        let e = parse("postgres://a,b/pedm?target_session_attrs=read-only").unwrap_err();
        assert!(e.contains("read-only") && e.contains("read-write"), "{e}");
        let e = parse("postgres://a,,b/pedm").unwrap_err();
        assert!(e.contains("empty host"), "{e}");
        let e = parse("mysql://a/pedm").unwrap_err();
        assert!(e.contains("mysql"), "{e}");
        let e = parse("postgres://u:secret@a,b:notaport/pedm").unwrap_err();
        assert!(e.contains("b:notaport") && !e.contains("secret"), "{e}");
    }
}
