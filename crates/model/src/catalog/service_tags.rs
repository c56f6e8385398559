//! The service tag catalog (CAT-1, CAT-2): which prefixes `Storage.WestUS` stands for, and
//! where a tag may be used.
//!
//! Microsoft publishes one JSON file per cloud every week (`ServiceTags_Public_<date>.json`,
//! CAT-1.1); the discovery API returns the same `values` for one subscription and location
//! (CAT-1.2). Both load with [`ServiceTags::from_json`]. The tag's `name` is its identity: a dot
//! does not make a tag regional (`AzureFrontDoor.Backend` is global), only `region` does, and
//! region keys are not always the lowercased name suffix (`Storage.FranceCentral` has region
//! `centralfrance`), so lookups go by name and nothing is derived from its spelling.
//!
//! The built-in tags `VirtualNetwork`, `AzureLoadBalancer` and `Internet` (NSG-8) are not in the
//! file: they depend on the network being evaluated, so the policy engine expands them itself and
//! [`ServiceTags::is_builtin`] only recognises them.
//!
//! A copy of one file ships in the binary ([`ServiceTags::embedded`]) in a compact derived form
//! (`catalogs/servicetags-public.txt.gz`, see `catalogs/README.md`), so that the tool works offline;
//! users load a newer file with [`ServiceTags::load`].

use super::access::{self, as_u64, get, item, missing, wrong, At};
use super::{compact, CatalogVersion};
use crate::diag::Diagnostic;
use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use serde::Serialize;
use serde_json::{Map, Value};
use std::collections::HashMap;
use std::net::IpAddr;
use std::path::Path;
use std::sync::{Arc, OnceLock};

/// The compact copy of `ServiceTags_Public_20250728.json` (see `catalogs/README.md`).
static EMBEDDED: &[u8] = include_bytes!("../../../../catalogs/servicetags-public.txt.gz");

/// The network features a tag may list (CAT-1.1).
const FEATURES: [&str; 5] = ["API", "NSG", "UDR", "FW", "VSE"];

/// Built-in tags (NSG-8) and their classic spellings (NSG-2.4), with the canonical spelling.
const BUILTIN: [(&str, &str); 6] = [
    ("VirtualNetwork", "VirtualNetwork"),
    ("VIRTUAL_NETWORK", "VirtualNetwork"),
    ("AzureLoadBalancer", "AzureLoadBalancer"),
    ("AZURE_LOADBALANCER", "AzureLoadBalancer"),
    ("Internet", "Internet"),
    ("INTERNET", "Internet"),
];

/// One entry of the catalog: a tag such as `Storage` or `Storage.WestUS`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ServiceTag {
    /// The name in the file's case (`Storage.WestUS`); lookups ignore case.
    pub name: String,
    /// Lowercase region key (`westus`), `""` for a global tag.
    pub region: String,
    /// Numeric region id, 0 for a global tag.
    pub region_id: u64,
    /// The tag's own version (`properties.changeNumber`).
    pub change_number: u64,
    /// `Azure` in the public file.
    pub platform: String,
    /// `AzureStorage`; may be `""` (`AzureCloud`).
    pub system_service: String,
    /// IPv4 and IPv6 prefixes, in file order, host bits cleared.
    pub address_prefixes: Vec<IpNet>,
    /// `API`, `NSG`, `UDR`, `FW`, `VSE` as listed; `None` when the file says `null` (unknown).
    pub network_features: Option<Vec<String>>,
}

impl ServiceTag {
    /// Whether this is a regional variant (decided by `region`, not by a dot in the name).
    pub fn is_regional(&self) -> bool {
        !self.region.is_empty()
    }

    /// Whether `ip` falls in one of the tag's prefixes.
    pub fn contains(&self, ip: IpAddr) -> bool {
        self.address_prefixes.iter().any(|p| p.contains(&ip))
    }

    /// The IPv4 prefixes (CAT-2: expansion is kept per family).
    pub fn ipv4(&self) -> impl Iterator<Item = Ipv4Net> + '_ {
        self.address_prefixes.iter().filter_map(|p| match p {
            IpNet::V4(n) => Some(*n),
            IpNet::V6(_) => None,
        })
    }

    /// The IPv6 prefixes.
    pub fn ipv6(&self) -> impl Iterator<Item = Ipv6Net> + '_ {
        self.address_prefixes.iter().filter_map(|p| match p {
            IpNet::V6(n) => Some(*n),
            IpNet::V4(_) => None,
        })
    }

    /// Whether the tag lists `feature`; `None` when its features are unknown (`null`).
    pub fn has_feature(&self, feature: &str) -> Option<bool> {
        self.network_features
            .as_ref()
            .map(|fs| fs.iter().any(|f| f.eq_ignore_ascii_case(feature.trim())))
    }
}

/// A loaded service tag catalog. Cloning is cheap: the tags are shared.
#[derive(Debug, Clone)]
pub struct ServiceTags {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    version: CatalogVersion,
    /// The original file name (`ServiceTags_Public_20250728.json`), kept through compact copies.
    origin: String,
    cloud: String,
    published: Option<String>,
    tags: Vec<ServiceTag>,
    index: HashMap<String, usize>,
    warnings: Vec<Diagnostic>,
}

