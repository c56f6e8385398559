//! A one-rule change is sent as that rule alone (deleted and inserted by handle), and the
//! kernel then holds exactly what a from-scratch apply of the new model holds; a refused change
//! leaves the old ruleset. The text transaction `apply` sends and the JSON one `plan` shows give
//! the same table. Root + nft, in throwaway namespaces.

mod common;

use palisade_host::apply::{self, ApplyMode};
use palisade_host::nft::{Nft, NftError};
use palisade_host::render::{Elem, Operand, Stmt, TablePlan};

/// The plan with one rule's port changed and another rule dropped from `nsg_out`.
fn changed(plan: &TablePlan) -> TablePlan {
    let mut p = plan.clone();
    let nsg_in = p.chains.iter_mut().find(|c| c.name == "nsg_in").unwrap();
    let r = std::sync::Arc::make_mut(&mut nsg_in.rules)
        .iter_mut()
        .find(|r| r.comment.contains("Allow-HTTPS-Internet"))
        .unwrap();
    for s in r.stmts.iter_mut() {
        if let Stmt::Port { operand, .. } = s {
            *operand = Operand::Elem(Elem::Ports(8443, 8443));
        }
    }
    let nsg_out = p.chains.iter_mut().find(|c| c.name == "nsg_out").unwrap();
    let i = nsg_out
        .rules
        .iter()
        .position(|r| {
            r.comment
                .starts_with("defaultSecurityRules/AllowInternetOutBound")
        })
        .unwrap();
    std::sync::Arc::make_mut(&mut nsg_out.rules).remove(i);
    p
}

#[test]
fn one_rule_change_is_that_rule_alone_and_equals_a_fresh_apply() {
    require_kernel!();
    let (a, b) = (common::Netns::new("chg-a"), common::Netns::new("chg-b"));
    let (nft_a, nft_b) = (
        Nft::new(Some(a.name.clone())),
        Nft::new(Some(b.name.clone())),
    );
    let plan = common::web_plan();
    let new = changed(&plan);
    assert_ne!(plan, new);

    let (state, _) = apply::apply(&nft_a, &plan, None).unwrap();
    let (state, report) = apply::apply(&nft_a, &new, Some(&state)).unwrap();
    assert_eq!(report.mode, ApplyMode::Incremental, "{report:?}");
    // One rule replaced in nsg_in (delete + insert), one deleted in nsg_out; nothing else.
    assert_eq!(
        (report.rules_removed, report.rules_added),
        (2, 1),
        "{report:?}"
    );
    assert_eq!(report.commands, 3, "{report:?}");
    assert_eq!(report.chains_rewritten, ["nsg_in", "nsg_out"]);

    apply::apply(&nft_b, &new, None).unwrap();
    assert_eq!(
        common::contents(&nft_a, &new.table),
        common::contents(&nft_b, &new.table)
    );
    assert!(apply::diff(&nft_a, &new, Some(&state)).unwrap().is_clean());

    // And back: the old model again, again by handle, equals the old model applied anew.
    let (_, report) = apply::apply(&nft_a, &plan, Some(&state)).unwrap();
    assert_eq!(
        (report.rules_removed, report.rules_added),
        (1, 2),
        "{report:?}"
    );
    apply::remove_table(&nft_b, &plan.table).unwrap();
    apply::apply(&nft_b, &plan, None).unwrap();
    assert_eq!(
        common::contents(&nft_a, &plan.table),
        common::contents(&nft_b, &plan.table)
    );
}

