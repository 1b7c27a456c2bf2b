//! `workload.metric`: a regular expression that takes the run's number from
//! a command's output.

use regex::{Regex, RegexBuilder};

/// How big a compiled metric expression may get (bytes); a pattern that
/// would need more is refused rather than left to eat memory.
const SIZE_LIMIT: usize = 1 << 20;

/// Compiles `pattern` (multi-line: `^` and `$` match at line ends).
pub fn compile(pattern: &str) -> Result<Regex, String> {
    RegexBuilder::new(pattern)
        .multi_line(true)
        .size_limit(SIZE_LIMIT)
        .dfa_size_limit(SIZE_LIMIT)
        .build()
        .map_err(|e| e.to_string())
}

/// The number `pattern` takes from `output`: its first capture group (the
/// whole match without one) in the last line-range it matches, as a float.
/// An error says what did not work, for the run's failure message.
pub fn extract(pattern: &str, output: &str) -> Result<f64, String> {
    let re = compile(pattern)?;
    let caps = re.captures_iter(output).last().ok_or_else(|| {
        format!("workload.metric {pattern:?} does not match the command's output")
    })?;
    let text = caps
        .get(1)
        .or_else(|| caps.get(0))
        .map_or("", |m| m.as_str())
        .trim();
    text.parse::<f64>()
        .ok()
        .filter(|v| v.is_finite())
        .ok_or_else(|| {
            format!("workload.metric {pattern:?} matched {text:?}, which is not a number")
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SYSBENCH: &str = "General statistics:\n    total time:                          10.0013s\n    total number of events:              1234\nThroughput:\n    events/s (eps):                      123.38\n";

    #[test]
    fn takes_the_first_group_of_the_last_match() {
        assert_eq!(
            extract(r"events/s \(eps\):\s+([0-9.]+)", SYSBENCH),
            Ok(123.38)
        );
        assert_eq!(
            extract(r"^\s+total number of events:\s+(\d+)$", SYSBENCH),
            Ok(1234.0)
        );
        assert_eq!(extract(r"n=(\d+)", "n=1\nn=2\n"), Ok(2.0));
        assert_eq!(extract(r"\d+\.\d+", "took 4.5 s"), Ok(4.5));
    }

    #[test]
    fn says_what_went_wrong() {
        let e = extract(r"rate: (\d+)", SYSBENCH).unwrap_err();
        assert!(e.contains("does not match"), "{e}");
        let e = extract(r"(total) time", SYSBENCH).unwrap_err();
        assert!(e.contains("\"total\"") && e.contains("not a number"), "{e}");
        assert!(extract(r"(", "x").is_err());
        // Big repetition counts are refused, not compiled.
        assert!(compile(r"(\w{1000}){1000}").is_err());
    }
}