/// The parts a service tag catalog is built from, whatever its file format.
#[derive(Debug)]
pub(crate) struct Parts {
    pub version: CatalogVersion,
    pub origin: String,
    pub cloud: String,
    pub published: Option<String>,
    pub tags: Vec<ServiceTag>,
    pub warnings: Vec<Diagnostic>,
}

impl ServiceTags {
    /// The copy shipped in the binary, decoded at first use and shared afterwards.
    ///
    /// The copy is checked by the test suite; should it still fail to decode, the result is an
    /// empty catalog whose version names the problem and whose [`warnings`](Self::warnings) hold
    /// it, so every tag lookup fails visibly instead of the program aborting.
    pub fn embedded() -> ServiceTags {
        static DECODED: OnceLock<ServiceTags> = OnceLock::new();
        DECODED
            .get_or_init(|| {
                ServiceTags::from_bytes("embedded", EMBEDDED).unwrap_or_else(|e| {
                    ServiceTags::build(Parts {
                        version: CatalogVersion::of_text(
                            &format!("embedded service tags (unreadable: {})", e.message),
                            0,
                            EMBEDDED,
                        ),
                        origin: "embedded".to_string(),
                        cloud: String::new(),
                        published: None,
                        tags: Vec::new(),
                        warnings: vec![e],
                    })
                })
            })
            .clone()
    }

    /// Parse a service tag file (CAT-1.1) or a discovery API response (CAT-1.2). `source` names
    /// the text in diagnostics and in the version; when it is a file name of the form
    /// `ServiceTags_<Cloud>_<YYYYMMDD>.json` the publication date is taken from it.
    pub fn from_json(source: &str, text: &str) -> Result<ServiceTags, Diagnostic> {
        let (value, _) = access::parse_fast(source, text)?;
        let mut warnings = Vec::new();
        match decode(source, &value, &mut warnings) {
            Ok(d) => Ok(ServiceTags::build(Parts {
                version: CatalogVersion::of_text(source, d.change_number, text.as_bytes()),
                origin: file_name(source).to_string(),
                cloud: d.cloud,
                published: published_from_name(source),
                tags: d.tags,
                warnings: access::locate_all(source, text, warnings),
            })),
            Err(e) => Err(access::locate_all(source, text, vec![e.clone()])
                .pop()
                .unwrap_or(e)),
        }
    }

    /// Load a file: the JSON of [`from_json`](Self::from_json), that JSON gzip'd, or a compact
    /// copy such as the embedded one ([`to_compact`](Self::to_compact)).
    pub fn load(path: &Path) -> Result<ServiceTags, Diagnostic> {
        let bytes = access::read_bytes(path)?;
        ServiceTags::from_bytes(&path.display().to_string(), &bytes)
    }

    /// [`load`](Self::load) for bytes already in memory.
    pub fn from_bytes(source: &str, bytes: &[u8]) -> Result<ServiceTags, Diagnostic> {
        let inflated;
        let bytes = if compact::is_gzip(bytes) {
            inflated = compact::gunzip(source, bytes)?;
            &inflated[..]
        } else {
            bytes
        };
        let text = access::utf8(source, bytes)?;
        if compact::is_compact(text) {
            compact::decode(source, text).map(ServiceTags::build)
        } else {
            ServiceTags::from_json(source, text)
        }
    }

    /// The catalog in the compact format, gzip'd: what `catalogs/servicetags-public.txt.gz` holds.
    pub fn to_compact(&self) -> std::io::Result<Vec<u8>> {
        compact::gzip(&compact::encode(self))
    }

    pub(crate) fn build(parts: Parts) -> ServiceTags {
        let mut index = HashMap::with_capacity(parts.tags.len());
        for (i, t) in parts.tags.iter().enumerate() {
            index.entry(t.name.to_ascii_lowercase()).or_insert(i);
        }
        ServiceTags {
            inner: Arc::new(Inner {
                version: parts.version,
                origin: parts.origin,
                cloud: parts.cloud,
                published: parts.published,
                tags: parts.tags,
                index,
                warnings: parts.warnings,
            }),
        }
    }

    /// A tag by name, ignoring case (CAT-2). `Storage` is the global tag (all regions),
    /// `Storage.WestUS` the regional one. Built-in tags are not in the catalog (see
    /// [`is_builtin`](Self::is_builtin)).
    pub fn get(&self, name: &str) -> Option<&ServiceTag> {
        let i = *self.inner.index.get(&name.trim().to_ascii_lowercase())?;
        self.inner.tags.get(i)
    }

    /// The regional variant of tag `base` for an Azure location (`westus`, `West US`): by name
    /// `<base>.<location>` first, then by the `region` key, which for some regions is not the
    /// location's name (`Storage.FranceCentral` has region `centralfrance`).
    pub fn regional(&self, base: &str, location: &str) -> Option<&ServiceTag> {
        let loc: String = location
            .chars()
            .filter(|c| !c.is_whitespace())
            .collect::<String>()
            .to_ascii_lowercase();
        let base = base.trim();
        if loc.is_empty() || base.is_empty() {
            return None;
        }
        self.get(&format!("{base}.{loc}"))
            .filter(|t| t.is_regional())
            .or_else(|| {
                let prefix = format!("{}.", base.to_ascii_lowercase());
                self.iter()
                    .find(|t| t.region == loc && t.name.to_ascii_lowercase().starts_with(&prefix))
            })
    }

