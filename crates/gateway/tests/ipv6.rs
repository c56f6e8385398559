//! The explicit proxy over IPv6 on loopback: the proxy on `[::1]`, requests and CONNECTs to IPv6
//! literals and to names bound to IPv6 addresses (TLS inside, judged by SNI), judged by the same
//! rules as IPv4 (PAL-5.1: one family per flow).

mod common;

use common::*;
use palisade_gateway::Gateway;

// spec FW-2, FW-3, PAL-5.1: network rules match an IPv6 destination, application rules a name
// bound to an IPv6 address, and the default denies the rest.
#[tokio::test]
async fn explicit_proxy_over_ipv6() {
    let (_d, dir) = tempdir();
    let web = http_server("[::1]:0").await;
    let raw = http_server("[::1]:0").await;
    let (tls, pem) = tls_server("[::1]:0", &["api.allowed.test"]).await;
    let policy = dir.join("network.yaml");
    write(
        &policy,
        &policy_yaml(web.port(), tls.port(), raw.port(), true),
    );
    let data = dir.join("data");
    let mut config = loopback_config(
        &policy,
        &data,
        &["www.allowed.test=::1", "api.allowed.test=::1"],
    );
    config.listen = Some("[::1]:0".parse().unwrap());
    let running = Gateway::start(config).await.unwrap();
    let proxy = running.listen.unwrap();
    assert!(proxy.is_ipv6());

    // A name bound to an IPv6 address, by Host (application rule).
    let url = format!("http://www.allowed.test:{}/", web.port());
    let out = curl_proxy(proxy, &url, &[]).await;
    assert!(
        out.stdout.contains("hello from www.allowed.test"),
        "{}{}",
        out.stdout,
        out.stderr
    );
    let r = wait_record(
        &data,
        |r| r.rule_path().as_deref() == Some("allow-apps/web"),
        "web",
    )
    .await;
    assert_eq!(r.destination_ip, Some("::1".parse().unwrap()));

    // CONNECT to a name bound to an IPv6 address, TLS inside: judged by its SNI.
    let ca = dir.join("ca.pem");
    std::fs::write(&ca, &pem).unwrap();
    let url = format!("https://api.allowed.test:{}/", tls.port());
    let out = curl_proxy(proxy, &url, &["--cacert", ca.to_str().unwrap()]).await;
    assert!(
        out.stdout.contains("tls hello"),
        "{}{}",
        out.stdout,
        out.stderr
    );
    let r = wait_record(
        &data,
        |r| r.rule_path().as_deref() == Some("allow-apps/tls"),
        "tls",
    )
    .await;
    assert_eq!(
        (r.name.as_deref(), r.destination_ip),
        (Some("api.allowed.test"), Some("::1".parse().unwrap()))
    );

    // CONNECT to an IPv6 literal: the network rule for its port.
    let literal = format!("http://[::1]:{}/", raw.port());
    let out = curl_proxy(proxy, &literal, &["-p"]).await;
    assert!(
        out.stdout.contains("hello from"),
        "{}{}",
        out.stdout,
        out.stderr
    );
    let r = wait_record(
        &data,
        |r| r.rule_path().as_deref() == Some("l4/raw-tcp"),
        "raw",
    )
    .await;
    assert_eq!(
        (r.action.as_str(), r.destination_ip),
        ("Allow", Some("::1".parse().unwrap()))
    );

    // CONNECT to an IPv6 literal no rule allows: denied by default, recorded.
    let out = curl_proxy(proxy, "http://[::1]:9/", &["-p"]).await;
    assert_ne!(out.code, 0, "{}", out.stdout);
    let r = wait_record(&data, |r| r.destination_port == 9, "deny").await;
    assert_eq!(
        (r.action.as_str(), r.destination_ip),
        ("Deny", Some("::1".parse().unwrap()))
    );
}
