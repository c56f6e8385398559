//! Transparent UDP through TPROXY: what a subnet sends over UDP is judged by the firewall's
//! DNAT and network rules (FW-2, FW-4), as a redirected TCP connection is.
//!
//! nftables' `tproxy` hands datagrams addressed anywhere to one listening socket
//! (`IP_TRANSPARENT`); `IP_RECVORIGDSTADDR` tells each datagram's original destination. The
//! first datagram of a 5-tuple opens a *session*, decided once:
//! - allowed: an upstream socket to the destination (or the DNAT rule's translated address),
//!   and a reply socket bound to the original destination and connected to the client, so the
//!   replies carry the address the client sent to, and the client's later datagrams reach the
//!   session directly (the kernel's tproxy lookup prefers a connected socket). One record when
//!   it opens (the verdict), one when it ends (with bytes);
//! - denied: one record; its datagrams are dropped until it has been quiet for the idle time.
//!
//! Sessions end after the idle timeout (shorter for DNS). The table is bounded: when full, the
//! least recently active session is evicted (counted in `/metrics`).
//!
//! New sessions are decided concurrently (at most [`OPENING`] at once) so that one session's
//! durable record does not hold up the next: a session enters the table as *opening*, its
//! datagrams held (bounded) until its opening record is acknowledged, then forwarded in order,
//! or dropped if it is denied or its sockets cannot be opened (fail closed).

use crate::metrics::ListenerLabels;
use crate::proxy::{self, observed_deny, Flow, Mode};
use crate::quic::{Hello, QuicError};
use crate::shutdown::{InFlight, Phase};
use crate::{log, quic_judge, Closed, Established, Gateway};
use nix::sys::socket::{
    recvmsg, setsockopt, sockopt, ControlMessageOwned, MsgFlags, SockaddrStorage,
};
use palisade_policy::firewall::{FirewallInput, FirewallOutcome, FirewallPass};
use palisade_policy::matchers::PacketKey;
use socket2::{Domain, Socket, Type};
use std::collections::HashMap;
use std::io::{self, IoSliceMut};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::Interest;
use tokio::net::UdpSocket;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};

/// Sessions decided at once: each waits for its opening record to be durable.
pub const OPENING: usize = 64;

/// Datagrams an opening session holds; more are dropped, as a full queue would drop them.
const HELD: usize = 16;

/// Sessions to port 53 end sooner: a DNS exchange is one query and its answer.
pub const DNS_IDLE_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a session to `destination_port` may stay quiet.
pub fn idle_timeout(configured: Duration, destination_port: u16) -> Duration {
    if destination_port == 53 {
        configured.min(DNS_IDLE_TIMEOUT)
    } else {
        configured
    }
}

/// A socket of `kind` that may receive packets addressed to others and send from their
/// addresses (IP_TRANSPARENT).
pub(crate) fn transparent_socket(addr: SocketAddr, kind: Type) -> io::Result<Socket> {
    let s = Socket::new(Domain::for_address(addr), kind, None)?;
    if addr.is_ipv4() {
        s.set_ip_transparent_v4(true)?;
    } else {
        s.set_only_v6(true)?;
        s.set_ip_transparent_v6(true)?;
    }
    // UDP: the reply sockets of several clients share their destination's address and port;
    // TCP: the listener rebinds at once after a restart.
    s.set_reuse_address(true)?;
    s.set_nonblocking(true)?;
    Ok(s)
}

/// The TPROXY target: a transparent socket that reports each datagram's original destination.
pub fn bind_listener(addr: SocketAddr) -> io::Result<UdpSocket> {
    let s = transparent_socket(addr, Type::DGRAM)?;
    if addr.is_ipv4() {
        setsockopt(&s, sockopt::Ipv4OrigDstAddr, &true)?;
    } else {
        setsockopt(&s, sockopt::Ipv6OrigDstAddr, &true)?;
    }
    s.bind(&addr.into())?;
    UdpSocket::from_std(s.into())
}

