//! The bypasses found by trying the gateway as an attacker would, each shown denied and
//! recorded: domain fronting inside a CONNECT tunnel (`openssl s_client -proxy` with another
//! SNI, or none), request smuggling headers and malformed or oversized heads (raw sockets), and
//! a flood of handshake timeouts (one record each, a bounded number of log lines).

mod common;

use common::*;
use palisade_flowlog::{query, FlowRecord, Query};
use palisade_gateway::sni::build_client_hello;
use palisade_gateway::{Gateway, LogSink, Running, TunnelSni, LOG_LINES_PER_SECOND};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

struct Setup {
    _dir: tempfile::TempDir,
    data: PathBuf,
    http: SocketAddr,
    tls: SocketAddr,
    gw: Running,
    /// What the gateway's rate-limited log wrote.
    lines: Arc<Mutex<Vec<String>>>,
}

impl Setup {
    fn proxy(&self) -> SocketAddr {
        self.gw.listen.unwrap()
    }
}

async fn setup(tunnel_sni: TunnelSni, timeout: Duration) -> Setup {
    let (dir, path) = tempdir();
    let http = http_server("127.0.0.1:0").await;
    let (tls, _) = tls_server("127.0.0.1:0", &["api.allowed.test"]).await;
    let policy = path.join("network.yaml");
    write(&policy, &policy_yaml(http.port(), tls.port(), 1, true));
    let data = path.join("data");
    let mut config = loopback_config(
        &policy,
        &data,
        &[
            "www.allowed.test=127.0.0.1",
            "api.allowed.test=127.0.0.1",
            "cdn.allowed.test=127.0.0.1",
            "elsewhere.allowed.test=127.0.0.2",
            "blocked.test=127.0.0.1",
            "evil.test=127.0.0.1",
        ],
    );
    config.tunnel_sni = tunnel_sni;
    config.limits.handshake_timeout = timeout;
    config.limits.header_timeout = timeout;
    let lines = Arc::new(Mutex::new(vec![]));
    let sink = lines.clone();
    config.log_sink = Some(LogSink(Arc::new(move |l: &str| {
        sink.lock().unwrap().push(l.to_string())
    })));
    let gw = Gateway::start(config).await.unwrap();
    Setup {
        _dir: dir,
        data,
        http,
        tls,
        gw,
        lines,
    }
}

/// `openssl s_client -proxy` to `connect` with `sni` (`None`: no SNI at all).
async fn s_client(proxy: SocketAddr, connect: &str, sni: Option<&str>) -> Out {
    let mut args: Vec<String> = [
        "s_client",
        "-proxy",
        &proxy.to_string(),
        "-connect",
        connect,
    ]
    .iter()
    .map(|a| a.to_string())
    .collect();
    match sni {
        Some(n) => args.extend(["-servername".into(), n.into()]),
        None => args.push("-noservername".into()),
    }
    args.push("-brief".into());
    run("openssl", &args).await
}

fn established(o: &Out) -> bool {
    format!("{}{}", o.stdout, o.stderr).contains("CONNECTION ESTABLISHED")
}

fn records(data: &Path) -> Vec<FlowRecord> {
    query(data, &Query::default())
        .map(|r| r.0)
        .unwrap_or_default()
}

/// Send `bytes` on a fresh connection to the proxy; returns the client port and what came back
/// before the gateway closed.
async fn raw(proxy: SocketAddr, bytes: &[u8]) -> (u16, String) {
    let mut s = TcpStream::connect(proxy).await.unwrap();
    let port = s.local_addr().unwrap().port();
    s.write_all(bytes).await.unwrap();
    let mut out = vec![];
    let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out)).await;
    (port, String::from_utf8_lossy(&out).into())
}

/// The sum of K over the `suppressed K line(s)` summaries.
fn suppressed_count(summaries: &[&String]) -> usize {
    summaries
        .iter()
        .filter_map(|l| {
            l.split("suppressed ")
                .nth(1)?
                .split_whitespace()
                .next()?
                .parse::<usize>()
                .ok()
        })
        .sum()
}

