//! Winograd's minimal filtering for 3x3 convolutions of stride 1: F(2x2, 3x3)
//! and F(4x4, 3x3) (Lavin and Gray, 2016), on channels-last maps, with the panel product
//! multiplying the transformed tiles.
//!
//! Why: the panel tile already runs at the core's FMA rate, so the folded path can only get
//! faster with fewer multiply-adds. A 3x3 convolution computed directly costs 9 per output pixel,
//! input channel and output channel; F(4x4, 3x3) computes a 4x4 tile of outputs from a 6x6 tile
//! of inputs with 36 (2.25 per pixel, 4x fewer), F(2x2, 3x3) a 2x2 tile from 4x4 inputs with 16
//! (4 per pixel, 2.25x fewer). The 3x3 convolutions are about 45% of a ResNet50's products.
//!
//! How: each input tile `d` becomes `V = Bᵀ d B` (additions and small multiples, channel by
//! channel), each 3x3 filter `g` becomes `U = G g Gᵀ` once, when the model is folded, and then for
//! each of the `α²` positions `ξ` of the transformed tile (`α = 4` or `6`) one product
//! `M_ξ = V_ξ · U_ξ` over the input channels, `[tiles, C_in] x [C_in, C_out]`, by the panel product.
//! The output tile is `Aᵀ M A`, to which the shift, the shortcut and the ReLU are applied as it is
//! stored. The tiles are taken a block of tile rows at a time (about 512 KiB of transformed input,
//! and at least 96 tiles) so that the transformed tiles are still in L2 when they are multiplied
//! and transformed back.
//!
//! Accuracy: Winograd's error comes almost all from rounding the `α²` products in `f32`, each
//! then multiplied by the output transform's coefficients, so it grows with how far the
//! interpolation points are from 1 (computing the transforms in `f64` changed nothing, measured in
//! a float emulation on activations of a ResNet50 with trained-looking statistics). Lavin's
//! F(4x4, 3x3) on the points 0, ±1, ±2 (coefficients up to 8, fractions of 24) was 5-10 times as
//! far from an exact convolution as the direct product; on the points 0, ±2/3, ±3/2 (the set of
//! five from 0, ±1/4 to ±4 with the smallest error bound, the search that Barabasz et al., "Error
//! analysis and improving the accuracy of Winograd convolution", 2020, describe) it is 2-3 times
//! nearer, F(2x2, 3x3) nearer still (1-3 times
//! the direct product's). Their `Bᵀ` and `Aᵀ` are scaled to small integers (exact in `f32`) and
//! `G`, applied once per weight in `f64`, takes the scale back. A full-size ResNet50's logits
//! then differ from an `f64` computation as much as with no Winograd at all (`tests/it/onnx.rs`:
//! 5e-6 of the largest logit at 224 pixels, against 1e-5 with the old points; measured in
//! docs/PERFORMANCE.md); the tests here
//! keep both tile sizes within 1e-4 of a direct convolution in `f64`.
//!
//! Where the maps hold too few tiles for a tile size to pay (fewer than 32 in the batch:
//! [`choose`]), or are 1x1 (stage 4 at 32x32 pixels, where the direct product multiplies only the
//! centre tap), the direct product runs. The training step's convolutions (forward, and the input's gradient,
//! itself a 3x3 convolution of the output's gradient by the flipped kernel) go through it too
//! where the batch holds enough tiles ([`choose_for_training`]), their weights transformed anew
//! on every step. The weight's gradient stays an im2col product. `RESNET_TRANSFER_WINOGRAD=off` turns it off (to compare), `2` or `4` forces one
//! tile size; the measured gain is in docs/PERFORMANCE.md.

use std::mem::MaybeUninit;
use std::ops::Range;
use std::sync::OnceLock;

use rayon::prelude::*;

use super::Epilogue;
use super::im2col::output_size;
use super::panels::{self, Panels};

mod transforms;

use transforms::{F2, F4, G2, G4, Transforms, Value, Ymm, Zmm, add_scaled};

/// Transformed input a block of tiles may take: half of this CPU family's L2.
const BLOCK_BYTES: usize = 512 << 10;

