//! `cargo run --release -p palisade-bench --example import -- DIR [MB ...]`
//!
//! Import time and peak memory against file size (issue 17): for each size (default 1 5 20 50
//! MB) an ARM template of NSGs holding 500 security rules each is written to DIR one-line and
//! pretty-printed, then read in a fresh process twice: by `serde_json` into a `Value` (the floor:
//! parsing the same bytes, nothing located) and by `palisade_load::check` (import with every
//! value located, and validation). Each line gives seconds and peak resident memory (`VmHWM`);
//! the files are deleted afterwards.

use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::Instant;

/// Rules per NSG: below the 1,000 of NSG-10, so the input is valid and validation reports nothing.
const PER_NSG: usize = 500;

fn rule(i: usize) -> Value {
    let k = i % PER_NSG;
    json!({"name": format!("rule-{i}"), "properties": {
        "priority": 100 + k / 2,
        "direction": if k.is_multiple_of(2) { "Inbound" } else { "Outbound" },
        "access": if i.is_multiple_of(3) { "Deny" } else { "Allow" },
        "protocol": "Tcp",
        "sourceAddressPrefix": format!("10.{}.{}.0/24", (i >> 8) & 255, i & 255),
        "sourcePortRange": "*",
        "destinationAddressPrefix": "VirtualNetwork",
        "destinationPortRange": (1 + i % 65000).to_string(),
        // Not ASCII, so columns count characters, not bytes.
        "description": format!("rule number {i} é")}})
}

fn template(rules: usize) -> Value {
    let nsgs: Vec<Value> = (0..rules.div_ceil(PER_NSG))
        .map(|g| {
            let rules: Vec<Value> = (g * PER_NSG..rules.min((g + 1) * PER_NSG))
                .map(rule)
                .collect();
            json!({"type": "Microsoft.Network/networkSecurityGroups", "apiVersion": "2023-04-01",
                "name": format!("nsg{g}"), "location": "westeurope",
                "properties": {"securityRules": rules}})
        })
        .collect();
    json!({"$schema": "https://schema.management.azure.com/schemas/2019-04-01/deploymentTemplate.json#",
        "contentVersion": "1.0.0.0", "resources": nsgs})
}

fn write(path: &Path, value: &Value, pretty: bool) -> std::io::Result<u64> {
    let text = match pretty {
        true => serde_json::to_string_pretty(value),
        false => serde_json::to_string(value),
    }
    .map_err(std::io::Error::other)?;
    std::fs::write(path, &text)?;
    Ok(text.len() as u64)
}

fn peak_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

/// In the child process: read FILE one way and print `seconds peak_kib rules errors`.
fn measure(how: &str, file: &str) -> ExitCode {
    let start = Instant::now();
    let (rules, errors) = if how == "serde" {
        let Ok(text) = std::fs::read_to_string(file) else {
            return ExitCode::FAILURE;
        };
        let v: Value = match serde_json::from_str(&text) {
            Ok(v) => v,
            Err(_) => return ExitCode::FAILURE,
        };
        (v["resources"].as_array().map_or(0, Vec::len), 0)
    } else {
        let c = palisade_load::check(&palisade_load::Source::files([file]));
        (
            c.imported.network.counts().security_rules,
            c.diagnostics.errors().count(),
        )
    };
    let secs = start.elapsed().as_secs_f64();
    println!("{secs:.3} {} {rules} {errors}", peak_kib());
    ExitCode::SUCCESS
}

fn run_child(how: &str, file: &Path) -> Option<(f64, u64, String)> {
    let exe = std::env::current_exe().ok()?;
    let out = Command::new(exe)
        .args(["--measure", how])
        .arg(file)
        .output()
        .ok()?;
    let text = String::from_utf8(out.stdout).ok()?;
    let f: Vec<&str> = text.split_whitespace().collect();
    Some((f.first()?.parse().ok()?, f.get(1)?.parse().ok()?, text))
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--measure") && args.len() == 3 {
        return measure(&args[1], &args[2]);
    }
    let Some(dir) = args.first().map(PathBuf::from) else {
        eprintln!("usage: import DIR [MB ...]");
        return ExitCode::from(2);
    };
    let sizes: Vec<f64> = match args[1..].iter().map(|s| s.parse()).collect() {
        Ok(v) if !args[1..].is_empty() => v,
        Ok(_) => vec![1.0, 5.0, 20.0, 50.0],
        Err(_) => {
            eprintln!("MB must be numbers");
            return ExitCode::from(2);
        }
    };
    // Bytes per rule, one-line, from a sample; the pretty file of the same rules is larger.
    let per_rule = serde_json::to_string(&template(1000)).map_or(300, |s| s.len() / 1000);
    println!("layout  MB     rules    serde_s  import_s  ratio  serde_MiB  import_MiB  mem_ratio  errors");
    for mb in sizes {
        let rules = ((mb * 1e6) as usize / per_rule).max(1);
        let value = template(rules);
        for pretty in [false, true] {
            let path = dir.join(format!("import-bench-{mb}-{pretty}.json"));
            let bytes = match write(&path, &value, pretty) {
                Ok(b) => b,
                Err(e) => {
                    eprintln!("{}: {e}", path.display());
                    return ExitCode::FAILURE;
                }
            };
            let serde = run_child("serde", &path);
            let ours = run_child("import", &path);
            let _ = std::fs::remove_file(&path);
            let (Some((s_t, s_m, _)), Some((o_t, o_m, o_text))) = (serde, ours) else {
                eprintln!("{}: a measuring process failed", path.display());
                return ExitCode::FAILURE;
            };
            let errors = o_text.split_whitespace().nth(3).unwrap_or("?").to_string();
            println!(
                "{:<7} {:<6.1} {:<8} {:<8.3} {:<9.3} {:<6.1} {:<10.0} {:<11.0} {:<10.1} {}",
                if pretty { "pretty" } else { "oneline" },
                bytes as f64 / 1e6,
                rules,
                s_t,
                o_t,
                o_t / s_t,
                s_m as f64 / 1024.0,
                o_m as f64 / 1024.0,
                o_m as f64 / s_m as f64,
                errors
            );
        }
    }
    ExitCode::SUCCESS
}
