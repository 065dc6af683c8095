//! What the agent owes the server, kept on disk until the server has it: exec reports and
//! finished sessions (description + recording). Every item carries an id the agent chose,
//! and the server accepts an id once, so sending again after a lost answer is harmless:
//! nothing is lost, nothing is recorded twice.
//!
//! Files in `outbox/`:
//! - `report-<id>.json`: a refusal, written durably (fsync) before the caller hears it.
//! - `running-<id>.json`: a session's `exec.allowed` report and description, written durably
//!   before the command starts; the one fsync on the path of an allowed command. Its report
//!   is delivered while the session runs.
//! - `session-<id>.json`: the description of a finished session with its recording's hash
//!   (not fsynced: after a power loss `running-<id>` is still there, and [`Outbox::recover`]
//!   rebuilds the session from the recording as far as it reached the disk).
//! - `*.json.rejected`: an item the server refused for good (a 4xx that names the item, not
//!   408/413/429/401/5xx, which are retried or split). Kept, counted by `pedm-agent status`;
//!   `undelivered-<id>.json` waits to tell the server that it exists (`agent.undelivered`
//!   audit event, high-severity notice).
//! - `pid-<id>`: the pid, start time and boot of a running session, so that the next start
//!   of the agent can end what a stop left running.

use pedm_api::agent::{AgentReport, AgentReports, SessionUpload, Undelivered, UndeliveredItems};
use pedm_api::{ApiError, Client};
use std::collections::HashSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use uuid::Uuid;

/// Reports sent per call, at most.
const REPORT_BATCH: usize = 500;
/// Refused reports kept on the host, at most (see [`Outbox::prune_rejected`]).
const MAX_REJECTED_REPORTS: usize = 1000;
/// JSON bytes of reports per call, at most: well under the server's default body limit
/// (64 KiB), whatever the reports hold (each argv is cut to `REPORT_ARGV_BYTES`).
const REPORT_BATCH_BYTES: usize = 32 * 1024;

pub struct Outbox {
    dir: PathBuf,
    recordings: PathBuf,
    /// Reports of running sessions the server has acknowledged (in this process; after a
    /// restart they are sent once more and counted as duplicates by the server).
    delivered: Mutex<HashSet<Uuid>>,
}

/// Where a running session's processes are (see [`Outbox::note_pid`]).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct PidNote {
    pub pid: i32,
    /// `/proc/<pid>/stat` start time (clock ticks after boot).
    pub start_time: u64,
    pub boot_id: String,
}

/// A session as noted when it starts.
#[derive(serde::Serialize, serde::Deserialize)]
struct RunningSession {
    report: AgentReport,
    session: SessionUpload,
}

/// Writes `bytes` to `path` so that a crash leaves either the old file or the new one:
/// a temporary file in the same directory, fsynced, renamed over, directory fsynced.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = write_tmp(path, bytes, true)?;
    std::fs::rename(&tmp, path)?;
    std::fs::File::open(path.parent().unwrap_or(Path::new(".")))?.sync_all()
}

/// Writes `bytes` to a new temporary file next to `path` (fsynced if `durable`).
fn write_tmp(path: &Path, bytes: &[u8], durable: bool) -> std::io::Result<PathBuf> {
    use std::os::unix::fs::OpenOptionsExt;
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = dir.join(format!(
        ".{}.tmp-{}",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("file"),
        Uuid::now_v7()
    ));
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(bytes)?;
    if durable {
        f.sync_data()?;
    }
    Ok(tmp)
}

/// Writes a new file under its final name, its data on disk when this returns. A crash
/// in the middle leaves a file that does not parse, which is set aside and logged once it is
/// older than a flush that might find it mid-write; the command it describes had not
/// started.
fn write_new_durably(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    write_new(path, bytes)?.sync_data()
}

/// Writes a new file under its final name (not synced).
fn write_new(path: &Path, bytes: &[u8]) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(bytes)?;
    Ok(f)
}

