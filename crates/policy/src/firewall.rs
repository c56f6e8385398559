//! The firewall pipeline (FW-2, FW-3): DNAT → network rules → application rules → default deny.
//!
//! Classic and policy firewalls compile to the same passes. Rule order (FW-2) is fixed at
//! compile time — policy chain from the root, rule collection groups by priority, the pass's
//! collections by priority, rules in listed order — so that within a pass the lowest index wins.
//! Network and DNAT rules go through the 5-tuple classifier; application rules through the FQDN
//! matcher, which returns candidate rules by name in that same order.

use crate::addresses::{resolve_all, TagContext};
use crate::matchers::{
    normalize_host, normalize_name, Classifier, ClassifierOptions, ClassifierRule, FqdnMatcher,
    FqdnPattern, HostName, PacketKey,
};
use crate::prefixes::{contains_addr, net, range_to_cidrs};
use crate::trace::AuditMatch;
use ipnet::IpNet;
use palisade_model::catalog::Catalogs;
use palisade_model::{
    AddressCheck, AddressItem, ApplicationProtocol, ApplicationProtocolType, AzureFirewall,
    FirewallAction, FirewallPolicy, FirewallRule, Network, NetworkProtocol, PortRange,
    RuleCollection, RuleCollectionKind, RuleMode,
};
use serde::Serialize;
use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;

/// Which pass decided (DIAG-1.2 layer names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum FirewallPass {
    FirewallDnat,
    FirewallNetwork,
    FirewallApplication,
    FirewallDefault,
}

impl FirewallPass {
    /// The DIAG-1.2 layer name.
    pub fn name(self) -> &'static str {
        match self {
            FirewallPass::FirewallDnat => "FirewallDnat",
            FirewallPass::FirewallNetwork => "FirewallNetwork",
            FirewallPass::FirewallApplication => "FirewallApplication",
            FirewallPass::FirewallDefault => "FirewallDefault",
        }
    }
}

/// Where a rule sits, for explanations and decision records.
#[derive(Debug, Clone, Serialize)]
pub struct RuleRef {
    /// The policy holding the rule, or the firewall for classic rules.
    pub resource: String,
    pub rule_collection_group: Option<String>,
    pub rule_collection_group_priority: Option<u32>,
    pub rule_collection: String,
    pub rule_collection_priority: u32,
    pub rule: String,
    pub action: FirewallAction,
    /// The kind of the rule's collection: which pass evaluates it.
    pub kind: RuleCollectionKind,
    pub audit: bool,
    /// PAL-5.2 `addressCheck` in force for this rule: its own, else its collection's, else the
    /// firewall's (policy's); `None` leaves it to the gateway's default.
    pub address_check: Option<AddressCheck>,
}

impl RuleRef {
    /// The pass that evaluates this rule.
    pub fn pass(&self) -> FirewallPass {
        match self.kind {
            RuleCollectionKind::Nat => FirewallPass::FirewallDnat,
            RuleCollectionKind::Network => FirewallPass::FirewallNetwork,
            RuleCollectionKind::Application => FirewallPass::FirewallApplication,
        }
    }

    /// What the rule decides on a match: `Allow`, `Deny` or `Dnat`.
    pub fn access(&self) -> &'static str {
        match self.action {
            FirewallAction::Allow => "Allow",
            FirewallAction::Deny => "Deny",
            FirewallAction::Dnat => "Dnat",
        }
    }

    /// PAL-5.3: this rule as an audit entry.
    pub fn audit_match(&self) -> AuditMatch {
        AuditMatch {
            layer: self.pass().name(),
            rule: self.path(),
            access: self.access(),
        }
    }
    /// Classic `<collection>/<rule>`, policy `<rcg>/<collection>/<rule>` (DIAG-1.2).
    pub fn path(&self) -> String {
        match &self.rule_collection_group {
            Some(g) => format!("{g}/{}/{}", self.rule_collection, self.rule),
            None => format!("{}/{}", self.rule_collection, self.rule),
        }
    }
}

/// The application protocol a flow speaks, as the firewall detects it (FW-6.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum AppProtocol {
    Http,
    Https,
    Mssql,
}

impl AppProtocol {
    /// Offline inference when the caller does not say: Host header on port 80, TDS on 1433,
    /// TLS elsewhere (scenarios README, "host").
    pub fn infer(port: u16) -> AppProtocol {
        match port {
            80 => AppProtocol::Http,
            1433 => AppProtocol::Mssql,
            _ => AppProtocol::Https,
        }
    }
    fn matches(self, p: &ApplicationProtocol, port: u16) -> bool {
        let t = match self {
            AppProtocol::Http => ApplicationProtocolType::Http,
            AppProtocol::Https => ApplicationProtocolType::Https,
            AppProtocol::Mssql => ApplicationProtocolType::Mssql,
        };
        p.protocol_type == t && p.port == port
    }
}

