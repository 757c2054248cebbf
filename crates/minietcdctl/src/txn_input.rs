//! etcdctl's interactive txn format: compares, a blank line, success ops, a blank line,
//! failure ops, a blank line. Compares read `target("key") op "value"` (etcdctl scans them
//! with Go's `%q) %s %q`); ops are put/get/del command lines, quoted words allowed.

use std::io::BufRead;

use minietcd_client::{Compare, CompareOp};

/// Why the input could not be read.
#[derive(Debug, thiserror::Error)]
pub enum TxnInputError {
    /// Input ended before the closing blank line of a section (etcdctl prints `EOF`).
    #[error("EOF")]
    Eof,
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("malformed comparison: {0}")]
    Compare(String),
    #[error("invalid txn request: {0}")]
    Op(String),
}

/// Reads lines until a blank one; an input that ends first is an error, as in etcdctl.
pub fn read_section(input: &mut impl BufRead) -> Result<Vec<String>, TxnInputError> {
    let mut lines = Vec::new();
    loop {
        let mut line = String::new();
        let n = input.read_line(&mut line)?;
        if n == 0 || !line.ends_with('\n') {
            return Err(TxnInputError::Eof);
        }
        let line = line.trim();
        if line.is_empty() {
            return Ok(lines);
        }
        lines.push(line.to_string());
    }
}

/// Parses one compare line.
pub fn parse_compare(line: &str) -> Result<Compare, TxnInputError> {
    let bad = || TxnInputError::Compare(line.to_string());
    let (target, rest) = line.split_once('(').ok_or_else(bad)?;
    let (key, rest) = take_quoted(rest).ok_or_else(bad)?;
    let rest = rest.strip_prefix(')').ok_or_else(bad)?.trim_start();
    let (op, rest) = rest.split_once(char::is_whitespace).ok_or_else(bad)?;
    let (value, _) = take_quoted(rest.trim_start()).ok_or_else(bad)?;
    let op = match op {
        "=" => CompareOp::Equal,
        "!=" => CompareOp::NotEqual,
        ">" => CompareOp::Greater,
        "<" => CompareOp::Less,
        _ => return Err(TxnInputError::Compare(format!("{line} (unknown op {op})"))),
    };
    let int = |v: &str| {
        v.parse::<i64>()
            .map_err(|e| TxnInputError::Compare(format!("{line} ({e})")))
    };
    Ok(match target {
        "ver" | "version" => Compare::version(key, op, int(&value)?),
        "c" | "create" => Compare::create_revision(key, op, int(&value)?),
        "m" | "mod" => Compare::mod_revision(key, op, int(&value)?),
        "val" | "value" => Compare::value(key, op, value),
        "lease" => Compare::lease(key, op, int(&value)?),
        _ => {
            return Err(TxnInputError::Compare(format!(
                "{line} (unknown target {target})"
            )))
        }
    })
}

/// Splits an op line into words: runs of non-space, or Go-quoted strings (unquoted).
pub fn argify(line: &str) -> Result<Vec<String>, TxnInputError> {
    let mut words = Vec::new();
    let mut rest = line.trim_start();
    while !rest.is_empty() {
        if rest.starts_with('"') {
            let (word, tail) =
                take_quoted(rest).ok_or_else(|| TxnInputError::Op(line.to_string()))?;
            words.push(word);
            rest = tail.trim_start();
        } else {
            let end = rest.find(char::is_whitespace).unwrap_or(rest.len());
            words.push(rest[..end].to_string());
            rest = rest[end..].trim_start();
        }
    }
    Ok(words)
}

/// Takes a Go double-quoted string from the start of `s`; returns it unquoted and the rest.
fn take_quoted(s: &str) -> Option<(String, &str)> {
    let body = s.strip_prefix('"')?;
    let mut out = String::new();
    let mut chars = body.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => return Some((out, &body[i + 1..])),
            '\\' => {
                let (_, esc) = chars.next()?;
                match esc {
                    'n' => out.push('\n'),
                    't' => out.push('\t'),
                    'r' => out.push('\r'),
                    'a' => out.push('\u{7}'),
                    'b' => out.push('\u{8}'),
                    'f' => out.push('\u{c}'),
                    'v' => out.push('\u{b}'),
                    '\\' | '"' | '\'' => out.push(esc),
                    'x' | 'u' | 'U' => {
                        let len = match esc {
                            'x' => 2,
                            'u' => 4,
                            _ => 8,
                        };
                        let hex: String = (0..len)
                            .filter_map(|_| chars.next().map(|(_, h)| h))
                            .collect();
                        let code = u32::from_str_radix(&hex, 16).ok()?;
                        out.push(char::from_u32(code)?);
                    }
                    '0'..='7' => {
                        let mut code = esc.to_digit(8)?;
                        for _ in 0..2 {
                            code = code * 8 + chars.next()?.1.to_digit(8)?;
                        }
                        out.push(char::from_u32(code)?);
                    }
                    _ => return None,
                }
            }
            c => out.push(c),
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compares_parse_like_etcdctl() {
        let c = parse_compare(r#"value("foo") = "bar baz""#)
            .unwrap()
            .into_pb();
        assert_eq!(c.key, b"foo");
        let c = parse_compare(r#"mod("a\"b") > "3""#).unwrap().into_pb();
        assert_eq!(c.key, b"a\"b");
        assert!(parse_compare(r#"nope("a") = "1""#).is_err());
        assert!(parse_compare(r#"version("a") = "x""#).is_err());
        assert!(parse_compare("value(foo) = bar").is_err());
    }

    #[test]
    fn op_lines_split_on_quotes() {
        assert_eq!(
            argify(r#"put foo "bar baz" --prev-kv"#).unwrap(),
            vec!["put", "foo", "bar baz", "--prev-kv"]
        );
        assert_eq!(argify("get  a   b").unwrap(), vec!["get", "a", "b"]);
    }

    #[test]
    fn sections_end_at_a_blank_line_and_eof_is_an_error() {
        let mut input = std::io::Cursor::new("a\nb\n\nc\n");
        assert_eq!(read_section(&mut input).unwrap(), vec!["a", "b"]);
        assert!(matches!(read_section(&mut input), Err(TxnInputError::Eof)));
    }
}
