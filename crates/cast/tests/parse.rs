//! Recordings arrive from agents (uploads) and are read back by the player: the parser takes
//! any bytes without panicking, and what the writer wrote reads back exactly, however the
//! output was cut into writes (a UTF-8 character split between two reads of the terminal
//! included). The `fuzz/` target `cast_parse` explores the parser with coverage guidance.

use pedm_cast::{CastWriter, Header, parse};
use proptest::prelude::*;
use std::time::Duration;

proptest! {
    #![proptest_config(ProptestConfig { cases: 1024, ..ProptestConfig::default() })]

    #[test]
    fn no_byte_string_makes_the_parser_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let _ = parse(&bytes[..]);
    }

    #[test]
    fn recording_like_lines_never_panic(
        lines in proptest::collection::vec(
            prop_oneof![
                Just(r#"{"version": 2, "width": 80, "height": 24}"#.to_string()),
                "\\[[0-9.eE+-]{0,12}, \"[oimr]\", \"[^\"]{0,20}\"\\]",
                any::<String>(),
            ],
            0..12,
        )
    ) {
        let _ = parse(lines.join("\n").as_bytes());
    }

    #[test]
    fn what_is_written_reads_back(
        text in any::<String>(),
        cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..8),
        label in "[^\\p{Cc}]{0,30}",
    ) {
        let bytes = text.as_bytes();
        let mut at: Vec<usize> = cuts.iter().map(|c| c.index(bytes.len() + 1)).collect();
        at.push(0);
        at.push(bytes.len());
        at.sort_unstable();
        let mut w = CastWriter::new(Vec::new(), &Header::new(80, 24)).expect("writer");
        for pair in at.windows(2) {
            w.advance(Duration::from_millis(3));
            w.output(&bytes[pair[0]..pair[1]]).expect("output");
        }
        w.marker(&label).expect("marker");
        let (file, _) = w.finish().expect("finish");
        let cast = parse(&file[..]).expect("reads back");
        prop_assert_eq!(cast.output(), text);
        prop_assert_eq!(cast.markers(), vec![label.as_str()]);
        prop_assert!(cast.events.windows(2).all(|e| e[0].time <= e[1].time), "time never goes back");
    }
}
