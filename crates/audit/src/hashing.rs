//! Fast recomputation of `pedm_core::audit` content hashes.
//!
//! The format is defined (and produced) by `pedm_core::audit::canonical_bytes`: the compact JSON
//! of every field but `hash`, keys sorted, prefixed by `pedm-audit-v1\n`. Sorted, the keys are
//! `action, actor, at, data, outcome, prev_hash, seq, subject`, so the bytes can be written field
//! by field without building a `serde_json::Value`.
//!
//! Soundness: a *match* is conclusive on its own (the bytes hashed are then, by collision
//! resistance, exactly the bytes the event was created from). A *mismatch* is always confirmed
//! with `pedm_core::audit::event_hash` before an event is called altered, so a divergence between
//! this writer and core's can never make a genuine event fail; the tests check both agree.

use std::io::Write;

use pedm_core::audit::{AuditEvent, NewAuditEvent, event_hash};
use sha2::{Digest, Sha256};

use crate::merkle::Hash;

const DOMAIN: &[u8] = b"pedm-audit-v1\n";

fn finish(buf: &[u8]) -> Hash {
    let mut h = Sha256::new();
    h.update(DOMAIN);
    h.update(buf);
    h.finalize().into()
}

fn json_str(buf: &mut Vec<u8>, s: &str) {
    serde_json::to_writer(&mut *buf, s).expect("writing to a Vec cannot fail");
}

