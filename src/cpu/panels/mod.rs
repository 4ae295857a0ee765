//! The folded path's matrix product on x86-64 with AVX2 and FMA: the weight packed once into
//! panels of 16 output channels, and BatchNorm's shift, the shortcut and the ReLU applied as
//! each tile of the output is stored.
//!
//! Why: `gemm` packs its operands on every call. Per convolution that is one copy of the weight,
//! and with one share of the batch per thread both threads pack the same weights. onnxruntime packs constant weights once per session; so
//! does this. The tile is gemm's own shape turned around (6 rows of the im2col matrix by 16
//! output channels, 12 of the 16 AVX registers as accumulators), blocked so that a 16 KiB block
//! of a panel stays in L1 while every row tile of a 96-row block in L2 passes over it; that
//! block of the im2col matrix is itself packed, 6 rows interleaved, so a tile's broadcasts read
//! one stream. On a CPU with AVX-512F, whole pairs of panels go through a wider tile (12 rows by
//! 32 channels, [`WideTile`]), picked at run time; `RESNET_TRANSFER_NO_AVX512=1` keeps the AVX2
//! tile (to compare them). CPUs without AVX2 and FMA, and other architectures, keep `gemm`. What
//! it gained is measured in docs/PERFORMANCE.md.

use std::mem::MaybeUninit;
use std::ops::Range;

use super::Epilogue;

mod avx2;
mod avx512;
pub(crate) mod narrow;
pub(crate) mod transposed;

use avx2::Tile;
use avx512::WideTile;

/// Output channels per panel: two AVX registers.
const NR: usize = 16;
/// Rows of the im2col matrix per tile.
const MR: usize = 6;
/// Depth per block: a panel's block is `KC · NR` floats, 16 KiB.
const KC: usize = 256;
/// A row block's nominal rows (`MC · KC` floats of the left operand, 96 KiB), by which the
/// products choose row order and a split by rows; the blocks themselves are cut evenly up to
/// [`MC_MAX`].
const MC: usize = 96;

/// Rows per block at most: a product's rows are cut into blocks of whole 12-row tiles as even
/// as they come, none longer than this ([`row_blocks`]). Cut at [`MC`] rows, 196 rows (stage 4 of
/// four images) made blocks of 96, 96 and 4, and the block of 4 read the whole weight once more
/// (4 to 9 MB from L3 at stage 4); now they are 108 and 88.
const MC_MAX: usize = 120;

/// `rows` cut into blocks of whole 12-row tiles (the last one cut short at `rows.end`), their
/// tile counts differing by at most one, none longer than `max` rows (at least one tile).
fn row_blocks(rows: Range<usize>, max: usize) -> impl Iterator<Item = Range<usize>> {
    let unit = 2 * MR;
    let tiles = rows.len().div_ceil(unit);
    let count = tiles.div_ceil((max / unit).max(1));
    let start = rows.start;
    super::split::even_runs(tiles, count)
        .into_iter()
        .map(move |run| start + run.start * unit..(start + run.end * unit).min(rows.end))
}

/// Products with rows enough to reuse the weight ([`MC`] twice or more) run in row order: each
/// 12-row tile across a group of panel pairs whose weight's depth block is this many bytes,
/// before the next tile ([`DepthBlock::pair_tile`]). The output and the shortcut are then
/// written and read a kibibyte of each row at a time, where panel order went down every row of
/// the block in 128-byte strips, pair after pair; the group's weight stays in L2. The 1x1
/// expansions, which add the shortcut, gained most: one photo's stage 1 ran at 44 GMAC/s rather
/// than 31 and stage 2 at 60 rather than 43 (one thread); at batch 8 (4 images a thread),
/// stage 3's at 63 rather than 47, and the batch took 261 ms rather than 276 (medians of 5,
/// alternated). Products of fewer rows keep panel order, which fetches the next pair's weight
/// ahead: at batch 1, stage 4's weight comes from L3. The AVX2 tile runs in row order too, 6-row
/// tiles across a group of single panels ([`DepthBlock::panel_tile`]).
const ROW_ORDER_GROUP: usize = 256 << 10;

/// In row order, each tile fetches its own pair's weight this many rows (cache lines) ahead of
/// the row it multiplies, and the lines of the next tile's output (and shortcut) for writing. The
/// weight comes from L2 there, a new pair every tile: the tile alone, run over 8 pairs of
/// weight in turn, made 81 GMAC/s in place of 89 over one pair; fetched 8 rows ahead, 87. The
/// output's lines, fetched one tile ahead: at batch 8 on one thread, stage 1's expansions onto
/// the shortcut took 22 ms in place of 29, and the batch 447 ms in place of 475 (alternated).
const AHEAD: usize = 8;

