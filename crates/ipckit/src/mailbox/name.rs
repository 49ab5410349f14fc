//! Mailbox names (`orders.eu.new`) and the patterns subscribers use
//! (`orders.*.new`, `orders.>`).

use std::io;

/// The longest mailbox name or pattern, in bytes.
pub const MAX_NAME: usize = 255;

/// First tokens the broker keeps for itself: `pid.PID` is a process's
/// inbox, `dead.NAME` holds the dead letters of mailbox `NAME`.
pub(crate) const RESERVED: [&str; 2] = ["pid", "dead"];

fn invalid(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, msg)
}

fn token_ok(t: &str) -> bool {
    !t.is_empty()
        && t.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

fn check(s: &str, what: &str, wildcards: bool) -> io::Result<()> {
    if s.is_empty() || s.len() > MAX_NAME {
        return Err(invalid(format!(
            "{what} {s:?} must be 1 to {MAX_NAME} bytes long"
        )));
    }
    let tokens: Vec<&str> = s.split('.').collect();
    for (i, t) in tokens.iter().enumerate() {
        let wild = *t == "*" || (*t == ">" && i == tokens.len() - 1);
        if wildcards && wild {
            continue;
        }
        if !token_ok(t) {
            let hint = if !wildcards && (*t == "*" || *t == ">") {
                " (wildcards * and > are for receivers' patterns, not for a mailbox's name)"
            } else if *t == ">" {
                " (> stands for the rest of a name, so it comes last)"
            } else {
                ""
            };
            return Err(invalid(format!(
                "{what} {s:?} is not valid: it is words of letters, digits, '_' and '-' \
                 separated by single dots (like orders.eu.new){hint}"
            )));
        }
    }
    Ok(())
}

/// Checks a mailbox name: dot-separated words of ASCII letters, digits,
/// `_` and `-`, at most [`MAX_NAME`] bytes.
pub fn validate_name(name: &str) -> io::Result<()> {
    check(name, "mailbox name", false)
}

/// Checks a name a user may create: valid, and not in the broker's own
/// namespaces (`pid.…`, `dead.…`).
pub(crate) fn validate_user_name(name: &str) -> io::Result<()> {
    validate_name(name)?;
    let first = name.split('.').next().unwrap_or("");
    if RESERVED.contains(&first) {
        return Err(invalid(format!(
            "mailbox names starting with {first}. belong to the broker (pid.PID is a process's \
             inbox, dead.NAME the dead letters of NAME); choose another name"
        )));
    }
    Ok(())
}

/// A receiver's pattern: a mailbox name whose words may be `*` (any one
/// word) and whose last word may be `>` (one or more words).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pattern {
    text: String,
}

impl Pattern {
    /// Parses and checks a pattern.
    pub fn new(text: &str) -> io::Result<Pattern> {
        check(text, "pattern", true)?;
        Ok(Pattern {
            text: text.to_string(),
        })
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Whether it has a wildcard (else it names one mailbox).
    pub fn is_wild(&self) -> bool {
        self.text.split('.').any(|t| t == "*" || t == ">")
    }

    /// Whether `name` matches. The broker's own namespaces (`pid.…`,
    /// `dead.…`) match only a pattern that names them in its first word,
    /// so `>` never takes other processes' inbox messages.
    pub fn matches(&self, name: &str) -> bool {
        let mut p = self.text.split('.');
        let mut n = name.split('.');
        let mut first = true;
        loop {
            match (p.next(), n.next()) {
                (Some(">"), Some(w)) => return !(first && RESERVED.contains(&w)),
                (Some("*"), Some(w)) => {
                    if first && RESERVED.contains(&w) {
                        return false;
                    }
                }
                (Some(a), Some(b)) if a == b => {}
                (None, None) => return true,
                _ => return false,
            }
            first = false;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_patterns() {
        for good in ["a", "orders.eu-1.new_x", "A.B.C"] {
            validate_name(good).unwrap();
        }
        for (bad, why) in [
            ("", "1 to 255"),
            ("a..b", "single dots"),
            (".a", "single dots"),
            ("a.", "single dots"),
            ("a b", "letters"),
            ("a.*", "receivers' patterns"),
            ("é", "letters"),
        ] {
            let e = validate_name(bad).unwrap_err().to_string();
            assert!(e.contains(why), "{bad}: {e}");
        }
        assert!(validate_name(&"x".repeat(256)).is_err());
        assert!(validate_user_name("pid.12")
            .unwrap_err()
            .to_string()
            .contains("inbox"));
        assert!(validate_user_name("dead.x").is_err());
        validate_user_name("dead_letters").unwrap();
        assert!(Pattern::new("a.>.b")
            .unwrap_err()
            .to_string()
            .contains("comes last"));
    }

    #[test]
    fn matching() {
        let m = |p: &str, n: &str| Pattern::new(p).unwrap().matches(n);
        assert!(m("a.b", "a.b"));
        assert!(!m("a.b", "a.b.c"));
        assert!(!m("a.b.c", "a.b"));
        assert!(m("a.*", "a.b"));
        assert!(!m("a.*", "a.b.c"));
        assert!(m("a.*.c", "a.x.c"));
        assert!(m("a.>", "a.b"));
        assert!(m("a.>", "a.b.c"));
        assert!(!m("a.>", "a"));
        assert!(m(">", "x.y"));
        assert!(!m(">", "pid.12"));
        assert!(!m("*", "dead"));
        assert!(!m("*.x", "dead.x"));
        assert!(m("dead.>", "dead.orders"));
        assert!(m("pid.*", "pid.1"));
        assert!(!Pattern::new("a.b").unwrap().is_wild());
        assert!(Pattern::new("a.*").unwrap().is_wild());
    }
}
