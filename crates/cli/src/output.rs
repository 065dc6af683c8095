//! What people see: aligned tables, key/value details, RFC 3339 times and `1h30m` durations.
//! With `--json` the API's JSON is printed instead.

use jiff::{Timestamp, Unit};
use pedm_api::{
    Approval, AuditEvent, Grant, GrantState, Group, PolicyVersion, Request, Role, Target,
    TokenInfo, User, format_duration,
};
use serde::Serialize;
use std::io::{self, Write};

/// Columns separated by two spaces, padded to the widest cell; no trailing spaces.
#[derive(Debug, Default)]
pub struct Table {
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(header: &[&str]) -> Self {
        let mut t = Table::default();
        t.row(header.iter().map(|h| h.to_string()).collect());
        t
    }

    /// A table without a header row.
    pub fn plain() -> Self {
        Table::default()
    }

    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells.iter().map(|c| clean(c)).collect());
    }

    pub fn render(&self) -> String {
        let widths = self.widths();
        let mut out = String::new();
        for row in &self.rows {
            let mut line = String::new();
            for (i, cell) in row.iter().enumerate() {
                if i > 0 {
                    line.push_str("  ");
                }
                line.push_str(cell);
                let pad = widths[i] - cell.chars().count();
                line.extend(std::iter::repeat_n(' ', pad));
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }

    fn widths(&self) -> Vec<usize> {
        let cols = self.rows.iter().map(Vec::len).max().unwrap_or(0);
        (0..cols)
            .map(|i| {
                let cells = self.rows.iter().filter_map(|r| r.get(i));
                cells.map(|c| c.chars().count()).max().unwrap_or(0)
            })
            .collect()
    }
}

/// Empty values show as `-`; control characters (newlines, terminal escapes, C1) are escaped
/// so a value someone else wrote cannot break the layout or drive the reader's terminal
/// ([`pedm_core::text::terminal_safe`]).
fn clean(cell: &str) -> String {
    if cell.is_empty() {
        return "-".into();
    }
    pedm_core::text::terminal_safe(cell).into_owned()
}

/// CSV text (header first): every cell through [`pedm_core::text::csv_cell`] (control
/// characters escaped, formulas neutralised). The one CSV writer of the CLI's reports.
pub fn csv_text(
    header: &[&str],
    rows: impl IntoIterator<Item = Vec<String>>,
) -> anyhow::Result<String> {
    let mut w = csv::Writer::from_writer(vec![]);
    w.write_record(header)?;
    for r in rows {
        w.write_record(r.iter().map(|c| pedm_core::text::csv_cell(c).into_owned()))?;
    }
    let bytes = w.into_inner().map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(String::from_utf8(bytes)?)
}

/// RFC 3339 in UTC, to the second.
pub fn time(ts: Timestamp) -> String {
    ts.round(Unit::Second)
        .unwrap_or(ts)
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

pub fn opt_time(ts: Option<Timestamp>) -> String {
    ts.map(time).unwrap_or_default()
}

pub fn opt(s: &Option<String>) -> String {
    s.clone().unwrap_or_default()
}

pub fn yes_no(b: bool) -> String {
    if b { "yes" } else { "no" }.into()
}

/// Time left until `until`, as `1h30m`, or `expired`.
pub fn remaining(until: Timestamp, now: Timestamp) -> String {
    let secs = until.as_second() - now.as_second();
    if secs > 0 {
        format_duration(secs)
    } else {
        "expired".into()
    }
}

/// Something shown one per row in a list.
pub trait Row {
    const HEADER: &'static [&'static str];
    fn cells(&self, now: Timestamp) -> Vec<String>;
}

/// Something shown on its own, one field per line.
pub trait Detail {
    fn fields(&self, now: Timestamp) -> Vec<(&'static str, String)>;
}

pub fn list_table<T: Row>(items: &[T], now: Timestamp) -> Table {
    let mut t = Table::new(T::HEADER);
    for item in items {
        t.row(item.cells(now));
    }
    t
}

pub fn detail_table<T: Detail>(item: &T, now: Timestamp) -> Table {
    let mut t = Table::plain();
    for (k, v) in item.fields(now) {
        t.row(vec![format!("{}:", k.to_lowercase()), v]);
    }
    t
}

/// Writes to stdout; a closed pipe (`pedm audit list | head`) is the reader's choice.
pub fn write_out(text: &str) -> io::Result<()> {
    let mut out = io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(()),
        r => r,
    }
}

pub fn json_text<T: Serialize>(value: &T) -> serde_json::Result<String> {
    serde_json::to_string_pretty(value).map(|s| s + "\n")
}

impl Row for pedm_api::ChannelStatus {
    const HEADER: &'static [&'static str] = &[
        "NAME",
        "KIND",
        "QUEUED",
        "DELIVERED",
        "FAILED",
        "DROPPED",
        "RETRIES",
    ];
    fn cells(&self, _: Timestamp) -> Vec<String> {
        vec![
            self.name.clone(),
            self.kind.clone(),
            self.queued.to_string(),
            self.delivered.to_string(),
            self.failed.to_string(),
            self.dropped.to_string(),
            self.retries.to_string(),
        ]
    }
}