/// Whether this CPU runs the panel product (checked once).
pub(crate) fn available() -> bool {
    static AVAILABLE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *AVAILABLE.get_or_init(|| is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma"))
}

/// Whether this CPU has AVX-512F, for the wide tile (checked once), unless the environment
/// variable `RESNET_TRANSFER_NO_AVX512` is set to `1` or another yes ([`env_flag`]; to compare
/// the two tiles on one machine). A new user's `=0` kept the AVX2 tile when any value did.
///
/// [`env_flag`]: super::tuning::env_flag
pub(crate) fn wide_available() -> bool {
    static WIDE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *WIDE.get_or_init(|| {
        is_x86_feature_detected!("avx512f") && !super::tuning::env_flag("RESNET_TRANSFER_NO_AVX512")
    })
}

/// A `[K, C_out]` row-major weight as panels: panel `p` holds columns `16p..16p+16` of every row
/// in row order, zeros past `C_out`.
#[derive(Debug, Clone)]
pub(crate) struct Panels {
    data: Vec<f32>,
    depth: usize,
    c_out: usize,
}

impl Panels {
    /// Packs `weight`, `[depth, c_out]` row-major.
    pub(crate) fn pack(weight: &[f32], depth: usize, c_out: usize) -> Self {
        Self::pack_rows(depth, c_out, |r| &weight[r * c_out..(r + 1) * c_out])
    }

    /// Packs the `[depth, c_out]` matrix whose row `r` is `row(r)` (`c_out` values).
    pub(crate) fn pack_rows<'a>(
        depth: usize,
        c_out: usize,
        row: impl Fn(usize) -> &'a [f32],
    ) -> Self {
        let panels = c_out.div_ceil(NR);
        let mut data = vec![0.0; panels * depth * NR];
        for (p, panel) in data.chunks_exact_mut(depth * NR).enumerate() {
            let cols = NR.min(c_out - p * NR);
            for (r, packed) in panel.chunks_exact_mut(NR).enumerate() {
                packed[..cols].copy_from_slice(&row(r)[p * NR..p * NR + cols]);
            }
        }
        Self { data, depth, c_out }
    }

    /// The `[depth, c_out]` row-major weight these panels were packed from.
    pub(crate) fn unpack(&self) -> Vec<f32> {
        let mut weight = vec![0.0; self.depth * self.c_out];
        for (p, panel) in self.data.chunks_exact(self.depth * NR).enumerate() {
            let cols = NR.min(self.c_out - p * NR);
            for (row, packed) in weight
                .chunks_exact_mut(self.c_out)
                .zip(panel.chunks_exact(NR))
            {
                row[p * NR..p * NR + cols].copy_from_slice(&packed[..cols]);
            }
        }
        weight
    }

    /// Where panel `p`'s row `row` starts (a pointer for prefetching, never read through).
    fn block(&self, p: usize, row: usize) -> *const f32 {
        self.data.as_ptr().wrapping_add((p * self.depth + row) * NR)
    }

    /// Output channels rounded up to whole panels: the length the shift must have.
    pub(crate) fn padded_channels(c_out: usize) -> usize {
        c_out.div_ceil(NR) * NR
    }
}

/// [`product`] into a new `[rows, C_out]` buffer, which the product fills without it being
/// zeroed first.
pub(crate) fn product_vec(
    a: &[f32],
    depth: usize,
    weight: &Panels,
    first: usize,
    rows: usize,
    epilogue: Epilogue<'_>,
    split: bool,
) -> Vec<f32> {
    let len = rows * weight.c_out;
    let mut out = Vec::with_capacity(len);
    let spare = &mut out.spare_capacity_mut()[..len];
    product(a, depth, weight, first, spare, epilogue, split);
    // SAFETY: `product` wrote every value of `spare`, the first `len` of `out`'s capacity.
    unsafe { out.set_len(len) };
    out
}

/// Whether a product `depth` deep runs in one pass over its depth (one depth block), as
/// [`product_onto`] needs.
pub(crate) fn one_pass(depth: usize) -> bool {
    depth <= KC
}

/// `shortcut = relu?(a · weight[first..first + depth] + shift + shortcut)`: [`product`] with its
/// output written over the shortcut it adds, for a product of one pass ([`one_pass`]), whose
/// tiles read each place's shortcut before they store there. A block's last convolution then
/// reads and writes one buffer where it read the shortcut and wrote a fresh one (whose lines
/// were fetched before they were written): at stage 1 of a batch, 12.8 MB less traffic per
/// convolution and image share, as onnxruntime's convolution with its sum fused does.
#[allow(clippy::too_many_arguments)]
pub(crate) fn product_onto(
    a: &[f32],
    depth: usize,
    weight: &Panels,
    first: usize,
    shortcut: &mut [f32],
    shift: &[f32],
    relu: bool,
    split: bool,
) {
    assert!(
        one_pass(depth),
        "a product onto its shortcut is one pass deep"
    );
    // SAFETY: `MaybeUninit<f32>` has `f32`'s layout, and the product writes only whole values.
    let out = unsafe {
        std::slice::from_raw_parts_mut(
            shortcut.as_mut_ptr().cast::<MaybeUninit<f32>>(),
            shortcut.len(),
        )
    };
    let epilogue = Epilogue {
        shift,
        residual: None,
        relu,
    };
    product_with(
        a,
        depth,
        weight,
        first,
        out,
        epilogue,
        split,
        wide_available(),
        true,
    );
}

/// [`product_vec`] for a left operand made a block of rows at a time: `gather(rows, buffer)`
/// writes rows `rows` of the `[rows, depth]` matrix into `buffer` (whole, every value), and each
/// block is multiplied while it is still in cache. A block is the rows of about 256 KiB, or
/// [`MC_MAX`] rows where fewer, cut evenly ([`row_blocks`]). With `split`, where every thread
/// gets at least one row block, the rows are shared out between the pool's threads, each
/// gathering and multiplying its own; otherwise one thread runs them all.
pub(crate) fn product_blocks(
    rows: usize,
    depth: usize,
    gather: impl Fn(Range<usize>, &mut [f32]) + Sync,
    weight: &Panels,
    first: usize,
    epilogue: Epilogue<'_>,
    split: bool,
) -> Vec<f32> {
    let c_out = weight.c_out;
    let len = rows * c_out;
    let mut out = Vec::with_capacity(len);
    let spare = &mut out.spare_capacity_mut()[..len];
    let threads = super::team::threads();
    if split && threads > 1 && row_block_each(rows) {
        let mut tasks = Vec::with_capacity(threads);
        let mut rest = spare;
        for run in super::split::even_runs(rows.div_ceil(2 * MR), threads) {
            let run = run.start * 2 * MR..(run.end * 2 * MR).min(rows);
            let (this, tail) = std::mem::take(&mut rest).split_at_mut(run.len() * c_out);
            rest = tail;
            tasks.push((run, this));
        }
        super::team::for_each(tasks, |(run, out)| {
            let epilogue = epilogue.rows(run.clone(), c_out);
            product_blocks_into(run, depth, &gather, weight, first, epilogue, out);
        });
    } else {
        product_blocks_into(0..rows, depth, &gather, weight, first, epilogue, spare);
    }
    // SAFETY: the runs' `product_blocks_into` wrote every value of their parts of `spare`,
    // which together are the first `len` values of `out`'s capacity.
    unsafe { out.set_len(len) };
    out
}

