//! Docker's human-readable durations and sizes, for `ps` and `images`.

/// Docker's `units.HumanDuration`.
pub fn duration(secs: i64) -> String {
    let s = secs.max(0);
    match s {
        0 => "Less than a second".into(),
        1 => "1 second".into(),
        2..=59 => format!("{s} seconds"),
        60..=119 => "About a minute".into(),
        _ if s < 3600 => format!("{} minutes", s / 60),
        _ if s < 2 * 3600 => "About an hour".into(),
        _ if s < 48 * 3600 => format!("{} hours", s / 3600),
        _ if s < 7 * 24 * 3600 * 2 => format!("{} days", s / (24 * 3600)),
        _ if s < 30 * 24 * 3600 * 3 => format!("{} weeks", s / (7 * 24 * 3600)),
        _ if s < 365 * 24 * 3600 * 2 => format!("{} months", s / (30 * 24 * 3600)),
        _ => format!("{} years", s / (365 * 24 * 3600)),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn durations() {
        assert_eq!(super::duration(0), "Less than a second");
        assert_eq!(super::duration(5), "5 seconds");
        assert_eq!(super::duration(90), "About a minute");
        assert_eq!(super::duration(600), "10 minutes");
        assert_eq!(super::duration(3 * 3600), "3 hours");
    }
}
