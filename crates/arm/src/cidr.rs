//! ARM's CIDR helpers `parseCidr`, `cidrSubnet` and `cidrHost`, for IPv4 and IPv6.
//!
//! Addresses are handled as `u128` with a width of 32 or 128 bits so one code path serves both
//! families.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use serde_json::{json, Value};

struct Net {
    v6: bool,
    network: u128,
    prefix: u32,
}

impl Net {
    fn width(&self) -> u32 {
        if self.v6 {
            128
        } else {
            32
        }
    }

    fn mask(&self) -> u128 {
        mask(self.width(), self.prefix)
    }

    fn last(&self) -> u128 {
        self.network | (!self.mask() & full(self.width()))
    }

    fn text(&self, a: u128) -> String {
        if self.v6 {
            Ipv6Addr::from(a).to_string()
        } else {
            Ipv4Addr::from(u32::try_from(a).unwrap_or(u32::MAX)).to_string()
        }
    }
}

fn full(width: u32) -> u128 {
    if width >= 128 {
        u128::MAX
    } else {
        (1u128 << width) - 1
    }
}

fn mask(width: u32, prefix: u32) -> u128 {
    if prefix == 0 {
        0
    } else {
        full(width) & !(full(width) >> prefix)
    }
}

/// Why `parseCidr()`, `cidrSubnet()` or `cidrHost()` has no value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum CidrError {
    #[error("'{0}' is not in CIDR notation (address/prefix)")]
    NotCidr(String),
    #[error("'{0}' is not an IP address")]
    BadAddress(String),
    #[error("'{0}' is not a prefix length")]
    BadPrefix(String),
    #[error("prefix /{prefix} is longer than {width} bits")]
    PrefixTooLong { prefix: u32, width: u32 },
    #[error("new prefix /{new_prefix} must be between /{min} and /{max}")]
    NewPrefixOutOfRange { new_prefix: i64, min: u32, max: u32 },
    #[error("subnet index must not be negative")]
    NegativeSubnetIndex,
    #[error(
        "subnet index {index} is out of range: {network} holds {count} subnets of /{new_prefix}"
    )]
    SubnetIndexOutOfRange {
        index: u128,
        network: String,
        count: u128,
        new_prefix: u32,
    },
    #[error("host index must not be negative")]
    NegativeHostIndex,
    #[error("host index {index} is outside {network}")]
    HostIndexOutOfRange { index: u128, network: String },
}

fn parse(text: &str) -> Result<Net, CidrError> {
    let (addr, prefix) = text
        .trim()
        .split_once('/')
        .ok_or_else(|| CidrError::NotCidr(text.to_string()))?;
    let ip: IpAddr = addr
        .parse()
        .map_err(|_| CidrError::BadAddress(addr.to_string()))?;
    let prefix: u32 = prefix
        .parse()
        .map_err(|_| CidrError::BadPrefix(prefix.to_string()))?;
    let (v6, bits) = match ip {
        IpAddr::V4(a) => (false, u128::from(u32::from(a))),
        IpAddr::V6(a) => (true, u128::from(a)),
    };
    let width = if v6 { 128 } else { 32 };
    if prefix > width {
        return Err(CidrError::PrefixTooLong { prefix, width });
    }
    Ok(Net {
        v6,
        network: bits & mask(width, prefix),
        prefix,
    })
}

/// `parseCidr(network)`: network, netmask, broadcast (IPv4), first and last usable address, cidr.
pub(crate) fn parse_cidr(text: &str) -> Result<Value, CidrError> {
    let net = parse(text)?;
    let last = net.last();
    if net.v6 {
        return Ok(json!({
            "network": net.text(net.network),
            "netmask": net.text(net.mask()),
            "firstUsable": net.text(net.network),
            "lastUsable": net.text(last),
            "cidr": net.prefix,
        }));
    }
    let (first, last_usable) = if net.prefix >= 31 {
        (net.network, last)
    } else {
        (net.network + 1, last - 1)
    };
    Ok(json!({
        "network": net.text(net.network),
        "netmask": net.text(net.mask()),
        "broadcast": net.text(last),
        "firstUsable": net.text(first),
        "lastUsable": net.text(last_usable),
        "cidr": net.prefix,
    }))
}