struct L4Pass {
    rules: Vec<Arc<RuleRef>>,
    specs: Vec<ClassifierRule>,
    entry_rule: Vec<u32>,
    translated: Vec<Option<(AddressItem, Option<u16>)>>,
    classifier: Classifier,
    has_audit: bool,
    /// Network rules' `destinationFqdns`, matched by address at evaluation time (FW-5): one
    /// entry per classifier entry of such a rule, in rule order.
    by_name: Vec<NameEntry>,
    /// FQDN → positions in `by_name` naming it, ascending: a flow's destination is looked up
    /// by the names it was resolved from, so the cost follows those names, not the rule count.
    name_index: HashMap<Arc<str>, Vec<u32>>,
}

/// The rest of a classifier entry of a network rule with destination FQDNs: the flow matches
/// when the entry's protocol, source and ports match and the destination address is one the
/// firewall's resolver returned for one of the rule's names.
struct NameEntry {
    spec: ClassifierRule,
    rule: u32,
}

impl NameEntry {
    fn matches(&self, key: &PacketKey) -> bool {
        let s = &self.spec;
        // NSG-2.2 as in the classifier: ports restrict TCP and UDP only.
        s.protocol.is_none_or(|p| p == key.protocol)
            && s.src.iter().any(|n| n.contains(&key.src))
            && (!matches!(key.protocol, 6 | 17)
                || s.dst_ports
                    .iter()
                    .any(|(a, b)| *a <= key.dst_port && key.dst_port <= *b))
    }
}

/// What the firewall's DNS resolver has returned for names, as of the flow being judged
/// (FW-5, FW-9): the gateway's DNS proxy passes its remembered addresses; offline there are
/// none and only static name bindings (compiled into the rules) match.
pub trait ResolvedNames {
    /// Call `each` with every name (lower case, no trailing dot) `address` is remembered for.
    fn names_of(&self, address: IpAddr, each: &mut dyn FnMut(&str));
}

/// No remembered addresses (offline evaluation).
pub struct NoResolvedNames;

impl ResolvedNames for NoResolvedNames {
    fn names_of(&self, _: IpAddr, _: &mut dyn FnMut(&str)) {}
}

struct AppRule {
    protocols: Vec<ApplicationProtocol>,
    sources: Vec<IpNet>,
    /// Policy `destinationAddresses`: an extra destination predicate when present.
    destinations: Option<Vec<IpNet>>,
    patterns: Vec<String>,
}

/// A firewall compiled for evaluation.
pub struct CompiledFirewall {
    pub name: String,
    /// Policy name for policy firewalls.
    pub policy: Option<String>,
    pub private_ip_addresses: Vec<IpAddr>,
    pub public_ip_addresses: Vec<IpAddr>,
    dnat: L4Pass,
    network: L4Pass,
    app_refs: Vec<Arc<RuleRef>>,
    app_rules: Vec<AppRule>,
    app_matcher: FqdnMatcher,
    /// FW-8.1 ranges not SNATed for network rules.
    snat_private_ranges: Vec<IpNet>,
    /// FW-9 `dnsSettings.servers`: the firewall's resolver; empty = the host's.
    pub dns_servers: Vec<IpAddr>,
    /// What compiling found wrong or left out (a missing or looping policy chain, unknown FQDN
    /// tags, invalid patterns, a DNS server that is not an address), reported as warnings.
    pub problems: Vec<String>,
}

/// The firewall's answer for one flow. Building one allocates nothing: rules are shared with the
/// compiled firewall ([`Arc`]) and the detail is rendered only when displayed. The one exception
/// is the audit list, filled only when audit-mode rules match (PAL-5.3).
#[derive(Debug, Clone)]
pub struct FirewallOutcome {
    pub pass: FirewallPass,
    pub allowed: bool,
    pub rule: Option<Arc<RuleRef>>,
    /// DIAG-1.2 reason.
    pub reason: &'static str,
    /// DNAT: the translated destination.
    pub translated: Option<(IpAddr, u16)>,
    /// Network-rule allows: whether the source is translated to the firewall (FW-8.1).
    pub snat: bool,
    pub audit: Vec<Arc<RuleRef>>,
    /// Human detail: which name matched, or why nothing did.
    pub detail: Option<Detail>,
}

impl FirewallOutcome {
    /// PAL-5.2: the address check the deciding rule asks for (rule wins over collection, which
    /// wins over the firewall), else `default` (the gateway's command-line setting).
    pub fn address_check(&self, default: AddressCheck) -> AddressCheck {
        self.rule
            .as_ref()
            .and_then(|r| r.address_check)
            .unwrap_or(default)
    }

