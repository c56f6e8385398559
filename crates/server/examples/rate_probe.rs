//! Open-loop latency probe for `crates/server/bench.sh`: requests sent at a fixed rate, each
//! timed from when it was *due*, not from when it was sent, so a stalled server is charged the
//! queueing it causes (no coordinated omission, which a closed-loop tool like wrk has).
//!
//! ```text
//! rate_probe URL RATE SECONDS CONNECTIONS [BODY_FILE] [TOKEN]
//! ```
//! `GET` without a body file, `POST` of its JSON with one. Prints one line:
//! `sent=N rate=R p50=… p90=… p99=… p999=… max=… errors=E` (milliseconds).

use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

struct Target {
    addr: String,
    request: Vec<u8>,
}

fn target(url: &str, body: Option<&str>, token: Option<&str>) -> Result<Target, String> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| format!("{url}: expected an http:// URL"))?;
    let (addr, path) = rest.split_once('/').unwrap_or((rest, ""));
    let mut head = format!(
        "{} /{path} HTTP/1.1\r\nHost: {addr}\r\n",
        if body.is_some() { "POST" } else { "GET" }
    );
    if let Some(t) = token {
        head.push_str(&format!("Authorization: Bearer {t}\r\n"));
    }
    if let Some(b) = body {
        head.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            b.len()
        ));
    }
    head.push_str("\r\n");
    let mut request = head.into_bytes();
    request.extend_from_slice(body.unwrap_or_default().as_bytes());
    Ok(Target {
        addr: addr.to_string(),
        request,
    })
}

/// One answer read off a keep-alive connection: its status (the body, by Content-Length, is
/// read and dropped).
async fn answer(conn: &mut BufReader<TcpStream>) -> std::io::Result<u16> {
    let mut line = String::new();
    conn.read_line(&mut line).await?;
    let status = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("no status line: {line:?}")))?;
    let mut length = 0usize;
    loop {
        line.clear();
        if conn.read_line(&mut line).await? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        if let Some((k, v)) = l.split_once(':') {
            if k.eq_ignore_ascii_case("content-length") {
                length = v.trim().parse().unwrap_or(0);
            }
        }
    }
    let mut body = vec![0; length];
    conn.read_exact(&mut body).await?;
    Ok(status)
}

/// Connection `c` of `n` sends requests c, c+n, c+2n, … each at its due time `start + i/rate`
/// (or at once when the previous answer came late); returns each latency from its due time.
async fn connection(
    t: &Target,
    c: usize,
    n: usize,
    total: usize,
    interval: Duration,
    start: Instant,
) -> (Vec<Duration>, usize) {
    let (mut latencies, mut errors) = (vec![], 0);
    let mut conn = None;
    for i in (c..total).step_by(n) {
        let due = start + interval * i as u32;
        tokio::time::sleep_until(due.into()).await;
        if conn.is_none() {
            match TcpStream::connect(&t.addr).await {
                Ok(s) => {
                    s.set_nodelay(true).ok();
                    conn = Some(BufReader::new(s));
                }
                Err(_) => {
                    errors += 1;
                    continue;
                }
            }
        }
        let s = conn.as_mut().expect("connected above");
        let ok = match s.get_mut().write_all(&t.request).await {
            Ok(()) => answer(s).await.map(|st| st < 400).unwrap_or(false),
            Err(_) => false,
        };
        if ok {
            latencies.push(due.elapsed());
        } else {
            errors += 1;
            conn = None;
        }
    }
    (latencies, errors)
}

fn ms(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64() * 1e3)
}

fn main() -> Result<(), String> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let usage = "usage: rate_probe URL RATE SECONDS CONNECTIONS [BODY_FILE] [TOKEN]";
    let [url, rate, secs, conns, rest @ ..] = &args[..] else {
        return Err(usage.into());
    };
    let number = |s: &str, what: &str| -> Result<f64, String> {
        s.parse::<f64>()
            .ok()
            .filter(|n| *n > 0.0)
            .ok_or_else(|| format!("{what} `{s}`: expected a positive number; {usage}"))
    };
    let (rate, secs) = (number(rate, "RATE")?, number(secs, "SECONDS")?);
    let conns = number(conns, "CONNECTIONS")? as usize;
    let body = match rest.first().filter(|f| !f.is_empty()) {
        Some(f) => Some(std::fs::read_to_string(f).map_err(|e| format!("{f}: {e}"))?),
        None => None,
    };
    let t = target(url, body.as_deref(), rest.get(1).map(String::as_str))?;
    let total = (rate * secs) as usize;
    let interval = Duration::from_secs_f64(1.0 / rate);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let (mut latencies, errors, took) = rt.block_on(async {
        let start = Instant::now() + Duration::from_millis(50);
        let t = &t;
        let all = futures_util::future::join_all(
            (0..conns).map(|c| connection(t, c, conns, total, interval, start)),
        )
        .await;
        let took = start.elapsed();
        let errors: usize = all.iter().map(|(_, e)| e).sum();
        let latencies: Vec<Duration> = all.into_iter().flat_map(|(l, _)| l).collect();
        (latencies, errors, took)
    });
    if latencies.is_empty() {
        return Err(format!("{url}: no request answered ({errors} errors)"));
    }
    latencies.sort();
    let at = |p: f64| latencies[((latencies.len() as f64 * p) as usize).min(latencies.len() - 1)];
    println!(
        "sent={} rate={:.0} p50={} p90={} p99={} p999={} max={} errors={errors}",
        latencies.len() + errors,
        (latencies.len() + errors) as f64 / took.as_secs_f64(),
        ms(at(0.50)),
        ms(at(0.90)),
        ms(at(0.99)),
        ms(at(0.999)),
        ms(*latencies.last().expect("not empty")),
    );
    Ok(())
}
