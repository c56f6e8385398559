//! Network security groups compiled per direction into a rule classifier (NSG-4, NSG-5).
//!
//! An NSG's meaning depends on where it is applied: `VirtualNetwork` and `Internet` expand per
//! subnet (NSG-8) and ASGs per member NIC (NSG-5.3). So an NSG is compiled once per subnet it
//! serves ([`CompiledNsg::compile`] takes the subnet's [`TagContext`]).

use crate::addresses::{resolve_all, TagContext, Unresolved};
use crate::matchers::{Classifier, ClassifierOptions, ClassifierRule, PacketKey};
use ipnet::IpNet;
use palisade_model::catalog::Catalogs;
use palisade_model::{
    Access, AddressItem, Direction, NetworkSecurityGroup, Origin, PalisadeSettings, PortRange,
    Protocol, RuleMode, RuleSide, SecurityRule,
};
use serde::Serialize;
use std::collections::HashMap;

/// The six default rules of NSG-4, in order.
pub fn default_rules() -> Vec<SecurityRule> {
    let rule = |name: &str,
                priority,
                direction,
                src: AddressItem,
                dst: AddressItem,
                access,
                description: &str| {
        let side = |a: AddressItem| RuleSide {
            address_prefixes: vec![a],
            application_security_groups: vec![],
            port_ranges: vec![PortRange::ANY],
        };
        SecurityRule {
            name: name.to_string(),
            description: Some(description.to_string()),
            protocol: Protocol::Any,
            source: side(src),
            destination: side(dst),
            access,
            priority,
            direction,
            is_default: true,
            palisade: PalisadeSettings::default(),
            origin: Origin::default(),
        }
    };
    let tag = |t: &str| AddressItem::ServiceTag(t.to_string());
    use Access::*;
    use Direction::*;
    vec![
        rule(
            "AllowVnetInBound",
            65000,
            Inbound,
            tag("VirtualNetwork"),
            tag("VirtualNetwork"),
            Allow,
            "Allow inbound traffic from all VMs in VNET",
        ),
        rule(
            "AllowAzureLoadBalancerInBound",
            65001,
            Inbound,
            tag("AzureLoadBalancer"),
            AddressItem::Any,
            Allow,
            "Allow inbound traffic from azure load balancer",
        ),
        rule(
            "DenyAllInBound",
            65500,
            Inbound,
            AddressItem::Any,
            AddressItem::Any,
            Deny,
            "Deny all inbound traffic",
        ),
        rule(
            "AllowVnetOutBound",
            65000,
            Outbound,
            tag("VirtualNetwork"),
            tag("VirtualNetwork"),
            Allow,
            "Allow outbound traffic from all VMs to all VMs in VNET",
        ),
        rule(
            "AllowInternetOutBound",
            65001,
            Outbound,
            AddressItem::Any,
            tag("Internet"),
            Allow,
            "Allow outbound traffic from all VMs to Internet",
        ),
        rule(
            "DenyAllOutBound",
            65500,
            Outbound,
            AddressItem::Any,
            AddressItem::Any,
            Deny,
            "Deny all outbound traffic",
        ),
    ]
}

/// A rule as compiled: what explanations need, without the model's text forms.
#[derive(Debug, Clone, Serialize)]
pub struct CompiledRule {
    pub name: String,
    pub priority: u32,
    pub access: Access,
    pub is_default: bool,
    pub audit: bool,
    pub protocol: Protocol,
    /// Resolved sets, for explanations and effective-rule views.
    pub source: Vec<IpNet>,
    pub destination: Vec<IpNet>,
    pub source_ports: Vec<PortRange>,
    pub destination_ports: Vec<PortRange>,
    /// Items that resolved to nothing (unknown tag, unresolved expression).
    pub unresolvable: Vec<String>,
    /// Index of the rule in the model's `securityRules` (None for default rules).
    pub model_index: Option<usize>,
}

impl CompiledRule {
    /// `securityRules/<name>` or `defaultSecurityRules/<name>` (DIAG-1.2).
    pub fn qualified_name(&self) -> String {
        if self.is_default {
            format!("defaultSecurityRules/{}", self.name)
        } else {
            format!("securityRules/{}", self.name)
        }
    }

