//! The compiled, immutable snapshot of one network: every NSG compiled for each subnet it
//! serves, every subnet's effective routes, every firewall's passes, and the indexes that map an
//! address to its subnet and NIC. Built once per configuration (PAL-5.5), shared read-only.

use crate::addresses::TagContext;
use crate::firewall::CompiledFirewall;
use crate::matchers::Lpm;
use crate::nsg::CompiledNsg;
use crate::routes::SubnetRoutes;
use ipnet::IpNet;
use palisade_model::catalog::Catalogs;
use palisade_model::{Network, NextHopType, RoutePrefix};
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::net::IpAddr;

/// Settings that change how a network compiles.
#[derive(Debug, Clone, Default)]
pub struct CompileOptions {
    /// Static name → addresses for FQDN network rules (FW-5) when no resolver is used.
    pub resolve: HashMap<String, Vec<IpAddr>>,
}

/// A subnet with everything evaluation needs.
pub struct SubnetEntry {
    pub vnet: String,
    pub name: String,
    pub prefixes: Vec<IpNet>,
    /// Index into [`Snapshot::nsgs`].
    pub nsg: Option<usize>,
    pub route_table: Option<String>,
    pub routes: SubnetRoutes,
    pub tags: TagContext,
}

pub struct NicEntry {
    pub name: String,
    pub addresses: Vec<IpAddr>,
    pub subnet: Option<usize>,
    pub nsg: Option<usize>,
}

/// An immutable compiled network.
pub struct Snapshot {
    /// Content hash of the model, the catalog versions and the name bindings (DIAG-1.2 `snapshot`).
    pub id: String,
    pub network: Network,
    pub catalogs: Catalogs,
    pub subnets: Vec<SubnetEntry>,
    pub nics: Vec<NicEntry>,
    pub nsgs: Vec<CompiledNsg>,
    pub firewalls: Vec<CompiledFirewall>,
    /// NSGs compiled without a subnet (lone NSG inputs, `--at`), by lower-case name.
    pub unattached_nsgs: HashMap<String, usize>,
    /// Route tables compiled without a virtual network (lone route-table inputs, `--at`).
    pub unattached_route_tables: HashMap<String, SubnetRoutes>,
    subnet_index: Lpm<u32>,
    nic_index: HashMap<IpAddr, usize>,
}

/// Where an address sits in the network.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Location {
    pub subnet: Option<usize>,
    pub nic: Option<usize>,
}