impl Row for User {
    const HEADER: &'static [&'static str] = &[
        "NAME",
        "DISPLAY NAME",
        "EMAIL",
        "ADMIN",
        "DISABLED",
        "CREATED",
    ];
    fn cells(&self, _: Timestamp) -> Vec<String> {
        vec![
            self.name.clone(),
            opt(&self.display_name),
            opt(&self.email),
            yes_no(self.admin),
            yes_no(self.disabled),
            time(self.created_at),
        ]
    }
}

impl Detail for User {
    fn fields(&self, now: Timestamp) -> Vec<(&'static str, String)> {
        zip(Self::HEADER, self.cells(now))
    }
}

impl Row for Group {
    const HEADER: &'static [&'static str] = &["NAME", "DESCRIPTION", "MEMBERS", "CREATED"];
    fn cells(&self, _: Timestamp) -> Vec<String> {
        vec![
            self.name.clone(),
            opt(&self.description),
            self.members.join(","),
            time(self.created_at),
        ]
    }
}

impl Detail for Group {
    fn fields(&self, now: Timestamp) -> Vec<(&'static str, String)> {
        zip(Self::HEADER, self.cells(now))
    }
}

impl Row for TokenInfo {
    const HEADER: &'static [&'static str] = &[
        "ID",
        "USER",
        "KIND",
        "DESCRIPTION",
        "CREATED",
        "EXPIRES",
        "REVOKED",
    ];
    fn cells(&self, _: Timestamp) -> Vec<String> {
        vec![
            self.id.clone(),
            self.user.clone(),
            self.kind.clone(),
            opt(&self.description),
            time(self.created_at),
            opt_time(self.expires_at),
            opt_time(self.revoked_at),
        ]
    }
}

impl Detail for TokenInfo {
    fn fields(&self, now: Timestamp) -> Vec<(&'static str, String)> {
        zip(Self::HEADER, self.cells(now))
    }
}

impl Row for Target {
    const HEADER: &'static [&'static str] = &["NAME", "KIND", "DESCRIPTION", "LABELS", "CREATED"];
    fn cells(&self, _: Timestamp) -> Vec<String> {
        let labels: Vec<String> = self
            .labels
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        vec![
            self.name.clone(),
            self.kind.to_string(),
            opt(&self.description),
            labels.join(","),
            time(self.created_at),
        ]
    }
}

impl Detail for Target {
    fn fields(&self, now: Timestamp) -> Vec<(&'static str, String)> {
        zip(Self::HEADER, self.cells(now))
    }
}

