//! The syntax of what people type, as regular expressions for the published API contract
//! (OpenAPI `pattern`s). The validators in [`crate::model`], [`crate::duration`] and
//! [`crate::service`] are the rules; these patterns describe the canonical subset that every
//! validator accepts, and the tests below check that with generated strings. A value outside a
//! pattern may still be accepted (`1h 30m`, `90 minutes`); a value inside one never fails for
//! its syntax.

/// Names of users, groups, targets, roles and tasks: see [`crate::model::validate_name`].
pub const NAME: &str = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$";

/// A duration in its canonical form: `30m`, `1h30m`, `2d`, `1w`. At most three parts of at
/// most four digits, so that a time that far ahead is still representable, and a non-zero
/// first part.
pub const DURATION: &str = r"^[1-9][0-9]{0,3}[smhdw]([0-9]{1,4}[smhdw]){0,2}$";

/// A token lifetime: a duration, or `never`.
pub const LIFETIME: &str = r"^(never|[1-9][0-9]{0,3}[smhdw]([0-9]{1,4}[smhdw]){0,2})$";

/// One line of free text with at least one visible character: no control characters (C0,
/// DEL, C1; see [`char::is_control`]).
pub const LINE: &str = r"^[^\u0000-\u001F\u007F-\u009F]*[^\s\u0000-\u001F\u007F-\u009F][^\u0000-\u001F\u007F-\u009F]*$";

/// Optional one-line free text: empty, blank (both mean absent) or a [`LINE`].
pub const OPTIONAL_LINE: &str = r"^[^\u0000-\u001F\u007F-\u009F]*$";

/// Free text that may span lines (a justification): newline and tab are allowed, other
/// control characters are not; at least one visible character.
pub const TEXT: &str = r"^[^\u0000-\u0008\u000B-\u001F\u007F-\u009F]*[^\s\u0000-\u001F\u007F-\u009F][^\u0000-\u0008\u000B-\u001F\u007F-\u009F]*$";

/// An entry of a delegation's scope: a target name, or a label selector (`env=prod`,
/// `env=prod,team=web`; values of at most 128 characters, no commas or control characters).
pub const SCOPE_ITEM: &str = r"^([A-Za-z0-9][A-Za-z0-9._-]{0,63}|[A-Za-z0-9][A-Za-z0-9._-]{0,63}=[^,\u0000-\u001F\u007F-\u009F]{0,128}(,[A-Za-z0-9][A-Za-z0-9._-]{0,63}=[^,\u0000-\u001F\u007F-\u009F]{0,128}){0,3})$";

/// A mail address: see [`crate::model::validate_email`]. The canonical subset: a dot-atom
/// local part, a domain of labels with a dot.
pub const EMAIL: &str = r"^[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]{1,32}(\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]{1,15}){0,1}@[A-Za-z0-9]([A-Za-z0-9-]{0,30}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,30}[A-Za-z0-9])?){1,3}$";

/// A task parameter's name, as written `{name}` in a template.
pub const PARAM_NAME: &str = r"^[a-z_][a-z0-9_]{0,63}$";

/// URL-safe characters of RFC 3986 `unreserved` (PKCE verifiers, OAuth state, flow handles);
/// lengths are stated beside it.
pub const UNRESERVED: &str = r"^[A-Za-z0-9._~-]*$";

/// Whether every byte of `v` is [`UNRESERVED`] and its length is within `min..=max`.
pub fn is_unreserved(v: &str, min: usize, max: usize) -> bool {
    (min..=max).contains(&v.len())
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'))
}

/// The CLI's loopback redirect for single sign-on (RFC 8252 §7.3): plain HTTP to 127.0.0.1
/// or [::1], a port, a path of unreserved characters, no user, query or fragment.
pub const LOOPBACK_REDIRECT: &str = r"^http://(127\.0\.0\.1|\[::1\]):([1-9][0-9]{0,3}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5])(/[A-Za-z0-9._~-]*)*$";

/// Whether `uri` matches [`LOOPBACK_REDIRECT`].
pub fn is_loopback_redirect(uri: &str) -> bool {
    let Some(rest) = uri
        .strip_prefix("http://127.0.0.1:")
        .or_else(|| uri.strip_prefix("http://[::1]:"))
    else {
        return false;
    };
    let (port, path) = rest.find('/').map_or((rest, ""), |i| rest.split_at(i));
    let port_ok = (1..=5).contains(&port.len())
        && !port.starts_with('0')
        && port.bytes().all(|b| b.is_ascii_digit())
        && port.parse::<u16>().is_ok();
    port_ok
        && path
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'/' | b'-' | b'.' | b'_' | b'~'))
}

