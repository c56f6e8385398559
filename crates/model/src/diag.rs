//! Located problems (FMT-12): file, line:column and JSON pointer, resource, field, what was found
//! and what was expected. Import collects every problem before deciding.

use serde::Serialize;
use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub enum Severity {
    Note,
    Warning,
    Error,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Diagnostic {
    pub severity: Severity,
    pub file: String,
    /// 1-based line and column, when the file's text positions are known.
    pub line: Option<usize>,
    pub column: Option<usize>,
    /// JSON pointer of the offending value.
    pub pointer: String,
    /// `Microsoft.Network/networkSecurityGroups` etc., when known.
    pub resource_type: Option<String>,
    pub resource: Option<String>,
    pub field: Option<String>,
    pub found: Option<String>,
    pub expected: Option<String>,
    pub message: String,
}

impl Diagnostic {
    pub fn new(severity: Severity, message: impl Into<String>) -> Diagnostic {
        Diagnostic {
            severity,
            file: String::new(),
            line: None,
            column: None,
            pointer: String::new(),
            resource_type: None,
            resource: None,
            field: None,
            found: None,
            expected: None,
            message: message.into(),
        }
    }
    pub fn error(message: impl Into<String>) -> Diagnostic {
        Diagnostic::new(Severity::Error, message)
    }
    pub fn warning(message: impl Into<String>) -> Diagnostic {
        Diagnostic::new(Severity::Warning, message)
    }
    pub fn note(message: impl Into<String>) -> Diagnostic {
        Diagnostic::new(Severity::Note, message)
    }
    pub fn at(mut self, file: &str, pointer: &str) -> Diagnostic {
        self.file = file.to_string();
        self.pointer = pointer.to_string();
        self
    }
    pub fn resource(mut self, ty: &str, name: &str) -> Diagnostic {
        self.resource_type = Some(ty.to_string());
        self.resource = Some(name.to_string());
        self
    }
    pub fn field(mut self, field: &str) -> Diagnostic {
        self.field = Some(field.to_string());
        self
    }
    pub fn found(mut self, found: impl fmt::Display) -> Diagnostic {
        self.found = Some(found.to_string());
        self
    }
    pub fn expected(mut self, expected: impl Into<String>) -> Diagnostic {
        self.expected = Some(expected.into());
        self
    }
    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sev = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
            Severity::Note => "note",
        };
        write!(f, "{sev}: ")?;
        if !self.file.is_empty() {
            write!(f, "{}", self.file)?;
            if let (Some(l), Some(c)) = (self.line, self.column) {
                write!(f, ":{l}:{c}")?;
            }
            if !self.pointer.is_empty() {
                write!(f, " ({})", self.pointer)?;
            }
            write!(f, ": ")?;
        }
        if let Some(r) = &self.resource {
            match &self.resource_type {
                Some(t) => write!(f, "{t} '{r}'")?,
                None => write!(f, "'{r}'")?,
            }
            if let Some(field) = &self.field {
                write!(f, " field `{field}`")?;
            }
            write!(f, ": ")?;
        } else if let Some(field) = &self.field {
            write!(f, "field `{field}`: ")?;
        }
        write!(f, "{}", self.message)?;
        if let Some(found) = &self.found {
            write!(f, "; found `{found}`")?;
        }
        if let Some(exp) = &self.expected {
            write!(f, "; expected {exp}")?;
        }
        Ok(())
    }
}

/// A bag of diagnostics with helpers for "any errors?".
#[derive(Debug, Clone, Default, Serialize)]
pub struct Diagnostics(pub Vec<Diagnostic>);

impl Diagnostics {
    pub fn push(&mut self, d: Diagnostic) {
        self.0.push(d);
    }
    pub fn has_errors(&self) -> bool {
        self.0.iter().any(Diagnostic::is_error)
    }
    pub fn errors(&self) -> impl Iterator<Item = &Diagnostic> {
        self.0.iter().filter(|d| d.is_error())
    }
    pub fn extend(&mut self, other: impl IntoIterator<Item = Diagnostic>) {
        self.0.extend(other);
    }
    pub fn iter(&self) -> std::slice::Iter<'_, Diagnostic> {
        self.0.iter()
    }
    pub fn len(&self) -> usize {
        self.0.len()
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Display for Diagnostics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for d in &self.0 {
            writeln!(f, "{d}")?;
        }
        Ok(())
    }
}
