//! `palisade lab` as a user runs it: `up`, `exec … curl`, `status`, `down` leaving nothing; `check`
//! on the ASE lockdown and the ADX dependencies with `palisade gateway` as the firewall; Ctrl-C during `check` takes the lab
//! down. Root only (namespaces, nft); skipped with a message otherwise.

mod common;

use common::palisade;
use serde_json::Value;
use std::process::Command;
use std::time::{Duration, Instant};

fn skip_reason() -> Option<&'static str> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Some("not root");
    }
    for tool in ["nft", "ip", "curl"] {
        if Command::new(tool).arg("--version").output().is_err() {
            return Some("nft, ip or curl is missing");
        }
    }
    None
}

macro_rules! require_root {
    () => {
        if let Some(why) = skip_reason() {
            eprintln!("SKIPPED: {why}: the lab needs root, nft, ip and curl");
            return;
        }
    };
}

fn namespaces_of(run: &str) -> Vec<String> {
    let out = Command::new("ip").args(["netns", "list"]).output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| n.starts_with(&format!("pal-{run}-")))
        .map(String::from)
        .collect()
}

fn run_name(tag: &str) -> String {
    format!("{tag}{}", std::process::id() % 1_000_000)
}

#[test]
fn up_exec_curl_status_down() {
    require_root!();
    let state = tempfile::tempdir().unwrap();
    let st = state.path().to_str().unwrap();
    let run = run_name("e");
    let net = "../shared/scenarios/layered-nsg";
    let (code, out, err) =
        palisade(&["lab", "up", "--network", net, "--name", &run, "--state", st]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("web-vm2-nic"), "{out}");

    // web-nsg allows the Internet outbound; the test server answers (by address and, with
    // dnsmasq installed, by name).
    let (code, out, err) = palisade(&[
        "lab",
        "exec",
        "--name",
        &run,
        "--state",
        st,
        "web-vm2-nic",
        "--",
        "curl",
        "-s",
        "-m",
        "5",
        "http://198.18.0.80/",
    ]);
    assert_eq!(
        (code, out.as_str()),
        (0, "palisade lab: port 80\n"),
        "{err}"
    );
    // data-nsg denies the Internet outbound (spec NSG-5.1): curl times out.
    let (code, _, _) = palisade(&[
        "lab",
        "exec",
        "--name",
        &run,
        "--state",
        st,
        "sql-vm1-nic",
        "--",
        "curl",
        "-s",
        "-m",
        "2",
        "http://198.18.0.80/",
    ]);
    assert_eq!(code, 28, "curl's exit code for a timeout");

    let (code, out, _) = palisade(&["lab", "status", "--state", st, "--output", "json"]);
    assert_eq!(code, 0);
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v[0]["run"], run.as_str());
    assert_eq!(v[0]["namespaces_missing"], serde_json::json!([]));
    assert_eq!(namespaces_of(&run).len(), 7);

    let (code, out, err) = palisade(&["lab", "down", "--name", &run, "--state", st]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(namespaces_of(&run).is_empty());
    assert_eq!(
        std::fs::read_dir(state.path()).unwrap().count(),
        0,
        "state left behind"
    );
}

// spec FW-3, FW-6, RT-5: the ASE lockdown with `palisade gateway` as its firewall — application
// rules by SNI/Host, network rules, the default deny, service endpoints and /32 routes around
// the firewall — every flow agrees with trace, the firewall's denials named by its flow records.
#[test]
fn check_ase_lockdown_through_the_gateway() {
    require_root!();
    let started = Instant::now();
    let state = tempfile::tempdir().unwrap();
    let run = run_name("a");
    let (code, out, err) = palisade(&[
        "lab",
        "check",
        "--network",
        "../shared/scenarios/ase-egress-lockdown/network.json",
        "--name",
        &run,
        "--state",
        state.path().to_str().unwrap(),
        "--output",
        "json",
    ]);
    eprintln!("ase-egress-lockdown lab check: {:?}", started.elapsed());
    let v: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}{err}"));
    assert_eq!(v["disagree"], serde_json::json!([]), "{err}");
    assert_eq!(code, 0);
    assert_eq!(v["total"], 25);
    assert_eq!(v["agree"], 25);
    let flow = |name: &str| {
        v["flows"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["flow"] == name)
            .unwrap_or_else(|| panic!("no flow {name}"))
            .clone()
    };
    assert_eq!(
        flow("partner-uploads-denied")["observed"],
        serde_json::json!({"outcome": "denied", "detail": "ase-firewall/block-untrusted/deny-uploads"})
    );
    assert_eq!(
        flow("lookalike-domain")["observed"],
        serde_json::json!({"outcome": "denied", "detail": "ase-firewall"})
    );
    assert_eq!(
        flow("partner-api-wildcard")["observed"]["outcome"],
        "connected"
    );
    assert!(namespaces_of(&run).is_empty());
}

// spec FW-2, FW-3, FW-5: the ADX dependencies with `palisade gateway` as its firewall, UDP
// included — the NTP datagram no rule allows is dropped by the gateway's transparent UDP
// (TPROXY) path and its default deny recorded, as trace says.
#[test]
fn check_adx_dependencies_through_the_gateway() {
    require_root!();
    let started = Instant::now();
    let state = tempfile::tempdir().unwrap();
    let run = run_name("x");
    let (code, out, err) = palisade(&[
        "lab",
        "check",
        "--network",
        "../shared/scenarios/adx-dependencies/network.json",
        "--name",
        &run,
        "--state",
        state.path().to_str().unwrap(),
        "--output",
        "json",
    ]);
    eprintln!("adx-dependencies lab check: {:?}", started.elapsed());
    let v: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}{err}"));
    assert_eq!(v["disagree"], serde_json::json!([]), "{err}");
    assert_eq!(code, 0);
    assert_eq!(
        (v["total"].as_u64(), v["agree"].as_u64()),
        (Some(18), Some(18))
    );
    let ntp = v["flows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["flow"] == "ntp-not-allowed")
        .expect("the UDP flow")
        .clone();
    assert_eq!(
        ntp["observed"],
        serde_json::json!({"outcome": "denied", "detail": "adx-firewall"})
    );
    assert!(namespaces_of(&run).is_empty());
}

#[test]
fn interrupt_during_check_takes_the_lab_down() {
    require_root!();
    let state = tempfile::tempdir().unwrap();
    let run = run_name("i");
    let mut child = Command::new(env!("CARGO_BIN_EXE_palisade"))
        .args([
            "lab",
            "check",
            "--network",
            "../shared/scenarios/layered-nsg/network.json",
            "--name",
            &run,
            "--state",
            state.path().to_str().unwrap(),
        ])
        .current_dir(common::root())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until the lab is being built, then press Ctrl-C.
    let deadline = Instant::now() + Duration::from_secs(30);
    while namespaces_of(&run).len() < 3 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(!namespaces_of(&run).is_empty(), "the lab never came up");
    // SAFETY: kill on our own child's pid.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGINT) };
    let status = child.wait().unwrap();
    assert!(!status.success());
    let left = namespaces_of(&run);
    assert!(left.is_empty(), "left behind: {left:?}");
    assert_eq!(
        std::fs::read_dir(state.path()).unwrap().count(),
        0,
        "state left behind"
    );
}
