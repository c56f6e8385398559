//! HTTP routes: parse the request, call `policy`/`present`, answer. The OpenAPI document is
//! generated from the annotations here (`/openapi.json`, Swagger UI at `/docs`).

use crate::auth::{Caller, Role};
use crate::policy::{self, ChangeError, Path as ResourcePath};
use crate::present::{self, NotAnswerable};
use crate::problem::{json_rejection, Problem};
use crate::questions;
use crate::store::{AuditEntry, StoreError, Version, VersionMeta};
use crate::{now, AppState};
use axum::extract::rejection::JsonRejection;
use axum::extract::{DefaultBodyLimit, Path, Query, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json, Router};
use palisade_model::{Direction, Protocol};
use palisade_policy::endpoints;
use palisade_policy::{AppProtocol, Established, Flow, TraceOptions};
use serde::Deserialize;
use serde_json::{json, Value};
use std::net::IpAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::timeout::TimeoutLayer;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use utoipa_swagger_ui::SwaggerUi;

pub(crate) type App = State<Arc<AppState>>;
pub(crate) type Answer = Result<Response, Problem>;

#[derive(OpenApi)]
#[openapi(
    info(title = "Palisade", description = "NSGs, routes and an egress firewall as a service: Network Watcher's diagnostics and ARM resources."),
    modifiers(&BearerAuth),
    security(("bearer" = []))
)]
struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, api: &mut utoipa::openapi::OpenApi) {
        let c = api.components.get_or_insert_with(Default::default);
        c.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// The API's routes with its OpenAPI document.
pub fn openapi_router() -> OpenApiRouter<Arc<AppState>> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(ip_flow_verify))
        .routes(routes!(next_hop))
        .routes(routes!(trace))
        .routes(routes!(effective_security_rules))
        .routes(routes!(effective_routes))
        .routes(routes!(network))
        .routes(routes!(list_resources))
        .routes(routes!(
            get_resource,
            put_resource,
            patch_resource,
            delete_resource
        ))
        .routes(routes!(get_child, put_child, patch_child, delete_child))
        .routes(routes!(versions))
        .routes(routes!(version))
        .routes(routes!(rollback))
        .routes(routes!(audit))
        .routes(routes!(flow_logs))
        .routes(routes!(flow_stream))
        .routes(routes!(questions::security_group_view))
        .routes(routes!(questions::deps_check))
        .routes(routes!(questions::asymmetric))
        .routes(routes!(questions::reachability))
        .routes(routes!(questions::lint))
        .routes(routes!(questions::diff))
        .routes(routes!(crate::learn::learn))
}

pub fn openapi() -> utoipa::openapi::OpenApi {
    openapi_router().split_for_parts().1
}

/// Which listener a router serves: the data listener answers reads and diagnostics; the admin
/// listener (its own address, loopback by default) answers those and the admin operations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Data,
    Admin,
}

pub fn router(state: Arc<AppState>, body_limit: usize, timeout: Duration, side: Side) -> Router {
    let (api, doc) = openapi_router().split_for_parts();
    let api = api.route_layer(middleware::from_fn_with_state(state.clone(), authenticate));
    let app = Router::new()
        .merge(api)
        .route("/healthz", axum::routing::get(healthz))
        .with_state(state.clone())
        .merge(SwaggerUi::new("/docs").url("/openapi.json", doc));
    let app = match side {
        Side::Admin => app,
        Side::Data => app.layer(middleware::from_fn(data_side)),
    };
    let app = app.clone().merge(crate::ui::router(state, app));
    app.layer(DefaultBodyLimit::max(body_limit))
        .layer(RequestBodyLimitLayer::new(body_limit))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            timeout,
        ))
}

/// The data listener refuses admin operations before authentication: they are not served here.
async fn data_side(req: Request, next: Next) -> Response {
    if crate::auth::is_admin_operation(req.method(), req.uri().path()) {
        return Problem::new(
            StatusCode::NOT_FOUND,
            "admin-listener",
            "changes and the audit log are served on the admin listener (--admin-listen) only",
        )
        .into_response();
    }
    next.run(req).await
}

async fn healthz(State(app): App) -> Json<Value> {
    let r = app.running.load();
    Json(json!({"status": "ok", "version": r.version, "snapshot": r.snapshot.id}))
}

const CHALLENGE: &str = "Bearer realm=\"palisade\"";
const INVALID: &str = "Bearer realm=\"palisade\", error=\"invalid_token\"";

async fn authenticate(State(app): App, mut req: Request, next: Next) -> Response {
    let presented = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.split_once(' ')
                .filter(|(s, _)| s.eq_ignore_ascii_case("bearer"))
        })
        .map(|(_, t)| t.trim().to_string());
    let Some(token) = presented else {
        return Problem::unauthorized(
            "a bearer token is required (Authorization: Bearer TOKEN)",
            CHALLENGE,
        )
        .into_response();
    };
    match app.tokens.verify(&token) {
        Some(caller) => {
            req.extensions_mut().insert(caller);
            next.run(req).await
        }
        None => Problem::unauthorized("the bearer token is not valid", INVALID).into_response(),
    }
}

pub(crate) fn not_answerable(e: NotAnswerable) -> Problem {
    Problem::unprocessable(e.0)
}

pub(crate) fn body<T>(b: Result<Json<T>, JsonRejection>) -> Result<T, Problem> {
    b.map(|Json(t)| t).map_err(json_rejection)
}

