//! Dependency coverage (DIAG-8): every endpoint × port × protocol of a dependency list traced
//! from a source and classified — Covered, Bypassed, Denied, Partial, NotCoverable,
//! MissingServiceEndpoint — with the deciding control and, where not covered, the smallest rule
//! that would cover it.
//!
//! Names are judged by name: the trace dials an address outside every service tag (a
//! documentation address, RFC 5737), so IP-based rules credit only entries that are addresses.
//! Of the candidates, the first that the source's routes send the default way (by the route
//! covering `0.0.0.0/0`) is used, so a blackhole route for one test range does not skew it.

use crate::fqdn::NamePattern;
use palisade_model::catalog::{DependencyCatalog, DependencyProtocol, Via};
use palisade_model::{Protocol, RuleCollectionKind};
use palisade_policy::firewall::FirewallPass;
use palisade_policy::routes::service_endpoint_tag;
use palisade_policy::{DecidedBy, Flow, Snapshot, Trace, TraceOptions, Verdict};
use serde::Serialize;
use std::net::IpAddr;

/// Addresses no service tag holds, for judging names by name (RFC 5737 documentation ranges).
pub const NAME_PROBE_ADDRESSES: [&str; 3] = ["192.0.2.1", "203.0.113.1", "198.51.100.1"];

