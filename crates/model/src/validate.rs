//! Validation across resources (NSG-3, RT-4, FW-1, FW-5, FW-6.3, FW-7): what the reader of one
//! field cannot see — priorities, duplicates, references, overlaps, catalog lookups. Every problem
//! is reported with its origin; nothing stops at the first.

use crate::address::AddressItem;
use crate::catalog::Catalogs;
use crate::diag::{Diagnostic, Diagnostics};
use crate::resources::*;
use ipnet::IpNet;
use std::collections::HashMap;

const NSG: &str = "Microsoft.Network/networkSecurityGroups";
const RT: &str = "Microsoft.Network/routeTables";
const VNET: &str = "Microsoft.Network/virtualNetworks";
const NIC: &str = "Microsoft.Network/networkInterfaces";
const FW: &str = "Microsoft.Network/azureFirewalls";
const POLICY: &str = "Microsoft.Network/firewallPolicies";

fn at(o: &Origin, sev: Diagnostic) -> Diagnostic {
    sev.at(&o.file, &o.pointer)
}

/// Validate a network against the catalogs. `strict` turns catalog gaps into errors.
pub fn validate(net: &Network, catalogs: &Catalogs, strict: bool) -> Diagnostics {
    let mut d = Diagnostics::default();
    for nsg in &net.network_security_groups {
        nsg_rules(nsg, net, catalogs, strict, &mut d);
    }
    for t in &net.route_tables {
        routes(t, catalogs, strict, &mut d);
    }
    for v in &net.virtual_networks {
        vnet(v, net, &mut d);
    }
    for nic in &net.network_interfaces {
        if let Some(n) = &nic.network_security_group {
            reference(
                &mut d,
                &nic.origin,
                NIC,
                &nic.name,
                "networkSecurityGroup",
                n,
                net.nsg(n).is_some(),
                !net.network_security_groups.is_empty(),
            );
        }
    }
    for fw in &net.azure_firewalls {
        if let Some(p) = &fw.firewall_policy {
            reference(
                &mut d,
                &fw.origin,
                FW,
                &fw.name,
                "firewallPolicy",
                p,
                net.firewall_policy(p).is_some(),
                !net.firewall_policies.is_empty(),
            );
        }
        collections(
            &fw.rule_collections,
            FW,
            &fw.name,
            Some(&fw.settings),
            net,
            catalogs,
            strict,
            &mut d,
        );
    }
    for p in &net.firewall_policies {
        if let Some(b) = &p.base_policy {
            reference(
                &mut d,
                &p.origin,
                POLICY,
                &p.name,
                "basePolicy",
                b,
                net.firewall_policy(b).is_some(),
                true,
            );
        }
        // An unknown name is reported where it stands (import); any name may come of it.
        if !p.name.is_empty() && !valid_firewall_name(&p.name) && !net.name_unknown(&p.origin) {
            d.push(name_error(&p.origin, POLICY, &p.name, "firewall policy"));
        }
        let mut prios: HashMap<u32, &str> = HashMap::new();
        for g in &p.rule_collection_groups {
            if !g.name.is_empty() && !valid_firewall_name(&g.name) && !net.name_unknown(&g.origin) {
                d.push(name_error(
                    &g.origin,
                    POLICY,
                    &format!("{}/{}", p.name, g.name),
                    "rule collection group",
                ));
            }
            for c in g
                .rule_collections
                .iter()
                .filter(|c| !valid_firewall_name(&c.name) && !net.name_unknown(&c.origin))
            {
                d.push(name_error(
                    &c.origin,
                    POLICY,
                    &format!("{}/{}/{}", p.name, g.name, c.name),
                    "rule collection",
                ));
            }
            // An unnamed group only holds a lone rule collection read from a snippet file
            // (`docs/import-support.md`); it has no priority of its own to check.
            let holder = g.name.is_empty() && g.priority == 0;
            if !holder && !(100..=65000).contains(&g.priority) {
                d.push(
                    at(
                        &g.origin,
                        Diagnostic::error(
                            "rule collection group priority outside 100-65000 (FW-1)",
                        ),
                    )
                    .resource(POLICY, &format!("{}/{}", p.name, g.name))
                    .field("priority")
                    .found(g.priority)
                    .expected("an integer 100-65000"),
                );
            }
            if let Some(other) = prios.insert(g.priority, &g.name) {
                d.push(at(&g.origin, Diagnostic::warning(format!("same priority as rule collection group '{other}'; the tie is broken by name (FW-1)"))).resource(POLICY, &format!("{}/{}", p.name, g.name)).field("priority").found(g.priority));
            }
            collections(
                &g.rule_collections,
                POLICY,
                &format!("{}/{}", p.name, g.name),
                Some(&p.settings),
                net,
                catalogs,
                strict,
                &mut d,
            );
        }
    }
    d
}

