//! The firewall-decision benchmark: [`CompiledFirewall::evaluate`] over a firewall built from the
//! domain lists.
//!
//! The firewall is a classic one with, in evaluation order: a network collection (SSH and DNS to
//! fixed ranges, plus 62 generated TCP rules); an application allow collection (wildcards such
//! as `*.blob.core.windows.net` and exact names, HTTPS and HTTP); and the domain lists as
//! application **deny** rules of 1,000 target FQDNs each, half of them for one source range only
//! (so some matching names fall through to later rules or to the default). The trace mixes:
//! listed names (random case, some with a trailing dot), subdomains of listed `*.` bases,
//! allowed names, unlisted names, network-rule flows, UDP flows no rule matches, and HTTPS
//! without SNI. The baseline is [`FqdnMatcher::best`] alone over the same names already in
//! normal form: the name lookup at the core of every application decision, i.e. the floor the
//! whole pipeline is measured against.

use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::time::Instant;

use crate::BenchError;

use ipnet::IpNet;
use palisade_model::catalog::Catalogs;
use palisade_model::{
    AddressItem, ApplicationProtocol, ApplicationProtocolType, AzureFirewall, FirewallAction,
    FirewallRule, Network, NetworkProtocol, PortRange, RuleCollection, RuleCollectionKind,
};
use palisade_policy::firewall::{CompiledFirewall, FirewallInput, FirewallPass};
use palisade_policy::matchers::{normalize_name, FqdnMatcher, FqdnPattern, PacketKey};

use crate::{load, ms_since, random_label, ratio, time_lookups, Kind, Report, Rng, SEED};

/// Target FQDNs per generated application rule.
const PER_RULE: usize = 1000;

/// Names the allow collection lets through (HTTPS and HTTP), wildcards and exact names.
const ALLOWED: [&str; 6] = [
    "*.blob.core.windows.net",
    "*.azure-automation.net",
    "login.microsoftonline.com",
    "management.azure.com",
    "*.ubuntu.com",
    "packages.microsoft.com",
];

fn prefix(s: &str) -> AddressItem {
    AddressItem::Prefix(s.parse::<IpNet>().expect("fixture prefix"))
}

fn web() -> Vec<ApplicationProtocol> {
    vec![
        ApplicationProtocol {
            protocol_type: ApplicationProtocolType::Https,
            port: 443,
        },
        ApplicationProtocol {
            protocol_type: ApplicationProtocolType::Http,
            port: 80,
        },
    ]
}

/// The benchmark firewall over `patterns` (the domain lists, one deny rule per 1,000 names).
pub fn fixture(patterns: &[FqdnPattern], rng: &mut Rng) -> Network {
    let mut net_rules = vec![
        FirewallRule {
            source_addresses: vec![prefix("10.0.0.0/8")],
            destination_addresses: vec![prefix("192.0.2.0/24")],
            destination_ports: vec![PortRange::single(22)],
            ip_protocols: vec![NetworkProtocol::Tcp],
            ..FirewallRule::named("ssh")
        },
        FirewallRule {
            source_addresses: vec![AddressItem::Any],
            destination_addresses: vec![prefix("168.63.129.16/32"), prefix("1.1.1.1/32")],
            destination_ports: vec![PortRange::single(53)],
            ip_protocols: vec![NetworkProtocol::Udp, NetworkProtocol::Tcp],
            ..FirewallRule::named("dns")
        },
    ];
    for i in 0..62 {
        let dst = Ipv4Addr::from(0xc612_0000 | ((rng.below(1 << 9) as u32) << 8));
        let port = 1024 + rng.below(60000) as u16;
        net_rules.push(FirewallRule {
            source_addresses: vec![prefix(&format!("10.{}.0.0/16", i % 8))],
            destination_addresses: vec![prefix(&format!("{dst}/24"))],
            destination_ports: vec![PortRange::single(port)],
            ip_protocols: vec![NetworkProtocol::Tcp],
            ..FirewallRule::named(format!("app-{i}"))
        });
    }
    let allow = vec![FirewallRule {
        source_addresses: vec![prefix("10.0.0.0/8")],
        protocols: web(),
        target_fqdns: ALLOWED.iter().map(|s| s.to_string()).collect(),
        ..FirewallRule::named("platform")
    }];
    let deny: Vec<FirewallRule> = patterns
        .chunks(PER_RULE)
        .enumerate()
        .map(|(i, chunk)| FirewallRule {
            source_addresses: vec![if i % 2 == 0 {
                AddressItem::Any
            } else {
                prefix("10.1.0.0/16")
            }],
            protocols: web(),
            target_fqdns: chunk.iter().map(|p| p.to_string()).collect(),
            ..FirewallRule::named(format!("block-{i}"))
        })
        .collect();
    Network {
        azure_firewalls: vec![AzureFirewall {
            name: "fw".into(),
            rule_collections: vec![
                RuleCollection::new(
                    "network",
                    100,
                    RuleCollectionKind::Network,
                    FirewallAction::Allow,
                    net_rules,
                ),
                RuleCollection::new(
                    "allow-web",
                    200,
                    RuleCollectionKind::Application,
                    FirewallAction::Allow,
                    allow,
                ),
                RuleCollection::new(
                    "blocklists",
                    300,
                    RuleCollectionKind::Application,
                    FirewallAction::Deny,
                    deny,
                ),
            ],
            ..Default::default()
        }],
        ..Default::default()
    }
}

