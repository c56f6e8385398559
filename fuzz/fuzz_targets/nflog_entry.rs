//! An NFLOG entry as the kernel hands it over (prefix text, packet bytes): the prefix and
//! packet parsers never panic, and any prefix they read becomes a flow record.
#![no_main]

use libfuzzer_sys::fuzz_target;
use palisade_host::nflog::{parse_packet, parse_prefix, RecordContext};

fuzz_target!(|data: &[u8]| {
    // The first byte says how long the prefix is.
    let cut = data.first().map_or(0, |&n| (n as usize + 1).min(data.len()));
    let (prefix, packet) = data.split_at(cut);
    let prefix = String::from_utf8_lossy(prefix);
    if let (Some(p), Some(t)) = (parse_prefix(&prefix), parse_packet(packet)) {
        let r = RecordContext::default().record(&p, &t, std::time::SystemTime::now());
        assert_eq!(r.source_ip, Some(t.source));
    }
});
