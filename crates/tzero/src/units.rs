//! Size parsing and formatting for the command line, with the `bytesize`
//! crate's unit names and display.
//!
//! Sizes are binary (1 KiB = 1024 B) whichever spelling is used, as on the
//! DS8000 where capacities are given in GiB: `64K` is 64 KiB, and the
//! decimal spellings (`KB`, `GB`, ...) are refused rather than taken for
//! binary or decimal. Anything that is not a whole number followed by a
//! known unit is refused rather than guessed at, and overflow is an error,
//! never a wrap. Every unit that [`format_size`] prints (B to EiB) parses
//! back to the same number.

use std::fmt;

use bytesize::{ByteSize, Unit};

/// Why a size was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SizeError {
    #[error("empty size")]
    Empty,
    #[error("invalid size {0:?}: expected a whole number with an optional unit ({UNITS})")]
    Syntax(String),
    #[error("unknown unit {unit:?} in size {input:?}: use {UNITS}")]
    Unit { input: String, unit: String },
    #[error("size {0:?} is too large")]
    Overflow(String),
}

/// The units [`parse_size`] accepts, for its error messages.
const UNITS: &str = "B, K/KiB, M/MiB, G/GiB, T/TiB, P/PiB or E/EiB";

/// Parses `4096`, `64K`, `64KiB`, `10gib`, `1 TiB`, `2PiB` (case-insensitive) into bytes.
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
    let factor = unit_factor(input, unit.trim_start())?;
    let value: u64 = number
        .parse()
        .map_err(|_| SizeError::Overflow(input.to_owned()))?;
    value
        .checked_mul(factor)
        .ok_or_else(|| SizeError::Overflow(input.to_owned()))
}

/// Bytes per `unit`: B or a binary unit. `bytesize` reads a lone `K` (and
/// `KB`) as decimal; here a lone letter is the binary unit and the decimal
/// spellings are refused.
fn unit_factor(input: &str, unit: &str) -> Result<u64, SizeError> {
    if unit.is_empty() {
        return Ok(1);
    }
    // A fraction or sign is a syntax error; letters are an unknown unit.
    if !unit.starts_with(|c: char| c.is_ascii_alphabetic()) {
        return Err(SizeError::Syntax(input.to_owned()));
    }
    let unknown = || SizeError::Unit {
        input: input.to_owned(),
        unit: unit.to_owned(),
    };
    let spelled = if unit.len() == 1 && !unit.eq_ignore_ascii_case("b") {
        format!("{unit}iB")
    } else {
        unit.to_owned()
    };
    let factor = match spelled.parse::<Unit>().map_err(|_| unknown())? {
        Unit::Byte => 1,
        Unit::KibiByte => bytesize::KIB,
        Unit::MebiByte => bytesize::MIB,
        Unit::GibiByte => bytesize::GIB,
        Unit::TebiByte => bytesize::TIB,
        Unit::PebiByte => bytesize::PIB,
        Unit::ExbiByte => bytesize::EIB,
        _ => return Err(unknown()),
    };
    Ok(factor)
}

/// A byte count for people: exact in the largest binary unit not above it
/// when that unit divides it (`10 GiB`, `64 KiB`), otherwise rounded to one
/// decimal in that unit (`1.5 GiB`).
pub fn format_size(bytes: u64) -> String {
    HumanSize(bytes).to_string()
}

/// Displays a byte count the way [`format_size`] describes.
#[derive(Debug, Clone, Copy)]
pub struct HumanSize(pub u64);

impl fmt::Display for HumanSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0;
        // bytesize prints in the largest binary unit not above `b`; it always
        // shows a decimal, so a whole number of that unit is printed with
        // none, and reads back exactly.
        let unit = 1u64 << (b.checked_ilog2().unwrap_or(0) / 10 * 10);
        let display = ByteSize(b).display().iec();
        if b % unit == 0 {
            write!(f, "{display:.0}")
        } else {
            write!(f, "{display}")
        }
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
        assert_eq!(parse_size("3PiB"), Ok(3 << 50));
        assert_eq!(parse_size("3p"), Ok(3 << 50));
        assert_eq!(parse_size("15 EiB"), Ok(15 << 60));
    }

    /// Whatever is printed exactly parses back to the same number, in every
    /// unit from B to EiB (PiB printed but refused as input was a drift).
    #[test]
    fn exact_sizes_round_trip() {
        for shift in [0u32, 10, 20, 30, 40, 50, 60] {
            for n in [1u64, 3, 7, 15] {
                let bytes = n << shift;
                let printed = format_size(bytes);
                assert_eq!(parse_size(&printed), Ok(bytes), "{printed}");
            }
        }
        assert_eq!(format_size(5 << 50), "5 PiB");
        assert_eq!(parse_size("5 PiB"), Ok(5 << 50));
    }

    #[test]
    fn rejects_garbage() {
        assert_eq!(parse_size(""), Err(SizeError::Empty));
        assert!(matches!(parse_size("GiB"), Err(SizeError::Syntax(_))));
        assert!(matches!(parse_size("-1"), Err(SizeError::Syntax(_))));
        assert!(matches!(parse_size("1.5G"), Err(SizeError::Syntax(_))));
        assert!(matches!(parse_size("10 GB"), Err(SizeError::Unit { .. })));
        assert!(matches!(parse_size("1PB"), Err(SizeError::Unit { .. })));
        assert!(matches!(parse_size("1 kb"), Err(SizeError::Unit { .. })));
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
        assert!(matches!(parse_size("16EiB"), Err(SizeError::Overflow(_))));
    }

    #[test]
    fn formats() {
        assert_eq!(format_size(0), "0 B");
        assert_eq!(format_size(512), "512 B");
        assert_eq!(format_size(64 << 10), "64 KiB");
        assert_eq!(format_size(10 << 30), "10 GiB");
        assert_eq!(format_size((1 << 30) + (512 << 20)), "1.5 GiB");
        assert_eq!(format_size(1023), "1023 B");
        assert_eq!(format_size(3 << 50), "3 PiB");
        assert_eq!(format_size(u64::MAX), "16.0 EiB");
    }
}
