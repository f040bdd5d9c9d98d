//! Track geometry: how byte ranges of a volume map onto tracks, the unit of copy.
//!
//! Every relationship, bitmap bit, track lock and cache entry is indexed by track number, and
//! source and target of a relationship always share one geometry, so track `t` of one volume
//! corresponds to track `t` of every related volume.

/// Smallest allowed track size (4 KiB).
pub const MIN_TRACK_SIZE: u64 = 4 << 10;
/// Largest allowed track size (1 MiB).
pub const MAX_TRACK_SIZE: u64 = 1 << 20;
/// Default track size: the DS8000 fixed-block track, 64 KiB.
pub const DEFAULT_TRACK_SIZE: u64 = 64 << 10;
/// Largest capacity accepted (1 EiB): far above the 64 TiB the engine is tested with, low enough
/// that no offset arithmetic can overflow a u64.
pub const MAX_CAPACITY: u64 = 1 << 60;

/// Most tracks a volume may have (2^32: 256 TiB at the default 64 KiB track, 4 PiB at 1 MiB).
/// Every bitmap of a relationship has a chunk table of one entry per 32768 tracks, made when it
/// is established; this bound keeps that table to 3 MiB, so establish stays milliseconds and
/// can never exhaust memory, whatever capacity and track size were asked for.
pub const MAX_TRACKS: u64 = 1 << 32;

/// Capacity and track size of a volume.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Geometry {
    pub capacity: u64,
    pub track_size: u64,
}

/// A piece of a byte range that lies within one track.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TrackSpan {
    pub track: u64,
    /// Offset of the span inside the track.
    pub in_track: u64,
    /// Length of the span.
    pub len: u64,
    /// Offset of the span inside the caller's buffer.
    pub buf_offset: u64,
}

impl Geometry {
    pub fn new(capacity: u64, track_size: u64) -> Self {
        Geometry {
            capacity,
            track_size,
        }
    }

    pub fn valid_track_size(track_size: u64) -> bool {
        track_size.is_power_of_two() && (MIN_TRACK_SIZE..=MAX_TRACK_SIZE).contains(&track_size)
    }

    /// Number of tracks; the last one may be short.
    pub fn tracks(&self) -> u64 {
        self.capacity.div_ceil(self.track_size)
    }

    pub fn track_start(&self, track: u64) -> u64 {
        track * self.track_size
    }

    /// Length of `track`, shorter than the track size only for a short last track.
    pub fn track_len(&self, track: u64) -> u64 {
        let start = self.track_start(track);
        self.track_size.min(self.capacity.saturating_sub(start))
    }

    /// Checks that `[offset, offset+len)` lies inside the volume.
    pub fn check_range(&self, offset: u64, len: u64) -> bool {
        offset
            .checked_add(len)
            .is_some_and(|end| end <= self.capacity)
    }

    /// Splits a byte range into per-track spans, in order. The range must be checked first.
    pub fn spans(&self, offset: u64, len: u64) -> impl Iterator<Item = TrackSpan> + '_ {
        let end = offset + len;
        let mut pos = offset;
        std::iter::from_fn(move || {
            if pos >= end {
                return None;
            }
            let track = pos / self.track_size;
            let in_track = pos % self.track_size;
            let span_len = (self.track_size - in_track).min(end - pos);
            let span = TrackSpan {
                track,
                in_track,
                len: span_len,
                buf_offset: pos - offset,
            };
            pos += span_len;
            Some(span)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_cover_range_exactly() {
        let g = Geometry::new(10 * 4096 + 100, 4096);
        assert_eq!(g.tracks(), 11);
        assert_eq!(g.track_len(10), 100);
        let spans: Vec<_> = g.spans(4000, 5000).collect();
        assert_eq!(spans.len(), 3);
        assert_eq!(spans[0].len, 96);
        assert_eq!(spans[1].len, 4096);
        assert_eq!(spans[2].len, 5000 - 96 - 4096);
        assert_eq!(spans[2].buf_offset, 96 + 4096);
        assert!(!g.check_range(u64::MAX, 2));
        assert!(g.check_range(0, g.capacity));
        assert!(!g.check_range(1, g.capacity));
    }
}
