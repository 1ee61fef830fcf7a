//! Reading an input file (a service file, the agent's config) within a size limit: never
//! more than the limit + 1 bytes, and only a regular file — `/dev/zero` is refused at
//! once, a FIFO without waiting for a writer.

use std::io::Read;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::Path;

/// Why an input file was not read.
#[derive(Debug, thiserror::Error)]
pub enum InputError {
    #[error("{0}")]
    Io(#[source] std::io::Error),
    #[error("is {0}, not a regular file")]
    NotRegular(&'static str),
    #[error("file is larger than {limit} bytes, the most allowed")]
    TooLarge { limit: usize },
}

/// The contents of the regular file at `path`, at most `limit` bytes. The file is opened
/// non-blocking (so a FIFO does not wait for a writer), checked to be a regular file, and
/// read through a `limit + 1` byte window.
pub fn read_limited(path: &Path, limit: usize) -> Result<Vec<u8>, InputError> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
        .map_err(InputError::Io)?;
    let kind = file.metadata().map_err(InputError::Io)?.file_type();
    if !kind.is_file() {
        return Err(InputError::NotRegular(if kind.is_dir() {
            "a directory"
        } else if kind.is_fifo() {
            "a FIFO (named pipe)"
        } else if kind.is_char_device() {
            "a character device"
        } else if kind.is_block_device() {
            "a block device"
        } else if kind.is_socket() {
            "a socket"
        } else {
            "not a file"
        }));
    }
    let mut out = Vec::new();
    file.take(limit as u64 + 1)
        .read_to_end(&mut out)
        .map_err(InputError::Io)?;
    if out.len() > limit {
        return Err(InputError::TooLarge { limit });
    }
    Ok(out)
}

/// A secret must be readable by its owner only: a mode with any group or other bit for
/// reading is refused, with the reason.
pub fn check_secret_mode(mode: u32) -> Result<(), String> {
    let mode = mode & 0o7777;
    if mode & 0o044 != 0 {
        return Err(format!(
            "is readable by {} (mode {mode:04o}): a secret must be readable by its owner only (chmod 600)",
            match (mode & 0o040 != 0, mode & 0o004 != 0) {
                (true, true) => "its group and others",
                (true, false) => "its group",
                _ => "others",
            }
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dev_zero_a_fifo_and_a_directory_are_refused_at_once() {
        let start = std::time::Instant::now();
        let e = read_limited(Path::new("/dev/zero"), 1 << 20).unwrap_err();
        assert_eq!(e.to_string(), "is a character device, not a regular file");
        let d = tempfile::tempdir().unwrap();
        let fifo = d.path().join("fifo");
        let c = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).unwrap();
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let e = read_limited(&fifo, 1 << 20).unwrap_err();
        assert_eq!(e.to_string(), "is a FIFO (named pipe), not a regular file");
        let e = read_limited(d.path(), 1 << 20).unwrap_err();
        assert_eq!(e.to_string(), "is a directory, not a regular file");
        assert!(start.elapsed() < std::time::Duration::from_secs(2));
    }

    #[test]
    fn a_file_is_read_up_to_its_limit_and_refused_beyond_it() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("f");
        std::fs::write(&f, vec![b'a'; 10]).unwrap();
        assert_eq!(read_limited(&f, 10).unwrap().len(), 10);
        let e = read_limited(&f, 9).unwrap_err();
        assert_eq!(
            e.to_string(),
            "file is larger than 9 bytes, the most allowed"
        );
        let e = read_limited(&d.path().join("missing"), 9).unwrap_err();
        assert!(e.to_string().starts_with("No such file"), "{e}");
    }
}
