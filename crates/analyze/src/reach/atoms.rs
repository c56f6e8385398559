//! The address grid (atoms: every boundary any layer uses, and where each atom sits), the L4
//! atoms (protocol × ports cut at every rule boundary, held as bit sets) and the runs that give
//! each address its class in one dimension of a layer.

use crate::headerspace::{addr_value, prefix_range, Family, IntervalSet, L4Box, L4Set, NBox};
use crate::headerspace::{PORT_MAX, PROTO_MAX};
use ipnet::IpNet;
use palisade_policy::addresses::PLATFORM_ADDRESSES;
use palisade_policy::{FirewallId, NicId, Snapshot, SubnetId};
use rayon::prelude::*;
use rustc_hash::FxHashMap as HashMap;
use smallvec::{smallvec, SmallVec};

/// Classes of one dimension: `starts[i]..` has class `class[i]`.
#[derive(Debug, Default, Clone)]
pub(super) struct Runs {
    pub(super) starts: Vec<u128>,
    class: Vec<u32>,
    pub(super) rows: Vec<Vec<u64>>,
    /// Classes by row: a re-check that changes some entries reuses a class whose row exists.
    ids: HashMap<Vec<u64>, u32>,
}

impl Runs {
    /// The class rows alone: what a cell walk reads (a parallel build's worker, see `merge`).
    pub(super) fn rows_only(&self) -> Runs {
        Runs {
            rows: self.rows.clone(),
            ..Default::default()
        }
    }

    pub(super) fn build(n: usize, ranges: impl Iterator<Item = (usize, (u128, u128))>) -> Runs {
        let words = n.div_ceil(64).max(1);
        let mut ev: Vec<(u128, usize)> = vec![];
        for (e, (a, b)) in ranges {
            ev.push((a, e));
            if let Some(end) = b.checked_add(1) {
                ev.push((end, e));
            }
        }
        ev.sort_unstable();
        let mut cur = vec![0u64; words];
        let mut runs = Runs::default();
        let intern = |row: &Vec<u64>, runs: &mut Runs| runs.intern(row);
        let c0 = intern(&cur, &mut runs);
        runs.starts.push(0);
        runs.class.push(c0);
        let mut i = 0;
        while i < ev.len() {
            let pos = ev[i].0;
            while i < ev.len() && ev[i].0 == pos {
                cur[ev[i].1 / 64] ^= 1 << (ev[i].1 % 64);
                i += 1;
            }
            let c = intern(&cur, &mut runs);
            if pos == 0 {
                runs.class[0] = c;
            } else if *runs.class.last().expect("non-empty") != c {
                runs.starts.push(pos);
                runs.class.push(c);
            }
        }
        runs
    }

    fn intern(&mut self, row: &Vec<u64>) -> u32 {
        if let Some(c) = self.ids.get(row) {
            return *c;
        }
        let c = self.rows.len() as u32;
        self.rows.push(row.clone());
        self.ids.insert(row.clone(), c);
        c
    }

    /// The classes after the entries `lo..lo + at.len()` were reordered (the new entry `j` is
    /// the old entry `at[j]`, same ranges): a run's new row is its old row with the window's
    /// bits moved, so each distinct class is mapped once instead of every run being tested
    /// against every entry.
    pub(super) fn permute(&mut self, lo: usize, at: &[usize]) {
        let mut image: HashMap<u32, u32> = HashMap::default();
        let (mut starts, mut class) = (vec![], vec![]);
        for k in 0..self.class.len() {
            let c = self.class[k];
            let n = match image.get(&c) {
                Some(n) => *n,
                None => {
                    let old = &self.rows[c as usize];
                    let mut row = old.clone();
                    for (j, &i) in at.iter().enumerate() {
                        let (p, q) = (lo + j, lo + i);
                        let bit = old[q / 64] >> (q % 64) & 1;
                        row[p / 64] = row[p / 64] & !(1 << (p % 64)) | bit << (p % 64);
                    }
                    let n = self.intern(&row);
                    image.insert(c, n);
                    n
                }
            };
            if class.last() != Some(&n) {
                starts.push(self.starts[k]);
                class.push(n);
            }
        }
        self.starts = starts;
        self.class = class;
    }

