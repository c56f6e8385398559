//! Reading the name a connection is for, from the first bytes the client sends, without
//! terminating anything (FW-6.2): the TLS ClientHello's SNI, or the HTTP/1 `Host` header.
//!
//! Both work on *peeked* bytes: the caller peeks a growing prefix of the stream and calls again
//! on [`Peeked::NeedMore`]. The ClientHello may be fragmented over several TLS records; a
//! bound on its size keeps memory per connection fixed.

/// Largest ClientHello we are willing to buffer (post-quantum key shares make ~2 KiB usual).
pub const MAX_CLIENT_HELLO: usize = 16 * 1024;
/// Largest HTTP request head.
pub const MAX_HTTP_HEAD: usize = 16 * 1024;

/// TLS extension numbers.
const EXT_SERVER_NAME: u16 = 0;
const EXT_ENCRYPTED_CLIENT_HELLO: u16 = 0xfe0d;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Peeked {
    /// The prefix is consistent so far; more bytes are needed.
    NeedMore,
    /// A complete TLS ClientHello.
    Tls {
        sni: Option<String>,
        /// An `encrypted_client_hello` extension was present (the SNI is then only the public
        /// name of the client-facing server).
        ech: bool,
    },
    /// A complete HTTP/1 request head.
    Http { host: Option<String> },
    /// Neither TLS nor HTTP/1 (the first bytes say so).
    Unknown,
    /// It started as TLS or HTTP but is malformed or too large.
    Malformed(&'static str),
}

/// Classify by the first bytes and parse accordingly.
pub fn peek(buf: &[u8]) -> Peeked {
    match buf.first() {
        None => Peeked::NeedMore,
        Some(0x16) => client_hello(buf),
        Some(b) if b.is_ascii_uppercase() => http_head(buf),
        Some(_) => Peeked::Unknown,
    }
}

/// A cursor over a message's bytes; every read is checked (`None` past the end). QUIC's
/// parser reads Initials with it too, adding varints in `quic`.
pub(crate) struct Reader<'a> {
    pub(crate) buf: &'a [u8],
    pub(crate) pos: usize,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }
    pub(crate) fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.pos.checked_add(n)?;
        let s = self.buf.get(self.pos..end)?;
        self.pos = end;
        Some(s)
    }
    pub(crate) fn u8(&mut self) -> Option<u8> {
        Some(self.take(1)?[0])
    }
    fn u16(&mut self) -> Option<u16> {
        let b = self.take(2)?;
        Some(u16::from_be_bytes([b[0], b[1]]))
    }
    fn vec8(&mut self) -> Option<&'a [u8]> {
        let n = self.u8()? as usize;
        self.take(n)
    }
    fn vec16(&mut self) -> Option<&'a [u8]> {
        let n = self.u16()? as usize;
        self.take(n)
    }
    pub(crate) fn done(&self) -> bool {
        self.pos == self.buf.len()
    }
}

/// Parse a ClientHello spread over one or more TLS handshake records.
pub fn client_hello(buf: &[u8]) -> Peeked {
    // Reassemble the handshake message from the records' fragments.
    let mut hs: Vec<u8> = Vec::new();
    let mut pos = 0;
    loop {
        // Do we already hold the whole handshake message?
        match client_hello_message(&hs) {
            Peeked::NeedMore => {}
            done => return done,
        }
        let Some(header) = buf.get(pos..pos + 5) else {
            // Check what we have of the header for early rejection.
            let rest = &buf[pos.min(buf.len())..];
            if let Some(&t) = rest.first() {
                if t != 0x16 {
                    return Peeked::Malformed("non-handshake record before the ClientHello ended");
                }
            }
            if let Some(&major) = rest.get(1) {
                if major != 3 {
                    return Peeked::Malformed("unknown TLS record version");
                }
            }
            return Peeked::NeedMore;
        };
        if header[0] != 0x16 {
            return Peeked::Malformed("non-handshake record before the ClientHello ended");
        }
        if header[1] != 3 {
            return Peeked::Malformed("unknown TLS record version");
        }
        let len = u16::from_be_bytes([header[3], header[4]]) as usize;
        if len == 0 {
            return Peeked::Malformed("empty handshake record");
        }
        if len > (1 << 14) {
            return Peeked::Malformed("TLS record too long");
        }
        let Some(fragment) = buf.get(pos + 5..pos + 5 + len) else {
            if hs.len() + (buf.len() - pos) > MAX_CLIENT_HELLO + 5 {
                return Peeked::Malformed("ClientHello too large");
            }
            return Peeked::NeedMore;
        };
        hs.extend_from_slice(fragment);
        if hs.len() > MAX_CLIENT_HELLO + 4 {
            return Peeked::Malformed("ClientHello too large");
        }
        pos += 5 + len;
    }
}

