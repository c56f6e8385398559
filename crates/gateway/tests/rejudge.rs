//! A CONNECT tunnel is judged twice: on its CONNECT name, then on the name it carries (SNI).
//! When both names are the same the gateway may keep the first judgement, but only when all
//! that judgement depended on is unchanged: these tests change one thing each between the two
//! judgements — the DNS proxy's remembered addresses (FW-5), the shadow policy (PAL-5.3) — and
//! show the tunnel judged again. On loopback, with real sockets.

mod common;

use common::*;
use hickory_proto::op::{Message, OpCode, Query as DnsQuery};
use hickory_proto::rr::{rdata::A, Name, RData, Record, RecordType};
use palisade_flowlog::{query, FlowRecord, Query};
use palisade_gateway::dns::DnsConfig;
use palisade_gateway::policy::PolicySource;
use palisade_gateway::sni::build_client_hello;
use palisade_gateway::Gateway;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

/// An authoritative server answering every A question with `ip` (TTL 60 s).
async fn authoritative(ip: Ipv4Addr) -> SocketAddr {
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = socket.local_addr().unwrap();
    tokio::spawn(async move {
        let mut buf = vec![0u8; 4096];
        while let Ok((n, peer)) = socket.recv_from(&mut buf).await {
            let Ok(q) = Message::from_vec(&buf[..n]) else {
                continue;
            };
            let mut r = Message::response(q.metadata.id, OpCode::Query);
            r.metadata.authoritative = true;
            r.metadata.recursion_desired = q.metadata.recursion_desired;
            r.queries = q.queries.clone();
            if let Some(asked) = q.queries.first() {
                if asked.query_type() == RecordType::A {
                    r.add_answer(Record::from_rdata(
                        asked.name().clone(),
                        60,
                        RData::A(A(ip)),
                    ));
                }
            }
            let _ = socket.send_to(&r.to_vec().unwrap(), peer).await;
        }
    });
    addr
}

/// Ask the gateway's DNS proxy for `name`'s A record; true when it answered.
async fn resolve_through(proxy: SocketAddr, name: &str) -> bool {
    let mut m = Message::query();
    m.metadata.recursion_desired = true;
    m.add_query(DnsQuery::query(
        Name::from_ascii(name).unwrap(),
        RecordType::A,
    ));
    let s = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    s.send_to(&m.to_vec().unwrap(), proxy).await.unwrap();
    let mut buf = vec![0u8; 4096];
    let got = tokio::time::timeout(Duration::from_secs(5), s.recv(&mut buf)).await;
    matches!(got, Ok(Ok(n)) if Message::from_vec(&buf[..n]).is_ok_and(|r| !r.answers.is_empty()))
}

/// Open `CONNECT name:port` through `proxy` and wait for the 200.
async fn connect(proxy: SocketAddr, name: &str, port: u16) -> TcpStream {
    let mut s = TcpStream::connect(proxy).await.unwrap();
    s.write_all(
        format!("CONNECT {name}:{port} HTTP/1.1\r\nHost: {name}:{port}\r\n\r\n").as_bytes(),
    )
    .await
    .unwrap();
    let mut head = vec![];
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(s.read(&mut b).await.unwrap(), 1, "closed before the 200");
        head.push(b[0]);
    }
    let head = String::from_utf8_lossy(&head);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    s
}

/// Send a ClientHello for `sni` into the tunnel: true when the target echoed it back.
async fn carries(mut tunnel: TcpStream, sni: &str) -> bool {
    let hello = build_client_hello(Some(sni), false, &[], 0);
    tunnel.write_all(&hello).await.unwrap();
    let mut back = vec![0u8; hello.len()];
    let echoed = tokio::time::timeout(Duration::from_secs(10), tunnel.read_exact(&mut back)).await;
    matches!(echoed, Ok(Ok(_))) && back == hello
}

fn records(data: &Path) -> Vec<FlowRecord> {
    query(data, &Query::default())
        .map(|r| r.0)
        .unwrap_or_default()
}

/// FW-5 network rules match on the addresses the DNS proxy remembers: a Deny of
/// `evil.example.test`, then an Allow of `www.allowed.test` as an application rule.
fn fqdn_policy(port: u16) -> String {
    format!(
        r#"apiVersion: palisade/v1
azureFirewalls:
  - name: fw
    ipConfigurations: [{{name: c, privateIPAddress: 10.0.1.4}}]
    firewallPolicy: egress
firewallPolicies:
  - name: egress
    dnsSettings: {{enableProxy: true}}
    ruleCollectionGroups:
      - name: rules
        properties:
          priority: 100
          ruleCollections:
            - {{ruleCollectionType: FirewallPolicyFilterRuleCollection, name: no-evil, priority: 100, action: {{type: Deny}},
               rules: [{{ruleType: NetworkRule, name: evil, ipProtocols: [TCP], sourceAddresses: ['*'], destinationFqdns: [evil.example.test], destinationPorts: ["{port}"]}}]}}
            - {{ruleCollectionType: FirewallPolicyFilterRuleCollection, name: web, priority: 200, action: {{type: Allow}},
               rules: [{{ruleType: ApplicationRule, name: site, sourceAddresses: ['*'], protocols: [{{protocolType: Https, port: {port}}}], targetFqdns: [www.allowed.test]}}]}}
"#
    )
}

