//! The gateway's DNS proxy (FW-9): it answers the subnet's queries on UDP and TCP through the
//! firewall's resolver — the servers given on the command line, else the policy's
//! `dnsSettings.servers`, else the host's — and remembers the A/AAAA addresses of every answer for TTL + a
//! grace period ([`remembered`]). Network rules' `destinationFqdns` match on those addresses
//! (FW-5), and the PAL-5.2 address check uses them too, so the clients and the firewall agree
//! on what a name means.
//!
//! - [`answer`] turns one query's bytes into the response's bytes (or nothing, for bytes that
//!   are not a query); listeners and the upstream are around it.
//! - Every refresh interval the firewall re-asks for the remembered names that network rules
//!   name (FW-5: "refreshed every 15 s"), so an address that stops being returned expires
//!   after its grace period even if no client asks again.

pub mod remembered;

use crate::{log, Gateway};
use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{Name, RData, RecordType};
use hickory_resolver::config::{ConnectionConfig, NameServerConfig, ResolverConfig, ResolverOpts};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::net::{DnsError, NetError};
use hickory_resolver::TokioResolver;
use palisade_policy::firewall::ResolvedNames;
use remembered::Remembered;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;

/// The DNS proxy's settings (`palisade gateway --dns ...`).
#[derive(Debug, Clone)]
pub struct DnsConfig {
    /// Where to answer queries, on UDP and TCP (the firewall's private IP, port 53).
    pub listen: SocketAddr,
    /// Upstream servers overriding the policy's `dnsSettings.servers` and the host's.
    pub upstream: Vec<SocketAddr>,
    /// How long an address stays valid after its TTL (FW-5: 15 minutes).
    pub grace: Duration,
    /// How often the firewall re-resolves remembered names its network rules name (FW-5:
    /// 15 s); `None`: never.
    pub refresh: Option<Duration>,
    /// Names remembered at most.
    pub max_names: usize,
    /// Time allowed for one upstream query (each server, each attempt).
    pub timeout: Duration,
}

impl DnsConfig {
    pub fn new(listen: SocketAddr) -> DnsConfig {
        DnsConfig {
            listen,
            upstream: vec![],
            grace: remembered::DEFAULT_GRACE,
            refresh: Some(Duration::from_secs(15)),
            max_names: remembered::DEFAULT_MAX_NAMES,
            timeout: Duration::from_secs(2),
        }
    }
}

/// A TCP query is a 2-byte length and at most this many bytes; UDP datagrams are cut here.
const MAX_MESSAGE: usize = 65_535;
/// The UDP payload the proxy offers with EDNS (the DNS flag day 2020 value).
const EDNS_PAYLOAD: u16 = 1232;
/// TCP connections idle longer than this are closed (RFC 7766 suggests seconds).
const TCP_IDLE: Duration = Duration::from_secs(10);
/// Queries (UDP) and connections (TCP) answered at once; past it UDP queries are dropped (the
/// client retries) and TCP connections wait to be accepted. Separate from the proxy's
/// connection limit, so a query flood does not take the slots of connections to be judged.
const MAX_IN_FLIGHT: usize = 1024;

/// The proxy's state: the remembered addresses and the upstream resolver.
pub struct DnsProxy {
    pub config: DnsConfig,
    table: Mutex<Remembered>,
    /// The resolver for the servers it was built for; rebuilt when a reload changes them.
    upstream: Mutex<Option<(Vec<SocketAddr>, TokioResolver)>>,
    slots: Arc<Semaphore>,
}

/// The remembered addresses as of one instant, for [`palisade_policy`]'s evaluation.
pub struct RememberedAt<'a> {
    table: MutexGuard<'a, Remembered>,
    now: Instant,
}

impl RememberedAt<'_> {
    /// What a judgement under this view depended on.
    pub fn epoch(&self) -> remembered::Epoch {
        self.table.epoch()
    }
}

impl ResolvedNames for RememberedAt<'_> {
    fn names_of(&self, address: IpAddr, each: &mut dyn FnMut(&str)) {
        self.table.names_of(address.to_canonical(), self.now, each)
    }
}

impl DnsProxy {
    pub fn new(config: DnsConfig) -> DnsProxy {
        DnsProxy {
            table: Mutex::new(Remembered::new(config.grace, config.max_names)),
            upstream: Mutex::new(None),
            slots: Arc::new(Semaphore::new(MAX_IN_FLIGHT)),
            config,
        }
    }

