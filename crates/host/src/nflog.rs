//! The kernel's NSG denials as flow records: the rendered table's deny and audit rules carry
//! `log prefix "palisade deny|audit <nsg>/<rule>: " group N` (see `render.rs`); [`NflogReader`]
//! subscribes to group N over an `NETLINK_NETFILTER` socket, and each logged packet becomes a
//! [`FlowRecord`] in the gateway's schema (`docs/gateway.md`) with the rule named by the prefix
//! and the 5-tuple read from the packet's IP header.

use crate::render::{Target, RPFILTER_RULE};
use crate::state::HostState;
use netlink_packet_core::{NetlinkMessage, NetlinkPayload};
use netlink_packet_netfilter::nflog::{
    config_request, ConfigCmd, ConfigMode, PacketNla, Timeout, ULogMessage,
};
use netlink_packet_netfilter::{NetfilterMessage, NetfilterMessageInner, NetfilterProtoFamily};
use netlink_sys::{protocols::NETLINK_NETFILTER, Socket};
use palisade_flowlog::{format_time, AuditEntry, FlowRecord};
use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

/// Bytes of each packet the kernel copies: enough for an IPv6 header, a few extension headers
/// and the ports, never the payload.
const COPY_RANGE: u32 = 256;

/// `deny` drops the packet; `audit` logs it and lets the NSG's evaluation go on. A lab
/// firewall's kernel-judged flows (`lab/firewall_nft.rs`) log `fw-allow` and `fw-deny`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogKind {
    Deny,
    Audit,
    FirewallAllow,
    FirewallDeny,
}

/// What a rendered log prefix names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogPrefix {
    pub kind: LogKind,
    /// The NSG; for the firewall kinds, the resource holding the rule (the policy, or the
    /// firewall for classic rules), or the firewall itself for its default deny.
    pub nsg: String,
    /// The NSG rule; for the firewall kinds, the rule's path (`[group/]collection/rule`),
    /// empty for the default deny.
    pub rule: String,
    /// The prefix was cut to fit the kernel's 128 bytes (`..` at the end): `rule` is a prefix of
    /// the name.
    pub truncated: bool,
}

/// Parse a prefix written by `render::log_prefix`; `None` for anything else on the group.
pub fn parse_prefix(p: &str) -> Option<LogPrefix> {
    let rest = p.strip_prefix("palisade ")?;
    let (kind, rest) = rest.split_once(' ')?;
    let kind = match kind {
        "deny" => LogKind::Deny,
        "audit" => LogKind::Audit,
        "fw-allow" => LogKind::FirewallAllow,
        "fw-deny" => LogKind::FirewallDeny,
        _ => return None,
    };
    let body = rest.strip_suffix(": ")?;
    let (body, truncated) = match body.strip_suffix("..") {
        Some(b) => (b, true),
        None => (body, false),
    };
    // Azure resource names cannot contain `/`, so the first one separates resource from rule.
    let (nsg, rule) = match (body.split_once('/'), kind) {
        (Some(parts), _) => parts,
        // A firewall's default deny names the firewall alone.
        (None, LogKind::FirewallDeny) if !truncated => (body, ""),
        (None, _) => return None,
    };
    if nsg.is_empty() {
        return None;
    }
    Some(LogPrefix {
        kind,
        nsg: nsg.to_string(),
        rule: rule.to_string(),
        truncated,
    })
}

/// Source, destination, protocol and ports of a logged packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FiveTuple {
    pub source: IpAddr,
    pub destination: IpAddr,
    /// IP protocol number (after IPv6 extension headers).
    pub protocol: u8,
    pub source_port: u16,
    pub destination_port: u16,
}

