//! `palisade --server URL ...`: the same commands asked of a `palisade server` instead of files.
//! Requests are the API's (`crates/server/README.md`), answers go through the presenters the local
//! commands use, so both print alike; refusals are shown with their located messages.

use crate::analysis::{self, AnalyzeCommand, DepsCommand};
use crate::serve::{LogsArgs, LogsOutput};
use crate::{render, Command, Output};
use palisade_flowlog::FlowRecord;
use palisade_policy::Verdict;
use serde::Deserialize;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

/// Where the server is and how to reach it: given before the command
/// (`palisade --server URL trace ...`).
#[derive(clap::Args)]
pub struct RemoteArgs {
    /// Ask a `palisade server` (`http://HOST:PORT`, `https://...`) instead of reading files.
    /// The token comes from `--token-file`, else `PALISADE_TOKEN`, else `token` in
    /// ~/.config/palisade/config.toml.
    #[arg(long, value_name = "URL")]
    pub server: Option<String>,
    /// A file holding the bearer token (the token itself, as printed by the server).
    #[arg(long, requires = "server")]
    pub token_file: Option<PathBuf>,
    /// Trust this CA (PEM) for an HTTPS server, e.g. one with a self-signed certificate.
    #[arg(long, requires = "server")]
    pub ca_cert: Option<PathBuf>,
}

/// Commands that only make sense against a server.
#[derive(clap::Subcommand)]
pub enum ServerCommand {
    /// The server's applied versions, newest first (needs --server).
    Versions {
        #[arg(long, value_enum, default_value = "text")]
        output: Output,
    },
    /// Apply an earlier version's resources again, as a new version (admin; needs --server).
    Rollback { version: u64 },
    /// Create or replace the ARM resources of a file on the server, one version each (admin;
    /// needs --server). The file holds one resource, an array of them, or `{"resources": [...]}`.
    Apply { file: PathBuf },
}

/// `~/.config/palisade/config.toml`.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct ConfigFile {
    token: Option<String>,
    ca_cert: Option<PathBuf>,
}

pub struct Client {
    base: String,
    token: Option<String>,
    agent: ureq::Agent,
}

fn config_path() -> Option<PathBuf> {
    let dir = std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))?;
    Some(dir.join("palisade/config.toml"))
}

