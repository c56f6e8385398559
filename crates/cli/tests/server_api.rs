//! `palisade server` driven over real HTTP on loopback: its diagnostics against the CLI's
//! `--output json` answers on every flow of every `../shared/scenarios/*/flows.yaml`, and the
//! resource API (ETags, refused changes, roles, versions, audit) against its own diagnostics.

mod common;

use common::{palisade, root, Killed};
use palisade_server::auth::is_admin_operation;
use reqwest::{Client, Method, StatusCode};
use serde_json::{json, Value};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};

const ADMIN: &str = "admin-token-for-tests";
const READER: &str = "reader-token-for-tests";

/// A `palisade server` child process on an ephemeral loopback port; killed on drop.
struct Server {
    _process: Killed,
    base: String,
    /// The admin listener: changes and the audit log go there.
    admin: String,
    client: Client,
}

impl Server {
    fn start(network: &str, data: &Path) -> Server {
        Server::start_with(network, data, &[])
    }

    fn start_with(network: &str, data: &Path, extra: &[&str]) -> Server {
        let tokens = common::tokens_file(data, ADMIN, READER);
        let s = common::start_server(network, data, &tokens, extra);
        Server {
            _process: s.process,
            base: s.base,
            admin: s.admin,
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
        let base = if is_admin_operation(&method, path) {
            &self.admin
        } else {
            &self.base
        };
        let mut r = self.client.request(method, format!("{base}{path}"));
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

const RULE: &str = "/api/resources/networkSecurityGroups/web-vm1-nic-nsg/securityRules/Allow-HTTP";

/// layered-nsg's `internet-http-to-web-vm1`: (verdict, deciding rule).
async fn http_to_web_vm1(server: &Server) -> (String, String) {
    let (status, t) = server
        .post(
            "/api/diagnostics/trace",
            json!({"source": "203.0.113.20", "destination": "10.2.1.4", "destinationPort": 80, "sourcePort": 51001}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{t}");
    (s(&t["verdict"]), s(&t["decided_by"]["rule"]))
}

fn http_rule(source: &str) -> Value {
    json!({"name": "Allow-HTTP", "properties": {"protocol": "Tcp", "sourcePortRange": "*", "destinationPortRange": "80",
        "sourceAddressPrefix": source, "destinationAddressPrefix": "*", "access": "Allow", "priority": 200, "direction": "Inbound"}})
}

fn etag(h: &reqwest::header::HeaderMap) -> String {
    h.get("etag").expect("ETag").to_str().unwrap().to_string()
}

/// PAL-5.5 and the resource API: a refused change leaves the running policy as it was; ETags
/// guard every change; readers cannot change; every version and attempt is kept.
#[tokio::test(flavor = "multi_thread")]
async fn resource_changes_are_checked_versioned_and_audited() {
    let net = "../shared/scenarios/layered-nsg/network.json";
    let data = tempfile::tempdir().unwrap();
    let server = Server::start(net, data.path());
    let denied = ("Deny".to_string(), "Deny-All-Other".to_string());
    assert_eq!(http_to_web_vm1(&server).await, denied);

    // Access: no token, a bad token, a reader.
    let (st, h, _) = server
        .call(Method::PUT, RULE, None, None, Some(http_rule("*")))
        .await;
    assert_eq!(st, StatusCode::UNAUTHORIZED);
    assert_eq!(h["www-authenticate"], "Bearer realm=\"palisade\"");
    let (st, h, _) = server
        .call(Method::PUT, RULE, Some("guess"), None, Some(http_rule("*")))
        .await;
    assert_eq!(st, StatusCode::UNAUTHORIZED);
    assert!(h["www-authenticate"]
        .to_str()
        .unwrap()
        .contains("invalid_token"));
    let (st, _, p) = server
        .call(Method::PUT, RULE, Some(READER), None, Some(http_rule("*")))
        .await;
    assert_eq!(st, StatusCode::FORBIDDEN, "{p}");

    // A bad rule: 422 with the located messages of `palisade validate`, nothing applied.
    let (st, h, p) = server
        .call(
            Method::PUT,
            RULE,
            Some(ADMIN),
            None,
            Some(http_rule("10.0.0.0/33")),
        )
        .await;
    assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY, "{p}");
    assert_eq!(h["content-type"], "application/problem+json");
    let errors = p["errors"].as_array().unwrap();
    let bad = errors
        .iter()
        .find(|e| e["found"] == "10.0.0.0/33")
        .unwrap_or_else(|| panic!("no error names the value: {p}"));
    assert_eq!(bad["location"], "body");
    assert_eq!(bad["pointer"], "/properties/sourceAddressPrefix");
    assert!(s(&bad["resource"]).contains("Allow-HTTP"), "{bad}");
    assert!(!s(&bad["expected"]).is_empty(), "{bad}");
    let mut resources = server.get("/api/network").await["resources"].clone();
    let nsg = resources
        .as_array_mut()
        .unwrap()
        .iter_mut()
        .find(|r| r["name"] == "web-vm1-nic-nsg")
        .unwrap();
    nsg["properties"]["securityRules"]
        .as_array_mut()
        .unwrap()
        .push(http_rule("10.0.0.0/33"));
    let file = data.path().join("network.json");
    std::fs::write(&file, resources.to_string()).unwrap();
    let validate = cli_json(&["validate", file.to_str().unwrap(), "--output", "json"]).unwrap();
    let key = |e: &Value| {
        ["message", "resource", "field", "found", "expected"]
            .map(|k| s(&e[k]))
            .join(" | ")
    };
    let mut from_cli: Vec<String> = validate["diagnostics"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["severity"] == "Error")
        .map(key)
        .collect();
    let mut from_api: Vec<String> = errors.iter().map(key).collect();
    from_cli.sort();
    from_api.sort();
    assert_eq!(from_api, from_cli);
    assert_eq!(http_to_web_vm1(&server).await, denied);
    assert_eq!(
        server.get("/api/versions").await.as_array().unwrap().len(),
        1
    );

    // A good rule is created, compiled and enforced.
    let (st, h, v) = server
        .call(Method::PUT, RULE, Some(ADMIN), None, Some(http_rule("*")))
        .await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    assert_eq!(h["palisade-version"], "2");
    let created = etag(&h);
    assert_eq!(
        http_to_web_vm1(&server).await,
        ("Allow".into(), "Allow-HTTP".into())
    );
    let (_, h, got) = server
        .call(Method::GET, RULE, Some(READER), None, None)
        .await;
    assert_eq!((etag(&h), got), (created.clone(), v));

    // Optimistic concurrency: 428 without If-Match, 412 with a stale ETag.
    let (st, _, p) = server
        .call(Method::PUT, RULE, Some(ADMIN), None, Some(http_rule("*")))
        .await;
    assert_eq!(st, StatusCode::PRECONDITION_REQUIRED, "{p}");
    let (st, _, p) = server
        .call(
            Method::PUT,
            RULE,
            Some(ADMIN),
            Some("\"stale\""),
            Some(http_rule("*")),
        )
        .await;
    assert_eq!(st, StatusCode::PRECONDITION_FAILED, "{p}");
    let patch = json!({"properties": {"access": "Deny"}});
    let (st, h, v) = server
        .call(
            Method::PATCH,
            RULE,
            Some(ADMIN),
            Some(&created),
            Some(patch),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v["properties"]["access"], "Deny");
    assert_eq!(v["properties"]["priority"], 200);
    let patched = etag(&h);
    assert_ne!(patched, created);
    assert_eq!(
        http_to_web_vm1(&server).await,
        ("Deny".into(), "Allow-HTTP".into())
    );
    let (st, _, _) = server
        .call(Method::DELETE, RULE, Some(ADMIN), Some(&created), None)
        .await;
    assert_eq!(st, StatusCode::PRECONDITION_FAILED);
    let (st, _, v) = server
        .call(Method::DELETE, RULE, Some(ADMIN), Some(&patched), None)
        .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(http_to_web_vm1(&server).await, denied);
    let (st, _, _) = server
        .call(Method::GET, RULE, Some(READER), None, None)
        .await;
    assert_eq!(st, StatusCode::NOT_FOUND);

    // The URL names the resource; a body naming another is refused.
    let (st, _, p) = server
        .call(
            Method::PUT,
            "/api/resources/ipGroups/web-clients",
            Some(ADMIN),
            None,
            Some(json!({"name": "other", "properties": {"ipAddresses": ["198.51.100.0/24"]}})),
        )
        .await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "{p}");

    // Versions with author and change; rollback is a new version.
    let versions = server.get("/api/versions").await;
    let list: Vec<(u64, String, String)> = versions
        .as_array()
        .unwrap()
        .iter()
        .map(|v| {
            (
                v["version"].as_u64().unwrap(),
                s(&v["author"]),
                s(&v["change"]),
            )
        })
        .collect();
    let rule = "networkSecurityGroups/web-vm1-nic-nsg/securityRules/Allow-HTTP";
    assert_eq!(
        list,
        vec![
            (4, "ci".into(), format!("DELETE {rule}")),
            (3, "ci".into(), format!("PATCH {rule}")),
            (2, "ci".into(), format!("PUT {rule}")),
            (1, "seed".into(), format!("seed from {net}")),
        ]
    );
    let (st, _, _) = server
        .call(
            Method::POST,
            "/api/versions/2/rollback",
            Some(READER),
            None,
            None,
        )
        .await;
    assert_eq!(st, StatusCode::FORBIDDEN);
    let (st, _, v) = server
        .call(
            Method::POST,
            "/api/versions/2/rollback",
            Some(ADMIN),
            None,
            None,
        )
        .await;
    assert_eq!(
        (st, v["version"].as_u64()),
        (StatusCode::OK, Some(5)),
        "{v}"
    );
    assert_eq!(
        http_to_web_vm1(&server).await,
        ("Allow".into(), "Allow-HTTP".into())
    );
    let v2 = server.get("/api/versions/2").await;
    assert_eq!(
        v2["resources"],
        server.get("/api/network").await["resources"]
    );

    // The audit log names every attempt's token, refusals included; readers cannot read it.
    let (st, _, _) = server
        .call(Method::GET, "/api/audit", Some(READER), None, None)
        .await;
    assert_eq!(st, StatusCode::FORBIDDEN);
    let (_, _, audit) = server
        .call(Method::GET, "/api/audit", Some(ADMIN), None, None)
        .await;
    let seen: Vec<(String, u64)> = audit
        .as_array()
        .unwrap()
        .iter()
        .map(|a| (s(&a["actor"]), a["status"].as_u64().unwrap()))
        .collect();
    for want in [
        ("viewer", 403),
        ("ci", 422),
        ("ci", 428),
        ("ci", 412),
        ("ci", 200),
    ] {
        assert!(
            seen.contains(&(want.0.into(), want.1)),
            "{want:?} not in {seen:?}"
        );
    }

    // The store outlives the process: a restart serves the latest version.
    drop(server);
    let server = Server::start(net, data.path());
    assert_eq!(server.get("/healthz").await["version"], 5);
    assert_eq!(
        http_to_web_vm1(&server).await,
        ("Allow".into(), "Allow-HTTP".into())
    );
}

/// The OpenAPI document parses, lists every route, and the Swagger UI is served offline.
#[tokio::test(flavor = "multi_thread")]
async fn openapi_lists_every_route_and_swagger_ui_is_served() {
    let data = tempfile::tempdir().unwrap();
    let server = Server::start("examples/ase-egress-lockdown", data.path());
    let (st, _, doc) = server
        .call(Method::GET, "/openapi.json", None, None, None)
        .await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(doc["openapi"], "3.1.0");
    let paths = doc["paths"].as_object().unwrap();
    let want = [
        ("/api/diagnostics/ipFlowVerify", "post"),
        ("/api/diagnostics/nextHop", "post"),
        ("/api/diagnostics/trace", "post"),
        ("/api/diagnostics/effectiveSecurityRules", "get"),
        ("/api/diagnostics/effectiveRoutes", "get"),
        ("/api/network", "get"),
        ("/api/resources/{kind}", "get"),
        ("/api/versions", "get"),
        ("/api/versions/{version}", "get"),
        ("/api/versions/{version}/rollback", "post"),
        ("/api/audit", "get"),
        ("/api/flowLogs", "get"),
        ("/api/flowLogs/stream", "get"),
        ("/api/diagnostics/securityGroupView", "post"),
        ("/api/analyze/deps", "post"),
        ("/api/analyze/asymmetric", "post"),
        ("/api/analyze/reachability", "post"),
        ("/api/analyze/lint", "get"),
        ("/api/versions/{version}/diff/{other}", "get"),
        ("/api/learn", "get"),
    ];
    for (p, m) in want {
        assert!(paths[p][m].is_object(), "{m} {p} missing");
    }
    for p in [
        "/api/resources/{kind}/{name}",
        "/api/resources/{kind}/{name}/{child}/{child_name}",
    ] {
        for m in ["get", "put", "patch", "delete"] {
            assert!(paths[p][m].is_object(), "{m} {p} missing");
        }
    }
    assert_eq!(paths.len(), want.len() + 2, "{:?}", paths.keys());
    let r = server
        .client
        .get(format!("{}/docs/", server.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert!(r.text().await.unwrap().contains("swagger-ui"));
    let r = server
        .client
        .get(format!("{}/docs/swagger-ui-bundle.js", server.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
}

/// DIAG-11: the flow-log query answers as `palisade logs --output json` does, page by page.
#[tokio::test(flavor = "multi_thread")]
async fn flow_log_query_pages_what_palisade_logs_finds() {
    use palisade_flowlog::{format_time, FlowLog, Options};
    use std::time::{Duration, SystemTime};
    let flows = tempfile::tempdir().unwrap();
    let log = FlowLog::open(flows.path(), Options::default()).unwrap();
    let start = SystemTime::now() - Duration::from_secs(3600);
    let records = records(25, start, Duration::from_secs(120), |i| {
        if i % 2 == 0 {
            format!("h{i}.partner.example")
        } else {
            "evil.example".into()
        }
    });
    log.append_all(&records).unwrap();
    let data = tempfile::tempdir().unwrap();
    let dir = flows.path().to_str().unwrap();
    let server = Server::start_with(
        "examples/ase-egress-lockdown",
        data.path(),
        &["--flow-log", dir],
    );
    // PAL-5.3: `audit=true` and `shadowDiff=true` keep what `logs --audit` / `--shadow-diff` keep.
    for (query, flag, least) in [
        ("audit=true", "--audit", 5),
        ("shadowDiff=true", "--shadow-diff", 2),
        ("audit=true&shadowDiff=true", "--audit", 1),
    ] {
        let mut args = vec!["logs", "--data", dir, flag, "--limit", "1000"];
        if query.contains("shadowDiff") && flag == "--audit" {
            args.push("--shadow-diff");
        }
        let cli = cli_json(&[&args[..], &["--output", "json"]].concat()).unwrap();
        let api = server
            .get(&format!("/api/flowLogs?{query}&limit=1000"))
            .await;
        let n = cli.as_array().unwrap().len();
        assert!(n >= least && n < records.len(), "{query}: {n} records");
        assert_eq!(api["value"], cli, "{query}");
    }
    let since = format_time(start + Duration::from_secs(20 * 60));
    let filters: [(&str, &str); 6] = [
        ("action", "deny"),
        ("rule", "app/partner-apis"),
        ("rule", "default"),
        ("source", "10.0.0.11"),
        ("name", "*.partner.example"),
        ("since", &since),
    ];
    for (k, v) in filters {
        let cli = cli_json(&[
            "logs",
            "--data",
            dir,
            &format!("--{k}"),
            v,
            "--limit",
            "1000",
            "--output",
            "json",
        ])
        .unwrap();
        assert!(!cli.as_array().unwrap().is_empty(), "{k}={v} finds nothing");
        let mut pages = vec![];
        let mut offset = Some(0);
        while let Some(o) = offset {
            let page = server
                .get(&format!(
                    "/api/flowLogs?{k}={}&limit=4&offset={o}",
                    v.replace('+', "%2B")
                ))
                .await;
            pages.extend(page["value"].as_array().unwrap().iter().cloned());
            offset = page["nextOffset"].as_u64();
            assert!(pages.len() <= records.len(), "paging does not end");
        }
        assert_eq!(Value::Array(pages), cli, "{k}={v}");
    }
    let (st, _, p) = server
        .call(
            Method::GET,
            "/api/flowLogs?since=yesterday-ish",
            Some(READER),
            None,
            None,
        )
        .await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "{p}");
}

/// PAL-5.3 live: the stream takes `audit=true` and `shadowDiff=true` as the query does, and
/// sends exactly the records written after it started that the query would keep, in order.
#[tokio::test(flavor = "multi_thread")]
async fn flow_stream_filters_audit_and_shadow_diff() {
    use palisade_flowlog::{format_time, FlowLog, FlowRecord, Options};
    use std::time::{Duration, Instant, SystemTime};
    let flows = tempfile::tempdir().unwrap();
    let log = FlowLog::open(flows.path(), Options::default()).unwrap();
    let old = FlowRecord {
        time: format_time(SystemTime::now()),
        action: "Allow".into(),
        layer: "FirewallApplication".into(),
        reason: "RuleMatched".into(),
        ..Default::default()
    };
    // Written before the streams start: never sent, even though it is audited.
    log.append(&audited(1, old)).unwrap();
    let data = tempfile::tempdir().unwrap();
    let dir = flows.path().to_str().unwrap();
    let server = Server::start_with(
        "examples/ase-egress-lockdown",
        data.path(),
        &["--flow-log", dir],
    );
    let follow = |query: &str| {
        let (child, rx) =
            follow_stream(&format!("{}/api/flowLogs/stream?{query}", server.base), &[]);
        // The first comment says the tail has started.
        let first = rx
            .recv_timeout(Duration::from_secs(10))
            .expect("stream answered");
        assert!(first.starts_with(':'), "{query}: {first}");
        (child, rx)
    };
    let queries = [
        "audit=true",
        "shadowDiff=true",
        "audit=true&shadowDiff=true",
    ];
    let streams: Vec<_> = queries.iter().map(|q| follow(q)).collect();
    let records = records(40, SystemTime::now(), Duration::ZERO, |i| {
        format!("h{i}.partner.example")
    });
    log.append_all(&records).unwrap();
    for (query, (_child, rx)) in queries.iter().zip(&streams) {
        let keep = |r: &FlowRecord| {
            (!query.contains("audit") || r.audit)
                && (!query.contains("shadowDiff") || r.action == "ShadowDiff")
        };
        let want: Vec<String> = records
            .iter()
            .filter(|r| keep(r))
            .map(|r| r.name.clone().unwrap())
            .collect();
        assert!(!want.is_empty(), "{query}");
        let mut got = vec![];
        let deadline = Instant::now() + Duration::from_secs(15);
        while got.len() < want.len() {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = rx
                .recv_timeout(left)
                .unwrap_or_else(|_| panic!("{query}: {got:?} of {want:?}"));
            if let Some(data) = line.strip_prefix("data: ") {
                let v: Value = serde_json::from_str(data).unwrap();
                got.push(v["name"].as_str().unwrap_or("-").to_string());
            }
        }
        assert_eq!(got, want, "{query}");
        // Nothing else follows within a few polls.
        let extra = std::iter::from_fn(|| rx.recv_timeout(Duration::from_millis(1500)).ok())
            .find(|l| l.starts_with("data: "));
        assert_eq!(extra, None, "{query}");
    }
}

/// `curl -N` on a Server-Sent Events URL with the reader's token: the process (killed when
/// dropped) and its output line by line.
fn follow_stream(url: &str, extra: &[&str]) -> (Killed, std::sync::mpsc::Receiver<String>) {
    let mut child = Command::new("curl")
        .args(["-sS", "-N", "--max-time", "30"])
        .args(extra)
        .arg("-H")
        .arg(format!("Authorization: Bearer {READER}"))
        .arg(url)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("run curl -N");
    let out = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    (Killed(child), rx)
}

/// `n` application-rule records on port 443, the `i`th at `start + i * step` and named
/// `name(i)`: every third denied by default, the others allowed by `app/partner-apis`, from two
/// sources, and marked as [`audited`] says.
fn records(
    n: u32,
    start: std::time::SystemTime,
    step: std::time::Duration,
    name: impl Fn(u32) -> String,
) -> Vec<palisade_flowlog::FlowRecord> {
    (0..n)
        .map(|i| {
            let r = palisade_flowlog::FlowRecord {
                time: palisade_flowlog::format_time(start + step * i),
                action: if i % 3 == 0 { "Deny" } else { "Allow" }.into(),
                layer: "FirewallApplication".into(),
                protocol: "Tcp".into(),
                source_ip: Some(format!("10.0.0.{}", 10 + i % 2).parse().unwrap()),
                destination_port: 443,
                name: Some(name(i)),
                rule_collection: Some("app".into()),
                rule: (i % 3 != 0).then(|| "partner-apis".to_string()),
                decided_by: (i % 3 == 0).then(|| "default".to_string()),
                reason: "RuleMatched".into(),
                ..Default::default()
            };
            audited(i.into(), r)
        })
        .collect()
}

/// Every fifth record audited (PAL-5.3 audit rule matched, or PAL-5.4 observe), every seventh
/// a shadow policy's differing verdict: what `audit=true` / `shadowDiff=true` pick out.
fn audited(i: u64, mut r: palisade_flowlog::FlowRecord) -> palisade_flowlog::FlowRecord {
    if i % 5 == 1 {
        r.audit = true;
        r.audit_rules = vec![palisade_flowlog::AuditEntry {
            layer: "FirewallApplication".into(),
            rule: "app/audit-partners".into(),
            access: "Deny".into(),
        }];
    }
    if i % 7 == 2 {
        r.action = "ShadowDiff".into();
        r.shadow = Some(palisade_flowlog::ShadowDiff {
            live_action: "Allow".into(),
            live_rule: "app/partner-apis".into(),
            shadow_action: "Deny".into(),
            shadow_rule: "default".into(),
            shadow_snapshot: "shadow".into(),
        });
    }
    r
}

/// The running network written out as the resource list the server compiles, so the CLI reads
/// exactly what the server holds.
async fn network_file(server: &Server, dir: &Path, name: &str) -> String {
    let resources = server.get("/api/network").await["resources"].clone();
    let file = dir.join(name);
    std::fs::write(&file, resources.to_string()).unwrap();
    file.to_str().unwrap().to_string()
}

/// Lint findings name the file they were read from: the server's is `network`, the CLI's the path.
fn findings_without_file(mut v: Value) -> Value {
    for f in v["findings"].as_array_mut().into_iter().flatten() {
        f.as_object_mut().unwrap().remove("file");
    }
    v
}

/// DIAG-6/8/9, reachability and lint: the server's answers equal the CLI's `--output json` on
/// every scenario (same network, same library calls); security group view's effective rules
/// equal `effective-rules`, its written rules the NSG resources'.
#[tokio::test(flavor = "multi_thread")]
async fn analyses_equal_the_cli_on_every_scenario() {
    let (mut nics_viewed, mut findings, mut entries, mut deps_checked) = (0, 0, 0, 0);
    for scenario in scenarios() {
        let dir = root().join(format!("../shared/scenarios/{scenario}"));
        let data = tempfile::tempdir().unwrap();
        let server = Server::start(dir.join("network.json").to_str().unwrap(), data.path());
        let net = network_file(&server, data.path(), "network.json").await;
        let catalog = dir.join("dependencies.json");
        let catalog = catalog.to_str().unwrap();
        remote_forms_print_what_local_commands_print(&server, &net, catalog);

        let cli = cli_json(&["lint", "--network", &net, "--output", "json"]).unwrap();
        let api = server.get("/api/analyze/lint").await;
        findings += api["findings"].as_array().unwrap().len();
        assert_eq!(
            findings_without_file(api),
            findings_without_file(cli),
            "{scenario}: lint"
        );

        for all in [false, true] {
            let mut args = vec!["analyze", "reachability", "--network", &net];
            if all {
                args.push("--all");
            }
            args.extend(["--output", "json"]);
            let cli = cli_json(&args).unwrap();
            let (st, api) = server
                .post("/api/analyze/reachability", json!({"all": all}))
                .await;
            assert_eq!(st, StatusCode::OK, "{scenario}: {api}");
            entries += api["entries"].as_array().unwrap().len();
            assert_eq!(api, cli, "{scenario}: reachability all={all}");
        }

        let catalog = dir.join("dependencies.json");
        let mut args = vec!["analyze", "asymmetric", "--network", &net];
        let body = if catalog.exists() {
            args.extend(["--catalog", catalog.to_str().unwrap()]);
            let c: Value =
                serde_json::from_str(&std::fs::read_to_string(&catalog).unwrap()).unwrap();
            json!({ "catalog": c })
        } else {
            json!({})
        };
        args.extend(["--output", "json"]);
        let cli = cli_json(&args).unwrap();
        let (st, api) = server.post("/api/analyze/asymmetric", body.clone()).await;
        assert_eq!((st, api), (StatusCode::OK, cli), "{scenario}: asymmetric");

        if catalog.exists() {
            let subnets = server.get("/api/resources/virtualNetworks").await["value"].clone();
            for sub in subnets.as_array().unwrap().iter().flat_map(|v| {
                v["properties"]["subnets"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default()
            }) {
                let from = s(&sub["name"]);
                let cli = cli_json(&[
                    "deps",
                    "check",
                    "--network",
                    &net,
                    "--catalog",
                    catalog.to_str().unwrap(),
                    "--from",
                    &from,
                    "--output",
                    "json",
                ])
                .unwrap();
                let (st, api) = server
                    .post(
                        "/api/analyze/deps",
                        json!({"catalog": body["catalog"], "from": from}),
                    )
                    .await;
                assert_eq!(
                    (st, api),
                    (StatusCode::OK, cli),
                    "{scenario}: deps --from {from}"
                );
                deps_checked += 1;
            }
        }

        // DIAG-6 per NIC.
        let nics = server.get("/api/resources/networkInterfaces").await["value"].clone();
        for nic in nics.as_array().unwrap() {
            let n = s(&nic["name"]);
            let (st, view) = server
                .post(
                    "/api/diagnostics/securityGroupView",
                    json!({"targetResourceId": format!("/subscriptions/s/resourceGroups/g/providers/Microsoft.Network/networkInterfaces/{n}")}),
                )
                .await;
            let Some(cli) = cli_json(&[
                "effective-rules",
                "--network",
                &net,
                "--nic",
                &n,
                "--output",
                "json",
            ]) else {
                assert_eq!(
                    st,
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "{scenario} {n}: {view}"
                );
                continue;
            };
            assert_eq!(st, StatusCode::OK, "{scenario} {n}: {view}");
            nics_viewed += 1;
            let a = &view["networkInterfaces"][0]["securityRuleAssociations"];
            let effective: Vec<Value> = cli["value"]
                .as_array()
                .unwrap()
                .iter()
                .flat_map(|g| g["effectiveSecurityRules"].as_array().cloned().unwrap())
                .collect();
            assert_eq!(
                a["effectiveSecurityRules"],
                Value::Array(effective),
                "{scenario} {n}"
            );
            let defaults: Vec<String> = a["defaultSecurityRules"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| s(&r["name"]))
                .collect();
            assert_eq!(defaults.len(), 6, "NSG-4: {defaults:?}");
            for (key, g) in cli["value"].as_array().unwrap().iter().map(|g| {
                let key = if g["association"]["subnet"].is_object() {
                    "subnetAssociation"
                } else {
                    "networkInterfaceAssociation"
                };
                (key, s(&g["networkSecurityGroup"]["id"]))
            }) {
                let resource = server
                    .get(&format!("/api/resources/networkSecurityGroups/{g}"))
                    .await;
                let names = |v: &Value| -> Vec<String> {
                    v.as_array()
                        .into_iter()
                        .flatten()
                        .map(|r| s(&r["name"]))
                        .collect()
                };
                assert_eq!(a[key]["networkSecurityGroup"]["id"], g.as_str());
                assert_eq!(
                    names(&a[key]["securityRules"]),
                    names(&resource["properties"]["securityRules"]),
                    "{scenario} {n} {key}"
                );
            }
        }
        let (st, p) = server
            .post(
                "/api/diagnostics/securityGroupView",
                json!({"targetResourceId": "no-such-nic"}),
            )
            .await;
        assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY, "{p}");
    }
    assert!(nics_viewed >= 3, "{nics_viewed} NICs viewed");
    assert!(
        findings > 0 && entries > 10 && deps_checked > 0,
        "{findings} findings, {entries} entries, {deps_checked} deps"
    );
}

/// Issue 18, CLI as a client: `lint`, `analyze asymmetric|reachability`, `deps check` and
/// `effective-rules|routes` asked with `--server` print what they print on the same network's
/// file — text and JSON, same exit code (DIAG-4/5/8/9). Lint names the file it read: the
/// server's is `network`.
fn remote_forms_print_what_local_commands_print(server: &Server, net: &str, catalog: &str) {
    let dir = tempfile::tempdir().unwrap();
    let token = token_file(dir.path(), READER);
    let has_catalog = Path::new(catalog).exists();
    let mut questions: Vec<Vec<&str>> = vec![
        vec!["lint"],
        vec!["analyze", "reachability", "--all"],
        vec!["analyze", "asymmetric"],
    ];
    if has_catalog {
        questions.push(vec!["analyze", "asymmetric", "--catalog", catalog]);
        questions.push(vec!["deps", "check", "--catalog", catalog]);
    }
    let (mut compared, mut texts) = (0, 0);
    for q in &questions {
        // The client prints the API's JSON as it came (checked against the CLI's JSON above);
        // one JSON form here, the text of every question.
        let outputs: &[&str] = if q[0] == "lint" {
            &["text", "json"]
        } else {
            &["text"]
        };
        for &output in outputs {
            let local: Vec<&str> = q
                .iter()
                .copied()
                .chain(["--network", net, "--output", output])
                .collect();
            let (lc, lout, lerr) = palisade(&local);
            let asked: Vec<&str> = q.iter().copied().chain(["--output", output]).collect();
            let (rc, rout, rerr) = remote(&server.base, Some(&token), &[], &asked);
            assert_eq!(rc, lc, "{q:?} {output}: exit code; {lerr} / {rerr}");
            assert!(lc == 0 || lc == 1, "{q:?}: {lerr}");
            let local_out = lout.replace(net, palisade_server::policy::NETWORK_FILE);
            if output == "json" {
                let (l, r): (Value, Value) = (
                    serde_json::from_str(&local_out).unwrap(),
                    serde_json::from_str(&rout).unwrap(),
                );
                assert_eq!(r, l, "{q:?}");
            } else {
                assert!(!rout.is_empty(), "{q:?}: no text");
                assert_eq!(rout, local_out, "{q:?} text");
                texts += 1;
            }
            compared += 1;
        }
    }
    // The effective rules and routes of the first subnet (JSON; their text reads the snapshot).
    let nets: Value = serde_json::from_str(&std::fs::read_to_string(net).unwrap()).unwrap();
    for sub in items_of(&nets, "Microsoft.Network/virtualNetworks")
        .iter()
        .flat_map(|v| {
            v["properties"]["subnets"]
                .as_array()
                .cloned()
                .unwrap_or_default()
        })
        .take(1)
    {
        let name = s(&sub["name"]);
        for cmd in ["effective-rules", "effective-routes"] {
            let q = [cmd, "--subnet", &name, "--output", "json"];
            let local: Vec<&str> = q.iter().copied().chain(["--network", net]).collect();
            let (lc, lout, _) = palisade(&local);
            let (rc, rout, rerr) = remote(&server.base, Some(&token), &[], &q);
            assert_eq!(rc, lc, "{cmd} {name}: {rerr}");
            if lc == 0 {
                let (l, r): (Value, Value) = (
                    serde_json::from_str(&lout).unwrap(),
                    serde_json::from_str(&rout).unwrap(),
                );
                assert_eq!(r, l, "{cmd} {name}");
                compared += 1;
            }
        }
    }
    assert!(
        compared >= 5 && texts >= 3,
        "{compared} compared, {texts} texts"
    );
}

/// The resources of one ARM type in a resource list.
fn items_of(list: &Value, arm_type: &str) -> Vec<Value> {
    list.as_array()
        .into_iter()
        .flatten()
        .filter(|r| {
            r["type"]
                .as_str()
                .is_some_and(|t| t.eq_ignore_ascii_case(arm_type))
        })
        .cloned()
        .collect()
}

/// The semantic diff of two stored versions equals `palisade diff` of the two resource lists.
#[tokio::test(flavor = "multi_thread")]
async fn diff_of_two_versions_equals_the_cli_diff() {
    let data = tempfile::tempdir().unwrap();
    let server = Server::start("../shared/scenarios/layered-nsg/network.json", data.path());
    let v1 = network_file(&server, data.path(), "v1.json").await;
    let (st, _, p) = server
        .call(Method::PUT, RULE, Some(ADMIN), None, Some(http_rule("*")))
        .await;
    assert!(st.is_success(), "{p}");
    let v2 = network_file(&server, data.path(), "v2.json").await;
    let cli = cli_json(&["diff", &v1, &v2, "--output", "json"]).unwrap();
    assert!(!cli["changes"].as_array().unwrap().is_empty(), "{cli}");
    assert_eq!(server.get("/api/versions/1/diff/2").await, cli);
    // `palisade --server URL diff 1 2` prints what `palisade diff v1.json v2.json` prints.
    let token = token_file(data.path(), READER);
    for output in ["text", "json"] {
        let (lc, lout, lerr) = palisade(&["diff", &v1, &v2, "--output", output]);
        let (rc, rout, rerr) = remote(
            &server.base,
            Some(&token),
            &[],
            &["diff", "1", "2", "--output", output],
        );
        assert_eq!((rc, lc), (1, 1), "changes found: {lerr} {rerr}");
        assert_eq!(rout, lout, "diff {output}");
    }
    let (rc, _, rerr) = remote(&server.base, Some(&token), &[], &["diff", "v1.json", "2"]);
    assert_eq!(rc, 2);
    assert!(rerr.contains("version numbers"), "{rerr}");
    let back = server.get("/api/versions/2/diff/1").await;
    assert_eq!(
        back["changes"].as_array().unwrap().len(),
        cli["changes"].as_array().unwrap().len()
    );
    assert_eq!(
        server.get("/api/versions/1/diff/1").await["changes"],
        json!([])
    );
    let (st, _, _) = server
        .call(
            Method::GET,
            "/api/versions/1/diff/9",
            Some(READER),
            None,
            None,
        )
        .await;
    assert_eq!(st, StatusCode::NOT_FOUND);
}

/// `curl` against a server: (exit code, HTTP status, body). `extra` goes before the URL.
fn curl(extra: &[&str], url: &str) -> (i32, u16, String) {
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "20", "-w", "\n%{http_code}"])
        .args(extra)
        .arg(url)
        .output()
        .expect("run curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
    (
        out.status.code().unwrap_or(-1),
        code.trim().parse().unwrap_or(0),
        body.to_string(),
    )
}

/// Access: HTTPS with a given certificate on both listeners (real curl trusting only that
/// certificate), changes and the audit log on the admin listener only.
#[tokio::test(flavor = "multi_thread")]
async fn tls_and_the_admin_listener_apart_from_the_data_listener() {
    let data = tempfile::tempdir().unwrap();
    let ck =
        rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()]).unwrap();
    let (cert, key) = (data.path().join("cert.pem"), data.path().join("key.pem"));
    std::fs::write(&cert, ck.cert.pem()).unwrap();
    std::fs::write(&key, ck.signing_key.serialize_pem()).unwrap();
    let net = "../shared/scenarios/layered-nsg/network.json";
    let server = Server::start_with(
        net,
        data.path(),
        &[
            "--tls-cert",
            cert.to_str().unwrap(),
            "--tls-key",
            key.to_str().unwrap(),
        ],
    );
    assert!(server.base.starts_with("https://"), "{}", server.base);
    assert!(server.admin.starts_with("https://"), "{}", server.admin);
    let ca = cert.to_str().unwrap();
    let bearer = |t: &str| format!("Authorization: Bearer {t}");
    let (reader, admin) = (bearer(READER), bearer(ADMIN));

    // A diagnostic over TLS equals the CLI's answer.
    let question = json!({"source": "203.0.113.20", "destination": "10.2.1.4", "destinationPort": 80, "sourcePort": 51001});
    let (code, status, body) = curl(
        &[
            "--cacert",
            ca,
            "-H",
            &reader,
            "-H",
            "Content-Type: application/json",
            "-d",
            &question.to_string(),
        ],
        &format!("{}/api/diagnostics/trace", server.base),
    );
    assert_eq!((code, status), (0, 200), "{body}");
    let cli = cli_json(&[
        "trace",
        "--network",
        net,
        "--from",
        "203.0.113.20",
        "--to",
        "10.2.1.4",
        "--port",
        "80",
        "--source-port",
        "51001",
        "--protocol",
        "tcp",
        "--output",
        "json",
    ])
    .unwrap();
    assert_eq!(
        without_snapshot(serde_json::from_str(&body).unwrap()),
        without_snapshot(cli)
    );
    // Not trusted without the certificate; no plain HTTP on the TLS port.
    let (code, _, err) = curl(&[], &format!("{}/healthz", server.base));
    assert_eq!(
        code, 60,
        "curl should refuse the unknown certificate: {err}"
    );
    let plain = server.base.replace("https://", "http://");
    let (code, status, _) = curl(&[], &format!("{plain}/healthz"));
    assert!(
        code != 0 || status != 200,
        "plain HTTP answered on the TLS port"
    );

    // The UI's session cookie is `Secure` over TLS (and still HttpOnly, SameSite=Strict), on
    // login and on logout.
    let session = format!("Cookie: palisade_token={READER}");
    for (path, form) in [
        ("login", format!("token={READER}")),
        ("logout", String::new()),
    ] {
        let (code, status, head) = curl(
            &[
                "--cacert",
                ca,
                "-D",
                "-",
                "-o",
                "/dev/null",
                "-d",
                &form,
                "-H",
                &session,
            ],
            &format!("{}/ui/{path}", server.base),
        );
        assert_eq!((code, status), (0, 303), "{path}: {head}");
        let cookie = head
            .lines()
            .find(|l| l.to_ascii_lowercase().starts_with("set-cookie:"))
            .unwrap_or_else(|| panic!("{path}: no Set-Cookie in {head}"));
        for attr in ["; Secure", "HttpOnly", "SameSite=Strict"] {
            assert!(
                cookie.contains(attr),
                "{path}: {attr} missing from {cookie}"
            );
        }
    }

    // Changes: refused on the data listener (even with an admin token), served on the admin one.
    let rule = http_rule("*").to_string();
    let put = [
        "--cacert",
        ca,
        "-X",
        "PUT",
        "-H",
        &admin,
        "-H",
        "Content-Type: application/json",
        "-d",
        &rule,
    ];
    let (code, status, body) = curl(&put, &format!("{}{RULE}", server.base));
    assert_eq!((code, status), (0, 404), "{body}");
    assert!(body.contains("admin listener"), "{body}");
    let (_, status, body) = curl(
        &["--cacert", ca, "-H", &admin],
        &format!("{}/api/audit", server.base),
    );
    assert_eq!(status, 404, "{body}");
    let (code, status, body) = curl(&put, &format!("{}{RULE}", server.admin));
    assert_eq!((code, status), (0, 201), "{body}");
    let (_, status, body) = curl(
        &["--cacert", ca, "-H", &admin],
        &format!("{}/api/audit", server.admin),
    );
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("PUT"), "{body}");
    // The change is in force on the data listener.
    let (_, status, body) = curl(
        &[
            "--cacert",
            ca,
            "-H",
            &reader,
            "-H",
            "Content-Type: application/json",
            "-d",
            &question.to_string(),
        ],
        &format!("{}/api/diagnostics/trace", server.base),
    );
    assert_eq!(status, 200, "{body}");
    let t: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        (s(&t["verdict"]), s(&t["decided_by"]["rule"])),
        ("Allow".into(), "Allow-HTTP".into())
    );
    drop(server);

    // A key file that is no PEM key: the server refuses to start and names the file.
    let bad = data.path().join("bad-key.pem");
    std::fs::write(&bad, "not a key").unwrap();
    let (code, _, err) = palisade(&[
        "server",
        "--network",
        net,
        "--data",
        data.path().to_str().unwrap(),
        "--token-file",
        data.path().join("tokens.txt").to_str().unwrap(),
        "--listen",
        "127.0.0.1:0",
        "--admin-listen",
        "127.0.0.1:0",
        "--tls-cert",
        cert.to_str().unwrap(),
        "--tls-key",
        bad.to_str().unwrap(),
    ]);
    assert_ne!(code, 0);
    assert!(
        err.contains("bad-key.pem") && err.contains("private key"),
        "{err}"
    );
}

/// Over plain HTTP the UI's session cookie cannot be `Secure` (the browser would never send it
/// back); it is still HttpOnly and SameSite=Strict.
#[tokio::test(flavor = "multi_thread")]
async fn ui_cookie_over_plain_http_is_not_secure() {
    let data = tempfile::tempdir().unwrap();
    let server = Server::start("../shared/scenarios/layered-nsg/network.json", data.path());
    let (code, status, head) = curl(
        &[
            "-D",
            "-",
            "-o",
            "/dev/null",
            "-d",
            &format!("token={READER}"),
        ],
        &format!("{}/ui/login", server.base),
    );
    assert_eq!((code, status), (0, 303), "{head}");
    let cookie = head
        .lines()
        .find(|l| l.to_ascii_lowercase().starts_with("set-cookie:"))
        .unwrap_or_else(|| panic!("no Set-Cookie in {head}"));
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    assert!(!cookie.contains("Secure"), "{cookie}");
}

/// Limits: a body over `--max-body` gets 413 on both listeners; a client that stops sending
/// its body mid-way gets 408 after `--request-timeout`.
#[tokio::test(flavor = "multi_thread")]
async fn body_limit_and_request_timeout_hold() {
    use std::io::{Read, Write};
    let data = tempfile::tempdir().unwrap();
    let server = Server::start_with(
        "../shared/scenarios/layered-nsg/network.json",
        data.path(),
        &["--max-body", "2000", "--request-timeout", "1"],
    );
    let big = json!({"source": "10.2.1.4", "destination": "10.2.2.4", "host": "x".repeat(3000)});
    let (st, _) = server.post("/api/diagnostics/trace", big).await;
    assert_eq!(st, StatusCode::PAYLOAD_TOO_LARGE);
    let mut rule = http_rule("*");
    rule["properties"]["description"] = json!("y".repeat(3000));
    let (st, _, _) = server
        .call(Method::PUT, RULE, Some(ADMIN), None, Some(rule))
        .await;
    assert_eq!(st, StatusCode::PAYLOAD_TOO_LARGE);
    let (st, v) = server
        .post(
            "/api/diagnostics/trace",
            json!({"source": "10.2.1.4", "destination": "10.2.2.4"}),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{v}");

    let addr = server.base.trim_start_matches("http://").to_string();
    let answer = tokio::task::spawn_blocking(move || {
        let mut c = std::net::TcpStream::connect(addr).unwrap();
        c.set_read_timeout(Some(std::time::Duration::from_secs(10))).unwrap();
        write!(
            c,
            "POST /api/diagnostics/trace HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {READER}\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"source\""
        )
        .unwrap();
        let started = std::time::Instant::now();
        let mut out = vec![0; 512];
        let n = c.read(&mut out).unwrap_or(0);
        (String::from_utf8_lossy(&out[..n]).into_owned(), started.elapsed())
    })
    .await
    .unwrap();
    assert!(answer.0.starts_with("HTTP/1.1 408"), "{answer:?}");
    assert!(answer.1 < std::time::Duration::from_secs(5), "{answer:?}");
}

/// DIAG-11 live: `curl -N` on `/api/flowLogs/stream?action=deny` receives the record a real
/// `palisade gateway` writes when it refuses a real request, and not the allowed one before it.
#[tokio::test(flavor = "multi_thread")]
async fn flow_stream_sends_a_real_gateway_decision() {
    use std::net::{SocketAddr, TcpListener};
    use std::time::{Duration, Instant};
    let dir = tempfile::tempdir().unwrap();
    let port = common::http_server().port();
    let net = dir.path().join("gateway.yaml");
    std::fs::write(
        &net,
        format!(
            r#"apiVersion: palisade/v1
azureFirewalls:
  - name: fw
    ipConfigurations: [{{name: c, privateIPAddress: 10.0.1.4}}]
    applicationRuleCollections:
      - name: allow-apps
        priority: 200
        action: {{type: Allow}}
        rules: [{{name: web, sourceAddresses: ['*'], protocols: ['Http:{port}'], targetFqdns: [www.allowed.test]}}]
"#
        ),
    )
    .unwrap();
    let flows = dir.path().join("gateway-data");
    let proxy: SocketAddr = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let _gateway = common::start_gateway(
        net.to_str().unwrap(),
        proxy,
        &flows,
        &[
            "--instance",
            "stream-test",
            "--resolve",
            "www.allowed.test=127.0.0.1",
            "--resolve",
            "blocked.test=127.0.0.1",
        ],
        Stdio::null(),
    );
    let data = tempfile::tempdir().unwrap();
    let server = Server::start_with(
        "../shared/scenarios/layered-nsg/network.json",
        data.path(),
        &["--flow-log", flows.to_str().unwrap()],
    );
    let (_stream, rx) = follow_stream(
        &format!("{}/api/flowLogs/stream?action=deny", server.base),
        &["-i"],
    );
    let status = rx
        .recv_timeout(Duration::from_secs(10))
        .expect("stream answered");
    assert!(status.starts_with("HTTP/1.1 200"), "{status}");
    let through = |host: &str| {
        let o = Command::new("curl")
            .args([
                "-sS",
                "--max-time",
                "10",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
            ])
            .args([
                "-x",
                &format!("http://{proxy}"),
                &format!("http://{host}:{port}/"),
            ])
            .output()
            .unwrap();
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    assert_eq!(through("www.allowed.test"), "200");
    assert_eq!(through("blocked.test"), "470");
    let deadline = Instant::now() + Duration::from_secs(15);
    let record: Value = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = rx.recv_timeout(left).expect("no flow event arrived");
        if let Some(data) = line.strip_prefix("data: ") {
            break serde_json::from_str(data).unwrap();
        }
    };
    assert_eq!(record["action"], "Deny", "{record}");
    assert_eq!(record["name"], "blocked.test", "{record}");
    let logged = cli_json(&[
        "logs",
        "--data",
        flows.to_str().unwrap(),
        "--action",
        "deny",
        "--output",
        "json",
    ])
    .unwrap();
    assert_eq!(logged[0], record);
    // Filters are checked like the query's.
    let (st, _, _) = server
        .call(
            Method::GET,
            "/api/flowLogs/stream?source=nowhere",
            Some(READER),
            None,
            None,
        )
        .await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
}

/// FMT-1 native YAML (the shape of `docs/native-yaml.md`'s example): served as ARM resources
/// whose answers equal the CLI's on the YAML file; its rules change like any other.
#[tokio::test(flavor = "multi_thread")]
async fn a_native_yaml_network_is_served_as_arm_resources() {
    let yaml = r#"apiVersion: palisade/v1
virtualNetworks:
  - name: prod-vnet
    addressSpace: [10.0.0.0/16]
    subnets:
      - {name: web, addressPrefix: 10.0.1.0/24, networkSecurityGroup: web-nsg, routeTable: egress}
      - {name: AzureFirewallSubnet, addressPrefix: 10.0.2.0/24}
networkSecurityGroups:
  - name: web-nsg
    securityRules:
      - {name: allow-https-in, priority: 100, direction: Inbound, access: Allow, protocol: Tcp,
         sourceAddressPrefix: Internet, destinationAddressPrefix: "*", destinationPortRange: "443"}
      - {name: audit-ssh, priority: 200, direction: Inbound, access: Deny, protocol: Tcp,
         sourceAddressPrefix: "*", destinationAddressPrefix: "*", destinationPortRange: "22", palisade: {mode: Audit}}
  - name: web-nic-nsg
    securityRules:
      - {name: allow-https, priority: 100, direction: Inbound, access: Allow, protocol: Tcp,
         sourceAddressPrefix: "*", destinationAddressPrefix: "*", destinationPortRange: "443"}
routeTables:
  - name: egress
    routes:
      - {name: to-firewall, addressPrefix: 0.0.0.0/0, nextHopType: VirtualAppliance, nextHopIpAddress: 10.0.2.4}
networkInterfaces:
  - name: web-vm1-nic
    networkSecurityGroup: web-nic-nsg
    ipConfigurations:
      - {name: ipconfig1, privateIPAddress: 10.0.1.4, subnet: prod-vnet/web}
azureFirewalls:
  - name: egress-fw
    ipConfigurations: [{name: cfg, privateIPAddress: 10.0.2.4, subnet: prod-vnet/AzureFirewallSubnet}]
    firewallPolicy: base-policy
firewallPolicies:
  - name: base-policy
    ruleCollectionGroups:
      - name: app
        priority: 300
        ruleCollections:
          - {ruleCollectionType: FirewallPolicyFilterRuleCollection, name: web, priority: 100, action: {type: Allow},
             rules: [{ruleType: NetworkRule, name: https-out, sourceAddresses: ["10.0.1.0/24"], ipProtocols: [TCP], destinationAddresses: ["140.82.112.0/20"], destinationPorts: ["443"]}]}
"#;
    let data = tempfile::tempdir().unwrap();
    let net = data.path().join("network.yaml");
    std::fs::write(&net, yaml).unwrap();
    let net = net.to_str().unwrap().to_string();
    let server = Server::start(&net, data.path());

    let nsg = server
        .get("/api/resources/networkSecurityGroups/web-nsg")
        .await;
    assert_eq!(nsg["type"], "Microsoft.Network/networkSecurityGroups");
    let rule = &nsg["properties"]["securityRules"][0];
    assert_eq!(rule["name"], "allow-https-in");
    assert_eq!(rule["properties"]["priority"], 100, "{nsg}");
    let groups = server
        .get("/api/resources/firewallPolicies/base-policy/ruleCollectionGroups/app")
        .await;
    assert_eq!(groups["properties"]["priority"], 300, "{groups}");

    let nics = server.get("/api/resources/networkInterfaces").await["value"].clone();
    let mut compared = 0;
    for nic in nics.as_array().unwrap() {
        let n = s(&nic["name"]);
        for (cmd, route) in [
            ("effective-rules", "effectiveSecurityRules"),
            ("effective-routes", "effectiveRoutes"),
        ] {
            let cli = cli_json(&[cmd, "--network", &net, "--nic", &n, "--output", "json"]).unwrap();
            let api = server
                .get(&format!("/api/diagnostics/{route}?networkInterface={n}"))
                .await;
            assert_eq!(api, cli, "{cmd} --nic {n}");
            compared += 1;
        }
        for ip in nic["properties"]["ipConfigurations"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| s(&c["privateIPAddress"]))
        {
            for (src, dst, port) in [
                (ip.as_str(), "140.82.112.3", "443"),
                (ip.as_str(), "8.8.8.8", "80"),
                ("203.0.113.9", ip.as_str(), "443"),
                ("203.0.113.9", ip.as_str(), "22"),
            ] {
                let cli = cli_json(&[
                    "trace",
                    "--network",
                    &net,
                    "--from",
                    src,
                    "--to",
                    dst,
                    "--port",
                    port,
                    "--protocol",
                    "tcp",
                    "--output",
                    "json",
                ])
                .unwrap();
                let (st, api) = server
                    .post(
                        "/api/diagnostics/trace",
                        json!({"source": src, "destination": dst, "destinationPort": port.parse::<u16>().unwrap(), "protocol": "TCP"}),
                    )
                    .await;
                assert_eq!(st, StatusCode::OK, "{api}");
                assert_eq!(
                    without_snapshot(api),
                    without_snapshot(cli),
                    "{src} → {dst}:{port}"
                );
                compared += 1;
            }
        }
    }
    assert!(compared >= 6, "{compared} answers compared");

    // A rule of the YAML network changes through the API like an ARM one.
    let path = "/api/resources/networkSecurityGroups/web-nsg/securityRules/allow-https-in";
    let (st, h, _) = server
        .call(Method::GET, path, Some(READER), None, None)
        .await;
    assert_eq!(st, StatusCode::OK);
    let (st, _, v) = server
        .call(
            Method::PATCH,
            path,
            Some(ADMIN),
            Some(&etag(&h)),
            Some(json!({"properties": {"priority": 150}})),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v["properties"]["priority"], 150);
}

/// DIAG-2 `remotePort: "*"`: Allow only when every remote port is; else the lowest denied
/// port's answer, which single-port questions confirm.
#[tokio::test(flavor = "multi_thread")]
async fn ip_flow_verify_with_every_remote_port() {
    let data = tempfile::tempdir().unwrap();
    let server = Server::start("../shared/scenarios/layered-nsg/network.json", data.path());
    let (st, _, p) = server
        .call(Method::PUT, RULE, Some(ADMIN), None, Some(http_rule("*")))
        .await;
    assert!(st.is_success(), "{p}");
    let ask = |port: &str| {
        json!({"direction": "Inbound", "protocol": "TCP", "localIPAddress": "10.2.1.4", "localPort": "80",
               "remoteIPAddress": "203.0.113.20", "remotePort": port})
    };
    let verify = |port: &'static str| {
        let server = &server;
        let body = ask(port);
        async move {
            let (st, v) = server.post("/api/diagnostics/ipFlowVerify", body).await;
            assert_eq!(st, StatusCode::OK, "{port}: {v}");
            v
        }
    };
    let all = verify("*").await;
    assert_eq!(all["access"], "Allow", "{all}");
    assert_eq!(all["remotePort"], "*");
    assert_eq!(all["ruleName"], verify("50000").await["ruleName"]);

    let deny = json!({"name": "Deny-Low-Ports", "properties": {"protocol": "Tcp", "sourcePortRange": "1000-2000",
        "destinationPortRange": "80", "sourceAddressPrefix": "*", "destinationAddressPrefix": "*",
        "access": "Deny", "priority": 150, "direction": "Inbound"}});
    let (st, _, p) = server
        .call(
            Method::PUT,
            "/api/resources/networkSecurityGroups/web-vm1-nic-nsg/securityRules/Deny-Low-Ports",
            Some(ADMIN),
            None,
            Some(deny),
        )
        .await;
    assert!(st.is_success(), "{p}");
    let all = verify("*").await;
    assert_eq!(all["access"], "Deny", "{all}");
    assert_eq!(all["ruleName"], "securityRules/Deny-Low-Ports");
    assert_eq!(all["remotePort"], "1000");
    for (port, access) in [
        ("999", "Allow"),
        ("1000", "Deny"),
        ("2000", "Deny"),
        ("2001", "Allow"),
    ] {
        assert_eq!(verify(port).await["access"], access, "remote port {port}");
    }
    let (st, p) = server
        .post("/api/diagnostics/ipFlowVerify", ask("1-2"))
        .await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "{p}");
}

