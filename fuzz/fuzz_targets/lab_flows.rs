//! The lab's `flows.yaml` reader on arbitrary text: never panics; every error names the file.
#![no_main]

use libfuzzer_sys::fuzz_target;
use palisade_host::lab::check::parse_flows;
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    if let Err(e) = parse_flows(Path::new("flows.yaml"), &text) {
        assert!(e.to_string().starts_with("flows.yaml: "), "{e}");
    }
});
