//! Shared test helpers: the layered-nsg snapshot, root/nft checks, and network namespaces that
//! are removed on drop (also when a test fails).
#![allow(dead_code)]

use palisade_model::catalog::Catalogs;
use palisade_model::ImportOptions;
use palisade_policy::{CompileOptions, Snapshot};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};

pub fn shared() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared")
}

/// layered-nsg, with its one known validation error (a priority of 90) tolerated.
pub fn layered_nsg() -> Snapshot {
    let file = shared().join("scenarios/layered-nsg/network.json");
    let imported = palisade_model::load(&[file], &ImportOptions::default());
    let catalogs = Catalogs::embedded();
    let mut diags = imported.diagnostics.clone();
    diags.extend(palisade_model::validate(&imported.network, &catalogs, false).0);
    let errors: Vec<String> = diags.errors().map(|d| d.to_string()).collect();
    assert!(
        errors.iter().all(|e| e.contains("90")) && errors.len() <= 1,
        "unexpected errors: {errors:?}"
    );
    Snapshot::compile(&imported.network, &catalogs, &CompileOptions::default())
}

/// Why kernel tests cannot run here, if they cannot.
pub fn kernel_skip_reason() -> Option<String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Some("not root".into());
    }
    for (tool, flag) in [("nft", "--version"), ("ip", "-V")] {
        let ok = Command::new(tool)
            .arg(flag)
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false);
        if !ok {
            return Some(format!("`{tool}` is not installed"));
        }
    }
    None
}

#[macro_export]
macro_rules! require_kernel {
    () => {
        if let Some(why) = common::kernel_skip_reason() {
            eprintln!("SKIPPED: {why}: this test needs root, nft and ip (it creates network namespaces)");
            return;
        }
    };
}

static COUNTER: AtomicUsize = AtomicUsize::new(0);

pub fn sh(args: &[&str]) -> Result<String, String> {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .map_err(|e| format!("{args:?}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A network namespace named with this run's prefix, deleted on drop.
pub struct Netns {
    pub name: String,
}

impl Netns {
    pub fn new(tag: &str) -> Netns {
        let name = format!(
            "pal{}-{}-{tag}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::SeqCst)
        );
        sh(&["ip", "netns", "add", &name]).expect("ip netns add");
        let ns = Netns { name };
        ns.exec(&["ip", "link", "set", "lo", "up"]).unwrap();
        ns
    }

    pub fn exec(&self, args: &[&str]) -> Result<String, String> {
        let mut a = vec!["ip", "netns", "exec", &self.name];
        a.extend_from_slice(args);
        sh(&a)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = sh(&["ip", "netns", "del", &self.name]);
    }
}
