//! The parallel build: source places cut into consecutive ranges, each range built by its own
//! engine (same grid and layers, empty tables) on its own thread, then each worker's tables
//! merged into the first engine in range order.
//!
//! Why the ids equal the serial run's: a worker meets every entry (cell, control, chain,
//! request, arrival, decision) the serial run meets for its places, in the same order, plus
//! entries it builds again because an earlier range had them — and those are already in the
//! merged engine. Merging a worker's entries in its creation order, each looked up first and
//! numbered only when new, therefore numbers the new ones as the serial run did. Shared tables
//! (the earlier parallel version) cost more in waiting than they saved.

use super::layers::{CellTable, Entry, FamLayer, Layer};
use super::plans::PathKey;
use super::{Decision, Engine, CHAIN_BITS, NONE};
use crate::headerspace::Family;
use rayon::prelude::*;
use rustc_hash::FxHashMap as HashMap;
use std::ops::Range;
use std::sync::Arc;
use std::time::Instant;

impl<'s> Engine<'s> {
    /// The matrix of one family built on `threads` threads (see the module comment).
    pub(super) fn compute_family_parallel(&mut self, f: Family, threads: usize, t: &mut Instant) {
        let fi = f.index();
        let places = self.index[fi].places.len();
        let ranges = place_ranges(places, threads);
        let first = ranges[0].clone();
        // The rows of the first range (`compute_all` left every row empty: a worker brings its
        // own rows, so allocating them here too was tens of MiB written for nothing), written
        // beside the workers' set-up rather than after it.
        let n = self.grid[fi].len();
        let mut rows = std::mem::take(&mut self.rows[fi]);
        let this = &*self;
        let (mut workers, ()): (Vec<(Engine<'s>, Range<usize>)>, ()) = rayon::join(
            || {
                ranges[1..]
                    .iter()
                    .map(|r| (this.worker(f, r.clone()), r.clone()))
                    .collect()
            },
            || {
                for s in first.clone() {
                    for &a in &this.index[fi].places[s] {
                        rows[a as usize] = vec![NONE; n];
                    }
                }
            },
        );
        self.rows[fi] = rows;
        self.lap("setup", t);
        rayon::join(
            || self.compute_places(f, first),
            || {
                workers
                    .par_iter_mut()
                    .for_each(|(w, r)| w.compute_places(f, r.clone()));
            },
        );
        self.lap("blocks", t);
        for (w, r) in workers {
            self.absorb(f, w, r);
        }
        self.lap("merge", t);
    }

    fn compute_places(&mut self, f: Family, sources: Range<usize>) {
        let places = self.index[f.index()].places.len();
        for s in sources {
            for d in 0..places {
                self.compute_block(f, s, d, None);
            }
        }
    }

    /// An engine over the same grid and layers with empty tables, with rows for the atoms of
    /// `sources` only.
    fn worker(&self, f: Family, sources: Range<usize>) -> Engine<'s> {
        let fi = f.index();
        // Only what a build reads: this family's classes and rule bits (not the rules' address
        // and port sets, nor what a re-check keeps), and empty cell tables. Copied on the pool:
        // the set-up is on the critical path of the build.
        let layer = |l: &Layer| {
            let fl = &l.fam[fi];
            let mut fam: [FamLayer; 2] = Default::default();
            fam[fi] = FamLayer {
                entries: fl
                    .entries
                    .iter()
                    .map(|e| Entry {
                        src: Default::default(),
                        dst: Default::default(),
                        l4: Default::default(),
                        bits: e.bits.clone(),
                        act: e.act,
                        rule: e.rule,
                    })
                    .collect(),
                src: fl.src.rows_only(),
                dst: fl.dst.rows_only(),
                cells: CellTable::zeroed(fl.cells.len()),
                stride: fl.stride,
                filled: vec![],
                by_entries: Default::default(),
            };
            Layer {
                kind: l.kind,
                rules: l.rules.clone(),
                slots: l.slots.clone(),
                dnat: l.dnat.clone(),
                fam,
                ctrls: vec![],
                version: l.version,
                items: Default::default(),
            }
        };
        let n = self.grid[fi].len();
        let rows = || {
            let mut rows: Vec<Vec<u32>> = vec![vec![]; n];
            for s in sources {
                for &a in &self.index[fi].places[s] {
                    rows[a as usize] = vec![NONE; n];
                }
            }
            rows
        };
        let (layers, rows) = rayon::join(
            || self.layers.par_iter().map(layer).collect::<Vec<Layer>>(),
            rows,
        );
        let mut index: [Arc<super::plans::Index>; 2] = Default::default();
        index[fi] = Arc::clone(&self.index[fi]);
        let mut all_rows = [vec![], vec![]];
        all_rows[fi] = rows;
        let mut e = Engine::empty(self.snap, self.grid.clone(), self.l4.clone(), false);
        e.layers = layers;
        e.nsg_layer = self.nsg_layer.clone();
        e.fw_subnet = self.fw_subnet.clone();
        e.fw_layer = self.fw_layer.clone();
        e.rows = all_rows;
        e.index = index;
        e
    }

