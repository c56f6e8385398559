//! Outbound dependency catalogs (CAT-5, CAT-8): what a workload must reach — "App Service
//! Environment needs `login.microsoftonline.com:443`" — so that diagnostics can check a firewall
//! or route table covers it.
//!
//! The files use the shape of Azure's `outboundNetworkDependenciesEndpoints` APIs, so a user can
//! save the answer for their own cluster or environment and check against it: bare items
//! `{category, endpoints}` (App Service), ARM envelopes `{id, name, type, properties {category,
//! endpoints}}` (Data Explorer), or a bare array (CLI output), plus Palisade's extension fields
//! (CAT-5.2). Published lists have defects — missing ports, truncated or misspelt names,
//! duplicates (CAT-6.3) — which the importer reports as located warnings and does not repair:
//! the entries it cannot read are skipped, the rest load.

use super::access::{self, as_bool, as_u64, get, item, At, Prop};
use crate::diag::Diagnostic;
use serde::Serialize;
use serde_json::{Map, Value};
use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::path::Path;

/// How a dependency must be satisfied (CAT-5.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize)]
pub enum Via {
    /// Allowed by a firewall rule (application rule for names, network rule for addresses).
    #[default]
    Firewall,
    /// A service endpoint on the subnet (`service_endpoint` says which); must not go through a
    /// firewall.
    ServiceEndpoint,
    /// A route sending the traffic around the firewall (next hop `Internet`).
    Route,
}

impl Via {
    fn parse(s: &str) -> Option<Via> {
        [Via::Firewall, Via::ServiceEndpoint, Via::Route]
            .into_iter()
            .find(|v| v.as_str().eq_ignore_ascii_case(s.trim()))
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Via::Firewall => "Firewall",
            Via::ServiceEndpoint => "ServiceEndpoint",
            Via::Route => "Route",
        }
    }
}

/// The transport of a dependency (CAT-5.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize)]
pub enum DependencyProtocol {
    #[default]
    Tcp,
    Udp,
    Any,
}

impl DependencyProtocol {
    fn parse(s: &str) -> Option<DependencyProtocol> {
        [
            DependencyProtocol::Tcp,
            DependencyProtocol::Udp,
            DependencyProtocol::Any,
        ]
        .into_iter()
        .find(|p| p.as_str().eq_ignore_ascii_case(s.trim()))
        .or_else(|| (s.trim() == "*").then_some(DependencyProtocol::Any))
    }

    pub fn as_str(self) -> &'static str {
        match self {
            DependencyProtocol::Tcp => "Tcp",
            DependencyProtocol::Udp => "Udp",
            DependencyProtocol::Any => "Any",
        }
    }
}

/// A loaded dependency list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DependencyCatalog {
    pub source: String,
    pub categories: Vec<DependencyCategory>,
}

/// One `category` of the list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DependencyCategory {
    /// Free text: `Azure Active Directory`.
    pub category: String,
    pub via: Via,
    /// `Microsoft.Sql` when `via` is `ServiceEndpoint`.
    pub service_endpoint: Option<String>,
    pub endpoints: Vec<DependencyEndpoint>,
}

/// One destination: a name, pattern, IP literal or `*`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DependencyEndpoint {
    /// Lowercased: `login.microsoftonline.com`, `*.core.windows.net`, `gr-prod-*.cloudapp.net`,
    /// `40.77.24.27`, or `*` for any destination. Any `:port` suffix has moved to `details`.
    pub domain_name: String,
    /// False for optional entries (`required: false`).
    pub required: bool,
    /// One per port; empty when the list gives none (reported as a warning).
    pub details: Vec<EndpointDetail>,
}

impl DependencyEndpoint {
    /// `*`: any destination (CAT-8 `*:123`).
    pub fn is_any(&self) -> bool {
        self.domain_name == "*"
    }

    /// The address when the endpoint is an IP literal: a network dependency (CAT-8).
    pub fn ip_address(&self) -> Option<IpAddr> {
        self.domain_name.parse().ok()
    }

    /// Whether the name is a pattern (`*.x`, `*x`, `a-*.x`) rather than one name.
    pub fn is_pattern(&self) -> bool {
        self.domain_name.contains('*') && !self.is_any()
    }
}

/// One port of an endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub struct EndpointDetail {
    pub port: u16,
    pub protocol: DependencyProtocol,
    /// The address the API resolved the name to, or the endpoint's own IP literal.
    pub ip_address: Option<IpAddr>,
}

/// One name × port entry, for iteration.
#[derive(Debug, Clone, Copy)]
pub struct DependencyEntry<'a> {
    pub category: &'a DependencyCategory,
    pub endpoint: &'a DependencyEndpoint,
    pub detail: &'a EndpointDetail,
}

