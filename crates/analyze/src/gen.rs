//! A generated hub-and-spoke network for tests and the reachability benchmark (issue 6 targets).
//!
//! Hub VNet with `AzureFirewallSubnet` (firewall at `.4`, public frontend `52.0.0.10` with one
//! DNAT rule); `spokes` spoke VNets, each peered with the hub, with one subnet, its own NSG of
//! `nsg_rules` rules, and a shared route table sending `0.0.0.0/0` and `10.0.0.0/8` to the
//! firewall. Every `nic_every`-th spoke also has a NIC with its own NSG. The classic firewall has
//! `firewall_rules` network rules in collections of 50 (every 7th collection denies) and
//! `app_rules` application rules. Rules draw addresses from spokes (whole, a quarter, one host),
//! public blocks, `*`, `VirtualNetwork`, `Internet`, and ports from a small menu, from a
//! deterministic generator: the same parameters give the same network.

use ipnet::{IpNet, Ipv4Net};
use palisade_model::{
    Access, AddressItem, ApplicationProtocol, ApplicationProtocolType, AzureFirewall, Direction,
    FirewallAction, FirewallRule, IpConfiguration, Network, NetworkInterface, NetworkProtocol,
    NetworkSecurityGroup, NextHopType, PalisadeSettings, PortRange, Protocol, PublicIpAddress,
    Route, RoutePrefix, RouteTable, RuleCollection, RuleCollectionKind, RuleMode, RuleSide,
    SecurityRule, Subnet, VirtualNetwork, VirtualNetworkPeering,
};
use serde_json::{json, Value};
use std::net::{IpAddr, Ipv4Addr};

#[derive(Debug, Clone)]
pub struct HubSpoke {
    pub spokes: usize,
    pub nsg_rules: usize,
    pub firewall_rules: usize,
    pub app_rules: usize,
    /// Prefix length of the hub and of every spoke (24 for the benchmark, 29 for enumeration).
    pub prefix_len: u8,
    /// A NIC with its own NSG in every n-th spoke (0: none).
    pub nic_every: usize,
    pub seed: u64,
}

impl HubSpoke {
    /// The scale target: 500 spokes, NSGs of 50 rules, 5,000 firewall rules.
    pub fn target() -> HubSpoke {
        HubSpoke {
            spokes: 500,
            nsg_rules: 50,
            firewall_rules: 5000,
            app_rules: 20,
            prefix_len: 24,
            nic_every: 10,
            seed: 1,
        }
    }
    /// Small enough to enumerate every address.
    pub fn small(seed: u64) -> HubSpoke {
        HubSpoke {
            spokes: 3,
            nsg_rules: 8,
            firewall_rules: 24,
            app_rules: 2,
            prefix_len: 29,
            nic_every: 2,
            seed,
        }
    }
}

/// xorshift64*: deterministic and dependency-free.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n.max(1) as u64) as usize
    }
}

fn v4(a: u32, len: u8) -> IpNet {
    IpNet::V4(Ipv4Net::new(Ipv4Addr::from(a), len).expect("valid prefix"))
}

pub const FIREWALL_IP: &str = "10.0.0.4";
pub const FRONTEND_IP: &str = "52.0.0.10";

impl HubSpoke {
    fn size(&self) -> u32 {
        1u32 << (32 - self.prefix_len as u32)
    }
    pub fn hub(&self) -> IpNet {
        v4(u32::from(Ipv4Addr::new(10, 0, 0, 0)), self.prefix_len)
    }
    pub fn spoke(&self, i: usize) -> IpNet {
        v4(
            u32::from(Ipv4Addr::new(10, 1, 0, 0)) + i as u32 * self.size(),
            self.prefix_len,
        )
    }
    fn spoke_base(&self, i: usize) -> u32 {
        u32::from(Ipv4Addr::new(10, 1, 0, 0)) + i as u32 * self.size()
    }
    /// The address of spoke `i`'s NIC (`.4`), when it has one.
    pub fn nic_address(&self, i: usize) -> IpAddr {
        IpAddr::V4(Ipv4Addr::from(self.spoke_base(i) + 4))
    }
    fn public(&self, k: usize) -> IpNet {
        let blocks = [
            v4(u32::from(Ipv4Addr::new(203, 0, 113, 0)), 29),
            v4(u32::from(Ipv4Addr::new(198, 51, 100, 0)), 30),
            v4(u32::from(Ipv4Addr::new(13, 64, 0, 0)), 16),
            v4(u32::from(Ipv4Addr::new(52, 1, 0, 0)), 16),
        ];
        blocks[k % blocks.len()]
    }

