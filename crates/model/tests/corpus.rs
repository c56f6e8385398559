//! Robustness over the real-world corpus (`../shared/corpus/azure-configs/`, 239 public templates,
//! REST API examples and CLI outputs). Every file ends in exactly one of:
//!
//! * **imported**: no error, and the counts of NSG rules, default rules, classic firewall rules,
//!   firewall-policy rules, routes and effective routes equal the manifest's
//!   (`azure-configs-manifest.tsv`);
//! * **rejected**: every error is located (file, line and column) and its cause is one of
//!   [`UNSUPPORTED`], each documented in `docs/import-support.md`;
//!
//! and none panics (each file runs under `catch_unwind`). At least 95% must be imported.
//!
//! # Comparing like with like
//!
//! The manifest counts the rule and route objects *as written* in each file; the importer builds
//! the network those files describe. The test closes the gap only with the importer's own output,
//! never by counting JSON itself:
//!
//! * **Templates: copy loops.** ARM expands a `copy` loop into `count` instances; the manifest
//!   counts its body once. The template is imported a second time with every `copy.count`
//!   (resource, property and variable loops) set to 1, so each loop body yields one instance;
//!   that import's counts are compared. (The normal import must still succeed; it decides
//!   imported/rejected.) Templates without loops import identically both ways.
//! * **Templates: linked templates** are followed by the importer, and their resources carry the
//!   linked file as origin. Only rules and routes whose origin is the file itself are counted;
//!   the linked file is checked as a corpus file of its own.
//! * **REST API examples** hold the request body and every response body (200, 201, sometimes
//!   202), and the manifest counts them all, while the importer reads one (200, else 201, else the
//!   request, FMT-1). Every body is imported on its own and the counts are summed. These imports
//!   only count; whether the file is imported or rejected is decided by the file's own import.
//! * **Set aside by design** (`FileSummary::set_aside`, each reported as a note): entries of
//!   `defaultSecurityRules[]` (NSG-3, FMT-7) are compared with the manifest's default-rule
//!   column; default rules given as resources, and the rules of effective-rule lists and security
//!   group views (observations, FMT-10), count as NSG rules as in the manifest; effective routes
//!   with its effective-route column; routes of virtual hub route tables (FMT-8) as routes; and
//!   definitions superseded by a same-named one in the same file (a child both inline and
//!   separate, a resource re-declared by a nested deployment, FMT-6) are added back.
//! * **The pre-2020 `firewallPolicies/ruleGroups` shape** is read with each legacy rule as a rule
//!   collection and each of its conditions as a rule; the manifest counts the legacy rules, so
//!   such a collection counts once.
//! * **Building blocks** (mspnp parameter files): their `RouteTable` blocks write `nextHop`
//!   rather than `nextHopType`, so the manifest, which counts objects with `nextHopType` as
//!   routes, does not count them; routes imported from those blocks are left out here too.
//! * **Parameters files** import no resources. The one that the manifest credits with rules
//!   (`multiplesecurityrules.parameters.json`, an array consumed by a property copy loop) is
//!   checked through its template: imported with this file, the template must yield exactly
//!   that many rules.

use palisade_model::catalog::Catalogs;
use palisade_model::import::{import_text, sibling_parameters, InputKind, SetAside};
use palisade_model::{load, validate, Diagnostic, ImportOptions, Network, Origin};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

/// Causes of rejection that are documented as unsupported (or invalid) input in
/// `docs/import-support.md`: (id, a fragment of the error message, the field if it matters).
const UNSUPPORTED: &[(&str, &str, Option<&str>)] = &[
    ("invalid-json", "invalid JSON", None),
    (
        "parent-not-in-input",
        "which is not defined in the input",
        None,
    ),
    (
        "collection-without-priority",
        "required field is missing",
        Some("priority"),
    ),
    // Validation reports the missing priority again as priority 0, out of FW-1's range.
    (
        "collection-without-priority",
        "rule collection priority outside 100-65000",
        Some("priority"),
    ),
    (
        "unknown-service-tag",
        "unknown service tag `",
        Some("destinationAddresses"),
    ),
    (
        "fqdn-without-dns-proxy",
        "FQDNs in network rules need the DNS proxy",
        Some("destinationFqdns"),
    ),
    (
        "subnet-outside-address-space",
        "subnet prefix outside the virtual network's address space",
        Some("addressPrefix"),
    ),
];

