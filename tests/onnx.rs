//! ONNX export checked by a real ONNX engine (tract): the zoo's ResNet-20, VGG-11 and narrow
//! MobileNetV2, and a model written in the tests (a plain Burn conv and Burn's BatchNorm called
//! on its own before the MobileNet-style network of `tests/common/mobilenet.rs`: an inverted
//! residual with a depthwise conv, grouped and dilated skeleton convs, ReLU6/SiLU/Hardswish),
//! each dense and
//! compacted, run by tract at a batch size the export never saw, equal to texprune's output
//! (≤ 1e-4 relative, same argmax); the model unchanged by its export; bad input a typed error
//! with no file written. With `TEXPRUNE_ONNX_DIR` set, each checked file is also written there
//! with a probe (`<name>.probe.safetensors`: the input and texprune's output) for
//! `scripts/onnx_check.py`, which runs them in ONNX Runtime.

use std::path::PathBuf;

use texprune::burn::module::{Module, ModuleMapper, Param};
use texprune::burn::nn::conv::{Conv2d, Conv2dConfig};
use texprune::burn::nn::{BatchNorm, BatchNormConfig, PaddingConfig2d};
use texprune::burn::tensor::{Bool, Device, Tensor, TensorData};
use texprune::data::SplitMix64;
use texprune::layer::testing::random_input;
use texprune::onnx::{ExportForm, OnnxError, OnnxExport};
use texprune::zoo::mobilenet::{MobileNetV2, MobileNetV2Config};
use texprune::zoo::resnet::{ResNet, ResNetConfig};
use texprune::zoo::vgg::{Vgg, VggConfig};
use texprune::{
    Activation, CompactOptions, Prunable, PrunableLayers, SkeletonConv2d, SkeletonConv2dConfig,
    apply_stripe_masks, compact, compact_with,
};
use tract_onnx::prelude::{Framework, InferenceModelExt, IntoTensor, tvec};

mod common;

use common::compare;
use common::mobilenet::MobileNet;

/// `batch` images of `[c, h, w]`, uniform in `[−2, 2)`.
fn inputs(batch: usize, [c, h, w]: [usize; 3], seed: u64) -> Tensor<4> {
    let device = Device::default();
    random_input([batch, c, h, w], &mut SplitMix64(seed), &device)
}

/// The output of the ONNX model `bytes` on `x`, run by tract.
fn run_tract(bytes: &[u8], x: &Tensor<4>) -> Tensor<2> {
    let dims = x.dims();
    let values: Vec<f32> = x.to_data().iter::<f32>().collect();
    let model = tract_onnx::onnx()
        .model_for_read(&mut &bytes[..])
        .expect("tract reads the file")
        .into_optimized()
        .expect("tract optimizes the model")
        .into_runnable()
        .expect("tract plans the model");
    let input = tract_onnx::prelude::tract_ndarray::Array4::from_shape_vec(dims, values)
        .unwrap()
        .into_tensor();
    let outputs = model
        .run(tvec!(input.into()))
        .expect("tract runs the model");
    let output = outputs[0].to_array_view::<f32>().unwrap();
    let shape: [usize; 2] = output.shape().try_into().expect("logits [batch, classes]");
    texprune::layer::testing::tensor(output.iter().copied().collect(), shape, &Device::default())
}

