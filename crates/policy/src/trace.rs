//! The path of one flow through every layer (DIAG-7), with the decision of each hop and the
//! control that decided the flow, named as `../shared/scenarios/README.md` defines it: the last
//! control on the path that made a decision.

use crate::addresses::{AZURE_WIRE_SERVER, PLATFORM_ADDRESSES};
use crate::firewall::{AppProtocol, FirewallInput, FirewallOutcome, FirewallPass};
use crate::ids::{FirewallId, NsgId, SubnetId};
use crate::matchers::PacketKey;
use crate::nsg::CompiledNsg;
use crate::routes::{EffectiveRoute, RouteSource};
use crate::snapshot::{Location, Snapshot};
use palisade_model::{Access, AddressCheck, Direction, Network, NextHopType, Protocol};
use serde::Serialize;
use std::net::IpAddr;

/// A flow (DIAG-1.1).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Flow {
    pub source: IpAddr,
    pub source_port: u16,
    pub destination: IpAddr,
    pub destination_port: u16,
    pub protocol: Protocol,
    /// TLS SNI or HTTP Host, where the firewall sees it.
    pub host: Option<String>,
    /// The application protocol, when not inferred from the port.
    pub app_protocol: Option<AppProtocol>,
}

impl Flow {
    pub fn key(&self) -> PacketKey {
        let v6 = self.destination.is_ipv6();
        PacketKey {
            src: self.source,
            dst: self.destination,
            protocol: self.protocol.number(v6).unwrap_or(0),
            src_port: if self.protocol.has_ports() {
                self.source_port
            } else {
                0
            },
            dst_port: if self.protocol.has_ports() {
                self.destination_port
            } else {
                0
            },
        }
    }
}

/// How the connection a reply packet belongs to crossed the network edge.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Established {
    /// It arrived on a public address, not through a firewall.
    Direct,
    /// It went through a firewall, which holds the session.
    ViaFirewall,
}

#[derive(Debug, Clone, Default)]
pub struct TraceOptions {
    /// The packet belongs to an established connection (NSG-7.1): NSGs pass it on state.
    pub established: Option<Established>,
    /// Evaluate one resource directly: an NSG, route table or firewall name, or `nsg`,
    /// `route-table`, `firewall`.
    pub at: Option<String>,
    /// Direction for `--at` NSG evaluation.
    pub direction: Option<Direction>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Verdict {
    Allow,
    Deny,
    Drop,
    /// The path leaves what the input describes (an appliance that is not a modelled firewall).
    Unknown,
}

/// The control that decided the flow.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DecidedBy {
    /// `nsg`, `route`, `firewall` or `default` (an NSG default rule, a system route, the
    /// firewall's default action).
    pub layer: &'static str,
    pub resource: String,
    /// Firewall rule collection (with its group for policies: `<rcg>/<collection>`).
    pub collection: Option<String>,
    /// NSG rule name, route name (or system route prefix / service), firewall rule path.
    pub rule: Option<String>,
    pub priority: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NextHop {
    #[serde(rename = "type")]
    pub next_hop_type: String,
    pub address: Option<IpAddr>,
}

impl NextHop {
    /// `VirtualAppliance 10.0.1.4`, `Internet`, ... (scenarios README).
    pub fn display(&self) -> String {
        match self.address {
            Some(a) => format!("{} {a}", self.next_hop_type),
            None => self.next_hop_type.clone(),
        }
    }
}

/// The rule that almost matched, and which fields differed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NearMiss {
    pub rule: String,
    pub differs: Vec<String>,
    /// When no field differs: the deciding rule that comes first (`securityRules/x (priority
    /// 100)`); the flow is denied by rule order alone.
    pub shadowed_by: Option<String>,
}

/// PAL-5.3: an audit-mode rule that matched and was passed over, and what it would have
/// decided.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AuditMatch {
    /// The DIAG-1.2 layer the rule sits in (`SubnetNsg`, `FirewallApplication`, …).
    pub layer: &'static str,
    /// `securityRules/<name>`, or the firewall rule's path.
    pub rule: String,
    /// The would-be access: `Allow`, `Deny` or `Dnat`.
    pub access: &'static str,
}

/// One layer crossed (DIAG-1.2 fields).
#[derive(Debug, Clone, Serialize)]
pub struct Hop {
    /// `NicNsg`, `SubnetNsg`, `Route`, `FirewallDnat`, `FirewallNetwork`, `FirewallApplication`,
    /// `FirewallDefault`, `Platform`.
    pub layer: &'static str,
    pub direction: Option<Direction>,
    pub resource: String,
    pub rule: Option<String>,
    pub priority: Option<u32>,
    /// `Allow`, `Deny`, `Drop`, `Dnat`, or `Route` for a route hop that forwards.
    pub result: &'static str,
    pub reason: &'static str,
    pub detail: Option<String>,
    pub next_hop: Option<NextHop>,
    pub near_miss: Option<NearMiss>,
    /// Audit rules that matched and were passed over (PAL-5.3).
    pub audit: Vec<AuditMatch>,
    /// PAL-5.2: an application rule's allow: the `addressCheck` the gateway applies to a
    /// transparent connection (the rule's, its collection's or the firewall's; `Enforce`
    /// when none says, the gateway's default).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub address_check: Option<AddressCheck>,
}

/// How the reply of an inbound connection is routed (RT-9).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReplyPath {
    pub resource: String,
    pub route: String,
    pub next_hop: NextHop,
    pub symmetric: bool,
}