fn read_config(path: &Path) -> Result<ConfigFile, String> {
    match std::fs::read_to_string(path) {
        Ok(text) => toml::from_str(&text).map_err(|e| {
            format!(
                "{}: {}; expected `token = \"...\"` and optionally `ca_cert = \"FILE\"`",
                path.display(),
                e.message()
            )
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(ConfigFile::default()),
        Err(e) => Err(format!("{}: {e}", path.display())),
    }
}

impl Client {
    pub fn new(a: &RemoteArgs, url: &str) -> Result<Client, String> {
        let config = match config_path() {
            Some(p) => read_config(&p)?,
            None => ConfigFile::default(),
        };
        let token = match &a.token_file {
            Some(f) => Some(
                std::fs::read_to_string(f)
                    .map_err(|e| format!("{}: cannot read the token: {e}", f.display()))?
                    .trim()
                    .to_string(),
            ),
            None => std::env::var("PALISADE_TOKEN").ok().or(config.token),
        };
        let mut tls = ureq::tls::TlsConfig::builder();
        if let Some(ca) = a.ca_cert.as_ref().or(config.ca_cert.as_ref()) {
            let pem = std::fs::read(ca).map_err(|e| format!("{}: {e}", ca.display()))?;
            let certs: Vec<_> = ureq::tls::parse_pem(&pem)
                .filter_map(|item| match item {
                    Ok(ureq::tls::PemItem::Certificate(c)) => Some(c),
                    _ => None,
                })
                .collect();
            if certs.is_empty() {
                return Err(format!(
                    "{}: no certificate found; expected a PEM file with a CERTIFICATE block",
                    ca.display()
                ));
            }
            tls = tls.root_certs(ureq::tls::RootCerts::Specific(Arc::new(certs)));
        }
        let agent = ureq::Agent::config_builder()
            // Problem details are answers to show, not transport errors.
            .http_status_as_error(false)
            .tls_config(tls.build())
            .timeout_global(Some(Duration::from_secs(60)))
            .build()
            .new_agent();
        Ok(Client {
            base: url.trim_end_matches('/').to_string(),
            token,
            agent,
        })
    }

    fn auth<B>(&self, r: ureq::RequestBuilder<B>) -> ureq::RequestBuilder<B> {
        match &self.token {
            Some(t) => r.header("Authorization", format!("Bearer {t}")),
            None => r,
        }
    }

    fn answer(
        &self,
        what: &str,
        sent: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
    ) -> Result<Answer, String> {
        let mut resp = sent.map_err(|e| format!("{}: {what}: {e}", self.base))?;
        let status = resp.status().as_u16();
        let header = |n: &str| {
            resp.headers()
                .get(n)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let (etag, version) = (header("etag"), header("palisade-version"));
        let text = resp
            .body_mut()
            .read_to_string()
            .map_err(|e| format!("{}: {what}: {e}", self.base))?;
        let body: Value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        if status >= 400 {
            return Err(problem(&self.base, what, status, &body));
        }
        Ok(Answer {
            status,
            body,
            etag,
            version,
        })
    }

    pub fn get(&self, path: &str, query: &[(&str, String)]) -> Result<Answer, String> {
        let mut r = self.auth(self.agent.get(format!("{}{path}", self.base)));
        for (k, v) in query {
            r = r.query(*k, v);
        }
        self.answer(&format!("GET {path}"), r.call())
    }

    fn get_optional(&self, path: &str) -> Result<Option<Answer>, String> {
        let r = self.auth(self.agent.get(format!("{}{path}", self.base)));
        let resp = r
            .call()
            .map_err(|e| format!("{}: GET {path}: {e}", self.base))?;
        if resp.status().as_u16() == 404 {
            return Ok(None);
        }
        self.answer(&format!("GET {path}"), Ok(resp)).map(Some)
    }

    pub fn post(&self, path: &str, body: &Value) -> Result<Answer, String> {
        let r = self.auth(self.agent.post(format!("{}{path}", self.base)));
        self.answer(&format!("POST {path}"), r.send_json(body))
    }

    fn put(&self, path: &str, body: &Value, if_match: Option<&str>) -> Result<Answer, String> {
        let mut r = self.auth(self.agent.put(format!("{}{path}", self.base)));
        if let Some(m) = if_match {
            r = r.header("If-Match", m);
        }
        self.answer(&format!("PUT {path}"), r.send_json(body))
    }
}

pub struct Answer {
    pub status: u16,
    pub body: Value,
    pub etag: Option<String>,
    pub version: Option<String>,
}

/// An RFC 9457 problem as one message: status, detail, then each located error the way
/// `palisade validate` words it (resource, field, what was found and expected).
fn problem(base: &str, what: &str, status: u16, body: &Value) -> String {
    let detail = body["detail"]
        .as_str()
        .or(body.as_str())
        .unwrap_or_default();
    let title = body["title"].as_str().unwrap_or_default();
    let mut out = format!("{base}: {what}: {status} {title}: {detail}");
    for e in body["errors"].as_array().into_iter().flatten() {
        let s = |k: &str| e[k].as_str().unwrap_or_default();
        let resource = [s("resource_type"), s("resource")]
            .into_iter()
            .filter(|x| !x.is_empty())
            .collect::<Vec<_>>()
            .join(" ");
        out.push_str(&format!("\n  {}: {}", s("severity"), s("message")));
        if !resource.is_empty() {
            out.push_str(&format!("\n    resource {resource}"));
        }
        if !s("field").is_empty() {
            out.push_str(&format!("\n    field {}", s("field")));
        }
        if !s("found").is_empty() || !s("expected").is_empty() {
            out.push_str(&format!(
                "\n    found {}, expected {}",
                e["found"].as_str().unwrap_or("nothing"),
                e["expected"].as_str().unwrap_or("-")
            ));
        }
        out.push_str(&format!("\n    at {} {}", s("location"), s("pointer")));
    }
    out
}

/// Run `command` against the server. Commands that read local files (validate, the gateway,
/// host, lab, bench...) are refused: they have no server form.
pub fn run(a: &RemoteArgs, url: &str, command: Command) -> Result<ExitCode, String> {
    let client = Client::new(a, url)?;
    match command {
        Command::Trace {
            net,
            from,
            to,
            protocol,
            port,
            source_port,
            host,
            app_protocol,
            direction,
            at,
            reply,
            output,
        } => {
            no_files(&net)?;
            let body = json!({
                "source": from.to_string(),
                "destination": to,
                "protocol": crate::protocol(protocol).as_str(),
                "destinationPort": port,
                "sourcePort": source_port,
                "host": host,
                "appProtocol": app_protocol.map(|p| match p {
                    crate::AppProtocolArg::Http => "Http",
                    crate::AppProtocolArg::Https => "Https",
                    crate::AppProtocolArg::Mssql => "Mssql",
                }),
                "direction": match direction {
                    crate::DirectionArg::Inbound => Some("Inbound"),
                    crate::DirectionArg::Outbound => Some("Outbound"),
                    crate::DirectionArg::Auto => None,
                },
                "at": at,
                "reply": reply,
            });
            let v = client.post("/api/diagnostics/trace", &body)?.body;
            render::trace_value(&v, output == Output::Json);
            let verdict = match v["verdict"].as_str() {
                Some("Allow") => Verdict::Allow,
                Some("Deny") => Verdict::Deny,
                Some("Drop") => Verdict::Drop,
                _ => Verdict::Unknown,
            };
            Ok(crate::verdict_code(verdict))
        }
        Command::NextHop {
            net,
            from,
            to,
            output,
        } => {
            no_files(&net)?;
            let body = json!({"sourceIPAddress": from.to_string(), "destinationIPAddress": to.to_string()});
            let v = client.post("/api/diagnostics/nextHop", &body)?.body;
            render::next_hop_value(&v, to, output == Output::Json);
            Ok(ExitCode::SUCCESS)
        }
        Command::Logs(l) => logs(&client, l),
        Command::Deps(DepsCommand::Check {
            net,
            catalog,
            from,
            output,
        }) => {
            no_files(&net)?;
            let body = json!({"catalog": json_file(&catalog)?, "from": from});
            let v = client.post("/api/analyze/deps", &body)?.body;
            analysis::show(&v, output, &analysis::DEPS)
        }
        Command::Analyze(AnalyzeCommand::Asymmetric {
            net,
            catalog,
            output,
        }) => {
            no_files(&net)?;
            let body = match catalog {
                Some(c) => json!({"catalog": json_file(&c)?}),
                None => json!({}),
            };
            let v = client.post("/api/analyze/asymmetric", &body)?.body;
            analysis::show(&v, output, &analysis::ASYMMETRIC)
        }
        Command::Analyze(AnalyzeCommand::Reachability { summary: true, .. }) => {
            Err("analyze reachability --summary has no --server form yet; ask for the entries (without --summary)".into())
        }
        Command::Analyze(AnalyzeCommand::Reachability {
            net,
            from,
            to,
            all,
            summary: false,
            output,
        }) => {
            no_files(&net)?;
            let body = json!({"from": from, "to": to, "all": all});
            let v = client.post("/api/analyze/reachability", &body)?.body;
            analysis::show(&v, output, &analysis::REACHABILITY)
        }
        Command::Lint { net, output } => {
            no_files(&net)?;
            let v = client.get("/api/analyze/lint", &[])?.body;
            analysis::show(&v, output, &analysis::LINT)
        }
        Command::Diff(d) => {
            // On a server the two sides are stored versions, not files.
            let version = |p: &Path| {
                p.to_str()
                    .and_then(|t| t.parse::<u64>().ok())
                    .ok_or_else(|| {
                        format!(
                            "diff `{}`: with --server, OLD and NEW are version numbers (see `palisade --server URL versions`)",
                            p.display()
                        )
                    })
            };
            let (old, new) = (version(&d.old)?, version(&d.new)?);
            let v = client
                .get(&format!("/api/versions/{old}/diff/{new}"), &[])?
                .body;
            analysis::show(&v, d.output, &analysis::DIFF)
        }
        Command::EffectiveRules {
            net,
            nic,
            subnet,
            output,
        } => {
            no_files(&net)?;
            json_only("effective-rules", output)?;
            let v = client
                .get("/api/diagnostics/effectiveSecurityRules", &target(nic, subnet))?
                .body;
            print_json(&v)
        }
        Command::EffectiveRoutes {
            net,
            subnet,
            nic,
            output,
        } => {
            no_files(&net)?;
            json_only("effective-routes", output)?;
            let v = client
                .get("/api/diagnostics/effectiveRoutes", &target(nic, subnet))?
                .body;
            print_json(&v)
        }
        Command::Remote(ServerCommand::Versions { output }) => {
            let v = client.get("/api/versions", &[])?.body;
            if output == Output::Json {
                println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
            } else {
                for m in v.as_array().into_iter().flatten() {
                    println!(
                        "{:>5}  {}  {:<12} {}",
                        m["version"],
                        m["time"].as_str().unwrap_or_default(),
                        m["author"].as_str().unwrap_or_default(),
                        m["change"].as_str().unwrap_or_default()
                    );
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Remote(ServerCommand::Rollback { version }) => {
            let v = client
                .post(&format!("/api/versions/{version}/rollback"), &json!({}))?
                .body;
            println!(
                "rolled back to version {version}: now version {}",
                v["version"]
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Remote(ServerCommand::Apply { file }) => apply(&client, &file),
        _ => Err(
            "this command has no --server form; it runs on local files only \
                  (with --server: trace, next-hop, effective-rules, effective-routes, deps check, \
                  analyze asymmetric|reachability, lint, diff VERSION VERSION, logs, versions, \
                  rollback, apply)"
                .into(),
        ),
    }
}

/// The server answers from its own network: files given too would be silently ignored.
fn no_files(net: &crate::NetworkArgs) -> Result<(), String> {
    if net.source.network.is_empty() {
        Ok(())
    } else {
        Err("--server answers from the server's network; leave out --network".into())
    }
}

/// The text of effective rules and routes is drawn from the compiled snapshot, which a client
/// does not have; their JSON is the API's answer itself.
fn json_only(command: &str, output: Output) -> Result<(), String> {
    match output {
        Output::Json => Ok(()),
        Output::Text => Err(format!(
            "{command} with --server prints --output json only (the text form reads the local snapshot)"
        )),
    }
}

fn print_json(v: &Value) -> Result<ExitCode, String> {
    println!(
        "{}",
        serde_json::to_string_pretty(v).map_err(|e| e.to_string())?
    );
    Ok(ExitCode::SUCCESS)
}

/// The NIC or subnet a question is about, as the API's query.
fn target(nic: Option<String>, subnet: Option<String>) -> Vec<(&'static str, String)> {
    [("networkInterface", nic), ("subnet", subnet)]
        .into_iter()
        .filter_map(|(k, v)| Some((k, v?)))
        .collect()
}

/// A JSON file sent with a question (a dependency list), named when it cannot be read.
fn json_file(path: &Path) -> Result<Value, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    serde_json::from_str(text.trim_start_matches('\u{feff}'))
        .map_err(|e| format!("{}: not JSON: {e}", path.display()))
}

fn logs(client: &Client, l: LogsArgs) -> Result<ExitCode, String> {
    let query: Vec<(&str, String)> = [
        ("action", l.action),
        ("since", l.since),
        ("rule", l.rule),
        ("source", l.source.map(|s| s.to_string())),
        ("name", l.name),
        ("audit", l.audit.then(|| "true".into())),
        ("shadowDiff", l.shadow_diff.then(|| "true".into())),
    ]
    .into_iter()
    .filter_map(|(k, v)| Some((k, v?)))
    .collect();
    // The server pages by at most 1000: follow `nextOffset` until `--limit` records.
    let mut records: Vec<FlowRecord> = vec![];
    let mut offset = 0usize;
    while records.len() < l.limit {
        let page = (l.limit - records.len()).min(1000);
        let mut q = query.clone();
        q.push(("limit", page.to_string()));
        q.push(("offset", offset.to_string()));
        let v = client.get("/api/flowLogs", &q)?.body;
        let got: Vec<FlowRecord> = serde_json::from_value(v["value"].clone())
            .map_err(|e| format!("{}: GET /api/flowLogs: unexpected answer: {e}", client.base))?;
        records.extend(got);
        match v["nextOffset"].as_u64() {
            Some(n) => offset = n as usize,
            None => break,
        }
    }
    match l.output {
        LogsOutput::Json => println!(
            "{}",
            serde_json::to_string_pretty(&records).map_err(|e| e.to_string())?
        ),
        LogsOutput::Text => {
            if records.is_empty() {
                eprintln!("no matching flow records on {}", client.base);
            }
            for r in &records {
                println!("{}", crate::serve::text_line(r));
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The resources of an `apply` file.
fn resources_of(file: &Path) -> Result<Vec<Value>, String> {
    let text = std::fs::read_to_string(file).map_err(|e| format!("{}: {e}", file.display()))?;
    let v: Value =
        serde_json::from_str(&text).map_err(|e| format!("{}: not JSON: {e}", file.display()))?;
    Ok(match v {
        Value::Array(a) => a,
        Value::Object(ref o) if o.contains_key("resources") => match &v["resources"] {
            Value::Array(a) => a.clone(),
            _ => {
                return Err(format!(
                    "{}: /resources: expected an array of ARM resources",
                    file.display()
                ))
            }
        },
        one => vec![one],
    })
}

/// PUT each resource; an existing one is replaced under the ETag just read, so a change made
/// meanwhile by someone else is refused (412) rather than overwritten.
fn apply(client: &Client, file: &Path) -> Result<ExitCode, String> {
    let resources = resources_of(file)?;
    if resources.is_empty() {
        return Err(format!("{}: no resources to apply", file.display()));
    }
    for (i, r) in resources.iter().enumerate() {
        let at = |field: &str, expected: &str| {
            format!(
                "{}: /resources/{i}: {field}: expected {expected}",
                file.display()
            )
        };
        let arm_type = r["type"].as_str().ok_or_else(|| {
            at(
                "type",
                "an ARM type such as Microsoft.Network/networkSecurityGroups",
            )
        })?;
        let name = r["name"]
            .as_str()
            .filter(|n| !n.is_empty() && !n.starts_with('['))
            .ok_or_else(|| at("name", "a literal resource name"))?;
        let kind = palisade_server::policy::KINDS
            .iter()
            .find(|k| k.arm_type.eq_ignore_ascii_case(arm_type))
            .ok_or_else(|| {
                let known: Vec<&str> = palisade_server::policy::KINDS
                    .iter()
                    .map(|k| k.arm_type)
                    .collect();
                at("type", &format!("one of {}", known.join(", ")))
            })?;
        let path = format!("/api/resources/{}/{}", kind.segment, encode(name));
        let etag = client.get_optional(&path)?.and_then(|a| a.etag);
        let done = client.put(&path, r, etag.as_deref())?;
        println!(
            "{} {}/{name}: version {}",
            if done.status == 201 {
                "created"
            } else {
                "replaced"
            },
            kind.segment,
            done.version.as_deref().unwrap_or("?")
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// A resource name as one path segment.
fn encode(name: &str) -> String {
    name.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn problem_shows_located_messages() {
        let body = json!({"type": "/problems/invalid-network", "title": "Unprocessable Entity",
            "status": 422, "detail": "the change does not compile",
            "errors": [{"severity": "Error", "message": "priority 5 is out of range", "location": "body",
                        "pointer": "/properties/priority", "resource_type": "securityRules",
                        "resource": "web-nsg/r1", "field": "priority", "found": "5", "expected": "100-4096"}]});
        let m = problem("http://x", "PUT /api/x", 422, &body);
        assert!(m.contains("422 Unprocessable Entity: the change does not compile"));
        assert!(m.contains("priority 5 is out of range"));
        assert!(m.contains("resource securityRules web-nsg/r1"));
        assert!(m.contains("found 5, expected 100-4096"));
        assert!(m.contains("at body /properties/priority"));
    }

    proptest::proptest! {
        /// Whatever a server (or something posing as one) answers, the refusal is a message
        /// naming the request and status, never a panic.
        #[test]
        fn any_problem_body_is_shown(text in ".{0,200}", status in 400u16..600) {
            let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
            let m = problem("http://x", "GET /api/x", status, &body);
            let head = format!("http://x: GET /api/x: {} ", status);
            proptest::prop_assert!(m.starts_with(&head), "{}", m);
        }

        /// An `apply` file of any bytes gives resources or an error naming the file.
        #[test]
        fn any_apply_file_is_read_or_named(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..200)) {
            let dir = tempfile::tempdir().unwrap();
            let f = dir.path().join("r.json");
            std::fs::write(&f, &bytes).unwrap();
            if let Err(e) = resources_of(&f) {
                proptest::prop_assert!(e.starts_with(&f.display().to_string()), "{}", e);
            }
        }
    }

    #[test]
    fn names_are_one_path_segment() {
        assert_eq!(encode("web-nsg"), "web-nsg");
        assert_eq!(encode("a/b c"), "a%2Fb%20c");
    }

    #[test]
    fn config_file_refuses_unknown_keys_with_its_path() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("config.toml");
        std::fs::write(&p, "tokn = \"x\"\n").unwrap();
        let e = read_config(&p).err().unwrap();
        assert!(e.contains("config.toml") && e.contains("tokn"), "{e}");
        std::fs::write(&p, "token = \"abc\"\n").unwrap();
        assert_eq!(read_config(&p).unwrap().token.as_deref(), Some("abc"));
    }
}
