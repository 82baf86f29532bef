//! The audit file: JSON lines appended to one file, rotated by size.
//!
//! When a line would take the file past `max_bytes`, the file is renamed `<name>.1` (an older
//! `<name>.1` becomes `<name>.2`, and so on) and a new file is started; at most `keep` rotated
//! files are kept, the oldest removed. Written by one thread only (see [`super`]), so no locks.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// An append-only file rotated by size.
#[derive(Debug)]
pub struct RotatingFile {
    path: PathBuf,
    max_bytes: u64,
    keep: u32,
    file: File,
    written: u64,
    rotations: u64,
}

impl RotatingFile {
    /// Opens (or creates) `path` for appending; its parent folder is created if missing.
    pub fn open(path: &Path, max_bytes: u64, keep: u32) -> io::Result<Self> {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent)?;
        }
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        let written = file.metadata()?.len();
        Ok(Self {
            path: path.to_path_buf(),
            max_bytes,
            keep,
            file,
            written,
            rotations: 0,
        })
    }

    /// The path of the current file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A duplicate handle of the current file (for syncing it from another thread).
    pub fn handle(&self) -> io::Result<File> {
        self.file.try_clone()
    }

    /// How many times the file was rotated since it was opened.
    pub fn rotations(&self) -> u64 {
        self.rotations
    }

    /// The path of the `n`th rotated file (`<name>.n`).
    pub fn rotated(&self, n: u32) -> PathBuf {
        let mut name = self.path.as_os_str().to_owned();
        name.push(format!(".{n}"));
        PathBuf::from(name)
    }

    /// Appends `line` and a newline, rotating first if it would not fit (a line longer than
    /// `max_bytes` gets a file of its own).
    pub fn write_line(&mut self, line: &str) -> io::Result<()> {
        let len = line.len() as u64 + 1;
        if self.written > 0 && self.written + len > self.max_bytes {
            self.rotate()?;
        }
        let mut bytes = Vec::with_capacity(line.len() + 1);
        bytes.extend_from_slice(line.as_bytes());
        bytes.push(b'\n');
        self.file.write_all(&bytes)?;
        self.written += len;
        Ok(())
    }

    /// Pushes what was written to the operating system and the disk.
    pub fn sync(&mut self) -> io::Result<()> {
        self.file.flush()?;
        self.file.sync_data()
    }

    /// Shifts the rotated files by one, the current file becoming `.1`, and starts a new one.
    fn rotate(&mut self) -> io::Result<()> {
        self.file.sync_data()?;
        if self.keep == 0 {
            std::fs::remove_file(&self.path)?;
        } else {
            let _ = std::fs::remove_file(self.rotated(self.keep));
            for n in (1..self.keep).rev() {
                let from = self.rotated(n);
                if from.exists() {
                    std::fs::rename(&from, self.rotated(n + 1))?;
                }
            }
            std::fs::rename(&self.path, self.rotated(1))?;
        }
        self.file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)?;
        self.written = 0;
        self.rotations += 1;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotates_by_size_and_keeps_n_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit/audit.jsonl");
        let mut file = RotatingFile::open(&path, 100, 2).unwrap();
        // 40 bytes a line (39 + newline): two lines a file.
        let line = |i: usize| format!("{i:039}");
        for i in 0..9 {
            file.write_line(&line(i)).unwrap();
        }
        file.sync().unwrap();
        let read = |p: PathBuf| std::fs::read_to_string(p).unwrap();
        assert_eq!(read(path.clone()), format!("{}\n", line(8)));
        assert_eq!(read(file.rotated(1)), format!("{}\n{}\n", line(6), line(7)));
        assert_eq!(read(file.rotated(2)), format!("{}\n{}\n", line(4), line(5)));
        assert!(!file.rotated(3).exists(), "only two rotated files are kept");
        for n in [1, 2] {
            assert!(std::fs::metadata(file.rotated(n)).unwrap().len() <= 100);
        }
        // Reopening appends and counts what is there.
        drop(file);
        let mut file = RotatingFile::open(&path, 100, 2).unwrap();
        file.write_line(&line(9)).unwrap();
        file.write_line(&line(10)).unwrap();
        assert_eq!(read(path.clone()), format!("{}\n", line(10)));
        assert_eq!(read(file.rotated(1)), format!("{}\n{}\n", line(8), line(9)));
    }

    #[test]
    fn keep_zero_keeps_only_the_current_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.jsonl");
        let mut file = RotatingFile::open(&path, 10, 0).unwrap();
        for i in 0..5 {
            file.write_line(&format!("line-{i}")).unwrap();
        }
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "line-4\n");
        assert!(!file.rotated(1).exists());
    }
}
