//! Exactness of compaction: for random weights, BatchNorm statistics and masks (with dead
//! stripes, dead filters, constant channels and dead blocks), the compact model's output equals
//! the masked model's.

use burn::module::{Module, Param};
use burn::tensor::{Device, Tensor};
use texprune_layer::compact_unchecked;
use texprune_layer::testing::{
    MASKINGS, Masking, SplitMix64 as Rng, random_input as input, randomize_conv, randomize_norm,
};
use texprune_layer::{CostReport, Costed, SkeletonConv2d};
use texprune_zoo::resnet::{ResNet, ResNetConfig};
use texprune_zoo::vgg::{Vgg, VggConfig, VggLayer};

/// Dead filters of a coupled conv get a zeroed BatchNorm, except with probability `keep`
/// (then their channel is the constant `relu(bn(0))`, which compaction must keep).
fn coupled(dead: &[bool], keep: f32, rng: &mut Rng) -> Vec<bool> {
    dead.iter().map(|&d| d && !rng.chance(keep)).collect()
}

fn randomize_vgg(mut model: Vgg, masking: Masking, rng: &mut Rng) -> Vgg {
    for (conv, norm) in model.convs.iter_mut().zip(model.norms.iter_mut()) {
        let dead = randomize_conv(conv, masking, rng);
        randomize_norm(norm, &coupled(&dead, 0.2, rng), rng);
    }
    model
}

fn randomize_resnet(mut model: ResNet, masking: Masking, rng: &mut Rng) -> ResNet {
    randomize_conv(&mut model.conv1, masking, rng);
    randomize_norm(&mut model.bn1, &[], rng);
    for block in &mut model.blocks {
        let last = block.convs.len() - 1;
        for (k, (conv, norm)) in block
            .convs
            .iter_mut()
            .zip(block.norms.iter_mut())
            .enumerate()
        {
            let dead = randomize_conv(conv, masking, rng);
            let zeroed = if k < last {
                coupled(&dead, 0.2, rng)
            } else {
                vec![]
            };
            randomize_norm(norm, &zeroed, rng);
        }
        if let Some(s) = &mut block.shortcut {
            let dense = Masking {
                stripe: 0.0,
                filter: 0.0,
                layer: 0.0,
            };
            randomize_conv(&mut s.conv, dense, rng);
            randomize_norm(&mut s.norm, &[], rng);
        }
    }
    model
}

/// `max |a − b| / max |b|`.
fn relative_error(a: Tensor<2>, b: Tensor<2>) -> f32 {
    let diff: f32 = (a - b.clone()).abs().max().into_scalar();
    let scale: f32 = b.abs().max().into_scalar();
    let scale = scale.max(1e-6);
    diff / scale
}

fn check_vgg(config: VggConfig, seeds: u64, size: usize) {
    let device = Device::default();
    for seed in 0..seeds {
        let mut rng = Rng(seed);
        let masking = MASKINGS[seed as usize % MASKINGS.len()];
        let model = randomize_vgg(config.init(&device).unwrap(), masking, &mut rng);
        let compact = compact_unchecked(model.clone()).unwrap();
        assert!(compact.convs.iter().all(SkeletonConv2d::is_stripe_wise));
        let x = input([2, 3, size, size], &mut rng, &device);
        let err = relative_error(compact.forward(x.clone()), model.forward(x));
        assert!(err <= 1e-5, "seed {seed}: relative error {err}");
        let (dense, small) = (model.cost([size, size]), compact.cost([size, size]));
        assert!(small.macs() <= dense.macs() && small.params() <= dense.params());
        // The generic cost (from the declaration) agrees with the zoo's on the convs.
        let generic = CostReport::of_model(&compact).unwrap();
        let convs = |r: &CostReport| {
            r.of_kind(texprune_layer::LayerKind::StripeConv)
                .map(|l| l.macs)
                .sum::<u64>()
        };
        assert_eq!(convs(&generic), convs(&small), "seed {seed}");
    }
}

