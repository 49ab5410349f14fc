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

/// `--max-size BYTES`: a number of bytes, 1 or more, optionally with a
/// binary suffix: `K` (KiB), `M` (MiB), `G` (GiB), as in `64K` or `16M`.
pub fn size(s: &str) -> Result<usize, String> {
    match offset(s)? {
        0 => Err("0 bytes would refuse every message: give 1 or more".into()),
        n => Ok(n),
    }
}

/// `--offset BYTES`: as [`size`], 0 allowed.
pub fn offset(s: &str) -> Result<usize, String> {
    let (digits, unit) = match s.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        Some((i, _)) => s.split_at(i),
        None => (s, ""),
    };
    let shift = match unit {
        "" | "B" | "b" => 0,
        "K" | "k" | "KiB" => 10,
        "M" | "m" | "MiB" => 20,
        "G" | "g" | "GiB" => 30,
        _ => {
            return Err(format!(
                "{s:?} is not a size: give bytes, like 4096, or with K, M or G (binary: 64K is \
                 65536 bytes)"
            ))
        }
    };
    let n: usize = digits
        .parse()
        .map_err(|_| format!("{s:?} is not a size: give bytes, like 4096 or 64K"))?;
    match n.checked_mul(1 << shift) {
        Some(v) if v <= u32::MAX as usize => Ok(v),
        _ => Err(format!(
            "{s} is too large: a message is at most 4 GiB - 1 bytes (its length travels in 32 \
             bits)"
        )),
    }
}

/// `--mode MODE`: permission bits in octal, like 600 or 0644.
pub fn mode(s: &str) -> Result<u32, String> {
    match u32::from_str_radix(s, 8) {
        Ok(m) if m <= 0o777 => Ok(m),
        _ => Err(format!(
            "{s:?} is not a mode: give permission bits in octal, like 600 or 0644"
        )),
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
        assert_eq!(size("4096"), Ok(4096));
        assert_eq!(size("64K"), Ok(65536));
        assert_eq!(size("16M"), Ok(16 << 20));
        assert_eq!(size("1G"), Ok(1 << 30));
        assert!(size("0").unwrap_err().contains("refuse every"));
        assert_eq!(offset("0"), Ok(0));
        assert_eq!(offset("00"), Ok(0));
        assert_eq!(offset("1K"), Ok(1024));
        assert!(size("4G").unwrap_err().contains("too large"));
        assert!(size("12X").unwrap_err().contains("not a size"));
        assert!(size("-1").unwrap_err().contains("not a size"));
        assert!(size("").unwrap_err().contains("not a size"));
        assert_eq!(mode("600"), Ok(0o600));
        assert_eq!(mode("0644"), Ok(0o644));
        assert!(mode("1777").is_err() && mode("9").is_err() && mode("rw").is_err());
    }
}
