//! `pedm aws credentials` and `pedm kube credentials`: short-lived credentials a grant's
//! target issues for its holder, printed in the shape the target's own tools read: the AWS
//! CLI's `credential_process` JSON, kubectl's ExecCredential. `pedm aws console`: a console
//! sign-in URL.

use crate::ctx::Ctx;
use crate::ssh::pick_grant;
use anyhow::{Result, bail};
use pedm_api::CredentialsForm;

async fn grant_of(
    ctx: &Ctx,
    grant: Option<uuid::Uuid>,
    target: Option<String>,
) -> Result<uuid::Uuid> {
    Ok(match (grant, target) {
        (Some(id), _) => id,
        (None, Some(t)) => pick_grant(ctx, &t, None).await?,
        (None, None) => bail!("name the grant (--grant ID) or the target (--target NAME)"),
    })
}

/// Prints the credentials of the grant (the one named, or the caller's one active grant on
/// `target`), alone on stdout (the tool reading them wants nothing else); anything wrong goes
/// to stderr with a non-zero status. `kind` is the kind of credentials the command expects.
pub async fn print(
    ctx: &Ctx,
    grant: Option<uuid::Uuid>,
    target: Option<String>,
    kind: &str,
) -> Result<()> {
    let id = grant_of(ctx, grant, target).await?;
    let issued = ctx
        .client
        .grant_credentials(id, CredentialsForm::Tools)
        .await?;
    if issued.kind != kind {
        bail!(
            "grant {id}'s target issues {} credentials, not {kind} ones",
            issued.kind
        );
    }
    println!("{}", issued.credentials);
    Ok(())
}

/// Prints the console sign-in URL of the grant alone on stdout (for `xdg-open "$(…)"`), and
/// how long it lasts on stderr.
pub async fn console(ctx: &Ctx, grant: Option<uuid::Uuid>, target: Option<String>) -> Result<()> {
    let id = grant_of(ctx, grant, target).await?;
    let issued = ctx
        .client
        .grant_credentials(id, CredentialsForm::Console)
        .await?;
    let url = issued.credentials["url"].as_str().unwrap_or_default();
    // What reaches the terminal is a URL and nothing else.
    if issued.kind != "aws-console"
        || !(url.starts_with("https://") || url.starts_with("http://"))
        || url.chars().any(|c| c.is_control() || c.is_whitespace())
    {
        bail!("grant {id}'s target answered without a console sign-in URL");
    }
    println!("{url}");
    eprintln!(
        "signs in once, within 15 minutes; the console session ends at {} (the grant's end at \
         the latest)",
        issued.expires_at
    );
    Ok(())
}