impl Snapshot {
    pub fn compile(network: &Network, catalogs: &Catalogs, options: &CompileOptions) -> Snapshot {
        let mut nsgs: Vec<CompiledNsg> = vec![];
        let mut nsg_cache: HashMap<(String, usize), usize> = HashMap::new();
        // ASG membership (NSG-5.3).
        let mut asg_members: HashMap<String, Vec<IpNet>> = HashMap::new();
        for nic in &network.network_interfaces {
            for c in &nic.ip_configurations {
                for a in &c.application_security_groups {
                    if let Some(ip) = c.private_ip_address {
                        asg_members
                            .entry(a.to_ascii_lowercase())
                            .or_default()
                            .push(IpNet::from(ip));
                    }
                }
            }
        }
        let mut subnets = vec![];
        for (vnet, subnet) in network.subnets() {
            let table = subnet
                .route_table
                .as_deref()
                .and_then(|t| network.route_table(t));
            let peered: Vec<IpNet> = vnet
                .virtual_network_peerings
                .iter()
                .flat_map(|p| {
                    let remote = p
                        .remote_virtual_network
                        .as_deref()
                        .and_then(|r| {
                            network
                                .virtual_networks
                                .iter()
                                .find(|v| v.name.eq_ignore_ascii_case(r))
                        })
                        .map(|v| v.address_space.clone());
                    remote.unwrap_or_else(|| p.remote_address_space.clone())
                })
                .collect();
            // NSG-8.1: VirtualNetwork = spaces, peers, and appliance/gateway user-route prefixes.
            let mut vn = vnet.address_space.clone();
            vn.extend(peered.iter().copied());
            if let Some(t) = table {
                for r in &t.routes {
                    if matches!(
                        r.next_hop_type,
                        NextHopType::VirtualAppliance | NextHopType::VirtualNetworkGateway
                    ) {
                        match &r.address_prefix {
                            RoutePrefix::Cidr(p) => vn.push(*p),
                            RoutePrefix::ServiceTag(tag) => {
                                if let Some(st) = catalogs.service_tags.get(tag) {
                                    vn.extend(st.address_prefixes.iter().copied());
                                }
                            }
                            RoutePrefix::Unresolved(_) => {}
                        }
                    }
                }
            }
            let tags = TagContext::new(&vn);
            let idx = subnets.len();
            let nsg = subnet.network_security_group.as_deref().and_then(|n| {
                compile_nsg(
                    network,
                    catalogs,
                    &tags,
                    &asg_members,
                    n,
                    idx,
                    &mut nsgs,
                    &mut nsg_cache,
                )
            });
            subnets.push(SubnetEntry {
                vnet: vnet.name.clone(),
                name: subnet.name.clone(),
                prefixes: subnet.address_prefixes.clone(),
                nsg,
                route_table: table.map(|t| t.name.clone()),
                routes: SubnetRoutes::compile(Some(vnet), Some(subnet), table, &peered, catalogs),
                tags,
            });
        }
        let mut entries = vec![];
        for (i, s) in subnets.iter().enumerate() {
            for p in &s.prefixes {
                entries.push((*p, i as u32));
            }
        }
        let subnet_index = Lpm::build(entries);
        let mut nics = vec![];
        let mut nic_index = HashMap::new();
        for nic in &network.network_interfaces {
            let addresses: Vec<IpAddr> = nic
                .ip_configurations
                .iter()
                .filter_map(|c| c.private_ip_address)
                .collect();
            let subnet = nic
                .ip_configurations
                .iter()
                .find_map(|c| {
                    let (v, s) = c.subnet.as_ref()?;
                    subnets.iter().position(|e| {
                        e.vnet.eq_ignore_ascii_case(v) && e.name.eq_ignore_ascii_case(s)
                    })
                })
                .or_else(|| {
                    addresses
                        .first()
                        .and_then(|a| subnet_index.lookup(*a).map(|(_, i)| *i as usize))
                });
            let nsg = nic.network_security_group.as_deref().and_then(|n| {
                let tags = subnet
                    .map(|s| subnets[s].tags.clone())
                    .unwrap_or_else(|| TagContext::new(&[]));
                compile_nsg(
                    network,
                    catalogs,
                    &tags,
                    &asg_members,
                    n,
                    subnet.unwrap_or(usize::MAX),
                    &mut nsgs,
                    &mut nsg_cache,
                )
            });
            for a in &addresses {
                nic_index.insert(*a, nics.len());
            }
            nics.push(NicEntry {
                name: nic.name.clone(),
                addresses,
                subnet,
                nsg,
            });
        }
        let empty = TagContext::new(&[]);
        let mut unattached_nsgs = HashMap::new();
        for n in &network.network_security_groups {
            let i = compile_nsg(
                network,
                catalogs,
                &empty,
                &asg_members,
                &n.name,
                usize::MAX,
                &mut nsgs,
                &mut nsg_cache,
            );
            if let Some(i) = i {
                unattached_nsgs.insert(n.name.to_ascii_lowercase(), i);
            }
        }
        let unattached_route_tables = network
            .route_tables
            .iter()
            .map(|t| {
                (
                    t.name.to_ascii_lowercase(),
                    SubnetRoutes::compile(None, None, Some(t), &[], catalogs),
                )
            })
            .collect();
        let firewalls = network
            .azure_firewalls
            .iter()
            .map(|f| CompiledFirewall::compile(f, network, catalogs, &options.resolve))
            .collect();
        Snapshot {
            id: snapshot_id(network, catalogs, &options.resolve),
            network: network.clone(),
            catalogs: catalogs.clone(),
            subnets,
            nics,
            nsgs,
            firewalls,
            unattached_nsgs,
            unattached_route_tables,
            subnet_index,
            nic_index,
        }
    }

