//! Encrypted Client Hello (RFC 9849) inside CONNECT tunnels: the ClientHello carries the
//! `encrypted_client_hello` extension (built by hand from the RFC layout), so the real name is
//! hidden. `--ech deny` (the default) fails closed; `--ech outer-sni` judges the public outer
//! name like any SNI, and the flow record's detail says `ech`. Also transparent TLS, in network
//! namespaces the test creates and removes (needs root and `nft`). QUIC's ECH is in `quic.rs`.

mod common;

use common::netns::{can_run, tcp_send_from, InNs, Pair};
use common::*;
use palisade_flowlog::FlowRecord;
use palisade_gateway::sni::build_client_hello;
use palisade_gateway::{EchPolicy, Gateway, Running};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

struct Setup {
    _dir: tempfile::TempDir,
    data: PathBuf,
    tls: SocketAddr,
    gw: Running,
}

async fn setup(ech: EchPolicy) -> Setup {
    let (dir, path) = tempdir();
    let (tls, _) = tls_server("127.0.0.1:0", &["api.allowed.test"]).await;
    let policy = path.join("network.yaml");
    write(&policy, &policy_yaml(1, tls.port(), 1, true));
    let data = path.join("data");
    let mut config = loopback_config(&policy, &data, &["api.allowed.test=127.0.0.1"]);
    config.ech = ech;
    config.limits.handshake_timeout = Duration::from_secs(5);
    let gw = Gateway::start(config).await.unwrap();
    Setup {
        _dir: dir,
        data,
        tls,
        gw,
    }
}

/// CONNECT to api.allowed.test, then an ECH ClientHello whose outer SNI is `outer`; the
/// gateway's answer to the CONNECT and the flow record.
async fn ech_through_connect(s: &Setup, outer: &str) -> (String, FlowRecord) {
    let mut c = TcpStream::connect(s.gw.listen.unwrap()).await.unwrap();
    let port = c.local_addr().unwrap().port();
    let connect = format!(
        "CONNECT api.allowed.test:{0} HTTP/1.1\r\nHost: api.allowed.test:{0}\r\n\r\n",
        s.tls.port()
    );
    c.write_all(connect.as_bytes()).await.unwrap();
    c.write_all(&build_client_hello(Some(outer), true, &[], 16384))
        .await
        .unwrap();
    let mut out = vec![];
    let _ = tokio::time::timeout(Duration::from_secs(10), c.read_to_end(&mut out)).await;
    drop(c);
    let r = wait_record(&s.data, |r| r.source_port == port, "ech tunnel").await;
    (String::from_utf8_lossy(&out).into(), r)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ech_in_a_tunnel_is_denied_by_default() {
    let s = setup(EchPolicy::Deny).await;
    let (_, r) = ech_through_connect(&s, "api.allowed.test").await;
    assert_eq!(
        (
            r.action.as_str(),
            r.reason.as_str(),
            r.decided_by.as_deref()
        ),
        ("Deny", "EncryptedClientHello", Some("handshake-check"))
    );
    assert_eq!(r.tunnel_name.as_deref(), Some("api.allowed.test"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ech_outer_sni_judges_the_public_name() {
    let s = setup(EchPolicy::OuterSni).await;
    // The outer name is the CONNECT name and allowed: relayed to the server, recorded as ech.
    let (out, r) = ech_through_connect(&s, "api.allowed.test").await;
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    assert_eq!(
        (r.action.as_str(), r.rule_path().as_deref()),
        ("Allow", Some("allow-apps/tls"))
    );
    let detail = r.detail.unwrap_or_default();
    assert!(
        detail.starts_with("ech: judged by the outer SNI api.allowed.test"),
        "{detail}"
    );
    // Another outer name is still domain fronting (`--tunnel-sni match`); the record says
    // the name compared was the ECH outer name.
    let (_, r) = ech_through_connect(&s, "evil.test").await;
    assert_eq!(
        (r.action.as_str(), r.reason.as_str()),
        ("Deny", "TunnelSniMismatch")
    );
    let detail = r.detail.unwrap_or_default();
    assert!(
        detail.starts_with("ech: judged by the outer SNI evil.test")
            && detail.contains("CONNECT api.allowed.test"),
        "{detail}"
    );
}

/// Transparent TLS with `--ech outer-sni`: the outer name is judged by the policy — allowed
/// for an allowed name (and relayed to the server), denied by the rule for a blocked one —
/// and both records say `ech`.
#[test]
fn transparent_ech_outer_sni_in_namespaces() {
    if !can_run(
        "transparent_ech_outer_sni_in_namespaces",
        "namespaces, nft",
        &[("nft", "nftables")],
    ) {
        return;
    }
    let ns = Pair::new("e", &["10.78.0.10/32"]);
    ns.nft("table ip palisade {\n chain prerouting {\n  type nat hook prerouting priority dstnat; policy accept;\n  iifname \"vg\" meta l4proto tcp redirect to :15001\n }\n}\n");
    let (dir, path) = tempdir();
    let policy = path.join("network.yaml");
    write(&policy, &policy_yaml(80, 443, 1, true));
    let data = path.join("data");
    let data2 = data.clone();
    let gateway = InNs::start(&ns.gw, move || async move {
        tls_server("10.78.0.10:443", &["api.allowed.test"]).await;
        let mut config = loopback_config(
            &policy,
            &data2,
            &["api.allowed.test=10.78.0.10", "blocked.test=10.78.0.10"],
        );
        config.listen = None;
        config.admin = None;
        config.transparent = Some("0.0.0.0:15001".parse().unwrap());
        config.ech = EchPolicy::OuterSni;
        config
    });

    let hello = build_client_hello(Some("api.allowed.test"), true, &[], 16384);
    tcp_send_from(&ns.cli, "10.78.0.10:443", &hello);
    let r = wait_for(&data, "allowed ech", |r| {
        r.name.as_deref() == Some("api.allowed.test")
    });
    assert_eq!(
        (r.action.as_str(), r.mode.as_str(), r.rule_path().as_deref()),
        ("Allow", "transparent", Some("allow-apps/tls"))
    );
    assert!(r.detail.unwrap_or_default().starts_with("ech: "));

    let hello = build_client_hello(Some("blocked.test"), true, &[], 16384);
    let answer = tcp_send_from(&ns.cli, "10.78.0.10:443", &hello);
    assert!(answer.is_empty(), "a denied ClientHello gets no answer");
    let r = wait_for(&data, "blocked ech", |r| {
        r.name.as_deref() == Some("blocked.test")
    });
    assert_eq!(
        (r.action.as_str(), r.rule_path().as_deref()),
        ("Deny", Some("deny-apps/blocked"))
    );
    assert!(r.detail.unwrap_or_default().starts_with("ech: "));

    drop(gateway);
    drop(dir);
}
