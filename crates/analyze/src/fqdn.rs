//! Name patterns as languages (DIAG-8, FW-6.3, CAT-8): inclusion ("every name matching P also
//! matches T") and overlap ("some name matches both"), decided exactly on the pattern shapes.
//!
//! A pattern is `prefix · middle · suffix` where the middle is empty (an exact name), one or more
//! characters (`*.x` has an empty prefix, a middle of ≥ 1 characters and suffix `.x`), zero or
//! more characters (`*x`), or one or more characters within one label (`gr-prod-*.cloudapp.net`).

/// The middle part of a pattern.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Middle {
    None,
    /// `*.x`: at least one character, any (dots included), before `.x`.
    OneOrMore,
    /// `*x`: any characters, possibly none.
    ZeroOrMore,
    /// `a-*.x`: at least one character, no dot.
    InLabel,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamePattern {
    prefix: String,
    middle: Middle,
    suffix: String,
}

impl NamePattern {
    /// Parse a firewall target (FW-6.3) or a catalog entry (CAT-8); lower-cases, drops a
    /// trailing dot. `*` alone is "any name".
    pub fn parse(s: &str) -> NamePattern {
        let s = s.trim().trim_end_matches('.').to_ascii_lowercase();
        if s == "*" {
            return NamePattern {
                prefix: String::new(),
                middle: Middle::OneOrMore,
                suffix: String::new(),
            };
        }
        if let Some(rest) = s.strip_prefix("*.") {
            return NamePattern {
                prefix: String::new(),
                middle: Middle::OneOrMore,
                suffix: format!(".{rest}"),
            };
        }
        if let Some(rest) = s.strip_prefix('*') {
            return NamePattern {
                prefix: String::new(),
                middle: Middle::ZeroOrMore,
                suffix: rest.to_string(),
            };
        }
        if let Some((a, b)) = s.split_once('*') {
            return NamePattern {
                prefix: a.to_string(),
                middle: Middle::InLabel,
                suffix: b.to_string(),
            };
        }
        NamePattern {
            prefix: s,
            middle: Middle::None,
            suffix: String::new(),
        }
    }

    pub fn is_exact(&self) -> bool {
        self.middle == Middle::None
    }

    /// Does one concrete name match?
    pub fn matches(&self, name: &str) -> bool {
        let n = name.trim_end_matches('.').to_ascii_lowercase();
        if !n.starts_with(&self.prefix) || !n.ends_with(&self.suffix) {
            return false;
        }
        let fixed = self.prefix.len() + self.suffix.len();
        if n.len() < fixed {
            return false;
        }
        let mid = &n[self.prefix.len()..n.len() - self.suffix.len()];
        match self.middle {
            Middle::None => mid.is_empty(),
            Middle::OneOrMore => !mid.is_empty(),
            Middle::ZeroOrMore => true,
            Middle::InLabel => !mid.is_empty() && !mid.contains('.'),
        }
    }

    /// A name of this pattern that diagnostics can trace (DIAG-8 "synthetic matching name").
    pub fn witness(&self) -> String {
        match self.middle {
            Middle::None => self.prefix.clone(),
            Middle::OneOrMore | Middle::InLabel => {
                format!("{}palisade-probe{}", self.prefix, self.suffix)
            }
            Middle::ZeroOrMore => format!("{}palisade-probe{}", self.prefix, self.suffix),
        }
    }

    /// Is every name of `self` also a name of `other`?
    pub fn included_in(&self, other: &NamePattern) -> bool {
        if self.is_exact() {
            return other.matches(&self.prefix);
        }
        match other.middle {
            // An exact target covers only itself; a pattern has infinitely many names.
            Middle::None => false,
            _ => {
                // Names of `self` end with its suffix after a free part; for them all to end
                // with `other`'s suffix, `self`'s fixed tail must end with it, and `other`'s
                // prefix must be a prefix of every name (only possible when it is empty or
                // `self`'s own prefix starts with it).
                if !self.prefix.starts_with(&other.prefix) {
                    return false;
                }
                if !self.suffix.ends_with(&other.suffix) {
                    // The free part could supply the rest of `other.suffix` only for some names.
                    return false;
                }
                // Minimum free-part length of `other` must be met by every name of `self`.
                let spare =
                    self.prefix.len() - other.prefix.len() + self.suffix.len() - other.suffix.len();
                let self_min = match self.middle {
                    Middle::ZeroOrMore => 0,
                    _ => 1,
                };
                match other.middle {
                    Middle::ZeroOrMore => true,
                    Middle::OneOrMore => spare + self_min >= 1,
                    Middle::InLabel => {
                        // `other`'s free part is one label fragment: `self`'s must never hold a dot.
                        let fixed_part = format!(
                            "{}{}",
                            &self.prefix[other.prefix.len()..],
                            &self.suffix[..self.suffix.len() - other.suffix.len()]
                        );
                        self.middle == Middle::InLabel
                            && !fixed_part.contains('.')
                            && spare + self_min >= 1
                    }
                    Middle::None => false,
                }
            }
        }
    }

