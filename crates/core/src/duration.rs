//! Durations as people write them: `30m`, `1h30m`, `90s`, `2d`.

use std::fmt;

/// Parses `30m`, `1h30m`, `1h 30m`, `45s`, `2d`. Returns whole seconds; rejects a number
/// without a unit (`5` could mean seconds, minutes or hours: the error names the units),
/// zero, negatives, unknown units and overflow.
pub fn parse_duration(input: &str) -> Result<i64, DurationError> {
    let s = input.trim();
    if s.is_empty() {
        return Err(DurationError::Empty);
    }
    if s.starts_with('-') {
        return Err(DurationError::Negative(input.to_string()));
    }
    match s.parse::<i64>() {
        Ok(0) => return Err(DurationError::Zero),
        Ok(_) => return Err(DurationError::NoUnit(s.to_string())),
        Err(_) => {}
    }
    let mut total: i64 = 0;
    let mut num = String::new();
    let mut chars = s.chars().peekable();
    let mut saw_unit = false;
    while let Some(c) = chars.next() {
        if c.is_ascii_digit() {
            num.push(c);
            continue;
        }
        if c.is_whitespace() {
            continue;
        }
        let mut unit = String::from(c);
        while let Some(&n) = chars.peek() {
            if n.is_ascii_alphabetic() {
                unit.push(n);
                chars.next();
            } else {
                break;
            }
        }
        if num.is_empty() {
            return Err(DurationError::Malformed(input.to_string()));
        }
        let factor: i64 = match unit.as_str() {
            "s" | "sec" | "secs" | "second" | "seconds" => 1,
            "m" | "min" | "mins" | "minute" | "minutes" => 60,
            "h" | "hr" | "hrs" | "hour" | "hours" => 3600,
            "d" | "day" | "days" => 86_400,
            "w" | "week" | "weeks" => 604_800,
            _ => return Err(DurationError::UnknownUnit(unit)),
        };
        let n: i64 = num
            .parse()
            .map_err(|_| DurationError::Malformed(input.to_string()))?;
        total = n
            .checked_mul(factor)
            .and_then(|v| total.checked_add(v))
            .ok_or_else(|| DurationError::Overflow(input.to_string()))?;
        num.clear();
        saw_unit = true;
    }
    if !num.is_empty() || !saw_unit {
        return Err(DurationError::Malformed(input.to_string()));
    }
    if total == 0 {
        return Err(DurationError::Zero);
    }
    Ok(total)
}

/// Formats seconds the way [`parse_duration`] reads them: `1h30m`, `45s`.
pub fn format_duration(secs: i64) -> String {
    if secs <= 0 {
        return format!("{secs}s");
    }
    let (d, rest) = (secs / 86_400, secs % 86_400);
    let (h, rest) = (rest / 3600, rest % 3600);
    let (m, s) = (rest / 60, rest % 60);
    let mut out = String::new();
    for (v, u) in [(d, "d"), (h, "h"), (m, "m"), (s, "s")] {
        if v > 0 {
            out.push_str(&format!("{v}{u}"));
        }
    }
    out
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    #[error("duration is empty")]
    Empty,
    #[error("duration must be greater than zero")]
    Zero,
    #[error("duration {0:?} is negative")]
    Negative(String),
    #[error("duration {0:?} is not of the form 30m, 1h30m, 45s, 2d")]
    Malformed(String),
    #[error(
        "duration {0:?} has no unit: write it with one of s, m, h, d, w (e.g. {0}s, {0}m, {0}h)"
    )]
    NoUnit(String),
    #[error("unknown duration unit {0:?} (use s, m, h, d, w)")]
    UnknownUnit(String),
    #[error("duration {0:?} is too large")]
    Overflow(String),
}

/// Seconds shown as a human duration in `Display`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Secs(pub i64);

impl fmt::Display for Secs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&format_duration(self.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_common_forms() {
        assert_eq!(parse_duration("30m"), Ok(1800));
        assert_eq!(parse_duration("1h30m"), Ok(5400));
        assert_eq!(parse_duration("1h 30m"), Ok(5400));
        assert_eq!(parse_duration("45s"), Ok(45));
        assert_eq!(parse_duration("2d"), Ok(172_800));
    }

    #[test]
    fn a_number_without_a_unit_is_refused_naming_the_units() {
        assert_eq!(parse_duration("0"), Err(DurationError::Zero));
        for bare in ["5", "90", " 5 "] {
            let e = parse_duration(bare).unwrap_err();
            assert!(matches!(e, DurationError::NoUnit(_)), "{bare}: {e:?}");
            let msg = e.to_string();
            assert!(
                msg.contains("no unit") && msg.contains("s, m, h, d, w"),
                "{msg}"
            );
        }
    }

    #[test]
    fn rejects_bad_forms() {
        assert_eq!(parse_duration("0m"), Err(DurationError::Zero));
        assert!(matches!(
            parse_duration("-5m"),
            Err(DurationError::Negative(_))
        ));
        assert!(matches!(
            parse_duration("5x"),
            Err(DurationError::UnknownUnit(_))
        ));
        assert!(matches!(
            parse_duration("m"),
            Err(DurationError::Malformed(_))
        ));
        assert!(matches!(
            parse_duration("5m3"),
            Err(DurationError::Malformed(_))
        ));
        assert!(matches!(
            parse_duration("99999999999999999w"),
            Err(DurationError::Overflow(_))
        ));
        assert_eq!(parse_duration(""), Err(DurationError::Empty));
    }

    #[test]
    fn formats_round_trip() {
        for s in [1, 59, 60, 61, 3600, 5400, 86_400, 90_061] {
            assert_eq!(parse_duration(&format_duration(s)), Ok(s));
        }
    }
}
