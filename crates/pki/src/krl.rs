//! OpenSSH key revocation lists: the binary format of OpenSSH's PROTOCOL.krl that sshd reads
//! from `RevokedKeys` and `ssh-keygen -Q` checks. pedm lists certificates by serial and by key
//! id (the grant id) under the CA key that signed them; unsigned (sshd does not check KRL
//! signatures: the file's integrity is the fetching host's TLS connection to pedmd).

use jiff::Timestamp;
use pedm_core::ssh::{RevokedCert, SshCaError};
use ssh_key::{HashAlg, PublicKey};
use std::collections::BTreeSet;

const MAGIC: &[u8; 8] = b"SSHKRL\n\0";
const FORMAT_VERSION: u32 = 1;
const SECTION_CERTIFICATES: u8 = 1;
const CERT_SERIAL_LIST: u8 = 0x20;
const CERT_KEY_ID: u8 = 0x23;

fn put_u32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_be_bytes());
}

fn put_u64(out: &mut Vec<u8>, v: u64) {
    out.extend_from_slice(&v.to_be_bytes());
}

fn put_string(out: &mut Vec<u8>, s: &[u8]) -> Result<(), SshCaError> {
    let len = u32::try_from(s.len())
        .map_err(|_| SshCaError::Signing("a KRL section longer than 4 GiB".into()))?;
    put_u32(out, len);
    out.extend_from_slice(s);
    Ok(())
}

/// A KRL revoking `revoked` under each of `ca_keys` that signed some of them (matched by
/// SHA-256 fingerprint); certificates of other CAs are left out. Version and date: `now`.
/// An error rather than a KRL missing something it should list.
pub fn build(
    ca_keys: &[PublicKey],
    revoked: &[RevokedCert],
    now: Timestamp,
) -> Result<Vec<u8>, SshCaError> {
    let secs = u64::try_from(now.as_second())
        .map_err(|_| SshCaError::Signing(format!("the time {now} is before 1970")))?;
    let mut out = Vec::with_capacity(64 + revoked.len() * 48);
    out.extend_from_slice(MAGIC);
    put_u32(&mut out, FORMAT_VERSION);
    put_u64(&mut out, secs); // krl_version: grows with time
    put_u64(&mut out, secs); // generated_date
    put_u64(&mut out, 0); // flags
    put_string(&mut out, b"")?; // reserved
    put_string(&mut out, b"pedm: certificates of grants that ended early")?;
    for ca in ca_keys {
        let fingerprint = ca.fingerprint(HashAlg::Sha256).to_string();
        let mine = revoked.iter().filter(|r| r.ca_fingerprint == fingerprint);
        let serials: BTreeSet<u64> = mine.clone().map(|r| r.serial).filter(|s| *s != 0).collect();
        let key_ids: BTreeSet<&str> = mine.map(|r| r.key_id.as_str()).collect();
        if serials.is_empty() && key_ids.is_empty() {
            continue;
        }
        let blob = ca
            .to_bytes()
            .map_err(|e| SshCaError::Signing(format!("encoding the CA key {fingerprint}: {e}")))?;
        let mut section = Vec::new();
        put_string(&mut section, &blob)?;
        put_string(&mut section, b"")?; // reserved
        if !serials.is_empty() {
            let mut data = Vec::with_capacity(serials.len() * 8);
            for s in serials {
                put_u64(&mut data, s);
            }
            section.push(CERT_SERIAL_LIST);
            put_string(&mut section, &data)?;
        }
        if !key_ids.is_empty() {
            let mut data = Vec::new();
            for id in key_ids {
                put_string(&mut data, id.as_bytes())?;
            }
            section.push(CERT_KEY_ID);
            put_string(&mut section, &data)?;
        }
        out.push(SECTION_CERTIFICATES);
        put_string(&mut out, &section)?;
    }
    Ok(out)
}
