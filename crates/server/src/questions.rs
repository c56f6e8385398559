//! Questions about the whole network, answered as the CLI answers them: `securityGroupView`
//! (DIAG-6), `deps check` (DIAG-8), `analyze asymmetric` (DIAG-9), `analyze reachability`,
//! `lint`, and the semantic `diff` of two stored versions. Each handler parses, calls
//! `palisade-analyze` / [`present`], and answers; the long ones run on the blocking pool.

use crate::api::{blocking, body, nic_name, not_answerable, Answer, App};
use crate::policy::{self, Running};
use crate::present::{self, NotAnswerable};
use crate::problem::Problem;
use crate::AppState;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::response::IntoResponse;
use axum::Json;
use palisade_analyze::reach::{self, Engine};
use palisade_analyze::{asymmetric, deps, diff as semdiff, lint as lints};
use palisade_model::catalog::DependencyCatalog;
use serde::Deserialize;
use serde_json::{json, Value};
use std::sync::Arc;
use utoipa::ToSchema;

/// Network Watcher's `securityGroupView` parameters.
#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecurityGroupViewRequest {
    /// A NIC's resource id or name (Palisade's model has NICs, not virtual machines).
    target_resource_id: String,
}

/// The NSG rules of a network interface, per level as written and as in force (Network Watcher's security group view, DIAG-6).
#[utoipa::path(post, path = "/api/diagnostics/securityGroupView", tag = "diagnostics",
    request_body = SecurityGroupViewRequest,
    responses((status = 200, description = "`{networkInterfaces: [{id, securityRuleAssociations}]}`", body = Object),
              (status = 400, body = Problem), (status = 422, body = Problem)))]
pub async fn security_group_view(
    State(app): App,
    b: Result<Json<SecurityGroupViewRequest>, JsonRejection>,
) -> Answer {
    let r = body(b)?;
    let nic = nic_name(&r.target_resource_id).ok_or_else(|| {
        Problem::unprocessable(format!(
            "targetResourceId: `{}` names no network interface; expected a NIC's id or name",
            r.target_resource_id
        ))
    })?;
    let running = app.running.load();
    let v = present::security_group_view(&running.snapshot, nic).map_err(not_answerable)?;
    Ok(Json(v).into_response())
}

/// A dependency list (CAT-5) sent with the question.
fn catalog(v: &Value) -> Result<DependencyCatalog, Problem> {
    DependencyCatalog::from_json("catalog", &v.to_string())
        .0
        .map_err(|d| Problem::bad_request(d.to_string()))
}

/// Run `f` on the running snapshot on the blocking pool: the network-wide analyses take long.
async fn on_snapshot<T: Send + 'static>(
    app: &Arc<AppState>,
    f: impl FnOnce(&Running) -> Result<T, Problem> + Send + 'static,
) -> Result<T, Problem> {
    let running = app.running.load_full();
    tokio::task::spawn_blocking(move || f(&running))
        .await
        .map_err(Problem::internal)?
}

#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DepsRequest {
    /// A dependency list in the `OutboundNetworkDependenciesEndpoints` shape (CAT-5).
    #[schema(value_type = Object)]
    catalog: Value,
    /// The workload: a subnet name (its first usable address is used) or an address.
    #[serde(default)]
    from: Option<String>,
}

/// Is every outbound dependency of a workload allowed, and by what (DIAG-8)? As `palisade deps check --output json`.
#[utoipa::path(post, path = "/api/analyze/deps", tag = "analyze", request_body = DepsRequest,
    responses((status = 200, description = "`{entries, summary}`", body = Object),
              (status = 400, body = Problem), (status = 422, body = Problem)))]
pub async fn deps_check(State(app): App, b: Result<Json<DepsRequest>, JsonRejection>) -> Answer {
    let r = body(b)?;
    let catalog = catalog(&r.catalog)?;
    let report = on_snapshot(&app, move |run| {
        let src = palisade_policy::endpoints::workload_address(&run.snapshot, r.from.as_deref())
            .map_err(|e| not_answerable(NotAnswerable(e.to_string())))?;
        Ok(deps::check(&run.snapshot, &catalog, src))
    })
    .await?;
    Ok(Json(report).into_response())
}

#[derive(Deserialize, ToSchema, Default)]
pub struct AsymmetricRequest {
    /// A dependency list whose `via: Route` entries are declared inbound sources.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    catalog: Option<Value>,
}

