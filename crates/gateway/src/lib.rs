//! # palisade-gateway
//!
//! The egress firewall data plane. It accepts connections — as an explicit HTTP proxy
//! (absolute-form requests and `CONNECT`), and transparently (TCP redirected by nftables, the
//! original destination read back with `SO_ORIGINAL_DST`) — asks the compiled policy
//! ([`palisade_policy::firewall::CompiledFirewall::evaluate`]) for a verdict, and relays or
//! refuses. It decides nothing itself: the verdict, the deciding rule and the reason come from the
//! snapshot; the gateway only supplies what it observed (addresses, ports, the SNI or Host name)
//! and applies the spec's checks on those observations (PAL-5.2 name ↔ address binding, FW-6.2
//! missing/unparseable/encrypted ClientHello).
//!
//! - [`policy`]: loading and compiling the network; the snapshot in force is held in an
//!   [`arc_swap::ArcSwapOption`] and swapped atomically on reload (PAL-5.5).
//! - [`proxy`]: the listeners' connection handling and the splice.
//! - [`sni`]: the ClientHello / HTTP head parser on peeked bytes.
//! - [`resolver`]: the gateway's own name bindings.
//! - [`dns`]: the DNS proxy (FW-9) and the addresses it remembers for FQDN network rules
//!   (FW-5) and the address check (PAL-5.2).
//! - [`admin`]: `/metrics`, `/reload`, `/status` on a separate (loopback) listener.
//! - [`store`]: the policy from a shared PostgreSQL store, followed by LISTEN/NOTIFY;
//!   [`flowstore`]: flow records copied there, batched off the hot path.
//! - [`shutdown`]: stop accepting, drain for a grace period, close and record the rest.
//! - Shadow policy (PAL-5.3, `--shadow-network`): a candidate network judged beside the live one;
//!   a final decision whose verdicts differ gets a `ShadowDiff` record too. [`observe`]: the
//!   PAL-5.4 observe window.
//! - Every decision becomes a [`palisade_flowlog::FlowRecord`], written durably.

pub mod admin;
mod buffers;
pub mod dnat;
pub mod dns;
pub mod flowstore;
pub mod metrics;
pub mod observe;
pub mod policy;
pub mod proxy;
pub mod quic;
pub mod quic_judge;
pub mod resolver;
mod serving;
pub mod shutdown;
pub mod sni;
pub mod source_cap;
pub mod store;
pub mod udp;

use arc_swap::ArcSwapOption;
use metrics::{Metrics, OutcomeLabels};
use palisade_flowlog::{
    format_time, AuditEntry, FlowLog, FlowRecord, FlowRecordRef, ShadowDiff, Shown, Timestamp,
    Writer,
};
use palisade_policy::firewall::{FirewallInput, FirewallOutcome, FirewallPass};
use palisade_policy::matchers::PacketKey;
use palisade_policy::AppProtocol;
use policy::{Active, PolicySource};
use resolver::Resolver;
pub use shutdown::ShutdownReport;
use shutdown::{InFlight, Phase};
use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinHandle;

/// PAL-5.2 setting (`addressCheck`): the policy's for the deciding rule, else
/// [`Config::address_check`].
pub use palisade_model::AddressCheck;

/// Which TLS SNI (or HTTP `Host`) a `CONNECT name:port` tunnel may carry once the CONNECT name
/// was allowed by an application rule (`--tunnel-sni`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TunnelSni {
    /// Only the CONNECT name itself; any other is denied (`TunnelSniMismatch`), so an allowed
    /// CONNECT cannot front for another name.
    #[default]
    Match,
    /// Another name is judged by the policy on its own (and checked against the dialed
    /// address, PAL-5.2).
    Allowed,
}

/// How TCP reaches the transparent listener (`--transparent-mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TransparentMode {
    /// nftables `redirect`: the connection is NATed to the listener; its original destination
    /// is read back from conntrack (`SO_ORIGINAL_DST`).
    #[default]
    Redirect,
    /// nftables `tproxy`: the connection reaches an `IP_TRANSPARENT` listener untranslated; its
    /// local address is the original destination (no NAT, no conntrack lookup).
    Tproxy,
}

/// What the gateway does with a ClientHello carrying `encrypted_client_hello` (ECH, RFC 9849),
/// over TCP, inside CONNECT tunnels and in QUIC Initials (`--ech`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum EchPolicy {
    /// Deny (`EncryptedClientHello`): the real name is encrypted and cannot be judged, so the
    /// gateway fails closed.
    #[default]
    Deny,
    /// Judge the outer ClientHello's public name (the client-facing server) as the SNI; the
    /// flow record's detail says `ech`.
    OuterSni,
}

impl EchPolicy {
    /// The detail an allowed or denied ECH flow judged by its outer name carries.
    pub(crate) fn outer_sni_note(outer: Option<&str>) -> String {
        format!(
            "ech: judged by the outer SNI {} (--ech outer-sni)",
            outer.unwrap_or("(none)")
        )
    }
}

/// Where the gateway's rate-limited lines go (stderr when none is set); tests capture them.
#[derive(Clone)]
pub struct LogSink(pub Arc<dyn Fn(&str) + Send + Sync>);

impl std::fmt::Debug for LogSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LogSink")
    }
}

/// Lines per second and reason that [`Gateway::log_limited`] writes; the rest are counted and
/// summarised, so a flood of refused connections cannot flood the log.
pub const LOG_LINES_PER_SECOND: u32 = 5;

