//! Abuse (issue 14, item 6): a slow client, thousands of idle connections, a 1 MB request head,
//! garbage instead of HTTP and garbage instead of a ClientHello. Each case asserts that the
//! abuse is bounded by a configured limit or timeout (short ones, so the file runs fast), that
//! each abusive connection is recorded as a flow record with its reason, and that an allowed
//! request made by a real client (`curl` through the proxy) while the abuse goes on succeeds.

mod common;

use common::*;
use palisade_flowlog::{query, FlowRecord, Query};
use palisade_gateway::{Gateway, LogSink, Running};
use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

struct Setup {
    _dir: tempfile::TempDir,
    data: PathBuf,
    http: SocketAddr,
    tls: SocketAddr,
    pem: String,
    gw: Running,
}

impl Setup {
    fn proxy(&self) -> SocketAddr {
        self.gw.listen.unwrap()
    }

    /// An allowed plain HTTP request through the proxy, by `curl`.
    async fn allowed_http(&self) {
        let url = format!("http://www.allowed.test:{}/", self.http.port());
        let out = curl_proxy(self.proxy(), &url, &[]).await;
        assert!(
            out.stdout.ends_with("\n200") && out.stdout.contains("hello from www.allowed.test"),
            "allowed request during the abuse failed: {} {}",
            out.stdout,
            out.stderr
        );
    }

    /// An allowed HTTPS request through a CONNECT tunnel, by `curl` (verifying the server).
    async fn allowed_https(&self) {
        let ca = self._dir.path().join("ca.pem");
        std::fs::write(&ca, &self.pem).unwrap();
        let url = format!("https://api.allowed.test:{}/", self.tls.port());
        let out = curl_proxy(self.proxy(), &url, &["--cacert", ca.to_str().unwrap()]).await;
        assert!(
            out.stdout.ends_with("\n200") && out.stdout.contains("tls hello"),
            "allowed tunnel during the abuse failed: {} {}",
            out.stdout,
            out.stderr
        );
    }
}

/// A gateway on loopback with short limits: `timeout` for request heads and ClientHellos,
/// `max_connections` slots. The rate-limited log lines are dropped (the records are checked).
async fn setup(timeout: Duration, max_connections: usize) -> Setup {
    let (dir, path) = tempdir();
    let http = http_server("127.0.0.1:0").await;
    let (tls, pem) = tls_server("127.0.0.1:0", &["api.allowed.test"]).await;
    let policy = path.join("network.yaml");
    write(&policy, &policy_yaml(http.port(), tls.port(), 1, true));
    let data = path.join("data");
    let mut config = loopback_config(
        &policy,
        &data,
        &["www.allowed.test=127.0.0.1", "api.allowed.test=127.0.0.1"],
    );
    config.limits.header_timeout = timeout;
    config.limits.handshake_timeout = timeout;
    config.limits.max_connections = max_connections;
    // The idle crowd comes from one address; the per-source cap has its own test.
    config.limits.max_connections_per_source = max_connections;
    config.log_sink = Some(LogSink(Arc::new(|_: &str| {})));
    let gw = Gateway::start(config).await.unwrap();
    Setup {
        _dir: dir,
        data,
        http,
        tls,
        pem,
        gw,
    }
}

fn records(data: &Path) -> Vec<FlowRecord> {
    query(data, &Query::default()).unwrap().0
}

