//! Header spaces: exact sets of flows as unions of disjoint boxes.
//!
//! A flow is (protocol, source address, destination address, source port, destination port) of
//! one family (PAL-5.1: a packet only matches prefixes of its own family). Every field is an
//! [`IntervalSet`] of integers (addresses as `u128`, IPv4 in the low 32 bits), a [`NBox`] is the
//! product of one set per field and a space is a union of pairwise disjoint boxes. Intersection
//! and subtraction are exact; nothing is sampled.
//!
//! Ports only mean something for TCP and UDP (NSG-2.2): a rule's box ([`L4Set::rule`]) keeps its
//! port restriction for protocols 6 and 17 only and spans every port for the other protocols, so
//! a set never distinguishes flows the engine cannot tell apart.

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use palisade_model::PortRange;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

pub const PROTO_MAX: u128 = 255;
pub const PORT_MAX: u128 = 65535;
pub const V4_MAX: u128 = u32::MAX as u128;
pub const V6_MAX: u128 = u128::MAX;
const TCP: u128 = 6;
const UDP: u128 = 17;

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

/// A product of `N` interval sets; empty when any field is empty.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NBox<const N: usize>(pub [IntervalSet; N]);

impl<const N: usize> NBox<N> {
    pub fn is_empty(&self) -> bool {
        self.0.iter().any(IntervalSet::is_empty)
    }
    pub fn intersect(&self, o: &NBox<N>) -> Option<NBox<N>> {
        let out: [IntervalSet; N] = std::array::from_fn(|k| self.0[k].intersect(&o.0[k]));
        if out.iter().any(IntervalSet::is_empty) {
            return None;
        }
        Some(NBox(out))
    }
    pub fn intersects(&self, o: &NBox<N>) -> bool {
        (0..N).all(|k| self.0[k].intersects(&o.0[k]))
    }
    /// `self − o` as at most `N` disjoint boxes.
    pub fn subtract(&self, o: &NBox<N>, out: &mut Vec<NBox<N>>) {
        if !self.intersects(o) {
            out.push(self.clone());
            return;
        }
        let mut cur = self.clone();
        for k in 0..N {
            let outside = cur.0[k].subtract(&o.0[k]);
            if !outside.is_empty() {
                let mut piece = cur.clone();
                piece.0[k] = outside;
                out.push(piece);
            }
            cur.0[k] = cur.0[k].intersect(&o.0[k]);
        }
    }
    pub fn contains(&self, v: &[u128; N]) -> bool {
        (0..N).all(|k| self.0[k].contains(v[k]))
    }
}

/// Union of disjoint boxes.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct BoxSet<const N: usize> {
    pub boxes: Vec<NBox<N>>,
}

impl<const N: usize> BoxSet<N> {
    pub fn empty() -> Self {
        BoxSet { boxes: vec![] }
    }
    pub fn of(b: NBox<N>) -> Self {
        if b.is_empty() {
            return Self::empty();
        }
        BoxSet { boxes: vec![b] }
    }
    pub fn is_empty(&self) -> bool {
        self.boxes.is_empty()
    }
    pub fn intersect(&self, o: &Self) -> Self {
        let mut boxes = vec![];
        for a in &self.boxes {
            for b in &o.boxes {
                if let Some(c) = a.intersect(b) {
                    boxes.push(c);
                }
            }
        }
        BoxSet { boxes }
    }
    pub fn intersects(&self, o: &Self) -> bool {
        self.boxes
            .iter()
            .any(|a| o.boxes.iter().any(|b| a.intersects(b)))
    }
    pub fn subtract(&self, o: &Self) -> Self {
        let mut cur = self.boxes.clone();
        for b in &o.boxes {
            let mut next = Vec::with_capacity(cur.len());
            for a in &cur {
                a.subtract(b, &mut next);
            }
            cur = next;
            if cur.is_empty() {
                break;
            }
        }
        BoxSet { boxes: cur }
    }
    /// Disjoint union: `self ∪ (o − self)`.
    pub fn union(&self, o: &Self) -> Self {
        let mut out = self.clone();
        out.boxes.extend(o.subtract(self).boxes);
        out
    }
    pub fn contains(&self, v: &[u128; N]) -> bool {
        self.boxes.iter().any(|b| b.contains(v))
    }
    /// Merge boxes that differ in one field only (a cosmetic, exact compaction).
    pub fn compact(&mut self) {
        loop {
            let mut merged = false;
            'outer: for i in 0..self.boxes.len() {
                for j in i + 1..self.boxes.len() {
                    let diff: Vec<usize> = (0..N)
                        .filter(|k| self.boxes[i].0[*k] != self.boxes[j].0[*k])
                        .collect();
                    if diff.len() <= 1 {
                        let b = self.boxes.swap_remove(j);
                        if let Some(&k) = diff.first() {
                            self.boxes[i].0[k] = self.boxes[i].0[k].union(&b.0[k]);
                        }
                        merged = true;
                        break 'outer;
                    }
                }
            }
            if !merged {
                break;
            }
        }
        self.boxes.sort();
    }
}

