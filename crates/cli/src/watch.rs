//! `pedm session watch`: a live session's terminal, as it happens.
//!
//! Output goes to stdout through the same [`Sanitizer`] as `session play` (unless `--raw`);
//! what pedm itself says (who and what is being watched, markers, missed events, exec events
//! with `--execs`, the end) goes to stderr with every value made terminal-safe.

use crate::escapes::Sanitizer;
use crate::output::{Row, time};
use jiff::Timestamp;
use pedm_api::format_duration;
use pedm_api::live::LiveSession;
use pedm_core::text::terminal_safe;
use std::io::Write;

impl Row for LiveSession {
    const HEADER: &'static [&'static str] = &[
        "ID", "USER", "HOST", "RUN AS", "COMMAND", "STARTED", "RUNNING", "WATCHERS",
    ];
    fn cells(&self, now: Timestamp) -> Vec<String> {
        vec![
            self.id.to_string(),
            self.user.clone(),
            self.host.clone(),
            self.run_as.clone(),
            self.argv.join(" ").chars().take(60).collect(),
            time(self.started_at),
            format_duration((now.as_second() - self.started_at.as_second()).max(0)),
            self.watchers.to_string(),
        ]
    }
}

/// How to show a live session.
#[derive(Debug, Clone, Copy, Default)]
pub struct WatchOptions {
    /// Pass every control sequence through.
    pub raw: bool,
    /// Show each command an intercepting session runs, and each watched file it writes.
    pub execs: bool,
}

/// Shows one server-sent event; returns whether the stream goes on.
pub struct Watch<O: Write, E: Write> {
    pub out: O,
    pub err: E,
    pub opts: WatchOptions,
    sanitizer: Sanitizer,
    /// Why the stream ended, once it has.
    pub ended: Option<String>,
}

impl<O: Write, E: Write> Watch<O, E> {
    pub fn new(out: O, err: E, opts: WatchOptions) -> Self {
        Watch {
            out,
            err,
            opts,
            sanitizer: Sanitizer::default(),
            ended: None,
        }
    }

    pub fn event(&mut self, name: &str, data: &str) -> std::io::Result<bool> {
        match name {
            "header" => {
                if let Ok(s) = serde_json::from_str::<LiveSession>(data) {
                    writeln!(
                        self.err,
                        "pedm: watching session {} of {} as {} on {}: {} (since {}; Ctrl-C stops \
                         watching, not the session)",
                        s.id,
                        terminal_safe(&s.user),
                        terminal_safe(&s.run_as),
                        terminal_safe(&s.host),
                        terminal_safe(&s.argv.join(" ")),
                        s.started_at,
                    )?;
                }
            }
            "event" => self.asciicast(data)?,
            "gap" => {
                let missed = serde_json::from_str::<serde_json::Value>(data)
                    .ok()
                    .and_then(|v| v["missed"].as_u64())
                    .unwrap_or(0);
                writeln!(
                    self.err,
                    "\r\npedm: {missed} event(s) missed here (the recording has them)"
                )?;
            }
            "end" => {
                let reason = serde_json::from_str::<serde_json::Value>(data)
                    .ok()
                    .and_then(|v| v["reason"].as_str().map(str::to_string))
                    .unwrap_or_else(|| "the stream ended".into());
                writeln!(self.err, "\r\npedm: {}", terminal_safe(&reason))?;
                self.ended = Some(reason);
                return Ok(false);
            }
            _ => {}
        }
        Ok(true)
    }

    /// One asciicast event line: `[time, code, data]`.
    fn asciicast(&mut self, line: &str) -> std::io::Result<()> {
        let Ok(serde_json::Value::Array(ev)) = serde_json::from_str(line) else {
            return Ok(());
        };
        let (Some(code), Some(data)) = (ev.get(1).and_then(|c| c.as_str()), ev.get(2)) else {
            return Ok(());
        };
        match (code, data) {
            ("o", serde_json::Value::String(text)) => {
                if self.opts.raw {
                    self.out.write_all(text.as_bytes())?;
                } else {
                    let shown = self.sanitizer.filter(text);
                    self.out.write_all(shown.as_bytes())?;
                }
                self.out.flush()?;
            }
            ("m", serde_json::Value::String(label)) => {
                writeln!(self.err, "\r\npedm: [{}]", terminal_safe(label))?;
            }
            ("x", exec) if self.opts.execs => {
                let argv: Vec<String> = exec["argv"]
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .filter_map(|v| v.as_str().map(str::to_string))
                            .collect()
                    })
                    .unwrap_or_default();
                writeln!(
                    self.err,
                    "\r\npedm: exec {} (pid {}): {}",
                    terminal_safe(exec["verdict"].as_str().unwrap_or("?")),
                    exec["pid"].as_i64().unwrap_or(0),
                    terminal_safe(&argv.join(" ")),
                )?;
            }
            ("f", change) if self.opts.execs => {
                writeln!(
                    self.err,
                    "\r\npedm: file {} (pid {}): {}",
                    terminal_safe(change["op"].as_str().unwrap_or("?")),
                    change["pid"].as_i64().unwrap_or(0),
                    terminal_safe(change["path"].as_str().unwrap_or("?")),
                )?;
            }
            _ => {}
        }
        Ok(())
    }

    /// What the sanitizer withheld (empty with `raw`).
    pub fn withheld(&self) -> String {
        self.sanitizer.summary()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_is_shown_sanitised_and_pedms_own_lines_are_terminal_safe() {
        let mut w = Watch::new(
            Vec::new(),
            Vec::new(),
            WatchOptions {
                raw: false,
                execs: true,
            },
        );
        let header = serde_json::json!({
            "id": uuid::Uuid::nil(), "host": "web1", "grant_id": null, "delegation_id": null,
            "user": "al\u{1b}]0;pwned\u{7}ice", "run_as": "root", "argv": ["/bin/sh"],
            "started_at": "2026-12-05T10:00:00Z", "width": 80, "height": 24,
            "streamed_bytes": 0, "watchers": 1,
        });
        assert!(w.event("header", &header.to_string()).unwrap());
        // A clipboard write in the output is withheld; text passes.
        assert!(
            w.event("event", r#"[0.1, "o", "hi\u001b]52;c;ZXZpbA==\u0007!"]"#)
                .unwrap()
        );
        assert!(
            w.event(
                "event",
                r#"[0.2, "x", {"verdict": "denied", "pid": 7, "argv": ["curl", "x"]}]"#
            )
            .unwrap()
        );
        assert!(
            w.event(
                "event",
                r#"[0.3, "f", {"op": "written", "pid": 8, "path": "/etc/x\u001b[2J"}]"#
            )
            .unwrap()
        );
        assert!(w.event("gap", r#"{"missed": 3}"#).unwrap());
        assert!(
            !w.event("end", r#"{"reason": "the session ended"}"#)
                .unwrap()
        );
        assert_eq!(String::from_utf8_lossy(&w.out), "hi!");
        let err = String::from_utf8_lossy(&w.err);
        assert!(!err.contains('\u{1b}'), "{err:?}");
        assert!(err.contains("exec denied (pid 7): curl x"), "{err}");
        assert!(err.contains("3 event(s) missed"), "{err}");
        assert!(err.contains("file written (pid 8): /etc/x"), "{err}");
        assert_eq!(w.ended.as_deref(), Some("the session ended"));
        assert!(!w.withheld().is_empty());
    }
}
