//! Request bodies for each [`Format`].

use serde_json::{Value, json};

use crate::config::Format;
use crate::notification::{Notification, Severity};

/// The body sent to a sink of `format`.
pub fn render(format: Format, n: &Notification) -> Vec<u8> {
    let value = match format {
        Format::Generic => serde_json::to_value(n).expect("a Notification always serializes"),
        Format::Slack => slack(n),
    };
    serde_json::to_vec(&value).expect("a JSON value always serializes")
}

/// Slack limits: header text 150 chars, section text 3000, field text 2000,
/// 10 fields per section.
const HEADER_MAX: usize = 150;
const SECTION_MAX: usize = 3000;
const FIELD_MAX: usize = 2000;
const MAX_FIELDS: usize = 10;

/// A Slack incoming-webhook message: `text` (fallback for notifications) and
/// `blocks` (header, summary, fields, context). High severity is prefixed with
/// `:rotating_light:` and marked `HIGH`. Text from the notification is escaped
/// for mrkdwn, so a justification cannot ping `<!channel>` or forge links.
pub fn slack(n: &Notification) -> Value {
    let high = n.severity == Severity::High;
    let prefix = if high { ":rotating_light: HIGH " } else { "" };
    let text = truncate(&format!("{prefix}{}", escape(&n.summary)), SECTION_MAX);
    let header = truncate(&format!("{prefix}pedm {}", n.kind), HEADER_MAX);

    let mut fields = vec![
        field("Kind", &n.kind),
        field("Severity", if high { "*HIGH*" } else { "info" }),
    ];
    if let Value::Object(map) = &n.data {
        for (k, v) in map {
            if fields.len() >= MAX_FIELDS {
                break;
            }
            let shown = match v {
                Value::String(s) => escape(s),
                Value::Null => continue,
                Value::Bool(_) | Value::Number(_) => v.to_string(),
                other => format!("`{}`", escape(&other.to_string()).replace('`', "'")),
            };
            fields.push(field(&escape(k), &shown));
        }
    }

    json!({
        "text": text,
        "blocks": [
            { "type": "header", "text": { "type": "plain_text", "text": header, "emoji": true } },
            { "type": "section", "text": { "type": "mrkdwn", "text": text } },
            { "type": "section", "fields": fields },
            { "type": "context", "elements": [
                { "type": "mrkdwn", "text": format!("{} · delivery {}", n.at, n.id) }
            ] },
        ],
    })
}

fn field(label: &str, value: &str) -> Value {
    json!({ "type": "mrkdwn", "text": truncate(&format!("*{label}*\n{value}"), FIELD_MAX) })
}

/// Slack's required escaping of `&`, `<`, `>` in mrkdwn text.
fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

fn truncate(s: &str, max_chars: usize) -> String {
    if s.chars().count() <= max_chars {
        return s.to_string();
    }
    let mut out: String = s.chars().take(max_chars - 1).collect();
    out.push('…');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generic_is_the_notification() {
        let n = Notification::new("grant.started", Severity::Info, "x", json!({"a": 1}));
        let back: Notification = serde_json::from_slice(&render(Format::Generic, &n)).unwrap();
        assert_eq!(back, n);
    }

    #[test]
    fn slack_escapes_and_truncates() {
        let n = Notification::new(
            "request.pending",
            Severity::Info,
            "<!channel> & <https://evil|click>",
            json!({"reason": "x".repeat(5000), "n": 3, "none": null, "obj": {"k": "v"}}),
        );
        let v = slack(&n);
        assert_eq!(
            v["text"],
            "&lt;!channel&gt; &amp; &lt;https://evil|click&gt;"
        );
        let fields = v["blocks"][2]["fields"].as_array().unwrap();
        assert!(
            fields
                .iter()
                .all(|f| f["text"].as_str().unwrap().chars().count() <= FIELD_MAX)
        );
        let texts: Vec<&str> = fields.iter().map(|f| f["text"].as_str().unwrap()).collect();
        assert!(texts.contains(&"*n*\n3"));
        assert!(texts.contains(&"*obj*\n`{\"k\":\"v\"}`"));
        assert!(!texts.iter().any(|t| t.starts_with("*none*")));
    }

    #[test]
    fn slack_field_count_is_capped() {
        let data: serde_json::Map<String, Value> =
            (0..30).map(|i| (format!("k{i:02}"), json!(i))).collect();
        let n = Notification::new("k", Severity::High, "s", Value::Object(data));
        assert_eq!(
            slack(&n)["blocks"][2]["fields"].as_array().unwrap().len(),
            MAX_FIELDS
        );
    }
}
