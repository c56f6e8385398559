//! The web UI in a real browser: headless Chromium driven over WebDriver (chromedriver) against
//! a real `palisade server` on a scenario network, whose flow log a real `palisade gateway`
//! writes as curl goes through it. One browser session runs every check, each bounded in time.
//! With `PALISADE_UI_SCREENSHOTS=1` each page is saved to `docs/ui/*.png`.

mod common;

use common::{
    free_port, http_server, palisade, root, start_gateway, start_server, through, tokens_file,
    wait_for_port, Killed,
};
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const ADMIN: &str = "ui-admin-token-for-tests";
const READER: &str = "ui-reader-token-for-tests";
const NETWORK: &str = "../shared/scenarios/ase-egress-lockdown/network.json";
/// How long any one wait in the browser may take.
const WAIT: Duration = Duration::from_secs(20);

/// Chromium and its driver are installed (CI installs them with apt); otherwise say why not.
fn can_run() -> bool {
    let missing: Vec<&str> = ["chromium", "chromedriver", "curl"]
        .into_iter()
        .filter(|tool| {
            !Command::new("sh")
                .args(["-c", &format!("command -v {tool}")])
                .output()
                .is_ok_and(|o| o.status.success())
        })
        .collect();
    if missing.is_empty() {
        return true;
    }
    eprintln!(
        "SKIPPED ui: {} not installed (apt-get install -y chromium chromium-driver curl)",
        missing.join(", ")
    );
    false
}

/// `palisade server` on the scenario, its flow log the gateway's: (child, data URL, admin URL).
fn server(dir: &Path, flows: &Path) -> (Killed, String, String) {
    let tokens = tokens_file(dir, ADMIN, READER);
    let data = dir.join("server");
    let flows = flows.to_str().unwrap();
    let s = start_server(NETWORK, &data, &tokens, &["--flow-log", flows]);
    (s.process, s.base, s.admin)
}

fn api(
    method: &str,
    url: &str,
    token: &str,
    body: Option<&Value>,
    if_match: Option<&str>,
) -> Value {
    let mut c = Command::new("curl");
    c.args(["-sS", "--max-time", "30", "-X", method])
        .args(["-H", &format!("Authorization: Bearer {token}")]);
    if let Some(b) = body {
        c.args(["-H", "content-type: application/json", "-d", &b.to_string()]);
    }
    if let Some(m) = if_match {
        c.args(["-H", &format!("If-Match: {m}")]);
    }
    let o = c.arg(url).output().expect("run curl");
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| {
        panic!(
            "{method} {url}: {e}: {}",
            String::from_utf8_lossy(&o.stdout)
        )
    })
}

async fn attr(c: &Client, css: &str, name: &str) -> String {
    c.find(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("{css}: {e}"))
        .attr(name)
        .await
        .unwrap()
        .unwrap_or_default()
}

async fn text(c: &Client, css: &str) -> String {
    c.wait()
        .at_most(WAIT)
        .for_element(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("{css}: {e}"))
        .text()
        .await
        .unwrap()
}

