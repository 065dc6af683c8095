//! An I/O log sudo is sending, on disk while it arrives: the recording so far
//! (`<id>.cast.part`, asciicast v2 timed by sudo's own delays) and beside it what the
//! accept message said plus the last commit point (`<id>.json`). A commit makes the recording
//! durable up to a point first, then the state naming that point; only then is the point
//! acknowledged to sudo. A restart from that point truncates whatever arrived after it, so a
//! dropped connection loses nothing that was acknowledged and records nothing twice.

use pedm_cast::{CastWriter, Header};
use serde::{Deserialize, Serialize};
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;
use uuid::Uuid;

/// What the accept message said of the command, kept with the partial log.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct LogMeta {
    pub id: Uuid,
    /// The host whose certificate opened it: only that host may resume it.
    pub host: String,
    pub user: String,
    pub run_as: String,
    pub argv: Vec<String>,
    pub started_at: jiff::Timestamp,
    pub grant: Option<Uuid>,
}

#[derive(Debug, Serialize, Deserialize)]
struct State {
    meta: LogMeta,
    /// The last commit point acknowledged: the sum of sudo's delays so far, in nanoseconds.
    committed_nanos: u64,
    /// The recording's size at that point.
    committed_bytes: u64,
    /// When it was last committed (to finish logs nobody resumes).
    committed_at: jiff::Timestamp,
}

#[derive(Debug, thiserror::Error)]
pub enum IoLogError {
    #[error("no I/O log {0} is waiting to be resumed")]
    Unknown(String),
    #[error("I/O log {id} was started by host {owner}, not by this host")]
    OtherHost { id: Uuid, owner: String },
    #[error("resume point {asked:?} of I/O log {id} is not its last commit point ({committed:?})")]
    NotACommitPoint {
        id: Uuid,
        asked: Duration,
        committed: Duration,
    },
    #[error("I/O log storage: {0}")]
    Io(#[from] io::Error),
    #[error("I/O log state {path}: {message}")]
    Corrupt { path: String, message: String },
}

/// Where partial logs live: `<recordings_dir>/sudo-partial`. Finished recordings go to
/// `<recordings_dir>/<id>.cast`, where agents' recordings go.
#[derive(Debug, Clone)]
pub struct Spool {
    pub recordings: PathBuf,
}

impl Spool {
    fn dir(&self) -> PathBuf {
        self.recordings.join("sudo-partial")
    }

    fn part(&self, id: Uuid) -> PathBuf {
        self.dir().join(format!("{id}.cast.part"))
    }

    fn state(&self, id: Uuid) -> PathBuf {
        self.dir().join(format!("{id}.json"))
    }

    /// The ids of the partial logs on disk.
    pub fn pending(&self) -> io::Result<Vec<Uuid>> {
        let entries = match std::fs::read_dir(self.dir()) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(vec![]),
            Err(e) => return Err(e),
        };
        let mut out = vec![];
        for e in entries {
            let name = e?.file_name();
            if let Some(id) = name
                .to_str()
                .and_then(|n| n.strip_suffix(".json"))
                .and_then(|n| Uuid::parse_str(n).ok())
            {
                out.push(id);
            }
        }
        Ok(out)
    }

