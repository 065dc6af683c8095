//! Signing keys shared through the database by every instance given the same key-encryption
//! key (`key_encryption_key = "/etc/pedm/kek"`): the audit checkpoint key and the key of the
//! snapshots agents enforce. Instances behind one load balancer then sign with one identity,
//! so an auditor's public key and an agent's `server_key` hold whichever instance answers.
//!
//! The first instance to start with a KEK seals its key (the key file it already has, so a
//! single instance keeps its identity when it grows into several, or a new one) into
//! `integration_state` (`sealed-keys`/NAME) with a conditional insert, and records
//! `key.shared`; the others open that one. Without a KEK each instance keeps its own key file,
//! as before. A wrong KEK stops pedmd at start, naming both KEK ids: never a second identity.
//!
//! Changing the KEK: give every instance the new file as `key_encryption_key` and the old one
//! in `previous_key_encryption_keys`; the first to start opens the keys with the old KEK,
//! seals them again under the new one and records `key.resealed`; then drop the old file.

use crate::key_file::load_or_create_key;
use anyhow::{Context, bail};
use pedm_audit::SigningKey;
use pedm_core::audit::NewAuditEvent;
use pedm_core::integration::{IntegrationEntry, IntegrationWrite};
use pedm_core::model::SYSTEM_ACTOR;
use pedm_core::store::{Changeset, Store, StoreError, Write};
use pedm_pki::sealed::{KeyEncryptionKey, sealed_by};
use std::path::{Path, PathBuf};

const INTEGRATION: &str = "sealed-keys";

/// Which key: its name in the database and what it is called in messages (also the sealed
/// text's associated data, so one key's ciphertext cannot stand in for another's).
#[derive(Debug, Clone, Copy)]
pub struct KeyName {
    pub name: &'static str,
    pub what: &'static str,
}

pub const AUDIT_KEY: KeyName = KeyName {
    name: "audit",
    what: "audit signing key",
};
pub const AGENT_KEY: KeyName = KeyName {
    name: "agent",
    what: "agent snapshot signing key",
};

/// The KEK keys are sealed under, and older ones they may still be sealed under.
pub struct Keks {
    pub current: KeyEncryptionKey,
    pub previous: Vec<KeyEncryptionKey>,
}

impl Keks {
    /// Reads the KEK files (before the database is touched: a bad file stops pedmd first).
    pub fn load(current: &Path, previous: &[PathBuf]) -> anyhow::Result<Keks> {
        let load = |p: &Path| KeyEncryptionKey::load(p).context("key_encryption_key");
        Ok(Keks {
            current: load(current)?,
            previous: previous.iter().map(|p| load(p)).collect::<Result<_, _>>()?,
        })
    }
}

/// The key to sign with: the one sealed in the database when `keks` is given (sealing this
/// instance's own first if there is none yet), else the key file at `path`.
pub async fn signing_key(
    store: &dyn Store,
    keks: Option<&Keks>,
    key: KeyName,
    path: &Path,
) -> anyhow::Result<SigningKey> {
    let Some(keks) = keks else {
        return load_or_create_key(path, key.what);
    };
    let kek = &keks.current;
    // Twice at most: if another instance seals first, its key is read on the second round.
    for _ in 0..2 {
        if let Some(entry) = store
            .integration_entry(INTEGRATION, key.name)
            .await
            .with_context(|| format!("reading the shared {}", key.what))?
        {
            let older = keks
                .previous
                .iter()
                .find(|k| sealed_by(&entry.value) == Some(k.id()));
            let secret = older.unwrap_or(kek).open(key.what, &entry.value)?;
            let text = std::str::from_utf8(&secret)
                .with_context(|| format!("the shared {} is not text", key.what))?;
            let signing = SigningKey::from_secret_text(text)
                .with_context(|| format!("the shared {}", key.what))?;
            if let Some(old) = older {
                reseal(store, kek, old, key, &signing).await?;
            }
            tracing::info!(key = %signing.public_key(), kek = kek.id(),
                "using the {} shared through the database", key.what);
            return Ok(signing);
        }
        let signing = if path.exists() {
            SigningKey::load(path)
                .with_context(|| format!("cannot load the {} {}", key.what, path.display()))?
        } else {
            SigningKey::generate().with_context(|| format!("cannot generate the {}", key.what))?
        };
        let now = jiff::Timestamp::now();
        let claim = IntegrationWrite::Claim {
            entry: sealed_entry(kek, key, &signing)?,
            now,
        };
        let event = NewAuditEvent::new(
            now,
            SYSTEM_ACTOR,
            "key.shared",
            Some(format!("key:{}", key.name)),
        )
        .data(serde_json::json!({
            "key": key.what,
            "public_key": signing.public_key().to_string(),
            "kek_id": kek.id(),
        }));
        match store
            .commit(
                Changeset::new()
                    .write(Write::Integration(claim))
                    .event(event),
            )
            .await
        {
            Ok(_) => {
                tracing::info!(key = %signing.public_key(), kek = kek.id(),
                    "sealed the {} into the database for every instance", key.what);
                return Ok(signing);
            }
            // Another instance sealed its key first: that one is the shared key.
            Err(StoreError::AlreadyExists(_)) => continue,
            Err(e) => return Err(e).with_context(|| format!("sealing the {}", key.what)),
        }
    }
    bail!(
        "the shared {} was claimed but cannot be read back; check the database",
        key.what
    )
}

/// The database entry holding `signing` sealed under `kek`.
fn sealed_entry(
    kek: &KeyEncryptionKey,
    key: KeyName,
    signing: &SigningKey,
) -> anyhow::Result<IntegrationEntry> {
    Ok(IntegrationEntry {
        integration: INTEGRATION.into(),
        key: key.name.into(),
        value: kek.seal(key.what, signing.to_secret_text().as_bytes())?,
        expires_at: None,
    })
}

/// Seals `signing` again under `kek` in place of the seal under `old` (a change of KEK).
/// Instances doing it at once each write a valid seal of the same key.
async fn reseal(
    store: &dyn Store,
    kek: &KeyEncryptionKey,
    old: &KeyEncryptionKey,
    key: KeyName,
    signing: &SigningKey,
) -> anyhow::Result<()> {
    let now = jiff::Timestamp::now();
    let put = IntegrationWrite::Put(sealed_entry(kek, key, signing)?);
    let event = NewAuditEvent::new(
        now,
        SYSTEM_ACTOR,
        "key.resealed",
        Some(format!("key:{}", key.name)),
    )
    .data(serde_json::json!({
        "key": key.what,
        "public_key": signing.public_key().to_string(),
        "from_kek_id": old.id(),
        "kek_id": kek.id(),
    }));
    store
        .commit(Changeset::new().write(Write::Integration(put)).event(event))
        .await
        .with_context(|| format!("sealing the {} under the new KEK", key.what))?;
    tracing::info!(
        from = old.id(),
        to = kek.id(),
        "sealed the {} under the new KEK",
        key.what
    );
    Ok(())
}