/// Timeouts and caps against slow or greedy clients.
#[derive(Debug, Clone)]
pub struct Limits {
    pub max_connections: usize,
    /// Connections one client address may hold at once (the rest of `max_connections` stays
    /// available to the other clients).
    pub max_connections_per_source: usize,
    /// To receive a complete proxy request head.
    pub header_timeout: Duration,
    /// To receive the ClientHello / HTTP head in transparent mode and inside IP CONNECTs.
    pub handshake_timeout: Duration,
    pub connect_timeout: Duration,
    /// A relayed connection with no bytes either way for this long is closed.
    pub idle_timeout: Duration,
    /// A UDP session (DNAT, transparent) with no datagram either way for this long ends
    /// (transparent sessions to port 53: at most [`udp::DNS_IDLE_TIMEOUT`]).
    pub udp_idle_timeout: Duration,
    /// Transparent UDP sessions held at once; when full, the least recently active is evicted.
    pub max_udp_sessions: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: 10_000,
            max_connections_per_source: 1_000,
            header_timeout: Duration::from_secs(10),
            handshake_timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(300),
            udp_idle_timeout: Duration::from_secs(30),
            max_udp_sessions: 10_000,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Config {
    pub source: PolicySource,
    /// Explicit proxy listener.
    pub listen: Option<SocketAddr>,
    /// Admin listener (`/metrics`, `POST /reload`, `/status`); keep it on loopback.
    pub admin: Option<SocketAddr>,
    /// Transparent listener (the nftables `redirect` target).
    pub transparent: Option<SocketAddr>,
    /// How TCP reaches the transparent listener.
    pub transparent_mode: TransparentMode,
    /// Serve the explicit and transparent listeners on this many threads, each with a
    /// runtime and a listener of its own (`SO_REUSEPORT`; see the `serving` module); 0: on
    /// the runtime that calls [`Gateway::start`].
    pub serving_threads: usize,
    /// Transparent UDP listeners (the nftables `tproxy` targets; one per address family).
    pub transparent_udp: Vec<SocketAddr>,
    /// Transparent connections and UDP sessions to these destinations leave from the client's
    /// address instead of this host's (`IP_TRANSPARENT`, a non-local bind): a firewall that
    /// hands traffic to another one keeps the source that one judges (docs/gateway.md).
    pub keep_source_to: Vec<ipnet::IpNet>,
    /// Where flow records go.
    pub data_dir: PathBuf,
    /// Written into every flow record.
    pub instance: String,
    pub resolver: Resolver,
    /// PAL-5.2 default, for rules whose policy sets no `addressCheck`.
    pub address_check: AddressCheck,
    /// The SNI a CONNECT tunnel may carry.
    pub tunnel_sni: TunnelSni,
    /// What to do with an Encrypted Client Hello.
    pub ech: EchPolicy,
    /// Rate-limited lines (refused connections) go here instead of stderr.
    pub log_sink: Option<LogSink>,
    /// FW-11 / PAL-5.5 `reevaluateEstablished`: close established connections a reloaded
    /// policy denies.
    pub reevaluate_established: bool,
    /// Reload when the network files change.
    pub watch: bool,
    /// Reload on SIGHUP.
    pub sighup: bool,
    pub limits: Limits,
    pub flowlog: palisade_flowlog::Options,
    /// Listen on the frontends of the DNAT rules and forward to their translated addresses
    /// (FW-4); they follow reloads.
    pub dnat: bool,
    /// Where to listen for frontends that are not local addresses.
    pub dnat_bind: Vec<dnat::DnatBind>,
    /// On SIGTERM / SIGINT ([`Running::wait`]): how long established connections may go on
    /// before they are closed.
    pub grace_period: Duration,
    /// The DNS proxy (FW-9): where it listens and whom it asks.
    pub dns: Option<dns::DnsConfig>,
    /// Follow the policy versions of this PostgreSQL store instead of `source`'s files, which
    /// then give only the catalogs and name bindings.
    pub policy_store: Option<palisade_pgstore::Config>,
    /// Also write flow records to this PostgreSQL store.
    pub flow_store: Option<palisade_pgstore::Config>,
    /// PAL-5.3 shadow policy: a candidate network (same catalogs, bindings and `--firewall` as
    /// the live one) judged beside it; it never changes a live verdict.
    pub shadow: Option<PolicySource>,
    /// PAL-5.4 observe: the default deny of these scopes is audited only, for a window.
    pub observe: Option<observe::Observe>,
}

impl Config {
    pub fn new(source: PolicySource, data_dir: PathBuf) -> Config {
        Config {
            source,
            listen: None,
            admin: None,
            transparent: None,
            transparent_udp: vec![],
            keep_source_to: vec![],
            transparent_mode: TransparentMode::Redirect,
            serving_threads: 0,
            data_dir,
            instance: default_instance(),
            resolver: Resolver::default(),
            address_check: AddressCheck::Enforce,
            tunnel_sni: TunnelSni::Match,
            ech: EchPolicy::Deny,
            log_sink: None,
            reevaluate_established: true,
            watch: true,
            sighup: true,
            limits: Limits::default(),
            flowlog: palisade_flowlog::Options::default(),
            dnat: false,
            dnat_bind: vec![],
            grace_period: Duration::from_secs(30),
            dns: None,
            policy_store: None,
            flow_store: None,
            shadow: None,
            observe: None,
        }
    }
}

/// `<hostname>:<pid>`.
pub fn default_instance() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "gateway".into());
    format!("{host}:{}", std::process::id())
}

/// Log a line to stderr with a timestamp.
pub fn log(msg: impl AsRef<str>) {
    eprintln!("{}", log_line(msg.as_ref()));
}

fn log_line(msg: &str) -> String {
    format!("{} palisade-gateway: {msg}", format_time(SystemTime::now()))
}

/// One reason's current second for [`Gateway::log_limited`].
struct LogWindow {
    start: Instant,
    written: u32,
    suppressed: u64,
}

/// An established connection the reload re-judges.
pub(crate) struct Established {
    pub key: PacketKey,
    pub host: Option<String>,
    pub app: Option<AppProtocol>,
    /// Raised to close it: a reload that denies it, the shutdown.
    pub cancel: shutdown::Signal,
    /// Set by whatever closed it.
    pub closed_by: Mutex<Option<Closed>>,
}

/// The policy version a decision came from — its snapshot id and firewall policy name — taken
/// from the same snapshot as the verdict, so a flow record never names a version that was
/// swapped in afterwards.
#[derive(Debug, Clone, Default)]
pub struct Version {
    /// Empty when no valid policy was in force. Shared with the snapshot in force (and the
    /// policy name too): a judgement copies no text.
    pub snapshot: Arc<str>,
    pub policy: Option<Arc<str>>,
    /// PAL-5.3: the shadow policy's outcome for the same observations, when one runs.
    pub shadow: Option<Arc<Shadowed>>,
    /// PAL-5.4: the observed scope whose default deny this decision audited instead.
    pub observe: Option<Arc<str>>,
    /// FW-5: the DNS proxy's remembered addresses the decision saw, when it has one.
    pub dns: Option<dns::remembered::Epoch>,
}

/// Versions are equal when they name the same snapshot and policy; the shadow answer and the
/// observe note belong to one judgement, not to the version.
impl PartialEq for Version {
    fn eq(&self, other: &Version) -> bool {
        (&self.snapshot, &self.policy) == (&other.snapshot, &other.policy)
    }
}

