//! `pedm-agent status`: what the agent on this host enforces and what it still owes the
//! server, read from its state directory (root only, like the daemon).

use crate::config::Config;
use crate::outbox::Outbox;
use std::path::Path;

/// Prints the status; exit status 0, or 1 when records the server refused are kept here (so
/// a monitoring check can alert on it).
pub fn print(config: &Path) -> anyhow::Result<i32> {
    let cfg = Config::load(config)?.resolve()?;
    let outbox = Outbox::open(&cfg.state_dir)?;
    println!("host:        {}", cfg.host);
    println!("server:      {}", cfg.server_url);
    match crate::snapshot::load(&cfg.state_dir, &cfg.server_key, &cfg.host) {
        Ok(Some(e)) => println!(
            "snapshot:    audit position {}, issued {}, {} grant(s), policy version {}",
            e.snapshot.seq,
            e.snapshot.issued_at,
            e.snapshot.grants.len(),
            e.snapshot.policy.as_ref().map_or(0, |p| p.version)
        ),
        Ok(None) => println!("snapshot:    none yet (nothing can run until the server answers)"),
        Err(e) => println!("snapshot:    unusable: {e}"),
    }
    let containment = match crate::contain::cgroup::Cgroups::locate(cfg.cgroup.as_deref()) {
        Ok(c) if c.prepared() => Ok(c.observed()),
        Ok(c) => Err(format!(
            "{} is not set up (the agent makes it when it starts)",
            c.root().display()
        )),
        Err(e) => Err(e),
    };
    println!(
        "containment: {}",
        crate::contain::cgroup::describe(&containment)
    );
    let (reports, sessions) = outbox.pending()?;
    println!("to deliver:  {reports} report(s), {sessions} session(s)");
    let (bad_reports, bad_sessions) = outbox.undelivered()?;
    if bad_reports + bad_sessions > 0 {
        println!(
            "UNDELIVERED: {bad_reports} report(s), {bad_sessions} session(s) refused by the server, \
             kept in {} (*.rejected)",
            cfg.state_dir.join("outbox").display()
        );
        return Ok(1);
    }
    println!("undelivered: none");
    Ok(0)
}
