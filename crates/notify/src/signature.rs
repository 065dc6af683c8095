//! Webhook signatures: `X-Pedm-Signature: v1=<hex HMAC-SHA256(secret,
//! "<timestamp>.<raw body>")>` with `X-Pedm-Timestamp: <unix seconds>`.

use std::time::Duration;

use hmac::{KeyInit, Mac};

type HmacSha256 = hmac::Hmac<sha2::Sha256>;

/// Header carrying the signing time, in Unix seconds.
pub const TIMESTAMP_HEADER: &str = "X-Pedm-Timestamp";
/// Header carrying one or more `v1=<hex>` signatures, comma-separated.
pub const SIGNATURE_HEADER: &str = "X-Pedm-Signature";
/// Header carrying the notification id (the same on every retry).
pub const DELIVERY_HEADER: &str = "X-Pedm-Delivery";
/// Header carrying the notification kind (informational, not signed).
pub const KIND_HEADER: &str = "X-Pedm-Kind";

/// Longest signature header accepted by [`verify_signature`].
const MAX_SIGNATURE_HEADER: usize = 1024;

fn mac(secret: &[u8], timestamp: i64, body: &[u8]) -> HmacSha256 {
    // HMAC takes keys of any length, so this cannot fail.
    let mut m = HmacSha256::new_from_slice(secret).expect("HMAC accepts any key length");
    m.update(timestamp.to_string().as_bytes());
    m.update(b".");
    m.update(body);
    m
}

/// `v1=<hex>` for one secret.
pub fn sign(secret: &[u8], timestamp: i64, body: &[u8]) -> String {
    format!(
        "v1={}",
        hex::encode(mac(secret, timestamp, body).finalize().into_bytes())
    )
}

/// The signature header value for the current secret and, during a rotation,
/// the previous one: `v1=<hex>[,v1=<hex>]`.
pub fn signature_header(secrets: &[&[u8]], timestamp: i64, body: &[u8]) -> String {
    secrets
        .iter()
        .map(|s| sign(s, timestamp, body))
        .collect::<Vec<_>>()
        .join(",")
}

/// Why a delivery's signature was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// The timestamp header is not a whole number of Unix seconds.
    #[error("malformed {TIMESTAMP_HEADER} header")]
    MalformedTimestamp,
    /// The signature header has no well-formed `v1=<64 hex digits>` value.
    #[error("malformed {SIGNATURE_HEADER} header: no well-formed v1= signature")]
    MalformedSignature,
    /// The timestamp is further from `now` than the tolerance (replay or clock skew).
    #[error("timestamp is {skew_secs}s away from now, more than the tolerance")]
    OutsideTolerance {
        /// `now - timestamp`, in seconds (negative: in the future).
        skew_secs: i64,
    },
    /// No `v1=` value matches the body under this secret.
    #[error("signature does not match")]
    Mismatch,
}

