//! Rendering (no privileges needed) and applying in a throwaway network namespace (root + nft).

mod common;

use palisade_host::apply::{self, ApplyMode};
use palisade_host::nft::{Nft, NftError};
use palisade_host::render::{render, HookMode, RenderOptions, Stmt, Target};

#[test]
fn nsg_renders_rules_in_priority_order_with_defaults_and_counters() {
    let snap = common::layered_nsg();
    let plan = render(
        &snap,
        &Target::Subnet("web-subnet".into()),
        &RenderOptions::default(),
    )
    .unwrap();
    assert_eq!(plan.table, "palisade_web_nsg");
    let names: Vec<(&str, &str)> = plan
        .rules
        .iter()
        .map(|r| (r.direction.as_str(), r.name.as_str()))
        .collect();
    // Defaults come last in each direction (NSG-4).
    let inbound: Vec<&str> = names
        .iter()
        .filter(|d| d.0 == "Inbound")
        .map(|d| d.1)
        .collect();
    assert_eq!(
        &inbound[inbound.len() - 3..],
        [
            "AllowVnetInBound",
            "AllowAzureLoadBalancerInBound",
            "DenyAllInBound"
        ]
    );
    let prios: Vec<u32> = plan
        .rules
        .iter()
        .filter(|r| r.direction == "Inbound")
        .map(|r| r.priority)
        .collect();
    let mut sorted = prios.clone();
    sorted.sort();
    assert_eq!(prios, sorted);
    // One named counter per rule; every rule's nft rules use its own counter.
    assert_eq!(plan.counters.len(), plan.rules.len());
    let nsg_in = plan.chain("nsg_in").unwrap();
    assert_eq!(
        nsg_in.rules[0].stmts,
        vec![Stmt::CtEstablished, Stmt::Accept]
    );
    let deny = nsg_in.rules.last().unwrap();
    assert!(deny.stmts.contains(&Stmt::Drop));
    assert!(deny
        .stmts
        .iter()
        .any(|s| matches!(s, Stmt::Log { group: 100, .. })));
    // Internet (AllowInternetOutBound) is a large interval set, not one rule per prefix.
    let internet = plan
        .sets
        .iter()
        .find(|s| s.name.starts_with("out_AllowInternetOutBound_dst4"))
        .unwrap();
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
    let bases: Vec<&str> = plan
        .chains
        .iter()
        .filter(|c| c.base.is_some())
        .map(|c| c.name.as_str())
        .collect();
    assert_eq!(bases, ["forward"]);
    let fwd = plan.chain("forward").unwrap();
    assert_eq!(
        fwd.rules[0].stmts.last(),
        Some(&Stmt::Jump("nsg_out".into()))
    );
    assert_eq!(
        fwd.rules[3].stmts.last(),
        Some(&Stmt::Jump("nsg_in".into()))
    );
}

