//! Personal data in the audit log, sealed per data subject so that it can be erased without
//! breaking the hash chain (GDPR Art. 17 by crypto-shredding).
//!
//! With `[privacy] seal_personal_data`, the store seals every personal value of an event
//! before the event is chained: the hash covers the sealed form, so the chain, the Merkle tree
//! and every checkpoint verify the same whether the keys exist or not. Each data subject (a
//! person, by user name) has their own 256-bit key, stored wrapped under the key-encryption
//! key; erasing the subject deletes that key, and every value sealed under it reads as
//! [`ERASED`] from then on — in the API, the console, exports and the database file alike.
//!
//! What is personal ([`seal_event`]):
//! - `actor`, when it is a person (not `system`, not `kind:name` like `agent:web1`);
//! - `subject` `user:NAME` (sealed under NAME's key);
//! - in `data`, at any depth: values of [`NAME_KEYS`] that name a person (each sealed under
//!   that person's key), and free text of [`TEXT_KEYS`] (sealed under the key of the person
//!   it is about or by: the event's `user:` subject, else the actor when a person, else the
//!   `requester` or `user` named in the data).
//!
//! Sealing is deterministic per subject (AES-256-GCM-SIV with a synthetic nonce, see the
//! adapter in `pedm-pki`): the same name sealed under the same key gives the same text, so the
//! log can still be filtered by actor and subject. What stays in the clear: actions, outcomes,
//! times, ids, targets, roles, groups, commands (`argv`, `cwd`), so an auditor still sees what
//! happened and to what — only not to or by whom.
//!
//! A sealed value reads `sealed:v1:<subject key id>:<base64url>`; the key id is random per
//! subject and says nothing about who it was once the key is gone.

use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeSet, HashMap};

use crate::audit::{AuditEvent, NewAuditEvent};
use crate::model::SYSTEM_ACTOR;

/// What a value sealed under an erased key reads as.
pub const ERASED: &str = "[erased]";
const PREFIX: &str = "sealed:v1:";

/// Data fields whose values name a person (a string or a list of strings).
pub const NAME_KEYS: &[&str] = &[
    "user",
    "by",
    "requester",
    "sponsor",
    "delegator",
    "approved_by",
    "proposed_by",
    "ended_by",
    "created_by",
    "decided_by",
    "approver",
    "approvers",
    "holder",
    "members",
    "subject_user",
];

/// Data fields holding free text or contact data about the event's author.
pub const TEXT_KEYS: &[&str] = &[
    "justification",
    "reason",
    "comment",
    "email",
    "email_before",
    "display_name",
    "source_addr",
    "remote_addr",
    "ip",
    "decision_reason",
    "end_reason",
];

#[derive(Debug, thiserror::Error)]
pub enum PrivacyError {
    #[error("personal data key: {0}")]
    Key(String),
    #[error("sealing personal data: {0}")]
    Crypto(String),
}

/// A data subject's key as stored: wrapped under the key-encryption key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SubjectKey {
    /// The person (user name).
    pub subject: String,
    /// Random, 16 hex digits; what sealed values name.
    pub key_id: String,
    pub wrapped: String,
    pub created_at: Timestamp,
    pub hold: Option<LegalHold>,
}

/// A legal hold: while set, the subject cannot be erased.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LegalHold {
    pub reason: String,
    pub by: String,
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub at: Timestamp,
}

/// What `pedm privacy status` shows about a data subject.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PrivacyStatus {
    pub user: String,
    /// Whether personal data in the audit log is sealed at all (`[privacy]`).
    pub sealing: bool,
    /// Their key's id (none yet: nothing of theirs was sealed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hold: Option<LegalHold>,
}

/// What an erasure did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Erasure {
    pub user: String,
    /// The key destroyed.
    pub key_id: String,
    /// What their rows are called now.
    pub pseudonym: String,
    /// The audit event that records the erasure.
    pub event_seq: i64,
}