/// Tiles a block has at least, wherever the share has them: the panel product's row block, so
/// that each of the `α²` weights is read once per 96 tiles however many channels there are (at
/// 224 pixels, 1 to 1.5 tiles' worth of `BLOCK_BYTES` measured the same as 96 to 192 tiles).
const MIN_TILES: usize = 96;

/// The output tile of a Winograd transform: F(2x2, 3x3) or F(4x4, 3x3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TileSize {
    /// 2x2 outputs from 4x4 inputs, 16 products per tile.
    F2,
    /// 4x4 outputs from 6x6 inputs, 36 products per tile.
    F4,
}

impl TileSize {
    /// Output pixels per side of a tile.
    pub(crate) fn output(self) -> usize {
        match self {
            TileSize::F2 => 2,
            TileSize::F4 => 4,
        }
    }

    /// Input pixels per side of a tile (`α`).
    fn input(self) -> usize {
        self.output() + 2
    }

    /// An index for a cache of one transform per tile size.
    pub(crate) fn index(self) -> usize {
        match self {
            TileSize::F2 => 0,
            TileSize::F4 => 1,
        }
    }
}

/// What `RESNET_TRANSFER_WINOGRAD` asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Setting {
    /// The tile size by the map's size (the default).
    Auto,
    /// No Winograd: every convolution by the direct product.
    Off,
    /// One tile size wherever a tile fits.
    Only(TileSize),
}

/// The setting, read once; a value it does not know is said once on stderr (a new user's `OFF`
/// and `6` ran as the default without a word).
fn setting() -> Setting {
    static SETTING: OnceLock<Setting> = OnceLock::new();
    *SETTING.get_or_init(|| {
        let Ok(value) = std::env::var("RESNET_TRANSFER_WINOGRAD") else {
            return Setting::Auto;
        };
        parse_setting(&value).unwrap_or_else(|| {
            eprintln!(
                "resnet_transfer: RESNET_TRANSFER_WINOGRAD={value:?} is not one of off (or 0, \
                 false, no), 2, 4, auto (or on, 1, true, yes, empty), in any case; Winograd runs \
                 as by default"
            );
            Setting::Auto
        })
    })
}

/// What a value of `RESNET_TRANSFER_WINOGRAD` asks for (case aside), or `None` for one it does
/// not know.
fn parse_setting(value: &str) -> Option<Setting> {
    match value.trim().to_ascii_lowercase().as_str() {
        "off" | "0" | "false" | "no" => Some(Setting::Off),
        "2" => Some(Setting::Only(TileSize::F2)),
        "4" => Some(Setting::Only(TileSize::F4)),
        "" | "auto" | "on" | "1" | "true" | "yes" => Some(Setting::Auto),
        _ => None,
    }
}

/// Whether this build and CPU run Winograd convolutions at all (the panel product is there and
/// the environment has not turned it off).
pub(crate) fn enabled() -> bool {
    panels::available() && setting() != Setting::Off
}

/// Tiles a product must have for its tile size to pay: with fewer, each of the `α²`
/// transformed weights (`α²/9` times the weight's size) is read for a handful of rows, and the
/// weights' traffic outweighs the multiply-adds saved. Measured at 224 pixels, one thread:
/// batch 1's stage 3 (16 tiles of F(4x4, 3x3), 49 of F(2x2, 3x3)) took 8.9 ms by F(4x4), 6.8 by
/// F(2x2), 10.0 direct; its stage 4 (4 and 16 tiles) 7.7, 5.4 and 4.7 ms; at batch 4 stage 4 (16
/// and 64 tiles) 13.2, 12.9 and 16.8 ms (docs/PERFORMANCE.md, 2026-12-07).
const MIN_PRODUCT_TILES: usize = 32;

