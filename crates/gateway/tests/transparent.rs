//! Transparent mode in network namespaces the test creates and removes:
//!
//! ```text
//!  ns cli: 10.77.0.2 ──veth── 10.77.0.1 ns gw ── servers on 10.78.0.10 (lo)
//!           default via .1           nft: iifname "vg" tcp → redirect :15001 (the gateway)
//! ```
//! The gateway and the servers run in this process, on a thread moved into ns gw with
//! `setns(2)` (threads it spawns inherit the namespace); `curl` and `openssl s_client` run in
//! ns cli with `ip netns exec`. Needs root and `nft`; without root it is skipped with a message.

mod common;

use common::netns::{can_run, in_ns, tcp_send_from, InNs, Pair};
use common::*;
use palisade_gateway::sni::build_client_hello;
use std::path::PathBuf;
use std::time::Duration;

const POLICY: &str = r#"apiVersion: palisade/v1
azureFirewalls:
  - name: fw
    ipConfigurations: [{name: c, privateIPAddress: 10.77.0.1}]
    networkRuleCollections:
      - name: l4
        priority: 100
        action: {type: Allow}
        rules: [{name: raw-tcp, protocols: [TCP], sourceAddresses: ['10.77.0.0/24'], destinationAddresses: ['10.78.0.10'], destinationPorts: ['2222']}]
    applicationRuleCollections:
      - name: deny-apps
        priority: 100
        action: {type: Deny}
        rules: [{name: blocked, sourceAddresses: ['*'], protocols: ['Http:80', 'Https:443'], targetFqdns: [blocked.test]}]
      - name: allow-apps
        priority: 200
        action: {type: Allow}
        rules:
          - {name: web, sourceAddresses: ['10.77.0.0/24'], protocols: ['Http:80'], targetFqdns: [www.allowed.test]}
          - {name: tls, sourceAddresses: ['10.77.0.0/24'], protocols: ['Https:443'], targetFqdns: ['*.allowed.test']}
"#;

