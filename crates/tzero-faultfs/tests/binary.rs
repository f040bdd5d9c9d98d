//! The `tzero-faultfs` binary end to end, with plain file operations: everything passes
//! through to the backing directory (holes, fallocate modes, SEEK_DATA/SEEK_HOLE,
//! copy_file_range, renames of files and directories, readdir, a unix socket), each kind of fault reaches the caller with its
//! errno, a count-limited rule runs out, a delay delays, and SIGTERM unmounts.
//!
//! Needs /dev/fuse and root (or `fusermount3`); under `CI=true` a mount failure fails the test.

use rustix::fs::{FallocateFlags, SeekFrom};
use std::fs::{File, OpenOptions};
use std::io::{ErrorKind, Write};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v.eq_ignore_ascii_case("true") || v == "1")
}

fn mounted(path: &Path) -> bool {
    let path = path.canonicalize().expect("canonical mount point");
    std::fs::read_to_string("/proc/self/mountinfo")
        .expect("mountinfo")
        .lines()
        .any(|l| l.split(' ').nth(4) == path.to_str())
}

/// The binary, killed (and the mount detached) if the test panics.
struct Running {
    child: Child,
    mountpoint: std::path::PathBuf,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if mounted(&self.mountpoint) {
            let _ = tzero_faultfs::lazy_unmount(&self.mountpoint);
        }
    }
}

fn errno_of(e: &std::io::Error) -> i32 {
    e.raw_os_error().unwrap_or(0)
}

