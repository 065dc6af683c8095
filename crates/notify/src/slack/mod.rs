//! Slack, as an approval surface: the app's configuration, the signature Slack puts on every
//! callback (`X-Slack-Signature: v0=<hex HMAC-SHA256(signing secret, "v0:<timestamp>:<raw
//! body>")>`), the one-time code that links a Slack user to a pedm user; the Block Kit message
//! a request is shown as and the modal that asks a denier why ([`blocks`]); the Web API
//! client that delivers them ([`web_api`]).
//!
//! Everything a requester typed (names, justification, ticket) goes into `plain_text` objects,
//! which Slack never parses for mentions, links or formatting; the fallback `text` (mrkdwn)
//! is escaped as Slack documents (`&`, `<`, `>`). Texts are cut to Block Kit's limits.

use std::collections::BTreeMap;
use std::path::PathBuf;

use hmac::{KeyInit, Mac};
use serde::{Deserialize, Serialize};
mod blocks;
mod web_api;

pub use blocks::{
    RequestCard, block_kit_problems, escape_mrkdwn, fit, notice_blocks, request_modal, result_view,
};
pub use web_api::{CallError, Slack, SlackUser};

type HmacSha256 = hmac::Hmac<sha2::Sha256>;

/// Header with the request's signing time (Unix seconds).
pub const TIMESTAMP_HEADER: &str = "x-slack-request-timestamp";
/// Header with `v0=<hex>`.
pub const SIGNATURE_HEADER: &str = "x-slack-signature";
/// How far a callback's timestamp may be from now, either way (Slack's recommendation).
pub const MAX_SKEW_SECS: i64 = 300;
/// `action_id` of the Approve button.
pub const APPROVE_ACTION: &str = "pedm_approve";
/// `action_id` of the Deny button (opens the reason modal).
pub const DENY_ACTION: &str = "pedm_deny";
/// `callback_id` of the deny modal; its `private_metadata` is the request id.
pub const DENY_VIEW: &str = "pedm_deny";
/// `block_id` and `action_id` of the modal's reason input.
pub const REASON_INPUT: &str = "reason";
/// `callback_id` of the modal `/pedm request` opens when the command leaves something out.
pub const REQUEST_VIEW: &str = "pedm_request";
/// `block_id` (= `action_id`) of the request modal's inputs.
pub const REQUEST_INPUTS: [&str; 5] = ["target", "role", "duration", "justification", "ticket"];
/// How long a link code stays valid.
pub const LINK_CODE_SECS: i64 = 600;
const LINK_PREFIX: &str = "pedm-slack";

/// `[[notify.slack]]`: one Slack app installed in one workspace.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SlackConfig {
    /// Names the app in logs and metrics.
    pub name: String,
    /// The workspace (`T…`): callbacks from any other are refused.
    pub team_id: String,
    /// Bot token (`xoxb-…`), or `bot_token_file`.
    #[serde(default)]
    pub bot_token: Option<String>,
    #[serde(default)]
    pub bot_token_file: Option<PathBuf>,
    /// The app's signing secret, or `signing_secret_file`.
    #[serde(default)]
    pub signing_secret: Option<String>,
    #[serde(default)]
    pub signing_secret_file: Option<PathBuf>,
    /// Channel id where requests waiting for approval are posted (and updated).
    pub channel: String,
    /// Other notification kinds (or kind prefixes ending in `.`) and the channel each goes
    /// to, e.g. `break_glass = "C0SEC"`. High-severity notices not listed go to `channel`.
    #[serde(default)]
    pub channels: BTreeMap<String, String>,
    /// Also send each request waiting for approval to its approvers as a direct message
    /// (kept up to date like the channel's), and remind them there.
    #[serde(default)]
    pub dm_approvers: bool,
    /// A Slack user nobody linked with `/pedm link` acts as the pedm user whose address the
    /// identity provider verified, when Slack says that address is theirs and confirmed
    /// (`users.info`; needs the `users:read.email` scope). The link is then made and
    /// recorded (`identity.linked`, via `slack verified email`).
    #[serde(default)]
    pub map_by_email: bool,
    /// Slack's Web API (change only to reach a stand-in in tests).
    #[serde(default = "default_api_url")]
    pub api_url: String,
}

fn default_api_url() -> String {
    "https://slack.com/api".into()
}