    /// A worker's tables merged in, each in its creation order (so new entries get the serial
    /// run's ids), and its rows written with the merged decision ids.
    fn absorb(&mut self, f: Family, mut w: Engine<'s>, sources: Range<usize>) {
        let fi = f.index();
        let ctl: Vec<u32> = w
            .controls
            .drain(..)
            .map(|c| match self.control_ids.get(&c) {
                Some(i) => *i,
                None => self.control(c),
            })
            .collect();
        let cell: Vec<u32> = w
            .cells
            .drain(..)
            .map(|pieces| self.intern_cell(pieces))
            .collect();
        // The worker's cell tables are written into the engine's layers on one side of the pool
        // while the other side merges the chains, requests, arrivals and decisions (which read
        // no layer): the slot writes were a third of the merge, on one thread.
        let mut layers = std::mem::take(&mut self.layers);
        let theirs = std::mem::take(&mut w.layers);
        rayon::join(
            || copy_cells(&mut layers, &theirs, &cell, fi),
            || self.absorb_tables(f, &mut w, sources, &ctl, &cell),
        );
        self.layers = layers;
        // Freed on another thread: a worker's tables are many allocations.
        w.layers = theirs;
        w.drop_elsewhere();
    }

    /// The worker's chains, requests, arrivals and decisions merged in their creation order,
    /// and its rows written with the merged decision ids (`ctl`, `cell`: the merged ids of its
    /// controls and cells).
    fn absorb_tables(
        &mut self,
        f: Family,
        w: &mut Engine<'s>,
        sources: Range<usize>,
        ctl: &[u32],
        cell: &[u32],
    ) {
        let fi = f.index();
        let key = |k: &PathKey| -> PathKey {
            k.iter()
                .map(|&(step, a, b)| match step {
                    s if s == u8::MAX as u32 => (s, ctl[a as usize], b),
                    s if s == u8::MAX as u32 - 1 => (s, a, b),
                    s => (s, a, cell[b as usize]),
                })
                .collect()
        };
        // The memo keys in id order, with the merged control and cell ids.
        let keyed = |ids: &HashMap<PathKey, u32>, n: usize| -> Vec<PathKey> {
            let mut keys: Vec<Option<&PathKey>> = vec![None; n];
            for (k, &i) in ids {
                keys[i as usize] = Some(k);
            }
            keys.par_iter()
                .map(|k| key(k.expect("every request and arrival is keyed")))
                .collect()
        };
        // The keys read no chain: rewritten on the pool while this thread merges the chains.
        let mut chain = vec![0u32; w.chains.len()];
        let (chains, request_ids, arrival_ids) = (&w.chains, &w.request_ids, &w.arrival_ids);
        let (nr, na) = (w.requests.len(), w.arrivals.len());
        let ((), (request_keys, arrival_keys)) = rayon::join(
            || {
                for (i, &(shorter, c)) in chains.iter().enumerate().skip(1) {
                    chain[i] = self.extend(chain[shorter as usize], ctl[c as usize]);
                }
            },
            || rayon::join(|| keyed(request_ids, nr), || keyed(arrival_ids, na)),
        );
        let request = {
            let keys = request_keys;
            let mut map = Vec::with_capacity(keys.len());
            for ((going, before), k) in w.requests.drain(..).zip(keys) {
                let id = match self.request_ids.get(&k) {
                    Some(id) => *id,
                    None => {
                        let going = going
                            .into_iter()
                            .map(|(b, c)| (b, chain[c as usize]))
                            .collect();
                        let before = before
                            .into_iter()
                            .map(|(b, v, c)| (b, v, chain[c as usize]))
                            .collect();
                        self.requests.push((going, before));
                        let id = self.requests.len() as u32 - 1;
                        self.request_ids.insert(k, id);
                        id
                    }
                };
                map.push(id);
            }
            map
        };
        let arrival = {
            let keys = arrival_keys;
            let mut map = Vec::with_capacity(keys.len());
            for (ended, k) in w.arrivals.drain(..).zip(keys) {
                let id = match self.arrival_ids.get(&k) {
                    Some(id) => *id,
                    None => {
                        let ended = ended
                            .into_iter()
                            .map(|(t, b, v, c)| (t, b, v, chain[c as usize]))
                            .collect();
                        self.arrivals.push(ended);
                        let id = self.arrivals.len() as u32 - 1;
                        self.arrival_ids.insert(k, id);
                        id
                    }
                };
                map.push(id);
            }
            map
        };
        let words = self.l4.words;
        let outcome = |o: u64| -> u64 {
            let head = (o >> 32) as u32 & ((1 << CHAIN_BITS) - 1);
            let tail = o as u32;
            (o >> 61) << 61 | (chain[head as usize] as u64) << 32 | chain[tail as usize] as u64
        };
        let mut flat: Vec<u64> = vec![];
        let first_new = self.decisions.len() as u32;
        let decision: Vec<u32> = w
            .decisions
            .iter()
            .map(|d| match *d {
                Decision::Pieces(start, n) => {
                    flat.clear();
                    for p in w.dec_words[start..start + n as usize * (words + 1)].chunks(words + 1)
                    {
                        flat.extend_from_slice(&p[..words]);
                        flat.push(outcome(p[words]));
                    }
                    self.intern_pieces(&flat)
                }
                Decision::Composed(r, a) => {
                    let pair = (request[r as usize], arrival[a as usize]);
                    self.composed.get(pair).unwrap_or_else(|| {
                        self.decisions.push(Decision::Composed(pair.0, pair.1));
                        self.decisions.len() as u32 - 1
                    })
                }
            })
            .collect();
        // The new pairs stored, request by request: distinct worker pairs are distinct merged
        // pairs, so those whose decision is new are exactly the pairs not stored yet.
        for (r, mut list) in w.composed.take_all() {
            for p in list.iter_mut() {
                *p = (arrival[p.0 as usize], decision[p.1 as usize]);
            }
            list.retain(|&(_, d)| d >= first_new);
            if !list.is_empty() {
                self.composed.add(request[r as usize], list);
            }
        }
        // The worker's rows renumbered on the pool: millions of entries, each independent.
        let ix = &self.index[fi];
        let mut rows: Vec<(u32, Vec<u32>)> = sources
            .flat_map(|s| ix.places[s].iter())
            .map(|&a| (a, std::mem::take(&mut w.rows[fi][a as usize])))
            .collect();
        rows.par_iter_mut().for_each(|(_, row)| {
            for d in row.iter_mut().filter(|d| **d != NONE) {
                *d = decision[*d as usize];
            }
        });
        for (a, row) in rows {
            self.rows[fi][a as usize] = row;
        }
    }
}

