//! Cross-check with Azure's own view of a NIC: the effective routes and effective security rules
//! Azure reports (`az network nic show-effective-route-table`, `az network nic list-effective-nsg`,
//! or the REST bodies of `effectiveRouteTable` / `effectiveNetworkSecurityGroups`) against the
//! ones the compiled snapshot gives for the same NIC. Every disagreement is reported with both
//! sides, so a model that drifted from the deployed network (or a Palisade bug) shows up by name.
//! Network Watcher results (`ipFlowVerify`, `nextHop`) are replayed: the same question is asked
//! of the model and the answers compared ([`replay`]).

use ipnet::IpNet;
use palisade_model::address::parse_port_range;
use palisade_model::json::{self, Document};
use palisade_model::Diagnostic;
use palisade_model::{Direction, Protocol};
use palisade_policy::intervals::{prefix_set, to_prefixes, Family, IntervalSet};
use palisade_policy::nsg::{CompiledNsg, CompiledRule};
use palisade_policy::routes::EffectiveRoute;
use palisade_policy::{Flow, Snapshot, TraceOptions, Verdict};
use serde::Serialize;
use serde_json::{Map, Value};
use std::collections::BTreeSet;
use std::net::IpAddr;

/// One route as Azure reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AzureRoute {
    pub name: Option<String>,
    pub source: String,
    pub state: String,
    pub address_prefix: Vec<IpNet>,
    pub next_hop_type: String,
    pub next_hop_ip_address: Vec<IpAddr>,
}

/// One effective security rule as Azure reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AzureRule {
    /// `securityRules/<name>` or `defaultSecurityRules/<name>`.
    pub name: String,
    pub protocol: String,
    pub access: String,
    pub priority: u32,
    pub direction: String,
    pub source_ports: Vec<(u16, u16)>,
    pub destination_ports: Vec<(u16, u16)>,
    /// `None` when Azure gave a service tag without its expansion: nothing to compare against.
    pub source: Option<Vec<IpNet>>,
    pub destination: Option<Vec<IpNet>>,
}

/// One NSG association of Azure's `effectiveNetworkSecurityGroups` list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AzureNsg {
    /// Last segment of `networkSecurityGroup.id`.
    pub nsg: String,
    /// `subnet` or `networkInterface`.
    pub association: String,
    pub rules: Vec<AzureRule>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Kind {
    /// Azure has a route the model lacks.
    MissingRoute,
    /// The model has a route Azure does not report.
    ExtraRoute,
    NextHopDiffers,
    RouteStateDiffers,
    /// The same route covers other prefixes (a service tag's expansion, typically).
    RoutePrefixesDiffer,
    /// Azure applies an NSG at an association where the model has none.
    MissingNsg,
    ExtraNsg,
    NsgDiffers,
    /// Azure has a rule the model lacks.
    MissingRule,
    ExtraRule,
    RuleDiffers,
    /// The expanded source or destination prefixes of a rule differ.
    RulePrefixesDiffer,
    /// A replayed IP flow verify: Azure allowed and the model denies, or the reverse.
    AccessDiffers,
    /// A replayed IP flow verify: the same access, decided by another rule.
    RuleNameDiffers,
    /// A replayed next hop: the route table (or `System Route`) that decided differs.
    RouteTableDiffers,
}

/// One disagreement, with Azure's side and the model's side.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Disagreement {
    pub kind: Kind,
    /// What is compared: `route 10.0.0.0/8 (Default)`, `subnet NSG web-nsg: securityRules/x (Inbound)`.
    pub subject: String,
    pub field: Option<&'static str>,
    pub azure: Option<String>,
    pub model: Option<String>,
    pub only_azure: Vec<String>,
    pub only_model: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Report {
    pub nic: String,
    pub routes_compared: usize,
    pub rules_compared: usize,
    pub disagreements: Vec<Disagreement>,
    /// Network Watcher questions (IP flow verify, next hop) asked again of the model.
    pub questions_replayed: usize,
    /// What could not be compared, and why.
    pub notes: Vec<String>,
}

/// Parse Azure's effective routes: the CLI output, the REST body (`{"value": [...]}`), a bare
/// array, or a REST API example file (`responses.200.body`).
pub fn parse_routes(file: &str, text: &str) -> Result<Vec<AzureRoute>, Vec<Diagnostic>> {
    parse_list(file, text, "routes", |p, v, ptr| p.route(v, ptr))
}

/// Parse Azure's effective NSGs, in the same shapes as [`parse_routes`].
pub fn parse_nsgs(file: &str, text: &str) -> Result<Vec<AzureNsg>, Vec<Diagnostic>> {
    parse_list(file, text, "effective NSGs", |p, v, ptr| p.nsg(v, ptr))
}

fn parse_list<T>(
    file: &str,
    text: &str,
    what: &str,
    entry: impl Fn(&mut Parser<'_>, &Value, &str) -> Option<T>,
) -> Result<Vec<T>, Vec<Diagnostic>> {
    let doc = json::parse(file, text).map_err(|d| vec![d])?;
    let mut p = Parser::new(&doc);
    let mut out = vec![];
    if let Some((ptr, items)) = p.items(&doc.value, what) {
        for (i, item) in items.iter().enumerate() {
            if let Some(x) = entry(&mut p, item, &format!("{ptr}/{i}")) {
                out.push(x);
            }
        }
    }
    p.finish(out)
}

struct Parser<'a> {
    doc: &'a Document,
    problems: Vec<Diagnostic>,
}

