//! `pedm-agent renew`: the agent's client certificate renewed by hand (the daemon renews it by
//! itself once two thirds of its life are gone).

use std::path::Path;

/// `pedm-agent renew`: renews the certificate of the configuration at `config` if two thirds
/// of its life are gone (or `force`). Returns what was done, for people.
pub async fn renew_now(config: &Path, force: bool) -> anyhow::Result<String> {
    let cfg = crate::config::Config::load(config)?.resolve()?;
    let crate::config::Credential::Certificate(files) = &cfg.credential else {
        anyhow::bail!(
            "{} uses a host token (plain HTTP): there is no certificate to renew",
            config.display()
        );
    };
    let due = files.renew_in()?;
    if !force && !due.is_zero() {
        let at = jiff::Timestamp::now() + jiff::SignedDuration::try_from(due)?;
        return Ok(format!(
            "the certificate of host {} is not due for renewal until {at}",
            cfg.host
        ));
    }
    let client = files.client(&cfg.server_url, cfg.ca_file.as_deref())?;
    let until = files.renew(&client, &cfg.host).await?;
    Ok(format!(
        "renewed the certificate of host {}: valid until {until} ({})",
        cfg.host,
        files.cert.display()
    ))
}
