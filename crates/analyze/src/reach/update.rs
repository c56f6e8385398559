//! Re-check after one layer's rules changed: only the (source atom, destination atom) pairs
//! inside the boxes of the rules between the first and the last difference are re-planned.

use super::atoms::{classes_over, AtomLoc};
use super::layers::{
    fam_layer, fw_dnat, fw_entries, fw_hashes, fw_layer, fw_rule_counts, nsg_entries, Act, Entry,
    FwConverted, LayerKind, RuleInfo,
};
use super::plans::STEP_NAMES;
use super::Engine;
use super::NONE;
use crate::headerspace::{addr_value, Family, IntervalSet};
use palisade_model::Direction;
use palisade_policy::firewall::CompiledFirewall;
use palisade_policy::nsg::DirectionRules;
use palisade_policy::SubnetId;
use palisade_policy::{FirewallId, NsgId};
use rustc_hash::FxHashMap as HashMap;
use std::collections::BTreeMap;
use std::net::IpAddr;

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
        let Some(layer) = self.layer_id(LayerKind::Nsg { nsg, direction }) else {
            return Err(format!("no NSG layer {}", nsg.index()));
        };
        let name = self.snap.nsg(nsg).name.clone();
        let (infos, entries) = nsg_entries(rules, &name);
        self.replace_rules(layer, infos, entries, HashMap::default())
    }

    /// Re-check after a firewall's rules changed (same addresses). When the number of rules of
    /// each kind is unchanged, only the items whose fingerprint changed are converted and
    /// spliced in (a one-rule change converts one rule, not the firewall).
    pub fn update_firewall(
        &mut self,
        firewall: FirewallId,
        fw: &CompiledFirewall,
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
        let hash = fw_hashes(fw);
        let old = &self.layers[layer as usize].items;
        if fw_rule_counts(fw) != old.rules || hash.len() != old.hash.len() {
            let (infos, entries, dnat, items) = fw_layer(fw);
            let n = self.replace_rules(layer, infos, entries, dnat)?;
            self.layers[layer as usize].items = items;
            return Ok(n);
        }
        let differs = |i: &usize| hash[*i] != old.hash[*i];
        let Some(lo) = (0..hash.len()).find(differs) else {
            return Ok(0);
        };
        let hi = (0..hash.len()).rev().find(differs).map_or(lo, |i| i) + 1;
        let FwConverted {
            entries: [v4, v6],
            first: conv_first,
            infos,
        } = fw_entries(fw, lo..hi);
        let window = |f: usize, new| Window {
            lo: old.first[f][lo] as usize,
            hi: old.first[f][hi] as usize,
            new,
            whole: None,
        };
        let windows = [window(0, v4), window(1, v6)];
        let n = self.replace_layer(layer, windows, fw_dnat(fw), Ok(infos))?;
        let l = &mut self.layers[layer as usize];
        // The items after the window move by the change in its entry count.
        for (first, conv) in l.items.first.iter_mut().zip(&conv_first) {
            let (at, old_end) = (first[lo], first[hi]);
            let new_end = at + *conv.last().expect("count");
            let mut next: Vec<u32> = first[..lo].to_vec();
            next.extend(conv[..hi - lo].iter().map(|x| x + at));
            next.extend(first[hi..].iter().map(|x| x - old_end + new_end));
            *first = next;
        }
        l.items.hash = hash;
        Ok(n)
    }

    /// A layer's rules replaced whole: the window of each family is found by comparing the
    /// old and new entries from both ends.
    fn replace_rules(
        &mut self,
        layer: u32,
        infos: Vec<RuleInfo>,
        entries: [Vec<Entry>; 2],
        dnat: HashMap<u32, (IpAddr, Option<u16>)>,
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
        self.replace_layer(layer, windows, dnat, Err(infos))
    }

    /// Apply one window per family and re-check the flows the windows' rules cover. `infos`:
    /// `Ok` the changed rules' infos (every other index means the same rule as before), `Err`
    /// all of them (any index may now mean another rule). Nothing changes on an error.
    fn replace_layer(
        &mut self,
        layer: u32,
        windows: [Window; 2],
        dnat: HashMap<u32, (IpAddr, Option<u16>)>,
        infos: Result<Vec<(u32, RuleInfo)>, Vec<RuleInfo>>,
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
        {
            let l = &mut self.layers[layer as usize];
            // Whether a rule index now names another rule (another control): a memo key names
            // cells, whose pieces name rules by index, so only then do this layer's keys go
            // stale. A change of a rule's addresses, ports or access alone changes the cells
            // it meets (new cell ids, new keys) and keeps every other key valid.
            let renamed = match infos {
                // A control names its rule: only the changed rules' controls are re-derived.
                Ok(changed) => {
                    let steps = STEP_NAMES.len();
                    let mut renamed = false;
                    for (r, info) in changed {
                        if l.rules[r as usize] == info {
                            continue;
                        }
                        renamed = true;
                        if !l.ctrls.is_empty() {
                            let at = (r as usize + 1) * steps;
                            l.ctrls[at..at + steps].fill(NONE);
                        }
                        l.rules[r as usize] = info;
                    }
                    renamed
                }
                Err(all) if all == l.rules => false,
                Err(all) => {
                    l.rules = all;
                    l.ctrls.clear();
                    true
                }
            };
            // Paths that do not meet the layer keep their memo keys in any case.
            if renamed {
                l.version += 1;
            }
            l.dnat = dnat;
        }
        let any_dnat = self.layers.iter().any(|l| !l.dnat.is_empty());
        let mut count = 0;
        for (f, w) in [Family::V4, Family::V6].into_iter().zip(windows) {
            let fi = f.index();
            let Window {
                lo,
                hi,
                mut new,
                whole,
            } = w;
            // A family the change does not touch keeps its classes and its cell cache: a
            // firewall change on IPv4 rebuilds nothing on IPv6.
            if lo == hi && new.is_empty() {
                continue;
            }
            // L4 bits: the entries outside the window keep theirs.
            for e in new.iter_mut() {
                e.bits = self.l4.bits(&e.l4);
            }
            let old = &self.layers[layer as usize].fam[fi].entries;
            let boxes: Vec<(IntervalSet, IntervalSet)> = old[lo..hi]
                .iter()
                .chain(&new)
                .map(|e| (e.src.clone(), e.dst.clone()))
                .collect();
            let fl = &mut self.layers[layer as usize].fam[fi];
            match whole {
                None if new.len() == hi - lo => fl.replace(lo, new),
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
                self.index[fi].scls[layer as usize] = classes_over(&fl.src, starts);
                self.index[fi].dcls[layer as usize] = classes_over(&fl.dst, starts);
            }
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
            // Per (source place, destination place), the atoms to redo on each side; each block
            // is re-evaluated grouped like the full matrix (one pair per group pair). The union
            // of several boxes' products in one block may cover more pairs than needed: they
            // are recomputed, not guessed.
            let outside = self.index[fi].places.len() - 1;
            let place = |a: usize| g.loc[a].subnet.map_or(outside, SubnetId::index);
            type Sides = (Vec<u32>, Vec<u32>);
            let mut blocks: HashMap<(usize, usize), Sides> = HashMap::default();
            for (s, d) in &boxes {
                let mut ss: BTreeMap<usize, Vec<u32>> = BTreeMap::new();
                for a in atoms_in(s).into_iter().filter(|a| applies_src(&g.loc[*a])) {
                    ss.entry(place(a)).or_default().push(a as u32);
                }
                let mut ds: BTreeMap<usize, Vec<u32>> = BTreeMap::new();
                for a in atoms_in(d).into_iter().filter(|a| applies_dst(&g.loc[*a])) {
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
            // A DNAT'd flow meets the target's inbound NSG at the translated address (and from
            // outside, from the firewall's address): its matrix pair — any source, a DNAT
            // destination — lies outside the changed rules' boxes.
            let dnat_target = matches!(
                kind,
                LayerKind::Nsg {
                    direction: Direction::Inbound,
                    ..
                }
            ) && self.index[fi].dnat_layers.contains(&layer)
                && self.meets_dnat_flows(f, &boxes);
            if dnat_target {
                let mut dn: Vec<usize> = (0..g.len())
                    .filter(|a| g.loc[*a].frontend.is_some())
                    .collect();
                for l in &self.layers {
                    for e in l.fam[fi].entries.iter().filter(|e| e.act == Act::Dnat) {
                        dn.extend(atoms_in(&e.dst));
                    }
                }
                let mut by_place: BTreeMap<usize, Vec<u32>> = BTreeMap::new();
                for a in dn {
                    by_place.entry(place(a)).or_default().push(a as u32);
                }
                for (sp, atoms) in self.index[fi].places.iter().enumerate() {
                    for (dp, dv) in &by_place {
                        let b = blocks.entry((sp, *dp)).or_default();
                        b.0.extend(atoms);
                        b.1.extend(dv);
                    }
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
                self.compute_block(f, sp, dp, Some((&ss, &ds)));
            }
        }
        Ok(count)
    }

    /// Whether a changed rule's destination holds an address where a DNAT'd flow meets its
    /// target's inbound NSG: the translated address (a flow from outside) or the DNAT rule's
    /// own destination, the frontend (a flow from inside, judged on the original packet). A
    /// cell whose destination class holds no changed rule is kept, so elsewhere the DNAT'd
    /// flows keep their answers.
    fn meets_dnat_flows(&self, f: Family, boxes: &[(IntervalSet, IntervalSet)]) -> bool {
        let mut at: Vec<IntervalSet> = vec![];
        for l in &self.layers {
            for e in l.fam[f.index()]
                .entries
                .iter()
                .filter(|e| e.act == Act::Dnat)
            {
                at.push(e.dst.clone());
                if let Some((to, _)) = l.dnat.get(&e.rule) {
                    if Family::of(*to) == f {
                        at.push(IntervalSet::point(addr_value(*to)));
                    }
                }
            }
        }
        boxes
            .iter()
            .any(|(_, d)| at.iter().any(|a| d.intersects(a)))
    }
}