impl Row for Role {
    const HEADER: &'static [&'static str] = &[
        "TARGET",
        "NAME",
        "MAX DURATION",
        "AUTO APPROVE",
        "RUN AS",
        "SESSIONS",
        "DESCRIPTION",
    ];
    fn cells(&self, _: Timestamp) -> Vec<String> {
        let mut sessions = vec![];
        if self.noexec {
            sessions.push("noexec");
        }
        sessions.push(if self.allow_setuid {
            "setuid allowed"
        } else {
            "no_new_privs"
        });
        if self.record_input {
            sessions.push("input recorded");
        }
        if self.intercept {
            sessions.push("intercept");
        }
        let limits = limits_text(&self.limits);
        if !limits.is_empty() {
            sessions.push(&limits);
        }
        let watches = format!("watches {}", self.watch_paths.join(" "));
        if !self.watch_paths.is_empty() {
            sessions.push(&watches);
        }
        vec![
            self.target.clone(),
            self.name.clone(),
            format_duration(self.max_duration_secs),
            yes_no(self.auto_approve),
            opt(&self.run_as),
            sessions.join(", "),
            opt(&self.description),
        ]
    }
}

/// `memory 512M, pids 64, cpu 50%`, or empty.
fn limits_text(l: &pedm_api::SessionLimits) -> String {
    let mut out = vec![];
    if let Some(m) = l.memory_bytes {
        let units = [(40, "T"), (30, "G"), (20, "M"), (10, "K")];
        let (shift, unit) = units
            .into_iter()
            .find(|(s, _)| m % (1u64 << s) == 0)
            .unwrap_or((0, ""));
        out.push(format!("memory {}{unit}", m >> shift));
    }
    if let Some(p) = l.pids {
        out.push(format!("pids {p}"));
    }
    if let Some(c) = l.cpu_percent {
        out.push(format!("cpu {c}%"));
    }
    out.join(", ")
}

impl Detail for Role {
    fn fields(&self, now: Timestamp) -> Vec<(&'static str, String)> {
        let mut f = zip(Self::HEADER, self.cells(now));
        if !self.ssh.is_default() {
            f.push(("SSH", ssh_text(&self.ssh)));
        }
        f
    }
}

/// `force-command "uptime", from the request's address, port-forwarding, no pty`.
fn ssh_text(a: &pedm_api::SshAccess) -> String {
    let mut out = vec![];
    if let Some(c) = &a.force_command {
        out.push(format!("force-command {c:?}"));
    }
    if a.bind_source_address {
        out.push("from the request's address".into());
    }
    for (on, what) in [
        (a.port_forwarding, "port-forwarding"),
        (a.agent_forwarding, "agent-forwarding"),
        (a.x11_forwarding, "x11-forwarding"),
        (a.no_pty, "no pty"),
    ] {
        if on {
            out.push(what.into());
        }
    }
    out.join(", ")
}

impl Row for Request {
    const HEADER: &'static [&'static str] = &[
        "ID",
        "STATE",
        "REQUESTER",
        "TARGET",
        "ROLE",
        "DURATION",
        "CREATED",
        "JUSTIFICATION",
    ];
    fn cells(&self, _: Timestamp) -> Vec<String> {
        vec![
            self.id.to_string(),
            self.state.to_string(),
            self.requester.clone(),
            self.target.clone(),
            self.role.clone(),
            format_duration(self.duration_secs),
            time(self.created_at),
            self.justification.clone(),
        ]
    }
}

