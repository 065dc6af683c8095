//! Witnesses (C2SP `tlog-witness`): the client side, with which pedmd submits each new
//! checkpoint note with a consistency proof and keeps the cosignature, and a minimal witness
//! (`pedmd witness`) that keeps the newest checkpoint it cosigned per log and cosigns only
//! consistent growth.
//!
//! `POST <prefix>/add-checkpoint`, body: `old <size>\n`, the consistency proof from that size
//! (one base64 hash a line), an empty line, the checkpoint note. Answers: 200 with the
//! cosignature line(s); 400 malformed; 403 no valid log signature; 404 unknown origin; 409
//! (`text/x.tlog.size`, the size the witness holds) when `old` is not what it cosigned last, or
//! the same size with another root; 422 when the proof does not verify.

use anyhow::{Context, anyhow, bail};
use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use futures_util::future::BoxFuture;
use pedm_audit::{CheckpointNote, NoteSignature, SigningKey, VerifierKey};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::sync::Mutex;

/// A witness pedmd submits its checkpoints to.
#[derive(Debug, Clone)]
pub struct WitnessTarget {
    /// Submission prefix; `/add-checkpoint` is appended.
    pub url: String,
    /// The witness's cosigner key (`<name>+<id>+<base64(0x04 || key)>`).
    pub key: VerifierKey,
    /// PEM CA certificate(s) trusted for an `https://` witness besides the system's roots.
    pub ca_file: Option<std::path::PathBuf>,
}

fn http(ca_file: Option<&std::path::Path>) -> anyhow::Result<reqwest::Client> {
    pedm_notify::tls::with_ca(
        reqwest::Client::builder().timeout(std::time::Duration::from_secs(10)),
        ca_file,
    )
    .map_err(|e| anyhow::anyhow!(e))?
    .build()
    .context("http client")
}

fn request_body(old: u64, proof: &[[u8; 32]], note: &CheckpointNote) -> String {
    let mut s = format!("old {old}\n");
    for h in proof {
        s.push_str(&B64.encode(h));
        s.push('\n');
    }
    s.push('\n');
    s.push_str(&note.text());
    s
}

/// Submits `note` to `w`, from the size the witness is believed to hold (`have`; asks it when
/// unknown), with the consistency proof `prove(old, new)` from the log. Returns the
/// cosignature and the size the witness now holds.
pub async fn submit<'a>(
    prove: impl Fn(u64, u64) -> BoxFuture<'a, anyhow::Result<Vec<[u8; 32]>>>,
    w: &WitnessTarget,
    note: &CheckpointNote,
    have: Option<u64>,
) -> anyhow::Result<(NoteSignature, u64)> {
    let client = http(w.ca_file.as_deref())?;
    let url = format!("{}/add-checkpoint", w.url.trim_end_matches('/'));
    let mut old = have.unwrap_or(0);
    for _ in 0..2 {
        if old > note.size {
            bail!(
                "the witness has cosigned {old} events but the log has {}: the log was rolled \
                 back or forked",
                note.size
            );
        }
        let proof = if old == 0 || old == note.size {
            vec![]
        } else {
            prove(old, note.size).await?
        };
        let resp = client
            .post(&url)
            .body(request_body(old, &proof, note))
            .send()
            .await
            .with_context(|| format!("cannot reach {url}"))?;
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        match status {
            StatusCode::OK => {
                let mut cosigned = note.clone();
                cosigned.add_signatures(&text)?;
                cosigned.cosigned_by(&w.key).ok_or_else(|| {
                    anyhow!("the answer carries no valid cosignature by {}", w.key)
                })?;
                let sig = cosigned
                    .signatures
                    .into_iter()
                    .find(|s| s.name == w.key.name && s.key_id == w.key.id())
                    .ok_or_else(|| anyhow!("no cosignature line"))?;
                return Ok((sig, note.size));
            }
            StatusCode::CONFLICT => {
                let theirs: u64 = text.trim().parse().map_err(|_| {
                    anyhow!("the witness refused (409) without a size: {}", text.trim())
                })?;
                if theirs == old {
                    bail!("the witness holds another checkpoint of {old} events: the log forked");
                }
                old = theirs;
            }
            s => bail!("the witness refused ({s}): {}", text.trim()),
        }
    }
    bail!("the witness kept changing its size")
}