fn address(field: &str, s: &str) -> Result<IpAddr, Problem> {
    palisade_model::address::parse_ip(s).ok_or_else(|| {
        Problem::bad_request(format!(
            "{field}: `{s}` is not an IP address; expected an IPv4 or IPv6 address"
        ))
    })
}

fn protocol(field: &str, s: &str) -> Result<Protocol, Problem> {
    Protocol::parse(s)
        .filter(|p| *p != Protocol::Any)
        .ok_or_else(|| {
            Problem::bad_request(format!(
                "{field}: `{s}`; expected TCP, UDP, ICMP, ESP or AH"
            ))
        })
}

fn direction(field: &str, s: &str) -> Result<Direction, Problem> {
    match s.to_ascii_lowercase().as_str() {
        "inbound" => Ok(Direction::Inbound),
        "outbound" => Ok(Direction::Outbound),
        _ => Err(Problem::bad_request(format!(
            "{field}: `{s}`; expected Inbound or Outbound"
        ))),
    }
}

/// A port as Azure sends it: a number or a string holding one.
#[derive(Deserialize, ToSchema)]
#[serde(untagged)]
pub enum Port {
    Number(u32),
    Text(String),
}

impl Port {
    fn is_any(&self) -> bool {
        matches!(self, Port::Text(s) if s.trim() == "*")
    }

    fn value(&self, field: &str) -> Result<u16, Problem> {
        let n = match self {
            Port::Number(n) => Some(*n),
            Port::Text(s) => s.trim().parse().ok(),
        };
        n.and_then(|n| u16::try_from(n).ok()).ok_or_else(|| {
            Problem::bad_request(format!("{field}: expected one port number 0-65535"))
        })
    }
}

/// A NIC named by a resource id (`.../networkInterfaces/NAME`) or by name; a VM's id names no NIC.
pub(crate) fn nic_name(id: &str) -> Option<&str> {
    let parts: Vec<&str> = id.trim_matches('/').split('/').collect();
    match parts
        .iter()
        .position(|p| p.eq_ignore_ascii_case("networkInterfaces"))
    {
        Some(i) => parts.get(i + 1).copied(),
        None if parts.len() == 1 && !parts[0].is_empty() => Some(parts[0]),
        None => None,
    }
}

/// Azure's `VerificationIPFlowParameters` (DIAG-2).
#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct IpFlowVerifyRequest {
    /// `Inbound` or `Outbound`, seen from the workload (local end).
    direction: String,
    /// `TCP`, `UDP` (Palisade also takes `ICMP`, `ESP`, `AH`).
    protocol: String,
    #[serde(rename = "localIPAddress")]
    local_ip_address: String,
    local_port: Port,
    #[serde(rename = "remoteIPAddress")]
    remote_ip_address: String,
    /// A port, or `*` for every remote port (Allow only when all are allowed).
    remote_port: Port,
    /// A VM or NIC id, or a NIC name; a VM id leaves the NIC to `localIPAddress`.
    #[serde(default)]
    target_resource_id: Option<String>,
    #[serde(default)]
    target_nic_resource_id: Option<String>,
}

/// Verify whether a flow is allowed to or from a workload by its NSGs (Network Watcher's IP flow verify, DIAG-2).
#[utoipa::path(post, path = "/api/diagnostics/ipFlowVerify", tag = "diagnostics",
    request_body = IpFlowVerifyRequest,
    responses((status = 200, description = "`{access, ruleName, layers[]}`", body = Object),
              (status = 400, body = Problem), (status = 422, body = Problem)))]
async fn ip_flow_verify(
    State(app): App,
    b: Result<Json<IpFlowVerifyRequest>, JsonRejection>,
) -> Answer {
    let r = body(b)?;
    let dir = direction("direction", &r.direction)?;
    let local = address("localIPAddress", &r.local_ip_address)?;
    let remote = address("remoteIPAddress", &r.remote_ip_address)?;
    endpoints::same_family(local, remote).map_err(|e| Problem::bad_request(e.to_string()))?;
    // `*` (DIAG-2): every remote port; answered with a placeholder port replaced per range.
    let any_remote = r.remote_port.is_any();
    let (lp, rp) = (
        r.local_port.value("localPort")?,
        if any_remote {
            0
        } else {
            r.remote_port.value("remotePort")?
        },
    );
    let ((source, source_port), (destination, destination_port)) = match dir {
        Direction::Outbound => ((local, lp), (remote, rp)),
        Direction::Inbound => ((remote, rp), (local, lp)),
    };
    let flow = Flow {
        source,
        source_port,
        destination,
        destination_port,
        protocol: protocol("protocol", &r.protocol)?,
        host: None,
        app_protocol: None,
    };
    let nic = r
        .target_nic_resource_id
        .as_deref()
        .and_then(nic_name)
        .or(r.target_resource_id.as_deref().and_then(nic_name));
    let running = app.running.load();
    let verify = if any_remote {
        present::ip_flow_verify_any_remote_port
    } else {
        present::ip_flow_verify
    };
    let v = verify(&running.snapshot, &flow, dir, local, nic).map_err(not_answerable)?;
    Ok(Json(v).into_response())
}

