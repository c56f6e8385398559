//! PAL-5.2 `addressCheck` per firewall and per rule, end to end on loopback: `openssl s_client`
//! through the explicit proxy CONNECTs to 127.0.0.1 with an SNI whose name lives at 127.0.0.2,
//! and the allowing rule's setting decides (rule wins over the firewall, the firewall over the
//! gateway's default).

mod common;

use common::*;
use palisade_gateway::{AddressCheck, Gateway};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pal_5_2_the_allowing_rule_decides_the_address_check() {
    let (_dir, path) = tempdir();
    let names = [
        "off.allowed.test",
        "audited.allowed.test",
        "enforced.allowed.test",
    ];
    let (tls, _pem) = tls_server("127.0.0.1:0", &names).await;
    let port = tls.port();
    let policy = path.join("network.yaml");
    write(
        &policy,
        &format!(
            r#"apiVersion: palisade/v1
azureFirewalls:
  - name: fw
    ipConfigurations: [{{name: c, privateIPAddress: 10.0.1.4}}]
    palisade: {{addressCheck: Enforce}}
    applicationRuleCollections:
      - name: allow-apps
        priority: 200
        action: {{type: Allow}}
        rules:
          - {{name: unchecked, sourceAddresses: ['*'], protocols: ['Https:{port}'], targetFqdns: [off.allowed.test], palisade: {{addressCheck: 'Off'}}}}
          - {{name: audited, sourceAddresses: ['*'], protocols: ['Https:{port}'], targetFqdns: [audited.allowed.test], palisade: {{addressCheck: Audit}}}}
          - {{name: enforced, sourceAddresses: ['*'], protocols: ['Https:{port}'], targetFqdns: [enforced.allowed.test]}}
"#
        ),
    );
    let data = path.join("data");
    // Every name lives elsewhere: dialing it at 127.0.0.1 is a mismatch.
    let resolve = names.map(|n| format!("{n}=127.0.0.2"));
    let resolve: Vec<&str> = resolve.iter().map(String::as_str).collect();
    let mut config = loopback_config(&policy, &data, &resolve);
    // The command-line default says Off; the firewall's Enforce must win over it.
    config.address_check = AddressCheck::Off;
    let gw = Gateway::start(config).await.unwrap();
    let proxy = gw.listen.unwrap().to_string();
    let target = format!("127.0.0.1:{port}");
    let established = |sni: &str| {
        let args: Vec<String> = [
            "s_client",
            "-proxy",
            &proxy,
            "-connect",
            &target,
            "-servername",
            sni,
            "-brief",
        ]
        .iter()
        .map(|a| a.to_string())
        .collect();
        async move {
            let o = run("openssl", &args).await;
            format!("{}{}", o.stdout, o.stderr).contains("CONNECTION ESTABLISHED")
        }
    };

    // spec PAL-5.2: the rule's `Off` lets the mismatching connection through.
    assert!(established("off.allowed.test").await);
    let r = wait_record(
        &data,
        |r| r.name.as_deref() == Some("off.allowed.test"),
        "off",
    )
    .await;
    assert_eq!(
        (r.action.as_str(), r.reason.as_str()),
        ("Allow", "RuleMatched")
    );
    assert_eq!(r.rule_path().as_deref(), Some("allow-apps/unchecked"));

    // spec PAL-5.2: `Audit` logs and allows; the record says what it would have denied.
    assert!(established("audited.allowed.test").await);
    let r = wait_record(
        &data,
        |r| r.name.as_deref() == Some("audited.allowed.test"),
        "audited",
    )
    .await;
    assert_eq!(r.action, "Allow");
    assert_eq!(r.rule_path().as_deref(), Some("allow-apps/audited"));
    let detail = r.detail.unwrap_or_default();
    assert!(
        detail.contains("addressCheck Audit") && detail.contains("SniAddressMismatch"),
        "{detail}"
    );

    // spec PAL-5.2: a rule that says nothing takes the firewall's `Enforce`, over the default.
    assert!(!established("enforced.allowed.test").await);
    let r = wait_record(
        &data,
        |r| r.name.as_deref() == Some("enforced.allowed.test"),
        "enforced",
    )
    .await;
    assert_eq!(
        (r.action.as_str(), r.reason.as_str()),
        ("Deny", "SniAddressMismatch")
    );
    drop(gw);
}
