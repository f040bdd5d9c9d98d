//! Whole numbers in request bodies, as JSON Schema defines them.
//!
//! JSON Schema (and so the OpenAPI document) calls `4665.0` an integer: a
//! number whose fraction is zero. serde_json refuses it for a `u64`, so a
//! client that writes numbers as doubles (JavaScript, many generators) would
//! be told its schema-valid body is malformed. These deserializers take any
//! JSON number with no fraction and refuse the rest with a message that says
//! why.
//!
//! They also keep the server to what the document promises: `format: int64`
//! means at most 2^63 − 1, so a larger `u64` is refused rather than taken
//! (what the schema calls invalid must not be accepted either).

use std::fmt;

use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;

/// The largest value of a `format: int64` field.
const INT64_MAX: u64 = i64::MAX as u64;

/// A whole number in `0..=max`, read from a JSON integer or an integral
/// float.
struct Whole {
    max: u64,
}

impl Visitor<'_> for Whole {
    type Value = u64;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "a whole number from 0 to {}", self.max)
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<u64, E> {
        if v <= self.max {
            Ok(v)
        } else {
            Err(E::custom(format!(
                "{v} is too large: at most {} is allowed",
                self.max
            )))
        }
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<u64, E> {
        match u64::try_from(v) {
            Ok(v) => self.visit_u64(v),
            Err(_) => Err(E::custom(format!(
                "{v} is negative: a count or size is >= 0"
            ))),
        }
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<u64, E> {
        // Every f64 from 2^53 up is whole but not every whole number there is
        // an f64; `v < 2^64` with a zero fraction still converts exactly.
        if v.is_finite() && v.fract() == 0.0 && (0.0..18_446_744_073_709_551_616.0).contains(&v) {
            #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
            self.visit_u64(v as u64)
        } else {
            Err(E::custom(format!(
                "{v} is not a whole number from 0 to {}",
                self.max
            )))
        }
    }
}

/// A `u64` field (`format: int64`, so at most 2^63 − 1).
pub fn u64<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    d.deserialize_any(Whole { max: INT64_MAX })
}

/// A `u32` field.
pub fn u32<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    let v = d.deserialize_any(Whole {
        max: u64::from(u32::MAX),
    })?;
    // In range by the visitor's bound.
    Ok(u32::try_from(v).unwrap_or(u32::MAX))
}

/// An optional `u64` field: absent or `null` is `None`.
pub fn option_u64<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    struct Field(u64);
    impl<'de> Deserialize<'de> for Field {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            u64(d).map(Field)
        }
    }
    Option::<Field>::deserialize(d).map(|f| f.map(|Field(v)| v))
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    struct Body {
        #[serde(deserialize_with = "super::u64")]
        size: u64,
        #[serde(default, deserialize_with = "super::u32")]
        seq: u32,
        #[serde(default, deserialize_with = "super::option_u64")]
        track: Option<u64>,
    }

    fn parse(json: &str) -> Result<Body, String> {
        serde_json::from_str(json).map_err(|e| e.to_string())
    }

    #[test]
    fn integral_floats_are_whole_numbers() {
        let b = parse(r#"{"size": 4665.0, "seq": 7.0, "track": 65536.0}"#).unwrap();
        assert_eq!((b.size, b.seq, b.track), (4665, 7, Some(65536)));
        let b = parse(r#"{"size": 274877906944.0, "track": null}"#).unwrap();
        assert_eq!((b.size, b.seq, b.track), (274_877_906_944, 0, None));
    }

    #[test]
    fn fractions_negatives_and_out_of_range_are_refused() {
        for (json, needle) in [
            (r#"{"size": 1.5}"#, "not a whole number"),
            (r#"{"size": -1}"#, "negative"),
            (r#"{"size": 9223372036854775808}"#, "too large"),
            (r#"{"size": 1e300}"#, "not a whole number"),
            (r#"{"size": 1, "seq": 4294967296}"#, "too large"),
            (r#"{"size": "12"}"#, "whole number"),
        ] {
            let e = parse(json).unwrap_err();
            assert!(e.contains(needle), "{json}: {e}");
        }
        assert_eq!(
            parse(r#"{"size": 9223372036854775807, "seq": 4294967295}"#)
                .map(|b| (b.size, b.seq))
                .unwrap(),
            (i64::MAX as u64, u32::MAX)
        );
    }
}
