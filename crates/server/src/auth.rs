//! Bearer tokens: a token file lists `NAME ROLE SHA256-OF-TOKEN` per line (`#` comments).
//! Tokens are random and long, so a plain SHA-256 is enough to keep the file harmless if read;
//! the comparison is constant-time so a caller cannot learn a hash byte by byte.

use sha2::{Digest, Sha256};
use std::path::Path;
use subtle::ConstantTimeEq;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    /// Diagnostics, resources and versions: read only.
    Reader,
    /// Everything a reader may, and changes.
    Admin,
}

#[derive(Debug, Clone)]
pub struct Token {
    pub name: String,
    pub role: Role,
    hash: [u8; 32],
}

/// Who is calling (the token's name and role); put into each request by the auth layer.
#[derive(Debug, Clone)]
pub struct Caller {
    pub name: String,
    pub role: Role,
}

#[derive(Debug, Clone, Default)]
pub struct Tokens(Vec<Token>);

/// Whether a request is an admin operation, served on the admin listener only: a change
/// (`PUT`, `PATCH`, `DELETE`, a rollback) or the audit log. Everything else is a read —
/// diagnostics are `POST`s that change nothing.
pub fn is_admin_operation(method: &axum::http::Method, path: &str) -> bool {
    use axum::http::Method;
    let path = path.trim_end_matches('/');
    match *method {
        Method::GET | Method::HEAD => path == "/api/audit",
        Method::POST => path.starts_with("/api/versions/") && path.ends_with("/rollback"),
        Method::OPTIONS => false,
        _ => true,
    }
}

pub fn sha256_hex(token: &str) -> String {
    Sha256::digest(token.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

impl Tokens {
    pub fn parse(file: &str, text: &str) -> Result<Tokens, String> {
        let mut out = vec![];
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let at = format!("{file}:{}", i + 1);
            let fields: Vec<&str> = line.split_whitespace().collect();
            let [name, role, hash] = fields[..] else {
                return Err(format!(
                    "{at}: expected `NAME ROLE SHA256` (three fields), found {} field(s)",
                    fields.len()
                ));
            };
            let role = match role {
                "reader" => Role::Reader,
                "admin" => Role::Admin,
                other => {
                    return Err(format!(
                        "{at}: token '{name}': role `{other}`, expected `reader` or `admin`"
                    ))
                }
            };
            let hash = decode_hash(hash).ok_or_else(|| {
                format!("{at}: token '{name}': hash `{hash}`, expected 64 hexadecimal digits (the SHA-256 of the token)")
            })?;
            out.push(Token {
                name: name.to_string(),
                role,
                hash,
            });
        }
        Ok(Tokens(out))
    }

    pub fn load(path: &Path) -> Result<Tokens, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("{}: cannot read the token file: {e}", path.display()))?;
        Tokens::parse(&path.display().to_string(), &text)
    }

    /// The token's entry. Every entry is compared, matching or not, so timing says nothing.
    pub fn verify(&self, presented: &str) -> Option<Caller> {
        let digest: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        let mut found = None;
        for t in &self.0 {
            if bool::from(t.hash.ct_eq(&digest)) {
                found = Some(Caller {
                    name: t.name.clone(),
                    role: t.role,
                });
            }
        }
        found
    }
}

fn decode_hash(hex: &str) -> Option<[u8; 32]> {
    if hex.len() != 64 || !hex.is_ascii() {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

/// A new random token (256 bits, hex).
pub fn generate() -> Result<String, String> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| format!("no randomness for a token: {e}"))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

#[cfg(test)]
mod tests {
    #[test]
    fn changes_and_the_audit_log_are_admin_operations() {
        use axum::http::Method;
        for (m, p, admin) in [
            (Method::PUT, "/api/resources/routeTables/rt", true),
            (Method::PATCH, "/api/resources/routeTables/rt", true),
            (
                Method::DELETE,
                "/api/resources/routeTables/rt/routes/r",
                true,
            ),
            (Method::POST, "/api/versions/3/rollback", true),
            (Method::POST, "/api/versions/3/rollback/", true),
            (Method::GET, "/api/audit", true),
            (Method::GET, "/api/resources/routeTables/rt", false),
            (Method::POST, "/api/diagnostics/ipFlowVerify", false),
            (Method::POST, "/api/analyze/reachability", false),
            (Method::GET, "/api/versions/3", false),
            (Method::GET, "/openapi.json", false),
        ] {
            assert_eq!(super::is_admin_operation(&m, p), admin, "{m} {p}");
        }
    }

    use super::*;

    #[test]
    fn verifies_by_hash_and_refuses_others() {
        let text = format!(
            "# ci\nci admin {}\nviewer reader {}\n",
            sha256_hex("secret-a"),
            sha256_hex("secret-b")
        );
        let t = Tokens::parse("tokens", &text).unwrap();
        assert_eq!(t.verify("secret-a").unwrap().role, Role::Admin);
        let v = t.verify("secret-b").unwrap();
        assert_eq!((v.name.as_str(), v.role), ("viewer", Role::Reader));
        assert!(t.verify("secret-c").is_none());
        assert!(t.verify("").is_none());
    }

    #[test]
    fn bad_lines_are_located() {
        let e = Tokens::parse("tokens", "\nci owner abc\n").unwrap_err();
        assert!(e.starts_with("tokens:2: token 'ci': role `owner`"), "{e}");
        let e = Tokens::parse("tokens", "ci admin abc\n").unwrap_err();
        assert!(e.contains("64 hexadecimal digits"), "{e}");
        let e = Tokens::parse("tokens", "ci admin\n").unwrap_err();
        assert!(e.contains("three fields"), "{e}");
        let e = Tokens::parse("tokens", &format!("ci admin {}é\n", "a".repeat(62))).unwrap_err();
        assert!(e.contains("64 hexadecimal"), "{e}");
    }
}