/// `palisade --server BASE [--token-file FILE] args...` with no token from the environment or a
/// config file unless `env` gives one: (exit code, stdout, stderr).
fn remote(
    base: &str,
    token_file: Option<&Path>,
    env: &[(&str, &str)],
    args: &[&str],
) -> (i32, String, String) {
    let config = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_palisade"));
    cmd.args(["--server", base])
        .current_dir(root())
        .env_remove("PALISADE_TOKEN")
        .env("XDG_CONFIG_HOME", config.path());
    if let Some(f) = token_file {
        cmd.arg("--token-file").arg(f);
    }
    cmd.args(args).envs(env.iter().copied());
    let out = cmd.output().expect("run palisade --server");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn token_file(dir: &Path, token: &str) -> std::path::PathBuf {
    let f = dir.join(format!("{token}.token"));
    std::fs::write(&f, format!("{token}\n")).unwrap();
    f
}

/// Issue 18, CLI as a client: `trace` and `next-hop` asked of the server print what they print
/// on the files — text and JSON, exit codes, refusals — on every scenario flow (DIAG-3, DIAG-7).
#[tokio::test(flavor = "multi_thread")]
async fn the_cli_via_server_prints_what_it_prints_locally() {
    let mut compared = 0;
    for scenario in scenarios() {
        let net = format!("../shared/scenarios/{scenario}/network.json");
        let data = tempfile::tempdir().unwrap();
        let server = Server::start(&net, data.path());
        let token = token_file(data.path(), READER);
        let text = std::fs::read_to_string(
            root().join(format!("../shared/scenarios/{scenario}/flows.yaml")),
        )
        .unwrap();
        let flows: Value = serde_saphyr::from_str(&text).unwrap();
        for f in flows["flows"].as_array().unwrap() {
            let name = format!("{scenario}/{}", s(&f["name"]));
            let (src, dst) = (s(&f["source"]), s(&f["destination"]));
            let proto = s(&f["protocol"]).to_ascii_lowercase();
            let sport = f["source_port"].as_u64().unwrap_or(0).to_string();
            let dport = f["destination_port"].as_u64().unwrap_or(0).to_string();
            let mut question = vec![
                "--from",
                &src,
                "--to",
                &dst,
                "--port",
                &dport,
                "--source-port",
                &sport,
                "--protocol",
                &proto,
            ];
            let host = f["host"].as_str().map(str::to_string);
            if let Some(h) = &host {
                question.extend(["--host", h]);
            }
            if !f["reply_to"].is_null() {
                question.push("--reply");
            }
            let nh = ["--from", src.as_str(), "--to", dst.as_str()];
            for (cmd, q) in [("trace", &question[..]), ("next-hop", &nh[..])] {
                for output in ["text", "json"] {
                    let local: Vec<&str> = [cmd, "--network", &net]
                        .into_iter()
                        .chain(q.iter().copied())
                        .chain(["--output", output])
                        .collect();
                    let (lc, lout, lerr) = palisade(&local);
                    let asked: Vec<&str> = [cmd]
                        .into_iter()
                        .chain(q.iter().copied())
                        .chain(["--output", output])
                        .collect();
                    let (rc, rout, rerr) = remote(&server.base, Some(&token), &[], &asked);
                    assert_eq!(rc, lc, "{name} {cmd} {output}: exit code; {rerr}");
                    if lc == 2 {
                        // Refused alike: the server's problem detail carries the CLI's message.
                        let why = lerr.trim().trim_start_matches("error: ");
                        assert!(rerr.contains(why), "{name} {cmd}: {rerr} lacks {why}");
                    } else if output == "json" {
                        let (l, r): (Value, Value) = (
                            serde_json::from_str(&lout).unwrap(),
                            serde_json::from_str(&rout).unwrap(),
                        );
                        assert_eq!(without_snapshot(r), without_snapshot(l), "{name} {cmd}");
                    } else {
                        assert_eq!(rout, lout, "{name} {cmd} text");
                    }
                    compared += 1;
                }
            }
        }
    }
    assert!(compared > 250, "only {compared} answers compared");
}

/// `palisade --server URL logs` pages through the server (more than one page of 1000) and
/// prints what `palisade logs --data DIR` prints, with the same filters.
#[tokio::test(flavor = "multi_thread")]
async fn logs_via_server_print_what_logs_print_locally() {
    use palisade_flowlog::{format_time, FlowLog, Options};
    use std::time::{Duration, SystemTime};
    let flows = tempfile::tempdir().unwrap();
    let log = FlowLog::open(flows.path(), Options::default()).unwrap();
    let start = SystemTime::now() - Duration::from_secs(7200);
    let records = records(1500, start, Duration::from_secs(4), |i| {
        format!("h{}.partner.example", i % 7)
    });
    log.append_all(&records).unwrap();
    let data = tempfile::tempdir().unwrap();
    let dir = flows.path().to_str().unwrap();
    let server = Server::start_with(
        "examples/ase-egress-lockdown",
        data.path(),
        &["--flow-log", dir],
    );
    let token = token_file(data.path(), READER);
    let since = format_time(start + Duration::from_secs(3600));
    for filter in [
        vec!["--limit", "1200"],
        vec!["--action", "deny", "--limit", "1000"],
        vec![
            "--rule",
            "app/partner-apis",
            "--source",
            "10.0.0.11",
            "--limit",
            "2000",
        ],
        vec!["--since", &since, "--name", "h3.partner.example"],
        vec!["--audit", "--limit", "2000"],
        vec!["--shadow-diff", "--source", "10.0.0.10"],
    ] {
        for output in ["text", "json"] {
            let args: Vec<&str> = filter.iter().copied().chain(["--output", output]).collect();
            let local: Vec<&str> = ["logs", "--data", dir]
                .into_iter()
                .chain(args.iter().copied())
                .collect();
            let (lc, lout, lerr) = palisade(&local);
            assert_eq!(lc, 0, "{lerr}");
            let asked: Vec<&str> = ["logs"].into_iter().chain(args.iter().copied()).collect();
            let (rc, rout, rerr) = remote(&server.base, Some(&token), &[], &asked);
            assert_eq!(rc, 0, "{filter:?}: {rerr}");
            assert!(lout.lines().count() > 10, "{filter:?} finds little: {lout}");
            assert_eq!(rout, lout, "{filter:?} {output}");
        }
    }
}

/// `apply`, `versions` and `rollback` against a server: a PUT through the CLI changes the
/// server's answers; refusals show the problem's located messages; tokens come from
/// `--token-file`, `PALISADE_TOKEN` or the config file, and a reader cannot change (PAL-5.5).
#[tokio::test(flavor = "multi_thread")]
async fn apply_versions_and_rollback_through_the_cli() {
    let net = "../shared/scenarios/layered-nsg/network.json";
    let data = tempfile::tempdir().unwrap();
    let server = Server::start(net, data.path());
    let reader = token_file(data.path(), READER);
    let http = [
        "trace",
        "--from",
        "203.0.113.20",
        "--to",
        "10.2.1.4",
        "--port",
        "80",
        "--source-port",
        "51001",
    ];
    let (code, out, err) = remote(&server.base, Some(&reader), &[], &http);
    assert_eq!(code, 3, "denied before the change: {out}{err}");

    let mut nsg = server
        .get("/api/resources/networkSecurityGroups/web-vm1-nic-nsg")
        .await;
    let rules = nsg["properties"]["securityRules"].as_array_mut().unwrap();
    rules.retain(|r| r["name"] != "Allow-HTTP");
    rules.push(http_rule("203.0.113.0/24"));
    let file = data.path().join("nsg.json");
    std::fs::write(&file, json!({"resources": [nsg.clone()]}).to_string()).unwrap();
    let file_s = file.to_str().unwrap();

    // A reader is refused, and without any token the server says what is missing.
    let (code, _, err) = remote(&server.admin, Some(&reader), &[], &["apply", file_s]);
    assert_eq!(code, 2);
    assert!(err.contains("403"), "{err}");
    let (code, _, err) = remote(&server.admin, None, &[], &["apply", file_s]);
    assert_eq!(code, 2);
    assert!(err.contains("401") && err.contains("bearer token"), "{err}");

    // An admin token from the environment applies it: the server's trace now allows.
    let admin_env = [("PALISADE_TOKEN", ADMIN)];
    let (code, out, err) = remote(&server.admin, None, &admin_env, &["apply", file_s]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        out.trim(),
        "replaced networkSecurityGroups/web-vm1-nic-nsg: version 2"
    );
    let (code, out, _) = remote(&server.base, Some(&reader), &[], &http);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("verdict Allow"), "{out}");

    // A bad rule: refused with the located message; nothing changes.
    let bad = nsg["properties"]["securityRules"]
        .as_array_mut()
        .unwrap()
        .iter_mut()
        .find(|r| r["name"] == "Allow-HTTP")
        .unwrap();
    bad["properties"]["sourceAddressPrefix"] = json!("10.0.0.0/33");
    std::fs::write(&file, nsg.to_string()).unwrap();
    let (code, _, err) = remote(&server.admin, None, &admin_env, &["apply", file_s]);
    assert_eq!(code, 2);
    assert!(err.contains("422"), "{err}");
    assert!(err.contains("found 10.0.0.0/33"), "{err}");
    assert!(err.contains("Allow-HTTP"), "{err}");
    assert!(err.contains("at body /properties/securityRules/"), "{err}");
    let (_, out, _) = remote(&server.base, Some(&reader), &[], &http);
    assert!(out.contains("verdict Allow"), "{out}");

    // A file that is not an ARM resource names the field.
    std::fs::write(&file, r#"{"name": "x"}"#).unwrap();
    let (code, _, err) = remote(&server.admin, None, &admin_env, &["apply", file_s]);
    assert_eq!(code, 2);
    assert!(err.contains("/resources/0: type: expected"), "{err}");

    // Versions and rollback; the token from the config file.
    let config = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(config.path().join("palisade")).unwrap();
    std::fs::write(
        config.path().join("palisade/config.toml"),
        format!("token = \"{ADMIN}\"\n"),
    )
    .unwrap();
    let cfg = [("XDG_CONFIG_HOME", config.path().to_str().unwrap())];
    let (code, out, err) = remote(&server.admin, None, &cfg, &["versions"]);
    assert_eq!(code, 0, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 2, "{out}");
    assert!(
        lines[0].trim_start().starts_with("2 ")
            && lines[0].contains("ci")
            && lines[0].contains("PUT networkSecurityGroups/web-vm1-nic-nsg"),
        "{out}"
    );
    assert!(
        lines[1].trim_start().starts_with("1 ") && lines[1].contains("seed"),
        "{out}"
    );
    let (code, out, err) = remote(&server.admin, None, &cfg, &["rollback", "1"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.trim(), "rolled back to version 1: now version 3");
    let (code, out, _) = remote(&server.base, Some(&reader), &[], &http);
    assert_eq!(code, 3, "denied again after the rollback: {out}");
    let (code, out, _) = remote(
        &server.base,
        Some(&reader),
        &[],
        &["versions", "--output", "json"],
    );
    assert_eq!(code, 0);
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v[0]["version"], 3);
    assert_eq!(v[0]["change"], "rollback to 1");

    // Commands without a server form say so; server commands without --server too.
    let (code, _, err) = remote(&server.base, Some(&reader), &[], &["lab", "status"]);
    assert_eq!(code, 2);
    assert!(err.contains("no --server form"), "{err}");
    let (code, _, err) = palisade(&["versions"]);
    assert_eq!(code, 2);
    assert!(err.contains("--server"), "{err}");
}

/// `--ca-cert` trusts a self-signed server; without it the client refuses the certificate.
#[tokio::test(flavor = "multi_thread")]
async fn the_cli_trusts_a_self_signed_server_with_ca_cert() {
    let data = tempfile::tempdir().unwrap();
    let ck =
        rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()]).unwrap();
    let (cert, key) = (data.path().join("cert.pem"), data.path().join("key.pem"));
    std::fs::write(&cert, ck.cert.pem()).unwrap();
    std::fs::write(&key, ck.signing_key.serialize_pem()).unwrap();
    let net = "../shared/scenarios/layered-nsg/network.json";
    let server = Server::start_with(
        net,
        data.path(),
        &[
            "--tls-cert",
            cert.to_str().unwrap(),
            "--tls-key",
            key.to_str().unwrap(),
        ],
    );
    assert!(server.base.starts_with("https://"), "{}", server.base);
    let reader = token_file(data.path(), READER);
    let q = ["--from", "203.0.113.20", "--to", "10.2.1.4", "--port", "80"];
    let local: Vec<&str> = ["trace", "--network", net].into_iter().chain(q).collect();
    let (_, lout, _) = palisade(&local);
    let asked: Vec<&str> = ["--ca-cert", cert.to_str().unwrap(), "trace"]
        .into_iter()
        .chain(q)
        .collect();
    let (code, out, err) = remote(&server.base, Some(&reader), &[], &asked);
    assert_eq!(code, 3, "{err}");
    assert_eq!(out, lout);
    let asked: Vec<&str> = ["trace"].into_iter().chain(q).collect();
    let (code, out, err) = remote(&server.base, Some(&reader), &[], &asked);
    assert_eq!(code, 2, "{out}");
    assert!(
        err.contains(&server.base) && err.to_lowercase().contains("certificate"),
        "{err}"
    );
}

