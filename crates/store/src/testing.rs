//! A throwaway PostgreSQL cluster for tests (feature `testing`).
//!
//! ```no_run
//! # async fn t() {
//! use pedm_store::testing::TestPostgres;
//! let Some(pg) = TestPostgres::start_or_skip() else { return };
//! let url = pg.create_database("my_test").unwrap();
//! let store = pedm_store::PostgresStore::connect(&url).await.unwrap();
//! # }
//! ```
//!
//! The cluster runs from the distribution's binaries (`/usr/lib/postgresql/N/bin`, or
//! `pg_config --bindir`, or `$PEDM_PG_BINDIR`) in a temporary directory, listening only on
//! 127.0.0.1 on a free port with trust authentication, fsync off (committed data survives
//! [`TestPostgres::stop`], not a machine crash). PostgreSQL refuses to run as
//! root, so when the tests run as root the server runs as the `postgres` system user (through
//! `runuser`), in a directory that user owns.
//!
//! Dropping a `TestPostgres` stops the server and removes its directory. A cluster kept in a
//! `static` is never dropped, so each cluster also has a watcher process that does the same
//! once the test process has exited (however it exited).

use std::net::TcpListener;
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};

/// Why a test cluster is not there.
#[derive(Debug, Clone, thiserror::Error)]
pub enum TestPgError {
    /// The PostgreSQL server binaries are not installed: tests may skip.
    #[error("PostgreSQL server binaries not found: {0}")]
    Unavailable(String),
    /// They are installed but the cluster could not be started or used: tests must fail.
    #[error("test PostgreSQL: {0}")]
    Failed(String),
}

fn failed(msg: impl Into<String>) -> TestPgError {
    TestPgError::Failed(msg.into())
}

/// The default database, created at start.
const DEFAULT_DB: &str = "pedm";

pub struct TestPostgres {
    bindir: PathBuf,
    port: u16,
    /// Run server commands through `runuser -u postgres` (we are root).
    as_postgres: bool,
    running: Mutex<bool>,
    watcher: Mutex<Option<Child>>,
    /// fsync on (benchmarks); tests run with it off.
    durable: bool,
    /// Addresses listened on besides 127.0.0.1 (see [`TestPostgres::listen_also`]).
    extra_listen: Mutex<Vec<String>>,
    // Last, so it is removed after the server has stopped.
    dir: tempfile::TempDir,
}

impl std::fmt::Debug for TestPostgres {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestPostgres")
            .field("port", &self.port)
            .field("dir", &self.dir.path())
            .finish_non_exhaustive()
    }
}

impl TestPostgres {
    /// Creates and starts a cluster with a database `pedm` (see [`TestPostgres::url`]).
    pub fn start() -> Result<TestPostgres, TestPgError> {
        Self::start_with(false)
    }

    /// [`TestPostgres::start`] with fsync and full-page writes on, as a production server
    /// runs: for benchmarks.
    pub fn start_durable() -> Result<TestPostgres, TestPgError> {
        Self::start_with(true)
    }

    fn start_with(durable: bool) -> Result<TestPostgres, TestPgError> {
        let bindir = find_bindir()?;
        let dir = tempfile::Builder::new()
            .prefix("pedm-pg-")
            .tempdir()
            .map_err(|e| failed(format!("creating a temporary directory: {e}")))?;
        // The directory is ours, so its owner is our effective uid.
        let uid = std::fs::metadata(dir.path())
            .map_err(|e| failed(format!("{}: {e}", dir.path().display())))?
            .uid();
        let as_postgres = uid == 0;
        if as_postgres {
            if !Path::new("/usr/sbin/runuser").exists() && which("runuser").is_none() {
                return Err(failed(
                    "running as root, and PostgreSQL refuses to run as root, but `runuser` (to \
                     run it as the postgres user) is not installed",
                ));
            }
            run(Command::new("id").args(["-u", "postgres"])).map_err(|e| {
                failed(format!(
                    "running as root, and PostgreSQL refuses to run as root, but there is no \
                     `postgres` system user to run it as ({e})"
                ))
            })?;
            run(Command::new("chown").arg("postgres:").arg(dir.path()))?;
        }

        let mut pg = TestPostgres {
            bindir,
            port: 0,
            as_postgres,
            running: Mutex::new(false),
            watcher: Mutex::new(None),
            durable,
            extra_listen: Mutex::new(Vec::new()),
            dir,
        };
        run(pg
            .server_cmd("initdb")
            .arg("-D")
            .arg(pg.data_dir())
            .args(["-U", "postgres", "-A", "trust", "-E", "UTF8", "--locale=C"])
            .args(["--no-sync", "--no-instructions"]))?;
        std::fs::create_dir_all(pg.socket_dir())
            .map_err(|e| failed(format!("creating the socket directory: {e}")))?;
        if as_postgres {
            run(Command::new("chown").arg("postgres:").arg(pg.socket_dir()))?;
        }
        pg.spawn_watcher()?;

        // The free port we pick can be taken before the server binds it: retry a few times.
        let mut last = None;
        for _ in 0..5 {
            pg.port = free_port()?;
            match pg.start_again() {
                Ok(()) => {
                    last = None;
                    break;
                }
                Err(e) => last = Some(e),
            }
        }
        if let Some(e) = last {
            return Err(e);
        }
        pg.create_database(DEFAULT_DB)?;
        Ok(pg)
    }