/// The cipher behind sealing (AES-256-GCM-SIV and the KEK in `pedm-pki`).
pub trait PersonalDataCipher: Send + Sync {
    /// A new random subject key: its id (16 hex digits) and the key wrapped for storage.
    fn new_key(&self) -> Result<(String, String), PrivacyError>;
    /// `plain` sealed under `key`, deterministically (base64url text, no prefix).
    fn seal(&self, key: &SubjectKey, plain: &str) -> Result<String, PrivacyError>;
    /// The plain text of what [`seal`](Self::seal) made under `key`.
    fn open(&self, key: &SubjectKey, sealed: &str) -> Result<String, PrivacyError>;
}

/// Writes of the privacy store (table `privacy_subjects`).
#[derive(Debug, Clone)]
pub enum PrivacyWrite {
    /// Adds keys for subjects that have none (a subject that has one keeps it).
    AddKeys(Vec<SubjectKey>),
    /// Sets or clears a legal hold; fails with NotFound if the subject has no key.
    SetHold {
        subject: String,
        hold: Option<LegalHold>,
    },
    /// Deletes the subject's key (Conflict if under legal hold, NotFound if there is none),
    /// and replaces their name and free text in the operational tables with `pseudonym` and
    /// [`ERASED`]: their user row (disabled, no display name or email) and what points at it,
    /// requests, approvals, grants, sessions, delegations, review items, locks and web
    /// sessions; their single sign-on links and SCIM mapping are deleted.
    Erase { subject: String, pseudonym: String },
}

/// Is this name a person (a user) rather than a system or machine actor?
pub fn is_person(name: &str) -> bool {
    !name.is_empty()
        && name != SYSTEM_ACTOR
        && name != ERASED
        && !name.contains(':')
        && !name.starts_with('@')
}

/// The subject key id a sealed value names, if it is one.
pub fn sealed_key_id(value: &str) -> Option<&str> {
    let rest = value.strip_prefix(PREFIX)?;
    let (id, _) = rest.split_once(':')?;
    Some(id)
}

/// The pseudonym an erased subject's rows are left with.
pub fn pseudonym(key_id: &str) -> String {
    format!("erased:{key_id}")
}

/// Whose free text in `e` is: the person the event is about (`user:` subject: their email,
/// display name), else its actor, else the requester or user it names.
fn author(e: &NewAuditEvent) -> Option<String> {
    if let Some(u) = e.subject.as_deref().and_then(|s| s.strip_prefix("user:"))
        && is_person(u)
    {
        return Some(u.to_string());
    }
    if is_person(&e.actor) {
        return Some(e.actor.clone());
    }
    ["requester", "user"].iter().find_map(|k| {
        e.data
            .get(*k)
            .and_then(|v| v.as_str())
            .filter(|s| is_person(s))
            .map(str::to_string)
    })
}

/// A place in an event holding personal data, and whose it is.
enum Spot<'a> {
    Name(&'a str),
    Text,
}

fn walk_data(
    v: &mut serde_json::Value,
    f: &mut dyn FnMut(Spot<'_>, &mut String) -> Result<(), PrivacyError>,
) -> Result<(), PrivacyError> {
    use serde_json::Value;
    match v {
        Value::Object(m) => {
            for (k, v) in m.iter_mut() {
                let name = NAME_KEYS.contains(&k.as_str());
                let text = TEXT_KEYS.contains(&k.as_str());
                match v {
                    Value::String(s) if name => {
                        let who = s.clone();
                        f(Spot::Name(&who), s)?
                    }
                    Value::String(s) if text => f(Spot::Text, s)?,
                    Value::Array(items) if name => {
                        for i in items {
                            match i {
                                Value::String(s) => {
                                    let who = s.clone();
                                    f(Spot::Name(&who), s)?
                                }
                                other => walk_data(other, f)?,
                            }
                        }
                    }
                    other => walk_data(other, f)?,
                }
            }
            Ok(())
        }
        Value::Array(a) => a.iter_mut().try_for_each(|v| walk_data(v, f)),
        _ => Ok(()),
    }
}

/// The people whose keys sealing `e` needs.
pub fn persons(e: &NewAuditEvent) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    // The author is the actor or the `user:` subject (both sealed under their own keys), or
    // a requester or user named in the data (walked below).
    if is_person(&e.actor) {
        out.insert(e.actor.clone());
    }
    if let Some(u) = e.subject.as_deref().and_then(|s| s.strip_prefix("user:"))
        && is_person(u)
    {
        out.insert(u.to_string());
    }
    let mut data = e.data.clone();
    let _ = walk_data(&mut data, &mut |spot, _| {
        if let Spot::Name(who) = spot
            && is_person(who)
        {
            out.insert(who.to_string());
        }
        Ok(())
    });
    out
}