    /// What is remembered now.
    pub fn remembered(&self) -> RememberedAt<'_> {
        RememberedAt {
            table: self.table.lock().unwrap_or_else(|p| p.into_inner()),
            now: Instant::now(),
        }
    }

    /// Whether the remembered addresses are still as they were at `epoch` (nothing learnt,
    /// nothing expired since).
    pub fn still_at(&self, epoch: &remembered::Epoch) -> bool {
        let table = self.table.lock().unwrap_or_else(|p| p.into_inner());
        epoch.holds(table.epoch(), Instant::now())
    }

    /// The addresses valid for `name` now.
    pub fn addresses(&self, name: &str) -> Vec<IpAddr> {
        self.remembered().table.addresses(name, Instant::now())
    }

    /// The resolver for the servers in force: the configured ones, else the policy's
    /// (`policy_servers`), else the host's.
    fn resolver(&self, policy_servers: &[IpAddr]) -> Result<TokioResolver, String> {
        let servers: Vec<SocketAddr> = if !self.config.upstream.is_empty() {
            self.config.upstream.clone()
        } else {
            policy_servers
                .iter()
                .map(|ip| SocketAddr::new(*ip, 53))
                .collect()
        };
        let mut upstream = self.upstream.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((s, r)) = upstream.as_ref() {
            if *s == servers {
                return Ok(r.clone());
            }
        }
        let provider = TokioRuntimeProvider::default();
        let mut builder = if servers.is_empty() {
            TokioResolver::builder(provider).map_err(|e| format!("host resolver: {e}"))?
        } else {
            let name_servers = servers
                .iter()
                .map(|s| {
                    let conn = |mut c: ConnectionConfig| {
                        c.port = s.port();
                        c
                    };
                    NameServerConfig::new(
                        s.ip(),
                        true,
                        vec![conn(ConnectionConfig::udp()), conn(ConnectionConfig::tcp())],
                    )
                })
                .collect();
            TokioResolver::builder_with_config(
                ResolverConfig::from_parts(None, vec![], name_servers),
                provider,
            )
        };
        let opts: &mut ResolverOpts = builder.options_mut();
        opts.preserve_intermediates = true;
        opts.timeout = self.config.timeout;
        // The client retries on its own; one attempt answers SERVFAIL before it gives up.
        opts.attempts = 1;
        // Client queries are fully qualified: no search list, no hosts file.
        opts.ndots = 0;
        opts.use_hosts_file = hickory_resolver::config::ResolveHosts::Never;
        let resolver = builder.build().map_err(|e| format!("resolver: {e}"))?;
        *upstream = Some((servers, resolver.clone()));
        Ok(resolver)
    }

    /// Remember the A/AAAA addresses of `records` under `asked` and under each record's own
    /// name (the end of a CNAME chain).
    fn remember(&self, asked: &Name, records: &[hickory_proto::rr::Record]) {
        let now = Instant::now();
        let mut table = self.table.lock().unwrap_or_else(|p| p.into_inner());
        let addresses: Vec<(IpAddr, Duration)> = records
            .iter()
            .filter_map(|r| address_of(&r.data).map(|ip| (ip, ttl(r.ttl))))
            .collect();
        if addresses.is_empty() {
            return;
        }
        table.remember(&asked.to_ascii(), addresses.iter().copied(), now);
        for r in records {
            if let Some(ip) = address_of(&r.data) {
                if r.name != *asked {
                    table.remember(&r.name.to_ascii(), [(ip, ttl(r.ttl))], now);
                }
            }
        }
    }

    /// Ask the upstream for `name`'s `rtype` records, remember the addresses, and return the
    /// response message (without id) or the response code.
    async fn lookup(
        &self,
        name: &Name,
        rtype: RecordType,
        policy_servers: &[IpAddr],
    ) -> Result<Message, ResponseCode> {
        let resolver = self.resolver(policy_servers).map_err(|e| {
            log(format!("dns: {e}"));
            ResponseCode::ServFail
        })?;
        let mut fqdn = name.clone();
        fqdn.set_fqdn(true);
        match resolver.lookup(fqdn, rtype).await {
            Ok(lookup) => {
                self.remember(name, lookup.answers());
                Ok(lookup.message().clone())
            }
            Err(NetError::Dns(DnsError::NoRecordsFound(nr))) => {
                let mut m = Message::response(0, OpCode::Query);
                m.metadata.response_code = nr.response_code;
                if let Some(soa) = nr.soa {
                    m.add_authority(soa.into_record_of_rdata());
                }
                Ok(m)
            }
            Err(NetError::Dns(DnsError::ResponseCode(rc))) => Err(rc),
            Err(_) => Err(ResponseCode::ServFail),
        }
    }

    /// Look up `name` (A and AAAA) through the firewall's resolver, remembering the answers
    /// (PAL-5.2's fresh lookup); returns every address valid for it now, fresh ones first.
    pub async fn resolve(&self, name: &str, policy_servers: &[IpAddr]) -> Vec<IpAddr> {
        let Ok(n) = Name::from_ascii(name) else {
            return vec![];
        };
        let (a, aaaa) = tokio::join!(
            self.lookup(&n, RecordType::A, policy_servers),
            self.lookup(&n, RecordType::AAAA, policy_servers)
        );
        let mut out: Vec<IpAddr> = [a, aaaa]
            .iter()
            .flatten()
            .flat_map(|m| m.answers.iter().filter_map(|r| address_of(&r.data)))
            .collect();
        for ip in self.addresses(name) {
            if !out.contains(&ip) {
                out.push(ip);
            }
        }
        out
    }
}

