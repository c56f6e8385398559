//! Talking to nftables: one transaction of text commands (`nft -f -`), optionally inside a
//! network namespace (`ip netns exec NS nft …`), and reading a table back (`nft -j list`).

use serde_json::Value;
use std::process::Command;

/// Where nft runs.
#[derive(Debug, Clone, Default)]
pub struct Nft {
    /// A named network namespace (`ip netns`), or the caller's own.
    pub netns: Option<String>,
}

/// nft refused a transaction. The previous ruleset stays in force (a transaction is atomic).
#[derive(Debug, thiserror::Error)]
pub enum NftError {
    #[error("cannot run nft: {0}")]
    Exec(String),
    #[error("nft refused the transaction (nothing changed): {message}{}", culprit.as_ref().map(|c| format!("\n  caused by: {c}")).unwrap_or_default())]
    Refused {
        message: String,
        /// The command that made the transaction fail, found by re-checking prefixes of the
        /// transaction with `nft --check` (for a rule: its comment names the NSG rule).
        culprit: Option<String>,
        culprit_index: Option<usize>,
    },
    #[error("nft printed JSON we cannot read: {0}")]
    Json(String),
}

/// Why `nft` is not usable here; see [`Nft::available`].
#[derive(Debug, thiserror::Error)]
pub enum Unavailable {
    /// `nft` (or `ip netns exec`) could not be started: not installed, not on the path.
    #[error(transparent)]
    Exec(NftError),
    /// `nft` ran and failed (not root, no netfilter, no such namespace); its stderr.
    #[error("{stderr}")]
    Failed { stderr: String },
}

impl Nft {
    pub fn new(netns: Option<String>) -> Nft {
        Nft { netns }
    }

    fn program_and_prefix(&self) -> (&'static str, Vec<String>) {
        match &self.netns {
            None => ("nft", vec![]),
            Some(ns) => (
                "ip",
                vec!["netns".into(), "exec".into(), ns.clone(), "nft".into()],
            ),
        }
    }

    /// One `nft -f -` transaction of text commands, one a line (`--check`: evaluated by the
    /// kernel, then aborted). Text rather than JSON: nft's JSON parser costs more than the
    /// kernel's work for a large set (`docs/benchmarks.md`, host renderer, second run).
    fn run_transaction(&self, cmds: &[String], check: bool) -> Result<(), (String, bool)> {
        use std::io::Write;
        let (program, mut args) = self.program_and_prefix();
        if check {
            args.push("--check".into());
        }
        args.extend(["-f", "-"].map(String::from));
        let mut child = Command::new(program)
            .args(&args)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .map_err(|e| (format!("{program}: {e}"), false))?;
        if let Some(mut stdin) = child.stdin.take() {
            let mut text = cmds.join("\n");
            text.push('\n');
            stdin
                .write_all(text.as_bytes())
                .map_err(|e| (format!("{program}: {e}"), false))?;
        }
        let out = child
            .wait_with_output()
            .map_err(|e| (format!("{program}: {e}"), false))?;
        if out.status.success() {
            return Ok(());
        }
        let stderr = String::from_utf8_lossy(&out.stderr);
        let msg = if stderr.trim().is_empty() {
            String::from_utf8_lossy(&out.stdout).into_owned()
        } else {
            stderr.into_owned()
        };
        // nft echoes the offending line and underlines it; keep only its messages.
        let msg: Vec<&str> = msg
            .lines()
            .filter_map(|l| {
                l.split_once(": Error: ")
                    .map(|(_, m)| m)
                    .or(l.strip_prefix("Error: "))
            })
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect();
        Err((msg.join("; "), true))
    }

    /// Apply `cmds` (nft text commands) as one atomic transaction. On refusal, find the first
    /// command that makes the transaction fail and report it with nft's message.
    pub fn apply(&self, cmds: &[String]) -> Result<(), NftError> {
        match self.run_transaction(cmds, false) {
            Ok(()) => Ok(()),
            Err((msg, false)) => Err(NftError::Exec(msg)),
            Err((message, true)) => {
                let idx = self.find_culprit(cmds);
                Err(NftError::Refused {
                    message,
                    culprit: idx.map(|i| describe(&cmds[i])),
                    culprit_index: idx,
                })
            }
        }
    }

    /// The smallest prefix of `cmds` that `nft --check` refuses ends with the culprit.
    fn find_culprit(&self, cmds: &[String]) -> Option<usize> {
        let (mut lo, mut hi) = (1usize, cmds.len());
        if self.run_transaction(cmds, true).is_ok() {
            return None;
        }
        while lo < hi {
            let mid = (lo + hi) / 2;
            if self.run_transaction(&cmds[..mid], true).is_err() {
                hi = mid;
            } else {
                lo = mid + 1;
            }
        }
        Some(lo - 1)
    }

    fn output(&self, args: &[&str]) -> Result<std::process::Output, NftError> {
        let (program, prefix) = self.program_and_prefix();
        Command::new(program)
            .args(prefix)
            .args(args)
            .output()
            .map_err(|e| NftError::Exec(format!("{program}: {e}")))
    }

    /// `nft -j list table inet NAME`; `None` when the table does not exist.
    pub fn list_table(&self, table: &str) -> Result<Option<Vec<Value>>, NftError> {
        let out = self.output(&["-j", "list", "table", crate::render::FAMILY, table])?;
        if !out.status.success() {
            let err = String::from_utf8_lossy(&out.stderr);
            if err.contains("No such file or directory") {
                return Ok(None);
            }
            return Err(NftError::Exec(err.trim().to_string()));
        }
        let v: Value =
            serde_json::from_slice(&out.stdout).map_err(|e| NftError::Json(e.to_string()))?;
        let objects = v
            .get("nftables")
            .and_then(Value::as_array)
            .cloned()
            .ok_or_else(|| NftError::Json("no `nftables` array".into()))?;
        Ok(Some(objects))
    }

    /// Names of the tables of family inet.
    pub fn tables(&self) -> Result<Vec<String>, NftError> {
        let out = self.output(&["-j", "list", "tables", crate::render::FAMILY])?;
        if !out.status.success() {
            return Err(NftError::Exec(
                String::from_utf8_lossy(&out.stderr).trim().to_string(),
            ));
        }
        let v: Value =
            serde_json::from_slice(&out.stdout).map_err(|e| NftError::Json(e.to_string()))?;
        Ok(v["nftables"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|o| o.get("table")?.get("name")?.as_str().map(String::from))
            .collect())
    }

    /// Is `nft` usable here (installed, and we may talk to netfilter)?
    pub fn available(&self) -> Result<(), Unavailable> {
        match self.output(&["list", "tables"]) {
            Ok(o) if o.status.success() => Ok(()),
            Ok(o) => Err(Unavailable::Failed {
                stderr: String::from_utf8_lossy(&o.stderr).trim().to_string(),
            }),
            Err(e) => Err(Unavailable::Exec(e)),
        }
    }
}

/// A transaction command, cut short when it is long (a set's elements): a rule's command ends
/// with its comment, which names the NSG rule, so a rule is kept whole.
pub fn describe(cmd: &str) -> String {
    const MAX: usize = 400;
    if cmd.len() <= MAX || cmd.contains(" rule ") {
        return cmd.to_string();
    }
    let mut cut = MAX;
    while !cmd.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{} …", &cmd[..cut])
}
