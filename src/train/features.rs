//! Phase 1's feature cache: the frozen backbone's pooled features of every image, computed once
//! and reused by every phase-1 epoch, in memory or in a file of the run folder.
//!
//! With a run folder the pass writes its features to `features/<set>.f32` there as it goes (raw
//! little-endian `f32`, one row of `dim` values per image, in the set's order), 64 images (or a
//! batch, if larger) at a time, each write made durable before `features/<set>.json` records it
//! with a checksum of its bytes.
//! So a run killed during the pass (an hour for 50,000 photos at 224 on a CPU) resumes it where
//! the last write ended, and a run resumed in a later phase-1 epoch reads its features back
//! rather than computing them again. Before an earlier pass's rows are used, each write's bytes
//! are checked against their checksum (rows changed on disk are computed again from there), and
//! the first batch is computed again and compared with them: a file from other photos or other
//! weights is never silently reused, but computed afresh, and the reason said.
//!
//! Features larger than the learner's memory budget ([`TwoPhase::memory_budget`]) stay in the
//! file, and each batch's rows are read from it as the head trains; smaller ones are held in
//! memory. Phase 2 does not use them: the files are removed at the unfreeze point.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use burn::tensor::{Device, Int, Tensor, TensorData};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::data::ImageSet;
use crate::error::{Error, Result};
use crate::files::write_atomic;
use crate::model::ResNet;
use crate::train::TwoPhase;
use crate::train::epoch::FeaturePass;

/// Images per durable write of the pass (at least a few batches).
const SEGMENT: usize = 64;

/// One set's cached features: held in memory, or read from the run folder's file a batch at a
/// time.
pub(crate) enum CachedFeatures {
    /// `[N, dim]` on the training device.
    Held(Box<Tensor<2>>),
    /// In the run folder, over the memory budget.
    File(FeatureFile),
}

impl CachedFeatures {
    /// The features of images `indices`, in that order, `[indices.len(), dim]` on `device`
    /// (an autodiff device, as the head trains there).
    pub(crate) fn rows(&self, indices: &[usize], device: &Device) -> Result<Tensor<2>> {
        match self {
            Self::Held(features) => {
                let idx: Vec<i64> = indices.iter().map(|&i| i as i64).collect();
                let idx =
                    Tensor::<1, Int>::from_data(TensorData::new(idx, [indices.len()]), device);
                Ok(features.as_ref().clone().select(0, idx))
            }
            Self::File(file) => file.rows(indices, device),
        }
    }

    /// The features of images `range`, on `device`.
    pub(crate) fn range(&self, range: Range<usize>, device: &Device) -> Result<Tensor<2>> {
        match self {
            Self::Held(features) => {
                Ok(features
                    .as_ref()
                    .clone()
                    .narrow(0, range.start, range.len()))
            }
            Self::File(_) => self.rows(&range.collect::<Vec<_>>(), device),
        }
    }
}

/// Features kept in their file, rows read on demand.
pub(crate) struct FeatureFile {
    path: PathBuf,
    file: Mutex<File>,
    dim: usize,
}

impl FeatureFile {
    fn rows(&self, indices: &[usize], device: &Device) -> Result<Tensor<2>> {
        let mut values = vec![0f32; indices.len() * self.dim];
        let mut bytes = vec![0u8; self.dim * 4];
        let mut file = self.file.lock().unwrap_or_else(|e| e.into_inner());
        for (row, &i) in values.chunks_exact_mut(self.dim).zip(indices) {
            file.seek(SeekFrom::Start((i * self.dim * 4) as u64))
                .and_then(|_| file.read_exact(&mut bytes))
                .map_err(|e| Error::io(&self.path, e))?;
            for (v, b) in row.iter_mut().zip(bytes.chunks_exact(4)) {
                *v = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
            }
        }
        Ok(on(values, [indices.len(), self.dim], device))
    }
}

