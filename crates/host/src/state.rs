//! What Palisade owns on a host: one JSON file per network namespace under the state directory
//! (`/var/lib/palisade` by default, `--state DIR`): `host.json` (the caller's namespace) or
//! `netns-<NAME>.json`. `remove` deletes exactly the tables and routes recorded there.

use crate::apply::TableState;
use crate::routes::OwnedRoute;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

pub const DEFAULT_DIR: &str = "/var/lib/palisade";

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct HostState {
    pub version: u32,
    pub netns: Option<String>,
    /// Table name → what was applied.
    pub tables: BTreeMap<String, TableState>,
    /// Routes added, per target label (`subnet web`, `nic vm1-nic`).
    pub routes: BTreeMap<String, Vec<OwnedRoute>>,
}

impl HostState {
    pub fn path(dir: &Path, netns: Option<&str>) -> PathBuf {
        match netns {
            None => dir.join("host.json"),
            Some(ns) => dir.join(format!("netns-{ns}.json")),
        }
    }

    pub fn load(dir: &Path, netns: Option<&str>) -> Result<HostState, String> {
        let p = Self::path(dir, netns);
        match std::fs::read_to_string(&p) {
            Ok(text) => serde_json::from_str(&text).map_err(|e| format!("{}: {e}", p.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(HostState {
                version: 1,
                netns: netns.map(String::from),
                ..Default::default()
            }),
            Err(e) => Err(format!("{}: {e}", p.display())),
        }
    }

    /// Write atomically (temp file + rename); an empty state removes the file.
    pub fn save(&self, dir: &Path) -> Result<(), String> {
        let p = Self::path(dir, self.netns.as_deref());
        if self.tables.is_empty() && self.routes.values().all(Vec::is_empty) {
            match std::fs::remove_file(&p) {
                Ok(()) => return Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
                Err(e) => return Err(format!("{}: {e}", p.display())),
            }
        }
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let tmp = p.with_extension("json.tmp");
        let text = serde_json::to_string_pretty(self).map_err(|e| e.to_string())?;
        std::fs::write(&tmp, text).map_err(|e| format!("{}: {e}", tmp.display()))?;
        std::fs::rename(&tmp, &p).map_err(|e| format!("{}: {e}", p.display()))
    }
}
