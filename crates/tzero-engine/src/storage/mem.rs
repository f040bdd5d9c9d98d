//! In-memory backend that models a power cut, for model and crash tests only.
//!
//! Every file keeps a durable image and a volatile overlay of pages written since the last
//! sync. [`MemStorage::power_cut`] throws the overlay away, page by page (optionally keeping a
//! random subset, as a disk cache that wrote some pages back would). [`MemStorage::arm`] cuts the
//! power after a given number of further mutating operations: from then on every operation
//! fails, so the engine sees a dead disk mid-step, exactly as at a real power loss.

use super::{BlockFile, Storage};
use parking_lot::Mutex;
use std::any::Any;
use std::collections::{BTreeMap, HashMap};
use std::io;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;

const PAGE: u64 = 4096;

#[derive(Debug, Default)]
struct Controls {
    /// Mutating operations left before the power goes; negative means never.
    budget: AtomicI64,
    dead: AtomicBool,
    /// Total pages (durable or volatile) allowed across all files; 0 means unlimited.
    page_limit: AtomicU64,
    pages_used: AtomicU64,
    /// A file whose new pages fail with ENOSPC, as if it lived on a full disk of its own.
    full_file: Mutex<Option<String>>,
}

impl Controls {
    fn tick(&self) -> io::Result<()> {
        if self.dead.load(Ordering::SeqCst) {
            return Err(io::Error::other("power is off"));
        }
        let armed = self.budget.load(Ordering::SeqCst) >= 0;
        if armed && self.budget.fetch_sub(1, Ordering::SeqCst) <= 0 {
            self.dead.store(true, Ordering::SeqCst);
            return Err(io::Error::other("power is off"));
        }
        Ok(())
    }
}

/// A namespace of in-memory files sharing one power supply.
#[derive(Debug)]
pub struct MemStorage {
    files: Mutex<HashMap<String, Arc<MemFile>>>,
    controls: Arc<Controls>,
}

impl Default for MemStorage {
    fn default() -> Self {
        Self::new()
    }
}

impl MemStorage {
    pub fn new() -> Self {
        let controls = Controls::default();
        controls.budget.store(-1, Ordering::SeqCst);
        MemStorage {
            files: Mutex::new(HashMap::new()),
            controls: Arc::new(controls),
        }
    }

    /// Cuts the power after `ops` more mutating operations (writes, syncs, truncates, punches).
    pub fn arm(&self, ops: i64) {
        self.controls.budget.store(ops, Ordering::SeqCst);
    }

    /// True once an armed power cut has happened.
    pub fn is_dead(&self) -> bool {
        self.controls.dead.load(Ordering::SeqCst)
    }

    /// Limits the pages all files may hold, to model a full disk.
    pub fn set_page_limit(&self, pages: u64) {
        self.controls.page_limit.store(pages, Ordering::SeqCst);
    }

    /// Makes allocations in file `name` fail with ENOSPC (None lifts it).
    pub fn set_full_file(&self, name: Option<&str>) {
        *self.controls.full_file.lock() = name.map(str::to_string);
    }

    /// Pages held by all files now.
    pub fn pages_used(&self) -> u64 {
        self.controls.pages_used.load(Ordering::SeqCst)
    }

    /// Loses what was not synced and turns the power back on. `keep` decides, per unsynced page
    /// (file name, page index), whether the disk happened to write it anyway.
    pub fn power_cut(&self, keep: &mut dyn FnMut(&str, u64) -> bool) {
        let files = self.files.lock();
        for (name, file) in files.iter() {
            file.drop_volatile(name, keep);
        }
        let used: u64 = files.values().map(|f| f.page_count()).sum();
        self.controls.pages_used.store(used, Ordering::SeqCst);
        self.controls.budget.store(-1, Ordering::SeqCst);
        self.controls.dead.store(false, Ordering::SeqCst);
    }
}

