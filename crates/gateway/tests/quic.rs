//! The QUIC Initial reader against a real QUIC client (quinn over rustls): the client connects
//! to a UDP socket on loopback that only listens, and the datagrams it sends are read the way
//! the gateway reads a flow's first datagrams. Then the gateway's judgment of what they name
//! (`judge_quic`): the same application rules, reasons and flow records as HTTPS (FW-6.2).

mod common;

use common::*;
use palisade_gateway::quic::{
    crypto_frame, seal_initial, ClientInitials, Hello, QuicError, Version,
};
use palisade_gateway::quic_judge::{judge_quic, QuicDecision};
use palisade_gateway::sni::build_client_hello;
use palisade_gateway::{EchPolicy, Gateway, Running};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::UdpSocket;

/// A quinn client that offers `alpn`; it never completes a handshake (nobody answers).
fn client(alpn: Vec<Vec<u8>>) -> quinn::Endpoint {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth();
    tls.alpn_protocols = alpn;
    let quic = quinn::crypto::rustls::QuicClientConfig::try_from(tls).unwrap();
    let mut endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    endpoint.set_default_client_config(quinn::ClientConfig::new(Arc::new(quic)));
    endpoint
}

/// Start a connection to `name` and read what arrives until the ClientHello is whole.
async fn first_flight(name: &str, alpn: Vec<Vec<u8>>) -> (Hello, usize) {
    let sink = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let to: SocketAddr = sink.local_addr().unwrap();
    let endpoint = client(alpn);
    let connecting = endpoint.connect(to, name).unwrap();
    let pending = tokio::spawn(async move {
        let _ = connecting.await;
    });
    let mut initials = ClientInitials::new();
    let mut buf = vec![0u8; 65536];
    let mut datagrams = 0;
    let hello = loop {
        let (n, _) = tokio::time::timeout(Duration::from_secs(5), sink.recv_from(&mut buf))
            .await
            .expect("the client sends its Initial")
            .unwrap();
        datagrams += 1;
        if let Some(hello) = initials.push(&buf[..n]).unwrap() {
            break hello;
        }
    };
    pending.abort();
    (hello, datagrams)
}

#[tokio::test]
async fn a_quinn_client_initial_names_its_server() {
    let (hello, datagrams) = first_flight("www.allowed.test", vec![b"h3".to_vec()]).await;
    assert_eq!(hello.sni.as_deref(), Some("www.allowed.test"));
    assert_eq!(hello.version, Version::V1);
    assert!(!hello.ech);
    assert_eq!(datagrams, 1);
}

#[tokio::test]
async fn a_client_hello_larger_than_a_datagram_is_reassembled() {
    // Many ALPN names push the ClientHello past one 1200-byte Initial, as a post-quantum key
    // share does in browsers.
    let alpn = (0..40).map(|i| format!("proto-{i:02}-{}", "x".repeat(40)).into_bytes());
    let (hello, datagrams) = first_flight("big.allowed.test", alpn.collect()).await;
    assert_eq!(hello.sni.as_deref(), Some("big.allowed.test"));
    assert!(datagrams >= 2, "{datagrams} datagram(s)");
}

/// A gateway running the test policy (`*.allowed.test` allowed and `blocked.test` denied for
/// HTTPS on 443), its names bound to loopback.
async fn gateway(ech: EchPolicy) -> (tempfile::TempDir, Running) {
    let (dir, path) = tempdir();
    let policy = path.join("network.yaml");
    write(&policy, &policy_yaml(80, 443, 1, true));
    let mut config = loopback_config(
        &policy,
        &path.join("data"),
        &[
            "api.allowed.test=127.0.0.1",
            "blocked.test=127.0.0.1",
            "evil.test=127.0.0.1",
        ],
    );
    config.ech = ech;
    (dir, Gateway::start(config).await.unwrap())
}

const CLIENT: &str = "127.0.0.1:50443";
const HTTPS: &str = "127.0.0.1:443";

async fn judge(gw: &Running, initial: Result<Hello, QuicError>) -> QuicDecision {
    judge_quic(
        &gw.gateway,
        CLIENT.parse().unwrap(),
        HTTPS.parse().unwrap(),
        &initial,
    )
    .await
}

