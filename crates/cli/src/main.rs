//! `palisade`: the command-line front end. It parses arguments, loads the network and catalogs,
//! calls the model and policy crates, and presents their answers; it decides nothing itself.

// First: its `print!`/`println!` replace std's in every module below.
#[macro_use]
mod out;
mod analysis;
mod client;
mod host_cmd;
mod lab_cmd;
mod learn_cmd;
mod load;
mod progress;
mod render;
mod serve;
mod server_cmd;

use clap::{Parser, Subcommand, ValueEnum};
use palisade_model::Direction;
use palisade_policy::endpoints::{self, Resolution};
use palisade_policy::{AppProtocol, Established, Flow, TraceOptions, Verdict};
use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitCode;

// The gateway's per-tunnel path and the reachability matrix allocate many small, short-lived
// objects across threads; mimalloc's per-thread free lists cost less there than glibc's arenas
// (docs/benchmarks.md, "A faster allocator"). `main` turns its transparent huge pages off.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "palisade",
    version,
    about = "Layered network security for virtual networks: NSGs, routes and an egress firewall, checked offline and explained."
)]
struct Cli {
    #[command(flatten)]
    remote: client::RemoteArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum, PartialEq, Eq)]
enum Output {
    Text,
    Json,
}

/// Where the network comes from: the same flags for every command that reads one, the gateway
/// included.
#[derive(clap::Args, Clone)]
struct SourceArgs {
    /// A file or a folder of files (templates, parameter files, REST bodies, YAML) describing one network.
    #[arg(long, short = 'n', required = true)]
    network: Vec<PathBuf>,
    /// Parameter values for the templates (an ARM parameters file).
    #[arg(long)]
    parameters: Option<PathBuf>,
    /// A newer service-tag file (ServiceTags_<Cloud>_<date>.json) instead of the embedded copy.
    #[arg(long)]
    service_tags: Option<PathBuf>,
    /// An FQDN tag file whose tags extend or replace the embedded ones.
    #[arg(long)]
    fqdn_tags: Option<PathBuf>,
    /// Treat unresolvable values and unknown catalog entries as errors.
    #[arg(long)]
    strict: bool,
    /// Bind a name to an address for FQDN network rules, `--to NAME` and the gateway's
    /// resolver: `NAME=IP` (repeatable).
    #[arg(long, value_name = "NAME=IP")]
    resolve: Vec<String>,
    /// A hosts-format file of name bindings (`IP name [name...]`).
    #[arg(long)]
    hosts_file: Option<PathBuf>,
}

/// The network of an offline question: its source, and whether errors stop evaluation.
#[derive(clap::Args, Clone)]
struct NetworkArgs {
    #[command(flatten)]
    source: SourceArgs,
    /// Evaluate even when the input has errors. Rules, routes and collections whose values do
    /// not parse are left out (a left-out Deny denies nothing: the result may allow more than
    /// the configuration intends) and listed on stderr; rules that fail validation (e.g. a
    /// priority out of range) are evaluated as written.
    #[arg(long)]
    ignore_errors: bool,
}

#[derive(Clone, Copy, ValueEnum)]
enum ProtocolArg {
    Tcp,
    Udp,
    Icmp,
    Esp,
    Ah,
}

#[derive(Clone, Copy, ValueEnum, PartialEq, Eq)]
enum DirectionArg {
    Inbound,
    Outbound,
    Auto,
}

#[derive(Clone, Copy, ValueEnum)]
enum BenchKind {
    Classifier,
    Lpm,
    Fqdn,
    Firewall,
    /// Reachability matrix and one-rule re-checks on a generated hub-and-spoke network.
    Reach,
}

#[derive(Clone, Copy, ValueEnum)]
enum AppProtocolArg {
    Http,
    Https,
    Mssql,
}