/// `values` `[n, dim]` as a tensor on the autodiff `device`.
fn on(values: Vec<f32>, dims: [usize; 2], device: &Device) -> Tensor<2> {
    Tensor::<2>::from_data(TensorData::new(values, dims), &device.clone().inner()).autodiff()
}

/// What the pass has written, in `features/<set>.json`.
#[derive(Debug, Serialize, Deserialize, PartialEq)]
struct Progress {
    /// Images in the set.
    images: usize,
    /// Values per image.
    dim: usize,
    /// Images whose rows are in the file (the first `done`).
    done: usize,
    /// SHA-256 of the set's labels, in order.
    labels: String,
    /// Each write: its images and the start of the SHA-256 of its bytes, so that a resume
    /// reuses only rows that are as they were written.
    #[serde(default)]
    writes: Vec<WriteRecord>,
}

/// One durable write of the pass.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
struct WriteRecord {
    /// Its images, `[start, end)`.
    images: [usize; 2],
    /// The start of the SHA-256 of its bytes, in hex.
    sha256: String,
}

fn bytes_digest(bytes: &[u8]) -> String {
    Sha256::digest(bytes)[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn labels_digest(labels: &[usize]) -> String {
    let mut hash = Sha256::new();
    for &l in labels {
        hash.update((l as u64).to_le_bytes());
    }
    hash.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// The largest difference, relative to the largest value, under which recomputed features are
/// the same (float rounding of a different batch split; other weights or photos differ by far
/// more).
const SAME_FEATURES: f32 = 1e-4;

impl TwoPhase {
    /// Phase 1's features of `set` (named `name` in the run folder: `train`, `valid`): computed
    /// by [`features`](Self::features), through the run folder's file where there is one (see
    /// the [module docs](self)).
    pub(crate) fn cached_features(
        &self,
        model: &ResNet,
        set: &ImageSet,
        name: &str,
        device: &Device,
    ) -> Result<CachedFeatures> {
        let Some(dir) = self.feature_dir() else {
            let features = self.features(model, set, device)?;
            return Ok(CachedFeatures::Held(Box::new(features)));
        };
        let data = dir.join(format!("{name}.f32"));
        let meta = dir.join(format!("{name}.json"));
        let labels = labels_digest(set.labels());
        std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
        // Folded once for the whole pass, however many writes it takes.
        let pass = FeaturePass::new(self, model, device);
        let progress = self.earlier_pass(&pass, set, &data, &meta, &labels, device)?;
        let mut file = OpenOptions::new()
            .create(true)
            .read(true)
            .write(true)
            .truncate(false)
            .open(&data)
            .map_err(|e| Error::io(&data, e))?;
        let mut dim = progress.as_ref().map(|p| p.dim);
        let mut done = progress.as_ref().map_or(0, |p| p.done);
        let mut writes = progress.as_ref().map_or(Vec::new(), |p| p.writes.clone());
        // Rows past the last recorded write are a killed write's: cut off.
        file.set_len((done * dim.unwrap_or(0) * 4) as u64)
            .and_then(|_| file.seek(SeekFrom::End(0)))
            .map_err(|e| Error::io(&data, e))?;
        if done > 0 && done < set.len() {
            self.say(&format!(
                "resuming the feature pass at image {} of {} ({})",
                done + 1,
                set.len(),
                data.display()
            ));
        } else if done > 0 {
            self.say(&format!(
                "reading the features back from {}",
                data.display()
            ));
        } else {
            self.say(&format!(
                "computing the frozen backbone's features of the {name} images once, into {}",
                data.display()
            ));
        }
        let segment = SEGMENT.max(self.config.batch_size);
        while done < set.len() {
            let end = (done + segment).min(set.len());
            let features = pass.of(set, done..end)?;
            let [rows, d] = features.dims();
            let values = features.into_data().convert::<f32>();
            let values = values.as_slice::<f32>().map_err(|e| Error::BadTensor {
                tensor: "features".into(),
                reason: format!("{e:?}"),
            })?;
            let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
            file.write_all(&bytes)
                .and_then(|_| file.sync_data())
                .map_err(|e| Error::io(&data, e))?;
            debug_assert_eq!(rows, end - done);
            writes.push(WriteRecord {
                images: [done, end],
                sha256: bytes_digest(&bytes),
            });
            (dim, done) = (Some(d), end);
            let record = Progress {
                images: set.len(),
                dim: d,
                done,
                labels: labels.clone(),
                writes: writes.clone(),
            };
            let json = serde_json::to_vec(&record).expect("progress serializes");
            write_atomic(&meta, &json)?;
        }
        let dim = dim.unwrap_or(0);
        let bytes = (set.len() * dim * 4) as u64;
        if bytes > self.memory_budget {
            self.say(&format!(
                "the {name} features ({}) stay in {}: over the memory budget ({})",
                crate::data::in_words(bytes),
                data.display(),
                crate::data::in_words(self.memory_budget)
            ));
            return Ok(CachedFeatures::File(FeatureFile {
                path: data,
                file: Mutex::new(file),
                dim,
            }));
        }
        let mut bytes = Vec::new();
        file.seek(SeekFrom::Start(0))
            .and_then(|_| file.read_to_end(&mut bytes))
            .map_err(|e| Error::io(&data, e))?;
        let values = bytes
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        Ok(CachedFeatures::Held(Box::new(on(
            values,
            [set.len(), dim],
            device,
        ))))
    }

    /// Where the feature files go: the run folder's `features/`, or `None` without one.
    fn feature_dir(&self) -> Option<PathBuf> {
        Some(self.run_dir.as_ref()?.join("features"))
    }

    /// Removes the feature files (at the unfreeze point: phase 2 does not use them).
    pub(crate) fn remove_feature_files(&self) {
        let Some(dir) = self.feature_dir() else {
            return;
        };
        let _ = std::fs::remove_dir_all(dir);
    }

    /// What an earlier pass of this run left for `set`, if it may be reused: a record of the
    /// same images and labels, the writes whose bytes still match their checksums (the pass
    /// goes on from the first that does not), and the first batch's rows the features this
    /// model computes now. Anything else is removed, with the reason said, and the pass starts
    /// over.
    fn earlier_pass(
        &self,
        pass: &FeaturePass,
        set: &ImageSet,
        data: &Path,
        meta: &Path,
        labels: &str,
        device: &Device,
    ) -> Result<Option<Progress>> {
        let Ok(text) = std::fs::read(meta) else {
            if data.exists() {
                self.say(&format!(
                    "{}: it has no record ({} is missing); the feature pass starts over",
                    data.display(),
                    meta.display()
                ));
                let _ = std::fs::remove_file(data);
            }
            return Ok(None);
        };
        let verdict = match serde_json::from_slice::<Progress>(&text) {
            Err(_) => Err("its record cannot be read".to_string()),
            Ok(p) if p.images != set.len() || p.labels != labels || p.dim == 0 => {
                Err("it was made for other images".to_string())
            }
            Ok(p) => self.checked_writes(p, data).and_then(|p| match p.done {
                0 => Ok(p),
                _ => match self.same_first_batch(pass, set, data, p.dim, device) {
                    Ok(true) => Ok(p),
                    Ok(false) => Err("it was made from other images or weights".to_string()),
                    Err(e) => Err(e.to_string()),
                },
            }),
        };
        match verdict {
            Ok(progress) => Ok(Some(progress)),
            Err(reason) => {
                self.say(&format!(
                    "{}: {reason}; the feature pass starts over",
                    data.display()
                ));
                let _ = std::fs::remove_file(meta);
                let _ = std::fs::remove_file(data);
                Ok(None)
            }
        }
    }

    /// `progress` cut back to its writes whose bytes match their checksums, in order (said, if
    /// any is cut); an error naming what is wrong when nothing can be kept of a pass that had
    /// rows.
    fn checked_writes(
        &self,
        mut progress: Progress,
        data: &Path,
    ) -> std::result::Result<Progress, String> {
        let row = progress.dim * 4;
        let mut file = File::open(data).map_err(|e| format!("it cannot be read ({e})"))?;
        let (mut good, mut bytes) = (0, Vec::new());
        // A write at a time: the file may be larger than memory.
        for write in &progress.writes {
            let [start, end] = write.images;
            bytes.resize((end.saturating_sub(start)) * row, 0);
            let read = file
                .seek(SeekFrom::Start((start * row) as u64))
                .and_then(|_| file.read_exact(&mut bytes));
            if start != good || read.is_err() || bytes_digest(&bytes) != write.sha256 {
                break;
            }
            good = end;
        }
        if good < progress.done {
            if good == 0 {
                return Err(format!(
                    "its first {} images' rows are not as they were written (shorter, or changed)",
                    progress
                        .done
                        .min(progress.writes.first().map_or(0, |w| w.images[1]))
                ));
            }
            self.say(&format!(
                "{}: the rows from image {} on are not as they were written; computed again from \
                 there",
                data.display(),
                good + 1
            ));
            progress.writes.retain(|w| w.images[1] <= good);
            progress.done = good;
        }
        Ok(progress)
    }

    /// Whether the first batch's rows in `data` are the features `model` computes now.
    fn same_first_batch(
        &self,
        pass: &FeaturePass,
        set: &ImageSet,
        data: &Path,
        dim: usize,
        device: &Device,
    ) -> Result<bool> {
        let check = 0..set.len().min(self.config.batch_size.max(1));
        let now = pass.of(set, check.clone())?;
        let file = File::open(data).map_err(|e| Error::io(data, e))?;
        let saved = FeatureFile {
            path: data.to_path_buf(),
            file: Mutex::new(file),
            dim,
        };
        let saved = saved.rows(&check.collect::<Vec<_>>(), device)?;
        Ok(now.dims() == saved.dims() && {
            let scale = now.clone().abs().max().into_scalar::<f32>().max(1e-12);
            let gap = (now - saved).abs().max().into_scalar::<f32>();
            gap <= SAME_FEATURES * scale
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::{ImageBatcher, Preprocess};
    use crate::model::ResNetConfig;
    use crate::train::TwoPhaseConfig;

    #[test]
    fn labels_digest_tells_orders_apart() {
        assert_eq!(labels_digest(&[0, 1, 2]), labels_digest(&[0, 1, 2]));
        assert_ne!(labels_digest(&[0, 1, 2]), labels_digest(&[0, 2, 1]));
        assert_eq!(labels_digest(&[]).len(), 64);
    }

    /// A learner with a run folder, a small model on the default CPU backend (with autodiff, as
    /// `fit` runs), and 600 random 8x8 images: three of the pass's writes of 256.
    fn setup() -> (TwoPhase, ResNet, ImageSet, Device, tempfile::TempDir) {
        let device = crate::device::default_device().unwrap().autodiff();
        let model = ResNetConfig::resnet18(3)
            .with_width(4)
            .init(&device)
            .unwrap();
        let n = 600;
        let pixels = (0..n * 3 * 64)
            .map(|i| ((i * 7919 + i / 97) % 251) as u8)
            .collect();
        let set = ImageSet::new(pixels, (0..n).map(|i| i % 3).collect(), 8, 8).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let mut learner = TwoPhase::new(
            TwoPhaseConfig::new().with_batch_size(32),
            ImageBatcher::new(Preprocess::Torch),
        );
        learner.progress = false;
        learner.run_dir = Some(dir.path().to_path_buf());
        (learner, model, set, device, dir)
    }

    fn values(features: &CachedFeatures, n: usize, device: &Device) -> Vec<f32> {
        let all = features.range(0..n, device).unwrap();
        all.into_data()
            .convert::<f32>()
            .try_to_vec::<f32>()
            .unwrap()
    }

    /// Every value of a pass of `learner` over `set` (through its run folder's file).
    fn pass(learner: &TwoPhase, model: &ResNet, set: &ImageSet, device: &Device) -> Vec<f32> {
        let features = learner
            .cached_features(model, set, "train", device)
            .unwrap();
        values(&features, set.len(), device)
    }

    /// Row `row`'s first value in the feature file set to `value`.
    fn poke(file: &Path, dim: usize, row: usize, value: f32) {
        let mut f = OpenOptions::new().write(true).open(file).unwrap();
        f.seek(SeekFrom::Start((row * dim * 4) as u64)).unwrap();
        f.write_all(&value.to_le_bytes()).unwrap();
    }

    /// The record's checksums made to match the file as it is now (as if the pass had written
    /// these rows).
    fn reseal(meta: &Path, data: &Path) {
        let mut progress: Progress = serde_json::from_slice(&std::fs::read(meta).unwrap()).unwrap();
        let bytes = std::fs::read(data).unwrap();
        let row = progress.dim * 4;
        for write in &mut progress.writes {
            let [a, b] = write.images;
            write.sha256 = bytes_digest(&bytes[a * row..b * row]);
        }
        std::fs::write(meta, serde_json::to_vec(&progress).unwrap()).unwrap();
    }

    fn paths(dir: &tempfile::TempDir) -> (PathBuf, PathBuf) {
        let features = dir.path().join("features");
        (features.join("train.f32"), features.join("train.json"))
    }

    /// A pass killed after its fourth write (its record says 256 images; a torn write trails
    /// them) resumes there: the rows before are read back, not computed again (a row marked,
    /// with its checksum to match, keeps its mark), the rest computed, the torn bytes cut off.
    #[test]
    fn a_killed_pass_resumes_where_its_last_write_ended() {
        let (learner, model, set, device, dir) = setup();
        let n = set.len();
        let fresh = learner.features(&model, &set, &device).unwrap();
        let dim = fresh.dims()[1];
        let fresh: Vec<f32> = fresh
            .into_data()
            .convert::<f32>()
            .try_to_vec::<f32>()
            .unwrap();
        let cached = learner
            .cached_features(&model, &set, "train", &device)
            .unwrap();
        assert_eq!(values(&cached, n, &device), fresh);
        drop(cached);

        let (data, meta) = paths(&dir);
        assert_eq!(
            std::fs::metadata(&data).unwrap().len(),
            (n * dim * 4) as u64
        );
        let mut progress: Progress =
            serde_json::from_slice(&std::fs::read(&meta).unwrap()).unwrap();
        assert_eq!(progress.writes.len(), n.div_ceil(64));
        progress.done = 256;
        progress.writes.truncate(4);
        std::fs::write(&meta, serde_json::to_vec(&progress).unwrap()).unwrap();
        poke(&data, dim, 100, 7.0);
        poke(&data, dim, 400, 7.0);
        reseal(&meta, &data);

        let resumed = learner
            .cached_features(&model, &set, "train", &device)
            .unwrap();
        let got = values(&resumed, n, &device);
        assert_eq!(
            got[100 * dim],
            7.0,
            "a row before the kill was computed again"
        );
        assert_eq!(
            got[400 * dim..],
            fresh[400 * dim..],
            "rows after it were not"
        );
        assert_eq!(
            std::fs::metadata(&data).unwrap().len(),
            (n * dim * 4) as u64
        );
        let progress: Progress = serde_json::from_slice(&std::fs::read(&meta).unwrap()).unwrap();
        assert_eq!((progress.done, progress.writes.len()), (n, n.div_ceil(64)));
    }

    /// Rows changed on disk after they were written do not match their write's checksum: the
    /// pass goes on from that write, and what was before it is kept.
    #[test]
    fn rows_changed_on_disk_are_computed_again_from_their_write() {
        let (learner, model, set, device, dir) = setup();
        let n = set.len();
        let fresh = pass(&learner, &model, &set, &device);
        let dim = fresh.len() / n;
        let (data, meta) = paths(&dir);
        poke(&data, dim, 100, 7.0);
        reseal(&meta, &data);
        poke(&data, dim, 300, 1.5e3);
        let got = pass(&learner, &model, &set, &device);
        assert_eq!(
            got[100 * dim],
            7.0,
            "the rows before the changed write are kept"
        );
        assert_eq!(
            got[256 * dim..],
            fresh[256 * dim..],
            "the changed write is computed again"
        );
        // A file cut short keeps the writes it still holds whole.
        let file = OpenOptions::new().write(true).open(&data).unwrap();
        file.set_len((130 * dim * 4) as u64).unwrap();
        drop(file);
        let got = pass(&learner, &model, &set, &device);
        assert_eq!(got[100 * dim], 7.0);
        assert_eq!(got[128 * dim..], fresh[128 * dim..]);
    }

    /// An earlier pass whose first batch is not what the model computes now (other weights or
    /// photos), even with checksums that match, is not reused: the pass starts over.
    #[test]
    fn a_pass_of_other_weights_is_computed_afresh() {
        let (learner, model, set, device, dir) = setup();
        let n = set.len();
        let first = learner
            .cached_features(&model, &set, "train", &device)
            .unwrap();
        let fresh = values(&first, n, &device);
        let dim = fresh.len() / n;
        drop(first);
        let (data, meta) = paths(&dir);
        poke(&data, dim, 3, 1e3);
        poke(&data, dim, 500, 1e3);
        reseal(&meta, &data);
        let again = learner
            .cached_features(&model, &set, "train", &device)
            .unwrap();
        assert_eq!(values(&again, n, &device), fresh);
        // Other labels (a reordered set) are not reused either.
        drop(again);
        poke(&data, dim, 500, 1e3);
        reseal(&meta, &data);
        let mut labels = set.labels().to_vec();
        labels.rotate_left(1);
        let reordered = ImageSet::new(set.pixels().to_vec(), labels, 8, 8).unwrap();
        let other = learner
            .cached_features(&model, &reordered, "train", &device)
            .unwrap();
        assert_eq!(values(&other, n, &device)[500 * dim], fresh[500 * dim]);
        // Nor is a record that cannot be read.
        poke(&data, dim, 500, 1e3);
        std::fs::write(&meta, b"{ not json").unwrap();
        let unread = learner
            .cached_features(&model, &reordered, "train", &device)
            .unwrap();
        assert_eq!(values(&unread, n, &device)[500 * dim], fresh[500 * dim]);
    }

    /// Over the memory budget, the features stay in the file and batches read their rows.
    #[test]
    fn features_over_the_budget_are_read_from_the_file() {
        let (learner, model, set, device, _dir) = setup();
        let held = learner
            .cached_features(&model, &set, "train", &device)
            .unwrap();
        assert!(matches!(held, CachedFeatures::Held(_)));
        let filed = learner
            .with_memory_budget(1)
            .cached_features(&model, &set, "train", &device)
            .unwrap();
        assert!(matches!(filed, CachedFeatures::File(_)));
        let indices = [599, 0, 17, 256, 17];
        let rows = |f: &CachedFeatures| -> Vec<f32> {
            let rows = f.rows(&indices, &device).unwrap();
            rows.into_data()
                .convert::<f32>()
                .try_to_vec::<f32>()
                .unwrap()
        };
        assert_eq!(rows(&filed), rows(&held));
        assert_eq!(
            values(&filed, set.len(), &device),
            values(&held, set.len(), &device)
        );
    }
}
