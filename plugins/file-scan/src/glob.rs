//! Glob patterns: `*` and `?` within one path component, `**` across components,
//! `[abc]`, `[a-z]` and `[!x]` classes, `\` to escape. A pattern without `/` matches a
//! file's name; a pattern with `/` matches its path relative to the scanned directory.

/// Why a pattern was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PatternError {
    #[error("pattern is empty")]
    Empty,
    #[error("pattern {0:?} has an unclosed [")]
    UnclosedClass(String),
    #[error("pattern {0:?} ends with a lone \\")]
    TrailingEscape(String),
}

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Literal(char),
    /// `?`: one character other than `/`.
    One,
    /// `*`: any run of characters other than `/`.
    Star,
    /// `**`: any run of characters.
    Globstar,
    /// `**/`: nothing, or anything that ends with `/`.
    GlobstarDir,
    Class {
        negated: bool,
        ranges: Vec<(char, char)>,
    },
}

/// One compiled pattern.
#[derive(Debug, Clone, PartialEq)]
pub struct Glob {
    pattern: String,
    tokens: Vec<Token>,
    /// Matched against the relative path rather than the file name.
    path_mode: bool,
}

impl Glob {
    pub fn new(pattern: &str) -> Result<Glob, PatternError> {
        if pattern.is_empty() {
            return Err(PatternError::Empty);
        }
        let chars: Vec<char> = pattern.chars().collect();
        let mut tokens = Vec::new();
        let mut i = 0;
        while i < chars.len() {
            match chars[i] {
                '*' if chars.get(i + 1) == Some(&'*') => {
                    i += 2;
                    if chars.get(i) == Some(&'/') {
                        i += 1;
                        tokens.push(Token::GlobstarDir);
                    } else {
                        tokens.push(Token::Globstar);
                    }
                    continue;
                }
                '*' => tokens.push(Token::Star),
                '?' => tokens.push(Token::One),
                '\\' => {
                    let c = *chars.get(i + 1).ok_or_else(|| PatternError::TrailingEscape(pattern.to_string()))?;
                    tokens.push(Token::Literal(c));
                    i += 1;
                }
                '[' => {
                    let (token, next) =
                        class(&chars, i).ok_or_else(|| PatternError::UnclosedClass(pattern.to_string()))?;
                    tokens.push(token);
                    i = next;
                    continue;
                }
                c => tokens.push(Token::Literal(c)),
            }
            i += 1;
        }
        Ok(Glob { pattern: pattern.to_string(), tokens, path_mode: pattern.contains('/') })
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.pattern
    }

    /// Whether the pattern is matched against relative paths (it contains `/`).
    pub fn is_path_pattern(&self) -> bool {
        self.path_mode
    }

    /// Whether `text` (a name, or a `/`-separated relative path) matches.
    pub fn matches(&self, text: &str) -> bool {
        let text: Vec<char> = text.chars().collect();
        matches(&self.tokens, &text)
    }
}

/// Parses `[...]` starting at `start`; returns the token and the index after `]`.
fn class(chars: &[char], start: usize) -> Option<(Token, usize)> {
    let mut i = start + 1;
    let negated = matches!(chars.get(i), Some('!') | Some('^'));
    if negated {
        i += 1;
    }
    let mut ranges = Vec::new();
    let mut first = true;
    loop {
        let c = *chars.get(i)?;
        if c == ']' && !first {
            return Some((Token::Class { negated, ranges }, i + 1));
        }
        first = false;
        let c = if c == '\\' {
            i += 1;
            *chars.get(i)?
        } else {
            c
        };
        if chars.get(i + 1) == Some(&'-') && chars.get(i + 2).is_some_and(|e| *e != ']') {
            ranges.push((c, chars[i + 2]));
            i += 3;
        } else {
            ranges.push((c, c));
            i += 1;
        }
    }
}