#[test]
fn binary_passes_through_and_injects_faults() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (mnt, backing, control) = (
        tmp.path().join("mnt"),
        tmp.path().join("backing"),
        tmp.path().join("control.sock"),
    );
    std::fs::create_dir_all(&mnt).expect("mountpoint");
    let child = Command::new(env!("CARGO_BIN_EXE_tzero-faultfs"))
        .arg(&mnt)
        .arg(&backing)
        .arg(&control)
        .spawn()
        .expect("spawn tzero-faultfs");
    let mut running = Running {
        child,
        mountpoint: mnt.clone(),
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while !(control.exists() && mounted(&mnt)) {
        if let Some(status) = running.child.try_wait().expect("wait") {
            assert!(
                !in_ci(),
                "tzero-faultfs exited with {status}: under CI=true this fails"
            );
            eprintln!("!!!!!!!! SKIPPED: tzero-faultfs cannot mount here ({status}) !!!!!!!!");
            return;
        }
        assert!(Instant::now() < deadline, "not mounted after 10 s");
        std::thread::sleep(Duration::from_millis(20));
    }
    let send = |cmd: &str| tzero_faultfs::send(&control, cmd).expect(cmd);

    // Pass-through: sparse writes, holes, fallocate modes, SEEK_DATA/SEEK_HOLE.
    let path = mnt.join("vol.img");
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .expect("create");
    f.set_len(1 << 20).expect("truncate");
    f.write_all_at(&[7u8; 8192], 65536).expect("write");
    assert_eq!(
        rustix::fs::seek(&f, SeekFrom::Data(0)).expect("SEEK_DATA"),
        65536
    );
    assert_eq!(
        rustix::fs::seek(&f, SeekFrom::Hole(65536)).expect("SEEK_HOLE"),
        65536 + 8192
    );
    rustix::fs::fallocate(&f, FallocateFlags::KEEP_SIZE, 1 << 20, 1 << 20).expect("KEEP_SIZE");
    assert_eq!(f.metadata().expect("stat").len(), 1 << 20, "size kept");
    rustix::fs::fallocate(
        &f,
        FallocateFlags::PUNCH_HOLE | FallocateFlags::KEEP_SIZE,
        65536,
        4096,
    )
    .expect("PUNCH_HOLE");
    let mut buf = [1u8; 4096];
    f.read_exact_at(&mut buf, 65536).expect("read");
    assert_eq!(buf, [0u8; 4096], "punched");
    let backing_meta = std::fs::metadata(backing.join("vol.img")).expect("backing file");
    assert_eq!(backing_meta.len(), 1 << 20);
    assert!(backing_meta.blocks() > 0);

    // copy_file_range between two files of the mount, then a rename.
    let copy = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(mnt.join("copy.tmp"))
        .expect("create copy");
    let (mut off_in, mut off_out) = (69632u64, 0u64);
    let n = rustix::fs::copy_file_range(&f, Some(&mut off_in), &copy, Some(&mut off_out), 4096)
        .expect("copy_file_range");
    assert_eq!(n, 4096);
    std::fs::rename(mnt.join("copy.tmp"), mnt.join("copy.img")).expect("rename");
    assert_eq!(
        std::fs::read(backing.join("copy.img")).expect("renamed"),
        vec![7u8; 4096]
    );

    // A directory renamed keeps what is in it; readdir lists through the mount.
    std::fs::create_dir(mnt.join("d")).expect("mkdir");
    std::fs::write(mnt.join("d").join("f"), b"in d").expect("write d/f");
    std::fs::rename(mnt.join("d"), mnt.join("e")).expect("rename dir");
    assert_eq!(
        std::fs::read(mnt.join("e").join("f")).expect("e/f"),
        b"in d"
    );
    let mut names: Vec<String> = std::fs::read_dir(&mnt)
        .expect("readdir")
        .map(|e| e.expect("entry").file_name().into_string().expect("utf-8"))
        .collect();
    names.sort();
    assert_eq!(names, ["copy.img", "e", "vol.img"]);
    std::fs::remove_file(mnt.join("e").join("f")).expect("unlink");
    std::fs::remove_dir(mnt.join("e")).expect("rmdir");

    // A unix socket bound on the mount accepts connections through it.
    let listener = UnixListener::bind(mnt.join("api.sock")).expect("bind");
    let _client = UnixStream::connect(mnt.join("api.sock")).expect("connect");
    listener.accept().expect("accept");

    // Faults: EIO on read for one file only, ENOSPC on write once, EIO on fsync.
    send("fail read vol.img EIO");
    let e = f.read_exact_at(&mut buf, 0).expect_err("read must fail");
    assert_eq!(errno_of(&e), 5, "{e}");
    assert_eq!(
        std::fs::read(mnt.join("copy.img"))
            .expect("other file")
            .len(),
        4096
    );
    send("clear");
    f.read_exact_at(&mut buf, 0).expect("read after clear");

    send("fail write *.img ENOSPC 1");
    let e = f.write_all_at(&[1u8; 512], 0).expect_err("write must fail");
    assert_eq!(e.kind(), ErrorKind::StorageFull, "{e}");
    f.write_all_at(&[1u8; 512], 0).expect("the count ran out");
    send("fail fsync vol.img EIO");
    assert_eq!(errno_of(&f.sync_data().expect_err("fdatasync")), 5);
    copy.sync_all().expect("another file's fsync");
    send("clear");

    send("delay fsync * 200");
    let start = Instant::now();
    f.sync_all().expect("fsync");
    assert!(start.elapsed() >= Duration::from_millis(200), "not delayed");
    let hits: u64 = send("hits").parse().expect("hits");
    assert_eq!(hits, 4, "{}", send("list"));
    assert!(tzero_faultfs::send(&control, "fail nosuchop x EIO").is_err());

    let mut log = File::create(mnt.join("log")).expect("create log");
    log.write_all(b"bye\n").expect("write log");
    drop((f, copy, log));

    // SIGTERM: the binary unmounts and exits 0.
    let pid = running.child.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill")
        .success());
    let status = running.child.wait().expect("wait");
    assert!(status.success(), "exit: {status}");
    assert!(!mounted(&mnt), "still mounted after SIGTERM");
    assert_eq!(
        std::fs::read(backing.join("log")).expect("backing log"),
        b"bye\n"
    );
}
