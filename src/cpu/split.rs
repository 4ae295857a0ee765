//! How a batch and a product are shared out between the pool's threads so that none idles.
//!
//! A batch at least as large as the pool runs one share of whole images per thread, each start
//! to end on its thread: no hand-offs between the ~150 steps of a ResNet50 forward. Images left
//! over (fewer than the threads: all of a single photo, or the ninth of 9 on 8 threads) run after
//! the shares as one batch whose every layer is split between the threads: a product by blocks of
//! output channels and of rows ([`product_tasks`]), a Winograd convolution by blocks of tiles, a
//! gather or a pooling by rows. Before, 9 images on 8 threads ran as 5 shares of 2 (three
//! threads idle throughout), and 3 on 2 as shares of 2 and 1.

use std::ops::Range;

/// A batch of `n` images on `threads` threads: `shares`, one per thread, run side by side with
/// each layer on one thread; then `rest`, run with each layer split between the threads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct BatchPlan {
    /// Consecutive equal runs of images, one per thread (none when the batch is smaller than
    /// the pool).
    pub(crate) shares: Vec<Range<usize>>,
    /// The images after the shares, fewer than the threads.
    pub(crate) rest: Range<usize>,
}

/// The plan for `n` images on `threads` threads (see [`BatchPlan`]).
pub(crate) fn plan_batch(n: usize, threads: usize) -> BatchPlan {
    let threads = threads.max(1);
    let per = n / threads;
    let shares = if per == 0 {
        Vec::new()
    } else {
        (0..threads).map(|t| t * per..(t + 1) * per).collect()
    };
    BatchPlan {
        shares,
        rest: per * threads..n,
    }
}

/// `count` items in `parts` consecutive runs whose lengths differ by at most one (fewer runs when
/// there are fewer items), none empty.
pub(crate) fn even_runs(count: usize, parts: usize) -> Vec<Range<usize>> {
    let parts = parts.clamp(1, count.max(1));
    let (base, extra) = (count / parts, count % parts);
    let mut start = 0;
    (0..parts)
        .map(|p| {
            let len = base + usize::from(p < extra);
            let run = start..start + len;
            start += len;
            run
        })
        .filter(|run| !run.is_empty())
        .collect()
}

/// The tasks of a product of `rows` rows by `panels` panels of output channels split between
/// `threads` threads: (rows, panels) blocks that cover the product once. The panels go in even
/// groups of whole `unit`s (2 where pairs of panels run through one wide tile), one group per
/// thread where there are enough; where there are fewer groups than threads, the rows are split
/// too, in multiples of `row_unit`, so that every thread has a block. Each task reads its panels'
/// part of the weight once, and packs its rows of the left operand. With `by_rows` (the caller's
/// choice) the rows alone are split, wherever there are `row_unit`s enough for every thread:
/// each thread then packs only its own rows, where split by panels both would pack all of them.
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
pub(crate) fn product_tasks(
    rows: usize,
    panels: usize,
    threads: usize,
    unit: usize,
    row_unit: usize,
    by_rows: bool,
) -> Vec<(Range<usize>, Range<usize>)> {
    let unit = unit.max(1);
    let row_unit = row_unit.max(1);
    if by_rows && rows.div_ceil(row_unit) >= threads {
        return even_runs(rows.div_ceil(row_unit), threads)
            .into_iter()
            .map(|r| (r.start * row_unit..(r.end * row_unit).min(rows), 0..panels))
            .collect();
    }
    let groups = even_runs(panels.div_ceil(unit), threads);
    let row_parts = threads.div_ceil(groups.len().max(1));
    let rows = even_runs(rows.div_ceil(row_unit), row_parts)
        .into_iter()
        .map(|r| r.start * row_unit..(r.end * row_unit).min(rows));
    let rows: Vec<_> = rows.collect();
    rows.iter()
        .flat_map(|r| {
            groups
                .iter()
                .map(move |g| (r.clone(), g.start * unit..(g.end * unit).min(panels)))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_thread_gets_whole_images_or_a_share_of_each_layer() {
        for threads in [1usize, 2, 3, 8, 16] {
            for n in [
                1,
                threads.saturating_sub(1),
                threads,
                threads + 1,
                2 * threads + 3,
            ] {
                let plan = plan_batch(n, threads);
                // Every image once, in order: the shares, then the rest.
                let covered: Vec<usize> = (plan.shares.iter().cloned().flatten())
                    .chain(plan.rest.clone())
                    .collect();
                assert_eq!(covered, (0..n).collect::<Vec<_>>(), "{n} on {threads}");
                // Either every thread has a share of equal size, or there are none.
                assert!(plan.shares.is_empty() || plan.shares.len() == threads);
                let sizes: Vec<usize> = plan.shares.iter().map(|s| s.len()).collect();
                assert!(sizes.windows(2).all(|w| w[0] == w[1]), "{sizes:?}");
                // What is left is split between the threads, and is less than a share each.
                assert!(plan.rest.len() < threads, "{n} on {threads}: {plan:?}");
            }
        }
        // The case: 9 images on 8 threads are 8 shares of 1, then 1 split.
        let plan = plan_batch(9, 8);
        assert_eq!((plan.shares.len(), plan.rest), (8, 8..9));
        // One photo: no shares, the photo split.
        assert_eq!(
            plan_batch(1, 2),
            BatchPlan {
                shares: vec![],
                rest: 0..1
            }
        );
    }

    #[test]
    fn product_tasks_cover_the_product_once_and_busy_every_thread() {
        let cases = [
            // (rows, panels, threads, unit): a photo's stem on 16 threads (4 panels, as pairs),
            // stage 4 of a photo (49 rows, 128 panels), odd panels, fewer rows than threads.
            (12_544, 4, 16, 2),
            (49, 128, 16, 2),
            (3_136, 5, 2, 1),
            (3_136, 5, 4, 2),
            (5, 1, 8, 1),
            (100, 4, 1, 2),
        ];
        for ((rows, panels, threads, unit), by_rows) in
            cases.into_iter().flat_map(|c| [(c, false), (c, true)])
        {
            let tasks = product_tasks(rows, panels, threads, unit, 12, by_rows);
            let mut seen = vec![0u8; rows * panels];
            for (r, p) in &tasks {
                assert!(!r.is_empty() && !p.is_empty());
                // Pairs stay whole (but for the last, odd panel).
                assert!(p.start % unit == 0 && (p.end % unit == 0 || p.end == panels));
                assert!(r.start % 12 == 0);
                for row in r.clone() {
                    for panel in p.clone() {
                        seen[row * panels + panel] += 1;
                    }
                }
            }
            assert!(seen.iter().all(|&s| s == 1), "{rows}x{panels} on {threads}");
            // By rows, where there are enough: one task per thread, each with every panel.
            if by_rows && rows.div_ceil(12) >= threads {
                assert_eq!(tasks.len(), threads);
                assert!(tasks.iter().all(|(_, p)| *p == (0..panels)));
            }
            // As many tasks as threads wherever the product has that many row blocks.
            let blocks = rows.div_ceil(12) * panels.div_ceil(unit);
            assert!(tasks.len() >= threads.min(blocks), "{tasks:?}");
        }
        // On two threads, 4 panels are two groups of 2, the rows whole (as before this plan).
        assert_eq!(
            product_tasks(1000, 4, 2, 1, 12, false),
            vec![(0..1000, 0..2), (0..1000, 2..4)]
        );
        // By rows: two runs of whole 12-row tiles.
        assert_eq!(
            product_tasks(1000, 4, 2, 1, 12, true),
            vec![(0..504, 0..4), (504..1000, 0..4)]
        );
    }
}
