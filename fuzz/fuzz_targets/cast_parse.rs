//! Session recordings as uploaded by agents and read by the player.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(cast) = pedm_cast::parse(data) {
        let _ = cast.output();
        let _ = cast.markers();
    }
});