/// Azure's `NextHopParameters`. `targetResourceId` is accepted and not needed: the source
/// address decides the subnet whose routes apply.
#[derive(Deserialize, ToSchema)]
pub struct NextHopRequest {
    #[serde(rename = "sourceIPAddress")]
    source_ip_address: String,
    #[serde(rename = "destinationIPAddress")]
    destination_ip_address: String,
}

/// The next hop of a packet from a source in the network (Network Watcher's next hop, DIAG-3).
#[utoipa::path(post, path = "/api/diagnostics/nextHop", tag = "diagnostics",
    request_body = NextHopRequest,
    responses((status = 200, description = "`{nextHopType, nextHopIpAddress, routeTableId, next_hop, route}`", body = Object),
              (status = 400, body = Problem), (status = 422, body = Problem)))]
async fn next_hop(State(app): App, b: Result<Json<NextHopRequest>, JsonRejection>) -> Answer {
    let r = body(b)?;
    let from = address("sourceIPAddress", &r.source_ip_address)?;
    let to = address("destinationIPAddress", &r.destination_ip_address)?;
    endpoints::same_family(from, to).map_err(|e| Problem::bad_request(e.to_string()))?;
    let running = app.running.load();
    let v = present::next_hop(&running.snapshot, from, to).map_err(not_answerable)?;
    Ok(Json(v).into_response())
}

#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TraceRequest {
    /// Source address: a workload in a subnet, or an outside address for inbound flows.
    source: String,
    /// Destination address, or a name (then also the SNI/Host unless `host` is given).
    destination: String,
    /// Default `Tcp`.
    #[serde(default)]
    protocol: Option<String>,
    /// Default 443.
    #[serde(default)]
    destination_port: Option<u16>,
    /// Default 50000.
    #[serde(default)]
    source_port: Option<u16>,
    /// TLS SNI or HTTP Host header.
    #[serde(default)]
    host: Option<String>,
    /// `Http`, `Https` or `Mssql` (default: by port).
    #[serde(default)]
    app_protocol: Option<String>,
    /// With `at` on an NSG: which rules to evaluate.
    #[serde(default)]
    direction: Option<String>,
    /// Evaluate one resource directly: an NSG, route table or firewall name.
    #[serde(default)]
    at: Option<String>,
    /// The packet is a reply within a connection that arrived directly.
    #[serde(default)]
    reply: bool,
}

/// Trace a flow through every layer (NSGs, routes, firewall) and its return path (DIAG-7); the CLI's `trace --output json`.
#[utoipa::path(post, path = "/api/diagnostics/trace", tag = "diagnostics",
    request_body = TraceRequest,
    responses((status = 200, description = "verdict, decided_by, hops, next_hop, reply (docs/cli-json.md)", body = Object),
              (status = 400, body = Problem)))]
async fn trace(State(app): App, b: Result<Json<TraceRequest>, JsonRejection>) -> Answer {
    let r = body(b)?;
    let from = address("source", &r.source)?;
    let running = app.running.load();
    let to = endpoints::destination(from, &r.destination, r.host.clone(), &running.bindings)
        .map_err(|e| Problem::bad_request(format!("destination: {e}")))?;
    let app_protocol = match r
        .app_protocol
        .as_deref()
        .map(str::to_ascii_lowercase)
        .as_deref()
    {
        None => None,
        Some("http") => Some(AppProtocol::Http),
        Some("https") => Some(AppProtocol::Https),
        Some("mssql") => Some(AppProtocol::Mssql),
        Some(other) => {
            return Err(Problem::bad_request(format!(
                "appProtocol: `{other}`; expected Http, Https or Mssql"
            )))
        }
    };
    let flow = Flow {
        source: from,
        source_port: r.source_port.unwrap_or(50000),
        destination: to.address,
        destination_port: r.destination_port.unwrap_or(443),
        protocol: protocol("protocol", r.protocol.as_deref().unwrap_or("Tcp"))?,
        host: to.host,
        app_protocol,
    };
    let opts = TraceOptions {
        established: r.reply.then_some(Established::Direct),
        at: r.at,
        direction: r
            .direction
            .as_deref()
            .map(|d| direction("direction", d))
            .transpose()?,
    };
    let t = running.snapshot.trace(&flow, &opts);
    Ok(Json(present::trace(&flow, &t)).into_response())
}

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(rename_all = "camelCase")]
pub struct Target {
    /// A network interface's name.
    network_interface: Option<String>,
    /// A subnet's name.
    subnet: Option<String>,
}

/// The security rules in force for a NIC or subnet, defaults and tag expansions included (DIAG-4).
#[utoipa::path(get, path = "/api/diagnostics/effectiveSecurityRules", tag = "diagnostics", params(Target),
    responses((status = 200, description = "`{value: [{networkSecurityGroup, association, effectiveSecurityRules}]}`", body = Object),
              (status = 422, body = Problem)))]
async fn effective_security_rules(State(app): App, Query(t): Query<Target>) -> Answer {
    let running = app.running.load();
    let v = present::effective_rules(
        &running.snapshot,
        t.network_interface.as_deref(),
        t.subnet.as_deref(),
    )
    .map_err(not_answerable)?;
    Ok(Json(v).into_response())
}

/// The routes in force for a subnet or NIC: system, service-endpoint and user routes (DIAG-5).
#[utoipa::path(get, path = "/api/diagnostics/effectiveRoutes", tag = "diagnostics", params(Target),
    responses((status = 200, description = "`{value: [route]}`", body = Object), (status = 422, body = Problem)))]