    /// PAL-5.3: the audit-mode rules that matched and were passed over, in evaluation order.
    pub fn audit_matches(&self) -> Vec<AuditMatch> {
        self.audit.iter().map(|r| r.audit_match()).collect()
    }
}

/// The human detail of a [`FirewallOutcome`], kept as parts and rendered by `Display`, so that
/// deciding costs no text.
// The matched name is held inline on purpose: boxing it would allocate per decision.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Detail {
    /// Fixed or caller-composed text.
    Text(Cow<'static, str>),
    /// An application rule matched: `Https name `www.example.com``.
    Matched(AppProtocol, HostName),
    /// The SNI/Host is not a host name; the offending text is kept as sent. The only detail
    /// the firewall copies, and only for input that is not a name.
    InvalidHost(Box<str>),
    /// A network rule matched by a destination FQDN the destination address was resolved
    /// from (FW-5); the name is shared with the compiled rule.
    ResolvedFqdn(Arc<str>),
}

impl fmt::Display for Detail {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Detail::Text(t) => f.write_str(t),
            Detail::Matched(proto, name) => write!(f, "{proto:?} name `{name}`"),
            Detail::InvalidHost(host) => write!(f, "`{host}` is not a valid host name"),
            Detail::ResolvedFqdn(name) => write!(
                f,
                "destination FQDN `{name}`: the address is one the firewall's resolver returned for it"
            ),
        }
    }
}

impl From<&'static str> for Detail {
    fn from(s: &'static str) -> Detail {
        Detail::Text(Cow::Borrowed(s))
    }
}

impl From<String> for Detail {
    fn from(s: String) -> Detail {
        Detail::Text(Cow::Owned(s))
    }
}

/// The flow as the firewall sees it.
#[derive(Debug, Clone)]
pub struct FirewallInput<'a> {
    pub key: PacketKey,
    /// SNI or Host, when known.
    pub host: Option<&'a str>,
    pub app_protocol: Option<AppProtocol>,
}

