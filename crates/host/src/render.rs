//! A subnet's or NIC's NSG rendered to one nftables table (family `inet`).
//!
//! The table is first built as a small typed model ([`TablePlan`]): sets, named counters and
//! chains of rules made of [`Stmt`]s. The same model renders to nft's JSON (what `plan
//! --output json` shows, [`TablePlan::replace_commands`]), to nft's text commands (what is
//! applied, [`TablePlan::replace_text`]: nft parses text faster) and to a text listing (what
//! `plan` prints, [`TablePlan::to_text`]), and is what incremental reapplies compare
//! (`apply.rs`).
//!
//! Direction mapping (see `docs/host.md`): *inbound* is traffic whose destination is one of the
//! target's addresses (the subnet's prefixes, or the NIC's addresses); *outbound* is traffic
//! whose source is one of them. [`HookMode::Host`] hooks `input` (inbound) and `output`
//! (outbound): the machine *is* the NIC or stands for the subnet. [`HookMode::Router`] hooks
//! `forward` only, outbound first, then inbound (NSG-6 order sender → receiver), for a machine
//! that routes the subnet's traffic.

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use palisade_model::{Access, PortRange, Protocol};
use palisade_policy::addresses::PLATFORM_ADDRESSES;
use palisade_policy::nsg::{CompiledNsg, CompiledRule, DirectionRules};
use palisade_policy::Snapshot;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::net::IpAddr;
use std::sync::Arc;

pub use crate::classify::Layout;

/// What the table protects.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", tag = "kind", content = "name")]
pub enum Target {
    Subnet(String),
    Nic(String),
}

/// Where the chains hook in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum HookMode {
    /// `input` (inbound) and `output` (outbound): the machine holds the addresses.
    #[default]
    Host,
    /// `forward`: the machine routes traffic to and from the addresses.
    Router,
}

#[derive(Debug, Clone)]
pub struct RenderOptions {
    pub hook: HookMode,
    /// NFLOG group for deny and audit records.
    pub log_group: u16,
    /// Table name; default `palisade_<nsg>`.
    pub table: Option<String>,
    /// Base chain priority (`filter` = 0).
    pub priority: i32,
    /// Strict reverse-path filtering in `prerouting` (anti-spoofing, `docs/host.md`): a packet
    /// whose source is not routed back out of the interface it came in on is dropped.
    pub rpfilter: bool,
    /// How each NSG chain's rules are laid out: one list, or classified by address behind a
    /// verdict map (`classify.rs`, `docs/host.md` "Layout").
    pub layout: Layout,
}

impl Default for RenderOptions {
    fn default() -> Self {
        RenderOptions {
            hook: HookMode::Host,
            log_group: 100,
            table: None,
            priority: 0,
            rpfilter: false,
            layout: Layout::default(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    #[error("no subnet named `{0}`")]
    NoSubnet(String),
    #[error("no NIC named `{0}`")]
    NoNic(String),
    #[error("{0} has no NSG: nothing to enforce (no NSG allows everything, NSG-6)")]
    NoNsg(String),
    #[error("{0} has no addresses to scope its rules to")]
    NoAddresses(String),
    #[error("NSG `{nsg}` has items that resolve to nothing ({items}); refusing to enforce a partial policy")]
    Unresolvable { nsg: String, items: String },
}

/// Address or port set element kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SetKind {
    Ipv4Addr,
    Ipv6Addr,
    InetService,
}

impl SetKind {
    pub fn nft_type(self) -> &'static str {
        match self {
            SetKind::Ipv4Addr => "ipv4_addr",
            SetKind::Ipv6Addr => "ipv6_addr",
            SetKind::InetService => "inet_service",
        }
    }
}

/// One element of an interval set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Elem {
    Net(IpNet),
    Ports(u16, u16),
}

impl Elem {
    /// Inclusive numeric interval, for comparing with what the kernel lists.
    pub fn interval(&self) -> (u128, u128) {
        match self {
            Elem::Net(IpNet::V4(n)) => (
                u32::from(n.network()) as u128,
                u32::from(n.broadcast()) as u128,
            ),
            Elem::Net(IpNet::V6(n)) => (u128::from(n.network()), u128::from(n.broadcast())),
            Elem::Ports(a, b) => (*a as u128, *b as u128),
        }
    }

    fn to_json(self) -> Value {
        match self {
            Elem::Net(n) if n.prefix_len() == n.max_prefix_len() => json!(n.addr().to_string()),
            Elem::Net(n) => {
                json!({"prefix": {"addr": n.network().to_string(), "len": n.prefix_len()}})
            }
            Elem::Ports(a, b) if a == b => json!(a),
            Elem::Ports(a, b) => json!({"range": [a, b]}),
        }
    }

