//! The internet's test server (`palisade lab serve`, run inside the internet namespace): on
//! each port, TCP connections get a short HTTP response (whatever they send), and UDP datagrams
//! are echoed. Enough for `curl`, `nc` and the lab's own checks.

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, UdpSocket};
use std::time::Duration;

/// Serve until the process is stopped. Fails if a port cannot be bound.
pub fn serve(address: IpAddr, ports: &[u16]) -> std::io::Result<()> {
    let mut threads = vec![];
    for &port in ports {
        let tcp = TcpListener::bind(SocketAddr::new(address, port))?;
        let udp = UdpSocket::bind(SocketAddr::new(address, port))?;
        threads.push(std::thread::spawn(move || {
            for conn in tcp.incoming().flatten() {
                std::thread::spawn(move || answer(conn, port));
            }
        }));
        threads.push(std::thread::spawn(move || {
            let mut buf = [0u8; 2048];
            while let Ok((n, from)) = udp.recv_from(&mut buf) {
                let _ = udp.send_to(&buf[..n], from);
            }
        }));
    }
    for t in threads {
        let _ = t.join();
    }
    Ok(())
}

fn answer(mut conn: std::net::TcpStream, port: u16) {
    let _ = conn.set_read_timeout(Some(Duration::from_secs(2)));
    let mut buf = [0u8; 4096];
    let _ = conn.read(&mut buf);
    let body = format!("palisade lab: port {port}\n");
    let _ = write!(
        conn,
        "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
}
