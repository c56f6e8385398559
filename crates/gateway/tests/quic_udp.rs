//! HTTP/3-style QUIC through the transparent UDP relay, in network namespaces the test creates
//! and removes (needs root and `nft`; without root it is skipped with a message):
//!
//! ```text
//!  ns cli: 10.77.0.2 ──veth── 10.77.0.1 ns gw 10.78.0.1 ──veth── 10.78.0.10 ns srv
//!   quinn client                nft: udp → tproxy :15003          quinn server, :443
//! ```
//! No network rule covers UDP/443, so each flow is judged by the server name in its QUIC
//! Initial as HTTPS by the application rules (FW-6.2): a real QUIC connection to an allowed name
//! is established end to end (also with a ClientHello spread over two datagrams), one to a
//! denied or unlisted name is dropped, and each has its flow record naming rule and name.

mod common;

use common::netns::{can_run, in_netns_async, InNs, Lab};
use common::{loopback_config, wait_for, write};
use palisade_flowlog::FlowRecord;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

const POLICY: &str = r#"apiVersion: palisade/v1
azureFirewalls:
  - name: fw
    ipConfigurations: [{name: c, privateIPAddress: 10.77.0.1}]
    applicationRuleCollections:
      - name: deny-apps
        priority: 100
        action: {type: Deny}
        rules: [{name: blocked, sourceAddresses: ['*'], protocols: ['Https:443'], targetFqdns: [blocked.test]}]
      - name: allow-apps
        priority: 200
        action: {type: Allow}
        rules: [{name: tls, sourceAddresses: ['10.77.0.0/24'], protocols: ['Https:443'], targetFqdns: ['*.allowed.test']}]
"#;

const NAMES: [&str; 3] = ["api.allowed.test", "blocked.test", "evil.test"];

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A QUIC server (ALPN `h3`) for all of [`NAMES`] that echoes one bidirectional stream per
/// connection; runs until its thread's runtime ends. Returns the certificate (DER).
fn quic_server(ns: &str) -> Vec<u8> {
    let ck = rcgen::generate_simple_self_signed(NAMES.map(String::from).to_vec()).unwrap();
    let der = ck.cert.der().to_vec();
    let cert = rustls::pki_types::CertificateDer::from(der.clone());
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(ck.signing_key.serialize_der().into());
    let mut tls = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert], key)
        .unwrap();
    tls.alpn_protocols = vec![b"h3".to_vec()];
    let quic = quinn::crypto::rustls::QuicServerConfig::try_from(tls).unwrap();
    let config = quinn::ServerConfig::with_crypto(Arc::new(quic));
    let (tx, rx) = std::sync::mpsc::channel();
    in_netns_async(ns, move || async move {
        let endpoint = quinn::Endpoint::server(config, "10.78.0.10:443".parse().unwrap()).unwrap();
        tx.send(()).unwrap();
        while let Some(incoming) = endpoint.accept().await {
            tokio::spawn(async move {
                let Ok(conn) = incoming.await else { return };
                while let Ok((mut send, mut recv)) = conn.accept_bi().await {
                    if let Ok(data) = recv.read_to_end(1024).await {
                        let _ = send.write_all(&data).await;
                        let _ = send.finish();
                        let _ = send.stopped().await;
                    }
                }
            });
        }
    });
    rx.recv_timeout(Duration::from_secs(10)).unwrap();
    der
}