    fn address(&self, rng: &mut Rng, own: usize, local: bool) -> AddressItem {
        let pick = |rng: &mut Rng| rng.below(self.spokes);
        let r = if local { rng.below(4) } else { rng.below(10) };
        match r {
            0 => AddressItem::Any,
            1 => AddressItem::Prefix(self.spoke(own)),
            2 => AddressItem::ServiceTag("VirtualNetwork".into()),
            3 => {
                let q = self.size() / 4;
                AddressItem::Prefix(v4(
                    self.spoke_base(own) + q * rng.below(4) as u32,
                    self.prefix_len + 2,
                ))
            }
            4 => AddressItem::ServiceTag("Internet".into()),
            5 | 6 => AddressItem::Prefix(self.spoke(pick(rng))),
            7 => AddressItem::Prefix(v4(self.spoke_base(pick(rng)) + 5, 32)),
            8 => AddressItem::Prefix("10.0.0.0/8".parse().expect("literal")),
            _ => AddressItem::Prefix(self.public(rng.below(4))),
        }
    }

    fn ports(rng: &mut Rng) -> Vec<PortRange> {
        let menu: [&[(u16, u16)]; 9] = [
            &[(0, 65535)],
            &[(22, 22)],
            &[(80, 80)],
            &[(443, 443)],
            &[(1433, 1433)],
            &[(3389, 3389)],
            &[(8080, 8080)],
            &[(1000, 2000)],
            &[(80, 80), (443, 443)],
        ];
        menu[rng.below(menu.len())]
            .iter()
            .map(|(a, b)| PortRange {
                first: *a,
                last: *b,
            })
            .collect()
    }

    fn nsg(&self, rng: &mut Rng, name: String, own: usize) -> NetworkSecurityGroup {
        let mut rules = vec![];
        for k in 0..self.nsg_rules {
            let direction = if k % 2 == 0 {
                Direction::Inbound
            } else {
                Direction::Outbound
            };
            let (src, dst) = match direction {
                Direction::Inbound => (self.address(rng, own, false), self.address(rng, own, true)),
                Direction::Outbound => {
                    (self.address(rng, own, true), self.address(rng, own, false))
                }
            };
            let protocol = [
                Protocol::Tcp,
                Protocol::Tcp,
                Protocol::Udp,
                Protocol::Any,
                Protocol::Icmp,
            ][rng.below(5)];
            let sports = if rng.below(8) == 0 {
                vec![PortRange {
                    first: 1024,
                    last: 65535,
                }]
            } else {
                vec![PortRange::ANY]
            };
            let side = |a: AddressItem, ports: Vec<PortRange>| RuleSide {
                address_prefixes: vec![a],
                application_security_groups: vec![],
                port_ranges: ports,
            };
            rules.push(SecurityRule {
                name: format!("rule-{k}"),
                description: None,
                protocol,
                source: side(src, sports),
                destination: side(dst, Self::ports(rng)),
                access: if rng.below(10) < 6 {
                    Access::Allow
                } else {
                    Access::Deny
                },
                priority: 100 + 10 * k as u32,
                direction,
                is_default: false,
                palisade: PalisadeSettings {
                    mode: if rng.below(20) == 0 {
                        RuleMode::Audit
                    } else {
                        RuleMode::Enforce
                    },
                    ..Default::default()
                },
                origin: Default::default(),
            });
        }
        NetworkSecurityGroup {
            name,
            security_rules: rules,
            ..Default::default()
        }
    }

