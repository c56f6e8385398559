//! Rule changes sent as netlink batches (`nfnl.rs`) instead of through `nft`: the kernel then
//! holds exactly what `nft` would have made of the same model (compared as `nft -j list table`
//! reads it back), the state's handles stay the kernel's over several changes, and a change the
//! kernel refuses leaves the ruleset byte-identical. Root + nft, in throwaway namespaces.

mod common;

use palisade_host::apply::{self, ApplyMode, Via};
use palisade_host::nfnl::{self, Edit, Nfnl};
use palisade_host::nft::{Nft, NftError};
use palisade_host::render::{
    render, Elem, HookMode, Operand, RenderOptions, Stmt, TablePlan, Target,
};

/// The same model applied from scratch by `nft` (its text transaction) in a fresh namespace.
fn fresh(plan: &TablePlan) -> String {
    let ns = common::Netns::new("nl-fresh");
    let nft = Nft::new(Some(ns.name.clone()));
    nft.apply(&plan.replace_text()).unwrap();
    common::contents(&nft, &plan.table)
}

/// `nft list table` of `plan`'s table in `ns`, as text (sets, maps and rules as nft prints them).
fn listing(ns: &common::Netns, plan: &TablePlan) -> String {
    ns.exec(&["nft", "list", "table", "inet", &plan.table])
        .unwrap()
}

/// The plans whose full apply goes as one netlink batch: every rule form of the fixtures, a
/// large set (thousands of prefixes), the router mode with its reverse-path filter, and a
/// classified table (verdict map, interval chains).
fn full_plans() -> Vec<TablePlan> {
    let mut plans = common::fixture_plans();
    plans.push(common::plan_of(
        &common::big_tag_snapshot(),
        Target::Subnet("s".into()),
    ));
    let lab = common::lab_snapshot();
    let router = RenderOptions {
        hook: HookMode::Router,
        rpfilter: true,
        ..Default::default()
    };
    plans.push(render(&lab, &Target::Subnet("app".into()), &router).unwrap());
    plans.push(common::classified_plan(80));
    plans
}

/// A full apply is one netlink batch encoded by Palisade (no `nft`), and the kernel then holds
/// exactly what `nft` makes of the same text transaction: `nft list` prints the same table
/// (sets and their intervals, verdict maps, anonymous sets, every rule form), the state's
/// handles are the kernel's, and the next apply of the same plan finds nothing to do.
#[test]
fn a_full_apply_is_one_netlink_batch_and_lists_as_nft_writes_it() {
    require_kernel!();
    for plan in &full_plans() {
        let (ours, theirs) = (
            common::Netns::new("nl-full"),
            common::Netns::new("nl-full-nft"),
        );
        let nft = Nft::new(Some(ours.name.clone()));
        let (state, report) = apply::apply(&nft, plan, None).unwrap();
        assert_eq!(
            (report.mode, report.via),
            (ApplyMode::Full, Via::Netlink),
            "{}: {report:?}",
            plan.table
        );
        Nft::new(Some(theirs.name.clone()))
            .apply(&plan.replace_text())
            .unwrap();
        assert_eq!(
            listing(&ours, plan),
            listing(&theirs, plan),
            "{}",
            plan.table
        );
        common::assert_handles_true(&nft, &state);
        assert!(apply::diff(&nft, plan, Some(&state)).unwrap().is_clean());
        let (_, again) = apply::apply(&nft, plan, Some(&state)).unwrap();
        assert_eq!(again.mode, ApplyMode::Unchanged, "{}", plan.table);
        // Replacing a table that is there: the old one goes in the same transaction.
        let (_, report) = apply::apply(&nft, plan, None).unwrap();
        assert_eq!((report.mode, report.via), (ApplyMode::Full, Via::Netlink));
        assert_eq!(
            listing(&ours, plan),
            listing(&theirs, plan),
            "{}",
            plan.table
        );
    }
}