impl DependencyCatalog {
    /// Parse a dependency list. The result is an error only when the text is not a dependency
    /// list at all; problems with single entries are located warnings (second element), and
    /// those entries are skipped.
    pub fn from_json(
        source: &str,
        text: &str,
    ) -> (Result<DependencyCatalog, Diagnostic>, Vec<Diagnostic>) {
        let doc = match access::parse_located(source, text) {
            Ok(d) => d,
            Err(e) => return (Err(e), Vec::new()),
        };
        let mut warnings = Vec::new();
        let result = decode(source, &doc.value, &mut warnings)
            .map(|categories| DependencyCatalog {
                source: source.to_string(),
                categories,
            })
            .map_err(|e| doc.locate(e));
        let warnings = warnings.into_iter().map(|w| doc.locate(w)).collect();
        (result, warnings)
    }

    /// Load a file (see [`from_json`](Self::from_json)).
    pub fn load(path: &Path) -> (Result<DependencyCatalog, Diagnostic>, Vec<Diagnostic>) {
        match access::read_text(path) {
            Ok(text) => DependencyCatalog::from_json(&path.display().to_string(), &text),
            Err(e) => (Err(e), Vec::new()),
        }
    }

    /// Every name × port entry, in file order.
    pub fn entries(&self) -> impl Iterator<Item = DependencyEntry<'_>> + '_ {
        self.categories.iter().flat_map(|category| {
            category.endpoints.iter().flat_map(move |endpoint| {
                endpoint.details.iter().map(move |detail| DependencyEntry {
                    category,
                    endpoint,
                    detail,
                })
            })
        })
    }

    /// A category by name, ignoring case.
    pub fn category(&self, name: &str) -> Option<&DependencyCategory> {
        self.categories
            .iter()
            .find(|c| c.category.eq_ignore_ascii_case(name.trim()))
    }
}

fn warn(file: &str, pointer: &str, field: &str, message: impl Into<String>) -> Diagnostic {
    Diagnostic::warning(message).at(file, pointer).field(field)
}

fn decode(
    file: &str,
    root: &Value,
    warnings: &mut Vec<Diagnostic>,
) -> Result<Vec<DependencyCategory>, Diagnostic> {
    let expected = "a dependency list: `{\"value\": [{\"category\", \"endpoints\"}]}` (CAT-5.1)";
    let (items, pointer) = match root {
        Value::Array(a) => (a, String::new()),
        Value::Object(obj) => {
            if let Some(p) = get(file, obj, "", "nextLink")? {
                if p.value.as_str().is_some_and(|s| !s.trim().is_empty()) {
                    warnings.push(warn(
                        file,
                        &p.pointer,
                        "nextLink",
                        "this is one page of a paged answer; the categories of the other pages \
                         are missing",
                    ));
                }
            }
            let value = get(file, obj, "", "value")?
                .ok_or_else(|| access::missing(file, "", "value", expected))?;
            match value.value {
                Value::Array(a) => (a, value.pointer),
                _ => return Err(access::wrong(file, value.at(), "value", expected)),
            }
        }
        _ => {
            let at = At {
                value: root,
                pointer: "",
            };
            return Err(access::wrong(file, at, "(document)", expected));
        }
    };
    let mut seen: HashMap<(String, u16, DependencyProtocol), String> = HashMap::new();
    let mut categories = Vec::with_capacity(items.len());
    for (i, v) in items.iter().enumerate() {
        let ptr = item(&pointer, i);
        if let Some(c) = decode_category(file, v, &ptr, &mut seen, warnings)? {
            categories.push(c);
        }
    }
    Ok(categories)
}

/// A string property, with a warning when it has another type.
fn opt_str(
    file: &str,
    obj: &Map<String, Value>,
    pointer: &str,
    name: &str,
    warnings: &mut Vec<Diagnostic>,
) -> Result<Option<String>, Diagnostic> {
    Ok(match get(file, obj, pointer, name)? {
        None => None,
        Some(p) => match p.value.as_str() {
            Some(s) => Some(s.trim().to_string()),
            None => {
                warnings.push(
                    warn(
                        file,
                        &p.pointer,
                        name,
                        format!("`{name}` is not a string; ignored"),
                    )
                    .found(access::describe(p.value)),
                );
                None
            }
        },
    })
}

