//! Connection handling: the explicit proxy (absolute-form HTTP/1.1 and `CONNECT`), the
//! transparent listener, and the splice between client and server.
//!
//! Every path ends in one decision of the compiled policy and one flow record. Denied
//! connections get their record written (durably) before the client hears the answer.

use crate::buffers;
use crate::metrics::ListenerLabels;
use crate::resolver::ResolveError;
use crate::shutdown::{
    accept, connection, reached, relaying, sockets_closed, take_in_flight, InFlight, Phase,
};
use crate::sni::{self, Peeked};
use crate::{
    log, outcome_record, outcome_view, AddressCheck, Closed, EchPolicy, Established, Gateway,
    RecordParts, TunnelSni, Version,
};
use palisade_flowlog::{FlowRecord, FlowRecordRef, Shown};
use palisade_policy::firewall::{FirewallInput, FirewallOutcome, FirewallPass};
use palisade_policy::matchers::PacketKey;
use palisade_policy::AppProtocol;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{ready, Poll};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{ReadHalf, WriteHalf};
use tokio::net::{TcpListener, TcpStream};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Explicit,
    Transparent,
    /// A DNAT frontend listener (FW-4).
    Dnat,
}

impl Mode {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Mode::Explicit => "explicit",
            Mode::Transparent => "transparent",
            Mode::Dnat => "dnat",
        }
    }
}

pub async fn accept_loop(gw: Arc<Gateway>, listener: TcpListener, mode: Mode) {
    let what = format!("{} listener", mode.name());
    let accepted = gw
        .metrics
        .connections
        .get_or_create(&ListenerLabels {
            listener: mode.name().into(),
        })
        .clone();
    // Accepted sockets inherit TCP_NODELAY from their listener on Linux: set once here, it
    // saves a `setsockopt(2)` per connection.
    let inherits_nodelay = socket2::SockRef::from(&listener)
        .set_tcp_nodelay(true)
        .is_ok();
    // They inherit the delayed ACK too: see [`hold_acks`].
    hold_acks(&listener);
    let mut draining = std::pin::pin!(reached(&gw, Phase::Draining));
    while let Some((stream, peer)) = accept(draining.as_mut(), &listener, &what).await {
        accepted.inc();
        let Ok(permit) = gw.slots.clone().try_acquire_owned() else {
            gw.metrics.rejected_over_limit.inc();
            drop(stream);
            continue;
        };
        let Some(source_slot) = gw.source_slots.try_acquire(peer.ip().to_canonical()) else {
            gw.metrics.rejected_over_source_limit.inc();
            gw.log_limited(
                "OverSourceLimit",
                format!(
                    "{what}: connection from {peer} closed: it holds --max-connections-per-source {}",
                    gw.config.limits.max_connections_per_source
                ),
            );
            drop(stream);
            continue;
        };
        if !inherits_nodelay {
            let _ = stream.set_nodelay(true);
        }
        let counted = InFlight::new(&gw);
        let gw = gw.clone();
        tokio::spawn(async move {
            let peer = crate::canonical(peer);
            // Boxed here so the task holds one pointer, not a second copy of the
            // connection's state (an argument of an async fn keeps its room for good).
            let work = Box::pin(async {
                match mode {
                    Mode::Explicit => explicit(&gw, stream, peer).await,
                    // Boxed: an explicit tunnel's task is then not as large as this path.
                    Mode::Transparent => Box::pin(transparent(&gw, stream, peer)).await,
                    Mode::Dnat => unreachable!("DNAT listeners have their own accept loop"),
                }
            });
            let r = connection(&gw, counted, Some(source_slot), mode, peer, None, work).await;
            if let Err(e) = r {
                if !matches!(
                    e.kind(),
                    io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe
                ) {
                    gw.log_limited(
                        "ConnectionError",
                        format!("{} connection from {peer}: {e}", mode.name()),
                    );
                }
            }
            drop(permit);
        });
    }
}

/// What we know about a flow when it is decided.
pub(crate) struct Flow {
    pub mode: Mode,
    pub protocol: &'static str,
    pub client: SocketAddr,
    pub dst: Option<SocketAddr>,
    pub name: Option<String>,
    pub started: Instant,
    /// DNAT: the source the upstream connection used (the firewall's side of the translation).
    pub translated_source: Option<SocketAddr>,
    /// CONNECT to a name: the SNI or Host read inside the tunnel.
    pub tunnel_name: Option<String>,
}

impl Flow {
    pub(crate) fn record(
        &self,
        gw: &Gateway,
        outcome: &FirewallOutcome,
        version: &Version,
    ) -> FlowRecord {
        let mut r = outcome_record(outcome, version);
        r.instance = gw.config.instance.clone();
        r.mode = self.mode.name().into();
        r.protocol = self.protocol.into();
        r.source_ip = Some(self.client.ip());
        r.source_port = self.client.port();
        r.destination_ip = self.dst.map(|d| d.ip());
        r.destination_port = self.dst.map(|d| d.port()).unwrap_or(0);
        r.name = self.name.clone();
        r.translated_source = self.translated_source.map(|a| a.to_string());
        r.tunnel_name = self.tunnel_name.clone();
        r
    }

    /// The end record of an allowed connection that nobody is answered after, borrowed from
    /// the flow, its judgement and the gateway (nothing copied), handed to the flow log; the
    /// connection's place in flight is given up once it is durable. Only for a judgement
    /// without a shadow policy's answer (whose difference the owned record reports once).
    fn record_end_detached(
        &self,
        gw: &Gateway,
        outcome: &FirewallOutcome,
        version: &Version,
        moved: (u64, u64),
        until_durable: InFlight,
    ) {
        let parts = RecordParts::of(outcome);
        let r = self.end_view(&gw.config.instance, outcome, version, &parts, moved);
        gw.record_ref_detached(&r, until_durable);
    }

    /// [`Flow::record`] with the bytes moved and the duration, borrowed.
    fn end_view<'a>(
        &'a self,
        instance: &'a str,
        outcome: &'a FirewallOutcome,
        version: &'a Version,
        parts: &'a RecordParts,
        (sent, received): (u64, u64),
    ) -> FlowRecordRef<'a> {
        FlowRecordRef {
            instance,
            mode: self.mode.name(),
            protocol: self.protocol,
            source_ip: Some(self.client.ip()),
            source_port: self.client.port(),
            destination_ip: self.dst.map(|d| d.ip()),
            destination_port: self.dst.map(|d| d.port()).unwrap_or(0),
            name: self.name.as_deref(),
            tunnel_name: self.tunnel_name.as_deref(),
            translated_source: self.translated_source.as_ref().map(|a| Shown(a)),
            bytes_sent: sent,
            bytes_received: received,
            duration_ms: self.started.elapsed().as_millis() as u64,
            ..outcome_view(outcome, version, parts)
        }
    }

    /// A flow of `mode` from `client`, nothing else known yet.
    fn new(mode: Mode, protocol: &'static str, client: SocketAddr) -> Flow {
        Flow {
            mode,
            protocol,
            client,
            dst: None,
            name: None,
            started: Instant::now(),
            translated_source: None,
            tunnel_name: None,
        }
    }
}