/// The files issue 17 names: their errors came only from values unknown offline, so each must
/// validate with warnings only, the unknown fields kept as unknown with their cause.
/// (file, resource, field, a fragment of the cause)
const UNKNOWN_ONLY: &[(&str, &str, &str, &str)] = &[
    (
        "Azure-Network-Security/Lab Templates/Lab Template - NetSec Demo Lab/Networking/firewall.json",
        "unresolved([parameters('resourceNames').firewallPolicy])",
        "name",
        "parameter 'resourceNames' has no value",
    ),
    (
        "Enterprise-Scale/eslzArm/subscriptionTemplates/azFw-basepolicy.json",
        "unresolved([variables('azFwPolicyName')])",
        "name",
        "parameter 'topLevelManagementGroupPrefix' has no value",
    ),
    (
        "azure-quickstart-templates/App-Service-Environment-AzFirewall/nestedtemplates/vnet.json",
        "unresolved([parameters('azureFirewallName')])/AppServiceEnvironment/Managed Identity API",
        "targetFqdns",
        "has no value",
    ),
];

fn shared() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/corpus")
}

/// One manifest row: the counts as written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Written {
    nsg_rules: usize,
    default_rules: usize,
    classic_rules: usize,
    policy_rules: usize,
    routes: usize,
    effective_routes: usize,
}

impl std::fmt::Display for Written {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "nsg {} (+{} default), fw classic {}, fw policy {}, routes {} (+{} effective)",
            self.nsg_rules,
            self.default_rules,
            self.classic_rules,
            self.policy_rules,
            self.routes,
            self.effective_routes
        )
    }
}

fn manifest() -> BTreeMap<String, Written> {
    let text = std::fs::read_to_string(shared().join("azure-configs-manifest.tsv")).unwrap();
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap().split('\t').collect();
    let col = |name: &str| header.iter().position(|h| *h == name).unwrap();
    let (path, nsg, def, classic, policy, routes, eff) = (
        col("path"),
        col("nsg_rules"),
        col("nsg_default_rules"),
        col("fw_classic_rules"),
        col("fw_policy_rules"),
        col("routes"),
        col("effective_routes"),
    );
    lines
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let c: Vec<&str> = l.split('\t').collect();
            let n = |i: usize| c[i].parse::<usize>().unwrap();
            // Manifest paths start `azure/`; the files sit under `azure-configs/`.
            let rel = c[path]
                .strip_prefix("azure/")
                .unwrap_or(c[path])
                .to_string();
            let w = Written {
                nsg_rules: n(nsg),
                default_rules: n(def),
                classic_rules: n(classic),
                policy_rules: n(policy),
                routes: n(routes),
                effective_routes: n(eff),
            };
            (rel, w)
        })
        .collect()
}

fn corpus_files(dir: &Path, root: &Path, out: &mut BTreeSet<String>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let p = entry.unwrap().path();
        if p.is_dir() {
            corpus_files(&p, root, out);
        } else {
            out.insert(p.strip_prefix(root).unwrap().display().to_string());
        }
    }
}

/// What the importer read, in the manifest's terms.
fn written(net: &Network, keep: &dyn Fn(&Origin) -> bool, set_aside: &SetAside) -> Written {
    let mine = |o: &Origin| keep(o);
    let nsg = net
        .network_security_groups
        .iter()
        .flat_map(|n| &n.security_rules)
        .filter(|r| mine(&r.origin))
        .count();
    let routes = net
        .route_tables
        .iter()
        .flat_map(|t| &t.routes)
        .filter(|r| mine(&r.origin))
        .count();
    let classic = net
        .azure_firewalls
        .iter()
        .flat_map(|f| &f.rule_collections)
        .flat_map(|c| &c.rules)
        .filter(|r| mine(&r.origin))
        .count();
    // A collection read from the pre-2020 `ruleGroups` shape is one legacy rule, which the
    // manifest counts once however many conditions (now rules) it holds; its origin is the
    // legacy rule (`.../rules/<n>`), where a collection of today's shape is in `ruleCollections`.
    let legacy =
        |c: &palisade_model::RuleCollection| c.origin.pointer.rsplit('/').nth(1) == Some("rules");
    let policy = net
        .firewall_policies
        .iter()
        .flat_map(|p| &p.rule_collection_groups)
        .flat_map(|g| &g.rule_collections)
        .map(|c| match legacy(c) {
            true => usize::from(mine(&c.origin)),
            false => c.rules.iter().filter(|r| mine(&r.origin)).count(),
        })
        .sum::<usize>();
    let s = set_aside;
    Written {
        nsg_rules: nsg + s.superseded.security_rules + s.default_rule_resources + s.observed_rules,
        default_rules: s.default_rules_in_arrays,
        classic_rules: classic,
        // Superseded firewall rules are not split by kind; the corpus has none.
        policy_rules: policy + s.superseded.firewall_rules,
        routes: routes + s.superseded.routes + s.hub_routes,
        effective_routes: s.observed_routes,
    }
}

