//! Resource types. Field names follow the Azure resource JSON (`securityRules`, `nextHopType`,
//! `ruleCollectionGroups`, ...) in snake case, so a reader of the ARM docs reads the code.
//!
//! Every resource carries an [`Origin`]: the file and JSON pointer it was imported from, so that
//! validation and diagnostics can name where a value came from.

use crate::address::{AddressItem, PortRange, Protocol};
use ipnet::IpNet;
use serde::Serialize;
use std::net::IpAddr;

/// Where a resource or field came from.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Origin {
    pub file: String,
    /// JSON pointer inside the file (`/resources/3/properties/securityRules/0`).
    pub pointer: String,
}

/// One network: everything imported from the files given together.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Network {
    pub virtual_networks: Vec<VirtualNetwork>,
    pub network_security_groups: Vec<NetworkSecurityGroup>,
    pub route_tables: Vec<RouteTable>,
    pub network_interfaces: Vec<NetworkInterface>,
    pub application_security_groups: Vec<ApplicationSecurityGroup>,
    pub public_ip_addresses: Vec<PublicIpAddress>,
    pub azure_firewalls: Vec<AzureFirewall>,
    pub firewall_policies: Vec<FirewallPolicy>,
    pub ip_groups: Vec<IpGroup>,
    /// Fields whose value is known only at deployment time (FMT-4): kept as unknown, each with
    /// its location and why, so that validation and answers can say what they assumed.
    pub unknowns: Vec<Unknown>,
}

/// A field whose value could not be resolved offline: a template expression that uses a
/// parameter without a value, `reference()`, a lambda, ...
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Unknown {
    /// Where the value stands (file, JSON pointer of the field or list item).
    pub origin: Origin,
    pub resource_type: String,
    pub resource: String,
    pub field: String,
    /// The expression text.
    pub expression: String,
    /// Why it has no value (the root cause: `parameter 'x' has no value ...`).
    pub why: String,
}

impl Unknown {
    /// True when the unknown value is inside the resource or rule declared at `origin`.
    pub fn within(&self, origin: &Origin) -> bool {
        self.origin.file == origin.file
            && self
                .origin
                .pointer
                .strip_prefix(origin.pointer.as_str())
                .is_some_and(|rest| rest.starts_with('/'))
    }

    /// "`field` of <resource> is unknown (why)": how answers name what they assumed.
    pub fn describe(&self) -> String {
        format!(
            "`{}` of '{}' is unknown ({})",
            self.field, self.resource, self.why
        )
    }
}

impl Network {
    /// Unknown values inside the resource or rule declared at `origin`.
    pub fn unknowns_in<'a>(&'a self, origin: &'a Origin) -> impl Iterator<Item = &'a Unknown> {
        self.unknowns.iter().filter(move |u| u.within(origin))
    }

    /// True when `field` of the resource or rule declared at `origin` (or an item of it) is
    /// unknown.
    pub fn unknown_field(&self, origin: &Origin, field: &str) -> bool {
        self.unknowns_in(origin).any(|u| u.field == field)
    }

    /// True when the name of the resource or rule declared at `origin` is unknown (its own name,
    /// not one of its children's).
    pub fn name_unknown(&self, origin: &Origin) -> bool {
        self.unknowns.iter().any(|u| {
            u.field == "name"
                && u.origin.file == origin.file
                && u.origin.pointer.rsplit_once('/').map(|(p, _)| p)
                    == Some(origin.pointer.as_str())
        })
    }