/// The tile size for a convolution of `kernel` and `stride` over `images` images whose output
/// is `out` pixels, or `None` where the direct product should run: only 3x3 kernels of stride 1;
/// F(4x4, 3x3) where both sides are at least 4 pixels and the images hold at least 32 of its
/// tiles, else F(2x2, 3x3) where they hold 32 of its tiles, else none (also on 1-pixel maps,
/// where the direct product multiplies only the taps that see the map).
/// `RESNET_TRANSFER_WINOGRAD=2` or `4` forces one size wherever a tile fits.
pub(crate) fn choose(
    kernel: [usize; 2],
    stride: [usize; 2],
    out: [usize; 2],
    images: usize,
) -> Option<TileSize> {
    if kernel != [3, 3] || stride != [1, 1] || !enabled() {
        return None;
    }
    let side = out[0].min(out[1]);
    let tiles = |size: TileSize| {
        let per_image: usize = out.iter().map(|s| s.div_ceil(size.output())).product();
        images * per_image
    };
    match setting() {
        Setting::Off => None,
        Setting::Only(size) => (side >= 2).then_some(size),
        Setting::Auto if side >= 4 && tiles(TileSize::F4) >= MIN_PRODUCT_TILES => {
            Some(TileSize::F4)
        }
        Setting::Auto if side >= 2 && tiles(TileSize::F2) >= MIN_PRODUCT_TILES => {
            Some(TileSize::F2)
        }
        Setting::Auto => None,
    }
}

/// Tiles a training step's batch must hold for [`choose_for_training`] to pick a tile size.
const TRAINING_MIN_TILES: usize = 256;

/// [`choose`] for a training step's convolution of `images` images, whose weights are
/// transformed anew on every step (twice: forward and for the input's gradient): only where
/// the batch holds at least 256 tiles to spread that over. At 224x224 pixels and batch 8 that
/// is stages 1 and 2 (1,568 and 392 tiles); with stage 3 too (128 tiles) or none, the step was
/// slower in alternating runs, and at 32x32 and batch 32 (128 tiles in stage 1) no faster.
pub(crate) fn choose_for_training(
    kernel: [usize; 2],
    stride: [usize; 2],
    out: [usize; 2],
    images: usize,
) -> Option<TileSize> {
    let size = choose(kernel, stride, out, images)?;
    let tiles = images
        * out
            .map(|side| side.div_ceil(size.output()))
            .iter()
            .product::<usize>();
    (tiles >= TRAINING_MIN_TILES).then_some(size)
}

/// A 3x3 convolution's folded weight transformed for one tile size: `α²` weights
/// `U_ξ` `[C_in, C_out]`, each packed into panels.
#[derive(Debug, Clone)]
pub(crate) struct Winograd {
    size: TileSize,
    weights: Vec<Panels>,
    c_in: usize,
    c_out: usize,
    /// The products' own shift: zero (the shift is added after the output transform).
    zeros: Vec<f32>,
}

impl Winograd {
    /// Transforms `weight`, `[3·3·C_in, C_out]` row-major with rows in (tap row, tap column,
    /// input channel) order, as the convolutions store it: `U = G g Gᵀ` as `(G g) Gᵀ`, whole
    /// rows of output channels at a time, the input channels shared out between the pool's
    /// threads (the training step transforms its weights on every step).
    pub(crate) fn pack(weight: &[f32], c_in: usize, c_out: usize, size: TileSize) -> Self {
        assert_eq!(weight.len(), 9 * c_in * c_out, "a 3x3 convolution's weight");
        let g: &[[f64; 3]] = match size {
            TileSize::F2 => &G2,
            TileSize::F4 => &G4,
        };
        let alpha = size.input();
        let positions = alpha * alpha;
        // `[C_in, α², C_out]`: every position's row for one input channel together, summed in
        // `f64` and rounded once.
        let mut transformed = vec![0f32; c_in * positions * c_out];
        transformed
            .par_chunks_mut(positions * c_out)
            .enumerate()
            .for_each(|(ci, out)| {
                let tap = |k: usize| &weight[(k * c_in + ci) * c_out..][..c_out];
                // `G g`: α rows of 3 taps, each `C_out` long.
                let mut rows = vec![0f64; alpha * 3 * c_out];
                for (i, row) in rows.chunks_exact_mut(3 * c_out).enumerate() {
                    for (kx, column) in row.chunks_exact_mut(c_out).enumerate() {
                        for (ky, coefficient) in g[i].iter().enumerate() {
                            add_scaled(column, *coefficient, tap(ky * 3 + kx));
                        }
                    }
                }
                // `(G g) Gᵀ`.
                let mut u = vec![0f64; c_out];
                for (at, out) in out.chunks_exact_mut(c_out).enumerate() {
                    let (i, j) = (at / alpha, at % alpha);
                    let row = &rows[i * 3 * c_out..][..3 * c_out];
                    u.fill(0.0);
                    for (kx, coefficient) in g[j].iter().enumerate() {
                        add_scaled(&mut u, *coefficient, &row[kx * c_out..][..c_out]);
                    }
                    out.iter_mut().zip(&u).for_each(|(o, v)| *o = *v as f32);
                }
            });
        let weights = (0..positions)
            .into_par_iter()
            .map(|xi| {
                Panels::pack_rows(c_in, c_out, |ci| {
                    &transformed[(ci * positions + xi) * c_out..][..c_out]
                })
            })
            .collect();
        Self {
            size,
            weights,
            c_in,
            c_out,
            zeros: vec![0.0; Panels::padded_channels(c_out)],
        }
    }

