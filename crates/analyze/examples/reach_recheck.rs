//! The one-rule re-checks of `palisade bench reach` alone, repeated over one engine (for
//! profiling them, and for figures steadier than a single round on a shared machine):
//! `cargo run --release -p palisade-analyze --example reach_recheck [spokes nsg_rules fw_rules rounds]`
//! prints the median and minimum over the rounds of the worst NSG and firewall re-check (CPU ms),
//! and the first round's: the one `palisade bench reach` measures (a fresh engine, the same
//! changes in the same order).

fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let (spokes, nsg, fw, rounds) = match args[..] {
        [s, n, f, r] => (s, n, f, r.max(1)),
        [s, n, f] => (s, n, f, 20),
        _ => (500, 50, 5000, 20),
    };
    let runs = palisade_analyze::reach::bench::recheck_rounds(spokes, nsg, fw, rounds);
    let stats = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        (v[v.len() / 2], v[0])
    };
    let (nsg_med, nsg_min) = stats(runs.iter().map(|r| r.0).collect());
    let (fw_med, fw_min) = stats(runs.iter().map(|r| r.1).collect());
    let (nsg_first, fw_first) = runs[0];
    println!(
        "{{\"rounds\": {rounds}, \"recheck_nsg_cpu_ms_first\": {nsg_first:.2}, \"recheck_firewall_cpu_ms_first\": {fw_first:.2}, \"recheck_nsg_cpu_ms_median\": {nsg_med:.2}, \"recheck_nsg_cpu_ms_min\": {nsg_min:.2}, \"recheck_firewall_cpu_ms_median\": {fw_med:.2}, \"recheck_firewall_cpu_ms_min\": {fw_min:.2}}}"
    );
}
