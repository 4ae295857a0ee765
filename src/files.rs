//! Files written atomically: the bytes go to a temporary file beside the destination, which is
//! synced and then renamed into place, so a kill at any moment leaves either the old file or the
//! whole new one, never half of it. Checkpoints, saved models, reports and downloads all write
//! this way.
//!
//! Also the other ground-floor helpers of a run folder: its lock ([`lock_folder`]), the removal of
//! the temporary files a killed writer left ([`remove_temporaries`]), and the checks that an
//! output path can be written before any long work starts ([`check_output_file`],
//! [`check_output_folder`]).

use std::fs::File;
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// Writes `bytes` to `path` atomically, creating its folder if needed.
///
/// ```
/// let dir = tempfile::tempdir()?;
/// resnet_transfer::files::write_atomic(&dir.path().join("a/b.txt"), b"hello")?;
/// assert_eq!(std::fs::read(dir.path().join("a/b.txt"))?, b"hello");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    save_atomic(path, |tmp| {
        std::fs::write(tmp, bytes).map_err(|e| Error::io(tmp, e))
    })
}

/// Lets `save` write a temporary file beside `path` (same ending), then renames it to `path`:
/// for writers that take a path, such as Burn's records. On an error nothing is left behind.
pub fn save_atomic(path: &Path, save: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let suffix = path
        .extension()
        .map(|e| format!(".{}", e.to_string_lossy()))
        .unwrap_or_default();
    let mut builder = tempfile::Builder::new();
    builder.prefix(TEMP_PREFIX).suffix(&suffix);
    // A temporary file is private (0600) by default; the file it becomes is an ordinary one,
    // readable as the umask allows (a model served by another user must be readable).
    #[cfg(unix)]
    builder.permissions(std::os::unix::fs::PermissionsExt::from_mode(0o666));
    let tmp = builder.tempfile_in(dir).map_err(|e| Error::io(dir, e))?;
    save(tmp.path())?;
    tmp.as_file()
        .sync_all()
        .map_err(|e| Error::io(tmp.path(), e))?;
    tmp.persist(path).map_err(|e| Error::io(path, e.error))?;
    Ok(())
}

/// How the temporary files of [`save_atomic`] begin. A process killed while it writes one
/// leaves it behind (a checkpoint's is the size of the model); [`remove_temporaries`] removes them.
pub const TEMP_PREFIX: &str = ".tmp-";

/// Removes the temporary files [`save_atomic`] left in `dir` (not in its subfolders) when a kill
/// stopped it before the rename, and returns their paths. Only for a folder no other process
/// writes in: a run folder whose [`lock_folder`] this process holds. A missing folder has none.
///
/// ```
/// let dir = tempfile::tempdir()?;
/// std::fs::write(dir.path().join(".tmp-Ab12Cd.bpk"), b"half a checkpoint")?;
/// std::fs::write(dir.path().join("model.bpk"), b"a model")?;
/// let removed = resnet_transfer::files::remove_temporaries(dir.path())?;
/// assert_eq!(removed, vec![dir.path().join(".tmp-Ab12Cd.bpk")]);
/// assert!(dir.path().join("model.bpk").is_file());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn remove_temporaries(dir: &Path) -> Result<Vec<PathBuf>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io(dir, e)),
    };
    let mut removed = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| Error::io(dir, e))?;
        let name = entry.file_name();
        let is_file = entry.file_type().is_ok_and(|t| t.is_file());
        if is_file && name.to_string_lossy().starts_with(TEMP_PREFIX) {
            let path = entry.path();
            match std::fs::remove_file(&path) {
                Ok(()) => removed.push(path),
                // Gone meanwhile: another process's check of the folder, removed by its owner.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(Error::io(&path, e)),
            }
        }
    }
    removed.sort();
    Ok(removed)
}

/// The name of the lock file [`lock_folder`] keeps in a run folder.
pub const LOCK_FILE: &str = "run.lock";

/// A run folder held by this process ([`lock_folder`]); dropping it (or the process ending, in
/// any way) lets the folder go.
#[derive(Debug)]
pub struct FolderLock {
    // Holding the open file holds the lock: the OS releases it when the file is closed.
    _file: File,
}

/// Takes `dir` (created if needed) for this process, so that no second process trains into it
/// at the same time: an OS advisory lock on `dir/run.lock` ([`File::try_lock`]: `flock` on
/// Unix), which holds this process's id for the messages of others. The OS releases the lock
/// when the process ends, however it ends, so a lock a killed process left is simply taken over.
///
/// ```
/// let dir = tempfile::tempdir()?;
/// let held = resnet_transfer::files::lock_folder(dir.path())?;
/// let err = resnet_transfer::files::lock_folder(dir.path()).unwrap_err();
/// assert!(err.to_string().contains(&std::process::id().to_string()), "{err}");
/// drop(held);
/// resnet_transfer::files::lock_folder(dir.path())?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// # Errors
///
/// [`Error::RunLocked`] naming the holder's process id while another holder (another process, or
/// another lock of this one) has the folder; [`Error::Io`] if the folder or the file cannot be
/// made.
pub fn lock_folder(dir: &Path) -> Result<FolderLock> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let path = dir.join(LOCK_FILE);
    // Not truncated on open: the holder's id must stay readable to those it refuses.
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(|e| Error::io(&path, e))?;
    match file.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            return Err(Error::RunLocked {
                path: dir.to_path_buf(),
                pid: holder(&mut file),
            });
        }
        Err(std::fs::TryLockError::Error(e)) => return Err(Error::io(&path, e)),
    }
    let write_id = |file: &mut File| -> std::io::Result<()> {
        file.set_len(0)?;
        file.rewind()?;
        writeln!(file, "{}", std::process::id())?;
        file.flush()
    };
    write_id(&mut file).map_err(|e| Error::io(&path, e))?;
    Ok(FolderLock { _file: file })
}

