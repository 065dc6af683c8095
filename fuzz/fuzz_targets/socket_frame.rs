//! The agent socket's frame reader on whatever a local client sends.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let mut r = data;
        // Every frame until the end or the first error, with the Start frame's limit and the
        // general one.
        for max in [pedm_api::socket::MAX_START_FRAME, 64] {
            r = data;
            while let Ok(Some(_)) = pedm_api::socket::read_frame_limited(&mut r, max).await {}
        }
        let _ = r;
    });
});