/// Whether `rows` rows give every thread of the pool at least one row block of the product: where
/// they do, a split product shares out rows rather than panels.
pub(crate) fn row_block_each(rows: usize) -> bool {
    rows >= super::team::threads() * MC
}

/// [`product_blocks`] on one thread, for rows `rows` of the product into `out` (their
/// `rows.len() · C_out` values, every one written); `epilogue` is already cut to these rows.
fn product_blocks_into(
    rows: Range<usize>,
    depth: usize,
    gather: &impl Fn(Range<usize>, &mut [f32]),
    weight: &Panels,
    first: usize,
    epilogue: Epilogue<'_>,
    out: &mut [MaybeUninit<f32>],
) {
    let c_out = weight.c_out;
    let block = ((256 << 10) / (4 * depth.max(1))).max(MC_MAX);
    thread_local! {
        static BLOCK: std::cell::Cell<Vec<f32>> = const { std::cell::Cell::new(Vec::new()) };
    }
    let mut buffer = BLOCK.take();
    for Range { start: r0, end: r1 } in row_blocks(rows.clone(), block) {
        buffer.resize((r1 - r0) * depth, 0.0);
        gather(r0..r1, &mut buffer);
        let local = r0 - rows.start..r1 - rows.start;
        product(
            &buffer,
            depth,
            weight,
            first,
            &mut out[local.start * c_out..local.end * c_out],
            epilogue.rows(local, c_out),
            false,
        );
    }
    BLOCK.set(buffer);
}

/// `out = relu?(a · weight[first..first + depth] + shift [+ residual])` (the [`Epilogue`]) for
/// `a` `[rows, depth]`, `out` and the shortcut `[rows, C_out]`, all row-major; the shift padded to
/// whole panels. Every value of `out` is written (before any is read back), so it may start
/// uninitialized. With `split`, blocks of panels (and, where there are fewer panels than threads,
/// of rows) are shared out between the pool's threads ([`product_tasks`]): each task reads its
/// part of the weight once.
///
/// [`product_tasks`]: super::split::product_tasks
pub(crate) fn product(
    a: &[f32],
    depth: usize,
    weight: &Panels,
    first: usize,
    out: &mut [MaybeUninit<f32>],
    epilogue: Epilogue<'_>,
    split: bool,
) {
    let wide = wide_available();
    product_with(a, depth, weight, first, out, epilogue, split, wide, false);
}

/// `out = a · weight + shift` on one thread, for rows of `a` `lda` values apart and rows of
/// `out` `ldc` apart, where [`product`] has them `depth` and `C_out` apart: Winograd's products
/// read and write one position of every transformed tile, the tiles' positions side by side.
/// `out` holds `(rows - 1) · ldc + C_out` values; each row's `C_out` are written, the values
/// between the rows left as they are.
pub(crate) fn product_strided(
    (a, lda): (&[f32], usize),
    depth: usize,
    weight: &Panels,
    (out, ldc): (&mut [MaybeUninit<f32>], usize),
    rows: usize,
    shift: &[f32],
) {
    let c_out = weight.c_out;
    assert!(
        available()
            && rows > 0
            && depth > 0
            && depth <= lda
            && c_out <= ldc
            && a.len() >= (rows - 1) * lda + depth
            && out.len() >= (rows - 1) * ldc + c_out
            && depth <= weight.depth
            && shift.len() >= Panels::padded_channels(c_out),
        "strided panel product: operands do not match"
    );
    let epilogue = Epilogue::linear(shift);
    let wide = wide_available();
    // SAFETY: AVX2 and FMA checked above; rows `0..rows` of `a` and `out` lie inside the
    // slices at the strides given (checked above), one thread writes them all.
    unsafe {
        product_avx2(
            a,
            [depth, lda, ldc],
            weight,
            0,
            0..rows,
            out.as_mut_ptr().cast::<f32>(),
            &epilogue,
            0..c_out.div_ceil(NR),
            wide,
            false,
        )
    }
}