#[derive(Subcommand)]
enum Command {
    /// Import and validate files; report every problem with its location.
    Validate {
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        #[arg(long)]
        parameters: Option<PathBuf>,
        #[arg(long)]
        service_tags: Option<PathBuf>,
        #[arg(long)]
        fqdn_tags: Option<PathBuf>,
        #[arg(long)]
        strict: bool,
        #[arg(long, value_enum, default_value = "text")]
        output: Output,
    },
    /// Trace a flow through every layer (NSGs, routes, firewall) and its return path.
    Trace {
        #[command(flatten)]
        net: NetworkArgs,
        /// Source address: a workload in a subnet, or an outside address for inbound flows.
        #[arg(long)]
        from: IpAddr,
        /// Destination address, or a name (then also the SNI/Host unless --host is given).
        #[arg(long)]
        to: String,
        #[arg(long, value_enum, default_value = "tcp")]
        protocol: ProtocolArg,
        #[arg(long, default_value_t = 443)]
        port: u16,
        #[arg(long, default_value_t = 50000)]
        source_port: u16,
        /// TLS SNI or HTTP Host header.
        #[arg(long)]
        host: Option<String>,
        /// Application protocol for application rules (default: http on 80, mssql on 1433, else https).
        #[arg(long, value_enum)]
        app_protocol: Option<AppProtocolArg>,
        /// With --at on an NSG: which rules to evaluate. Otherwise the path decides.
        #[arg(long, value_enum, default_value = "auto")]
        direction: DirectionArg,
        /// Evaluate one resource directly: an NSG, route table or firewall name, or nsg|route-table|firewall.
        #[arg(long)]
        at: Option<String>,
        /// The packet is a reply within a connection that arrived directly (not through a firewall).
        #[arg(long)]
        reply: bool,
        #[arg(long, value_enum, default_value = "text")]
        output: Output,
    },
    /// The next hop of a packet from a source in the network (Network Watcher's next hop).
    NextHop {
        #[command(flatten)]
        net: NetworkArgs,
        #[arg(long)]
        from: IpAddr,
        #[arg(long)]
        to: IpAddr,
        #[arg(long, value_enum, default_value = "text")]
        output: Output,
    },
    /// The security rules in force for a NIC or subnet, defaults and tag expansions included.
    EffectiveRules {
        #[command(flatten)]
        net: NetworkArgs,
        #[arg(long, conflicts_with = "subnet", required_unless_present = "subnet")]
        nic: Option<String>,
        #[arg(long)]
        subnet: Option<String>,
        #[arg(long, value_enum, default_value = "text")]
        output: Output,
    },
    /// The routes in force for a subnet or NIC: system, service-endpoint and user routes.
    EffectiveRoutes {
        #[command(flatten)]
        net: NetworkArgs,
        #[arg(long, conflicts_with = "nic", required_unless_present = "nic")]
        subnet: Option<String>,
        #[arg(long)]
        nic: Option<String>,
        #[arg(long, value_enum, default_value = "text")]
        output: Output,
    },
    /// Compare Azure's effective routes and security rules of a NIC with the model's.
    CheckAzure(analysis::CheckAzureArgs),
    /// Dependency coverage of a workload (DIAG-8).
    #[command(subcommand)]
    Deps(analysis::DepsCommand),
    /// Network-wide analyses: asymmetric routing (DIAG-9), reachability.
    #[command(subcommand)]
    Analyze(analysis::AnalyzeCommand),
    /// Flows whose verdict changes between two versions of a network, with the rules on each side.
    Diff(analysis::DiffArgs),
    /// Shadowed, redundant and over-permissive rules and risky layouts.
    Lint {
        #[command(flatten)]
        net: NetworkArgs,
        #[arg(long, value_enum, default_value = "text")]
        output: Output,
    },
    /// Measure a matcher on a real data file against its baseline, in one run.
    Bench {
        #[arg(value_enum)]
        kind: BenchKind,
        /// ClassBench filter file (classifier), prefix list (lpm, may be .gz), domain list or
        /// directory of them (fqdn; firewall: the lists become application rules). Not used
        /// by `reach`, which generates its network.
        #[arg(long, required_if_eq_any([("kind", "classifier"), ("kind", "lpm"), ("kind", "fqdn"), ("kind", "firewall")]))]
        data: Option<PathBuf>,
        /// Time budget for the lookup trace, per structure.
        #[arg(long, default_value_t = 2.0)]
        seconds: f64,
        /// reach: spokes of the generated hub.
        #[arg(long, default_value_t = 500)]
        spokes: usize,
        /// reach: rules per NSG.
        #[arg(long, default_value_t = 50)]
        nsg_rules: usize,
        /// reach: firewall network rules.
        #[arg(long, default_value_t = 5000)]
        firewall_rules: usize,
        /// reach: skip the `diff` measurement; the JSON output then has no `diff_s`,
        /// `diff_changes`, `peak_rss_after_diff_mib` or `diff_paths`.
        #[arg(long)]
        no_diff: bool,
        #[arg(long, value_enum, default_value = "text")]
        output: Output,
    },
    /// Trace two flows through the embedded example (an App Service Environment egress lockdown).
    Demo {
        #[arg(long, value_enum, default_value = "text")]
        output: Output,
    },
    /// Run the network's firewall on real traffic: explicit proxy and transparent mode.
    Gateway(Box<serve::GatewayArgs>),
    /// Read the gateway's flow records, newest first.
    Logs(serve::LogsArgs),
    /// Propose allow rules from a scope's recorded denials (PAL-5.4); applies nothing.
    Learn(Box<learn_cmd::LearnArgs>),
    /// Enforce a subnet's or NIC's NSG and routes in this host's kernel (nftables, netlink).
    #[command(subcommand)]
    Host(host_cmd::HostCommand),
    /// Build a network in network namespaces and check real packets against `trace`.
    #[command(subcommand)]
    Lab(lab_cmd::LabCommand),
    /// Serve diagnostics and the policy's resources over HTTP (REST, OpenAPI), versions kept.
    Server(server_cmd::ServerArgs),
    #[command(flatten)]
    Remote(client::ServerCommand),
}

