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
//!   once (equivalence classes of flows, as in atomic-predicate verifiers). A plan through a
//!   firewall is stored factorised: the ids of its request path and of its arrival, each run
//!   once, joined into pieces only when a decision is read.
//! - **Re-check.** A changed layer updates its classes (cut only where the changed entries'
//!   ranges fall when as many entries replace them, rebuilt otherwise); the flows it can affect
//!   are the boxes of the rules between the first and last position where old and new rule
//!   lists differ, and only those (source atom, destination atom) pairs are re-planned.
//!
//! ## Where
//! `atoms`: the address grid and the L4 atoms; `layers`: NSG and firewall layers, their classes
//! and cells; `plans`: the path plan of an atom pair and its evaluation; `update`: the re-check;
//! `merge`: the parallel build; `report`: regions of the matrix grouped for people.
//!
//! The engine's maps hash with FxHash: their keys are small integer vectors it builds itself,
//! so a fast non-keyed hash is enough (SipHash was a tenth of the matrix time).

mod atoms;
pub mod bench;
mod layers;
mod merge;
mod plans;
mod report;
mod update;

pub use atoms::cuts;
pub use layers::LayerKind;
pub use report::{
    everything, example, parse_scope, prefixes_text, products, report, services, AppRuleSummary,
    Area, ExampleFlow, FlowSet, ReachEntry, ReachReport, Region, ScopeError, SubnetLink,
    SubnetMatrix,
};
pub use update::{ChangedPair, Growth, SavedDecisions};

use crate::headerspace::{addr_value, Family, IntervalSet, L4Set};
use atoms::{Bits, Grid, L4Atoms};
use hashbrown::HashTable;
use ipnet::IpNet;
use layers::{Layer, Piece};
use palisade_model::Direction;
use palisade_policy::{Snapshot, SubnetId};
use plans::Index;
use rustc_hash::FxHashMap as HashMap;
use serde::Serialize;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

/// The answer for a set of flows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[repr(u8)]
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

/// An outcome id is the verdict (top 3 bits), the chain of the request path up to the firewall
/// (29 bits) and the chain after it (low 32 bits): equal ids are equal outcomes (chains are
/// hash-consed, and an arrival's chain never names a firewall, so the split is unique) without a
/// table of outcomes, and without joining the two chains — that is done only when spelled out.
const CHAIN_BITS: u32 = 29;
const VERDICTS: [Reach; 5] = [
    Reach::Allow,
    Reach::Deny,
    Reach::Drop,
    Reach::Unknown,
    Reach::ByName,
];

fn outcome_id(verdict: Reach, head: u32, tail: u32) -> u64 {
    // A capacity limit, not an input error: 2^29 chains would take over 4 GiB. Stop rather
    // than let two outcomes share an id.
    assert!(head < 1 << CHAIN_BITS, "more than 2^29 chains of controls");
    (verdict as u64) << 61 | (head as u64) << 32 | tail as u64
}

/// A decision: its pieces as stored, or a request path's result and an arrival's pieces joined
/// only when asked (the factorised matrix: both are shared by many atom pairs).
#[derive(Debug, Clone, Copy)]
enum Decision {
    /// First word in `dec_words` and piece count.
    Pieces(usize, u32),
    /// Ids in `requests` and `arrivals`.
    Composed(u32, u32),
}

/// No decision: the pair is outside what reachability covers (neither end in the network).
pub const NONE: u32 = u32::MAX;

