//! Times `host diff`'s reading of a table: through `nft -j list table` (the way before) and
//! through netlink dumps, alternated, on a rendered table (`host plan --output json`) applied in
//! a network namespace this program creates and deletes. Both reports must be equal. Prints one
//! JSON line per reading (`via`, `seconds`, `cpu_seconds`: this process and its children).
//!
//!   diff_bench PLAN.json [ROUNDS]      (root)

use palisade_host::apply;
use palisade_host::nfnl::Nfnl;
use palisade_host::render::TablePlan;
use palisade_host::Nft;
use std::process::Command;
use std::time::Instant;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let path = args.get(1).ok_or("usage: diff_bench PLAN.json [ROUNDS]")?;
    let rounds: u16 = args.get(2).map(|r| r.parse()).transpose()?.unwrap_or(5);
    let plan: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(path)?)?;
    let plan: TablePlan = serde_json::from_value(plan["table"].clone())?;
    let ns = format!("pal-dfb-{}", std::process::id());
    let ok = Command::new("ip").args(["netns", "add", &ns]).status()?;
    if !ok.success() {
        return Err("ip netns add failed".into());
    }
    let result = run(&ns, &plan, rounds);
    let _ = Command::new("ip").args(["netns", "del", &ns]).status();
    result
}

fn run(ns: &str, plan: &TablePlan, rounds: u16) -> Result<(), Box<dyn std::error::Error>> {
    let nft = Nft::new(Some(ns.to_string()));
    let (state, _) = apply::apply(&nft, plan, None)?;
    for _ in 0..rounds {
        let (t, c) = (Instant::now(), apply::cpu_time());
        let listed = apply::diff(&nft, plan, Some(&state))?;
        let nft_times = (t.elapsed().as_secs_f64(), apply::cpu_time() - c);
        let (t, c) = (Instant::now(), apply::cpu_time());
        let mut link = Nfnl::open(Some(ns))?;
        let dumped =
            apply::diff_by_netlink(&mut link, plan, Some(&state))?.ok_or("the state needs nft")?;
        let netlink_times = (t.elapsed().as_secs_f64(), apply::cpu_time() - c);
        if serde_json::to_value(&listed)? != serde_json::to_value(&dumped)? {
            return Err("the two readings differ".into());
        }
        for (via, (s, c)) in [("nft", nft_times), ("netlink", netlink_times)] {
            println!(
                "{}",
                serde_json::json!({"via": via, "seconds": s, "cpu_seconds": c, "clean": dumped.is_clean()})
            );
        }
    }
    Ok(())
}