/// `cidrSubnet(network, newCIDR, subnetIndex)`: the `subnetIndex`-th `/newCIDR` inside `network`.
pub(crate) fn cidr_subnet(text: &str, new_prefix: i64, index: i64) -> Result<String, CidrError> {
    let net = parse(text)?;
    let width = net.width();
    let new_prefix = u32::try_from(new_prefix)
        .ok()
        .filter(|p| *p >= net.prefix && *p <= width)
        .ok_or(CidrError::NewPrefixOutOfRange {
            new_prefix,
            min: net.prefix,
            max: width,
        })?;
    let count_bits = new_prefix - net.prefix;
    let index = u128::try_from(index).map_err(|_| CidrError::NegativeSubnetIndex)?;
    if count_bits < 128 && index >> count_bits != 0 {
        return Err(CidrError::SubnetIndexOutOfRange {
            index,
            network: text.to_string(),
            count: 1u128 << count_bits,
            new_prefix,
        });
    }
    let shift = width - new_prefix;
    let offset = if shift >= 128 { 0 } else { index << shift };
    Ok(format!("{}/{new_prefix}", net.text(net.network | offset)))
}

/// `cidrHost(network, hostIndex)`: the usable host address with that index; index 0 is the first
/// address after the network address.
pub(crate) fn cidr_host(text: &str, index: i64) -> Result<String, CidrError> {
    let net = parse(text)?;
    let index = u128::try_from(index).map_err(|_| CidrError::NegativeHostIndex)?;
    let last_usable = if net.v6 || net.prefix >= 31 {
        net.last()
    } else {
        net.last() - 1
    };
    let host = net
        .network
        .checked_add(index)
        .and_then(|a| a.checked_add(1))
        .filter(|a| *a <= last_usable)
        .ok_or_else(|| CidrError::HostIndexOutOfRange {
            index,
            network: text.to_string(),
        })?;
    Ok(net.text(host))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fmt_4_parse_cidr_v4_and_v6() {
        assert_eq!(
            parse_cidr("10.144.0.0/20").unwrap(),
            json!({"network":"10.144.0.0","netmask":"255.255.240.0","broadcast":"10.144.15.255",
                   "firstUsable":"10.144.0.1","lastUsable":"10.144.15.254","cidr":20})
        );
        assert_eq!(
            parse_cidr("fdad:3236:5555::/48").unwrap(),
            json!({"network":"fdad:3236:5555::","netmask":"ffff:ffff:ffff::",
                   "firstUsable":"fdad:3236:5555::",
                   "lastUsable":"fdad:3236:5555:ffff:ffff:ffff:ffff:ffff","cidr":48})
        );
        assert_eq!(parse_cidr("0.0.0.0/0").unwrap()["netmask"], "0.0.0.0");
        assert_eq!(
            parse_cidr("10.0.0.7/32").unwrap()["firstUsable"],
            "10.0.0.7"
        );
        assert!(parse_cidr("10.0.0.0/33").is_err());
        assert!(parse_cidr("10.0.0.0").is_err());
        assert!(parse_cidr("nope/8").is_err());
    }

    #[test]
    fn fmt_4_cidr_subnet_and_host() {
        assert_eq!(
            cidr_subnet("10.144.0.0/20", 24, 4).unwrap(),
            "10.144.4.0/24"
        );
        assert_eq!(
            cidr_subnet("fdad:3236:5555::/48", 52, 1).unwrap(),
            "fdad:3236:5555:1000::/52"
        );
        assert_eq!(cidr_subnet("10.0.0.0/8", 8, 0).unwrap(), "10.0.0.0/8");
        assert!(cidr_subnet("10.144.0.0/20", 24, 16).is_err());
        assert!(cidr_subnet("10.144.0.0/20", 16, 0).is_err());
        assert!(cidr_subnet("10.144.0.0/20", 24, -1).is_err());
        assert_eq!(cidr_subnet("::/0", 128, 5).unwrap(), "::5/128");
        assert_eq!(cidr_host("10.144.3.0/24", 0).unwrap(), "10.144.3.1");
        assert_eq!(
            cidr_host("fdad:3236:5555:3000::/52", 4).unwrap(),
            "fdad:3236:5555:3000::5"
        );
        assert!(cidr_host("10.144.3.0/24", 254).is_err());
        assert!(cidr_host("10.144.3.0/24", -1).is_err());
        assert!(cidr_host("::/0", i64::MAX).is_ok());
    }
}
