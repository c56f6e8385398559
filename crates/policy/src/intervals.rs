//! Sets of integers as sorted, disjoint inclusive `u128` ranges, and their conversion to and
//! from CIDR lists. One type serves the compile-time prefix arithmetic of [`crate::prefixes`]
//! (tags, `Internet` as a difference, ranges → CIDRs) and the header spaces of
//! `palisade-analyze` (addresses, protocols and ports as fields of a flow box). Addresses are
//! `u128` values of one [`Family`], IPv4 in the low 32 bits.

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

pub const V4_MAX: u128 = u32::MAX as u128;
pub const V6_MAX: u128 = u128::MAX;

/// Sorted, disjoint, non-adjacent inclusive intervals.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct IntervalSet(Vec<(u128, u128)>);

impl IntervalSet {
    pub fn empty() -> IntervalSet {
        IntervalSet(vec![])
    }
    pub fn range(lo: u128, hi: u128) -> IntervalSet {
        if lo > hi {
            return IntervalSet::empty();
        }
        IntervalSet(vec![(lo, hi)])
    }
    pub fn point(v: u128) -> IntervalSet {
        IntervalSet(vec![(v, v)])
    }
    /// Normalise any list of inclusive ranges (empty ones dropped).
    pub fn from_ranges(mut r: Vec<(u128, u128)>) -> IntervalSet {
        r.retain(|(a, b)| a <= b);
        r.sort_unstable();
        let mut out: Vec<(u128, u128)> = Vec::with_capacity(r.len());
        for (a, b) in r {
            if let Some(last) = out.last_mut() {
                if a <= last.1.saturating_add(1) {
                    last.1 = last.1.max(b);
                    continue;
                }
            }
            out.push((a, b));
        }
        IntervalSet(out)
    }
    pub fn ranges(&self) -> &[(u128, u128)] {
        &self.0
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
    pub fn first(&self) -> Option<u128> {
        self.0.first().map(|r| r.0)
    }
    pub fn contains(&self, v: u128) -> bool {
        let i = self.0.partition_point(|r| r.1 < v);
        i < self.0.len() && self.0[i].0 <= v
    }
    pub fn covers(&self, lo: u128, hi: u128) -> bool {
        let i = self.0.partition_point(|r| r.1 < lo);
        i < self.0.len() && self.0[i].0 <= lo && hi <= self.0[i].1
    }
    /// Number of values (saturating).
    pub fn size(&self) -> u128 {
        self.0
            .iter()
            .fold(0u128, |s, (a, b)| s.saturating_add(b - a).saturating_add(1))
    }
    pub fn intersect(&self, o: &IntervalSet) -> IntervalSet {
        let (mut i, mut j) = (0, 0);
        let mut out = vec![];
        while i < self.0.len() && j < o.0.len() {
            let (a1, b1) = self.0[i];
            let (a2, b2) = o.0[j];
            let lo = a1.max(a2);
            let hi = b1.min(b2);
            if lo <= hi {
                out.push((lo, hi));
            }
            if b1 < b2 {
                i += 1;
            } else {
                j += 1;
            }
        }
        IntervalSet(out)
    }
    pub fn intersects(&self, o: &IntervalSet) -> bool {
        let (mut i, mut j) = (0, 0);
        while i < self.0.len() && j < o.0.len() {
            let (a1, b1) = self.0[i];
            let (a2, b2) = o.0[j];
            if a1.max(a2) <= b1.min(b2) {
                return true;
            }
            if b1 < b2 {
                i += 1;
            } else {
                j += 1;
            }
        }
        false
    }
    pub fn subtract(&self, o: &IntervalSet) -> IntervalSet {
        let mut out = vec![];
        let mut j = 0;
        for &(a, b) in &self.0 {
            let mut lo = a;
            while j < o.0.len() && o.0[j].1 < lo {
                j += 1;
            }
            let mut k = j;
            let mut done = false;
            while k < o.0.len() && o.0[k].0 <= b {
                let (c, d) = o.0[k];
                if c > lo {
                    out.push((lo, c - 1));
                }
                if d >= b {
                    done = true;
                    break;
                }
                lo = d + 1;
                k += 1;
            }
            if !done {
                out.push((lo, b));
            }
        }
        IntervalSet(out)
    }
    pub fn union(&self, o: &IntervalSet) -> IntervalSet {
        let mut r = self.0.clone();
        r.extend_from_slice(&o.0);
        IntervalSet::from_ranges(r)
    }
    pub fn is_subset(&self, o: &IntervalSet) -> bool {
        self.subtract(o).is_empty()
    }
}

/// An address family: PAL-5.1, a packet only matches prefixes of its own family.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    pub fn of(a: IpAddr) -> Family {
        if a.is_ipv4() {
            Family::V4
        } else {
            Family::V6
        }
    }
    pub fn max(self) -> u128 {
        match self {
            Family::V4 => V4_MAX,
            Family::V6 => V6_MAX,
        }
    }
    pub fn index(self) -> usize {
        self as usize
    }
    pub fn addr(self, v: u128) -> IpAddr {
        match self {
            Family::V4 => IpAddr::V4(Ipv4Addr::from(v as u32)),
            Family::V6 => IpAddr::V6(Ipv6Addr::from(v)),
        }
    }
}