fn matches(tokens: &[Token], text: &[char]) -> bool {
    let Some((token, rest)) = tokens.split_first() else {
        return text.is_empty();
    };
    match token {
        Token::Literal(c) => text.first() == Some(c) && matches(rest, &text[1..]),
        Token::One => text.first().is_some_and(|c| *c != '/') && matches(rest, &text[1..]),
        Token::Class { negated, ranges } => {
            text.first().is_some_and(|c| *c != '/' && ranges.iter().any(|(lo, hi)| (lo..=hi).contains(&c)) != *negated)
                && matches(rest, &text[1..])
        }
        Token::Star => {
            let run = text.iter().take_while(|c| **c != '/').count();
            (0..=run).any(|n| matches(rest, &text[n..]))
        }
        Token::Globstar => (0..=text.len()).any(|n| matches(rest, &text[n..])),
        Token::GlobstarDir => {
            matches(rest, text) || (1..=text.len()).any(|n| text[n - 1] == '/' && matches(rest, &text[n..]))
        }
    }
}

/// A set of patterns; a file matches when any pattern does. An empty set matches
/// every file.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Patterns(Vec<Glob>);

impl Patterns {
    /// Compiles every pattern; blank entries are ignored.
    pub fn new<S: AsRef<str>>(patterns: &[S]) -> Result<Patterns, PatternError> {
        patterns
            .iter()
            .map(|p| p.as_ref().trim())
            .filter(|p| !p.is_empty())
            .map(Glob::new)
            .collect::<Result<Vec<_>, _>>()
            .map(Patterns)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether a file with this `name` at this `relative` path (`/`-separated) matches.
    pub fn matches(&self, name: &str, relative: &str) -> bool {
        self.0.is_empty() || self.0.iter().any(|g| g.matches(if g.is_path_pattern() { relative } else { name }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(pattern: &str, text: &str) -> bool {
        Glob::new(pattern).unwrap().matches(text)
    }

    #[test]
    fn stars_and_question_marks_stay_within_one_component() {
        assert!(m("*.db", "app.db"));
        assert!(m("*.db", ".db"));
        assert!(!m("*.db", "app.db-wal"));
        assert!(m("app.????", "app.test"));
        assert!(!m("*.log", "a/b.log"));
        assert!(m("a*b*c", "axxbyyc"));
        assert!(!m("a*b*c", "axxbyy"));
    }

    #[test]
    fn globstar_crosses_components_and_may_match_none() {
        assert!(m("logs/**/*.log", "logs/a.log"));
        assert!(m("logs/**/*.log", "logs/x/y/a.log"));
        assert!(!m("logs/**/*.log", "other/a.log"));
        assert!(m("**", "a/b/c"));
        assert!(m("**/*.db", "x.db"));
    }

    #[test]
    fn classes_ranges_negation_and_escapes_work() {
        assert!(m("app[0-9].log", "app7.log"));
        assert!(!m("app[0-9].log", "appx.log"));
        assert!(m("app[!0-9].log", "appx.log"));
        assert!(m("[]]", "]"));
        assert!(m(r"a\*b", "a*b"));
        assert!(!m(r"a\*b", "axb"));
    }

    #[test]
    fn malformed_patterns_are_refused_with_a_reason() {
        assert_eq!(Glob::new(""), Err(PatternError::Empty));
        assert!(matches!(Glob::new("[abc"), Err(PatternError::UnclosedClass(_))));
        assert!(matches!(Glob::new("abc\\"), Err(PatternError::TrailingEscape(_))));
    }

    #[test]
    fn a_pattern_set_matches_names_or_relative_paths() {
        let p = Patterns::new(&["*.sqlite", "data/*.db", " "]).unwrap();
        assert!(p.matches("a.sqlite", "deep/a.sqlite"));
        assert!(p.matches("b.db", "data/b.db"));
        assert!(!p.matches("b.db", "other/b.db"));
        assert!(Patterns::new::<&str>(&[]).unwrap().matches("anything", "anything"));
    }
}