/// [`product`], with `wide` choosing the AVX-512 tile for whole pairs of panels (checked
/// against the CPU) or the AVX2 tile throughout: the tests run both on a CPU that has both.
/// With `onto`, `out` holds the shortcut, which each tile adds where it stores
/// ([`product_onto`]; one pass only).
#[allow(clippy::too_many_arguments)]
fn product_with(
    a: &[f32],
    depth: usize,
    weight: &Panels,
    first: usize,
    out: &mut [MaybeUninit<f32>],
    epilogue: Epilogue<'_>,
    split: bool,
    wide: bool,
    onto: bool,
) {
    let wide = wide && wide_available();
    let c_out = weight.c_out;
    let rows = out.len() / c_out;
    assert!(
        available()
            && depth > 0
            && out.len() == rows * c_out
            && a.len() >= rows * depth
            && first + depth <= weight.depth
            && epilogue.shift.len() >= Panels::padded_channels(c_out)
            && epilogue.residual.is_none_or(|r| r.len() >= out.len())
            && !(onto && (epilogue.residual.is_some() || !one_pass(depth))),
        "panel product: operands do not match"
    );
    // SAFETY: the CPU has AVX2 and FMA (checked above), and every pointer the blocks form stays
    // inside the slices whose sizes were checked above. The first depth block (there is one:
    // `depth > 0`) stores every tile of every panel, each row's valid columns, before a later
    // block loads them back. Split, the tasks are disjoint blocks of `out` (rows by panels).
    let panels = c_out.div_ceil(NR);
    let out = Shared(out.as_mut_ptr().cast::<f32>());
    let run = |rows: Range<usize>, panels: Range<usize>| {
        let out = &out;
        // SAFETY: as said above: AVX2 and FMA present, offsets inside the checked slices, and
        // each task's rows and panels a block of `out` no other task writes.
        unsafe {
            product_avx2(
                a,
                [depth, depth, c_out],
                weight,
                first,
                rows,
                out.0,
                &epilogue,
                panels,
                wide,
                onto,
            )
        }
    };
    let threads = super::team::threads();
    if split && threads > 1 {
        let unit = if wide { 2 } else { 1 };
        // By rows wherever every thread gets whole row blocks: the weight is read by each
        // thread, but no row is packed twice, and each thread reads the rows it wrote in the
        // layer before. Where rows were split only for a left operand larger than the weight
        // (c_out <= rows), one photo's stage-3 products (196 rows, 256 or 1024 channels) went
        // by panels: 2.86 and 2.30 ms for the 6 expansions and 5 reductions on two threads,
        // against 2.60 and 2.09 by rows, and the photo took 0.5 ms longer (alternated).
        let by_rows = row_block_each(rows);
        let tasks = super::split::product_tasks(rows, panels, threads, unit, 2 * MR, by_rows);
        super::team::for_each(tasks, |(rows, panels)| run(rows, panels));
    } else {
        run(0..rows, 0..panels);
    }
}

/// A pointer the threads of one product share; each writes only its own block of rows and panels.
struct Shared(*mut f32);

// SAFETY: the threads of a split product write disjoint blocks through it.
unsafe impl Sync for Shared {}
// SAFETY: as for `Sync`: the pointer is only used while the product's slices are borrowed.
unsafe impl Send for Shared {}

