//! Where a training step's time goes: forward, backward and optimizer, timed apart.
//!
//! ```text
//! cargo run --release --example profile_step -- --backend flex --steps 5
//! cargo run --release --example profile_step -- --frozen        # head-only step (phase 1)
//! cargo run --release --example profile_step -- --infer         # inference, no autodiff
//! cargo run --release --example profile_step -- --infer --fused # inference, folded
//! cargo run --release --example profile_step -- --replicas 2    # data parallel: the exchange
//! ```
//! With `--replicas N` each step runs as the data-parallel learner's does on one device (N
//! shares of the batch, each forward and backward on its own, loss weighted by its share), and
//! the gradient exchange (every replica's gradients moved to the main device and summed, Burn's
//! `GradientsParams::to_device` and `GradientsAccumulator`) is timed apart.
//!
//! A step is timed to the end of the optimizer, whose output is read back, so lazy backends
//! (wgpu) are measured to completion. The first step (warm-up) is not counted.

use std::time::Instant;

use burn::module::Module;
use burn::nn::loss::CrossEntropyLossConfig;
use burn::optim::{GradientsAccumulator, GradientsParams, ModuleOptimizer};
use burn::tensor::{Distribution, Int, Tensor};
use clap::Parser;
use resnet_transfer::train::FusedAdamConfig;
use resnet_transfer::{BackendKind, FoldedResNet, ResNet, ResNetConfig};

/// Times the parts of a ResNet training step.
#[derive(Parser)]
struct Args {
    /// Backend: the fastest CPU backend compiled in by default.
    #[arg(long, default_value_t = BackendKind::default().name().to_string(), value_parser = clap::builder::PossibleValuesParser::new(BackendKind::ALL.map(BackendKind::name)), ignore_case = true)]
    backend: String,
    /// ResNet depth.
    #[arg(long, default_value_t = 50)]
    depth: usize,
    /// Batch size.
    #[arg(long, default_value_t = 32, value_parser = at_least_one)]
    batch: usize,
    /// Image side.
    #[arg(long, default_value_t = 32, value_parser = at_least_one)]
    size: usize,
    /// Timed steps (after one warm-up step).
    #[arg(long, default_value_t = 5, value_parser = at_least_one)]
    steps: usize,
    /// Freeze the backbone (the head-only step of phase 1).
    #[arg(long)]
    frozen: bool,
    /// Time inference (the model in inference mode, no autodiff) instead of a training step.
    #[arg(long, conflicts_with = "frozen")]
    infer: bool,
    /// With `--infer`: time the folded model (`ResNet::folded`) instead of the module.
    #[arg(long, requires = "infer")]
    fused: bool,
    /// Data parallel: split every batch into this many replicas' shares and time the gradient
    /// exchange apart.
    #[arg(long, default_value_t = 1, value_parser = at_least_one, conflicts_with = "infer")]
    replicas: usize,
}

/// A count that must be at least 1 (a batch, a side, steps, replicas): 0 is refused by clap,
/// naming the option, rather than panicking deep in a tensor operation.
fn at_least_one(text: &str) -> Result<usize, String> {
    match text.parse::<usize>() {
        Ok(0) => Err("must be at least 1".to_string()),
        Ok(n) => Ok(n),
        Err(e) => Err(e.to_string()),
    }
}

fn main() -> resnet_transfer::Result<()> {
    resnet_transfer::device::tune_host_allocator();
    let args = Args::parse();
    // As the crate's own loops do: on a worker of the CPU backends' thread pool.
    resnet_transfer::device::on_pool_worker(|| run(&args))
}