#[allow(clippy::too_many_arguments)]
fn reference(
    d: &mut Diagnostics,
    origin: &Origin,
    ty: &str,
    name: &str,
    field: &str,
    target: &str,
    exists: bool,
    input_has_type: bool,
) {
    if exists {
        return;
    }
    // Inputs that hold one resource (REST bodies) name others they do not contain; only a
    // network that defines resources of that type is expected to define this one too.
    let diag = if input_has_type {
        Diagnostic::error(format!("references '{target}', which is not in the input"))
    } else {
        Diagnostic::note(format!(
            "references '{target}', which is not in the input; evaluated without it"
        ))
    };
    d.push(
        at(origin, diag)
            .resource(ty, name)
            .field(field)
            .found(target)
            .expected("a resource defined in the input"),
    );
}

/// NSG-2.1 name rule.
fn valid_rule_name(n: &str) -> bool {
    let chars: Vec<char> = n.chars().collect();
    let word = |c: char| c.is_alphanumeric() || c == '_';
    !chars.is_empty()
        && chars.len() <= 80
        && word(chars[0])
        && chars.last().is_some_and(|c| word(*c))
        && chars.iter().all(|c| word(*c) || *c == '.' || *c == '-')
}

fn check_tag(
    tag: &str,
    feature: &str,
    catalogs: &Catalogs,
    strict: bool,
) -> Result<Option<String>, String> {
    let lower = tag.to_ascii_lowercase();
    if matches!(
        lower.as_str(),
        "virtualnetwork"
            | "azureloadbalancer"
            | "internet"
            | "azureplatformdns"
            | "azureplatformimds"
            | "azureplatformlkm"
    ) {
        return Ok(None);
    }
    catalogs.service_tags.check_feature(tag, feature, strict)
}

