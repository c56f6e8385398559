//! The explicit listener served on threads of their own (`Config::serving_threads`): one
//! listener per thread on one port (`SO_REUSEPORT`), every connection served, no socket that
//! was there first let into the port's group (none at all with one thread), and the listeners
//! gone with the gateway, or with a start that failed.

mod common;

use common::*;
use palisade_gateway::dns::DnsConfig;
use palisade_gateway::{Config, Gateway};
use socket2::{Domain, Socket, Type};
use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

/// TCP sockets listening on `port` in this network namespace (IPv4), from `/proc/net/tcp`.
fn listening_on(port: u16) -> usize {
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap();
    let local = format!(":{port:04X}");
    table
        .lines()
        .skip(1)
        .filter(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            // Field 1 is the local address, field 3 the state (0A: LISTEN).
            f.len() > 3 && f[1].ends_with(&local) && f[3] == "0A"
        })
        .count()
}

fn config(dir: &Path, http_port: u16, threads: usize) -> Config {
    let policy = dir.join("network.yaml");
    write(&policy, &policy_yaml(http_port, 1, 1, false));
    let mut config = loopback_config(&policy, &dir.join("data"), &["www.allowed.test=127.0.0.1"]);
    config.admin = None;
    config.serving_threads = threads;
    config
}

fn refused_with_addr_in_use(r: io::Result<palisade_gateway::Running>, what: &str) {
    match r {
        Err(e) => assert_eq!(e.kind(), io::ErrorKind::AddrInUse, "{what}: {e}"),
        Ok(r) => panic!("{what}: a gateway started on {:?}", r.listen),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_port_is_served_by_a_listener_per_thread_and_a_second_gateway_is_refused() {
    let (_d, dir) = tempdir();
    let http = http_server("127.0.0.1:0").await;
    let running = Gateway::start(config(&dir, http.port(), 3)).await.unwrap();
    let proxy = running.listen.unwrap();
    assert_eq!(
        listening_on(proxy.port()),
        3,
        "a listener per serving thread"
    );

    // Connections from many source ports spread over the listeners; each is served.
    let url = format!("http://www.allowed.test:{}/", http.port());
    for i in 0..24 {
        let o = curl_proxy(proxy, &url, &[]).await;
        assert_eq!(
            o.stdout.lines().last(),
            Some("200"),
            "request {i}: {}",
            o.stderr
        );
    }
    let data = dir.join("data");
    let start = Instant::now();
    loop {
        let (recs, _) = palisade_flowlog::query(&data, &Default::default()).unwrap();
        let allowed = recs.iter().filter(|r| r.action == "Allow").count();
        if allowed == 24 {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "{allowed} of 24 allow records"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // A second gateway on the same address is refused, with threads of its own or without.
    for threads in [3, 0] {
        let (_d2, dir2) = tempdir();
        let mut second = config(&dir2, http.port(), threads);
        second.listen = Some(proxy);
        refused_with_addr_in_use(
            Gateway::start(second).await,
            &format!("a second gateway ({threads} serving threads)"),
        );
    }
    assert_eq!(listening_on(proxy.port()), 3);

    drop(running);
    let start = Instant::now();
    while listening_on(proxy.port()) > 0 {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "the listeners outlived their gateway"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The probe bind (without `SO_REUSEPORT`) keeps the group closed to a socket that already
/// holds the port with `SO_REUSEPORT`, as another program of the same user could.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_port_held_by_another_socket_is_refused_even_one_that_shares_ports() {
    let (_d, dir) = tempdir();
    for reuse_port in [false, true] {
        let other = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
        other.set_reuse_address(true).unwrap();
        other.set_reuse_port(reuse_port).unwrap();
        other
            .bind(&"127.0.0.1:0".parse::<SocketAddr>().unwrap().into())
            .unwrap();
        other.listen(8).unwrap();
        let held = other.local_addr().unwrap().as_socket().unwrap();
        let mut c = config(&dir, 1, 2);
        c.listen = Some(held);
        refused_with_addr_in_use(
            Gateway::start(c).await,
            &format!("a port held by a listener with SO_REUSEPORT {reuse_port}"),
        );
        assert_eq!(listening_on(held.port()), 1, "only the other listener");
    }
}

/// One serving thread binds without `SO_REUSEPORT`: no socket can join its port later.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_single_serving_thread_shares_its_port_with_nobody() {
    let (_d, dir) = tempdir();
    let running = Gateway::start(config(&dir, 1, 1)).await.unwrap();
    let port = running.listen.unwrap();
    let late = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    late.set_reuse_address(true).unwrap();
    late.set_reuse_port(true).unwrap();
    let joined = late.bind(&port.into());
    assert_eq!(
        joined.map_err(|e| e.kind()),
        Err(io::ErrorKind::AddrInUse),
        "a later SO_REUSEPORT socket joined the listener's port"
    );
    assert_eq!(listening_on(port.port()), 1);
}

/// A start that fails after the listeners were bound (here: the DNS proxy's address is
/// taken) leaves none of them behind: the port can be bound again at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_start_leaves_no_listener_behind() {
    let (_d, dir) = tempdir();
    let taken = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let listen = free.local_addr().unwrap();
    drop(free);
    let mut c = config(&dir, 1, 2);
    c.listen = Some(listen);
    c.dns = Some(DnsConfig::new(taken.local_addr().unwrap()));
    refused_with_addr_in_use(Gateway::start(c).await, "a DNS proxy on a taken address");
    assert_eq!(
        listening_on(listen.port()),
        0,
        "a listener outlived the failed start"
    );
    std::net::TcpListener::bind(listen).expect("the port is free again");
}