/// One flow of the trace: the key and the SNI/Host as the client sent it.
pub struct Flow {
    pub key: PacketKey,
    pub host: Option<String>,
}

fn tcp(src: IpAddr, dst: IpAddr, port: u16) -> PacketKey {
    PacketKey {
        src,
        dst,
        protocol: 6,
        src_port: 50000,
        dst_port: port,
    }
}

/// Random case and, one time in four, a trailing dot: names as clients send them.
fn as_sent(name: &str, rng: &mut Rng) -> String {
    let mut s: String = name
        .chars()
        .map(|c| {
            if rng.below(4) == 0 {
                c.to_ascii_uppercase()
            } else {
                c
            }
        })
        .collect();
    if rng.below(4) == 0 {
        s.push('.');
    }
    s
}

/// The flow trace over `patterns` (see the module documentation), shuffled.
pub fn trace(patterns: &[FqdnPattern], len: usize, rng: &mut Rng) -> Vec<Flow> {
    let exact: Vec<&str> = patterns
        .iter()
        .filter_map(|p| match p {
            FqdnPattern::Exact(s) => Some(s.as_str()),
            _ => None,
        })
        .collect();
    let wild: Vec<&str> = patterns
        .iter()
        .filter_map(|p| match p {
            FqdnPattern::SubdomainWildcard(s) => Some(s.as_str()),
            _ => None,
        })
        .collect();
    let pick = |v: &[&str], rng: &mut Rng| -> Option<String> {
        (!v.is_empty()).then(|| v[rng.below(v.len() as u64) as usize].to_string())
    };
    let mut out = Vec::with_capacity(len);
    for i in 0..len {
        let src = IpAddr::V4(Ipv4Addr::new(10, (rng.below(4)) as u8, 0, 7));
        let web_dst = IpAddr::V4(Ipv4Addr::new(203, 0, 113, rng.below(250) as u8 + 1));
        let port = if rng.below(4) == 0 { 80 } else { 443 };
        let named = |host: String, rng: &mut Rng| Flow {
            key: tcp(src, web_dst, port),
            host: Some(as_sent(&host, rng)),
        };
        let flow = match i % 10 {
            0..=2 => match pick(&exact, rng) {
                Some(h) => named(h, rng),
                None => named(format!("{}.com", random_label(rng, 8)), rng),
            },
            3 => match pick(&wild, rng) {
                Some(b) => named(format!("{}.{b}", random_label(rng, 6)), rng),
                None => named(format!("{}.net", random_label(rng, 8)), rng),
            },
            4 => {
                let a = ALLOWED[rng.below(ALLOWED.len() as u64) as usize];
                let h = match a.strip_prefix("*.") {
                    Some(base) => format!("{}.{base}", random_label(rng, 10)),
                    None => a.to_string(),
                };
                named(h, rng)
            }
            5 | 6 => {
                let h = format!("{}.{}.example", random_label(rng, 5), random_label(rng, 7));
                named(h, rng)
            }
            7 => Flow {
                key: tcp(src, IpAddr::V4(Ipv4Addr::new(192, 0, 2, 9)), 22),
                host: None,
            },
            8 => Flow {
                key: PacketKey {
                    protocol: 17,
                    ..tcp(src, IpAddr::V4(Ipv4Addr::new(198, 51, 100, 1)), 123)
                },
                host: None,
            },
            _ => Flow {
                key: tcp(src, web_dst, 443),
                host: None,
            },
        };
        out.push(flow);
    }
    rng.shuffle(&mut out);
    out
}