/// The TCP TPROXY target: accepted connections keep their original destination as their local
/// address.
pub fn bind_tproxy_tcp(addr: SocketAddr) -> io::Result<tokio::net::TcpListener> {
    let s = transparent_socket(addr, Type::STREAM)?;
    s.bind(&addr.into())?;
    s.listen(1024)?;
    tokio::net::TcpListener::from_std(s.into())
}

/// Bound to the original destination, connected to the client: replies leave from the
/// address the client sent to.
fn reply_socket(original: SocketAddr, client: SocketAddr) -> io::Result<UdpSocket> {
    let s = transparent_socket(original, Type::DGRAM)?;
    s.bind(&original.into())?;
    s.connect(&client.into())?;
    UdpSocket::from_std(s.into())
}

/// An upstream socket leaving from the client's address (`--keep-source-to`): its replies
/// are delivered to it by the firewall's `socket transparent` rule (docs/gateway.md).
fn upstream_from(source: SocketAddr) -> io::Result<UdpSocket> {
    let s = transparent_socket(source, Type::DGRAM)?;
    s.bind(&source.into())?;
    UdpSocket::from_std(s.into())
}

/// One datagram: its length, sender and original destination (none when the kernel gave no
/// `IP_ORIGDSTADDR`).
fn recv_original(
    sock: &UdpSocket,
    buf: &mut [u8],
) -> io::Result<(usize, SocketAddr, Option<SocketAddr>)> {
    let mut space = nix::cmsg_space!(libc::sockaddr_in6);
    let mut iov = [IoSliceMut::new(buf)];
    let msg = recvmsg::<SockaddrStorage>(
        sock.as_raw_fd(),
        &mut iov,
        Some(&mut space),
        MsgFlags::empty(),
    )?;
    let from = msg
        .address
        .as_ref()
        .and_then(std_addr)
        .ok_or_else(|| io::Error::other("datagram without a sender address"))?;
    let mut original = None;
    for c in msg.cmsgs()? {
        match c {
            ControlMessageOwned::Ipv4OrigDstAddr(a) => {
                original = Some(SocketAddr::V4(SocketAddrV4::new(
                    Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr)),
                    u16::from_be(a.sin_port),
                )))
            }
            ControlMessageOwned::Ipv6OrigDstAddr(a) => {
                original = Some(SocketAddr::V6(SocketAddrV6::new(
                    Ipv6Addr::from(a.sin6_addr.s6_addr),
                    u16::from_be(a.sin6_port),
                    0,
                    0,
                )))
            }
            _ => {}
        }
    }
    Ok((msg.bytes, from, original))
}

fn std_addr(a: &SockaddrStorage) -> Option<SocketAddr> {
    if let Some(v4) = a.as_sockaddr_in() {
        return Some(SocketAddr::V4(SocketAddrV4::from(*v4)));
    }
    a.as_sockaddr_in6()
        .map(|v6| SocketAddr::V6(SocketAddrV6::from(*v6)))
}

fn canonical(a: SocketAddr) -> SocketAddr {
    SocketAddr::new(a.ip().to_canonical(), a.port())
}

/// When a session last saw a datagram (either way) and whether it has ended; shared between
/// the table and the session's task.
#[derive(Debug, Default)]
pub(crate) struct Activity {
    last_ms: AtomicU64,
    ended: AtomicBool,
}

impl Activity {
    fn at(ms: u64) -> Arc<Activity> {
        Arc::new(Activity {
            last_ms: AtomicU64::new(ms),
            ended: AtomicBool::new(false),
        })
    }
    fn touch(&self, ms: u64) {
        self.last_ms.fetch_max(ms, Ordering::Relaxed);
    }
    fn last(&self) -> u64 {
        self.last_ms.load(Ordering::Relaxed)
    }
}