/// Returns how many blocks were folded over all seeds.
fn check_resnet(config: ResNetConfig, seeds: u64, size: usize) -> usize {
    let device = Device::default();
    let mut folded = 0;
    for seed in 0..seeds {
        let mut rng = Rng(1000 + seed);
        let masking = MASKINGS[seed as usize % MASKINGS.len()];
        let model = randomize_resnet(config.init(&device).unwrap(), masking, &mut rng);
        let compact = compact_unchecked(model.clone()).unwrap();
        folded += compact.folded_blocks().len();
        let x = input([2, 3, size, size], &mut rng, &device);
        let err = relative_error(compact.forward(x.clone()), model.forward(x));
        assert!(err <= 1e-5, "seed {seed}: relative error {err}");
        let (dense, small) = (model.cost([size, size]), compact.cost([size, size]));
        assert!(small.macs() <= dense.macs());
    }
    folded
}

#[test]
fn compact_vgg11_equals_masked() {
    check_vgg(VggConfig::vgg11(), 6, 32);
}

#[test]
fn compact_vgg16_equals_masked() {
    check_vgg(VggConfig::vgg16(), 6, 32);
}

#[test]
fn compact_small_vgg_with_pools_at_the_end_equals_masked() {
    use VggLayer::{Conv as C, MaxPool as M};
    check_vgg(
        VggConfig::new(vec![C(6), M, C(8), M, C(12), M, M, M]),
        20,
        32,
    );
}

#[test]
fn compact_resnet20_equals_masked_and_folds_blocks() {
    assert!(check_resnet(ResNetConfig::cifar(20), 12, 32) > 0);
}

#[test]
fn compact_resnet56_equals_masked() {
    assert!(check_resnet(ResNetConfig::cifar(56), 6, 32) > 0);
}

#[test]
fn compact_resnet18_equals_masked() {
    check_resnet(ResNetConfig::resnet18().with_num_classes(10), 3, 64);
}

#[test]
fn compact_resnet50_equals_masked() {
    check_resnet(ResNetConfig::resnet50().with_num_classes(10), 3, 64);
}

#[test]
fn all_dead_vgg_still_runs_and_matches() {
    let device = Device::default();
    let mut rng = Rng(7);
    let dead = Masking {
        stripe: 1.0,
        filter: 1.0,
        layer: 1.0,
    };
    use VggLayer::{Conv as C, MaxPool as M};
    let model = randomize_vgg(
        VggConfig::new(vec![C(4), M, C(6)]).init(&device).unwrap(),
        dead,
        &mut rng,
    );
    let compact = compact_unchecked(model.clone()).unwrap();
    assert_eq!(compact.convs[1].stripe_layout().live_stripes(), 0);
    // Every channel is dead: each conv keeps one exactly-zero channel, the classifier its rows.
    assert_eq!(compact.convs[1].weight_dims()[..2], [1, 1]);
    assert_eq!(compact.classifier.weight.dims()[0], 32 * 32 / 4);
    let x = input([2, 3, 32, 32], &mut rng, &device);
    assert!(relative_error(compact.forward(x.clone()), model.forward(x)) <= 1e-5);
}

