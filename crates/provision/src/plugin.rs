//! External provisioners: a program pedmd starts and speaks to over stdio with JSON lines,
//! the versioned protocol in `docs/provisioner-protocol.md` (JSON Schemas in
//! `docs/schemas/provisioner/`). Teams add a SaaS or in-house target without forking pedm.
//!
//! ```toml
//! [provision.targets.crm]
//! kind = "plugin"
//! program = "/usr/local/lib/pedm/crm-provisioner"
//! args = ["--tenant", "acme"]
//! env = { CRM_API = "https://crm.internal" }
//! timeout = "30s"
//! ```
//!
//! The program is started once (environment cleared but for `PATH` and `env`, working
//! directory `/`, its own process group) and kept: pedmd sends `hello`, the program answers
//! with the protocol version and the operations it supports (`grant`, `revoke`, `verify`,
//! `discover`, `remove_standing`); then one request at a time, each answered by a response
//! with the same `id`. A request carries the grant id as its idempotency key: the program
//! must make a retried `grant` or `revoke` safe. Errors say whether to retry
//! (`retryable`/`refused`/`invalid`). A program that exits, writes something that is not a
//! response to the request in flight, or does not answer within `timeout` is killed (the
//! call is retryable) and started again for the next call. What it writes on stderr is
//! logged (cut to 4 KiB per line); it must never print secrets there.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, ChildStdout};

use crate::config::ConfigError;
use crate::{GrantOutcome, GrantSpec, Observed, ProvisionError, Provisioner, StandingPrivilege};

/// The protocol version this side speaks.
pub const PROTOCOL_VERSION: u64 = 1;
/// Longest line either side may send.
pub const MAX_LINE: usize = 1 << 20;

/// `kind = "plugin"` in the server configuration.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PluginConfig {
    /// Absolute path of the program.
    pub program: PathBuf,
    #[serde(default)]
    pub args: Vec<String>,
    /// Environment for the program (everything else is cleared but `PATH`). Values may be
    /// credentials: never logged.
    #[serde(default, skip_serializing)]
    pub env: BTreeMap<String, String>,
    /// Longest a start-up handshake or one call may take (`"30s"` or seconds).
    #[serde(default = "default_timeout", with = "pedm_notify::duration")]
    pub timeout: Duration,
}

fn default_timeout() -> Duration {
    Duration::from_secs(30)
}

impl PluginConfig {
    pub fn new(program: impl Into<PathBuf>) -> Self {
        PluginConfig {
            program: program.into(),
            args: vec![],
            env: BTreeMap::new(),
            timeout: default_timeout(),
        }
    }
}

/// The operations a program may declare.
pub const OPERATIONS: [&str; 5] = ["grant", "revoke", "verify", "discover", "remove_standing"];

/// What the program said about itself in its `hello`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginHello {
    pub name: String,
    pub capabilities: Vec<String>,
}

struct Session {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    hello: PluginHello,
    next_id: u64,
}

/// A target provisioned by an external program speaking the plugin protocol.
pub struct PluginProvisioner {
    target: String,
    config: PluginConfig,
    session: tokio::sync::Mutex<Option<Session>>,
    /// The last `hello`, for the questions answered without the program.
    hello: std::sync::Mutex<Option<PluginHello>>,
}

impl std::fmt::Debug for PluginProvisioner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PluginProvisioner")
            .field("target", &self.target)
            .field("program", &self.config.program)
            .finish_non_exhaustive()
    }
}

/// Reads one line of at most [`MAX_LINE`] bytes; `None` at end of file.
async fn read_line(r: &mut BufReader<ChildStdout>) -> std::io::Result<Option<String>> {
    let mut buf = Vec::new();
    loop {
        let chunk = r.fill_buf().await?;
        if chunk.is_empty() {
            return Ok((!buf.is_empty()).then(|| String::from_utf8_lossy(&buf).into_owned()));
        }
        let (take, done) = match chunk.iter().position(|&b| b == b'\n') {
            Some(i) => (i + 1, true),
            None => (chunk.len(), false),
        };
        buf.extend_from_slice(&chunk[..take]);
        r.consume(take);
        if buf.len() > MAX_LINE {
            return Err(std::io::Error::other(format!(
                "a line longer than {MAX_LINE} bytes"
            )));
        }
        if done {
            buf.pop();
            return String::from_utf8(buf)
                .map(Some)
                .map_err(|_| std::io::Error::other("a line that is not UTF-8"));
        }
    }
}

