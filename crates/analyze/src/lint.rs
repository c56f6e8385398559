//! Lint: rules and layouts that are legal but wrong or risky. Each finding has a severity, a
//! location (file, JSON pointer, resource, rule) and a suggested change.
//!
//! Rule comparisons use the compiled, resolved sets (tags expanded for the subnet the NSG
//! serves), so "shadowed" means exactly "every packet the rule matches is decided earlier".
//! A rule covered only by the union of several earlier rules is not reported (single-rule cover).

use ipnet::IpNet;
use palisade_model::{
    Access, Direction, NextHopType, Origin, PortRange, Protocol, RoutePrefix, RuleCollectionKind,
};
use palisade_policy::nsg::CompiledRule;
use palisade_policy::prefixes::difference;
use palisade_policy::snapshot::NicEntry;
use palisade_policy::{NsgId, Snapshot};
use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub enum Severity {
    Info,
    Warning,
    Error,
}

#[derive(Debug, Clone, Serialize)]
pub struct Finding {
    pub severity: Severity,
    /// Stable identifier of the check (`shadowed-rule`, `subnet-without-nsg`, ...).
    pub code: &'static str,
    pub file: String,
    pub pointer: String,
    pub resource: String,
    pub rule: Option<String>,
    pub message: String,
    pub suggestion: String,
}

const MANAGEMENT_PORTS: &[(u16, &str)] = &[(22, "SSH"), (3389, "RDP")];
const DATABASE_PORTS: &[(u16, &str)] = &[
    (1433, "SQL Server"),
    (3306, "MySQL"),
    (5432, "PostgreSQL"),
    (1521, "Oracle"),
    (27017, "MongoDB"),
    (6379, "Redis"),
    (9200, "Elasticsearch"),
];
/// Subnets that must not (or need not) carry an NSG.
const PLATFORM_SUBNETS: &[&str] = &[
    "GatewaySubnet",
    "AzureFirewallSubnet",
    "AzureFirewallManagementSubnet",
    "AzureBastionSubnet",
    "RouteServerSubnet",
];

fn finding(
    severity: Severity,
    code: &'static str,
    origin: &Origin,
    resource: &str,
    rule: Option<&str>,
    message: String,
    suggestion: String,
) -> Finding {
    Finding {
        severity,
        code,
        file: origin.file.clone(),
        pointer: origin.pointer.clone(),
        resource: resource.to_string(),
        rule: rule.map(str::to_string),
        message,
        suggestion,
    }
}

fn covers_set(outer: &[IpNet], inner: &[IpNet]) -> bool {
    difference(inner, outer).is_empty()
}

fn covers_ports(outer: &[PortRange], inner: &[PortRange]) -> bool {
    inner.iter().all(|i| {
        // Inclusion of one range in a union of ranges: walk the sorted outer ranges.
        let mut sorted = outer.to_vec();
        sorted.sort();
        let mut need = i.first as u32;
        for o in sorted {
            if (o.first as u32) <= need && (o.last as u32) >= need {
                need = o.last as u32 + 1;
            }
            if need > i.last as u32 {
                return true;
            }
        }
        need > i.last as u32
    })
}

/// Does `outer` match every packet `inner` matches?
fn rule_covers(outer: &CompiledRule, inner: &CompiledRule) -> bool {
    let proto = outer.protocol == Protocol::Any || outer.protocol == inner.protocol;
    let ports_matter = matches!(
        inner.protocol,
        Protocol::Tcp | Protocol::Udp | Protocol::Any
    );
    proto
        && covers_set(&outer.source, &inner.source)
        && covers_set(&outer.destination, &inner.destination)
        && (!ports_matter
            || (covers_ports(&outer.source_ports, &inner.source_ports)
                && covers_ports(&outer.destination_ports, &inner.destination_ports)))
}

