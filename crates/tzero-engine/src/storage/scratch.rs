//! Small real file systems mounted for tests (feature `test-util`): a tmpfs or a loop-mounted
//! ext4 of a few hundred MiB, so a test can fill the host file system for real, which the
//! in-memory backend only models. Unmounted when dropped.
//!
//! Mounting needs root. Under `CI=true` a failure to mount fails the test, so CI can never pass
//! by skipping; elsewhere [`ScratchFs::mount_or_skip`] says loudly that the test is skipped.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The kinds of file system a test can ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsKind {
    Tmpfs,
    /// ext4 with 4 KiB blocks (mkfs would pick 1 KiB for so small an image) in a loop device.
    Ext4,
}

/// A mounted scratch file system; unmounted (and its image deleted) when dropped.
#[derive(Debug)]
pub struct ScratchFs {
    mount_point: PathBuf,
    /// Holds the ext4 image; removed after the unmount.
    _image_dir: Option<tempfile_dir::Dir>,
}

/// A directory removed on drop, without a dependency on `tempfile` in the library.
mod tempfile_dir {
    use std::path::{Path, PathBuf};

    #[derive(Debug)]
    pub struct Dir(PathBuf);

    impl Dir {
        pub fn new(prefix: &str) -> std::io::Result<Dir> {
            let base = std::env::temp_dir();
            for n in 0u32.. {
                let path = base.join(format!("{prefix}-{}-{n}", std::process::id()));
                match std::fs::create_dir(&path) {
                    Ok(()) => return Ok(Dir(path)),
                    Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                    Err(e) => return Err(e),
                }
            }
            unreachable!("u32 names run out")
        }

        pub fn path(&self) -> &Path {
            &self.0
        }
    }

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

fn run(cmd: &mut Command) -> Result<(), String> {
    let out = cmd.output().map_err(|e| format!("{cmd:?}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{cmd:?}: {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

impl ScratchFs {
    /// Mounts a file system of `size_mib` MiB on `at` (created if missing).
    pub fn mount(kind: FsKind, size_mib: u64, at: &Path) -> Result<ScratchFs, String> {
        std::fs::create_dir_all(at).map_err(|e| format!("creating {}: {e}", at.display()))?;
        let image_dir = match kind {
            FsKind::Tmpfs => {
                run(Command::new("mount")
                    .args(["-t", "tmpfs", "-o", &format!("size={size_mib}m"), "tmpfs"])
                    .arg(at))?;
                None
            }
            FsKind::Ext4 => {
                let dir = tempfile_dir::Dir::new("tzero-ext4").map_err(|e| e.to_string())?;
                let image = dir.path().join("ext4.img");
                let file = std::fs::File::create(&image).map_err(|e| e.to_string())?;
                file.set_len(size_mib << 20).map_err(|e| e.to_string())?;
                run(Command::new("mkfs.ext4")
                    .args(["-q", "-F", "-b", "4096"])
                    .arg(&image))?;
                run(Command::new("mount")
                    .args(["-o", "loop"])
                    .arg(&image)
                    .arg(at))?;
                Some(dir)
            }
        };
        Ok(ScratchFs {
            mount_point: at.to_path_buf(),
            _image_dir: image_dir,
        })
    }

    /// [`ScratchFs::mount`], or None with a loud notice when mounting is not possible here.
    /// Under `CI=true` it panics instead: CI must run these tests.
    pub fn mount_or_skip(kind: FsKind, size_mib: u64, at: &Path) -> Option<ScratchFs> {
        match ScratchFs::mount(kind, size_mib, at) {
            Ok(fs) => Some(fs),
            Err(e) if std::env::var("CI").is_ok_and(|v| v == "true") => {
                panic!("cannot mount a scratch {kind:?} (CI=true, so this fails): {e}")
            }
            Err(e) => {
                eprintln!(
                    "!!!!!!!! SKIPPED: cannot mount a scratch {kind:?} (needs root and loop devices): {e} !!!!!!!!"
                );
                None
            }
        }
    }

    pub fn path(&self) -> &Path {
        &self.mount_point
    }
}

impl Drop for ScratchFs {
    fn drop(&mut self) {
        // A lazy unmount as a fallback: a test that failed may still hold a file open.
        if run(Command::new("umount").arg(&self.mount_point)).is_err() {
            let _ = run(Command::new("umount").arg("-l").arg(&self.mount_point));
        }
    }
}
