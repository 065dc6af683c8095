//! The agent socket's framing against arbitrary bytes (what a hostile local client can send):
//! reading never panics, never accepts more than the limit, and every frame written reads back
//! as itself. The `fuzz/` target `socket_frame` explores the same reader with coverage guidance.

use pedm_api::socket::{Frame, FrameError, MAX_FRAME, WinSize, read_frame_limited, write_frame};
use proptest::prelude::*;

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime")
}

/// Every frame in `bytes`, until the end or the first error.
async fn read_all(mut bytes: &[u8], max: usize) -> (Vec<Frame>, Option<FrameError>) {
    let mut frames = vec![];
    loop {
        match read_frame_limited(&mut bytes, max).await {
            Ok(Some(f)) => frames.push(f),
            Ok(None) => return (frames, None),
            Err(e) => return (frames, Some(e)),
        }
    }
}

fn wire(rt: &tokio::runtime::Runtime, frames: &[Frame]) -> Vec<u8> {
    let mut w = Vec::new();
    for f in frames {
        rt.block_on(write_frame(&mut w, f)).expect("write");
    }
    w
}

fn frame() -> impl Strategy<Value = Frame> {
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..512).prop_map(Frame::Stdin),
        proptest::collection::vec(any::<u8>(), 0..512).prop_map(Frame::Stdout),
        proptest::collection::vec(any::<u8>(), 0..512).prop_map(Frame::Stderr),
        Just(Frame::StdinEof),
        (any::<u16>(), any::<u16>()).prop_map(|(rows, cols)| Frame::Resize(WinSize { rows, cols })),
        any::<i32>().prop_map(Frame::Signal),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1024, ..ProptestConfig::default() })]

    #[test]
    fn no_byte_string_makes_the_reader_panic(
        bytes in proptest::collection::vec(any::<u8>(), 0..4096),
        max in 1usize..8192,
    ) {
        let (frames, _) = rt().block_on(read_all(&bytes, max));
        // Nothing read claims more bytes than arrived.
        let payload: usize = frames
            .iter()
            .map(|f| match f {
                Frame::Stdin(b) | Frame::Stdout(b) | Frame::Stderr(b) => b.len(),
                _ => 0,
            })
            .sum();
        prop_assert!(payload <= bytes.len());
    }

    #[test]
    fn a_length_over_the_limit_is_refused_before_reading_it(
        len in 65u32..=u32::MAX, kind in any::<u8>(),
    ) {
        let mut bytes = len.to_be_bytes().to_vec();
        bytes.push(kind);
        let (frames, err) = rt().block_on(read_all(&bytes, 64));
        prop_assert!(frames.is_empty());
        prop_assert!(matches!(err, Some(FrameError::TooLarge(n)) if n == len as usize), "{err:?}");
    }

    #[test]
    fn frames_read_back_as_written(frames in proptest::collection::vec(frame(), 0..16)) {
        let rt = rt();
        let bytes = wire(&rt, &frames);
        let (read, err) = rt.block_on(read_all(&bytes, MAX_FRAME));
        prop_assert!(err.is_none(), "{err:?}");
        prop_assert_eq!(read, frames);
    }

    #[test]
    fn a_cut_stream_is_an_error_not_a_short_frame(
        frames in proptest::collection::vec(frame(), 1..8), cut in any::<prop::sample::Index>(),
    ) {
        let rt = rt();
        let bytes = wire(&rt, &frames);
        let at = cut.index(bytes.len());
        let (read, err) = rt.block_on(read_all(&bytes[..at], MAX_FRAME));
        // Whole frames before the cut read back; a frame cut inside is an error (EOF), never a
        // frame with part of its payload.
        prop_assert_eq!(&read[..], &frames[..read.len()]);
        if err.is_none() {
            prop_assert_eq!(wire(&rt, &read).len(), at, "no error: the cut fell between frames");
        }
    }
}