/// A session as the table sees it.
pub(crate) trait Tracked {
    fn activity(&self) -> &Activity;
    /// Quiet for longer than this, it is over.
    fn idle(&self) -> Duration;
}

/// (client, original destination): with the protocol, the 5-tuple.
type Key = (SocketAddr, SocketAddr);

/// The sessions by 5-tuple, at most `cap`; pure bookkeeping, time passed in.
pub(crate) struct SessionTable<S> {
    sessions: HashMap<Key, S>,
    cap: usize,
}

impl<S: Tracked> SessionTable<S> {
    pub(crate) fn new(cap: usize) -> Self {
        SessionTable {
            sessions: HashMap::new(),
            cap: cap.max(1),
        }
    }

    pub(crate) fn get(&self, k: &Key) -> Option<&S> {
        self.sessions.get(k)
    }

    pub(crate) fn len(&self) -> usize {
        self.sessions.len()
    }

    /// Forget the sessions that ended or have been quiet for their idle time.
    pub(crate) fn expire(&mut self, now_ms: u64) {
        self.sessions.retain(|_, s| {
            let a = s.activity();
            !a.ended.load(Ordering::Relaxed)
                && now_ms.saturating_sub(a.last()) < s.idle().as_millis() as u64
        });
    }

    /// Add a session, first evicting the least recently active ones while the table is full;
    /// returns those evicted.
    pub(crate) fn insert(&mut self, k: Key, s: S) -> Vec<S> {
        let mut evicted = vec![];
        while self.sessions.len() >= self.cap {
            let Some(oldest) = self
                .sessions
                .iter()
                .min_by_key(|(_, s)| s.activity().last())
                .map(|(k, _)| *k)
            else {
                break;
            };
            evicted.extend(self.sessions.remove(&oldest));
        }
        self.sessions.insert(k, s);
        evicted
    }
}

/// A session in the listener's table.
struct Session {
    activity: Arc<Activity>,
    idle: Duration,
    route: Arc<Mutex<Route>>,
    /// Told when the table evicts it.
    evict: Arc<Notify>,
}

/// Where a session's datagrams go.
enum Route {
    /// Being decided: the client's datagrams so far, held until the opening record is
    /// acknowledged.
    Opening(Vec<Vec<u8>>),
    /// Allowed and recorded: to the upstream socket, counting the bytes sent.
    Relay(Arc<UdpSocket>, Arc<AtomicU64>),
    /// Denied, or its sockets could not be opened: dropped.
    Dropped,
}

fn lock(route: &Mutex<Route>) -> std::sync::MutexGuard<'_, Route> {
    route.lock().unwrap_or_else(|p| p.into_inner())
}

/// What the task deciding a new session holds: the session's shared parts and its place in
/// the gateway's in-flight count, which the relay inherits.
struct Opening {
    route: Arc<Mutex<Route>>,
    activity: Arc<Activity>,
    evict: Arc<Notify>,
    epoch: Instant,
    idle: Duration,
    counted: InFlight,
    _permit: OwnedSemaphorePermit,
}

impl Opening {
    /// Start deciding a session on its first `datagrams`: its table entry, and what the
    /// deciding task takes.
    fn new(
        gw: &Arc<Gateway>,
        permit: OwnedSemaphorePermit,
        datagrams: Vec<Vec<u8>>,
        (epoch, now): (Instant, u64),
        idle: Duration,
    ) -> (Session, Opening) {
        let opening = Opening {
            route: Arc::new(Mutex::new(Route::Opening(datagrams))),
            activity: Activity::at(now),
            evict: Arc::default(),
            epoch,
            idle,
            counted: InFlight::new(gw),
            _permit: permit,
        };
        let session = Session {
            activity: opening.activity.clone(),
            idle,
            route: opening.route.clone(),
            evict: opening.evict.clone(),
        };
        (session, opening)
    }