async fn login(c: &Client, base: &str, token: &str) {
    c.goto(&format!("{base}/ui/login")).await.unwrap();
    let field = c
        .wait()
        .at_most(WAIT)
        .for_element(Locator::Id("token"))
        .await
        .unwrap();
    field.send_keys(token).await.unwrap();
    c.find(Locator::Id("login"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    c.wait()
        .at_most(WAIT)
        .for_element(Locator::Id("network-map"))
        .await
        .unwrap();
}

async fn screenshot(c: &Client, name: &str) {
    if std::env::var_os("PALISADE_UI_SCREENSHOTS").is_none() {
        return;
    }
    let png = c.screenshot().await.unwrap();
    let dir = root().join("docs/ui");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(format!("{name}.png")), png).unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn the_ui_in_headless_chromium() {
    if !can_run() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let flows = dir.path().join("flows");
    let upstream = http_server();
    let proxy: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let _gateway = start_gateway(
        NETWORK,
        proxy,
        &flows,
        &[
            "--instance",
            "ui-test",
            "--resolve",
            "exfil.example=127.0.0.1",
            "--resolve",
            "live.example=127.0.0.1",
        ],
        Stdio::null(),
    );
    let (_server, base, admin) = server(dir.path(), &flows);

    let driver_port = free_port();
    let driver = Command::new("chromedriver")
        .arg(format!("--port={driver_port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start chromedriver");
    let _driver = Killed(driver);
    wait_for_port(([127, 0, 0, 1], driver_port).into(), "chromedriver");
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        json!({"args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1280,1000"]}),
    );
    caps.insert(
        "timeouts".into(),
        json!({"pageLoad": 30000, "script": 20000}),
    );
    let c = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(caps)
        .connect(&format!("http://127.0.0.1:{driver_port}"))
        .await
        .expect("a WebDriver session");

    // The checks run in a task so that a failing one still ends the browser session.
    let outcome = tokio::spawn({
        let c = c.clone();
        async move { checks(&c, &base, &admin, proxy, upstream).await }
    })
    .await;
    let _ = c.close().await;
    if let Err(e) = outcome {
        std::panic::resume_unwind(e.into_panic());
    }
}

async fn checks(c: &Client, base: &str, admin: &str, proxy: SocketAddr, upstream: SocketAddr) {
    // Without a token every page sends the browser to the login form.
    c.goto(&format!("{base}/ui/map")).await.unwrap();
    c.wait()
        .at_most(WAIT)
        .for_element(Locator::Id("token"))
        .await
        .unwrap();
    assert!(c.current_url().await.unwrap().path().ends_with("/ui/login"));
    screenshot(c, "login").await;
    c.find(Locator::Id("token"))
        .await
        .unwrap()
        .send_keys("not-a-token")
        .await
        .unwrap();
    c.find(Locator::Id("login"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    assert!(text(c, "#login-error").await.contains("not valid"));

    // Reader: the map shows every subnet of the network (as the resources API lists them).
    login(c, base, READER).await;
    assert_eq!(attr(c, "#who", "data-role").await, "reader");
    let mut drawn = BTreeSet::new();
    for e in c.find_all(Locator::Css("[data-subnet]")).await.unwrap() {
        drawn.insert(e.attr("data-subnet").await.unwrap().unwrap());
    }
    let vnets = api(
        "GET",
        &format!("{base}/api/resources/virtualNetworks"),
        READER,
        None,
        None,
    );
    let expected: BTreeSet<String> = vnets["value"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|v| {
            let vnet = v["name"].as_str().unwrap().to_string();
            v["properties"]["subnets"]
                .as_array()
                .unwrap()
                .iter()
                .map(move |s| format!("{vnet}/{}", s["name"].as_str().unwrap()))
        })
        .collect();
    assert!(!expected.is_empty());
    assert_eq!(drawn, expected);
    // The default route's next hop (the firewall) is drawn as an arrow (RT-5, DIAG-5).
    let arrows = c.find_all(Locator::Css("g.next-hop")).await.unwrap();
    assert!(!arrows.is_empty());
    screenshot(c, "map").await;

    // Trace a denied flow through the form: the page's deciding rule is the CLI trace's.
    c.goto(&format!("{base}/ui/trace")).await.unwrap();
    for (id, value) in [("source", "10.0.0.10"), ("destination", "203.0.113.25")] {
        c.find(Locator::Id(id))
            .await
            .unwrap()
            .send_keys(value)
            .await
            .unwrap();
    }
    let port = c.find(Locator::Id("port")).await.unwrap();
    port.clear().await.unwrap();
    port.send_keys("25").await.unwrap();
    c.find(Locator::Id("run-trace"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let verdict = text(c, "#verdict").await;
    let (code, out, err) = palisade(&[
        "trace",
        "--network",
        NETWORK,
        "--from",
        "10.0.0.10",
        "--to",
        "203.0.113.25",
        "--port",
        "25",
        "--output",
        "json",
    ]);
    assert_eq!(code, 3, "{err}");
    let cli: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(verdict, cli["verdict"].as_str().unwrap());
    assert_eq!(verdict, "Deny");
    let rule = attr(c, "#decided-by", "data-rule").await;
    assert_eq!(rule, cli["decided_by"]["rule"].as_str().unwrap());
    assert!(!rule.is_empty());
    let hops = c.find_all(Locator::Css("#hops tr")).await.unwrap().len() - 1;
    assert_eq!(hops, cli["hops"].as_array().unwrap().len());
    screenshot(c, "trace").await;

    // The deny log: a denial made by real traffic through the gateway, stored; then another,
    // live.
    let p = upstream.port();
    assert_eq!(through(proxy, &format!("http://exfil.example:{p}/")), "470");
    let start = Instant::now();
    let row = loop {
        c.goto(&format!("{base}/ui/logs")).await.unwrap();
        if let Ok(row) = c
            .find(Locator::Css("tr.record[data-name='exfil.example']"))
            .await
        {
            break row;
        }
        assert!(start.elapsed() < WAIT, "the denial was not stored");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(row.text().await.unwrap().contains("Deny"));
    let start = Instant::now();
    while text(c, "#live-status").await != "following" {
        assert!(start.elapsed() < WAIT, "the live stream did not start");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(through(proxy, &format!("http://live.example:{p}/")), "470");
    let start = Instant::now();
    loop {
        let live = text(c, "#live").await;
        if live.contains("live.example") {
            assert!(live.contains("Deny"), "{live}");
            break;
        }
        assert!(start.elapsed() < WAIT, "no live record: {live}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    screenshot(c, "logs").await;
    // The stored filters are the API's: by name, only that denial.
    c.goto(&format!("{base}/ui/logs?name=live.example"))
        .await
        .unwrap();
    let rows = c.find_all(Locator::Css("tr.record")).await.unwrap();
    assert!(!rows.is_empty());
    for r in rows {
        assert_eq!(
            r.attr("data-name").await.unwrap().as_deref(),
            Some("live.example")
        );
    }
    c.goto(&format!("{base}/ui/logs")).await.unwrap();
    let row = c
        .find(Locator::Css("tr.record[data-name='exfil.example']"))
        .await
        .unwrap();
    // "Propose a rule" asks learning mode for the denial's scope.
    row.find(Locator::Css("a.propose"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let asked = text(c, "#asked").await;
    assert!(
        asked.starts_with("GET /api/learn?scope=127.0.0.1%2F32&since=7d"),
        "{asked}"
    );
    // PAL-5.4: the denied name comes back as a proposed application rule, in the table and in
    // the YAML diff.
    let proposals = text(c, "#proposals").await;
    assert!(proposals.contains("exfil.example"), "{proposals}");
    let diff = text(c, "#diff").await;
    assert!(diff.contains("exfil.example"), "{diff}");
    screenshot(c, "learn").await;

    // The dependency coverage board: the `deps check` answer, entry by entry.
    c.goto(&format!(
        "{base}/ui/deps?catalog=app-service-environment&from=10.0.0.10"
    ))
    .await
    .unwrap();
    let mut board = vec![];
    for row in c
        .find_all(Locator::Css("#board tr.endpoint"))
        .await
        .unwrap()
    {
        board.push(row.attr("class").await.unwrap().unwrap());
    }
    let (_, out, err) = palisade(&[
        "deps",
        "check",
        "--network",
        NETWORK,
        "--catalog",
        "catalogs/dependencies/app-service-environment.json",
        "--from",
        "10.0.0.10",
        "--output",
        "json",
    ]);
    let cli: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {err}"));
    let statuses: Vec<String> = cli["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| format!("endpoint {}", e["status"].as_str().unwrap()))
        .collect();
    assert_eq!(board, statuses);
    screenshot(c, "deps").await;

    // A second version (a change by the admin over the API), and its diff in the UI.
    let nsg = format!(
        "{admin}/api/resources/networkSecurityGroups/ase-nsg/securityRules/Deny-HTTP-outbound"
    );
    let rule = json!({"properties": {"priority": 210, "direction": "Outbound", "access": "Deny", "protocol": "Tcp",
        "sourceAddressPrefix": "*", "sourcePortRange": "*", "destinationAddressPrefix": "*", "destinationPortRange": "80"}});
    api("PUT", &nsg, ADMIN, Some(&rule), None);
    c.goto(&format!("{base}/ui/versions?old=1&new=2"))
        .await
        .unwrap();
    let summary = text(c, "#diff-summary").await;
    assert!(!summary.starts_with("0 "), "{summary}");
    assert!(text(c, "#diff").await.contains("Deny-HTTP-outbound"));
    // A reader sees no admin action, and is refused one even when it asks.
    assert!(c
        .find_all(Locator::Css("button.rollback"))
        .await
        .unwrap()
        .is_empty());
    screenshot(c, "versions").await;
    let versions = |token: &str| {
        api("GET", &format!("{base}/api/versions"), token, None, None)
            .as_array()
            .unwrap()
            .len()
    };
    login(c, admin, READER).await;
    let refused = c
        .execute(
            "return fetch('/ui/versions/1/rollback', {method: 'POST'}).then(r => r.status)",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(refused, json!(403));
    assert_eq!(versions(READER), 2);

    // An admin on the data listener is sent to the admin listener; there, the rollback applies.
    c.find(Locator::Id("logout"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    c.wait()
        .at_most(WAIT)
        .for_element(Locator::Id("token"))
        .await
        .unwrap();
    login(c, base, ADMIN).await;
    let on_data = c
        .execute(
            "return fetch('/ui/versions/1/rollback', {method: 'POST'}).then(r => r.status)",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(on_data, json!(404));
    assert_eq!(versions(READER), 2);
    login(c, admin, ADMIN).await;
    c.goto(&format!("{admin}/ui/versions")).await.unwrap();
    c.find(Locator::Css("tr.version[data-version='1'] button.rollback"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    text(c, "#diff-summary").await;
    assert_eq!(versions(READER), 3);
    assert!(c
        .current_url()
        .await
        .unwrap()
        .query()
        .unwrap_or("")
        .contains("new=3"));
}