    /// Removes recordings left without their state (cut off, or pedmd stopped, before a
    /// log's first commit: nothing of it was acknowledged) once older than `older_than`,
    /// except those `open` says a connection is still writing; returns how many.
    pub fn remove_orphans(
        &self,
        older_than: std::time::SystemTime,
        open: impl Fn(Uuid) -> bool,
    ) -> io::Result<usize> {
        let entries = match std::fs::read_dir(self.dir()) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
            Err(e) => return Err(e),
        };
        let mut n = 0;
        for e in entries {
            let e = e?;
            let name = e.file_name();
            let Some(id) = name
                .to_str()
                .and_then(|n| n.strip_suffix(".cast.part"))
                .and_then(|n| Uuid::parse_str(n).ok())
            else {
                continue;
            };
            let old = e.metadata()?.modified()? < older_than;
            if old && !open(id) && !self.state(id).exists() {
                std::fs::remove_file(e.path())?;
                n += 1;
            }
        }
        Ok(n)
    }

    /// Starts the log of an accepted command.
    pub fn create(&self, meta: LogMeta, header: &Header) -> Result<IoLog, IoLogError> {
        let dir = self.dir();
        std::fs::create_dir_all(&dir)?;
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(self.part(meta.id))?;
        let log = IoLog {
            spool: self.clone(),
            writer: CastWriter::replayed(file, header)?,
            meta,
            committed: Duration::ZERO,
            dirty: false,
            resumed: false,
            has_state: false,
        };
        // No state until the first commit: nothing is acknowledged before it (a log cut off
        // or a pedmd stopped before then is not resumable; the sweep removes what it left),
        // and a short log that ends first never makes one.
        Ok(log)
    }

    /// Reopens log `id` for `host` at `resume_point`, which must be its last commit point;
    /// whatever arrived after it is dropped (sudo sends it again).
    pub fn resume(
        &self,
        host: &str,
        id: &str,
        resume_point: Duration,
    ) -> Result<IoLog, IoLogError> {
        let uuid = Uuid::parse_str(id).map_err(|_| IoLogError::Unknown(id.to_string()))?;
        let state = match self.read_state(uuid) {
            Err(IoLogError::Io(e)) if e.kind() == io::ErrorKind::NotFound => {
                return Err(IoLogError::Unknown(id.to_string()));
            }
            other => other?,
        };
        if state.meta.host != host {
            return Err(IoLogError::OtherHost {
                id: uuid,
                owner: state.meta.host,
            });
        }
        let committed = Duration::from_nanos(state.committed_nanos);
        if resume_point != committed {
            return Err(IoLogError::NotACommitPoint {
                id: uuid,
                asked: resume_point,
                committed,
            });
        }
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(self.part(uuid))?;
        file.set_len(state.committed_bytes)?;
        file.seek(SeekFrom::End(0))?;
        Ok(IoLog {
            spool: self.clone(),
            writer: CastWriter::appending(file, committed),
            meta: state.meta,
            committed,
            dirty: false,
            resumed: true,
            has_state: true,
        })
    }

    fn read_state(&self, id: Uuid) -> Result<State, IoLogError> {
        let path = self.state(id);
        let bytes = std::fs::read(&path)?;
        serde_json::from_slice(&bytes).map_err(|e| IoLogError::Corrupt {
            path: path.display().to_string(),
            message: e.to_string(),
        })
    }

    /// The partial log `id` as of its last commit, for finishing one nobody resumed.
    pub fn abandoned(
        &self,
        id: Uuid,
        older_than: jiff::Timestamp,
    ) -> Result<Option<IoLog>, IoLogError> {
        let state = self.read_state(id)?;
        if state.committed_at > older_than {
            return Ok(None);
        }
        let host = state.meta.host.clone();
        self.resume(
            &host,
            &id.to_string(),
            Duration::from_nanos(state.committed_nanos),
        )
        .map(Some)
    }
}

/// A log being written.
pub struct IoLog {
    spool: Spool,
    writer: CastWriter<File>,
    pub meta: LogMeta,
    committed: Duration,
    dirty: bool,
    /// Continued after a restart: the writer's hash covers only the part it wrote.
    resumed: bool,
    /// Whether its state file exists (from the first commit on).
    has_state: bool,
}

/// A finished recording, in the recordings directory under the session's id.
pub struct Finished {
    pub meta: LogMeta,
    pub ended_at: jiff::Timestamp,
    pub sha256: String,
    pub bytes: u64,
}

impl IoLog {
    /// Adds `delay` to the log's time (every record carries its delay since the one before).
    pub fn advance(&mut self, delay: Duration) {
        self.writer.advance(delay);
        self.dirty = true;
    }

    pub fn output(&mut self, data: &[u8]) -> io::Result<()> {
        self.writer.output(data)
    }

    pub fn input(&mut self, data: &[u8]) -> io::Result<()> {
        self.writer.input(data)
    }

    pub fn resize(&mut self, cols: u16, rows: u16) -> io::Result<()> {
        self.writer.resize(cols, rows)
    }

    pub fn marker(&mut self, label: &str) -> io::Result<()> {
        self.writer.marker(label)
    }

    /// The recording's size so far.
    pub fn bytes(&self) -> u64 {
        self.writer.written()
    }

    /// The log's time so far.
    pub fn elapsed(&self) -> Duration {
        self.writer.elapsed()
    }

    /// Whether anything arrived since the last commit.
    pub fn dirty(&self) -> bool {
        self.dirty
    }

    /// Makes everything so far durable, then records the point: returns it, for sudo.
    pub fn commit(&mut self) -> Result<Duration, IoLogError> {
        if !self.dirty {
            return Ok(self.committed);
        }
        self.writer.flush()?;
        let file = self.writer.get_ref();
        file.sync_data()?;
        let bytes = file.metadata()?.len();
        let point = self.writer.elapsed();
        self.write_state(point, bytes)?;
        if !self.has_state {
            // The new state file's name durable too.
            File::open(self.spool.dir())?.sync_all()?;
            self.has_state = true;
        }
        self.committed = point;
        self.dirty = false;
        Ok(point)
    }