/// Parse a ClientHello handshake message as QUIC carries it (CRYPTO frames, no TLS records);
/// `NeedMore` until `hs` holds the whole message.
pub fn client_hello_message(hs: &[u8]) -> Peeked {
    let [ty, a, b, c, ..] = *hs else {
        return Peeked::NeedMore;
    };
    if ty != 1 {
        return Peeked::Malformed("first handshake message is not a ClientHello");
    }
    let len = ((a as usize) << 16) | ((b as usize) << 8) | c as usize;
    if len > MAX_CLIENT_HELLO {
        return Peeked::Malformed("ClientHello too large");
    }
    match hs.get(4..4 + len) {
        Some(body) => parse_client_hello_body(body),
        None => Peeked::NeedMore,
    }
}

fn parse_client_hello_body(body: &[u8]) -> Peeked {
    match parse_body(body) {
        Ok((sni, ech)) => Peeked::Tls { sni, ech },
        Err(e) => Peeked::Malformed(e),
    }
}

fn parse_body(body: &[u8]) -> Result<(Option<String>, bool), &'static str> {
    const BAD: &str = "truncated or inconsistent ClientHello";
    let mut r = Reader::new(body);
    let version = r.u16().ok_or(BAD)?;
    if version >> 8 != 3 {
        return Err("unknown ClientHello version");
    }
    r.take(32).ok_or(BAD)?; // random
    let session = r.vec8().ok_or(BAD)?;
    if session.len() > 32 {
        return Err("session id too long");
    }
    let suites = r.vec16().ok_or(BAD)?;
    if suites.is_empty() || suites.len() % 2 != 0 {
        return Err("bad cipher suite list");
    }
    let compression = r.vec8().ok_or(BAD)?;
    if compression.is_empty() {
        return Err("bad compression method list");
    }
    if r.done() {
        return Ok((None, false)); // no extensions at all
    }
    let exts = r.vec16().ok_or(BAD)?;
    if !r.done() {
        return Err("bytes after the extensions");
    }
    let mut r = Reader::new(exts);
    let mut sni = None;
    let mut ech = false;
    let mut seen_sni = false;
    while !r.done() {
        let ty = r.u16().ok_or(BAD)?;
        let data = r.vec16().ok_or(BAD)?;
        match ty {
            EXT_SERVER_NAME => {
                if seen_sni {
                    return Err("duplicate server_name extension");
                }
                seen_sni = true;
                sni = parse_server_name(data)?;
            }
            EXT_ENCRYPTED_CLIENT_HELLO => ech = true,
            _ => {}
        }
    }
    Ok((sni, ech))
}

fn parse_server_name(data: &[u8]) -> Result<Option<String>, &'static str> {
    const BAD: &str = "malformed server_name extension";
    let mut r = Reader::new(data);
    let list = r.vec16().ok_or(BAD)?;
    if !r.done() {
        return Err(BAD);
    }
    let mut r = Reader::new(list);
    let mut name = None;
    while !r.done() {
        let ty = r.u8().ok_or(BAD)?;
        let value = r.vec16().ok_or(BAD)?;
        if ty == 0 {
            if name.is_some() {
                return Err("more than one host_name in server_name");
            }
            name = Some(host_name(value).ok_or("invalid host_name in server_name")?);
        }
    }
    Ok(name)
}

/// A DNS host name as SNI carries it: ASCII letters, digits, `-`, `_`, `.`; 1–253 bytes.
fn host_name(b: &[u8]) -> Option<String> {
    if b.is_empty() || b.len() > 253 {
        return None;
    }
    if !b
        .iter()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'_'))
    {
        return None;
    }
    Some(String::from_utf8(b.to_vec()).ok()?.to_ascii_lowercase())
}

