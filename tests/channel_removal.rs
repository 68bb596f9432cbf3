//! Channels removed through depthwise convs, concatenations and residual streams, on models
//! written here: an inverted residual whose expand filter dies (its depthwise channel and the
//! projection's input slice go), a depthwise filter that dies, a residual stream with a channel
//! dead in all its writers, a DenseNet-style concatenation, a U-Net-style skip (upsample +
//! concat); every compaction checked against the masked model. Declared wrong — a concatenation
//! in the wrong order, widths that do not add up — a typed error.

use texprune::burn::module::{Module, Param};
use texprune::burn::nn::{BatchNorm, BatchNormConfig, Linear, LinearConfig, PaddingConfig2d};
use texprune::burn::tensor::module::{adaptive_avg_pool2d, interpolate};
use texprune::burn::tensor::ops::{InterpolateMode, InterpolateOptions};
use texprune::burn::tensor::{Device, Tensor};
use texprune::data::SplitMix64;
use texprune::layer::testing::{self, Masking};
use texprune::{
    Activation, ModelError, Prunable, PrunableLayers, SkeletonConv2d, SkeletonConv2dConfig, compact,
};

mod common;

use common::{compare, images};

/// A `k × k` conv without bias, padding `k / 2`, stride `s`, `groups`.
fn conv(
    cin: usize,
    cout: usize,
    k: usize,
    s: usize,
    groups: usize,
    device: &Device,
) -> SkeletonConv2d {
    let p = k / 2;
    SkeletonConv2dConfig::new([cin, cout], [k, k])
        .with_stride([s, s])
        .with_groups(groups)
        .with_padding(PaddingConfig2d::Explicit(p, p, p, p))
        .with_bias(false)
        .init(device)
        .unwrap()
}

/// Random weights with a quarter of the stripes of 3×3 convs dead (no dead filter) and random
/// norm statistics: every channel varies until a test kills it.
fn randomize(conv: &mut SkeletonConv2d, norm: &mut BatchNorm, rng: &mut SplitMix64) {
    let [cout, _, kh, _] = conv.weight_dims();
    let masking = Masking {
        stripe: if kh > 1 { 0.25 } else { 0.0 },
        filter: 0.0,
        layer: 0.0,
    };
    testing::randomize_conv(conv, masking, rng);
    testing::randomize_norm(norm, &vec![false; cout], rng);
}

/// Kills filter `f` as DTC leaves a dead filter: its skeleton row zero and, with `zero_norm`, its
/// norm's `γ`, `β` zero (without, the channel is the constant `act(bn(0))`).
fn kill(conv: &mut SkeletonConv2d, norm: &mut BatchNorm, f: usize, zero_norm: bool) {
    let zero_row = |t: Tensor<3>| {
        let [_, kh, kw] = t.dims();
        let zeros = Tensor::zeros([1, kh, kw], &t.device());
        t.slice_assign([f..f + 1, 0..kh, 0..kw], zeros)
    };
    conv.skeleton = Param::from_tensor(zero_row(conv.skeleton.val()));
    if zero_norm {
        let zero = |t: Tensor<1>| t.slice_assign(f..f + 1, Tensor::zeros([1], &Device::default()));
        norm.gamma = Param::from_tensor(zero(norm.gamma.val()));
        norm.beta = Param::from_tensor(zero(norm.beta.val()));
    }
}

/// Compacts `model` with the check and compares the compact model's logits with the masked
/// model's on fresh images (≤ 1e-5 relative, same argmax).
fn compact_exactly<M: Prunable>(model: &M, forward: fn(&M, Tensor<4>) -> Tensor<2>) -> M {
    let mut rng = SplitMix64(3);
    let device = Device::default();
    let compacted = compact(model, images(2, &mut rng, &device), forward).unwrap();
    let x = images(6, &mut rng, &device);
    let (err, same) = compare(forward(&compacted, x.clone()), forward(model, x));
    assert!(err <= 1e-5 && same, "relative error {err}");
    compacted
}

/// stem → expand (1×1) → depthwise (3×3) → project (1×1) added to the stem's output (a residual
/// stream) → mix (1×1, reads the stream) → global pool → linear.
#[derive(Module, Debug)]
struct Inverted {
    stem: SkeletonConv2d,
    stem_bn: BatchNorm,
    expand: SkeletonConv2d,
    expand_bn: BatchNorm,
    depthwise: SkeletonConv2d,
    depthwise_bn: BatchNorm,
    project: SkeletonConv2d,
    project_bn: BatchNorm,
    mix: SkeletonConv2d,
    mix_bn: BatchNorm,
    head: Linear,
    /// Whether the declaration names the residual stream.
    #[module(skip)]
    stream_declared: bool,
}