fn address_of(data: &RData) -> Option<IpAddr> {
    match data {
        RData::A(a) => Some(IpAddr::V4(a.0)),
        RData::AAAA(a) => Some(IpAddr::V6(a.0)),
        _ => None,
    }
}

fn ttl(seconds: u32) -> Duration {
    Duration::from_secs(seconds.into())
}

/// What one query's bytes ask, or the answer already decided without the upstream.
#[derive(Debug, PartialEq)]
pub enum Request {
    /// A standard query for one name and type.
    Query(Box<Message>),
    /// Answer with this (FORMERR, NOTIMP, REFUSED) and do not ask upstream.
    Reply(Box<Message>),
    /// Not a query at all (too short for a header, or a response): say nothing.
    Ignore,
}

/// Read a query (RFC 1035 §4.1): garbage with a readable header gets FORMERR with its id, a
/// non-query opcode NOTIMP, anything else with one question is a query.
pub fn read_request(bytes: &[u8]) -> Request {
    let Ok(msg) = Message::from_vec(bytes) else {
        return match bytes {
            // A response's header (QR set) is never answered: no reflection loops.
            [a, b, flags, ..] if bytes.len() >= 12 && flags & 0x80 == 0 => {
                Request::Reply(Box::new(Message::error_msg(
                    u16::from_be_bytes([*a, *b]),
                    OpCode::Query,
                    ResponseCode::FormErr,
                )))
            }
            _ => Request::Ignore,
        };
    };
    if msg.metadata.message_type != MessageType::Query {
        return Request::Ignore;
    }
    let reply = |code| {
        let mut m = Message::error_msg(msg.metadata.id, msg.metadata.op_code, code);
        m.metadata.recursion_desired = msg.metadata.recursion_desired;
        m.add_queries(msg.queries.iter().cloned());
        Request::Reply(Box::new(m))
    };
    if msg.metadata.op_code != OpCode::Query {
        return reply(ResponseCode::NotImp);
    }
    if msg.queries.len() != 1 {
        return reply(ResponseCode::FormErr);
    }
    // Zone transfers and ANY through a subnet's forwarder serve nobody; refuse them plainly.
    if matches!(
        msg.queries[0].query_type(),
        RecordType::AXFR | RecordType::IXFR | RecordType::ANY
    ) {
        return reply(ResponseCode::Refused);
    }
    Request::Query(Box::new(msg))
}

/// The response to `request` built from the upstream's `result` for its question.
pub fn response(request: &Message, result: Result<Message, ResponseCode>) -> Message {
    let q: &Query = &request.queries[0];
    let mut m = match result {
        Ok(upstream) => {
            let mut m = Message::response(request.metadata.id, OpCode::Query);
            m.metadata.response_code = upstream.metadata.response_code;
            m.answers = upstream.answers;
            m.authorities = upstream.authorities;
            m
        }
        Err(code) => Message::error_msg(request.metadata.id, OpCode::Query, code),
    };
    m.metadata.recursion_desired = request.metadata.recursion_desired;
    m.metadata.recursion_available = true;
    m.queries = vec![q.clone()];
    if request.edns.is_some() {
        let mut edns = Edns::new();
        edns.set_max_payload(EDNS_PAYLOAD);
        m.set_edns(edns);
    }
    m
}

/// Encode `m` for a transport carrying at most `limit` bytes: too long for UDP, it is sent
/// truncated (TC set, no records) so the client retries over TCP (RFC 1035 §4.2.1).
pub fn encode(m: &Message, limit: usize) -> Option<Vec<u8>> {
    let bytes = m.to_vec().ok()?;
    if bytes.len() <= limit {
        return Some(bytes);
    }
    m.truncate().to_vec().ok()
}