#[test]
fn missing_targets_are_errors() {
    let snap = common::layered_nsg();
    assert!(render(
        &snap,
        &Target::Subnet("nope".into()),
        &RenderOptions::default()
    )
    .is_err());
    // mgmt-subnet has no NSG: nothing to enforce.
    let e = render(
        &snap,
        &Target::Subnet("mgmt-subnet".into()),
        &RenderOptions::default(),
    )
    .unwrap_err();
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
    std::sync::Arc::make_mut(&mut set.elements).pop();
    let (state2, report) = apply::apply(&nft, &changed, Some(&state)).unwrap();
    assert_eq!(report.mode, ApplyMode::Incremental, "{report:?}");
    assert_eq!(report.sets_changed, ["out_AllowInternetOutBound_dst4"]);
    assert_eq!(report.elements_removed, 1);
    assert!(report.chains_rewritten.is_empty());
    assert!(apply::diff(&nft, &changed, Some(&state2))
        .unwrap()
        .is_clean());

    // A rule changed in the model (another port): only its chain is rewritten.
    let mut rule_changed = changed.clone();
    let chain = rule_changed
        .chains
        .iter_mut()
        .find(|c| c.name == "nsg_in")
        .unwrap();
    let r = std::sync::Arc::make_mut(&mut chain.rules)
        .iter_mut()
        .find(|r| r.comment.contains("Allow-HTTPS-Internet"))
        .unwrap();
    for s in r.stmts.iter_mut() {
        if let Stmt::Port { operand, .. } = s {
            *operand = palisade_host::render::Operand::Elem(palisade_host::render::Elem::Ports(
                8443, 8443,
            ));
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
    ns.exec(&[
        "nft",
        "insert",
        "rule",
        "inet",
        "palisade_web_nsg",
        "nsg_in",
        "tcp",
        "dport",
        "9999",
        "accept",
    ])
    .unwrap();
    ns.exec(&[
        "nft",
        "add",
        "element",
        "inet",
        "palisade_web_nsg",
        "scope4",
        "{ 192.0.2.0/24 }",
    ])
    .unwrap();
    let d = apply::diff(&nft, &changed, Some(&state2)).unwrap();
    assert_eq!(d.rules_drifted, ["nsg_in"]);
    assert_eq!(d.set_elements.len(), 1);
    assert_eq!(d.set_elements[0].set, "scope4");
    assert_eq!(d.set_elements[0].extra, ["192.0.2.0-192.0.2.255"]);
    // Reapplying repairs the drift (whole table, since the kernel is not what we applied).
    let (state3, report) = apply::apply(&nft, &changed, Some(&state2)).unwrap();
    assert_eq!(report.mode, ApplyMode::Full);
    assert!(apply::diff(&nft, &changed, Some(&state3))
        .unwrap()
        .is_clean());

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
    let plan = render(
        &snap,
        &Target::Subnet("web-subnet".into()),
        &RenderOptions::default(),
    )
    .unwrap();
    let (_state, _) = apply::apply(&nft, &plan, None).unwrap();
    let before = ns.exec(&["nft", "list", "ruleset"]).unwrap();

    // Break one rule: its counter refers to an object that does not exist.
    let mut bad = plan.clone();
    let chain = bad.chains.iter_mut().find(|c| c.name == "nsg_in").unwrap();
    let rule = std::sync::Arc::make_mut(&mut chain.rules)
        .iter_mut()
        .find(|r| r.comment.contains("DenyAllInBound"))
        .unwrap();
    for s in rule.stmts.iter_mut() {
        if let Stmt::Counter(n) = s {
            *n = "no_such_counter".into();
        }
    }
    let err = nft.apply(&bad.replace_text()).unwrap_err();
    match &err {
        NftError::Refused {
            culprit, message, ..
        } => {
            let c = culprit.as_deref().unwrap_or("");
            assert!(c.contains("DenyAllInBound"), "{err}");
            assert!(message.contains("No such file or directory"), "{err}");
            eprintln!("{err}");
        }
        other => panic!("{other}"),
    }
    let after = ns.exec(&["nft", "list", "ruleset"]).unwrap();
    assert_eq!(
        before, after,
        "a refused transaction must leave the old ruleset"
    );
}

/// The transaction is within the `nftables` crate's typed schema (what we send is what the
/// crate would serialize).
#[test]
fn commands_fit_the_nftables_crate_schema() {
    let snap = common::layered_nsg();
    let plan = render(
        &snap,
        &Target::Subnet("web-subnet".into()),
        &RenderOptions::default(),
    )
    .unwrap();
    let payload = serde_json::json!({"nftables": plan.replace_commands()});
    let typed: nftables::schema::Nftables = serde_json::from_value(payload.clone()).unwrap();
    let mut back = serde_json::to_value(&typed).unwrap();
    // nftables 0.6 serializes an unset counter value as `"bytes": null`; nothing else differs.
    for c in back["nftables"].as_array_mut().unwrap() {
        if let Some(o) = c
            .pointer_mut("/add/counter")
            .and_then(|o| o.as_object_mut())
        {
            if o.get("bytes") == Some(&serde_json::Value::Null) {
                o.remove("bytes");
            }
        }
    }
    if back != payload {
        let a = payload["nftables"].as_array().unwrap();
        let b = back["nftables"].as_array().unwrap();
        for (x, y) in a.iter().zip(b) {
            if x != y {
                panic!("differs:\n{x}\n{y}");
            }
        }
    }
}

#[test]
fn service_tag_is_one_set_of_thousands_of_prefixes_applied_in_one_transaction() {
    let snap = common::big_tag_snapshot();
    let plan = render(
        &snap,
        &Target::Subnet("s".into()),
        &RenderOptions::default(),
    )
    .unwrap();
    let v4 = plan.set("in_azurecloud_src4").unwrap();
    let v6 = plan.set("in_azurecloud_src6").unwrap();
    assert!(
        v4.elements.len() > 1000 && v6.elements.len() > 1000,
        "{} {}",
        v4.elements.len(),
        v6.elements.len()
    );
    // One nft rule per family for the rule, not one per prefix.
    let rule = plan.rules.iter().find(|r| r.name == "azurecloud").unwrap();
    assert_eq!(rule.nft_rules, 2);
    require_kernel!();
    let ns = common::Netns::new("bigset");
    let nft = Nft::new(Some(ns.name.clone()));
    let t = std::time::Instant::now();
    let (state, report) = apply::apply(&nft, &plan, None).unwrap();
    eprintln!(
        "{} elements applied in {:?} ({} commands)",
        plan.element_count(),
        t.elapsed(),
        report.commands
    );
    assert!(apply::diff(&nft, &plan, Some(&state)).unwrap().is_clean());
    // One prefix fewer: an incremental transaction of one element.
    let mut smaller = plan.clone();
    let set = smaller
        .sets
        .iter_mut()
        .find(|s| s.name == "in_azurecloud_src6")
        .unwrap();
    std::sync::Arc::make_mut(&mut set.elements).remove(7);
    let t = std::time::Instant::now();
    let (state, report) = apply::apply(&nft, &smaller, Some(&state)).unwrap();
    eprintln!("one-element change in {:?}", t.elapsed());
    assert_eq!(report.mode, ApplyMode::Incremental);
    assert_eq!((report.commands, report.elements_removed), (1, 1));
    assert!(apply::diff(&nft, &smaller, Some(&state))
        .unwrap()
        .is_clean());
    // The model (full tag) now differs by exactly that element.
    let d = apply::diff(&nft, &plan, Some(&state)).unwrap();
    assert_eq!(d.set_elements.len(), 1);
    assert_eq!(d.set_elements[0].missing.len(), 1);
}

#[test]
fn pal_5_3_audit_rule_renders_a_log_without_a_verdict() {
    // spec PAL-5.3: the packet goes on to the next rule after the audit rule's log.
    let snap = common::lab_snapshot();
    let plan = render(
        &snap,
        &Target::Subnet("app".into()),
        &RenderOptions::default(),
    )
    .unwrap();
    let audit = plan.rules.iter().find(|r| r.name == "audit-9000").unwrap();
    assert!(audit.audit && audit.nft_rules > 0);
    let text = plan.to_text();
    // The statements of the rules counted by `counter`, their comments cut off.
    let statements = |counter: &str| -> Vec<String> {
        text.lines()
            .filter(|l| l.contains(&format!("counter name \"{counter}\"")))
            .map(|l| l.split(" comment ").next().unwrap().trim().to_string())
            .collect()
    };
    let lines = statements(&audit.counter);
    assert!(!lines.is_empty(), "{text}");
    for l in &lines {
        assert!(
            l.contains("log prefix \"palisade audit app-nsg/audit-9000: \""),
            "{l}"
        );
        let verdicts = [" accept", " drop", " return", " reject", " jump", " goto"];
        assert!(
            !verdicts
                .iter()
                .any(|v| l.ends_with(v) || l.contains(&format!("{v} "))),
            "{l}"
        );
    }
    // A deny rule of the same table does carry its verdict.
    let deny = plan
        .rules
        .iter()
        .find(|r| r.name == "deny-ssh-from-net")
        .unwrap();
    let deny_lines = statements(&deny.counter);
    assert!(!deny_lines.is_empty());
    assert!(
        deny_lines.iter().all(|l| l.ends_with(" drop")),
        "{deny_lines:?}"
    );
}