fn nsg_rules(
    nsg: &NetworkSecurityGroup,
    net: &Network,
    catalogs: &Catalogs,
    strict: bool,
    d: &mut Diagnostics,
) {
    if nsg.security_rules.len() > 1000 {
        d.push(
            at(
                &nsg.origin,
                Diagnostic::error("more than 1,000 rules in one NSG (NSG-10)"),
            )
            .resource(NSG, &nsg.name)
            .field("securityRules")
            .found(nsg.security_rules.len())
            .expected("at most 1,000 rules"),
        );
    }
    let mut seen_prio: HashMap<(u32, Direction), &str> = HashMap::new();
    let mut seen_name: HashMap<String, ()> = HashMap::new();
    for r in &nsg.security_rules {
        let rname = format!("{}/{}", nsg.name, r.name);
        let e = |msg: String| at(&r.origin, Diagnostic::error(msg)).resource(NSG, &rname);
        if !(100..=4096).contains(&r.priority) {
            d.push(
                e("priority outside 100-4096 (NSG-3)".into())
                    .field("priority")
                    .found(r.priority)
                    .expected("an integer 100-4096"),
            );
        }
        if let Some(other) = seen_prio.insert((r.priority, r.direction), &r.name) {
            d.push(
                e(format!(
                    "two rules with priority {} and direction {:?}: '{other}' and this one (NSG-3)",
                    r.priority, r.direction
                ))
                .field("priority")
                .found(r.priority)
                .expected("a priority unique per direction"),
            );
        }
        if seen_name.insert(r.name.to_ascii_lowercase(), ()).is_some() {
            d.push(
                e("two rules with the same name (NSG-3)".into())
                    .field("name")
                    .found(&r.name)
                    .expected("a rule name unique in the NSG"),
            );
        }
        if !valid_rule_name(&r.name) && !net.name_unknown(&r.origin) {
            d.push(e("rule name breaks NSG-2.1".into()).field("name").found(&r.name).expected("≤ 80 word characters, `.`, `-`, `_`; starting with a word character, ending with a word character or `_`"));
        }
        if r.description
            .as_ref()
            .is_some_and(|s| s.chars().count() > 140)
        {
            d.push(
                e("description longer than 140 characters (NSG-2.1)".into())
                    .field("description")
                    .expected("at most 140 characters"),
            );
        }
        let (src_vnets, dst_vnets) = (
            asg_vnets(net, &r.source.application_security_groups),
            asg_vnets(net, &r.destination.application_security_groups),
        );
        if src_vnets.len() == 1 && dst_vnets.len() == 1 && src_vnets != dst_vnets {
            d.push(
                e(format!(
                    "source ASGs are in virtual network {} and destination ASGs in {} (NSG-1)",
                    src_vnets[0], dst_vnets[0]
                ))
                .field("destinationApplicationSecurityGroups")
                .expected("ASGs on both sides in the same virtual network"),
            );
        }
        for (side_name, side) in [("source", &r.source), ("destination", &r.destination)] {
            if side.address_prefixes.len() > 4000 {
                d.push(
                    e(format!(
                        "more than 4,000 address items on the {side_name} side (NSG-10)"
                    ))
                    .field(&format!("{side_name}AddressPrefixes"))
                    .found(side.address_prefixes.len())
                    .expected("at most 4,000"),
                );
            }
            if side.application_security_groups.len() > 10 {
                d.push(
                    e(format!(
                        "more than 10 application security groups on the {side_name} side (NSG-3)"
                    ))
                    .field(&format!("{side_name}ApplicationSecurityGroups"))
                    .found(side.application_security_groups.len())
                    .expected("at most 10"),
                );
            }
            let vnets = asg_vnets(net, &side.application_security_groups);
            if vnets.len() > 1 {
                d.push(
                    e(format!(
                        "application security groups on the {side_name} side have members in different virtual networks ({}) (NSG-1)",
                        vnets.join(", ")
                    ))
                    .field(&format!("{side_name}ApplicationSecurityGroups"))
                    .expected("ASGs whose members share one virtual network"),
                );
            }
            for a in &side.application_security_groups {
                let exists = net
                    .application_security_groups
                    .iter()
                    .any(|x| x.name.eq_ignore_ascii_case(a));
                reference(
                    d,
                    &r.origin,
                    NSG,
                    &rname,
                    &format!("{side_name}ApplicationSecurityGroups"),
                    a,
                    exists,
                    !net.application_security_groups.is_empty(),
                );
            }
            for item in &side.address_prefixes {
                if let AddressItem::ServiceTag(t) = item {
                    match check_tag(t, "NSG", catalogs, strict) {
                        Ok(None) => {}
                        Ok(Some(w)) => d.push(at(&r.origin, Diagnostic::warning(w)).resource(NSG, &rname).field(&format!("{side_name}AddressPrefix")).found(t)),
                        Err(msg) => d.push(e(msg).field(&format!("{side_name}AddressPrefix")).found(t).expected("a service tag of the loaded catalog usable in NSGs, an IP address, a CIDR or `*`")),
                    }
                }
            }
        }
    }
}