pub(crate) fn run_firewall(name: String, data: &Path, seconds: f64) -> Result<Report, BenchError> {
    let (patterns, files) = load::domains(data)?;
    if patterns.is_empty() {
        return Err(BenchError::Empty {
            path: data.to_path_buf(),
            what: "domain names",
        });
    }
    let mut rng = Rng::new(SEED);
    let network = fixture(&patterns, &mut rng);
    let catalogs = Catalogs::default();
    let t = Instant::now();
    let fw = CompiledFirewall::compile(
        &network.azure_firewalls[0],
        &network,
        &catalogs,
        &Default::default(),
    );
    let build_ms = ms_since(t);
    if let Some(p) = fw.problems.first() {
        return Err(BenchError::Fixture(format!(
            "{name}: the benchmark firewall does not compile: {p}"
        )));
    }
    let flows = trace(&patterns, 1 << 16, &mut rng);

    let t = Instant::now();
    let with_ids: Vec<(FqdnPattern, u32)> = patterns
        .iter()
        .enumerate()
        .map(|(i, p)| (p.clone(), (i / PER_RULE) as u32))
        .collect();
    let floor = FqdnMatcher::build(with_ids);
    let baseline_build_ms = ms_since(t);
    let normalised: Vec<Option<String>> = flows
        .iter()
        .map(|f| f.host.as_deref().and_then(normalize_name))
        .collect();

    let mut passes = [0usize; 4];
    let mut allowed = 0usize;
    for f in &flows {
        let o = fw.evaluate(&FirewallInput {
            key: f.key,
            host: f.host.as_deref(),
            app_protocol: None,
        });
        passes[o.pass as usize] += 1;
        allowed += usize::from(o.allowed);
    }
    let ours = time_lookups(flows.len(), seconds / 2.0, |i| {
        let f = &flows[i];
        let o = fw.evaluate(&FirewallInput {
            key: f.key,
            host: f.host.as_deref(),
            app_protocol: None,
        });
        u64::from(o.allowed) + o.pass as u64
    });
    let baseline = time_lookups(flows.len(), seconds / 2.0, |i| {
        normalised[i]
            .as_deref()
            .and_then(|n| floor.best(n))
            .map_or(u64::MAX, u64::from)
    });
    let (_, network_rules, app_rules) = fw.rule_counts();
    let per_second = |ns: f64| if ns > 0.0 { 1e9 / ns } else { 0.0 };
    Ok(Report {
        kind: Kind::Firewall,
        data: name,
        entries: patterns.len(),
        families: Vec::new(),
        build_ms,
        bytes: 0,
        bytes_per_entry: 0.0,
        ns_per_lookup: ours.ns_per_lookup,
        baseline: "FqdnMatcher::best alone on the same names, already normalised (the name lookup inside each decision)".into(),
        baseline_build_ms,
        baseline_ns_per_lookup: baseline.ns_per_lookup,
        speedup: ratio(baseline.ns_per_lookup, ours.ns_per_lookup),
        batch_ns_per_lookup: None,
        batch_speedup: None,
        lookups: ours.lookups,
        baseline_lookups: baseline.lookups,
        trace_len: flows.len(),
        trace: format!(
            "2^16 flows: 30% listed names, 10% subdomains of listed `*.` bases, 10% allowed names, 20% unlisted names (names in random case, a quarter with a trailing dot; 3/4 HTTPS, 1/4 HTTP), 10% SSH to a network rule, 10% UDP no rule matches, 10% HTTPS without SNI; shuffled, seed {SEED:#x}"
        ),
        mismatches: 0,
        notes: vec![
            format!(
                "{:.0} decisions/s (single thread); the baseline's figure is {:.0} lookups/s",
                per_second(ours.ns_per_lookup),
                per_second(baseline.ns_per_lookup)
            ),
            format!(
                "firewall: {network_rules} network rules, {app_rules} application rules ({} target FQDNs); files: {}",
                patterns.len() + ALLOWED.len(),
                files.join(", ")
            ),
            format!(
                "outcomes over the trace: {} network, {} application, {} default; {allowed} allowed",
                passes[FirewallPass::FirewallNetwork as usize],
                passes[FirewallPass::FirewallApplication as usize],
                passes[FirewallPass::FirewallDefault as usize],
            ),
        ],
    })
}