impl Detail for Request {
    fn fields(&self, now: Timestamp) -> Vec<(&'static str, String)> {
        let mut f = zip(Self::HEADER, self.cells(now));
        f.extend([
            ("TASK", opt(&self.task)),
            ("TICKET", opt(&self.ticket)),
            ("SOURCE", opt(&self.context.source_addr)),
            ("APPROVALS REQUIRED", self.approvals_required.to_string()),
            (
                "APPROVAL STEPS",
                self.approval_tiers
                    .iter()
                    .map(|t| format!("{}:{}", t.group.as_deref().unwrap_or("any"), t.required))
                    .collect::<Vec<_>>()
                    .join(", "),
            ),
            ("POLICY", opt(&self.policy)),
            (
                "RISK",
                self.context
                    .risk
                    .as_ref()
                    .map(|r| r.summary())
                    .unwrap_or_default(),
            ),
            ("BREAK GLASS", yes_no(self.break_glass)),
            (
                "REVIEW",
                self.review
                    .as_ref()
                    .map(|r| match (&r.reviewed_by, &r.comment) {
                        (Some(by), Some(c)) => format!("{} by {by}: {c}", r.state),
                        _ => r.state.to_string(),
                    })
                    .unwrap_or_default(),
            ),
            ("PENDING UNTIL", time(self.pending_until)),
        ]);
        if let Some(step) = self.context.step_up.as_ref().map(|s| &s.exec) {
            // Each argument quoted, so where one ends is visible.
            let argv: Vec<String> = step.argv.iter().map(|a| format!("{a:?}")).collect();
            f.extend([
                ("STEP-UP COMMAND", argv.join(" ")),
                ("STEP-UP PROGRAM", step.path.clone()),
                ("STEP-UP CWD", step.cwd.clone()),
                ("STEP-UP SESSION", step.session.to_string()),
                ("STEP-UP GRANT", step.grant.to_string()),
            ]);
        }
        f.extend([
            ("DECIDED AT", opt_time(self.decided_at)),
            ("DECIDED BY", opt(&self.decided_by)),
            ("DECISION REASON", opt(&self.decision_reason)),
            (
                "GRANT",
                self.grant_id.map(|g| g.to_string()).unwrap_or_default(),
            ),
        ]);
        f
    }
}

impl Row for Grant {
    const HEADER: &'static [&'static str] = &[
        "ID",
        "STATE",
        "USER",
        "TARGET",
        "ROLE",
        "STARTS",
        "EXPIRES",
        "REMAINING",
        "PROVISION",
    ];
    fn cells(&self, now: Timestamp) -> Vec<String> {
        let left = match self.state {
            GrantState::Active => remaining(self.expires_at, now),
            GrantState::Scheduled if self.starts_at > now => {
                format!("starts in {}", remaining(self.starts_at, now))
            }
            _ => String::new(),
        };
        vec![
            self.id.to_string(),
            self.state.to_string(),
            self.user.clone(),
            self.target.clone(),
            self.role.clone(),
            time(self.starts_at),
            time(self.expires_at),
            left,
            self.provision_state.to_string(),
        ]
    }
}

impl Detail for Grant {
    fn fields(&self, now: Timestamp) -> Vec<(&'static str, String)> {
        let mut f = zip(Self::HEADER, self.cells(now));
        f.extend([
            ("REQUEST", self.request_id.to_string()),
            ("ENDED AT", opt_time(self.ended_at)),
            ("ENDED BY", opt(&self.ended_by)),
            ("END REASON", opt(&self.end_reason)),
            ("PROVISION DETAIL", opt(&self.provision_detail)),
        ]);
        f
    }
}

impl Row for Approval {
    const HEADER: &'static [&'static str] = &["APPROVER", "DECISION", "AT", "COMMENT"];
    fn cells(&self, _: Timestamp) -> Vec<String> {
        vec![
            self.approver.clone(),
            self.decision.to_string(),
            time(self.at),
            opt(&self.comment),
        ]
    }
}

impl Row for AuditEvent {
    const HEADER: &'static [&'static str] = &["SEQ", "AT", "ACTOR", "ACTION", "OUTCOME", "SUBJECT"];
    fn cells(&self, _: Timestamp) -> Vec<String> {
        vec![
            self.seq.to_string(),
            time(self.at),
            self.actor.clone(),
            self.action.clone(),
            self.outcome.as_str().into(),
            opt(&self.subject),
        ]
    }
}