/// Record a connection refused on what the gateway observed (a bad, oversized or late request
/// head or ClientHello, smuggling headers, a tunnel's name) and log it, rate-limited per
/// reason: the flow record, not the log line, is the account of every refusal.
async fn refuse(gw: &Gateway, flow: &Flow, reason: &'static str, detail: String) {
    let deny = refusal(gw, flow, reason, detail);
    let snap = gw.version();
    gw.record(flow.record(gw, &deny, &snap)).await;
}

/// The deny for a refusal, its line logged (rate-limited per reason); the caller records it.
pub(crate) fn refusal(
    gw: &Gateway,
    flow: &Flow,
    reason: &'static str,
    detail: String,
) -> FirewallOutcome {
    gw.log_limited(
        reason,
        format!(
            "{} connection from {}{} refused: {reason}: {detail}",
            flow.mode.name(),
            flow.client,
            flow.dst.map(|d| format!(" to {d}")).unwrap_or_default()
        ),
    );
    observed_deny(reason, detail)
}

/// A refusal overriding the policy's verdict `outcome` (FW-6.2: deny by default); an allow the
/// policy alone would have given is kept in the detail.
pub(crate) fn refusal_over(
    gw: &Gateway,
    flow: &Flow,
    outcome: &FirewallOutcome,
    reason: &'static str,
    detail: String,
) -> FirewallOutcome {
    let policy = if outcome.allowed {
        format!(
            "; the policy alone would allow it ({})",
            outcome.rule.as_ref().map(|r| r.path()).unwrap_or_default()
        )
    } else {
        String::new()
    };
    refusal(gw, flow, reason, format!("{detail}{policy}"))
}

pub(crate) fn key(client: SocketAddr, dst: SocketAddr) -> PacketKey {
    PacketKey {
        src: client.ip(),
        dst: dst.ip().to_canonical(),
        protocol: 6,
        src_port: client.port(),
        dst_port: dst.port(),
    }
}

/// A deny the gateway reports on the policy's behalf for an observation the spec names
/// (PAL-5.2 mismatches, FW-6.2 unreadable ClientHello): no rule, layer application.
pub(crate) fn observed_deny(reason: &'static str, detail: String) -> FirewallOutcome {
    FirewallOutcome {
        pass: FirewallPass::FirewallApplication,
        allowed: false,
        rule: None,
        reason,
        translated: None,
        snat: false,
        audit: vec![],
        detail: Some(detail.into()),
    }
}

/// Why no request head was read.
#[derive(Debug, thiserror::Error)]
enum HeadError {
    #[error("no complete request head in time")]
    Timeout,
    #[error("request head larger than {} bytes", sni::MAX_HTTP_HEAD)]
    TooLarge,
    #[error("{0}")]
    Malformed(String),
    /// The client closed after sending this many bytes.
    #[error("closed before the request head was complete")]
    Closed(usize),
    #[error(transparent)]
    Io(#[from] io::Error),
}

impl HeadError {
    /// The record's reason and the status answered (none when the client is gone).
    fn refusal(&self) -> (&'static str, Option<&'static str>) {
        match self {
            HeadError::Timeout => ("HandshakeTimeout", Some("408 Request Timeout")),
            HeadError::TooLarge => (
                "RequestHeadTooLarge",
                Some("431 Request Header Fields Too Large"),
            ),
            HeadError::Malformed(_) => ("MalformedRequest", Some("400 Bad Request")),
            HeadError::Closed(_) | HeadError::Io(_) => ("MalformedRequest", None),
        }
    }
}

/// Read until a complete HTTP request head; returns the bytes read (head and anything after).
async fn read_head(gw: &Gateway, s: &mut TcpStream) -> Result<(Vec<u8>, usize), HeadError> {
    let deadline = Instant::now() + gw.config.limits.header_timeout;
    // Read straight into the head's buffer: no chunk on the connection's stack.
    let mut buf = buffers::take();
    let mut now = read_now(s, &mut buf)?;
    let mut acked = false;
    loop {
        let n = match now.take() {
            Some(n) => n,
            None => {
                buf.reserve(4096);
                tokio::time::timeout_at(deadline.into(), s.read_buf(&mut buf))
                    .await
                    .map_err(|_| HeadError::Timeout)??
            }
        };
        if n == 0 {
            return Err(HeadError::Closed(buf.len()));
        }
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut req = httparse::Request::new(&mut headers);
        match req.parse(&buf) {
            Ok(httparse::Status::Complete(len)) => return Ok((buf, len)),
            Ok(httparse::Status::Partial) if buf.len() <= sni::MAX_HTTP_HEAD => {
                if !std::mem::replace(&mut acked, true) {
                    ack_now(s);
                }
            }
            Ok(httparse::Status::Partial) => return Err(HeadError::TooLarge),
            Err(e) => return Err(HeadError::Malformed(e.to_string())),
        }
    }
}

/// Append what the socket holds now to `buf`, without waiting (`None`: nothing yet). A new
/// connection's first bytes are usually there when its task first runs; tokio would still wait
/// for the poller to report them (a fresh socket starts not readable), a trip through the
/// scheduler and a timer per connection.
fn read_now(s: &TcpStream, buf: &mut Vec<u8>) -> io::Result<Option<usize>> {
    // A request head's first read is small: 2 KiB to zero, not the buffer's whole room.
    let len = buf.len();
    buf.resize(len + 2048, 0);
    let got = io::Read::read(&mut &*socket2::SockRef::from(s), &mut buf[len..]);
    buf.truncate(len + *got.as_ref().unwrap_or(&0));
    match got {
        Ok(n) => Ok(Some(n)),
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(None),
        Err(e) => Err(e),
    }
}

async fn respond(s: &mut TcpStream, status: &str, body: &str) -> io::Result<()> {
    let msg = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(msg.as_bytes()).await?;
    let _ = s.shutdown().await;
    Ok(())
}

/// FW-6.2 text for a denied request.
pub fn deny_text(o: &FirewallOutcome) -> String {
    match &o.rule {
        Some(r) => format!(
            "Action: Deny. Rule Collection: {}. Rule: {}.\n",
            r.rule_collection, r.rule
        ),
        None => {
            let reason = o
                .detail
                .as_ref()
                .map_or_else(|| o.reason.to_string(), ToString::to_string)
                .trim_end_matches('.')
                .to_string();
            format!("Action: Deny. Reason: {reason}.\n")
        }
    }
}

/// `host:port` (port required for CONNECT); `[v6]:port`.
fn split_authority(a: &str, default_port: Option<u16>) -> Option<(String, u16)> {
    let (host, port) = if let Some(rest) = a.strip_prefix('[') {
        let (h, p) = rest.split_once(']')?;
        (h, p.strip_prefix(':'))
    } else {
        match a.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (a, None),
        }
    };
    let port = match port {
        Some(p) => p.parse().ok()?,
        None => default_port?,
    };
    if host.is_empty() {
        return None;
    }
    Some((host.to_ascii_lowercase(), port))
}