/// The records with `reason` from the client ports `ports`, polled until there are `n`.
async fn records_with(
    data: &Path,
    reason: &str,
    ports: &HashSet<u16>,
    n: usize,
) -> Vec<FlowRecord> {
    let start = Instant::now();
    loop {
        let got: Vec<FlowRecord> = records(data)
            .into_iter()
            .filter(|r| r.reason == reason && ports.contains(&r.source_port))
            .collect();
        if got.len() >= n || start.elapsed() > Duration::from_secs(20) {
            assert_eq!(got.len(), n, "records with reason {reason}");
            return got;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Read until the gateway closes (or resets) the connection; what came back.
async fn read_until_closed(s: &mut TcpStream, bound: Duration) -> String {
    let mut out = vec![];
    let mut buf = [0u8; 4096];
    let closed = tokio::time::timeout(bound, async {
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => out.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "the gateway did not close within {bound:?}");
    String::from_utf8_lossy(&out).into()
}

/// Bytes that are neither HTTP nor TLS (a fixed LCG stream, so a failure reproduces).
fn garbage(len: usize, seed: u32) -> Vec<u8> {
    let mut x = seed;
    (0..len)
        .map(|_| {
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12_345);
            (x >> 16) as u8
        })
        .collect()
}

/// A slow client sends its request head one byte a second: the header timeout closes it with
/// 408 long before the head is complete, and it is recorded; an allowed request meanwhile is
/// served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_client_is_cut_off_by_the_header_timeout() {
    let timeout = Duration::from_secs(2);
    let s = setup(timeout, 1000).await;
    let head = format!(
        "GET http://www.allowed.test:{}/ HTTP/1.1\r\nHost: www.allowed.test\r\n\r\n",
        s.http.port()
    );
    let mut slow = TcpStream::connect(s.proxy()).await.unwrap();
    let port = slow.local_addr().unwrap().port();
    let started = Instant::now();
    let trickle = tokio::spawn(async move {
        let mut sent = 0;
        for b in head.bytes() {
            if slow.write_all(&[b]).await.is_err() {
                break;
            }
            sent += 1;
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        (slow, sent)
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    s.allowed_http().await;
    let (mut slow, sent) = trickle.await.unwrap();
    let out = read_until_closed(&mut slow, Duration::from_secs(5)).await;
    assert!(out.starts_with("HTTP/1.1 408"), "{out}");
    // It was cut off at the timeout, a handful of bytes in, not after its whole head.
    assert!(sent <= 6, "sent {sent} bytes before the gateway stopped it");
    assert!(started.elapsed() < timeout + Duration::from_secs(5));
    let r = wait_record(&s.data, |r| r.source_port == port, "slow client").await;
    assert_eq!(r.reason, "HandshakeTimeout");
    assert_eq!(r.action, "Deny");
    assert_eq!(r.decided_by.as_deref(), Some("handshake-check"));
}

/// Raise this process's open-file limit to its hard limit; returns the limit now in force.
fn raise_nofile() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain syscalls on a local struct.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim), 0);
        lim.rlim_cur = lim.rlim_max;
        assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &lim), 0);
    }
    lim.rlim_cur
}

/// Up to 10,000 connections that send nothing (as many as the open-file limit allows: both
/// ends live in this process, and the other tests of the file need some): an allowed request
/// made while they are all open is served, and the header timeout closes every one of them,
/// each with a `HandshakeTimeout` record.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_idle_connections_cost_the_others_nothing() {
    let limit = raise_nofile();
    let n = 10_000.min((limit.saturating_sub(2048) / 2) as usize);
    assert!(n >= 1000, "open-file limit {limit} too low for this test");
    eprintln!("idle connections: {n} (open-file limit {limit})");
    let timeout = Duration::from_secs(20);
    // The cap sits above the idle crowd: the cap bounds memory, the timeout bounds time.
    let s = setup(timeout, n + 100).await;
    let proxy = s.proxy();
    let opened = Instant::now();
    let mut idle: Vec<TcpStream> = Vec::with_capacity(n);
    while idle.len() < n {
        // Below the listen backlog (128), so no SYN is dropped and retried a second later.
        let batch = (n - idle.len()).min(100);
        let conns = futures_join((0..batch).map(|_| TcpStream::connect(proxy))).await;
        idle.extend(conns.into_iter().map(|c| c.unwrap()));
    }
    let open_took = opened.elapsed();
    eprintln!("opened {n} idle connections in {open_took:?}");
    let ports: HashSet<u16> = idle
        .iter()
        .map(|c| c.local_addr().unwrap().port())
        .collect();
    s.allowed_http().await;
    s.allowed_https().await;
    // They were served while the idle crowd was held: on a loaded machine opening it can take
    // most of the timeout, so at least half of it must still be open (all, when opening is fast).
    // A connection the gateway already answered gives back its first byte: kept for below.
    let first: Vec<Option<u8>> = idle
        .iter()
        .map(|c| {
            let mut b = [0u8; 1];
            match c.try_read(&mut b) {
                Ok(1) => Some(b[0]),
                _ => None,
            }
        })
        .collect();
    let still_open = first.iter().filter(|b| b.is_none()).count();
    eprintln!("idle connections open during the allowed requests: {still_open}");
    assert!(
        still_open >= n / 2,
        "only {still_open} of {n} idle connections were open"
    );
    // Every idle connection is closed by the gateway (408) within the timeout after it opened.
    let bound = timeout + Duration::from_secs(15);
    let closes = idle
        .into_iter()
        .zip(first)
        .map(|(mut c, first)| async move {
            let rest = read_until_closed(&mut c, bound).await;
            first.map(|b| (b as char).to_string()).unwrap_or_default() + &rest
        });
    let outs = futures_join(closes).await;
    let answered = outs
        .iter()
        .filter(|o| o.starts_with("HTTP/1.1 408"))
        .count();
    assert_eq!(answered, n, "idle connections answered 408");
    let got = records_with(&s.data, "HandshakeTimeout", &ports, n).await;
    assert!(got
        .iter()
        .all(|r| r.action == "Deny" && r.decided_by.as_deref() == Some("handshake-check")));
    // The slots were given back: the gateway serves again with nothing in flight.
    s.allowed_http().await;
}

