//! PyTorch weights in and out, on files written by PyTorch itself (`tests/data/torch/`, written
//! by `scripts/torch_fixtures.py`): the reference code's CIFAR ResNet-20 (`.pth` and
//! `.safetensors`, with its `FilterSkeleton`s), a narrow torchvision ResNet-18 (no skeletons) and
//! the reference's VGG layout and a narrow torchvision MobileNetV2, each reproducing the logits PyTorch computed on four of the
//! repository's CIFAR-10 images; the named errors for files that do not fit; a model written
//! here, outside the zoo; and the compact export.

use std::path::{Path, PathBuf};

use texprune::burn::module::Module;
use texprune::burn::module::Param;
use texprune::burn::nn::{BatchNorm, BatchNormConfig, Linear, LinearConfig, PaddingConfig2d};
use texprune::burn::tensor::{Bool, Device, Tensor, TensorData};
use texprune::data::{Normalization, load_image};
use texprune::pytorch::{self, Loader, WeightsError};
use texprune::zoo::mobilenet::{MobileNetV2, MobileNetV2Config};
use texprune::zoo::resnet::{ResNet, ResNetConfig};
use texprune::zoo::vgg::{VggConfig, VggLayer};
use texprune::{
    CdpConfig, CostReport, DtcConfig, LayerKind, Prunable, PrunableLayers, Pruner, PrunerConfig,
    SkeletonConv2d, SkeletonConv2dConfig, TorchLayout,
};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/torch")
}