async fn effective_routes(State(app): App, Query(t): Query<Target>) -> Answer {
    let running = app.running.load();
    let v = present::effective_routes(
        &running.snapshot,
        t.network_interface.as_deref(),
        t.subnet.as_deref(),
    )
    .map_err(not_answerable)?;
    Ok(Json(v).into_response())
}

/// The running network: its version and every resource.
#[utoipa::path(get, path = "/api/network", tag = "resources",
    responses((status = 200, description = "`{version, snapshot, resources}`", body = Object)))]
async fn network(State(app): App) -> Json<Value> {
    let r = app.running.load();
    Json(json!({"version": r.version, "snapshot": r.snapshot.id, "resources": r.resources}))
}

fn kind(segment: &str) -> Result<&'static policy::Kind, Problem> {
    policy::kind(segment).ok_or_else(|| {
        let known: Vec<&str> = policy::KINDS.iter().map(|k| k.segment).collect();
        Problem::not_found(format!(
            "no resource kind `{segment}`; expected one of {}",
            known.join(", ")
        ))
    })
}

/// The path of a top-level resource (`/api/resources/{kind}/{name}`).
fn top_path(kind_s: &str, name: String) -> Result<ResourcePath, Problem> {
    Ok(ResourcePath {
        kind: kind(kind_s)?,
        name,
        child: None,
    })
}

/// The path of a child resource (`/api/resources/{kind}/{name}/{child}/{childName}`).
fn child_path(
    kind_s: &str,
    name: String,
    child: &str,
    child_name: String,
) -> Result<ResourcePath, Problem> {
    let kind = kind(kind_s)?;
    match &kind.child {
        Some(c) if c.segment.eq_ignore_ascii_case(child) => Ok(ResourcePath {
            kind,
            name,
            child: Some(child_name),
        }),
        _ => Err(Problem::not_found(format!(
            "{} have no child resources `{child}`",
            kind.segment
        ))),
    }
}

/// The resources of one kind, in ARM JSON shape.
#[utoipa::path(get, path = "/api/resources/{kind}", tag = "resources",
    params(("kind" = String, Path, description = "networkSecurityGroups, routeTables, virtualNetworks, firewallPolicies, azureFirewalls, ipGroups, networkInterfaces, publicIPAddresses, applicationSecurityGroups")),
    responses((status = 200, description = "`{value: [resource]}`", body = Object), (status = 404, body = Problem)))]
async fn list_resources(State(app): App, Path(k): Path<String>) -> Answer {
    let kind = kind(&k)?;
    let r = app.running.load();
    let value: Vec<&Value> = r
        .resources
        .iter()
        .filter(|v| policy::of_type(v, kind.arm_type))
        .collect();
    Ok(Json(json!({ "value": value })).into_response())
}

fn show(app: &AppState, path: &ResourcePath) -> Answer {
    let r = app.running.load();
    let slot = policy::locate(&r.resources, path).map_err(change_error)?;
    let v = policy::get(&r.resources, slot, path);
    Ok(with_etag(Json(v).into_response(), v, r.version))
}

fn with_etag(mut resp: Response, v: &Value, version: u64) -> Response {
    if let Ok(e) = HeaderValue::from_str(&policy::etag(v)) {
        resp.headers_mut().insert(header::ETAG, e);
    }
    resp.headers_mut()
        .insert("palisade-version", HeaderValue::from(version));
    resp
}

/// One resource in ARM JSON shape, with its strong ETag.
#[utoipa::path(get, path = "/api/resources/{kind}/{name}", tag = "resources",
    params(("kind" = String, Path), ("name" = String, Path)),
    responses((status = 200, body = Object), (status = 404, body = Problem)))]
async fn get_resource(State(app): App, Path((k, name)): Path<(String, String)>) -> Answer {
    show(&app, &top_path(&k, name)?)
}

/// Create or replace a resource. Replacing needs `If-Match` with its ETag (428 without, 412 on a mismatch); the whole network is compiled and swapped in only when valid, else 422 with located errors and nothing changed.
#[utoipa::path(put, path = "/api/resources/{kind}/{name}", tag = "resources",
    params(("kind" = String, Path), ("name" = String, Path), ("If-Match" = Option<String>, Header)),
    request_body = Object,
    responses((status = 200, body = Object), (status = 201, body = Object), (status = 400, body = Problem), (status = 403, body = Problem),
              (status = 412, body = Problem), (status = 422, body = Problem), (status = 428, body = Problem)))]
async fn put_resource(
    State(app): App,
    Extension(c): Extension<Caller>,
    Path((k, name)): Path<(String, String)>,
    headers: HeaderMap,
    b: Result<Json<Value>, JsonRejection>,
) -> Answer {
    let path = top_path(&k, name)?;
    change(&app, &c, &headers, path, Op::Put(body(b)?)).await
}

/// Change a resource with a JSON merge patch (RFC 7396); `If-Match` required.
#[utoipa::path(patch, path = "/api/resources/{kind}/{name}", tag = "resources",
    params(("kind" = String, Path), ("name" = String, Path), ("If-Match" = String, Header)),
    request_body = Object,
    responses((status = 200, body = Object), (status = 404, body = Problem), (status = 412, body = Problem), (status = 422, body = Problem), (status = 428, body = Problem)))]
