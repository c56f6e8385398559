//! Learning mode end to end (spec PAL-5.4, issue 19 "Done when"): real curl through a real
//! `palisade gateway` to local HTTP and HTTPS servers produces denials; `palisade learn` proposes
//! rules; the network with the proposals merged validates, `trace` allows exactly the observed
//! flows and still denies siblings, other ports and names that were not observed; a gateway on
//! the merged network lets the same requests through. The new-denied-name counter counts a
//! name once however often it is denied.
//!
//! The workload subnet is 127.0.0.0/24 (curl's source) and the upstream servers listen on
//! 127.0.9.1, outside the virtual network, so `trace` routes them through the firewall as the
//! gateway sees them.

mod common;

use common::{free_port, http_server_on, palisade, Killed};
use serde_json::Value;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const UPSTREAM: &str = "127.0.9.1";

/// `openssl s_server -www` on the upstream address with a throwaway certificate.
fn https_upstream(dir: &Path) -> (Killed, u16) {
    let (key, cert) = (dir.join("key.pem"), dir.join("cert.pem"));
    let ok = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=upstream",
        ])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .stderr(Stdio::null())
        .status()
        .expect("openssl")
        .success();
    assert!(ok, "openssl req failed");
    let port = TcpListener::bind((UPSTREAM, 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new("openssl")
        .args([
            "s_server",
            "-quiet",
            "-www",
            "-accept",
            &format!("{UPSTREAM}:{port}"),
        ])
        .arg("-cert")
        .arg(&cert)
        .arg("-key")
        .arg(&key)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("openssl s_server");
    wait_listening(format!("{UPSTREAM}:{port}").parse().unwrap());
    (Killed(child), port)
}

fn wait_listening(addr: SocketAddr) {
    let start = Instant::now();
    while TcpStream::connect(addr).is_err() {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "{addr} did not start"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

const NAMES: [&str; 4] = [
    "a.svc.test",
    "b.svc.test",
    "c.svc.test",
    "secure.other.test",
];

fn resolve_args() -> Vec<String> {
    NAMES
        .iter()
        .chain(&["d.svc.test", "www.allowed.test"])
        .flat_map(|n| ["--resolve".to_string(), format!("{n}={UPSTREAM}")])
        .collect()
}

struct Gateway {
    _child: Killed,
    proxy: SocketAddr,
    admin: SocketAddr,
}

fn gateway(net: &Path, data: &Path, log: &Path) -> Gateway {
    let proxy: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let admin: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_palisade"))
        .args(["gateway", "-n", net.to_str().unwrap()])
        .args([
            "--listen",
            &proxy.to_string(),
            "--admin",
            &admin.to_string(),
        ])
        .args([
            "--data",
            data.to_str().unwrap(),
            "--no-watch",
            "--no-system-resolver",
        ])
        .args(resolve_args())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .expect("start palisade gateway");
    let child = Killed(child);
    wait_listening(proxy);
    wait_listening(admin);
    Gateway {
        _child: child,
        proxy,
        admin,
    }
}

/// curl through the explicit proxy: (HTTP status, CONNECT status).
fn curl(proxy: SocketAddr, url: &str) -> (String, String) {
    let o = Command::new("curl")
        .args([
            "-sk",
            "--max-time",
            "10",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code} %{http_connect}",
        ])
        .args(["-x", &format!("http://{proxy}"), url])
        .output()
        .expect("run curl");
    let out = String::from_utf8_lossy(&o.stdout).to_string();
    let (a, b) = out.split_once(' ').unwrap_or((&out, ""));
    (a.to_string(), b.to_string())
}

fn metrics(admin: SocketAddr) -> String {
    let mut s = TcpStream::connect(admin).unwrap();
    s.write_all(b"GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

fn denials(data: &Path) -> usize {
    let (_, out, _) = palisade(&[
        "logs",
        "--data",
        data.to_str().unwrap(),
        "--action",
        "deny",
        "--output",
        "json",
    ]);
    serde_json::from_str::<Value>(&out).map_or(0, |v| v.as_array().map_or(0, Vec::len))
}

/// `trace` on the merged network: the verdict and the deciding rule.
fn trace(net: &Path, to: &str, port: u16, app: &str) -> (String, String) {
    let mut args = vec![
        "trace",
        "-n",
        net.to_str().unwrap(),
        "--from",
        "127.0.0.1",
        "--to",
        to,
    ];
    let port = port.to_string();
    args.extend(["--port", &port, "--app-protocol", app, "--output", "json"]);
    let bind = format!("{to}={UPSTREAM}");
    args.extend(["--resolve", &bind]);
    let (code, out, err) = palisade(&args);
    assert!(
        code == 0 || code == 3,
        "trace {to}:{port}: exit {code}: {err}"
    );
    let v: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    (
        v["verdict"].as_str().unwrap_or_default().to_string(),
        v["decided_by"]["rule"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
    )
}

#[test]
fn pal_5_4_learned_rules_let_exactly_the_observed_traffic_through() {
    let dir = tempfile::tempdir().unwrap();
    let http = http_server_on(UPSTREAM).port();
    let (_tls, https) = https_upstream(dir.path());
    let net = dir.path().join("network.yaml");
    std::fs::write(
        &net,
        format!(
            r#"apiVersion: palisade/v1
virtualNetworks:
  - name: lab
    addressSpace: [127.0.0.0/24, 10.0.0.0/16]
    subnets:
      - {{name: app, addressPrefix: 127.0.0.0/24, routeTable: egress}}
      - {{name: AzureFirewallSubnet, addressPrefix: 10.0.2.0/24}}
routeTables:
  - name: egress
    routes: [{{name: to-firewall, addressPrefix: 0.0.0.0/0, nextHopType: VirtualAppliance, nextHopIpAddress: 10.0.2.4}}]
azureFirewalls:
  - name: fw
    ipConfigurations: [{{name: c, privateIPAddress: 10.0.2.4, subnet: lab/AzureFirewallSubnet}}]
    applicationRuleCollections:
      - name: allow-apps
        priority: 200
        action: {{type: Allow}}
        rules: [{{name: web, sourceAddresses: ['*'], protocols: ['Http:{http}'], targetFqdns: [www.allowed.test]}}]
"#
        ),
    )
    .unwrap();
    let data = dir.path().join("data");
    let gw = gateway(&net, &data, &dir.path().join("gateway.log"));
    let (p, s) = (gw.proxy, https);

    // Denials: two HTTP names (one of them twice), one HTTPS name; one allowed request.
    assert_eq!(
        curl(p, &format!("http://www.allowed.test:{http}/")).0,
        "200"
    );
    for url in [
        format!("http://a.svc.test:{http}/"),
        format!("http://a.svc.test:{http}/again"),
        format!("http://b.svc.test:{http}/"),
        format!("https://secure.other.test:{s}/"),
    ] {
        let (code, connect) = curl(p, &url);
        assert!(
            code != "200" && connect != "200",
            "{url} passed before learning: {code} {connect}"
        );
    }
    let start = Instant::now();
    while denials(&data) < 4 {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "denials not recorded"
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    // The alert: a counter per new name, not per denial (a.svc.test was denied twice).
    let m = metrics(gw.admin);
    assert!(
        m.contains("palisade_gateway_new_denied_names_total{scope=\"app\"} 3"),
        "{m}"
    );
    let log = std::fs::read_to_string(dir.path().join("gateway.log")).unwrap();
    assert_eq!(
        log.matches("new denied name from app: a.svc.test").count(),
        1,
        "{log}"
    );

    // Learn.
    let diff = dir.path().join("learned.yaml");
    let merged = dir.path().join("merged.yaml");
    let mut args: Vec<String> = [
        "learn",
        "-n",
        net.to_str().unwrap(),
        "--scope",
        "app",
        "--since",
        "1h",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.extend(["--flow-log".into(), data.to_str().unwrap().into()]);
    args.extend([
        "--catalog".into(),
        "../shared/catalogs/dependencies/app-service-environment.json".into(),
    ]);
    args.extend(["--write".into(), diff.to_str().unwrap().into()]);
    args.extend(["--write-network".into(), merged.to_str().unwrap().into()]);
    args.extend(resolve_args());
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    let (code, _, err) = palisade(&argv);
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains("3 proposal(s) for subnet app from 4 denial(s)"),
        "{err}"
    );
    let text = std::fs::read_to_string(&diff).unwrap();
    for rule in [
        format!("learn-http-{http}-a-svc-test"),
        format!("learn-http-{http}-b-svc-test"),
        format!("learn-https-{s}-secure-other-test"),
    ] {
        assert!(text.contains(&rule), "{rule} missing:\n{text}");
    }
    assert!(
        text.contains("seen 2 time(s)"),
        "a.svc.test's evidence:\n{text}"
    );
    let (code, out, err) = palisade(&["validate", merged.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}{err}");

    // trace on the merged network: the observed flows are allowed by the learned rules ...
    for (to, port, app) in [
        ("a.svc.test", http, "http"),
        ("b.svc.test", http, "http"),
        ("secure.other.test", s, "https"),
    ] {
        let (verdict, rule) = trace(&merged, to, port, app);
        assert_eq!(verdict, "Allow", "{to}:{port}");
        assert!(
            rule.starts_with("learned-application/learn-"),
            "{to}:{port} allowed by {rule}"
        );
        assert_eq!(
            trace(&net, to, port, app).0,
            "Deny",
            "{to}:{port} before learning"
        );
    }
    // ... and nothing broader: a sibling name, another port, another protocol.
    for (to, port, app) in [
        ("c.svc.test", http, "http"),
        ("d.svc.test", http, "http"),
        ("a.svc.test", s, "https"),
        ("a.svc.test", http + 1, "http"),
        ("secure.other.test", s, "http"),
    ] {
        assert_eq!(
            trace(&merged, to, port, app).0,
            "Deny",
            "{to}:{port} {app} after learning"
        );
    }

    // A gateway on the merged network lets the same requests through.
    drop(gw);
    let gw = gateway(
        &merged,
        &dir.path().join("data2"),
        &dir.path().join("gateway2.log"),
    );
    assert_eq!(
        curl(gw.proxy, &format!("http://a.svc.test:{http}/")).0,
        "200"
    );
    assert_eq!(
        curl(gw.proxy, &format!("http://b.svc.test:{http}/")).0,
        "200"
    );
    assert_eq!(
        curl(gw.proxy, &format!("https://secure.other.test:{s}/")).0,
        "200"
    );
    let (code, connect) = curl(gw.proxy, &format!("http://c.svc.test:{http}/"));
    assert!(
        code != "200" && connect != "200",
        "a sibling passed: {code}"
    );
}