/// The reachability engine over one snapshot.
pub struct Engine<'s> {
    pub snap: &'s Snapshot,
    grid: [Grid; 2],
    layers: Vec<Layer>,
    /// Per NSG, by [`palisade_policy::NsgId::index`]: its inbound layer, its outbound layer
    /// (read for every NSG step of 1.4 M plans at 500 spokes: an index, not a hash look-up).
    nsg_layer: Vec<[u32; 2]>,
    /// Per firewall, by [`palisade_policy::FirewallId::index`]: its layer, and the subnet it
    /// sits in (a look-up of its address per plan through it before).
    fw_layer: Vec<u32>,
    fw_subnet: Vec<Option<SubnetId>>,
    cells: Vec<Vec<Piece>>,
    /// Cells by content: equal pieces, one id (a rule index means the layer of the step). The
    /// table holds ids only, hashed from the pieces in place (`Engine::intern_cell`): a key
    /// copied out of every walked slot was most of storing a cell (757 k slots, 25.8 k cells).
    cell_ids: HashTable<u32>,
    controls: Vec<Control>,
    control_ids: HashMap<Control, u32>,
    ctrl_cache: HashMap<(u8, u32, u32), u32>,
    /// Chains of controls, hash-consed as a trie: id → (shorter chain, last control); id 0 is
    /// the empty chain. Extending a chain is one look-up, and equal chains are equal ids.
    /// An outcome is a chain id and a verdict in one integer ([`outcome_id`]): compared as an
    /// integer, spelled out on demand.
    chains: Vec<(u32, u32)>,
    chain_ids: HashTable<u32>,
    /// Decisions by id. Stored pieces (paths with DNAT or without a firewall) live in one
    /// arena: a piece is the L4 bits then the outcome id (`l4.words + 1` words); equal stored
    /// decisions share one id (`dec_index` holds ids by content hash), as do equal
    /// (request, arrival) pairs (`composed`).
    decisions: Vec<Decision>,
    dec_words: Vec<u64>,
    dec_index: HashTable<u32>,
    composed: plans::Composed,
    /// Composed pairs not yet in `composed` (`plans::Recent`).
    recent: plans::Recent,
    l4: L4Atoms,
    /// Request paths up to and including the firewall, each run once: the flows still going
    /// and those it ended, by the path's steps (`plans::Plan`).
    requests: Vec<plans::Prefix>,
    request_ids: HashMap<plans::PathKey, u32>,
    /// The rest of a path after the firewall, run once from the full L4 set and the empty
    /// chain: its pieces with the index of the step that ended each.
    arrivals: Vec<Vec<plans::Ended>>,
    arrival_ids: HashMap<plans::PathKey, u32>,
    /// Per family, per source atom: the decision per destination atom.
    rows: [Vec<Vec<u32>>; 2],
    /// Shared with a parallel build's workers, which only read it (a copy per worker was
    /// 50 MiB written on the build's critical path); a re-check changes it in place.
    index: [Arc<Index>; 2],
    /// Build the matrix on every thread of the rayon pool ([`Engine::parallel`]).
    parallel: bool,
    /// Wall seconds per phase of the build ([`Engine::build_phases`]).
    phases: Vec<(&'static str, f64)>,
    /// The buffers of a (source place, destination place) block, reused block after block.
    /// Boxed: the block is taken out of the engine for each of 252 k blocks, and moving the
    /// 900-byte struct in and out was 2 % of the build.
    block: Option<Box<plans::Block>>,
    /// The plan being evaluated (a buffer reused).
    plan_buf: plans::Plan,
    /// The tables' size after the last full build (`update::table_size`): re-checks only add
    /// to them, so past a multiple of this the engine is rebuilt from its layers.
    baseline: usize,
    /// The pieces of the cell being walked (a buffer reused).
    walk_buf: Vec<layers::Piece>,
    /// The flows still going between two steps of `run_steps` (a buffer reused).
    step_buf: Vec<(Bits, u32)>,
}