/// mimalloc asks for transparent huge pages where the kernel leaves them to `madvise`; on a
/// machine whose memory is fragmented each such fault compacts memory first (the matrix's
/// system time went from 0.5 to 3 s after another large process). Pages of 4 KiB, as glibc
/// gets, cost less than that. Best effort: a kernel without the option keeps its default.
fn no_transparent_huge_pages() {
    // SAFETY: PR_SET_THP_DISABLE takes integer arguments only and changes no memory.
    unsafe {
        libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0);
    }
}

fn main() -> ExitCode {
    no_transparent_huge_pages();
    let cli = parse();
    let result = match &cli.remote.server {
        Some(url) => client::run(&cli.remote, url, cli.command),
        None => run(cli.command),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}

/// The arguments; with `--server` the server holds the network, so `--network` is optional.
fn parse() -> Cli {
    use clap::{CommandFactory, FromArgMatches};
    fn relax(cmd: clap::Command) -> clap::Command {
        let has_network = cmd.get_arguments().any(|a| a.get_id() == "network");
        let cmd = match has_network {
            true => cmd.mut_arg("network", |a| a.required(false)),
            false => cmd,
        };
        let names: Vec<String> = cmd
            .get_subcommands()
            .map(|s| s.get_name().to_string())
            .collect();
        names
            .iter()
            .fold(cmd, |c, n| c.mut_subcommand(n.as_str(), relax))
    }
    let remote = std::env::args_os()
        .take_while(|a| a != "--")
        .any(|a| a == "--server" || a.to_string_lossy().starts_with("--server="));
    let cmd = if remote {
        relax(Cli::command())
    } else {
        Cli::command()
    };
    let matches = cmd.get_matches();
    Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit())
}

fn protocol(p: ProtocolArg) -> palisade_model::Protocol {
    use palisade_model::Protocol::*;
    match p {
        ProtocolArg::Tcp => Tcp,
        ProtocolArg::Udp => Udp,
        ProtocolArg::Icmp => Icmp,
        ProtocolArg::Esp => Esp,
        ProtocolArg::Ah => Ah,
    }
}

