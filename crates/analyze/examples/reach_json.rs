//! `palisade bench reach` without the CLI (for profiling the engine alone):
//! `cargo run --release -p palisade-analyze --example reach_json [spokes nsg_rules fw_rules]`
//! (`REACH_PARALLEL=1`: the matrix built by `Engine::parallel`).

fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let (spokes, nsg, fw) = match args[..] {
        [s, n, f] => (s, n, f),
        _ => (500, 50, 5000),
    };
    let parallel = std::env::var_os("REACH_PARALLEL").is_some();
    let r = palisade_analyze::reach::bench::run_with(spokes, nsg, fw, parallel);
    println!("{}", serde_json::to_string_pretty(&r).expect("plain data"));
    if r.mismatches > 0 {
        std::process::exit(1);
    }
}
