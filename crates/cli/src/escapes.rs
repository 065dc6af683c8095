//! Neutralising terminal control sequences in replayed output. A recorded session's output is
//! written by whoever held the grant: replayed raw, it could write the viewer's clipboard
//! (OSC 52), retitle the window, plant hyperlinks (OSC 8), reach the terminal's own
//! programming (DCS, APC, PM, SOS), or make the terminal answer a query (device status,
//! device attributes, window reports) into the viewer's input, which their shell then reads.
//! Colours, cursor movement and erasing (the rest of CSI) pass: they are what makes a replay
//! look like the session.

use std::collections::BTreeMap;

const ESC: char = '\u{1b}';
const BEL: char = '\u{7}';
/// Longest CSI kept in memory; anything longer is not a real sequence and is dropped.
const MAX_CSI: usize = 64;

#[derive(Debug)]
enum State {
    Ground,
    Esc,
    Csi(String),
    /// A control string (OSC, DCS, SOS, PM, APC) up to its terminator; `head` keeps the
    /// first characters to tell OSC 52 from a title.
    Str {
        kind: StrKind,
        head: String,
        esc: bool,
    },
}

#[derive(Debug, Clone, Copy)]
enum StrKind {
    Osc,
    Dcs,
    Other,
}

/// A streaming filter: output events can split a sequence anywhere.
#[derive(Debug)]
pub struct Sanitizer {
    state: State,
    /// What was withheld, by kind, for the note after the replay.
    pub withheld: BTreeMap<&'static str, usize>,
}

impl Default for Sanitizer {
    fn default() -> Self {
        Sanitizer {
            state: State::Ground,
            withheld: BTreeMap::new(),
        }
    }
}

impl Sanitizer {
    fn withhold(&mut self, what: &'static str) {
        *self.withheld.entry(what).or_default() += 1;
    }

    /// The part of `input` safe to write to the viewer's terminal.
    pub fn filter(&mut self, input: &str) -> String {
        let mut out = String::with_capacity(input.len());
        for c in input.chars() {
            self.step(c, &mut out);
        }
        out
    }

    fn start_str(&mut self, kind: StrKind) {
        self.state = State::Str {
            kind,
            head: String::new(),
            esc: false,
        };
    }

    fn step(&mut self, c: char, out: &mut String) {
        match std::mem::replace(&mut self.state, State::Ground) {
            State::Ground => match c {
                ESC => self.state = State::Esc,
                '\u{9b}' => self.state = State::Csi(String::new()),
                '\u{9d}' => self.start_str(StrKind::Osc),
                '\u{90}' => self.start_str(StrKind::Dcs),
                '\u{98}' | '\u{9e}' | '\u{9f}' => self.start_str(StrKind::Other),
                '\u{80}'..='\u{9f}' => self.withhold("C1 control character"),
                c => out.push(c),
            },
            State::Esc => match c {
                '[' => self.state = State::Csi(String::new()),
                ']' => self.start_str(StrKind::Osc),
                'P' => self.start_str(StrKind::Dcs),
                'X' | '^' | '_' => self.start_str(StrKind::Other),
                // DECID: the terminal answers with its identity.
                'Z' => self.withhold("terminal query"),
                ESC => {
                    out.push(ESC);
                    self.state = State::Esc;
                }
                c => {
                    out.push(ESC);
                    out.push(c);
                }
            },
            State::Csi(mut buf) => match c {
                '\u{20}'..='\u{3f}' if buf.len() < MAX_CSI => {
                    buf.push(c);
                    self.state = State::Csi(buf);
                }
                '\u{40}'..='\u{7e}' if buf.len() < MAX_CSI => {
                    // n: device status report, c: device attributes, t: window operations
                    // (some report the title back as input), q with intermediates: DECRQSS
                    // and friends.
                    let query = matches!(c, 'n' | 'c' | 't')
                        || (c == 'q' && buf.ends_with(['$', '"', '>']));
                    if query {
                        self.withhold("terminal query");
                    } else {
                        out.push(ESC);
                        out.push('[');
                        out.push_str(&buf);
                        out.push(c);
                    }
                }
                // Not a sequence a terminal would finish: drop what was gathered, and let the
                // character start over (it may be ESC).
                c => {
                    self.withhold("malformed control sequence");
                    self.step(c, out);
                }
            },
            State::Str {
                kind,
                mut head,
                esc,
            } => {
                let end = match c {
                    BEL | '\u{9c}' => Some(None),
                    '\\' if esc => Some(None),
                    // ESC followed by anything but `\` cancels the string and starts anew.
                    c if esc => Some(Some(c)),
                    _ => None,
                };
                match end {
                    Some(next) => {
                        self.withhold(describe(kind, &head));
                        if let Some(c) = next {
                            self.state = State::Esc;
                            self.step(c, out);
                        }
                    }
                    None => {
                        if c != ESC && head.len() < 8 {
                            head.push(c);
                        }
                        self.state = State::Str {
                            kind,
                            head,
                            esc: c == ESC,
                        };
                    }
                }
            }
        }
    }