    /// The classes after the entries `lo..lo + new.len()` changed from the ranges `old` to
    /// `new` (as many entries before as after), APKeep-style: only the runs those ranges meet
    /// are cut and get a row with the window's bits recomputed; every other run keeps its
    /// class, and a row seen before keeps its class id. Classes are never renumbered, so a
    /// layer's cells of untouched class pairs stay valid.
    pub(super) fn update(&mut self, lo: usize, old: &[&IntervalSet], new: &[&IntervalSet]) {
        let mut cuts: Vec<u128> = vec![];
        for set in old.iter().chain(new) {
            for &(a, b) in set.ranges() {
                cuts.push(a);
                cuts.extend(b.checked_add(1));
            }
        }
        cuts.sort_unstable();
        cuts.dedup();
        let (mut starts, mut class) = (vec![], vec![]);
        let (mut i, mut j) = (0, 0);
        let mut row: Vec<u64> = vec![];
        while i < self.starts.len() || j < cuts.len() {
            let x = match (self.starts.get(i), cuts.get(j)) {
                (Some(a), Some(b)) => *a.min(b),
                (Some(a), None) => *a,
                (None, Some(b)) => *b,
                (None, None) => break,
            };
            while i < self.starts.len() && self.starts[i] <= x {
                i += 1;
            }
            while j < cuts.len() && cuts[j] <= x {
                j += 1;
            }
            let base = self.class[i - 1];
            let b = &self.rows[base as usize];
            let bit = |r: &[u64], p: usize| r[p / 64] >> (p % 64) & 1 == 1;
            let same = new
                .iter()
                .enumerate()
                .all(|(k, set)| set.contains(x) == bit(b, lo + k));
            let c = if same {
                base
            } else {
                row.clone_from(b);
                for (k, set) in new.iter().enumerate() {
                    let p = lo + k;
                    if set.contains(x) {
                        row[p / 64] |= 1 << (p % 64);
                    } else {
                        row[p / 64] &= !(1 << (p % 64));
                    }
                }
                self.intern(&row)
            };
            if class.last() != Some(&c) {
                starts.push(x);
                class.push(c);
            }
        }
        self.starts = starts;
        self.class = class;
    }
}

/// Bit set over L4 atoms, inline up to 256 atoms: the engine makes millions of them and a heap
/// allocation each was most of the matrix time.
pub(super) type Bits = SmallVec<[u64; 4]>;

// Copy then mask in place: collecting an iterator into a `SmallVec` was a tenth of the matrix.
pub(super) fn and(a: &[u64], b: &[u64]) -> Bits {
    let mut out = Bits::from_slice(a);
    out.iter_mut().zip(b).for_each(|(x, y)| *x &= y);
    out
}
pub(super) fn zero(a: &[u64]) -> bool {
    a.iter().all(|x| *x == 0)
}

/// The (protocol, source port, destination port) space cut at every boundary a rule uses: each
/// L4 set of the engine is a union of these atoms, held as a bit set, so set operations on
/// protocols and ports are word operations (atomic predicates for the L4 fields).
#[derive(Clone)]
pub(super) struct L4Atoms {
    pub(super) protos: Vec<u128>,
    pub(super) sports: Vec<u128>,
    pub(super) dports: Vec<u128>,
    /// (proto interval, source-port interval, destination-port interval); the port intervals
    /// are `usize::MAX` for protocols without ports.
    pub(super) atoms: Vec<(usize, usize, usize)>,
    pub(super) index: HashMap<(usize, usize, usize), usize>,
    pub(super) words: usize,
    full: Bits,
}

/// Adds the boundaries of `set` to `cuts` (protocol, source port, destination port).
pub(super) fn push_l4_cuts(cuts: &mut [Vec<u128>; 3], set: &L4Set) {
    for b in &set.boxes {
        for (c, dim) in cuts.iter_mut().zip(&b.0) {
            for &(a, z) in dim.ranges() {
                c.push(a);
                c.push(z + 1);
            }
        }
    }
}

fn cut_list(mut v: Vec<u128>, max: u128) -> Vec<u128> {
    v.push(0);
    v.retain(|x| *x <= max);
    v.sort_unstable();
    v.dedup();
    v
}

fn interval(cuts: &[u128], v: u128) -> usize {
    cuts.partition_point(|c| *c <= v) - 1
}

fn bounds(cuts: &[u128], i: usize, max: u128) -> (u128, u128) {
    (cuts[i], cuts.get(i + 1).map(|c| c - 1).unwrap_or(max))
}

