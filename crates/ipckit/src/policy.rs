//! Policy files of the daemons (the binder service manager, the property
//! daemon): one rule per line, `#` comments, a name pattern and a list of
//! uids among the words.

use std::fmt;
use std::io;
use std::path::Path;
use std::str::FromStr;

/// A policy file's mistake: the line and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyError {
    pub(crate) line: usize,
    message: String,
}

impl fmt::Display for PolicyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}", self.line, self.message)
    }
}

impl std::error::Error for PolicyError {}

/// Reads and parses a policy file, naming it in any error.
pub(crate) fn load<P: FromStr<Err = PolicyError>>(path: &Path) -> io::Result<P> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("cannot read the policy file {}: {e}", path.display()),
        )
    })?;
    text.parse().map_err(|e| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{}: {e}", path.display()),
        )
    })
}

/// Each rule line's words (blank lines and comments skipped) through `f`;
/// its error becomes the line's.
pub(crate) fn parse_lines<R>(
    text: &str,
    mut f: impl FnMut(&[&str]) -> Result<R, String>,
) -> Result<Vec<R>, PolicyError> {
    let mut rules = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let words: Vec<&str> = line.split_whitespace().collect();
        rules.push(f(&words).map_err(|message| PolicyError {
            line: i + 1,
            message,
        })?);
    }
    Ok(rules)
}

/// A name, a prefix followed by `*` (`media.*`), or `*`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Pattern(String);

impl Pattern {
    /// `word` as a pattern whose name part (before the `*`; a trailing
    /// `.` allowed) passes `valid`; `what` names the kind of name.
    pub(crate) fn parse(
        word: &str,
        what: &str,
        valid: impl Fn(&str) -> bool,
    ) -> Result<Pattern, String> {
        let name = word.strip_suffix('*').unwrap_or(word);
        let name = name.strip_suffix('.').unwrap_or(name);
        if name.contains('*') || (!name.is_empty() && !valid(name)) {
            return Err(format!(
                "{word:?} is not a {what}, a prefix ending in '*', or '*'"
            ));
        }
        Ok(Pattern(word.to_owned()))
    }

    pub(crate) fn matches(&self, name: &str) -> bool {
        match self.0.strip_suffix('*') {
            Some(prefix) => name.starts_with(prefix),
            None => name == self.0,
        }
    }

    pub(crate) fn as_str(&self) -> &str {
        &self.0
    }
}

/// `*` (`None`: everyone) or a comma-separated list of numeric uids.
pub(crate) fn parse_uids(word: &str) -> Result<Option<Vec<u32>>, String> {
    if word == "*" {
        return Ok(None);
    }
    word.split(',')
        .map(|u| {
            u.parse::<u32>()
                .map_err(|_| format!("{u:?} is not a numeric uid (or use '*' for all)"))
        })
        .collect::<Result<Vec<u32>, _>>()
        .map(Some)
}
