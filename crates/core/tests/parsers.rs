//! Properties of the parsers that take outside input (durations, tokens, delegation scopes,
//! task templates' text helpers): no input makes them panic, and what pedm writes, it reads
//! back. The `fuzz/` targets explore the same parsers with coverage guidance.

use pedm_core::delegation::ScopeItem;
use pedm_core::duration::{format_duration, parse_duration};
use pedm_core::text::{csv_cell, terminal_safe};
use proptest::prelude::*;

/// What a terminal would act on rather than show.
fn interpreted(c: char) -> bool {
    c.is_control() || c == '\u{2028}' || c == '\u{2029}'
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2048, ..ProptestConfig::default() })]

    #[test]
    fn no_duration_text_panics(s in any::<String>()) {
        let _ = parse_duration(&s);
    }

    #[test]
    fn duration_like_text_never_panics_and_is_positive_when_accepted(
        s in "[0-9 dhmswx-]{0,40}"
    ) {
        if let Ok(secs) = parse_duration(&s) {
            prop_assert!(secs > 0, "{s:?} gave {secs}");
        }
    }

    #[test]
    fn a_formatted_duration_reads_back(secs in 1i64..=100 * 365 * 86_400) {
        prop_assert_eq!(parse_duration(&format_duration(secs)), Ok(secs));
    }

    #[test]
    fn units_add_up(d in 0i64..400, h in 0i64..48, m in 0i64..120, s in 0i64..120) {
        let total = d * 86_400 + h * 3600 + m * 60 + s;
        let text = format!("{d}d {h}h{m}m {s}s");
        let parsed = parse_duration(&text);
        if total == 0 {
            prop_assert!(parsed.is_err());
        } else {
            prop_assert_eq!(parsed, Ok(total));
        }
    }

    #[test]
    fn no_presented_token_panics(s in any::<String>()) {
        let _ = pedm_core::token::parse(&s);
        let _ = pedm_core::scim::parse_token(&s);
    }

    #[test]
    fn a_token_parses_only_in_its_own_form(id in "[0-9a-f]{16}", secret in "[A-Za-z0-9_-]{1,64}") {
        let api = format!("{}{id}_{secret}", pedm_core::token::PREFIX);
        let (i, s) = pedm_core::token::parse(&api).expect("an API token parses");
        prop_assert_eq!((i, s), (id.as_str(), secret.as_str()));
        prop_assert!(pedm_core::scim::parse_token(&api).is_none(), "not as a SCIM token");
    }

    #[test]
    fn no_delegation_scope_panics(s in any::<String>()) {
        let _ = ScopeItem::parse(&s);
    }

    #[test]
    fn terminal_safe_text_has_no_control_characters(s in any::<String>()) {
        let safe = terminal_safe(&s);
        prop_assert!(!safe.chars().any(interpreted), "{safe:?}");
        // Text without control characters is left as it is.
        if !s.chars().any(interpreted) {
            prop_assert_eq!(safe.as_ref(), s.as_str());
        }
    }

    #[test]
    fn no_csv_cell_reads_as_a_formula(s in any::<String>()) {
        let cell = csv_cell(&s);
        prop_assert!(!cell.starts_with(['=', '+', '-', '@', '\t', '\r']), "{cell:?}");
        prop_assert!(!cell.chars().any(char::is_control));
    }
}
