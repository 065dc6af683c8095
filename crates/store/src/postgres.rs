//! PostgreSQL: shared state for several `pedmd` instances.

use crate::engine::{Engine, Pools};
use crate::redact_url;
use pedm_core::model::*;
use pedm_core::store::StoreError;
use sqlx::migrate::Migrator;
use sqlx::postgres::PgPoolOptions;
use std::sync::Arc;
use std::time::Duration;

mod group_commit;
mod hosts;

static MIGRATOR: Migrator = sqlx::migrate!("migrations/postgres");

const DEFAULT_MAX_CONNECTIONS: u32 = 10;
/// How long PostgreSQL lets a session of pedmd sit idle inside a transaction.
const IDLE_IN_TRANSACTION_LIMIT: &str = "5s";
/// How long a target or role read is kept: what another instance changes is seen within it.
const CATALOG_TTL: Duration = Duration::from_secs(1);

/// A [`pedm_core::store::Store`] in a PostgreSQL database.
///
/// Several instances (in one process or many) may share the database: changesets are
/// committed in batches (group commit, see `crate::group_commit`), each batch one transaction
/// that locks the chain head row, so the chain stays gap-free and unforked.
pub struct PostgresStore {
    engine: Engine,
    /// Keeps the pool on the primary when the URL lists several hosts; stops when dropped.
    _follower: Option<hosts::Follower>,
}

impl PostgresStore {
    /// Connects with a pool of up to 10 connections and applies pending migrations (which
    /// sqlx serialises between instances with an advisory lock).
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        Self::connect_with(url, DEFAULT_MAX_CONNECTIONS).await
    }

    /// [`PostgresStore::connect`] with a pool of `max_connections`. `url` may list several
    /// hosts (`postgres://u@h1:5432,h2:5432/pedm`): the pool then follows whichever is the
    /// writable primary (see `hosts`).
    pub async fn connect_with(url: &str, max_connections: u32) -> Result<Self, StoreError> {
        // Error texts must not leak the password, whichever part of sqlx produced them.
        let fail = |what: &str, e: &dyn std::fmt::Display| {
            StoreError::Backend(scrub(&format!("{what} {}: {e}", redact_url(url)), url))
        };
        let mut hosts = hosts::parse(url).map_err(|e| fail("invalid URL", &e))?;
        for o in &mut hosts.options {
            // pedmd never pauses inside a transaction: one left idle is an instance cut off or
            // frozen mid-batch, whose locks (the chain head's) would stop every other instance
            // until TCP gave up on it. PostgreSQL ends such a session after this long.
            *o = o.clone().options([(
                "idle_in_transaction_session_timeout",
                IDLE_IN_TRANSACTION_LIMIT,
            )]);
        }
        let follows = hosts.options.len() > 1 || hosts.require_primary;
        let current = if follows {
            hosts
                .locate()
                .await
                .map_err(|e| fail("connecting to", &e))?
        } else {
            0
        };
        let wake = Arc::new(tokio::sync::Notify::new());
        let moves = Arc::new(hosts::Moves::new());
        let mut pool_options = PgPoolOptions::new()
            .max_connections(max_connections)
            .acquire_timeout(Duration::from_secs(10));
        if hosts.require_primary {
            let wake = wake.clone();
            pool_options = pool_options.after_connect(move |conn, _| {
                let wake = wake.clone();
                Box::pin(async move {
                    if hosts::is_writable(conn).await? {
                        Ok(())
                    } else {
                        // The primary moved: the follower looks for it now.
                        wake.notify_one();
                        Err(sqlx::Error::Protocol(
                            "the server is a standby (read-only)".into(),
                        ))
                    }
                })
            });
        }
        if follows {
            let moves = moves.clone();
            // Connections to the host before the last move are not handed out again.
            pool_options = pool_options.before_acquire(move |_, meta| {
                let fresh = !moves.predates(meta.age);
                Box::pin(async move { Ok(fresh) })
            });
        }
        let pool = pool_options
            .connect_with(hosts.options[current].clone())
            .await
            .map_err(|e| fail("connecting to", &e))?;
        MIGRATOR
            .run(&pool)
            .await
            .map_err(|e| fail("migrating", &e))?;
        tracing::debug!(url = %redact_url(url), "connected to PostgreSQL store");
        let follower =
            follows.then(|| hosts::Follower::start(hosts, pool.clone(), current, wake, moves));
        Ok(PostgresStore {
            engine: Engine {
                privacy: Default::default(),
                pools: Pools::Pg {
                    committer: group_commit::start(pool.clone()),
                    catalog: crate::catalog::Catalog::new(Some(CATALOG_TTL)),
                    pool,
                },
            },
            _follower: follower,
        })
    }

    /// Counters of the group committer: transactions, changesets in them, changesets queued.
    pub fn group_commit_stats(&self) -> crate::commit_queue::GroupCommitStats {
        match &self.engine.pools {
            Pools::Pg { committer, .. } => committer.stats(),
            Pools::Sqlite { .. } => unreachable!("a PostgresStore holds PostgreSQL pools"),
        }
    }

    /// Closes every connection. Later calls fail.
    pub async fn close(&self) {
        if let Pools::Pg {
            pool, committer, ..
        } = &self.engine.pools
        {
            committer.close().await;
            pool.close().await;
        }
    }
}

/// Removes the URL's password from `msg` should an error message quote it.
fn scrub(msg: &str, url: &str) -> String {
    let password = url
        .split_once("://")
        .and_then(|(_, rest)| rest.split(['/', '?']).next())
        .and_then(|authority| authority.rsplit_once('@'))
        .and_then(|(userinfo, _)| userinfo.split_once(':'))
        .map(|(_, pw)| pw)
        .filter(|pw| !pw.is_empty());
    match password {
        Some(pw) => msg.replace(pw, "***"),
        None => msg.to_string(),
    }
}

crate::forward_store!(PostgresStore);

#[cfg(test)]
mod tests {
    #[test]
    fn scrubs_password() {
        let url = "postgres://u:hunter2@h/db";
        assert_eq!(super::scrub("bad hunter2 x", url), "bad *** x");
        assert_eq!(super::scrub("bad", "postgres://u@h/db"), "bad");
    }
}