fn decode_category(
    file: &str,
    v: &Value,
    pointer: &str,
    seen: &mut HashMap<(String, u16, DependencyProtocol), String>,
    warnings: &mut Vec<Diagnostic>,
) -> Result<Option<DependencyCategory>, Diagnostic> {
    let Some(item_obj) = v.as_object() else {
        warnings.push(
            warn(file, pointer, "value[]", "not a category object; skipped")
                .found(access::describe(v)),
        );
        return Ok(None);
    };
    // Data Explorer wraps each category in an ARM envelope; extension fields may sit on either.
    let envelope = get(file, item_obj, pointer, "properties")?;
    let (body, body_ptr) = match &envelope {
        Some(Prop {
            value: Value::Object(props),
            pointer: p,
        }) => (props, p.as_str()),
        _ => (item_obj, pointer),
    };
    let lookup = |name: &str| -> Result<Option<Prop<'_>>, Diagnostic> {
        match get(file, body, body_ptr, name)? {
            Some(p) => Ok(Some(p)),
            None => get(file, item_obj, pointer, name),
        }
    };
    let category = match opt_str(file, body, body_ptr, "category", warnings)? {
        Some(c) if !c.is_empty() => c,
        _ => {
            let from_name = opt_str(file, item_obj, pointer, "name", warnings)?
                .and_then(|n| n.rsplit('/').next().map(str::to_string))
                .filter(|n| !n.is_empty());
            match from_name {
                Some(n) => n,
                None => {
                    warnings.push(warn(
                        file,
                        pointer,
                        "category",
                        "a category without a `category` name; called `(unnamed)`",
                    ));
                    "(unnamed)".to_string()
                }
            }
        }
    };
    let via = match lookup("via")? {
        None => Via::default(),
        Some(p) => match p.value.as_str().and_then(Via::parse) {
            Some(v) => v,
            None => {
                warnings.push(
                    warn(file, &p.pointer, "via", "unknown `via`; using Firewall")
                        .found(access::describe(p.value))
                        .expected("Firewall, ServiceEndpoint or Route"),
                );
                Via::Firewall
            }
        },
    };
    let service_endpoint = match lookup("serviceEndpoint")? {
        None => None,
        Some(p) => match p.value.as_str() {
            Some(se) if !se.trim().is_empty() => Some(se.trim().to_string()),
            _ => {
                warnings.push(
                    warn(
                        file,
                        &p.pointer,
                        "serviceEndpoint",
                        "not a service name; ignored",
                    )
                    .found(access::describe(p.value))
                    .expected("a service such as `Microsoft.Sql`"),
                );
                None
            }
        },
    };
    if via == Via::ServiceEndpoint && service_endpoint.is_none() {
        warnings.push(warn(
            file,
            pointer,
            "serviceEndpoint",
            format!("category `{category}` is satisfied by a service endpoint but does not say which (`serviceEndpoint`, e.g. `Microsoft.Sql`)"),
        ));
    }
    let mut endpoints = Vec::new();
    match get(file, body, body_ptr, "endpoints")? {
        None => {}
        Some(Prop {
            value: Value::Array(list),
            pointer: ep,
        }) => {
            for (j, e) in list.iter().enumerate() {
                let ptr = item(&ep, j);
                if let Some(endpoint) = decode_endpoint(file, e, &ptr, &category, seen, warnings)? {
                    endpoints.push(endpoint);
                }
            }
        }
        Some(p) => warnings.push(
            warn(
                file,
                &p.pointer,
                "endpoints",
                "`endpoints` is not an array; ignored",
            )
            .found(access::describe(p.value)),
        ),
    }
    Ok(Some(DependencyCategory {
        category,
        via,
        service_endpoint,
        endpoints,
    }))
}

fn decode_endpoint(
    file: &str,
    v: &Value,
    pointer: &str,
    category: &str,
    seen: &mut HashMap<(String, u16, DependencyProtocol), String>,
    warnings: &mut Vec<Diagnostic>,
) -> Result<Option<DependencyEndpoint>, Diagnostic> {
    let Some(obj) = v.as_object() else {
        warnings.push(
            warn(
                file,
                pointer,
                "endpoints[]",
                "not an endpoint object; skipped",
            )
            .found(access::describe(v)),
        );
        return Ok(None);
    };
    let Some(name_p) = get(file, obj, pointer, "domainName")? else {
        warnings.push(warn(
            file,
            pointer,
            "domainName",
            "an endpoint without `domainName`; skipped",
        ));
        return Ok(None);
    };
    let Some(raw) = name_p.value.as_str() else {
        warnings.push(
            warn(
                file,
                &name_p.pointer,
                "domainName",
                "`domainName` is not a string; skipped",
            )
            .found(access::describe(name_p.value)),
        );
        return Ok(None);
    };
    let target = match parse_target(raw) {
        Ok(t) => t,
        Err(why) => {
            warnings.push(
                warn(
                    file,
                    &name_p.pointer,
                    "domainName",
                    format!("invalid dependency name: {why}; skipped"),
                )
                .found(raw)
                .expected(
                    "a name, `*.` pattern, IP address or `*`, optionally with `:port[,port]`",
                ),
            );
            return Ok(None);
        }
    };
    if let Some(note) = &target.note {
        warnings.push(warn(file, &name_p.pointer, "domainName", note.clone()).found(raw));
    }
    if !target.ports.is_empty() {
        warnings.push(
            Diagnostic::note(format!(
                "`{raw}` carries its port(s) in the name; read as `{}` on {}",
                target.name,
                join_ports(&target.ports)
            ))
            .at(file, &name_p.pointer)
            .field("domainName"),
        );
    }
    let required = match get(file, obj, pointer, "required")? {
        None => true,
        Some(p) => as_bool(p.value).unwrap_or_else(|| {
            warnings.push(
                warn(
                    file,
                    &p.pointer,
                    "required",
                    "`required` is not true or false; using true",
                )
                .found(access::describe(p.value)),
            );
            true
        }),
    };
    let mut details: Vec<EndpointDetail> = Vec::new();
    match get(file, obj, pointer, "endpointDetails")? {
        None => {}
        Some(Prop {
            value: Value::Array(list),
            pointer: dp,
        }) => {
            for (k, d) in list.iter().enumerate() {
                let ptr = item(&dp, k);
                if let Some(detail) = decode_detail(file, d, &ptr, &target, warnings)? {
                    if !details
                        .iter()
                        .any(|x| x.port == detail.port && x.protocol == detail.protocol)
                    {
                        details.push(detail);
                    }
                }
            }
        }
        Some(p) => warnings.push(
            warn(
                file,
                &p.pointer,
                "endpointDetails",
                "`endpointDetails` is not an array; ignored",
            )
            .found(access::describe(p.value)),
        ),
    }
    for &port in &target.ports {
        if !details.iter().any(|d| d.port == port) {
            details.push(EndpointDetail {
                port,
                protocol: DependencyProtocol::Tcp,
                ip_address: target.ip,
            });
        }
    }
    if details.is_empty() {
        warnings.push(warn(
            file,
            &name_p.pointer,
            "endpointDetails",
            format!("`{}` has no port: it cannot be checked", target.name),
        ));
    }
    for d in &details {
        let key = (target.name.clone(), d.port, d.protocol);
        if let Some(first) = seen.get(&key) {
            warnings.push(warn(
                file,
                &name_p.pointer,
                "domainName",
                format!(
                    "`{}` port {} ({}) is listed twice (also in category `{first}`)",
                    target.name,
                    d.port,
                    d.protocol.as_str()
                ),
            ));
        } else {
            seen.insert(key, category.to_string());
        }
    }
    Ok(Some(DependencyEndpoint {
        domain_name: target.name,
        required,
        details,
    }))
}

