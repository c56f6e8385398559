//! Learning mode (PAL-5.4): the denials a scope met in a time window, turned into proposed allow
//! rules with their evidence. Pure: flow records, the network and the catalogs in, proposals out;
//! nothing is applied. [`native_diff`] writes the proposals as a native-format document and
//! [`merge_native`] merges them into a native network file.
//!
//! - HTTP/HTTPS denials by the firewall's default action → an application rule per name and
//!   `protocol:port`; ≥ [`WIDEN_AT`] distinct names under one parent become `*.<parent>`, never
//!   when the parent is a public suffix (the Public Suffix List compiled into `psl`).
//! - Other TCP/UDP default denials → a network rule to the name seen for the address (the
//!   record's own name, else the name bindings the gateway's resolver answers from), else the
//!   smallest service tag holding every observed address, else the addresses.
//! - NSG denials (the kernel's NFLOG records) → an allow rule in the NSG that denied, at the free
//!   priority nearest before the denying rule, so it overrides that rule and nothing earlier.
//!
//! Denials an explicit rule made (someone wrote a Deny) and the gateway's own checks (address,
//! tunnel, handshake) are passed over and counted: learning widens only what nobody decided.

use crate::fqdn::NamePattern;
use ipnet::IpNet;
use palisade_flowlog::FlowRecord;
use palisade_model::catalog::DependencyCatalog;
use palisade_model::{Access, AddressItem, Direction, Network};
use palisade_policy::Snapshot;
use serde::Serialize;
use serde_json::{json, Map, Value};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;
use std::time::SystemTime;

/// Distinct sibling names under one parent from which a name widens to `*.<parent>` (PAL-5.4).
pub const WIDEN_AT: usize = 5;
/// Samples kept per proposal unless asked otherwise.
pub const DEFAULT_SAMPLES: usize = 5;
/// NSG user-rule priority range (NSG-3).
const NSG_PRIORITIES: std::ops::RangeInclusive<u32> = 100..=4096;

/// Where the observed traffic came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", content = "name")]
pub enum ScopeKind {
    Subnet(String),
    Prefix(String),
    ApplicationSecurityGroup(String),
    IpGroup(String),
}

/// A resolved scope: what it is and the addresses it covers.
#[derive(Debug, Clone, Serialize)]
pub struct Scope {
    pub kind: ScopeKind,
    pub addresses: Vec<IpNet>,
}

impl Scope {
    /// `TEXT` as a prefix or address, else a subnet, an ASG or an IP group of the network;
    /// `subnet:`, `asg:`, `ipgroup:` force the kind.
    pub fn resolve(snapshot: &Snapshot, text: &str) -> Result<Scope, String> {
        let (forced, name) = match text.split_once(':') {
            Some((k, n)) if ["subnet", "asg", "ipgroup"].contains(&k) => (Some(k), n),
            _ => (None, text),
        };
        let net = &snapshot.network;
        if forced.is_none() {
            let prefix = name
                .parse::<IpNet>()
                .ok()
                .or_else(|| name.parse::<IpAddr>().ok().map(IpNet::from));
            if let Some(p) = prefix {
                return Ok(Scope {
                    kind: ScopeKind::Prefix(p.trunc().to_string()),
                    addresses: vec![p.trunc()],
                });
            }
        }
        if forced.is_none_or(|k| k == "subnet") {
            if let Some(id) = snapshot.subnet_by_name(name) {
                let s = snapshot.subnet(id);
                return Ok(Scope {
                    kind: ScopeKind::Subnet(s.name.clone()),
                    addresses: s.prefixes.clone(),
                });
            }
        }
        if forced.is_none_or(|k| k == "asg") {
            let members = asg_members(net, name);
            let declared = net
                .application_security_groups
                .iter()
                .find(|a| a.name.eq_ignore_ascii_case(name));
            if declared.is_some() || !members.is_empty() {
                let label = declared.map_or(name.to_string(), |a| a.name.clone());
                return Ok(Scope {
                    kind: ScopeKind::ApplicationSecurityGroup(label),
                    addresses: members.into_iter().map(IpNet::from).collect(),
                });
            }
        }
        if forced.is_none_or(|k| k == "ipgroup") {
            if let Some(g) = net
                .ip_groups
                .iter()
                .find(|g| g.name.eq_ignore_ascii_case(name))
            {
                return Ok(Scope {
                    kind: ScopeKind::IpGroup(g.name.clone()),
                    addresses: g.ip_addresses.iter().flat_map(item_nets).collect(),
                });
            }
        }
        Err(format!(
            "--scope `{text}`: expected a prefix or address, or the name of a subnet, application \
             security group or IP group of the network (prefix with subnet:, asg: or ipgroup: to choose)"
        ))
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        self.addresses.iter().any(|n| n.contains(&ip))
    }

    pub fn label(&self) -> String {
        match &self.kind {
            ScopeKind::Subnet(n) => format!("subnet {n}"),
            ScopeKind::Prefix(n) => format!("prefix {n}"),
            ScopeKind::ApplicationSecurityGroup(n) => format!("application security group {n}"),
            ScopeKind::IpGroup(n) => format!("IP group {n}"),
        }
    }

    /// Firewall rule sources: the IP group itself, else the scope's prefixes.
    fn firewall_source(&self) -> (&'static str, Vec<String>) {
        match &self.kind {
            ScopeKind::IpGroup(n) => ("sourceIpGroups", vec![n.clone()]),
            _ => ("sourceAddresses", self.prefix_strings()),
        }
    }

    /// NSG rule sources: the ASG itself, else the scope's prefixes.
    fn nsg_source(&self) -> (&'static str, Value) {
        match &self.kind {
            ScopeKind::ApplicationSecurityGroup(n) => {
                ("sourceApplicationSecurityGroups", json!([n]))
            }
            _ => ("sourceAddressPrefixes", json!(self.prefix_strings())),
        }
    }

