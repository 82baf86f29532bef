//! A real small file system that fills up: a tmpfs of a given size mounted on a temporary
//! folder, for the tests that prove a full disk loses nothing acknowledged. Mounting needs
//! root (CAP_SYS_ADMIN), which the CI machine has; elsewhere [`SmallDisk::mount`] returns `None`
//! and the test says it was not run.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

/// A mounted tmpfs, unmounted on drop.
pub struct SmallDisk {
    _parent: tempfile::TempDir,
    path: PathBuf,
}

impl SmallDisk {
    /// Mounts a tmpfs of `bytes` on a fresh folder; `None` (with a line on stderr saying the
    /// test was not run) where this process may not mount.
    pub fn mount(bytes: u64, test: &str) -> Option<SmallDisk> {
        let parent = tempfile::tempdir().expect("a temporary folder");
        let path = parent.path().join("disk");
        std::fs::create_dir(&path).unwrap();
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={bytes}"), "tmpfs"])
            .arg(&path)
            .status();
        match status {
            Ok(s) if s.success() => Some(SmallDisk {
                _parent: parent,
                path,
            }),
            other => {
                eprintln!(
                    "NOT RUN: {test} needs to mount a {bytes}-byte tmpfs (root, CAP_SYS_ADMIN), \
                     which this process cannot ({other:?}); the injected-fault tests still ran"
                );
                None
            }
        }
    }

    /// The mounted folder.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Bytes still free on the file system.
    pub fn free_bytes(&self) -> u64 {
        fs4::statvfs(&self.path)
            .expect("statvfs of the small disk")
            .available_space()
    }

    /// Fills the file system (a filler file written until ENOSPC) and returns the filler's path;
    /// removing it frees the space again.
    pub fn fill(&self) -> PathBuf {
        use std::io::Write;
        let filler = self.path.join("filler");
        let mut file = std::fs::File::create(&filler).expect("create the filler");
        let block = vec![0xA5u8; 4096];
        while file.write_all(&block).is_ok() {}
        let _ = file.sync_all();
        filler
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
    }
}