impl ReplyPath {
    /// The route that carries an asymmetric reply, as the deciding control.
    fn decider(&self) -> DecidedBy {
        DecidedBy {
            layer: if self.resource == "System Route" {
                "default"
            } else {
                "route"
            },
            resource: self.resource.clone(),
            collection: None,
            rule: Some(self.route.clone()),
            priority: None,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Trace {
    pub verdict: Verdict,
    pub decided_by: Option<DecidedBy>,
    pub hops: Vec<Hop>,
    pub next_hop: Option<NextHop>,
    pub reply: Option<ReplyPath>,
    /// NSG hops passed on connection state rather than on a rule.
    pub stateful: bool,
    /// The firewall translated the destination (DNAT).
    pub translated: Option<(IpAddr, u16)>,
    pub notes: Vec<String>,
    /// What the verdict assumed: unknown values (FMT-4) in the NSGs, route tables and
    /// firewalls the flow met before or at the decision (issue 17).
    pub assumed: Vec<String>,
    pub snapshot: String,
}

/// The most firewalls one flow passes in a row before `trace` calls the chain a routing loop (a
/// packet's hop limit would run out in a real one).
pub const APPLIANCE_LIMIT: usize = 8;

struct Tracer<'s> {
    snap: &'s Snapshot,
    flow: &'s Flow,
    key: PacketKey,
    opts: &'s TraceOptions,
    hops: Vec<Hop>,
    last_allow: Option<DecidedBy>,
    notes: Vec<String>,
    crossed_firewall: bool,
    /// The destination a firewall's DNAT rule translated the flow to (FW-4).
    translated: Option<(IpAddr, u16)>,
}

/// Outcome of a step that may end the trace.
enum Step {
    Continue,
    End(Verdict, Option<DecidedBy>),
}

impl Snapshot {
    /// Trace a flow through every layer the network puts in its way (DIAG-7).
    pub fn trace(&self, flow: &Flow, opts: &TraceOptions) -> Trace {
        let mut t = Tracer {
            snap: self,
            flow,
            key: flow.key(),
            opts,
            hops: vec![],
            last_allow: None,
            notes: vec![],
            crossed_firewall: false,
            translated: None,
        };
        let (verdict, decided_by, next_hop, reply) = t.run();
        let assumed = assumed(&self.network, t.hops.iter().map(|h| h.resource.as_str()));
        Trace {
            assumed,
            verdict,
            decided_by,
            hops: t.hops,
            next_hop,
            reply,
            stateful: opts.established.is_some(),
            translated: t.translated,
            notes: t.notes,
            snapshot: self.id.clone(),
        }
    }
}

impl Snapshot {
    /// The subnet a firewall sits in (that of its first private address in a subnet): its
    /// routes carry what the firewall lets through (DIAG-7). Trace and the reachability engine
    /// ask the same question here.
    pub fn firewall_subnet(&self, fw: FirewallId) -> Option<SubnetId> {
        self.firewall(fw)
            .private_ip_addresses
            .iter()
            .find_map(|ip| self.locate(*ip).subnet)
    }
}

/// The unknown values (FMT-4) of the resources a question met, each said once: "`field` of
/// 'resource' is unknown (why); ...". A firewall brings its policy and the policy's base. Unknown
/// names are left out: a name joins its references by its expression text either way.
pub fn assumed<'a>(network: &Network, resources: impl IntoIterator<Item = &'a str>) -> Vec<String> {
    let mut owners: Vec<String> = vec![];
    for r in resources {
        owners.push(r.to_ascii_lowercase());
        let policy = network
            .azure_firewalls
            .iter()
            .filter(|f| f.name.eq_ignore_ascii_case(r))
            .filter_map(|f| f.firewall_policy.as_deref());
        for p in policy {
            owners.push(p.to_ascii_lowercase());
            let base = network
                .firewall_policy(p)
                .and_then(|p| p.base_policy.as_deref());
            owners.extend(base.map(str::to_ascii_lowercase));
        }
    }
    let mut out: Vec<String> = vec![];
    for u in network.unknowns.iter().filter(|u| u.field != "name") {
        let res = u.resource.to_ascii_lowercase();
        let met = owners.iter().any(|o| {
            res == *o
                || res
                    .strip_prefix(o.as_str())
                    .is_some_and(|t| t.starts_with('/'))
        });
        let line = format!(
            "{}; evaluated without it (an unknown value matches nothing)",
            u.describe()
        );
        if met && !out.contains(&line) {
            out.push(line);
        }
    }
    out
}

type Outcome = (
    Verdict,
    Option<DecidedBy>,
    Option<NextHop>,
    Option<ReplyPath>,
);

impl Tracer<'_> {
    fn run(&mut self) -> Outcome {
        if let Some(at) = self.opts.at.clone() {
            return self.run_at(&at);
        }
        let src = self.snap.locate(self.flow.source);
        let dst = self.snap.locate(self.flow.destination);
        if src.subnet.is_some() {
            return self.leaving_workload(src, dst);
        }
        if dst.subnet.is_some() || self.snap.firewall_frontend(self.flow.destination).is_some() {
            return self.arriving_from_outside(dst);
        }
        self.partial()
    }

