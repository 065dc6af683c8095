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

use pedm_api::agent::{AgentReport, AgentReports, SessionUpload};
use pedm_api::{ApiError, Client};
use std::collections::HashSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use uuid::Uuid;

/// Reports sent per call.
const REPORT_BATCH: usize = 500;

pub struct Outbox {
    dir: PathBuf,
    recordings: PathBuf,
    /// Reports of running sessions the server has acknowledged (in this process; after a
    /// restart they are sent once more and counted as duplicates by the server).
    delivered: Mutex<HashSet<Uuid>>,
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
/// in the middle leaves a file that does not parse, which is set aside and logged; the
/// command it describes had not started.
fn write_new_durably(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(bytes)?;
    f.sync_data()
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

    /// Notes a session that has started: if the agent stops before it ends,
    /// [`Self::recover`] still delivers what was recorded.
    /// `report` is the session's `exec.allowed`; both are on disk when this returns.
    pub fn begin_session(
        &self,
        id: Uuid,
        report: &AgentReport,
        meta: &SessionUpload,
    ) -> std::io::Result<()> {
        let bytes = serde_json::to_vec(&RunningSession {
            report: report.clone(),
            session: meta.clone(),
        })
        .map_err(std::io::Error::other)?;
        write_new_durably(&self.dir.join(format!("running-{id}.json")), &bytes)
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
        let running = self.dir.join(format!("running-{id}.json"));
        if let Some(r) = read_running(&running) {
            self.add_report(&r.report)?;
        }
        std::fs::remove_file(running)
    }

    /// Queues the sessions an earlier run of the agent did not see end (it stopped or
    /// crashed): their recordings as far as they were written, marked as ended by the agent
    /// stopping, with an unknown exit status. Returns how many.
    pub fn recover(&self) -> std::io::Result<usize> {
        use sha2::Digest;
        let mut n = 0;
        for (id, path) in self.items("running-")? {
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
            meta.ended_by = Some("pedm-agent stopped during the session".into());
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

    /// Sends everything waiting. Stops at the first transport error (the server is away);
    /// an item the server refuses for good is set aside as `*.rejected` and logged, so it
    /// cannot block the rest.
    pub async fn flush(&self, client: &Client) -> Result<Flushed, ApiError> {
        let mut done = Flushed::default();
        // Reports of sessions (running or finished, not yet uploaded) not acknowledged yet.
        let mut embedded = vec![];
        for (_, path) in self.items("running-").map_err(io_err)? {
            if let Some(r) = read_running(&path) {
                let seen = self.delivered.lock().unwrap_or_else(|e| e.into_inner());
                if !seen.contains(&r.report.id) {
                    embedded.push(r.report);
                }
            }
        }
        for batch in embedded.chunks(REPORT_BATCH) {
            let body = AgentReports {
                reports: batch.to_vec(),
            };
            match client.agent_reports(&body).await {
                Ok(_) => {
                    let mut seen = self.delivered.lock().unwrap_or_else(|e| e.into_inner());
                    seen.extend(batch.iter().map(|r| r.id));
                    done.reports += batch.len();
                }
                Err(e @ ApiError::Transport { .. }) => return Err(e),
                Err(e) if e.status().is_some_and(|s| s >= 500) => return Err(e),
                Err(e) => {
                    tracing::error!(error = %e, "the server refused a batch of session reports");
                    let mut seen = self.delivered.lock().unwrap_or_else(|e| e.into_inner());
                    seen.extend(batch.iter().map(|r| r.id));
                }
            }
        }
        let reports = self.items("report-").map_err(io_err)?;
        for batch in reports.chunks(REPORT_BATCH) {
            let mut body = AgentReports { reports: vec![] };
            let mut files = vec![];
            for (_, path) in batch {
                match std::fs::read(path)
                    .ok()
                    .and_then(|b| serde_json::from_slice::<AgentReport>(&b).ok())
                {
                    Some(r) => {
                        body.reports.push(r);
                        files.push(path.clone());
                    }
                    None => set_aside(path, "unreadable report"),
                }
            }
            match client.agent_reports(&body).await {
                Ok(_) => {
                    for f in files {
                        let _ = std::fs::remove_file(f);
                    }
                    done.reports += body.reports.len();
                }
                Err(e @ ApiError::Transport { .. }) => return Err(e),
                Err(e) if e.status().is_some_and(|s| s >= 500) => return Err(e),
                Err(e) => {
                    tracing::error!(error = %e, "the server refused a batch of reports");
                    for f in &files {
                        set_aside(f, "refused by the server");
                    }
                }
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
            if let Some(r) = read_running(&self.dir.join(format!("running-{id}.json"))) {
                let sent = self
                    .delivered
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .contains(&r.report.id);
                if !sent {
                    let body = AgentReports {
                        reports: vec![r.report.clone()],
                    };
                    match client.agent_reports(&body).await {
                        Ok(_) => done.reports += 1,
                        Err(e @ ApiError::Transport { .. }) => return Err(e),
                        Err(e) if e.status().is_some_and(|s| s >= 500) => return Err(e),
                        Err(e) => {
                            tracing::error!(error = %e, "the server refused a session report")
                        }
                    }
                }
            }
            let rec = self.recording_path(id);
            let file = match tokio::fs::File::open(&rec).await {
                Ok(f) => f,
                Err(e) => {
                    tracing::error!(session = %id, error = %e, "recording missing");
                    set_aside(&path, "recording missing");
                    continue;
                }
            };
            match client.upload_session(id, &meta, file).await {
                Ok(_) => {
                    // The session's report went first (above): nothing of it is left to send.
                    let running = self.dir.join(format!("running-{id}.json"));
                    if let Some(r) = read_running(&running) {
                        self.delivered
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .remove(&r.report.id);
                    }
                    let _ = std::fs::remove_file(&running);
                    let _ = std::fs::remove_file(&path);
                    let _ = std::fs::remove_file(&rec);
                    done.sessions += 1;
                }
                Err(e @ ApiError::Transport { .. }) => return Err(e),
                Err(e) if e.status().is_some_and(|s| s >= 500) => return Err(e),
                Err(e) => {
                    tracing::error!(session = %id, error = %e, "the server refused a session");
                    set_aside(&path, "refused by the server");
                }
            }
        }
        Ok(done)
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

fn set_aside(path: &Path, why: &str) {
    let mut to = path.as_os_str().to_owned();
    to.push(".rejected");
    tracing::error!(file = %path.display(), why, "set aside");
    let _ = std::fs::rename(path, PathBuf::from(to));
}

#[cfg(test)]
mod tests {
    use super::*;
    use pedm_api::agent::ExecVerdict;

    fn report(session: Uuid) -> AgentReport {
        AgentReport {
            id: Uuid::now_v7(),
            at: jiff::Timestamp::now(),
            user: "alice".into(),
            verdict: ExecVerdict::Allowed,
            grant: Some(Uuid::now_v7()),
            session: Some(session),
            task: None,
            delegation: None,
            argv: vec!["/usr/bin/id".into()],
            binary_sha256: None,
            reason: None,
        }
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
            outbox.begin_session(id, &report(id), &meta()).unwrap();
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
        assert_eq!(outbox.recover().unwrap(), 1);
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
        assert_eq!(outbox.recover().unwrap(), 0);
    }
}
