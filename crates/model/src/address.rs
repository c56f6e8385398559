//! Address items, port ranges and protocols as rules write them (NSG-2.2–2.4, FW-5, FW-9).

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use serde::Serialize;
use std::fmt;
use std::net::IpAddr;

/// One item of an address field.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub enum AddressItem {
    /// `*` / `Any`: every address of both families.
    Any,
    /// An address or CIDR (host bits cleared).
    Prefix(IpNet),
    /// A firewall range `a-b` (inclusive, same family).
    Range(IpAddr, IpAddr),
    /// A service tag, possibly regional (`Storage.WestUS`), or a built-in tag
    /// (`VirtualNetwork`, `AzureLoadBalancer`, `Internet`), canonical case when known.
    ServiceTag(String),
    /// Text that could not be resolved (FMT-4 `unresolved(...)`, or lenient NSG-3): matches nothing.
    Unresolvable(String),
}

impl fmt::Display for AddressItem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AddressItem::Any => f.write_str("*"),
            AddressItem::Prefix(p) => write!(f, "{p}"),
            AddressItem::Range(a, b) => write!(f, "{a}-{b}"),
            AddressItem::ServiceTag(t) => f.write_str(t),
            AddressItem::Unresolvable(t) => write!(f, "unresolved({t})"),
        }
    }
}

/// Why an address item was rejected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AddressError {
    Empty,
    BadCidr(String),
    BadRange(String),
    NotAnAddress(String),
}

impl AddressError {
    /// Address-shaped text that is not a valid address (`10.0.0.0/33`, `300.1.2.3/24`, an
    /// inverted range): malformed input, never an unresolved value, so it is an error in every
    /// mode (issue 17: keeping it as "matches nothing" lets a Deny rule fail open).
    pub fn is_malformed(&self) -> bool {
        matches!(self, AddressError::BadCidr(_) | AddressError::BadRange(_))
    }
}

impl fmt::Display for AddressError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AddressError::Empty => f.write_str("an empty address item"),
            AddressError::BadCidr(s) => write!(f, "`{s}` is not a valid CIDR prefix"),
            AddressError::BadRange(s) => write!(
                f,
                "`{s}` is not a valid address range (expected `first-last`, same family, first ≤ last)"
            ),
            AddressError::NotAnAddress(s) => write!(
                f,
                "`{s}` is neither an IP address, a CIDR prefix, `*` nor a service tag"
            ),
        }
    }
}

/// Parse a single IP address, accepting IPv6 in brackets.
pub fn parse_ip(s: &str) -> Option<IpAddr> {
    let s = s.trim();
    let s = s
        .strip_prefix('[')
        .and_then(|x| x.strip_suffix(']'))
        .unwrap_or(s);
    s.parse().ok()
}

/// Parse a CIDR or bare address. Returns the prefix and whether host bits had to be cleared
/// (NSG-3: accepted with a warning).
pub fn parse_prefix(s: &str) -> Result<(IpNet, bool), AddressError> {
    let s = s.trim();
    if let Some(ip) = parse_ip(s) {
        return Ok((IpNet::from(ip), false));
    }
    let (addr, len) = s
        .split_once('/')
        .ok_or_else(|| AddressError::BadCidr(s.to_string()))?;
    let ip = parse_ip(addr).ok_or_else(|| AddressError::BadCidr(s.to_string()))?;
    let len: u8 = len
        .trim()
        .parse()
        .map_err(|_| AddressError::BadCidr(s.to_string()))?;
    let net = match ip {
        IpAddr::V4(a) => Ipv4Net::new(a, len).map(IpNet::V4),
        IpAddr::V6(a) => Ipv6Net::new(a, len).map(IpNet::V6),
    }
    .map_err(|_| AddressError::BadCidr(s.to_string()))?;
    let trunc = net.trunc();
    Ok((trunc, trunc != net))
}

/// Does the text look like an address (so that failing to parse it is a CIDR error and not an
/// unknown tag)?
fn looks_numeric(s: &str) -> bool {
    s.chars()
        .all(|c| c.is_ascii_hexdigit() || matches!(c, '.' | ':' | '/' | '-' | '[' | ']'))
        && s.chars().any(|c| c.is_ascii_digit())
}

