//! How unusual a request is for the person making it: a score from 0 to 100 with its reasons,
//! from their own requests of the last [`RISK_HISTORY_DAYS`] days. Approvers see it with the
//! request; policies read the score as `context.risk` (`@approvals("security:2") permit ...
//! when { context.risk >= 40 }`).
//!
//! Each reason adds its points; the score is their sum, at most 100. A reason that needs a
//! habit to compare with (usual hours, usual duration, usual network) is only given once the
//! person has enough history, so a newcomer is not flagged for everything at once.

use crate::model::{Request, RequestState};
use jiff::Timestamp;
use jiff::tz::TimeZone;
use std::collections::BTreeMap;

pub const RISK_HISTORY_DAYS: i64 = 90;

// The types live with the request they describe (`crate::model`).
pub use crate::model::{Risk, RiskReason};

/// What is being asked, as far as risk goes.
#[derive(Debug, Clone)]
pub struct Asked<'a> {
    pub target: &'a str,
    pub role: &'a str,
    pub duration_secs: i64,
    pub break_glass: bool,
    /// The request came from a device an admin trusts (`pedm device enroll`).
    pub device_trusted: bool,
    pub source_addr: Option<&'a str>,
}

/// The network a source address belongs to, for "new network": /24 for IPv4, /64 for IPv6.
fn network(addr: &str) -> Option<String> {
    match addr.parse::<std::net::IpAddr>().ok()? {
        std::net::IpAddr::V4(a) => {
            let o = a.octets();
            Some(format!("{}.{}.{}.0/24", o[0], o[1], o[2]))
        }
        std::net::IpAddr::V6(a) => {
            let s = a.segments();
            Some(format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3]))
        }
    }
}