#[test]
fn a_refused_rule_change_leaves_the_old_ruleset() {
    require_kernel!();
    let ns = common::Netns::new("chg-bad");
    let nft = Nft::new(Some(ns.name.clone()));
    let plan = common::web_plan();
    let (state, _) = apply::apply(&nft, &plan, None).unwrap();
    let before = ns.exec(&["nft", "list", "ruleset"]).unwrap();

    // A good change and a bad one in one apply: the bad rule's counter does not exist.
    let mut bad = changed(&plan);
    let nsg_in = bad.chains.iter_mut().find(|c| c.name == "nsg_in").unwrap();
    let r = std::sync::Arc::make_mut(&mut nsg_in.rules)
        .iter_mut()
        .find(|r| r.comment.contains("DenyAllInBound"))
        .unwrap();
    for s in r.stmts.iter_mut() {
        if let Stmt::Counter(n) = s {
            *n = "no_such_counter".into();
        }
    }
    match apply::apply(&nft, &bad, Some(&state)).unwrap_err() {
        NftError::Refused { culprit, .. } => {
            let c = culprit.unwrap_or_default();
            assert!(c.contains("DenyAllInBound"), "{c}");
        }
        other => panic!("{other}"),
    }
    assert_eq!(before, ns.exec(&["nft", "list", "ruleset"]).unwrap());
    // The state still describes the kernel: the next apply of the old model changes nothing.
    let (_, report) = apply::apply(&nft, &plan, Some(&state)).unwrap();
    assert_eq!(report.mode, ApplyMode::Unchanged, "{report:?}");
}

#[test]
fn text_and_json_transactions_give_the_same_table() {
    require_kernel!();
    let (a, b) = (common::Netns::new("txt"), common::Netns::new("json"));
    let plan = common::web_plan();
    let nft_a = Nft::new(Some(a.name.clone()));
    nft_a.apply(&plan.replace_text()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("tx.json");
    let payload = serde_json::json!({"nftables": plan.replace_commands()});
    std::fs::write(&file, payload.to_string()).unwrap();
    b.exec(&["nft", "-j", "-f", file.to_str().unwrap()])
        .unwrap();
    let nft_b = Nft::new(Some(b.name.clone()));
    assert_eq!(
        common::contents(&nft_a, &plan.table),
        common::contents(&nft_b, &plan.table)
    );
}

/// A plan cloned from the applied one shares its chains and sets; editing it after rendering
/// (rules and set elements, in place) must still be seen and applied, and must not reach the
/// recorded state's plan: the shared chains are what lets an unchanged chain compare at once.
#[test]
fn a_plan_edited_after_rendering_applies_its_edits() {
    require_kernel!();
    let (a, b) = (common::Netns::new("edt-a"), common::Netns::new("edt-b"));
    let (nft_a, nft_b) = (
        Nft::new(Some(a.name.clone())),
        Nft::new(Some(b.name.clone())),
    );
    let plan = common::plan_of(
        &common::big_tag_snapshot(),
        palisade_host::Target::Subnet("s".into()),
    );
    let (state, _) = apply::apply(&nft_a, &plan, None).unwrap();
    let recorded = state.plan.clone();
    // The caller's copy of the state's plan, edited in place after rendering.
    let mut edited = state.plan.clone();
    let chain = edited
        .chains
        .iter()
        .position(|c| c.rules.iter().any(|r| r.stmts.iter().any(is_port)))
        .unwrap();
    assert!(std::sync::Arc::ptr_eq(
        &edited.chains[chain].rules,
        &state.plan.chains[chain].rules
    ));
    for r in std::sync::Arc::make_mut(&mut edited.chains[chain].rules).iter_mut() {
        for s in r.stmts.iter_mut() {
            if let Stmt::Port { operand, .. } = s {
                *operand = Operand::Elem(Elem::Ports(9443, 9443));
            }
        }
    }
    let set = edited
        .sets
        .iter_mut()
        .max_by_key(|s| s.elements.len())
        .unwrap();
    std::sync::Arc::make_mut(&mut set.elements).pop();
    assert_ne!(edited, recorded);
    assert_eq!(state.plan, recorded, "the edit reached the recorded plan");

    let (state, report) = apply::apply_owned(&nft_a, edited.clone(), Some(state)).unwrap();
    assert_ne!(report.mode, ApplyMode::Unchanged, "{report:?}");
    assert_eq!(state.plan, edited);
    apply::apply(&nft_b, &edited, None).unwrap();
    assert_eq!(
        common::contents(&nft_a, &edited.table),
        common::contents(&nft_b, &edited.table)
    );
    assert!(apply::diff(&nft_a, &edited, Some(&state))
        .unwrap()
        .is_clean());
}

fn is_port(s: &Stmt) -> bool {
    matches!(s, Stmt::Port { .. })
}