/// Parse one address item. `allow_ranges` admits the firewall's `a-b` form. Tags are returned as
/// [`AddressItem::ServiceTag`] unchecked; the caller checks them against the catalog.
/// The boolean is true when host bits were cleared.
pub fn parse_address_item(
    s: &str,
    allow_ranges: bool,
) -> Result<(AddressItem, bool), AddressError> {
    let t = s.trim();
    if t.is_empty() {
        return Err(AddressError::Empty);
    }
    if t == "*" || t.eq_ignore_ascii_case("any") {
        return Ok((AddressItem::Any, false));
    }
    if let Some((a, b)) = t.split_once('-') {
        if looks_numeric(t) {
            if !allow_ranges {
                return Err(AddressError::NotAnAddress(t.to_string()));
            }
            let (a, b) = (
                parse_ip(a).ok_or_else(|| AddressError::BadRange(t.to_string()))?,
                parse_ip(b).ok_or_else(|| AddressError::BadRange(t.to_string()))?,
            );
            if a.is_ipv4() != b.is_ipv4() || a > b {
                return Err(AddressError::BadRange(t.to_string()));
            }
            return Ok((AddressItem::Range(a, b), false));
        }
    }
    if looks_numeric(t) {
        if !t.contains('.') && !t.contains(':') {
            // "789": neither an address nor a tag (FMT-7).
            return Err(AddressError::NotAnAddress(t.to_string()));
        }
        let (net, cleared) = parse_prefix(t)?;
        return Ok((AddressItem::Prefix(net), cleared));
    }
    if t.chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        && t.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
    {
        return Ok((AddressItem::ServiceTag(canonical_builtin_tag(t)), false));
    }
    Err(AddressError::NotAnAddress(t.to_string()))
}

/// Built-in tags and their classic spellings (NSG-2.4) in canonical case; other tags unchanged.
pub fn canonical_builtin_tag(t: &str) -> String {
    match t.to_ascii_lowercase().as_str() {
        "virtualnetwork" | "virtual_network" => "VirtualNetwork".into(),
        "azureloadbalancer" | "azure_loadbalancer" => "AzureLoadBalancer".into(),
        "internet" => "Internet".into(),
        _ => t.to_string(),
    }
}

/// An inclusive port range (NSG-2.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct PortRange {
    pub first: u16,
    pub last: u16,
}

impl PortRange {
    pub const ANY: PortRange = PortRange {
        first: 0,
        last: 65535,
    };
    pub fn single(p: u16) -> PortRange {
        PortRange { first: p, last: p }
    }
    pub fn contains(&self, p: u16) -> bool {
        self.first <= p && p <= self.last
    }
    pub fn is_any(&self) -> bool {
        *self == PortRange::ANY
    }
}

impl fmt::Display for PortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_any() {
            f.write_str("*")
        } else if self.first == self.last {
            write!(f, "{}", self.first)
        } else {
            write!(f, "{}-{}", self.first, self.last)
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PortError {
    Empty,
    NotANumber(String),
    OutOfRange(String),
    Inverted(String),
}

impl fmt::Display for PortError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PortError::Empty => f.write_str("an empty port item"),
            PortError::NotANumber(s) => {
                write!(f, "`{s}` is not a port (expected `*`, `N` or `A-B`)")
            }
            PortError::OutOfRange(s) => write!(f, "port `{s}` is outside 0-65535"),
            PortError::Inverted(s) => {
                write!(f, "port range `{s}` has its first port above its last")
            }
        }
    }
}

/// Parse one port spec: `*`, `N`, `A-B`.
pub fn parse_port_range(s: &str) -> Result<PortRange, PortError> {
    let t = s.trim();
    if t.is_empty() {
        return Err(PortError::Empty);
    }
    if t == "*" || t.eq_ignore_ascii_case("any") {
        return Ok(PortRange::ANY);
    }
    let num = |x: &str| -> Result<u16, PortError> {
        let x = x.trim();
        if x.is_empty() || !x.chars().all(|c| c.is_ascii_digit()) {
            return Err(PortError::NotANumber(t.to_string()));
        }
        x.parse::<u32>()
            .ok()
            .filter(|n| *n <= 65535)
            .map(|n| n as u16)
            .ok_or_else(|| PortError::OutOfRange(t.to_string()))
    };
    match t.split_once('-') {
        Some((a, b)) => {
            let (a, b) = (num(a)?, num(b)?);
            if a > b {
                return Err(PortError::Inverted(t.to_string()));
            }
            Ok(PortRange { first: a, last: b })
        }
        None => num(t).map(PortRange::single),
    }
}