/// Scores `asked` against `history`: the same person's earlier requests (any order; the one
/// being scored not among them). Hours are compared in UTC, with an hour's slack either way
/// (a habit does not move with daylight saving time).
pub fn assess(asked: &Asked<'_>, history: &[Request], now: Timestamp) -> Risk {
    let mut reasons = vec![];
    let mut add = |code: &str, points: u32, detail: String| {
        reasons.push(RiskReason {
            code: code.into(),
            points,
            detail,
        })
    };
    let since = now - jiff::SignedDuration::from_hours(24 * RISK_HISTORY_DAYS);
    let recent: Vec<&Request> = history.iter().filter(|r| r.created_at >= since).collect();

    if !recent
        .iter()
        .any(|r| r.target == asked.target && r.grant_id.is_some())
    {
        add(
            "first_on_target",
            25,
            format!(
                "first elevation on {} in {RISK_HISTORY_DAYS} days",
                asked.target
            ),
        );
    }
    if asked.break_glass {
        add("break_glass", 30, "break-glass".into());
    }
    let hour = |t: Timestamp| i32::from(TimeZone::UTC.to_datetime(t).hour());
    if recent.len() >= 5 {
        let h = hour(now);
        let near = |x: i32| {
            let d = (x - h).rem_euclid(24);
            d <= 1 || d >= 23
        };
        if !recent.iter().any(|r| near(hour(r.created_at))) {
            let mut usual: Vec<i32> = recent.iter().map(|r| hour(r.created_at)).collect();
            usual.sort_unstable();
            usual.dedup();
            let usual: Vec<String> = usual.iter().map(|h| format!("{h:02}h")).collect();
            add(
                "unusual_hour",
                15,
                format!(
                    "asked at {h:02}h UTC; their other requests came at {}",
                    usual.join(", ")
                ),
            );
        }
    }
    let mut same: Vec<i64> = recent
        .iter()
        .filter(|r| r.target == asked.target && r.role == asked.role)
        .map(|r| r.duration_secs)
        .collect();
    if same.len() >= 3 {
        same.sort_unstable();
        let median = same[same.len() / 2];
        if asked.duration_secs > 2 * median {
            add(
                "longer_than_usual",
                15,
                format!(
                    "{} asked; they usually ask for {} of this role",
                    crate::duration::format_duration(asked.duration_secs),
                    crate::duration::format_duration(median)
                ),
            );
        }
    }
    if !asked.device_trusted {
        add("untrusted_device", 10, "not from a trusted device".into());
    }
    let known: BTreeMap<String, usize> = recent
        .iter()
        .filter_map(|r| r.context.source_addr.as_deref().and_then(network))
        .fold(BTreeMap::new(), |mut m, n| {
            *m.entry(n).or_default() += 1;
            m
        });
    if known.values().sum::<usize>() >= 3
        && let Some(net) = asked.source_addr.and_then(network)
        && !known.contains_key(&net)
    {
        add(
            "new_network",
            10,
            format!("from {net}, a network they have not asked from"),
        );
    }
    let day_ago = now - jiff::SignedDuration::from_hours(24);
    let denied = recent
        .iter()
        .filter(|r| r.created_at >= day_ago && r.state == RequestState::Denied)
        .count();
    if denied >= 2 {
        add(
            "denied_then_retried",
            15,
            format!("{denied} of their requests were denied in the last 24 hours"),
        );
    }
    let hour_ago = now - jiff::SignedDuration::from_hours(1);
    let burst = recent.iter().filter(|r| r.created_at >= hour_ago).count();
    if burst >= 5 {
        add(
            "burst",
            10,
            format!("{burst} other requests in the last hour"),
        );
    }
    Risk {
        score: reasons.iter().map(|r| r.points).sum::<u32>().min(100),
        reasons,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::RequestContext;

    fn at(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn past(when: &str, target: &str, role: &str, secs: i64, granted: bool) -> Request {
        let mut r: Request = serde_json::from_value(serde_json::json!({
            "id": uuid::Uuid::nil(),
            "requester": "alice",
            "target": target,
            "role": role,
            "duration_secs": secs,
            "justification": "work",
            "state": if granted { "approved" } else { "denied" },
            "created_at": when,
            "pending_until": when,
            "context": {},
            "version": 1,
            "approvals_required": 1,
            "break_glass": false,
        }))
        .expect("a request");
        if granted {
            // Granted: what "first elevation on the target" looks for.
            r.grant_id = Some(uuid::Uuid::nil());
        }
        r.context = RequestContext {
            source_addr: Some("10.1.2.3".into()),
            ..Default::default()
        };
        r
    }

    fn asked(duration_secs: i64) -> Asked<'static> {
        Asked {
            target: "db1",
            role: "admin",
            duration_secs,
            break_glass: false,
            device_trusted: true,
            source_addr: Some("10.1.2.9"),
        }
    }

    fn codes(r: &Risk) -> Vec<&str> {
        r.reasons.iter().map(|r| r.code.as_str()).collect()
    }

    #[test]
    fn a_habit_makes_the_usual_request_score_zero_and_the_odd_one_high() {
        // Ten requests for db1/admin, 30 minutes, weekdays around 10h, from 10.1.2.0/24.
        let history: Vec<Request> = (1..=10)
            .map(|d| {
                past(
                    &format!("2026-11-{:02}T10:15:00Z", d + 10),
                    "db1",
                    "admin",
                    1800,
                    true,
                )
            })
            .collect();
        let usual = assess(&asked(1800), &history, at("2026-12-01T10:30:00Z"));
        assert_eq!(usual, Risk::default(), "{}", usual.summary());

        let mut odd = asked(4 * 3600);
        odd.source_addr = Some("192.0.2.7");
        odd.device_trusted = false;
        odd.break_glass = true;
        let r = assess(&odd, &history, at("2026-12-01T03:00:00Z"));
        assert_eq!(
            codes(&r),
            [
                "break_glass",
                "unusual_hour",
                "longer_than_usual",
                "untrusted_device",
                "new_network"
            ]
        );
        assert_eq!(r.score, 30 + 15 + 15 + 10 + 10);
        assert!(
            r.summary().contains("their other requests came at 10h"),
            "{}",
            r.summary()
        );
        assert!(
            r.summary().contains("they usually ask for 30m"),
            "{}",
            r.summary()
        );
    }

    #[test]
    fn newcomers_are_flagged_only_for_what_needs_no_habit() {
        let r = assess(&asked(8 * 3600), &[], at("2026-12-01T03:00:00Z"));
        assert_eq!(codes(&r), ["first_on_target"]);
        // Requests older than the window do not count as history.
        let old = vec![past("2026-01-01T10:00:00Z", "db1", "admin", 1800, true)];
        let r = assess(&asked(1800), &old, at("2026-12-01T10:00:00Z"));
        assert_eq!(codes(&r), ["first_on_target"]);
    }

    #[test]
    fn denials_then_a_retry_and_bursts_are_flagged() {
        let now = at("2026-12-01T10:30:00Z");
        let mut history = vec![past("2026-11-20T10:00:00Z", "db1", "admin", 1800, true)];
        for m in 0..5 {
            history.push(past(
                &format!("2026-12-01T10:{:02}:00Z", m * 5),
                "db2",
                "x",
                600,
                false,
            ));
        }
        let r = assess(&asked(1800), &history, now);
        assert!(codes(&r).contains(&"denied_then_retried"), "{r:?}");
        assert!(codes(&r).contains(&"burst"), "{r:?}");
        assert!(r.score <= 100);
    }
}
