//! The relay of an allowed connection over real loopback sockets: half-closes pass through in
//! either order, bytes larger than one relay buffer arrive whole, and the end record counts
//! every byte.

mod common;

use common::*;
use palisade_gateway::Gateway;
use std::net::SocketAddr;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::{timeout, Duration};

/// A half-close that does not pass through would leave the other side waiting for good.
const LIMIT: Duration = Duration::from_secs(10);

/// More than one relay buffer (16 KiB) each way.
const UP: usize = 100_000;
const DOWN: usize = 70_000;

fn pattern(n: usize, seed: u8) -> Vec<u8> {
    (0..n).map(|i| (i as u8).wrapping_mul(31) ^ seed).collect()
}

/// A tunnel through the explicit proxy to `upstream`, allowed by the network rule on its port
/// (FW-3: a CONNECT to an address is judged at L4 first).
async fn tunnel(proxy: SocketAddr, upstream: SocketAddr) -> TcpStream {
    let mut s = TcpStream::connect(proxy).await.unwrap();
    s.write_all(format!("CONNECT {upstream} HTTP/1.1\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut head = vec![];
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(s.read(&mut b).await.unwrap(), 1, "proxy closed");
        head.push(b[0]);
    }
    assert!(
        head.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&head)
    );
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_closes_pass_through_in_either_order_with_every_byte_counted() {
    let upstream = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let up_addr = upstream.local_addr().unwrap();
    let (_dir, path) = tempdir();
    let policy = path.join("network.yaml");
    write(&policy, &policy_yaml(1, 2, up_addr.port(), true));
    let data = path.join("data");
    let gw = Gateway::start(loopback_config(&policy, &data, &[]))
        .await
        .unwrap();
    let proxy = gw.listen.unwrap();

    // The client finishes first: the server reads to the end, then answers and closes.
    let server = tokio::spawn(async move {
        let (mut s, _) = upstream.accept().await.unwrap();
        let mut got = vec![];
        s.read_to_end(&mut got).await.unwrap();
        s.write_all(&pattern(DOWN, 7)).await.unwrap();
        (got, upstream)
    });
    let mut c = tunnel(proxy, up_addr).await;
    c.write_all(&pattern(UP, 1)).await.unwrap();
    c.shutdown().await.unwrap();
    let mut back = vec![];
    timeout(LIMIT, c.read_to_end(&mut back))
        .await
        .expect("the answer ended")
        .unwrap();
    let (got, upstream) = timeout(LIMIT, server)
        .await
        .expect("the end reached the upstream")
        .unwrap();
    assert_eq!(
        got,
        pattern(UP, 1),
        "the upstream got every byte, then the end"
    );
    assert_eq!(
        back,
        pattern(DOWN, 7),
        "the answer after the client's end arrived whole"
    );
    let r = wait_record(
        &data,
        |r| r.action == "Allow" && r.bytes_sent > 0 && r.bytes_received == DOWN as u64,
        "for the first tunnel's end",
    )
    .await;
    assert_eq!(r.bytes_sent, UP as u64);
    assert_eq!(r.rule.as_deref(), Some("raw-tcp"));

    // The server finishes first: it sends and closes its side, then still reads the client's.
    let server = tokio::spawn(async move {
        let (mut s, _) = upstream.accept().await.unwrap();
        s.write_all(&pattern(DOWN, 9)).await.unwrap();
        s.shutdown().await.unwrap();
        let mut got = vec![];
        s.read_to_end(&mut got).await.unwrap();
        got
    });
    let mut c = tunnel(proxy, up_addr).await;
    let mut back = vec![];
    c.read_to_end(&mut back).await.unwrap();
    assert_eq!(
        back,
        pattern(DOWN, 9),
        "the server's end reached the client"
    );
    c.write_all(&pattern(UP, 3)).await.unwrap();
    c.shutdown().await.unwrap();
    assert_eq!(
        server.await.unwrap(),
        pattern(UP, 3),
        "the client still sent after it"
    );
    let r = wait_record(
        &data,
        |r| {
            r.action == "Allow"
                && r.bytes_sent == UP as u64
                && r.bytes_received == DOWN as u64
                && r.source_port == c.local_addr().unwrap().port()
        },
        "for the second tunnel's end",
    )
    .await;
    assert_eq!(r.rule.as_deref(), Some("raw-tcp"));
}
