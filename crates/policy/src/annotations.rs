//! The pedm annotations on Cedar policies.

use crate::query::ApprovalTier;

pub(crate) const ID: &str = "id";
pub(crate) const TIMEZONE: &str = "timezone";
pub(crate) const AUTO_APPROVE: &str = "auto_approve";
pub(crate) const MAX_DURATION: &str = "max_duration";
pub(crate) const APPROVALS: &str = "approvals";
pub(crate) const BREAK_GLASS: &str = "break_glass";
pub(crate) const ALLOW_PARALLEL: &str = "allow_parallel";
/// On an `exec` permit: what it allows is held at its `execve` until approved (step-up).
pub(crate) const STEP_UP: &str = "step_up";
pub(crate) const REMIND_AFTER: &str = "remind_after";
pub(crate) const ESCALATE_AFTER: &str = "escalate_after";
pub(crate) const ESCALATE_TO: &str = "escalate_to";
/// On a request permit: the grant lasts only while its holder is on call.
pub(crate) const WHILE_ON_CALL: &str = "while_on_call";
/// Who answers for the policy (a user or a group), and when they review it next.
pub(crate) const OWNER: &str = "owner";
pub(crate) const REVIEW_BY: &str = "review_by";

const KNOWN: [&str; 14] = [
    OWNER,
    REVIEW_BY,
    WHILE_ON_CALL,
    REMIND_AFTER,
    ESCALATE_AFTER,
    ESCALATE_TO,
    ID,
    TIMEZONE,
    AUTO_APPROVE,
    MAX_DURATION,
    APPROVALS,
    BREAK_GLASS,
    ALLOW_PARALLEL,
    STEP_UP,
];
/// Keys that are certainly a mistake for a known one.
const ALIASES: [(&str, &str); 7] = [
    ("stepup", STEP_UP),
    ("tz", TIMEZONE),
    ("zone", TIMEZONE),
    ("autoapprove", AUTO_APPROVE),
    ("approvers", APPROVALS),
    ("maxduration", MAX_DURATION),
    ("breakglass", BREAK_GLASS),
];

/// The request-related meaning of a policy's annotations.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct RequestTerms {
    pub auto_approve: bool,
    pub max_duration_secs: Option<i64>,
    /// `None`: unannotated (one approval from anyone `approve` permits).
    pub tiers: Option<Vec<ApprovalTier>>,
    pub break_glass: bool,
    pub allow_parallel: bool,
    /// `@step_up`: the approvals an exec this permit allows needs first.
    pub step_up: Option<Vec<ApprovalTier>>,
    /// `@remind_after`, `@escalate_after`, `@escalate_to`.
    pub follow_up: Option<pedm_core::model::FollowUp>,
    /// `@while_on_call("true")`.
    pub while_on_call: bool,
}

impl RequestTerms {
    pub(crate) fn effective_tiers(&self) -> Vec<ApprovalTier> {
        if self.auto_approve || self.break_glass {
            return Vec::new();
        }
        match &self.tiers {
            Some(t) => t.clone(),
            None => vec![ApprovalTier {
                group: None,
                required: 1,
            }],
        }
    }
    pub(crate) fn total_approvals(&self) -> u32 {
        self.effective_tiers().iter().map(|t| t.required).sum()
    }
}

fn normalise(k: &str) -> String {
    k.chars()
        .filter(|c| *c != '_' && *c != '-')
        .flat_map(|c| c.to_lowercase())
        .collect()
}

fn levenshtein(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != *cb);
            cur.push(sub.min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

/// A known key this unknown key was probably meant to be.
pub(crate) fn likely_typo(key: &str) -> Option<&'static str> {
    if KNOWN.contains(&key) {
        return None;
    }
    let n = normalise(key);
    for (alias, known) in ALIASES {
        if n == alias {
            return Some(known);
        }
    }
    KNOWN
        .iter()
        .filter(|k| k.len() > 2)
        .find(|k| {
            let nk = normalise(k);
            n == nk || levenshtein(&n, &nk) <= 2
        })
        .copied()
}

fn parse_bool(key: &str, v: &str) -> Result<bool, String> {
    match v.trim() {
        "true" | "" => Ok(true),
        "false" => Ok(false),
        other => Err(format!("@{key}({other:?}): expected \"true\" or \"false\"")),
    }
}

/// `@review_by("YYYY-MM-DD")`: the date a policy's owner reviews it next.
pub fn review_date(v: &str) -> Result<jiff::civil::Date, String> {
    v.trim()
        .parse::<jiff::civil::Date>()
        .map_err(|e| format!("@review_by({v:?}): expected a date such as 2027-03-31 ({e})"))
}