    /// Denied: what it held and what comes later is dropped.
    fn deny(self, gw: &Gateway) {
        let held = std::mem::replace(&mut *lock(&self.route), Route::Dropped);
        if let Route::Opening(held) = held {
            gw.metrics.udp_datagrams_dropped.inc_by(held.len() as u64);
        }
    }

    /// Recorded: the held datagrams go to `up`, then those that come later. Sent without
    /// waiting while the route is locked, so a later datagram cannot overtake them (a fresh
    /// socket's buffer takes them; one it would not is dropped, as UDP may). The plain
    /// syscall: tokio's `try_send` refuses until the reactor has seen the socket writable.
    fn relay(&self, gw: &Gateway, up: &Arc<UdpSocket>, sent: &Arc<AtomicU64>) {
        let mut route = lock(&self.route);
        if let Route::Opening(held) = &*route {
            let sock = socket2::SockRef::from(up.as_ref());
            for d in held {
                match sock.send(d) {
                    Ok(_) => sent.fetch_add(d.len() as u64, Ordering::Relaxed),
                    Err(_) => gw.metrics.udp_datagrams_dropped.inc(),
                };
            }
        }
        *route = Route::Relay(up.clone(), sent.clone());
    }
}

impl Tracked for Session {
    fn activity(&self) -> &Activity {
        &self.activity
    }
    fn idle(&self) -> Duration {
        self.idle
    }
}