impl PluginProvisioner {
    /// Checks the configuration; starts nothing yet.
    pub fn new(target: &str, config: PluginConfig) -> Result<Self, ConfigError> {
        if !config.program.is_absolute() {
            return Err(ConfigError(format!(
                "plugin program {} must be an absolute path",
                config.program.display()
            )));
        }
        if config.timeout.is_zero() {
            return Err(ConfigError("timeout must be greater than zero".into()));
        }
        if let Some(k) = config
            .env
            .keys()
            .find(|k| k.is_empty() || k.contains(['=', '\0']))
        {
            return Err(ConfigError(format!("env: {k:?} is not a variable name")));
        }
        Ok(PluginProvisioner {
            target: target.to_string(),
            config,
            session: tokio::sync::Mutex::new(None),
            hello: std::sync::Mutex::new(None),
        })
    }

    /// The program's `hello`, once it has been started.
    pub fn hello(&self) -> Option<PluginHello> {
        self.hello.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn declared(&self, op: &str) -> Option<bool> {
        self.hello().map(|h| h.capabilities.iter().any(|c| c == op))
    }

    async fn start(&self) -> Result<Session, ProvisionError> {
        let program = &self.config.program;
        let mut cmd = tokio::process::Command::new(program);
        cmd.args(&self.config.args)
            .env_clear()
            .env("PATH", "/usr/bin:/bin")
            .envs(&self.config.env)
            .current_dir("/")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true);
        let mut child = crate::command::spawn_retrying_busy(&mut cmd)
            .await
            .map_err(|e| {
                crate::command::start_error(&format!("starting plugin {}", program.display()), e)
            })?;
        let (Some(stdin), Some(stdout), Some(stderr)) =
            (child.stdin.take(), child.stdout.take(), child.stderr.take())
        else {
            return Err(ProvisionError::unreachable("plugin started without pipes"));
        };
        let target = self.target.clone();
        tokio::spawn(async move {
            let mut lines = BufReader::new(stderr).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                tracing::info!(%target, plugin_stderr = %crate::truncate(&line, 4096), "plugin said");
            }
        });
        let mut s = Session {
            child,
            stdin,
            stdout: BufReader::new(stdout),
            hello: PluginHello {
                name: String::new(),
                capabilities: vec![],
            },
            next_id: 1,
        };
        let hello = json!({
            "type": "hello", "pedm_provisioner": PROTOCOL_VERSION, "target": self.target,
        });
        let answer = tokio::time::timeout(self.config.timeout, async {
            send(&mut s.stdin, &hello).await?;
            read_line(&mut s.stdout).await
        })
        .await
        .map_err(|_| ProvisionError::unreachable("the plugin did not say hello in time"))?
        .map_err(|e| ProvisionError::unreachable(format!("plugin hello: {e}")))?
        .ok_or_else(|| ProvisionError::unreachable("the plugin exited before saying hello"))?;
        s.hello = parse_hello(&answer)?;
        *self.hello.lock().unwrap_or_else(|e| e.into_inner()) = Some(s.hello.clone());
        tracing::info!(target = %self.target, plugin = %s.hello.name,
            capabilities = ?s.hello.capabilities, "provisioner plugin started");
        Ok(s)
    }

    /// One request and its response (`result` on success).
    async fn call(
        &self,
        op: &str,
        mut fields: serde_json::Map<String, Value>,
    ) -> Result<Value, ProvisionError> {
        if self.declared(op) == Some(false) {
            return Err(not_declared(op));
        }
        let mut guard = self.session.lock().await;
        if guard.is_none() {
            *guard = Some(self.start().await?);
        }
        let Some(s) = guard.as_mut() else {
            return Err(ProvisionError::unreachable("plugin session missing"));
        };
        if !s.hello.capabilities.iter().any(|c| c == op) {
            return Err(not_declared(op));
        }
        let id = s.next_id;
        s.next_id += 1;
        fields.insert("type".into(), json!("request"));
        fields.insert("id".into(), json!(id));
        fields.insert("op".into(), json!(op));
        let request = Value::Object(fields);
        let exchange = tokio::time::timeout(self.config.timeout, async {
            send(&mut s.stdin, &request).await?;
            read_line(&mut s.stdout).await
        })
        .await;
        let outcome = match exchange {
            Err(_) => Err(format!(
                "no answer to {op} within {}s",
                self.config.timeout.as_secs()
            )),
            Ok(Err(e)) => Err(format!("talking to the plugin during {op}: {e}")),
            Ok(Ok(None)) => Err(format!("the plugin exited during {op}")),
            Ok(Ok(Some(line))) => parse_response(&line, id).map_err(|e| {
                format!(
                    "the plugin broke the protocol during {op}: {e} (in {})",
                    crate::truncate(&line, 200)
                )
            }),
        };
        match outcome {
            Ok(answer) => answer,
            Err(why) => {
                // The program is in an unknown state: end it, start afresh next time.
                if let Some(mut dead) = guard.take() {
                    if let Some(pid) = dead.child.id().and_then(|p| i32::try_from(p).ok()) {
                        let _ = nix::sys::signal::killpg(
                            nix::unistd::Pid::from_raw(pid),
                            nix::sys::signal::Signal::SIGKILL,
                        );
                    }
                    let _ = dead.child.start_kill();
                    let _ = dead.child.wait().await;
                }
                Err(ProvisionError::Unreachable(why))
            }
        }
    }
}

