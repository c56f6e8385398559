//! Test fixtures: real local servers (plain HTTP, TLS with an rcgen self-signed certificate),
//! a policy written to a temporary folder, and helpers to run `curl` / `openssl s_client`.
#![allow(dead_code)]

pub mod netns;

use palisade_flowlog::{query, FlowRecord, Query};
use palisade_gateway::policy::PolicySource;
use palisade_gateway::resolver::Resolver;
use palisade_gateway::Config;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// A plain HTTP/1.1 server answering every request with `hello from <name>`.
pub async fn http_server(bind: &str) -> SocketAddr {
    let l = TcpListener::bind(bind).await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = l.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut buf = vec![0u8; 8192];
                let mut got = vec![];
                loop {
                    let Ok(n) = s.read(&mut buf).await else {
                        return;
                    };
                    if n == 0 {
                        return;
                    }
                    got.extend_from_slice(&buf[..n]);
                    if got.windows(4).any(|w| w == b"\r\n\r\n") {
                        break;
                    }
                }
                let text = String::from_utf8_lossy(&got);
                let host = text
                    .lines()
                    .find_map(|l| l.strip_prefix("Host: "))
                    .unwrap_or("")
                    .to_string();
                let body = format!("hello from {host}\n");
                let _ = s
                    .write_all(
                        format!(
                            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                            body.len()
                        )
                        .as_bytes(),
                    )
                    .await;
                let _ = s.shutdown().await;
            });
        }
    });
    addr
}

/// A TCP server echoing what each connection sends (an upstream for tunnels).
pub async fn echo_server() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let (mut r, mut w) = s.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    addr
}

/// A TLS server with a self-signed certificate for `names`; answers one HTTP request with
/// `tls hello`. Returns its address and the certificate's PEM.
pub async fn tls_server(bind: &str, names: &[&str]) -> (SocketAddr, String) {
    let ck =
        rcgen::generate_simple_self_signed(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
            .unwrap();
    let pem = ck.cert.pem();
    let cert = rustls::pki_types::CertificateDer::from(ck.cert.der().to_vec());
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(ck.signing_key.serialize_der().into());
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(vec![cert], key)
    .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let l = TcpListener::bind(bind).await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((s, _)) = l.accept().await else { return };
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(Ok(mut tls)) =
                    tokio::time::timeout(Duration::from_secs(10), acceptor.accept(s)).await
                else {
                    return;
                };
                let mut buf = vec![0u8; 8192];
                let mut got = vec![];
                loop {
                    let Ok(n) = tls.read(&mut buf).await else {
                        return;
                    };
                    if n == 0 {
                        return;
                    }
                    got.extend_from_slice(&buf[..n]);
                    if got.windows(4).any(|w| w == b"\r\n\r\n") {
                        break;
                    }
                }
                let body = "tls hello\n";
                let _ = tls
                    .write_all(
                        format!(
                            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                            body.len()
                        )
                        .as_bytes(),
                    )
                    .await;
                let _ = tls.shutdown().await;
            });
        }
    });
    (addr, pem)
}

/// A TLS client over `stream` (e.g. a CONNECT tunnel) for `name`, trusting the certificate
/// `pem` that [`tls_server`] returned.
pub async fn tls_client(
    stream: tokio::net::TcpStream,
    pem: &str,
    name: &str,
) -> std::io::Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(rustls::pki_types::CertificateDer::from_pem_slice(pem.as_bytes()).unwrap())
        .unwrap();
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let name = rustls::pki_types::ServerName::try_from(name.to_string()).unwrap();
    tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, stream)
        .await
}

/// The test policy: a firewall with an application Deny for `blocked.test`, Allows for
/// `www.allowed.test` (HTTP) and `*.allowed.test` (HTTPS), and a network rule for `tcp_port`.
pub fn policy_yaml(http_port: u16, tls_port: u16, tcp_port: u16, with_tls_rule: bool) -> String {
    let tls_rule = if with_tls_rule {
        format!(
            "\n          - {{name: tls, sourceAddresses: ['*'], protocols: ['Https:{tls_port}'], targetFqdns: ['*.allowed.test']}}"
        )
    } else {
        String::new()
    };
    format!(
        r#"apiVersion: palisade/v1
azureFirewalls:
  - name: fw
    ipConfigurations: [{{name: c, privateIPAddress: 10.0.1.4}}]
    networkRuleCollections:
      - name: l4
        priority: 100
        action: {{type: Allow}}
        rules: [{{name: raw-tcp, protocols: [TCP], sourceAddresses: ['*'], destinationAddresses: ['*'], destinationPorts: ['{tcp_port}']}}]
    applicationRuleCollections:
      - name: deny-apps
        priority: 100
        action: {{type: Deny}}
        rules: [{{name: blocked, sourceAddresses: ['*'], protocols: ['Http:{http_port}', 'Https:{tls_port}'], targetFqdns: [blocked.test]}}]
      - name: allow-apps
        priority: 200
        action: {{type: Allow}}
        rules:
          - {{name: web, sourceAddresses: ['*'], protocols: ['Http:{http_port}'], targetFqdns: [www.allowed.test]}}{tls_rule}
"#
    )
}

