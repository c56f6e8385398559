//! `host diff` read by netlink dumps gives the report `nft -j list table` gives, on every
//! fixture, clean and after the table was changed behind Palisade's back; and it names exactly
//! what was changed.

mod common;
use common::*;

use palisade_host::apply::{self, TableDiff, TableState};
use palisade_host::nfnl::Nfnl;
use palisade_host::nft::Nft;
use palisade_host::render::TablePlan;

fn by_netlink(ns: &Netns, plan: &TablePlan, state: Option<&TableState>) -> TableDiff {
    let mut link = Nfnl::open(Some(&ns.name)).unwrap();
    apply::diff_by_netlink(&mut link, plan, state)
        .unwrap()
        .expect("a state recorded by netlink, or none, is compared by netlink")
}

/// Both readings, as `host diff --output json` prints them, must be the same.
fn same_report(ns: &Netns, nft: &Nft, plan: &TablePlan, state: Option<&TableState>) -> TableDiff {
    let netlink = by_netlink(ns, plan, state);
    let listed = apply::diff(nft, plan, state).unwrap();
    assert_eq!(
        serde_json::to_value(&netlink).unwrap(),
        serde_json::to_value(&listed).unwrap(),
        "{}: netlink and nft reports differ",
        plan.table
    );
    netlink
}

#[test]
fn netlink_diff_equals_the_nft_listing_on_every_fixture() {
    require_kernel!();
    let mut plans = fixture_plans();
    plans.push(plan_of(
        &big_tag_snapshot(),
        palisade_host::Target::Subnet("s".into()),
    ));
    for plan in plans {
        let ns = Netns::new("dnl");
        let nft = Nft::new(Some(ns.name.clone()));
        assert!(!by_netlink(&ns, &plan, None).present);
        let (state, _) = apply::apply(&nft, &plan, None).unwrap();
        assert!(state.kernel.is_some());
        let d = same_report(&ns, &nft, &plan, Some(&state));
        assert!(d.is_clean(), "{d:?}");
        // Without a state: rules compared by comment, as before.
        let d = same_report(&ns, &nft, &plan, None);
        assert!(d.rules_drifted.is_empty(), "{d:?}");
        assert_eq!(d.notes.len(), 1);
        // The model changed since the apply: a rule fewer in the first chain with rules.
        let mut edited = plan.clone();
        if let Some(c) = edited.chains.iter_mut().find(|c| !c.rules.is_empty()) {
            std::sync::Arc::make_mut(&mut c.rules).pop();
            let name = c.name.clone();
            let d = same_report(&ns, &nft, &edited, Some(&state));
            assert_eq!(d.rules_model_changed, vec![name]);
            assert!(d.rules_drifted.is_empty());
        }
    }
}

#[test]
fn a_rule_added_and_a_set_element_removed_by_hand_are_named_exactly() {
    require_kernel!();
    let plan = plan_of(
        &big_tag_snapshot(),
        palisade_host::Target::Subnet("s".into()),
    );
    let ns = Netns::new("dnt");
    let nft = Nft::new(Some(ns.name.clone()));
    let (state, _) = apply::apply(&nft, &plan, None).unwrap();
    let set = plan
        .sets
        .iter()
        .max_by_key(|s| s.elements.len())
        .expect("a set");
    let gone = set.elements[set.elements.len() / 2];
    let chain = plan.chains.last().unwrap().name.clone();
    nft.apply(&[
        plan.elements_text("delete", &set.name, &[gone]),
        format!("add rule inet {} {chain} accept", plan.table),
    ])
    .unwrap();
    let d = same_report(&ns, &nft, &plan, Some(&state));
    assert_eq!(d.rules_drifted, vec![chain.clone()], "{d:?}");
    assert_eq!(d.set_elements.len(), 1, "{d:?}");
    assert_eq!(d.set_elements[0].set, set.name);
    assert_eq!(d.set_elements[0].missing.len(), 1, "{d:?}");
    assert!(d.set_elements[0].extra.is_empty(), "{d:?}");
    let palisade_host::render::Elem::Net(net) = gone else {
        panic!("an address set holds {gone:?}");
    };
    let want = if net.prefix_len() == net.max_prefix_len() {
        net.addr().to_string()
    } else {
        format!("{}-{}", net.network(), net.broadcast())
    };
    assert_eq!(d.set_elements[0].missing, vec![want]);
    assert!(d.missing_sets.is_empty() && d.extra_sets.is_empty());
    assert!(d.missing_chains.is_empty() && d.extra_chains.is_empty());
    assert!(d.rules_model_changed.is_empty());
    assert!(d.missing_counters.is_empty() && d.extra_counters.is_empty());

    // A counter and a chain added, a rule's expression replaced under its own handle (its
    // listing by `nft` would hide it behind the handle; its digest does not).
    let mut hand = vec![
        format!("add counter inet {} by_hand", plan.table),
        format!("add chain inet {} by_hand", plan.table),
    ];
    let first = plan.chains.iter().find(|c| !c.rules.is_empty()).unwrap();
    let handle = state.handles[&first.name][0];
    hand.push(format!(
        "replace rule inet {} {} handle {handle} counter drop",
        plan.table, first.name
    ));
    nft.apply(&hand).unwrap();
    let d = by_netlink(&ns, &plan, Some(&state));
    assert_eq!(d.extra_counters, vec!["by_hand".to_string()]);
    assert_eq!(d.extra_chains, vec!["by_hand".to_string()]);
    assert!(d.rules_drifted.contains(&first.name), "{d:?}");
    // A reapply repairs all of it.
    let (state, _) = apply::apply(&nft, &plan, Some(&state)).unwrap();
    assert!(same_report(&ns, &nft, &plan, Some(&state)).is_clean());
}

#[test]
fn a_state_listed_by_nft_is_left_to_nft() {
    require_kernel!();
    let plan = web_plan();
    let ns = Netns::new("dno");
    let nft = Nft::new(Some(ns.name.clone()));
    let (mut state, _) = apply::apply(&nft, &plan, None).unwrap();
    // What an earlier version recorded: each rule as `nft` listed it, no kernel record.
    state.kernel = None;
    for (chain, rules) in state.applied.iter_mut() {
        let listed = palisade_host::apply::LiveTable::read(&nft, &plan.table)
            .unwrap()
            .unwrap();
        *rules = listed.rules[chain].clone();
    }
    let mut link = Nfnl::open(Some(&ns.name)).unwrap();
    assert!(apply::diff_by_netlink(&mut link, &plan, Some(&state))
        .unwrap()
        .is_none());
    // A state without a kernel record but with rules sent by netlink (null) is compared by
    // count and handle.
    for rules in state.applied.values_mut() {
        rules.iter_mut().for_each(|r| *r = serde_json::Value::Null);
    }
    let d = same_report(&ns, &nft, &plan, Some(&state));
    assert!(d.is_clean(), "{d:?}");
}
