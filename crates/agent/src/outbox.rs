//! What the agent owes the server, kept on disk until the server has it: exec reports and
//! finished sessions (description + recording). Every item carries an id the agent chose,
//! and the server accepts an id once, so sending again after a lost answer is harmless:
//! nothing is lost, nothing is recorded twice.

use pedm_api::agent::{AgentReport, AgentReports, SessionUpload};
use pedm_api::{ApiError, Client};
use std::io::Write;
use std::path::{Path, PathBuf};
use uuid::Uuid;

/// Reports sent per call.
const REPORT_BATCH: usize = 500;

pub struct Outbox {
    dir: PathBuf,
    recordings: PathBuf,
}

/// Writes `bytes` to `path` so that a crash leaves either the old file or the new one:
/// a temporary file in the same directory, fsynced, renamed over, directory fsynced.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
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
    f.sync_all()?;
    drop(f);
    std::fs::rename(&tmp, path)?;
    std::fs::File::open(dir)?.sync_all()
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
        Ok(Outbox { dir, recordings })
    }

    /// Where a session's recording is written while it runs and until it is uploaded.
    pub fn recording_path(&self, session: Uuid) -> PathBuf {
        self.recordings.join(format!("{session}.cast"))
    }

    pub fn add_report(&self, r: &AgentReport) -> std::io::Result<()> {
        let bytes = serde_json::to_vec(r).map_err(std::io::Error::other)?;
        write_atomically(&self.dir.join(format!("report-{}.json", r.id)), &bytes)
    }

    /// Notes a session that has started: if the agent stops before it ends,
    /// [`Self::recover`] still delivers what was recorded.
    pub fn begin_session(&self, id: Uuid, meta: &SessionUpload) -> std::io::Result<()> {
        let bytes = serde_json::to_vec(meta).map_err(std::io::Error::other)?;
        write_atomically(&self.dir.join(format!("running-{id}.json")), &bytes)
    }

    /// Queues a finished session; its recording is already at [`Self::recording_path`].
    pub fn add_session(&self, id: Uuid, meta: &SessionUpload) -> std::io::Result<()> {
        let bytes = serde_json::to_vec(meta).map_err(std::io::Error::other)?;
        write_atomically(&self.dir.join(format!("session-{id}.json")), &bytes)?;
        match std::fs::remove_file(self.dir.join(format!("running-{id}.json"))) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    /// Forgets a session that never started.
    pub fn discard_session(&self, id: Uuid) -> std::io::Result<()> {
        let _ = std::fs::remove_file(self.recording_path(id));
        std::fs::remove_file(self.dir.join(format!("running-{id}.json")))
    }

    /// Queues the sessions an earlier run of the agent did not see end (it stopped or
    /// crashed): their recordings as far as they were written, marked as ended by the agent
    /// stopping, with an unknown exit status. Returns how many.
    pub fn recover(&self) -> std::io::Result<usize> {
        use sha2::Digest;
        let mut n = 0;
        for (id, path) in self.items("running-")? {
            let Some(mut meta) = std::fs::read(&path)
                .ok()
                .and_then(|b| serde_json::from_slice::<SessionUpload>(&b).ok())
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
            meta.ended_at = modified.unwrap_or_else(jiff::Timestamp::now).max(meta.started_at);
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

fn io_err(e: std::io::Error) -> ApiError {
    ApiError::Usage(format!("reading the outbox: {e}"))
}

fn set_aside(path: &Path, why: &str) {
    let mut to = path.as_os_str().to_owned();
    to.push(".rejected");
    tracing::error!(file = %path.display(), why, "set aside");
    let _ = std::fs::rename(path, PathBuf::from(to));
}