impl CompiledFirewall {
    pub fn compile(
        fw: &AzureFirewall,
        network: &Network,
        catalogs: &Catalogs,
        fqdn_resolution: &HashMap<String, Vec<IpAddr>>,
    ) -> CompiledFirewall {
        let mut ordered: Vec<(RuleRef, &RuleCollection, &FirewallRule)> = vec![];
        // PAL-5.2: the firewall-wide setting is the policy's, else the firewall resource's.
        let fw_check = fw
            .firewall_policy
            .as_deref()
            .and_then(|p| network.firewall_policy(p))
            .and_then(|p| p.settings.address_check)
            .or(fw.settings.address_check);
        let mut problems = vec![];
        match &fw.firewall_policy {
            Some(p) => {
                // FW-2.1: base policies first, root first.
                let mut chain: Vec<&FirewallPolicy> = vec![];
                let mut cur = network.firewall_policy(p);
                while let Some(pol) = cur {
                    if chain.iter().any(|c| c.name.eq_ignore_ascii_case(&pol.name)) {
                        problems.push(format!("firewall policy chain loops at '{}'", pol.name));
                        break;
                    }
                    chain.push(pol);
                    cur = pol
                        .base_policy
                        .as_deref()
                        .and_then(|b| network.firewall_policy(b));
                }
                if chain.is_empty() {
                    problems.push(format!(
                        "firewall policy '{p}' is not in the input; the firewall has no rules"
                    ));
                }
                chain.reverse();
                for pol in chain {
                    let mut groups: Vec<_> = pol.rule_collection_groups.iter().collect();
                    groups.sort_by(|a, b| {
                        (a.priority, a.name.to_ascii_lowercase())
                            .cmp(&(b.priority, b.name.to_ascii_lowercase()))
                    });
                    for g in groups {
                        for (c, r) in sorted_rules(&g.rule_collections) {
                            ordered.push((
                                rule_ref(&pol.name, Some((&g.name, g.priority)), c, r, fw_check),
                                c,
                                r,
                            ));
                        }
                    }
                }
            }
            None => {
                for (c, r) in sorted_rules(&fw.rule_collections) {
                    ordered.push((rule_ref(&fw.name, None, c, r, fw_check), c, r));
                }
            }
        }
        let ctx = TagContext::new(&[]);
        let group_addresses = |names: &[String]| -> Vec<IpNet> {
            let mut out = vec![];
            for n in names {
                if let Some(g) = network.ip_group(n) {
                    out.extend(resolve_all(&g.ip_addresses, catalogs, &ctx).0);
                }
            }
            out
        };
        let mut dnat = L4Builder::default();
        let mut net_pass = L4Builder::default();
        let mut app_refs = vec![];
        let mut app_rules = vec![];
        for (rref, col, rule) in ordered {
            let mut sources = resolve_all(&rule.source_addresses, catalogs, &ctx).0;
            sources.extend(group_addresses(&rule.source_ip_groups));
            let mut destinations = resolve_all(&rule.destination_addresses, catalogs, &ctx).0;
            destinations.extend(group_addresses(&rule.destination_ip_groups));
            // Static bindings compile into the rule's addresses; everything else the resolver
            // returns is matched by name at evaluation time.
            let fqdns: Vec<Arc<str>> = rule
                .destination_fqdns
                .iter()
                .map(|f| Arc::from(palisade_model::bindings::normalize(f)))
                .collect();
            for f in &fqdns {
                if let Some(ips) = fqdn_resolution.get(&**f) {
                    destinations.extend(ips.iter().map(|ip| IpNet::from(*ip)));
                }
            }
            match col.kind {
                RuleCollectionKind::Nat => {
                    let t = rule
                        .translated_address
                        .clone()
                        .map(|a| (a, rule.translated_port));
                    dnat.push(rref, rule, sources, destinations, t, &[]);
                }
                RuleCollectionKind::Network => {
                    net_pass.push(rref, rule, sources, destinations, None, &fqdns)
                }
                RuleCollectionKind::Application => {
                    let mut patterns = rule.target_fqdns.clone();
                    for t in &rule.fqdn_tags {
                        match catalogs.fqdn_tags.get(t) {
                            Some(tag) => patterns.extend(tag.target_fqdns.iter().cloned()),
                            None => problems
                                .push(format!("rule {}: unknown FQDN tag '{t}'", rref.path())),
                        }
                    }
                    app_refs.push(Arc::new(rref));
                    app_rules.push(AppRule {
                        protocols: rule.protocols.clone(),
                        sources,
                        destinations: (!rule.destination_addresses.is_empty())
                            .then_some(destinations),
                        patterns,
                    });
                }
            }
        }
        let mut pats = vec![];
        for (i, r) in app_rules.iter().enumerate() {
            for p in &r.patterns {
                match FqdnPattern::parse(p) {
                    Ok(fp) => pats.push((fp, i as u32)),
                    Err(e) => {
                        problems.push(format!("rule {}: target '{p}': {e}", app_refs[i].path()))
                    }
                }
            }
        }
        let settings = match &fw.firewall_policy {
            Some(p) => network
                .firewall_policy(p)
                .map(|p| p.settings.clone())
                .unwrap_or_default(),
            None => fw.settings.clone(),
        };
        let public_ip_addresses = fw
            .public_ip_addresses
            .iter()
            .filter_map(|n| {
                network
                    .public_ip_addresses
                    .iter()
                    .find(|p| p.name.eq_ignore_ascii_case(n))
            })
            .filter_map(|p| p.ip_address)
            .collect();
        let mut dns_servers = vec![];
        for s in &settings.dns_servers {
            match s.trim().parse::<IpAddr>() {
                Ok(ip) => dns_servers.push(ip),
                Err(_) => problems.push(format!(
                    "dnsSettings.servers: '{s}' is not an IP address; the server is left out"
                )),
            }
        }
        CompiledFirewall {
            name: fw.name.clone(),
            policy: fw.firewall_policy.clone(),
            private_ip_addresses: fw.private_ip_addresses.clone(),
            public_ip_addresses,
            dnat: dnat.build(),
            network: net_pass.build(),
            app_refs,
            app_rules,
            app_matcher: FqdnMatcher::build(pats),
            snat_private_ranges: snat_ranges(settings.snat_private_ranges.as_deref()),
            dns_servers,
            problems,
        }
    }

    /// Run the pipeline (FW-3) without remembered DNS answers: network-rule FQDNs match only
    /// through static bindings. Threat intelligence and the infrastructure collection are not
    /// modelled offline; the default is deny.
    pub fn evaluate(&self, input: &FirewallInput) -> FirewallOutcome {
        self.evaluate_with(input, &NoResolvedNames)
    }