impl std::fmt::Debug for SlackConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SlackConfig")
            .field("name", &self.name)
            .field("team_id", &self.team_id)
            .field("bot_token", &self.bot_token.as_ref().map(|_| "<redacted>"))
            .field("bot_token_file", &self.bot_token_file)
            .field(
                "signing_secret",
                &self.signing_secret.as_ref().map(|_| "<redacted>"),
            )
            .field("signing_secret_file", &self.signing_secret_file)
            .field("channel", &self.channel)
            .field("channels", &self.channels)
            .field("dm_approvers", &self.dm_approvers)
            .field("map_by_email", &self.map_by_email)
            .field("api_url", &self.api_url)
            .finish()
    }
}

/// A Slack app's configuration with its secrets read.
#[derive(Clone)]
pub struct SlackApp {
    pub config: SlackConfig,
    pub bot_token: String,
    pub signing_secret: Vec<u8>,
}

impl SlackConfig {
    /// Checks the configuration and reads the secrets (inline or from their files).
    pub fn load(self) -> Result<SlackApp, String> {
        let n = &self.name;
        let id_ok = |s: &str| {
            !s.is_empty() && s.len() <= 32 && s.bytes().all(|b| b.is_ascii_alphanumeric())
        };
        if !id_ok(&self.team_id) {
            return Err(format!(
                "notify.slack {n:?}: team_id must be a Slack id like T0123ABC"
            ));
        }
        for c in std::iter::once(&self.channel).chain(self.channels.values()) {
            if !id_ok(c) {
                return Err(format!(
                    "notify.slack {n:?}: channel {c:?} must be a channel id like C0123ABC"
                ));
            }
        }
        let secret =
            |what: &str, inline: &Option<String>, file: &Option<PathBuf>| match (inline, file) {
                (Some(s), None) => Ok(s.trim().to_string()),
                (None, Some(p)) => std::fs::read_to_string(p)
                    .map(|s| s.trim().to_string())
                    .map_err(|e| format!("notify.slack {n:?}: {what}_file {}: {e}", p.display())),
                _ => Err(format!(
                    "notify.slack {n:?}: set exactly one of {what} and {what}_file"
                )),
            };
        let bot_token = secret("bot_token", &self.bot_token, &self.bot_token_file)?;
        let signing_secret = secret(
            "signing_secret",
            &self.signing_secret,
            &self.signing_secret_file,
        )?;
        if bot_token.is_empty() || signing_secret.is_empty() {
            return Err(format!(
                "notify.slack {n:?}: empty bot token or signing secret"
            ));
        }
        if !(self.api_url.starts_with("https://") || self.api_url.starts_with("http://127.")) {
            return Err(format!(
                "notify.slack {n:?}: api_url must be https:// (plain http only on loopback)"
            ));
        }
        Ok(SlackApp {
            bot_token,
            signing_secret: signing_secret.into_bytes(),
            config: self,
        })
    }

    /// The channel a notification kind goes to: the longest matching entry of `channels`,
    /// else `channel`.
    pub fn channel_for(&self, kind: &str) -> &str {
        self.channels
            .iter()
            .filter(|(k, _)| *k == kind || (k.ends_with('.') && kind.starts_with(k.as_str())))
            .max_by_key(|(k, _)| k.len())
            .map(|(_, c)| c.as_str())
            .unwrap_or(&self.channel)
    }
}

// ------------------------------------------------------------------------------ signatures

fn mac(secret: &[u8], timestamp: &str, body: &[u8]) -> HmacSha256 {
    let mut m = HmacSha256::new_from_slice(secret).expect("HMAC accepts any key length");
    m.update(b"v0:");
    m.update(timestamp.as_bytes());
    m.update(b":");
    m.update(body);
    m
}

/// `v0=<hex>`, as Slack signs a request to the app.
pub fn sign(secret: &[u8], timestamp: i64, body: &[u8]) -> String {
    format!(
        "v0={}",
        hex::encode(
            mac(secret, &timestamp.to_string(), body)
                .finalize()
                .into_bytes()
        )
    )
}

/// Why a callback was not accepted as Slack's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("missing X-Slack-Request-Timestamp or X-Slack-Signature")]
    Missing,
    #[error("malformed X-Slack-Request-Timestamp")]
    MalformedTimestamp,
    #[error("stale request: its timestamp is {0}s from now (more than 300s)")]
    Stale(i64),
    #[error("signature does not match")]
    Mismatch,
}

