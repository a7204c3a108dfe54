//! Worker-supplied text, cut to size before the admin keeps or shows it; and times as
//! people read them.

/// Cuts `s` to at most `max` bytes (on a char boundary), marking the cut with `…`.
pub fn clip(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

/// A count with its noun: `1 attempt`, `2 attempts` (nouns that take an `s`).
pub fn plural(n: i64, noun: &str) -> String {
    if n == 1 { format!("{n} {noun}") } else { format!("{n} {noun}s") }
}

/// A Unix-ms time as RFC 3339 UTC to the second (`2026-11-27T12:00:00Z`).
pub fn time_label(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_else(|| ms.to_string())
}

/// Parses a time given as Unix ms or RFC 3339; the error says which forms work.
pub fn parse_time(text: &str) -> Result<i64, String> {
    let text = text.trim();
    if let Ok(ms) = text.parse::<i64>() {
        return Ok(ms);
    }
    chrono::DateTime::parse_from_rfc3339(text)
        .map(|t| t.timestamp_millis())
        .map_err(|_| format!("{text:?} is not a time: use Unix milliseconds or RFC 3339 (2026-01-02T03:04:05Z)"))
}

#[cfg(test)]
mod tests {
    #[test]
    fn times_read_as_rfc3339_and_parse_from_either_form() {
        assert_eq!(super::time_label(1_767_323_045_000), "2026-01-02T03:04:05Z");
        assert_eq!(super::parse_time("2026-01-02T03:04:05Z"), Ok(1_767_323_045_000));
        assert_eq!(super::parse_time("2026-01-02T04:04:05+01:00"), Ok(1_767_323_045_000));
        assert_eq!(super::parse_time(" 42 "), Ok(42));
        assert!(super::parse_time("yesterday").unwrap_err().contains("RFC 3339"));
    }

    #[test]
    fn counts_take_the_plural_unless_one() {
        assert_eq!(super::plural(1, "attempt"), "1 attempt");
        assert_eq!(super::plural(0, "attempt"), "0 attempts");
        assert_eq!(super::plural(2, "job"), "2 jobs");
    }

    #[test]
    fn clip_keeps_short_text_and_cuts_long_text_on_a_char_boundary() {
        assert_eq!(super::clip("abc", 5), "abc");
        assert_eq!(super::clip("abcdef", 3), "abc…");
        assert_eq!(super::clip("ééé", 3), "é…");
    }
}
