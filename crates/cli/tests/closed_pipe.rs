//! Issue 17: no command panics when its output is closed early (`palisade ... | head`). Every
//! subcommand runs with `--output json` into a pipe whose read end is already closed, so its
//! first write fails with EPIPE; it must end quietly (status 0, no "panicked" on stderr).

mod common;
use common::*;

use std::process::{Command, Stdio};

/// Run `palisade args` with stdout a pipe nobody reads; (exit code, stderr).
fn into_closed_pipe(args: &[&str]) -> (Option<i32>, String) {
    let (reader, writer) = std::io::pipe().expect("pipe");
    drop(reader);
    let out = Command::new(env!("CARGO_BIN_EXE_palisade"))
        .args(args)
        .current_dir(root())
        .stdin(Stdio::null())
        .stdout(writer)
        .stderr(Stdio::piped())
        .output()
        .expect("run palisade");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Commands that take no `--output` or need more than a file: `gateway` serves traffic (its
/// shutdown is tested in `gateway_shutdown.rs`), `server` serves HTTP (`server_api.rs`);
/// `help` is clap's; `versions`, `rollback` and `apply` ask a server (`server_api.rs`).
const NOT_RUN: &[&str] = &["gateway", "server", "help", "versions", "rollback", "apply"];

#[test]
fn every_command_survives_a_closed_stdout() {
    let data = tempfile::tempdir().unwrap();
    let prefixes = data.path().join("prefixes.txt");
    std::fs::write(&prefixes, "10.0.0.0/8\n192.168.0.0/16\n").unwrap();
    let logs = data.path().join("flows");
    std::fs::create_dir_all(&logs).unwrap();
    let ase = "examples/ase-egress-lockdown";
    let layered = "../shared/scenarios/layered-nsg";
    let runs: Vec<Vec<&str>> = vec![
        vec!["validate", ase],
        vec![
            "check-azure",
            "-n",
            layered,
            "--nic",
            "web-vm1-nic",
            "--effective-nsg",
            "crates/analyze/tests/data/azure/web-vm1-nic-effective-nsg.json",
        ],
        vec![
            "trace",
            "-n",
            ase,
            "--from",
            "10.0.0.10",
            "--to",
            "203.0.113.40",
            "--port",
            "443",
        ],
        vec![
            "next-hop",
            "-n",
            ase,
            "--from",
            "10.0.0.10",
            "--to",
            "13.90.249.229",
        ],
        vec!["effective-rules", "-n", layered, "--nic", "web-vm1-nic"],
        vec!["effective-routes", "-n", ase, "--subnet", "ase-subnet"],
        vec![
            "deps",
            "check",
            "-n",
            "../shared/scenarios/adx-dependencies/network.json",
            "--catalog",
            "../shared/scenarios/adx-dependencies/dependencies.json",
            "--from",
            "10.1.0.10",
        ],
        vec![
            "analyze",
            "asymmetric",
            "-n",
            "../shared/scenarios/asymmetric-routing",
        ],
        vec!["analyze", "reachability", "-n", layered],
        vec!["diff", layered, layered],
        vec!["lint", "-n", layered],
        vec![
            "bench",
            "lpm",
            "--data",
            prefixes.to_str().unwrap(),
            "--seconds",
            "0.05",
        ],
        vec!["demo"],
        vec!["logs", "--data", logs.to_str().unwrap()],
        vec![
            "learn",
            "-n",
            ase,
            "--scope",
            "ase-subnet",
            "--flow-log",
            logs.to_str().unwrap(),
        ],
        vec![
            "host",
            "plan",
            "-n",
            "crates/host/tests/fixtures/lab.yaml",
            "--subnet",
            "app",
        ],
        vec!["lab", "status", "--state", logs.to_str().unwrap()],
    ];
    for run in &runs {
        let mut args = run.clone();
        args.extend(["--output", "json"]);
        let (code, err) = into_closed_pipe(&args);
        assert!(!err.contains("panicked"), "{args:?} panicked: {err}");
        assert!(code.is_some(), "{args:?} was killed by a signal: {err}");
        // `logs` with no records writes nothing to stdout; the others end quietly at EPIPE.
        if run[0] != "logs" {
            assert_eq!(code, Some(0), "{args:?}: {err}");
        }
    }
    // Every command of `palisade --help` is run above or named in NOT_RUN.
    let help = Command::new(env!("CARGO_BIN_EXE_palisade"))
        .arg("--help")
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&help.stdout).into_owned();
    let commands: Vec<&str> = help
        .split("Commands:")
        .nth(1)
        .and_then(|c| c.split("Options:").next())
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert!(commands.len() > 10, "{help}");
    for c in commands {
        assert!(
            NOT_RUN.contains(&c) || runs.iter().any(|r| r[0] == c),
            "`palisade {c}` is not run into a closed pipe here"
        );
    }
}

/// `palisade logs | head -n 1` over more records than a pipe holds: `head` exits after its
/// line, `logs` meets the closed pipe mid-output and ends quietly with status 0.
#[test]
fn logs_into_head_ends_quietly() {
    use palisade_flowlog::{FlowLog, FlowRecord, Options};
    let data = tempfile::tempdir().unwrap();
    let log = FlowLog::open(data.path(), Options::default()).unwrap();
    let records: Vec<FlowRecord> = (0..5000)
        .map(|i| FlowRecord {
            time: "2026-12-04T23:00:00.000Z".into(),
            mode: "explicit".into(),
            protocol: "HTTPS".into(),
            source_ip: Some("10.0.0.5".parse().unwrap()),
            source_port: 40000 + (i % 20000) as u16,
            destination_port: 443,
            name: Some(format!("host-{i}.allowed.test")),
            action: "Allow".into(),
            reason: "RuleMatched".into(),
            ..Default::default()
        })
        .collect();
    log.append_all(&records).unwrap();
    drop(log);
    let mut logs = Command::new(env!("CARGO_BIN_EXE_palisade"))
        .args(["logs", "--data", data.path().to_str().unwrap()])
        .args(["--limit", "5000"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let head = Command::new("head")
        .args(["-n", "1"])
        .stdin(Stdio::from(logs.stdout.take().unwrap()))
        .output()
        .unwrap();
    let first = String::from_utf8_lossy(&head.stdout).into_owned();
    assert!(first.contains("allowed.test"), "{first}");
    assert_eq!(first.lines().count(), 1);
    let out = logs.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("panicked"), "{err}");
    assert_eq!(out.status.code(), Some(0), "{err}");
}
