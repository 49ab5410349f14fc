//! Argument values shared by several subcommands, parsed so that a bad one
//! is refused by clap with its name and a reason.

use std::time::Duration;

/// `--timeout SECS`: seconds, 0 or more (fractions allowed); 0 means "do
/// not wait": only what is there already.
pub fn seconds(s: &str) -> Result<Duration, String> {
    let v: f64 = s
        .parse()
        .map_err(|_| format!("{s:?} is not a number of seconds (like 5 or 0.5)"))?;
    if v < 0.0 {
        return Err(format!(
            "{s} is negative: give 0 or more seconds (0: do not wait), or leave the option \
             out to wait as long as it takes"
        ));
    }
    Duration::try_from_secs_f64(v).map_err(|_| format!("{s} seconds is not a usable timeout"))
}

/// `-n N`: how many, 1 or more.
pub fn count(s: &str) -> Result<u64, String> {
    match s.parse::<u64>() {
        Ok(0) => Err("0 would take nothing: give 1 or more, or leave -n out".into()),
        Ok(n) => Ok(n),
        Err(_) => Err(format!("{s:?} is not a whole number, 1 or more")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seconds_and_counts() {
        assert_eq!(seconds("0"), Ok(Duration::ZERO));
        assert_eq!(seconds("0.25"), Ok(Duration::from_millis(250)));
        assert!(seconds("-1").unwrap_err().contains("negative"));
        assert!(seconds("soon").unwrap_err().contains("not a number"));
        assert!(seconds("inf").is_err() && seconds("NaN").is_err());
        assert_eq!(count("3"), Ok(3));
        assert!(count("0").unwrap_err().contains("take nothing"));
        assert!(count("-2").is_err());
    }
}
