//! `cargo run --release -p palisade-bench --example run -- KIND DATA [SECONDS] [--json]`
//!
//! KIND is `classifier`, `lpm`, `fqdn` or `firewall`; DATA a file (or, for `fqdn` and `firewall`, a
//! directory of lists).

use std::path::PathBuf;
use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let json = args.iter().any(|a| a == "--json");
    let pos: Vec<&String> = args.iter().filter(|a| !a.starts_with("--")).collect();
    let (Some(kind), Some(data)) = (pos.first(), pos.get(1)) else {
        eprintln!(
            "usage: run KIND DATA [SECONDS] [--json]   (KIND: classifier | lpm | fqdn | firewall)"
        );
        return ExitCode::from(2);
    };
    let kind = match kind.parse::<palisade_bench::Kind>() {
        Ok(k) => k,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let seconds = match pos.get(2).map(|s| s.parse::<f64>()) {
        None => 2.0,
        Some(Ok(s)) => s,
        Some(Err(_)) => {
            eprintln!("SECONDS must be a number");
            return ExitCode::from(2);
        }
    };
    match palisade_bench::run(kind, &PathBuf::from(data), seconds) {
        Ok(r) if json => match serde_json::to_string_pretty(&r) {
            Ok(s) => {
                println!("{s}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{e}");
                ExitCode::FAILURE
            }
        },
        Ok(r) => {
            print!("{r}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
