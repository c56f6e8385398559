//! Applying a [`TablePlan`] idempotently, incrementally where possible; reading the live table
//! back; and the difference between the kernel and the model (`host diff`).
//!
//! What the kernel holds after an apply is read back and stored in the state (`state.rs`):
//! nft normalises expressions when it lists them, so "has the kernel drifted" is answered by
//! comparing the live listing with the listing taken right after our own apply, and "has the
//! model changed" by comparing the new plan with the plan that was applied. Set elements are
//! compared with the model directly, as numeric intervals.

use crate::nfnl::{self, Edit, KernelTable, Nfnl, NfnlError};
use crate::nft::{Nft, NftError};
use crate::render::{ChainDef, Elem, RuleDef, SetDef, SetKind, TablePlan, FAMILY};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::ops::Range;
use std::time::Instant;

/// What Palisade applied for one table: the plan and the kernel's listing of it afterwards.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TableState {
    pub netns: Option<String>,
    pub plan: TablePlan,
    /// Chain → its rules as the kernel listed them after the apply (`expr` and `comment`).
    pub applied: BTreeMap<String, Vec<Value>>,
    /// Chain → the kernel's handle of each of those rules, in order: what lets a later change
    /// delete and insert single rules instead of rewriting the chain. Absent in older states.
    #[serde(default)]
    pub handles: BTreeMap<String, Vec<u64>>,
    /// The namespace's ruleset generation right after this apply, when nothing else changed
    /// the ruleset around it: while the kernel still reports it, the table is exactly what is
    /// recorded here and need not be listed (`nfnl.rs`).
    #[serde(default)]
    pub generation: Option<u32>,
    /// The table in the kernel's bytes right after the apply (`nfnl::KernelTable`): the drift
    /// check compares a netlink dump with it instead of `nft` listing every set element. When
    /// it is present, `applied` holds `null` for each rule (the rule is known by its handle and
    /// digest). Absent in older states and when netlink was not usable.
    #[serde(default)]
    pub kernel: Option<KernelTable>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ApplyMode {
    /// The table was created or replaced whole (one transaction).
    Full,
    /// Only changed set elements, counters and chains were touched (one transaction).
    Incremental,
    /// Kernel already equal to the model: no transaction.
    Unchanged,
}

