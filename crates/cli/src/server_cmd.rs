//! `palisade server`: the REST API of crate `palisade-server`. Arguments and first-run setup
//! only.

use crate::SourceArgs;
use palisade_server::auth::{self, Tokens};
use palisade_server::Config;
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

/// Serve diagnostics and the policy's resources over HTTP.
#[derive(clap::Args)]
pub struct ServerArgs {
    /// The network that seeds an empty store, as `palisade trace` takes it. Its catalogs and
    /// name bindings apply to every version.
    #[command(flatten)]
    source: SourceArgs,
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// Where versions and the audit log are kept (default: $PALISADE_DATA/server, else
    /// ~/.local/state/palisade/server).
    #[arg(long)]
    data: Option<PathBuf>,
    /// Bearer tokens, one `NAME ROLE SHA256` a line (role `reader` or `admin`). Default:
    /// DATA/tokens, created on first start with one admin token that is printed once.
    #[arg(long)]
    token_file: Option<PathBuf>,
    /// Largest request body, in bytes.
    #[arg(long, default_value_t = 1 << 20)]
    max_body: usize,
    /// Seconds a request may take.
    #[arg(long, default_value_t = 30)]
    request_timeout: u64,
    /// The gateway's data directory, whose flow records `GET /api/flowLogs` queries (default:
    /// as `palisade gateway`).
    #[arg(long)]
    flow_log: Option<PathBuf>,
    /// Keep versions and the audit log in PostgreSQL (`postgres://USER@HOST:PORT/DB`) instead
    /// of DATA/policy.redb; gateways started with `--policy-store` on the same database follow
    /// every committed version.
    #[arg(long, value_name = "postgres://...")]
    store: Option<String>,
}

pub fn server(a: ServerArgs) -> Result<ExitCode, String> {
    let data = a
        .data
        .unwrap_or_else(|| crate::serve::default_data_dir().join("server"));
    let tokens = match &a.token_file {
        Some(f) => Tokens::load(f)?,
        None => first_run_tokens(&data)?,
    };
    let config = Config {
        source: a.source.source(),
        listen: a.listen,
        data,
        tokens,
        body_limit: a.max_body,
        timeout: Duration::from_secs(a.request_timeout),
        flow_log: Some(a.flow_log.unwrap_or_else(crate::serve::default_data_dir)),
        store: a.store,
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    rt.block_on(palisade_server::run(config, |addr, note| {
        eprintln!("{note}");
        // Tests and scripts read the bound address (with `--listen 127.0.0.1:0`) from here.
        eprintln!("listening on http://{addr} (API under /api, OpenAPI at /openapi.json, Swagger UI at /docs)");
    }))?;
    Ok(ExitCode::SUCCESS)
}

/// DATA/tokens; on the first start, a new admin token is made, its hash written there and the
/// token printed once: the server never runs without authentication, yet needs no setup.
fn first_run_tokens(data: &Path) -> Result<Tokens, String> {
    let file = data.join("tokens");
    if file.exists() {
        return Tokens::load(&file);
    }
    std::fs::create_dir_all(data).map_err(|e| format!("{}: cannot create: {e}", data.display()))?;
    let token = auth::generate()?;
    let line = format!("admin admin {}\n", auth::sha256_hex(&token));
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options
        .open(&file)
        .and_then(|mut f| f.write_all(line.as_bytes()))
        .map_err(|e| format!("{}: cannot write: {e}", file.display()))?;
    eprintln!(
        "created {} with an admin token; it is shown only now:\n  {token}",
        file.display()
    );
    Tokens::load(&file)
}
