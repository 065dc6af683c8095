//! Compliance evidence: the frameworks pedm maps its record to, the controls of each and the
//! bundle files that support them, and the periods a bundle covers.

use jiff::Timestamp;
use jiff::civil::Date;

/// The files of a bundle (besides the manifest and its signature) and what each is.
pub const FILES: &[(&str, &str)] = &[
    (
        "elevations.csv",
        "every grant held in the period: who, what, when, why, who approved, its recorded sessions",
    ),
    (
        "break_glass.csv",
        "emergency access in the period and its after-the-fact review",
    ),
    (
        "access_reviews.csv",
        "access review items of the campaigns open in the period: reviewer, decision, comment, what was done",
    ),
    (
        "policy_versions.json",
        "the policy set in force at the period's start and every version applied in it, with diffs",
    ),
    (
        "sessions.csv",
        "recorded sessions in the period with their recordings' SHA-256",
    ),
    (
        "standing.csv",
        "standing privileges found in the targets (drift) in the period, and their removal",
    ),
    (
        "checkpoints.json",
        "signed audit checkpoints at the period's start and end, with the consistency proof between them",
    ),
    (
        "summary.html",
        "a summary for people: figures, a chart, the control mapping",
    ),
];

/// A compliance framework pedm maps its evidence to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framework {
    Soc2,
    Hipaa,
    Gdpr,
}

impl Framework {
    pub const ALL: [Framework; 3] = [Framework::Soc2, Framework::Hipaa, Framework::Gdpr];

    pub fn as_str(self) -> &'static str {
        match self {
            Framework::Soc2 => "soc2",
            Framework::Hipaa => "hipaa",
            Framework::Gdpr => "gdpr",
        }
    }

    pub fn parse(s: &str) -> Option<Framework> {
        Self::ALL.into_iter().find(|f| f.as_str() == s)
    }

    /// `(control, title, supporting files)`.
    pub fn controls(self) -> &'static [(&'static str, &'static str, &'static [&'static str])] {
        match self {
            Framework::Soc2 => &[
                (
                    "CC6.1",
                    "Logical access security: access is restricted by policy",
                    &[
                        "policy_versions.json",
                        "access_reviews.csv",
                        "checkpoints.json",
                    ],
                ),
                (
                    "CC6.2",
                    "Access is authorised and approved before it is granted",
                    &["elevations.csv", "break_glass.csv"],
                ),
                (
                    "CC6.3",
                    "Access is reviewed and removed when no longer needed",
                    &["access_reviews.csv", "elevations.csv", "standing.csv"],
                ),
                (
                    "CC7.2",
                    "Anomalies and security events are monitored",
                    &[
                        "sessions.csv",
                        "break_glass.csv",
                        "standing.csv",
                        "checkpoints.json",
                    ],
                ),
            ],
            Framework::Hipaa => &[
                (
                    "164.308(a)(4)",
                    "Information access management: access authorised by policy and reviewed",
                    &[
                        "policy_versions.json",
                        "access_reviews.csv",
                        "elevations.csv",
                    ],
                ),
                (
                    "164.312(a)(1)",
                    "Access control, with an emergency access procedure",
                    &["elevations.csv", "break_glass.csv", "policy_versions.json"],
                ),
                (
                    "164.312(b)",
                    "Audit controls: activity recorded and examined",
                    &["sessions.csv", "checkpoints.json", "elevations.csv"],
                ),
            ],
            Framework::Gdpr => &[
                (
                    "Art. 5(1)(f)",
                    "Integrity and confidentiality of processing",
                    &["checkpoints.json", "sessions.csv", "elevations.csv"],
                ),
                (
                    "Art. 25",
                    "Data protection by design and by default: no standing access",
                    &["policy_versions.json", "elevations.csv", "standing.csv"],
                ),
                (
                    "Art. 32",
                    "Security of processing: access reviewed, emergencies accounted for",
                    &[
                        "access_reviews.csv",
                        "break_glass.csv",
                        "standing.csv",
                        "checkpoints.json",
                    ],
                ),
            ],
        }
    }
}

/// A period as people name it: a quarter (`2026-Q3`), a month (`2026-07`) or a year
/// (`2026`), in UTC: `[start, end)`.
pub fn parse_period(s: &str) -> Result<(Timestamp, Timestamp), String> {
    let bad = || {
        format!("period {s:?}: expected a quarter (2026-Q3), a month (2026-07) or a year (2026)")
    };
    let s = s.trim();
    let year = |y: &str| -> Result<i16, String> {
        y.parse::<i16>()
            .ok()
            .filter(|y| (1970..=9998).contains(y))
            .ok_or_else(bad)
    };
    let (from, to) = if let Some((y, q)) = s.split_once("-Q") {
        let y = year(y)?;
        let q: i8 = q
            .parse()
            .ok()
            .filter(|q| (1..=4).contains(q))
            .ok_or_else(bad)?;
        let start = Date::new(y, (q - 1) * 3 + 1, 1).map_err(|_| bad())?;
        (
            start,
            start
                .checked_add(jiff::Span::new().months(3))
                .map_err(|_| bad())?,
        )
    } else if let Some((y, m)) = s.split_once('-') {
        let y = year(y)?;
        let m: i8 = m
            .parse()
            .ok()
            .filter(|m| (1..=12).contains(m))
            .ok_or_else(bad)?;
        let start = Date::new(y, m, 1).map_err(|_| bad())?;
        (
            start,
            start
                .checked_add(jiff::Span::new().months(1))
                .map_err(|_| bad())?,
        )
    } else {
        let y = year(s)?;
        (
            Date::new(y, 1, 1).map_err(|_| bad())?,
            Date::new(y + 1, 1, 1).map_err(|_| bad())?,
        )
    };
    let at = |d: Date| {
        d.to_zoned(jiff::tz::TimeZone::UTC)
            .map(|z| z.timestamp())
            .map_err(|_| bad())
    };
    Ok((at(from)?, at(to)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn periods() {
        let (a, b) = parse_period("2026-Q3").unwrap();
        assert_eq!(a.to_string(), "2026-07-01T00:00:00Z");
        assert_eq!(b.to_string(), "2026-10-01T00:00:00Z");
        let (a, b) = parse_period("2026-12").unwrap();
        assert_eq!(
            (a.to_string().as_str(), b.to_string().as_str()),
            ("2026-12-01T00:00:00Z", "2027-01-01T00:00:00Z")
        );
        assert_eq!(
            parse_period("2026").unwrap().1.to_string(),
            "2027-01-01T00:00:00Z"
        );
        for bad in ["2026-Q5", "2026-13", "26", "Q3", "2026-Q", ""] {
            assert!(parse_period(bad).is_err(), "{bad}");
        }
        for f in Framework::ALL {
            for (_, _, files) in f.controls() {
                assert!(
                    files.iter().all(|n| FILES.iter().any(|(f, _)| f == n)),
                    "{n:?}",
                    n = files
                );
            }
        }
    }
}
