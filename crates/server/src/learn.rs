//! `GET /api/learn`: learning mode (PAL-5.4) over the server's flow log, as `palisade learn`
//! answers it: the proposals with their evidence, the native diff and its YAML text. Reads
//! only; nothing is applied.

use crate::api::{Answer, App};
use crate::problem::Problem;
use axum::extract::{Query, State};
use axum::response::IntoResponse;
use axum::Json;
use palisade_analyze::learn::{self, Input, Scope};
use serde::Deserialize;
use serde_json::json;
use std::time::SystemTime;

#[derive(Deserialize, utoipa::IntoParams)]
pub struct LearnQuery {
    /// The source scope: a subnet, a prefix or address, an application security group or an IP
    /// group (`subnet:`, `asg:`, `ipgroup:` choose when a name is ambiguous).
    scope: String,
    /// Denials newer than this: a duration before now (`7d`, `12h`) or an RFC 3339 time; default `7d`.
    since: Option<String>,
    /// Denials older than this: a duration before now or an RFC 3339 time.
    until: Option<String>,
    /// The firewall whose denials are learned (default: the network's only firewall).
    firewall: Option<String>,
    /// Samples kept per proposal (default 5, at most 100).
    samples: Option<usize>,
}

/// Proposed allow rules for a scope's recorded denials (PAL-5.4), with evidence, as JSON and as the native YAML diff; applies nothing.
#[utoipa::path(get, path = "/api/learn", tag = "diagnostics", params(LearnQuery),
    responses((status = 200, description = "`{learned: {scope, since, until, denials, proposals: [{name, rule, why, evidence}], passedOver, firewall}, diff, yaml}`", body = Object),
              (status = 400, body = Problem), (status = 404, body = Problem), (status = 422, body = Problem)))]
pub async fn learn(State(app): App, Query(q): Query<LearnQuery>) -> Answer {
    let dir = app
        .flow_log
        .clone()
        .ok_or_else(|| Problem::not_found("no flow log: start the server with --flow-log DIR"))?;
    let now = SystemTime::now();
    let time = |name: &str, text: &str| {
        palisade_flowlog::parse_since(text, now)
            .map_err(|e| Problem::bad_request(e.to_string().replace("--since", name)))
    };
    let since = time("since", q.since.as_deref().unwrap_or("7d"))?;
    let until = q.until.as_deref().map(|u| time("until", u)).transpose()?;
    let running = app.running.load_full();
    let answer = tokio::task::spawn_blocking(move || {
        let scope = Scope::resolve(&running.snapshot, &q.scope)
            .map_err(|e| Problem::unprocessable(e.replace("--scope", "scope")))?;
        let query = palisade_flowlog::Query {
            action: Some("Deny".into()),
            since: Some(since),
            ..Default::default()
        };
        let (records, _torn) = palisade_flowlog::query(&dir, &query).map_err(Problem::internal)?;
        let learned = learn::propose(&Input {
            snapshot: &running.snapshot,
            records: &records,
            scope: &scope,
            since: Some(since),
            until,
            catalogs: &[],
            names: &running.bindings,
            firewall: q.firewall.as_deref(),
            samples: q.samples.unwrap_or(learn::DEFAULT_SAMPLES).min(100),
        })
        .map_err(Problem::unprocessable)?;
        let yaml = learn::yaml_text(&learned).map_err(Problem::internal)?;
        Ok::<_, Problem>(
            json!({"learned": learned, "diff": learn::native_diff(&learned), "yaml": yaml}),
        )
    })
    .await
    .map_err(Problem::internal)??;
    Ok(Json(answer).into_response())
}