/// What an explicit proxy request head asks for, read without holding the head: a
/// connection's state then keeps neither the request bytes nor the parser's header table
/// while it waits on the network.
enum Request {
    Connect {
        host: String,
        port: u16,
        /// Bytes the client sent after the head (the start of the tunnel).
        rest: Vec<u8>,
    },
    /// Absolute-form HTTP, rebuilt in origin-form.
    Forward {
        host: String,
        port: u16,
        first: Vec<u8>,
        /// The head announces a body.
        body: bool,
    },
    Refused {
        reason: &'static str,
        detail: String,
        status: &'static str,
        body: String,
    },
}

/// `buf` (the head and what followed) becomes the tunnel's first bytes, or goes back.
fn request(mut buf: Vec<u8>, head_len: usize) -> Request {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut req = httparse::Request::new(&mut headers);
    let _ = req.parse(&buf);
    let method = req.method.unwrap_or("");
    let target = req.path.unwrap_or("");
    let malformed = |detail: &str, body: &str| Request::Refused {
        reason: "MalformedRequest",
        detail: detail.into(),
        status: "400 Bad Request",
        body: body.into(),
    };
    // The gateway judges one reading of the request; a server reading it another way would
    // serve a request nobody judged (RFC 9112 §3.2, §6.3).
    if let Some(why) = sni::framing_problem(req.headers) {
        let refused = Request::Refused {
            reason: "AmbiguousRequest",
            detail: format!("{why} ({method} {target})"),
            status: "400 Bad Request",
            body: format!("{why}\n"),
        };
        buffers::give(buf);
        return refused;
    }
    if method.eq_ignore_ascii_case("CONNECT") {
        return match split_authority(target, None) {
            Some((host, port)) => {
                buf.drain(..head_len);
                Request::Connect {
                    host,
                    port,
                    rest: buf,
                }
            }
            None => malformed("CONNECT needs host:port", "CONNECT needs host:port\n"),
        };
    }
    // Absolute-form forwarding of plain HTTP.
    let Some(after) = target
        .strip_prefix("http://")
        .or_else(|| target.strip_prefix("HTTP://"))
    else {
        return malformed(
            "not an absolute-form request or CONNECT",
            "this is a proxy: send absolute-form requests (http://host/path) or CONNECT\n",
        );
    };
    let (authority, path) = match after.find(['/', '?']) {
        Some(i) => (&after[..i], &after[i..]),
        None => (after, "/"),
    };
    let path = if path.starts_with('?') {
        format!("/{path}")
    } else {
        path.to_string()
    };
    let Some((host, port)) = split_authority(authority, Some(80)) else {
        return malformed("bad request target", "bad request target\n");
    };
    // Rebuild the head in origin-form: the URI's authority wins over any Host header
    // (RFC 9112 §3.2.2), hop-by-hop headers go, and the server closes after one response so
    // every request on the client's connection is decided on its own.
    let mut head = format!(
        "{method} {path} HTTP/1.{}\r\nHost: {authority}\r\n",
        req.version.unwrap_or(1)
    );
    for h in req.headers.iter() {
        let n = h.name.to_ascii_lowercase();
        if matches!(
            n.as_str(),
            "host" | "connection" | "proxy-connection" | "keep-alive" | "proxy-authorization"
        ) {
            continue;
        }
        head.push_str(h.name);
        head.push_str(": ");
        head.push_str(&String::from_utf8_lossy(h.value));
        head.push_str("\r\n");
    }
    head.push_str("Connection: close\r\n\r\n");
    let body = sni::announces_body(req.headers);
    let mut first = head.into_bytes();
    first.extend_from_slice(&buf[head_len..]);
    buffers::give(buf);
    Request::Forward {
        host,
        port,
        first,
        body,
    }
}

async fn explicit(gw: &Arc<Gateway>, mut client: TcpStream, peer: SocketAddr) -> io::Result<()> {
    // Made where a refusal needs it, so it takes no room in a tunnel's state.
    let flow = || Flow::new(Mode::Explicit, "HTTP", peer);
    let (buf, head_len) = match read_head(gw, &mut client).await {
        Ok(x) => x,
        Err(HeadError::Io(e)) => return Err(e),
        // Connected and closed without a byte: nothing was asked, nothing refused.
        Err(HeadError::Closed(0)) => return Ok(()),
        Err(e) => {
            let (reason, status) = e.refusal();
            refuse(gw, &flow(), reason, e.to_string()).await;
            if let Some(status) = status {
                let _ = respond(&mut client, status, &format!("{e}\n")).await;
            }
            return Ok(());
        }
    };
    let asked = request(buf, head_len);
    let (host, port, first) = match asked {
        Request::Connect { host, port, rest } => {
            return connect(gw, client, peer, host, port, rest).await
        }
        Request::Refused {
            reason,
            detail,
            status,
            body,
        } => {
            refuse(gw, &flow(), reason, detail).await;
            return respond(&mut client, status, &body).await;
        }
        Request::Forward {
            host,
            port,
            first,
            body,
        } => {
            if body {
                // The server answers once it has the body: nothing of ours would carry the
                // ACK the client may wait for before sending it.
                ack_now(&client);
            }
            (host, port, first)
        }
    };
    let Some(Allowed {
        flow,
        server,
        outcome,
        snap,
        key,
    }) = Box::pin(judge_and_dial(
        gw,
        &mut client,
        peer,
        &host,
        port,
        AppProtocol::Http,
        Asked::Request,
    ))
    .await?
    else {
        return Ok(());
    };
    relay(
        gw,
        flow,
        client,
        server,
        &outcome,
        &snap,
        key,
        Some(host.clone()),
        first,
        // The protocol it was judged as: a reload re-judges it the same way (FW-11).
        Some(AppProtocol::Http),
    )
    .await
}

/// Resolve a name the client asked for, with the gateway's resolver; on failure the deny is
/// recorded (PAL-5.2 `NameResolutionFailed`) and `None` returned.
async fn resolve_for_dial(
    gw: &Gateway,
    flow: &mut Flow,
    host: &str,
    port: u16,
) -> Option<SocketAddr> {
    match gw.resolve(host).await {
        Ok(ips) => {
            let dst = SocketAddr::new(ips[0], port);
            flow.dst = Some(dst);
            Some(dst)
        }
        Err(e) => {
            let detail = match e {
                ResolveError::NotFound => format!("`{host}` has no address"),
                ResolveError::Failed(m) => format!("`{host}`: {m}"),
            };
            let snap = gw.version();
            let o = observed_deny("NameResolutionFailed", detail);
            gw.record(flow.record(gw, &o, &snap)).await;
            None
        }
    }
}

/// The client's address when the connection or session to `dst` must leave from it
/// (`--keep-source-to`), else `None` (it leaves from this host's address).
pub(crate) fn kept_source(gw: &Gateway, client: SocketAddr, dst: SocketAddr) -> Option<IpAddr> {
    let ip = client.ip().to_canonical();
    let keep = ip.is_ipv4() == dst.is_ipv4()
        && gw
            .config
            .keep_source_to
            .iter()
            .any(|n| n.contains(&dst.ip().to_canonical()));
    keep.then_some(ip)
}

