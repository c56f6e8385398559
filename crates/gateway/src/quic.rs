//! Reading the server name of a QUIC connection from the client's first datagrams, without
//! taking part in the connection (RFC 9000 §17.2.2, RFC 9001 §5.2, RFC 9369 §3).
//!
//! Initial packets are protected only with keys derived from the Destination Connection ID and
//! the version's public salt, so the gateway can open them, collect their CRYPTO frames and read
//! the ClientHello with the same parser as TLS over TCP ([`sni::client_hello_message`]).
//!
//! A ClientHello with a post-quantum key share spans more than one Initial packet, often more
//! than one datagram: [`ClientInitials`] is fed a flow's datagrams in arrival order and answers
//! once the ClientHello is whole. Datagrams ([`MAX_DATAGRAMS`]) and CRYPTO bytes
//! ([`MAX_CLIENT_HELLO`]) are bounded, so a flow costs a fixed amount of memory.

use crate::sni::{self, Peeked, Reader, MAX_CLIENT_HELLO};
use ring::aead::quic::{HeaderProtectionKey, AES_128};
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_128_GCM};
use ring::hkdf;

/// How many datagrams of a flow may pass before the ClientHello must be whole.
pub const MAX_DATAGRAMS: usize = 8;
/// Connection IDs are at most 20 bytes in QUIC v1 and v2 (RFC 9000 §17.2).
const MAX_CID: usize = 20;
/// AES-128-GCM tag length.
const TAG: usize = 16;

/// The QUIC versions whose Initial packets the gateway can open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    /// RFC 9000.
    V1,
    /// RFC 9369.
    V2,
}

impl Version {
    pub fn from_wire(v: u32) -> Option<Version> {
        match v {
            0x0000_0001 => Some(Version::V1),
            0x6b33_43cf => Some(Version::V2),
            _ => None,
        }
    }

    pub fn wire(self) -> u32 {
        match self {
            Version::V1 => 0x0000_0001,
            Version::V2 => 0x6b33_43cf,
        }
    }

    fn salt(self) -> &'static [u8] {
        match self {
            Version::V1 => &[
                0x38, 0x76, 0x2c, 0xf7, 0xf5, 0x59, 0x34, 0xb3, 0x4d, 0x17, 0x9a, 0xe6, 0xa4, 0xc8,
                0x0c, 0xad, 0xcc, 0xbb, 0x7f, 0x0a,
            ],
            Version::V2 => &[
                0x0d, 0xed, 0xe3, 0xde, 0xf7, 0x00, 0xa6, 0xdb, 0x81, 0x93, 0x81, 0xbe, 0x6e, 0x26,
                0x9d, 0xcb, 0xf9, 0xbd, 0x2e, 0xd9,
            ],
        }
    }

    /// HKDF labels for the packet key, IV and header-protection key.
    fn labels(self) -> [&'static [u8]; 3] {
        match self {
            Version::V1 => [b"quic key", b"quic iv", b"quic hp"],
            Version::V2 => [b"quicv2 key", b"quicv2 iv", b"quicv2 hp"],
        }
    }

    /// The long-header packet type bits of an Initial (v2 renumbered them).
    fn initial_type(self) -> u8 {
        match self {
            Version::V1 => 0,
            Version::V2 => 1,
        }
    }

    fn retry_type(self) -> u8 {
        match self {
            Version::V1 => 3,
            Version::V2 => 0,
        }
    }
}

