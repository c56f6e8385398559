//! The FQDN tag catalog (CAT-4): what a firewall rule naming `fqdnTags: ["WindowsUpdate"]`
//! lets through.
//!
//! Azure lists FQDN tag names but does not publish their contents, so Palisade ships its own
//! (`catalogs/fqdn-tags.json`, embedded as [`FqdnTags::embedded`]), marks approximations as
//! `partial`, and lets users lay their own file over it ([`FqdnTags::extend`]) as they learn more.
//! Azure's own listing (`GET .../azureFirewallFqdnTags`: `value[] {name, properties
//! {fqdnTagName}}`) loads too, as names without contents.

use super::access::{self, as_bool, as_u64, get, item, missing, wrong, At};
use super::dependencies::check_name;
use super::{sha256_hex, CatalogVersion};
use crate::diag::Diagnostic;
use serde::Serialize;
use serde_json::{Map, Value};
use std::collections::HashMap;
use std::path::Path;
use std::sync::OnceLock;

/// Palisade's FQDN tag catalog (see `catalogs/README.md`).
static EMBEDDED: &str = include_str!("../../../../catalogs/fqdn-tags.json");

/// Application rule protocols a tag may apply with (FW-7).
const PROTOCOLS: [&str; 3] = ["Http", "Https", "Mssql"];

/// One FQDN tag.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FqdnTag {
    /// The tag's name as written (`WindowsUpdate`); lookups ignore case.
    pub name: String,
    pub display_name: Option<String>,
    /// `Http:80`, `Https:443`: protocol in canonical case, colon, port.
    pub protocols: Vec<String>,
    /// Names and patterns (FW-6.3, CAT-8), lowercased.
    pub target_fqdns: Vec<String>,
    /// The contents are known to be incomplete or approximate.
    pub partial: bool,
    /// Where the contents come from.
    pub source: Option<String>,
    pub note: Option<String>,
}

impl FqdnTag {
    /// The protocols as (protocol, port) pairs.
    pub fn protocol_ports(&self) -> impl Iterator<Item = (&str, u16)> + '_ {
        self.protocols.iter().filter_map(|p| {
            let (proto, port) = p.split_once(':')?;
            Some((proto, port.parse().ok()?))
        })
    }
}

/// A loaded FQDN tag catalog.
#[derive(Debug, Clone)]
pub struct FqdnTags {
    version: CatalogVersion,
    tags: Vec<FqdnTag>,
    index: HashMap<String, usize>,
    warnings: Vec<Diagnostic>,
}

impl FqdnTags {
    /// The catalog shipped in the binary (`catalogs/fqdn-tags.json`).
    ///
    /// The file is checked by the test suite; should it still fail to parse, the result is an
    /// empty catalog whose version and [`warnings`](Self::warnings) name the problem.
    pub fn embedded() -> FqdnTags {
        static PARSED: OnceLock<FqdnTags> = OnceLock::new();
        PARSED
            .get_or_init(|| {
                let mut tags =
                    FqdnTags::from_json("fqdn-tags.json", EMBEDDED).unwrap_or_else(|e| {
                        let mut empty = FqdnTags::empty(CatalogVersion::of_text(
                            &format!("fqdn-tags.json (unreadable: {})", e.message),
                            0,
                            EMBEDDED.as_bytes(),
                        ));
                        empty.warnings.push(e);
                        empty
                    });
                tags.version.source = "fqdn-tags.json (embedded)".to_string();
                tags
            })
            .clone()
    }

    fn empty(version: CatalogVersion) -> FqdnTags {
        FqdnTags {
            version,
            tags: Vec::new(),
            index: HashMap::new(),
            warnings: Vec::new(),
        }
    }

