//! DNAT rules as listeners (FW-4): for every DNAT rule of the snapshot in force, the gateway
//! listens on the rule's frontend (its destination address and port, or a local address given
//! by `--dnat-bind FRONTEND=LOCAL`), and forwards what arrives to the translated address and
//! port — TCP by splicing, UDP by per-client sessions. Each flow is still decided by the policy
//! (`CompiledFirewall::evaluate` on client → frontend); the record has layer `FirewallDnat`,
//! action `Dnat`, the original tuple (`source_*`, `destination_*` = the frontend) and the
//! translated one (`translated_source` → `translated`).
//!
//! Listeners follow reloads: frontends that appear are bound, those that disappear are closed.

use crate::metrics::ListenerLabels;
use crate::proxy::{self, Flow, Mode};
use crate::shutdown::{accept, connection, reached, InFlight, Phase};
use crate::{log, Closed, Established, Gateway};
use palisade_policy::firewall::{CompiledFirewall, FirewallInput, FirewallOutcome, FirewallPass};
use palisade_policy::matchers::PacketKey;
use std::collections::{BTreeMap, HashMap};
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::task::JoinHandle;

/// Port ranges wider than this in a DNAT rule are not turned into listeners.
const MAX_PORTS_PER_RANGE: u32 = 64;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Transport {
    Tcp,
    Udp,
}

impl Transport {
    pub fn name(self) -> &'static str {
        match self {
            Transport::Tcp => "TCP",
            Transport::Udp => "UDP",
        }
    }
}

/// `--dnat-bind FRONTEND=LOCAL`: listen on `LOCAL` for the frontend `FRONTEND`. Either side is
/// `IP` or `IP:PORT`; a frontend without a port maps all its ports, a local side without a port
/// keeps the frontend's port (`:0` picks a free one, for tests).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnatBind {
    pub frontend_ip: IpAddr,
    pub frontend_port: Option<u16>,
    pub local_ip: IpAddr,
    pub local_port: Option<u16>,
}

fn ip_port(s: &str) -> Option<(IpAddr, Option<u16>)> {
    if let Ok(a) = s.parse::<SocketAddr>() {
        return Some((a.ip(), Some(a.port())));
    }
    let s = s.trim_start_matches('[').trim_end_matches(']');
    s.parse::<IpAddr>().ok().map(|ip| (ip, None))
}

/// Why a `--dnat-bind` text is not `FRONTEND=LOCAL`; every variant carries the whole text and
/// shows the same message, the variant tells which part was wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DnatBindError {
    #[error("--dnat-bind `{text}`: expected FRONTEND=LOCAL, each IP or IP:PORT")]
    NoEquals { text: String },
    #[error("--dnat-bind `{text}`: expected FRONTEND=LOCAL, each IP or IP:PORT")]
    BadFrontend { text: String },
    #[error("--dnat-bind `{text}`: expected FRONTEND=LOCAL, each IP or IP:PORT")]
    BadLocal { text: String },
}

pub fn parse_dnat_bind(s: &str) -> Result<DnatBind, DnatBindError> {
    let text = || s.to_string();
    let (f, l) = s
        .split_once('=')
        .ok_or_else(|| DnatBindError::NoEquals { text: text() })?;
    let (frontend_ip, frontend_port) =
        ip_port(f.trim()).ok_or_else(|| DnatBindError::BadFrontend { text: text() })?;
    let (local_ip, local_port) =
        ip_port(l.trim()).ok_or_else(|| DnatBindError::BadLocal { text: text() })?;
    Ok(DnatBind {
        frontend_ip,
        frontend_port,
        local_ip,
        local_port,
    })
}