/// Replaces `path` atomically with respect to this process crashing (not to power loss).
fn write_replacing(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = write_tmp(path, bytes, false)?;
    std::fs::rename(&tmp, path)
}

/// What one flush achieved.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Flushed {
    pub reports: usize,
    pub sessions: usize,
}

impl Outbox {
    /// The outbox under `state_dir` (created, mode 0700).
    pub fn open(state_dir: &Path) -> std::io::Result<Outbox> {
        use std::os::unix::fs::DirBuilderExt;
        let dir = state_dir.join("outbox");
        let recordings = state_dir.join("recordings");
        for d in [state_dir, &dir, &recordings] {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(d)?;
        }
        Ok(Outbox {
            dir,
            recordings,
            delivered: Mutex::new(HashSet::new()),
        })
    }

    /// Where a session's recording is written while it runs and until it is uploaded.
    pub fn recording_path(&self, session: Uuid) -> PathBuf {
        self.recordings.join(format!("{session}.cast"))
    }

    /// A refusal (or any report without a session), on disk when this returns.
    pub fn add_report(&self, r: &AgentReport) -> std::io::Result<()> {
        let bytes = serde_json::to_vec(r).map_err(std::io::Error::other)?;
        write_new_durably(&self.dir.join(format!("report-{}.json", r.id)), &bytes)
    }

    /// Notes a session that is starting: if the agent stops before it ends,
    /// [`Self::recover`] still delivers what was recorded. `report` is the session's
    /// `exec.allowed`. Returns the note's file, not yet synced: the caller must see its
    /// `sync_data` succeed before the command runs (the sync overlaps with starting it).
    pub fn begin_session(
        &self,
        id: Uuid,
        report: &AgentReport,
        meta: &SessionUpload,
    ) -> std::io::Result<std::fs::File> {
        let bytes = serde_json::to_vec(&RunningSession {
            report: report.clone(),
            session: meta.clone(),
        })
        .map_err(std::io::Error::other)?;
        write_new(&self.dir.join(format!("running-{id}.json")), &bytes)
    }

    /// [`Self::begin_session`], synced on the runtime's blocking pool while the command is
    /// being started: returns the read end of a pipe that gets one byte once the note is on
    /// disk ([`crate::session::SessionSpec::durable`]: the command execs only then; if the
    /// sync fails it gets end of file and nothing runs). Call it within the agent's runtime.
    pub fn begin_session_synced_later(
        &self,
        id: Uuid,
        report: &AgentReport,
        meta: &SessionUpload,
    ) -> std::io::Result<std::os::fd::OwnedFd> {
        let note = self.begin_session(id, report, meta)?;
        let (rd, wr) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
        tokio::task::spawn_blocking(move || match note.sync_data() {
            Ok(()) => {
                let _ = nix::unistd::write(&wr, &[1]);
            }
            Err(e) => {
                tracing::error!(session = %id, error = %e, "cannot write the session's note to disk; the command does not run");
            }
        });
        Ok(rd)
    }

    /// Queues a finished session; its recording is already at [`Self::recording_path`].
    /// The running note stays until the upload succeeds (see the module docs).
    pub fn add_session(&self, id: Uuid, meta: &SessionUpload) -> std::io::Result<()> {
        let bytes = serde_json::to_vec(meta).map_err(std::io::Error::other)?;
        write_replacing(&self.dir.join(format!("session-{id}.json")), &bytes)
    }

    /// Forgets a session that never started; its report is still delivered.
    pub fn discard_session(&self, id: Uuid) -> std::io::Result<()> {
        let _ = std::fs::remove_file(self.recording_path(id));
        let _ = std::fs::remove_file(self.dir.join(format!("pid-{id}")));
        let running = self.dir.join(format!("running-{id}.json"));
        if let Some(r) = read_running(&running) {
            self.add_report(&r.report)?;
        }
        std::fs::remove_file(running)
    }