const W: usize = 8;

impl Inverted {
    fn new(seed: u64) -> Self {
        let device = Device::default();
        let norm = |c| BatchNormConfig::new(c).init(&device);
        let mut m = Self {
            stem: conv(1, W, 3, 1, 1, &device),
            stem_bn: norm(W),
            expand: conv(W, 4 * W, 1, 1, 1, &device),
            expand_bn: norm(4 * W),
            depthwise: conv(4 * W, 4 * W, 3, 1, 4 * W, &device),
            depthwise_bn: norm(4 * W),
            project: conv(4 * W, W, 1, 1, 1, &device),
            project_bn: norm(W),
            mix: conv(W, 2 * W, 1, 1, 1, &device),
            mix_bn: norm(2 * W),
            head: LinearConfig::new(2 * W, 10).init(&device),
            stream_declared: true,
        };
        let mut rng = SplitMix64(seed);
        for (c, n) in [
            (&mut m.stem, &mut m.stem_bn),
            (&mut m.expand, &mut m.expand_bn),
            (&mut m.depthwise, &mut m.depthwise_bn),
            (&mut m.project, &mut m.project_bn),
            (&mut m.mix, &mut m.mix_bn),
        ] {
            randomize(c, n, &mut rng);
        }
        m
    }

    fn forward(&self, x: Tensor<4>) -> Tensor<2> {
        use Activation::{Identity, Relu, Relu6};
        let x = self.stem.forward_norm(x, &self.stem_bn, None, Relu6);
        let y = self
            .expand
            .forward_norm(x.clone(), &self.expand_bn, None, Relu6);
        let y = self
            .depthwise
            .forward_norm(y, &self.depthwise_bn, None, Relu6);
        let x = self
            .project
            .forward_norm(y, &self.project_bn, Some(x), Identity);
        let x = self.mix.forward_norm(x, &self.mix_bn, None, Relu);
        self.head
            .forward(adaptive_avg_pool2d(x, [1, 1]).flatten(1, 3))
    }
}

impl Prunable for Inverted {
    fn prunable_layers(&self, layers: &mut PrunableLayers) {
        layers
            .conv("stem", &self.stem)
            .norm("stem_bn", &self.stem_bn)
            .activation(Activation::Relu6);
        layers
            .conv("expand", &self.expand)
            .norm("expand_bn", &self.expand_bn)
            .activation(Activation::Relu6)
            .feeds(["depthwise"]);
        layers
            .conv("depthwise", &self.depthwise)
            .norm("depthwise_bn", &self.depthwise_bn)
            .activation(Activation::Relu6)
            .feeds(["project"]);
        layers
            .conv("project", &self.project)
            .norm("project_bn", &self.project_bn);
        layers
            .conv("mix", &self.mix)
            .norm("mix_bn", &self.mix_bn)
            .relu()
            .feeds(["head"]);
        layers.linear("head", &self.head);
        if self.stream_declared {
            layers.residual_stream("stream", ["stem", "project"], ["expand", "mix"]);
        }
    }
}

#[test]
fn a_dead_expand_filter_takes_its_depthwise_channel_and_the_projections_input() {
    for seed in 0..3 {
        let mut m = Inverted::new(seed);
        kill(&mut m.expand, &mut m.expand_bn, 3, true);
        let c = compact_exactly(&m, Inverted::forward);
        // The depthwise filter reading the zero channel is silent: its channel is the constant
        // relu6(bn(0)), which the 1×1 projection folds into its norm.
        assert_eq!(c.expand.weight_dims()[0], 4 * W - 1);
        assert_eq!(c.depthwise.weight_dims(), [4 * W - 1, 1, 3, 3]);
        assert_eq!(c.depthwise.groups(), 4 * W - 1);
        assert_eq!(c.project.in_channels(), 4 * W - 1);
        // Nothing else goes: every other channel varies.
        assert_eq!(c.stem.weight_dims()[0], W);
        assert_eq!(c.mix.weight_dims()[0], 2 * W);
    }
}