    /// Run the pipeline (FW-3) with the addresses the firewall's DNS resolver returned for
    /// names, against which network rules' `destinationFqdns` match (FW-5).
    pub fn evaluate_with(
        &self,
        input: &FirewallInput,
        names: &dyn ResolvedNames,
    ) -> FirewallOutcome {
        let mut audit = vec![];
        let key = &input.key;
        if let Some(i) = self.dnat.first(key, &mut audit) {
            let translated = self
                .dnat_translation(i)
                .map(|(a, port)| (a, port.unwrap_or(key.dst_port)));
            return FirewallOutcome {
                pass: FirewallPass::FirewallDnat,
                allowed: true,
                rule: Some(self.dnat.rules[i].clone()),
                reason: "RuleMatched",
                translated,
                snat: false,
                audit,
                detail: None,
            };
        }
        if let Some((i, fqdn)) = self.network.first_by_name(key, names, &mut audit) {
            let r = &self.network.rules[i];
            let allowed = r.action == FirewallAction::Allow;
            return FirewallOutcome {
                pass: FirewallPass::FirewallNetwork,
                allowed,
                rule: Some(r.clone()),
                reason: "RuleMatched",
                translated: None,
                snat: allowed && !contains_addr(&self.snat_private_ranges, key.dst),
                audit,
                detail: fqdn.map(|n| Detail::ResolvedFqdn(n.clone())),
            };
        }
        let deny =
            |reason: &'static str, detail: Detail, audit: Vec<Arc<RuleRef>>| FirewallOutcome {
                pass: FirewallPass::FirewallDefault,
                allowed: false,
                rule: None,
                reason,
                translated: None,
                snat: false,
                audit,
                detail: Some(detail),
            };
        if key.protocol != 6 {
            return deny(
                "DefaultAction",
                "no network rule matched; application rules apply to TCP only".into(),
                audit,
            );
        }
        let proto = input
            .app_protocol
            .unwrap_or_else(|| AppProtocol::infer(key.dst_port));
        let Some(host) = input.host else {
            // Scanned only here: the answer matters only for flows without a name.
            let any_app_rule_on_port = self
                .app_rules
                .iter()
                .any(|r| r.protocols.iter().any(|p| proto.matches(p, key.dst_port)));
            return if proto == AppProtocol::Https && any_app_rule_on_port {
                deny("SniMissing", "SNI TLS extension was missing".into(), audit)
            } else {
                deny("DefaultAction", NO_RULE.into(), audit)
            };
        };
        let Some(name) = normalize_host(host) else {
            return deny("DefaultAction", Detail::InvalidHost(host.into()), audit);
        };
        // Candidates in rule order, one matcher walk each; usually the first one decides.
        let mut next = self.app_matcher.first_from(&name, 0);
        while let Some(c) = next {
            next = c
                .checked_add(1)
                .and_then(|from| self.app_matcher.first_from(&name, from));
            let i = c as usize;
            let r = &self.app_rules[i];
            if !r.protocols.iter().any(|p| proto.matches(p, key.dst_port)) {
                continue;
            }
            if !contains_addr(&r.sources, key.src) {
                continue;
            }
            if let Some(d) = &r.destinations {
                if !contains_addr(d, key.dst) {
                    continue;
                }
            }
            let rref = &self.app_refs[i];
            if rref.audit {
                audit.push(rref.clone());
                continue;
            }
            return FirewallOutcome {
                pass: FirewallPass::FirewallApplication,
                allowed: rref.action == FirewallAction::Allow,
                rule: Some(rref.clone()),
                reason: "RuleMatched",
                translated: None,
                snat: true,
                audit,
                detail: Some(Detail::Matched(proto, name)),
            };
        }
        deny("DefaultAction", NO_RULE.into(), audit)
    }

    /// For a default deny: the application or network rule that came closest, and why it missed.
    pub fn near_miss<'a>(&'a self, input: &FirewallInput) -> Option<(&'a RuleRef, Vec<String>)> {
        let key = &input.key;
        let proto = input
            .app_protocol
            .unwrap_or_else(|| AppProtocol::infer(key.dst_port));
        let name = input.host.and_then(normalize_name);
        // Fewest differing fields first; among equals, the rule whose name pattern shares the
        // longest suffix with the requested name (`*.partner.example` for `evilpartner.example`).
        let mut best: Option<(NearMissScore, &'a RuleRef, Vec<String>)> = None;
        let mut consider = |rref: &'a RuleRef, miss: Vec<String>, closeness: usize| {
            if rref.action != FirewallAction::Allow || miss.is_empty() {
                return;
            }
            let score = (miss.len(), std::cmp::Reverse(closeness));
            if best.as_ref().is_none_or(|(b, _, _)| score < *b) {
                best = Some((score, rref, miss));
            }
        };
        for (i, r) in self.app_rules.iter().enumerate() {
            let mut miss = vec![];
            if key.protocol != 6 {
                miss.push("protocol (application rules need TCP)".to_string());
            }
            if !r.protocols.iter().any(|p| proto.matches(p, key.dst_port)) {
                let list: Vec<String> = r
                    .protocols
                    .iter()
                    .map(|p| format!("{:?}:{}", p.protocol_type, p.port))
                    .collect();
                miss.push(format!(
                    "protocols (rule has {}, flow is {proto:?}:{})",
                    list.join(", "),
                    key.dst_port
                ));
            }
            if !contains_addr(&r.sources, key.src) {
                miss.push("sourceAddresses".into());
            }
            match &name {
                Some(n) => {
                    let matched = r
                        .patterns
                        .iter()
                        .any(|p| FqdnPattern::parse(p).is_ok_and(|fp| fp.matches(n)));
                    if !matched {
                        let shown: Vec<&str> =
                            r.patterns.iter().take(3).map(String::as_str).collect();
                        miss.push(format!(
                            "targetFqdns (rule has {}{})",
                            shown.join(", "),
                            if r.patterns.len() > 3 { ", …" } else { "" }
                        ));
                    }
                }
                None => miss.push("targetFqdns (no SNI/Host given)".into()),
            }
            let closeness = name
                .as_deref()
                .map(|n| {
                    r.patterns
                        .iter()
                        .map(|p| common_suffix(n, p.trim_start_matches('*')))
                        .max()
                        .unwrap_or(0)
                })
                .unwrap_or(0);
            consider(&self.app_refs[i], miss, closeness);
        }
        for (i, spec) in self.network.specs.iter().enumerate() {
            let mut miss = vec![];
            if spec.protocol.is_some_and(|p| p != key.protocol) {
                miss.push("ipProtocols".to_string());
            }
            if !spec.src.iter().any(|n| n.contains(&key.src)) {
                miss.push("sourceAddresses".into());
            }
            if !spec.dst.iter().any(|n| n.contains(&key.dst)) {
                miss.push("destinationAddresses".into());
            }
            if matches!(key.protocol, 6 | 17)
                && !spec
                    .dst_ports
                    .iter()
                    .any(|(a, b)| *a <= key.dst_port && key.dst_port <= *b)
            {
                miss.push("destinationPorts".into());
            }
            let r = self.network.entry_rule[i] as usize;
            consider(&self.network.rules[r], miss, 0);
        }
        best.map(|(_, r, m)| (r, m))
    }

    /// The network rules' destination FQDNs (normalised), each once.
    pub fn network_fqdns(&self) -> impl Iterator<Item = &str> {
        self.network.name_index.keys().map(|n| &**n)
    }

    /// Is `ip` outside the firewall's SNAT private ranges (FW-8.1)?
    pub fn is_public(&self, ip: IpAddr) -> bool {
        !contains_addr(&self.snat_private_ranges, ip)
    }

    /// Number of rules per pass (DNAT, network, application).
    pub fn rule_counts(&self) -> (usize, usize, usize) {
        (
            self.dnat.rules.len(),
            self.network.rules.len(),
            self.app_refs.len(),
        )
    }
}

