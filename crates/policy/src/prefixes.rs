//! Prefix-set arithmetic used at compile time: union, difference and conversion between CIDR
//! lists and address intervals, over the interval sets of [`crate::intervals`]. `Internet`
//! (NSG-8.3) is "global unicast minus the virtual network minus special-purpose ranges", which
//! needs set difference; ranges `a-b` (FW-5) need interval-to-CIDR conversion.

use crate::intervals::{addr_value, prefix_set, to_prefixes, Family, IntervalSet};
use ipnet::IpNet;
use std::net::IpAddr;

const FAMILIES: [Family; 2] = [Family::V4, Family::V6];

/// Normalise a prefix list: merge overlaps and adjacent blocks, both families.
pub fn aggregate(prefixes: &[IpNet]) -> Vec<IpNet> {
    FAMILIES
        .iter()
        .flat_map(|f| to_prefixes(&prefix_set(prefixes, *f), *f))
        .collect()
}

/// `a \ b` as a CIDR list.
pub fn difference(a: &[IpNet], b: &[IpNet]) -> Vec<IpNet> {
    FAMILIES
        .iter()
        .flat_map(|f| to_prefixes(&prefix_set(a, *f).subtract(&prefix_set(b, *f)), *f))
        .collect()
}

/// The CIDRs of an inclusive address range (same family; caller checked).
pub fn range_to_cidrs(a: IpAddr, b: IpAddr) -> Vec<IpNet> {
    let f = Family::of(a);
    if Family::of(b) != f {
        return vec![];
    }
    to_prefixes(&IntervalSet::range(addr_value(a), addr_value(b)), f)
}

pub fn all_v4() -> IpNet {
    "0.0.0.0/0".parse().expect("literal prefix")
}

pub fn all_v6() -> IpNet {
    "::/0".parse().expect("literal prefix")
}

pub fn net(s: &str) -> IpNet {
    s.parse().expect("literal prefix")
}

pub fn contains_addr(set: &[IpNet], a: IpAddr) -> bool {
    set.iter().any(|n| n.contains(&a))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ipnet::Ipv4Net;
    use proptest::prelude::*;
    use std::net::Ipv4Addr;

    #[test]
    fn difference_splits_blocks() {
        let d = difference(&[net("10.0.0.0/8")], &[net("10.1.0.0/16")]);
        assert!(d.contains(&net("10.0.0.0/16")));
        assert!(d.contains(&net("10.128.0.0/9")));
        assert!(!d
            .iter()
            .any(|n| n.contains(&"10.1.2.3".parse::<IpAddr>().unwrap())));
        assert_eq!(aggregate(&d).len(), d.len());
    }

    #[test]
    fn whole_space_and_ranges() {
        assert_eq!(aggregate(&[all_v4()]), vec![all_v4()]);
        assert_eq!(aggregate(&[all_v6()]), vec![all_v6()]);
        let r = range_to_cidrs(
            "192.168.1.1".parse().unwrap(),
            "192.168.1.12".parse().unwrap(),
        );
        // .1/32 .2/31 .4/30 .8/30 .12/32
        assert_eq!(r.len(), 5);
    }

    proptest! {
        #[test]
        fn difference_is_exact(a in any::<u32>(), la in 0u8..=32, b in any::<u32>(), lb in 0u8..=32, probe in any::<u32>()) {
            let na = IpNet::V4(Ipv4Net::new(Ipv4Addr::from(a), la).unwrap().trunc());
            let nb = IpNet::V4(Ipv4Net::new(Ipv4Addr::from(b), lb).unwrap().trunc());
            let d = difference(&[na], &[nb]);
            let p = IpAddr::V4(Ipv4Addr::from(probe));
            prop_assert_eq!(contains_addr(&d, p), na.contains(&p) && !nb.contains(&p));
        }

        #[test]
        fn range_cidrs_are_exact(a in any::<u32>(), b in any::<u32>(), probe in any::<u32>()) {
            let (lo, hi) = (a.min(b), a.max(b));
            let r = range_to_cidrs(IpAddr::V4(lo.into()), IpAddr::V4(hi.into()));
            prop_assert_eq!(contains_addr(&r, IpAddr::V4(probe.into())), lo <= probe && probe <= hi);
            prop_assert!(contains_addr(&r, IpAddr::V4(lo.into())));
            prop_assert!(contains_addr(&r, IpAddr::V4(hi.into())));
        }
    }
}
