//! The pass-through file system: every operation is done on the same path under the backing
//! directory, after [`Faults::check`] has had its say.
//!
//! Inodes are paths: inode numbers are handed out per relative path at lookup and follow
//! renames, so the kernel's inode for a name stays the same while the name exists (a bound unix
//! socket is found by its inode). Open files are real file descriptors on the backing files.
//!
//! Every file is opened `FOPEN_DIRECT_IO` and attributes are never cached (TTL 0): with the
//! kernel's page cache in front, a read could be answered without asking us, so an injected
//! read error would not reach the program under test, and `st_blocks` would go stale. Writes
//! without direct I/O would also reach us synchronously (FUSE without `writeback_cache` writes
//! through), but reads would not.

use crate::faults::{Faults, Op};
use fuser::{
    CopyFileRangeFlags, Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation,
    INodeNo, KernelConfig, LockOwner, OpenFlags, RenameFlags, ReplyAttr, ReplyCreate, ReplyData,
    ReplyDirectory, ReplyEmpty, ReplyEntry, ReplyLseek, ReplyOpen, ReplyStatfs, ReplyWrite,
    Request, TimeOrNow, WriteFlags,
};
use rustix::fs::{FallocateFlags, Mode, OFlags, SeekFrom, Timespec, Timestamps};
use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs::File;
use std::io;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Never cache: see the module header.
const TTL: Duration = Duration::ZERO;

/// Inode numbers ↔ paths relative to the backing directory (the root is the empty path).
#[derive(Debug)]
struct Inodes {
    by_ino: HashMap<u64, PathBuf>,
    by_path: HashMap<PathBuf, u64>,
    next: u64,
}

impl Inodes {
    fn ino_for(&mut self, rel: &Path) -> u64 {
        if let Some(&ino) = self.by_path.get(rel) {
            return ino;
        }
        let ino = self.next;
        self.next += 1;
        self.by_ino.insert(ino, rel.to_path_buf());
        self.by_path.insert(rel.to_path_buf(), ino);
        ino
    }

    fn forget_path(&mut self, rel: &Path) {
        if let Some(ino) = self.by_path.remove(rel) {
            self.by_ino.remove(&ino);
        }
    }

    /// A rename moves the inode, and every inode below it when it is a directory.
    fn rename(&mut self, from: &Path, to: &Path) {
        self.forget_path(to);
        let moved: Vec<(PathBuf, u64)> = self
            .by_path
            .iter()
            .filter(|(p, _)| p.starts_with(from))
            .map(|(p, &i)| (p.clone(), i))
            .collect();
        for (old, ino) in moved {
            let new = match old.strip_prefix(from) {
                Ok(below) if !below.as_os_str().is_empty() => to.join(below),
                _ => to.to_path_buf(),
            };
            self.by_path.remove(&old);
            self.by_path.insert(new.clone(), ino);
            self.by_ino.insert(ino, new);
        }
    }
}

/// One open file: the backing descriptor, and the name it was opened under (for the rules,
/// should the inode lose its name to an unlink).
#[derive(Debug)]
struct Open {
    file: File,
    name: String,
}

/// The file system (see the module header).
#[derive(Debug)]
pub struct FaultFs {
    backing: PathBuf,
    faults: Arc<Faults>,
    inodes: Mutex<Inodes>,
    files: Mutex<HashMap<u64, Arc<Open>>>,
    next_fh: AtomicU64,
}

fn errno(e: io::Error) -> Errno {
    Errno::from(e)
}

fn rerr(e: rustix::io::Errno) -> Errno {
    Errno::from_i32(e.raw_os_error())
}

fn time(secs: i64, nsecs: i64) -> SystemTime {
    let nanos = u32::try_from(nsecs).unwrap_or(0);
    match u64::try_from(secs) {
        Ok(s) => UNIX_EPOCH + Duration::new(s, nanos),
        Err(_) => UNIX_EPOCH,
    }
}

fn attr(ino: u64, m: &std::fs::Metadata) -> FileAttr {
    let ft = m.file_type();
    let kind = FileType::from_std(ft).unwrap_or(FileType::RegularFile);
    FileAttr {
        ino: INodeNo(ino),
        size: m.len(),
        blocks: m.blocks(),
        atime: time(m.atime(), m.atime_nsec()),
        mtime: time(m.mtime(), m.mtime_nsec()),
        ctime: time(m.ctime(), m.ctime_nsec()),
        crtime: time(m.ctime(), m.ctime_nsec()),
        kind,
        perm: u16::try_from(m.mode() & 0o7777).unwrap_or(0o600),
        nlink: u32::try_from(m.nlink()).unwrap_or(u32::MAX),
        uid: m.uid(),
        gid: m.gid(),
        rdev: u32::try_from(m.rdev()).unwrap_or(0),
        blksize: u32::try_from(m.blksize()).unwrap_or(4096),
        flags: 0,
    }
}