/// The process id a lock file's holder wrote, if it can be read yet.
fn holder(file: &mut File) -> Option<u32> {
    // The holder writes its id just after taking the lock: give it a moment.
    for _ in 0..50 {
        let mut text = String::new();
        let read = file.rewind().and_then(|()| file.read_to_string(&mut text));
        if let Some(pid) = read.ok().and_then(|_| text.trim().parse().ok()) {
            return Some(pid);
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    None
}

/// Checks, without writing anything, that a file can be written at `path` later: it is not a
/// folder, and the nearest folder above it that exists is a folder this process can create files
/// in (missing folders between are created when the file is written). `option` names the path
/// in the error (`--export-onnx`).
///
/// ```
/// use resnet_transfer::files::check_output_file;
///
/// let dir = tempfile::tempdir()?;
/// check_output_file("--export-onnx", &dir.path().join("new/model.onnx"))?;
/// let err = check_output_file("--export-onnx", dir.path()).unwrap_err().to_string();
/// assert!(err.contains("is a folder, not a file"), "{err}");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// # Errors
///
/// [`Error::PathKind`] for a folder where the file should be, or a file where a folder above it
/// should be; [`Error::Io`] for a folder that does not take new files.
pub fn check_output_file(option: &'static str, path: &Path) -> Result<()> {
    if path.is_dir() {
        return Err(Error::PathKind {
            option,
            path: path.to_path_buf(),
            found: "folder",
            expected: "file",
        });
    }
    let parent = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    check_output_folder(option, parent)
}

/// Checks, without writing anything, that `path` can be a folder for output: a folder that takes
/// new files, or a path where one can be created (the nearest existing path above it is such a
/// folder). `option` names the path in the error (`--out`).
///
/// ```
/// use resnet_transfer::files::check_output_folder;
///
/// let dir = tempfile::tempdir()?;
/// check_output_folder("--out", &dir.path().join("runs/new"))?;
/// std::fs::write(dir.path().join("notes.txt"), b"")?;
/// let err = check_output_folder("--out", &dir.path().join("notes.txt")).unwrap_err();
/// assert!(err.to_string().ends_with("notes.txt is a file, not a folder"), "{err}");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// # Errors
///
/// [`Error::PathKind`] where a file stands at `path` or above it; [`Error::Io`] for a folder that
/// does not take new files.
pub fn check_output_folder(option: &'static str, path: &Path) -> Result<()> {
    let mut at = path;
    loop {
        if at.is_dir() {
            break;
        }
        if at.exists() {
            return Err(Error::PathKind {
                option,
                path: at.to_path_buf(),
                found: "file",
                expected: "folder",
            });
        }
        at = match at.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
    }
    // Whether the folder takes new files: a temporary one, removed at once.
    tempfile::Builder::new()
        .prefix(TEMP_PREFIX)
        .tempfile_in(at)
        .map_err(|e| Error::io(at, e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A saved model or export is an ordinary file: the mode `File::create` gives under this
    /// umask (0644 under 022), not the temporary file's private 0600.
    #[cfg(unix)]
    #[test]
    fn written_files_get_the_mode_of_an_ordinary_file() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let plain = dir.path().join("plain");
        File::create(&plain).unwrap();
        let atomic = dir.path().join("model.json");
        write_atomic(&atomic, b"{}").unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&atomic), mode(&plain));
    }

    #[test]
    fn a_file_in_the_way_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("a-file");
        std::fs::write(&file, b"").unwrap();
        let err = check_output_file("--export-onnx", &file.join("sub/model.onnx")).unwrap_err();
        assert!(
            matches!(&err, Error::PathKind { path, found: "file", .. } if *path == file),
            "{err:?}"
        );
        assert!(check_output_folder("--out", &file.join("run")).is_err());
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            1,
            "nothing written"
        );
    }

    #[test]
    fn a_lock_names_its_holder_and_is_free_once_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let held = lock_folder(dir.path()).unwrap();
        let err = lock_folder(dir.path()).unwrap_err();
        let Error::RunLocked { pid, .. } = err else {
            panic!("{err:?}");
        };
        assert_eq!(pid, Some(std::process::id()));
        drop(held);
        let _again = lock_folder(dir.path()).unwrap();
        let text = std::fs::read_to_string(dir.path().join(LOCK_FILE)).unwrap();
        assert_eq!(text.trim(), std::process::id().to_string());
    }

    #[test]
    fn a_failed_save_leaves_nothing_and_keeps_the_old_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("model.bpk");
        write_atomic(&path, b"old").unwrap();
        let err = save_atomic(&path, |tmp| {
            std::fs::write(tmp, b"half").unwrap();
            Err(Error::invalid_config("test", "no failure", "a failure"))
        });
        assert!(err.is_err());
        assert_eq!(std::fs::read(&path).unwrap(), b"old");
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(names.len(), 1, "the temporary file is removed");
    }
}