fn matches_port(r: &CompiledRule, port: u16) -> bool {
    matches!(r.protocol, Protocol::Tcp | Protocol::Any)
        && r.destination_ports.iter().any(|p| p.contains(port))
}

fn is_any(set: &[IpNet]) -> bool {
    set.iter().any(|n| n.prefix_len() == 0)
}

fn origin_of(snap: &Snapshot, nsg: &str, r: &CompiledRule) -> Origin {
    snap.network
        .nsg(nsg)
        .and_then(|n| {
            r.model_index
                .and_then(|i| n.security_rules.get(i))
                .map(|x| x.origin.clone())
                .or(Some(n.origin.clone()))
        })
        .unwrap_or_default()
}

/// Run every check.
pub fn lint(snap: &Snapshot) -> Vec<Finding> {
    let mut out = vec![];
    nsg_rules(snap, &mut out);
    layouts(snap, &mut out);
    routes(snap, &mut out);
    firewall(snap, &mut out);
    out.sort_by(|a, b| {
        b.severity
            .cmp(&a.severity)
            .then(a.resource.cmp(&b.resource))
            .then(a.rule.cmp(&b.rule))
    });
    out
}

fn nsg_rules(snap: &Snapshot, out: &mut Vec<Finding>) {
    // Each NSG once: the subnet-context compilation when it has one (tags expanded there).
    let mut seen = std::collections::HashSet::new();
    let order: Vec<NsgId> = snap
        .subnets()
        .filter_map(|(_, s)| s.nsg)
        .chain(snap.nics().filter_map(|(_, n)| n.nsg))
        .chain(snap.unattached_nsgs().map(|(_, i)| i))
        .collect();
    for id in order {
        let nsg = snap.nsg(id);
        if !seen.insert(nsg.name.to_ascii_lowercase()) {
            continue;
        }
        for dir in [Direction::Inbound, Direction::Outbound] {
            let rules = &nsg.direction(dir).rules;
            for (i, r) in rules.iter().enumerate().filter(|(_, r)| !r.is_default) {
                let origin = origin_of(snap, &nsg.name, r);
                let at = |sev, code, msg: String, fix: String| {
                    finding(sev, code, &origin, &nsg.name, Some(&r.name), msg, fix)
                };
                if r.source.is_empty() || r.destination.is_empty() {
                    out.push(at(
                        Severity::Warning,
                        "rule-never-matches",
                        format!(
                            "{dir:?} rule `{}` can never match: its {} resolves to no address ({})",
                            r.name,
                            if r.source.is_empty() {
                                "source"
                            } else {
                                "destination"
                            },
                            r.unresolvable.join(", ")
                        ),
                        "fix the unknown tag or expression, or remove the rule".into(),
                    ));
                    continue;
                }
                let fam = |s: &[IpNet]| {
                    (
                        s.iter().any(|n| matches!(n, IpNet::V4(_))),
                        s.iter().any(|n| matches!(n, IpNet::V6(_))),
                    )
                };
                let (s4, s6) = fam(&r.source);
                let (d4, d6) = fam(&r.destination);
                if !(s4 && d4 || s6 && d6) {
                    out.push(at(Severity::Error, "rule-never-matches", format!("rule `{}` has only IPv{} sources and only IPv{} destinations: no packet has both (PAL-5.1)", r.name, if s4 { 4 } else { 6 }, if d4 { 4 } else { 6 }), "use addresses of one family on both sides".into()));
                }
                if r.protocol == Protocol::Any && r.destination_ports.iter().any(|p| !p.is_any()) {
                    out.push(at(Severity::Info, "ports-on-any-protocol", format!("rule `{}` restricts ports but its protocol is `*`: for ICMP, ESP and AH the ports are ignored (NSG-2.2)", r.name), "set protocol Tcp or Udp if only those are meant".into()));
                }
                if let Some(e) = rules[..i]
                    .iter()
                    .find(|e| !e.is_default && !e.audit && rule_covers(e, r))
                {
                    let (code, msg, sev) = if e.access == r.access {
                        ("redundant-rule", format!("rule `{}` (priority {}) is redundant: `{}` (priority {}) already {}s everything it matches", r.name, r.priority, e.name, e.priority, format!("{:?}", e.access).to_lowercase()), Severity::Info)
                    } else {
                        ("shadowed-rule", format!("rule `{}` (priority {}) never decides: `{}` (priority {}) {}s everything it matches first", r.name, r.priority, e.name, e.priority, format!("{:?}", e.access).to_lowercase()), Severity::Warning)
                    };
                    out.push(at(
                        sev,
                        code,
                        msg,
                        format!(
                            "remove `{}` or give it a priority below {}",
                            r.name, e.priority
                        ),
                    ));
                }
                if r.access == Access::Allow && dir == Direction::Inbound && !r.audit {
                    let open = is_any(&r.source)
                        || covers_set(
                            &r.source,
                            &snap
                                .subnets()
                                .next()
                                .map(|(_, s)| s.tags.internet.clone())
                                .unwrap_or_default(),
                        );
                    if open {
                        for (port, what) in MANAGEMENT_PORTS.iter().chain(DATABASE_PORTS) {
                            if matches_port(r, *port) {
                                out.push(at(Severity::Error, "open-to-internet", format!("rule `{}` allows {what} (port {port}) from any Internet source", r.name), format!("restrict the source to a management range or use a bastion; for {what} allow only the application subnets")));
                            }
                        }
                        if r.destination_ports
                            .iter()
                            .any(|p| p.contains(454) || p.contains(455))
                            && !matches_port(r, 22)
                        {
                            out.push(at(Severity::Info, "ase-management-open", format!("rule `{}` opens the App Service Environment management ports 454-455 to every Internet address", r.name), "use the `AppServiceManagement` service tag as the source (NSG-11.1)".into()));
                        }
                    }
                }
                if r.access == Access::Allow
                    && is_any(&r.source)
                    && is_any(&r.destination)
                    && r.protocol == Protocol::Any
                    && r.destination_ports.iter().any(|p| p.is_any())
                {
                    out.push(at(Severity::Warning, "all-open-rule", format!("rule `{}` allows every protocol, address and port {}", r.name, format!("{dir:?}").to_lowercase()), "state what is needed; if another layer (the firewall) filters, say so in the rule's description".into()));
                }
            }
        }
    }
}