    pub fn build(&self) -> Network {
        let mut rng = Rng::new(self.seed);
        let mut net = Network::default();
        let fw_ip: IpAddr = FIREWALL_IP.parse().expect("literal");
        let mut hub = VirtualNetwork {
            name: "hub".into(),
            address_space: vec![self.hub()],
            subnets: vec![Subnet {
                name: "AzureFirewallSubnet".into(),
                address_prefixes: vec![self.hub()],
                ..Default::default()
            }],
            ..Default::default()
        };
        net.route_tables.push(RouteTable {
            name: "rt-spokes".into(),
            routes: vec![
                route(
                    "default-to-firewall",
                    "0.0.0.0/0",
                    NextHopType::VirtualAppliance,
                    Some(fw_ip),
                ),
                route(
                    "private-to-firewall",
                    "10.0.0.0/8",
                    NextHopType::VirtualAppliance,
                    Some(fw_ip),
                ),
                route(
                    "adx-management",
                    "13.64.38.225/32",
                    NextHopType::Internet,
                    None,
                ),
                route("blackhole", "192.0.2.0/24", NextHopType::None, None),
            ],
            ..Default::default()
        });
        for i in 0..self.spokes {
            let name = format!("spoke{i}");
            hub.virtual_network_peerings.push(VirtualNetworkPeering {
                name: format!("hub-to-{name}"),
                remote_virtual_network: Some(name.clone()),
                remote_address_space: vec![self.spoke(i)],
                origin: Default::default(),
            });
            let nsg = format!("nsg-{i}");
            net.network_security_groups
                .push(self.nsg(&mut rng, nsg.clone(), i));
            net.virtual_networks.push(VirtualNetwork {
                name: name.clone(),
                address_space: vec![self.spoke(i)],
                subnets: vec![Subnet {
                    name: "workload".into(),
                    address_prefixes: vec![self.spoke(i)],
                    network_security_group: Some(nsg),
                    route_table: Some("rt-spokes".into()),
                    ..Default::default()
                }],
                virtual_network_peerings: vec![VirtualNetworkPeering {
                    name: format!("{name}-to-hub"),
                    remote_virtual_network: Some("hub".into()),
                    remote_address_space: vec![self.hub()],
                    origin: Default::default(),
                }],
                ..Default::default()
            });
            if self.nic_every > 0 && i % self.nic_every == 0 {
                let nic_nsg = format!("nic-nsg-{i}");
                net.network_security_groups
                    .push(self.nsg(&mut rng, nic_nsg.clone(), i));
                net.network_interfaces.push(NetworkInterface {
                    name: format!("nic-{i}"),
                    network_security_group: Some(nic_nsg),
                    ip_configurations: vec![IpConfiguration {
                        name: "ipconfig1".into(),
                        private_ip_address: Some(self.nic_address(i)),
                        subnet: Some((name.clone(), "workload".into())),
                        ..Default::default()
                    }],
                    ..Default::default()
                });
            }
        }
        net.virtual_networks.insert(0, hub);
        net.public_ip_addresses.push(PublicIpAddress {
            name: "fw-pip".into(),
            ip_address: Some(FRONTEND_IP.parse().expect("literal")),
            origin: Default::default(),
        });
        let mut collections = vec![];
        let mut dnat = FirewallRule::named("ssh-to-spoke0");
        dnat.ip_protocols = vec![NetworkProtocol::Tcp];
        dnat.source_addresses = vec![AddressItem::Any];
        dnat.destination_addresses = vec![AddressItem::Prefix(
            FRONTEND_IP.parse::<IpAddr>().expect("literal").into(),
        )];
        dnat.destination_ports = vec![PortRange::single(2222)];
        dnat.translated_address = Some(AddressItem::Prefix(v4(self.spoke_base(0) + 5, 32)));
        dnat.translated_port = Some(22);
        collections.push(RuleCollection::new(
            "dnat",
            100,
            RuleCollectionKind::Nat,
            FirewallAction::Dnat,
            vec![dnat],
        ));
        let per = 50;
        let mut k = 0;
        let mut c = 0;
        while k < self.firewall_rules {
            let mut rules = vec![];
            for _ in 0..per.min(self.firewall_rules - k) {
                let mut r = FirewallRule::named(format!("net-{k}"));
                r.ip_protocols = match rng.below(6) {
                    0 => vec![NetworkProtocol::Udp],
                    1 => vec![NetworkProtocol::Tcp, NetworkProtocol::Udp],
                    2 => vec![NetworkProtocol::Any],
                    3 => vec![NetworkProtocol::Icmp],
                    _ => vec![NetworkProtocol::Tcp],
                };
                let src = rng.below(self.spokes);
                r.source_addresses = vec![match rng.below(8) {
                    0 => AddressItem::Any,
                    1 => AddressItem::Prefix(v4(self.spoke_base(src) + 5, 32)),
                    _ => AddressItem::Prefix(self.spoke(src)),
                }];
                let dst = rng.below(self.spokes);
                r.destination_addresses = vec![match rng.below(10) {
                    0 => AddressItem::Any,
                    1 | 2 => AddressItem::Prefix(self.public(rng.below(4))),
                    3 => AddressItem::Prefix(v4(self.spoke_base(dst) + 5, 32)),
                    _ => AddressItem::Prefix(self.spoke(dst)),
                }];
                r.destination_ports = Self::ports(&mut rng);
                rules.push(r);
                k += 1;
            }
            let action = if c % 7 == 3 {
                FirewallAction::Deny
            } else {
                FirewallAction::Allow
            };
            collections.push(RuleCollection::new(
                format!("net-{c}"),
                200 + c as u32,
                RuleCollectionKind::Network,
                action,
                rules,
            ));
            c += 1;
        }
        let mut app = vec![];
        for a in 0..self.app_rules {
            let mut r = FirewallRule::named(format!("app-{a}"));
            r.source_addresses = vec![AddressItem::Prefix(self.spoke(rng.below(self.spokes)))];
            r.protocols = vec![
                ApplicationProtocol {
                    protocol_type: ApplicationProtocolType::Https,
                    port: 443,
                },
                ApplicationProtocol {
                    protocol_type: ApplicationProtocolType::Http,
                    port: 80,
                },
            ];
            r.target_fqdns = vec![format!("*.app{a}.example.com")];
            app.push(r);
        }
        collections.push(RuleCollection::new(
            "apps",
            60000,
            RuleCollectionKind::Application,
            FirewallAction::Allow,
            app,
        ));
        net.azure_firewalls.push(AzureFirewall {
            name: "hub-fw".into(),
            private_ip_addresses: vec![fw_ip],
            subnets: vec![("hub".into(), "AzureFirewallSubnet".into())],
            public_ip_addresses: vec!["fw-pip".into()],
            rule_collections: collections,
            ..Default::default()
        });
        net
    }
}

