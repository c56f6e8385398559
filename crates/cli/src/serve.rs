//! `palisade gateway` (the live egress firewall, crate `palisade-gateway`) and `palisade logs`
//! (its flow records, crate `palisade-flowlog`). Arguments and presentation only.

use crate::SourceArgs;
use clap::ValueEnum;
use palisade_flowlog::{parse_since, query, FlowRecord, Query};
use palisade_gateway::dnat::parse_dnat_bind;
use palisade_gateway::dns::DnsConfig;
use palisade_gateway::observe::Observe;
use palisade_gateway::policy::PolicySource;
use palisade_gateway::resolver::Resolver;
use palisade_gateway::{AddressCheck, Config, EchPolicy, Gateway, TransparentMode, TunnelSni};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

#[derive(Clone, Copy, ValueEnum)]
pub enum AddressCheckArg {
    Enforce,
    Audit,
    Off,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum EchArg {
    Deny,
    OuterSni,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum TunnelSniArg {
    Match,
    Allowed,
}

/// Run the firewall of a network on real traffic.
#[derive(clap::Args)]
#[command(mut_arg("network", |a| a.required(false).required_unless_present("policy_store")))]
pub struct GatewayArgs {
    /// The network, as `palisade trace` takes it (reloaded on change of any of its files,
    /// SIGHUP, or POST /reload). Its name bindings also serve the gateway's resolver.
    #[command(flatten)]
    source: SourceArgs,
    /// The firewall to run, when the network has several.
    #[arg(long)]
    firewall: Option<String>,
    /// Explicit proxy listener (HTTP absolute-form and CONNECT); `none` to disable.
    #[arg(long, default_value = "127.0.0.1:3128")]
    listen: String,
    /// Admin listener: GET /metrics, POST /reload, GET /status, GET /healthz. Keep on loopback.
    #[arg(long, default_value = "127.0.0.1:9180")]
    admin: String,
    /// Transparent listener: the target of an nftables `redirect` (see docs/gateway.md).
    #[arg(long)]
    transparent: Option<SocketAddr>,
    /// How TCP reaches the transparent listener: `redirect` (nftables NAT, original destination
    /// from conntrack) or `tproxy` (nftables `tproxy`, no NAT; needs CAP_NET_ADMIN).
    #[arg(long, value_enum, default_value = "redirect")]
    transparent_mode: TransparentModeArg,
    /// Transparent UDP listener: the target of an nftables `tproxy` (repeatable, one per
    /// address family; needs CAP_NET_ADMIN; see docs/gateway.md).
    #[arg(long, value_name = "IP:PORT")]
    transparent_udp: Vec<SocketAddr>,
    /// Transparent connections and UDP sessions to destinations in this prefix leave from the
    /// client's address, not this host's (repeatable; needs CAP_NET_ADMIN and a `socket
    /// transparent` rule for the replies, see docs/gateway.md): for a firewall that hands
    /// traffic to another firewall, which judges the client's address.
    #[arg(long, value_name = "PREFIX", value_parser = keep_source_prefix)]
    keep_source_to: Vec<ipnet::IpNet>,
    /// Where flow records are written (default: $PALISADE_DATA, else ~/.local/state/palisade).
    #[arg(long)]
    data: Option<PathBuf>,
    /// Resolve only through --resolve / --hosts-file, never the system resolver.
    #[arg(long)]
    no_system_resolver: bool,
    /// PAL-5.2: SNI/Host must resolve to the dialed address; the default for rules whose
    /// policy sets no `addressCheck`.
    #[arg(long, value_enum, default_value = "enforce")]
    address_check: AddressCheckArg,
    /// The SNI (or Host) inside a `CONNECT name:port` tunnel: `match` = it must be the CONNECT
    /// name (anything else is denied as domain fronting); `allowed` = another name must be
    /// allowed by the policy itself and resolve to the dialed address.
    #[arg(long, value_enum, default_value = "match")]
    tunnel_sni: TunnelSniArg,
    /// A ClientHello with Encrypted Client Hello (TLS, CONNECT tunnels, QUIC): `deny` = the
    /// real name is hidden, fail closed; `outer-sni` = judge the public outer name (the flow
    /// record's detail says `ech`).
    #[arg(long, value_enum, default_value = "deny")]
    ech: EchArg,
    /// Keep established connections a reloaded policy denies (default: close them, FW-11).
    #[arg(long)]
    keep_established: bool,
    /// Do not reload when the network files change.
    #[arg(long)]
    no_watch: bool,
    /// Instance name written into flow records (default: hostname:pid).
    #[arg(long)]
    instance: Option<String>,
    #[arg(long, default_value_t = 10_000)]
    max_connections: usize,
    /// Connections one client address may hold at once, so one client cannot take every
    /// slot of --max-connections.
    #[arg(long, default_value_t = 1_000)]
    max_connections_per_source: usize,
    /// Threads that serve connections (default: one per CPU this process may run on). Each
    /// serves the explicit and transparent listeners' connections with a listener of its own
    /// (SO_REUSEPORT); as many more run the rest (DNS proxy, UDP, DNAT, admin). Fewer leave
    /// CPUs to the host's own work, as a gateway on an application server should.
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..=1024))]
    worker_threads: Option<u16>,
    /// When a flow record counts as written: `interval` (default) = after its write (survives
    /// a crash or kill -9 of the gateway), fdatasync at most every --flow-log-sync-ms (power
    /// loss can lose that interval's records); `always` = after its batch's fdatasync (survives
    /// power loss too, at the cost of an fdatasync on every busy batch).
    #[arg(long, value_enum, default_value = "interval")]
    flow_log_sync: FlowLogSyncArg,
    /// With --flow-log-sync interval: the most milliseconds between two fdatasyncs.
    #[arg(long, value_name = "MS", default_value_t = 100)]
    flow_log_sync_ms: u64,
    /// Seconds without traffic after which a relayed connection is closed.
    #[arg(long, default_value_t = 300)]
    idle_timeout: u64,
    /// Seconds to receive a request head / ClientHello.
    #[arg(long, default_value_t = 10)]
    handshake_timeout: u64,
    /// Seconds without a datagram after which a UDP session (DNAT, transparent) ends;
    /// transparent sessions to port 53 end after at most 10.
    #[arg(long, default_value_t = 30)]
    udp_idle_timeout: u64,
    /// Transparent UDP sessions held at once; when full, the least recently active is evicted.
    #[arg(long, default_value_t = 10_000)]
    max_udp_sessions: usize,
    /// Listen on the frontends of the firewall's DNAT rules (their destination address and
    /// port) and forward to the translated address (FW-4); follows reloads.
    #[arg(long)]
    dnat: bool,
    /// Listen for a DNAT frontend on another local address: `FRONTEND=LOCAL`, each `IP` or
    /// `IP:PORT` (repeatable; implies --dnat).
    #[arg(long, value_name = "FRONTEND=LOCAL")]
    dnat_bind: Vec<String>,
    /// On SIGTERM / SIGINT: seconds established connections may go on before they are closed
    /// (new connections are refused at once; 0 closes everything at once).
    #[arg(long, value_name = "SECONDS", default_value_t = 30)]
    grace_period: u64,
    /// DNS proxy (FW-9) on this `IP:PORT`, UDP and TCP: answers the subnet's queries through
    /// the firewall's resolver and remembers the addresses FQDN network rules match (FW-5).
    #[arg(long, value_name = "IP:PORT")]
    dns: Option<SocketAddr>,
    /// The DNS proxy's upstream servers (`IP` or `IP:PORT`, repeatable), instead of the
    /// policy's `dnsSettings.servers` or the host's resolvers.
    #[arg(long, value_name = "IP[:PORT]", requires = "dns")]
    dns_upstream: Vec<String>,
    /// Seconds an address stays valid after its answer's TTL ran out (FW-5: 900).
    #[arg(long, value_name = "SECONDS", default_value_t = 900, requires = "dns")]
    dns_grace: u64,
    /// Seconds between the firewall's own re-resolutions of the remembered names its network
    /// rules name (FW-5: 15; 0 = never).
    #[arg(long, value_name = "SECONDS", default_value_t = 15, requires = "dns")]
    dns_refresh: u64,
    /// Follow the policy versions a `palisade server --store` commits to this PostgreSQL
    /// database (`postgres://USER@HOST:PORT/DB`) instead of --network files: the newest at
    /// start, each new one within a second (LISTEN/NOTIFY). When the database is away the last
    /// good snapshot keeps deciding. --resolve, --hosts-file and catalog flags still apply.
    #[arg(long, value_name = "postgres://...", conflicts_with = "network")]
    policy_store: Option<String>,
    /// Also write flow records, with --instance, to this PostgreSQL database (batched; never
    /// delays a decision; records that do not fit the queue while it is away are counted in
    /// /metrics and kept in the local flow log).
    #[arg(long, value_name = "postgres://...")]
    flow_log_store: Option<String>,
    /// PAL-5.3 shadow policy: a candidate network (file or folder, loaded like --network, with
    /// the same catalogs, bindings and --firewall) judged beside the live one and reloaded with
    /// it. It never changes a live verdict; flows it decides differently get a `ShadowDiff`
    /// record too (`palisade logs --shadow-diff`). A shadow with errors is refused and logged.
    #[arg(long, value_name = "PATH")]
    shadow_network: Option<PathBuf>,
    /// PAL-5.4 observe: for flows from these scopes (address prefixes, subnet, ASG or IP group
    /// names, comma-separated) the firewall's default deny only audits — the flow is let through
    /// and recorded with `audit: true` and `observe: SCOPE`. Rule denies still apply.
    #[arg(long, value_name = "SCOPE[,SCOPE]", value_delimiter = ',')]
    observe: Vec<String>,
    /// End of the observe window (RFC 3339); default: while the gateway runs.
    #[arg(long, value_name = "RFC3339", requires = "observe")]
    observe_until: Option<String>,
}