/// Why the first datagrams of a flow do not give a ClientHello.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QuicError {
    #[error("not a QUIC long-header packet")]
    NotLongHeader,
    #[error("QUIC version {0:#010x} is not one the gateway can read (v1, v2)")]
    UnknownVersion(u32),
    #[error("the first packet is not a QUIC Initial")]
    NotInitial,
    #[error("malformed Initial packet: {0}")]
    Malformed(&'static str),
    #[error("an Initial packet does not decrypt with the keys of its connection ID")]
    Decrypt,
    #[error("frame type {0:#x} is not allowed in an Initial packet")]
    Frame(u64),
    #[error("CRYPTO frames disagree about the bytes at one offset")]
    Inconsistent,
    #[error("the ClientHello is larger than {MAX_CLIENT_HELLO} bytes")]
    TooLarge,
    #[error("no complete ClientHello in the first {MAX_DATAGRAMS} datagrams")]
    TooManyDatagrams,
    #[error("the ClientHello was not complete within the handshake timeout")]
    Incomplete,
    #[error("malformed ClientHello: {0}")]
    ClientHello(&'static str),
}

/// Whether a datagram starts with a long-header packet of a version we read: worth reading as
/// a client's first flight.
pub fn starts_like_initial(datagram: &[u8]) -> bool {
    match datagram {
        [flags, v @ ..] if flags & 0x80 != 0 && v.len() >= 4 => {
            Version::from_wire(u32::from_be_bytes([v[0], v[1], v[2], v[3]]))
                .is_some_and(|version| (flags >> 4) & 0x03 == version.initial_type())
        }
        _ => false,
    }
}

/// What a complete ClientHello says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hello {
    pub version: Version,
    pub sni: Option<String>,
    /// An `encrypted_client_hello` extension was present: `sni` is the outer, public name.
    pub ech: bool,
}

/// The client Initial packets of one flow, fed datagram by datagram.
#[derive(Default)]
pub struct ClientInitials {
    keys: Option<Keys>,
    crypto: CryptoStream,
    datagrams: usize,
}

impl ClientInitials {
    pub fn new() -> ClientInitials {
        ClientInitials::default()
    }

    /// Add the flow's next client datagram. `Ok(None)`: consistent so far, more is needed.
    /// Once this returns `Ok(Some(_))` or an error, the answer is final; don't call again.
    pub fn push(&mut self, datagram: &[u8]) -> Result<Option<Hello>, QuicError> {
        self.datagrams += 1;
        if self.datagrams > MAX_DATAGRAMS {
            return Err(QuicError::TooManyDatagrams);
        }
        let mut rest = datagram;
        // Only the flow's first packet must be an Initial. Packets may be coalesced (RFC 9000
        // §12.2), and the client's first flight may carry 0-RTT packets, also in datagrams of
        // their own between its Initials: those are skipped, they cannot add CRYPTO bytes.
        let mut first = self.datagrams == 1;
        while !rest.is_empty() {
            match self.packet(rest, first)? {
                Some(len) => rest = &rest[len..],
                None => break,
            }
            first = false;
        }
        let Some(version) = self.keys.as_ref().map(|k| k.version) else {
            return Ok(None);
        };
        match sni::client_hello_message(self.crypto.prefix()) {
            Peeked::NeedMore => Ok(None),
            Peeked::Tls { sni, ech } => Ok(Some(Hello { version, sni, ech })),
            Peeked::Malformed(why) => Err(QuicError::ClientHello(why)),
            Peeked::Http { .. } | Peeked::Unknown => Err(QuicError::ClientHello("not TLS")),
        }
    }

