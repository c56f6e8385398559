//! `lab check`: real packets for each flow of a scenario, compared with `trace`.
//!
//! For each flow a listener is started at the destination (TCP accept, UDP echo, bound to the
//! flow's destination address) and the source connects from its own address and port; an ICMP
//! flow is an echo request, which the destination's kernel answers. What
//! happened is [`Observed`]: connected, denied (timed out, and an NSG table logged the drop over
//! NFLOG, naming its rule), timed out with nothing logged (a route or firewall dropped it),
//! refused (nothing listened: a lab fault), or not sent. A reply flow (`reply_to`) is observed as
//! its request's handshake. [`agrees`] is the comparison; nothing is left out of the report.

use super::net::{GatewayRun, LabState};
use super::plan::LabPlan;
use super::LabError;
use crate::nflog::{parse_packet, parse_prefix, LogKind, NflogReader};
use palisade_model::Protocol;
use palisade_policy::{Established, Flow, Snapshot, Trace, TraceOptions, Verdict};
use serde::{Deserialize, Serialize};
use socket2::{Domain, SockAddr, Socket, Type};
use std::collections::BTreeMap;
use std::io::ErrorKind;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::mpsc;
use std::time::Duration;

/// How long a connection attempt (or a datagram's echo) may take before it counts as dropped.
const TIMEOUT: Duration = Duration::from_millis(1000);

/// One flow of a `flows.yaml` (`../shared/scenarios/README.md`); `expect` is `trace`'s business.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlowCase {
    pub name: String,
    pub protocol: String,
    pub source: IpAddr,
    pub source_port: Option<u16>,
    pub destination: IpAddr,
    pub destination_port: Option<u16>,
    #[serde(default)]
    pub host: Option<String>,
    #[serde(default)]
    pub reply_to: Option<String>,
}

#[derive(Deserialize)]
struct FlowsFile {
    flows: Vec<FlowCase>,
}

/// Read a `flows.yaml`; a bad file is an error naming the file and what was expected.
pub fn load_flows(path: &Path) -> Result<Vec<FlowCase>, LabError> {
    let text = std::fs::read_to_string(path).map_err(|e| LabError::Flows {
        file: path.to_path_buf(),
        message: e.to_string(),
    })?;
    parse_flows(path, &text)
}

/// Parse the text of a `flows.yaml` read from `path` (named in errors).
pub fn parse_flows(path: &Path, text: &str) -> Result<Vec<FlowCase>, LabError> {
    let err = |message: String| LabError::Flows {
        file: path.to_path_buf(),
        message,
    };
    let f: FlowsFile = serde_saphyr::from_str(text).map_err(|e| {
        err(format!(
            "expected `flows:` with name, protocol, source, destination: {e}"
        ))
    })?;
    Ok(f.flows)
}

/// Every address the flows name (the lab must hold them all).
pub fn addresses(flows: &[FlowCase]) -> Vec<IpAddr> {
    let mut out = vec![];
    for f in flows {
        for a in [f.source, f.destination] {
            if !out.contains(&a) {
                out.push(a);
            }
        }
    }
    out
}

/// What the packets did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "outcome", content = "detail")]
pub enum Observed {
    Connected,
    /// Connected, and the firewall's kernel rules logged the rule that let it through
    /// (`firewall/collection/rule`): a protocol the gateway does not relay (ICMP), judged by the
    /// firewall's network rules in the firewall's namespace (`firewall_nft.rs`).
    Allowed(String),
    /// Timed out, and an NSG table logged the drop (`nsg/rule`).
    Denied(String),
    /// Timed out with nothing logged: a route or a firewall dropped it.
    TimedOut,
    /// Nothing was listening (the lab's fault, never an NSG's: NSGs drop silently).
    Refused,
    /// The gateway allowed the connection and its own connection onwards failed with nothing
    /// logged: something after the firewall dropped it (DIAG-7: the firewall subnet's route).
    /// A proxying gateway closes the client's connection where a firewall forwarding packets
    /// leaves it to time out.
    DroppedAfterFirewall,
    NotSent(String),
    /// Sent through a firewall the lab cannot judge it with, and dropped there unjudged (fail
    /// closed): IPv6 through a firewall no IPv6 route leads to (the lab builds no IPv6 path
    /// through it). Never agrees: `trace` judges it, the lab does not.
    NotJudged(String),
}

