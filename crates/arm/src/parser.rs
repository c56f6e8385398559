//! Expression syntax tree and a recursive-descent parser for it.
//!
//! Grammar (whitespace between tokens is free):
//!
//! ```text
//! expr    := primary postfix*
//! primary := STRING | INT | NAME ['.' NAME] '(' [expr (',' expr)*] ')' | 'true' | 'false' | 'null'
//! postfix := '.' ['?'] NAME | '[' ['?'] expr ']'
//! ```
//!
//! The tree height is capped ([`MAX_HEIGHT`]) so that parsing, evaluating and dropping a tree
//! built from hostile input cannot exhaust the stack.

use crate::lexer::{tokenize, Tok, Token};

/// Why an expression's text is malformed. Offsets are byte offsets into the text between the
/// outer brackets; found tokens are described as the messages show them (`name 'x'`, `')'`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SyntaxError {
    #[error("expression is longer than {max} characters ({found} found)")]
    TooLong { max: usize, found: usize },
    #[error("expression is nested more than {max} levels deep")]
    TooDeep { max: usize },
    #[error("unterminated string starting at offset {offset}")]
    UnterminatedString { offset: usize },
    #[error("'-' at offset {offset} is not followed by a digit")]
    LoneMinus { offset: usize },
    #[error("number at offset {offset}: only integer literals are allowed")]
    NotAnInteger { offset: usize },
    #[error("malformed number at offset {offset}")]
    MalformedNumber { offset: usize },
    #[error("integer at offset {offset} is out of range")]
    IntegerOutOfRange { offset: usize },
    #[error("unexpected character '{found}' at offset {offset}")]
    UnexpectedChar { found: char, offset: usize },
    #[error("unexpected {found} at offset {offset} after a complete expression")]
    TrailingInput { found: String, offset: usize },
    /// `expected` is a token (`']'`, `',' or ')'`, `a property name after '.'`).
    #[error("expected {expected} at offset {offset}, found {found}")]
    Expected {
        expected: String,
        offset: usize,
        found: String,
    },
    #[error("expected {expected} at the end of the expression")]
    ExpectedAtEnd { expected: String },
    #[error("expected a property name after '.'")]
    MissingPropertyName,
    #[error("missing ')' to close the call of '{name}'")]
    UnclosedCall { name: String },
    #[error("'{name}' at offset {offset} must be followed by '(' (function call)")]
    NotACall { name: String, offset: usize },
    #[error("expected a value or function call at offset {offset}, found {found}")]
    ExpectedValue { offset: usize, found: String },
    #[error("empty expression")]
    Empty,
}

/// Deepest tree the parser accepts. Real templates stay below 20.
pub(crate) const MAX_HEIGHT: usize = 64;

/// Longest expression text the parser accepts; ARM itself limits expressions to 24,576 characters.
pub(crate) const MAX_LEN: usize = 24_576;

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Expr {
    Str(String),
    Int(i64),
    Bool(bool),
    Null,
    /// A function call; `name` is as written, possibly `namespace.member` for user functions.
    Call {
        name: String,
        args: Vec<Expr>,
    },
    /// `target.name`; `optional` for `target.?name`, which gives null instead of failing.
    Member {
        target: Box<Expr>,
        name: String,
        optional: bool,
    },
    /// `target[index]`; `optional` for `target[?index]`.
    Index {
        target: Box<Expr>,
        index: Box<Expr>,
        optional: bool,
    },
}

/// Parses the text between the outer brackets of an expression string.
pub(crate) fn parse(text: &str) -> Result<Expr, SyntaxError> {
    if text.len() > MAX_LEN {
        return Err(SyntaxError::TooLong {
            max: MAX_LEN,
            found: text.len(),
        });
    }
    let tokens = tokenize(text)?;
    let mut parser = Parser {
        tokens: &tokens,
        pos: 0,
    };
    let (expr, _) = parser.expr(0)?;
    match parser.tokens.get(parser.pos) {
        None => Ok(expr),
        Some(t) => Err(SyntaxError::TrailingInput {
            found: describe(&t.kind),
            offset: t.offset,
        }),
    }
}