/// Serve one TPROXY listener until the gateway drains (sessions then go on by themselves).
pub(crate) async fn tproxy_loop(gw: Arc<Gateway>, sock: UdpSocket) {
    let listener = sock.local_addr().ok();
    let epoch = Instant::now();
    let now_ms = || epoch.elapsed().as_millis() as u64;
    let mut table: SessionTable<Session> = SessionTable::new(gw.config.limits.max_udp_sessions);
    let opening = Arc::new(Semaphore::new(OPENING));
    let mut buf = vec![0u8; 65_536];
    let mut phase = gw.phase.subscribe();
    let mut swept = 0;
    // Flows whose QUIC ClientHello is still incomplete (issue 14): judged once it is.
    let mut quic_pending: HashMap<Key, quic_judge::Pending> = HashMap::new();
    // Add a session being decided to the table; the evicted ones are told.
    let insert = |table: &mut SessionTable<Session>, key: Key, session: Session| {
        for old in table.insert(key, session) {
            gw.metrics.udp_sessions_evicted.inc();
            old.evict.notify_one();
        }
        gw.metrics.udp_sessions.set(table.len() as i64);
    };
    loop {
        if *phase.borrow_and_update() != Phase::Serving {
            return;
        }
        let received = tokio::select! {
            r = sock.async_io(Interest::READABLE, || recv_original(&sock, &mut buf)) => r,
            _ = phase.changed() => continue,
        };
        let (n, client, original) = match received {
            Ok(x) => x,
            Err(e) => {
                gw.log_limited("UdpReceive", format!("transparent UDP receive: {e}"));
                continue;
            }
        };
        let client = canonical(client);
        let now = now_ms();
        if now.saturating_sub(swept) >= 1000 {
            table.expire(now);
            gw.metrics.udp_sessions.set(table.len() as i64);
            swept = now;
            for (waited, p) in
                quic_judge::expired(&mut quic_pending, gw.config.limits.handshake_timeout)
            {
                let Ok(permit) = opening.clone().acquire_owned().await else {
                    return;
                };
                let idle = idle_timeout(gw.config.limits.udp_idle_timeout, waited.1.port());
                let (session, o) = Opening::new(&gw, permit, p.datagrams, (epoch, now), idle);
                insert(&mut table, waited, session);
                let incomplete = Err(QuicError::Incomplete);
                tokio::spawn(open_quic(gw.clone(), waited, incomplete, o));
            }
        }
        // No original destination, or the listener itself: nothing was redirected.
        let original = original
            .map(canonical)
            .filter(|o| Some(*o) != listener && o.port() != 0);
        let key = (client, original.unwrap_or(client));
        if let Some(p) = quic_pending.get_mut(&key) {
            if let Some(initial) = p.push(&buf[..n]) {
                let p = quic_pending.remove(&key).unwrap_or_default();
                let Ok(permit) = opening.clone().acquire_owned().await else {
                    return;
                };
                let idle = idle_timeout(gw.config.limits.udp_idle_timeout, key.1.port());
                let (session, o) = Opening::new(&gw, permit, p.datagrams, (epoch, now), idle);
                insert(&mut table, key, session);
                tokio::spawn(open_quic(gw.clone(), key, initial, o));
            }
            continue;
        }
        if let Some(s) = table.get(&key) {
            s.activity.touch(now);
            let relay = match &mut *lock(&s.route) {
                Route::Opening(held) if held.len() < HELD => {
                    held.push(buf[..n].to_vec());
                    None
                }
                Route::Relay(up, sent) => Some((up.clone(), sent.clone())),
                Route::Opening(_) | Route::Dropped => {
                    gw.metrics.udp_datagrams_dropped.inc();
                    None
                }
            };
            // A datagram that came before the reply socket was connected.
            if let Some((up, sent)) = relay {
                if up.send(&buf[..n]).await.is_ok() {
                    sent.fetch_add(n as u64, Ordering::Relaxed);
                }
            }
            continue;
        }
        gw.metrics
            .connections
            .get_or_create(&ListenerLabels {
                listener: "transparent-udp".into(),
            })
            .inc();
        // UDP the network and DNAT rules leave to the application rules: a QUIC Initial is
        // judged by the name in its ClientHello, as HTTPS (issue 14).
        let quic = original.filter(|&d| quic_judge::wants_initial(&gw, client, d, &buf[..n]));
        let mut p = quic_judge::Pending::default();
        let initial = match quic.map(|_| p.push(&buf[..n])) {
            // As many flows may wait for their ClientHello as the table holds sessions.
            Some(None) if quic_pending.len() < gw.config.limits.max_udp_sessions => {
                quic_pending.insert(key, p);
                continue;
            }
            Some(None) => Some(Err(QuicError::Incomplete)),
            Some(Some(initial)) => Some(initial),
            None => None,
        };
        // Full: wait for a decision to finish, as the kernel queues what comes meanwhile.
        let Ok(permit) = opening.clone().acquire_owned().await else {
            return;
        };
        let idle = idle_timeout(gw.config.limits.udp_idle_timeout, key.1.port());
        let datagrams = match initial {
            Some(_) => p.datagrams,
            None => vec![buf[..n].to_vec()],
        };
        let (session, o) = Opening::new(&gw, permit, datagrams, (epoch, now), idle);
        insert(&mut table, key, session);
        match initial {
            Some(initial) => tokio::spawn(open_quic(gw.clone(), key, initial, o)),
            None => tokio::spawn(open(gw.clone(), client, original, o)),
        };
    }
}

