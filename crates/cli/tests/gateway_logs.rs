//! `palisade logs` as a user runs it, against flow records written by a real `palisade gateway`
//! process: curl through the explicit proxy to a local HTTP server (one allowed request, two
//! denied), then the text and JSON outputs, `--action deny`, `--since`.

mod common;

use common::{free_port, http_server, palisade, start_gateway, through};
use serde_json::Value;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant, SystemTime};

fn json_records(data: &Path, extra: &[&str]) -> Vec<Value> {
    let mut args = vec!["logs", "--data", data.to_str().unwrap(), "--output", "json"];
    args.extend_from_slice(extra);
    let (code, out, err) = palisade(&args);
    assert_eq!(code, 0, "{err}");
    serde_json::from_str::<Value>(&out)
        .unwrap_or_else(|e| panic!("{e}: {out}"))
        .as_array()
        .unwrap()
        .clone()
}

#[test]
fn logs_reads_what_a_real_gateway_wrote() {
    let dir: PathBuf =
        std::env::temp_dir().join(format!("palisade-logs-cli-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let http = http_server();
    let net = dir.join("network.yaml");
    std::fs::write(
        &net,
        format!(
            r#"apiVersion: palisade/v1
azureFirewalls:
  - name: fw
    ipConfigurations: [{{name: c, privateIPAddress: 10.0.1.4}}]
    applicationRuleCollections:
      - name: deny-apps
        priority: 100
        action: {{type: Deny}}
        rules: [{{name: blocked, sourceAddresses: ['*'], protocols: ['Http:{p}'], targetFqdns: [blocked.test]}}]
      - name: allow-apps
        priority: 200
        action: {{type: Allow}}
        rules: [{{name: web, sourceAddresses: ['*'], protocols: ['Http:{p}'], targetFqdns: [www.allowed.test]}}]
"#,
            p = http.port()
        ),
    )
    .unwrap();
    let data = dir.join("data");
    let proxy: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let _gw = start_gateway(
        net.to_str().unwrap(),
        proxy,
        &data,
        &[
            "--instance",
            "cli-logs",
            "--resolve",
            "www.allowed.test=127.0.0.1",
            "--resolve",
            "blocked.test=127.0.0.1",
            "--resolve",
            "other.test=127.0.0.1",
        ],
        Stdio::null(),
    );

    let p = http.port();
    assert_eq!(
        through(proxy, &format!("http://www.allowed.test:{p}/")),
        "200"
    );
    // Wait for the allow record (written when its connection ends), then mark the time.
    let start = Instant::now();
    while json_records(&data, &[]).is_empty() {
        assert!(start.elapsed() < Duration::from_secs(10), "no allow record");
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(1100));
    let mid = palisade_flowlog::format_time(SystemTime::now());
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(through(proxy, &format!("http://blocked.test:{p}/")), "470");
    assert_eq!(through(proxy, &format!("http://other.test:{p}/")), "470");

    // JSON: all three, newest first, with the deciding rules.
    let all = json_records(&data, &[]);
    assert_eq!(all.len(), 3, "{all:?}");
    let names: Vec<&str> = all.iter().map(|r| r["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["other.test", "blocked.test", "www.allowed.test"]);
    assert_eq!(all[2]["action"], "Allow");
    assert_eq!(all[2]["rule_collection"], "allow-apps");
    assert_eq!(all[2]["rule"], "web");
    assert_eq!(all[2]["instance"], "cli-logs");
    assert!(all[2]["bytes_received"].as_u64().unwrap() > 0);
    assert_eq!(all[1]["action"], "Deny");
    assert_eq!(all[1]["rule"], "blocked");
    assert_eq!(all[0]["reason"], "DefaultAction");

    // --action deny
    let deny = json_records(&data, &["--action", "deny"]);
    assert_eq!(deny.len(), 2);
    assert!(deny.iter().all(|r| r["action"] == "Deny"));

    // --since: a duration takes all, the time between the requests only the later two, a
    // future time nothing.
    assert_eq!(json_records(&data, &["--since", "1h"]).len(), 3);
    let later = json_records(&data, &["--since", &mid]);
    assert_eq!(later.len(), 2, "since {mid}: {later:?}");
    assert!(later.iter().all(|r| r["action"] == "Deny"));
    assert!(json_records(&data, &["--since", "2099-01-01T00:00:00Z"]).is_empty());
    let (code, _, err) = palisade(&["logs", "--data", data.to_str().unwrap(), "--since", "soon"]);
    assert_ne!(code, 0);
    assert!(err.contains("--since"), "{err}");

    // Text: one line per record, newest first, with action, name, rule and reason.
    let (code, out, err) = palisade(&["logs", "--data", data.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 3, "{out}");
    assert!(
        lines[0].contains("Deny") && lines[0].contains("other.test"),
        "{out}"
    );
    // No rule decided the default deny: the rule column says what did.
    assert!(
        lines[0].contains("rule=default") && lines[0].contains("reason=DefaultAction"),
        "{out}"
    );
    assert!(lines[1].contains("rule=deny-apps/blocked"), "{out}");
    assert!(lines[2].contains("Allow") && lines[2].contains("www.allowed.test"));
    assert!(lines[2].contains("rule=allow-apps/web") && lines[2].contains("received="));
    let (code, out, _) = palisade(&[
        "logs",
        "--data",
        data.to_str().unwrap(),
        "--action",
        "deny",
        "--since",
        "10m",
    ]);
    assert_eq!(code, 0);
    assert_eq!(out.lines().count(), 2, "{out}");
    assert!(!out.contains("Allow"));
    // `--rule default` finds the default deny; its JSON says `decided_by: default`.
    let (code, out, err) = palisade(&[
        "logs",
        "--data",
        data.to_str().unwrap(),
        "--rule",
        "default",
        "--output",
        "json",
    ]);
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let recs = v.as_array().unwrap();
    assert_eq!(recs.len(), 1, "{out}");
    assert_eq!(recs[0]["decided_by"], "default");
    assert_eq!(recs[0]["name"], "other.test");
    assert!(recs[0]["rule"].is_null());
    // Nothing matches: a note on stderr, no lines.
    let (code, out, err) = palisade(&[
        "logs",
        "--data",
        data.to_str().unwrap(),
        "--since",
        "2099-01-01T00:00:00Z",
    ]);
    assert_eq!(code, 0);
    assert!(out.is_empty());
    assert!(err.contains("no matching flow records"), "{err}");
    drop(_gw);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A real `palisade gateway` with `--handshake-timeout 1`: 60 clients that never finish their
/// request head get 60 `HandshakeTimeout` records, but its stderr gets a bounded number of
/// lines about them. `--tunnel-sni` is accepted.
#[test]
fn handshake_timeouts_are_recorded_each_and_logged_at_a_bounded_rate() {
    use std::io::{Read, Write};
    let dir: PathBuf =
        std::env::temp_dir().join(format!("palisade-timeouts-cli-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let net = dir.join("network.yaml");
    std::fs::write(
        &net,
        "apiVersion: palisade/v1\nazureFirewalls:\n  - name: fw\n    ipConfigurations: [{name: c, privateIPAddress: 10.0.1.4}]\n",
    )
    .unwrap();
    let data = dir.join("data");
    let stderr_path = dir.join("stderr");
    let proxy: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let gw = start_gateway(
        net.to_str().unwrap(),
        proxy,
        &data,
        &["--handshake-timeout", "1", "--tunnel-sni", "match"],
        Stdio::from(std::fs::File::create(&stderr_path).unwrap()),
    );
    const N: usize = 60;
    let clients: Vec<_> = (0..N)
        .map(|_| {
            std::thread::spawn(move || {
                let mut s = TcpStream::connect(proxy).unwrap();
                s.write_all(b"GET http://www.allowed.test/ HTTP/1.1\r\nX-Slow: ")
                    .unwrap();
                s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
                let mut out = String::new();
                let _ = s.read_to_string(&mut out);
                out
            })
        })
        .collect();
    for c in clients {
        let out = c.join().unwrap();
        assert!(out.starts_with("HTTP/1.1 408"), "{out}");
    }
    let records = json_records(&data, &["--rule", "handshake-check"]);
    assert_eq!(records.len(), N);
    assert!(records.iter().all(|r| r["reason"] == "HandshakeTimeout"));
    drop(gw);
    let stderr = std::fs::read_to_string(&stderr_path).unwrap();
    let lines = stderr
        .lines()
        .filter(|l| l.contains("HandshakeTimeout"))
        .count();
    assert!((1..=11).contains(&lines), "{lines} lines:\n{stderr}");
    let _ = std::fs::remove_dir_all(&dir);
}