struct Parser<'a> {
    tokens: &'a [Token],
    pos: usize,
}

impl Parser<'_> {
    fn peek(&self) -> Option<&Tok> {
        self.tokens.get(self.pos).map(|t| &t.kind)
    }

    fn peek_at(&self, ahead: usize) -> Option<&Tok> {
        self.tokens.get(self.pos + ahead).map(|t| &t.kind)
    }

    fn offset(&self) -> usize {
        self.tokens
            .get(self.pos)
            .map(|t| t.offset)
            .or_else(|| self.tokens.last().map(|t| t.offset + 1))
            .unwrap_or(0)
    }

    fn next(&mut self) -> Option<Tok> {
        let t = self.tokens.get(self.pos).map(|t| t.kind.clone());
        if t.is_some() {
            self.pos += 1;
        }
        t
    }

    fn expect(&mut self, want: &Tok, what: &str) -> Result<(), SyntaxError> {
        let offset = self.offset();
        match self.next() {
            Some(ref t) if t == want => Ok(()),
            Some(t) => Err(SyntaxError::Expected {
                expected: what.to_string(),
                offset,
                found: describe(&t),
            }),
            None => Err(SyntaxError::ExpectedAtEnd {
                expected: what.to_string(),
            }),
        }
    }

    /// Parses one expression; returns it with its tree height. `depth` is the height budget used
    /// by the enclosing nodes.
    fn expr(&mut self, depth: usize) -> Result<(Expr, usize), SyntaxError> {
        if depth >= MAX_HEIGHT {
            return Err(SyntaxError::TooDeep { max: MAX_HEIGHT });
        }
        let (mut expr, mut height) = self.primary(depth)?;
        loop {
            match self.peek() {
                Some(Tok::Dot) => {
                    self.pos += 1;
                    let optional = self.peek() == Some(&Tok::Question);
                    if optional {
                        self.pos += 1;
                    }
                    let offset = self.offset();
                    let name = match self.next() {
                        Some(Tok::Ident(n)) => n,
                        Some(t) => {
                            return Err(SyntaxError::Expected {
                                expected: "a property name after '.'".to_string(),
                                offset,
                                found: describe(&t),
                            })
                        }
                        None => return Err(SyntaxError::MissingPropertyName),
                    };
                    height += 1;
                    expr = Expr::Member {
                        target: Box::new(expr),
                        name,
                        optional,
                    };
                }
                Some(Tok::LBracket) => {
                    self.pos += 1;
                    let optional = self.peek() == Some(&Tok::Question);
                    if optional {
                        self.pos += 1;
                    }
                    let (index, index_height) = self.expr(depth + 1)?;
                    self.expect(&Tok::RBracket, "']'")?;
                    height = height.max(index_height) + 1;
                    expr = Expr::Index {
                        target: Box::new(expr),
                        index: Box::new(index),
                        optional,
                    };
                }
                _ => break,
            }
            if depth + height > MAX_HEIGHT {
                return Err(SyntaxError::TooDeep { max: MAX_HEIGHT });
            }
        }
        Ok((expr, height))
    }

    fn primary(&mut self, depth: usize) -> Result<(Expr, usize), SyntaxError> {
        let offset = self.offset();
        match self.next() {
            Some(Tok::Str(s)) => Ok((Expr::Str(s), 1)),
            Some(Tok::Int(i)) => Ok((Expr::Int(i), 1)),
            Some(Tok::Ident(name)) => {
                let mut full = name;
                if self.peek() == Some(&Tok::Dot)
                    && matches!(self.peek_at(1), Some(Tok::Ident(_)))
                    && self.peek_at(2) == Some(&Tok::LParen)
                {
                    self.pos += 1;
                    if let Some(Tok::Ident(member)) = self.next() {
                        full = format!("{full}.{member}");
                    }
                }
                if self.peek() != Some(&Tok::LParen) {
                    return match full.to_ascii_lowercase().as_str() {
                        "true" => Ok((Expr::Bool(true), 1)),
                        "false" => Ok((Expr::Bool(false), 1)),
                        "null" => Ok((Expr::Null, 1)),
                        _ => Err(SyntaxError::NotACall { name: full, offset }),
                    };
                }
                self.pos += 1;
                let mut args = Vec::new();
                let mut height = 0;
                if self.peek() == Some(&Tok::RParen) {
                    self.pos += 1;
                } else {
                    loop {
                        let (arg, h) = self.expr(depth + 1)?;
                        height = height.max(h);
                        args.push(arg);
                        let at = self.offset();
                        match self.next() {
                            Some(Tok::Comma) => continue,
                            Some(Tok::RParen) => break,
                            Some(t) => {
                                return Err(SyntaxError::Expected {
                                    expected: "',' or ')'".to_string(),
                                    offset: at,
                                    found: describe(&t),
                                })
                            }
                            None => return Err(SyntaxError::UnclosedCall { name: full }),
                        }
                    }
                }
                Ok((Expr::Call { name: full, args }, height + 1))
            }
            Some(t) => Err(SyntaxError::ExpectedValue {
                offset,
                found: describe(&t),
            }),
            None => Err(SyntaxError::Empty),
        }
    }
}

