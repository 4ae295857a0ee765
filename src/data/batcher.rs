//! Batches for Burn: `images [N, 3, H, W]` float32 and `targets [N]`, on any device.

use std::sync::Arc;

use burn::data::dataloader::batcher::Batcher;
use burn::data::dataset::{Dataset, DatasetError};
use burn::tensor::{Device, Int, Tensor, TensorData};
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rayon::prelude::*;

use crate::data::images::ImageSet;
use crate::data::photo::read_augmented;
use crate::data::preprocess::{Augment, PhotoAugment, Preprocess, resize};
use crate::error::Result;

/// A batch ready for the model.
#[derive(Debug, Clone)]
pub struct ImageBatch {
    /// Preprocessed images, `[N, 3, H, W]`.
    pub images: Tensor<4>,
    /// Class indices, `[N]`.
    pub targets: Tensor<1, Int>,
}

/// One labelled image, as Burn's datasets hand them out.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageItem {
    /// Planar RGB pixels.
    pub pixels: Vec<u8>,
    /// Height in pixels.
    pub height: usize,
    /// Width in pixels.
    pub width: usize,
    /// Class index.
    pub label: usize,
    /// Seed of this item's augmentation (ignored without augmentation).
    pub seed: u64,
}

/// An [`ImageSet`] as a Burn [`Dataset`], for Burn's `DataLoader` and [`ImageBatcher`]'s
/// [`Batcher`] implementation.
///
/// Each item carries the augmentation seed [`ImageBatcher::batch_of`] gives the same image in an
/// epoch of the same `seed` ([`item_seed`]), so an image is cropped and flipped alike on either
/// path.
#[derive(Debug, Clone)]
pub struct ImageDataset {
    /// The images.
    pub set: Arc<ImageSet>,
    /// The epoch's seed: vary it between epochs, as the learner does.
    pub seed: u64,
}

impl ImageDataset {
    /// The set's images, augmented (where the batcher augments) with `seed`.
    pub fn new(set: Arc<ImageSet>, seed: u64) -> Self {
        Self { set, seed }
    }
}

impl Dataset<ImageItem> for ImageDataset {
    /// The image at `index`; like every Burn dataset, panics when `index >= len()`. An image
    /// of a streamed set is decoded here at the set's size (random crops then come from that
    /// square, not from the whole photo as [`ImageBatcher::batch_of`] takes them), and a file
    /// that no longer reads is a [`DatasetError`] naming it.
    fn get(&self, index: usize) -> Result<ImageItem, DatasetError> {
        let pixels = self.set.image(index).map_err(DatasetError::new)?;
        Ok(ImageItem {
            pixels: pixels.into_owned(),
            height: self.set.height(),
            width: self.set.width(),
            label: self.set.label(index),
            seed: item_seed(self.seed, index),
        })
    }

    fn len(&self) -> usize {
        self.set.len()
    }
}

/// The augmentation seed of image `index` of a set in an epoch seeded `seed`: what
/// [`ImageBatcher::batch_of`] and [`ImageDataset`] both use.
pub fn item_seed(seed: u64, index: usize) -> u64 {
    seed ^ (index as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)
}

/// Turns images into model inputs: augmentation (training only), resize, preprocessing.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ImageBatcher {
    /// The preprocessing the weights want.
    pub preprocess: Preprocess,
    /// Square side to resize to; `None` keeps the images' size.
    pub size: Option<usize>,
    /// Training augmentation; `None` for evaluation and for the feature cache.
    pub augment: Option<Augment>,
}

impl ImageBatcher {
    /// A batcher without resizing or augmentation.
    pub fn new(preprocess: Preprocess) -> Self {
        Self {
            preprocess,
            size: None,
            augment: None,
        }
    }

    /// The side of the images this batcher produces, given the input side.
    pub fn output_side(&self, height: usize) -> usize {
        self.size.unwrap_or(height)
    }

    /// The model input for one image: augmented (with `seed`), resized and preprocessed.
    pub fn prepare(&self, rgb: &[u8], height: usize, width: usize, seed: u64) -> Vec<f32> {
        let augmented;
        let mut pixels = rgb;
        if let Some(augment) = &self.augment {
            augmented = augment.apply(rgb, height, width, &mut StdRng::seed_from_u64(seed));
            pixels = &augmented;
        }
        let resized;
        if let Some(size) = self.size {
            resized = resize(pixels, height, width, size);
            pixels = &resized;
        }
        let mut out = vec![0.0; pixels.len()];
        self.preprocess.apply(pixels, &mut out);
        out
    }