    fn to_text(self) -> String {
        match self {
            Elem::Net(n) if n.prefix_len() == n.max_prefix_len() => n.addr().to_string(),
            Elem::Net(n) => n.trunc().to_string(),
            Elem::Ports(a, b) if a == b => a.to_string(),
            Elem::Ports(a, b) => format!("{a}-{b}"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SetDef {
    pub name: String,
    pub kind: SetKind,
    /// Shared like [`ChainDef::rules`]: an unchanged set of 155k elements compares at once.
    pub elements: Arc<Vec<Elem>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Side {
    Src,
    Dst,
}

impl Side {
    fn field(self) -> &'static str {
        match self {
            Side::Src => "saddr",
            Side::Dst => "daddr",
        }
    }
    fn port(self) -> &'static str {
        match self {
            Side::Src => "sport",
            Side::Dst => "dport",
        }
    }
}

/// An address or port operand: a named set or one literal element.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Operand {
    Set(String),
    Elem(Elem),
}

/// The statements a rendered rule is made of.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stmt {
    CtEstablished,
    /// `iifname "lo"` (true) / `oifname "lo"` (false).
    Loopback(bool),
    /// `meta nfproto ipv4|ipv6`.
    Family(bool),
    /// `meta l4proto N`.
    L4proto(u8),
    /// `meta l4proto { tcp, udp }` (true) or `!= { tcp, udp }` (false).
    TcpUdp(bool),
    /// `icmpv6 type { nd-* }`: neighbour discovery, needed for IPv6 to work at all.
    NeighbourDiscovery,
    /// `fib saddr . iif oif missing`: no route back to the source through the input interface.
    ReversePathMissing,
    Addr {
        v6: bool,
        side: Side,
        operand: Operand,
    },
    Port {
        side: Side,
        operand: Operand,
    },
    Counter(String),
    Log {
        group: u16,
        prefix: String,
    },
    Accept,
    Drop,
    Return,
    Jump(String),
    /// `ip saddr vmap { a-b : goto c, … }`: a verdict map over disjoint address intervals that
    /// covers the family (the classified layout, `classify.rs`). `goto`, so that an allow's
    /// `return` in the target chain leaves the NSG chain as it does in the listed layout.
    Vmap {
        v6: bool,
        side: Side,
        entries: Vec<VmapEntry>,
    },
}

/// One interval of a [`Stmt::Vmap`] and the chain packets in it go to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmapEntry {
    pub first: IpAddr,
    pub last: IpAddr,
    pub chain: String,
}

impl VmapEntry {
    fn key_text(&self) -> String {
        if self.first == self.last {
            self.first.to_string()
        } else {
            format!("{}-{}", self.first, self.last)
        }
    }

    fn key_json(&self) -> Value {
        if self.first == self.last {
            json!(self.first.to_string())
        } else {
            json!({"range": [self.first.to_string(), self.last.to_string()]})
        }
    }
}

impl Stmt {
    fn to_json(&self) -> Value {
        let m = |left: Value, op: &str, right: Value| json!({"match": {"op": op, "left": left, "right": right}});
        let operand = |o: &Operand| match o {
            Operand::Set(s) => json!(format!("@{s}")),
            Operand::Elem(e) => e.to_json(),
        };
        match self {
            Stmt::CtEstablished => m(
                json!({"ct": {"key": "state"}}),
                "in",
                json!(["established", "related"]),
            ),
            Stmt::Loopback(input) => m(
                json!({"meta": {"key": if *input { "iifname" } else { "oifname" }}}),
                "==",
                json!("lo"),
            ),
            Stmt::Family(v6) => m(
                json!({"meta": {"key": "nfproto"}}),
                "==",
                json!(if *v6 { "ipv6" } else { "ipv4" }),
            ),
            Stmt::L4proto(p) => m(json!({"meta": {"key": "l4proto"}}), "==", json!(p)),
            Stmt::TcpUdp(yes) => m(
                json!({"meta": {"key": "l4proto"}}),
                if *yes { "==" } else { "!=" },
                json!({"set": [6, 17]}),
            ),
            Stmt::NeighbourDiscovery => m(
                json!({"payload": {"protocol": "icmpv6", "field": "type"}}),
                "==",
                json!({"set": ["nd-router-solicit", "nd-router-advert", "nd-neighbor-solicit", "nd-neighbor-advert"]}),
            ),
            Stmt::ReversePathMissing => m(
                json!({"fib": {"result": "oif", "flags": ["saddr", "iif"]}}),
                "==",
                json!(false),
            ),
            Stmt::Addr {
                v6,
                side,
                operand: o,
            } => m(
                json!({"payload": {"protocol": if *v6 { "ip6" } else { "ip" }, "field": side.field()}}),
                "==",
                operand(o),
            ),
            Stmt::Port { side, operand: o } => m(
                json!({"payload": {"protocol": "th", "field": side.port()}}),
                "==",
                operand(o),
            ),
            Stmt::Counter(name) => json!({"counter": name}),
            Stmt::Log { group, prefix } => json!({"log": {"prefix": prefix, "group": group}}),
            Stmt::Accept => json!({"accept": null}),
            Stmt::Drop => json!({"drop": null}),
            Stmt::Return => json!({"return": null}),
            Stmt::Jump(c) => json!({"jump": {"target": c}}),
            Stmt::Vmap { v6, side, entries } => json!({"vmap": {
                "key": {"payload": {"protocol": if *v6 { "ip6" } else { "ip" }, "field": side.field()}},
                "data": {"set": entries.iter()
                    .map(|e| json!([e.key_json(), {"goto": {"target": e.chain}}]))
                    .collect::<Vec<_>>()},
            }}),
        }
    }