// spec FW-5: an address the DNS proxy learns between a tunnel's CONNECT and its ClientHello
// changes what a network rule matches, so the tunnel is judged again and the deny holds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fw_5_a_tunnel_is_judged_again_when_the_dns_memory_changed() {
    let target = echo_server().await;
    let upstream = authoritative(Ipv4Addr::LOCALHOST).await;
    let (_dir, path) = tempdir();
    let policy = path.join("network.yaml");
    write(&policy, &fqdn_policy(target.port()));
    let data = path.join("data");
    let mut config = loopback_config(&policy, &data, &["www.allowed.test=127.0.0.1"]);
    let mut dns = DnsConfig::new("127.0.0.1:0".parse().unwrap());
    dns.upstream = vec![upstream];
    dns.refresh = None;
    config.dns = Some(dns);
    let gw = Gateway::start(config).await.unwrap();
    let (proxy, dns) = (gw.listen.unwrap(), gw.dns.unwrap());

    // Nothing learnt in between: the tunnel relays.
    let tunnel = connect(proxy, "www.allowed.test", target.port()).await;
    assert!(carries(tunnel, "www.allowed.test").await);

    let tunnel = connect(proxy, "www.allowed.test", target.port()).await;
    assert!(resolve_through(dns, "evil.example.test.").await);
    assert!(
        !carries(tunnel, "www.allowed.test").await,
        "relayed although 127.0.0.1 is now evil.example.test's"
    );
    let denied = wait_record(&data, |r| r.action == "Deny", "the tunnel's deny").await;
    assert_eq!(denied.rule_path().as_deref(), Some("rules/no-evil/evil"));
    assert_eq!(denied.layer, "FirewallNetwork");
    assert_eq!(denied.tunnel_name.as_deref(), Some("www.allowed.test"));
    drop(gw);
}

/// The live policy allows `www.allowed.test` on `port`; `allow` false gives the candidate that
/// does not.
fn app_policy(port: u16, allow: bool) -> String {
    let name = if allow {
        "www.allowed.test"
    } else {
        "other.test"
    };
    format!(
        r#"apiVersion: palisade/v1
azureFirewalls:
  - name: fw
    ipConfigurations: [{{name: c, privateIPAddress: 10.0.1.4}}]
    applicationRuleCollections:
      - name: allow-apps
        priority: 200
        action: {{type: Allow}}
        rules: [{{name: web, sourceAddresses: ['*'], protocols: ['Https:{port}'], targetFqdns: [{name}]}}]
"#
    )
}

// spec PAL-5.3: a shadow policy reloaded between a tunnel's CONNECT and its ClientHello answers
// the tunnel's judgement; the live verdict stands and the difference is recorded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pal_5_3_a_tunnel_is_judged_again_under_a_shadow_policy() {
    let target = echo_server().await;
    let (_dir, path) = tempdir();
    let (policy, shadow) = (path.join("live.yaml"), path.join("shadow.yaml"));
    write(&policy, &app_policy(target.port(), true));
    write(&shadow, &app_policy(target.port(), true));
    let data = path.join("data");
    let mut config = loopback_config(&policy, &data, &["www.allowed.test=127.0.0.1"]);
    config.shadow = Some(PolicySource {
        source: palisade_load::Source {
            input: palisade_load::Input::Files(vec![shadow.clone()]),
            ..config.source.source.clone()
        },
        firewall: None,
    });
    let gw = Gateway::start(config).await.unwrap();
    let proxy = gw.listen.unwrap();

    let tunnel = connect(proxy, "www.allowed.test", target.port()).await;
    // Only the shadow changes: the live snapshot in force stays the one that judged first.
    write(&shadow, &app_policy(target.port(), false));
    gw.gateway.reload("test").await;
    assert!(carries(tunnel, "www.allowed.test").await, "live allow");
    let diff = wait_record(&data, |r| r.action == "ShadowDiff", "the shadow's deny").await;
    let s = diff.shadow.unwrap();
    assert_eq!(
        (s.live_action.as_str(), s.shadow_action.as_str()),
        ("Allow", "Deny")
    );
    assert_eq!(diff.tunnel_name.as_deref(), Some("www.allowed.test"));
    assert!(records(&data)
        .iter()
        .all(|r| r.action != "Deny" && r.name.as_deref() == Some("www.allowed.test")));
    drop(gw);
}