async fn patch_resource(
    State(app): App,
    Extension(c): Extension<Caller>,
    Path((k, name)): Path<(String, String)>,
    headers: HeaderMap,
    b: Result<Json<Value>, JsonRejection>,
) -> Answer {
    let path = top_path(&k, name)?;
    change(&app, &c, &headers, path, Op::Patch(body(b)?)).await
}

/// Delete a resource (and a firewall policy's rule collection groups); `If-Match` required.
#[utoipa::path(delete, path = "/api/resources/{kind}/{name}", tag = "resources",
    params(("kind" = String, Path), ("name" = String, Path), ("If-Match" = String, Header)),
    responses((status = 200, body = Object), (status = 404, body = Problem), (status = 412, body = Problem), (status = 422, body = Problem), (status = 428, body = Problem)))]
async fn delete_resource(
    State(app): App,
    Extension(c): Extension<Caller>,
    Path((k, name)): Path<(String, String)>,
    headers: HeaderMap,
) -> Answer {
    let path = top_path(&k, name)?;
    change(&app, &c, &headers, path, Op::Delete).await
}

/// A child resource: a security rule, route, subnet or rule collection group.
#[utoipa::path(get, path = "/api/resources/{kind}/{name}/{child}/{child_name}", tag = "resources",
    params(("kind" = String, Path), ("name" = String, Path), ("child" = String, Path, description = "securityRules, routes, subnets or ruleCollectionGroups"), ("child_name" = String, Path)),
    responses((status = 200, body = Object), (status = 404, body = Problem)))]
async fn get_child(
    State(app): App,
    Path((k, name, child, cn)): Path<(String, String, String, String)>,
) -> Answer {
    show(&app, &child_path(&k, name, &child, cn)?)
}

/// Create or replace a child resource (see PUT of a resource).
#[utoipa::path(put, path = "/api/resources/{kind}/{name}/{child}/{child_name}", tag = "resources",
    params(("kind" = String, Path), ("name" = String, Path), ("child" = String, Path), ("child_name" = String, Path), ("If-Match" = Option<String>, Header)),
    request_body = Object,
    responses((status = 200, body = Object), (status = 201, body = Object), (status = 400, body = Problem), (status = 403, body = Problem),
              (status = 412, body = Problem), (status = 422, body = Problem), (status = 428, body = Problem)))]
async fn put_child(
    State(app): App,
    Extension(c): Extension<Caller>,
    Path((k, name, child, cn)): Path<(String, String, String, String)>,
    headers: HeaderMap,
    b: Result<Json<Value>, JsonRejection>,
) -> Answer {
    let path = child_path(&k, name, &child, cn)?;
    change(&app, &c, &headers, path, Op::Put(body(b)?)).await
}

/// Change a child resource with a JSON merge patch; `If-Match` required.
#[utoipa::path(patch, path = "/api/resources/{kind}/{name}/{child}/{child_name}", tag = "resources",
    params(("kind" = String, Path), ("name" = String, Path), ("child" = String, Path), ("child_name" = String, Path), ("If-Match" = String, Header)),
    request_body = Object,
    responses((status = 200, body = Object), (status = 404, body = Problem), (status = 412, body = Problem), (status = 422, body = Problem), (status = 428, body = Problem)))]
async fn patch_child(
    State(app): App,
    Extension(c): Extension<Caller>,
    Path((k, name, child, cn)): Path<(String, String, String, String)>,
    headers: HeaderMap,
    b: Result<Json<Value>, JsonRejection>,
) -> Answer {
    let path = child_path(&k, name, &child, cn)?;
    change(&app, &c, &headers, path, Op::Patch(body(b)?)).await
}

/// Delete a child resource; `If-Match` required.
#[utoipa::path(delete, path = "/api/resources/{kind}/{name}/{child}/{child_name}", tag = "resources",
    params(("kind" = String, Path), ("name" = String, Path), ("child" = String, Path), ("child_name" = String, Path), ("If-Match" = String, Header)),
    responses((status = 200, body = Object), (status = 404, body = Problem), (status = 412, body = Problem), (status = 422, body = Problem), (status = 428, body = Problem)))]
async fn delete_child(
    State(app): App,
    Extension(c): Extension<Caller>,
    Path((k, name, child, cn)): Path<(String, String, String, String)>,
    headers: HeaderMap,
) -> Answer {
    let path = child_path(&k, name, &child, cn)?;
    change(&app, &c, &headers, path, Op::Delete).await
}

/// Every applied version, newest first.
#[utoipa::path(get, path = "/api/versions", tag = "versions",
    responses((status = 200, body = Vec<VersionMeta>)))]
async fn versions(State(app): App) -> Answer {
    let store = app.store.clone();
    let v = blocking(move || store.versions()).await?;
    Ok(Json(v).into_response())
}

/// One applied version with all its resources.
#[utoipa::path(get, path = "/api/versions/{version}", tag = "versions",
    params(("version" = u64, Path)),
    responses((status = 200, body = Version), (status = 404, body = Problem)))]
async fn version(State(app): App, Path(n): Path<u64>) -> Answer {
    let store = app.store.clone();
    match blocking(move || store.version(n)).await? {
        Some(v) => Ok(Json(v).into_response()),
        None => Err(Problem::not_found(format!("no version {n}"))),
    }
}