    fn to_text(&self) -> String {
        let operand = |o: &Operand| match o {
            Operand::Set(s) => format!("@{s}"),
            Operand::Elem(e) => e.to_text(),
        };
        match self {
            Stmt::CtEstablished => "ct state established,related".into(),
            Stmt::Loopback(true) => "iifname \"lo\"".into(),
            Stmt::Loopback(false) => "oifname \"lo\"".into(),
            Stmt::Family(v6) => format!("meta nfproto {}", if *v6 { "ipv6" } else { "ipv4" }),
            Stmt::L4proto(p) => format!("meta l4proto {}", proto_name(*p)),
            Stmt::TcpUdp(true) => "meta l4proto { tcp, udp }".into(),
            Stmt::TcpUdp(false) => "meta l4proto != { tcp, udp }".into(),
            Stmt::NeighbourDiscovery => "icmpv6 type { nd-router-solicit, nd-router-advert, nd-neighbor-solicit, nd-neighbor-advert }".into(),
            Stmt::ReversePathMissing => "fib saddr . iif oif missing".into(),
            Stmt::Addr { v6, side, operand: o } => {
                format!("{} {} {}", if *v6 { "ip6" } else { "ip" }, side.field(), operand(o))
            }
            Stmt::Port { side, operand: o } => format!("th {} {}", side.port(), operand(o)),
            Stmt::Counter(n) => format!("counter name \"{n}\""),
            Stmt::Log { group, prefix } => format!("log prefix \"{prefix}\" group {group}"),
            Stmt::Accept => "accept".into(),
            Stmt::Drop => "drop".into(),
            Stmt::Return => "return".into(),
            Stmt::Jump(c) => format!("jump {c}"),
            Stmt::Vmap { v6, side, entries } => {
                let items: Vec<String> = entries
                    .iter()
                    .map(|e| format!("{} : goto {}", e.key_text(), e.chain))
                    .collect();
                format!(
                    "{} {} vmap {{ {} }}",
                    if *v6 { "ip6" } else { "ip" },
                    side.field(),
                    items.join(", ")
                )
            }
        }
    }
}