    /// The version recorded in decisions (CAT-3).
    pub fn version(&self) -> &CatalogVersion {
        &self.inner.version
    }

    /// Number of tags.
    pub fn len(&self) -> usize {
        self.inner.tags.len()
    }

    pub fn is_empty(&self) -> bool {
        self.inner.tags.is_empty()
    }

    /// All tags in file order.
    pub fn iter(&self) -> std::slice::Iter<'_, ServiceTag> {
        self.inner.tags.iter()
    }

    /// The file's `cloud` (`Public`), `""` when absent.
    pub fn cloud(&self) -> &str {
        &self.inner.cloud
    }

    /// The original file name, kept through compact copies.
    pub fn origin(&self) -> &str {
        &self.inner.origin
    }

    /// Publication date `YYYY-MM-DD` from the file name, when it has the standard form. Used to
    /// report a stale catalog (CAT-2: older than 4 weeks).
    pub fn published(&self) -> Option<&str> {
        self.inner.published.as_deref()
    }

    /// Located warnings from loading (host bits cleared, a `nextLink` not followed, ...).
    pub fn warnings(&self) -> &[Diagnostic] {
        &self.inner.warnings
    }

    /// CAT-2: may tag `name` be used where `feature` is needed (`NSG` for NSG rules, `UDR` for a
    /// route's `addressPrefix`, `FW` for firewall rules; `VSE` and `API` are accepted too)?
    ///
    /// `Ok(None)`: yes. `Ok(Some(warning))`: the tag's features are `null` (unknown) and lenient
    /// mode assumes yes. `Err(reason)`: no — an unknown tag, a tag without the feature, unknown
    /// features in strict mode, or a built-in tag outside NSG rules.
    pub fn check_feature(
        &self,
        name: &str,
        feature: &str,
        strict: bool,
    ) -> Result<Option<String>, String> {
        let Some(want) = FEATURES
            .iter()
            .copied()
            .find(|f| f.eq_ignore_ascii_case(feature.trim()))
        else {
            return Err(format!(
                "unknown network feature `{feature}`; expected one of {}",
                FEATURES.join(", ")
            ));
        };
        let place = match want {
            "NSG" => "NSG rules",
            "UDR" => "route address prefixes",
            "FW" => "firewall rules",
            "VSE" => "virtual network service endpoints",
            _ => "the service tag discovery API",
        };
        if let Some(canonical) = ServiceTags::builtin_canonical(name) {
            return if want == "NSG" {
                Ok(None)
            } else {
                Err(format!(
                    "`{canonical}` is a built-in NSG tag (NSG-8), not a catalogued service tag, \
                     and cannot be used in {place}"
                ))
            };
        }
        let Some(tag) = self.get(name) else {
            return Err(format!(
                "unknown service tag `{}`: not in the service tag catalog {}",
                name.trim(),
                self.version()
            ));
        };
        match &tag.network_features {
            Some(fs) if fs.iter().any(|f| f.eq_ignore_ascii_case(want)) => Ok(None),
            Some(fs) => Err(format!(
                "service tag `{}` cannot be used in {place}: its networkFeatures [{}] lack `{want}`",
                tag.name,
                fs.join(", ")
            )),
            None if strict => Err(format!(
                "service tag `{}` has networkFeatures null (unknown), so its use in {place} \
                 cannot be confirmed (strict mode)",
                tag.name
            )),
            None => Ok(Some(format!(
                "service tag `{}` has networkFeatures null (unknown); assuming it can be used \
                 in {place}",
                tag.name
            ))),
        }
    }

    /// Whether `name` is a built-in tag (`VirtualNetwork`, `AzureLoadBalancer`, `Internet`, or a
    /// classic spelling `VIRTUAL_NETWORK`, `AZURE_LOADBALANCER`, `INTERNET`; any case). These
    /// are not in the catalog file (NSG-8).
    pub fn is_builtin(name: &str) -> bool {
        ServiceTags::builtin_canonical(name).is_some()
    }

    /// The canonical spelling of a built-in tag (`virtual_network` → `VirtualNetwork`).
    pub fn builtin_canonical(name: &str) -> Option<&'static str> {
        let name = name.trim();
        BUILTIN
            .iter()
            .find(|(spelling, _)| spelling.eq_ignore_ascii_case(name))
            .map(|(_, canonical)| *canonical)
    }
}

/// The last path component of `source`.
fn file_name(source: &str) -> &str {
    source.rsplit(['/', '\\']).next().unwrap_or(source)
}

/// `2025-07-28` from `.../ServiceTags_Public_20250728.json` (also `.json.gz`).
pub(crate) fn published_from_name(source: &str) -> Option<String> {
    let name = file_name(source);
    let stem = name.strip_suffix(".gz").unwrap_or(name);
    let stem = stem.strip_suffix(".json").unwrap_or(stem);
    let date = stem.rsplit('_').next()?;
    if date.len() != 8 || !date.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let (y, m, d) = (&date[..4], &date[4..6], &date[6..]);
    let (month, day) = (m.parse::<u8>().ok()?, d.parse::<u8>().ok()?);
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) {
        return None;
    }
    Some(format!("{y}-{m}-{d}"))
}