#[derive(Debug, Clone, Serialize)]
pub struct Disagreement {
    pub flow: String,
    pub trace_verdict: Verdict,
    pub observed: Observed,
    pub trace_rule: Option<String>,
    pub logged_rule: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct CheckReport {
    pub total: usize,
    pub agree: usize,
    pub disagree: Vec<Disagreement>,
    /// Every flow, agreeing or not, in file order.
    pub flows: Vec<FlowResult>,
}

#[derive(Debug, Clone, Serialize)]
pub struct FlowResult {
    pub flow: String,
    pub agree: bool,
    pub trace_verdict: Verdict,
    pub observed: Observed,
    pub trace_rule: Option<String>,
}

/// The rule `trace` names: `resource/rule`.
pub fn trace_rule(t: &Trace) -> Option<String> {
    t.decided_by.as_ref().map(|d| match &d.rule {
        Some(r) => format!("{}/{r}", d.resource),
        None => d.resource.clone(),
    })
}

/// The rule whose deny must be recorded, when `trace` says an NSG or a firewall denied: the NSG
/// rule the kernel logs, or the firewall rule (`firewall/collection/rule`, the firewall alone for
/// its default action) in the gateway's flow record.
pub fn expected_log(t: &Trace) -> Option<String> {
    if t.verdict != Verdict::Deny {
        return None;
    }
    if t.hops
        .last()
        .is_some_and(|h| h.layer.starts_with("Firewall") && h.result == "Deny")
    {
        return trace_rule(t);
    }
    t.hops
        .iter()
        .find(|h| (h.layer == "NicNsg" || h.layer == "SubnetNsg") && h.result == "Deny")
        .map(|h| {
            // Hops name rules by their JSON path (`securityRules/x`); the log prefix by name.
            let rule = h.rule.as_deref().unwrap_or("");
            let name = rule.rsplit_once('/').map_or(rule, |(_, n)| n);
            format!("{}/{name}", h.resource)
        })
}

/// Do the packets agree with `trace`? Allow ↔ connected; an NSG deny ↔ denied by that very rule
/// (spec NSG-5.1: the first matching rule decides, and it is the one logged); a drop by a route
/// or firewall ↔ timed out with no NSG record; a drop after the firewall allowed the flow ↔
/// the gateway's onward connection failed with no NSG record.
pub fn agrees(t: &Trace, observed: &Observed) -> bool {
    match (t.verdict, observed) {
        (Verdict::Drop, Observed::DroppedAfterFirewall) => t
            .hops
            .iter()
            .any(|h| h.layer.starts_with("Firewall") && h.result != "Deny"),
        (Verdict::Allow, Observed::Connected) => true,
        // Through a chain of firewalls each logs its own allow; any of them may be read.
        (Verdict::Allow, Observed::Allowed(rule)) => t.hops.iter().any(|h| {
            h.layer == "FirewallNetwork"
                && h.result == "Allow"
                && h.rule
                    .as_ref()
                    .is_some_and(|r| *rule == format!("{}/{r}", h.resource))
        }),
        (Verdict::Deny | Verdict::Drop, Observed::Denied(rule)) => {
            expected_log(t).as_deref() == Some(rule.as_str())
        }
        (Verdict::Deny | Verdict::Drop, Observed::TimedOut) => expected_log(t).is_none(),
        _ => false,
    }
}

fn flow_of(f: &FlowCase) -> Result<Flow, String> {
    let protocol = Protocol::parse(&f.protocol).ok_or_else(|| {
        format!(
            "{}: protocol `{}`: expected Tcp, Udp or Icmp",
            f.name, f.protocol
        )
    })?;
    Ok(Flow {
        source: f.source,
        source_port: f.source_port.unwrap_or(0),
        destination: f.destination,
        destination_port: f.destination_port.unwrap_or(0),
        protocol,
        host: f.host.clone(),
        app_protocol: None,
    })
}

/// Flows sent at once: each waits for its own timeout, so a batch takes about as long as one.
const BATCH: usize = 32;

/// Send every flow through the lab of `state` (it must be up) and compare with `trace`.
pub fn check(
    snap: &Snapshot,
    state: &LabState,
    flows: &[FlowCase],
) -> Result<CheckReport, LabError> {
    check_with_progress(snap, state, flows, &mut |_| {})
}

/// [`check`], calling `sent` with the number of flows sent so far after every batch.
pub fn check_with_progress(
    snap: &Snapshot,
    state: &LabState,
    flows: &[FlowCase],
    sent: &mut dyn FnMut(usize),
) -> Result<CheckReport, LabError> {
    let plan = &state.plan;
    let mut readers = vec![];
    for (netns, group) in super::net::log_groups(state) {
        let r = NflogReader::open(group, Some(&netns)).map_err(|e| {
            LabError::Command(format!("NFLOG group {group} in {netns}"), e.to_string())
        })?;
        readers.push(r);
    }
    // Traces first (offline, in file order: a reply's trace depends on its request's).
    let mut traces: BTreeMap<&str, Trace> = BTreeMap::new();
    let mut cases: Vec<Result<(Flow, Trace), String>> = vec![];
    for f in flows {
        let flow = match flow_of(f) {
            Ok(flow) => flow,
            Err(e) => {
                cases.push(Err(e));
                continue;
            }
        };
        let established = f.reply_to.as_deref().map(|r| {
            let via_firewall = traces
                .get(r)
                .is_some_and(|t| t.hops.iter().any(|h| h.layer.starts_with("Firewall")));
            if via_firewall {
                Established::ViaFirewall
            } else {
                Established::Direct
            }
        });
        let trace = snap.trace(
            &flow,
            &TraceOptions {
                established,
                ..TraceOptions::default()
            },
        );
        traces.insert(&f.name, trace.clone());
        cases.push(Ok((flow, trace)));
    }
    // Then the packets, in batches whose flows share no listener and no source socket.
    let mut observed: BTreeMap<usize, Observed> = BTreeMap::new();
    let mut batch: Vec<(usize, &Flow, Vec<&GatewayRun>)> = vec![];
    let mut keys = std::collections::BTreeSet::new();
    let sendable = cases.iter().enumerate().filter_map(|(i, c)| match c {
        Ok((flow, trace)) if flows[i].reply_to.is_none() => Some((i, flow, trace)),
        _ => None,
    });
    for (i, flow, trace) in sendable {
        let key = (
            flow.destination,
            flow.destination_port,
            flow.protocol.has_ports(),
        );
        let from = (flow.source, flow.source_port);
        if batch.len() == BATCH || keys.contains(&key) || keys.contains(&from_key(from)) {
            if super::net::interrupted() {
                return Err(LabError::Interrupted);
            }
            observed.extend(send_batch(plan, &batch, &mut readers));
            sent(observed.len());
            batch.clear();
            keys.clear();
        }
        keys.insert(key);
        keys.insert(from_key(from));
        // Every firewall of the path, in order (a chain has several).
        let mut gateways: Vec<&GatewayRun> = vec![];
        for h in trace
            .hops
            .iter()
            .filter(|h| h.layer.starts_with("Firewall"))
        {
            if let Some(g) = state.gateways.iter().find(|g| g.firewall == h.resource) {
                if !gateways.iter().any(|x| std::ptr::eq(*x, g)) {
                    gateways.push(g);
                }
            }
        }
        batch.push((i, flow, gateways));
    }
    if super::net::interrupted() {
        return Err(LabError::Interrupted);
    }
    observed.extend(send_batch(plan, &batch, &mut readers));

    let mut report = CheckReport {
        total: 0,
        agree: 0,
        disagree: vec![],
        flows: vec![],
    };
    let index: BTreeMap<&str, usize> = flows
        .iter()
        .enumerate()
        .map(|(i, f)| (f.name.as_str(), i))
        .collect();
    for (i, (f, case)) in flows.iter().zip(cases).enumerate() {
        let (_, trace) = match case {
            Ok(c) => c,
            Err(e) => {
                report.record(&f.name, Verdict::Unknown, None, Observed::NotSent(e), false);
                continue;
            }
        };
        let seen = match &f.reply_to {
            // A reply is a packet of its request's connection: the handshake carried it.
            Some(r) => index.get(r.as_str()).and_then(|j| observed.get(j)).cloned(),
            None => observed.get(&i).cloned(),
        }
        .unwrap_or_else(|| {
            Observed::NotSent(format!(
                "its request `{}` is not in the file",
                f.reply_to.as_deref().unwrap_or("")
            ))
        });
        let agree = agrees(&trace, &seen);
        report.record(&f.name, trace.verdict, trace_rule(&trace), seen, agree);
    }
    Ok(report)
}

/// A source socket as a key among the listeners' keys (its own kind: never equal to one).
fn from_key((addr, port): (IpAddr, u16)) -> (IpAddr, u16, bool) {
    (addr, port, true)
}

impl CheckReport {
    fn record(
        &mut self,
        flow: &str,
        trace_verdict: Verdict,
        trace_rule: Option<String>,
        observed: Observed,
        agree: bool,
    ) {
        self.total += 1;
        if agree {
            self.agree += 1;
        } else {
            self.disagree.push(Disagreement {
                flow: flow.to_string(),
                trace_verdict,
                logged_rule: match &observed {
                    Observed::Denied(r) | Observed::Allowed(r) => Some(r.clone()),
                    _ => None,
                },
                observed: observed.clone(),
                trace_rule: trace_rule.clone(),
            });
        }
        self.flows.push(FlowResult {
            flow: flow.to_string(),
            agree,
            trace_verdict,
            observed,
            trace_rule,
        });
    }
}

/// One batch of flows' packets, all at once, and the NSG drops logged for them.
fn send_batch(
    plan: &LabPlan,
    batch: &[(usize, &Flow, Vec<&GatewayRun>)],
    readers: &mut [NflogReader],
) -> Vec<(usize, Observed)> {
    // Flow records older than the batch are of other flows (their times are in milliseconds).
    let since = std::time::SystemTime::now() - Duration::from_millis(10);
    for r in readers.iter_mut() {
        while matches!(r.read(Duration::from_millis(1)), Ok(v) if !v.is_empty()) {}
    }
    let mut out = vec![];
    let mut running = vec![];
    for (i, flow, gateways) in batch {
        let (i, flow) = (*i, *flow);
        let gateway = gateways.first().copied();
        let (Some(src), Some(dst)) = (plan.place_of(flow.source), plan.place_of(flow.destination))
        else {
            out.push((i, Observed::NotSent("an end is not in the lab".into())));
            continue;
        };
        if src.netns == dst.netns {
            out.push((
                i,
                Observed::NotSent("both ends are in one namespace".into()),
            ));
            continue;
        }
        let udp = match flow.protocol {
            Protocol::Tcp => false,
            Protocol::Udp => true,
            // No listener: the destination's kernel answers the echo request itself.
            Protocol::Icmp => {
                running.push((i, flow, gateways, false, None, ping(&src.netns, flow)));
                continue;
            }
            p => {
                out.push((
                    i,
                    Observed::NotSent(format!("protocol {p:?} is not sent by the lab")),
                ));
                continue;
            }
        };
        let listener =
            match Listener::start(&dst.netns, flow.destination, flow.destination_port, udp) {
                Ok(l) => l,
                Err(e) => {
                    out.push((i, Observed::NotSent(format!("listener: {e}"))));
                    continue;
                }
            };
        // Through the gateway the handshake is with the gateway: what counts is the server's
        // greeting coming back.
        let through_gateway = gateway.filter(|_| !udp);
        let client = connect(&src.netns, flow, udp, through_gateway.is_some());
        running.push((i, flow, gateways, udp, Some(listener), client));
    }
    let mut silent = vec![];
    // Flows the firewall's kernel rules let through: their allow record names the rule.
    let mut allowed = vec![];
    for (i, flow, gateways, udp, listener, client) in running {
        let gateway = gateways.first().copied();
        let result = client
            .join()
            .unwrap_or_else(|_| Err(std::io::Error::other("client thread panicked")));
        drop(listener);
        let unjudged = gateway.and_then(|g| unjudged(plan, g, flow));
        if let (Some(why), Err(_)) = (unjudged.as_ref(), &result) {
            out.push((i, Observed::NotJudged(why.clone())));
            continue;
        }
        let through_gateway = gateway.filter(|_| !udp && unjudged.is_none());
        if let (Some(_), Err(e)) = (through_gateway, &result) {
            if e.kind() != ErrorKind::TimedOut {
                match gateway_record(gateways, flow, since) {
                    Some(rule) => out.push((i, Observed::Denied(rule))),
                    // The gateway allowed it and its own connection onwards failed: an NSG
                    // behind the firewall may have dropped that, else a route did.
                    None => silent.push((i, flow, true, Observed::DroppedAfterFirewall)),
                }
                continue;
            }
        }
        match result {
            Ok(()) if gateway.is_some() && !flow.protocol.has_ports() => allowed.push((i, flow)),
            Ok(()) => out.push((i, Observed::Connected)),
            Err(e) if e.kind() == ErrorKind::ConnectionRefused => out.push((i, Observed::Refused)),
            // EPERM: the sender's own output hook dropped the datagram (an outbound NSG deny).
            Err(e)
                if matches!(
                    e.kind(),
                    ErrorKind::TimedOut | ErrorKind::WouldBlock | ErrorKind::PermissionDenied
                ) =>
            {
                // A datagram the gateway dropped: its deny record names the rule.
                match gateway
                    .filter(|_| udp)
                    .and_then(|_| gateway_record(gateways, flow, since))
                {
                    Some(rule) => out.push((i, Observed::Denied(rule))),
                    None => silent.push((i, flow, gateway.is_some(), Observed::TimedOut)),
                }
            }
            Err(e) => out.push((i, Observed::NotSent(e.to_string()))),
        }
    }
    if silent.is_empty() && allowed.is_empty() {
        return out;
    }
    let entries = logged(readers);
    // The kernel's record of `flow` of one of `kinds`, naming its rule.
    let record = |flow: &Flow, via_gateway: bool, kinds: &[LogKind]| {
        let protocol = flow.protocol.number(flow.source.is_ipv6());
        entries
            .iter()
            .find(|(t, kind, _)| {
                kinds.contains(kind)
                // Behind the gateway the packet is the gateway's own connection, from its
                // address (it does not keep the client's).
                    && (via_gateway || t.source == flow.source)
                    && t.destination == flow.destination
                    && Some(t.protocol) == protocol
                    && (!flow.protocol.has_ports() || t.destination_port == flow.destination_port)
            })
            .map(|(_, _, rule)| rule.clone())
    };
    for (i, flow, via_gateway, unlogged) in silent {
        let kinds = [LogKind::Deny, LogKind::FirewallDeny];
        out.push((
            i,
            record(flow, via_gateway, &kinds).map_or(unlogged, Observed::Denied),
        ));
    }
    for (i, flow) in allowed {
        // An allow the firewall did not log is still a connection; the report shows which.
        let rule = record(flow, false, &[LogKind::FirewallAllow]);
        out.push((i, rule.map_or(Observed::Connected, Observed::Allowed)));
    }
    out
}

/// Why the lab's firewall namespace cannot judge `flow` as `trace` does, if it cannot: IPv6
/// through a firewall no IPv6 route leads to (its place holds no IPv6 address, so the lab
/// built no IPv6 path through it). Otherwise both families are judged: TCP and UDP by the
/// gateway's dual-stack transparent listeners, ICMP and other protocols by the firewall's
/// network rules in the kernel (`firewall_nft.rs`).
fn unjudged(plan: &LabPlan, g: &GatewayRun, flow: &Flow) -> Option<String> {
    let v6_place = plan
        .places
        .iter()
        .find(|p| p.netns == g.netns)
        .is_some_and(|p| p.addresses.iter().any(IpAddr::is_ipv6));
    (flow.destination.is_ipv6() && !v6_place).then(|| {
        format!(
            "{}: IPv6 through a firewall no IPv6 route leads to is not built in the lab",
            g.firewall
        )
    })
}

/// Every decision the kernel logged since the readers were last drained: the packet's
/// 5-tuple, the kind, and the rule (`nsg/rule`, `resource/[group/]collection/rule`, or the
/// firewall alone for its default deny).
fn logged(readers: &mut [NflogReader]) -> Vec<(crate::nflog::FiveTuple, LogKind, String)> {
    let mut out = vec![];
    for r in readers.iter_mut() {
        while let Ok(entries) = r.read(Duration::from_millis(50)) {
            if entries.is_empty() {
                break;
            }
            for e in entries {
                let (Some(prefix), Some(t)) = (parse_prefix(&e.prefix), parse_packet(&e.packet))
                else {
                    continue;
                };
                let rule = match prefix.kind {
                    LogKind::Audit => continue,
                    LogKind::FirewallDeny if prefix.rule.is_empty() => prefix.nsg,
                    _ => format!("{}/{}", prefix.nsg, prefix.rule),
                };
                out.push((t, prefix.kind, rule));
            }
        }
    }
    out
}

/// The deny record of this flow by one of the gateways of its path, in path order
/// (`firewall/collection/rule`, or the firewall alone when no rule decided). Deny records are
/// durable before the client is told (docs/gateway.md). The first gateway sees the client's
/// port; a later one sees the port the gateway before it chose (it keeps the client's address
/// only), so there the record is the batch's one of this source and destination (no two flows
/// of a batch share a destination and port).
fn gateway_record(
    gateways: &[&GatewayRun],
    flow: &Flow,
    since: std::time::SystemTime,
) -> Option<String> {
    let q = palisade_flowlog::Query {
        source: Some(flow.source),
        action: Some("Deny".into()),
        ..Default::default()
    };
    gateways.iter().enumerate().find_map(|(n, g)| {
        let q = palisade_flowlog::Query {
            since: (n > 0).then_some(since),
            ..q.clone()
        };
        let (records, _) = palisade_flowlog::query(&g.data, &q).ok()?;
        let r = records.into_iter().find(|r| {
            (n > 0 || r.source_port == flow.source_port)
                && r.destination_ip == Some(flow.destination)
                && r.destination_port == flow.destination_port
        })?;
        Some(match r.rule_path() {
            Some(path) => format!("{}/{path}", g.firewall),
            None => g.firewall.clone(),
        })
    })
}

/// What the test server says first on every TCP connection.
const GREETING: &[u8] = b"palisade lab\n";

/// The first bytes a client of `flow` sends, for the firewall to judge by name: an HTTP request
/// with `Host` on port 80, a TLS ClientHello with the SNI elsewhere (scenarios README). Without
/// a name, a line that is neither, which the gateway judges with no name at once instead of
/// waiting for a ClientHello (a network rule has decided before it is read).
fn first_bytes(flow: &Flow) -> Vec<u8> {
    match &flow.host {
        None => GREETING.to_vec(),
        Some(h) if flow.destination_port == 80 => {
            format!("GET / HTTP/1.1\r\nHost: {h}\r\nConnection: close\r\n\r\n").into_bytes()
        }
        Some(h) => client_hello(h),
    }
}

/// A minimal TLS 1.3 ClientHello carrying `sni` (enough for the gateway to read the name; no
/// handshake follows).
fn client_hello(sni: &str) -> Vec<u8> {
    let name = sni.as_bytes();
    let mut server_name = vec![0u8];
    server_name.extend_from_slice(&(name.len() as u16).to_be_bytes());
    server_name.extend_from_slice(name);
    let mut list = (server_name.len() as u16).to_be_bytes().to_vec();
    list.extend_from_slice(&server_name);
    let mut exts = vec![0, 0];
    exts.extend_from_slice(&(list.len() as u16).to_be_bytes());
    exts.extend_from_slice(&list);
    let mut body = vec![3, 3];
    body.extend_from_slice(&[7u8; 32]);
    body.push(0);
    body.extend_from_slice(&[0, 2, 0x13, 0x01, 1, 0]);
    body.extend_from_slice(&(exts.len() as u16).to_be_bytes());
    body.extend_from_slice(&exts);
    let mut hs = vec![1];
    hs.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
    hs.extend_from_slice(&body);
    let mut out = vec![0x16, 3, 1];
    out.extend_from_slice(&(hs.len() as u16).to_be_bytes());
    out.extend_from_slice(&hs);
    out
}

/// A listener in a namespace for one flow, stopped on drop.
struct Listener {
    stop: Option<mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Listener {
    fn start(netns: &str, addr: IpAddr, port: u16, udp: bool) -> std::io::Result<Listener> {
        let (stop_tx, stop_rx) = mpsc::channel::<()>();
        let (ready_tx, ready_rx) = mpsc::channel::<std::io::Result<()>>();
        let netns = netns.to_string();
        let thread = std::thread::spawn(move || {
            let sock = crate::routes::enter_netns(&netns).and_then(|_| {
                let ty = if udp { Type::DGRAM } else { Type::STREAM };
                let s = Socket::new(Domain::for_address(SocketAddr::new(addr, port)), ty, None)?;
                s.set_reuse_address(true)?;
                s.bind(&SockAddr::from(SocketAddr::new(addr, port)))?;
                if !udp {
                    s.listen(16)?;
                }
                s.set_read_timeout(Some(Duration::from_millis(20)))?;
                Ok(s)
            });
            let sock = match sock {
                Ok(s) => {
                    let _ = ready_tx.send(Ok(()));
                    s
                }
                Err(e) => {
                    let _ = ready_tx.send(Err(e));
                    return;
                }
            };
            while matches!(stop_rx.try_recv(), Err(mpsc::TryRecvError::Empty)) {
                if udp {
                    let mut buf = [std::mem::MaybeUninit::<u8>::uninit(); 512];
                    if let Ok((n, from)) = sock.recv_from(&mut buf) {
                        // SAFETY: recv_from initialised the first n bytes.
                        let data: Vec<u8> = buf[..n]
                            .iter()
                            .map(|b| unsafe { b.assume_init() })
                            .collect();
                        let _ = sock.send_to(&data, &from);
                    }
                } else {
                    match sock.accept() {
                        Ok((c, _)) => {
                            let _ = c.send(GREETING);
                            // Give the greeting time to leave before the close.
                            std::thread::sleep(Duration::from_millis(20));
                        }
                        Err(_) => std::thread::sleep(Duration::from_millis(5)),
                    }
                }
            }
        });
        ready_rx
            .recv()
            .unwrap_or_else(|_| Err(std::io::Error::other("listener thread ended")))?;
        Ok(Listener {
            stop: Some(stop_tx),
            thread: Some(thread),
        })
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// An ICMP echo request from the flow's source address and its reply, on a thread of its own
/// (in the source's namespace); a raw socket, so no `ping` binary or ping-group setting is
/// needed. The identifier is the flow's source port, so concurrent pings keep their replies apart.
fn ping(netns: &str, flow: &Flow) -> std::thread::JoinHandle<std::io::Result<()>> {
    let netns = netns.to_string();
    let flow = flow.clone();
    std::thread::spawn(move || -> std::io::Result<()> {
        crate::routes::enter_netns(&netns)?;
        let v6 = flow.destination.is_ipv6();
        let (domain, protocol, request, reply) = if v6 {
            (Domain::IPV6, socket2::Protocol::ICMPV6, 128, 129)
        } else {
            (Domain::IPV4, socket2::Protocol::ICMPV4, 8, 0)
        };
        let s = Socket::new(domain, Type::RAW, Some(protocol))?;
        s.bind(&SockAddr::from(SocketAddr::new(flow.source, 0)))?;
        let id = flow.source_port.to_be_bytes();
        let mut packet = vec![request, 0, 0, 0, id[0], id[1], 0, 1];
        packet.extend_from_slice(b"palisade lab");
        if !v6 {
            // ICMPv6's checksum covers a pseudo-header; the kernel fills it in on raw sockets.
            let sum = checksum(&packet).to_be_bytes();
            packet[2..4].copy_from_slice(&sum);
        }
        s.send_to(
            &packet,
            &SockAddr::from(SocketAddr::new(flow.destination, 0)),
        )?;
        let deadline = std::time::Instant::now() + TIMEOUT;
        let mut buf = [std::mem::MaybeUninit::<u8>::uninit(); 1500];
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                return Err(ErrorKind::TimedOut.into());
            }
            s.set_read_timeout(Some(left))?;
            let (n, from) = s.recv_from(&mut buf)?;
            // SAFETY: recv_from initialised the first n bytes.
            let got: Vec<u8> = buf[..n]
                .iter()
                .map(|b| unsafe { b.assume_init() })
                .collect();
            // IPv4 raw sockets deliver the IP header, IPv6 ones do not.
            let icmp = if v6 {
                &got[..]
            } else {
                got.get(((got.first().unwrap_or(&0) & 0x0f) as usize) * 4..)
                    .unwrap_or(&[])
            };
            let from = from.as_socket().map(|a| a.ip());
            if icmp.len() >= 8
                && icmp[0] == reply
                && icmp[4..6] == id
                && from == Some(flow.destination)
            {
                return Ok(());
            }
        }
    })
}

/// The internet checksum (RFC 1071).
fn checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = data
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// Connect (TCP) or send and wait for the echo (UDP) from the flow's source address and port,
/// on a thread of its own (in the source's namespace).
fn connect(
    netns: &str,
    flow: &Flow,
    udp: bool,
    want_greeting: bool,
) -> std::thread::JoinHandle<std::io::Result<()>> {
    let netns = netns.to_string();
    let flow = flow.clone();
    std::thread::spawn(move || -> std::io::Result<()> {
        crate::routes::enter_netns(&netns)?;
        let src = SocketAddr::new(flow.source, flow.source_port);
        let dst = SocketAddr::new(flow.destination, flow.destination_port);
        let ty = if udp { Type::DGRAM } else { Type::STREAM };
        let s = Socket::new(Domain::for_address(dst), ty, None)?;
        s.set_reuse_address(true)?;
        s.bind(&SockAddr::from(src))?;
        if udp {
            s.connect(&SockAddr::from(dst))?;
            s.send(b"palisade lab")?;
            s.set_read_timeout(Some(TIMEOUT))?;
            let mut buf = [std::mem::MaybeUninit::<u8>::uninit(); 64];
            s.recv(&mut buf).map(|_| ())
        } else {
            s.connect_timeout(&SockAddr::from(dst), TIMEOUT)?;
            if !want_greeting {
                return Ok(());
            }
            s.send(&first_bytes(&flow))?;
            s.set_read_timeout(Some(TIMEOUT * 3))?;
            let mut got = vec![];
            let mut buf = [std::mem::MaybeUninit::<u8>::uninit(); 64];
            while got.len() < GREETING.len() {
                let n = s.recv(&mut buf)?;
                if n == 0 {
                    break;
                }
                // SAFETY: recv initialised the first n bytes.
                got.extend(buf[..n].iter().map(|b| unsafe { b.assume_init() }));
            }
            if got.starts_with(GREETING) {
                Ok(())
            } else {
                Err(std::io::Error::new(
                    ErrorKind::ConnectionReset,
                    "closed without the server's greeting",
                ))
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snap(name: &str) -> Snapshot {
        let file = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../../shared/scenarios")
            .join(name)
            .join("network.json");
        palisade_load::load(&palisade_load::Source::files([file]))
            .snapshot
            .unwrap()
    }

    fn trace(s: &Snapshot, src: &str, dst: &str, port: u16) -> Trace {
        s.trace(
            &Flow {
                source: src.parse().unwrap(),
                source_port: 50000,
                destination: dst.parse().unwrap(),
                destination_port: port,
                protocol: Protocol::Tcp,
                host: None,
                app_protocol: None,
            },
            &TraceOptions::default(),
        )
    }

    // spec NSG-5.1, NSG-6: the NIC NSG's Deny-All-Other decides HTTP to web-vm1; the kernel
    // must log that very rule.
    #[test]
    fn nsg_deny_agrees_only_with_its_own_rule() {
        let s = snap("layered-nsg");
        let t = trace(&s, "203.0.113.20", "10.2.1.4", 80);
        assert_eq!(
            expected_log(&t).as_deref(),
            Some("web-vm1-nic-nsg/Deny-All-Other")
        );
        assert!(agrees(
            &t,
            &Observed::Denied("web-vm1-nic-nsg/Deny-All-Other".into())
        ));
        assert!(!agrees(
            &t,
            &Observed::Denied("web-nsg/DenyAllInBound".into())
        ));
        assert!(!agrees(&t, &Observed::TimedOut));
        assert!(!agrees(&t, &Observed::Connected));
        assert!(!agrees(&t, &Observed::Refused));
    }

    #[test]
    fn allow_agrees_only_with_a_connection() {
        let s = snap("layered-nsg");
        let t = trace(&s, "203.0.113.20", "10.2.1.4", 443);
        assert_eq!(t.verdict, Verdict::Allow);
        assert!(agrees(&t, &Observed::Connected));
        assert!(!agrees(&t, &Observed::TimedOut));
        assert!(!agrees(&t, &Observed::NotSent("x".into())));
        assert!(!agrees(&t, &Observed::NotJudged("x".into())));
    }

    // spec FW-8.4: IPv6 through a firewall is judged by `trace`; the lab judges it when an
    // IPv6 route leads to the firewall (its place holds an IPv6 address), and otherwise says so
    // instead of passing a guess off as agreement. IPv4 is always judged there.
    #[test]
    fn ipv6_through_a_firewall_without_an_ipv6_address_is_named_unjudged() {
        let g = GatewayRun {
            firewall: "fw".into(),
            netns: "ns".into(),
            data: "data".into(),
        };
        let plan = |addresses: &[&str]| LabPlan {
            run: "t".into(),
            router: "rtr".into(),
            places: vec![super::super::plan::Place {
                kind: super::super::PlaceKind::Firewall("fw".into()),
                netns: "ns".into(),
                router_link: "tv0".into(),
                addresses: addresses.iter().map(|a| a.parse().unwrap()).collect(),
                subnet: None,
                tables: vec![],
            }],
            tables: vec![],
            names: Default::default(),
            notes: vec![],
        };
        let flow = |protocol, destination: &str| Flow {
            source: "10.0.2.4".parse().unwrap(),
            source_port: 20000,
            destination: destination.parse().unwrap(),
            destination_port: 443,
            protocol,
            host: None,
            app_protocol: None,
        };
        let v4_only = plan(&["10.0.1.4"]);
        let v6 = unjudged(&v4_only, &g, &flow(Protocol::Tcp, "2001:db8::7")).unwrap();
        assert!(v6.starts_with("fw: ") && v6.contains("IPv6"), "{v6}");
        assert!(unjudged(&v4_only, &g, &flow(Protocol::Icmp, "2001:db8::7")).is_some());
        for p in [Protocol::Icmp, Protocol::Tcp, Protocol::Udp] {
            assert_eq!(unjudged(&v4_only, &g, &flow(p, "203.0.113.7")), None);
        }
        let dual = plan(&["10.0.1.4", "fd00::4"]);
        for p in [Protocol::Icmp, Protocol::Tcp, Protocol::Udp] {
            assert_eq!(unjudged(&dual, &g, &flow(p, "2001:db8::7")), None);
            assert_eq!(unjudged(&dual, &g, &flow(p, "203.0.113.7")), None);
        }
    }

    // spec FW-3, FW-5: an echo through the firewall agrees only when the kernel logged the
    // network rule `trace` names (allow or deny), or the firewall alone for the default deny.
    #[test]
    fn icmp_through_the_firewall_agrees_only_with_the_rule_trace_names() {
        let yaml = include_str!("../../tests/fixtures/firewall-icmp.yaml");
        let file = palisade_model::import::import_text("f.yaml", yaml, &Default::default(), None);
        let s = Snapshot::compile(
            &file.network,
            &palisade_model::catalog::Catalogs::embedded(),
            &Default::default(),
        );
        let echo = |dst: &str| {
            s.trace(
                &Flow {
                    source: "10.0.2.4".parse().unwrap(),
                    source_port: 7,
                    destination: dst.parse().unwrap(),
                    destination_port: 0,
                    protocol: Protocol::Icmp,
                    host: None,
                    app_protocol: None,
                },
                &TraceOptions::default(),
            )
        };
        let allowed = echo("203.0.113.7");
        assert_eq!(allowed.verdict, Verdict::Allow);
        assert!(
            agrees(&allowed, &Observed::Allowed("fw/pings/ping".into())),
            "{:?}",
            allowed
                .hops
                .iter()
                .map(|h| (h.layer, &h.resource, &h.rule, h.result))
                .collect::<Vec<_>>()
        );
        assert!(!agrees(
            &allowed,
            &Observed::Allowed("fw/blocked/no-ping".into())
        ));
        let denied = echo("203.0.113.9");
        assert!(agrees(
            &denied,
            &Observed::Denied("fw/blocked/no-ping".into())
        ));
        assert!(!agrees(&denied, &Observed::Denied("fw".into())));
        assert!(!agrees(&denied, &Observed::TimedOut));
        let default = echo("198.51.100.1");
        assert_eq!(default.verdict, Verdict::Deny);
        assert!(agrees(&default, &Observed::Denied("fw".into())));
        assert!(!agrees(
            &default,
            &Observed::Allowed("fw/pings/ping".into())
        ));
    }

    // spec RT-9: the reply is routed to the firewall, which never saw the request: a drop no
    // NSG logs.
    #[test]
    fn route_drop_agrees_with_a_silent_timeout() {
        let s = snap("asymmetric-routing");
        let t = trace(&s, "70.37.57.58", "10.3.0.10", 454);
        assert_eq!(t.verdict, Verdict::Drop);
        assert_eq!(trace_rule(&t).as_deref(), Some("rt-broken/to-firewall"));
        assert!(agrees(&t, &Observed::TimedOut));
        assert!(!agrees(&t, &Observed::Connected));
        assert!(!agrees(&t, &Observed::Denied("asym-ase-nsg/x".into())));
    }

    // spec DIAG-7: a flow the firewall allows and its subnet's route drops; through the
    // gateway that shows as the onward connection failing, never as a plain timeout.
    #[test]
    fn drop_after_the_firewall_agrees_with_the_gateways_failed_onward_connection() {
        let yaml = r#"
apiVersion: palisade/v1
virtualNetworks:
  - name: hub
    addressSpace: [10.0.0.0/16]
    subnets:
      - {name: AzureFirewallSubnet, addressPrefix: 10.0.1.0/26}
      - {name: app, addressPrefix: 10.0.2.0/24, routeTable: rt-app}
routeTables:
  - name: rt-app
    routes:
      - {name: to-fw, addressPrefix: 0.0.0.0/0, nextHopType: VirtualAppliance, nextHopIpAddress: 10.0.1.4}
      - {name: private-to-fw, addressPrefix: 10.0.0.0/8, nextHopType: VirtualAppliance, nextHopIpAddress: 10.0.1.4}
azureFirewalls:
  - name: fw
    ipConfigurations: [{name: c, privateIPAddress: 10.0.1.4}]
    networkRuleCollections:
      - name: all
        priority: 200
        action: {type: Allow}
        rules: [{name: any, protocols: [TCP], sourceAddresses: ['*'], destinationAddresses: ['*'], destinationPorts: ['2000']}]
"#;
        let file = palisade_model::import::import_text("f.yaml", yaml, &Default::default(), None);
        let s = Snapshot::compile(
            &file.network,
            &palisade_model::catalog::Catalogs::embedded(),
            &Default::default(),
        );
        // RT-3: the firewall subnet's system route 10.0.0.0/8 → None.
        let dropped = trace(&s, "10.0.2.4", "10.57.121.238", 2000);
        assert_eq!(dropped.verdict, Verdict::Drop);
        assert!(
            agrees(&dropped, &Observed::DroppedAfterFirewall),
            "{:?}",
            dropped
                .hops
                .iter()
                .map(|h| (h.layer, h.result))
                .collect::<Vec<_>>()
        );
        assert!(!agrees(&dropped, &Observed::Refused));
        // Denied by the firewall itself: the gateway's record names the rule instead.
        let denied = trace(&s, "10.0.2.4", "10.57.121.238", 2001);
        assert_eq!(denied.verdict, Verdict::Deny);
        assert!(!agrees(&denied, &Observed::DroppedAfterFirewall));
        // Dropped before any firewall (asymmetric reply): no gateway took part.
        let asym = snap("asymmetric-routing");
        let t = trace(&asym, "70.37.57.58", "10.3.0.10", 454);
        assert!(!agrees(&t, &Observed::DroppedAfterFirewall));
    }

    proptest::proptest! {
        // Any text: a list of flows or an error naming the file, never a panic.
        #[test]
        fn parse_flows_never_panics(text in "\\PC{0,200}") {
            if let Err(e) = parse_flows(std::path::Path::new("f.yaml"), &text) {
                proptest::prop_assert!(e.to_string().starts_with("f.yaml: "));
            }
        }

        // Well-formed flows read back as written.
        #[test]
        fn parse_flows_reads_what_is_written(
            flows in proptest::collection::vec(
                (0u32..1000, proptest::bool::ANY, proptest::num::u32::ANY, proptest::num::u32::ANY,
                 1u16.., proptest::option::of(1u16..), proptest::option::of("[a-z]{1,8}\\.test")),
                1..6,
            )
        ) {
            let mut text = String::from("flows:\n");
            let mut want = vec![];
            for (i, (n, udp, s, d, sport, dport, host)) in flows.into_iter().enumerate() {
                let f = FlowCase {
                    name: format!("f{i}-{n}"),
                    protocol: if udp { "Udp" } else { "Tcp" }.into(),
                    source: IpAddr::V4(s.into()),
                    source_port: Some(sport),
                    destination: IpAddr::V4(d.into()),
                    destination_port: dport,
                    host,
                    reply_to: None,
                };
                text.push_str(&format!(
                    "  - name: {}\n    protocol: {}\n    source: {}\n    source_port: {}\n    destination: {}\n    destination_port: {}\n    host: {}\n",
                    f.name,
                    f.protocol,
                    f.source,
                    sport,
                    f.destination,
                    dport.map_or("null".to_string(), |p| p.to_string()),
                    f.host.clone().unwrap_or_else(|| "null".into()),
                ));
                want.push(f);
            }
            let got = parse_flows(std::path::Path::new("f.yaml"), &text).unwrap();
            proptest::prop_assert_eq!(got, want);
        }
    }

    #[test]
    fn checksum_is_rfc_1071() {
        // RFC 1071, section 3: the one's complement sum of these words is 0xddf2.
        assert_eq!(
            checksum(&[0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7]),
            !0xddf2
        );
        // A packet carrying its checksum sums to zero.
        let mut p = vec![8, 0, 0, 0, 0x12, 0x34, 0, 1, b'x'];
        let c = checksum(&p).to_be_bytes();
        p[2..4].copy_from_slice(&c);
        assert_eq!(checksum(&p), 0);
    }

    #[test]
    fn a_bad_flows_file_names_file_and_expectation() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("flows.yaml");
        std::fs::write(
            &f,
            "flows:\n  - name: x\n    protocol: Tcp\n    source: 10.0.0.300\n",
        )
        .unwrap();
        let e = load_flows(&f).unwrap_err().to_string();
        assert!(e.contains("flows.yaml") && e.contains("expected"), "{e}");
    }
}
