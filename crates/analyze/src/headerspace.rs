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

use ipnet::IpNet;
use palisade_model::PortRange;
pub use palisade_policy::intervals::{
    addr_value, prefix_range, prefix_set, to_prefixes, Family, IntervalSet, V4_MAX, V6_MAX,
};
use std::fmt;
use std::net::IpAddr;

pub const PROTO_MAX: u128 = 255;
pub const PORT_MAX: u128 = 65535;
const TCP: u128 = 6;
const UDP: u128 = 17;

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