#[test]
fn a_dead_depthwise_filter_takes_its_expand_channel() {
    for (seed, zero_norm) in [(10, true), (11, false)] {
        let mut m = Inverted::new(seed);
        // Zeroed norm: the channel is zero. Not zeroed: the constant relu6(bn(0)), folded.
        kill(&mut m.depthwise, &mut m.depthwise_bn, 5, zero_norm);
        kill(&mut m.depthwise, &mut m.depthwise_bn, 6, zero_norm);
        let c = compact_exactly(&m, Inverted::forward);
        assert_eq!(
            c.expand.weight_dims()[0],
            4 * W - 2,
            "zeroed norm {zero_norm}"
        );
        assert_eq!(c.depthwise.weight_dims()[0], 4 * W - 2);
        assert_eq!(c.project.in_channels(), 4 * W - 2);
    }
}

#[test]
fn a_stream_channel_goes_when_dead_in_every_writer() {
    let mut m = Inverted::new(20);
    assert!(m.stream_declared);
    kill(&mut m.stem, &mut m.stem_bn, 2, true);
    kill(&mut m.project, &mut m.project_bn, 2, true);
    // Dead in one writer only: the other writer still writes it.
    kill(&mut m.project, &mut m.project_bn, 4, true);
    let c = compact_exactly(&m, Inverted::forward);
    assert_eq!(c.stem.weight_dims()[0], W - 1);
    assert_eq!(c.project.weight_dims()[0], W - 1);
    assert_eq!(c.stem_bn.gamma.dims(), [W - 1]);
    assert_eq!(c.expand.in_channels(), W - 1);
    assert_eq!(c.mix.in_channels(), W - 1);
    // Without the stream declared, the writers keep every channel.
    m.stream_declared = false;
    let plain = compact_exactly(&m, Inverted::forward);
    assert_eq!(plain.stem.weight_dims()[0], W);
    assert_eq!(plain.project.weight_dims()[0], W);
}

/// DenseNet- and U-Net-style: stem → d1; d2 reads [stem, d1]; down (stride 2) reads
/// [stem, d1, d2]; fuse reads [upsample(down), d2] (the skip connection); global pool → linear.
#[derive(Module, Debug)]
struct DenseUnet {
    stem: SkeletonConv2d,
    stem_bn: BatchNorm,
    d1: SkeletonConv2d,
    d1_bn: BatchNorm,
    d2: SkeletonConv2d,
    d2_bn: BatchNorm,
    down: SkeletonConv2d,
    down_bn: BatchNorm,
    fuse: SkeletonConv2d,
    fuse_bn: BatchNorm,
    head: Linear,
}

impl DenseUnet {
    fn new(seed: u64) -> Self {
        let device = Device::default();
        let norm = |c| BatchNormConfig::new(c).init(&device);
        let mut m = Self {
            stem: conv(1, W, 3, 1, 1, &device),
            stem_bn: norm(W),
            d1: conv(W, W, 3, 1, 1, &device),
            d1_bn: norm(W),
            d2: conv(2 * W, W, 3, 1, 1, &device),
            d2_bn: norm(W),
            down: conv(3 * W, 2 * W, 3, 2, 1, &device),
            down_bn: norm(2 * W),
            fuse: conv(3 * W, W, 3, 1, 1, &device),
            fuse_bn: norm(W),
            head: LinearConfig::new(W, 10).init(&device),
        };
        let mut rng = SplitMix64(seed);
        for (c, n) in [
            (&mut m.stem, &mut m.stem_bn),
            (&mut m.d1, &mut m.d1_bn),
            (&mut m.d2, &mut m.d2_bn),
            (&mut m.down, &mut m.down_bn),
            (&mut m.fuse, &mut m.fuse_bn),
        ] {
            randomize(c, n, &mut rng);
        }
        m
    }

    fn forward(&self, x: Tensor<4>) -> Tensor<2> {
        let relu = Activation::Relu;
        let x0 = self.stem.forward_norm(x, &self.stem_bn, None, relu);
        let x1 = self.d1.forward_norm(x0.clone(), &self.d1_bn, None, relu);
        let x2 = self.d2.forward_norm(
            Tensor::cat(vec![x0.clone(), x1.clone()], 1),
            &self.d2_bn,
            None,
            relu,
        );
        let x3 = self.down.forward_norm(
            Tensor::cat(vec![x0, x1, x2.clone()], 1),
            &self.down_bn,
            None,
            relu,
        );
        let up = interpolate(
            x3,
            InterpolateOptions::new(InterpolateMode::Nearest).with_scale_factor([2.0, 2.0]),
        );
        let x4 = self
            .fuse
            .forward_norm(Tensor::cat(vec![up, x2], 1), &self.fuse_bn, None, relu);
        self.head
            .forward(adaptive_avg_pool2d(x4, [1, 1]).flatten(1, 3))
    }

