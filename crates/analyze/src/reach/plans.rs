//! Path plans: for an (source atom, destination atom) pair, the cells and route decisions its
//! flows meet in order; atoms are grouped per (source place, destination place) so that each
//! distinct plan is evaluated once, over the L4 atoms.

use super::atoms::{and, classes_over, zero, AtomLoc, Bits};
use super::layers::{Act, Layer, LayerKind, Piece};
use super::{outcome_id, Control, Decision, Engine, Reach, NONE, VERDICTS};
use crate::headerspace::{addr_value, prefix_range, Family};
use palisade_model::NextHopType;
use palisade_policy::addresses::AZURE_WIRE_SERVER;
use palisade_policy::routes::{EffectiveRoute, RouteSource, SubnetRoutes};
use palisade_policy::{FirewallId, NsgId, SubnetId};
use rayon::prelude::*;
use rustc_hash::{FxHashMap as HashMap, FxHasher};
use std::hash::{Hash, Hasher};
use std::net::IpAddr;
use std::sync::Arc;

fn hash_pair(x: (u32, u32)) -> u64 {
    let mut h = FxHasher::default();
    x.hash(&mut h);
    h.finish()
}

fn hash_words(x: &[u64]) -> u64 {
    let mut h = FxHasher::default();
    x.hash(&mut h);
    h.finish()
}

fn hash_cell(pieces: &[Piece]) -> u64 {
    let mut h = FxHasher::default();
    for p in pieces {
        p.l4.hash(&mut h);
        p.act.hash(&mut h);
        p.rule.hash(&mut h);
    }
    h.finish()
}

fn same_cell(a: &[Piece], b: &[Piece]) -> bool {
    a.len() == b.len()
        && a.iter()
            .zip(b)
            .all(|(x, y)| x.l4 == y.l4 && x.act == y.act && x.rule == y.rule)
}