/// (protocol, source port, destination port).
pub type L4Box = NBox<3>;
/// A set of (protocol, source port, destination port) triples.
pub type L4Set = BoxSet<3>;

fn ports(list: &[PortRange]) -> IntervalSet {
    IntervalSet::from_ranges(
        list.iter()
            .map(|p| (p.first as u128, p.last as u128))
            .collect(),
    )
}

impl L4Set {
    pub fn full() -> L4Set {
        L4Set::of(NBox([
            IntervalSet::range(0, PROTO_MAX),
            IntervalSet::range(0, PORT_MAX),
            IntervalSet::range(0, PORT_MAX),
        ]))
    }
    /// A rule's protocol × ports; ports restrict TCP and UDP only (NSG-2.2).
    pub fn rule(proto: Option<u8>, src_ports: &[PortRange], dst_ports: &[PortRange]) -> L4Set {
        let protos = match proto {
            Some(p) => IntervalSet::point(p as u128),
            None => IntervalSet::range(0, PROTO_MAX),
        };
        let tcp_udp = IntervalSet::from_ranges(vec![(TCP, TCP), (UDP, UDP)]);
        let with_ports = protos.intersect(&tcp_udp);
        let without = protos.subtract(&tcp_udp);
        let (sp, dp) = (ports(src_ports), ports(dst_ports));
        let mut boxes = vec![];
        let full = IntervalSet::range(0, PORT_MAX);
        if sp.is_empty() || dp.is_empty() {
            // ClassifierRule::matches: a rule with an empty port list never matches.
            return L4Set::empty();
        }
        for b in [
            NBox([with_ports, sp, dp]),
            NBox([without, full.clone(), full]),
        ] {
            if !b.is_empty() {
                boxes.push(b);
            }
        }
        L4Set { boxes }
    }
    /// Flows of this set whose destination port would be `port` after translation: the same
    /// protocols and source ports, any destination port (DNAT, FW-4).
    pub fn at_destination_port(&self, port: u16) -> L4Set {
        let mut out = L4Set::empty();
        for b in &self.boxes {
            if b.0[2].contains(port as u128) {
                let mut c = b.clone();
                c.0[2] = IntervalSet::range(0, PORT_MAX);
                out = out.union(&L4Set::of(c));
            }
        }
        out
    }
}

/// Address family of a box.
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

/// A box of the full header space: family × source × destination × (protocol, ports).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct HeaderBox {
    pub family: Family,
    /// protocol, source, destination, source port, destination port.
    pub fields: NBox<5>,
}

/// A union of disjoint boxes over both families.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HeaderSpace {
    pub v4: BoxSet<5>,
    pub v6: BoxSet<5>,
}

