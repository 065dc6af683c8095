//! The Block Kit message a request is shown as, the modal that asks a denier why, and a
//! checker of the Block Kit rules pedm relies on.

use serde_json::{Value, json};

use super::{APPROVE_ACTION, DENY_ACTION, DENY_VIEW, REASON_INPUT, REQUEST_INPUTS, REQUEST_VIEW};

/// What a request card shows. Built by the server from a request and its approvals.
#[derive(Debug, Clone)]
pub struct RequestCard {
    pub id: String,
    pub requester: String,
    pub target: String,
    pub role: String,
    /// Human duration, e.g. `1h`.
    pub duration: String,
    pub justification: String,
    pub ticket: Option<String>,
    pub policy: Option<String>,
    /// Where it stands, one line per fact: "Approved by bob (leads)", "Waiting for 2 of
    /// security", "Granted until …", "Denied by carol: …".
    pub status: Vec<String>,
    /// Whether Approve/Deny buttons are shown.
    pub pending: bool,
    /// The live grant this request extends (by `duration`), if it is an extension.
    pub extends: Option<String>,
    /// How unusual the request is for its requester: `40: first elevation on db1 in 90 days`.
    pub risk: Option<String>,
}

/// Escapes text for a `mrkdwn` field (Slack: `&`, `<`, `>`), so it cannot mention or link.
pub fn escape_mrkdwn(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// At most `max` characters, with an ellipsis when cut.
pub fn fit(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_string();
    }
    let mut out: String = s.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

fn plain(s: &str, max: usize) -> Value {
    // An empty text object is refused by Slack.
    let s = if s.is_empty() { " " } else { s };
    json!({ "type": "plain_text", "text": fit(s, max), "emoji": false })
}

impl RequestCard {
    /// The fallback text (notifications, screen readers), escaped mrkdwn.
    pub fn text(&self) -> String {
        escape_mrkdwn(&fit(
            &format!(
                "{} asks for {} on {} for {}",
                self.requester, self.role, self.target, self.duration
            ),
            3000,
        ))
    }

    /// The Block Kit blocks.
    pub fn blocks(&self) -> Value {
        let mut fields = vec![];
        for (label, value) in [
            ("Requester", Some(self.requester.as_str())),
            ("Target", Some(self.target.as_str())),
            ("Role", Some(self.role.as_str())),
            ("Duration", Some(self.duration.as_str())),
            ("Ticket", self.ticket.as_deref()),
        ] {
            if let Some(v) = value {
                fields.push(json!({ "type": "mrkdwn", "text": format!("*{label}*") }));
                fields.push(plain(v, 2000));
            }
        }
        let mut blocks = vec![
            json!({ "type": "header",
                    "text": plain(&format!("{}: {} on {}",
                        if self.extends.is_some() { "Extension request" } else { "Access request" },
                        self.role, self.target), 150) }),
            json!({ "type": "section", "fields": fields }),
            json!({ "type": "section",
                    "text": plain(&format!("Justification: {}", self.justification), 3000) }),
        ];
        if let Some(r) = &self.risk {
            blocks.push(json!({ "type": "section",
                                "text": plain(&format!("Risk {r}"), 3000) }));
        }
        if !self.status.is_empty() {
            blocks.push(json!({ "type": "section",
                                "text": plain(&self.status.join("\n"), 3000) }));
        }
        let mut context = vec![plain(&format!("Request {}", self.id), 2000)];
        if let Some(g) = &self.extends {
            context.push(plain(
                &format!("Extends grant {g} by {}", self.duration),
                2000,
            ));
        }
        if let Some(p) = &self.policy {
            context.push(plain(&format!("Policy {p}"), 2000));
        }
        blocks.push(json!({ "type": "context", "elements": context }));
        if self.pending {
            blocks.push(json!({
                "type": "actions",
                "block_id": "pedm_decide",
                "elements": [
                    { "type": "button", "action_id": APPROVE_ACTION, "style": "primary",
                      "text": plain("Approve", 75), "value": self.id },
                    { "type": "button", "action_id": DENY_ACTION, "style": "danger",
                      "text": plain("Deny", 75), "value": self.id },
                ]
            }));
        }
        Value::Array(blocks)
    }

    /// The modal that asks a denier for the reason pedm requires.
    pub fn deny_modal(&self) -> Value {
        json!({
            "type": "modal",
            "callback_id": DENY_VIEW,
            "private_metadata": self.id,
            "title": plain("Deny request", 24),
            "submit": plain("Deny", 24),
            "close": plain("Cancel", 24),
            "blocks": [
                { "type": "section", "text": plain(&self.text_plain(), 3000) },
                { "type": "input", "block_id": REASON_INPUT,
                  "label": plain("Why? (the requester sees this)", 2000),
                  "element": { "type": "plain_text_input", "action_id": REASON_INPUT,
                               "multiline": true, "min_length": 1, "max_length": 1000 } },
            ]
        })
    }

    fn text_plain(&self) -> String {
        format!(
            "{} asks for {} on {} for {}: {}",
            self.requester, self.role, self.target, self.duration, self.justification
        )
    }
}

/// The modal `/pedm request` opens for what the command left out, filled with what it gave
/// (`values` in the order of [`REQUEST_INPUTS`]).
pub fn request_modal(values: [&str; 5]) -> Value {
    let labels = [
        ("Target", false, 200),
        ("Role", false, 200),
        ("Duration (e.g. 30m, 2h)", false, 20),
        ("Justification (approvers see this)", true, 1000),
        ("Ticket (optional)", false, 200),
    ];
    let blocks: Vec<Value> = REQUEST_INPUTS
        .iter()
        .zip(labels)
        .zip(values)
        .map(|((id, (label, multiline, max)), value)| {
            let mut element = json!({ "type": "plain_text_input", "action_id": id,
                                      "multiline": multiline, "max_length": max });
            if !value.is_empty() {
                element["initial_value"] = json!(fit(value, max));
            }
            json!({ "type": "input", "block_id": id, "label": plain(label, 2000),
                    "optional": *id == "ticket", "element": element })
        })
        .collect();
    json!({
        "type": "modal",
        "callback_id": REQUEST_VIEW,
        "title": plain("Request access", 24),
        "submit": plain("Request", 24),
        "close": plain("Cancel", 24),
        "blocks": blocks,
    })
}

/// A modal showing only `text` (what became of a submitted form).
pub fn result_view(title: &str, text: &str) -> Value {
    json!({
        "type": "modal",
        "callback_id": "pedm_result",
        "title": plain(title, 24),
        "close": plain("Close", 24),
        "blocks": [{ "type": "section", "text": plain(text, 3000) }],
    })
}

/// A one-off notice (break-glass, a revocation failing) as blocks: a plain-text section.
pub fn notice_blocks(summary: &str) -> Value {
    json!([{ "type": "section", "text": plain(summary, 3000) }])
}

/// Checks blocks (or a modal view) against the Block Kit rules pedm relies on: known block
/// and element types, text object types and lengths, field and element counts, unique
/// action ids, button values. Returns every problem found (none: valid). Used by the tests'
/// Slack stand-in on everything pedm sends, and available to check a message before sending.
pub fn block_kit_problems(v: &Value) -> Vec<String> {
    let mut p = vec![];
    let blocks = match v {
        Value::Array(b) => b.clone(),
        Value::Object(o) if o.get("type") == Some(&json!("modal")) => {
            text_object(&mut p, "modal.title", o.get("title"), 24, true);
            for k in ["submit", "close"] {
                if o.contains_key(k) {
                    text_object(&mut p, &format!("modal.{k}"), o.get(k), 24, true);
                }
            }
            match o.get("callback_id").and_then(Value::as_str) {
                Some(c) if c.len() <= 255 => {}
                _ => p.push("modal.callback_id missing or longer than 255".into()),
            }
            if o.get("private_metadata")
                .and_then(Value::as_str)
                .is_some_and(|m| m.len() > 3000)
            {
                p.push("modal.private_metadata longer than 3000".into());
            }
            o.get("blocks")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default()
        }
        _ => return vec!["neither a blocks array nor a modal view".into()],
    };
    if blocks.is_empty() || blocks.len() > 50 {
        p.push(format!("{} blocks (1 to 50 allowed)", blocks.len()));
    }
    let mut action_ids = std::collections::BTreeSet::new();
    for (i, b) in blocks.iter().enumerate() {
        let at = format!("blocks[{i}]");
        match b.get("type").and_then(Value::as_str) {
            Some("header") => text_object(&mut p, &at, b.get("text"), 150, true),
            Some("section") => {
                let fields = b.get("fields").and_then(Value::as_array);
                if b.get("text").is_none() && fields.is_none() {
                    p.push(format!("{at}: a section needs text or fields"));
                }
                if b.get("text").is_some() {
                    text_object(&mut p, &at, b.get("text"), 3000, false);
                }
                if let Some(f) = fields {
                    if f.is_empty() || f.len() > 10 {
                        p.push(format!("{at}: {} fields (1 to 10 allowed)", f.len()));
                    }
                    for (j, t) in f.iter().enumerate() {
                        text_object(&mut p, &format!("{at}.fields[{j}]"), Some(t), 2000, false);
                    }
                }
            }
            Some("context") => match b.get("elements").and_then(Value::as_array) {
                Some(e) if !e.is_empty() && e.len() <= 10 => {
                    for (j, t) in e.iter().enumerate() {
                        text_object(&mut p, &format!("{at}.elements[{j}]"), Some(t), 2000, false);
                    }
                }
                _ => p.push(format!("{at}: context needs 1 to 10 elements")),
            },
            Some("actions") => match b.get("elements").and_then(Value::as_array) {
                Some(e) if !e.is_empty() && e.len() <= 25 => {
                    for (j, el) in e.iter().enumerate() {
                        let at = format!("{at}.elements[{j}]");
                        if el.get("type") != Some(&json!("button")) {
                            p.push(format!("{at}: only buttons are used"));
                        }
                        text_object(&mut p, &at, el.get("text"), 75, true);
                        action_id(&mut p, &mut action_ids, &at, el);
                        if el
                            .get("value")
                            .and_then(Value::as_str)
                            .is_some_and(|v| v.len() > 2000)
                        {
                            p.push(format!("{at}: value longer than 2000"));
                        }
                        if let Some(s) = el.get("style").and_then(Value::as_str)
                            && s != "primary"
                            && s != "danger"
                        {
                            p.push(format!("{at}: style {s:?}"));
                        }
                    }
                }
                _ => p.push(format!("{at}: actions needs 1 to 25 elements")),
            },
            Some("input") => {
                text_object(&mut p, &at, b.get("label"), 2000, true);
                match b.get("element") {
                    Some(el) if el.get("type") == Some(&json!("plain_text_input")) => {
                        action_id(&mut p, &mut action_ids, &at, el);
                        let max = el.get("max_length").and_then(Value::as_u64).unwrap_or(3000);
                        if max > 3000 {
                            p.push(format!("{at}: max_length {max} (at most 3000)"));
                        }
                        if let Some(v) = el.get("initial_value")
                            && v.as_str().is_none_or(|v| v.chars().count() as u64 > max)
                        {
                            p.push(format!("{at}: initial_value not a string of at most {max}"));
                        }
                    }
                    _ => p.push(format!("{at}: input element must be plain_text_input")),
                }
            }
            other => p.push(format!("{at}: unknown block type {other:?}")),
        }
        if let Some(id) = b.get("block_id").and_then(Value::as_str)
            && id.len() > 255
        {
            p.push(format!("{at}: block_id longer than 255"));
        }
    }
    p
}

fn action_id(
    p: &mut Vec<String>,
    seen: &mut std::collections::BTreeSet<String>,
    at: &str,
    el: &Value,
) {
    match el.get("action_id").and_then(Value::as_str) {
        Some(a) if !a.is_empty() && a.len() <= 255 => {
            if !seen.insert(a.to_string()) {
                p.push(format!("{at}: action_id {a:?} used twice"));
            }
        }
        _ => p.push(format!("{at}: action_id missing or longer than 255")),
    }
}

fn text_object(p: &mut Vec<String>, at: &str, t: Option<&Value>, max: usize, plain_only: bool) {
    let Some(t) = t else {
        p.push(format!("{at}: text missing"));
        return;
    };
    let kind = t.get("type").and_then(Value::as_str);
    match kind {
        Some("plain_text") => {}
        Some("mrkdwn") if !plain_only => {}
        _ => p.push(format!("{at}: text type {kind:?} not allowed here")),
    }
    match t.get("text").and_then(Value::as_str) {
        Some(s) if !s.is_empty() && s.chars().count() <= max => {}
        Some(s) => p.push(format!(
            "{at}: text of {} characters (1 to {max} allowed)",
            s.chars().count()
        )),
        None => p.push(format!("{at}: text is not a string")),
    }
}