struct Decoded {
    change_number: u64,
    cloud: String,
    tags: Vec<ServiceTag>,
}

fn decode(file: &str, root: &Value, warnings: &mut Vec<Diagnostic>) -> Result<Decoded, Diagnostic> {
    let at = At {
        value: root,
        pointer: "",
    };
    let obj = root.as_object().ok_or_else(|| {
        wrong(
            file,
            at,
            "(document)",
            "a service tag file: an object with `changeNumber`, `cloud` and `values`",
        )
    })?;
    let change_number = match get(file, obj, "", "changeNumber")? {
        Some(p) => as_u64(p.value)
            .ok_or_else(|| wrong(file, p.at(), "changeNumber", "an unsigned integer"))?,
        None => {
            warnings.push(
                Diagnostic::warning("no top-level `changeNumber`: the catalog's version is 0")
                    .at(file, "")
                    .field("changeNumber"),
            );
            0
        }
    };
    let cloud = string_or(file, obj, "", "cloud")?;
    if let Some(p) = get(file, obj, "", "nextLink")? {
        match p.value.as_str() {
            Some(s) if s.trim().is_empty() => {}
            Some(_) => warnings.push(
                Diagnostic::warning(
                    "this is one page of a paged answer; the tags of the other pages are missing",
                )
                .at(file, &p.pointer)
                .field("nextLink")
                .expected("all pages, merged into one `values` array"),
            ),
            None => return Err(wrong(file, p.at(), "nextLink", "a URL string")),
        }
    }
    let values = get(file, obj, "", "values")?
        .ok_or_else(|| missing(file, "", "values", "an array of service tags"))?;
    let list = values
        .value
        .as_array()
        .ok_or_else(|| wrong(file, values.at(), "values", "an array of service tags"))?;
    let mut tags = Vec::with_capacity(list.len());
    let mut seen: HashMap<String, usize> = HashMap::with_capacity(list.len());
    for (i, v) in list.iter().enumerate() {
        let pointer = item(&values.pointer, i);
        let tag = decode_tag(file, v, &pointer, warnings)?;
        if let Some(first) = seen.insert(tag.name.to_ascii_lowercase(), i) {
            return Err(Diagnostic::error(format!(
                "service tag `{}` is listed twice (first at {}/{first}); names ignore case",
                tag.name, values.pointer
            ))
            .at(file, &format!("{pointer}/name"))
            .field("name"));
        }
        tags.push(tag);
    }
    Ok(Decoded {
        change_number,
        cloud,
        tags,
    })
}

fn decode_tag(
    file: &str,
    v: &Value,
    pointer: &str,
    warnings: &mut Vec<Diagnostic>,
) -> Result<ServiceTag, Diagnostic> {
    let at = At { value: v, pointer };
    let obj = v.as_object().ok_or_else(|| {
        wrong(
            file,
            at,
            "values[]",
            "a service tag: `{name, id, properties}`",
        )
    })?;
    let name_p = get(file, obj, pointer, "name")?.ok_or_else(|| {
        missing(
            file,
            pointer,
            "name",
            "the tag's name, e.g. `Storage.WestUS`",
        )
    })?;
    let name = name_p
        .value
        .as_str()
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .ok_or_else(|| wrong(file, name_p.at(), "name", "a non-empty string"))?
        .to_string();
    let props_p = get(file, obj, pointer, "properties")?
        .ok_or_else(|| missing(file, pointer, "properties", "the tag's properties object"))?;
    let props = props_p
        .value
        .as_object()
        .ok_or_else(|| wrong(file, props_p.at(), "properties", "an object"))?;
    let pp = props_p.pointer.as_str();
    let prefixes_p = get(file, props, pp, "addressPrefixes")?
        .ok_or_else(|| missing(file, pp, "addressPrefixes", "an array of CIDR prefixes"))?;
    let list = prefixes_p.value.as_array().ok_or_else(|| {
        wrong(
            file,
            prefixes_p.at(),
            "addressPrefixes",
            "an array of CIDR prefixes",
        )
    })?;
    let mut address_prefixes = Vec::with_capacity(list.len());
    for (i, p) in list.iter().enumerate() {
        let ptr = item(&prefixes_p.pointer, i);
        let at = At {
            value: p,
            pointer: &ptr,
        };
        let text = p
            .as_str()
            .ok_or_else(|| wrong(file, at, "addressPrefixes", "a CIDR prefix string"))?;
        let (net, cleared) = parse_prefix(text).ok_or_else(|| {
            wrong(
                file,
                at,
                "addressPrefixes",
                "a CIDR prefix such as `13.83.72.16/28`",
            )
        })?;
        if cleared {
            warnings.push(
                Diagnostic::warning(format!("prefix of `{name}` has host bits set; using {net}"))
                    .at(file, &ptr)
                    .field("addressPrefixes")
                    .found(text),
            );
        }
        address_prefixes.push(net);
    }
    let network_features = match get(file, props, pp, "networkFeatures")? {
        None => None,
        Some(f) => {
            let list = f.value.as_array().ok_or_else(|| {
                wrong(
                    file,
                    f.at(),
                    "networkFeatures",
                    "an array of feature names or null",
                )
            })?;
            let mut features = Vec::with_capacity(list.len());
            for (i, x) in list.iter().enumerate() {
                let ptr = item(&f.pointer, i);
                let s = x.as_str().ok_or_else(|| {
                    wrong(
                        file,
                        At {
                            value: x,
                            pointer: &ptr,
                        },
                        "networkFeatures",
                        "a feature name such as `NSG`",
                    )
                })?;
                features.push(s.trim().to_string());
            }
            Some(features)
        }
    };
    Ok(ServiceTag {
        change_number: u64_or(file, props, pp, "changeNumber")?,
        region: string_or(file, props, pp, "region")?.to_ascii_lowercase(),
        region_id: u64_or(file, props, pp, "regionId")?,
        platform: string_or(file, props, pp, "platform")?,
        system_service: string_or(file, props, pp, "systemService")?,
        name,
        address_prefixes,
        network_features,
    })
}

