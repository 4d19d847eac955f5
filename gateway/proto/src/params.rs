//! `parameters` objects and `Inference-Header-Content-Length`: the small
//! pieces of metadata around the tensors, bounded before anything is built
//! from them.
//!
//! The decoders take `parameters` as a borrowed [`RawValue`]: serde_json
//! skips it without allocating (one byte per nesting level at most), so a
//! body of millions of empty arrays costs no more than its own bytes. Only a
//! `parameters` within [`MAX_PARAMETERS_BYTES`] and [`MAX_PARAMETERS_DEPTH`]
//! is then parsed into a map.

use serde_json::value::RawValue;
use serde_json::{Map, Value};

/// The most bytes of JSON one `parameters` object may take, whitespace
/// included. The protocol's parameters are a handful of scalars.
pub const MAX_PARAMETERS_BYTES: usize = 64 << 10;

/// The deepest nesting one `parameters` object may have; the object itself
/// is level 1, so `{"a":{"b":[1]}}` has depth 3.
pub const MAX_PARAMETERS_DEPTH: usize = 16;

/// Parses `raw` (the value of a `parameters` key; absent or `null` is an
/// empty map) within the bounds. `what` names its owner in messages
/// (`request`, `input 'x'`).
pub(crate) fn parse(raw: Option<&RawValue>, what: &str) -> Result<Map<String, Value>, String> {
    let Some(raw) = raw else {
        return Ok(Map::new());
    };
    let text = raw.get();
    if text.len() > MAX_PARAMETERS_BYTES {
        return Err(format!(
            "{what}: 'parameters' is {} bytes, over the limit of {MAX_PARAMETERS_BYTES} bytes",
            text.len()
        ));
    }
    if depth(text) > MAX_PARAMETERS_DEPTH {
        return Err(format!(
            "{what}: 'parameters' is nested deeper than the limit of {MAX_PARAMETERS_DEPTH} levels"
        ));
    }
    match serde_json::from_str::<Option<Map<String, Value>>>(text) {
        Ok(map) => Ok(map.unwrap_or_default()),
        Err(e) => Err(format!("{what}: 'parameters' must be a JSON object: {e}")),
    }
}

/// The nesting depth of one JSON value that serde_json has already checked
/// for syntax (brackets balance, strings are closed).
fn depth(json: &str) -> usize {
    let (mut depth, mut deepest) = (0usize, 0usize);
    let mut in_string = false;
    let mut escaped = false;
    for b in json.bytes() {
        if in_string {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    deepest
}

/// Parses an `Inference-Header-Content-Length` value: canonical decimal only
/// (digits, no sign, no spaces, no leading zero but in "0"), so that no two
/// spellings of one length exist for a proxy and this server to disagree on.
pub(crate) fn header_length(v: &str) -> Option<usize> {
    let canonical =
        !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()) && (v == "0" || !v.starts_with('0'));
    if !canonical {
        return None;
    }
    v.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(s: &str) -> Box<RawValue> {
        RawValue::from_string(s.to_string()).unwrap()
    }

    #[test]
    fn depth_counts_containers_outside_strings() {
        assert_eq!(depth("1"), 0);
        assert_eq!(depth("{}"), 1);
        assert_eq!(depth(r#"{"a":{"b":[1]}}"#), 3);
        assert_eq!(depth(r#"{"a":"[[[{{{\"[[["}"#), 1);
        assert_eq!(depth(r#"{"a":"\\","b":[[]]}"#), 3);
    }

    #[test]
    fn parameters_within_the_bounds_parse() {
        let m = parse(Some(&raw(r#"{"priority":1}"#)), "request").unwrap();
        assert_eq!(m["priority"], 1);
        assert!(parse(None, "request").unwrap().is_empty());
        assert!(parse(Some(&raw("null")), "request").unwrap().is_empty());
        let deepest = format!(
            "{{\"a\":{}{}}}",
            "[".repeat(MAX_PARAMETERS_DEPTH - 1),
            "]".repeat(MAX_PARAMETERS_DEPTH - 1)
        );
        assert!(parse(Some(&raw(&deepest)), "request").is_ok());
    }

    #[test]
    fn parameters_over_the_bounds_are_refused_naming_the_limit() {
        let deep = format!(
            "{{\"a\":{}{}}}",
            "[".repeat(MAX_PARAMETERS_DEPTH),
            "]".repeat(MAX_PARAMETERS_DEPTH)
        );
        let e = parse(Some(&raw(&deep)), "request").unwrap_err();
        assert!(e.contains("'parameters'") && e.contains("16 levels"), "{e}");

        let wide = format!("{{\"a\":[{}[]]}}", "[],".repeat(MAX_PARAMETERS_BYTES / 3));
        let e = parse(Some(&raw(&wide)), "input 'x'").unwrap_err();
        assert!(
            e.starts_with("input 'x': 'parameters'") && e.contains("65536 bytes"),
            "{e}"
        );

        let e = parse(Some(&raw("[1]")), "request").unwrap_err();
        assert!(e.contains("must be a JSON object"), "{e}");
    }

    #[test]
    fn header_length_is_canonical_decimal_only() {
        assert_eq!(header_length("0"), Some(0));
        assert_eq!(header_length("123"), Some(123));
        for bad in [
            "", "+123", "-1", "0123", "00", " 123", "123 ", "1_0", "1e3", "0x10",
        ] {
            assert_eq!(header_length(bad), None, "{bad:?}");
        }
        assert_eq!(header_length("99999999999999999999999999"), None);
    }
}
