//! `palisade lab` as a user runs it: `up`, `exec … curl`, `status`, `down` leaving nothing; `check`
//! on the ASE lockdown and the ADX dependencies with `palisade gateway` as the firewall; Ctrl-C during `check` takes the lab
//! down. Root only (namespaces, nft); skipped with a message otherwise.

mod common;

use common::{lab_json, palisade};
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

/// A file of the lab's shared test fixtures.
fn fixture(name: &str) -> String {
    common::root()
        .join("crates/host/tests/fixtures")
        .join(name)
        .to_string_lossy()
        .into_owned()
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
    let nsg_log = out
        .lines()
        .find_map(|l| l.strip_prefix("NSG denials: palisade logs --data "))
        .unwrap_or_else(|| panic!("`lab up` names no NSG flow log: {out}"))
        .to_string();

    // The README's second command, by name: web-nsg allows the Internet outbound and DNS, the
    // lab's DNS server answers `lab.test`, the test server answers.
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
        "http://lab.test/",
    ]);
    assert_eq!(
        (code, out.as_str()),
        (0, "palisade lab: port 80\n"),
        "{err}"
    );
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
    // data-nsg denies the Internet outbound (spec NSG-5.1): curl times out, and the kernel's
    // denial is in `palisade logs` with its NSG rule within a second of the first SYN.
    let sent = Instant::now();
    let curl = Command::new(env!("CARGO_BIN_EXE_palisade"))
        .args([
            "lab",
            "exec",
            "--name",
            &run,
            "--state",
            st,
            "sql-vm1-nic",
            "--",
        ])
        .args([
            "curl",
            "-s",
            "-m",
            "2",
            "--local-port",
            "47001",
            "http://198.18.0.80/",
        ])
        .spawn()
        .unwrap();
    let record = loop {
        let (code, out, err) = palisade(&[
            "logs", "--data", &nsg_log, "--action", "deny", "--output", "json",
        ]);
        assert_eq!(code, 0, "{err}");
        let records: Value = serde_json::from_str(&out).unwrap();
        if let Some(r) = records
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["source_port"] == 47001)
        {
            break Some((r.clone(), sent.elapsed()));
        }
        if sent.elapsed() > Duration::from_secs(1) {
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let status = curl.wait_with_output().unwrap().status;
    assert_eq!(status.code(), Some(28), "curl's exit code for a timeout");
    let (r, after) = record.expect("no NSG flow record for the denied SYN within 1 s");
    assert!(after <= Duration::from_secs(1), "{after:?}");
    assert_eq!(
        (
            r["policy"].as_str(),
            r["rule"].as_str(),
            r["layer"].as_str(),
            r["action"].as_str()
        ),
        (
            Some("data-nsg"),
            Some("Deny-Internet-Outbound"),
            Some("SubnetNsg"),
            Some("Deny")
        ),
        "{r:#}"
    );
    assert_eq!(
        (
            r["source_ip"].as_str(),
            r["destination_ip"].as_str(),
            &r["destination_port"]
        ),
        (Some("10.2.3.4"), Some("198.18.0.80"), &Value::from(80)),
        "{r:#}"
    );

    let (code, out, _) = palisade(&["lab", "status", "--state", st, "--output", "json"]);
    assert_eq!(code, 0);
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v[0]["run"], run.as_str());
    assert_eq!(v[0]["namespaces_missing"], serde_json::json!([]));
    assert_eq!(namespaces_of(&run).len(), 7);

    let state_json: Value = serde_json::from_str(
        &std::fs::read_to_string(state.path().join(format!("lab-{run}.json"))).unwrap(),
    )
    .unwrap();
    let pids: Vec<(u64, String)> = state_json["processes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["pid"].as_u64().unwrap(), p["what"].to_string()))
        .collect();
    assert_eq!(pids.len(), 3, "test server, dnsmasq, NSG flow records");

    let (code, out, err) = palisade(&["lab", "down", "--name", &run, "--state", st]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(namespaces_of(&run).is_empty());
    for (pid, what) in pids {
        // Gone, or a zombie until init reaps it (`lab up` that started it has exited).
        let state = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let running = state
            .rsplit(')')
            .next()
            .and_then(|rest| rest.split_whitespace().next())
            .is_some_and(|s| s != "Z");
        assert!(!running, "{what} (pid {pid}) left running: {state}");
    }
    // Nothing in the host's own namespace either: the router's links, routes and rules and the
    // places' tables lived in the run's namespaces.
    let host = |args: &[&str]| {
        String::from_utf8_lossy(
            &Command::new(args[0])
                .args(&args[1..])
                .output()
                .unwrap()
                .stdout,
        )
        .into_owned()
    };
    let link = format!("{run}v");
    assert!(!host(&["ip", "-o", "link"]).contains(&link));
    assert!(!host(&["ip", "route", "show", "table", "all"]).contains(&link));
    assert!(!host(&["ip", "rule"]).contains(&link));
    assert!(!host(&["nft", "list", "tables"]).contains("palisade_lab"));
    let prefix = format!("pal-{run}-");
    assert!(std::fs::read_dir("/etc/netns")
        .map(|d| d
            .flatten()
            .all(|e| !e.file_name().to_string_lossy().starts_with(&prefix)))
        .unwrap_or(true));
    assert_eq!(
        std::fs::read_dir(state.path()).unwrap().count(),
        0,
        "state left behind"
    );
}

/// `lab check --output json` on a scenario of `../shared/scenarios/` as run `tag`: every flow
/// agrees (exit 0) and the lab is gone afterwards. The report.
fn check_scenario(name: &str, tag: &str) -> Value {
    let started = Instant::now();
    let state = tempfile::tempdir().unwrap();
    let run = run_name(tag);
    let network = format!("../shared/scenarios/{name}/network.json");
    let (code, v, err) = lab_json(&[
        "check",
        "--network",
        &network,
        "--name",
        &run,
        "--state",
        state.path().to_str().unwrap(),
    ]);
    eprintln!("{name} lab check: {:?}", started.elapsed());
    assert_eq!(v["disagree"], serde_json::json!([]), "{err}");
    assert_eq!(code, 0);
    assert!(namespaces_of(&run).is_empty());
    v
}

/// The observed outcome of one flow of a report.
fn observed(report: &Value, flow: &str) -> Value {
    report["flows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["flow"] == flow)
        .unwrap_or_else(|| panic!("no flow {flow}"))["observed"]
        .clone()
}

// spec FW-3, FW-6, RT-5: the ASE lockdown with `palisade gateway` as its firewall — application
// rules by SNI/Host, network rules, the default deny, service endpoints and /32 routes around
// the firewall — every flow agrees with trace, the firewall's denials named by its flow records.
#[test]
fn check_ase_lockdown_through_the_gateway() {
    require_root!();
    let v = check_scenario("ase-egress-lockdown", "a");
    assert_eq!(
        (v["total"].as_u64(), v["agree"].as_u64()),
        (Some(25), Some(25))
    );
    assert_eq!(
        observed(&v, "partner-uploads-denied"),
        serde_json::json!({"outcome": "denied", "detail": "ase-firewall/block-untrusted/deny-uploads"})
    );
    assert_eq!(
        observed(&v, "lookalike-domain"),
        serde_json::json!({"outcome": "denied", "detail": "ase-firewall"})
    );
    assert_eq!(observed(&v, "partner-api-wildcard")["outcome"], "connected");
}

// spec FW-2, FW-3, FW-5: the ADX dependencies with `palisade gateway` as its firewall, UDP
// included — the NTP datagram no rule allows is dropped by the gateway's transparent UDP
// (TPROXY) path and its default deny recorded, as trace says.
#[test]
fn check_adx_dependencies_through_the_gateway() {
    require_root!();
    let v = check_scenario("adx-dependencies", "x");
    assert_eq!(
        (v["total"].as_u64(), v["agree"].as_u64()),
        (Some(18), Some(18))
    );
    assert_eq!(
        observed(&v, "ntp-not-allowed"),
        serde_json::json!({"outcome": "denied", "detail": "adx-firewall"})
    );
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

// spec FW-3, FW-5: ICMP through the firewall is judged by its network rules in the firewall's
// namespace — first match by collection priority, else the default deny — and each decision is
// a flow record naming the rule (or the firewall's default), as `trace` names it. Real `ping`;
// then `lab check` through a chain of two firewalls.
#[test]
fn icmp_through_the_firewall_is_judged_by_its_network_rules() {
    require_root!();
    if Command::new("ping").arg("-V").output().is_err() {
        eprintln!("SKIPPED: ping is missing");
        return;
    }
    let network = fixture("firewall-icmp.yaml");
    let network = network.as_str();
    let state = tempfile::tempdir().unwrap();
    let st = state.path().to_str().unwrap();
    let run = run_name("p");
    let (code, out, err) = palisade(&[
        "lab",
        "up",
        "--network",
        network,
        "--flows",
        &fixture("firewall-icmp-flows.yaml"),
        "--name",
        &run,
        "--state",
        st,
        "--no-servers",
    ]);
    assert_eq!(code, 0, "{out}{err}");
    let log = out
        .lines()
        .find_map(|l| l.strip_prefix("NSG denials: palisade logs --data "))
        .unwrap_or_else(|| panic!("`lab up` names no flow log: {out}"))
        .to_string();
    let ping = |dst: &str| {
        let (code, out, err) = palisade(&[
            "lab", "exec", "--name", &run, "--state", st, "app-nic", "--", "ping", "-n", "-c", "1",
            "-W", "1", dst,
        ]);
        (code, format!("{out}{err}"))
    };
    let allowed = ping("203.0.113.7");
    let by_rule = ping("203.0.113.9");
    let by_default = ping("198.51.100.1");
    let records = {
        // The reader hands records over within milliseconds; give it a moment past the pings.
        std::thread::sleep(Duration::from_millis(300));
        let (code, out, err) = palisade(&["logs", "--data", &log, "--output", "json"]);
        assert_eq!(code, 0, "{err}");
        serde_json::from_str::<Value>(&out).unwrap()
    };
    let (code, out, err) = palisade(&["lab", "down", "--name", &run, "--state", st]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(namespaces_of(&run).is_empty());

    assert_eq!(allowed.0, 0, "{}", allowed.1);
    assert_ne!(by_rule.0, 0, "{}", by_rule.1);
    assert_ne!(by_default.0, 0, "{}", by_default.1);
    let record = |dst: &str| {
        records
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["destination_ip"] == dst)
            .unwrap_or_else(|| panic!("no record for {dst}: {records:#}"))
            .clone()
    };
    let fields = |r: &Value| {
        (
            r["action"].as_str().map(String::from),
            r["layer"].as_str().map(String::from),
            r["protocol"].as_str().map(String::from),
            r["rule_collection"].as_str().map(String::from),
            r["rule"].as_str().map(String::from),
        )
    };
    let some = |s: &str| Some(s.to_string());
    assert_eq!(
        fields(&record("203.0.113.7")),
        (
            some("Allow"),
            some("FirewallNetwork"),
            some("ICMP"),
            some("pings"),
            some("ping")
        )
    );
    assert_eq!(
        fields(&record("203.0.113.9")),
        (
            some("Deny"),
            some("FirewallNetwork"),
            some("ICMP"),
            some("blocked"),
            some("no-ping")
        )
    );
    let default = record("198.51.100.1");
    assert_eq!(
        fields(&default),
        (
            some("Deny"),
            some("FirewallDefault"),
            some("ICMP"),
            None,
            None
        )
    );
    assert_eq!(
        (default["policy"].as_str(), default["decided_by"].as_str()),
        (Some("fw"), Some("default"))
    );
    assert_eq!(record("203.0.113.7")["source_ip"], "10.0.2.4");

    // `lab check` on the same echoes through a chain of two firewalls (spec DIAG-7: the first
    // firewall's subnet routes everything to the second, which judges as the first did
    // alone): each echo agrees with trace, rule and all, the second firewall's rules named.
    let run = run_name("q");
    let (code, v, err) = lab_json(&[
        "check",
        "--network",
        &fixture("firewall-icmp-chain.yaml"),
        "--flows",
        &fixture("firewall-icmp-flows.yaml"),
        "--name",
        &run,
        "--state",
        st,
    ]);
    assert_eq!(v["disagree"], serde_json::json!([]), "{err}");
    assert_eq!((code, v["agree"].as_u64()), (0, Some(3)));
    let allowed = observed(&v, "ping-allowed");
    assert_eq!(allowed["outcome"], "allowed");
    assert!(
        ["fw1/all/icmp", "fw2/pings/ping"].contains(&allowed["detail"].as_str().unwrap_or("")),
        "{allowed}"
    );
    assert_eq!(
        observed(&v, "ping-denied-by-rule"),
        serde_json::json!({"outcome": "denied", "detail": "fw2/blocked/no-ping"})
    );
    assert_eq!(
        observed(&v, "ping-denied-by-default"),
        serde_json::json!({"outcome": "denied", "detail": "fw2"})
    );
    assert!(namespaces_of(&run).is_empty());
}

// spec FW-3, FW-5, FW-8.1, DIAG-7: TCP and UDP through two firewalls in a row — the first
// gateway keeps the client's address towards the second (`--keep-source-to`), so the second
// judges the client's address as `trace` says it does: allowed for app-nic, its default deny
// for other-nic; `lab check` agrees, and each firewall's flow record names the client.
#[test]
fn tcp_and_udp_through_two_chained_firewalls_keep_the_clients_address() {
    require_root!();
    let network = fixture("firewall-chain.yaml");
    let network = network.as_str();
    let flows = fixture("firewall-chain-flows.yaml");
    let state = tempfile::tempdir().unwrap();
    let st = state.path().to_str().unwrap();

    let run = run_name("c");
    let (code, v, err) = lab_json(&[
        "check",
        "--network",
        network,
        "--flows",
        &flows,
        "--name",
        &run,
        "--state",
        st,
    ]);
    assert_eq!(v["disagree"], serde_json::json!([]), "{err}");
    assert_eq!((code, v["agree"].as_u64()), (0, Some(4)));
    for (flow, want) in [
        ("tcp-app", serde_json::json!({"outcome": "connected"})),
        ("udp-app", serde_json::json!({"outcome": "connected"})),
        (
            "tcp-other",
            serde_json::json!({"outcome": "denied", "detail": "fw2"}),
        ),
        (
            "udp-other",
            serde_json::json!({"outcome": "denied", "detail": "fw2"}),
        ),
    ] {
        assert_eq!(observed(&v, flow), want, "{flow}");
    }
    assert!(namespaces_of(&run).is_empty());

    // The same by hand: curl and a datagram from each NIC, then the firewalls' flow records.
    let run = run_name("k");
    let (code, out, err) = palisade(&[
        "lab",
        "up",
        "--network",
        network,
        "--flows",
        &flows,
        "--name",
        &run,
        "--state",
        st,
        "--output",
        "json",
    ]);
    assert_eq!(code, 0, "{out}{err}");
    let up: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}{err}"));
    let data = |fw: &str| {
        up["gateways"]
            .as_array()
            .unwrap()
            .iter()
            .find(|g| g["firewall"] == fw)
            .unwrap_or_else(|| panic!("no gateway {fw}: {up:#}"))["data"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let exec = |nic: &str, command: &[&str]| {
        let mut args = vec!["lab", "exec", "--name", &run, "--state", st, nic, "--"];
        args.extend_from_slice(command);
        palisade(&args)
    };
    let curl = |nic: &str, dst: &str| {
        exec(
            nic,
            &["curl", "-s", "-m", "5", &format!("http://{dst}:8080/")],
        )
    };
    let datagram = |nic: &str, dst: &str| {
        let script = format!("exec 3<>/dev/udp/{dst}/8080; printf lab >&3; sleep 0.3");
        exec(nic, &["bash", "-c", &script])
    };
    let app_tcp = curl("app-nic", "203.0.113.7");
    let other_tcp = curl("other-nic", "203.0.113.8");
    let app_udp = datagram("app-nic", "203.0.113.9");
    let other_udp = datagram("other-nic", "203.0.113.10");
    let records = |fw: &str| {
        let (code, out, err) = palisade(&["logs", "--data", &data(fw), "--output", "json"]);
        assert_eq!(code, 0, "{err}");
        serde_json::from_str::<Value>(&out).unwrap()
    };
    // A relayed connection's record is written when it closes, just after curl returns.
    std::thread::sleep(Duration::from_millis(500));
    let (fw1, fw2) = (records("fw1"), records("fw2"));
    let (code, out, err) = palisade(&["lab", "down", "--name", &run, "--state", st]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(namespaces_of(&run).is_empty());

    assert_eq!(app_tcp.1, "palisade lab: port 8080\n", "{}", app_tcp.2);
    // fw2 reads the HTTP request, denies it by default and says so (status 470).
    assert!(
        other_tcp
            .1
            .starts_with("Action: Deny. Reason: No rule matched"),
        "{other_tcp:?}"
    );
    assert_eq!(app_udp.0, 0, "{app_udp:?}");
    assert_eq!(other_udp.0, 0, "{other_udp:?}");
    let record = |records: &Value, protocol: &str, dst: &str| {
        records
            .as_array()
            .unwrap()
            .iter()
            // A TCP connection whose HTTP request was read is recorded as HTTP.
            .find(|r| {
                r["destination_ip"] == dst
                    && (r["protocol"] == protocol || (protocol == "TCP" && r["protocol"] == "HTTP"))
            })
            .unwrap_or_else(|| panic!("no {protocol} record for {dst}: {records:#}"))
            .clone()
    };
    let fields = |r: &Value| {
        (
            r["source_ip"].as_str().map(String::from),
            r["action"].as_str().map(String::from),
            r["rule"].as_str().map(String::from),
        )
    };
    let some = |s: &str| Some(s.to_string());
    for (protocol, app, other) in [
        ("TCP", "203.0.113.7", "203.0.113.8"),
        ("UDP", "203.0.113.9", "203.0.113.10"),
    ] {
        // fw1 allows both, from the client's address.
        assert_eq!(
            fields(&record(&fw1, protocol, app)),
            (some("10.0.2.4"), some("Allow"), some("tcp-udp"))
        );
        assert_eq!(
            fields(&record(&fw1, protocol, other)),
            (some("10.0.2.5"), some("Allow"), some("tcp-udp"))
        );
        // fw2 sees the client's address too, not fw1's (10.0.1.4).
        assert_eq!(
            fields(&record(&fw2, protocol, app)),
            (some("10.0.2.4"), some("Allow"), some("app-nic"))
        );
        assert_eq!(
            fields(&record(&fw2, protocol, other)),
            (some("10.0.2.5"), some("Deny"), None)
        );
    }
}

// spec FW-3, FW-5, FW-8.4, PAL-5.1: IPv6 through a firewall is judged like IPv4 — TCP and UDP
// by the gateway's transparent listeners (one dual-stack TCP listener, a TPROXY one per
// family), ICMPv6 by the firewall's network rules in the kernel — and every flow of both
// families agrees with `trace`, the deciding rule named.
#[test]
fn ipv6_through_the_firewall_is_judged_like_ipv4() {
    require_root!();
    let state = tempfile::tempdir().unwrap();
    let run = run_name("6");
    let (code, v, err) = lab_json(&[
        "check",
        "--network",
        &fixture("dual-stack-firewall.yaml"),
        "--flows",
        &fixture("dual-stack-firewall-flows.yaml"),
        "--name",
        &run,
        "--state",
        state.path().to_str().unwrap(),
    ]);
    assert_eq!(v["disagree"], serde_json::json!([]), "{err}");
    assert_eq!((code, v["agree"].as_u64()), (0, Some(8)));
    assert!(namespaces_of(&run).is_empty());
    let denied = |detail: &str| serde_json::json!({"outcome": "denied", "detail": detail});
    let connected = serde_json::json!({"outcome": "connected"});
    for (flow, want) in [
        ("v6-https-allowed", connected.clone()),
        ("v6-http-default-deny", denied("ds-fw")),
        ("v6-udp-allowed", connected.clone()),
        ("v6-udp-denied-by-rule", denied("ds-fw/blocked/no-udp-a")),
        (
            "v6-ping-allowed",
            serde_json::json!({"outcome": "allowed", "detail": "ds-fw/web/ping6"}),
        ),
        ("v6-ping-default-deny", denied("ds-fw")),
        ("v4-https-allowed", connected.clone()),
        ("v4-http-default-deny", denied("ds-fw")),
    ] {
        assert_eq!(observed(&v, flow), want, "{flow}");
    }
}
