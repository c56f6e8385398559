//! Layers: each NSG direction and each firewall as an ordered list of entries (rule boxes per
//! family), the classes those entries cut the address line into, and the cells — the
//! first-match walk over one (source class, destination class).

use super::atoms::{and, push_l4_cuts, zero, Bits, L4Atoms, Runs};
use super::Engine;
use crate::headerspace::{prefix_set, Family, IntervalSet, L4Set};
use hashbrown::HashTable;
use palisade_model::{Access, Direction, FirewallAction, PortRange};
use palisade_policy::firewall::{CompiledFirewall, RuleRef};
use palisade_policy::nsg::{CompiledRule, DirectionRules};
use palisade_policy::{FirewallId, NsgId, Snapshot};
use rayon::prelude::*;
use rustc_hash::FxHashMap as HashMap;
use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::hash::{Hash, Hasher};
use std::net::IpAddr;
use std::ptr::NonNull;
use std::sync::OnceLock;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) enum Act {
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
pub(super) struct Entry {
    pub(super) src: IntervalSet,
    pub(super) dst: IntervalSet,
    pub(super) l4: L4Set,
    pub(super) bits: Bits,
    pub(super) act: Act,
    /// Index into the layer's `rules`.
    pub(super) rule: u32,
}

/// A piece of a cell: flows decided by one rule (or by none).
#[derive(Debug, Clone)]
pub(super) struct Piece {
    pub(super) l4: Bits,
    pub(super) act: Act,
    pub(super) rule: u32,
}

#[derive(Default)]
pub(super) struct FamLayer {
    pub(super) entries: Vec<Entry>,
    pub(super) src: Runs,
    pub(super) dst: Runs,
    /// Cell ids by (source class, destination class), dense (`source * stride + destination`),
    /// plus one; 0: not computed yet. Zeroed pages cost nothing until written. Rows for
    /// source classes to come follow (`room`).
    pub(super) cells: CellTable,
    /// Destination classes a row of `cells` has room for: a re-check adding classes fills the
    /// room instead of laying the table out again.
    pub(super) stride: usize,
    /// Per source class, the destination classes whose slot holds a cell: a re-check drops
    /// cells by reading these instead of every slot of the rows a changed entry meets.
    pub(super) filled: Vec<Vec<u32>>,
    /// Cells by the entries their class pair holds (the walk reads nothing else): many pairs
    /// hold the same entries (757 k filled slots, 138 k entry sets at 500 spokes), so a pair
    /// whose set was walked takes that cell. Emptied when the entries or classes change.
    pub(super) by_entries: HashTable<HeldEntries>,
}

/// A class pair whose held entries (`srow & drow`) were walked: their hash, the pair, its cell.
#[derive(Clone, Copy)]
pub(super) struct HeldEntries {
    hash: u64,
    sc: u32,
    dc: u32,
    cell: u32,
}

/// The hash of `srow & drow`, from its non-zero words and their positions: each word times an
/// odd multiplier of its position, summed (independent multiplies, so the 80 words of a
/// 5,000-rule firewall's row pipeline), then mixed.
fn held_hash(srow: &[u64], drow: &[u64]) -> u64 {
    const K: u64 = 0x9e37_79b9_7f4a_7c15;
    let sum = srow
        .iter()
        .zip(drow)
        .enumerate()
        .fold(0u64, |acc, (w, (a, b))| {
            acc.wrapping_add((a & b).wrapping_mul((w as u64).wrapping_mul(K) | 1))
        });
    let h = (sum ^ (sum >> 32)).wrapping_mul(K);
    h ^ (h >> 29)
}

/// Whether two class pairs hold the same entries.
fn same_held((s1, d1): (&[u64], &[u64]), (s2, d2): (&[u64], &[u64])) -> bool {
    if [d1.len(), s2.len(), d2.len()] == [s1.len(); 3] {
        // A layer's rows are all as long: word by word, no bounds to test.
        let held = |(a, b): (&u64, &u64)| a & b;
        return s1.iter().zip(d1).map(held).eq(s2.iter().zip(d2).map(held));
    }
    let n = s1.len().max(d1.len()).max(s2.len()).max(d2.len());
    let at = |r: &[u64], w: usize| r.get(w).copied().unwrap_or(0);
    (0..n).all(|w| at(s1, w) & at(d1, w) == at(s2, w) & at(d2, w))
}

impl FamLayer {
    /// Slot `slot` holds cell `id` from now on, listed in `filled` for the re-check.
    pub(super) fn set_cell(&mut self, slot: usize, id: u32) {
        self.cells[slot] = id + 1;
        let (sc, dc) = (slot / self.stride, slot % self.stride);
        if self.filled.len() <= sc {
            self.filled.resize(sc + 1, vec![]);
        }
        let row = &mut self.filled[sc];
        row.push(dc as u32);
        // A slot dropped by a narrow re-check and filled again is listed twice: past twice the
        // row's width the list holds stale or repeated entries, so it is compacted (at most
        // once per `stride` pushes, so a long series of edits does not grow it).
        if row.len() > 2 * self.stride {
            let cells = &self.cells[sc * self.stride..(sc + 1) * self.stride];
            row.retain(|&d| cells[d as usize] != 0);
            row.sort_unstable();
            row.dedup();
        }
    }

    /// The entries `lo..lo + new.len()` replaced by as many `new` ones (same rule indexes
    /// elsewhere): the classes are cut only where the old or new entries' ranges fall, and
    /// only the cells of class pairs both of whose rows hold a replaced entry are dropped.
    /// `perm`: the new entries are the old ones reordered (see `Runs::permute`). Returns the
    /// cell ids the dropped slots held: the only cells of this layer that walked a replaced
    /// entry; `None` when the table was laid out again and every cell of it dropped.
    pub(super) fn replace(
        &mut self,
        lo: usize,
        new: Vec<Entry>,
        perm: Option<&[usize]>,
    ) -> Option<Vec<u32>> {
        self.by_entries.clear();
        let mut dropped = vec![];
        let n = new.len();
        // Cells walk the entries both rows hold: a changed entry there changes the cell. Only
        // the slots that hold a cell are tested, source row by source row, against the window
        // words both rows hold (a pass over every class pair holding each replaced entry read
        // mostly empty slots, and was most of a collection move's re-check).
        if n >= WIDE_WINDOW {
            let (w0, w1) = (lo / 64, (lo + n - 1) / 64);
            let mask = |w: usize| -> u64 {
                let from = if w == w0 { lo % 64 } else { 0 };
                let to = if w == w1 { (lo + n - 1) % 64 } else { 63 };
                (u64::MAX >> (63 - to)) & (u64::MAX << from)
            };
            let masks: Vec<u64> = (w0..=w1).map(mask).collect();
            for (sc, filled) in self.filled.iter_mut().enumerate() {
                if filled.is_empty() {
                    continue;
                }
                let srow = &self.src.rows[sc][w0..=w1];
                let held: Vec<u64> = srow.iter().zip(&masks).map(|(a, m)| a & m).collect();
                if held.iter().all(|x| *x == 0) {
                    continue;
                }
                filled.retain(|&dc| {
                    if self.cells[sc * self.stride + dc as usize] == 0 {
                        return false;
                    }
                    let drow = &self.dst.rows[dc as usize][w0..=w1];
                    if drow.iter().zip(&held).all(|(a, b)| a & b == 0) {
                        return true;
                    }
                    let slot = &mut self.cells[sc * self.stride + dc as usize];
                    if *slot != 0 {
                        dropped.push(*slot - 1);
                        *slot = 0;
                    }
                    false
                });
            }
        } else if n > 0 {
            // A few entries: the class pairs holding each, rows found in one pass.
            let holding = |rows: &[Vec<u64>]| -> Vec<Vec<usize>> {
                let mut out = vec![vec![]; n];
                for (c, row) in rows.iter().enumerate() {
                    let words = row.iter().enumerate().take((lo + n - 1) / 64 + 1);
                    for (w, &word) in words.skip(lo / 64) {
                        let mut bits = word;
                        while bits != 0 {
                            let p = w * 64 + bits.trailing_zeros() as usize;
                            bits &= bits - 1;
                            if (lo..lo + n).contains(&p) {
                                out[p - lo].push(c);
                            }
                        }
                    }
                }
                out
            };
            let (hs, hd) = (holding(&self.src.rows), holding(&self.dst.rows));
            let (cells, stride, drows) = (&mut self.cells, self.stride, &self.dst.rows);
            for (k, (ss, ds)) in hs.iter().zip(&hd).enumerate() {
                let p = lo + k;
                for &sc in ss {
                    // A row holding no cell is not read: every slot of a broad entry's class
                    // pairs read a table just laid out again page by page (3,900 zero-page
                    // faults, most of the move reverting a reorder at the bench's size).
                    let Some(filled) = self.filled.get_mut(sc).filter(|f| !f.is_empty()) else {
                        continue;
                    };
                    let row = &mut cells[sc * stride..(sc + 1) * stride];
                    if filled.len() < ds.len() {
                        filled.retain(|&dc| {
                            let slot = &mut row[dc as usize];
                            if *slot == 0 {
                                return false;
                            }
                            if drows[dc as usize][p / 64] >> (p % 64) & 1 == 0 {
                                return true;
                            }
                            dropped.push(*slot - 1);
                            *slot = 0;
                            false
                        });
                    } else {
                        for &dc in ds {
                            let slot = &mut row[dc];
                            if *slot != 0 {
                                dropped.push(*slot - 1);
                                *slot = 0;
                            }
                        }
                    }
                }
            }
        }
        let old: Vec<Entry> = self.entries.splice(lo..lo + new.len(), new).collect();
        if let Some(at) = perm {
            self.src.permute(lo, at);
            self.dst.permute(lo, at);
        } else {
            let window = &self.entries[lo..lo + old.len()];
            let sets = |es: &[Entry], src: bool| -> Vec<IntervalSet> {
                es.iter()
                    .map(|e| if src { e.src.clone() } else { e.dst.clone() })
                    .collect()
            };
            let (os, od, ns_, nd_) = (
                sets(&old, true),
                sets(&old, false),
                sets(window, true),
                sets(window, false),
            );
            self.src.update(
                lo,
                &os.iter().collect::<Vec<_>>(),
                &ns_.iter().collect::<Vec<_>>(),
            );
            self.dst.update(
                lo,
                &od.iter().collect::<Vec<_>>(),
                &nd_.iter().collect::<Vec<_>>(),
            );
        }
        let (ns2, nd2) = (self.src.rows.len(), self.dst.rows.len());
        if nd2 > self.stride {
            let stride = room(nd2);
            // Every cell dropped rather than copied: copying wrote every page holding a cell
            // into the new table (the kernel zeroes each: 20-30 ms at the bench's size, most of
            // a first move after the classes had grown); a cell needed again is walked again,
            // and gets its old id (cells are interned by content).
            let cells = CellTable::zeroed(room(ns2) * stride);
            self.filled.clear();
            std::mem::replace(&mut self.cells, cells).drop_elsewhere();
            self.stride = stride;
            return None;
        } else if ns2 * self.stride > self.cells.len() {
            self.cells.grow(room(ns2) * self.stride);
        }
        dropped.sort_unstable();
        dropped.dedup();
        Some(dropped)
    }
}

/// A layer's cell table: `u32` slots, 0 while not computed. A large table is mapped straight
/// from the kernel, so its pages are zero pages handed out on first write and a table laid out
/// again costs nothing up front: through the global allocator the memory could be a table freed
/// before (a build worker's), which the allocator must clear first (5-8 ms for the bench's
/// 45 MB firewall table under mimalloc).
pub(super) enum CellTable {
    Heap(Vec<u32>),
    Mapped(Mapping),
}

/// An anonymous mapping of `len` slots. The fields are private to this module, so no safe code
/// elsewhere can make one that `Deref` or `Drop` would trust.
pub(super) struct Mapping {
    ptr: NonNull<u32>,
    len: usize,
}

// SAFETY: a mapping is owned by its value alone, as a `Box<[u32]>` would be.
unsafe impl Send for Mapping {}
// SAFETY: shared access reads only, through `Deref`.
unsafe impl Sync for Mapping {}

/// From this size on a cell table is mapped (a page each for the small NSG tables would be
/// more system calls than the tables' whole cost).
const MAPPED_BYTES: usize = 1 << 20;

/// Bytes mapped for `len` slots; `None` past the address space.
fn mapped_bytes(len: usize) -> Option<usize> {
    len.checked_mul(std::mem::size_of::<u32>())?
        .checked_next_multiple_of(4096)
}

impl Default for CellTable {
    fn default() -> CellTable {
        CellTable::Heap(vec![])
    }
}

impl CellTable {
    /// `len` slots, every one 0.
    pub(super) fn zeroed(len: usize) -> CellTable {
        match mapped_bytes(len) {
            Some(bytes) if bytes >= MAPPED_BYTES => match Mapping::new(len, bytes) {
                Some(m) => CellTable::Mapped(m),
                None => CellTable::Heap(vec![0; len]),
            },
            _ => CellTable::Heap(vec![0; len]),
        }
    }

    /// Grown to `len` slots, the new ones 0: a mapped table is moved by its page tables
    /// (`mremap`), and its new pages are zero pages too, so the slots kept are not copied nor
    /// the new ones written.
    pub(super) fn grow(&mut self, len: usize) {
        if len <= self.len() {
            return;
        }
        if let CellTable::Mapped(m) = self {
            if m.grow(len) {
                return;
            }
        }
        let mut t = CellTable::zeroed(len);
        t[..self.len()].copy_from_slice(self);
        *self = t;
    }

    /// Dropped off the calling thread when it is a mapping: unmapping the pages a table wrote
    /// is work for no answer. Inline when no thread can be had.
    pub(super) fn drop_elsewhere(self) {
        if let CellTable::Mapped(m) = self {
            // A refused thread drops its closure, and the mapping with it, here.
            let _ = std::thread::Builder::new().spawn(move || drop(m));
        }
    }
}

#[cfg(target_os = "linux")]
impl Mapping {
    fn new(len: usize, bytes: usize) -> Option<Mapping> {
        // SAFETY: an anonymous private mapping of a fresh range; checked against MAP_FAILED.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                bytes,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return None;
        }
        let ptr = NonNull::new(p.cast::<u32>())?;
        Some(Mapping { ptr, len })
    }

    /// Moved to `len` slots (more than now); false, and unchanged, when the kernel refuses.
    fn grow(&mut self, len: usize) -> bool {
        let (Some(old), Some(new)) = (mapped_bytes(self.len), mapped_bytes(len)) else {
            return false;
        };
        // SAFETY: the range is this mapping, of the size it was mapped with.
        let p = unsafe { libc::mremap(self.ptr.as_ptr().cast(), old, new, libc::MREMAP_MAYMOVE) };
        if p == libc::MAP_FAILED {
            return false;
        }
        match NonNull::new(p.cast::<u32>()) {
            Some(ptr) => {
                (self.ptr, self.len) = (ptr, len);
                true
            }
            // The kernel has moved the table to address 0, which it never picks (its search
            // runs top-down from the mapping base); neither the old nor the new range can be
            // used safely any more.
            None => std::process::abort(),
        }
    }
}

