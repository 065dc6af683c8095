//! An audit export handed to the offline verifier.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::sync::LazyLock;

static KEY: LazyLock<pedm_audit::SigningKey> =
    LazyLock::new(|| pedm_audit::SigningKey::from_seed(&[9; 32]));

fuzz_target!(|data: &[u8]| {
    let opts = pedm_audit::VerifyOptions {
        threads: Some(1),
        ..Default::default()
    };
    let _ = pedm_audit::verify_export_with(data, KEY.public_key(), &opts);
});