    fn prefix_strings(&self) -> Vec<String> {
        self.addresses.iter().map(ToString::to_string).collect()
    }
}

fn asg_members(net: &Network, asg: &str) -> Vec<IpAddr> {
    let mut out: Vec<IpAddr> = net
        .network_interfaces
        .iter()
        .flat_map(|n| &n.ip_configurations)
        .filter(|c| {
            c.application_security_groups
                .iter()
                .any(|a| a.eq_ignore_ascii_case(asg))
        })
        .filter_map(|c| c.private_ip_address)
        .collect();
    out.sort();
    out.dedup();
    out
}

/// An IP group item as prefixes (a range becomes the CIDRs covering it).
fn item_nets(item: &AddressItem) -> Vec<IpNet> {
    match item {
        AddressItem::Prefix(p) => vec![*p],
        AddressItem::Range(a, b) => match (a, b) {
            (IpAddr::V4(a), IpAddr::V4(b)) => {
                ipnet::Ipv4Subnets::new(*a, *b, 0).map(IpNet::V4).collect()
            }
            (IpAddr::V6(a), IpAddr::V6(b)) => {
                ipnet::Ipv6Subnets::new(*a, *b, 0).map(IpNet::V6).collect()
            }
            _ => vec![],
        },
        _ => vec![],
    }
}

/// What to learn from.
pub struct Input<'a> {
    pub snapshot: &'a Snapshot,
    pub records: &'a [FlowRecord],
    pub scope: &'a Scope,
    pub since: Option<SystemTime>,
    pub until: Option<SystemTime>,
    /// Dependency catalogs (CAT-5) whose entries are named as evidence.
    pub catalogs: &'a [DependencyCatalog],
    /// Names known for addresses: the name bindings the gateway's resolver and DNS proxy
    /// answer from (name → addresses).
    pub names: &'a HashMap<String, Vec<IpAddr>>,
    /// The firewall whose denials are learned; `None`: the network's only firewall.
    pub firewall: Option<&'a str>,
    /// Samples kept per proposal.
    pub samples: usize,
}

/// The proposals for one scope and window.
#[derive(Debug, Clone, Serialize)]
pub struct Learned {
    pub scope: Scope,
    pub since: Option<String>,
    pub until: Option<String>,
    /// Denials of the scope in the window that were read.
    pub denials: usize,
    pub proposals: Vec<Proposal>,
    /// Denials not turned into proposals, by why (deterministic order).
    pub passed_over: Vec<PassedOver>,
    /// Where the firewall proposals go, when there are any.
    pub firewall: Option<FirewallTarget>,
}

#[derive(Debug, Clone, Serialize)]
pub struct PassedOver {
    pub why: String,
    pub count: usize,
}

/// The resource that holds proposed firewall rules: a policy's new rule collection group, or a
/// classic firewall's new collections.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "camelCase")]
pub enum FirewallTarget {
    Policy {
        policy: String,
        group: String,
        priority: u32,
    },
    Classic {
        firewall: String,
        application_collection: String,
        application_priority: u32,
        network_collection: String,
        network_priority: u32,
    },
}