fn describe(t: &Tok) -> String {
    match t {
        Tok::LParen => "'('".into(),
        Tok::RParen => "')'".into(),
        Tok::LBracket => "'['".into(),
        Tok::RBracket => "']'".into(),
        Tok::Comma => "','".into(),
        Tok::Dot => "'.'".into(),
        Tok::Question => "'?'".into(),
        Tok::Ident(n) => format!("name '{n}'"),
        Tok::Str(s) => format!("string '{s}'"),
        Tok::Int(i) => format!("integer {i}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(name: &str, args: Vec<Expr>) -> Expr {
        Expr::Call {
            name: name.into(),
            args,
        }
    }

    #[test]
    fn fmt_4_parse_nested_calls_members_and_indexes() {
        let e = parse("reference(resourceId('a/b', 'n')).ipConfigurations[0].id").expect("parses");
        let inner = call(
            "reference",
            vec![call(
                "resourceId",
                vec![Expr::Str("a/b".into()), Expr::Str("n".into())],
            )],
        );
        let expected = Expr::Member {
            target: Box::new(Expr::Index {
                target: Box::new(Expr::Member {
                    target: Box::new(inner),
                    name: "ipConfigurations".into(),
                    optional: false,
                }),
                index: Box::new(Expr::Int(0)),
                optional: false,
            }),
            name: "id".into(),
            optional: false,
        };
        assert_eq!(e, expected);
    }

    #[test]
    fn fmt_4_parse_user_function_and_literals() {
        assert_eq!(
            parse("contoso.name( 'x' , true , null )").expect("parses"),
            call(
                "contoso.name",
                vec![Expr::Str("x".into()), Expr::Bool(true), Expr::Null]
            )
        );
        assert_eq!(parse("true()").expect("parses"), call("true", Vec::new()));
    }

    #[test]
    fn fmt_4_parse_errors() {
        for bad in [
            "",
            "concat(",
            "concat('a',)",
            "concat('a' 'b')",
            "x",
            "a.b",
            "f()]",
            "f().",
            "f()[1",
            "'a' 'b'",
        ] {
            assert!(parse(bad).is_err(), "{bad} should not parse");
        }
    }

    #[test]
    fn fmt_4_parse_depth_is_capped() {
        let deep = format!("{}1{}", "f(".repeat(200), ")".repeat(200));
        assert!(parse(&deep).is_err());
        let chain = format!("f(){}", ".a".repeat(500));
        assert!(parse(&chain).is_err());
        let ok = format!("{}1{}", "f(".repeat(20), ")".repeat(20));
        assert!(parse(&ok).is_ok());
    }
}
