//! CIFAR-10 from its official files: the binary and the Python distributions, as archives or
//! extracted folders, found where Keras or torchvision already put them, or downloaded.
//!
//! The binary version (`cifar-10-batches-bin/`) holds records of one label byte and 3072 pixel
//! bytes (1024 red, 1024 green, 1024 blue, each 32x32 row-major). The Python version
//! (`cifar-10-batches-py/`) holds pickled dicts whose `data` is a 10000x3072 uint8 numpy array in
//! the same order and whose `labels` is a list.

use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use serde_pickle::{DeOptions, HashableValue, Value};

use crate::data::images::ImageSet;
use crate::download::{self, Checksum};
use crate::error::{Error, Result};

/// The ten class names, in label order.
pub const CLASSES: [&str; 10] = [
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
];

/// Side of a CIFAR-10 image.
pub const SIDE: usize = 32;
const IMAGE_BYTES: usize = 3 * SIDE * SIDE;
const RECORD_BYTES: usize = 1 + IMAGE_BYTES;
const TRAIN_FILES: usize = 5;

/// The two official distributions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `cifar-10-binary.tar.gz`, folder `cifar-10-batches-bin/`.
    Binary,
    /// `cifar-10-python.tar.gz`, folder `cifar-10-batches-py/`.
    Python,
}

impl Format {
    /// The folder the archive extracts to.
    pub fn folder(self) -> &'static str {
        match self {
            Format::Binary => "cifar-10-batches-bin",
            Format::Python => "cifar-10-batches-py",
        }
    }

    /// The archive's file name.
    pub fn archive(self) -> &'static str {
        match self {
            Format::Binary => "cifar-10-binary.tar.gz",
            Format::Python => "cifar-10-python.tar.gz",
        }
    }

    /// The official download URL.
    pub fn url(self) -> String {
        format!("https://www.cs.toronto.edu/~kriz/{}", self.archive())
    }

    /// The official MD5 of the archive.
    pub fn md5(self) -> &'static str {
        match self {
            Format::Binary => "c32a1d4ab5d03f1284b67883e8d87530",
            Format::Python => "c58f30108f718f92721af3b95e74349a",
        }
    }

    fn train_file(self, k: usize) -> String {
        match self {
            Format::Binary => format!("data_batch_{k}.bin"),
            Format::Python => format!("data_batch_{k}"),
        }
    }

    fn test_file(self) -> &'static str {
        match self {
            Format::Binary => "test_batch.bin",
            Format::Python => "test_batch",
        }
    }

    fn meta_file(self) -> &'static str {
        match self {
            Format::Binary => "batches.meta.txt",
            Format::Python => "batches.meta",
        }
    }
}

/// CIFAR-10: 50,000 training and 10,000 test images of 32x32 pixels in 10 classes.
#[derive(Debug, Clone)]
pub struct Cifar10 {
    /// The five training files, in order.
    pub train: ImageSet,
    /// The test file.
    pub test: ImageSet,
    /// Class names, from the dataset's meta file (or [`CLASSES`] when it has none).
    pub class_names: Vec<String>,
    /// Where it was read from.
    pub source: PathBuf,
}

impl Cifar10 {
    /// Reads CIFAR-10 from `path`: an official archive, an extracted folder
    /// (`cifar-10-batches-bin` or `cifar-10-batches-py`), or a folder that holds one of these.
    pub fn load(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        if path.is_file() {
            return Self::read_archive(path);
        }
        match locate_in(path) {
            Some(found) if found.is_file() => Self::read_archive(&found),
            Some(found) => Self::read_dir(&found),
            None => Err(Error::NotFound {
                what: "CIFAR-10".into(),
                looked_in: path.display().to_string(),
                hint: placement_hint(path),
            }),
        }
    }

