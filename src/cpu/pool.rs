//! The stem's max pool on channels-last host buffers, forward and backward, for the training
//! operation [`MaxPoolTrain`](crate::ops::MaxPoolTrain).
//!
//! As Burn tensor operations, the pool was the maximum of 9 shifted views of the padded input:
//! 8 `max_pair`s forward, and backward a `mask_where` for each and a zeroed input-sized
//! gradient for each view written back by `slice_assign`, about 8% of a training step at
//! 224x224. Here it is one pass each way, an image per task: forward the maximum over each
//! window's pixels (padding never wins), backward each output's gradient added to the first
//! pixel of its window (in row-major tap order) that holds the maximum, as Burn's `max_pair`
//! chain routes it.

use burn::backend::tensor::FloatTensor;

use crate::cpu::for_each_image;
use crate::cpu::host::HostBackend;
use crate::cpu::im2col::output_size;

/// Below this many input values a pool runs on one thread.
const PARALLEL_POOL: usize = 1 << 16;

/// The pool's shape: `[N, H, W, C]` in, `[Ho, Wo]` out, and `[kh, kw, sy, sx, py, px]`.
struct PoolShape {
    input: [usize; 4],
    out: [usize; 2],
    geometry: [usize; 6],
}

impl PoolShape {
    fn new(dims: &[usize], geometry: [usize; 6]) -> Self {
        let [kh, kw, sh, sw, ph, pw] = geometry;
        let input = [dims[0], dims[1], dims[2], dims[3]];
        let out = output_size([input[1], input[2]], [kh, kw], [sh, sw], [ph, pw]);
        Self {
            input,
            out,
            geometry,
        }
    }

    /// The input pixels (as `y · W + x`) under output pixel `(oy, ox)`'s window, in tap order,
    /// padding left out.
    fn window(&self, oy: usize, ox: usize) -> impl Iterator<Item = usize> + '_ {
        let [_, h, w, _] = self.input;
        let [kh, kw, sh, sw, ph, pw] = self.geometry;
        (0..kh)
            .filter_map(move |ky| (oy * sh + ky).checked_sub(ph).filter(|&y| y < h))
            .flat_map(move |y| {
                (0..kw)
                    .filter_map(move |kx| (ox * sw + kx).checked_sub(pw).filter(|&x| x < w))
                    .map(move |x| y * w + x)
            })
    }
}

/// The maximum over each window's pixels of channels-last `x`: `[N, Ho, Wo, C]`.
pub(crate) fn max_pool_nhwc<B: HostBackend>(
    x: FloatTensor<B>,
    geometry: [usize; 6],
) -> FloatTensor<B> {
    let shape = PoolShape::new(&B::dims(&x), geometry);
    let x = B::values(&x);
    let [n, h, w, c] = shape.input;
    let [ho, wo] = shape.out;
    let mut y = vec![f32::NEG_INFINITY; n * ho * wo * c];
    let parallel = x.len() >= PARALLEL_POOL;
    for_each_image(parallel, &mut y, ho * wo * c, |i, out| {
        let image = &x[i * h * w * c..(i + 1) * h * w * c];
        for (p, out) in out.chunks_exact_mut(c).enumerate() {
            for pixel in shape.window(p / wo, p % wo) {
                let values = &image[pixel * c..(pixel + 1) * c];
                for (o, &v) in out.iter_mut().zip(values) {
                    *o = if v > *o { v } else { *o };
                }
            }
        }
    });
    B::from_values(y, &[n, ho, wo, c])
}

/// The input's gradient of [`max_pool_nhwc`] from the output's, the input and the output.
pub(crate) fn max_pool_nhwc_backward<B: HostBackend>(
    grad: FloatTensor<B>,
    x: FloatTensor<B>,
    y: FloatTensor<B>,
    geometry: [usize; 6],
) -> FloatTensor<B> {
    let shape = PoolShape::new(&B::dims(&x), geometry);
    let (grad, x, y) = (B::values(&grad), B::values(&x), B::values(&y));
    let [n, h, w, c] = shape.input;
    let [ho, wo] = shape.out;
    let mut dx = vec![0.0f32; n * h * w * c];
    let parallel = x.len() >= PARALLEL_POOL;
    for_each_image(parallel, &mut dx, h * w * c, |i, dx| {
        let image = &x[i * h * w * c..(i + 1) * h * w * c];
        let outputs = i * ho * wo * c..(i + 1) * ho * wo * c;
        let (y, grad) = (&y[outputs.clone()], &grad[outputs]);
        // Per channel: whether an earlier pixel of the window already took the gradient.
        let mut taken = vec![false; c];
        for (p, (max, g)) in y.chunks_exact(c).zip(grad.chunks_exact(c)).enumerate() {
            taken.fill(false);
            for pixel in shape.window(p / wo, p % wo) {
                let values = &image[pixel * c..(pixel + 1) * c];
                let dx = &mut dx[pixel * c..(pixel + 1) * c];
                let lanes = dx.iter_mut().zip(values).zip(max.iter().zip(g));
                for (((d, &v), (&m, &g)), t) in lanes.zip(&mut taken) {
                    let take = !*t & (v == m);
                    *d += if take { g } else { 0.0 };
                    *t |= take;
                }
            }
        }
    });
    B::from_values(dx, &shape.input)
}