impl Eq for Version {}

/// The shadow policy's answer to one judgement.
#[derive(Debug)]
pub struct Shadowed {
    pub snapshot: String,
    pub outcome: FirewallOutcome,
    /// Set by the first record built from it: a UDP session's opening and closing records
    /// share one judgement, and get one `ShadowDiff`.
    reported: AtomicBool,
}

impl Version {
    fn of(active: Option<&Active>) -> Version {
        match active {
            Some(a) => Version {
                snapshot: a.shared_id.clone(),
                policy: a.policy.clone(),
                ..Version::default()
            },
            None => Version::default(),
        }
    }
}

/// Why the gateway closed an established connection.
pub(crate) enum Closed {
    /// A reload's snapshot denies it: the new outcome and that snapshot's version.
    Reload(Box<FirewallOutcome>, Version),
    /// The grace period of a shutdown ended.
    Shutdown,
}

/// The result of a reload.
#[derive(Debug, Clone)]
pub enum ReloadOutcome {
    Applied { snapshot: String, closed: usize },
    Refused { errors: Vec<String> },
}

pub struct Gateway {
    pub config: Config,
    active: ArcSwapOption<Active>,
    /// PAL-5.3: the shadow policy in force, if any.
    shadow: ArcSwapOption<Active>,
    /// PAL-5.4: the observed scopes resolved in the live snapshot.
    observed: arc_swap::ArcSwap<Vec<observe::Scope>>,
    observe_active: Option<prometheus_client::metrics::gauge::Gauge>,
    pub metrics: Metrics,
    /// Flow records go through the log's writer thread (batched, one `fsync` per batch).
    flowlog: Writer,
    established: Mutex<HashMap<u64, Arc<Established>>>,
    next_id: AtomicU64,
    reload_lock: tokio::sync::Mutex<()>,
    pub(crate) slots: Arc<Semaphore>,
    pub(crate) source_slots: Arc<source_cap::SourceSlots>,
    pub(crate) dnat: Mutex<dnat::Listeners>,
    phase: watch::Sender<Phase>,
    in_flight: shutdown::InFlightCount,
    closed_at_shutdown: AtomicUsize,
    log_windows: Mutex<HashMap<&'static str, LogWindow>>,
    /// The DNS proxy, when configured; its remembered addresses feed every judgement.
    pub dns: Option<Arc<dns::DnsProxy>>,
    /// The policy store followed, when configured.
    pub store: Option<Arc<store::Subscription>>,
    /// The runtime that started the gateway (the serving threads have their own).
    runtime: tokio::runtime::Handle,
    flow_store: Option<flowstore::FlowStore>,
}

/// A started gateway: its bound addresses. Dropping it stops the listeners and the serving
/// threads with the connections they run ([`Running::shutdown`] drains them first).
pub struct Running {
    pub gateway: Arc<Gateway>,
    pub listen: Option<SocketAddr>,
    pub admin: Option<SocketAddr>,
    pub transparent: Option<SocketAddr>,
    /// The transparent UDP listeners' addresses.
    pub transparent_udp: Vec<SocketAddr>,
    /// The DNS proxy's address (UDP and TCP).
    pub dns: Option<SocketAddr>,
    /// The accept loops of the explicit, transparent and admin listeners.
    listeners: Vec<JoinHandle<()>>,
    /// The threads serving the explicit and transparent listeners, if on threads of their own.
    serving: serving::ServingThreads,
    /// Reload triggers (SIGHUP, file watch).
    tasks: Vec<JoinHandle<()>>,
    _watcher: Option<notify::RecommendedWatcher>,
}

impl Running {
    /// Run until SIGTERM or SIGINT, then shut down gracefully within the configured grace
    /// period ([`Running::shutdown`]); a second signal ends the grace period at once.
    pub async fn wait(mut self) -> ShutdownReport {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler");
        let why = tokio::select! {
            _ = tokio::signal::ctrl_c() => "SIGINT",
            _ = term.recv() => "SIGTERM",
        };
        let grace = self.gateway.config.grace_period;
        let again = async {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        };
        self.shutdown_by(why, grace, again).await
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        for t in self.listeners.iter().chain(&self.tasks) {
            t.abort();
        }
        let mut dnat = self.gateway.dnat.lock().unwrap_or_else(|p| p.into_inner());
        for (_, (_, t)) in std::mem::take(&mut *dnat) {
            t.abort();
        }
    }
}

/// An IPv4-mapped IPv6 address as the IPv4 address it is (a dual-stack listener's peers), so
/// rules and records see one form.
pub(crate) fn canonical(a: SocketAddr) -> SocketAddr {
    SocketAddr::new(a.ip().to_canonical(), a.port())
}

/// How long a start waits for the store's first version before opening the listeners.
const STORE_START_WAIT: Duration = Duration::from_secs(10);

/// The outcome used when no valid policy is loaded: fail closed.
pub fn no_policy_outcome() -> FirewallOutcome {
    FirewallOutcome {
        pass: FirewallPass::FirewallDefault,
        allowed: false,
        rule: None,
        reason: "NoValidPolicy",
        translated: None,
        snat: false,
        audit: vec![],
        detail: Some("no valid policy is loaded; the gateway fails closed".into()),
    }
}

