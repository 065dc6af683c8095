//! `pedm privacy status|erase|hold|release`: data subjects' personal data in the audit log.

use crate::args::PrivacyCmd;
use crate::ctx::Ctx;
use crate::output::{Table, time};
use anyhow::Result;
use pedm_api::privacy::*;

fn user_arg(user: &str) -> Result<()> {
    // Checked here too: the name goes into the request's path.
    pedm_core::model::validate_name("user", user).map_err(|e| anyhow::anyhow!("{e}"))
}

fn status_table(s: &PrivacyStatus) -> String {
    let mut t = Table::plain();
    t.row(vec!["user".into(), s.user.clone()]);
    t.row(vec![
        "sealing".into(),
        if s.sealing { "on" } else { "off" }.into(),
    ]);
    t.row(vec![
        "key".into(),
        s.key_id.clone().unwrap_or_else(|| "none yet".into()),
    ]);
    t.row(vec![
        "legal hold".into(),
        match &s.hold {
            Some(h) => format!("since {} by {}: {}", time(h.at), h.by, h.reason),
            None => "none".into(),
        },
    ]);
    t.render()
}

pub async fn run(ctx: &Ctx, c: PrivacyCmd) -> Result<()> {
    match c {
        PrivacyCmd::Status { user } => {
            user_arg(&user)?;
            let s = ctx.client.privacy_status(&user).await?;
            ctx.emit(&s, || status_table(&s))
        }
        PrivacyCmd::Hold { user, reason } => {
            user_arg(&user)?;
            let s = ctx
                .client
                .privacy_hold(&SubjectAct { user, reason })
                .await?;
            ctx.emit(&s, || status_table(&s))
        }
        PrivacyCmd::Release { user } => {
            user_arg(&user)?;
            let s = ctx.client.privacy_release(&ReleaseHold { user }).await?;
            ctx.emit(&s, || status_table(&s))
        }
        PrivacyCmd::Erase { user, reason } => {
            user_arg(&user)?;
            let e = ctx
                .client
                .privacy_erase(&SubjectAct { user, reason })
                .await?;
            ctx.emit(&e, || {
                format!(
                    "erased {}: key {} destroyed (audit event {}); their rows are now {}\n",
                    e.user, e.key_id, e.event_seq, e.pseudonym
                )
            })
        }
    }
}