    fn declare(&self, layers: &mut PrunableLayers) {
        let pairs = [
            ("stem", &self.stem, &self.stem_bn),
            ("d1", &self.d1, &self.d1_bn),
            ("d2", &self.d2, &self.d2_bn),
            ("down", &self.down, &self.down_bn),
            ("fuse", &self.fuse, &self.fuse_bn),
        ];
        for (name, conv, norm) in pairs {
            layers
                .conv(name, conv)
                .norm(format!("{name}_bn"), norm)
                .relu();
        }
        layers.linear("head", &self.head);
    }
}

impl Prunable for DenseUnet {
    fn prunable_layers(&self, layers: &mut PrunableLayers) {
        self.declare(layers);
        layers.concat("d1", ["stem"]);
        layers.concat("d2", ["stem", "d1"]);
        layers.concat("down", ["stem", "d1", "d2"]);
        layers.concat("fuse", ["down", "d2"]);
        layers.concat("head", ["fuse"]);
    }
}

#[test]
fn dense_and_skip_concatenations_lose_their_sources_dead_channels_at_their_offsets() {
    for seed in 0..3 {
        let mut m = DenseUnet::new(30 + seed);
        kill(&mut m.stem, &mut m.stem_bn, 1, true);
        kill(&mut m.d1, &mut m.d1_bn, 4, true);
        kill(&mut m.d2, &mut m.d2_bn, 0, true);
        kill(&mut m.d2, &mut m.d2_bn, 7, true);
        // The upsampled half of the skip concatenation.
        kill(&mut m.down, &mut m.down_bn, 3, true);
        let c = compact_exactly(&m, DenseUnet::forward);
        assert_eq!(c.stem.weight_dims()[0], W - 1);
        assert_eq!(c.d1.weight_dims()[0], W - 1);
        assert_eq!(c.d2.weight_dims()[0], W - 2);
        assert_eq!(c.down.weight_dims()[0], 2 * W - 1);
        assert_eq!(c.d1.in_channels(), W - 1);
        assert_eq!(c.d2.in_channels(), 2 * W - 2);
        assert_eq!(c.down.in_channels(), 3 * W - 4);
        assert_eq!(c.fuse.in_channels(), 3 * W - 3);
    }
}

/// The skip concatenation declared in the wrong order (`[d2, down]`: the same 24 channels).
#[derive(Module, Debug)]
struct Swapped {
    net: DenseUnet,
}

impl Prunable for Swapped {
    fn prunable_layers(&self, layers: &mut PrunableLayers) {
        self.net.declare(layers);
        layers.concat("d1", ["stem"]);
        layers.concat("d2", ["stem", "d1"]);
        layers.concat("down", ["stem", "d1", "d2"]);
        layers.concat("fuse", ["d2", "down"]);
        layers.concat("head", ["fuse"]);
    }
}

/// A concatenation whose widths do not add up to its reader's input channels.
#[derive(Module, Debug)]
struct Short {
    net: DenseUnet,
}

impl Prunable for Short {
    fn prunable_layers(&self, layers: &mut PrunableLayers) {
        self.net.declare(layers);
        layers.concat("d2", ["d1"]);
    }
}

#[test]
fn a_concatenation_declared_wrong_is_a_typed_error() {
    let mut net = DenseUnet::new(40);
    kill(&mut net.down, &mut net.down_bn, 3, true);
    kill(&mut net.d2, &mut net.d2_bn, 6, true);
    let x = images(2, &mut SplitMix64(1), &Device::default());
    let swapped = Swapped { net };
    let err = compact(&swapped, x.clone(), |s: &Swapped, x| s.net.forward(x)).unwrap_err();
    match err {
        ModelError::Mismatch { layers, .. } => {
            assert!(
                layers.iter().any(|l| l == "down" || l == "d2"),
                "culprits {layers:?}"
            );
        }
        other => panic!("expected a mismatch, got {other}"),
    }
    let short = Short { net: swapped.net };
    let err = compact(&short, x, |s: &Short, x| s.net.forward(x)).unwrap_err();
    match err {
        ModelError::Declaration(message) => {
            assert!(
                message.contains("`d2` takes 16 input channels"),
                "{message}"
            );
        }
        other => panic!("expected a declaration error, got {other}"),
    }
}

/// A declaration of the inverted-residual network.
type Declare = fn(&Inverted, &mut PrunableLayers);

