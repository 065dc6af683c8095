//! The request contexts worth trying when a question is asked of *every* request (policy
//! properties, blast radius): one context per region the policies' own comparisons cut.
//!
//! Every policy is walked as Cedar's JSON form. A context attribute the policies never read
//! cannot change a decision, so it keeps one value. A Boolean that is read gets both values,
//! an optional one also "absent". A number compared with literals gets each literal and its
//! two neighbours (`duration_secs <= 3600` → 3599, 3600, 3601), which puts a value in every
//! interval the comparisons cut; a string compared with literals gets each literal and one
//! other value; `source_ip` gets absent, an address outside every range and the first address
//! of each range written; `@max_duration` cuts durations like a comparison. The time of day and week is varied the same way in every time zone
//! the policies use. The contexts are the product of those values, at most [`MAX_CORNERS`].
//!
//! Exact for conditions built from those comparisons (what pedm's policies are); not for
//! `like` patterns, arithmetic on context values, or IP addresses compared between
//! ranges (they get the values above, no more), and said so in [`Corners::complete`].

use super::Engine;
use crate::query::{Ctx, Device, Ticket};
use jiff::civil::{Date, Weekday};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

/// The most contexts tried per role and person.
pub const MAX_CORNERS: usize = 4096;

/// One context to try.
#[derive(Debug, Clone)]
pub struct Corner {
    pub ctx: Ctx,
    /// `false`: the policies never compare `duration_secs`; the caller picks a duration the
    /// role allows.
    pub duration_given: bool,
    /// `principal.on_call` to assume, when policies read it.
    pub on_call: Option<bool>,
    /// The values that differ from a plain request, for people (`break_glass=true, time=Sat
    /// 2027-01-02 22:00 UTC`); empty for a plain request.
    pub description: String,
}

#[derive(Debug, Clone)]
pub struct Corners {
    pub points: Vec<Corner>,
    /// What was varied and over which values, for people.
    pub varied: Vec<String>,
    /// `false` when the product was cut at [`MAX_CORNERS`] or a condition uses something the
    /// corners cannot cover (`like`, arithmetic on context values): named in `varied`.
    pub complete: bool,
}

#[derive(Default)]
struct Refs {
    /// Context attribute paths read (`time.hour`, `device.trusted`, `ticket`).
    paths: BTreeSet<String>,
    longs: BTreeMap<String, BTreeSet<i64>>,
    strings: BTreeMap<String, BTreeSet<String>>,
    ips: BTreeSet<String>,
    on_call: bool,
    /// Constructs the corners do not cover, for the report.
    uncovered: BTreeSet<&'static str>,
    /// Every string the policies write: entity ids and string literals.
    names: BTreeSet<String>,
}

/// `context.a.b` as `a.b`; `None` for anything else.
fn context_path(v: &Value) -> Option<String> {
    let o = v.as_object()?;
    if o.get("Var").and_then(Value::as_str) == Some("context") {
        return Some(String::new());
    }
    let dot = o.get(".")?;
    let base = context_path(dot.get("left")?)?;
    let attr = dot.get("attr")?.as_str()?;
    Some(if base.is_empty() {
        attr.to_string()
    } else {
        format!("{base}.{attr}")
    })
}

const COMPARISONS: [&str; 6] = ["==", "!=", "<", "<=", ">", ">="];

