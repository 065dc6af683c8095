//! `pedm ssh`: log in to an `ssh` target with a certificate for one's grant there, and the
//! host side (`pedm host ssh-cert|ssh-ca|ssh-krl`).
//!
//! The key pair is made on this machine by the system's `ssh-keygen` and never sent; pedmd
//! signs the public half for the grant's window. The certificate and a known_hosts file that
//! trusts pedm's host CA live in `$XDG_CONFIG_HOME/pedm/ssh/` (0700), so nobody answers a
//! trust-on-first-use prompt and the user's own `~/.ssh` is left alone.

use crate::args::SshLoginArgs;
use crate::ctx::Ctx;
use anyhow::{Context, Result, bail};
use pedm_api::{GrantQuery, GrantState};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;

/// `$XDG_CONFIG_HOME/pedm/ssh`, or `~/.config/pedm/ssh` (0700).
fn ssh_dir() -> Result<PathBuf> {
    crate::files::private_dir(Some("ssh"))
}

/// The private key to use and its public line: the one given, or pedm's own (made once).
fn key_pair(given: Option<PathBuf>) -> Result<(PathBuf, String)> {
    let key = match given {
        Some(k) => k,
        None => {
            let k = ssh_dir()?.join("id_ed25519");
            if !k.exists() {
                let status = std::process::Command::new("ssh-keygen")
                    .args(["-q", "-t", "ed25519", "-N", "", "-C", "pedm"])
                    .arg("-f")
                    .arg(&k)
                    .stdin(std::process::Stdio::null())
                    .status()
                    .context("cannot run ssh-keygen to make a key (is OpenSSH installed?)")?;
                if !status.success() {
                    bail!("ssh-keygen could not make {}", k.display());
                }
            }
            k
        }
    };
    let mut public = key.clone().into_os_string();
    public.push(".pub");
    let public = PathBuf::from(public);
    let line = std::fs::read_to_string(&public)
        .with_context(|| format!("cannot read the public key {}", public.display()))?;
    Ok((key, line.trim().to_string()))
}