/// Answer one query's bytes; `udp` limits the size to what the client accepts over UDP.
pub async fn answer(gw: &Gateway, dns: &DnsProxy, bytes: &[u8], udp: bool) -> Option<Vec<u8>> {
    let request = match read_request(bytes) {
        Request::Ignore => return None,
        Request::Reply(m) => return encode(&m, 512),
        Request::Query(m) => m,
    };
    let q = &request.queries[0];
    let servers = gw
        .active()
        .map(|a| a.firewall().dns_servers.clone())
        .unwrap_or_default();
    let result = dns.lookup(q.name(), q.query_type(), &servers).await;
    let limit = if udp {
        usize::from(request.max_payload().min(EDNS_PAYLOAD))
    } else {
        MAX_MESSAGE
    };
    encode(&response(&request, result), limit)
}

/// Bind the UDP socket and TCP listener of `config.listen` and serve them (and the refresh)
/// until the handles are aborted.
pub(crate) fn start(
    gw: Arc<Gateway>,
    dns: Arc<DnsProxy>,
) -> io::Result<(SocketAddr, Vec<JoinHandle<()>>)> {
    let (udp, tcp) = bind_pair(dns.config.listen)?;
    let addr = udp.local_addr()?;
    udp.set_nonblocking(true)?;
    tcp.set_nonblocking(true)?;
    let (udp, tcp) = (UdpSocket::from_std(udp)?, TcpListener::from_std(tcp)?);
    let mut tasks = vec![
        tokio::spawn(serve_udp(gw.clone(), dns.clone(), Arc::new(udp))),
        tokio::spawn(serve_tcp(gw.clone(), dns.clone(), tcp)),
    ];
    if let Some(every) = dns.config.refresh {
        tasks.push(tokio::spawn(refresh(gw, dns, every)));
    }
    Ok((addr, tasks))
}

/// A UDP socket and a TCP listener on the same address. With port 0 the UDP port is chosen
/// first; another process may hold that port on TCP, so a few other ports are tried.
fn bind_pair(listen: SocketAddr) -> io::Result<(std::net::UdpSocket, std::net::TcpListener)> {
    let mut tries = if listen.port() == 0 { 16 } else { 1 };
    loop {
        let udp = std::net::UdpSocket::bind(listen)?;
        match std::net::TcpListener::bind(udp.local_addr()?) {
            Ok(tcp) => return Ok((udp, tcp)),
            Err(e) if e.kind() == io::ErrorKind::AddrInUse && tries > 1 => tries -= 1,
            Err(e) => return Err(e),
        }
    }
}

async fn serve_udp(gw: Arc<Gateway>, dns: Arc<DnsProxy>, socket: Arc<UdpSocket>) {
    let mut buf = vec![0u8; MAX_MESSAGE];
    loop {
        let (n, peer) = match socket.recv_from(&mut buf).await {
            Ok(x) => x,
            // ICMP errors from earlier replies surface here; they concern one client only.
            Err(_) => continue,
        };
        let Ok(permit) = dns.slots.clone().try_acquire_owned() else {
            continue;
        };
        let query = buf[..n].to_vec();
        let (gw, dns, socket) = (gw.clone(), dns.clone(), socket.clone());
        tokio::spawn(async move {
            if let Some(reply) = answer(&gw, &dns, &query, true).await {
                let _ = socket.send_to(&reply, peer).await;
            }
            drop(permit);
        });
    }
}