/// Elsewhere tables stay on the heap: the mapping is a Linux detail of the re-check's cost.
#[cfg(not(target_os = "linux"))]
impl Mapping {
    fn new(_len: usize, _bytes: usize) -> Option<Mapping> {
        None
    }

    fn grow(&mut self, _len: usize) -> bool {
        false
    }
}

impl std::ops::Deref for CellTable {
    type Target = [u32];
    fn deref(&self) -> &[u32] {
        match self {
            CellTable::Heap(v) => v,
            // SAFETY: `len` slots mapped readable and writable, zero or written since.
            CellTable::Mapped(m) => unsafe { std::slice::from_raw_parts(m.ptr.as_ptr(), m.len) },
        }
    }
}

impl std::ops::DerefMut for CellTable {
    fn deref_mut(&mut self) -> &mut [u32] {
        match self {
            CellTable::Heap(v) => v,
            // SAFETY: as in `deref`, and `&mut self` makes this the only access.
            CellTable::Mapped(m) => unsafe {
                std::slice::from_raw_parts_mut(m.ptr.as_ptr(), m.len)
            },
        }
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        #[cfg(target_os = "linux")]
        if let Some(bytes) = mapped_bytes(self.len) {
            // SAFETY: this mapping, unmapped once; nothing borrows it any more.
            unsafe {
                libc::munmap(self.ptr.as_ptr().cast(), bytes);
            }
        }
    }
}