/// Detail of a default deny.
const NO_RULE: &str = "No rule matched. Proceeding with default action";

/// Near-miss ranking: fewer differing fields, then closer names.
type NearMissScore = (usize, std::cmp::Reverse<usize>);

/// A pass's rules for header-space analysis: the classifier entries in evaluation order, the
/// rule each entry belongs to (an `Icmp` rule has one entry per family, a DNAT rule's `Any` one
/// for TCP and one for UDP: FW-4), and the rules.
pub struct PassView<'a> {
    pub rules: &'a [Arc<RuleRef>],
    pub entries: &'a [ClassifierRule],
    pub entry_rule: &'a [u32],
}

/// An application rule as addresses and ports; its names are not addresses (FW-6).
pub struct AppRuleView<'a> {
    pub rule: &'a RuleRef,
    pub protocols: &'a [ApplicationProtocol],
    pub sources: &'a [IpNet],
    pub destinations: Option<&'a [IpNet]>,
    pub patterns: &'a [String],
}

impl CompiledFirewall {
    /// The network pass (FW-5) for header-space analysis.
    pub fn network_pass(&self) -> PassView<'_> {
        self.network.view()
    }

    /// The DNAT pass (FW-4) for header-space analysis: TCP and UDP entries only.
    pub fn dnat_pass(&self) -> PassView<'_> {
        self.dnat.view()
    }

    /// DNAT rule `rule`'s translation as [`CompiledFirewall::evaluate`] applies it: the address
    /// (only a literal address translates) and the port (`None`: the original port).
    pub fn dnat_translation(&self, rule: usize) -> Option<(IpAddr, Option<u16>)> {
        match self.dnat.translated.get(rule)?.as_ref()? {
            (AddressItem::Prefix(p), port) => Some((p.addr(), *port)),
            _ => None,
        }
    }

    /// The application rules in evaluation order.
    pub fn application_rules(&self) -> impl Iterator<Item = AppRuleView<'_>> {
        self.app_refs
            .iter()
            .zip(&self.app_rules)
            .map(|(rule, r)| AppRuleView {
                rule,
                protocols: &r.protocols,
                sources: &r.sources,
                destinations: r.destinations.as_deref(),
                patterns: &r.patterns,
            })
    }
}

