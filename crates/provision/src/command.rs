//! An admin-configured executable: how pedm reaches clouds, Kubernetes or any SaaS through
//! their own command-line tools.
//!
//! The program (an absolute path, run directly, never through a shell) is called as
//! `PROGRAM [ARGS…] ACTION` with ACTION one of `grant`, `revoke`, `observe`, `discover`, and
//! `remove_standing` (drift removal, only when the target has `remove_drift = true`).
//! Standard input carries the [`GrantSpec`] as JSON (for `discover`: `{"target": NAME}`; for
//! `remove_standing`: `{"target", "account", "privilege", "source"}`, a privilege as
//! `discover` reported it).
//! The working directory is `/`. The environment is cleared except:
//!
//! | variable | value |
//! |---|---|
//! | `PATH` | `/usr/bin:/bin` |
//! | `PEDM_ACTION` | the action |
//! | `PEDM_TARGET` | the target name |
//! | `PEDM_GRANT_ID` | the grant id (not for `discover`) |
//! | anything in the configuration's `env` table | as configured |
//!
//! The command runs in its own process group; when it outlives `timeout` the whole group is
//! killed (SIGKILL) and the step is [`ProvisionError::Unreachable`]. Its standard output and
//! error are captured, at most [`MAX_CAPTURE`] bytes each (the rest is read and dropped).
//!
//! Exit status 0 is success; 75 (`EX_TEMPFAIL`) is [`ProvisionError::Unreachable`] (retry
//! later); death by a signal is `Unreachable` too; any other status is
//! [`ProvisionError::Refused`], carrying the captured output. What standard output means:
//!
//! - `grant`: optional JSON object `{"secret": "...", "detail": "..."}` (the secret is handed
//!   to the requester once); any other output becomes the detail.
//! - `revoke`: ignored.
//! - `observe`: `{"present": true|false, "detail": "..."}` (detail optional).
//! - `discover`: a JSON array of `{"account": "...", "privilege": "...", "source": "..."}`.
//! - `remove_standing`: any output becomes the detail. Removing what is gone must succeed.
//!
//! Role settings are passed through in the JSON (`settings`) for the program to read.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};

use crate::config::ConfigError;
use crate::{GrantOutcome, GrantSpec, Observed, ProvisionError, Provisioner, StandingPrivilege};

/// Most bytes of standard output, and of standard error, kept from one run.
pub const MAX_CAPTURE: usize = 64 * 1024;

/// Exit status meaning "temporary failure, try again later" (sysexits.h).
const EX_TEMPFAIL: i32 = 75;

/// `kind = "command"` in the server configuration.
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommandConfig {
    /// Absolute path of the executable.
    pub program: PathBuf,
    /// Arguments before the action.
    #[serde(default)]
    pub args: Vec<String>,
    /// Longest one run may take (`"60s"` or seconds).
    #[serde(default = "default_timeout", with = "pedm_notify::duration")]
    pub timeout: Duration,
    /// Extra environment variables (names `[A-Z_][A-Z0-9_]*`, not `PATH` or `PEDM_*`).
    /// Values are not shown by `Debug`: they may be credentials.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
}

fn default_timeout() -> Duration {
    Duration::from_secs(60)
}

impl CommandConfig {
    pub fn new(program: impl Into<PathBuf>) -> Self {
        CommandConfig {
            program: program.into(),
            args: vec![],
            timeout: default_timeout(),
            env: BTreeMap::new(),
        }
    }
}

impl std::fmt::Debug for CommandConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CommandConfig")
            .field("program", &self.program)
            .field("args", &self.args)
            .field("timeout", &self.timeout)
            .field("env", &self.env.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// Runs an admin-configured executable for each step.
#[derive(Debug, Clone)]
pub struct CommandProvisioner {
    target: String,
    config: CommandConfig,
}

struct Captured {
    stdout: String,
    stderr: String,
}

impl Captured {
    /// Both streams for a message, trimmed.
    fn describe(&self) -> String {
        let mut s = String::new();
        if !self.stdout.trim().is_empty() {
            s.push_str(&format!("stdout: {}", self.stdout.trim()));
        }
        if !self.stderr.trim().is_empty() {
            if !s.is_empty() {
                s.push('\n');
            }
            s.push_str(&format!("stderr: {}", self.stderr.trim()));
        }
        s
    }
}

/// Reads everything, keeping the first `max` bytes.
async fn read_bounded<R: AsyncRead + Unpin>(mut r: R, max: usize) -> String {
    let mut kept = Vec::new();
    let mut buf = [0u8; 8192];
    let mut dropped = 0usize;
    loop {
        match r.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                let room = max.saturating_sub(kept.len());
                kept.extend_from_slice(&buf[..n.min(room)]);
                dropped += n.saturating_sub(room);
            }
        }
    }
    let mut s = String::from_utf8_lossy(&kept).into_owned();
    if dropped > 0 {
        s.push_str(&format!("\n… [{dropped} more bytes dropped]"));
    }
    s
}

