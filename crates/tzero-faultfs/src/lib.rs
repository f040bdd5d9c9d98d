//! A fault-injecting FUSE pass-through file system, for tests that put a real program's files
//! (here the tzero daemon's data directory) on a disk that fails when the test says so.
//!
//! [`Mounted::mount`] mounts a [`fs::FaultFs`] over `MOUNTPOINT`, passing every operation
//! through to the same path under `BACKING` (a directory on tmpfs or /tmp), and serves the
//! control socket. Dropping the [`Mounted`] unmounts (lazily, so a process still holding a file
//! cannot keep a stale mount alive), also when a test panics. The `tzero-faultfs` binary does
//! the same from the command line until SIGINT/SIGTERM.
//!
//! # Control protocol
//! A unix stream socket; one command per line, one reply line per command: `ok` (with a value
//! for `hits` and `list`) or `err MESSAGE`. A rule is in force once its `ok` is read.
//! ```text
//! fail OP GLOB ERRNO [COUNT]   OP fails with ERRNO (EIO, ENOSPC, EDQUOT, EROFS, EPERM)
//! delay OP GLOB MS [COUNT]     OP sleeps MS milliseconds first, then runs
//! clear                        drops every rule
//! hits                         how many operations were failed or delayed so far
//! list                         the rules, with their hits
//! ```
//! OP is `read`, `write` (also `fallocate` except hole punching, and the output of
//! `copy_file_range`), `fsync` (files and directories) or `any`. GLOB matches a file's last path
//! component (`*` and `?`; the root directory is `.`). COUNT limits a rule to its next COUNT
//! matches; without it the rule holds until `clear`. The first failing rule that matches wins;
//! delays add up.
//!
//! Passed through: lookup, getattr/setattr (mode, owner, size, times), mknod (sockets), mkdir,
//! unlink, rmdir, rename (with flags), open/create, read, write, fsync/fdatasync, opendir,
//! readdir, fsyncdir, statfs (the backing file system's figures), fallocate (every mode:
//! KEEP_SIZE, PUNCH_HOLE, ZERO_RANGE), lseek (SEEK_DATA/SEEK_HOLE) and copy_file_range. Locks
//! (`flock`, `fcntl`) are left to the kernel, which keeps them locally for a FUSE mount whose
//! server does not ask for them: enough for one daemon locking its data directory.

pub mod faults;
pub mod fs;

pub use faults::Faults;

use std::io::{self, BufRead, BufReader, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

/// Worker threads serving the kernel: a delayed fsync sleeps in its worker, and the others
/// must go on serving reads and writes meanwhile.
const THREADS: usize = 16;

/// A mounted fault file system and its control socket; unmounts when dropped.
pub struct Mounted {
    mountpoint: PathBuf,
    control: PathBuf,
    faults: Arc<Faults>,
    session: Option<fuser::BackgroundSession>,
    stop: Arc<AtomicBool>,
    server: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for Mounted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mounted")
            .field("mountpoint", &self.mountpoint)
            .field("control", &self.control)
            .finish_non_exhaustive()
    }
}

impl Mounted {
    /// Mounts over `mountpoint` (created if missing), passing through to `backing` (created if
    /// missing), with the control socket at `control`.
    pub fn mount(mountpoint: &Path, backing: &Path, control: &Path) -> io::Result<Mounted> {
        std::fs::create_dir_all(mountpoint)?;
        std::fs::create_dir_all(backing)?;
        let backing = backing.canonicalize()?;
        let faults = Arc::new(Faults::default());
        let fs = fs::FaultFs::new(&backing, Arc::clone(&faults));
        let mut config = fuser::Config::default();
        config.mount_options = vec![
            fuser::MountOption::FSName("tzero-faultfs".to_owned()),
            fuser::MountOption::Subtype("tzero-faultfs".to_owned()),
            fuser::MountOption::NoAtime,
        ];
        config.n_threads = Some(THREADS);
        config.clone_fd = true;
        let session = fuser::spawn_mount(fs, mountpoint, &config)?;

        let _ = std::fs::remove_file(control);
        let listener = UnixListener::bind(control)?;
        let stop = Arc::new(AtomicBool::new(false));
        let server = {
            let (faults, stop) = (Arc::clone(&faults), Arc::clone(&stop));
            std::thread::Builder::new()
                .name("faultfs-control".to_owned())
                .spawn(move || serve_control(&listener, &faults, &stop))?
        };
        Ok(Mounted {
            mountpoint: mountpoint.canonicalize()?,
            control: control.to_path_buf(),
            faults,
            session: Some(session),
            stop,
            server: Some(server),
        })
    }