/// Content hash of a parsed event, as core computes it (fast path; see module docs).
fn fast_hash(e: &AuditEvent, buf: &mut Vec<u8>) -> Hash {
    buf.clear();
    buf.extend_from_slice(br#"{"action":"#);
    json_str(buf, &e.action);
    buf.extend_from_slice(br#","actor":"#);
    json_str(buf, &e.actor);
    buf.extend_from_slice(br#","at":""#);
    write!(buf, "{}", e.at).expect("vec");
    buf.extend_from_slice(br#"","data":"#);
    serde_json::to_writer(&mut *buf, &pedm_core::audit::sorted_value(&e.data)).expect("vec");
    buf.extend_from_slice(br#","outcome":""#);
    buf.extend_from_slice(e.outcome.as_str().as_bytes());
    buf.extend_from_slice(br#"","prev_hash":""#);
    let mut hx = [0u8; 64];
    hex::encode_to_slice(e.prev_hash, &mut hx).expect("64");
    buf.extend_from_slice(&hx);
    write!(buf, "\",\"seq\":{},\"subject\":", e.seq).expect("vec");
    match &e.subject {
        Some(s) => json_str(buf, s),
        None => buf.extend_from_slice(b"null"),
    }
    buf.push(b'}');
    finish(buf)
}

/// Does `e.hash` match its content? `buf` is scratch space.
pub(crate) fn content_matches(e: &AuditEvent, buf: &mut Vec<u8>) -> bool {
    if fast_hash(e, buf) == e.hash {
        return true;
    }
    let ne = NewAuditEvent {
        at: e.at,
        actor: e.actor.clone(),
        action: e.action.clone(),
        outcome: e.outcome,
        subject: e.subject.clone(),
        data: e.data.clone(),
    };
    event_hash(e.seq, &e.prev_hash, &ne) == e.hash
}

/// Fixed tail of an event line as `AuditEvent`'s serde form writes it.
const TAIL_PREV: &[u8] = br#","prev_hash":""#;
const TAIL_HASH: &[u8] = br#"","hash":""#;
const TAIL_LEN: usize = TAIL_PREV.len() + 64 + TAIL_HASH.len() + 64 + 2;

fn lit(line: &[u8], pos: usize, lit: &[u8]) -> Option<usize> {
    line.get(pos..pos + lit.len())
        .filter(|s| *s == lit)
        .map(|_| pos + lit.len())
}

/// Bytes that end the plain run inside a JSON string: `"`, `\\` and control characters.
const STRING_SPECIAL: [bool; 256] = {
    let mut t = [false; 256];
    let mut i = 0;
    while i < 0x20 {
        t[i] = true;
        i += 1;
    }
    t[b'"' as usize] = true;
    t[b'\\' as usize] = true;
    t
};

/// End (exclusive) of the JSON string starting at `pos`: valid escapes, no raw control
/// characters. UTF-8 is not checked here (see [`fast_line`]).
fn string_end(line: &[u8], pos: usize) -> Option<usize> {
    if line.get(pos) != Some(&b'"') {
        return None;
    }
    let mut i = pos + 1;
    loop {
        while i < line.len() && !STRING_SPECIAL[line[i] as usize] {
            i += 1;
        }
        match *line.get(i)? {
            b'"' => return Some(i + 1),
            b'\\' => match *line.get(i + 1)? {
                b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => i += 2,
                b'u' => {
                    if !line.get(i + 2..i + 6)?.iter().all(u8::is_ascii_hexdigit) {
                        return None;
                    }
                    i += 6;
                }
                _ => return None,
            },
            _ => return None,
        }
    }
}

/// End of a JSON integer (`-?(0|[1-9][0-9]*)`) at `pos`, and its value.
fn int_end(line: &[u8], pos: usize) -> Option<(usize, i64)> {
    let neg = line.get(pos) == Some(&b'-');
    let start = pos + neg as usize;
    let mut i = start;
    let mut v: i64 = 0;
    while let Some(d) = line.get(i).filter(|b| b.is_ascii_digit()) {
        v = v.checked_mul(10)?.checked_add((d - b'0') as i64)?;
        i += 1;
    }
    if i == start || (line[start] == b'0' && i > start + 1) {
        return None;
    }
    Some((i, if neg { -v } else { v }))
}

/// Hex digit values; 0xff for anything else.
const HEX: [u8; 256] = {
    let mut t = [0xffu8; 256];
    let mut i = 0;
    while i < 10 {
        t[b'0' as usize + i] = i as u8;
        i += 1;
    }
    let mut i = 0;
    while i < 6 {
        t[b'a' as usize + i] = 10 + i as u8;
        t[b'A' as usize + i] = 10 + i as u8;
        i += 1;
    }
    t
};

/// Decodes 64 hex digits.
fn hex32(s: &[u8]) -> Option<Hash> {
    let s: &[u8; 64] = s.try_into().ok()?;
    let mut out = [0u8; 32];
    let mut bad = 0u8;
    for i in 0..32 {
        let hi = HEX[s[2 * i] as usize];
        let lo = HEX[s[2 * i + 1] as usize];
        bad |= (hi | lo) & 0xf0;
        out[i] = (hi << 4) | (lo & 0x0f);
    }
    (bad == 0).then_some(out)
}

/// Fast path for an event line exactly as `serde_json::to_writer(&AuditEvent)` writes it
/// (`{"seq":..,"at":..,"actor":..,"action":..,"outcome":..,"subject":..,"data":..,
/// "prev_hash":"..","hash":".."}`, no whitespace): cuts the line into its field texts, checks each
/// is one complete JSON value, rebuilds the canonical bytes from those texts and hashes them.
/// Returns `(seq, prev_hash, hash)` only if that hash equals the line's `hash`; `None` sends the
/// line to the full parser.
///
/// Why a match is conclusive: the canonical bytes of the original event are a JSON object whose
/// members are single JSON values; texts that are themselves complete JSON values and concatenate
/// (with the same keys in between) to the same bytes must be exactly those values (JSON values
/// are self-delimiting). So every field text in the line is the original one, the line is a plain
/// JSON object with exactly the nine `AuditEvent` keys once each, and it parses to the original
/// event in any JSON parser. Valid UTF-8 follows from equality with the original bytes.
pub(crate) fn fast_line(line: &[u8], buf: &mut Vec<u8>) -> Option<(i64, Hash, Hash)> {
    if line.len() < TAIL_LEN + 60 {
        return None;
    }
    let tail = line.len() - TAIL_LEN;
    let p = lit(line, 0, br#"{"seq":"#)?;
    let (seq_end, seq) = int_end(line, p)?;
    let seq_text = &line[p..seq_end];
    let at_start = lit(line, seq_end, br#","at":"#)?;
    let at_end = string_end(line, at_start)?;
    let actor_start = lit(line, at_end, br#","actor":"#)?;
    let actor_end = string_end(line, actor_start)?;
    let action_start = lit(line, actor_end, br#","action":"#)?;
    let action_end = string_end(line, action_start)?;
    let outcome_start = lit(line, action_end, br#","outcome":"#)?;
    let outcome_end = string_end(line, outcome_start)?;
    let subject_start = lit(line, outcome_end, br#","subject":"#)?;
    let subject_end = if line.get(subject_start) == Some(&b'n') {
        lit(line, subject_start, b"null")?
    } else {
        string_end(line, subject_start)?
    };
    let data_start = lit(line, subject_end, br#","data":"#)?;
    if data_start > tail {
        return None;
    }
    let data = &line[data_start..tail];
    let prev_start = lit(line, tail, TAIL_PREV)?;
    let prev_text = &line[prev_start..prev_start + 64];
    let hash_start = lit(line, prev_start + 64, TAIL_HASH)?;
    let hash_text = &line[hash_start..hash_start + 64];
    lit(line, hash_start + 64, br#""}"#)?;
    // `data` must be exactly one JSON value, no surrounding whitespace.
    if data.first().is_none_or(|b| b.is_ascii_whitespace())
        || data.last().is_none_or(|b| b.is_ascii_whitespace())
        || serde_json::from_slice::<serde::de::IgnoredAny>(data).is_err()
    {
        return None;
    }
    let prev_hash = hex32(prev_text)?;
    let hash = hex32(hash_text)?;

    buf.clear();
    buf.extend_from_slice(br#"{"action":"#);
    buf.extend_from_slice(&line[action_start..action_end]);
    buf.extend_from_slice(br#","actor":"#);
    buf.extend_from_slice(&line[actor_start..actor_end]);
    buf.extend_from_slice(br#","at":"#);
    buf.extend_from_slice(&line[at_start..at_end]);
    buf.extend_from_slice(br#","data":"#);
    buf.extend_from_slice(data);
    buf.extend_from_slice(br#","outcome":"#);
    buf.extend_from_slice(&line[outcome_start..outcome_end]);
    buf.extend_from_slice(br#","prev_hash":""#);
    buf.extend_from_slice(prev_text);
    buf.extend_from_slice(br#"","seq":"#);
    buf.extend_from_slice(seq_text);
    buf.extend_from_slice(br#","subject":"#);
    buf.extend_from_slice(&line[subject_start..subject_end]);
    buf.push(b'}');
    (finish(buf) == hash).then_some((seq, prev_hash, hash))
}

#[cfg(test)]
mod tests {
    use super::*;
    use pedm_core::audit::{GENESIS_HASH, Outcome, canonical_bytes, chain};
    use proptest::prelude::*;

    fn check(e: &AuditEvent) {
        let mut buf = Vec::new();
        fast_hash(e, &mut buf);
        let ne = NewAuditEvent {
            at: e.at,
            actor: e.actor.clone(),
            action: e.action.clone(),
            outcome: e.outcome,
            subject: e.subject.clone(),
            data: e.data.clone(),
        };
        let core = canonical_bytes(e.seq, &e.prev_hash, &ne).unwrap();
        assert_eq!(
            String::from_utf8_lossy(&buf),
            String::from_utf8_lossy(&core)
        );
        assert!(content_matches(e, &mut buf));
        // And the line form written by the exporter takes the raw path.
        let line = serde_json::to_string(e).unwrap();
        assert_eq!(
            fast_line(line.as_bytes(), &mut buf),
            Some((e.seq, e.prev_hash, e.hash)),
            "{line}"
        );
    }

    fn json_value() -> impl Strategy<Value = serde_json::Value> {
        let leaf = prop_oneof![
            Just(serde_json::Value::Null),
            any::<bool>().prop_map(serde_json::Value::from),
            any::<i64>().prop_map(serde_json::Value::from),
            any::<u64>().prop_map(serde_json::Value::from),
            any::<f64>()
                .prop_filter("finite", |f| f.is_finite())
                .prop_map(serde_json::Value::from),
            ".*".prop_map(serde_json::Value::from),
        ];
        leaf.prop_recursive(3, 24, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::from),
                prop::collection::btree_map(".*", inner, 0..4)
                    .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #[test]
        fn fast_hash_equals_core(
            seq in 1i64..i64::MAX,
            secs in 0i64..4_000_000_000,
            nanos in 0i32..1_000_000_000,
            actor in ".*",
            action in ".*",
            outcome in 0u8..3,
            subject in proptest::option::of(".*"),
            data in json_value(),
            prev in any::<[u8; 32]>(),
        ) {
            let at = jiff::Timestamp::new(secs, nanos).unwrap();
            let outcome = [Outcome::Success, Outcome::Denied, Outcome::Failure][outcome as usize];
            let e = chain(seq, prev, NewAuditEvent { at, actor, action, outcome, subject, data });
            check(&e);
        }
    }

    #[test]
    fn fixed_examples() {
        let at = jiff::Timestamp::from_second(1_700_000_000).unwrap();
        let e = chain(
            1,
            GENESIS_HASH,
            NewAuditEvent::new(at, "al\"ice\u{1}é", "request.created", None).data(
                serde_json::json!({"z": [1.5, -0.0, 1e300], "a": {"y": null, "b": "\u{2028}"}}),
            ),
        );
        check(&e);
    }
}
