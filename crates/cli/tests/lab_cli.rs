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

/// The namespace of a lab place (NIC, subnet, firewall) by name, from the run's state file.
fn netns_of(state: &str, run: &str, place: &str) -> String {
    let text = std::fs::read_to_string(format!("{state}/lab-{run}.json")).unwrap();
    let v: Value = serde_json::from_str(&text).unwrap();
    v["plan"]["places"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["kind"]["name"] == place)
        .unwrap_or_else(|| panic!("no place {place} in lab {run}"))["netns"]
        .as_str()
        .unwrap()
        .to_string()
}

/// Send one TCP SYN to `to` from inside namespace `netns` and give up on the connection at once;
/// the moment it left. The SYN has passed the namespace's output hook (where the NSG tables
/// judge it) when `connect` returns, so the moment is the packet's, not a process start's.
fn send_syn_from(netns: &str, to: std::net::SocketAddr) -> Instant {
    let path = format!("/run/netns/{netns}");
    std::thread::spawn(move || {
        let ns = std::fs::File::open(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        // SAFETY: setns on a descriptor we hold; it moves only this thread, which ends here.
        let rc = unsafe { libc::setns(std::os::fd::AsRawFd::as_raw_fd(&ns), libc::CLONE_NEWNET) };
        assert_eq!(rc, 0, "setns {path}: {}", std::io::Error::last_os_error());
        let err = std::net::TcpStream::connect_timeout(&to, Duration::from_millis(1))
            .expect_err("the NSG denies it");
        assert_eq!(err.kind(), std::io::ErrorKind::TimedOut, "{err}");
        Instant::now()
    })
    .join()
    .unwrap()
}

/// What of run `run` is left: its namespaces, and in the host's own namespace its links, routes,
/// rules, the lab's nft tables and resolver files (the router's and the places' lived in the
/// run's namespaces), and any file in the state directory.
fn leftovers(run: &str, state: &std::path::Path) -> Vec<String> {
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
    let mut left: Vec<String> = namespaces_of(run)
        .into_iter()
        .map(|n| format!("namespace {n}"))
        .collect();
    for (what, args) in [
        ("link", &["ip", "-o", "link"][..]),
        ("route", &["ip", "route", "show", "table", "all"]),
        ("IPv6 route", &["ip", "-6", "route", "show", "table", "all"]),
        ("rule", &["ip", "rule"]),
    ] {
        for l in host(args).lines().filter(|l| l.contains(&link)) {
            left.push(format!("{what} {l}"));
        }
    }
    for t in host(&["nft", "list", "tables"])
        .lines()
        .filter(|t| t.contains("palisade_lab"))
    {
        left.push(format!("nft {t}"));
    }
    let prefix = format!("pal-{run}-");
    for e in std::fs::read_dir("/etc/netns")
        .into_iter()
        .flatten()
        .flatten()
    {
        if e.file_name().to_string_lossy().starts_with(&prefix) {
            left.push(format!("resolver dir {:?}", e.path()));
        }
    }
    for e in std::fs::read_dir(state).unwrap().flatten() {
        left.push(format!("state {:?}", e.file_name()));
    }
    left
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
    // data-nsg denies the Internet outbound (spec NSG-5.1): the kernel's denial is in `palisade
    // logs` with its NSG rule when asked one second after the denied SYN left the workload.
    let netns = netns_of(st, &run, "sql-vm1-nic");
    let sent = send_syn_from(&netns, "198.18.0.80:80".parse().unwrap());
    std::thread::sleep(Duration::from_secs(1).saturating_sub(sent.elapsed()));
    let (code, out, err) = palisade(&[
        "logs", "--data", &nsg_log, "--action", "deny", "--output", "json",
    ]);
    assert_eq!(code, 0, "{err}");
    let records: Value = serde_json::from_str(&out).unwrap();
    let r = records
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["source_ip"] == "10.2.3.4" && r["destination_ip"] == "198.18.0.80")
        .unwrap_or_else(|| {
            panic!("no NSG flow record one second after the denied SYN: {records:#}")
        });
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
    assert_eq!(r["destination_port"], 80, "{r:#}");
    // The README's third command fails: data-nsg denies the Internet, the lab's DNS server
    // included, so curl cannot even resolve the name (exit 6).
    let (code, out, err) = palisade(&[
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
        "3",
        "http://lab.test/",
    ]);
    assert_eq!((code, out.as_str()), (6, ""), "{err}");
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
    let left = leftovers(&run, state.path());
    assert!(left.is_empty(), "left behind: {left:?}");
}

