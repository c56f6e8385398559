//! Text conversions that follow .NET, because ARM is written in .NET: `string()` of a bool is
//! `True`, `format()` is `String.Format` composite formatting, `uri()` combines like `System.Uri`.

use serde_json::Value;

/// Longest text `format()` alignment or `padLeft()` may produce.
pub(crate) const MAX_PAD: usize = 100_000;

/// Text of a scalar as ARM prints it (`string()`, `concat()`, `format()`); `None` for arrays and
/// objects, which each caller treats differently.
pub(crate) fn scalar_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(true) => Some("True".into()),
        Value::Bool(false) => Some("False".into()),
        Value::Null => Some(String::new()),
        Value::Array(_) | Value::Object(_) => None,
    }
}

/// `string(v)`: scalars as [`scalar_text`], arrays and objects as compact JSON.
pub(crate) fn to_text(v: &Value) -> String {
    scalar_text(v).unwrap_or_else(|| v.to_string())
}

/// Why a `format()` string cannot be applied to its arguments.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum FormatError {
    #[error("format string has a '{{' without a matching '}}'")]
    UnclosedBrace,
    #[error("format string has a '}}' without a matching '{{'")]
    UnopenedBrace,
    #[error("format item '{{{item}}}' does not start with an index")]
    NoIndex { item: String },
    #[error("format item '{{{item}}}' refers to argument {index}, but only {given} were given")]
    MissingArgument {
        item: String,
        index: usize,
        given: usize,
    },
    #[error("format item '{{{item}}}' has an invalid alignment")]
    BadAlignment { item: String },
    #[error("format alignment {0} is too large")]
    AlignmentTooLarge(i64),
}

/// Why text is not base64.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum Base64Error {
    #[error("base64 text continues after '=' padding")]
    AfterPadding,
    #[error("'{0}' is not a base64 character")]
    BadChar(char),
}

/// .NET composite formatting: `{index[,alignment][:format]}`, `{{` and `}}` for literal braces.
pub(crate) fn composite_format(fmt: &str, args: &[Value]) -> Result<String, FormatError> {
    let mut out = String::new();
    let mut chars = fmt.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '{' => {
                if chars.peek() == Some(&'{') {
                    chars.next();
                    out.push('{');
                    continue;
                }
                let mut item = String::new();
                let mut closed = false;
                for d in chars.by_ref() {
                    if d == '}' {
                        closed = true;
                        break;
                    }
                    item.push(d);
                }
                if !closed {
                    return Err(FormatError::UnclosedBrace);
                }
                out.push_str(&format_item(&item, args)?);
            }
            '}' => {
                if chars.peek() == Some(&'}') {
                    chars.next();
                    out.push('}');
                } else {
                    return Err(FormatError::UnopenedBrace);
                }
            }
            _ => out.push(c),
        }
    }
    Ok(out)
}

fn format_item(item: &str, args: &[Value]) -> Result<String, FormatError> {
    let (head, spec) = match item.split_once(':') {
        Some((h, s)) => (h, Some(s)),
        None => (item, None),
    };
    let (index_text, align_text) = match head.split_once(',') {
        Some((i, a)) => (i, Some(a)),
        None => (head, None),
    };
    let index: usize = index_text
        .trim()
        .parse()
        .map_err(|_| FormatError::NoIndex {
            item: item.to_string(),
        })?;
    let value = args
        .get(index)
        .ok_or_else(|| FormatError::MissingArgument {
            item: item.to_string(),
            index,
            given: args.len(),
        })?;
    let text = format_value(value, spec.unwrap_or("").trim());
    match align_text {
        None => Ok(text),
        Some(a) => {
            let width: i64 = a.trim().parse().map_err(|_| FormatError::BadAlignment {
                item: item.to_string(),
            })?;
            let w = usize::try_from(width.unsigned_abs()).unwrap_or(usize::MAX);
            if w > MAX_PAD {
                return Err(FormatError::AlignmentTooLarge(width));
            }
            let len = text.chars().count();
            if len >= w {
                return Ok(text);
            }
            let pad = " ".repeat(w - len);
            Ok(if width > 0 { pad + &text } else { text + &pad })
        }
    }
}