    /// Records `point` and the recording's size there beside the recording, durably.
    fn write_state(&self, point: Duration, bytes: u64) -> io::Result<()> {
        let state = State {
            meta: self.meta.clone(),
            committed_nanos: u64::try_from(point.as_nanos()).unwrap_or(u64::MAX),
            committed_bytes: bytes,
            committed_at: jiff::Timestamp::now(),
        };
        let json = serde_json::to_vec(&state).map_err(io::Error::other)?;
        write_atomically(&self.spool.state(self.meta.id), &json)
    }

    /// Ends the recording with `marker`, makes it durable among the finished recordings and
    /// forgets the partial state. The hash covers the whole file (read back for a resumed
    /// log, which more than one writer wrote).
    pub fn finish(self, marker: &str) -> Result<Finished, IoLogError> {
        let IoLog {
            spool,
            mut writer,
            meta,
            resumed,
            has_state,
            ..
        } = self;
        writer.marker(marker)?;
        let (mut file, summary) = writer.finish()?;
        file.sync_data()?;
        let (sha256, bytes) = if resumed {
            file.seek(SeekFrom::Start(0))?;
            hash(&mut file)?
        } else {
            (summary.sha256, summary.bytes)
        };
        let ended_at = jiff::Timestamp::now();
        let dest = spool.recordings.join(format!("{}.cast", meta.id));
        std::fs::rename(spool.part(meta.id), &dest)?;
        File::open(&spool.recordings)?.sync_all()?;
        if has_state {
            std::fs::remove_file(spool.state(meta.id))?;
        }
        Ok(Finished {
            meta,
            ended_at,
            sha256,
            bytes,
        })
    }
}

fn hash(file: &mut File) -> io::Result<(String, u64)> {
    use sha2::Digest;
    let mut h = sha2::Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut total = 0u64;
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
        total += n as u64;
    }
    Ok((hex::encode(h.finalize()), total))
}

fn write_atomically(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let tmp = path.with_extension("json.tmp");
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(&tmp)?;
    f.write_all(bytes)?;
    f.sync_data()?;
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta() -> LogMeta {
        LogMeta {
            id: Uuid::now_v7(),
            host: "web1".into(),
            user: "alice".into(),
            run_as: "root".into(),
            argv: vec!["/usr/bin/id".into()],
            started_at: jiff::Timestamp::now(),
            grant: None,
        }
    }

    #[test]
    fn a_log_never_committed_is_cleared_unless_a_connection_still_writes_it() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool {
            recordings: dir.path().to_path_buf(),
        };
        let m = meta();
        let log = spool.create(m.clone(), &Header::new(80, 24)).unwrap();
        let later = std::time::SystemTime::now() + Duration::from_secs(60);
        assert_eq!(spool.remove_orphans(later, |id| id == m.id).unwrap(), 0);
        assert!(spool.part(m.id).exists());
        // Not resumable: nothing of it was acknowledged.
        assert!(matches!(
            spool.resume("web1", &m.id.to_string(), Duration::ZERO),
            Err(IoLogError::Unknown(_))
        ));
        drop(log);
        assert_eq!(spool.remove_orphans(later, |_| false).unwrap(), 1);
        assert!(!spool.part(m.id).exists());
    }

    #[test]
    fn a_resumed_log_keeps_what_was_committed_and_drops_what_came_after() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool {
            recordings: dir.path().to_path_buf(),
        };
        let m = meta();
        let mut log = spool.create(m.clone(), &Header::new(80, 24)).unwrap();
        log.advance(Duration::from_millis(100));
        log.output(b"one\n").unwrap();
        let point = log.commit().unwrap();
        assert_eq!(point, Duration::from_millis(100));
        log.advance(Duration::from_millis(50));
        log.output(b"lost\n").unwrap();
        log.writer.flush().unwrap();
        drop(log);

        let id = m.id.to_string();
        assert!(matches!(
            spool.resume("db1", &id, point),
            Err(IoLogError::OtherHost { .. })
        ));
        assert!(matches!(
            spool.resume("web1", &id, Duration::from_millis(150)),
            Err(IoLogError::NotACommitPoint { .. })
        ));
        let mut log = spool.resume("web1", &id, point).unwrap();
        log.advance(Duration::from_millis(50));
        log.output(b"two\n").unwrap();
        let done = log.finish("exit 0").unwrap();
        let file = std::fs::read(dir.path().join(format!("{id}.cast"))).unwrap();
        let cast = pedm_cast::parse(&file[..]).unwrap();
        assert_eq!(cast.output(), "one\ntwo\n");
        assert_eq!(cast.markers(), vec!["exit 0"]);
        assert_eq!(done.bytes, file.len() as u64);
        assert!(spool.pending().unwrap().is_empty());
        assert!(matches!(
            spool.resume("web1", &id, point),
            Err(IoLogError::Unknown(_))
        ));
    }
}