fn walk(v: &Value, refs: &mut Refs) {
    match v {
        Value::Array(items) => items.iter().for_each(|i| walk(i, refs)),
        Value::Object(o) => {
            for (k, inner) in o {
                match k.as_str() {
                    "." | "has" => {
                        if let (Some(base), Some(attr)) = (
                            inner.get("left").and_then(context_path),
                            inner.get("attr").and_then(Value::as_str),
                        ) {
                            refs.paths.insert(if base.is_empty() {
                                attr.to_string()
                            } else {
                                format!("{base}.{attr}")
                            });
                        }
                        if k == "."
                            && inner.get("attr").and_then(Value::as_str) == Some("on_call")
                            && inner.pointer("/left/Var").and_then(Value::as_str)
                                == Some("principal")
                        {
                            refs.on_call = true;
                        }
                    }
                    "like" if inner.get("left").and_then(context_path).is_some() => {
                        refs.uncovered.insert("`like` on a context value");
                    }
                    "+" | "-" | "*" | "neg" if mentions_context(inner) => {
                        refs.uncovered.insert("arithmetic on a context value");
                    }
                    "ip" => {
                        if let Some(s) = inner.pointer("/0/Value").and_then(Value::as_str) {
                            refs.ips.insert(s.to_string());
                        }
                    }
                    op if COMPARISONS.contains(&op) => {
                        let (l, r) = (inner.get("left"), inner.get("right"));
                        for (side, other) in [(l, r), (r, l)] {
                            let (Some(p), Some(lit)) = (
                                side.and_then(context_path),
                                other.and_then(|o| o.get("Value")),
                            ) else {
                                continue;
                            };
                            if let Some(n) = lit.as_i64() {
                                refs.longs.entry(p).or_default().insert(n);
                            } else if let Some(s) = lit.as_str() {
                                refs.strings.entry(p).or_default().insert(s.to_string());
                            }
                        }
                    }
                    _ => {}
                }
                if k == "id"
                    && o.contains_key("type")
                    && let Some(id) = inner.as_str()
                {
                    refs.names.insert(id.to_string());
                }
                if k == "Value"
                    && let Some(v) = inner.as_str()
                {
                    refs.names.insert(v.to_string());
                }
                walk(inner, refs);
            }
        }
        _ => {}
    }
}

fn mentions_context(v: &Value) -> bool {
    match v {
        Value::Object(o) => {
            o.get("Var").and_then(Value::as_str) == Some("context")
                || o.values().any(mentions_context)
        }
        Value::Array(a) => a.iter().any(mentions_context),
        _ => false,
    }
}

type Setter = Box<dyn Fn(&mut Corner)>;

struct Dim {
    name: &'static str,
    values: Vec<(String, Setter)>,
}

impl Dim {
    fn new(name: &'static str) -> Self {
        Dim {
            name,
            values: vec![],
        }
    }

    fn value(mut self, label: impl Into<String>, set: impl Fn(&mut Corner) + 'static) -> Self {
        self.values.push((label.into(), Box::new(set)));
        self
    }
}

/// Each literal and its neighbours, within `lo..=hi`.
fn around(lits: Option<&BTreeSet<i64>>, lo: i64, hi: i64) -> BTreeSet<i64> {
    lits.into_iter()
        .flatten()
        .flat_map(|&n| [n.saturating_sub(1), n, n.saturating_add(1)])
        .filter(|n| (lo..=hi).contains(n))
        .collect()
}

fn weekday(n: i64) -> Weekday {
    Weekday::from_monday_one_offset(n as i8).unwrap_or(Weekday::Monday)
}

/// The first day from 2027 on with this weekday and day of the month (either may be any).
fn date_with(wd: Option<i64>, dom: Option<i64>) -> Option<Date> {
    let mut d = Date::new(2027, 1, 1).ok()?;
    for _ in 0..(366 * 8) {
        if wd.is_none_or(|w| d.weekday() == weekday(w))
            && dom.is_none_or(|m| i64::from(d.day()) == m)
        {
            return Some(d);
        }
        d = d.tomorrow().ok()?;
    }
    None
}

impl Engine {
    /// Every name the policies write: entity ids (`Pedm::User::"alice"`,
    /// `Pedm::Target::"db1"`) and string literals (`resource.target == "db1"`). Users and
    /// targets not among them are decided by their attributes, groups and labels alone.
    /// `None` when a policy cannot be read back: then no one may be grouped with anyone.
    pub fn written_names(&self) -> Option<BTreeSet<String>> {
        let mut refs = Refs::default();
        for e in &self.policies {
            walk(&e.policy.to_json().ok()?, &mut refs);
        }
        Some(refs.names)
    }

