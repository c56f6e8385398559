//! PAL-5.3 audit rules and the shadow policy, and PAL-5.4's observe option, end to end on
//! loopback: curl through the explicit proxy to a local HTTP server, and the flow records.

mod common;

use common::*;
use palisade_flowlog::{query_where, AuditEntry, FlowRecord, Query};
use palisade_gateway::observe::Observe;
use palisade_gateway::policy::PolicySource;
use palisade_gateway::{Config, Gateway};
use std::path::Path;
use std::time::{Duration, SystemTime};

const NAMES: [&str; 4] = [
    "www.allowed.test=127.0.0.1",
    "trial.audit.test=127.0.0.1",
    "blocked.test=127.0.0.1",
    "other.test=127.0.0.1",
];

/// A firewall allowing `www.allowed.test` over HTTP on `port`, denying `blocked.test`; `extra`
/// is more application rule collections.
fn network(port: u16, extra: &str) -> String {
    format!(
        r#"apiVersion: palisade/v1
azureFirewalls:
  - name: fw
    ipConfigurations: [{{name: c, privateIPAddress: 10.0.1.4}}]
    applicationRuleCollections:{extra}
      - name: deny-apps
        priority: 150
        action: {{type: Deny}}
        rules: [{{name: blocked, sourceAddresses: ['*'], protocols: ['Http:{port}'], targetFqdns: [blocked.test]}}]
      - name: allow-apps
        priority: 200
        action: {{type: Allow}}
        rules: [{{name: web, sourceAddresses: ['*'], protocols: ['Http:{port}'], targetFqdns: [www.allowed.test]}}]
"#
    )
}

async fn get(proxy: std::net::SocketAddr, url: &str) -> bool {
    let o = curl_proxy(proxy, url, &[]).await;
    o.stdout.contains("hello from")
}

fn named<'a>(name: &'a str) -> impl Fn(&FlowRecord) -> bool + 'a {
    move |r| r.name.as_deref() == Some(name) && r.action != "ShadowDiff"
}