/// The caller's active grant on `target`: the one named, or the only one.
pub(crate) async fn pick_grant(
    ctx: &Ctx,
    target: &str,
    given: Option<uuid::Uuid>,
) -> Result<uuid::Uuid> {
    if let Some(id) = given {
        return Ok(id);
    }
    let me = ctx.client.whoami().await?;
    let grants = ctx
        .client
        .list_grants(&GrantQuery {
            state: Some(GrantState::Active.as_str().into()),
            user: Some(me.user.name.clone()),
            target: Some(target.into()),
            limit: None,
        })
        .await?;
    match grants.as_slice() {
        [g] => Ok(g.id),
        [] => bail!(
            "you hold no active grant on {target}; ask for one with `pedm request create \
             {target} ROLE --duration 1h --justification ...`"
        ),
        many => bail!(
            "you hold {} active grants on {target}; choose one with --grant ({})",
            many.len(),
            many.iter()
                .map(|g| format!("{} = {}", g.id, g.role))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// Shell-quotes `s` for the printed command line.
fn quoted(s: &str) -> String {
    if !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"@%+=:,./-_".contains(&b))
    {
        return s.to_string();
    }
    format!("'{}'", s.replace('\'', r"'\''"))
}

pub async fn login(ctx: &Ctx, a: SshLoginArgs) -> Result<()> {
    let (login_asked, target) = match a.destination.rsplit_once('@') {
        Some((l, t)) => (Some(l.to_string()), t.to_string()),
        None => (None, a.destination.clone()),
    };
    if target.is_empty() || target.starts_with('-') {
        bail!("destination {:?} names no target", a.destination);
    }
    let grant = pick_grant(ctx, &target, a.grant).await?;
    let (key, public) = key_pair(a.identity)?;
    let issued = ctx.client.ssh_certificate(grant, &public).await?;
    if let Some(l) = &login_asked
        && *l != issued.login
    {
        bail!(
            "grant {grant} logs in as {}, not {l}: the certificate names only the role's account",
            issued.login
        );
    }
    let dir = ssh_dir()?;
    let cert = dir.join(format!("{grant}-cert.pub"));
    crate::files::write_atomic(&cert, format!("{}\n", issued.certificate).as_bytes(), 0o600)?;
    let known_hosts = dir.join("known_hosts");
    crate::files::write_atomic(
        &known_hosts,
        format!("{}\n", issued.known_hosts.join("\n")).as_bytes(),
        0o600,
    )?;
    let mut args: Vec<String> = vec![
        "-i".into(),
        key.display().to_string(),
        "-o".into(),
        format!("CertificateFile={}", cert.display()),
        "-o".into(),
        "IdentitiesOnly=yes".into(),
        "-o".into(),
        format!("UserKnownHostsFile={}", known_hosts.display()),
        "-o".into(),
        "StrictHostKeyChecking=yes".into(),
        "-p".into(),
        a.port.unwrap_or(issued.port).to_string(),
        "-l".into(),
        issued.login.clone(),
    ];
    for o in a.options {
        args.push("-o".into());
        args.push(o);
    }
    args.push(issued.address.clone());
    if !a.command.is_empty() {
        args.push("--".into());
        args.extend(a.command);
    }
    let program = std::env::var("PEDM_SSH").unwrap_or_else(|_| "ssh".into());
    eprintln!(
        "pedm: certificate {} for {}@{} valid until {} (grant {grant})",
        issued.record.serial,
        issued.login,
        issued.address,
        crate::output::time(issued.record.valid_before)
    );
    if a.print {
        let line: Vec<String> = std::iter::once(program.as_str())
            .chain(args.iter().map(String::as_str))
            .map(quoted)
            .collect();
        return Ok(crate::output::write_out(&format!("{}\n", line.join(" ")))?);
    }
    let e = std::process::Command::new(&program).args(&args).exec();
    bail!("cannot run {program}: {e}")
}

pub async fn sign_host(
    ctx: &Ctx,
    key: PathBuf,
    principals: Vec<String>,
    validity: Option<String>,
    output: Option<PathBuf>,
) -> Result<()> {
    let public = std::fs::read_to_string(&key)
        .with_context(|| format!("cannot read the host key {}", key.display()))?;
    let issued = ctx
        .client
        .sign_ssh_host_key(&pedm_api::ssh::SignHostKey {
            public_key: public.trim().to_string(),
            principals,
            validity,
        })
        .await?;
    if ctx.json {
        return ctx.emit(&issued, String::new);
    }
    let text = format!("{}\n", issued.certificate);
    match output {
        Some(p) => {
            crate::files::write_atomic(&p, text.as_bytes(), 0o644)?;
            eprintln!(
                "wrote {} (serial {}, valid until {}); add `HostCertificate {}` to sshd_config",
                p.display(),
                issued.record.serial,
                crate::output::time(issued.record.valid_before),
                p.display()
            );
            Ok(())
        }
        None => Ok(crate::output::write_out(&text)?),
    }
}

pub async fn ca_keys(ctx: &Ctx, user: bool, host: bool) -> Result<()> {
    let keys = ctx.client.ssh_ca_keys().await?;
    if ctx.json {
        return ctx.emit(&keys, String::new);
    }
    let mut out = String::new();
    if user || !host {
        for k in &keys.user {
            out.push_str(&format!("{k}\n"));
        }
    }
    if host || !user {
        for k in &keys.host {
            out.push_str(&format!("@cert-authority * {k}\n"));
        }
    }
    Ok(crate::output::write_out(&out)?)
}

pub async fn krl(ctx: &Ctx, output: PathBuf) -> Result<()> {
    let krl = ctx.client.ssh_krl().await?;
    if !krl.starts_with(b"SSHKRL\n\0") {
        bail!(
            "the server's answer is not an OpenSSH KRL; {} left as it was",
            output.display()
        );
    }
    crate::files::write_atomic(&output, &krl, 0o644)
}