/// An optional string property, `""` when absent.
fn string_or(
    file: &str,
    obj: &Map<String, Value>,
    pointer: &str,
    name: &str,
) -> Result<String, Diagnostic> {
    match get(file, obj, pointer, name)? {
        None => Ok(String::new()),
        Some(p) => p
            .value
            .as_str()
            .map(|s| s.trim().to_string())
            .ok_or_else(|| wrong(file, p.at(), name, "a string")),
    }
}

/// An optional unsigned integer property (number or decimal string), 0 when absent.
fn u64_or(
    file: &str,
    obj: &Map<String, Value>,
    pointer: &str,
    name: &str,
) -> Result<u64, Diagnostic> {
    match get(file, obj, pointer, name)? {
        None => Ok(0),
        Some(p) => as_u64(p.value).ok_or_else(|| wrong(file, p.at(), name, "an unsigned integer")),
    }
}

/// A CIDR prefix or bare address; the flag says host bits were cleared.
pub(crate) fn parse_prefix(text: &str) -> Option<(IpNet, bool)> {
    let t = text.trim();
    if t.contains('/') {
        let net: IpNet = t.parse().ok()?;
        let trunc = net.trunc();
        Some((trunc, trunc != net))
    } else {
        t.parse::<IpAddr>().ok().map(|ip| (IpNet::from(ip), false))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::str::FromStr;

    /// The weekly file the embedded copy was made from, when this checkout has it.
    fn full_file() -> Option<std::path::PathBuf> {
        let p = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../../shared/data/azure-servicetags/ServiceTags_Public_20250728.json");
        if p.exists() {
            Some(p)
        } else {
            eprintln!("skipped: {} is not present", p.display());
            None
        }
    }

    fn ip(s: &str) -> IpAddr {
        IpAddr::from_str(s).unwrap()
    }

    const SAMPLE: &str = r#"{ "changeNumber": 364, "cloud": "Public",
      "values": [
        { "name": "Storage.WestUS", "id": "Storage.WestUS",
          "properties": { "changeNumber": 12, "region": "westus", "regionId": 37, "platform": "Azure",
            "systemService": "AzureStorage", "addressPrefixes": ["13.83.72.16/28", "2603:1030:a0a::/48"],
            "networkFeatures": ["API", "NSG", "UDR", "FW"] } },
        { "name": "AzureFrontDoor.Backend", "id": "AzureFrontDoor.Backend",
          "properties": { "changeNumber": 3, "region": "", "regionId": 0, "platform": "Azure",
            "systemService": "AzureFrontDoor", "addressPrefixes": ["13.73.248.16/29"],
            "networkFeatures": ["API", "NSG"] } },
        { "name": "AzureCloud", "id": "AzureCloud",
          "properties": { "changeNumber": 1, "region": "", "regionId": 0, "platform": "Azure",
            "systemService": "", "addressPrefixes": ["20.0.0.0/8"], "networkFeatures": null } }
      ] }"#;

    #[test]
    fn cat_1_1_sample_shape_loads() {
        let t = ServiceTags::from_json("ServiceTags_Public_20250728.json", SAMPLE).unwrap();
        assert_eq!(t.len(), 3);
        assert_eq!(t.version().change_number, 364);
        assert_eq!(t.cloud(), "Public");
        assert_eq!(t.published(), Some("2025-07-28"));
        let s = t.get("storage.westus").unwrap();
        assert_eq!(s.name, "Storage.WestUS");
        assert_eq!(s.region, "westus");
        assert_eq!(s.region_id, 37);
        assert_eq!(s.change_number, 12);
        assert_eq!(s.system_service, "AzureStorage");
        assert_eq!(s.ipv4().count(), 1);
        assert_eq!(s.ipv6().count(), 1);
        assert!(s.contains(ip("13.83.72.20")));
        assert!(s.contains(ip("2603:1030:a0a::1")));
        assert!(!s.contains(ip("13.83.72.32")));
        assert_eq!(t.get("AzureCloud").unwrap().system_service, "");
        assert!(t.warnings().is_empty());
    }

    #[test]
    fn cat_1_1_regional_tag_uses_region_field() {
        let t = ServiceTags::from_json("s.json", SAMPLE).unwrap();
        assert!(t.get("Storage.WestUS").unwrap().is_regional());
        let fd = t.get("AZUREFRONTDOOR.BACKEND").unwrap();
        assert_eq!(fd.region, "");
        assert!(!fd.is_regional());
    }

    #[test]
    fn cat_1_1_null_features_are_unknown() {
        let t = ServiceTags::from_json("s.json", SAMPLE).unwrap();
        let cloud = t.get("azurecloud").unwrap();
        assert_eq!(cloud.network_features, None);
        assert_eq!(cloud.has_feature("NSG"), None);
    }

    #[test]
    fn cat_1_2_discovery_api_shape_with_string_numbers() {
        let text = r#"{ "name": "Public", "id": "/subscriptions/x/providers/Microsoft.Network/serviceTags/Public",
          "type": "Microsoft.Network/serviceTags", "changeNumber": "63", "cloud": "Public",
          "values": [ { "name": "ApiManagement", "id": "ApiManagement",
            "properties": { "changeNumber": "7", "region": "", "regionId": "0", "state": "GA",
              "systemService": "AzureApiManagement", "addressPrefixes": ["13.64.39.16/32"],
              "networkFeatures": ["API", "NSG"] } } ],
          "nextLink": "" }"#;
        let t = ServiceTags::from_json("api.json", text).unwrap();
        assert_eq!(t.version().change_number, 63);
        assert_eq!(t.get("apimanagement").unwrap().change_number, 7);
        assert_eq!(t.published(), None);
        assert!(t.warnings().is_empty());
    }

    #[test]
    fn cat_1_2_next_link_is_a_located_warning() {
        let text = "{\"changeNumber\": 1, \"values\": [],\n \"nextLink\": \"https://x/next\"}";
        let t = ServiceTags::from_json("api.json", text).unwrap();
        let w = &t.warnings()[0];
        assert_eq!(w.severity, crate::diag::Severity::Warning);
        assert_eq!(w.pointer, "/nextLink");
        assert_eq!(w.line, Some(2));
    }

    #[test]
    fn fmt_3_property_names_ignore_case() {
        let text = r#"{"ChangeNumber": 2, "Values": [{"Name": "X", "Properties":
            {"AddressPrefixes": ["10.0.0.0/8"], "NetworkFeatures": ["nsg"], "Region": "WestUS"}}]}"#;
        let t = ServiceTags::from_json("x.json", text).unwrap();
        let x = t.get("x").unwrap();
        assert_eq!(x.region, "westus");
        assert!(t.check_feature("x", "NSG", true).is_ok());
    }

    #[test]
    fn fmt_12_bad_prefix_is_located() {
        let text = "{\"changeNumber\": 1, \"values\": [\n {\"name\": \"A\", \"properties\": {\n  \"addressPrefixes\": [\"10.0.0.0/33\"]}}]}";
        let e = ServiceTags::from_json("bad.json", text).unwrap_err();
        assert!(e.is_error());
        assert_eq!(e.file, "bad.json");
        assert_eq!(e.pointer, "/values/0/properties/addressPrefixes/0");
        assert_eq!(e.line, Some(3));
        assert_eq!(e.found.as_deref(), Some("\"10.0.0.0/33\""));
    }

    #[test]
    fn fmt_12_duplicate_tag_is_an_error() {
        let text = r#"{"changeNumber": 1, "values": [
            {"name": "A", "properties": {"addressPrefixes": []}},
            {"name": "a", "properties": {"addressPrefixes": []}}]}"#;
        let e = ServiceTags::from_json("dup.json", text).unwrap_err();
        assert_eq!(e.pointer, "/values/1/name");
        assert_eq!(e.line, Some(3));
    }

    #[test]
    fn fmt_2_comments_and_bom_accepted() {
        let text = "\u{feff}{ // c\n \"changeNumber\": 1, \"values\": [{\"name\": \"A\", \"properties\": {\"addressPrefixes\": [\"10.0.0.1/8\"],},},], }";
        let t = ServiceTags::from_json("c.json", text).unwrap();
        assert_eq!(
            t.get("a").unwrap().address_prefixes,
            vec![IpNet::from_str("10.0.0.0/8").unwrap()]
        );
        assert_eq!(t.warnings().len(), 1);
        assert_eq!(t.warnings()[0].line, Some(2));
    }

    #[test]
    fn cat_2_feature_checks() {
        let t = ServiceTags::from_json("s.json", SAMPLE).unwrap();
        assert_eq!(t.check_feature("Storage.WestUS", "UDR", true), Ok(None));
        assert_eq!(t.check_feature("storage.westus", "fw", true), Ok(None));
        let e = t
            .check_feature("AzureFrontDoor.Backend", "FW", false)
            .unwrap_err();
        assert!(e.contains("lack `FW`"), "{e}");
        assert!(t.check_feature("AzureCloud", "NSG", true).is_err());
        let w = t
            .check_feature("AzureCloud", "NSG", false)
            .unwrap()
            .unwrap();
        assert!(w.contains("null"), "{w}");
        assert!(t.check_feature("NoSuchTag", "NSG", false).is_err());
        assert!(t.check_feature("Storage.WestUS", "XYZ", false).is_err());
    }

    #[test]
    fn nsg_8_builtins_are_not_in_the_file() {
        for name in [
            "VirtualNetwork",
            "virtual_network",
            "AzureLoadBalancer",
            "AZURE_LOADBALANCER",
            "Internet",
            "INTERNET",
        ] {
            assert!(ServiceTags::is_builtin(name), "{name}");
        }
        assert_eq!(
            ServiceTags::builtin_canonical("VIRTUAL_NETWORK"),
            Some("VirtualNetwork")
        );
        assert!(!ServiceTags::is_builtin("Storage"));
        let t = ServiceTags::embedded();
        for name in ["VirtualNetwork", "AzureLoadBalancer", "Internet"] {
            assert!(t.get(name).is_none(), "{name}");
            assert_eq!(t.check_feature(name, "NSG", true), Ok(None));
            assert!(t.check_feature(name, "FW", true).is_err());
        }
    }

    #[test]
    fn cat_1_1_published_date_from_file_name() {
        assert_eq!(
            published_from_name("/a/b/ServiceTags_Public_20250728.json").as_deref(),
            Some("2025-07-28")
        );
        assert_eq!(
            published_from_name("ServiceTags_AzureGovernment_20250101.json.gz").as_deref(),
            Some("2025-01-01")
        );
        assert_eq!(published_from_name("tags.json"), None);
        assert_eq!(published_from_name("x_20251399.json"), None);
    }

    #[test]
    fn cat_1_1_embedded_copy_has_the_2025_public_file() {
        let t = ServiceTags::embedded();
        assert_eq!(t.len(), 2967);
        assert_eq!(t.version().change_number, 364);
        assert_eq!(t.cloud(), "Public");
        assert_eq!(t.published(), Some("2025-07-28"));
        assert_eq!(t.origin(), "ServiceTags_Public_20250728.json");
        assert!(t.version().source.contains("embedded"));
        assert!(t.warnings().is_empty());
        let nulls = t.iter().filter(|t| t.network_features.is_none()).count();
        assert_eq!(nulls, 1498);
        let prefixes: usize = t.iter().map(|t| t.address_prefixes.len()).sum();
        assert_eq!(prefixes, 90489);
    }

    #[test]
    fn cat_1_1_embedded_regional_and_dotted_global_tags() {
        let t = ServiceTags::embedded();
        let fd = t.get("AzureFrontDoor.Backend").unwrap();
        assert_eq!(fd.region, "");
        assert!(!fd.is_regional());
        let s = t.get("storage.westus").unwrap();
        assert_eq!(s.name, "Storage.WestUS");
        assert_eq!(s.region, "westus");
        assert!(s.is_regional());
        let global = t.get("Storage").unwrap();
        assert!(!global.is_regional());
        // The global tag covers its regions, though with aggregated prefixes, not the same list.
        let covered = |p: &IpNet| global.address_prefixes.iter().any(|g| g.contains(p));
        assert!(s.address_prefixes.iter().all(covered));
        assert!(!s
            .address_prefixes
            .iter()
            .all(|p| global.address_prefixes.contains(p)));
        // Region keys are not the lowercased name suffix.
        assert_eq!(
            t.get("Storage.FranceCentral").unwrap().region,
            "centralfrance"
        );
        assert_eq!(t.get("AzureCloud").unwrap().system_service, "");
    }

    #[test]
    fn cat_2_regional_variant_by_location() {
        let t = ServiceTags::embedded();
        let name = |base: &str, loc: &str| t.regional(base, loc).map(|x| x.name.as_str());
        assert_eq!(name("Storage", "westus"), Some("Storage.WestUS"));
        assert_eq!(name("storage", "West US"), Some("Storage.WestUS"));
        assert_eq!(
            name("Storage", "francecentral"),
            Some("Storage.FranceCentral")
        );
        assert_eq!(
            name("Storage", "centralfrance"),
            Some("Storage.FranceCentral")
        );
        assert_eq!(name("AzureFrontDoor", "Backend"), None);
        assert_eq!(name("Storage", ""), None);
        assert_eq!(name("NoSuchTag", "westus"), None);
    }

    #[test]
    fn cat_2_embedded_feature_checks() {
        let t = ServiceTags::embedded();
        assert_eq!(t.check_feature("Storage", "NSG", true), Ok(None));
        assert_eq!(t.check_feature("Storage", "UDR", true), Ok(None));
        assert_eq!(t.check_feature("Storage", "FW", true), Ok(None));
        assert_eq!(t.check_feature("Storage", "VSE", true), Ok(None));
        assert!(t.check_feature("Storage.WestUS", "VSE", true).is_err());
        // The global tag may be used in routes and firewalls; its regional variants only in NSGs.
        assert_eq!(t.check_feature("AzureMonitor", "FW", true), Ok(None));
        assert!(t.check_feature("AzureMonitor.EastUS", "FW", true).is_err());
        assert_eq!(
            t.check_feature("AzureMonitor.EastUS", "NSG", true),
            Ok(None)
        );
        assert_eq!(t.get("ActionGroup.WestUS").unwrap().network_features, None);
        assert!(t.check_feature("ActionGroup.WestUS", "NSG", true).is_err());
        assert!(t
            .check_feature("ActionGroup.WestUS", "NSG", false)
            .unwrap()
            .is_some());
    }

    #[test]
    fn cat_2_embedded_addresses_in_named_tags() {
        let t = ServiceTags::embedded();
        for (addr, tag) in [
            ("70.37.57.58", "AppServiceManagement"),
            ("52.151.25.45", "AppServiceManagement"),
            ("13.92.40.198", "AzureMonitor"),
            ("20.42.69.10", "Sql.EastUS"),
            ("13.82.152.20", "Storage.EastUS"),
            ("40.71.10.140", "EventHub.EastUS"),
        ] {
            assert!(t.get(tag).unwrap().contains(ip(addr)), "{addr} in {tag}");
        }
        assert!(!t.get("Sql.WestUS").unwrap().contains(ip("20.42.69.10")));
    }

    #[test]
    fn cat_1_1_full_file_loads_and_equals_embedded_copy() {
        let Some(path) = full_file() else { return };
        let full = ServiceTags::load(&path).unwrap();
        assert_eq!(full.len(), 2967);
        assert!(full.warnings().is_empty());
        assert_eq!(full.published(), Some("2025-07-28"));
        assert_eq!(full.get("AzureFrontDoor.Backend").unwrap().region, "");
        assert_eq!(full.get("Storage.WestUS").unwrap().region, "westus");
        assert_eq!(
            full.iter().filter(|t| t.network_features.is_none()).count(),
            1498
        );
        let embedded = ServiceTags::embedded();
        assert_eq!(embedded.version().content_hash, full.version().content_hash);
        assert_eq!(
            embedded.version().change_number,
            full.version().change_number
        );
        assert_eq!(embedded.cloud(), full.cloud());
        assert_eq!(embedded.len(), full.len());
        for (a, b) in embedded.iter().zip(full.iter()) {
            assert_eq!(a, b);
        }
    }

    #[test]
    fn cat_3_compact_round_trip() {
        let t = ServiceTags::from_json("ServiceTags_Public_20250728.json", SAMPLE).unwrap();
        let bytes = t.to_compact().unwrap();
        let back = ServiceTags::from_bytes("copy.gz", &bytes).unwrap();
        assert_eq!(back.version().content_hash, t.version().content_hash);
        assert_eq!(back.version().change_number, 364);
        assert_eq!(back.published(), Some("2025-07-28"));
        assert_eq!(back.origin(), "ServiceTags_Public_20250728.json");
        assert!(back.iter().eq(t.iter()));
    }

    #[test]
    fn cat_3_gzipped_json_loads() {
        use std::io::Write;
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        enc.write_all(SAMPLE.as_bytes()).unwrap();
        let gz = enc.finish().unwrap();
        let t = ServiceTags::from_bytes("s.json.gz", &gz).unwrap();
        assert_eq!(t.len(), 3);
        assert_eq!(
            t.version().content_hash,
            super::super::sha256_hex(SAMPLE.as_bytes())
        );
    }

    #[test]
    fn fmt_12_non_catalog_inputs_are_errors() {
        for text in [
            "",
            "[]",
            "null",
            "{}",
            "{\"values\": 3}",
            "{\"values\": [1]}",
            "{\"values\": [{\"name\": \"\"}]}",
            "\u{0}",
        ] {
            assert!(ServiceTags::from_json("x.json", text).is_err(), "{text:?}");
        }
        assert!(ServiceTags::from_bytes("x", &[0xff, 0xfe, 0x00]).is_err());
        assert!(ServiceTags::from_bytes("x", &[0x1f, 0x8b, 0x00]).is_err());
    }

    fn arb_json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            any::<f64>().prop_map(Value::from),
            prop::sample::select(vec![
                "values",
                "name",
                "properties",
                "addressPrefixes",
                "networkFeatures",
                "10.0.0.0/8",
                "::/0",
                "1.2.3.4/40",
                "NSG",
                "changeNumber",
                "63",
                "-1",
                "",
            ])
            .prop_map(Value::from),
            ".{0,12}".prop_map(Value::from),
        ];
        leaf.prop_recursive(5, 64, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                prop::collection::vec(
                    (
                        prop::sample::select(vec![
                            "values",
                            "Values",
                            "name",
                            "properties",
                            "addressPrefixes",
                            "networkFeatures",
                            "changeNumber",
                            "region",
                            "regionId",
                            "cloud",
                            "nextLink",
                            "systemService",
                            "x",
                        ]),
                        inner
                    ),
                    0..6
                )
                .prop_map(|kv| Value::Object(
                    kv.into_iter().map(|(k, v)| (k.to_string(), v)).collect()
                )),
            ]
        })
    }

    proptest! {
        #[test]
        fn cat_1_from_json_never_panics_on_bytes(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
            let _ = ServiceTags::from_bytes("p", &bytes);
            let text = String::from_utf8_lossy(&bytes);
            let _ = ServiceTags::from_json("p", &text);
        }

        #[test]
        fn cat_1_from_json_never_panics_on_json(v in arb_json()) {
            let text = v.to_string();
            let _ = ServiceTags::from_json("p", &text);
            let wrapped = serde_json::json!({"changeNumber": 1, "values": [v]}).to_string();
            let _ = ServiceTags::from_json("p", &wrapped);
            let tag = serde_json::json!({"changeNumber": 1, "values": [{"name": "T", "properties": v}]}).to_string();
            let _ = ServiceTags::from_json("p", &tag);
        }
    }
}