    /// Parse Palisade's shape `{changeNumber, values: [{name, displayName, protocols, targetFqdns,
    /// partial, source, note}]}` or Azure's name listing `{value: [{name, properties}]}`.
    pub fn from_json(source: &str, text: &str) -> Result<FqdnTags, Diagnostic> {
        let doc = access::parse_located(source, text)?;
        let mut warnings = Vec::new();
        let (change_number, tags) =
            decode(source, &doc.value, &mut warnings).map_err(|e| doc.locate(e))?;
        let mut out = FqdnTags::empty(CatalogVersion::of_text(
            source,
            change_number,
            text.as_bytes(),
        ));
        out.warnings = warnings.into_iter().map(|w| doc.locate(w)).collect();
        for t in tags {
            out.insert(t);
        }
        Ok(out)
    }

    /// Load a file (see [`from_json`](Self::from_json)).
    pub fn load(path: &Path) -> Result<FqdnTags, Diagnostic> {
        let text = access::read_text(path)?;
        FqdnTags::from_json(&path.display().to_string(), &text)
    }

    fn insert(&mut self, tag: FqdnTag) {
        let key = tag.name.to_ascii_lowercase();
        match self.index.get(&key).and_then(|&i| self.tags.get_mut(i)) {
            Some(slot) => *slot = tag,
            None => {
                self.index.insert(key, self.tags.len());
                self.tags.push(tag);
            }
        }
    }

    /// Lay `other` (a user's file) over this catalog: its tags replace same-named ones (names
    /// ignore case) and add new ones. The version becomes `"<this> + <other>"`, with the other's
    /// change number and a hash of both hashes, so decisions name both files.
    pub fn extend(&mut self, other: FqdnTags) {
        let combined = format!(
            "{}\n{}",
            self.version.content_hash, other.version.content_hash
        );
        self.version = CatalogVersion {
            source: format!("{} + {}", self.version.source, other.version.source),
            change_number: other.version.change_number,
            content_hash: sha256_hex(combined.as_bytes()),
        };
        self.warnings.extend(other.warnings);
        for t in other.tags {
            self.insert(t);
        }
    }

    /// A tag by name, ignoring case.
    pub fn get(&self, name: &str) -> Option<&FqdnTag> {
        let i = *self.index.get(&name.trim().to_ascii_lowercase())?;
        self.tags.get(i)
    }

    /// FW-7 use of a tag in a firewall rule: `Err` for an unknown tag, a warning for a tag without
    /// contents (it matches nothing until curated).
    pub fn check_use(&self, name: &str) -> Result<Option<String>, String> {
        let Some(tag) = self.get(name) else {
            return Err(format!(
                "unknown FQDN tag `{}`: not in the FQDN tag catalog {}",
                name.trim(),
                self.version
            ));
        };
        if tag.target_fqdns.is_empty() {
            return Ok(Some(format!(
                "FQDN tag `{}` has no contents in the catalog {}: it matches nothing until \
                 curated (Azure does not publish tag contents, CAT-4)",
                tag.name, self.version
            )));
        }
        Ok(None)
    }

    pub fn version(&self) -> &CatalogVersion {
        &self.version
    }

    pub fn len(&self) -> usize {
        self.tags.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tags.is_empty()
    }

    pub fn iter(&self) -> std::slice::Iter<'_, FqdnTag> {
        self.tags.iter()
    }

    /// Located warnings from loading.
    pub fn warnings(&self) -> &[Diagnostic] {
        &self.warnings
    }
}

