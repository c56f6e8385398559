//! Rendering (no privileges needed) and applying in a throwaway network namespace (root + nft).

mod common;

use palisade_host::apply::{self, ApplyMode};
use palisade_host::nft::{Nft, NftError};
use palisade_host::render::{render, HookMode, RenderOptions, Stmt, Target};

#[test]
fn nsg_renders_rules_in_priority_order_with_defaults_and_counters() {
    let snap = common::layered_nsg();
    let plan = render(&snap, &Target::Subnet("web-subnet".into()), &RenderOptions::default()).unwrap();
    assert_eq!(plan.table, "palisade_web_nsg");
    let names: Vec<(&str, &str)> = plan
        .rules
        .iter()
        .map(|r| (r.direction.as_str(), r.name.as_str()))
        .collect();
    // Defaults come last in each direction (NSG-4).
    let inbound: Vec<&str> = names.iter().filter(|d| d.0 == "Inbound").map(|d| d.1).collect();
    assert_eq!(
        &inbound[inbound.len() - 3..],
        ["AllowVnetInBound", "AllowAzureLoadBalancerInBound", "DenyAllInBound"]
    );
    let prios: Vec<u32> = plan.rules.iter().filter(|r| r.direction == "Inbound").map(|r| r.priority).collect();
    let mut sorted = prios.clone();
    sorted.sort();
    assert_eq!(prios, sorted);
    // One named counter per rule; every rule's nft rules use its own counter.
    assert_eq!(plan.counters.len(), plan.rules.len());
    let nsg_in = plan.chain("nsg_in").unwrap();
    assert_eq!(nsg_in.rules[0].stmts, vec![Stmt::CtEstablished, Stmt::Accept]);
    let deny = nsg_in.rules.last().unwrap();
    assert!(deny.stmts.contains(&Stmt::Drop));
    assert!(deny.stmts.iter().any(|s| matches!(s, Stmt::Log { group: 100, .. })));
    // Internet (AllowInternetOutBound) is a large interval set, not one rule per prefix.
    let internet = plan.sets.iter().find(|s| s.name.starts_with("out_AllowInternetOutBound_dst4")).unwrap();
    assert!(internet.elements.len() > 10, "{}", internet.elements.len());
    let text = plan.to_text();
    assert!(text.contains("table inet palisade_web_nsg {"));
    assert!(text.contains("type filter hook input priority -10; policy accept;"));
    assert!(text.contains("ct state established,related accept"));
}

#[test]
fn router_mode_hooks_forward_outbound_first() {
    let snap = common::layered_nsg();
    let opts = RenderOptions {
        hook: HookMode::Router,
        ..Default::default()
    };
    let plan = render(&snap, &Target::Subnet("web-subnet".into()), &opts).unwrap();
    let bases: Vec<&str> = plan.chains.iter().filter(|c| c.base.is_some()).map(|c| c.name.as_str()).collect();
    assert_eq!(bases, ["forward"]);
    let fwd = plan.chain("forward").unwrap();
    assert_eq!(fwd.rules[0].stmts.last(), Some(&Stmt::Jump("nsg_out".into())));
    assert_eq!(fwd.rules[3].stmts.last(), Some(&Stmt::Jump("nsg_in".into())));
}

#[test]
fn missing_targets_are_errors() {
    let snap = common::layered_nsg();
    assert!(render(&snap, &Target::Subnet("nope".into()), &RenderOptions::default()).is_err());
    // mgmt-subnet has no NSG: nothing to enforce.
    let e = render(&snap, &Target::Subnet("mgmt-subnet".into()), &RenderOptions::default()).unwrap_err();
    assert!(e.to_string().contains("no NSG"), "{e}");
}