    /// [`TestPostgres::start`], or `None` after printing `SKIP: <reason>` when PostgreSQL is
    /// not installed. Panics if it is installed but fails to start.
    pub fn start_or_skip() -> Option<TestPostgres> {
        match Self::start() {
            Ok(pg) => Some(pg),
            Err(e @ TestPgError::Unavailable(_)) => {
                println!("SKIP: {e}");
                None
            }
            Err(e) => panic!("{e}"),
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `postgres://postgres@127.0.0.1:PORT/pedm`
    pub fn url(&self) -> String {
        self.url_for(DEFAULT_DB)
    }

    /// The URL of database `db` in this cluster.
    pub fn url_for(&self, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{db}", self.port)
    }

    /// Creates an empty database (for isolation between tests) and returns its URL. Names are
    /// plain identifiers: ASCII letters, digits and `_`, at most 63 bytes.
    pub fn create_database(&self, name: &str) -> Result<String, TestPgError> {
        let plain = !name.is_empty()
            && name.len() <= 63
            && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
        if !plain {
            return Err(failed(format!("{name:?} is not a plain database name")));
        }
        run(Command::new(self.bindir.join("createdb"))
            .args(["-h", "127.0.0.1", "-U", "postgres", "-p"])
            .arg(self.port.to_string())
            .arg(name))?;
        Ok(self.url_for(name))
    }

    /// A database with a fresh, unique name derived from `prefix`.
    pub fn fresh_database(&self, prefix: &str) -> Result<String, TestPgError> {
        static N: AtomicU32 = AtomicU32::new(0);
        let prefix: String = prefix
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() {
                    c.to_ascii_lowercase()
                } else {
                    '_'
                }
            })
            .take(40)
            .collect();
        let n = N.fetch_add(1, Ordering::Relaxed);
        self.create_database(&format!("{prefix}_{}_{n}", std::process::id()))
    }

    /// Stops the server at once (`pg_ctl stop -m immediate`), as a crash would. The data stays;
    /// [`TestPostgres::start_again`] brings it back on the same port.
    pub fn stop(&self) -> Result<(), TestPgError> {
        let mut running = self.running.lock().unwrap_or_else(|e| e.into_inner());
        if *running {
            run(self
                .server_cmd("pg_ctl")
                .arg("-D")
                .arg(self.data_dir())
                .args(["-m", "immediate", "-w", "stop"]))?;
            *running = false;
        }
        Ok(())
    }

    /// Also listens on `addr` (an address of this machine, e.g. one end of a veth pair a test
    /// made) and trusts clients from `cidr`: for tests whose pedmd reaches the database over
    /// a link they can cut. Restarts the server.
    pub fn listen_also(&self, addr: &str, cidr: &str) -> Result<(), TestPgError> {
        use std::io::Write;
        let hba = self.data_dir().join("pg_hba.conf");
        std::fs::OpenOptions::new()
            .append(true)
            .open(&hba)
            .and_then(|mut f| writeln!(f, "host all all {cidr} trust"))
            .map_err(|e| failed(format!("{}: {e}", hba.display())))?;
        self.extra_listen
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(addr.to_string());
        self.stop()?;
        self.start_again()
    }

