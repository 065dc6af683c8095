//! Signs checkpoints of the audit log with the server's Ed25519 key: on a schedule (when the log
//! grew since the last checkpoint) and on demand.
//!
//! The signer keeps a [`MerkleAccumulator`] of the log in memory, built from the store at start
//! (in the background) and then extended with the new events only, so a checkpoint costs
//! O(new events). Every event it folds in is checked: seq without gaps, `prev_hash` linking to
//! the event before, content matching its hash; and when the log reaches the size of a stored
//! checkpoint or of the trusted head, the root must be the signed one. A log that fails any of
//! this (edited, cut, reordered, rewritten with a recomputed chain, rolled back) is *broken*:
//! nothing is signed, exported, listed or proved any more until the log is repaired
//! ([`AuditSigner::check`] says why), so tampering is never laundered by a fresh signature nor
//! answered with an empty success.
//!
//! # The trusted head (rollback)
//!
//! The newest signed checkpoint is also kept outside the database, in `<signing key>.head`
//! (JSON of the signed checkpoint), written atomically (temporary file, fsync, rename, fsync of
//! the directory) after the checkpoint is stored and before it is returned to anybody. At start
//! ([`check_rollback`]) and at every signing, a log with fewer events than that head, or whose
//! first `size` events do not have its root, is refused: pedmd does not start (naming both
//! sizes) until the right database is restored or an admin accepts the older log with
//! `pedmd audit accept-rollback`, which records `audit.rollback_accepted` and replaces the head.

use anyhow::{Context, anyhow, bail};
use pedm_audit::{
    BlockError, CheckpointNote, Hash, MerkleIndex, Proof, ProofError, PublicKey, SignedCheckpoint,
    SigningKey,
};
use pedm_core::audit::{ChainError, GENESIS_HASH};
use pedm_core::store::{AuditFilter, CheckpointRecord, Store};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Mutex, watch};

/// How many events are read from the store at a time while catching up.
const EVENT_PAGE: u32 = 5_000;

pub struct AuditSigner {
    store: Arc<dyn Store>,
    key: SigningKey,
    origin: String,
    head_file: Option<PathBuf>,
    witnesses: Vec<crate::witness::WitnessTarget>,
    /// High-severity webhooks when the log is found broken or a witness refuses.
    alert: Option<pedm_notify::Notifier>,
    state: Mutex<State>,
}

struct State {
    /// The Merkle tree of the checked events (its large subtrees kept for proofs).
    tree: MerkleIndex,
    /// Hash of the last event folded into `tree`.
    prev_hash: [u8; 32],
    /// Set when the log does not match what was signed: signing and reading stop.
    broken: Option<String>,
    /// The trusted head read from the head file (or written since).
    trusted: Option<SignedCheckpoint>,
    /// The newest checkpoint as a signed note, with the cosignatures collected for it.
    note: Option<CheckpointNote>,
    /// Per witness URL: the size it last cosigned (as it told us).
    witness_sizes: std::collections::HashMap<String, u64>,
    /// Per witness URL: the size it last refused or failed on, and when (retried after
    /// [`WITNESS_RETRY`], or at once for a new size).
    witness_failed: std::collections::HashMap<String, (u64, std::time::Instant)>,
}

/// How long a witness that failed on a checkpoint is left alone before that checkpoint is
/// submitted to it again.
const WITNESS_RETRY: Duration = Duration::from_secs(30);

/// The log does not match what was signed (as opposed to a storage error while checking).
#[derive(Debug, thiserror::Error)]
#[error("the audit log does not match its signed checkpoints: {0}")]
pub struct Broken(pub String);

/// Where the trusted head of the log signed with the key at `key_path` is kept.
pub fn head_path(key_path: &Path) -> PathBuf {
    let mut p = key_path.as_os_str().to_owned();
    p.push(".head");
    PathBuf::from(p)
}

/// Where the newest checkpoint note and its cosignatures are kept (beside the trusted head).
pub fn note_path(head: &Path) -> PathBuf {
    head.with_extension("note")
}