    /// Reads an extracted folder of either format.
    pub fn read_dir(dir: &Path) -> Result<Self> {
        let format = detect_dir(dir).ok_or_else(|| Error::NotFound {
            what: "CIFAR-10 batch files (data_batch_1.bin or data_batch_1)".into(),
            looked_in: dir.display().to_string(),
            hint: placement_hint(dir),
        })?;
        let read = |name: &str| {
            let path = dir.join(name);
            std::fs::read(&path)
                .map(|bytes| (path.clone(), bytes))
                .map_err(|e| Error::io(&path, e))
        };
        let mut files = HashMap::new();
        for name in file_names(format) {
            let (path, bytes) = read(&name)?;
            files.insert(name, (path, bytes));
        }
        let meta = read(format.meta_file()).ok();
        Self::from_files(format, files, meta, dir)
    }

    /// Reads an official `.tar.gz` archive without extracting it.
    pub fn read_archive(path: &Path) -> Result<Self> {
        let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
        let bad = |reason: String| Error::BadFormat {
            path: path.to_path_buf(),
            reason,
        };
        let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(file));
        let mut entries: HashMap<String, Vec<u8>> = HashMap::new();
        let mut format = None;
        for entry in archive
            .entries()
            .map_err(|e| bad(format!("not a tar.gz archive: {e}")))?
        {
            let mut entry = entry.map_err(|e| bad(format!("corrupt archive: {e}")))?;
            let name = entry.path().map_err(|e| bad(e.to_string()))?.to_path_buf();
            let (Some(folder), Some(file)) = (name.parent(), name.file_name()) else {
                continue;
            };
            let folder = folder.file_name().and_then(|f| f.to_str()).unwrap_or("");
            let detected = [Format::Binary, Format::Python]
                .into_iter()
                .find(|f| f.folder() == folder);
            if let Some(detected) = detected {
                format = Some(detected);
                let mut bytes = Vec::with_capacity(entry.size() as usize);
                entry
                    .read_to_end(&mut bytes)
                    .map_err(|e| bad(format!("corrupt archive at {}: {e}", name.display())))?;
                entries.insert(file.to_string_lossy().into_owned(), bytes);
            }
        }
        let format = format.ok_or_else(|| {
            bad("no cifar-10-batches-bin/ or cifar-10-batches-py/ folder inside".into())
        })?;
        let mut files = HashMap::new();
        for name in file_names(format) {
            let bytes = entries
                .remove(&name)
                .ok_or_else(|| bad(format!("{}/{name} is missing", format.folder())))?;
            files.insert(
                name.clone(),
                (path.join(format.folder()).join(&name), bytes),
            );
        }
        let meta = entries
            .remove(format.meta_file())
            .map(|b| (path.join(format.folder()).join(format.meta_file()), b));
        Self::from_files(format, files, meta, path)
    }

    fn from_files(
        format: Format,
        mut files: HashMap<String, (PathBuf, Vec<u8>)>,
        meta: Option<(PathBuf, Vec<u8>)>,
        source: &Path,
    ) -> Result<Self> {
        let mut parse = |name: String| {
            let (path, bytes) = files.remove(&name).expect("listed by file_names");
            match format {
                Format::Binary => parse_binary(&path, &bytes),
                Format::Python => parse_pickle(&path, &bytes),
            }
        };
        let mut train = ImageSet::default();
        for k in 1..=TRAIN_FILES {
            train.extend(parse(format.train_file(k))?)?;
        }
        let test = parse(format.test_file().to_string())?;
        let class_names = match meta {
            Some((path, bytes)) => match format {
                Format::Binary => parse_meta_txt(&bytes),
                Format::Python => parse_meta_pickle(&path, &bytes)?,
            },
            None => CLASSES.iter().map(|s| s.to_string()).collect(),
        };
        Ok(Self {
            train,
            test,
            class_names,
            source: source.to_path_buf(),
        })
    }

    /// Finds CIFAR-10 in the usual places, or downloads it.
    ///
    /// Looks in `data_dir` (if given), then in this crate's cache folder
    /// ([`download::cache_dir`]), then where Keras 2 (`~/.keras/datasets/cifar-10-batches-py`)
    /// and Keras 3 (`~/.keras/datasets/cifar-10-batches-py-target/cifar-10-batches-py`) put it,
    /// under `$KERAS_HOME` instead of `~/.keras` when that is set, as Keras does; torchvision's
    /// `<root>/cifar-10-batches-py` is found by naming its root as `data_dir`. With `download` set and nothing found, downloads
    /// the binary archive into the cache folder, checking its MD5. Offline, the error says which
    /// file to put where.
    pub fn find_or_download(
        data_dir: Option<&Path>,
        download: Option<&Downloader>,
    ) -> Result<Self> {
        let mut candidates: Vec<PathBuf> = data_dir.map(Path::to_path_buf).into_iter().collect();
        let cache = download::cache_dir().join("cifar10");
        candidates.push(cache.clone());
        if let Some(datasets) = keras_datasets_dir() {
            // Keras 2 extracts into `datasets/`, Keras 3 into a `-target` folder inside it.
            candidates.push(datasets.join("cifar-10-batches-py-target"));
            candidates.push(datasets);
        }
        for dir in &candidates {
            if dir.is_file() || locate_in(dir).is_some() {
                return Self::load(dir);
            }
        }
        let Some(downloader) = download else {
            let looked_in: Vec<String> =
                candidates.iter().map(|p| p.display().to_string()).collect();
            return Err(Error::NotFound {
                what: "CIFAR-10".into(),
                looked_in: looked_in.join(", "),
                hint: placement_hint(&cache),
            });
        };
        let target = data_dir.map(Path::to_path_buf).unwrap_or(cache);
        let archive = downloader.fetch(Format::Binary, &target)?;
        Self::read_archive(&archive)
    }
}