/// The whole table's batch carries the generation: at a stale one the kernel refuses it and
/// the ruleset stays byte-identical (the old table whole, never part of the new one); a batch
/// the kernel refuses for its content changes nothing either.
#[test]
fn a_refused_full_batch_leaves_the_old_table_whole() {
    require_kernel!();
    let ns = common::Netns::new("nl-full-bad");
    let nft = Nft::new(Some(ns.name.clone()));
    let old = common::web_plan();
    apply::apply(&nft, &old, None).unwrap();
    let before = ns.exec(&["nft", "-a", "list", "ruleset"]).unwrap();
    let new = common::plan_of(&common::big_tag_snapshot(), Target::Subnet("s".into()));
    let mut new = TablePlan {
        table: old.table.clone(),
        ..new
    };
    let mut link = Nfnl::open(Some(&ns.name)).unwrap();
    let g = link.generation().unwrap();
    let err = link.replace(&new, Some(g.wrapping_sub(1))).unwrap_err();
    assert!(matches!(err, nfnl::NfnlError::Stale { .. }), "{err}");
    assert_eq!(before, ns.exec(&["nft", "-a", "list", "ruleset"]).unwrap());
    assert_eq!(link.generation().unwrap(), g);

    // The last rule names a counter that does not exist: the kernel refuses the batch.
    let chain = new.chains.iter_mut().find(|c| c.name == "nsg_in").unwrap();
    let last = chain.rules.len() - 1;
    for s in std::sync::Arc::make_mut(&mut chain.rules)[last]
        .stmts
        .iter_mut()
    {
        if let Stmt::Counter(n) = s {
            *n = "no_such_counter".into();
        }
    }
    let err = link.replace(&new, Some(g)).unwrap_err();
    assert!(matches!(err, nfnl::NfnlError::Refused { .. }), "{err}");
    assert_eq!(before, ns.exec(&["nft", "-a", "list", "ruleset"]).unwrap());
    // Through `apply` the refusal falls back to `nft`, which names the rule.
    match apply::apply(&nft, &new, None).unwrap_err() {
        NftError::Refused { culprit, .. } => {
            assert!(culprit.unwrap_or_default().contains("no_such_counter"));
        }
        other => panic!("{other}"),
    }
    assert_eq!(before, ns.exec(&["nft", "-a", "list", "ruleset"]).unwrap());
}

/// Every rule form the renderer emits for these networks, encoded by Palisade: the table with
/// the encodable rules left out is applied through `nft`, then they are all inserted over
/// netlink; the kernel then lists exactly what a fresh `nft` apply of the whole model lists.
#[test]
fn every_encoded_rule_reads_back_as_nft_wrote_it() {
    require_kernel!();
    let plans = common::fixture_plans();
    let mut inserted = 0;
    for plan in &plans {
        let ns = common::Netns::new("nl-forms");
        let nft = Nft::new(Some(ns.name.clone()));
        let mut without = plan.clone();
        for c in &mut without.chains {
            std::sync::Arc::make_mut(&mut c.rules).retain(|r| !nfnl::encodable(r));
        }
        let (state, _) = apply::apply(&nft, &without, None).unwrap();
        let (state, report) = apply::apply(&nft, plan, Some(&state)).unwrap();
        assert_eq!(report.via, Via::Netlink, "{report:?}");
        assert_eq!(report.mode, ApplyMode::Incremental, "{report:?}");
        inserted += report.rules_added;
        assert_eq!(
            common::contents(&nft, &plan.table),
            fresh(plan),
            "{}",
            plan.table
        );
        common::assert_handles_true(&nft, &state);
        assert!(apply::diff(&nft, plan, Some(&state)).unwrap().is_clean());
    }
    assert!(inserted > 40, "only {inserted} rules exercised");
}

