//! Copying T0 data between files, keeping holes as holes.
//!
//! Two ways to make a hole, and the choice matters for space-efficient (thin) volumes:
//! - **punch** ([`copy_punching_holes`]): deallocates the range but keeps its pool space
//!   reserved. Used where the space must stay accounted for (undo files, restores, tracks whose
//!   cached host writes already reserved it).
//! - **discard** ([`Holes::Discard`]): deallocates and gives the pool space back, as a host TRIM
//!   does. [`copy_to_target`] discards, unless cached host writes on the target have reserved the
//!   track: those must never run out of space at destage.

use crate::storage::BlockFile;
use crate::volume::Volume;
use std::io;

/// How a hole in the source becomes a hole in the destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Holes {
    /// Deallocate, keep any pool reservation ([`BlockFile::punch_hole`]).
    Punch,
    /// Deallocate and release pool space ([`BlockFile::discard`]).
    Discard,
}

/// Copies a range of T0 data into a target volume's file. Holes are discarded, so a
/// space-efficient target gives the space of its old data back, except on tracks whose cached
/// host writes have already reserved it (there they are punched).
pub(crate) fn copy_to_target(
    src: &dyn BlockFile,
    target: &Volume,
    start: u64,
    end: u64,
) -> io::Result<()> {
    let reserved = target.thin.is_some() && {
        let g = target.geometry;
        let cache = target.cache.lock();
        cache
            .range(start / g.track_size..=(end - 1) / g.track_size)
            .next()
            .is_some()
    };
    let holes = if reserved {
        Holes::Punch
    } else {
        Holes::Discard
    };
    copy_range(src, &*target.file, start, end, holes)
}

/// Copies `[start, end)` from `src` to `dst`; holes are punched, so no pool space is released.
pub(crate) fn copy_punching_holes(
    src: &dyn BlockFile,
    dst: &dyn BlockFile,
    start: u64,
    end: u64,
) -> io::Result<()> {
    copy_range(src, dst, start, end, Holes::Punch)
}

/// Copies `[start, end)` from `src` to `dst`, data as data and holes as `holes` says.
pub(crate) fn copy_range(
    src: &dyn BlockFile,
    dst: &dyn BlockFile,
    start: u64,
    end: u64,
    holes: Holes,
) -> io::Result<()> {
    let hole = |offset: u64, len: u64| match holes {
        Holes::Discard => dst.discard(offset, len),
        Holes::Punch => dst.punch_hole(offset, len),
    };
    let mut pos = start;
    while pos < end {
        match src.next_data(pos, end)? {
            Some((data_start, data_end)) => {
                if data_start > pos {
                    hole(pos, data_start - pos)?;
                }
                dst.copy_range_from(src, data_start, data_end - data_start)?;
                pos = data_end;
            }
            None => {
                hole(pos, end - pos)?;
                pos = end;
            }
        }
    }
    Ok(())
}