/// Run futures concurrently, results in order (tokio's `JoinSet` would need `'static`).
async fn futures_join<F: std::future::Future>(futs: impl Iterator<Item = F>) -> Vec<F::Output> {
    let mut futs: Vec<_> = futs.map(Box::pin).collect();
    let mut out: Vec<Option<F::Output>> = (0..futs.len()).map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (i, f) in futs.iter_mut().enumerate() {
            if out[i].is_none() {
                match f.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => out[i] = Some(v),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    out.into_iter().map(Option::unwrap).collect()
}

/// Clients each sending a 1 MB request head: the gateway stops reading at its head limit and
/// answers 431 without waiting for the rest, records `RequestHeadTooLarge`, and an allowed
/// request sent meanwhile is served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_one_megabyte_request_head_is_refused_at_the_head_limit() {
    let s = setup(Duration::from_secs(10), 1000).await;
    const CLIENTS: usize = 8;
    // One header line of 1 MB (many short lines would trip the header count first: a 400).
    let mut head = b"GET http://www.allowed.test/ HTTP/1.1\r\nX-Padding: ".to_vec();
    head.resize(1024 * 1024, b'a');
    head.extend_from_slice(b"\r\n\r\n");
    let head = Arc::new(head);
    let mut clients = vec![];
    for _ in 0..CLIENTS {
        let (head, proxy) = (head.clone(), s.proxy());
        clients.push(tokio::spawn(async move {
            let started = Instant::now();
            let c = TcpStream::connect(proxy).await.unwrap();
            let port = c.local_addr().unwrap().port();
            let (mut rd, mut wr) = c.into_split();
            // The gateway stops reading; the writer then fails or blocks, which is the point.
            let writer = tokio::spawn(async move {
                let _ = wr.write_all(&head).await;
                wr
            });
            let mut out = vec![];
            let _ = tokio::time::timeout(Duration::from_secs(10), rd.read_to_end(&mut out)).await;
            writer.abort();
            (
                port,
                String::from_utf8_lossy(&out).to_string(),
                started.elapsed(),
            )
        }));
    }
    s.allowed_http().await;
    let mut ports = HashSet::new();
    for c in clients {
        let (port, out, took) = c.await.unwrap();
        assert!(out.starts_with("HTTP/1.1 431"), "{out}");
        // Answered at the limit, not after a timeout.
        assert!(took < Duration::from_secs(5), "took {took:?}");
        ports.insert(port);
    }
    let got = records_with(&s.data, "RequestHeadTooLarge", &ports, CLIENTS).await;
    assert!(got
        .iter()
        .all(|r| r.action == "Deny" && r.decided_by.as_deref() == Some("request-check")));
}

/// Garbage instead of an HTTP request head: 400 and a `MalformedRequest` record each, and an
/// allowed request in the middle of the flood is served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_instead_of_http_is_refused_and_recorded() {
    let s = setup(Duration::from_secs(5), 1000).await;
    const CLIENTS: u32 = 50;
    let mut clients = vec![];
    for i in 0..CLIENTS {
        let proxy = s.proxy();
        clients.push(tokio::spawn(async move {
            let mut c = TcpStream::connect(proxy).await.unwrap();
            let port = c.local_addr().unwrap().port();
            let mut bytes = garbage(4096, i);
            // Not a TLS record nor an ASCII method: a binary first byte.
            bytes[0] = 0x01;
            let _ = c.write_all(&bytes).await;
            (
                port,
                read_until_closed(&mut c, Duration::from_secs(10)).await,
            )
        }));
    }
    s.allowed_http().await;
    let mut ports = HashSet::new();
    for c in clients {
        let (port, out) = c.await.unwrap();
        assert!(out.starts_with("HTTP/1.1 400"), "{out}");
        ports.insert(port);
    }
    let got = records_with(&s.data, "MalformedRequest", &ports, CLIENTS as usize).await;
    assert!(got
        .iter()
        .all(|r| r.action == "Deny" && r.decided_by.as_deref() == Some("request-check")));
}