    /// A flow leaving a workload: NIC NSG out, subnet NSG out, route, then what the route says.
    fn leaving_workload(&mut self, src: Location, dst: Location) -> Outcome {
        let s = src.subnet.expect("caller checked");
        let nic_nsg = src.nic.and_then(|n| self.snap.nic(n).nsg);
        let subnet_nsg = self.snap.subnet(s).nsg;
        for (layer, nsg) in [("NicNsg", nic_nsg), ("SubnetNsg", subnet_nsg)] {
            if let Some(n) = nsg {
                if let Step::End(v, d) = self.nsg(layer, n, Direction::Outbound, true) {
                    return (v, d, None, None);
                }
            }
        }
        let Some((prefix, route)) = self.snap.subnet(s).routes.lookup(self.flow.destination) else {
            self.hop_route(None, "Drop", "NoRoute", None);
            return (Verdict::Drop, Some(no_route_decider()), None, None);
        };
        let route = route.clone();
        let hop = next_hop(&route);
        let by_route = route_decider(&route);
        if route.next_hop_type == NextHopType::None {
            self.hop_route(
                Some((&route, prefix)),
                "Drop",
                "RouteNone",
                Some(hop.clone()),
            );
            return (Verdict::Drop, Some(by_route), Some(hop), None);
        }
        if route.drops {
            self.hop_route(
                Some((&route, prefix)),
                "Drop",
                route.invalid_reason.unwrap_or("NextHopUnreachable"),
                Some(hop.clone()),
            );
            return (Verdict::Drop, Some(by_route), Some(hop), None);
        }
        self.hop_route(
            Some((&route, prefix)),
            "Route",
            "RuleMatched",
            Some(hop.clone()),
        );
        match route.next_hop_type {
            NextHopType::VirtualAppliance => {
                if self.opts.established == Some(Established::Direct) {
                    self.notes.push(
                        "the reply is sent to an appliance that never saw the request (RT-9)"
                            .into(),
                    );
                    return (Verdict::Drop, Some(by_route), Some(hop), None);
                }
                let Some(ip) = route.next_hop_ip_address else {
                    return (Verdict::Drop, Some(by_route), Some(hop), None);
                };
                let Some(fw) = self.snap.firewall_at(ip) else {
                    self.notes.push(format!(
                        "next hop {ip} is not a firewall in the input; its decision is unknown"
                    ));
                    return (Verdict::Unknown, Some(by_route), Some(hop), None);
                };
                if self.opts.established == Some(Established::ViaFirewall) {
                    return (Verdict::Allow, Some(by_route), Some(hop), None);
                }
                let outcome = self.firewall(fw, &self.key.clone());
                let mut decided = firewall_decider(self.snap, fw, &outcome);
                if !outcome.allowed {
                    return (Verdict::Deny, Some(decided), Some(hop), None);
                }
                self.crossed_firewall = true;
                let mut leaving = self.key;
                if let Some(to) = outcome.translated {
                    leaving = self.translate(leaving, to);
                }
                if let Step::End(v, d) = self.leaving_firewall(fw, leaving, &mut decided) {
                    return (v, d, Some(hop), None);
                }
                let dloc = self.snap.locate(leaving.dst);
                if dloc.subnet.is_some() {
                    if let Step::End(v, d) = self.inbound_nsgs(dloc) {
                        return (v, d, Some(hop), None);
                    }
                    let reply = self.internal_reply(dloc, Some(ip));
                    if let Some(r) = &reply {
                        if !r.symmetric {
                            let d = r.decider();
                            return (Verdict::Drop, Some(d), Some(hop), reply);
                        }
                    }
                    return (Verdict::Allow, Some(decided), Some(hop), reply);
                }
                (Verdict::Allow, Some(decided), Some(hop), None)
            }
            NextHopType::VnetLocal | NextHopType::VNetPeering => {
                if dst.subnet.is_none() {
                    self.notes.push(
                        "the destination is inside the address space but in no subnet of the input"
                            .into(),
                    );
                    let d = self.last_allow.clone().unwrap_or(by_route);
                    return (Verdict::Allow, Some(d), Some(hop), None);
                }
                if let Step::End(v, d) = self.inbound_nsgs(dst) {
                    return (v, d, Some(hop), None);
                }
                let reply = if self.opts.established.is_none() {
                    self.internal_reply(dst, None)
                } else {
                    None
                };
                if let Some(r) = &reply {
                    if !r.symmetric {
                        let d = r.decider();
                        self.notes.push(
                            "the reply passes a firewall that never saw the request (RT-9)".into(),
                        );
                        return (Verdict::Drop, Some(d), Some(hop), reply);
                    }
                }
                let d = self.last_allow.clone().unwrap_or(by_route);
                (Verdict::Allow, Some(d), Some(hop), reply)
            }
            _ => {
                // Internet, service endpoint, gateway: the platform carries it on.
                if self.opts.established == Some(Established::ViaFirewall) {
                    self.notes.push(
                        "the reply bypasses the firewall that holds the session (RT-9)".into(),
                    );
                    return (Verdict::Drop, Some(by_route), Some(hop), None);
                }
                (Verdict::Allow, Some(by_route), Some(hop), None)
            }
        }
    }

    /// A flow arriving from outside: (DNAT at a firewall frontend,) subnet NSG in, NIC NSG in,
    /// then the reply check (scenarios README, "Reply check").
    fn arriving_from_outside(&mut self, dst: Location) -> Outcome {
        let mut dst = dst;
        let mut decided_fw = None;
        if let Some(fw) = self.snap.firewall_frontend(self.flow.destination) {
            let outcome = self.firewall(fw, &self.key.clone());
            let mut decided = firewall_decider(self.snap, fw, &outcome);
            if !outcome.allowed {
                return (Verdict::Deny, Some(decided), None, None);
            }
            if let Some(to @ (ip, _)) = outcome.translated {
                self.key = self.translate(self.key, to);
                dst = self.snap.locate(ip);
                // FW-4: towards a private address the source becomes the firewall's, so the
                // destination's NSGs see the firewall and the reply returns to it.
                if let Some(fw_ip) = self.snap.firewall(fw).private_ip_addresses.first() {
                    if !self.snap.firewall(fw).is_public(ip) {
                        self.key.src = *fw_ip;
                    }
                }
                if let Step::End(v, d) = self.leaving_firewall(fw, self.key, &mut decided) {
                    return (v, d, None, None);
                }
            }
            self.crossed_firewall = true;
            decided_fw = Some(decided);
            if dst.subnet.is_none() {
                return (Verdict::Allow, decided_fw, None, None);
            }
        }
        if let Step::End(v, d) = self.inbound_nsgs(dst) {
            return (v, d, None, None);
        }
        if decided_fw.is_some() {
            self.notes.push(
                "DNAT: the reply returns through the firewall that translated the request (FW-4)"
                    .into(),
            );
            return (Verdict::Allow, decided_fw, None, None);
        }
        let decided = self.last_allow.clone();
        let platform = self.flow.source == AZURE_WIRE_SERVER;
        if self.opts.established.is_some()
            || platform
            || self.snap.in_virtual_network(self.flow.source)
        {
            return (Verdict::Allow, decided, None, None);
        }
        let Some(s) = dst.subnet else {
            return (Verdict::Allow, decided, None, None);
        };
        // RT-9: the reply is routed on its own, from the destination's subnet to the source.
        let Some((prefix, route)) = self.snap.subnet(s).routes.lookup(self.flow.source) else {
            return (Verdict::Drop, None, None, None);
        };
        let route = route.clone();
        let hop = next_hop(&route);
        let symmetric = route.next_hop_type == NextHopType::Internet;
        let reply = ReplyPath {
            resource: route.resource(),
            route: route.label(),
            next_hop: hop.clone(),
            symmetric,
        };
        let mut h = route_hop(
            &route,
            prefix,
            if symmetric { "Route" } else { "Drop" },
            if symmetric {
                "RuleMatched"
            } else {
                "Asymmetric"
            },
            Some(hop.clone()),
        );
        h.direction = Some(Direction::Outbound);
        h.detail = Some(format!(
            "reply to {} routed by {}",
            self.flow.source,
            route.label()
        ));
        self.hops.push(h);
        if symmetric {
            (Verdict::Allow, decided, Some(hop), Some(reply))
        } else {
            self.notes
                .push("the reply leaves by another path than the request arrived by (RT-9)".into());
            (
                Verdict::Drop,
                Some(route_decider(&route)),
                Some(hop),
                Some(reply),
            )
        }
    }

