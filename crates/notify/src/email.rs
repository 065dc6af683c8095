//! Mail (`[notify.email]`): an SMTP relay reached over TLS (STARTTLS required, or implicit
//! TLS; plain SMTP only to a relay on this machine), with authentication, sending multipart
//! text + HTML mails. What to send and to whom is the server's business; this module checks
//! the settings, builds well-formed messages (everything a person typed is escaped in the
//! HTML part; headers are encoded by lettre, so no value can add a header or a recipient),
//! and delivers them, retrying what SMTP calls transient.

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use lettre::message::{Mailbox, MultiPart};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::SinkStats;

const ATTEMPTS: u32 = 6;

/// How the connection to the relay is protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EmailTls {
    /// Plain connection upgraded with STARTTLS, which the relay must offer (port 587).
    #[default]
    Starttls,
    /// TLS from the first byte (port 465).
    Tls,
    /// No TLS: only to a relay on this machine (`localhost`, `127.0.0.1`, `::1`).
    None,
}

/// `[notify.email]`.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmailConfig {
    /// The SMTP relay's host name (checked against its certificate).
    pub host: String,
    /// Default: 587 with `starttls`, 465 with `tls`, 25 with `none`.
    #[serde(default)]
    pub port: Option<u16>,
    #[serde(default)]
    pub tls: EmailTls,
    #[serde(default)]
    pub username: Option<String>,
    /// A file holding the SMTP password (never in the configuration itself).
    #[serde(default, skip_serializing)]
    pub password_file: Option<PathBuf>,
    /// The sender, e.g. `pedm <pedm@example.com>`.
    pub from: String,
    /// PEM CA certificate(s) trusted for the relay besides the system's roots.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// The console's address as people reach it (`https://pedm.example.com`): links in mails
    /// point there. Default: `[console] public_url`.
    #[serde(default)]
    pub console_url: Option<String>,
    /// How long an approval link works at most (it also ends with the request's pending
    /// deadline).
    #[serde(default = "default_link_ttl", with = "crate::duration")]
    pub link_ttl: Duration,
    /// Time limit of one SMTP conversation.
    #[serde(default = "default_timeout", with = "crate::duration")]
    pub timeout: Duration,
}

fn default_link_ttl() -> Duration {
    Duration::from_secs(24 * 3600)
}

fn default_timeout() -> Duration {
    Duration::from_secs(30)
}

impl std::fmt::Debug for EmailConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmailConfig")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("tls", &self.tls)
            .field("username", &self.username)
            .field("from", &self.from)
            .field("console_url", &self.console_url)
            .finish_non_exhaustive()
    }
}

/// One mail to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mail {
    pub to: String,
    pub subject: String,
    pub text: String,
    pub html: String,
}

/// The relay, the sender, and delivery counts.
pub struct Mailer {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
    pub console_url: String,
    pub link_ttl: Duration,
    /// Mails queued, sent, given up on, dropped (queue full), attempts beyond the first.
    counts: [AtomicU64; 5],
    queued_now: AtomicU64,
}

