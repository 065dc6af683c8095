//! How `pedm lock list|add|lift` shows a lock.

use crate::output::{Detail, Row, time};
use jiff::Timestamp;
use pedm_api::lock::Lock;

fn state(l: &Lock, now: Timestamp) -> String {
    match (&l.lifted_at, &l.lifted_by) {
        (Some(at), by) => format!("lifted {} by {}", time(*at), by.as_deref().unwrap_or("?")),
        _ if l.holds(now) => "in force".into(),
        _ => "ran out".into(),
    }
}

impl Row for Lock {
    const HEADER: &'static [&'static str] =
        &["ID", "KIND", "SUBJECT", "UNTIL", "STATE", "BY", "REASON"];
    fn cells(&self, now: Timestamp) -> Vec<String> {
        vec![
            self.id.to_string(),
            self.kind.as_str().into(),
            self.subject.clone(),
            time(self.expires_at),
            state(self, now),
            self.created_by.clone(),
            self.reason.clone(),
        ]
    }
}

impl Detail for Lock {
    fn fields(&self, now: Timestamp) -> Vec<(&'static str, String)> {
        vec![
            ("id", self.id.to_string()),
            ("kind", self.kind.as_str().into()),
            ("subject", self.subject.clone()),
            ("reason", self.reason.clone()),
            ("created", time(self.created_at)),
            ("by", self.created_by.clone()),
            ("until", time(self.expires_at)),
            ("state", state(self, now)),
        ]
    }
}