fn decode(
    file: &str,
    root: &Value,
    warnings: &mut Vec<Diagnostic>,
) -> Result<(u64, Vec<FqdnTag>), Diagnostic> {
    let expected = "an FQDN tag catalog: `{changeNumber, values: [...]}`";
    let obj = root.as_object().ok_or_else(|| {
        wrong(
            file,
            At {
                value: root,
                pointer: "",
            },
            "(document)",
            expected,
        )
    })?;
    let change_number = match get(file, obj, "", "changeNumber")? {
        Some(p) => as_u64(p.value)
            .ok_or_else(|| wrong(file, p.at(), "changeNumber", "an unsigned integer"))?,
        None => 0,
    };
    let (list, names_only) = match (get(file, obj, "", "values")?, get(file, obj, "", "value")?) {
        (Some(v), _) => (v, false),
        (None, Some(v)) => (v, true),
        (None, None) => return Err(missing(file, "", "values", expected)),
    };
    let items = list
        .value
        .as_array()
        .ok_or_else(|| wrong(file, list.at(), "values", "an array of FQDN tags"))?;
    if names_only && !items.is_empty() {
        warnings.push(
            Diagnostic::warning(
                "Azure's tag listing names tags without their contents: they match nothing",
            )
            .at(file, &list.pointer),
        );
    }
    let mut tags = Vec::with_capacity(items.len());
    let mut seen: HashMap<String, usize> = HashMap::new();
    for (i, v) in items.iter().enumerate() {
        let pointer = item(&list.pointer, i);
        let tag = decode_tag(file, v, &pointer, names_only, warnings)?;
        if let Some(first) = seen.insert(tag.name.to_ascii_lowercase(), i) {
            return Err(Diagnostic::error(format!(
                "FQDN tag `{}` is listed twice (first at {}/{first}); names ignore case",
                tag.name, list.pointer
            ))
            .at(file, &pointer)
            .field("name"));
        }
        tags.push(tag);
    }
    Ok((change_number, tags))
}

fn opt_string(
    file: &str,
    obj: &Map<String, Value>,
    pointer: &str,
    name: &str,
) -> Result<Option<String>, Diagnostic> {
    match get(file, obj, pointer, name)? {
        None => Ok(None),
        Some(p) => p
            .value
            .as_str()
            .map(|s| Some(s.trim().to_string()))
            .ok_or_else(|| wrong(file, p.at(), name, "a string")),
    }
}

fn decode_tag(
    file: &str,
    v: &Value,
    pointer: &str,
    names_only: bool,
    warnings: &mut Vec<Diagnostic>,
) -> Result<FqdnTag, Diagnostic> {
    let obj = v.as_object().ok_or_else(|| {
        wrong(
            file,
            At { value: v, pointer },
            "values[]",
            "an FQDN tag: `{name, protocols, targetFqdns}`",
        )
    })?;
    let listed_name = match get(file, obj, pointer, "properties")? {
        Some(p) if names_only => match p.value.as_object() {
            Some(props) => opt_string(file, props, &p.pointer, "fqdnTagName")?,
            None => None,
        },
        _ => None,
    };
    let name = match listed_name.filter(|n| !n.is_empty()) {
        Some(n) => n,
        None => opt_string(file, obj, pointer, "name")?
            .filter(|n| !n.is_empty())
            .ok_or_else(|| {
                missing(
                    file,
                    pointer,
                    "name",
                    "the tag's name, e.g. `WindowsUpdate`",
                )
            })?,
    };
    let protocols = match get(file, obj, pointer, "protocols")? {
        None => vec!["Http:80".to_string(), "Https:443".to_string()],
        Some(p) => {
            let list = p.value.as_array().ok_or_else(|| {
                wrong(
                    file,
                    p.at(),
                    "protocols",
                    "an array such as [\"Http:80\", \"Https:443\"]",
                )
            })?;
            let mut out = Vec::with_capacity(list.len());
            for (i, x) in list.iter().enumerate() {
                let ptr = item(&p.pointer, i);
                let at = At {
                    value: x,
                    pointer: &ptr,
                };
                let canonical = x.as_str().and_then(protocol).ok_or_else(|| {
                    wrong(
                        file,
                        at,
                        "protocols",
                        "`Http:<port>`, `Https:<port>` or `Mssql:<port>`",
                    )
                })?;
                out.push(canonical);
            }
            out
        }
    };
    let mut target_fqdns: Vec<String> = Vec::new();
    if let Some(p) = get(file, obj, pointer, "targetFqdns")? {
        let list = p
            .value
            .as_array()
            .ok_or_else(|| wrong(file, p.at(), "targetFqdns", "an array of names"))?;
        for (i, x) in list.iter().enumerate() {
            let ptr = item(&p.pointer, i);
            let at = At {
                value: x,
                pointer: &ptr,
            };
            let raw = x
                .as_str()
                .ok_or_else(|| wrong(file, at, "targetFqdns", "a name or pattern string"))?;
            let lowered = raw.trim().to_lowercase();
            let (fqdn, note) = if lowered == "*" {
                ("*".to_string(), None)
            } else {
                check_name(&lowered).map_err(|why| {
                    wrong(file, at, "targetFqdns", "a name or pattern (FW-6.3, CAT-8)")
                        .found(format!("{raw:?}: {why}"))
                })?
            };
            if let Some(note) = note {
                warnings.push(
                    Diagnostic::warning(note)
                        .at(file, &ptr)
                        .field("targetFqdns")
                        .found(raw),
                );
            }
            if target_fqdns.contains(&fqdn) {
                warnings.push(
                    Diagnostic::warning(format!("`{fqdn}` is listed twice in tag `{name}`"))
                        .at(file, &ptr)
                        .field("targetFqdns"),
                );
                continue;
            }
            target_fqdns.push(fqdn);
        }
    }
    let partial = match get(file, obj, pointer, "partial")? {
        None => names_only,
        Some(p) => {
            as_bool(p.value).ok_or_else(|| wrong(file, p.at(), "partial", "true or false"))?
        }
    };
    Ok(FqdnTag {
        display_name: opt_string(file, obj, pointer, "displayName")?,
        source: opt_string(file, obj, pointer, "source")?,
        note: opt_string(file, obj, pointer, "note")?,
        name,
        protocols,
        target_fqdns,
        partial,
    })
}