/// Property names match case-insensitively (FMT-3).
fn get<'v>(o: &'v Map<String, Value>, key: &str) -> Option<(&'v str, &'v Value)> {
    o.iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(key))
        .map(|(k, v)| (k.as_str(), v))
}

impl<'a> Parser<'a> {
    fn new(doc: &'a Document) -> Self {
        Parser {
            doc,
            problems: vec![],
        }
    }

    fn problem(&mut self, ptr: &str, found: Option<&Value>, expected: &str) {
        let mut d = Diagnostic::error(format!("unexpected value: expected {expected}"))
            .at(&self.doc.file, ptr)
            .expected(expected);
        if let Some(v) = found {
            let s = v.to_string();
            d = d.found(if s.chars().count() > 80 {
                format!("{}…", s.chars().take(80).collect::<String>())
            } else {
                s
            });
        }
        self.problems.push(self.doc.locate(d));
    }

    fn finish<T>(self, out: T) -> Result<T, Vec<Diagnostic>> {
        if self.problems.is_empty() {
            Ok(out)
        } else {
            Err(self.problems)
        }
    }

    /// The list of entries, wherever the shape puts it.
    fn items<'v>(&mut self, v: &'v Value, what: &str) -> Option<(String, &'v Vec<Value>)> {
        let mut v = v;
        let mut ptr = String::new();
        if let Value::Object(o) = v {
            if let Some((k, Value::Object(r))) = get(o, "responses") {
                match get(r, "200").and_then(|(k2, b)| match b {
                    Value::Object(b) => get(b, "body").map(|(k3, x)| (k2, k3, x)),
                    _ => None,
                }) {
                    Some((k2, k3, body)) => {
                        ptr = format!("/{k}/{k2}/{k3}");
                        v = body;
                    }
                    None => {
                        self.problem(&format!("/{k}"), None, "a `200` response with a `body`");
                        return None;
                    }
                }
            }
        }
        match v {
            Value::Array(a) => Some((ptr, a)),
            Value::Object(o) => match get(o, "value") {
                Some((k, Value::Array(a))) => Some((format!("{ptr}/{k}"), a)),
                Some((k, other)) => {
                    self.problem(&format!("{ptr}/{k}"), Some(other), "an array");
                    None
                }
                None => {
                    self.problem(&ptr, None, &format!("{what} as `{{\"value\": [...]}}`"));
                    None
                }
            },
            other => {
                self.problem(&ptr, Some(other), &format!("{what} as an object or array"));
                None
            }
        }
    }

    fn object<'v>(&mut self, v: &'v Value, ptr: &str) -> Option<&'v Map<String, Value>> {
        match v {
            Value::Object(o) => Some(o),
            other => {
                self.problem(ptr, Some(other), "an object");
                None
            }
        }
    }

    fn string(&mut self, o: &Map<String, Value>, ptr: &str, key: &str) -> Option<String> {
        match get(o, key) {
            Some((_, Value::String(s))) => Some(s.clone()),
            Some((k, other)) => {
                self.problem(&format!("{ptr}/{k}"), Some(other), "a string");
                None
            }
            None => {
                self.problem(ptr, None, &format!("a `{key}` field"));
                None
            }
        }
    }

    /// A string or an array of strings; absent or null is empty.
    fn strings(&mut self, o: &Map<String, Value>, ptr: &str, key: &str) -> Vec<(String, String)> {
        match get(o, key) {
            None | Some((_, Value::Null)) => vec![],
            Some((k, Value::String(s))) => vec![(format!("{ptr}/{k}"), s.clone())],
            Some((k, Value::Array(a))) => {
                let mut out = vec![];
                for (i, x) in a.iter().enumerate() {
                    let p = format!("{ptr}/{k}/{i}");
                    match x {
                        Value::String(s) => out.push((p, s.clone())),
                        other => self.problem(&p, Some(other), "a string"),
                    }
                }
                out
            }
            Some((k, other)) => {
                self.problem(&format!("{ptr}/{k}"), Some(other), "a string or array");
                vec![]
            }
        }
    }

    fn route(&mut self, v: &Value, ptr: &str) -> Option<AzureRoute> {
        let o = self.object(v, ptr)?;
        let next_hop_type = self.string(o, ptr, "nextHopType");
        let mut address_prefix = vec![];
        for (p, s) in self.strings(o, ptr, "addressPrefix") {
            match parse_prefix(&s) {
                Some(n) => address_prefix.push(n),
                None => self.problem(&p, Some(&Value::String(s)), "a CIDR prefix"),
            }
        }
        let mut next_hop_ip_address = vec![];
        for (p, s) in self.strings(o, ptr, "nextHopIpAddress") {
            match s.parse() {
                Ok(a) => next_hop_ip_address.push(a),
                Err(_) => self.problem(&p, Some(&Value::String(s)), "an IP address"),
            }
        }
        let opt = |k: &str| match get(o, k) {
            Some((_, Value::String(s))) => Some(s.clone()),
            _ => None,
        };
        Some(AzureRoute {
            name: opt("name"),
            source: opt("source").unwrap_or_else(|| "Unknown".into()),
            state: opt("state").unwrap_or_else(|| "Active".into()),
            address_prefix,
            next_hop_type: next_hop_type?,
            next_hop_ip_address,
        })
    }

    fn nsg(&mut self, v: &Value, ptr: &str) -> Option<AzureNsg> {
        let o = self.object(v, ptr)?;
        let nsg = match get(o, "networkSecurityGroup") {
            Some((k, Value::Object(g))) => self
                .string(g, &format!("{ptr}/{k}"), "id")
                .map(|id| last_segment(&id)),
            Some((k, other)) => {
                self.problem(&format!("{ptr}/{k}"), Some(other), "an object with `id`");
                None
            }
            None => {
                self.problem(ptr, None, "a `networkSecurityGroup` field");
                None
            }
        };
        // Azure names the NIC too when the NSG sits on the subnet; the subnet is the association.
        let association = match get(o, "association") {
            Some((_, Value::Object(a))) => {
                if get(a, "subnet").is_some_and(|(_, s)| s.is_object()) {
                    Some("subnet".to_string())
                } else if get(a, "networkInterface").is_some_and(|(_, s)| s.is_object()) {
                    Some("networkInterface".to_string())
                } else {
                    self.problem(
                        &format!("{ptr}/association"),
                        None,
                        "`subnet` or `networkInterface`",
                    );
                    None
                }
            }
            found => {
                self.problem(
                    ptr,
                    found.map(|(_, v)| v),
                    "an `association` object with `subnet` or `networkInterface`",
                );
                None
            }
        };
        let mut rules = vec![];
        match get(o, "effectiveSecurityRules") {
            Some((k, Value::Array(a))) => {
                for (i, r) in a.iter().enumerate() {
                    if let Some(r) = self.rule(r, &format!("{ptr}/{k}/{i}")) {
                        rules.push(r);
                    }
                }
            }
            None | Some((_, Value::Null)) => {}
            Some((k, other)) => self.problem(&format!("{ptr}/{k}"), Some(other), "an array"),
        }
        Some(AzureNsg {
            nsg: nsg?,
            association: association?,
            rules,
        })
    }

    fn rule(&mut self, v: &Value, ptr: &str) -> Option<AzureRule> {
        let o = self.object(v, ptr)?;
        let name = self.string(o, ptr, "name");
        let protocol = self.string(o, ptr, "protocol");
        let access = self.string(o, ptr, "access");
        let direction = self.string(o, ptr, "direction");
        let priority = match get(o, "priority") {
            Some((_, Value::Number(n))) if n.as_u64().is_some_and(|p| p <= u32::MAX as u64) => {
                n.as_u64().map(|p| p as u32)
            }
            found => {
                self.problem(
                    &format!("{ptr}/priority"),
                    found.map(|(_, v)| v),
                    "a priority number",
                );
                None
            }
        };
        let source_ports = self.ports(o, ptr, "sourcePortRange", "sourcePortRanges");
        let destination_ports = self.ports(o, ptr, "destinationPortRange", "destinationPortRanges");
        let source = self.addresses(
            o,
            ptr,
            "expandedSourceAddressPrefix",
            "sourceAddressPrefix",
            "sourceAddressPrefixes",
        );
        let destination = self.addresses(
            o,
            ptr,
            "expandedDestinationAddressPrefix",
            "destinationAddressPrefix",
            "destinationAddressPrefixes",
        );
        Some(AzureRule {
            name: name?,
            protocol: protocol?,
            access: access?,
            priority: priority?,
            direction: direction?,
            source_ports,
            destination_ports,
            source,
            destination,
        })
    }

    fn ports(
        &mut self,
        o: &Map<String, Value>,
        ptr: &str,
        one: &str,
        many: &str,
    ) -> Vec<(u16, u16)> {
        let mut items = self.strings(o, ptr, many);
        items.extend(self.strings(o, ptr, one));
        let mut out = vec![];
        for (p, s) in items {
            match parse_port_range(&s) {
                Ok(r) => out.push((r.first, r.last)),
                Err(_) => self.problem(&p, Some(&Value::String(s)), "a port, port range or `*`"),
            }
        }
        normalise_ports(out)
    }

    /// The expansion when Azure gives one, else the written prefixes; `None` when a written
    /// item is a tag without expansion.
    fn addresses(
        &mut self,
        o: &Map<String, Value>,
        ptr: &str,
        expanded: &str,
        one: &str,
        many: &str,
    ) -> Option<Vec<IpNet>> {
        let mut out = vec![];
        let exp = self.strings(o, ptr, expanded);
        if !exp.is_empty() {
            for (p, s) in exp {
                match parse_prefix(&s) {
                    Some(n) => out.push(n),
                    None => self.problem(&p, Some(&Value::String(s)), "a CIDR prefix"),
                }
            }
            return Some(out);
        }
        let mut written = self.strings(o, ptr, many);
        written.extend(self.strings(o, ptr, one));
        let mut tag = false;
        for (_, s) in written {
            if s == "*" {
                out.push("0.0.0.0/0".parse().expect("literal prefix"));
                out.push("::/0".parse().expect("literal prefix"));
            } else if let Some(n) = parse_prefix(&s) {
                out.push(n);
            } else {
                tag = true;
            }
        }
        (!tag).then_some(out)
    }
}