    /// DIAG-7: what a firewall lets through leaves by its subnet's routes — a route to `None`
    /// there (or no route) drops it after the firewall allowed it. A route to another
    /// appliance (RT-2 `VirtualAppliance`) takes it there: a firewall judges it in turn and its
    /// own subnet's routes carry it on (`decided` becomes that firewall's rule, the last control
    /// that decided); anything else there is unknown. A chain that comes back to a firewall it
    /// passed, or passes more than [`APPLIANCE_LIMIT`], is a routing loop and drops the flow.
    /// `key` is the packet as it leaves `fw` (translated destination, SNAT source).
    fn leaving_firewall(
        &mut self,
        fw: FirewallId,
        mut key: PacketKey,
        decided: &mut DecidedBy,
    ) -> Step {
        let mut passed = vec![fw];
        loop {
            let fw = *passed.last().expect("starts with one");
            let Some(s) = self.snap.firewall_subnet(fw) else {
                return Step::Continue;
            };
            let destination = key.dst;
            let Some((prefix, route)) = self.snap.subnet(s).routes.lookup(destination) else {
                self.hop_route(None, "Drop", "NoRoute", None);
                return Step::End(Verdict::Drop, Some(no_route_decider()));
            };
            let route = route.clone();
            let hop = Some(next_hop(&route));
            if route.next_hop_type == NextHopType::None || route.drops {
                let reason = if route.next_hop_type == NextHopType::None {
                    "RouteNone"
                } else {
                    route.invalid_reason.unwrap_or("NextHopUnreachable")
                };
                self.hop_route(Some((&route, prefix)), "Drop", reason, hop);
                self.notes.push(format!(
                    "the firewall's subnet routes {destination} by {} and drops it",
                    route.label()
                ));
                return Step::End(Verdict::Drop, Some(route_decider(&route)));
            }
            let appliance = (route.next_hop_type == NextHopType::VirtualAppliance)
                .then_some(route.next_hop_ip_address)
                .flatten();
            let Some(ip) = appliance else {
                self.hop_route(Some((&route, prefix)), "Route", "RuleMatched", hop);
                return Step::Continue;
            };
            let Some(next) = self.snap.firewall_at(ip) else {
                self.hop_route(Some((&route, prefix)), "Route", "RuleMatched", hop);
                self.notes.push(format!(
                    "next hop {ip} is not a firewall in the input; its decision is unknown"
                ));
                return Step::End(Verdict::Unknown, Some(route_decider(&route)));
            };
            if passed.contains(&next) || passed.len() >= APPLIANCE_LIMIT {
                self.hop_route(Some((&route, prefix)), "Drop", "RoutingLoop", hop);
                let names: Vec<&str> = passed
                    .iter()
                    .chain([&next])
                    .map(|f| self.snap.firewall(*f).name.as_str())
                    .collect();
                self.notes.push(format!(
                    "routing loop: {} (the packet's hop limit runs out)",
                    names.join(" → ")
                ));
                return Step::End(Verdict::Drop, Some(route_decider(&route)));
            }
            self.hop_route(Some((&route, prefix)), "Route", "RuleMatched", hop);
            let outcome = self.firewall(next, &key);
            let by_next = firewall_decider(self.snap, next, &outcome);
            if !outcome.allowed {
                return Step::End(Verdict::Deny, Some(by_next));
            }
            *decided = by_next;
            if let Some(to) = outcome.translated {
                key = self.translate(key, to);
            }
            // FW-8: the next appliance sees the address the firewall sends from.
            if outcome.snat || outcome.pass == FirewallPass::FirewallApplication {
                if let Some(own) = self.snap.firewall(next).private_ip_addresses.first() {
                    key.src = *own;
                }
            }
            passed.push(next);
        }
    }

    /// The reply of a flow between two subnets: routed from the destination back to the source.
    fn internal_reply(
        &mut self,
        dst: Location,
        request_firewall: Option<IpAddr>,
    ) -> Option<ReplyPath> {
        let s = dst.subnet?;
        let (_, route) = self.snap.subnet(s).routes.lookup(self.flow.source)?;
        let hop = next_hop(route);
        let reply_fw = (route.next_hop_type == NextHopType::VirtualAppliance)
            .then_some(route.next_hop_ip_address)
            .flatten();
        let stateful_reply_fw = reply_fw.is_some_and(|ip| self.snap.firewall_at(ip).is_some());
        let symmetric = match (request_firewall, reply_fw) {
            (Some(a), Some(b)) => a == b,
            (None, Some(_)) => !stateful_reply_fw,
            (Some(_), None) => false,
            (None, None) => route.next_hop_type != NextHopType::None,
        };
        Some(ReplyPath {
            resource: route.resource(),
            route: route.label(),
            next_hop: hop,
            symmetric,
        })
    }

    fn inbound_nsgs(&mut self, dst: Location) -> Step {
        let subnet_nsg = dst.subnet.and_then(|s| self.snap.subnet(s).nsg);
        let nic_nsg = dst.nic.and_then(|n| self.snap.nic(n).nsg);
        for (layer, nsg) in [("SubnetNsg", subnet_nsg), ("NicNsg", nic_nsg)] {
            if let Some(n) = nsg {
                if let Step::End(v, d) = self.nsg(layer, n, Direction::Inbound, false) {
                    return Step::End(v, d);
                }
            }
        }
        Step::Continue
    }