fn join_ports(ports: &[u16]) -> String {
    let ports: Vec<String> = ports.iter().map(u16::to_string).collect();
    format!("port {}", ports.join(", "))
}

fn decode_detail(
    file: &str,
    v: &Value,
    pointer: &str,
    target: &Target,
    warnings: &mut Vec<Diagnostic>,
) -> Result<Option<EndpointDetail>, Diagnostic> {
    let Some(obj) = v.as_object() else {
        warnings.push(
            warn(file, pointer, "endpointDetails[]", "not an object; skipped")
                .found(access::describe(v)),
        );
        return Ok(None);
    };
    let port = match get(file, obj, pointer, "port")? {
        None => {
            warnings.push(warn(
                file,
                pointer,
                "port",
                "an endpoint detail without `port`; skipped",
            ));
            return Ok(None);
        }
        Some(p) => match as_u64(p.value)
            .and_then(|n| u16::try_from(n).ok())
            .filter(|n| *n != 0)
        {
            Some(n) => n,
            None => {
                warnings.push(
                    warn(file, &p.pointer, "port", "not a port number; skipped")
                        .found(access::describe(p.value))
                        .expected("an integer 1-65535"),
                );
                return Ok(None);
            }
        },
    };
    let protocol = match get(file, obj, pointer, "protocol")? {
        None => DependencyProtocol::Tcp,
        Some(p) => match p.value.as_str().and_then(DependencyProtocol::parse) {
            Some(proto) => proto,
            None => {
                warnings.push(
                    warn(
                        file,
                        &p.pointer,
                        "protocol",
                        "unknown protocol; detail skipped",
                    )
                    .found(access::describe(p.value))
                    .expected("Tcp, Udp or Any"),
                );
                return Ok(None);
            }
        },
    };
    let mut ip_address = target.ip;
    if let Some(p) = get(file, obj, pointer, "ipAddress")? {
        match p
            .value
            .as_str()
            .and_then(|s| s.trim().parse::<IpAddr>().ok())
        {
            Some(ip) => {
                if target.ip.is_some_and(|t| t != ip) {
                    warnings.push(
                        warn(
                            file,
                            &p.pointer,
                            "ipAddress",
                            format!(
                                "`ipAddress` differs from the endpoint's address `{}`",
                                target.name
                            ),
                        )
                        .found(ip),
                    );
                }
                ip_address = Some(ip);
            }
            None => warnings.push(
                warn(file, &p.pointer, "ipAddress", "not an IP address; ignored")
                    .found(access::describe(p.value)),
            ),
        }
    }
    Ok(Some(EndpointDetail {
        port,
        protocol,
        ip_address,
    }))
}

/// A `domainName` read per CAT-8.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Target {
    /// Lowercased name or pattern, canonical IP text, or `*`.
    pub name: String,
    /// Ports written in the name (`host:443,5671`).
    pub ports: Vec<u16>,
    pub ip: Option<IpAddr>,
    /// A warning about a legal but suspicious name.
    pub note: Option<String>,
}

