//! `pedm user add --external`, `pedm user extend`, `pedm user external`,
//! `pedm report external`.

use crate::ctx::Ctx;
use crate::output::{self, Table, time};
use anyhow::{Context, Result};
use pedm_api::ReportQuery;
use pedm_api::external::*;

fn account_rows(t: &mut Table, items: &[ExternalAccount]) {
    for x in items {
        t.row(vec![
            x.user.clone(),
            x.sponsor.clone(),
            time(x.expires_at),
            output::opt_time(x.notified_at),
            output::opt_time(x.expired_at),
        ]);
    }
}

const COLUMNS: [&str; 5] = ["USER", "SPONSOR", "EXPIRES", "SPONSOR TOLD", "EXPIRED"];

pub async fn add(
    ctx: &Ctx,
    name: String,
    display_name: Option<String>,
    sponsor: Option<String>,
    expires: Option<String>,
) -> Result<()> {
    let body = CreateExternalUser {
        name,
        display_name,
        sponsor: sponsor.context("--external needs --sponsor")?,
        expires: expires.context("--external needs --expires")?,
    };
    let x = ctx.client.create_external_user(&body).await?;
    ctx.emit(&x, || {
        let mut t = Table::new(&COLUMNS);
        account_rows(&mut t, std::slice::from_ref(&x.external));
        t.render()
    })
}

pub async fn extend(ctx: &Ctx, name: String, expires: String) -> Result<()> {
    let x = ctx
        .client
        .extend_external_user(&name, &ExtendExternalUser { expires })
        .await?;
    ctx.emit(&x, || {
        let mut t = Table::new(&COLUMNS);
        account_rows(&mut t, std::slice::from_ref(&x));
        t.render()
    })
}

pub async fn list(ctx: &Ctx) -> Result<()> {
    let items = ctx.client.list_external_users().await?;
    ctx.emit(&items, || {
        let mut t = Table::new(&COLUMNS);
        account_rows(&mut t, &items);
        t.render()
    })
}

pub async fn report(ctx: &Ctx, since: String, format: &str) -> Result<()> {
    let rows = ctx
        .client
        .external_report(&ReportQuery { since: Some(since) })
        .await?;
    if ctx.json || format == "json" {
        return Ok(output::write_out(&output::json_text(&rows)?)?);
    }
    let mut t = Table::new(&[
        "USER",
        "SPONSOR",
        "EXPIRES",
        "LIVE",
        "ELEVATIONS",
        "ACTIONS",
    ]);
    for r in &rows {
        let elevations = r
            .elevations
            .iter()
            .map(|e| format!("{}/{} ({})", e.target, e.role, e.state))
            .collect::<Vec<_>>()
            .join(", ");
        let actions = r
            .actions
            .iter()
            .map(|(a, n)| format!("{a}×{n}"))
            .collect::<Vec<_>>()
            .join(", ");
        t.row(vec![
            r.account.user.clone(),
            r.account.sponsor.clone(),
            time(r.account.expires_at),
            if r.live { "yes" } else { "no" }.into(),
            elevations,
            actions,
        ]);
    }
    Ok(output::write_out(&t.render())?)
}