#[derive(Debug, Clone, Serialize)]
pub struct ApplyReport {
    pub table: String,
    pub mode: ApplyMode,
    /// Why a full replace was needed, when it was.
    pub reason: Option<String>,
    pub commands: usize,
    /// Chains whose rules changed (only the changed rules are sent when their handles are
    /// known; the chain is flushed and written again otherwise).
    pub chains_rewritten: Vec<String>,
    /// nft rules deleted and added (in an incremental apply: the changed ones only).
    pub rules_removed: usize,
    pub rules_added: usize,
    pub sets_changed: Vec<String>,
    pub elements_added: usize,
    pub elements_removed: usize,
    /// How the transaction reached the kernel: `nft` (text commands) or `netlink` (rule edits
    /// encoded by Palisade, no `nft` cache).
    pub via: Via,
    /// Why a full replace went through `nft` although netlink was available: a form the
    /// encoder does not write, or the kernel's refusal of the batch (e.g. a socket buffer the
    /// process may not raise). Said so the slow path is never taken silently.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub netlink_fallback: Option<String>,
    /// Wall time of the whole apply: drift check, transaction, reading handles back.
    pub seconds: f64,
    /// CPU time of the same (this process and the `nft` it ran): on a loaded machine, what the
    /// apply itself cost.
    pub cpu_seconds: f64,
    /// The ruleset generation this apply started from, when the apply was the only change
    /// since: other tables recorded at it are still exact (`ops::apply` moves them on).
    #[serde(skip)]
    pub generation_before: Option<u32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Via {
    Nft,
    Netlink,
}

/// Everything `host diff` reports for one table.
#[derive(Debug, Clone, Default, Serialize)]
pub struct TableDiff {
    pub table: String,
    pub present: bool,
    pub missing_sets: Vec<String>,
    pub extra_sets: Vec<String>,
    /// Set → elements the model has and the kernel lacks / the kernel has and the model lacks.
    pub set_elements: Vec<SetDrift>,
    pub missing_chains: Vec<String>,
    pub extra_chains: Vec<String>,
    /// Chains whose live rules differ from what Palisade applied (changed by hand).
    pub rules_drifted: Vec<String>,
    /// Chains whose rules in the model differ from what was applied (model changed since).
    pub rules_model_changed: Vec<String>,
    pub missing_counters: Vec<String>,
    pub extra_counters: Vec<String>,
    /// Live counter values (per NSG rule).
    pub counters: Vec<CounterValue>,
    pub notes: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct SetDrift {
    pub set: String,
    pub missing: Vec<String>,
    pub extra: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct CounterValue {
    pub name: String,
    pub packets: u64,
    pub bytes: u64,
}

impl TableDiff {
    /// No difference between kernel and model (counter values are not differences).
    pub fn is_clean(&self) -> bool {
        self.present
            && self.missing_sets.is_empty()
            && self.extra_sets.is_empty()
            && self.set_elements.is_empty()
            && self.missing_chains.is_empty()
            && self.extra_chains.is_empty()
            && self.rules_drifted.is_empty()
            && self.rules_model_changed.is_empty()
            && self.missing_counters.is_empty()
            && self.extra_counters.is_empty()
    }
}

/// A table as the kernel lists it.
#[derive(Debug, Default)]
pub struct LiveTable {
    pub sets: nfnl::SetIntervals,
    pub chains: BTreeMap<String, Value>,
    pub rules: BTreeMap<String, Vec<Value>>,
    /// Chain → the handles of its rules, in order.
    pub handles: BTreeMap<String, Vec<u64>>,
    pub counters: BTreeMap<String, (u64, u64)>,
}

fn ip_num(s: &str) -> Option<u128> {
    match s.parse::<IpAddr>().ok()? {
        IpAddr::V4(a) => Some(u32::from(a) as u128),
        IpAddr::V6(a) => Some(u128::from(a)),
    }
}

fn elem_interval(v: &Value) -> Option<(u128, u128)> {
    match v {
        Value::Number(n) => n.as_u64().map(|n| (n as u128, n as u128)),
        Value::String(s) => ip_num(s).map(|n| (n, n)),
        Value::Object(o) => {
            if let Some(p) = o.get("prefix") {
                let addr = p.get("addr")?.as_str()?;
                let len = p.get("len")?.as_u64()? as u8;
                let net: ipnet::IpNet = format!("{addr}/{len}").parse().ok()?;
                return Some(Elem::Net(net).interval());
            }
            if let Some(r) = o.get("range").and_then(Value::as_array) {
                let a = elem_interval(r.first()?)?.0;
                let b = elem_interval(r.get(1)?)?.1;
                return Some((a, b));
            }
            if let Some(e) = o.get("elem") {
                return elem_interval(e.get("val")?);
            }
            None
        }
        _ => None,
    }
}

/// Sorted intervals with adjacent ones merged, so that equal sets compare equal however they
/// are split.
fn normalise(mut v: Vec<(u128, u128)>) -> Vec<(u128, u128)> {
    v.sort();
    let mut out: Vec<(u128, u128)> = vec![];
    for (a, b) in v {
        match out.last_mut() {
            Some(l) if a <= l.1.saturating_add(1) => l.1 = l.1.max(b),
            _ => out.push((a, b)),
        }
    }
    out
}

fn model_intervals(s: &SetDef) -> Vec<(u128, u128)> {
    normalise(s.elements.iter().map(Elem::interval).collect())
}

fn interval_text(kind: &str, (a, b): (u128, u128)) -> String {
    let one = |n: u128| match kind {
        "ipv4_addr" => std::net::Ipv4Addr::from(n as u32).to_string(),
        "ipv6_addr" => std::net::Ipv6Addr::from(n).to_string(),
        _ => n.to_string(),
    };
    if a == b {
        one(a)
    } else {
        format!("{}-{}", one(a), one(b))
    }
}

/// Subtract intervals: the parts of `a` not covered by `b`.
fn subtract(a: &[(u128, u128)], b: &[(u128, u128)]) -> Vec<(u128, u128)> {
    let mut out = vec![];
    for &(mut lo, hi) in a {
        let mut done = false;
        for &(blo, bhi) in b {
            if bhi < lo || blo > hi {
                continue;
            }
            if blo > lo {
                out.push((lo, blo - 1));
            }
            if bhi >= hi {
                done = true;
                break;
            }
            lo = bhi + 1;
        }
        if !done {
            out.push((lo, hi));
        }
    }
    out
}

fn normalise_rule(r: &Value) -> Value {
    json!({"expr": r.get("expr").cloned().unwrap_or(Value::Null),
           "comment": r.get("comment").cloned().unwrap_or(Value::Null)})
}

impl LiveTable {
    pub fn read(nft: &Nft, table: &str) -> Result<Option<LiveTable>, NftError> {
        let Some(objects) = nft.list_table(table)? else {
            return Ok(None);
        };
        let mut live = LiveTable::default();
        for o in objects {
            if let Some(s) = o.get("set") {
                let name = s["name"].as_str().unwrap_or_default().to_string();
                let kind = s["type"].as_str().unwrap_or_default().to_string();
                let elems = s
                    .get("elem")
                    .and_then(Value::as_array)
                    .map(|a| a.iter().filter_map(elem_interval).collect())
                    .unwrap_or_default();
                live.sets.insert(name, (kind, normalise(elems)));
            } else if let Some(c) = o.get("chain") {
                let name = c["name"].as_str().unwrap_or_default().to_string();
                let mut c = c.clone();
                if let Some(m) = c.as_object_mut() {
                    m.remove("handle");
                }
                live.rules.entry(name.clone()).or_default();
                live.chains.insert(name, c);
            } else if let Some(r) = o.get("rule") {
                let chain = r["chain"].as_str().unwrap_or_default().to_string();
                live.rules
                    .entry(chain.clone())
                    .or_default()
                    .push(normalise_rule(r));
                live.handles
                    .entry(chain)
                    .or_default()
                    .push(r["handle"].as_u64().unwrap_or(0));
            } else if let Some(c) = o.get("counter") {
                let name = c["name"].as_str().unwrap_or_default().to_string();
                live.counters.insert(
                    name,
                    (
                        c["packets"].as_u64().unwrap_or(0),
                        c["bytes"].as_u64().unwrap_or(0),
                    ),
                );
            }
        }
        Ok(Some(live))
    }
}

/// Compare the kernel with the model (and with what was applied, when `state` is given),
/// reading the table with `nft` ([`diff_by_netlink`] reads it without).
pub fn diff(
    nft: &Nft,
    plan: &TablePlan,
    state: Option<&TableState>,
) -> Result<TableDiff, NftError> {
    let Some(live) = LiveTable::read(nft, &plan.table)? else {
        return Ok(absent(plan));
    };
    let seen = Seen {
        sets: &live.sets,
        chains: live.chains.keys().map(String::as_str).collect(),
        counters: &live.counters,
    };
    Ok(compare(plan, state, &seen, |c| {
        let rules = live.rules.get(&c.name).map(Vec::as_slice).unwrap_or(&[]);
        match state {
            Some(st) => {
                let recorded = st.applied.get(&c.name).map(Vec::as_slice).unwrap_or(&[]);
                let handles_moved = recorded.iter().any(Value::is_null)
                    && st
                        .handles
                        .get(&c.name)
                        .is_some_and(|h| live.handles.get(&c.name) != Some(h));
                !same_rules(recorded, rules) || handles_moved
            }
            None => comments_differ(rules.iter().map(|r| r["comment"].as_str().unwrap_or("")), c),
        }
    }))
}

/// [`diff`] from netlink dumps of the table, so `host diff` needs no `nft` binary. Rules are
/// compared with the state's record of the kernel ([`KernelTable`]: handle and digest of each
/// rule) or, for a state without one, by count and handle. `Ok(None)` for a state that
/// recorded rules only as `nft` listed them: comparing those needs `nft`.
pub fn diff_by_netlink(
    link: &mut Nfnl,
    plan: &TablePlan,
    state: Option<&TableState>,
) -> Result<Option<TableDiff>, NfnlError> {
    let listed_by_nft = state.is_some_and(|st| {
        st.kernel.is_none() && st.applied.values().flatten().any(|r| !r.is_null())
    });
    if listed_by_nft {
        return Ok(None);
    }
    let Some(mut live) = link.listing(&plan.table)? else {
        return Ok(Some(absent(plan)));
    };
    for (_, elems) in live.sets.values_mut() {
        *elems = normalise(std::mem::take(elems));
    }
    let seen = Seen {
        sets: &live.sets,
        chains: live.kernel.chains.keys().map(String::as_str).collect(),
        counters: &live.counters,
    };
    let no_rules: &[nfnl::RuleId] = &[];
    Ok(Some(compare(plan, state, &seen, |c| {
        let rules = live
            .kernel
            .rules
            .get(&c.name)
            .map_or(no_rules, Vec::as_slice);
        match state {
            Some(st) => match &st.kernel {
                Some(k) => k.rules.get(&c.name).map_or(no_rules, Vec::as_slice) != rules,
                None => {
                    let recorded = st.applied.get(&c.name).map(Vec::as_slice).unwrap_or(&[]);
                    let handles_moved = recorded.iter().any(Value::is_null)
                        && st.handles.get(&c.name).is_some_and(|h| {
                            !(h.len() == rules.len() && h.iter().zip(rules).all(|(a, b)| *a == b.0))
                        });
                    recorded.len() != rules.len() || handles_moved
                }
            },
            None => comments_differ(
                live.comments
                    .get(&c.name)
                    .into_iter()
                    .flatten()
                    .map(String::as_str),
                c,
            ),
        }
    })))
}

/// The report for a table the kernel does not have.
fn absent(plan: &TablePlan) -> TableDiff {
    TableDiff {
        table: plan.table.clone(),
        ..Default::default()
    }
}

/// What [`compare`] needs of a live table besides its rules: sets (key type, normalised
/// intervals), chain names and counters.
struct Seen<'a> {
    sets: &'a nfnl::SetIntervals,
    chains: BTreeSet<&'a str>,
    counters: &'a BTreeMap<String, (u64, u64)>,
}

/// Without a state, rules are known only by their comments: a chain drifted when the live
/// rules are not, one by one, the model's (a live comment may be the model's cut short).
fn comments_differ<'a>(live: impl Iterator<Item = &'a str>, c: &ChainDef) -> bool {
    let live: Vec<&str> = live.collect();
    live.len() != c.rules.len()
        || live
            .iter()
            .zip(c.rules.iter())
            .any(|(l, w)| !w.comment.starts_with(l))
}

/// The drift report of a present table; `rules_drifted` says whether a chain present in the
/// kernel has rules other than those applied.
fn compare(
    plan: &TablePlan,
    state: Option<&TableState>,
    live: &Seen,
    rules_drifted: impl Fn(&ChainDef) -> bool,
) -> TableDiff {
    let mut d = TableDiff {
        table: plan.table.clone(),
        present: true,
        ..Default::default()
    };
    for s in &plan.sets {
        match live.sets.get(&s.name) {
            None => d.missing_sets.push(s.name.clone()),
            Some((kind, elems)) => {
                let want = model_intervals(s);
                if &want != elems {
                    let kind = if kind.is_empty() {
                        s.kind.nft_type()
                    } else {
                        kind
                    };
                    d.set_elements.push(SetDrift {
                        set: s.name.clone(),
                        missing: subtract(&want, elems)
                            .into_iter()
                            .map(|i| interval_text(kind, i))
                            .collect(),
                        extra: subtract(elems, &want)
                            .into_iter()
                            .map(|i| interval_text(kind, i))
                            .collect(),
                    });
                }
            }
        }
    }
    let model_sets: BTreeSet<&str> = plan.sets.iter().map(|s| s.name.as_str()).collect();
    d.extra_sets = live
        .sets
        .keys()
        .filter(|k| !model_sets.contains(k.as_str()))
        .cloned()
        .collect();
    let model_chains: BTreeSet<&str> = plan.chains.iter().map(|c| c.name.as_str()).collect();
    for c in &plan.chains {
        if !live.chains.contains(c.name.as_str()) {
            d.missing_chains.push(c.name.clone());
        }
    }
    d.extra_chains = live
        .chains
        .iter()
        .filter(|k| !model_chains.contains(*k))
        .map(|k| k.to_string())
        .collect();
    if state.is_none() {
        d.notes
            .push("no state for this table: rules compared by count and comment only".into());
    }
    for c in &plan.chains {
        if !live.chains.contains(c.name.as_str()) {
            continue;
        }
        if rules_drifted(c) {
            d.rules_drifted.push(c.name.clone());
        }
        if state.is_some_and(|st| st.plan.chain(&c.name) != Some(c)) {
            d.rules_model_changed.push(c.name.clone());
        }
    }
    let model_counters: BTreeSet<&str> = plan.counters.iter().map(String::as_str).collect();
    for c in &plan.counters {
        match live.counters.get(c) {
            None => d.missing_counters.push(c.clone()),
            Some((p, b)) => d.counters.push(CounterValue {
                name: c.clone(),
                packets: *p,
                bytes: *b,
            }),
        }
    }
    d.extra_counters = live
        .counters
        .keys()
        .filter(|k| !model_counters.contains(k.as_str()))
        .cloned()
        .collect();
    d
}

/// Counter values of a live table (name → packets, bytes).
pub fn counters(nft: &Nft, table: &str) -> Result<BTreeMap<String, (u64, u64)>, NftError> {
    Ok(LiveTable::read(nft, table)?
        .map(|l| l.counters)
        .unwrap_or_default())
}

/// Is the live table exactly what `state` says Palisade applied?
fn live_matches_state(live: &LiveTable, st: &TableState) -> bool {
    let plan = &st.plan;
    let chains: BTreeSet<&String> = live.chains.keys().collect();
    let want: BTreeSet<&String> = plan.chains.iter().map(|c| &c.name).collect();
    if chains != want {
        return false;
    }
    for c in &plan.chains {
        let live_rules = live.rules.get(&c.name).map(Vec::as_slice).unwrap_or(&[]);
        let recorded = st.applied.get(&c.name).map(Vec::as_slice).unwrap_or(&[]);
        if !same_rules(recorded, live_rules) {
            return false;
        }
        // Same rules under other handles (deleted and added again by hand): the recorded
        // handles would name nothing.
        if let Some(h) = st.handles.get(&c.name) {
            if live.handles.get(&c.name).unwrap_or(&vec![]) != h {
                return false;
            }
        }
    }
    let sets: BTreeSet<&String> = live.sets.keys().collect();
    let want: BTreeSet<&String> = plan.sets.iter().map(|s| &s.name).collect();
    if sets != want {
        return false;
    }
    for s in &plan.sets {
        if live.sets.get(&s.name).map(|x| &x.1) != Some(&model_intervals(s)) {
            return false;
        }
    }
    let counters: BTreeSet<&String> = live.counters.keys().collect();
    let want: BTreeSet<&String> = plan.counters.iter().collect();
    counters == want
}

/// The rules of `old` to delete and of `new` to insert in their place: what lies between the
/// unchanged head and the unchanged tail.
fn changed_span(old: &[RuleDef], new: &[RuleDef]) -> (Range<usize>, Range<usize>) {
    let head = old.iter().zip(new).take_while(|(x, y)| x == y).count();
    let tail = old[head..]
        .iter()
        .rev()
        .zip(new[head..].iter().rev())
        .take_while(|(x, y)| x == y)
        .count();
    (head..old.len() - tail, head..new.len() - tail)
}

/// Rules as listed match rules as recorded; a recorded `null` is a rule sent over netlink whose
/// listing was never read (its handle, compared separately, identifies it).
fn same_rules(recorded: &[Value], live: &[Value]) -> bool {
    recorded.len() == live.len()
        && recorded
            .iter()
            .zip(live)
            .all(|(r, l)| r.is_null() || r == l)
}

/// The transaction (nft text commands) that turns `old` (in the kernel, its rules under
/// `handles`) into `new`, or why it cannot be done piecewise.
///
/// A chain whose rules changed keeps its unchanged head and tail: only the rules between them
/// are deleted (by handle) and the new ones inserted before the tail's first rule, so a
/// one-rule change is two commands whatever the chain's length. Without handles for a chain
/// (a state written by an older version) the chain is flushed and written again.
pub fn incremental_commands(
    old: &TablePlan,
    handles: &BTreeMap<String, Vec<u64>>,
    new: &TablePlan,
) -> Result<(Vec<String>, ApplyReport), String> {
    if old.table != new.table {
        return Err("table renamed".into());
    }
    let old_chains: Vec<(&str, &Option<crate::render::BaseHook>)> = old
        .chains
        .iter()
        .map(|c| (c.name.as_str(), &c.base))
        .collect();
    let new_chains: Vec<(&str, &Option<crate::render::BaseHook>)> = new
        .chains
        .iter()
        .map(|c| (c.name.as_str(), &c.base))
        .collect();
    if old_chains != new_chains {
        return Err("chains or hooks changed".into());
    }
    let mut report = ApplyReport {
        table: new.table.clone(),
        mode: ApplyMode::Incremental,
        reason: None,
        commands: 0,
        chains_rewritten: vec![],
        rules_removed: 0,
        rules_added: 0,
        sets_changed: vec![],
        elements_added: 0,
        elements_removed: 0,
        via: Via::Nft,
        netlink_fallback: None,
        seconds: 0.0,
        cpu_seconds: 0.0,
        generation_before: None,
    };
    let mut head = vec![];
    let mut tail = vec![];
    for s in &new.sets {
        match old.set(&s.name) {
            None => {
                head.push(new.set_text(s));
                report.sets_changed.push(s.name.clone());
                report.elements_added += s.elements.len();
            }
            Some(o) if o.kind != s.kind => return Err(format!("set {} changed type", s.name)),
            Some(o) if o.elements != s.elements => {
                let before: BTreeSet<&Elem> = o.elements.iter().collect();
                let after: BTreeSet<&Elem> = s.elements.iter().collect();
                let removed: Vec<Elem> = before.difference(&after).map(|e| **e).collect();
                let added: Vec<Elem> = after.difference(&before).map(|e| **e).collect();
                if !removed.is_empty() {
                    head.push(new.elements_text("delete", &s.name, &removed));
                }
                if !added.is_empty() {
                    head.push(new.elements_text("add", &s.name, &added));
                }
                report.sets_changed.push(s.name.clone());
                report.elements_added += added.len();
                report.elements_removed += removed.len();
            }
            Some(_) => {}
        }
    }
    for c in &new.counters {
        if !old.counters.contains(c) {
            head.push(new.counter_text("add", c));
        }
    }
    let mut body = vec![];
    for c in &new.chains {
        let Some(o) = old.chain(&c.name) else {
            continue;
        };
        if o.rules == c.rules {
            continue;
        }
        report.chains_rewritten.push(c.name.clone());
        match handles.get(&c.name).filter(|h| h.len() == o.rules.len()) {
            Some(h) => {
                let (gone, came) = changed_span(&o.rules, &c.rules);
                let before = h.get(gone.end).copied();
                let b = &c.rules;
                for handle in &h[gone.clone()] {
                    body.push(new.delete_rule_text(&c.name, *handle));
                }
                for r in &b[came.clone()] {
                    body.push(new.rule_text(&c.name, r, before));
                }
                report.rules_removed += gone.len();
                report.rules_added += came.len();
            }
            None => {
                body.push(new.flush_chain_text(&c.name));
                for r in c.rules.iter() {
                    body.push(new.rule_text(&c.name, r, None));
                }
                report.rules_removed += o.rules.len();
                report.rules_added += c.rules.len();
            }
        }
    }
    for s in &old.sets {
        if new.set(&s.name).is_none() {
            tail.push(new.delete_set_text(&s.name));
            report.sets_changed.push(s.name.clone());
            report.elements_removed += s.elements.len();
        }
    }
    for c in &old.counters {
        if !new.counters.contains(c) {
            tail.push(new.counter_text("delete", c));
        }
    }
    let mut cmds = head;
    cmds.extend(body);
    cmds.extend(tail);
    report.commands = cmds.len();
    if cmds.is_empty() {
        report.mode = ApplyMode::Unchanged;
    }
    Ok((cmds, report))
}

/// Apply `plan`: nothing if the kernel already matches, an incremental transaction if the
/// kernel holds exactly what was applied before, else the whole table replaced in one
/// transaction. Returns the new state to record.
///
/// When the ruleset's generation is still the one recorded after the last apply, the kernel is
/// known to hold that state without listing it: an unchanged plan costs one netlink round trip,
/// and a change of rules only is sent as netlink rule edits ([`nfnl`]). Anything else goes
/// through `nft`, with the drift check against the listed table.
pub fn apply(
    nft: &Nft,
    plan: &TablePlan,
    prev: Option<&TableState>,
) -> Result<(TableState, ApplyReport), NftError> {
    apply_owned(nft, plan.clone(), prev.cloned())
}

/// [`apply`], taking the plan and the previous state: a rule change then moves them into the
/// new state instead of copying a table of 155k set elements and 10k listed rules.
pub fn apply_owned(
    nft: &Nft,
    plan: TablePlan,
    prev: Option<TableState>,
) -> Result<(TableState, ApplyReport), NftError> {
    let started = (Instant::now(), cpu_time());
    let mut link = Nfnl::open(nft.netns.as_deref()).ok();
    let before = link.as_mut().and_then(|l| l.generation().ok());
    let fast = match (&prev, before, link.as_mut()) {
        (Some(st), Some(g), Some(l)) if st.generation == Some(g) => rules_by_netlink(l, st, &plan)?,
        _ => None,
    };
    let (state, mut report) = match (fast, prev) {
        (Some(sent), Some(st)) => sent.record(st, plan),
        (_, prev) => {
            let trusted = prev
                .as_ref()
                .is_some_and(|st| st.generation.is_some() && st.generation == before);
            let (mut state, mut report) =
                apply_by_nft(nft, &plan, prev.as_ref(), trusted, before, link.as_mut())?;
            let sent = u32::from(report.mode != ApplyMode::Unchanged);
            let after = link.as_mut().and_then(|l| l.generation().ok());
            // Only our own transaction (or none) happened between the two readings: the
            // listing taken in between is what the kernel holds at `after`.
            if let (Some(b), Some(a)) = (before, after) {
                if next_generation(b, sent) == a {
                    state.generation = Some(a);
                    report.generation_before = Some(b);
                }
            }
            (state, report)
        }
    };
    report.seconds = started.0.elapsed().as_secs_f64();
    report.cpu_seconds = cpu_time() - started.1;
    Ok((state, report))
}

/// User + system CPU seconds of this process and its waited-for children (`nft`): what
/// [`ApplyReport::cpu_seconds`] counts, public so benchmarks measure the same way.
pub fn cpu_time() -> f64 {
    let of = |who| {
        // SAFETY: getrusage fills the zeroed struct it is given.
        let mut u: libc::rusage = unsafe { std::mem::zeroed() };
        if unsafe { libc::getrusage(who, &mut u) } != 0 {
            return 0.0;
        }
        let t = |v: libc::timeval| v.tv_sec as f64 + v.tv_usec as f64 / 1e6;
        t(u.ru_utime) + t(u.ru_stime)
    };
    of(libc::RUSAGE_SELF) + of(libc::RUSAGE_CHILDREN)
}

/// The generation after `n` committed transactions (the kernel skips 0 when it wraps).
fn next_generation(g: u32, n: u32) -> u32 {
    (0..n).fold(g, |g, _| match g.wrapping_add(1) {
        0 => 1,
        x => x,
    })
}

/// The change from the recorded state to `plan` as netlink rule edits, when it is a change of
/// rules only (sets, counters and chains as recorded, handles known) in forms [`nfnl`]
/// encodes; `Ok(None)` sends nothing and leaves the change to `nft`. The caller has checked that
/// the kernel is at the recorded generation; the batch is refused if it moved on since.
fn rules_by_netlink(
    link: &mut Nfnl,
    st: &TableState,
    plan: &TablePlan,
) -> Result<Option<SentEdits>, NftError> {
    let old = &st.plan;
    let same_shape = old.table == plan.table
        && old.sets == plan.sets
        && old.counters == plan.counters
        && old.chains.len() == plan.chains.len()
        && old
            .chains
            .iter()
            .zip(&plan.chains)
            .all(|(o, c)| o.name == c.name && o.base == c.base);
    if !same_shape {
        return Ok(None);
    }
    let mut edits = vec![];
    // Per changed chain: the span of recorded rules replaced, and where its edits start.
    let mut spans = vec![];
    for (o, c) in old.chains.iter().zip(&plan.chains) {
        if o.rules == c.rules {
            continue;
        }
        let Some(h) = st.handles.get(&c.name).filter(|h| h.len() == o.rules.len()) else {
            return Ok(None);
        };
        let (gone, came) = changed_span(&o.rules, &c.rules);
        if !c.rules[came.clone()].iter().all(nfnl::encodable) {
            return Ok(None);
        }
        spans.push((c.name.as_str(), gone.clone(), came.clone(), edits.len()));
        for &handle in &h[gone.clone()] {
            edits.push(Edit::Delete {
                chain: &c.name,
                handle,
            });
        }
        for rule in &c.rules[came] {
            edits.push(Edit::Insert {
                chain: &c.name,
                rule,
                before: h.get(gone.end).copied(),
            });
        }
    }
    let genid = st.generation.unwrap_or_default();
    let mut report = ApplyReport {
        table: plan.table.clone(),
        mode: ApplyMode::Unchanged,
        reason: None,
        commands: edits.len(),
        chains_rewritten: spans.iter().map(|s| s.0.to_string()).collect(),
        rules_removed: spans.iter().map(|s| s.1.len()).sum(),
        rules_added: spans.iter().map(|s| s.2.len()).sum(),
        sets_changed: vec![],
        elements_added: 0,
        elements_removed: 0,
        via: Via::Netlink,
        netlink_fallback: None,
        seconds: 0.0,
        cpu_seconds: 0.0,
        generation_before: Some(genid),
    };
    if edits.is_empty() {
        return Ok(Some(SentEdits {
            spans: vec![],
            handles: vec![],
            report,
        }));
    }
    let handles = match link.change(&plan.table, &edits, genid) {
        Ok(Some(h)) => h,
        Ok(None) | Err(NfnlError::Stale { .. }) => return Ok(None),
        Err(NfnlError::Refused { message, index }) => {
            let culprit = index.map(|i| match &edits[i] {
                Edit::Delete { chain, handle } => plan.delete_rule_text(chain, *handle),
                Edit::Insert {
                    chain,
                    rule,
                    before,
                } => plan.rule_text(chain, rule, *before),
            });
            return Err(NftError::Refused {
                message,
                culprit,
                culprit_index: index,
            });
        }
        Err(e) => return Err(NftError::Exec(e.to_string())),
    };
    report.mode = ApplyMode::Incremental;
    Ok(Some(SentEdits {
        spans: spans
            .into_iter()
            .map(|(c, gone, came, first)| (c.to_string(), gone, came, first))
            .collect(),
        handles,
        report,
    }))
}

/// Rule edits the kernel committed: per changed chain its name, the recorded rules replaced,
/// the plan's rules that replaced them and the index of its first edit; the handle echoed for
/// each edit.
struct SentEdits {
    spans: Vec<(String, Range<usize>, Range<usize>, usize)>,
    handles: Vec<Option<(u64, u64)>>,
    report: ApplyReport,
}

impl SentEdits {
    /// The state after the edits: the new plan, the new rules' handles in place of the old.
    fn record(self, mut state: TableState, plan: TablePlan) -> (TableState, ApplyReport) {
        for (chain, gone, came, first) in self.spans {
            let new: Vec<u64> = self.handles[first + gone.len()..first + gone.len() + came.len()]
                .iter()
                .map(|h| h.unwrap_or_default().0)
                .collect();
            state
                .handles
                .entry(chain.clone())
                .or_default()
                .splice(gone.clone(), new);
            // The echoed digests are what a dump will show: the recorded table stays exact.
            let fits = state.kernel.as_mut().is_some_and(|k| {
                let rules = k.rules.entry(chain.clone()).or_default();
                let fits = rules.len() >= gone.end;
                if fits {
                    let echoed = self.handles[first + gone.len()..first + gone.len() + came.len()]
                        .iter()
                        .map(|h| h.unwrap_or_default());
                    rules.splice(gone.clone(), echoed);
                }
                fits
            });
            if !fits {
                state.kernel = None;
            }
            let listed = state.applied.entry(chain).or_default();
            if listed.len() >= gone.end {
                listed.splice(gone, came.map(|_| Value::Null));
            }
        }
        if self.report.mode == ApplyMode::Incremental {
            state.generation = self.report.generation_before.map(|g| next_generation(g, 1));
        }
        drop_later(std::mem::replace(&mut state.plan, plan));
        (state, self.report)
    }
}

/// Free `value` on a helper thread: the replaced plan of a 10k-rule table is some 100k
/// allocations, whose freeing took half of a one-rule change's time on the caller's path.
/// When no thread can be started the closure, and `value` with it, is dropped right here.
fn drop_later<T: Send + 'static>(value: T) {
    let _ = std::thread::Builder::new()
        .name("drop-plan".into())
        .spawn(move || drop(value));
}