fn layouts(snap: &Snapshot, out: &mut Vec<Finding>) {
    for (v, s) in snap.network.subnets() {
        let name = format!("{}/{}", v.name, s.name);
        if s.network_security_group.is_none()
            && !PLATFORM_SUBNETS
                .iter()
                .any(|p| p.eq_ignore_ascii_case(&s.name))
        {
            out.push(finding(Severity::Warning, "subnet-without-nsg", &s.origin, &name, None, format!("subnet `{name}` has no network security group: all traffic to and from it is allowed (NSG-6)"), "attach an NSG that allows only what the subnet's workloads need".into()));
        }
        if s.name.eq_ignore_ascii_case("GatewaySubnet") {
            if let Some(t) = s
                .route_table
                .as_deref()
                .and_then(|t| snap.network.route_table(t))
            {
                if t.disable_bgp_route_propagation {
                    out.push(finding(
                        Severity::Error,
                        "gateway-subnet-bgp-disabled",
                        &t.origin,
                        &t.name,
                        None,
                        "route table on GatewaySubnet disables BGP route propagation (RT-6)".into(),
                        "set disableBgpRoutePropagation to false on this table".into(),
                    ));
                }
            }
        }
    }
    // A subnet NSG allow that every NIC NSG in the subnet denies first has no effect (NSG-6).
    for (si, subnet) in snap.subnets() {
        let Some(sn) = subnet.nsg else { continue };
        let nics: Vec<&NicEntry> = snap
            .nics()
            .filter(|(_, n)| n.subnet == Some(si))
            .map(|(_, n)| n)
            .collect();
        if nics.is_empty() {
            continue;
        }
        for dir in [Direction::Inbound, Direction::Outbound] {
            for r in snap
                .nsg(sn)
                .direction(dir)
                .rules
                .iter()
                .filter(|r| !r.is_default && r.access == Access::Allow)
            {
                let mut blockers = vec![];
                for n in &nics {
                    let Some(ni) = n.nsg else {
                        blockers.clear();
                        break;
                    };
                    // The first NIC rule overlapping the allowed traffic must cover it and deny.
                    let nic_rules = &snap.nsg(ni).direction(dir).rules;
                    match nic_rules
                        .iter()
                        .find(|x| x.access == Access::Deny && rule_covers(x, r))
                    {
                        Some(d)
                            if !nic_rules
                                .iter()
                                .take_while(|x| x.name != d.name)
                                .any(|x| x.access == Access::Allow && overlaps(x, r)) =>
                        {
                            blockers.push(format!("{}/{}", snap.nsg(ni).name, d.name))
                        }
                        _ => {
                            blockers.clear();
                            break;
                        }
                    }
                }
                if !blockers.is_empty() {
                    let origin = origin_of(snap, &snap.nsg(sn).name, r);
                    out.push(finding(Severity::Warning, "overruled-by-nic-nsg", &origin, &snap.nsg(sn).name, Some(&r.name), format!("`{}` allows traffic that every NIC in subnet `{}` denies ({}): it has no effect", r.name, subnet.name, blockers.join(", ")), "remove the subnet rule, or allow the traffic in the NIC NSG too".into()));
                }
            }
        }
    }
}