    /// The subnet and NIC an address belongs to.
    pub fn locate(&self, addr: IpAddr) -> Location {
        let nic = self.nic_index.get(&addr).copied();
        let subnet = nic
            .and_then(|n| self.nics[n].subnet)
            .or_else(|| self.subnet_index.lookup(addr).map(|(_, i)| *i as usize));
        Location { subnet, nic }
    }

    /// Is the address inside any virtual network's address space?
    pub fn in_virtual_network(&self, addr: IpAddr) -> bool {
        self.network
            .virtual_networks
            .iter()
            .any(|v| v.address_space.iter().any(|p| p.contains(&addr)))
    }

    /// The firewall a `VirtualAppliance` next hop leads to: by configured private address, else
    /// the first usable address (`.4`) of its `AzureFirewallSubnet` (scenarios README).
    pub fn firewall_at(&self, ip: IpAddr) -> Option<usize> {
        if let Some(i) = self
            .firewalls
            .iter()
            .position(|f| f.private_ip_addresses.contains(&ip))
        {
            return Some(i);
        }
        self.network.azure_firewalls.iter().position(|f| {
            f.private_ip_addresses.is_empty()
                && f.subnets.iter().any(|(v, s)| {
                    self.network
                        .subnets()
                        .find(|(vn, sn)| {
                            vn.name.eq_ignore_ascii_case(v) && sn.name.eq_ignore_ascii_case(s)
                        })
                        .and_then(|(_, sn)| sn.address_prefixes.first())
                        .is_some_and(|p| crate::endpoints::first_usable(p) == Some(ip))
                })
        })
    }

    /// The firewall that owns a public frontend address (DNAT, FW-4).
    pub fn firewall_frontend(&self, ip: IpAddr) -> Option<usize> {
        self.firewalls
            .iter()
            .position(|f| f.public_ip_addresses.contains(&ip))
    }

    pub fn subnet_by_name(&self, name: &str) -> Option<usize> {
        self.subnets.iter().position(|s| {
            s.name.eq_ignore_ascii_case(name)
                || format!("{}/{}", s.vnet, s.name).eq_ignore_ascii_case(name)
        })
    }

    pub fn nic_by_name(&self, name: &str) -> Option<usize> {
        self.nics
            .iter()
            .position(|n| n.name.eq_ignore_ascii_case(name))
    }
}

#[allow(clippy::too_many_arguments)]
fn compile_nsg(
    network: &Network,
    catalogs: &Catalogs,
    tags: &TagContext,
    asg_members: &HashMap<String, Vec<IpNet>>,
    name: &str,
    context: usize,
    nsgs: &mut Vec<CompiledNsg>,
    cache: &mut HashMap<(String, usize), usize>,
) -> Option<usize> {
    let key = (name.to_ascii_lowercase(), context);
    if let Some(i) = cache.get(&key) {
        return Some(*i);
    }
    let nsg = network.nsg(name)?;
    nsgs.push(CompiledNsg::compile(nsg, catalogs, tags, asg_members));
    cache.insert(key, nsgs.len() - 1);
    Some(nsgs.len() - 1)
}

fn snapshot_id(
    network: &Network,
    catalogs: &Catalogs,
    bindings: &HashMap<String, Vec<IpAddr>>,
) -> String {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    serde_json::to_string(network)
        .unwrap_or_default()
        .hash(&mut h);
    // Name bindings change what FQDN network rules match, so they are part of the version.
    let mut names: Vec<_> = bindings.iter().collect();
    names.sort();
    names.hash(&mut h);
    catalogs.service_tags.version().content_hash.hash(&mut h);
    catalogs.fqdn_tags.version().content_hash.hash(&mut h);
    format!("{:016x}", h.finish())
}
