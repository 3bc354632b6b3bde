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