fn overlaps(a: &CompiledRule, b: &CompiledRule) -> bool {
    let sets = |x: &[IpNet], y: &[IpNet]| {
        x.iter()
            .any(|p| y.iter().any(|q| p.contains(q) || q.contains(p)))
    };
    let ports = |x: &[PortRange], y: &[PortRange]| {
        x.iter()
            .any(|p| y.iter().any(|q| p.first <= q.last && q.first <= p.last))
    };
    (a.protocol == Protocol::Any || b.protocol == Protocol::Any || a.protocol == b.protocol)
        && sets(&a.source, &b.source)
        && sets(&a.destination, &b.destination)
        && ports(&a.destination_ports, &b.destination_ports)
}

fn routes(snap: &Snapshot, out: &mut Vec<Finding>) {
    for t in &snap.network.route_tables {
        let forced = t.routes.iter().find(|r| {
            matches!(r.address_prefix, RoutePrefix::Cidr(p) if p.prefix_len() == 0)
                && r.next_hop_type == NextHopType::VirtualAppliance
        });
        let Some(default) = forced else { continue };
        for r in t
            .routes
            .iter()
            .filter(|r| r.next_hop_type == NextHopType::Internet)
        {
            let what = match &r.address_prefix {
                RoutePrefix::Cidr(p) => p.to_string(),
                RoutePrefix::ServiceTag(tag) => format!("service tag {tag}"),
                RoutePrefix::Unresolved(x) => x.clone(),
            };
            out.push(finding(Severity::Info, "default-route-bypassed", &r.origin, &t.name, Some(&r.name), format!("route `{}` sends {what} to the Internet directly, around `{}` → {}", r.name, default.name, default.next_hop_ip_address.map(|a| a.to_string()).unwrap_or_default()), "keep it only for return paths that must be symmetric (RT-9) or documented dependencies; outbound connections to these addresses skip the firewall".into()));
        }
        // NSG-8.1: the widened VirtualNetwork tag makes AllowVnet* defaults allow everything.
        for (v, s) in snap.network.subnets().filter(|(_, s)| {
            s.route_table
                .as_deref()
                .is_some_and(|n| n.eq_ignore_ascii_case(&t.name))
        }) {
            let Some(nsg) = s.network_security_group.as_deref() else {
                continue;
            };
            let Some(si) = snap.subnet_by_name(&format!("{}/{}", v.name, s.name)) else {
                continue;
            };
            let Some(ci) = snap.subnet(si).nsg else {
                continue;
            };
            let reaches_default = |dir: Direction| {
                let rules = &snap.nsg(ci).direction(dir).rules;
                !rules.iter().any(|r| {
                    !r.is_default
                        && r.access == Access::Deny
                        && is_any(&r.source)
                        && is_any(&r.destination)
                        && r.protocol == Protocol::Any
                })
            };
            if reaches_default(Direction::Inbound) {
                out.push(finding(Severity::Warning, "virtual-network-tag-widened", &s.origin, nsg, Some("AllowVnetInBound"), format!("`{}` → VirtualAppliance on subnet `{}` widens the VirtualNetwork tag to every address (NSG-8.1): AllowVnetInBound now admits all inbound traffic that no user rule denies", default.name, s.name), "end the NSG's inbound rules with an explicit deny of everything not allowed (priority 4096)".into()));
            }
        }
    }
    // Service endpoints that let traffic skip a firewall which filters that service.
    for (v, s) in snap.network.subnets() {
        let Some(si) = snap.subnet_by_name(&format!("{}/{}", v.name, s.name)) else {
            continue;
        };
        let through_fw = snap
            .subnet(si)
            .routes
            .lookup("0.0.0.0".parse().expect("literal"))
            .is_some_and(|(_, r)| r.next_hop_type == NextHopType::VirtualAppliance);
        if !through_fw {
            continue;
        }
        for ep in &s.service_endpoints {
            let Some(tag) = palisade_policy::routes::service_endpoint_tag(&ep.service) else {
                continue;
            };
            let filtered = firewall_mentions(snap, tag);
            if let Some(rule) = filtered {
                out.push(finding(Severity::Info, "service-endpoint-bypasses-firewall", &s.origin, &format!("{}/{}", v.name, s.name), None, format!("service endpoint `{}` sends {tag} traffic around the firewall, which also has rules for it ({rule}); those rules never see this subnet's {tag} traffic (RT-7)", ep.service), "keep the endpoint (and restrict with NSG service-tag rules) or remove it so the firewall decides; not both".into()));
            }
        }
    }
}