/// What a client sends where its ClientHello belongs.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Hello {
    /// Bytes that are not TLS at all.
    Garbage,
    /// A handshake record holding a ClientHello header and garbage as its body.
    GarbageBody,
    /// A record announced and never completed.
    Truncated,
}

/// Garbage where a ClientHello belongs, on the paths that read the SNI: a `CONNECT` to an
/// address (judged exactly like a transparent connection, by its first bytes) and a `CONNECT`
/// to an allowed name (the tunnel's SNI is read and judged). Each is denied and the TLS
/// connection reset (FW-6.2: no readable SNI, no allow): garbage has no name, a garbled
/// ClientHello is unparseable, one that never completes hits the handshake timeout. An
/// allowed HTTPS tunnel meanwhile is served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_instead_of_a_client_hello_is_denied_and_recorded() {
    let timeout = Duration::from_secs(2);
    let s = setup(timeout, 1000).await;
    let targets = [
        format!("127.0.0.1:{}", s.tls.port()),
        format!("api.allowed.test:{}", s.tls.port()),
    ];
    let mut clients = vec![];
    for (i, target) in targets.iter().enumerate() {
        for hello in [Hello::Garbage, Hello::GarbageBody, Hello::Truncated] {
            let (proxy, target) = (s.proxy(), target.clone());
            clients.push(tokio::spawn(async move {
                let mut c = TcpStream::connect(proxy).await.unwrap();
                let port = c.local_addr().unwrap().port();
                let connect = format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n");
                c.write_all(connect.as_bytes()).await.unwrap();
                let mut body = garbage(512, 7 + i as u32);
                let bytes = match hello {
                    Hello::Garbage => {
                        body[0] = 0x01;
                        body
                    }
                    Hello::GarbageBody | Hello::Truncated => {
                        // Record header (512 bytes), then a ClientHello of 508 bytes.
                        let mut b = vec![0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc];
                        b.extend_from_slice(&body[4..]);
                        if hello == Hello::Truncated {
                            b.truncate(100);
                        }
                        b
                    }
                };
                let _ = c.write_all(&bytes).await;
                let started = Instant::now();
                let out = read_until_closed(&mut c, Duration::from_secs(10)).await;
                (port, hello, out, started.elapsed())
            }));
        }
    }
    s.allowed_https().await;
    let mut results = vec![];
    for c in clients {
        results.push(c.await.unwrap());
    }
    for (port, hello, out, took) in results {
        // The CONNECT is answered (the tunnel is judged on what it carries), then the
        // connection is closed: nothing of the server's ever comes back.
        assert!(out.starts_with("HTTP/1.1 200"), "{out}");
        assert!(!out.contains("tls hello"), "{out}");
        let r = wait_record(&s.data, |r| r.source_port == port, "garbage ClientHello").await;
        assert_eq!(r.action, "Deny", "{hello:?} {r:?}");
        match hello {
            Hello::Garbage => assert!(took < timeout, "{hello:?} took {took:?}"),
            Hello::GarbageBody => {
                assert_eq!(r.reason, "UnparseableClientHello", "{r:?}");
                assert!(took < timeout, "{hello:?} took {took:?}");
            }
            Hello::Truncated => {
                assert_eq!(r.reason, "HandshakeTimeout", "{r:?}");
                assert!(
                    took >= timeout - Duration::from_millis(200),
                    "took {took:?}"
                );
            }
        }
        eprintln!("{hello:?}: {} ({:?})", r.reason, r.decided_by);
    }
}