impl CommandProvisioner {
    pub fn new(target: &str, config: CommandConfig) -> Result<Self, ConfigError> {
        if !config.program.is_absolute() {
            return Err(ConfigError(format!(
                "program {:?} must be an absolute path",
                config.program
            )));
        }
        if config.timeout.is_zero() {
            return Err(ConfigError("timeout must be greater than zero".into()));
        }
        for k in config.env.keys() {
            let plain = k
                .bytes()
                .next()
                .is_some_and(|c| c.is_ascii_uppercase() || c == b'_')
                && k.bytes()
                    .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == b'_');
            if !plain || k == "PATH" || k.starts_with("PEDM_") {
                return Err(ConfigError(format!(
                    "env {k:?}: names must be [A-Z_][A-Z0-9_]*, and PATH and PEDM_* are set by pedm"
                )));
            }
        }
        Ok(CommandProvisioner {
            target: target.to_string(),
            config,
        })
    }

    async fn run(
        &self,
        action: &str,
        input: &serde_json::Value,
        grant_id: Option<uuid::Uuid>,
    ) -> Result<Captured, ProvisionError> {
        let program = &self.config.program;
        let mut cmd = tokio::process::Command::new(program);
        cmd.args(&self.config.args)
            .arg(action)
            .env_clear()
            .env("PATH", "/usr/bin:/bin")
            .env("PEDM_ACTION", action)
            .env("PEDM_TARGET", &self.target)
            .envs(&self.config.env)
            .current_dir("/")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true);
        if let Some(id) = grant_id {
            cmd.env("PEDM_GRANT_ID", id.to_string());
        }
        let mut child = spawn_retrying_busy(&mut cmd)
            .await
            .map_err(|e| start_error(&format!("starting {}", program.display()), e))?;
        let pid = child.id();
        let input = serde_json::to_vec(input).expect("JSON values serialize");
        let mut stdin = child.stdin.take();
        let stdout = child.stdout.take();
        let stderr = child.stderr.take();
        let work = async {
            let write = async {
                if let Some(mut w) = stdin.take() {
                    // A program that does not read its input is fine.
                    let _ = w.write_all(&input).await;
                    let _ = w.shutdown().await;
                }
            };
            let out = async {
                match stdout {
                    Some(r) => read_bounded(r, MAX_CAPTURE).await,
                    None => String::new(),
                }
            };
            let err = async {
                match stderr {
                    Some(r) => read_bounded(r, MAX_CAPTURE).await,
                    None => String::new(),
                }
            };
            let ((), stdout, stderr, status) = tokio::join!(write, out, err, child.wait());
            (stdout, stderr, status)
        };
        let (stdout, stderr, status) = match tokio::time::timeout(self.config.timeout, work).await {
            Ok(done) => done,
            Err(_) => {
                // The leader is not reaped yet, so its pid (= the group id) cannot be reused.
                if let Some(pid) = pid.and_then(|p| i32::try_from(p).ok()) {
                    let _ = nix::sys::signal::killpg(
                        nix::unistd::Pid::from_raw(pid),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                }
                let _ = child.wait().await;
                tracing::warn!(target = %self.target, action, "provisioning command timed out; killed");
                return Err(ProvisionError::unreachable(format!(
                    "{} {action} timed out after {:?}; its process group was killed",
                    program.display(),
                    self.config.timeout
                )));
            }
        };
        let status = status.map_err(|e| {
            ProvisionError::unreachable(format!("waiting for {}: {e}", program.display()))
        })?;
        let mut captured = Captured { stdout, stderr };
        if action == "grant" && status.code() != Some(0) {
            // A failed grant may have printed the secret before failing: never echo it.
            captured.stdout = redacted(&captured.stdout);
        }
        match status.code() {
            Some(0) => Ok(captured),
            Some(EX_TEMPFAIL) => Err(ProvisionError::unreachable(format!(
                "{} {action} exited with 75 (temporary failure)\n{}",
                program.display(),
                captured.describe()
            ))),
            Some(code) => Err(ProvisionError::refused(format!(
                "{} {action} exited with {code}\n{}",
                program.display(),
                captured.describe()
            ))),
            None => Err(ProvisionError::unreachable(format!(
                "{} {action} was killed by a signal ({status})\n{}",
                program.display(),
                captured.describe()
            ))),
        }
    }

    fn spec_json(g: &GrantSpec) -> serde_json::Value {
        serde_json::to_value(g).expect("GrantSpec serializes")
    }
}

/// What a message says about output that may hold a secret: its size, never its content.
fn redacted(output: &str) -> String {
    if output.trim().is_empty() {
        String::new()
    } else {
        format!(
            "[{} bytes of output not shown: they may hold a secret]",
            output.len()
        )
    }
}

