//! One writer per output folder: an advisory lock on `<folder>/.texprune.lock`, held for as long
//! as the run that writes the folder.
//!
//! The lock is the operating system's (`flock` on Linux, `LockFileEx` on Windows, through
//! [`std::fs::File::try_lock`]), so it belongs to the open file: it is released when the
//! [`OutputLock`] is dropped or the process ends in any way, a `kill -9` included. A crashed run
//! leaves the lock file behind, unlocked, and a later run (a `--resume`) takes it at once. Two
//! [`OutputLock`]s on one folder conflict within one process too.
//!
//! The file holds the holder's process id and program name, which a refused run reports. It is
//! written after the lock is taken and never removed (removing it would let a third run lock a
//! new file while a second still waits on the old one).

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// The lock file's name inside the output folder.
pub const LOCK_FILE: &str = ".texprune.lock";

/// An output folder that cannot be locked.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// Another run holds the folder.
    #[error("{}: in use by {holder}; wait for it to end or choose another output folder", dir.display())]
    Held {
        /// The folder.
        dir: PathBuf,
        /// Who holds it, as its lock file says (`pid 4242 (train)`).
        holder: String,
    },
    /// The folder or its lock file cannot be created, read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The folder or the lock file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
}

/// The exclusive right to write an output folder, until dropped.
#[derive(Debug)]
pub struct OutputLock {
    dir: PathBuf,
    _file: File,
}

impl OutputLock {
    /// Creates `dir` if needed and locks it for this process, without waiting.
    ///
    /// # Errors
    /// [`LockError::Held`] when another run (another process, or another [`OutputLock`] of this
    /// one) holds the folder: nothing is written then. [`LockError::Io`] when the folder or its
    /// lock file cannot be created or written.
    pub fn acquire(dir: &Path) -> Result<Self, LockError> {
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| LockError::Io { path, source }
        };
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let path = dir.join(LOCK_FILE);
        // No truncation before the lock is ours: the file names the current holder.
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io(&path))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let mut holder = String::new();
                let _ = file.read_to_string(&mut holder);
                let holder = match holder.trim() {
                    "" => "another run".to_string(),
                    named => named.to_string(),
                };
                return Err(LockError::Held {
                    dir: dir.to_path_buf(),
                    holder,
                });
            }
            Err(TryLockError::Error(source)) => return Err(LockError::Io { path, source }),
        }
        let program = std::env::args_os()
            .next()
            .and_then(|p| {
                Path::new(&p)
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
            })
            .unwrap_or_else(|| "texprune".into());
        let holder = format!("pid {} ({program})\n", std::process::id());
        file.set_len(0)
            .and_then(|()| file.seek(SeekFrom::Start(0)))
            .and_then(|_| file.write_all(holder.as_bytes()))
            .and_then(|()| file.flush())
            .map_err(io(&path))?;
        Ok(Self {
            dir: dir.to_path_buf(),
            _file: file,
        })
    }

    /// The locked folder.
    #[must_use]
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("texprune-lock-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn a_second_lock_is_refused_naming_the_holder_until_the_first_is_dropped() {
        let dir = scratch("second");
        let first = OutputLock::acquire(&dir).unwrap();
        assert_eq!(first.dir(), dir);
        let holder = std::fs::read_to_string(dir.join(LOCK_FILE)).unwrap();
        assert!(holder.starts_with(&format!("pid {} (", std::process::id())));
        match OutputLock::acquire(&dir) {
            Err(LockError::Held { dir: held, holder }) => {
                assert_eq!(held, dir);
                assert!(holder.contains(&std::process::id().to_string()), "{holder}");
            }
            other => panic!("expected Held, got {other:?}"),
        }
        // The refused attempt left the holder's name in place.
        assert_eq!(
            std::fs::read_to_string(dir.join(LOCK_FILE)).unwrap(),
            holder
        );
        drop(first);
        OutputLock::acquire(&dir).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_folder_that_cannot_be_created_is_an_io_error() {
        let dir = scratch("file");
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("not-a-folder");
        std::fs::write(&file, b"x").unwrap();
        assert!(matches!(
            OutputLock::acquire(&file.join("out")),
            Err(LockError::Io { .. })
        ));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