#[test]
fn apply_is_atomic_idempotent_incremental_and_diff_sees_drift() {
    require_kernel!();
    let ns = common::Netns::new("apply");
    let nft = Nft::new(Some(ns.name.clone()));
    let snap = common::layered_nsg();
    let target = Target::Subnet("web-subnet".into());
    let plan = render(&snap, &target, &RenderOptions::default()).unwrap();

    let (state, report) = apply::apply(&nft, &plan, None).unwrap();
    assert_eq!(report.mode, ApplyMode::Full);
    let d = apply::diff(&nft, &plan, Some(&state)).unwrap();
    assert!(d.is_clean(), "{d:#?}");
    assert_eq!(d.counters.len(), plan.counters.len());

    // Idempotent: a second apply changes nothing.
    let (state, report) = apply::apply(&nft, &plan, Some(&state)).unwrap();
    assert_eq!(report.mode, ApplyMode::Unchanged, "{report:?}");

    // One-rule change: only that rule's set and its chain are touched.
    let mut changed = plan.clone();
    let set = changed
        .sets
        .iter_mut()
        .find(|s| s.name == "out_AllowInternetOutBound_dst4")
        .unwrap();
    set.elements.pop();
    let (state2, report) = apply::apply(&nft, &changed, Some(&state)).unwrap();
    assert_eq!(report.mode, ApplyMode::Incremental, "{report:?}");
    assert_eq!(report.sets_changed, ["out_AllowInternetOutBound_dst4"]);
    assert_eq!(report.elements_removed, 1);
    assert!(report.chains_rewritten.is_empty());
    assert!(apply::diff(&nft, &changed, Some(&state2)).unwrap().is_clean());

    // A rule changed in the model (another port): only its chain is rewritten.
    let mut rule_changed = changed.clone();
    let chain = rule_changed.chains.iter_mut().find(|c| c.name == "nsg_in").unwrap();
    let r = chain.rules.iter_mut().find(|r| r.comment.contains("Allow-HTTPS-Internet")).unwrap();
    for s in r.stmts.iter_mut() {
        if let Stmt::Port { operand, .. } = s {
            *operand = palisade_host::render::Operand::Elem(palisade_host::render::Elem::Ports(8443, 8443));
        }
    }
    let d = apply::diff(&nft, &rule_changed, Some(&state2)).unwrap();
    assert_eq!(d.rules_model_changed, ["nsg_in"]);
    assert!(d.rules_drifted.is_empty());
    let (state2, report) = apply::apply(&nft, &rule_changed, Some(&state2)).unwrap();
    assert_eq!(report.mode, ApplyMode::Incremental, "{report:?}");
    assert_eq!(report.chains_rewritten, ["nsg_in"]);
    assert!(report.sets_changed.is_empty());
    let changed = rule_changed;

    // A rule changed by hand shows as drift; an element added by hand too.
    ns.exec(&["nft", "insert", "rule", "inet", "palisade_web_nsg", "nsg_in", "tcp", "dport", "9999", "accept"]).unwrap();
    ns.exec(&["nft", "add", "element", "inet", "palisade_web_nsg", "scope4", "{ 192.0.2.0/24 }"]).unwrap();
    let d = apply::diff(&nft, &changed, Some(&state2)).unwrap();
    assert_eq!(d.rules_drifted, ["nsg_in"]);
    assert_eq!(d.set_elements.len(), 1);
    assert_eq!(d.set_elements[0].set, "scope4");
    assert_eq!(d.set_elements[0].extra, ["192.0.2.0-192.0.2.255"]);
    // Reapplying repairs the drift (whole table, since the kernel is not what we applied).
    let (state3, report) = apply::apply(&nft, &changed, Some(&state2)).unwrap();
    assert_eq!(report.mode, ApplyMode::Full);
    assert!(apply::diff(&nft, &changed, Some(&state3)).unwrap().is_clean());

    // Remove leaves nothing behind.
    assert!(apply::remove_table(&nft, &plan.table).unwrap());
    assert!(nft.tables().unwrap().is_empty());
}

#[test]
fn refused_transaction_keeps_old_ruleset_and_names_the_rule() {
    require_kernel!();
    let ns = common::Netns::new("refuse");
    let nft = Nft::new(Some(ns.name.clone()));
    let snap = common::layered_nsg();
    let plan = render(&snap, &Target::Subnet("web-subnet".into()), &RenderOptions::default()).unwrap();
    let (_state, _) = apply::apply(&nft, &plan, None).unwrap();
    let before = ns.exec(&["nft", "list", "ruleset"]).unwrap();

    // Break one rule: its counter refers to an object that does not exist.
    let mut bad = plan.clone();
    let chain = bad.chains.iter_mut().find(|c| c.name == "nsg_in").unwrap();
    let rule = chain.rules.iter_mut().find(|r| r.comment.contains("DenyAllInBound")).unwrap();
    for s in rule.stmts.iter_mut() {
        if let Stmt::Counter(n) = s {
            *n = "no_such_counter".into();
        }
    }
    let err = nft.apply(&bad.replace_commands()).unwrap_err();
    match &err {
        NftError::Refused { culprit, .. } => {
            let c = culprit.as_deref().unwrap_or("");
            assert!(c.contains("DenyAllInBound"), "{err}");
        }
        other => panic!("{other}"),
    }
    let after = ns.exec(&["nft", "list", "ruleset"]).unwrap();
    assert_eq!(before, after, "a refused transaction must leave the old ruleset");
}

#[test]
#[ignore]
fn print_plan() {
    let snap = common::layered_nsg();
    let plan = render(&snap, &Target::Nic("web-vm1-nic".into()), &RenderOptions::default()).unwrap();
    println!("{}", plan.to_text());
}
