//! Byte sizes: the one grammar every swaplab interface (control socket,
//! swapper settings, command line, scenario files) parses.
//!
//! # Grammar
//!
//! ```text
//! size   = ws* digits ws* [unit] ws*
//! digits = ("0" | … | "9")+            a decimal number of units
//! unit   = prefix ["i"] ["B"] | "B"    letters in any case
//! prefix = "K" | "M" | "G" | "T"       2^10, 2^20, 2^30, 2^40 (always binary)
//! ```
//!
//! So `4096`, `4096B`, `64K`, `64k`, `64KB`, `64Ki`, `64KiB`, `256 M`,
//! ` 2G `, `2T` are sizes; `K`, `-1M`, `+5`, `1.5G`, `12X`, `12KiBB` and
//! the empty string are not, and neither is a value above `u64::MAX` bytes.
//!
//! This is the union of the three parsers it replaces: the control socket's
//! `N[K|M|G|T][i][B]`, the swapper's `N[K|M|G|T]` (which also allowed a space
//! before the unit) and the command line's (the same as the control
//! socket's). What they accepted only by accident is gone: repeated suffix
//! letters (`1KBB`, `1KiiB`), a bare `iB` (`12iB`), and a leading `+` (the
//! swapper's `+5K`).
//!
//! [`parse`] returns bytes; [`ByteSize`] wraps them with [`FromStr`] and a
//! [`Display`](fmt::Display) that prints the largest exact unit (`256M`,
//! `1G`, `12345`), which parses back to the same value. Error messages say
//! what is wrong without quoting the input, so callers can add their context
//! (`bad size "12X": unknown unit "X" …`).

use std::fmt;
use std::str::FromStr;

use thiserror::Error;

/// Why a string is not a size.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum SizeError {
    /// Nothing but whitespace.
    #[error("empty size")]
    Empty,
    /// The string does not start with a decimal number (after whitespace).
    #[error("expected a number of bytes or e.g. 256M, 1G")]
    NoNumber,
    /// What follows the number is not a unit of the grammar.
    #[error("unknown unit \"{0}\" (use K, M, G or T)")]
    Unit(String),
    /// The value does not fit in 64 bits.
    #[error("too large")]
    Overflow,
}

/// The binary shift of `unit` (already trimmed), `None` if it is not one.
fn shift(unit: &str) -> Option<u32> {
    let upper = unit.to_ascii_uppercase();
    if upper.is_empty() || upper == "B" {
        return Some(0);
    }
    let (prefix, rest) = upper.split_at(upper.chars().next()?.len_utf8());
    let shift = match prefix {
        "K" => 10,
        "M" => 20,
        "G" => 30,
        "T" => 40,
        _ => return None,
    };
    matches!(rest, "" | "I" | "B" | "IB").then_some(shift)
}

/// Parses a size (see the [module grammar](self)) into bytes.
pub fn parse(s: &str) -> Result<u64, SizeError> {
    let t = s.trim();
    if t.is_empty() {
        return Err(SizeError::Empty);
    }
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    if num.is_empty() {
        return Err(SizeError::NoNumber);
    }
    // Only digits: the one way to fail is a number above u64::MAX.
    let n: u64 = num.parse().map_err(|_| SizeError::Overflow)?;
    let unit = unit.trim();
    let shift = shift(unit).ok_or_else(|| SizeError::Unit(unit.to_string()))?;
    n.checked_mul(1u64 << shift).ok_or(SizeError::Overflow)
}

/// A size in bytes, parsed with [`parse`], displayed in the largest exact unit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ByteSize(pub u64);

impl ByteSize {
    /// The size in bytes.
    pub fn bytes(self) -> u64 {
        self.0
    }
}

impl From<u64> for ByteSize {
    fn from(bytes: u64) -> Self {
        Self(bytes)
    }
}

impl FromStr for ByteSize {
    type Err = SizeError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse(s).map(ByteSize)
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const UNITS: [(&str, u32); 4] = [("T", 40), ("G", 30), ("M", 20), ("K", 10)];
        for (name, shift) in UNITS {
            let unit = 1u64 << shift;
            if self.0 >= unit && self.0 % unit == 0 {
                return write!(f, "{}{}", self.0 / unit, name);
            }
        }
        write!(f, "{}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_numbers_are_bytes() {
        assert_eq!(parse("4096"), Ok(4096));
        assert_eq!(parse("0"), Ok(0));
        assert_eq!(parse("12B"), Ok(12));
        assert_eq!(parse("12b"), Ok(12));
        assert_eq!(parse("18446744073709551615"), Ok(u64::MAX));
    }

