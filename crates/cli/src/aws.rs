//! `pedm aws credentials`: STS credentials for a grant on an `aws` target, in the shape the
//! AWS CLI and SDKs read from a `credential_process`.

use crate::commands::Ctx;
use crate::ssh::pick_grant;
use anyhow::{Result, bail};

/// `pedm aws credentials`: the grant's STS credentials as `credential_process` JSON, alone
/// on stdout (the AWS CLI reads it); anything wrong goes to stderr with a non-zero status.
pub async fn credentials(
    ctx: &Ctx,
    grant: Option<uuid::Uuid>,
    target: Option<String>,
) -> Result<()> {
    let id = match (grant, target) {
        (Some(id), _) => id,
        (None, Some(t)) => pick_grant(ctx, &t, None).await?,
        (None, None) => bail!("name the grant (--grant ID) or the target (--target NAME)"),
    };
    let issued = ctx.client.grant_credentials(id).await?;
    if issued.kind != "aws" {
        bail!(
            "grant {id}'s target issues {} credentials, not AWS ones",
            issued.kind
        );
    }
    println!("{}", issued.credentials);
    Ok(())
}
