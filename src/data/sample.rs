//! Seeded, stratified samples: the seed's 10,000-image training set and a validation split.

use rand::SeedableRng;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;

use crate::error::{Error, Result};

/// Indices of a training sample and a validation split drawn from one labelled set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Split {
    /// Training indices, ascending.
    pub train: Vec<usize>,
    /// Validation indices, ascending, disjoint from `train`.
    pub validation: Vec<usize>,
}

/// Draws `train` and `validation` images from `labels`, stratified: every class gets the same
/// share (the first classes one more when the total does not divide evenly), chosen at random
/// by `seed`. The same seed always gives the same split.
///
/// ```
/// use resnet_transfer::data::stratified_split;
///
/// let labels: Vec<usize> = (0..100).map(|i| i % 10).collect();
/// let split = stratified_split(&labels, 10, 20, 10, 42).unwrap();
/// assert_eq!((split.train.len(), split.validation.len()), (20, 10));
/// ```
pub fn stratified_split(
    labels: &[usize],
    num_classes: usize,
    train: usize,
    validation: usize,
    seed: u64,
) -> Result<Split> {
    let mut by_class: Vec<Vec<usize>> = vec![Vec::new(); num_classes];
    for (i, &label) in labels.iter().enumerate() {
        if let Some(members) = by_class.get_mut(label) {
            members.push(i);
        }
    }
    let share = |total: usize, class: usize| equal_share(total, num_classes, class);
    let mut rng = StdRng::seed_from_u64(seed);
    let mut split = Split {
        train: Vec::with_capacity(train),
        validation: Vec::with_capacity(validation),
    };
    if let Some(class) =
        (0..num_classes).find(|&c| by_class[c].len() < share(train, c) + share(validation, c))
    {
        let (t, v) = (share(train, class), share(validation, class));
        let (field, max) = match max_valid(&by_class, train) {
            0 => (
                "train_samples",
                max_train(&by_class, validation).unwrap_or(0),
            ),
            max => ("valid_samples", max),
        };
        return Err(Error::InvalidConfig {
            field,
            expected: format!(
                "at most {max}: class {class} has {} images, and {t} for training plus {v} for \
                 validation do not fit",
                by_class[class].len()
            ),
            found: format!("{train} for training and {validation} for validation"),
        });
    }
    for (class, members) in by_class.iter_mut().enumerate() {
        let (t, v) = (share(train, class), share(validation, class));
        members.shuffle(&mut rng);
        split.train.extend_from_slice(&members[..t]);
        split.validation.extend_from_slice(&members[t..t + v]);
    }
    split.train.sort_unstable();
    split.validation.sort_unstable();
    Ok(split)
}

/// Class `class`'s share of `total` images spread evenly over `num_classes` (the first classes one
/// more when it does not divide).
fn equal_share(total: usize, num_classes: usize, class: usize) -> usize {
    total / num_classes + usize::from(class < total % num_classes)
}

fn fits(by_class: &[Vec<usize>], train: usize, valid: usize) -> bool {
    let n = by_class.len();
    by_class
        .iter()
        .enumerate()
        .all(|(c, m)| equal_share(train, n, c) + equal_share(valid, n, c) <= m.len())
}

/// The most training images that fit beside `valid` validation images, if any.
fn max_train(by_class: &[Vec<usize>], valid: usize) -> Option<usize> {
    let total: usize = by_class.iter().map(Vec::len).sum();
    (0..=total).rev().find(|&t| fits(by_class, t, valid))
}

fn max_valid(by_class: &[Vec<usize>], train: usize) -> usize {
    let total: usize = by_class.iter().map(Vec::len).sum();
    (0..=total)
        .rev()
        .find(|&v| fits(by_class, train, v))
        .unwrap_or(0)
}

/// The seed's training sample: 10,000 images.
pub const DEFAULT_TRAIN_SAMPLES: usize = 10_000;
/// The validation share of the images a run uses, when its size is not given.
pub const DEFAULT_VALID_SHARE: f64 = 0.2;
/// The most validation images taken by default.
pub const DEFAULT_VALID_CAP: usize = 2_000;

