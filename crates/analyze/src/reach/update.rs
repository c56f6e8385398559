//! Re-check after one layer's rules changed: only the (source atom, destination atom) pairs
//! inside the boxes of the rules between the first and the last difference are re-planned.

use super::atoms::{classes_over, AtomLoc};
use super::layers::{fam_layer, fw_layer, nsg_entries, Act, Entry, LayerKind, RuleInfo};
use super::Engine;
use crate::headerspace::{addr_value, Family, IntervalSet};
use palisade_model::Direction;
use palisade_policy::firewall::CompiledFirewall;
use palisade_policy::nsg::DirectionRules;
use palisade_policy::SubnetId;
use palisade_policy::{FirewallId, NsgId};
use rustc_hash::FxHashMap as HashMap;
use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

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
        self.replace_layer(layer, infos, entries, HashMap::default())
    }

    /// Re-check after a firewall's rules changed (same addresses).
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
        if entries.iter().flatten().any(|e| !self.l4.aligned(&e.l4)) {
            return Err(
                "the change names a new protocol or port boundary: build a new engine".into(),
            );
        }
        let kind = self.layers[layer as usize].kind;
        let old_rules = std::mem::replace(&mut self.layers[layer as usize].rules, infos);
        // Rule indexes may have moved: this layer's controls are re-derived.
        self.layers[layer as usize].ctrls.clear();
        // Memo keys naming this layer's cells go stale; paths that do not meet it keep theirs.
        self.layers[layer as usize].version += 1;
        self.layers[layer as usize].dnat = dnat;
        let any_dnat = self.layers.iter().any(|l| !l.dnat.is_empty());
        let mut count = 0;
        let [v4, v6] = entries;
        for (f, mut new) in [(Family::V4, v4), (Family::V6, v6)] {
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
            // A family the change does not touch (same entries, same rule indexes) keeps its
            // classes and its cell cache: a firewall change on IPv4 rebuilds nothing on IPv6.
            if lo == old.len()
                && lo == new.len()
                && old.iter().zip(&new).all(|(a, b)| a.rule == b.rule)
            {
                continue;
            }
            // L4 bits: the unchanged entries keep theirs, only the changed window is computed.
            for (i, e) in new.iter_mut().enumerate() {
                e.bits = if i < lo {
                    old[i].bits.clone()
                } else if i >= hn {
                    old[i - hn + ho].bits.clone()
                } else {
                    self.l4.bits(&e.l4)
                };
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
            type Sides = (BTreeSet<u32>, BTreeSet<u32>);
            let mut blocks: BTreeMap<(usize, usize), Sides> = BTreeMap::new();
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
            ) && self.index[fi].dnat_layers.contains(&layer);
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
            for ((sp, dp), (ss, ds)) in blocks {
                let (ss, ds): (Vec<u32>, Vec<u32>) =
                    (ss.into_iter().collect(), ds.into_iter().collect());
                count += ss.len() * ds.len();
                self.compute_block(f, sp, dp, Some((&ss, &ds)));
            }
        }
        Ok(count)
    }
}