fn format_value(v: &Value, spec: &str) -> String {
    let Value::Number(n) = v else {
        return to_text(v);
    };
    if spec.is_empty() {
        return n.to_string();
    }
    let mut spec_chars = spec.chars();
    let kind = spec_chars.next().unwrap_or('G');
    let digits_text: String = spec_chars.collect();
    let precision: Option<usize> = if digits_text.is_empty() {
        None
    } else {
        match digits_text.parse::<usize>() {
            Ok(p) if p <= 99 => Some(p),
            _ => return custom_pattern(n, spec),
        }
    };
    if let Some(i) = n.as_i64() {
        let text = match kind {
            'N' | 'n' => grouped(i128::from(i), precision.unwrap_or(2)),
            'F' | 'f' => fixed(i128::from(i), precision.unwrap_or(2)),
            'D' | 'd' => {
                let width = precision.unwrap_or(0);
                let digits = i.unsigned_abs().to_string();
                let sign = if i < 0 { "-" } else { "" };
                format!("{sign}{digits:0>width$}")
            }
            'X' => format!("{:0>width$X}", i, width = precision.unwrap_or(0)),
            'x' => format!("{:0>width$x}", i, width = precision.unwrap_or(0)),
            'G' | 'g' => i.to_string(),
            _ => custom_pattern(n, spec),
        };
        return text;
    }
    let f = n.as_f64().unwrap_or(0.0);
    match kind {
        'F' | 'f' | 'N' | 'n' => format!("{:.*}", precision.unwrap_or(2), f),
        _ => n.to_string(),
    }
}