/// [`dial`] from `source` when it is given: a transparent (`IP_TRANSPARENT`) socket bound to
/// that non-local address, any port, so the next hop sees the client's address.
pub(crate) async fn dial_from(
    gw: &Gateway,
    source: Option<IpAddr>,
    dst: SocketAddr,
    client_first: bool,
) -> io::Result<TcpStream> {
    let Some(ip) = source else {
        return dial(gw, dst, client_first).await;
    };
    let sock = upstream_socket(dst, client_first)?;
    if dst.is_ipv4() {
        sock.set_ip_transparent_v4(true)?;
    } else {
        sock.set_ip_transparent_v6(true)?;
    }
    sock.bind(&SocketAddr::new(ip, 0).into())?;
    connect_within(gw, sock, dst).await
}

/// A TCP connection to `dst`, within the connect timeout; `client_first`: the client's bytes
/// go to it before any of its own are relayed (see [`upstream_socket`]).
pub(crate) async fn dial(
    gw: &Gateway,
    dst: SocketAddr,
    client_first: bool,
) -> io::Result<TcpStream> {
    connect_within(gw, upstream_socket(dst, client_first)?, dst).await
}

/// A non-blocking TCP socket for an upstream at `dst`, with `TCP_NODELAY`. With
/// `client_first` (the client's bytes go upstream before any of the server's come back) it
/// holds its ACKs ([`hold_acks`]): the handshake's last ACK then rides on those bytes.
fn upstream_socket(dst: SocketAddr, client_first: bool) -> io::Result<socket2::Socket> {
    let sock = socket2::Socket::new(
        socket2::Domain::for_address(dst),
        socket2::Type::STREAM.nonblocking().cloexec(),
        None,
    )?;
    let _ = sock.set_tcp_nodelay(true);
    if client_first {
        hold_acks(&sock);
    }
    Ok(sock)
}

/// Linux acknowledges a new connection's first segments at once, each with a packet of its
/// own. A proxy answers or forwards almost every segment it reads, so its sockets hold the ACK
/// for that answer to carry (`TCP_QUICKACK` off, as HAProxy's `tcp-smart-accept` and
/// `tcp-smart-connect`). On an accepted socket the 200 then carries the ACK of the CONNECT
/// head. On an upstream socket set so before `connect(2)`, the handshake's last ACK waits (up
/// to 200 ms) for the client's first bytes, so only where those come first: the server's side
/// of the handshake completes with them. Where the gateway waits for more of the client's
/// bytes before anything goes back, [`ack_now`] acknowledges at once; anywhere else a held ACK
/// finds no ride only until the delayed-ACK timer, which ends the holding. Best effort: a
/// socket that refuses behaves as before.
fn hold_acks(s: &impl std::os::fd::AsFd) {
    let _ = socket2::SockRef::from(s).set_tcp_quickack(false);
}

/// Acknowledge what `s` has received, and stop holding ACKs: the gateway waits for more of
/// the client's bytes (the rest of a head, a request body) before anything goes back, and a
/// client that buffers its small writes until the last is acknowledged (Nagle) would wait
/// too, for the delayed-ACK timer.
fn ack_now(s: &TcpStream) {
    let _ = socket2::SockRef::from(s).set_tcp_quickack(true);
}

/// Connect `sock` to `dst` within the connect timeout. An upstream on this host accepts within
/// the `connect(2)` itself (the loopback handshake runs in the call): its stream is returned at
/// once, not after the poller reports it writable, which would cost the task a trip through
/// the scheduler and a timer. Anywhere else costs one `getpeername(2)` more.
async fn connect_within(
    gw: &Gateway,
    sock: socket2::Socket,
    dst: SocketAddr,
) -> io::Result<TcpStream> {
    match sock.connect(&dst.into()) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
        Err(e) => return Err(e),
    }
    let connected = sock.peer_addr().is_ok();
    let s = TcpStream::from_std(sock.into())?;
    if !connected {
        tokio::time::timeout(gw.config.limits.connect_timeout, s.writable())
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "connect timeout"))??;
        if let Some(e) = s.take_error()? {
            return Err(e);
        }
    }
    Ok(s)
}

async fn connect(
    gw: &Arc<Gateway>,
    mut client: TcpStream,
    peer: SocketAddr,
    host: String,
    port: u16,
    rest: Vec<u8>,
) -> io::Result<()> {
    if let Ok(ip) = host.parse::<IpAddr>() {
        // CONNECT to an address: decide like a transparent connection, on the name the client
        // then sends (SNI / Host), checked against this address (PAL-5.2).
        client
            .write_all(b"HTTP/1.1 200 Connection Established\r\n\r\n")
            .await?;
        // Boxed: its stages (the ClientHello, the PAL-5.2 resolve) would otherwise make every
        // named CONNECT tunnel's state as large as this rarer path's.
        return Box::pin(by_first_bytes(
            gw,
            client,
            peer,
            SocketAddr::new(ip.to_canonical(), port),
            Mode::Explicit,
            rest,
        ))
        .await;
    }
    let app = AppProtocol::infer(port);
    // Boxed, as the tunnel's inspection below: a future is as large as its largest stage, and
    // these stages (resolving, dialing, reading the ClientHello) are over before the relay, so
    // an established tunnel keeps only the relay's state.
    let Some(Allowed {
        mut flow,
        server,
        outcome,
        snap,
        key,
    }) = Box::pin(judge_and_dial(
        gw,
        &mut client,
        peer,
        &host,
        port,
        app,
        Asked::Tunnel,
    ))
    .await?
    else {
        return Ok(());
    };
    client
        .write_all(b"HTTP/1.1 200 Connection Established\r\n\r\n")
        .await?;
    let (outcome, snap, name, app, first) = if inspected(&outcome, app) {
        let mut buf = rest;
        let seen = Box::pin(inspect(gw, &mut client, &mut buf)).await;
        let first = (&outcome, &snap, app);
        let (o, s) = Box::pin(tunnel_verdict(gw, &mut flow, &host, key, seen, first)).await;
        if !o.allowed {
            gw.record(flow.record(gw, &o, &s)).await;
            reset(&client);
            return Ok(());
        }
        // The CONNECT name is the tunnel's name in the common case: no copy of it.
        let judged_on = match flow.tunnel_name.as_deref() {
            Some(inner) if inner != host => inner.to_string(),
            _ => host,
        };
        let app = flow_app(flow.protocol).unwrap_or(app);
        (o, s, judged_on, app, buf)
    } else {
        (outcome, snap, host, app, rest)
    };
    relay(
        gw,
        flow,
        client,
        server,
        &outcome,
        &snap,
        key,
        Some(name),
        first,
        Some(app),
    )
    .await
}

fn flow_app(protocol: &str) -> Option<AppProtocol> {
    match protocol {
        "HTTP" => Some(AppProtocol::Http),
        "HTTPS" => Some(AppProtocol::Https),
        "MSSQL" => Some(AppProtocol::Mssql),
        _ => None,
    }
}