fn last_segment(id: &str) -> String {
    id.trim_end_matches('/')
        .rsplit('/')
        .next()
        .unwrap_or(id)
        .to_string()
}

fn parse_prefix(s: &str) -> Option<IpNet> {
    let s = s.trim();
    s.parse::<IpNet>()
        .ok()
        .map(|n| n.trunc())
        .or_else(|| s.parse::<IpAddr>().ok().map(IpNet::from))
}

fn normalise_ports(mut v: Vec<(u16, u16)>) -> Vec<(u16, u16)> {
    v.sort_unstable();
    let mut out: Vec<(u16, u16)> = vec![];
    for (a, b) in v {
        match out.last_mut() {
            Some(last) if a as u32 <= last.1 as u32 + 1 => last.1 = last.1.max(b),
            _ => out.push((a, b)),
        }
    }
    if out.is_empty() {
        out.push((0, 65535));
    }
    out
}

fn show_ports(v: &[(u16, u16)]) -> String {
    v.iter()
        .map(|(a, b)| format!("{a}-{b}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// A route on either side, reduced to what both sides state.
#[derive(Debug, Clone)]
struct Route {
    name: Option<String>,
    source: String,
    state: String,
    prefixes: BTreeSet<IpNet>,
    next_hop_type: String,
    next_hop_ip: Option<IpAddr>,
}

impl Route {
    fn next_hop(&self) -> String {
        match self.next_hop_ip {
            Some(a) => format!("{} {a}", self.next_hop_type),
            None => self.next_hop_type.clone(),
        }
    }
    fn show(&self) -> String {
        let p: Vec<String> = self.prefixes.iter().map(|p| p.to_string()).collect();
        let name = self
            .name
            .as_deref()
            .map(|n| format!(" [{n}]"))
            .unwrap_or_default();
        format!(
            "{} → {} ({}, {}){name}",
            p.join(","),
            self.next_hop(),
            self.source,
            self.state
        )
    }
    fn subject(&self) -> String {
        let first = self
            .prefixes
            .iter()
            .next()
            .map(|p| p.to_string())
            .unwrap_or_default();
        let more = if self.prefixes.len() > 1 {
            format!(" (+{} more)", self.prefixes.len() - 1)
        } else {
            String::new()
        };
        format!("route {first}{more} ({})", self.source)
    }
}

fn azure_route(r: &AzureRoute) -> Route {
    Route {
        name: r.name.clone(),
        source: r.source.clone(),
        state: r.state.clone(),
        prefixes: r.address_prefix.iter().copied().collect(),
        next_hop_type: canonical_next_hop(&r.next_hop_type),
        next_hop_ip: r.next_hop_ip_address.first().copied(),
    }
}

fn model_route(r: &EffectiveRoute) -> Route {
    Route {
        name: r.name.clone().or(r.service.clone()),
        source: format!("{:?}", r.source),
        state: format!("{:?}", r.state),
        prefixes: r.address_prefix.iter().map(|p| p.trunc()).collect(),
        next_hop_type: r.next_hop_type.as_str().to_string(),
        next_hop_ip: r.next_hop_ip_address,
    }
}

fn canonical_next_hop(s: &str) -> String {
    palisade_model::NextHopType::parse(s)
        .map(|t| t.as_str().to_string())
        .unwrap_or_else(|| s.to_string())
}

fn compare_routes(azure: &[AzureRoute], model: &[EffectiveRoute], out: &mut Vec<Disagreement>) {
    let azure: Vec<Route> = azure.iter().map(azure_route).collect();
    let model: Vec<Route> = model.iter().map(model_route).collect();
    let mut used = vec![false; model.len()];
    let same_source = |a: &Route, m: &Route| a.source.eq_ignore_ascii_case(&m.source);
    for a in &azure {
        // The same prefixes first; else the same kind of route over overlapping prefixes, so a
        // service tag expanded from another catalog date is one disagreement, not dozens.
        let exact = (0..model.len())
            .find(|&i| !used[i] && same_source(a, &model[i]) && a.prefixes == model[i].prefixes);
        let found = exact.or_else(|| {
            (0..model.len())
                .filter(|&i| {
                    !used[i]
                        && same_source(a, &model[i])
                        && a.next_hop_type == model[i].next_hop_type
                })
                .map(|i| (model[i].prefixes.intersection(&a.prefixes).count(), i))
                .filter(|&(n, _)| n > 0)
                .max_by_key(|&(n, i)| (n, std::cmp::Reverse(i)))
                .map(|(_, i)| i)
        });
        let Some(i) = found else {
            out.push(Disagreement {
                kind: Kind::MissingRoute,
                subject: a.subject(),
                field: None,
                azure: Some(a.show()),
                model: None,
                only_azure: vec![],
                only_model: vec![],
            });
            continue;
        };
        used[i] = true;
        let m = &model[i];
        let both = |kind, field| Disagreement {
            kind,
            subject: a.subject(),
            field: Some(field),
            azure: Some(a.show()),
            model: Some(m.show()),
            only_azure: vec![],
            only_model: vec![],
        };
        if a.prefixes != m.prefixes {
            out.push(Disagreement {
                only_azure: a
                    .prefixes
                    .difference(&m.prefixes)
                    .map(|p| p.to_string())
                    .collect(),
                only_model: m
                    .prefixes
                    .difference(&a.prefixes)
                    .map(|p| p.to_string())
                    .collect(),
                ..both(Kind::RoutePrefixesDiffer, "addressPrefix")
            });
        }
        if !a.next_hop_type.eq_ignore_ascii_case(&m.next_hop_type) || a.next_hop_ip != m.next_hop_ip
        {
            out.push(both(Kind::NextHopDiffers, "nextHop"));
        }
        if !a.state.eq_ignore_ascii_case(&m.state) {
            out.push(both(Kind::RouteStateDiffers, "state"));
        }
    }
    for (i, m) in model.iter().enumerate() {
        if !used[i] {
            out.push(Disagreement {
                kind: Kind::ExtraRoute,
                subject: m.subject(),
                field: None,
                azure: None,
                model: Some(m.show()),
                only_azure: vec![],
                only_model: vec![],
            });
        }
    }
}

/// Addresses of the families the comparison covers.
fn address_set(list: &[IpNet], families: &[Family]) -> Vec<(Family, IntervalSet)> {
    families.iter().map(|&f| (f, prefix_set(list, f))).collect()
}

fn set_prefixes(sets: &[(Family, IntervalSet)]) -> Vec<String> {
    sets.iter()
        .flat_map(|(f, s)| to_prefixes(s, *f))
        .map(|p| p.to_string())
        .collect()
}

fn protocol_name(p: palisade_model::Protocol) -> &'static str {
    match p {
        palisade_model::Protocol::Any => "All",
        other => other.as_str(),
    }
}

fn compare_rules(
    group: &str,
    azure: &[AzureRule],
    nsg: &CompiledNsg,
    families: &[Family],
    out: &mut Vec<Disagreement>,
    notes: &mut Vec<String>,
) -> usize {
    use palisade_model::Direction;
    let mut model: Vec<(&str, &CompiledRule)> = vec![];
    for (dir, label) in [
        (Direction::Inbound, "Inbound"),
        (Direction::Outbound, "Outbound"),
    ] {
        for r in nsg.direction(dir).rules.iter() {
            model.push((label, r));
        }
    }
    let mut used = vec![false; model.len()];
    for a in azure {
        let subject = format!("{group}: {} ({})", a.name, a.direction);
        let found = model.iter().enumerate().position(|(i, (d, m))| {
            !used[i]
                && d.eq_ignore_ascii_case(&a.direction)
                && m.qualified_name().eq_ignore_ascii_case(&a.name)
        });
        let Some(i) = found else {
            out.push(Disagreement {
                kind: Kind::MissingRule,
                subject,
                field: None,
                azure: Some(format!(
                    "{} {} {} priority {}",
                    a.access, a.protocol, a.direction, a.priority
                )),
                model: None,
                only_azure: vec![],
                only_model: vec![],
            });
            continue;
        };
        used[i] = true;
        let m = model[i].1;
        let access = format!("{:?}", m.access);
        let mut field = |field: &'static str, az: String, md: String, same: bool| {
            if !same {
                out.push(Disagreement {
                    kind: Kind::RuleDiffers,
                    subject: subject.clone(),
                    field: Some(field),
                    azure: Some(az),
                    model: Some(md),
                    only_azure: vec![],
                    only_model: vec![],
                });
            }
        };
        field(
            "priority",
            a.priority.to_string(),
            m.priority.to_string(),
            a.priority == m.priority,
        );
        field(
            "access",
            a.access.clone(),
            access.clone(),
            a.access.eq_ignore_ascii_case(&access),
        );
        let proto = if a.protocol == "*" {
            "All"
        } else {
            a.protocol.as_str()
        };
        field(
            "protocol",
            a.protocol.clone(),
            protocol_name(m.protocol).to_string(),
            proto.eq_ignore_ascii_case(protocol_name(m.protocol)),
        );
        for (name, az, md) in [
            ("sourcePortRanges", &a.source_ports, &m.source_ports),
            (
                "destinationPortRanges",
                &a.destination_ports,
                &m.destination_ports,
            ),
        ] {
            let md = normalise_ports(md.iter().map(|r| (r.first, r.last)).collect());
            field(name, show_ports(az), show_ports(&md), *az == md);
        }
        for (name, az, md) in [
            ("expandedSourceAddressPrefix", &a.source, &m.source),
            (
                "expandedDestinationAddressPrefix",
                &a.destination,
                &m.destination,
            ),
        ] {
            let Some(az) = az else {
                notes.push(format!(
                    "{subject}: {name} is a tag Azure did not expand; not compared"
                ));
                continue;
            };
            let az = address_set(az, families);
            let md = address_set(md, families);
            if az != md {
                let diff = |x: &[(Family, IntervalSet)], y: &[(Family, IntervalSet)]| {
                    let d: Vec<(Family, IntervalSet)> = x
                        .iter()
                        .zip(y)
                        .map(|((f, a), (_, b))| (*f, a.subtract(b)))
                        .collect();
                    set_prefixes(&d)
                };
                out.push(Disagreement {
                    kind: Kind::RulePrefixesDiffer,
                    subject: subject.clone(),
                    field: Some(name),
                    azure: Some(set_prefixes(&az).join(",")),
                    model: Some(set_prefixes(&md).join(",")),
                    only_azure: diff(&az, &md),
                    only_model: diff(&md, &az),
                });
            }
        }
    }
    for (i, (d, m)) in model.iter().enumerate() {
        if !used[i] {
            out.push(Disagreement {
                kind: Kind::ExtraRule,
                subject: format!("{group}: {} ({d})", m.qualified_name()),
                field: None,
                azure: None,
                model: Some(format!(
                    "{:?} {} {d} priority {}",
                    m.access,
                    protocol_name(m.protocol),
                    m.priority
                )),
                only_azure: vec![],
                only_model: vec![],
            });
        }
    }
    model.len().max(azure.len())
}

/// Compare Azure's view of `nic` with the snapshot's. Either export may be absent.
pub fn check(
    snap: &Snapshot,
    nic: &str,
    routes: Option<&[AzureRoute]>,
    nsgs: Option<&[AzureNsg]>,
) -> Result<Report, String> {
    let id = snap
        .nic_by_name(nic)
        .ok_or_else(|| format!("no network interface named '{nic}'"))?;
    let entry = snap.nic(id);
    let subnet = entry.subnet.map(|s| snap.subnet(s));
    let mut report = Report {
        nic: entry.name.clone(),
        ..Report::default()
    };
    if let Some(routes) = routes {
        let model: &[EffectiveRoute] = match subnet {
            Some(s) => &s.routes.routes,
            None => {
                report.notes.push(format!(
                    "network interface '{nic}' is in no subnet of the input"
                ));
                &[]
            }
        };
        // Azure lists no IPv6 system routes for an IPv4-only network; the model always has them.
        let v6 = routes
            .iter()
            .flat_map(|r| &r.address_prefix)
            .any(|p| matches!(p, IpNet::V6(_)));
        let model: Vec<EffectiveRoute> = model
            .iter()
            .filter_map(|r| {
                let mut r = r.clone();
                r.address_prefix.retain(|p| v6 || matches!(p, IpNet::V4(_)));
                (!r.address_prefix.is_empty()).then_some(r)
            })
            .collect();
        report.routes_compared = routes.len().max(model.len());
        compare_routes(routes, &model, &mut report.disagreements);
    }
    if let Some(nsgs) = nsgs {
        // An export without any IPv6 prefix comes from an IPv4-only NIC: the model's `::/0`
        // halves of `*` and of tags are not a disagreement there.
        let v6 = nsgs.iter().flat_map(|n| &n.rules).any(|r| {
            [&r.source, &r.destination]
                .iter()
                .any(|s| s.iter().flatten().any(|p| matches!(p, IpNet::V6(_))))
        });
        let families: &[Family] = if v6 {
            &[Family::V4, Family::V6]
        } else {
            &[Family::V4]
        };
        let mut groups: Vec<(&str, &CompiledNsg)> = vec![];
        if let Some(g) = subnet.and_then(|s| s.nsg) {
            groups.push(("subnet", snap.nsg(g)));
        }
        if let Some(g) = entry.nsg {
            groups.push(("networkInterface", snap.nsg(g)));
        }
        for association in ["subnet", "networkInterface"] {
            let az = nsgs.iter().find(|n| n.association == association);
            let md = groups.iter().find(|(a, _)| *a == association).map(|g| g.1);
            let label = |name: &str| format!("{association} NSG {name}");
            match (az, md) {
                (None, None) => {}
                (Some(a), None) => report.disagreements.push(Disagreement {
                    kind: Kind::MissingNsg,
                    subject: label(&a.nsg),
                    field: None,
                    azure: Some(a.nsg.clone()),
                    model: None,
                    only_azure: vec![],
                    only_model: vec![],
                }),
                (None, Some(m)) => report.disagreements.push(Disagreement {
                    kind: Kind::ExtraNsg,
                    subject: label(&m.name),
                    field: None,
                    azure: None,
                    model: Some(m.name.clone()),
                    only_azure: vec![],
                    only_model: vec![],
                }),
                (Some(a), Some(m)) => {
                    if !a.nsg.eq_ignore_ascii_case(&m.name) {
                        report.disagreements.push(Disagreement {
                            kind: Kind::NsgDiffers,
                            subject: format!("{association} NSG"),
                            field: Some("networkSecurityGroup"),
                            azure: Some(a.nsg.clone()),
                            model: Some(m.name.clone()),
                            only_azure: vec![],
                            only_model: vec![],
                        });
                    }
                    report.rules_compared += compare_rules(
                        &label(&a.nsg),
                        &a.rules,
                        m,
                        families,
                        &mut report.disagreements,
                        &mut report.notes,
                    );
                }
            }
        }
    }
    Ok(report)
}

/// A Network Watcher question and Azure's answer, as the REST API example files of
/// `ipFlowVerify` and `nextHop` hold them (`parameters.parameters` the question,
/// `responses.200.body` the answer).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum WatcherResult {
    IpFlowVerify {
        direction: Direction,
        protocol: Protocol,
        local: (IpAddr, u16),
        remote: (IpAddr, u16),
        /// `Allow` or `Deny`.
        access: String,
        rule_name: Option<String>,
    },
    NextHop {
        source: IpAddr,
        destination: IpAddr,
        next_hop_type: String,
        next_hop_ip_address: Option<IpAddr>,
        route_table_id: Option<String>,
    },
}

