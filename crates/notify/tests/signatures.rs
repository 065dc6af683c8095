//! The checks that stand between the internet and pedm's callbacks: webhook receivers'
//! signature check, Slack's request signing and Slack link codes. Any header values and body
//! are answered without panicking; a correct signature passes; any change to the body fails.

use pedm_notify::slack;
use proptest::prelude::*;
use std::time::Duration;

const NOW: i64 = 1_790_000_000;

fn now() -> jiff::Timestamp {
    jiff::Timestamp::from_second(NOW).expect("time")
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1024, ..ProptestConfig::default() })]

    #[test]
    fn no_webhook_headers_make_the_check_panic(
        secret in proptest::collection::vec(any::<u8>(), 0..64),
        ts in any::<String>(), sig in any::<String>(),
        body in proptest::collection::vec(any::<u8>(), 0..256),
        tol in any::<u64>(),
    ) {
        let _ = pedm_notify::verify_signature(&secret, &ts, &sig, &body, now(), Duration::from_secs(tol));
    }

    #[test]
    fn webhook_signatures_hold_only_for_their_body(
        secret in proptest::collection::vec(any::<u8>(), 1..64),
        body in proptest::collection::vec(any::<u8>(), 0..256),
        at in any::<prop::sample::Index>(), xor in 1u8..=255,
        skew in -300i64..=300,
    ) {
        let ts = NOW + skew;
        let header = pedm_notify::sign(&secret, ts, &body);
        let tol = Duration::from_secs(300);
        let check = |b: &[u8]| pedm_notify::verify_signature(&secret, &ts.to_string(), &header, b, now(), tol);
        prop_assert!(check(&body).is_ok());
        if !body.is_empty() {
            let mut changed = body.clone();
            changed[at.index(body.len())] ^= xor;
            prop_assert!(check(&changed).is_err());
        }
    }

    #[test]
    fn no_slack_headers_make_the_check_panic(
        secret in proptest::collection::vec(any::<u8>(), 0..64),
        ts in proptest::option::of(any::<String>()), sig in proptest::option::of(any::<String>()),
        body in proptest::collection::vec(any::<u8>(), 0..256),
        now in any::<i64>(),
    ) {
        let _ = slack::verify(&secret, ts.as_deref(), sig.as_deref(), &body, now);
    }

    #[test]
    fn slack_signatures_hold_only_for_their_body(
        secret in proptest::collection::vec(any::<u8>(), 1..64),
        body in proptest::collection::vec(any::<u8>(), 0..256),
        at in any::<prop::sample::Index>(), xor in 1u8..=255,
    ) {
        let sig = slack::sign(&secret, NOW, &body);
        let ts = NOW.to_string();
        prop_assert_eq!(slack::verify(&secret, Some(&ts), Some(&sig), &body, NOW), Ok(NOW));
        if !body.is_empty() {
            let mut changed = body.clone();
            changed[at.index(body.len())] ^= xor;
            prop_assert!(slack::verify(&secret, Some(&ts), Some(&sig), &changed, NOW).is_err());
        }
    }

    #[test]
    fn no_link_code_makes_the_check_panic(code in any::<String>(), now in any::<i64>()) {
        let _ = slack::verify_link_code(b"secret", &code, now);
    }

    #[test]
    fn link_codes_read_back_until_they_expire(team in "[A-Z0-9]{1,12}", user in "[A-Z0-9]{1,12}", ttl in 1i64..3600) {
        let code = slack::link_code(b"secret", &team, &user, NOW + ttl);
        prop_assert_eq!(slack::verify_link_code(b"secret", &code, NOW), Ok((team, user)));
        prop_assert!(slack::verify_link_code(b"other", &code, NOW).is_err());
        prop_assert!(slack::verify_link_code(b"secret", &code, NOW + ttl + 1).is_err());
    }
}

#[test]
fn extreme_timestamps_are_refused_not_a_panic() {
    for (ts, now) in [
        (i64::MAX.to_string(), -1),
        (i64::MIN.to_string(), 1),
        (i64::MIN.to_string(), i64::MAX),
    ] {
        assert!(slack::verify(b"s", Some(&ts), Some("v0=00"), b"", now).is_err());
    }
}