fn scratch(name: &str) -> PathBuf {
    let dir =
        std::env::temp_dir().join(format!("texprune-pretrained-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The fixture's metadata: which images, and PyTorch's logits per model.
fn meta() -> serde_json::Value {
    let text = std::fs::read_to_string(fixtures().join("logits.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// The four images as the fixture script fed them: pixels / 255, CIFAR-normalised.
fn images(device: &Device) -> Tensor<4> {
    let meta = meta();
    let names = meta["images"].as_array().unwrap();
    let norm = Normalization::cifar();
    let mut values = Vec::new();
    for name in names {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/data/foolbox")
            .join(name.as_str().unwrap());
        let pixels = load_image(&path, 32, 32).unwrap();
        for (i, p) in pixels.iter().enumerate() {
            let c = i / (32 * 32);
            values.push((f32::from(*p) / 255.0 - norm.mean[c]) / norm.std[c]);
        }
    }
    Tensor::from_data(TensorData::new(values, [names.len(), 3, 32, 32]), device)
}

fn torch_logits(model: &str) -> Vec<f32> {
    meta()["logits"][model]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|row| {
            row.as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_f64().unwrap() as f32)
        })
        .collect()
}

/// max |ours − PyTorch's| / max |PyTorch's|.
fn relative_deviation(ours: Tensor<2>, theirs: &[f32]) -> f32 {
    let ours = ours.into_data().iter::<f32>().collect::<Vec<_>>();
    assert_eq!(ours.len(), theirs.len());
    let scale = theirs.iter().fold(0f32, |m, v| m.max(v.abs()));
    let diff = ours
        .iter()
        .zip(theirs)
        .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
    diff / scale
}

fn resnet20(device: &Device) -> ResNet {
    ResNetConfig::cifar(20).init(device).unwrap()
}

#[test]
fn the_reference_resnet20_reproduces_pytorchs_logits_from_pth_and_safetensors() {
    let device = Device::default();
    let x = images(&device);
    let expected = torch_logits("resnet20_reference");
    for file in ["resnet20_reference.pth", "resnet20_reference.safetensors"] {
        let (model, loaded) = pytorch::load(resnet20(&device), fixtures().join(file)).unwrap();
        // 21 convs (19 and 2 projections) × (weight, skeleton) + 21 BNs × 4 + fc weight and bias.
        assert_eq!(loaded.tensors, 21 * 2 + 21 * 4 + 2, "{file}");
        assert!(loaded.skeletons_at_ones.is_empty(), "{file}");
        assert_eq!(loaded.ignored.len(), 21, "{file}: the num_batches_tracked");
        let deviation = relative_deviation(model.forward(x.clone()), &expected);
        eprintln!("{file}: relative deviation from PyTorch's logits {deviation:.1e}");
        assert!(
            deviation <= 1e-4,
            "{file}: relative deviation {deviation:e}"
        );
    }
    // The skeletons were read, not left at ones: a model without them computes other logits.
    let (mut model, _) =
        pytorch::load(resnet20(&device), fixtures().join("resnet20_reference.pth")).unwrap();
    model.conv1.skeleton = Param::from_tensor(model.conv1.skeleton.val().ones_like());
    assert!(relative_deviation(model.forward(x), &expected) > 1e-2);
}

/// The zoo's full-size models expect exactly the keys and shapes of torchvision's and the
/// reference's state dicts (recorded by PyTorch in `state_dict_shapes.json`), skeletons aside.
#[test]
fn the_zoo_names_every_tensor_as_torchvision_and_the_reference_do() {
    let device = Device::default();
    let text = std::fs::read_to_string(fixtures().join("state_dict_shapes.json")).unwrap();
    let recorded: serde_json::Value = serde_json::from_str(&text).unwrap();
    let check = |name: &str, ours: std::collections::BTreeMap<String, Vec<usize>>| {
        let theirs: std::collections::BTreeMap<String, Vec<usize>> =
            serde_json::from_value(recorded[name].clone()).unwrap();
        let ours: std::collections::BTreeMap<_, _> = ours
            .into_iter()
            .filter(|(k, _)| name.starts_with("reference") || !k.ends_with("FilterSkeleton"))
            .collect();
        assert_eq!(ours, theirs, "{name}");
    };
    for depth in [18, 34, 50] {
        let model = ResNetConfig::imagenet(depth).init(&device).unwrap();
        check(
            &format!("torchvision_resnet{depth}"),
            pytorch::state_dict_shapes(&model).unwrap(),
        );
    }
    let resnet56 = ResNetConfig::cifar(56).init(&device).unwrap();
    check(
        "reference_resnet56",
        pytorch::state_dict_shapes(&resnet56).unwrap(),
    );
    let vgg16 = VggConfig::vgg16().init(&device).unwrap();
    check(
        "reference_vgg16",
        pytorch::state_dict_shapes(&vgg16).unwrap(),
    );
    let mobilenet = MobileNetV2Config::imagenet().init(&device).unwrap();
    check(
        "torchvision_mobilenet_v2",
        pytorch::state_dict_shapes(&mobilenet).unwrap(),
    );
}

fn narrow_mobilenet_v2(device: &Device) -> MobileNetV2 {
    let config = MobileNetV2Config::imagenet()
        .with_width_mult(0.25)
        .with_num_classes(10);
    let (model, loaded) = pytorch::load(
        config.init(device).unwrap(),
        fixtures().join("mobilenet_v2_torchvision.pth"),
    )
    .unwrap();
    // The stem, 16 expand, 17 depthwise and 17 project convs and the last conv.
    assert_eq!(loaded.skeletons_at_ones.len(), 52);
    assert!(
        loaded
            .skeletons_at_ones
            .contains(&"features.2.conv.1.0".to_string())
    );
    model
}

#[test]
fn a_torchvision_mobilenet_v2_reproduces_pytorchs_logits() {
    let device = Device::default();
    let model = narrow_mobilenet_v2(&device);
    let deviation = relative_deviation(
        model.forward(images(&device)),
        &torch_logits("mobilenet_v2_torchvision"),
    );
    eprintln!(
        "mobilenet_v2_torchvision.pth: relative deviation from PyTorch's logits {deviation:.1e}"
    );
    assert!(deviation <= 1e-4, "relative deviation {deviation:e}");
}

/// The torchvision MobileNetV2 with half the stripes of every layer masked (depthwise convs
/// included) compacts, checked against the masked model, with fewer MACs.
#[test]
fn a_torchvision_mobilenet_v2_pruned_compacts_exactly() {
    let device = Device::default();
    let model = narrow_mobilenet_v2(&device);
    let masks: Vec<_> = model
        .collect_prunable()
        .iter()
        .map(|l| {
            let [o, kh, kw] = l.skeleton.dims();
            // Every other stripe: 3×3 filters keep 5 or 4 of their 9, alternately.
            let keep: Vec<bool> = (0..o * kh * kw).map(|i| i % 2 == 0).collect();
            let mask: Tensor<3, Bool> =
                Tensor::from_data(TensorData::new(keep, [o, kh, kw]), &device);
            (l.name.clone(), mask)
        })
        .collect();
    let masked = texprune::apply_stripe_masks(model.clone(), masks).unwrap();
    let pruner = Pruner::new(PrunerConfig::new(CdpConfig::new(), DtcConfig::new())).unwrap();
    let x = images(&device);
    let _ = model.forward(x.clone());
    let compact = pruner
        .compact(&masked, x.clone(), MobileNetV2::forward)
        .unwrap();
    let expected: Vec<f32> = masked
        .forward(x.clone())
        .into_data()
        .iter::<f32>()
        .collect();
    let deviation = relative_deviation(compact.forward(x), &expected);
    assert!(deviation <= 1e-5, "relative deviation {deviation:e}");
    // The 1×1 expand conv keeps its even filters (one stripe each); the depthwise filters
    // reading the odd ones read zero channels, so those channels go with them (the projection
    // folds their constants), and the even depthwise filters keep 5 of their 9 stripes.
    let block = &compact.blocks[3];
    let built = masked.blocks[3].depthwise.conv.weight_dims()[0];
    let depthwise = &block.depthwise.conv;
    assert!(depthwise.is_stripe_wise());
    assert_eq!(depthwise.weight_dims()[0], built / 2);
    assert_eq!(depthwise.stripe_layout().live_stripes(), built / 2 * 5);
    let (dense, small) = (
        CostReport::of_model(&model).unwrap(),
        CostReport::of_model(&compact).unwrap(),
    );
    assert!(small.macs() < dense.macs() * 6 / 10, "{small}");
    assert_eq!(small.of_kind(LayerKind::Undeclared).count(), 0, "{small}");
}

#[test]
fn a_torchvision_resnet18_loads_with_its_skeletons_at_ones() {
    let device = Device::default();
    let config = ResNetConfig::resnet18()
        .with_base_width(Some(8))
        .with_num_classes(10);
    let (model, loaded) = pytorch::load(
        config.init(&device).unwrap(),
        fixtures().join("resnet18_torchvision.pth"),
    )
    .unwrap();
    // The stem, 16 block convs and 3 projections.
    assert_eq!(loaded.skeletons_at_ones.len(), 20);
    assert!(
        loaded
            .skeletons_at_ones
            .contains(&"layer4.0.downsample.0".to_string())
    );
    let deviation = relative_deviation(
        model.forward(images(&device)),
        &torch_logits("resnet18_torchvision"),
    );
    eprintln!("resnet18_torchvision.pth: relative deviation from PyTorch's logits {deviation:.1e}");
    assert!(deviation <= 1e-4, "relative deviation {deviation:e}");
}

fn small_vgg(device: &Device) -> texprune::zoo::vgg::Vgg {
    use VggLayer::{Conv as C, MaxPool as M};
    VggConfig::new(vec![C(4), M, C(6), M]).init(device).unwrap()
}

#[test]
fn the_reference_vgg_layout_reproduces_pytorchs_logits() {
    let device = Device::default();
    let x = images(&device);
    for file in ["vgg_small_reference.pth", "vgg_small_reference.safetensors"] {
        let (model, _) = pytorch::load(small_vgg(&device), fixtures().join(file)).unwrap();
        let deviation = relative_deviation(
            model.forward(x.clone()),
            &torch_logits("vgg_small_reference"),
        );
        eprintln!("{file}: relative deviation from PyTorch's logits {deviation:.1e}");
        assert!(
            deviation <= 1e-4,
            "{file}: relative deviation {deviation:e}"
        );
    }
}

/// The message of an error, for checking that it names the key and the shapes.
fn message<T>(result: Result<T, WeightsError>) -> (WeightsError, String) {
    match result {
        Ok(_) => panic!("loaded a file that does not fit"),
        Err(e) => {
            let text = e.to_string();
            assert!(!text.contains('\n'), "one line: {text}");
            (e, text)
        }
    }
}

#[test]
fn files_that_do_not_fit_give_errors_naming_the_key_and_the_shapes() {
    let device = Device::default();
    let pth = fixtures().join("resnet20_reference.pth");
    // Wider first block: the file's conv has the reference's 16 filters.
    let mut widths = vec![16; 9];
    widths[0] = 8;
    let narrow = ResNetConfig::cifar(20)
        .with_widths(Some(widths))
        .init(&device)
        .unwrap();
    let (e, text) = message(pytorch::load(narrow, &pth));
    assert!(matches!(e, WeightsError::Shape { .. }), "{text}");
    assert!(
        text.contains("`layer1.0.bn1.bias` has shape [16], the model expects [8]"),
        "{text}"
    );
    // A deeper model: its fourth block is not in the file.
    let deeper = ResNetConfig::cifar(32).init(&device).unwrap();
    let (e, text) = message(pytorch::load(deeper, &pth));
    assert!(matches!(e, WeightsError::Missing { .. }), "{text}");
    assert!(
        text.contains("`layer1.3.") && text.contains("expects shape ["),
        "{text}"
    );
    // A shallower model: the file's third blocks are left over.
    let shallower = ResNetConfig::cifar(14).init(&device).unwrap();
    let (e, text) = message(pytorch::load(shallower, &pth));
    assert!(matches!(e, WeightsError::Extra { .. }), "{text}");
    assert!(
        text.contains("`layer1.2.") && text.contains("(shape ["),
        "{text}"
    );
    // Not a weights file; no file.
    let (e, _) = message(pytorch::load(
        resnet20(&device),
        fixtures().join("logits.json"),
    ));
    assert!(matches!(e, WeightsError::Read { .. }));
    let (e, _) = message(pytorch::load(
        resnet20(&device),
        fixtures().join("absent.pth"),
    ));
    assert!(matches!(e, WeightsError::Io { .. }));
}

/// The safetensors fixture with one tensor removed or reshaped, written with the safetensors
/// crate (PyTorch's own file is the one the loader reads whole above).
#[test]
fn a_fixture_with_a_tensor_removed_or_reshaped_gives_the_named_error() {
    use safetensors::SafeTensors;
    use safetensors::tensor::TensorView;
    let device = Device::default();
    let bytes = std::fs::read(fixtures().join("resnet20_reference.safetensors")).unwrap();
    let file = SafeTensors::deserialize(&bytes).unwrap();
    let dir = scratch("mutated");
    let write = |name: &str, tensors: Vec<(String, TensorView<'_>)>| {
        let path = dir.join(name);
        std::fs::write(&path, safetensors::serialize(tensors, None).unwrap()).unwrap();
        path
    };
    let all = || file.tensors();
    let removed = write(
        "removed.safetensors",
        all()
            .into_iter()
            .filter(|(k, _)| k != "layer2.1.bn2.running_var")
            .collect(),
    );
    let (e, text) = message(pytorch::load(resnet20(&device), &removed));
    assert!(matches!(e, WeightsError::Missing { .. }), "{text}");
    assert!(
        text.contains("`layer2.1.bn2.running_var` is missing") && text.contains("[32]"),
        "{text}"
    );
    // [10, 64] read as [20, 32]: the same bytes, another shape.
    let reshaped = write(
        "reshaped.safetensors",
        all()
            .into_iter()
            .map(|(k, v)| match k.as_str() {
                "fc.weight" => (
                    k,
                    TensorView::new(v.dtype(), vec![20, 32], v.data()).unwrap(),
                ),
                _ => (k, v),
            })
            .collect(),
    );
    let (e, text) = message(pytorch::load(resnet20(&device), &reshaped));
    assert!(matches!(e, WeightsError::Shape { .. }), "{text}");
    assert!(
        text.contains("`fc.weight` has shape [20, 32], the model expects [10, 64]"),
        "{text}"
    );
    // Without the skeletons: they start at ones.
    let no_skeletons = write(
        "plain.safetensors",
        all()
            .into_iter()
            .filter(|(k, _)| !k.ends_with("FilterSkeleton"))
            .collect(),
    );
    let (model, loaded) = pytorch::load(resnet20(&device), &no_skeletons).unwrap();
    assert_eq!(loaded.skeletons_at_ones.len(), 21);
    let ones: f32 = model.blocks[4].convs[1].skeleton.val().min().into_scalar();
    assert_eq!(ones, 1.0);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A model written here: a stem and a head named as the user likes, mapped onto the reference
/// ResNet-20's `conv1`, `bn1` and `fc` by its `TorchLayout`.
#[derive(Module, Debug)]
struct StemAndHead {
    stem: SkeletonConv2d,
    stem_norm: BatchNorm,
    head: Linear,
}

impl StemAndHead {
    fn new(device: &Device) -> Self {
        Self {
            stem: SkeletonConv2dConfig::new([3, 16], [3, 3])
                .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
                .with_bias(false)
                .init(device)
                .unwrap(),
            stem_norm: BatchNormConfig::new(16).init(device),
            head: LinearConfig::new(64, 10).init(device),
        }
    }
}

impl Prunable for StemAndHead {
    fn prunable_layers(&self, layers: &mut PrunableLayers) {
        layers
            .conv("stem", &self.stem)
            .norm("stem_norm", &self.stem_norm);
        layers.linear("head", &self.head);
    }
}

impl TorchLayout for StemAndHead {
    fn torch_names(&self) -> Vec<(String, String)> {
        [("stem", "conv1"), ("stem_norm", "bn1"), ("head", "fc")]
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .to_vec()
    }
}

#[test]
fn a_user_model_takes_the_tensors_its_layout_names() {
    let device = Device::default();
    let pth = fixtures().join("resnet20_reference.pth");
    let (e, text) = message(Loader::new(&pth).load(StemAndHead::new(&device)));
    assert!(matches!(e, WeightsError::Extra { .. }), "{text}");
    let (user, loaded) = Loader::new(&pth)
        .ignore_extra(true)
        .load(StemAndHead::new(&device))
        .unwrap();
    assert_eq!(loaded.tensors, 2 + 4 + 2);
    let (zoo, _) = pytorch::load(resnet20(&device), &pth).unwrap();
    let same = |a: Tensor<1>, b: Tensor<1>| a.equal(b).all().into_scalar::<bool>();
    assert!(same(
        user.stem.weight.val().flatten(0, 3),
        zoo.conv1.weight.val().flatten(0, 3)
    ));
    assert!(same(
        user.stem.skeleton.val().flatten(0, 2),
        zoo.conv1.skeleton.val().flatten(0, 2)
    ));
    assert!(same(
        user.stem_norm.running_var.value(),
        zoo.bn1.running_var.value()
    ));
    assert!(same(
        user.head.weight.val().flatten(0, 1),
        zoo.fc.weight.val().flatten(0, 1)
    ));
}

#[test]
fn an_exported_model_reads_back_and_a_compact_one_lists_its_stripes() {
    let device = Device::default();
    let dir = scratch("export");
    let (model, _) =
        pytorch::load(resnet20(&device), fixtures().join("resnet20_reference.pth")).unwrap();
    let x = images(&device);
    // Dense: the export is a state dict PyTorch's names, which the loader reads back.
    let layout = pytorch::export(
        &model,
        dir.join("dense.safetensors"),
        dir.join("dense.json"),
    )
    .unwrap();
    assert_eq!(layout.convs.len(), 21);
    assert_eq!(layout.tensors["layer3.0.downsample.1.weight"], vec![64]);
    assert!(!layout.tensors.contains_key("conv1.execution"));
    let (again, _) = pytorch::load(resnet20(&device), dir.join("dense.safetensors")).unwrap();
    let d = relative_deviation(
        again.forward(x.clone()),
        &model
            .forward(x.clone())
            .into_data()
            .iter::<f32>()
            .collect::<Vec<_>>(),
    );
    assert_eq!(d, 0.0);
    // Compact: half the stripes of every thresholded layer masked, then compacted.
    let pruner = Pruner::new(PrunerConfig::new(CdpConfig::new(), DtcConfig::new())).unwrap();
    let masks: Vec<_> = model
        .collect_prunable()
        .iter()
        .filter(|l| l.thresholded)
        .map(|l| {
            let [o, kh, kw] = l.skeleton.dims();
            let keep: Vec<bool> = (0..o * kh * kw).map(|i| i % 2 == 0).collect();
            let mask: Tensor<3, Bool> =
                Tensor::from_data(TensorData::new(keep, [o, kh, kw]), &device);
            (l.name.clone(), mask)
        })
        .collect();
    let masked = texprune::apply_stripe_masks(model, masks).unwrap();
    let compact = pruner.compact(&masked, x.clone(), ResNet::forward).unwrap();
    let layout = pytorch::export(
        &compact,
        dir.join("compact.safetensors"),
        dir.join("compact.json"),
    )
    .unwrap();
    let conv = layout
        .convs
        .iter()
        .find(|c| c.name == "layer1.0.conv1")
        .unwrap();
    assert!(conv.stripe_wise);
    assert_eq!(conv.live_stripes, 16 * 9 / 2);
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("compact.json")).unwrap()).unwrap();
    assert_eq!(json["architecture"]["kind"], "resnet");
    assert_eq!(
        json["architecture"]["stage_blocks"],
        serde_json::json!([3, 3, 3])
    );
    // The compact logits equal the masked model's (what the Python reader must reproduce).
    let d = relative_deviation(
        compact.forward(x.clone()),
        &masked
            .valid()
            .forward(x)
            .into_data()
            .iter::<f32>()
            .collect::<Vec<_>>(),
    );
    assert!(d <= 1e-5, "{d:e}");
    std::fs::remove_dir_all(&dir).unwrap();
}
