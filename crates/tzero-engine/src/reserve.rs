//! The catalog's metadata reserve: file-system space held for redb ahead of what it uses, so
//! that the commits which fail a relationship, withdraw it or delete a volume still succeed when
//! the host file system is full (the invariant: a full disk never poisons the engine by itself).
//!
//! # Why this mechanism
//! redb latches every I/O error of its backend (`StorageError::PreviousIo`): after one failed
//! write, set_len or sync, it refuses every later transaction until the database is reopened. A
//! commit that hits ENOSPC half way can therefore never be turned into a mere refusal; the error
//! must not happen in the first place. So the catalog file is kept *allocated* ahead of redb:
//! `[0, len + reserve)` has no holes, the part past the end allocated with
//! `fallocate(FALLOC_FL_KEEP_SIZE)`, which leaves the length redb sees unchanged (redb insists
//! the file length equals its layout length). redb never punches holes and only grows the file
//! with `set_len`, so its writes, in place or into a region it has just grown into, land in
//! blocks the file already owns:
//! - tmpfs: fallocate allocates the pages (they count against `size=`); extending the length
//!   over them keeps them, and writing them needs no new page;
//! - ext4 and XFS: fallocate makes unwritten extents, which delayed allocation treats as mapped,
//!   so a write reserves no new block; converting them to written may split an extent, for
//!   which both keep a pool of their own (ext4 `s_resv_clusters`, XFS `m_resblks`).
//!
//! A ballast file released on ENOSPC was the alternative. It was not taken because releasing it
//! gives the space to whichever writer comes first, a host write as likely as the catalog, and
//! because it needs an ENOSPC to have happened, which redb would already have latched.
//!
//! The reserve is [`target`]: at least [`MIN_RESERVE`], and at least the file's length, because
//! redb grows its file by doubling it (below 4 GiB), so one growth always fits. It is topped up
//! before each catalog transaction and after each resize when it is short; a shrink by redb frees
//! the blocks past the new end, which the top-up right after takes back. When the file system
//! cannot give the space, a warning is logged once, the essential commits go on using what is
//! held, and the commits that make the catalog grow (new volumes, pools, relationships) are
//! refused before redb is touched ([`Reserve::check_room`]), which leaves the catalog unchanged.
//! Where fallocate is not supported (the in-memory test backend, some network file systems)
//! there is no reserve and nothing is refused, as before.

use crate::error::CatalogError;
use crate::storage::BlockFile;
use parking_lot::Mutex;
use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The smallest reserve: a catalog of a few volumes is far smaller, and 32 MiB is noise next to
/// the volumes on the same file system.
pub const MIN_RESERVE: u64 = 32 << 20;

/// Top-ups that cannot get the whole reserve retry with halves down to this.
const MIN_STEP: u64 = 1 << 20;

/// While the reserve is short, routine commits (the persister's, every second during a copy)
/// retry the file system at most this often; deletes and growing commits always retry.
const RETRY_SHORT: Duration = Duration::from_secs(1);

/// The space to hold past the end of a catalog file of `len` bytes.
pub fn target(len: u64) -> u64 {
    len.max(MIN_RESERVE)
}

/// The catalog file and the space allocated for it.
#[derive(Debug)]
pub(crate) struct Reserve {
    file: Arc<dyn BlockFile>,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// `[0, allocated_to)` of the file has no holes; past the end it is KEEP_SIZE space.
    /// Starts at 0, so the first top-up also fills any hole redb left inside the file.
    allocated_to: u64,
    /// The reserve is short: logged once until it is whole again.
    short: bool,
    /// fallocate is not supported here: no reserve, no refusals.
    unsupported: bool,
    /// When a short top-up last asked the file system.
    last_try: Option<Instant>,
}

impl Reserve {
    /// Wraps the catalog file and takes its reserve (best effort).
    pub fn new(file: Arc<dyn BlockFile>) -> Self {
        let reserve = Reserve {
            file,
            state: Mutex::new(State::default()),
        };
        reserve.top_up();
        reserve
    }

    /// Before a routine commit: [`Reserve::top_up`], but while the reserve is short at most once
    /// per [`RETRY_SHORT`], so a full file system is not asked again at every commit.
    pub fn top_up_lazily(&self) {
        let mut state = self.state.lock();
        let recent = state.last_try.is_some_and(|t| t.elapsed() < RETRY_SHORT);
        if state.short && recent {
            return;
        }
        self.top_up_locked(&mut state);
    }

    pub fn file(&self) -> &dyn BlockFile {
        &*self.file
    }

    /// redb resizes its file: do it, forget the space a shrink gave back, and top up.
    pub fn set_len(&self, len: u64) -> io::Result<()> {
        let mut state = self.state.lock();
        self.file.set_len(len)?;
        // Truncating frees every block past the new end, ours included.
        state.allocated_to = state.allocated_to.min(len);
        self.top_up_locked(&mut state);
        Ok(())
    }