impl<'s> Engine<'s> {
    /// Build the engine and compute the full matrix.
    pub fn new(snap: &'s Snapshot) -> Engine<'s> {
        Engine::with_cuts(snap, &[])
    }

    /// Like [`Engine::new`], on every thread of the rayon pool: the source places cut into one
    /// range per thread, each built by its own engine, the workers' tables merged in range order
    /// (`merge`), so answers and ids equal [`Engine::new`]'s. Pays when the cores are free:
    /// 0.64× the serial wall time on the idle 2-core machine, none on a loaded one.
    pub fn parallel(snap: &'s Snapshot) -> Engine<'s> {
        Engine::build(snap, &[], true)
    }

    /// Like [`Engine::new`], with extra address boundaries (to compare two snapshots on one grid).
    pub fn with_cuts(snap: &'s Snapshot, extra: &[IpNet]) -> Engine<'s> {
        Engine::build(snap, extra, false)
    }

    /// [`Engine::with_cuts`] on every thread of the rayon pool, as [`Engine::parallel`].
    pub fn parallel_with_cuts(snap: &'s Snapshot, extra: &[IpNet]) -> Engine<'s> {
        Engine::build(snap, extra, true)
    }

    fn build(snap: &'s Snapshot, extra: &[IpNet], parallel: bool) -> Engine<'s> {
        let mut t = Instant::now();
        let mut all = cuts(snap);
        all.extend_from_slice(extra);
        let grid = if parallel {
            let (v4, v6) = rayon::join(
                || Grid::new(snap, Family::V4, &all, true),
                || Grid::new(snap, Family::V6, &all, true),
            );
            [v4, v6]
        } else {
            [Family::V4, Family::V6].map(|f| Grid::new(snap, f, &all, false))
        };
        let l4 = L4Atoms::build(std::iter::empty());
        let mut e = Engine::empty(snap, grid, l4, parallel);
        e.lap("grid", &mut t);
        e.add_layers();
        e.lap("layers", &mut t);
        e.compute_all();
        e.baseline = e.table_size();
        e
    }

    /// Adds the wall time since `t` to phase `name` of the build, and restarts `t`.
    pub(super) fn lap(&mut self, name: &'static str, t: &mut Instant) {
        let s = t.elapsed().as_secs_f64();
        *t = Instant::now();
        match self.phases.iter_mut().find(|(n, _)| *n == name) {
            Some(p) => p.1 += s,
            None => self.phases.push((name, s)),
        }
    }

    /// Wall seconds of each phase of the build, in order (`grid`, `layers`, then per family
    /// `index`, `blocks` and, in a parallel build, `merge`): where the matrix time goes.
    pub fn build_phases(&self) -> &[(&'static str, f64)] {
        &self.phases
    }

    /// Dropped with its large tables freed on another thread: handing hundreds of MiB back to
    /// the allocator and the kernel is work the caller's answer does not wait for (a diff's
    /// engine, a parallel build's merged workers). Inline when no thread can be had.
    pub fn drop_elsewhere(mut self) {
        let tables = (
            std::mem::take(&mut self.layers),
            std::mem::take(&mut self.rows),
            std::mem::take(&mut self.cells),
            std::mem::take(&mut self.decisions),
            std::mem::take(&mut self.dec_words),
            std::mem::take(&mut self.composed),
            std::mem::take(&mut self.requests),
            std::mem::take(&mut self.arrivals),
            std::mem::take(&mut self.request_ids),
            std::mem::take(&mut self.arrival_ids),
        );
        // A refused thread drops its closure, and the tables with it, here.
        let _ = std::thread::Builder::new().spawn(move || drop(tables));
    }

    /// An engine over `grid` with no layers and empty tables: `build` and the parallel build's
    /// workers fill it.
    fn empty(snap: &'s Snapshot, grid: [Grid; 2], l4: L4Atoms, parallel: bool) -> Engine<'s> {
        Engine {
            snap,
            grid,
            layers: vec![],
            nsg_layer: vec![],
            fw_subnet: vec![],
            fw_layer: vec![],
            cells: vec![],
            cell_ids: HashTable::new(),
            controls: vec![],
            control_ids: HashMap::default(),
            ctrl_cache: HashMap::default(),
            chains: vec![(0, u32::MAX)],
            chain_ids: HashTable::new(),
            decisions: vec![],
            dec_words: vec![],
            dec_index: HashTable::new(),
            composed: Default::default(),
            recent: Default::default(),
            l4,
            requests: vec![],
            request_ids: HashMap::default(),
            arrivals: vec![],
            arrival_ids: HashMap::default(),
            rows: [vec![], vec![]],
            index: Default::default(),
            parallel,
            phases: vec![],
            block: None,
            plan_buf: Default::default(),
            baseline: 0,
            walk_buf: vec![],
            step_buf: vec![],
        }
    }

    /// Number of atoms per family (IPv4, IPv6).
    pub fn atoms(&self) -> (usize, usize) {
        (self.grid[0].len(), self.grid[1].len())
    }

    /// Distinct decisions, cells and chains of controls evaluated so far.
    pub fn stats(&self) -> (usize, usize, usize) {
        (self.decisions.len(), self.cells.len(), self.chains.len())
    }

    /// The answer for one flow, from the matrix (for tests and spot checks).
    pub fn lookup(
        &self,
        proto: u8,
        src: IpAddr,
        dst: IpAddr,
        sport: u16,
        dport: u16,
    ) -> Option<Outcome> {
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
        self.decision_bits(d)
            .into_iter()
            .find(|(b, _)| b[i / 64] >> (i % 64) & 1 == 1)
            .map(|(_, o)| self.outcome(o))
    }

    /// An outcome spelled out: its verdict and its chain of controls in path order.
    pub fn outcome(&self, id: u64) -> Outcome {
        let verdict = VERDICTS[(id >> 61) as usize];
        let head = (id >> 32) as u32 & ((1 << CHAIN_BITS) - 1);
        let mut chain = self.chain(head);
        chain.extend(self.chain(id as u32));
        Outcome { verdict, chain }
    }

    /// The verdict of an outcome id, without spelling out its chain.
    pub fn verdict(id: u64) -> Reach {
        VERDICTS[(id >> 61) as usize]
    }

    /// The controls of a chain id, in path order.
    fn chain(&self, c: u32) -> Vec<Control> {
        self.chain_of(&self.controls, c)
    }

    /// A chain id spelled out with `controls` (the engine's, or a copy saved before a re-check
    /// relabelled some of them).
    pub(super) fn chain_of(&self, controls: &[Control], mut c: u32) -> Vec<Control> {
        let mut chain = vec![];
        while c != 0 {
            let (shorter, ctrl) = self.chains[c as usize];
            chain.push(controls[ctrl as usize].clone());
            c = shorter;
        }
        chain.reverse();
        chain
    }

    /// Subnet of an atom, or `None` outside every subnet.
    pub fn atom_subnet(&self, f: Family, atom: usize) -> Option<SubnetId> {
        self.grid[f.index()].loc[atom].subnet
    }

    /// The layer ids: NSG direction, or firewall.
    pub fn layer_id(&self, kind: LayerKind) -> Option<u32> {
        match kind {
            LayerKind::Nsg { nsg, direction } => self
                .nsg_layer
                .get(nsg.index())
                .map(|l| l[(direction == Direction::Outbound) as usize]),
            LayerKind::Firewall { firewall } => self.fw_layer.get(firewall.index()).copied(),
        }
    }

    /// The whole matrix as decision ids (for comparing an updated engine with a fresh one).
    pub fn answers(&self, f: Family, sa: usize, da: usize) -> Vec<(L4Set, Outcome)> {
        let d = self.rows[f.index()][sa][da];
        if d == NONE {
            return vec![];
        }
        self.decision_pieces(d)
            .into_iter()
            .map(|(l4, o)| (l4, self.outcome(o)))
            .collect()
    }

    /// The decision id of an atom pair ([`NONE`] outside the matrix).
    pub fn decision(&self, f: Family, sa: usize, da: usize) -> u32 {
        self.rows[f.index()][sa][da]
    }

    /// A decision's pieces: (protocol × ports, outcome id).
    pub fn decision_pieces(&self, id: u32) -> Vec<(L4Set, u64)> {
        self.decision_bits(id)
            .into_iter()
            .map(|(b, o)| (self.l4.set(&b), o))
            .collect()
    }

    /// A decision's pieces as L4 bits and outcome ids; a composed decision is joined here.
    fn decision_bits(&self, id: u32) -> Vec<(Bits, u64)> {
        let w = self.l4.words;
        match self.decisions[id as usize] {
            Decision::Pieces(start, n) => self.dec_words[start..start + n as usize * (w + 1)]
                .chunks(w + 1)
                .map(|p| (Bits::from_slice(&p[..w]), p[w]))
                .collect(),
            Decision::Composed(request, arrival) => self.compose(request, arrival),
        }
    }

    /// Whether two engines cut protocols and ports into the same L4 atoms (their
    /// [`Engine::verdict_classes`] are then comparable).
    pub fn same_l4(&self, other: &Engine) -> bool {
        let (a, b) = (&self.l4, &other.l4);
        (&a.protos, &a.sports, &a.dports, &a.atoms) == (&b.protos, &b.sports, &b.dports, &b.atoms)
    }

    /// Per decision id, a class: decisions in one class (of this engine or of another with
    /// [`Engine::same_l4`] sharing `table`) give every flow the same verdict. For `diff`: a
    /// pair of decisions in one class changes no verdict, without spelling out its pieces.
    pub fn verdict_classes(&self, table: &mut HashMap<Vec<u64>, u32>) -> Vec<u32> {
        let w = self.l4.words;
        (0..self.decisions.len() as u32)
            .map(|d| {
                let mut sig = vec![0u64; w * VERDICTS.len()];
                for (bits, o) in self.decision_bits(d) {
                    let v = (o >> 61) as usize * w;
                    for (x, b) in sig[v..v + w].iter_mut().zip(&bits) {
                        *x |= b;
                    }
                }
                let next = table.len() as u32;
                *table.entry(sig).or_insert(next)
            })
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
