//! A full syntax check of JSON text, strings included.
//!
//! serde skips values it has no field for (`IgnoredAny`) without looking inside their strings, so
//! invalid UTF-8 or a lone surrogate escape (`"\ud800"`) in an unknown field passes a typed parse.
//! [`check`] reads every string as a string, which validates both, and keeps nothing.

use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};

/// Checks that `bytes` are one JSON value (RFC 8259) with valid strings throughout; nothing is
/// kept, so memory stays flat whatever the size of the text.
pub fn check(bytes: &[u8]) -> Result<(), serde_json::Error> {
    serde_json::from_slice::<Checked>(bytes).map(|_| ())
}

/// A JSON value whose strings were decoded (and so validated) and then dropped.
struct Checked;

impl<'de> Deserialize<'de> for Checked {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Checked, D::Error> {
        d.deserialize_any(CheckedVisitor)
    }
}

struct CheckedVisitor;

impl<'de> Visitor<'de> for CheckedVisitor {
    type Value = Checked;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<Checked, E> {
        Ok(Checked)
    }

    fn visit_i64<E>(self, _: i64) -> Result<Checked, E> {
        Ok(Checked)
    }

    fn visit_u64<E>(self, _: u64) -> Result<Checked, E> {
        Ok(Checked)
    }

    fn visit_f64<E>(self, _: f64) -> Result<Checked, E> {
        Ok(Checked)
    }

    fn visit_str<E>(self, _: &str) -> Result<Checked, E> {
        Ok(Checked)
    }

    fn visit_unit<E>(self) -> Result<Checked, E> {
        Ok(Checked)
    }

    fn visit_none<E>(self) -> Result<Checked, E> {
        Ok(Checked)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Checked, A::Error> {
        while seq.next_element::<Checked>()?.is_some() {}
        Ok(Checked)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Checked, A::Error> {
        while map.next_entry::<Checked, Checked>()?.is_some() {}
        Ok(Checked)
    }
}

#[cfg(test)]
mod tests {
    use super::check;

    #[test]
    fn accepts_json_and_refuses_bad_strings_anywhere() {
        for good in [
            &br#"{"a":[1,-2,3.5e9,true,null,"x\u00e9\ud83d\ude00"],"b":{}}"#[..],
            b"\"\xc3\xa9\"",
            b" 0 ",
        ] {
            check(good).unwrap();
        }
        for bad in [
            &br#"{"a":{"b":"\ud800"}}"#[..],
            br#"["\udc00x"]"#,
            b"{\"a\":\"\xff\"}",
            b"{\"\xc3\":1}",
            br#"{"a":-}"#,
            b"{} {}",
            b"",
        ] {
            assert!(check(bad).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
    }
}

/// The byte range, in `bytes`, of the value of the top-level member `key` of the JSON object
/// that `bytes` hold (the last such member when the key repeats, as serde keeps the last), so
/// that one field of a record can be replaced with every other byte kept. `None` when `bytes`
/// are not an object or have no such member; `bytes` are expected to be valid JSON (check them
/// first: malformed input gives `None` or a meaningless range, never a panic).
pub fn member_span(bytes: &[u8], key: &str) -> Option<std::ops::Range<usize>> {
    let mut at = skip_ws(bytes, 0);
    if bytes.get(at) != Some(&b'{') {
        return None;
    }
    at = skip_ws(bytes, at + 1);
    if bytes.get(at) == Some(&b'}') {
        return None;
    }
    let mut found = None;
    loop {
        let key_end = string_end(bytes, at)?;
        let name: String = serde_json::from_slice(&bytes[at..key_end]).ok()?;
        at = skip_ws(bytes, key_end);
        if bytes.get(at) != Some(&b':') {
            return None;
        }
        let start = skip_ws(bytes, at + 1);
        let end = value_end(bytes, start)?;
        if name == key {
            found = Some(start..end);
        }
        at = skip_ws(bytes, end);
        match bytes.get(at) {
            Some(b',') => at = skip_ws(bytes, at + 1),
            Some(b'}') => return found,
            _ => return None,
        }
    }
}

fn skip_ws(b: &[u8], mut at: usize) -> usize {
    while b
        .get(at)
        .is_some_and(|c| matches!(c, b' ' | b'\t' | b'\n' | b'\r'))
    {
        at += 1;
    }
    at
}

/// One past the closing quote of the string literal that opens at `at`.
fn string_end(b: &[u8], at: usize) -> Option<usize> {
    if b.get(at) != Some(&b'"') {
        return None;
    }
    let mut i = at + 1;
    loop {
        match b.get(i)? {
            b'\\' => i += 2,
            b'"' => return Some(i + 1),
            _ => i += 1,
        }
    }
}

/// One past the end of the JSON value that starts at `at`.
fn value_end(b: &[u8], at: usize) -> Option<usize> {
    match b.get(at)? {
        b'"' => string_end(b, at),
        b'{' | b'[' => {
            let mut depth = 0usize;
            let mut i = at;
            loop {
                match b.get(i)? {
                    b'"' => {
                        i = string_end(b, i)?;
                        continue;
                    }
                    b'{' | b'[' => depth += 1,
                    b'}' | b']' => {
                        depth -= 1;
                        if depth == 0 {
                            return Some(i + 1);
                        }
                    }
                    _ => {}
                }
                i += 1;
            }
        }
        _ => {
            let mut i = at;
            while b
                .get(i)
                .is_some_and(|c| !matches!(c, b',' | b'}' | b']' | b' ' | b'\t' | b'\n' | b'\r'))
            {
                i += 1;
            }
            (i > at).then_some(i)
        }
    }
}

#[cfg(test)]
mod member_span_tests {
    use super::member_span;

    fn value<'a>(s: &'a str, key: &str) -> Option<&'a str> {
        member_span(s.as_bytes(), key).map(|r| &s[r])
    }

    #[test]
    fn finds_top_level_members_only() {
        let s = r#" { "id" : 7, "meta": {"text": "inner", "a": [1, {"b": "}"}]},
            "te\"xt": "no", "text" :"a \"quoted\" \\ text" , "n": -1.5e3 } "#;
        assert_eq!(value(s, "text"), Some(r#""a \"quoted\" \\ text""#));
        assert_eq!(value(s, "id"), Some("7"));
        assert_eq!(value(s, "n"), Some("-1.5e3"));
        assert_eq!(value(s, "te\"xt"), Some(r#""no""#));
        assert_eq!(
            value(s, "meta"),
            Some(r#"{"text": "inner", "a": [1, {"b": "}"}]}"#)
        );
        assert_eq!(value(s, "inner"), None);
        assert_eq!(
            value(r#"{"text": 1, "text": "last"}"#, "text"),
            Some(r#""last""#)
        );
        assert_eq!(
            value(r#"{"t\u0065xt": "escaped key"}"#, "text"),
            Some(r#""escaped key""#)
        );
        for bad in [
            "",
            "[]",
            "{",
            r#"{"text""#,
            r#"{"text": "#,
            r#"{"text": "x"#,
            "{}",
            "\"text\"",
        ] {
            assert_eq!(value(bad, "text"), None, "{bad:?}");
        }
    }
}