/// `GET /api/learn` answers what `palisade learn --output json` prints for the same flow log
/// (spec PAL-5.4): proposals, evidence and the diff; a scope the network lacks is a 422.
#[tokio::test(flavor = "multi_thread")]
async fn learn_answers_as_the_cli_does() {
    use palisade_flowlog::{format_time, FlowLog, FlowRecord, Options};
    use std::time::{Duration, SystemTime};
    let flows = tempfile::tempdir().unwrap();
    let log = FlowLog::open(flows.path(), Options::default()).unwrap();
    let start = SystemTime::now() - Duration::from_secs(600);
    let records: Vec<FlowRecord> = (0..8u64)
        .map(|i| FlowRecord {
            time: format_time(start + Duration::from_secs(i * 10)),
            action: "Deny".into(),
            layer: "FirewallDefault".into(),
            protocol: "HTTPS".into(),
            source_ip: Some("10.0.0.20".parse().unwrap()),
            destination_ip: Some("203.0.113.9".parse().unwrap()),
            destination_port: 443,
            name: Some(format!("h{}.partner.example", i % 6)),
            decided_by: Some("default".into()),
            reason: "DefaultAction".into(),
            ..Default::default()
        })
        .collect();
    log.append_all(&records).unwrap();
    let data = tempfile::tempdir().unwrap();
    let dir = flows.path().to_str().unwrap();
    let server = Server::start_with(
        "examples/ase-egress-lockdown",
        data.path(),
        &["--flow-log", dir],
    );
    let api = server.get("/api/learn?scope=ase-subnet&since=1h").await;
    let cli = cli_json(&[
        "learn",
        "-n",
        "examples/ase-egress-lockdown",
        "--scope",
        "ase-subnet",
        "--since",
        "1h",
        "--flow-log",
        dir,
        "--output",
        "json",
    ])
    .unwrap();
    let strip = |mut v: Value| {
        let l = v["learned"].as_object_mut().unwrap();
        l.remove("since");
        v["diff"].as_object_mut().unwrap().remove("description");
        v
    };
    let proposals = api["learned"]["proposals"].as_array().unwrap();
    // Six siblings under partner.example widen to one rule.
    assert_eq!(proposals.len(), 1, "{api}");
    assert_eq!(proposals[0]["rule"]["target_fqdns"][0], "*.partner.example");
    assert_eq!(proposals[0]["evidence"]["count"], 8);
    assert!(api["yaml"].as_str().unwrap().contains("*.partner.example"));
    let mut api_only = api.clone();
    api_only.as_object_mut().unwrap().remove("yaml");
    assert_eq!(strip(api_only), strip(cli));
    let (st, _, p) = server
        .call(
            Method::GET,
            "/api/learn?scope=no-such-subnet",
            Some(READER),
            None,
            None,
        )
        .await;
    assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY, "{p}");
    let (st, _, _) = server
        .call(Method::GET, "/api/learn?scope=ase-subnet", None, None, None)
        .await;
    assert_eq!(st, StatusCode::UNAUTHORIZED);
}