/// The probe address for `source`: the first candidate routed by the default (shortest) route.
pub fn probe_address(snap: &Snapshot, source: IpAddr) -> IpAddr {
    let candidates: Vec<IpAddr> = NAME_PROBE_ADDRESSES
        .iter()
        .map(|a| a.parse().expect("literal address"))
        .collect();
    let routes = snap.locate(source).subnet.map(|s| &snap.subnet(s).routes);
    let default_routed =
        |a: &IpAddr| routes.is_none_or(|r| r.lookup(*a).is_some_and(|(p, _)| p.prefix_len() == 0));
    candidates
        .iter()
        .copied()
        .find(default_routed)
        .unwrap_or(candidates[0])
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Status {
    Covered,
    Bypassed,
    Denied,
    Partial,
    NotCoverable,
    MissingServiceEndpoint,
}

#[derive(Debug, Clone, Serialize)]
pub struct Entry {
    pub category: String,
    #[serde(rename = "domainName")]
    pub domain_name: String,
    pub port: u16,
    pub protocol: &'static str,
    pub required: bool,
    pub status: Status,
    pub decided_by: Option<DecidedBy>,
    /// The layer name of the deciding hop (`FirewallApplication`, `Route`, ...).
    pub layer: Option<&'static str>,
    pub suggestion: Option<String>,
    pub detail: Option<String>,
    /// Unknown values (FMT-4) the verdict assumed, as `trace` says them (issue 17).
    pub assumed: Vec<String>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Summary {
    pub entries: usize,
    pub covered: usize,
    pub bypassed: usize,
    pub denied: usize,
    pub partial: usize,
    pub not_coverable: usize,
    pub missing_service_endpoint: usize,
    /// Required entries neither Covered nor Bypassed.
    pub required_not_covered: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub source: IpAddr,
    pub entries: Vec<Entry>,
    pub summary: Summary,
}

impl Report {
    pub fn ok(&self) -> bool {
        self.summary.required_not_covered == 0
    }
}

fn protocols(p: DependencyProtocol) -> (&'static str, Vec<Protocol>) {
    match p {
        DependencyProtocol::Tcp => ("Tcp", vec![Protocol::Tcp]),
        DependencyProtocol::Udp => ("Udp", vec![Protocol::Udp]),
        DependencyProtocol::Any => ("Any", vec![Protocol::Tcp, Protocol::Udp]),
    }
}

/// Ports on which an application rule can judge a name (Http, Https, Mssql by default ports).
fn name_judgeable(port: u16) -> bool {
    matches!(port, 80 | 443 | 1433)
}

/// Run the check for `source` (an address in the workload's subnet).
pub fn check(snap: &Snapshot, catalog: &DependencyCatalog, source: IpAddr) -> Report {
    let mut entries = vec![];
    let subnet = snap.locate(source).subnet;
    let probe = probe_address(snap, source);
    for e in catalog.entries() {
        let (proto_name, protos) = protocols(e.detail.protocol);
        let name = e.endpoint.domain_name.clone();
        let mut entry = Entry {
            category: e.category.category.clone(),
            domain_name: name.clone(),
            port: e.detail.port,
            protocol: proto_name,
            required: e.endpoint.required,
            status: Status::Denied,
            decided_by: None,
            layer: None,
            suggestion: None,
            detail: None,
            assumed: vec![],
        };
        if e.category.via == Via::ServiceEndpoint {
            let service = e.category.service_endpoint.clone().unwrap_or_default();
            let has = subnet.map(|s| snap.subnet(s)).is_some_and(|s| {
                snap.network
                    .subnets()
                    .find(|(v, sn)| v.name == s.vnet && sn.name == s.name)
                    .is_some_and(|(_, sn)| {
                        sn.service_endpoints
                            .iter()
                            .any(|x| x.service.eq_ignore_ascii_case(&service))
                    })
            });
            entry.status = if has {
                Status::Bypassed
            } else {
                Status::MissingServiceEndpoint
            };
            if !has {
                entry.suggestion = Some(format!(
                    "enable the `{service}` service endpoint on the source subnet (RT-7)"
                ));
            }
            entries.push(entry);
            continue;
        }
        // Trace every protocol the entry needs; the weakest result counts.
        let mut worst: Option<(Status, Trace)> = None;
        for p in protos {
            let (status, trace) = judge(snap, source, probe, &name, e.detail.port, p);
            let rank = |s: Status| match s {
                Status::Covered => 0,
                Status::Bypassed => 1,
                Status::Partial => 2,
                _ => 3,
            };
            if worst.as_ref().is_none_or(|(w, _)| rank(status) > rank(*w)) {
                worst = Some((status, trace));
            }
        }
        let (status, trace) = worst.expect("at least one protocol");
        entry.status = status;
        entry.decided_by = trace.decided_by.clone();
        entry.assumed = trace.assumed.clone();
        entry.layer = trace.hops.last().map(|h| h.layer);
        entry.detail = trace
            .hops
            .last()
            .and_then(|h| h.near_miss.as_ref())
            .map(|m| {
                format!(
                    "nearest rule {} differs in {}",
                    m.rule,
                    m.differs.join(", ")
                )
            });
        if !matches!(status, Status::Covered | Status::Bypassed) {
            entry.suggestion = Some(suggest(&name, e.detail.port, proto_name, status));
        }
        entries.push(entry);
    }
    let mut summary = Summary {
        entries: entries.len(),
        ..Default::default()
    };
    for e in &entries {
        match e.status {
            Status::Covered => summary.covered += 1,
            Status::Bypassed => summary.bypassed += 1,
            Status::Denied => summary.denied += 1,
            Status::Partial => summary.partial += 1,
            Status::NotCoverable => summary.not_coverable += 1,
            Status::MissingServiceEndpoint => summary.missing_service_endpoint += 1,
        }
        if e.required && !matches!(e.status, Status::Covered | Status::Bypassed) {
            summary.required_not_covered += 1;
        }
    }
    Report {
        source,
        entries,
        summary,
    }
}

/// Trace one entry and classify it.
fn judge(
    snap: &Snapshot,
    source: IpAddr,
    probe: IpAddr,
    name: &str,
    port: u16,
    protocol: Protocol,
) -> (Status, Trace) {
    let (destination, host, pattern) = if let Ok(ip) = name.parse::<IpAddr>() {
        (ip, None, None)
    } else if name == "*" {
        (probe, None, None)
    } else {
        let p = NamePattern::parse(name);
        (probe, Some(p.witness()), Some(p))
    };
    let flow = Flow {
        source,
        source_port: 50000,
        destination,
        destination_port: port,
        protocol,
        host,
        app_protocol: None,
    };
    let trace = snap.trace(&flow, &TraceOptions::default());
    let via_firewall = trace.hops.iter().any(|h| h.layer.starts_with("Firewall"));
    let status = match trace.verdict {
        Verdict::Allow if !via_firewall => Status::Bypassed,
        Verdict::Allow => match (&pattern, app_rule_targets(snap, &trace)) {
            // Allowed by an application rule for the witness name: covered only if the rule's
            // targets include the whole pattern.
            (Some(p), Some(targets)) if !p.is_exact() => {
                if targets
                    .iter()
                    .any(|t| p.included_in(&NamePattern::parse(t)))
                {
                    Status::Covered
                } else {
                    Status::Partial
                }
            }
            _ => Status::Covered,
        },
        _ => match &pattern {
            Some(p) if !p.is_exact() && partly_allowed(snap, p, port) => Status::Partial,
            Some(p) if !p.is_exact() && !name_judgeable(port) => Status::NotCoverable,
            _ => Status::Denied,
        },
    };
    (status, trace)
}

/// The target names of the application rule that decided a trace, if one did.
fn app_rule_targets(snap: &Snapshot, trace: &Trace) -> Option<Vec<String>> {
    let hop = trace
        .hops
        .iter()
        .find(|h| h.layer == "FirewallApplication")?;
    let path = hop.rule.as_deref()?;
    let mut out = vec![];
    for_each_app_rule(snap, |p, rule_path, targets| {
        if rule_path == path && FirewallPass::FirewallApplication == p {
            out.extend(targets.iter().cloned());
        }
    });
    Some(out)
}

/// Does some allowing application rule on this port accept part of the pattern's names?
fn partly_allowed(snap: &Snapshot, p: &NamePattern, port: u16) -> bool {
    let mut found = false;
    for_each_allow_app_rule_on_port(snap, port, |targets| {
        if targets.iter().any(|t| p.overlaps(&NamePattern::parse(t))) {
            found = true;
        }
    });
    found
}

/// Visit application rules of the network's firewalls (classic and policy) with their targets,
/// FQDN tags expanded through the catalog.
fn for_each_app_rule(snap: &Snapshot, mut f: impl FnMut(FirewallPass, String, &[String])) {
    visit_app_rules(snap, |group, collection, rule, _, targets| {
        let path = match group {
            Some(g) => format!("{g}/{collection}/{rule}"),
            None => format!("{collection}/{rule}"),
        };
        f(FirewallPass::FirewallApplication, path, targets);
    });
}

fn for_each_allow_app_rule_on_port(snap: &Snapshot, port: u16, mut f: impl FnMut(&[String])) {
    visit_app_rules(snap, |_, _, _, (allow, ports), targets| {
        if allow && ports.contains(&port) {
            f(targets);
        }
    });
}

#[allow(clippy::type_complexity)]
fn visit_app_rules(
    snap: &Snapshot,
    mut f: impl FnMut(Option<&str>, &str, &str, (bool, Vec<u16>), &[String]),
) {
    let net = &snap.network;
    let mut visit_collection = |group: Option<&str>, c: &palisade_model::RuleCollection| {
        if c.kind != RuleCollectionKind::Application {
            return;
        }
        for r in &c.rules {
            let mut targets = r.target_fqdns.clone();
            for t in &r.fqdn_tags {
                if let Some(tag) = snap.catalogs.fqdn_tags.get(t) {
                    targets.extend(tag.target_fqdns.iter().cloned());
                }
            }
            let ports = r.protocols.iter().map(|p| p.port).collect();
            f(
                group,
                &c.name,
                &r.name,
                (c.action == palisade_model::FirewallAction::Allow, ports),
                &targets,
            );
        }
    };
    for fw in &net.azure_firewalls {
        for c in &fw.rule_collections {
            visit_collection(None, c);
        }
    }
    for p in &net.firewall_policies {
        for g in &p.rule_collection_groups {
            for c in &g.rule_collections {
                visit_collection(Some(&g.name), c);
            }
        }
    }
}

/// The smallest rule that would cover an entry.
fn suggest(name: &str, port: u16, protocol: &str, status: Status) -> String {
    if name.parse::<IpAddr>().is_ok() || name == "*" {
        let dest = if name == "*" {
            "*".to_string()
        } else {
            name.to_string()
        };
        return format!("network rule: {protocol} from the workload to {dest} port {port}");
    }
    if status == Status::NotCoverable {
        let tag = service_tag_for(name);
        return match tag {
            Some(t) => format!("network rule: {protocol} to service tag `{t}` port {port} (a wildcard on a non-HTTP port fits no application rule, DIAG-8)"),
            None => format!("network rule: {protocol} to the service's addresses port {port} (a wildcard on a non-HTTP port fits no application rule, DIAG-8)"),
        };
    }
    if name_judgeable(port) {
        let proto = match port {
            80 => "Http:80".to_string(),
            1433 => "Mssql:1433".to_string(),
            p => format!("Https:{p}"),
        };
        return format!("application rule: protocols [{proto}], targetFqdns [{name}]");
    }
    if name.contains('*') {
        return format!("network rule to the service's addresses, {protocol} port {port}");
    }
    format!("network rule: {protocol} to destinationFqdns [{name}] port {port} (needs the DNS proxy, FW-5)")
}

/// A service tag that holds a platform's wildcard names, for suggestions.
fn service_tag_for(name: &str) -> Option<&'static str> {
    let n = name.to_ascii_lowercase();
    let table: &[(&str, &str)] = &[
        ("servicebus.windows.net", "ServiceBus"),
        ("blob.core.windows.net", "Storage"),
        ("core.windows.net", "Storage"),
        ("database.windows.net", "Sql"),
        ("vault.azure.net", "AzureKeyVault"),
        ("azurecr.io", "AzureContainerRegistry"),
    ];
    table.iter().find(|(s, _)| n.ends_with(s)).map(|(_, t)| *t)
}

/// Which service endpoint a service tag corresponds to (for suggestions).
pub fn endpoint_tag(service: &str) -> Option<&'static str> {
    service_endpoint_tag(service)
}