/// The 5-tuple of a packet starting at its IP header (what NFLOG copies for family `inet`).
pub fn parse_packet(p: &[u8]) -> Option<FiveTuple> {
    let version = p.first()? >> 4;
    let (source, destination, mut protocol, mut l4) = match version {
        4 => {
            let ihl = ((p[0] & 0x0f) as usize) * 4;
            if p.len() < 20 || ihl < 20 {
                return None;
            }
            let src: [u8; 4] = p[12..16].try_into().ok()?;
            let dst: [u8; 4] = p[16..20].try_into().ok()?;
            // A non-first fragment has no ports.
            let frag_offset = u16::from_be_bytes([p[6], p[7]]) & 0x1fff;
            let l4 = if frag_offset == 0 { ihl } else { usize::MAX };
            (
                IpAddr::V4(Ipv4Addr::from(src)),
                IpAddr::V4(Ipv4Addr::from(dst)),
                p[9],
                l4,
            )
        }
        6 => {
            if p.len() < 40 {
                return None;
            }
            let src: [u8; 16] = p[8..24].try_into().ok()?;
            let dst: [u8; 16] = p[24..40].try_into().ok()?;
            (
                IpAddr::V6(Ipv6Addr::from(src)),
                IpAddr::V6(Ipv6Addr::from(dst)),
                p[6],
                40,
            )
        }
        _ => return None,
    };
    if version == 6 {
        // Hop-by-hop, routing, destination options: skip to the transport header.
        while matches!(protocol, 0 | 43 | 60) && l4 + 8 <= p.len() {
            let next = p[l4];
            l4 += (p[l4 + 1] as usize + 1) * 8;
            protocol = next;
        }
        if protocol == 44 {
            l4 = usize::MAX;
        }
    }
    let (source_port, destination_port) = match protocol {
        6 | 17 | 132 if l4.checked_add(4).is_some_and(|e| e <= p.len()) => (
            u16::from_be_bytes([p[l4], p[l4 + 1]]),
            u16::from_be_bytes([p[l4 + 2], p[l4 + 3]]),
        ),
        _ => (0, 0),
    };
    Some(FiveTuple {
        source,
        destination,
        protocol,
        source_port,
        destination_port,
    })
}

fn protocol_name(p: u8) -> String {
    match p {
        1 => "ICMP".into(),
        6 => "TCP".into(),
        17 => "UDP".into(),
        58 => "ICMPv6".into(),
        n => n.to_string(),
    }
}

/// What the host state knows about a rendered rule, to fill the record's layer and priority.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleInfo {
    /// DIAG-1.2 layer: `SubnetNsg` or `NicNsg`.
    pub layer: String,
    pub direction: String,
    pub priority: u32,
    /// `Allow` or `Deny`: for an audit rule, the access it would have decided (PAL-5.3).
    pub access: String,
}

/// Layer of a record whose NSG the host state does not know (applied elsewhere, or the state
/// directory was not given).
pub const LAYER_UNKNOWN_TARGET: &str = "Nsg";

/// How log entries become records.
#[derive(Debug, Clone, Default)]
pub struct RecordContext {
    /// The record's `instance` (the host name, by default).
    pub instance: String,
    /// (NSG name, rule name) → what the applied table says about it.
    pub rules: HashMap<(String, String), RuleInfo>,
    /// NSG name → layer, for drops that are no rule (anti-spoofing).
    pub layers: HashMap<String, String>,
}

impl RecordContext {
    /// Rules of every table recorded in `state` (what `host apply` applied).
    pub fn from_state(instance: String, state: &HostState) -> RecordContext {
        let mut rules = HashMap::new();
        let mut layers = HashMap::new();
        for t in state.tables.values() {
            let plan = &t.plan;
            let layer = match plan.target {
                Target::Subnet(_) => "SubnetNsg",
                Target::Nic(_) => "NicNsg",
            };
            layers.insert(plan.nsg.clone(), layer.to_string());
            for r in &plan.rules {
                rules.insert(
                    (plan.nsg.clone(), r.name.clone()),
                    RuleInfo {
                        layer: layer.into(),
                        direction: r.direction.clone(),
                        priority: r.priority,
                        access: r.access.clone(),
                    },
                );
            }
        }
        RecordContext {
            instance,
            rules,
            layers,
        }
    }

