//! Signs checkpoints of the audit log with the server's Ed25519 key: on a schedule (when the log
//! grew since the last checkpoint) and on demand.
//!
//! The signer keeps a [`MerkleAccumulator`] of the log in memory, built from the store at start
//! and then extended with the new events only, so a checkpoint costs O(new events). While it
//! rebuilds, it checks the log against every stored checkpoint: a log that no longer matches
//! what was signed (edited, cut, or rewritten with a recomputed chain) is never signed again,
//! so tampering cannot be laundered by a fresh signature.

use anyhow::{Context, anyhow, bail};
use pedm_audit::{MerkleAccumulator, PublicKey, SignedCheckpoint, SigningKey};
use pedm_core::store::{CheckpointRecord, Store};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Mutex, watch};

/// How many leaf hashes are read from the store at a time.
const HASH_BATCH: i64 = 50_000;

pub struct AuditSigner {
    store: Arc<dyn Store>,
    key: SigningKey,
    state: Mutex<State>,
}

struct State {
    acc: MerkleAccumulator,
    /// Set when the log does not match a stored checkpoint: signing stops.
    broken: Option<String>,
}

/// Loads the signing key from `path`, or creates one there (mode 0600) if the file is missing.
pub fn load_or_create_key(path: &Path) -> anyhow::Result<SigningKey> {
    if path.exists() {
        return SigningKey::load(path)
            .with_context(|| format!("cannot load the audit signing key {}", path.display()));
    }
    if let Some(dir) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("cannot create the directory of {}", path.display()))?;
    }
    let key = SigningKey::generate().context("cannot generate the audit signing key")?;
    key.save(path)
        .with_context(|| format!("cannot write the audit signing key {}", path.display()))?;
    tracing::info!(file = %path.display(), key = %key.public_key(), "created the audit signing key");
    Ok(key)
}

pub fn to_record(cp: &SignedCheckpoint) -> CheckpointRecord {
    CheckpointRecord {
        size: cp.checkpoint.size as i64,
        root: cp.checkpoint.root,
        time: cp.checkpoint.time,
        key_id: cp.checkpoint.key_id.clone(),
        signature: cp.signature.to_vec(),
    }
}

pub fn from_record(r: &CheckpointRecord) -> anyhow::Result<SignedCheckpoint> {
    Ok(SignedCheckpoint {
        checkpoint: pedm_audit::Checkpoint {
            size: u64::try_from(r.size).map_err(|_| anyhow!("checkpoint size {}", r.size))?,
            root: r.root,
            time: r.time,
            key_id: r.key_id.clone(),
        },
        signature: r.signature.as_slice().try_into().map_err(|_| {
            anyhow!(
                "checkpoint of size {}: signature is {} bytes, expected 64",
                r.size,
                r.signature.len()
            )
        })?,
    })
}

impl AuditSigner {
    /// A signer over `store`. Its Merkle state is rebuilt from the store (every event hash:
    /// O(events)) as soon as [`Self::run`] starts, in the background, not here: the server
    /// serves meanwhile. Nothing is signed before the rebuild has checked the log against every
    /// stored checkpoint ([`Self::sign_now`] waits for it, or does it itself).
    pub async fn open(store: Arc<dyn Store>, key: SigningKey) -> anyhow::Result<Self> {
        Ok(AuditSigner {
            store,
            key,
            state: Mutex::new(State {
                acc: MerkleAccumulator::new(),
                broken: None,
            }),
        })
    }

    /// Rebuilds the Merkle state from the store, checking it against the stored checkpoints,
    /// and says how that went.
    async fn rebuild(&self) {
        let mut st = self.state.lock().await;
        if let Err(e) = self.catch_up(&mut st).await {
            // Missing events: keep serving (so the log can be inspected and verified), but
            // never sign again.
            st.broken.get_or_insert_with(|| format!("{e:#}"));
        }
        if let Some(why) = &st.broken {
            tracing::error!(problem = %why, "audit log does not match its signed checkpoints; \
                no further checkpoints will be signed (run `pedm audit verify`)");
        } else {
            tracing::info!(
                events = st.acc.size(),
                "audit log matches its signed checkpoints"
            );
        }
    }

    pub fn public_key(&self) -> &PublicKey {
        self.key.public_key()
    }

    /// Folds the events appended since the last call into the accumulator.
    async fn catch_up(&self, st: &mut State) -> anyhow::Result<()> {
        let head = self.store.audit_head().await?.map_or(0, |(seq, _)| seq);
        let done = st.acc.size() as i64;
        if head <= done {
            return Ok(());
        }
        // Stored checkpoints this pass will reach, to compare roots on the way.
        let mut expect: Vec<CheckpointRecord> = self
            .store
            .checkpoints()
            .await?
            .into_iter()
            .filter(|c| c.size > done && c.size <= head)
            .collect();
        expect.reverse();
        let mut next = done + 1;
        while next <= head {
            let to = (next + HASH_BATCH - 1).min(head);
            let hashes = self.store.audit_hashes(next, to).await?;
            if hashes.len() as i64 != to - next + 1 {
                let why = format!(
                    "events {next}..={to}: {} of {} present (events are missing)",
                    hashes.len(),
                    to - next + 1
                );
                st.broken.get_or_insert(why.clone());
                bail!("audit log: {why}");
            }
            for h in &hashes {
                st.acc.push(h);
                let size = st.acc.size() as i64;
                while expect.last().is_some_and(|c| c.size == size) {
                    let c = expect.pop().expect("checked");
                    if c.root != st.acc.root() {
                        st.broken.get_or_insert(format!(
                            "the first {size} events do not have the root signed in checkpoint \
                             {size}"
                        ));
                    }
                }
            }
            next = to + 1;
        }
        Ok(())
    }

    /// Signs a checkpoint of the whole log now, unless the newest stored checkpoint already has
    /// this size (then that one is returned). `None` for an empty log.
    pub async fn sign_now(&self) -> anyhow::Result<Option<SignedCheckpoint>> {
        let mut st = self.state.lock().await;
        let caught_up = self.catch_up(&mut st).await;
        if let Some(why) = &st.broken {
            bail!("refusing to sign: the audit log does not match its signed checkpoints ({why})");
        }
        caught_up?;
        if st.acc.is_empty() {
            return Ok(None);
        }
        if let Some(latest) = self.store.latest_checkpoint().await?
            && latest.size as u64 == st.acc.size()
            && latest.key_id == self.key.key_id()
        {
            return Ok(Some(from_record(&latest)?));
        }
        let cp = self
            .key
            .sign_checkpoint(st.acc.size(), st.acc.root(), jiff::Timestamp::now());
        self.store.save_checkpoint(&to_record(&cp)).await?;
        metrics::counter!("pedm_audit_checkpoints_signed_total").increment(1);
        tracing::debug!(size = cp.checkpoint.size, "signed an audit checkpoint");
        Ok(Some(cp))
    }

    /// Rebuilds the Merkle state (see [`Self::open`]), then every `interval` signs a
    /// checkpoint if the log grew.
    pub async fn run(self: Arc<Self>, interval: Duration, mut shutdown: watch::Receiver<bool>) {
        tokio::select! {
            _ = self.rebuild() => {}
            _ = shutdown.changed() => return,
        }
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = shutdown.changed() => return,
            }
            if let Err(e) = self.sign_now().await {
                tracing::error!(error = %format!("{e:#}"), "cannot sign an audit checkpoint");
            }
        }
    }
}