#[test]
fn transparent_mode_in_namespaces() {
    if !can_run(
        "transparent_mode_in_namespaces",
        "network namespaces, nft",
        &[("nft", "nftables")],
    ) {
        return;
    }
    let ns = Pair::new("t", &["10.78.0.10/32", "10.78.0.11/32"]);
    let (gw_ns, cli_ns) = (ns.gw.clone(), ns.cli.clone());
    ns.nft("table ip palisade {\n chain prerouting {\n  type nat hook prerouting priority dstnat; policy accept;\n  iifname \"vg\" meta l4proto tcp redirect to :15001\n }\n}\n");

    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("network.yaml");
    write(&policy, POLICY);
    let data: PathBuf = dir.path().join("data");

    // The gateway and servers, inside ns gw.
    let data2 = data.clone();
    let _gateway = InNs::start(&gw_ns, move || async move {
        http_server("10.78.0.10:80").await;
        http_server("10.78.0.10:2222").await;
        tls_server(
            "10.78.0.10:443",
            &["api.allowed.test", "elsewhere.allowed.test"],
        )
        .await;
        let mut config = loopback_config(
            &policy,
            &data2,
            &[
                "www.allowed.test=10.78.0.10",
                "api.allowed.test=10.78.0.10",
                "blocked.test=10.78.0.10",
                "elsewhere.allowed.test=10.78.0.11",
            ],
        );
        config.listen = None;
        config.admin = None;
        config.transparent = Some("0.0.0.0:15001".parse().unwrap());
        config.limits.handshake_timeout = Duration::from_secs(3);
        config
    });

    // HTTP by Host, allowed.
    let (code, out, err) = in_ns(
        &cli_ns,
        &[
            "curl",
            "-sS",
            "--max-time",
            "10",
            "--resolve",
            "www.allowed.test:80:10.78.0.10",
            "http://www.allowed.test/",
        ],
    );
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("hello from www.allowed.test"), "{out}");
    let r = wait_for(&data, "www", |r| {
        r.name.as_deref() == Some("www.allowed.test")
    });
    assert_eq!(
        (r.action.as_str(), r.mode.as_str()),
        ("Allow", "transparent")
    );
    assert_eq!(r.rule_path().as_deref(), Some("allow-apps/web"));
    assert_eq!(r.source_ip, Some("10.77.0.2".parse().unwrap()));
    assert_eq!(r.destination_ip, Some("10.78.0.10".parse().unwrap()));
    assert_eq!(r.destination_port, 80);

    // HTTPS by SNI, allowed; TLS is not terminated (the client sees the server's certificate).
    let (code, out, err) = in_ns(
        &cli_ns,
        &[
            "curl",
            "-sSk",
            "--max-time",
            "10",
            "--resolve",
            "api.allowed.test:443:10.78.0.10",
            "https://api.allowed.test/",
        ],
    );
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("tls hello"), "{out}");
    let r = wait_for(&data, "api", |r| {
        r.name.as_deref() == Some("api.allowed.test")
    });
    assert_eq!(r.rule_path().as_deref(), Some("allow-apps/tls"));
    assert_eq!(r.protocol, "HTTPS");

    // Explicitly denied name: HTTP gets 470 naming the rule.
    let (_, out, _) = in_ns(
        &cli_ns,
        &[
            "curl",
            "-sS",
            "--max-time",
            "10",
            "-w",
            "\n%{http_code}",
            "--resolve",
            "blocked.test:80:10.78.0.10",
            "http://blocked.test/",
        ],
    );
    assert!(out.ends_with("470"), "{out}");
    assert!(
        out.contains("Rule Collection: deny-apps. Rule: blocked."),
        "{out}"
    );
    let r = wait_for(&data, "blocked", |r| {
        r.name.as_deref() == Some("blocked.test")
    });
    assert_eq!(
        (r.action.as_str(), r.rule.as_deref()),
        ("Deny", Some("blocked"))
    );

    // SNI of an allowed name on the wrong address: denied (PAL-5.2).
    let (_, out, err) = in_ns(
        &cli_ns,
        &[
            "openssl",
            "s_client",
            "-connect",
            "10.78.0.10:443",
            "-servername",
            "elsewhere.allowed.test",
            "-brief",
        ],
    );
    assert!(
        !format!("{out}{err}").contains("CONNECTION ESTABLISHED"),
        "{out}{err}"
    );
    let r = wait_for(&data, "spoof", |r| {
        r.name.as_deref() == Some("elsewhere.allowed.test")
    });
    assert_eq!(
        (r.action.as_str(), r.reason.as_str()),
        ("Deny", "SniAddressMismatch")
    );

    // No SNI: denied with the policy's reason.
    let (_, out, err) = in_ns(
        &cli_ns,
        &[
            "openssl",
            "s_client",
            "-connect",
            "10.78.0.10:443",
            "-noservername",
            "-brief",
        ],
    );
    assert!(
        !format!("{out}{err}").contains("CONNECTION ESTABLISHED"),
        "{out}{err}"
    );
    wait_for(&data, "no SNI", |r| r.reason == "SniMissing");

    // ECH and an unparseable ClientHello: denied with their reasons.
    let ech = build_client_hello(Some("api.allowed.test"), true, &[], 16384);
    let mut garbage = build_client_hello(Some("api.allowed.test"), false, &[], 16384);
    garbage[9] = 9; // ClientHello version major 9
    for (bytes, reason) in [
        (ech, "EncryptedClientHello"),
        (garbage, "UnparseableClientHello"),
    ] {
        tcp_send_from(&cli_ns, "10.78.0.10:443", &bytes);
        let r = wait_for(&data, reason, |r| r.reason == reason);
        assert_eq!(r.action, "Deny");
    }

    // Smuggling headers (RFC 9112 §6.3): refused and recorded, whatever the name.
    tcp_send_from(
        &cli_ns,
        "10.78.0.10:80",
        b"POST / HTTP/1.1\r\nHost: www.allowed.test\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n",
    );
    let r = wait_for(&data, "smuggling", |r| r.reason == "AmbiguousRequest");
    assert_eq!(
        (
            r.action.as_str(),
            r.decided_by.as_deref(),
            r.name.as_deref()
        ),
        ("Deny", Some("request-check"), Some("www.allowed.test"))
    );

    // A port only a network rule allows: decided at L4, no name needed.
    let (code, out, err) = in_ns(
        &cli_ns,
        &["curl", "-sS", "--max-time", "10", "http://10.78.0.10:2222/"],
    );
    assert_eq!(code, 0, "{out}{err}");
    let r = wait_for(&data, "l4", |r| r.destination_port == 2222);
    assert_eq!(
        (r.layer.as_str(), r.rule_path().as_deref()),
        ("FirewallNetwork", Some("l4/raw-tcp"))
    );
}
