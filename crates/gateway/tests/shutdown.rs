//! Graceful shutdown on real loopback sockets: the listener refuses new connections at once,
//! established tunnels go on for the grace period and are then closed with a `Shutdown` record,
//! and a drain with nothing left ends early.

mod common;

use common::*;
use palisade_gateway::sni::build_client_hello;
use palisade_gateway::{Gateway, Running};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// An HTTP server that answers each request after `delay`.
async fn slow_http_server(delay: Duration) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let mut got = vec![];
                let mut buf = [0u8; 4096];
                while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => got.extend_from_slice(&buf[..n]),
                    }
                }
                tokio::time::sleep(delay).await;
                let _ = s
                    .write_all(
                        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\nslow\n",
                    )
                    .await;
                let _ = s.shutdown().await;
            });
        }
    });
    addr
}

/// A gateway with the test policy: `www.allowed.test` allowed as HTTP on `http_port`,
/// `*.allowed.test` as HTTPS on `tls_port`, all resolving to 127.0.0.1.
async fn start(http_port: u16, tls_port: u16) -> (tempfile::TempDir, PathBuf, Running) {
    let (dir, path) = tempdir();
    let policy = path.join("network.yaml");
    write(&policy, &policy_yaml(http_port, tls_port, 1, true));
    let data = path.join("data");
    let config = loopback_config(
        &policy,
        &data,
        &["www.allowed.test=127.0.0.1", "api.allowed.test=127.0.0.1"],
    );
    (dir, data, Gateway::start(config).await.unwrap())
}

/// Send `msg` through the tunnel and read it back.
async fn echo(s: &mut TcpStream, msg: &[u8]) {
    s.write_all(msg).await.unwrap();
    let mut back = vec![0u8; msg.len()];
    tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut back))
        .await
        .expect("echo in time")
        .expect("echo");
    assert_eq!(back, msg);
}