impl L4Atoms {
    pub(super) fn build<'a>(sets: impl Iterator<Item = &'a L4Set>) -> L4Atoms {
        let mut cuts = [vec![], vec![], vec![]];
        for set in sets {
            push_l4_cuts(&mut cuts, set);
        }
        L4Atoms::from_cuts(cuts)
    }

    /// The atoms cut at `cuts` (protocol, source port, destination port boundaries, in any
    /// order and with repeats): what [`L4Atoms::build`] makes of the sets they came from.
    pub(super) fn from_cuts([mut p, sp, dp]: [Vec<u128>; 3]) -> L4Atoms {
        p.extend([6, 7, 17, 18]);
        let protos = cut_list(p, PROTO_MAX);
        let sports = cut_list(sp, PORT_MAX);
        let dports = cut_list(dp, PORT_MAX);
        let mut atoms = vec![];
        for pi in 0..protos.len() {
            let (lo, _) = bounds(&protos, pi, PROTO_MAX);
            if lo == 6 || lo == 17 {
                for si in 0..sports.len() {
                    for di in 0..dports.len() {
                        atoms.push((pi, si, di));
                    }
                }
            } else {
                atoms.push((pi, usize::MAX, usize::MAX));
            }
        }
        let index = atoms.iter().enumerate().map(|(i, a)| (*a, i)).collect();
        let words = atoms.len().div_ceil(64);
        let mut full: Bits = smallvec![0u64; words];
        for i in 0..atoms.len() {
            full[i / 64] |= 1 << (i % 64);
        }
        L4Atoms {
            full,
            protos,
            sports,
            dports,
            atoms,
            index,
            words,
        }
    }
    pub(super) fn atom_of(&self, p: u128, sp: u128, dp: u128) -> usize {
        let pi = interval(&self.protos, p);
        let lo = self.protos[pi];
        let key = if lo == 6 || lo == 17 {
            (pi, interval(&self.sports, sp), interval(&self.dports, dp))
        } else {
            (pi, usize::MAX, usize::MAX)
        };
        self.index[&key]
    }
    /// The lowest (protocol, source port, destination port) of an atom: what `atom_box` holds,
    /// without building its interval sets (this ran once per atom and rule).
    fn first_point(&self, i: usize) -> [u128; 3] {
        let (pi, si, di) = self.atoms[i];
        let low = |cuts: &[u128], k: usize| if k == usize::MAX { 0 } else { cuts[k] };
        [
            self.protos[pi],
            low(&self.sports, si),
            low(&self.dports, di),
        ]
    }
    fn atom_box(&self, i: usize) -> L4Box {
        let (pi, si, di) = self.atoms[i];
        let (a, z) = bounds(&self.protos, pi, PROTO_MAX);
        let port = |cuts: &[u128], k: usize| {
            if k == usize::MAX {
                IntervalSet::range(0, PORT_MAX)
            } else {
                let (x, y) = bounds(cuts, k, PORT_MAX);
                IntervalSet::range(x, y)
            }
        };
        NBox([
            IntervalSet::range(a, z),
            port(&self.sports, si),
            port(&self.dports, di),
        ])
    }
    /// Is every boundary of the set already a cut (so the set is a union of atoms)?
    pub(super) fn aligned(&self, set: &L4Set) -> bool {
        let ok = |cuts: &[u128], ranges: &[(u128, u128)], max: u128| {
            ranges.iter().all(|&(a, z)| {
                cuts.binary_search(&a).is_ok() && (z == max || cuts.binary_search(&(z + 1)).is_ok())
            })
        };
        set.boxes.iter().all(|b| {
            ok(&self.protos, b.0[0].ranges(), PROTO_MAX)
                && ok(&self.sports, b.0[1].ranges(), PORT_MAX)
                && ok(&self.dports, b.0[2].ranges(), PORT_MAX)
        })
    }
    pub(super) fn bits(&self, set: &L4Set) -> Bits {
        let mut out: Bits = smallvec![0u64; self.words];
        for i in 0..self.atoms.len() {
            if set.contains(&self.first_point(i)) {
                out[i / 64] |= 1 << (i % 64);
            }
        }
        out
    }
    pub(super) fn full(&self) -> Bits {
        self.full.clone()
    }
    pub(super) fn set(&self, bits: &[u64]) -> L4Set {
        let mut boxes = vec![];
        for i in 0..self.atoms.len() {
            if bits[i / 64] >> (i % 64) & 1 == 1 {
                boxes.push(self.atom_box(i));
            }
        }
        let mut s = L4Set { boxes };
        s.compact();
        s
    }
    /// The flows whose destination port becomes `port` (DNAT): any destination port of an atom
    /// whose own destination-port interval holds `port`.
    pub(super) fn at_dport(&self, bits: &[u64], port: u16) -> Bits {
        let di = interval(&self.dports, port as u128);
        let mut out: Bits = smallvec![0u64; self.words];
        for (i, &(pi, si, d)) in self.atoms.iter().enumerate() {
            let src = if d == usize::MAX {
                i
            } else {
                self.index[&(pi, si, di)]
            };
            if bits[src / 64] >> (src % 64) & 1 == 1 {
                out[i / 64] |= 1 << (i % 64);
            }
        }
        out
    }
}

/// Where an atom sits.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct AtomLoc {
    pub(super) subnet: Option<SubnetId>,
    pub(super) nic: Option<NicId>,
    pub(super) in_vnet: bool,
    pub(super) platform: bool,
    pub(super) frontend: Option<FirewallId>,
}

