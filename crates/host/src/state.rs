//! What Palisade owns on a host: one JSON file per network namespace under the state directory
//! (`/var/lib/palisade` by default, `--state DIR`): `host.json` (the caller's namespace) or
//! `netns-<NAME>.json`. `remove` deletes exactly the tables and routes recorded there.

use crate::apply::TableState;
use crate::routes::OwnedRoute;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

pub const DEFAULT_DIR: &str = "/var/lib/palisade";

/// Why the state file could not be read or written. A caller that finds it corrupt can still
/// tell the user which file to inspect or delete; an I/O error is usually permissions.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// Reading, writing, renaming or removing `path` (the state file, its temp file or the
    /// directory) failed.
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The state file exists but is not a state this version can read.
    #[error("{}: {source}", path.display())]
    Corrupt {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("{0}")]
    Encode(serde_json::Error),
}

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

    /// The recorded state; a missing file is an empty state (nothing owned yet), not an error.
    pub fn load(dir: &Path, netns: Option<&str>) -> Result<HostState, StateError> {
        let p = Self::path(dir, netns);
        match std::fs::read_to_string(&p) {
            Ok(text) => serde_json::from_str(&text).map_err(|source| StateError::Corrupt {
                path: p.clone(),
                source,
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(HostState {
                version: 1,
                netns: netns.map(String::from),
                ..Default::default()
            }),
            Err(source) => Err(StateError::Io { path: p, source }),
        }
    }

    /// Write atomically (temp file + rename); an empty state removes the file.
    pub fn save(&self, dir: &Path) -> Result<(), StateError> {
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| StateError::Io { path, source }
        };
        let p = Self::path(dir, self.netns.as_deref());
        if self.tables.is_empty() && self.routes.values().all(Vec::is_empty) {
            match std::fs::remove_file(&p) {
                Ok(()) => return Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
                Err(e) => return Err(io(&p)(e)),
            }
        }
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let tmp = p.with_extension("json.tmp");
        let text = serde_json::to_string_pretty(self).map_err(StateError::Encode)?;
        std::fs::write(&tmp, text).map_err(io(&tmp))?;
        std::fs::rename(&tmp, &p).map_err(io(&p))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_state_is_empty_and_a_corrupt_one_is_an_error() {
        let dir = std::env::temp_dir().join(format!("palisade-state-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let empty = HostState::load(&dir, Some("x")).unwrap();
        assert!(empty.tables.is_empty() && empty.netns.as_deref() == Some("x"));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(HostState::path(&dir, None), "{not json").unwrap();
        let e = HostState::load(&dir, None).unwrap_err();
        assert!(matches!(e, StateError::Corrupt { .. }), "{e}");
        assert!(e
            .to_string()
            .starts_with(&format!("{}: ", dir.join("host.json").display())));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