fn valid_group(g: &str) -> bool {
    !g.is_empty()
        && g.chars()
            .all(|c| c.is_alphanumeric() || matches!(c, '-' | '_' | '.' | '@'))
}

/// Parse `@approvals`: comma-separated ordered tiers, each `GROUP:N` or a bare `N`
/// (N approvals from anyone the `approve` action permits).
pub fn parse_approvals(v: &str) -> Result<Vec<ApprovalTier>, String> {
    let mut tiers = Vec::new();
    if v.trim().is_empty() {
        return Err("@approvals is empty".into());
    }
    for part in v.split(',') {
        let part = part.trim();
        let (group, n) = match part.rsplit_once(':') {
            Some((g, n)) => (Some(g.trim()), n.trim()),
            None => (None, part),
        };
        if let Some(g) = group
            && !valid_group(g)
        {
            return Err(format!(
                "@approvals tier {part:?}: group name {g:?} is empty or has characters other than letters, digits, '-', '_', '.', '@'"
            ));
        }
        let required: u32 = n.parse().map_err(|_| {
            format!("@approvals tier {part:?}: expected GROUP:N or N with N a positive integer")
        })?;
        if required == 0 {
            return Err(format!(
                "@approvals tier {part:?}: a tier needs at least one approval (use @auto_approve(\"true\") for none)"
            ));
        }
        tiers.push(ApprovalTier {
            group: group.map(str::to_string),
            required,
        });
    }
    Ok(tiers)
}