/// The panel product over `rows` and `panels` (see [`product`]); with `wide`, whole pairs of
/// panels go through the AVX-512 tile. `[depth, lda, ldc]`: the product's depth, and the
/// distances between the rows of `a` and of `out` (and the shortcut), `depth` and `C_out` but
/// for [`product_strided`].
///
/// # Safety
///
/// The CPU has AVX2 and FMA, and AVX-512F if `wide`; `a` holds rows `0..rows.end` of `depth`
/// values `lda` apart, `out` (and the shortcut, if any) rows `0..rows.end` of `C_out` values
/// `ldc` apart, the shift whole panels, `first + depth <= weight.depth`; no other thread writes
/// the block of `rows` and `panels` meanwhile. With `onto`, `out` holds the shortcut
/// (initialized) and `depth <= KC`.
#[target_feature(enable = "avx2,fma")]
#[allow(clippy::too_many_arguments)]
unsafe fn product_avx2(
    a: &[f32],
    [depth, lda, ldc]: [usize; 3],
    weight: &Panels,
    first: usize,
    rows: Range<usize>,
    out: *mut f32,
    epilogue: &Epilogue<'_>,
    panels: Range<usize>,
    wide: bool,
    onto: bool,
) {
    // The block of `a` being multiplied, packed tile by tile: for each depth `k`, the tile's 6
    // values contiguous, so that a tile's broadcasts read one sequential stream.
    // One buffer per thread, kept between products, so none is allocated and zeroed per product.
    thread_local! {
        static PACKED: std::cell::Cell<Vec<f32>> = const { std::cell::Cell::new(Vec::new()) };
    }
    let mut packed = PACKED.take();
    packed.resize(MC_MAX.div_ceil(MR) * MR * KC, 0.0);
    for Range { start: r0, end: r1 } in row_blocks(rows.clone(), MC_MAX) {
        for k0 in (0..depth).step_by(KC) {
            let kc = KC.min(depth - k0);
            // SAFETY: the caller vouches for AVX2, and AVX-512F where `wide`.
            unsafe { pack_block(a, lda, r0..r1, k0..k0 + kc, &mut packed, wide) };
            let block = DepthBlock {
                packed: &packed,
                weight,
                row: first + k0,
                rows: r0..r1,
                out,
                shift: epilogue.shift,
                // Onto the shortcut: the tiles load each place's shortcut before they store
                // there, in their only pass.
                residual: if onto {
                    out.cast_const()
                } else {
                    epilogue.residual.map_or(std::ptr::null(), <[f32]>::as_ptr)
                },
                pass: Pass {
                    kc,
                    ldc,
                    first: k0 == 0,
                    last: k0 + kc == depth,
                    relu: epilogue.relu,
                },
            };
            let is_pair = |p: usize| wide && p + 1 < panels.end && (p + 2) * NR <= weight.c_out;
            // What runs after panel `p`'s step: the next step of this depth block, or the first
            // of the next depth block; its weight is fetched into cache while this step's tiles
            // run (at batch 1, stage 3 and 4 weights come from L3, read once).
            let next_depths = KC.min(depth - (k0 + kc));
            let next = |p: usize| {
                let (q, row, rows) = if p < panels.end {
                    (p, first + k0, kc)
                } else if next_depths > 0 {
                    (panels.start, first + k0 + kc, next_depths)
                } else {
                    return None;
                };
                Some(if is_pair(q) {
                    Prefetch {
                        streams: [weight.block(q, row), weight.block(q + 1, row)],
                        rows,
                    }
                } else {
                    // One panel: its two halves as the two streams.
                    let half = rows.div_ceil(2);
                    let start = weight.block(q, row);
                    Prefetch {
                        streams: [start, start.wrapping_add(half * NR)],
                        rows: half,
                    }
                })
            };
            // Row order (see `ROW_ORDER_GROUP`): whole pairs only, on the wide tile.
            let row_order =
                wide && rows.len() >= 2 * MC && (panels.start..panels.end).step_by(2).all(is_pair);
            if row_order {
                let group = (ROW_ORDER_GROUP / (2 * NR * kc * 4)).max(1);
                let pairs: Vec<usize> = (panels.start..panels.end).step_by(2).collect();
                for group in pairs.chunks(group) {
                    let mut r = r0;
                    while r < r1 {
                        let m = (2 * MR).min(r1 - r);
                        for &p in group {
                            let row = first + k0 + AHEAD;
                            let ahead = [weight.block(p, row), weight.block(p + 1, row)];
                            // SAFETY: as for `pair` below; the prefetch only names addresses.
                            unsafe { block.pair_tile(p, r, m, ahead, kc, true) };
                        }
                        r += m;
                    }
                }
                continue;
            }
            // The AVX2 tile in row order too: each 6-row tile across a group of panels, the
            // next tile's output fetched for writing. With `RESNET_TRANSFER_NO_AVX512=1`, batch
            // 4 on one thread took 370-417 ms in place of 396-444 (alternated), batch 8 on two
            // 335-362 in place of 347-364, batches of 32 at 32 pixels 31.0-32.3 in place of
            // 32.9-33.9; one photo level. Without the output's fetch, batch 4 on one thread took
            // 345-349 ms against 340-342 (alternated builds).
            if !wide && rows.len() >= 2 * MC {
                let group = (ROW_ORDER_GROUP / (NR * kc * 4)).max(1);
                let all: Vec<usize> = (panels.start..panels.end).collect();
                for group in all.chunks(group) {
                    let mut r = r0;
                    while r < r1 {
                        let m = MR.min(r1 - r);
                        for &p in group {
                            let none = [std::ptr::null(); 2];
                            // SAFETY: as for `panel` below.
                            unsafe { block.panel_tile(p, r, m, none, 0, true) };
                        }
                        r += m;
                    }
                }
                continue;
            }
            let mut p = panels.start;
            while p < panels.end {
                // Two whole panels side by side, on a CPU with AVX-512: 12-row tiles over both,
                // then the rows left over by the same tile cut to them; else panel by panel.
                let pair = is_pair(p);
                let step = if pair { 2 } else { 1 };
                // SAFETY: the caller vouches for the CPU (AVX-512F where `wide`, so where
                // `pair`), the operands' sizes and `panels`, which `p` and `p + 1` lie in.
                unsafe {
                    if pair {
                        block.pair(p, next(p + step));
                    } else {
                        block.panel(p, next(p + step));
                    }
                }
                p += step;
            }
        }
    }
    PACKED.set(packed);
}

/// Packs rows `rows` of `a` (`lda` values apart), depths `depths`, tile by tile into `packed`:
/// for each depth the tile's 6 rows side by side. Whole tiles are packed 8 depths at a time by
/// shuffles ([`avx2::pack_six`], or [`avx512::pack_six`] where `wide`).
///
/// # Safety
///
/// The CPU has AVX2, and AVX-512F where `wide`.
unsafe fn pack_block(
    a: &[f32],
    lda: usize,
    rows: Range<usize>,
    depths: Range<usize>,
    packed: &mut [f32],
    wide: bool,
) {
    for (t, tile) in packed.chunks_exact_mut(MR * KC).enumerate() {
        let first_row = rows.start + t * MR;
        if first_row >= rows.end {
            break;
        }
        let row = |i: usize| &a[(first_row + i) * lda..][depths.clone()];
        let count = MR.min(rows.end - first_row);
        if count == MR {
            let rows = std::array::from_fn(|i| row(i).as_ptr());
            // SAFETY: the caller vouches for AVX2, and AVX-512F where `wide`; each of the 6
            // rows holds `depths.len()` values and the tile `MR · KC >= 6 · depths.len()`.
            unsafe {
                if wide {
                    avx512::pack_six(rows, depths.len(), tile.as_mut_ptr());
                } else {
                    avx2::pack_six(rows, depths.len(), tile.as_mut_ptr());
                }
            }
            continue;
        }
        for i in 0..count {
            for (k, &v) in row(i).iter().enumerate() {
                tile[k * MR + i] = v;
            }
        }
    }
}

/// One block of rows at one block of depths: what its tiles multiply and where they store.
struct DepthBlock<'a> {
    /// The rows of `a`, packed by [`pack_block`].
    packed: &'a [f32],
    weight: &'a Panels,
    /// The weight's first row this depth block multiplies.
    row: usize,
    rows: Range<usize>,
    out: *mut f32,
    /// Whole panels.
    shift: &'a [f32],
    /// The shortcut, shaped as `out`, or null.
    residual: *const f32,
    pass: Pass,
}