fn records(data: &Path, keep: &dyn Fn(&FlowRecord) -> bool) -> Vec<FlowRecord> {
    query_where(data, &Query::default(), keep).unwrap().0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pal_5_3_audit_rules_are_logged_and_change_no_verdict() {
    let (_dir, path) = tempdir();
    let http = http_server("127.0.0.1:0").await;
    let port = http.port();
    let policy = path.join("network.yaml");
    // An audit Allow is the only rule for trial.audit.test; an audit Deny (a rule's mode)
    // sits above the Allow of www.allowed.test.
    let audits = format!(
        r#"
      - name: candidate-allow
        priority: 100
        action: {{type: Allow}}
        palisade: {{mode: Audit}}
        rules: [{{name: trial, sourceAddresses: ['*'], protocols: ['Http:{port}'], targetFqdns: [trial.audit.test]}}]
      - name: candidate-deny
        priority: 110
        action: {{type: Deny}}
        rules: [{{name: no-www, sourceAddresses: ['*'], protocols: ['Http:{port}'], targetFqdns: [www.allowed.test], palisade: {{mode: Audit}}}}]"#
    );
    write(&policy, &network(port, &audits));
    let data = path.join("data");
    let gw = Gateway::start(loopback_config(&policy, &data, &NAMES))
        .await
        .unwrap();
    let proxy = gw.listen.unwrap();

    // spec PAL-5.3: the audit Allow does not allow; the deny record carries the audit match.
    assert!(!get(proxy, &format!("http://trial.audit.test:{port}/")).await);
    let r = wait_record(&data, named("trial.audit.test"), "trial").await;
    assert_eq!(
        (r.action.as_str(), r.reason.as_str()),
        ("Deny", "DefaultAction")
    );
    assert!(r.audit);
    assert_eq!(
        r.audit_rules,
        vec![AuditEntry {
            layer: "FirewallApplication".into(),
            rule: "candidate-allow/trial".into(),
            access: "Allow".into(),
        }]
    );

    // spec PAL-5.3: the audit Deny does not deny; the allow record carries it.
    assert!(get(proxy, &format!("http://www.allowed.test:{port}/")).await);
    let r = wait_record(&data, named("www.allowed.test"), "www").await;
    assert_eq!(r.action, "Allow");
    assert_eq!(r.rule_path().as_deref(), Some("allow-apps/web"));
    assert!(r.audit);
    assert_eq!(r.audit_rules[0].rule, "candidate-deny/no-www");
    assert_eq!(r.audit_rules[0].access, "Deny");

    // A flow no audit rule matched says nothing of audit.
    assert!(!get(proxy, &format!("http://blocked.test:{port}/")).await);
    let r = wait_record(&data, named("blocked.test"), "blocked").await;
    assert!(!r.audit && r.audit_rules.is_empty());
    assert_eq!(records(&data, &palisade_flowlog::is_audit).len(), 2);
    drop(gw);
}

/// A loopback gateway with a shadow network in `shadow`.
fn with_shadow(policy: &Path, shadow: &Path, data: &Path) -> Config {
    let mut config = loopback_config(policy, data, &NAMES);
    config.shadow = Some(PolicySource {
        source: palisade_load::Source {
            input: palisade_load::Input::Files(vec![shadow.to_path_buf()]),
            ..config.source.source.clone()
        },
        firewall: None,
    });
    config
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pal_5_3_shadow_policy_logs_differences_and_never_changes_live_verdicts() {
    let (_dir, path) = tempdir();
    let http = http_server("127.0.0.1:0").await;
    let port = http.port();
    let (policy, shadow) = (path.join("live.yaml"), path.join("shadow.yaml"));
    write(&policy, &network(port, ""));
    // Start with a shadow in error: refused, the gateway serves the live policy alone.
    let bad =
        network(port, "").replace("sourceAddresses: ['*']", "sourceAddresses: ['10.0.0.300']");
    write(&shadow, &bad);
    let data = path.join("data");
    let gw = Gateway::start(with_shadow(&policy, &shadow, &data))
        .await
        .unwrap();
    let proxy = gw.listen.unwrap();
    assert!(get(proxy, &format!("http://www.allowed.test:{port}/")).await);
    wait_record(&data, named("www.allowed.test"), "allowed, bad shadow").await;
    assert!(records(&data, &palisade_flowlog::is_shadow_diff).is_empty());

    // The candidate drops the allow of www.allowed.test and allows other.test; reloaded the
    // way the live policy is.
    let candidate = network(port, "")
        .replace("[www.allowed.test]", "[other.test]")
        .replace("name: web,", "name: other,");
    write(&shadow, &candidate);
    gw.gateway.reload("test").await;

    // spec PAL-5.3: the live allow stands; a ShadowDiff record is written beside it.
    assert!(get(proxy, &format!("http://www.allowed.test:{port}/")).await);
    let diff = wait_record(
        &data,
        |r| r.action == "ShadowDiff" && r.name.as_deref() == Some("www.allowed.test"),
        "shadow diff",
    )
    .await;
    let s = diff.shadow.unwrap();
    assert_eq!(
        (s.live_action.as_str(), s.live_rule.as_str()),
        ("Allow", "allow-apps/web")
    );
    assert_eq!(
        (s.shadow_action.as_str(), s.shadow_rule.as_str()),
        ("Deny", "default")
    );
    assert!(!s.shadow_snapshot.is_empty());
    assert_ne!(s.shadow_snapshot, diff.snapshot);
    // The normal records carry no shadow: what they say is the live decision alone.
    let normal = records(&data, &|r| named("www.allowed.test")(r));
    assert_eq!(normal.len(), 2);
    assert!(normal
        .iter()
        .all(|r| r.action == "Allow" && r.shadow.is_none()));

    // The live deny stands too; the shadow's allow is the difference.
    assert!(!get(proxy, &format!("http://other.test:{port}/")).await);
    let diff = wait_record(
        &data,
        |r| r.action == "ShadowDiff" && r.name.as_deref() == Some("other.test"),
        "shadow allow",
    )
    .await;
    let s = diff.shadow.unwrap();
    assert_eq!(
        (
            s.live_action.as_str(),
            s.shadow_action.as_str(),
            s.shadow_rule.as_str()
        ),
        ("Deny", "Allow", "allow-apps/other")
    );
    // Where both agree (blocked.test is denied by both), no difference is logged.
    assert!(!get(proxy, &format!("http://blocked.test:{port}/")).await);
    wait_record(&data, named("blocked.test"), "blocked").await;
    let diffs = records(&data, &palisade_flowlog::is_shadow_diff);
    assert_eq!(diffs.len(), 2, "{diffs:#?}");
    drop(gw);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pal_5_4_observe_audits_the_default_deny_of_its_scope_only() {
    let (_dir, path) = tempdir();
    let http = http_server("127.0.0.1:0").await;
    let port = http.port();
    let policy = path.join("network.yaml");
    write(&policy, &network(port, ""));
    let data = path.join("data");
    let mut config = loopback_config(&policy, &data, &NAMES);
    config.observe = Some(Observe {
        scopes: vec!["127.0.0.0/8".into()],
        until: Some(SystemTime::now() + Duration::from_secs(3600)),
    });
    let gw = Gateway::start(config).await.unwrap();
    let proxy = gw.listen.unwrap();

    // spec PAL-5.4: no rule names other.test; its default deny only audits.
    assert!(get(proxy, &format!("http://other.test:{port}/")).await);
    let r = wait_record(&data, named("other.test"), "observed").await;
    assert_eq!(
        (r.action.as_str(), r.reason.as_str()),
        ("Allow", "DefaultAction")
    );
    assert!(r.audit);
    assert_eq!(r.observe.as_deref(), Some("127.0.0.0/8"));
    // A rule's deny is never relaxed.
    assert!(!get(proxy, &format!("http://blocked.test:{port}/")).await);
    let r = wait_record(&data, named("blocked.test"), "blocked").await;
    assert!(r.action == "Deny" && r.observe.is_none());
    // The gauge says the window is open.
    let (code, metrics) = admin(gw.admin.unwrap(), "GET", "/metrics").await;
    assert_eq!(code, 200);
    assert!(
        metrics.contains("palisade_gateway_observe_active 1"),
        "{metrics}"
    );
    drop(gw);

    // A window that has ended changes nothing.
    let data = path.join("data-ended");
    let mut config = loopback_config(&policy, &data, &NAMES);
    config.observe = Some(Observe {
        scopes: vec!["127.0.0.0/8".into()],
        until: Some(SystemTime::now() - Duration::from_secs(1)),
    });
    let gw = Gateway::start(config).await.unwrap();
    assert!(!get(gw.listen.unwrap(), &format!("http://other.test:{port}/")).await);
    let r = wait_record(&data, named("other.test"), "after the window").await;
    assert!(r.action == "Deny" && !r.audit && r.observe.is_none());
    drop(gw);
}