/// Downloads the official archives (or from a mirror, for tests and offline caches).
#[derive(Debug, Clone)]
pub struct Downloader {
    /// Base URL the archive name is appended to; the official one by default.
    pub base_url: String,
    /// Show a progress bar.
    pub progress: bool,
    /// The checksum to expect instead of the official MD5 (for a mirror that repackages).
    pub checksum: Option<Checksum>,
}

impl Default for Downloader {
    fn default() -> Self {
        Self {
            base_url: "https://www.cs.toronto.edu/~kriz/".into(),
            progress: true,
            checksum: None,
        }
    }
}

impl Downloader {
    /// Downloads `format`'s archive into `dir` (atomically, MD5 checked) and returns its path.
    /// An archive already there with the right checksum is not downloaded again.
    pub fn fetch(&self, format: Format, dir: &Path) -> Result<PathBuf> {
        let url = format!(
            "{}/{}",
            self.base_url.trim_end_matches('/'),
            format.archive()
        );
        let dest = dir.join(format.archive());
        let official = Checksum::Md5(format.md5().into());
        let checksum = self.checksum.as_ref().unwrap_or(&official);
        download::fetch(&url, &dest, checksum, self.progress)?;
        Ok(dest)
    }
}

fn file_names(format: Format) -> Vec<String> {
    let mut names: Vec<String> = (1..=TRAIN_FILES).map(|k| format.train_file(k)).collect();
    names.push(format.test_file().to_string());
    names
}

fn detect_dir(dir: &Path) -> Option<Format> {
    [Format::Binary, Format::Python]
        .into_iter()
        .find(|f| dir.join(f.train_file(1)).is_file())
}

/// What `path` holds: itself an extracted folder, a folder or archive inside it, in the order
/// binary folder, Python folder, binary archive, Python archive.
fn locate_in(path: &Path) -> Option<PathBuf> {
    if !path.is_dir() {
        return None;
    }
    if detect_dir(path).is_some() {
        return Some(path.to_path_buf());
    }
    let formats = [Format::Binary, Format::Python];
    let folders = formats.iter().map(|f| path.join(f.folder()));
    let archives = formats.iter().map(|f| path.join(f.archive()));
    folders
        .filter(|p| detect_dir(p).is_some())
        .chain(archives.filter(|p| p.is_file()))
        .next()
}