/// `N` format: thousands separators and `decimals` zeros after the point.
fn grouped(i: i128, decimals: usize) -> String {
    let digits = i.unsigned_abs().to_string();
    let mut out = String::new();
    if i < 0 {
        out.push('-');
    }
    let len = digits.len();
    for (k, c) in digits.chars().enumerate() {
        if k > 0 && (len - k).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    if decimals > 0 {
        out.push('.');
        out.push_str(&"0".repeat(decimals));
    }
    out
}

fn fixed(i: i128, decimals: usize) -> String {
    if decimals == 0 {
        i.to_string()
    } else {
        format!("{i}.{}", "0".repeat(decimals))
    }
}

/// Custom numeric patterns made of `0` placeholders (`"000"` pads to three digits); anything
/// else prints the plain number.
fn custom_pattern(n: &serde_json::Number, spec: &str) -> String {
    match n.as_i64() {
        Some(i) if !spec.is_empty() && spec.len() <= 99 && spec.chars().all(|c| c == '0') => {
            let digits = i.unsigned_abs().to_string();
            let sign = if i < 0 { "-" } else { "" };
            format!("{sign}{digits:0>width$}", width = spec.len())
        }
        _ => n.to_string(),
    }
}

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

pub(crate) fn base64_encode(data: &[u8]) -> String {
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for k in 0..4 {
            if k <= chunk.len() {
                out.push(char::from(B64[((n >> (18 - 6 * k)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

pub(crate) fn base64_decode(text: &str) -> Result<Vec<u8>, Base64Error> {
    let mut bits: u32 = 0;
    let mut nbits = 0;
    let mut out = Vec::new();
    let mut padding = false;
    for c in text.chars() {
        if c.is_whitespace() {
            continue;
        }
        if c == '=' {
            padding = true;
            continue;
        }
        if padding {
            return Err(Base64Error::AfterPadding);
        }
        let v = match c {
            'A'..='Z' => c as u32 - 'A' as u32,
            'a'..='z' => c as u32 - 'a' as u32 + 26,
            '0'..='9' => c as u32 - '0' as u32 + 52,
            '+' | '-' => 62,
            '/' | '_' => 63,
            _ => return Err(Base64Error::BadChar(c)),
        };
        bits = (bits << 6) | v;
        nbits += 6;
        if nbits >= 8 {
            nbits -= 8;
            out.push(((bits >> nbits) & 0xff) as u8);
        }
    }
    Ok(out)
}

/// `uri(base, relative)`: RFC 3986 reference resolution as far as templates use it.
pub(crate) fn uri_combine(base: &str, relative: &str) -> String {
    if base.is_empty() || relative.contains("://") {
        return relative.to_string();
    }
    let after_scheme = base.find("://").map(|i| i + 3).unwrap_or(0);
    if let Some(rest) = relative.strip_prefix('/') {
        let host_end = base[after_scheme..]
            .find('/')
            .map(|i| after_scheme + i)
            .unwrap_or(base.len());
        return format!("{}/{}", &base[..host_end], rest);
    }
    if base.ends_with('/') {
        return format!("{base}{relative}");
    }
    match base[after_scheme..].rfind('/') {
        Some(i) => format!("{}{}", &base[..after_scheme + i + 1], relative),
        None => format!("{base}/{relative}"),
    }
}

/// `uriComponent()`: percent-encodes everything but RFC 3986 unreserved characters.
pub(crate) fn uri_encode(text: &str) -> String {
    let mut out = String::new();
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `uriComponentToString()`: decodes `%XX` escapes; malformed escapes stay as written.
pub(crate) fn uri_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let hex = std::str::from_utf8(&bytes[i + 1..i + 3])
                .ok()
                .and_then(|h| u8::from_str_radix(h, 16).ok());
            if let Some(b) = hex {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn fmt_4_format_composite_items() {
        let args = [json!("User"), json!(8175133), json!(true), json!(7)];
        assert_eq!(
            composite_format("Hello, {0}. Formatted number: {1:N0}", &args).unwrap(),
            "Hello, User. Formatted number: 8,175,133"
        );
        assert_eq!(
            composite_format("{2} {{x}} {3:D3}", &args).unwrap(),
            "True {x} 007"
        );
        assert_eq!(
            composite_format("[{0,6}][{0,-6}]", &args).unwrap(),
            "[  User][User  ]"
        );
        assert_eq!(composite_format("{3:X2}{3:000}", &args).unwrap(), "07007");
        assert_eq!(composite_format("{1:N}", &args).unwrap(), "8,175,133.00");
        assert!(composite_format("{4}", &args).is_err());
        assert!(composite_format("{0", &args).is_err());
        assert!(composite_format("}", &args).is_err());
        assert!(composite_format("{x}", &args).is_err());
        assert!(composite_format("{0,999999999}", &args).is_err());
    }

    #[test]
    fn fmt_4_base64_round_trip() {
        assert_eq!(base64_encode(b"one, two, three"), "b25lLCB0d28sIHRocmVl");
        assert_eq!(base64_encode(b"Hello"), "SGVsbG8=");
        assert_eq!(base64_decode("SGVsbG8=").unwrap(), b"Hello");
        assert!(base64_decode("S*").is_err());
    }

    #[test]
    fn fmt_4_uri_combines_like_dotnet() {
        assert_eq!(
            uri_combine("http://contoso.org/firstpath", "myscript.sh"),
            "http://contoso.org/myscript.sh"
        );
        assert_eq!(
            uri_combine("http://contoso.org/firstpath/", "myscript.sh"),
            "http://contoso.org/firstpath/myscript.sh"
        );
        assert_eq!(
            uri_combine("http://contoso.org", "a.json"),
            "http://contoso.org/a.json"
        );
        assert_eq!(uri_combine("", "nested/a.json"), "nested/a.json");
        assert_eq!(uri_combine("https://h/x/y", "/z"), "https://h/z");
        assert_eq!(
            uri_encode("http://contoso.com/a b"),
            "http%3A%2F%2Fcontoso.com%2Fa%20b"
        );
        assert_eq!(uri_decode("http%3A%2F%2Fx%2"), "http://x%2");
    }
}
