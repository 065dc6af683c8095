//! `pedm login` / `pedm logout`: single sign-on through the server.
//!
//! Code flow: the CLI generates the PKCE verifier and the state, listens on a loopback port,
//! asks the server for the provider's authorisation URL, opens it (`xdg-open`) or prints it,
//! receives the redirect, checks the state, and hands code + verifier + state to the server,
//! which exchanges the code with its client secret and answers with a pedm session token.
//! Device flow (`--device`): the server starts it; the CLI prints the verification URI and the
//! user code and polls. The session token is kept in `$XDG_CONFIG_HOME/pedm/session` (mode
//! 0600) and used when no `--token`/`PEDM_TOKEN` is given.

use crate::ctx::Ctx;
use anyhow::{Context, Result, bail};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use pedm_api::Client;
use pedm_api::sso::*;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::path::PathBuf;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// How long the CLI waits for the browser to come back.
const CALLBACK_WAIT: Duration = Duration::from_secs(300);

/// What the session file holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SessionFile {
    /// The server it was opened on: the token is never sent to another.
    pub url: String,
    pub token: String,
    pub user: String,
    pub expires_at: Option<jiff::Timestamp>,
}

/// `$XDG_CONFIG_HOME/pedm/session`, or `~/.config/pedm/session`.
pub fn session_path() -> Option<PathBuf> {
    Some(crate::files::config_dir()?.join("session"))
}

/// The stored session for `url`, if there is one.
pub fn stored_session(url: &str) -> Option<SessionFile> {
    let text = std::fs::read_to_string(session_path()?).ok()?;
    let s: SessionFile = serde_json::from_str(&text).ok()?;
    (s.url.trim_end_matches('/') == url.trim_end_matches('/')).then_some(s)
}

fn save(s: &SessionFile) -> Result<PathBuf> {
    let path = crate::files::private_dir(None)?.join("session");
    crate::files::write_atomic(&path, serde_json::to_string(s)?.as_bytes(), 0o600)?;
    Ok(path)
}

fn remove() -> Option<PathBuf> {
    let p = session_path()?;
    std::fs::remove_file(&p).ok().map(|_| p)
}

#[derive(Serialize)]
struct LoggedIn<'a> {
    user: &'a str,
    groups: &'a [String],
    provider: &'a str,
    token_id: &'a str,
    expires_at: Option<jiff::Timestamp>,
    refreshed: bool,
    session_file: String,
}

fn finish(ctx: &Ctx, s: SsoSessionToken, refreshed: bool) -> Result<()> {
    let path = save(&SessionFile {
        url: ctx.client.base_url().to_string(),
        token: s.token.clone(),
        user: s.user.clone(),
        expires_at: s.expires_at,
    })?;
    let out = LoggedIn {
        user: &s.user,
        groups: &s.groups,
        provider: &s.provider,
        token_id: &s.token_id,
        expires_at: s.expires_at,
        refreshed,
        session_file: path.display().to_string(),
    };
    ctx.emit(&out, || {
        format!(
            "{} as {} (groups: {}) via {}, session {} until {}\n",
            if refreshed {
                "Session refreshed"
            } else {
                "Logged in"
            },
            s.user,
            if s.groups.is_empty() {
                "none".into()
            } else {
                s.groups.join(", ")
            },
            s.provider,
            s.token_id,
            s.expires_at
                .map(|t| t.to_string())
                .unwrap_or_else(|| "-".into()),
        )
    })
}

pub async fn login(ctx: &Ctx, device: bool, provider: Option<String>, browser: bool) -> Result<()> {
    // A live session is refreshed through the provider (groups re-read) rather than replaced.
    if let Some(s) = stored_session(ctx.client.base_url())
        && provider.is_none()
        && s.expires_at.is_none_or(|e| e > jiff::Timestamp::now())
    {
        let c = Client::new(ctx.client.base_url(), Some(s.token.clone()))?;
        match c.sso_refresh().await {
            Ok(new) => return finish(ctx, new, true),
            Err(e) if e.status() == Some(401) || e.status() == Some(403) => {
                eprintln!("pedm: the stored session cannot be refreshed ({e}); logging in again");
                remove();
            }
            Err(e) => return Err(e.into()),
        }
    }
    let s = if device {
        device_flow(ctx, provider).await?
    } else {
        code_flow(ctx, provider, browser).await?
    };
    finish(ctx, s, false)
}

pub async fn logout(ctx: &Ctx) -> Result<()> {
    let Some(s) = stored_session(ctx.client.base_url()) else {
        bail!(
            "not logged in to {} (no session file)",
            ctx.client.base_url()
        );
    };
    let c = Client::new(ctx.client.base_url(), Some(s.token))?;
    let res = c.sso_logout().await;
    let path = remove();
    match res {
        Ok(o) => ctx.emit(&o, || {
            format!(
                "Logged out: session {} revoked{}\n",
                o.token_id,
                path.map(|p| format!(", {} deleted", p.display()))
                    .unwrap_or_default()
            )
        }),
        // Already ended on the server (expired, revoked): the local copy is gone too.
        Err(e) if e.status() == Some(401) => {
            eprintln!("pedm: the session had already ended ({e}); local session deleted");
            Ok(())
        }
        Err(e) => Err(e.into()),
    }
}