impl Gateway {
    /// Load the policy, open the flow log, bind the listeners and start serving. An invalid
    /// initial policy does not stop the start: the gateway then fails closed until a reload
    /// succeeds.
    pub async fn start(config: Config) -> io::Result<Running> {
        let flowlog = Writer::spawn(Arc::new(FlowLog::open(
            &config.data_dir,
            config.flowlog.clone(),
        )?))?;
        let mut metrics = Metrics::new();
        if config.policy_store.is_some() {
            metrics.register_policy_store();
        }
        let observe_active = config.observe.as_ref().map(|_| metrics.register_observe());
        let (flow_store, flow_writer) = match config.flow_store.clone() {
            Some(c) => {
                metrics.register_flow_store();
                let (s, w) = flowstore::FlowStore::new(c);
                (Some(s), Some(w))
            }
            None => (None, None),
        };
        let gw = Arc::new(Gateway {
            active: ArcSwapOption::empty(),
            shadow: ArcSwapOption::empty(),
            observed: Default::default(),
            observe_active,
            metrics,
            flowlog,
            established: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(1),
            reload_lock: tokio::sync::Mutex::new(()),
            slots: Arc::new(Semaphore::new(config.limits.max_connections)),
            source_slots: source_cap::SourceSlots::new(config.limits.max_connections_per_source),
            dnat: Mutex::new(Default::default()),
            phase: watch::Sender::new(Phase::Serving),
            in_flight: Default::default(),
            closed_at_shutdown: AtomicUsize::new(0),
            log_windows: Mutex::new(HashMap::new()),
            dns: config.dns.clone().map(|c| Arc::new(dns::DnsProxy::new(c))),
            store: config
                .policy_store
                .clone()
                .map(|c| Arc::new(store::Subscription::new(c))),
            flow_store,
            runtime: tokio::runtime::Handle::current(),
            config,
        });
        // Filled in as the parts start: a step that fails drops it, and its `Drop` stops
        // what was started before.
        let mut running = Running {
            gateway: gw.clone(),
            listen: None,
            admin: None,
            transparent: None,
            transparent_udp: vec![],
            dns: None,
            listeners: vec![],
            serving: Default::default(),
            tasks: vec![],
            _watcher: None,
        };
        let (listeners, tasks) = (&mut running.listeners, &mut running.tasks);
        if let Some(w) = flow_writer {
            tasks.push(tokio::spawn(w.run(gw.clone())));
        }
        match gw.store.clone() {
            Some(sub) => {
                // The first version is fetched before the listeners open (a bounded wait: with
                // the store down the gateway starts failing closed and follows it when it is up).
                tasks.push(tokio::spawn(store::follow(gw.clone(), sub.clone())));
                let waited = Instant::now();
                while sub.enforced() == 0 && waited.elapsed() < STORE_START_WAIT {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                match gw.active() {
                    Some(a) => log(format!(
                        "policy {} (store version {}) in force",
                        a.id(),
                        sub.enforced()
                    )),
                    None => log(
                        "no valid policy from the store yet: failing closed until one is applied",
                    ),
                }
            }
            None => match gw.reload("start").await {
                ReloadOutcome::Applied { snapshot, .. } => {
                    log(format!("policy {snapshot} in force"))
                }
                ReloadOutcome::Refused { .. } => {
                    log("no valid policy: failing closed until a reload succeeds")
                }
            },
        }
        if let Some(o) = &gw.config.observe {
            tasks.push(tokio::spawn(observe_window(gw.clone(), o.clone())));
        }
        let bind = |addr: SocketAddr| -> io::Result<TcpListener> {
            let std = std::net::TcpListener::bind(addr)?;
            std.set_nonblocking(true)?;
            TcpListener::from_std(std)
        };
        let admin = gw.config.admin.map(bind).transpose()?;
        // Every listener is bound before any accept loop starts.
        let tproxy = gw.config.transparent_mode == TransparentMode::Tproxy;
        let tcp = [
            (gw.config.listen, proxy::Mode::Explicit, false),
            (gw.config.transparent, proxy::Mode::Transparent, tproxy),
        ];
        let (mut on_runtime, mut groups) = (vec![], vec![]);
        let (mut listen_addr, mut transparent_addr) = (None, None);
        for (addr, mode, transparent) in tcp {
            let Some(addr) = addr else { continue };
            let bound = if gw.config.serving_threads > 0 {
                let (bound, group) =
                    serving::bind_group(addr, gw.config.serving_threads, transparent)?;
                groups.push((mode, group));
                bound
            } else {
                let l = match transparent {
                    true => udp::bind_tproxy_tcp(addr)?,
                    false => bind(addr)?,
                };
                let bound = l.local_addr()?;
                on_runtime.push((mode, l));
                bound
            };
            match mode {
                proxy::Mode::Explicit => listen_addr = Some(bound),
                _ => transparent_addr = Some(bound),
            }
        }
        let admin_addr = admin.as_ref().and_then(|l| l.local_addr().ok());
        if let Some(a) = listen_addr {
            log(format!("explicit proxy on {a}"));
        }
        if let Some(a) = transparent_addr {
            log(format!("transparent listener on {a}"));
        }
        for (mode, l) in on_runtime {
            listeners.push(tokio::spawn(proxy::accept_loop(gw.clone(), l, mode)));
        }
        let mut transparent_udp = vec![];
        for (bound, sock) in udp::start(&gw)? {
            transparent_udp.push(bound);
            listeners.push(tokio::spawn(udp::tproxy_loop(gw.clone(), sock)));
        }
        let dns_addr = match &gw.dns {
            Some(d) => {
                let (addr, loops) = dns::start(gw.clone(), d.clone())?;
                log(format!("DNS proxy on {addr} (UDP and TCP)"));
                // Stopped at once on shutdown: a query holds no connection to drain.
                tasks.extend(loops);
                Some(addr)
            }
            None => None,
        };
        if let Some(l) = admin {
            log(format!("admin (metrics, reload) on {}", l.local_addr()?));
            listeners.push(tokio::spawn(admin::serve(gw.clone(), l)));
        }
        if gw.config.sighup {
            let g = gw.clone();
            let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
            tasks.push(tokio::spawn(async move {
                while hup.recv().await.is_some() {
                    g.reload("SIGHUP").await;
                }
            }));
        }
        let watcher = if gw.config.watch {
            match watch_files(gw.clone()) {
                Ok((w, t)) => {
                    tasks.push(t);
                    Some(w)
                }
                Err(e) => {
                    log(format!(
                        "file watch unavailable ({e}); reload with SIGHUP or POST /reload"
                    ));
                    None
                }
            }
        } else {
            None
        };
        // Last, so that nothing after it can fail and leave its threads accepting.
        let serving = serving::ServingThreads::start(&gw, groups).await?;
        running.listen = listen_addr;
        running.admin = admin_addr;
        running.transparent = transparent_addr;
        running.transparent_udp = transparent_udp;
        running.dns = dns_addr;
        running.serving = serving;
        running._watcher = watcher;
        Ok(running)
    }

    /// The snapshot in force, if any.
    pub fn active(&self) -> Option<Arc<Active>> {
        self.active.load_full()
    }

    /// Resolve a name: the bindings of the policy in force; then, with the DNS proxy, the
    /// firewall's resolver and what the proxy remembers (FW-9: one resolver for clients, FQDN
    /// rules and PAL-5.2); else the configured resolver.
    pub async fn resolve(
        &self,
        name: &str,
    ) -> Result<Vec<std::net::IpAddr>, resolver::ResolveError> {
        let servers = match self.active.load().as_ref() {
            Some(active) => {
                if let Some(ips) = active
                    .bindings
                    .get(&palisade_model::bindings::normalize(name))
                {
                    return Ok(ips.clone());
                }
                active.firewall().dns_servers.clone()
            }
            None => vec![],
        };
        match &self.dns {
            Some(dns) if name.parse::<std::net::IpAddr>().is_err() => {
                // On the gateway's runtime: hickory keeps an upstream connection's task on the
                // runtime that opened it, and a serving thread's runtime ends before the
                // gateway does. (The lookup's state then takes no room in the connection's.)
                let (dns, name) = (dns.clone(), name.to_owned());
                let lookup = async move { dns.resolve(&name, &servers).await };
                let ips = self.runtime.spawn(lookup).await.unwrap_or_default();
                if ips.is_empty() {
                    Err(resolver::ResolveError::NotFound)
                } else {
                    Ok(ips)
                }
            }
            _ => self.config.resolver.resolve(name).await,
        }
    }

    /// Evaluate `input` with the addresses the DNS proxy remembers (FW-5).
    fn evaluate(&self, active: &Active, input: &FirewallInput) -> FirewallOutcome {
        self.evaluate_at(active, input).0
    }

    /// [`Gateway::evaluate`], and the remembered addresses' epoch it saw (FW-5).
    fn evaluate_at(
        &self,
        active: &Active,
        input: &FirewallInput,
    ) -> (FirewallOutcome, Option<dns::remembered::Epoch>) {
        match &self.dns {
            Some(dns) => {
                let remembered = dns.remembered();
                let outcome = active.firewall().evaluate_with(input, &remembered);
                (outcome, Some(remembered.epoch()))
            }
            None => (active.firewall().evaluate(input), None),
        }
    }

    /// Compile the network beside the running snapshot; swap only if valid (PAL-5.5); then
    /// re-judge established connections (FW-11).
    pub async fn reload(self: &Arc<Self>, trigger: &str) -> ReloadOutcome {
        let _serial = self.reload_lock.lock().await;
        if self.phase() != Phase::Serving {
            return ReloadOutcome::Refused {
                errors: vec!["the gateway is shutting down".into()],
            };
        }
        let (source, from_store) = match &self.store {
            None => (self.config.source.clone(), None),
            Some(sub) => match sub.document() {
                Some(doc) => (
                    policy::from_store(&self.config.source, &doc),
                    Some(doc.version),
                ),
                None => {
                    return ReloadOutcome::Refused {
                        errors: vec!["no policy version fetched from the store yet".into()],
                    }
                }
            },
        };
        let loaded = tokio::task::spawn_blocking(move || policy::load(&source))
            .await
            .unwrap_or_else(|e| Err(vec![format!("policy compilation panicked: {e}")]));
        self.reload_shadow(trigger).await;
        match loaded {
            Err(errors) => {
                self.metrics
                    .reloads
                    .get_or_create(&OutcomeLabels {
                        outcome: "refused".into(),
                    })
                    .inc();
                let keeping = match self.active() {
                    Some(a) => format!("keeping policy {}", a.id()),
                    None => "no policy in force: failing closed".to_string(),
                };
                log(format!(
                    "reload ({trigger}) refused, {} error(s); {keeping}:",
                    errors.len()
                ));
                for e in &errors {
                    log(format!("  {e}"));
                }
                ReloadOutcome::Refused { errors }
            }
            Ok(active) => {
                for w in &active.warnings {
                    log(format!("warning: {w}"));
                }
                if self.dns.is_none() && active.firewall().network_fqdns().next().is_some() {
                    log("warning: network rules name destination FQDNs but the DNS proxy is off \
                         (--dns): they match only the addresses of --resolve / --hosts-file (FW-5, FW-9)");
                }
                if let Some(o) = &self.config.observe {
                    let (scopes, unknown) = o.resolve(&active.snapshot);
                    for u in unknown {
                        log(format!(
                            "warning: --observe {u}: no prefix, subnet, ASG or IP group of that name"
                        ));
                    }
                    self.observed.store(Arc::new(scopes));
                }
                let active = Arc::new(active);
                let id = active.id().to_string();
                let previous = self.active.swap(Some(active.clone()));
                self.metrics.policy_loaded.set(1);
                if let (Some(sub), Some(v)) = (&self.store, from_store) {
                    sub.set_enforced(v);
                    self.metrics.policy_store_version.set(v);
                }
                self.metrics
                    .reloads
                    .get_or_create(&OutcomeLabels {
                        outcome: "applied".into(),
                    })
                    .inc();
                if self.config.dnat {
                    dnat::reconcile(self, active.firewall());
                }
                let changed = previous.as_ref().is_none_or(|p| p.id() != id);
                let closed = if self.config.reevaluate_established && changed {
                    self.rejudge(&active)
                } else {
                    0
                };
                log(format!(
                    "reload ({trigger}) applied: policy {id} (firewall {}){}",
                    active.firewall().name,
                    if closed > 0 {
                        format!(", closed {closed} established connection(s) it denies")
                    } else {
                        String::new()
                    }
                ));
                ReloadOutcome::Applied {
                    snapshot: id,
                    closed,
                }
            }
        }
    }

    fn rejudge(&self, active: &Arc<Active>) -> usize {
        let mut closed = 0;
        for e in self.established_list() {
            let input = FirewallInput {
                key: e.key,
                host: e.host.as_deref(),
                app_protocol: e.app,
            };
            let outcome = self.evaluate(active, &input);
            if !outcome.allowed {
                *e.closed_by.lock().unwrap_or_else(|p| p.into_inner()) =
                    Some(Closed::Reload(Box::new(outcome), Version::of(Some(active))));
                e.cancel.raise();
                self.metrics.closed_on_reload.inc();
                closed += 1;
            }
        }
        closed
    }

    /// Ask the policy in force. Returns the outcome and the deciding snapshot's id.
    pub fn judge(&self, input: &FirewallInput) -> (FirewallOutcome, Version) {
        let start = Instant::now();
        let active = self.active.load();
        let (mut outcome, dns) = match active.as_ref() {
            Some(a) => self.evaluate_at(a, input),
            None => (no_policy_outcome(), None),
        };
        self.metrics
            .decision_seconds
            .observe(start.elapsed().as_secs_f64());
        let mut version = Version::of(active.as_deref());
        version.dns = dns;
        if self.config.observe.is_some() && observe::is_default_deny(&outcome) {
            version.observe = self.observed_scope(input.key.src);
            if let Some(scope) = &version.observe {
                observe::audit_deny(&mut outcome, scope);
            }
        }
        // Off the decision's clock: the shadow only watches.
        if let Some(shadow) = self.shadow.load().as_ref() {
            version.shadow = Some(Arc::new(Shadowed {
                snapshot: shadow.id().to_string(),
                outcome: self.evaluate(shadow, input),
                reported: AtomicBool::new(false),
            }));
        }
        (outcome, version)
    }

    /// PAL-5.4: the observed scope of `source`, while the window is open.
    fn observed_scope(&self, source: IpAddr) -> Option<Arc<str>> {
        let o = self.config.observe.as_ref()?;
        if !o.open_at(SystemTime::now()) {
            return None;
        }
        observe::scope_of(&self.observed.load(), source).map(Arc::from)
    }

    /// Load the shadow network beside the live one (PAL-5.3); a bad one is refused and the
    /// previous shadow, if any, stays. Live verdicts are never touched here.
    async fn reload_shadow(&self, trigger: &str) {
        let Some(source) = self.config.shadow.clone() else {
            return;
        };
        let loaded = tokio::task::spawn_blocking(move || policy::load(&source))
            .await
            .unwrap_or_else(|e| Err(vec![format!("policy compilation panicked: {e}")]));
        match loaded {
            Ok(shadow) => {
                let id = shadow.id().to_string();
                self.shadow.store(Some(Arc::new(shadow)));
                log(format!(
                    "shadow policy {id} loaded ({trigger}): decisions are also judged against it; differences are logged as ShadowDiff"
                ));
            }
            Err(errors) => {
                let keeping = match self.shadow.load().as_ref() {
                    Some(s) => format!("keeping shadow {}", s.id()),
                    None => "no shadow policy".to_string(),
                };
                log(format!(
                    "shadow policy refused ({trigger}), {} error(s); live policy unchanged, {keeping}:",
                    errors.len()
                ));
                for e in &errors {
                    log(format!("  {e}"));
                }
            }
        }
    }

    /// The version in force now, for the gateway's own observation denies (they are not
    /// decided by the policy, but are recorded against the version that was running).
    pub fn version(&self) -> Version {
        Version::of(self.active.load().as_deref())
    }

    /// Whether `v` names the policy in force now (compared without building a [`Version`]).
    pub(crate) fn in_force(&self, v: &Version) -> bool {
        match self.active.load().as_deref() {
            Some(a) => a.shared_id == v.snapshot && a.policy == v.policy,
            None => v.snapshot.is_empty(),
        }
    }

    /// Whether judging again now would repeat a judgement made under `v` for the same flow:
    /// the policy in force is the same, no shadow policy was or is in force (its answer belongs
    /// to one judgement), the default deny was not observed (PAL-5.4's window closes by the
    /// clock) and the DNS proxy's remembered addresses (FW-5) neither grew nor expired since.
    pub(crate) fn judgement_holds(&self, v: &Version) -> bool {
        self.in_force(v)
            && v.shadow.is_none()
            && self.shadow.load().is_none()
            && v.observe.is_none()
            && match (&self.dns, &v.dns) {
                (None, None) => true,
                (Some(dns), Some(epoch)) => dns.still_at(epoch),
                // Judged without a policy (no evaluation), or the proxy came since.
                _ => false,
            }
    }

    pub(crate) fn established_list(&self) -> Vec<Arc<Established>> {
        self.established
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect()
    }

    pub(crate) fn register(&self, e: Arc<Established>) -> u64 {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        self.established
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id, e.clone());
        // Registered after the shutdown listed what to close: close it here.
        if self.phase() == Phase::Closing {
            self.close_for_shutdown(&e);
        }
        id
    }

