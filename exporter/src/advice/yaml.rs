//! A YAML writer for policies: block style, keys in the order of the (sorted) maps, strings
//! always quoted (JSON quoting is valid YAML and never reads as a number, bool or null), and
//! comments: a map's `"#"` entry is written as comment lines above its other keys.

use serde_json::Value;

/// The key whose string value is written as a comment.
pub const COMMENT: &str = "#";

/// `value` as a YAML document's body.
pub fn to_yaml(value: &Value) -> String {
    let mut out = String::new();
    node(value, 0, &mut out);
    out
}

fn scalar(v: &Value) -> Option<String> {
    match v {
        Value::Null => Some("null".into()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Number(n) => Some(n.to_string()),
        Value::String(s) => Some(Value::String(s.clone()).to_string()),
        Value::Array(a) if a.is_empty() => Some("[]".into()),
        Value::Object(o) if o.iter().all(|(k, _)| k == COMMENT) => Some("{}".into()),
        _ => None,
    }
}

/// Keys YAML 1.1 readers (kubectl's) take for booleans or null.
const YAML11_WORDS: [&str; 12] = [
    "y", "n", "yes", "no", "on", "off", "true", "false", "null", "~", "=", "<<",
];

fn key(k: &str) -> String {
    // Plain only when it begins with a letter (no number, octal or exponent reading) and is
    // not a YAML 1.1 word: `no: x` would be the key false there.
    let plain = k.starts_with(|c: char| c.is_ascii_alphabetic())
        && k.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'/'))
        && !YAML11_WORDS.contains(&k.to_ascii_lowercase().as_str());
    if plain {
        k.to_string()
    } else {
        Value::String(k.to_string()).to_string()
    }
}

fn comment(text: &str, indent: usize, out: &mut String) {
    for line in text.lines() {
        out.push_str(&" ".repeat(indent));
        out.push_str("# ");
        out.push_str(line);
        out.push('\n');
    }
}

/// Writes `v` (a map or list) at `indent`; the first line's indentation is written by the
/// caller when `first_inline` (after "- ").
fn node(v: &Value, indent: usize, out: &mut String) {
    node_inline(v, indent, false, out)
}

fn node_inline(v: &Value, indent: usize, first_inline: bool, out: &mut String) {
    let pad = " ".repeat(indent);
    let mut first = first_inline;
    let lead = |out: &mut String, first: &mut bool| {
        if !*first {
            out.push_str(&pad);
        }
        *first = false;
    };
    match v {
        Value::Object(map) => {
            if let Some(Value::String(c)) = map.get(COMMENT) {
                if first {
                    // After "- ": the comment goes on the dash's line, the keys below.
                    out.push_str("# ");
                    out.push_str(c.lines().next().unwrap_or(""));
                    out.push('\n');
                    for line in c.lines().skip(1) {
                        comment(line, indent, out);
                    }
                    first = false;
                } else {
                    comment(c, indent, out);
                }
            }
            for (k, child) in map.iter().filter(|(k, _)| *k != COMMENT) {
                lead(out, &mut first);
                out.push_str(&key(k));
                out.push(':');
                match scalar(child) {
                    Some(s) => {
                        out.push(' ');
                        out.push_str(&s);
                        out.push('\n');
                    }
                    None => {
                        out.push('\n');
                        // Lists under a key at the key's own indentation (kubectl's style).
                        let child_indent = if child.is_array() { indent } else { indent + 2 };
                        node(child, child_indent, out);
                    }
                }
            }
        }
        Value::Array(items) => {
            for item in items {
                lead(out, &mut first);
                out.push_str("- ");
                match scalar(item) {
                    Some(s) => {
                        out.push_str(&s);
                        out.push('\n');
                    }
                    None => node_inline(item, indent + 2, true, out),
                }
            }
        }
        other => {
            lead(out, &mut first);
            out.push_str(&scalar(other).unwrap_or_default());
            out.push('\n');
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn round_trips_through_a_yaml_parser() {
        let v = json!({
            "apiVersion": "v1",
            "spec": {
                "#": "two\nlines",
                "list": [{"#": "rule", "a": 1, "b": ["x", "true"]}, "plain", []],
                "empty": {},
                "k8s:io.kubernetes.pod.namespace": "ns",
                "n": "53"
            }
        });
        let text = to_yaml(&v);
        let back: Value = serde_norway::from_str(&text).expect(&text);
        let mut expected = v.clone();
        expected["spec"].as_object_mut().expect("map").remove("#");
        expected["spec"]["list"][0]
            .as_object_mut()
            .expect("map")
            .remove("#");
        assert_eq!(back, expected, "{text}");
        assert!(text.contains("  # two\n  # lines\n"), "{text}");
        assert!(text.contains("- # rule\n"), "{text}");
    }

    #[test]
    fn keys_yaml_1_1_would_misread_are_quoted() {
        let v = json!({"no": "a", "On": "b", "010": "c", "1e3": "d", "app": "e", "k8s-app": "f"});
        let text = to_yaml(&v);
        for quoted in ["\"no\":", "\"On\":", "\"010\":", "\"1e3\":"] {
            assert!(text.contains(quoted), "{quoted} in {text}");
        }
        assert!(
            text.contains("\napp: ") && text.contains("\nk8s-app: "),
            "{text}"
        );
    }
}