/// Apply an earlier version's resources again, as a new version (admin).
#[utoipa::path(post, path = "/api/versions/{version}/rollback", tag = "versions",
    params(("version" = u64, Path)),
    responses((status = 200, body = VersionMeta), (status = 403, body = Problem), (status = 404, body = Problem), (status = 422, body = Problem)))]
async fn rollback(State(app): App, Extension(c): Extension<Caller>, Path(n): Path<u64>) -> Answer {
    let what = format!("rollback to {n}");
    let result = async {
        admin(&c)?;
        let store = app.store.clone();
        let old = blocking(move || store.version(n))
            .await?
            .ok_or_else(|| Problem::not_found(format!("no version {n}")))?;
        let _writer = app.writer.lock().await;
        crate::follow::catch_up(&app).await;
        let meta = apply(&app, &c, &what, old.resources, |_| None).await?;
        Ok(Json(meta).into_response())
    }
    .await;
    audit_refusal(&app, &c, &what, refused(&result)).await;
    result
}

/// The audit log: every change attempt with the token's name, newest first (admin).
#[utoipa::path(get, path = "/api/audit", tag = "versions",
    responses((status = 200, body = Vec<AuditEntry>), (status = 403, body = Problem)))]
async fn audit(State(app): App, Extension(c): Extension<Caller>) -> Answer {
    admin(&c)?;
    let store = app.store.clone();
    Ok(Json(blocking(move || store.audit_log()).await?).into_response())
}

#[derive(Deserialize, utoipa::IntoParams)]
pub struct FlowLogQuery {
    /// `Allow` or `Deny`.
    action: Option<String>,
    /// A rule name or path (`collection/rule`, `group/collection/rule`), or `default`.
    rule: Option<String>,
    /// A duration before now (`15m`, `1h`, `2d`) or an RFC 3339 time.
    since: Option<String>,
    /// Source address.
    source: Option<String>,
    /// SNI / Host / CONNECT name (`*.example.com` for subdomains).
    name: Option<String>,
    /// Only records of audit matches: audit-mode rules that matched, observed default denies (PAL-5.3, PAL-5.4); as `palisade logs --audit`.
    audit: Option<bool>,
    /// Only `ShadowDiff` records: flows the shadow policy decides differently (PAL-5.3); as `palisade logs --shadow-diff`.
    #[serde(rename = "shadowDiff")]
    #[param(rename = "shadowDiff")]
    shadow_diff: Option<bool>,
    /// The gateway instance that wrote the record (PostgreSQL store only).
    instance: Option<String>,
    /// Records per page (default 100, at most 1000).
    limit: Option<usize>,
    /// Records to skip (from `nextOffset` of the previous page).
    offset: Option<usize>,
}

/// The gateways' flow records, newest first, filtered and paged (DIAG-11); as `palisade logs --output json`. With a PostgreSQL store, the records the gateways wrote there, each with its `instance`.
#[utoipa::path(get, path = "/api/flowLogs", tag = "diagnostics", params(FlowLogQuery),
    responses((status = 200, description = "`{value: [record], nextOffset}`", body = Object),
              (status = 400, body = Problem), (status = 404, body = Problem)))]
async fn flow_logs(State(app): App, Query(q): Query<FlowLogQuery>) -> Answer {
    let source = flow_source(&app, q.instance.as_deref())?;
    let (limit, offset) = (q.limit.unwrap_or(100).clamp(1, 1000), q.offset.unwrap_or(0));
    let query = palisade_flowlog::Query {
        audit: q.audit.unwrap_or(false),
        shadow_diff: q.shadow_diff.unwrap_or(false),
        ..filters(q.action, q.rule, q.since, q.source, q.name)?
    };
    let instance = q.instance;
    // One more than the page, to know whether another page follows.
    let wanted = offset.saturating_add(limit).saturating_add(1);
    let records =
        tokio::task::spawn_blocking(move || source.query(&query, instance.as_deref(), wanted))
            .await
            .map_err(Problem::internal)?
            .map_err(Problem::internal)?;
    let more = records.len() > offset.saturating_add(limit);
    let page: Vec<_> = records.into_iter().skip(offset).take(limit).collect();
    let next = more.then_some(offset + limit);
    Ok(Json(json!({"value": page, "nextOffset": next})).into_response())
}

/// The PostgreSQL store when the server runs on one (the gateways write there), else the
/// flow-log directory.
fn flow_source(app: &AppState, instance: Option<&str>) -> Result<crate::live::Source, Problem> {
    if app.store.postgres().is_some() {
        return Ok(crate::live::Source::Store(app.store.clone()));
    }
    if instance.is_some() {
        return Err(Problem::bad_request(
            "instance: records carry their gateway instance in a PostgreSQL store only (--store postgres://...)",
        ));
    }
    app.flow_log
        .clone()
        .map(crate::live::Source::Dir)
        .ok_or_else(|| Problem::not_found("no flow log: start the server with --flow-log DIR"))
}

/// The flow-log filters of the query and the stream, as `palisade logs` takes them.
fn filters(
    action: Option<String>,
    rule: Option<String>,
    since: Option<String>,
    source: Option<String>,
    name: Option<String>,
) -> Result<palisade_flowlog::Query, Problem> {
    let since = since
        .as_deref()
        .map(|s| palisade_flowlog::parse_since(s, std::time::SystemTime::now()))
        .transpose()
        .map_err(|e| Problem::bad_request(e.to_string().replace("--since", "since")))?;
    let source = source
        .as_deref()
        .map(|s| address("source", s))
        .transpose()?;
    Ok(palisade_flowlog::Query {
        action,
        since,
        rule,
        source,
        name,
        ..Default::default()
    })
}