    pub(crate) fn unregister(&self, id: u64) {
        self.established
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&id);
    }

    /// The DNAT frontends being listened on.
    pub fn dnat_listeners(&self) -> Vec<dnat::DnatListener> {
        self.dnat
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(&(transport, frontend), (bound, _))| dnat::DnatListener {
                transport,
                frontend,
                bound: *bound,
            })
            .collect()
    }

    /// Connections a client address holds now (its per-source count).
    pub fn source_connections(&self, source: IpAddr) -> usize {
        self.source_slots.held(source)
    }

    pub fn established_count(&self) -> usize {
        self.established
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .len()
    }

    /// Log a line for `reason`, at most [`LOG_LINES_PER_SECOND`] per second and reason; the
    /// lines dropped are counted and reported in one line when the reason is next logged. The
    /// flow record, not this line, is the account of each connection.
    pub fn log_limited(&self, reason: &'static str, msg: impl AsRef<str>) {
        let now = Instant::now();
        let mut lines = vec![];
        {
            let mut windows = self.log_windows.lock().unwrap_or_else(|p| p.into_inner());
            let w = windows.entry(reason).or_insert(LogWindow {
                start: now,
                written: 0,
                suppressed: 0,
            });
            if now.duration_since(w.start) >= Duration::from_secs(1) {
                if w.suppressed > 0 {
                    lines.push(format!(
                        "{reason}: suppressed {} line(s) in {:.1}s (at most {LOG_LINES_PER_SECOND}/s; every connection has its flow record)",
                        w.suppressed,
                        now.duration_since(w.start).as_secs_f64()
                    ));
                }
                *w = LogWindow {
                    start: now,
                    written: 0,
                    suppressed: 0,
                };
            }
            if w.written < LOG_LINES_PER_SECOND {
                w.written += 1;
                lines.push(msg.as_ref().to_string());
            } else {
                w.suppressed += 1;
            }
        }
        for l in lines {
            self.write_log(&l);
        }
    }

    fn write_log(&self, msg: &str) {
        match &self.config.log_sink {
            Some(sink) => (sink.0)(&log_line(msg)),
            None => log(msg),
        }
    }

    /// Report what [`Gateway::log_limited`] suppressed and has not reported yet (at shutdown).
    pub(crate) fn flush_suppressed(&self) {
        let mut windows = self.log_windows.lock().unwrap_or_else(|p| p.into_inner());
        for (reason, w) in windows.iter_mut() {
            if w.suppressed > 0 {
                self.write_log(&format!(
                    "{reason}: suppressed {} line(s) in the last {:.1}s",
                    w.suppressed,
                    w.start.elapsed().as_secs_f64()
                ));
                w.suppressed = 0;
            }
        }
    }

    /// The first denial of a name from a scope (the source's subnet): counted and logged once.
    fn alert_new_denied_name(&self, r: &FlowRecordRef<'_>) {
        if r.action != "Deny" {
            return;
        }
        let Some(name) = r.tunnel_name.or(r.name) else {
            return;
        };
        let scope = self
            .active()
            .zip(r.source_ip)
            .and_then(|(a, ip)| {
                let s = a.snapshot.locate(ip).subnet?;
                Some(a.snapshot.subnet(s).name.clone())
            })
            .unwrap_or_else(|| "outside".into());
        match self.metrics.denied_name(&scope, name) {
            // Rate-limited like refusals: a client trying random names must not flood the log;
            // the counter still counts every one.
            metrics::Novelty::New => self.log_limited(
                "NewDeniedName",
                format!("new denied name from {scope}: {name} ({})", r.rule_label()),
            ),
            metrics::Novelty::Full { first: true } => self.write_log(&format!(
                "new denied names: {} remembered, later names are not reported",
                metrics::DeniedNames::CAP
            )),
            _ => {}
        }
    }

    /// Count the decision and append its flow record durably; returns once it is on disk. A
    /// record carrying a shadow difference is written as it would be without a shadow, then
    /// again as the `ShadowDiff` record (PAL-5.3).
    /// Boxed: the records being written are large, and every connection's state would
    /// otherwise keep room for them from accept to close.
    pub fn record(&self, mut r: FlowRecord) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        Box::pin(async move {
            if let Some(diff) = r.shadow.take() {
                let shadow = FlowRecord {
                    action: "ShadowDiff".into(),
                    shadow: Some(diff),
                    ..r.clone()
                };
                self.append(r).await;
                self.append(shadow).await;
            } else {
                self.append(r).await;
            }
        })
    }

    /// [`Gateway::record`] for a record nobody is answered after (an allowed connection's end
    /// record): returns at once, and `until_durable`, the connection's place in flight, is
    /// given up only once the record is on disk, so a drain still waits for it. The
    /// connection's task then ends with its sockets instead of being woken again by the writer.
    pub(crate) fn record_detached(&self, mut r: FlowRecord, until_durable: InFlight) {
        if let Some(diff) = r.shadow.take() {
            let shadow = FlowRecord {
                action: "ShadowDiff".into(),
                shadow: Some(diff),
                ..r.clone()
            };
            let gw = until_durable.gateway().clone();
            self.submit(&r.borrowed(), false, Box::new(move |res| gw.written(res)));
            // Batches are committed in order: the second durable means both are.
            self.submit(
                &shadow.borrowed(),
                false,
                Box::new(move |res| until_durable.gateway().written(res)),
            );
        } else {
            self.record_ref_detached(&r.borrowed(), until_durable);
        }
    }

    /// [`Gateway::record_detached`] for a record borrowed from the connection's state (it
    /// carries no shadow difference): encoded here, nothing of it copied.
    pub(crate) fn record_ref_detached(&self, r: &FlowRecordRef<'_>, until_durable: InFlight) {
        self.submit(
            r,
            false,
            Box::new(move |res| until_durable.gateway().written(res)),
        );
    }

    async fn append(&self, r: FlowRecord) {
        let (done, durable) = tokio::sync::oneshot::channel();
        self.submit(
            &r.borrowed(),
            true,
            Box::new(move |res| {
                let _ = done.send(res);
            }),
        );
        let res = durable
            .await
            .unwrap_or_else(|_| Err(io::Error::other("the flow log writer has stopped")));
        self.written(res);
    }

    /// Count and log a record that could not be written.
    fn written(&self, res: io::Result<()>) {
        if let Err(e) = res {
            self.metrics.flowlog_errors.inc();
            log(format!("flow record not written: {e}"));
        }
    }

    /// Count the decision, offer the record to the store, and queue it for the flow log;
    /// `done` runs on the writer thread once it is durable (or failed). A record nobody is
    /// answered after (not `awaited`) may wait longer to share its write.
    fn submit(&self, r: &FlowRecordRef<'_>, awaited: bool, done: palisade_flowlog::Done) {
        self.metrics.count_decision(&metrics::Decision {
            action: r.action,
            layer: r.layer,
            group: r.rule_collection_group,
            collection: r.rule_collection.unwrap_or(""),
            rule: r.rule,
            decided_by: r.decided_by,
        });
        self.alert_new_denied_name(r);
        if let Some(s) = &self.flow_store {
            s.offer(r, &self.metrics);
        }
        if awaited {
            self.flowlog.submit_ref(r, done);
        } else {
            self.flowlog.submit_ref_unawaited(r, done);
        }
    }
}