    #[test]
    fn every_unit_spelling_is_binary_and_case_insensitive() {
        for (unit, shift) in [("K", 10), ("M", 20), ("G", 30), ("T", 40)] {
            for spelling in [
                unit.to_string(),
                unit.to_lowercase(),
                format!("{unit}B"),
                format!("{unit}i"),
                format!("{unit}iB"),
                format!("{}ib", unit.to_lowercase()),
                format!("{unit}IB"),
            ] {
                assert_eq!(parse(&format!("3{spelling}")), Ok(3 << shift), "{spelling}");
            }
        }
    }

    #[test]
    fn whitespace_around_and_before_the_unit() {
        assert_eq!(parse(" 2G "), Ok(2 << 30));
        assert_eq!(parse("256 M"), Ok(256 << 20));
        assert_eq!(parse("\t64 KiB\n"), Ok(64 << 10));
    }

    #[test]
    fn what_the_three_old_parsers_accepted_still_parses() {
        // vmm::api::protocol::parse_size's tests.
        assert_eq!(parse("64KiB"), Ok(64 << 10));
        assert_eq!(parse("256m"), Ok(256 << 20));
        assert_eq!(parse("2T"), Ok(2 << 40));
        // swapper::config::parse_size's tests.
        assert_eq!(parse("64K"), Ok(65536));
        // experiments' ByteSize tests.
        assert_eq!(parse("1g"), Ok(1 << 30));
        assert_eq!(parse("1T"), Ok(1 << 40));
    }

    #[test]
    fn garbage_has_a_reason() {
        assert_eq!(parse(""), Err(SizeError::Empty));
        assert_eq!(parse("   "), Err(SizeError::Empty));
        assert_eq!(parse("M"), Err(SizeError::NoNumber));
        assert_eq!(parse("-1M"), Err(SizeError::NoNumber));
        assert_eq!(parse("+5"), Err(SizeError::NoNumber));
        assert_eq!(parse("12Q"), Err(SizeError::Unit("Q".into())));
        assert_eq!(parse("1.5G"), Err(SizeError::Unit(".5G".into())));
        assert_eq!(parse("1KBB"), Err(SizeError::Unit("KBB".into())));
        assert_eq!(parse("1KiiB"), Err(SizeError::Unit("KiiB".into())));
        assert_eq!(parse("12iB"), Err(SizeError::Unit("iB".into())));
        assert_eq!(parse("5 K B"), Err(SizeError::Unit("K B".into())));
        assert_eq!(parse("5é"), Err(SizeError::Unit("é".into())));
    }

    #[test]
    fn overflow_is_refused() {
        assert_eq!(parse("99999999999T"), Err(SizeError::Overflow));
        assert_eq!(parse("18446744073709551616"), Err(SizeError::Overflow));
        assert_eq!(parse("16777216T"), Err(SizeError::Overflow));
        assert_eq!(parse("16777215T"), Ok(16777215 << 40));
    }

    #[test]
    fn messages_do_not_repeat_the_input() {
        assert_eq!(SizeError::Empty.to_string(), "empty size");
        assert_eq!(
            parse("25X").unwrap_err().to_string(),
            "unknown unit \"X\" (use K, M, G or T)"
        );
        assert!(parse("-1")
            .unwrap_err()
            .to_string()
            .starts_with("expected a number"));
        assert_eq!(parse("99999999999T").unwrap_err().to_string(), "too large");
    }

    #[test]
    fn byte_size_parses_and_displays_round_trip() {
        assert_eq!("256M".parse::<ByteSize>(), Ok(ByteSize(256 << 20)));
        assert_eq!("64KiB".parse::<ByteSize>().unwrap().bytes(), 64 << 10);
        assert!(matches!("12X".parse::<ByteSize>(), Err(SizeError::Unit(_))));
        for s in ["256M", "1G", "4K", "12345", "0", "3T", "1025K"] {
            assert_eq!(s.parse::<ByteSize>().unwrap().to_string(), s);
        }
        assert_eq!(ByteSize::from(1536).to_string(), "1536");
        assert_eq!(ByteSize(u64::MAX).to_string(), u64::MAX.to_string());
    }
}
