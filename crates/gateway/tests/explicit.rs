//! The explicit proxy end to end: real `curl` and `openssl s_client` through the gateway to real
//! local servers on 127.0.0.1; verdicts and deciding rules checked in the flow records.

mod common;

use common::*;
use palisade_gateway::{Gateway, Running};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

struct Setup {
    _dir: tempfile::TempDir,
    policy: PathBuf,
    data: PathBuf,
    http: SocketAddr,
    tls: SocketAddr,
    /// The TLS server's certificate.
    pem: String,
    gw: Running,
}

impl Setup {
    fn proxy(&self) -> SocketAddr {
        self.gw.listen.unwrap()
    }
    fn admin(&self) -> SocketAddr {
        self.gw.admin.unwrap()
    }
}

async fn setup(valid_policy: bool, watch: bool) -> Setup {
    let (dir, path) = tempdir();
    let http = http_server("127.0.0.1:0").await;
    let (tls, pem) = tls_server(
        "127.0.0.1:0",
        &["api.allowed.test", "elsewhere.allowed.test", "other.test"],
    )
    .await;
    let policy = path.join("network.yaml");
    let text = if valid_policy {
        policy_yaml(http.port(), tls.port(), 1, true)
    } else {
        "apiVersion: palisade/v1\nazureFirewalls: [ {name: fw, bogus".to_string()
    };
    write(&policy, &text);
    let data = path.join("data");
    let mut config = loopback_config(
        &policy,
        &data,
        &[
            "www.allowed.test=127.0.0.1",
            "api.allowed.test=127.0.0.1",
            "blocked.test=127.0.0.1",
            "other.test=127.0.0.1",
            // Allowed by name, but it lives elsewhere: dialing it at 127.0.0.1 is a spoof.
            "elsewhere.allowed.test=127.0.0.2",
        ],
    );
    config.watch = watch;
    config.instance = "test-gw".into();
    let gw = Gateway::start(config).await.unwrap();
    Setup {
        _dir: dir,
        policy,
        data,
        http,
        tls,
        pem,
        gw,
    }
}

