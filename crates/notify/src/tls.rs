//! Extra trust roots for outgoing HTTPS calls (webhooks, witnesses, provisioners): a
//! `ca_file` of PEM certificates trusted in addition to the system's roots. Certificates are
//! always verified; there is no switch to accept invalid ones.

use std::path::Path;

/// The certificates in the PEM file `path`; an error names the file and what is wrong.
pub fn ca_roots(path: &Path) -> Result<Vec<reqwest::Certificate>, String> {
    let pem = std::fs::read(path).map_err(|e| format!("ca_file {}: {e}", path.display()))?;
    let certs = reqwest::Certificate::from_pem_bundle(&pem)
        .map_err(|e| format!("ca_file {}: not PEM certificates: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!(
            "ca_file {}: holds no CERTIFICATE block",
            path.display()
        ));
    }
    Ok(certs)
}

/// A client builder trusting `ca_file` (if any) besides the system's roots.
pub fn with_ca(
    builder: reqwest::ClientBuilder,
    ca_file: Option<&Path>,
) -> Result<reqwest::ClientBuilder, String> {
    Ok(match ca_file {
        None => builder,
        Some(p) => builder.tls_certs_merge(ca_roots(p)?),
    })
}
