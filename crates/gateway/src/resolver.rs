//! The gateway's own resolver (FW-9, PAL-5.2): static bindings (`--resolve NAME=IP`, a hosts
//! file) first, then the system resolver. The same answers serve explicit-proxy dialing and the
//! SNI/Host ↔ address check, so a client cannot make the gateway believe a name lives elsewhere.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::Path;
use std::time::Duration;

#[derive(Debug, Clone, Default)]
pub struct Resolver {
    pub fixed: HashMap<String, Vec<IpAddr>>,
    /// Ask the system resolver for names without a fixed binding.
    pub system: bool,
}

pub fn normalize(name: &str) -> String {
    name.trim().trim_end_matches('.').to_ascii_lowercase()
}

/// `NAME=IP` items.
pub fn parse_bindings(items: &[String]) -> Result<HashMap<String, Vec<IpAddr>>, String> {
    let mut out: HashMap<String, Vec<IpAddr>> = HashMap::new();
    for item in items {
        let (name, ip) = item
            .split_once('=')
            .ok_or_else(|| format!("--resolve `{item}`: expected NAME=IP"))?;
        let ip: IpAddr = ip
            .trim()
            .parse()
            .map_err(|_| format!("--resolve `{item}`: `{ip}` is not an IP address"))?;
        out.entry(normalize(name)).or_default().push(ip);
    }
    Ok(out)
}

/// An `/etc/hosts`-format file: `IP name [name...]`, `#` comments.
pub fn parse_hosts_file(path: &Path) -> Result<HashMap<String, Vec<IpAddr>>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut out: HashMap<String, Vec<IpAddr>> = HashMap::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or("");
        let mut words = line.split_whitespace();
        let Some(ip) = words.next() else { continue };
        let ip: IpAddr = ip
            .parse()
            .map_err(|_| format!("{}:{}: `{ip}` is not an IP address", path.display(), i + 1))?;
        for name in words {
            out.entry(normalize(name)).or_default().push(ip);
        }
    }
    Ok(out)
}

#[derive(Debug)]
pub enum ResolveError {
    NotFound,
    Failed(String),
}

impl Resolver {
    pub async fn resolve(&self, name: &str) -> Result<Vec<IpAddr>, ResolveError> {
        if let Ok(ip) = name.parse::<IpAddr>() {
            return Ok(vec![ip]);
        }
        let n = normalize(name);
        if let Some(ips) = self.fixed.get(&n) {
            return Ok(ips.clone());
        }
        if !self.system {
            return Err(ResolveError::NotFound);
        }
        let lookup = tokio::net::lookup_host(format!("{n}:0"));
        let answer = tokio::time::timeout(Duration::from_secs(5), lookup).await;
        match answer {
            Ok(Ok(addrs)) => {
                let mut ips: Vec<IpAddr> = addrs.map(|a| a.ip()).collect();
                ips.dedup();
                if ips.is_empty() {
                    Err(ResolveError::NotFound)
                } else {
                    Ok(ips)
                }
            }
            Ok(Err(e)) => Err(ResolveError::Failed(e.to_string())),
            Err(_) => Err(ResolveError::Failed("timed out".into())),
        }
    }
}