    /// Tops the reserve up if it is short; true when the whole reserve is held (or there is
    /// none to hold). Cheap when nothing is missing.
    pub fn top_up(&self) -> bool {
        let mut state = self.state.lock();
        self.top_up_locked(&mut state)
    }

    fn top_up_locked(&self, state: &mut State) -> bool {
        if state.unsupported {
            return true;
        }
        let len = match self.file.len() {
            Ok(len) => len,
            Err(e) => {
                tracing::warn!(error = %e, "catalog reserve: cannot read the catalog's length");
                return false;
            }
        };
        let want = len + target(len);
        if state.allocated_to >= want {
            return true;
        }
        // Take as much as the file system gives, halving the request: a partial reserve still
        // covers many commits.
        state.last_try = Some(Instant::now());
        let mut step = want - state.allocated_to;
        let mut last_error = None;
        while state.allocated_to < want {
            let from = state.allocated_to;
            let piece = step.min(want - from);
            match self.file.allocate_keep_size(from, piece) {
                Ok(()) => state.allocated_to = from + piece,
                Err(e) if e.kind() == io::ErrorKind::Unsupported || is_unsupported(&e) => {
                    tracing::warn!(error = %e, "catalog reserve: the file system cannot preallocate; no metadata reserve is kept, and a full file system can poison the engine");
                    state.unsupported = true;
                    return true;
                }
                Err(e) => {
                    last_error = Some(e);
                    if step <= MIN_STEP {
                        break;
                    }
                    step /= 2;
                }
            }
        }
        let held = state.allocated_to.saturating_sub(len);
        let whole = state.allocated_to >= want;
        if whole && state.short {
            tracing::info!(reserve = held, "catalog reserve restored");
        } else if !whole && !state.short {
            let error = last_error.map(|e| e.to_string()).unwrap_or_default();
            tracing::warn!(
                held,
                wanted = target(len),
                error,
                "catalog reserve is short: the file system is full; failing, withdrawing and deleting still commit, new volumes, pools and relationships are refused until space is freed"
            );
        }
        state.short = !whole;
        whole
    }

    /// For a commit that makes the catalog grow: refused, before redb is touched, unless the
    /// whole reserve is held, so the essential commits never find it used up.
    pub fn check_room(&self) -> Result<(), CatalogError> {
        let mut state = self.state.lock();
        if self.top_up_locked(&mut state) {
            return Ok(());
        }
        let len = self.file.len().map_err(CatalogError::db)?;
        Err(CatalogError::NoSpace {
            held: state.allocated_to.saturating_sub(len),
            wanted: target(len),
        })
    }

    /// Bytes allocated past the end of the file (0 where there is no reserve).
    pub fn held(&self) -> u64 {
        let state = self.state.lock();
        let len = self.file.len().unwrap_or(u64::MAX);
        state.allocated_to.saturating_sub(len)
    }
}

/// EOPNOTSUPP (95), or ENOSYS (38) from a kernel without fallocate.
fn is_unsupported(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(95 | 38))
}

impl crate::Engine {
    /// Bytes the catalog holds allocated past the end of its file: its metadata reserve.
    pub fn catalog_reserve(&self) -> u64 {
        self.inner.catalog.reserve_held()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::file::FileStorage;
    use crate::storage::mem::MemStorage;
    use crate::storage::Storage;

    #[test]
    fn keeps_the_reserve_past_the_end_through_growth_and_shrink() {
        let dir = tempfile::tempdir().unwrap();
        let storage = FileStorage::new(dir.path()).unwrap();
        let file = storage.open("catalog.redb", true).unwrap();
        let reserve = Reserve::new(file.clone());
        assert_eq!(file.len().unwrap(), 0, "the length redb sees is untouched");
        assert_eq!(reserve.held(), MIN_RESERVE);
        assert!(file.allocated_bytes().unwrap() >= MIN_RESERVE);
        // redb doubles its file: the new part was reserved, and the reserve follows the length.
        reserve.set_len(48 << 20).unwrap();
        assert_eq!(file.len().unwrap(), 48 << 20);
        assert_eq!(reserve.held(), 48 << 20);
        assert!(file.allocated_bytes().unwrap() >= 96 << 20);
        // A shrink frees the blocks past the new end; the reserve takes them back at once.
        reserve.set_len(1 << 20).unwrap();
        assert_eq!(reserve.held(), MIN_RESERVE);
        assert!(file.allocated_bytes().unwrap() >= MIN_RESERVE + (1 << 20));
        assert!(reserve.check_room().is_ok());
    }

    #[test]
    fn no_reserve_and_no_refusal_where_fallocate_is_unsupported() {
        let storage = MemStorage::new();
        let reserve = Reserve::new(storage.open("catalog.redb", true).unwrap());
        assert_eq!(reserve.held(), 0);
        assert!(reserve.top_up());
        assert!(reserve.check_room().is_ok());
    }
}
