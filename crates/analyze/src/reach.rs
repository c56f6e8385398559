//! Network-wide reachability over header spaces (issue 6, item 3): for every source and
//! destination address and every (protocol, source port, destination port), the verdict the
//! compiled snapshot gives and the controls that decided it — exactly what
//! [`palisade_policy::Snapshot::trace`] answers for one flow (DIAG-7), for all flows at once.
//!
//! ## How
//! - **Atoms.** Per family the address line is cut at every boundary any layer uses (subnets,
//!   NICs, route prefixes, NSG and firewall rule prefixes, platform and frontend addresses). Inside
//!   one atom every address is treated alike by every layer and has the same location.
//! - **Layers** are ordered rule lists: each NSG direction (user rules then defaults, audit rules
//!   passed over, PAL-5.3) and each firewall (DNAT then network rules, then its application rules
//!   as "allowed by name", FW-3). A layer cuts the address line into its own classes: addresses
//!   matched by the same set of its rules.
//! - **Cells.** For a (source class, destination class) of a layer, the first-match walk over the
//!   active rules splits (protocol, ports) into pieces, each decided by one rule:
//!   `allowed = ∪ (rule ∩ remaining)` for allow rules, `remaining −= rule` for every rule.
//! - **Paths.** For an (source atom, destination atom) pair the path (outbound NSGs → route →
//!   firewall → inbound NSGs → reply route, or the inbound path from outside) is a *plan* of cell
//!   ids and route decisions; equal plans give equal answers, so each distinct plan is evaluated
//!   once (equivalence classes of flows, as in atomic-predicate verifiers).
//! - **Re-check.** A changed layer rebuilds only its classes; the flows it can affect are the
//!   boxes of the rules between the first and last position where old and new rule lists differ,
//!   and only those (source atom, destination atom) pairs are re-planned.

use crate::headerspace::{
    addr_value, prefix_range, to_prefixes, Family, IntervalSet, L4Set, PORT_MAX, PROTO_MAX,
};
use ipnet::IpNet;
use palisade_model::{Access, Direction, FirewallAction, NextHopType, PortRange, Protocol};
use palisade_policy::firewall::CompiledFirewall;
use palisade_policy::nsg::{CompiledRule, DirectionRules};
use palisade_policy::routes::{EffectiveRoute, RouteSource, SubnetRoutes};
use palisade_policy::trace::PLATFORM_ADDRESSES;
use palisade_policy::Snapshot;
use serde::Serialize;
use std::collections::HashMap as StdMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::net::IpAddr;

/// FxHash (as in rustc): the engine's keys are small integer vectors built by itself, so a
/// fast non-keyed hash is enough; SipHash was a tenth of the matrix time.
#[derive(Default, Clone, Copy)]
pub struct Fx(u64);

impl Hasher for Fx {
    fn write(&mut self, bytes: &[u8]) {
        for c in bytes.chunks(8) {
            let mut w = [0u8; 8];
            w[..c.len()].copy_from_slice(c);
            self.add(u64::from_le_bytes(w));
        }
    }
    fn write_u8(&mut self, i: u8) {
        self.add(i as u64)
    }
    fn write_u32(&mut self, i: u32) {
        self.add(i as u64)
    }
    fn write_u64(&mut self, i: u64) {
        self.add(i)
    }
    fn write_usize(&mut self, i: usize) {
        self.add(i as u64)
    }
    fn finish(&self) -> u64 {
        self.0
    }
}

impl Fx {
    #[inline]
    fn add(&mut self, w: u64) {
        self.0 = (self.0.rotate_left(5) ^ w).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
}

type HashMap<K, V> = StdMap<K, V, BuildHasherDefault<Fx>>;

/// The answer for a set of flows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub enum Reach {
    Allow,
    Deny,
    Drop,
    /// The path leaves what the input describes (an appliance that is not a modelled firewall).
    Unknown,
    /// Denied at the address level, allowed by an application rule for some HTTP/HTTPS names
    /// (FW-6): names are not addresses, so the answer depends on the SNI / Host. `trace` without
    /// a host denies these flows.
    ByName,
}

/// One control that decided on the path (DIAG-1.2 vocabulary).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct Control {
    /// `NicNsgOut`, `SubnetNsgOut`, `Route`, `Firewall`, `SubnetNsgIn`, `NicNsgIn`, `ReplyRoute`.
    pub step: &'static str,
    /// As `trace`'s `decided_by.layer`: `nsg`, `route`, `firewall` or `default`.
    pub layer: &'static str,
    pub resource: String,
    pub rule: Option<String>,
    pub priority: Option<u32>,
}

impl Control {
    pub fn text(&self) -> String {
        let rule = self
            .rule
            .as_deref()
            .map(|r| format!("/{r}"))
            .unwrap_or_default();
        format!("{} {}{rule}", self.step, self.resource)
    }
}

/// A verdict and the controls that made it, in path order; the last one stopped the flow when
/// the verdict is not `Allow`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct Outcome {
    pub verdict: Reach,
    pub chain: Vec<Control>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Act {
    Allow,
    Deny,
    /// DNAT rule: allowed and translated (FW-4).
    Dnat,
    /// Application allow rule (FW-6), by name only.
    ByName,
    /// No rule matched.
    NoMatch,
}

#[derive(Debug, Clone, PartialEq)]
struct Entry {
    src: IntervalSet,
    dst: IntervalSet,
    l4: L4Set,
    bits: Bits,
    act: Act,
    /// Index into the layer's `rules`.
    rule: u32,
}

/// Classes of one dimension: `starts[i]..` has class `class[i]`.
#[derive(Debug, Default)]
struct Runs {
    starts: Vec<u128>,
    class: Vec<u32>,
    rows: Vec<Vec<u64>>,
}