/// Inbound paths whose replies leave through a device that never saw the request (DIAG-9). As `palisade analyze asymmetric --output json`.
#[utoipa::path(post, path = "/api/analyze/asymmetric", tag = "analyze", request_body = AsymmetricRequest,
    responses((status = 200, description = "`{findings, subnets, entries}`", body = Object), (status = 400, body = Problem)))]
pub async fn asymmetric(
    State(app): App,
    b: Result<Json<AsymmetricRequest>, JsonRejection>,
) -> Answer {
    let r = body(b)?;
    let declared = match &r.catalog {
        Some(c) => present::declared_sources(&catalog(c)?),
        None => vec![],
    };
    let report = on_snapshot(&app, move |run| {
        Ok(asymmetric::check(&run.snapshot, &declared))
    })
    .await?;
    Ok(Json(report).into_response())
}

#[derive(Deserialize, ToSchema, Default)]
pub struct ReachabilityRequest {
    /// Sources: subnet names (`vnet/subnet` or `subnet`), NIC names, addresses or prefixes, comma-separated.
    #[serde(default)]
    from: Option<String>,
    /// Destinations, same forms.
    #[serde(default)]
    to: Option<String>,
    /// Also list denied and dropped flows.
    #[serde(default)]
    all: bool,
}

/// Which sources reach which destinations on which protocols and ports, as exact sets with the deciding rules. As `palisade analyze reachability --output json`.
#[utoipa::path(post, path = "/api/analyze/reachability", tag = "analyze", request_body = ReachabilityRequest,
    responses((status = 200, description = "`{entries, application_rules, atoms, plans}`", body = Object),
              (status = 400, body = Problem), (status = 422, body = Problem)))]
pub async fn reachability(
    State(app): App,
    b: Result<Json<ReachabilityRequest>, JsonRejection>,
) -> Answer {
    let r = body(b)?;
    let v = on_snapshot(&app, move |run| {
        let snap = &run.snapshot;
        let scope = |field: &str, s: &Option<String>| match s {
            Some(t) => reach::parse_scope(snap, t)
                .map_err(|e| Problem::unprocessable(format!("{field}: {e}"))),
            None => Ok(reach::everything()),
        };
        let (from, to) = (scope("from", &r.from)?, scope("to", &r.to)?);
        let engine = Engine::new(snap);
        let both = r.from.is_some() || r.to.is_some();
        let report = reach::report(&engine, &from, &to, both, &present::reach_verdicts(r.all));
        Ok(present::reachability(
            &report,
            &present::reach_assumed(snap, &report),
        ))
    })
    .await?;
    Ok(Json(v).into_response())
}

/// Findings about the running policy: shadowed and redundant rules, risky openings and the like. As `palisade lint --output json`.
#[utoipa::path(get, path = "/api/analyze/lint", tag = "analyze",
    responses((status = 200, description = "`{findings}`", body = Object)))]
pub async fn lint(State(app): App) -> Answer {
    let findings = on_snapshot(&app, |run| Ok(lints::lint(&run.snapshot))).await?;
    Ok(Json(json!({ "findings": findings })).into_response())
}

/// A stored version compiled again (the running one is reused).
async fn compiled(app: &Arc<AppState>, n: u64) -> Result<Arc<Running>, Problem> {
    let running = app.running.load_full();
    if running.version == n {
        return Ok(running);
    }
    let store = app.store.clone();
    let v = blocking(move || store.version(n))
        .await?
        .ok_or_else(|| Problem::not_found(format!("no version {n}")))?;
    let base = app.base.clone();
    let compiled = tokio::task::spawn_blocking(move || policy::compile(&base, n, v.resources))
        .await
        .map_err(Problem::internal)?;
    compiled.map(Arc::new).map_err(|d| {
        Problem::unprocessable(format!(
            "version {n} no longer compiles (catalogs or name bindings changed?): {d}"
        ))
    })
}

/// The flows whose verdict changes from one stored version to another (the analyzer's semantic diff), as `palisade diff OLD NEW --output json`.
#[utoipa::path(get, path = "/api/versions/{version}/diff/{other}", tag = "versions",
    params(("version" = u64, Path, description = "the old version"), ("other" = u64, Path, description = "the new version")),
    responses((status = 200, description = "`{changes, compared}`", body = Object),
              (status = 404, body = Problem), (status = 422, body = Problem)))]
pub async fn diff(State(app): App, Path((old, new)): Path<(u64, u64)>) -> Answer {
    let (old, new) = (compiled(&app, old).await?, compiled(&app, new).await?);
    let report = tokio::task::spawn_blocking(move || semdiff::diff(&old.snapshot, &new.snapshot))
        .await
        .map_err(Problem::internal)?;
    Ok(Json(report).into_response())
}