/// Judge what a CONNECT tunnel to `connect_name` (allowed by an application rule) carries:
/// another name than the CONNECT name is denied (`--tunnel-sni match`, the default) or judged
/// by the policy on its own and checked against the dialed address (`allowed`); no name,
/// another protocol or unreadable bytes are judged as the transparent listener judges them.
/// The tunnel's flow is judged again by the snapshot in force now, so a reload while the client
/// took its time is not missed; when the tunnel names the CONNECT name with the protocol first
/// judged and all the first judgement depended on is unchanged ([`Gateway::judgement_holds`]),
/// the second judgement would repeat the `first` (outcome, version, protocol), which is
/// returned instead. Fills the flow's tunnel name and
/// protocol.
async fn tunnel_verdict(
    gw: &Gateway,
    flow: &mut Flow,
    connect_name: &str,
    key: PacketKey,
    seen: Seen,
    first: (&FirewallOutcome, &Version, AppProtocol),
) -> (FirewallOutcome, Version) {
    // The flow keeps the tunnel's name (for its record); it is judged from there.
    flow.tunnel_name = seen.host;
    if let Some(a) = seen.app {
        flow.protocol = app_name(a);
    }
    let host = flow.tunnel_name.as_deref();
    if let Some((reason, detail)) = seen.problem {
        let detail = format!("inside CONNECT {connect_name}: {detail}");
        return (refusal(gw, flow, reason, detail), gw.version());
    }
    let same_name =
        host.map(|h| h.trim_end_matches('.')) == Some(connect_name.trim_end_matches('.'));
    let (first_outcome, first_snap, first_app) = first;
    if same_name && !seen.ech && seen.app == Some(first_app) && gw.judgement_holds(first_snap) {
        return (first_outcome.clone(), first_snap.clone());
    }
    if let (Some(inner), Some(inner_app)) = (host, seen.app) {
        if !same_name && gw.config.tunnel_sni == TunnelSni::Match {
            let (reason, what) = if inner_app == AppProtocol::Http {
                ("TunnelHostMismatch", "Host")
            } else {
                ("TunnelSniMismatch", "SNI")
            };
            let mut detail = format!(
                "CONNECT {connect_name} carries {what} {inner}; the tunnel's name must be the CONNECT name"
            );
            // The name compared was an ECH outer name: the record says so, as an allow would.
            if seen.ech {
                detail = format!("{}; {detail}", EchPolicy::outer_sni_note(Some(inner)));
            }
            return (refusal(gw, flow, reason, detail), gw.version());
        }
    }
    let input = FirewallInput {
        key,
        host,
        app_protocol: seen.app,
    };
    let (mut outcome, snap) = gw.judge(&input);
    if seen.ech {
        note_ech(&mut outcome, host);
    }
    if outcome.allowed && outcome.pass == FirewallPass::FirewallApplication && !same_name {
        if let Some(inner) = host {
            let dst = SocketAddr::new(key.dst, key.dst_port);
            address_check(gw, &mut outcome, inner, dst, seen.app).await;
        }
    }
    (outcome, snap)
}

/// What the explicit proxy allowed for a named destination, with the upstream connection.
struct Allowed {
    flow: Flow,
    server: TcpStream,
    outcome: FirewallOutcome,
    snap: Version,
    key: PacketKey,
}

/// What the explicit proxy's client asked for.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Asked {
    /// An HTTP request to forward: denied with 470, its head goes upstream first.
    Request,
    /// A CONNECT tunnel: denied with 403, dialed to a DNAT rule's translation when one allows
    /// it.
    Tunnel,
}

/// Whether a tunnel the explicit proxy allowed is inspected before it relays: an application
/// rule allowed the name, so the tunnel must carry that name (network and DNAT rules judged
/// the 5-tuple and need none). MSSQL's TDS starts with a prelogin packet, not a ClientHello:
/// there is no name to read up front.
fn inspected(outcome: &FirewallOutcome, app: AppProtocol) -> bool {
    outcome.pass == FirewallPass::FirewallApplication && app != AppProtocol::Mssql
}

/// The explicit proxy's decision for `host:port`: resolve it with the gateway's own resolver,
/// judge it as `app`, and dial what was allowed. `None` when the client has already been
/// answered — unresolvable name, a deny, an unreachable upstream — each recorded.
async fn judge_and_dial(
    gw: &Arc<Gateway>,
    client: &mut TcpStream,
    peer: SocketAddr,
    host: &str,
    port: u16,
    app: AppProtocol,
    asked: Asked,
) -> io::Result<Option<Allowed>> {
    let mut flow = Flow {
        mode: Mode::Explicit,
        protocol: app_name(app),
        client: peer,
        dst: None,
        name: Some(host.to_string()),
        started: Instant::now(),
        tunnel_name: None,
        translated_source: None,
    };
    let Some(dst) = resolve_for_dial(gw, &mut flow, host, port).await else {
        respond(
            client,
            "502 Bad Gateway",
            &format!("Action: Deny. Reason: {host} could not be resolved.\n"),
        )
        .await?;
        return Ok(None);
    };
    let input = FirewallInput {
        key: key(peer, dst),
        host: Some(host),
        app_protocol: Some(app),
    };
    let (outcome, snap) = gw.judge(&input);
    if !outcome.allowed {
        gw.record(flow.record(gw, &outcome, &snap)).await;
        let status = match asked {
            Asked::Request => "470 status code 470",
            Asked::Tunnel => "403 Forbidden",
        };
        respond(client, status, &deny_text(&outcome)).await?;
        return Ok(None);
    }
    let (dial_to, client_first) = match asked {
        Asked::Request => (dst, true),
        Asked::Tunnel => (
            translated(&outcome).unwrap_or(dst),
            inspected(&outcome, app),
        ),
    };
    match dial(gw, dial_to, client_first).await {
        Ok(server) => Ok(Some(Allowed {
            flow,
            server,
            outcome,
            snap,
            key: input.key,
        })),
        Err(e) => {
            let mut r = flow.record(gw, &outcome, &snap);
            r.detail = Some(format!("upstream {dial_to}: {e}"));
            gw.record(r).await;
            respond(
                client,
                "502 Bad Gateway",
                &format!("upstream {dial_to}: {e}\n"),
            )
            .await?;
            Ok(None)
        }
    }
}

fn app_name(a: AppProtocol) -> &'static str {
    match a {
        AppProtocol::Http => "HTTP",
        AppProtocol::Https => "HTTPS",
        AppProtocol::Mssql => "MSSQL",
    }
}

pub(crate) fn translated(o: &FirewallOutcome) -> Option<SocketAddr> {
    o.translated.map(|(ip, p)| SocketAddr::new(ip, p))
}

/// The original destination of a redirected connection.
fn original_dst(s: &TcpStream) -> io::Result<SocketAddr> {
    let sock = socket2::SockRef::from(s);
    let local = s.local_addr()?;
    // An IPv4 connection to a dual-stack listener has a mapped local address; its NAT entry is
    // IPv4's.
    let addr = if local.ip().to_canonical().is_ipv4() {
        sock.original_dst_v4()?
    } else {
        sock.original_dst_v6()?
    };
    addr.as_socket()
        .ok_or_else(|| io::Error::other("original destination is not an IP socket address"))
}

