//! `pedm scim token create|list|revoke`: the bearer tokens identity providers push users and
//! groups with (`/scim/v2`). A SCIM token authenticates nothing else.

use crate::ctx::Ctx;
use crate::output::{self, Detail, Row, detail_table, time};
use anyhow::Result;
use jiff::Timestamp;
use pedm_api::scim::{CreateScimToken, ScimToken};

pub async fn create(ctx: &Ctx, name: String) -> Result<()> {
    let created = ctx
        .client
        .create_scim_token(&CreateScimToken { name })
        .await?;
    if ctx.json {
        return ctx.emit(&created, String::new);
    }
    // The secret alone on stdout (`pedm scim token create okta > okta.token`).
    eprint!("{}", detail_table(&created.record, ctx.now).render());
    eprintln!("This token is shown once; give it to the identity provider now.");
    Ok(output::write_out(&format!("{}\n", created.token))?)
}

fn state(t: &ScimToken) -> String {
    t.revoked_at
        .map_or_else(|| "active".into(), |at| format!("revoked {}", time(at)))
}

impl Row for ScimToken {
    const HEADER: &'static [&'static str] = &["ID", "CLIENT", "CREATED", "BY", "STATE"];
    fn cells(&self, _now: Timestamp) -> Vec<String> {
        vec![
            self.id.clone(),
            self.name.clone(),
            time(self.created_at),
            self.created_by.clone(),
            state(self),
        ]
    }
}

impl Detail for ScimToken {
    fn fields(&self, _now: Timestamp) -> Vec<(&'static str, String)> {
        vec![
            ("id", self.id.clone()),
            ("client", self.name.clone()),
            ("created", time(self.created_at)),
            ("created by", self.created_by.clone()),
            ("state", state(self)),
        ]
    }
}