/// The frontends of a firewall's DNAT rules: single addresses with single ports (or small
/// ranges). Returns them and notes on what could not be listened on.
pub fn frontends(fw: &CompiledFirewall) -> (Vec<(Transport, SocketAddr)>, Vec<String>) {
    let pass = fw.dnat_pass();
    let mut out = vec![];
    let mut notes = vec![];
    for (i, e) in pass.entries.iter().enumerate() {
        let rule = &pass.rules[pass.entry_rule[i] as usize];
        let transports: &[Transport] = match e.protocol {
            None => &[Transport::Tcp, Transport::Udp],
            Some(6) => &[Transport::Tcp],
            Some(17) => &[Transport::Udp],
            Some(_) => continue,
        };
        for net in &e.dst {
            if net.prefix_len() != net.max_prefix_len() {
                notes.push(format!(
                    "DNAT rule {}: destination {net} is not a single address; no listener",
                    rule.path()
                ));
                continue;
            }
            for &(lo, hi) in &e.dst_ports {
                if hi < lo {
                    continue;
                }
                if u32::from(hi) - u32::from(lo) + 1 > MAX_PORTS_PER_RANGE {
                    notes.push(format!(
                        "DNAT rule {}: port range {lo}-{hi} is too wide; no listener",
                        rule.path()
                    ));
                    continue;
                }
                for port in lo..=hi {
                    for &t in transports {
                        out.push((t, SocketAddr::new(net.addr(), port)));
                    }
                }
            }
        }
    }
    out.sort();
    out.dedup();
    (out, notes)
}

/// Where to listen for `frontend`: an exact `--dnat-bind`, else one for its address, else the
/// frontend itself (it must then be a local address).
pub fn bind_address(binds: &[DnatBind], frontend: SocketAddr) -> SocketAddr {
    let exact = binds
        .iter()
        .find(|b| b.frontend_ip == frontend.ip() && b.frontend_port == Some(frontend.port()));
    let by_ip = || {
        binds
            .iter()
            .find(|b| b.frontend_ip == frontend.ip() && b.frontend_port.is_none())
    };
    match exact.or_else(by_ip) {
        Some(b) => SocketAddr::new(b.local_ip, b.local_port.unwrap_or(frontend.port())),
        None => frontend,
    }
}

/// A bound DNAT frontend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DnatListener {
    pub transport: Transport,
    pub frontend: SocketAddr,
    /// The local address actually bound.
    pub bound: SocketAddr,
}

pub(crate) type Listeners = BTreeMap<(Transport, SocketAddr), (SocketAddr, JoinHandle<()>)>;

/// Bind the frontends of `fw` not yet bound, close those it no longer has.
pub(crate) fn reconcile(gw: &Arc<Gateway>, fw: &CompiledFirewall) {
    let (wanted, notes) = frontends(fw);
    for n in notes {
        log(n);
    }
    let mut listeners = gw.dnat.lock().unwrap_or_else(|p| p.into_inner());
    listeners.retain(|k, (bound, task)| {
        let keep = wanted.contains(k);
        if !keep {
            task.abort();
            log(format!(
                "DNAT frontend {} {} closed (listener {bound}): no longer in the policy",
                k.0.name(),
                k.1
            ));
        }
        keep
    });
    for &(t, frontend) in &wanted {
        if listeners.contains_key(&(t, frontend)) {
            continue;
        }
        let at = bind_address(&gw.config.dnat_bind, frontend);
        let started = match t {
            Transport::Tcp => std::net::TcpListener::bind(at).and_then(|l| {
                l.set_nonblocking(true)?;
                let l = TcpListener::from_std(l)?;
                let bound = l.local_addr()?;
                Ok((bound, tokio::spawn(tcp_loop(gw.clone(), l, frontend))))
            }),
            Transport::Udp => std::net::UdpSocket::bind(at).and_then(|s| {
                s.set_nonblocking(true)?;
                let s = UdpSocket::from_std(s)?;
                let bound = s.local_addr()?;
                Ok((
                    bound,
                    tokio::spawn(udp_loop(gw.clone(), Arc::new(s), frontend)),
                ))
            }),
        };
        match started {
            Ok((bound, task)) => {
                log(format!(
                    "DNAT frontend {} {frontend} listening on {bound}",
                    t.name()
                ));
                listeners.insert((t, frontend), (bound, task));
            }
            Err(e) => log(format!(
                "DNAT frontend {} {frontend}: cannot listen on {at}: {e} (map it with --dnat-bind {}=LOCAL_IP)",
                t.name(),
                frontend.ip()
            )),
        }
    }
}

