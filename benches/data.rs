//! The data pipeline: decode (parse an official binary batch), preprocess and batch, in images
//! per second. It must run far faster than the model trains, so data never makes it wait.
//!
//! `cargo bench --bench data`, ids `data/<decode|batch|batch_augment|batch_resize64>`.

use std::path::Path;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use resnet_transfer::data::cifar10::parse_binary;
use resnet_transfer::data::{Augment, ImageBatcher, Preprocess};

const IMAGES: usize = 10_000;
const BATCH: usize = 256;

fn binary_batch() -> Vec<u8> {
    (0..IMAGES * 3073)
        .map(|i| {
            if i % 3073 == 0 {
                (i / 3073 % 10) as u8
            } else {
                (i * 31 % 251) as u8
            }
        })
        .collect()
}

fn data_bench(c: &mut Criterion) {
    let bytes = binary_batch();
    let set = parse_binary(Path::new("bench.bin"), &bytes).unwrap();
    let device = resnet_transfer::BackendKind::default().device().unwrap();
    let indices: Vec<usize> = (0..BATCH).map(|i| i * 37 % IMAGES).collect();

    let mut group = c.benchmark_group("data");
    group.sample_size(20);
    group.throughput(Throughput::Elements(IMAGES as u64));
    group.bench_function("decode", |b| {
        b.iter(|| parse_binary(Path::new("b"), &bytes).unwrap())
    });

    group.throughput(Throughput::Elements(BATCH as u64));
    let plain = ImageBatcher::new(Preprocess::Caffe);
    let augment = ImageBatcher {
        augment: Some(Augment::default()),
        ..plain
    };
    let resize = ImageBatcher {
        size: Some(64),
        ..plain
    };
    for (name, batcher) in [
        ("batch", plain),
        ("batch_augment", augment),
        ("batch_resize64", resize),
    ] {
        group.bench_function(name, |b| {
            b.iter(|| {
                batcher
                    .batch_of(&set, &indices, 7, &device)
                    .unwrap()
                    .images
                    .into_data()
            })
        });
    }
    group.finish();
}

criterion_group!(benches, data_bench);
criterion_main!(benches);
