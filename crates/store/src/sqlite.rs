//! SQLite: the embedded default.

pub(crate) mod group_commit;
pub(crate) mod raw;

use crate::engine::{Engine, Pools};
use pedm_core::model::*;
use pedm_core::store::StoreError;
use sqlx::migrate::Migrator;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use std::path::{Path, PathBuf};
use std::time::Duration;

static MIGRATOR: Migrator = sqlx::migrate!("migrations/sqlite");

/// How long a connection waits for another process holding the write lock.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);
const READERS: u32 = 4;
/// WAL pages after which the writer checkpoints by itself (SQLite's default is 1,000): only if
/// the background checkpoints fall behind.
const WRITER_AUTOCHECKPOINT: &str = "10000";

/// A [`pedm_core::store::Store`] in one SQLite file.
///
/// WAL journal with `synchronous=FULL` (a commit is on disk when `commit` returns), foreign keys
/// on. Writers are serialised through a single write connection, readers use a small pool of
/// read-only (`query_only`) connections. Changesets are group-committed: a committer thread
/// applies whatever is queued in one transaction, a changeset refused alone (see
/// `src/sqlite/group_commit.rs`). Targets and roles read are kept in memory
/// (`src/catalog.rs`).
pub struct SqliteStore {
    engine: Engine,
    path: PathBuf,
}

impl SqliteStore {
    /// Opens (creating if missing, with its parent directory) the database file and applies
    /// pending migrations.
    pub async fn open(path: &Path) -> Result<Self, StoreError> {
        let fail = |what: &str, e: &dyn std::fmt::Display| {
            StoreError::Backend(format!("{what} {}: {e}", path.display()))
        };
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|e| fail("creating the directory of", &e))?;
        }
        let base = SqliteConnectOptions::new()
            .filename(path)
            .foreign_keys(true)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(BUSY_TIMEOUT)
            // Savepoint and statement journals in memory: group commit gives each changeset a
            // savepoint, whose journal would otherwise be a temporary file written to.
            .pragma("temp_store", "MEMORY")
            // Deleted and overwritten row content is zeroed where that costs no extra I/O:
            // erased personal data must not linger in free space (see `crate::privacy`).
            .pragma("secure_delete", "FAST");

        let write = SqlitePoolOptions::new()
            .max_connections(1)
            // The group committer keeps statements prepared on this connection: the pool must
            // not close it behind its back (see `group_commit`).
            .idle_timeout(None)
            .max_lifetime(None)
            .connect_with(
                base.clone()
                    .create_if_missing(true)
                    .journal_mode(SqliteJournalMode::Wal)
                    // Checkpoints run beside the writer (see `group_commit`); the writer does
                    // one itself only if the WAL grew this far (pages) regardless.
                    .pragma("wal_autocheckpoint", WRITER_AUTOCHECKPOINT),
            )
            .await
            .map_err(|e| fail("opening", &e))?;
        MIGRATOR
            .run(&write)
            .await
            .map_err(|e| fail("migrating", &e))?;
        // Readers don't set the journal mode (WAL is a property of the file, set above) and
        // can't write by accident.
        let read = SqlitePoolOptions::new()
            .max_connections(READERS)
            .connect_with(base.clone().pragma("query_only", "ON"))
            .await
            .map_err(|e| fail("opening", &e))?;
        tracing::debug!(path = %path.display(), "opened SQLite store");
        Ok(SqliteStore {
            engine: Engine {
                privacy: Default::default(),
                pools: Pools::Sqlite {
                    read,
                    committer: group_commit::start(write.clone(), base.clone())?,
                    catalog: crate::catalog::Catalog::new(None),
                    write,
                },
            },
            path: path.to_path_buf(),
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Counters of the group committer: transactions, changesets in them, changesets queued.
    pub fn group_commit_stats(&self) -> crate::commit_queue::GroupCommitStats {
        match &self.engine.pools {
            Pools::Sqlite { committer, .. } => committer.stats(),
            Pools::Pg { .. } => unreachable!("a SqliteStore holds SQLite pools"),
        }
    }

    /// Closes every connection (checkpointing the WAL). Later calls fail.
    pub async fn close(&self) {
        if let Pools::Sqlite {
            read,
            write,
            committer,
            ..
        } = &self.engine.pools
        {
            committer.close().await;
            read.close().await;
            write.close().await;
        }
    }
}

crate::forward_store!(SqliteStore);
