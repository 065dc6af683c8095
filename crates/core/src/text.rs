//! Text that came from someone else, made safe for whoever reads it: every terminal, table
//! and CSV writer in pedm goes through these (defence in depth: input is checked too).
//!
//! - [`terminal_safe`]: control characters (C0 such as ESC, BEL, newline; DEL; C1 such as
//!   CSI U+009B and OSC U+009D) are shown escaped (`\u{1b}`), so a justification cannot move
//!   the cursor, set the window title, write a hyperlink or break a row.
//! - [`csv_cell`]: the same, and a cell a spreadsheet would read as a formula (starting
//!   with `=`, `+`, `-`, `@`, a tab or a carriage return) is prefixed with `'` (OWASP's
//!   advice for CSV injection), so `=HYPERLINK(...)` stays text.

use std::borrow::Cow;

/// Whether `c` would be interpreted by a terminal rather than shown.
fn is_control(c: char) -> bool {
    c.is_control() || matches!(c, '\u{2028}' | '\u{2029}')
}

/// `s` with every control character escaped (`\n`, `\u{1b}`, `\u{9b}`...).
pub fn terminal_safe(s: &str) -> Cow<'_, str> {
    if !s.chars().any(is_control) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if is_control(c) {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// `s` safe as a CSV cell: control characters escaped ([`terminal_safe`]) and a cell that
/// starts like a formula (`=`, `+`, `-`, `@`, tab, carriage return) prefixed with `'`.
pub fn csv_cell(s: &str) -> Cow<'_, str> {
    let formula = s.starts_with(['=', '+', '-', '@', '\t', '\r']);
    let safe = terminal_safe(s);
    if formula {
        Cow::Owned(format!("'{safe}"))
    } else {
        safe
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_c0_c1_and_osc() {
        let evil = "ok\u{1b}]8;;http://x\u{7}link\u{1b}]8;;\u{7}\u{9b}31m\r\nnext";
        let safe = terminal_safe(evil);
        assert!(!safe.chars().any(|c| c.is_control()), "{safe}");
        assert!(safe.contains("\\u{1b}]8;;http://x\\u{7}"), "{safe}");
        assert!(safe.contains("\\u{9b}31m"), "{safe}");
        assert!(safe.contains("\\r\\nnext"), "{safe}");
        assert!(matches!(terminal_safe("plain text é"), Cow::Borrowed(_)));
    }

    #[test]
    fn neutralises_formulas() {
        for f in ["=1+1", "+1", "-2", "@SUM(A1)", "\tx", "\rx"] {
            let c = csv_cell(f);
            assert!(c.starts_with('\''), "{f:?} -> {c}");
            assert!(!c.chars().any(|c| c.is_control()), "{c}");
        }
        assert_eq!(csv_cell("alice"), "alice");
        assert_eq!(csv_cell("a=b"), "a=b");
        assert_eq!(csv_cell(""), "");
    }
}