fn route(name: &str, prefix: &str, hop: NextHopType, ip: Option<IpAddr>) -> Route {
    Route {
        name: name.into(),
        address_prefix: palisade_model::RoutePrefix::Cidr(prefix.parse().expect("literal")),
        next_hop_type: hop,
        next_hop_ip_address: ip,
        next_hop_unresolved: None,
        origin: Default::default(),
    }
}

/// `network` in the native format (`docs/native-yaml.md`), as JSON — which is YAML too — so that
/// a generated network can be written to a file that the importer reads back (the lab's
/// gateway loads its network from a file). Writes every resource kind the generator makes;
/// firewall policies, IP groups and unresolved values it does not, and says so.
pub fn native(network: &Network) -> Result<Value, String> {
    if !network.firewall_policies.is_empty() || !network.ip_groups.is_empty() {
        return Err("firewall policies and IP groups are not written in the native format".into());
    }
    if let Some(u) = network.unknowns.first() {
        return Err(format!(
            "{} `{}`: field `{}` is unknown ({}); a generated network has none",
            u.resource_type, u.resource, u.field, u.expression
        ));
    }
    let strings = |items: &mut dyn Iterator<Item = String>| -> Value { items.collect() };
    let vnets: Vec<Value> = network
        .virtual_networks
        .iter()
        .map(|v| {
            json!({
                "name": v.name,
                "addressSpace": strings(&mut v.address_space.iter().map(IpNet::to_string)),
                "subnets": v.subnets.iter().map(|s| {
                    let mut o = json!({
                        "name": s.name,
                        "addressPrefixes": strings(&mut s.address_prefixes.iter().map(IpNet::to_string)),
                        "serviceEndpoints": s.service_endpoints.iter()
                            .map(|e| json!({"service": e.service, "locations": e.locations}))
                            .collect::<Vec<_>>(),
                    });
                    if let Some(n) = &s.network_security_group {
                        o["networkSecurityGroup"] = json!(n);
                    }
                    if let Some(r) = &s.route_table {
                        o["routeTable"] = json!(r);
                    }
                    o
                }).collect::<Vec<_>>(),
                "virtualNetworkPeerings": v.virtual_network_peerings.iter().map(|p| json!({
                    "name": p.name,
                    "remoteVirtualNetwork": {"id": p.remote_virtual_network},
                    "remoteAddressSpace": {
                        "addressPrefixes": strings(&mut p.remote_address_space.iter().map(IpNet::to_string)),
                    },
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
    let side = |s: &RuleSide| {
        (
            strings(&mut s.address_prefixes.iter().map(AddressItem::to_string)),
            strings(&mut s.port_ranges.iter().map(PortRange::to_string)),
        )
    };
    let nsgs: Vec<Value> = network
        .network_security_groups
        .iter()
        .map(|n| {
            let rules: Vec<Value> = n
                .security_rules
                .iter()
                .map(|r| {
                    let mut o = json!({
                        "name": r.name,
                        "priority": r.priority,
                        "direction": format!("{:?}", r.direction),
                        "access": format!("{:?}", r.access),
                        "protocol": r.protocol.as_str(),
                        "sourceApplicationSecurityGroups": r.source.application_security_groups,
                        "destinationApplicationSecurityGroups": r.destination.application_security_groups,
                        "palisade": {"mode": format!("{:?}", r.palisade.mode)},
                    });
                    for (name, s) in [("source", &r.source), ("destination", &r.destination)] {
                        let (addresses, ports) = side(s);
                        one_or_many(&mut o, &format!("{name}AddressPrefix"), addresses);
                        one_or_many(&mut o, &format!("{name}PortRange"), ports);
                    }
                    o
                })
                .collect();
            json!({"name": n.name, "securityRules": rules})
        })
        .collect();
    let route_tables: Vec<Value> = network
        .route_tables
        .iter()
        .map(|t| {
            let routes: Vec<Value> = t
                .routes
                .iter()
                .map(|r| {
                    let prefix = match &r.address_prefix {
                        RoutePrefix::Cidr(p) => p.to_string(),
                        RoutePrefix::ServiceTag(t) | RoutePrefix::Unresolved(t) => t.clone(),
                    };
                    let mut o = json!({
                        "name": r.name,
                        "addressPrefix": prefix,
                        "nextHopType": r.next_hop_type.as_str(),
                    });
                    if let Some(ip) = r.next_hop_ip_address {
                        o["nextHopIpAddress"] = json!(ip.to_string());
                    }
                    o
                })
                .collect();
            json!({
                "name": t.name,
                "disableBgpRoutePropagation": t.disable_bgp_route_propagation,
                "routes": routes,
            })
        })
        .collect();
    let nics: Vec<Value> = network
        .network_interfaces
        .iter()
        .map(|n| {
            let mut o = json!({
                "name": n.name,
                "enableIPForwarding": n.enable_ip_forwarding,
                "ipConfigurations": n.ip_configurations.iter().map(|c| {
                    let mut o = json!({
                        "name": c.name,
                        "applicationSecurityGroups": c.application_security_groups,
                    });
                    if let Some(ip) = c.private_ip_address {
                        o["privateIPAddress"] = json!(ip.to_string());
                    }
                    if let Some((vnet, subnet)) = &c.subnet {
                        o["subnet"] = json!(format!("{vnet}/{subnet}"));
                    }
                    if let Some(p) = &c.public_ip_address {
                        o["publicIPAddress"] = json!(p);
                    }
                    o
                }).collect::<Vec<_>>(),
            });
            if let Some(nsg) = &n.network_security_group {
                o["networkSecurityGroup"] = json!(nsg);
            }
            o
        })
        .collect();
    let firewalls: Vec<Value> = network.azure_firewalls.iter().map(firewall).collect();
    Ok(json!({
        "apiVersion": "palisade/v1",
        "virtualNetworks": vnets,
        "networkSecurityGroups": nsgs,
        "routeTables": route_tables,
        "networkInterfaces": nics,
        "applicationSecurityGroups": network.application_security_groups.iter()
            .map(|a| json!({"name": a.name})).collect::<Vec<_>>(),
        "publicIPAddresses": network.public_ip_addresses.iter()
            .map(|p| json!({"name": p.name, "ipAddress": p.ip_address.map(|a| a.to_string())}))
            .collect::<Vec<_>>(),
        "azureFirewalls": firewalls,
    }))
}

/// A security rule's address or port list: one item in the singular field (the only one that
/// takes a service tag, NSG-2.4), several in the plural.
fn one_or_many(rule: &mut Value, field: &str, items: Value) {
    match items.as_array().map(Vec::as_slice) {
        Some([one]) => rule[field] = one.clone(),
        Some([]) => {}
        _ => rule[format!("{field}s")] = items,
    }
}

/// A classic firewall: one IP configuration per private address, its collections by kind.
fn firewall(fw: &AzureFirewall) -> Value {
    let configs: Vec<Value> = fw
        .private_ip_addresses
        .iter()
        .enumerate()
        .map(|(i, ip)| {
            let mut o = json!({"name": format!("ipconfig{i}"), "privateIPAddress": ip.to_string()});
            if let Some((vnet, subnet)) = fw.subnets.get(i) {
                o["subnet"] = json!(format!("{vnet}/{subnet}"));
            }
            if let Some(p) = fw.public_ip_addresses.get(i) {
                o["publicIPAddress"] = json!(p);
            }
            o
        })
        .collect();
    let addresses =
        |a: &[AddressItem]| -> Vec<String> { a.iter().map(|a| a.to_string()).collect() };
    let collections =
        |kind: RuleCollectionKind| -> Vec<Value> {
            fw.rule_collections
                .iter()
                .filter(|c| c.kind == kind)
                .map(|c| {
                    let rules: Vec<Value> =
                        c.rules
                            .iter()
                            .map(|r| {
                                let mut o = json!({
                                    "name": r.name,
                                    "sourceAddresses": addresses(&r.source_addresses),
                                    "palisade": {"mode": format!("{:?}", r.palisade.mode)},
                                });
                                match kind {
                                    RuleCollectionKind::Application => {
                                        o["protocols"] = r.protocols.iter().map(|p| json!({
                                    "protocolType": format!("{:?}", p.protocol_type),
                                    "port": p.port,
                                })).collect();
                                        o["targetFqdns"] = json!(r.target_fqdns);
                                        o["fqdnTags"] = json!(r.fqdn_tags);
                                    }
                                    RuleCollectionKind::Network | RuleCollectionKind::Nat => {
                                        o["protocols"] = r
                                            .ip_protocols
                                            .iter()
                                            .map(|p| json!(format!("{p:?}")))
                                            .collect();
                                        o["destinationAddresses"] =
                                            json!(addresses(&r.destination_addresses));
                                        o["destinationFqdns"] = json!(r.destination_fqdns);
                                        o["destinationPorts"] = r
                                            .destination_ports
                                            .iter()
                                            .map(|p| json!(p.to_string()))
                                            .collect();
                                        if let Some(a) = &r.translated_address {
                                            o["translatedAddress"] = json!(a.to_string());
                                        }
                                        if let Some(p) = r.translated_port {
                                            o["translatedPort"] = json!(p.to_string());
                                        }
                                    }
                                }
                                o
                            })
                            .collect();
                    json!({
                        "name": c.name,
                        "priority": c.priority,
                        "action": {"type": format!("{:?}", c.action)},
                        "palisade": {"mode": format!("{:?}", c.palisade.mode)},
                        "rules": rules,
                    })
                })
                .collect()
        };
    json!({
        "name": fw.name,
        "ipConfigurations": configs,
        "natRuleCollections": collections(RuleCollectionKind::Nat),
        "networkRuleCollections": collections(RuleCollectionKind::Network),
        "applicationRuleCollections": collections(RuleCollectionKind::Application),
    })
}