/// Past `max_connections` the cap, not the timeout, bounds an idle crowd: the connection over
/// the cap is closed at once, unanswered, and counted (not recorded: a record per refused
/// accept would let a flood write the log). Allowed requests are served again once the header
/// timeout frees the slots. A crowd at the cap does refuse allowed connections until then —
/// which is why the default cap (10,000) sits far above what one client needs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_over_the_cap_are_closed_and_counted() {
    const CAP: usize = 20;
    let timeout = Duration::from_secs(2);
    let s = setup(timeout, CAP).await;
    let mut idle = vec![];
    for _ in 0..CAP {
        idle.push(TcpStream::connect(s.proxy()).await.unwrap());
    }
    // Let the accept loop take all of them before the one over the cap.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut over = TcpStream::connect(s.proxy()).await.unwrap();
    let out = read_until_closed(&mut over, timeout / 2).await;
    assert_eq!(out, "", "closed unanswered");
    assert_eq!(s.gw.gateway.metrics.rejected_over_limit.get(), 1);
    for mut c in idle {
        let out = read_until_closed(&mut c, timeout + Duration::from_secs(5)).await;
        assert!(out.starts_with("HTTP/1.1 408"), "{out}");
    }
    s.allowed_http().await;
}

/// One source opens idle connections up to its per-source cap (which is below the total cap):
/// more from it are closed at once, while `curl` from another loopback address gets its
/// allowed request served at once, not after the header timeout frees the idle ones.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_source_at_its_cap_does_not_starve_another_source() {
    let (dir, path) = tempdir();
    let http = http_server("127.0.0.1:0").await;
    let policy = path.join("network.yaml");
    write(&policy, &policy_yaml(http.port(), 1, 1, false));
    let data = path.join("data");
    let mut config = loopback_config(&policy, &data, &["www.allowed.test=127.0.0.1"]);
    // Long enough that the idle connections are still held when the other source asks.
    config.limits.header_timeout = Duration::from_secs(30);
    config.limits.handshake_timeout = Duration::from_secs(30);
    config.limits.max_connections = 60;
    config.limits.max_connections_per_source = 50;
    config.log_sink = Some(LogSink(Arc::new(|_: &str| {})));
    let gw = Gateway::start(config).await.unwrap();
    let proxy = gw.listen.unwrap();
    // The abusive source tries to take every slot of the total cap.
    let mut idle = vec![];
    for _ in 0..60 {
        idle.push(TcpStream::connect(proxy).await.unwrap());
    }
    let gateway = gw.gateway.clone();
    let start = Instant::now();
    while gateway.source_connections("127.0.0.1".parse().unwrap()) < 50 {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "idle connections not held"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Ten of them were over its cap: closed unanswered, at once.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut closed = 0;
    for c in idle.iter_mut() {
        let mut b = [0u8; 1];
        match tokio::time::timeout(Duration::from_millis(10), c.read(&mut b)).await {
            Ok(Ok(0)) | Ok(Err(_)) => closed += 1,
            Ok(Ok(_)) => panic!("an idle connection got an answer"),
            Err(_) => {}
        }
    }
    assert_eq!(closed, 10, "connections closed over the source's cap");
    assert_eq!(gateway.source_connections("127.0.0.1".parse().unwrap()), 50);
    let url = format!("http://www.allowed.test:{}/", http.port());
    let started = Instant::now();
    let out = curl_proxy(proxy, &url, &["--interface", "127.0.0.2"]).await;
    assert!(
        out.stdout.ends_with("\n200") && out.stdout.contains("hello from www.allowed.test"),
        "another source's allowed request failed: {} {}",
        out.stdout,
        out.stderr
    );
    assert!(started.elapsed() < Duration::from_secs(10));
    let r = wait_record(
        &data,
        |r| r.source_ip == Some("127.0.0.2".parse().unwrap()),
        "from the other source",
    )
    .await;
    assert_eq!(r.action, "Allow");
    drop(idle);
    drop(dir);
}
