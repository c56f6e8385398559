use palisade_model::*;
use std::path::PathBuf;

#[test]
#[ignore]
fn scan() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/corpus");
    let manifest = std::fs::read_to_string(root.join("azure-configs-manifest.tsv")).unwrap();
    let cat = catalog::Catalogs::embedded();
    for line in manifest.lines().skip(1) {
        let c: Vec<&str> = line.split('\t').collect();
        let rel = c[0].strip_prefix("azure/").unwrap();
        let p = root.join("azure-configs").join(rel);
        let imp = load(&[p.clone()], &ImportOptions::default());
        let n = &imp.network;
        let classic: usize = n
            .azure_firewalls
            .iter()
            .flat_map(|f| &f.rule_collections)
            .map(|c| c.rules.len())
            .sum();
        let pol: usize = n
            .firewall_policies
            .iter()
            .flat_map(|p| &p.rule_collection_groups)
            .flat_map(|g| &g.rule_collections)
            .map(|c| c.rules.len())
            .sum();
        let k = imp
            .files
            .first()
            .map(|f| format!("{:?}", f.kind))
            .unwrap_or_default();
        let ct = n.counts();
        let got = format!("{} {} {} {}", ct.security_rules, classic, pol, ct.routes);
        let want = format!("{} {} {} {}", c[7], c[9], c[10], c[11]);
        let errs: Vec<String> = imp.diagnostics.errors().map(|d| d.to_string()).collect();
        let v = validate(n, &cat, false);
        let verrs: Vec<String> = v.errors().map(|d| d.to_string()).collect();
        println!(
            "{} | {} | got {} want {} | flags {} | ierr {} verr {}",
            if got == want && errs.is_empty() {
                "OK "
            } else {
                "BAD"
            },
            rel,
            got,
            want,
            c[14],
            errs.len(),
            verrs.len()
        );
        for e in errs.iter().take(4) {
            println!(
                "    IE {}",
                e.replace(root.join("azure-configs").to_str().unwrap(), "")
            );
        }
        for e in verrs.iter().take(3) {
            println!(
                "    VE {}",
                e.replace(root.join("azure-configs").to_str().unwrap(), "")
            );
        }
    }
}

#[test]
#[ignore]
fn dump() {
    let f = std::env::var("DUMP").unwrap();
    let root =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/corpus/azure-configs");
    let p = root.join(&f);
    let imp = load(&[p], &ImportOptions::default());
    for d in imp.diagnostics.iter() {
        println!("{d}");
    }
    let n = &imp.network;
    for x in &n.network_security_groups {
        println!(
            "NSG {} rules={} {}",
            x.name,
            x.security_rules.len(),
            x.origin.pointer
        );
    }
    for x in &n.route_tables {
        println!(
            "RT {} routes={} {}",
            x.name,
            x.routes.len(),
            x.origin.pointer
        );
        for r in &x.routes {
            println!("   {:?}", r.name);
        }
    }
    for x in &n.virtual_networks {
        println!(
            "VNET {} subnets={:?}",
            x.name,
            x.subnets.iter().map(|s| &s.name).collect::<Vec<_>>()
        );
    }
    for x in &n.azure_firewalls {
        println!("FW {} cols={}", x.name, x.rule_collections.len());
    }
    for x in &n.firewall_policies {
        println!("POL {} rcgs={}", x.name, x.rule_collection_groups.len());
    }
}

#[test]
#[ignore]
fn expand_dump() {
    let f = std::env::var("DUMP").unwrap();
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/corpus/azure-configs");
    let p = root.join(&f);
    let text = std::fs::read_to_string(&p).unwrap();
    let doc = json::parse("x", &text).unwrap();
    let e = palisade_arm::expand(&doc.value, &palisade_arm::Options::default());
    for r in &e.resources { println!("{} {} {} {:?}", r.pointer, r.value["type"], r.value["name"], r.linked_file); if std::env::var("FULL").is_ok() { println!("{}", serde_json::to_string_pretty(&r.value).unwrap()); } }
    for p in &e.problems { println!("{:?}", p); }
}

#[test]
#[ignore]
fn body_dump() {
    let f = std::env::var("DUMP").unwrap();
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/corpus/azure-configs");
    let text = std::fs::read_to_string(root.join(&f)).unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let mut bodies = vec![];
    if let Some(p) = v.get("parameters").and_then(|p| p.as_object()) { bodies.extend(p.values().filter(|b| b.is_object()).cloned()); }
    if let Some(r) = v.get("responses").and_then(|p| p.as_object()) { bodies.extend(r.values().filter_map(|b| b.get("body")).cloned()); }
    for b in bodies {
        let fi = palisade_model::import::import_text("body.json", &b.to_string(), &ImportOptions::default(), None);
        println!("kind {:?} counts {:?} set_aside {:?}", fi.kind, fi.network.counts(), fi.set_aside);
        for d in fi.diagnostics.iter() { println!("   {d}"); }
    }
}