/// Detail fields from a row's header and cells.
fn zip(header: &'static [&'static str], cells: Vec<String>) -> Vec<(&'static str, String)> {
    header.iter().copied().zip(cells).collect()
}

impl Row for PolicyVersion {
    const HEADER: &'static [&'static str] =
        &["VERSION", "APPLIED", "BY", "FILES", "DIGEST", "COMMENT"];
    fn cells(&self, _: Timestamp) -> Vec<String> {
        vec![
            self.version.to_string(),
            time(self.created_at),
            self.created_by.clone(),
            self.sources
                .iter()
                .map(|s| s.name.as_str())
                .collect::<Vec<_>>()
                .join(","),
            self.digest.chars().take(12).collect(),
            opt(&self.comment),
        ]
    }
}

impl Detail for PolicyVersion {
    fn fields(&self, now: Timestamp) -> Vec<(&'static str, String)> {
        zip(Self::HEADER, self.cells(now))
    }
}

impl Row for pedm_api::StandingPrivilege {
    const HEADER: &'static [&'static str] = &["ACCOUNT", "PRIVILEGE", "SOURCE"];
    fn cells(&self, _: Timestamp) -> Vec<String> {
        vec![
            self.account.clone(),
            self.privilege.clone(),
            self.source.clone(),
        ]
    }
}

/// Where a host's agent stands: revoked, enrolled (certificate until), waiting to enroll,
/// or on a host token (plain HTTP).
fn host_state(h: &pedm_api::agent::HostView) -> String {
    match (h.revoked_at, h.enrolled_at, h.enroll_expires_at) {
        (Some(at), _, _) => format!("revoked {}", time(at)),
        (None, Some(_), _) => format!("certificate until {}", opt_time(h.cert_not_after)),
        (None, None, Some(until)) => format!("to enroll before {}", time(until)),
        (None, None, None) => "host token".into(),
    }
}

impl Row for pedm_api::agent::HostView {
    const HEADER: &'static [&'static str] = &[
        "HOST",
        "TOKEN",
        "REGISTERED",
        "BY",
        "LAST SEEN",
        "CREDENTIAL",
    ];
    fn cells(&self, _now: Timestamp) -> Vec<String> {
        vec![
            self.name.clone(),
            self.token_id.clone(),
            time(self.registered_at),
            self.registered_by.clone(),
            opt_time(self.last_seen_at),
            host_state(self),
        ]
    }
}

impl Detail for pedm_api::agent::HostView {
    fn fields(&self, _now: Timestamp) -> Vec<(&'static str, String)> {
        vec![
            ("host", self.name.clone()),
            ("registered", time(self.registered_at)),
            ("by", self.registered_by.clone()),
            ("last seen", opt_time(self.last_seen_at)),
            ("credential", host_state(self)),
        ]
    }
}

fn session_status(s: &pedm_api::Session) -> String {
    let status = match (s.exit_code, s.signal) {
        (Some(c), _) => format!("exit {c}"),
        (None, Some(sig)) => format!("signal {sig}"),
        _ => "?".into(),
    };
    match &s.ended_by {
        Some(by) => format!("{status} ({by})"),
        None => status,
    }
}

impl Row for pedm_api::Session {
    const HEADER: &'static [&'static str] = &[
        "ID", "USER", "HOST", "RUN AS", "COMMAND", "STARTED", "DURATION", "STATUS",
    ];
    fn cells(&self, _now: Timestamp) -> Vec<String> {
        let command = if let Some(t) = &self.task {
            format!("task {t}")
        } else if self.shell {
            "(shell)".to_string()
        } else {
            self.argv.join(" ")
        };
        vec![
            self.id.to_string(),
            self.user.clone(),
            self.host.clone(),
            self.run_as.clone(),
            command.chars().take(60).collect(),
            time(self.started_at),
            format_duration((self.ended_at.as_second() - self.started_at.as_second()).max(0)),
            session_status(self),
        ]
    }
}

