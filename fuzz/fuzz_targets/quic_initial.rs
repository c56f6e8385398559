//! The gateway's QUIC Initial reader on arbitrary input: as raw datagrams (header parsing,
//! header protection, decryption), and — since random bytes almost never decrypt — as the
//! plaintext of Initial packets the target seals itself, so the frame parser, CRYPTO
//! reassembly and ClientHello parser see arbitrary content. Never panics; a name it returns is
//! a host name.
#![no_main]

use libfuzzer_sys::fuzz_target;
use palisade_gateway::quic::{seal_initial, ClientInitials, Hello, Version};

fn check(answer: Option<Hello>) {
    if let Some(Hello { sni: Some(name), .. }) = answer {
        assert!(name
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'_')));
    }
}

fuzz_target!(|data: &[u8]| {
    // Raw: the input as one datagram.
    if let Ok(answer) = ClientInitials::new().push(data) {
        check(answer);
    }
    // Sealed: each chunk (a length byte, then that many bytes) is the frames of one packet.
    let Some((&selector, mut rest)) = data.split_first() else {
        return;
    };
    let version = if selector & 1 == 0 { Version::V1 } else { Version::V2 };
    let mut sealed = ClientInitials::new();
    let mut pn = 0;
    while let Some((&len, tail)) = rest.split_first() {
        let len = usize::from(len).min(tail.len());
        let (frames, next) = tail.split_at(len);
        rest = next;
        let Ok(packet) = seal_initial(version, &[selector; 8], pn, frames, 0) else {
            return;
        };
        pn += 1;
        match sealed.push(&packet) {
            Ok(None) => {}
            Ok(answer) => return check(answer),
            Err(_) => return,
        }
    }
});
