//! `palisade gateway` loads its network by the same road as the offline commands: the same
//! flags, the same located errors as `palisade validate`, the same snapshot as `palisade trace`.

mod common;
use common::*;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Kills the gateway when the test ends, passed or not.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Start a gateway on ephemeral loopback ports and collect its stderr until a line contains
/// `until` (or 60 s pass).
fn gateway_log(args: &[&str], until: &str) -> Vec<String> {
    let data = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_palisade"));
    cmd.args(["gateway", "--listen", "127.0.0.1:0", "--admin", "none"])
        .args(["--no-watch", "--no-system-resolver", "--data"])
        .arg(data.path())
        .args(args)
        .current_dir(root())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = Running(cmd.spawn().expect("start the gateway"));
    let stderr = child.0.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut lines = vec![];
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        match rx.recv_timeout(left) {
            Ok(line) => {
                let done = line.contains(until);
                lines.push(line);
                if done {
                    return lines;
                }
            }
            Err(_) => break,
        }
    }
    panic!("the gateway never logged `{until}`:\n{}", lines.join("\n"));
}

/// FMT-12 / PAL-5.5: the gateway refuses a network in error and names each error exactly as
/// `palisade validate` does (file:line:column, pointer, resource, field, found, expected).
#[test]
fn gateway_refuses_with_the_same_located_errors_as_validate() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("network.json");
    let text =
        std::fs::read_to_string(root().join("examples/ase-egress-lockdown/network.json")).unwrap();
    // One security rule priority out of range (NSG-3: 100-4096).
    let broken = text.replacen("\"priority\": 200", "\"priority\": 70000", 1);
    assert_ne!(broken, text, "the example changed: pick another edit");
    std::fs::write(&bad, broken).unwrap();
    let bad = bad.to_str().unwrap();

    let (code, out, _) = palisade(&["validate", bad]);
    assert_eq!(code, 1, "{out}");
    let expected: Vec<&str> = out.lines().filter(|l| l.starts_with("error:")).collect();
    assert!(!expected.is_empty(), "{out}");
    assert!(
        expected.iter().all(|e| e.contains(&format!("{bad}:"))),
        "{out}"
    );

    let log = gateway_log(&["--network", bad], "until a reload succeeds");
    let refused: Vec<&str> = log
        .iter()
        .filter_map(|l| l.split_once("palisade-gateway:"))
        .map(|(_, msg)| msg.trim())
        .filter(|m| m.starts_with("error:"))
        .collect();
    assert_eq!(refused, expected, "gateway log:\n{}", log.join("\n"));
}

/// FMT-5: the gateway takes `--parameters` (and every other input flag of `trace`), and runs the
/// very snapshot `trace` evaluates.
#[test]
fn gateway_accepts_parameters_and_runs_the_snapshot_trace_evaluates() {
    let base = "../shared/scenarios/ase-egress-lockdown";
    let network = format!("{base}/network-params.json");
    let parameters = format!("{base}/network.parameters.json");
    let input = [
        "--network",
        &network,
        "--parameters",
        &parameters,
        "--resolve",
        "www.example.test=203.0.113.80",
    ];
    let mut args = vec!["trace"];
    args.extend(input);
    args.extend([
        "--from",
        "10.0.0.10",
        "--to",
        "203.0.113.43",
        "--output",
        "json",
    ]);
    let (_, out, _) = palisade(&args);
    let trace: serde_json::Value = serde_json::from_str(&out).expect("trace JSON");
    let id = trace["snapshot"].as_str().expect("snapshot id").to_string();

    let log = gateway_log(&input, "in force");
    let last = log.last().unwrap();
    assert!(
        last.contains(&format!("policy {id} in force")),
        "trace evaluated {id}; the gateway:\n{}",
        log.join("\n")
    );
}

/// `--worker-threads` caps the threads serving connections: 0 is refused before anything
/// starts, naming the flag and the range; 1 runs.
#[test]
fn gateway_worker_threads_is_checked_and_honoured() {
    let network = "../shared/scenarios/ase-egress-lockdown/network.json";
    let (code, _, err) = palisade(&["gateway", "--network", network, "--worker-threads", "0"]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("--worker-threads") && err.contains("1..=1024"),
        "{err}"
    );
    let log = gateway_log(&["--network", network, "--worker-threads", "1"], "in force");
    assert!(
        log.last().unwrap().contains("in force"),
        "{}",
        log.join("\n")
    );
}