/// A worker's cell tables written into the engine's layers (`cell`: the merged id of each of
/// its cells): the slots it filled that the engine has not, read from its `filled` lists (every
/// slot of the tables, room included, was tens of MiB to read). Layer by layer on the pool.
fn copy_cells(layers: &mut [Layer], theirs: &[Layer], cell: &[u32], fi: usize) {
    layers.par_iter_mut().zip(theirs).for_each(|(l, wl)| {
        let (mine, theirs) = (&mut l.fam[fi], &wl.fam[fi]);
        for (sc, dcs) in theirs.filled.iter().enumerate() {
            for &dc in dcs {
                let slot = sc * theirs.stride + dc as usize;
                let t = theirs.cells[slot];
                if t != 0 && mine.cells.get(slot) == Some(&0) {
                    // Through `set_cell`, so a re-check that drops cells by `filled` sees it.
                    mine.set_cell(slot, cell[t as usize - 1]);
                }
            }
        }
    });
}

/// `places` cut into `threads` consecutive ranges of equal length (measured: a worker's
/// building again what an earlier range shared with it is a few percent of its time).
fn place_ranges(places: usize, threads: usize) -> Vec<Range<usize>> {
    let threads = threads.clamp(1, places.max(1));
    (0..threads)
        .map(|t| t * places / threads..(t + 1) * places / threads)
        .collect()
}