impl DepthBlock<'_> {
    /// Panel `p`'s block of the weight (this block's depths).
    ///
    /// # Safety
    ///
    /// `p` is one of the weight's panels.
    unsafe fn panel_block(&self, p: usize) -> *const f32 {
        let weight = self.weight;
        // SAFETY: the caller's panel, at a row inside the weight (the product checked
        // `first + depth <= weight.depth`).
        unsafe { weight.data.as_ptr().add((p * weight.depth + self.row) * NR) }
    }

    /// The packed tile of the rows from `r` (a multiple of 6 past the block's first).
    fn packed_tile(&self, r: usize) -> *const f32 {
        self.packed[(r - self.rows.start) / MR * MR * KC..].as_ptr()
    }

    /// The shortcut at output offset `offset`, or null where there is none.
    ///
    /// # Safety
    ///
    /// `offset` lies inside the output.
    unsafe fn residual_at(&self, offset: usize) -> *const f32 {
        if self.residual.is_null() {
            self.residual
        } else {
            // SAFETY: the shortcut has the output's shape; the caller's offset is inside it.
            unsafe { self.residual.add(offset) }
        }
    }

    /// Panels `p` and `p + 1` by the AVX-512 tile: 12 rows at a time, then the rows left over
    /// (fewer than 12) by the same tile cut to them. The tiles share out the prefetch of `next`.
    ///
    /// # Safety
    ///
    /// The CPU has AVX-512F; panels `p` and `p + 1` are whole panels of the weight; `next`'s
    /// blocks lie inside the weight.
    #[target_feature(enable = "avx2,fma")]
    unsafe fn pair(&self, p: usize, next: Option<Prefetch>) {
        let tiles = self.rows.len().div_ceil(2 * MR);
        let mut r = self.rows.start;
        while r < self.rows.end {
            let m = (2 * MR).min(self.rows.end - r);
            let t = (r - self.rows.start) / (2 * MR);
            let (prefetch, prefetch_rows) = Prefetch::share(next.as_ref(), t, tiles);
            // SAFETY: the caller's contract, rows `r..r + m` inside the block.
            unsafe { self.pair_tile(p, r, m, prefetch, prefetch_rows, false) };
            r += m;
        }
    }

    /// Where the next tile of these panels stores (and reads the shortcut), `rows` below the
    /// tile from row `r` at output offset `offset`, to fetch for writing while this one runs;
    /// null where `fetch` is off or the block has no next tile.
    fn next_tile(&self, offset: usize, r: usize, rows: usize, fetch: bool) -> *const f32 {
        if fetch && r + rows < self.rows.end {
            self.out
                .wrapping_add(offset + rows * self.pass.ldc)
                .cast_const()
        } else {
            std::ptr::null()
        }
    }

    /// One tile of [`pair`](Self::pair): rows `r..r + m` (1 to 12) by panels `p` and `p + 1`,
    /// fetching `prefetch_rows` lines of each of the `prefetch` streams into cache.
    ///
    /// # Safety
    ///
    /// As for [`pair`](Self::pair); rows `r..r + m` lie in the block, `r` a multiple of 12 past
    /// its first row.
    #[target_feature(enable = "avx2,fma")]
    unsafe fn pair_tile(
        &self,
        p: usize,
        r: usize,
        m: usize,
        prefetch: [*const f32; 2],
        prefetch_rows: usize,
        fetch_next: bool,
    ) {
        let offset = r * self.pass.ldc + p * NR;
        let next_c = self.next_tile(offset, r, 2 * MR, fetch_next);
        let a = self.packed_tile(r);
        // SAFETY: rows `r..r + m` lie in the block, columns `p·16..p·16 + 32` <= `C_out`;
        // the packed tiles of those rows lie inside `packed` (the second is only formed,
        // not read, where `m <= 6`); panels `p` and `p + 1` and their shift exist; the
        // caller checked AVX-512F.
        unsafe {
            let b = self.panel_block(p);
            let tile = WideTile {
                a: [a, a.wrapping_add(MR * KC)],
                b: [b, b.add(self.weight.depth * NR)],
                c: self.out.add(offset),
                shift: self.shift.as_ptr().add(p * NR),
                residual: self.residual_at(offset),
                prefetch,
                prefetch_rows,
                // Panel order fetches the next pair's weight, which the tiles of this pair
                // use after it; row order its own, a few rows ahead.
                to_l2: !fetch_next,
                next_c,
            };
            tile.run_rows(m, &self.pass)
        }
    }

    /// Panel `p` by the AVX2 tile, 6 rows at a time. The tiles share out the prefetch of
    /// `next`.
    ///
    /// # Safety
    ///
    /// The CPU has AVX2 and FMA; `p` is one of the weight's panels.
    #[target_feature(enable = "avx2,fma")]
    unsafe fn panel(&self, p: usize, next: Option<Prefetch>) {
        let tiles = self.rows.len().div_ceil(MR);
        let mut r = self.rows.start;
        while r < self.rows.end {
            let m = MR.min(self.rows.end - r);
            let t = (r - self.rows.start) / MR;
            let (prefetch, prefetch_rows) = Prefetch::share(next.as_ref(), t, tiles);
            // SAFETY: the caller's contract, rows `r..r + m` inside the block.
            unsafe { self.panel_tile(p, r, m, prefetch, prefetch_rows, false) };
            r += m;
        }
    }

    /// One tile of [`panel`](Self::panel): rows `r..r + m` (1 to 6) by panel `p`, fetching
    /// `prefetch_rows` lines of each of the `prefetch` streams into cache; in row order
    /// (`row_order`), the next tile's output for writing. (Its own panel's weight fetched a few
    /// rows ahead, as the wide tile does, made no difference here: batch 4 on one thread
    /// 337-355 ms with it, 337-347 without, alternated builds.)
    ///
    /// # Safety
    ///
    /// As for [`panel`](Self::panel); rows `r..r + m` lie in the block, `r` a multiple of 6 past
    /// its first row.
    #[target_feature(enable = "avx2,fma")]
    unsafe fn panel_tile(
        &self,
        p: usize,
        r: usize,
        m: usize,
        prefetch: [*const f32; 2],
        prefetch_rows: usize,
        row_order: bool,
    ) {
        let c_out = self.weight.c_out;
        let cols = NR.min(c_out - p * NR);
        let offset = r * self.pass.ldc + p * NR;
        let next_c = self.next_tile(offset, r, MR, row_order);
        // SAFETY: row `r` lies in the block and panel column `p·16` < `C_out`, so the
        // offsets are inside the output and the shortcut; `shift` holds whole panels; `m`
        // rows of the tile are valid; the caller vouches for AVX2 and FMA.
        unsafe {
            let tile = Tile {
                a: self.packed_tile(r),
                b: self.panel_block(p),
                c: self.out.add(offset),
                shift: self.shift.as_ptr().add(p * NR),
                residual: self.residual_at(offset),
                cols,
                prefetch,
                prefetch_rows,
                next_c,
            };
            tile.run_rows(m, &self.pass)
        }
    }
}