/// The policy's answer for a flow that arrived at a DNAT frontend; only a DNAT translation to
/// a literal address forwards it. Anything else the policy allows is addressed to the firewall
/// itself and is not forwarded (`NotTranslated`).
fn dnat_only(o: FirewallOutcome) -> FirewallOutcome {
    if o.pass == FirewallPass::FirewallDnat && o.allowed && o.translated.is_some() {
        return o;
    }
    if !o.allowed {
        return o;
    }
    let detail = if o.pass == FirewallPass::FirewallDnat {
        "the DNAT rule's translated address is not a literal address".to_string()
    } else {
        format!(
            "no DNAT rule translates this flow to the frontend (the policy would allow it by {})",
            o.rule.as_ref().map(|r| r.path()).unwrap_or_default()
        )
    };
    FirewallOutcome {
        pass: o.pass,
        allowed: false,
        rule: if o.pass == FirewallPass::FirewallDnat {
            o.rule
        } else {
            None
        },
        reason: "NotTranslated",
        translated: None,
        snat: false,
        audit: o.audit,
        detail: Some(detail.into()),
    }
}

fn packet_key(client: SocketAddr, frontend: SocketAddr, protocol: u8) -> PacketKey {
    PacketKey {
        src: client.ip(),
        dst: frontend.ip().to_canonical(),
        protocol,
        src_port: client.port(),
        dst_port: frontend.port(),
    }
}

fn count(gw: &Gateway) {
    gw.metrics
        .connections
        .get_or_create(&ListenerLabels {
            listener: "dnat".into(),
        })
        .inc();
}

async fn tcp_loop(gw: Arc<Gateway>, listener: TcpListener, frontend: SocketAddr) {
    let what = format!("DNAT frontend {frontend}");
    let mut draining = std::pin::pin!(reached(&gw, Phase::Draining));
    while let Some((stream, peer)) = accept(draining.as_mut(), &listener, &what).await {
        count(&gw);
        let Ok(permit) = gw.slots.clone().try_acquire_owned() else {
            gw.metrics.rejected_over_limit.inc();
            continue;
        };
        let _ = stream.set_nodelay(true);
        let counted = InFlight::new(&gw);
        let gw = gw.clone();
        tokio::spawn(async move {
            let peer = crate::canonical(peer);
            let work = Box::pin(tcp_flow(&gw, stream, peer, frontend));
            let r = connection(&gw, counted, None, Mode::Dnat, peer, Some(frontend), work).await;
            if let Err(e) = r {
                if !matches!(
                    e.kind(),
                    io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe
                ) {
                    log(format!("DNAT connection from {peer} to {frontend}: {e}"));
                }
            }
            drop(permit);
        });
    }
}

async fn tcp_flow(
    gw: &Arc<Gateway>,
    client: TcpStream,
    peer: SocketAddr,
    frontend: SocketAddr,
) -> io::Result<()> {
    let mut flow = Flow {
        mode: Mode::Dnat,
        protocol: "TCP",
        client: peer,
        dst: Some(frontend),
        name: None,
        started: Instant::now(),
        tunnel_name: None,
        translated_source: None,
    };
    let k = packet_key(peer, frontend, 6);
    let (outcome, snap) = gw.judge(&FirewallInput {
        key: k,
        host: None,
        app_protocol: None,
    });
    let outcome = dnat_only(outcome);
    if !outcome.allowed {
        gw.record(flow.record(gw, &outcome, &snap)).await;
        proxy::reset(&client);
        return Ok(());
    }
    let Some(to) = proxy::translated(&outcome) else {
        return Ok(());
    };
    // Any protocol, the server's greeting perhaps first: its handshake ends as usual.
    let server = match proxy::dial(gw, to, false).await {
        Ok(s) => s,
        Err(e) => {
            let mut r = flow.record(gw, &outcome, &snap);
            r.detail = Some(format!("upstream {to}: {e}"));
            gw.record(r).await;
            proxy::reset(&client);
            return Ok(());
        }
    };
    flow.translated_source = server.local_addr().ok();
    proxy::relay(
        gw,
        flow,
        client,
        server,
        &outcome,
        &snap,
        k,
        None,
        vec![],
        None,
    )
    .await
}

