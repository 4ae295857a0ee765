//! Files written atomically: the bytes go to a temporary file beside the destination, which is
//! synced and then renamed into place, so a kill at any moment leaves either the old file or the
//! whole new one, never half of it. Checkpoints, saved models, reports and downloads all write
//! this way.

use std::path::Path;

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
    let tmp = tempfile::Builder::new()
        .prefix(".tmp-")
        .suffix(&suffix)
        .tempfile_in(dir)
        .map_err(|e| Error::io(dir, e))?;
    save(tmp.path())?;
    tmp.as_file()
        .sync_all()
        .map_err(|e| Error::io(tmp.path(), e))?;
    tmp.persist(path).map_err(|e| Error::io(path, e.error))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

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
