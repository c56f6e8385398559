//! The first round of the one-rule re-checks of `palisade bench reach`, each on a fresh engine
//! built in parallel as the bench builds it (the round the bench reports, as a distribution):
//! `cargo run --release -p palisade-analyze --example reach_recheck_first [spokes nsg_rules fw_rules rounds]`
//! prints per change the minimum, median and maximum CPU ms over the rounds, and the worst NSG
//! and firewall re-check's. `serial` as a fifth argument builds with `Engine::new` instead.

use palisade_analyze::reach::bench::{example_args, recheck_first_rounds, CHANGES};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let serial = args.get(4).is_some_and(|a| a == "serial");
    let (spokes, nsg, fw, rounds) =
        example_args(args.into_iter().take(4), 10).unwrap_or_else(|e| {
            eprintln!("reach_recheck_first: {e}");
            std::process::exit(2)
        });
    let runs = recheck_first_rounds(spokes, nsg, fw, rounds, !serial);
    let stats = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        format!(
            "[{:.2}, {:.2}, {:.2}]",
            v[0],
            v[v.len() / 2],
            v[v.len() - 1]
        )
    };
    let mut each: Vec<String> = CHANGES
        .iter()
        .enumerate()
        .map(|(i, c)| {
            format!(
                "\"{c}\": {}",
                stats(runs.iter().map(|r| r.cpu_ms[i]).collect())
            )
        })
        .collect();
    each.push(format!(
        "\"recheck_nsg\": {}",
        stats(runs.iter().map(|r| r.nsg.1).collect())
    ));
    each.push(format!(
        "\"recheck_firewall\": {}",
        stats(runs.iter().map(|r| r.firewall.1).collect())
    ));
    println!(
        "{{\"rounds\": {rounds}, \"parallel\": {}, \"cpu_ms_min_median_max\": {{{}}}}}",
        !serial,
        each.join(", ")
    );
}