/// Parse a port field that may hold a comma list (`"80, 10000-10005"`).
pub fn parse_port_list(s: &str) -> Result<Vec<PortRange>, PortError> {
    s.split(',').map(parse_port_range).collect()
}

/// NSG protocol (NSG-2.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub enum Protocol {
    Tcp,
    Udp,
    Icmp,
    Esp,
    Ah,
    /// `*` / `Any`.
    Any,
}

impl Protocol {
    pub fn parse(s: &str) -> Option<Protocol> {
        Some(match s.trim().to_ascii_lowercase().as_str() {
            "tcp" => Protocol::Tcp,
            "udp" => Protocol::Udp,
            "icmp" | "icmpv6" => Protocol::Icmp,
            "esp" => Protocol::Esp,
            "ah" => Protocol::Ah,
            "*" | "any" | "all" => Protocol::Any,
            _ => return None,
        })
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "Tcp",
            Protocol::Udp => "Udp",
            Protocol::Icmp => "Icmp",
            Protocol::Esp => "Esp",
            Protocol::Ah => "Ah",
            Protocol::Any => "*",
        }
    }
    /// IANA protocol number for a packet of the given family (`Icmp` is 58 for IPv6).
    pub fn number(self, ipv6: bool) -> Option<u8> {
        match self {
            Protocol::Tcp => Some(6),
            Protocol::Udp => Some(17),
            Protocol::Icmp => Some(if ipv6 { 58 } else { 1 }),
            Protocol::Esp => Some(50),
            Protocol::Ah => Some(51),
            Protocol::Any => None,
        }
    }
    pub fn has_ports(self) -> bool {
        matches!(self, Protocol::Tcp | Protocol::Udp)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nsg_2_3_port_specs() {
        assert_eq!(parse_port_range("*").unwrap(), PortRange::ANY);
        assert_eq!(parse_port_range("22").unwrap(), PortRange::single(22));
        assert_eq!(
            parse_port_range("454-455").unwrap(),
            PortRange {
                first: 454,
                last: 455
            }
        );
        assert_eq!(parse_port_range("0").unwrap(), PortRange::single(0));
        assert_eq!(parse_port_range("65535").unwrap(), PortRange::single(65535));
        assert!(matches!(
            parse_port_range("65536"),
            Err(PortError::OutOfRange(_))
        ));
        assert!(matches!(
            parse_port_range("80-20"),
            Err(PortError::Inverted(_))
        ));
        assert!(matches!(
            parse_port_range("http"),
            Err(PortError::NotANumber(_))
        ));
        assert_eq!(parse_port_list("80, 10000-10005").unwrap().len(), 2);
    }

    #[test]
    fn nsg_2_4_address_items() {
        assert_eq!(parse_address_item("*", false).unwrap().0, AddressItem::Any);
        assert_eq!(
            parse_address_item("10.0.0.5/24", false).unwrap(),
            (AddressItem::Prefix("10.0.0.0/24".parse().unwrap()), true)
        );
        assert_eq!(
            parse_address_item("2001:db8::/32", false).unwrap().0,
            AddressItem::Prefix("2001:db8::/32".parse().unwrap())
        );
        assert_eq!(
            parse_address_item("VIRTUAL_NETWORK", false).unwrap().0,
            AddressItem::ServiceTag("VirtualNetwork".into())
        );
        assert_eq!(
            parse_address_item("Storage.WestUS", false).unwrap().0,
            AddressItem::ServiceTag("Storage.WestUS".into())
        );
        assert!(parse_address_item("789", false).is_err());
        assert!(parse_address_item("10.0.0.1-10.0.0.9", false).is_err());
        assert!(matches!(
            parse_address_item("10.0.0.1-10.0.0.9", true).unwrap().0,
            AddressItem::Range(..)
        ));
        assert!(parse_address_item("10.0.0.9-10.0.0.1", true).is_err());
        assert!(parse_address_item("10.0.0.0/33", false).is_err());
    }

    #[test]
    fn nsg_2_2_protocol_numbers() {
        assert_eq!(Protocol::parse("TCP"), Some(Protocol::Tcp));
        assert_eq!(Protocol::Icmp.number(true), Some(58));
        assert_eq!(Protocol::Icmp.number(false), Some(1));
        assert_eq!(Protocol::parse("Any"), Some(Protocol::Any));
        assert_eq!(Protocol::parse("gre"), None);
    }
}
