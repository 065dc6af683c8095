//! Slack's signed callbacks and link codes: timestamp, signature and body from the network.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let mut parts = text.splitn(3, '\n');
    let (ts, sig, body) = (parts.next(), parts.next(), parts.next().unwrap_or(""));
    let _ = pedm_notify::slack::verify(b"secret", ts, sig, body.as_bytes(), 1_790_000_000);
    let _ = pedm_notify::slack::verify_link_code(b"secret", &text, 1_790_000_000);
});
