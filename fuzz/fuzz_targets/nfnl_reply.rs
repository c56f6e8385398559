//! The nf_tables netlink reply reader on arbitrary bytes: never panics; what it frames is
//! within the input. The framed payloads are also read as dump entries of a table (chains,
//! rules, sets, set elements, objects), as `host diff`'s listing of one, and as an echoed rule.
#![no_main]

use libfuzzer_sys::fuzz_target;
use palisade_host::nfnl::{attr, messages, read_listing, read_table, rule_digest};
use std::collections::BTreeMap;

fuzz_target!(|data: &[u8]| {
    if let Ok(msgs) = messages(data) {
        let mut payloads = vec![];
        for (_, _, payload) in msgs {
            assert!(payload.len() + 16 <= data.len());
            let _ = attr(payload.get(4..).unwrap_or_default(), 3);
            let _ = rule_digest(payload.get(4..).unwrap_or_default());
            payloads.push(payload);
        }
        let elements = BTreeMap::from([("s".to_string(), payloads.clone())]);
        for table in ["t", ""] {
            let _ = read_table(
                table, &payloads, &payloads, &payloads, &elements, &payloads, None,
            );
            let _ = read_listing(table, &payloads, &payloads, &payloads, &elements, &payloads);
        }
    }
});
