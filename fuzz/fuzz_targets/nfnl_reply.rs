//! The nf_tables netlink reply reader on arbitrary bytes: never panics; what it frames is
//! within the input.
#![no_main]

use libfuzzer_sys::fuzz_target;
use palisade_host::nfnl::{attr, messages};

fuzz_target!(|data: &[u8]| {
    if let Ok(msgs) = messages(data) {
        for (_, _, payload) in msgs {
            assert!(payload.len() + 16 <= data.len());
            let _ = attr(payload.get(4..).unwrap_or_default(), 3);
        }
    }
});