/// `https:443` → `Https:443`.
fn protocol(text: &str) -> Option<String> {
    let (proto, port) = text.trim().split_once(':')?;
    let proto = PROTOCOLS
        .iter()
        .find(|p| p.eq_ignore_ascii_case(proto.trim()))?;
    let port = port.trim();
    if port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let port: u16 = port.parse().ok().filter(|p| *p != 0)?;
    Some(format!("{proto}:{port}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn cat_4_embedded_catalog() {
        let t = FqdnTags::embedded();
        assert_eq!(t.len(), 8);
        assert_eq!(t.version().change_number, 1);
        assert!(t.version().source.contains("embedded"));
        assert!(t.warnings().is_empty(), "{:?}", t.warnings());
        let ase = t.get("appserviceenvironment").unwrap();
        assert_eq!(ase.name, "AppServiceEnvironment");
        assert_eq!(ase.target_fqdns.len(), 92);
        assert!(ase.partial);
        assert!(ase
            .target_fqdns
            .contains(&"gr-prod-*.cloudapp.net".to_string()));
        assert_eq!(
            ase.protocol_ports().collect::<Vec<_>>(),
            vec![("Http", 80), ("Https", 443)]
        );
        let wu = t.get("WindowsUpdate").unwrap();
        assert_eq!(
            wu.target_fqdns,
            vec![
                "*.update.microsoft.com",
                "*.windowsupdate.microsoft.com",
                "*.windowsupdate.com",
                "download.windowsupdate.com",
                "ctldl.windowsupdate.com"
            ]
        );
        assert_eq!(t.check_use("windowsupdate"), Ok(None));
        assert!(t.check_use("AzureBackup").unwrap().is_some());
        assert!(t.check_use("NoSuchTag").is_err());
    }

    #[test]
    fn cat_4_user_file_extends_embedded() {
        let mut t = FqdnTags::embedded();
        let before = t.version().clone();
        let user = FqdnTags::from_json(
            "mine.json",
            r#"{"changeNumber": 7, "values": [
                {"name": "azurebackup", "targetFqdns": ["*.backup.windowsazure.com"], "protocols": ["https:443"]},
                {"name": "MyTag", "targetFqdns": ["Example.COM"]}]}"#,
        )
        .unwrap();
        t.extend(user);
        assert_eq!(t.len(), 9);
        let b = t.get("AzureBackup").unwrap();
        assert_eq!(b.name, "azurebackup");
        assert_eq!(b.protocols, vec!["Https:443"]);
        assert!(!b.partial);
        assert_eq!(t.get("mytag").unwrap().target_fqdns, vec!["example.com"]);
        assert_eq!(
            t.get("mytag").unwrap().protocols,
            vec!["Http:80", "Https:443"]
        );
        assert_eq!(t.version().change_number, 7);
        assert!(t.version().source.contains("mine.json"));
        assert_ne!(t.version().content_hash, before.content_hash);
    }

    #[test]
    fn cat_4_azure_listing_gives_names_only() {
        let text = r#"{"value": [{"id": "/subscriptions/s/providers/Microsoft.Network/azureFirewallFqdnTags/WindowsUpdate",
            "name": "WindowsUpdate", "type": "Microsoft.Network/azureFirewallFqdnTags",
            "properties": {"provisioningState": "Succeeded", "fqdnTagName": "WindowsUpdate"}}]}"#;
        let t = FqdnTags::from_json("list.json", text).unwrap();
        let wu = t.get("windowsupdate").unwrap();
        assert!(wu.partial && wu.target_fqdns.is_empty());
        assert_eq!(t.warnings().len(), 1);
    }

    #[test]
    fn fmt_12_bad_fqdn_tag_entries_are_located() {
        let text = "{\"values\": [{\"name\": \"A\",\n \"targetFqdns\": [\"ocsp.digicert.0\"]}]}";
        let e = FqdnTags::from_json("t.json", text).unwrap_err();
        assert_eq!(e.pointer, "/values/0/targetFqdns/0");
        assert_eq!(e.line, Some(2));
        let text = "{\"values\": [{\"name\": \"A\", \"protocols\": [\"Ftp:21\"]}]}";
        assert!(FqdnTags::from_json("t.json", text).is_err());
        let text = "{\"values\": [{\"name\": \"A\"}, {\"name\": \"a\"}]}";
        assert_eq!(
            FqdnTags::from_json("t.json", text).unwrap_err().pointer,
            "/values/1"
        );
        let text = "{\"values\": [{\"name\": \"A\", \"targetFqdns\": [\"*ctldl.windowsupdate.com\", \"a.b\", \"A.B\"]}]}";
        let t = FqdnTags::from_json("t.json", text).unwrap();
        assert_eq!(t.warnings().len(), 2);
        assert_eq!(t.get("a").unwrap().target_fqdns.len(), 2);
    }

    #[test]
    fn fw_7_protocol_spellings() {
        assert_eq!(protocol("http:80").as_deref(), Some("Http:80"));
        assert_eq!(protocol(" MSSQL : 1433 ").as_deref(), Some("Mssql:1433"));
        assert_eq!(protocol("Http:0"), None);
        assert_eq!(protocol("Http:+80"), None);
        assert_eq!(protocol("Http"), None);
        assert_eq!(protocol("Http:70000"), None);
    }

    proptest! {
        #[test]
        fn cat_4_from_json_never_panics(text in ".{0,200}") {
            let _ = FqdnTags::from_json("p", &text);
        }

        #[test]
        fn cat_4_from_json_never_panics_on_shaped_json(
            name in prop_oneof![Just(serde_json::json!("T")), Just(serde_json::json!(5)), Just(serde_json::Value::Null)],
            targets in prop::collection::vec(".{0,20}", 0..5),
            protocols in prop::collection::vec(".{0,10}", 0..3),
            partial in prop_oneof![Just(serde_json::json!(true)), Just(serde_json::json!("x"))],
        ) {
            let text = serde_json::json!({"values": [{"name": name, "targetFqdns": targets,
                "protocols": protocols, "partial": partial}]}).to_string();
            let _ = FqdnTags::from_json("p", &text);
        }
    }
}
