//! The pages: each parses its form, asks the API (or, for the map, reads the running snapshot),
//! and presents the answer.

use super::{given, page, query, refused, Session, Ui};
use crate::auth::Role;
use axum::extract::{Path, Query, State};
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::Extension;
use maud::{html, Markup, PreEscaped};
use serde::Deserialize;
use serde_json::{json, Value};

type Page = Response;

pub(super) async fn map(State(ui): State<Ui>, Extension(s): Extension<Session>) -> Page {
    let running = ui.app.running.load_full();
    let map =
        tokio::task::spawn_blocking(move || super::map::Map::of(&running.snapshot).svg()).await;
    let version = ui.app.running.load().version;
    let body = match map {
        Ok(svg) => html! {
            p.hint { "Version " (version) ". Arrows: each subnet's active user routes (UDR) and peering routes, grouped by next hop; hover for the routes." }
            div style="overflow:auto" { (svg) }
        },
        Err(e) => html! { p.error { (e.to_string()) } },
    };
    page(&s, "/ui/map", "Network map", body).into_response()
}

/// Text of a JSON value: strings bare, `null` empty.
fn text(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        v => v.to_string(),
    }
}

#[derive(Deserialize, Default)]
pub(super) struct TraceForm {
    source: Option<String>,
    destination: Option<String>,
    port: Option<String>,
    protocol: Option<String>,
    name: Option<String>,
}

/// The deciding control as one line: `layer resource rule (priority N)`.
fn decided(d: &Value) -> String {
    let mut out = vec![text(&d["layer"]), text(&d["resource"])];
    let rule = text(&d["rule"]);
    if !rule.is_empty() {
        out.push(rule);
    }
    if let Some(p) = d["priority"].as_u64() {
        out.push(format!("(priority {p})"));
    }
    out.join(" ")
}