    /// Read one packet at the start of `buf`; its length, or `None` when the rest of the
    /// datagram is not something to read (a short-header packet, a later packet of an unknown
    /// version).
    fn packet(&mut self, buf: &[u8], first: bool) -> Result<Option<usize>, QuicError> {
        let mut r = Reader::new(buf);
        let flags = r.u8().ok_or(QuicError::Malformed("empty"))?;
        if flags & 0x80 == 0 {
            return if first {
                Err(QuicError::NotLongHeader)
            } else {
                Ok(None)
            };
        }
        let wire = r.u32().ok_or(QuicError::Malformed("truncated version"))?;
        let Some(version) = Version::from_wire(wire) else {
            return if first {
                Err(QuicError::UnknownVersion(wire))
            } else {
                Ok(None)
            };
        };
        let dcid = r
            .cid()
            .ok_or(QuicError::Malformed("bad destination connection ID"))?;
        r.cid()
            .ok_or(QuicError::Malformed("bad source connection ID"))?;
        let ty = (flags >> 4) & 0x03;
        if ty != version.initial_type() {
            if first {
                return Err(QuicError::NotInitial);
            }
            if ty == version.retry_type() {
                return Ok(None);
            }
            // 0-RTT or Handshake: skip by its length.
            let len = r.varint().ok_or(QuicError::Malformed("bad length"))?;
            return skip(&r, len).map(Some);
        }
        let token = r.varint().ok_or(QuicError::Malformed("bad token length"))?;
        r.take_u64(token)
            .ok_or(QuicError::Malformed("truncated token"))?;
        let len = r.varint().ok_or(QuicError::Malformed("bad length"))?;
        let pn_offset = r.pos;
        let end = skip(&r, len)?;
        let keys = match self.keys.take() {
            // A Retry gives the client a new Destination Connection ID, hence new keys.
            Some(k) if k.version == version && k.dcid == dcid => k,
            _ => Keys::client_initial(version, dcid)?,
        };
        let payload = keys.open(&buf[..end], pn_offset)?;
        self.keys = Some(keys);
        self.frames(&payload)?;
        Ok(Some(end))
    }

    /// The frames a client Initial may carry (RFC 9000 §17.2.2, Table 3).
    fn frames(&mut self, payload: &[u8]) -> Result<(), QuicError> {
        const BAD: QuicError = QuicError::Malformed("truncated frame");
        let mut r = Reader::new(payload);
        while !r.done() {
            match r.varint().ok_or(BAD)? {
                0x00 | 0x01 => {} // PADDING, PING
                ty @ (0x02 | 0x03) => {
                    // ACK: largest, delay, range count, first range, ranges, ECN counts.
                    r.varint().ok_or(BAD)?;
                    r.varint().ok_or(BAD)?;
                    let ranges = r.varint().ok_or(BAD)?;
                    r.varint().ok_or(BAD)?;
                    for _ in 0..ranges {
                        r.varint().ok_or(BAD)?;
                        r.varint().ok_or(BAD)?;
                    }
                    if ty == 0x03 {
                        for _ in 0..3 {
                            r.varint().ok_or(BAD)?;
                        }
                    }
                }
                0x06 => {
                    let offset = r.varint().ok_or(BAD)?;
                    let len = r.varint().ok_or(BAD)?;
                    let data = r.take_u64(len).ok_or(BAD)?;
                    self.crypto.insert(offset, data)?;
                }
                0x1c => {
                    // CONNECTION_CLOSE: error code, frame type, reason phrase.
                    r.varint().ok_or(BAD)?;
                    r.varint().ok_or(BAD)?;
                    let len = r.varint().ok_or(BAD)?;
                    r.take_u64(len).ok_or(BAD)?;
                }
                other => return Err(QuicError::Frame(other)),
            }
        }
        Ok(())
    }
}

/// The end of a packet whose Length field says `len` bytes follow the reader's position.
fn skip(r: &Reader, len: u64) -> Result<usize, QuicError> {
    usize::try_from(len)
        .ok()
        .and_then(|len| r.pos.checked_add(len))
        .filter(|&end| end <= r.buf.len())
        .ok_or(QuicError::Malformed("length runs past the datagram"))
}

/// The CRYPTO stream's first bytes, as far as frames have filled them.
#[derive(Default)]
struct CryptoStream {
    bytes: Vec<u8>,
    filled: Vec<bool>,
}