impl HeaderSpace {
    pub fn empty() -> HeaderSpace {
        HeaderSpace::default()
    }
    /// Every flow of both families.
    pub fn all() -> HeaderSpace {
        let mut h = HeaderSpace::empty();
        for f in [Family::V4, Family::V6] {
            h.add(
                f,
                IntervalSet::range(0, f.max()),
                IntervalSet::range(0, f.max()),
                &L4Set::full(),
            );
        }
        h
    }
    fn fam(&self, f: Family) -> &BoxSet<5> {
        match f {
            Family::V4 => &self.v4,
            Family::V6 => &self.v6,
        }
    }
    fn fam_mut(&mut self, f: Family) -> &mut BoxSet<5> {
        match f {
            Family::V4 => &mut self.v4,
            Family::V6 => &mut self.v6,
        }
    }
    /// Add `src × dst × l4` (union).
    pub fn add(&mut self, f: Family, src: IntervalSet, dst: IntervalSet, l4: &L4Set) {
        let mut add = BoxSet::empty();
        for b in &l4.boxes {
            let [p, sp, dp] = b.0.clone();
            let nb = NBox([p, src.clone(), dst.clone(), sp, dp]);
            if !nb.is_empty() {
                add.boxes.push(nb);
            }
        }
        let cur = self.fam_mut(f);
        *cur = cur.union(&add);
    }
    /// Flows from `src` to `dst` (prefix lists; any protocol and port).
    pub fn between(src: &[IpNet], dst: &[IpNet]) -> HeaderSpace {
        let mut h = HeaderSpace::empty();
        for f in [Family::V4, Family::V6] {
            h.add(f, prefix_set(src, f), prefix_set(dst, f), &L4Set::full());
        }
        h
    }
    pub fn is_empty(&self) -> bool {
        self.v4.is_empty() && self.v6.is_empty()
    }
    pub fn intersect(&self, o: &HeaderSpace) -> HeaderSpace {
        HeaderSpace {
            v4: self.v4.intersect(&o.v4),
            v6: self.v6.intersect(&o.v6),
        }
    }
    pub fn subtract(&self, o: &HeaderSpace) -> HeaderSpace {
        HeaderSpace {
            v4: self.v4.subtract(&o.v4),
            v6: self.v6.subtract(&o.v6),
        }
    }
    pub fn union(&self, o: &HeaderSpace) -> HeaderSpace {
        HeaderSpace {
            v4: self.v4.union(&o.v4),
            v6: self.v6.union(&o.v6),
        }
    }
    /// Does the space hold this flow (protocol number, addresses, ports)?
    pub fn contains(&self, proto: u8, src: IpAddr, dst: IpAddr, sport: u16, dport: u16) -> bool {
        let f = Family::of(dst);
        if Family::of(src) != f {
            return false;
        }
        self.fam(f).contains(&[
            proto as u128,
            addr_value(src),
            addr_value(dst),
            sport as u128,
            dport as u128,
        ])
    }
    pub fn boxes(&self) -> impl Iterator<Item = HeaderBox> + '_ {
        self.v4
            .boxes
            .iter()
            .map(|b| HeaderBox {
                family: Family::V4,
                fields: b.clone(),
            })
            .chain(self.v6.boxes.iter().map(|b| HeaderBox {
                family: Family::V6,
                fields: b.clone(),
            }))
    }
}

/// `Tcp`, `Udp`, `Icmp`, `Esp`, `Ah`, or the number.
pub fn protocol_name(p: u128, f: Family) -> String {
    match (p, f) {
        (6, _) => "Tcp".into(),
        (17, _) => "Udp".into(),
        (1, Family::V4) | (58, Family::V6) => "Icmp".into(),
        (50, _) => "Esp".into(),
        (51, _) => "Ah".into(),
        _ => format!("proto {p}"),
    }
}

