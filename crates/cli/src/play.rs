//! `pedm session play`: replaying a recorded session (asciicast v2) in the terminal.
//!
//! The recording is read with the agent's own parser (`pedm_agent::recording`), so what the
//! player accepts is exactly what the agent writes.

use pedm_agent::recording::{EventKind, parse};
use std::io::{BufRead, Write};
use std::time::Duration;

/// Writes the output events of `cast` to `out` with their original timing divided by
/// `speed` (2.0 plays twice as fast), any pause longer than `max_idle` seconds shortened to
/// it (measured before the speed-up).
pub fn play(
    cast: impl BufRead,
    out: impl Write,
    speed: f64,
    max_idle: Option<f64>,
) -> anyhow::Result<()> {
    play_with(cast, out, speed, max_idle, std::thread::sleep)
}

/// What the terminal showed during the session, without the timing.
pub fn output_bytes(cast: impl BufRead) -> anyhow::Result<Vec<u8>> {
    Ok(parse(cast)?.output().into_bytes())
}

fn play_with(
    cast: impl BufRead,
    mut out: impl Write,
    speed: f64,
    max_idle: Option<f64>,
    mut sleep: impl FnMut(Duration),
) -> anyhow::Result<()> {
    if !(speed.is_finite() && speed > 0.0) {
        anyhow::bail!("--speed must be a positive number, not {speed}");
    }
    if let Some(m) = max_idle
        && !(m.is_finite() && m >= 0.0)
    {
        anyhow::bail!("--max-idle must be a number of seconds, not {m}");
    }
    let cast = parse(cast)?;
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
        out.write_all(event.data.as_bytes())?;
        out.flush()?;
    }
    Ok(())
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
        play_with(CAST.as_bytes(), &mut out, speed, max_idle, |d| {
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
    fn output_bytes_is_the_concatenated_output() {
        assert_eq!(
            output_bytes(CAST.as_bytes()).unwrap(),
            "$ ls\r\na  b\r\nhé".as_bytes()
        );
    }

    #[test]
    fn bad_settings_and_bad_files_are_errors() {
        for speed in [0.0, -1.0, f64::NAN, f64::INFINITY] {
            assert!(play(CAST.as_bytes(), Vec::new(), speed, None).is_err());
        }
        assert!(play(CAST.as_bytes(), Vec::new(), 1.0, Some(-1.0)).is_err());
        let e = play(&b"not json"[..], Vec::new(), 1.0, None).unwrap_err();
        assert!(e.to_string().starts_with("line 1: header:"), "{e}");
    }
}