/// Sizes of a stratified training sample and validation split ([`stratified_split`]) that fit
/// `labels`. A size not given is chosen to fit any set: training [`DEFAULT_TRAIN_SAMPLES`] where
/// there are enough images, and validation [`DEFAULT_VALID_SHARE`] of the images used, at most
/// [`DEFAULT_VALID_CAP`] (CIFAR-10: 10,000 and 2,000; a set of 500: 400 and 100). Sizes that do
/// not fit give an [`Error::InvalidConfig`] naming `train_samples` or `valid_samples` and the
/// largest value that would. Given a training size, the default validation size shrinks to
/// what is left beside it; a training size that leaves none is refused (a run without
/// validation is asked for with `valid` 0).
///
/// ```
/// use resnet_transfer::data::sample_sizes;
///
/// let labels: Vec<usize> = (0..500).map(|i| i % 10).collect();
/// assert_eq!(sample_sizes(&labels, 10, None, None).unwrap(), (400, 100));
/// // Given a training size, the default validation size shrinks to what fits beside it.
/// assert_eq!(sample_sizes(&labels, 10, Some(450), None).unwrap(), (450, 50));
/// let err = sample_sizes(&labels, 10, Some(450), Some(100)).unwrap_err().to_string();
/// assert!(err.contains("valid_samples") && err.contains("at most 50"), "{err}");
/// // Every image for training leaves none for validation: refused, unless asked for.
/// let err = sample_sizes(&labels, 10, Some(500), None).unwrap_err().to_string();
/// assert!(err.contains("train_samples") && err.contains("at most 400 keeps"), "{err}");
/// assert_eq!(sample_sizes(&labels, 10, Some(500), Some(0)).unwrap(), (500, 0));
/// ```
pub fn sample_sizes(
    labels: &[usize],
    num_classes: usize,
    train: Option<usize>,
    valid: Option<usize>,
) -> Result<(usize, usize)> {
    let mut by_class: Vec<Vec<usize>> = vec![Vec::new(); num_classes];
    for (i, &label) in labels.iter().enumerate() {
        if let Some(members) = by_class.get_mut(label) {
            members.push(i);
        }
    }
    let smallest = by_class.iter().map(Vec::len).min().unwrap_or(0);
    let usable = smallest * num_classes;
    let default_valid = |t: usize| {
        let share = DEFAULT_VALID_SHARE / (1.0 - DEFAULT_VALID_SHARE);
        ((t as f64 * share).round() as usize).min(DEFAULT_VALID_CAP)
    };
    let train = train.unwrap_or_else(|| {
        let t = DEFAULT_TRAIN_SAMPLES.min((usable as f64 * (1.0 - DEFAULT_VALID_SHARE)) as usize);
        let v = valid.unwrap_or_else(|| default_valid(t));
        max_train(&by_class, v).map_or(t, |max| t.min(max))
    });
    if train == 0 {
        return Err(Error::invalid_config(
            "train_samples",
            format!("at least 1 (the smallest of the {num_classes} classes has {smallest} images)"),
            0,
        ));
    }
    let valid = match valid {
        Some(v) => v,
        None => {
            let v = default_valid(train).min(max_valid(&by_class, train));
            if v == 0 && default_valid(train) > 0 {
                // A training size that leaves no image for validation: a run without
                // validation (no early stopping, no jump to show) only where asked for.
                let most = (0..=train)
                    .rev()
                    .find(|&t| fits(&by_class, t, default_valid(t)))
                    .unwrap_or(0);
                let some = (0..=train)
                    .rev()
                    .find(|&t| max_valid(&by_class, t) > 0)
                    .unwrap_or(0);
                return Err(Error::invalid_config(
                    "train_samples",
                    format!(
                        "a size that leaves validation images beside it, and {train} leaves \
                         none that fits every class: at most {most} keeps the default fifth of \
                         the images used for validation, up to {some} keeps fewer; or \
                         `valid_samples` 0 (--valid-samples 0) trains without validation"
                    ),
                    train,
                ));
            }
            v
        }
    };
    if fits(&by_class, train, valid) {
        return Ok((train, valid));
    }
    // Name the size the user gave, or the one we chose if the user gave the other.
    match max_train(&by_class, valid) {
        Some(max) if max > 0 && max_valid(&by_class, train) == 0 => Err(Error::invalid_config(
            "train_samples",
            format!("at most {max} beside {valid} validation images"),
            train,
        )),
        _ => Err(Error::invalid_config(
            "valid_samples",
            format!(
                "at most {} beside {train} training images",
                max_valid(&by_class, train)
            ),
            valid,
        )),
    }
}