/// Parse Network Watcher results: one REST API example file of `ipFlowVerify` or `nextHop`, or
/// an array of them. Every problem is located.
pub fn parse_watcher(file: &str, text: &str) -> Result<Vec<WatcherResult>, Vec<Diagnostic>> {
    let doc = json::parse(file, text).map_err(|d| vec![d])?;
    let mut p = Parser::new(&doc);
    let mut out = vec![];
    match &doc.value {
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                out.extend(p.watcher(item, &format!("/{i}")));
            }
        }
        v => out.extend(p.watcher(v, "")),
    }
    p.finish(out)
}

impl Parser<'_> {
    fn watcher(&mut self, v: &Value, ptr: &str) -> Option<WatcherResult> {
        let o = self.object(v, ptr)?;
        let (qk, question) = match get(o, "parameters") {
            Some((k, Value::Object(params))) => match get(params, "parameters") {
                Some((k2, Value::Object(q))) => (format!("{ptr}/{k}/{k2}"), q),
                _ => {
                    self.problem(
                        &format!("{ptr}/{k}"),
                        None,
                        "the question in `parameters.parameters`",
                    );
                    return None;
                }
            },
            _ => {
                self.problem(
                    ptr,
                    None,
                    "a REST API example: `parameters` and `responses`",
                );
                return None;
            }
        };
        let answer = match get(o, "responses") {
            Some((k, Value::Object(r))) => match get(r, "200") {
                Some((k2, Value::Object(b))) => match get(b, "body") {
                    Some((k3, Value::Object(body))) => Some((format!("{ptr}/{k}/{k2}/{k3}"), body)),
                    _ => None,
                },
                _ => None,
            },
            _ => None,
        };
        let Some((ak, answer)) = answer else {
            self.problem(ptr, None, "Azure's answer in `responses.200.body`");
            return None;
        };
        if get(question, "direction").is_some() {
            let direction = match self
                .string(question, &qk, "direction")?
                .to_ascii_lowercase()
                .as_str()
            {
                "inbound" => Direction::Inbound,
                "outbound" => Direction::Outbound,
                other => {
                    self.problem(
                        &qk,
                        Some(&Value::String(other.into())),
                        "Inbound or Outbound",
                    );
                    return None;
                }
            };
            let proto = self.string(question, &qk, "protocol")?;
            let Some(protocol) =
                Protocol::parse(&proto).filter(|p| matches!(p, Protocol::Tcp | Protocol::Udp))
            else {
                self.problem(&qk, Some(&Value::String(proto)), "TCP or UDP");
                return None;
            };
            let local = self.endpoint(question, &qk, "localIPAddress", "localPort");
            let remote = self.endpoint(question, &qk, "remoteIPAddress", "remotePort");
            let access = self.string(answer, &ak, "access");
            let rule_name = match get(answer, "ruleName") {
                Some((_, Value::String(s))) => Some(s.clone()),
                _ => None,
            };
            return Some(WatcherResult::IpFlowVerify {
                direction,
                protocol,
                local: local?,
                remote: remote?,
                access: access?,
                rule_name,
            });
        }
        let source = self.address(question, &qk, "sourceIPAddress");
        let destination = self.address(question, &qk, "destinationIPAddress");
        let next_hop_type = self.string(answer, &ak, "nextHopType");
        let next_hop_ip_address = match get(answer, "nextHopIpAddress") {
            Some((_, Value::String(s))) if !s.is_empty() => {
                Some(self.address(answer, &ak, "nextHopIpAddress")?)
            }
            _ => None,
        };
        let route_table_id = match get(answer, "routeTableId") {
            Some((_, Value::String(s))) => Some(s.clone()),
            _ => None,
        };
        Some(WatcherResult::NextHop {
            source: source?,
            destination: destination?,
            next_hop_type: next_hop_type?,
            next_hop_ip_address,
            route_table_id,
        })
    }

    fn address(&mut self, o: &Map<String, Value>, ptr: &str, key: &str) -> Option<IpAddr> {
        let s = self.string(o, ptr, key)?;
        match s.trim().parse() {
            Ok(a) => Some(a),
            Err(_) => {
                let k = get(o, key).map(|(k, _)| k).unwrap_or(key);
                self.problem(
                    &format!("{ptr}/{k}"),
                    Some(&Value::String(s)),
                    "an IP address",
                );
                None
            }
        }
    }

    /// An address and a port number (a string or a number, as the API writes them).
    fn endpoint(
        &mut self,
        o: &Map<String, Value>,
        ptr: &str,
        ip: &str,
        port: &str,
    ) -> Option<(IpAddr, u16)> {
        let address = self.address(o, ptr, ip);
        let port = match get(o, port) {
            Some((_, Value::String(s))) if s.trim().parse::<u16>().is_ok() => s.trim().parse().ok(),
            Some((_, Value::Number(n))) if n.as_u64().is_some_and(|n| n <= 65535) => {
                n.as_u64().map(|n| n as u16)
            }
            Some((k, other)) => {
                self.problem(&format!("{ptr}/{k}"), Some(other), "a port number 0-65535");
                None
            }
            None => {
                self.problem(ptr, None, &format!("a `{port}` field"));
                None
            }
        };
        Some((address?, port?))
    }
}