    /// `relu?(conv3x3(x) + shift [+ residual])` (the [`Epilogue`]) for channels-last `x`
    /// `[N, H, W, C_in]` with `padding` zeros on each side, stride 1: a new `[N, H', W', C_out]`
    /// buffer; the shortcut has the output's shape. With `parallel`, the blocks of tiles are
    /// shared out between the pool's threads.
    ///
    /// # Panics
    ///
    /// If the operands do not match (the folded path checks them when it builds the model) or
    /// this CPU lacks AVX2 and FMA ([`enabled`] says so beforehand).
    pub(crate) fn forward(
        &self,
        x: &[f32],
        dims: [usize; 4],
        padding: [usize; 2],
        epilogue: Epilogue<'_>,
        parallel: bool,
    ) -> Vec<f32> {
        self.forward_lanes(x, dims, padding, epilogue, parallel, true)
    }

    /// [`forward`](Self::forward), with the transforms on 16 channels at a time where `wide`
    /// and the channels are whole 16s on a CPU with AVX-512F, else 8: the tests compare the two.
    fn forward_lanes(
        &self,
        x: &[f32],
        dims: [usize; 4],
        padding: [usize; 2],
        epilogue: Epilogue<'_>,
        parallel: bool,
        wide: bool,
    ) -> Vec<f32> {
        let wide = wide
            && panels::wide_available()
            && self.c_in.is_multiple_of(16)
            && self.c_out.is_multiple_of(16);
        let [n, h, w, c] = dims;
        let [ph, pw] = padding;
        let [ho, wo] = output_size([h, w], [3, 3], [1, 1], [ph, pw]);
        let c_out = self.c_out;
        let len = n * ho * wo * c_out;
        assert!(
            panels::available()
                && c == self.c_in
                && x.len() == n * h * w * c
                && epilogue.shift.len() >= c_out
                && epilogue.residual.is_none_or(|r| r.len() == len),
            "winograd convolution: operands do not match"
        );
        let geometry = Geometry {
            dims,
            padding,
            out: [ho, wo],
            tile: self.size.output(),
        };
        let [th, tw] = geometry.tiles();
        let rows = n * th;
        let alpha = self.size.input();
        let per_row = (tw * alpha * alpha * c.max(c_out) * 4).max(1);
        let mut block = (BLOCK_BYTES / per_row).max(MIN_TILES.div_ceil(tw)).max(1);
        let threads = super::team::threads();
        if parallel && threads > 1 {
            block = block.min(rows.div_ceil(threads)).max(1);
        }
        let mut out = Vec::with_capacity(len);
        let mut rest = &mut out.spare_capacity_mut()[..len];
        let mut blocks = Vec::new();
        for r0 in (0..rows).step_by(block) {
            let tile_rows = r0..(r0 + block).min(rows);
            let span = geometry.values(tile_rows.clone(), c_out);
            let (this, tail) = std::mem::take(&mut rest).split_at_mut(span.len());
            rest = tail;
            let residual = epilogue.residual.map(|r| &r[span]);
            blocks.push((
                tile_rows,
                this,
                Epilogue {
                    residual,
                    ..epilogue
                },
            ));
        }
        let run =
            |(tile_rows, out, epilogue): (Range<usize>, &mut [MaybeUninit<f32>], Epilogue<'_>)| {
                let block = Block {
                    x,
                    geometry: &geometry,
                    tile_rows,
                    out,
                    epilogue,
                };
                // SAFETY: the CPU has AVX2 and FMA (asserted above), and AVX-512F where `wide`.
                unsafe { self.block(block, wide) }
            };
        if parallel {
            super::team::for_each(blocks, run);
        } else {
            blocks.into_iter().for_each(run);
        }
        // SAFETY: the blocks' output slices tile `out`'s first `len` values, and each block
        // wrote every value of its slice (every pixel lies in one tile, every channel in one
        // step of `L`).
        unsafe { out.set_len(len) };
        out
    }

