//! Load client and target server for `scripts/bench-gateway.sh` (CONNECT proxies on loopback).
//! No dependency beyond tokio; the same client drives every proxy and the direct baseline.
//!
//! ```text
//! tunnel_bench serve ADDR...                  target: echo; a chunk starting `s` streams zeros;
//!                                             answers a forwarded `CONNECT` with 200 itself
//! tunnel_bench rate PROXY|direct TARGET CONC SECS [PID [TARGET_PID]]
//!                                             new tunnels/s and per-tunnel latency; with PID
//!                                             (0: none), CPU µs (user, system) its tree spent
//!                                             per tunnel; the client's own CPU per tunnel, and
//!                                             with TARGET_PID the target's and their sum
//! TB_THREADS=N                                worker threads of the client and target (1)
//! tunnel_bench latency TARGET CONC SECS ROUNDS NAME=PROXY|direct...
//!                                             added latency: every client opens one tunnel
//!                                             through each NAME in turn, so all see the same
//!                                             noise; per NAME p50/p99 minus direct's
//! tunnel_bench mix TARGET CONC SECS NAME=PROXY@PID...
//!                                             CPU per tunnel of each proxy (pid PID's tree)
//!                                             under one load: every client opens tunnels
//!                                             through each NAME in turn, so a machine whose
//!                                             speed drifts slows them alike
//! tunnel_bench throughput PROXY|direct TARGET SECS    one established tunnel, MB/s
//! tunnel_bench idle PROXY TARGET COUNT PID            RSS growth of PID's tree per idle tunnel
//! ```
//! Every measurement prints one JSON object on stdout. Each tunnel first carries a ClientHello
//! naming the CONNECT host, as an HTTPS client's would: a gateway that reads the SNI inside a
//! tunnel (Palisade) then allows it, and every proxy relays the same bytes.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

type Res<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

async fn serve_conn(mut s: TcpStream) -> Res<()> {
    let _ = s.set_nodelay(true);
    let mut buf = vec![0u8; 64 * 1024];
    let mut n = s.read(&mut buf).await?;
    if buf[..n].starts_with(b"CONNECT ") {
        // A proxy that forwards CONNECT instead of answering it (HAProxy): answer it here.
        while !buf[..n].windows(4).any(|w| w == b"\r\n\r\n") {
            let m = s.read(&mut buf[n..]).await?;
            if m == 0 {
                return Ok(());
            }
            n += m;
        }
        s.write_all(b"HTTP/1.1 200 Connection Established\r\n\r\n")
            .await?;
        n = s.read(&mut buf).await?;
    }
    while n > 0 {
        if buf[0] == b's' {
            let zeros = vec![0u8; 64 * 1024];
            loop {
                s.write_all(&zeros).await?;
            }
        }
        s.write_all(&buf[..n]).await?;
        n = s.read(&mut buf).await?;
    }
    Ok(())
}

async fn serve(addrs: &[String]) -> Res<()> {
    let mut tasks = vec![];
    for a in addrs {
        let l = TcpListener::bind(a.as_str()).await?;
        tasks.push(tokio::spawn(async move {
            loop {
                if let Ok((s, _)) = l.accept().await {
                    tokio::spawn(serve_conn(s));
                }
            }
        }));
    }
    println!("ready");
    for t in tasks {
        t.await?;
    }
    Ok(())
}

