//! CSV and OCSF exports: streaming writers, one event in, one record out, constant memory.
//! The mappings are documented in the crate docs.

use std::io::{self, Write};

use pedm_core::audit::{AuditEvent, Outcome};
use serde::Serialize;
use serde_json::Value;

/// CSV column names, in order.
pub const CSV_HEADER: [&str; 9] = [
    "seq",
    "at",
    "actor",
    "action",
    "outcome",
    "subject",
    "data",
    "prev_hash",
    "hash",
];

/// RFC 4180 CSV (comma, CRLF line ends, fields quoted when needed), one row per event.
pub struct CsvWriter<W: Write> {
    w: csv::Writer<W>,
    data: Vec<u8>,
}

impl<W: Write> CsvWriter<W> {
    /// Writes the header row.
    pub fn new(w: W) -> io::Result<Self> {
        let mut w = csv::WriterBuilder::new()
            .terminator(csv::Terminator::CRLF)
            .from_writer(w);
        w.write_record(CSV_HEADER).map_err(io::Error::other)?;
        Ok(CsvWriter {
            w,
            data: Vec::new(),
        })
    }

    pub fn write(&mut self, e: &AuditEvent) -> io::Result<()> {
        self.data.clear();
        serde_json::to_writer(&mut self.data, &e.data)?;
        let seq = e.seq.to_string();
        let at = e.at.to_string();
        let prev = hex::encode(e.prev_hash);
        let hash = hex::encode(e.hash);
        // Text others wrote: control characters escaped, formulas neutralised (the data
        // column is JSON, which escapes control characters itself).
        let cell = pedm_core::text::csv_cell;
        let data = String::from_utf8_lossy(&self.data);
        self.w
            .write_record([
                seq.as_str(),
                at.as_str(),
                &cell(&e.actor),
                &cell(&e.action),
                e.outcome.as_str(),
                &cell(e.subject.as_deref().unwrap_or("")),
                &cell(&data),
                prev.as_str(),
                hash.as_str(),
            ])
            .map_err(io::Error::other)
    }

    /// Flushes and returns the inner writer.
    pub fn finish(self) -> io::Result<W> {
        self.w
            .into_inner()
            .map_err(|e| io::Error::other(e.to_string()))
    }
}

/// OCSF class chosen for an action; see the crate docs.
struct Class {
    class_uid: u32,
    class_name: &'static str,
    category_uid: u32,
    category_name: &'static str,
    activity_id: u32,
    activity_name: &'static str,
}

const IAM: (u32, &str) = (3, "Identity & Access Management");
const APP: (u32, &str) = (6, "Application Activity");

fn classify(action: &str) -> Class {
    let (noun, verb) = action.split_once('.').unwrap_or((action, ""));
    let c = |(class_uid, class_name): (u32, &'static str),
             (category_uid, category_name): (u32, &'static str),
             (activity_id, activity_name): (u32, &'static str)| Class {
        class_uid,
        class_name,
        category_uid,
        category_name,
        activity_id,
        activity_name,
    };
    const OTHER: (u32, &str) = (99, "Other");
    match noun {
        "auth" => c(
            (3002, "Authentication"),
            IAM,
            match verb {
                "logout" | "logoff" => (2, "Logoff"),
                "login" | "logon" | "failed" | "succeeded" => (1, "Logon"),
                _ => OTHER,
            },
        ),
        "grant" => c(
            (3005, "User Access Management"),
            IAM,
            match verb {
                "started" | "created" | "activated" => (1, "Assign Privileges"),
                "ended" | "revoked" | "expired" | "released" => (2, "Revoke Privileges"),
                _ => OTHER,
            },
        ),
        "user" | "token" => c(
            (3001, "Account Change"),
            IAM,
            match verb {
                "created" => (1, "Create"),
                "enabled" => (2, "Enable"),
                "disabled" => (5, "Disable"),
                "deleted" | "revoked" => (6, "Delete"),
                _ => OTHER,
            },
        ),
        "group" => c(
            (3006, "Group Management"),
            IAM,
            match verb {
                "member_added" => (3, "Add User"),
                "member_removed" => (4, "Remove User"),
                "deleted" => (5, "Delete"),
                "created" => (6, "Create"),
                _ => OTHER,
            },
        ),
        _ => c(
            (6003, "API Activity"),
            APP,
            match verb {
                "created" => (1, "Create"),
                "read" | "listed" => (2, "Read"),
                "deleted" | "removed" => (4, "Delete"),
                "" => OTHER,
                _ => (3, "Update"),
            },
        ),
    }
}

#[derive(Serialize)]
struct Record<'a> {
    class_uid: u32,
    class_name: &'static str,
    category_uid: u32,
    category_name: &'static str,
    activity_id: u32,
    activity_name: &'static str,
    type_uid: u64,
    type_name: String,
    time: i64,
    severity_id: u8,
    severity: &'static str,
    status_id: u8,
    status: &'static str,
    status_detail: &'static str,
    message: String,
    actor: Actor<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    user: Option<Name<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    api: Option<Api<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    resources: Option<[Resource<'a>; 1]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    privileges: Option<[&'a str; 1]>,
    metadata: Metadata,
    unmapped: Unmapped<'a>,
}

#[derive(Serialize)]
struct Name<'a> {
    name: &'a str,
}

