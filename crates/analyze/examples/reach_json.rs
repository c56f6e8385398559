//! `palisade bench reach` without the CLI (for profiling the engine alone):
//! `cargo run --release -p palisade-analyze --example reach_json [spokes nsg_rules fw_rules]`
//! (`REACH_PARALLEL=1`: the matrix built by `Engine::parallel`).

use palisade_analyze::reach::bench::{example_args, run_with};

fn main() {
    let (spokes, nsg, fw, _) = example_args(std::env::args().skip(1), 1).unwrap_or_else(|e| {
        eprintln!("reach_json: {e}");
        std::process::exit(2)
    });
    let parallel = std::env::var_os("REACH_PARALLEL").is_some();
    let r = run_with(spokes, nsg, fw, parallel);
    println!("{}", serde_json::to_string_pretty(&r).expect("plain data"));
    if r.mismatches > 0 {
        std::process::exit(1);
    }
}
