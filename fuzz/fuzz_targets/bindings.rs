//! Name bindings (`--resolve NAME=IP` items and hosts files) on arbitrary text: never panics,
//! every error is located, and every accepted binding is under a normalised name.
#![no_main]

use libfuzzer_sys::fuzz_target;
use palisade_model::bindings::{normalize, parse_hosts, parse_items};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let (hosts, problems) = parse_hosts("hosts", &text);
    for p in &problems {
        assert!(p.line.is_some() && p.column.is_some(), "{p}");
    }
    let items: Vec<String> = text.lines().map(String::from).collect();
    let (bound, problems) = parse_items("--resolve", &items);
    assert!(problems.len() <= items.len());
    for name in hosts.keys().chain(bound.keys()) {
        assert_eq!(&normalize(name), name);
    }
});