    /// Notes the pid of a session that has started (best effort: the environment marker
    /// finds its processes too).
    pub fn note_pid(&self, id: Uuid, pid: i32) {
        let note = PidNote {
            pid,
            start_time: crate::contain::procs::Stat::read(pid).map_or(0, |s| s.start_time),
            boot_id: crate::contain::procs::boot_id(),
        };
        let path = self.dir.join(format!("pid-{id}"));
        if let Err(e) = serde_json::to_vec(&note)
            .map_err(std::io::Error::other)
            .and_then(|b| write_replacing(&path, &b))
        {
            tracing::warn!(session = %id, error = %e, "cannot note the session's pid");
        }
    }

    fn take_pid(&self, id: Uuid) -> Option<PidNote> {
        let path = self.dir.join(format!("pid-{id}"));
        let note = std::fs::read(&path)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok());
        let _ = std::fs::remove_file(&path);
        note
    }

    /// Queues the sessions an earlier run of the agent did not see end (it stopped or
    /// crashed): their recordings as far as they were written, marked as ended by the agent
    /// stopping, with an unknown exit status. `end` is called first for each, to end what
    /// the session left running; it returns how many processes it ended, which the session
    /// description records. Returns how many sessions.
    pub fn recover(
        &self,
        mut end: impl FnMut(Uuid, &SessionUpload, Option<PidNote>) -> usize,
    ) -> std::io::Result<usize> {
        use sha2::Digest;
        let mut n = 0;
        for (id, path) in self.items("running-")? {
            let noted = self.take_pid(id);
            if self.dir.join(format!("session-{id}.json")).exists() {
                continue;
            }
            let Some(RunningSession {
                session: mut meta, ..
            }) = read_running(&path)
            else {
                set_aside(&path, "unreadable running session");
                continue;
            };
            let rec = self.recording_path(id);
            let Ok(bytes) = std::fs::read(&rec) else {
                set_aside(&path, "recording missing");
                continue;
            };
            let modified = std::fs::metadata(&rec)
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| jiff::Timestamp::try_from(t).ok());
            meta.ended_at = modified
                .unwrap_or_else(jiff::Timestamp::now)
                .max(meta.started_at);
            meta.exit_code = None;
            meta.signal = None;
            let killed = end(id, &meta, noted);
            meta.ended_by = Some(if killed > 0 {
                format!(
                    "pedm-agent stopped during the session; {killed} process(es) it left were killed at the agent's restart"
                )
            } else {
                "pedm-agent stopped during the session".into()
            });
            meta.recording_sha256 = hex::encode(sha2::Sha256::digest(&bytes));
            meta.recording_bytes = bytes.len() as u64;
            self.add_session(id, &meta)?;
            n += 1;
        }
        Ok(n)
    }

    /// Items waiting, by kind (reports, sessions).
    pub fn pending(&self) -> std::io::Result<(usize, usize)> {
        let (mut r, mut s) = (0, 0);
        for e in std::fs::read_dir(&self.dir)? {
            let name = e?.file_name();
            let name = name.to_string_lossy();
            if name.starts_with("report-") && name.ends_with(".json") {
                r += 1;
            } else if name.starts_with("session-") && name.ends_with(".json") {
                s += 1;
            }
        }
        Ok((r, s))
    }

    fn items(&self, prefix: &str) -> std::io::Result<Vec<(Uuid, PathBuf)>> {
        let mut out = vec![];
        for e in std::fs::read_dir(&self.dir)? {
            let e = e?;
            let name = e.file_name();
            let name = name.to_string_lossy();
            let Some(id) = name
                .strip_prefix(prefix)
                .and_then(|n| n.strip_suffix(".json"))
                .and_then(|n| Uuid::parse_str(n).ok())
            else {
                continue;
            };
            out.push((id, e.path()));
        }
        // UUIDv7: oldest first.
        out.sort();
        Ok(out)
    }

    /// Sends everything waiting. Stops at the first error that waiting can cure (the
    /// server is away, overloaded, slow, or does not accept the host token right now);
    /// reports go in batches of at most [`REPORT_BATCH_BYTES`], halved when the server still
    /// finds one too large. An item the server refuses for good is set aside on disk (never
    /// deleted: [`Self::undelivered`] counts it), and the server is told that it exists.
    pub async fn flush(&self, client: &Client) -> Result<Flushed, ApiError> {
        let mut done = Flushed::default();
        // Reports of sessions (running or finished, not yet uploaded) not acknowledged yet.
        let mut embedded = vec![];
        for (_, path) in self.items("running-").map_err(io_err)? {
            if let Some(r) = read_running(&path) {
                let seen = self.delivered.lock().unwrap_or_else(|e| e.into_inner());
                if !seen.contains(&r.report.id) {
                    embedded.push((r.report, path));
                }
            }
        }
        for (report, path, outcome) in self.send_reports(client, embedded).await? {
            self.delivered
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(report.id);
            match outcome {
                Ok(()) => done.reports += 1,
                Err(error) => self.refused_report(&report, &path, &error, false),
            }
        }
        let mut files = vec![];
        for (_, path) in self.items("report-").map_err(io_err)? {
            match std::fs::read(&path)
                .ok()
                .and_then(|b| serde_json::from_slice::<AgentReport>(&b).ok())
            {
                Some(r) => files.push((r, path)),
                // Being written right now (it is created under its final name, then
                // written and synced): taken at a later flush.
                None if recently_written(&path) => {}
                None => set_aside(&path, "unreadable report"),
            }
        }
        for (report, path, outcome) in self.send_reports(client, files).await? {
            match outcome {
                Ok(()) => {
                    let _ = std::fs::remove_file(&path);
                    done.reports += 1;
                }
                Err(error) => self.refused_report(&report, &path, &error, true),
            }
        }
        for (id, path) in self.items("session-").map_err(io_err)? {
            let Some(meta) = std::fs::read(&path)
                .ok()
                .and_then(|b| serde_json::from_slice::<SessionUpload>(&b).ok())
            else {
                set_aside(&path, "unreadable session");
                continue;
            };
            // Its report first: the session may have started after the reports above were
            // collected, and its note goes away with the upload.
            let running = self.dir.join(format!("running-{id}.json"));
            if let Some(r) = read_running(&running) {
                let sent = self
                    .delivered
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .contains(&r.report.id);
                if !sent {
                    let outcome = self
                        .send_reports(client, vec![(r.report, running.clone())])
                        .await?;
                    for (report, path, outcome) in outcome {
                        match outcome {
                            Ok(()) => done.reports += 1,
                            Err(error) => self.refused_report(&report, &path, &error, false),
                        }
                    }
                }
            }
            let rec = self.recording_path(id);
            let file = match tokio::fs::File::open(&rec).await {
                Ok(f) => f,
                Err(e) => {
                    tracing::error!(session = %id, error = %e, "recording missing");
                    self.refused_session(id, &path, &meta, &format!("recording missing: {e}"));
                    continue;
                }
            };
            match client.upload_session(id, &meta, file).await {
                Ok(_) => {
                    // The session's report went first (above): nothing of it is left to send.
                    if let Some(r) = read_running(&running) {
                        self.delivered
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .remove(&r.report.id);
                    }
                    let _ = std::fs::remove_file(&running);
                    let _ = std::fs::remove_file(&path);
                    let _ = std::fs::remove_file(&rec);
                    let _ = std::fs::remove_file(self.dir.join(format!("pid-{id}")));
                    done.sessions += 1;
                }
                Err(e) if retry_later(&e) => return Err(e),
                Err(e) => {
                    tracing::error!(session = %id, error = %e, "the server refused a session");
                    self.refused_session(id, &path, &meta, &e.to_string());
                }
            }
        }
        self.send_undelivered(client).await?;
        self.prune_rejected(MAX_REJECTED_REPORTS);
        Ok(done)
    }

    /// Keeps at most `max` refused reports: the oldest beyond that are removed once the
    /// server has been told of them (their `agent.undelivered` event holds what they were).
    /// Refused sessions are never removed: their recordings exist nowhere else.
    fn prune_rejected(&self, max: usize) {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return;
        };
        let mut rejected: Vec<(String, PathBuf)> = entries
            .flatten()
            .filter_map(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                let id = name
                    .strip_prefix("report-")?
                    .strip_suffix(".json.rejected")?
                    .to_string();
                Some((id, e.path()))
            })
            .collect();
        if rejected.len() <= max {
            return;
        }
        rejected.sort();
        let excess = rejected.len() - max;
        let mut removed = 0;
        for (id, path) in rejected.into_iter().take(excess) {
            let announced = !self.dir.join(format!("undelivered-{id}.json")).exists();
            if announced && std::fs::remove_file(&path).is_ok() {
                removed += 1;
            }
        }
        if removed > 0 {
            tracing::warn!(
                removed,
                kept = max,
                "removed the oldest refused reports (the server has their notices)"
            );
        }
    }

    /// Sends `items` in batches by size; returns each item with the server's answer to it
    /// (`Err` with the reason when refused for good). `Err` overall: try again later.
    #[allow(clippy::type_complexity)]
    async fn send_reports(
        &self,
        client: &Client,
        items: Vec<(AgentReport, PathBuf)>,
    ) -> Result<Vec<(AgentReport, PathBuf, Result<(), String>)>, ApiError> {
        let mut out = vec![];
        // Batches still to send, first in front.
        let mut queue: std::collections::VecDeque<Vec<(AgentReport, PathBuf)>> =
            batches(items).into();
        while let Some(batch) = queue.pop_front() {
            let body = AgentReports {
                reports: batch.iter().map(|(r, _)| r.clone()).collect(),
            };
            match client.agent_reports(&body).await {
                Ok(_) => out.extend(batch.into_iter().map(|(r, p)| (r, p, Ok(())))),
                Err(e) if retry_later(&e) => return Err(e),
                Err(e) if batch.len() > 1 => {
                    // Too large, or one bad report among good ones: halve until the
                    // refusal names one report.
                    tracing::warn!(error = %e, reports = batch.len(), "splitting a refused batch");
                    let mut first = batch;
                    let second = first.split_off(first.len() / 2);
                    queue.push_front(second);
                    queue.push_front(first);
                }
                Err(e) => out.extend(batch.into_iter().map(|(r, p)| (r, p, Err(e.to_string())))),
            }
        }
        Ok(out)
    }

    /// A report the server will never take: kept (`report-*.json.rejected`, or in its
    /// session's note) and announced to the server.
    fn refused_report(&self, r: &AgentReport, path: &Path, error: &str, own_file: bool) {
        tracing::error!(report = %r.id, error, "the server refused a report; kept on this host");
        if own_file {
            set_aside(path, "refused by the server");
        }
        let bytes = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
        self.note_undelivered(Undelivered {
            item: r.id,
            kind: "report".into(),
            bytes,
            error: error.to_string(),
            user: Some(r.user.clone()),
        });
    }

    fn refused_session(&self, id: Uuid, path: &Path, meta: &SessionUpload, error: &str) {
        set_aside(path, "refused by the server");
        self.note_undelivered(Undelivered {
            item: id,
            kind: "session".into(),
            bytes: meta.recording_bytes,
            error: error.to_string(),
            user: Some(meta.user.clone()),
        });
    }

    /// Notes that the server must hear of an item it refused (`undelivered-<id>.json`).
    fn note_undelivered(&self, u: Undelivered) {
        let path = self.dir.join(format!("undelivered-{}.json", u.item));
        let written = serde_json::to_vec(&u)
            .map_err(std::io::Error::other)
            .and_then(|b| write_replacing(&path, &b));
        if let Err(e) = written {
            tracing::error!(item = %u.item, error = %e, "cannot note an undelivered item");
        }
    }

    /// Tells the server of the items it refused; each notice is removed once it has it.
    async fn send_undelivered(&self, client: &Client) -> Result<(), ApiError> {
        let notes = self.items("undelivered-").map_err(io_err)?;
        for chunk in notes.chunks(100) {
            let mut items = vec![];
            for (_, path) in chunk {
                match std::fs::read(path)
                    .ok()
                    .and_then(|b| serde_json::from_slice::<Undelivered>(&b).ok())
                {
                    Some(u) => items.push(u),
                    None => {
                        let _ = std::fs::remove_file(path);
                    }
                }
            }
            match client.agent_undelivered(&UndeliveredItems { items }).await {
                Ok(_) => {
                    for (_, path) in chunk {
                        let _ = std::fs::remove_file(path);
                    }
                }
                Err(e) if retry_later(&e) => return Err(e),
                // Kept: `pedm-agent status` still counts the items themselves.
                Err(e) => tracing::error!(error = %e, "the server refused undelivered notices"),
            }
        }
        Ok(())
    }

    /// Items the server refused, kept on this host: (reports, sessions).
    pub fn undelivered(&self) -> std::io::Result<(usize, usize)> {
        let (mut r, mut s) = (0, 0);
        for e in std::fs::read_dir(&self.dir)? {
            let name = e?.file_name();
            let name = name.to_string_lossy();
            if !name.ends_with(".json.rejected") {
                continue;
            }
            if name.starts_with("report-") {
                r += 1;
            } else if name.starts_with("session-") {
                s += 1;
            }
        }
        Ok((r, s))
    }
}

