//! FW-4 as the user meets it: `palisade trace` to a firewall frontend behind a DNAT rule with
//! protocols `Any` (TCP and UDP translated; ICMP and ICMPv6 judged by the network rules and the
//! default deny), and `palisade lint` warning about a DNAT rule that names ICMP.

mod common;
use common::*;

use serde_json::Value;

/// The FW-4 fixture the policy's spec examples read, by its path from the repository root (where
/// [`palisade`] runs).
const NETWORK: &str = "crates/policy/tests/data/fw-4-dnat.yaml";

fn trace(net: &str, proto: &str, from: &str, to: &str) -> (i32, Value) {
    let args = [
        "trace",
        "--network",
        net,
        "--protocol",
        proto,
        "--from",
        from,
        "--to",
        to,
        "--port",
        "8080",
        "--output",
        "json",
    ];
    let (code, out, err) = palisade(&args);
    let v = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{args:?}: {e}\n{out}\n{err}"));
    (code, v)
}

fn first_hop(v: &Value) -> (&str, &str, Option<&str>) {
    let h = &v["hops"][0];
    (
        h["layer"].as_str().unwrap_or_default(),
        h["result"].as_str().unwrap_or_default(),
        h["rule"].as_str(),
    )
}

// FW-4: DNAT matches TCP and UDP only; `Any` on a DNAT rule does not cover ICMP.
#[test]
fn fw_4_trace_translates_tcp_and_udp_and_leaves_icmp_to_the_network_rules() {
    for proto in ["tcp", "udp"] {
        for (from, to, rule, translated) in [
            ("198.51.100.7", "52.0.0.10", "inbound/web", "10.0.2.4"),
            (
                "2001:db8:1::7",
                "2001:db8:52::10",
                "inbound/web6",
                "fd00::4",
            ),
        ] {
            let (code, v) = trace(NETWORK, proto, from, to);
            assert_eq!(code, 0, "{proto} {to}: {v}");
            assert_eq!(v["verdict"], "Allow", "{proto} {to}: {v}");
            assert_eq!(
                first_hop(&v),
                ("FirewallDnat", "Dnat", Some(rule)),
                "{proto} {to}: {v}"
            );
            // The trace says where the flow was translated to.
            assert_eq!(
                v["translated"],
                serde_json::json!({"destination": translated, "destination_port": 80}),
                "{proto} {to}: {v}"
            );
        }
    }
    // ICMP and ICMPv6 from the allowed ranges: the network rule, not the DNAT rules.
    for (from, to) in [
        ("198.51.100.7", "52.0.0.10"),
        ("2001:db8:1::7", "2001:db8:52::10"),
    ] {
        let (code, v) = trace(NETWORK, "icmp", from, to);
        assert_eq!(code, 0, "{to}: {v}");
        assert_eq!(v["verdict"], "Allow", "{to}: {v}");
        assert_eq!(
            first_hop(&v),
            ("FirewallNetwork", "Allow", Some("pings/ping")),
            "{to}: {v}"
        );
        assert_eq!(v["decided_by"]["rule"], "pings/ping", "{to}: {v}");
        assert_eq!(v["translated"], Value::Null, "{to}: {v}");
    }
    // From elsewhere: the default deny.
    for (from, to) in [
        ("203.0.113.7", "52.0.0.10"),
        ("2001:db8:9::7", "2001:db8:52::10"),
    ] {
        let (code, v) = trace(NETWORK, "icmp", from, to);
        assert_eq!(code, 3, "{to}: {v}");
        assert_eq!(v["verdict"], "Deny", "{to}: {v}");
        assert_eq!(first_hop(&v).0, "FirewallDefault", "{to}: {v}");
    }
}

// FW-4: lint names the file, the rule and the field of a DNAT rule that names ICMP.
#[test]
fn fw_4_lint_warns_about_a_dnat_rule_naming_icmp() {
    let (_, out, err) = palisade(&["lint", "--network", NETWORK, "--output", "json"]);
    let v: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}\n{out}\n{err}"));
    let found: Vec<&Value> = v["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["code"] == "dnat-icmp")
        .collect();
    assert_eq!(found.len(), 1, "{v}");
    let f = found[0];
    assert_eq!(f["severity"], "Warning");
    assert_eq!(f["rule"], "inbound/ping-only");
    assert!(
        f["file"].as_str().unwrap().ends_with("fw-4-dnat.yaml"),
        "{f}"
    );
    let message = f["message"].as_str().unwrap();
    assert!(
        message.contains("`protocols`") && message.contains("TCP and UDP only (FW-4)"),
        "{message}"
    );
}