fn routes(t: &RouteTable, catalogs: &Catalogs, strict: bool, d: &mut Diagnostics) {
    if t.routes.len() > 400 {
        d.push(
            at(
                &t.origin,
                Diagnostic::error("more than 400 routes in one table (RT-4)"),
            )
            .resource(RT, &t.name)
            .field("routes")
            .found(t.routes.len())
            .expected("at most 400"),
        );
    }
    let mut prefixes: HashMap<String, &str> = HashMap::new();
    let mut names: HashMap<String, ()> = HashMap::new();
    let mut tag_routes = 0;
    for r in &t.routes {
        let rname = format!("{}/{}", t.name, r.name);
        let e = |msg: String| at(&r.origin, Diagnostic::error(msg)).resource(RT, &rname);
        if !r.next_hop_type.is_user_route_type() {
            d.push(
                e("next hop type not allowed in a user-defined route (RT-2)".into())
                    .field("nextHopType")
                    .found(r.next_hop_type.as_str())
                    .expected(
                        "VnetLocal, Internet, VirtualAppliance, VirtualNetworkGateway or None",
                    ),
            );
        }
        match (
            r.next_hop_type,
            r.next_hop_ip_address.is_some() || r.next_hop_unresolved.is_some(),
        ) {
            (NextHopType::VirtualAppliance, false) => d.push(
                e("a VirtualAppliance route without a next hop address (RT-1)".into())
                    .field("nextHopIpAddress")
                    .expected("the appliance's IP address"),
            ),
            (t, true) if t != NextHopType::VirtualAppliance => d.push(
                e(
                    "a next hop address on a route whose next hop is not VirtualAppliance (RT-1)"
                        .into(),
                )
                .field("nextHopIpAddress")
                .found(
                    r.next_hop_ip_address
                        .map(|a| a.to_string())
                        .unwrap_or_default(),
                )
                .expected("no address for this next hop type"),
            ),
            _ => {}
        }
        if names.insert(r.name.to_ascii_lowercase(), ()).is_some() {
            d.push(
                e("two routes with the same name (RT-4)".into())
                    .field("name")
                    .found(&r.name)
                    .expected("a route name unique in the table"),
            );
        }
        match &r.address_prefix {
            RoutePrefix::Cidr(p) => {
                if let Some(other) = prefixes.insert(p.to_string(), &r.name) {
                    d.push(
                        e(format!("same addressPrefix as route '{other}' (RT-4)"))
                            .field("addressPrefix")
                            .found(p)
                            .expected("an address prefix unique in the table"),
                    );
                }
            }
            RoutePrefix::ServiceTag(tag) => {
                tag_routes += 1;
                match catalogs.service_tags.check_feature(tag, "UDR", strict) {
                    Ok(None) => {}
                    Ok(Some(w)) => d.push(
                        at(&r.origin, Diagnostic::warning(w))
                            .resource(RT, &rname)
                            .field("addressPrefix")
                            .found(tag),
                    ),
                    Err(msg) => d.push(
                        e(msg)
                            .field("addressPrefix")
                            .found(tag)
                            .expected("a CIDR prefix or a service tag usable in routes"),
                    ),
                }
            }
            RoutePrefix::Unresolved(_) => {}
        }
    }
    if tag_routes > 25 {
        d.push(
            at(
                &t.origin,
                Diagnostic::error("more than 25 service-tag routes in one table (RT-4)"),
            )
            .resource(RT, &t.name)
            .field("routes")
            .found(tag_routes)
            .expected("at most 25"),
        );
    }
}