/// What the tiles of one step (a pair of panels, or one) fetch into cache for the step after
/// them: two streams of `rows` rows of 16 values (a cache line each), from the next step's two
/// panels, or from the two halves of its one panel.
struct Prefetch {
    streams: [*const f32; 2],
    rows: usize,
}

impl Prefetch {
    /// Tile `t`'s share of `next` (of `tiles` tiles): its streams' starts and rows (none, if
    /// there is no next step).
    fn share(next: Option<&Prefetch>, t: usize, tiles: usize) -> ([*const f32; 2], usize) {
        match next {
            Some(next) => {
                let share = next.rows * t / tiles..next.rows * (t + 1) / tiles;
                let at = |b: *const f32| b.wrapping_add(share.start * NR);
                ([at(next.streams[0]), at(next.streams[1])], share.len())
            }
            None => ([std::ptr::null(); 2], 0),
        }
    }
}

/// What every tile of one depth block shares.
struct Pass {
    kc: usize,
    ldc: usize,
    /// The first depth block: accumulate from zero, not from `c`.
    first: bool,
    /// The last depth block: apply shift, shortcut and ReLU while storing.
    last: bool,
    relu: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Row blocks tile the rows in whole 12-row tiles (the last cut short), none above the
    /// limit, their tile counts at most one apart: stage 4's 196 rows of four images make two
    /// blocks, not 96, 96 and 4.
    #[test]
    fn row_blocks_are_even_whole_tiles() {
        let blocks: Vec<_> = row_blocks(0..196, MC_MAX).collect();
        assert_eq!(blocks, [0..108, 108..196]);
        for (rows, max) in [
            (5..6, 120),
            (3..200, 120),
            (0..784, 120),
            (7..1000, 1024),
            (0..12, 12),
        ] {
            let blocks: Vec<_> = row_blocks(rows.clone(), max).collect();
            assert_eq!(blocks.first().map(|b| b.start), Some(rows.start));
            assert_eq!(blocks.last().map(|b| b.end), Some(rows.end));
            assert!(blocks.windows(2).all(|w| w[0].end == w[1].start));
            assert!(
                blocks
                    .iter()
                    .all(|b| !b.is_empty() && b.len() <= max.max(12))
            );
            let (whole, last) = blocks.split_at(blocks.len() - 1);
            assert!(
                whole.iter().all(|b| b.len() % 12 == 0),
                "{rows:?}: {blocks:?}"
            );
            let tiles: Vec<usize> = blocks.iter().map(|b| b.len().div_ceil(12)).collect();
            let (lo, hi) = (tiles.iter().min().unwrap(), tiles.iter().max().unwrap());
            assert!(hi - lo <= 1, "{rows:?}: {blocks:?} {last:?}");
        }
    }

    /// The strided product (Winograd's) gives the same bits as the product on the same rows
    /// packed together, and leaves the values between the output's rows as they were: rows
    /// with partial tiles, several depth blocks, a lone panel, and row order (200 rows).
    #[test]
    fn strided_product_is_the_product_on_rows_apart() {
        if !available() {
            return;
        }
        let value = |i: usize, salt: usize| ((i * 7919 + salt * 104_729) % 1013) as f32 / 506.5;
        for (rows, depth, c_out, gap) in [(7, 300, 37, 5), (200, 64, 64, 64), (30, 40, 80, 3)] {
            let (lda, ldc) = (depth + gap, c_out + 2 * gap);
            let spread: Vec<f32> = (0..rows * lda).map(|i| value(i, 1) - 1.0).collect();
            let packed: Vec<f32> = (spread.chunks(lda))
                .flat_map(|row| &row[..depth])
                .copied()
                .collect();
            let w: Vec<f32> = (0..depth * c_out).map(|i| value(i, 2) - 1.0).collect();
            let panels = Panels::pack(&w, depth, c_out);
            let mut shift: Vec<f32> = (0..c_out).map(|i| value(i, 3)).collect();
            shift.resize(Panels::padded_channels(c_out), 0.0);
            let mut want = vec![MaybeUninit::new(f32::NAN); rows * c_out];
            product(
                &packed,
                depth,
                &panels,
                0,
                &mut want,
                Epilogue::linear(&shift),
                false,
            );
            let mut out = vec![MaybeUninit::new(-7.0f32); rows * ldc];
            product_strided(
                (&spread, lda),
                depth,
                &panels,
                (&mut out, ldc),
                rows,
                &shift,
            );
            for (r, row) in out.chunks(ldc).enumerate() {
                for (c, v) in row.iter().enumerate() {
                    // SAFETY: initialized above, each value either written or left as -7.
                    let v = unsafe { v.assume_init() };
                    if c < c_out {
                        // SAFETY: the product wrote every value (NaN before).
                        let w = unsafe { want[r * c_out + c].assume_init() };
                        assert_eq!(
                            v.to_bits(),
                            w.to_bits(),
                            "{rows}x{depth}x{c_out} at {r},{c}"
                        );
                    } else {
                        assert_eq!(v, -7.0, "{rows}x{depth}x{c_out}: gap at {r},{c} written");
                    }
                }
            }
        }
    }