#[derive(Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum FlowLogSyncArg {
    Always,
    Interval,
}

#[derive(Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum TransparentModeArg {
    Redirect,
    Tproxy,
}

#[derive(Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum LogsOutput {
    Text,
    Json,
}

/// Read the gateway's flow records, newest first.
#[derive(clap::Args)]
pub struct LogsArgs {
    /// The gateway's data directory (default: as `palisade gateway`).
    #[arg(long)]
    pub(crate) data: Option<PathBuf>,
    /// `allow` or `deny`.
    #[arg(long)]
    pub(crate) action: Option<String>,
    /// Only records newer than this: a duration (15m, 1h, 2d) or an RFC 3339 time.
    #[arg(long)]
    pub(crate) since: Option<String>,
    /// A rule name or path (`collection/rule`, `group/collection/rule`).
    #[arg(long)]
    pub(crate) rule: Option<String>,
    /// Source address.
    #[arg(long)]
    pub(crate) source: Option<IpAddr>,
    /// SNI / Host / CONNECT name (`*.example.com` for subdomains).
    #[arg(long)]
    pub(crate) name: Option<String>,
    /// Only records of audit matches (PAL-5.3 audit-mode rules, PAL-5.4 observed denies).
    #[arg(long)]
    pub(crate) audit: bool,
    /// Only `ShadowDiff` records: flows the shadow policy decides differently (PAL-5.3).
    #[arg(long, conflicts_with = "action")]
    pub(crate) shadow_diff: bool,
    /// At most this many records.
    #[arg(long, default_value_t = 100)]
    pub(crate) limit: usize,
    #[arg(long, value_enum, default_value = "text")]
    pub(crate) output: LogsOutput,
}

