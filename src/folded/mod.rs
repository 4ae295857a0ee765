//! A ResNet prepared for inference on the CPU: BatchNorm folded into the convolutions' weights,
//! and each convolution one matrix product followed by one pass that adds the shift (and the
//! shortcut) and applies the ReLU.
//!
//! Why: the module's own channels-last path is plain Burn tensor operations, so on a CPU backend
//! every BatchNorm, ReLU and residual sum is a separate pass over the activations with its own
//! output allocation, and every im2col first copies the whole input beside a zero row before
//! gathering from it. Here the weights are folded and laid out once, in
//! [`ResNet::folded`], and a forward runs on plain buffers: im2col straight from the input, the
//! product (the same `gemm` crate flex multiplies with), one fused epilogue. onnxruntime does the
//! same to an exported ResNet when it builds its session (the measured gain, with the command,
//! is in docs/PERFORMANCE.md).
//!
//! The numbers are the module's own up to float rounding (the scale is applied to the weight
//! before the sum rather than after it); `tests/it/fast_path.rs` holds the two together on every CPU
//! backend. It computes on the host whatever the device, so it only pays on CPU backends: on a GPU
//! use [`ResNet::forward`].

use std::ops::Range;

use burn::nn::PaddingConfig2d;
use burn::tensor::{Tensor, TensorData};
use rayon::prelude::*;

mod conv;

pub(crate) use conv::{fold_batch_norm, host_values};

use conv::{FoldedConv, Maps};

use crate::cpu::for_each_image;
use crate::cpu::im2col::output_side;
use crate::cpu::split::plan_batch;
use crate::error::{Error, Result};
use crate::model::{Head, Pooling, ResNet, check_images};

/// A [`ResNet`] folded for inference on the CPU: see the [module docs](self). Built by
/// [`ResNet::folded`]; a snapshot, so a model that learns on needs a new one.
///
/// ```
/// use resnet_transfer::ResNetConfig;
/// use burn::tensor::{Distribution, Tensor};
///
/// let device = resnet_transfer::device::default_device()?;
/// let model = ResNetConfig::resnet18(10).with_width(8).init(&device)?;
/// let fused = model.folded()?;
/// let images = Tensor::<4>::random([2, 3, 32, 32], Distribution::Default, &device);
/// let logits = fused.forward(images.clone())?;
/// let reference = model.forward(images);
/// assert_eq!(logits.dims(), [2, 10]);
/// let gap = (logits - reference).abs().max().into_scalar::<f32>();
/// assert!(gap < 1e-3, "{gap}");
/// # Ok::<(), resnet_transfer::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct FoldedResNet {
    stem: FoldedConv,
    pool: MaxPool,
    blocks: Vec<FoldedBlock>,
    pooling: Pooling,
    head: Option<Head>,
}

#[derive(Debug, Clone)]
struct FoldedBlock {
    convs: Vec<FoldedConv>,
    shortcut: Option<FoldedConv>,
}

/// The stem's max pool: kernel, stride and padding `[top, left, bottom, right]`.
#[derive(Debug, Clone, Copy)]
struct MaxPool {
    kernel: [usize; 2],
    stride: [usize; 2],
    pads: [usize; 4],
}

impl ResNet {
    /// This model folded for fast inference on the CPU: see [`FoldedResNet`]. Reads every weight
    /// once (tens of milliseconds for a ResNet50); later changes to the model do not reach it.
    ///
    /// # Errors
    ///
    /// [`Error::BadTensor`] if a weight cannot be read as `f32`, and
    /// [`Error::InvalidConfig`] for a stem pool it cannot run (`Same` padding, dilation or ceil
    /// mode, which no ResNet this crate builds has).
    pub fn folded(&self) -> Result<FoldedResNet> {
        #[cfg(target_arch = "x86_64")]
        let panels = crate::cpu::panels::available();
        #[cfg(not(target_arch = "x86_64"))]
        let panels = false;
        #[cfg(target_arch = "x86_64")]
        let winograd = crate::cpu::winograd::enabled();
        #[cfg(not(target_arch = "x86_64"))]
        let winograd = false;
        self.fused_with(panels, winograd)
    }