/// A firewall rule naming a service tag or its well-known domains.
fn firewall_mentions(snap: &Snapshot, tag: &str) -> Option<String> {
    let domains: &[&str] = match tag {
        "Storage" => &[".core.windows.net"],
        "Sql" => &[".database.windows.net"],
        "EventHub" | "ServiceBus" => &[".servicebus.windows.net"],
        "AzureKeyVault" => &[".vault.azure.net"],
        _ => &[],
    };
    let mut found = None;
    let mut check = |c: &palisade_model::RuleCollection| {
        for r in &c.rules {
            let names_tag = r.destination_addresses.iter().any(|a| matches!(a, palisade_model::AddressItem::ServiceTag(t) if t.eq_ignore_ascii_case(tag) || t.to_ascii_lowercase().starts_with(&format!("{}.", tag.to_ascii_lowercase()))));
            let names_domain = r
                .target_fqdns
                .iter()
                .any(|f| domains.iter().any(|d| f.to_ascii_lowercase().ends_with(d)));
            if (names_tag || names_domain) && found.is_none() {
                found = Some(format!("{}/{}", c.name, r.name));
            }
        }
    };
    for f in &snap.network.azure_firewalls {
        f.rule_collections.iter().for_each(&mut check);
    }
    for p in &snap.network.firewall_policies {
        p.rule_collection_groups
            .iter()
            .flat_map(|g| &g.rule_collections)
            .for_each(&mut check);
    }
    found
}

