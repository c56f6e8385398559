//! Re-check after one layer's rules changed: only the (source atom, destination atom) pairs
//! inside the boxes of the rules between the first and the last difference are re-planned.

use super::atoms::{and, classes_over, zero, AtomLoc, Bits};
use super::layers::{
    fam_layer, fw_dnat, fw_entries, fw_hashes, fw_rule_counts, nsg_entries, Act, Entry,
    FwConverted, Layer, LayerKind, RuleInfo,
};
use super::plans::STEP_NAMES;
use super::NONE;
use super::{Control, Engine, Outcome, CHAIN_BITS, VERDICTS};
use crate::headerspace::{addr_value, Family, IntervalSet};
use palisade_model::Direction;
use palisade_policy::firewall::CompiledFirewall;
use palisade_policy::nsg::DirectionRules;
use palisade_policy::SubnetId;
use palisade_policy::{FirewallId, NsgId};
use rustc_hash::FxHashMap as HashMap;
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;

/// A layer's change in one family: its entries `lo..hi` replaced by `new`. A flow outside
/// every rule of the window meets the same first match before and after.
pub(super) struct Window {
    lo: usize,
    hi: usize,
    new: Vec<Entry>,
    /// The whole new list when entries outside the window now name other rule indexes
    /// (a rule deleted before them): their cells name rules by index.
    whole: Option<Vec<Entry>>,
}

impl<'s> Engine<'s> {
    /// Re-check after the rules of one NSG direction changed (same subnets and routes).
    /// Returns the number of (source atom, destination atom) pairs re-evaluated.
    pub fn update_nsg(
        &mut self,
        nsg: NsgId,
        direction: Direction,
        rules: &DirectionRules,
    ) -> Result<usize, String> {
        let n = self.recheck_nsg(nsg, direction, rules, None)?;
        self.compact_if_grown();
        Ok(n)
    }

    /// [`Engine::update_nsg`] keeping every decision id meaningful: the engine is never
    /// rebuilt, however its tables grew. The decisions it replaces are recorded in `saved`
    /// ([`Engine::save_decisions`]). With [`Engine::update_firewall_keeping_ids`], what `diff`
    /// derives a new version through.
    pub fn update_nsg_keeping_ids(
        &mut self,
        nsg: NsgId,
        direction: Direction,
        rules: &DirectionRules,
        saved: &mut SavedDecisions,
    ) -> Result<usize, String> {
        self.recheck_nsg(nsg, direction, rules, Some(saved))
    }

    fn recheck_nsg(
        &mut self,
        nsg: NsgId,
        direction: Direction,
        rules: &DirectionRules,
        record: Option<&mut SavedDecisions>,
    ) -> Result<usize, String> {
        let Some(layer) = self.layer_id(LayerKind::Nsg { nsg, direction }) else {
            return Err(format!("no NSG layer {}", nsg.index()));
        };
        let name = self.snap.nsg(nsg).name.clone();
        let (infos, entries) = nsg_entries(rules, &name);
        self.replace_rules(layer, infos, entries, HashMap::default(), record)
    }

    /// Re-check after a firewall's rules changed (same addresses). Only the items between the
    /// first and the last changed fingerprint are converted and spliced in (a one-rule change
    /// converts one rule, not the firewall). Entries name rules by slot, not by the firewall's
    /// rule index: when a rule is added or deleted, the later rules keep their slots (and so
    /// every cell and memo key naming them), an added rule takes a new slot, and a deleted
    /// rule's entries become empty entries held by no class, so the classes are cut only where
    /// its ranges fell (APKeep-style) instead of being rebuilt.
    pub fn update_firewall(
        &mut self,
        firewall: FirewallId,
        fw: &CompiledFirewall,
    ) -> Result<usize, String> {
        let n = self.recheck_firewall(firewall, fw, None)?;
        self.compact_if_grown();
        Ok(n)
    }

    /// [`Engine::update_firewall`] keeping every decision id meaningful: the engine is never
    /// rebuilt; the decisions it replaces are recorded in `saved`. A rule moved by its priority
    /// keeps its controls, relabelled: a decision saved before is spelled out as it was with
    /// [`Engine::saved_outcome`].
    pub fn update_firewall_keeping_ids(
        &mut self,
        firewall: FirewallId,
        fw: &CompiledFirewall,
        saved: &mut SavedDecisions,
    ) -> Result<usize, String> {
        self.recheck_firewall(firewall, fw, Some(saved))
    }