    /// Evaluate one NSG; a deny ends the trace (NSG-6).
    fn nsg(
        &mut self,
        layer: &'static str,
        n: NsgId,
        dir: Direction,
        outbound_from_nic: bool,
    ) -> Step {
        let nsg: &CompiledNsg = self.snap.nsg(n);
        let mut hop = Hop {
            layer,
            direction: Some(dir),
            resource: nsg.name.clone(),
            rule: None,
            priority: None,
            result: "Allow",
            reason: "ReturnTraffic",
            detail: None,
            next_hop: None,
            near_miss: None,
            audit: vec![],
            address_check: None,
        };
        if self.opts.established.is_some() {
            self.hops.push(hop);
            self.last_allow = Some(DecidedBy {
                layer: "nsg",
                resource: nsg.name.clone(),
                collection: None,
                rule: None,
                priority: None,
            });
            return Step::Continue;
        }
        if outbound_from_nic
            && !nsg.names_platform_tags
            && PLATFORM_ADDRESSES.contains(&self.flow.destination)
        {
            hop.layer = "Platform";
            hop.reason = "PlatformExempt";
            self.hops.push(hop);
            return Step::Continue;
        }
        let rules = nsg.direction(dir);
        let Some(outcome) = rules.evaluate(&self.key) else {
            hop.result = "Deny";
            hop.reason = "DefaultAction";
            self.hops.push(hop);
            return Step::End(Verdict::Deny, None);
        };
        let r = &rules.rules[outcome.rule];
        hop.rule = Some(r.qualified_name());
        hop.priority = Some(r.priority);
        hop.reason = "RuleMatched";
        hop.audit = outcome
            .audit
            .iter()
            .map(|a| AuditMatch {
                layer: hop.layer,
                rule: rules.rules[*a].qualified_name(),
                access: match rules.rules[*a].access {
                    Access::Allow => "Allow",
                    Access::Deny => "Deny",
                },
            })
            .collect();
        if !r.unresolvable.is_empty() {
            hop.detail = Some(format!(
                "items resolving to nothing: {}",
                r.unresolvable.join(", ")
            ));
        }
        let decided = DecidedBy {
            layer: if r.is_default { "default" } else { "nsg" },
            resource: nsg.name.clone(),
            collection: None,
            rule: Some(r.name.clone()),
            priority: Some(r.priority),
        };
        if r.access == Access::Deny {
            hop.result = "Deny";
            hop.near_miss = rules
                .near_miss(&self.key, outcome.rule)
                .map(|(i, m)| NearMiss {
                    rule: rules.rules[i].qualified_name(),
                    shadowed_by: m
                        .is_empty()
                        .then(|| format!("{} (priority {})", r.qualified_name(), r.priority)),
                    differs: m.into_iter().map(str::to_string).collect(),
                });
            self.hops.push(hop);
            return Step::End(Verdict::Deny, Some(decided));
        }
        self.hops.push(hop);
        self.last_allow = Some(decided);
        Step::Continue
    }

    /// `key` with its destination translated to `to` by a firewall's DNAT rule (FW-4), recorded
    /// as the trace's translation: the packet followed and the translation reported stay in step.
    fn translate(&mut self, mut key: PacketKey, to: (IpAddr, u16)) -> PacketKey {
        (key.dst, key.dst_port) = to;
        self.translated = Some(to);
        key
    }

    fn firewall(&mut self, fw: FirewallId, key: &PacketKey) -> FirewallOutcome {
        let f = self.snap.firewall(fw);
        let input = FirewallInput {
            key: *key,
            host: self.flow.host.as_deref(),
            app_protocol: self.flow.app_protocol,
        };
        let outcome = f.evaluate(&input);
        let near_miss = (!outcome.allowed && outcome.pass == FirewallPass::FirewallDefault)
            .then(|| f.near_miss(&input))
            .flatten()
            .map(|(r, m)| NearMiss {
                rule: r.path(),
                differs: m,
                shadowed_by: None,
            });
        let layer = match outcome.pass {
            FirewallPass::FirewallDnat => "FirewallDnat",
            FirewallPass::FirewallNetwork => "FirewallNetwork",
            FirewallPass::FirewallApplication => "FirewallApplication",
            FirewallPass::FirewallDefault => "FirewallDefault",
        };
        self.hops.push(Hop {
            layer,
            direction: None,
            resource: outcome
                .rule
                .as_ref()
                .map(|r| r.resource.clone())
                .unwrap_or_else(|| f.name.clone()),
            rule: outcome.rule.as_ref().map(|r| r.path()),
            priority: outcome.rule.as_ref().map(|r| r.rule_collection_priority),
            result: match (outcome.pass, outcome.allowed) {
                (FirewallPass::FirewallDnat, _) => "Dnat",
                (_, true) => "Allow",
                (_, false) => "Deny",
            },
            reason: outcome.reason,
            detail: outcome.detail.as_ref().map(ToString::to_string),
            next_hop: None,
            near_miss,
            audit: outcome.audit_matches(),
            address_check: (outcome.allowed && outcome.pass == FirewallPass::FirewallApplication)
                .then(|| outcome.address_check(AddressCheck::Enforce)),
        });
        outcome
    }

    fn hop_route(
        &mut self,
        route: Option<(&EffectiveRoute, ipnet::IpNet)>,
        result: &'static str,
        reason: &'static str,
        hop: Option<NextHop>,
    ) {
        let h = match route {
            Some((r, p)) => route_hop(r, p, result, reason, hop),
            None => Hop {
                layer: "Route",
                direction: Some(Direction::Outbound),
                resource: "System Route".into(),
                rule: None,
                priority: None,
                result,
                reason,
                detail: None,
                next_hop: hop,
                near_miss: None,
                audit: vec![],
                address_check: None,
            },
        };
        self.hops.push(h);
    }

    /// Inputs that hold only some layers (a lone NSG, firewall or route table): evaluate what
    /// is there, in path order.
    fn partial(&mut self) -> Outcome {
        let snap = self.snap;
        let mut decided = None;
        if snap.network.network_security_groups.len() == 1 {
            let name = snap.network.network_security_groups[0]
                .name
                .to_ascii_lowercase();
            let n = snap
                .unattached_nsg(&name)
                .expect("every NSG is compiled unattached");
            let dir = self.opts.direction.unwrap_or(Direction::Inbound);
            if let Step::End(v, d) = self.nsg("SubnetNsg", n, dir, false) {
                return (v, d, None, None);
            }
            decided = self.last_allow.clone();
        } else if snap.network.network_security_groups.len() > 1 {
            self.notes
                .push("several NSGs and no subnet holding the flow: name one with --at".into());
        }
        let mut hop_out = None;
        if snap.network.route_tables.len() == 1 {
            let name = snap.network.route_tables[0].name.to_ascii_lowercase();
            let table = snap
                .unattached_route_table(&name)
                .expect("every route table is compiled unattached");
            if let Some((p, r)) = table.lookup(self.flow.destination) {
                let r = r.clone();
                let hop = next_hop(&r);
                hop_out = Some(hop.clone());
                let dropped = r.next_hop_type == NextHopType::None || r.drops;
                self.hop_route(
                    Some((&r, p)),
                    if dropped { "Drop" } else { "Route" },
                    if dropped { "RouteNone" } else { "RuleMatched" },
                    Some(hop),
                );
                decided = Some(route_decider(&r));
                if dropped {
                    return (Verdict::Drop, decided, hop_out, None);
                }
            }
        }
        if let Some(only) = snap.sole_firewall() {
            let outcome = self.firewall(only, &self.key.clone());
            let d = firewall_decider(snap, only, &outcome);
            return (
                if outcome.allowed {
                    Verdict::Allow
                } else {
                    Verdict::Deny
                },
                Some(d),
                hop_out,
                None,
            );
        }
        if self.hops.is_empty() {
            self.notes
                .push("no layer of the input applies to this flow".into());
            return (Verdict::Unknown, None, None, None);
        }
        (Verdict::Allow, decided, hop_out, None)
    }