/// The Initial a real client sends to `name`, read.
async fn initial_to(name: &str) -> Result<Hello, QuicError> {
    Ok(first_flight(name, vec![b"h3".to_vec()]).await.0)
}

// spec FW-6.2: HTTP/3 to a name is judged as HTTPS on that port by the name in its ClientHello.
#[tokio::test]
async fn an_http3_initial_to_an_allowed_name_is_allowed_by_its_rule() {
    let (_dir, gw) = gateway(EchPolicy::Deny).await;
    let d = judge(&gw, initial_to("api.allowed.test").await).await;
    assert!(d.outcome.allowed, "{:?}", d.outcome);
    let r = d.record;
    assert_eq!(
        (r.action.as_str(), r.reason.as_str(), r.protocol.as_str()),
        ("Allow", "RuleMatched", "QUIC")
    );
    assert_eq!(r.rule_path().as_deref(), Some("allow-apps/tls"));
    assert_eq!(r.name.as_deref(), Some("api.allowed.test"));
    assert_eq!(r.destination_port, 443);
}

// spec FW-6.2, FW-2: a denying rule and the default deny, named in the record.
#[tokio::test]
async fn http3_to_other_names_is_denied_with_the_rule_in_the_record() {
    let (_dir, gw) = gateway(EchPolicy::Deny).await;
    let d = judge(&gw, initial_to("blocked.test").await).await;
    assert_eq!(
        (d.record.action.as_str(), d.record.rule_path().as_deref()),
        ("Deny", Some("deny-apps/blocked"))
    );
    assert_eq!(d.record.name.as_deref(), Some("blocked.test"));
    let d = judge(&gw, initial_to("evil.test").await).await;
    assert_eq!(
        (d.record.action.as_str(), d.record.reason.as_str()),
        ("Deny", "DefaultAction")
    );
    assert_eq!(d.record.decided_by.as_deref(), Some("default"));
}

// spec FW-6.2: an unreadable Initial is HTTPS without SNI.
#[tokio::test]
async fn an_unreadable_initial_is_denied_like_a_missing_sni() {
    let (_dir, gw) = gateway(EchPolicy::Deny).await;
    let unreadable = ClientInitials::new()
        .push(&[0xc0, 0, 0, 0, 1, 99])
        .map(|_| unreachable!());
    let d = judge(&gw, unreadable).await;
    assert_eq!(
        (d.record.action.as_str(), d.record.reason.as_str()),
        ("Deny", "SniMissing")
    );
    assert!(
        d.record
            .detail
            .as_deref()
            .unwrap_or_default()
            .contains("QUIC Initial unreadable"),
        "{:?}",
        d.record.detail
    );
}

/// A QUIC Initial whose ClientHello carries `encrypted_client_hello`, outer name `outer`.
fn ech_initial(outer: &str) -> Result<Hello, QuicError> {
    let records = build_client_hello(Some(outer), true, &[], 1 << 14);
    let frames = crypto_frame(0, &records[5..]);
    let dcid = [7u8; 8];
    let packet = seal_initial(Version::V1, &dcid, 0, &frames, 1200).unwrap();
    ClientInitials::new()
        .push(&packet)
        .map(|h| h.expect("one packet holds it"))
}

// ECH (RFC 9849) in QUIC: denied by default, judged by the outer name with `--ech outer-sni`.
#[tokio::test]
async fn ech_in_quic_follows_the_configured_policy() {
    let (_dir, gw) = gateway(EchPolicy::Deny).await;
    let d = judge(&gw, ech_initial("api.allowed.test")).await;
    assert_eq!(
        (d.record.action.as_str(), d.record.reason.as_str()),
        ("Deny", "EncryptedClientHello")
    );
    assert!(d
        .record
        .detail
        .as_deref()
        .unwrap()
        .contains("policy alone would allow it"));

    let (_dir, gw) = gateway(EchPolicy::OuterSni).await;
    let d = judge(&gw, ech_initial("api.allowed.test")).await;
    assert_eq!(
        (d.record.action.as_str(), d.record.rule_path().as_deref()),
        ("Allow", Some("allow-apps/tls"))
    );
    assert!(d.record.detail.as_deref().unwrap().starts_with("ech: "));
    let d = judge(&gw, ech_initial("evil.test")).await;
    assert_eq!(d.record.action, "Deny");
    assert!(d.record.detail.as_deref().unwrap().starts_with("ech: "));
}