async fn record_from(data: &Path, port: u16, what: &str) -> FlowRecord {
    wait_record(data, |r| r.source_port == port, what).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn domain_fronting_in_a_connect_tunnel_is_denied_and_recorded() {
    let s = setup(TunnelSni::Match, Duration::from_secs(5)).await;
    let connect = format!("api.allowed.test:{}", s.tls.port());

    // The CONNECT name in the SNI: relayed, the record names both.
    let o = s_client(s.proxy(), &connect, Some("api.allowed.test")).await;
    assert!(established(&o), "{}\n{}", o.stdout, o.stderr);
    let r = wait_record(
        &s.data,
        |r| r.tunnel_name.as_deref() == Some("api.allowed.test"),
        "the honest tunnel",
    )
    .await;
    assert_eq!(r.action, "Allow");
    assert_eq!(r.name.as_deref(), Some("api.allowed.test"));
    assert_eq!(r.rule_path().as_deref(), Some("allow-apps/tls"));

    // Another SNI behind the allowed CONNECT name: denied (reset), recorded with both names.
    let o = s_client(s.proxy(), &connect, Some("evil.test")).await;
    assert!(!established(&o), "{}\n{}", o.stdout, o.stderr);
    let r = wait_record(
        &s.data,
        |r| r.tunnel_name.as_deref() == Some("evil.test"),
        "the fronted tunnel",
    )
    .await;
    assert_eq!(
        (r.action.as_str(), r.reason.as_str(), r.name.as_deref()),
        ("Deny", "TunnelSniMismatch", Some("api.allowed.test"))
    );
    assert_eq!(r.decided_by.as_deref(), Some("tunnel-check"));
    assert_eq!(r.rule_label(), "tunnel-check");
    assert_eq!(r.protocol, "HTTPS");
    assert!(r.detail.unwrap().contains("evil.test"));

    // Another allowed name is still another name under `match`.
    let o = s_client(s.proxy(), &connect, Some("cdn.allowed.test")).await;
    assert!(!established(&o), "{}\n{}", o.stdout, o.stderr);
    let r = wait_record(
        &s.data,
        |r| r.tunnel_name.as_deref() == Some("cdn.allowed.test"),
        "cdn",
    )
    .await;
    assert_eq!(r.reason, "TunnelSniMismatch");

    // No SNI at all: judged as the transparent listener judges it (the policy's SniMissing).
    let before = records(&s.data).len();
    let o = s_client(s.proxy(), &connect, None).await;
    assert!(!established(&o), "{}\n{}", o.stdout, o.stderr);
    let r = wait_record(
        &s.data,
        |r| r.reason == "SniMissing",
        "the tunnel without SNI",
    )
    .await;
    assert_eq!(
        (
            r.action.as_str(),
            r.name.as_deref(),
            r.tunnel_name.as_deref()
        ),
        ("Deny", Some("api.allowed.test"), None)
    );
    assert_eq!(r.decided_by.as_deref(), Some("default"));
    assert_eq!(records(&s.data).len(), before + 1, "one record per tunnel");

    // `palisade logs --name evil.test` finds the fronting attempt by its tunnel name.
    let (found, _) = query(
        &s.data,
        &Query {
            name: Some("evil.test".into()),
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(found.len(), 1);
}

/// Non-TLS bytes, or plain HTTP, in a CONNECT to a TLS port: judged as in transparent mode.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_protocols_in_a_tls_tunnel_are_judged_like_transparent_ones() {
    let s = setup(TunnelSni::Match, Duration::from_secs(5)).await;
    let connect = format!(
        "CONNECT api.allowed.test:{0} HTTP/1.1\r\nHost: api.allowed.test:{0}\r\n\r\n",
        s.tls.port()
    );
    // Not TLS, not HTTP: no name, so the policy's answer for a nameless flow on that port.
    let (port, out) = raw(s.proxy(), format!("{connect}\x01\x02raw bytes").as_bytes()).await;
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    let r = record_from(&s.data, port, "raw bytes").await;
    assert_eq!(
        (r.action.as_str(), r.reason.as_str()),
        ("Deny", "SniMissing")
    );
    // HTTP on the HTTPS port, naming the CONNECT name: the HTTPS rule does not cover it.
    let (port, _) = raw(
        s.proxy(),
        format!("{connect}GET / HTTP/1.1\r\nHost: api.allowed.test\r\n\r\n").as_bytes(),
    )
    .await;
    let r = record_from(&s.data, port, "http in tls").await;
    assert_eq!(
        (r.action.as_str(), r.reason.as_str(), r.protocol.as_str()),
        ("Deny", "DefaultAction", "HTTP")
    );
    // A ClientHello that does not parse.
    let mut garbage = build_client_hello(Some("api.allowed.test"), false, &[], 16384);
    garbage[9] = 9;
    let mut bytes = connect.clone().into_bytes();
    bytes.extend_from_slice(&garbage);
    let (port, _) = raw(s.proxy(), &bytes).await;
    let r = record_from(&s.data, port, "garbage hello").await;
    assert_eq!(r.reason, "UnparseableClientHello");
}

/// `--tunnel-sni allowed`: another SNI is judged by the policy on its own and must resolve to
/// the dialed address.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tunnel_sni_allowed_judges_the_sni_by_the_policy() {
    let s = setup(TunnelSni::Allowed, Duration::from_secs(5)).await;
    let connect = format!("api.allowed.test:{}", s.tls.port());
    let o = s_client(s.proxy(), &connect, Some("cdn.allowed.test")).await;
    assert!(established(&o), "{}\n{}", o.stdout, o.stderr);
    let r = wait_record(
        &s.data,
        |r| r.tunnel_name.as_deref() == Some("cdn.allowed.test"),
        "cdn",
    )
    .await;
    assert_eq!(
        (r.action.as_str(), r.rule_path().as_deref()),
        ("Allow", Some("allow-apps/tls"))
    );
    for (sni, reason, rule) in [
        ("evil.test", "DefaultAction", "default"),
        ("blocked.test", "RuleMatched", "deny-apps/blocked"),
        (
            "elsewhere.allowed.test",
            "SniAddressMismatch",
            "address-check",
        ),
    ] {
        let o = s_client(s.proxy(), &connect, Some(sni)).await;
        assert!(!established(&o), "{sni}: {}\n{}", o.stdout, o.stderr);
        let r = wait_record(&s.data, |r| r.tunnel_name.as_deref() == Some(sni), sni).await;
        assert_eq!(
            (
                r.action.as_str(),
                r.reason.as_str(),
                r.rule_label().as_str()
            ),
            ("Deny", reason, rule),
            "{sni}"
        );
    }
}

/// RFC 9112 §3.2 / §6.3: requests whose target or length two parsers could read differently.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smuggling_headers_are_refused_with_400_and_recorded() {
    let s = setup(TunnelSni::Match, Duration::from_secs(5)).await;
    let url = format!("http://www.allowed.test:{}/", s.http.port());
    for (head, why) in [
        (
            format!("GET {url} HTTP/1.1\r\nHost: www.allowed.test\r\nHost: evil.test\r\n\r\n"),
            "more than one Host header",
        ),
        (
            format!("POST {url} HTTP/1.1\r\nHost: www.allowed.test\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n0\r\n\r\n"),
            "both Transfer-Encoding and Content-Length",
        ),
        (
            format!("POST {url} HTTP/1.1\r\nHost: www.allowed.test\r\nContent-Length: 4\r\nContent-Length: 40\r\n\r\nbody"),
            "invalid or conflicting Content-Length",
        ),
    ] {
        let (port, out) = raw(s.proxy(), head.as_bytes()).await;
        assert!(out.starts_with("HTTP/1.1 400"), "{why}: {out}");
        assert!(out.contains(why), "{out}");
        let r = record_from(&s.data, port, why).await;
        assert_eq!(
            (r.action.as_str(), r.reason.as_str()),
            ("Deny", "AmbiguousRequest"),
            "{why}"
        );
        assert_eq!(r.decided_by.as_deref(), Some("request-check"));
        assert!(r.detail.unwrap().contains(why));
        // Refused, not relayed: the only record for that connection is the deny.
        let n = records(&s.data)
            .iter()
            .filter(|r| r.source_port == port)
            .count();
        assert_eq!(n, 1);
    }
    // The same inside a tunnel opened to an address (judged like a transparent connection).
    let (port, _) = raw(
        s.proxy(),
        format!(
            "CONNECT 127.0.0.1:{0} HTTP/1.1\r\n\r\nPOST / HTTP/1.1\r\nHost: www.allowed.test\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n",
            s.http.port()
        )
        .as_bytes(),
    )
    .await;
    let r = record_from(&s.data, port, "smuggling in an address tunnel").await;
    assert_eq!(r.reason, "AmbiguousRequest");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_and_oversized_heads_get_records() {
    let s = setup(TunnelSni::Match, Duration::from_secs(5)).await;
    let (port, out) = raw(s.proxy(), b"GET\x01 / HTTP/1.1\r\n\r\n").await;
    assert!(out.starts_with("HTTP/1.1 400"), "{out}");
    let r = record_from(&s.data, port, "malformed").await;
    assert_eq!(
        (r.reason.as_str(), r.decided_by.as_deref()),
        ("MalformedRequest", Some("request-check"))
    );
    let (port, out) = raw(s.proxy(), b"CONNECT nowhere HTTP/1.1\r\n\r\n").await;
    assert!(out.starts_with("HTTP/1.1 400"), "{out}");
    assert_eq!(
        record_from(&s.data, port, "no port").await.reason,
        "MalformedRequest"
    );
    let mut big = b"GET http://www.allowed.test/ HTTP/1.1\r\nX-Pad: ".to_vec();
    big.resize(20 * 1024, b'a');
    let (port, out) = raw(s.proxy(), &big).await;
    assert!(out.starts_with("HTTP/1.1 431"), "{out}");
    assert_eq!(
        record_from(&s.data, port, "oversized").await.reason,
        "RequestHeadTooLarge"
    );
}

/// 60 clients that never finish their request head: 60 records, a handful of log lines, and a
/// summary of the suppressed ones once the reason is logged again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handshake_timeouts_are_all_recorded_but_logged_at_a_bounded_rate() {
    let s = setup(TunnelSni::Match, Duration::from_millis(300)).await;
    const N: usize = 60;
    let mut clients = vec![];
    for _ in 0..N {
        let proxy = s.proxy();
        clients.push(tokio::spawn(async move {
            raw(proxy, b"GET http://www.allowed.test/ HTTP/1.1\r\nX-Slow: ").await
        }));
    }
    let mut ports = vec![];
    for c in clients {
        let (port, out) = c.await.unwrap();
        assert!(out.starts_with("HTTP/1.1 408"), "{out}");
        ports.push(port);
    }
    let timeouts = |data: &Path| {
        records(data)
            .into_iter()
            .filter(|r| r.reason == "HandshakeTimeout")
            .collect::<Vec<_>>()
    };
    let got = timeouts(&s.data);
    assert_eq!(got.len(), N);
    assert!(got.iter().all(|r| ports.contains(&r.source_port)
        && r.action == "Deny"
        && r.decided_by.as_deref() == Some("handshake-check")));
    let logged = |lines: &Arc<Mutex<Vec<String>>>| {
        lines
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.contains("HandshakeTimeout"))
            .cloned()
            .collect::<Vec<_>>()
    };
    let first = logged(&s.lines);
    // The 60 fall in one or two one-second windows.
    assert!(
        !first.is_empty() && first.len() <= 2 * LOG_LINES_PER_SECOND as usize + 1,
        "{first:#?}"
    );
    // The next one, a second later, brings the count of those not logged.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    raw(s.proxy(), b"GET http://www.allowed.test/ HTTP/1.1\r\n").await;
    let all = logged(&s.lines);
    let summaries: Vec<&String> = all.iter().filter(|l| l.contains("suppressed")).collect();
    assert!(!summaries.is_empty(), "{all:#?}");
    let suppressed = suppressed_count(&summaries);
    let written = all.len() - summaries.len();
    assert_eq!(written + suppressed, N + 1, "{all:#?}");
    assert_eq!(timeouts(&s.data).len(), N + 1);

    // Another burst, then a shutdown: what was suppressed since is reported at the end, so every
    // timeout is either a line or counted in one.
    let mut burst = vec![];
    for _ in 0..20 {
        let proxy = s.proxy();
        burst.push(tokio::spawn(async move {
            raw(proxy, b"GET http://www.allowed.test/ HTTP/1.1\r\n").await
        }));
    }
    for b in burst {
        b.await.unwrap();
    }
    let Setup { gw, lines, .. } = s;
    gw.shutdown(Duration::ZERO).await;
    let all = logged(&lines);
    let (summaries, written): (Vec<&String>, Vec<&String>) =
        all.iter().partition(|l| l.contains("suppressed"));
    let suppressed = suppressed_count(&summaries);
    assert_eq!(written.len() + suppressed, N + 21, "{all:#?}");
}