/// Flag words come from the kernel as `i32`; the bits are what matter.
fn bits(flags: i32) -> u32 {
    u32::from_ne_bytes(flags.to_ne_bytes())
}

/// The rules match on a file's last path component; the root directory is ".".
fn base_name(rel: &Path) -> String {
    rel.file_name()
        .map_or_else(|| ".".to_owned(), |n| n.to_string_lossy().into_owned())
}

fn timestamp(t: Option<TimeOrNow>) -> Timespec {
    match t {
        None => Timespec {
            tv_sec: 0,
            tv_nsec: rustix::fs::UTIME_OMIT,
        },
        Some(TimeOrNow::Now) => Timespec {
            tv_sec: 0,
            tv_nsec: rustix::fs::UTIME_NOW,
        },
        Some(TimeOrNow::SpecificTime(t)) => {
            let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
            Timespec {
                tv_sec: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
                tv_nsec: i64::from(d.subsec_nanos()),
            }
        }
    }
}

impl FaultFs {
    pub fn new(backing: &Path, faults: Arc<Faults>) -> FaultFs {
        let mut inodes = Inodes {
            by_ino: HashMap::new(),
            by_path: HashMap::new(),
            next: 2,
        };
        inodes.by_ino.insert(1, PathBuf::new());
        inodes.by_path.insert(PathBuf::new(), 1);
        FaultFs {
            backing: backing.to_path_buf(),
            faults,
            inodes: Mutex::new(inodes),
            files: Mutex::new(HashMap::new()),
            next_fh: AtomicU64::new(1),
        }
    }

    fn inodes(&self) -> std::sync::MutexGuard<'_, Inodes> {
        self.inodes.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn rel(&self, ino: INodeNo) -> Result<PathBuf, Errno> {
        self.inodes()
            .by_ino
            .get(&ino.0)
            .cloned()
            .ok_or(Errno::ENOENT)
    }

    fn child(&self, parent: INodeNo, name: &OsStr) -> Result<PathBuf, Errno> {
        Ok(self.rel(parent)?.join(name))
    }

    fn real(&self, rel: &Path) -> PathBuf {
        self.backing.join(rel)
    }