/// Reports in sending order, cut into batches of at most [`REPORT_BATCH`] reports and
/// [`REPORT_BATCH_BYTES`] of JSON (one report larger than that goes alone).
fn batches(items: Vec<(AgentReport, PathBuf)>) -> Vec<Vec<(AgentReport, PathBuf)>> {
    let mut out: Vec<Vec<(AgentReport, PathBuf)>> = vec![];
    let mut bytes = 0;
    for item in items {
        let size = serde_json::to_vec(&item.0)
            .map(|b| b.len() + 1)
            .unwrap_or(0);
        match out.last_mut() {
            Some(b) if b.len() < REPORT_BATCH && bytes + size <= REPORT_BATCH_BYTES => {
                bytes += size;
                b.push(item);
            }
            _ => {
                bytes = size;
                out.push(vec![item]);
            }
        }
    }
    out
}

/// Whether waiting can cure a failure: the server is unreachable, overloaded or slow
/// (5xx, 408, 429), or does not take the host token right now (401: being rotated). Only
/// a definite refusal of the item itself (other 4xx) is final.
fn retry_later(e: &ApiError) -> bool {
    match e {
        ApiError::Transport { .. } | ApiError::Usage(_) => true,
        ApiError::Server { status, .. } => {
            matches!(*status, 401 | 408 | 425 | 429) || *status >= 500
        }
    }
}

