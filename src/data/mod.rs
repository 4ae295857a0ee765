//! Data: CIFAR-10 from its official files, users' photo folders, seeded stratified samples,
//! preprocessing that belongs to the weights, augmentation, and batches for Burn.
//!
//! ```no_run
//! use resnet_transfer::data::{Cifar10, ImageBatcher, Preprocess, stratified_split};
//!
//! let cifar = Cifar10::find_or_download(None, Some(&Default::default()))?;
//! // The seed's recipe: 10,000 training images (1,000 per class) and a validation split.
//! let split = stratified_split(cifar.train.labels(), 10, 10_000, 5_000, 42)?;
//! let train = cifar.train.select(&split.train);
//! let batcher = ImageBatcher::new(Preprocess::Caffe);
//! let device = resnet_transfer::device::default_device()?;
//! let batch = batcher.batch_of(&train, &[0, 1, 2, 3], 0, &device)?;
//! assert_eq!(batch.images.dims(), [4, 3, 32, 32]);
//! # Ok::<(), resnet_transfer::Error>(())
//! ```

mod batcher;
pub mod cifar10;
mod folder;
mod images;
mod photo;
mod preprocess;
mod sample;

pub use batcher::{
    ImageBatch, ImageBatcher, ImageDataset, ImageItem, epoch_batches, epoch_order, item_seed,
    prefetched,
};
pub use cifar10::{Cifar10, Downloader, Format};
pub use folder::{
    IMAGE_EXTENSIONS, ImageChunks, ImageFiles, ImageFolder, default_memory_budget, in_words,
    list_image_folder, read_image_folder,
};
pub use images::ImageSet;
pub use photo::{read_augmented, read_image};
pub(crate) use preprocess::resize_to;
pub use preprocess::{
    Augment, CAFFE_MEAN_BGR, PhotoAugment, Preprocess, TORCH_MEAN, TORCH_STD, resize,
};
pub use sample::{
    DEFAULT_TRAIN_SAMPLES, DEFAULT_VALID_CAP, DEFAULT_VALID_SHARE, Split, sample_sizes,
    share_split, stratified_split,
};
