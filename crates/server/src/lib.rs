//! # palisade-server
//!
//! Palisade as a service: a thin HTTP front end beside the CLI and the gateway. It loads the
//! network through `palisade-load`, keeps every applied version in a [`store::Store`] (an
//! embedded redb file by default), and answers Network Watcher's questions (`ipFlowVerify`,
//! `nextHop`, effective rules and routes) and Palisade's `trace` from the running snapshot.
//! Resources are read and changed in their ARM JSON shape; a change is compiled beside the
//! running snapshot and swapped in only when valid (PAL-5.5).
//!
//! ```text
//! request ─▶ auth (bearer token → reader | admin) ─▶ handler (api.rs: parse, call, present)
//!                                                     │ reads: ArcSwap<Running>.load()
//!                                                     │ changes: lock writer → policy::put/…
//!                                                     │   → policy::compile → store.commit → swap
//! ```

pub mod api;
pub mod auth;
pub mod policy;
pub mod present;
pub mod problem;
pub mod store;

use arc_swap::ArcSwap;
use auth::Tokens;
use palisade_load::Source;
use policy::Running;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use store::postgres::PgStore;
use store::{AuditEntry, RedbStore, Store, Version, VersionMeta};

/// How to run the server.
pub struct Config {
    /// The network to seed an empty store with, and the catalogs and name bindings every
    /// version is compiled with.
    pub source: Source,
    pub listen: SocketAddr,
    /// Holds `policy.redb` (versions and the audit log).
    pub data: PathBuf,
    pub tokens: Tokens,
    /// Largest request body accepted.
    pub body_limit: usize,
    /// Longest a request may take.
    pub timeout: Duration,
    /// A gateway's flow-log directory, queried by `GET /api/flowLogs`.
    pub flow_log: Option<PathBuf>,
    /// A PostgreSQL connection string (`postgres://...`): versions and the audit log live
    /// there, shared with the gateways that subscribe to it, instead of `data/policy.redb`.
    pub store: Option<String>,
}

/// Shared by every handler.
pub struct AppState {
    pub running: ArcSwap<Running>,
    /// `Config::source` with the files taken out: what each version is compiled with.
    pub base: Source,
    pub store: Arc<dyn Store>,
    pub tokens: Tokens,
    /// Changes are applied one at a time; readers never wait for it.
    pub writer: tokio::sync::Mutex<()>,
    pub flow_log: Option<PathBuf>,
}

pub fn now() -> String {
    humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string()
}

/// Open the store and make the running policy: its latest version, or, when it is empty, the
/// network of `config.source` as version 1. Errors are located messages.
pub fn prepare(config: &Config) -> Result<(Arc<AppState>, String), String> {
    std::fs::create_dir_all(&config.data).map_err(|e| {
        format!(
            "{}: cannot create the data directory: {e}",
            config.data.display()
        )
    })?;
    let store: Arc<dyn Store> = match &config.store {
        Some(url) => Arc::new(PgStore::open(url).map_err(|e| e.to_string())?),
        None => {
            Arc::new(RedbStore::open(&config.data.join("policy.redb")).map_err(|e| e.to_string())?)
        }
    };
    let base = Source {
        input: palisade_load::Input::Files(vec![]),
        parameters: None,
        ..config.source.clone()
    };
    let errors = |d: palisade_model::Diagnostics| {
        d.errors()
            .map(|d| d.to_string())
            .collect::<Vec<_>>()
            .join("\n")
    };
    let (running, note) = match store.latest().map_err(|e| e.to_string())? {
        Some(v) => {
            let n = v.meta.version;
            let running = policy::compile(&base, n, v.resources).map_err(|d| {
                format!("version {n} in the store no longer compiles (catalogs or name bindings changed?):\n{}", errors(d))
            })?;
            (
                running,
                format!("serving version {n} from the store (--network seeds an empty store only)"),
            )
        }
        None => {
            // The files' own diagnostics first, exactly as every other front end reports them.
            let loaded = palisade_load::load(&config.source);
            if loaded.snapshot.is_none() {
                return Err(format!(
                    "{}: the network has errors; fix them first:\n{}",
                    config.source.describe(),
                    loaded.error_lines().join("\n")
                ));
            }
            let resources = policy::seed(&config.source)?;
            let running = policy::compile(&base, 1, resources).map_err(errors)?;
            let (files, seeded) = (
                loaded.snapshot.as_ref().map(|s| shape(&s.network)),
                Some(shape(&running.snapshot.network)),
            );
            if files != seeded {
                // Fail closed: serving other resources than the files hold would mislead.
                return Err(format!(
                    "{}: the ARM resources read from the files describe another network than the files do ({files:?} ≠ {seeded:?})",
                    config.source.describe()
                ));
            }
            let version = Version {
                meta: VersionMeta {
                    version: 1,
                    author: "seed".into(),
                    time: now(),
                    change: format!("seed from {}", config.source.describe()),
                    snapshot: running.snapshot.id.clone(),
                },
                resources: running.resources.clone(),
            };
            let audit = AuditEntry {
                time: version.meta.time.clone(),
                actor: "seed".into(),
                change: version.meta.change.clone(),
                status: 201,
                version: None,
            };
            store.commit(version, audit).map_err(|e| e.to_string())?;
            (running, "seeded version 1".to_string())
        }
    };
    Ok((
        Arc::new(AppState {
            running: ArcSwap::from_pointee(running),
            base,
            store,
            tokens: config.tokens.clone(),
            writer: tokio::sync::Mutex::new(()),
            flow_log: config.flow_log.clone(),
        }),
        note,
    ))
}

/// How many resources of each kind, and rules and routes: what seeding must preserve.
fn shape(n: &palisade_model::Network) -> [usize; 12] {
    let c = n.counts();
    [
        n.virtual_networks.len(),
        n.network_security_groups.len(),
        n.route_tables.len(),
        n.network_interfaces.len(),
        n.application_security_groups.len(),
        n.public_ip_addresses.len(),
        n.azure_firewalls.len(),
        n.firewall_policies.len(),
        n.ip_groups.len(),
        c.security_rules,
        c.routes,
        c.firewall_rules,
    ]
}

/// Bind and serve until the process ends. `on_ready` gets the bound address (port 0 picks
/// one) before the first request is accepted.
pub async fn run(config: Config, on_ready: impl FnOnce(SocketAddr, &str)) -> Result<(), String> {
    let (state, note) = tokio::task::block_in_place(|| prepare(&config))?;
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", config.listen))?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    on_ready(addr, &note);
    let app = api::router(state, config.body_limit, config.timeout);
    axum::serve(listener, app)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await
        .map_err(|e| e.to_string())
}