    /// The contexts to try for a question about every request, at `now` for policies that
    /// never read the time.
    pub fn context_corners(&self, now: jiff::Timestamp) -> Corners {
        let mut refs = Refs::default();
        let mut complete = true;
        for e in &self.policies {
            match e.policy.to_json() {
                Ok(json) => walk(&json, &mut refs),
                Err(_) => complete = false,
            }
        }
        let read = |p: &str| refs.paths.contains(p);
        let mut dims = vec![
            Dim::new("break_glass")
                .value("", |c| c.ctx.break_glass = false)
                .value("break_glass=true", |c| c.ctx.break_glass = true),
        ];
        for (name, set) in [
            (
                "via_agent",
                (|c: &mut Corner, v| c.ctx.via_agent = v) as fn(&mut Corner, bool),
            ),
            ("extension", |c, v| c.ctx.extension = v),
        ] {
            if read(name) {
                dims.push(
                    Dim::new(name)
                        .value("", move |c| set(c, false))
                        .value(format!("{name}=true"), move |c| set(c, true)),
                );
            }
        }
        if refs.on_call {
            dims.push(
                Dim::new("principal.on_call")
                    .value("on_call=false", |c| c.on_call = Some(false))
                    .value("on_call=true", |c| c.on_call = Some(true)),
            );
        }
        // `@max_duration` cuts durations as a comparison would.
        let mut lits = refs.longs.get("duration_secs").cloned().unwrap_or_default();
        lits.extend(
            self.policies
                .iter()
                .filter_map(|e| e.terms.max_duration_secs),
        );
        let durations = around(Some(&lits), 1, i64::MAX);
        if !durations.is_empty() {
            let mut d = Dim::new("duration_secs");
            for n in durations {
                d = d.value(format!("duration_secs={n}"), move |c| {
                    c.ctx.duration_secs = n;
                    c.duration_given = true;
                });
            }
            dims.push(d);
        }
        let mut risks = around(refs.longs.get("risk"), 0, 100);
        if !risks.is_empty() {
            risks.insert(0);
            let mut d = Dim::new("risk");
            for n in risks {
                let label = if n == 0 {
                    String::new()
                } else {
                    format!("risk={n}")
                };
                d = d.value(label, move |c| c.ctx.risk = n);
            }
            dims.push(d);
        }
        let mut starts = around(refs.longs.get("starts_in_secs"), 0, i64::MAX);
        if !starts.is_empty() {
            starts.insert(0);
            let mut d = Dim::new("starts_in_secs");
            for n in starts {
                let label = if n == 0 {
                    String::new()
                } else {
                    format!("starts_in_secs={n}")
                };
                d = d.value(label, move |c| c.ctx.starts_in_secs = n);
            }
            dims.push(d);
        }
        if let Some(d) = self.time_dim(&refs) {
            dims.push(d);
        }
        if read("has_ticket") || refs.paths.iter().any(|p| p.starts_with("ticket")) {
            dims.push(ticket_dim(&refs));
        }
        dims.extend(device_dims(&refs));
        if read("source_ip") {
            let mut d = Dim::new("source_ip")
                .value("", |c| c.ctx.source_ip = None)
                .value("source_ip=192.0.2.1", |c| {
                    c.ctx.source_ip = "192.0.2.1".parse().ok()
                });
            for ip in &refs.ips {
                let addr = ip.split('/').next().unwrap_or(ip).to_string();
                if let Ok(a) = addr.parse::<IpAddr>() {
                    d = d.value(format!("source_ip={a}"), move |c| c.ctx.source_ip = Some(a));
                }
            }
            dims.push(d);
        }

        let mut varied: Vec<String> = dims
            .iter()
            .map(|d| {
                let values: Vec<&str> = d
                    .values
                    .iter()
                    .map(|(l, _)| l.rsplit('=').next().unwrap_or(l))
                    .map(|l| if l.is_empty() { "plain" } else { l })
                    .collect();
                format!("{}: {}", d.name, values.join(", "))
            })
            .collect();
        varied.extend(refs.uncovered.iter().map(|u| format!("not covered: {u}")));
        complete &= refs.uncovered.is_empty();

        let total = dims
            .iter()
            .try_fold(1usize, |n, d| n.checked_mul(d.values.len()))
            .unwrap_or(usize::MAX);
        if total > MAX_CORNERS {
            complete = false;
            varied.push(format!(
                "not covered: {total} combinations, only the first {MAX_CORNERS} tried"
            ));
        }
        let mut points = Vec::with_capacity(total.min(MAX_CORNERS));
        let mut at = vec![0usize; dims.len()];
        loop {
            let mut c = Corner {
                ctx: Ctx::at(now),
                duration_given: false,
                on_call: None,
                description: String::new(),
            };
            let mut labels = vec![];
            for (d, &i) in dims.iter().zip(&at) {
                let (label, set) = &d.values[i];
                set(&mut c);
                if !label.is_empty() {
                    labels.push(label.as_str());
                }
            }
            c.description = labels.join(", ");
            points.push(c);
            if points.len() >= MAX_CORNERS {
                break;
            }
            // Next combination, last dimension fastest.
            let mut k = dims.len();
            loop {
                if k == 0 {
                    return Corners {
                        points,
                        varied,
                        complete,
                    };
                }
                k -= 1;
                at[k] += 1;
                if at[k] < dims[k].values.len() {
                    break;
                }
                at[k] = 0;
            }
        }
        Corners {
            points,
            varied,
            complete,
        }
    }