impl Storage for MemStorage {
    fn open(&self, name: &str, create: bool) -> io::Result<Arc<dyn BlockFile>> {
        let mut files = self.files.lock();
        if let Some(f) = files.get(name) {
            return Ok(f.clone());
        }
        if !create {
            return Err(io::Error::new(io::ErrorKind::NotFound, name.to_string()));
        }
        self.controls.tick()?;
        let f = Arc::new(MemFile {
            name: name.to_string(),
            state: Mutex::new(FileState::default()),
            controls: self.controls.clone(),
        });
        files.insert(name.to_string(), f.clone());
        Ok(f)
    }

    fn remove(&self, name: &str) -> io::Result<()> {
        self.controls.tick()?;
        if let Some(f) = self.files.lock().remove(name) {
            let pages = f.page_count();
            self.controls.pages_used.fetch_sub(pages, Ordering::SeqCst);
        }
        Ok(())
    }
}

#[derive(Debug, Default)]
struct FileState {
    durable: BTreeMap<u64, Box<[u8]>>,
    durable_len: u64,
    /// Pages changed since the last sync; `None` is a page punched out.
    volatile: BTreeMap<u64, Option<Box<[u8]>>>,
    len: u64,
}

impl FileState {
    fn page(&self, index: u64) -> Option<&[u8]> {
        match self.volatile.get(&index) {
            Some(v) => v.as_deref(),
            None => self.durable.get(&index).map(|p| &**p),
        }
    }
}

/// One in-memory file.
#[derive(Debug)]
pub struct MemFile {
    name: String,
    state: Mutex<FileState>,
    controls: Arc<Controls>,
}

impl MemFile {
    fn page_count(&self) -> u64 {
        let s = self.state.lock();
        let mut keys: std::collections::BTreeSet<u64> = s.durable.keys().copied().collect();
        keys.extend(s.volatile.keys().copied());
        keys.len() as u64
    }

    fn drop_volatile(&self, name: &str, keep: &mut dyn FnMut(&str, u64) -> bool) {
        let mut s = self.state.lock();
        let volatile = std::mem::take(&mut s.volatile);
        for (index, page) in volatile {
            if keep(name, index) {
                match page {
                    Some(p) => {
                        s.durable.insert(index, p);
                    }
                    None => {
                        s.durable.remove(&index);
                    }
                }
            }
        }
        s.len = s.durable_len;
        // Pages past the surviving length are gone with it, as on a real file system.
        let first_gone = s.len.div_ceil(PAGE);
        s.durable.retain(|index, _| *index < first_gone);
    }

    fn reserve_page(&self, s: &FileState, index: u64) -> io::Result<()> {
        if s.durable.contains_key(&index) || matches!(s.volatile.get(&index), Some(Some(_))) {
            return Ok(());
        }
        if self.controls.full_file.lock().as_deref() == Some(self.name.as_str()) {
            return Err(io::Error::from_raw_os_error(28));
        }
        let limit = self.controls.page_limit.load(Ordering::SeqCst);
        let used = self.controls.pages_used.fetch_add(1, Ordering::SeqCst);
        if limit != 0 && used >= limit {
            self.controls.pages_used.fetch_sub(1, Ordering::SeqCst);
            return Err(io::Error::from_raw_os_error(28));
        }
        Ok(())
    }
}