    /// [`fused`](Self::fused), with the weights packed for the AVX2 panel product or kept for
    /// `gemm` (the path of CPUs without AVX2 and FMA, which tests run on every CPU), and with
    /// `winograd`, the 3x3 convolutions of stride 1 by Winograd's transforms (panels only).
    pub(crate) fn fused_with(&self, panels: bool, winograd: bool) -> Result<FoldedResNet> {
        let pool = &self.stem.pool;
        let pads = match pool.padding {
            PaddingConfig2d::Valid => [0; 4],
            PaddingConfig2d::Explicit(top, left, bottom, right) => [top, left, bottom, right],
            PaddingConfig2d::Same => {
                return Err(Error::invalid_config(
                    "stem.pool.padding",
                    "explicit or valid padding",
                    "Same",
                ));
            }
        };
        if pool.dilation != [1, 1] || pool.ceil_mode {
            return Err(Error::invalid_config(
                "stem.pool",
                "no dilation and no ceil mode",
                format!("dilation {:?}, ceil mode {}", pool.dilation, pool.ceil_mode),
            ));
        }
        let blocks = self
            .stages
            .iter()
            .enumerate()
            .flat_map(|(s, stage)| stage.blocks.iter().enumerate().map(move |(b, x)| (s, b, x)))
            .map(|(s, b, block)| {
                let name = |part: &str| format!("stages.{s}.blocks.{b}.{part}");
                Ok(FoldedBlock {
                    convs: (block.convs.iter().enumerate())
                        .map(|(i, unit)| {
                            let name = name(&format!("convs.{i}"));
                            FoldedConv::fold(unit, &name, panels, winograd)
                        })
                        .collect::<Result<_>>()?,
                    shortcut: (block.shortcut.as_ref())
                        .map(|unit| FoldedConv::fold(unit, &name("shortcut"), panels, winograd))
                        .transpose()?,
                })
            })
            .collect::<Result<_>>()?;
        Ok(FoldedResNet {
            stem: FoldedConv::fold(&self.stem.conv, "stem.conv", panels, winograd)?,
            pool: MaxPool {
                kernel: pool.kernel_size,
                stride: pool.stride,
                pads,
            },
            blocks,
            pooling: self.pooling,
            head: self.head.clone(),
        })
    }
}

/// The folded model where it pays, the one place that decides: on a CPU backend's device,
/// `model` folded (`None` if it cannot be); on a GPU's, `None`, and the module runs there. Used by
/// inference ([`Classifier`](crate::Classifier), `evaluate`) and by phase 1's frozen backbone.
pub(crate) fn folded_on(model: &ResNet, device: &burn::tensor::Device) -> Option<FoldedResNet> {
    crate::device::is_host(device)
        .then(|| model.folded().ok())
        .flatten()
}

impl FoldedResNet {
    /// How many Winograd transforms the model's convolutions hold ready, summed.
    #[cfg(test)]
    pub(crate) fn transforms_made(&self) -> usize {
        let convs =
            (self.blocks.iter()).flat_map(|block| block.convs.iter().chain(&block.shortcut));
        std::iter::once(&self.stem)
            .chain(convs)
            .map(FoldedConv::transforms_made)
            .sum()
    }

    /// Logits `[N, classes]` for images `[N, 3, H, W]` (the pooled features when there is no
    /// head), on the images' device: [`ResNet::forward`] in inference mode.
    ///
    /// # Errors
    ///
    /// [`Error::ShapeMismatch`] if the images are not `[N, 3, H, W]` with every size at least 1,
    /// [`Error::BadTensor`] if they cannot be read as `f32`.
    pub fn forward(&self, images: Tensor<4>) -> Result<Tensor<2>> {
        let features = self.features(images)?;
        Ok(match &self.head {
            // Dropout is the identity in inference.
            Some(head) => head.linear.forward(features),
            None => features,
        })
    }

