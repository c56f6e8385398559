//! Name bindings: the addresses a name stands for when no resolver is asked — `NAME=IP` items
//! (`--resolve`) and hosts-format files. FQDN network rules use them offline (FW-5, FW-9), `trace
//! --to NAME` picks its destination from them, and the gateway's resolver answers from them first
//! (PAL-5.2). Every parse error is a located [`Diagnostic`].

use crate::diag::Diagnostic;
use std::collections::HashMap;
use std::net::IpAddr;
use std::path::Path;

/// Name (normalised: lower case, no trailing dot) → its addresses, in the order given.
pub type Bindings = HashMap<String, Vec<IpAddr>>;

/// The form names are bound and looked up in: DNS names compare case-insensitively and a
/// trailing dot (the root) changes nothing.
pub fn normalize(name: &str) -> String {
    // Dots and spaces are trimmed together so that normalising twice changes nothing (a name
    // ending in ". " would otherwise keep a space the second pass removes).
    name.trim_start()
        .trim_end_matches(|c: char| c == '.' || c.is_whitespace())
        .to_ascii_lowercase()
}

/// One `NAME=IP` item. `origin` names where it came from (`--resolve`, an API field) so the
/// error can say so.
pub fn parse_binding(origin: &str, item: &str) -> Result<(String, IpAddr), Diagnostic> {
    let bad = |msg: &str| {
        Diagnostic::error(msg)
            .field(origin)
            .found(item)
            .expected("NAME=IP, e.g. api.example.com=203.0.113.10")
    };
    let (name, ip) = item
        .split_once('=')
        .ok_or_else(|| bad("a name binding needs `=`"))?;
    let name = normalize(name);
    if name.is_empty() {
        return Err(bad("the name is empty"));
    }
    let ip = ip
        .trim()
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse::<IpAddr>()
        .map_err(|_| bad("the address is not an IPv4 or IPv6 address"))?;
    Ok((name, ip))
}

/// `NAME=IP` items; every bad item is reported, not only the first.
pub fn parse_items(origin: &str, items: &[String]) -> (Bindings, Vec<Diagnostic>) {
    let mut out = Bindings::new();
    let mut problems = vec![];
    for item in items {
        match parse_binding(origin, item) {
            Ok((name, ip)) => add(&mut out, name, ip),
            Err(d) => problems.push(d),
        }
    }
    (out, problems)
}

/// A hosts-format text (`IP name [name...]`, `#` comments), as in `/etc/hosts`.
pub fn parse_hosts(file: &str, text: &str) -> (Bindings, Vec<Diagnostic>) {
    let mut out = Bindings::new();
    let mut problems = vec![];
    for (i, line) in text.lines().enumerate() {
        let content = line.split('#').next().unwrap_or("");
        let mut words = content.split_whitespace();
        let Some(ip) = words.next() else { continue };
        let column = line.find(ip).map(|c| c + 1);
        let Ok(ip_addr) = ip.parse::<IpAddr>() else {
            let mut d = Diagnostic::error("a hosts line starts with an address")
                .at(file, "")
                .found(ip)
                .expected("an IPv4 or IPv6 address, then one or more names");
            d.line = Some(i + 1);
            d.column = column;
            problems.push(d);
            continue;
        };
        for name in words {
            add(&mut out, normalize(name), ip_addr);
        }
    }
    (out, problems)
}

/// Read and parse a hosts-format file.
pub fn read_hosts_file(path: &Path) -> (Bindings, Vec<Diagnostic>) {
    let file = path.display().to_string();
    match std::fs::read_to_string(path) {
        Ok(text) => parse_hosts(&file, &text),
        Err(e) => (
            Bindings::new(),
            vec![Diagnostic::error(format!("cannot read the hosts file: {e}")).at(&file, "")],
        ),
    }
}

/// Add `more` to `into`, keeping the order and dropping repeated addresses.
pub fn merge(into: &mut Bindings, more: Bindings) {
    for (name, ips) in more {
        for ip in ips {
            add(into, name.clone(), ip);
        }
    }
}

fn add(into: &mut Bindings, name: String, ip: IpAddr) {
    let list = into.entry(name).or_default();
    if !list.contains(&ip) {
        list.push(ip);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn items_parse_and_normalise() {
        let (b, p) = parse_items(
            "--resolve",
            &[
                "API.Example.com.=203.0.113.10".into(),
                "api.example.com=[2001:db8::1]".into(),
                "api.example.com=203.0.113.10".into(),
            ],
        );
        assert!(p.is_empty(), "{p:?}");
        assert_eq!(
            b["api.example.com"],
            vec![
                "203.0.113.10".parse::<IpAddr>().unwrap(),
                "2001:db8::1".parse().unwrap()
            ]
        );
    }

    #[test]
    fn bad_items_name_the_flag_the_item_and_the_form() {
        let (_, p) = parse_items("--resolve", &["nohost".into(), "a=not-an-ip".into()]);
        assert_eq!(p.len(), 2);
        let text = p[1].to_string();
        assert!(text.contains("--resolve"), "{text}");
        assert!(text.contains("a=not-an-ip"), "{text}");
        assert!(text.contains("expected NAME=IP"), "{text}");
    }

    #[test]
    fn hosts_errors_are_located() {
        let (b, p) = parse_hosts(
            "hosts",
            "# comment\n127.0.0.1 localhost Local.Test.\n  999.1.1.1 bad.test\n",
        );
        assert_eq!(
            b["local.test"],
            vec!["127.0.0.1".parse::<IpAddr>().unwrap()]
        );
        assert_eq!(p.len(), 1);
        assert_eq!((p[0].line, p[0].column), (Some(3), Some(3)));
        assert!(p[0].to_string().starts_with("error: hosts:3:3"), "{}", p[0]);
    }

    /// Found by the `bindings` fuzz target: normalising is idempotent.
    #[test]
    fn normalize_is_idempotent() {
        for name in ["A.b. \u{b}", "x.\u{b}.", " .", "Example.COM."] {
            let once = normalize(name);
            assert_eq!(normalize(&once), once, "{name:?}");
        }
    }

    proptest! {
        /// Parsers never panic on input, and what they accept round-trips.
        #[test]
        fn never_panics(text in "\\PC{0,200}", item in "\\PC{0,60}") {
            let _ = parse_hosts("f", &text);
            let _ = parse_binding("--resolve", &item);
            let n = normalize(&item);
            prop_assert_eq!(normalize(&n), n);
        }

        #[test]
        fn bound_addresses_round_trip(a in any::<u32>(), name in "[a-z]{1,10}(\\.[a-z]{1,10}){0,3}") {
            let ip = IpAddr::from(a.to_be_bytes());
            let (n, got) = parse_binding("--resolve", &format!("{name}={ip}")).unwrap();
            prop_assert_eq!(n, name);
            prop_assert_eq!(got, ip);
        }
    }
}
