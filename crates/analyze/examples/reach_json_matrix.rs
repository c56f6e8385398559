//! The full matrix of `palisade bench reach` alone, built several times from one snapshot (for
//! profiling the build, and for figures steadier than one run on a shared machine):
//! `cargo run --release -p palisade-analyze --example reach_json_matrix [spokes nsg_rules fw_rules rounds]`
//! prints per round and the median of wall time, CPU time of the building thread and CPU time
//! of the whole process (`REACH_PARALLEL=1`: built by `Engine::parallel`).

fn main() {
    let args = palisade_analyze::reach::bench::example_args(std::env::args().skip(1), 3);
    let (spokes, nsg, fw, rounds) = args.unwrap_or_else(|e| {
        eprintln!("reach_json_matrix: {e}");
        std::process::exit(2)
    });
    let parallel = std::env::var_os("REACH_PARALLEL").is_some();
    let runs = palisade_analyze::reach::bench::matrix_rounds(spokes, nsg, fw, rounds, parallel);
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let wall = median(runs.iter().map(|r| r.0).collect());
    let cpu = median(runs.iter().map(|r| r.1).collect());
    let process = median(runs.iter().map(|r| r.2).collect());
    let each: Vec<String> = runs
        .iter()
        .map(|r| format!("[{:.3}, {:.3}, {:.3}]", r.0, r.1, r.2))
        .collect();
    println!(
        "{{\"rounds\": {rounds}, \"parallel\": {parallel}, \"matrix_s_median\": {wall:.3}, \"matrix_cpu_s_median\": {cpu:.3}, \"matrix_process_cpu_s_median\": {process:.3}, \"runs_wall_cpu_process\": [{}]}}",
        each.join(", ")
    );
}