/// [`apply`] through `nft`: the drift check (a netlink dump compared with the recorded
/// [`KernelTable`], or the table listed by `nft` for a state without one), the transaction as
/// text commands, then the handles read back (a netlink dump of the table, `nft` without one).
/// A full replace goes as one netlink batch encoded here when it can ([`Nfnl::replace`]: `nft`
/// would parse every set element), valid only at generation `genid`; through `nft` when that
/// batch cannot be built or is refused (nothing changed then), so `nft` reports any error.
fn apply_by_nft(
    nft: &Nft,
    plan: &TablePlan,
    prev: Option<&TableState>,
    trusted: bool,
    genid: Option<u32>,
    mut link: Option<&mut Nfnl>,
) -> Result<(TableState, ApplyReport), NftError> {
    let nl = |e: NfnlError| NftError::Exec(e.to_string());
    // Whether the kernel's table is what `prev` recorded; `None`: there is no such table. A
    // trusted state (the kernel still at its generation) is what the kernel holds.
    let live: Option<bool> = match (prev, link.as_deref_mut()) {
        (Some(_), _) if trusted => Some(true),
        (Some(st), Some(l)) if st.kernel.is_some() => l
            .table(&plan.table)
            .map_err(nl)?
            .map(|k| st.kernel.as_ref().is_some_and(|r| r.same(&k))),
        (Some(st), _) => LiveTable::read(nft, &plan.table)?.map(|l| live_matches_state(&l, st)),
        (None, Some(l)) => l.has_table(&plan.table).map_err(nl)?.then_some(false),
        (None, None) => nft.list_table(&plan.table)?.map(|_| false),
    };
    let mut full_reason = None;
    let incremental = match (prev, live) {
        (None, None) => {
            full_reason = Some("new table".to_string());
            None
        }
        (None, Some(_)) => {
            full_reason = Some("table exists but Palisade has no state for it".into());
            None
        }
        (Some(_), None) => {
            full_reason = Some("table missing from the kernel".into());
            None
        }
        (Some(_), Some(false)) => {
            full_reason = Some("the kernel's table differs from what was applied (drift)".into());
            None
        }
        (Some(st), Some(true)) => match incremental_commands(&st.plan, &st.handles, plan) {
            Ok(x) => Some(x),
            Err(why) => {
                full_reason = Some(why);
                None
            }
        },
    };
    let report = match incremental {
        Some((cmds, report)) => {
            if !cmds.is_empty() {
                nft.apply(&cmds)?;
            }
            report
        }
        None => {
            let mut netlink_fallback = None;
            let by_netlink = match link.as_deref_mut().map(|l| l.replace(plan, genid)) {
                None => false,
                Some(Ok(Some(_))) => true,
                Some(Ok(None)) => {
                    netlink_fallback =
                        Some("the table holds a form the netlink encoder does not write".into());
                    false
                }
                Some(Err(e)) => {
                    netlink_fallback = Some(format!("the netlink batch was refused: {e}"));
                    false
                }
            };
            let commands = if by_netlink {
                3 + plan.sets.len()
                    + plan.counters.len()
                    + plan.chains.len()
                    + plan.chains.iter().map(|c| c.rules.len()).sum::<usize>()
            } else {
                let cmds = plan.replace_text();
                nft.apply(&cmds)?;
                cmds.len()
            };
            ApplyReport {
                table: plan.table.clone(),
                mode: ApplyMode::Full,
                reason: full_reason,
                commands,
                chains_rewritten: plan.chains.iter().map(|c| c.name.clone()).collect(),
                rules_removed: 0,
                rules_added: plan.chains.iter().map(|c| c.rules.len()).sum(),
                sets_changed: plan.sets.iter().map(|s| s.name.clone()).collect(),
                elements_added: plan.element_count(),
                elements_removed: 0,
                via: if by_netlink { Via::Netlink } else { Via::Nft },
                netlink_fallback,
                seconds: 0.0,
                cpu_seconds: 0.0,
                generation_before: None,
            }
        }
    };
    let vanished = || NftError::Exec(format!("table {} vanished right after apply", plan.table));
    // The handles from a netlink dump (rules only, set elements as digests): `nft` would print
    // every set element to tell them. `nft` when netlink cannot be used here.
    let kernel = link.and_then(|l| l.table_as(&plan.table, Some(plan)).ok().flatten());
    let (applied, handles) = match &kernel {
        Some(k) => plan
            .chains
            .iter()
            .map(|c| {
                let rules = k.rules.get(&c.name).map(Vec::as_slice).unwrap_or(&[]);
                (
                    (c.name.clone(), vec![Value::Null; rules.len()]),
                    (c.name.clone(), rules.iter().map(|r| r.0).collect()),
                )
            })
            .unzip(),
        None => {
            let live = LiveTable::read(nft, &plan.table)?.ok_or_else(vanished)?;
            plan.chains
                .iter()
                .map(|c| {
                    (
                        (
                            c.name.clone(),
                            live.rules.get(&c.name).cloned().unwrap_or_default(),
                        ),
                        (
                            c.name.clone(),
                            live.handles.get(&c.name).cloned().unwrap_or_default(),
                        ),
                    )
                })
                .unzip()
        }
    };
    Ok((
        TableState {
            netns: nft.netns.clone(),
            plan: plan.clone(),
            applied,
            handles,
            generation: None,
            kernel,
        },
        report,
    ))
}