/// FW-4: a DNAT rule matches TCP and UDP only; the ICMP it names is never translated.
fn dnat_icmp(
    owner: &str,
    policy: bool,
    c: &palisade_model::RuleCollection,
    out: &mut Vec<Finding>,
) {
    use palisade_model::NetworkProtocol;
    // The field's name in the input's schema: policies say `ipProtocols`, classic rules `protocols`.
    let field = if policy { "ipProtocols" } else { "protocols" };
    for r in &c.rules {
        if !r.ip_protocols.contains(&NetworkProtocol::Icmp) {
            continue;
        }
        let only = r.ip_protocols.iter().all(|p| *p == NetworkProtocol::Icmp);
        let (effect, suggestion) = if only {
            (
                "the rule never matches",
                format!("name TCP or UDP in `{field}`, or delete the rule; allow ICMP with a network rule if it is meant"),
            )
        } else {
            (
                "ICMP to the frontend is not translated and goes on to the network rules",
                format!(
                    "remove ICMP from `{field}`; allow ICMP with a network rule if it is meant"
                ),
            )
        };
        out.push(finding(
            Severity::Warning,
            "dnat-icmp",
            &r.origin,
            owner,
            Some(&format!("{}/{}", c.name, r.name)),
            format!(
                "DNAT rule `{}`: field `{field}` names ICMP, but DNAT matches TCP and UDP only (FW-4): {effect}",
                r.name
            ),
            suggestion,
        ));
    }
}

fn firewall(snap: &Snapshot, out: &mut Vec<Finding>) {
    for f in &snap.network.azure_firewalls {
        for c in f
            .rule_collections
            .iter()
            .filter(|c| c.kind == RuleCollectionKind::Nat)
        {
            dnat_icmp(&f.name, false, c, out);
        }
    }
    for p in &snap.network.firewall_policies {
        for g in &p.rule_collection_groups {
            for c in g
                .rule_collections
                .iter()
                .filter(|c| c.kind == RuleCollectionKind::Nat)
            {
                dnat_icmp(&p.name, true, c, out);
            }
        }
    }
    let mut check = |owner: &str, c: &palisade_model::RuleCollection| {
        if c.kind != RuleCollectionKind::Application {
            return;
        }
        for r in &c.rules {
            for p in &r.protocols {
                let odd = match p.protocol_type {
                    palisade_model::ApplicationProtocolType::Http => p.port == 443,
                    palisade_model::ApplicationProtocolType::Https => p.port == 80,
                    palisade_model::ApplicationProtocolType::Mssql => p.port != 1433,
                };
                if odd {
                    out.push(finding(
                        Severity::Warning,
                        "fqdn-rule-on-unused-port",
                        &r.origin,
                        owner,
                        Some(&format!("{}/{}", c.name, r.name)),
                        format!(
                            "rule `{}` matches {:?} on port {}: clients speak {} there",
                            r.name,
                            p.protocol_type,
                            p.port,
                            if p.port == 443 {
                                "HTTPS"
                            } else if p.port == 80 {
                                "HTTP"
                            } else {
                                "another protocol"
                            }
                        ),
                        "use Http:80 and Https:443 (or the port the clients really use)".into(),
                    ));
                }
            }
            for t in &r.target_fqdns {
                if t.starts_with('*') && !t.starts_with("*.") && t != "*" {
                    out.push(finding(Severity::Warning, "raw-suffix-wildcard", &r.origin, owner, Some(&format!("{}/{}", c.name, r.name)), format!("target `{t}` is a raw suffix: it also matches look-alike names such as `bad{}` (FW-6.3)", &t[1..]), format!("write `*.{}` (and `{}` for the apex) unless look-alikes are meant", &t[1..], &t[1..])));
                }
            }
        }
    };
    for f in &snap.network.azure_firewalls {
        for c in &f.rule_collections {
            check(&f.name, c);
        }
    }
    for p in &snap.network.firewall_policies {
        for g in &p.rule_collection_groups {
            for c in &g.rule_collections {
                check(&p.name, c);
            }
        }
    }
}