async fn serve_tcp(gw: Arc<Gateway>, dns: Arc<DnsProxy>, listener: TcpListener) {
    loop {
        let Ok(permit) = dns.slots.clone().acquire_owned().await else {
            return;
        };
        let Ok((stream, _)) = listener.accept().await else {
            // Out of descriptors, typically: let connections end before accepting again.
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let (gw, dns) = (gw.clone(), dns.clone());
        tokio::spawn(async move {
            let _ = serve_tcp_connection(&gw, &dns, stream).await;
            drop(permit);
        });
    }
}

/// Length-prefixed queries (RFC 1035 §4.2.2), answered in order until the client closes or
/// idles.
async fn serve_tcp_connection(gw: &Gateway, dns: &DnsProxy, mut s: TcpStream) -> io::Result<()> {
    loop {
        let mut len = [0u8; 2];
        match tokio::time::timeout(TCP_IDLE, s.read_exact(&mut len)).await {
            Ok(Ok(_)) => {}
            _ => return Ok(()),
        }
        let mut query = vec![0u8; usize::from(u16::from_be_bytes(len))];
        match tokio::time::timeout(TCP_IDLE, s.read_exact(&mut query)).await {
            Ok(Ok(_)) => {}
            _ => return Ok(()),
        }
        let Some(reply) = answer(gw, dns, &query, false).await else {
            return Ok(());
        };
        let Ok(n) = u16::try_from(reply.len()) else {
            return Ok(());
        };
        s.write_all(&n.to_be_bytes()).await?;
        s.write_all(&reply).await?;
    }
}

/// FW-5: re-resolve, every `every`, the remembered names that network rules name; what the
/// upstream still returns stays valid, what it stopped returning runs out its grace period.
async fn refresh(gw: Arc<Gateway>, dns: Arc<DnsProxy>, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(active) = gw.active() else { continue };
        let fw = active.firewall();
        let names: Vec<String> = {
            let now = Instant::now();
            let mut table = dns.table.lock().unwrap_or_else(|p| p.into_inner());
            table.purge(now);
            table
                .names(now)
                .into_iter()
                .filter(|n| fw.network_fqdns().any(|f| f == n.as_str()))
                .collect()
        };
        for n in names {
            dns.resolve(&n, &fw.dns_servers).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn query_bytes(name: &str, rtype: RecordType) -> Vec<u8> {
        let mut m = Message::query();
        m.metadata.recursion_desired = true;
        m.add_query(Query::query(Name::from_ascii(name).unwrap(), rtype));
        m.to_vec().unwrap()
    }

    #[test]
    fn udp_and_tcp_share_the_port() {
        let (udp, tcp) = bind_pair("127.0.0.1:0".parse().unwrap()).unwrap();
        assert_eq!(udp.local_addr().unwrap(), tcp.local_addr().unwrap());
        // A port given and taken on TCP is an error, not another port.
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let err = bind_pair(taken.local_addr().unwrap()).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AddrInUse);
    }

    #[test]
    fn a_query_is_read_as_one() {
        let Request::Query(m) = read_request(&query_bytes("db.example.test.", RecordType::A))
        else {
            panic!("not a query");
        };
        assert_eq!(m.queries[0].name().to_ascii(), "db.example.test.");
    }

    #[test]
    fn garbage_with_a_header_gets_formerr_with_its_id() {
        let mut bytes = vec![0xab, 0xcd, 0x01, 0x00, 0, 5, 0, 0, 0, 0, 0, 0];
        bytes.extend_from_slice(b"\xffgarbage");
        let Request::Reply(m) = read_request(&bytes) else {
            panic!("no reply")
        };
        assert_eq!(m.metadata.id, 0xabcd);
        assert_eq!(m.metadata.response_code, ResponseCode::FormErr);
        assert_eq!(read_request(b"short"), Request::Ignore);
    }

    #[test]
    fn responses_and_transfers_are_not_forwarded() {
        let mut bytes = query_bytes("a.test.", RecordType::A);
        bytes[2] |= 0x80;
        assert_eq!(read_request(&bytes), Request::Ignore);
        let Request::Reply(m) = read_request(&query_bytes("a.test.", RecordType::AXFR)) else {
            panic!("no reply")
        };
        assert_eq!(m.metadata.response_code, ResponseCode::Refused);
    }

    #[test]
    fn oversized_udp_answer_is_truncated() {
        let Request::Query(q) = read_request(&query_bytes("a.test.", RecordType::A)) else {
            panic!()
        };
        let mut upstream = Message::response(0, OpCode::Query);
        for i in 0..100u8 {
            upstream.add_answer(hickory_proto::rr::Record::from_rdata(
                Name::from_ascii("a.test.").unwrap(),
                60,
                RData::A(hickory_proto::rr::rdata::A::new(192, 0, 2, i)),
            ));
        }
        let bytes = encode(&response(&q, Ok(upstream)), 512).unwrap();
        let m = Message::from_vec(&bytes).unwrap();
        assert!(m.metadata.truncation);
        assert!(m.answers.is_empty());
        assert_eq!(m.metadata.id, q.metadata.id);
    }

    proptest! {
        // Any bytes: no panic; a reply is only ever a response (never a query to reflect).
        #[test]
        fn any_bytes_are_read_without_panic(bytes in prop::collection::vec(any::<u8>(), 0..600)) {
            match read_request(&bytes) {
                Request::Reply(m) => {
                    prop_assert_eq!(m.metadata.message_type, MessageType::Response);
                    prop_assert!(m.to_vec().is_ok());
                }
                Request::Query(m) => prop_assert_eq!(m.queries.len(), 1),
                Request::Ignore => {}
            }
        }
    }
}