/// From this many replaced entries on, a re-check drops cells by reading the filled slots of the
/// source rows the window meets; below it, the class pairs holding each entry (cheaper for a
/// rule or two, dearer for a moved collection: 141 entries in the bench).
const WIDE_WINDOW: usize = 32;

/// Room for as many classes again: a rule over every address gives every class it meets a
/// new row (a known row keeps its id, a changed one gets a new id), and laying the table out
/// again was over half of the first broad firewall re-check (copying into fresh pages). Room
/// never written stays zero pages the kernel has not handed out.
fn room(classes: usize) -> usize {
    2 * classes + 4
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LayerKind {
    Nsg { nsg: NsgId, direction: Direction },
    Firewall { firewall: FirewallId },
}

/// What a rule of a layer is, for explanations.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct RuleInfo {
    pub(super) layer: &'static str,
    pub(super) resource: String,
    pub(super) rule: Option<String>,
    pub(super) priority: Option<u32>,
}

impl RuleInfo {
    /// A slot no rule holds yet.
    pub(super) fn unused() -> RuleInfo {
        RuleInfo {
            layer: "firewall",
            resource: String::new(),
            rule: None,
            priority: None,
        }
    }
}

pub(super) struct Layer {
    pub(super) kind: LayerKind,
    /// By rule slot: entries, cells and controls name a rule by its slot.
    pub(super) rules: Vec<RuleInfo>,
    /// A firewall's rule index → its slot in `rules` (empty for an NSG direction, where the
    /// two are one): a rule keeps its slot when rules before it are added or deleted.
    pub(super) slots: Vec<u32>,
    /// DNAT rules: translation per rule index.
    pub(super) dnat: HashMap<u32, (IpAddr, Option<u16>)>,
    pub(super) fam: [FamLayer; 2],
    /// Control ids by (rule, step), filled on first use (see `Engine::rule_ctrl`).
    pub(super) ctrls: Vec<u32>,
    /// Bumped by a re-check that makes a rule index name another rule: memo keys name it with
    /// their cells, since a cell names rules by index.
    pub(super) version: u32,
    /// A firewall layer's items (empty for an NSG direction).
    pub(super) items: FwItems,
}

