//! A tiny JSON-object line writer (the guest program avoids serde so its
//! static build needs nothing but std).

use std::fmt::Write as _;

/// A field value of a JSON line (see [`line()`]).
#[derive(Debug, Clone, PartialEq)]
pub enum Value<'a> {
    /// Unsigned integer.
    U(u64),
    /// Floating point (written with 3 decimals; non-finite as null).
    F(f64),
    /// String.
    S(&'a str),
    /// Boolean.
    B(bool),
    /// Array of unsigned integers.
    A(&'a [u64]),
    /// Unsigned integer, or null when absent.
    O(Option<u64>),
    /// Array of strings.
    L(&'a [String]),
}

/// Escape a string for JSON, with quotes.
pub fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// One JSON object on one line: `{"kind":"...", ...}`.
pub fn line(kind: &str, fields: &[(&str, Value<'_>)]) -> String {
    let mut out = format!("{{\"kind\":{}", quote(kind));
    for (k, v) in fields {
        let _ = write!(out, ",{}:", quote(k));
        match v {
            Value::U(n) => {
                let _ = write!(out, "{n}");
            }
            Value::F(f) if f.is_finite() => {
                let _ = write!(out, "{f:.3}");
            }
            Value::F(_) | Value::O(None) => out.push_str("null"),
            Value::S(s) => out.push_str(&quote(s)),
            Value::B(b) => {
                let _ = write!(out, "{b}");
            }
            Value::A(items) => {
                out.push('[');
                for (i, n) in items.iter().enumerate() {
                    let _ = write!(out, "{}{n}", if i == 0 { "" } else { "," });
                }
                out.push(']');
            }
            Value::O(Some(n)) => {
                let _ = write!(out, "{n}");
            }
            Value::L(items) => {
                out.push('[');
                for (i, s) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    out.push_str(&quote(s));
                }
                out.push(']');
            }
        }
    }
    out.push('}');
    out
}

/// Write `line` and a newline to `out` in one `write` call where the writer allows
/// (a file or a tty: concurrent writers' lines do not interleave).
pub fn emit(out: &mut dyn std::io::Write, line: &str) -> Result<(), super::error::GuestError> {
    let mut buf = String::with_capacity(line.len() + 1);
    buf.push_str(line);
    buf.push('\n');
    out.write_all(buf.as_bytes())
        .and_then(|()| out.flush())
        .map_err(super::error::GuestError::io("writing a result line"))
}

/// The JSON lines a command wrote to `out` (tests).
#[cfg(test)]
pub(crate) fn parse_lines(out: &[u8]) -> Vec<serde_json::Value> {
    String::from_utf8(out.to_vec())
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}")))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_valid_json() {
        let l = line(
            "t",
            &[
                ("n", Value::U(42)),
                ("f", Value::F(1.5)),
                ("nan", Value::F(f64::NAN)),
                ("s", Value::S("a\"b\\c\nd\u{1}é")),
                ("b", Value::B(true)),
                ("a", Value::A(&[1, 22, 333])),
                ("e", Value::A(&[])),
                ("o", Value::O(Some(7))),
                ("none", Value::O(None)),
                ("l", Value::L(&["x".to_string(), "y\"z".to_string()])),
                ("le", Value::L(&[])),
            ],
        );
        let v: serde_json::Value = serde_json::from_str(&l).unwrap();
        assert_eq!(v["kind"], "t");
        assert_eq!(v["n"], 42);
        assert_eq!(v["f"], 1.5);
        assert!(v["nan"].is_null());
        assert_eq!(v["s"], "a\"b\\c\nd\u{1}é");
        assert_eq!(v["b"], true);
        assert_eq!(v["a"], serde_json::json!([1, 22, 333]));
        assert_eq!(v["e"], serde_json::json!([]));
        assert_eq!(v["o"], 7);
        assert!(v["none"].is_null());
        assert_eq!(v["l"], serde_json::json!(["x", "y\"z"]));
        assert_eq!(v["le"], serde_json::json!([]));
    }
}
