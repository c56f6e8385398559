//! Tokens of the ARM template expression language (the text between the outer `[` and `]`).
//!
//! The language is small: function names, single-quoted strings with `''` as the escaped quote,
//! integers, parentheses, commas, member access `.name` and indexing `[expr]`. There are no
//! operators, so a `-` can only start a negative integer.

/// One token and the byte offset where it starts, for error messages.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Token {
    pub kind: Tok,
    pub offset: usize,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Tok {
    LParen,
    RParen,
    LBracket,
    RBracket,
    Comma,
    Dot,
    /// `?` of the safe-dereference forms `.?name` and `[?index]`.
    Question,
    Ident(String),
    Str(String),
    Int(i64),
}

use crate::parser::SyntaxError;

/// Splits an expression body into tokens; the error names the offending offset.
pub(crate) fn tokenize(text: &str) -> Result<Vec<Token>, SyntaxError> {
    let mut tokens = Vec::new();
    let mut chars = text.char_indices().peekable();
    while let Some(&(offset, c)) = chars.peek() {
        let simple = match c {
            '(' => Some(Tok::LParen),
            ')' => Some(Tok::RParen),
            '[' => Some(Tok::LBracket),
            ']' => Some(Tok::RBracket),
            ',' => Some(Tok::Comma),
            '.' => Some(Tok::Dot),
            '?' => Some(Tok::Question),
            _ => None,
        };
        if let Some(kind) = simple {
            chars.next();
            tokens.push(Token { kind, offset });
            continue;
        }
        if c.is_whitespace() {
            chars.next();
            continue;
        }
        if c == '\'' {
            chars.next();
            let mut s = String::new();
            let mut closed = false;
            while let Some((_, ch)) = chars.next() {
                if ch == '\'' {
                    if matches!(chars.peek(), Some(&(_, '\''))) {
                        chars.next();
                        s.push('\'');
                    } else {
                        closed = true;
                        break;
                    }
                } else {
                    s.push(ch);
                }
            }
            if !closed {
                return Err(SyntaxError::UnterminatedString { offset });
            }
            tokens.push(Token {
                kind: Tok::Str(s),
                offset,
            });
            continue;
        }
        if c.is_ascii_digit() || c == '-' {
            chars.next();
            let mut digits = String::new();
            if c == '-' {
                digits.push('-');
            } else {
                digits.push(c);
            }
            while let Some(&(_, d)) = chars.peek() {
                if d.is_ascii_digit() {
                    digits.push(d);
                    chars.next();
                } else {
                    break;
                }
            }
            if digits == "-" {
                return Err(SyntaxError::LoneMinus { offset });
            }
            if let Some(&(_, d)) = chars.peek() {
                if d == '.' {
                    return Err(SyntaxError::NotAnInteger { offset });
                }
                if is_ident_char(d) {
                    return Err(SyntaxError::MalformedNumber { offset });
                }
            }
            let value = digits
                .parse::<i64>()
                .map_err(|_| SyntaxError::IntegerOutOfRange { offset })?;
            tokens.push(Token {
                kind: Tok::Int(value),
                offset,
            });
            continue;
        }
        if is_ident_start(c) {
            let mut name = String::new();
            while let Some(&(_, ch)) = chars.peek() {
                if is_ident_char(ch) {
                    name.push(ch);
                    chars.next();
                } else {
                    break;
                }
            }
            tokens.push(Token {
                kind: Tok::Ident(name),
                offset,
            });
            continue;
        }
        return Err(SyntaxError::UnexpectedChar { found: c, offset });
    }
    Ok(tokens)
}

fn is_ident_start(c: char) -> bool {
    c.is_alphabetic() || c == '_' || c == '$'
}

fn is_ident_char(c: char) -> bool {
    c.is_alphanumeric() || c == '_' || c == '$'
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(text: &str) -> Vec<Tok> {
        tokenize(text)
            .expect("tokenizes")
            .into_iter()
            .map(|t| t.kind)
            .collect()
    }

    #[test]
    fn fmt_4_tokens_of_a_call_with_escaped_quote() {
        assert_eq!(
            kinds("concat('it''s', -12)"),
            vec![
                Tok::Ident("concat".into()),
                Tok::LParen,
                Tok::Str("it's".into()),
                Tok::Comma,
                Tok::Int(-12),
                Tok::RParen,
            ]
        );
    }

    #[test]
    fn fmt_4_lexer_errors_are_reported() {
        assert!(tokenize("'open").is_err());
        assert!(tokenize("1.5").is_err());
        assert!(tokenize("-").is_err());
        assert!(tokenize("99999999999999999999").is_err());
        assert!(tokenize("a + b").is_err());
        assert!(tokenize("12abc").is_err());
    }
}