fn status(o: &Out) -> &str {
    o.stdout.lines().last().unwrap_or("")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_allowed_and_denied_by_name_with_rules_in_records() {
    let s = setup(true, true).await;
    let port = s.http.port();
    // Allowed by allow-apps/web.
    let o = curl_proxy(s.proxy(), &format!("http://www.allowed.test:{port}/x"), &[]).await;
    assert_eq!(status(&o), "200", "{} {}", o.stdout, o.stderr);
    assert!(
        o.stdout.contains("hello from www.allowed.test"),
        "{}",
        o.stdout
    );
    let r = wait_record(
        &s.data,
        |r| r.name.as_deref() == Some("www.allowed.test"),
        "for www",
    )
    .await;
    assert_eq!(r.action, "Allow");
    assert_eq!(r.rule_path().as_deref(), Some("allow-apps/web"));
    assert_eq!(r.layer, "FirewallApplication");
    assert_eq!(r.priority, Some(200));
    assert_eq!(r.protocol, "HTTP");
    assert_eq!(r.instance, "test-gw");
    assert!(r.bytes_received > 0 && r.bytes_sent > 0, "{r:?}");
    assert!(!r.snapshot.is_empty());

    // Denied by an explicit rule: 470 naming it.
    let o = curl_proxy(s.proxy(), &format!("http://blocked.test:{port}/"), &[]).await;
    assert_eq!(status(&o), "470");
    assert!(
        o.stdout
            .contains("Action: Deny. Rule Collection: deny-apps. Rule: blocked."),
        "{}",
        o.stdout
    );
    let r = wait_record(
        &s.data,
        |r| r.name.as_deref() == Some("blocked.test"),
        "for blocked",
    )
    .await;
    assert_eq!(
        (r.action.as_str(), r.rule.as_deref()),
        ("Deny", Some("blocked"))
    );

    // Denied by default: FW-6.2 body.
    let o = curl_proxy(s.proxy(), &format!("http://other.test:{port}/"), &[]).await;
    assert_eq!(status(&o), "470");
    assert!(
        o.stdout
            .contains("Action: Deny. Reason: No rule matched. Proceeding with default action."),
        "{}",
        o.stdout
    );
    let r = wait_record(
        &s.data,
        |r| r.name.as_deref() == Some("other.test"),
        "for other",
    )
    .await;
    assert_eq!(
        (r.action.as_str(), r.rule.as_deref(), r.reason.as_str()),
        ("Deny", None, "DefaultAction")
    );
    // A Host header cannot smuggle another name: the URI's authority is what is judged and sent.
    let o = curl_proxy(
        s.proxy(),
        &format!("http://other.test:{port}/"),
        &["-H", "Host: www.allowed.test"],
    )
    .await;
    assert_eq!(status(&o), "470");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_tunnels_judged_by_name() {
    let s = setup(true, true).await;
    let port = s.tls.port();
    let o = curl_proxy(
        s.proxy(),
        &format!("https://api.allowed.test:{port}/"),
        &["-k"],
    )
    .await;
    assert_eq!(status(&o), "200", "{} {}", o.stdout, o.stderr);
    assert!(o.stdout.contains("tls hello"));
    let r = wait_record(
        &s.data,
        |r| r.name.as_deref() == Some("api.allowed.test"),
        "api",
    )
    .await;
    assert_eq!(r.action, "Allow");
    assert_eq!(r.rule_path().as_deref(), Some("allow-apps/tls"));
    assert_eq!(r.protocol, "HTTPS");

    // Not allowed: the CONNECT is refused with 403 and the FW-6.2 text.
    let o = curl_proxy(s.proxy(), &format!("https://other.test:{port}/"), &["-k"]).await;
    assert_ne!(o.code, 0);
    assert!(o.stderr.contains("403"), "{}", o.stderr);
    let r = wait_record(
        &s.data,
        |r| r.name.as_deref() == Some("other.test"),
        "other",
    )
    .await;
    assert_eq!(
        (r.action.as_str(), r.reason.as_str()),
        ("Deny", "DefaultAction")
    );

    // A name nobody can resolve: denied, NameResolutionFailed.
    let o = curl_proxy(
        s.proxy(),
        &format!("https://nowhere.allowed.test:{port}/"),
        &["-k"],
    )
    .await;
    assert_ne!(o.code, 0);
    let r = wait_record(
        &s.data,
        |r| r.name.as_deref() == Some("nowhere.allowed.test"),
        "nowhere",
    )
    .await;
    assert_eq!(r.reason, "NameResolutionFailed");
}

/// `openssl s_client -proxy`: CONNECT to an address, then the SNI decides, and the SNI's name
/// must resolve to that address (PAL-5.2).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_to_an_address_checks_sni_against_it() {
    let s = setup(true, true).await;
    let target = format!("127.0.0.1:{}", s.tls.port());
    let s_client = |sni: &'static str| {
        let args: Vec<String> = [
            "s_client",
            "-proxy",
            &s.proxy().to_string(),
            "-connect",
            &target,
            "-servername",
            sni,
            "-brief",
        ]
        .iter()
        .map(|a| a.to_string())
        .collect();
        async move { run("openssl", &args).await }
    };
    // Allowed name that does live at 127.0.0.1: the handshake completes.
    let o = s_client("api.allowed.test").await;
    assert!(
        o.stderr.contains("CONNECTION ESTABLISHED") || o.stdout.contains("CONNECTION ESTABLISHED"),
        "{}\n{}",
        o.stdout,
        o.stderr
    );
    let r = wait_record(
        &s.data,
        |r| r.name.as_deref() == Some("api.allowed.test") && r.action == "Allow",
        "api via address",
    )
    .await;
    assert_eq!(r.rule_path().as_deref(), Some("allow-apps/tls"));
    assert_eq!(r.destination_ip, Some("127.0.0.1".parse().unwrap()));

    // Allowed name spoofed onto the wrong address: denied, connection reset.
    let o = s_client("elsewhere.allowed.test").await;
    assert!(!o.stderr.contains("CONNECTION ESTABLISHED"), "{}", o.stderr);
    let r = wait_record(
        &s.data,
        |r| r.name.as_deref() == Some("elsewhere.allowed.test"),
        "spoof",
    )
    .await;
    assert_eq!(
        (r.action.as_str(), r.reason.as_str()),
        ("Deny", "SniAddressMismatch")
    );

    // Not allowed at all: the policy's default deny.
    let o = s_client("other.test").await;
    assert!(!o.stderr.contains("CONNECTION ESTABLISHED"), "{}", o.stderr);
    let r = wait_record(
        &s.data,
        |r| r.name.as_deref() == Some("other.test"),
        "other",
    )
    .await;
    assert_eq!(
        (r.action.as_str(), r.reason.as_str()),
        ("Deny", "DefaultAction")
    );
}