fn is_loopback(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost")
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

impl Mailer {
    /// Checks `[notify.email]` and reads its password and CA file; an error names the field.
    /// `public_url` is the console's, used when `console_url` is not set.
    pub fn new(c: &EmailConfig, public_url: Option<&str>) -> Result<Mailer, String> {
        let e = |m: String| format!("notify.email: {m}");
        let from: Mailbox = c
            .from
            .parse()
            .map_err(|err| e(format!("from {:?} is not a mail address: {err}", c.from)))?;
        let console_url = c
            .console_url
            .as_deref()
            .or(public_url)
            .ok_or_else(|| {
                e("set console_url (or [console] public_url): links in mails point there".into())
            })?
            .trim_end_matches('/')
            .to_string();
        let local = is_loopback(&c.host);
        match console_url.split_once("://") {
            Some(("https", rest)) if !rest.is_empty() => {}
            Some(("http", rest)) if is_loopback(rest.split([':', '/']).next().unwrap_or("")) => {}
            _ => {
                return Err(e(format!(
                    "console_url {console_url:?} must be an https:// address (http:// only for localhost)"
                )));
            }
        }
        if c.tls == EmailTls::None && !local {
            return Err(e(format!(
                "tls = \"none\" sends mail and the SMTP password in the clear: only to a relay \
                 on this machine, not to {}",
                c.host
            )));
        }
        let port = c.port.unwrap_or(match c.tls {
            EmailTls::Starttls => 587,
            EmailTls::Tls => 465,
            EmailTls::None => 25,
        });
        let mut builder =
            AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(c.host.as_str()).port(port);
        if c.tls != EmailTls::None {
            let mut params = TlsParameters::builder(c.host.clone());
            if let Some(p) = &c.ca_file {
                let pem =
                    std::fs::read(p).map_err(|err| e(format!("ca_file {}: {err}", p.display())))?;
                for block in pem_blocks(&pem) {
                    let cert = Certificate::from_pem(block.as_bytes())
                        .map_err(|err| e(format!("ca_file {}: {err}", p.display())))?;
                    params = params.add_root_certificate(cert);
                }
            }
            let params = params
                .build_rustls()
                .map_err(|err| e(format!("TLS: {err}")))?;
            builder = builder.tls(match c.tls {
                EmailTls::Tls => Tls::Wrapper(params),
                _ => Tls::Required(params),
            });
        }
        match (&c.username, &c.password_file) {
            (Some(u), Some(p)) => {
                let password = std::fs::read_to_string(p)
                    .map_err(|err| e(format!("password_file {}: {err}", p.display())))?;
                builder = builder
                    .credentials(Credentials::new(u.clone(), password.trim_end().to_string()));
            }
            (None, None) => {}
            _ => return Err(e("username and password_file go together".into())),
        }
        let transport = builder.timeout(Some(c.timeout)).build();
        Ok(Mailer {
            transport,
            from,
            console_url,
            link_ttl: c.link_ttl,
            counts: Default::default(),
            queued_now: AtomicU64::new(0),
        })
    }

    /// A mail was queued (`true`) or dropped because the queue was full.
    pub fn queued(&self, accepted: bool) {
        if accepted {
            self.counts[0].fetch_add(1, Ordering::Relaxed);
            self.queued_now.fetch_add(1, Ordering::Relaxed);
        } else {
            self.counts[3].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// A queued notice was taken for sending.
    pub fn taken(&self) {
        let _ = self
            .queued_now
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1));
    }

    /// Counts since start, for `pedm notify status`.
    pub fn stats(&self) -> SinkStats {
        let c = |i: usize| self.counts[i].load(Ordering::Relaxed);
        SinkStats {
            name: "email".into(),
            queued: self.queued_now.load(Ordering::Relaxed) as usize,
            enqueued: c(0),
            delivered: c(1),
            failed: c(2),
            dropped: c(3),
            retries: c(4),
        }
    }

    /// Sends `mail`, retrying connection failures and transient (4xx) answers with backoff
    /// until it goes through, the relay refuses it for good, attempts run out, or shutdown.
    pub async fn send(
        &self,
        mail: &Mail,
        shutdown: &mut watch::Receiver<bool>,
    ) -> Result<(), String> {
        let message = self.message(mail)?;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let outcome = self.transport.send(message.clone()).await;
            let err = match outcome {
                Ok(_) => {
                    self.counts[1].fetch_add(1, Ordering::Relaxed);
                    metrics::counter!("pedm_email_sent_total").increment(1);
                    return Ok(());
                }
                Err(err) => err,
            };
            let retry = !err.is_permanent();
            metrics::counter!("pedm_email_failed_attempts_total",
                "retry" => if retry { "yes" } else { "no" })
            .increment(1);
            if !retry || attempt >= ATTEMPTS {
                self.counts[2].fetch_add(1, Ordering::Relaxed);
                metrics::counter!("pedm_email_failed_total").increment(1);
                return Err(format!("to {}: {err}", mail.to));
            }
            self.counts[4].fetch_add(1, Ordering::Relaxed);
            let wait = Duration::from_millis(500 * (1 << (attempt - 1).min(6)));
            tracing::warn!(to = %mail.to, error = %err, ?wait, "mail not sent; retrying");
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = shutdown.changed() => {
                    self.counts[2].fetch_add(1, Ordering::Relaxed);
                    return Err(format!("to {}: shutting down", mail.to));
                }
            }
        }
    }

    fn message(&self, mail: &Mail) -> Result<Message, String> {
        let to: Mailbox = mail
            .to
            .parse()
            .map_err(|e| format!("{:?} is not a mail address: {e}", mail.to))?;
        Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(mail.subject.clone())
            .multipart(MultiPart::alternative_plain_html(
                mail.text.clone(),
                mail.html.clone(),
            ))
            .map_err(|e| format!("building the mail: {e}"))
    }
}

/// Each `-----BEGIN CERTIFICATE-----` block of a PEM bundle.
fn pem_blocks(pem: &[u8]) -> Vec<String> {
    let text = String::from_utf8_lossy(pem);
    let mut out = vec![];
    let mut cur: Option<String> = None;
    for line in text.lines() {
        if line.starts_with("-----BEGIN CERTIFICATE-----") {
            cur = Some(String::new());
        }
        if let Some(c) = cur.as_mut() {
            c.push_str(line);
            c.push('\n');
        }
        if line.starts_with("-----END CERTIFICATE-----") {
            out.extend(cur.take());
        }
    }
    out
}

