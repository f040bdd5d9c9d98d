//! A relationship's control bitmap summarised for display (the console's heat map): copied
//! tracks per bucket, read from the bitmap's per-chunk counters ([`Bitmap::downsample`]), so a
//! request costs the same for 1 GiB and 64 TiB. Read-only: it takes the topology shared, for
//! an instant, as the listing calls do, and never a track lock; a copy in flight shows a
//! moment later.
//!
//! [`Bitmap::downsample`]: crate::bitmap::Bitmap::downsample

use crate::engine::Engine;
use crate::error::FlashError;

pub use crate::bitmap::MAX_BUCKETS;

/// Copied tracks of a relationship, bucket by bucket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlashBitmap {
    pub total_tracks: u64,
    pub track_size: u64,
    /// Sum of `buckets`: the copied tracks this summary shows.
    pub copied_tracks: u64,
    /// Copied tracks per bucket; bucket `i` of `n` covers tracks
    /// `i * total_tracks / n .. (i + 1) * total_tracks / n` (integer division).
    pub buckets: Vec<u64>,
}

impl Engine {
    /// The copied tracks of `source:target` in `buckets` buckets, clamped to [`MAX_BUCKETS`]
    /// and to one track per bucket (a request for 0 is read as 1; the API refuses it first).
    pub fn flash_bitmap(
        &self,
        source: &str,
        target: &str,
        buckets: u64,
    ) -> Result<FlashBitmap, FlashError> {
        let rel = self.find_rel(source, target)?;
        let buckets = rel.bitmap.downsample(buckets);
        Ok(FlashBitmap {
            total_tracks: rel.bitmap.len(),
            track_size: rel.geometry.track_size,
            copied_tracks: buckets.iter().sum(),
            buckets,
        })
    }
}

#[cfg(test)]
mod tests {
    use crate::{Engine, EngineConfig, FlashError, FlashOptions};

    #[test]
    fn follows_the_background_copy() {
        let config = EngineConfig {
            background: false,
            ..EngineConfig::default()
        };
        let dir = tempfile::tempdir().expect("tempdir");
        let engine = Engine::open_dir(dir.path(), config).expect("open");
        for name in ["a", "b"] {
            engine
                .create_volume(name, 64 << 20, 64 << 10)
                .expect("create");
        }
        let opts = FlashOptions {
            background_copy: true,
            ..FlashOptions::default()
        };
        engine.establish("a", "b", opts).expect("establish");
        let empty = engine.flash_bitmap("a", "b", 4).expect("bitmap");
        assert_eq!((empty.total_tracks, empty.track_size), (1024, 64 << 10));
        assert_eq!(empty.buckets, vec![0, 0, 0, 0]);
        engine.copy_step(300).expect("copy");
        let partly = engine.flash_bitmap("a", "b", 4).expect("bitmap");
        let info = engine.relationship("a", "b").expect("info");
        assert_eq!(partly.copied_tracks, 1024 - info.out_of_sync_tracks);
        assert_eq!(partly.buckets[0], 256, "the copy runs from track 0");
        assert!(partly.buckets[3] < 256, "{:?}", partly.buckets);
        assert!(matches!(
            engine.flash_bitmap("a", "nope", 4),
            Err(FlashError::VolumeNotFound(_))
        ));
    }
}