/// A compacted model is rebuilt from the masked model's record: load it into a fresh model and
/// compact again.
#[test]
fn compacting_a_reloaded_masked_model_gives_the_same_model() {
    let device = Device::default();
    let mut rng = Rng(42);
    let config = ResNetConfig::cifar(20);
    let masked = randomize_resnet(config.init(&device).unwrap(), MASKINGS[1], &mut rng);
    let x = input([2, 3, 32, 32], &mut rng, &device);
    let expected = compact_unchecked(masked.clone())
        .unwrap()
        .forward(x.clone())
        .into_data();
    let dir = std::env::temp_dir().join(format!("texprune-compact-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("resnet20.bpk");
    masked.save_file(&path).unwrap();
    let reloaded = config.init(&device).unwrap().try_load_file(&path).unwrap();
    assert_eq!(
        compact_unchecked(reloaded).unwrap().forward(x).into_data(),
        expected
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn non_finite_skeleton_is_an_error() {
    let device = Device::default();
    let mut model = VggConfig::new(vec![VggLayer::Conv(4)])
        .init(&device)
        .unwrap();
    model.convs[0].skeleton = Param::from_tensor(Tensor::full([4, 3, 3], f32::NAN, &device));
    let err = compact_unchecked(model).unwrap_err();
    assert!(err.to_string().contains("features.0"), "{err}");
}

#[test]
fn host_max_pool_equals_burns() {
    let device = Device::default();
    let mut rng = Rng(8);
    for size in [8, 7, 3, 1] {
        let x = input([2, 3, size, size], &mut rng, &device);
        let burn = burn::nn::pool::MaxPool2dConfig::new([2, 2])
            .init()
            .forward(x.clone());
        let data: Vec<f32> = x.into_data().iter::<f32>().collect();
        let host = texprune_kernels::pool::max_pool_2x2(&data, [6, size, size]);
        let expected: Vec<f32> = burn.clone().into_data().iter::<f32>().collect();
        assert_eq!(burn.dims(), [2, 3, size / 2, size / 2]);
        assert_eq!(host, expected, "size {size}");
    }
}

/// Zeroes filter `f` of `conv` and its norm's `γ`, `β` (a dead filter as DTC leaves it).
fn kill_filter(conv: &mut SkeletonConv2d, norm: &mut burn::nn::BatchNorm, f: usize) {
    let [cout, kh, kw] = conv.skeleton.dims();
    let row = |t: Tensor<3>| {
        t.slice_assign(
            [f..f + 1, 0..kh, 0..kw],
            Tensor::zeros([1, kh, kw], &Device::default()),
        )
    };
    conv.skeleton = Param::from_tensor(row(conv.skeleton.val()));
    let zero = |t: Tensor<1>| t.slice_assign(f..f + 1, Tensor::zeros([1], &Device::default()));
    norm.gamma = Param::from_tensor(zero(norm.gamma.val()));
    norm.beta = Param::from_tensor(zero(norm.beta.val()));
    assert!(f < cout);
}

/// A ResNet-20 that declares its residual streams, with channel 3 dead in every writer of the
/// first stream (the stem and each first-stage block's last conv) and channel 5 dead in all but
/// one writer of the second: the first stream loses channel 3 in every writer, norm and reader
/// (the first stage's first convs, the second stage's first conv and shortcut), exactly; the
/// second keeps its width.
#[test]
fn a_resnet_stream_channel_dead_in_every_writer_is_removed() {
    let device = Device::default();
    let mut rng = Rng(7);
    let config = ResNetConfig::cifar(20).with_residual_streams(true);
    let mut model = randomize_resnet(config.init(&device).unwrap(), MASKINGS[2], &mut rng);
    kill_filter(&mut model.conv1, &mut model.bn1, 3);
    for block in &mut model.blocks[..3] {
        let (conv, norm) = (
            block.convs.last_mut().unwrap(),
            block.norms.last_mut().unwrap(),
        );
        kill_filter(conv, norm, 3);
    }
    for block in &mut model.blocks[4..6] {
        let (conv, norm) = (
            block.convs.last_mut().unwrap(),
            block.norms.last_mut().unwrap(),
        );
        kill_filter(conv, norm, 5);
    }
    let compact = compact_unchecked(model.clone()).unwrap();
    let x = input([2, 3, 32, 32], &mut rng, &device);
    let err = relative_error(compact.forward(x.clone()), model.forward(x));
    assert!(err <= 1e-5, "relative error {err}");
    assert_eq!(compact.conv1.weight_dims()[0], 15);
    assert_eq!(compact.bn1.gamma.dims(), [15]);
    for block in &compact.blocks[..3] {
        assert_eq!(block.convs[0].in_channels(), 15);
        assert_eq!(block.convs[1].weight_dims()[0], 15);
    }
    let stage2 = &compact.blocks[3];
    assert_eq!(stage2.convs[0].in_channels(), 15);
    assert_eq!(stage2.shortcut.as_ref().unwrap().conv.in_channels(), 15);
    assert_eq!(stage2.shortcut.as_ref().unwrap().conv.weight_dims()[0], 32);
    // Without the streams declared, every stream keeps its channels.
    let mut plain = model;
    plain.residual_streams = false;
    let compact = compact_unchecked(plain).unwrap();
    assert_eq!(compact.conv1.weight_dims()[0], 16);
}