/// Fill a flow record from a policy outcome.
pub fn outcome_record(outcome: &FirewallOutcome, version: &Version) -> FlowRecord {
    let parts = RecordParts::of(outcome);
    let mut r = outcome_view(outcome, version, &parts).to_record();
    r.shadow = version
        .shadow
        .as_deref()
        .and_then(|s| shadow_diff(outcome, version.observe.is_some(), s));
    r
}

/// What a flow record of an outcome shows that the outcome does not hold as is: the time of
/// the record, the audit entries, the translated address.
pub(crate) struct RecordParts {
    time: Timestamp,
    audit_rules: Vec<AuditEntry>,
    translated: Option<SocketAddr>,
}

impl RecordParts {
    pub(crate) fn of(outcome: &FirewallOutcome) -> RecordParts {
        RecordParts {
            time: Timestamp(SystemTime::now()),
            // Empty, and so not allocated, unless audit-mode rules matched.
            audit_rules: outcome
                .audit_matches()
                .into_iter()
                .map(|a| AuditEntry {
                    layer: a.layer.into(),
                    rule: a.rule,
                    access: a.access.into(),
                })
                .collect(),
            translated: outcome.translated.map(|(ip, p)| SocketAddr::new(ip, p)),
        }
    }
}

/// [`outcome_record`] borrowed from the outcome, its version and `parts` (no shadow
/// difference: that one is reported once per judgement, by the owned record).
pub(crate) fn outcome_view<'a>(
    outcome: &'a FirewallOutcome,
    version: &'a Version,
    parts: &'a RecordParts,
) -> FlowRecordRef<'a> {
    let rule = outcome.rule.as_deref();
    FlowRecordRef {
        time: Shown(&parts.time),
        instance: "",
        snapshot: &version.snapshot,
        mode: "",
        protocol: "",
        source_ip: None,
        source_port: 0,
        destination_ip: None,
        destination_port: 0,
        name: None,
        tunnel_name: None,
        action: if outcome.pass == FirewallPass::FirewallDnat {
            "Dnat"
        } else if outcome.allowed {
            "Allow"
        } else {
            "Deny"
        },
        layer: outcome.pass.name(),
        policy: rule
            .map(|r| r.resource.as_str())
            .or(version.policy.as_deref()),
        rule_collection_group: rule.and_then(|r| r.rule_collection_group.as_deref()),
        rule_collection: rule.map(|r| r.rule_collection.as_str()),
        rule: rule.map(|r| r.rule.as_str()),
        priority: rule.map(|r| r.rule_collection_priority),
        decided_by: match rule {
            Some(_) => None,
            None => Some(decided_by(outcome)),
        },
        reason: outcome.reason,
        detail: outcome.detail.as_ref().map(|d| Shown(d)),
        audit: !outcome.audit.is_empty() || version.observe.is_some(),
        audit_rules: &parts.audit_rules,
        observe: version.observe.as_deref(),
        shadow: None,
        translated: parts.translated.as_ref().map(|t| Shown(t)),
        translated_source: None,
        bytes_sent: 0,
        bytes_received: 0,
        duration_ms: 0,
    }
}