    /// A rule kept under a new priority keeps its controls, relabelled.
    fn recheck_firewall(
        &mut self,
        firewall: FirewallId,
        fw: &CompiledFirewall,
        record: Option<&mut SavedDecisions>,
    ) -> Result<usize, String> {
        let Some(layer) = self.layer_id(LayerKind::Firewall { firewall }) else {
            return Err(format!("no firewall {}", firewall.index()));
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
        let (hash, rule) = fw_hashes(fw);
        let counts = fw_rule_counts(fw);
        let l = &self.layers[layer as usize];
        let old = &l.items;
        let total = |c: (usize, usize, usize)| (c.0 + c.1 + c.2) as i64;
        let delta = total(counts) - total(old.rules);
        // The items kept before and after the window: the same fingerprint under the same
        // rule index before it, under the index shifted by the rules added or deleted after it
        // (rule indexes follow the items' order: DNAT, network, application rules).
        let kept = |i: usize, j: usize, d: i64| {
            hash[j] == old.hash[i] && i64::from(rule[j]) == i64::from(old.rule[i]) + d
        };
        let (n_old, n_new) = (old.hash.len(), hash.len());
        let mut lo = 0;
        while lo < n_old && lo < n_new && kept(lo, lo, 0) {
            lo += 1;
        }
        let (mut ho, mut hn) = (n_old, n_new);
        while ho > lo && hn > lo && kept(ho - 1, hn - 1, delta) {
            ho -= 1;
            hn -= 1;
        }
        if counts == old.rules && n_old == n_new && lo == ho {
            return Ok(0);
        }
        // The slot of each rule index. With as many rules as before, the slot the index had (a
        // rule moved by its priority is renamed in place, see `replace_layer`); otherwise a kept
        // item's rule keeps its slot and a rule met only in the window takes a new one.
        let mut slots = if delta == 0 && counts == old.rules {
            l.slots.clone()
        } else {
            vec![NONE; total(counts) as usize]
        };
        let mut next = l.rules.len() as u32;
        let mut clash = false;
        let kept_items = (0..lo)
            .map(|j| (j, j))
            .chain((hn..n_new).map(|j| (j, j - hn + ho)));
        for (j, i) in kept_items {
            let s = l.slots[old.rule[i] as usize];
            let at = &mut slots[rule[j] as usize];
            clash |= *at != NONE && *at != s;
            *at = s;
        }
        if clash {
            return Err("a rule's items moved apart: build a new engine".into());
        }
        let FwConverted {
            entries,
            first: conv_first,
            infos,
        } = fw_entries(fw, lo..hn);
        let mut slot_of = |r: u32| {
            let at = &mut slots[r as usize];
            if *at == NONE {
                *at = next;
                next += 1;
            }
            *at
        };
        let infos: Vec<(u32, RuleInfo)> = infos.into_iter().map(|(r, i)| (slot_of(r), i)).collect();
        let dnat: HashMap<u32, (IpAddr, Option<u16>)> = fw_dnat(fw)
            .into_iter()
            .map(|(r, t)| (slot_of(r), t))
            .collect();
        // Per family: the window's entries, taken back over the empty entries a deleted rule
        // left just before it, and the new ones padded with empty entries to as many when
        // fewer (the classes are then cut in place, `FamLayer::replace`).
        let mut starts = [0usize; 2];
        let mut ws = vec![];
        for (fi, mut new) in entries.into_iter().enumerate() {
            for e in &mut new {
                e.rule = slot_of(e.rule);
            }
            let es = &l.fam[fi].entries;
            let (mut a, b) = (old.first[fi][lo] as usize, old.first[fi][ho] as usize);
            while a > 0 && es[a - 1].src.is_empty() {
                a -= 1;
            }
            if new.len() < b - a {
                new.resize(b - a, empty_entry());
            }
            starts[fi] = a;
            ws.push(Window {
                lo: a,
                hi: b,
                new,
                whole: None,
            });
        }
        let news: [usize; 2] = [ws[0].new.len(), ws[1].new.len()];
        let windows: [Window; 2] = ws.try_into().map_err(|_| "two families")?;
        let old_first = old.first.clone();
        let n = self.replace_layer(layer, windows, dnat, Ok(infos), record)?;
        let l = &mut self.layers[layer as usize];
        // The items after the window move by the change in its entry count.
        for (fi, (first, conv)) in l.items.first.iter_mut().zip(&conv_first).enumerate() {
            let (at, old_end) = (starts[fi] as u32, old_first[fi][ho]);
            let new_end = at + news[fi] as u32;
            let mut next: Vec<u32> = first[..lo].to_vec();
            next.extend(conv[..hn - lo].iter().map(|x| x + at));
            next.extend(first[ho..].iter().map(|x| x - old_end + new_end));
            *first = next;
        }
        l.items.hash = hash;
        l.items.rule = rule;
        l.items.rules = counts;
        l.slots = slots;
        Ok(n)
    }

    /// The decisions as they are now, for [`Engine::changed_pairs`] after re-checks that keep
    /// ids ([`Engine::update_nsg_keeping_ids`]): the controls and the number of pairs with a
    /// decision now; the re-checks then record the decisions they replace (copying every
    /// pair's decision was a tenth of a diff).
    pub fn save_decisions(&self) -> SavedDecisions {
        let with_decision = self
            .rows
            .iter()
            .flatten()
            .map(|row| row.iter().filter(|d| **d != NONE).count())
            .sum();
        SavedDecisions {
            replaced: vec![],
            with_decision,
            controls: self.controls.clone(),
        }
    }

    /// An outcome id met when `saved` was taken, spelled out as it was then: a re-check may
    /// since have relabelled a moved rule's controls with its new priority.
    pub fn saved_outcome(&self, saved: &SavedDecisions, id: u64) -> Outcome {
        let verdict = VERDICTS[(id >> 61) as usize];
        let head = (id >> 32) as u32 & ((1 << CHAIN_BITS) - 1);
        let mut chain = self.saved_chain(saved, head);
        chain.extend(self.saved_chain(saved, id as u32));
        Outcome { verdict, chain }
    }

    fn saved_chain(&self, saved: &SavedDecisions, c: u32) -> Vec<Control> {
        self.chain_of(&saved.controls, c)
    }

    /// The atom pairs whose decision differs from `saved`, in (family, source atom,
    /// destination atom) order, as (family, source, destination, decision then, decision now),
    /// and the number of pairs with a decision on either side. Only re-planned pairs can
    /// differ (the re-checks recorded what they replaced), and a pair whose id is unchanged
    /// answers the same: ids name stored content that re-checks keeping ids never change.
    pub fn changed_pairs(&self, saved: &mut SavedDecisions) -> (Vec<ChangedPair>, usize) {
        // A pair re-planned by several re-checks: its first record holds the saved decision.
        saved.replaced.sort_by_key(|r| (r.0, r.1, r.2));
        saved.replaced.dedup_by_key(|r| (r.0, r.1, r.2));
        let mut out = Vec::with_capacity(saved.replaced.len());
        let mut with_decision = saved.with_decision;
        for &(fi, sa, da, x) in &saved.replaced {
            let f = if fi == 0 { Family::V4 } else { Family::V6 };
            let y = self.pair_decision(fi as usize, sa, da);
            if x != y {
                with_decision += usize::from(x == NONE);
                out.push((f, sa, da, x, y));
            }
        }
        (out, with_decision)
    }

    /// A pair's decision, [`NONE`] where its source has no row.
    fn pair_decision(&self, fi: usize, sa: u32, da: u32) -> u32 {
        self.rows[fi]
            .get(sa as usize)
            .and_then(|row| row.get(da as usize))
            .copied()
            .unwrap_or(NONE)
    }

    /// What the re-checks have left behind (see [`Growth`]).
    pub fn growth(&self) -> Growth {
        let (mut dead_slots, mut live_slots, mut empty_entries) = (0, 0, 0);
        for l in self.layers.iter().filter(|l| !l.slots.is_empty()) {
            live_slots += l.slots.len();
            dead_slots += l.rules.len().saturating_sub(l.slots.len());
            empty_entries += l
                .fam
                .iter()
                .flat_map(|f| &f.entries)
                .filter(|e| e.rule == NONE)
                .count();
        }
        Growth {
            tables: self.table_size(),
            baseline: self.baseline,
            dead_slots,
            live_slots,
            empty_entries,
        }
    }

    /// Entries in the tables re-checks only add to: cells (a retired one stays, unnamed),
    /// controls, chains, decisions, request paths and arrivals.
    pub(super) fn table_size(&self) -> usize {
        self.cells.len()
            + self.controls.len()
            + self.chains.len()
            + self.decisions.len()
            + self.requests.len()
            + self.arrivals.len()
    }

    /// Rebuild from the current layers once the re-checks have at least doubled the tables
    /// (past a floor, so that a small network is not rebuilt every few edits), or once a
    /// firewall holds more deleted rule slots than half its live ones: an engine taking
    /// thousands of edits (an editor, the API) then stays within a constant factor of a fresh
    /// one, and the rebuild — one matrix — is paid once per as many edits as it took to grow.
    fn compact_if_grown(&mut self) {
        let g = self.growth();
        if g.tables > 2 * g.baseline + COMPACT_FLOOR || 2 * g.dead_slots > g.live_slots.max(1) {
            self.rebuild();
        }
    }

    /// Every table rebuilt from the layers as they now are, as a fresh build over the edited
    /// snapshot would (same grid and L4 atoms): firewall slots renumbered to the rule indexes,
    /// deleted rules' empty entries dropped, then the matrix computed again. Ids change;
    /// answers do not.
    pub fn rebuild(&mut self) {
        let mut layers = std::mem::take(&mut self.layers);
        for l in &mut layers {
            compact_layer(l);
        }
        let mut e = Engine::empty(self.snap, self.grid.clone(), self.l4.clone(), self.parallel);
        e.layers = layers;
        e.nsg_layer = std::mem::take(&mut self.nsg_layer);
        e.fw_subnet = std::mem::take(&mut self.fw_subnet);
        e.fw_layer = std::mem::take(&mut self.fw_layer);
        e.compute_all();
        e.baseline = e.table_size();
        *self = e;
    }

    /// A layer's rules replaced whole: the window of each family is found by comparing the
    /// old and new entries from both ends.
    fn replace_rules(
        &mut self,
        layer: u32,
        infos: Vec<RuleInfo>,
        entries: [Vec<Entry>; 2],
        dnat: HashMap<u32, (IpAddr, Option<u16>)>,
        record: Option<&mut SavedDecisions>,
    ) -> Result<usize, String> {
        let old_rules = &self.layers[layer as usize].rules;
        let window = |fi: usize, new: Vec<Entry>| {
            let old = &self.layers[layer as usize].fam[fi].entries;
            let same = |a: &Entry, b: &Entry| {
                a.src == b.src
                    && a.dst == b.dst
                    && a.l4 == b.l4
                    && a.act == b.act
                    && old_rules
                        .get(a.rule as usize)
                        .map(|r| (&r.rule, r.priority))
                        == infos.get(b.rule as usize).map(|r| (&r.rule, r.priority))
            };
            let mut lo = 0;
            while lo < old.len() && lo < new.len() && same(&old[lo], &new[lo]) {
                lo += 1;
            }
            let (mut ho, mut hn) = (old.len(), new.len());
            while ho > lo && hn > lo && same(&old[ho - 1], &new[hn - 1]) {
                ho -= 1;
                hn -= 1;
            }
            let kept = old[..lo]
                .iter()
                .zip(&new[..lo])
                .all(|(a, b)| a.rule == b.rule)
                && old[ho..]
                    .iter()
                    .zip(&new[hn..])
                    .all(|(a, b)| a.rule == b.rule);
            if lo == ho && lo == hn && !kept {
                // Same entries under other rule indexes: every cell names rules by index.
                (lo, ho, hn) = (0, old.len(), new.len());
            }
            let window = new[lo..hn].to_vec();
            Window {
                lo,
                hi: ho,
                new: window,
                whole: (!kept).then_some(new),
            }
        };
        let [v4, v6] = entries;
        let windows = [window(0, v4), window(1, v6)];
        self.replace_layer(layer, windows, dnat, Err(infos), record)
    }

    /// Apply one window per family and re-check the flows the windows' rules cover. `infos`:
    /// `Ok` the changed rules' infos (every other index means the same rule as before), `Err`
    /// all of them (any index may now mean another rule). With `Ok`, a changed rule that is an
    /// old one under a new index or priority keeps its controls, relabelled (`kept_rules`);
    /// otherwise the flows it decides are re-checked. Nothing changes on an error. With
    /// `record`, the decisions the re-check replaces are recorded there.
    fn replace_layer(
        &mut self,
        layer: u32,
        windows: [Window; 2],
        dnat: HashMap<u32, (IpAddr, Option<u16>)>,
        infos: Result<Vec<(u32, RuleInfo)>, Vec<RuleInfo>>,
        mut record: Option<&mut SavedDecisions>,
    ) -> Result<usize, String> {
        // The atoms must already separate every address the new rules name.
        for (fi, w) in windows.iter().enumerate() {
            let g = &self.grid[fi];
            for e in &w.new {
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
        if windows
            .iter()
            .flat_map(|w| &w.new)
            .any(|e| !self.l4.aligned(&e.l4))
        {
            return Err(
                "the change names a new protocol or port boundary: build a new engine".into(),
            );
        }
        let kind = self.layers[layer as usize].kind;
        // L4 bits: the entries outside the windows keep theirs.
        let mut windows = windows;
        for w in &mut windows {
            for e in w.new.iter_mut() {
                e.bits = self.l4.bits(&e.l4);
            }
        }
        let kept = match &infos {
            Ok(changed) => self.kept_rules(layer, changed),
            Err(_) => HashMap::default(),
        };
        // The boxes whose flows can change, per family, read before the rule infos change.
        let (boxes, perms): ([Vec<Box3>; 2], [Option<Vec<usize>>; 2]) = {
            let l = &self.layers[layer as usize];
            let new_info: HashMap<u32, &RuleInfo> = match &infos {
                Ok(changed) => changed.iter().map(|(r, i)| (*r, i)).collect(),
                Err(_) => HashMap::default(),
            };
            let info_new = |r: u32| match &infos {
                Ok(_) => new_info
                    .get(&r)
                    .copied()
                    .or_else(|| l.rules.get(r as usize)),
                Err(all) => all.get(r as usize),
            };
            // A rule kept under a new index or priority is the same rule: its controls are
            // kept and relabelled, so only a change of which rule decides re-checks a flow.
            let same_rule = |o: u32, n: u32| match kept.get(&n) {
                Some(&(old, _, _)) => old == o,
                None => l.rules.get(o as usize) == info_new(n),
            };
            let same = |o: &Entry, n: &Entry| {
                o.act == n.act
                    && o.src == n.src
                    && o.dst == n.dst
                    && o.l4 == n.l4
                    && same_rule(o.rule, n.rule)
                    && (o.act != Act::Dnat || l.dnat.get(&o.rule) == dnat.get(&n.rule))
            };
            let mut out: [Vec<Box3>; 2] = [vec![], vec![]];
            let mut perms: [Option<Vec<usize>>; 2] = [None, None];
            for (fi, w) in windows.iter().enumerate() {
                let old = &l.fam[fi].entries[w.lo..w.hi];
                (out[fi], perms[fi]) = changed_boxes(old, &w.new, same);
            }
            (out, perms)
        };
        let retire: Option<Vec<u32>>;
        {
            let l = &mut self.layers[layer as usize];
            // Whether a rule index now names another rule (another control): a memo key names
            // cells, whose pieces name rules by index, so only then do this layer's keys go
            // stale. A change of a rule's addresses, ports or access alone changes the cells
            // it meets (new cell ids, new keys) and keeps every other key valid.
            // `Some`: the indexes that now name another rule; `None`: any index may.
            let renamed: Option<Vec<u32>> = match infos {
                // A control names its rule: only the changed rules' controls are re-derived.
                Ok(changed) => {
                    let steps = STEP_NAMES.len();
                    let mut renamed = vec![];
                    // New slots (a rule added): no cell names them yet.
                    let known = l.rules.len();
                    if let Some(top) = changed.iter().map(|(r, _)| *r as usize + 1).max() {
                        if top > known {
                            l.rules.resize(top, RuleInfo::unused());
                            if !l.ctrls.is_empty() {
                                l.ctrls.resize((top + 1) * steps, NONE);
                            }
                        }
                    }
                    for (r, info) in changed {
                        if let Some((old, ctrls, live)) = kept.get(&r) {
                            if *old != r {
                                renamed.push(r);
                            }
                            if !l.ctrls.is_empty() {
                                let at = (r as usize + 1) * steps;
                                l.ctrls[at..at + steps].copy_from_slice(ctrls);
                            }
                            // The answers name the rule's controls: they now say its new
                            // priority (`kept_rules` checked no other control says that).
                            for &c in live {
                                let ctl = &mut self.controls[c as usize];
                                if ctl.priority != info.priority {
                                    self.control_ids.remove(ctl);
                                    ctl.priority = info.priority;
                                    self.control_ids.insert(ctl.clone(), c);
                                }
                            }
                            l.rules[r as usize] = info;
                            continue;
                        }
                        if l.rules[r as usize] == info {
                            continue;
                        }
                        if (r as usize) < known {
                            renamed.push(r);
                        }
                        if !l.ctrls.is_empty() {
                            let at = (r as usize + 1) * steps;
                            l.ctrls[at..at + steps].fill(NONE);
                        }
                        l.rules[r as usize] = info;
                    }
                    renamed.sort_unstable();
                    renamed.dedup();
                    Some(renamed)
                }
                Err(all) if all == l.rules => Some(vec![]),
                Err(all) => {
                    l.rules = all;
                    l.ctrls.clear();
                    None
                }
            };
            // A renamed index makes stale the keys whose cells name it. When every entry
            // naming one lies in a window replaced in place, the slots `FamLayer::replace`
            // drops are all the slots holding such a cell: those cells are retired (the next
            // walk of the same pieces gets a new id, so their keys are never met again) and
            // every other key of the layer stays valid — the saved paths through a firewall
            // survive a collection move. Otherwise the layer's version is bumped. Paths that
            // do not meet the layer keep their memo keys in any case.
            let renamed_any = renamed.as_ref().is_none_or(|r| !r.is_empty());
            retire = renamed.filter(|r| !r.is_empty()).and_then(|r| {
                let in_place = windows.iter().enumerate().all(|(fi, w)| {
                    let es = &l.fam[fi].entries;
                    let outside = es.iter().enumerate().any(|(i, e)| {
                        !(w.lo..w.hi).contains(&i) && r.binary_search(&e.rule).is_ok()
                    });
                    let touched = !(w.lo == w.hi && w.new.is_empty());
                    !outside
                        && (!touched
                            || (w.whole.is_none()
                                && w.new.len() == w.hi - w.lo
                                && es[w.lo..w.hi] != w.new[..]))
                });
                in_place.then_some(r)
            });
            if renamed_any && retire.is_none() {
                l.version += 1;
            }
            l.dnat = dnat;
        }
        // Both families' tables first: a cell retired in one family may be held by the other's
        // table too, and must be gone before any block is re-checked.
        let mut todo = vec![];
        let mut bump = false;
        for (((f, w), boxes), perm) in [Family::V4, Family::V6]
            .into_iter()
            .zip(windows)
            .zip(boxes)
            .zip(perms)
        {
            let fi = f.index();
            let Window { lo, hi, new, whole } = w;
            // A family the change does not touch keeps its classes and its cell cache: a
            // firewall change on IPv4 rebuilds nothing on IPv6.
            if lo == hi && new.is_empty() {
                continue;
            }
            let fl = &mut self.layers[layer as usize].fam[fi];
            // The same entries (a rule renamed, or a collection's priority moved with its
            // order kept): the same classes and cells, which name rules by index.
            if whole.is_some() || fl.entries[lo..hi] != new[..] {
                match whole {
                    None if new.len() == hi - lo => {
                        let dropped = fl.replace(lo, new, perm.as_deref());
                        match (&retire, dropped) {
                            (Some(renamed), Some(dropped)) => self.retire_cells(&dropped, renamed),
                            // Every cell of the table dropped: listing them all to retire the
                            // few naming renamed rules cost more than the saved paths.
                            (Some(_), None) => bump = true,
                            (None, _) => {}
                        }
                    }
                    None => {
                        let mut entries = std::mem::take(&mut fl.entries);
                        entries.splice(lo..hi, new);
                        *fl = fam_layer(entries);
                    }
                    Some(mut all) => {
                        let end = lo + new.len();
                        for (i, e) in all.iter_mut().enumerate() {
                            e.bits = if i < lo {
                                fl.entries[i].bits.clone()
                            } else if i >= end {
                                fl.entries[i - end + hi].bits.clone()
                            } else {
                                new[i - lo].bits.clone()
                            };
                        }
                        *fl = fam_layer(all);
                    }
                }
                {
                    let fl = &self.layers[layer as usize].fam[fi];
                    let starts = &self.grid[fi].starts;
                    // Unique once the build's workers are gone: changed in place.
                    let ix = Arc::make_mut(&mut self.index[fi]);
                    ix.scls[layer as usize] = classes_over(&fl.src, starts);
                    ix.dcls[layer as usize] = classes_over(&fl.dst, starts);
                }
            }
            todo.push((f, boxes));
        }
        if bump {
            self.layers[layer as usize].version += 1;
        }
        let mut count = 0;
        for (f, boxes) in todo {
            let fi = f.index();
            if boxes.is_empty() {
                continue;
            }
            let snap = self.snap;
            let uses = |a: &AtomLoc, nsg: NsgId| {
                a.subnet.and_then(|s| snap.subnet(s).nsg) == Some(nsg)
                    || a.nic.and_then(|x| snap.nic(x).nsg) == Some(nsg)
            };
            let applies_src = |a: &AtomLoc| match kind {
                LayerKind::Nsg {
                    nsg,
                    direction: Direction::Outbound,
                } => uses(a, nsg),
                _ => true,
            };
            // An inbound NSG is met at its own subnet's and NICs' addresses, and — when it
            // guards a DNAT target — by DNAT'd flows (FW-4), below.
            let applies_dst = |a: &AtomLoc| match kind {
                LayerKind::Nsg {
                    nsg,
                    direction: Direction::Inbound,
                } => uses(a, nsg),
                _ => true,
            };
            let dnats = match kind {
                LayerKind::Nsg {
                    direction: Direction::Inbound,
                    ..
                } if self.index[fi].dnat_layers.contains(&layer) => self.dnat_entries(f),
                _ => vec![],
            };
            let g = &self.grid[fi];
            let atoms_in = |set: &IntervalSet| -> Vec<usize> {
                let mut v = vec![];
                for &(a, b) in set.ranges() {
                    v.extend(g.atom_of(a)..=g.atom_of(b));
                }
                v
            };
            let meets = |x: &[u64], y: &[u64]| x.iter().zip(y).any(|(a, b)| a & b != 0);
            // Per (source place, destination place), the atoms to redo on each side; each block
            // is re-evaluated grouped like the full matrix (one pair per group pair). The union
            // of several boxes' products in one block may cover more pairs than needed: they
            // are recomputed, not guessed.
            let outside = self.index[fi].places.len() - 1;
            let place = |a: usize| g.loc[a].subnet.map_or(outside, SubnetId::index);
            type Sides = (Vec<u32>, Vec<u32>);
            let mut blocks: HashMap<(usize, usize), Sides> = HashMap::default();
            for (s, d, bits) in &boxes {
                // From inside, a DNAT'd flow meets the target's inbound NSG as the original
                // packet, at its own (source, destination) pair: a DNAT destination is
                // re-checked when the rule's L4 meets the DNAT rule's.
                let dn: Vec<&IntervalSet> = dnats
                    .iter()
                    .filter(|x| meets(bits, &x.bits))
                    .map(|x| &x.dst)
                    .collect();
                let mut ss: BTreeMap<usize, Vec<u32>> = BTreeMap::new();
                for a in atoms_in(s).into_iter().filter(|a| applies_src(&g.loc[*a])) {
                    ss.entry(place(a)).or_default().push(a as u32);
                }
                let mut ds: BTreeMap<usize, Vec<u32>> = BTreeMap::new();
                for a in atoms_in(d).into_iter().filter(|a| {
                    applies_dst(&g.loc[*a]) || dn.iter().any(|x| x.contains(g.starts[*a]))
                }) {
                    ds.entry(place(a)).or_default().push(a as u32);
                }
                for (sp, sv) in &ss {
                    for (dp, dv) in &ds {
                        let b = blocks.entry((*sp, *dp)).or_default();
                        b.0.extend(sv);
                        b.1.extend(dv);
                    }
                }
            }
            // From outside, a DNAT'd flow meets the target's inbound NSG translated: at the
            // translated address and port, from the firewall's address. Its matrix pair (a
            // source outside, the DNAT rule's destination) lies outside the rules' boxes; it is
            // re-checked when a rule's destination holds the translated address and its L4
            // meets the translated flows.
            for x in &dnats {
                let Some((to, port)) = x.to else { continue };
                let at = addr_value(to);
                let hit = boxes.iter().any(|(_, d, bits)| {
                    d.contains(at)
                        && match port {
                            Some(p) => meets(&self.l4.at_dport(bits, p), &x.bits),
                            None => meets(bits, &x.bits),
                        }
                });
                if !hit {
                    continue;
                }
                let mut by_place: BTreeMap<usize, Vec<u32>> = BTreeMap::new();
                for a in atoms_in(&x.dst) {
                    by_place.entry(place(a)).or_default().push(a as u32);
                }
                for (dp, dv) in by_place {
                    let b = blocks.entry((outside, dp)).or_default();
                    b.0.extend(&self.index[fi].places[outside]);
                    b.1.extend(dv);
                }
            }
            // In place order, each side's atoms sorted once (a set per block was a tenth of
            // the broad re-checks).
            let mut blocks: Vec<_> = blocks.into_iter().collect();
            blocks.sort_unstable_by_key(|(k, _)| *k);
            for ((sp, dp), (mut ss, mut ds)) in blocks {
                for side in [&mut ss, &mut ds] {
                    side.sort_unstable();
                    side.dedup();
                }
                count += ss.len() * ds.len();
                let Some(rec) = record.as_deref_mut() else {
                    self.compute_block(f, sp, dp, Some((&ss, &ds)));
                    continue;
                };
                // The block's decisions before, of which only those it replaced are kept.
                let start = rec.replaced.len();
                for &sa in &ss {
                    for &da in &ds {
                        let x = self.pair_decision(fi, sa, da);
                        rec.replaced.push((fi as u8, sa, da, x));
                    }
                }
                self.compute_block(f, sp, dp, Some((&ss, &ds)));
                let mut kept = start;
                for i in start..rec.replaced.len() {
                    let r = rec.replaced[i];
                    if self.pair_decision(fi, r.1, r.2) != r.3 {
                        rec.replaced[kept] = r;
                        kept += 1;
                    }
                }
                rec.replaced.truncate(kept);
            }
        }
        Ok(count)
    }

    /// Retire the cells among `dropped` whose pieces name a rule index in `renamed` (sorted):
    /// their content is forgotten, so a walk giving the same pieces gets a new id and no memo
    /// key naming the old one is met again (the old id may still serve another layer, where
    /// its indexes mean that layer's rules).
    fn retire_cells(&mut self, dropped: &[u32], renamed: &[u32]) {
        for &c in dropped {
            let pieces = &self.cells[c as usize];
            if pieces
                .iter()
                .any(|p| renamed.binary_search(&p.rule).is_ok())
            {
                self.forget_cell(c);
            }
        }
    }

    /// The changed rules that are old rules of the layer under a new index or priority (same
    /// layer, resource and name, one of each among the changed rules): new index → [`Kept`].
    /// Their controls are kept and relabelled with the new priority instead of the flows they
    /// decide being re-checked. Left out: a rule whose relabelled
    /// control would equal a control already known, and every rule when another firewall
    /// names the same resource (its controls could be shared).
    fn kept_rules(&self, layer: u32, changed: &[(u32, RuleInfo)]) -> HashMap<u32, Kept> {
        let l = &self.layers[layer as usize];
        let steps = STEP_NAMES.len();
        let mut out = HashMap::default();
        // One (index, info) per changed rule (a rule has an item per protocol).
        let mut rules: Vec<&(u32, RuleInfo)> = changed.iter().collect();
        rules.sort_by_key(|(r, _)| *r);
        rules.dedup_by_key(|(r, _)| *r);
        let mut resources: Vec<&str> = rules.iter().map(|(_, i)| i.resource.as_str()).collect();
        resources.sort_unstable();
        resources.dedup();
        let shared = self.layers.iter().enumerate().any(|(k, o)| {
            k != layer as usize
                && matches!(o.kind, LayerKind::Firewall { .. })
                && o.rules
                    .iter()
                    .any(|r| resources.contains(&r.resource.as_str()))
        });
        if shared {
            return out;
        }
        let name = |i: &'_ RuleInfo| Some((i.layer, i.resource.clone(), i.rule.clone()?));
        // By name: the old index, and how many changed rules had it before and have it now.
        let mut by_name: HashMap<_, (u32, u32, u32)> = HashMap::default();
        for (r, _) in &rules {
            if let Some(n) = l.rules.get(*r as usize).and_then(name) {
                let e = by_name.entry(n).or_insert((*r, 0, 0));
                e.1 += 1;
            }
        }
        for (_, info) in &rules {
            if let Some(e) = name(info).and_then(|n| by_name.get_mut(&n)) {
                e.2 += 1;
            }
        }
        for (r, info) in rules {
            let Some(&(o, 1, 1)) = name(info).and_then(|n| by_name.get(&n)) else {
                continue;
            };
            let ctrls: Vec<u32> = if l.ctrls.is_empty() {
                vec![NONE; steps]
            } else {
                let at = (o as usize + 1) * steps;
                l.ctrls[at..at + steps].to_vec()
            };
            // Every control of the old rule, found by content: answers may hold one whose
            // slot in `ctrls` was cleared by an earlier re-check.
            let was = &l.rules[o as usize];
            let live: Vec<u32> = STEP_NAMES
                .iter()
                .filter_map(|step| {
                    let ctl = Control {
                        step,
                        layer: was.layer,
                        resource: was.resource.clone(),
                        rule: was.rule.clone(),
                        priority: was.priority,
                    };
                    self.control_ids.get(&ctl).copied()
                })
                .collect();
            let clash = was.priority != info.priority
                && live.iter().any(|&c| {
                    let mut ctl = self.controls[c as usize].clone();
                    ctl.priority = info.priority;
                    self.control_ids.contains_key(&ctl)
                });
            if !clash {
                out.insert(*r, (o, ctrls, live));
            }
        }
        out
    }

    /// The DNAT entries of every firewall in one family: where a DNAT'd flow can meet its
    /// target's inbound NSG (see `replace_layer`).
    fn dnat_entries(&self, f: Family) -> Vec<DnatEntry> {
        let mut out = vec![];
        for l in &self.layers {
            for e in l.fam[f.index()]
                .entries
                .iter()
                .filter(|e| e.act == Act::Dnat)
            {
                let to = l.dnat.get(&e.rule).copied();
                out.push(DnatEntry {
                    dst: e.dst.clone(),
                    bits: e.bits.clone(),
                    to: to.filter(|(a, _)| Family::of(*a) == f),
                });
            }
        }
        out
    }
}

/// The decisions at one time ([`Engine::save_decisions`]): the controls as they were then, the
/// number of pairs with a decision, and the decisions re-checks have replaced since.
pub struct SavedDecisions {
    /// (family index, source atom, destination atom, decision then), in the order replaced.
    replaced: Vec<(u8, u32, u32, u32)>,
    with_decision: usize,
    controls: Vec<Control>,
}

/// An atom pair whose decision changed: family, source atom, destination atom, the decision
/// saved and the decision now ([`Engine::changed_pairs`]).
pub type ChangedPair = (Family, u32, u32, u32, u32);

/// The tables over [`Engine::growth`]'s baseline, as an absolute floor.
const COMPACT_FLOOR: usize = 1024;

/// What the re-checks have left behind since the last full build ([`Engine::growth`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Growth {
    /// Entries of the tables re-checks add to, now and after the last full build.
    pub tables: usize,
    pub baseline: usize,
    /// Firewall rule slots whose rule was deleted, and slots naming a rule.
    pub dead_slots: usize,
    pub live_slots: usize,
    /// The empty entries deleted firewall rules left in place.
    pub empty_entries: usize,
}

/// A layer as a fresh build would lay it out: a firewall's slots are its rule indexes again
/// (deleted rules' slots and empty entries gone, the item index following), every class and
/// cell table rebuilt, no control cached.
fn compact_layer(l: &mut Layer) {
    if !l.slots.is_empty() {
        // A rule without entries (a DNAT rule naming only ICMP, FW-4) may have no slot: no
        // entry names it, so its info is a placeholder.
        let mut index_of = vec![NONE; l.rules.len()];
        for (r, &s) in l.slots.iter().enumerate() {
            if let Some(at) = index_of.get_mut(s as usize) {
                *at = r as u32;
            }
        }
        l.rules = l
            .slots
            .iter()
            .map(|&s| {
                l.rules
                    .get(s as usize)
                    .cloned()
                    .unwrap_or_else(RuleInfo::unused)
            })
            .collect();
        l.dnat = l
            .dnat
            .iter()
            .filter(|(s, _)| index_of.get(**s as usize).is_some_and(|r| *r != NONE))
            .map(|(s, t)| (index_of[*s as usize], *t))
            .collect();
        for fi in 0..2 {
            let old = std::mem::take(&mut l.fam[fi].entries);
            // Old entry position → new one, one past the end included.
            let mut at = Vec::with_capacity(old.len() + 1);
            let mut kept = Vec::with_capacity(old.len());
            for mut e in old {
                at.push(kept.len() as u32);
                if e.rule == NONE {
                    continue;
                }
                e.rule = index_of[e.rule as usize];
                kept.push(e);
            }
            at.push(kept.len() as u32);
            for x in &mut l.items.first[fi] {
                *x = at[*x as usize];
            }
            l.fam[fi].entries = kept;
        }
        l.slots = (0..l.rules.len() as u32).collect();
    }
    for fl in &mut l.fam {
        *fl = fam_layer(std::mem::take(&mut fl.entries));
    }
    l.ctrls.clear();
    l.version = 0;
}

/// An entry that matches nothing, held by no class: what a deleted rule's entries become, so
/// that the entries after them keep their places.
fn empty_entry() -> Entry {
    Entry {
        src: IntervalSet::default(),
        dst: IntervalSet::default(),
        l4: Default::default(),
        bits: Bits::new(),
        act: Act::NoMatch,
        rule: NONE,
    }
}

/// A changed rule kept (see `Engine::kept_rules`): its old index, its control slots there and
/// the ids of its controls.
type Kept = (u32, Vec<u32>, Vec<u32>);

/// A rule's box: source, destination, L4 bits.
type Box3 = (IntervalSet, IntervalSet, Bits);

/// The boxes of the entries of a window that are not kept: a flow that meets none of them meets
/// the same first kept entry — the same rule, access and explanation — before and after. The
/// kept entries are a longest common subsequence of the old and new window (`same`), so a rule
/// moved by its priority gives its own box, not those of every rule it moved past. Windows too
/// long for the table give every box.
/// For a reordering, also the old place of each new entry.
fn changed_boxes(
    old: &[Entry],
    new: &[Entry],
    same: impl Fn(&Entry, &Entry) -> bool,
) -> (Vec<Box3>, Option<Vec<usize>>) {
    if let Some((boxes, at)) = crossed_boxes(old, new, &same) {
        return (boxes, Some(at));
    }
    let (n, m) = (old.len(), new.len());
    let mut keep_old = vec![false; n];
    let mut keep_new = vec![false; m];
    if n > 0 && m > 0 && n * m <= 1 << 22 {
        // lcs[i][j]: the longest common subsequence of old[i..] and new[j..].
        let w = m + 1;
        let mut lcs = vec![0u32; (n + 1) * w];
        for i in (0..n).rev() {
            for j in (0..m).rev() {
                lcs[i * w + j] = if same(&old[i], &new[j]) {
                    lcs[(i + 1) * w + j + 1] + 1
                } else {
                    lcs[(i + 1) * w + j].max(lcs[i * w + j + 1])
                };
            }
        }
        let (mut i, mut j) = (0, 0);
        while i < n && j < m {
            if lcs[i * w + j] == lcs[(i + 1) * w + j + 1] + 1 && same(&old[i], &new[j]) {
                (keep_old[i], keep_new[j]) = (true, true);
                (i, j) = (i + 1, j + 1);
            } else if lcs[(i + 1) * w + j] >= lcs[i * w + j + 1] {
                i += 1;
            } else {
                j += 1;
            }
        }
    }
    let pick = |es: &[Entry], keep: &[bool]| -> Vec<Box3> {
        es.iter()
            .zip(keep)
            .filter(|(_, k)| !**k)
            .map(|(e, _)| (e.src.clone(), e.dst.clone(), e.bits.clone()))
            .collect()
    };
    let mut out = pick(old, &keep_old);
    out.extend(pick(new, &keep_new));
    (out, None)
}

/// When the new window is the old one reordered (every entry kept under `same`), a flow's first
/// match changes only if two entries that swapped places both match it: the boxes are the
/// overlaps of the swapped pairs, so a collection moved ahead of another re-checks the flows
/// both match, not all of its own. `None` when the window is not a reordering, or too long.
fn crossed_boxes(
    old: &[Entry],
    new: &[Entry],
    same: &impl Fn(&Entry, &Entry) -> bool,
) -> Option<(Vec<Box3>, Vec<usize>)> {
    let n = old.len();
    if n != new.len() || n == 0 || n * n > 1 << 20 {
        return None;
    }
    let mut used = vec![false; n];
    // The old place of each new entry; equal entries are taken in order.
    let mut at = Vec::with_capacity(n);
    for e in new {
        let i = (0..n).find(|i| !used[*i] && same(&old[*i], e))?;
        used[i] = true;
        at.push(i);
    }
    let mut out = vec![];
    for j in 0..n {
        for k in j + 1..n {
            if at[j] < at[k] {
                continue;
            }
            let (a, b) = (&new[j], &new[k]);
            let bits = and(&a.bits, &b.bits);
            if zero(&bits) || !a.src.intersects(&b.src) || !a.dst.intersects(&b.dst) {
                continue;
            }
            out.push((a.src.intersect(&b.src), a.dst.intersect(&b.dst), bits));
        }
    }
    Some((out, at))
}

/// A DNAT rule's entry: its destination (the frontend), its L4 (the original packet) and its
/// translation in the same family.
struct DnatEntry {
    dst: IntervalSet,
    bits: Bits,
    to: Option<(IpAddr, Option<u16>)>,
}