/// Delete a table (no error if it is already gone).
pub fn remove_table(nft: &Nft, table: &str) -> Result<bool, NftError> {
    if nft.list_table(table)?.is_none() {
        return Ok(false);
    }
    nft.apply(&[format!("delete table {FAMILY} {table}")])?;
    Ok(true)
}

/// The set kind's family label, for messages.
pub fn kind_label(k: SetKind) -> &'static str {
    k.nft_type()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::render::{ChainDef, RuleDef, Stmt, Target};

    fn plan(elements: Vec<Elem>, rules: Vec<RuleDef>) -> TablePlan {
        TablePlan {
            table: "t".into(),
            nsg: "n".into(),
            target: Target::Subnet("s".into()),
            hook: crate::HookMode::Host,
            log_group: 1,
            scope: vec![],
            sets: vec![SetDef {
                name: "a".into(),
                kind: SetKind::InetService,
                elements: elements.into(),
            }],
            counters: vec!["c".into()],
            chains: vec![ChainDef {
                name: "nsg_in".into(),
                base: None,
                rules: rules.into(),
            }],
            rules: vec![],
            notes: vec![],
        }
    }

    #[test]
    fn intervals_normalise_and_subtract() {
        assert_eq!(
            normalise(vec![(5, 9), (0, 4), (20, 30)]),
            vec![(0, 9), (20, 30)]
        );
        assert_eq!(
            subtract(&[(0, 100)], &[(10, 20), (50, 60)]),
            vec![(0, 9), (21, 49), (61, 100)]
        );
        assert_eq!(subtract(&[(10, 20)], &[(0, 100)]), vec![]);
        let net: ipnet::IpNet = "10.0.0.0/24".parse().unwrap();
        assert_eq!(
            elem_interval(&json!({"prefix": {"addr": "10.0.0.0", "len": 24}})),
            Some(Elem::Net(net).interval())
        );
        assert_eq!(elem_interval(&json!({"range": [80, 90]})), Some((80, 90)));
        assert_eq!(
            elem_interval(&json!("10.0.0.1")),
            Some((0x0a000001, 0x0a000001))
        );
    }

    #[test]
    fn incremental_touches_only_what_changed() {
        let r = |c: &str| RuleDef {
            comment: c.into(),
            stmts: vec![Stmt::Accept],
        };
        let none = BTreeMap::new();
        let old = plan(vec![Elem::Ports(1, 1), Elem::Ports(5, 6)], vec![r("x")]);
        let same = incremental_commands(&old, &none, &old).unwrap();
        assert_eq!(same.1.mode, ApplyMode::Unchanged);
        let new = plan(vec![Elem::Ports(1, 1), Elem::Ports(8, 8)], vec![r("x")]);
        let (cmds, rep) = incremental_commands(&old, &none, &new).unwrap();
        assert_eq!(
            cmds,
            [
                "delete element inet t a { 5-6 }",
                "add element inet t a { 8 }"
            ]
        );
        assert_eq!((rep.elements_added, rep.elements_removed), (1, 1));
        // Without handles the chain is written again.
        let new = plan(vec![Elem::Ports(1, 1), Elem::Ports(5, 6)], vec![r("y")]);
        let (cmds, rep) = incremental_commands(&old, &none, &new).unwrap();
        assert_eq!(rep.chains_rewritten, ["nsg_in"]);
        assert_eq!(cmds[0], "flush chain inet t nsg_in");
        let mut renamed = old.clone();
        renamed.chains[0].base = Some(crate::render::BaseHook {
            hook: "input".into(),
            priority: 0,
        });
        assert!(incremental_commands(&old, &none, &renamed).is_err());
    }

    #[test]
    fn a_changed_rule_is_deleted_and_inserted_by_handle() {
        let r = |c: &str| RuleDef {
            comment: c.into(),
            stmts: vec![Stmt::Accept],
        };
        let rules = |names: &[&str]| names.iter().map(|n| r(n)).collect::<Vec<_>>();
        let old = plan(vec![], rules(&["a", "b", "c", "d"]));
        let handles = BTreeMap::from([("nsg_in".to_string(), vec![10, 11, 12, 13])]);
        let one = |names: &[&str]| {
            incremental_commands(&old, &handles, &plan(vec![], rules(names))).unwrap()
        };
        let (cmds, rep) = one(&["a", "B", "c", "d"]);
        assert_eq!(
            cmds,
            [
                "delete rule inet t nsg_in handle 11",
                "insert rule inet t nsg_in position 12 accept comment \"B\""
            ]
        );
        assert_eq!((rep.rules_removed, rep.rules_added), (1, 1));
        // A change at the end appends; a removal only deletes; an insertion only inserts.
        let (cmds, _) = one(&["a", "b", "c", "D"]);
        assert_eq!(
            cmds,
            [
                "delete rule inet t nsg_in handle 13",
                "add rule inet t nsg_in accept comment \"D\""
            ]
        );
        assert_eq!(
            one(&["a", "c", "d"]).0,
            ["delete rule inet t nsg_in handle 11"]
        );
        assert_eq!(
            one(&["a", "b", "x", "c", "d"]).0,
            ["insert rule inet t nsg_in position 12 accept comment \"x\""]
        );
        // Handles that do not fit the recorded rules are not trusted.
        let short = BTreeMap::from([("nsg_in".to_string(), vec![10])]);
        let (cmds, _) =
            incremental_commands(&old, &short, &plan(vec![], rules(&["a", "B", "c", "d"])))
                .unwrap();
        assert_eq!(cmds[0], "flush chain inet t nsg_in");
    }
}