/// True when a new connection to `addr` is refused or closed without a byte.
async fn refused(addr: SocketAddr) -> bool {
    let Ok(mut s) = TcpStream::connect(addr).await else {
        return true;
    };
    let _ = s
        .write_all(b"CONNECT api.allowed.test:1 HTTP/1.1\r\n\r\n")
        .await;
    let mut buf = [0u8; 64];
    matches!(
        tokio::time::timeout(Duration::from_millis(500), s.read(&mut buf)).await,
        Ok(Ok(0)) | Ok(Err(_))
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tunnel_lives_through_the_grace_period_then_is_closed_with_a_record() {
    let echo_addr = echo_server().await;
    let (_dir, data, gw) = start(1, echo_addr.port()).await;
    let proxy = gw.listen.unwrap();
    let gateway = gw.gateway.clone();

    let mut tunnel = TcpStream::connect(proxy).await.unwrap();
    tunnel
        .write_all(
            format!(
                "CONNECT api.allowed.test:{0} HTTP/1.1\r\nHost: api.allowed.test:{0}\r\n\r\n",
                echo_addr.port()
            )
            .as_bytes(),
        )
        .await
        .unwrap();
    let mut head = vec![0u8; 39];
    tunnel.read_exact(&mut head).await.unwrap();
    assert!(head.starts_with(b"HTTP/1.1 200"), "{head:?}");
    // A tunnel to an HTTPS port is relayed once its ClientHello names the CONNECT name.
    let hello = build_client_hello(Some("api.allowed.test"), false, &[], 16384);
    echo(&mut tunnel, &hello).await;
    echo(&mut tunnel, b"before").await;
    assert_eq!(gateway.in_flight(), 1);

    let grace = Duration::from_secs(2);
    let started = Instant::now();
    let shutdown = tokio::spawn(gw.shutdown(grace));

    // The listener goes away at once (a probe racing the stop may still be taken: it drains)...
    let deadline = Instant::now() + Duration::from_secs(1);
    let mut taken = 0;
    while !refused(proxy).await {
        taken += 1;
        assert!(
            Instant::now() < deadline,
            "the listener still takes connections"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // ...while the tunnel keeps working.
    echo(&mut tunnel, b"during the grace period").await;
    assert!(
        started.elapsed() < grace,
        "the checks took the whole grace period"
    );

    let report = tokio::time::timeout(grace + Duration::from_secs(10), shutdown)
        .await
        .expect("shutdown in time")
        .unwrap();
    assert!(report.elapsed >= grace, "{report:?}");
    assert_eq!((report.drained, report.closed), (taken, 1), "{report:?}");
    assert_eq!(gateway.in_flight(), 0);

    let mut buf = [0u8; 16];
    let end = tokio::time::timeout(Duration::from_secs(2), tunnel.read(&mut buf)).await;
    assert!(
        matches!(end, Ok(Ok(0)) | Ok(Err(_))),
        "the tunnel is still open: {end:?}"
    );
    let r = wait_record(
        &data,
        |r| r.name.as_deref() == Some("api.allowed.test"),
        "for the tunnel",
    )
    .await;
    assert_eq!(r.reason, "Shutdown", "{r:?}");
    assert_eq!(r.action, "Allow");
    assert_eq!(r.rule_path().as_deref(), Some("allow-apps/tls"));
    let sent = (hello.len() + "before".len() + "during the grace period".len()) as u64;
    assert_eq!((r.bytes_sent, r.bytes_received), (sent, sent), "{r:?}");
    assert!(r.duration_ms >= grace.as_millis() as u64, "{r:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_finishing_in_the_grace_period_ends_the_drain_early() {
    let http = slow_http_server(Duration::from_millis(400)).await;
    let (_dir, data, gw) = start(http.port(), 1).await;
    let proxy = gw.listen.unwrap();
    let gateway = gw.gateway.clone();

    let mut client = TcpStream::connect(proxy).await.unwrap();
    client
        .write_all(
            format!(
                "GET http://www.allowed.test:{}/slow HTTP/1.1\r\nHost: www.allowed.test\r\n\r\n",
                http.port()
            )
            .as_bytes(),
        )
        .await
        .unwrap();
    // Shut down once the request is being relayed.
    let deadline = Instant::now() + Duration::from_secs(5);
    while gateway.established_count() == 0 {
        assert!(Instant::now() < deadline, "the request was never relayed");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let grace = Duration::from_secs(20);
    let shutdown = tokio::spawn(gw.shutdown(grace));

    let mut answer = String::new();
    tokio::time::timeout(Duration::from_secs(5), client.read_to_string(&mut answer))
        .await
        .expect("answer in time")
        .unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.ends_with("slow\n"), "{answer}");
    drop(client);

    let report = tokio::time::timeout(Duration::from_secs(5), shutdown)
        .await
        .expect("the drain should end as soon as nothing is left")
        .unwrap();
    assert!(report.elapsed < Duration::from_secs(5), "{report:?}");
    assert_eq!((report.drained, report.closed), (1, 0), "{report:?}");
    let r = wait_record(
        &data,
        |r| r.name.as_deref() == Some("www.allowed.test"),
        "for the request",
    )
    .await;
    assert_eq!(r.reason, "RuleMatched", "{r:?}");
    assert_eq!(r.action, "Allow");
    assert!(r.bytes_received > 0, "{r:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zero_grace_closes_a_connection_that_is_not_yet_decided() {
    let (_dir, data, gw) = start(1, 2).await;
    let proxy = gw.listen.unwrap();
    let gateway = gw.gateway.clone();
    // Half a request head: the gateway is still waiting for the rest.
    let mut client = TcpStream::connect(proxy).await.unwrap();
    client.write_all(b"CONNECT api.allow").await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while gateway.in_flight() == 0 {
        assert!(Instant::now() < deadline, "the connection was never taken");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let report = tokio::time::timeout(Duration::from_secs(5), gw.shutdown(Duration::ZERO))
        .await
        .expect("shutdown in time");
    assert_eq!((report.drained, report.closed), (0, 1), "{report:?}");
    let mut buf = [0u8; 16];
    let end = tokio::time::timeout(Duration::from_secs(2), client.read(&mut buf)).await;
    assert!(matches!(end, Ok(Ok(0)) | Ok(Err(_))), "{end:?}");
    let r = wait_record(&data, |r| r.reason == "Shutdown", "for the undecided one").await;
    assert_eq!(r.action, "Deny");
    assert_eq!(r.mode, "explicit");
    assert_eq!(r.source_port, client.local_addr().unwrap().port());
}