/// Decide a new session on its first datagram and start relaying if it is allowed.
async fn open(
    gw: Arc<Gateway>,
    client: SocketAddr,
    original: Option<SocketAddr>,
    opening: Opening,
) {
    let flow = Flow {
        mode: Mode::Transparent,
        protocol: "UDP",
        client,
        dst: original,
        name: None,
        started: Instant::now(),
        tunnel_name: None,
        translated_source: None,
    };
    let Some(original) = original else {
        let o = observed_deny(
            "NotRedirected",
            "datagram addressed to the transparent UDP listener itself, or without an original destination".into(),
        );
        gw.record(flow.record(&gw, &o, &gw.version())).await;
        return opening.deny(&gw);
    };
    let key = PacketKey {
        src: client.ip(),
        dst: original.ip(),
        protocol: 17,
        src_port: client.port(),
        dst_port: original.port(),
    };
    let (outcome, version) = gw.judge(&FirewallInput {
        key,
        host: None,
        app_protocol: None,
    });
    let target = match (outcome.allowed, outcome.pass, proxy::translated(&outcome)) {
        (false, ..) => Err(outcome),
        (true, FirewallPass::FirewallDnat, Some(to)) => Ok((to, outcome)),
        (true, FirewallPass::FirewallDnat, None) => Err(FirewallOutcome {
            allowed: false,
            reason: "NotTranslated",
            detail: Some("the DNAT rule's translated address is not a literal address".into()),
            ..outcome
        }),
        (true, ..) => Ok((original, outcome)),
    };
    match target {
        Ok((to, outcome)) => relay_session(&gw, flow, key, (outcome, version), to, opening).await,
        Err(o) => {
            gw.record(flow.record(&gw, &o, &version)).await;
            opening.deny(&gw);
        }
    }
}

/// A QUIC flow judged by its Initial's name ([`quic_judge::judge_quic`]): relayed with the
/// datagrams read so far, or denied.
async fn open_quic(
    gw: Arc<Gateway>,
    (client, original): Key,
    initial: Result<Hello, QuicError>,
    opening: Opening,
) {
    let decision = quic_judge::judge_quic(&gw, client, original, &initial).await;
    if !decision.outcome.allowed {
        gw.record(decision.record).await;
        return opening.deny(&gw);
    }
    let flow = Flow {
        mode: Mode::Transparent,
        protocol: "QUIC",
        client,
        dst: Some(original),
        name: decision.record.name.clone(),
        started: Instant::now(),
        tunnel_name: None,
        translated_source: None,
    };
    // Re-judged on reload as it was judged: HTTPS to that name (application rules are TCP's).
    let key = PacketKey {
        src: client.ip(),
        dst: original.ip(),
        protocol: 6,
        src_port: client.port(),
        dst_port: original.port(),
    };
    let decided = (decision.outcome, decision.version);
    relay_session(&gw, flow, key, decided, original, opening).await
}

/// Open the sockets of an allowed session to `to`, record the opening, then send what the
/// client sent so far and start relaying.
async fn relay_session(
    gw: &Arc<Gateway>,
    mut flow: Flow,
    key: PacketKey,
    (outcome, version): (FirewallOutcome, crate::Version),
    to: SocketAddr,
    opening: Opening,
) {
    let (client, original) = (flow.client, flow.dst.unwrap_or(to));
    let sockets = async {
        let local: SocketAddr = if to.is_ipv4() {
            (Ipv4Addr::UNSPECIFIED, 0).into()
        } else {
            (Ipv6Addr::UNSPECIFIED, 0).into()
        };
        let up = match proxy::kept_source(gw, client, to) {
            Some(ip) => upstream_from(SocketAddr::new(ip, 0))?,
            None => UdpSocket::bind(local).await?,
        };
        up.connect(to).await?;
        let reply = reply_socket(original, client)
            .map_err(|e| io::Error::new(e.kind(), format!("reply socket on {original}: {e}")))?;
        io::Result::Ok((up, reply))
    };
    let (up, reply) = match sockets.await {
        Ok(x) => x,
        Err(e) => {
            let o = observed_deny("UpstreamUnavailable", format!("UDP to {to}: {e}"));
            gw.log_limited("UpstreamUnavailable", format!("UDP {client} → {to}: {e}"));
            gw.record(flow.record(gw, &o, &version)).await;
            return opening.deny(gw);
        }
    };
    let up = Arc::new(up);
    if to != original {
        flow.translated_source = up.local_addr().ok();
    }
    let mut opened = flow.record(gw, &outcome, &version);
    opened.detail = Some(with_detail(&outcome, "UDP session opened"));
    // Nothing is forwarded before the opening record is durable.
    gw.record(opened).await;
    let sent = Arc::new(AtomicU64::new(0));
    opening.relay(gw, &up, &sent);
    // The next session may be decided while this one relays.
    let Opening {
        activity,
        evict,
        epoch,
        idle,
        counted,
        _permit,
        ..
    } = opening;
    drop(_permit);
    let entry = Arc::new(Established {
        key,
        host: flow.name.clone(),
        app: (key.protocol == 6).then_some(palisade_policy::AppProtocol::Https),
        cancel: Default::default(),
        closed_by: Mutex::new(None),
    });
    let relay = Relay {
        gw: gw.clone(),
        flow,
        outcome,
        version,
        reply,
        up,
        activity,
        sent,
        evict,
        epoch,
        entry,
        idle,
        counted,
    };
    relay.run().await
}

