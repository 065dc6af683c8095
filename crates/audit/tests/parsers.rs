//! The offline verifier and the checkpoint note parser take files from elsewhere (an export
//! handed to an auditor, a note from a witness): any bytes are answered without panicking,
//! any change to an event line of a valid export is caught, and a signed note reads back. The
//! OCSF builder, which a SIEM reads, turns any event (hostile names, actions, subjects and
//! data) into exactly one JSON line that says the same.
//! The `fuzz/` targets `audit_export` and `checkpoint_note` explore the same parsers with
//! coverage guidance.

use jiff::Timestamp;
use pedm_audit::{
    CheckpointNote, ExportHeader, OcsfWriter, SigningKey, VerifyOptions, root, verify_export_with,
    write_export,
};
use pedm_core::audit::{AuditEvent, GENESIS_HASH, NewAuditEvent, Outcome, chain};
use proptest::prelude::*;

fn key() -> SigningKey {
    SigningKey::from_seed(&[9; 32])
}

fn events(texts: &[String]) -> Vec<AuditEvent> {
    let mut prev = GENESIS_HASH;
    texts
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let at = Timestamp::from_second(1_780_000_000 + i as i64).expect("time");
            let e = chain(
                i as i64 + 1,
                prev,
                NewAuditEvent::new(at, t, "request.created", Some(format!("request:{i}")))
                    .data(serde_json::json!({ "justification": t })),
            );
            prev = e.hash;
            e
        })
        .collect()
}

/// A whole export of `texts` as events, with a checkpoint covering them all.
fn export(texts: &[String]) -> Vec<u8> {
    let k = key();
    let evs = events(texts);
    let hashes: Vec<[u8; 32]> = evs.iter().map(|e| e.hash).collect();
    let at = Timestamp::from_second(1_790_000_000).expect("time");
    let cp = k.sign_checkpoint(evs.len() as u64, root(&hashes), at);
    let header = ExportHeader::new(at, Some(k.key_id().into()));
    write_export(Vec::new(), &header, &[cp], &evs).expect("export")
}

fn verify(bytes: &[u8]) -> bool {
    let opts = VerifyOptions {
        threads: Some(1),
        ..VerifyOptions::default()
    };
    verify_export_with(bytes, key().public_key(), &opts).is_ok()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn no_byte_string_makes_the_verifier_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let _ = verify(&bytes);
    }

    #[test]
    fn a_valid_export_verifies(texts in proptest::collection::vec(any::<String>(), 1..12)) {
        prop_assert!(verify(&export(&texts)));
    }

    #[test]
    fn any_change_to_an_event_is_caught(
        texts in proptest::collection::vec(any::<String>(), 1..12),
        which in any::<prop::sample::Index>(),
        at in any::<prop::sample::Index>(),
        xor in 1u8..=255,
    ) {
        let bytes = export(&texts);
        let mut lines: Vec<Vec<u8>> = bytes.split(|b| *b == b'\n').map(<[u8]>::to_vec).collect();
        // Header, checkpoint, the events, the end line, and the empty rest after the last \n.
        let first_event = 2;
        let line = first_event + which.index(texts.len());
        let original: AuditEvent = serde_json::from_slice(&lines[line]).expect("an event line");
        let i = at.index(lines[line].len());
        let was = lines[line][i];
        lines[line][i] ^= xor;
        // Only a change of what the line says is tampering: a hash's hex digit in the other
        // case says the same thing.
        let same_event = serde_json::from_slice::<AuditEvent>(&lines[line]).ok().as_ref() == Some(&original);
        let changed = lines.join(&b'\n');
        prop_assert_eq!(
            verify(&changed),
            same_event,
            "byte {} of event {} changed (0x{:02x} -> 0x{:02x})",
            i, line - 1, was, was ^ xor
        );
    }

    #[test]
    fn no_note_text_makes_the_parser_panic(s in any::<String>()) {
        let _ = CheckpointNote::parse(&s);
    }

    #[test]
    fn a_signed_note_reads_back(origin in "[a-z.]{1,20}/[a-z0-9]{1,10}", size in any::<u64>(), r in any::<[u8; 32]>()) {
        let note = key().sign_note(&origin, size, &r);
        let parsed = CheckpointNote::parse(&note.text()).expect("parses");
        prop_assert_eq!(parsed, note);
    }
}

/// Any JSON value, a few levels deep, with any strings.
fn json_value() -> impl Strategy<Value = serde_json::Value> {
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::from),
        any::<i64>().prop_map(serde_json::Value::from),
        any::<String>().prop_map(serde_json::Value::from),
    ];
    leaf.prop_recursive(3, 32, 4, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::Array),
            proptest::collection::btree_map(any::<String>(), inner, 0..4)
                .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn any_event_is_one_ocsf_line_that_says_the_same(
        seq in 1i64..i64::MAX,
        micros in 0i64..4_000_000_000_000_000,
        actor in any::<String>(),
        action in prop_oneof![
            Just("request.created".to_string()),
            Just("user.created".to_string()),
            Just("grant.revoked".to_string()),
            any::<String>(),
        ],
        subject in proptest::option::of(any::<String>()),
        outcome in prop_oneof![Just(Outcome::Success), Just(Outcome::Failure), Just(Outcome::Denied)],
        data in json_value(),
    ) {
        let at = Timestamp::from_microsecond(micros).expect("time in range");
        let e = chain(
            seq,
            GENESIS_HASH,
            NewAuditEvent::new(at, &actor, &action, subject.clone())
                .outcome(outcome)
                .data(data.clone()),
        );
        let mut w = OcsfWriter::new(Vec::new());
        w.write(&e).expect("writes");
        let out = w.finish().expect("flushes");
        let text = std::str::from_utf8(&out).expect("UTF-8");
        prop_assert!(text.ends_with('\n'));
        prop_assert_eq!(text.matches('\n').count(), 1, "one line: {}", text);
        let v: serde_json::Value = serde_json::from_str(text).expect("JSON");
        prop_assert_eq!(v["actor"]["user"]["name"].as_str(), Some(actor.as_str()));
        prop_assert_eq!(v["unmapped"]["action"].as_str(), Some(action.as_str()));
        prop_assert_eq!(v["unmapped"]["subject"].as_str(), subject.as_deref());
        prop_assert_eq!(&v["unmapped"]["data"], &data);
        prop_assert_eq!(v["metadata"]["sequence"].as_i64(), Some(seq));
        prop_assert_eq!(v["time"].as_i64(), Some(at.as_millisecond()));
        let hash = hex::encode(e.hash);
        prop_assert_eq!(v["unmapped"]["hash"].as_str(), Some(hash.as_str()));
        prop_assert!(v["class_uid"].as_u64().is_some() && v["type_uid"].as_u64().is_some());
    }
}