/// One client of a UDP frontend: allowed (an upstream socket connected to the translated
/// address) or denied (its datagrams dropped until it has been quiet for the idle time).
struct UdpSession {
    upstream: Option<Arc<UdpSocket>>,
    done: Arc<AtomicBool>,
    sent: Arc<AtomicU64>,
    last: Arc<AtomicU64>,
}

async fn udp_loop(gw: Arc<Gateway>, sock: Arc<UdpSocket>, frontend: SocketAddr) {
    let mut sessions: HashMap<SocketAddr, UdpSession> = HashMap::new();
    let mut buf = vec![0u8; 65_536];
    let epoch = Instant::now();
    let mut phase = gw.phase.subscribe();
    loop {
        let draining = match *phase.borrow_and_update() {
            Phase::Serving => false,
            Phase::Draining => true,
            Phase::Closing => return,
        };
        if draining {
            // Only the allowed sessions still running are served; when none is left the
            // frontend closes.
            sessions.retain(|_, s| s.upstream.is_some() && !s.done.load(Ordering::Relaxed));
            if sessions.is_empty() {
                return;
            }
        }
        let (n, peer) = tokio::select! {
            r = sock.recv_from(&mut buf) => match r {
                Ok(x) => x,
                Err(e) => {
                    log(format!("receive on DNAT frontend UDP {frontend}: {e}"));
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = phase.changed() => continue,
            // Sessions end without a datagram here: look again now and then.
            _ = tokio::time::sleep(Duration::from_millis(100)), if draining => continue,
        };
        let peer = crate::canonical(peer);
        sessions.retain(|_, s| !s.done.load(Ordering::Relaxed));
        if let Some(s) = sessions.get(&peer) {
            if let Some(up) = &s.upstream {
                if up.send(&buf[..n]).await.is_ok() {
                    s.sent.fetch_add(n as u64, Ordering::Relaxed);
                    s.last
                        .store(epoch.elapsed().as_millis() as u64, Ordering::Relaxed);
                }
            }
            continue;
        }
        if draining {
            // A new client while draining: no new session.
            continue;
        }
        count(&gw);
        let session = udp_session(&gw, &sock, peer, frontend, &buf[..n], epoch).await;
        sessions.insert(peer, session);
    }
}

async fn udp_session(
    gw: &Arc<Gateway>,
    sock: &Arc<UdpSocket>,
    peer: SocketAddr,
    frontend: SocketAddr,
    first: &[u8],
    epoch: Instant,
) -> UdpSession {
    let flow = Flow {
        mode: Mode::Dnat,
        protocol: "UDP",
        client: peer,
        dst: Some(frontend),
        name: None,
        started: Instant::now(),
        tunnel_name: None,
        translated_source: None,
    };
    let k = packet_key(peer, frontend, 17);
    let (outcome, snap) = gw.judge(&FirewallInput {
        key: k,
        host: None,
        app_protocol: None,
    });
    let outcome = dnat_only(outcome);
    let done = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    let last = Arc::new(AtomicU64::new(epoch.elapsed().as_millis() as u64));
    let idle = gw.config.limits.udp_idle_timeout;
    let upstream = match proxy::translated(&outcome).filter(|_| outcome.allowed) {
        None => None,
        Some(to) => {
            let local: SocketAddr = if to.is_ipv4() {
                "0.0.0.0:0".parse().expect("literal")
            } else {
                "[::]:0".parse().expect("literal")
            };
            match UdpSocket::bind(local).await {
                Ok(up) => match up.connect(to).await {
                    Ok(()) => Some(Arc::new(up)),
                    Err(e) => {
                        log(format!("DNAT UDP {frontend} → {to}: {e}"));
                        None
                    }
                },
                Err(e) => {
                    log(format!("DNAT UDP {frontend}: {e}"));
                    None
                }
            }
        }
    };
    let Some(up) = upstream else {
        // Denied (or no upstream socket): record once, drop this client's datagrams until it
        // has been quiet for the idle time.
        let mut o = outcome;
        if o.allowed {
            o = proxy::observed_deny("UpstreamUnavailable", "no UDP socket to the target".into());
        }
        gw.record(flow.record(gw, &o, &snap)).await;
        let d = done.clone();
        tokio::spawn(async move {
            tokio::time::sleep(idle).await;
            d.store(true, Ordering::Relaxed);
        });
        return UdpSession {
            upstream: None,
            done,
            sent,
            last,
        };
    };
    if up.send(first).await.is_ok() {
        sent.fetch_add(first.len() as u64, Ordering::Relaxed);
    }
    let mut flow = flow;
    flow.translated_source = up.local_addr().ok();
    let entry = Arc::new(Established {
        key: k,
        host: None,
        app: None,
        cancel: Default::default(),
        closed_by: Mutex::new(None),
    });
    let counted = InFlight::new(gw);
    let id = gw.register(entry.clone());
    let (gw2, sock, up2) = (gw.clone(), sock.clone(), up.clone());
    let (done2, sent2, last2) = (done.clone(), sent.clone(), last.clone());
    tokio::spawn(async move {
        let _counted = counted;
        let mut received = 0u64;
        let mut buf = vec![0u8; 65_536];
        loop {
            let quiet =
                (epoch.elapsed().as_millis() as u64).saturating_sub(last2.load(Ordering::Relaxed));
            let wait = idle.saturating_sub(Duration::from_millis(quiet));
            tokio::select! {
                r = up2.recv(&mut buf) => match r {
                    Ok(n) => {
                        if sock.send_to(&buf[..n], peer).await.is_ok() {
                            received += n as u64;
                        }
                        last2.store(epoch.elapsed().as_millis() as u64, Ordering::Relaxed);
                    }
                    // ICMP port unreachable from the target: keep waiting until idle.
                    Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
                },
                _ = entry.cancel.raised() => break,
                _ = tokio::time::sleep(wait) => {
                    let quiet = (epoch.elapsed().as_millis() as u64)
                        .saturating_sub(last2.load(Ordering::Relaxed));
                    if Duration::from_millis(quiet) >= idle { break }
                }
            }
        }
        done2.store(true, Ordering::Relaxed);
        gw2.unregister(id);
        let closed = entry
            .closed_by
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        let mut r = flow.record(&gw2, &outcome, &snap);
        r.bytes_sent = sent2.load(Ordering::Relaxed);
        r.bytes_received = received;
        r.duration_ms = flow.started.elapsed().as_millis() as u64;
        if let Some(Closed::Shutdown) = closed {
            proxy::shutdown_record(&mut r);
        }
        gw2.record(r).await;
        if let Some(Closed::Reload(o, new_snap)) = closed {
            let mut r = flow.record(&gw2, &o, &new_snap);
            r.mode = "reload".into();
            r.detail = Some("UDP session closed: the reloaded policy denies it (FW-11)".into());
            gw2.record(r).await;
        }
    });
    UdpSession {
        upstream: Some(up),
        done,
        sent,
        last,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dnat_bind_forms() {
        let b = parse_dnat_bind("203.0.113.10:8080=127.0.0.1:0").unwrap();
        assert_eq!(b.frontend_port, Some(8080));
        assert_eq!(b.local_port, Some(0));
        let b2 = parse_dnat_bind("203.0.113.10=127.0.0.3").unwrap();
        assert_eq!((b2.frontend_port, b2.local_port), (None, None));
        assert!(parse_dnat_bind("203.0.113.10").is_err());
        let f: SocketAddr = "203.0.113.10:8080".parse().unwrap();
        assert_eq!(
            bind_address(std::slice::from_ref(&b2), f),
            "127.0.0.3:8080".parse().unwrap()
        );
        assert_eq!(
            bind_address(&[b2, b], f),
            "127.0.0.1:0".parse().unwrap(),
            "an exact mapping wins"
        );
        let other: SocketAddr = "198.51.100.1:53".parse().unwrap();
        assert_eq!(bind_address(&[], other), other);
    }
}