/// Length of the longest common suffix of two names.
fn common_suffix(a: &str, b: &str) -> usize {
    a.bytes()
        .rev()
        .zip(b.bytes().rev())
        .take_while(|(x, y)| x.eq_ignore_ascii_case(y))
        .count()
}

fn rule_ref(
    resource: &str,
    group: Option<(&str, u32)>,
    c: &RuleCollection,
    r: &FirewallRule,
    fw_check: Option<AddressCheck>,
) -> RuleRef {
    RuleRef {
        resource: resource.to_string(),
        rule_collection_group: group.map(|g| g.0.to_string()),
        rule_collection_group_priority: group.map(|g| g.1),
        rule_collection: c.name.clone(),
        rule_collection_priority: c.priority,
        rule: r.name.clone(),
        action: c.action,
        kind: c.kind,
        audit: c.palisade.mode == RuleMode::Audit || r.palisade.mode == RuleMode::Audit,
        address_check: r
            .palisade
            .address_check
            .or(c.palisade.address_check)
            .or(fw_check),
    }
}

/// Collections by ascending priority (ties by name, FW-1), rules in listed order (FW-2.4).
fn sorted_rules(cols: &[RuleCollection]) -> Vec<(&RuleCollection, &FirewallRule)> {
    let mut cs: Vec<&RuleCollection> = cols.iter().collect();
    cs.sort_by(|a, b| {
        (a.priority, a.name.to_ascii_lowercase()).cmp(&(b.priority, b.name.to_ascii_lowercase()))
    });
    cs.into_iter()
        .flat_map(|c| c.rules.iter().map(move |r| (c, r)))
        .collect()
}

/// FW-8.3: `IANAPrivateRanges` stands for the defaults (plus `fc00::/7`, FW-8.4).
fn snat_ranges(configured: Option<&[String]>) -> Vec<IpNet> {
    let iana = || {
        [
            "10.0.0.0/8",
            "172.16.0.0/12",
            "192.168.0.0/16",
            "100.64.0.0/10",
            "fc00::/7",
        ]
        .map(net)
        .to_vec()
    };
    match configured {
        None => iana(),
        Some(list) => {
            let mut out = vec![];
            for item in list {
                if item.eq_ignore_ascii_case("IANAPrivateRanges") {
                    out.extend(iana());
                } else if let Ok((a, _)) = palisade_model::address::parse_address_item(item, true) {
                    match a {
                        AddressItem::Prefix(p) => out.push(p),
                        AddressItem::Range(x, y) => out.extend(range_to_cidrs(x, y)),
                        _ => {}
                    }
                }
            }
            out
        }
    }
}

#[derive(Default)]
struct L4Builder {
    rules: Vec<Arc<RuleRef>>,
    specs: Vec<ClassifierRule>,
    entry_rule: Vec<u32>,
    translated: Vec<Option<(AddressItem, Option<u16>)>>,
    by_name: Vec<NameEntry>,
    name_index: HashMap<Arc<str>, Vec<u32>>,
}

impl L4Builder {
    fn push(
        &mut self,
        rref: RuleRef,
        rule: &FirewallRule,
        sources: Vec<IpNet>,
        destinations: Vec<IpNet>,
        translated: Option<(AddressItem, Option<u16>)>,
        fqdns: &[Arc<str>],
    ) {
        let dnat = rref.kind == RuleCollectionKind::Nat;
        let idx = self.rules.len() as u32;
        self.rules.push(Arc::new(rref));
        self.translated.push(translated);
        let ports: Vec<(u16, u16)> = if rule.destination_ports.is_empty() {
            vec![(PortRange::ANY.first, PortRange::ANY.last)]
        } else {
            rule.destination_ports
                .iter()
                .map(|p| (p.first, p.last))
                .collect()
        };
        let mut protos: Vec<(Option<u8>, Option<bool>)> = vec![];
        for p in &rule.ip_protocols {
            let entries: &[(Option<u8>, Option<bool>)] = match (p, dnat) {
                // FW-4: DNAT matches TCP and UDP only; `Any` is those two, and ICMP matches
                // nothing, so such a flow goes on to the network rules.
                (NetworkProtocol::Any, true) => &[(Some(6), None), (Some(17), None)],
                (NetworkProtocol::Icmp, true) => &[],
                (NetworkProtocol::Any, false) => &[(None, None)],
                (NetworkProtocol::Tcp, _) => &[(Some(6), None)],
                (NetworkProtocol::Udp, _) => &[(Some(17), None)],
                (NetworkProtocol::Icmp, false) => &[(Some(1), Some(false)), (Some(58), Some(true))],
            };
            for e in entries {
                // `[TCP, Any]` on a DNAT rule would list TCP twice: one entry decides the same.
                if !protos.contains(e) {
                    protos.push(*e);
                }
            }
        }
        for (proto, family) in protos {
            let keep = |set: &[IpNet]| -> Vec<IpNet> {
                set.iter()
                    .filter(|n| family.is_none_or(|v6| matches!(n, IpNet::V6(_)) == v6))
                    .copied()
                    .collect()
            };
            let spec = ClassifierRule {
                protocol: proto,
                src: keep(&sources),
                dst: keep(&destinations),
                src_ports: vec![(0, 65535)],
                dst_ports: ports.clone(),
            };
            if !fqdns.is_empty() {
                let at = self.by_name.len() as u32;
                self.by_name.push(NameEntry {
                    spec: ClassifierRule {
                        dst: vec![],
                        ..spec.clone()
                    },
                    rule: idx,
                });
                for f in fqdns {
                    let at_name = self.name_index.entry(f.clone()).or_default();
                    // A rule naming a name twice: one position is enough.
                    if at_name.last() != Some(&at) {
                        at_name.push(at);
                    }
                }
            }
            self.specs.push(spec);
            self.entry_rule.push(idx);
        }
    }

