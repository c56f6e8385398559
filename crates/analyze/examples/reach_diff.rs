//! `diff` of the generated network against a copy with one change, alone (issue 15, item 4):
//! `cargo run --release -p palisade-analyze --example reach_diff [spokes nsg_rules fw_rules rounds [serial|join|parallel]]`
//! prints one JSON line per diff: the change, wall and process CPU seconds, changes found and
//! atom pairs compared.

use palisade_analyze::diff::Build;
use palisade_analyze::reach::bench::{diff_rounds, example_args};
use std::io::Write;

fn main() {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let build = match args.get(4).map(String::as_str) {
        None | Some("join") => Build::Join,
        Some("serial") => Build::Serial,
        Some("parallel") => Build::Parallel,
        Some(other) => {
            eprintln!(
                "reach_diff: argument 5 (BUILD): expected serial, join or parallel, got {other:?}"
            );
            std::process::exit(2)
        }
    };
    args.truncate(4);
    let (spokes, nsg, fw, rounds) = example_args(args, 1).unwrap_or_else(|e| {
        eprintln!("reach_diff: {e}");
        std::process::exit(2)
    });
    let mut out = std::io::stdout().lock();
    for d in diff_rounds(spokes, nsg, fw, rounds, build) {
        let line = format!(
            "{{\"change\": \"{}\", \"build\": \"{build:?}\", \"diff_s\": {:.3}, \"cpu_s\": {:.3}, \"changes\": {}, \"compared\": {}}}",
            d.change, d.wall_s, d.cpu_s, d.changes, d.compared
        );
        // A closed pipe (`| head`) ends the run quietly.
        if writeln!(out, "{line}").is_err() {
            return;
        }
    }
}