// ------------------------------------------------------------------ the witness itself

/// `pedmd witness` options.
#[derive(Debug, clap::Args)]
pub struct WitnessArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8471")]
    pub listen: String,
    /// The witness's Ed25519 key; created (mode 0600) if missing.
    #[arg(long, value_name = "PATH")]
    pub key: PathBuf,
    /// The witness's name (the key name of its cosignatures), e.g. witness.example.com/w1.
    #[arg(long)]
    pub name: String,
    /// A log to witness: its note verifier key `<origin>+<id>+<base64>` (from `pedm audit
    /// pubkey --vkey`). Repeatable.
    #[arg(long = "log", value_name = "VKEY", required = true)]
    pub logs: Vec<String>,
    /// Where the newest cosigned checkpoint of each log is kept (JSON).
    #[arg(long, value_name = "PATH")]
    pub state: PathBuf,
}

#[derive(Clone)]
struct Witness {
    name: String,
    key: Arc<SigningKey>,
    logs: Arc<BTreeMap<String, VerifierKey>>,
    state_file: Arc<PathBuf>,
    /// origin → (size, base64 root); the lock makes check-and-update atomic.
    state: Arc<Mutex<BTreeMap<String, (u64, String)>>>,
}

fn load_state(path: &Path) -> anyhow::Result<BTreeMap<String, (u64, String)>> {
    match std::fs::read_to_string(path) {
        Ok(s) => serde_json::from_str(&s).with_context(|| format!("{}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(BTreeMap::new()),
        Err(e) => Err(anyhow!("cannot read {}: {e}", path.display())),
    }
}

fn save_state(path: &Path, state: &BTreeMap<String, (u64, String)>) -> anyhow::Result<()> {
    use std::io::Write;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(serde_json::to_string(state)?.as_bytes())?;
    f.sync_all()?;
    drop(f);
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

fn answer(status: StatusCode, text: impl Into<String>) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        text.into(),
    )
        .into_response()
}

fn parse_request(body: &str) -> Result<(u64, Vec<[u8; 32]>, CheckpointNote), String> {
    let (head, note) = body
        .split_once("\n\n")
        .ok_or("no empty line before the checkpoint")?;
    let mut lines = head.split('\n');
    let old = lines
        .next()
        .and_then(|l| l.strip_prefix("old "))
        .and_then(|n| n.parse::<u64>().ok())
        .ok_or("the first line must be `old <size>`")?;
    let mut proof = vec![];
    for l in lines {
        let h: [u8; 32] = B64
            .decode(l)
            .ok()
            .and_then(|v| v.try_into().ok())
            .ok_or_else(|| format!("proof line {l:?} is not a base64 hash"))?;
        proof.push(h);
    }
    if proof.len() > 63 {
        return Err("more than 63 proof lines".into());
    }
    let note = CheckpointNote::parse(note).map_err(|e| e.to_string())?;
    Ok((old, proof, note))
}

async fn add_checkpoint(State(w): State<Witness>, body: Bytes) -> Response {
    let Ok(body) = std::str::from_utf8(&body) else {
        return answer(StatusCode::BAD_REQUEST, "the body is not UTF-8");
    };
    let (old, proof, note) = match parse_request(body) {
        Ok(r) => r,
        Err(e) => return answer(StatusCode::BAD_REQUEST, e),
    };
    let Some(log) = w.logs.get(&note.origin) else {
        return answer(
            StatusCode::NOT_FOUND,
            format!("unknown log {:?}", note.origin),
        );
    };
    if let Err(e) = note.verify_log(log) {
        return answer(StatusCode::FORBIDDEN, e.to_string());
    }
    if old > note.size {
        return answer(
            StatusCode::BAD_REQUEST,
            format!(
                "old size {old} is larger than the checkpoint's {}",
                note.size
            ),
        );
    }
    let mut state = w.state.lock().await;
    let (have, have_root) = state
        .get(&note.origin)
        .cloned()
        .unwrap_or((0, String::new()));
    let size_conflict = || {
        (
            StatusCode::CONFLICT,
            [(header::CONTENT_TYPE, "text/x.tlog.size")],
            format!("{have}\n"),
        )
            .into_response()
    };
    if old != have {
        tracing::warn!(origin = %note.origin, old, have, size = note.size, "old size mismatch");
        return size_conflict();
    }
    let root = B64.encode(note.root);
    if old == note.size {
        if have_root != root {
            tracing::error!(origin = %note.origin, size = note.size,
                "a second checkpoint of the same size with another root: the log forked");
            return size_conflict();
        }
    } else if old > 0 {
        let old_root: [u8; 32] = match B64.decode(&have_root).ok().and_then(|v| v.try_into().ok()) {
            Some(r) => r,
            None => return answer(StatusCode::INTERNAL_SERVER_ERROR, "corrupt witness state"),
        };
        if let Err(e) =
            pedm_audit::verify_consistency(old, note.size, &old_root, &note.root, &proof)
        {
            tracing::error!(origin = %note.origin, old, size = note.size, error = %e,
                "inconsistent checkpoint: not cosigned");
            return answer(
                StatusCode::UNPROCESSABLE_ENTITY,
                format!(
                    "the checkpoint of {} events does not extend the one of {old}: {e}",
                    note.size
                ),
            );
        }
    } else if !proof.is_empty() {
        return answer(StatusCode::BAD_REQUEST, "old size 0 takes no proof");
    }
    let mut next = state.clone();
    next.insert(note.origin.clone(), (note.size, root));
    if let Err(e) = save_state(&w.state_file, &next) {
        tracing::error!(error = %format!("{e:#}"), "cannot persist the witness state");
        return answer(
            StatusCode::SERVICE_UNAVAILABLE,
            "cannot persist the witness state",
        );
    }
    *state = next;
    let now = jiff::Timestamp::now().as_second().max(0) as u64;
    tracing::info!(origin = %note.origin, size = note.size, "cosigned");
    answer(StatusCode::OK, w.key.cosign(&w.name, now, &note).line())
}

/// Runs the witness until SIGTERM/ctrl-c.
pub async fn run(args: WitnessArgs) -> anyhow::Result<()> {
    let key = crate::key_file::load_or_create_key(&args.key, "witness key")?;
    let mut logs = BTreeMap::new();
    for l in &args.logs {
        let k: VerifierKey = l.parse().with_context(|| format!("--log {l:?}"))?;
        if k.alg != pedm_audit::note::ALG_ED25519 {
            bail!("--log {l:?}: not a log (note signer) key");
        }
        logs.insert(k.name.clone(), k);
    }
    if args.name.is_empty() || args.name.contains(char::is_whitespace) || args.name.contains('+') {
        bail!(
            "--name {:?}: a witness name has no spaces or '+'",
            args.name
        );
    }
    let w = Witness {
        name: args.name.clone(),
        key: Arc::new(key),
        logs: Arc::new(logs),
        state: Arc::new(Mutex::new(load_state(&args.state)?)),
        state_file: Arc::new(args.state.clone()),
    };
    let vkey = w.key.cosigner_vkey(&w.name);
    let app = Router::new()
        .route("/add-checkpoint", post(add_checkpoint))
        .with_state(w);
    let listener = tokio::net::TcpListener::bind(&args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let addr = listener.local_addr()?;
    println!("pedmd witness listening on http://{addr}");
    println!("witness key: {vkey}");
    use std::io::Write;
    std::io::stdout().flush()?;
    axum::serve(listener, app)
        .with_graceful_shutdown(crate::shutdown_signal())
        .await
        .context("witness failed")
}