    pub fn nsg(&self, name: &str) -> Option<&NetworkSecurityGroup> {
        self.network_security_groups
            .iter()
            .find(|n| n.name.eq_ignore_ascii_case(name))
    }
    pub fn route_table(&self, name: &str) -> Option<&RouteTable> {
        self.route_tables
            .iter()
            .find(|n| n.name.eq_ignore_ascii_case(name))
    }
    pub fn firewall_policy(&self, name: &str) -> Option<&FirewallPolicy> {
        self.firewall_policies
            .iter()
            .find(|n| n.name.eq_ignore_ascii_case(name))
    }
    pub fn ip_group(&self, name: &str) -> Option<&IpGroup> {
        self.ip_groups
            .iter()
            .find(|n| n.name.eq_ignore_ascii_case(name))
    }
    /// All subnets with the virtual network that holds them.
    pub fn subnets(&self) -> impl Iterator<Item = (&VirtualNetwork, &Subnet)> {
        self.virtual_networks
            .iter()
            .flat_map(|v| v.subnets.iter().map(move |s| (v, s)))
    }
    /// Number of user security rules, routes and firewall rules (classic and policy).
    pub fn counts(&self) -> Counts {
        let firewall_rules = self
            .azure_firewalls
            .iter()
            .flat_map(|f| &f.rule_collections)
            .chain(
                self.firewall_policies
                    .iter()
                    .flat_map(|p| &p.rule_collection_groups)
                    .flat_map(|g| &g.rule_collections),
            )
            .map(|c| c.rules.len())
            .sum();
        Counts {
            security_rules: self
                .network_security_groups
                .iter()
                .map(|n| n.security_rules.len())
                .sum(),
            routes: self.route_tables.iter().map(|t| t.routes.len()).sum(),
            firewall_rules,
        }
    }
    pub fn is_empty(&self) -> bool {
        self.virtual_networks.is_empty()
            && self.network_security_groups.is_empty()
            && self.route_tables.is_empty()
            && self.network_interfaces.is_empty()
            && self.application_security_groups.is_empty()
            && self.public_ip_addresses.is_empty()
            && self.azure_firewalls.is_empty()
            && self.firewall_policies.is_empty()
            && self.ip_groups.is_empty()
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    pub security_rules: usize,
    pub routes: usize,
    pub firewall_rules: usize,
}

/// A reference to another resource by name (the last segment of its id), as resolved at import.
pub type ResourceName = String;

#[derive(Debug, Clone, Default, Serialize)]
pub struct VirtualNetwork {
    pub name: String,
    pub location: Option<String>,
    pub address_space: Vec<IpNet>,
    pub subnets: Vec<Subnet>,
    /// Peered virtual networks: the remote network's name (if known) and its address space.
    pub virtual_network_peerings: Vec<VirtualNetworkPeering>,
    pub origin: Origin,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct VirtualNetworkPeering {
    pub name: String,
    pub remote_virtual_network: Option<ResourceName>,
    pub remote_address_space: Vec<IpNet>,
    pub origin: Origin,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Subnet {
    pub name: String,
    pub address_prefixes: Vec<IpNet>,
    pub network_security_group: Option<ResourceName>,
    pub route_table: Option<ResourceName>,
    /// `serviceEndpoints[].service`, e.g. `Microsoft.Storage`.
    pub service_endpoints: Vec<ServiceEndpoint>,
    pub origin: Origin,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct ServiceEndpoint {
    pub service: String,
    /// Regions the endpoint applies to (`locations[]`); empty or `*` means all.
    pub locations: Vec<String>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct NetworkInterface {
    pub name: String,
    pub network_security_group: Option<ResourceName>,
    pub enable_ip_forwarding: bool,
    pub ip_configurations: Vec<IpConfiguration>,
    pub origin: Origin,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct IpConfiguration {
    pub name: String,
    pub private_ip_address: Option<IpAddr>,
    /// (virtual network, subnet) names.
    pub subnet: Option<(ResourceName, ResourceName)>,
    pub public_ip_address: Option<ResourceName>,
    pub application_security_groups: Vec<ResourceName>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct ApplicationSecurityGroup {
    pub name: String,
    pub origin: Origin,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct PublicIpAddress {
    pub name: String,
    pub ip_address: Option<IpAddr>,
    pub origin: Origin,
}

/// Palisade-only settings (FMT-11), kept apart from Azure's fields.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct PalisadeSettings {
    /// PAL-5.3: `Audit` rules are logged and then passed over.
    pub mode: RuleMode,
    /// PAL-5.2 `addressCheck` of an application rule or its collection; `None` = inherit.
    pub address_check: Option<AddressCheck>,
}

/// PAL-5.2: whether the SNI/Host name must resolve to the dialed address of a transparent
/// connection. `Audit` logs a mismatch and allows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize)]
pub enum AddressCheck {
    #[default]
    Enforce,
    Audit,
    Off,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub enum RuleMode {
    #[default]
    Enforce,
    Audit,
}

// ------------------------------------------------------------------------------------------ NSG

#[derive(Debug, Clone, Default, Serialize)]
pub struct NetworkSecurityGroup {
    pub name: String,
    pub location: Option<String>,
    pub security_rules: Vec<SecurityRule>,
    pub flush_connection: bool,
    pub origin: Origin,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub enum Direction {
    Inbound,
    Outbound,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub enum Access {
    Allow,
    Deny,
}

/// One side (source or destination) of a security rule: addresses or ASGs (NSG-2.4).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RuleSide {
    pub address_prefixes: Vec<AddressItem>,
    pub application_security_groups: Vec<ResourceName>,
    pub port_ranges: Vec<PortRange>,
}

#[derive(Debug, Clone, Serialize)]
pub struct SecurityRule {
    pub name: String,
    pub description: Option<String>,
    pub protocol: Protocol,
    pub source: RuleSide,
    pub destination: RuleSide,
    pub access: Access,
    pub priority: u32,
    pub direction: Direction,
    /// True for the six fixed rules of NSG-4.
    pub is_default: bool,
    pub palisade: PalisadeSettings,
    pub origin: Origin,
}

// ---------------------------------------------------------------------------------------- routes

#[derive(Debug, Clone, Default, Serialize)]
pub struct RouteTable {
    pub name: String,
    pub location: Option<String>,
    pub disable_bgp_route_propagation: bool,
    pub routes: Vec<Route>,
    pub origin: Origin,
}

/// RT-2, canonical spellings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub enum NextHopType {
    VnetLocal,
    Internet,
    VirtualAppliance,
    VirtualNetworkGateway,
    None,
    VNetPeering,
    VirtualNetworkServiceEndpoint,
    ResourceId,
}

impl NextHopType {
    pub fn as_str(self) -> &'static str {
        match self {
            NextHopType::VnetLocal => "VnetLocal",
            NextHopType::Internet => "Internet",
            NextHopType::VirtualAppliance => "VirtualAppliance",
            NextHopType::VirtualNetworkGateway => "VirtualNetworkGateway",
            NextHopType::None => "None",
            NextHopType::VNetPeering => "VNetPeering",
            NextHopType::VirtualNetworkServiceEndpoint => "VirtualNetworkServiceEndpoint",
            NextHopType::ResourceId => "ResourceId",
        }
    }

    /// RT-2 aliases, case-insensitive.
    pub fn parse(s: &str) -> Option<NextHopType> {
        let l = s.to_ascii_lowercase();
        Some(match l.as_str() {
            "vnetlocal" | "virtualnetwork" => NextHopType::VnetLocal,
            "internet" => NextHopType::Internet,
            "virtualappliance" => NextHopType::VirtualAppliance,
            "virtualnetworkgateway" | "vpngateway" | "hypernetgateway" | "microsoftedge" => {
                NextHopType::VirtualNetworkGateway
            }
            "none" | "null" => NextHopType::None,
            "vnetpeering" | "virtualnetworkpeering" => NextHopType::VNetPeering,
            "virtualnetworkserviceendpoint" => NextHopType::VirtualNetworkServiceEndpoint,
            "resourceid" => NextHopType::ResourceId,
            _ => return None,
        })
    }

    /// May a user-defined route use it (RT-2 "UDR?" column)?
    pub fn is_user_route_type(self) -> bool {
        matches!(
            self,
            NextHopType::VnetLocal
                | NextHopType::Internet
                | NextHopType::VirtualAppliance
                | NextHopType::VirtualNetworkGateway
                | NextHopType::None
        )
    }
}

/// A route's `addressPrefix`: a CIDR or a service tag.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum RoutePrefix {
    Cidr(IpNet),
    ServiceTag(String),
    /// An expression that could not be resolved offline (FMT-4).
    Unresolved(String),
}

#[derive(Debug, Clone, Serialize)]
pub struct Route {
    pub name: String,
    pub address_prefix: RoutePrefix,
    pub next_hop_type: NextHopType,
    pub next_hop_ip_address: Option<IpAddr>,
    /// The text of `nextHopIpAddress` when it was an unresolved expression (FMT-8).
    pub next_hop_unresolved: Option<String>,
    pub origin: Origin,
}

// -------------------------------------------------------------------------------------- firewall

/// Azure Firewall (FW-1). Classic rule collections are kept as the collections of one unnamed
/// rule collection group, so classic and policy firewalls evaluate through the same code.
#[derive(Debug, Clone, Default, Serialize)]
pub struct AzureFirewall {
    pub name: String,
    pub location: Option<String>,
    /// Private addresses of its IP configurations (where `VirtualAppliance` routes lead).
    pub private_ip_addresses: Vec<IpAddr>,
    /// (virtual network, subnet) of the ip configurations.
    pub subnets: Vec<(ResourceName, ResourceName)>,
    pub public_ip_addresses: Vec<ResourceName>,
    pub firewall_policy: Option<ResourceName>,
    /// Classic collections, all types, in input order.
    pub rule_collections: Vec<RuleCollection>,
    pub threat_intel_mode: Option<String>,
    pub settings: FirewallSettings,
    pub origin: Origin,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct FirewallSettings {
    /// FW-8.3; `None` = `IANAPrivateRanges`.
    pub snat_private_ranges: Option<Vec<String>>,
    pub dns_enable_proxy: Option<bool>,
    pub dns_servers: Vec<String>,
    /// PAL-5.2 `palisade.addressCheck` for the whole firewall; `None` = the gateway's default.
    pub address_check: Option<AddressCheck>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct FirewallPolicy {
    pub name: String,
    pub location: Option<String>,
    pub base_policy: Option<ResourceName>,
    pub rule_collection_groups: Vec<RuleCollectionGroup>,
    pub threat_intel_mode: Option<String>,
    pub settings: FirewallSettings,
    pub origin: Origin,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct RuleCollectionGroup {
    pub name: String,
    pub priority: u32,
    pub rule_collections: Vec<RuleCollection>,
    pub origin: Origin,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub enum RuleCollectionKind {
    Nat,
    Network,
    Application,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub enum FirewallAction {
    Allow,
    Deny,
    Dnat,
}

#[derive(Debug, Clone, Serialize)]
pub struct RuleCollection {
    pub name: String,
    pub priority: u32,
    pub kind: RuleCollectionKind,
    pub action: FirewallAction,
    pub rules: Vec<FirewallRule>,
    pub palisade: PalisadeSettings,
    pub origin: Origin,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub enum NetworkProtocol {
    Tcp,
    Udp,
    Icmp,
    Any,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub enum ApplicationProtocolType {
    Http,
    Https,
    Mssql,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub struct ApplicationProtocol {
    pub protocol_type: ApplicationProtocolType,
    pub port: u16,
}

#[derive(Debug, Clone, Serialize)]
pub struct FirewallRule {
    pub name: String,
    pub description: Option<String>,
    /// Sources: `sourceAddresses` (IPs, CIDRs, ranges, `*`).
    pub source_addresses: Vec<AddressItem>,
    pub source_ip_groups: Vec<ResourceName>,
    /// Network and NAT rules: `destinationAddresses` (same forms plus service tags);
    /// application rules (policy): the extra destination-IP predicate.
    pub destination_addresses: Vec<AddressItem>,
    pub destination_ip_groups: Vec<ResourceName>,
    pub destination_fqdns: Vec<String>,
    pub destination_ports: Vec<PortRange>,
    /// Network and NAT rules.
    pub ip_protocols: Vec<NetworkProtocol>,
    /// Application rules.
    pub protocols: Vec<ApplicationProtocol>,
    pub target_fqdns: Vec<String>,
    pub fqdn_tags: Vec<String>,
    pub target_urls: Vec<String>,
    pub web_categories: Vec<String>,
    pub terminate_tls: bool,
    /// NAT rules.
    pub translated_address: Option<AddressItem>,
    pub translated_fqdn: Option<String>,
    pub translated_port: Option<u16>,
    pub palisade: PalisadeSettings,
    pub origin: Origin,
}

impl RuleCollection {
    /// A collection with no Palisade settings and no origin (built in code, not imported).
    pub fn new(
        name: impl Into<String>,
        priority: u32,
        kind: RuleCollectionKind,
        action: FirewallAction,
        rules: Vec<FirewallRule>,
    ) -> RuleCollection {
        RuleCollection {
            name: name.into(),
            priority,
            kind,
            action,
            rules,
            palisade: PalisadeSettings::default(),
            origin: Origin::default(),
        }
    }
}

impl FirewallRule {
    pub fn named(name: impl Into<String>) -> FirewallRule {
        FirewallRule {
            name: name.into(),
            description: None,
            source_addresses: vec![],
            source_ip_groups: vec![],
            destination_addresses: vec![],
            destination_ip_groups: vec![],
            destination_fqdns: vec![],
            destination_ports: vec![],
            ip_protocols: vec![],
            protocols: vec![],
            target_fqdns: vec![],
            fqdn_tags: vec![],
            target_urls: vec![],
            web_categories: vec![],
            terminate_tls: false,
            translated_address: None,
            translated_fqdn: None,
            translated_port: None,
            palisade: PalisadeSettings::default(),
            origin: Origin::default(),
        }
    }
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct IpGroup {
    pub name: String,
    pub ip_addresses: Vec<AddressItem>,
    pub origin: Origin,
}
