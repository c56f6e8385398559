//! The analyses on the shared scenarios: the ADX dependency check gives exactly
//! `adx-dependencies/coverage.yaml` (DIAG-8), the asymmetric-routing scenario reports the broken
//! path and not the fixed one (DIAG-9), and the lint findings of the layered-NSG scenario are the
//! real ones (`tests/data/layered-nsg-lint.yaml`).

use palisade_analyze::{asymmetric, deps, lint};
use palisade_model::catalog::DependencyCatalog;
use palisade_policy::Snapshot;
use serde::Deserialize;
use std::path::{Path, PathBuf};

fn shared() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/scenarios")
}

/// A scenario loaded the way every front end loads it (`palisade-load`); the scenarios are valid.
fn snapshot(dir: &str) -> Snapshot {
    let loaded = palisade_load::load(&palisade_load::Source::files([shared()
        .join(dir)
        .join("network.json")]));
    assert!(!loaded.diagnostics.has_errors(), "{}", loaded.diagnostics);
    loaded.snapshot.expect("a valid scenario compiles")
}

#[derive(Deserialize)]
struct Coverage {
    source: String,
    expect: CoverageExpect,
}

#[derive(Deserialize)]
struct CoverageExpect {
    entries: usize,
    covered: usize,
    bypassed: usize,
    not_covered: usize,
    missing: Vec<Missing>,
    covered_by: Vec<CoveredBy>,
}

#[derive(Deserialize)]
struct Missing {
    category: String,
    #[serde(rename = "domainName")]
    domain_name: String,
    port: u16,
    protocol: String,
    status: String,
}

#[derive(Deserialize)]
struct CoveredBy {
    #[serde(rename = "domainName")]
    domain_name: String,
    port: u16,
    rule: String,
}

#[test]
fn diag_8_adx_dependency_coverage() {
    let dir = shared().join("adx-dependencies");
    let cov: Coverage =
        serde_saphyr::from_str(&std::fs::read_to_string(dir.join("coverage.yaml")).unwrap())
            .unwrap();
    let (catalog, warnings) = DependencyCatalog::load(&dir.join("dependencies.json"));
    let catalog = catalog.unwrap();
    assert!(warnings.iter().all(|w| !w.is_error()));
    let report = deps::check(
        &snapshot("adx-dependencies"),
        &catalog,
        cov.source.parse().unwrap(),
    );
    let e = &cov.expect;
    assert_eq!(report.summary.entries, e.entries);
    assert_eq!(report.summary.covered, e.covered);
    assert_eq!(report.summary.bypassed, e.bypassed);
    assert_eq!(report.summary.required_not_covered, e.not_covered);
    let missing: Vec<(String, String, u16, String, String)> = report
        .entries
        .iter()
        .filter(|x| !matches!(x.status, deps::Status::Covered | deps::Status::Bypassed))
        .map(|x| {
            (
                x.category.clone(),
                x.domain_name.clone(),
                x.port,
                x.protocol.to_string(),
                format!("{:?}", x.status),
            )
        })
        .collect();
    let want: Vec<(String, String, u16, String, String)> = e
        .missing
        .iter()
        .map(|m| {
            (
                m.category.clone(),
                m.domain_name.clone(),
                m.port,
                m.protocol.clone(),
                m.status.clone(),
            )
        })
        .collect();
    let (mut missing, mut want) = (missing, want);
    missing.sort();
    want.sort();
    assert_eq!(missing, want);
    for c in &e.covered_by {
        let got = report
            .entries
            .iter()
            .find(|x| x.domain_name == c.domain_name && x.port == c.port)
            .unwrap();
        let rule = got
            .decided_by
            .as_ref()
            .and_then(|d| d.rule.clone())
            .unwrap_or_default();
        assert_eq!(
            rule,
            format!("adx-application-rcg/adx-dependencies/{}", c.rule),
            "{}",
            c.domain_name
        );
        assert_eq!(got.decided_by.as_ref().unwrap().resource, "adx-fw-policy");
    }
    // Every entry that is not covered carries a suggestion.
    assert!(report
        .entries
        .iter()
        .filter(|x| x.status != deps::Status::Covered)
        .all(|x| x.suggestion.is_some()));
    assert!(!report.ok());
}

