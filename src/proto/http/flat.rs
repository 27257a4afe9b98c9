//! A quick reader for the bodies nearly every client sends: one flat JSON object whose values
//! are strings without escapes, whole numbers, booleans or `null`. It reads such a body in one
//! pass, borrowing every string, and declines (`None`) anything else — a nested value, an
//! escape, a control character, a fraction or exponent, a long number, malformed JSON — which
//! [`super::body`] then gives to serde_json, so that what is refused, and in what words, stays
//! serde_json's. Pure.
//!
//! Why: serde_json checks every string it borrows for UTF-8 on its own, and with its map
//! machinery took about a quarter of the server's instructions for a pipelined acquire or
//! release (callgrind, BENCHMARKS.md "In memory, before and after"); the body is checked once.

/// A member's value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Value<'a> {
    Str(&'a str),
    Int(u64),
    Bool(bool),
    Null,
}

/// Longest whole number read here, in digits: below 2^53, so that its `f64` is exact as
/// serde_json's is (it reads an integer as `u64`, then converts). Longer ones go to serde_json.
const MAX_DIGITS: usize = 15;

/// Calls `member` with each key and value of `body`, in order, if `body` is a flat object of
/// plain values; `None` as soon as it is not, or as soon as `member` returns `None`.
pub fn members<'a>(body: &'a str, mut member: impl FnMut(&'a str, Value<'a>) -> Option<()>) -> Option<()> {
    let b = body.as_bytes();
    let mut i = skip_space(b, 0);
    if b.get(i) != Some(&b'{') {
        return None;
    }
    i = skip_space(b, i + 1);
    if b.get(i) == Some(&b'}') {
        i += 1;
    } else {
        loop {
            let (key, next) = string(body, i)?;
            i = skip_space(b, next);
            if b.get(i) != Some(&b':') {
                return None;
            }
            let (value, next) = value(body, skip_space(b, i + 1))?;
            member(key, value)?;
            i = skip_space(b, next);
            match b.get(i) {
                Some(b',') => i = skip_space(b, i + 1),
                Some(b'}') => {
                    i += 1;
                    break;
                }
                _ => return None,
            }
        }
    }
    (skip_space(b, i) == b.len()).then_some(())
}

/// The index of the first byte at or after `i` that is not JSON whitespace.
fn skip_space(b: &[u8], mut i: usize) -> usize {
    while matches!(b.get(i), Some(b' ' | b'\n' | b'\r' | b'\t')) {
        i += 1;
    }
    i
}

/// The string whose opening quote is at `i`, if it has no escape or control character, and
/// the index after its closing quote.
fn string(body: &str, i: usize) -> Option<(&str, usize)> {
    let b = body.as_bytes();
    if b.get(i) != Some(&b'"') {
        return None;
    }
    let start = i + 1;
    let end = start + b[start..].iter().position(|&c| c == b'"' || c == b'\\' || c < 0x20)?;
    // Both ends are at ASCII bytes, so on character boundaries.
    (b[end] == b'"').then(|| (&body[start..end], end + 1))
}

/// The value that starts at `i`, and the index after it. What follows it is the caller's to
/// check, so `12.5`, `1e3` and `nullx` are declined there.
fn value(body: &str, i: usize) -> Option<(Value<'_>, usize)> {
    let b = body.as_bytes();
    match *b.get(i)? {
        b'"' => string(body, i).map(|(s, next)| (Value::Str(s), next)),
        b'0'..=b'9' => {
            let digits = b[i..].iter().take_while(|c| c.is_ascii_digit()).count();
            // JSON has no leading zeros.
            if digits > MAX_DIGITS || (digits > 1 && b[i] == b'0') {
                return None;
            }
            let n = b[i..i + digits].iter().fold(0, |n, &d| n * 10 + u64::from(d - b'0'));
            Some((Value::Int(n), i + digits))
        }
        _ => [("true", Value::Bool(true)), ("false", Value::Bool(false)), ("null", Value::Null)]
            .into_iter()
            .find(|(word, _)| b[i..].starts_with(word.as_bytes()))
            .map(|(word, v)| (v, i + word.len())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(body: &str) -> Option<Vec<(&str, Value<'_>)>> {
        let mut out = Vec::new();
        members(body, |k, v| {
            out.push((k, v));
            Some(())
        })?;
        Some(out)
    }

    #[test]
    fn flat_objects_of_plain_values_are_read_in_order() {
        use Value::*;
        assert_eq!(
            read(r#"{"resource":"r-1","owner":"café","expire":30,"force":true,"x":false,"y":null}"#),
            Some(vec![
                ("resource", Str("r-1")),
                ("owner", Str("café")),
                ("expire", Int(30)),
                ("force", Bool(true)),
                ("x", Bool(false)),
                ("y", Null),
            ])
        );
        assert_eq!(read(" \r\n\t{ \"a\" :\t\"\" , \"a\":0 }\n "), Some(vec![("a", Str("")), ("a", Int(0))]));
        assert_eq!(read("{}"), Some(vec![]));
        assert_eq!(read(r#"{"n":999999999999999}"#), Some(vec![("n", Int(999_999_999_999_999))]));
    }

    #[test]
    fn anything_else_is_declined() {
        for body in [
            "",
            "[]",
            "{",
            "{}x",
            "{},",
            r#"{"a":1,}"#,
            r#"{"a" 1}"#,
            r#"{"a":}"#,
            r#"{a:1}"#,
            r#"{"a":1 "b":2}"#,
            r#"{"a":"b\"c"}"#,
            r#"{"a\u0062":1}"#,
            "{\"a\":\"b\tc\"}",
            "{\"a\":\"b\u{7}\"}",
            r#"{"a":"unterminated}"#,
            r#"{"a":1.5}"#,
            r#"{"a":1e3}"#,
            r#"{"a":-1}"#,
            r#"{"a":01}"#,
            r#"{"a":1000000000000000}"#,
            r#"{"a":nullx}"#,
            r#"{"a":tru}"#,
            r#"{"a":[1]}"#,
            r#"{"a":{}}"#,
            "{\"a\":1}\u{a0}",
        ] {
            assert_eq!(read(body), None, "{body}");
        }
    }

    #[test]
    fn a_member_refused_by_the_caller_stops_the_reading() {
        let mut seen = 0;
        let stop_at_b = |k: &str, _| {
            seen += 1;
            (k != "b").then_some(())
        };
        assert_eq!(members(r#"{"a":1,"b":2,"c":3}"#, stop_at_b), None);
        assert_eq!(seen, 2);
    }
}