/// Check the annotations of one policy and derive its request terms.
/// `is_request_permit`: a permit whose action scope is exactly `request`.
pub(crate) fn check(
    annotations: &[(String, String)],
    is_permit: bool,
    is_request_permit: bool,
    is_exec_permit: bool,
) -> Result<RequestTerms, String> {
    let mut terms = RequestTerms::default();
    let mut has_auto = false;
    for (k, v) in annotations {
        if let Some(known) = likely_typo(k) {
            return Err(format!("unknown annotation @{k}: did you mean @{known}?"));
        }
        let request_only = matches!(
            k.as_str(),
            AUTO_APPROVE
                | MAX_DURATION
                | APPROVALS
                | BREAK_GLASS
                | ALLOW_PARALLEL
                | WHILE_ON_CALL
                | REMIND_AFTER
                | ESCALATE_AFTER
                | ESCALATE_TO
        );
        if request_only && !is_request_permit {
            let what = if is_permit {
                "a permit whose action scope is not exactly `action == Pedm::Action::\"request\"`"
            } else {
                "a forbid policy"
            };
            return Err(format!(
                "@{k} is only meaningful on permit policies of action request, not on {what}"
            ));
        }
        match k.as_str() {
            AUTO_APPROVE => {
                has_auto = true;
                terms.auto_approve = parse_bool(k, v)?;
            }
            BREAK_GLASS => terms.break_glass = parse_bool(k, v)?,
            ALLOW_PARALLEL => terms.allow_parallel = parse_bool(k, v)?,
            WHILE_ON_CALL => terms.while_on_call = parse_bool(k, v)?,
            MAX_DURATION => {
                let secs = pedm_core::duration::parse_duration(v)
                    .map_err(|e| format!("@max_duration({v:?}): {e}"))?;
                terms.max_duration_secs = Some(secs);
            }
            APPROVALS => terms.tiers = Some(parse_approvals(v)?),
            REMIND_AFTER | ESCALATE_AFTER => {
                let secs = pedm_core::duration::parse_duration(v)
                    .map_err(|e| format!("@{k}({v:?}): {e}"))?;
                let f = terms.follow_up.get_or_insert_with(Default::default);
                if k == REMIND_AFTER {
                    f.remind_after_secs = Some(secs);
                } else {
                    f.escalate_after_secs = Some(secs);
                }
            }
            ESCALATE_TO => {
                let g = v.trim();
                if !valid_group(g) {
                    return Err(format!(
                        "@escalate_to({v:?}): expected a group name (letters, digits, '-', '_', '.', '@')"
                    ));
                }
                terms
                    .follow_up
                    .get_or_insert_with(Default::default)
                    .escalate_to = Some(g.to_string());
            }
            OWNER if !valid_group(v.trim()) => {
                return Err(format!(
                    "@owner({v:?}): expected a user or group name (letters, digits, '-', '_', '.', '@')"
                ));
            }
            REVIEW_BY => {
                review_date(v)?;
            }
            STEP_UP if !is_exec_permit => {
                return Err(format!(
                    "@{k} is only meaningful on permit policies of action exec (exactly `action == Pedm::Action::\"exec\"`)"
                ));
            }
            // Empty: one approval from anyone policy lets approve the grant's role.
            STEP_UP if v.trim().is_empty() => {
                terms.step_up = Some(vec![ApprovalTier {
                    group: None,
                    required: 1,
                }])
            }
            STEP_UP => {
                terms.step_up =
                    Some(parse_approvals(v).map_err(|e| e.replacen("@approvals", "@step_up", 1))?)
            }
            _ => {}
        }
    }
    if terms.auto_approve && terms.tiers.is_some() {
        return Err(
            "@auto_approve(\"true\") contradicts @approvals: a request cannot both need no approver and need approvers"
                .into(),
        );
    }
    if terms.break_glass && terms.tiers.is_some() {
        return Err(
            "@break_glass(\"true\") contradicts @approvals: break-glass grants are immediate and reviewed afterwards"
                .into(),
        );
    }
    if let Some(f) = &terms.follow_up {
        if terms.auto_approve || terms.break_glass {
            return Err(
                "@remind_after/@escalate_after/@escalate_to need a permit that waits for approvers, not an auto-approved or break-glass one"
                    .into(),
            );
        }
        if f.escalate_after_secs.is_some() != f.escalate_to.is_some() {
            return Err(
                "@escalate_after and @escalate_to go together: after how long, and to which group"
                    .into(),
            );
        }
        if let (Some(r), Some(e)) = (f.remind_after_secs, f.escalate_after_secs)
            && r >= e
        {
            return Err(format!(
                "@remind_after ({r}s) must come before @escalate_after ({e}s)"
            ));
        }
    }
    if has_auto && !terms.auto_approve && terms.break_glass {
        return Err(
            "@auto_approve(\"false\") contradicts @break_glass(\"true\"): break-glass grants are immediate"
                .into(),
        );
    }
    Ok(terms)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tiers() {
        let t = parse_approvals("team-leads:1, security:2").unwrap();
        assert_eq!(t.len(), 2);
        assert_eq!(t[0].group.as_deref(), Some("team-leads"));
        assert_eq!(t[1].required, 2);
        let t = parse_approvals("2").unwrap();
        assert_eq!(
            t,
            vec![ApprovalTier {
                group: None,
                required: 2
            }]
        );
        assert!(parse_approvals("a:0").is_err());
        assert!(parse_approvals("a:").is_err());
        assert!(parse_approvals(":1").is_err());
        assert!(parse_approvals("a:1,,b:2").is_err());
        assert!(parse_approvals("a:-1").is_err());
        assert!(parse_approvals("").is_err());
    }

    #[test]
    fn typos() {
        assert_eq!(likely_typo("approval"), Some(APPROVALS));
        assert_eq!(likely_typo("auto-approve"), Some(AUTO_APPROVE));
        assert_eq!(likely_typo("time_zone"), Some(TIMEZONE));
        assert_eq!(likely_typo("maxDuration"), Some(MAX_DURATION));
        assert_eq!(likely_typo("tz"), Some(TIMEZONE));
        assert_eq!(likely_typo("description"), None);
        assert_eq!(likely_typo("owner"), None);
        assert_eq!(likely_typo("approvals"), None);
    }

    #[test]
    fn follow_ups() {
        let a = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        let t = check(
            &a(&[
                ("approvals", "security:1"),
                ("remind_after", "30m"),
                ("escalate_after", "2h"),
                ("escalate_to", "leads"),
            ]),
            true,
            true,
            false,
        )
        .unwrap();
        let f = t.follow_up.unwrap();
        assert_eq!(
            (
                f.remind_after_secs,
                f.escalate_after_secs,
                f.escalate_to.as_deref()
            ),
            (Some(1800), Some(7200), Some("leads"))
        );
        for (bad, says) in [
            (vec![("escalate_after", "2h")], "go together"),
            (vec![("escalate_to", "leads")], "go together"),
            (
                vec![
                    ("remind_after", "2h"),
                    ("escalate_after", "1h"),
                    ("escalate_to", "x"),
                ],
                "before",
            ),
            (
                vec![("auto_approve", "true"), ("remind_after", "1h")],
                "waits for approvers",
            ),
            (vec![("remind_after", "soon")], "@remind_after"),
            (
                vec![("escalate_after", "1h"), ("escalate_to", "no way")],
                "group name",
            ),
        ] {
            let e = check(&a(&bad), true, true, false).unwrap_err();
            assert!(e.contains(says), "{bad:?}: {e}");
        }
        let e = check(&a(&[("remind_after", "1h")]), true, false, false).unwrap_err();
        assert!(e.contains("only meaningful"), "{e}");
        assert_eq!(likely_typo("remind-after"), Some(REMIND_AFTER));
    }
}
