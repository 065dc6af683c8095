//! OpenSSH certificates: hosts reached over SSH without an agent (targets of kind `ssh`).
//!
//! The privilege on such a target is a short-lived user certificate: signed by pedmd's user
//! CA for a public key the holder sends (the private key never leaves their machine), valid
//! exactly for the grant's window, for the role's `run_as` login, with its options from the
//! role's [`SshAccess`]; key id = grant id, so sshd's own log names the grant. A grant that
//! ends early puts its certificates in the KRL hosts fetch (`RevokedKeys`). Host keys are
//! signed by a separate host CA, so clients trust hosts by a `@cert-authority` line.
//!
//! The signing itself happens behind [`SshCa`] (the server plugs `pedm-pki` in); the core
//! decides who gets what certificate and keeps the record.

use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Longest public key line taken (an RSA 16384-bit key is about 2.8 KB).
pub const MAX_PUBLIC_KEY: usize = 8192;
/// Longest `force_command`.
pub const MAX_FORCE_COMMAND: usize = 4096;
/// Most names on a host certificate.
pub const MAX_HOST_PRINCIPALS: usize = 32;
/// What a host certificate's names look like (host names and addresses as clients type them).
pub const HOST_NAME: &str = "^[A-Za-z0-9._:-]{1,253}$";

/// Whether `s` matches [`HOST_NAME`].
pub fn valid_host_name(s: &str) -> bool {
    (1..=253).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_' | b':'))
}

/// What a role lets its holder do over SSH, beyond logging in as the role's `run_as`.
/// Everything is off unless the role says so; a pty is given unless `no_pty`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct SshAccess {
    /// The only command the certificate runs (`force-command`), whatever the client asks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub force_command: Option<String>,
    /// Only from the address the request was made from (`source-address`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub bind_source_address: bool,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub port_forwarding: bool,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub agent_forwarding: bool,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub x11_forwarding: bool,
    /// No terminal (`permit-pty` left out): commands only.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub no_pty: bool,
}

impl SshAccess {
    pub fn is_default(&self) -> bool {
        *self == SshAccess::default()
    }

    /// Why these settings cannot be taken, if so.
    pub fn check(&self) -> Result<(), String> {
        if let Some(c) = &self.force_command {
            if c.trim().is_empty() {
                return Err("force_command is empty".into());
            }
            if c.len() > MAX_FORCE_COMMAND {
                return Err(format!(
                    "force_command is longer than {MAX_FORCE_COMMAND} bytes"
                ));
            }
            if c.chars().any(char::is_control) {
                return Err("force_command contains control characters".into());
            }
        }
        Ok(())
    }

    /// The certificate extensions these settings permit (OpenSSH names).
    pub fn extensions(&self) -> Vec<String> {
        [
            (!self.no_pty, "permit-pty"),
            (self.port_forwarding, "permit-port-forwarding"),
            (self.agent_forwarding, "permit-agent-forwarding"),
            (self.x11_forwarding, "permit-X11-forwarding"),
        ]
        .into_iter()
        .filter(|(on, _)| *on)
        .map(|(_, name)| name.to_string())
        .collect()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum CertKind {
    User,
    Host,
}

impl CertKind {
    pub fn as_str(self) -> &'static str {
        match self {
            CertKind::User => "user",
            CertKind::Host => "host",
        }
    }
}

/// What to sign.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertRequest {
    pub kind: CertKind,
    /// The subject's public key, one OpenSSH line (`ssh-ed25519 AAAA... comment`).
    pub public_key: String,
    pub key_id: String,
    pub serial: u64,
    pub principals: Vec<String>,
    pub valid_after: Timestamp,
    pub valid_before: Timestamp,
    /// (name, value): `force-command`, `source-address`.
    pub critical_options: Vec<(String, String)>,
    pub extensions: Vec<String>,
}

/// A signed certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedCert {
    /// One OpenSSH line (`ssh-ed25519-cert-v01@openssh.com AAAA...`), as in `*-cert.pub`.
    pub certificate: String,
    /// `SHA256:...` of the subject's key.
    pub key_fingerprint: String,
    /// `SHA256:...` of the CA key that signed it.
    pub ca_fingerprint: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SshCaError {
    /// The public key sent is not one (or of a kind not accepted); nothing was signed.
    #[error("{0}")]
    BadKey(String),
    #[error("signing failed: {0}")]
    Signing(String),
}

/// A certificate whose grant ended before the certificate did: what the KRL lists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RevokedCert {
    pub serial: u64,
    pub key_id: String,
    pub ca_fingerprint: String,
}

/// The SSH certificate authorities (user and host), behind which the keys are kept.
pub trait SshCa: Send + Sync + 'static {
    /// Signs with the newest key of `req.kind`'s CA.
    fn sign(&self, req: &CertRequest) -> Result<SignedCert, SshCaError>;
    /// Every key of the kind's CA (OpenSSH public key lines), the signing one first: hosts
    /// trust all of them, so certificates made before a rotation stay good.
    fn public_keys(&self, kind: CertKind) -> Vec<String>;
    /// An OpenSSH KRL (binary, PROTOCOL.krl) revoking `revoked` (serials and key ids, under
    /// the user CA key that signed each). An error, never a KRL that leaves one out.
    fn krl(&self, revoked: &[RevokedCert], now: Timestamp) -> Result<Vec<u8>, SshCaError>;
}

/// A certificate pedmd issued, as recorded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SshCertificate {
    /// Random, unique (decimal in JSON: beyond what JSON numbers hold exactly).
    #[serde(with = "serial_text")]
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub serial: u64,
    pub kind: CertKind,
    /// User certificates: the grant it was issued for (also the key id).
    pub grant_id: Option<Uuid>,
    pub key_id: String,
    pub principals: Vec<String>,
    pub key_fingerprint: String,
    pub ca_fingerprint: String,
    pub valid_after: Timestamp,
    pub valid_before: Timestamp,
    /// Who asked: the holder, or the admin who signed a host key.
    pub issued_by: String,
    pub issued_at: Timestamp,
}

mod serial_text {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &u64, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(v)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

/// A random serial, never 0 (OpenSSH treats 0 as "no serial").
pub fn new_serial() -> u64 {
    loop {
        let s = u64::from_le_bytes(crate::token::random_bytes::<8>());
        if s != 0 {
            return s;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_published_host_name_pattern_is_the_check() {
        let re = regex::Regex::new(HOST_NAME).unwrap();
        for s in [
            "web1",
            "web1.example.com",
            "10.0.0.5",
            "::1",
            "a_b-c",
            "",
            " web1",
            "web 1",
            "web1;rm",
            "wéb",
            "*",
            &"a".repeat(253),
            &"a".repeat(254),
        ] {
            assert_eq!(re.is_match(s), valid_host_name(s), "{s:?}");
        }
    }

    #[test]
    fn access_gives_a_pty_and_nothing_else_by_default() {
        assert_eq!(SshAccess::default().extensions(), vec!["permit-pty"]);
        let all = SshAccess {
            port_forwarding: true,
            agent_forwarding: true,
            x11_forwarding: true,
            no_pty: true,
            ..Default::default()
        };
        assert_eq!(
            all.extensions(),
            vec![
                "permit-port-forwarding",
                "permit-agent-forwarding",
                "permit-X11-forwarding"
            ]
        );
        for bad in ["", "  ", "echo\nrm -rf /"] {
            let a = SshAccess {
                force_command: Some(bad.to_string()),
                ..Default::default()
            };
            assert!(a.check().is_err(), "{bad:?}");
        }
    }
}