/// Was this connection made to the transparent listener itself rather than handed to it?
fn addressed_to_listener(gw: &Gateway, client: &TcpStream, dst: SocketAddr) -> bool {
    match gw.config.transparent_mode {
        crate::TransparentMode::Redirect => {
            client.local_addr().ok().map(crate::canonical) == Some(dst)
        }
        // Every TPROXY'd connection has its original destination as local address: only one to
        // the listener's port on an address of this host is the listener's own.
        crate::TransparentMode::Tproxy => gw.config.transparent.is_some_and(|l| {
            l.port() == dst.port()
                && (l.ip() == dst.ip()
                    || (l.ip().is_unspecified()
                        && std::net::UdpSocket::bind((dst.ip(), 0)).is_ok()))
        }),
    }
}

async fn transparent(gw: &Arc<Gateway>, client: TcpStream, peer: SocketAddr) -> io::Result<()> {
    let original = match gw.config.transparent_mode {
        crate::TransparentMode::Redirect => original_dst(&client),
        // TPROXY leaves the connection untranslated: it is addressed to the original destination.
        crate::TransparentMode::Tproxy => client.local_addr(),
    };
    let dst = match original {
        Ok(d) => crate::canonical(d),
        Err(e) => {
            // Without a NAT entry there is nothing to relay to: a connection not redirected.
            let flow = Flow::new(Mode::Transparent, "TCP", peer);
            refuse(
                gw,
                &flow,
                "NotRedirected",
                format!("no original destination: {e}"),
            )
            .await;
            return Ok(());
        }
    };
    if addressed_to_listener(gw, &client, dst) {
        // Not redirected: someone dialed the listener itself. Relaying would loop.
        let o = observed_deny(
            "NotRedirected",
            "connection addressed to the transparent listener itself".into(),
        );
        let flow = Flow {
            mode: Mode::Transparent,
            protocol: "TCP",
            client: peer,
            dst: Some(dst),
            name: None,
            started: Instant::now(),
            tunnel_name: None,
            translated_source: None,
        };
        let snap = gw.version();
        gw.record(flow.record(gw, &o, &snap)).await;
        return Ok(());
    }
    by_first_bytes(gw, client, peer, dst, Mode::Transparent, buffers::take()).await
}

/// Decide a connection to `dst`: first at L4 (DNAT and network rules need no name); if those
/// pass it on, read the ClientHello or HTTP head, decide on the name, check the name resolves
/// to `dst` (PAL-5.2), then relay (the bytes read are forwarded first, TLS is never
/// terminated).
async fn by_first_bytes(
    gw: &Arc<Gateway>,
    mut client: TcpStream,
    peer: SocketAddr,
    dst: SocketAddr,
    mode: Mode,
    mut buf: Vec<u8>,
) -> io::Result<()> {
    let mut flow = Flow {
        mode,
        protocol: "TCP",
        client: peer,
        dst: Some(dst),
        name: None,
        started: Instant::now(),
        tunnel_name: None,
        translated_source: None,
    };
    let k = key(peer, dst);
    let l4 = FirewallInput {
        key: k,
        host: None,
        app_protocol: None,
    };
    let (outcome, snap) = gw.judge(&l4);
    if matches!(
        outcome.pass,
        FirewallPass::FirewallNetwork | FirewallPass::FirewallDnat
    ) || outcome.reason == "NoValidPolicy"
    {
        if !outcome.allowed {
            gw.record(flow.record(gw, &outcome, &snap)).await;
            reset(&client);
            return Ok(());
        }
        let to = translated(&outcome).unwrap_or(dst);
        let client_first = !buf.is_empty();
        let server = match dial_from(gw, keep_source(gw, mode, peer, to), to, client_first).await {
            Ok(s) => s,
            Err(e) => {
                let mut r = flow.record(gw, &outcome, &snap);
                r.detail = Some(format!("upstream {to}: {e}"));
                gw.record(r).await;
                reset(&client);
                return Ok(());
            }
        };
        return relay(
            gw, flow, client, server, &outcome, &snap, k, None, buf, None,
        )
        .await;
    }
    // Application layer: read the first bytes (bounded in size and time).
    let Seen {
        host,
        app,
        problem,
        ech,
    } = inspect(gw, &mut client, &mut buf).await;
    flow.name = host.clone();
    flow.protocol = app.map(app_name).unwrap_or("TCP");
    let input = FirewallInput {
        key: k,
        host: host.as_deref(),
        app_protocol: app,
    };
    let (mut outcome, snap) = gw.judge(&input);
    if ech {
        note_ech(&mut outcome, host.as_deref());
    }
    let refused = problem.as_ref().map(|p| p.0);
    if let Some((reason, detail)) = problem {
        outcome = refusal_over(gw, &flow, &outcome, reason, detail);
    }
    if outcome.allowed && outcome.pass == FirewallPass::FirewallApplication {
        if let Some(name) = &host {
            address_check(gw, &mut outcome, name, dst, app).await;
        }
    }
    if !outcome.allowed {
        gw.record(flow.record(gw, &outcome, &snap)).await;
        if app == Some(AppProtocol::Http) && mode == Mode::Transparent {
            let status = if refused == Some("AmbiguousRequest") {
                "400 Bad Request"
            } else {
                "470 status code 470"
            };
            let _ = respond(&mut client, status, &deny_text(&outcome)).await;
        } else {
            reset(&client);
        }
        return Ok(());
    }
    let to = translated(&outcome).unwrap_or(dst);
    // What was inspected goes first.
    let server = match dial_from(gw, keep_source(gw, mode, peer, to), to, true).await {
        Ok(s) => s,
        Err(e) => {
            let mut r = flow.record(gw, &outcome, &snap);
            r.detail = Some(format!("upstream {to}: {e}"));
            gw.record(r).await;
            reset(&client);
            return Ok(());
        }
    };
    relay(gw, flow, client, server, &outcome, &snap, k, host, buf, app).await
}

/// The source a transparent connection keeps upstream (the explicit proxy's clients chose to
/// talk to the proxy: it dials from its own address).
fn keep_source(gw: &Gateway, mode: Mode, client: SocketAddr, to: SocketAddr) -> Option<IpAddr> {
    (mode == Mode::Transparent)
        .then(|| kept_source(gw, client, to))
        .flatten()
}

