//! Audit events and their hash chain.
//!
//! Every change is committed together with the events that record it (see
//! [`crate::store::Changeset`]). The store numbers events (`seq`, from 1, no gaps) and links each
//! to the one before: `hash = SHA-256("pedm-audit-v1\n" || canonical_json(event))`, where the
//! canonical JSON holds every field but `hash` (including `prev_hash`), with object keys sorted,
//! no insignificant whitespace, timestamps as RFC 3339 in UTC with microsecond precision at most,
//! and hashes as lowercase hex. The first event's `prev_hash` is 32 zero bytes.

use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

pub const GENESIS_HASH: [u8; 32] = [0; 32];
const DOMAIN: &[u8] = b"pedm-audit-v1\n";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// The change happened.
    Success,
    /// A security decision refused the attempt; nothing else changed.
    Denied,
    /// The attempt failed for another reason (e.g. a target did not answer).
    Failure,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Success => "success",
            Outcome::Denied => "denied",
            Outcome::Failure => "failure",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "success" => Some(Outcome::Success),
            "denied" => Some(Outcome::Denied),
            "failure" => Some(Outcome::Failure),
            _ => None,
        }
    }
}

/// An event as the domain produces it, before the store places it in the chain.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewAuditEvent {
    pub at: Timestamp,
    pub actor: String,
    /// What happened, `noun.verb`: `request.created`, `grant.expired`, `auth.failed`...
    pub action: String,
    pub outcome: Outcome,
    /// The thing acted on, `kind:id`: `request:0190...`, `user:alice`.
    pub subject: Option<String>,
    pub data: serde_json::Value,
}

impl NewAuditEvent {
    pub fn new(at: Timestamp, actor: &str, action: &str, subject: Option<String>) -> Self {
        NewAuditEvent {
            at,
            actor: actor.to_string(),
            action: action.to_string(),
            outcome: Outcome::Success,
            subject,
            data: serde_json::Value::Object(Default::default()),
        }
    }
    pub fn outcome(mut self, o: Outcome) -> Self {
        self.outcome = o;
        self
    }
    pub fn data(mut self, data: serde_json::Value) -> Self {
        self.data = data;
        self
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AuditEvent {
    pub seq: i64,
    pub at: Timestamp,
    pub actor: String,
    pub action: String,
    pub outcome: Outcome,
    pub subject: Option<String>,
    /// Serialised with keys sorted, as hashed, so exports hash back without re-sorting.
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    #[serde(serialize_with = "serialize_sorted")]
    pub data: serde_json::Value,
    #[serde(with = "hex32")]
    #[cfg_attr(feature = "openapi", schema(value_type = String, example = "00ab..."))]
    pub prev_hash: [u8; 32],
    #[serde(with = "hex32")]
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub hash: [u8; 32],
}

/// The first events of the log, archived (`pedm audit archive`) and pruned from the database:
/// their content is gone from it, their hashes stay (the Merkle tree and its proofs still
/// reach them). Kept as integration state `audit`/`pruned`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PrunedPrefix {
    /// Events 1..=through are pruned.
    pub through: i64,
    /// Hash of event `through` (hex): the next event links to it.
    pub hash: String,
    /// Merkle peaks of the tree over them (hex, left to right).
    pub peaks: Vec<String>,
    /// Their Merkle root (hex), signed by the checkpoint of size `through`.
    pub root: String,
    /// SHA-256 of the archive segment that holds them (hex).
    pub archive_sha256: String,
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub at: Timestamp,
    pub by: String,
}

/// The integration state that holds the [`PrunedPrefix`].
pub const PRUNED_STATE: (&str, &str) = ("audit", "pruned");

/// The bytes that are hashed: the canonical JSON of every field but `hash`.
pub fn canonical_bytes(
    seq: i64,
    prev_hash: &[u8; 32],
    e: &NewAuditEvent,
) -> Result<Vec<u8>, serde_json::Error> {
    // Keys are sorted here, at every depth, rather than left to serde_json's `Map`: whether
    // that map keeps insertion order depends on a cargo feature (`preserve_order`) that any
    // crate in the build may switch on, and the hash must not depend on the build.
    let v = serde_json::json!({
        "action": e.action,
        "actor": e.actor,
        "at": e.at.to_string(),
        "data": sorted_value(&e.data),
        "outcome": e.outcome.as_str(),
        "prev_hash": hex::encode(prev_hash),
        "seq": seq,
        "subject": e.subject,
    });
    serde_json::to_vec(&sorted_value(&v))
}

/// The same value with every object's keys in ascending byte order, whatever the map type.
pub fn sorted_value(v: &serde_json::Value) -> serde_json::Value {
    use serde_json::Value;
    match v {
        Value::Object(m) => {
            let mut entries: Vec<(&String, &Value)> = m.iter().collect();
            entries.sort_by(|a, b| a.0.cmp(b.0));
            Value::Object(
                entries
                    .into_iter()
                    .map(|(k, v)| (k.clone(), sorted_value(v)))
                    .collect(),
            )
        }
        Value::Array(a) => Value::Array(a.iter().map(sorted_value).collect()),
        other => other.clone(),
    }
}

pub fn event_hash(seq: i64, prev_hash: &[u8; 32], e: &NewAuditEvent) -> [u8; 32] {
    let bytes = canonical_bytes(seq, prev_hash, e).unwrap_or_default();
    let mut h = Sha256::new();
    h.update(DOMAIN);
    h.update(&bytes);
    h.finalize().into()
}

/// Places an event in the chain after `prev_hash` at position `seq`.
pub fn chain(seq: i64, prev_hash: [u8; 32], e: NewAuditEvent) -> AuditEvent {
    let hash = event_hash(seq, &prev_hash, &e);
    AuditEvent {
        seq,
        at: e.at,
        actor: e.actor,
        action: e.action,
        outcome: e.outcome,
        subject: e.subject,
        data: e.data,
        prev_hash,
        hash,
    }
}

/// What went wrong at the first bad position of a chain.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChainError {
    #[error(
        "event at position {position} has seq {found}, expected {expected} (missing, reordered or inserted event)"
    )]
    Sequence {
        position: usize,
        expected: i64,
        found: i64,
    },
    #[error(
        "event {seq}: prev_hash does not match the hash of event {prev} (missing, reordered or inserted event)"
    )]
    Link { seq: i64, prev: i64 },
    #[error("event {seq}: content does not match its hash (altered event)")]
    Content { seq: i64 },
}