/// `plan` with the port of the `n`th rule of `nsg_in` that has a single port set to `port`.
fn with_port(plan: &TablePlan, n: usize, port: u16) -> TablePlan {
    let mut p = plan.clone();
    let nsg_in = p.chains.iter_mut().find(|c| c.name == "nsg_in").unwrap();
    let r = std::sync::Arc::make_mut(&mut nsg_in.rules)
        .iter_mut()
        .filter(|r| {
            nfnl::encodable(r)
                && r.stmts.iter().any(|s| {
                    matches!(s, Stmt::Port { operand: Operand::Elem(Elem::Ports(a, b)), .. } if a == b)
                })
        })
        .nth(n)
        .expect("a rule with one port");
    for s in r.stmts.iter_mut() {
        if let Stmt::Port { operand, .. } = s {
            *operand = Operand::Elem(Elem::Ports(port, port));
        }
    }
    p
}

#[test]
fn several_changes_keep_the_state_true_and_equal_a_fresh_apply() {
    require_kernel!();
    let ns = common::Netns::new("nl-chg");
    let nft = Nft::new(Some(ns.name.clone()));
    let base = common::web_plan();
    let (mut state, _) = apply::apply(&nft, &base, None).unwrap();
    // Changed, changed again elsewhere, a rule dropped, then back to the start.
    let one = with_port(&base, 0, 8443);
    let two = with_port(&one, 1, 2222);
    let mut three = two.clone();
    let out = three
        .chains
        .iter_mut()
        .find(|c| c.name == "nsg_out")
        .unwrap();
    let i = out.rules.iter().position(nfnl::encodable).unwrap();
    std::sync::Arc::make_mut(&mut out.rules).remove(i);
    // Commands: delete + insert, again, one delete, then the two neighbouring rules of nsg_in
    // put back (2 + 2) and the nsg_out rule inserted.
    let commands = [2, 2, 1, 5];
    for (step, plan) in [&one, &two, &three, &base].into_iter().enumerate() {
        let (st, report) = apply::apply(&nft, plan, Some(&state)).unwrap();
        assert_eq!(report.via, Via::Netlink, "step {step}: {report:?}");
        assert_eq!(
            report.mode,
            ApplyMode::Incremental,
            "step {step}: {report:?}"
        );
        assert_eq!(report.commands, commands[step], "step {step}: {report:?}");
        common::assert_handles_true(&nft, &st);
        assert_eq!(
            common::contents(&nft, &plan.table),
            fresh(plan),
            "step {step}"
        );
        assert!(apply::diff(&nft, plan, Some(&st)).unwrap().is_clean());
        state = st;
    }
    // Nothing changed: no transaction, and the kernel is not listed to know it.
    let (st, report) = apply::apply(&nft, &base, Some(&state)).unwrap();
    assert_eq!(
        (report.mode, report.via),
        (ApplyMode::Unchanged, Via::Netlink)
    );
    // A hand edit moves the generation on: the next apply lists the table, sees the drift
    // and replaces the table through nft.
    ns.exec(&[
        "nft",
        "add",
        "rule",
        "inet",
        &base.table,
        "nsg_in",
        "accept",
    ])
    .unwrap();
    let (_, report) = apply::apply(&nft, &one, Some(&st)).unwrap();
    assert_eq!((report.mode, report.via), (ApplyMode::Full, Via::Netlink));
    assert_eq!(common::contents(&nft, &one.table), fresh(&one));
}