/// A gateway on loopback (explicit proxy and admin on free ports) running the network in
/// `policy`, its names bound by `resolve` (`NAME=IP`) alone; no SIGHUP handler (tests share
/// the process) and no file watch. Its listeners are served on two threads of their own, as
/// `palisade gateway` serves them.
pub fn loopback_config(policy: &Path, data: &Path, resolve: &[&str]) -> Config {
    let items: Vec<String> = resolve.iter().map(|s| s.to_string()).collect();
    let (bindings, problems) = palisade_model::bindings::parse_items("--resolve", &items);
    assert!(problems.is_empty(), "{problems:?}");
    let mut config = Config::new(
        PolicySource {
            source: palisade_load::Source {
                resolve: items,
                ..palisade_load::Source::files(vec![policy.to_path_buf()])
            },
            firewall: None,
        },
        data.to_path_buf(),
    );
    config.listen = Some("127.0.0.1:0".parse().unwrap());
    config.admin = Some("127.0.0.1:0".parse().unwrap());
    config.resolver = Resolver {
        fixed: bindings,
        system: false,
    };
    config.sighup = false;
    config.watch = false;
    config.serving_threads = 2;
    config
}

pub fn write(path: &Path, text: &str) {
    // Write beside and rename, as editors do, so a reader never sees half a file.
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

pub struct Out {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

pub async fn run(cmd: &str, args: &[String]) -> Out {
    let fut = tokio::process::Command::new(cmd)
        .args(args)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(30), fut)
        .await
        .unwrap_or_else(|_| panic!("{cmd} {args:?} timed out"))
        .unwrap();
    Out {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into(),
        stderr: String::from_utf8_lossy(&out.stderr).into(),
    }
}

/// `curl` through the proxy; returns (HTTP status or 0, body, exit code).
pub async fn curl_proxy(proxy: SocketAddr, url: &str, extra: &[&str]) -> Out {
    let mut args: Vec<String> = vec![
        "-sS".into(),
        "--max-time".into(),
        "10".into(),
        "-x".into(),
        format!("http://{proxy}"),
        "-w".into(),
        "\n%{http_code}".into(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    args.push(url.into());
    run("curl", &args).await
}

/// Records naming `name`, polled until `pred` holds for one (allows are written when the
/// connection ends).
pub async fn wait_record(dir: &Path, pred: impl Fn(&FlowRecord) -> bool, what: &str) -> FlowRecord {
    let start = Instant::now();
    loop {
        let (recs, _) = query(dir, &Query::default()).unwrap();
        if let Some(r) = recs.into_iter().find(|r| pred(r)) {
            return r;
        }
        if start.elapsed() > Duration::from_secs(10) {
            let (recs, _) = query(dir, &Query::default()).unwrap();
            panic!(
                "no flow record {what}; have:\n{}",
                recs.iter()
                    .map(|r| serde_json::to_string(r).unwrap())
                    .collect::<Vec<_>>()
                    .join("\n")
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// [`wait_record`] for a test thread without a runtime (its gateway runs on a thread of its own).
pub fn wait_for(dir: &Path, what: &str, pred: impl Fn(&FlowRecord) -> bool) -> FlowRecord {
    let start = Instant::now();
    loop {
        let (recs, _) = query(dir, &Query::default()).unwrap();
        if let Some(r) = recs.iter().find(|r| pred(r)) {
            return r.clone();
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "no flow record {what}; have:\n{}",
            recs.iter()
                .map(|r| serde_json::to_string(r).unwrap())
                .collect::<Vec<_>>()
                .join("\n")
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

pub fn tempdir() -> (tempfile::TempDir, PathBuf) {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().to_path_buf();
    (d, p)
}

/// A raw HTTP request to the admin listener.
pub async fn admin(addr: SocketAddr, method: &str, path: &str) -> (u16, String) {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(
        format!("{method} {path} HTTP/1.1\r\nHost: admin\r\nContent-Length: 0\r\n\r\n").as_bytes(),
    )
    .await
    .unwrap();
    let mut out = String::new();
    tokio::time::timeout(Duration::from_secs(30), s.read_to_string(&mut out))
        .await
        .unwrap()
        .unwrap();
    let code = out
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = out
        .split_once("\r\n\r\n")
        .map(|x| x.1)
        .unwrap_or("")
        .to_string();
    (code, body)
}