#[derive(Serialize)]
struct Actor<'a> {
    user: Name<'a>,
}

#[derive(Serialize)]
struct Api<'a> {
    operation: &'a str,
    service: Name<'static>,
}

#[derive(Serialize)]
struct Resource<'a> {
    uid: &'a str,
    #[serde(rename = "type")]
    kind: &'a str,
}

#[derive(Serialize)]
struct Product {
    name: &'static str,
    vendor_name: &'static str,
    version: &'static str,
}

#[derive(Serialize)]
struct Metadata {
    version: &'static str,
    uid: String,
    sequence: i64,
    log_name: &'static str,
    product: Product,
}

#[derive(Serialize)]
struct Unmapped<'a> {
    action: &'a str,
    subject: Option<&'a str>,
    data: &'a Value,
    prev_hash: String,
    hash: String,
}

fn record(e: &AuditEvent) -> Record<'_> {
    let c = classify(&e.action);
    let (status_id, status, severity_id, severity) = match e.outcome {
        Outcome::Success => (1, "Success", 1, "Informational"),
        Outcome::Failure => (2, "Failure", 2, "Low"),
        Outcome::Denied => (2, "Failure", 3, "Medium"),
    };
    let message = match &e.subject {
        Some(s) => format!("{} {} ({})", e.action, s, e.outcome.as_str()),
        None => format!("{} ({})", e.action, e.outcome.as_str()),
    };
    let subject = e.subject.as_deref();
    Record {
        class_uid: c.class_uid,
        class_name: c.class_name,
        category_uid: c.category_uid,
        category_name: c.category_name,
        activity_id: c.activity_id,
        activity_name: c.activity_name,
        type_uid: c.class_uid as u64 * 100 + c.activity_id as u64,
        type_name: format!("{}: {}", c.class_name, c.activity_name),
        time: e.at.as_millisecond(),
        severity_id,
        severity,
        status_id,
        status,
        status_detail: e.outcome.as_str(),
        message,
        actor: Actor {
            user: Name { name: &e.actor },
        },
        user: subject
            .filter(|_| matches!(c.class_uid, 3001 | 3002))
            .map(|s| Name {
                name: s.strip_prefix("user:").unwrap_or(s),
            }),
        api: (c.class_uid == 6003).then(|| Api {
            operation: &e.action,
            service: Name { name: "pedm" },
        }),
        resources: subject.filter(|_| c.class_uid == 6003).map(|s| {
            [Resource {
                uid: s,
                kind: s.split_once(':').map_or("", |p| p.0),
            }]
        }),
        privileges: subject.filter(|_| c.class_uid == 3005).map(|s| [s]),
        metadata: Metadata {
            version: "1.1.0",
            uid: e.seq.to_string(),
            sequence: e.seq,
            log_name: "audit",
            product: Product {
                name: "pedm",
                vendor_name: "pedm",
                version: env!("CARGO_PKG_VERSION"),
            },
        },
        unmapped: Unmapped {
            action: &e.action,
            subject,
            data: &e.data,
            prev_hash: hex::encode(e.prev_hash),
            hash: hex::encode(e.hash),
        },
    }
}

/// The OCSF-shaped record of one event (see the crate docs for the mapping).
pub fn ocsf_event(e: &AuditEvent) -> Value {
    serde_json::to_value(record(e)).expect("plain data serialises")
}

/// OCSF-shaped JSON Lines, one object per event.
pub struct OcsfWriter<W: Write> {
    w: W,
}

impl<W: Write> OcsfWriter<W> {
    pub fn new(w: W) -> Self {
        OcsfWriter { w }
    }

    pub fn write(&mut self, e: &AuditEvent) -> io::Result<()> {
        serde_json::to_writer(&mut self.w, &record(e))?;
        self.w.write_all(b"\n")
    }

    /// Flushes and returns the inner writer.
    pub fn finish(mut self) -> io::Result<W> {
        self.w.flush()?;
        Ok(self.w)
    }
}
