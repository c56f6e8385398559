//! Azure's exports and Network Watcher results (`check-azure`) on arbitrary text: never panics,
//! and every problem names the file.
#![no_main]

use libfuzzer_sys::fuzz_target;
use palisade_analyze::azure_check::{parse_nsgs, parse_routes, parse_watcher};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let problems = [
        parse_routes("x.json", &text).err(),
        parse_nsgs("x.json", &text).err(),
        parse_watcher("x.json", &text).err(),
    ];
    for p in problems.iter().flatten().flatten() {
        assert_eq!(p.file, "x.json", "{p}");
    }
});