/// The default origin line of the log signed by `key`.
pub fn default_origin(key: &PublicKey) -> String {
    format!("pedm.audit/{}", key.key_id())
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

/// Reads the trusted head; `None` if there is no file yet.
pub fn read_head(path: &Path) -> anyhow::Result<Option<SignedCheckpoint>> {
    match std::fs::read_to_string(path) {
        Ok(s) => serde_json::from_str(&s)
            .map(Some)
            .with_context(|| format!("{}: not a signed checkpoint", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(anyhow!("cannot read {}: {e}", path.display())),
    }
}

/// Replaces the trusted head atomically and durably.
pub fn write_head(path: &Path, cp: &SignedCheckpoint) -> anyhow::Result<()> {
    let mut text = serde_json::to_string(cp)?;
    text.push('\n');
    write_atomically(path, text.as_bytes())
        .with_context(|| format!("cannot write the trusted audit head {}", path.display()))
}

/// Temporary file, fsync, rename over `path`, fsync of the directory.
fn write_atomically(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    use std::io::Write;
    // Unique per process: instances sharing one key file (and so one head) never write the
    // same temporary file.
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(format!(".tmp.{}", std::process::id()));
    let tmp = PathBuf::from(tmp);
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    drop(f);
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

/// Refuses a database behind the trusted head or forked from it, naming both sizes. Cheap: the
/// head's own checkpoint must be stored with the same root (the background rebuild then checks
/// every event against it).
pub async fn check_rollback(store: &dyn Store, head_file: &Path) -> anyhow::Result<()> {
    let Some(head) = read_head(head_file)? else {
        return Ok(());
    };
    let size = head.checkpoint.size;
    let events = present_events(store).await?;
    let fix = format!(
        "restore the database that belongs to this data directory, or take this one on \
         deliberately with `pedmd audit accept-rollback` (recorded in the audit log); the trusted \
         head is {}",
        head_file.display()
    );
    if events < size {
        bail!(
            "audit log rolled back: the database holds {events} events but a checkpoint of \
             {size} events was signed ({}); {fix}",
            head.checkpoint.time
        );
    }
    let stored = store
        .checkpoints_between(size as i64 - 1, size as i64)
        .await?;
    match stored.first() {
        Some(c) if c.root == head.checkpoint.root => Ok(()),
        _ => bail!(
            "audit log forked: the database ({events} events) does not hold the checkpoint of \
             {size} events signed at {} with root {}; {fix}",
            head.checkpoint.time,
            hex::encode(head.checkpoint.root)
        ),
    }
}

/// How many events the database really holds as a prefix: the head row says how many there
/// should be, and the last of those must exist (a cut tail leaves the head row behind), found
/// by bisection in O(log n) reads.
pub async fn present_events(store: &dyn Store) -> anyhow::Result<u64> {
    let claimed = store.audit_head().await?.map_or(0, |(s, _)| s);
    let exists = |k: i64| async move { anyhow::Ok(!store.audit_hashes(k, k).await?.is_empty()) };
    if claimed == 0 || exists(claimed).await? {
        return Ok(claimed as u64);
    }
    let (mut lo, mut hi) = (0i64, claimed - 1);
    while lo < hi {
        let mid = lo + (hi - lo + 1) / 2;
        if exists(mid).await? {
            lo = mid;
        } else {
            hi = mid - 1;
        }
    }
    Ok(lo as u64)
}

/// Words of the verifier's for a broken chain.
fn chain_problem(e: &ChainError) -> String {
    match e {
        ChainError::Sequence {
            expected, found, ..
        } if found > expected => {
            format!("event {expected}: missing (the next event in the database is {found})")
        }
        ChainError::Sequence { found, .. } => {
            format!("event {found}: inserted (a second event {found})")
        }
        ChainError::Link { seq, prev } => format!(
            "event {seq}: broken link: its prev_hash is not the hash of event {prev} (an event \
             was removed, reordered, inserted or replaced)"
        ),
        ChainError::Content { seq } => {
            format!("event {seq}: altered: its content does not match its hash")
        }
    }
}

impl AuditSigner {
    /// A signer over `store`. Its Merkle state is rebuilt from the store (every event: O(events))
    /// as soon as [`Self::run`] starts, in the background, not here: the server serves meanwhile.
    /// Nothing is signed, exported or proved before the rebuild has checked the log
    /// ([`Self::check`] waits for it, or does it itself).
    pub fn open(
        store: Arc<dyn Store>,
        key: SigningKey,
        origin: Option<String>,
        head_file: Option<PathBuf>,
        witnesses: Vec<crate::witness::WitnessTarget>,
    ) -> anyhow::Result<Self> {
        let trusted = match &head_file {
            Some(p) => read_head(p)?,
            None => None,
        };
        let origin = origin
            .filter(|o| !o.trim().is_empty())
            .unwrap_or_else(|| default_origin(key.public_key()));
        let note_file = head_file.as_deref().map(note_path);
        Ok(AuditSigner {
            store,
            key,
            origin,
            head_file,
            witnesses,
            alert: None,
            state: Mutex::new(State {
                tree: MerkleIndex::new(),
                prev_hash: GENESIS_HASH,
                broken: None,
                trusted,
                note: note_file
                    .as_deref()
                    .and_then(|p| std::fs::read_to_string(p).ok())
                    .and_then(|t| CheckpointNote::parse(&t).ok()),
                witness_sizes: Default::default(),
                witness_failed: Default::default(),
            }),
        })
    }

    /// Sends high-severity `audit.integrity` webhooks through `n`.
    pub fn with_alerts(mut self, n: Option<pedm_notify::Notifier>) -> Self {
        self.alert = n;
        self
    }

    fn raise(&self, summary: String) {
        tracing::error!(problem = %summary, "AUDIT INTEGRITY");
        if let Some(n) = &self.alert {
            n.notify(pedm_notify::Notification::new(
                "audit.integrity",
                pedm_notify::Severity::High,
                format!("AUDIT LOG: {summary}"),
                serde_json::json!({ "problem": summary }),
            ));
        }
    }

    /// The manifest of an evidence bundle, signed with the audit key: its bytes and the
    /// signature's text.
    pub fn sign_manifest(&self, m: &pedm_audit::bundle::Manifest) -> (Vec<u8>, String) {
        pedm_audit::bundle::sign(&self.key, m)
    }

    pub fn public_key(&self) -> &PublicKey {
        self.key.public_key()
    }

    /// The origin line of this log's checkpoint notes.
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// Rebuilds the Merkle state from the store, checking it, and says how that went.
    async fn rebuild(&self) {
        let mut st = self.state.lock().await;
        if let Some(t) = &st.trusted
            && t.checkpoint.key_id != self.key.key_id()
        {
            self.raise(format!(
                "the signing key changed: the trusted head ({} events) was signed by key {}, \
                 this server signs with key {}; auditors holding the old public key will see \
                 checkpoints by a wrong key",
                t.checkpoint.size,
                t.checkpoint.key_id,
                self.key.key_id()
            ));
        }
        let r = self.catch_up(&mut st).await;
        if let Err(e) = r {
            st.broken.get_or_insert_with(|| format!("{e:#}"));
        }
        if let Some(why) = &st.broken {
            metrics::gauge!("pedm_audit_log_broken").set(1.0);
            self.raise(format!(
                "the log does not match its signed checkpoints ({why}); nothing will be \
                 signed, exported or proved (run `pedm audit verify`)"
            ));
        } else {
            tracing::info!(
                events = st.tree.size(),
                "audit log matches its signed checkpoints"
            );
        }
    }

    /// Fails, naming the problem, when the log is broken; otherwise catches up with new events.
    pub async fn check(&self) -> anyhow::Result<u64> {
        let mut st = self.state.lock().await;
        self.checked(&mut st).await?;
        Ok(st.tree.size())
    }

    async fn checked(&self, st: &mut State) -> anyhow::Result<()> {
        let caught_up = self.catch_up(st).await;
        if let Some(why) = &st.broken {
            metrics::gauge!("pedm_audit_log_broken").set(1.0);
            return Err(Broken(why.clone()).into());
        }
        caught_up
    }

    /// Folds the events appended since the last call into the accumulator, checking each.
    async fn catch_up(&self, st: &mut State) -> anyhow::Result<()> {
        let head = self.store.audit_head().await?.map_or(0, |(seq, _)| seq);
        let done = st.tree.size() as i64;
        let mut limits: Vec<(i64, &str)> = self
            .store
            .latest_checkpoint()
            .await?
            .map(|c| (c.size, "a stored checkpoint"))
            .into_iter()
            .collect();
        if let Some(t) = &st.trusted {
            limits.push((t.checkpoint.size as i64, "the trusted head"));
        }
        for (size, what) in limits {
            if head < size {
                let why = format!(
                    "truncated: {what} signs {size} events but the log holds {head} (events \
                     {}..={size} are missing, or the database was rolled back)",
                    head + 1
                );
                st.broken.get_or_insert(why.clone());
                bail!("audit log: {why}");
            }
        }
        if head < done {
            let why = format!("the log shrank from {done} to {head} events");
            st.broken.get_or_insert(why.clone());
            bail!("audit log: {why}");
        }
        if head == done {
            return Ok(());
        }
        // Roots this pass will reach, to compare on the way.
        // Only when there is something new to fold in: every stored checkpoint it reaches.
        let stored = self.store.checkpoints_between(done, head).await?;
        let mut expect: Vec<(i64, [u8; 32], String)> = stored
            .iter()
            .map(|c| (c.size, c.root, format!("checkpoint {}", c.size)))
            .collect();
        if let Some(t) = &st.trusted {
            let size = t.checkpoint.size as i64;
            if size > done && size <= head {
                expect.push((size, t.checkpoint.root, format!("trusted head {size}")));
            }
        }
        expect.sort_by_key(|e| std::cmp::Reverse(e.0));
        let mut after = done;
        // Pruned events have no content left: their kept hashes are folded in, vouched for by
        // the checkpoint at their size (compared below like any other).
        let pruned = pruned_through(self.store.as_ref()).await?.min(head);
        while after < pruned {
            let to = (after + i64::from(EVENT_PAGE)).min(pruned);
            let hashes = self.store.audit_hashes(after + 1, to).await?;
            if hashes.len() as i64 != to - after {
                let why = format!("events {}..={to}: pruned hashes missing", after + 1);
                st.broken.get_or_insert(why.clone());
                bail!("audit log: {why}");
            }
            for h in hashes {
                st.tree.push(&h);
                st.prev_hash = h;
                let size = st.tree.size() as i64;
                while expect.last().is_some_and(|c| c.0 == size) {
                    let (_, root, what) = expect.pop().expect("checked");
                    if root != st.tree.root() {
                        let why = format!(
                            "events 1..={size}: forged: the pruned events do not have the root \
                             signed in {what}"
                        );
                        st.broken.get_or_insert(why.clone());
                        bail!("audit log: {why}");
                    }
                }
            }
            after = to;
        }
        while after < head {
            let page = self
                .store
                .audit_events(&AuditFilter {
                    after_seq: Some(after),
                    limit: Some(EVENT_PAGE.min((head - after) as u32)),
                    sealed: true,
                    ..Default::default()
                })
                .await?;
            if page.is_empty() {
                let why = format!("event {}: missing (the log should reach {head})", after + 1);
                st.broken.get_or_insert(why.clone());
                bail!("audit log: {why}");
            }
            if let Err(e) = pedm_core::audit::verify_chain(st.prev_hash, after + 1, &page) {
                let why = chain_problem(&e);
                st.broken.get_or_insert(why.clone());
                bail!("audit log: {why}");
            }
            for e in &page {
                st.tree.push(&e.hash);
                st.prev_hash = e.hash;
                let size = st.tree.size() as i64;
                while expect.last().is_some_and(|c| c.0 == size) {
                    let (_, root, what) = expect.pop().expect("checked");
                    if root != st.tree.root() {
                        let why = format!(
                            "events 1..={size}: forged: the first {size} events do not have the \
                             root signed in {what} (events were inserted, removed or rewritten \
                             with a recomputed hash chain)"
                        );
                        st.broken.get_or_insert(why.clone());
                        bail!("audit log: {why}");
                    }
                }
            }
            after = page.last().map_or(after, |e| e.seq);
        }
        Ok(())
    }

    /// Signs a checkpoint of the whole log now, unless the newest stored checkpoint already has
    /// this size (then that one is returned). `None` for an empty log. A new checkpoint is
    /// stored, written to the trusted head file and submitted to the witnesses before it is
    /// returned.
    pub async fn sign_now(&self) -> anyhow::Result<Option<SignedCheckpoint>> {
        let mut st = self.state.lock().await;
        self.checked(&mut st).await.context("refusing to sign")?;
        if st.tree.is_empty() {
            return Ok(None);
        }
        let size = st.tree.size();
        let root = st.tree.root();
        if let Some(latest) = self.store.latest_checkpoint().await?
            && latest.size as u64 == size
            && latest.key_id == self.key.key_id()
        {
            let cp = from_record(&latest)?;
            if st
                .note
                .as_ref()
                .is_none_or(|n| n.size != size || n.root != root || n.origin != self.origin)
            {
                st.note = Some(self.key.sign_note(&self.origin, size, &root));
            }
            self.remember_head(&mut st, &cp)?;
            drop(st);
            self.submit_to_witnesses().await;
            return Ok(Some(cp));
        }
        let cp = self.key.sign_checkpoint(size, root, jiff::Timestamp::now());
        self.store.save_checkpoint(&to_record(&cp)).await?;
        self.remember_head(&mut st, &cp)?;
        st.note = Some(self.key.sign_note(&self.origin, size, &root));
        metrics::counter!("pedm_audit_checkpoints_signed_total").increment(1);
        tracing::debug!(size, "signed an audit checkpoint");
        drop(st);
        self.submit_to_witnesses().await;
        Ok(Some(cp))
    }

    /// Writes `cp` to the head file if it is newer than the trusted head.
    fn remember_head(&self, st: &mut State, cp: &SignedCheckpoint) -> anyhow::Result<()> {
        if st
            .trusted
            .as_ref()
            .is_some_and(|t| t.checkpoint.size >= cp.checkpoint.size)
        {
            return Ok(());
        }
        if let Some(p) = &self.head_file {
            write_head(p, cp)?;
        }
        st.trusted = Some(cp.clone());
        Ok(())
    }

    /// The newest checkpoint as a signed note with the cosignatures collected so far (signing
    /// one first if there is none yet).
    pub async fn note(&self) -> anyhow::Result<Option<CheckpointNote>> {
        {
            let mut st = self.state.lock().await;
            self.checked(&mut st).await?;
            if let Some(n) = &st.note {
                // The note kept on disk may be older or from another database: serve it only
                // for the newest stored checkpoint, with its root, signed by this key.
                let latest = self.store.latest_checkpoint().await?;
                let current = latest.is_some_and(|c| c.size as u64 == n.size && c.root == n.root)
                    && n.verify_log(&self.key.note_vkey(&self.origin)).is_ok();
                if current {
                    return Ok(st.note.clone());
                }
                st.note = None;
            }
        }
        self.sign_now().await?;
        Ok(self.state.lock().await.note.clone())
    }

    /// Leaf data of event `index + 1` and its RFC 6962 inclusion proof in the tree of the
    /// first `size` events. `size` must not exceed the checked log (call [`Self::check`] first).
    pub async fn inclusion_proof(
        &self,
        index: u64,
        size: u64,
    ) -> anyhow::Result<(Hash, Vec<Hash>)> {
        self.prove(size, |p| Ok((p.leaf(index)?, p.inclusion(index, size)?)))
            .await
    }

    /// RFC 6962 consistency proof from the tree of the first `old` events to the first `new`,
    /// with both roots.
    pub async fn consistency_proof(
        &self,
        old: u64,
        new: u64,
    ) -> anyhow::Result<(Vec<Hash>, Hash, Hash)> {
        self.prove(new, |p| {
            Ok((p.consistency(old, new)?, p.root(old)?, p.root(new)?))
        })
        .await
    }

    /// Runs `f` over the kept Merkle tree (first caught up with the store if it holds fewer
    /// than `size` events), reading from the store each block of
    /// [`pedm_audit::BLOCK`] event hashes it names (at most two per proof, each checked against the tree). A block that no
    /// longer matches was changed in the database after it was checked: the log is broken.
    async fn prove<T>(
        &self,
        size: u64,
        f: impl Fn(&Proof) -> Result<T, ProofError>,
    ) -> anyhow::Result<T> {
        let mut st = self.state.lock().await;
        if let Some(why) = &st.broken {
            return Err(Broken(why.clone()).into());
        }
        if st.tree.size() < size {
            self.checked(&mut st).await?;
        }
        let changed = {
            let mut p = st.tree.proof();
            loop {
                let e = match f(&p) {
                    Ok(v) => return Ok(v),
                    Err(e) => e,
                };
                let Some(block) = Proof::needs(&e) else {
                    return Err(e.into());
                };
                let (first, end) = Proof::block_range(block);
                let leaves = self
                    .store
                    .audit_hashes(first as i64 + 1, end as i64)
                    .await?;
                match p.add_block(block, leaves) {
                    Ok(()) => {}
                    Err(e @ BlockError::Changed { .. }) => break e,
                    Err(e) => return Err(e.into()),
                }
            }
        };
        let why = format!("events were rewritten after they were checked: {changed}");
        st.broken.get_or_insert(why.clone());
        drop(st);
        metrics::gauge!("pedm_audit_log_broken").set(1.0);
        self.raise(why.clone());
        Err(Broken(why).into())
    }

    /// Submits the newest note to every witness and keeps the cosignatures they return.
    async fn submit_to_witnesses(&self) {
        if self.witnesses.is_empty() {
            return;
        }
        let (note, known, failed) = {
            let st = self.state.lock().await;
            let Some(n) = st.note.clone() else { return };
            (n, st.witness_sizes.clone(), st.witness_failed.clone())
        };
        for w in &self.witnesses {
            let have = known.get(&w.url).copied();
            if note.cosigned_by(&w.key).is_some() || have == Some(note.size) {
                continue;
            }
            if failed
                .get(&w.url)
                .is_some_and(|(size, at)| *size == note.size && at.elapsed() < WITNESS_RETRY)
            {
                continue;
            }
            let prove = |old, new| -> futures_util::future::BoxFuture<'_, _> {
                Box::pin(async move { Ok(self.consistency_proof(old, new).await?.0) })
            };
            match crate::witness::submit(prove, w, &note, have).await {
                Ok((sig, size)) => {
                    let mut st = self.state.lock().await;
                    st.witness_sizes.insert(w.url.clone(), size);
                    st.witness_failed.remove(&w.url);
                    if let Some(n) = st.note.as_mut().filter(|n| n.size == note.size) {
                        n.signatures
                            .retain(|s| s.name != sig.name || s.key_id != sig.key_id);
                        n.signatures.push(sig);
                        let text = n.text();
                        if let Some(p) = self.head_file.as_deref().map(note_path)
                            && let Err(e) = write_atomically(&p, text.as_bytes())
                        {
                            tracing::error!(error = %format!("{e:#}"), "cannot keep the cosigned note");
                        }
                    }
                    metrics::counter!("pedm_audit_cosignatures_total").increment(1);
                }
                Err(e) => {
                    self.state
                        .lock()
                        .await
                        .witness_failed
                        .insert(w.url.clone(), (note.size, std::time::Instant::now()));
                    metrics::counter!("pedm_audit_witness_failures_total").increment(1);
                    self.raise(format!(
                        "witness {} did not cosign the checkpoint of {} events: {e:#}",
                        w.url, note.size
                    ));
                }
            }
        }
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

/// How many of the first events are pruned (`pedm audit archive`), 0 if none.
pub async fn pruned_through(store: &dyn Store) -> anyhow::Result<i64> {
    let (integration, key) = pedm_core::audit::PRUNED_STATE;
    let Some(e) = store.integration_entry(integration, key).await? else {
        return Ok(0);
    };
    let p: pedm_core::audit::PrunedPrefix =
        serde_json::from_str(&e.value).context("the pruned audit state is unreadable")?;
    Ok(p.through)
}