pub(super) fn nsg_entries(rules: &DirectionRules, nsg: &str) -> (Vec<RuleInfo>, [Vec<Entry>; 2]) {
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
                src: prefix_set(&r.source, f),
                dst: prefix_set(&r.destination, f),
                l4: L4Set::rule(proto, &r.source_ports, &r.destination_ports),
                bits: Bits::new(),
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

/// A firewall layer's parts: rule infos, entries per family, DNAT translations by rule index,
/// and what each entry was made from ([`FwItems`]).
pub(super) type FwParts = (
    Vec<RuleInfo>,
    [Vec<Entry>; 2],
    HashMap<u32, (IpAddr, Option<u16>)>,
    FwItems,
);

/// What a firewall layer's entries were made from, item by item (a DNAT or network pass entry,
/// an application rule, in evaluation order): a fingerprint of everything the conversion reads,
/// and the first entry per family. A re-check converts only the items whose fingerprint
/// changed and splices their entries in, instead of converting every rule again.
#[derive(Debug, Default, Clone, PartialEq)]
pub(super) struct FwItems {
    /// (DNAT rules, network rules, application rules): item fingerprints name rule indexes,
    /// which stay put only while these counts do.
    pub(super) rules: (usize, usize, usize),
    pub(super) hash: Vec<u64>,
    /// The rule index of each item: kept apart from the fingerprint, so that the items after
    /// a rule added or deleted are recognised under their shifted indexes.
    pub(super) rule: Vec<u32>,
    /// Per family, the first entry of each item, plus the entry count (`hash.len() + 1` each).
    pub(super) first: [Vec<u32>; 2],
}

/// One item of a firewall as [`fw_items`] numbers them.
enum FwItem<'a> {
    Pass {
        dnat: bool,
        base: u32,
        rule: &'a RuleRef,
        ri: usize,
        spec: &'a palisade_policy::matchers::classifier::ClassifierRule,
    },
    App {
        index: u32,
        view: palisade_policy::firewall::AppRuleView<'a>,
    },
}

