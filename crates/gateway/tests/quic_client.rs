//! The QUIC Initial reader against a real QUIC client (quinn over rustls): the client connects
//! to a UDP socket on loopback that only listens, and the datagrams it sends are read the way
//! the gateway reads a flow's first datagrams.

use palisade_gateway::quic::{ClientInitials, Hello, Version};
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
