//! `pedm session play`: replaying a recorded session (asciicast v2) in the terminal.
//!
//! The recording is read with the agent's own parser (`pedm_agent::recording`), so what the
//! player accepts is exactly what the agent writes.

use crate::escapes::Sanitizer;
use pedm_cast::{EventKind, parse};
use std::io::{BufRead, Write};
use std::time::Duration;

/// How to replay.
#[derive(Debug, Clone, Copy)]
pub struct Replay {
    /// Timing divided by this (2.0 plays twice as fast).
    pub speed: f64,
    /// Any pause longer than this many seconds shortened to it (before the speed-up).
    pub max_idle: Option<f64>,
    /// Pass every control sequence through (else [`Sanitizer`] withholds the dangerous ones).
    pub raw: bool,
}

/// Writes the output events of `cast` to `out` with their original timing. Returns what was
/// withheld (see [`Sanitizer::summary`]; empty with `raw`).
pub fn play(cast: impl BufRead, out: impl Write, how: Replay) -> anyhow::Result<String> {
    play_with(cast, out, how, std::thread::sleep)
}

/// What the terminal showed during the session, without the timing.
pub fn output_bytes(cast: impl BufRead) -> anyhow::Result<Vec<u8>> {
    Ok(parse(cast)?.output().into_bytes())
}

fn play_with(
    cast: impl BufRead,
    mut out: impl Write,
    Replay {
        speed,
        max_idle,
        raw,
    }: Replay,
    mut sleep: impl FnMut(Duration),
) -> anyhow::Result<String> {
    if !(speed.is_finite() && speed > 0.0) {
        anyhow::bail!("--speed must be a positive number, not {speed}");
    }
    if let Some(m) = max_idle
        && !(m.is_finite() && m >= 0.0)
    {
        anyhow::bail!("--max-idle must be a number of seconds, not {m}");
    }
    let cast = parse(cast)?;
    let mut sanitizer = Sanitizer::default();
    let mut last = 0.0_f64;
    for event in cast.events.iter().filter(|e| e.kind == EventKind::Output) {
        let mut gap = (event.time - last).max(0.0);
        last = last.max(event.time);
        if let Some(m) = max_idle {
            gap = gap.min(m);
        }
        let wait = gap / speed;
        if wait > 0.0 {
            sleep(Duration::from_secs_f64(wait));
        }
        if raw {
            out.write_all(event.data.as_bytes())?;
        } else {
            out.write_all(sanitizer.filter(&event.data).as_bytes())?;
        }
        out.flush()?;
    }
    Ok(sanitizer.summary())
}

#[cfg(test)]
mod tests {
    use super::*;

    const CAST: &str = r#"{"version":2,"width":80,"height":24,"timestamp":1700000000}
[0.5, "o", "$ "]
[1.0, "i", "ls\r"]
[1.5, "o", "ls\r\n"]
[11.5, "o", "a  b\r\n"]
[11.5, "r", "100x30"]
[12.0, "o", "h\u00e9"]
[12.0, "m", "exit 0"]
"#;

    fn played(speed: f64, max_idle: Option<f64>) -> (Vec<u8>, Vec<f64>) {
        let mut out = Vec::new();
        let mut waits = Vec::new();
        let how = Replay {
            speed,
            max_idle,
            raw: false,
        };
        play_with(CAST.as_bytes(), &mut out, how, |d| {
            waits.push((d.as_secs_f64() * 1000.0).round() / 1000.0)
        })
        .unwrap();
        (out, waits)
    }

    #[test]
    fn output_is_replayed_with_its_timing() {
        let (out, waits) = played(1.0, None);
        assert_eq!(out, "$ ls\r\na  b\r\nhé".as_bytes());
        assert_eq!(waits, [0.5, 1.0, 10.0, 0.5]);
    }

    #[test]
    fn speed_divides_and_max_idle_caps_the_pauses() {
        let (_, waits) = played(2.0, None);
        assert_eq!(waits, [0.25, 0.5, 5.0, 0.25]);
        let (_, waits) = played(1.0, Some(2.0));
        assert_eq!(waits, [0.5, 1.0, 2.0, 0.5]);
        let (_, waits) = played(4.0, Some(2.0));
        assert_eq!(waits, [0.125, 0.25, 0.5, 0.125]);
    }

    #[test]
    fn dangerous_sequences_are_withheld_unless_raw() {
        let cast = "{\"version\":2,\"width\":80,\"height\":24}\n\
                    [0.1, \"o\", \"a\\u001b]52;c;ZXZpbA==\\u0007b\"]\n";
        let mut out = Vec::new();
        let how = Replay {
            speed: 1.0,
            max_idle: None,
            raw: false,
        };
        let note = play_with(cast.as_bytes(), &mut out, how, |_| {}).unwrap();
        assert_eq!(
            (out.as_slice(), note.as_str()),
            (&b"ab"[..], "1 clipboard write (OSC 52)")
        );
        let mut out = Vec::new();
        let raw = Replay { raw: true, ..how };
        assert_eq!(
            play_with(cast.as_bytes(), &mut out, raw, |_| {}).unwrap(),
            ""
        );
        assert_eq!(out, b"a\x1b]52;c;ZXZpbA==\x07b");
    }

    #[test]
    fn output_bytes_is_the_concatenated_output() {
        assert_eq!(
            output_bytes(CAST.as_bytes()).unwrap(),
            "$ ls\r\na  b\r\nhé".as_bytes()
        );
    }

    #[test]
    fn bad_settings_and_bad_files_are_errors() {
        let how = |speed, max_idle| Replay {
            speed,
            max_idle,
            raw: false,
        };
        for speed in [0.0, -1.0, f64::NAN, f64::INFINITY] {
            assert!(play(CAST.as_bytes(), Vec::new(), how(speed, None)).is_err());
        }
        assert!(play(CAST.as_bytes(), Vec::new(), how(1.0, Some(-1.0))).is_err());
        let e = play(&b"not json"[..], Vec::new(), how(1.0, None)).unwrap_err();
        assert!(e.to_string().starts_with("line 1: header:"), "{e}");
    }
}