pub(crate) fn default_data_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("PALISADE_DATA") {
        return d.into();
    }
    if let Some(d) = std::env::var_os("XDG_STATE_HOME") {
        return PathBuf::from(d).join("palisade");
    }
    if let Some(h) = std::env::var_os("HOME") {
        return PathBuf::from(h).join(".local/state/palisade");
    }
    PathBuf::from("palisade-data")
}

/// A `--keep-source-to` value: a prefix of either family, written as its network (clap names the
/// flag and the value in front of the message).
fn keep_source_prefix(v: &str) -> Result<ipnet::IpNet, String> {
    const EXPECTED: &str = "expected a prefix ADDRESS/LENGTH such as 10.0.2.0/24 or fd00::/64";
    if let Ok(ip) = v.parse::<IpAddr>() {
        let len = if ip.is_ipv4() { 32 } else { 128 };
        return Err(format!(
            "an address, not a prefix; {EXPECTED} (`{ip}/{len}` for this address alone)"
        ));
    }
    let net: ipnet::IpNet = v.parse().map_err(|_| EXPECTED.to_string())?;
    if net.trunc() != net {
        return Err(format!(
            "host bits are set; expected the prefix's network address, `{}`",
            net.trunc()
        ));
    }
    Ok(net)
}

fn addr(flag: &str, v: &str) -> Result<Option<SocketAddr>, String> {
    if v.eq_ignore_ascii_case("none") {
        return Ok(None);
    }
    v.parse()
        .map(Some)
        .map_err(|_| format!("--{flag} `{v}`: expected IP:PORT or `none`"))
}

