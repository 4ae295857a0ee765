//! The known ImageNet ResNet weights, each with its source, checksum, layout and preprocessing.
//!
//! Files published online (the ONNX Model Zoo) are downloaded into the cache folder and checked
//! against their SHA-256 (taken from the zoo's Git LFS pointers). Each URL names a commit of
//! onnx/models, not a branch: the zoo has replaced files under the same name (resnet50-v1-12 in
//! July 2022), and a URL on `main` would then serve a file that fails its checksum. Keras and torchvision weights
//! are exported to ONNX by the scripts in `weights/`, on a machine that can reach those hubs;
//! their checksums depend on the exporter's version, so they are listed without one.

use std::path::{Path, PathBuf};

use crate::data::Preprocess;
use crate::download::{self, Checksum};
use crate::error::{Error, Result};

/// One entry of the catalog.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WeightsEntry {
    /// The name used on command lines.
    pub name: &'static str,
    /// The file name in the weights or cache folder.
    pub file: &'static str,
    /// Where to download it, pinned to a commit; `None` for files a user exports with a script in
    /// `weights/`.
    pub url: Option<&'static str>,
    /// SHA-256 of the published file.
    pub sha256: Option<&'static str>,
    /// Size in bytes of the published file.
    pub size: Option<u64>,
    /// ResNet depth.
    pub depth: usize,
    /// The preprocessing the weights were trained with.
    pub preprocess: Preprocess,
    /// How the file was made and by whom, in a line.
    pub description: &'static str,
    /// Licence of the weights.
    pub licence: &'static str,
}

/// Every known set of weights. The first is the default for ResNet50 transfer learning.
pub const CATALOG: [WeightsEntry; 6] = [
    WeightsEntry {
        name: "resnet50-v1-12",
        file: "resnet50-v1-12.onnx",
        url: Some(
            "https://github.com/onnx/models/raw/652f4e4af7975c8e7a505c4b6e0f8ac72d8260ea/vision/classification/resnet/model/resnet50-v1-12.onnx",
        ),
        sha256: Some("ab65bdc02c5b3123eb3cdf6dac01742438517d8635d4f233913b2be1c70db3b6"),
        size: Some(102_576_419),
        depth: 50,
        preprocess: Preprocess::Torch,
        description: "ONNX Model Zoo ResNet50 v1 (MXNet Gluon, opset 12), ImageNet top-1 74.9%",
        licence: "Apache-2.0",
    },
    WeightsEntry {
        name: "resnet18-v1-7",
        file: "resnet18-v1-7.onnx",
        url: Some(
            "https://github.com/onnx/models/raw/652f4e4af7975c8e7a505c4b6e0f8ac72d8260ea/vision/classification/resnet/model/resnet18-v1-7.onnx",
        ),
        sha256: Some("4e8f8653e7a2222b3904cc3fe8e304cd8b339ce1d05fd24688162f86fb6df52c"),
        size: Some(46_820_737),
        depth: 18,
        preprocess: Preprocess::Torch,
        description: "ONNX Model Zoo ResNet18 v1 (MXNet Gluon, opset 7)",
        licence: "Apache-2.0",
    },
    WeightsEntry {
        name: "resnet101-v1-7",
        file: "resnet101-v1-7.onnx",
        url: Some(
            "https://github.com/onnx/models/raw/652f4e4af7975c8e7a505c4b6e0f8ac72d8260ea/vision/classification/resnet/model/resnet101-v1-7.onnx",
        ),
        sha256: Some("760702f6ec0138f71ebac66f4e95d1c72dc9267a8544f4d4667a53075fd0497c"),
        size: Some(178_914_043),
        depth: 101,
        preprocess: Preprocess::Torch,
        description: "ONNX Model Zoo ResNet101 v1 (MXNet Gluon, opset 7)",
        licence: "Apache-2.0",
    },
    WeightsEntry {
        name: "resnet152-v1-7",
        file: "resnet152-v1-7.onnx",
        url: Some(
            "https://github.com/onnx/models/raw/652f4e4af7975c8e7a505c4b6e0f8ac72d8260ea/vision/classification/resnet/model/resnet152-v1-7.onnx",
        ),
        sha256: Some("b0ec92437bf8c9d0739bf9bafdea9638e13f9e3c1e2fb766ad546cc182fd3f6d"),
        size: Some(241_816_206),
        depth: 152,
        preprocess: Preprocess::Torch,
        description: "ONNX Model Zoo ResNet152 v1 (MXNet Gluon, opset 7)",
        licence: "Apache-2.0",
    },
    WeightsEntry {
        name: "keras-resnet50",
        file: "keras-resnet50.onnx",
        url: None,
        sha256: None,
        size: None,
        depth: 50,
        preprocess: Preprocess::Caffe,
        description: "Keras applications.ResNet50(weights=\"imagenet\") through tf2onnx: weights/export_keras_resnet50.py",
        licence: "MIT (Kaiming He's original Caffe weights, converted by Keras)",
    },
    WeightsEntry {
        name: "torchvision-resnet50",
        file: "torchvision-resnet50.onnx",
        url: None,
        sha256: None,
        size: None,
        depth: 50,
        preprocess: Preprocess::Torch,
        description: "torchvision resnet50(weights=IMAGENET1K_V2) through torch.onnx: weights/export_torchvision_resnet50.py",
        licence: "BSD-3-Clause (torchvision)",
    },
];

