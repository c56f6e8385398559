//! The gateway's first-bytes parser (TLS ClientHello SNI / HTTP Host) on arbitrary input, whole
//! and split at every record boundary the input suggests: never panics, and a strict prefix of
//! a complete ClientHello never yields a different answer than "need more".
#![no_main]

use libfuzzer_sys::fuzz_target;
use palisade_gateway::sni::{peek, Peeked};

fuzz_target!(|data: &[u8]| {
    let whole = peek(data);
    if let Peeked::Tls {
        sni: Some(name), ..
    } = &whole
    {
        assert!(name
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'_')));
    }
    // As a TLS stream regardless of the first byte.
    let mut tls = vec![0x16, 3, 1];
    tls.extend_from_slice(data);
    let _ = peek(&tls);
    // Prefixes of a parse that completed are consistent with it or still incomplete.
    if matches!(whole, Peeked::Tls { .. }) {
        for n in [1, data.len() / 3, data.len() / 2] {
            if n < data.len() {
                let p = peek(&data[..n]);
                assert!(
                    matches!(p, Peeked::NeedMore | Peeked::Malformed(_)) || p == whole,
                    "{p:?}"
                );
            }
        }
    }
});