    fn open_file(&self, fh: FileHandle) -> Result<Arc<Open>, Errno> {
        self.files
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&fh.0)
            .cloned()
            .ok_or(Errno::EBADF)
    }

    /// The name the rules see for an open file: its current name, else the one it was opened
    /// under.
    fn name_of(&self, ino: INodeNo, open: &Open) -> String {
        self.rel(ino)
            .map_or_else(|_| open.name.clone(), |rel| base_name(&rel))
    }

    /// Applies the rules: sleeps for a delay, then fails or lets the operation run.
    fn gate(&self, op: Op, name: &str) -> Result<(), Errno> {
        let v = self.faults.check(op, name);
        if !v.delay.is_zero() {
            std::thread::sleep(v.delay);
        }
        match v.errno {
            Some(e) => Err(Errno::from_i32(e)),
            None => Ok(()),
        }
    }

    fn entry(&self, rel: &Path) -> Result<FileAttr, Errno> {
        let m = std::fs::symlink_metadata(self.real(rel)).map_err(errno)?;
        let ino = self.inodes().ino_for(rel);
        Ok(attr(ino, &m))
    }

    fn register(&self, file: File, rel: &Path) -> FileHandle {
        let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
        let open = Arc::new(Open {
            file,
            name: base_name(rel),
        });
        self.files
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(fh, open);
        FileHandle(fh)
    }

    /// The backing file opened with the caller's flags, minus what must not reach it: O_DIRECT
    /// (the FUSE side already bypasses the cache; tmpfs may refuse it) and the creation flags
    /// the kernel has handled.
    fn open_backing(&self, rel: &Path, flags: i32, create_mode: Option<u32>) -> io::Result<File> {
        let mut oflags = (OFlags::from_bits_retain(bits(flags)) - OFlags::DIRECT - OFlags::NOCTTY)
            | OFlags::CLOEXEC;
        let mode = match create_mode {
            Some(m) => {
                oflags |= OFlags::CREATE;
                Mode::from_bits_truncate(m)
            }
            None => {
                oflags -= OFlags::CREATE | OFlags::EXCL | OFlags::TRUNC;
                Mode::empty()
            }
        };
        let fd = rustix::fs::open(self.real(rel), oflags, mode)?;
        Ok(File::from(fd))
    }

    /// Runs a closure on an open file (by handle) or else on the path.
    fn with_file<T>(
        &self,
        ino: INodeNo,
        fh: Option<FileHandle>,
        f: impl FnOnce(&File) -> io::Result<T>,
    ) -> Result<T, Errno> {
        if let Some(fh) = fh {
            if let Ok(open) = self.open_file(fh) {
                return f(&open.file).map_err(errno);
            }
        }
        let rel = self.rel(ino)?;
        let file = rustix::fs::open(
            self.real(&rel),
            OFlags::PATH | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map(File::from)
        .map_err(rerr)?;
        f(&file).map_err(errno)
    }

    // The FUSE request's fields, one by one, as `Filesystem::setattr` has them.
    #[allow(clippy::too_many_arguments)]
    fn setattr_inner(
        &self,
        ino: INodeNo,
        fh: Option<FileHandle>,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
    ) -> Result<FileAttr, Errno> {
        let rel = self.rel(ino)?;
        let real = self.real(&rel);
        if let Some(mode) = mode {
            rustix::fs::chmod(&real, Mode::from_bits_truncate(mode & 0o7777)).map_err(rerr)?;
        }
        if uid.is_some() || gid.is_some() {
            rustix::fs::chownat(
                rustix::fs::CWD,
                &real,
                uid.map(rustix::fs::Uid::from_raw),
                gid.map(rustix::fs::Gid::from_raw),
                rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
            )
            .map_err(rerr)?;
        }
        if let Some(size) = size {
            match fh.and_then(|fh| self.open_file(fh).ok()) {
                Some(open) => open.file.set_len(size).map_err(errno)?,
                None => std::fs::OpenOptions::new()
                    .write(true)
                    .open(&real)
                    .and_then(|f| f.set_len(size))
                    .map_err(errno)?,
            }
        }
        if atime.is_some() || mtime.is_some() {
            let times = Timestamps {
                last_access: timestamp(atime),
                last_modification: timestamp(mtime),
            };
            rustix::fs::utimensat(
                rustix::fs::CWD,
                &real,
                &times,
                rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
            )
            .map_err(rerr)?;
        }
        let m = self.with_file(ino, fh, |f| f.metadata())?;
        Ok(attr(ino.0, &m))
    }
}

fn reply_empty(reply: ReplyEmpty, r: Result<(), Errno>) {
    match r {
        Ok(()) => reply.ok(),
        Err(e) => reply.error(e),
    }
}

fn reply_entry(reply: ReplyEntry, r: Result<FileAttr, Errno>) {
    match r {
        Ok(a) => reply.entry(&TTL, &a, Generation(0)),
        Err(e) => reply.error(e),
    }
}