/// What the first bytes of a connection say it is for.
struct Seen {
    host: Option<String>,
    app: Option<AppProtocol>,
    /// An observation the gateway denies on by itself, with its reason and detail: ECH and
    /// unreadable or late ClientHellos (FW-6.2), smuggling headers (RFC 9112).
    problem: Option<(&'static str, String)>,
    /// An Encrypted Client Hello judged by its outer name (`--ech outer-sni`).
    ech: bool,
}

/// Say in the outcome's detail that the name judged was an ECH outer name.
pub(crate) fn note_ech(outcome: &mut FirewallOutcome, outer: Option<&str>) {
    let note = EchPolicy::outer_sni_note(outer);
    outcome.detail = Some(match &outcome.detail {
        Some(d) => format!("{note}; {d}").into(),
        None => note.into(),
    });
}

/// Read the ClientHello or HTTP request head at the start of a connection, appending to `buf`
/// (bounded in size, and in time by the handshake timeout).
async fn inspect(gw: &Gateway, client: &mut TcpStream, buf: &mut Vec<u8>) -> Seen {
    let deadline = Instant::now() + gw.config.limits.handshake_timeout;
    let mut acked = false;
    let peeked = loop {
        let p = sni::peek(buf);
        if p != Peeked::NeedMore {
            break Some(p);
        }
        if !buf.is_empty() && !std::mem::replace(&mut acked, true) {
            ack_now(client);
        }
        // Straight into `buf` (the parser bounds its length): no chunk to copy from, and no
        // second buffer held while the client takes its time.
        buf.reserve(4096);
        match tokio::time::timeout_at(deadline.into(), client.read_buf(buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => {
                break Some(Peeked::Malformed("closed before the first request"))
            }
            Ok(Ok(_)) => {}
            Err(_) => break None,
        }
    };
    let problem = |reason, detail: String| Seen {
        host: None,
        app: None,
        problem: Some((reason, detail)),
        ech: false,
    };
    let Some(peeked) = peeked else {
        return problem(
            "HandshakeTimeout",
            "no ClientHello or request head in time".into(),
        );
    };
    if matches!(peeked, Peeked::Http { .. }) && sni::head_announces_body(buf) {
        // As for a forwarded request with a body (see `explicit`).
        ack_now(client);
    }
    match peeked {
        Peeked::Tls { sni, ech: true } if gw.config.ech == EchPolicy::Deny => Seen {
            problem: Some((
                "EncryptedClientHello",
                format!(
                    "Encrypted Client Hello (outer SNI {}): the real name is hidden",
                    sni.as_deref().unwrap_or("none")
                ),
            )),
            host: sni,
            app: Some(AppProtocol::Https),
            ech: true,
        },
        Peeked::Tls { sni, ech } => Seen {
            host: sni,
            app: Some(AppProtocol::Https),
            problem: None,
            ech,
        },
        Peeked::Http { host } => Seen {
            problem: sni::head_framing_problem(buf).map(|why| ("AmbiguousRequest", why.into())),
            host,
            app: Some(AppProtocol::Http),
            ech: false,
        },
        Peeked::Unknown => Seen {
            host: None,
            app: None,
            problem: None,
            ech: false,
        },
        Peeked::Malformed(why) => problem("UnparseableClientHello", why.to_string()),
        Peeked::NeedMore => unreachable!("the loop ends on anything else"),
    }
}

/// PAL-5.2: the name must resolve, through the gateway's resolver, to the dialed address, as
/// the allowing rule's `addressCheck` (else the gateway's default) asks: `Enforce` turns
/// `allowed` into a deny, `Audit` keeps the allow and says in its detail what it would deny.
pub(crate) async fn address_check(
    gw: &Gateway,
    allowed: &mut FirewallOutcome,
    name: &str,
    dst: SocketAddr,
    app: Option<AppProtocol>,
) {
    let check = allowed.address_check(gw.config.address_check);
    if check == AddressCheck::Off {
        return;
    }
    let mismatch = if app == Some(AppProtocol::Http) {
        "HostAddressMismatch"
    } else {
        "SniAddressMismatch"
    };
    let (reason, detail) = match gw.resolve(name).await {
        Ok(ips) if ips.iter().any(|ip| ip.to_canonical() == dst.ip()) => return,
        Ok(ips) => (
            mismatch,
            format!(
                "`{name}` resolves to {}, not to the dialed {}",
                ips.iter()
                    .map(|i| i.to_string())
                    .collect::<Vec<_>>()
                    .join(", "),
                dst.ip()
            ),
        ),
        Err(_) => (
            "NameResolutionFailed",
            format!(
                "`{name}` could not be resolved to check the dialed {}",
                dst.ip()
            ),
        ),
    };
    if check == AddressCheck::Audit {
        let audit = format!("addressCheck Audit: would deny ({reason}): {detail}");
        log(format!("{audit} → {dst}"));
        let matched = allowed
            .detail
            .as_ref()
            .map(|d| format!("{d}; "))
            .unwrap_or_default();
        allowed.detail = Some(format!("{matched}{audit}").into());
        return;
    }
    *allowed = observed_deny(reason, detail);
}

/// Close with a TCP reset (a denied TLS connection is reset, FW-6.2).
pub(crate) fn reset(s: &TcpStream) {
    let _ = socket2::SockRef::from(s).set_linger(Some(Duration::ZERO));
}

/// Relay an allowed connection, registered for re-judging on reload and for closing at
/// shutdown; write its record when it ends (with bytes and duration), and a second record if a
/// reload closed it. One the shutdown closed has reason `Shutdown` in its record.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn relay(
    gw: &Arc<Gateway>,
    flow: Flow,
    client: TcpStream,
    server: TcpStream,
    outcome: &FirewallOutcome,
    snap: &Version,
    key: PacketKey,
    host: Option<String>,
    first: Vec<u8>,
    app: Option<AppProtocol>,
) -> io::Result<()> {
    let entry = Arc::new(Established {
        key,
        host,
        app,
        cancel: Default::default(),
        closed_by: Mutex::new(None),
    });
    relaying();
    let id = gw.register(entry.clone());
    let result = splice(gw, client, server, first, &entry).await;
    sockets_closed();
    gw.unregister(id);
    let (sent, received) = match &result {
        Ok(x) => *x,
        Err(_) => (0, 0),
    };
    gw.metrics.bytes_sent.inc_by(sent);
    gw.metrics.bytes_received.inc_by(received);
    let closed = entry
        .closed_by
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .take();
    if closed.is_none() && snap.shadow.is_none() {
        // The common end: nothing waits for this record but a drain, and it is written
        // from the connection's own state without copying it into an owned record.
        if let Some(counted) = take_in_flight() {
            flow.record_end_detached(gw, outcome, snap, (sent, received), counted);
            return result.map(|_| ());
        }
    }
    let mut r = flow.record(gw, outcome, snap);
    r.bytes_sent = sent;
    r.bytes_received = received;
    r.duration_ms = flow.started.elapsed().as_millis() as u64;
    if let Some(Closed::Shutdown) = closed {
        shutdown_record(&mut r);
    }
    if !matches!(closed, Some(Closed::Reload(..))) {
        // Nothing waits for this record but a drain: the task ends here, its place in
        // flight once the record is durable.
        match take_in_flight() {
            Some(counted) => gw.record_detached(r, counted),
            None => gw.record(r).await,
        }
        return result.map(|_| ());
    }
    gw.record(r).await;
    if let Some(Closed::Reload(o, new_snap)) = closed {
        let mut r = flow.record(gw, &o, &new_snap);
        r.mode = "reload".into();
        r.detail = Some(format!(
            "established connection closed: the reloaded policy denies it (FW-11){}",
            o.detail.map(|d| format!("; {d}")).unwrap_or_default()
        ));
        gw.record(r).await;
    }
    result.map(|_| ())
}

/// The end record of a connection the shutdown closed: the deciding rule and the bytes stay,
/// the reason says why it ended (the policy's reason goes into the detail).
pub(crate) fn shutdown_record(r: &mut FlowRecord) {
    r.detail = Some(format!(
        "closed by the gateway's shutdown at the end of the grace period; decided {}{}",
        r.reason,
        r.detail
            .take()
            .map(|d| format!(": {d}"))
            .unwrap_or_default()
    ));
    r.reason = "Shutdown".into();
}

/// Copy both ways until both sides finish, an error, the idle timeout, or a reload or the
/// shutdown cancels.
/// Memory: a buffer (from [`buffers`]) per direction only while that direction has bytes to
/// move; an idle tunnel holds none.
/// Syscalls: the sockets are borrowed, not split into owned halves (whose drop shuts the
/// write side down again), and a direction that ends after the other one does not half-close
/// its peer: closing both sockets sends the FINs anyway.
async fn splice(
    gw: &Gateway,
    mut client: TcpStream,
    mut server: TcpStream,
    first: Vec<u8>,
    entry: &Established,
) -> io::Result<(u64, u64)> {
    let sent = AtomicU64::new(0);
    let received = AtomicU64::new(0);
    let start = Instant::now();
    let last = AtomicU64::new(0);
    if !first.is_empty() {
        server.write_all(&first).await?;
        sent.fetch_add(first.len() as u64, Ordering::Relaxed);
    }
    buffers::give(first);
    let idle = gw.config.limits.idle_timeout;
    let mut cancelled = false;
    {
        let (mut cr, mut cw) = client.split();
        let (mut sr, mut sw) = server.split();
        let one_done = AtomicBool::new(false);
        let up = pump(&mut cr, &mut sw, &sent, &last, start, &one_done);
        let down = pump(&mut sr, &mut cw, &received, &last, start, &one_done);
        // One timer for the tunnel's life, pushed back while bytes move.
        let quiet = tokio::time::sleep(idle);
        let cancel = entry.cancel.raised();
        tokio::pin!(up, down, quiet, cancel);
        let (mut up_done, mut down_done) = (false, false);
        loop {
            tokio::select! {
                r = &mut up, if !up_done => { up_done = true; if r.is_err() { break } }
                r = &mut down, if !down_done => { down_done = true; if r.is_err() { break } }
                _ = &mut cancel => { cancelled = true; break }
                _ = &mut quiet => {
                    let moved = Duration::from_millis(last.load(Ordering::Relaxed));
                    let silent = start.elapsed().saturating_sub(moved);
                    if silent >= idle { break }
                    quiet.as_mut().reset(tokio::time::Instant::from_std(start + moved + idle));
                }
            }
            if up_done && down_done {
                break;
            }
        }
    }
    if cancelled {
        let _ = socket2::SockRef::from(&client).set_linger(Some(Duration::ZERO));
        let _ = socket2::SockRef::from(&server).set_linger(Some(Duration::ZERO));
    }
    Ok((sent.into_inner(), received.into_inner()))
}

/// Move bytes one way until the end of stream; then half-close the other side, unless the
/// other direction has ended already (`one_done`).
async fn pump(
    r: &mut ReadHalf<'_>,
    w: &mut WriteHalf<'_>,
    count: &AtomicU64,
    last: &AtomicU64,
    start: Instant,
    one_done: &AtomicBool,
) -> io::Result<()> {
    loop {
        let buf = read_chunk(r).await?;
        if buf.is_empty() {
            if !one_done.swap(true, Ordering::Relaxed) {
                w.shutdown().await?;
            }
            return Ok(());
        }
        w.write_all(&buf).await?;
        count.fetch_add(buf.len() as u64, Ordering::Relaxed);
        last.store(start.elapsed().as_millis() as u64, Ordering::Relaxed);
        buffers::give(buf);
    }
}

/// What the socket holds now (empty at end of stream), in a buffer taken once it is readable
/// and given back by the caller: a direction waiting for bytes holds none. A short read
/// clears the socket's readiness (tokio's own read does), so a drained socket is not read
/// once more only to hear `EAGAIN`.
async fn read_chunk(r: &mut ReadHalf<'_>) -> io::Result<Vec<u8>> {
    std::future::poll_fn(|cx| {
        ready!(r.as_ref().poll_read_ready(cx))?;
        let mut buf = buffers::take();
        let polled = {
            let read = r.read_buf(&mut buf);
            tokio::pin!(read);
            read.poll(cx)
        };
        match polled {
            Poll::Ready(r) => Poll::Ready(r.map(|_| buf)),
            // The readiness was stale: the buffer goes back, the waker is registered.
            Poll::Pending => {
                buffers::give(buf);
                Poll::Pending
            }
        }
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use palisade_policy::firewall::Detail;

    /// The end record written borrowed is the owned record the other paths build, field for
    /// field (the time aside: each takes its own).
    #[test]
    fn the_borrowed_end_record_is_the_owned_one() {
        let client: SocketAddr = "[2001:db8::7]:40000".parse().unwrap();
        let flow = Flow {
            dst: Some("192.0.2.1:443".parse().unwrap()),
            name: Some("www.example.test".into()),
            tunnel_name: Some("www.example.test".into()),
            translated_source: Some("10.0.1.4:5000".parse().unwrap()),
            ..Flow::new(Mode::Explicit, "HTTPS", client)
        };
        let outcome = FirewallOutcome {
            translated: Some(("10.0.2.5".parse().unwrap(), 8443)),
            detail: Some(Detail::from("a \"quoted\" detail")),
            ..observed_deny("SniAddressMismatch", "unused".into())
        };
        let version = Version {
            snapshot: "snap-1".into(),
            policy: Some("fw-policy".into()),
            observe: Some(Arc::from("spoke")),
            ..Version::default()
        };
        let parts = RecordParts::of(&outcome);
        let view = flow.end_view("gw-1", &outcome, &version, &parts, (10, 20));
        let mut owned = outcome_record(&outcome, &version);
        owned.instance = "gw-1".into();
        owned.mode = "explicit".into();
        owned.protocol = "HTTPS".into();
        owned.source_ip = Some(client.ip());
        owned.source_port = client.port();
        owned.destination_ip = flow.dst.map(|d| d.ip());
        owned.destination_port = 443;
        owned.name = flow.name.clone();
        owned.tunnel_name = flow.tunnel_name.clone();
        owned.translated_source = Some("10.0.1.4:5000".into());
        owned.bytes_sent = 10;
        owned.bytes_received = 20;
        let borrowed = view.to_record();
        owned.duration_ms = borrowed.duration_ms;
        owned.time = borrowed.time.clone();
        assert_eq!(borrowed, owned);
        assert_eq!(
            serde_json::to_string(&view).unwrap(),
            serde_json::to_string(&owned).unwrap()
        );
        assert_eq!(borrowed.translated.as_deref(), Some("10.0.2.5:8443"));
        assert_eq!(borrowed.detail.as_deref(), Some("a \"quoted\" detail"));
    }
}