/// PAL-5.3: the live and shadow verdicts when they differ, once per judgement. Only the policy's
/// own verdicts are compared: a gateway check (PAL-5.2, a malformed request) that refused the
/// flow is no difference between policies; an observed default deny counts as the deny it is.
fn shadow_diff(live: &FirewallOutcome, observed: bool, shadow: &Shadowed) -> Option<ShadowDiff> {
    if live.rule.is_none() && decided_by(live) != "default" {
        return None;
    }
    let verdict = |o: &FirewallOutcome, allowed: bool| {
        let action = match (o.pass, allowed) {
            (FirewallPass::FirewallDnat, _) => "Dnat",
            (_, true) => "Allow",
            (_, false) => "Deny",
        };
        let rule = o
            .rule
            .as_ref()
            .map_or_else(|| "default".into(), |r| r.path());
        (action, rule)
    };
    let (live_action, live_rule) = verdict(live, live.allowed && !observed);
    let (shadow_action, shadow_rule) = verdict(&shadow.outcome, shadow.outcome.allowed);
    if live_action == shadow_action || shadow.reported.swap(true, Ordering::Relaxed) {
        return None;
    }
    Some(ShadowDiff {
        live_action: live_action.into(),
        live_rule,
        shadow_action: shadow_action.into(),
        shadow_rule,
        shadow_snapshot: shadow.snapshot.clone(),
    })
}