impl Filesystem for FaultFs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> io::Result<()> {
        // Large requests: the engine moves whole tracks (up to 1 MiB) at a time.
        let _ = config.set_max_write(1 << 20);
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        reply_entry(reply, self.child(parent, name).and_then(|r| self.entry(&r)));
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, fh: Option<FileHandle>, reply: ReplyAttr) {
        let r = match fh.and_then(|fh| self.open_file(fh).ok()) {
            Some(open) => open.file.metadata().map_err(errno),
            None => self
                .rel(ino)
                .and_then(|rel| std::fs::symlink_metadata(self.real(&rel)).map_err(errno)),
        };
        match r {
            Ok(m) => reply.attr(&TTL, &attr(ino.0, &m)),
            Err(e) => reply.error(e),
        }
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        match self.setattr_inner(ino, fh, mode, uid, gid, size, atime, mtime) {
            Ok(a) => reply.attr(&TTL, &a),
            Err(e) => reply.error(e),
        }
    }

    fn mknod(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        rdev: u32,
        reply: ReplyEntry,
    ) {
        // The daemon binds its API socket in the data directory: bind(2) makes the node here.
        let r = self.child(parent, name).and_then(|rel| {
            let kind = rustix::fs::FileType::from_raw_mode(mode);
            rustix::fs::mknodat(
                rustix::fs::CWD,
                self.real(&rel),
                kind,
                Mode::from_bits_truncate(mode & !umask & 0o7777),
                u64::from(rdev),
            )
            .map_err(rerr)?;
            self.entry(&rel)
        });
        reply_entry(reply, r);
    }

    fn mkdir(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        reply: ReplyEntry,
    ) {
        let r = self.child(parent, name).and_then(|rel| {
            rustix::fs::mkdir(
                self.real(&rel),
                Mode::from_bits_truncate(mode & !umask & 0o7777),
            )
            .map_err(rerr)?;
            self.entry(&rel)
        });
        reply_entry(reply, r);
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let r = self.child(parent, name).and_then(|rel| {
            std::fs::remove_file(self.real(&rel)).map_err(errno)?;
            self.inodes().forget_path(&rel);
            Ok(())
        });
        reply_empty(reply, r);
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let r = self.child(parent, name).and_then(|rel| {
            std::fs::remove_dir(self.real(&rel)).map_err(errno)?;
            self.inodes().forget_path(&rel);
            Ok(())
        });
        reply_empty(reply, r);
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        let r = (|| {
            let from = self.child(parent, name)?;
            let to = self.child(newparent, newname)?;
            let flags = rustix::fs::RenameFlags::from_bits_retain(flags.bits());
            rustix::fs::renameat_with(
                rustix::fs::CWD,
                self.real(&from),
                rustix::fs::CWD,
                self.real(&to),
                flags,
            )
            .map_err(rerr)?;
            self.inodes().rename(&from, &to);
            Ok(())
        })();
        reply_empty(reply, r);
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let r = self.rel(ino).and_then(|rel| {
            let file = self.open_backing(&rel, flags.0, None).map_err(errno)?;
            Ok(self.register(file, &rel))
        });
        match r {
            Ok(fh) => reply.opened(
                fh,
                FopenFlags::FOPEN_DIRECT_IO | FopenFlags::FOPEN_PARALLEL_DIRECT_WRITES,
            ),
            Err(e) => reply.error(e),
        }
    }

    fn create(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        let r = self.child(parent, name).and_then(|rel| {
            let file = self
                .open_backing(&rel, flags, Some(mode & !umask & 0o7777))
                .map_err(errno)?;
            let a = attr(
                self.inodes().ino_for(&rel),
                &file.metadata().map_err(errno)?,
            );
            Ok((a, self.register(file, &rel)))
        });
        match r {
            Ok((a, fh)) => reply.created(
                &TTL,
                &a,
                Generation(0),
                fh,
                FopenFlags::FOPEN_DIRECT_IO | FopenFlags::FOPEN_PARALLEL_DIRECT_WRITES,
            ),
            Err(e) => reply.error(e),
        }
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let r = (|| {
            let open = self.open_file(fh)?;
            self.gate(Op::Read, &self.name_of(ino, &open))?;
            let mut buf = vec![0u8; size as usize];
            let mut done = 0;
            while done < buf.len() {
                match open.file.read_at(&mut buf[done..], offset + done as u64) {
                    Ok(0) => break,
                    Ok(n) => done += n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(errno(e)),
                }
            }
            buf.truncate(done);
            Ok(buf)
        })();
        match r {
            Ok(buf) => reply.data(&buf),
            Err(e) => reply.error(e),
        }
    }

    fn write(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        let r = (|| {
            let open = self.open_file(fh)?;
            self.gate(Op::Write, &self.name_of(ino, &open))?;
            // O_APPEND backing files append whatever the offset (the kernel's idea of the end
            // may be stale): pwrite(2) on Linux ignores the offset for them.
            open.file.write_all_at(data, offset).map_err(errno)?;
            Ok(u32::try_from(data.len()).unwrap_or(u32::MAX))
        })();
        match r {
            Ok(n) => reply.written(n),
            Err(e) => reply.error(e),
        }
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        // close(2): nothing is buffered here, so nothing to write back.
        reply.ok();
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        self.files
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&fh.0);
        reply.ok();
    }

    fn fsync(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        datasync: bool,
        reply: ReplyEmpty,
    ) {
        let r = (|| {
            let open = self.open_file(fh)?;
            self.gate(Op::Fsync, &self.name_of(ino, &open))?;
            if datasync {
                open.file.sync_data().map_err(errno)
            } else {
                open.file.sync_all().map_err(errno)
            }
        })();
        reply_empty(reply, r);
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        let r = self.rel(ino).and_then(|rel| {
            let dir = File::open(self.real(&rel)).map_err(errno)?;
            Ok(self.register(dir, &rel))
        });
        match r {
            Ok(fh) => reply.opened(fh, FopenFlags::empty()),
            Err(e) => reply.error(e),
        }
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let r = (|| {
            let rel = self.rel(ino)?;
            let mut entries = vec![
                (ino.0, FileType::Directory, ".".into()),
                (1, FileType::Directory, "..".into()),
            ];
            for e in std::fs::read_dir(self.real(&rel)).map_err(errno)? {
                let e = e.map_err(errno)?;
                let kind = e
                    .file_type()
                    .ok()
                    .and_then(FileType::from_std)
                    .unwrap_or(FileType::RegularFile);
                let child = self.inodes().ino_for(&rel.join(e.file_name()));
                entries.push((child, kind, e.file_name()));
            }
            Ok(entries)
        })();
        match r {
            Ok(entries) => {
                for (i, (ino, kind, name)) in entries
                    .into_iter()
                    .enumerate()
                    .skip(usize::try_from(offset).unwrap_or(usize::MAX))
                {
                    if reply.add(INodeNo(ino), i as u64 + 1, kind, name) {
                        break;
                    }
                }
                reply.ok();
            }
            Err(e) => reply.error(e),
        }
    }

    fn releasedir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        self.files
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&fh.0);
        reply.ok();
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        let r = (|| {
            let open = self.open_file(fh)?;
            self.gate(Op::Fsync, &self.name_of(ino, &open))?;
            open.file.sync_all().map_err(errno)
        })();
        reply_empty(reply, r);
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        // The backing file system's figures: the daemon checks free space with statvfs.
        match rustix::fs::statvfs(&self.backing) {
            Ok(s) => reply.statfs(
                s.f_blocks,
                s.f_bfree,
                s.f_bavail,
                s.f_files,
                s.f_ffree,
                u32::try_from(s.f_bsize).unwrap_or(4096),
                u32::try_from(s.f_namemax).unwrap_or(255),
                u32::try_from(s.f_frsize).unwrap_or(4096),
            ),
            Err(e) => reply.error(rerr(e)),
        }
    }

    fn access(&self, _req: &Request, _ino: INodeNo, _mask: fuser::AccessFlags, reply: ReplyEmpty) {
        reply.ok();
    }

    fn fallocate(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        let r = (|| {
            let open = self.open_file(fh)?;
            let flags = FallocateFlags::from_bits_retain(bits(mode));
            // Punching a hole frees space: a full disk never refuses it.
            if !flags.contains(FallocateFlags::PUNCH_HOLE) {
                self.gate(Op::Write, &self.name_of(ino, &open))?;
            }
            rustix::fs::fallocate(&open.file, flags, offset, length).map_err(rerr)
        })();
        reply_empty(reply, r);
    }

    fn lseek(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: i64,
        whence: i32,
        reply: ReplyLseek,
    ) {
        // The kernel asks only for SEEK_DATA and SEEK_HOLE; the others it answers itself.
        let r = (|| {
            let open = self.open_file(fh)?;
            let off = u64::try_from(offset).map_err(|_| Errno::EINVAL)?;
            let pos = match whence {
                3 => SeekFrom::Data(off),
                4 => SeekFrom::Hole(off),
                0 => SeekFrom::Start(off),
                _ => return Err(Errno::EINVAL),
            };
            let to = rustix::fs::seek(&open.file, pos).map_err(rerr)?;
            i64::try_from(to).map_err(|_| Errno::EOVERFLOW)
        })();
        match r {
            Ok(to) => reply.offset(to),
            Err(e) => reply.error(e),
        }
    }

    fn copy_file_range(
        &self,
        _req: &Request,
        ino_in: INodeNo,
        fh_in: FileHandle,
        offset_in: u64,
        ino_out: INodeNo,
        fh_out: FileHandle,
        offset_out: u64,
        len: u64,
        _flags: CopyFileRangeFlags,
        reply: ReplyWrite,
    ) {
        // Done here (rather than refused, which makes the kernel fall back to splicing through
        // read and write) so that the copy is one request whose both ends obey the rules.
        let r = (|| {
            let input = self.open_file(fh_in)?;
            let output = self.open_file(fh_out)?;
            self.gate(Op::Read, &self.name_of(ino_in, &input))?;
            self.gate(Op::Write, &self.name_of(ino_out, &output))?;
            let (mut off_in, mut off_out) = (offset_in, offset_out);
            let want = usize::try_from(len.min(u64::from(u32::MAX) & !0xfff)).unwrap_or(1 << 30);
            let n = rustix::fs::copy_file_range(
                &input.file,
                Some(&mut off_in),
                &output.file,
                Some(&mut off_out),
                want,
            )
            .map_err(rerr)?;
            u32::try_from(n).map_err(|_| Errno::EOVERFLOW)
        })();
        match r {
            Ok(n) => reply.written(n),
            Err(e) => reply.error(e),
        }
    }
}