/// Exports `model` (example: batch 1), runs the file in tract on a batch of 3 and compares it
/// with texprune's output; checks the model is unchanged by the export.
fn check<M: Module>(
    name: &str,
    model: &M,
    forward: fn(&M, Tensor<4>) -> Tensor<2>,
    image: [usize; 3],
) {
    let x = inputs(3, image, 7);
    let before = forward(model, x.clone());
    let onnx = texprune::onnx::export(model, inputs(1, image, 8), forward)
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    let after = forward(model, x.clone());
    let (changed, _) = compare(after, before.clone());
    assert_eq!(changed, 0.0, "{name}: the export changed the model");
    let (deviation, same) = compare(run_tract(onnx.as_bytes(), &x), before.clone());
    eprintln!(
        "{name}: {} bytes, tract vs texprune {deviation:.1e}",
        onnx.as_bytes().len()
    );
    assert!(
        deviation <= 1e-4,
        "{name}: relative deviation {deviation:e}"
    );
    assert!(same, "{name}: the argmax differs");
    // For `scripts/onnx_check.py`: the file and a probe (the input and texprune's output).
    if let Some(dir) = std::env::var_os("TEXPRUNE_ONNX_DIR") {
        let stem = PathBuf::from(dir).join(name.replace(' ', "_"));
        onnx.save(stem.with_extension("onnx")).unwrap();
        let bytes = |t: TensorData| {
            t.iter::<f32>()
                .flat_map(f32::to_le_bytes)
                .collect::<Vec<_>>()
        };
        let (input, logits) = (bytes(x.to_data()), bytes(before.to_data()));
        let f32s = safetensors::Dtype::F32;
        let views = [
            (
                "input",
                safetensors::tensor::TensorView::new(f32s, x.dims().to_vec(), &input).unwrap(),
            ),
            (
                "logits",
                safetensors::tensor::TensorView::new(f32s, before.dims().to_vec(), &logits)
                    .unwrap(),
            ),
        ];
        let probe = safetensors::serialize(views, None).unwrap();
        std::fs::write(stem.with_extension("probe.safetensors"), probe).unwrap();
    }
}

/// Random BatchNorm statistics and affine parameters everywhere (a fresh norm is nearly the
/// identity, which would hide a norm left out of the export).
struct RandomNorms(SplitMix64, Vec<String>);

impl ModuleMapper for RandomNorms {
    fn enter_module(&mut self, name: &str, _container: &str) {
        self.1.push(name.to_string());
    }
    fn exit_module(&mut self, _name: &str, _container: &str) {
        self.1.pop();
    }
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let (lo, hi) = match self.1.last().map(String::as_str) {
            Some("gamma") => (0.5, 1.5),
            Some("beta" | "running_mean") => (-0.5, 0.5),
            Some("running_var") => (0.5, 2.0),
            _ => return param,
        };
        let value = param.val();
        let device = value.device();
        let shape: [usize; D] = value.dims();
        let n = shape.iter().product();
        let values: Vec<f32> = (0..n).map(|_| self.0.range(lo, hi)).collect();
        Param::initialized(
            param.id,
            Tensor::from_data(TensorData::new(values, shape), &device),
        )
    }
}

fn random_norms<M: Module>(model: M) -> M {
    model.map(&mut RandomNorms(SplitMix64(3), Vec::new()))
}

/// `model` with a third of its filters and half the remaining stripes masked.
fn masked<M: Prunable>(model: M) -> M {
    let mut rng = SplitMix64(11);
    let device = Device::default();
    let masks: Vec<_> = model
        .collect_prunable()
        .iter()
        .filter(|l| l.thresholded)
        .map(|l| {
            let [o, kh, kw] = l.skeleton.dims();
            let mut keep = Vec::with_capacity(o * kh * kw);
            for f in 0..o {
                let dead = f > 0 && rng.chance(0.3);
                keep.extend((0..kh * kw).map(|_| !dead && (kh * kw == 1 || rng.chance(0.5))));
            }
            let mask: Tensor<3, Bool> =
                Tensor::from_data(TensorData::new(keep, [o, kh, kw]), &device);
            (l.name.clone(), mask)
        })
        .collect();
    apply_stripe_masks(model, masks).unwrap()
}

/// [`masked`] `model`, compacted (checked against the masked model on `example`).
fn pruned<M: Prunable>(model: M, example: Tensor<4>, forward: fn(&M, Tensor<4>) -> Tensor<2>) -> M {
    compact(&masked(model), example, forward).unwrap()
}

#[test]
fn resnet20_dense_and_compact_run_in_tract_with_texprunes_output() {
    let device = Device::default();
    let model = random_norms(ResNetConfig::cifar(20).init(&device).unwrap());
    check("resnet20 dense", &model, ResNet::forward, [3, 32, 32]);
    let compact = pruned(model, inputs(2, [3, 32, 32], 1), ResNet::forward);
    check("resnet20 compact", &compact, ResNet::forward, [3, 32, 32]);
}

#[test]
fn vgg11_dense_and_compact_run_in_tract_with_texprunes_output() {
    let device = Device::default();
    let model = random_norms(VggConfig::vgg11().init(&device).unwrap());
    check("vgg11 dense", &model, Vgg::forward, [3, 32, 32]);
    let compact = pruned(model, inputs(2, [3, 32, 32], 1), Vgg::forward);
    check("vgg11 compact", &compact, Vgg::forward, [3, 32, 32]);
}

