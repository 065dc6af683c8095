//! `pedm aws credentials` and `pedm kube credentials`: short-lived credentials a grant's
//! target issues for its holder, printed in the shape the target's own tools read: the AWS
//! CLI's `credential_process` JSON, kubectl's ExecCredential.

use crate::commands::Ctx;
use crate::ssh::pick_grant;
use anyhow::{Result, bail};

/// Prints the credentials of the grant (the one named, or the caller's one active grant on
/// `target`), alone on stdout (the tool reading them wants nothing else); anything wrong goes
/// to stderr with a non-zero status. `kind` is the kind of credentials the command expects.
pub async fn print(
    ctx: &Ctx,
    grant: Option<uuid::Uuid>,
    target: Option<String>,
    kind: &str,
) -> Result<()> {
    let id = match (grant, target) {
        (Some(id), _) => id,
        (None, Some(t)) => pick_grant(ctx, &t, None).await?,
        (None, None) => bail!("name the grant (--grant ID) or the target (--target NAME)"),
    };
    let issued = ctx.client.grant_credentials(id).await?;
    if issued.kind != kind {
        bail!(
            "grant {id}'s target issues {} credentials, not {kind} ones",
            issued.kind
        );
    }
    println!("{}", issued.credentials);
    Ok(())
}