pub fn addr_value(a: IpAddr) -> u128 {
    match a {
        IpAddr::V4(v) => u32::from(v) as u128,
        IpAddr::V6(v) => u128::from(v),
    }
}

/// The inclusive integer range of a prefix.
pub fn prefix_range(p: &IpNet) -> (u128, u128) {
    match p {
        IpNet::V4(n) => (
            u32::from(n.network()) as u128,
            u32::from(n.broadcast()) as u128,
        ),
        IpNet::V6(n) => (u128::from(n.network()), u128::from(n.broadcast())),
    }
}

/// Addresses of one family in a prefix list.
pub fn prefix_set(list: &[IpNet], f: Family) -> IntervalSet {
    IntervalSet::from_ranges(
        list.iter()
            .filter(|p| Family::of(p.addr()) == f)
            .map(prefix_range)
            .collect(),
    )
}

/// The smallest list of CIDRs covering exactly the set.
pub fn to_prefixes(set: &IntervalSet, f: Family) -> Vec<IpNet> {
    let bits: u32 = match f {
        Family::V4 => 32,
        Family::V6 => 128,
    };
    let mut out = vec![];
    for &(a, b) in set.ranges() {
        let mut lo = a;
        loop {
            // Largest block aligned at lo and inside [lo, b].
            let align = if lo == 0 {
                bits
            } else {
                lo.trailing_zeros().min(bits)
            };
            let mut size = align;
            while size > 0 {
                let span = if size >= 128 {
                    u128::MAX
                } else {
                    (1u128 << size) - 1
                };
                if lo.checked_add(span).is_some_and(|e| e <= b) {
                    break;
                }
                size -= 1;
            }
            let len = (bits - size) as u8;
            out.push(match f {
                Family::V4 => {
                    IpNet::V4(Ipv4Net::new(Ipv4Addr::from(lo as u32), len).expect("valid length"))
                }
                Family::V6 => {
                    IpNet::V6(Ipv6Net::new(Ipv6Addr::from(lo), len).expect("valid length"))
                }
            });
            let span = if size >= 128 {
                u128::MAX
            } else {
                (1u128 << size) - 1
            };
            let end = lo + span;
            if end >= b {
                break;
            }
            lo = end + 1;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interval_ops() {
        let a = IntervalSet::from_ranges(vec![(0, 10), (20, 30)]);
        let b = IntervalSet::from_ranges(vec![(5, 25)]);
        assert_eq!(a.intersect(&b).ranges(), &[(5, 10), (20, 25)]);
        assert_eq!(a.subtract(&b).ranges(), &[(0, 4), (26, 30)]);
        assert_eq!(a.union(&b).ranges(), &[(0, 30)]);
        assert!(a.contains(25) && !a.contains(15));
        let full = IntervalSet::range(0, u128::MAX);
        assert!(full.subtract(&full).is_empty());
        assert_eq!(
            full.subtract(&IntervalSet::point(0)).ranges(),
            &[(1, u128::MAX)]
        );
    }

    #[test]
    fn prefixes_round_trip() {
        let s = IntervalSet::range(10, 300);
        let p = to_prefixes(&s, Family::V4);
        let back = prefix_set(&p, Family::V4);
        assert_eq!(back, s);
        let all = to_prefixes(&IntervalSet::range(0, V6_MAX), Family::V6);
        assert_eq!(all, vec!["::/0".parse::<IpNet>().unwrap()]);
        let all4 = to_prefixes(&IntervalSet::range(0, V4_MAX), Family::V4);
        assert_eq!(all4, vec!["0.0.0.0/0".parse::<IpNet>().unwrap()]);
    }
}
