//! One writer per registry: the daemon (and `--once`) hold an exclusive `flock(2)` on
//! `<registry>.lock` beside the database for their lifetime, with their pid in it.
//!
//! A lock file of its own, not the database: SQLite's POSIX locks on the database are
//! per process and dropped by closing any descriptor of it, while a `flock` belongs to
//! its one open file and goes only when the process ends or drops the [`Lock`]. The file
//! is never deleted (deleting it would let a second process lock a new inode while the
//! first still holds the old one).

use std::fs::File;
use std::io::{Read, Seek, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use super::RegistryError;

/// The held lock; released when dropped (or when the process ends, however it ends).
#[derive(Debug)]
pub struct Lock {
    _file: File,
    path: PathBuf,
}

impl Lock {
    /// The lock file of the registry at `registry`: `<registry>.lock`.
    pub fn path_for(registry: &Path) -> PathBuf {
        let mut name = registry.file_name().unwrap_or_default().to_os_string();
        name.push(".lock");
        registry.with_file_name(name)
    }

    /// Takes the lock without waiting: [`RegistryError::Held`] (naming the holder's
    /// pid) when another process has it.
    pub fn acquire(registry: &Path) -> Result<Lock, RegistryError> {
        let path = Lock::path_for(registry);
        let err = |source: std::io::Error| RegistryError::Lock {
            path: registry.to_path_buf(),
            lock: path.clone(),
            source,
        };
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&path)
            .map_err(err)?;
        // SAFETY: flock on a descriptor this function owns; no memory is involved.
        let r = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if r != 0 {
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() != Some(libc::EWOULDBLOCK) {
                return Err(err(e));
            }
            let mut pid = String::new();
            let _ = file.read_to_string(&mut pid);
            let pid = pid.trim();
            return Err(RegistryError::Held {
                path: registry.to_path_buf(),
                lock: path,
                pid: if pid.is_empty() { "unknown" } else { pid }.to_string(),
            });
        }
        file.set_len(0)
            .and_then(|()| file.rewind())
            .and_then(|()| writeln!(file, "{}", std::process::id()))
            .and_then(|()| file.flush())
            .map_err(err)?;
        Ok(Lock { _file: file, path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}
