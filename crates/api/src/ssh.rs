//! SSH certificates: a grant's user certificate, host certificates, the CA keys and the KRL.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// `POST /grants/{id}/ssh-certificate`: the public key to certify (made on the caller's
/// machine; the private key never leaves it).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct IssueSshCertificate {
    /// One OpenSSH public key line (`ssh-ed25519 AAAA...`).
    pub public_key: String,
}

/// A user certificate for a grant, and what `ssh` needs to use it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct SshCertificateIssued {
    /// One OpenSSH line, as in `id_ed25519-cert.pub`.
    pub certificate: String,
    pub record: pedm_core::ssh::SshCertificate,
    /// The account to log in as (the role's run-as).
    pub login: String,
    /// Where to connect: the target's `address` label, else its name.
    pub address: String,
    /// The target's `port` label, else 22.
    pub port: u16,
    /// `@cert-authority` lines trusting pedm's host CA for `address` (for known_hosts).
    pub known_hosts: Vec<String>,
}

/// `POST /ssh/host-certificates`: a host key to certify (needs `manage_targets`).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SignHostKey {
    /// The host's public key line (`/etc/ssh/ssh_host_ed25519_key.pub`).
    pub public_key: String,
    /// The names clients use for the host (hostnames, addresses).
    pub principals: Vec<String>,
    /// How long the certificate is valid (`30d`; at most the server's `ssh.max_host_cert_lifetime`).
    #[serde(default)]
    pub validity: Option<String>,
}

/// A host certificate (`HostCertificate` in sshd_config).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct HostCertificateIssued {
    pub certificate: String,
    pub record: pedm_core::ssh::SshCertificate,
}

/// The CA keys, newest first (`TrustedUserCAKeys` takes `user`; known_hosts trusts `host`).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct SshCaKeys {
    pub user: Vec<String>,
    pub host: Vec<String>,
}