/// Parse an HTTP/1 request head; the `Host` header with its port stripped.
pub fn http_head(buf: &[u8]) -> Peeked {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(buf) {
        Ok(httparse::Status::Partial) => {
            if buf.len() > MAX_HTTP_HEAD {
                Peeked::Malformed("HTTP request head too large")
            } else {
                Peeked::NeedMore
            }
        }
        Ok(httparse::Status::Complete(_)) => {
            let mut host = None;
            for h in req.headers.iter() {
                if h.name.eq_ignore_ascii_case("host") {
                    if host.is_some() {
                        return Peeked::Malformed("more than one Host header");
                    }
                    let Ok(v) = std::str::from_utf8(h.value) else {
                        return Peeked::Malformed("Host header is not text");
                    };
                    host = Some(strip_port(v.trim()).to_ascii_lowercase());
                }
            }
            Peeked::Http { host }
        }
        Err(httparse::Error::TooManyHeaders) => Peeked::Malformed("too many HTTP headers"),
        Err(_) => Peeked::Malformed("not a valid HTTP/1 request head"),
    }
}

/// Headers that make a request's target or body length ambiguous, so that the gateway and the
/// server behind it could read different requests from the same bytes (request smuggling):
/// more than one `Host` (RFC 9112 §3.2), `Transfer-Encoding` with `Content-Length`, conflicting
/// or invalid `Content-Length`s, a `Transfer-Encoding` whose last coding is not `chunked`
/// (§6.3). Such a request must be refused with 400, not relayed.
pub fn framing_problem(headers: &[httparse::Header]) -> Option<&'static str> {
    let named = |n: &'static str| {
        headers
            .iter()
            .filter(move |h| h.name.eq_ignore_ascii_case(n))
    };
    if named("host").count() > 1 {
        return Some("more than one Host header");
    }
    let lengths: Vec<&[u8]> = named("content-length")
        .flat_map(|h| h.value.split(|&b| b == b','))
        .map(|v| v.trim_ascii())
        .collect();
    if lengths
        .iter()
        .any(|v| v.is_empty() || !v.iter().all(u8::is_ascii_digit))
        || lengths.windows(2).any(|w| w[0] != w[1])
    {
        return Some("invalid or conflicting Content-Length");
    }
    let codings: Vec<&[u8]> = named("transfer-encoding")
        .flat_map(|h| h.value.split(|&b| b == b','))
        .map(|v| v.trim_ascii())
        .filter(|v| !v.is_empty())
        .collect();
    let has_te = named("transfer-encoding").next().is_some();
    if has_te && !lengths.is_empty() {
        return Some("both Transfer-Encoding and Content-Length");
    }
    if has_te
        && !codings
            .last()
            .is_some_and(|c| c.eq_ignore_ascii_case(b"chunked"))
    {
        return Some("Transfer-Encoding does not end in chunked");
    }
    None
}

/// [`framing_problem`] of a complete request head at the start of `buf`.
pub fn head_framing_problem(buf: &[u8]) -> Option<&'static str> {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(buf) {
        Ok(httparse::Status::Complete(_)) => framing_problem(req.headers),
        _ => None,
    }
}

/// Whether a request head announces a body: a `Content-Length` other than 0, or any
/// `Transfer-Encoding` (RFC 9112 §6.1, §6.2).
pub fn announces_body(headers: &[httparse::Header]) -> bool {
    headers.iter().any(|h| {
        h.name.eq_ignore_ascii_case("transfer-encoding")
            || (h.name.eq_ignore_ascii_case("content-length")
                && h.value.iter().any(|b| b.is_ascii_digit() && *b != b'0'))
    })
}

/// [`announces_body`] for the request head at the start of `buf`.
pub fn head_announces_body(buf: &[u8]) -> bool {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut req = httparse::Request::new(&mut headers);
    matches!(req.parse(buf), Ok(httparse::Status::Complete(_))) && announces_body(req.headers)
}

/// `host:port` → `host`; `[v6]:port` → `v6`.
pub fn strip_port(authority: &str) -> &str {
    if let Some(rest) = authority.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    match authority.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') && p.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => authority,
    }
}

