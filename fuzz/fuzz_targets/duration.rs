//! Durations as people type them (requests, policy annotations, configuration).
#![no_main]

use libfuzzer_sys::fuzz_target;
use pedm_core::duration::{format_duration, parse_duration};

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(secs) = parse_duration(text) {
            assert!(secs > 0);
            assert_eq!(parse_duration(&format_duration(secs)), Ok(secs));
        }
    }
});