    /// The flow record for one logged packet.
    pub fn record(&self, prefix: &LogPrefix, t: &FiveTuple, at: SystemTime) -> FlowRecord {
        if matches!(prefix.kind, LogKind::FirewallAllow | LogKind::FirewallDeny) {
            return self.firewall_record(prefix, t, at);
        }
        // The anti-spoofing drop is no NSG rule: recorded as a check, like the gateway's
        // `address-check`, so `--rule anti-spoofing` finds it.
        let spoofed = prefix.rule == RPFILTER_RULE;
        let info = self.rules.get(&(prefix.nsg.clone(), prefix.rule.clone()));
        let mut detail = vec![];
        if let Some(i) = info {
            detail.push(format!("{} rule", i.direction.to_ascii_lowercase()));
        }
        if prefix.truncated {
            detail.push("rule name truncated by the kernel's prefix limit".to_string());
        }
        FlowRecord {
            action: match prefix.kind {
                LogKind::Audit => "Audit",
                _ => "Deny",
            }
            .into(),
            layer: info
                .map(|i| &i.layer)
                .or_else(|| self.layers.get(&prefix.nsg))
                .cloned()
                .unwrap_or_else(|| LAYER_UNKNOWN_TARGET.into()),
            policy: Some(prefix.nsg.clone()),
            // The NSG plays the collection's part, so `--rule NSG/RULE` finds the rule's path.
            rule_collection: (!spoofed).then(|| prefix.nsg.clone()),
            rule: (!spoofed).then(|| prefix.rule.clone()),
            decided_by: spoofed.then(|| "anti-spoofing".into()),
            priority: info.map(|i| i.priority),
            audit: prefix.kind == LogKind::Audit,
            audit_rules: match (prefix.kind, info) {
                (LogKind::Audit, Some(i)) => vec![AuditEntry {
                    layer: i.layer.clone(),
                    rule: format!("securityRules/{}", prefix.rule),
                    access: i.access.clone(),
                }],
                _ => vec![],
            },
            reason: if spoofed {
                "ReversePathMismatch"
            } else {
                "RuleMatched"
            }
            .into(),
            detail: (!detail.is_empty()).then(|| detail.join("; ")),
            ..self.packet(t, at)
        }
    }
}

impl RecordContext {
    /// A firewall decision the kernel made (a protocol the gateway does not relay), recorded as
    /// the gateway records its own: the DIAG-1.2 layer, the rule's resource and path, the
    /// firewall alone (`decided_by: default`) for the default deny.
    fn firewall_record(&self, prefix: &LogPrefix, t: &FiveTuple, at: SystemTime) -> FlowRecord {
        let default = prefix.rule.is_empty();
        let mut path: Vec<&str> = prefix.rule.split('/').collect();
        let rule = path.pop().filter(|r| !r.is_empty()).map(String::from);
        let collection = path.pop().map(String::from);
        let group = path.pop().map(String::from);
        FlowRecord {
            action: match prefix.kind {
                LogKind::FirewallAllow => "Allow",
                _ => "Deny",
            }
            .into(),
            layer: if default {
                "FirewallDefault"
            } else {
                "FirewallNetwork"
            }
            .into(),
            policy: Some(prefix.nsg.clone()),
            rule_collection_group: group,
            rule_collection: collection,
            rule,
            decided_by: default.then(|| "default".into()),
            reason: if default {
                "DefaultAction"
            } else {
                "RuleMatched"
            }
            .into(),
            detail: prefix
                .truncated
                .then(|| "rule name truncated by the kernel's prefix limit".into()),
            ..self.packet(t, at)
        }
    }

    /// What every record of a logged packet says: when, where, and its 5-tuple.
    fn packet(&self, t: &FiveTuple, at: SystemTime) -> FlowRecord {
        FlowRecord {
            time: format_time(at),
            instance: self.instance.clone(),
            mode: "host".into(),
            protocol: protocol_name(t.protocol),
            source_ip: Some(t.source),
            source_port: t.source_port,
            destination_ip: Some(t.destination),
            destination_port: t.destination_port,
            ..Default::default()
        }
    }
}

/// One packet the kernel logged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogEntry {
    pub prefix: String,
    pub packet: Vec<u8>,
}

/// A socket subscribed to one NFLOG group.
pub struct NflogReader {
    socket: Socket,
    group: u16,
    buf: Vec<u8>,
    /// Times the kernel dropped messages because the socket's buffer was full.
    pub overruns: u64,
}