impl WeightsEntry {
    /// Checks a file found under this entry's name against the published checksum: a catalog
    /// name means the catalog's file, not whatever lies in the folder under that name.
    fn check(&self, file: &Path) -> Result<()> {
        let Some(sha) = self.sha256 else {
            return Ok(());
        };
        Checksum::Sha256(sha.into())
            .verify_file(file)
            .map_err(|e| match e {
                Error::Checksum {
                    path,
                    algorithm,
                    expected,
                    found,
                    ..
                } => Error::Checksum {
                    path,
                    algorithm,
                    expected,
                    found,
                    hint: format!(
                        "`{}` names the catalog's file, and this is another (damaged, cut short, \
                         or a different model). Delete it so that the right one is downloaded, \
                         or pass its path instead of the name to use it as it is",
                        self.name
                    ),
                },
                other => other,
            })
    }
}

/// The entry named `name`.
pub fn entry(name: &str) -> Option<&'static WeightsEntry> {
    CATALOG.iter().find(|e| e.name == name)
}

/// The folder weights are cached in: `<cache>/weights`.
pub fn weights_dir() -> PathBuf {
    download::cache_dir().join("weights")
}

impl WeightsEntry {
    /// Finds the file in `dirs` or the cache folder, or downloads it (checksum verified,
    /// atomically) when the entry has a URL and `download` is set.
    pub fn locate(&self, dirs: &[&Path], download: bool, progress: bool) -> Result<PathBuf> {
        let cache = weights_dir();
        let mut looked = Vec::new();
        for dir in dirs.iter().copied().chain([cache.as_path()]) {
            let candidate = dir.join(self.file);
            if candidate.is_file() {
                match self.check(&candidate) {
                    Ok(()) => return Ok(candidate),
                    // The cache's copy is replaced by a download below, as Keras's `get_file`
                    // replaces a cached file whose hash is wrong.
                    Err(_) if dir == cache && download && self.url.is_some() => break,
                    Err(e) => return Err(e),
                }
            }
            looked.push(dir.display().to_string());
        }
        match (self.url, self.sha256, download) {
            (Some(url), Some(sha), true) => {
                let dest = cache.join(self.file);
                download::fetch(url, &dest, &Checksum::Sha256(sha.into()), progress)?;
                Ok(dest)
            }
            _ => Err(Error::NotFound {
                what: format!("weights `{}` ({})", self.name, self.file),
                looked_in: looked.join(", "),
                hint: match self.url {
                    Some(url) => format!("Download {url} and put it in {}", cache.display()),
                    None => format!(
                        "Make it with: {}; then put it in {}",
                        self.description,
                        cache.display()
                    ),
                },
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The LFS pointer committed for `url` (tests/fixtures/lfs-pointers): its SHA-256 and size.
    fn pointer(url: &str) -> (String, u64) {
        let rest = url
            .strip_prefix("https://github.com/onnx/models/raw/")
            .unwrap_or_else(|| panic!("{url} is not a file of onnx/models"));
        let (commit, path) = rest.split_once('/').unwrap();
        assert!(
            commit.len() == 40 && commit.bytes().all(|b| b.is_ascii_hexdigit()),
            "{url} names `{commit}`, not a commit: a branch's file can change under its checksum"
        );
        let file = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/lfs-pointers/onnx-models")
            .join(commit)
            .join(path);
        let text = std::fs::read_to_string(&file)
            .unwrap_or_else(|e| panic!("{}: {e} (copy the pointer of {url})", file.display()));
        let field = |key: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(key))
                .unwrap_or_else(|| panic!("{}: no `{key}` line", file.display()))
                .to_string()
        };
        (
            field("oid sha256:"),
            field("size ").parse().expect("a size in bytes"),
        )
    }

    #[test]
    fn every_download_is_pinned_to_the_pointer_of_its_commit() {
        let mut checked = 0;
        for entry in CATALOG.iter().filter(|e| e.url.is_some()) {
            let (sha, size) = pointer(entry.url.unwrap());
            assert_eq!(entry.sha256, Some(sha.as_str()), "{}", entry.name);
            assert_eq!(entry.size, Some(size), "{}", entry.name);
            assert!(entry.url.unwrap().ends_with(entry.file), "{}", entry.name);
            checked += 1;
        }
        assert_eq!(checked, 4, "the four Model Zoo entries");
    }
}