/// From ns cli, a QUIC connection to 10.78.0.10:443 for `name` offering `alpn`; the echo of
/// one stream, or why there was none.
fn quic_get(ns: &str, cert: &[u8], name: &str, alpn: Vec<Vec<u8>>) -> Result<String, String> {
    let (cert, name) = (cert.to_vec(), name.to_string());
    in_netns_async(ns, move || async move {
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(rustls::pki_types::CertificateDer::from(cert))
            .unwrap();
        let mut tls = rustls::ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        tls.alpn_protocols = alpn;
        let quic = quinn::crypto::rustls::QuicClientConfig::try_from(tls).unwrap();
        let mut endpoint = quinn::Endpoint::client("0.0.0.0:0".parse().unwrap()).unwrap();
        endpoint.set_default_client_config(quinn::ClientConfig::new(Arc::new(quic)));
        let to: SocketAddr = "10.78.0.10:443".parse().unwrap();
        let exchange = async {
            let conn = endpoint
                .connect(to, &name)
                .map_err(|e| e.to_string())?
                .await
                .map_err(|e| e.to_string())?;
            let (mut send, mut recv) = conn.open_bi().await.map_err(|e| e.to_string())?;
            send.write_all(b"ping over quic")
                .await
                .map_err(|e| e.to_string())?;
            send.finish().map_err(|e| e.to_string())?;
            let back = recv.read_to_end(1024).await.map_err(|e| e.to_string())?;
            conn.close(0u32.into(), b"done");
            Ok(String::from_utf8_lossy(&back).into_owned())
        };
        match tokio::time::timeout(Duration::from_secs(3), exchange).await {
            Ok(r) => r,
            Err(_) => Err("no answer within 3 s".to_string()),
        }
    })
    .join()
    .unwrap()
}

fn quic_to(name: &'static str) -> impl Fn(&FlowRecord) -> bool {
    move |r| r.protocol == "QUIC" && r.name.as_deref() == Some(name)
}

// spec FW-6.2: HTTP/3 to a name is judged as HTTPS by the name in its ClientHello.
#[test]
fn quic_through_transparent_udp_is_judged_by_name() {
    if !can_run(
        "quic_through_transparent_udp_is_judged_by_name",
        "namespaces, nft, IP_TRANSPARENT",
        &[("nft", "nftables")],
    ) {
        return;
    }
    let lab = Lab::new("q", &["10.78.0.10/24"]);
    lab.pair.nft(
        "table ip palisade_quic {\n chain prerouting {\n  type filter hook prerouting priority mangle; policy accept;\n  iifname \"vg\" meta l4proto udp tproxy to :15003 meta mark set 1 accept\n }\n}\n",
    );
    let cert = quic_server(&lab.srv);
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("network.yaml");
    write(&policy, POLICY);
    let data = dir.path().join("data");
    let data2 = data.clone();
    let gateway = InNs::start(&lab.pair.gw, move || async move {
        let items = NAMES.map(|n| format!("{n}=10.78.0.10"));
        let items: Vec<&str> = items.iter().map(String::as_str).collect();
        let mut config = loopback_config(&policy, &data2, &items);
        config.listen = None;
        config.admin = None;
        config.transparent_udp = vec!["0.0.0.0:15003".parse().unwrap()];
        config
    });
    let cli = lab.pair.cli.clone();
    let h3 = || vec![b"h3".to_vec()];

    // Allowed by name: the connection is established through the gateway and echoes.
    let got = quic_get(&cli, &cert, "api.allowed.test", h3());
    assert_eq!(got.as_deref(), Ok("ping over quic"));
    let r = wait_for(&data, "allowed", quic_to("api.allowed.test"));
    assert_eq!(
        (
            r.action.as_str(),
            r.rule_path().as_deref(),
            r.destination_port
        ),
        ("Allow", Some("allow-apps/tls"), 443)
    );

    // A ClientHello over two datagrams (many ALPN names), still allowed and relayed whole.
    let mut alpn: Vec<Vec<u8>> = (0..40)
        .map(|i| format!("proto-{i:02}-{}", "x".repeat(40)).into_bytes())
        .collect();
    alpn.push(b"h3".to_vec());
    let got = quic_get(&cli, &cert, "api.allowed.test", alpn);
    assert_eq!(got.as_deref(), Ok("ping over quic"));

    // Denied by a rule, and by default: no connection, each recorded with rule or reason.
    assert!(quic_get(&cli, &cert, "blocked.test", h3()).is_err());
    let r = wait_for(&data, "blocked", quic_to("blocked.test"));
    assert_eq!(
        (r.action.as_str(), r.rule_path().as_deref()),
        ("Deny", Some("deny-apps/blocked"))
    );
    assert!(quic_get(&cli, &cert, "evil.test", h3()).is_err());
    let r = wait_for(&data, "evil", quic_to("evil.test"));
    assert_eq!(
        (
            r.action.as_str(),
            r.reason.as_str(),
            r.decided_by.as_deref()
        ),
        ("Deny", "DefaultAction", Some("default"))
    );

    drop(gateway);
    drop(lab);
}