pub(super) async fn trace(
    State(ui): State<Ui>,
    Extension(s): Extension<Session>,
    Query(f): Query<TraceForm>,
) -> Page {
    let form = html! {
        form.inline #trace-form method="get" action="/ui/trace" {
            div { label for="source" { "source" } input #source name="source" value=[given(&f.source)] placeholder="10.0.0.10" required; }
            div { label for="destination" { "destination (address or name)" } input #destination name="destination" value=[given(&f.destination)] placeholder="203.0.113.43" required; }
            div { label for="port" { "port" } input #port name="port" size="6" value=(given(&f.port).unwrap_or("443")); }
            div { label for="protocol" { "protocol" }
                select #protocol name="protocol" {
                    @for p in ["Tcp", "Udp", "Icmp"] {
                        option selected[given(&f.protocol).is_some_and(|g| g.eq_ignore_ascii_case(p))] { (p) }
                    }
                }
            }
            div { label for="name" { "name (SNI / Host, optional)" } input #name name="name" value=[given(&f.name)]; }
            button #run-trace type="submit" { "Trace" }
        }
    };
    let (Some(source), Some(destination)) = (given(&f.source), given(&f.destination)) else {
        return page(&s, "/ui/trace", "Trace explainer", form).into_response();
    };
    let port = match given(&f.port).map(str::parse::<u16>) {
        None => 443,
        Some(Ok(p)) => p,
        Some(Err(_)) => {
            let body = html! { (form) p.error #refused data-status="400" { "port: expected one port number 0-65535" } };
            return (
                StatusCode::BAD_REQUEST,
                page(&s, "/ui/trace", "Trace explainer", body),
            )
                .into_response();
        }
    };
    let request = json!({
        "source": source,
        "destination": destination,
        "destinationPort": port,
        "protocol": given(&f.protocol).unwrap_or("Tcp"),
        "host": given(&f.name),
    });
    let asked = format!("POST /api/diagnostics/trace {request}");
    let t = match ui
        .json(&s, Method::POST, "/api/diagnostics/trace", Some(&request))
        .await
    {
        Ok(t) => t,
        Err(r) => return refused(&s, "/ui/trace", "Trace explainer", &asked, r),
    };
    let verdict = text(&t["verdict"]);
    let hops = t["hops"].as_array().cloned().unwrap_or_default();
    let body = html! {
        (form)
        p { span #verdict class=(format!("verdict {verdict}")) { (verdict) } " decided by " strong #decided-by data-rule=(text(&t["decided_by"]["rule"])) { (decided(&t["decided_by"])) } }
        h2 { "Request path" }
        table #hops {
            tr { th { "#" } th { "layer" } th { "direction" } th { "resource" } th { "rule" } th { "priority" } th { "result" } th { "reason" } th { "next hop / detail" } }
            @for (i, h) in hops.iter().enumerate() {
                tr class=(text(&h["result"])) {
                    td { (i + 1) } td { (text(&h["layer"])) } td { (text(&h["direction"])) } td { (text(&h["resource"])) }
                    td.rule { (text(&h["rule"])) } td { (text(&h["priority"])) } td { (text(&h["result"])) } td { (text(&h["reason"])) }
                    td {
                        @if !h["next_hop"].is_null() { (text(&h["next_hop"]["type"])) " " (text(&h["next_hop"]["address"])) }
                        @if !h["detail"].is_null() { " " (text(&h["detail"])) }
                        @if !h["near_miss"].is_null() {
                            div.hint { "nearest allow: " (text(&h["near_miss"]["rule"])) " — differs in " (h["near_miss"]["differs"].as_array().map(|d| d.iter().map(text).collect::<Vec<_>>().join(", ")).unwrap_or_default()) }
                        }
                    }
                }
            }
        }
        @if !t["next_hop"].is_null() { p #next-hop { "Next hop: " (text(&t["next_hop"]["type"])) " " (text(&t["next_hop"]["address"])) } }
        h2 { "Reply path" }
        @if t["reply"].is_null() {
            p #reply { "The reply returns through the connection state of the layers above (outbound flow to outside the network)." }
        } @else {
            table #reply {
                tr { th { "resource" } th { "route" } th { "next hop" } th { "symmetric" } }
                tr class=(if t["reply"]["symmetric"] == json!(false) { "Drop" } else { "Allow" }) {
                    td { (text(&t["reply"]["resource"])) } td { (text(&t["reply"]["route"])) }
                    td { (text(&t["reply"]["next_hop"]["type"])) " " (text(&t["reply"]["next_hop"]["address"])) }
                    td { (text(&t["reply"]["symmetric"])) }
                }
            }
        }
        @for n in t["notes"].as_array().into_iter().flatten() { p.hint { (text(n)) } }
        @for a in t["assumed"].as_array().into_iter().flatten() { p.hint { "assumed: " (text(a)) } }
        p.hint { "snapshot " (text(&t["snapshot"])) "; the API's answer to " code { (asked) } }
    };
    page(&s, "/ui/trace", "Trace explainer", body).into_response()
}

#[derive(Deserialize, Default)]
pub(super) struct LogForm {
    action: Option<String>,
    rule: Option<String>,
    since: Option<String>,
    source: Option<String>,
    name: Option<String>,
}

/// The learning scope of a denial: the subnet of its source, else the source address itself.
fn scope(ui: &Ui, record: &Value) -> Option<String> {
    let ip: std::net::IpAddr = record["source_ip"].as_str()?.parse().ok()?;
    let running = ui.app.running.load();
    let subnet = running.snapshot.locate(ip).subnet;
    Some(match subnet {
        Some(id) => running.snapshot.subnet(id).name.clone(),
        None => ipnet::IpNet::from(ip).to_string(),
    })
}

const LIVE_SCRIPT: &str = r#"
(function () {
  const table = document.getElementById('live');
  const status = document.getElementById('live-status');
  const source = new EventSource('/ui/logs/stream' + table.dataset.query);
  source.onopen = () => { status.textContent = 'following'; };
  source.onerror = () => { status.textContent = 'disconnected (reconnecting)'; };
  source.addEventListener('flow', (e) => {
    const r = JSON.parse(e.data);
    const row = table.insertRow(1);
    row.className = r.action;
    const rule = [r.rule_collection_group, r.rule_collection, r.rule].filter(Boolean).join('/') || r.decided_by || '';
    for (const v of [r.time, r.action, r.source_ip, (r.destination_ip || '') + ':' + r.destination_port, r.name || '', r.layer, rule, r.reason]) {
      row.insertCell().textContent = v == null ? '' : String(v);
    }
  });
})();
"#;

pub(super) async fn logs(
    State(ui): State<Ui>,
    Extension(s): Extension<Session>,
    Query(f): Query<LogForm>,
) -> Page {
    let action = given(&f.action).unwrap_or("Deny");
    let action = (action != "any").then_some(action);
    let filters = [
        ("action", action),
        ("rule", given(&f.rule)),
        ("source", given(&f.source)),
        ("name", given(&f.name)),
    ];
    let stored = format!(
        "/api/flowLogs?{}",
        query(&[
            filters[0],
            filters[1],
            ("since", given(&f.since)),
            filters[2],
            filters[3],
            ("limit", Some("200"))
        ])
    );
    let live_query = match query(&filters) {
        q if q.is_empty() => String::new(),
        q => format!("?{q}"),
    };
    let since = given(&f.since).unwrap_or("7d");
    let form = html! {
        form.inline #log-form method="get" action="/ui/logs" {
            div { label for="action" { "action" }
                select #action name="action" {
                    @for a in ["Deny", "Allow", "any"] { option selected[Some(a) == action.or(Some("any"))] { (a) } }
                }
            }
            div { label for="rule" { "rule" } input #rule name="rule" value=[given(&f.rule)] placeholder="collection/rule or default"; }
            div { label for="since" { "since" } input #since name="since" size="8" value=[given(&f.since)] placeholder="1h"; }
            div { label for="source" { "source" } input #log-source name="source" value=[given(&f.source)]; }
            div { label for="name" { "name" } input #log-name name="name" value=[given(&f.name)] placeholder="*.example.com"; }
            button #filter type="submit" { "Filter" }
        }
    };
    let records = match ui.json(&s, Method::GET, &stored, None).await {
        Ok(v) => v["value"].as_array().cloned().unwrap_or_default(),
        Err(r) => return refused(&s, "/ui/logs", "Deny log", &format!("GET {stored}"), r),
    };
    let body = html! {
        (form)
        h2 { "Live" } p.hint { "Records the gateway appends from now on, with the filters above (not " em { "since" } "): " span #live-status { "connecting" } }
        table #live data-query=(live_query) {
            tr { th { "time" } th { "action" } th { "source" } th { "destination" } th { "name" } th { "layer" } th { "rule" } th { "reason" } }
        }
        h2 { "Stored" } p.hint { (records.len()) " records, newest first (at most 200) — " code { "GET " (stored) } }
        table #stored {
            tr { th { "time" } th { "action" } th { "source" } th { "destination" } th { "name" } th { "layer" } th { "rule" } th { "reason" } th { "" } }
            @for r in &records {
                @let rule = ["rule_collection_group", "rule_collection", "rule"].iter().map(|k| text(&r[*k])).filter(|t| !t.is_empty()).collect::<Vec<_>>().join("/");
                tr class=(format!("record {}", text(&r["action"]))) data-name=(text(&r["name"])) {
                    td { (text(&r["time"])) } td { (text(&r["action"])) } td { (text(&r["source_ip"])) }
                    td { (text(&r["destination_ip"])) ":" (text(&r["destination_port"])) } td { (text(&r["name"])) }
                    td { (text(&r["layer"])) } td.rule { @if rule.is_empty() { (text(&r["decided_by"])) } @else { (rule) } }
                    td { (text(&r["reason"])) }
                    td { @if r["action"] == "Deny" { @if let Some(scope) = scope(&ui, r) {
                        a.propose href=(format!("/ui/learn?{}", query(&[("scope", Some(&scope)), ("since", Some(since))]))) { "propose a rule" }
                    } } }
                }
            }
        }
        script { (PreEscaped(LIVE_SCRIPT)) }
    };
    page(&s, "/ui/logs", "Deny log", body).into_response()
}

/// The API's live stream, for the page's `EventSource` (which cannot send a bearer header).
pub(super) async fn stream(
    State(ui): State<Ui>,
    Extension(s): Extension<Session>,
    Query(f): Query<LogForm>,
) -> Response {
    let q = query(&[
        ("action", given(&f.action)),
        ("rule", given(&f.rule)),
        ("source", given(&f.source)),
        ("name", given(&f.name)),
    ]);
    ui.call(&s, Method::GET, &format!("/api/flowLogs/stream?{q}"), None)
        .await
}

#[derive(Deserialize)]
pub(super) struct LearnForm {
    scope: Option<String>,
    since: Option<String>,
}

/// "Propose a rule": learning mode's proposals for the scope (PAL-5.4), from `GET /api/learn`.
pub(super) async fn learn(
    State(ui): State<Ui>,
    Extension(s): Extension<Session>,
    Query(f): Query<LearnForm>,
) -> Page {
    let uri = format!(
        "/api/learn?{}",
        query(&[
            ("scope", given(&f.scope)),
            ("since", Some(given(&f.since).unwrap_or("7d")))
        ])
    );
    let asked = format!("GET {uri}");
    let v = match ui.json(&s, Method::GET, &uri, None).await {
        Ok(v) => v,
        Err(r) => return refused(&s, "/ui/logs", "Proposed rules", &asked, r),
    };
    let learned = &v["learned"];
    let proposals = learned["proposals"].as_array().cloned().unwrap_or_default();
    let body = html! {
        p { "Learning mode (PAL-5.4) for " strong { (given(&f.scope).unwrap_or("")) } ": "
            (learned["denials"].as_u64().unwrap_or(0)) " denial(s) read, "
            (proposals.len()) " rule(s) proposed. Review them, then apply them with an admin token through the resources API, or in the network's files — nothing is applied from here." }
        table #proposals {
            tr { th { "rule" } th { "why" } th { "count" } th { "first seen" } th { "last seen" } th { "dependency catalog" } }
            @for p in &proposals {
                tr.proposal data-rule=(p["name"].as_str().unwrap_or("")) {
                    td { code { (p["name"].as_str().unwrap_or("")) } }
                    td { (p["why"].as_str().unwrap_or("")) }
                    td { (p["evidence"]["count"].as_u64().unwrap_or(0)) }
                    td { (p["evidence"]["first_seen"].as_str().unwrap_or("")) }
                    td { (p["evidence"]["last_seen"].as_str().unwrap_or("")) }
                    td {
                        @for c in p["evidence"]["catalog"].as_array().into_iter().flatten() {
                            (c["catalog"].as_str().unwrap_or("")) ": " (c["endpoint"].as_str().unwrap_or("")) " "
                        }
                    }
                }
            }
        }
        h2 { "As a native YAML diff" }
        pre #diff { (v["yaml"].as_str().unwrap_or("")) }
        p.hint { "the API's answer to " code #asked { (asked) } }
    };
    page(&s, "/ui/logs", "Proposed rules", body).into_response()
}

/// Dependency lists shipped with Palisade (CAT-5), offered on the coverage board.
const CATALOGS: [(&str, &str); 2] = [
    (
        "app-service-environment",
        include_str!("../../../../catalogs/dependencies/app-service-environment.json"),
    ),
    (
        "azure-data-explorer",
        include_str!("../../../../catalogs/dependencies/azure-data-explorer.json"),
    ),
];

#[derive(Deserialize)]
pub(super) struct DepsForm {
    catalog: Option<String>,
    from: Option<String>,
}

/// The dependency coverage board of a workload: `deps check` (DIAG-8) through the API.
pub(super) async fn deps(
    State(ui): State<Ui>,
    Extension(s): Extension<Session>,
    Query(f): Query<DepsForm>,
) -> Page {
    let chosen = given(&f.catalog).unwrap_or(CATALOGS[0].0);
    let form = html! {
        form.inline #deps-form method="get" action="/ui/deps" {
            div { label for="catalog" { "dependency list" }
                select #catalog name="catalog" { @for (n, _) in CATALOGS { option selected[n == chosen] { (n) } } }
            }
            div { label for="from" { "workload (subnet name or address)" } input #from name="from" value=[given(&f.from)] placeholder="ase-subnet"; }
            button #check type="submit" { "Check" }
        }
    };
    let Some((_, text_)) = CATALOGS.iter().find(|(n, _)| *n == chosen) else {
        let body = html! { (form) p.error { "no dependency list `" (chosen) "`" } };
        return (
            StatusCode::BAD_REQUEST,
            page(&s, "/ui/deps", "Dependency coverage", body),
        )
            .into_response();
    };
    let catalog: Value = serde_json::from_str(text_).unwrap_or_default();
    let request = json!({"catalog": catalog, "from": given(&f.from)});
    let asked = format!(
        "POST /api/analyze/deps (catalog {chosen}, from {})",
        given(&f.from).unwrap_or("the first subnet")
    );
    let report = match ui
        .json(&s, Method::POST, "/api/analyze/deps", Some(&request))
        .await
    {
        Ok(r) => r,
        Err(r) => return refused(&s, "/ui/deps", "Dependency coverage", &asked, r),
    };
    let entries = report["entries"].as_array().cloned().unwrap_or_default();
    let body = html! {
        (form)
        p { "workload " strong { (text(&report["source"])) } ": "
            @for (k, v) in report["summary"].as_object().into_iter().flatten() { (k) " " (text(v)) "; " } }
        table #board {
            tr { th { "category" } th { "endpoint" } th { "port" } th { "protocol" } th { "required" } th { "status" } th { "deciding layer" } th { "decided by" } th { "detail / suggestion" } }
            @for e in &entries {
                tr class=(format!("endpoint {}", text(&e["status"]))) {
                    td { (text(&e["category"])) } td { (text(&e["domainName"])) } td { (text(&e["port"])) } td { (text(&e["protocol"])) }
                    td { (text(&e["required"])) } td { (text(&e["status"])) } td { (text(&e["layer"])) }
                    td { @if !e["decided_by"].is_null() { (decided(&e["decided_by"])) } }
                    td { (text(&e["detail"])) @if !e["suggestion"].is_null() { div.hint { (text(&e["suggestion"])) } } }
                }
            }
        }
        p.hint { "the API's answer to " code { (asked) } }
    };
    page(&s, "/ui/deps", "Dependency coverage", body).into_response()
}

#[derive(Deserialize)]
pub(super) struct DiffForm {
    old: Option<u64>,
    new: Option<u64>,
}

/// The first items of a list, and how many more there are (a diff's prefix lists run long).
fn some(v: &Value) -> String {
    const SHOWN: usize = 6;
    let items: Vec<String> = v.as_array().into_iter().flatten().map(text).collect();
    match items.len() {
        n if n > SHOWN => format!("{} and {} more", items[..SHOWN].join(", "), n - SHOWN),
        _ => items.join(", "),
    }
}

fn controls(v: &Value) -> Markup {
    html! { @for c in v.as_array().into_iter().flatten() { div { (decided(c)) } } }
}

/// The versions (API) and the semantic diff of two of them (the analyzer's, through the API).
pub(super) async fn versions(
    State(ui): State<Ui>,
    Extension(s): Extension<Session>,
    Query(f): Query<DiffForm>,
) -> Page {
    let versions = match ui.json(&s, Method::GET, "/api/versions", None).await {
        Ok(v) => v.as_array().cloned().unwrap_or_default(),
        Err(r) => {
            return refused(
                &s,
                "/ui/versions",
                "Versions & diff",
                "GET /api/versions",
                r,
            )
        }
    };
    let numbers: Vec<u64> = versions
        .iter()
        .filter_map(|v| v["version"].as_u64())
        .collect();
    let newest = numbers.first().copied().unwrap_or(1);
    let (old, new) = (
        f.old.unwrap_or(newest.saturating_sub(1).max(1)),
        f.new.unwrap_or(newest),
    );
    let admin = s.caller.role == Role::Admin;
    let diff = if f.old.is_some() || f.new.is_some() {
        let uri = format!("/api/versions/{old}/diff/{new}");
        match ui.json(&s, Method::GET, &uri, None).await {
            Ok(d) => Some(html! {
                h2 { "Diff " (old) " → " (new) }
                p #diff-summary { (d["changes"].as_array().map(Vec::len).unwrap_or(0)) " kinds of change over " (text(&d["compared"])) " flow sets compared — " code { "GET " (uri) } }
                table #diff {
                    tr { th { "before" } th { "after" } th { "decided before" } th { "decided after" } th { "flows (sources → destinations, services)" } th { "example" } }
                    @for c in d["changes"].as_array().into_iter().flatten() {
                        tr {
                            td class=(text(&c["before"])) { (text(&c["before"])) } td class=(text(&c["after"])) { (text(&c["after"])) }
                            td { (controls(&c["before_decided_by"])) } td { (controls(&c["after_decided_by"])) }
                            td { @for fl in c["flows"].as_array().into_iter().flatten() {
                                div { (some(&fl["source_prefixes"])) " → " (some(&fl["destination_prefixes"])) " " (some(&fl["services"])) }
                            } }
                            td { @for fl in c["flows"].as_array().into_iter().flatten().take(1) {
                                @let e = &fl["example"];
                                (text(&e["protocol"])) " " (text(&e["source"])) ":" (text(&e["source_port"])) " → " (text(&e["destination"])) ":" (text(&e["destination_port"]))
                            } }
                        }
                    }
                }
            }),
            Err(r) => {
                return refused(
                    &s,
                    "/ui/versions",
                    "Versions & diff",
                    &format!("GET {uri}"),
                    r,
                )
            }
        }
    } else {
        None
    };
    let body = html! {
        form.inline #diff-form method="get" action="/ui/versions" {
            div { label for="old" { "old" } select #old name="old" { @for n in &numbers { option selected[*n == old] { (n) } } } }
            div { label for="new" { "new" } select #new name="new" { @for n in &numbers { option selected[*n == new] { (n) } } } }
            button #compare type="submit" { "Compare" }
        }
        @if let Some(d) = diff { (d) }
        h2 { "Versions" }
        table #versions {
            tr { th { "version" } th { "time" } th { "author" } th { "change" } @if admin { th { "" } } }
            @for v in &versions {
                tr.version data-version=(text(&v["version"])) {
                    td { (text(&v["version"])) } td { (text(&v["time"])) } td { (text(&v["author"])) } td { (text(&v["change"])) }
                    @if admin { td {
                        form method="post" action=(format!("/ui/versions/{}/rollback", text(&v["version"]))) {
                            button.rollback type="submit" { "roll back to this version" }
                        }
                    } }
                }
            }
        }
        @if !admin { p.hint { "Rolling back needs an admin token, on the admin listener." } }
    };
    page(&s, "/ui/versions", "Versions & diff", body).into_response()
}

/// Roll back to a version (admin): the API's rollback, refused there for readers and on the
/// data listener.
pub(super) async fn rollback(
    State(ui): State<Ui>,
    Extension(s): Extension<Session>,
    Path(n): Path<u64>,
) -> Response {
    let uri = format!("/api/versions/{n}/rollback");
    match ui.json(&s, Method::POST, &uri, None).await {
        Ok(meta) => Redirect::to(&format!(
            "/ui/versions?old={n}&new={}",
            text(&meta["version"])
        ))
        .into_response(),
        Err(r) => refused(&s, "/ui/versions", "Roll back", &format!("POST {uri}"), r),
    }
}