#[derive(Debug, Clone, Serialize)]
pub struct Proposal {
    /// The proposed rule's name.
    pub name: String,
    pub rule: ProposedRule,
    /// Why this rule, in a sentence.
    pub why: String,
    pub evidence: Evidence,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind")]
pub enum ProposedRule {
    ApplicationRule {
        /// `Http` or `Https`.
        protocol: String,
        port: u16,
        target_fqdns: Vec<String>,
    },
    NetworkRule {
        /// `TCP` or `UDP`.
        protocol: String,
        port: u16,
        destination: Destination,
    },
    NsgRule {
        nsg: String,
        direction: String,
        priority: u32,
        /// `Tcp`, `Udp`, …
        protocol: String,
        destination_addresses: Vec<String>,
        port: u16,
        /// The denying rule it goes before, and its priority.
        before: String,
        before_priority: u32,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Destination {
    Fqdn(String),
    ServiceTag(String),
    Addresses(Vec<String>),
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Evidence {
    pub count: usize,
    pub first_seen: String,
    pub last_seen: String,
    pub samples: Vec<Sample>,
    /// Dependency-catalog entries the proposal matches (CAT-5).
    pub catalog: Vec<CatalogMatch>,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Sample {
    pub time: String,
    pub source: String,
    pub destination: String,
    pub name: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct CatalogMatch {
    pub catalog: String,
    pub category: String,
    pub endpoint: String,
    pub port: u16,
    pub required: bool,
}

/// A denial reduced to what learning needs.
#[derive(Debug, Clone)]
struct Seen<'a> {
    record: &'a FlowRecord,
    destination: Option<IpAddr>,
    name: Option<String>,
}

/// Propose rules for the scope's denials in the window (PAL-5.4). Deterministic: the same
/// records in any order give the same proposals in the same order.
pub fn propose(input: &Input) -> Result<Learned, String> {
    let snapshot = input.snapshot;
    let network = &snapshot.network;
    let mut passed: BTreeMap<String, usize> = BTreeMap::new();
    let mut app: BTreeMap<(String, u16), Vec<Seen>> = BTreeMap::new();
    let mut net: BTreeMap<(String, u16), Vec<Seen>> = BTreeMap::new();
    let mut nsg: BTreeMap<(String, String), Vec<Seen>> = BTreeMap::new();
    let mut denials = 0;
    for r in input.records {
        if !r.action.eq_ignore_ascii_case("Deny") {
            continue;
        }
        let Some(src) = r.source_ip else { continue };
        if !input.scope.contains(src) {
            continue;
        }
        let at = r.timestamp();
        if input.since.is_some_and(|s| at.is_none_or(|t| t < s))
            || input.until.is_some_and(|u| at.is_none_or(|t| t > u))
        {
            continue;
        }
        denials += 1;
        let name = r
            .tunnel_name
            .as_deref()
            .or(r.name.as_deref())
            .map(normalize)
            .filter(|n| !n.is_empty());
        let seen = Seen {
            record: r,
            destination: r.destination_ip,
            name,
        };
        let protocol = r.protocol.to_ascii_uppercase();
        if r.layer.ends_with("Nsg") {
            match (&r.policy, &r.rule) {
                (Some(n), Some(rule)) => nsg.entry((n.clone(), rule.clone())).or_default(),
                _ => {
                    *passed
                        .entry("NSG denial without a rule (anti-spoofing)".into())
                        .or_default() += 1;
                    continue;
                }
            }
            .push(seen);
            continue;
        }
        if !r.layer.starts_with("Firewall") {
            *passed
                .entry(format!("layer {} is not learned", r.layer))
                .or_default() += 1;
            continue;
        }
        if r.rule.is_some() {
            *passed
                .entry(format!(
                    "denied by the explicit rule {} (a written Deny is kept)",
                    r.rule_label()
                ))
                .or_default() += 1;
            continue;
        }
        if r.decided_by.as_deref() != Some("default") {
            *passed
                .entry(format!(
                    "denied by the gateway's {} ({}), not by a missing rule",
                    r.decided_by.as_deref().unwrap_or("check"),
                    r.reason
                ))
                .or_default() += 1;
            continue;
        }
        let is_ip_name = seen
            .name
            .as_deref()
            .is_some_and(|n| n.parse::<IpAddr>().is_ok());
        match protocol.as_str() {
            "HTTP" | "HTTPS" if seen.name.is_some() && !is_ip_name => {
                let p = if protocol == "HTTP" { "Http" } else { "Https" };
                app.entry((p.into(), r.destination_port))
                    .or_default()
                    .push(seen);
            }
            "HTTP" | "HTTPS" | "TCP" => net
                .entry(("TCP".into(), r.destination_port))
                .or_default()
                .push(seen),
            "UDP" => net
                .entry(("UDP".into(), r.destination_port))
                .or_default()
                .push(seen),
            other => {
                *passed
                    .entry(format!("protocol {other} is not learned"))
                    .or_default() += 1;
            }
        }
    }

    let mut proposals = vec![];
    let mut taken_names: BTreeSet<String> = BTreeSet::new();
    let mut unique = |base: String| -> String {
        let mut name = base.clone();
        let mut i = 2;
        while !taken_names.insert(name.to_ascii_lowercase()) {
            name = format!("{base}-{i}");
            i += 1;
        }
        name
    };

    for ((protocol, port), seen) in &app {
        for (target, group) in widen(seen) {
            let widened = target.starts_with("*.");
            let why = if widened {
                let names: BTreeSet<&str> =
                    group.iter().filter_map(|s| s.name.as_deref()).collect();
                format!(
                    "{} distinct names under {} were denied ({}); ≥ {WIDEN_AT} siblings widen to {target}",
                    names.len(),
                    &target[2..],
                    names.into_iter().collect::<Vec<_>>().join(", ")
                )
            } else {
                format!("{protocol} to {target}:{port} was denied by the firewall's default action")
            };
            proposals.push(Proposal {
                name: unique(format!(
                    "learn-{}-{port}-{}",
                    protocol.to_ascii_lowercase(),
                    slug(&target)
                )),
                rule: ProposedRule::ApplicationRule {
                    protocol: protocol.clone(),
                    port: *port,
                    target_fqdns: vec![target.clone()],
                },
                why,
                evidence: evidence(&group, input, |c| catalog_matches_name(c, &target, *port)),
            });
        }
    }

    let by_address = address_names(input.names);
    for ((protocol, port), seen) in &net {
        let mut by_fqdn: BTreeMap<String, Vec<&Seen>> = BTreeMap::new();
        let mut unnamed: Vec<&Seen> = vec![];
        for s in seen {
            let name = s
                .name
                .clone()
                .filter(|n| n.parse::<IpAddr>().is_err())
                .or_else(|| s.destination.and_then(|d| by_address.get(&d).cloned()));
            match name {
                Some(n) => by_fqdn.entry(n).or_default().push(s),
                None if s.destination.is_some() => unnamed.push(s),
                None => {
                    *passed
                        .entry("denial without a destination address".into())
                        .or_default() += 1
                }
            }
        }
        for (fqdn, group) in by_fqdn {
            let group: Vec<Seen> = group.into_iter().cloned().collect();
            proposals.push(Proposal {
                name: unique(format!("learn-{}-{port}-{}", protocol.to_ascii_lowercase(), slug(&fqdn))),
                rule: ProposedRule::NetworkRule {
                    protocol: protocol.clone(),
                    port: *port,
                    destination: Destination::Fqdn(fqdn.clone()),
                },
                why: format!("{protocol} to {fqdn}:{port} (the name resolved for the denied addresses) was denied by the firewall's default action"),
                evidence: evidence(&group, input, |c| catalog_matches_name(c, &fqdn, *port)),
            });
        }
        if unnamed.is_empty() {
            continue;
        }
        let ips: BTreeSet<IpAddr> = unnamed.iter().filter_map(|s| s.destination).collect();
        let group: Vec<Seen> = unnamed.into_iter().cloned().collect();
        let (destination, why, slug_text) = match smallest_tag(snapshot, &ips) {
            Some(tag) => (
                Destination::ServiceTag(tag.clone()),
                format!("{protocol}:{port} to {} address(es) without a known name; {tag} is the smallest service tag holding them all", ips.len()),
                tag,
            ),
            None => {
                let list: Vec<String> = ips.iter().map(ToString::to_string).collect();
                let first = list[0].clone();
                (
                    Destination::Addresses(list),
                    format!("{protocol}:{port} to addresses without a known name and in no service tag"),
                    first,
                )
            }
        };
        let ip_vec: Vec<IpAddr> = ips.into_iter().collect();
        proposals.push(Proposal {
            name: unique(format!(
                "learn-{}-{port}-{}",
                protocol.to_ascii_lowercase(),
                slug(&slug_text)
            )),
            rule: ProposedRule::NetworkRule {
                protocol: protocol.clone(),
                port: *port,
                destination,
            },
            why,
            evidence: evidence(&group, input, |c| catalog_matches_ips(c, &ip_vec, *port)),
        });
    }

    // NSG allows: a proposal per (NSG, denying rule, protocol, port), placed just before the rule.
    let mut used: HashMap<(String, Direction), BTreeSet<u32>> = HashMap::new();
    for ((nsg_name, rule_name), seen) in &nsg {
        let Some(group) = network
            .network_security_groups
            .iter()
            .find(|n| n.name.eq_ignore_ascii_case(nsg_name))
        else {
            *passed
                .entry(format!("NSG {nsg_name} is not in the network"))
                .or_default() += seen.len();
            continue;
        };
        let denying = group
            .security_rules
            .iter()
            .find(|r| r.name.eq_ignore_ascii_case(rule_name) && r.access == Access::Deny)
            .map(|r| (r.name.clone(), r.priority, r.direction))
            .or_else(|| default_deny(rule_name));
        let Some((deny_name, deny_priority, direction)) = denying else {
            *passed
                .entry(format!("NSG {nsg_name} has no deny rule {rule_name}"))
                .or_default() += seen.len();
            continue;
        };
        let taken = used
            .entry((group.name.clone(), direction))
            .or_insert_with(|| {
                group
                    .security_rules
                    .iter()
                    .filter(|r| r.direction == direction)
                    .map(|r| r.priority)
                    .collect()
            });
        let mut by_service: BTreeMap<(String, u16), Vec<Seen>> = BTreeMap::new();
        for s in seen {
            let p = match s.record.protocol.to_ascii_uppercase().as_str() {
                "UDP" => "Udp",
                "ICMP" => "Icmp",
                _ => "Tcp",
            };
            by_service
                .entry((p.into(), s.record.destination_port))
                .or_default()
                .push(s.clone());
        }
        let names: BTreeSet<String> = group
            .security_rules
            .iter()
            .map(|r| r.name.to_ascii_lowercase())
            .collect();
        for ((protocol, port), group_seen) in by_service {
            let Some(priority) = free_priority_before(taken, deny_priority) else {
                *passed
                    .entry(format!(
                        "NSG {nsg_name}: no free priority before {deny_name} ({deny_priority})"
                    ))
                    .or_default() += group_seen.len();
                continue;
            };
            taken.insert(priority);
            let ips: BTreeSet<IpAddr> = group_seen.iter().filter_map(|s| s.destination).collect();
            let ip_vec: Vec<IpAddr> = ips.iter().copied().collect();
            let mut name = unique(format!(
                "learn-{}-{}-{port}",
                direction_word(direction),
                protocol.to_ascii_lowercase()
            ));
            while names.contains(&name.to_ascii_lowercase()) {
                name = unique(format!("{name}-x"));
            }
            proposals.push(Proposal {
                name,
                rule: ProposedRule::NsgRule {
                    nsg: group.name.clone(),
                    direction: format!("{direction:?}"),
                    priority,
                    protocol: protocol.clone(),
                    destination_addresses: ips.iter().map(ToString::to_string).collect(),
                    port,
                    before: deny_name.clone(),
                    before_priority: deny_priority,
                },
                why: format!(
                    "{protocol}:{port} was denied by {nsg_name}/{deny_name} (priority {deny_priority}); \
                     {priority} is the free priority nearest before it"
                ),
                evidence: evidence(&group_seen, input, |c| catalog_matches_ips(c, &ip_vec, port)),
            });
        }
    }

    let firewall = if proposals
        .iter()
        .any(|p| !matches!(p.rule, ProposedRule::NsgRule { .. }))
    {
        Some(firewall_target(snapshot, input.firewall)?)
    } else {
        None
    };
    proposals.sort_by(|a, b| {
        rule_key(&a.rule)
            .cmp(&rule_key(&b.rule))
            .then(a.name.cmp(&b.name))
    });
    Ok(Learned {
        scope: input.scope.clone(),
        since: input.since.map(palisade_flowlog::format_time),
        until: input.until.map(palisade_flowlog::format_time),
        denials,
        proposals,
        passed_over: passed
            .into_iter()
            .map(|(why, count)| PassedOver { why, count })
            .collect(),
        firewall,
    })
}

fn direction_word(d: Direction) -> &'static str {
    match d {
        Direction::Inbound => "in",
        Direction::Outbound => "out",
    }
}

/// The NSG-4 default deny rules, which the kernel logs by name.
fn default_deny(rule: &str) -> Option<(String, u32, Direction)> {
    if rule.eq_ignore_ascii_case("DenyAllOutBound") {
        Some(("DenyAllOutBound".into(), 65500, Direction::Outbound))
    } else if rule.eq_ignore_ascii_case("DenyAllInBound") {
        Some(("DenyAllInBound".into(), 65500, Direction::Inbound))
    } else {
        None
    }
}

/// The highest free user priority below `deny` (NSG-3 range): the allow then overrides the
/// denying rule and is evaluated after every rule already ahead of it.
pub fn free_priority_before(taken: &BTreeSet<u32>, deny: u32) -> Option<u32> {
    let top = deny.saturating_sub(1).min(*NSG_PRIORITIES.end());
    (*NSG_PRIORITIES.start()..=top)
        .rev()
        .find(|p| !taken.contains(p))
}

fn rule_key(r: &ProposedRule) -> (u8, String, u16, String) {
    match r {
        ProposedRule::ApplicationRule {
            protocol,
            port,
            target_fqdns,
        } => (0, protocol.clone(), *port, target_fqdns.join(",")),
        ProposedRule::NetworkRule {
            protocol,
            port,
            destination,
        } => (1, protocol.clone(), *port, format!("{destination:?}")),
        ProposedRule::NsgRule {
            nsg,
            direction,
            priority,
            ..
        } => (2, format!("{nsg}/{direction}"), 0, format!("{priority:05}")),
    }
}

fn normalize(name: &str) -> String {
    name.trim().trim_end_matches('.').to_ascii_lowercase()
}

/// A rule-name fragment: letters, digits and dashes.
fn slug(text: &str) -> String {
    let s: String = text
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    let s = s.trim_matches('-');
    let s = if s.is_empty() { "any" } else { s };
    s.chars().take(48).collect()
}

/// The application targets for the denials of one `protocol:port`: each name, except that
/// ≥ [`WIDEN_AT`] distinct names under one parent that is not a public suffix become
/// `*.<parent>`. Returns (target, its denials), sorted by target.
fn widen<'a>(seen: &[Seen<'a>]) -> Vec<(String, Vec<Seen<'a>>)> {
    let mut by_name: BTreeMap<String, Vec<Seen>> = BTreeMap::new();
    for s in seen {
        if let Some(n) = &s.name {
            by_name.entry(n.clone()).or_default().push(s.clone());
        }
    }
    let names: Vec<String> = by_name.keys().cloned().collect();
    let widened = widened_parents(&names);
    let mut out: BTreeMap<String, Vec<Seen>> = BTreeMap::new();
    for (name, group) in by_name {
        let target = match parent(&name) {
            Some(p) if widened.contains(p) => format!("*.{p}"),
            _ => name,
        };
        out.entry(target).or_default().extend(group);
    }
    out.into_iter().collect()
}

/// The parents under which names widen (PAL-5.4): ≥ [`WIDEN_AT`] distinct children, and the
/// parent is not a public suffix.
pub fn widened_parents(names: &[String]) -> BTreeSet<String> {
    let mut children: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for n in names {
        if let Some(p) = parent(n) {
            children.entry(p).or_default().insert(n);
        }
    }
    children
        .into_iter()
        .filter(|(p, c)| c.len() >= WIDEN_AT && !is_public_suffix(p))
        .map(|(p, _)| p.to_string())
        .collect()
}

/// The name without its first label; `None` for a single label.
fn parent(name: &str) -> Option<&str> {
    name.split_once('.')
        .map(|(_, p)| p)
        .filter(|p| !p.is_empty())
}

/// Whether `name` is a public suffix (`com`, `co.uk`, `blogspot.com`), by the Public Suffix
/// List compiled into `psl`; an unlisted last label counts as one (the list's `*` rule).
pub fn is_public_suffix(name: &str) -> bool {
    let name = normalize(name);
    !name.contains('.') || psl::suffix_str(&name) == Some(name.as_str())
}

/// Address → the name bound to it (first by name order, so the choice is stable).
fn address_names(names: &HashMap<String, Vec<IpAddr>>) -> HashMap<IpAddr, String> {
    let mut sorted: Vec<(&String, &Vec<IpAddr>)> = names.iter().collect();
    sorted.sort();
    let mut out = HashMap::new();
    for (name, ips) in sorted {
        for ip in ips {
            out.entry(*ip).or_insert_with(|| normalize(name));
        }
    }
    out
}

/// The service tag with the fewest addresses that holds every address of `ips`.
pub fn smallest_tag(snapshot: &Snapshot, ips: &BTreeSet<IpAddr>) -> Option<String> {
    if ips.is_empty() {
        return None;
    }
    snapshot
        .catalogs
        .service_tags
        .iter()
        .filter(|t| ips.iter().all(|ip| t.contains(*ip)))
        .map(|t| (tag_size(&t.address_prefixes), t.name.clone()))
        .min()
        .map(|(_, name)| name)
}

/// Addresses of a tag, IPv4 and IPv6 apart (IPv6 counted in /64s so both fit a u128 sum).
fn tag_size(prefixes: &[IpNet]) -> (u128, u128) {
    let mut v4 = 0u128;
    let mut v6 = 0u128;
    for p in prefixes {
        match p {
            IpNet::V4(n) => v4 += 1u128 << (32 - n.prefix_len()),
            IpNet::V6(n) => v6 = v6.saturating_add(1u128 << (64 - n.prefix_len().min(64))),
        }
    }
    (v4, v6)
}

fn catalog_matches_name(c: &DependencyCatalog, target: &str, port: u16) -> Vec<CatalogMatch> {
    let proposal = NamePattern::parse(target);
    c.entries()
        .filter(|e| e.detail.port == port && !e.endpoint.is_any())
        .filter(|e| {
            let entry = NamePattern::parse(&e.endpoint.domain_name);
            proposal.included_in(&entry) || entry.included_in(&proposal)
        })
        .map(|e| catalog_match(c, e))
        .collect()
}

fn catalog_matches_ips(c: &DependencyCatalog, ips: &[IpAddr], port: u16) -> Vec<CatalogMatch> {
    c.entries()
        .filter(|e| e.detail.port == port)
        .filter(|e| {
            e.endpoint.is_any()
                || e.endpoint.ip_address().is_some_and(|a| ips.contains(&a))
                || e.detail.ip_address.is_some_and(|a| ips.contains(&a))
        })
        .map(|e| catalog_match(c, e))
        .collect()
}

fn catalog_match(
    c: &DependencyCatalog,
    e: palisade_model::catalog::DependencyEntry,
) -> CatalogMatch {
    CatalogMatch {
        catalog: c.source.clone(),
        category: e.category.category.clone(),
        endpoint: e.endpoint.domain_name.clone(),
        port: e.detail.port,
        required: e.endpoint.required,
    }
}

fn evidence(
    seen: &[Seen],
    input: &Input,
    catalog: impl Fn(&DependencyCatalog) -> Vec<CatalogMatch>,
) -> Evidence {
    let mut samples: Vec<Sample> = seen
        .iter()
        .map(|s| Sample {
            time: s.record.time.clone(),
            source: s
                .record
                .source_ip
                .map(|ip| ip.to_string())
                .unwrap_or_default(),
            destination: match s.destination {
                Some(ip) => format!(
                    "{}",
                    std::net::SocketAddr::new(ip, s.record.destination_port)
                ),
                None => format!("?:{}", s.record.destination_port),
            },
            name: s.name.clone(),
        })
        .collect();
    samples.sort();
    let first_seen = samples.first().map(|s| s.time.clone()).unwrap_or_default();
    let last_seen = samples.last().map(|s| s.time.clone()).unwrap_or_default();
    samples.dedup_by(|a, b| {
        a.source == b.source && a.destination == b.destination && a.name == b.name
    });
    samples.truncate(input.samples);
    let mut catalog: Vec<CatalogMatch> = input.catalogs.iter().flat_map(catalog).collect();
    catalog.sort();
    catalog.dedup();
    Evidence {
        count: seen.len(),
        first_seen,
        last_seen,
        samples,
        catalog,
    }
}

/// Where the firewall's proposals go: the firewall's policy (a new rule collection group after
/// the existing ones) or its classic collections (new ones after the existing ones).
fn firewall_target(snapshot: &Snapshot, name: Option<&str>) -> Result<FirewallTarget, String> {
    let network = &snapshot.network;
    let fw = match name {
        Some(n) => network
            .azure_firewalls
            .iter()
            .find(|f| f.name.eq_ignore_ascii_case(n))
            .ok_or_else(|| format!("--firewall {n}: no such firewall in the network"))?,
        None => match network.azure_firewalls.as_slice() {
            [one] => one,
            [] => return Err("the denials name a firewall but the network has none".into()),
            many => {
                return Err(format!(
                    "the network has {} firewalls ({}); choose one with --firewall",
                    many.len(),
                    many.iter()
                        .map(|f| f.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ))
            }
        },
    };
    if let Some(p) = &fw.firewall_policy {
        let policy = network
            .firewall_policies
            .iter()
            .find(|x| x.name.eq_ignore_ascii_case(p))
            .ok_or_else(|| format!("firewall {}: its policy {p} is not in the network", fw.name))?;
        let used: BTreeSet<u32> = policy
            .rule_collection_groups
            .iter()
            .map(|g| g.priority)
            .collect();
        let names: Vec<&str> = policy
            .rule_collection_groups
            .iter()
            .map(|g| g.name.as_str())
            .collect();
        return Ok(FirewallTarget::Policy {
            policy: policy.name.clone(),
            group: fresh_name("learned", &names),
            priority: priority_after(&used, 100, 65000)
                .ok_or("no free rule collection group priority (100-65000)")?,
        });
    }
    let kind_used = |k: palisade_model::RuleCollectionKind| -> BTreeSet<u32> {
        fw.rule_collections
            .iter()
            .filter(|c| c.kind == k)
            .map(|c| c.priority)
            .collect()
    };
    let names: Vec<&str> = fw
        .rule_collections
        .iter()
        .map(|c| c.name.as_str())
        .collect();
    Ok(FirewallTarget::Classic {
        firewall: fw.name.clone(),
        application_collection: fresh_name("learned-application", &names),
        application_priority: priority_after(
            &kind_used(palisade_model::RuleCollectionKind::Application),
            100,
            65000,
        )
        .ok_or("no free application rule collection priority (100-65000)")?,
        network_collection: fresh_name("learned-network", &names),
        network_priority: priority_after(
            &kind_used(palisade_model::RuleCollectionKind::Network),
            100,
            65000,
        )
        .ok_or("no free network rule collection priority (100-65000)")?,
    })
}

fn fresh_name(base: &str, taken: &[&str]) -> String {
    let free = |n: &str| !taken.iter().any(|t| t.eq_ignore_ascii_case(n));
    if free(base) {
        return base.into();
    }
    (2..)
        .map(|i| format!("{base}-{i}"))
        .find(|n| free(n))
        .unwrap_or_default()
}

/// A free priority after every used one (the next hundred), else the highest free one.
fn priority_after(used: &BTreeSet<u32>, low: u32, high: u32) -> Option<u32> {
    let next = used.last().map_or(low, |m| (m / 100 + 1) * 100);
    if (low..=high).contains(&next) {
        return Some(next);
    }
    (low..=high).rev().find(|p| !used.contains(p))
}

// ------------------------------------------------------------------------------- native output

/// The proposals as a native-format document (`docs/native-yaml.md`): each NSG with only its new
/// rules, the firewall (or its policy) with only the new collections. Read it as a diff;
/// [`merge_native`] applies it to a native network document.
pub fn native_diff(learned: &Learned) -> Value {
    let mut doc = Map::new();
    doc.insert("apiVersion".into(), json!("palisade/v1"));
    doc.insert(
        "description".into(),
        json!(format!(
            "Proposed by palisade learn for {} from {} denial(s){}{}",
            learned.scope.label(),
            learned.denials,
            learned
                .since
                .as_ref()
                .map(|s| format!(" since {s}"))
                .unwrap_or_default(),
            learned
                .until
                .as_ref()
                .map(|s| format!(" until {s}"))
                .unwrap_or_default(),
        )),
    );
    let mut nsgs: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    let (mut app_rules, mut net_rules) = (vec![], vec![]);
    let policy = matches!(learned.firewall, Some(FirewallTarget::Policy { .. }));
    for p in &learned.proposals {
        match &p.rule {
            ProposedRule::NsgRule {
                nsg,
                direction,
                priority,
                protocol,
                destination_addresses,
                port,
                ..
            } => {
                let (key, source) = learned.scope.nsg_source();
                let mut rule = json!({
                    "name": p.name,
                    "description": description(p),
                    "priority": priority,
                    "direction": direction,
                    "access": "Allow",
                    "protocol": protocol,
                    "sourcePortRange": "*",
                    "destinationAddressPrefixes": destination_addresses,
                    "destinationPortRange": port.to_string(),
                });
                rule[key] = source;
                nsgs.entry(nsg.clone()).or_default().push(rule);
            }
            ProposedRule::ApplicationRule {
                protocol,
                port,
                target_fqdns,
            } => {
                let (key, source) = learned.scope.firewall_source();
                let mut rule = json!({"name": p.name, "description": description(p)});
                if policy {
                    rule["ruleType"] = json!("ApplicationRule");
                    rule["protocols"] = json!([{"protocolType": protocol, "port": port}]);
                } else {
                    rule["protocols"] = json!([format!("{protocol}:{port}")]);
                }
                rule[key] = json!(source);
                rule["targetFqdns"] = json!(target_fqdns);
                app_rules.push(rule);
            }
            ProposedRule::NetworkRule {
                protocol,
                port,
                destination,
            } => {
                let (key, source) = learned.scope.firewall_source();
                let mut rule = json!({"name": p.name, "description": description(p)});
                if policy {
                    rule["ruleType"] = json!("NetworkRule");
                    rule["ipProtocols"] = json!([protocol]);
                } else {
                    rule["protocols"] = json!([protocol]);
                }
                rule[key] = json!(source);
                match destination {
                    Destination::Fqdn(f) => rule["destinationFqdns"] = json!([f]),
                    Destination::ServiceTag(t) => rule["destinationAddresses"] = json!([t]),
                    Destination::Addresses(a) => rule["destinationAddresses"] = json!(a),
                }
                rule["destinationPorts"] = json!([port.to_string()]);
                net_rules.push(rule);
            }
        }
    }
    if !nsgs.is_empty() {
        doc.insert(
            "networkSecurityGroups".into(),
            nsgs.into_iter()
                .map(|(name, rules)| json!({"name": name, "securityRules": rules}))
                .collect(),
        );
    }
    match &learned.firewall {
        Some(FirewallTarget::Policy {
            policy,
            group,
            priority,
        }) => {
            let mut collections = vec![];
            for (name, prio, rules) in [
                ("learned-application", 200, app_rules),
                ("learned-network", 100, net_rules),
            ] {
                if !rules.is_empty() {
                    collections.push(json!({
                        "ruleCollectionType": "FirewallPolicyFilterRuleCollection",
                        "name": name, "priority": prio, "action": {"type": "Allow"}, "rules": rules,
                    }));
                }
            }
            doc.insert(
                "firewallPolicies".into(),
                json!([{"name": policy, "ruleCollectionGroups": [
                    {"name": group, "priority": priority, "ruleCollections": collections}
                ]}]),
            );
        }
        Some(FirewallTarget::Classic {
            firewall,
            application_collection,
            application_priority,
            network_collection,
            network_priority,
        }) => {
            let mut fw = json!({"name": firewall});
            if !app_rules.is_empty() {
                fw["applicationRuleCollections"] = json!([{
                    "name": application_collection, "priority": application_priority,
                    "action": {"type": "Allow"}, "rules": app_rules,
                }]);
            }
            if !net_rules.is_empty() {
                fw["networkRuleCollections"] = json!([{
                    "name": network_collection, "priority": network_priority,
                    "action": {"type": "Allow"}, "rules": net_rules,
                }]);
            }
            doc.insert("azureFirewalls".into(), json!([fw]));
        }
        None => {}
    }
    Value::Object(doc)
}

/// The rule's `description`: the evidence in short (NSG-2.1 allows 140 characters).
fn description(p: &Proposal) -> String {
    let e = &p.evidence;
    let mut s = format!(
        "learned: {} denial(s) {} to {}",
        e.count, e.first_seen, e.last_seen
    );
    if let Some(c) = e.catalog.first() {
        s.push_str(&format!("; catalog {}", c.category));
    }
    s.chars().take(140).collect()
}

/// Merge a [`native_diff`] into a native network document: new NSG rules join their NSG, new
/// collections their firewall, a new rule collection group its policy. Every target must exist.
pub fn merge_native(network: &mut Value, diff: &Value) -> Result<(), String> {
    let native = network
        .get("apiVersion")
        .and_then(Value::as_str)
        .is_some_and(|v| v.eq_ignore_ascii_case("palisade/v1"));
    if !native {
        return Err("the network is not a native document (`apiVersion: palisade/v1`)".into());
    }
    let lists = [
        (
            "networkSecurityGroups",
            &["networkSecurityGroups"][..],
            "securityRules",
        ),
        (
            "azureFirewalls",
            &["azureFirewalls", "firewalls"][..],
            "applicationRuleCollections",
        ),
        (
            "azureFirewalls",
            &["azureFirewalls", "firewalls"][..],
            "networkRuleCollections",
        ),
        (
            "firewallPolicies",
            &["firewallPolicies"][..],
            "ruleCollectionGroups",
        ),
    ];
    for (diff_key, keys, child) in lists {
        let Some(items) = diff.get(diff_key).and_then(Value::as_array) else {
            continue;
        };
        for item in items {
            let Some(add) = item.get(child).and_then(Value::as_array) else {
                continue;
            };
            let name = item["name"].as_str().unwrap_or_default();
            let present: Vec<String> = keys.iter().filter_map(|k| find_key(network, k)).collect();
            let target = network
                .as_object_mut()
                .into_iter()
                .flat_map(|o| o.iter_mut())
                .filter(|(k, _)| present.contains(k))
                .filter_map(|(_, v)| v.as_array_mut())
                .flat_map(|l| l.iter_mut())
                .find(|r| {
                    r.get("name")
                        .and_then(Value::as_str)
                        .is_some_and(|n| n.eq_ignore_ascii_case(name))
                })
                .ok_or_else(|| {
                    format!("{diff_key}: `{name}` is not declared in the network document")
                })?;
            let obj = target
                .as_object_mut()
                .ok_or_else(|| format!("{diff_key}: `{name}` is not a mapping"))?;
            let key = obj
                .keys()
                .find(|k| k.eq_ignore_ascii_case(child))
                .cloned()
                .unwrap_or_else(|| child.to_string());
            let list = obj.entry(key).or_insert_with(|| json!([]));
            let list = list
                .as_array_mut()
                .ok_or_else(|| format!("{diff_key}: `{name}`.{child} is not a list"))?;
            list.extend(add.iter().cloned());
        }
    }
    Ok(())
}

/// A top-level key, ignoring case (the format matches keys case-insensitively).
fn find_key(doc: &Value, key: &str) -> Option<String> {
    doc.as_object()?
        .keys()
        .find(|k| k.eq_ignore_ascii_case(key))
        .cloned()
}

/// The proposals as ARM resources that join their parents when loaded beside the network
/// (FMT-6 child resources): NSG rules as `networkSecurityGroups/securityRules`, a policy's new
/// group as `firewallPolicies/ruleCollectionGroups`. A classic firewall's collections have no
/// child resource type; for them use the native diff.
pub fn arm_diff(learned: &Learned) -> Result<Value, String> {
    if matches!(learned.firewall, Some(FirewallTarget::Classic { .. })) {
        return Err(
            "a classic firewall's rule collections cannot be written as separate ARM \
                    resources; use --format yaml (or a firewall policy)"
                .into(),
        );
    }
    let diff = native_diff(learned);
    let mut resources = vec![];
    let props = |v: &Value| -> Value {
        let mut o = v.as_object().cloned().unwrap_or_default();
        o.remove("name");
        Value::Object(o)
    };
    for nsg in diff["networkSecurityGroups"]
        .as_array()
        .into_iter()
        .flatten()
    {
        for rule in nsg["securityRules"].as_array().into_iter().flatten() {
            resources.push(json!({
                "type": "Microsoft.Network/networkSecurityGroups/securityRules",
                "apiVersion": "2024-05-01",
                "name": format!("{}/{}", nsg["name"].as_str().unwrap_or_default(), rule["name"].as_str().unwrap_or_default()),
                "properties": props(rule),
            }));
        }
    }
    for policy in diff["firewallPolicies"].as_array().into_iter().flatten() {
        for group in policy["ruleCollectionGroups"]
            .as_array()
            .into_iter()
            .flatten()
        {
            resources.push(json!({
                "type": "Microsoft.Network/firewallPolicies/ruleCollectionGroups",
                "apiVersion": "2024-05-01",
                "name": format!("{}/{}", policy["name"].as_str().unwrap_or_default(), group["name"].as_str().unwrap_or_default()),
                "properties": props(group),
            }));
        }
    }
    Ok(json!({
        "$schema": "https://schema.management.azure.com/schemas/2019-04-01/deploymentTemplate.json#",
        "contentVersion": "1.0.0.0",
        "metadata": {"description": diff["description"]},
        "resources": resources,
    }))
}

/// The proposals as native YAML: a comment per proposal with its evidence, then the document.
pub fn yaml_text(learned: &Learned) -> Result<String, String> {
    let mut out = String::new();
    out.push_str(&format!(
        "# palisade learn: {} proposal(s) for {} from {} denial(s). Review, then merge into the\n\
         # network (or use --write-network). Nothing has been applied.\n",
        learned.proposals.len(),
        learned.scope.label(),
        learned.denials
    ));
    for p in &learned.proposals {
        let e = &p.evidence;
        out.push_str(&format!(
            "#\n# {}: {}\n#   seen {} time(s), {} to {}\n",
            p.name, p.why, e.count, e.first_seen, e.last_seen
        ));
        for s in &e.samples {
            out.push_str(&format!(
                "#   sample {} {} -> {}{}\n",
                s.time,
                s.source,
                s.destination,
                s.name
                    .as_ref()
                    .map(|n| format!(" ({n})"))
                    .unwrap_or_default()
            ));
        }
        for c in &e.catalog {
            out.push_str(&format!(
                "#   catalog {}: {} {}:{}{}\n",
                c.catalog,
                c.category,
                c.endpoint,
                c.port,
                if c.required { "" } else { " (optional)" }
            ));
        }
    }
    for p in &learned.passed_over {
        out.push_str(&format!("# passed over: {} × {}\n", p.count, p.why));
    }
    let doc = serde_saphyr::to_string(&native_diff(learned)).map_err(|e| e.to_string())?;
    out.push_str(&doc);
    Ok(out)
}

#[cfg(test)]
mod tests;