pub fn gateway(a: GatewayArgs) -> Result<ExitCode, String> {
    let data = a.data.unwrap_or_else(default_data_dir);
    let mut config = Config::new(
        PolicySource {
            source: a.source.source(),
            firewall: a.firewall,
        },
        data.clone(),
    );
    config.listen = addr("listen", &a.listen)?;
    config.admin = addr("admin", &a.admin)?;
    config.transparent = a.transparent;
    config.transparent_udp = a.transparent_udp;
    config.keep_source_to = a.keep_source_to;
    config.transparent_mode = match a.transparent_mode {
        TransparentModeArg::Redirect => TransparentMode::Redirect,
        TransparentModeArg::Tproxy => TransparentMode::Tproxy,
    };
    config.dnat_bind = a
        .dnat_bind
        .iter()
        .map(|b| parse_dnat_bind(b).map_err(|e| e.to_string()))
        .collect::<Result<_, _>>()?;
    config.dnat = a.dnat || !config.dnat_bind.is_empty();
    if let Some(listen) = a.dns {
        let mut dns = DnsConfig::new(listen);
        dns.upstream = a
            .dns_upstream
            .iter()
            .map(|u| {
                u.parse::<SocketAddr>()
                    .or_else(|_| u.parse::<IpAddr>().map(|ip| SocketAddr::new(ip, 53)))
                    .map_err(|_| format!("--dns-upstream `{u}`: expected IP or IP:PORT"))
            })
            .collect::<Result<_, _>>()?;
        dns.grace = Duration::from_secs(a.dns_grace);
        dns.refresh = (a.dns_refresh > 0).then(|| Duration::from_secs(a.dns_refresh));
        config.dns = Some(dns);
    }
    if config.listen.is_none()
        && config.transparent.is_none()
        && config.transparent_udp.is_empty()
        && !config.dnat
        && config.dns.is_none()
    {
        return Err("nothing to serve: give --listen, --transparent, --transparent-udp, --dnat and/or --dns".into());
    }
    config.resolver = Resolver {
        fixed: Default::default(),
        system: !a.no_system_resolver,
    };
    config.tunnel_sni = match a.tunnel_sni {
        TunnelSniArg::Match => TunnelSni::Match,
        TunnelSniArg::Allowed => TunnelSni::Allowed,
    };
    config.ech = match a.ech {
        EchArg::Deny => EchPolicy::Deny,
        EchArg::OuterSni => EchPolicy::OuterSni,
    };
    config.address_check = match a.address_check {
        AddressCheckArg::Enforce => AddressCheck::Enforce,
        AddressCheckArg::Audit => AddressCheck::Audit,
        AddressCheckArg::Off => AddressCheck::Off,
    };
    config.reevaluate_established = !a.keep_established;
    config.policy_store = a
        .policy_store
        .as_deref()
        .map(|u| palisade_pgstore::config("--policy-store", u))
        .transpose()?;
    config.flow_store = a
        .flow_log_store
        .as_deref()
        .map(|u| palisade_pgstore::config("--flow-log-store", u))
        .transpose()?;
    // A store-fed gateway has no network files to watch.
    config.watch = !a.no_watch && config.policy_store.is_none();
    if let Some(i) = a.instance {
        config.instance = i;
    }
    config.limits.max_connections = a.max_connections;
    config.serving_threads = match a.worker_threads {
        Some(n) => n.into(),
        None => std::thread::available_parallelism().map_or(1, |n| n.get()),
    };
    if a.max_connections_per_source == 0 {
        return Err("--max-connections-per-source 0: expected at least 1".into());
    }
    config.limits.max_connections_per_source = a.max_connections_per_source;
    config.flowlog.sync = match a.flow_log_sync {
        FlowLogSyncArg::Always => palisade_flowlog::SyncMode::Always,
        FlowLogSyncArg::Interval if a.flow_log_sync_ms == 0 => {
            return Err(
                "--flow-log-sync-ms 0: expected at least 1 (or --flow-log-sync always)".into(),
            )
        }
        FlowLogSyncArg::Interval => {
            palisade_flowlog::SyncMode::Interval(Duration::from_millis(a.flow_log_sync_ms))
        }
    };
    config.limits.idle_timeout = Duration::from_secs(a.idle_timeout);
    config.limits.udp_idle_timeout = Duration::from_secs(a.udp_idle_timeout);
    config.limits.max_udp_sessions = a.max_udp_sessions;
    config.limits.handshake_timeout = Duration::from_secs(a.handshake_timeout);
    config.limits.header_timeout = Duration::from_secs(a.handshake_timeout);
    config.grace_period = Duration::from_secs(a.grace_period);
    config.shadow = a.shadow_network.map(|p| PolicySource {
        source: palisade_load::Source {
            input: palisade_load::Input::Files(vec![p]),
            parameters: None,
            ..config.source.source.clone()
        },
        firewall: config.source.firewall.clone(),
    });
    if !a.observe.is_empty() {
        let until = a
            .observe_until
            .as_deref()
            .map(|t| {
                humantime::parse_rfc3339_weak(t)
                    .map_err(|_| format!("--observe-until `{t}`: expected an RFC 3339 time"))
            })
            .transpose()?;
        config.observe = Some(Observe {
            scopes: a.observe,
            until,
        });
    }
    let mut rt = tokio::runtime::Builder::new_multi_thread();
    if let Some(n) = a.worker_threads {
        rt.worker_threads(n.into());
    }
    let rt = rt.enable_all().build().map_err(|e| e.to_string())?;
    rt.block_on(async move {
        let running = Gateway::start(config)
            .await
            .map_err(|e| format!("gateway: {e}"))?;
        eprintln!("flow records in {}", data.display());
        running.wait().await;
        Ok::<_, String>(())
    })?;
    // Every record is on disk once `wait` returns; do not linger on a name lookup still
    // running on a blocking thread.
    rt.shutdown_timeout(Duration::from_secs(1));
    Ok(ExitCode::SUCCESS)
}