    pub fn mountpoint(&self) -> &Path {
        &self.mountpoint
    }

    pub fn control_socket(&self) -> &Path {
        &self.control
    }

    /// The rules, for a caller in the same process (tests may also use [`send`]).
    pub fn faults(&self) -> &Faults {
        &self.faults
    }

    /// Unmounts now (what dropping does, with the error reported).
    pub fn unmount(mut self) -> io::Result<()> {
        self.teardown()
    }

    fn teardown(&mut self) -> io::Result<()> {
        let mut result = Ok(());
        if self.session.is_some() {
            result = lazy_unmount(&self.mountpoint);
            // Its own unmount finds nothing mounted; its threads end when the kernel closes
            // the connection (once the last file open on the detached mount is closed).
            drop(self.session.take());
        }
        if let Some(server) = self.server.take() {
            self.stop.store(true, Ordering::SeqCst);
            // Wake the accept loop so that it sees `stop`.
            let _ = UnixStream::connect(&self.control);
            let _ = server.join();
            let _ = std::fs::remove_file(&self.control);
        }
        result
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        if let Err(e) = self.teardown() {
            eprintln!("tzero-faultfs: unmount {}: {e}", self.mountpoint.display());
        }
    }
}

/// Detaches the mount now (MNT_DETACH): works while files are open, so a test that panics with
/// the daemon still running leaves no mount behind. As root with umount2(2), else through
/// `fusermount3 -u -z`.
pub fn lazy_unmount(mountpoint: &Path) -> io::Result<()> {
    match rustix::mount::unmount(mountpoint, rustix::mount::UnmountFlags::DETACH) {
        Ok(()) => Ok(()),
        Err(rustix::io::Errno::PERM) => {
            let status = std::process::Command::new("fusermount3")
                .args(["-u", "-z", "--"])
                .arg(mountpoint)
                .status()?;
            if status.success() {
                Ok(())
            } else {
                Err(io::Error::other(format!("fusermount3 -u -z: {status}")))
            }
        }
        Err(e) => Err(e.into()),
    }
}

fn serve_control(listener: &UnixListener, faults: &Arc<Faults>, stop: &Arc<AtomicBool>) {
    for conn in listener.incoming() {
        if stop.load(Ordering::SeqCst) {
            return;
        }
        let Ok(conn) = conn else { continue };
        let faults = Arc::clone(faults);
        // One thread per client: a client that keeps its connection open blocks no other.
        let _ = std::thread::Builder::new()
            .name("faultfs-client".to_owned())
            .spawn(move || serve_client(conn, &faults));
    }
}

fn serve_client(conn: UnixStream, faults: &Faults) {
    let Ok(mut out) = conn.try_clone() else {
        return;
    };
    for line in BufReader::new(conn).lines() {
        let Ok(line) = line else { return };
        if line.trim().is_empty() {
            continue;
        }
        let reply = match faults.command(&line) {
            Ok(v) if v.is_empty() => "ok\n".to_owned(),
            Ok(v) => format!("ok {v}\n"),
            Err(e) => format!("err {e}\n"),
        };
        if out.write_all(reply.as_bytes()).is_err() {
            return;
        }
    }
}

/// Sends one command over the control socket; returns what follows `ok` (empty for most
/// commands), or the `err` message as an error.
pub fn send(control: &Path, command: &str) -> io::Result<String> {
    let mut conn = UnixStream::connect(control)?;
    conn.write_all(format!("{command}\n").as_bytes())?;
    let mut line = String::new();
    BufReader::new(conn).read_line(&mut line)?;
    let line = line.trim_end();
    match line.strip_prefix("ok") {
        Some(rest) => Ok(rest.trim_start().to_owned()),
        None => Err(io::Error::other(format!("{command:?}: {line}"))),
    }
}