impl CryptoStream {
    fn insert(&mut self, offset: u64, data: &[u8]) -> Result<(), QuicError> {
        let end = offset
            .checked_add(data.len() as u64)
            .filter(|&e| e <= (MAX_CLIENT_HELLO + 4) as u64)
            .ok_or(QuicError::TooLarge)? as usize;
        let start = offset as usize;
        if self.bytes.len() < end {
            self.bytes.resize(end, 0);
            self.filled.resize(end, false);
        }
        for (i, &b) in (start..end).zip(data) {
            // Retransmissions repeat bytes; different bytes at one offset would let two
            // readers of the stream see two different ClientHellos, so refuse.
            if self.filled[i] && self.bytes[i] != b {
                return Err(QuicError::Inconsistent);
            }
            self.bytes[i] = b;
            self.filled[i] = true;
        }
        Ok(())
    }

    /// The contiguous bytes from offset 0.
    fn prefix(&self) -> &[u8] {
        let n = self
            .filled
            .iter()
            .position(|f| !f)
            .unwrap_or(self.filled.len());
        &self.bytes[..n]
    }
}

/// A client's Initial keys for one Destination Connection ID.
struct Keys {
    version: Version,
    dcid: Vec<u8>,
    packet: LessSafeKey,
    iv: [u8; 12],
    header: HeaderProtectionKey,
}

impl Keys {
    /// RFC 9001 §5.2: initial_secret = HKDF-Extract(salt, DCID); the client's secret and
    /// from it key, IV and header-protection key by HKDF-Expand-Label.
    fn client_initial(version: Version, dcid: &[u8]) -> Result<Keys, QuicError> {
        let initial = hkdf::Salt::new(hkdf::HKDF_SHA256, version.salt()).extract(dcid);
        let mut secret = [0u8; 32];
        expand_label(&initial, b"client in", &mut secret)?;
        let secret = hkdf::Prk::new_less_safe(hkdf::HKDF_SHA256, &secret);
        let [key_label, iv_label, hp_label] = version.labels();
        let (mut key, mut iv, mut hp) = ([0u8; 16], [0u8; 12], [0u8; 16]);
        expand_label(&secret, key_label, &mut key)?;
        expand_label(&secret, iv_label, &mut iv)?;
        expand_label(&secret, hp_label, &mut hp)?;
        Ok(Keys {
            version,
            dcid: dcid.to_vec(),
            packet: LessSafeKey::new(
                UnboundKey::new(&AES_128_GCM, &key).map_err(|_| QuicError::Decrypt)?,
            ),
            iv,
            header: HeaderProtectionKey::new(&AES_128, &hp).map_err(|_| QuicError::Decrypt)?,
        })
    }

    /// Remove header protection and decrypt one packet (`packet` ends where its Length says);
    /// the plaintext payload.
    fn open(&self, packet: &[u8], pn_offset: usize) -> Result<Vec<u8>, QuicError> {
        // The sample starts 4 bytes after the packet number's start (RFC 9001 §5.4.2).
        let sample = packet
            .get(pn_offset + 4..pn_offset + 20)
            .ok_or(QuicError::Malformed(
                "too short for its header-protection sample",
            ))?;
        let mask = self
            .header
            .new_mask(sample)
            .map_err(|_| QuicError::Decrypt)?;
        let flags = packet[0] ^ (mask[0] & 0x0f);
        let pn_len = usize::from(flags & 0x03) + 1;
        let mut header = packet[..pn_offset + pn_len].to_vec();
        header[0] = flags;
        let mut pn = 0u64;
        for i in 0..pn_len {
            header[pn_offset + i] ^= mask[1 + i];
            pn = (pn << 8) | u64::from(header[pn_offset + i]);
        }
        let mut payload = packet[pn_offset + pn_len..].to_vec();
        let len = self
            .packet
            .open_in_place(self.nonce(pn), Aad::from(&header), &mut payload)
            .map_err(|_| QuicError::Decrypt)?
            .len();
        payload.truncate(len);
        Ok(payload)
    }