/// Keras's dataset folder: `$KERAS_HOME/datasets`, else `~/.keras/datasets`.
fn keras_datasets_dir() -> Option<PathBuf> {
    let home = std::env::var_os("KERAS_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".keras")))?;
    Some(home.join("datasets"))
}

fn placement_hint(dir: &Path) -> String {
    format!(
        "Download {} (or {}) and put the archive, or the folder it extracts to, in {}",
        Format::Binary.url(),
        Format::Python.url(),
        dir.display()
    )
}

/// Parses one file of the binary version: records of a label byte and 3072 pixel bytes.
pub fn parse_binary(path: &Path, bytes: &[u8]) -> Result<ImageSet> {
    let records = bytes.len() / RECORD_BYTES;
    let rest = bytes.len() % RECORD_BYTES;
    if rest != 0 {
        return Err(Error::Truncated {
            path: path.to_path_buf(),
            offset: (records * RECORD_BYTES) as u64,
            expected: RECORD_BYTES,
            found: rest,
        });
    }
    let mut pixels = Vec::with_capacity(records * IMAGE_BYTES);
    let mut labels = Vec::with_capacity(records);
    for (i, record) in bytes.chunks_exact(RECORD_BYTES).enumerate() {
        let label = record[0] as usize;
        if label >= CLASSES.len() {
            return Err(Error::BadLabel {
                path: path.to_path_buf(),
                location: format!("byte offset {}", i * RECORD_BYTES),
                label: label as i64,
                classes: CLASSES.len(),
            });
        }
        labels.push(label);
        pixels.extend_from_slice(&record[1..]);
    }
    ImageSet::new(pixels, labels, SIDE, SIDE)
}

fn pickle_dict(
    path: &Path,
    bytes: &[u8],
) -> Result<std::collections::BTreeMap<HashableValue, Value>> {
    let bad = |reason: String| Error::BadFormat {
        path: path.to_path_buf(),
        reason,
    };
    // numpy arrays are pickled as calls to numpy functions; keeping their state is all we need.
    let options = DeOptions::new().replace_unresolved_globals();
    match serde_pickle::value_from_slice(bytes, options) {
        Ok(Value::Dict(dict)) => Ok(dict),
        Ok(other) => Err(bad(format!(
            "expected a pickled dict, found {}",
            kind(&other)
        ))),
        Err(e) => Err(bad(format!("not a readable pickle: {e}"))),
    }
}

/// A dict entry by name, whether the key was pickled as bytes (Python 2) or as text.
fn entry<'a>(
    dict: &'a std::collections::BTreeMap<HashableValue, Value>,
    key: &str,
) -> Option<&'a Value> {
    dict.get(&HashableValue::Bytes(key.as_bytes().to_vec()))
        .or_else(|| dict.get(&HashableValue::String(key.to_string())))
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::None => "None",
        Value::Bool(_) => "a bool",
        Value::I64(_) | Value::Int(_) => "an int",
        Value::F64(_) => "a float",
        Value::Bytes(_) => "bytes",
        Value::String(_) => "a string",
        Value::List(_) => "a list",
        Value::Tuple(_) => "a tuple",
        Value::Set(_) | Value::FrozenSet(_) => "a set",
        Value::Dict(_) => "a dict",
    }
}

