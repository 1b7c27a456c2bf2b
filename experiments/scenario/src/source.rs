//! Source texts, byte offset → `line:col`, and "did you mean" suggestions.

use std::ops::Range;

use crate::model::{Diagnostic, Pos, ScenarioError};

/// One TOML text and the name it is reported under (a path, or `builtin:NAME`).
#[derive(Debug, Clone)]
pub struct Source {
    name: String,
    text: String,
    /// Byte offset of the start of every line.
    line_starts: Vec<usize>,
}

impl Source {
    /// A source named `name` (shown in error messages) with contents `text`.
    pub fn new(name: impl Into<String>, text: impl Into<String>) -> Self {
        let text = text.into();
        let mut line_starts = vec![0];
        line_starts.extend(text.match_indices('\n').map(|(i, _)| i + 1));
        Self {
            name: name.into(),
            text,
            line_starts,
        }
    }

    /// The name errors are reported under.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The text.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// 1-based line and column (in characters) of byte offset `at`.
    pub fn line_col(&self, at: usize) -> (usize, usize) {
        let at = at.min(self.text.len());
        let line = match self.line_starts.binary_search(&at) {
            Ok(i) => i,
            Err(i) => i - 1,
        };
        let start = self.line_starts[line];
        // Offsets from the parser are on char boundaries; be lenient anyway.
        let col = self
            .text
            .get(start..at)
            .map_or(at - start, |s| s.chars().count());
        (line + 1, col + 1)
    }

    /// The position of byte offset `at`.
    pub fn pos(&self, at: usize) -> Pos {
        let (line, col) = self.line_col(at);
        Pos {
            file: self.name.clone(),
            line,
            col,
        }
    }

    /// A diagnostic at `span` (its start), about `key` (dotted path, if any).
    pub fn diag(&self, span: Range<usize>, key: Option<&str>, message: String) -> Diagnostic {
        Diagnostic {
            pos: Some(self.pos(span.start)),
            key: key.map(str::to_string),
            message,
        }
    }

    /// A schema error (unknown key, wrong type, bad value) at `span`.
    pub fn schema(&self, span: Range<usize>, key: Option<&str>, message: String) -> ScenarioError {
        ScenarioError::Schema(self.diag(span, key, message))
    }

    /// A cross-field error (a run that would be meaningless) at `span`.
    pub fn invalid(&self, span: Range<usize>, key: Option<&str>, message: String) -> ScenarioError {
        ScenarioError::Invalid(self.diag(span, key, message))
    }
}

/// Edit distance between `a` and `b` over chars, counting a swap of two
/// adjacent characters as one edit (optimal string alignment distance).
pub fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    // d[i][j]: distance between a[..i] and b[..j].
    let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in d[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut v = (d[i - 1][j] + 1)
                .min(d[i][j - 1] + 1)
                .min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                v = v.min(d[i - 2][j - 2] + 1);
            }
            d[i][j] = v;
        }
    }
    d[a.len()][b.len()]
}

/// The candidate closest to `word`, if it is close enough to be a likely typo
/// (edit distance at most a third of the word, at least 1; or a prefix match).
pub fn suggest<'c>(word: &str, candidates: &[&'c str]) -> Option<&'c str> {
    let word_l = word.to_ascii_lowercase();
    let limit = (word.chars().count() / 3).max(1);
    candidates
        .iter()
        .map(|&c| (edit_distance(&word_l, c), c))
        .filter(|&(d, c)| d <= limit || (word_l.len() >= 3 && c.starts_with(&word_l)))
        .min_by_key(|&(d, _)| d)
        .map(|(_, c)| c)
}

/// ` (did you mean "x"?)` or nothing.
pub fn did_you_mean(word: &str, candidates: &[&str]) -> String {
    suggest(word, candidates)
        .map(|s| format!(" (did you mean \"{s}\"?)"))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_col_of_offsets() {
        let s = Source::new("f.toml", "a = 1\n\n[host]\npolcy = 2\n");
        assert_eq!(s.line_col(0), (1, 1));
        assert_eq!(s.line_col(4), (1, 5));
        assert_eq!(s.line_col(6), (2, 1));
        assert_eq!(s.line_col(7), (3, 1));
        assert_eq!(s.line_col(14), (4, 1));
        assert_eq!(s.line_col(22), (4, 9));
        // Past the end clamps to the end.
        assert_eq!(s.line_col(999), (5, 1));
    }

    #[test]
    fn line_col_counts_chars_not_bytes() {
        let s = Source::new("f.toml", "d = \"µs\" x");
        // 'x' is at byte 10, char 9 (µ is two bytes).
        assert_eq!(s.line_col(10), (1, 10));
    }

    #[test]
    fn edit_distances() {
        assert_eq!(edit_distance("policy", "policy"), 0);
        assert_eq!(edit_distance("polcy", "policy"), 1);
        assert_eq!(edit_distance("plicy", "policy"), 1);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(edit_distance("stroe", "store"), 1);
        assert_eq!(edit_distance("guset", "guest"), 1);
    }

    #[test]
    fn suggestions_only_for_likely_typos() {
        let keys = ["limit", "store", "policy", "prefetch", "mitigations"];
        assert_eq!(suggest("polcy", &keys), Some("policy"));
        assert_eq!(suggest("Policy", &keys), Some("policy"));
        assert_eq!(suggest("mitigation", &keys), Some("mitigations"));
        assert_eq!(suggest("pref", &keys), Some("prefetch"));
        assert_eq!(suggest("colour", &keys), None);
        assert_eq!(did_you_mean("zzz", &keys), "");
        assert_eq!(did_you_mean("stor", &keys), " (did you mean \"store\"?)");
    }
}
