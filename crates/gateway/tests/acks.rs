//! The gateway's sockets hold their ACKs for the answer or the forwarded bytes to carry
//! (`TCP_QUICKACK` off, see `hold_acks` in `proxy.rs`), and acknowledge at once when they wait
//! for more of the client's bytes (the rest of a head, a request body): counted in segments
//! (`TCP_INFO`) and seen in `accept(2)` on real loopback sockets, and timed against a client
//! that holds its small writes until the last is acknowledged (Nagle).

mod common;

use common::*;
use palisade_gateway::{sni, Gateway};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

/// How long any read or accept in these tests may block.
const PATIENCE: Duration = Duration::from_secs(10);

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

/// A connection to `addr` whose reads give up after [`PATIENCE`].
fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(PATIENCE)).unwrap();
    s
}

/// `listener`'s next connection, waiting up to [`PATIENCE`] (`None`: none yet, with `now`).
fn accept(listener: &TcpListener, now: bool) -> Option<TcpStream> {
    listener.set_nonblocking(true).unwrap();
    let deadline = Instant::now() + PATIENCE;
    let s = loop {
        match listener.accept() {
            Ok((s, _)) => break Some(s),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                if now {
                    break None;
                }
                assert!(Instant::now() < deadline, "no connection came");
                std::thread::sleep(Duration::from_millis(1));
            }
            Err(e) => panic!("accept: {e}"),
        }
    };
    s.inspect(|s| {
        s.set_nonblocking(false).unwrap();
        s.set_read_timeout(Some(PATIENCE)).unwrap();
    })
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

/// One tunnel through `proxy` to the upstream `listener`: the segments the client had
/// received with the 200 (SYN-ACK and the 200 when the 200 carries the ACK of the CONNECT
/// head, one more when a pure ACK came first), and whether the upstream's `accept(2)` still
/// waited once the 200 was in (the handshake's last ACK held for the ClientHello, which the
/// client has not sent yet; the gateway dials before it answers).
fn one_tunnel(proxy: SocketAddr, listener: &TcpListener) -> (u32, bool) {
    let port = listener.local_addr().unwrap().port();
    let mut c = connect(proxy);
    c.set_nodelay(true).unwrap();
    c.write_all(connect_head(port).as_bytes()).unwrap();
    let head = read_head(&mut c);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let client_segs = segs_in(&c);
    let early = accept(listener, true);
    let held = early.is_none();
    let hello = sni::build_client_hello(Some("www.allowed.test"), false, &[], 16 * 1024);
    c.write_all(&hello).unwrap();
    let mut u = early.or_else(|| accept(listener, false)).unwrap();
    let mut got = vec![0u8; hello.len()];
    u.read_exact(&mut got).unwrap();
    assert_eq!(got, hello, "the ClientHello reached the upstream whole");
    (client_segs, held)
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
    // A held ACK goes alone once the delayed-ACK timer fires (40 ms at least; 200 ms for the
    // handshake's): a gateway stalled that long on a busy machine would send it, so one
    // tunnel in five is asked to show each saving.
    assert!(
        seen.iter().any(|&(segs, _)| segs == 2),
        "the 200 carried the ACK of the CONNECT head: (client segments, accept waited) {seen:?}"
    );
    assert!(
        seen.iter().any(|&(_, held)| held),
        "the upstream handshake's last ACK waited for the ClientHello: {seen:?}"
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
                let mut c = connect(proxy);
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

/// A server that answers each request once it has read its head and its `Content-Length`
/// body.
fn answering_after_the_body(listener: TcpListener) {
    std::thread::spawn(move || {
        for s in listener.incoming() {
            let Ok(mut s) = s else { return };
            let mut head = Vec::new();
            let mut byte = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") {
                if s.read(&mut byte).unwrap_or(0) == 0 {
                    break;
                }
                head.push(byte[0]);
            }
            let text = String::from_utf8_lossy(&head).to_ascii_lowercase();
            let len: usize = text
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .map_or(0, |v| v.trim().parse().unwrap());
            let mut body = vec![0u8; len];
            if s.read_exact(&mut body).is_ok() {
                let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
            }
        }
    });
}

/// A forwarded request whose body a Nagle client sends in a second write: the server answers
/// only once it has the body, so nothing would carry a held ACK of the head, and the client
/// would wait for the delayed-ACK timer before sending the body. The gateway acknowledges a
/// head that announces a body at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_body_behind_its_head_is_not_held_up() {
    let (_d, dir) = tempdir();
    let server = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = server.local_addr().unwrap().port();
    answering_after_the_body(server);
    let policy = dir.join("network.yaml");
    write(&policy, &policy_yaml(port, 1, 1, false));
    let config = loopback_config(&policy, &dir.join("data"), &["www.allowed.test=127.0.0.1"]);
    let running = Gateway::start(config).await.unwrap();
    let proxy = running.listen.unwrap();
    let times = tokio::task::spawn_blocking(move || {
        (0..5)
            .map(|_| {
                let mut c = connect(proxy);
                c.set_nodelay(false).unwrap();
                let head = format!(
                    "POST http://www.allowed.test:{port}/ HTTP/1.1\r\nHost: www.allowed.test:{port}\r\nContent-Length: 5\r\n\r\n"
                );
                let start = Instant::now();
                c.write_all(head.as_bytes()).unwrap();
                c.write_all(b"hello").unwrap();
                let answer = read_head(&mut c);
                assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
                start.elapsed()
            })
            .collect::<Vec<_>>()
    })
    .await
    .unwrap();
    assert!(
        *times.iter().min().unwrap() < Duration::from_millis(20),
        "the head acknowledged at once, the body sent at once: {times:?}"
    );
    drop(running);
}
