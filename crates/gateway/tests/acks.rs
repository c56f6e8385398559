//! The gateway's sockets hold their ACKs for the answer or the forwarded bytes to carry
//! (`TCP_QUICKACK` off, see `hold_acks` in `proxy.rs`), and acknowledge at once when they wait
//! for more of a head: counted in segments (`TCP_INFO`) on real loopback sockets, and timed
//! against a client that holds its small writes until the last is acknowledged (Nagle).

mod common;

use common::*;
use palisade_gateway::{sni, Gateway};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

/// Segments `s` has received so far, SYN and pure ACKs included (`tcpi_segs_in`).
fn segs_in(s: &TcpStream) -> u32 {
    // SAFETY: a zeroed `tcp_info` is a valid value, and the kernel writes at most `len` bytes.
    let mut info: libc::tcp_info = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
    let r = unsafe {
        libc::getsockopt(
            s.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            &mut info as *mut _ as *mut libc::c_void,
            &mut len,
        )
    };
    assert_eq!(r, 0, "TCP_INFO: {}", std::io::Error::last_os_error());
    info.tcpi_segs_in
}

/// Bytes queued to read on `s` now, without waiting.
fn queued(s: &TcpStream) -> usize {
    s.set_nonblocking(true).unwrap();
    let mut buf = [0u8; 4096];
    let n = s.peek(&mut buf).unwrap_or(0);
    s.set_nonblocking(false).unwrap();
    n
}

/// Read up to the end of an HTTP response head.
fn read_head(s: &mut TcpStream) -> String {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(
            s.read(&mut byte).unwrap(),
            1,
            "closed in the head: {head:?}"
        );
        head.push(byte[0]);
    }
    String::from_utf8(head).unwrap()
}

fn connect_head(port: u16) -> String {
    format!("CONNECT www.allowed.test:{port} HTTP/1.1\r\nHost: www.allowed.test:{port}\r\n\r\n")
}

/// One tunnel through `proxy` to the upstream `listener`, the client pausing before its
/// ClientHello: the segments the client had received with the 200 (SYN-ACK and the 200 when
/// the 200 carries the ACK of the CONNECT head, one more when a pure ACK came first), and the
/// bytes queued at the upstream's socket when its `accept(2)` returned (the ClientHello when
/// the handshake's last ACK rode on it, none when the ACK came first, before the pause).
fn one_tunnel(proxy: SocketAddr, listener: &TcpListener) -> (u32, usize) {
    let port = listener.local_addr().unwrap().port();
    let mut c = TcpStream::connect(proxy).unwrap();
    c.set_nodelay(true).unwrap();
    c.write_all(connect_head(port).as_bytes()).unwrap();
    let head = read_head(&mut c);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let client_segs = segs_in(&c);
    std::thread::sleep(Duration::from_millis(100));
    let hello = sni::build_client_hello(Some("www.allowed.test"), false, &[], 16 * 1024);
    c.write_all(&hello).unwrap();
    let (mut u, _) = listener.accept().unwrap();
    let at_accept = queued(&u);
    let mut got = vec![0u8; hello.len()];
    u.read_exact(&mut got).unwrap();
    assert_eq!(got, hello, "the ClientHello reached the upstream whole");
    (client_segs, at_accept)
}

/// A tunnel costs no pure ACK from the gateway where an answer follows: the 200 carries the
/// ACK of the CONNECT head, and the client's ClientHello, forwarded, carries the upstream
/// handshake's last ACK (the upstream's `accept(2)` returns with it queued).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_answer_and_the_forwarded_bytes_carry_the_acks() {
    let (_d, dir) = tempdir();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let policy = dir.join("network.yaml");
    write(&policy, &policy_yaml(1, port, 1, true));
    let config = loopback_config(&policy, &dir.join("data"), &["www.allowed.test=127.0.0.1"]);
    let running = Gateway::start(config).await.unwrap();
    let proxy = running.listen.unwrap();
    let seen = tokio::task::spawn_blocking(move || {
        (0..5)
            .map(|_| one_tunnel(proxy, &listener))
            .collect::<Vec<_>>()
    })
    .await
    .unwrap();
    // A delayed ACK waits 40 ms at least: a gateway stalled that long on a busy machine would
    // send it alone, so one tunnel in five is asked to show each saving.
    assert!(
        seen.iter().any(|&(segs, _)| segs == 2),
        "the 200 carried the ACK of the CONNECT head: (client segments, bytes at accept) {seen:?}"
    );
    assert!(
        seen.iter().any(|&(_, queued)| queued > 0),
        "the ClientHello carried the upstream handshake's last ACK: {seen:?}"
    );
    drop(running);
}

/// A client that buffers a small write until the last is acknowledged (Nagle, no
/// `TCP_NODELAY`) and sends a CONNECT head, or then a ClientHello, in two writes: the gateway
/// acknowledges the first part at once (it waits for more), so neither waits for the
/// delayed-ACK timer (40 ms at least).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_head_in_two_writes_is_acknowledged_at_once() {
    let (_d, dir) = tempdir();
    let upstream = echo_server().await;
    let policy = dir.join("network.yaml");
    write(&policy, &policy_yaml(1, upstream.port(), 1, true));
    let config = loopback_config(&policy, &dir.join("data"), &["www.allowed.test=127.0.0.1"]);
    let running = Gateway::start(config).await.unwrap();
    let proxy = running.listen.unwrap();
    let times = tokio::task::spawn_blocking(move || {
        let head = connect_head(upstream.port());
        let hello = sni::build_client_hello(Some("www.allowed.test"), false, &[], 16 * 1024);
        (0..5)
            .map(|_| {
                let mut c = TcpStream::connect(proxy).unwrap();
                c.set_nodelay(false).unwrap();
                let (a, b) = head.as_bytes().split_at(20);
                let start = Instant::now();
                c.write_all(a).unwrap();
                c.write_all(b).unwrap();
                assert!(read_head(&mut c).starts_with("HTTP/1.1 200"));
                let to_200 = start.elapsed();
                let (a, b) = hello.split_at(hello.len() / 2);
                let start = Instant::now();
                c.write_all(a).unwrap();
                c.write_all(b).unwrap();
                let mut echo = vec![0u8; hello.len()];
                c.read_exact(&mut echo).unwrap();
                assert_eq!(echo, hello);
                (to_200, start.elapsed())
            })
            .collect::<Vec<_>>()
    })
    .await
    .unwrap();
    // The fastest of five: a busy machine may slow any one, a delayed ACK slows every one.
    let best = |f: fn(&(Duration, Duration)) -> Duration| times.iter().map(f).min().unwrap();
    assert!(
        best(|t| t.0) < Duration::from_millis(20),
        "the CONNECT head's first part acknowledged at once: {times:?}"
    );
    assert!(
        best(|t| t.1) < Duration::from_millis(20),
        "the ClientHello's first part acknowledged at once: {times:?}"
    );
    drop(running);
}