    fn nonce(&self, pn: u64) -> Nonce {
        let mut nonce = self.iv;
        for (n, p) in nonce[4..].iter_mut().zip(pn.to_be_bytes()) {
            *n ^= p;
        }
        Nonce::assume_unique_for_key(nonce)
    }

    /// Encrypt `payload` as packet `pn` after `header` (which ends in a 4-byte packet number)
    /// and apply header protection: what a client does, for tests and fuzz seeds.
    fn seal(&self, mut header: Vec<u8>, pn: u32, payload: &[u8]) -> Result<Vec<u8>, QuicError> {
        let pn_offset = header.len() - 4;
        let mut body = payload.to_vec();
        let tag = self
            .packet
            .seal_in_place_separate_tag(self.nonce(u64::from(pn)), Aad::from(&header), &mut body)
            .map_err(|_| QuicError::Decrypt)?;
        body.extend_from_slice(tag.as_ref());
        header.extend_from_slice(&body);
        let mut packet = header;
        let sample = packet
            .get(pn_offset + 4..pn_offset + 20)
            .ok_or(QuicError::Malformed("payload too short to sample"))?;
        let mask = self
            .header
            .new_mask(sample)
            .map_err(|_| QuicError::Decrypt)?;
        packet[0] ^= mask[0] & 0x0f;
        for i in 0..4 {
            packet[pn_offset + i] ^= mask[1 + i];
        }
        Ok(packet)
    }
}

/// TLS 1.3 HKDF-Expand-Label with an empty context (RFC 8446 §7.1).
fn expand_label(prk: &hkdf::Prk, label: &[u8], out: &mut [u8]) -> Result<(), QuicError> {
    struct Len(usize);
    impl hkdf::KeyType for Len {
        fn len(&self) -> usize {
            self.0
        }
    }
    let length = (out.len() as u16).to_be_bytes();
    let label_len = [(b"tls13 ".len() + label.len()) as u8];
    let info: [&[u8]; 5] = [&length, &label_len, b"tls13 ", label, &[0]];
    prk.expand(&info, Len(out.len()))
        .and_then(|okm| okm.fill(out))
        .map_err(|_| QuicError::Decrypt)
}

/// Build a protected client Initial packet carrying `frames` (already encoded), padded with
/// PADDING frames to `pad_to` bytes of payload: for tests, fuzz seeds and benchmarks.
pub fn seal_initial(
    version: Version,
    dcid: &[u8],
    pn: u32,
    frames: &[u8],
    pad_to: usize,
) -> Result<Vec<u8>, QuicError> {
    if dcid.len() > MAX_CID {
        return Err(QuicError::Malformed("connection ID longer than 20 bytes"));
    }
    let mut payload = frames.to_vec();
    // The header-protection sample needs at least 4 payload bytes before the tag.
    payload.resize(payload.len().max(pad_to).max(4), 0);
    let mut header = vec![0xc0 | (version.initial_type() << 4) | 0x03];
    header.extend_from_slice(&version.wire().to_be_bytes());
    header.push(dcid.len() as u8);
    header.extend_from_slice(dcid);
    header.push(0); // no source connection ID
    header.push(0); // no token
    put_varint(&mut header, (4 + payload.len() + TAG) as u64);
    header.extend_from_slice(&pn.to_be_bytes());
    Keys::client_initial(version, dcid)?.seal(header, pn, &payload)
}

/// A CRYPTO frame carrying `data` at `offset`.
pub fn crypto_frame(offset: u64, data: &[u8]) -> Vec<u8> {
    let mut f = vec![0x06];
    put_varint(&mut f, offset);
    put_varint(&mut f, data.len() as u64);
    f.extend_from_slice(data);
    f
}