    /// Do the two patterns share at least one name? Decided on witnesses and suffix
    /// compatibility: exact when either side is exact, conservative (may say yes) otherwise.
    pub fn overlaps(&self, other: &NamePattern) -> bool {
        if self.is_exact() {
            return other.matches(&self.prefix);
        }
        if other.is_exact() {
            return self.matches(&other.prefix);
        }
        let suffixes = self.suffix.ends_with(&other.suffix) || other.suffix.ends_with(&self.suffix);
        let prefixes =
            self.prefix.starts_with(&other.prefix) || other.prefix.starts_with(&self.prefix);
        suffixes && prefixes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inc(a: &str, b: &str) -> bool {
        NamePattern::parse(a).included_in(&NamePattern::parse(b))
    }

    #[test]
    fn diag_8_inclusion_examples() {
        assert!(inc("*.a.com", "*.a.com"));
        assert!(inc("*.a.com", "*.com"));
        assert!(inc("*.a.com", "*a.com"));
        assert!(!inc("*.a.com", "a.com"));
        assert!(inc("x.a.com", "*.a.com"));
        assert!(!inc("a.com", "*.a.com"));
        assert!(inc("a.com", "*a.com"));
        assert!(!inc("*.core.windows.net", "*.blob.core.windows.net"));
        assert!(inc("*.blob.core.windows.net", "*.core.windows.net"));
        assert!(inc("gr-prod-*.cloudapp.net", "*.cloudapp.net"));
        assert!(!inc("*.cloudapp.net", "gr-prod-*.cloudapp.net"));
        assert!(inc("*.windowsupdate.com", "*"));
        assert!(!inc("*windowsupdate.com", "*.windowsupdate.com"));
    }

    #[test]
    fn fw_6_3_matching() {
        let p = NamePattern::parse("*.example.com");
        assert!(
            p.matches("a.b.example.com")
                && !p.matches("example.com")
                && !p.matches("badexample.com")
        );
        let p = NamePattern::parse("*example.com");
        assert!(p.matches("example.com") && p.matches("badexample.com"));
        let p = NamePattern::parse("gr-Prod-*.cloudapp.net");
        assert!(p.matches("gr-prod-eastus.cloudapp.net") && !p.matches("gr-prod-a.b.cloudapp.net"));
    }

    /// Inclusion agrees with brute force over a small universe of names.
    #[test]
    fn inclusion_matches_enumeration() {
        let pats = [
            "*",
            "*.a.com",
            "*a.com",
            "a.com",
            "x.a.com",
            "*.com",
            "*com",
            "x-*.a.com",
            "*.x.a.com",
            "xa.com",
        ];
        let names: Vec<String> = {
            let labels = ["", "x", "a", "xa", "x-y", "x.y", "com"];
            let mut v = vec![];
            for l in labels {
                for tail in ["a.com", ".a.com", "com", ".com", "x.a.com", "-q.a.com"] {
                    v.push(format!("{l}{tail}").trim_start_matches('.').to_string());
                }
            }
            v
        };
        for a in pats {
            for b in pats {
                let pa = NamePattern::parse(a);
                let pb = NamePattern::parse(b);
                let brute = names
                    .iter()
                    .filter(|n| pa.matches(n))
                    .all(|n| pb.matches(n));
                if pa.included_in(&pb) {
                    assert!(brute, "{a} ⊆ {b} claimed but a counterexample exists");
                }
            }
        }
    }
}