fn not_declared(op: &str) -> ProvisionError {
    ProvisionError::invalid(format!("the plugin does not declare {op}"))
}

async fn send(stdin: &mut ChildStdin, v: &Value) -> std::io::Result<()> {
    let mut line = serde_json::to_vec(v).map_err(std::io::Error::other)?;
    line.push(b'\n');
    stdin.write_all(&line).await?;
    stdin.flush().await
}

fn parse_hello(line: &str) -> Result<PluginHello, ProvisionError> {
    let bad = |why: String| ProvisionError::Unreachable(format!("plugin hello: {why}"));
    let v: Value = serde_json::from_str(line).map_err(|e| bad(format!("not JSON: {e}")))?;
    if v["type"] != "hello" {
        return Err(bad("the first line is not a hello".into()));
    }
    match v["protocol"].as_u64() {
        Some(PROTOCOL_VERSION) => {}
        other => {
            return Err(ProvisionError::Invalid(format!(
                "the plugin speaks protocol {other:?}; pedm speaks {PROTOCOL_VERSION}"
            )));
        }
    }
    let capabilities: Vec<String> = match v["capabilities"].as_array() {
        Some(a) => a
            .iter()
            .map(|c| c.as_str().map(String::from))
            .collect::<Option<_>>()
            .ok_or_else(|| bad("capabilities must be strings".into()))?,
        None => return Err(bad("no capabilities".into())),
    };
    if let Some(c) = capabilities
        .iter()
        .find(|c| !OPERATIONS.contains(&c.as_str()))
    {
        return Err(bad(format!("unknown capability {c:?}")));
    }
    Ok(PluginHello {
        name: v["name"].as_str().unwrap_or("").chars().take(100).collect(),
        capabilities,
    })
}

/// The response to request `id`: its result, or its error as a [`ProvisionError`]. `Err`
/// for a line that is not that.
fn parse_response(line: &str, id: u64) -> Result<Result<Value, ProvisionError>, String> {
    let v: Value = serde_json::from_str(line).map_err(|e| format!("not JSON: {e}"))?;
    if v["type"] != "response" {
        return Err("not a response".into());
    }
    if v["id"].as_u64() != Some(id) {
        return Err(format!("answers id {}, not {id}", v["id"]));
    }
    match (v.get("result"), v.get("error")) {
        (Some(r), None) if r.is_object() => Ok(Ok(r.clone())),
        (None, Some(e)) => {
            let message = e["message"].as_str().ok_or("an error without a message")?;
            let message = crate::truncate(message, 2000);
            match e["kind"].as_str() {
                Some("retryable") => Ok(Err(ProvisionError::Unreachable(message))),
                Some("refused") => Ok(Err(ProvisionError::Refused(message))),
                Some("invalid") => Ok(Err(ProvisionError::Invalid(message))),
                other => Err(format!("unknown error kind {other:?}")),
            }
        }
        _ => Err("neither a result object nor an error".into()),
    }
}

