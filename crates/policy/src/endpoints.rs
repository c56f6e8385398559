//! What the endpoints of a question mean before any layer is asked: a destination given as a
//! name, one address family per flow (PAL-5.1), and the address that stands for a subnet's
//! workloads. Front ends parse text; the meaning is decided here, once.

use crate::Snapshot;
use ipnet::IpNet;
use palisade_model::bindings::{normalize, Bindings};
use std::net::IpAddr;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EndpointError {
    /// PAL-5.1: a packet has one family.
    #[error("{from} and {to} are of different IP families; a flow has one family (PAL-5.1)")]
    MixedFamilies { from: IpAddr, to: IpAddr },
    #[error("no subnet named '{0}'")]
    NoSuchSubnet(String),
    #[error("the network has no subnet with an NSG or a route table; give an address")]
    NoSubnet,
    #[error("subnet '{0}' has no address prefix that holds a usable address")]
    NoUsableAddress(String),
}

/// How a destination's address was chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resolution {
    /// It was an address.
    Literal,
    /// A name bound to addresses (`--resolve`, a hosts file): the first of the source's family.
    Bound,
    /// A name with no binding: an address from the documentation range, standing for "somewhere
    /// on the Internet". The answer depends on that assumption and should say so.
    Assumed,
}

/// A flow's destination as the layers see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Destination {
    pub address: IpAddr,
    /// The TLS SNI / HTTP Host the firewall sees: the one given, else the destination's name.
    pub host: Option<String>,
    pub resolution: Resolution,
}

/// Check PAL-5.1 for a pair of endpoints.
pub fn same_family(from: IpAddr, to: IpAddr) -> Result<(), EndpointError> {
    if from.is_ipv6() == to.is_ipv6() {
        Ok(())
    } else {
        Err(EndpointError::MixedFamilies { from, to })
    }
}

/// The destination `to` (an address, `[v6]`, or a name) of a flow from `from`. A name becomes
/// the SNI/Host unless `host` is given; an empty `host` means none. A name resolves to a bound
/// address of the source's family, else the first bound, else an assumed Internet address.
pub fn destination(
    from: IpAddr,
    to: &str,
    host: Option<String>,
    bindings: &Bindings,
) -> Result<Destination, EndpointError> {
    let bare = to
        .trim()
        .strip_prefix('[')
        .and_then(|t| t.strip_suffix(']'))
        .unwrap_or(to.trim());
    let (address, host, resolution) = match bare.parse::<IpAddr>() {
        Ok(ip) => (ip, host, Resolution::Literal),
        Err(_) => {
            let bound = bindings.get(&normalize(to)).and_then(|v| {
                v.iter()
                    .find(|ip| ip.is_ipv6() == from.is_ipv6())
                    .or(v.first())
                    .copied()
            });
            let (ip, resolution) = match bound {
                Some(ip) => (ip, Resolution::Bound),
                None => (internet_placeholder(from.is_ipv6()), Resolution::Assumed),
            };
            (ip, host.or_else(|| Some(to.to_string())), resolution)
        }
    };
    same_family(from, address)?;
    Ok(Destination {
        address,
        host: host.filter(|h| !h.is_empty()),
        resolution,
    })
}

/// The documentation address that stands for an unresolved Internet name (RFC 5737 / RFC 3849).
pub fn internet_placeholder(v6: bool) -> IpAddr {
    if v6 {
        IpAddr::from([0x2001, 0xdb8, 0, 0, 0, 0, 0, 1])
    } else {
        IpAddr::from([203, 0, 113, 1])
    }
}

/// Azure reserves the first four addresses of a subnet; `.4` is the first a resource gets. A
/// prefix too small to hold a `.4` (a /30 or longer) has no usable address.
pub fn first_usable(p: &IpNet) -> Option<IpAddr> {
    match p {
        IpNet::V4(n) => u32::from(n.network())
            .checked_add(4)
            .map(|a| IpAddr::V4(a.into())),
        IpNet::V6(n) => u128::from(n.network())
            .checked_add(4)
            .map(|a| IpAddr::V6(a.into())),
    }
    .filter(|a| p.contains(a))
}

/// The address that stands for a workload: `from` itself when it is an address, else the first
/// usable address of the subnet it names; with no `from`, the first subnet that has an NSG or a
/// route table (the one a check is most likely about).
pub fn workload_address(snap: &Snapshot, from: Option<&str>) -> Result<IpAddr, EndpointError> {
    if let Some(ip) = from.and_then(|f| f.parse().ok()) {
        return Ok(ip);
    }
    let subnet = match from {
        Some(name) => snap
            .subnet_by_name(name)
            .ok_or_else(|| EndpointError::NoSuchSubnet(name.to_string()))?,
        None => snap
            .subnets()
            .find(|(_, s)| s.nsg.is_some() || s.route_table.is_some())
            .map(|(i, _)| i)
            .ok_or(EndpointError::NoSubnet)?,
    };
    let s = snap.subnet(subnet);
    s.prefixes
        .iter()
        .find_map(first_usable)
        .ok_or_else(|| EndpointError::NoUsableAddress(format!("{}/{}", s.vnet, s.name)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    /// PAL-5.1: one family per flow; a name follows the source's family.
    #[test]
    fn pal_5_1_destination_family() {
        let mut b = Bindings::new();
        b.insert(
            "example.com".into(),
            vec![ip("2001:db8::9"), ip("198.51.100.9")],
        );
        let d = destination(ip("10.0.0.1"), "Example.COM.", None, &b).unwrap();
        assert_eq!(d.address, ip("198.51.100.9"));
        assert_eq!(d.host.as_deref(), Some("Example.COM."));
        assert_eq!(d.resolution, Resolution::Bound);
        let d = destination(ip("2001:db8::5"), "example.com", None, &b).unwrap();
        assert_eq!(d.address, ip("2001:db8::9"));
        let d = destination(ip("2001:db8::5"), "other.test", None, &b).unwrap();
        assert_eq!(
            (d.address, d.resolution),
            (ip("2001:db8::1"), Resolution::Assumed)
        );
        let d = destination(ip("2001:db8::5"), "[2001:db8::7]", Some(String::new()), &b).unwrap();
        assert_eq!((d.address, d.host), (ip("2001:db8::7"), None));
        assert_eq!(
            destination(ip("10.0.0.1"), "2001:db8::1", None, &b),
            Err(EndpointError::MixedFamilies {
                from: ip("10.0.0.1"),
                to: ip("2001:db8::1")
            })
        );
    }

    #[test]
    fn first_usable_needs_room() {
        assert_eq!(
            first_usable(&"10.0.1.0/24".parse().unwrap()),
            Some(ip("10.0.1.4"))
        );
        assert_eq!(first_usable(&"10.0.1.0/30".parse().unwrap()), None);
    }
}