/// `s` safe inside HTML text and attribute values.
pub fn escape_html(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A mail from labelled lines and an optional link: the text part lists them, the HTML part
/// shows them as a table (every value escaped) and the link as a button.
pub fn compose(
    to: &str,
    subject: &str,
    lead: &str,
    fields: &[(&str, String)],
    link: Option<(&str, &str)>,
    footer: &str,
) -> Mail {
    let clean = |s: &str| -> String {
        s.chars()
            .map(|c| if c.is_control() && c != '\n' { ' ' } else { c })
            .collect()
    };
    let mut text = format!("{}\n\n", clean(lead));
    let mut rows = String::new();
    for (k, v) in fields {
        text.push_str(&format!("{k}: {}\n", clean(v)));
        rows.push_str(&format!(
            "<tr><th style=\"text-align:left;padding-right:1em\">{}</th><td>{}</td></tr>\n",
            escape_html(k),
            escape_html(&clean(v)).replace('\n', "<br>")
        ));
    }
    let mut button = String::new();
    if let Some((label, url)) = link {
        text.push_str(&format!("\n{label}: {url}\n"));
        button = format!(
            "<p><a href=\"{}\" style=\"display:inline-block;padding:.5em 1em;background:#1f6feb;color:#fff;text-decoration:none;border-radius:4px\">{}</a></p>\n",
            escape_html(url),
            escape_html(label)
        );
    }
    text.push_str(&format!("\n{}\n", clean(footer)));
    let html = format!(
        "<!doctype html>\n<html><body style=\"font-family:sans-serif\">\n<p>{}</p>\n<table>\n{rows}</table>\n{button}<p style=\"color:#666;font-size:small\">{}</p>\n</body></html>\n",
        escape_html(&clean(lead)),
        escape_html(&clean(footer))
    );
    Mail {
        to: to.to_string(),
        subject: subject
            .chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .collect(),
        text,
        html,
    }
}

impl std::fmt::Debug for Mailer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mailer")
            .field("from", &self.from)
            .field("console_url", &self.console_url)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> EmailConfig {
        EmailConfig {
            host: "smtp.example.com".into(),
            port: None,
            tls: EmailTls::Starttls,
            username: None,
            password_file: None,
            from: "pedm <pedm@example.com>".into(),
            ca_file: None,
            console_url: Some("https://pedm.example.com/".into()),
            link_ttl: default_link_ttl(),
            timeout: default_timeout(),
        }
    }

    #[test]
    fn settings_are_checked() {
        assert!(Mailer::new(&config(), None).is_ok());
        let plain = EmailConfig {
            tls: EmailTls::None,
            ..config()
        };
        assert!(
            Mailer::new(&plain, None)
                .unwrap_err()
                .contains("in the clear")
        );
        let local = EmailConfig {
            host: "127.0.0.1".into(),
            ..plain
        };
        assert!(Mailer::new(&local, None).is_ok());
        let http = EmailConfig {
            console_url: Some("http://pedm.example.com".into()),
            ..config()
        };
        assert!(
            Mailer::new(&http, None)
                .unwrap_err()
                .contains("console_url")
        );
        let from = EmailConfig {
            from: "not an address".into(),
            ..config()
        };
        assert!(Mailer::new(&from, None).unwrap_err().contains("from"));
        let half = EmailConfig {
            username: Some("u".into()),
            ..config()
        };
        assert!(Mailer::new(&half, None).unwrap_err().contains("together"));
    }

    #[test]
    fn what_people_typed_is_escaped_in_html_and_kept_in_text() {
        let m = compose(
            "bob@example.com",
            "pedm: alice asks\r\nBcc: evil@example.com",
            "alice asks for admin",
            &[("Justification", "<script>alert(1)</script> & \"x\"".into())],
            Some(("Approve or deny", "https://pedm.example.com/ui/mail/a\"b")),
            "footer",
        );
        assert!(!m.html.contains("<script>"));
        assert!(
            m.html
                .contains("&lt;script&gt;alert(1)&lt;/script&gt; &amp; &quot;x&quot;")
        );
        assert!(
            m.html
                .contains("href=\"https://pedm.example.com/ui/mail/a&quot;b\"")
        );
        assert!(
            m.text
                .contains("Justification: <script>alert(1)</script> & \"x\"")
        );
        assert!(!m.subject.contains('\r') && !m.subject.contains('\n'));
        let mailer = Mailer::new(&config(), None).unwrap();
        let formatted = String::from_utf8(mailer.message(&m).unwrap().formatted()).unwrap();
        assert!(!formatted.contains("\nBcc:"), "{formatted}");
        assert!(formatted.contains("multipart/alternative"));
    }
}
