//! Writing files so that a reader never sees half of one: the bytes go to a
//! temporary file in the destination's folder, which is flushed to disk and then
//! renamed over the destination. A rename within one folder is atomic on POSIX
//! file systems, so an interrupted write (a crash, a kill, a full disk) leaves
//! either the old file or the new one under the final name, never a mix.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use thiserror::Error;

/// Why a file could not be written. The destination is unchanged in every case.
#[derive(Debug, Error)]
pub enum WriteError {
    /// The folder the file would go in does not exist (a mistyped output path);
    /// kiln does not create it, so a typo does not scatter folders.
    #[error("{path}: cannot write the file: the folder {folder} does not exist")]
    MissingFolder { path: PathBuf, folder: PathBuf },
    /// The destination names a folder, not a file.
    #[error("{path}: cannot write the file: it is a folder")]
    IsFolder { path: PathBuf },
    /// Creating, writing, flushing or renaming failed.
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// Writes `bytes` to `path` atomically (see the module docs).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), WriteError> {
    write_atomic_with(path, |file| file.write_all(bytes))
}

/// Writes the file at `path` atomically with `write`, which gets the temporary
/// file. If `write` fails, the temporary file is removed and the destination keeps
/// whatever it held before (the error is `write`'s, with the destination's path).
pub fn write_atomic_with(
    path: &Path,
    write: impl FnOnce(&mut File) -> io::Result<()>,
) -> Result<(), WriteError> {
    let io_error = |source| WriteError::Io {
        path: path.to_path_buf(),
        source,
    };
    let folder = folder_of(path);
    if !folder.is_dir() {
        return Err(WriteError::MissingFolder {
            path: path.to_path_buf(),
            folder: folder.to_path_buf(),
        });
    }
    if path.is_dir() {
        return Err(WriteError::IsFolder {
            path: path.to_path_buf(),
        });
    }
    let (temp_path, mut file) = create_temp(path, folder).map_err(io_error)?;
    let written = write(&mut file)
        .and_then(|()| file.flush())
        // The data must be on disk before the rename makes it visible: otherwise a
        // crash after the rename could show the new name with missing contents.
        .and_then(|()| file.sync_all());
    drop(file);
    if let Err(source) = written.and_then(|()| std::fs::rename(&temp_path, path)) {
        // Best effort: the temporary name is ours alone, and the error that matters
        // is the one above.
        let _ = std::fs::remove_file(&temp_path);
        return Err(io_error(source));
    }
    sync_folder(folder).map_err(io_error)
}

/// The folder a file path lies in (`.` for a bare file name).
fn folder_of(path: &Path) -> &Path {
    match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    }
}

/// Creates a fresh temporary file beside `path`: `.NAME.tmp-PID-N`, hidden, and
/// created exclusively so that two writers (threads or processes) never share one.
fn create_temp(path: &Path, folder: &Path) -> io::Result<(PathBuf, File)> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let name = path
        .file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_else(|| "kiln".to_string());
    loop {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let temp = folder.join(format!(".{name}.tmp-{}-{n}", std::process::id()));
        match OpenOptions::new().write(true).create_new(true).open(&temp) {
            Ok(file) => return Ok((temp, file)),
            // Left over by a killed writer that had our process id: try the next.
            Err(err) if err.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(err) => return Err(err),
        }
    }
}

/// Flushes the folder's entry list, so the rename itself survives a crash.
#[cfg(unix)]
fn sync_folder(folder: &Path) -> io::Result<()> {
    File::open(folder)?.sync_all()
}

/// Elsewhere a folder cannot be opened as a file; the rename is as durable as the
/// platform makes it.
#[cfg(not(unix))]
fn sync_folder(_folder: &Path) -> io::Result<()> {
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("kiln-fsutil-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    /// The names in `dir`, sorted.
    fn entries(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn writes_and_replaces_a_file() {
        let dir = temp_dir("replace");
        let path = dir.join("out.bin");
        write_atomic(&path, b"first").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"first");
        write_atomic(&path, b"second, longer").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"second, longer");
        assert_eq!(entries(&dir), ["out.bin"]);
    }

    #[test]
    fn a_write_failing_midway_leaves_the_old_file_and_no_temporary() {
        let dir = temp_dir("midway");
        let path = dir.join("weights.safetensors");
        std::fs::write(&path, b"the old contents").unwrap();
        let err = write_atomic_with(&path, |file| {
            file.write_all(b"half of the new")?;
            Err(io::Error::other("disk full (simulated)"))
        })
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("{}: disk full (simulated)", path.display())
        );
        assert_eq!(std::fs::read(&path).unwrap(), b"the old contents");
        assert_eq!(entries(&dir), ["weights.safetensors"]);
    }

    #[test]
    fn a_missing_folder_is_named() {
        let dir = temp_dir("missing");
        let path = dir.join("no-such-folder").join("w.safetensors");
        let err = write_atomic(&path, b"x").unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "{}: cannot write the file: the folder {} does not exist",
                path.display(),
                dir.join("no-such-folder").display()
            )
        );
        assert!(entries(&dir).is_empty());
    }

    #[test]
    fn a_folder_is_not_overwritten() {
        let dir = temp_dir("folder");
        let err = write_atomic(&dir, b"x").unwrap_err();
        assert!(matches!(err, WriteError::IsFolder { .. }), "{err}");
        assert!(dir.is_dir());
    }

    #[test]
    fn a_bare_file_name_is_written_in_the_current_folder() {
        assert_eq!(folder_of(Path::new("w.safetensors")), Path::new("."));
        assert_eq!(folder_of(Path::new("a/w.safetensors")), Path::new("a"));
    }
}