/// `securityRules/Allow-Web`, `UserRule_Allow-Web`, `Allow-Web`: the rule's own name.
fn bare_rule_name(name: &str) -> &str {
    let last = name.rsplit('/').next().unwrap_or(name);
    last.strip_prefix("UserRule_")
        .or_else(|| last.strip_prefix("DefaultRule_"))
        .unwrap_or(last)
}

/// Ask the model each Network Watcher question again and report where the answers differ.
pub fn replay(snap: &Snapshot, results: &[WatcherResult], report: &mut Report) {
    for r in results {
        report.questions_replayed += 1;
        match r {
            WatcherResult::IpFlowVerify {
                direction,
                protocol,
                local,
                remote,
                access,
                rule_name,
            } => replay_ip_flow(
                snap,
                *direction,
                *protocol,
                *local,
                *remote,
                access,
                rule_name.as_deref(),
                report,
            ),
            WatcherResult::NextHop {
                source,
                destination,
                next_hop_type,
                next_hop_ip_address,
                route_table_id,
            } => replay_next_hop(
                snap,
                *source,
                *destination,
                next_hop_type,
                *next_hop_ip_address,
                route_table_id.as_deref(),
                report,
            ),
        }
    }
}

/// IP flow verify evaluates the NSGs of the VM's NIC and subnet only (NSG-6): outbound the NIC's
/// first, inbound the subnet's first; the first deny decides, else the last allow.
#[allow(clippy::too_many_arguments)]
fn replay_ip_flow(
    snap: &Snapshot,
    direction: Direction,
    protocol: Protocol,
    local: (IpAddr, u16),
    remote: (IpAddr, u16),
    access: &str,
    rule_name: Option<&str>,
    report: &mut Report,
) {
    let subject = format!(
        "ipFlowVerify {direction:?} {} {}:{} ↔ {}:{}",
        protocol.as_str(),
        local.0,
        local.1,
        remote.0,
        remote.1
    );
    let at = snap.locate(local.0);
    let (Some(subnet), Some(nic)) = (at.subnet, at.nic) else {
        report.notes.push(format!(
            "{subject}: {} is no network interface of the input; not replayed",
            local.0
        ));
        return;
    };
    let nic_nsg = snap.nic(nic).nsg;
    let subnet_nsg = snap.subnet(subnet).nsg;
    let order = match direction {
        Direction::Outbound => [nic_nsg, subnet_nsg],
        Direction::Inbound => [subnet_nsg, nic_nsg],
    };
    let flow = match direction {
        Direction::Outbound => Flow {
            source: local.0,
            source_port: local.1,
            destination: remote.0,
            destination_port: remote.1,
            protocol,
            host: None,
            app_protocol: None,
        },
        Direction::Inbound => Flow {
            source: remote.0,
            source_port: remote.1,
            destination: local.0,
            destination_port: local.1,
            protocol,
            host: None,
            app_protocol: None,
        },
    };
    // (access, rule) of the model: no NSG at all allows (NSG-6).
    let mut model: (&str, Option<String>) = ("Allow", None);
    for nsg in order.into_iter().flatten() {
        let opts = TraceOptions {
            at: Some(snap.nsg(nsg).name.clone()),
            direction: Some(direction),
            ..TraceOptions::default()
        };
        let t = snap.trace(&flow, &opts);
        let rule = t.decided_by.and_then(|d| d.rule);
        if t.verdict == Verdict::Allow {
            model = ("Allow", rule);
        } else {
            model = ("Deny", rule);
            break;
        }
    }
    let side = |access: &str, rule: Option<&str>| {
        format!(
            "{access}{}",
            rule.map(|r| format!(" by {r}")).unwrap_or_default()
        )
    };
    let (azure_side, model_side) = (side(access, rule_name), side(model.0, model.1.as_deref()));
    let kind = if !access.eq_ignore_ascii_case(model.0) {
        Some(Kind::AccessDiffers)
    } else {
        match (rule_name, &model.1) {
            (Some(a), Some(m)) if !bare_rule_name(a).eq_ignore_ascii_case(bare_rule_name(m)) => {
                Some(Kind::RuleNameDiffers)
            }
            _ => None,
        }
    };
    if let Some(kind) = kind {
        report.disagreements.push(Disagreement {
            kind,
            subject,
            field: Some(if kind == Kind::AccessDiffers {
                "access"
            } else {
                "ruleName"
            }),
            azure: Some(azure_side),
            model: Some(model_side),
            only_azure: vec![],
            only_model: vec![],
        });
    }
}