fn with_detail(o: &FirewallOutcome, what: &str) -> String {
    match &o.detail {
        Some(d) => format!("{what}; {d}"),
        None => what.to_string(),
    }
}

/// An allowed session's two sockets and its accounts.
struct Relay {
    gw: Arc<Gateway>,
    flow: Flow,
    outcome: FirewallOutcome,
    version: crate::Version,
    reply: UdpSocket,
    up: Arc<UdpSocket>,
    activity: Arc<Activity>,
    sent: Arc<AtomicU64>,
    evict: Arc<Notify>,
    /// What [`Activity`] times count from (the listener's start).
    epoch: Instant,
    entry: Arc<Established>,
    idle: Duration,
    counted: InFlight,
}

/// Why a session ended.
enum End {
    Idle,
    Evicted,
    Closed,
}

impl Relay {
    async fn run(self) {
        let now_ms = || self.epoch.elapsed().as_millis() as u64;
        let id = self.gw.register(self.entry.clone());
        let (mut to_server, mut to_client) = (vec![0u8; 65_536], vec![0u8; 65_536]);
        let mut received = 0u64;
        let end = loop {
            let quiet = now_ms().saturating_sub(self.activity.last());
            let wait = self.idle.saturating_sub(Duration::from_millis(quiet));
            tokio::select! {
                r = self.reply.recv(&mut to_server) => {
                    // An error is an ICMP error for an earlier reply: the session goes on.
                    if let Ok(n) = r {
                        self.activity.touch(now_ms());
                        if self.up.send(&to_server[..n]).await.is_ok() {
                            self.sent.fetch_add(n as u64, Ordering::Relaxed);
                        }
                    }
                }
                r = self.up.recv(&mut to_client) => {
                    if let Ok(n) = r {
                        self.activity.touch(now_ms());
                        if self.reply.send(&to_client[..n]).await.is_ok() {
                            received += n as u64;
                        }
                    }
                }
                _ = self.entry.cancel.raised() => break End::Closed,
                _ = self.evict.notified() => break End::Evicted,
                _ = tokio::time::sleep(wait) => {
                    if now_ms().saturating_sub(self.activity.last()) >= self.idle.as_millis() as u64 {
                        break End::Idle;
                    }
                }
            }
        };
        self.activity.ended.store(true, Ordering::Relaxed);
        self.gw.unregister(id);
        self.finish(end, received).await;
    }