fn vnet(v: &VirtualNetwork, net: &Network, d: &mut Diagnostics) {
    let mut seen: Vec<(&IpNet, &str)> = vec![];
    let mut names: HashMap<String, ()> = HashMap::new();
    for s in &v.subnets {
        let sname = format!("{}/{}", v.name, s.name);
        if names.insert(s.name.to_ascii_lowercase(), ()).is_some() {
            d.push(
                at(
                    &s.origin,
                    Diagnostic::error("two subnets with the same name"),
                )
                .resource(VNET, &sname)
                .field("name")
                .found(&s.name)
                .expected("a subnet name unique in the virtual network"),
            );
        }
        for p in &s.address_prefixes {
            if !v.address_space.is_empty() && !v.address_space.iter().any(|a| a.contains(p)) {
                d.push(
                    at(
                        &s.origin,
                        Diagnostic::error(
                            "subnet prefix outside the virtual network's address space",
                        ),
                    )
                    .resource(VNET, &sname)
                    .field("addressPrefix")
                    .found(p)
                    .expected(format!(
                        "a prefix inside {}",
                        v.address_space
                            .iter()
                            .map(|a| a.to_string())
                            .collect::<Vec<_>>()
                            .join(", ")
                    )),
                );
            }
            for (q, other) in &seen {
                if q.contains(p) || p.contains(*q) {
                    d.push(
                        at(
                            &s.origin,
                            Diagnostic::error(format!(
                                "subnet prefix overlaps subnet '{other}' ({q})"
                            )),
                        )
                        .resource(VNET, &sname)
                        .field("addressPrefix")
                        .found(p)
                        .expected("a prefix that overlaps no other subnet"),
                    );
                }
            }
        }
        for p in &s.address_prefixes {
            seen.push((p, &s.name));
        }
        if let Some(n) = &s.network_security_group {
            reference(
                d,
                &s.origin,
                VNET,
                &sname,
                "networkSecurityGroup",
                n,
                net.nsg(n).is_some(),
                !net.network_security_groups.is_empty(),
            );
        }
        if let Some(t) = &s.route_table {
            reference(
                d,
                &s.origin,
                VNET,
                &sname,
                "routeTable",
                t,
                net.route_table(t).is_some(),
                !net.route_tables.is_empty(),
            );
        }
    }
}

/// The virtual networks (lower case, sorted) whose NICs are members of these ASGs.
fn asg_vnets(net: &Network, asgs: &[String]) -> Vec<String> {
    let mut out: Vec<String> = net
        .network_interfaces
        .iter()
        .flat_map(|n| &n.ip_configurations)
        .filter(|c| {
            c.application_security_groups
                .iter()
                .any(|a| asgs.iter().any(|x| x.eq_ignore_ascii_case(a)))
        })
        .filter_map(|c| c.subnet.as_ref().map(|(v, _)| v.to_ascii_lowercase()))
        .collect();
    out.sort();
    out.dedup();
    out
}

/// FW-1: policy, rule collection group and collection names: 1–80 characters, starting with a
/// letter or digit, then word characters, `-`, `.`, `_`, not ending in `-` or `.`.
pub fn valid_firewall_name(n: &str) -> bool {
    let chars: Vec<char> = n.chars().collect();
    !chars.is_empty()
        && chars.len() <= 80
        && chars[0].is_alphanumeric()
        && chars
            .iter()
            .all(|c| c.is_alphanumeric() || matches!(c, '_' | '-' | '.'))
        && !matches!(chars.last(), Some('-' | '.'))
}

fn name_error(origin: &Origin, ty: &str, resource: &str, what: &str) -> Diagnostic {
    let name = resource.rsplit('/').next().unwrap_or(resource);
    at(origin, Diagnostic::error(format!("{what} name breaks FW-1")))
        .resource(ty, resource)
        .field("name")
        .found(name)
        .expected("1-80 letters, digits, `_`, `-`, `.`, starting with a letter or digit, not ending in `-` or `.`")
}

/// FW-6.3: `*` only as the leftmost character, then a name; or `*` alone.
pub fn valid_target_fqdn(s: &str) -> bool {
    let body = s.strip_prefix('*').unwrap_or(s);
    if s == "*" {
        return true;
    }
    let body = body.strip_prefix('.').unwrap_or(body);
    !body.is_empty()
        && !body.contains('*')
        && body
            .trim_end_matches('.')
            .split('.')
            .all(|l| !l.is_empty() && l.len() <= 63 && !l.contains(char::is_whitespace))
}