/// Build a ClientHello (for tests, the fuzz target's seeds and the benchmark): `sni`, optional
/// ECH, extra opaque extensions, split into records of at most `record_size` bytes.
pub fn build_client_hello(
    sni: Option<&str>,
    ech: bool,
    extra: &[(u16, Vec<u8>)],
    record_size: usize,
) -> Vec<u8> {
    let mut exts = vec![];
    let mut push_ext = |ty: u16, data: &[u8]| {
        exts.extend_from_slice(&ty.to_be_bytes());
        exts.extend_from_slice(&(data.len() as u16).to_be_bytes());
        exts.extend_from_slice(data);
    };
    for (ty, data) in extra {
        if *ty != EXT_SERVER_NAME && *ty != EXT_ENCRYPTED_CLIENT_HELLO {
            push_ext(*ty, data);
        }
    }
    if let Some(name) = sni {
        let mut entry = vec![0u8];
        entry.extend_from_slice(&(name.len() as u16).to_be_bytes());
        entry.extend_from_slice(name.as_bytes());
        let mut list = (entry.len() as u16).to_be_bytes().to_vec();
        list.extend_from_slice(&entry);
        push_ext(EXT_SERVER_NAME, &list);
    }
    if ech {
        push_ext(EXT_ENCRYPTED_CLIENT_HELLO, &[0, 1, 2, 3]);
    }
    let mut body = vec![3, 3];
    body.extend_from_slice(&[7u8; 32]);
    body.push(32);
    body.extend_from_slice(&[9u8; 32]);
    body.extend_from_slice(&[0, 4, 0x13, 0x01, 0x13, 0x02]);
    body.extend_from_slice(&[1, 0]);
    body.extend_from_slice(&(exts.len() as u16).to_be_bytes());
    body.extend_from_slice(&exts);
    let mut hs = vec![1];
    hs.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
    hs.extend_from_slice(&body);
    let mut out = vec![];
    for chunk in hs.chunks(record_size.max(1)) {
        out.extend_from_slice(&[0x16, 3, 1]);
        out.extend_from_slice(&(chunk.len() as u16).to_be_bytes());
        out.extend_from_slice(chunk);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// RFC 9112 §6.1–6.3: a body is announced by a `Content-Length` other than 0 or by a
    /// `Transfer-Encoding`; a head without either has none.
    #[test]
    fn a_body_is_announced_by_its_length_or_coding() {
        let head = |h: &str| format!("POST / HTTP/1.1\r\nHost: a\r\n{h}\r\n");
        for (h, body) in [
            ("", false),
            ("Content-Length: 0\r\n", false),
            ("Content-Length: 000\r\n", false),
            ("Content-Length: 5\r\n", true),
            ("content-length: 10\r\n", true),
            ("Transfer-Encoding: chunked\r\n", true),
            ("X-Content-Length: 5\r\n", false),
        ] {
            assert_eq!(head_announces_body(head(h).as_bytes()), body, "{h:?}");
        }
        assert!(
            !head_announces_body(b"POST / HTTP/1.1\r\nContent-Length: 5\r\n"),
            "a partial head"
        );
    }

    #[test]
    fn smuggling_headers_are_framing_problems() {
        let head = |extra: &str| format!("POST /x HTTP/1.1\r\nHost: a.test\r\n{extra}\r\n");
        for (extra, want) in [
            ("", None),
            ("Content-Length: 5\r\n", None),
            ("Transfer-Encoding: gzip, chunked\r\n", None),
            ("Content-Length: 5\r\nContent-Length: 5\r\n", None),
            ("Host: b.test\r\n", Some("more than one Host header")),
            ("hOsT: a.test\r\n", Some("more than one Host header")),
            (
                "Transfer-Encoding: chunked\r\nContent-Length: 5\r\n",
                Some("both Transfer-Encoding and Content-Length"),
            ),
            (
                "Content-Length: 5\r\nContent-Length: 6\r\n",
                Some("invalid or conflicting Content-Length"),
            ),
            (
                "Content-Length: 5, 6\r\n",
                Some("invalid or conflicting Content-Length"),
            ),
            (
                "Content-Length: -1\r\n",
                Some("invalid or conflicting Content-Length"),
            ),
            (
                "Transfer-Encoding: chunked, gzip\r\n",
                Some("Transfer-Encoding does not end in chunked"),
            ),
        ] {
            assert_eq!(
                head_framing_problem(head(extra).as_bytes()),
                want,
                "{extra:?}"
            );
        }
    }

    #[test]
    fn sni_of_a_simple_hello() {
        let b = build_client_hello(Some("API.Example.com"), false, &[], 16384);
        assert_eq!(
            peek(&b),
            Peeked::Tls {
                sni: Some("api.example.com".into()),
                ech: false
            }
        );
        assert_eq!(
            peek(&build_client_hello(None, false, &[], 16384)),
            Peeked::Tls {
                sni: None,
                ech: false
            }
        );
        assert_eq!(
            peek(&build_client_hello(Some("public.example"), true, &[], 100)),
            Peeked::Tls {
                sni: Some("public.example".into()),
                ech: true
            }
        );
    }

    #[test]
    fn http_host() {
        assert_eq!(
            peek(b"GET / HTTP/1.1\r\nHost: Www.Example.com:8080\r\n\r\n"),
            Peeked::Http {
                host: Some("www.example.com".into())
            }
        );
        assert_eq!(peek(b"GET / HTTP/1.1\r\nHo"), Peeked::NeedMore);
        assert_eq!(peek(b"GET / HTTP/1.0\r\n\r\n"), Peeked::Http { host: None });
        assert!(matches!(
            peek(b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n"),
            Peeked::Malformed(_)
        ));
        assert_eq!(peek(b"\x00\x01"), Peeked::Unknown);
        assert_eq!(strip_port("[::1]:443"), "::1");
        assert_eq!(strip_port("a.b:443"), "a.b");
    }

    #[test]
    fn a_real_rustls_client_hello() {
        use std::sync::Arc;
        let _ = rustls::crypto::ring::default_provider().install_default();
        let roots = rustls::RootCertStore::empty();
        let config = rustls::ClientConfig::builder()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let mut conn = rustls::ClientConnection::new(
            Arc::new(config),
            "login.microsoftonline.com".try_into().unwrap(),
        )
        .unwrap();
        let mut out = vec![];
        conn.write_tls(&mut out).unwrap();
        assert_eq!(
            peek(&out),
            Peeked::Tls {
                sni: Some("login.microsoftonline.com".into()),
                ech: false
            }
        );
        for n in 0..out.len() {
            assert_eq!(peek(&out[..n]), Peeked::NeedMore, "prefix {n}");
        }
    }

    fn name() -> impl Strategy<Value = String> {
        "[a-z0-9]([a-z0-9-]{0,20}[a-z0-9])?(\\.[a-z0-9]([a-z0-9-]{0,20}[a-z0-9])?){0,4}"
    }

    proptest! {
        /// Any split into records yields the same SNI; every strict prefix asks for more.
        #[test]
        fn fragmented_hellos_parse(
            sni in proptest::option::of(name()),
            ech in any::<bool>(),
            extra in proptest::collection::vec((2u16..0xfe00, proptest::collection::vec(any::<u8>(), 0..40)), 0..8),
            record in 1usize..600,
        ) {
            let b = build_client_hello(sni.as_deref(), ech, &extra, record);
            prop_assert_eq!(peek(&b), Peeked::Tls { sni: sni.clone(), ech });
            for n in [0, 1, 4, 5, 6, b.len() / 2, b.len() - 1] {
                prop_assert_eq!(peek(&b[..n]), Peeked::NeedMore);
            }
        }

        /// Arbitrary bytes never panic; bytes after a TLS record header never claim a name the
        /// builder did not put there.
        #[test]
        fn arbitrary_bytes_never_panic(b in proptest::collection::vec(any::<u8>(), 0..2000)) {
            let _ = peek(&b);
            let mut t = vec![0x16, 3, 1];
            t.extend_from_slice(&b);
            let _ = peek(&t);
        }

        /// Corrupting one byte of a valid hello never panics and never yields a name outside
        /// the host-name alphabet.
        #[test]
        fn corrupted_hellos(sni in name(), at in any::<prop::sample::Index>(), v in any::<u8>()) {
            let mut b = build_client_hello(Some(&sni), false, &[], 16384);
            let i = at.index(b.len());
            b[i] = v;
            if let Peeked::Tls { sni: Some(n), .. } = peek(&b) {
                prop_assert!(n.bytes().all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'_')));
            }
        }
    }
}