    /// What replay held back, for one line on standard error ("" if nothing).
    pub fn summary(&self) -> String {
        self.withheld
            .iter()
            .map(|(what, n)| format!("{n} {what}"))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

fn describe(kind: StrKind, head: &str) -> &'static str {
    match kind {
        StrKind::Dcs => "device control string (DCS)",
        StrKind::Other => "application string (APC/PM/SOS)",
        StrKind::Osc => match head.split(';').next().unwrap_or("") {
            "52" => "clipboard write (OSC 52)",
            "0" | "1" | "2" => "title change (OSC 0/2)",
            "8" => "hyperlink (OSC 8)",
            _ => "operating system command (OSC)",
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn clean(chunks: &[&str]) -> (String, String) {
        let mut s = Sanitizer::default();
        let out: String = chunks.iter().map(|c| s.filter(c)).collect();
        (out, s.summary())
    }

    #[test]
    fn colours_and_cursor_movement_pass() {
        let text = "\u{1b}[1;31mred\u{1b}[0m \u{1b}[2J\u{1b}[H\u{1b}(B héllo\r\n";
        assert_eq!(clean(&[text]), (text.to_string(), String::new()));
    }

    #[test]
    fn clipboard_title_links_and_dcs_are_withheld_even_split_across_events() {
        let (out, note) = clean(&[
            "a\u{1b}]52;c;ZXZp",
            "bA==\u{7}b",
            "\u{1b}]0;pwned\u{1b}\\c",
            "\u{1b}]8;;https://evil.example/\u{7}link\u{1b}]8;;\u{7}",
            "\u{1b}P+q544e\u{1b}",
            "\\d",
        ]);
        assert_eq!(out, "abclinkd");
        assert_eq!(
            note,
            "1 clipboard write (OSC 52), 1 device control string (DCS), \
             2 hyperlink (OSC 8), 1 title change (OSC 0/2)"
        );
    }

    #[test]
    fn queries_that_make_the_terminal_type_are_withheld() {
        let (out, note) = clean(&["x\u{1b}[6n\u{1b}[c\u{1b}[21t\u{1b}Zy\u{9b}5n"]);
        assert_eq!(out, "xy");
        assert_eq!(note, "5 terminal query");
    }

    #[test]
    fn eight_bit_controls_and_broken_sequences_do_not_slip_through() {
        let (out, note) = clean(&["\u{9d}52;c;eA==\u{9c}ok\u{85}\u{1b}[1;\u{1b}]2;t\u{7}."]);
        assert_eq!(out, "ok.");
        assert_eq!(
            note,
            "1 C1 control character, 1 clipboard write (OSC 52), 1 malformed control sequence, \
             1 title change (OSC 0/2)"
        );
        // A CSI that never ends is not kept in memory without bound.
        let (out, _) = clean(&[&format!("\u{1b}[{}m", "1;".repeat(100))]);
        assert!(!out.contains('\u{1b}'), "{out:?}");
    }
}