/// `lab check --output json` on a scenario of `../shared/scenarios/` as run `tag`: every flow
/// agrees (exit 0) and the lab is gone afterwards. The report.
fn check_scenario(name: &str, tag: &str) -> Value {
    let started = Instant::now();
    let state = tempfile::tempdir().unwrap();
    let run = run_name(tag);
    // The folder, as a user names it: its `flows.yaml` and any parameters file come along.
    let network = format!("../shared/scenarios/{name}");
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
    let left = leftovers(&run, state.path());
    assert!(left.is_empty(), "left behind: {left:?}");
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

// spec NSG-5.1, NSG-4, NSG-7.1, NSG-11.1: the layered NSGs (subnet and NIC, service tags, ASGs,
// the blocked range before the HTTPS allow) — every flow agrees with trace, each denial named
// by the NSG rule the kernel logged.
#[test]
fn check_layered_nsg() {
    require_root!();
    let v = check_scenario("layered-nsg", "l");
    assert_eq!(
        (v["total"].as_u64(), v["agree"].as_u64()),
        (Some(23), Some(23))
    );
    // The blocked range's deny (priority 100) comes before the HTTPS allow (105).
    assert_eq!(
        observed(&v, "blocked-range-https-to-web-vm1"),
        serde_json::json!({"outcome": "denied", "detail": "web-nsg/Deny-Blocked-Range"})
    );
    assert_eq!(
        observed(&v, "sql-https-to-internet"),
        serde_json::json!({"outcome": "denied", "detail": "data-nsg/Deny-Internet-Outbound"})
    );
    assert_eq!(
        observed(&v, "internet-https-to-web-vm1")["outcome"],
        "connected"
    );
}

// spec RT-5, RT-8, RT-9, DIAG-9: the same NSG on two subnets that differ in their route table.
// On rt-broken the replies of inbound connections go to the firewall, which never saw the
// request: the connection times out with nothing logged (the route, not an NSG, drops it). On
// rt-fixed the routes back to the Internet make the same connections work; a client outside
// those routes still breaks there.
#[test]
fn check_asymmetric_routing_broken_and_fixed() {
    require_root!();
    let v = check_scenario("asymmetric-routing", "r");
    assert_eq!(
        (v["total"].as_u64(), v["agree"].as_u64()),
        (Some(13), Some(13))
    );
    let flow = |name: &str| {
        let f = v["flows"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["flow"] == name)
            .unwrap_or_else(|| panic!("no flow {name}"));
        (
            f["trace_rule"].as_str().unwrap_or_default().to_string(),
            f["observed"].clone(),
        )
    };
    let timed_out = serde_json::json!({"outcome": "timed_out"});
    let connected = serde_json::json!({"outcome": "connected"});
    for name in [
        "mgmt-454-broken",
        "mgmt-455-broken",
        "app-https-broken",
        "mgmt-454-broken-reply",
    ] {
        assert_eq!(
            flow(name),
            ("rt-broken/to-firewall".to_string(), timed_out.clone()),
            "{name}"
        );
    }
    for (name, rule) in [
        ("mgmt-454-fixed", "asym-ase-nsg/Inbound-management"),
        (
            "mgmt-455-fixed-by-tag-route",
            "asym-ase-nsg/Inbound-management",
        ),
        ("app-https-fixed", "asym-ase-nsg/Inbound-app-https"),
        ("mgmt-454-fixed-reply", "rt-fixed/mgmt-70-37-57-58"),
    ] {
        assert_eq!(flow(name), (rule.to_string(), connected.clone()), "{name}");
    }
    assert_eq!(
        flow("app-https-fixed-unlisted-client"),
        ("rt-fixed/to-firewall".to_string(), timed_out)
    );
    // Egress through the firewall works from the broken subnet: only inbound suffers.
    assert_eq!(
        flow("egress-ntp-broken-subnet"),
        ("asym-firewall/ase-network-rules/ntp".to_string(), connected)
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
    let left = leftovers(&run, state.path());
    assert!(left.is_empty(), "left behind: {left:?}");
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
