//! How errors are written for an operator: one line, whatever the input held. A leaf module
//! every stage may use.

/// An error and its sources on one line ("a: b: c"), each source once: many errors print
/// their source in their own message already.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    one_line(&out)
}

/// `s` on one line: control characters (a newline inside a YAML key, say) escaped.
pub fn one_line(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_control() {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_escapes_and_chains_dedupe() {
        assert_eq!(one_line("a\nb\tc"), "a\\nb\\tc");
        let inner = std::io::Error::other("inner");
        let outer = std::io::Error::other(format!("outer: {inner}"));
        assert_eq!(error_chain(&outer), "outer: inner");
    }
}
