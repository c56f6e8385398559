//! Loaders for the benchmark data formats. Every malformed line is an error naming `file:line`.

use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use flate2::read::GzDecoder;
use ipnet::IpNet;
use palisade_policy::matchers::{ClassifierRule, FqdnPattern};

/// Why a data file could not be loaded: it could not be opened or read (a missing file is
/// [`LoadError::Open`] with [`std::io::ErrorKind::NotFound`]), or one of its lines is malformed.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// Opening the file, or listing the directory of domain lists.
    #[error("{}: {source}", path.display())]
    Open {
        path: PathBuf,
        source: std::io::Error,
    },
    /// Reading (or gunzipping) line `line` (1-based).
    #[error("{}:{line}: {source}", path.display())]
    Read {
        path: PathBuf,
        line: usize,
        source: std::io::Error,
    },
    /// Line `line` (1-based) is not in the file's format.
    #[error("{}:{line}: {problem}", path.display())]
    BadLine {
        path: PathBuf,
        line: usize,
        problem: LineError,
    },
}

impl LoadError {
    /// The file (or directory) does not exist.
    pub fn is_missing(&self) -> bool {
        matches!(self, LoadError::Open { source, .. } if source.kind() == std::io::ErrorKind::NotFound)
    }
}

/// What is wrong with one line; `text` is the line as read (trimmed, comment dropped).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LineError {
    #[error("{reason}: `{text}`")]
    ClassBench {
        text: String,
        reason: ClassBenchError,
    },
    #[error("`{text}` is not a prefix")]
    NotAPrefix { text: String },
    #[error("expected one name or `ADDRESS name...`, got `{text}`")]
    NotADomainLine { text: String },
    /// A name the FQDN matcher rejects; `reason` is its message.
    #[error("{reason}")]
    BadPattern { text: String, reason: String },
}

/// Why a line is not a ClassBench filter.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClassBenchError {
    #[error("a ClassBench rule starts with `@`")]
    NoAt,
    #[error("expected `@src/len dst/len lo : hi lo : hi proto/mask`")]
    Shape,
    #[error("`{0}` is not a prefix")]
    BadPrefix(String),
    #[error("`{0}` is not a port")]
    BadPort(String),
    #[error("port range {lo} : {hi} is empty")]
    EmptyRange { lo: u16, hi: u16 },
    #[error("`{0}` is not proto/mask")]
    NotProtoMask(String),
    #[error("`{0}` is not a hex byte")]
    BadHex(String),
    #[error("protocol mask {0:#04x} is neither 0x00 nor 0xFF")]
    BadMask(u8),
}

/// Lines of a text file, gunzipped when the name ends in `.gz`; `\r` stripped.
fn lines(path: &Path) -> Result<Vec<String>, LoadError> {
    let f = File::open(path).map_err(|source| LoadError::Open {
        path: path.to_path_buf(),
        source,
    })?;
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
        let mut line = line.map_err(|source| LoadError::Read {
            path: path.to_path_buf(),
            line: i + 1,
            source,
        })?;
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
pub fn classbench(path: &Path) -> Result<(Vec<ClassifierRule>, usize), LoadError> {
    let mut rules = Vec::new();
    let mut skipped = 0;
    for (i, line) in lines(path)?.iter().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            skipped += 1;
            continue;
        }
        let rule = classbench_line(line).map_err(|reason| LoadError::BadLine {
            path: path.to_path_buf(),
            line: i + 1,
            problem: LineError::ClassBench {
                text: line.to_string(),
                reason,
            },
        })?;
        rules.push(rule);
    }
    Ok((rules, skipped))
}

fn classbench_line(line: &str) -> Result<ClassifierRule, ClassBenchError> {
    let body = line.strip_prefix('@').ok_or(ClassBenchError::NoAt)?;
    let t: Vec<&str> = body.split_whitespace().collect();
    if t.len() < 9 || t[3] != ":" || t[6] != ":" {
        return Err(ClassBenchError::Shape);
    }
    let net = |s: &str| -> Result<IpNet, ClassBenchError> {
        s.parse::<IpNet>()
            .map_err(|_| ClassBenchError::BadPrefix(s.to_string()))
    };
    let port = |s: &str| -> Result<u16, ClassBenchError> {
        s.parse::<u16>()
            .map_err(|_| ClassBenchError::BadPort(s.to_string()))
    };
    let range = |lo: &str, hi: &str| -> Result<(u16, u16), ClassBenchError> {
        let (lo, hi) = (port(lo)?, port(hi)?);
        if lo > hi {
            return Err(ClassBenchError::EmptyRange { lo, hi });
        }
        Ok((lo, hi))
    };
    let (value, mask) = t[8]
        .split_once('/')
        .ok_or_else(|| ClassBenchError::NotProtoMask(t[8].to_string()))?;
    let hex = |s: &str| -> Result<u8, ClassBenchError> {
        let digits = s
            .strip_prefix("0x")
            .or_else(|| s.strip_prefix("0X"))
            .unwrap_or(s);
        u8::from_str_radix(digits, 16).map_err(|_| ClassBenchError::BadHex(s.to_string()))
    };
    let protocol = match (hex(value)?, hex(mask)?) {
        (_, 0) => None,
        (v, 0xff) => Some(v),
        (_, m) => return Err(ClassBenchError::BadMask(m)),
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
pub fn prefixes(path: &Path) -> Result<Vec<IpNet>, LoadError> {
    let mut out = Vec::new();
    for (i, line) in lines(path)?.iter().enumerate() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let net = line.parse::<IpNet>().map_err(|_| LoadError::BadLine {
            path: path.to_path_buf(),
            line: i + 1,
            problem: LineError::NotAPrefix {
                text: line.to_string(),
            },
        })?;
        out.push(net);
    }
    Ok(out)
}

/// Domain lists: a file, or every `*.txt` file of a directory (in name order). Per line, after
/// dropping a `#` comment: a hosts-file entry `ADDRESS name...`, or one FW-6.3 pattern (`name`,
/// `*.name`, `*name`, `*`). Returns the patterns in file order and the file names read.
pub fn domains(path: &Path) -> Result<(Vec<FqdnPattern>, Vec<String>), LoadError> {
    let files: Vec<PathBuf> = if path.is_dir() {
        let mut v: Vec<PathBuf> = std::fs::read_dir(path)
            .map_err(|source| LoadError::Open {
                path: path.to_path_buf(),
                source,
            })?
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
                return Err(LoadError::BadLine {
                    path: file.clone(),
                    line: i + 1,
                    problem: LineError::NotADomainLine {
                        text: line.to_string(),
                    },
                });
            };
            for item in items {
                let p = FqdnPattern::parse(item).map_err(|reason| LoadError::BadLine {
                    path: file.clone(),
                    line: i + 1,
                    problem: LineError::BadPattern {
                        text: item.to_string(),
                        reason,
                    },
                })?;
                out.push(p);
            }
        }
    }
    Ok((out, names))
}
