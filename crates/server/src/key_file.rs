//! Ed25519 signing keys kept in files: the audit log's, the witness's, the agent snapshots'.

use anyhow::Context;
use pedm_audit::SigningKey;
use std::path::Path;

/// Loads the signing key from `path`, or creates one there (mode 0600) if the file is missing.
/// `what` names the key in errors and logs ("audit signing key", "agent snapshot key", ...).
pub(crate) fn load_or_create_key(path: &Path, what: &str) -> anyhow::Result<SigningKey> {
    if path.exists() {
        return SigningKey::load(path)
            .with_context(|| format!("cannot load the {what} {}", path.display()));
    }
    if let Some(dir) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("cannot create the directory of {}", path.display()))?;
    }
    let key = SigningKey::generate().with_context(|| format!("cannot generate the {what}"))?;
    key.save(path)
        .with_context(|| format!("cannot write the {what} {}", path.display()))?;
    tracing::info!(file = %path.display(), key = %key.public_key(), "created the {what}");
    Ok(key)
}
