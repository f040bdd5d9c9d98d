//! Size parsing and formatting for the command line.
//!
//! Sizes are binary (1 KiB = 1024 B) whichever spelling is used, as on the
//! DS8000 where capacities are given in GiB. Anything that is not a whole
//! number followed by a known unit is refused rather than guessed at, and
//! overflow is an error, never a wrap.

use std::fmt;

/// Why a size was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SizeError {
    #[error("empty size")]
    Empty,
    #[error("invalid size {0:?}: expected a whole number with an optional unit (B, K/KiB, M/MiB, G/GiB, T/TiB)")]
    Syntax(String),
    #[error("unknown unit {unit:?} in size {input:?}: use B, K/KiB, M/MiB, G/GiB or T/TiB")]
    Unit { input: String, unit: String },
    #[error("size {0:?} is too large")]
    Overflow(String),
}

/// Parses `4096`, `64K`, `64KiB`, `10gib`, `1 TiB` (case-insensitive) into bytes.
pub fn parse_size(input: &str) -> Result<u64, SizeError> {
    let s = input.trim();
    if s.is_empty() {
        return Err(SizeError::Empty);
    }
    let digits_end = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (number, unit) = s.split_at(digits_end);
    if number.is_empty() {
        return Err(SizeError::Syntax(input.to_owned()));
    }
    let unit = unit.trim_start();
    let shift = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kib" => 10,
        "m" | "mib" => 20,
        "g" | "gib" => 30,
        "t" | "tib" => 40,
        _ => {
            // A fraction or sign is a syntax error; letters are an unknown unit.
            if unit.starts_with(|c: char| c.is_ascii_alphabetic()) {
                return Err(SizeError::Unit {
                    input: input.to_owned(),
                    unit: unit.to_owned(),
                });
            }
            return Err(SizeError::Syntax(input.to_owned()));
        }
    };
    let value: u64 = number
        .parse()
        .map_err(|_| SizeError::Overflow(input.to_owned()))?;
    value
        .checked_mul(1u64 << shift)
        .ok_or_else(|| SizeError::Overflow(input.to_owned()))
}

/// A byte count for people: exact in the largest binary unit that divides it
/// (`10 GiB`, `64 KiB`), otherwise one decimal in the largest unit not above it.
pub fn format_size(bytes: u64) -> String {
    HumanSize(bytes).to_string()
}

/// Displays a byte count the way [`format_size`] describes.
#[derive(Debug, Clone, Copy)]
pub struct HumanSize(pub u64);

impl fmt::Display for HumanSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const UNITS: [(&str, u32); 5] = [
            ("PiB", 50),
            ("TiB", 40),
            ("GiB", 30),
            ("MiB", 20),
            ("KiB", 10),
        ];
        let b = self.0;
        for (name, shift) in UNITS {
            let unit = 1u64 << shift;
            if b >= unit {
                if b % unit == 0 {
                    return write!(f, "{} {name}", b >> shift);
                }
                // Tenths, computed in integers so nothing is lost to float rounding.
                let tenths = u128::from(b) * 10 / u128::from(unit);
                return write!(f, "{}.{} {name}", tenths / 10, tenths % 10);
            }
        }
        write!(f, "{b} B")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_plain_and_units() {
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("0"), Ok(0));
        assert_eq!(parse_size("512B"), Ok(512));
        assert_eq!(parse_size("64K"), Ok(64 << 10));
        assert_eq!(parse_size("64kib"), Ok(64 << 10));
        assert_eq!(parse_size("16M"), Ok(16 << 20));
        assert_eq!(parse_size("16MiB"), Ok(16 << 20));
        assert_eq!(parse_size("10GiB"), Ok(10 << 30));
        assert_eq!(parse_size("10 g"), Ok(10 << 30));
        assert_eq!(parse_size(" 2TIB "), Ok(2 << 40));
    }

    #[test]
    fn rejects_garbage() {
        assert_eq!(parse_size(""), Err(SizeError::Empty));
        assert!(matches!(parse_size("GiB"), Err(SizeError::Syntax(_))));
        assert!(matches!(parse_size("-1"), Err(SizeError::Syntax(_))));
        assert!(matches!(parse_size("1.5G"), Err(SizeError::Syntax(_))));
        assert!(matches!(parse_size("10 GB"), Err(SizeError::Unit { .. })));
        assert!(matches!(parse_size("10x"), Err(SizeError::Unit { .. })));
        assert!(matches!(parse_size("10GiBs"), Err(SizeError::Unit { .. })));
        assert!(matches!(parse_size("1 0"), Err(SizeError::Syntax(_))));
    }

    #[test]
    fn rejects_overflow() {
        assert!(matches!(
            parse_size("18446744073709551616"),
            Err(SizeError::Overflow(_))
        ));
        assert!(matches!(
            parse_size("16777216T"),
            Err(SizeError::Overflow(_))
        ));
        assert_eq!(parse_size("16777215T"), Ok(16_777_215 << 40));
    }

    #[test]
    fn formats() {
        assert_eq!(format_size(0), "0 B");
        assert_eq!(format_size(512), "512 B");
        assert_eq!(format_size(64 << 10), "64 KiB");
        assert_eq!(format_size(10 << 30), "10 GiB");
        assert_eq!(format_size((1 << 30) + (512 << 20)), "1.5 GiB");
        assert_eq!(format_size(u64::MAX), "16383.9 PiB");
    }
}