pub fn logs(a: LogsArgs) -> Result<ExitCode, String> {
    let data = a.data.unwrap_or_else(default_data_dir);
    let q = Query {
        action: a.action,
        since: a
            .since
            .as_deref()
            .map(|s| parse_since(s, SystemTime::now()))
            .transpose()
            .map_err(|e| e.to_string())?,
        rule: a.rule,
        source: a.source,
        name: a.name,
        audit: a.audit,
        shadow_diff: a.shadow_diff,
        limit: Some(a.limit),
    };
    let (records, torn) = query(&data, &q).map_err(|e| format!("{}: {e}", data.display()))?;
    if torn > 0 {
        eprintln!("note: {torn} unreadable line(s) skipped (a write cut short by a crash)");
    }
    match a.output {
        LogsOutput::Json => {
            println!(
                "{}",
                serde_json::to_string_pretty(&records).map_err(|e| e.to_string())?
            );
        }
        LogsOutput::Text => {
            if records.is_empty() {
                eprintln!("no matching flow records in {}", data.display());
            }
            for r in &records {
                println!("{}", text_line(r));
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub(crate) fn text_line(r: &FlowRecord) -> String {
    let src = match r.source_ip {
        Some(ip) => format!("{}", SocketAddr::new(ip, r.source_port)),
        None => "-".into(),
    };
    let dst = match r.destination_ip {
        Some(ip) => format!("{}", SocketAddr::new(ip, r.destination_port)),
        None => format!("-:{}", r.destination_port),
    };
    let name = match (&r.name, &r.tunnel_name) {
        (Some(n), Some(t)) if n != t => format!("{n} (tunnel {t})"),
        (n, _) => n.as_deref().unwrap_or("-").to_string(),
    };
    let rule = r.rule_label();
    let mut line = format!(
        "{} {:<5} {:<5} {src} → {name} ({dst}) {} rule={rule} reason={}",
        r.time, r.action, r.protocol, r.layer, r.reason
    );
    if r.bytes_sent + r.bytes_received > 0 || r.duration_ms > 0 {
        line.push_str(&format!(
            " sent={} received={} {}ms",
            r.bytes_sent, r.bytes_received, r.duration_ms
        ));
    }
    if let Some(s) = &r.shadow {
        line.push_str(&format!(
            " live={} ({}) shadow={} ({})",
            s.live_action, s.live_rule, s.shadow_action, s.shadow_rule
        ));
    }
    if r.audit {
        line.push_str(" audit");
        for a in &r.audit_rules {
            line.push_str(&format!(" [{} would {}]", a.rule, a.access));
        }
        if let Some(scope) = &r.observe {
            line.push_str(&format!(" [observe {scope}: default deny audited]"));
        }
    }
    if let Some(d) = &r.detail {
        line.push_str(&format!(" — {d}"));
    }
    line
}
