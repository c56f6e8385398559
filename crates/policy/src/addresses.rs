//! Resolving address items to prefix sets at compile time: service tags through the catalog
//! (CAT-2), the contextual built-in tags (NSG-8), ASGs through NIC membership (NSG-5.3), firewall
//! ranges and IP groups (FW-5). Sets stay sets: nothing is multiplied with ports.

use crate::prefixes::{aggregate, all_v4, all_v6, difference, net, range_to_cidrs};
use ipnet::IpNet;
use palisade_model::catalog::Catalogs;
use palisade_model::AddressItem;
use std::net::{IpAddr, Ipv4Addr};

/// The host's wire server, `168.63.129.16`: the built-in `AzureLoadBalancer` address
/// (`../shared/spec/nsg.md` NSG-8.2), always part of `VirtualNetwork` (NSG-8.1), and the
/// platform DNS and licensing address a NIC always reaches (NSG-8.4, tags `AzurePlatformDNS`
/// and `AzurePlatformLKM`).
pub const AZURE_WIRE_SERVER: Ipv4Addr = Ipv4Addr::new(168, 63, 129, 16);

/// The instance metadata service, `169.254.169.254`: a platform address a NIC always reaches
/// (`../shared/spec/nsg.md` NSG-8.4, tag `AzurePlatformIMDS`).
pub const AZURE_IMDS: Ipv4Addr = Ipv4Addr::new(169, 254, 169, 254);

/// The platform addresses outbound NSG rules do not apply to (NSG-8.4), the wire server first.
pub const PLATFORM_ADDRESSES: [IpAddr; 2] = [IpAddr::V4(AZURE_WIRE_SERVER), IpAddr::V4(AZURE_IMDS)];

/// One address as a host prefix (`/32`, `/128`).
pub fn host_net(a: impl Into<IpAddr>) -> IpNet {
    IpNet::from(a.into())
}

/// Special-purpose ranges excluded from `Internet` (NSG-8.3).
const SPECIAL_V4: &[&str] = &[
    "0.0.0.0/8",
    "10.0.0.0/8",
    "100.64.0.0/10",
    "127.0.0.0/8",
    "169.254.0.0/16",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "224.0.0.0/4",
    "240.0.0.0/4",
];
const SPECIAL_V6: &[&str] = &["fc00::/7", "fe80::/10", "::1/128", "ff00::/8"];

/// What the contextual tags mean for one subnet (or for no subnet at all).
#[derive(Debug, Clone)]
pub struct TagContext {
    /// NSG-8.1 expansion of `VirtualNetwork`.
    pub virtual_network: Vec<IpNet>,
    /// NSG-8.3 expansion of `Internet`.
    pub internet: Vec<IpNet>,
}

impl TagContext {
    /// `vnet_prefixes`: address spaces, peered spaces and user-route prefixes with next hop
    /// VirtualAppliance / VirtualNetworkGateway of the subnet's table.
    pub fn new(vnet_prefixes: &[IpNet]) -> TagContext {
        let mut vn: Vec<IpNet> = vnet_prefixes.to_vec();
        vn.push(host_net(AZURE_WIRE_SERVER));
        let virtual_network = aggregate(&vn);
        let mut excluded: Vec<IpNet> = virtual_network.clone();
        excluded.extend(SPECIAL_V4.iter().map(|s| net(s)));
        excluded.extend(SPECIAL_V6.iter().map(|s| net(s)));
        let global = [all_v4(), net("2000::/3")];
        let internet = difference(&global, &excluded);
        TagContext {
            virtual_network,
            internet,
        }
    }
}

/// Why an item resolved to nothing (kept for explanations and for the gateway's refusal).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unresolved {
    UnknownTag(String),
    Expression(String),
}

/// Resolve one item. `asg_members` gives the member addresses of an ASG by name.
pub fn resolve(
    item: &AddressItem,
    catalogs: &Catalogs,
    ctx: &TagContext,
    out: &mut Vec<IpNet>,
) -> Result<(), Unresolved> {
    match item {
        AddressItem::Any => {
            out.push(all_v4());
            out.push(all_v6());
        }
        AddressItem::Prefix(p) => out.push(*p),
        AddressItem::Range(a, b) => out.extend(range_to_cidrs(*a, *b)),
        AddressItem::ServiceTag(t) => match t.to_ascii_lowercase().as_str() {
            "virtualnetwork" => out.extend(ctx.virtual_network.iter().copied()),
            "internet" => out.extend(ctx.internet.iter().copied()),
            "azureloadbalancer" => out.push(host_net(AZURE_WIRE_SERVER)),
            // NSG-8.4 platform tags, not in the service-tag file: the host's wire server (DNS,
            // and licensing through it — unverified) and the metadata service.
            "azureplatformdns" | "azureplatformlkm" => out.push(host_net(AZURE_WIRE_SERVER)),
            "azureplatformimds" => out.push(host_net(AZURE_IMDS)),
            _ => match catalogs.service_tags.get(t) {
                Some(tag) => out.extend(tag.address_prefixes.iter().copied()),
                None => return Err(Unresolved::UnknownTag(t.clone())),
            },
        },
        AddressItem::Unresolvable(t) => return Err(Unresolved::Expression(t.clone())),
    }
    Ok(())
}

/// Resolve a list; unresolvable items contribute nothing (lenient NSG-3) and are returned.
pub fn resolve_all(
    items: &[AddressItem],
    catalogs: &Catalogs,
    ctx: &TagContext,
) -> (Vec<IpNet>, Vec<Unresolved>) {
    let mut out = vec![];
    let mut bad = vec![];
    for i in items {
        if let Err(e) = resolve(i, catalogs, ctx, &mut out) {
            bad.push(e);
        }
    }
    (aggregate(&out), bad)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn has(set: &[IpNet], a: &str) -> bool {
        let a: IpAddr = a.parse().unwrap();
        set.iter().any(|n| n.contains(&a))
    }

    #[test]
    fn nsg_8_3_internet_excludes_vnet_and_special_ranges() {
        let ctx = TagContext::new(&[net("10.0.0.0/16")]);
        assert!(has(&ctx.internet, "203.0.113.9"));
        assert!(has(&ctx.internet, "8.8.8.8"));
        assert!(!has(&ctx.internet, "10.0.1.4"));
        assert!(!has(&ctx.internet, "192.168.5.5"));
        assert!(!has(&ctx.internet, "168.63.129.16"));
        assert!(has(&ctx.internet, "2001:db8::1"));
        assert!(!has(&ctx.internet, "fd00::1"));
    }

    #[test]
    fn nsg_8_1_virtual_network_includes_platform_address() {
        let ctx = TagContext::new(&[net("10.0.0.0/16")]);
        assert!(has(&ctx.virtual_network, "168.63.129.16"));
        assert!(has(&ctx.virtual_network, "10.0.200.1"));
        assert!(!has(&ctx.virtual_network, "10.1.0.1"));
        // 0.0.0.0/0 → VirtualAppliance widens VirtualNetwork to everything (NSG-8.1).
        let wide = TagContext::new(&[net("10.0.0.0/16"), all_v4()]);
        assert!(has(&wide.virtual_network, "8.8.8.8"));
        assert!(!has(&wide.internet, "8.8.8.8"));
    }
}