#[derive(Deserialize, utoipa::IntoParams)]
pub struct FlowStreamQuery {
    /// `Allow` or `Deny`.
    action: Option<String>,
    /// A rule name or path (`collection/rule`, `group/collection/rule`), or `default`.
    rule: Option<String>,
    /// Source address.
    source: Option<String>,
    /// SNI / Host / CONNECT name (`*.example.com` for subdomains).
    name: Option<String>,
    /// Only records of audit matches (PAL-5.3, PAL-5.4), as the query's `audit`.
    audit: Option<bool>,
    /// Only `ShadowDiff` records (PAL-5.3), as the query's `shadowDiff`.
    #[serde(rename = "shadowDiff")]
    #[param(rename = "shadowDiff")]
    shadow_diff: Option<bool>,
    /// The gateway instance that wrote the record (PostgreSQL store only).
    instance: Option<String>,
}

/// Live decisions: each flow record the gateways write from now on, as a Server-Sent Event `flow` whose data is the record (as in `GET /api/flowLogs`); filters as the query's.
#[utoipa::path(get, path = "/api/flowLogs/stream", tag = "diagnostics", params(FlowStreamQuery),
    responses((status = 200, description = "`text/event-stream` of `event: flow` records", content_type = "text/event-stream", body = String),
              (status = 400, body = Problem), (status = 404, body = Problem)))]
async fn flow_stream(State(app): App, Query(q): Query<FlowStreamQuery>) -> Answer {
    use axum::response::sse::{Event, KeepAlive, Sse};
    let source = flow_source(&app, q.instance.as_deref())?;
    let query = palisade_flowlog::Query {
        audit: q.audit.unwrap_or(false),
        shadow_diff: q.shadow_diff.unwrap_or(false),
        ..filters(q.action, q.rule, None, q.source, q.name)?
    };
    let instance = q.instance;
    let follower = tokio::task::spawn_blocking(move || source.follow(instance))
        .await
        .map_err(Problem::internal)?
        .map_err(Problem::internal)?;
    let stopping = app.stopping.subscribe();
    let records = futures_util::stream::unfold(
        (follower, stopping, std::collections::VecDeque::new()),
        move |(mut follower, mut stopping, mut ready)| {
            let query = query.clone();
            async move {
                loop {
                    if let Some(r) = ready.pop_front() {
                        let event = Event::default().event("flow").json_data(&r);
                        return Some((event, (follower, stopping, ready)));
                    }
                    tokio::select! {
                        _ = tokio::time::sleep(POLL) => {}
                        _ = stopping.wait_for(|s| *s) => return None,
                    }
                    let (f, polled) = tokio::task::spawn_blocking(move || {
                        let r = follower.poll();
                        (follower, r)
                    })
                    .await
                    .ok()?;
                    follower = f;
                    // An unreadable log ends the stream; the client reconnects or asks the query.
                    ready.extend(
                        polled
                            .ok()?
                            .into_iter()
                            .filter(|(r, _)| query.matches(r))
                            .map(|(_, v)| v),
                    );
                }
            }
        },
    );
    // A first comment sends the headers at once: the client knows the tail has started.
    let started = futures_util::stream::once(async {
        Ok::<_, axum::Error>(Event::default().comment("following the flow log"))
    });
    Ok(Sse::new(futures_util::StreamExt::chain(started, records))
        .keep_alive(KeepAlive::default())
        .into_response())
}

/// How often a live stream looks for new records.
const POLL: Duration = Duration::from_millis(200);

pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, crate::store::StoreError> + Send + 'static,
) -> Result<T, Problem> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(Problem::internal)?
        .map_err(Problem::internal)
}

fn admin(c: &Caller) -> Result<(), Problem> {
    if c.role == Role::Admin {
        Ok(())
    } else {
        Err(Problem::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!(
                "token '{}' is a reader; changes need an admin token",
                c.name
            ),
        ))
    }
}

fn change_error(e: ChangeError) -> Problem {
    match e {
        ChangeError::NotFound(m) => Problem::not_found(m),
        ChangeError::BadRequest(m) => Problem::bad_request(m),
    }
}

enum Op {
    Put(Value),
    Patch(Value),
    Delete,
}

impl Op {
    fn method(&self) -> &'static str {
        match self {
            Op::Put(_) => "PUT",
            Op::Patch(_) => "PATCH",
            Op::Delete => "DELETE",
        }
    }
}