    /// Fields of `key` this rule does not match (empty = it matches).
    pub fn mismatches(&self, key: &PacketKey) -> Vec<&'static str> {
        let mut out = vec![];
        let v6 = key.dst.is_ipv6();
        if let Some(n) = self.protocol.number(v6) {
            if n != key.protocol {
                out.push("protocol");
            }
        }
        if !self.source.iter().any(|n| n.contains(&key.src)) {
            out.push("sourceAddressPrefix");
        }
        let ports = matches!(key.protocol, 6 | 17);
        if ports && !self.source_ports.iter().any(|r| r.contains(key.src_port)) {
            out.push("sourcePortRange");
        }
        if !self.destination.iter().any(|n| n.contains(&key.dst)) {
            out.push("destinationAddressPrefix");
        }
        if ports
            && !self
                .destination_ports
                .iter()
                .any(|r| r.contains(key.dst_port))
        {
            out.push("destinationPortRange");
        }
        out
    }
}

/// One direction's rules in evaluation order and their classifier.
#[derive(Debug)]
pub struct DirectionRules {
    pub rules: Vec<CompiledRule>,
    /// Classifier entry → rule index (an `Icmp` rule has one entry per family).
    entry_rule: Vec<u32>,
    classifier: Classifier,
    has_audit: bool,
}

/// The outcome of one NSG for one flow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NsgOutcome {
    /// Index into [`DirectionRules::rules`] of the deciding rule.
    pub rule: usize,
    /// Audit rules that matched before it (PAL-5.3).
    pub audit: Vec<usize>,
}

impl DirectionRules {
    fn compile(rules: Vec<CompiledRule>) -> DirectionRules {
        let mut entries = vec![];
        let mut entry_rule = vec![];
        for (i, r) in rules.iter().enumerate() {
            let ports = |p: &[PortRange]| p.iter().map(|r| (r.first, r.last)).collect::<Vec<_>>();
            let protos: Vec<(Option<u8>, Option<bool>)> = match r.protocol {
                Protocol::Any => vec![(None, None)],
                Protocol::Icmp => vec![(Some(1), Some(false)), (Some(58), Some(true))],
                p => vec![(p.number(false), None)],
            };
            for (proto, family) in protos {
                let keep = |set: &[IpNet]| -> Vec<IpNet> {
                    set.iter()
                        .filter(|n| family.is_none_or(|v6| matches!(n, IpNet::V6(_)) == v6))
                        .copied()
                        .collect()
                };
                entries.push(ClassifierRule {
                    protocol: proto,
                    src: keep(&r.source),
                    dst: keep(&r.destination),
                    src_ports: ports(&r.source_ports),
                    dst_ports: ports(&r.destination_ports),
                });
                entry_rule.push(i as u32);
            }
        }
        let classifier = Classifier::build(
            entries,
            ClassifierOptions {
                ports_only_for_tcp_udp: true,
            },
        );
        DirectionRules {
            has_audit: rules.iter().any(|r| r.audit),
            rules,
            entry_rule,
            classifier,
        }
    }

    /// First matching rule (NSG-5.1); audit rules are logged and passed over (PAL-5.3).
    pub fn evaluate(&self, key: &PacketKey) -> Option<NsgOutcome> {
        if !self.has_audit {
            let e = self.classifier.first_match(key)?;
            return Some(NsgOutcome {
                rule: self.entry_rule[e as usize] as usize,
                audit: vec![],
            });
        }
        let mut all = vec![];
        self.classifier.all_matches(key, &mut all);
        let mut audit = vec![];
        for e in all {
            let r = self.entry_rule[e as usize] as usize;
            if self.rules[r].audit {
                if !audit.contains(&r) {
                    audit.push(r);
                }
            } else {
                return Some(NsgOutcome { rule: r, audit });
            }
        }
        None
    }