/// Seals the personal data of `e` in place, with `keys` holding a key for every one of
/// [`persons`]`(e)` (a person without one is an error: never stored in the clear by mistake).
pub fn seal_event(
    e: &mut NewAuditEvent,
    keys: &HashMap<String, SubjectKey>,
    cipher: &dyn PersonalDataCipher,
) -> Result<(), PrivacyError> {
    // Always sealed, whatever the text looks like: a value written to look sealed is sealed
    // like any other (and reads back as written, never as someone else's).
    let seal = |who: &str, plain: &str| -> Result<String, PrivacyError> {
        let key = keys
            .get(who)
            .ok_or_else(|| PrivacyError::Key(format!("no key for data subject {who:?}")))?;
        sealed_form(key, plain, cipher)
    };
    let author = author(e);
    if is_person(&e.actor) {
        e.actor = seal(&e.actor.clone(), &e.actor.clone())?;
    }
    if let Some(u) = e.subject.as_deref().and_then(|s| s.strip_prefix("user:"))
        && is_person(u)
    {
        e.subject = Some(format!("user:{}", seal(u, u)?));
    }
    walk_data(&mut e.data, &mut |spot, s| {
        match spot {
            Spot::Name(who) if is_person(who) => *s = seal(who, s)?,
            Spot::Name(_) => {}
            Spot::Text => {
                if let Some(a) = &author {
                    *s = seal(a, s)?
                }
            }
        }
        Ok(())
    })
}

fn sealed_ids_in(s: &str, out: &mut BTreeSet<String>) {
    if let Some(id) = sealed_key_id(s) {
        out.insert(id.to_string());
    }
}

/// The subject key ids the sealed values of `e` name (only where values are sealed: a text
/// elsewhere that looks sealed is left as it is).
pub fn key_ids(e: &AuditEvent) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    sealed_ids_in(&e.actor, &mut out);
    if let Some(s) = e.subject.as_deref().and_then(|s| s.strip_prefix("user:")) {
        sealed_ids_in(s, &mut out);
    }
    let mut data = e.data.clone();
    let _ = walk_data(&mut data, &mut |_, s| {
        sealed_ids_in(s, &mut out);
        Ok(())
    });
    out
}

/// Opens the sealed values of `e` in place with `keys` (by key id). A value whose key is gone
/// (erased) reads [`ERASED`]; one whose key is there but does not open it (another KEK, a
/// corrupt row) is an error, never shown as erased. The chain hashes are left as they were:
/// an opened event no longer hashes to its `hash` (read the sealed form to verify).
pub fn open_event(
    e: &mut AuditEvent,
    keys: &HashMap<String, SubjectKey>,
    cipher: &dyn PersonalDataCipher,
) -> Result<(), PrivacyError> {
    let open = |s: &mut String| -> Result<(), PrivacyError> {
        let Some(rest) = s.strip_prefix(PREFIX) else {
            return Ok(());
        };
        let (id, body) = rest.split_once(':').unwrap_or((rest, ""));
        *s = match keys.get(id) {
            Some(k) => cipher.open(k, body)?,
            None => ERASED.to_string(),
        };
        Ok(())
    };
    open(&mut e.actor)?;
    if let Some(subject) = &mut e.subject
        && let Some(u) = subject.strip_prefix("user:")
    {
        let mut u = u.to_string();
        open(&mut u)?;
        *subject = format!("user:{u}");
    }
    walk_data(&mut e.data, &mut |_, s| open(s))
}