fn fw_item_list(fw: &CompiledFirewall) -> Vec<FwItem<'_>> {
    let mut out = vec![];
    let mut base = 0u32;
    for (pass, dnat) in [(fw.dnat_pass(), true), (fw.network_pass(), false)] {
        for (e, spec) in pass.entries.iter().enumerate() {
            let ri = pass.entry_rule[e] as usize;
            out.push(FwItem::Pass {
                dnat,
                base,
                rule: &pass.rules[ri],
                ri,
                spec,
            });
        }
        base += pass.rules.len() as u32;
    }
    for (k, view) in fw.application_rules().enumerate() {
        out.push(FwItem::App {
            index: base + k as u32,
            view,
        });
    }
    out
}

fn hash_rule(r: &RuleRef, h: &mut impl Hasher) {
    (
        &r.resource,
        &r.rule_collection_group,
        r.rule_collection_group_priority,
        &r.rule_collection,
        r.rule_collection_priority,
        &r.rule,
        r.action,
        r.audit,
    )
        .hash(h);
}

/// The keys of the item fingerprints: random per process (SipHash), so that a rule set cannot be
/// written to collide with another and hide a change from the re-check, as it could with an
/// unkeyed hash.
fn fingerprint_keys() -> &'static RandomState {
    static KEYS: OnceLock<RandomState> = OnceLock::new();
    KEYS.get_or_init(RandomState::new)
}

/// The fingerprint of every item of a firewall and its rule index (see [`FwItems`]).
pub(super) fn fw_hashes(fw: &CompiledFirewall) -> (Vec<u64>, Vec<u32>) {
    fw_item_list(fw)
        .iter()
        .map(|item| {
            let mut h = fingerprint_keys().build_hasher();
            let index = match item {
                FwItem::Pass { base, ri, .. } => base + *ri as u32,
                FwItem::App { index, .. } => *index,
            };
            match item {
                FwItem::Pass {
                    dnat,
                    rule,
                    ri,
                    spec,
                    ..
                } => {
                    dnat.hash(&mut h);
                    hash_rule(rule, &mut h);
                    (
                        spec.protocol,
                        &spec.src,
                        &spec.dst,
                        &spec.src_ports,
                        &spec.dst_ports,
                    )
                        .hash(&mut h);
                    if *dnat {
                        fw.dnat_translation(*ri).hash(&mut h);
                    }
                }
                FwItem::App { view, .. } => {
                    hash_rule(view.rule, &mut h);
                    (view.protocols, view.sources, view.destinations).hash(&mut h);
                }
            }
            (h.finish(), index)
        })
        .unzip()
}

pub(super) fn fw_rule_counts(fw: &CompiledFirewall) -> (usize, usize, usize) {
    (
        fw.dnat_pass().rules.len(),
        fw.network_pass().rules.len(),
        fw.application_rules().count(),
    )
}

fn fw_info(r: &RuleRef) -> RuleInfo {
    RuleInfo {
        layer: "firewall",
        resource: r.resource.clone(),
        rule: Some(r.path()),
        priority: Some(r.rule_collection_priority),
    }
}

/// The rule infos of a firewall, by rule index (DNAT, network, application rules).
pub(super) fn fw_infos(fw: &CompiledFirewall) -> Vec<RuleInfo> {
    let mut infos: Vec<RuleInfo> = vec![];
    for pass in [fw.dnat_pass(), fw.network_pass()] {
        infos.extend(pass.rules.iter().map(|r| fw_info(r)));
    }
    infos.extend(fw.application_rules().map(|a| fw_info(a.rule)));
    infos
}

/// The DNAT translations of a firewall by rule index.
pub(super) fn fw_dnat(fw: &CompiledFirewall) -> HashMap<u32, (IpAddr, Option<u16>)> {
    let pass = fw.dnat_pass();
    (0..pass.rules.len())
        .filter(|r| !pass.rules[*r].audit && pass.entry_rule.contains(&(*r as u32)))
        .filter_map(|r| Some((r as u32, fw.dnat_translation(r)?)))
        .collect()
}

/// Items of a firewall converted: entries per family, the first entry of each item (relative
/// to the first item converted, plus the count) and the infos of the items' rules.
pub(super) struct FwConverted {
    pub(super) entries: [Vec<Entry>; 2],
    pub(super) first: [Vec<u32>; 2],
    pub(super) infos: Vec<(u32, RuleInfo)>,
}

