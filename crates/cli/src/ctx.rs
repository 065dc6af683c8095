//! What every command needs: the client, whether to print JSON, and the time it started.

use crate::output::{self, Detail, Row, detail_table, list_table};
use anyhow::Result;
use jiff::Timestamp;
use pedm_api::Client;
use serde::Serialize;

/// What every command needs: the client and how to print.
pub struct Ctx {
    pub client: Client,
    pub json: bool,
    pub now: Timestamp,
}

impl Ctx {
    /// JSON for scripts, or the table `render` builds for people.
    pub fn emit<T: Serialize>(&self, value: &T, render: impl FnOnce() -> String) -> Result<()> {
        let text = if self.json {
            output::json_text(value)?
        } else {
            render()
        };
        Ok(output::write_out(&text)?)
    }

    pub(crate) fn list<T: Row + Serialize>(&self, items: &[T]) -> Result<()> {
        self.emit(&items, || list_table(items, self.now).render())
    }

    pub(crate) fn detail<T: Detail + Serialize>(&self, item: &T) -> Result<()> {
        self.emit(item, || detail_table(item, self.now).render())
    }
}
