//! Times `apply` for one-rule changes on a rendered table (`host plan --output json`'s
//! `table`), in a network namespace this program creates and deletes: the table is applied
//! whole, then the port of a middle rule is changed ROUNDS times, each change applied with the
//! state of the one before. Prints one JSON line per change (`seconds`, `cpu_seconds`, `via`).
//!
//!   rule_change_bench PLAN.json [ROUNDS]      (root; used by scripts/bench-host.sh)

use palisade_host::apply;
use palisade_host::nfnl;
use palisade_host::render::{Elem, Operand, Stmt, TablePlan};
use palisade_host::Nft;
use std::process::Command;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let path = args
        .get(1)
        .ok_or("usage: rule_change_bench PLAN.json [ROUNDS]")?;
    let rounds: u16 = args.get(2).map(|r| r.parse()).transpose()?.unwrap_or(20);
    let plan: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(path)?)?;
    let plan: TablePlan = serde_json::from_value(plan["table"].clone())?;
    let ns = format!("pal-rcb-{}", std::process::id());
    let ok = Command::new("ip").args(["netns", "add", &ns]).status()?;
    if !ok.success() {
        return Err("ip netns add failed".into());
    }
    let result = run(&ns, plan, rounds);
    let _ = Command::new("ip").args(["netns", "del", &ns]).status();
    result
}

fn run(ns: &str, plan: TablePlan, rounds: u16) -> Result<(), Box<dyn std::error::Error>> {
    let nft = Nft::new(Some(ns.to_string()));
    let (mut state, report) = apply::apply(&nft, &plan, None)?;
    println!("{}", serde_json::json!({"full": report}));
    // The longest chain: `nsg_in` when listed, the fullest interval chain when classified.
    let chain = (0..plan.chains.len())
        .max_by_key(|&c| plan.chains[c].rules.len())
        .ok_or("no chain")?;
    let rules = &plan.chains[chain].rules;
    // A middle rule with one destination port that netlink can carry.
    let index = (rules.len() / 2..rules.len())
        .find(|&i| {
            nfnl::encodable(&rules[i])
                && rules[i].stmts.iter().any(|s| {
                    matches!(
                        s,
                        Stmt::Port {
                            operand: Operand::Elem(_),
                            ..
                        }
                    )
                })
        })
        .ok_or("no rule with a port")?;
    for round in 0..rounds {
        let mut next = state.plan.clone();
        // The edited chain becomes the plan's own; the others stay shared with the state's.
        let rules = std::sync::Arc::make_mut(&mut next.chains[chain].rules);
        for s in rules[index].stmts.iter_mut() {
            if let Stmt::Port { operand, .. } = s {
                *operand = Operand::Elem(Elem::Ports(4000 + round, 4000 + round));
            }
        }
        let (st, report) = apply::apply_owned(&nft, next, Some(state))?;
        println!("{}", serde_json::json!({"change": report}));
        state = st;
    }
    Ok(())
}