/// The entries of items `range` of a firewall.
pub(super) fn fw_entries(fw: &CompiledFirewall, range: std::ops::Range<usize>) -> FwConverted {
    let mut out: [Vec<Entry>; 2] = [vec![], vec![]];
    let mut first: [Vec<u32>; 2] = [vec![], vec![]];
    let mut infos = vec![];
    let items = fw_item_list(fw);
    for item in &items[range] {
        for f in 0..2 {
            first[f].push(out[f].len() as u32);
        }
        infos.push(match item {
            FwItem::Pass { base, rule, ri, .. } => (base + *ri as u32, fw_info(rule)),
            FwItem::App { index, view } => (*index, fw_info(view.rule)),
        });
        match item {
            FwItem::Pass {
                dnat,
                base,
                rule,
                ri,
                spec,
            } => {
                if rule.audit {
                    continue;
                }
                let act = if *dnat {
                    Act::Dnat
                } else if rule.action == FirewallAction::Allow {
                    Act::Allow
                } else {
                    Act::Deny
                };
                let to_ranges = |p: &[(u16, u16)]| -> Vec<PortRange> {
                    p.iter()
                        .map(|(a, b)| PortRange {
                            first: *a,
                            last: *b,
                        })
                        .collect()
                };
                // Built once per rule and only for a family both sides name.
                let l4 = L4Set::rule(
                    spec.protocol,
                    &to_ranges(&spec.src_ports),
                    &to_ranges(&spec.dst_ports),
                );
                if l4.is_empty() {
                    continue;
                }
                for f in [Family::V4, Family::V6] {
                    let src = prefix_set(&spec.src, f);
                    if src.is_empty() {
                        continue;
                    }
                    let dst = prefix_set(&spec.dst, f);
                    if dst.is_empty() {
                        continue;
                    }
                    out[f.index()].push(Entry {
                        src,
                        dst,
                        l4: l4.clone(),
                        bits: Bits::new(),
                        act,
                        rule: base + *ri as u32,
                    });
                }
            }
            // Application allow rules: by name, on TCP to their ports (FW-6.1).
            FwItem::App { index, view } => {
                if view.rule.audit || view.rule.action != FirewallAction::Allow {
                    continue;
                }
                let ports: Vec<PortRange> = view
                    .protocols
                    .iter()
                    .map(|p| PortRange::single(p.port))
                    .collect();
                for f in [Family::V4, Family::V6] {
                    let all = IntervalSet::range(0, f.max());
                    let en = Entry {
                        src: prefix_set(view.sources, f),
                        dst: view.destinations.map(|d| prefix_set(d, f)).unwrap_or(all),
                        l4: L4Set::rule(Some(6), &[PortRange::ANY], &ports),
                        bits: Bits::new(),
                        act: Act::ByName,
                        rule: *index,
                    };
                    if !en.src.is_empty() && !en.dst.is_empty() && !en.l4.is_empty() {
                        out[f.index()].push(en);
                    }
                }
            }
        }
    }
    for f in 0..2 {
        first[f].push(out[f].len() as u32);
    }
    FwConverted {
        entries: out,
        first,
        infos,
    }
}

pub(super) fn fw_layer(fw: &CompiledFirewall) -> FwParts {
    let (hash, rule) = fw_hashes(fw);
    let c = fw_entries(fw, 0..hash.len());
    let items = FwItems {
        rules: fw_rule_counts(fw),
        hash,
        rule,
        first: c.first,
    };
    (fw_infos(fw), c.entries, fw_dnat(fw), items)
}

/// [`fw_layer`] on the pool: the rules converted in consecutive chunks, beside the
/// fingerprints, explanations and translations (a 5,000-rule firewall was the longest layer).
fn fw_layer_parallel(fw: &CompiledFirewall) -> FwParts {
    const CHUNKS: usize = 8;
    let n = fw_item_list(fw).len();
    let ((hash, rule), (chunks, (infos, dnat))) = rayon::join(
        || fw_hashes(fw),
        || {
            rayon::join(
                || {
                    (0..CHUNKS)
                        .into_par_iter()
                        .map(|k| fw_entries(fw, k * n / CHUNKS..(k + 1) * n / CHUNKS))
                        .collect::<Vec<_>>()
                },
                || (fw_infos(fw), fw_dnat(fw)),
            )
        },
    );
    let mut entries: [Vec<Entry>; 2] = [vec![], vec![]];
    let mut first: [Vec<u32>; 2] = [vec![], vec![]];
    for mut c in chunks {
        for f in 0..2 {
            // A chunk's offsets count from its own first entry and end with its length.
            let base = entries[f].len() as u32;
            let k = c.first[f].len() - 1;
            first[f].extend(c.first[f][..k].iter().map(|x| x + base));
            entries[f].append(&mut c.entries[f]);
        }
    }
    for f in 0..2 {
        first[f].push(entries[f].len() as u32);
    }
    let items = FwItems {
        rules: fw_rule_counts(fw),
        hash,
        rule,
        first,
    };
    (infos, entries, dnat, items)
}

pub(super) fn fam_layer(entries: Vec<Entry>) -> FamLayer {
    fam_layer_with(entries, false)
}

/// [`fam_layer`], its two dimensions on two threads when `parallel` (a 5,000-rule firewall's
/// runs are most of building the layers).
fn fam_layer_with(entries: Vec<Entry>, parallel: bool) -> FamLayer {
    let n = entries.len();
    let runs = |dst: bool| {
        Runs::build(
            n,
            entries.iter().enumerate().flat_map(move |(i, e)| {
                let set = if dst { &e.dst } else { &e.src };
                set.ranges().iter().map(move |r| (i, *r))
            }),
        )
    };
    let (src, dst) = if parallel {
        rayon::join(|| runs(false), || runs(true))
    } else {
        (runs(false), runs(true))
    };
    let stride = room(dst.rows.len());
    let cells = CellTable::zeroed(room(src.rows.len()) * stride);
    FamLayer {
        entries,
        src,
        dst,
        cells,
        stride,
        filled: vec![],
        by_entries: HashTable::new(),
    }
}