    /// Starts the stopped server again, on the same port, with the same data.
    pub fn start_again(&self) -> Result<(), TestPgError> {
        let mut running = self.running.lock().unwrap_or_else(|e| e.into_inner());
        if *running {
            return Ok(());
        }
        // fsync off for speed: the OS keeps what was written when the server is killed, so an
        // immediate stop still loses no committed transaction (synchronous_commit stays on).
        let fsync = if self.durable {
            ""
        } else {
            "-c fsync=off -c full_page_writes=off "
        };
        let mut listen = vec!["127.0.0.1".to_string()];
        listen.extend(
            self.extra_listen
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .iter()
                .cloned(),
        );
        let opts = format!(
            "-c listen_addresses={} -c port={} -c unix_socket_directories={} \
             {fsync}-c max_connections=300",
            listen.join(","),
            self.port,
            self.socket_dir().display()
        );
        let log = self.dir.path().join("postgres.log");
        let started = run(self
            .server_cmd("pg_ctl")
            .arg("-D")
            .arg(self.data_dir())
            .arg("-l")
            .arg(&log)
            .args(["-w", "-t", "60", "-o", &opts, "start"]));
        if let Err(e) = started {
            let tail = std::fs::read_to_string(&log).unwrap_or_default();
            let tail: Vec<&str> = tail.lines().rev().take(15).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            return Err(failed(format!("{e}\nserver log:\n{}", tail.join("\n"))));
        }
        *running = true;
        Ok(())
    }

    pub fn is_running(&self) -> bool {
        *self.running.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn socket_dir(&self) -> PathBuf {
        self.dir.path().join("sock")
    }

    /// A server binary, run as the postgres user when we are root.
    fn server_cmd(&self, bin: &str) -> Command {
        let path = self.bindir.join(bin);
        let mut c = if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(path);
            c
        } else {
            Command::new(path)
        };
        // The postgres user may not be allowed into our working directory.
        c.current_dir(self.dir.path());
        c
    }

    /// A detached shell that, once this process is gone, stops the server and removes the
    /// directory. Its own process group, so a Ctrl-C aimed at the tests does not end it first.
    fn spawn_watcher(&self) -> Result<(), TestPgError> {
        let script = r#"
            while kill -0 "$1" 2>/dev/null; do sleep 1; done
            if [ "$4" = 1 ]; then
                runuser -u postgres -- "$3/pg_ctl" -D "$2/data" -m immediate -w stop
            else
                "$3/pg_ctl" -D "$2/data" -m immediate -w stop
            fi
            rm -rf "$2"
        "#;
        let child = Command::new("sh")
            .arg("-c")
            .arg(script)
            .arg("pedm-pg-watcher")
            .arg(std::process::id().to_string())
            .arg(self.dir.path())
            .arg(&self.bindir)
            .arg(if self.as_postgres { "1" } else { "0" })
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .map_err(|e| failed(format!("starting the cleanup watcher: {e}")))?;
        *self.watcher.lock().unwrap_or_else(|e| e.into_inner()) = Some(child);
        Ok(())
    }
}

impl Drop for TestPostgres {
    fn drop(&mut self) {
        let _ = self.stop();
        if let Some(mut w) = self
            .watcher
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        {
            let _ = w.kill();
            let _ = w.wait();
        }
        // `dir` (a TempDir) is removed when the fields drop.
    }
}

fn find_bindir() -> Result<PathBuf, TestPgError> {
    let has_server = |d: &Path| d.join("initdb").is_file() && d.join("pg_ctl").is_file();
    if let Some(d) = std::env::var_os("PEDM_PG_BINDIR") {
        let d = PathBuf::from(d);
        return if has_server(&d) {
            Ok(d)
        } else {
            Err(TestPgError::Unavailable(format!(
                "PEDM_PG_BINDIR={} has no initdb and pg_ctl",
                d.display()
            )))
        };
    }
    // Debian layout, newest major version first.
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let v = e.file_name().to_str()?.parse::<u32>().ok()?;
            Some((v, e.path().join("bin")))
        })
        .filter(|(_, d)| has_server(d))
        .collect();
    versions.sort();
    if let Some((_, d)) = versions.pop() {
        return Ok(d);
    }
    if let Ok(out) = Command::new("pg_config").arg("--bindir").output()
        && out.status.success()
    {
        let d = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        if has_server(&d) {
            return Ok(d);
        }
    }
    Err(TestPgError::Unavailable(
        "no initdb/pg_ctl in /usr/lib/postgresql/*/bin or `pg_config --bindir` \
         (install postgresql, or set PEDM_PG_BINDIR)"
            .into(),
    ))
}

fn which(bin: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|d| Path::new(d).join(bin))
        .find(|p| p.is_file())
}

fn free_port() -> Result<u16, TestPgError> {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| failed(format!("finding a free port: {e}")))
}

/// Runs a command to completion; a non-zero exit is an error carrying its output.
fn run(cmd: &mut Command) -> Result<String, TestPgError> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|e| failed(format!("running {:?}: {e}", cmd.get_program())))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        let args: Vec<_> = cmd.get_args().map(|a| a.to_string_lossy()).collect();
        Err(failed(format!(
            "`{} {}` failed ({}): {}{}",
            cmd.get_program().to_string_lossy(),
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim(),
            String::from_utf8_lossy(&out.stdout).trim()
        )))
    }
}
