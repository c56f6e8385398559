//! The DNS proxy and FQDN network rules (FW-5, FW-9) in network namespaces the test creates
//! and removes:
//!
//! ```text
//!  ns cli: 10.77.0.2 ──veth── 10.77.0.1 ns gw: DNS proxy :53 (UDP, TCP)
//!           default via .1          nft: to 10.78/16 tcp → redirect :15001 (transparent)
//!                                   lo: 10.78.0.10, .11 servers on :5432; 10.78.0.53 the
//!                                       authoritative server for example.test
//! ```
//! The gateway, the servers and the authoritative DNS server (a small one on hickory-proto,
//! whose answer the test changes) run in this process on a thread moved into ns gw with
//! `setns(2)`; `dig` and `curl` run in ns cli with `ip netns exec`. The policy's
//! `dnsSettings.servers` names the authoritative server, so the proxy asks it. Needs root,
//! `nft` and `dig`; without root it is skipped with a message.

mod common;

use common::netns::{can_run, curl_status, in_netns, in_ns, InNs, Pair};
use common::*;
use hickory_proto::op::{Message, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::{rdata::A, Name, RData, Record, RecordType};
use palisade_flowlog::{query, FlowRecord, Query};
use palisade_gateway::dns::DnsConfig;
use palisade_gateway::policy::PolicySource;
use palisade_gateway::resolver::Resolver;
use palisade_gateway::{Config, Gateway};
use palisade_policy::firewall::{FirewallInput, FirewallPass};
use palisade_policy::matchers::PacketKey;
use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// `curl` from ns cli to a server's address (no name): the HTTP status, 470 when denied.
fn curl_db(ns: &str, ip: &str) -> String {
    curl_status(ns, &[&format!("http://{ip}:5432/")])
}

/// `curl` from ns cli to `ip` port 80 with `Host: web.example.test`: the HTTP status.
fn curl_web(ns: &str, ip: &str) -> String {
    let to = format!("web.example.test:80:{ip}");
    curl_status(ns, &["--resolve", &to, "http://web.example.test/"])
}

/// `dig` through the gateway's DNS proxy: the addresses of the answer.
fn dig(ns: &str, name: &str, tcp: bool) -> Vec<String> {
    let mut args = vec![
        "dig",
        "@10.77.0.1",
        name,
        "A",
        "+short",
        "+time=3",
        "+tries=1",
    ];
    if tcp {
        args.push("+tcp");
    }
    let (code, out, err) = in_ns(ns, &args);
    assert_eq!(code, 0, "dig: {out}{err}");
    out.lines().map(String::from).collect()
}

const POLICY: &str = r#"apiVersion: palisade/v1
azureFirewalls:
  - name: fw
    ipConfigurations: [{name: c, privateIPAddress: 10.77.0.1}]
    firewallPolicy: egress
firewallPolicies:
  - name: egress
    dnsSettings: {enableProxy: true, servers: [10.78.0.53]}
    ruleCollectionGroups:
      - name: data
        properties:
          priority: 100
          ruleCollections:
            - {ruleCollectionType: FirewallPolicyFilterRuleCollection, name: databases, priority: 100, action: {type: Allow},
               rules: [{ruleType: NetworkRule, name: db, ipProtocols: [TCP], sourceAddresses: [10.77.0.0/24], destinationFqdns: [db.example.test], destinationPorts: ["5432"]}]}
            - {ruleCollectionType: FirewallPolicyFilterRuleCollection, name: web, priority: 200, action: {type: Allow},
               rules: [{ruleType: ApplicationRule, name: site, sourceAddresses: [10.77.0.0/24], protocols: [{protocolType: Http, port: 80}], targetFqdns: [web.example.test]}]}
"#;

/// TTL of the authoritative answers, and the proxy's grace period after it.
const TTL: u32 = 1;
const GRACE: Duration = Duration::from_secs(3);

/// Names (lower case, trailing dot) and their A record now.
type Zone = Arc<Mutex<HashMap<String, Ipv4Addr>>>;

/// An authoritative server for `example.test` on UDP `bind`: a name's A record is whatever
/// `zone` holds for it now, with TTL [`TTL`]; other names do not exist.
async fn authoritative(bind: &str, zone: Zone) -> SocketAddr {
    let socket = tokio::net::UdpSocket::bind(bind).await.unwrap();
    let addr = socket.local_addr().unwrap();
    tokio::spawn(async move {
        let mut buf = vec![0u8; 4096];
        loop {
            let Ok((n, peer)) = socket.recv_from(&mut buf).await else {
                return;
            };
            let Ok(q) = Message::from_vec(&buf[..n]) else {
                continue;
            };
            let mut r = Message::response(q.metadata.id, OpCode::Query);
            r.metadata.authoritative = true;
            r.metadata.recursion_desired = q.metadata.recursion_desired;
            r.queries = q.queries.clone();
            r.edns = q.edns.clone();
            let asked = q.queries.first();
            let name = asked
                .map(|q| q.name().to_ascii().to_ascii_lowercase())
                .unwrap_or_default();
            let ip = zone.lock().unwrap().get(&name).copied();
            match ip {
                Some(ip) => {
                    if asked.map(|q| q.query_type()) == Some(RecordType::A) {
                        r.add_answer(Record::from_rdata(
                            Name::from_ascii(&name).unwrap(),
                            TTL,
                            RData::A(A(ip)),
                        ));
                    }
                }
                None => r.metadata.response_code = ResponseCode::NXDomain,
            }
            let _ = socket.send_to(&r.to_vec().unwrap(), peer).await;
        }
    });
    addr
}

fn records(dir: &Path) -> Vec<FlowRecord> {
    query(dir, &Query::default()).unwrap().0
}

/// Poll `f` until it returns `want`, for at most `limit`; the last value otherwise.
fn eventually(limit: Duration, want: &str, mut f: impl FnMut() -> String) -> String {
    let start = Instant::now();
    loop {
        let got = f();
        if got == want || start.elapsed() > limit {
            return got;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Send `bytes` over UDP from inside `ns` to `to`; the reply, if one comes within a second.
fn udp_from(ns: &str, to: &str, bytes: &[u8]) -> Option<Vec<u8>> {
    let (to, bytes) = (to.to_string(), bytes.to_vec());
    in_netns(ns, move || {
        let s = std::net::UdpSocket::bind("0.0.0.0:0").unwrap();
        s.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
        s.send_to(&bytes, &to).unwrap();
        let mut buf = vec![0u8; 4096];
        s.recv(&mut buf).ok().map(|n| buf[..n].to_vec())
    })
    .join()
    .unwrap()
}

// spec FW-5, FW-9: an FQDN network rule matches an address only after the subnet resolved the
// name through the firewall's DNS proxy, keeps matching for TTL + grace after the resolver
// stops returning it, and matches what the firewall's own refresh learns.
#[test]
fn fw_5_fqdn_network_rule_follows_the_dns_proxy() {
    if !can_run(
        "fw_5_fqdn_network_rule_follows_the_dns_proxy",
        "network namespaces, nft",
        &[
            ("nft", "nftables"),
            ("dig", "bind9-dnsutils"),
            ("curl", "curl"),
        ],
    ) {
        return;
    }
    let ns = Pair::new("d", &["10.78.0.10/32", "10.78.0.11/32", "10.78.0.53/32"]);
    let (gw_ns, cli_ns) = (ns.gw.clone(), ns.cli.clone());
    // Only traffic to the servers goes through the transparent listener; DNS to the gateway's
    // own address reaches the proxy directly.
    ns.nft("table ip palisade {\n chain prerouting {\n  type nat hook prerouting priority dstnat; policy accept;\n  iifname \"vg\" ip daddr 10.78.0.0/16 meta l4proto tcp redirect to :15001\n }\n}\n");

    let (_dir, dir) = tempdir();
    let policy = dir.join("network.yaml");
    write(&policy, POLICY);
    let data = dir.join("data");
    let zone: Zone = Arc::new(Mutex::new(HashMap::from([
        ("db.example.test.".to_string(), Ipv4Addr::new(10, 78, 0, 10)),
        (
            "web.example.test.".to_string(),
            Ipv4Addr::new(10, 78, 0, 10),
        ),
    ])));

    let (data2, zone2) = (data.clone(), zone.clone());
    let _gateway = InNs::start(&gw_ns, move || async move {
        http_server("10.78.0.10:5432").await;
        http_server("10.78.0.11:5432").await;
        http_server("10.78.0.10:80").await;
        http_server("10.78.0.11:80").await;
        authoritative("10.78.0.53:53", zone2).await;
        let mut config = Config::new(PolicySource::files([policy]), data2);
        config.transparent = Some("0.0.0.0:15001".parse().unwrap());
        config.resolver = Resolver::default();
        config.sighup = false;
        config.watch = false;
        config.limits.handshake_timeout = Duration::from_secs(3);
        let mut dns = DnsConfig::new("10.77.0.1:53".parse().unwrap());
        dns.grace = GRACE;
        dns.refresh = Some(Duration::from_millis(500));
        config.dns = Some(dns);
        config
    });

    // Before the subnet asked for the name, its address matches no rule.
    assert_eq!(curl_db(&cli_ns, "10.78.0.10"), "470");
    let denied = records(&data);
    assert!(
        denied.iter().any(|r| r.action == "Deny"
            && r.destination_ip == Some("10.78.0.10".parse().unwrap())
            && r.destination_port == 5432),
        "{denied:?}"
    );

    // Resolved through the proxy (UDP, then TCP): the address is remembered and the rule
    // matches, the record naming the FQDN.
    assert_eq!(dig(&cli_ns, "db.example.test", false), ["10.78.0.10"]);
    assert_eq!(dig(&cli_ns, "DB.Example.Test.", true), ["10.78.0.10"]);
    assert!(dig(&cli_ns, "nothing.example.test", false).is_empty());
    assert_eq!(curl_db(&cli_ns, "10.78.0.10"), "200");
    let start = Instant::now();
    let allowed = loop {
        let found = records(&data).into_iter().find(|r| r.action == "Allow");
        match found {
            Some(r) => break r,
            None if start.elapsed() < Duration::from_secs(10) => {
                std::thread::sleep(Duration::from_millis(50))
            }
            None => panic!("no Allow record: {:?}", records(&data)),
        }
    };
    assert_eq!(allowed.layer, "FirewallNetwork");
    assert_eq!(allowed.rule_path().as_deref(), Some("data/databases/db"));
    let detail = allowed.detail.clone().unwrap_or_default();
    assert!(detail.contains("db.example.test"), "{allowed:?}");

    // The authoritative server moves the name. The firewall's refresh learns the new address
    // without any client asking; the old one stays valid for TTL + grace, then stops matching.
    zone.lock()
        .unwrap()
        .insert("db.example.test.".into(), Ipv4Addr::new(10, 78, 0, 11));
    let moved = Instant::now();
    assert_eq!(
        curl_db(&cli_ns, "10.78.0.10"),
        "200",
        "within the grace period"
    );
    assert_eq!(
        eventually(Duration::from_secs(10), "200", || curl_db(
            &cli_ns,
            "10.78.0.11"
        )),
        "200",
        "the refresh did not learn the new address"
    );
    assert_eq!(
        eventually(Duration::from_secs(15), "470", || curl_db(
            &cli_ns,
            "10.78.0.10"
        )),
        "470",
        "the old address never expired"
    );
    assert!(
        moved.elapsed() >= GRACE,
        "expired before its grace period: {:?}",
        moved.elapsed()
    );

    // Garbage gets FORMERR with its id (or nothing) and the proxy keeps answering.
    let mut garbage = vec![0x12, 0x34, 0x01, 0x00, 0x00, 0x01, 0, 0, 0, 0, 0, 0];
    garbage.extend_from_slice(&[0xff; 40]);
    let reply = udp_from(&cli_ns, "10.77.0.1:53", &garbage).expect("a FORMERR reply");
    let m = Message::from_vec(&reply).unwrap();
    assert_eq!(m.metadata.id, 0x1234);
    assert_eq!(m.metadata.message_type, MessageType::Response);
    assert_eq!(m.metadata.response_code, ResponseCode::FormErr);
    assert_eq!(udp_from(&cli_ns, "10.77.0.1:53", b"junk"), None);
    assert_eq!(dig(&cli_ns, "db.example.test", false), ["10.78.0.11"]);

    // spec PAL-5.2: the Host ↔ address check accepts what the proxy remembers for the name
    // (TTL + grace) as well as a fresh lookup. The subnet resolves web.example.test, the name
    // moves, and once the resolver's cache has the new answer the old address still passes
    // until its grace period ends; the new one passes by the fresh lookup.
    assert_eq!(dig(&cli_ns, "web.example.test", false), ["10.78.0.10"]);
    zone.lock()
        .unwrap()
        .insert("web.example.test.".into(), Ipv4Addr::new(10, 78, 0, 11));
    let moved = Instant::now();
    std::thread::sleep(Duration::from_millis(1200));
    assert_eq!(curl_web(&cli_ns, "10.78.0.11"), "200", "the fresh lookup");
    assert_eq!(
        curl_web(&cli_ns, "10.78.0.10"),
        "200",
        "remembered within TTL + grace"
    );
    assert_eq!(
        eventually(Duration::from_secs(15), "470", || curl_web(
            &cli_ns,
            "10.78.0.10"
        )),
        "470",
        "the old address never expired"
    );
    assert!(
        moved.elapsed() >= GRACE,
        "expired early: {:?}",
        moved.elapsed()
    );
    let mismatch = records(&data)
        .into_iter()
        .find(|r| r.reason == "HostAddressMismatch")
        .expect("a HostAddressMismatch record");
    assert_eq!(mismatch.destination_ip, Some("10.78.0.10".parse().unwrap()));
}

fn a_query(name: &str) -> Message {
    let mut m = Message::query();
    m.metadata.recursion_desired = true;
    m.add_query(hickory_proto::op::Query::query(
        Name::from_ascii(name).unwrap(),
        RecordType::A,
    ));
    m
}

async fn ask_udp(to: SocketAddr, bytes: &[u8]) -> Option<Message> {
    let s = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    s.send_to(bytes, to).await.unwrap();
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(2), s.recv(&mut buf))
        .await
        .ok()?
        .unwrap();
    Some(Message::from_vec(&buf[..n]).unwrap())
}

async fn ask_tcp(to: SocketAddr, m: &Message) -> Message {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(to).await.unwrap();
    let bytes = m.to_vec().unwrap();
    s.write_all(&(bytes.len() as u16).to_be_bytes())
        .await
        .unwrap();
    s.write_all(&bytes).await.unwrap();
    let mut len = [0u8; 2];
    s.read_exact(&mut len).await.unwrap();
    let mut buf = vec![0u8; u16::from_be_bytes(len).into()];
    s.read_exact(&mut buf).await.unwrap();
    Message::from_vec(&buf).unwrap()
}

fn answers(m: &Message) -> Vec<String> {
    m.answers.iter().map(|r| r.data.to_string()).collect()
}

// spec FW-5, FW-9, without root: the proxy on loopback with `--dns-upstream` answers over UDP
// and TCP with the query's id, remembers the addresses the FQDN network rule then matches,
// answers garbage with FORMERR, and stops with the gateway.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fw_9_dns_proxy_on_loopback() {
    let zone: Zone = Arc::new(Mutex::new(HashMap::from([(
        "db.example.test.".to_string(),
        Ipv4Addr::new(10, 78, 0, 10),
    )])));
    let upstream = authoritative("127.0.0.1:0", zone).await;
    let (_dir, dir) = tempdir();
    let policy = dir.join("network.yaml");
    write(&policy, POLICY);
    let mut config = Config::new(PolicySource::files([policy]), dir.join("data"));
    config.listen = Some("127.0.0.1:0".parse().unwrap());
    config.sighup = false;
    config.watch = false;
    let mut dns = DnsConfig::new("127.0.0.1:0".parse().unwrap());
    dns.upstream = vec![upstream];
    dns.refresh = None;
    config.dns = Some(dns);
    let running = Gateway::start(config).await.unwrap();
    let proxy = running.dns.expect("the DNS proxy's address");
    let flow = FirewallInput {
        key: PacketKey {
            src: "10.77.0.2".parse().unwrap(),
            dst: "10.78.0.10".parse().unwrap(),
            protocol: 6,
            src_port: 40000,
            dst_port: 5432,
        },
        host: None,
        app_protocol: None,
    };
    assert!(
        !running.gateway.judge(&flow).0.allowed,
        "nothing resolved yet"
    );

    let q = a_query("db.example.test.");
    let r = ask_udp(proxy, &q.to_vec().unwrap())
        .await
        .expect("a UDP answer");
    assert_eq!(r.metadata.id, q.metadata.id);
    assert_eq!(r.metadata.response_code, ResponseCode::NoError);
    assert_eq!(answers(&r), ["10.78.0.10"]);
    let r = ask_tcp(proxy, &a_query("nothing.example.test.")).await;
    assert_eq!(r.metadata.response_code, ResponseCode::NXDomain);
    assert!(r.answers.is_empty());

    let dns = running.gateway.dns.as_ref().unwrap();
    assert_eq!(
        dns.addresses("db.example.test"),
        [Ipv4Addr::new(10, 78, 0, 10)]
    );
    let (outcome, _) = running.gateway.judge(&flow);
    assert!(outcome.allowed);
    assert_eq!(outcome.pass, FirewallPass::FirewallNetwork);
    assert!(outcome
        .detail
        .unwrap()
        .to_string()
        .contains("db.example.test"));

    let mut garbage = vec![0xbe, 0xef, 0x01, 0x00, 0x00, 0x01, 0, 0, 0, 0, 0, 0];
    garbage.extend_from_slice(b"\x3fnot a name");
    let r = ask_udp(proxy, &garbage).await.expect("FORMERR");
    assert_eq!(
        (r.metadata.id, r.metadata.response_code),
        (0xbeef, ResponseCode::FormErr)
    );
    assert!(ask_udp(proxy, b"hi").await.is_none());

    tokio::time::timeout(
        Duration::from_secs(10),
        running.shutdown(Duration::from_secs(1)),
    )
    .await
    .expect("shutdown with the DNS proxy running");
    assert!(
        ask_udp(proxy, &a_query("db.example.test.").to_vec().unwrap())
            .await
            .is_none(),
        "still answering after shutdown"
    );
}

// spec FW-9: a resolver that does not answer gives the client SERVFAIL, not silence.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fw_9_unreachable_upstream_gets_servfail() {
    let (_dir, dir) = tempdir();
    let policy = dir.join("network.yaml");
    write(&policy, POLICY);
    let mut config = Config::new(PolicySource::files([policy]), dir.join("data"));
    config.sighup = false;
    config.watch = false;
    // Nothing listens on port 1.
    let mut dns = DnsConfig::new("127.0.0.1:0".parse().unwrap());
    dns.upstream = vec!["127.0.0.1:1".parse().unwrap()];
    dns.timeout = Duration::from_millis(300);
    config.dns = Some(dns);
    let running = Gateway::start(config).await.unwrap();
    let q = a_query("db.example.test.");
    let r = ask_udp(running.dns.unwrap(), &q.to_vec().unwrap())
        .await
        .expect("an answer");
    assert_eq!(
        (r.metadata.id, r.metadata.response_code),
        (q.metadata.id, ResponseCode::ServFail)
    );
    assert!(running
        .gateway
        .dns
        .as_ref()
        .unwrap()
        .addresses("db.example.test")
        .is_empty());
}