    /// The panel product against a plain triple loop, for shapes with partial tiles, partial
    /// panels, several depth blocks and row blocks, a weight row offset, with and without the
    /// shortcut and the ReLU; with the AVX2 tile alone and, where the CPU has AVX-512, with the
    /// wide tile for pairs of whole panels (the 200-row, 64-channel case has 12-row tiles over
    /// two pairs, and rows left over; 5 and 11 rows run on the wide tile cut to them).
    #[test]
    fn panel_product_matches_the_definition() {
        if !available() {
            return;
        }
        let value =
            |i: usize, salt: usize| ((i * 7919 + salt * 104_729) % 1013) as f32 / 506.5 - 1.0;
        for (rows, depth, c_out, first) in [
            (1, 3, 4, 0),
            (7, 300, 37, 5),
            (200, 600, 64, 0),
            (30, 40, 80, 2),
            (5, 20, 64, 1),
            (11, 9, 32, 0),
            // Row order (`ROW_ORDER_GROUP`): many rows, whole pairs, in one group and in
            // groups of 8 and 2 pairs; and one with a last, odd panel, which keeps panel order.
            (200, 64, 96, 0),
            (400, 150, 64, 3),
            (200, 256, 320, 0),
            (250, 100, 80, 1),
            // Row order on the AVX2 tile with a last panel of 5 channels (on the wide tile,
            // panel order: the pairs and the lone panel).
            (230, 70, 37, 1),
        ] {
            let total = first + depth + 3;
            let a: Vec<f32> = (0..rows * depth).map(|i| value(i, 1)).collect();
            let w: Vec<f32> = (0..total * c_out).map(|i| value(i, 2)).collect();
            let mut shift: Vec<f32> = (0..c_out).map(|i| value(i, 3)).collect();
            shift.resize(Panels::padded_channels(c_out), 0.0);
            let res: Vec<f32> = (0..rows * c_out).map(|i| value(i, 4)).collect();
            let panels = Panels::pack(&w, total, c_out);
            let cases = [
                (None, false, false),
                (Some(&res[..]), true, false),
                (Some(&res[..]), true, true),
            ];
            for ((residual, relu, split), wide) in
                cases.into_iter().flat_map(|c| [(c, false), (c, true)])
            {
                let mut out = vec![MaybeUninit::new(f32::NAN); rows * c_out];
                let epilogue = Epilogue {
                    shift: &shift,
                    residual,
                    relu,
                };
                // Split, also in a pool of 8 threads: blocks of rows as well as of panels.
                let mut out8 = out.clone();
                product_with(
                    &a, depth, &panels, first, &mut out, epilogue, split, wide, false,
                );
                if split {
                    let pool = rayon::ThreadPoolBuilder::new().num_threads(8).build();
                    pool.unwrap().install(|| {
                        product_with(
                            &a, depth, &panels, first, &mut out8, epilogue, true, wide, false,
                        )
                    });
                    // SAFETY: both written in full (NaN before).
                    let same = out.iter().zip(&out8).all(|(x, y)| unsafe {
                        x.assume_init().to_bits() == y.assume_init().to_bits()
                    });
                    assert!(same, "{rows}x{depth}x{c_out}: 8 threads differ");
                }
                // SAFETY: initialized as NaN above (and every value overwritten).
                let out: Vec<f32> = out.iter().map(|v| unsafe { v.assume_init() }).collect();
                // Onto the shortcut itself (one pass deep): the same numbers, to the bit.
                if let (Some(residual), true) = (residual, one_pass(depth)) {
                    let mut onto = residual.to_vec();
                    let out_onto: &mut [MaybeUninit<f32>] = &mut onto
                        .iter()
                        .map(|&v| MaybeUninit::new(v))
                        .collect::<Vec<_>>();
                    let epilogue = Epilogue {
                        residual: None,
                        ..epilogue
                    };
                    product_with(
                        &a, depth, &panels, first, out_onto, epilogue, split, wide, true,
                    );
                    // SAFETY: initialized from the shortcut above.
                    onto = out_onto
                        .iter()
                        .map(|v| unsafe { v.assume_init() })
                        .collect();
                    let same = out
                        .iter()
                        .zip(&onto)
                        .all(|(x, y)| x.to_bits() == y.to_bits());
                    assert!(same, "{rows}x{depth}x{c_out}: onto the shortcut differs");
                }
                for r in 0..rows {
                    for j in 0..c_out {
                        let mut want = shift[j] + residual.map_or(0.0, |res| res[r * c_out + j]);
                        for k in 0..depth {
                            want += a[r * depth + k] * w[(first + k) * c_out + j];
                        }
                        if relu {
                            want = want.max(0.0);
                        }
                        let got = out[r * c_out + j];
                        assert!(
                            (got - want).abs() <= 1e-4 * (1.0 + want.abs()),
                            "{rows}x{depth}x{c_out} at ({r}, {j}): {got} vs {want}"
                        );
                    }
                }
            }
        }
    }
}
