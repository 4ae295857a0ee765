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
    let share =
        |total: usize, class: usize| total / num_classes + usize::from(class < total % num_classes);
    let mut rng = StdRng::seed_from_u64(seed);
    let mut split = Split {
        train: Vec::with_capacity(train),
        validation: Vec::with_capacity(validation),
    };
    for (class, members) in by_class.iter_mut().enumerate() {
        let (t, v) = (share(train, class), share(validation, class));
        if members.len() < t + v {
            return Err(Error::InvalidConfig {
                field: "train_samples",
                expected: format!("at most {} images of class {class} in all", members.len()),
                found: format!("{t} for training and {v} for validation"),
            });
        }
        members.shuffle(&mut rng);
        split.train.extend_from_slice(&members[..t]);
        split.validation.extend_from_slice(&members[t..t + v]);
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
}