    /// For a deny: the allow rule that missed by the fewest fields, the first such in evaluation
    /// order. An allow that matches the flow outright (no field differs; it can only come after
    /// the decider) is the best candidate: the flow is denied only because of the order.
    pub fn near_miss(&self, key: &PacketKey, decided: usize) -> Option<(usize, Vec<&'static str>)> {
        self.rules
            .iter()
            .enumerate()
            .filter(|(i, r)| *i != decided && r.access == Access::Allow && !r.is_default)
            .map(|(i, r)| (i, r.mismatches(key)))
            .filter(|(i, m)| !m.is_empty() || *i > decided)
            .min_by_key(|(i, m)| (m.len(), *i))
    }
}

/// An NSG compiled for one subnet context.
#[derive(Debug)]
pub struct CompiledNsg {
    pub name: String,
    pub inbound: DirectionRules,
    pub outbound: DirectionRules,
    /// A rule names `AzurePlatformDNS`/`IMDS`/`LKM`, which ends the platform exemption (NSG-8.4).
    pub names_platform_tags: bool,
    pub unresolvable: Vec<Unresolved>,
}

impl CompiledNsg {
    pub fn compile(
        nsg: &NetworkSecurityGroup,
        catalogs: &Catalogs,
        ctx: &TagContext,
        asg_members: &HashMap<String, Vec<IpNet>>,
    ) -> CompiledNsg {
        let mut unresolvable = vec![];
        let mut names_platform_tags = false;
        let mut compile_rule = |r: &SecurityRule, model_index: Option<usize>| -> CompiledRule {
            let mut side = |s: &RuleSide| -> (Vec<IpNet>, Vec<String>) {
                for a in &s.address_prefixes {
                    if let AddressItem::ServiceTag(t) = a {
                        if t.to_ascii_lowercase().starts_with("azureplatform") {
                            names_platform_tags = true;
                        }
                    }
                }
                let (mut set, bad) = resolve_all(&s.address_prefixes, catalogs, ctx);
                for asg in &s.application_security_groups {
                    if let Some(m) = asg_members.get(&asg.to_ascii_lowercase()) {
                        set.extend(m.iter().copied());
                    }
                }
                let texts = bad
                    .iter()
                    .map(|b| match b {
                        Unresolved::UnknownTag(t) => format!("unknown tag {t}"),
                        Unresolved::Expression(t) => format!("unresolved({t})"),
                    })
                    .collect();
                unresolvable.extend(bad);
                (set, texts)
            };
            let (source, mut u1) = side(&r.source);
            let (destination, u2) = side(&r.destination);
            u1.extend(u2);
            CompiledRule {
                name: r.name.clone(),
                priority: r.priority,
                access: r.access,
                is_default: r.is_default,
                audit: r.palisade.mode == RuleMode::Audit,
                protocol: r.protocol,
                source,
                destination,
                source_ports: r.source.port_ranges.clone(),
                destination_ports: r.destination.port_ranges.clone(),
                unresolvable: u1,
                model_index,
            }
        };
        let defaults = default_rules();
        let mut per_dir = |dir: Direction| -> DirectionRules {
            let mut user: Vec<(usize, &SecurityRule)> = nsg
                .security_rules
                .iter()
                .enumerate()
                .filter(|(_, r)| r.direction == dir)
                .collect();
            user.sort_by_key(|(i, r)| (r.priority, *i));
            let mut rules: Vec<CompiledRule> = user
                .into_iter()
                .map(|(i, r)| compile_rule(r, Some(i)))
                .collect();
            rules.extend(
                defaults
                    .iter()
                    .filter(|r| r.direction == dir)
                    .map(|r| compile_rule(r, None)),
            );
            DirectionRules::compile(rules)
        };
        let inbound = per_dir(Direction::Inbound);
        let outbound = per_dir(Direction::Outbound);
        CompiledNsg {
            name: nsg.name.clone(),
            inbound,
            outbound,
            names_platform_tags,
            unresolvable,
        }
    }

    pub fn direction(&self, d: Direction) -> &DirectionRules {
        match d {
            Direction::Inbound => &self.inbound,
            Direction::Outbound => &self.outbound,
        }
    }
}