#[test]
fn a_refused_netlink_change_leaves_the_ruleset_byte_identical() {
    require_kernel!();
    let ns = common::Netns::new("nl-bad");
    let nft = Nft::new(Some(ns.name.clone()));
    let base = common::web_plan();
    let (state, _) = apply::apply(&nft, &base, None).unwrap();
    let before = ns.exec(&["nft", "-a", "list", "ruleset"]).unwrap();

    // One good edit and one whose counter does not exist, in one apply.
    let mut bad = with_port(&base, 0, 8443);
    let nsg_in = bad.chains.iter_mut().find(|c| c.name == "nsg_in").unwrap();
    let last = nsg_in.rules.len() - 1;
    for s in std::sync::Arc::make_mut(&mut nsg_in.rules)[last]
        .stmts
        .iter_mut()
    {
        if let Stmt::Counter(n) = s {
            *n = "no_such_counter".into();
        }
    }
    assert!(nfnl::encodable(&nsg_in.rules[last]));
    match apply::apply(&nft, &bad, Some(&state)).unwrap_err() {
        NftError::Refused { culprit, .. } => {
            let c = culprit.unwrap_or_default();
            assert!(c.contains("no_such_counter"), "{c}");
        }
        other => panic!("{other}"),
    }
    assert_eq!(before, ns.exec(&["nft", "-a", "list", "ruleset"]).unwrap());
    let (_, report) = apply::apply(&nft, &base, Some(&state)).unwrap();
    assert_eq!(report.mode, ApplyMode::Unchanged, "{report:?}");

    // A batch at a generation that is no longer current is refused as stale, and changes
    // nothing either.
    let mut link = Nfnl::open(Some(&ns.name)).unwrap();
    let g = link.generation().unwrap();
    let nsg_in = base.chain("nsg_in").unwrap();
    let edits = [Edit::Insert {
        chain: "nsg_in",
        rule: &nsg_in.rules[1],
        before: None,
    }];
    let err = link
        .change(&base.table, &edits, g.wrapping_sub(1))
        .unwrap_err();
    assert!(matches!(err, nfnl::NfnlError::Stale { .. }), "{err}");
    assert_eq!(before, ns.exec(&["nft", "-a", "list", "ruleset"]).unwrap());
    assert_eq!(link.generation().unwrap(), g);
}

/// A full apply records the table as the kernel dumps it (rule handles and digests, sets as
/// digests of their elements) instead of listing it with `nft`; the handles are those `nft -a`
/// lists. When another transaction moved the generation on, the drift check dumps the table
/// again: unchanged is no drift, a set flushed or a rule added by hand is.
#[test]
fn a_full_apply_is_recorded_by_dump_and_drift_is_found_by_dump() {
    require_kernel!();
    let mut plans = common::fixture_plans();
    plans.push(common::plan_of(
        &common::big_tag_snapshot(),
        Target::Subnet("s".into()),
    ));
    for plan in &plans {
        let ns = common::Netns::new("nl-dump");
        let nft = Nft::new(Some(ns.name.clone()));
        let (state, report) = apply::apply(&nft, plan, None).unwrap();
        assert_eq!(report.mode, ApplyMode::Full, "{report:?}");
        let k = state.kernel.clone().expect("recorded by a netlink dump");
        assert_eq!(k.sets.len(), plan.sets.len(), "{}", plan.table);
        assert_eq!(k.chains.len(), plan.chains.len(), "{}", plan.table);
        common::assert_handles_true(&nft, &state);
        assert!(apply::diff(&nft, plan, Some(&state)).unwrap().is_clean());

        // Another table added: the generation moved, the dump shows ours unchanged.
        ns.exec(&["nft", "add", "table", "inet", "elsewhere"])
            .unwrap();
        let (state, report) = apply::apply(&nft, plan, Some(&state)).unwrap();
        assert_eq!(
            report.mode,
            ApplyMode::Unchanged,
            "{}: {report:?}",
            plan.table
        );

        // A rule added by hand to a regular chain.
        let chain = plan.chains.iter().find(|c| c.base.is_none()).unwrap();
        ns.exec(&[
            "nft",
            "add",
            "rule",
            "inet",
            &plan.table,
            &chain.name,
            "accept",
        ])
        .unwrap();
        let (state, report) = apply::apply(&nft, plan, Some(&state)).unwrap();
        assert_eq!(report.mode, ApplyMode::Full, "{report:?}");
        assert!(report.reason.unwrap_or_default().contains("drift"));
        assert_eq!(common::contents(&nft, &plan.table), fresh(plan));

        // A set emptied by hand.
        if let Some(set) = plan.sets.iter().find(|s| !s.elements.is_empty()) {
            ns.exec(&["nft", "flush", "set", "inet", &plan.table, &set.name])
                .unwrap();
            let (_, report) = apply::apply(&nft, plan, Some(&state)).unwrap();
            assert_eq!(report.mode, ApplyMode::Full, "{report:?}");
            assert!(report.reason.unwrap_or_default().contains("drift"));
            assert_eq!(common::contents(&nft, &plan.table), fresh(plan));
        }
    }
}
