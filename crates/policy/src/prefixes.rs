//! Prefix-set arithmetic used at compile time: union, difference and conversion between CIDR
//! lists and address intervals. `Internet` (NSG-8.3) is "global unicast minus the virtual
//! network minus special-purpose ranges", which needs set difference; ranges `a-b` (FW-5) need
//! interval-to-CIDR conversion.

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// An inclusive interval of one family's address space.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Interval {
    v6: bool,
    lo: u128,
    hi: u128,
}

fn interval(n: &IpNet) -> Interval {
    match n {
        IpNet::V4(p) => Interval {
            v6: false,
            lo: u32::from(p.network()) as u128,
            hi: u32::from(p.broadcast()) as u128,
        },
        IpNet::V6(p) => Interval {
            v6: true,
            lo: u128::from(p.network()),
            hi: u128::from(p.broadcast()),
        },
    }
}

fn merged(mut v: Vec<Interval>) -> Vec<Interval> {
    v.sort();
    let mut out: Vec<Interval> = Vec::with_capacity(v.len());
    for i in v {
        if let Some(last) = out.last_mut() {
            if last.v6 == i.v6 && i.lo <= last.hi.saturating_add(1) {
                last.hi = last.hi.max(i.hi);
                continue;
            }
        }
        out.push(i);
    }
    out
}

/// The smallest CIDR list covering exactly `[lo, hi]` of one family.
fn to_cidrs(i: Interval, out: &mut Vec<IpNet>) {
    let bits: u32 = if i.v6 { 128 } else { 32 };
    let mut lo = i.lo;
    loop {
        // Largest block aligned at `lo` that does not pass `hi`.
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
            if lo.checked_add(span).is_some_and(|end| end <= i.hi) {
                break;
            }
            size -= 1;
        }
        let len = (bits - size) as u8;
        out.push(if i.v6 {
            IpNet::V6(Ipv6Net::new(Ipv6Addr::from(lo), len).expect("length within 0..=128"))
        } else {
            IpNet::V4(Ipv4Net::new(Ipv4Addr::from(lo as u32), len).expect("length within 0..=32"))
        });
        let span = if size >= 128 {
            u128::MAX
        } else {
            (1u128 << size) - 1
        };
        match lo.checked_add(span) {
            Some(end) if end < i.hi => lo = end + 1,
            _ => break,
        }
    }
}

/// Normalise a prefix list: merge overlaps and adjacent blocks, both families.
pub fn aggregate(prefixes: &[IpNet]) -> Vec<IpNet> {
    let mut out = vec![];
    for i in merged(prefixes.iter().map(interval).collect()) {
        to_cidrs(i, &mut out);
    }
    out
}

/// `a \ b` as a CIDR list.
pub fn difference(a: &[IpNet], b: &[IpNet]) -> Vec<IpNet> {
    let a = merged(a.iter().map(interval).collect());
    let b = merged(b.iter().map(interval).collect());
    let mut out = vec![];
    for mut cur in a {
        let mut alive = true;
        for s in b.iter().filter(|s| s.v6 == cur.v6) {
            if s.hi < cur.lo || s.lo > cur.hi {
                continue;
            }
            if s.lo > cur.lo {
                to_cidrs(
                    Interval {
                        v6: cur.v6,
                        lo: cur.lo,
                        hi: s.lo - 1,
                    },
                    &mut out,
                );
            }
            if s.hi >= cur.hi {
                alive = false;
                break;
            }
            cur.lo = s.hi + 1;
        }
        if alive {
            to_cidrs(cur, &mut out);
        }
    }
    out
}

/// The CIDRs of an inclusive address range (same family; caller checked).
pub fn range_to_cidrs(a: IpAddr, b: IpAddr) -> Vec<IpNet> {
    let i = match (a, b) {
        (IpAddr::V4(a), IpAddr::V4(b)) => Interval {
            v6: false,
            lo: u32::from(a) as u128,
            hi: u32::from(b) as u128,
        },
        (IpAddr::V6(a), IpAddr::V6(b)) => Interval {
            v6: true,
            lo: u128::from(a),
            hi: u128::from(b),
        },
        _ => return vec![],
    };
    if i.lo > i.hi {
        return vec![];
    }
    let mut out = vec![];
    to_cidrs(i, &mut out);
    out
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
    use proptest::prelude::*;

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