fn replay_next_hop(
    snap: &Snapshot,
    source: IpAddr,
    destination: IpAddr,
    next_hop_type: &str,
    next_hop_ip_address: Option<IpAddr>,
    route_table_id: Option<&str>,
    report: &mut Report,
) {
    let subject = format!("nextHop {source} → {destination}");
    let Some(subnet) = snap.locate(source).subnet else {
        report.notes.push(format!(
            "{subject}: {source} is in no subnet of the input; not replayed"
        ));
        return;
    };
    let route = snap
        .subnet(subnet)
        .routes
        .lookup(destination)
        .map(|(_, r)| r);
    let model_type = route.map_or("None", |r| r.next_hop_type.as_str());
    let model_address = route
        .filter(|r| r.next_hop_type == palisade_model::NextHopType::VirtualAppliance)
        .and_then(|r| r.next_hop_ip_address);
    let model_table = route
        .and_then(|r| r.table.clone())
        .unwrap_or_else(|| "System Route".into());
    let hop = |t: &str, a: Option<IpAddr>| {
        format!("{t}{}", a.map(|a| format!(" {a}")).unwrap_or_default())
    };
    // Azure also reports an address for other hop types (the example's Internet hop has one);
    // only an appliance's address is a routing decision.
    let appliance = next_hop_type.eq_ignore_ascii_case("VirtualAppliance");
    let azure_address = next_hop_ip_address.filter(|_| appliance);
    if !next_hop_type.eq_ignore_ascii_case(model_type) || azure_address != model_address {
        report.disagreements.push(Disagreement {
            kind: Kind::NextHopDiffers,
            subject: subject.clone(),
            field: Some("nextHopType"),
            azure: Some(hop(next_hop_type, azure_address)),
            model: Some(hop(model_type, model_address)),
            only_azure: vec![],
            only_model: vec![],
        });
    }
    if let Some(id) = route_table_id {
        let azure_table = last_segment(id);
        if !azure_table.eq_ignore_ascii_case(&model_table) {
            report.disagreements.push(Disagreement {
                kind: Kind::RouteTableDiffers,
                subject,
                field: Some("routeTableId"),
                azure: Some(azure_table),
                model: Some(model_table),
                only_azure: vec![],
                only_model: vec![],
            });
        }
    }
}