fn sum(a: Written, b: Written) -> Written {
    Written {
        nsg_rules: a.nsg_rules + b.nsg_rules,
        default_rules: a.default_rules + b.default_rules,
        classic_rules: a.classic_rules + b.classic_rules,
        policy_rules: a.policy_rules + b.policy_rules,
        routes: a.routes + b.routes,
        effective_routes: a.effective_routes + b.effective_routes,
    }
}

/// Every `copy` loop's `count` set to 1 (resource, property and variable loops).
fn one_per_loop(v: &mut Value) {
    match v {
        Value::Object(map) => {
            for (k, child) in map.iter_mut() {
                if k.eq_ignore_ascii_case("copy") {
                    let loops: Vec<&mut Value> = match &mut *child {
                        Value::Array(items) => items.iter_mut().collect(),
                        other => vec![other],
                    };
                    for l in loops {
                        if let Some(o) = l.as_object_mut() {
                            if let Some(key) =
                                o.keys().find(|k| k.eq_ignore_ascii_case("count")).cloned()
                            {
                                o.insert(key, Value::from(1));
                            }
                        }
                    }
                }
                one_per_loop(child);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(one_per_loop),
        _ => {}
    }
}

/// Every body of a REST API example: the request's object parameters and each response body.
fn example_bodies(v: &Value) -> Vec<Value> {
    let mut out = vec![];
    if let Some(params) = v.get("parameters").and_then(Value::as_object) {
        out.extend(params.values().filter(|b| b.is_object()).cloned());
    }
    if let Some(responses) = v.get("responses").and_then(Value::as_object) {
        out.extend(responses.values().filter_map(|r| r.get("body")).cloned());
    }
    out
}

fn any(_: &Origin) -> bool {
    true
}

#[derive(Debug)]
enum Outcome {
    Imported,
    Rejected(&'static str, String),
    /// The importer's result disagrees with the manifest, or an error is undocumented.
    Failed(String),
}

fn cause(d: &Diagnostic) -> Option<&'static str> {
    UNSUPPORTED.iter().find_map(|(id, fragment, field)| {
        (d.message.contains(fragment) && field.is_none_or(|f| d.field.as_deref() == Some(f)))
            .then_some(*id)
    })
}

/// The corpus is JSON, so every error can name its file, line and column.
fn located(d: &Diagnostic) -> bool {
    !d.file.is_empty() && d.line.is_some() && d.column.is_some()
}

fn check(root: &Path, rel: &str, want: Written) -> Outcome {
    let path = root.join(rel);
    let name = path.display().to_string();
    let options = ImportOptions::default();
    let imported = load(std::slice::from_ref(&path), &options);
    // What `palisade validate` reports: the import's problems, then validation's.
    let mut validation = validate(&imported.network, &Catalogs::embedded(), false);
    palisade_model::json::locate_in_files(&mut validation);
    let errors: Vec<&Diagnostic> = imported
        .diagnostics
        .errors()
        .chain(validation.errors())
        .collect();
    if let Some(first) = errors.first() {
        for e in &errors {
            if !located(e) {
                return Outcome::Failed(format!("error without a location: {e}"));
            }
            if cause(e).is_none() {
                return Outcome::Failed(format!("undocumented error: {e}"));
            }
        }
        return Outcome::Rejected(cause(first).unwrap(), first.to_string());
    }
    let summary = &imported.files[0];
    let text = std::fs::read_to_string(&path).unwrap();
    let value = palisade_model::json::parse(&name, &text).unwrap().value;
    // A REST API example by its wrapper, whatever its body turned out to be (an observation...).
    let example = value.get("parameters").is_some() && value.get("responses").is_some();
    let got = match summary.kind {
        _ if example => example_bodies(&value)
            .iter()
            .map(|b| {
                let f = import_text("body.json", &b.to_string(), &options, None);
                written(&f.network, &any, &f.set_aside)
            })
            .fold(Written::default(), sum),
        InputKind::Template => {
            let mut doc = value.clone();
            one_per_loop(&mut doc);
            let opts = ImportOptions {
                parameters: sibling_parameters(&path),
                ..options.clone()
            };
            let f = import_text(&name, &doc.to_string(), &opts, path.parent());
            written(&f.network, &|o| o.file == name, &f.set_aside)
        }
        InputKind::Parameters if want != Written::default() => {
            // Rules held as parameter values: count them through the template that uses them.
            let template = path.with_file_name(
                path.file_name()
                    .unwrap()
                    .to_str()
                    .unwrap()
                    .replace(".parameters.json", ".json"),
            );
            let t = load(&[template], &options);
            written(&t.network, &any, &t.files[0].set_aside)
        }
        InputKind::BuildingBlocks => {
            // Building-block routes write `nextHop`, not `nextHopType`, so the manifest (which
            // counts objects with `nextHopType`) does not count them; leave them out here too.
            let route_blocks: Vec<String> = value["parameters"]["buildingBlocks"]["value"]
                .as_array()
                .unwrap()
                .iter()
                .enumerate()
                .filter(|(_, b)| b["type"] == "RouteTable")
                .map(|(i, _)| format!("/parameters/buildingBlocks/value/{i}/"))
                .collect();
            let keep = |o: &Origin| !route_blocks.iter().any(|p| o.pointer.starts_with(p));
            written(&imported.network, &keep, &summary.set_aside)
        }
        _ => written(&imported.network, &|o| o.file == name, &summary.set_aside),
    };
    if got == want {
        Outcome::Imported
    } else {
        Outcome::Failed(format!("imported {got}\n        manifest {want}"))
    }
}

#[test]
fn corpus_imports_or_rejects_every_file_as_documented() {
    let root = shared().join("azure-configs");
    let manifest = manifest();
    let mut on_disk = BTreeSet::new();
    corpus_files(&root, &root, &mut on_disk);
    let listed: BTreeSet<String> = manifest.keys().cloned().collect();
    assert_eq!(
        on_disk, listed,
        "files under azure-configs/ and manifest rows differ"
    );

    let doc = std::fs::read_to_string(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../docs/import-support.md"),
    )
    .expect("docs/import-support.md");
    for (id, _, _) in UNSUPPORTED {
        assert!(
            doc.contains(&format!("`{id}`")),
            "docs/import-support.md does not document `{id}`"
        );
    }

    // Messages name files by their full path; print them relative to the corpus.
    let prefix = format!("{}/", root.display());
    let mut imported = 0;
    let mut rejected: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    let mut failed = vec![];
    for (rel, want) in &manifest {
        let outcome =
            catch_unwind(AssertUnwindSafe(|| check(&root, rel, *want))).unwrap_or_else(|p| {
                let msg = p
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default();
                Outcome::Failed(format!("PANIC: {msg}"))
            });
        match outcome {
            Outcome::Imported => imported += 1,
            Outcome::Rejected(id, first) => rejected
                .entry(id)
                .or_default()
                .push(format!("{rel}\n        {}", first.replace(&prefix, ""))),
            Outcome::Failed(why) => {
                failed.push(format!("{rel}\n        {}", why.replace(&prefix, "")))
            }
        }
    }

    let total = manifest.len();
    println!("\ncorpus: {total} files");
    println!("  imported with the manifest's counts  {imported:>4}");
    for (id, files) in &rejected {
        println!("  rejected: {id:<28}{:>4}", files.len());
    }
    println!("  mismatched or undocumented           {:>4}", failed.len());
    for (id, files) in &rejected {
        for f in files {
            println!("\n[rejected: {id}] {f}");
        }
    }
    for f in &failed {
        println!("\n[FAILED] {f}");
    }
    assert!(
        failed.is_empty(),
        "{} file(s) failed; see the output above",
        failed.len()
    );
    // Issue 17: every file whose only problems are unknown values or the old policy shape
    // validates; at least 229 of the 239 do.
    assert!(imported >= 229, "only {imported} of {total} validate");
    let share = imported as f64 / total as f64;
    assert!(
        share >= 0.95,
        "only {imported} of {total} imported ({:.1}%)",
        share * 100.0
    );
}

#[test]
fn issue_17_files_with_unknown_values_validate_with_the_unknowns_named() {
    // spec FMT-4: a value known only at deployment is unknown, reported once where it stands.
    let root = shared().join("azure-configs");
    for (rel, resource, field, why) in UNKNOWN_ONLY {
        let path = root.join(rel);
        let imported = load(std::slice::from_ref(&path), &ImportOptions::default());
        let validation = validate(&imported.network, &Catalogs::embedded(), false);
        let errors: Vec<String> = imported
            .diagnostics
            .errors()
            .chain(validation.errors())
            .map(|d| d.to_string())
            .collect();
        assert!(errors.is_empty(), "{rel}: {errors:#?}");
        let unknown = imported
            .network
            .unknowns
            .iter()
            .find(|u| u.resource == *resource && u.field == *field)
            .unwrap_or_else(|| panic!("{rel}: no unknown `{field}` of {resource}"));
        assert!(unknown.why.contains(why), "{rel}: {}", unknown.why);
        // Reported once, at the value's own location, naming the cause.
        let reports: Vec<&Diagnostic> = imported
            .diagnostics
            .0
            .iter()
            .filter(|d| d.pointer == unknown.origin.pointer && d.message.contains("unknown"))
            .collect();
        assert_eq!(reports.len(), 1, "{rel}: {reports:#?}");
        assert!(reports[0].message.contains(why), "{}", reports[0].message);
        assert!(reports[0].line.is_some(), "{rel}: not located");
    }
}