fn run(command: Command) -> Result<ExitCode, String> {
    match command {
        Command::Gateway(a) => serve::gateway(*a),
        Command::Logs(a) => serve::logs(a),
        Command::Learn(a) => learn_cmd::learn(*a),
        Command::Host(c) => host_cmd::run(c),
        Command::Lab(c) => lab_cmd::run(c),
        Command::Server(a) => server_cmd::server(a),
        Command::Remote(_) => Err("this command asks a server: give --server URL first".into()),
        Command::Validate {
            paths,
            parameters,
            service_tags,
            fqdn_tags,
            strict,
            output,
        } => {
            let checked = load::check(&SourceArgs {
                network: paths,
                parameters,
                service_tags,
                fqdn_tags,
                strict,
                resolve: vec![],
                hosts_file: None,
            });
            render::validation(&checked, output == Output::Json);
            Ok(if checked.diagnostics.has_errors() {
                ExitCode::from(1)
            } else {
                ExitCode::SUCCESS
            })
        }
        Command::Trace {
            net,
            from,
            to,
            protocol: p,
            port,
            source_port,
            host,
            app_protocol,
            direction,
            at,
            reply,
            output,
        } => {
            let loaded = load::load_for_evaluation(&net)?;
            let to = endpoints::destination(from, &to, host, &loaded.bindings)
                .map_err(|e| e.to_string())?;
            if to.resolution == Resolution::Assumed {
                eprintln!(
                    "note: `{}` is not resolved offline; tracing to {} (an Internet address). Use --resolve NAME=IP to choose one.",
                    to.host.as_deref().unwrap_or_default(),
                    to.address
                );
            }
            let flow = Flow {
                source: from,
                source_port,
                destination: to.address,
                destination_port: port,
                protocol: protocol(p),
                host: to.host,
                app_protocol: app_protocol.map(|a| match a {
                    AppProtocolArg::Http => AppProtocol::Http,
                    AppProtocolArg::Https => AppProtocol::Https,
                    AppProtocolArg::Mssql => AppProtocol::Mssql,
                }),
            };
            let opts = TraceOptions {
                established: reply.then_some(Established::Direct),
                at,
                direction: match direction {
                    DirectionArg::Inbound => Some(Direction::Inbound),
                    DirectionArg::Outbound => Some(Direction::Outbound),
                    DirectionArg::Auto => None,
                },
            };
            let trace = loaded.snapshot.trace(&flow, &opts);
            render::trace(&flow, &trace, output == Output::Json);
            Ok(verdict_code(trace.verdict))
        }
        Command::NextHop {
            net,
            from,
            to,
            output,
        } => {
            endpoints::same_family(from, to).map_err(|e| e.to_string())?;
            let loaded = load::load_for_evaluation(&net)?;
            render::next_hop(&loaded.snapshot, from, to, output == Output::Json)
        }
        Command::EffectiveRules {
            net,
            nic,
            subnet,
            output,
        } => {
            let loaded = load::load_for_evaluation(&net)?;
            render::effective_rules(
                &loaded.snapshot,
                nic.as_deref(),
                subnet.as_deref(),
                output == Output::Json,
            )
        }
        Command::EffectiveRoutes {
            net,
            subnet,
            nic,
            output,
        } => {
            let loaded = load::load_for_evaluation(&net)?;
            render::effective_routes(
                &loaded.snapshot,
                subnet.as_deref(),
                nic.as_deref(),
                output == Output::Json,
            )
        }
        Command::CheckAzure(args) => analysis::check_azure(args),
        Command::Deps(cmd) => analysis::deps(cmd),
        Command::Analyze(cmd) => analysis::analyze(cmd),
        Command::Diff(args) => analysis::diff(args),
        Command::Lint { net, output } => analysis::lint(net, output),
        Command::Bench {
            kind,
            data,
            seconds,
            spokes,
            nsg_rules,
            firewall_rules,
            no_diff,
            output,
        } => {
            let kind = match kind {
                BenchKind::Classifier => palisade_bench::Kind::Classifier,
                BenchKind::Lpm => palisade_bench::Kind::Lpm,
                BenchKind::Fqdn => palisade_bench::Kind::Fqdn,
                BenchKind::Firewall => palisade_bench::Kind::Firewall,
                BenchKind::Reach => {
                    let r = palisade_analyze::reach::bench::run_measuring(
                        spokes,
                        nsg_rules,
                        firewall_rules,
                        true,
                        !no_diff,
                    );
                    if output == Output::Json {
                        println!(
                            "{}",
                            serde_json::to_string_pretty(&r).map_err(|e| e.to_string())?
                        );
                    } else {
                        println!(
                            "{} spokes, {} atoms: matrix {:.3} s, peak {:.0} MiB, re-check NSG {:.2} ms, firewall {:.2} ms; {} flows checked against trace, {} mismatches",
                            r.spokes, r.atoms, r.matrix_s, r.peak_rss_mib, r.recheck_nsg_ms, r.recheck_firewall_ms, r.trace_checked_flows, r.mismatches
                        );
                    }
                    return Ok(if r.mismatches == 0 {
                        ExitCode::SUCCESS
                    } else {
                        ExitCode::from(1)
                    });
                }
            };
            let data = data.ok_or("--data is required for this benchmark")?;
            let report = palisade_bench::run(kind, &data, seconds).map_err(|e| e.to_string())?;
            if output == Output::Json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&report).map_err(|e| e.to_string())?
                );
            } else {
                println!("{report}");
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Demo { output } => {
            let snapshot = load::embedded_example()?;
            let flows = [
                ("allowed: an ASE instance calls login.microsoftonline.com (FQDN tag AppServiceEnvironment)", "10.0.0.10", "203.0.113.30", "login.microsoftonline.com"),
                ("denied: the same instance calls evilpartner.example (no rule; firewall default deny)", "10.0.0.10", "203.0.113.43", "evilpartner.example"),
            ];
            let mut traces = vec![];
            for (title, from, to, host) in flows {
                let flow = Flow {
                    source: from.parse().expect("literal address"),
                    source_port: 50000,
                    destination: to.parse().expect("literal address"),
                    destination_port: 443,
                    protocol: palisade_model::Protocol::Tcp,
                    host: Some(host.to_string()),
                    app_protocol: None,
                };
                let trace = snapshot.trace(&flow, &TraceOptions::default());
                if output == Output::Text {
                    println!("== {title}");
                    render::trace(&flow, &trace, false);
                    println!();
                } else {
                    traces.push(render::trace_json(&flow, &trace));
                }
            }
            if output == Output::Json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&traces).map_err(|e| e.to_string())?
                );
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Exit status of `trace`: 0 allowed, 3 denied or dropped, 4 unknown (2 is a usage/input error).
fn verdict_code(v: Verdict) -> ExitCode {
    match v {
        Verdict::Allow => ExitCode::SUCCESS,
        Verdict::Deny | Verdict::Drop => ExitCode::from(3),
        Verdict::Unknown => ExitCode::from(4),
    }
}
