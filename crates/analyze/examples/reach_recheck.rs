//! The one-rule re-checks of `palisade bench reach` alone, repeated over one engine (for
//! profiling them, and for figures steadier than a single round on a shared machine):
//! `cargo run --release -p palisade-analyze --example reach_recheck [spokes nsg_rules fw_rules rounds]`
//! prints the median and minimum over the rounds of the worst NSG and firewall re-check (CPU ms),
//! and the first round's: the one `palisade bench reach` measures (a fresh engine, the same
//! changes in the same order); then each change's first-round and median CPU ms.

use palisade_analyze::reach::bench::{example_args, recheck_rounds, CHANGES};

fn main() {
    let (spokes, nsg, fw, rounds) =
        example_args(std::env::args().skip(1), 20).unwrap_or_else(|e| {
            eprintln!("reach_recheck: {e}");
            std::process::exit(2)
        });
    let runs = recheck_rounds(spokes, nsg, fw, rounds);
    let stats = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        (v[v.len() / 2], v[0])
    };
    let (nsg_med, nsg_min) = stats(runs.iter().map(|r| r.nsg.1).collect());
    let (fw_med, fw_min) = stats(runs.iter().map(|r| r.firewall.1).collect());
    let (nsg_first, fw_first) = (runs[0].nsg.1, runs[0].firewall.1);
    let each: Vec<String> = CHANGES
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let (med, _) = stats(runs.iter().map(|r| r.cpu_ms[i]).collect());
            format!("\"{c}\": [{:.2}, {med:.2}]", runs[0].cpu_ms[i])
        })
        .collect();
    println!(
        "{{\"rounds\": {rounds}, \"recheck_nsg_cpu_ms_first\": {nsg_first:.2}, \"recheck_firewall_cpu_ms_first\": {fw_first:.2}, \"recheck_nsg_cpu_ms_median\": {nsg_med:.2}, \"recheck_nsg_cpu_ms_min\": {nsg_min:.2}, \"recheck_firewall_cpu_ms_median\": {fw_med:.2}, \"recheck_firewall_cpu_ms_min\": {fw_min:.2}, \"by_change_cpu_ms_first_median\": {{{}}}}}",
        each.join(", ")
    );
}