/// Checks a delivery as a receiver: the timestamp is within `tolerance` of
/// `now` (both directions) and one of the `v1=` values in `signature_header`
/// is the HMAC-SHA256 under `secret` of `"<timestamp>.<body>"`. Compared in
/// constant time. Several `v1=` values (comma- or space-separated) are allowed
/// so the sender can sign with old and new keys during a rotation; values of
/// other schemes (`v2=…`) are ignored.
///
/// Receivers should also remember recent `X-Pedm-Delivery` ids to drop
/// duplicates: retries reuse the id with a fresh timestamp.
pub fn verify_signature(
    secret: &[u8],
    timestamp_header: &str,
    signature_header: &str,
    body: &[u8],
    now: jiff::Timestamp,
    tolerance: Duration,
) -> Result<(), SignatureError> {
    let ts_str = timestamp_header.trim();
    if ts_str.is_empty() || ts_str.len() > 12 || !ts_str.bytes().all(|b| b.is_ascii_digit()) {
        return Err(SignatureError::MalformedTimestamp);
    }
    let ts: i64 = ts_str
        .parse()
        .map_err(|_| SignatureError::MalformedTimestamp)?;
    if signature_header.len() > MAX_SIGNATURE_HEADER {
        return Err(SignatureError::MalformedSignature);
    }
    let candidates: Vec<Vec<u8>> = signature_header
        .split([',', ' '])
        .filter_map(|part| part.trim().strip_prefix("v1="))
        .filter(|h| h.len() == 64)
        .filter_map(|h| hex::decode(h).ok())
        .collect();
    if candidates.is_empty() {
        return Err(SignatureError::MalformedSignature);
    }
    let skew = now.as_second().saturating_sub(ts);
    let tol = i64::try_from(tolerance.as_secs()).unwrap_or(i64::MAX);
    if skew.unsigned_abs() > tol.unsigned_abs() {
        return Err(SignatureError::OutsideTolerance { skew_secs: skew });
    }
    let expected = mac(secret, ts, body);
    // Check every candidate, so timing does not reveal which one matched.
    let mut ok = false;
    for c in &candidates {
        ok |= expected.clone().verify_slice(c).is_ok();
    }
    if ok {
        Ok(())
    } else {
        Err(SignatureError::Mismatch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_800_000_000;

    fn now() -> jiff::Timestamp {
        jiff::Timestamp::from_second(NOW).unwrap()
    }

    const TOL: Duration = Duration::from_secs(300);

    #[test]
    fn known_vector() {
        // Computed independently: printf '1800000000.{}' | openssl dgst -sha256 -hmac key
        assert_eq!(
            sign(b"key", NOW, b"{}"),
            "v1=7321475872b03ff21bdc2dfd86ea2d99ec29c479fbe4a77aa6acf4509505493f"
        );
    }

    #[test]
    fn accepts_valid_and_rejects_tampering() {
        let sig = sign(b"s3cret", NOW, b"body");
        let ts = NOW.to_string();
        assert_eq!(
            verify_signature(b"s3cret", &ts, &sig, b"body", now(), TOL),
            Ok(())
        );
        assert_eq!(
            verify_signature(b"other", &ts, &sig, b"body", now(), TOL),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify_signature(b"s3cret", &ts, &sig, b"bodY", now(), TOL),
            Err(SignatureError::Mismatch)
        );
        // Changing the timestamp breaks the signature even within tolerance.
        let ts2 = (NOW - 1).to_string();
        assert_eq!(
            verify_signature(b"s3cret", &ts2, &sig, b"body", now(), TOL),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn tolerance_both_directions() {
        for (offset, ok) in [(-300, true), (300, true), (-301, false), (301, false)] {
            let ts = NOW + offset;
            let sig = sign(b"k", ts, b"b");
            let r = verify_signature(b"k", &ts.to_string(), &sig, b"b", now(), TOL);
            assert_eq!(r.is_ok(), ok, "offset {offset}: {r:?}");
            if !ok {
                assert_eq!(
                    r,
                    Err(SignatureError::OutsideTolerance { skew_secs: -offset })
                );
            }
        }
    }

    #[test]
    fn malformed_headers() {
        let sig = sign(b"k", NOW, b"b");
        let ts = NOW.to_string();
        for bad_ts in ["", "abc", "-5", "1.5", "99999999999999999999", " "] {
            assert_eq!(
                verify_signature(b"k", bad_ts, &sig, b"b", now(), TOL),
                Err(SignatureError::MalformedTimestamp),
                "{bad_ts:?}"
            );
        }
        let long = "v1=".repeat(500);
        for bad_sig in [
            "",
            "v1=",
            "v1=zz",
            &sig[3..],
            "v2=abcd",
            "sha256=00",
            &sig[..20],
            long.as_str(),
        ] {
            assert_eq!(
                verify_signature(b"k", &ts, bad_sig, b"b", now(), TOL),
                Err(SignatureError::MalformedSignature),
                "{bad_sig:?}"
            );
        }
    }

    #[test]
    fn several_values_for_rotation() {
        let header = signature_header(&[b"new", b"old"], NOW, b"b");
        let ts = NOW.to_string();
        assert_eq!(
            verify_signature(b"new", &ts, &header, b"b", now(), TOL),
            Ok(())
        );
        assert_eq!(
            verify_signature(b"old", &ts, &header, b"b", now(), TOL),
            Ok(())
        );
        assert_eq!(
            verify_signature(b"else", &ts, &header, b"b", now(), TOL),
            Err(SignatureError::Mismatch)
        );
        // Unknown schemes and spaces are tolerated next to a valid v1.
        let mixed = format!("v2=abc, {}", sign(b"k", NOW, b"b"));
        assert_eq!(
            verify_signature(b"k", &ts, &mixed, b"b", now(), TOL),
            Ok(())
        );
    }
}
