//! The gateway's own resolver (FW-9, PAL-5.2): static bindings first — the policy's
//! (`--resolve NAME=IP`, a hosts file; see [`crate::Gateway::resolve`]) and these — then the
//! system resolver. The same answers serve explicit-proxy dialing and the SNI/Host ↔ address
//! check, so a client cannot make the gateway believe a name lives elsewhere.

use palisade_model::bindings::{normalize, Bindings};
use std::net::IpAddr;
use std::time::Duration;

#[derive(Debug, Clone, Default)]
pub struct Resolver {
    /// Bindings beside the policy's own (for embedders that bind names outside the network).
    pub fixed: Bindings,
    /// Ask the system resolver for names without a fixed binding.
    pub system: bool,
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
