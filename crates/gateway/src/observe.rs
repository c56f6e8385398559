//! PAL-5.4 "observe" (`--observe SCOPE[,SCOPE] [--observe-until TIME]`): for flows from the
//! given scopes the firewall's default deny becomes an audit deny — the flow is let through and
//! its record says `audit: true`, `observe: <scope>` — until the window ends. A rule's deny is
//! never relaxed, and neither are the gateway's own observation checks. Pure: the scopes are
//! resolved against a snapshot, the clock is passed in.

use ipnet::IpNet;
use palisade_model::AddressItem;
use palisade_policy::firewall::{FirewallOutcome, FirewallPass};
use palisade_policy::prefixes::range_to_cidrs;
use palisade_policy::Snapshot;
use std::net::IpAddr;
use std::time::SystemTime;

/// The option as given.
#[derive(Debug, Clone, Default)]
pub struct Observe {
    /// Address prefixes, subnet names (`subnet` or `vnet/subnet`), ASG or IP group names.
    pub scopes: Vec<String>,
    /// End of the window; `None`: until the gateway stops.
    pub until: Option<SystemTime>,
}

/// A scope with the addresses it names in one snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scope {
    pub name: String,
    pub prefixes: Vec<IpNet>,
}

impl Observe {
    /// Whether the window is open at `now`.
    pub fn open_at(&self, now: SystemTime) -> bool {
        self.until.is_none_or(|u| now < u)
    }

    /// Each scope's addresses in `snap`, and the scopes that name nothing there.
    pub fn resolve(&self, snap: &Snapshot) -> (Vec<Scope>, Vec<String>) {
        let (mut found, mut unknown) = (vec![], vec![]);
        for name in &self.scopes {
            let prefixes = addresses_of(snap, name);
            if prefixes.is_empty() {
                unknown.push(name.clone());
            } else {
                found.push(Scope {
                    name: name.clone(),
                    prefixes,
                });
            }
        }
        (found, unknown)
    }
}

/// A prefix, else a subnet, an ASG (its NICs' addresses) or an IP group, by name.
fn addresses_of(snap: &Snapshot, name: &str) -> Vec<IpNet> {
    if let Ok(net) = name.parse::<IpNet>() {
        return vec![net];
    }
    if let Ok(ip) = name.parse::<IpAddr>() {
        return vec![IpNet::from(ip)];
    }
    if let Some(id) = snap.subnet_by_name(name) {
        return snap.subnet(id).prefixes.clone();
    }
    let net = &snap.network;
    let asg_members: Vec<IpNet> = net
        .network_interfaces
        .iter()
        .flat_map(|n| &n.ip_configurations)
        .filter(|c| {
            c.application_security_groups
                .iter()
                .any(|a| a.eq_ignore_ascii_case(name))
        })
        .filter_map(|c| c.private_ip_address.map(IpNet::from))
        .collect();
    if !asg_members.is_empty() {
        return asg_members;
    }
    net.ip_groups
        .iter()
        .filter(|g| g.name.eq_ignore_ascii_case(name))
        .flat_map(|g| &g.ip_addresses)
        .flat_map(|item| match item {
            AddressItem::Prefix(p) => vec![*p],
            AddressItem::Range(a, b) => range_to_cidrs(*a, *b),
            _ => vec![],
        })
        .collect()
}

/// The first scope holding `source`.
pub fn scope_of(scopes: &[Scope], source: IpAddr) -> Option<&str> {
    scopes
        .iter()
        .find(|s| s.prefixes.iter().any(|p| p.contains(&source)))
        .map(|s| s.name.as_str())
}

/// Whether `outcome` is the firewall's default deny (no rule decided it).
pub fn is_default_deny(outcome: &FirewallOutcome) -> bool {
    !outcome.allowed
        && outcome.pass == FirewallPass::FirewallDefault
        && matches!(outcome.reason, "DefaultAction" | "SniMissing")
}

/// Turn a default deny into the audit deny of `scope`: allowed, and saying so.
pub fn audit_deny(outcome: &mut FirewallOutcome, scope: &str) {
    outcome.allowed = true;
    let was = outcome
        .detail
        .as_ref()
        .map(ToString::to_string)
        .unwrap_or_default();
    outcome.detail = Some(
        format!("observe {scope}: default deny audited only, flow allowed (PAL-5.4); {was}").into(),
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use palisade_model::catalog::Catalogs;
    use palisade_model::import::import_text;
    use palisade_model::ImportOptions;
    use palisade_policy::CompileOptions;
    use std::time::Duration;

    fn snapshot() -> Snapshot {
        let yaml = r#"
apiVersion: palisade/v1
virtualNetworks:
  - {name: vnet, addressSpace: [10.0.0.0/16], subnets: [{name: app, addressPrefix: 10.0.1.0/24}]}
applicationSecurityGroups: [{name: web}]
networkInterfaces:
  - {name: nic1, ipConfigurations: [{name: c, privateIPAddress: 10.0.1.7, subnet: vnet/app, applicationSecurityGroups: [web]}]}
ipGroups:
  - {name: build-agents, ipAddresses: [192.168.5.0/24, 172.16.0.1-172.16.0.2]}
"#;
        let f = import_text("scopes.yaml", yaml, &ImportOptions::default(), None);
        assert!(!f.diagnostics.has_errors(), "{}", f.diagnostics);
        Snapshot::compile(
            &f.network,
            &Catalogs::embedded(),
            &CompileOptions::default(),
        )
    }

    #[test]
    fn pal_5_4_scopes_resolve_by_prefix_subnet_asg_and_ip_group() {
        // spec PAL-5.4: subnet, ASG, IP group.
        let o = Observe {
            scopes: ["app", "web", "build-agents", "198.51.100.0/24", "nothing"]
                .map(String::from)
                .to_vec(),
            until: None,
        };
        let (scopes, unknown) = o.resolve(&snapshot());
        assert_eq!(unknown, vec!["nothing".to_string()]);
        let of = |ip: &str| scope_of(&scopes, ip.parse().unwrap());
        assert_eq!(of("10.0.1.7"), Some("app"));
        assert_eq!(of("172.16.0.2"), Some("build-agents"));
        assert_eq!(of("172.16.0.3"), None);
        assert_eq!(of("198.51.100.9"), Some("198.51.100.0/24"));
        let asg_only = Observe {
            scopes: vec!["web".into()],
            until: None,
        };
        let (scopes, _) = asg_only.resolve(&snapshot());
        assert_eq!(scope_of(&scopes, "10.0.1.7".parse().unwrap()), Some("web"));
        assert_eq!(scope_of(&scopes, "10.0.1.8".parse().unwrap()), None);
    }

    #[test]
    fn pal_5_4_window_closes() {
        let now = SystemTime::now();
        let o = Observe {
            scopes: vec![],
            until: Some(now + Duration::from_secs(60)),
        };
        assert!(o.open_at(now));
        assert!(!o.open_at(now + Duration::from_secs(61)));
        assert!(Observe::default().open_at(now));
    }
}