fn run(args: &Args) -> resnet_transfer::Result<()> {
    let kind: BackendKind = args.backend.parse()?;
    if args.infer {
        return infer(kind, args);
    }
    let device = kind.device()?.autodiff();
    let mut model = ResNetConfig::new(args.depth)
        .with_num_classes(Some(10))
        .init(&device)?;
    if args.frozen {
        model = model.freeze_backbone();
    }
    // As the learner's phase 1 runs on a CPU backend: the frozen backbone folded, untracked.
    let backbone = (args.frozen && resnet_transfer::device::is_host(&device))
        .then(|| model.folded())
        .transpose()?;
    let images = Tensor::<4>::random(
        [args.batch, 3, args.size, args.size],
        Distribution::Normal(0.0, 1.0),
        &device,
    );
    let mut totals = [0f64; 4];
    let replicas = args.replicas.clamp(1, args.batch);
    let mut optim = FusedAdamConfig::new().init();
    for step in 0..=args.steps {
        let times;
        // As the learner runs a step on a CPU backend: the pool's other workers held awake.
        (model, times) = resnet_transfer::device::keep_pool_awake(|| {
            timed_step(model, backbone.as_ref(), &mut optim, &images, replicas)
        })?;
        if step > 0 {
            totals.iter_mut().zip(times).for_each(|(t, x)| *t += x);
        }
    }
    let n = args.steps.max(1) as f64;
    let [forward, backward, exchange, optimizer] = totals.map(|t| 1e3 * t / n);
    let total = forward + backward + exchange + optimizer;
    let exchange = if replicas > 1 {
        format!(
            "gradient exchange of {replicas} replicas ({:.1} M parameters) {exchange:.1} ms, ",
            model.num_params() as f64 / 1e6
        )
    } else {
        String::new()
    };
    println!(
        "{} ResNet{} {}x{} batch {}{}: forward {forward:.0} ms, backward {backward:.0} ms, \
         {exchange}optimizer {optimizer:.0} ms, step {total:.0} ms ({:.1} img/s)",
        kind,
        args.depth,
        args.size,
        args.size,
        args.batch,
        if args.frozen {
            " (backbone frozen)"
        } else {
            ""
        },
        args.batch as f64 * 1e3 / total,
    );
    Ok(())
}

/// One training step on `images` split between `replicas`: the seconds of the forward passes,
/// the backward passes, the gradient exchange and the optimizer step.
fn timed_step(
    model: ResNet,
    backbone: Option<&FoldedResNet>,
    optim: &mut ModuleOptimizer,
    images: &Tensor<4>,
    replicas: usize,
) -> resnet_transfer::Result<(ResNet, [f64; 4])> {
    let device = images.device();
    let batch = images.dims()[0];
    let targets = Tensor::<1, Int>::arange(0..batch as i64, &device).remainder_scalar(10);
    let loss_fn = CrossEntropyLossConfig::new().init(&device);
    let mut times = [0f64; 4];
    let mut all = Vec::new();
    for r in 0..replicas {
        let (start, len) = (r * batch / replicas, batch / replicas);
        let len = if r + 1 == replicas {
            batch - start
        } else {
            len
        };
        let t0 = Instant::now();
        let share = images.clone().narrow(0, start, len);
        let logits = match (backbone, &model.head) {
            (Some(backbone), Some(head)) => head.forward(backbone.features(share)?),
            _ => model.forward(share),
        };
        let loss = loss_fn.forward(logits, targets.clone().narrow(0, start, len));
        let loss = loss * (len as f64 / batch as f64);
        let _ = loss.clone().into_data();
        let t1 = Instant::now();
        all.push(GradientsParams::from_grads(loss.backward(), &model));
        times[0] += (t1 - t0).as_secs_f64();
        times[1] += t1.elapsed().as_secs_f64();
    }
    let t2 = Instant::now();
    let grads = if replicas == 1 {
        all.pop().expect("one replica")
    } else {
        let mut accumulator = GradientsAccumulator::new();
        for grads in all {
            accumulator.accumulate(&model, grads.to_device(&device, &model));
        }
        accumulator.grads()
    };
    times[2] = t2.elapsed().as_secs_f64();
    let t3 = Instant::now();
    let model = optim.step(1e-3, model, grads);
    let head = model.head.as_ref().expect("a head");
    let _ = head.linear.weight.val().into_data();
    times[3] = t3.elapsed().as_secs_f64();
    Ok((model, times))
}

/// Times `forward` of the model in inference mode, read back to the host.
fn infer(kind: BackendKind, args: &Args) -> resnet_transfer::Result<()> {
    let device = kind.device()?;
    let model = ResNetConfig::new(args.depth)
        .with_num_classes(Some(10))
        .init(&device)?
        .valid();
    let images = Tensor::<4>::random(
        [args.batch, 3, args.size, args.size],
        Distribution::Normal(0.0, 1.0),
        &device,
    );
    let fused = args.fused.then(|| model.folded()).transpose()?;
    let mut times = Vec::with_capacity(args.steps);
    for step in 0..=args.steps {
        let start = Instant::now();
        let _ = match &fused {
            Some(fused) => fused.forward(images.clone())?.into_data(),
            None => model.forward(images.clone()).into_data(),
        };
        if step > 0 {
            times.push(start.elapsed().as_secs_f64() * 1e3);
        }
    }
    times.sort_by(f64::total_cmp);
    let median = times.get(times.len() / 2).copied().unwrap_or(f64::NAN);
    println!(
        "{} ResNet{} {}x{} batch {} inference{}: median {median:.1} ms ({:.1} img/s)",
        kind,
        args.depth,
        args.size,
        args.size,
        args.batch,
        if args.fused { " (fused)" } else { "" },
        args.batch as f64 * 1e3 / median,
    );
    Ok(())
}
