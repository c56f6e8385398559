//! Loaders for the benchmark data formats. Every malformed line is an error naming `file:line`.

use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use flate2::read::GzDecoder;
use ipnet::IpNet;
use palisade_policy::matchers::{ClassifierRule, FqdnPattern};

/// Lines of a text file, gunzipped when the name ends in `.gz`; `\r` stripped.
fn lines(path: &Path) -> Result<Vec<String>, String> {
    let f = File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let reader: Box<dyn Read> = if path.extension().is_some_and(|e| e == "gz") {
        Box::new(GzDecoder::new(f))
    } else {
        Box::new(f)
    };
    let mut out = Vec::new();
    for (i, line) in BufReader::with_capacity(1 << 16, reader)
        .lines()
        .enumerate()
    {
        let mut line = line.map_err(|e| format!("{}:{}: {e}", path.display(), i + 1))?;
        if line.ends_with('\r') {
            line.pop();
        }
        out.push(line);
    }
    Ok(out)
}

/// A ClassBench filter file: `@src/len dst/len sp_lo : sp_hi dp_lo : dp_hi proto/mask [flags/mask]`
/// (tab- or space-separated). Protocol mask `0x00` = any protocol, `0xFF` = that protocol; the
/// TCP-flags field is ignored. Returns the rules and the number of blank lines skipped.
pub fn classbench(path: &Path) -> Result<(Vec<ClassifierRule>, usize), String> {
    let mut rules = Vec::new();
    let mut skipped = 0;
    for (i, line) in lines(path)?.iter().enumerate() {
        let at = || format!("{}:{}", path.display(), i + 1);
        let line = line.trim();
        if line.is_empty() {
            skipped += 1;
            continue;
        }
        let rule = classbench_line(line).map_err(|e| format!("{}: {e}: `{line}`", at()))?;
        rules.push(rule);
    }
    Ok((rules, skipped))
}

fn classbench_line(line: &str) -> Result<ClassifierRule, String> {
    let body = line
        .strip_prefix('@')
        .ok_or("a ClassBench rule starts with `@`")?;
    let t: Vec<&str> = body.split_whitespace().collect();
    if t.len() < 9 || t[3] != ":" || t[6] != ":" {
        return Err("expected `@src/len dst/len lo : hi lo : hi proto/mask`".into());
    }
    let net = |s: &str| -> Result<IpNet, String> {
        s.parse::<IpNet>()
            .map_err(|_| format!("`{s}` is not a prefix"))
    };
    let port = |s: &str| -> Result<u16, String> {
        s.parse::<u16>().map_err(|_| format!("`{s}` is not a port"))
    };
    let range = |lo: &str, hi: &str| -> Result<(u16, u16), String> {
        let (lo, hi) = (port(lo)?, port(hi)?);
        if lo > hi {
            return Err(format!("port range {lo} : {hi} is empty"));
        }
        Ok((lo, hi))
    };
    let (value, mask) = t[8]
        .split_once('/')
        .ok_or_else(|| format!("`{}` is not proto/mask", t[8]))?;
    let hex = |s: &str| -> Result<u8, String> {
        let digits = s
            .strip_prefix("0x")
            .or_else(|| s.strip_prefix("0X"))
            .unwrap_or(s);
        u8::from_str_radix(digits, 16).map_err(|_| format!("`{s}` is not a hex byte"))
    };
    let protocol = match (hex(value)?, hex(mask)?) {
        (_, 0) => None,
        (v, 0xff) => Some(v),
        (_, m) => return Err(format!("protocol mask {m:#04x} is neither 0x00 nor 0xFF")),
    };
    Ok(ClassifierRule {
        protocol,
        src: vec![net(t[0])?.trunc()],
        dst: vec![net(t[1])?.trunc()],
        src_ports: vec![range(t[2], t[4])?],
        dst_ports: vec![range(t[5], t[7])?],
    })
}

/// A prefix list: one prefix per line (`.gz` is gunzipped, CRLF accepted, blank lines and `#`
/// comments skipped).
pub fn prefixes(path: &Path) -> Result<Vec<IpNet>, String> {
    let mut out = Vec::new();
    for (i, line) in lines(path)?.iter().enumerate() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let net = line
            .parse::<IpNet>()
            .map_err(|_| format!("{}:{}: `{line}` is not a prefix", path.display(), i + 1))?;
        out.push(net);
    }
    Ok(out)
}

/// Domain lists: a file, or every `*.txt` file of a directory (in name order). Per line, after
/// dropping a `#` comment: a hosts-file entry `ADDRESS name...`, or one FW-6.3 pattern (`name`,
/// `*.name`, `*name`, `*`). Returns the patterns in file order and the file names read.
pub fn domains(path: &Path) -> Result<(Vec<FqdnPattern>, Vec<String>), String> {
    let files: Vec<PathBuf> = if path.is_dir() {
        let mut v: Vec<PathBuf> = std::fs::read_dir(path)
            .map_err(|e| format!("{}: {e}", path.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "txt"))
            .collect();
        v.sort();
        v
    } else {
        vec![path.to_path_buf()]
    };
    let mut out = Vec::new();
    let mut names = Vec::new();
    for file in &files {
        names.push(
            file.file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
        );
        for (i, line) in lines(file)?.iter().enumerate() {
            let line = line.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            let mut tokens = line.split_whitespace();
            let first = tokens.next().unwrap_or("");
            let rest: Vec<&str> = tokens.collect();
            let items: Vec<&str> = if first.parse::<IpAddr>().is_ok() && !rest.is_empty() {
                rest
            } else if rest.is_empty() {
                vec![first]
            } else {
                return Err(format!(
                    "{}:{}: expected one name or `ADDRESS name...`, got `{line}`",
                    file.display(),
                    i + 1
                ));
            };
            for item in items {
                let p = FqdnPattern::parse(item)
                    .map_err(|e| format!("{}:{}: {e}", file.display(), i + 1))?;
                out.push(p);
            }
        }
    }
    Ok((out, names))
}
