//! Downloads that verify a checksum, show progress and never leave a half file behind.
//!
//! The body streams into a temporary file beside the destination, hashed as it arrives; only a
//! complete file with the published checksum is renamed into place. An interrupted download
//! leaves the destination untouched.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use md5::Md5;
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::files::save_atomic;

/// The environment variable that overrides the cache folder.
pub const CACHE_ENV: &str = "RESNET_TRANSFER_CACHE";

/// Where downloads are cached: `$RESNET_TRANSFER_CACHE`, else `$XDG_CACHE_HOME/resnet-transfer`,
/// else `~/.cache/resnet-transfer`.
pub fn cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os(CACHE_ENV) {
        return PathBuf::from(dir);
    }
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(std::env::temp_dir);
    base.join("resnet-transfer")
}

/// A published checksum, as lowercase hex.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Checksum {
    /// MD5 (CIFAR-10's archives).
    Md5(String),
    /// SHA-256 (weights).
    Sha256(String),
}

impl Checksum {
    fn algorithm(&self) -> &'static str {
        match self {
            Checksum::Md5(_) => "md5",
            Checksum::Sha256(_) => "sha256",
        }
    }

    fn expected(&self) -> &str {
        match self {
            Checksum::Md5(hex) | Checksum::Sha256(hex) => hex,
        }
    }

    fn hasher(&self) -> Hasher {
        match self {
            Checksum::Md5(_) => Hasher::Md5(Md5::new()),
            Checksum::Sha256(_) => Hasher::Sha256(Sha256::new()),
        }
    }

    /// Checks a file on disk against this checksum.
    pub fn verify_file(&self, path: &Path) -> Result<()> {
        let mut file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
        let mut hasher = self.hasher();
        let mut buf = vec![0u8; 1 << 16];
        loop {
            let n = file.read(&mut buf).map_err(|e| Error::io(path, e))?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
        }
        self.check(path, hasher.hex(), || {
            "The file is damaged or another version: delete it and fetch it again".into()
        })
    }

    fn check(&self, path: &Path, found: String, hint: impl FnOnce() -> String) -> Result<()> {
        if found.eq_ignore_ascii_case(self.expected()) {
            Ok(())
        } else {
            Err(Error::Checksum {
                path: path.to_path_buf(),
                algorithm: self.algorithm(),
                expected: self.expected().to_string(),
                found,
                hint: hint(),
            })
        }
    }
}

enum Hasher {
    Md5(Md5),
    Sha256(Sha256),
}

impl Hasher {
    fn update(&mut self, bytes: &[u8]) {
        match self {
            Hasher::Md5(h) => h.update(bytes),
            Hasher::Sha256(h) => h.update(bytes),
        }
    }

    fn hex(self) -> String {
        let digest: Vec<u8> = match self {
            Hasher::Md5(h) => h.finalize().to_vec(),
            Hasher::Sha256(h) => h.finalize().to_vec(),
        };
        digest.iter().map(|b| format!("{b:02x}")).collect()
    }
}

/// Downloads `url` to `dest`, verifying `checksum`. A file already at `dest` with the right
/// checksum is kept as it is; one with the wrong checksum is downloaded again.
pub fn fetch(url: &str, dest: &Path, checksum: &Checksum, progress: bool) -> Result<()> {
    if dest.is_file() && checksum.verify_file(dest).is_ok() {
        return Ok(());
    }
    let failed = |reason: String| Error::Download {
        url: url.to_string(),
        reason,
        destination: dest.to_path_buf(),
    };

    let mut response = ureq::get(url).call().map_err(|e| failed(e.to_string()))?;
    let total = response
        .headers()
        .get("content-length")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let bar = if progress {
        let bar = indicatif::ProgressBar::new(total.unwrap_or(0));
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{msg} [{bar:40}] {bytes}/{total_bytes} ({bytes_per_sec}, eta {eta})",
            )
            .expect("a valid template")
            .progress_chars("=> "),
        );
        bar.set_message(
            dest.file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned(),
        );
        bar
    } else {
        indicatif::ProgressBar::hidden()
    };

    // Only a complete body with the published checksum is renamed into place.
    save_atomic(dest, |tmp| {
        let mut file = std::fs::File::create(tmp).map_err(|e| Error::io(tmp, e))?;
        let mut hasher = checksum.hasher();
        let mut body = response.body_mut().with_config().limit(u64::MAX).reader();
        let mut buf = vec![0u8; 1 << 16];
        let mut received = 0u64;
        loop {
            let n = body.read(&mut buf).map_err(|e| failed(e.to_string()))?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            file.write_all(&buf[..n]).map_err(|e| Error::io(tmp, e))?;
            received += n as u64;
            bar.set_position(received);
        }
        bar.finish_and_clear();
        if let Some(total) = total.filter(|&t| t != received) {
            return Err(failed(format!(
                "connection closed after {received} of {total} bytes"
            )));
        }
        checksum.check(dest, hasher.hex(), || {
            format!(
                "{received} bytes came from {url}, and they are not the file this version of \
                 resnet-transfer was verified with (changed upstream, or altered on the way); \
                 nothing was kept. Check the URL in a browser, or download a file you trust \
                 by hand and pass its path instead of the name"
            )
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::files::write_atomic;

    #[test]
    fn known_digests() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("abc");
        write_atomic(&path, b"abc").unwrap();
        Checksum::Md5("900150983cd24fb0d6963f7d28e17f72".into())
            .verify_file(&path)
            .unwrap();
        Checksum::Sha256("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad".into())
            .verify_file(&path)
            .unwrap();
        let err = Checksum::Md5("00".into()).verify_file(&path).unwrap_err();
        assert!(
            matches!(
                err,
                Error::Checksum {
                    algorithm: "md5",
                    ..
                }
            ),
            "{err}"
        );
    }
}