    /// Times of the week around every time literal, in every zone the policies use.
    fn time_dim(&self, refs: &Refs) -> Option<Dim> {
        let lit = |p: &str| refs.longs.get(p);
        let mut minutes: BTreeSet<i64> = around(lit("time.hour"), 0, 23)
            .into_iter()
            .map(|h| h * 60)
            .collect();
        minutes.extend(around(lit("time.minute_of_day"), 0, 1439));
        let weekdays = around(lit("time.weekday"), 1, 7);
        let days = around(lit("time.day_of_month"), 1, 31);
        if minutes.is_empty() && weekdays.is_empty() && days.is_empty() {
            return None;
        }
        if minutes.is_empty() {
            minutes.insert(12 * 60);
        }
        let weekdays: Vec<Option<i64>> = if weekdays.is_empty() {
            vec![None]
        } else {
            weekdays.into_iter().map(Some).collect()
        };
        let days: Vec<Option<i64>> = if days.is_empty() {
            vec![None]
        } else {
            days.into_iter().map(Some).collect()
        };
        let mut d = Dim::new("time");
        for (zone_name, zone) in &self.zones {
            for &wd in &weekdays {
                for &dom in &days {
                    let Some(date) = date_with(wd, dom) else {
                        continue;
                    };
                    for &m in &minutes {
                        let Ok(t) = date
                            .at((m / 60) as i8, (m % 60) as i8, 0, 0)
                            .to_zoned(zone.clone())
                        else {
                            continue;
                        };
                        let at = t.timestamp();
                        let label = format!(
                            "time={} {} {:02}:{:02} {zone_name}",
                            t.strftime("%a"),
                            date,
                            m / 60,
                            m % 60
                        );
                        d = d.value(label, move |c| c.ctx.now = at);
                    }
                }
            }
        }
        Some(d)
    }
}

fn ticket_dim(refs: &Refs) -> Dim {
    let strings = |field: &str, none: &str| -> Vec<String> {
        let mut v: BTreeSet<String> = refs
            .strings
            .get(&format!("ticket.{field}"))
            .cloned()
            .unwrap_or_default();
        v.insert(none.to_string());
        v.into_iter().collect()
    };
    let flags = |field: &str| -> Vec<bool> {
        if refs.paths.contains(&format!("ticket.{field}")) {
            vec![false, true]
        } else {
            vec![true]
        }
    };
    let mut d = Dim::new("ticket")
        .value("", |c| {
            c.ctx.has_ticket = false;
            c.ctx.ticket = None;
        })
        .value("has_ticket=true", |c| c.ctx.has_ticket = true);
    if !refs.paths.iter().any(|p| p.starts_with("ticket")) {
        return d;
    }
    for system in strings("system", "other") {
        for state in strings("state", "other") {
            for priority in strings("priority", "") {
                for assigned in flags("assigned_to_requester") {
                    for in_window in flags("in_window") {
                        let t = Ticket {
                            system: system.clone(),
                            state: state.clone(),
                            priority: priority.clone(),
                            assigned_to_requester: assigned,
                            in_window,
                        };
                        let label = format!(
                            "ticket={{system: {system:?}, state: {state:?}, priority: {priority:?}, \
                             assigned_to_requester: {assigned}, in_window: {in_window}}}"
                        );
                        d = d.value(label, move |c| {
                            c.ctx.has_ticket = true;
                            c.ctx.ticket = Some(t.clone());
                        });
                    }
                }
            }
        }
    }
    d
}

