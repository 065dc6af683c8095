//! A checkpoint note (C2SP signed note) from a witness or an auditor's file.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(note) = pedm_audit::CheckpointNote::parse(text) {
            // What parses, prints back to something that parses the same.
            let again = pedm_audit::CheckpointNote::parse(&note.text()).expect("re-parses");
            assert_eq!(again, note);
        }
    }
});