/// Checks a callback: the timestamp within [`MAX_SKEW_SECS`] of `now`, and the signature the
/// HMAC of `v0:<timestamp>:<body>` under `secret`, compared in constant time. Returns the
/// timestamp.
pub fn verify(
    secret: &[u8],
    timestamp: Option<&str>,
    signature: Option<&str>,
    body: &[u8],
    now: i64,
) -> Result<i64, SignatureError> {
    let (Some(ts), Some(sig)) = (timestamp, signature) else {
        return Err(SignatureError::Missing);
    };
    let at: i64 = ts
        .trim()
        .parse()
        .map_err(|_| SignatureError::MalformedTimestamp)?;
    let skew = now.saturating_sub(at);
    if skew.unsigned_abs() > MAX_SKEW_SECS.unsigned_abs() {
        return Err(SignatureError::Stale(skew));
    }
    let given = sig
        .trim()
        .strip_prefix("v0=")
        .and_then(|h| hex::decode(h).ok())
        .ok_or(SignatureError::Mismatch)?;
    mac(secret, ts.trim(), body)
        .verify_slice(&given)
        .map_err(|_| SignatureError::Mismatch)?;
    Ok(at)
}

// ------------------------------------------------------------------------------ link codes

fn slack_id(s: &str) -> bool {
    !s.is_empty() && s.len() <= 32 && s.bytes().all(|b| b.is_ascii_alphanumeric())
}

/// A code Slack user `user` of `team` is shown (only to them) by `/pedm link`, and pastes into
/// `pedm link slack` where they are signed in to pedm: the server's proof that the Slack side
/// asked. Signed with the app's signing secret, valid until `expires` (Unix seconds).
pub fn link_code(secret: &[u8], team: &str, user: &str, expires: i64) -> String {
    let claim = format!("{LINK_PREFIX}.{team}.{user}.{expires}");
    let mut m = HmacSha256::new_from_slice(secret).expect("HMAC accepts any key length");
    m.update(b"pedm slack link\0");
    m.update(claim.as_bytes());
    let tag = m.finalize().into_bytes();
    format!("{claim}.{}", hex::encode(&tag[..16]))
}

/// Why a link code was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LinkCodeError {
    #[error("not a pedm Slack link code (run /pedm link in Slack to get one)")]
    Malformed,
    #[error("the link code expired: run /pedm link in Slack again")]
    Expired,
    #[error("the link code is not valid for this server")]
    Invalid,
}