    /// The pooled features `[N, C]` for images `[N, 3, H, W]`, on the images' device:
    /// [`ResNet::features`] in inference mode.
    ///
    /// # Errors
    ///
    /// As [`forward`](Self::forward).
    pub fn features(&self, images: Tensor<4>) -> Result<Tensor<2>> {
        check_images(&images)?;
        let device = images.device();
        let [n, c, h, w] = images.dims();
        let nchw = host_values(images, "images")?;
        // One share of whole images per thread, each run start to end on its thread, rather
        // than every product and pass split between the threads: no hand-offs between the ~150
        // parallel steps of a ResNet50 forward (the small maps of stages 3 and 4 as one product
        // over the whole batch measured slower). The images left over, fewer than the threads
        // (all of them for a single photo), run after the shares with every layer split between
        // the threads, so that none idles (`cpu::split`).
        let plan = plan_batch(n, crate::cpu::team::threads());
        if crate::cpu::tuning::layer_trace() {
            let threads = rayon::current_num_threads();
            let plural = |count: usize, word: &str| {
                format!("{count} {word}{}", if count == 1 { "" } else { "s" })
            };
            eprintln!(
                "resnet_transfer forward: {} of {h}x{w} on {}",
                plural(n, "image"),
                plural(threads, "thread")
            );
        }
        let image = c * h * w;
        let run = |images: Range<usize>, parallel: bool| {
            let nchw = &nchw[images.start * image..images.end * image];
            let mut x = Maps {
                data: vec![0.0; nchw.len()],
                dims: [images.len(), h, w, c],
                batch: n,
            };
            // Channels last, a row of an image at a time.
            for_each_image(parallel, &mut x.data, w * c, |row, nhwc| {
                let (i, y) = (row / h, row % h);
                let nchw = &nchw[i * image + y * w..];
                for (p, pixel) in nhwc.chunks_exact_mut(c).enumerate() {
                    for (ch, value) in pixel.iter_mut().enumerate() {
                        *value = nchw[ch * h * w + p];
                    }
                }
            });
            let x = self.stem.forward(&x, None, parallel);
            let x = self.pool.forward(&x, parallel);
            let x = (self.blocks.iter()).fold(x, |x, block| block.forward(x, parallel));
            global_pool(&x, self.pooling)
        };
        let mut pooled: Vec<Vec<f32>> = (plan.shares.into_par_iter())
            .map(|share| run(share, false))
            .collect();
        if !plan.rest.is_empty() {
            // Split step by step, with the pool's other workers spinning between steps.
            pooled.push(crate::cpu::team::with_team(|| run(plan.rest, true)));
        }
        let pooled = pooled.concat();
        let channels = pooled.len() / n;
        Ok(Tensor::from_data(
            TensorData::new(pooled, [n, channels]),
            &device,
        ))
    }
}

impl FoldedBlock {
    /// The block on `x`, whose buffer (or the projection's) its last convolution writes over
    /// where it can ([`FoldedConv::forward_onto`]).
    fn forward(&self, x: Maps, parallel: bool) -> Maps {
        let projected = (self.shortcut.as_ref()).map(|unit| unit.forward_linear(&x, parallel));
        let (last, inner) = self.convs.split_last().expect("a block has convolutions");
        let y = inner.iter().fold(None::<Maps>, |y, unit| {
            Some(unit.forward(y.as_ref().unwrap_or(&x), None, parallel))
        });
        match (y, projected) {
            (Some(y), Some(projected)) => last.forward_onto(&y, projected, parallel),
            (Some(y), None) => last.forward_onto(&y, x, parallel),
            (None, projected) => {
                let identity = projected.as_ref().unwrap_or(&x);
                last.forward(&x, Some(identity), parallel)
            }
        }
    }
}