/// A bad reload is refused with located errors while traffic keeps flowing; a good one swaps
/// and closes established tunnels it denies (FW-11), logging them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_refuses_bad_policy_and_rejudges_established() {
    // No file watcher here: the test counts the reloads it asks for.
    let s = setup(true, false).await;
    let (_, before) = admin(s.admin(), "GET", "/status").await;

    // An established tunnel, allowed now.
    let mut tunnel = tokio::net::TcpStream::connect(s.proxy()).await.unwrap();
    tunnel
        .write_all(format!("CONNECT api.allowed.test:{} HTTP/1.1\r\n\r\n", s.tls.port()).as_bytes())
        .await
        .unwrap();
    let mut buf = [0u8; 256];
    let n = tunnel.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    // The tunnel is relayed once its ClientHello names the CONNECT name.
    let mut tunnel = tls_client(tunnel, &s.pem, "api.allowed.test")
        .await
        .unwrap();

    // Bad policy: refused, errors located, old snapshot stays, traffic flows.
    write(&s.policy, "apiVersion: palisade/v1\nazureFirewalls:\n  - name: fw\n    applicationRuleCollections: [{name: a, priority: 1, action: {type: Allow}, rules: [{name: r, protocols: ['Https:443'], targetFqdns: ['www.*.com']}]}]\n");
    let (code, body) = admin(s.admin(), "POST", "/reload").await;
    assert_eq!(code, 422, "{body}");
    assert!(body.contains("network.yaml"), "errors are located: {body}");
    let (_, after) = admin(s.admin(), "GET", "/status").await;
    let snap = |b: &str| serde_json::from_str::<serde_json::Value>(b).unwrap()["snapshot"].clone();
    assert_eq!(snap(&before), snap(&after));
    let o = curl_proxy(
        s.proxy(),
        &format!("http://www.allowed.test:{}/", s.http.port()),
        &[],
    )
    .await;
    assert_eq!(status(&o), "200");
    // The tunnel is still open.
    assert!(
        tokio::time::timeout(Duration::from_millis(200), tunnel.read(&mut buf))
            .await
            .is_err(),
        "the tunnel stays open across a refused reload"
    );

    // Good policy without the TLS rule: applied; the tunnel is closed and logged.
    write(
        &s.policy,
        &policy_yaml(s.http.port(), s.tls.port(), 1, false),
    );
    let (code, body) = admin(s.admin(), "POST", "/reload").await;
    assert_eq!(code, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_ne!(v["snapshot"], snap(&before));
    assert_eq!(v["closed"], 1);
    let n = tokio::time::timeout(Duration::from_secs(5), tunnel.read(&mut buf))
        .await
        .expect("tunnel closed after reload");
    assert!(matches!(n, Ok(0) | Err(_)));
    let r = wait_record(&s.data, |r| r.mode == "reload", "closed on reload").await;
    assert_eq!(r.action, "Deny");
    assert_eq!(r.name.as_deref(), Some("api.allowed.test"));
    assert_eq!(r.snapshot, v["snapshot"].as_str().unwrap());
    // New tunnels are judged by the new policy.
    let o = curl_proxy(
        s.proxy(),
        &format!("https://api.allowed.test:{}/", s.tls.port()),
        &["-k"],
    )
    .await;
    assert_ne!(o.code, 0);

    let (_, metrics) = admin(s.admin(), "GET", "/metrics").await;
    assert!(
        metrics.contains("palisade_gateway_reloads_total{outcome=\"refused\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("palisade_gateway_closed_on_reload_total 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("palisade_gateway_decisions_total{action=\"Allow\""),
        "{metrics}"
    );
    assert!(
        metrics.contains("palisade_gateway_decision_seconds_bucket"),
        "{metrics}"
    );
}

/// The file watcher reloads on change (debounced).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_change_reloads() {
    let s = setup(true, true).await;
    let first = s.gw.gateway.active().unwrap().id().to_string();
    write(
        &s.policy,
        &policy_yaml(s.http.port(), s.tls.port(), 2, true),
    );
    let start = std::time::Instant::now();
    loop {
        let now = s.gw.gateway.active().unwrap().id().to_string();
        if now != first {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "no reload on file change"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// With no valid policy, nothing passes; a later valid one takes effect.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fails_closed_without_a_valid_policy() {
    let s = setup(false, false).await;
    assert!(s.gw.gateway.active().is_none());
    let o = curl_proxy(
        s.proxy(),
        &format!("http://www.allowed.test:{}/", s.http.port()),
        &[],
    )
    .await;
    assert_eq!(status(&o), "470");
    let r = wait_record(&s.data, |_| true, "any").await;
    assert_eq!(r.reason, "NoValidPolicy");
    let (code, _) = admin(s.admin(), "GET", "/healthz").await;
    assert_eq!(code, 503);
    write(
        &s.policy,
        &policy_yaml(s.http.port(), s.tls.port(), 1, true),
    );
    let (code, body) = admin(s.admin(), "POST", "/reload").await;
    assert_eq!(code, 200, "{body}");
    let o = curl_proxy(
        s.proxy(),
        &format!("http://www.allowed.test:{}/", s.http.port()),
        &[],
    )
    .await;
    assert_eq!(status(&o), "200");
}

#[allow(dead_code)]
fn unused(_: &Path) {}