#[test]
fn mobilenet_v2_dense_and_compact_run_in_tract_with_texprunes_output() {
    let device = Device::default();
    let config = MobileNetV2Config::cifar().with_width_mult(0.25);
    let model = random_norms(config.init(&device).unwrap());
    check(
        "mobilenet_v2 dense",
        &model,
        MobileNetV2::forward,
        [3, 32, 32],
    );
    let compact = pruned(model, inputs(2, [3, 32, 32], 1), MobileNetV2::forward);
    check(
        "mobilenet_v2 compact",
        &compact,
        MobileNetV2::forward,
        [3, 32, 32],
    );
}

/// A model written in the tests: a Burn `Conv2d` and Burn's `BatchNorm` called on its own in
/// front of the MobileNet-style network of `tests/common/mobilenet.rs` (an inverted residual
/// with a depthwise conv, a 4-group strided and a dilated skeleton conv, ReLU6, SiLU and
/// Hardswish, a global pool and a linear head).
#[derive(Module, Debug)]
struct UserNet {
    stem: Conv2d,
    stem_bn: BatchNorm,
    body: MobileNet,
}

impl UserNet {
    fn new(device: &Device) -> Self {
        Self {
            stem: Conv2dConfig::new([1, 1], [3, 3])
                .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
                .init(device),
            stem_bn: BatchNormConfig::new(1).init(device),
            body: MobileNet::new(device),
        }
    }

    fn forward(&self, x: Tensor<4>) -> Tensor<2> {
        // Burn's BatchNorm on its own, not folded by `forward_norm`.
        let x = Activation::Relu6.forward(self.stem_bn.forward(self.stem.forward(x)));
        self.body.forward(x)
    }
}

impl Prunable for UserNet {
    fn prunable_layers(&self, layers: &mut PrunableLayers) {
        self.body.prunable_layers(layers);
    }
}

#[test]
fn a_user_model_dense_and_compact_runs_in_tract_with_texprunes_output() {
    let device = Device::default();
    let model = random_norms(UserNet::new(&device));
    check("user model dense", &model, UserNet::forward, [1, 28, 28]);
    let compact = pruned(model, inputs(2, [1, 28, 28], 1), UserNet::forward);
    check(
        "user model compact",
        &compact,
        UserNet::forward,
        [1, 28, 28],
    );
}