impl MaxPool {
    /// Max pooling of channels-last `x`, padding standing for minus infinity (Burn's rule).
    fn forward(&self, x: &Maps, parallel: bool) -> Maps {
        let [n, h, w, c] = x.dims;
        let [kh, kw] = self.kernel;
        let [sh, sw] = self.stride;
        let [top, left, bottom, right] = self.pads;
        let ho = output_side(h, kh, sh, top + bottom);
        let wo = output_side(w, kw, sw, left + right);
        let mut out = vec![f32::NEG_INFINITY; n * ho * wo * c];
        // A row of the output at a time, so that a single image's is split too.
        for_each_image(parallel, &mut out, wo * c, |row, out| {
            let (i, oy) = (row / ho, row % ho);
            let image = &x.data[i * h * w * c..][..h * w * c];
            for (ox, pixel) in out.chunks_exact_mut(c).enumerate() {
                for ky in 0..kh {
                    let Some(y) = (oy * sh + ky).checked_sub(top).filter(|&y| y < h) else {
                        continue;
                    };
                    for kx in 0..kw {
                        let Some(xx) = (ox * sw + kx).checked_sub(left).filter(|&v| v < w) else {
                            continue;
                        };
                        let src = &image[(y * w + xx) * c..][..c];
                        pixel.iter_mut().zip(src).for_each(|(m, v)| *m = m.max(*v));
                    }
                }
            }
        });
        Maps {
            data: out,
            dims: [n, ho, wo, c],
            batch: x.batch,
        }
    }
}