/// Checks a run of events that starts right after `prev_hash` (the genesis hash for seq 1).
pub fn verify_chain<'a>(
    mut prev_hash: [u8; 32],
    first_seq: i64,
    events: impl IntoIterator<Item = &'a AuditEvent>,
) -> Result<[u8; 32], ChainError> {
    for (i, e) in events.into_iter().enumerate() {
        let expected = first_seq + i as i64;
        if e.seq != expected {
            return Err(ChainError::Sequence {
                position: i,
                expected,
                found: e.seq,
            });
        }
        if e.prev_hash != prev_hash {
            return Err(ChainError::Link {
                seq: e.seq,
                prev: e.seq - 1,
            });
        }
        let ne = NewAuditEvent {
            at: e.at,
            actor: e.actor.clone(),
            action: e.action.clone(),
            outcome: e.outcome,
            subject: e.subject.clone(),
            data: e.data.clone(),
        };
        if event_hash(e.seq, &e.prev_hash, &ne) != e.hash {
            return Err(ChainError::Content { seq: e.seq });
        }
        prev_hash = e.hash;
    }
    Ok(prev_hash)
}

fn serialize_sorted<S: serde::Serializer>(v: &serde_json::Value, s: S) -> Result<S::Ok, S::Error> {
    serde::Serialize::serialize(&sorted_value(v), s)
}

pub(crate) mod hex32 {
    use serde::{Deserialize, Deserializer, Serializer};
    pub fn serialize<S: Serializer>(b: &[u8; 32], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(b))
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[u8; 32], D::Error> {
        let s = String::deserialize(d)?;
        let v = hex::decode(&s).map_err(serde::de::Error::custom)?;
        v.try_into()
            .map_err(|_| serde::de::Error::custom("expected 32 bytes of hex"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(n: i64) -> NewAuditEvent {
        NewAuditEvent::new(
            Timestamp::from_second(1_700_000_000 + n).unwrap(),
            "alice",
            "request.created",
            Some(format!("request:{n}")),
        )
        .data(serde_json::json!({"b": 1, "a": [n]}))
    }

    fn build(n: i64) -> Vec<AuditEvent> {
        let mut prev = GENESIS_HASH;
        (1..=n)
            .map(|i| {
                let e = chain(i, prev, ev(i));
                prev = e.hash;
                e
            })
            .collect()
    }

    #[test]
    fn canonical_form_is_sorted_and_compact() {
        let b = canonical_bytes(1, &GENESIS_HASH, &ev(1)).unwrap();
        let s = String::from_utf8(b).unwrap();
        assert!(s.starts_with(r#"{"action":"request.created","actor":"alice","at":"2023-11-14T22:13:21Z","data":{"a":[1],"b":1},"outcome":"success","prev_hash":"0000"#), "{s}");
    }

    #[test]
    fn detects_each_kind_of_tampering() {
        let good = build(5);
        assert!(verify_chain(GENESIS_HASH, 1, &good).is_ok());

        let mut altered = good.clone();
        altered[2].actor = "mallory".into();
        assert_eq!(
            verify_chain(GENESIS_HASH, 1, &altered),
            Err(ChainError::Content { seq: 3 })
        );

        let mut deleted = good.clone();
        deleted.remove(1);
        assert!(matches!(
            verify_chain(GENESIS_HASH, 1, &deleted),
            Err(ChainError::Sequence {
                expected: 2,
                found: 3,
                ..
            })
        ));

        let mut swapped = good.clone();
        swapped.swap(1, 2);
        assert!(verify_chain(GENESIS_HASH, 1, &swapped).is_err());
    }
}