    /// `--at`: evaluate one named resource.
    fn run_at(&mut self, at: &str) -> Outcome {
        let snap = self.snap;
        let lower = at.to_ascii_lowercase();
        let nsg = if lower == "nsg" && snap.network.network_security_groups.len() == 1 {
            Some(
                snap.network.network_security_groups[0]
                    .name
                    .to_ascii_lowercase(),
            )
        } else {
            snap.unattached_nsg(&lower).map(|_| lower.clone())
        };
        if let Some(n) = nsg {
            let dir = self.opts.direction.unwrap_or(Direction::Inbound);
            // An attached NSG is evaluated in its subnet's context, so its tags expand there.
            let loc = if dir == Direction::Inbound {
                snap.locate(self.flow.destination)
            } else {
                snap.locate(self.flow.source)
            };
            let idx = loc
                .subnet
                .and_then(|s| snap.subnet(s).nsg)
                .filter(|i| snap.nsg(*i).name.eq_ignore_ascii_case(&n))
                .or_else(|| snap.unattached_nsg(&n))
                .expect("every NSG is compiled unattached");
            return match self.nsg("SubnetNsg", idx, dir, dir == Direction::Outbound) {
                Step::End(v, d) => (v, d, None, None),
                Step::Continue => (Verdict::Allow, self.last_allow.clone(), None, None),
            };
        }
        let fw = if lower == "firewall" && snap.sole_firewall().is_some() {
            snap.sole_firewall()
        } else {
            snap.firewalls()
                .find(|(_, f)| {
                    f.name.eq_ignore_ascii_case(at)
                        || f.policy
                            .as_deref()
                            .is_some_and(|p| p.eq_ignore_ascii_case(at))
                })
                .map(|(i, _)| i)
        };
        if let Some(f) = fw {
            let outcome = self.firewall(f, &self.key.clone());
            let d = firewall_decider(snap, f, &outcome);
            return (
                if outcome.allowed {
                    Verdict::Allow
                } else {
                    Verdict::Deny
                },
                Some(d),
                None,
                None,
            );
        }
        let table = if lower == "route-table" && snap.network.route_tables.len() == 1 {
            Some(snap.network.route_tables[0].name.to_ascii_lowercase())
        } else {
            snap.unattached_route_table(&lower).map(|_| lower)
        };
        if let Some(t) = table {
            // In a subnet that uses the table, system routes take part too.
            let s = snap.locate(self.flow.source).subnet.filter(|s| {
                snap.subnet(*s)
                    .route_table
                    .as_deref()
                    .is_some_and(|n| n.eq_ignore_ascii_case(&t))
            });
            let routes = match s {
                Some(s) => &snap.subnet(s).routes,
                None => snap
                    .unattached_route_table(&t)
                    .expect("every route table is compiled unattached"),
            };
            return match routes.lookup(self.flow.destination) {
                Some((p, r)) => {
                    let r = r.clone();
                    let hop = next_hop(&r);
                    let dropped = r.next_hop_type == NextHopType::None || r.drops;
                    self.hop_route(
                        Some((&r, p)),
                        if dropped { "Drop" } else { "Route" },
                        if dropped { "RouteNone" } else { "RuleMatched" },
                        Some(hop.clone()),
                    );
                    (
                        if dropped {
                            Verdict::Drop
                        } else {
                            Verdict::Allow
                        },
                        Some(route_decider(&r)),
                        Some(hop),
                        None,
                    )
                }
                None => {
                    self.hop_route(None, "Drop", "NoRoute", None);
                    (Verdict::Drop, None, None, None)
                }
            };
        }
        self.notes.push(format!(
            "no NSG, route table or firewall named '{at}' in the input"
        ));
        (Verdict::Unknown, None, None, None)
    }
}

fn next_hop(route: &EffectiveRoute) -> NextHop {
    NextHop {
        next_hop_type: route.next_hop_type.as_str().to_string(),
        address: if route.next_hop_type == NextHopType::VirtualAppliance {
            route.next_hop_ip_address
        } else {
            None
        },
    }
}

/// The deciding control when a subnet has no route for a destination.
fn no_route_decider() -> DecidedBy {
    DecidedBy {
        layer: "default",
        resource: "System Route".into(),
        collection: None,
        rule: None,
        priority: None,
    }
}

fn route_decider(route: &EffectiveRoute) -> DecidedBy {
    DecidedBy {
        layer: if route.source == RouteSource::User {
            "route"
        } else {
            "default"
        },
        resource: route.resource(),
        collection: None,
        rule: Some(route.label()),
        priority: None,
    }
}

fn route_hop(
    route: &EffectiveRoute,
    prefix: ipnet::IpNet,
    result: &'static str,
    reason: &'static str,
    hop: Option<NextHop>,
) -> Hop {
    Hop {
        layer: "Route",
        direction: Some(Direction::Outbound),
        resource: route.resource(),
        rule: Some(route.label()),
        priority: None,
        result,
        reason,
        detail: Some(format!(
            "{prefix} ({:?}{})",
            route.source,
            route
                .destination_service_tags
                .first()
                .map(|t| format!(", tag {t}"))
                .unwrap_or_default()
        )),
        next_hop: hop,
        near_miss: None,
        audit: vec![],
        address_check: None,
    }
}