/// Global average or max pooling of channels-last `x` to `[N, C]`, row-major.
fn global_pool(x: &Maps, pooling: Pooling) -> Vec<f32> {
    let [n, h, w, c] = x.dims;
    let mut out = vec![0.0; n * c];
    for (pooled, image) in out.chunks_exact_mut(c).zip(x.data.chunks_exact(h * w * c)) {
        match pooling {
            Pooling::Average => {
                for pixel in image.chunks_exact(c) {
                    pooled.iter_mut().zip(pixel).for_each(|(p, v)| *p += v);
                }
                let count = (h * w) as f32;
                pooled.iter_mut().for_each(|p| *p /= count);
            }
            Pooling::Max => {
                pooled.fill(f32::NEG_INFINITY);
                for pixel in image.chunks_exact(c) {
                    pooled
                        .iter_mut()
                        .zip(pixel)
                        .for_each(|(p, v)| *p = p.max(*v));
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use burn::tensor::Distribution;

    use super::*;
    use crate::model::ResNetConfig;

    /// The folded path's products, the panels (where this CPU has them; with and without
    /// Winograd's transforms for the 3x3 convolutions, whose maps here take F(4x4, 3x3) with
    /// partial tiles and F(2x2, 3x3)) and `gemm` (every other CPU), give the module's numbers, at a size whose stem and first stage have
    /// more rows than one gathered block (several blocks per convolution) and at an odd small
    /// one; `tests/it/fast_path.rs` covers the rest.
    #[test]
    fn panels_and_gemm_give_the_modules_numbers() {
        for shape in [[3, 3, 19, 19], [2, 3, 96, 80]] {
            panels_and_gemm_at(shape);
        }
    }

    /// A pool of `threads` threads of its own.
    fn pool(threads: usize) -> rayon::ThreadPool {
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap()
    }

    /// A ResNet50 a sixteenth as wide, 4 classes, on ndarray: every path, quickly.
    fn narrow_resnet50() -> (ResNet, crate::Device) {
        let device = crate::device::device("ndarray").unwrap();
        let model = ResNetConfig::resnet50(4)
            .with_width(4)
            .init(&device)
            .unwrap();
        (model, device)
    }

    /// The logits as plain values.
    fn values(logits: Tensor<2>) -> Vec<f32> {
        logits.into_data().try_to_vec::<f32>().unwrap()
    }

    /// The same numbers whatever the pool: one thread, shares and a split rest (3 images on
    /// 2 threads), everything split (3 on 4), products split by rows as well as panels (8).
    #[test]
    fn every_share_of_the_batch_gives_the_same_numbers() {
        let (model, device) = narrow_resnet50();
        let fused = model.folded().unwrap();
        let images = Tensor::<4>::random([3, 3, 40, 36], Distribution::Default, &device);
        let on = |threads: usize| {
            values(pool(threads).install(|| fused.forward(images.clone()).unwrap()))
        };
        let one = on(1);
        for threads in [2, 4, 8] {
            assert_eq!(on(threads), one, "{threads} threads");
        }
    }

    #[test]
    fn forwards_side_by_side_on_one_pool_give_each_its_own_numbers() {
        // Single photos split layer by layer hold the pool's workers as a team (`cpu::team`):
        // several callers at once (a service's requests) share two workers, so a team may get
        // no helper, or a worker may help another caller's team. Each gets its own numbers.
        let (model, device) = narrow_resnet50();
        let fused = model.folded().unwrap();
        let photos: Vec<_> = (0..4)
            .map(|_| Tensor::<4>::random([1, 3, 40, 36], Distribution::Default, &device))
            .collect();
        let pool = pool(2);
        let alone: Vec<Vec<f32>> = photos
            .iter()
            .map(|p| values(pool.install(|| fused.forward(p.clone()).unwrap())))
            .collect();
        std::thread::scope(|scope| {
            for (photo, want) in photos.iter().zip(&alone) {
                let (pool, fused) = (&pool, &fused);
                scope.spawn(move || {
                    for _ in 0..5 {
                        let got = values(pool.install(|| fused.forward(photo.clone()).unwrap()));
                        assert_eq!(&got, want);
                    }
                });
            }
        });
    }

    #[test]
    fn the_first_forward_of_a_batch_on_many_threads_makes_winograd_without_hanging() {
        // Each share of the batch reaches the same convolutions, whose Winograd transforms are
        // made on the first forward, on rayon. Made inside the cell's lock, a thread waiting for
        // its part of the transforms took another share, which came for the same cell: every
        // thread hung (a new user's 8 threads and a batch of 13 photos). With the old code this
        // test hung on its first attempt.
        let device = crate::device::device("ndarray").unwrap();
        let model = ResNetConfig::resnet18(4).init(&device).unwrap();
        let images = Tensor::<4>::random([13, 3, 32, 32], Distribution::Default, &device);
        let pool = std::sync::Arc::new(pool(8));
        let want =
            values(pool.install(|| model.folded().unwrap().forward(images.clone()).unwrap()));
        for attempt in 0..8 {
            let (send, receive) = std::sync::mpsc::channel();
            let (model, images, pool) = (model.clone(), images.clone(), pool.clone());
            // On a thread of its own, left behind if it hangs, so that the test fails.
            std::thread::spawn(move || {
                // A fresh folded copy: its transforms are not made yet.
                let fused = model.folded().unwrap();
                let _ = send.send(values(pool.install(|| fused.forward(images).unwrap())));
            });
            let got = receive.recv_timeout(std::time::Duration::from_secs(120));
            let got = got.unwrap_or_else(|_| panic!("attempt {attempt}: the forward hung"));
            assert_eq!(got, want, "attempt {attempt}");
        }
    }

    fn panels_and_gemm_at(shape: [usize; 4]) {
        let (model, device) = narrow_resnet50();
        let images = Tensor::<4>::random(shape, Distribution::Default, &device);
        let want = model.forward(images.clone()).into_data();
        let want = want.as_slice::<f32>().unwrap();
        let scale = want.iter().fold(0f32, |m, v| m.max(v.abs()));
        #[cfg(target_arch = "x86_64")]
        let products = [
            (false, false),
            (crate::cpu::panels::available(), false),
            (crate::cpu::panels::available(), true),
        ];
        #[cfg(not(target_arch = "x86_64"))]
        let products = [(false, false)];
        for (panels, winograd) in products {
            let fused = model.fused_with(panels, winograd).unwrap();
            let got = fused.forward(images.clone()).unwrap().into_data();
            let got = got.as_slice::<f32>().unwrap();
            let gap = got
                .iter()
                .zip(want)
                .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
            assert!(
                gap <= 1e-5 * scale,
                "panels {panels}, winograd {winograd}: {gap} of {scale}"
            );
        }
    }
}
