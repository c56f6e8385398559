//! The admin listener: `GET /metrics` (Prometheus text), `POST /reload`, `GET /status`,
//! `GET /healthz`. One request per connection; bind it to loopback (it has no authentication).

use crate::shutdown::{accept, reached, Phase};
use crate::{log, Gateway, ReloadOutcome};
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

pub async fn serve(gw: Arc<Gateway>, listener: TcpListener) {
    let mut draining = std::pin::pin!(reached(&gw, Phase::Draining));
    while let Some((s, _)) = accept(draining.as_mut(), &listener, "admin listener").await {
        let gw = gw.clone();
        tokio::spawn(async move {
            if let Err(e) = handle(&gw, s).await {
                log(format!("admin request: {e}"));
            }
        });
    }
}

async fn handle(gw: &Arc<Gateway>, mut s: TcpStream) -> std::io::Result<()> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 2048];
    let (method, path) = loop {
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut chunk))
            .await
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "admin timeout"))??;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
        if buf.len() > 16 * 1024 {
            return Ok(());
        }
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut req = httparse::Request::new(&mut headers);
        match req.parse(&buf) {
            Ok(httparse::Status::Complete(_)) => {
                break (
                    req.method.unwrap_or("").to_string(),
                    req.path.unwrap_or("").to_string(),
                )
            }
            Ok(httparse::Status::Partial) => continue,
            Err(_) => return reply(&mut s, "400 Bad Request", "text/plain", "bad request\n").await,
        }
    };
    match (method.as_str(), path.as_str()) {
        ("GET", "/metrics") => {
            if let Some(since) = gw.store.as_ref().and_then(|s| s.since_contact()) {
                gw.metrics.policy_store_seconds_since_contact.set(since);
            }
            let body = gw.metrics.encode();
            reply(
                &mut s,
                "200 OK",
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
                &body,
            )
            .await
        }
        ("POST", "/reload") => match gw.reload("admin POST /reload").await {
            ReloadOutcome::Applied { snapshot, closed } => {
                let body = json!({"status": "applied", "snapshot": snapshot, "closed": closed});
                reply(&mut s, "200 OK", "application/json", &format!("{body}\n")).await
            }
            ReloadOutcome::Refused { errors } => {
                let body = json!({
                    "status": "refused",
                    "snapshot": gw.active().map(|a| a.id().to_string()),
                    "errors": errors,
                });
                reply(
                    &mut s,
                    "422 Unprocessable Entity",
                    "application/json",
                    &format!("{body}\n"),
                )
                .await
            }
        },
        ("GET", "/status") => {
            let a = gw.active();
            let body = json!({
                "snapshot": a.as_ref().map(|a| a.id().to_string()),
                "firewall": a.as_ref().map(|a| a.firewall().name.clone()),
                "loaded_at": a.as_ref().map(|a| palisade_flowlog::format_time(a.loaded_at)),
                "established": gw.established_count(),
                "instance": gw.config.instance,
                "policy_store": gw.store.as_ref().map(|s| json!({
                    "up": s.is_up(),
                    "version": s.enforced(),
                    "seconds_since_contact": s.since_contact(),
                })),
                "dnat": gw.dnat_listeners().iter().map(|l| json!({
                    "protocol": l.transport.name(),
                    "frontend": l.frontend.to_string(),
                    "listening": l.bound.to_string(),
                })).collect::<Vec<_>>(),
            });
            reply(&mut s, "200 OK", "application/json", &format!("{body}\n")).await
        }
        ("GET", "/healthz") => {
            let store_down = gw.store.as_ref().filter(|s| !s.is_up());
            if let (Some(a), Some(st)) = (gw.active(), store_down) {
                // Still serving: the last good snapshot decides until the store is back.
                let since = st.since_contact().map_or("never reached".into(), |s| {
                    format!("last answered {s:.0}s ago")
                });
                let body = format!(
                    "degraded: policy store unreachable ({since}); enforcing version {} (policy {})\n",
                    st.enforced(),
                    a.id()
                );
                reply(&mut s, "200 OK", "text/plain", &body).await
            } else if gw.active().is_some() {
                reply(&mut s, "200 OK", "text/plain", "ok\n").await
            } else {
                reply(
                    &mut s,
                    "503 Service Unavailable",
                    "text/plain",
                    "no valid policy: failing closed\n",
                )
                .await
            }
        }
        _ => reply(&mut s, "404 Not Found", "text/plain", "not found\n").await,
    }
}

async fn reply(s: &mut TcpStream, status: &str, ty: &str, body: &str) -> std::io::Result<()> {
    let msg = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {ty}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(msg.as_bytes()).await?;
    s.shutdown().await
}