#[test]
fn diag_9_asymmetric_routing_reports_broken_not_fixed() {
    let report = asymmetric::check(&snapshot("asymmetric-routing"), &[]);
    let mgmt = |subnet: &str| {
        report
            .findings
            .iter()
            .filter(|f| f.subnet.ends_with(subnet) && f.entry.ends_with("Inbound-management"))
            .count()
    };
    assert!(mgmt("ase-broken-subnet") >= 1, "{:#?}", report.findings);
    assert_eq!(mgmt("ase-fixed-subnet"), 0, "{:#?}", report.findings);
    let broken = report
        .findings
        .iter()
        .find(|f| {
            f.subnet.ends_with("ase-broken-subnet") && f.entry.ends_with("Inbound-management")
        })
        .unwrap();
    assert_eq!(
        (
            broken.route_table.as_str(),
            broken.route.as_str(),
            broken.reply_next_hop.as_str()
        ),
        ("rt-broken", "to-firewall", "VirtualAppliance")
    );
    // The management addresses of the flows are among the astray sources on the broken subnet.
    let covers = |f: &asymmetric::Finding, a: &str| {
        f.source_prefixes.iter().any(|p| {
            p.parse::<ipnet::IpNet>()
                .unwrap()
                .contains(&a.parse::<std::net::IpAddr>().unwrap())
        })
    };
    assert!(covers(broken, "70.37.57.58") && covers(broken, "52.151.25.45"));
    // On the fixed subnet, HTTPS from arbitrary clients still breaks — except the routed partner range.
    let https = report
        .findings
        .iter()
        .find(|f| f.subnet.ends_with("ase-fixed-subnet") && f.entry.ends_with("Inbound-app-https"))
        .unwrap();
    assert!(covers(https, "203.0.113.70"));
    assert!(!covers(https, "198.51.100.25"));
}

#[derive(Deserialize)]
struct LintExpect {
    findings: Vec<LintFinding>,
}

#[derive(Deserialize, PartialEq, Debug)]
struct LintFinding {
    code: String,
    resource: String,
    rule: Option<String>,
}

#[test]
fn lint_layered_nsg_findings_are_the_real_ones() {
    let text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/layered-nsg-lint.yaml"),
    )
    .unwrap();
    let expect: LintExpect = serde_saphyr::from_str(&text).unwrap();
    let got: Vec<LintFinding> = lint::lint(&snapshot("layered-nsg"))
        .into_iter()
        .map(|f| LintFinding {
            code: f.code.to_string(),
            resource: f.resource,
            rule: f.rule,
        })
        .collect();
    let mut want = expect.findings;
    let mut got = got;
    let key = |f: &LintFinding| (f.code.clone(), f.resource.clone(), f.rule.clone());
    want.sort_by_key(key);
    got.sort_by_key(key);
    assert_eq!(got, want);
}

#[test]
fn lint_ase_flags_the_intended_all_open_rule() {
    let findings = lint::lint(&snapshot("ase-egress-lockdown"));
    assert!(
        findings
            .iter()
            .any(|f| f.code == "all-open-rule" && f.rule.as_deref() == Some("Allow-all-outbound")),
        "{findings:#?}"
    );
    assert!(findings.iter().any(
        |f| f.code == "default-route-bypassed" && f.rule.as_deref() == Some("mgmt-70-37-57-58")
    ));
    // Service endpoints on a subnet forced through the firewall: no finding unless the firewall
    // also filters that service (its only Storage-like rule is the FQDN tag set).
    for f in &findings {
        assert!(!f.file.is_empty(), "{f:?} has no location");
    }
}

/// DIAG-8 on the ASE lockdown: NTP (`*:123`, Udp) is covered by the `Any` network rule; the
/// service-endpoint categories are Bypassed; the routed monitoring addresses leave by their
/// `→ Internet` routes (Bypassed); FQDN-tag names are Covered by the tag rule.
#[test]
fn diag_8_ase_catalog_on_the_ase_network() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../catalogs/dependencies/app-service-environment.json");
    let (catalog, _) = DependencyCatalog::load(&path);
    let report = deps::check(
        &snapshot("ase-egress-lockdown"),
        &catalog.unwrap(),
        "10.0.0.10".parse().unwrap(),
    );
    let status = |name: &str, port: u16| {
        report
            .entries
            .iter()
            .find(|e| e.domain_name == name && e.port == port)
            .map(|e| e.status)
            .unwrap_or_else(|| panic!("{name}:{port} not in report"))
    };
    assert_eq!(status("*", 123), deps::Status::Covered);
    assert_eq!(status("40.77.24.27", 443), deps::Status::Bypassed);
    assert_eq!(
        status("login.microsoftonline.com", 443),
        deps::Status::Covered
    );
    assert!(report
        .entries
        .iter()
        .filter(|e| e.category.contains("SQL"))
        .all(|e| e.status == deps::Status::Bypassed));
    let ntp = report
        .entries
        .iter()
        .find(|e| e.domain_name == "*" && e.port == 123)
        .unwrap();
    assert_eq!(
        ntp.decided_by.as_ref().unwrap().rule.as_deref(),
        Some("ase-network-rules/ntp")
    );
}
