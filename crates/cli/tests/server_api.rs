//! `palisade server` driven over real HTTP on loopback: its diagnostics against the CLI's
//! `--output json` answers on every flow of every `../shared/scenarios/*/flows.yaml`, and the
//! resource API (ETags, refused changes, roles, versions, audit) against its own diagnostics.

mod common;

use common::{palisade, root};
use palisade_server::auth::sha256_hex;
use reqwest::{Client, Method, StatusCode};
use serde_json::{json, Value};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

const ADMIN: &str = "admin-token-for-tests";
const READER: &str = "reader-token-for-tests";

/// A `palisade server` child process on an ephemeral loopback port; killed on drop.
struct Server {
    child: Child,
    base: String,
    client: Client,
}

impl Server {
    fn start(network: &str, data: &Path) -> Server {
        let tokens = data.join("tokens.txt");
        std::fs::write(
            &tokens,
            format!(
                "ci admin {}\nviewer reader {}\n",
                sha256_hex(ADMIN),
                sha256_hex(READER)
            ),
        )
        .unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_palisade"))
            .args(["server", "--network", network, "--listen", "127.0.0.1:0"])
            .arg("--data")
            .arg(data)
            .arg("--token-file")
            .arg(&tokens)
            .current_dir(root())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start palisade server");
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let base = loop {
            let line = lines
                .next()
                .expect("the server ended before listening")
                .unwrap();
            if let Some(rest) = line.strip_prefix("listening on ") {
                break rest.split_whitespace().next().unwrap().to_string();
            }
        };
        // Keep draining stderr so the server never blocks on a full pipe.
        std::thread::spawn(move || lines.for_each(drop));
        Server {
            child,
            base,
            client: Client::new(),
        }
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        if_match: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, reqwest::header::HeaderMap, Value) {
        let mut r = self.client.request(method, format!("{}{path}", self.base));
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        if let Some(m) = if_match {
            r = r.header("If-Match", m);
        }
        if let Some(b) = body {
            r = r.json(&b);
        }
        let resp = r.send().await.expect("request");
        let status = resp.status();
        let headers = resp.headers().clone();
        let text = resp.text().await.unwrap();
        (
            status,
            headers,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    async fn get(&self, path: &str) -> Value {
        let (s, _, v) = self.call(Method::GET, path, Some(READER), None, None).await;
        assert_eq!(s, StatusCode::OK, "GET {path}: {v}");
        v
    }

    async fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        let (s, _, v) = self
            .call(Method::POST, path, Some(READER), None, Some(body))
            .await;
        (s, v)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn cli_json(args: &[&str]) -> Option<Value> {
    let (code, out, err) = palisade(args);
    assert_ne!(code, -1, "{err}");
    serde_json::from_str(&out).ok()
}

/// The trace as compared: the snapshot id hashes where the model was read from (file and
/// pointer of every resource), which differs between the files and the stored network.
fn without_snapshot(mut v: Value) -> Value {
    if let Some(o) = v.as_object_mut() {
        o.remove("snapshot");
    }
    v
}

fn scenarios() -> Vec<String> {
    let mut out: Vec<String> = std::fs::read_dir(root().join("../shared/scenarios"))
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.path().join("flows.yaml").exists())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    out.sort();
    out
}

fn s(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// DIAG-2/3/4/5/7: the server's answers equal the CLI's on every scenario flow, NIC and subnet.
#[tokio::test(flavor = "multi_thread")]
async fn diagnostics_equal_the_cli_on_every_scenario_flow() {
    let mut compared_nsg_layers = 0;
    let mut flows_checked = 0;
    for scenario in scenarios() {
        let net = format!("../shared/scenarios/{scenario}/network.json");
        let data = tempfile::tempdir().unwrap();
        let server = Server::start(&net, data.path());
        let text = std::fs::read_to_string(
            root().join(format!("../shared/scenarios/{scenario}/flows.yaml")),
        )
        .unwrap();
        let flows: Value = serde_saphyr::from_str(&text).unwrap();
        for f in flows["flows"].as_array().unwrap() {
            let name = format!("{scenario}/{}", s(&f["name"]));
            let (src, dst) = (s(&f["source"]), s(&f["destination"]));
            let proto = s(&f["protocol"]);
            let sport = f["source_port"].as_u64().unwrap_or(0).to_string();
            let dport = f["destination_port"].as_u64().unwrap_or(0).to_string();
            let reply = !f["reply_to"].is_null();
            // trace (DIAG-7)
            let mut args = vec![
                "trace",
                "--network",
                &net,
                "--from",
                &src,
                "--to",
                &dst,
                "--port",
                &dport,
                "--source-port",
                &sport,
                "--output",
                "json",
            ];
            let lower = proto.to_ascii_lowercase();
            args.extend(["--protocol", &lower]);
            let host = f["host"].as_str().map(str::to_string);
            if let Some(h) = &host {
                args.extend(["--host", h]);
            }
            if reply {
                args.push("--reply");
            }
            let cli = cli_json(&args).unwrap_or_else(|| panic!("{name}: CLI trace gave no JSON"));
            let (status, api) = server
                .post(
                    "/api/diagnostics/trace",
                    json!({"source": src, "destination": dst, "protocol": proto,
                           "sourcePort": sport.parse::<u16>().unwrap(), "destinationPort": dport.parse::<u16>().unwrap(),
                           "host": host, "reply": reply}),
                )
                .await;
            assert_eq!(status, StatusCode::OK, "{name}: {api}");
            assert_eq!(
                without_snapshot(api),
                without_snapshot(cli.clone()),
                "{name}: trace"
            );
            // next hop (DIAG-3): the same answer, or both refuse.
            let cli_nh = cli_json(&[
                "next-hop",
                "--network",
                &net,
                "--from",
                &src,
                "--to",
                &dst,
                "--output",
                "json",
            ]);
            let (status, api_nh) = server
                .post(
                    "/api/diagnostics/nextHop",
                    json!({"sourceIPAddress": src, "destinationIPAddress": dst}),
                )
                .await;
            match cli_nh {
                Some(c) => assert_eq!((status, api_nh), (StatusCode::OK, c), "{name}: next hop"),
                None => assert_eq!(
                    status,
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "{name}: next hop {api_nh}"
                ),
            }
            // IP flow verify (DIAG-2): the workload's NSG layers the trace crossed decide alike.
            if reply {
                continue;
            }
            flows_checked += 1;
            let direction = if s(&f["direction"]) == "inbound" {
                "Inbound"
            } else {
                "Outbound"
            };
            let (local, lport, remote, rport) = if direction == "Inbound" {
                (&dst, &dport, &src, &sport)
            } else {
                (&src, &sport, &dst, &dport)
            };
            let (status, v) = server
                .post(
                    "/api/diagnostics/ipFlowVerify",
                    json!({"direction": direction, "protocol": proto, "localIPAddress": local,
                           "localPort": lport, "remoteIPAddress": remote, "remotePort": rport}),
                )
                .await;
            if status != StatusCode::OK {
                // Only an address outside every subnet and NIC has no NSGs to verify.
                assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{name}: {v}");
                continue;
            }
            let crossed: Vec<(String, String, String, String)> = cli["hops"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|h| {
                    s(&h["layer"]).ends_with("Nsg")
                        && s(&h["direction"]) == direction
                        && h["reason"] == "RuleMatched"
                })
                .map(|h| {
                    (
                        s(&h["layer"]),
                        s(&h["resource"]),
                        s(&h["rule"]),
                        s(&h["result"]),
                    )
                })
                .collect();
            let layers: Vec<(String, String, String, String)> = v["layers"]
                .as_array()
                .unwrap()
                .iter()
                .map(|l| {
                    (
                        s(&l["layer"]),
                        s(&l["networkSecurityGroup"]),
                        s(&l["ruleName"]),
                        s(&l["access"]),
                    )
                })
                .collect();
            assert!(
                layers.starts_with(&crossed),
                "{name}: ipFlowVerify layers {layers:?}, trace crossed {crossed:?}"
            );
            compared_nsg_layers += crossed.len();
            let denied = layers.iter().find(|l| l.3 == "Deny");
            assert_eq!(
                v["access"],
                if denied.is_some() { "Deny" } else { "Allow" },
                "{name}: {v}"
            );
            if let Some(d) = denied {
                assert_eq!(v["ruleName"], d.2.as_str(), "{name}");
            }
        }
        // Effective rules (DIAG-4) and routes (DIAG-5) of every NIC and subnet.
        let nics = server.get("/api/resources/networkInterfaces").await;
        for nic in nics["value"].as_array().unwrap() {
            let n = s(&nic["name"]);
            for (cmd, route) in [
                ("effective-rules", "effectiveSecurityRules"),
                ("effective-routes", "effectiveRoutes"),
            ] {
                let cli = cli_json(&[cmd, "--network", &net, "--nic", &n, "--output", "json"]);
                let (status, _, api) = server
                    .call(
                        Method::GET,
                        &format!("/api/diagnostics/{route}?networkInterface={n}"),
                        Some(READER),
                        None,
                        None,
                    )
                    .await;
                match cli {
                    Some(c) => assert_eq!(
                        (status, api),
                        (StatusCode::OK, c),
                        "{scenario} {cmd} --nic {n}"
                    ),
                    None => assert_eq!(
                        status,
                        StatusCode::UNPROCESSABLE_ENTITY,
                        "{scenario} {cmd} --nic {n}"
                    ),
                }
            }
        }
        let vnets = server.get("/api/resources/virtualNetworks").await;
        for vnet in vnets["value"].as_array().unwrap() {
            for sub in vnet["properties"]["subnets"]
                .as_array()
                .into_iter()
                .flatten()
            {
                let n = s(&sub["name"]);
                for (cmd, route) in [
                    ("effective-rules", "effectiveSecurityRules"),
                    ("effective-routes", "effectiveRoutes"),
                ] {
                    let c = cli_json(&[cmd, "--network", &net, "--subnet", &n, "--output", "json"])
                        .unwrap_or_else(|| panic!("{scenario} {cmd} --subnet {n}"));
                    let api = server
                        .get(&format!("/api/diagnostics/{route}?subnet={n}"))
                        .await;
                    assert_eq!(api, c, "{scenario} {cmd} --subnet {n}");
                }
            }
        }
    }
    assert!(flows_checked > 50, "{flows_checked} flows verified");
    assert!(
        compared_nsg_layers > 30,
        "only {compared_nsg_layers} NSG layers compared"
    );
}