/// One layer to build: an NSG direction or a firewall.
#[derive(Clone, Copy)]
enum LayerWork {
    Nsg(NsgId, Direction),
    Firewall(FirewallId),
}

/// The two families of a layer's classes, on two threads when `parallel`.
fn fam_layers([v4, v6]: [Vec<Entry>; 2], parallel: bool) -> [FamLayer; 2] {
    if parallel {
        let (a, b) = rayon::join(|| fam_layer_with(v4, true), || fam_layer_with(v6, true));
        [a, b]
    } else {
        [fam_layer(v4), fam_layer(v6)]
    }
}

/// A layer without its L4 bits (they need the L4 atoms of every layer).
fn build_layer(snap: &Snapshot, w: LayerWork, parallel: bool) -> Layer {
    match w {
        LayerWork::Nsg(nsg, direction) => {
            let n = snap.nsg(nsg);
            let rules = match direction {
                Direction::Inbound => &n.inbound,
                Direction::Outbound => &n.outbound,
            };
            let (infos, entries) = nsg_entries(rules, &n.name);
            Layer {
                kind: LayerKind::Nsg { nsg, direction },
                rules: infos,
                slots: vec![],
                dnat: HashMap::default(),
                fam: fam_layers(entries, parallel),
                ctrls: vec![],
                version: 0,
                items: FwItems::default(),
            }
        }
        LayerWork::Firewall(firewall) => {
            let fw = snap.firewall(firewall);
            let (infos, entries, dnat, items) = if parallel {
                fw_layer_parallel(fw)
            } else {
                fw_layer(fw)
            };
            Layer {
                kind: LayerKind::Firewall { firewall },
                slots: (0..infos.len() as u32).collect(),
                rules: infos,
                dnat,
                fam: fam_layers(entries, parallel),
                ctrls: vec![],
                version: 0,
                items,
            }
        }
    }
}

/// Both families' entries of a layer.
fn layer_entries(l: &Layer) -> impl Iterator<Item = &Entry> {
    l.fam.iter().flat_map(|f| f.entries.iter())
}

impl<'s> Engine<'s> {
    /// Every NSG direction and every firewall as a layer; rule L4 sets as bits over the L4
    /// atoms of all layers. Each layer is built alone, so a parallel engine builds them on the
    /// pool (one thread spent ≈ 0.3 s here before the workers started at 500 spokes).
    pub(super) fn add_layers(&mut self) {
        let snap = self.snap;
        let mut work: Vec<LayerWork> = vec![];
        for (i, _) in snap.nsgs() {
            let at = work.len() as u32;
            self.nsg_layer.push([at, at + 1]);
            work.push(LayerWork::Nsg(i, Direction::Inbound));
            work.push(LayerWork::Nsg(i, Direction::Outbound));
        }
        for (i, _) in snap.firewalls() {
            self.fw_subnet.push(snap.firewall_subnet(i));
            self.fw_layer.push(work.len() as u32);
            work.push(LayerWork::Firewall(i));
        }
        let build = |w: &LayerWork| build_layer(snap, *w, self.parallel);
        self.layers = if self.parallel {
            work.par_iter().map(build).collect()
        } else {
            work.iter().map(build).collect()
        };
        let atoms = if self.parallel {
            // Entry by entry on the pool, not layer by layer: the 5,000-rule firewall is one
            // layer, and its entries' cuts and bits were one thread's work while the other
            // core idled.
            let cuts = self
                .layers
                .par_iter()
                .flat_map_iter(layer_entries)
                .fold(
                    || [vec![], vec![], vec![]],
                    |mut cuts, en| {
                        push_l4_cuts(&mut cuts, &en.l4);
                        cuts
                    },
                )
                .map(|mut cuts| {
                    for c in &mut cuts {
                        c.sort_unstable();
                        c.dedup();
                    }
                    cuts
                })
                .reduce(
                    || [vec![], vec![], vec![]],
                    |mut a, b| {
                        for (x, y) in a.iter_mut().zip(b) {
                            x.extend(y);
                        }
                        a
                    },
                );
            L4Atoms::from_cuts(cuts)
        } else {
            L4Atoms::build(self.layers.iter().flat_map(layer_entries).map(|en| &en.l4))
        };
        // Most entries share their L4 set with many others (a port, a protocol): each set's bits
        // are found once per job of the pool (60 k entries × 100 L4 atoms were 3 % of the
        // build).
        let bits = |known: &mut HashMap<L4Set, Bits>, en: &mut Entry| {
            en.bits = match known.get(&en.l4) {
                Some(b) => b.clone(),
                None => {
                    let b = atoms.bits(&en.l4);
                    known.insert(en.l4.clone(), b.clone());
                    b
                }
            }
        };
        if self.parallel {
            // Layer by layer: an entry at a time, the pool split the work so finely that each
            // piece began with an empty table.
            self.layers
                .par_iter_mut()
                .for_each_init(HashMap::default, |known, l| {
                    l.fam
                        .iter_mut()
                        .flat_map(|f| f.entries.iter_mut())
                        .for_each(|en| bits(known, en))
                });
        } else {
            let mut known = HashMap::default();
            self.layers
                .iter_mut()
                .flat_map(|l| l.fam.iter_mut())
                .flat_map(|f| f.entries.iter_mut())
                .for_each(|en| bits(&mut known, en));
        }
        self.l4 = atoms;
    }