#[derive(Clone)]
pub(super) struct Grid {
    pub(super) family: Family,
    pub(super) starts: Vec<u128>,
    pub(super) loc: Vec<AtomLoc>,
}

impl Grid {
    /// The atoms of one family cut at `cuts`, and where each sits.
    /// `parallel`: sorted on the pool (the IPv4 boundaries are ≈ 800 k values at 500 spokes,
    /// sorted while the other core idled).
    pub(super) fn new(snap: &Snapshot, f: Family, cuts: &[IpNet], parallel: bool) -> Grid {
        let mut starts: Vec<u128> = vec![0];
        for p in cuts.iter().filter(|p| Family::of(p.addr()) == f) {
            let (a, b) = prefix_range(p);
            starts.push(a);
            if b < f.max() {
                starts.push(b + 1);
            }
        }
        if parallel {
            starts.par_sort_unstable();
        } else {
            starts.sort_unstable();
        }
        starts.dedup();
        let platform: Vec<u128> = PLATFORM_ADDRESSES.iter().map(|a| addr_value(*a)).collect();
        let mut g = Grid {
            family: f,
            loc: vec![],
            starts,
        };
        g.loc = (0..g.len())
            .map(|i| {
                let a = g.starts[i];
                let single = g.end(i) == a;
                let ip = f.addr(a);
                let l = snap.locate(ip);
                AtomLoc {
                    subnet: l.subnet,
                    nic: if single { l.nic } else { None },
                    in_vnet: snap.in_virtual_network(ip),
                    platform: single && platform.contains(&a),
                    frontend: if single {
                        snap.firewall_frontend(ip)
                    } else {
                        None
                    },
                }
            })
            .collect();
        g
    }
    pub(super) fn atom_of(&self, v: u128) -> usize {
        self.starts.partition_point(|s| *s <= v) - 1
    }
    pub(super) fn end(&self, a: usize) -> u128 {
        self.starts
            .get(a + 1)
            .map(|s| s - 1)
            .unwrap_or(self.family.max())
    }
    pub(super) fn len(&self) -> usize {
        self.starts.len()
    }
    /// The atoms meeting a set, in order.
    pub(super) fn atoms_within(&self, set: &IntervalSet) -> Vec<usize> {
        let mut v: Vec<usize> = vec![];
        for &(a, b) in set.ranges() {
            let first = self.atom_of(a).max(v.last().map_or(0, |l| l + 1));
            v.extend(first..=self.atom_of(b));
        }
        v
    }
}

/// The class of every atom (given by its first address) in one dimension of a layer.
pub(super) fn classes_over(runs: &Runs, starts: &[u128]) -> Vec<u32> {
    let mut out = Vec::with_capacity(starts.len());
    let mut j = 0;
    for &a in starts {
        while j + 1 < runs.starts.len() && runs.starts[j + 1] <= a {
            j += 1;
        }
        out.push(runs.class[j]);
    }
    out
}

/// Every address boundary the snapshot's layers use.
pub fn cuts(snap: &Snapshot) -> Vec<IpNet> {
    let mut out: Vec<IpNet> = vec![];
    for (_, s) in snap.subnets() {
        out.extend(s.prefixes.iter().copied());
        for r in &s.routes.routes {
            out.extend(r.address_prefix.iter().copied());
        }
    }
    for v in &snap.network.virtual_networks {
        out.extend(v.address_space.iter().copied());
    }
    for (_, n) in snap.nics() {
        out.extend(n.addresses.iter().map(|a| IpNet::from(*a)));
    }
    for a in PLATFORM_ADDRESSES {
        out.push(IpNet::from(a));
    }
    for (_, n) in snap.nsgs() {
        for d in [&n.inbound, &n.outbound] {
            for r in &d.rules {
                out.extend(r.source.iter().copied());
                out.extend(r.destination.iter().copied());
            }
        }
    }
    for (_, f) in snap.firewalls() {
        out.extend(f.private_ip_addresses.iter().map(|a| IpNet::from(*a)));
        out.extend(f.public_ip_addresses.iter().map(|a| IpNet::from(*a)));
        for p in [f.dnat_pass(), f.network_pass()] {
            for e in p.entries {
                out.extend(e.src.iter().copied());
                out.extend(e.dst.iter().copied());
            }
        }
        for r in 0..f.rule_counts().0 {
            if let Some((a, _)) = f.dnat_translation(r) {
                out.push(IpNet::from(a));
            }
        }
        for a in f.application_rules() {
            out.extend(a.sources.iter().copied());
            out.extend(a.destinations.unwrap_or(&[]).iter().copied());
        }
    }
    out
}
