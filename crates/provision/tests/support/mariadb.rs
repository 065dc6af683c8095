//! A throwaway MariaDB server for tests, from Debian's `mariadb-server` binaries, in a
//! temporary directory, listening only on 127.0.0.1 on a free port. As root the server runs
//! as the `mysql` system user (it drops privileges itself) in a directory that user owns.
//! Its admin account for pedm is `pedm_admin@127.0.0.1` (all privileges, with grant option);
//! `root@localhost` (no password, socket only) bootstraps it.
//!
//! A watcher process stops the server and removes its directory once the test process has
//! exited, however it exited (a server kept in a `static` is never dropped).

use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::Duration;

const MARIADBD: &str = "/usr/sbin/mariadbd";
const INSTALL_DB: &str = "/usr/bin/mariadb-install-db";
pub const ADMIN_PASSWORD: &str = "admin-pw-7Q2";

pub struct TestMariaDb {
    pub port: u16,
    as_mysql: bool,
    server: Mutex<Option<Child>>,
    _watcher: Child,
    dir: tempfile::TempDir,
}

impl Drop for TestMariaDb {
    fn drop(&mut self) {
        self.stop();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl TestMariaDb {
    /// A new server, or `None` (with the reason printed) when MariaDB is not installed.
    pub fn start_or_skip() -> Option<TestMariaDb> {
        if !Path::new(MARIADBD).exists() || !Path::new(INSTALL_DB).exists() {
            eprintln!(
                "skipped: MariaDB is not installed (scripts/install-test-deps installs mariadb-server)"
            );
            return None;
        }
        Some(Self::start())
    }

    fn start() -> TestMariaDb {
        let dir = tempfile::Builder::new()
            .prefix("pedm-maria-")
            .tempdir()
            .unwrap();
        let as_mysql = nix::unistd::geteuid().is_root();
        if as_mysql {
            let mysql = nix::unistd::User::from_name("mysql")
                .unwrap()
                .expect("the mysql system user (made by mariadb-server)");
            std::os::unix::fs::chown(
                dir.path(),
                Some(mysql.uid.as_raw()),
                Some(mysql.gid.as_raw()),
            )
            .unwrap();
        }
        let mut install = Command::new(INSTALL_DB);
        install
            .arg("--no-defaults")
            .arg(format!("--datadir={}", dir.path().join("data").display()))
            .args(["--auth-root-authentication-method=normal", "--skip-test-db"]);
        if as_mysql {
            install.arg("--user=mysql");
        }
        let out = install.stdin(Stdio::null()).output().unwrap();
        assert!(
            out.status.success(),
            "mariadb-install-db: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let watcher = Command::new("sh")
            .arg("-c")
            .arg(
                r#"while kill -0 "$1" 2>/dev/null; do sleep 1; done
                   [ -f "$2/pid" ] && kill -9 "$(cat "$2/pid")" 2>/dev/null
                   rm -rf "$2""#,
            )
            .arg("pedm-maria-watcher")
            .arg(std::process::id().to_string())
            .arg(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .unwrap();
        let db = TestMariaDb {
            port: free_port(),
            as_mysql,
            server: Mutex::new(None),
            _watcher: watcher,
            dir,
        };
        db.start_again();
        db.bootstrap();
        db
    }

    fn socket(&self) -> PathBuf {
        self.dir.path().join("sock")
    }

    /// Starts the server (after [`TestMariaDb::stop`]); returns once it accepts connections.
    pub fn start_again(&self) {
        let d = self.dir.path();
        let mut cmd = Command::new(MARIADBD);
        cmd.arg("--no-defaults")
            .arg(format!("--datadir={}", d.join("data").display()))
            .arg(format!("--port={}", self.port))
            .arg("--bind-address=127.0.0.1")
            .arg(format!("--socket={}", self.socket().display()))
            .arg(format!("--pid-file={}", d.join("pid").display()))
            .args([
                "--skip-name-resolve",
                "--innodb-buffer-pool-size=16M",
                "--innodb-flush-log-at-trx-commit=2",
                "--skip-log-bin",
            ]);
        if self.as_mysql {
            cmd.arg("--user=mysql");
        }
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let stderr = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            let mut log = String::new();
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if line.contains("ready for connections") {
                    let _ = tx.send(Ok(()));
                }
                log.push_str(&line);
                log.push('\n');
            }
            // Ended before it was ready: say why.
            let _ = tx.send(Err(log));
        });
        match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(Ok(())) => {}
            Ok(Err(log)) => panic!("mariadbd ended: {log}"),
            Err(_) => panic!("mariadbd did not become ready in 60 s"),
        }
        *self.server.lock().unwrap() = Some(child);
    }

    /// Stops the server at once (SIGKILL: a crashed target).
    pub fn stop(&self) {
        if let Some(mut c) = self.server.lock().unwrap_or_else(|e| e.into_inner()).take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Runs SQL as root over the socket with the real `mariadb` client.
    pub fn root_sql(&self, sql: &str) -> String {
        let out = Command::new("mariadb")
            .arg(format!("--socket={}", self.socket().display()))
            .args(["-u", "root", "--batch", "--skip-column-names", "-e", sql])
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{sql}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn bootstrap(&self) {
        // Only root@localhost (over the socket) stays: install-db also makes root for
        // 127.0.0.1, ::1 and the machine's name, which differs between machines.
        let others = self
            .root_sql("SELECT Host FROM mysql.user WHERE User = 'root' AND Host <> 'localhost'");
        for host in others.lines().filter(|h| !h.is_empty()) {
            self.root_sql(&format!("DROP USER 'root'@'{host}'"));
        }
        self.root_sql(&format!(
            "CREATE USER 'pedm_admin'@'127.0.0.1' IDENTIFIED BY '{ADMIN_PASSWORD}'; \
             GRANT ALL PRIVILEGES ON *.* TO 'pedm_admin'@'127.0.0.1' WITH GRANT OPTION;"
        ));
    }

    /// pedm's admin URL.
    pub fn url(&self) -> String {
        format!(
            "mysql://pedm_admin:{ADMIN_PASSWORD}@127.0.0.1:{}/",
            self.port
        )
    }

    /// A URL logging in as `user` with `password`.
    pub fn url_as(&self, user: &str, password: &str) -> String {
        format!("mysql://{user}:{password}@127.0.0.1:{}/", self.port)
    }
}
