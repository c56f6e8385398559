//! Issue 5, "a reload under a bounded load test loses no allowed request": concurrent clients
//! make HTTP requests through the explicit proxy to a local server while the policy is reloaded
//! several times with valid changes that keep those requests allowed. Every request must
//! succeed, and every one must have its flow record (matched by client port).

mod common;

use common::*;
use palisade_flowlog::{query, Query};
use palisade_gateway::Gateway;
use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const CLIENTS: usize = 16;
const REQUESTS: usize = 25;
const RELOADS: u16 = 6;

/// One absolute-form request through the proxy on a fresh connection; returns the client's
/// port and the response.
async fn request(proxy: SocketAddr, http_port: u16, i: usize) -> (u16, String) {
    let mut s = tokio::net::TcpStream::connect(proxy).await.unwrap();
    let port = s.local_addr().unwrap().port();
    s.write_all(
        format!(
            "GET http://www.allowed.test:{http_port}/r{i} HTTP/1.1\r\nHost: www.allowed.test\r\n\r\n"
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    let mut out = String::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_string(&mut out))
        .await
        .expect("response in time")
        .expect("read response");
    (port, out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_under_load_loses_no_allowed_request() {
    let (_dir, path) = tempdir();
    let http = http_server("127.0.0.1:0").await;
    let policy = path.join("network.yaml");
    write(&policy, &policy_yaml(http.port(), 1, 1, true));
    let data = path.join("data");
    let mut config = loopback_config(&policy, &data, &["www.allowed.test=127.0.0.1"]);
    config.watch = false; // the test counts the reloads it asks for
    config.instance = "load-gw".into();
    let gw = Gateway::start(config).await.unwrap();
    let proxy = gw.listen.unwrap();
    let admin_addr = gw.admin.unwrap();
    let first = gw.gateway.active().unwrap().id().to_string();

    let started = Instant::now();
    let clients: Vec<_> = (0..CLIENTS)
        .map(|c| {
            tokio::spawn(async move {
                let mut ports = vec![];
                for m in 0..REQUESTS {
                    let (port, resp) = request(proxy, http.port(), c * REQUESTS + m).await;
                    assert!(
                        resp.starts_with("HTTP/1.1 200") && resp.contains("hello from"),
                        "client {c} request {m} failed: {resp}"
                    );
                    ports.push(port);
                    // Spread the load over the reloads.
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                ports
            })
        })
        .collect();

    // Valid reloads while the clients run: the network rule's port changes (a new snapshot),
    // the application rule that allows the requests stays.
    let mut snapshots = BTreeSet::from([first]);
    for k in 0..RELOADS {
        tokio::time::sleep(Duration::from_millis(120)).await;
        write(&policy, &policy_yaml(http.port(), 1, 100 + k, k % 2 == 0));
        let (code, body) = admin(admin_addr, "POST", "/reload").await;
        assert_eq!(code, 200, "{body}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["closed"], 0, "no allowed connection is closed: {body}");
        snapshots.insert(v["snapshot"].as_str().unwrap().to_string());
    }
    assert_eq!(snapshots.len(), RELOADS as usize + 1);

    let mut ports: BTreeMap<u16, usize> = BTreeMap::new();
    for c in clients {
        for p in c.await.expect("a client failed") {
            *ports.entry(p).or_default() += 1;
        }
    }
    let total = CLIENTS * REQUESTS;
    assert_eq!(ports.values().sum::<usize>(), total);
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "bounded: {:?}",
        started.elapsed()
    );

    // Every request has its Allow record (written when its connection ends).
    let deadline = Instant::now() + Duration::from_secs(10);
    let recs = loop {
        let q = Query {
            limit: Some(100_000),
            ..Default::default()
        };
        let (recs, torn) = query(&data, &q).unwrap();
        assert_eq!(torn, 0);
        if recs.len() >= total || Instant::now() > deadline {
            break recs;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(recs.len(), total, "one record per request, no other");
    let mut recorded: BTreeMap<u16, usize> = BTreeMap::new();
    let mut deciding = BTreeSet::new();
    for r in &recs {
        assert_eq!(r.action, "Allow", "{r:?}");
        assert_eq!(r.rule_path().as_deref(), Some("allow-apps/web"));
        assert_eq!(r.name.as_deref(), Some("www.allowed.test"));
        assert!(r.bytes_received > 0, "{r:?}");
        assert!(snapshots.contains(&r.snapshot), "{r:?}");
        deciding.insert(r.snapshot.clone());
        *recorded.entry(r.source_port).or_default() += 1;
    }
    assert_eq!(recorded, ports, "records match the requests by client port");
    assert!(
        deciding.len() >= 3,
        "requests were decided by several snapshots across the reloads: {deciding:?}"
    );
    assert_eq!(gw.gateway.established_count(), 0);
}