    /// One block of tile rows: transform the input tiles, multiply, transform back into the
    /// block's part of the output.
    ///
    /// # Safety
    ///
    /// The CPU has AVX2 and FMA, and AVX-512F where `wide`; with `wide`, the channels are
    /// whole 16s.
    #[target_feature(enable = "avx2,fma")]
    unsafe fn block(&self, block: Block, wide: bool) {
        if wide {
            // SAFETY: the caller's AVX-512F.
            return unsafe { self.block_wide(block) };
        }
        match self.size {
            TileSize::F2 => self.block_with::<4, 2, Ymm, F2>(block),
            TileSize::F4 => self.block_with::<6, 4, Ymm, F4>(block),
        }
    }

    /// [`block`](Self::block) with the transforms on 16 channels at a time, for channels in
    /// whole 16s on a CPU with AVX-512F: the same operations on each channel as on 8 at a time,
    /// so the same bits, in half the instructions. The Winograd convolutions of 4 images at 224
    /// pixels on one thread took 57.7-59.5 ms in place of 61.9-66.1, of 16 at 32 pixels 2.74-2.75
    /// in place of 3.15-3.33 (alternated builds); whole forwards moved less than the machine's
    /// noise.
    ///
    /// # Safety
    ///
    /// The CPU has AVX-512F, AVX2 and FMA.
    #[target_feature(enable = "avx512f,avx2,fma")]
    unsafe fn block_wide(&self, block: Block) {
        match self.size {
            TileSize::F2 => self.block_with::<4, 2, Zmm, F2>(block),
            TileSize::F4 => self.block_with::<6, 4, Zmm, F4>(block),
        }
    }

    /// [`block`](Self::block) for tiles of `A` inputs and `M` outputs a side, with their 1-D
    /// transforms `T`, on values of `V::LANES` channels.
    #[inline(always)]
    fn block_with<const A: usize, const M: usize, V: Value, T: Transforms<A, M>>(
        &self,
        block: Block,
    ) {
        let [_, tw] = block.geometry.tiles();
        let tiles = block.tile_rows.len() * tw;
        thread_local! {
            static BUFFERS: std::cell::Cell<(Vec<f32>, Vec<f32>)> =
                const { std::cell::Cell::new((Vec::new(), Vec::new())) };
        }
        let (mut v, mut m) = BUFFERS.take();
        v.resize(A * A * tiles * self.c_in, 0.0);
        m.resize(A * A * tiles * self.c_out, 0.0);
        self.transform_inputs::<A, V, T, M>(&block, &mut v);
        self.multiply(&v, &mut m, tiles);
        self.transform_outputs::<A, M, V, T>(block, &m);
        BUFFERS.set((v, m));
    }

