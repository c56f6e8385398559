//! The compact service-tag format the binary embeds.
//!
//! The weekly JSON file is 4 MB; the same content as line-oriented text is 1.9 MB and gzips to
//! about 400 kB, small enough to ship in the binary and still readable with `zcat`. The copy is
//! lossless for everything Palisade reads (it drops only `id`, which equals `name`) and carries the
//! SHA-256 of the file it was made from, so the embedded catalog and that file have the same
//! [`CatalogVersion`] hash.
//!
//! ```text
//! palisade-servicetags 1
//! source<TAB>ServiceTags_Public_20250728.json
//! cloud<TAB>Public
//! changeNumber<TAB>364
//! published<TAB>2025-07-28
//! sha256<TAB><hex of the original file>
//! tags<TAB>2967
//! tag<TAB>name<TAB>changeNumber<TAB>region<TAB>regionId<TAB>platform<TAB>systemService<TAB>null|list[<TAB>feature]...
//! <prefix> <prefix> ...
//! ```
//!
//! Each tag is two lines: its fields, then its prefixes separated by spaces (the line is empty
//! when it has none). Fields escape `\`, tab, CR and LF as `\\`, `\t`, `\r`, `\n`.

use super::access::MAX_BYTES;
use super::service_tags::{parse_prefix, Parts};
use super::{CatalogVersion, ServiceTag, ServiceTags};
use crate::diag::Diagnostic;
use std::io::{Read, Write};

const MAGIC: &str = "palisade-servicetags";
const FORMAT: &str = "1";

pub(crate) fn is_gzip(bytes: &[u8]) -> bool {
    bytes.starts_with(&[0x1f, 0x8b])
}

pub(crate) fn is_compact(text: &str) -> bool {
    text.starts_with(MAGIC)
}

/// Inflate gzip'd bytes, at most [`MAX_BYTES`].
pub(crate) fn gunzip(file: &str, bytes: &[u8]) -> Result<Vec<u8>, Diagnostic> {
    let mut out = Vec::new();
    flate2::read::MultiGzDecoder::new(bytes)
        .take(MAX_BYTES + 1)
        .read_to_end(&mut out)
        .map_err(|e| {
            Diagnostic::error(format!("the gzip data is damaged: {e}"))
                .at(file, "")
                .expected("a gzip'd service tag file")
        })?;
    if out.len() as u64 > MAX_BYTES {
        return Err(Diagnostic::error(format!(
            "the gzip data inflates to more than {} MiB",
            MAX_BYTES / (1024 * 1024)
        ))
        .at(file, ""));
    }
    Ok(out)
}

/// Gzip `text` reproducibly (no file name, zero timestamp).
pub(crate) fn gzip(text: &str) -> std::io::Result<Vec<u8>> {
    let mut enc = flate2::GzBuilder::new()
        .mtime(0)
        .write(Vec::new(), flate2::Compression::best());
    enc.write_all(text.as_bytes())?;
    enc.finish()
}

fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\t' => out.push_str("\\t"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            c => out.push(c),
        }
    }
    out
}

/// What is wrong with one line of the compact copy; [`decode`] adds the line number.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
enum LineError {
    /// `None`: a backslash at the end of the field.
    #[error("bad escape `\\{}`", .0.unwrap_or(' '))]
    BadEscape(Option<char>),
    #[error("a tag line has too few fields")]
    TooFewFields,
    #[error("expected a `tag` line")]
    NotATag,
    #[error("bad number `{value}` in tag `{tag}`")]
    BadNumber { value: String, tag: String },
    #[error("bad features of tag `{tag}`")]
    BadFeatures { tag: String },
}

fn unescape(s: &str) -> Result<String, LineError> {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('\\') => out.push('\\'),
            Some('t') => out.push('\t'),
            Some('n') => out.push('\n'),
            Some('r') => out.push('\r'),
            other => return Err(LineError::BadEscape(other)),
        }
    }
    Ok(out)
}

/// The catalog as compact text.
pub(crate) fn encode(tags: &ServiceTags) -> String {
    fn line(out: &mut String, fields: &[&str]) {
        let escaped: Vec<String> = fields.iter().map(|f| escape(f)).collect();
        out.push_str(&escaped.join("\t"));
        out.push('\n');
    }
    let mut out = String::new();
    line(&mut out, &[&format!("{MAGIC} {FORMAT}")]);
    line(&mut out, &["source", tags.origin()]);
    line(&mut out, &["cloud", tags.cloud()]);
    line(
        &mut out,
        &["changeNumber", &tags.version().change_number.to_string()],
    );
    line(&mut out, &["published", tags.published().unwrap_or("")]);
    line(&mut out, &["sha256", &tags.version().content_hash]);
    line(&mut out, &["tags", &tags.len().to_string()]);
    for t in tags.iter() {
        let (cn, rid) = (t.change_number.to_string(), t.region_id.to_string());
        let mut fields = vec![
            "tag",
            &t.name,
            &cn,
            &t.region,
            &rid,
            &t.platform,
            &t.system_service,
        ];
        match &t.network_features {
            None => fields.push("null"),
            Some(fs) => {
                fields.push("list");
                fields.extend(fs.iter().map(String::as_str));
            }
        }
        line(&mut out, &fields);
        let prefixes: Vec<String> = t.address_prefixes.iter().map(|p| p.to_string()).collect();
        out.push_str(&prefixes.join(" "));
        out.push('\n');
    }
    out
}