/// A change to one resource: preconditions, the new resource list, then [`apply`].
async fn change(
    app: &Arc<AppState>,
    c: &Caller,
    headers: &HeaderMap,
    path: ResourcePath,
    op: Op,
) -> Answer {
    let what = format!("{} {path}", op.method());
    let result = async {
        admin(c)?;
        let _writer = app.writer.lock().await;
        crate::follow::catch_up(app).await;
        let current = app.running.load_full();
        let existing = policy::locate(&current.resources, &path)
            .ok()
            .map(|s| policy::get(&current.resources, s, &path).clone());
        precondition(headers, existing.as_ref(), matches!(op, Op::Put(_)))?;
        let resources = match op {
            Op::Put(b) => policy::put(&current.resources, &path, b),
            Op::Patch(p) => {
                let mut v = existing.clone().unwrap_or_default();
                policy::merge_patch(&mut v, &p);
                policy::put(&current.resources, &path, v)
            }
            Op::Delete => policy::delete(&current.resources, &path),
        }
        .map_err(change_error)?;
        let prefix = policy::locate(&resources, &path)
            .ok()
            .map(|s| policy::pointer(&resources, s, &path));
        let in_body = move |p: &str| {
            let prefix = prefix.as_deref()?;
            let rest = p.strip_prefix(prefix)?;
            (rest.is_empty() || rest.starts_with('/')).then(|| rest.to_string())
        };
        let meta = apply(app, c, &what, resources, in_body).await?;
        let running = app.running.load();
        let resp = match policy::locate(&running.resources, &path) {
            Ok(slot) => {
                let v = policy::get(&running.resources, slot, &path);
                let status = if existing.is_some() {
                    StatusCode::OK
                } else {
                    StatusCode::CREATED
                };
                with_etag((status, Json(v)).into_response(), v, meta.version)
            }
            Err(_) => Json(json!({"version": meta.version})).into_response(),
        };
        Ok(resp)
    }
    .await;
    audit_refusal(app, c, &what, refused(&result)).await;
    result
}

/// Optimistic concurrency: changing or deleting an existing resource needs its current ETag
/// (428 without: a blind overwrite would silently undo a concurrent change); creating needs none.
fn precondition(
    headers: &HeaderMap,
    existing: Option<&Value>,
    creates: bool,
) -> Result<(), Problem> {
    let if_match = headers
        .get(header::IF_MATCH)
        .map(|v| v.to_str().unwrap_or_default());
    match (existing, if_match) {
        (Some(_), None) => Err(Problem::new(
            StatusCode::PRECONDITION_REQUIRED,
            "precondition-required",
            "changing an existing resource needs If-Match with its ETag (from GET)",
        )),
        (Some(v), Some(m)) => {
            let tag = policy::etag(v);
            if m.trim() == "*" || m.split(',').any(|t| t.trim() == tag) {
                Ok(())
            } else {
                Err(Problem::new(
                    StatusCode::PRECONDITION_FAILED,
                    "precondition-failed",
                    format!("the resource changed: its ETag is {tag}, If-Match gave {m}"),
                ))
            }
        }
        (None, Some(_)) if creates => Err(Problem::new(
            StatusCode::PRECONDITION_FAILED,
            "precondition-failed",
            "If-Match was given but the resource does not exist",
        )),
        (None, _) if creates => Ok(()),
        (None, _) => Err(Problem::not_found("no such resource")),
    }
}

/// Compile `resources` beside the running snapshot; when valid, store it as a new version
/// and swap it in (PAL-5.5). The caller holds the writer lock.
async fn apply(
    app: &Arc<AppState>,
    c: &Caller,
    what: &str,
    resources: Vec<Value>,
    in_body: impl Fn(&str) -> Option<String>,
) -> Result<VersionMeta, Problem> {
    let base = app.base.clone();
    // After the newest version read, even one passed over (it does not compile here): the
    // change replaces it, as any change replaces what came before.
    let parent = app.head.load(Ordering::SeqCst);
    let next = parent + 1;
    let compiled = tokio::task::spawn_blocking(move || policy::compile(&base, next, resources))
        .await
        .map_err(Problem::internal)?;
    let mut running = compiled.map_err(|d| Problem::invalid_network(d.iter(), in_body))?;
    let time = now();
    let meta = VersionMeta {
        version: next,
        author: c.name.clone(),
        time: time.clone(),
        change: what.to_string(),
        snapshot: running.snapshot.id.clone(),
    };
    let version = Version {
        meta: meta.clone(),
        resources: running.resources.clone(),
    };
    let audit = AuditEntry {
        time,
        actor: c.name.clone(),
        change: what.to_string(),
        status: 200,
        version: None,
    };
    let store = app.store.clone();
    let committed = tokio::task::spawn_blocking(move || store.commit(parent, version, audit))
        .await
        .map_err(Problem::internal)?;
    let n = match committed {
        Ok(n) => n,
        // Another server committed since this change was read: refused like an ETag
        // mismatch, and this server follows the winner at once.
        Err(e @ StoreError::Stale { .. }) => {
            crate::follow::catch_up(app).await;
            return Err(Problem::new(
                StatusCode::PRECONDITION_FAILED,
                "precondition-failed",
                format!("{e}; read the resource again and retry"),
            ));
        }
        Err(e) => return Err(Problem::internal(e)),
    };
    app.head.store(n, Ordering::SeqCst);
    running.version = n;
    app.running.store(Arc::new(running));
    Ok(VersionMeta { version: n, ..meta })
}

/// Applied changes are audited with their version; refusals are audited here.
fn refused(result: &Answer) -> Option<u16> {
    result.as_ref().err().map(|p| p.status)
}

async fn audit_refusal(app: &Arc<AppState>, c: &Caller, what: &str, refused: Option<u16>) {
    let Some(status) = refused else { return };
    let entry = AuditEntry {
        time: now(),
        actor: c.name.clone(),
        change: what.to_string(),
        status,
        version: None,
    };
    let store = app.store.clone();
    if let Err(e) = blocking(move || store.audit(entry)).await {
        eprintln!("audit log: {}", e.detail);
    }
}
