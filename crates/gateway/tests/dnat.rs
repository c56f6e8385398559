//! DNAT rules as listeners (FW-4): real sockets on loopback. The gateway listens on each DNAT
//! rule's frontend (a local address directly, a public one through `dnat_bind`), forwards TCP
//! (curl to a local HTTP server) and UDP (an echo server) to the translated address, and writes
//! a `FirewallDnat` record with both tuples. Listeners follow reloads.

mod common;

use common::*;
use palisade_gateway::dnat::{parse_dnat_bind, Transport};
use palisade_gateway::policy::PolicySource;
use palisade_gateway::{Config, Gateway, Running};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UdpSocket;

async fn udp_echo() -> SocketAddr {
    let s = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = s.local_addr().unwrap();
    tokio::spawn(async move {
        let mut buf = [0u8; 2048];
        loop {
            let Ok((n, peer)) = s.recv_from(&mut buf).await else {
                return;
            };
            let mut reply = b"echo ".to_vec();
            reply.extend_from_slice(&buf[..n]);
            let _ = s.send_to(&reply, peer).await;
        }
    });
    addr
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn policy(http: SocketAddr, udp: SocketAddr, local_port: u16, with_public: bool) -> String {
    let public = if with_public {
        format!(
            r#"
          - {{name: web, protocols: [TCP], sourceAddresses: ['*'], destinationAddresses: [203.0.113.10], destinationPorts: ['8080'], translatedAddress: 127.0.0.1, translatedPort: '{}'}}
          - {{name: dns, protocols: [UDP], sourceAddresses: ['*'], destinationAddresses: [203.0.113.10], destinationPorts: ['5353'], translatedAddress: 127.0.0.1, translatedPort: '{}'}}"#,
            http.port(),
            udp.port()
        )
    } else {
        String::new()
    };
    format!(
        r#"apiVersion: palisade/v1
azureFirewalls:
  - name: fw
    ipConfigurations: [{{name: c, privateIPAddress: 10.0.1.4}}]
    natRuleCollections:
      - name: inbound
        priority: 100
        action: {{type: Dnat}}
        rules:
          - {{name: only-from-partner, protocols: [TCP], sourceAddresses: [10.9.9.9], destinationAddresses: [203.0.113.10], destinationPorts: ['8081'], translatedAddress: 127.0.0.1, translatedPort: '{}'}}
          - {{name: web-local, protocols: [TCP], sourceAddresses: ['*'], destinationAddresses: [127.0.0.1], destinationPorts: ['{local_port}'], translatedAddress: 127.0.0.1, translatedPort: '{}'}}{public}
publicIPAddresses:
  - {{name: fw-pip, ipAddress: 203.0.113.10}}
"#,
        http.port(),
        http.port(),
    )
}

struct Setup {
    _dir: tempfile::TempDir,
    policy: PathBuf,
    data: PathBuf,
    http: SocketAddr,
    udp: SocketAddr,
    local_port: u16,
    gw: Running,
}

impl Setup {
    fn bound(&self, t: Transport, frontend: &str) -> Option<SocketAddr> {
        let f: SocketAddr = frontend.parse().unwrap();
        self.gw
            .gateway
            .dnat_listeners()
            .into_iter()
            .find(|l| l.transport == t && l.frontend == f)
            .map(|l| l.bound)
    }
}

async fn setup() -> Setup {
    let (dir, path) = tempdir();
    let http = http_server("127.0.0.1:0").await;
    let udp = udp_echo().await;
    let local_port = free_port();
    let policy_path = path.join("network.yaml");
    write(&policy_path, &policy(http, udp, local_port, true));
    let data = path.join("data");
    let mut config = Config::new(PolicySource::files(vec![policy_path.clone()]), data.clone());
    config.listen = None;
    config.admin = Some("127.0.0.1:0".parse().unwrap());
    config.sighup = false;
    config.watch = false;
    config.instance = "dnat-gw".into();
    config.dnat = true;
    // The public frontend is not a local address: map it to loopback, any free port.
    config.dnat_bind = vec![
        parse_dnat_bind("203.0.113.10:8080=127.0.0.1:0").unwrap(),
        parse_dnat_bind("203.0.113.10:8081=127.0.0.1:0").unwrap(),
        parse_dnat_bind("203.0.113.10:5353=127.0.0.1:0").unwrap(),
    ];
    config.limits.udp_idle_timeout = Duration::from_millis(500);
    let gw = Gateway::start(config).await.unwrap();
    Setup {
        _dir: dir,
        policy: policy_path,
        data,
        http,
        udp,
        local_port,
        gw,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fw_4_dnat_tcp_frontends_forward_and_record_both_tuples() {
    let s = setup().await;
    // A frontend that is a local address is bound as is.
    let local = s
        .bound(Transport::Tcp, &format!("127.0.0.1:{}", s.local_port))
        .expect("local frontend bound");
    assert_eq!(local.port(), s.local_port);
    let o = run(
        "curl",
        &[
            "-sS".into(),
            "--max-time".into(),
            "10".into(),
            format!("http://{local}/via-dnat"),
        ],
    )
    .await;
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert!(o.stdout.contains("hello from"), "{}", o.stdout);
    let r = wait_record(
        &s.data,
        |r| r.rule.as_deref() == Some("web-local"),
        "web-local",
    )
    .await;
    assert_eq!(
        (r.action.as_str(), r.layer.as_str(), r.mode.as_str()),
        ("Dnat", "FirewallDnat", "dnat")
    );
    assert_eq!(r.protocol, "TCP");
    assert_eq!(r.destination_port, s.local_port);
    assert_eq!(r.translated, Some(s.http.to_string()));
    assert!(r.translated_source.is_some(), "{r:?}");
    assert!(r.bytes_sent > 0 && r.bytes_received > 0, "{r:?}");

    // A public frontend mapped to loopback: the record names the frontend, not the mapping.
    let public = s.bound(Transport::Tcp, "203.0.113.10:8080").unwrap();
    let o = run(
        "curl",
        &[
            "-sS".into(),
            "--max-time".into(),
            "10".into(),
            format!("http://{public}/"),
        ],
    )
    .await;
    assert!(o.stdout.contains("hello from"), "{} {}", o.stdout, o.stderr);
    let r = wait_record(&s.data, |r| r.rule.as_deref() == Some("web"), "web").await;
    assert_eq!(r.rule_path().as_deref(), Some("inbound/web"));
    assert_eq!(r.priority, Some(100));
    assert_eq!(r.source_ip, Some("127.0.0.1".parse().unwrap()));
    assert_eq!(r.destination_ip, Some("203.0.113.10".parse().unwrap()));
    assert_eq!(r.destination_port, 8080);
    assert_eq!(r.translated, Some(s.http.to_string()));
    let ts: SocketAddr = r.translated_source.as_deref().unwrap().parse().unwrap();
    assert_eq!(ts.ip(), "127.0.0.1".parse::<std::net::IpAddr>().unwrap());

    // A DNAT rule for other sources only: the policy's default deny, the connection reset.
    let partner = s.bound(Transport::Tcp, "203.0.113.10:8081").unwrap();
    let mut c = tokio::net::TcpStream::connect(partner).await.unwrap();
    let _ = c.write_all(b"GET / HTTP/1.0\r\n\r\n").await;
    let mut buf = vec![];
    let n = tokio::time::timeout(Duration::from_secs(5), c.read_to_end(&mut buf))
        .await
        .unwrap();
    assert!(n.is_err() || buf.is_empty(), "nothing relayed");
    let r = wait_record(
        &s.data,
        |r| r.destination_port == 8081,
        "denied at the frontend",
    )
    .await;
    assert_eq!(
        (r.action.as_str(), r.reason.as_str()),
        ("Deny", "DefaultAction")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fw_4_dnat_udp_sessions_and_listeners_follow_reloads() {
    let s = setup().await;
    let front = s.bound(Transport::Udp, "203.0.113.10:5353").unwrap();
    let c = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    c.connect(front).await.unwrap();
    let mut buf = [0u8; 256];
    for i in 0..3 {
        c.send(format!("ping {i}").as_bytes()).await.unwrap();
        let n = tokio::time::timeout(Duration::from_secs(5), c.recv(&mut buf))
            .await
            .expect("echo through DNAT")
            .unwrap();
        assert_eq!(&buf[..n], format!("echo ping {i}").as_bytes());
    }
    // The session ends after the (test-short) idle time; its record has the bytes.
    let r = wait_record(&s.data, |r| r.protocol == "UDP", "udp session").await;
    assert_eq!(
        (r.action.as_str(), r.layer.as_str()),
        ("Dnat", "FirewallDnat")
    );
    assert_eq!(r.rule_path().as_deref(), Some("inbound/dns"));
    assert_eq!(r.source_port, c.local_addr().unwrap().port());
    assert_eq!(r.destination_port, 5353);
    assert_eq!(r.translated, Some(s.udp.to_string()));
    assert_eq!(r.bytes_sent, 18);
    assert_eq!(r.bytes_received, 33);

    // Reload without the public rules: their listeners close, the local one stays.
    let tcp_public = s.bound(Transport::Tcp, "203.0.113.10:8080").unwrap();
    write(&s.policy, &policy(s.http, s.udp, s.local_port, false));
    let (code, body) = admin(s.gw.admin.unwrap(), "POST", "/reload").await;
    assert_eq!(code, 200, "{body}");
    assert!(s.bound(Transport::Udp, "203.0.113.10:5353").is_none());
    assert!(s.bound(Transport::Tcp, "203.0.113.10:8080").is_none());
    assert!(s
        .bound(Transport::Tcp, &format!("127.0.0.1:{}", s.local_port))
        .is_some());
    // The aborted accept loop drops its socket.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(tokio::net::TcpStream::connect(tcp_public).await.is_err());
    let (_, status) = admin(s.gw.admin.unwrap(), "GET", "/status").await;
    let v: serde_json::Value = serde_json::from_str(&status).unwrap();
    assert_eq!(v["dnat"].as_array().unwrap().len(), 2, "{status}");
}

/// Shutdown: DNAT TCP frontends stop accepting at once; a UDP session keeps being relayed while
/// it drains, a new UDP client gets no session, and the drain ends when the session idles out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_closes_dnat_frontends_and_drains_udp_sessions() {
    let s = setup().await;
    let tcp = s.bound(Transport::Tcp, "203.0.113.10:8080").unwrap();
    let front = s.bound(Transport::Udp, "203.0.113.10:5353").unwrap();
    let c = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    c.connect(front).await.unwrap();
    let mut buf = [0u8; 256];
    let mut echo = async |msg: &str| {
        c.send(msg.as_bytes()).await.unwrap();
        let n = tokio::time::timeout(Duration::from_secs(5), c.recv(&mut buf))
            .await
            .expect("echo through DNAT")
            .unwrap();
        assert_eq!(&buf[..n], format!("echo {msg}").as_bytes());
    };
    echo("before").await;

    let shutdown = tokio::spawn(s.gw.shutdown(Duration::from_secs(20)));
    let deadline = std::time::Instant::now() + Duration::from_secs(1);
    let mut taken = 0;
    while tokio::net::TcpStream::connect(tcp).await.is_ok() {
        taken += 1;
        assert!(
            std::time::Instant::now() < deadline,
            "TCP frontend still open"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    echo("while draining").await;
    let other = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    other.send_to(b"new", front).await.unwrap();
    let mut b = [0u8; 64];
    assert!(
        tokio::time::timeout(Duration::from_millis(300), other.recv_from(&mut b))
            .await
            .is_err(),
        "a new UDP client got a session while draining"
    );

    let report = tokio::time::timeout(Duration::from_secs(10), shutdown)
        .await
        .expect("the drain ends when the session idles out")
        .unwrap();
    assert_eq!(report.closed, 0, "{report:?}");
    assert!(
        (1..=1 + taken).contains(&report.drained),
        "{report:?}, {taken} TCP probe(s) taken"
    );
    let r = wait_record(&s.data, |r| r.protocol == "UDP", "udp session").await;
    assert_eq!(r.reason, "RuleMatched");
    assert_eq!(
        r.bytes_sent,
        ("before".len() + "while draining".len()) as u64
    );
}