    /// The cell of a layer for (source atom, destination atom), walked and stored when new.
    pub(super) fn cell(&mut self, layer: u32, f: Family, sa: usize, da: usize) -> u32 {
        let (slot, stored) = self.cell_slot(layer, f, sa, da);
        if let Some(c) = stored {
            return c;
        }
        let fl = &mut self.layers[layer as usize].fam[f.index()];
        let (sc, dc) = (slot / fl.stride, slot % fl.stride);
        let (src, dst) = (&fl.src.rows, &fl.dst.rows);
        let held = (&src[sc][..], &dst[dc][..]);
        let hash = held_hash(held.0, held.1);
        let walked = |h: &HeldEntries| {
            h.hash == hash && same_held((&src[h.sc as usize], &dst[h.dc as usize]), held)
        };
        if let Some(h) = fl.by_entries.find(hash, walked) {
            let id = h.cell;
            fl.set_cell(slot, id);
            return id;
        }
        // Into a buffer the engine keeps: most walks give pieces already interned, and a fresh
        // vector per walk was grown only to be dropped.
        let mut pieces = std::mem::take(&mut self.walk_buf);
        self.walk(layer, f, slot, &mut pieces);
        let id = self.intern_cell_from(&pieces);
        self.walk_buf = pieces;
        let fl = &mut self.layers[layer as usize].fam[f.index()];
        fl.set_cell(slot, id);
        let held = HeldEntries {
            hash,
            sc: sc as u32,
            dc: dc as u32,
            cell: id,
        };
        fl.by_entries.insert_unique(hash, held, |h| h.hash);
        id
    }

    /// The (source class, destination class) slot of a layer's cell table for an atom pair,
    /// and the cell id stored there (`None`: not computed yet).
    pub(super) fn cell_slot(
        &self,
        layer: u32,
        f: Family,
        sa: usize,
        da: usize,
    ) -> (usize, Option<u32>) {
        let ix = &self.index[f.index()];
        let (sc, dc) = (
            ix.scls[layer as usize][sa] as usize,
            ix.dcls[layer as usize][da] as usize,
        );
        let fl = &self.layers[layer as usize].fam[f.index()];
        let slot = sc * fl.stride + dc;
        (slot, fl.cells[slot].checked_sub(1))
    }

    /// The first-match walk of one cell (a slot of the layer's cell table) over the L4 atoms.
    /// Reads only the layer: safe to run on many threads at once.
    pub(super) fn walk(&self, layer: u32, f: Family, slot: usize, pieces: &mut Vec<Piece>) {
        let fl = &self.layers[layer as usize].fam[f.index()];
        let (sc, dc) = (slot / fl.stride, slot % fl.stride);
        let (srow, drow) = (&fl.src.rows[sc], &fl.dst.rows[dc]);
        let mut remaining = self.l4.full();
        pieces.clear();
        'walk: for (w, (a, b)) in srow.iter().zip(drow).enumerate() {
            let mut bits = a & b;
            while bits != 0 {
                let e = w * 64 + bits.trailing_zeros() as usize;
                bits &= bits - 1;
                let en = &fl.entries[e];
                // Most rules of a class pair meet nothing still remaining: test before copying.
                if remaining.iter().zip(&en.bits).all(|(r, b)| r & b == 0) {
                    continue;
                }
                let hit = and(&remaining, &en.bits);
                remaining
                    .iter_mut()
                    .zip(&en.bits)
                    .for_each(|(r, b)| *r &= !b);
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
    }
}

#[cfg(test)]
mod tests {
    use super::CellTable;

    // Past the mapping threshold: the table is mapped, reads zero, keeps what is written when
    // grown (moved by its page tables) and has zero slots past the old end.
    #[test]
    fn a_mapped_cell_table_grows_keeping_its_slots() {
        let mut t = CellTable::zeroed(300_000);
        assert!(matches!(t, CellTable::Mapped(_)));
        assert!(t.iter().all(|x| *x == 0));
        t[0] = 7;
        t[299_999] = 9;
        t.grow(1_000_000);
        assert_eq!(t.len(), 1_000_000);
        assert_eq!((t[0], t[299_999]), (7, 9));
        assert!(t[300_000..].iter().all(|x| *x == 0));
        t[999_999] = 3;
        assert_eq!(t.iter().filter(|x| **x != 0).count(), 3);
    }

    // Below it, a heap table: grown past the threshold it becomes a mapped one, slots kept.
    #[test]
    fn a_small_cell_table_grows_into_a_mapped_one() {
        let mut t = CellTable::zeroed(100);
        assert!(matches!(t, CellTable::Heap(_)));
        t[99] = 5;
        t.grow(200);
        assert!(matches!(t, CellTable::Heap(_)));
        assert_eq!((t[99], t[199]), (5, 0));
        t.grow(1 << 20);
        assert!(matches!(t, CellTable::Mapped(_)));
        assert_eq!((t[99], t[(1 << 20) - 1]), (5, 0));
    }
}