    /// `V = Bᵀ d B` for every input tile of the block, tile-major: `[tiles, α², C_in]`:
    /// down the tile's columns, each read straight from the input (zeros in the padding), then
    /// along its rows, each transformed row stored in place.
    #[inline(always)]
    fn transform_inputs<const A: usize, V: Value, T: Transforms<A, M>, const M: usize>(
        &self,
        block: &Block,
        v: &mut [f32],
    ) {
        let c_in = self.c_in;
        let geometry = block.geometry;
        let [_, tw] = geometry.tiles();
        let tiles = block.tile_rows.len() * tw;
        for t in 0..tiles {
            let (row, tx) = (block.tile_rows.start + t / tw, t % tw);
            let at = geometry.input_tile(row, tx);
            // Each pixel's place in the input, once for all the channels.
            let pixels: [[Option<usize>; A]; A] =
                std::array::from_fn(|a| std::array::from_fn(|b| at(a, b)));
            for c0 in (0..c_in).step_by(V::LANES) {
                let lanes = V::LANES.min(c_in - c0);
                let mut columns = [[V::zero(); A]; A];
                // Down the columns, then along the rows, as the transforms were always taken
                // (the same bits).
                for b in 0..A {
                    let mut column = [V::zero(); A];
                    for (a, value) in column.iter_mut().enumerate() {
                        if let Some(pixel) = pixels[a][b] {
                            *value = load_lanes(&block.x[pixel + c0..], lanes);
                        }
                    }
                    let column = T::input(&column);
                    for i in 0..A {
                        columns[i][b] = column[i];
                    }
                }
                for (i, column) in columns.iter().enumerate() {
                    let row = T::input(column);
                    for (j, value) in row.iter().enumerate() {
                        let at = ((t * A + i) * A + j) * c_in + c0;
                        store_lanes(*value, &mut v[at..at + lanes]);
                    }
                }
            }
        }
    }

    /// `M_ξ = V_ξ · U_ξ` for each position `ξ` of the transformed tile: `[tiles, C_in]` by
    /// `[C_in, C_out]`, the rows of `V_ξ` and `M_ξ` one position of each tile's `α²`.
    #[inline]
    fn multiply(&self, v: &[f32], m: &mut [f32], tiles: usize) {
        let (c_in, c_out) = (self.c_in, self.c_out);
        let positions = self.weights.len();
        for (xi, weight) in self.weights.iter().enumerate() {
            let product = &mut m[xi * c_out..];
            // SAFETY: `f32` and `MaybeUninit<f32>` have the same layout, and the product only
            // writes initialized values through it.
            let product = unsafe {
                std::slice::from_raw_parts_mut(
                    product.as_mut_ptr().cast::<MaybeUninit<f32>>(),
                    product.len(),
                )
            };
            panels::product_strided(
                (&v[xi * c_in..], positions * c_in),
                c_in,
                weight,
                (product, positions * c_out),
                tiles,
                &self.zeros,
            );
        }
    }

    /// `Y = Aᵀ M A` for every tile (down the columns, then along the rows), then the shift,
    /// the shortcut and the ReLU, into the output pixels the tile covers.
    #[inline(always)]
    fn transform_outputs<const A: usize, const M: usize, V: Value, T: Transforms<A, M>>(
        &self,
        block: Block,
        m: &[f32],
    ) {
        let Block {
            geometry,
            tile_rows,
            out,
            epilogue,
            ..
        } = block;
        let c_out = self.c_out;
        let [th, tw] = geometry.tiles();
        let tiles = tile_rows.len() * tw;
        let [ho, wo] = geometry.out;
        let first = geometry.pixel_row(tile_rows.start);
        for t in 0..tiles {
            let (row, tx) = (tile_rows.start + t / tw, t % tw);
            let (image, ty) = (row / th, row % th);
            for c0 in (0..c_out).step_by(V::LANES) {
                let lanes = V::LANES.min(c_out - c0);
                let mut columns = [[V::zero(); A]; M];
                for b in 0..A {
                    let mut column = [V::zero(); A];
                    for (a, value) in column.iter_mut().enumerate() {
                        *value = load_lanes(&m[((t * A + a) * A + b) * c_out + c0..], lanes);
                    }
                    let column = T::output(&column);
                    for i in 0..M {
                        columns[i][b] = column[i];
                    }
                }
                for (r, column) in columns.iter().enumerate() {
                    let oy = ty * M + r;
                    if oy >= ho {
                        break;
                    }
                    let pixel_row = image * ho + oy - first;
                    let row = T::output(column);
                    for (s, value) in row.iter().enumerate() {
                        let ox = tx * M + s;
                        if ox >= wo {
                            break;
                        }
                        let at = (pixel_row * wo + ox) * c_out + c0;
                        epilogue.store(&mut out[at..at + lanes], *value, at, c0);
                    }
                }
            }
        }
    }
}

/// One block's work: tile rows `tile_rows` (counted through the batch) of `x`, into `out`, the
/// block's part of the output.
struct Block<'a> {
    x: &'a [f32],
    geometry: &'a Geometry,
    tile_rows: Range<usize>,
    out: &'a mut [MaybeUninit<f32>],
    epilogue: Epilogue<'a>,
}