    fn build(self) -> L4Pass {
        let classifier = Classifier::build(
            self.specs.clone(),
            ClassifierOptions {
                ports_only_for_tcp_udp: true,
            },
        );
        L4Pass {
            has_audit: self.rules.iter().any(|r| r.audit),
            rules: self.rules,
            specs: self.specs,
            entry_rule: self.entry_rule,
            translated: self.translated,
            classifier,
            by_name: self.by_name,
            name_index: self.name_index,
        }
    }
}

impl L4Pass {
    fn view(&self) -> PassView<'_> {
        PassView {
            rules: &self.rules,
            entries: &self.specs,
            entry_rule: &self.entry_rule,
        }
    }

    /// First non-audit rule matching by address or by a destination FQDN the address was
    /// resolved from (with that FQDN), in rule order; audit matches before it are collected
    /// (PAL-5.3). A rule matching both ways is reported as matched by address.
    fn first_by_name(
        &self,
        key: &PacketKey,
        names: &dyn ResolvedNames,
        audit: &mut Vec<Arc<RuleRef>>,
    ) -> Option<(usize, Option<&Arc<str>>)> {
        if self.by_name.is_empty() {
            return self.first(key, audit).map(|r| (r, None));
        }
        // The first entry at or after `from` whose rule names one of the names the destination
        // was resolved from and whose protocol, source and ports match: (entry, rule, name).
        let by_name_from = |from: usize| {
            let mut best: Option<(usize, &Arc<str>)> = None;
            names.names_of(key.dst, &mut |n| {
                let Some((name, at)) = self.name_index.get_key_value(n) else {
                    return;
                };
                let start = at.partition_point(|&p| (p as usize) < from);
                for &p in &at[start..] {
                    let p = p as usize;
                    if best.is_some_and(|(b, _)| p >= b) {
                        break;
                    }
                    if self.by_name[p].matches(key) {
                        best = Some((p, name));
                        break;
                    }
                }
            });
            best.map(|(p, name)| (p, self.by_name[p].rule as usize, name))
        };
        let mut by_address = self.classifier.first_match(key);
        let mut by_name = by_name_from(0);
        loop {
            let a = by_address.map(|e| self.entry_rule[e as usize] as usize);
            let n = by_name.map(|(_, r, _)| r);
            let (rule, name) = match (a, n) {
                (None, None) => return None,
                (Some(a), Some(n)) if n < a => (n, by_name.map(|(_, _, name)| name)),
                (Some(a), _) => (a, None),
                (None, Some(n)) => (n, by_name.map(|(_, _, name)| name)),
            };
            if !self.rules[rule].audit {
                return Some((rule, name));
            }
            audit.push(self.rules[rule].clone());
            // Past this rule in both orders (its other entries included).
            while let Some(e) = by_address.filter(|e| self.entry_rule[*e as usize] as usize <= rule)
            {
                by_address = self.classifier.next_match_after(key, e);
            }
            while let Some((i, _, _)) = by_name.filter(|(_, r, _)| *r <= rule) {
                by_name = by_name_from(i + 1);
            }
        }
    }

    /// First non-audit rule matching; audit matches before it are collected (PAL-5.3).
    fn first(&self, key: &PacketKey, audit: &mut Vec<Arc<RuleRef>>) -> Option<usize> {
        let mut e = self.classifier.first_match(key)?;
        loop {
            let r = self.entry_rule[e as usize] as usize;
            if !self.has_audit || !self.rules[r].audit {
                return Some(r);
            }
            audit.push(self.rules[r].clone());
            e = self.classifier.next_match_after(key, e)?;
        }
    }
}