fn firewall_decider(snap: &Snapshot, fw: FirewallId, outcome: &FirewallOutcome) -> DecidedBy {
    match &outcome.rule {
        Some(r) => DecidedBy {
            layer: "firewall",
            resource: r.resource.clone(),
            collection: Some(match &r.rule_collection_group {
                Some(g) => format!("{g}/{}", r.rule_collection),
                None => r.rule_collection.clone(),
            }),
            rule: Some(r.path()),
            priority: Some(r.rule_collection_priority),
        },
        None => DecidedBy {
            layer: "default",
            resource: snap.firewall(fw).name.clone(),
            collection: None,
            rule: None,
            priority: None,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::CompileOptions;
    use palisade_model::catalog::Catalogs;
    use palisade_model::import::import_text;
    use palisade_model::ImportOptions;

    /// An app subnet routed to a firewall whose own subnet drops one range by a user route;
    /// a DNAT rule on the firewall's frontend translates to that range.
    const FIREWALL_SUBNET_ROUTES: &str = r#"
apiVersion: palisade/v1
virtualNetworks:
  - name: hub
    addressSpace: [10.0.0.0/16]
    subnets:
      - {name: AzureFirewallSubnet, addressPrefix: 10.0.1.0/26, routeTable: rt-fw}
      - {name: app, addressPrefix: 10.0.2.0/24, routeTable: rt-app}
routeTables:
  - name: rt-app
    routes:
      - {name: to-fw, addressPrefix: 0.0.0.0/0, nextHopType: VirtualAppliance, nextHopIpAddress: 10.0.1.4}
      - {name: private-to-fw, addressPrefix: 10.0.0.0/8, nextHopType: VirtualAppliance, nextHopIpAddress: 10.0.1.4}
  - name: rt-fw
    routes: [{name: blackhole, addressPrefix: 192.0.2.0/24, nextHopType: None}]
azureFirewalls:
  - name: fw
    ipConfigurations: [{name: c, privateIPAddress: 10.0.1.4, publicIPAddress: fw-pip}]
    networkRuleCollections:
      - name: all
        priority: 200
        action: {type: Allow}
        rules: [{name: any, protocols: [TCP], sourceAddresses: ['*'], destinationAddresses: ['*'], destinationPorts: ['*']}]
    natRuleCollections:
      - name: in
        priority: 100
        action: {type: Dnat}
        rules: [{name: to-blackhole, protocols: [TCP], sourceAddresses: ['*'], destinationAddresses: [52.0.0.10], destinationPorts: ['2222'], translatedAddress: 192.0.2.7, translatedPort: '22'}]
publicIPAddresses:
  - {name: fw-pip, ipAddress: 52.0.0.10}
"#;

    fn snapshot() -> Snapshot {
        let file = import_text(
            "fixture.yaml",
            FIREWALL_SUBNET_ROUTES,
            &ImportOptions::default(),
            None,
        );
        assert!(!file.diagnostics.has_errors(), "{}", file.diagnostics);
        Snapshot::compile(
            &file.network,
            &Catalogs::embedded(),
            &CompileOptions::default(),
        )
    }

    fn tcp(src: &str, dst: &str, port: u16) -> Flow {
        Flow {
            source: src.parse().unwrap(),
            source_port: 50000,
            destination: dst.parse().unwrap(),
            destination_port: port,
            protocol: Protocol::Tcp,
            host: None,
            app_protocol: None,
        }
    }

    fn decider(t: &Trace) -> (Verdict, &str, &str, Option<&str>) {
        let d = t.decided_by.as_ref().expect("a deciding control");
        (t.verdict, d.layer, d.resource.as_str(), d.rule.as_deref())
    }

    // spec DIAG-7: after the firewall, the firewall subnet's route carries the request; a user
    // route to None there drops what the firewall allowed.
    #[test]
    fn diag_7_firewall_subnet_user_route_drops_after_the_firewall() {
        let t = snapshot().trace(&tcp("10.0.2.4", "192.0.2.7", 2000), &Default::default());
        assert_eq!(
            decider(&t),
            (Verdict::Drop, "route", "rt-fw", Some("blackhole"))
        );
        let layers: Vec<&str> = t.hops.iter().map(|h| h.layer).collect();
        let fw = layers.iter().position(|l| l.starts_with("Firewall"));
        let last = t.hops.last().unwrap();
        assert!(fw.is_some_and(|i| i < t.hops.len() - 1), "{layers:?}");
        assert_eq!((last.layer, last.result), ("Route", "Drop"));
    }

    // spec DIAG-7, RT-3: the firewall subnet's system route 10.0.0.0/8 → None drops a private
    // address in no virtual network, as the generated lab networks showed.
    #[test]
    fn diag_7_firewall_subnet_system_route_drops_after_the_firewall() {
        let t = snapshot().trace(&tcp("10.0.2.4", "10.57.121.238", 2000), &Default::default());
        let (verdict, layer, resource, rule) = decider(&t);
        assert_eq!(
            (verdict, layer, resource, rule),
            (Verdict::Drop, "default", "System Route", Some("10.0.0.0/8"))
        );
        let layers: Vec<&str> = t.hops.iter().map(|h| h.layer).collect();
        assert_eq!(layers, ["Route", "FirewallNetwork", "Route"]);
    }

    // spec DIAG-7: where the firewall subnet's route carries the flow on, the firewall's rule
    // still decides, and the route is a hop after the firewall.
    #[test]
    fn diag_7_firewall_subnet_route_carries_the_allowed_flow() {
        let t = snapshot().trace(&tcp("10.0.2.4", "203.0.113.9", 2000), &Default::default());
        let (verdict, layer, _, rule) = decider(&t);
        assert_eq!(
            (verdict, layer, rule),
            (Verdict::Allow, "firewall", Some("all/any"))
        );
        let last = t.hops.last().unwrap();
        assert_eq!((last.layer, last.result), ("Route", "Route"));
        assert_eq!(last.next_hop.as_ref().unwrap().next_hop_type, "Internet");
    }

    // spec DIAG-7, FW-4: a DNAT'd request from the Internet leaves by the firewall subnet's
    // route to the translated address.
    #[test]
    fn diag_7_dnat_target_behind_a_dropping_firewall_subnet_route() {
        let t = snapshot().trace(&tcp("198.51.100.1", "52.0.0.10", 2222), &Default::default());
        assert_eq!(
            decider(&t),
            (Verdict::Drop, "route", "rt-fw", Some("blackhole"))
        );
    }

    /// Two firewalls in a row: `fw1` lets any TCP through and its subnet routes everything to
    /// `fw2`, which allows only HTTPS; `fw2`'s subnet routes by `{EGRESS}`.
    const CHAINED_FIREWALLS: &str = r#"
apiVersion: palisade/v1
virtualNetworks:
  - name: hub
    addressSpace: [10.0.0.0/16]
    subnets:
      - {name: AzureFirewallSubnet, addressPrefix: 10.0.1.0/26, routeTable: rt-fw1}
      - {name: egress, addressPrefix: 10.0.3.0/26, routeTable: rt-fw2}
      - {name: app, addressPrefix: 10.0.2.0/24, routeTable: rt-app}
routeTables:
  - name: rt-app
    routes: [{name: to-fw1, addressPrefix: 0.0.0.0/0, nextHopType: VirtualAppliance, nextHopIpAddress: 10.0.1.4}]
  - name: rt-fw1
    routes: [{name: to-fw2, addressPrefix: 0.0.0.0/0, nextHopType: VirtualAppliance, nextHopIpAddress: 10.0.3.4}]
  - name: rt-fw2
    routes: [{EGRESS}]
azureFirewalls:
  - name: fw1
    ipConfigurations: [{name: c, privateIPAddress: 10.0.1.4}]
    networkRuleCollections:
      - {name: all, priority: 200, action: {type: Allow}, rules: [{name: any, protocols: [TCP], sourceAddresses: ['*'], destinationAddresses: ['*'], destinationPorts: ['*']}]}
  - name: fw2
    ipConfigurations: [{name: c, privateIPAddress: 10.0.3.4}]
    networkRuleCollections:
      - {name: web, priority: 200, action: {type: Allow}, rules: [{name: https, protocols: [TCP], sourceAddresses: ['*'], destinationAddresses: ['*'], destinationPorts: ['443']}]}
"#;

    fn chained(egress: &str) -> Snapshot {
        let yaml = CHAINED_FIREWALLS.replace("{EGRESS}", egress);
        let file = import_text("chained.yaml", &yaml, &ImportOptions::default(), None);
        assert!(!file.diagnostics.has_errors(), "{}", file.diagnostics);
        Snapshot::compile(
            &file.network,
            &Catalogs::embedded(),
            &CompileOptions::default(),
        )
    }

    const TO_INTERNET: &str = "{name: out, addressPrefix: 0.0.0.0/0, nextHopType: Internet}";

    // spec DIAG-7, RT-2: the firewall subnet's route to another appliance takes the flow there;
    // that firewall judges it and names the verdict (the last control that decided), and its
    // own subnet's route carries it on.
    #[test]
    fn diag_7_firewall_subnet_route_to_a_second_firewall_is_followed() {
        let s = chained(TO_INTERNET);
        let t = s.trace(&tcp("10.0.2.4", "203.0.113.9", 443), &Default::default());
        assert_eq!(
            decider(&t),
            (Verdict::Allow, "firewall", "fw2", Some("web/https"))
        );
        let path: Vec<(&str, &str)> = t
            .hops
            .iter()
            .map(|h| (h.layer, h.resource.as_str()))
            .collect();
        assert_eq!(
            path,
            [
                ("Route", "rt-app"),
                ("FirewallNetwork", "fw1"),
                ("Route", "rt-fw1"),
                ("FirewallNetwork", "fw2"),
                ("Route", "rt-fw2"),
            ]
        );
        // fw1 lets port 80 through; fw2 refuses it by its default action.
        let t = s.trace(&tcp("10.0.2.4", "203.0.113.9", 80), &Default::default());
        assert_eq!(decider(&t), (Verdict::Deny, "default", "fw2", None));
    }

    // spec DIAG-7, RT-2: a chain that comes back to a firewall it passed is a routing loop: a
    // clear Drop by the route that closes it, said in a note, not an endless trace.
    #[test]
    fn diag_7_a_chain_of_appliances_that_loops_is_a_drop() {
        let back = "{name: back, addressPrefix: 0.0.0.0/0, nextHopType: VirtualAppliance, nextHopIpAddress: 10.0.1.4}";
        let t = chained(back).trace(&tcp("10.0.2.4", "203.0.113.9", 443), &Default::default());
        assert_eq!(
            decider(&t),
            (Verdict::Drop, "route", "rt-fw2", Some("back"))
        );
        let last = t.hops.last().unwrap();
        assert_eq!(
            (last.layer, last.result, last.reason),
            ("Route", "Drop", "RoutingLoop")
        );
        assert!(
            t.notes
                .iter()
                .any(|n| n.contains("routing loop: fw1 → fw2 → fw1")),
            "{:?}",
            t.notes
        );
        // A firewall whose own subnet routes back to itself loops at once.
        let own = "{name: self, addressPrefix: 0.0.0.0/0, nextHopType: VirtualAppliance, nextHopIpAddress: 10.0.3.4}";
        let t = chained(own).trace(&tcp("10.0.2.4", "203.0.113.9", 443), &Default::default());
        assert_eq!(
            decider(&t),
            (Verdict::Drop, "route", "rt-fw2", Some("self"))
        );
    }

    // spec DIAG-7: an appliance that is no firewall of the input decides what nobody knows.
    #[test]
    fn diag_7_a_chain_into_an_unknown_appliance_is_unknown() {
        let nva = "{name: nva, addressPrefix: 0.0.0.0/0, nextHopType: VirtualAppliance, nextHopIpAddress: 10.0.2.200}";
        let t = chained(nva).trace(&tcp("10.0.2.4", "203.0.113.9", 443), &Default::default());
        assert_eq!(
            decider(&t),
            (Verdict::Unknown, "route", "rt-fw2", Some("nva"))
        );
        assert!(
            t.notes.iter().any(|n| n.contains("10.0.2.200")),
            "{:?}",
            t.notes
        );
    }

    #[test]
    fn the_firewall_subnet_holds_its_private_address() {
        let s = snapshot();
        let fw = s.firewall_by_name("fw").unwrap();
        assert_eq!(
            s.firewall_subnet(fw),
            s.subnet_by_name("AzureFirewallSubnet")
        );
    }
}