/// A validation split that keeps each class's proportion, for sets whose classes differ in
/// size (photo folders): `valid_share` of every class (rounded, at least one image where a class
/// has two or more) goes to validation, the rest to training, chosen by `seed`.
///
/// ```
/// use resnet_transfer::data::share_split;
///
/// let labels = [0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1];
/// let split = share_split(&labels, 2, 0.2, 42).unwrap();
/// assert_eq!((split.train.len(), split.validation.len()), (12, 3));
/// ```
pub fn share_split(
    labels: &[usize],
    num_classes: usize,
    valid_share: f64,
    seed: u64,
) -> Result<Split> {
    if !(0.0..1.0).contains(&valid_share) {
        return Err(Error::invalid_config(
            "valid_share",
            "in [0, 1)",
            valid_share,
        ));
    }
    let mut by_class: Vec<Vec<usize>> = vec![Vec::new(); num_classes];
    for (i, &label) in labels.iter().enumerate() {
        if let Some(members) = by_class.get_mut(label) {
            members.push(i);
        }
    }
    let mut rng = StdRng::seed_from_u64(seed);
    let mut split = Split {
        train: Vec::new(),
        validation: Vec::new(),
    };
    for members in &mut by_class {
        let n = members.len();
        let mut v = (n as f64 * valid_share).round() as usize;
        if valid_share > 0.0 && n >= 2 {
            v = v.clamp(1, n - 1);
        }
        members.shuffle(&mut rng);
        split.validation.extend_from_slice(&members[..v]);
        split.train.extend_from_slice(&members[v..]);
    }
    split.train.sort_unstable();
    split.validation.sort_unstable();
    Ok(split)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels() -> Vec<usize> {
        (0..5000).map(|i| (i * 7) % 10).collect()
    }

    #[test]
    fn stratified_disjoint_and_reproducible() {
        let labels = labels();
        let a = stratified_split(&labels, 10, 1000, 500, 7).unwrap();
        assert_eq!(a, stratified_split(&labels, 10, 1000, 500, 7).unwrap());
        assert_ne!(
            a.train,
            stratified_split(&labels, 10, 1000, 500, 8).unwrap().train
        );
        let mut counts = [0; 10];
        for &i in &a.train {
            counts[labels[i]] += 1;
        }
        assert_eq!(counts, [100; 10]);
        assert!(
            a.validation
                .iter()
                .all(|i| a.train.binary_search(i).is_err())
        );
        assert_eq!(a.validation.len(), 500);
    }

    #[test]
    fn uneven_totals_and_too_many() {
        let labels = labels();
        let s = stratified_split(&labels, 10, 13, 0, 1).unwrap();
        assert_eq!(s.train.len(), 13);
        assert!(stratified_split(&labels, 10, 5000, 1, 1).is_err());
    }

    #[test]
    fn default_sizes_fit_small_and_large_sets() {
        let cifar: Vec<usize> = (0..50_000).map(|i| i % 10).collect();
        assert_eq!(
            sample_sizes(&cifar, 10, None, None).unwrap(),
            (10_000, 2_000)
        );
        let small: Vec<usize> = (0..500).map(|i| i % 10).collect();
        let (t, v) = sample_sizes(&small, 10, None, None).unwrap();
        assert_eq!((t, v), (400, 100));
        stratified_split(&small, 10, t, v, 1).unwrap();
        // Given a training size, the validation share follows it.
        assert_eq!(
            sample_sizes(&small, 10, Some(200), None).unwrap(),
            (200, 50)
        );
        // A validation size too large for the training size given: named, with what works.
        let err = sample_sizes(&small, 10, Some(400), Some(300)).unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("`valid_samples` is 300") && text.contains("at most 100"),
            "{text}"
        );
        // A training size too large on its own.
        let err = sample_sizes(&small, 10, Some(600), Some(0)).unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("`train_samples` is 600") && text.contains("at most 500"),
            "{text}"
        );
        // And stratified_split itself names the right field.
        let err = stratified_split(&small, 10, 400, 2000, 1).unwrap_err();
        assert!(err.to_string().contains("valid_samples"), "{err}");
    }

    #[test]
    fn share_split_keeps_each_class_in_proportion() {
        let labels: Vec<usize> = (0..50).map(|i| usize::from(i >= 10)).collect();
        let s = share_split(&labels, 2, 0.2, 3).unwrap();
        let valid_of = |c| s.validation.iter().filter(|&&i| labels[i] == c).count();
        assert_eq!((valid_of(0), valid_of(1)), (2, 8));
        assert_eq!(s.train.len() + s.validation.len(), 50);
        assert_eq!(s, share_split(&labels, 2, 0.2, 3).unwrap());
        assert!(share_split(&labels, 2, 1.0, 3).is_err());
    }
}