impl Detail for pedm_api::Session {
    fn fields(&self, _now: Timestamp) -> Vec<(&'static str, String)> {
        vec![
            ("id", self.id.to_string()),
            (
                "under",
                match (&self.grant_id, &self.delegation_id, &self.task, self.via) {
                    (Some(g), _, _, Some(pedm_api::SessionVia::SudoLog)) => {
                        format!("grant {g} (sudo decided; its log server is pedmd)")
                    }
                    (Some(g), _, _, None) => format!("grant {g}"),
                    (None, Some(d), Some(t), _) => format!("task {t}, delegation {d}"),
                    (None, _, _, Some(pedm_api::SessionVia::SudoLog)) => {
                        "no grant: sudo decided alone (standing sudo rights)".to_string()
                    }
                    _ => String::new(),
                },
            ),
            (
                "params",
                self.params
                    .as_ref()
                    .map(|p| {
                        p.iter()
                            .map(|(k, v)| format!("{k}={v}"))
                            .collect::<Vec<_>>()
                            .join(" ")
                    })
                    .unwrap_or_default(),
            ),
            ("user", self.user.clone()),
            ("host", self.host.clone()),
            ("run as", self.run_as.clone()),
            (
                "command",
                if self.shell {
                    "(shell)".into()
                } else {
                    self.argv.join(" ")
                },
            ),
            ("binary sha256", opt(&self.binary_sha256)),
            ("started", time(self.started_at)),
            ("ended", time(self.ended_at)),
            ("status", session_status(self)),
            (
                "recording",
                format!(
                    "{} bytes, sha256 {}",
                    self.recording_bytes, self.recording_sha256
                ),
            ),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn table_aligns_columns() {
        let mut t = Table::new(&["NAME", "KIND", "NOTE"]);
        t.row(vec!["db-primary".into(), "postgres".into(), "main".into()]);
        t.row(vec!["h1".into(), "host".into(), String::new()]);
        assert_eq!(
            t.render(),
            "NAME        KIND      NOTE\n\
             db-primary  postgres  main\n\
             h1          host      -\n"
        );
    }

    #[test]
    fn table_has_no_trailing_spaces_and_handles_short_rows() {
        let mut t = Table::new(&["A", "B"]);
        t.row(vec!["long value".into(), String::new()]);
        t.row(vec!["x".into()]);
        let out = t.render();
        assert!(out.lines().all(|l| !l.ends_with(' ')), "{out:?}");
        assert_eq!(out, "A           B\nlong value  -\nx\n");
    }

    #[test]
    fn table_escapes_control_characters() {
        let mut t = Table::plain();
        t.row(vec!["a\nb\u{1b}[31m".into(), "é".into()]);
        assert_eq!(t.render(), "a\\nb\\u{1b}[31m  é\n");
    }

    #[test]
    fn times_are_rfc3339_utc_seconds() {
        assert_eq!(time(ts("2024-05-01T12:30:45.678Z")), "2024-05-01T12:30:46Z");
        assert_eq!(
            time(ts("2024-05-01T14:00:00+02:00")),
            "2024-05-01T12:00:00Z"
        );
        assert_eq!(opt_time(None), "");
    }

    #[test]
    fn remaining_time() {
        let now = ts("2024-05-01T12:00:00Z");
        assert_eq!(remaining(ts("2024-05-01T13:30:00Z"), now), "1h30m");
        assert_eq!(remaining(ts("2024-05-01T11:00:00Z"), now), "expired");
    }

    #[test]
    fn detail_table_lines_up_values() {
        let user = User {
            name: "alice".into(),
            display_name: None,
            email: None,
            admin: true,
            disabled: false,
            created_at: ts("2024-05-01T00:00:00Z"),
        };
        let out = detail_table(&user, Timestamp::UNIX_EPOCH).render();
        assert!(out.starts_with("name:          alice\n"), "{out}");
        assert!(out.contains("display name:  -\n"), "{out}");
        assert!(out.contains("admin:         yes\n"), "{out}");
    }
}