/// Why a `domainName` (or an FQDN tag's name) is not a name, pattern, address or `*` (CAT-8,
/// FW-6.3).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum TargetError {
    #[error("the name is empty")]
    Empty,
    #[error("a `[` without `]`")]
    UnclosedBracket,
    #[error("`{0}` is not an IPv6 address")]
    NotIpv6(String),
    #[error("unexpected `{0}` after the address")]
    AfterAddress(String),
    #[error("several `:`; an IPv6 address with a port is written `[address]:port`")]
    SeveralColons,
    #[error("`{0}` is not a port number (1-65535)")]
    BadPort(String),
    #[error("label `{0}` is not a valid internationalised name")]
    BadIdn(String),
    #[error("a single label, not a fully qualified name")]
    SingleLabel,
    #[error("an empty label (`..` or a leading dot)")]
    EmptyLabel,
    #[error("label `{0}` is longer than 63 characters")]
    LongLabel(String),
    #[error("character `{0}` is not allowed in a name")]
    BadChar(char),
    #[error("`*` in the top-level label")]
    WildcardTopLevel,
    #[error("`*` as a whole label is allowed only leftmost")]
    WildcardNotLeftmost,
    #[error("label `{0}` starts or ends with `-`")]
    Hyphen(String),
    #[error("the top-level label `{0}` is numeric (a truncated name?)")]
    NumericTopLevel(String),
    #[error("longer than 253 characters")]
    TooLong,
}

/// Split and check a `domainName` (CAT-8): `host`, `host:port`, `host:443,5671`, `*:123`, IP
/// literals (IPv6 with a port as `[addr]:port`).
pub(crate) fn parse_target(raw: &str) -> Result<Target, TargetError> {
    let t = raw.trim();
    if t.is_empty() {
        return Err(TargetError::Empty);
    }
    if let Ok(ip) = t.parse::<IpAddr>() {
        return Ok(Target {
            name: ip.to_string(),
            ports: Vec::new(),
            ip: Some(ip),
            note: None,
        });
    }
    if let Some(rest) = t.strip_prefix('[') {
        let (inner, after) = rest.split_once(']').ok_or(TargetError::UnclosedBracket)?;
        let ip = IpAddr::V6(
            inner
                .parse::<Ipv6Addr>()
                .map_err(|_| TargetError::NotIpv6(inner.to_string()))?,
        );
        let ports = match after {
            "" => Vec::new(),
            _ => parse_ports(
                after
                    .strip_prefix(':')
                    .ok_or_else(|| TargetError::AfterAddress(after.to_string()))?,
            )?,
        };
        return Ok(Target {
            name: ip.to_string(),
            ports,
            ip: Some(ip),
            note: None,
        });
    }
    let (host, ports) = match t.split_once(':') {
        Some((h, p)) if !p.contains(':') => (h.trim(), parse_ports(p)?),
        Some(_) => return Err(TargetError::SeveralColons),
        None => (t, Vec::new()),
    };
    let host = host.to_lowercase();
    if host == "*" {
        return Ok(Target {
            name: host,
            ports,
            ip: None,
            note: None,
        });
    }
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(Target {
            name: ip.to_string(),
            ports,
            ip: Some(ip),
            note: None,
        });
    }
    let (name, note) = check_name(&host)?;
    Ok(Target {
        name,
        ports,
        ip: None,
        note,
    })
}