/// One step of a path plan, as run (a plan is built as its memo key, [`Plan`]).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) enum Step {
    /// Apply a layer's cell; `dport`: evaluate at this destination port (after DNAT).
    Cell {
        layer: u32,
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

pub(super) const STEP_NAMES: [&str; 8] = [
    "NicNsgOut",
    "SubnetNsgOut",
    "Route",
    "Firewall",
    "SubnetNsgIn",
    "NicNsgIn",
    "ReplyRoute",
    "FirewallRoute",
];
const S_NIC_OUT: u8 = 0;
const S_SUB_OUT: u8 = 1;
const S_FW: u8 = 3;
const S_SUB_IN: u8 = 4;
const S_NIC_IN: u8 = 5;
const S_FW_ROUTE: u8 = 7;

/// A run of plan steps as a memo key: per step (step + layer version × 256, layer, cell),
/// (`u8::MAX`, control, 0) or (`u8::MAX - 1`, verdict, 0).
pub(super) type PathKey = Vec<(u32, u32, u32)>;

/// Flows still going after a request path (L4 bits, chain), and those it ended.
pub(super) type Prefix = (Vec<(Bits, u32)>, Vec<(Bits, Reach, u32)>);

/// A piece an arrival ended: the index of the step that ended it, L4 bits, verdict, chain.
pub(super) type Ended = (u32, Bits, Reach, u32);

/// A (source place, destination place) block grouped: what [`Engine::group_block`] hands to
/// [`Engine::finish_block`], with the buffers both use. One is kept by the engine and reused
/// for every block: fresh vectors per block were ≈ 30 allocations for each of 252 k blocks.
#[derive(Default)]
pub(super) struct Block {
    layers: Vec<u32>,
    reply: Vec<usize>,
    srcs: Vec<u32>,
    dsts: Vec<u32>,
    /// Per atom of each side its class group, and a representative atom per group.
    sg0: Vec<u32>,
    dg0: Vec<u32>,
    sreps0: Vec<u32>,
    dreps0: Vec<u32>,
    /// Per group, `width` words each: the part of its key that is not a cell (special atom,
    /// routes). One flat buffer per side.
    fixed_s: Vec<u32>,
    fixed_d: Vec<u32>,
    width_s: usize,
    width_d: usize,
    /// Scratch of the grouping and the refine.
    keys: Vec<u32>,
    order: Vec<u32>,
    key: Vec<u32>,
    srow: Vec<u32>,
    dcol: Vec<u32>,
    small: Vec<u32>,
    trans: Vec<u32>,
    smap: Vec<u32>,
    sfirst: Vec<usize>,
    dmap: Vec<u32>,
    dfirst: Vec<usize>,
    rows: Vec<u32>,
    cols: Vec<u32>,
    firsts: Vec<usize>,
    /// The refined groups: per first group its group, and a first group per group.
    smap1: Vec<u32>,
    sr: Vec<usize>,
    dmap1: Vec<u32>,
    dr: Vec<usize>,
    dec: Vec<u32>,
}

/// Atoms grouped by their keys (`k` words each, written by `key`): per atom its group in
/// `gid`, a representative atom per group in `reps`, groups in key order.
fn group(
    atoms: &[u32],
    k: usize,
    key: impl Fn(u32, &mut Vec<u32>),
    (keys, order): (&mut Vec<u32>, &mut Vec<u32>),
    gid: &mut Vec<u32>,
    reps: &mut Vec<u32>,
) {
    keys.clear();
    for &a in atoms {
        key(a, keys);
    }
    order.clear();
    order.extend(0..atoms.len() as u32);
    let at = |i: u32| &keys[i as usize * k..(i as usize + 1) * k];
    order.sort_unstable_by(|x, y| at(*x).cmp(at(*y)));
    gid.clear();
    gid.resize(atoms.len(), 0);
    reps.clear();
    for (j, &i) in order.iter().enumerate() {
        if j == 0 || at(order[j - 1]) != at(i) {
            reps.push(atoms[i as usize]);
        }
        gid[i as usize] = reps.len() as u32 - 1;
    }
}

/// Groups whose keys (`fixed`: `fw` words per group, then `part`: `nl` words per group) are
/// equal merged: `map` per group its refined group, `reps` a first group per refined group.
fn refine(
    (n, nl): (usize, usize),
    (fixed, fw): (&[u32], usize),
    part: &[u32],
    keys: &mut Vec<u32>,
    map: &mut Vec<u32>,
    reps: &mut Vec<usize>,
) {
    let width = fw + nl;
    keys.clear();
    for i in 0..n {
        keys.extend_from_slice(&fixed[i * fw..(i + 1) * fw]);
        keys.extend_from_slice(&part[i * nl..(i + 1) * nl]);
    }
    first_seen(n, |i| &keys[i * width..(i + 1) * width], map, reps);
}

const K_CTRL: u32 = u8::MAX as u32;
const K_END: u32 = u8::MAX as u32 - 1;

/// A plan as it is built: its steps written straight in their memo-key form ([`PathKey`]), so
/// that a plan through a firewall is its request and arrival keys with no [`Step`] built —
/// assembling a 40-byte `Step` per step was most of building a plan (1.36 M plans at 500
/// spokes). `Step`s are built only to run a key that is new, or a plan run whole.
#[derive(Default)]
pub(super) struct Plan {
    steps: PathKey,
    /// The firewall step's DNAT sub-plans, by rule; when there are any the plan is run whole.
    dnat: Vec<(u32, Vec<Step>)>,
    /// Steps evaluated at a destination port (index, port); such a plan is run whole too.
    ports: Vec<(usize, u16)>,
}

impl Plan {
    fn clear(&mut self) {
        self.steps.clear();
        self.dnat.clear();
        self.ports.clear();
    }

    /// The length of the request path (up to and including the firewall step: the same for one
    /// source group towards many destinations; the rest, the arrival, is the same for many
    /// sources towards one destination group). `None`: no firewall on the path, or DNAT on it.
    fn split(&self) -> Option<usize> {
        if !self.dnat.is_empty() || !self.ports.is_empty() {
            return None;
        }
        let fw = self.steps.iter().position(|s| s.0 & 0xff == S_FW as u32)?;
        Some(fw + 1)
    }
}

/// Where the plan builders write steps: a top-level [`Plan`], or a DNAT sub-plan as `Step`s.
trait Sink {
    /// A layer's cell; `version` is the layer's, part of the memo key.
    fn cell(&mut self, layer: (u32, u32), cell: u32, step: u8, dport: Option<u16>);
    fn ctrl(&mut self, c: u32);
    fn end(&mut self, v: Reach);
}

impl Sink for Vec<Step> {
    fn cell(&mut self, (layer, _): (u32, u32), cell: u32, step: u8, dport: Option<u16>) {
        self.push(Step::Cell {
            layer,
            cell,
            step,
            dport,
            dnat: vec![],
        });
    }
    fn ctrl(&mut self, c: u32) {
        self.push(Step::Ctrl(c));
    }
    fn end(&mut self, v: Reach) {
        self.push(Step::End(v));
    }
}

impl Sink for Plan {
    fn cell(&mut self, (layer, version): (u32, u32), cell: u32, step: u8, dport: Option<u16>) {
        if let Some(port) = dport {
            self.ports.push((self.steps.len(), port));
        }
        self.steps.push((step as u32 | version << 8, layer, cell));
    }
    fn ctrl(&mut self, c: u32) {
        self.steps.push((K_CTRL, c, 0));
    }
    fn end(&mut self, v: Reach) {
        self.steps.push((K_END, v as u32, 0));
    }
}

/// Key steps as `Step`s, to be run: the firewall step gets the DNAT sub-plans `dnat`, a step in
/// `ports` its destination port.
fn to_steps(
    keys: &[(u32, u32, u32)],
    dnat: &mut Vec<(u32, Vec<Step>)>,
    ports: &[(usize, u16)],
    out: &mut Vec<Step>,
) {
    out.clear();
    for (i, &(s, a, b)) in keys.iter().enumerate() {
        out.push(match s {
            K_CTRL => Step::Ctrl(a),
            K_END => Step::End(VERDICTS[a as usize]),
            _ => {
                let step = (s & 0xff) as u8;
                Step::Cell {
                    layer: a,
                    cell: b,
                    step,
                    dport: ports.iter().find(|p| p.0 == i).map(|p| p.1),
                    dnat: if step == S_FW {
                        std::mem::take(dnat)
                    } else {
                        vec![]
                    },
                }
            }
        });
    }
}

/// The (request, arrival) → decision pairs made since they were last moved into the large
/// `composed_ids` table. Most evaluations name a request or an arrival made in the same source
/// place's row of blocks, whose pairs are all here: a small table, hot in cache, instead of a
/// probe of `composed_ids` (over a million pairs at 500 spokes) per evaluated pair, which was
/// the largest part of `finish_block`'s own time. The pairs are moved in at the end of each row,
/// where many inserts in a row overlap their cache misses.
#[derive(Default)]
pub(super) struct Recent {
    pairs: HashMap<(u32, u32), u32>,
    /// Requests and arrivals from these ids on were made since the last move.
    requests: u32,
    arrivals: u32,
    /// `composed.len()` after the last move.
    flushed: usize,
    /// The pairs being moved, sorted (a buffer reused).
    moving: Vec<((u32, u32), u32)>,
}

/// At most this many recent pairs are kept before they are moved into `composed`.
const RECENT_PAIRS: usize = 1 << 14;

/// The (request, arrival) → decision pairs, by request: per request id, its pairs as
/// (arrival, decision) sorted by arrival. Most requests meet few arrivals (median 2 at 500
/// spokes; 1 % meet about a thousand), so a list per request is filled, searched and merged
/// with little work, where one table of 1.25 M pairs took a cache miss per pair to fill (5 %
/// of the build) and again to merge a worker's pairs.
///
/// A list is made once, with the first pairs its request meets (during the build, all of
/// them); pairs met later (a re-check's new arrivals for old requests) go to `later`: growing
/// a list of a thousand pairs for one more copied it from memory, 2–4 µs per pair. The lists
/// are kept in chunks of [`COMPOSED_CHUNK`] requests, each allocated whole, so the requests a
/// re-check makes add a chunk at most rather than copy every list header.
#[derive(Default)]
pub(super) struct Composed {
    chunks: Vec<Vec<Vec<(u32, u32)>>>,
    later: HashMap<(u32, u32), u32>,
    len: usize,
}

const COMPOSED_CHUNK: usize = 1 << 12;

impl Composed {
    pub(super) fn get(&self, (request, arrival): (u32, u32)) -> Option<u32> {
        let r = request as usize;
        let list = self
            .chunks
            .get(r / COMPOSED_CHUNK)?
            .get(r % COMPOSED_CHUNK)?;
        match list.binary_search_by_key(&arrival, |p| p.0) {
            Ok(i) => Some(list[i].1),
            Err(_) => self.later.get(&(request, arrival)).copied(),
        }
    }

    pub(super) fn len(&self) -> usize {
        self.len
    }

    /// A request's pairs, none of them stored yet, in any order: made its list when it has
    /// none yet (a worker's list moves into the merged engine as it is).
    pub(super) fn add(&mut self, request: u32, mut pairs: Vec<(u32, u32)>) {
        self.len += pairs.len();
        let list = self.list_mut(request);
        if list.is_empty() {
            pairs.sort_unstable_by_key(|p| p.0);
            *list = pairs;
        } else {
            self.later
                .extend(pairs.into_iter().map(|(a, d)| ((request, a), d)));
        }
    }

    /// Each request's list, taken out, with the pairs met later.
    pub(super) fn take_all(&mut self) -> Vec<(u32, Vec<(u32, u32)>)> {
        self.len = 0;
        let mut all: Vec<(u32, Vec<(u32, u32)>)> = self
            .chunks
            .iter_mut()
            .flatten()
            .enumerate()
            .map(|(r, list)| (r as u32, std::mem::take(list)))
            .collect();
        for ((r, a), d) in self.later.drain() {
            all[r as usize].1.push((a, d));
        }
        all
    }

    fn list_mut(&mut self, request: u32) -> &mut Vec<(u32, u32)> {
        let (c, i) = (
            request as usize / COMPOSED_CHUNK,
            request as usize % COMPOSED_CHUNK,
        );
        if self.chunks.len() <= c {
            self.chunks
                .resize_with(c + 1, || Vec::with_capacity(COMPOSED_CHUNK));
        }
        let chunk = &mut self.chunks[c];
        if chunk.len() <= i {
            chunk.resize_with(i + 1, Vec::new);
        }
        &mut chunk[i]
    }
}

/// Families with fewer atoms are built serially by [`Engine::parallel`].
const PARALLEL_ATOMS: usize = 64;

/// Up to this many groups on a side, a block's groups are refined by comparing keys directly.
const SMALL_GROUPS: usize = 16;

/// Per family: what the layers and routes see of every atom (see [`Engine::build_index`]).
#[derive(Default, Clone)]
pub(super) struct Index {
    /// Per layer, per atom: its source class, its destination class.
    pub(super) scls: Vec<Vec<u32>>,
    pub(super) dcls: Vec<Vec<u32>>,
    /// Per subnet (by [`SubnetId::index`]), per atom: the index of the route the subnet uses
    /// for it (`u32::MAX`: none).
    route: Vec<Vec<u32>>,
    /// Per place (each subnet, then "outside"): its atoms.
    pub(super) places: Vec<Vec<u32>>,
    /// Per place: the NSG layers (subnet and NICs) on the way out, on the way in.
    out_layers: Vec<Vec<u32>>,
    in_layers: Vec<Vec<u32>>,
    /// Subnets holding a DNAT target (as places), and their inbound NSG layers.
    dnat_subnets: Vec<usize>,
    pub(super) dnat_layers: Vec<u32>,
    /// Subnets holding a firewall: their routes carry what it lets through (DIAG-7).
    fw_subnets: Vec<usize>,
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

/// Add a piece to a decision: OR-ed into the piece of the same outcome, else appended.
fn merge_piece(pieces: &mut Vec<(Bits, u64)>, l4: Bits, id: u64) {
    match pieces.iter_mut().find(|(_, i)| *i == id) {
        Some(p) => p.0.iter_mut().zip(&l4).for_each(|(x, y)| *x |= y),
        None => pieces.push((l4, id)),
    }
}

/// For each of `n` items, the index of its key among the distinct keys in first-seen order
/// (`map`), and the first item of each distinct key (`firsts`); both buffers are reused.
fn first_seen<K: Eq + std::hash::Hash>(
    n: usize,
    key: impl Fn(usize) -> K,
    map: &mut Vec<u32>,
    firsts: &mut Vec<usize>,
) {
    map.clear();
    firsts.clear();
    if n <= SMALL_GROUPS {
        // Few items (most blocks): compare with the keys kept so far, no table.
        for i in 0..n {
            let k = key(i);
            let g = match firsts.iter().position(|f| key(*f) == k) {
                Some(g) => g,
                None => {
                    firsts.push(i);
                    firsts.len() - 1
                }
            };
            map.push(g as u32);
        }
        return;
    }
    let mut ids: HashMap<K, u32> = HashMap::with_capacity_and_hasher(n, Default::default());
    for i in 0..n {
        let next = ids.len() as u32;
        let g = *ids.entry(key(i)).or_insert_with(|| {
            firsts.push(i);
            next
        });
        map.push(g);
    }
}

impl<'s> Engine<'s> {
    pub(super) fn compute_all(&mut self) {
        let mut t = std::time::Instant::now();
        for f in [Family::V4, Family::V6] {
            let fi = f.index();
            let n = self.grid[fi].len();
            // A family of few atoms (IPv6 here) costs less than a worker's set-up.
            let parallel = self.parallel && n >= PARALLEL_ATOMS;
            // A parallel build fills the rows per range (`compute_family_parallel`).
            self.rows[fi] = if parallel {
                vec![vec![]; n]
            } else {
                vec![vec![NONE; n]; n]
            };
            self.build_index(f);
            self.lap("index", &mut t);
            let places = self.index[fi].places.len();
            if parallel {
                self.compute_family_parallel(f, rayon::current_num_threads(), &mut t);
                continue;
            }
            for s in 0..places {
                for d in 0..places {
                    self.compute_block(f, s, d, None);
                }
            }
            self.lap("blocks", &mut t);
        }
    }

    /// Per family: each layer's source and destination class of every atom, each subnet's route
    /// for every atom, the atoms of every place (subnet, then "outside").
    fn build_index(&mut self, f: Family) {
        let fi = f.index();
        let g = &self.grid[fi];
        let snap = self.snap;
        let mut ix = Index::default();
        let classes = |l: &Layer| {
            let fl = &l.fam[fi];
            (
                classes_over(&fl.src, &g.starts),
                classes_over(&fl.dst, &g.starts),
            )
        };
        // A subnet's route for an address changes only where one of its routes' prefixes
        // starts or ends: one look-up per run of atoms between those boundaries (a look-up per
        // atom was 1.6 M look-ups at 500 spokes, most of the index).
        let routes = |s: &palisade_policy::snapshot::SubnetEntry| -> Vec<u32> {
            let mut bounds: Vec<u128> = vec![];
            for p in s.routes.routes.iter().flat_map(|r| &r.address_prefix) {
                if Family::of(p.addr()) == f {
                    let (a, b) = prefix_range(p);
                    bounds.push(a);
                    bounds.extend(b.checked_add(1));
                }
            }
            bounds.sort_unstable();
            let (mut next, mut cur) = (0, u32::MAX);
            (0..g.len())
                .map(|a| {
                    let x = g.starts[a];
                    let crossed = next < bounds.len() && bounds[next] <= x;
                    while next < bounds.len() && bounds[next] <= x {
                        next += 1;
                    }
                    if a == 0 || crossed {
                        cur = s
                            .routes
                            .lookup(f.addr(x))
                            .map(|(_, r)| route_index(&s.routes, r))
                            .unwrap_or(u32::MAX);
                    }
                    cur
                })
                .collect()
        };
        // Pure functions of the layers and routes: on every thread for a parallel build (a
        // route look-up per subnet and atom is 1.6 M look-ups at 500 spokes).
        let subnets: Vec<_> = snap.subnets().map(|(_, s)| s).collect();
        let (cls, route): (Vec<_>, Vec<_>) = if self.parallel {
            (
                self.layers.par_iter().map(classes).collect(),
                subnets.par_iter().map(|s| routes(s)).collect(),
            )
        } else {
            (
                self.layers.iter().map(classes).collect(),
                subnets.iter().map(|s| routes(s)).collect(),
            )
        };
        (ix.scls, ix.dcls) = cls.into_iter().unzip();
        ix.route = route;
        let outside = snap.subnets().len();
        ix.places = vec![vec![]; outside + 1];
        for a in 0..g.len() {
            ix.places[g.loc[a].subnet.map_or(outside, SubnetId::index)].push(a as u32);
        }
        // Layers met on the way out of a place, into a place, and DNAT targets.
        let nsg_layers = |sub: SubnetId, outbound: bool| -> Vec<u32> {
            let mut v = vec![];
            if let Some(n) = snap.subnet(sub).nsg {
                v.push(self.nsg_layer[n.index()][outbound as usize]);
            }
            for (_, nic) in snap.nics().filter(|(_, n)| n.subnet == Some(sub)) {
                if let Some(n) = nic.nsg {
                    v.push(self.nsg_layer[n.index()][outbound as usize]);
                }
            }
            v
        };
        let per_place = |outbound: bool| -> Vec<Vec<u32>> {
            snap.subnets()
                .map(|(s, _)| nsg_layers(s, outbound))
                .chain([vec![]])
                .collect()
        };
        ix.out_layers = per_place(true);
        ix.in_layers = per_place(false);
        let mut targets: Vec<SubnetId> = vec![];
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
        ix.dnat_subnets = targets.iter().map(|t| t.index()).collect();
        ix.fw_subnets = self.fw_subnet.iter().flatten().map(|s| s.index()).collect();
        self.index[fi] = Arc::new(ix);
    }

    /// Evaluate the pairs (source in place `s`, destination in place `d`): atoms of each side
    /// are grouped by what the layers on this path see of them (their classes in the layers of
    /// the path, the routes that look them up), one pair per group pair is evaluated. `only`:
    /// restrict to these source and destination atoms (re-check).
    pub(super) fn compute_block(
        &mut self,
        f: Family,
        s: usize,
        d: usize,
        only: Option<(&[u32], &[u32])>,
    ) {
        let mut b = self.block.take().unwrap_or_default();
        if self.group_block(f, s, d, only, &mut b) {
            self.finish_block(f, &mut b);
        }
        self.block = Some(b);
        // After a re-check's block, at the end of a source place's row of blocks (so before
        // the merge reads `composed`), and before the recent pairs outgrow the caches.
        let last = d + 1 == self.index[f.index()].places.len();
        if only.is_some() || last || self.recent.pairs.len() >= RECENT_PAIRS {
            self.flush_recent();
        }
    }

    /// The part of a block that only reads the engine: the atoms of each side grouped by their
    /// classes and routes, into `b`; `false` when a side is empty.
    fn group_block(
        &self,
        f: Family,
        s: usize,
        d: usize,
        only: Option<(&[u32], &[u32])>,
        b: &mut Block,
    ) -> bool {
        let fi = f.index();
        let ix = &self.index[fi];
        let outside = ix.places.len() - 1;
        let (srcs, dsts): (&[u32], &[u32]) = match only {
            Some(x) => x,
            None => (&ix.places[s], &ix.places[d]),
        };
        if srcs.is_empty() || dsts.is_empty() {
            return false;
        }
        let g = &self.grid[fi];
        let Block {
            layers,
            reply,
            keys,
            order,
            key,
            ..
        } = b;
        layers.clear();
        layers.extend_from_slice(&ix.out_layers[s]);
        layers.extend_from_slice(&self.fw_layer);
        layers.extend_from_slice(&ix.in_layers[d]);
        layers.extend_from_slice(&ix.dnat_layers);
        reply.clear();
        reply.extend_from_slice(&ix.dnat_subnets);
        if d != outside {
            reply.push(d);
        }
        let (layers, reply) = (&*layers, &*reply);
        let special = |a: u32| {
            let l = &g.loc[a as usize];
            l.nic.is_some() || l.platform || l.frontend.is_some()
        };
        let skey = |a: u32, out: &mut Vec<u32>| {
            let sp = special(a);
            out.push(if sp { a } else { u32::MAX });
            out.push(g.loc[a as usize].in_vnet as u32);
            for l in layers {
                out.push(ix.scls[*l as usize][a as usize]);
            }
            for r in reply {
                out.push(ix.route[*r][a as usize]);
            }
            out.extend(ix.fw_subnets.iter().map(|_| 0));
        };
        let dkey = |a: u32, out: &mut Vec<u32>| {
            let sp = special(a);
            out.push(if sp { a } else { u32::MAX });
            out.push(if s == outside {
                u32::MAX
            } else {
                ix.route[s][a as usize]
            });
            for l in layers {
                out.push(ix.dcls[*l as usize][a as usize]);
            }
            for _ in reply {
                out.push(0);
            }
            out.extend(ix.fw_subnets.iter().map(|r| ix.route[*r][a as usize]));
        };
        let k = layers.len() + reply.len() + ix.fw_subnets.len() + 2;
        group(srcs, k, skey, (keys, order), &mut b.sg0, &mut b.sreps0);
        group(dsts, k, dkey, (keys, order), &mut b.dg0, &mut b.dreps0);
        // The first two words of a key (special atom, VNet or route), then the routes.
        (b.width_s, b.width_d) = (2 + reply.len(), 2 + ix.fw_subnets.len());
        b.fixed_s.clear();
        for &a in &b.sreps0 {
            key.clear();
            skey(a, key);
            b.fixed_s.extend_from_slice(&key[..2]);
            b.fixed_s
                .extend(reply.iter().map(|r| ix.route[*r][a as usize]));
        }
        b.fixed_d.clear();
        for &a in &b.dreps0 {
            key.clear();
            dkey(a, key);
            b.fixed_d.extend_from_slice(&key[..2]);
            b.fixed_d
                .extend(ix.fw_subnets.iter().map(|r| ix.route[*r][a as usize]));
        }
        b.srcs.clear();
        b.srcs.extend_from_slice(srcs);
        b.dsts.clear();
        b.dsts.extend_from_slice(dsts);
        true
    }

    /// The rest of a block, in the engine's order (its interners are shared): the cells stored,
    /// groups that every layer decides alike merged, one pair per group pair evaluated, rows
    /// written.
    fn finish_block(&mut self, f: Family, b: &mut Block) {
        let Block {
            layers,
            srcs,
            dsts,
            sg0,
            dg0,
            sreps0,
            dreps0,
            fixed_s,
            fixed_d,
            width_s,
            width_d,
            keys,
            srow,
            dcol,
            small,
            trans,
            smap,
            sfirst,
            dmap,
            dfirst,
            rows,
            cols,
            firsts,
            smap1,
            sr,
            dmap1,
            dr,
            dec,
            ..
        } = b;
        let fi = f.index();
        // Refine: two class groups differ only where a layer's cell (its decision, not its
        // classes) differs against some group of the other side. A layer's cells depend only
        // on the groups' classes in that layer, and few distinct classes meet in one block: per
        // layer the cells of its distinct (source class, destination class) pairs are read once
        // (27 M look-ups over every group pair of every block at 500 spokes before), and a group
        // is keyed by the id of its class's row (source) or column (destination) of that small
        // table — equal ids exactly when the group pair keys were equal. The pairs are read in
        // the order of their first group pair, so new cells get the ids they always had.
        let (ns, nd) = (sreps0.len(), dreps0.len());
        let nl = layers.len();
        srow.clear();
        srow.resize(ns * nl, 0);
        dcol.clear();
        dcol.resize(nd * nl, 0);
        for (k, &l) in layers.iter().enumerate() {
            let ix = &self.index[fi];
            let (sclass, dclass) = (&ix.scls[l as usize], &ix.dcls[l as usize]);
            first_seen(ns, |i| sclass[sreps0[i] as usize], smap, sfirst);
            first_seen(nd, |j| dclass[dreps0[j] as usize], dmap, dfirst);
            small.clear();
            for &x in sfirst.iter() {
                for &y in dfirst.iter() {
                    let (a, b) = (sreps0[x] as usize, dreps0[y] as usize);
                    small.push(self.cell(l, f, a, b));
                }
            }
            let (n, m) = (sfirst.len(), dfirst.len());
            trans.clear();
            trans.extend((0..m * n).map(|t| small[(t % n) * m + t / n]));
            first_seen(n, |x| &small[x * m..(x + 1) * m], rows, firsts);
            first_seen(m, |y| &trans[y * n..(y + 1) * n], cols, firsts);
            for i in 0..ns {
                srow[i * nl + k] = rows[smap[i] as usize];
            }
            for j in 0..nd {
                dcol[j * nl + k] = cols[dmap[j] as usize];
            }
        }
        refine((ns, nl), (fixed_s, *width_s), srow, keys, smap1, sr);
        refine((nd, nl), (fixed_d, *width_d), dcol, keys, dmap1, dr);
        let (nsr, ndr) = (sr.len(), dr.len());
        dec.clear();
        dec.reserve(nsr * ndr);
        for &i in sr.iter() {
            for &j in dr.iter() {
                let (sa, da) = (sreps0[i] as usize, dreps0[j] as usize);
                dec.push(self.evaluate(f, sa, da));
            }
        }
        let rows = &mut self.rows[fi];
        for (i, &sa) in srcs.iter().enumerate() {
            let row = &mut rows[sa as usize];
            let base = smap1[sg0[i] as usize] as usize * ndr;
            for (j, &da) in dsts.iter().enumerate() {
                row[da as usize] = dec[base + dmap1[dg0[j] as usize] as usize];
            }
        }
    }

    pub(super) fn control(&mut self, c: Control) -> u32 {
        if let Some(i) = self.control_ids.get(&c) {
            return *i;
        }
        let i = self.controls.len() as u32;
        self.controls.push(c.clone());
        self.control_ids.insert(c, i);
        i
    }

    fn route_ctrl(&mut self, step: u8, subnet: SubnetId, route: Option<&EffectiveRoute>) -> u32 {
        let idx = route
            .map(|r| route_index(&self.snap.subnet(subnet).routes, r))
            .unwrap_or(u32::MAX);
        let key = (step + 100, subnet.index() as u32, idx);
        if let Some(c) = self.ctrl_cache.get(&key) {
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
        self.ctrl_cache.insert(key, id);
        id
    }

    fn rule_ctrl(&mut self, step: u8, layer: u32, rule: u32) -> u32 {
        // Per layer, by (rule, step); "no rule" (`u32::MAX`) is slot 0.
        let slot = rule.wrapping_add(1) as usize * STEP_NAMES.len() + step as usize;
        if let Some(&c) = self.layers[layer as usize].ctrls.get(slot) {
            if c != NONE {
                return c;
            }
        }
        let l = &self.layers[layer as usize];
        let c = if rule == u32::MAX {
            let resource = match l.kind {
                LayerKind::Firewall { firewall } => self.snap.firewall(firewall).name.clone(),
                LayerKind::Nsg { nsg, .. } => self.snap.nsg(nsg).name.clone(),
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
        let l = &mut self.layers[layer as usize];
        if l.ctrls.is_empty() {
            l.ctrls = vec![NONE; (l.rules.len() + 1) * STEP_NAMES.len()];
        }
        l.ctrls[slot] = id;
        id
    }

    /// The cell of one NSG direction at (src, dst), as a plan step.
    #[allow(clippy::too_many_arguments)]
    fn nsg_step<P: Sink>(
        &mut self,
        f: Family,
        nsg: NsgId,
        outbound: bool,
        step: u8,
        (sa, da): (usize, usize),
        dport: Option<u16>,
        plan: &mut P,
    ) {
        let layer = self.nsg_layer[nsg.index()][outbound as usize];
        let cell = self.cell(layer, f, sa, da);
        let version = self.layers[layer as usize].version;
        plan.cell((layer, version), cell, step, dport);
    }

    /// Inbound NSGs of a destination location, evaluated at the atoms (source, destination).
    fn inbound_steps<P: Sink>(
        &mut self,
        f: Family,
        loc: &AtomLoc,
        sa: usize,
        da: usize,
        dport: Option<u16>,
        plan: &mut P,
    ) {
        let subnet_nsg = loc.subnet.and_then(|s| self.snap.subnet(s).nsg);
        let nic_nsg = loc.nic.and_then(|n| self.snap.nic(n).nsg);
        for (step, nsg) in [(S_SUB_IN, subnet_nsg), (S_NIC_IN, nic_nsg)] {
            if let Some(n) = nsg {
                self.nsg_step(f, n, false, step, (sa, da), dport, plan);
            }
        }
    }

    /// A request delivered into a subnet (no-op elsewhere): its inbound NSGs, then the reply
    /// check; `request_fw`: the firewall the request went through.
    fn arrive<P: Sink>(
        &mut self,
        f: Family,
        loc: &AtomLoc,
        (sa, da): (usize, usize),
        request_fw: Option<IpAddr>,
        plan: &mut P,
    ) {
        if loc.subnet.is_some() {
            self.inbound_steps(f, loc, sa, da, None, plan);
            self.reply_steps(f, loc.subnet, sa, request_fw, plan);
        }
    }

    /// The firewall's cell at (src, dst) as a plan step — on the way out of a subnet and at a
    /// frontend alike — with one sub-plan per DNAT rule of the cell. A DNAT'd flow goes on to
    /// its target (the rule's translation, else `untranslated`); when the target is in a subnet
    /// of this family, `at_target` adds the steps it meets there; then it is allowed.
    fn firewall_step(
        &mut self,
        f: Family,
        fw: FirewallId,
        (sa, da): (usize, usize),
        untranslated: Option<IpAddr>,
        at_target: impl Fn(&mut Self, &AtomLoc, IpAddr, Option<u16>, &mut Vec<Step>),
        plan: &mut Plan,
    ) {
        let layer = self.fw_layer[fw.index()];
        let cell = self.cell(layer, f, sa, da);
        let rules: Vec<u32> = self.cells[cell as usize]
            .iter()
            .filter(|p| p.act == Act::Dnat)
            .map(|p| p.rule)
            .collect();
        let mut dnat = vec![];
        for r in rules {
            let mut sub = vec![];
            let translation = self.layers[layer as usize].dnat.get(&r).copied();
            if let Some((to, port)) = translation.or(untranslated.map(|a| (a, None))) {
                let fs = self.fw_subnet[fw.index()];
                let route = fs.map(|s| self.snap.subnet(s).routes.lookup(to).map(|(_, r)| r));
                if let (Some(s), Some(route)) = (fs, route) {
                    if self.firewall_route_drops(s, route, &mut sub) {
                        dnat.push((r, sub));
                        continue;
                    }
                }
                if Family::of(to) == f {
                    let tl = self.snap.locate(to);
                    let tloc = AtomLoc {
                        subnet: tl.subnet,
                        nic: tl.nic,
                        ..Default::default()
                    };
                    if tloc.subnet.is_some() {
                        at_target(self, &tloc, to, port, &mut sub);
                    }
                }
            }
            sub.push(Step::End(Reach::Allow));
            dnat.push((r, sub));
        }
        let version = self.layers[layer as usize].version;
        plan.cell((layer, version), cell, S_FW, None);
        plan.dnat = dnat;
    }

    /// DIAG-7 (trace's `leaving_firewall`): the route of the firewall's subnet `s` for what the
    /// firewall let through; when it drops the flow, the steps that say so are pushed.
    fn firewall_route_drops<P: Sink>(
        &mut self,
        s: SubnetId,
        route: Option<&EffectiveRoute>,
        plan: &mut P,
    ) -> bool {
        let drops = route.is_none_or(|r| r.next_hop_type == NextHopType::None || r.drops);
        if drops {
            plan.ctrl(self.route_ctrl(S_FW_ROUTE, s, route));
            plan.end(Reach::Drop);
        }
        drops
    }

    /// The plan of one (source atom, destination atom) pair: which cells and route decisions
    /// its flows meet, in order (DIAG-7 request path and reply check).
    fn plan(&mut self, f: Family, (sa, da): (usize, usize), plan: &mut Plan) -> bool {
        let g = &self.grid[f.index()];
        let (sl, dl) = (g.loc[sa], g.loc[da]);
        if !in_universe(&sl, &dl) {
            return false;
        }
        let (src, dst) = (g.starts[sa], g.starts[da]);
        let snap = self.snap;
        if let Some(s) = sl.subnet {
            // From inside: NIC NSG out, subnet NSG out (NSG-6), platform exemption (NSG-8.4).
            let nic_nsg = sl.nic.and_then(|n| snap.nic(n).nsg);
            for (step, nsg) in [(S_NIC_OUT, nic_nsg), (S_SUB_OUT, snap.subnet(s).nsg)] {
                if let Some(n) = nsg {
                    if dl.platform && !snap.nsg(n).names_platform_tags {
                        continue;
                    }
                    self.nsg_step(f, n, true, step, (sa, da), None, plan);
                }
            }
            let Some(route) = self.route_of(f, s, da) else {
                plan.ctrl(self.route_ctrl(2, s, None));
                plan.end(Reach::Drop);
                return true;
            };
            plan.ctrl(self.route_ctrl(2, s, Some(route)));
            if route.next_hop_type == NextHopType::None || route.drops {
                plan.end(Reach::Drop);
                return true;
            }
            match route.next_hop_type {
                NextHopType::VirtualAppliance => {
                    let Some(ip) = route.next_hop_ip_address else {
                        plan.end(Reach::Drop);
                        return true;
                    };
                    let Some(fw) = snap.firewall_at(ip) else {
                        plan.end(Reach::Unknown);
                        return true;
                    };
                    // DNAT'd flows: on to the translated address, inbound NSGs see the
                    // original packet, reply check against this firewall.
                    self.firewall_step(
                        f,
                        fw,
                        (sa, da),
                        Some(f.addr(dst)),
                        |e, tloc, _, _, sub| e.arrive(f, tloc, (sa, da), Some(ip), sub),
                        plan,
                    );
                    if let Some(s) = self.fw_subnet[fw.index()] {
                        let route = self.route_of(f, s, da);
                        if self.firewall_route_drops(s, route, plan) {
                            return true;
                        }
                    }
                    self.arrive(f, &dl, (sa, da), Some(ip), plan);
                    plan.end(Reach::Allow);
                }
                NextHopType::VnetLocal | NextHopType::VNetPeering => {
                    self.arrive(f, &dl, (sa, da), None, plan);
                    plan.end(Reach::Allow);
                }
                _ => plan.end(Reach::Allow),
            }
            return true;
        }
        // From outside: a firewall frontend (DNAT, FW-4) or a subnet's address.
        if let Some(fw) = dl.frontend {
            // The target's NSGs see the translated packet, from the firewall's private address
            // unless the target is public.
            let at_target =
                |e: &mut Self, tloc: &AtomLoc, to: IpAddr, port, sub: &mut Vec<Step>| {
                    let firewall = snap.firewall(fw);
                    let s2 = match firewall.private_ip_addresses.first() {
                        Some(p) if !firewall.is_public(to) => addr_value(*p),
                        _ => src,
                    };
                    let g = &e.grid[f.index()];
                    let atoms = (g.atom_of(s2), g.atom_of(addr_value(to)));
                    e.inbound_steps(f, tloc, atoms.0, atoms.1, port, sub);
                };
            self.firewall_step(f, fw, (sa, da), None, at_target, plan);
            if dl.subnet.is_some() {
                self.inbound_steps(f, &dl, sa, da, None, plan);
            }
            plan.end(Reach::Allow);
            return true;
        }
        self.inbound_steps(f, &dl, sa, da, None, plan);
        let platform = sl.platform && f.addr(src) == AZURE_WIRE_SERVER;
        if platform || sl.in_vnet {
            plan.end(Reach::Allow);
            return true;
        }
        // RT-9: the reply is routed on its own; only a direct Internet route keeps it symmetric.
        let s = dl.subnet.expect("in universe");
        match self.route_of(f, s, sa) {
            None => {
                plan.ctrl(self.route_ctrl(6, s, None));
                plan.end(Reach::Drop);
            }
            Some(r) if r.next_hop_type == NextHopType::Internet => plan.end(Reach::Allow),
            Some(r) => {
                plan.ctrl(self.route_ctrl(6, s, Some(r)));
                plan.end(Reach::Drop);
            }
        }
        true
    }

    /// The reply of a flow between subnets (trace's `internal_reply`): routed from the
    /// destination's subnet back to the source; through a firewall only if the request was.
    fn reply_steps<P: Sink>(
        &mut self,
        f: Family,
        subnet: Option<SubnetId>,
        sa: usize,
        request_fw: Option<IpAddr>,
        plan: &mut P,
    ) {
        let Some(s) = subnet else { return };
        let snap = self.snap;
        let Some(route) = self.route_of(f, s, sa) else {
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
            plan.ctrl(self.route_ctrl(6, s, Some(route)));
            plan.end(Reach::Drop);
        }
    }

    /// The route a subnet uses for an atom (from the index: no prefix match per plan).
    fn route_of(&self, f: Family, s: SubnetId, atom: usize) -> Option<&'s EffectiveRoute> {
        let i = self.index[f.index()].route[s.index()][atom];
        (i != u32::MAX).then(|| &self.snap.subnet(s).routes.routes[i as usize])
    }

    /// Extend a chain by one control (hash-consed). The table holds only node ids (4 bytes a
    /// slot): there are millions of nodes, and their (chain, control) pairs are in `chains`.
    // Inlined into `run_steps` as when it had one caller: the merge calls it too, and the
    // serial build measured ≈ 3 % slower without the hint.
    #[inline]
    pub(super) fn extend(&mut self, chain: u32, ctrl: u32) -> u32 {
        let key = (chain, ctrl);
        let h = hash_pair(key);
        let chains = &self.chains;
        if let Some(id) = self.chain_ids.find(h, |id| chains[*id as usize] == key) {
            return *id;
        }
        let id = self.chains.len() as u32;
        self.chains.push(key);
        let chains = &self.chains;
        self.chain_ids
            .insert_unique(h, id, |id| hash_pair(chains[*id as usize]));
        id
    }

    /// The decision of one atom pair. A path through a firewall is stored factorised, as the
    /// ids of its request path and of its arrival, each run once; other paths are run whole.
    pub(super) fn evaluate(&mut self, f: Family, sa: usize, da: usize) -> u32 {
        // The plan is written into a buffer the engine keeps (1.36 M plans at 500 spokes).
        let mut plan = std::mem::take(&mut self.plan_buf);
        plan.clear();
        let id = if self.plan(f, (sa, da), &mut plan) {
            match plan.split() {
                Some(k) => self.evaluate_split(&plan.steps, k),
                None => self.evaluate_whole(&mut plan),
            }
        } else {
            NONE
        };
        self.plan_buf = plan;
        id
    }

    /// A plan through a firewall, as (request, arrival): each run only when its key is new.
    fn evaluate_split(&mut self, plan: &[(u32, u32, u32)], k: usize) -> u32 {
        let (req, arr) = plan.split_at(k);
        let request = match self.request_ids.get(req) {
            Some(i) => *i,
            None => {
                let mut steps = vec![];
                to_steps(req, &mut vec![], &[], &mut steps);
                let mut before = vec![];
                let going = self.run_steps(&steps, vec![(self.l4.full(), 0)], &mut before);
                self.requests.push((going, before));
                let i = self.requests.len() as u32 - 1;
                self.request_ids.insert(req.to_vec(), i);
                i
            }
        };
        let arrival = match self.arrival_ids.get(arr) {
            Some(i) => *i,
            None => {
                let mut steps = vec![];
                to_steps(arr, &mut vec![], &[], &mut steps);
                let ended = self.run_arrival(&steps);
                self.arrivals.push(ended);
                let i = self.arrivals.len() as u32 - 1;
                self.arrival_ids.insert(arr.to_vec(), i);
                i
            }
        };
        let key = (request, arrival);
        if self.composed.len() != self.recent.flushed {
            // Pairs added elsewhere (the parallel build's merge): the marks no longer hold.
            self.flush_recent();
        }
        let r = &self.recent;
        let known = match r.pairs.get(&key) {
            Some(id) => Some(*id),
            // A request or arrival made since the flush has all its pairs in `recent`.
            None if request >= r.requests || arrival >= r.arrivals => None,
            None => self.composed.get(key),
        };
        if let Some(id) = known {
            return id;
        }
        let id = self.decisions.len() as u32;
        self.decisions.push(Decision::Composed(request, arrival));
        self.recent.pairs.insert(key, id);
        id
    }

    /// The pairs made since the last flush moved into `composed` (what the merge and later
    /// look-ups read), the marks moved to the current tables.
    pub(super) fn flush_recent(&mut self) {
        let r = &mut self.recent;
        r.moving.clear();
        r.moving.extend(r.pairs.drain());
        r.moving.sort_unstable_by_key(|p| p.0);
        for run in r.moving.chunk_by(|x, y| x.0 .0 == y.0 .0) {
            let pairs = run.iter().map(|&((_, a), d)| (a, d)).collect();
            self.composed.add(run[0].0 .0, pairs);
        }
        r.requests = self.requests.len() as u32;
        r.arrivals = self.arrivals.len() as u32;
        r.flushed = self.composed.len();
    }

    /// A plan run whole (DNAT on it, or no firewall): its pieces stored, interned by content.
    fn evaluate_whole(&mut self, plan: &mut Plan) -> u32 {
        let mut steps = vec![];
        to_steps(&plan.steps, &mut plan.dnat, &plan.ports, &mut steps);
        let mut done: Vec<(Bits, Reach, u32)> = vec![];
        self.run(&steps, vec![(self.l4.full(), 0)], &mut done);
        let mut by_outcome: Vec<(Bits, u64)> = vec![];
        for (l4, verdict, chain) in done {
            merge_piece(&mut by_outcome, l4, outcome_id(verdict, chain, 0));
        }
        let w = self.l4.words;
        let mut flat: Vec<u64> = Vec::with_capacity(by_outcome.len() * (w + 1));
        for (b, o) in &by_outcome {
            flat.extend_from_slice(b);
            flat.push(*o);
        }
        self.intern_pieces(&flat)
    }

    /// A cell's pieces interned by content: equal pieces, one id.
    pub(super) fn intern_cell(&mut self, pieces: Vec<Piece>) -> u32 {
        let h = hash_cell(&pieces);
        match self.find_cell(h, &pieces) {
            Some(id) => id,
            None => self.insert_cell(h, pieces),
        }
    }

    /// [`Engine::intern_cell`] of borrowed pieces: copied only when new.
    pub(super) fn intern_cell_from(&mut self, pieces: &[Piece]) -> u32 {
        let h = hash_cell(pieces);
        match self.find_cell(h, pieces) {
            Some(id) => id,
            None => self.insert_cell(h, pieces.to_vec()),
        }
    }

    fn find_cell(&self, h: u64, pieces: &[Piece]) -> Option<u32> {
        let cells = &self.cells;
        self.cell_ids
            .find(h, |id| same_cell(&cells[*id as usize], pieces))
            .copied()
    }

    fn insert_cell(&mut self, h: u64, pieces: Vec<Piece>) -> u32 {
        let id = self.cells.len() as u32;
        self.cells.push(pieces);
        let cells = &self.cells;
        self.cell_ids
            .insert_unique(h, id, |id| hash_cell(&cells[*id as usize]));
        id
    }

    /// Forget cell `id`'s content: a walk giving the same pieces gets a new id (the old one
    /// stays valid for whatever names it).
    pub(super) fn forget_cell(&mut self, id: u32) {
        let h = hash_cell(&self.cells[id as usize]);
        if let Ok(entry) = self.cell_ids.find_entry(h, |x| *x == id) {
            entry.remove();
        }
    }

    /// A stored decision's pieces (`l4.words + 1` words each), interned by content.
    pub(super) fn intern_pieces(&mut self, flat: &[u64]) -> u32 {
        let w = self.l4.words;
        let (words, decisions) = (&self.dec_words, &self.decisions);
        let stored = |id: u32| match decisions[id as usize] {
            Decision::Pieces(start, n) => &words[start..start + n as usize * (w + 1)],
            Decision::Composed(..) => &[],
        };
        let h = hash_words(flat);
        if let Some(id) = self.dec_index.find(h, |id| stored(*id) == flat) {
            return *id;
        }
        let id = self.decisions.len() as u32;
        self.decisions.push(Decision::Pieces(
            self.dec_words.len(),
            (flat.len() / (w + 1)) as u32,
        ));
        self.dec_words.extend_from_slice(flat);
        let (words, decisions) = (&self.dec_words, &self.decisions);
        self.dec_index
            .insert_unique(h, id, |id| match decisions[*id as usize] {
                Decision::Pieces(start, n) => {
                    hash_words(&words[start..start + n as usize * (w + 1)])
                }
                Decision::Composed(..) => 0,
            });
        id
    }

    /// An arrival run once from every L4 atom and the empty chain, each piece tagged with the
    /// step that ended it (so that joining it to a request gives `run`'s order, see `compose`).
    fn run_arrival(&mut self, steps: &[Step]) -> Vec<Ended> {
        let mut going = vec![(self.l4.full(), 0)];
        let mut out = vec![];
        let mut done = vec![];
        for (t, step) in steps.iter().enumerate() {
            going = self.run_steps(std::slice::from_ref(step), going, &mut done);
            out.extend(done.drain(..).map(|(b, v, c)| (t as u32, b, v, c)));
        }
        let t = steps.len() as u32;
        out.extend(going.into_iter().map(|(b, c)| (t, b, Reach::Allow, c)));
        out
    }

    /// A request's result joined to an arrival: the pieces, in the order and with the merging
    /// that running the whole plan gives — the request's ended flows first, then per arrival
    /// step, per flow still going, the arrival's pieces of that step within the flow's L4 set.
    pub(super) fn compose(&self, request: u32, arrival: u32) -> Vec<(Bits, u64)> {
        let (going, before) = &self.requests[request as usize];
        let ended = &self.arrivals[arrival as usize];
        let mut out: Vec<(Bits, u64)> = vec![];
        for (b, v, head) in before {
            merge_piece(&mut out, b.clone(), outcome_id(*v, *head, 0));
        }
        for step in ended.chunk_by(|x, y| x.0 == y.0) {
            for (gb, head) in going {
                for (_, b, v, tail) in step {
                    let hit = and(gb, b);
                    if !zero(&hit) {
                        merge_piece(&mut out, hit, outcome_id(*v, *head, *tail));
                    }
                }
            }
        }
        out
    }

    fn run(&mut self, plan: &[Step], going: Vec<(Bits, u32)>, done: &mut Vec<(Bits, Reach, u32)>) {
        for (l4, chain) in self.run_steps(plan, going, done) {
            done.push((l4, Reach::Allow, chain));
        }
    }

    /// Run the steps of a plan; the flows still going at its end are returned.
    fn run_steps(
        &mut self,
        plan: &[Step],
        mut going: Vec<(Bits, u32)>,
        done: &mut Vec<(Bits, Reach, u32)>,
    ) -> Vec<(Bits, u32)> {
        for step in plan {
            if going.is_empty() {
                break;
            }
            match step {
                Step::Ctrl(c) => {
                    for g in going.iter_mut() {
                        g.1 = self.extend(g.1, *c);
                    }
                }
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
                    // The flows still going after this step go into the vector the previous
                    // step emptied (kept by the engine): a fresh one per step was grown again.
                    let mut next = std::mem::take(&mut self.step_buf);
                    next.clear();
                    for (l4, chain) in going.drain(..) {
                        for p in &pieces {
                            let hit = match dport {
                                Some(port) => and(&l4, &self.l4.at_dport(&p.l4, *port)),
                                None => and(&l4, &p.l4),
                            };
                            if zero(&hit) {
                                continue;
                            }
                            let c = if p.act != Act::NoMatch || is_fw {
                                let ctrl = self.rule_ctrl(*step, *layer, p.rule);
                                self.extend(chain, ctrl)
                            } else {
                                chain
                            };
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
                    self.step_buf = std::mem::replace(&mut going, next);
                }
            }
        }
        going
    }
}