/// `Tcp,Udp`, `*`, `Tcp,Icmp,proto 0-5`, ... for a protocol set.
pub fn protocols_text(set: &IntervalSet, f: Family) -> String {
    if set.covers(0, PROTO_MAX) {
        return "*".into();
    }
    let named: Vec<u128> = match f {
        Family::V4 => vec![6, 17, 1, 50, 51],
        Family::V6 => vec![6, 17, 58, 50, 51],
    };
    let mut parts: Vec<String> = named
        .iter()
        .filter(|p| set.contains(**p))
        .map(|p| protocol_name(*p, f))
        .collect();
    let rest = set.subtract(&IntervalSet::from_ranges(
        named.iter().map(|p| (*p, *p)).collect(),
    ));
    if !rest.is_empty() {
        parts.push(format!("other protocols ({})", ranges_text(&rest)));
    }
    parts.join(",")
}

/// `80`, `80-81,443`, `*`.
pub fn ranges_text(set: &IntervalSet) -> String {
    if set.covers(0, PORT_MAX) && set.ranges().len() == 1 {
        return "*".into();
    }
    set.ranges()
        .iter()
        .map(|(a, b)| {
            if a == b {
                a.to_string()
            } else {
                format!("{a}-{b}")
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}

impl fmt::Display for L4Set {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self
            .boxes
            .iter()
            .map(|b| l4_box_text(b, Family::V4))
            .collect();
        write!(f, "{}", parts.join("; "))
    }
}

/// `Tcp,Udp :443` / `Icmp` / `Tcp :80 from ports 1024-65535`.
pub fn l4_box_text(b: &L4Box, fam: Family) -> String {
    let protos = protocols_text(&b.0[0], fam);
    let tcp_udp = IntervalSet::from_ranges(vec![(TCP, TCP), (UDP, UDP)]);
    if !b.0[0].intersects(&tcp_udp) {
        return protos;
    }
    let mut s = format!("{protos} :{}", ranges_text(&b.0[2]));
    if !b.0[1].covers(0, PORT_MAX) {
        s.push_str(&format!(" from ports {}", ranges_text(&b.0[1])));
    }
    s
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
    fn box_subtract_is_exact() {
        let a = NBox([IntervalSet::range(0, 9), IntervalSet::range(0, 9)]);
        let b = NBox([IntervalSet::range(3, 5), IntervalSet::range(4, 20)]);
        let mut out = vec![];
        a.subtract(&b, &mut out);
        for x in 0..12u128 {
            for y in 0..12u128 {
                let want = a.contains(&[x, y]) && !b.contains(&[x, y]);
                let n = out.iter().filter(|o| o.contains(&[x, y])).count();
                assert_eq!(n, want as usize, "({x},{y})");
            }
        }
    }

    #[test]
    fn nsg_2_2_ports_restrict_tcp_and_udp_only() {
        let r = L4Set::rule(None, &[PortRange::ANY], &[PortRange::single(22)]);
        assert!(r.contains(&[6, 1, 22]) && !r.contains(&[6, 1, 23]));
        assert!(r.contains(&[1, 0, 0]) && r.contains(&[50, 7, 9]));
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

    #[test]
    fn header_space_ops() {
        let a = HeaderSpace::between(
            &["10.0.0.0/24".parse().unwrap()],
            &["10.0.1.0/24".parse().unwrap()],
        );
        let b = HeaderSpace::between(
            &["10.0.0.128/25".parse().unwrap()],
            &["0.0.0.0/0".parse().unwrap()],
        );
        let d = a.subtract(&b);
        let s = |x: &str| x.parse::<IpAddr>().unwrap();
        assert!(d.contains(6, s("10.0.0.5"), s("10.0.1.1"), 1, 2));
        assert!(!d.contains(6, s("10.0.0.200"), s("10.0.1.1"), 1, 2));
        assert!(a
            .intersect(&b)
            .contains(6, s("10.0.0.200"), s("10.0.1.1"), 1, 2));
        assert!(d
            .union(&b)
            .contains(17, s("10.0.0.200"), s("8.8.8.8"), 1, 2));
        assert!(HeaderSpace::empty().is_empty() && !HeaderSpace::all().is_empty());
    }
}