/// Parses one file of the Python version: a pickled dict with `data` (a numpy uint8 array of
/// N x 3072) and `labels` (a list of N ints).
pub fn parse_pickle(path: &Path, bytes: &[u8]) -> Result<ImageSet> {
    let bad = |reason: String| Error::BadFormat {
        path: path.to_path_buf(),
        reason,
    };
    let dict = pickle_dict(path, bytes)?;
    let data = entry(&dict, "data").ok_or_else(|| bad("no `data` entry".into()))?;
    let labels = entry(&dict, "labels").ok_or_else(|| bad("no `labels` entry".into()))?;

    // A numpy array's pickled state: (version, shape, dtype, is_fortran, raw bytes).
    let Value::Tuple(state) = data else {
        return Err(bad(format!(
            "`data` is {}, expected a numpy array",
            kind(data)
        )));
    };
    let (shape, raw) = match state.as_slice() {
        [
            _,
            Value::Tuple(shape),
            _,
            Value::Bool(false),
            Value::Bytes(raw),
        ] => (shape, raw),
        [_, _, _, Value::Bool(true), _] => return Err(bad("`data` is in Fortran order".into())),
        _ => return Err(bad("`data` is not a numpy array of bytes".into())),
    };
    let dims: Vec<i64> = shape
        .iter()
        .map(|d| match d {
            Value::I64(v) => Ok(*v),
            other => Err(bad(format!("`data` shape holds {}", kind(other)))),
        })
        .collect::<Result<_>>()?;
    let labels: Vec<i64> = match labels {
        Value::List(items) => items
            .iter()
            .map(|v| match v {
                Value::I64(v) => Ok(*v),
                other => Err(bad(format!("`labels` holds {}", kind(other)))),
            })
            .collect::<Result<_>>()?,
        other => return Err(bad(format!("`labels` is {}, expected a list", kind(other)))),
    };
    let n = labels.len();
    if dims != [n as i64, IMAGE_BYTES as i64] || raw.len() != n * IMAGE_BYTES {
        return Err(Error::ShapeMismatch {
            tensor: format!("{}: data", path.display()),
            expected: vec![n, IMAGE_BYTES],
            found: dims.iter().map(|&d| d.max(0) as usize).collect(),
        });
    }
    let labels = labels
        .into_iter()
        .enumerate()
        .map(|(i, label)| {
            usize::try_from(label)
                .ok()
                .filter(|&l| l < CLASSES.len())
                .ok_or_else(|| Error::BadLabel {
                    path: path.to_path_buf(),
                    location: format!("labels[{i}]"),
                    label,
                    classes: CLASSES.len(),
                })
        })
        .collect::<Result<Vec<_>>>()?;
    ImageSet::new(raw.clone(), labels, SIDE, SIDE)
}

fn parse_meta_txt(bytes: &[u8]) -> Vec<String> {
    String::from_utf8_lossy(bytes)
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(String::from)
        .collect()
}

fn parse_meta_pickle(path: &Path, bytes: &[u8]) -> Result<Vec<String>> {
    let dict = pickle_dict(path, bytes)?;
    let bad = || Error::BadFormat {
        path: path.to_path_buf(),
        reason: "`label_names` is missing or not a list of names".into(),
    };
    let Some(Value::List(names)) = entry(&dict, "label_names") else {
        return Err(bad());
    };
    names
        .iter()
        .map(|n| match n {
            Value::Bytes(b) => Ok(String::from_utf8_lossy(b).into_owned()),
            Value::String(s) => Ok(s.clone()),
            _ => Err(bad()),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(label: u8, fill: u8) -> Vec<u8> {
        let mut r = vec![label];
        r.extend(std::iter::repeat_n(fill, IMAGE_BYTES));
        r
    }

    #[test]
    fn binary_records_parse() {
        let mut bytes = record(3, 7);
        bytes.extend(record(9, 1));
        let set = parse_binary(Path::new("x.bin"), &bytes).unwrap();
        assert_eq!(set.labels(), &[3, 9]);
        assert_eq!(set.pixel(1, 2, 31, 31).unwrap(), 1);
    }

    #[test]
    fn truncated_record_names_file_and_offset() {
        let mut bytes = record(1, 0);
        bytes.extend(&record(2, 0)[..100]);
        match parse_binary(Path::new("data_batch_1.bin"), &bytes) {
            Err(Error::Truncated {
                path,
                offset,
                expected,
                found,
            }) => {
                assert_eq!(path, Path::new("data_batch_1.bin"));
                assert_eq!((offset, expected, found), (3073, 3073, 100));
            }
            other => panic!("expected Truncated, got {other:?}"),
        }
    }

    #[test]
    fn label_above_nine_is_refused() {
        let mut bytes = record(1, 0);
        bytes.extend(record(10, 0));
        let err = parse_binary(Path::new("b.bin"), &bytes).unwrap_err();
        assert!(
            matches!(&err, Error::BadLabel { label: 10, location, .. } if location == "byte offset 3073"),
            "{err}"
        );
    }

    #[test]
    fn garbage_pickle_is_a_format_error() {
        let err = parse_pickle(Path::new("p"), b"not a pickle").unwrap_err();
        assert!(matches!(err, Error::BadFormat { .. }), "{err}");
    }
}