/// `plain` as the store holds it for `key` (to filter sealed events by actor or subject).
pub fn sealed_form(
    key: &SubjectKey,
    plain: &str,
    cipher: &dyn PersonalDataCipher,
) -> Result<String, PrivacyError> {
    Ok(format!(
        "{PREFIX}{}:{}",
        key.key_id,
        cipher.seal(key, plain)?
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// A reversible stand-in (the real cipher is tested in pedm-pki): hex of "<key>|<plain>".
    struct Mirror;
    impl PersonalDataCipher for Mirror {
        fn new_key(&self) -> Result<(String, String), PrivacyError> {
            Ok(("00".into(), "w".into()))
        }
        fn seal(&self, key: &SubjectKey, plain: &str) -> Result<String, PrivacyError> {
            Ok(hex::encode(format!("{}|{plain}", key.key_id)))
        }
        fn open(&self, key: &SubjectKey, sealed: &str) -> Result<String, PrivacyError> {
            let s = String::from_utf8(hex::decode(sealed).unwrap()).unwrap();
            s.strip_prefix(&format!("{}|", key.key_id))
                .map(str::to_string)
                .ok_or_else(|| PrivacyError::Crypto("wrong key".into()))
        }
    }

    /// `e` as the store would hand it back.
    fn stored(e: NewAuditEvent) -> AuditEvent {
        crate::audit::chain(1, crate::audit::GENESIS_HASH, e)
    }

    fn key(who: &str, id: &str) -> SubjectKey {
        SubjectKey {
            subject: who.into(),
            key_id: id.into(),
            wrapped: String::new(),
            created_at: Timestamp::UNIX_EPOCH,
            hold: None,
        }
    }

    #[test]
    fn personal_values_are_sealed_under_their_owners_and_the_rest_stays_plain() {
        let mut e = NewAuditEvent::new(
            Timestamp::UNIX_EPOCH,
            "bob",
            "request.approved",
            Some("request:1".into()),
        )
        .data(
            json!({"requester": "alice", "comment": "ok for the migration",
                     "target": "db1", "approvers": ["carol", "system"],
                     "nested": {"reason": "why"}}),
        );
        assert_eq!(
            persons(&e),
            ["alice", "bob", "carol"].map(String::from).into()
        );
        let keys: HashMap<_, _> = [("alice", "a1"), ("bob", "b2"), ("carol", "c3")]
            .into_iter()
            .map(|(w, id)| (w.to_string(), key(w, id)))
            .collect();
        seal_event(&mut e, &keys, &Mirror).unwrap();
        let text = serde_json::to_string(&e).unwrap();
        for plain in ["alice", "bob", "carol", "ok for the migration", "why"] {
            assert!(!text.contains(plain), "{plain} left in {text}");
        }
        assert_eq!(e.data["target"], "db1");
        assert_eq!(e.data["approvers"][1], "system");
        assert_eq!(sealed_key_id(&e.actor), Some("b2"));
        assert_eq!(
            sealed_key_id(e.data["comment"].as_str().unwrap()),
            Some("b2")
        );

        // Read back with every key but alice's.
        let mut stored = stored(e.clone());
        let by_id: HashMap<_, _> = keys
            .values()
            .filter(|k| k.subject != "alice")
            .map(|k| (k.key_id.clone(), k.clone()))
            .collect();
        assert_eq!(
            key_ids(&stored),
            ["a1", "b2", "c3"].map(String::from).into()
        );
        open_event(&mut stored, &by_id, &Mirror).unwrap();
        assert_eq!(stored.actor, "bob");
        assert_eq!(stored.data["requester"], ERASED);
        assert_eq!(stored.data["comment"], "ok for the migration");
        assert_eq!(stored.data["approvers"], json!(["carol", "system"]));
    }

    #[test]
    fn what_an_event_says_about_a_user_is_sealed_under_their_key() {
        let mut e = NewAuditEvent::new(
            Timestamp::UNIX_EPOCH,
            "admin",
            "user.created",
            Some("user:zoe".into()),
        )
        .data(json!({"email": "zoe@example.org"}));
        assert_eq!(persons(&e), ["admin", "zoe"].map(String::from).into());
        let keys: HashMap<_, _> = [("admin", "ad"), ("zoe", "z0")]
            .into_iter()
            .map(|(w, id)| (w.to_string(), key(w, id)))
            .collect();
        seal_event(&mut e, &keys, &Mirror).unwrap();
        assert_eq!(sealed_key_id(e.data["email"].as_str().unwrap()), Some("z0"));
        let mut stored = stored(e.clone());
        let only_admin: HashMap<_, _> = [("ad".to_string(), keys["admin"].clone())].into();
        open_event(&mut stored, &only_admin, &Mirror).unwrap();
        assert_eq!(stored.actor, "admin");
        assert_eq!(stored.subject.as_deref(), Some("user:[erased]"));
        assert_eq!(stored.data["email"], ERASED);
    }

    #[test]
    fn text_made_to_look_sealed_is_sealed_and_reads_back_as_written() {
        let crafted = "sealed:v1:b2:626f627c776879";
        let mut e = NewAuditEvent::new(Timestamp::UNIX_EPOCH, "mallory", "request.created", None)
            .data(json!({"justification": crafted, "description": crafted}));
        let keys: HashMap<_, _> = [("mallory".to_string(), key("mallory", "m1"))].into();
        seal_event(&mut e, &keys, &Mirror).unwrap();
        assert_eq!(
            sealed_key_id(e.data["justification"].as_str().unwrap()),
            Some("m1")
        );
        let mut stored = stored(e);
        let by_id: HashMap<_, _> = [
            ("m1".to_string(), keys["mallory"].clone()),
            ("b2".to_string(), key("bob", "b2")),
        ]
        .into();
        assert_eq!(key_ids(&stored), ["m1"].map(String::from).into());
        open_event(&mut stored, &by_id, &Mirror).unwrap();
        assert_eq!(stored.data["justification"], crafted);
        assert_eq!(
            stored.data["description"], crafted,
            "not a sealed field: left alone"
        );
    }

    #[test]
    fn a_key_that_does_not_open_its_value_is_an_error_not_an_erasure() {
        let mut e = NewAuditEvent::new(Timestamp::UNIX_EPOCH, "nina", "x.y", None);
        let keys: HashMap<_, _> = [("nina".to_string(), key("nina", "n1"))].into();
        seal_event(&mut e, &keys, &Mirror).unwrap();
        let mut stored = stored(e);
        // The row under that id holds another key (a restored backup, another KEK).
        let wrong: HashMap<_, _> = [("n1".to_string(), key("nina", "n2"))].into();
        assert!(open_event(&mut stored, &wrong, &Mirror).is_err());
    }

    #[test]
    fn a_person_without_a_key_is_an_error_not_a_plain_value() {
        let mut e = NewAuditEvent::new(Timestamp::UNIX_EPOCH, "dave", "x.y", None);
        assert!(seal_event(&mut e, &HashMap::new(), &Mirror).is_err());
    }

    #[test]
    fn system_text_without_a_person_stays_plain() {
        let mut e = NewAuditEvent::new(Timestamp::UNIX_EPOCH, "system", "grant.expired", None)
            .data(json!({"reason": "expired"}));
        assert!(persons(&e).is_empty());
        seal_event(&mut e, &HashMap::new(), &Mirror).unwrap();
        assert_eq!(e.data["reason"], "expired");
        assert!(!is_person("agent:web1") && !is_person("system") && is_person("alice"));
    }
}
