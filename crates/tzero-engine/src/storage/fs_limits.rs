//! What the file system holding the data directory allows: its name and largest file, so that a
//! volume too large for it is refused with a message that names the real limit (the engine's own
//! limit, 2^60 bytes, is larger than what ext4 takes).
//!
//! The type comes from `statfs`'s magic number; the limits are the kernel's for each type
//! (ext4: 2^32 blocks per extent-mapped file; XFS, btrfs, tmpfs: the VFS limit of 2^63 - 1).

use std::path::Path;

/// The file system of the data directory, as far as it is known.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileSystemInfo {
    /// "ext4", "xfs", ...; None when the type is not one we know.
    pub name: Option<&'static str>,
    /// The largest file it allows, when known.
    pub max_file_size: Option<u64>,
}

impl FileSystemInfo {
    /// The size of the largest file that can really be created: ext4's extent-mapped files
    /// address 2^32 blocks but the last one is unusable, so one block less than
    /// [`FileSystemInfo::max_file_size`] (which names the limit as people know it, "16 TiB").
    pub fn largest_file(&self) -> Option<u64> {
        let max = self.max_file_size?;
        Some(match self.name {
            Some("ext4") => max - (max >> 32),
            _ => max,
        })
    }

    pub const UNKNOWN: FileSystemInfo = FileSystemInfo {
        name: None,
        max_file_size: None,
    };
}

const EXT4_SUPER_MAGIC: i128 = 0xEF53;
const XFS_SUPER_MAGIC: i128 = 0x5846_5342;
const TMPFS_MAGIC: i128 = 0x0102_1994;
const BTRFS_SUPER_MAGIC: i128 = 0x9123_683E;

/// The VFS limit (`MAX_LFS_FILESIZE` on 64-bit kernels).
const VFS_MAX: u64 = (1 << 63) - 1;

/// Looks at the file system holding `dir`; [`FileSystemInfo::UNKNOWN`] when `statfs` fails.
pub fn probe(dir: &Path) -> FileSystemInfo {
    let Ok(st) = rustix::fs::statfs(dir) else {
        return FileSystemInfo::UNKNOWN;
    };
    // The field's integer type differs between architectures; i128 holds all of them.
    let magic = i128::from(st.f_type);
    let block = u64::try_from(st.f_bsize).unwrap_or(4096);
    let (name, max) = match magic {
        // Extent-mapped files address 2^32 logical blocks (the true limit is one block less).
        EXT4_SUPER_MAGIC => ("ext4", block << 32),
        XFS_SUPER_MAGIC => ("xfs", VFS_MAX),
        TMPFS_MAGIC => ("tmpfs", VFS_MAX),
        BTRFS_SUPER_MAGIC => ("btrfs", VFS_MAX),
        _ => return FileSystemInfo::UNKNOWN,
    };
    FileSystemInfo {
        name: Some(name),
        max_file_size: Some(max),
    }
}

/// Bytes in binary units, exact when they are a whole number of the unit ("16 TiB"), else with
/// one decimal ("1.5 GiB").
pub fn format_bytes(bytes: u64) -> String {
    const UNITS: [&str; 7] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    let mut unit = 0;
    while unit + 1 < UNITS.len() && bytes >> (10 * (unit + 1)) > 0 {
        unit += 1;
    }
    let whole = bytes >> (10 * unit);
    let rest = bytes - (whole << (10 * unit));
    if rest == 0 {
        format!("{whole} {}", UNITS[unit])
    } else {
        let tenths = (rest * 10) >> (10 * unit);
        format!("{whole}.{tenths} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_binary_units() {
        assert_eq!(format_bytes(0), "0 B");
        assert_eq!(format_bytes(512), "512 B");
        assert_eq!(format_bytes(16 << 40), "16 TiB");
        assert_eq!(format_bytes(1 << 60), "1 EiB");
        assert_eq!(format_bytes(3 << 29), "1.5 GiB");
        assert_eq!(format_bytes(17 << 40), "17 TiB");
    }

    #[test]
    fn probes_the_directory_it_is_given() {
        let dir = std::env::temp_dir();
        let info = probe(&dir);
        // Whatever the type, a known one comes with its limit and an unknown one with none.
        assert_eq!(info.name.is_some(), info.max_file_size.is_some());
        assert_eq!(probe(Path::new("/no/such/dir")), FileSystemInfo::UNKNOWN);
    }
}
