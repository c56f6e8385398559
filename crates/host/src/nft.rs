//! Talking to nftables: one JSON transaction through the `nftables` crate (`nft -j -f -`),
//! optionally inside a network namespace (`ip netns exec NS nft …`), and reading a table back.

use serde_json::{json, Value};
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

    /// One `nft -j -f -` transaction (`--check`: evaluated by the kernel, then aborted).
    ///
    /// The payload is first read into the `nftables` crate's typed schema, so only commands the
    /// crate models are ever sent. It is then piped to `nft -j -f -` here rather than through
    /// `nftables::helper::apply_ruleset_raw`, because that helper (0.6.3) does not capture nft's
    /// stderr: the kernel's error would go to our terminal instead of into the report.
    fn run_transaction(&self, cmds: &[Value], check: bool) -> Result<(), (String, bool)> {
        use std::io::Write;
        let payload = json!({"nftables": cmds});
        if let Err(e) = serde_json::from_value::<nftables::schema::Nftables>(payload.clone()) {
            return Err((format!("not a valid nftables JSON transaction: {e}"), true));
        }
        let (program, mut args) = self.program_and_prefix();
        if check {
            args.push("--check".into());
        }
        args.extend(["-j", "-f", "-"].map(String::from));
        let mut child = Command::new(program)
            .args(&args)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .map_err(|e| (format!("{program}: {e}"), false))?;
        let text = payload.to_string();
        if let Some(mut stdin) = child.stdin.take() {
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
        let msg: Vec<&str> = msg
            .lines()
            .map(|l| l.trim_start_matches("internal:0:0-0: ").trim())
            .filter(|l| !l.is_empty())
            .collect();
        Err((msg.join("; "), true))
    }

    /// Apply `cmds` as one atomic transaction. On refusal, find the first command that makes
    /// the transaction fail and report it with nft's message.
    pub fn apply(&self, cmds: &[Value]) -> Result<(), NftError> {
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
    fn find_culprit(&self, cmds: &[Value]) -> Option<usize> {
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

/// A one-line description of a transaction command, naming the NSG rule for a rule.
pub fn describe(cmd: &Value) -> String {
    let Some((verb, body)) = cmd.as_object().and_then(|o| o.iter().next()) else {
        return cmd.to_string();
    };
    let Some((kind, obj)) = body.as_object().and_then(|o| o.iter().next()) else {
        return format!("{verb} {body}");
    };
    let name = obj
        .get("name")
        .or_else(|| obj.get("chain"))
        .and_then(Value::as_str)
        .unwrap_or("");
    match kind.as_str() {
        "rule" => format!(
            "{verb} rule in chain {name}: {} ({})",
            obj.get("comment").and_then(Value::as_str).unwrap_or(""),
            obj.get("expr").map(Value::to_string).unwrap_or_default()
        ),
        _ => format!("{verb} {kind} {name}"),
    }
}
