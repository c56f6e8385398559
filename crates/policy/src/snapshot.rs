//! The compiled, immutable snapshot of one network: every NSG compiled for each subnet it
//! serves, every subnet's effective routes, every firewall's passes, and the indexes that map an
//! address to its subnet and NIC. Built once per configuration (PAL-5.5), shared read-only.

use crate::addresses::TagContext;
use crate::firewall::CompiledFirewall;
use crate::ids::{FirewallId, NicId, NsgId, SubnetId};
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
    /// The subnet's NSG, compiled in this subnet's tag context.
    pub nsg: Option<NsgId>,
    pub route_table: Option<String>,
    pub routes: SubnetRoutes,
    pub tags: TagContext,
}

/// A network interface with everything evaluation needs.
pub struct NicEntry {
    pub name: String,
    pub addresses: Vec<IpAddr>,
    pub subnet: Option<SubnetId>,
    pub nsg: Option<NsgId>,
}

/// An immutable compiled network. Its entries are reached through typed ids ([`SubnetId`],
/// [`NicId`], [`NsgId`], [`FirewallId`]) that only the snapshot hands out.
pub struct Snapshot {
    /// Content hash of the model, the catalog versions and the name bindings (DIAG-1.2 `snapshot`).
    pub id: String,
    /// Content hash of the name bindings alone: two snapshots of one network whose FQDN
    /// network rules resolve differently differ here.
    pub bindings_id: u64,
    pub network: Network,
    pub catalogs: Catalogs,
    subnets: Vec<SubnetEntry>,
    nics: Vec<NicEntry>,
    nsgs: Vec<CompiledNsg>,
    firewalls: Vec<CompiledFirewall>,
    /// NSGs compiled without a subnet (lone NSG inputs, `--at`), by lower-case name.
    unattached_nsgs: HashMap<String, NsgId>,
    /// Route tables compiled without a virtual network (lone route-table inputs, `--at`).
    unattached_route_tables: HashMap<String, SubnetRoutes>,
    subnet_index: Lpm<u32>,
    nic_index: HashMap<IpAddr, NicId>,
}

/// Where an address sits in the network.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Location {
    pub subnet: Option<SubnetId>,
    pub nic: Option<NicId>,
}