/// PAL-5.4: say when the observe window opens and ends (the startup line, the gauge).
async fn observe_window(gw: Arc<Gateway>, o: observe::Observe) {
    let until = o
        .until
        .map(|u| format!("until {}", format_time(u)))
        .unwrap_or_else(|| "until the gateway stops".into());
    let set = |v: i64| {
        if let Some(g) = &gw.observe_active {
            g.set(v);
        }
    };
    if !o.open_at(SystemTime::now()) {
        log(format!(
            "observe {}: the window ended already ({until}); default denies are enforced",
            o.scopes.join(",")
        ));
        set(0);
        return;
    }
    log(format!(
        "OBSERVE ON for {} {until}: their default denies are audited only and the flows allowed (PAL-5.4); every affected record says `observe`",
        o.scopes.join(",")
    ));
    set(1);
    if let Some(u) = o.until {
        let left = u.duration_since(SystemTime::now()).unwrap_or_default();
        tokio::time::sleep(left).await;
        set(0);
        log(format!(
            "observe {}: the window ended; default denies are enforced",
            o.scopes.join(",")
        ));
    }
}

/// What decided an outcome no rule decided, for the record's `decided_by`.
fn decided_by(outcome: &FirewallOutcome) -> &'static str {
    match outcome.reason {
        "SniAddressMismatch" | "HostAddressMismatch" | "NameResolutionFailed" => "address-check",
        "TunnelSniMismatch" | "TunnelHostMismatch" => "tunnel-check",
        "MalformedRequest" | "RequestHeadTooLarge" | "AmbiguousRequest" => "request-check",
        "HandshakeTimeout" | "UnparseableClientHello" | "EncryptedClientHello" => "handshake-check",
        "NoValidPolicy" => "no-policy",
        // No rule matched (`SniMissing` is the default action for a flow without a name).
        "DefaultAction" | "SniMissing" => "default",
        _ => "gateway",
    }
}

/// Reload on changes to the network files, debounced (editors write twice).
fn watch_files(gw: Arc<Gateway>) -> notify::Result<(notify::RecommendedWatcher, JoinHandle<()>)> {
    use notify::{RecursiveMode, Watcher};
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<()>();
    let shadow = gw.config.shadow.as_ref().map(|s| s.source.watched_paths());
    let paths: Vec<PathBuf> = gw
        .config
        .source
        .source
        .watched_paths()
        .iter()
        .chain(shadow.iter().flatten())
        .map(|p| std::fs::canonicalize(p).unwrap_or_else(|_| p.clone()))
        .collect();
    let watched = paths.clone();
    let mut watcher = notify::recommended_watcher(move |ev: notify::Result<notify::Event>| {
        let Ok(ev) = ev else { return };
        if matches!(ev.kind, notify::EventKind::Access(_)) {
            return;
        }
        if ev
            .paths
            .iter()
            .any(|p| watched.iter().any(|w| p.starts_with(w) || p == w))
        {
            let _ = tx.send(());
        }
    })?;
    for p in &paths {
        if p.is_dir() {
            watcher.watch(p, RecursiveMode::Recursive)?;
        } else {
            // Watch the folder: editors replace files by rename.
            let dir = p.parent().map(PathBuf::from).unwrap_or_else(|| ".".into());
            watcher.watch(&dir, RecursiveMode::NonRecursive)?;
        }
    }
    let task = tokio::spawn(async move {
        while rx.recv().await.is_some() {
            // Debounce: wait for 300 ms of quiet.
            loop {
                match tokio::time::timeout(Duration::from_millis(300), rx.recv()).await {
                    Ok(Some(())) => continue,
                    Ok(None) => return,
                    Err(_) => break,
                }
            }
            gw.reload("file change").await;
        }
    });
    Ok((watcher, task))
}
