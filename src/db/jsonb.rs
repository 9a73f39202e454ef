//! JSON as PostgreSQL's `jsonb` can hold it. `jsonb` refuses the character
//! U+0000 in a string or key, and a terraform state may hold one (a
//! provider returned it): every JSON value stategraph stores goes through
//! [`encode`], every one it reads back through [`decode`], so such a state
//! is stored losslessly instead of failing after terraform applied it.
//!
//! The escape character is U+E000 (private use): in stored strings and
//! keys, U+0000 is written `\u{E000}0` and U+E000 itself `\u{E000}\u{E000}`.
//! Values holding neither (all real ones, nearly) are stored as they are,
//! without a copy.

use std::borrow::Cow;

use serde_json::{Map, Value};

const ESC: char = '\u{E000}';

/// `v` as stored (see the module docs).
pub fn encode(v: &Value) -> Cow<'_, Value> {
    if needs(v, &|s| s.contains(['\0', ESC])) {
        Cow::Owned(map_strings(v.clone(), &escape))
    } else {
        Cow::Borrowed(v)
    }
}

/// An optional value as stored.
pub fn encode_opt(v: &Option<Value>) -> Option<Cow<'_, Value>> {
    v.as_ref().map(encode)
}

/// A stored value as it was given to [`encode`].
pub fn decode(v: Value) -> Value {
    if needs(&v, &|s| s.contains(ESC)) {
        map_strings(v, &unescape)
    } else {
        v
    }
}

/// An optional stored value as it was given.
pub fn decode_opt(v: Option<Value>) -> Option<Value> {
    v.map(decode)
}

fn needs(v: &Value, hit: &dyn Fn(&str) -> bool) -> bool {
    match v {
        Value::String(s) => hit(s),
        Value::Array(a) => a.iter().any(|x| needs(x, hit)),
        Value::Object(m) => m.iter().any(|(k, x)| hit(k) || needs(x, hit)),
        _ => false,
    }
}

fn map_strings(v: Value, f: &dyn Fn(&str) -> String) -> Value {
    match v {
        Value::String(s) => Value::String(f(&s)),
        Value::Array(a) => Value::Array(a.into_iter().map(|x| map_strings(x, f)).collect()),
        Value::Object(m) => Value::Object(
            m.into_iter()
                .map(|(k, x)| (f(&k), map_strings(x, f)))
                .collect::<Map<String, Value>>(),
        ),
        other => other,
    }
}

fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 4);
    for c in s.chars() {
        match c {
            '\0' => {
                out.push(ESC);
                out.push('0');
            }
            ESC => {
                out.push(ESC);
                out.push(ESC);
            }
            c => out.push(c),
        }
    }
    out
}

fn unescape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c != ESC {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('0') => out.push('\0'),
            Some(ESC) => out.push(ESC),
            // Not written by `escape`: keep what is there.
            Some(other) => {
                out.push(ESC);
                out.push(other);
            }
            None => out.push(ESC),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn nul_and_the_escape_round_trip_and_nothing_else_is_touched() {
        let plain = json!({"a": ["x", 1, null, {"b": "ünïcode"}]});
        assert!(matches!(encode(&plain), Cow::Borrowed(_)));
        let odd = json!({"k\u{0}ey": ["a\u{0}b", "\u{E000}", "\u{E000}0", 2.50], "n": "\u{0}"});
        let stored = encode(&odd).into_owned();
        let text = stored.to_string();
        assert!(!text.contains("\\u0000"), "{text}");
        assert_eq!(decode(stored), odd);
        assert_eq!(decode(plain.clone()), plain);
    }
}