impl Snapshot {
    pub fn compile(network: &Network, catalogs: &Catalogs, options: &CompileOptions) -> Snapshot {
        let mut nsgs: Vec<CompiledNsg> = vec![];
        let mut nsg_cache: HashMap<(String, usize), NsgId> = HashMap::new();
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
                    subnets
                        .iter()
                        .position(|e| {
                            e.vnet.eq_ignore_ascii_case(v) && e.name.eq_ignore_ascii_case(s)
                        })
                        .map(SubnetId::new)
                })
                .or_else(|| {
                    addresses.first().and_then(|a| {
                        subnet_index
                            .lookup(*a)
                            .map(|(_, i)| SubnetId::new(*i as usize))
                    })
                });
            let nsg = nic.network_security_group.as_deref().and_then(|n| {
                let tags = subnet
                    .map(|s| subnets[s.index()].tags.clone())
                    .unwrap_or_else(|| TagContext::new(&[]));
                compile_nsg(
                    network,
                    catalogs,
                    &tags,
                    &asg_members,
                    n,
                    subnet.map_or(usize::MAX, SubnetId::index),
                    &mut nsgs,
                    &mut nsg_cache,
                )
            });
            for a in &addresses {
                nic_index.insert(*a, NicId::new(nics.len()));
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
            bindings_id: bindings_id(&options.resolve),
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
        let subnet = nic.and_then(|n| self.nic(n).subnet).or_else(|| {
            self.subnet_index
                .lookup(addr)
                .map(|(_, i)| SubnetId::new(*i as usize))
        });
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
    pub fn firewall_at(&self, ip: IpAddr) -> Option<FirewallId> {
        if let Some(i) = self
            .firewalls
            .iter()
            .position(|f| f.private_ip_addresses.contains(&ip))
        {
            return Some(FirewallId::new(i));
        }
        // `firewalls` is compiled one to one from `azure_firewalls`, so positions agree.
        let i = self.network.azure_firewalls.iter().position(|f| {
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
        })?;
        Some(FirewallId::new(i))
    }

    /// The firewall that owns a public frontend address (DNAT, FW-4).
    pub fn firewall_frontend(&self, ip: IpAddr) -> Option<FirewallId> {
        self.firewalls()
            .find(|(_, f)| f.public_ip_addresses.contains(&ip))
            .map(|(i, _)| i)
    }

    /// A subnet by `name` or `vnet/name`, case-insensitively; the first when a bare name is
    /// ambiguous.
    pub fn subnet_by_name(&self, name: &str) -> Option<SubnetId> {
        self.subnets()
            .find(|(_, s)| {
                s.name.eq_ignore_ascii_case(name)
                    || format!("{}/{}", s.vnet, s.name).eq_ignore_ascii_case(name)
            })
            .map(|(i, _)| i)
    }

    /// A network interface by name, case-insensitively.
    pub fn nic_by_name(&self, name: &str) -> Option<NicId> {
        self.nics()
            .find(|(_, n)| n.name.eq_ignore_ascii_case(name))
            .map(|(i, _)| i)
    }

    /// A firewall by its resource name, case-insensitively.
    pub fn firewall_by_name(&self, name: &str) -> Option<FirewallId> {
        self.firewalls()
            .find(|(_, f)| f.name.eq_ignore_ascii_case(name))
            .map(|(i, _)| i)
    }

    pub fn subnet(&self, id: SubnetId) -> &SubnetEntry {
        &self.subnets[id.index()]
    }

    /// Every subnet, in id order.
    pub fn subnets(&self) -> impl ExactSizeIterator<Item = (SubnetId, &SubnetEntry)> + Clone {
        with_ids(&self.subnets, SubnetId::new)
    }

    pub fn nic(&self, id: NicId) -> &NicEntry {
        &self.nics[id.index()]
    }

    /// Every network interface, in id order.
    pub fn nics(&self) -> impl ExactSizeIterator<Item = (NicId, &NicEntry)> + Clone {
        with_ids(&self.nics, NicId::new)
    }

    pub fn nsg(&self, id: NsgId) -> &CompiledNsg {
        &self.nsgs[id.index()]
    }

    /// Every compiled NSG (one per NSG and tag context), in id order.
    pub fn nsgs(&self) -> impl ExactSizeIterator<Item = (NsgId, &CompiledNsg)> + Clone {
        with_ids(&self.nsgs, NsgId::new)
    }

    pub fn firewall(&self, id: FirewallId) -> &CompiledFirewall {
        &self.firewalls[id.index()]
    }

    /// The firewall, when the network has exactly one (lone firewall inputs, `--at firewall`,
    /// a gateway not told which to run).
    pub fn sole_firewall(&self) -> Option<FirewallId> {
        (self.firewalls.len() == 1).then(|| FirewallId::new(0))
    }

    /// Every firewall, in id order.
    pub fn firewalls(
        &self,
    ) -> impl ExactSizeIterator<Item = (FirewallId, &CompiledFirewall)> + Clone {
        with_ids(&self.firewalls, FirewallId::new)
    }

    /// The NSG of that name compiled without a subnet (empty tag context), for lone NSG inputs
    /// and `--at`.
    pub fn unattached_nsg(&self, name: &str) -> Option<NsgId> {
        self.unattached_nsgs
            .get(&name.to_ascii_lowercase())
            .copied()
    }

    /// Every NSG compiled without a subnet, by lower-case name, in no particular order.
    pub fn unattached_nsgs(&self) -> impl Iterator<Item = (&str, NsgId)> {
        self.unattached_nsgs.iter().map(|(n, i)| (n.as_str(), *i))
    }

    /// The route table of that name compiled without a virtual network (lone route-table
    /// inputs, `--at`).
    pub fn unattached_route_table(&self, name: &str) -> Option<&SubnetRoutes> {
        self.unattached_route_tables.get(&name.to_ascii_lowercase())
    }

    /// Every route table compiled without a virtual network, by lower-case name, in no
    /// particular order.
    pub fn unattached_route_tables(&self) -> impl ExactSizeIterator<Item = (&str, &SubnetRoutes)> {
        self.unattached_route_tables
            .iter()
            .map(|(n, r)| (n.as_str(), r))
    }
}