async fn device_flow(ctx: &Ctx, provider: Option<String>) -> Result<SsoSessionToken> {
    let d = ctx
        .client
        .sso_device_start(&SsoDeviceStart { provider })
        .await?;
    eprintln!(
        "To sign in, open {} and enter the code {}",
        d.verification_uri, d.user_code
    );
    if let Some(u) = &d.verification_uri_complete {
        eprintln!("(or open {u})");
    }
    let mut interval = d.interval.max(1);
    loop {
        if jiff::Timestamp::now() >= d.expires_at {
            bail!("the device code expired before sign-in completed");
        }
        tokio::time::sleep(Duration::from_secs(interval)).await;
        let p = ctx
            .client
            .sso_device_poll(&SsoDevicePoll {
                handle: d.handle.clone(),
            })
            .await?;
        match p.session {
            Some(s) => return Ok(s),
            None => interval = p.interval.max(interval),
        }
    }
}

async fn code_flow(ctx: &Ctx, provider: Option<String>, browser: bool) -> Result<SsoSessionToken> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .context("cannot listen on a loopback port for the browser's redirect")?;
    let port = listener.local_addr()?.port();
    let redirect_uri = format!("http://127.0.0.1:{port}/callback");
    let verifier = URL_SAFE_NO_PAD.encode(pedm_core::token::random_bytes::<32>());
    let challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
    let state = URL_SAFE_NO_PAD.encode(pedm_core::token::random_bytes::<32>());
    let started = ctx
        .client
        .sso_start(&SsoStart {
            provider,
            redirect_uri,
            state: state.clone(),
            code_challenge: challenge,
        })
        .await?;
    eprintln!(
        "Open this URL in a browser to sign in:\n{}",
        started.authorization_url
    );
    if browser {
        open_browser(&started.authorization_url);
    }
    let (code, got_state) = tokio::time::timeout(CALLBACK_WAIT, callback(&listener))
        .await
        .context("no answer from the browser within 5 minutes")??;
    let same: bool = subtle::ConstantTimeEq::ct_eq(got_state.as_bytes(), state.as_bytes()).into();
    if !same {
        bail!(
            "the browser came back with a state this login did not send: refused (possible cross-site request forgery)"
        );
    }
    Ok(ctx
        .client
        .sso_finish(&SsoFinish {
            state,
            code,
            code_verifier: verifier,
        })
        .await?)
}

fn open_browser(url: &str) {
    let found = std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join("xdg-open").is_file()));
    if found {
        let _ = std::process::Command::new("xdg-open")
            .arg(url)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn();
    }
}

/// Waits for `GET /callback?...` on the loopback listener; answers every request with a short
/// page. Returns (code, state), or the provider's error.
async fn callback(listener: &tokio::net::TcpListener) -> Result<(String, String)> {
    loop {
        let (mut sock, _) = listener.accept().await?;
        let mut buf = vec![0u8; 8192];
        let mut n = 0;
        while n < buf.len() {
            let r = sock.read(&mut buf[n..]).await?;
            if r == 0 {
                break;
            }
            n += r;
            if buf[..n].windows(4).any(|w| w == b"\r\n\r\n") {
                break;
            }
        }
        let head = String::from_utf8_lossy(&buf[..n]).to_string();
        let target = head
            .lines()
            .next()
            .and_then(|l| l.split_whitespace().nth(1))
            .unwrap_or("")
            .to_string();
        let (path, query) = target.split_once('?').unwrap_or((&target, ""));
        if path != "/callback" {
            let _ = sock
                .write_all(
                    b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
                )
                .await;
            continue;
        }
        let params: Vec<(String, String)> = query
            .split('&')
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (pct_decode(k), pct_decode(v)))
            .collect();
        let get = |k: &str| params.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
        let body = if get("error").is_some() {
            "Sign-in failed; see the terminal."
        } else {
            "Signed in to pedm. You can close this window."
        };
        let resp = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        );
        let _ = sock.write_all(resp.as_bytes()).await;
        if let Some(e) = get("error") {
            bail!(
                "the identity provider refused: {e} {}",
                get("error_description").unwrap_or_default()
            );
        }
        let (Some(code), Some(state)) = (get("code"), get("state")) else {
            bail!("the browser's redirect carries no code and state");
        };
        return Ok((code, state));
    }
}

fn pct_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => {
                let hex = std::str::from_utf8(&b[i + 1..i + 3]).unwrap_or("");
                match u8::from_str_radix(hex, 16) {
                    Ok(v) => {
                        out.push(v);
                        i += 2;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    #[test]
    fn percent_decoding() {
        assert_eq!(super::pct_decode("a%2Fb+c%3d"), "a/b c=");
        assert_eq!(super::pct_decode("100%"), "100%");
        assert_eq!(super::pct_decode("%zz"), "%zz");
    }
}