/// Runs `f` with the calling thread in `netns` (when given), then returns it to its own
/// namespace: sockets keep the namespace they were created in.
fn in_netns<T>(netns: Option<&str>, f: impl FnOnce() -> io::Result<T>) -> io::Result<T> {
    let Some(ns) = netns else { return f() };
    let home = std::fs::File::open("/proc/thread-self/ns/net")?;
    crate::routes::enter_netns(ns)?;
    let out = f();
    // SAFETY: setns on a valid namespace fd affects only the calling thread.
    if unsafe { libc::setns(home.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(io::Error::last_os_error());
    }
    out
}

impl NflogReader {
    /// Bind to `group` in `netns` (the caller's namespace when `None`). Fails with `EBUSY` when
    /// another process already reads the group.
    pub fn open(group: u16, netns: Option<&str>) -> io::Result<NflogReader> {
        let socket = in_netns(netns, || {
            let mut s = Socket::new(NETLINK_NETFILTER)?;
            s.bind_auto()?;
            Ok(s)
        })?;
        // Bursts of denials (a scan) should not overrun the socket.
        let _ = socket.set_rx_buf_sz(4 << 20);
        let mut r = NflogReader {
            socket,
            group,
            buf: vec![0; 1 << 16],
            overruns: 0,
        };
        r.configure(vec![ConfigCmd::Bind.into()])?;
        r.configure(vec![
            ConfigMode::new_packet(COPY_RANGE).into(),
            // Hand each packet over at once rather than batching for up to a second.
            Timeout::from(Duration::from_millis(10)).into(),
        ])?;
        Ok(r)
    }

    fn configure(
        &mut self,
        nlas: Vec<netlink_packet_netfilter::nflog::ConfigNla>,
    ) -> io::Result<()> {
        let msg = config_request(NetfilterProtoFamily::Unspec, self.group, nlas);
        let mut out = vec![0; msg.buffer_len()];
        msg.serialize(&mut out);
        self.socket.send(&out, 0)?;
        loop {
            let n = self.socket.recv(&mut &mut self.buf[..], 0)?;
            for m in split(&self.buf[..n]) {
                if let NetlinkPayload::Error(e) = m.payload {
                    return match e.code {
                        None => Ok(()),
                        Some(c) => Err(io::Error::from_raw_os_error(-c.get())),
                    };
                }
            }
        }
    }

    /// The packets logged within `timeout` (possibly none).
    pub fn read(&mut self, timeout: Duration) -> io::Result<Vec<LogEntry>> {
        let tv = libc::timeval {
            tv_sec: timeout.as_secs() as libc::time_t,
            tv_usec: timeout.subsec_micros().max(1) as libc::suseconds_t,
        };
        // SAFETY: setsockopt with a valid fd and a timeval of the size passed.
        let rc = unsafe {
            libc::setsockopt(
                self.socket.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                &tv as *const libc::timeval as *const libc::c_void,
                std::mem::size_of::<libc::timeval>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        let n = match self.socket.recv(&mut &mut self.buf[..], 0) {
            Ok(n) => n,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                ) =>
            {
                return Ok(vec![])
            }
            Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => {
                self.overruns += 1;
                return Ok(vec![]);
            }
            Err(e) => return Err(e),
        };
        let mut out = vec![];
        for m in split(&self.buf[..n.min(self.buf.len())]) {
            let NetlinkPayload::InnerMessage(NetfilterMessage {
                inner: NetfilterMessageInner::ULog(ULogMessage::Packet(nlas)),
                ..
            }) = m.payload
            else {
                continue;
            };
            let mut prefix = None;
            let mut packet = None;
            for nla in nlas {
                match nla {
                    PacketNla::Prefix(p) => prefix = Some(p.to_string_lossy().into_owned()),
                    PacketNla::Payload(p) => packet = Some(p),
                    _ => {}
                }
            }
            if let (Some(prefix), Some(packet)) = (prefix, packet) {
                out.push(LogEntry { prefix, packet });
            }
        }
        Ok(out)
    }

    /// Read until `stop` is set, handing each Palisade-logged packet's record to `sink`. Entries
    /// from other rules on the same group (foreign prefixes) are skipped. Returns the first
    /// error of the socket or the sink.
    pub fn run(
        &mut self,
        ctx: &RecordContext,
        stop: &AtomicBool,
        mut sink: impl FnMut(FlowRecord) -> io::Result<()>,
    ) -> io::Result<()> {
        while !stop.load(Ordering::Relaxed) {
            for e in self.read(Duration::from_millis(200))? {
                let at = SystemTime::now();
                let (Some(prefix), Some(t)) = (parse_prefix(&e.prefix), parse_packet(&e.packet))
                else {
                    continue;
                };
                sink(ctx.record(&prefix, &t, at))?;
            }
        }
        Ok(())
    }
}

/// The netlink messages of one datagram; a message that does not parse ends the walk.
fn split(mut bytes: &[u8]) -> Vec<NetlinkMessage<NetfilterMessage>> {
    let mut out = vec![];
    while bytes.len() >= 16 {
        let len = u32::from_ne_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]) as usize;
        if len < 16 || len > bytes.len() {
            break;
        }
        match NetlinkMessage::<NetfilterMessage>::deserialize(&bytes[..len]) {
            Ok(m) => out.push(m),
            Err(_) => break,
        }
        // Messages are aligned to 4 bytes.
        bytes = &bytes[((len + 3) & !3).min(bytes.len())..];
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A state knowing one inbound deny rule of `web-nsg`, and a TCP packet
    /// 10.0.0.1:40000 → 10.0.0.2:`port` for it to log.
    fn one_rule(rule: &str, layer: &str, priority: u32, port: u16) -> (RecordContext, FiveTuple) {
        let mut ctx = RecordContext::default();
        ctx.rules.insert(
            ("web-nsg".into(), rule.into()),
            RuleInfo {
                layer: layer.into(),
                direction: "Inbound".into(),
                priority,
                access: "Deny".into(),
            },
        );
        let t = FiveTuple {
            source: "10.0.0.1".parse().unwrap(),
            destination: "10.0.0.2".parse().unwrap(),
            protocol: 6,
            source_port: 40000,
            destination_port: port,
        };
        (ctx, t)
    }

    #[test]
    fn prefixes_round_trip_with_the_renderer() {
        let p = parse_prefix("palisade deny web-nsg/DenySsh: ").unwrap();
        assert_eq!(
            (p.kind, p.nsg.as_str(), p.rule.as_str(), p.truncated),
            (LogKind::Deny, "web-nsg", "DenySsh", false)
        );
        let p = parse_prefix("palisade audit n/AuditAll..: ").unwrap();
        assert_eq!((p.kind, p.truncated), (LogKind::Audit, true));
        assert!(parse_prefix("other: ").is_none());
        assert!(parse_prefix("palisade allow n/r: ").is_none());
    }

    // spec FW-3, FW-5: a lab firewall's kernel decision is recorded like the gateway's: the
    // rule's resource and path, the layer; the default deny by the firewall alone.
    #[test]
    fn firewall_prefixes_become_firewall_records() {
        let t = FiveTuple {
            source: "10.0.2.4".parse().unwrap(),
            destination: "203.0.113.7".parse().unwrap(),
            protocol: 1,
            source_port: 0,
            destination_port: 0,
        };
        let ctx = RecordContext::default();
        let p = parse_prefix("palisade fw-allow hub-policy/rcg/net/ping: ").unwrap();
        assert_eq!(p.kind, LogKind::FirewallAllow);
        let r = ctx.record(&p, &t, SystemTime::now());
        assert_eq!(
            (r.action.as_str(), r.layer.as_str(), r.protocol.as_str()),
            ("Allow", "FirewallNetwork", "ICMP")
        );
        assert_eq!(r.policy.as_deref(), Some("hub-policy"));
        assert_eq!(r.rule_path().as_deref(), Some("rcg/net/ping"));
        let classic = parse_prefix("palisade fw-deny fw/net/no-ping: ").unwrap();
        let r = ctx.record(&classic, &t, SystemTime::now());
        assert_eq!(
            (r.action.as_str(), r.reason.as_str()),
            ("Deny", "RuleMatched")
        );
        assert_eq!(r.rule_path().as_deref(), Some("net/no-ping"));
        let default = parse_prefix("palisade fw-deny hub-fw: ").unwrap();
        assert_eq!(
            (default.nsg.as_str(), default.rule.as_str()),
            ("hub-fw", "")
        );
        let r = ctx.record(&default, &t, SystemTime::now());
        assert_eq!(
            (r.layer.as_str(), r.reason.as_str(), r.decided_by.as_deref()),
            ("FirewallDefault", "DefaultAction", Some("default"))
        );
        assert_eq!(r.rule_path(), None);
        // Only a firewall's default deny names no rule.
        assert!(parse_prefix("palisade fw-allow hub-fw: ").is_none());
        assert!(parse_prefix("palisade deny web-nsg: ").is_none());
        assert!(parse_prefix("palisade fw-deny : ").is_none());
    }

    proptest::proptest! {
        // Whatever arrives on the group: a prefix or `None`, never a panic.
        #[test]
        fn parse_prefix_never_panics(p in "\\PC{0,140}") {
            let _ = parse_prefix(&p);
        }

        // What the lab firewall renders reads back as the resource and rule it named.
        #[test]
        fn firewall_prefixes_round_trip(
            allow in proptest::bool::ANY,
            // Azure names end in a letter, digit or underscore (so never in the `..` of a
            // truncated prefix).
            resource in "[A-Za-z0-9_.-]{0,19}[A-Za-z0-9_]",
            path in proptest::option::of("([A-Za-z0-9_.-]{0,11}[A-Za-z0-9_]/){1,2}[A-Za-z0-9_. -]{0,11}[A-Za-z0-9_]"),
        ) {
            let kind = if allow { "fw-allow" } else { "fw-deny" };
            let what = match &path {
                Some(p) => format!("{resource}/{p}"),
                None => resource.clone(),
            };
            let rendered = crate::render::nflog_prefix(kind, &what);
            let got = parse_prefix(&rendered);
            if allow && path.is_none() {
                proptest::prop_assert!(got.is_none());
            } else {
                let got = got.unwrap();
                proptest::prop_assert_eq!(got.nsg, resource);
                proptest::prop_assert_eq!(got.rule, path.unwrap_or_default());
                proptest::prop_assert!(!got.truncated);
            }
        }
    }

    #[test]
    fn five_tuple_from_ipv4_and_ipv6_headers() {
        let mut v4 = vec![0u8; 24];
        v4[0] = 0x45;
        v4[9] = 6;
        v4[12..16].copy_from_slice(&[10, 0, 0, 1]);
        v4[16..20].copy_from_slice(&[10, 0, 0, 2]);
        v4[20..24].copy_from_slice(&[0x30, 0x39, 0, 22]);
        let t = parse_packet(&v4).unwrap();
        assert_eq!(t.source, "10.0.0.1".parse::<IpAddr>().unwrap());
        assert_eq!(
            (t.protocol, t.source_port, t.destination_port),
            (6, 12345, 22)
        );

        // IPv6 with one hop-by-hop header before UDP.
        let mut v6 = vec![0u8; 40 + 8 + 4];
        v6[0] = 0x60;
        v6[6] = 0;
        v6[23] = 1;
        v6[39] = 2;
        v6[40] = 17;
        v6[48..52].copy_from_slice(&[0, 53, 0x01, 0xbb]);
        let t = parse_packet(&v6).unwrap();
        assert_eq!(t.destination, "::2".parse::<IpAddr>().unwrap());
        assert_eq!(
            (t.protocol, t.source_port, t.destination_port),
            (17, 53, 443)
        );
        assert!(parse_packet(&[0x45, 0]).is_none());
    }

    #[test]
    fn record_names_the_rule_and_is_found_by_rule_path() {
        let (mut ctx, t) = one_rule("DenySsh", "SubnetNsg", 200, 22);
        ctx.instance = "host1".into();
        let p = parse_prefix("palisade deny web-nsg/DenySsh: ").unwrap();
        let r = ctx.record(&p, &t, SystemTime::now());
        assert_eq!(
            (
                r.action.as_str(),
                r.layer.as_str(),
                r.priority,
                r.protocol.as_str()
            ),
            ("Deny", "SubnetNsg", Some(200), "TCP")
        );
        assert_eq!(r.rule_path().as_deref(), Some("web-nsg/DenySsh"));
        let q = palisade_flowlog::Query {
            rule: Some("denyssh".into()),
            action: Some("deny".into()),
            ..Default::default()
        };
        assert!(q.matches(&r));
        // An NSG the state does not know still gives a record, with the generic layer.
        let p = parse_prefix("palisade deny other/X: ").unwrap();
        assert_eq!(
            ctx.record(&p, &t, SystemTime::now()).layer,
            LAYER_UNKNOWN_TARGET
        );
        assert!(!r.audit);
    }

    #[test]
    fn pal_5_3_an_audit_log_is_an_audit_record_with_the_would_be_access() {
        // spec PAL-5.3
        let (ctx, t) = one_rule("CandidateDeny", "NicNsg", 150, 9000);
        let p = parse_prefix("palisade audit web-nsg/CandidateDeny: ").unwrap();
        let r = ctx.record(&p, &t, SystemTime::now());
        assert_eq!(r.action, "Audit");
        assert!(palisade_flowlog::is_audit(&r));
        assert_eq!(
            r.audit_rules,
            vec![AuditEntry {
                layer: "NicNsg".into(),
                rule: "securityRules/CandidateDeny".into(),
                access: "Deny".into(),
            }]
        );
    }
}