/// The shapes of one convolution's tiling.
struct Geometry {
    /// The input, `[N, H, W, C_in]`.
    dims: [usize; 4],
    padding: [usize; 2],
    /// The output's height and width.
    out: [usize; 2],
    /// Output pixels per side of a tile.
    tile: usize,
}

impl Geometry {
    /// Tile rows and tile columns per image.
    fn tiles(&self) -> [usize; 2] {
        self.out.map(|side| side.div_ceil(self.tile))
    }

    /// The first output row, counting down through the images stacked, of tile row `row` (also
    /// counted through the whole batch).
    fn pixel_row(&self, row: usize) -> usize {
        let th = self.tiles()[0];
        (row / th) * self.out[0] + (row % th) * self.tile
    }

    /// The range of output values that tile rows `rows` cover, for `c_out` channels.
    fn values(&self, rows: Range<usize>, c_out: usize) -> Range<usize> {
        let per_row = self.out[1] * c_out;
        self.pixel_row(rows.start) * per_row..self.pixel_row(rows.end) * per_row
    }

    /// Where pixel `(a, b)` of the input tile of tile `tx` in tile row `row` (counted through
    /// the batch) starts in the input, or `None` in the padding.
    #[inline(always)]
    fn input_tile(&self, row: usize, tx: usize) -> impl Fn(usize, usize) -> Option<usize> {
        let [_, h, w, c] = self.dims;
        let th = self.tiles()[0];
        let (image, ty) = (row / th, row % th);
        let (tile, [top, left]) = (self.tile, self.padding);
        move |a, b| {
            let y = (ty * tile + a).checked_sub(top).filter(|&y| y < h)?;
            let x = (tx * tile + b).checked_sub(left).filter(|&x| x < w)?;
            Some(((image * h + y) * w + x) * c)
        }
    }
}

/// The first `lanes` values of `from` (at least that many), the rest zeros.
#[inline(always)]
fn load_lanes<V: Value>(from: &[f32], lanes: usize) -> V {
    if lanes == V::LANES {
        let from = &from[..V::LANES];
        // SAFETY: `from` holds `LANES` values; the callers run where the CPU has `V`.
        unsafe { V::load(from.as_ptr()) }
    } else {
        let mut padded = [0.0; 16];
        padded[..lanes].copy_from_slice(&from[..lanes]);
        // SAFETY: `padded` holds 16 >= `LANES` values; as above for the CPU.
        unsafe { V::load(padded.as_ptr()) }
    }
}

/// `value`'s first `to.len()` lanes (at most `LANES`) into `to`.
#[inline(always)]
fn store_lanes<V: Value>(value: V, to: &mut [f32]) {
    if to.len() == V::LANES {
        // SAFETY: `to` holds `LANES` values; the callers run where the CPU has `V`.
        unsafe { value.store(to.as_mut_ptr()) }
    } else {
        let mut all = [0.0; 16];
        // SAFETY: `all` holds 16 >= `LANES` values; as above for the CPU.
        unsafe { value.store(all.as_mut_ptr()) };
        let len = to.len();
        to.copy_from_slice(&all[..len]);
    }
}

/// A block's epilogue has the block's part of the shortcut, indexed as the block's output.
impl Epilogue<'_> {
    /// Stores `value`'s first `out.len()` lanes, channels from `c0`, at offset `at` of the block:
    /// `value + shift (+ shortcut)`, then the ReLU.
    #[inline(always)]
    fn store<V: Value>(&self, out: &mut [MaybeUninit<f32>], value: V, at: usize, c0: usize) {
        let lanes = out.len();
        let mut y = value.add(load_lanes(&self.shift[c0..], lanes));
        if let Some(residual) = self.residual {
            y = y.add(load_lanes(&residual[at..], lanes));
        }
        if self.relu {
            y = y.relu();
        }
        // SAFETY: `MaybeUninit<f32>` has `f32`'s layout; every lane of `out` is written.
        let out = unsafe { std::slice::from_raw_parts_mut(out.as_mut_ptr().cast::<f32>(), lanes) };
        store_lanes(y, out);
    }
}

#[cfg(test)]
mod tests;