/// The stripe form (one 1×1 conv per live kernel position) has the example's batch size and
/// the same output.
#[test]
fn the_stripe_form_gives_the_same_output() {
    let device = Device::default();
    let model = random_norms(ResNetConfig::cifar(20).init(&device).unwrap());
    let compact = pruned(model, inputs(2, [3, 32, 32], 1), ResNet::forward);
    let x = inputs(2, [3, 32, 32], 7);
    let onnx = OnnxExport::default()
        .with_form(ExportForm::Stripes)
        .export(&compact, x.clone(), ResNet::forward)
        .unwrap();
    let (deviation, same) = compare(run_tract(onnx.as_bytes(), &x), compact.forward(x));
    assert!(
        deviation <= 1e-4 && same,
        "relative deviation {deviation:e}"
    );
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("texprune-onnx-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

#[test]
fn bad_input_is_a_typed_error_and_writes_no_file() {
    let device = Device::default();
    let model = UserNet::new(&device);
    // An example the model cannot take (3 channels for a 1-channel stem).
    let error =
        texprune::onnx::export(&model, inputs(1, [3, 28, 28], 1), UserNet::forward).unwrap_err();
    assert!(matches!(error, OnnxError::Forward(_)), "{error}");
    assert_eq!(error.to_string().lines().count(), 1, "{error}");
    // An empty example.
    let error =
        texprune::onnx::export(&model, inputs(0, [1, 28, 28], 1), UserNet::forward).unwrap_err();
    assert!(matches!(error, OnnxError::Input(_)), "{error}");
    // An operation burn-onnx has no lowering for.
    let sorted = |m: &UserNet, x: Tensor<4>| m.forward(x).sort(1);
    let error = texprune::onnx::export(&model, inputs(1, [1, 28, 28], 1), sorted).unwrap_err();
    assert!(matches!(error, OnnxError::Unsupported { .. }), "{error}");
    assert_eq!(error.to_string().lines().count(), 1, "{error}");
    // A path under a file: nothing written.
    let onnx = texprune::onnx::export(&model, inputs(1, [1, 28, 28], 1), UserNet::forward).unwrap();
    let blocker = scratch("a-file");
    std::fs::write(&blocker, b"not a folder").unwrap();
    let path = blocker.join("model.onnx");
    let error = onnx.save(&path).unwrap_err();
    assert!(matches!(error, OnnxError::Io { .. }), "{error}");
    assert!(!path.exists());
    // The model still runs after the failed exports.
    let _ = model.forward(inputs(1, [1, 28, 28], 2));
    let good = scratch("model.onnx");
    onnx.save(&good).unwrap();
    assert_eq!(std::fs::read(&good).unwrap(), onnx.as_bytes());
}

/// Compaction with kept channel counts rounded to a multiple (for ONNX Runtime's NCHWc
/// convolutions): every conv whose channels can go keeps a multiple of 8 or all of them, never
/// fewer than plain compaction, the output is the masked model's (checked by `compact_with`),
/// and tract runs the export.
#[test]
fn channels_rounded_to_a_multiple_stay_exact_and_export() {
    let device = Device::default();
    let masked = masked(random_norms(ResNetConfig::cifar(20).init(&device).unwrap()));
    let example = inputs(2, [3, 32, 32], 1);
    let plain = compact(&masked, example.clone(), ResNet::forward).unwrap();
    let options = CompactOptions::default().with_channel_multiple(8);
    let model = compact_with(&masked, example, ResNet::forward, options).unwrap();
    let (layers, plain, rounded) = (
        masked.collect_prunable(),
        plain.collect_prunable(),
        model.collect_prunable(),
    );
    let mut rounded_up = 0;
    for ((full, plain), rounded) in layers.iter().zip(plain.iter()).zip(rounded.iter()) {
        let ([full, ..], [plain, ..], [kept, ..]) = (
            full.weight_dims(),
            plain.weight_dims(),
            rounded.weight_dims(),
        );
        assert!(
            kept % 8 == 0 || kept == full,
            "{}: {kept} of {full}",
            rounded.name
        );
        assert!(kept >= plain, "{}: {kept} < {plain}", rounded.name);
        rounded_up += usize::from(kept > plain && kept < full);
    }
    assert!(
        rounded_up > 0,
        "no conv was rounded up short of all its channels"
    );
    check(
        "resnet20 rounded to 8",
        &model,
        ResNet::forward,
        [3, 32, 32],
    );
}

#[derive(Module, Debug)]
struct OneConv {
    conv: SkeletonConv2d,
}

/// Every activation but GELU is written with operations the exporter lowers and runs in tract
/// with texprune's output; GELU (exact, `erf`) is a typed error naming `Gelu`.
#[test]
fn every_activation_exports_but_gelu_which_is_a_typed_error() {
    let device = Device::default();
    let conv = SkeletonConv2dConfig::new([2, 4], [3, 3])
        .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
        .init(&device)
        .unwrap();
    let model = OneConv { conv };
    // Inputs that reach both sides of every kink (ReLU6 at 0 and 6, Hardswish at ±3).
    let x = inputs(2, [2, 6, 6], 5) * 4.0;
    for activation in Activation::ALL {
        let forward = move |m: &OneConv, x: Tensor<4>| {
            activation.forward(m.conv.forward(x)).flatten::<2>(1, 3)
        };
        let result = texprune::onnx::export(&model, x.clone(), forward);
        if activation == Activation::Gelu {
            let error = result.unwrap_err();
            assert!(
                matches!(&error, OnnxError::Unsupported { operation, .. } if operation == "Gelu"),
                "{error}"
            );
            continue;
        }
        let onnx = result.unwrap_or_else(|e| panic!("{activation:?}: {e}"));
        let (deviation, _) = compare(run_tract(onnx.as_bytes(), &x), forward(&model, x.clone()));
        assert!(
            deviation <= 1e-5,
            "{activation:?}: relative deviation {deviation:e}"
        );
    }
}