/// Most characters one line of free text (a ticket, a task, a reason, a comment) may have.
pub const MAX_LINE_CHARS: usize = 200;

/// Most characters of a comment or reason.
pub const MAX_COMMENT_CHARS: usize = 1000;

/// A count written as a JSON number: `12` or `12.0` (JSON has one number type; `12.0` is the
/// integer 12 to JSON Schema, and to clients that only have floats). For
/// `#[serde(deserialize_with = "...")]` on an `Option` of an unsigned integer.
pub fn whole_number<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: TryFrom<u64>,
{
    use serde::Deserialize as _;
    use serde::de::Error as _;
    let Some(n) = Option::<f64>::deserialize(d)? else {
        return Ok(None);
    };
    // Below 2^53 a whole f64 is exact.
    if n.fract() != 0.0 || !(0.0..9_007_199_254_740_992.0).contains(&n) {
        return Err(D::Error::custom(format!("{n} is not a whole number")));
    }
    T::try_from(n as u64)
        .map(Some)
        .map_err(|_| D::Error::custom(format!("{n} is out of range")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// proptest generates from the pattern without its anchors (and without `\s`, which its
    /// generator treats as ASCII only; the rules trim Unicode white space as well).
    fn generator(pattern: &str) -> impl Strategy<Value = String> {
        let inner = pattern.trim_start_matches('^').trim_end_matches('$');
        proptest::string::string_regex(inner).expect("pattern compiles")
    }

    proptest! {
        #[test]
        fn every_name_in_the_pattern_is_valid(s in generator(NAME)) {
            prop_assert!(crate::model::validate_name("user", &s).is_ok(), "{s:?}");
        }

        #[test]
        fn every_duration_in_the_pattern_parses(s in generator(DURATION)) {
            let secs = crate::duration::parse_duration(&s);
            prop_assert!(secs.is_ok(), "{s:?}: {secs:?}");
            let far = jiff::Timestamp::now()
                .checked_add(jiff::SignedDuration::from_secs(secs.unwrap_or(0)));
            prop_assert!(far.is_ok(), "{s:?} is too far ahead to be a time");
        }

        #[test]
        fn every_scope_item_in_the_pattern_parses(s in generator(SCOPE_ITEM)) {
            // A selector naming one key twice is refused; the pattern cannot say so.
            let parsed = crate::delegation::ScopeItem::parse(&s);
            let keys: Vec<&str> = s.split(',').filter_map(|p| p.split_once('=')).map(|p| p.0).collect();
            let unique: std::collections::BTreeSet<&str> = keys.iter().copied().collect();
            prop_assume!(keys.len() == unique.len());
            prop_assert!(parsed.is_ok(), "{s:?}: {parsed:?}");
        }

        #[test]
        fn every_email_in_the_pattern_is_valid(s in generator(EMAIL)) {
            prop_assert!(crate::model::validate_email(&s).is_ok(), "{s:?}");
        }

        #[test]
        fn every_param_name_in_the_pattern_is_valid(s in generator(PARAM_NAME)) {
            prop_assert!(crate::delegation::valid_param_name(&s), "{s:?}");
        }

        #[test]
        fn loopback_redirects_match_the_pattern_exactly(s in "[ -~]{0,40}", port in 0u32..70000) {
            let re = regex::Regex::new(LOOPBACK_REDIRECT).expect("pattern compiles");
            for uri in [s.clone(), format!("http://127.0.0.1:{port}{s}"), format!("http://[::1]:{port}/{s}")] {
                prop_assert_eq!(re.is_match(&uri), is_loopback_redirect(&uri), "{:?}", uri);
            }
        }

        #[test]
        fn unreserved_matches_the_pattern_exactly(s in "[ -~]{0,50}") {
            let re = regex::Regex::new(UNRESERVED).expect("pattern compiles");
            prop_assert_eq!(re.is_match(&s), is_unreserved(&s, 0, 50), "{:?}", s);
        }

        #[test]
        fn every_line_in_the_pattern_has_no_control_characters(s in generator(OPTIONAL_LINE)) {
            prop_assert!(!s.chars().any(char::is_control), "{s:?}");
        }
    }

    #[test]
    fn durations_outside_the_pattern_that_the_parser_refuses() {
        for bad in ["0s", "5", "1y", "", "-1h"] {
            assert!(crate::duration::parse_duration(bad).is_err(), "{bad}");
        }
    }
}