#[test]
fn contradicting_declarations_are_typed_errors() {
    // Each declaration contradicts the model in one way.
    let cases: [(Declare, &str); 4] = [
        // A stream whose writers have different widths.
        (
            |n, l| {
                n.prunable_layers(l);
                l.residual_stream("bad", ["expand", "mix"], Vec::<String>::new());
            },
            "writes",
        ),
        // A writer that also feeds a layer directly.
        (
            |n, l| {
                l.conv("stem", &n.stem).feeds(["expand"]);
                l.conv("expand", &n.expand);
                l.conv("project", &n.project);
                l.residual_stream("s", ["stem", "project"], Vec::<String>::new());
            },
            "declare `expand` a reader of the stream",
        ),
        // An unknown source.
        (
            |n, l| {
                l.conv("stem", &n.stem);
                l.conv("expand", &n.expand);
                l.concat("expand", ["nowhere"]);
            },
            "`nowhere`",
        ),
        // Two producers without a concatenation.
        (
            |n, l| {
                l.conv("stem", &n.stem).feeds(["mix"]);
                l.conv("project", &n.project).feeds(["mix"]);
                l.conv("mix", &n.mix);
            },
            "PrunableLayers::concat",
        ),
    ];
    for (declare, expected) in cases {
        let mut layers = PrunableLayers::default();
        declare(&Inverted::new(1), &mut layers);
        let err = texprune::compact::Wiring::resolve(&layers).unwrap_err();
        match err {
            ModelError::Declaration(message) => {
                assert!(message.contains(expected), "{message}")
            }
            other => panic!("expected a declaration error, got {other}"),
        }
    }
}

/// Sets every skeleton row of `conv` to `rows[f]` (all `kh·kw` entries).
fn uniform_rows(conv: &mut SkeletonConv2d, rows: &[f32]) {
    let [cout, kh, kw] = conv.skeleton.dims();
    let values = rows.iter().flat_map(|&a| vec![a; kh * kw]).collect();
    conv.skeleton = Param::from_tensor(testing::tensor(values, [cout, kh, kw], &Device::default()));
}

/// One DTC step at δ = 0.5 on the inverted-residual network whose stream channel 2 is strong in
/// the stem (strength `max |S_f| / T_f` = 1.5) and weak in the projection (0.2), every other
/// filter at strength ≈ 2: alone, only the projection's filter dies and the stream keeps the
/// channel; coupled, the group's mean strength 0.85 ≤ 1 kills both and compaction removes it.
#[test]
fn coupled_pruning_masks_a_stream_channel_in_every_writer() {
    use texprune::burn::optim::GradientsParams;
    use texprune::{CdpConfig, DtcConfig, Pruner, PrunerConfig};
    let mut net = Inverted::new(50);
    let mut stem = vec![1.0; W];
    stem[2] = 0.858;
    let mut project = vec![1.0; W];
    project[2] = 0.3;
    uniform_rows(&mut net.stem, &stem);
    uniform_rows(&mut net.project, &project);
    uniform_rows(&mut net.expand, &[1.0; 4 * W]);
    uniform_rows(&mut net.depthwise, &[1.0; 4 * W]);
    uniform_rows(&mut net.mix, &[1.0; 2 * W]);
    for coupled in [false, true] {
        let config = PrunerConfig::new(CdpConfig::new(), DtcConfig::new().with_threshold(0.5))
            .with_coupled_channels(coupled);
        let mut pruner = Pruner::new(config).unwrap();
        pruner
            .threshold_step(&net, &mut GradientsParams::new())
            .unwrap();
        let masked = pruner.apply_masks(net.clone());
        let c = compact_exactly(&masked, Inverted::forward);
        let alive = |name: &str| {
            let l = pruner.layers(&net).unwrap();
            let i = l.iter().position(|l| l.name == name).unwrap();
            let m = pruner.container().masks(i).unwrap().alive.clone();
            m.into_data().iter::<bool>().filter(|&a| a).count()
        };
        match coupled {
            false => {
                assert_eq!((alive("stem"), alive("project")), (W, W - 1));
                assert_eq!(c.stem.weight_dims()[0], W);
            }
            true => {
                assert_eq!((alive("stem"), alive("project")), (W - 1, W - 1));
                assert_eq!(c.stem.weight_dims()[0], W - 1);
                assert_eq!(c.project.weight_dims()[0], W - 1);
                assert_eq!(c.mix.in_channels(), W - 1);
            }
        }
        // The depthwise pairs are coupled too, all strong: no expand channel dies.
        assert_eq!(c.expand.weight_dims()[0], 4 * W, "coupled {coupled}");
    }
}
