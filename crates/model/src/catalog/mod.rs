//! Catalogs (CAT-*): service tags, FQDN tags and outbound dependency lists, loaded as data.
//!
//! Rules name things the configuration does not define: `Storage.WestUS` in an NSG rule, the
//! `AppServiceEnvironment` FQDN tag in a firewall rule, "what must App Service reach" in a
//! coverage check. Microsoft changes all of these without notice, so Palisade treats them as
//! versioned data rather than code: every catalog records where it came from, its change number
//! and a content hash ([`CatalogVersion`], CAT-3), and decisions name the version they used.
//!
//! The binary ships defaults ([`Catalogs::embedded`]) so that it works offline out of the box: a
//! compact copy of one weekly service-tag file and Palisade's own FQDN tag contents (Azure does
//! not publish those, CAT-4). Users point to newer files with [`ServiceTags::load`] and
//! [`FqdnTags::load`] / [`FqdnTags::extend`]. Dependency lists ([`DependencyCatalog`]) are not
//! embedded: they describe one workload and are always loaded from a file.
//!
//! Every loader takes text from outside and never panics on it: bad input is a located
//! [`Diagnostic`](crate::diag::Diagnostic) (FMT-12), property names match case-insensitively and
//! integers may be strings (FMT-3).

// Loaders return the crate's `Diagnostic` by value, as the rest of the crate does; errors end a
// load, so their size does not matter for speed.
#![allow(clippy::result_large_err)]

mod access;
mod compact;
pub mod dependencies;
pub mod fqdn_tags;
pub mod service_tags;

pub use dependencies::{
    DependencyCatalog, DependencyCategory, DependencyEndpoint, DependencyEntry, DependencyProtocol,
    EndpointDetail, Via,
};
pub use fqdn_tags::{FqdnTag, FqdnTags};
pub use service_tags::{ServiceTag, ServiceTags};

use serde::Serialize;
use sha2::{Digest, Sha256};
use std::fmt;

/// All catalogs a network is evaluated with, and their versions (CAT-3).
#[derive(Debug, Clone)]
pub struct Catalogs {
    pub service_tags: ServiceTags,
    pub fqdn_tags: FqdnTags,
}

impl Catalogs {
    /// The defaults shipped in the binary: the embedded service-tag copy and FQDN tag catalog.
    pub fn embedded() -> Catalogs {
        Catalogs {
            service_tags: ServiceTags::embedded(),
            fqdn_tags: FqdnTags::embedded(),
        }
    }

    /// The versions to name in a decision record, service tags first.
    pub fn versions(&self) -> [&CatalogVersion; 2] {
        [self.service_tags.version(), self.fqdn_tags.version()]
    }
}

impl Default for Catalogs {
    fn default() -> Catalogs {
        Catalogs::embedded()
    }
}

/// Which catalog data a result was computed with (CAT-3).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct CatalogVersion {
    /// Where the data came from: a path, or the original file name for embedded copies.
    pub source: String,
    /// The catalog's top-level `changeNumber` (0 when the file has none).
    pub change_number: u64,
    /// SHA-256 of the catalog's text, lowercase hex. The embedded service-tag copy carries the
    /// hash of the file it was derived from, so it and that file have the same version.
    pub content_hash: String,
}

impl CatalogVersion {
    /// A version for `text` read from `source`.
    pub fn of_text(source: &str, change_number: u64, text: &[u8]) -> CatalogVersion {
        CatalogVersion {
            source: source.to_string(),
            change_number,
            content_hash: sha256_hex(text),
        }
    }

    /// CAT-3 / PAL-5.5: may `newer` replace this loaded version? A lower change number is refused
    /// unless `force`; the same change number with different content is allowed (a republished
    /// file) but not silent, so it yields a warning.
    pub fn check_replacement(
        &self,
        newer: &CatalogVersion,
        force: bool,
    ) -> Result<Option<String>, String> {
        if newer.change_number < self.change_number {
            let msg = format!(
                "catalog `{}` has changeNumber {}, lower than the loaded `{}` ({})",
                newer.source, newer.change_number, self.source, self.change_number
            );
            return if force {
                Ok(Some(format!("{msg}; replaced because forced")))
            } else {
                Err(format!("{msg}; refused (force to downgrade)"))
            };
        }
        if newer.change_number == self.change_number && newer.content_hash != self.content_hash {
            return Ok(Some(format!(
                "catalog `{}` has the same changeNumber {} as `{}` but different content",
                newer.source, newer.change_number, self.source
            )));
        }
        Ok(None)
    }
}

impl fmt::Display for CatalogVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let short = self.content_hash.get(..12).unwrap_or(&self.content_hash);
        write!(
            f,
            "{} (changeNumber {}, sha256 {short})",
            self.source, self.change_number
        )
    }
}

/// Lowercase hex SHA-256 of `bytes`.
pub(crate) fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cat_3_embedded_catalogs_carry_versions() {
        let c = Catalogs::embedded();
        let [tags, fqdn] = c.versions();
        assert_eq!(tags.change_number, 364);
        assert_eq!(tags.content_hash.len(), 64);
        assert!(tags.source.contains("ServiceTags_Public_20250728.json"));
        assert_eq!(fqdn.change_number, 1);
        assert_eq!(fqdn.content_hash.len(), 64);
    }

    #[test]
    fn cat_3_lower_change_number_refused_unless_forced() {
        let old = CatalogVersion::of_text("a.json", 364, b"a");
        let lower = CatalogVersion::of_text("b.json", 363, b"b");
        assert!(old.check_replacement(&lower, false).is_err());
        assert!(old.check_replacement(&lower, true).unwrap().is_some());
        let higher = CatalogVersion::of_text("c.json", 365, b"c");
        assert_eq!(old.check_replacement(&higher, false), Ok(None));
        let same = CatalogVersion::of_text("d.json", 364, b"d");
        assert!(old.check_replacement(&same, false).unwrap().is_some());
        assert_eq!(old.check_replacement(&old.clone(), false), Ok(None));
    }

    #[test]
    fn cat_3_sha256_is_lowercase_hex() {
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