    async fn finish(self, end: End, received: u64) {
        let gw = &self.gw;
        let sent = self.sent.load(Ordering::Relaxed);
        for (direction, n) in [("sent", sent), ("received", received)] {
            gw.metrics
                .bytes
                .get_or_create(&crate::metrics::DirectionLabels {
                    direction: direction.into(),
                })
                .inc_by(n);
        }
        let closed = self
            .entry
            .closed_by
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        let mut r = self.flow.record(gw, &self.outcome, &self.version);
        r.bytes_sent = sent;
        r.bytes_received = received;
        r.duration_ms = self.flow.started.elapsed().as_millis() as u64;
        let why = match end {
            End::Idle => format!("UDP session ended: quiet for {} s", self.idle.as_secs()),
            End::Evicted => {
                gw.log_limited(
                    "UdpSessionEvicted",
                    format!(
                        "UDP session from {} evicted: the session table is full",
                        self.flow.client
                    ),
                );
                format!(
                    "UDP session evicted: the session table was full ({} sessions)",
                    gw.config.limits.max_udp_sessions
                )
            }
            End::Closed => "UDP session closed".to_string(),
        };
        r.detail = Some(with_detail(&self.outcome, &why));
        if let Some(Closed::Shutdown) = closed {
            proxy::shutdown_record(&mut r);
        }
        gw.record(r).await;
        if let Some(Closed::Reload(o, version)) = closed {
            let mut r = self.flow.record(gw, &o, &version);
            r.mode = "reload".into();
            r.detail = Some("UDP session closed: the reloaded policy denies it (FW-11)".into());
            gw.record(r).await;
        }
        drop(self.counted);
    }
}

/// Bind every `--transparent-udp` listener; the loops are returned to run.
pub(crate) fn start(gw: &Arc<Gateway>) -> io::Result<Vec<(SocketAddr, UdpSocket)>> {
    let mut out = vec![];
    for &addr in &gw.config.transparent_udp {
        let sock = bind_listener(addr).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!(
                    "transparent UDP listener {addr}: {e} (IP_TRANSPARENT needs CAP_NET_ADMIN)"
                ),
            )
        })?;
        let bound = sock.local_addr()?;
        log(format!("transparent UDP (TPROXY) listener on {bound}"));
        out.push((bound, sock));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    struct T(Arc<Activity>, Duration);
    impl Tracked for T {
        fn activity(&self) -> &Activity {
            &self.0
        }
        fn idle(&self) -> Duration {
            self.1
        }
    }

    fn k(port: u16) -> Key {
        (
            SocketAddr::from(([10, 0, 0, 2], port)),
            SocketAddr::from(([203, 0, 113, 1], 123)),
        )
    }

    #[test]
    fn full_table_evicts_the_least_recently_active() {
        let mut t = SessionTable::new(2);
        let (a, b) = (Activity::at(100), Activity::at(200));
        assert!(t
            .insert(k(1), T(a.clone(), Duration::from_secs(60)))
            .is_empty());
        assert!(t.insert(k(2), T(b, Duration::from_secs(60))).is_empty());
        // The first was active after the second: the second is now the oldest.
        a.touch(300);
        let out = t.insert(k(3), T(Activity::at(400), Duration::from_secs(60)));
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].0.last(), 200);
        assert!(t.get(&k(1)).is_some() && t.get(&k(2)).is_none() && t.get(&k(3)).is_some());
        assert_eq!(t.len(), 2);
    }

    #[test]
    fn quiet_or_ended_sessions_expire() {
        let mut t = SessionTable::new(10);
        let ended = Activity::at(0);
        t.insert(k(1), T(Activity::at(0), Duration::from_secs(1)));
        t.insert(k(2), T(Activity::at(500), Duration::from_secs(1)));
        t.insert(k(3), T(ended.clone(), Duration::from_secs(60)));
        t.expire(999);
        assert_eq!(t.len(), 3, "nothing quiet for a second yet");
        ended.ended.store(true, Ordering::Relaxed);
        t.expire(1000);
        assert!(t.get(&k(1)).is_none(), "quiet for its idle time");
        assert!(t.get(&k(3)).is_none(), "its task ended it");
        assert!(t.get(&k(2)).is_some());
    }

    #[test]
    fn dns_sessions_idle_sooner() {
        let configured = Duration::from_secs(60);
        assert_eq!(idle_timeout(configured, 53), DNS_IDLE_TIMEOUT);
        assert_eq!(idle_timeout(configured, 123), configured);
        assert_eq!(
            idle_timeout(Duration::from_secs(2), 53),
            Duration::from_secs(2)
        );
    }
}
