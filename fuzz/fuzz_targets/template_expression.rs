//! ARM template expressions on arbitrary text: evaluation must never panic.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = palisade_arm::evaluate_standalone(text);
    }
});