/// QUIC variable-length integer encoding (RFC 9000 §16).
fn put_varint(out: &mut Vec<u8>, v: u64) {
    match v {
        0..=0x3f => out.push(v as u8),
        0x40..=0x3fff => out.extend_from_slice(&(v as u16 | 0x4000).to_be_bytes()),
        0x4000..=0x3fff_ffff => out.extend_from_slice(&(v as u32 | 0x8000_0000).to_be_bytes()),
        _ => out.extend_from_slice(&(v | 0xc000_0000_0000_0000).to_be_bytes()),
    }
}

/// QUIC's reads beside the TLS ones: lengths as varints, connection IDs.
impl<'a> Reader<'a> {
    fn take_u64(&mut self, n: u64) -> Option<&'a [u8]> {
        self.take(usize::try_from(n).ok()?)
    }
    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_be_bytes(self.take(4)?.try_into().ok()?))
    }
    fn cid(&mut self) -> Option<&'a [u8]> {
        let n = usize::from(self.u8()?);
        if n > MAX_CID {
            return None;
        }
        self.take(n)
    }
    fn varint(&mut self) -> Option<u64> {
        let first = self.u8()?;
        let len = 1usize << (first >> 6);
        let mut v = u64::from(first & 0x3f);
        for &b in self.take(len - 1)? {
            v = (v << 8) | u64::from(b);
        }
        Some(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn hex(text: &str) -> Vec<u8> {
        let digits: Vec<u8> = text
            .bytes()
            .filter(|b| b.is_ascii_hexdigit())
            .map(|b| (b as char).to_digit(16).unwrap() as u8)
            .collect();
        digits.chunks(2).map(|p| p[0] << 4 | p[1]).collect()
    }

    fn rfc9001() -> Vec<u8> {
        hex(include_str!("../testdata/rfc9001-a2-client-initial.hex"))
    }

    fn rfc9369() -> Vec<u8> {
        hex(include_str!("../testdata/rfc9369-a2-client-initial.hex"))
    }

    /// The handshake message of a ClientHello (what CRYPTO frames carry: no TLS records).
    fn hello_message(sni: Option<&str>, ech: bool, extra: usize) -> Vec<u8> {
        let extra = vec![(0xff00u16, vec![0x5a; extra])];
        let records = sni::build_client_hello(sni, ech, &extra, 1 << 14);
        let mut msg = vec![];
        let mut rest = &records[..];
        while rest.len() >= 5 {
            let len = u16::from_be_bytes([rest[3], rest[4]]) as usize;
            msg.extend_from_slice(&rest[5..5 + len]);
            rest = &rest[5 + len..];
        }
        msg
    }

    fn read_all(datagrams: &[Vec<u8>]) -> Result<Option<Hello>, QuicError> {
        let mut c = ClientInitials::new();
        for d in datagrams {
            if let Some(h) = c.push(d)? {
                return Ok(Some(h));
            }
        }
        Ok(None)
    }

    const DCID: [u8; 8] = [0x83, 0x94, 0xc8, 0xf0, 0x3e, 0x51, 0x57, 0x08];

    #[test]
    fn rfc9001_client_initial_names_example_com() {
        let hello = read_all(&[rfc9001()]).unwrap().unwrap();
        assert_eq!(hello.sni.as_deref(), Some("example.com"));
        assert_eq!(hello.version, Version::V1);
        assert!(!hello.ech);
    }

    #[test]
    fn rfc9369_v2_client_initial_names_example_com() {
        let hello = read_all(&[rfc9369()]).unwrap().unwrap();
        assert_eq!(hello.sni.as_deref(), Some("example.com"));
        assert_eq!(hello.version, Version::V2);
    }

    #[test]
    fn seal_matches_the_rfc_vector() {
        // Re-encrypting the RFC's plaintext (packet number 2) gives the RFC's bytes, so the
        // test builder is a faithful client.
        let frames = hex(
            "060040f1010000ed0303ebf8fa56f12939b9584a3896472ec40bb863cfd3e868
             04fe3a47f06a2b69484c00000413011302010000c000000010000e00000b6578
             616d706c652e636f6dff01000100000a00080006001d00170018001000070005
             04616c706e000500050100000000003300260024001d00209370b2c9caa47fba
             baf4559fedba753de171fa71f50f1ce15d43e994ec74d748002b000302030400
             0d0010000e0403050306030203080408050806002d00020101001c0002400100
             3900320408ffffffffffffffff05048000ffff07048000ffff08011001048000
             75300901100f088394c8f03e51570806048000ffff",
        );
        let sealed = seal_initial(Version::V1, &DCID, 2, &frames, 1162).unwrap();
        assert_eq!(sealed, rfc9001());
    }

    #[test]
    fn client_hello_over_two_datagrams_out_of_order() {
        let msg = hello_message(Some("big.allowed.test"), false, 2000);
        let (a, b) = msg.split_at(1000);
        // The second half arrives first; after it the first still needs the first half.
        let late = seal_initial(Version::V1, &DCID, 1, &crypto_frame(1000, b), 1200).unwrap();
        let early = seal_initial(Version::V1, &DCID, 0, &crypto_frame(0, a), 1200).unwrap();
        let mut c = ClientInitials::new();
        assert_eq!(c.push(&late), Ok(None));
        let hello = c.push(&early).unwrap().unwrap();
        assert_eq!(hello.sni.as_deref(), Some("big.allowed.test"));
    }

    #[test]
    fn coalesced_initials_in_one_datagram() {
        let msg = hello_message(Some("two.test"), true, 300);
        let (a, b) = msg.split_at(200);
        let mut datagram = seal_initial(Version::V1, &DCID, 0, &crypto_frame(0, a), 0).unwrap();
        datagram.extend(seal_initial(Version::V1, &DCID, 1, &crypto_frame(200, b), 0).unwrap());
        let hello = read_all(&[datagram]).unwrap().unwrap();
        assert_eq!(hello.sni.as_deref(), Some("two.test"));
        assert!(hello.ech);
    }

    #[test]
    fn a_zero_rtt_datagram_between_initials_is_skipped() {
        let msg = hello_message(Some("late.test"), false, 1500);
        let (a, b) = msg.split_at(900);
        let first = seal_initial(Version::V1, &DCID, 0, &crypto_frame(0, a), 1200).unwrap();
        let second = seal_initial(Version::V1, &DCID, 1, &crypto_frame(900, b), 1200).unwrap();
        // A 0-RTT packet (type 1): a long header, then only its length is read.
        let mut zero_rtt = vec![0xd0, 0, 0, 0, 1, 8];
        zero_rtt.extend_from_slice(&DCID);
        zero_rtt.extend_from_slice(&[0, 0x40, 40]);
        zero_rtt.extend_from_slice(&[0xaa; 40]);
        let hello = read_all(&[first, zero_rtt.clone(), second])
            .unwrap()
            .unwrap();
        assert_eq!(hello.sni.as_deref(), Some("late.test"));
        // As the flow's first datagram it is no Initial.
        assert_eq!(read_all(&[zero_rtt]), Err(QuicError::NotInitial));
    }

    #[test]
    fn conflicting_crypto_bytes_are_refused() {
        let msg = hello_message(Some("a.test"), false, 0);
        let mut other = msg.clone();
        other[40] ^= 1;
        let mut frames = crypto_frame(0, &msg);
        frames.extend(crypto_frame(0, &other));
        let d = seal_initial(Version::V1, &DCID, 0, &frames, 1200).unwrap();
        assert_eq!(read_all(&[d]), Err(QuicError::Inconsistent));
    }

    #[test]
    fn bounded_by_datagrams_and_bytes() {
        let msg = hello_message(Some("a.test"), false, 0);
        let first = seal_initial(Version::V1, &DCID, 0, &crypto_frame(0, &msg[..10]), 1200);
        let first = first.unwrap();
        let mut c = ClientInitials::new();
        for _ in 0..MAX_DATAGRAMS {
            assert_eq!(c.push(&first), Ok(None));
        }
        assert_eq!(c.push(&first), Err(QuicError::TooManyDatagrams));
        let far = crypto_frame(MAX_CLIENT_HELLO as u64, &[0; 10]);
        let d = seal_initial(Version::V1, &DCID, 0, &far, 1200).unwrap();
        assert_eq!(read_all(&[d]), Err(QuicError::TooLarge));
    }

    #[test]
    fn typed_errors_for_what_is_not_an_initial() {
        assert_eq!(read_all(&[vec![0x40, 1, 2]]), Err(QuicError::NotLongHeader));
        let mut v = rfc9001();
        v[1..5].copy_from_slice(&[0xfa, 0xce, 0xb0, 0x0c]);
        assert_eq!(read_all(&[v]), Err(QuicError::UnknownVersion(0xfaceb00c)));
        let mut v = rfc9001();
        v[0] = 0xe0; // Handshake type
        assert_eq!(read_all(&[v]), Err(QuicError::NotInitial));
        let mut v = rfc9001();
        v[30] ^= 1;
        assert_eq!(read_all(&[v]), Err(QuicError::Decrypt));
        let stream = [0x08, 0x00];
        let d = seal_initial(Version::V1, &DCID, 0, &stream, 1200).unwrap();
        assert_eq!(read_all(&[d]), Err(QuicError::Frame(8)));
    }

    proptest! {
        #[test]
        fn random_bytes_never_panic(d in proptest::collection::vec(any::<u8>(), 0..1500)) {
            let _ = read_all(&[d]);
        }

        #[test]
        fn random_bytes_after_a_long_header_never_panic(
            ty in 0u8..4, cid in proptest::collection::vec(any::<u8>(), 0..21),
            rest in proptest::collection::vec(any::<u8>(), 0..1300),
        ) {
            let mut d = vec![0xc0 | ty << 4, 0, 0, 0, 1, cid.len() as u8];
            d.extend_from_slice(&cid);
            d.extend_from_slice(&rest);
            let _ = read_all(&[d]);
        }

        #[test]
        fn any_changed_byte_of_the_rfc_initial_is_refused(at in 0usize..1200, x in 1u8..=255) {
            let mut v = rfc9001();
            v[at] ^= x;
            prop_assert!(read_all(&[v]).is_err());
        }

        #[test]
        fn crypto_split_in_any_order_over_packets_gives_the_name(
            name in "[a-z]{1,20}(\\.[a-z]{1,10}){1,3}",
            extra in 0usize..3000,
            cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..6),
            order in any::<prop::sample::Index>(),
            per_datagram in 1usize..3,
            v2 in any::<bool>(),
        ) {
            let version = if v2 { Version::V2 } else { Version::V1 };
            let msg = hello_message(Some(&name), false, extra);
            let mut at: Vec<usize> = cuts.iter().map(|c| c.index(msg.len())).collect();
            at.extend([0, msg.len()]);
            at.sort();
            at.dedup();
            let mut frames: Vec<Vec<u8>> = at
                .windows(2)
                .map(|w| crypto_frame(w[0] as u64, &msg[w[0]..w[1]]))
                .collect();
            let rotate = order.index(frames.len());
            frames.rotate_left(rotate);
            let packets: Vec<Vec<u8>> = frames
                .iter()
                .enumerate()
                .map(|(pn, f)| {
                    let mut f = f.clone();
                    f.insert(0, 0x01); // a PING before each, as clients do
                    seal_initial(version, &DCID, pn as u32, &f, 0).unwrap()
                })
                .collect();
            let datagrams: Vec<Vec<u8>> = packets.chunks(per_datagram).map(|c| c.concat()).collect();
            let hello = read_all(&datagrams).unwrap().unwrap();
            prop_assert_eq!(hello.sni, Some(name));
        }
    }
}