/// `443,5671` → [443, 5671].
fn parse_ports(text: &str) -> Result<Vec<u16>, TargetError> {
    let mut ports = Vec::new();
    for piece in text.split(',') {
        let p = piece.trim();
        let port = (!p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
            .then(|| p.parse::<u16>().ok())
            .flatten()
            .filter(|n| *n != 0)
            .ok_or_else(|| TargetError::BadPort(p.to_string()))?;
        if !ports.contains(&port) {
            ports.push(port);
        }
    }
    Ok(ports)
}

/// Check a lowercased name or pattern (FW-6.3 with CAT-8's mid-label `*`); returns it in ASCII
/// (IDNA for non-ASCII labels) and a warning for legal but suspicious forms.
pub(crate) fn check_name(name: &str) -> Result<(String, Option<String>), TargetError> {
    let n = name.strip_suffix('.').unwrap_or(name);
    if n.is_empty() {
        return Err(TargetError::Empty);
    }
    let mut labels: Vec<String> = Vec::new();
    for label in n.split('.') {
        if label.is_ascii() || label.contains('*') {
            labels.push(label.to_string());
        } else {
            let ascii =
                idna::domain_to_ascii(label).map_err(|_| TargetError::BadIdn(label.to_string()))?;
            labels.push(ascii);
        }
    }
    let last = labels.len() - 1;
    if last == 0 {
        return Err(TargetError::SingleLabel);
    }
    for (i, l) in labels.iter().enumerate() {
        if l.is_empty() {
            return Err(TargetError::EmptyLabel);
        }
        if l.len() > 63 {
            return Err(TargetError::LongLabel(l.clone()));
        }
        if let Some(c) = l.chars().find(|c| {
            !(c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '_' | '*'))
        }) {
            return Err(TargetError::BadChar(c));
        }
        if l.contains('*') {
            if i == last {
                return Err(TargetError::WildcardTopLevel);
            }
            if l == "*" && i != 0 {
                return Err(TargetError::WildcardNotLeftmost);
            }
        } else if l.starts_with('-') || l.ends_with('-') {
            return Err(TargetError::Hyphen(l.clone()));
        }
    }
    if labels[last].bytes().all(|b| b.is_ascii_digit()) {
        return Err(TargetError::NumericTopLevel(labels[last].clone()));
    }
    let ascii = labels.join(".");
    if ascii.len() > 253 {
        return Err(TargetError::TooLong);
    }
    let first = &labels[0];
    let note =
        (first.len() > 1 && first.starts_with('*') && !first[1..].contains('*')).then(|| {
            format!(
                "`{ascii}` has no dot after the leading `*`, so it also matches names such as \
             `x{}` (FW-6.3)",
                &ascii[1..]
            )
        });
    Ok((ascii, note))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diag::Severity;
    use proptest::prelude::*;

    fn shipped(name: &str) -> (DependencyCatalog, Vec<Diagnostic>) {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../catalogs/dependencies")
            .join(name);
        let (r, w) = DependencyCatalog::load(&path);
        (r.unwrap(), w)
    }

    fn names_ports(c: &DependencyCategory) -> Vec<(String, u16)> {
        c.endpoints
            .iter()
            .flat_map(|e| {
                e.details
                    .iter()
                    .map(move |d| (e.domain_name.clone(), d.port))
            })
            .collect()
    }

    #[test]
    fn cat_7_adx_catalog_loads() {
        let (c, w) = shipped("azure-data-explorer.json");
        assert!(w.is_empty(), "{w:?}");
        assert_eq!(c.entries().count(), 25);
        let names: std::collections::HashSet<_> = c
            .categories
            .iter()
            .flat_map(|c| c.endpoints.iter().map(|e| e.domain_name.as_str()))
            .collect();
        assert_eq!(names.len(), 24);
        assert!(c.categories.iter().all(|c| c.via == Via::Firewall));
        let sb = c.category("azure service bus").unwrap();
        assert_eq!(
            names_ports(sb),
            vec![
                ("*.servicebus.windows.net".to_string(), 443),
                ("*.servicebus.windows.net".to_string(), 5671)
            ]
        );
        assert!(sb.endpoints[0].is_pattern());
        for cat in [
            "Azure Active Directory",
            "Azure Monitor",
            "Certificate Authority",
            "Azure Storage",
        ] {
            assert!(c.category(cat).is_some(), "{cat}");
        }
        let http: Vec<_> = c
            .entries()
            .filter(|e| e.detail.port == 80)
            .map(|e| e.endpoint.domain_name.as_str())
            .collect();
        assert_eq!(http.len(), 10);
        assert!(c
            .entries()
            .all(|e| e.detail.protocol == DependencyProtocol::Tcp));
    }

    #[test]
    fn cat_6_ase_catalog_loads() {
        let (c, w) = shipped("app-service-environment.json");
        assert!(w.is_empty(), "{w:?}");
        assert_eq!(c.categories.len(), 8);
        for (cat, se) in [
            ("Azure SQL", "Microsoft.Sql"),
            ("Azure Storage", "Microsoft.Storage"),
            ("Azure Event Hub", "Microsoft.EventHub"),
        ] {
            let k = c.category(cat).unwrap();
            assert_eq!(k.via, Via::ServiceEndpoint);
            assert_eq!(k.service_endpoint.as_deref(), Some(se));
            assert!(k.endpoints.is_empty());
        }
        let ip = c.category("IP address dependencies").unwrap();
        assert_eq!(ip.endpoints.len(), 2);
        assert!(ip.endpoints.iter().all(DependencyEndpoint::is_any));
        assert_eq!(ip.endpoints[0].details[0].port, 123);
        assert_eq!(ip.endpoints[0].details[0].protocol, DependencyProtocol::Udp);
        assert!(ip.endpoints[0].required);
        assert_eq!(ip.endpoints[1].details[0].port, 12000);
        assert_eq!(ip.endpoints[1].details[0].protocol, DependencyProtocol::Any);
        assert!(!ip.endpoints[1].required);
        let mon = c.category("ASE monitoring addresses").unwrap();
        assert_eq!(mon.via, Via::Route);
        assert_eq!(mon.endpoints.len(), 4);
        assert_eq!(names_ports(mon).len(), 8);
        assert!(mon.endpoints.iter().all(|e| e.ip_address().is_some()));
        assert!(mon
            .endpoints
            .iter()
            .all(|e| e.details.iter().all(|d| d.ip_address == e.ip_address())));
        let fqdn = c.category("FQDN HTTP/HTTPS dependencies").unwrap();
        assert_eq!(fqdn.endpoints.len(), 71);
        assert_eq!(names_ports(fqdn).len(), 81);
        let wild = c.category("Wildcard HTTP/HTTPS dependencies").unwrap();
        assert_eq!(wild.endpoints.len(), 6);
        assert_eq!(names_ports(wild).len(), 7);
        assert_eq!(wild.endpoints[0].domain_name, "gr-prod-*.cloudapp.net");
        let linux = c.category("Linux dependencies").unwrap();
        assert_eq!(linux.endpoints.len(), 22);
        assert_eq!(names_ports(linux).len(), 25);
        assert!(linux.endpoints.iter().all(|e| !e.required));
        assert_eq!(
            linux
                .endpoints
                .iter()
                .filter(|e| e.ip_address().is_some())
                .count(),
            7
        );
        assert_eq!(c.entries().count(), 2 + 8 + 81 + 7 + 25);
    }

    #[test]
    fn cat_8_host_port_split() {
        let t = parse_target("Shoebox2.Metrics.NSATC.net:443").unwrap();
        assert_eq!(t.name, "shoebox2.metrics.nsatc.net");
        assert_eq!(t.ports, vec![443]);
        let t = parse_target("*.ctldl.windowsupdate.com:80,443").unwrap();
        assert_eq!(t.name, "*.ctldl.windowsupdate.com");
        assert_eq!(t.ports, vec![80, 443]);
        let t = parse_target("*:123").unwrap();
        assert_eq!((t.name.as_str(), t.ports.as_slice()), ("*", &[123][..]));
        let t = parse_target("40.77.24.27:443").unwrap();
        assert_eq!(t.ip, Some("40.77.24.27".parse().unwrap()));
        let t = parse_target("2001:DB8::1").unwrap();
        assert_eq!((t.name.as_str(), t.ports.len()), ("2001:db8::1", 0));
        let t = parse_target("[2001:db8::1]:443,5671").unwrap();
        assert_eq!(t.ports, vec![443, 5671]);
        assert!(parse_target("host:").is_err());
        assert!(parse_target("host:0").is_err());
        assert!(parse_target("host:99999").is_err());
        assert!(parse_target("a.b:80:81").is_err());
    }

    #[test]
    fn cat_8_names_and_patterns() {
        assert_eq!(check_name("gr-prod-*.cloudapp.net").unwrap().1, None);
        assert_eq!(check_name("*.core.windows.net").unwrap().1, None);
        assert!(check_name("*ctldl.windowsupdate.com").unwrap().1.is_some());
        assert_eq!(
            check_name("xn--bcher-kva.de").unwrap().0,
            "xn--bcher-kva.de"
        );
        assert_eq!(check_name("bücher.de").unwrap().0, "xn--bcher-kva.de");
        assert_eq!(check_name("example.com.").unwrap().0, "example.com");
        for bad in [
            "ocsp.digicert.0",
            "localhost",
            "a..b",
            ".a.b",
            "a.*.b",
            "a.b.*",
            "-a.b",
            "a b.c",
            "www.example.*",
            "",
        ] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn cat_6_3_defects_are_reported_not_fixed() {
        let text = r#"{"value": [{"category": "US Gov", "endpoints": [
            {"domainName": "mscrl.microsoft.com"},
            {"domainName": "ocsp.digicert.0", "endpointDetails": [{"port": 80}]},
            {"domainName": "ocsp.msocsp.co", "endpointDetails": [{"port": 80}]},
            {"domainName": "*ctldl.windowsupdate.com", "endpointDetails": [{"port": 443}]},
            {"domainName": "crl.microsoft.com", "endpointDetails": [{"port": 80}]},
            {"domainName": "CRL.microsoft.com:80"}
        ]}]}"#;
        let (r, w) = DependencyCatalog::from_json("gov.json", text);
        let c = r.unwrap();
        let names: Vec<_> = c.categories[0]
            .endpoints
            .iter()
            .map(|e| e.domain_name.as_str())
            .collect();
        assert_eq!(
            names,
            vec![
                "mscrl.microsoft.com",
                "ocsp.msocsp.co",
                "*ctldl.windowsupdate.com",
                "crl.microsoft.com",
                "crl.microsoft.com"
            ]
        );
        let warnings: Vec<_> = w
            .iter()
            .filter(|d| d.severity == Severity::Warning)
            .collect();
        let notes: Vec<_> = w.iter().filter(|d| d.severity == Severity::Note).collect();
        assert_eq!(warnings.len(), 4, "{w:#?}");
        assert_eq!(notes.len(), 1);
        assert!(warnings[0].message.contains("no port"));
        assert_eq!(warnings[0].line, Some(2));
        assert_eq!(warnings[0].pointer, "/value/0/endpoints/0/domainName");
        assert!(warnings[1].message.contains("invalid"));
        assert_eq!(warnings[1].line, Some(3));
        assert!(warnings[2].message.contains("no dot"));
        assert!(warnings[3].message.contains("twice"));
        assert_eq!(warnings[3].line, Some(7));
    }

    #[test]
    fn cat_5_1_kusto_envelopes_and_api_port_in_name() {
        let text = r#"{"value": [{
            "id": "/subscriptions/s/resourceGroups/r/providers/Microsoft.Kusto/Clusters/kc/OutboundNetworkDependenciesEndpoints/AzureMonitor",
            "name": "kc/AzureMonitor", "type": "Microsoft.Kusto/Clusters/OutboundNetworkDependenciesEndpoints",
            "etag": "\"abc\"", "location": "West US",
            "properties": {"category": "Azure Monitor", "provisioningState": "Succeeded",
              "endpoints": [{"domainName": "shoebox2.metrics.nsatc.net:443",
                             "endpointDetails": [{"port": 443}]},
                            {"domainName": "prod.warmpath.msftcloudes.com",
                             "endpointDetails": [{"port": "443", "ipAddress": "13.64.0.1",
                               "latency": 1.5, "isAccessible": true}]}]}},
          {"name": "kc/AzureActiveDirectory", "properties": {"endpoints": []}}],
          "nextLink": "https://next"}"#;
        let (r, w) = DependencyCatalog::from_json("kusto.json", text);
        let c = r.unwrap();
        assert_eq!(c.categories.len(), 2);
        let m = &c.categories[0];
        assert_eq!(m.category, "Azure Monitor");
        assert_eq!(m.endpoints[0].domain_name, "shoebox2.metrics.nsatc.net");
        assert_eq!(m.endpoints[0].details.len(), 1);
        assert_eq!(
            m.endpoints[1].details[0].ip_address,
            Some("13.64.0.1".parse().unwrap())
        );
        assert_eq!(c.categories[1].category, "AzureActiveDirectory");
        assert_eq!(w.iter().filter(|d| d.severity == Severity::Note).count(), 1);
        assert!(w.iter().any(|d| d.field.as_deref() == Some("nextLink")));
    }

    #[test]
    fn cat_5_1_bare_array_and_case_insensitive_fields() {
        let text = r#"[{"Category": "X", "Via": "route", "Endpoints": [
            {"DomainName": "A.Example.com", "Required": "false",
             "EndpointDetails": [{"Port": 53, "Protocol": "UDP"}, {"Port": 53, "Protocol": "udp"}]}]}]"#;
        let (r, w) = DependencyCatalog::from_json("a.json", text);
        assert!(w.is_empty(), "{w:?}");
        let c = r.unwrap();
        let k = &c.categories[0];
        assert_eq!(k.via, Via::Route);
        let e = &k.endpoints[0];
        assert_eq!(e.domain_name, "a.example.com");
        assert!(!e.required);
        assert_eq!(e.details.len(), 1);
        assert_eq!(e.details[0].protocol, DependencyProtocol::Udp);
    }

    #[test]
    fn fmt_12_bad_entries_are_located_warnings() {
        let text = "{\"value\": [\n 5,\n {\"category\": \"c\", \"via\": \"Teleport\", \"endpoints\": [\n  {\"domainName\": 7},\n  {\"domainName\": \"a.b\", \"endpointDetails\": [{\"port\": 70000}, {\"port\": 1, \"protocol\": \"Icmp\"}, {\"port\": 2, \"ipAddress\": \"x\"}]}]}]}";
        let (r, w) = DependencyCatalog::from_json("w.json", text);
        let c = r.unwrap();
        assert_eq!(c.categories.len(), 1);
        assert_eq!(c.categories[0].via, Via::Firewall);
        assert_eq!(c.categories[0].endpoints.len(), 1);
        assert_eq!(c.categories[0].endpoints[0].details.len(), 1);
        assert_eq!(w.len(), 6, "{w:#?}");
        assert!(w
            .iter()
            .all(|d| d.severity == Severity::Warning && d.line.is_some()));
        assert_eq!(w[0].line, Some(2));
    }

    #[test]
    fn fmt_12_non_catalogs_are_errors() {
        for text in [
            "",
            "3",
            "{}",
            "{\"value\": {}}",
            "{\"value\": [], \"Value\": []}",
        ] {
            let (r, _) = DependencyCatalog::from_json("x.json", text);
            assert!(r.is_err(), "{text:?}");
        }
        let (r, _) = DependencyCatalog::load(Path::new("/nonexistent/deps.json"));
        assert!(r.is_err());
    }

    proptest! {
        #[test]
        fn cat_8_parse_target_never_panics(s in ".{0,40}") {
            let _ = parse_target(&s);
        }

        #[test]
        fn cat_5_from_json_never_panics(text in ".{0,200}") {
            let _ = DependencyCatalog::from_json("p", &text);
        }

        #[test]
        fn cat_5_from_json_never_panics_on_shaped_json(
            name in ".{0,30}",
            port in prop_oneof![Just(serde_json::json!(443)), Just(serde_json::json!("80")),
                                Just(serde_json::json!(-1)), Just(serde_json::json!(1e9)),
                                Just(serde_json::json!(null)), Just(serde_json::json!([]))],
            proto in ".{0,6}",
            via in ".{0,16}",
            envelope in any::<bool>(),
        ) {
            let body = serde_json::json!({"category": "c", "via": via, "endpoints": [
                {"domainName": name, "endpointDetails": [{"port": port, "protocol": proto, "ipAddress": name}]}]});
            let item = if envelope { serde_json::json!({"name": "k/c", "properties": body}) } else { body };
            let text = serde_json::json!({"value": [item]}).to_string();
            let _ = DependencyCatalog::from_json("p", &text);
        }
    }
}