/// Parse compact text. `file` names it in diagnostics and in the version's source.
pub(crate) fn decode(file: &str, text: &str) -> Result<Parts, Diagnostic> {
    let fail = |n: usize, msg: String| {
        let mut d = Diagnostic::error(format!("compact service tag copy: {msg}"))
            .at(file, "")
            .expected(format!(
                "the `{MAGIC} {FORMAT}` format (see catalogs/README.md)"
            ));
        d.line = Some(n);
        d.column = Some(1);
        d
    };
    let mut lines = text.lines().enumerate().map(|(i, l)| (i + 1, l));
    let (n, first) = lines.next().unwrap_or((1, ""));
    if first != format!("{MAGIC} {FORMAT}") {
        return Err(fail(n, format!("unsupported header `{first}`")));
    }
    let mut header = std::collections::HashMap::new();
    let mut count = None;
    for (n, l) in lines.by_ref() {
        let (k, v) = l
            .split_once('\t')
            .ok_or_else(|| fail(n, "a header line lacks a tab".to_string()))?;
        let v = unescape(v).map_err(|e| fail(n, e.to_string()))?;
        if k == "tags" {
            count = Some(
                v.parse::<usize>()
                    .map_err(|_| fail(n, format!("bad tag count `{v}`")))?,
            );
            break;
        }
        header.insert(k.to_string(), v);
    }
    let count = count.ok_or_else(|| fail(1, "no `tags` line".to_string()))?;
    let field = |k: &str| header.get(k).cloned().unwrap_or_default();
    let origin = field("source");
    let change_number = field("changeNumber")
        .parse::<u64>()
        .map_err(|_| fail(1, "bad or missing `changeNumber`".to_string()))?;
    let hash = field("sha256");
    if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(fail(1, "bad or missing `sha256`".to_string()));
    }
    let published = Some(field("published")).filter(|p| !p.is_empty());
    let mut tags = Vec::with_capacity(count.min(100_000));
    let mut seen = std::collections::HashSet::new();
    while let Some((n, l)) = lines.next() {
        let tag = decode_tag(l).map_err(|e| fail(n, e.to_string()))?;
        let (pn, pl) = lines
            .next()
            .ok_or_else(|| fail(n + 1, format!("the prefixes of `{}` are missing", tag.name)))?;
        let mut tag = tag;
        for p in pl.split(' ').filter(|p| !p.is_empty()) {
            match parse_prefix(p) {
                Some((net, false)) => tag.address_prefixes.push(net),
                _ => return Err(fail(pn, format!("bad prefix `{p}`"))),
            }
        }
        if !seen.insert(tag.name.to_ascii_lowercase()) {
            return Err(fail(n, format!("tag `{}` appears twice", tag.name)));
        }
        tags.push(tag);
    }
    if tags.len() != count {
        return Err(fail(
            text.lines().count(),
            format!("{} tags where the header says {count}", tags.len()),
        ));
    }
    let source = if file == "embedded" {
        format!("{origin} (embedded)")
    } else {
        format!("{origin} (compact copy {file})")
    };
    Ok(Parts {
        version: CatalogVersion {
            source,
            change_number,
            content_hash: hash.to_ascii_lowercase(),
        },
        origin,
        cloud: field("cloud"),
        published,
        tags,
        warnings: Vec::new(),
    })
}

fn decode_tag(line: &str) -> Result<ServiceTag, LineError> {
    let fields: Vec<String> = line.split('\t').map(unescape).collect::<Result<_, _>>()?;
    let [kind, name, cn, region, rid, platform, service, features, rest @ ..] = &fields[..] else {
        return Err(LineError::TooFewFields);
    };
    if kind != "tag" || name.is_empty() {
        return Err(LineError::NotATag);
    }
    let number = |s: &str| {
        s.parse::<u64>().map_err(|_| LineError::BadNumber {
            value: s.to_string(),
            tag: name.clone(),
        })
    };
    let network_features = match (features.as_str(), rest) {
        ("null", []) => None,
        ("list", fs) => Some(fs.to_vec()),
        _ => return Err(LineError::BadFeatures { tag: name.clone() }),
    };
    Ok(ServiceTag {
        name: name.clone(),
        change_number: number(cn)?,
        region: region.clone(),
        region_id: number(rid)?,
        platform: platform.clone(),
        system_service: service.clone(),
        address_prefixes: Vec::new(),
        network_features,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cat_3_compact_escapes_round_trip() {
        for s in ["", "a\tb", "x\\ny", "\r\n\\t", "plain"] {
            assert_eq!(unescape(&escape(s)).unwrap(), s);
        }
        assert!(unescape("\\q").is_err());
        assert!(unescape("\\").is_err());
    }

    #[test]
    fn cat_3_compact_rejects_damage() {
        let good = "palisade-servicetags 1\nsource\tS.json\ncloud\tPublic\nchangeNumber\t5\npublished\t\nsha256\t"
            .to_string()
            + &"a".repeat(64)
            + "\ntags\t1\ntag\tA\t1\t\t0\tAzure\t\tlist\tNSG\n10.0.0.0/8 ::/0\n";
        let parts = decode("f", &good).unwrap();
        assert_eq!(parts.tags.len(), 1);
        assert_eq!(
            parts.tags[0].network_features,
            Some(vec!["NSG".to_string()])
        );
        assert_eq!(parts.published, None);
        for bad in [
            good.replace("tags\t1", "tags\t2"),
            good.replace("10.0.0.0/8", "10.0.0.1/8"),
            good.replace("list\tNSG", "maybe"),
            good.replace("\t1\t\t0", "\tx\t\t0"),
            good.replace("palisade-servicetags 1", "palisade-servicetags 2"),
            good.replace(&"a".repeat(64), "abc"),
            good.replace("\n10.0.0.0/8 ::/0\n", "\n"),
        ] {
            let e = decode("f", &bad).unwrap_err();
            assert!(e.line.is_some(), "{e}");
        }
    }
}