/// Entries with the ids that name them (an id is the entry's position).
fn with_ids<T, I>(
    entries: &[T],
    id: fn(usize) -> I,
) -> impl ExactSizeIterator<Item = (I, &T)> + Clone {
    entries.iter().enumerate().map(move |(i, e)| (id(i), e))
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
    cache: &mut HashMap<(String, usize), NsgId>,
) -> Option<NsgId> {
    let key = (name.to_ascii_lowercase(), context);
    if let Some(i) = cache.get(&key) {
        return Some(*i);
    }
    let nsg = network.nsg(name)?;
    let id = NsgId::new(nsgs.len());
    nsgs.push(CompiledNsg::compile(nsg, catalogs, tags, asg_members));
    cache.insert(key, id);
    Some(id)
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

fn bindings_id(bindings: &HashMap<String, Vec<IpAddr>>) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    let mut names: Vec<_> = bindings.iter().collect();
    names.sort();
    names.hash(&mut h);
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use palisade_model::import::import_text;
    use palisade_model::ImportOptions;

    const NET: &str = r#"
apiVersion: palisade/v1
virtualNetworks:
  - name: vnet
    addressSpace: [10.0.0.0/16]
    subnets:
      - {name: web, addressPrefix: 10.0.1.0/24, networkSecurityGroup: nsg}
      - {name: db, addressPrefix: 10.0.2.0/24, networkSecurityGroup: nsg}
networkSecurityGroups:
  - name: nsg
    securityRules: {}
networkInterfaces:
  - {name: db-nic, networkSecurityGroup: nsg, ipConfigurations: [{name: c, privateIPAddress: 10.0.2.4, subnet: vnet/db}]}
azureFirewalls:
  - {name: fw, ipConfigurations: [{name: c, privateIPAddress: 10.0.3.4}]}
"#;

    fn snapshot() -> Snapshot {
        let file = import_text("ids.yaml", NET, &ImportOptions::default(), None);
        Snapshot::compile(
            &file.network,
            &Catalogs::embedded(),
            &CompileOptions::default(),
        )
    }

    /// The lookups, the iterators and `locate` hand out ids that lead to the same entries.
    #[test]
    fn ids_lead_to_their_entries() {
        let s = snapshot();
        let db = s.subnet_by_name("VNET/db").expect("by vnet/name");
        assert_eq!(s.subnet_by_name("db"), Some(db));
        assert_eq!(s.subnet(db).name, "db");
        let names: Vec<_> = s.subnets().map(|(i, e)| (i, e.name.as_str())).collect();
        assert_eq!(
            names,
            [(s.subnet_by_name("web").unwrap(), "web"), (db, "db")]
        );
        let nic = s.nic_by_name("DB-NIC").expect("by name");
        assert_eq!(s.nic(nic).subnet, Some(db));
        let at = s.locate("10.0.2.4".parse().unwrap());
        assert_eq!((at.subnet, at.nic), (Some(db), Some(nic)));
        let at = s.locate("10.0.1.9".parse().unwrap());
        assert_eq!(at.subnet, s.subnet_by_name("web"));
        assert_eq!(at.nic, None);
        // One NSG, compiled once per tag context: each subnet, and unattached (NSG-8).
        let web_nsg = s.subnet(s.subnet_by_name("web").unwrap()).nsg.unwrap();
        let db_nsg = s.subnet(db).nsg.unwrap();
        assert_ne!(web_nsg, db_nsg);
        assert_eq!(s.nic(nic).nsg, Some(db_nsg));
        let lone = s.unattached_nsg("NSG").expect("unattached");
        assert!(![web_nsg, db_nsg].contains(&lone));
        assert_eq!(s.nsgs().len(), 3);
        assert!(s.nsgs().all(|(_, n)| n.name == "nsg"));
        let fw = s.firewall_by_name("FW").expect("by name");
        assert_eq!(s.sole_firewall(), Some(fw));
        assert_eq!(s.firewall_at("10.0.3.4".parse().unwrap()), Some(fw));
        assert_eq!(s.firewall(fw).name, "fw");
    }
}