/// A tunnel to `target` (`host:port`) through `proxy`, or a direct connection, with the
/// bytes read past the proxy's response head (none from a proxy that sends nothing early).
async fn open(
    proxy: Option<SocketAddr>,
    target: &str,
    direct: SocketAddr,
) -> Res<(TcpStream, Vec<u8>)> {
    let Some(p) = proxy else {
        let s = TcpStream::connect(direct).await?;
        s.set_nodelay(true)?;
        return Ok((s, vec![]));
    };
    let mut s = TcpStream::connect(p).await?;
    s.set_nodelay(true)?;
    s.write_all(format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n").as_bytes())
        .await?;
    // Read in chunks, not byte by byte: a byte-at-a-time head read cost the client about 40
    // system calls per tunnel, CPU that every proxy's rate paid for on a shared machine.
    // Whatever follows the head belongs to the tunnel and is handed back.
    let mut head = Vec::with_capacity(256);
    let mut buf = [0u8; 256];
    let end = loop {
        let n = s.read(&mut buf).await?;
        if n == 0 || head.len() > 8192 {
            return Err("proxy closed before answering CONNECT".into());
        }
        let from = head.len().saturating_sub(3);
        head.extend_from_slice(&buf[..n]);
        if let Some(i) = head[from..].windows(4).position(|w| w == b"\r\n\r\n") {
            break from + i + 4;
        }
    };
    if !(head.starts_with(b"HTTP/1.1 200") || head.starts_with(b"HTTP/1.0 200")) {
        return Err(format!("CONNECT refused: {}", String::from_utf8_lossy(&head[..end])).into());
    }
    let early = head.split_off(end);
    Ok((s, early))
}

/// Send a ClientHello for `target`'s host and read its echo (`early`: bytes of it already
/// read): the tunnel then carries data.
async fn hello(s: &mut TcpStream, target: &str, early: &[u8]) -> Res<()> {
    let host = target.rsplit_once(':').map_or(target, |(h, _)| h);
    let hello = palisade_gateway::sni::build_client_hello(Some(host), false, &[], 16 * 1024);
    s.write_all(&hello).await?;
    let mut echo = vec![0u8; hello.len().saturating_sub(early.len())];
    s.read_exact(&mut echo).await?;
    Ok(())
}

/// One tunnel: open, a ClientHello there and back, close.
async fn one(proxy: Option<SocketAddr>, target: &str, direct: SocketAddr) -> Res<()> {
    let (mut s, early) = open(proxy, target, direct).await?;
    hello(&mut s, target, &early).await
}

fn pct(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// `pid`'s tree CPU time now, `None` for no process (`pid` 0: the direct connection).
fn cpu_of(pid: Option<u32>) -> Option<(u64, u64)> {
    pid.filter(|&p| p != 0).map(tree_cpu_us)
}

async fn rate(
    proxy: Option<SocketAddr>,
    target: String,
    direct: SocketAddr,
    conc: usize,
    secs: f64,
    pid: Option<u32>,
    target_pid: Option<u32>,
) {
    let me = Some(std::process::id());
    let (proxy_before, load_before) = (cpu_of(pid), (cpu_of(me), cpu_of(target_pid)));
    let stop = Arc::new(AtomicBool::new(false));
    let errors = Arc::new(AtomicU64::new(0));
    let lat = Arc::new(Mutex::new(Vec::<u64>::new()));
    let start = Instant::now();
    let mut tasks = vec![];
    for _ in 0..conc {
        let (stop, errors, lat, target) =
            (stop.clone(), errors.clone(), lat.clone(), target.clone());
        tasks.push(tokio::spawn(async move {
            let mut mine = vec![];
            while !stop.load(Ordering::Relaxed) {
                let t = Instant::now();
                match tokio::time::timeout(Duration::from_secs(5), one(proxy, &target, direct))
                    .await
                {
                    Ok(Ok(())) => mine.push(t.elapsed().as_micros() as u64),
                    _ => {
                        errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            lat.lock().unwrap().extend(mine);
        }));
    }
    tokio::time::sleep(Duration::from_secs_f64(secs)).await;
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        let _ = t.await;
    }
    let elapsed = start.elapsed().as_secs_f64();
    let mut l = lat.lock().unwrap().clone();
    l.sort_unstable();
    let per = |us: u64| us as f64 / l.len().max(1) as f64;
    let spent = |before: Option<(u64, u64)>, now: Option<(u64, u64)>| {
        before
            .zip(now)
            .map(|((u0, s0), (u1, s1))| (u1.saturating_sub(u0), s1.saturating_sub(s0)))
    };
    // The proxy's own CPU time per tunnel, split user / system: what it costs, whatever else
    // loads the machine. The load generator's (this client and the target, when its pid is
    // given): what the proxy's rate must share the machine with.
    let mut cpu = String::new();
    if let Some((u, s)) = spent(proxy_before, cpu_of(pid)).filter(|_| !l.is_empty()) {
        cpu += &format!(
            ",\"cpu_us_per_tunnel\":{:.1},\"cpu_user_us_per_tunnel\":{:.1},\"cpu_system_us_per_tunnel\":{:.1}",
            per(u + s),
            per(u),
            per(s)
        );
    }
    let client = spent(load_before.0, cpu_of(me));
    let server = spent(load_before.1, cpu_of(target_pid));
    if let (Some((cu, cs)), false) = (client, l.is_empty()) {
        cpu += &format!(",\"client_cpu_us_per_tunnel\":{:.1}", per(cu + cs));
        if let Some((tu, ts)) = server {
            cpu += &format!(
                ",\"target_cpu_us_per_tunnel\":{:.1},\"load_cpu_us_per_tunnel\":{:.1}",
                per(tu + ts),
                per(cu + cs + tu + ts)
            );
        }
    }
    println!(
        "{{\"ok\":{},\"errors\":{},\"per_second\":{:.0},\"p50_us\":{},\"p99_us\":{}{cpu}}}",
        l.len(),
        errors.load(Ordering::Relaxed),
        l.len() as f64 / elapsed,
        pct(&l, 0.50),
        pct(&l, 0.99)
    );
}

/// CPU per tunnel of proxies under one load at the same time: each of `conc` clients opens
/// tunnels through every entry of `via` (name, address, pid) in turn, for `secs`. A machine
/// whose speed drifts from second to second (a shared host) then slows every proxy alike, and
/// their CPU per tunnel compares within one instant. Prints, per name, tunnels and CPU µs
/// per tunnel (user / system).
async fn mix(
    target: String,
    direct: SocketAddr,
    conc: usize,
    secs: f64,
    via: Vec<(String, SocketAddr, u32)>,
) {
    let via = Arc::new(via);
    let before: Vec<_> = via.iter().map(|v| tree_cpu_us(v.2)).collect();
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = vec![];
    for c in 0..conc {
        let (stop, via, target) = (stop.clone(), via.clone(), target.clone());
        tasks.push(tokio::spawn(async move {
            let mut done = vec![0u64; via.len()];
            let mut i = c % via.len();
            while !stop.load(Ordering::Relaxed) {
                let one = one(Some(via[i].1), &target, direct);
                if let Ok(Ok(())) = tokio::time::timeout(Duration::from_secs(5), one).await {
                    done[i] += 1;
                }
                i = (i + 1) % via.len();
            }
            done
        }));
    }
    tokio::time::sleep(Duration::from_secs_f64(secs)).await;
    stop.store(true, Ordering::Relaxed);
    let mut done = vec![0u64; via.len()];
    for t in tasks {
        if let Ok(d) = t.await {
            done.iter_mut().zip(d).for_each(|(a, b)| *a += b);
        }
    }
    let out: Vec<String> = via
        .iter()
        .zip(before)
        .zip(done)
        .map(|(((name, _, pid), (u0, s0)), n)| {
            let (u1, s1) = tree_cpu_us(*pid);
            let per = |us: u64| us as f64 / n.max(1) as f64;
            let (u, s) = (u1.saturating_sub(u0), s1.saturating_sub(s0));
            format!(
                "\"{name}\":{{\"tunnels\":{n},\"cpu_us_per_tunnel\":{:.1},\"cpu_user_us_per_tunnel\":{:.1},\"cpu_system_us_per_tunnel\":{:.1}}}",
                per(u + s),
                per(u),
                per(s)
            )
        })
        .collect();
    println!("{{{}}}", out.join(","));
}

/// Added latency of each proxy over the direct connection, measured interleaved: each of `conc`
/// clients opens one tunnel through every entry of `via` in turn (starting at a different
/// entry per client), for `rounds` rounds of `secs` each. Prints, per name, the pooled p50/p99
/// and, for proxies, those minus direct's pooled p50/p99, with each round's added p50/p99.
async fn latency(
    target: String,
    direct: SocketAddr,
    conc: usize,
    secs: f64,
    rounds: usize,
    via: Vec<(String, Option<SocketAddr>)>,
) {
    let via = Arc::new(via);
    let n = via.len();
    // samples[round][entry]
    let mut samples: Vec<Vec<Vec<u64>>> = vec![];
    let mut errors = vec![0u64; n];
    for _ in 0..rounds {
        let stop = Arc::new(AtomicBool::new(false));
        let mut tasks = vec![];
        for c in 0..conc {
            let (stop, via, target) = (stop.clone(), via.clone(), target.clone());
            tasks.push(tokio::spawn(async move {
                let mut mine = vec![vec![]; via.len()];
                let mut errs = vec![0u64; via.len()];
                let mut i = c % via.len();
                while !stop.load(Ordering::Relaxed) {
                    let t = Instant::now();
                    let proxy = via[i].1;
                    match tokio::time::timeout(Duration::from_secs(5), one(proxy, &target, direct))
                        .await
                    {
                        Ok(Ok(())) => mine[i].push(t.elapsed().as_micros() as u64),
                        _ => errs[i] += 1,
                    }
                    i = (i + 1) % via.len();
                }
                (mine, errs)
            }));
        }
        tokio::time::sleep(Duration::from_secs_f64(secs)).await;
        stop.store(true, Ordering::Relaxed);
        let mut round = vec![vec![]; n];
        for t in tasks {
            if let Ok((mine, errs)) = t.await {
                for (k, v) in mine.into_iter().enumerate() {
                    round[k].extend(v);
                }
                for (k, e) in errs.into_iter().enumerate() {
                    errors[k] += e;
                }
            }
        }
        for r in &mut round {
            r.sort_unstable();
        }
        samples.push(round);
    }
    let pooled: Vec<Vec<u64>> = (0..n)
        .map(|k| {
            let mut all: Vec<u64> = samples.iter().flat_map(|r| r[k].clone()).collect();
            all.sort_unstable();
            all
        })
        .collect();
    let d = via
        .iter()
        .position(|(name, p)| name == "direct" || p.is_none());
    let diff = |a: &[u64], b: &[u64], p: f64| pct(a, p) as i64 - pct(b, p) as i64;
    let mut out = vec![];
    for (k, (name, _)) in via.iter().enumerate() {
        let mut o = format!(
            "\"{name}\":{{\"samples\":{},\"errors\":{},\"p50_us\":{},\"p99_us\":{}",
            pooled[k].len(),
            errors[k],
            pct(&pooled[k], 0.50),
            pct(&pooled[k], 0.99)
        );
        if let Some(d) = d.filter(|&d| d != k) {
            let per_round = |p: f64| {
                samples
                    .iter()
                    .map(|r| diff(&r[k], &r[d], p).to_string())
                    .collect::<Vec<_>>()
                    .join(",")
            };
            o += &format!(
                ",\"added_p50_us\":{},\"added_p99_us\":{},\"added_p50_rounds\":[{}],\"added_p99_rounds\":[{}]",
                diff(&pooled[k], &pooled[d], 0.50),
                diff(&pooled[k], &pooled[d], 0.99),
                per_round(0.50),
                per_round(0.99)
            );
        }
        out.push(o + "}");
    }
    println!("{{{}}}", out.join(","));
}

async fn throughput(
    proxy: Option<SocketAddr>,
    target: &str,
    direct: SocketAddr,
    secs: f64,
) -> Res<()> {
    let (mut s, early) = open(proxy, target, direct).await?;
    hello(&mut s, target, &early).await?;
    s.write_all(b"s").await?;
    let mut buf = vec![0u8; 256 * 1024];
    let start = Instant::now();
    let mut total = 0u64;
    while start.elapsed().as_secs_f64() < secs {
        let n = s.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        total += n as u64;
    }
    let mb_s = total as f64 / start.elapsed().as_secs_f64() / 1e6;
    println!("{{\"bytes\":{total},\"mb_per_second\":{mb_s:.0}}}");
    Ok(())
}

/// RSS in KiB of `pid` and all its descendants.
fn tree_rss_kib(pid: u32) -> u64 {
    tree(pid)
        .iter()
        .filter_map(|p| std::fs::read_to_string(format!("/proc/{p}/status")).ok())
        .filter_map(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .sum()
}

/// CPU time in µs of `pid` and its descendants (with reaped children's): user, system.
fn tree_cpu_us(pid: u32) -> (u64, u64) {
    // SAFETY: sysconf has no preconditions.
    let per_second = u64::try_from(unsafe { libc::sysconf(libc::_SC_CLK_TCK) }).unwrap_or(100);
    let (mut user, mut system) = (0, 0);
    for stat in tree(pid)
        .iter()
        .filter_map(|p| std::fs::read_to_string(format!("/proc/{p}/stat")).ok())
    {
        let after = stat.rsplit_once(')').map(|x| x.1).unwrap_or("");
        // Fields 14–17 of proc(5): utime stime cutime cstime (11–14 after the name).
        let f: Vec<u64> = after
            .split_whitespace()
            .skip(11)
            .take(4)
            .map(|v| v.parse::<u64>().unwrap_or(0))
            .collect();
        if let [u, s, cu, cs] = f[..] {
            user += u + cu;
            system += s + cs;
        }
    }
    let us = |ticks: u64| ticks * 1_000_000 / per_second.max(1);
    (us(user), us(system))
}

/// `pid` and all its descendants.
fn tree(pid: u32) -> Vec<u32> {
    let mut pids = vec![pid];
    let mut all: Vec<(u32, u32)> = vec![];
    if let Ok(rd) = std::fs::read_dir("/proc") {
        for e in rd.flatten() {
            let Ok(p) = e.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{p}/stat")) else {
                continue;
            };
            let after = stat.rsplit_once(')').map(|x| x.1).unwrap_or("");
            if let Some(pp) = after.split_whitespace().nth(1).and_then(|x| x.parse().ok()) {
                all.push((p, pp));
            }
        }
    }
    loop {
        let before = pids.len();
        for &(p, pp) in &all {
            if pids.contains(&pp) && !pids.contains(&p) {
                pids.push(p);
            }
        }
        if pids.len() == before {
            break;
        }
    }
    pids
}

async fn idle(
    proxy: SocketAddr,
    target: &str,
    direct: SocketAddr,
    count: usize,
    pid: u32,
) -> Res<()> {
    // Warm up (thread pools, buffers), then settle.
    for _ in 0..50 {
        let _ = one(Some(proxy), target, direct).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = tree_rss_kib(pid);
    let mut held = Vec::with_capacity(count);
    for _ in 0..count {
        let (mut s, early) = open(Some(proxy), target, direct).await?;
        hello(&mut s, target, &early).await?;
        held.push(s);
    }
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let after = tree_rss_kib(pid);
    let per = (after.saturating_sub(before)) as f64 / count as f64;
    println!(
        "{{\"tunnels\":{count},\"rss_before_kib\":{before},\"rss_after_kib\":{after},\"kib_per_tunnel\":{per:.1}}}"
    );
    drop(held);
    Ok(())
}

fn usage() -> ! {
    eprintln!("usage: tunnel_bench serve ADDR... | rate PROXY|direct TARGET CONC SECS [PID [TARGET_PID]] | latency TARGET CONC SECS ROUNDS NAME=PROXY|direct... | mix TARGET CONC SECS NAME=PROXY@PID... | throughput PROXY|direct TARGET SECS | idle PROXY TARGET COUNT PID\n  TARGET is NAME:PORT=IP:PORT (the name for CONNECT, the address for direct)");
    std::process::exit(2)
}

/// `NAME:PORT=IP:PORT`.
fn target(arg: &str) -> (String, SocketAddr) {
    let (name, addr) = arg.split_once('=').unwrap_or_else(|| usage());
    (name.to_string(), addr.parse().unwrap_or_else(|_| usage()))
}

fn proxy(arg: &str) -> Option<SocketAddr> {
    if arg == "direct" {
        None
    } else {
        Some(arg.parse().unwrap_or_else(|_| usage()))
    }
}

fn main() -> Res<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    // One worker by default: on a 2-core machine the client must leave the proxy a core.
    // TB_THREADS=N for a machine whose load generator has cores of its own.
    let threads = std::env::var("TB_THREADS")
        .ok()
        .and_then(|t| t.parse().ok())
        .filter(|&t| t > 0)
        .unwrap_or(1);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()?;
    let num = |i: usize| -> f64 {
        args.get(i)
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| usage())
    };
    match args.first().map(String::as_str) {
        Some("serve") => rt.block_on(serve(&args[1..])),
        Some("rate") if (5..=7).contains(&args.len()) => {
            let (name, addr) = target(&args[2]);
            let pid = (args.len() >= 6).then(|| num(5) as u32);
            let target_pid = (args.len() == 7).then(|| num(6) as u32);
            rt.block_on(rate(
                proxy(&args[1]),
                name,
                addr,
                num(3) as usize,
                num(4),
                pid,
                target_pid,
            ));
            Ok(())
        }
        Some("latency") if args.len() >= 7 => {
            let (name, addr) = target(&args[1]);
            let via = args[5..]
                .iter()
                .map(|a| {
                    let (n, p) = a.split_once('=').unwrap_or_else(|| usage());
                    (n.to_string(), proxy(p))
                })
                .collect();
            rt.block_on(latency(
                name,
                addr,
                num(2) as usize,
                num(3),
                num(4) as usize,
                via,
            ));
            Ok(())
        }
        Some("mix") if args.len() >= 5 => {
            let (name, addr) = target(&args[1]);
            let via = args[4..]
                .iter()
                .map(|a| {
                    let (n, rest) = a.split_once('=').unwrap_or_else(|| usage());
                    let (p, pid) = rest.split_once('@').unwrap_or_else(|| usage());
                    let p = p.parse().unwrap_or_else(|_| usage());
                    (n.to_string(), p, pid.parse().unwrap_or_else(|_| usage()))
                })
                .collect();
            rt.block_on(mix(name, addr, num(2) as usize, num(3), via));
            Ok(())
        }
        Some("throughput") if args.len() == 4 => {
            let (name, addr) = target(&args[2]);
            rt.block_on(throughput(proxy(&args[1]), &name, addr, num(3)))
        }
        Some("idle") if args.len() == 5 => {
            let (name, addr) = target(&args[2]);
            let p = proxy(&args[1]).unwrap_or_else(|| usage());
            rt.block_on(idle(p, &name, addr, num(3) as usize, num(4) as u32))
        }
        _ => usage(),
    }
}