impl BlockFile for MemFile {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        if self.controls.dead.load(Ordering::SeqCst) {
            return Err(io::Error::other("power is off"));
        }
        let s = self.state.lock();
        let mut done = 0usize;
        while done < buf.len() {
            let pos = offset + done as u64;
            let index = pos / PAGE;
            let in_page = (pos % PAGE) as usize;
            let n = (PAGE as usize - in_page).min(buf.len() - done);
            let out = &mut buf[done..done + n];
            match s.page(index) {
                Some(p) if pos < s.len => out.copy_from_slice(&p[in_page..in_page + n]),
                _ => out.fill(0),
            }
            done += n;
        }
        Ok(())
    }

    fn write_at(&self, data: &[u8], offset: u64) -> io::Result<()> {
        self.controls.tick()?;
        let mut s = self.state.lock();
        let mut done = 0usize;
        while done < data.len() {
            let pos = offset + done as u64;
            let index = pos / PAGE;
            let in_page = (pos % PAGE) as usize;
            let n = (PAGE as usize - in_page).min(data.len() - done);
            self.reserve_page(&s, index)?;
            let mut page = match s.page(index) {
                Some(p) => p.to_vec().into_boxed_slice(),
                None => vec![0u8; PAGE as usize].into_boxed_slice(),
            };
            page[in_page..in_page + n].copy_from_slice(&data[done..done + n]);
            s.volatile.insert(index, Some(page));
            done += n;
        }
        let end = offset + data.len() as u64;
        if end > s.len {
            s.len = end;
        }
        Ok(())
    }

    fn sync(&self) -> io::Result<()> {
        self.controls.tick()?;
        let mut s = self.state.lock();
        let volatile = std::mem::take(&mut s.volatile);
        for (index, page) in volatile {
            match page {
                Some(p) => {
                    s.durable.insert(index, p);
                }
                None => {
                    s.durable.remove(&index);
                }
            }
        }
        s.durable_len = s.len;
        Ok(())
    }

    fn len(&self) -> io::Result<u64> {
        Ok(self.state.lock().len)
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.controls.tick()?;
        let mut s = self.state.lock();
        if len < s.len {
            let first_gone = len.div_ceil(PAGE);
            let gone: Vec<u64> = s
                .durable
                .range(first_gone..)
                .map(|(k, _)| *k)
                .chain(s.volatile.range(first_gone..).map(|(k, _)| *k))
                .collect();
            for index in gone {
                s.volatile.insert(index, None);
            }
        }
        s.len = len;
        Ok(())
    }

    fn punch_hole(&self, offset: u64, len: u64) -> io::Result<()> {
        self.controls.tick()?;
        let mut s = self.state.lock();
        let end = offset + len;
        let mut pos = offset;
        while pos < end {
            let index = pos / PAGE;
            let in_page = pos % PAGE;
            let n = (PAGE - in_page).min(end - pos);
            if in_page == 0 && n == PAGE {
                if s.page(index).is_some() {
                    s.volatile.insert(index, None);
                }
            } else if let Some(p) = s.page(index) {
                let mut page = p.to_vec().into_boxed_slice();
                page[in_page as usize..(in_page + n) as usize].fill(0);
                s.volatile.insert(index, Some(page));
            }
            pos += n;
        }
        Ok(())
    }

    fn next_data(&self, offset: u64, end: u64) -> io::Result<Option<(u64, u64)>> {
        let s = self.state.lock();
        let end = end.min(s.len);
        let mut pos = offset;
        let mut start = None;
        while pos < end {
            let index = pos / PAGE;
            let next = ((index + 1) * PAGE).min(end);
            let present = s.page(index).is_some();
            match (start, present) {
                (None, true) => start = Some(pos),
                (Some(st), false) => return Ok(Some((st, pos))),
                _ => {}
            }
            pos = next;
        }
        Ok(start.map(|st| (st, end)))
    }

    fn allocated_bytes(&self) -> io::Result<u64> {
        Ok(self.page_count() * PAGE)
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unsynced_writes_are_lost_on_power_cut() {
        let st = MemStorage::new();
        let f = st.open("a", true).unwrap();
        f.write_at(&[1u8; 100], 0).unwrap();
        f.sync().unwrap();
        f.write_at(&[2u8; 100], 50).unwrap();
        st.power_cut(&mut |_, _| false);
        let mut buf = [0u8; 150];
        f.read_at(&mut buf, 0).unwrap();
        assert_eq!(&buf[..100], &[1u8; 100]);
        assert_eq!(&buf[100..], &[0u8; 50]);
    }

    #[test]
    fn armed_power_cut_fails_later_operations() {
        let st = MemStorage::new();
        let f = st.open("a", true).unwrap();
        st.arm(1);
        f.write_at(&[1], 0).unwrap();
        assert!(f.sync().is_err());
        assert!(st.is_dead());
        st.power_cut(&mut |_, _| false);
        assert_eq!(f.len().unwrap(), 0);
    }
}