/// What is wrong with JSON, without quoting any of it.
fn json_problem(e: &serde_json::Error) -> &'static str {
    match e.classify() {
        serde_json::error::Category::Io => "unreadable",
        serde_json::error::Category::Syntax => "not JSON",
        serde_json::error::Category::Data => "not of the expected shape",
        serde_json::error::Category::Eof => "cut short",
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GrantReply {
    secret: Option<String>,
    detail: Option<String>,
}

#[async_trait]
impl Provisioner for CommandProvisioner {
    fn kind(&self) -> &'static str {
        "command"
    }

    async fn grant(&self, g: &GrantSpec) -> Result<GrantOutcome, ProvisionError> {
        let out = self
            .run("grant", &Self::spec_json(g), Some(g.grant_id))
            .await?;
        // Never echo stdout of `grant` (it may hold the secret): empty, or one JSON object.
        let trimmed = out.stdout.trim();
        if trimmed.is_empty() {
            return Ok(GrantOutcome {
                secret: None,
                detail: format!("{} grant succeeded", self.config.program.display()),
            });
        }
        match serde_json::from_str::<GrantReply>(trimmed) {
            Ok(reply) => Ok(GrantOutcome {
                secret: reply.secret.filter(|s| !s.is_empty()),
                detail: reply.detail.unwrap_or_else(|| {
                    format!("{} grant succeeded", self.config.program.display())
                }),
            }),
            Err(e) => Err(ProvisionError::refused(format!(
                "{} grant printed output that is not one JSON object {{\"secret\", \"detail\"}} \
                 ({}; at line {} column {}): {}",
                self.config.program.display(),
                json_problem(&e),
                e.line(),
                e.column(),
                redacted(trimmed)
            ))),
        }
    }

    async fn revoke(&self, g: &GrantSpec) -> Result<(), ProvisionError> {
        self.run("revoke", &Self::spec_json(g), Some(g.grant_id))
            .await
            .map(|_| ())
    }

    async fn observe(&self, g: &GrantSpec) -> Result<Observed, ProvisionError> {
        let out = self
            .run("observe", &Self::spec_json(g), Some(g.grant_id))
            .await?;
        serde_json::from_str::<Observed>(out.stdout.trim()).map_err(|e| {
            ProvisionError::refused(format!(
                "{} observe: expected {{\"present\": true|false}} on stdout ({e})\n{}",
                self.config.program.display(),
                out.describe()
            ))
        })
    }

    fn removable(&self, _: &StandingPrivilege) -> Result<(), String> {
        Ok(())
    }

    async fn remove_standing(&self, p: &StandingPrivilege) -> Result<String, ProvisionError> {
        let input = serde_json::json!({
            "target": self.target, "account": p.account, "privilege": p.privilege,
            "source": p.source,
        });
        let out = self.run("remove_standing", &input, None).await?;
        let detail = out.describe();
        Ok(if detail.is_empty() {
            format!(
                "{} removed {} from {}",
                self.config.program.display(),
                p.privilege,
                p.account
            )
        } else {
            detail
        })
    }

    async fn discover(&self) -> Result<Vec<StandingPrivilege>, ProvisionError> {
        let input = serde_json::json!({ "target": self.target });
        let out = self.run("discover", &input, None).await?;
        serde_json::from_str::<Vec<StandingPrivilege>>(out.stdout.trim()).map_err(|e| {
            ProvisionError::refused(format!(
                "{} discover: expected a JSON array of {{account, privilege, source}} ({e})\n{}",
                self.config.program.display(),
                out.describe()
            ))
        })
    }
}

/// A program that could not be started: missing or not executable is the configuration's
/// fault (`Invalid`); anything else may pass (`Unreachable`).
pub(crate) fn start_error(what: &str, e: std::io::Error) -> ProvisionError {
    let msg = format!("{what}: {e}");
    match e.kind() {
        std::io::ErrorKind::NotFound | std::io::ErrorKind::PermissionDenied => {
            ProvisionError::Invalid(msg)
        }
        _ => ProvisionError::Unreachable(msg),
    }
}

/// Starts `cmd`, trying again for a moment while the program is open for writing elsewhere
/// (ETXTBSY): a deploy tool that has just written the script, or a fork in another thread
/// that briefly holds the writer's descriptor. Any other error is returned at once.
pub(crate) async fn spawn_retrying_busy(
    cmd: &mut tokio::process::Command,
) -> std::io::Result<tokio::process::Child> {
    const ETXTBSY: i32 = 26;
    let mut pause = Duration::from_millis(5);
    for _ in 0..6 {
        match cmd.spawn() {
            Err(e) if e.raw_os_error() == Some(ETXTBSY) => {
                tokio::time::sleep(pause).await;
                pause *= 2;
            }
            other => return other,
        }
    }
    cmd.spawn()
}