#[allow(clippy::too_many_arguments)]
fn collections(
    cols: &[RuleCollection],
    ty: &str,
    owner: &str,
    settings: Option<&FirewallSettings>,
    net: &Network,
    catalogs: &Catalogs,
    strict: bool,
    d: &mut Diagnostics,
) {
    let mut prios: HashMap<(RuleCollectionKind, u32), &str> = HashMap::new();
    for c in cols {
        let cname = format!("{owner}/{}", c.name);
        if !(100..=65000).contains(&c.priority) {
            d.push(
                at(
                    &c.origin,
                    Diagnostic::error("rule collection priority outside 100-65000 (FW-1)"),
                )
                .resource(ty, &cname)
                .field("priority")
                .found(c.priority)
                .expected("an integer 100-65000"),
            );
        }
        if let Some(other) = prios.insert((c.kind, c.priority), &c.name) {
            d.push(at(&c.origin, Diagnostic::warning(format!("same priority as collection '{other}' of the same type; the tie is broken by name (FW-1)"))).resource(ty, &cname).field("priority").found(c.priority));
        }
        let mut names: HashMap<String, ()> = HashMap::new();
        for r in &c.rules {
            let rname = format!("{cname}/{}", r.name);
            let e = |msg: String| at(&r.origin, Diagnostic::error(msg)).resource(ty, &rname);
            if r.name.trim().is_empty() {
                d.push(
                    e("rule without a name (FW-1)".into())
                        .field("name")
                        .expected("a non-empty rule name"),
                );
            } else if names.insert(r.name.to_ascii_lowercase(), ()).is_some() {
                d.push(
                    e("two rules with the same name in one collection (FW-1)".into())
                        .field("name")
                        .found(&r.name)
                        .expected("a rule name unique in the collection"),
                );
            }
            for g in r.source_ip_groups.iter().chain(&r.destination_ip_groups) {
                reference(
                    d,
                    &r.origin,
                    ty,
                    &rname,
                    "ipGroups",
                    g,
                    net.ip_group(g).is_some(),
                    !net.ip_groups.is_empty(),
                );
            }
            let sides = [
                ("sourceAddresses", &r.source_addresses),
                ("destinationAddresses", &r.destination_addresses),
            ];
            for (field, item) in sides
                .into_iter()
                .flat_map(|(f, items)| items.iter().map(move |i| (f, i)))
            {
                if let AddressItem::ServiceTag(t) = item {
                    let lower = t.to_ascii_lowercase();
                    if matches!(
                        lower.as_str(),
                        "virtualnetwork" | "azureloadbalancer" | "internet"
                    ) {
                        d.push(
                            e(format!(
                                "the built-in tag `{t}` cannot be used in firewall rules (FW-5)"
                            ))
                            .field(field)
                            .found(t)
                            .expected(
                                "IP addresses, CIDRs, ranges or service tags with the FW feature",
                            ),
                        );
                        continue;
                    }
                    match catalogs.service_tags.check_feature(t, "FW", strict) {
                        Ok(None) => {}
                        Ok(Some(w)) => d.push(
                            at(&r.origin, Diagnostic::warning(w))
                                .resource(ty, &rname)
                                .field(field)
                                .found(t),
                        ),
                        Err(msg) => d.push(
                            e(msg)
                                .field(field)
                                .found(t)
                                .expected("a service tag usable in firewall rules"),
                        ),
                    }
                }
            }
            match c.kind {
                RuleCollectionKind::Application => {
                    if r.target_fqdns.is_empty()
                        && r.fqdn_tags.is_empty()
                        && r.target_urls.is_empty()
                        && r.web_categories.is_empty()
                        && !["targetFqdns", "fqdnTags", "targetUrls", "webCategories"]
                            .iter()
                            .any(|f| net.unknown_field(&r.origin, f))
                    {
                        d.push(e("application rule without targetFqdns, fqdnTags, targetUrls or webCategories (FW-6.1)".into()).field("targetFqdns").expected("at least one target"));
                    }
                    for f in &r.target_fqdns {
                        if !valid_target_fqdn(f) {
                            d.push(e("invalid target FQDN: `*` may only be the leftmost character (FW-6.3)".into()).field("targetFqdns").found(f).expected("`name`, `*.name`, `*name` or `*`"));
                        }
                    }
                    for t in &r.fqdn_tags {
                        if catalogs.fqdn_tags.get(t).is_none() {
                            d.push(
                                e("unknown FQDN tag (FW-7)".into())
                                    .field("fqdnTags")
                                    .found(t)
                                    .expected("an FQDN tag of the loaded catalog"),
                            );
                        }
                    }
                    if !r.web_categories.is_empty() {
                        d.push(at(&r.origin, Diagnostic::warning("web categories never match: Palisade has no category data (FW-6.1)")).resource(ty, &rname).field("webCategories"));
                    }
                }
                RuleCollectionKind::Network => {
                    if !r.destination_fqdns.is_empty() {
                        if r.destination_fqdns.iter().any(|f| f.contains('*')) {
                            d.push(
                                e("network-rule FQDNs allow no wildcards (FW-5)".into())
                                    .field("destinationFqdns")
                                    .expected("plain names"),
                            );
                        }
                        match settings.and_then(|s| s.dns_enable_proxy) {
                            Some(true) => {}
                            Some(false) => d.push(
                                e("FQDNs in network rules need the DNS proxy (FW-5, FW-9)".into())
                                    .field("destinationFqdns")
                                    .expected("dnsSettings.enableProxy: true"),
                            ),
                            // The proxy may be set where the input does not show it (a parent
                            // policy, the portal): say so rather than refuse.
                            None => d.push(
                                at(&r.origin, Diagnostic::warning("FQDNs in network rules need the DNS proxy, which the input does not enable (FW-5, FW-9)"))
                                    .resource(ty, &rname)
                                    .field("destinationFqdns")
                                    .expected("dnsSettings.enableProxy: true (policy) or Network.DNS.EnableProxy: \"True\" (classic)"),
                            ),
                        }
                    }
                }
                RuleCollectionKind::Nat => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fw_6_3_target_grammar() {
        for ok in ["www.example.com", "*.example.com", "*example.com", "*"] {
            assert!(valid_target_fqdn(ok), "{ok}");
        }
        for bad in ["www.example.*", "*.example.*", "a*.example.com", "", "*."] {
            assert!(!valid_target_fqdn(bad), "{bad}");
        }
    }

    #[test]
    fn fw_5_a_built_in_tag_is_reported_on_the_side_that_names_it() {
        let yaml = r#"
apiVersion: palisade/v1
azureFirewalls:
  - name: fw
    networkRuleCollections:
      - name: c
        priority: 100
        action: {type: Allow}
        rules: [{name: r, protocols: [TCP], sourceAddresses: [VirtualNetwork], destinationAddresses: ['*'], destinationPorts: ['443']}]
"#;
        let f = crate::import::import_text("fw.yaml", yaml, &crate::ImportOptions::default(), None);
        let d = validate(&f.network, &Catalogs::embedded(), false);
        let e: Vec<_> = d.errors().collect();
        assert_eq!(e.len(), 1, "{d}");
        assert_eq!(e[0].field.as_deref(), Some("sourceAddresses"), "{d}");
    }

    #[test]
    fn fw_1_policy_and_collection_names() {
        assert!(valid_firewall_name("adx-application-rcg"));
        assert!(valid_firewall_name("Rule_Collection.1"));
        assert!(!valid_firewall_name("-rcg"));
        assert!(!valid_firewall_name("rcg."));
        assert!(!valid_firewall_name("my rcg"));
        assert!(!valid_firewall_name(""));
        assert!(!valid_firewall_name(&"a".repeat(81)));
    }

    #[test]
    fn nsg_2_1_rule_names() {
        assert!(valid_rule_name("Allow-HTTPS_1.a"));
        assert!(valid_rule_name("rule_"));
        assert!(!valid_rule_name("-rule"));
        assert!(!valid_rule_name("ALLOW HTTP fe1ase"));
        assert!(!valid_rule_name("rule."));
        assert!(!valid_rule_name(&"a".repeat(81)));
    }
}