/// Checks a link code under `secret`; returns (team, user).
pub fn verify_link_code(
    secret: &[u8],
    code: &str,
    now: i64,
) -> Result<(String, String), LinkCodeError> {
    let parts: Vec<&str> = code.trim().split('.').collect();
    let [LINK_PREFIX, team, user, expires, _tag] = parts[..] else {
        return Err(LinkCodeError::Malformed);
    };
    let expires: i64 = expires.parse().map_err(|_| LinkCodeError::Malformed)?;
    if !slack_id(team) || !slack_id(user) {
        return Err(LinkCodeError::Malformed);
    }
    let expected = link_code(secret, team, user, expires);
    if !bool::from(subtle::ConstantTimeEq::ct_eq(
        expected.as_bytes(),
        code.trim().as_bytes(),
    )) {
        return Err(LinkCodeError::Invalid);
    }
    if now >= expires {
        return Err(LinkCodeError::Expired);
    }
    Ok((team.to_string(), user.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn card(justification: &str) -> RequestCard {
        RequestCard {
            id: "0192aaaa-0000-7000-8000-000000000001".into(),
            requester: "alice".into(),
            target: "db1".into(),
            role: "admin".into(),
            duration: "1h".into(),
            justification: justification.into(),
            ticket: Some("CHG-1".into()),
            policy: Some("needs-leads".into()),
            status: vec!["Waiting for 1 of leads".into()],
            pending: true,
            extends: Some("0192aaaa-0000-7000-8000-000000000002".into()),
            risk: Some("40: first elevation on db1 in 90 days".into()),
        }
    }

    #[test]
    fn signature_matches_slacks_documented_example() {
        // The example in Slack's "Verifying requests from Slack" documentation.
        let secret = b"8f742231b10e8888abcd99yyyzzz85a5";
        let body = b"token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&channel_id=G8PSS9T3V&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&command=%2Fwebhook-collect&text=&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2FT1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN&trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c";
        let ts = 1531420618;
        let sig = "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503";
        assert_eq!(sign(secret, ts, body), sig);
        assert_eq!(
            verify(secret, Some("1531420618"), Some(sig), body, ts + 10),
            Ok(ts)
        );
        assert_eq!(
            verify(secret, Some("1531420618"), Some(sig), body, ts + 301),
            Err(SignatureError::Stale(301))
        );
        assert_eq!(
            verify(secret, Some("1531420618"), Some(sig), b"other", ts),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify(b"other", Some("1531420618"), Some(sig), body, ts),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify(secret, None, Some(sig), body, ts),
            Err(SignatureError::Missing)
        );
        assert_eq!(
            verify(secret, Some("soon"), Some(sig), body, ts),
            Err(SignatureError::MalformedTimestamp)
        );
    }

    #[test]
    fn link_codes_are_bound_to_secret_ids_and_time() {
        let code = link_code(b"s", "T1", "U2", 1000);
        assert_eq!(
            verify_link_code(b"s", &code, 999),
            Ok(("T1".into(), "U2".into()))
        );
        assert_eq!(
            verify_link_code(b"s", &code, 1000),
            Err(LinkCodeError::Expired)
        );
        assert_eq!(
            verify_link_code(b"x", &code, 1),
            Err(LinkCodeError::Invalid)
        );
        let forged = code.replace(".U2.", ".U3.");
        assert_eq!(
            verify_link_code(b"s", &forged, 1),
            Err(LinkCodeError::Invalid)
        );
        assert_eq!(
            verify_link_code(b"s", "hello", 1),
            Err(LinkCodeError::Malformed)
        );
    }

    #[test]
    fn cards_and_modals_are_valid_block_kit_and_keep_input_plain() {
        let hostile = format!(
            "<!channel> *urgent* <https://evil|click> {}",
            "x".repeat(5000)
        );
        let c = card(&hostile);
        assert_eq!(block_kit_problems(&c.blocks()), Vec::<String>::new());
        assert_eq!(block_kit_problems(&c.deny_modal()), Vec::<String>::new());
        let blocks = c.blocks();
        let justification = blocks
            .as_array()
            .and_then(|b| {
                b.iter().map(|b| &b["text"]).find(|t| {
                    t["text"]
                        .as_str()
                        .is_some_and(|s| s.starts_with("Justification"))
                })
            })
            .cloned()
            .unwrap_or_default();
        assert_eq!(justification["type"], "plain_text");
        assert!(
            justification["text"]
                .as_str()
                .unwrap_or_default()
                .contains("<!channel>")
        );
        assert!(!c.text().contains('<'));
        assert!(
            blocks
                .to_string()
                .contains("Risk 40: first elevation on db1"),
            "approvers see the risk"
        );
        let decided = RequestCard {
            pending: false,
            ..c
        };
        assert!(!decided.blocks().to_string().contains(APPROVE_ACTION));
        assert_eq!(
            block_kit_problems(&notice_blocks("x")),
            Vec::<String>::new()
        );
        // The request form keeps what was typed within each input's limit, and the result
        // view is a valid modal too.
        let form = request_modal(["web1", "root", "30m", &hostile, ""]);
        assert_eq!(block_kit_problems(&form), Vec::<String>::new());
        assert_eq!(form["blocks"][0]["element"]["initial_value"], "web1");
        assert!(form["blocks"][4]["element"].get("initial_value").is_none());
        assert_eq!(form["blocks"][4]["optional"], true);
        assert_eq!(
            block_kit_problems(&result_view("Access requested", &hostile)),
            Vec::<String>::new()
        );
        let mut too_long = form.clone();
        too_long["blocks"][0]["element"]["initial_value"] = json!("x".repeat(201));
        assert_eq!(block_kit_problems(&too_long).len(), 1);
        // The checker itself catches what Slack would refuse.
        let bad = json!([{ "type": "header", "text": { "type": "mrkdwn", "text": "" } },
                         { "type": "actions", "elements": [] }, { "type": "video" }]);
        assert_eq!(
            block_kit_problems(&bad).len(),
            4,
            "{:?}",
            block_kit_problems(&bad)
        );
    }

    #[test]
    fn channels_by_kind_prefer_the_longest_match() {
        let mut c: SlackConfig = toml::from_str(
            r#"name = "corp"
               team_id = "T1"
               bot_token = "xoxb-1"
               signing_secret = "s"
               channel = "C1"
               [channels]
               "provision." = "C2"
               "provision.revoke_failing" = "C3""#,
        )
        .unwrap();
        assert_eq!(c.channel_for("break_glass"), "C1");
        assert_eq!(c.channel_for("provision.drift_removal_refused"), "C2");
        assert_eq!(c.channel_for("provision.revoke_failing"), "C3");
        assert!(!format!("{c:?}").contains("xoxb"));
        assert!(c.clone().load().is_ok());
        c.api_url = "http://evil.example".into();
        assert!(c.load().err().unwrap_or_default().contains("api_url"));
    }
}