fn device_dims(refs: &Refs) -> Vec<Dim> {
    type Flag = fn(&mut Device) -> &mut Option<bool>;
    type Text = fn(&mut Device) -> &mut Option<String>;
    let flags: [(&'static str, Flag); 5] = [
        ("device.managed", |d| &mut d.managed),
        ("device.compliant", |d| &mut d.compliant),
        ("device.trusted", |d| &mut d.trusted),
        ("device.disk_encrypted", |d| &mut d.disk_encrypted),
        ("device.screen_lock", |d| &mut d.screen_lock),
    ];
    let texts: [(&'static str, Text); 3] = [
        ("device.os", |d| &mut d.os),
        ("device.id", |d| &mut d.id),
        ("device.os_version", |d| &mut d.os_version),
    ];
    let mut dims = vec![];
    for (path, field) in flags {
        if refs.paths.contains(path) {
            dims.push(
                Dim::new(path)
                    .value("", move |c| *field(&mut c.ctx.device) = None)
                    .value(format!("{path}=false"), move |c| {
                        *field(&mut c.ctx.device) = Some(false)
                    })
                    .value(format!("{path}=true"), move |c| {
                        *field(&mut c.ctx.device) = Some(true)
                    }),
            );
        }
    }
    for (path, field) in texts {
        if refs.paths.contains(path) {
            let mut d = Dim::new(path).value("", move |c| *field(&mut c.ctx.device) = None);
            let mut values = refs.strings.get(path).cloned().unwrap_or_default();
            values.insert("other".into());
            for v in values {
                d = d.value(format!("{path}={v:?}"), move |c| {
                    *field(&mut c.ctx.device) = Some(v.clone())
                });
            }
            dims.push(d);
        }
    }
    if refs.paths.contains("device.enrolled_at") {
        let mut d = Dim::new("device.enrolled_at").value("", |c| c.ctx.device.enrolled_at = None);
        for n in around(refs.longs.get("device.enrolled_at"), i64::MIN, i64::MAX) {
            d = d.value(format!("device.enrolled_at={n}"), move |c| {
                c.ctx.device.enrolled_at = Some(n)
            });
        }
        dims.push(d);
    }
    dims
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::EngineOptions;

    fn corners(text: &str) -> Corners {
        let e = Engine::load(&[("p".into(), text.into())], EngineOptions::default()).unwrap();
        e.context_corners(jiff::Timestamp::UNIX_EPOCH)
    }

    #[test]
    fn only_what_policies_read_is_varied() {
        let c = corners(r#"permit (principal, action == Pedm::Action::"request", resource);"#);
        assert_eq!(c.points.len(), 2, "break-glass off and on: {:?}", c.varied);
        assert!(c.complete);
    }

    #[test]
    fn comparisons_cut_regions_and_every_region_gets_a_value() {
        let c = corners(
            r#"permit (principal, action == Pedm::Action::"request", resource)
               when { context.duration_secs <= 3600 && context.time.hour >= 22
                      && context.device has trusted && context.device.trusted };"#,
        );
        let has = |d: &str| c.points.iter().any(|p| p.description.contains(d));
        assert!(has("duration_secs=3601") && has("duration_secs=3599"));
        assert!(has("21:00 UTC") && has("22:00 UTC") && has("23:00 UTC"));
        assert!(has("device.trusted=true") && has("device.trusted=false"));
        // break-glass 2 × durations 3 × hours 3 × trusted 3.
        assert_eq!(c.points.len(), 54);
        let dur = c
            .points
            .iter()
            .find(|p| p.description.contains("duration_secs=3601"))
            .unwrap();
        assert_eq!(dur.ctx.duration_secs, 3601);
        assert!(dur.duration_given);
    }

    #[test]
    fn the_risk_score_is_varied_around_its_thresholds() {
        let c = corners(
            r#"permit (principal, action == Pedm::Action::"request", resource)
               when { context.risk >= 40 };"#,
        );
        let risks: Vec<i64> = c.points.iter().map(|p| p.ctx.risk).collect();
        assert_eq!(risks, [0, 39, 40, 41, 0, 39, 40, 41], "{:?}", c.varied);
    }

    #[test]
    fn written_names_are_found() {
        let e = Engine::load(
            &[(
                "p".into(),
                r#"permit (principal == Pedm::User::"alice", action == Pedm::Action::"request", resource);
                   permit (principal, action == Pedm::Action::"request", resource) when { principal == Pedm::User::"bob" && resource.target == "db1" };"#
                    .into(),
            )],
            EngineOptions::default(),
        )
        .unwrap();
        let names = e.written_names().expect("every policy reads back");
        for n in ["alice", "bob", "db1"] {
            assert!(names.contains(n), "{n}: {names:?}");
        }
        assert!(!names.contains("carol"));
    }
}