fn read_running(path: &Path) -> Option<RunningSession> {
    std::fs::read(path)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
}

fn io_err(e: std::io::Error) -> ApiError {
    ApiError::Usage(format!("reading the outbox: {e}"))
}

/// Whether `path` was modified in the last few seconds: a report that does not parse yet is
/// then still being written (not a crash's leftover).
fn recently_written(path: &Path) -> bool {
    std::fs::metadata(path)
        .and_then(|m| m.modified())
        .is_ok_and(|t| {
            t.elapsed()
                .is_ok_and(|age| age < std::time::Duration::from_secs(30))
        })
}

fn set_aside(path: &Path, why: &str) {
    let mut to = path.as_os_str().to_owned();
    to.push(".rejected");
    tracing::error!(file = %path.display(), why, "set aside");
    let _ = std::fs::rename(path, PathBuf::from(to));
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A report file that does not parse is taken for one being written while it is fresh,
    /// and set aside only once it is old (a crash's leftover).
    #[test]
    fn a_report_being_written_is_not_taken_for_a_torn_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("report-x.json");
        let f = std::fs::File::create(&path).unwrap();
        assert!(recently_written(&path));
        f.set_modified(std::time::SystemTime::now() - std::time::Duration::from_secs(60))
            .unwrap();
        assert!(!recently_written(&path));
        assert!(!recently_written(&dir.path().join("missing")));
    }
    use pedm_api::agent::ExecVerdict;

    fn report(session: Uuid) -> AgentReport {
        AgentReport::in_session(
            "alice",
            Uuid::now_v7(),
            session,
            ExecVerdict::Allowed,
            vec!["/usr/bin/id".into()],
        )
    }

    fn meta() -> SessionUpload {
        SessionUpload {
            grant_id: Some(Uuid::now_v7()),
            delegation_id: None,
            task: None,
            params: None,
            user: "alice".into(),
            run_as: "root".into(),
            argv: vec!["/usr/bin/id".into()],
            binary_sha256: None,
            shell: false,
            started_at: jiff::Timestamp::now(),
            ended_at: jiff::Timestamp::now(),
            exit_code: None,
            signal: None,
            ended_by: None,
            recording_sha256: String::new(),
            recording_bytes: 0,
        }
    }

    #[test]
    fn a_session_interrupted_by_a_stop_is_recovered_from_its_recording() {
        use sha2::Digest;
        let dir = tempfile::tempdir().unwrap();
        let outbox = Outbox::open(dir.path()).unwrap();
        let (interrupted, finished) = (Uuid::now_v7(), Uuid::now_v7());
        for id in [interrupted, finished] {
            outbox
                .begin_session(id, &report(id), &meta())
                .unwrap()
                .sync_data()
                .unwrap();
            std::fs::write(
                outbox.recording_path(id),
                b"{\"version\":2}\n[0.1, \"o\", \"hi\"]\n",
            )
            .unwrap();
        }
        let done = SessionUpload {
            exit_code: Some(0),
            recording_sha256: "ab".into(),
            ..meta()
        };
        outbox.add_session(finished, &done).unwrap();
        assert_eq!(outbox.pending().unwrap(), (0, 1));

        // The agent starts again: the interrupted session is queued, the finished one kept.
        let outbox = Outbox::open(dir.path()).unwrap();
        assert_eq!(outbox.recover(|_, _, _| 0).unwrap(), 1);
        assert_eq!(outbox.pending().unwrap(), (0, 2));
        let text = std::fs::read(
            dir.path()
                .join(format!("outbox/session-{interrupted}.json")),
        )
        .unwrap();
        let recovered: SessionUpload = serde_json::from_slice(&text).unwrap();
        let rec = std::fs::read(outbox.recording_path(interrupted)).unwrap();
        assert_eq!(
            recovered.recording_sha256,
            hex::encode(sha2::Sha256::digest(&rec))
        );
        assert_eq!(recovered.recording_bytes, rec.len() as u64);
        assert_eq!(recovered.exit_code, None);
        assert!(recovered.ended_by.unwrap().contains("stopped"));
        let kept: SessionUpload = serde_json::from_slice(
            &std::fs::read(dir.path().join(format!("outbox/session-{finished}.json"))).unwrap(),
        )
        .unwrap();
        assert_eq!(kept, done);
        // Recovering again queues nothing new.
        assert_eq!(outbox.recover(|_, _, _| 0).unwrap(), 0);
    }
}

#[cfg(test)]
mod prune_tests {
    use super::*;

    #[test]
    fn refused_reports_are_pruned_only_once_announced() {
        let dir = tempfile::tempdir().unwrap();
        let outbox = Outbox::open(dir.path()).unwrap();
        let ids: Vec<Uuid> = (0..5).map(|_| Uuid::now_v7()).collect();
        for id in &ids {
            std::fs::write(outbox.dir.join(format!("report-{id}.json.rejected")), b"{}").unwrap();
        }
        // The oldest is not announced yet: kept although over the limit.
        std::fs::write(
            outbox.dir.join(format!("undelivered-{}.json", ids[0])),
            b"{}",
        )
        .unwrap();
        outbox.prune_rejected(2);
        let left: Vec<bool> = ids
            .iter()
            .map(|id| {
                outbox
                    .dir
                    .join(format!("report-{id}.json.rejected"))
                    .exists()
            })
            .collect();
        assert_eq!(left, [true, false, false, true, true]);
        assert_eq!(outbox.undelivered().unwrap(), (3, 0));
    }
}