fn proto_name(p: u8) -> String {
    match p {
        1 => "icmp".into(),
        6 => "tcp".into(),
        17 => "udp".into(),
        50 => "esp".into(),
        51 => "ah".into(),
        58 => "ipv6-icmp".into(),
        n => n.to_string(),
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuleDef {
    /// The NSG rule this nft rule comes from (`nsg_in`/`nsg_out`), or a fixed-rule label.
    pub comment: String,
    pub stmts: Vec<Stmt>,
}

impl RuleDef {
    /// The comment as the kernel stores it: at most 127 bytes, and no character that would end
    /// an nft string (the same in the JSON and the text form).
    pub fn kernel_comment(&self) -> String {
        let mut comment: String = self
            .comment
            .chars()
            .map(|c| if c == '"' || c.is_control() { '\'' } else { c })
            .collect();
        if comment.len() > 127 {
            let mut cut = 127;
            while !comment.is_char_boundary(cut) {
                cut -= 1;
            }
            comment.truncate(cut);
        }
        comment
    }
}

fn push_elements(t: &mut String, elements: &[Elem]) {
    for (i, e) in elements.iter().enumerate() {
        if i > 0 {
            t.push_str(", ");
        }
        let _ = write!(t, "{}", e.to_text());
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BaseHook {
    pub hook: String,
    pub priority: i32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChainDef {
    pub name: String,
    /// Set for base chains (`type filter hook … policy accept`).
    pub base: Option<BaseHook>,
    /// Shared, not copied, between a plan and its clones: an unchanged chain of a plan cloned
    /// from the applied one compares equal by identity (`Arc`'s `==` checks that first), while
    /// an edit (`Arc::make_mut`) gives the plan its own copy, compared by content. An identity
    /// cannot go stale the way a digest recorded at render time could.
    pub rules: Arc<Vec<RuleDef>>,
}

/// One NSG rule as rendered: which counter counts it, which nft rules implement it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RenderedRule {
    pub direction: String,
    pub name: String,
    pub priority: u32,
    pub access: String,
    pub is_default: bool,
    pub audit: bool,
    pub counter: String,
    /// nft rules emitted (0 when the rule can match nothing, e.g. its sides share no family).
    pub nft_rules: usize,
}

/// The whole table, ready to render or diff.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TablePlan {
    pub table: String,
    pub nsg: String,
    pub target: Target,
    pub hook: HookMode,
    pub log_group: u16,
    pub scope: Vec<IpNet>,
    pub sets: Vec<SetDef>,
    pub counters: Vec<String>,
    pub chains: Vec<ChainDef>,
    pub rules: Vec<RenderedRule>,
    pub notes: Vec<String>,
}

pub const FAMILY: &str = "inet";
pub const CHAIN_IN: &str = "nsg_in";
pub const CHAIN_OUT: &str = "nsg_out";

/// nft-friendly identifier: letters, digits and `_` only.
pub fn sanitize(name: &str) -> String {
    let s: String = name
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    if s.starts_with(|c: char| c.is_ascii_alphabetic()) {
        s
    } else {
        format!("n_{s}")
    }
}

/// Default table name for an NSG.
pub fn table_name(nsg: &str) -> String {
    let mut t = format!("palisade_{}", sanitize(nsg));
    t.truncate(200);
    t
}

fn aggregate_family(nets: &[IpNet], v6: bool) -> Vec<IpNet> {
    let mut out: Vec<IpNet> = if v6 {
        let v: Vec<Ipv6Net> = nets
            .iter()
            .filter_map(|n| match n {
                IpNet::V6(n) => Some(n.trunc()),
                _ => None,
            })
            .collect();
        Ipv6Net::aggregate(&v).into_iter().map(IpNet::V6).collect()
    } else {
        let v: Vec<Ipv4Net> = nets
            .iter()
            .filter_map(|n| match n {
                IpNet::V4(n) => Some(n.trunc()),
                _ => None,
            })
            .collect();
        Ipv4Net::aggregate(&v).into_iter().map(IpNet::V4).collect()
    };
    out.sort();
    out
}

/// Port ranges merged into disjoint, sorted intervals.
pub fn merge_ports(ranges: &[PortRange]) -> Vec<(u16, u16)> {
    let mut v: Vec<(u16, u16)> = ranges.iter().map(|r| (r.first, r.last)).collect();
    v.sort();
    let mut out: Vec<(u16, u16)> = vec![];
    for (a, b) in v {
        match out.last_mut() {
            Some(last) if (a as u32) <= last.1 as u32 + 1 => last.1 = last.1.max(b),
            _ => out.push((a, b)),
        }
    }
    out
}

fn is_all_ports(p: &[(u16, u16)]) -> bool {
    p == [(0, 65535)]
}

/// The "rule" the anti-spoofing drop logs under: parentheses cannot occur in an NSG rule name,
/// so it never collides with one.
pub const RPFILTER_RULE: &str = "(anti-spoofing)";

fn log_prefix(kind: &str, nsg: &str, rule: &str) -> String {
    nflog_prefix(kind, &format!("{nsg}/{rule}"))
}

/// `palisade <kind> <what>: ` as `nflog::parse_prefix` reads it, within the kernel's 128 bytes
/// (NF_LOG_PREFIXLEN, with the NUL): a longer one is cut and marked `..`. A quote or backslash
/// would end or escape the string in nft's text syntax, so each becomes `'` (the JSON form says
/// the same).
pub fn nflog_prefix(kind: &str, what: &str) -> String {
    let mut p = format!("palisade {kind} {}: ", what.replace(['"', '\\'], "'"));
    if p.len() > 120 {
        let mut cut = 116;
        while !p.is_char_boundary(cut) {
            cut -= 1;
        }
        p.truncate(cut);
        p.push_str("..: ");
    }
    p
}

struct Builder {
    sets: Vec<SetDef>,
    counters: Vec<String>,
    used_names: BTreeSet<String>,
}

impl Builder {
    fn unique(&mut self, base: String) -> String {
        let mut name = base.clone();
        let mut i = 2;
        while self.used_names.contains(&name) {
            name = format!("{base}_{i}");
            i += 1;
        }
        self.used_names.insert(name.clone());
        name
    }

    /// A named interval set, or the single element inline.
    fn operand(&mut self, name: &str, kind: SetKind, elements: Vec<Elem>) -> Operand {
        if elements.len() == 1 {
            return Operand::Elem(elements[0]);
        }
        self.sets.push(SetDef {
            name: name.to_string(),
            kind,
            elements: elements.into(),
        });
        Operand::Set(name.to_string())
    }
}

fn full_family(nets: &[IpNet]) -> bool {
    nets.len() == 1 && nets[0].prefix_len() == 0
}

/// Render one direction's rules into a chain.
fn render_direction(
    b: &mut Builder,
    nsg: &CompiledNsg,
    rules: &DirectionRules,
    inbound: bool,
    opts: &RenderOptions,
    rendered: &mut Vec<RenderedRule>,
    notes: &mut Vec<String>,
) -> ChainDef {
    let dir = if inbound { "in" } else { "out" };
    let mut chain = ChainDef {
        name: if inbound { CHAIN_IN } else { CHAIN_OUT }.to_string(),
        base: None,
        rules: vec![RuleDef {
            comment: "stateful: replies and related (NSG-7.1)".into(),
            stmts: vec![Stmt::CtEstablished, Stmt::Accept],
        }]
        .into(),
    };
    if !inbound && !nsg.names_platform_tags {
        // NSG-8.4: flows a NIC starts to the platform addresses bypass the NSG.
        Arc::make_mut(&mut chain.rules).push(RuleDef {
            comment: "platform exemption (NSG-8.4)".into(),
            stmts: vec![
                Stmt::Addr {
                    v6: false,
                    side: Side::Dst,
                    operand: Operand::Set("platform4".into()),
                },
                Stmt::Return,
            ],
        });
        b.sets.push(SetDef {
            name: "platform4".into(),
            kind: SetKind::Ipv4Addr,
            elements: PLATFORM_ADDRESSES
                .iter()
                .map(|a| Elem::Net(IpNet::from(*a)))
                .collect::<Vec<_>>()
                .into(),
        });
        b.used_names.insert("platform4".into());
    }
    for r in rules.rules.iter() {
        let base = format!("{dir}_{}", sanitize(&r.name));
        let counter = b.unique(base.clone());
        b.counters.push(counter.clone());
        let n = render_rule(b, nsg, r, &counter, opts, Arc::make_mut(&mut chain.rules));
        if n == 0 {
            notes.push(format!(
                "{dir}bound rule {} ({}) matches nothing: its source and destination share no address family",
                r.name, r.priority
            ));
        }
        rendered.push(RenderedRule {
            direction: if inbound { "Inbound" } else { "Outbound" }.into(),
            name: r.name.clone(),
            priority: r.priority,
            access: format!("{:?}", r.access),
            is_default: r.is_default,
            audit: r.audit,
            counter,
            nft_rules: n,
        });
    }
    chain
}

fn render_rule(
    b: &mut Builder,
    nsg: &CompiledNsg,
    r: &CompiledRule,
    counter: &str,
    opts: &RenderOptions,
    out: &mut Vec<RuleDef>,
) -> usize {
    let comment = format!("{} {} {:?}", r.qualified_name(), r.priority, r.access);
    let tail: Vec<Stmt> = if r.audit {
        vec![
            Stmt::Counter(counter.to_string()),
            Stmt::Log {
                group: opts.log_group,
                prefix: log_prefix("audit", &nsg.name, &r.name),
            },
        ]
    } else {
        match r.access {
            Access::Allow => vec![Stmt::Counter(counter.to_string()), Stmt::Return],
            Access::Deny => vec![
                Stmt::Counter(counter.to_string()),
                Stmt::Log {
                    group: opts.log_group,
                    prefix: log_prefix("deny", &nsg.name, &r.name),
                },
                Stmt::Drop,
            ],
        }
    };
    let src_ports = merge_ports(&r.source_ports);
    let dst_ports = merge_ports(&r.destination_ports);
    let ports_restricted = !is_all_ports(&src_ports) || !is_all_ports(&dst_ports);
    let mut emitted = 0;
    for v6 in [false, true] {
        let src = aggregate_family(&r.source, v6);
        let dst = aggregate_family(&r.destination, v6);
        if src.is_empty() || dst.is_empty() {
            continue;
        }
        let fam = if v6 { "6" } else { "4" };
        let mut head = vec![];
        let mut addr_match = false;
        for (side, nets) in [(Side::Src, &src), (Side::Dst, &dst)] {
            if full_family(nets) {
                continue;
            }
            let tag = if side == Side::Src { "src" } else { "dst" };
            let name = format!("{counter}_{tag}{fam}");
            let kind = if v6 {
                SetKind::Ipv6Addr
            } else {
                SetKind::Ipv4Addr
            };
            let operand = b.operand(&name, kind, nets.iter().map(|n| Elem::Net(*n)).collect());
            head.push(Stmt::Addr { v6, side, operand });
            addr_match = true;
        }
        if !addr_match {
            head.insert(0, Stmt::Family(v6));
        }
        // Protocol and ports (NSG-2.2: ports apply to TCP and UDP only).
        let mut variants: Vec<Vec<Stmt>> = vec![];
        let port_stmts = |b: &mut Builder, variants_name: &str| -> Vec<Stmt> {
            let mut s = vec![];
            for (side, ports, tag) in [
                (Side::Src, &src_ports, "sport"),
                (Side::Dst, &dst_ports, "dport"),
            ] {
                if is_all_ports(ports) {
                    continue;
                }
                let name = format!("{counter}_{tag}{variants_name}");
                let operand = b.operand(
                    &name,
                    SetKind::InetService,
                    ports.iter().map(|(a, z)| Elem::Ports(*a, *z)).collect(),
                );
                s.push(Stmt::Port { side, operand });
            }
            s
        };
        match r.protocol {
            Protocol::Any if ports_restricted => {
                // The port sets are the same for both families: create them once.
                let ps = if v6 && emitted > 0 {
                    port_stmts_existing(b, counter, &src_ports, &dst_ports)
                } else {
                    port_stmts(b, "")
                };
                let mut a = vec![Stmt::TcpUdp(true)];
                a.extend(ps);
                variants.push(a);
                variants.push(vec![Stmt::TcpUdp(false)]);
            }
            Protocol::Any => variants.push(vec![]),
            p => {
                let num = p.number(v6).unwrap_or(0);
                let mut a = vec![Stmt::L4proto(num)];
                if p.has_ports() {
                    let ps = if v6 && emitted > 0 {
                        port_stmts_existing(b, counter, &src_ports, &dst_ports)
                    } else {
                        port_stmts(b, "")
                    };
                    a.extend(ps);
                }
                variants.push(a);
            }
        }
        for v in variants {
            let mut stmts = head.clone();
            stmts.extend(v);
            stmts.extend(tail.iter().cloned());
            out.push(RuleDef {
                comment: comment.clone(),
                stmts,
            });
            emitted += 1;
        }
    }
    emitted
}

/// Port operands for a rule whose port sets were already created for the other family.
fn port_stmts_existing(
    _b: &mut Builder,
    counter: &str,
    src_ports: &[(u16, u16)],
    dst_ports: &[(u16, u16)],
) -> Vec<Stmt> {
    let mut s = vec![];
    for (side, ports, tag) in [
        (Side::Src, src_ports, "sport"),
        (Side::Dst, dst_ports, "dport"),
    ] {
        if is_all_ports(ports) {
            continue;
        }
        let operand = if ports.len() == 1 {
            Operand::Elem(Elem::Ports(ports[0].0, ports[0].1))
        } else {
            Operand::Set(format!("{counter}_{tag}"))
        };
        s.push(Stmt::Port { side, operand });
    }
    s
}

/// Render the NSG in force for a subnet or NIC.
pub fn render(
    snap: &Snapshot,
    target: &Target,
    opts: &RenderOptions,
) -> Result<TablePlan, RenderError> {
    let (nsg_id, scope, label) = match target {
        Target::Subnet(name) => {
            let i = snap
                .subnet_by_name(name)
                .ok_or_else(|| RenderError::NoSubnet(name.clone()))?;
            let s = snap.subnet(i);
            (s.nsg, s.prefixes.clone(), format!("subnet {}", s.name))
        }
        Target::Nic(name) => {
            let i = snap
                .nic_by_name(name)
                .ok_or_else(|| RenderError::NoNic(name.clone()))?;
            let n = snap.nic(i);
            (
                n.nsg,
                n.addresses.iter().map(|a| IpNet::from(*a)).collect(),
                format!("NIC {}", n.name),
            )
        }
    };
    let nsg_id = nsg_id.ok_or_else(|| RenderError::NoNsg(label.clone()))?;
    if scope.is_empty() {
        return Err(RenderError::NoAddresses(label));
    }
    let nsg = snap.nsg(nsg_id);
    let bad: Vec<String> = nsg
        .inbound
        .rules
        .iter()
        .chain(nsg.outbound.rules.iter())
        .flat_map(|r| {
            r.unresolvable
                .iter()
                .map(move |u| format!("{}: {u}", r.name))
        })
        .collect();
    if !bad.is_empty() {
        return Err(RenderError::Unresolvable {
            nsg: nsg.name.clone(),
            items: bad.join(", "),
        });
    }
    Ok(render_nsg(nsg, target.clone(), &scope, opts))
}

/// Render a compiled NSG scoped to `scope` (the target's addresses).
pub fn render_nsg(
    nsg: &CompiledNsg,
    target: Target,
    scope: &[IpNet],
    opts: &RenderOptions,
) -> TablePlan {
    let mut b = Builder {
        sets: vec![],
        counters: vec![],
        used_names: ["scope4", "scope6"].iter().map(|s| s.to_string()).collect(),
    };
    let mut rendered = vec![];
    let mut notes = vec![];
    let scope4 = aggregate_family(scope, false);
    let scope6 = aggregate_family(scope, true);
    let nsg_in = render_direction(
        &mut b,
        nsg,
        &nsg.inbound,
        true,
        opts,
        &mut rendered,
        &mut notes,
    );
    let nsg_out = render_direction(
        &mut b,
        nsg,
        &nsg.outbound,
        false,
        opts,
        &mut rendered,
        &mut notes,
    );
    let mut sets = vec![
        SetDef {
            name: "scope4".into(),
            kind: SetKind::Ipv4Addr,
            elements: scope4
                .iter()
                .map(|n| Elem::Net(*n))
                .collect::<Vec<_>>()
                .into(),
        },
        SetDef {
            name: "scope6".into(),
            kind: SetKind::Ipv6Addr,
            elements: scope6
                .iter()
                .map(|n| Elem::Net(*n))
                .collect::<Vec<_>>()
                .into(),
        },
    ];
    sets.extend(b.sets);
    let jump = |v6: bool, side: Side, chain: &str, comment: &str| RuleDef {
        comment: comment.to_string(),
        stmts: vec![
            Stmt::Addr {
                v6,
                side,
                operand: Operand::Set(if v6 { "scope6" } else { "scope4" }.into()),
            },
            Stmt::Jump(chain.to_string()),
        ],
    };
    let nd = RuleDef {
        comment: "IPv6 neighbour discovery (platform, not NSG)".into(),
        stmts: vec![Stmt::L4proto(58), Stmt::NeighbourDiscovery, Stmt::Accept],
    };
    // NSG-7.1: replies and related pass without evaluation. Every path through a host base
    // chain accepts such a packet anyway (the NSG chain's own first rule, the policy), so
    // accepting it before the jumps changes no verdict and spares most packets of a
    // connection the scope lookup and the jump. After the loopback and neighbour-discovery
    // rules (two compares), so that those fixed rules stay the chain's head.
    let stateful = RuleDef {
        comment: "stateful: replies and related (NSG-7.1)".into(),
        stmts: vec![Stmt::CtEstablished, Stmt::Accept],
    };
    // NSG-6 order when a subnet's and a NIC's table share a host: inbound the subnet NSG
    // first, outbound the NIC NSG first. So a subnet table hooks input 10 earlier and output 10
    // later than a NIC table; a drop by the first is final, and its counter and log name the
    // rule `trace` names.
    let subnet = matches!(target, Target::Subnet(_));
    let base = |hook: &str| {
        let shift = match (subnet, hook) {
            (true, "input") => -10,
            (true, "output") => 10,
            _ => 0,
        };
        Some(BaseHook {
            hook: hook.into(),
            priority: opts.priority + shift,
        })
    };
    let mut chains = vec![];
    match opts.hook {
        HookMode::Host => {
            chains.push(ChainDef {
                name: "input".into(),
                base: base("input"),
                rules: vec![
                    RuleDef {
                        comment: "loopback is not NSG traffic".into(),
                        stmts: vec![Stmt::Loopback(true), Stmt::Accept],
                    },
                    nd.clone(),
                    stateful.clone(),
                    jump(
                        false,
                        Side::Dst,
                        CHAIN_IN,
                        "inbound: to the target's addresses",
                    ),
                    jump(
                        true,
                        Side::Dst,
                        CHAIN_IN,
                        "inbound: to the target's addresses",
                    ),
                ]
                .into(),
            });
            chains.push(ChainDef {
                name: "output".into(),
                base: base("output"),
                rules: vec![
                    RuleDef {
                        comment: "loopback is not NSG traffic".into(),
                        stmts: vec![Stmt::Loopback(false), Stmt::Accept],
                    },
                    nd,
                    stateful,
                    jump(
                        false,
                        Side::Src,
                        CHAIN_OUT,
                        "outbound: from the target's addresses",
                    ),
                    jump(
                        true,
                        Side::Src,
                        CHAIN_OUT,
                        "outbound: from the target's addresses",
                    ),
                ]
                .into(),
            });
        }
        HookMode::Router => {
            chains.push(ChainDef {
                name: "forward".into(),
                base: base("forward"),
                rules: vec![
                    jump(false, Side::Src, CHAIN_OUT, "outbound first (NSG-6)"),
                    jump(true, Side::Src, CHAIN_OUT, "outbound first (NSG-6)"),
                    jump(false, Side::Dst, CHAIN_IN, "then inbound"),
                    jump(true, Side::Dst, CHAIN_IN, "then inbound"),
                ]
                .into(),
            });
        }
    }
    if opts.rpfilter {
        // Before the NSG hooks, so a spoofed packet never reaches a rule that trusts its source.
        chains.push(ChainDef {
            name: "prerouting".into(),
            base: Some(BaseHook {
                hook: "prerouting".into(),
                priority: opts.priority - 150,
            }),
            rules: vec![
                RuleDef {
                    comment: "loopback is local traffic".into(),
                    stmts: vec![Stmt::Loopback(true), Stmt::Accept],
                },
                RuleDef {
                    // Duplicate address detection comes from `::`, which has no route.
                    comment: "IPv6 neighbour discovery (platform, not NSG)".into(),
                    stmts: vec![Stmt::L4proto(58), Stmt::NeighbourDiscovery, Stmt::Accept],
                },
                RuleDef {
                    comment: "anti-spoofing: strict reverse path".into(),
                    stmts: vec![
                        Stmt::ReversePathMissing,
                        Stmt::Log {
                            group: opts.log_group,
                            prefix: log_prefix("deny", &nsg.name, RPFILTER_RULE),
                        },
                        Stmt::Drop,
                    ],
                },
            ]
            .into(),
        });
    }
    chains.push(nsg_in);
    chains.push(nsg_out);
    let mut plan = TablePlan {
        table: opts.table.clone().unwrap_or_else(|| table_name(&nsg.name)),
        nsg: nsg.name.clone(),
        target,
        hook: opts.hook,
        log_group: opts.log_group,
        scope: scope4.into_iter().chain(scope6).collect(),
        sets,
        counters: b.counters,
        chains,
        rules: rendered,
        notes,
    };
    if opts.layout == Layout::Classified {
        crate::classify::classify(&mut plan, &crate::classify::ClassifyOptions::default());
    }
    plan
}

impl TablePlan {
    pub fn table_obj(&self) -> Value {
        json!({"family": FAMILY, "name": self.table})
    }

    pub fn set_obj(&self, s: &SetDef, with_elements: bool) -> Value {
        let mut o = json!({
            "family": FAMILY, "table": self.table, "name": s.name,
            "type": s.kind.nft_type(), "flags": ["interval"],
        });
        if with_elements && !s.elements.is_empty() {
            o["elem"] = Value::Array(s.elements.iter().map(|e| e.to_json()).collect());
        }
        o
    }

    pub fn elements_obj(&self, set: &str, elements: &[Elem]) -> Value {
        json!({"family": FAMILY, "table": self.table, "name": set,
               "elem": elements.iter().map(|e| e.to_json()).collect::<Vec<_>>()})
    }

    pub fn counter_obj(&self, name: &str) -> Value {
        json!({"family": FAMILY, "table": self.table, "name": name})
    }

    pub fn chain_obj(&self, c: &ChainDef) -> Value {
        let mut o = json!({"family": FAMILY, "table": self.table, "name": c.name});
        if let Some(b) = &c.base {
            o["type"] = json!("filter");
            o["hook"] = json!(b.hook);
            o["prio"] = json!(b.priority);
            o["policy"] = json!("accept");
        }
        o
    }

    pub fn rule_obj(&self, chain: &str, r: &RuleDef) -> Value {
        json!({"family": FAMILY, "table": self.table, "chain": chain,
               "expr": r.stmts.iter().map(|s| s.to_json()).collect::<Vec<_>>(),
               "comment": r.kernel_comment()})
    }

    /// `inet TABLE`, the object every text command names.
    fn text_table(&self) -> String {
        format!("{FAMILY} {}", self.table)
    }

    /// `add set …` with its elements, in nft's text syntax.
    pub fn set_text(&self, s: &SetDef) -> String {
        let mut t = format!(
            "add set {} {} {{ type {}; flags interval; ",
            self.text_table(),
            s.name,
            s.kind.nft_type()
        );
        if !s.elements.is_empty() {
            t.push_str("elements = { ");
            push_elements(&mut t, &s.elements);
            t.push_str(" }; ");
        }
        t.push('}');
        t
    }

    /// `add element …` (`add`) or `delete element …`.
    pub fn elements_text(&self, verb: &str, set: &str, elements: &[Elem]) -> String {
        let mut t = format!("{verb} element {} {set} {{ ", self.text_table());
        push_elements(&mut t, elements);
        t.push_str(" }");
        t
    }

    pub fn counter_text(&self, verb: &str, name: &str) -> String {
        format!("{verb} counter {} {name}", self.text_table())
    }

    pub fn chain_text(&self, c: &ChainDef) -> String {
        match &c.base {
            Some(b) => format!(
                "add chain {} {} {{ type filter hook {} priority {}; policy accept; }}",
                self.text_table(),
                c.name,
                b.hook,
                b.priority
            ),
            None => format!("add chain {} {}", self.text_table(), c.name),
        }
    }

    /// `add rule` at the end of `chain`, or `insert rule … position H` (before the rule whose
    /// handle is H).
    pub fn rule_text(&self, chain: &str, r: &RuleDef, before: Option<u64>) -> String {
        let stmts: Vec<String> = r.stmts.iter().map(Stmt::to_text).collect();
        let (verb, position) = match before {
            Some(h) => ("insert", format!(" position {h}")),
            None => ("add", String::new()),
        };
        format!(
            "{verb} rule {} {chain}{position} {} comment \"{}\"",
            self.text_table(),
            stmts.join(" "),
            r.kernel_comment()
        )
    }

    pub fn delete_rule_text(&self, chain: &str, handle: u64) -> String {
        format!("delete rule {} {chain} handle {handle}", self.text_table())
    }

    pub fn flush_chain_text(&self, chain: &str) -> String {
        format!("flush chain {} {chain}", self.text_table())
    }

    pub fn delete_set_text(&self, set: &str) -> String {
        format!("delete set {} {set}", self.text_table())
    }

    /// [`create_commands`](Self::create_commands) as nft text, one command a line: what
    /// `apply` sends (nft reads text several times faster than JSON; see `docs/benchmarks.md`).
    pub fn create_text(&self) -> Vec<String> {
        let mut cmds = vec![format!("add table {}", self.text_table())];
        cmds.extend(self.sets.iter().map(|s| self.set_text(s)));
        cmds.extend(self.counters.iter().map(|c| self.counter_text("add", c)));
        let mut order: Vec<&ChainDef> = self.chains.iter().filter(|c| c.base.is_none()).collect();
        order.extend(self.chains.iter().filter(|c| c.base.is_some()));
        cmds.extend(order.iter().map(|c| self.chain_text(c)));
        for c in &order {
            cmds.extend(c.rules.iter().map(|r| self.rule_text(&c.name, r, None)));
        }
        cmds
    }

    /// [`replace_commands`](Self::replace_commands) as nft text.
    pub fn replace_text(&self) -> Vec<String> {
        let mut cmds = vec![
            format!("add table {}", self.text_table()),
            format!("delete table {}", self.text_table()),
        ];
        cmds.extend(self.create_text());
        cmds
    }

    /// The statements that create the whole table (sets before the rules that use them).
    pub fn create_commands(&self) -> Vec<Value> {
        let mut cmds = vec![json!({"add": {"table": self.table_obj()}})];
        for s in &self.sets {
            cmds.push(json!({"add": {"set": self.set_obj(s, true)}}));
        }
        for c in &self.counters {
            cmds.push(json!({"add": {"counter": self.counter_obj(c)}}));
        }
        // Regular chains first so that jumps resolve; base chains last, so nothing is hooked
        // before its targets exist (all in one transaction anyway).
        let mut order: Vec<&ChainDef> = self.chains.iter().filter(|c| c.base.is_none()).collect();
        order.extend(self.chains.iter().filter(|c| c.base.is_some()));
        for c in &order {
            cmds.push(json!({"add": {"chain": self.chain_obj(c)}}));
        }
        for c in &order {
            for r in c.rules.iter() {
                cmds.push(json!({"add": {"rule": self.rule_obj(&c.name, r)}}));
            }
        }
        cmds
    }

    /// One transaction replacing the table whole: `add` (so `delete` cannot fail), `delete`,
    /// then everything anew.
    pub fn replace_commands(&self) -> Vec<Value> {
        let mut cmds = vec![
            json!({"add": {"table": self.table_obj()}}),
            json!({"delete": {"table": self.table_obj()}}),
        ];
        cmds.extend(self.create_commands());
        cmds
    }

    /// nft's text syntax, for people.
    pub fn to_text(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "table {FAMILY} {} {{", self.table);
        for set in &self.sets {
            let _ = writeln!(s, "\tset {} {{", set.name);
            let _ = writeln!(s, "\t\ttype {}", set.kind.nft_type());
            let _ = writeln!(s, "\t\tflags interval");
            if !set.elements.is_empty() {
                let elems: Vec<String> = set.elements.iter().map(|e| e.to_text()).collect();
                let _ = writeln!(s, "\t\telements = {{ {} }}", elems.join(", "));
            }
            let _ = writeln!(s, "\t}}\n");
        }
        for c in &self.counters {
            let _ = writeln!(s, "\tcounter {c} {{\n\t}}\n");
        }
        for c in &self.chains {
            let _ = writeln!(s, "\tchain {} {{", c.name);
            if let Some(b) = &c.base {
                let _ = writeln!(
                    s,
                    "\t\ttype filter hook {} priority {}; policy accept;",
                    b.hook, b.priority
                );
            }
            for r in c.rules.iter() {
                let stmts: Vec<String> = r.stmts.iter().map(|x| x.to_text()).collect();
                let _ = writeln!(s, "\t\t{} comment \"{}\"", stmts.join(" "), r.comment);
            }
            let _ = writeln!(s, "\t}}\n");
        }
        let _ = writeln!(s, "}}");
        s
    }

    pub fn set(&self, name: &str) -> Option<&SetDef> {
        self.sets.iter().find(|s| s.name == name)
    }

    pub fn chain(&self, name: &str) -> Option<&ChainDef> {
        self.chains.iter().find(|c| c.name == name)
    }

    /// Number of set elements across all sets.
    pub fn element_count(&self) -> usize {
        self.sets.iter().map(|s| s.elements.len()).sum()
    }
}
