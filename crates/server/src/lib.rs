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
pub mod follow;
pub mod learn;
pub mod live;
pub mod policy;
pub mod present;
pub mod problem;
pub mod questions;
pub mod store;
pub mod tls;
pub mod ui;

use arc_swap::ArcSwap;
use auth::Tokens;
use palisade_load::Source;
use policy::Running;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::AtomicU64;
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
    /// The admin listener: changes and the audit log (and every read), apart from the data
    /// listener so it can stay on loopback or a management network.
    pub admin_listen: SocketAddr,
    /// Certificate chain and private key (PEM files): both listeners speak HTTPS.
    pub tls: Option<(PathBuf, PathBuf)>,
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
    /// The store's newest version as this server last read it: the running one, or a newer
    /// one passed over because it does not compile here. Changes are committed on it
    /// (compare-and-set), so another server's commit in between is refused, not overwritten.
    pub head: AtomicU64,
    /// `Config::source` with the files taken out: what each version is compiled with.
    pub base: Source,
    pub store: Arc<dyn Store>,
    pub tokens: Tokens,
    /// Changes are applied one at a time; readers never wait for it.
    pub writer: tokio::sync::Mutex<()>,
    pub flow_log: Option<PathBuf>,
    /// Set when the server is stopping: live streams end so the listeners can close.
    pub stopping: tokio::sync::watch::Sender<bool>,
    /// The listeners speak TLS: the UI's session cookie is then `Secure`, so a browser never
    /// sends the token over plain HTTP.
    pub tls: bool,
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
            store.commit(0, version, audit).map_err(|e| e.to_string())?;
            (running, "seeded version 1".to_string())
        }
    };
    Ok((
        Arc::new(AppState {
            head: AtomicU64::new(running.version),
            running: ArcSwap::from_pointee(running),
            base,
            store,
            tokens: config.tokens.clone(),
            writer: tokio::sync::Mutex::new(()),
            flow_log: config.flow_log.clone(),
            stopping: tokio::sync::watch::Sender::new(false),
            tls: config.tls.is_some(),
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

/// Where the server listens, once bound.
pub struct Bound {
    pub data: SocketAddr,
    pub admin: SocketAddr,
    /// `https` with `--tls-cert`, else `http`.
    pub scheme: &'static str,
}

/// Bind both listeners and serve until the process ends. `on_ready` gets the bound addresses
/// (port 0 picks one) before the first request is accepted.
pub async fn run(config: Config, on_ready: impl FnOnce(&Bound, &str)) -> Result<(), String> {
    let tls = match &config.tls {
        Some((cert, key)) => Some(tls::config(cert, key)?),
        None => None,
    };
    let (state, note) = tokio::task::block_in_place(|| prepare(&config))?;
    let bind = |addr: SocketAddr| async move {
        tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| format!("cannot listen on {addr}: {e}"))
    };
    let (data, admin) = (bind(config.listen).await?, bind(config.admin_listen).await?);
    let local = |l: &tokio::net::TcpListener| l.local_addr().map_err(|e| e.to_string());
    let bound = Bound {
        data: local(&data)?,
        admin: local(&admin)?,
        scheme: if tls.is_some() { "https" } else { "http" },
    };
    let app = |side| api::router(state.clone(), config.body_limit, config.timeout, side);
    let (data_app, admin_app) = (app(api::Side::Data), app(api::Side::Admin));
    if let Some(pg) = state.store.postgres() {
        tokio::spawn(follow::follow(state.clone(), pg.clone()));
    }
    on_ready(&bound, &note);
    let stopping = state.stopping.clone();
    tokio::spawn(async move {
        let _ = tokio::signal::ctrl_c().await;
        stopping.send_replace(true);
    });
    tokio::try_join!(
        serve(data, data_app, tls.clone(), &state),
        serve(admin, admin_app, tls, &state)
    )?;
    Ok(())
}

/// Serve one listener, over TLS when configured, until the server stops (Ctrl-C).
async fn serve(
    listener: tokio::net::TcpListener,
    app: axum::Router,
    tls: Option<Arc<rustls::ServerConfig>>,
    state: &AppState,
) -> Result<(), String> {
    let mut stopping = state.stopping.subscribe();
    let stop = async move {
        let _ = stopping.wait_for(|s| *s).await;
    };
    match tls {
        Some(c) => {
            let listener = tls::TlsListener::new(listener, c).map_err(|e| e.to_string())?;
            axum::serve(listener, app)
                .with_graceful_shutdown(stop)
                .await
        }
        None => {
            axum::serve(listener, app)
                .with_graceful_shutdown(stop)
                .await
        }
    }
    .map_err(|e| e.to_string())
}