fn grant_fields(g: &GrantSpec) -> serde_json::Map<String, Value> {
    let mut m = serde_json::Map::new();
    m.insert("idempotency_key".into(), json!(g.grant_id));
    m.insert("grant".into(), json!(g));
    m
}

fn detail(r: &Value) -> String {
    crate::truncate(r["detail"].as_str().unwrap_or(""), 2000)
}

#[async_trait]
impl Provisioner for PluginProvisioner {
    fn kind(&self) -> &'static str {
        "plugin"
    }

    async fn grant(&self, g: &GrantSpec) -> Result<GrantOutcome, ProvisionError> {
        let r = self.call("grant", grant_fields(g)).await?;
        let secret = match r.get("secret") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) if !s.is_empty() => Some(s.clone()),
            Some(_) => {
                return Err(ProvisionError::refused(
                    "the plugin's secret must be a non-empty string",
                ));
            }
        };
        Ok(GrantOutcome {
            secret,
            detail: detail(&r),
        })
    }

    async fn revoke(&self, g: &GrantSpec) -> Result<(), ProvisionError> {
        self.call("revoke", grant_fields(g)).await.map(|_| ())
    }

    async fn observe(&self, g: &GrantSpec) -> Result<Observed, ProvisionError> {
        let r = self.call("verify", grant_fields(g)).await?;
        let present = r["present"]
            .as_bool()
            .ok_or_else(|| ProvisionError::refused("the plugin's verify result has no present"))?;
        Ok(Observed {
            present,
            detail: detail(&r),
        })
    }

    async fn discover(&self) -> Result<Vec<StandingPrivilege>, ProvisionError> {
        let r = self.call("discover", serde_json::Map::new()).await?;
        serde_json::from_value(r["standing"].clone())
            .map_err(|e| ProvisionError::refused(format!("the plugin's discover result: {e}")))
    }

    fn removable(&self, p: &StandingPrivilege) -> Result<(), String> {
        let _ = p;
        match self.declared("remove_standing") {
            Some(false) => Err("the plugin does not declare remove_standing".into()),
            _ => Ok(()),
        }
    }

    async fn remove_standing(&self, p: &StandingPrivilege) -> Result<String, ProvisionError> {
        let mut m = serde_json::Map::new();
        m.insert("standing".into(), json!(p));
        let r = self.call("remove_standing", m).await?;
        Ok(detail(&r))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hellos() {
        let h = parse_hello(
            r#"{"type":"hello","protocol":1,"name":"crm","capabilities":["grant","revoke"]}"#,
        )
        .unwrap();
        assert_eq!(h.capabilities, ["grant", "revoke"]);
        for (bad, invalid) in [
            (r#"{"type":"hello","protocol":2,"capabilities":[]}"#, true),
            (
                r#"{"type":"response","protocol":1,"capabilities":[]}"#,
                false,
            ),
            (
                r#"{"type":"hello","protocol":1,"capabilities":["grant","fly"]}"#,
                false,
            ),
            (r#"{"type":"hello","protocol":1}"#, false),
            ("hello", false),
        ] {
            let e = parse_hello(bad).unwrap_err();
            assert_eq!(
                matches!(e, ProvisionError::Invalid(_)),
                invalid,
                "{bad}: {e:?}"
            );
        }
    }

    #[test]
    fn responses() {
        let ok = parse_response(r#"{"type":"response","id":3,"result":{"detail":"x"}}"#, 3);
        assert_eq!(ok.unwrap().unwrap()["detail"], "x");
        let e = parse_response(
            r#"{"type":"response","id":3,"error":{"kind":"retryable","message":"busy"}}"#,
            3,
        )
        .unwrap()
        .unwrap_err();
        assert!(e.is_retryable());
        for bad in [
            r#"{"type":"response","id":4,"result":{}}"#,
            r#"{"type":"response","id":3}"#,
            r#"{"type":"response","id":3,"result":{},"error":{"kind":"refused","message":"m"}}"#,
            r#"{"type":"response","id":3,"error":{"kind":"maybe","message":"m"}}"#,
            r#"{"type":"response","id":3,"result":[]}"#,
        ] {
            assert!(parse_response(bad, 3).is_err(), "{bad}");
        }
    }
}