impl Runs {
    fn build(n: usize, ranges: impl Iterator<Item = (usize, (u128, u128))>) -> Runs {
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
        let mut interned: HashMap<Vec<u64>, u32> = HashMap::default();
        let mut runs = Runs::default();
        let mut intern = |row: &Vec<u64>, runs: &mut Runs| -> u32 {
            if let Some(c) = interned.get(row) {
                return *c;
            }
            let c = runs.rows.len() as u32;
            runs.rows.push(row.clone());
            interned.insert(row.clone(), c);
            c
        };
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
    fn class_at(&self, v: u128) -> u32 {
        let i = self.starts.partition_point(|s| *s <= v) - 1;
        self.class[i]
    }
}

/// Bit set over L4 atoms.
type Bits = Vec<u64>;

fn and(a: &[u64], b: &[u64]) -> Bits {
    a.iter().zip(b).map(|(x, y)| x & y).collect()
}
fn andnot(a: &[u64], b: &[u64]) -> Bits {
    a.iter().zip(b).map(|(x, y)| x & !y).collect()
}
fn zero(a: &[u64]) -> bool {
    a.iter().all(|x| *x == 0)
}

/// The (protocol, source port, destination port) space cut at every boundary a rule uses: each
/// L4 set of the engine is a union of these atoms, held as a bit set, so set operations on
/// protocols and ports are word operations (atomic predicates for the L4 fields).
struct L4Atoms {
    protos: Vec<u128>,
    sports: Vec<u128>,
    dports: Vec<u128>,
    /// (proto interval, source-port interval, destination-port interval); the port intervals
    /// are `usize::MAX` for protocols without ports.
    atoms: Vec<(usize, usize, usize)>,
    index: HashMap<(usize, usize, usize), usize>,
    words: usize,
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
    fn build<'a>(sets: impl Iterator<Item = &'a L4Set>) -> L4Atoms {
        let (mut p, mut sp, mut dp) = (vec![6, 7, 17, 18], vec![], vec![]);
        for set in sets {
            for b in &set.boxes {
                for &(a, z) in b.0[0].ranges() {
                    p.push(a);
                    p.push(z + 1);
                }
                for &(a, z) in b.0[1].ranges() {
                    sp.push(a);
                    sp.push(z + 1);
                }
                for &(a, z) in b.0[2].ranges() {
                    dp.push(a);
                    dp.push(z + 1);
                }
            }
        }
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
        L4Atoms {
            protos,
            sports,
            dports,
            atoms,
            index,
            words,
        }
    }
    fn atom_of(&self, p: u128, sp: u128, dp: u128) -> usize {
        let pi = interval(&self.protos, p);
        let lo = self.protos[pi];
        let key = if lo == 6 || lo == 17 {
            (pi, interval(&self.sports, sp), interval(&self.dports, dp))
        } else {
            (pi, usize::MAX, usize::MAX)
        };
        self.index[&key]
    }
    fn atom_box(&self, i: usize) -> crate::headerspace::L4Box {
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
        crate::headerspace::NBox([
            IntervalSet::range(a, z),
            port(&self.sports, si),
            port(&self.dports, di),
        ])
    }
    /// Is every boundary of the set already a cut (so the set is a union of atoms)?
    fn aligned(&self, set: &L4Set) -> bool {
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
    fn bits(&self, set: &L4Set) -> Bits {
        let mut out = vec![0u64; self.words];
        for i in 0..self.atoms.len() {
            let b = self.atom_box(i);
            let v = [
                b.0[0].ranges()[0].0,
                b.0[1].ranges()[0].0,
                b.0[2].ranges()[0].0,
            ];
            if set.contains(&v) {
                out[i / 64] |= 1 << (i % 64);
            }
        }
        out
    }
    fn full(&self) -> Bits {
        let mut out = vec![0u64; self.words];
        for i in 0..self.atoms.len() {
            out[i / 64] |= 1 << (i % 64);
        }
        out
    }
    fn set(&self, bits: &[u64]) -> L4Set {
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
    fn at_dport(&self, bits: &[u64], port: u16) -> Bits {
        let di = interval(&self.dports, port as u128);
        let mut out = vec![0u64; self.words];
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

/// A piece of a cell: flows decided by one rule (or by none).
#[derive(Debug, Clone)]
struct Piece {
    l4: Bits,
    act: Act,
    rule: u32,
}

#[derive(Default)]
struct FamLayer {
    entries: Vec<Entry>,
    src: Runs,
    dst: Runs,
    cells: HashMap<(u32, u32), u32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LayerKind {
    Nsg { nsg: usize, direction: Direction },
    Firewall { firewall: usize },
}

/// What a rule of a layer is, for explanations.
#[derive(Debug, Clone)]
struct RuleInfo {
    layer: &'static str,
    resource: String,
    rule: Option<String>,
    priority: Option<u32>,
}

struct Layer {
    kind: LayerKind,
    rules: Vec<RuleInfo>,
    /// DNAT rules: translation per rule index.
    dnat: HashMap<u32, (IpAddr, Option<u16>)>,
    fam: [FamLayer; 2],
}

/// Where an atom sits.
#[derive(Debug, Clone, Copy, Default)]
struct AtomLoc {
    subnet: Option<usize>,
    nic: Option<usize>,
    in_vnet: bool,
    platform: bool,
    frontend: Option<usize>,
}

struct Grid {
    family: Family,
    starts: Vec<u128>,
    loc: Vec<AtomLoc>,
}

impl Grid {
    fn atom_of(&self, v: u128) -> usize {
        self.starts.partition_point(|s| *s <= v) - 1
    }
    fn end(&self, a: usize) -> u128 {
        self.starts
            .get(a + 1)
            .map(|s| s - 1)
            .unwrap_or(self.family.max())
    }
    fn len(&self) -> usize {
        self.starts.len()
    }
}

/// One step of a path plan.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Step {
    /// Apply a layer's cell; `dport`: evaluate at this destination port (after DNAT).
    Cell {
        layer: u32,
        fam: u8,
        cell: u32,
        step: u8,
        dport: Option<u16>,
        dnat: Vec<(u32, Vec<Step>)>,
    },
    /// Add a control to every flow still going.
    Ctrl(u32),
    /// End every flow still going with this verdict.
    End(Reach),
}

const STEP_NAMES: [&str; 7] = [
    "NicNsgOut",
    "SubnetNsgOut",
    "Route",
    "Firewall",
    "SubnetNsgIn",
    "NicNsgIn",
    "ReplyRoute",
];
const S_NIC_OUT: u8 = 0;
const S_SUB_OUT: u8 = 1;
const S_FW: u8 = 3;
const S_SUB_IN: u8 = 4;
const S_NIC_IN: u8 = 5;

/// Per family: what the layers and routes see of every atom (see [`Engine::build_index`]).
#[derive(Default)]
struct Index {
    /// Per layer, per atom: its source class, its destination class.
    scls: Vec<Vec<u32>>,
    dcls: Vec<Vec<u32>>,
    /// Per subnet, per atom: the index of the route the subnet uses for it (`u32::MAX`: none).
    route: Vec<Vec<u32>>,
    /// Per place (each subnet, then "outside"): its atoms.
    places: Vec<Vec<u32>>,
    /// Per place: the NSG layers (subnet and NICs) on the way out, on the way in.
    out_layers: Vec<Vec<u32>>,
    in_layers: Vec<Vec<u32>>,
    /// Subnets holding a DNAT target, and their inbound NSG layers.
    dnat_subnets: Vec<usize>,
    dnat_layers: Vec<u32>,
}

/// The class of every atom (given by its first address) in one dimension of a layer.
fn classes_over(runs: &Runs, starts: &[u128]) -> Vec<u32> {
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

/// No decision: the pair is outside what reachability covers (neither end in the network).
pub const NONE: u32 = u32::MAX;

/// The reachability engine over one snapshot.
pub struct Engine<'s> {
    pub snap: &'s Snapshot,
    grid: [Grid; 2],
    layers: Vec<Layer>,
    nsg_layer: HashMap<(usize, bool), u32>,
    fw_layer: Vec<u32>,
    cells: Vec<Vec<Piece>>,
    /// Cells by content: equal pieces, one id (a rule index means the layer of the step).
    cell_ids: HashMap<Vec<(Bits, Act, u32)>, u32>,
    controls: Vec<Control>,
    control_ids: HashMap<Control, u32>,
    ctrl_cache: HashMap<(u8, u32, u32), u32>,
    outcomes: Vec<Outcome>,
    outcome_ids: HashMap<(Reach, Vec<u32>), u32>,
    /// Decision = pieces (L4 set, outcome id), one per outcome.
    decisions: Vec<Vec<(Bits, u32)>>,
    l4: L4Atoms,
    plans: HashMap<Vec<Step>, u32>,
    /// Per family, per source atom: the decision per destination atom.
    rows: [Vec<Vec<u32>>; 2],
    index: [Index; 2],
}

fn fam_of(p: &IpNet) -> Family {
    Family::of(p.addr())
}

fn set_of(list: &[IpNet], f: Family) -> IntervalSet {
    IntervalSet::from_ranges(
        list.iter()
            .filter(|p| fam_of(p) == f)
            .map(prefix_range)
            .collect(),
    )
}

/// Every address boundary the snapshot's layers use.
pub fn cuts(snap: &Snapshot) -> Vec<IpNet> {
    let mut out: Vec<IpNet> = vec![];
    for s in &snap.subnets {
        out.extend(s.prefixes.iter().copied());
        for r in &s.routes.routes {
            out.extend(r.address_prefix.iter().copied());
        }
    }
    for v in &snap.network.virtual_networks {
        out.extend(v.address_space.iter().copied());
    }
    for n in &snap.nics {
        out.extend(n.addresses.iter().map(|a| IpNet::from(*a)));
    }
    for a in PLATFORM_ADDRESSES {
        out.push(IpNet::from(a.parse::<IpAddr>().expect("literal")));
    }
    for n in &snap.nsgs {
        for d in [&n.inbound, &n.outbound] {
            for r in &d.rules {
                out.extend(r.source.iter().copied());
                out.extend(r.destination.iter().copied());
            }
        }
    }
    for f in &snap.firewalls {
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

fn nsg_entries(rules: &DirectionRules, nsg: &str) -> (Vec<RuleInfo>, [Vec<Entry>; 2]) {
    let infos = rules
        .rules
        .iter()
        .map(|r| RuleInfo {
            layer: if r.is_default { "default" } else { "nsg" },
            resource: nsg.to_string(),
            rule: Some(r.name.clone()),
            priority: Some(r.priority),
        })
        .collect();
    (infos, nsg_rule_entries(&rules.rules))
}

fn nsg_rule_entries(rules: &[CompiledRule]) -> [Vec<Entry>; 2] {
    let mut out: [Vec<Entry>; 2] = [vec![], vec![]];
    for (i, r) in rules.iter().enumerate() {
        if r.audit {
            continue; // PAL-5.3: passed over.
        }
        for f in [Family::V4, Family::V6] {
            let proto = r.protocol.number(f == Family::V6);
            let e = Entry {
                src: set_of(&r.source, f),
                dst: set_of(&r.destination, f),
                l4: L4Set::rule(proto, &r.source_ports, &r.destination_ports),
                bits: vec![],
                act: if r.access == Access::Allow {
                    Act::Allow
                } else {
                    Act::Deny
                },
                rule: i as u32,
            };
            if !e.src.is_empty() && !e.dst.is_empty() && !e.l4.is_empty() {
                out[f.index()].push(e);
            }
        }
    }
    out
}

type FwParts = (
    Vec<RuleInfo>,
    [Vec<Entry>; 2],
    HashMap<u32, (IpAddr, Option<u16>)>,
);

fn fw_layer(fw: &CompiledFirewall) -> FwParts {
    let mut infos = vec![];
    let mut out: [Vec<Entry>; 2] = [vec![], vec![]];
    let mut dnat = HashMap::default();
    let info = |r: &palisade_policy::firewall::RuleRef| RuleInfo {
        layer: "firewall",
        resource: r.resource.clone(),
        rule: Some(r.path()),
        priority: Some(r.rule_collection_priority),
    };
    for (pass, is_dnat) in [(fw.dnat_pass(), true), (fw.network_pass(), false)] {
        let base = infos.len() as u32;
        infos.extend(pass.rules.iter().map(|r| info(r)));
        for (e, spec) in pass.entries.iter().enumerate() {
            let ri = pass.entry_rule[e] as usize;
            let rr = &pass.rules[ri];
            if rr.audit {
                continue;
            }
            let act = if is_dnat {
                Act::Dnat
            } else if rr.action == FirewallAction::Allow {
                Act::Allow
            } else {
                Act::Deny
            };
            if is_dnat {
                if let Some(t) = fw.dnat_translation(ri) {
                    dnat.insert(base + ri as u32, t);
                }
            }
            let to_ranges = |p: &[(u16, u16)]| -> Vec<PortRange> {
                p.iter()
                    .map(|(a, b)| PortRange {
                        first: *a,
                        last: *b,
                    })
                    .collect()
            };
            for f in [Family::V4, Family::V6] {
                let en = Entry {
                    src: set_of(&spec.src, f),
                    dst: set_of(&spec.dst, f),
                    l4: L4Set::rule(
                        spec.protocol,
                        &to_ranges(&spec.src_ports),
                        &to_ranges(&spec.dst_ports),
                    ),
                    bits: vec![],
                    act,
                    rule: base + ri as u32,
                };
                if !en.src.is_empty() && !en.dst.is_empty() && !en.l4.is_empty() {
                    out[f.index()].push(en);
                }
            }
        }
    }
    // Application allow rules: by name, on TCP to their ports (FW-6.1).
    for a in fw.application_rules() {
        let i = infos.len() as u32;
        infos.push(info(a.rule));
        if a.rule.audit || a.rule.action != FirewallAction::Allow {
            continue;
        }
        let ports: Vec<PortRange> = a
            .protocols
            .iter()
            .map(|p| PortRange::single(p.port))
            .collect();
        for f in [Family::V4, Family::V6] {
            let all = IntervalSet::range(0, f.max());
            let en = Entry {
                src: set_of(a.sources, f),
                dst: a.destinations.map(|d| set_of(d, f)).unwrap_or(all),
                l4: L4Set::rule(Some(6), &[PortRange::ANY], &ports),
                bits: vec![],
                act: Act::ByName,
                rule: i,
            };
            if !en.src.is_empty() && !en.dst.is_empty() && !en.l4.is_empty() {
                out[f.index()].push(en);
            }
        }
    }
    (infos, out, dnat)
}

fn fam_layer(entries: Vec<Entry>) -> FamLayer {
    let n = entries.len();
    let src = Runs::build(
        n,
        entries
            .iter()
            .enumerate()
            .flat_map(|(i, e)| e.src.ranges().iter().map(move |r| (i, *r))),
    );
    let dst = Runs::build(
        n,
        entries
            .iter()
            .enumerate()
            .flat_map(|(i, e)| e.dst.ranges().iter().map(move |r| (i, *r))),
    );
    FamLayer {
        entries,
        src,
        dst,
        cells: HashMap::default(),
    }
}

fn route_index(routes: &SubnetRoutes, r: &EffectiveRoute) -> u32 {
    let base = routes.routes.as_ptr() as usize;
    ((r as *const EffectiveRoute as usize - base) / std::mem::size_of::<EffectiveRoute>()) as u32
}

/// Flows the matrix answers for: a source in a subnet, or a destination in a subnet or at a
/// firewall frontend.
fn in_universe(s: &AtomLoc, d: &AtomLoc) -> bool {
    s.subnet.is_some() || d.subnet.is_some() || d.frontend.is_some()
}

impl<'s> Engine<'s> {
    /// Build the engine and compute the full matrix.
    pub fn new(snap: &'s Snapshot) -> Engine<'s> {
        Engine::with_cuts(snap, &[])
    }

    /// Like [`Engine::new`], with extra address boundaries (to compare two snapshots on one grid).
    pub fn with_cuts(snap: &'s Snapshot, extra: &[IpNet]) -> Engine<'s> {
        let mut all = cuts(snap);
        all.extend_from_slice(extra);
        let grid = [Family::V4, Family::V6].map(|f| {
            let mut starts: Vec<u128> = vec![0];
            for p in all.iter().filter(|p| fam_of(p) == f) {
                let (a, b) = prefix_range(p);
                starts.push(a);
                if b < f.max() {
                    starts.push(b + 1);
                }
            }
            starts.sort_unstable();
            starts.dedup();
            let platform: Vec<u128> = PLATFORM_ADDRESSES
                .iter()
                .map(|a| addr_value(a.parse().expect("literal")))
                .collect();
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
        });
        let mut e = Engine {
            snap,
            grid,
            layers: vec![],
            nsg_layer: HashMap::default(),
            fw_layer: vec![],
            cells: vec![],
            cell_ids: HashMap::default(),
            controls: vec![],
            control_ids: HashMap::default(),
            ctrl_cache: HashMap::default(),
            outcomes: vec![],
            outcome_ids: HashMap::default(),
            decisions: vec![],
            l4: L4Atoms::build(std::iter::empty()),
            plans: HashMap::default(),
            rows: [vec![], vec![]],
            index: Default::default(),
        };
        for (i, n) in snap.nsgs.iter().enumerate() {
            for (dir, rules) in [
                (Direction::Inbound, &n.inbound),
                (Direction::Outbound, &n.outbound),
            ] {
                let (infos, [v4, v6]) = nsg_entries(rules, &n.name);
                e.nsg_layer
                    .insert((i, dir == Direction::Outbound), e.layers.len() as u32);
                e.layers.push(Layer {
                    kind: LayerKind::Nsg {
                        nsg: i,
                        direction: dir,
                    },
                    rules: infos,
                    dnat: HashMap::default(),
                    fam: [fam_layer(v4), fam_layer(v6)],
                });
            }
        }
        for (i, f) in snap.firewalls.iter().enumerate() {
            let (infos, [v4, v6], dnat) = fw_layer(f);
            e.fw_layer.push(e.layers.len() as u32);
            e.layers.push(Layer {
                kind: LayerKind::Firewall { firewall: i },
                rules: infos,
                dnat,
                fam: [fam_layer(v4), fam_layer(v6)],
            });
        }
        let atoms = L4Atoms::build(
            e.layers
                .iter()
                .flat_map(|l| l.fam.iter())
                .flat_map(|f| f.entries.iter().map(|en| &en.l4)),
        );
        for l in &mut e.layers {
            for fl in &mut l.fam {
                for en in &mut fl.entries {
                    en.bits = atoms.bits(&en.l4);
                }
            }
        }
        e.l4 = atoms;
        e.compute_all();
        e
    }

    fn compute_all(&mut self) {
        for f in [Family::V4, Family::V6] {
            let fi = f.index();
            let n = self.grid[fi].len();
            self.rows[fi] = vec![vec![NONE; n]; n];
            self.build_index(f);
            let places = self.index[fi].places.len();
            for s in 0..places {
                for d in 0..places {
                    self.compute_block(f, s, d, None);
                }
            }
        }
    }

    /// Per family: each layer's source and destination class of every atom, each subnet's route
    /// for every atom, the atoms of every place (subnet, then "outside").
    fn build_index(&mut self, f: Family) {
        let fi = f.index();
        let g = &self.grid[fi];
        let snap = self.snap;
        let mut ix = Index::default();
        for l in &self.layers {
            let fl = &l.fam[fi];
            ix.scls.push(classes_over(&fl.src, &g.starts));
            ix.dcls.push(classes_over(&fl.dst, &g.starts));
        }
        for s in &snap.subnets {
            ix.route.push(
                (0..g.len())
                    .map(|a| {
                        s.routes
                            .lookup(f.addr(g.starts[a]))
                            .map(|(_, r)| route_index(&s.routes, r))
                            .unwrap_or(u32::MAX)
                    })
                    .collect(),
            );
        }
        let outside = snap.subnets.len();
        ix.places = vec![vec![]; outside + 1];
        for a in 0..g.len() {
            ix.places[g.loc[a].subnet.unwrap_or(outside)].push(a as u32);
        }
        // Layers met on the way out of a place, into a place, and DNAT targets.
        let nsg_layers = |sub: usize, outbound: bool| -> Vec<u32> {
            let mut v = vec![];
            if let Some(n) = snap.subnets[sub].nsg {
                v.push(self.nsg_layer[&(n, outbound)]);
            }
            for nic in snap.nics.iter().filter(|n| n.subnet == Some(sub)) {
                if let Some(n) = nic.nsg {
                    v.push(self.nsg_layer[&(n, outbound)]);
                }
            }
            v
        };
        ix.out_layers = (0..=outside)
            .map(|s| {
                if s == outside {
                    vec![]
                } else {
                    nsg_layers(s, true)
                }
            })
            .collect();
        ix.in_layers = (0..=outside)
            .map(|s| {
                if s == outside {
                    vec![]
                } else {
                    nsg_layers(s, false)
                }
            })
            .collect();
        let mut targets: Vec<usize> = vec![];
        for l in &self.layers {
            for (to, _) in l.dnat.values() {
                if let Some(t) = snap.locate(*to).subnet {
                    if !targets.contains(&t) {
                        targets.push(t);
                    }
                }
            }
        }
        targets.sort_unstable();
        ix.dnat_layers = targets.iter().flat_map(|t| nsg_layers(*t, false)).collect();
        ix.dnat_subnets = targets;
        self.index[fi] = ix;
    }

    /// Evaluate the pairs (source in place `s`, destination in place `d`): atoms of each side
    /// are grouped by what the layers on this path see of them (their classes in the layers of
    /// the path, the routes that look them up), one pair per group pair is evaluated. `only`:
    /// restrict to these source and destination atoms (re-check).
    fn compute_block(&mut self, f: Family, s: usize, d: usize, only: Option<(&[u32], &[u32])>) {
        let fi = f.index();
        let ix = &self.index[fi];
        let outside = ix.places.len() - 1;
        let (srcs, dsts): (&[u32], &[u32]) = match only {
            Some(x) => x,
            None => (&ix.places[s], &ix.places[d]),
        };
        if srcs.is_empty() || dsts.is_empty() {
            return;
        }
        let g = &self.grid[fi];
        let mut layers: Vec<u32> = ix.out_layers[s].clone();
        layers.extend_from_slice(&self.fw_layer);
        layers.extend_from_slice(&ix.in_layers[d]);
        layers.extend_from_slice(&ix.dnat_layers);
        let mut reply: Vec<usize> = ix.dnat_subnets.clone();
        if d != outside {
            reply.push(d);
        }
        let special = |a: u32| {
            let l = &g.loc[a as usize];
            l.nic.is_some() || l.platform || l.frontend.is_some()
        };
        // Source keys.
        let group = |atoms: &[u32], key: &dyn Fn(u32, &mut Vec<u32>)| -> (Vec<u32>, Vec<u32>) {
            let k = layers.len() + reply.len() + 2;
            let mut keys: Vec<u32> = Vec::with_capacity(atoms.len() * k);
            for &a in atoms {
                key(a, &mut keys);
            }
            let mut order: Vec<u32> = (0..atoms.len() as u32).collect();
            let at = |i: u32| &keys[i as usize * k..(i as usize + 1) * k];
            order.sort_unstable_by(|x, y| at(*x).cmp(at(*y)));
            let mut gid = vec![0u32; atoms.len()];
            let mut reps: Vec<u32> = vec![];
            for (j, &i) in order.iter().enumerate() {
                if j == 0 || at(order[j - 1]) != at(i) {
                    reps.push(atoms[i as usize]);
                }
                gid[i as usize] = reps.len() as u32 - 1;
            }
            (gid, reps)
        };
        let skey = |a: u32, out: &mut Vec<u32>| {
            let sp = special(a);
            out.push(if sp { a } else { u32::MAX });
            out.push(g.loc[a as usize].in_vnet as u32);
            for l in &layers {
                out.push(ix.scls[*l as usize][a as usize]);
            }
            for r in &reply {
                out.push(ix.route[*r][a as usize]);
            }
        };
        let dkey = |a: u32, out: &mut Vec<u32>| {
            let sp = special(a);
            out.push(if sp { a } else { u32::MAX });
            out.push(if s == outside {
                u32::MAX
            } else {
                ix.route[s][a as usize]
            });
            for l in &layers {
                out.push(ix.dcls[*l as usize][a as usize]);
            }
            for _ in &reply {
                out.push(0);
            }
        };
        let (sg0, sreps0) = group(srcs, &skey);
        let (dg0, dreps0) = group(dsts, &dkey);
        let fixed_s: Vec<Vec<u32>> = sreps0
            .iter()
            .map(|a| {
                let mut v = vec![];
                skey(*a, &mut v);
                v.truncate(2);
                v.extend(reply.iter().map(|r| ix.route[*r][*a as usize]));
                v
            })
            .collect();
        let fixed_d: Vec<Vec<u32>> = dreps0
            .iter()
            .map(|a| {
                let mut v = vec![];
                dkey(*a, &mut v);
                v.truncate(2);
                v
            })
            .collect();
        let srcs = srcs.to_vec();
        let dsts = dsts.to_vec();
        // Refine: two class groups differ only where a layer's cell (its decision, not its
        // classes) differs against some group of the other side.
        let (ns, nd) = (sreps0.len(), dreps0.len());
        let mut cells = vec![0u32; layers.len() * ns * nd];
        for (k, &l) in layers.iter().enumerate() {
            for i in 0..ns {
                for j in 0..nd {
                    let (a, b) = (
                        self.grid[fi].starts[sreps0[i] as usize],
                        self.grid[fi].starts[dreps0[j] as usize],
                    );
                    cells[(k * ns + i) * nd + j] = self.cell(l, f, a, b);
                }
            }
        }
        let refine =
            |n: usize, m: usize, fixed: &[Vec<u32>], at: &dyn Fn(usize, usize, usize) -> u32| {
                let keys: Vec<Vec<u32>> = (0..n)
                    .map(|i| {
                        let mut v = fixed[i].clone();
                        for k in 0..layers.len() {
                            for j in 0..m {
                                v.push(at(k, i, j));
                            }
                        }
                        v
                    })
                    .collect();
                let mut ids: HashMap<&Vec<u32>, u32> = HashMap::default();
                let mut reps = vec![];
                let map: Vec<u32> = (0..n)
                    .map(|i| {
                        let next = ids.len() as u32;
                        *ids.entry(&keys[i]).or_insert_with(|| {
                            reps.push(i);
                            next
                        })
                    })
                    .collect();
                (map, reps)
            };
        let (smap, sr) = refine(ns, nd, &fixed_s, &|k, i, j| cells[(k * ns + i) * nd + j]);
        let (dmap, dr) = refine(nd, ns, &fixed_d, &|k, i, j| cells[(k * ns + j) * nd + i]);
        let sreps: Vec<u32> = sr.iter().map(|i| sreps0[*i]).collect();
        let dreps: Vec<u32> = dr.iter().map(|i| dreps0[*i]).collect();
        let sg: Vec<u32> = sg0.iter().map(|x| smap[*x as usize]).collect();
        let dg: Vec<u32> = dg0.iter().map(|x| dmap[*x as usize]).collect();
        let mut dec = vec![NONE; sreps.len() * dreps.len()];
        for (i, &sa) in sreps.iter().enumerate() {
            for (j, &da) in dreps.iter().enumerate() {
                dec[i * dreps.len() + j] = self.evaluate(f, sa as usize, da as usize);
            }
        }
        let rows = &mut self.rows[fi];
        for (i, &sa) in srcs.iter().enumerate() {
            let row = &mut rows[sa as usize];
            let base = sg[i] as usize * dreps.len();
            for (j, &da) in dsts.iter().enumerate() {
                row[da as usize] = dec[base + dg[j] as usize];
            }
        }
    }

    /// Number of atoms per family (IPv4, IPv6).
    pub fn atoms(&self) -> (usize, usize) {
        (self.grid[0].len(), self.grid[1].len())
    }

    /// Distinct plans, cells and outcomes evaluated so far.
    pub fn stats(&self) -> (usize, usize, usize) {
        (self.plans.len(), self.cells.len(), self.outcomes.len())
    }

    fn cell(&mut self, layer: u32, f: Family, src: u128, dst: u128) -> u32 {
        let fl = &self.layers[layer as usize].fam[f.index()];
        let key = (fl.src.class_at(src), fl.dst.class_at(dst));
        if let Some(c) = fl.cells.get(&key) {
            return *c;
        }
        let (srow, drow) = (&fl.src.rows[key.0 as usize], &fl.dst.rows[key.1 as usize]);
        let mut remaining = self.l4.full();
        let mut pieces: Vec<Piece> = vec![];
        'walk: for (w, (a, b)) in srow.iter().zip(drow).enumerate() {
            let mut bits = a & b;
            while bits != 0 {
                let e = w * 64 + bits.trailing_zeros() as usize;
                bits &= bits - 1;
                let en = &fl.entries[e];
                let hit = and(&remaining, &en.bits);
                if zero(&hit) {
                    continue;
                }
                remaining = andnot(&remaining, &en.bits);
                match pieces
                    .iter_mut()
                    .find(|p| p.rule == en.rule && p.act == en.act)
                {
                    Some(p) => p.l4.iter_mut().zip(&hit).for_each(|(x, y)| *x |= y),
                    None => pieces.push(Piece {
                        l4: hit,
                        act: en.act,
                        rule: en.rule,
                    }),
                }
                if zero(&remaining) {
                    break 'walk;
                }
            }
        }
        if !zero(&remaining) {
            pieces.push(Piece {
                l4: remaining,
                act: Act::NoMatch,
                rule: u32::MAX,
            });
        }
        let canon: Vec<(Bits, Act, u32)> = pieces
            .iter()
            .map(|p| (p.l4.clone(), p.act, p.rule))
            .collect();
        let id = match self.cell_ids.get(&canon) {
            Some(i) => *i,
            None => {
                let id = self.cells.len() as u32;
                self.cells.push(pieces);
                self.cell_ids.insert(canon, id);
                id
            }
        };
        self.layers[layer as usize].fam[f.index()]
            .cells
            .insert(key, id);
        id
    }

    fn control(&mut self, c: Control) -> u32 {
        if let Some(i) = self.control_ids.get(&c) {
            return *i;
        }
        let i = self.controls.len() as u32;
        self.controls.push(c.clone());
        self.control_ids.insert(c, i);
        i
    }

    fn route_ctrl(&mut self, step: u8, subnet: usize, route: Option<&EffectiveRoute>) -> u32 {
        let idx = route
            .map(|r| route_index(&self.snap.subnets[subnet].routes, r))
            .unwrap_or(u32::MAX);
        if let Some(c) = self.ctrl_cache.get(&(step + 100, subnet as u32, idx)) {
            return *c;
        }
        let c = match route {
            Some(r) => Control {
                step: STEP_NAMES[step as usize],
                layer: if r.source == RouteSource::User {
                    "route"
                } else {
                    "default"
                },
                resource: r.resource(),
                rule: Some(r.label()),
                priority: None,
            },
            None => Control {
                step: STEP_NAMES[step as usize],
                layer: "default",
                resource: "System Route".into(),
                rule: None,
                priority: None,
            },
        };
        let id = self.control(c);
        self.ctrl_cache.insert((step + 100, subnet as u32, idx), id);
        id
    }

    fn rule_ctrl(&mut self, step: u8, layer: u32, rule: u32) -> u32 {
        if let Some(c) = self.ctrl_cache.get(&(step, layer, rule)) {
            return *c;
        }
        let l = &self.layers[layer as usize];
        let c = if rule == u32::MAX {
            let resource = match l.kind {
                LayerKind::Firewall { firewall } => self.snap.firewalls[firewall].name.clone(),
                LayerKind::Nsg { nsg, .. } => self.snap.nsgs[nsg].name.clone(),
            };
            Control {
                step: STEP_NAMES[step as usize],
                layer: "default",
                resource,
                rule: None,
                priority: None,
            }
        } else {
            let r = &l.rules[rule as usize];
            Control {
                step: STEP_NAMES[step as usize],
                layer: r.layer,
                resource: r.resource.clone(),
                rule: r.rule.clone(),
                priority: r.priority,
            }
        };
        let id = self.control(c);
        self.ctrl_cache.insert((step, layer, rule), id);
        id
    }

    fn nsg_layer_of(&self, nsg: usize, outbound: bool) -> u32 {
        self.nsg_layer[&(nsg, outbound)]
    }

    /// Inbound NSGs of a destination location, evaluated at (src, dst).
    fn inbound_steps(
        &mut self,
        f: Family,
        loc: &AtomLoc,
        src: u128,
        dst: u128,
        dport: Option<u16>,
        plan: &mut Vec<Step>,
    ) {
        let subnet_nsg = loc.subnet.and_then(|s| self.snap.subnets[s].nsg);
        let nic_nsg = loc.nic.and_then(|n| self.snap.nics[n].nsg);
        for (step, nsg) in [(S_SUB_IN, subnet_nsg), (S_NIC_IN, nic_nsg)] {
            if let Some(n) = nsg {
                let layer = self.nsg_layer_of(n, false);
                let cell = self.cell(layer, f, src, dst);
                plan.push(Step::Cell {
                    layer,
                    fam: f.index() as u8,
                    cell,
                    step,
                    dport,
                    dnat: vec![],
                });
            }
        }
    }

    /// The plan of one (source atom, destination atom) pair: which cells and route decisions
    /// its flows meet, in order (DIAG-7 request path and reply check).
    fn plan(&mut self, f: Family, sa: usize, da: usize) -> Option<Vec<Step>> {
        let g = &self.grid[f.index()];
        let (sl, dl) = (g.loc[sa], g.loc[da]);
        if !in_universe(&sl, &dl) {
            return None;
        }
        let (src, dst) = (g.starts[sa], g.starts[da]);
        let mut plan = vec![];
        let snap = self.snap;
        if let Some(s) = sl.subnet {
            // From inside: NIC NSG out, subnet NSG out (NSG-6), platform exemption (NSG-8.4).
            let nic_nsg = sl.nic.and_then(|n| snap.nics[n].nsg);
            for (step, nsg) in [(S_NIC_OUT, nic_nsg), (S_SUB_OUT, snap.subnets[s].nsg)] {
                if let Some(n) = nsg {
                    if dl.platform && !snap.nsgs[n].names_platform_tags {
                        continue;
                    }
                    let layer = self.nsg_layer_of(n, true);
                    let cell = self.cell(layer, f, src, dst);
                    plan.push(Step::Cell {
                        layer,
                        fam: f.index() as u8,
                        cell,
                        step,
                        dport: None,
                        dnat: vec![],
                    });
                }
            }
            let Some((_, route)) = snap.subnets[s].routes.lookup(f.addr(dst)) else {
                plan.push(Step::Ctrl(self.route_ctrl(2, s, None)));
                plan.push(Step::End(Reach::Drop));
                return Some(plan);
            };
            plan.push(Step::Ctrl(self.route_ctrl(2, s, Some(route))));
            if route.next_hop_type == NextHopType::None || route.drops {
                plan.push(Step::End(Reach::Drop));
                return Some(plan);
            }
            match route.next_hop_type {
                NextHopType::VirtualAppliance => {
                    let Some(ip) = route.next_hop_ip_address else {
                        plan.push(Step::End(Reach::Drop));
                        return Some(plan);
                    };
                    let Some(fw) = snap.firewall_at(ip) else {
                        plan.push(Step::End(Reach::Unknown));
                        return Some(plan);
                    };
                    let layer = self.fw_layer[fw];
                    let cell = self.cell(layer, f, src, dst);
                    // DNAT'd flows: on to the translated address, inbound NSGs see the
                    // original packet, reply check against this firewall.
                    let mut dnat = vec![];
                    let rules: Vec<u32> = self.cells[cell as usize]
                        .iter()
                        .filter(|p| p.act == Act::Dnat)
                        .map(|p| p.rule)
                        .collect();
                    for r in rules {
                        let t = self.layers[layer as usize].dnat.get(&r).copied();
                        let to = t.map(|(a, _)| a).unwrap_or(f.addr(dst));
                        let mut sub = vec![];
                        if Family::of(to) == f {
                            let tl = snap.locate(to);
                            let tloc = AtomLoc {
                                subnet: tl.subnet,
                                nic: tl.nic,
                                ..Default::default()
                            };
                            if tloc.subnet.is_some() {
                                self.inbound_steps(f, &tloc, src, dst, None, &mut sub);
                                self.reply_steps(f, tloc.subnet, src, Some(ip), &mut sub);
                            }
                        }
                        sub.push(Step::End(Reach::Allow));
                        dnat.push((r, sub));
                    }
                    plan.push(Step::Cell {
                        layer,
                        fam: f.index() as u8,
                        cell,
                        step: S_FW,
                        dport: None,
                        dnat,
                    });
                    if dl.subnet.is_some() {
                        self.inbound_steps(f, &dl, src, dst, None, &mut plan);
                        self.reply_steps(f, dl.subnet, src, Some(ip), &mut plan);
                    }
                    plan.push(Step::End(Reach::Allow));
                }
                NextHopType::VnetLocal | NextHopType::VNetPeering => {
                    if dl.subnet.is_some() {
                        self.inbound_steps(f, &dl, src, dst, None, &mut plan);
                        self.reply_steps(f, dl.subnet, src, None, &mut plan);
                    }
                    plan.push(Step::End(Reach::Allow));
                }
                _ => plan.push(Step::End(Reach::Allow)),
            }
            return Some(plan);
        }
        // From outside: a firewall frontend (DNAT, FW-4) or a subnet's address.
        if let Some(fw) = dl.frontend {
            let layer = self.fw_layer[fw];
            let cell = self.cell(layer, f, src, dst);
            let rules: Vec<u32> = self.cells[cell as usize]
                .iter()
                .filter(|p| p.act == Act::Dnat)
                .map(|p| p.rule)
                .collect();
            let mut dnat = vec![];
            for r in rules {
                let mut sub = vec![];
                if let Some((to, port)) = self.layers[layer as usize].dnat.get(&r).copied() {
                    if Family::of(to) == f {
                        let tl = snap.locate(to);
                        let tloc = AtomLoc {
                            subnet: tl.subnet,
                            nic: tl.nic,
                            ..Default::default()
                        };
                        if tloc.subnet.is_some() {
                            let firewall = &snap.firewalls[fw];
                            let s2 = match firewall.private_ip_addresses.first() {
                                Some(p) if !firewall.is_public(to) => addr_value(*p),
                                _ => src,
                            };
                            self.inbound_steps(f, &tloc, s2, addr_value(to), port, &mut sub);
                        }
                    }
                }
                sub.push(Step::End(Reach::Allow));
                dnat.push((r, sub));
            }
            plan.push(Step::Cell {
                layer,
                fam: f.index() as u8,
                cell,
                step: S_FW,
                dport: None,
                dnat,
            });
            if dl.subnet.is_some() {
                self.inbound_steps(f, &dl, src, dst, None, &mut plan);
            }
            plan.push(Step::End(Reach::Allow));
            return Some(plan);
        }
        self.inbound_steps(f, &dl, src, dst, None, &mut plan);
        let platform =
            sl.platform && f.addr(src) == PLATFORM_ADDRESSES[0].parse::<IpAddr>().expect("literal");
        if platform || sl.in_vnet {
            plan.push(Step::End(Reach::Allow));
            return Some(plan);
        }
        // RT-9: the reply is routed on its own; only a direct Internet route keeps it symmetric.
        let s = dl.subnet.expect("in universe");
        match snap.subnets[s].routes.lookup(f.addr(src)) {
            None => {
                plan.push(Step::Ctrl(self.route_ctrl(6, s, None)));
                plan.push(Step::End(Reach::Drop));
            }
            Some((_, r)) if r.next_hop_type == NextHopType::Internet => {
                plan.push(Step::End(Reach::Allow))
            }
            Some((_, r)) => {
                plan.push(Step::Ctrl(self.route_ctrl(6, s, Some(r))));
                plan.push(Step::End(Reach::Drop));
            }
        }
        Some(plan)
    }

    /// The reply of a flow between subnets (trace's `internal_reply`): routed from the
    /// destination's subnet back to the source; through a firewall only if the request was.
    fn reply_steps(
        &mut self,
        f: Family,
        subnet: Option<usize>,
        src: u128,
        request_fw: Option<IpAddr>,
        plan: &mut Vec<Step>,
    ) {
        let Some(s) = subnet else { return };
        let snap = self.snap;
        let Some((_, route)) = snap.subnets[s].routes.lookup(f.addr(src)) else {
            return;
        };
        let reply_fw = (route.next_hop_type == NextHopType::VirtualAppliance)
            .then_some(route.next_hop_ip_address)
            .flatten();
        let stateful = reply_fw.is_some_and(|ip| snap.firewall_at(ip).is_some());
        let symmetric = match (request_fw, reply_fw) {
            (Some(a), Some(b)) => a == b,
            (None, Some(_)) => !stateful,
            (Some(_), None) => false,
            (None, None) => route.next_hop_type != NextHopType::None,
        };
        if !symmetric {
            plan.push(Step::Ctrl(self.route_ctrl(6, s, Some(route))));
            plan.push(Step::End(Reach::Drop));
        }
    }

    fn evaluate(&mut self, f: Family, sa: usize, da: usize) -> u32 {
        let Some(plan) = self.plan(f, sa, da) else {
            return NONE;
        };
        if let Some(d) = self.plans.get(&plan) {
            return *d;
        }
        let mut done: Vec<(Bits, Reach, Vec<u32>)> = vec![];
        self.run(&plan, vec![(self.l4.full(), vec![])], &mut done);
        let mut by_outcome: Vec<(Bits, u32)> = vec![];
        for (l4, verdict, chain) in done {
            let key = (verdict, chain);
            let id = match self.outcome_ids.get(&key) {
                Some(i) => *i,
                None => {
                    let o = Outcome {
                        verdict,
                        chain: key
                            .1
                            .iter()
                            .map(|c| self.controls[*c as usize].clone())
                            .collect(),
                    };
                    let i = self.outcomes.len() as u32;
                    self.outcomes.push(o);
                    self.outcome_ids.insert(key, i);
                    i
                }
            };
            match by_outcome.iter_mut().find(|(_, i)| *i == id) {
                Some(p) => p.0.iter_mut().zip(&l4).for_each(|(x, y)| *x |= y),
                None => by_outcome.push((l4, id)),
            }
        }
        let id = self.decisions.len() as u32;
        self.decisions.push(by_outcome);
        self.plans.insert(plan, id);
        id
    }

    fn run(
        &mut self,
        plan: &[Step],
        mut going: Vec<(Bits, Vec<u32>)>,
        done: &mut Vec<(Bits, Reach, Vec<u32>)>,
    ) {
        for (i, step) in plan.iter().enumerate() {
            if going.is_empty() {
                return;
            }
            match step {
                Step::Ctrl(c) => going.iter_mut().for_each(|g| g.1.push(*c)),
                Step::End(v) => {
                    for (l4, chain) in going.drain(..) {
                        done.push((l4, *v, chain));
                    }
                }
                Step::Cell {
                    layer,
                    cell,
                    step,
                    dport,
                    dnat,
                    ..
                } => {
                    let is_fw = *step == S_FW;
                    let pieces = std::mem::take(&mut self.cells[*cell as usize]);
                    let mut next = vec![];
                    for (l4, chain) in going.drain(..) {
                        for p in &pieces {
                            let hit = match dport {
                                Some(port) => and(&l4, &self.l4.at_dport(&p.l4, *port)),
                                None => and(&l4, &p.l4),
                            };
                            if zero(&hit) {
                                continue;
                            }
                            let mut c = chain.clone();
                            if p.act != Act::NoMatch || is_fw {
                                c.push(self.rule_ctrl(*step, *layer, p.rule));
                            }
                            match p.act {
                                Act::Allow => next.push((hit, c)),
                                Act::Deny | Act::NoMatch => done.push((hit, Reach::Deny, c)),
                                Act::ByName => done.push((hit, Reach::ByName, c)),
                                Act::Dnat => {
                                    let sub = dnat
                                        .iter()
                                        .find(|(r, _)| *r == p.rule)
                                        .map(|(_, s)| s.clone())
                                        .unwrap_or_else(|| vec![Step::End(Reach::Allow)]);
                                    self.run(&sub, vec![(hit, c)], done);
                                }
                            }
                        }
                    }
                    self.cells[*cell as usize] = pieces;
                    going = next;
                    let _ = i;
                }
            }
        }
        for (l4, chain) in going {
            done.push((l4, Reach::Allow, chain));
        }
    }

    // ------------------------------------------------------------------ queries and updates

    /// The answer for one flow, from the matrix (for tests and spot checks).
    pub fn lookup(
        &self,
        proto: u8,
        src: IpAddr,
        dst: IpAddr,
        sport: u16,
        dport: u16,
    ) -> Option<&Outcome> {
        let f = Family::of(src);
        if Family::of(dst) != f {
            return None;
        }
        let g = &self.grid[f.index()];
        let (sa, da) = (g.atom_of(addr_value(src)), g.atom_of(addr_value(dst)));
        let d = self.rows[f.index()][sa][da];
        if d == NONE {
            return None;
        }
        let i = self.l4.atom_of(proto as u128, sport as u128, dport as u128);
        self.decisions[d as usize]
            .iter()
            .find(|(l4, _)| l4[i / 64] >> (i % 64) & 1 == 1)
            .map(|(_, o)| &self.outcomes[*o as usize])
    }

    /// Every (family, source atom range, destination atom range, L4 set, outcome) of the matrix
    /// whose source lies in `from` and destination in `to` (each clipped).
    pub fn regions(&self, from: &[IntervalSet; 2], to: &[IntervalSet; 2]) -> Vec<Region> {
        let mut out = vec![];
        for f in [Family::V4, Family::V6] {
            let fi = f.index();
            let g = &self.grid[fi];
            for sa in 0..g.len() {
                let s_set = IntervalSet::range(g.starts[sa], g.end(sa)).intersect(&from[fi]);
                if s_set.is_empty() {
                    continue;
                }
                for da in 0..g.len() {
                    let d = self.rows[fi][sa][da];
                    if d == NONE {
                        continue;
                    }
                    let d_set = IntervalSet::range(g.starts[da], g.end(da)).intersect(&to[fi]);
                    if d_set.is_empty() {
                        continue;
                    }
                    for (l4, o) in self.decision_pieces(d) {
                        out.push(Region {
                            family: f,
                            src_atom: sa,
                            dst_atom: da,
                            src: s_set.clone(),
                            dst: d_set.clone(),
                            l4,
                            outcome: o,
                        });
                    }
                }
            }
        }
        out
    }

    pub fn outcome(&self, id: u32) -> &Outcome {
        &self.outcomes[id as usize]
    }

    /// Subnet (as `vnet/subnet`) of an atom, or `None` outside every subnet.
    pub fn atom_subnet(&self, f: Family, atom: usize) -> Option<usize> {
        self.grid[f.index()].loc[atom].subnet
    }

    /// The layer ids: NSG direction, or firewall.
    pub fn layer_id(&self, kind: LayerKind) -> Option<u32> {
        match kind {
            LayerKind::Nsg { nsg, direction } => self
                .nsg_layer
                .get(&(nsg, direction == Direction::Outbound))
                .copied(),
            LayerKind::Firewall { firewall } => self.fw_layer.get(firewall).copied(),
        }
    }

    /// Re-check after the rules of one NSG direction changed (same subnets and routes).
    /// Returns the number of (source atom, destination atom) pairs re-evaluated.
    pub fn update_nsg(
        &mut self,
        nsg: usize,
        direction: Direction,
        rules: &DirectionRules,
    ) -> Result<usize, String> {
        let Some(layer) = self.layer_id(LayerKind::Nsg { nsg, direction }) else {
            return Err(format!("no NSG layer {nsg}"));
        };
        let name = self.snap.nsgs[nsg].name.clone();
        let (infos, entries) = nsg_entries(rules, &name);
        self.replace_layer(layer, infos, entries, HashMap::default())
    }

    /// Re-check after a firewall's rules changed (same addresses).
    pub fn update_firewall(
        &mut self,
        firewall: usize,
        fw: &CompiledFirewall,
    ) -> Result<usize, String> {
        let Some(layer) = self.layer_id(LayerKind::Firewall { firewall }) else {
            return Err(format!("no firewall {firewall}"));
        };
        for (t, _) in (0..fw.rule_counts().0).filter_map(|r| fw.dnat_translation(r)) {
            let f = Family::of(t);
            let g = &self.grid[f.index()];
            let v = addr_value(t);
            if g.starts.binary_search(&v).is_err()
                || (v < f.max() && g.starts.binary_search(&(v + 1)).is_err())
            {
                return Err(format!(
                    "DNAT target {t} is a new address boundary: build a new engine"
                ));
            }
        }
        let (infos, entries, dnat) = fw_layer(fw);
        self.replace_layer(layer, infos, entries, dnat)
    }

    fn replace_layer(
        &mut self,
        layer: u32,
        infos: Vec<RuleInfo>,
        entries: [Vec<Entry>; 2],
        dnat: HashMap<u32, (IpAddr, Option<u16>)>,
    ) -> Result<usize, String> {
        // The atoms must already separate every address the new rules name.
        for (fi, list) in entries.iter().enumerate() {
            let g = &self.grid[fi];
            for e in list {
                for &(a, b) in e.src.ranges().iter().chain(e.dst.ranges()) {
                    let ok_a = g.starts.binary_search(&a).is_ok();
                    let ok_b = b == g.family.max() || g.starts.binary_search(&(b + 1)).is_ok();
                    if !ok_a || !ok_b {
                        return Err(
                            "the change names a new address boundary: build a new engine".into(),
                        );
                    }
                }
            }
        }
        let mut entries = entries;
        for list in &mut entries {
            for e in list.iter_mut() {
                if !self.l4.aligned(&e.l4) {
                    return Err(
                        "the change names a new protocol or port boundary: build a new engine"
                            .into(),
                    );
                }
                e.bits = self.l4.bits(&e.l4);
            }
        }
        let kind = self.layers[layer as usize].kind;
        let old_rules = std::mem::replace(&mut self.layers[layer as usize].rules, infos);
        // Rule indexes may have moved: this layer's controls are re-derived.
        self.ctrl_cache.retain(|k, _| k.0 >= 100 || k.1 != layer);
        self.layers[layer as usize].dnat = dnat;
        let any_dnat = self.layers.iter().any(|l| !l.dnat.is_empty());
        let mut count = 0;
        let [v4, v6] = entries;
        for (f, new) in [(Family::V4, v4), (Family::V6, v6)] {
            let fi = f.index();
            let new_rules = &self.layers[layer as usize].rules;
            let old = &self.layers[layer as usize].fam[fi].entries;
            let same = |a: &Entry, b: &Entry| {
                a.src == b.src
                    && a.dst == b.dst
                    && a.l4 == b.l4
                    && a.act == b.act
                    && old_rules
                        .get(a.rule as usize)
                        .map(|r| (&r.rule, r.priority))
                        == new_rules
                            .get(b.rule as usize)
                            .map(|r| (&r.rule, r.priority))
            };
            // A flow outside every rule between the first and the last difference meets the
            // same first match before and after.
            let mut lo = 0;
            while lo < old.len() && lo < new.len() && same(&old[lo], &new[lo]) {
                lo += 1;
            }
            let (mut ho, mut hn) = (old.len(), new.len());
            while ho > lo && hn > lo && same(&old[ho - 1], &new[hn - 1]) {
                ho -= 1;
                hn -= 1;
            }
            let boxes: Vec<(IntervalSet, IntervalSet)> = old[lo..ho]
                .iter()
                .chain(&new[lo..hn])
                .map(|e| (e.src.clone(), e.dst.clone()))
                .collect();
            self.layers[layer as usize].fam[fi] = fam_layer(new);
            {
                let fl = &self.layers[layer as usize].fam[fi];
                let starts = &self.grid[fi].starts;
                self.index[fi].scls[layer as usize] = classes_over(&fl.src, starts);
                self.index[fi].dcls[layer as usize] = classes_over(&fl.dst, starts);
            }
            if boxes.is_empty() {
                continue;
            }
            let snap = self.snap;
            let uses = |a: &AtomLoc, nsg: usize| {
                a.subnet.and_then(|s| snap.subnets[s].nsg) == Some(nsg)
                    || a.nic.and_then(|x| snap.nics[x].nsg) == Some(nsg)
            };
            let applies_src = |a: &AtomLoc| match kind {
                LayerKind::Nsg {
                    nsg,
                    direction: Direction::Outbound,
                } => uses(a, nsg),
                _ => true,
            };
            let applies_dst = |a: &AtomLoc| match kind {
                LayerKind::Nsg {
                    nsg,
                    direction: Direction::Inbound,
                } => uses(a, nsg) || a.frontend.is_some() || any_dnat,
                _ => true,
            };
            let g = &self.grid[fi];
            let atoms_in = |set: &IntervalSet| -> Vec<usize> {
                let mut v = vec![];
                for &(a, b) in set.ranges() {
                    v.extend(g.atom_of(a)..=g.atom_of(b));
                }
                v
            };
            let mut pairs: std::collections::HashSet<(usize, usize)> = Default::default();
            for (s, d) in &boxes {
                let ss: Vec<usize> = atoms_in(s)
                    .into_iter()
                    .filter(|a| applies_src(&g.loc[*a]))
                    .collect();
                let ds: Vec<usize> = atoms_in(d)
                    .into_iter()
                    .filter(|a| applies_dst(&g.loc[*a]))
                    .collect();
                for sa in &ss {
                    for da in &ds {
                        pairs.insert((*sa, *da));
                    }
                }
            }
            for (sa, da) in pairs {
                let d = self.evaluate(f, sa, da);
                self.rows[fi][sa][da] = d;
                count += 1;
            }
        }
        Ok(count)
    }

    /// The whole matrix as decision ids (for comparing an updated engine with a fresh one).
    pub fn answers(&self, f: Family, sa: usize, da: usize) -> Vec<(L4Set, &Outcome)> {
        let d = self.rows[f.index()][sa][da];
        if d == NONE {
            return vec![];
        }
        self.decision_pieces(d)
            .into_iter()
            .map(|(l4, o)| (l4, &self.outcomes[o as usize]))
            .collect()
    }

    /// The decision id of an atom pair ([`NONE`] outside the matrix).
    pub fn decision(&self, f: Family, sa: usize, da: usize) -> u32 {
        self.rows[f.index()][sa][da]
    }

    /// A decision's pieces: (protocol × ports, outcome id).
    pub fn decision_pieces(&self, id: u32) -> Vec<(L4Set, u32)> {
        self.decisions[id as usize]
            .iter()
            .map(|(b, o)| (self.l4.set(b), *o))
            .collect()
    }

    /// The address range of an atom.
    pub fn atom_range(&self, f: Family, atom: usize) -> IntervalSet {
        let g = &self.grid[f.index()];
        IntervalSet::range(g.starts[atom], g.end(atom))
    }

    /// First address of an atom.
    pub fn atom_start(&self, f: Family, atom: usize) -> u128 {
        self.grid[f.index()].starts[atom]
    }
}

/// Sources × destinations of one family.
pub type Area = (Family, IntervalSet, IntervalSet);

/// A region of the matrix: `src × dst × l4` with one outcome.
#[derive(Debug, Clone)]
pub struct Region {
    pub family: Family,
    pub src_atom: usize,
    pub dst_atom: usize,
    pub src: IntervalSet,
    pub dst: IntervalSet,
    pub l4: L4Set,
    pub outcome: u32,
}

// ------------------------------------------------------------------------------- reporting

/// Sources and destinations: subnets by name, addresses, prefixes.
pub fn parse_scope(snap: &Snapshot, text: &str) -> Result<[IntervalSet; 2], String> {
    let mut prefixes: Vec<IpNet> = vec![];
    for item in text.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        if let Ok(p) = item.parse::<IpNet>() {
            prefixes.push(p.trunc());
        } else if let Ok(a) = item.parse::<IpAddr>() {
            prefixes.push(IpNet::from(a));
        } else if let Some(s) = snap.subnet_by_name(item) {
            prefixes.extend(snap.subnets[s].prefixes.iter().copied());
        } else if let Some(n) = snap.nic_by_name(item) {
            prefixes.extend(snap.nics[n].addresses.iter().map(|a| IpNet::from(*a)));
        } else {
            return Err(format!(
                "`{item}` is neither a subnet, a NIC, an address nor a prefix"
            ));
        }
    }
    Ok([set_of(&prefixes, Family::V4), set_of(&prefixes, Family::V6)])
}

pub fn everything() -> [IntervalSet; 2] {
    [
        IntervalSet::range(0, Family::V4.max()),
        IntervalSet::range(0, Family::V6.max()),
    ]
}

/// Flows of one outcome between two places, as exact sets.
#[derive(Debug, Clone, Serialize)]
pub struct FlowSet {
    pub source_prefixes: Vec<String>,
    pub destination_prefixes: Vec<String>,
    /// `Tcp :443`, `Icmp`, `* ` ... one item per box of (protocol, ports).
    pub services: Vec<String>,
    /// One flow of the set, in `trace` terms.
    pub example: ExampleFlow,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ExampleFlow {
    pub protocol: String,
    pub source: String,
    pub source_port: u16,
    pub destination: String,
    pub destination_port: u16,
}

/// An example flow of `src × dst × l4`: the first address of each side, the first protocol
/// (TCP preferred), the first ports.
pub fn example(
    f: Family,
    src: &IntervalSet,
    dst: &IntervalSet,
    l4: &L4Set,
) -> Option<(ExampleFlow, Protocol)> {
    let order = [6u128, 17, if f == Family::V4 { 1 } else { 58 }, 50, 51];
    for p in order {
        for b in &l4.boxes {
            if b.0[0].contains(p) {
                let proto = match p {
                    6 => Protocol::Tcp,
                    17 => Protocol::Udp,
                    50 => Protocol::Esp,
                    51 => Protocol::Ah,
                    _ => Protocol::Icmp,
                };
                let has_ports = matches!(p, 6 | 17);
                let sp = if has_ports {
                    b.0[1].first().unwrap_or(0) as u16
                } else {
                    0
                };
                let dp = if has_ports {
                    b.0[2].first().unwrap_or(0) as u16
                } else {
                    0
                };
                return Some((
                    ExampleFlow {
                        protocol: proto.as_str().to_string(),
                        source: f.addr(src.first()?).to_string(),
                        source_port: sp,
                        destination: f.addr(dst.first()?).to_string(),
                        destination_port: dp,
                    },
                    proto,
                ));
            }
        }
    }
    None
}

pub fn services(f: Family, l4: &L4Set) -> Vec<String> {
    let mut v: Vec<String> = l4
        .boxes
        .iter()
        .map(|b| crate::headerspace::l4_box_text(b, f))
        .collect();
    v.sort();
    v
}

/// Group regions that share a key into products `sources × destinations`: regions with the
/// same destination set merge their sources.
pub fn products(
    regions: &[(Family, IntervalSet, IntervalSet)],
) -> Vec<(Family, IntervalSet, IntervalSet)> {
    let mut by_src: Vec<(Family, IntervalSet, IntervalSet)> = vec![];
    // Same source: unite destinations.
    let mut idx: HashMap<(Family, IntervalSet), usize> = HashMap::default();
    for (f, s, d) in regions {
        match idx.get(&(*f, s.clone())) {
            Some(i) => by_src[*i].2 = by_src[*i].2.union(d),
            None => {
                idx.insert((*f, s.clone()), by_src.len());
                by_src.push((*f, s.clone(), d.clone()));
            }
        }
    }
    // Same destinations: unite sources.
    let mut out: Vec<(Family, IntervalSet, IntervalSet)> = vec![];
    let mut idx2: HashMap<(Family, IntervalSet), usize> = HashMap::default();
    for (f, s, d) in by_src {
        match idx2.get(&(f, d.clone())) {
            Some(i) => out[*i].1 = out[*i].1.union(&s),
            None => {
                idx2.insert((f, d.clone()), out.len());
                out.push((f, s, d));
            }
        }
    }
    out
}

pub fn prefixes_text(f: Family, set: &IntervalSet) -> Vec<String> {
    to_prefixes(set, f).iter().map(|p| p.to_string()).collect()
}

/// Reachability between places, grouped by (source place, destination place, outcome).
#[derive(Debug, Clone, Serialize)]
pub struct ReachEntry {
    /// `vnet/subnet`, or `outside` for addresses in no subnet.
    pub source: String,
    pub destination: String,
    pub verdict: Reach,
    /// The deciding controls, in path order.
    pub decided_by: Vec<Control>,
    pub flows: Vec<FlowSet>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ReachReport {
    pub entries: Vec<ReachEntry>,
    /// Application rules: allowed by name, on these ports, from these sources (FW-6).
    pub application_rules: Vec<AppRuleSummary>,
    pub atoms: (usize, usize),
    pub plans: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct AppRuleSummary {
    pub firewall: String,
    pub rule: String,
    pub protocols: Vec<String>,
    pub sources: Vec<String>,
    pub names: Vec<String>,
}

fn place(snap: &Snapshot, s: Option<usize>) -> String {
    match s {
        Some(i) => format!("{}/{}", snap.subnets[i].vnet, snap.subnets[i].name),
        None => "outside".into(),
    }
}

/// The report for flows from `from` to `to` and, when `both`, from `to` to `from`.
/// `verdicts`: which verdicts to list (reachable only by default).
pub fn report(
    engine: &Engine,
    from: &[IntervalSet; 2],
    to: &[IntervalSet; 2],
    both: bool,
    verdicts: &[Reach],
) -> ReachReport {
    let mut regions = engine.regions(from, to);
    if both && (from != to) {
        regions.extend(engine.regions(to, from));
    }
    type Key = (String, String, u32, Vec<String>);
    let mut groups: HashMap<Key, (Vec<Area>, L4Set)> = HashMap::default();
    let mut order: Vec<Key> = vec![];
    for r in regions {
        let o = engine.outcome(r.outcome);
        if !verdicts.contains(&o.verdict) {
            continue;
        }
        let k: Key = (
            place(engine.snap, engine.atom_subnet(r.family, r.src_atom)),
            place(engine.snap, engine.atom_subnet(r.family, r.dst_atom)),
            r.outcome,
            services(r.family, &r.l4),
        );
        match groups.get_mut(&k) {
            Some(g) => g.0.push((r.family, r.src, r.dst)),
            None => {
                order.push(k.clone());
                groups.insert(k, (vec![(r.family, r.src, r.dst)], r.l4));
            }
        }
    }
    let mut entries: Vec<ReachEntry> = vec![];
    for k in order {
        let (regs, l4) = &groups[&k];
        let o = engine.outcome(k.2);
        let flows: Vec<FlowSet> = products(regs)
            .into_iter()
            .filter_map(|(f, s, d)| {
                let (ex, _) = example(f, &s, &d, l4)?;
                Some(FlowSet {
                    source_prefixes: prefixes_text(f, &s),
                    destination_prefixes: prefixes_text(f, &d),
                    services: k.3.clone(),
                    example: ex,
                })
            })
            .collect();
        match entries.iter_mut().find(|e| {
            e.source == k.0
                && e.destination == k.1
                && e.verdict == o.verdict
                && e.decided_by == o.chain
        }) {
            Some(e) => e.flows.extend(flows),
            None => entries.push(ReachEntry {
                source: k.0.clone(),
                destination: k.1.clone(),
                verdict: o.verdict,
                decided_by: o.chain.clone(),
                flows,
            }),
        }
    }
    entries.sort_by(|a, b| {
        (&a.source, &a.destination, a.verdict).cmp(&(&b.source, &b.destination, b.verdict))
    });
    let mut application_rules = vec![];
    for fw in &engine.snap.firewalls {
        for a in fw.application_rules() {
            if a.rule.action != FirewallAction::Allow {
                continue;
            }
            application_rules.push(AppRuleSummary {
                firewall: fw.name.clone(),
                rule: a.rule.path(),
                protocols: a
                    .protocols
                    .iter()
                    .map(|p| format!("{:?}:{}", p.protocol_type, p.port))
                    .collect(),
                sources: a.sources.iter().map(|p| p.to_string()).collect(),
                names: a.patterns.to_vec(),
            });
        }
    }
    ReachReport {
        entries,
        application_rules,
        atoms: engine.atoms(),
        plans: engine.stats().0,
    }
}