    /// A batch of the images at `indices` of `set`, prepared in parallel on all cores.
    /// `seed` varies the augmentation (use a different one each epoch).
    ///
    /// The images of a streamed set ([`ImageSet::streamed`]) are decoded here, a batch at a
    /// time; with augmentation, each is cropped from its whole decoded photo
    /// ([`PhotoAugment`], torchvision's standard training transform) rather than padded and
    /// cropped at the set's size ([`Augment`], CIFAR's).
    ///
    /// # Errors
    ///
    /// For a streamed set, the first file that no longer reads ([`ImageSet::image`]).
    pub fn batch_of(
        &self,
        set: &ImageSet,
        indices: &[usize],
        seed: u64,
        device: &Device,
    ) -> Result<ImageBatch> {
        let (h, w) = (set.height(), set.width());
        let side = self.output_side(h);
        let per_image = 3 * side * self.size.unwrap_or(w);
        let mut data = vec![0.0f32; indices.len() * per_image];
        data.par_chunks_mut(per_image)
            .zip(indices.par_iter())
            .try_for_each(|(out, &i)| -> Result<()> {
                let seed = item_seed(seed, i);
                let prepared = match self.augment {
                    Some(_) if set.is_streamed() => {
                        let rng = &mut StdRng::seed_from_u64(seed);
                        let photo = &set.files()[i];
                        let crop = read_augmented(photo, h, &PhotoAugment::default(), rng)?;
                        let plain = ImageBatcher {
                            augment: None,
                            ..*self
                        };
                        plain.prepare(&crop, h, w, seed)
                    }
                    _ => self.prepare(&set.image(i)?, h, w, seed),
                };
                out.copy_from_slice(&prepared);
                Ok(())
            })?;
        let labels: Vec<i64> = indices.iter().map(|&i| set.label(i) as i64).collect();
        Ok(make_batch(
            data,
            labels,
            [side, self.size.unwrap_or(w)],
            device,
        ))
    }
}

fn make_batch(data: Vec<f32>, labels: Vec<i64>, hw: [usize; 2], device: &Device) -> ImageBatch {
    let n = labels.len();
    let images = Tensor::from_data(TensorData::new(data, [n, 3, hw[0], hw[1]]), device);
    let targets = Tensor::from_data(TensorData::new(labels, [n]), device);
    ImageBatch { images, targets }
}

impl Batcher<ImageItem, ImageBatch> for ImageBatcher {
    /// Batches items of one size (the first item's).
    fn batch(&self, items: Vec<ImageItem>, device: &Device) -> ImageBatch {
        let (h, w) = items.first().map(|i| (i.height, i.width)).unwrap_or((1, 1));
        let data: Vec<f32> = items
            .par_iter()
            .flat_map_iter(|item| self.prepare(&item.pixels, item.height, item.width, item.seed))
            .collect();
        let labels = items.iter().map(|i| i.label as i64).collect();
        let hw = self.size.map(|s| [s, s]).unwrap_or([h, w]);
        make_batch(data, labels, hw, device)
    }
}

/// `consume` run on `items` made up to `ahead` items in advance on a thread of their own: the
/// next batches of a streamed photo set are read and decoded while the model trains on this one,
/// as PyTorch's `DataLoader` workers and `tf.data`'s `prefetch` do. The items come in their order;
/// when `consume` returns early (an error), the thread stops at its next item. With `ahead` 0,
/// `consume` takes `items` as they are, on this thread.
///
/// ```
/// use resnet_transfer::data::prefetched;
///
/// let squares = prefetched((1..=4).map(|i| i * i), 2, |items| items.collect::<Vec<_>>());
/// assert_eq!(squares, [1, 4, 9, 16]);
/// ```
pub fn prefetched<T: Send, R>(
    items: impl Iterator<Item = T> + Send,
    ahead: usize,
    consume: impl FnOnce(&mut dyn Iterator<Item = T>) -> R,
) -> R {
    if ahead == 0 {
        let mut items = items;
        return consume(&mut items);
    }
    std::thread::scope(|scope| {
        let (sender, receiver) = std::sync::mpsc::sync_channel(ahead);
        scope.spawn(move || {
            for item in items {
                if sender.send(item).is_err() {
                    break;
                }
            }
        });
        let result = consume(&mut receiver.iter());
        // The thread's next send fails, and it stops.
        drop(receiver);
        result
    })
}

/// The order of one epoch over `len` images: shuffled by `seed`, or in order for `None`.
/// [`epoch_batches`] and the learner's feature cache share it, so both paths see the same
/// batches.
pub fn epoch_order(len: usize, seed: Option<u64>) -> Vec<usize> {
    let mut order: Vec<usize> = (0..len).collect();
    if let Some(seed) = seed {
        order.shuffle(&mut StdRng::seed_from_u64(seed));
    }
    order
}

/// The batches of one epoch over `set`, in a seeded random order (or in order when `shuffle`
/// is `None`); the last batch may be smaller. Each is [`ImageBatcher::batch_of`]'s, with its
/// errors (a streamed set's file that no longer reads).
pub fn epoch_batches<'a>(
    set: &'a ImageSet,
    batcher: &'a ImageBatcher,
    batch_size: usize,
    shuffle: Option<u64>,
    device: &'a Device,
) -> impl Iterator<Item = Result<ImageBatch>> + 'a {
    let order = epoch_order(set.len(), shuffle);
    let seed = shuffle.unwrap_or(0);
    let chunks: Vec<Vec<usize>> = order
        .chunks(batch_size.max(1))
        .map(<[usize]>::to_vec)
        .collect();
    chunks
        .into_iter()
        .map(move |indices| batcher.batch_of(set, &indices, seed, device))
}
