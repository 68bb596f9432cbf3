//! `prune_*.json`: compaction against the reference's `model.prune(t)`.
//!
//! Each case holds a model state (or, structure-only, its skeletons), a threshold `t`, the
//! masked model's output and what the reference's pruning produced: structure, params, FLOPs.
//! The architecture is read from the parameter names and shapes.
//!
//! - With a state: texprune compacts the model as it is (the masks in force are its non-zero
//!   skeleton entries). Its dense output and its compact output must both equal `output_masked`.
//! - Structure only: the masks in force are `|S| > t` (weights are not given).
//! - Dense params and FLOPs (total and per-layer lists) are always compared. The pruned structure,
//!   params, FLOPs and removed blocks are compared where the reference prunes with the same masks
//!   and its pruning is exact (`output_pruned = output_masked`): then both sides compute the same
//!   compaction. Elsewhere the reference's result is not the masked model's, and the case checks
//!   texprune's exactness only; the report says so.

use std::collections::HashMap;

use serde_json::Value;
use texprune::burn::module::{Param, RunningState};
use texprune::burn::nn::{BatchNorm, Linear};
use texprune::burn::tensor::{Device, Tensor, TensorData};
use texprune::compact::StripeLayout;
use texprune::zoo::resnet::{ResNet, ResNetConfig};
use texprune::zoo::vgg::{Vgg, VggConfig, VggLayer};
use texprune::{Classifier, CostReport, Costed, LayerKind, Prunable, SkeletonConv2d};

use super::{
    ConformanceError, NanRule, Report, data, field, flatten, format_err, number, tensor, values,
};

/// Whether `json` is in this format.
pub(super) fn is_prune_file(json: &Value) -> bool {
    let first = match (json.get("cases"), json.get("case")) {
        (Some(Value::Array(cases)), _) => cases.first(),
        (_, case) => case,
    };
    first.is_some_and(|c| c.get("pruned").is_some() && c.get("dense").is_some())
}

pub(super) fn check_prune(json: &Value, device: &Device) -> Result<Report, ConformanceError> {
    let cases: Vec<&Value> = match (json.get("cases"), json.get("case")) {
        (Some(Value::Array(cases)), _) => cases.iter().collect(),
        (_, Some(case)) => vec![case],
        _ => return Err(format_err("no `cases` or `case`")),
    };
    let x = json.get("x").map(|x| tensor::<4>(x, device)).transpose()?;
    let mut report = Report::default();
    for case in cases {
        report.merge(check_case(case, x.clone(), device)?);
    }
    Ok(report)
}

/// The reference's parameters of one case, by PyTorch name.
struct State<'a> {
    dict: Option<&'a serde_json::Map<String, Value>>,
    skeletons: HashMap<String, &'a Value>,
    /// Structure-only: entries with `|S| ≤ t` are the pruned ones.
    mask_threshold: Option<f64>,
    device: Device,
}

impl State<'_> {
    fn get(&self, key: &str) -> Result<Option<&Value>, ConformanceError> {
        match self.dict {
            Some(d) => d
                .get(key)
                .map(Some)
                .ok_or_else(|| format_err(format!("state_dict has no `{key}`"))),
            None => Ok(None),
        }
    }

    fn conv(&self, conv: &mut SkeletonConv2d, name: &str) -> Result<(), ConformanceError> {
        if let Some(w) = self.get(&format!("{name}.weight"))? {
            conv.weight = Param::from_tensor(tensor(w, &self.device)?);
        }
        let s = self
            .skeletons
            .get(name)
            .ok_or_else(|| format_err(format!("no FilterSkeleton for `{name}`")))?;
        let (mut vals, shape) = flatten(s)?;
        if let Some(t) = self.mask_threshold {
            vals.iter_mut()
                .filter(|v| v.abs() <= t)
                .for_each(|v| *v = 0.0);
        }
        let dtype = conv.weight.val().dtype();
        conv.skeleton = Param::from_tensor(Tensor::from_data(
            TensorData::new(vals, shape),
            (&self.device, dtype),
        ));
        Ok(())
    }

    fn norm(&self, norm: &mut BatchNorm, name: &str) -> Result<(), ConformanceError> {
        let Some(gamma) = self.get(&format!("{name}.weight"))? else {
            return Ok(());
        };
        let one = |key: &str| -> Result<Tensor<1>, ConformanceError> {
            let v = self
                .get(&format!("{name}.{key}"))?
                .ok_or_else(|| format_err(format!("no `{name}.{key}`")))?;
            tensor(v, &self.device)
        };
        norm.gamma = Param::from_tensor(tensor(gamma, &self.device)?);
        norm.beta = Param::from_tensor(one("bias")?);
        norm.running_mean = RunningState::new(one("running_mean")?);
        norm.running_var = RunningState::new(one("running_var")?);
        Ok(())
    }

    fn linear(&self, linear: &mut Linear, name: &str) -> Result<(), ConformanceError> {
        if let Some(w) = self.get(&format!("{name}.weight"))? {
            let w: Tensor<2> = tensor(w, &self.device)?;
            linear.weight = Param::from_tensor(w.transpose());
            let b = self
                .get(&format!("{name}.bias"))?
                .ok_or_else(|| format_err(format!("no `{name}.bias`")))?;
            linear.bias = Some(Param::from_tensor(tensor(b, &self.device)?));
        }
        Ok(())
    }

    fn rows(&self, name: &str) -> Result<usize, ConformanceError> {
        let (_, shape) = flatten(
            self.skeletons
                .get(name)
                .ok_or_else(|| format_err(format!("no FilterSkeleton for `{name}`")))?,
        )?;
        Ok(shape[0])
    }
}

/// Number of classes: from the classifier's weight, or from its FLOPs `2·d_in·out + out`.
fn classes(
    state: &State,
    case: &Value,
    name: &str,
    d_in: usize,
) -> Result<usize, ConformanceError> {
    if let Some(w) = state.get(&format!("{name}.weight"))? {
        return Ok(flatten(w)?.1[0]);
    }
    let linear = values(field(field(case, "dense")?, "flops_lists")?, "linear")?;
    let flops = linear
        .first()
        .ok_or_else(|| format_err("no linear FLOPs"))?;
    Ok((*flops as usize) / (2 * d_in + 1))
}

/// A model of the case, loaded, with the names of its convs.
enum Model {
    Vgg(Box<Vgg>),
    ResNet(Box<ResNet>),
}

fn build(state: &State, case: &Value, hw: [usize; 2]) -> Result<Model, ConformanceError> {
    let zoo = |e: texprune::ModelError| format_err(e.to_string());
    if state.skeletons.keys().any(|k| k.starts_with("features.")) {
        // Conv i of the Sequential is followed by BN i+1 and ReLU i+2; other indices are pools.
        let mut convs: Vec<usize> = state
            .skeletons
            .keys()
            .filter_map(|k| k.strip_prefix("features.")?.parse().ok())
            .collect();
        convs.sort_unstable();
        let pools = values(field(field(case, "dense")?, "flops_lists")?, "pooling")?.len();
        let mut layers = Vec::new();
        let mut next = 0;
        for &c in &convs {
            layers.extend(std::iter::repeat_n(VggLayer::MaxPool, c - next));
            layers.push(VggLayer::Conv(state.rows(&format!("features.{c}"))?));
            next = c + 3;
        }
        // The last entry of the pooling list is the final AvgPool2d(1).
        let between = layers.iter().filter(|l| **l == VggLayer::MaxPool).count();
        layers.extend(std::iter::repeat_n(
            VggLayer::MaxPool,
            pools.saturating_sub(1 + between),
        ));
        let last = state.rows(&format!("features.{}", convs[convs.len() - 1]))?;
        let area = (hw[0] >> (pools - 1)) * (hw[1] >> (pools - 1));
        let num_classes = classes(state, case, "classifier", last * area)?;
        let mut model = VggConfig::new(layers)
            .with_num_classes(num_classes)
            .with_input_size(hw)
            .init(&state.device)
            .map_err(zoo)?;
        for (k, &c) in convs.iter().enumerate() {
            state.conv(&mut model.convs[k], &format!("features.{c}"))?;
            state.norm(&mut model.norms[k], &format!("features.{}", c + 1))?;
        }
        state.linear(&mut model.classifier, "classifier")?;
        Ok(Model::Vgg(Box::new(model)))
    } else {
        let per_stage = (0..)
            .take_while(|b| state.skeletons.contains_key(&format!("layer1.{b}.conv1")))
            .count();
        let stages = (1..)
            .take_while(|s| state.skeletons.contains_key(&format!("layer{s}.0.conv1")))
            .count();
        if per_stage == 0 || stages != 3 {
            return Err(format_err(
                "unrecognised model: neither VGG nor CIFAR ResNet",
            ));
        }
        let widths = (1..=3)
            .flat_map(|s| (0..per_stage).map(move |b| format!("layer{s}.{b}.conv1")))
            .map(|name| state.rows(&name))
            .collect::<Result<Vec<_>, _>>()?;
        let num_classes = classes(state, case, "fc", 64)?;
        let mut model = ResNetConfig::cifar(6 * per_stage + 2)
            .with_widths(Some(widths))
            .with_num_classes(num_classes)
            .init(&state.device)
            .map_err(zoo)?;
        state.conv(&mut model.conv1, "conv1")?;
        state.norm(&mut model.bn1, "bn1")?;
        for i in 0..model.blocks.len() {
            let path = model.block_path(i);
            let block = &mut model.blocks[i];
            for (k, (conv, norm)) in block.convs.iter_mut().zip(&mut block.norms).enumerate() {
                state.conv(conv, &format!("{path}.conv{}", k + 1))?;
                state.norm(norm, &format!("{path}.bn{}", k + 1))?;
            }
            if let Some(s) = &mut block.shortcut {
                state.conv(&mut s.conv, &format!("{path}.downsample.0"))?;
                state.norm(&mut s.norm, &format!("{path}.downsample.1"))?;
            }
        }
        state.linear(&mut model.fc, "fc")?;
        Ok(Model::ResNet(Box::new(model)))
    }
}

/// What the comparisons need from a compacted model.
struct Compacted {
    output: Option<Tensor<2>>,
    masked_output: Option<Tensor<2>>,
    dense: CostReport,
    compact: CostReport,
    convs: Vec<(String, StripeLayout)>,
    folded: Vec<String>,
}

/// Compacts `model` and measures both sides; `folded` names the folded blocks.
fn measure<M: Prunable + Classifier + Costed>(
    model: &M,
    x: Option<Tensor<4>>,
    hw: [usize; 2],
    folded: impl Fn(&M) -> Vec<String>,
) -> Result<Compacted, ConformanceError> {
    // Unchecked: conformance compares the compact model's outputs itself.
    let compact =
        texprune::compact_unchecked(model.clone()).map_err(|e| format_err(e.to_string()))?;
    let convs = compact
        .collect_prunable()
        .iter()
        .map(|l| (l.name.clone(), l.stripe_layout()))
        .collect();
    Ok(Compacted {
        masked_output: x.clone().map(|x| model.logits(x)),
        output: x.map(|x| compact.logits(x)),
        dense: model.cost(hw),
        compact: compact.cost(hw),
        convs,
        folded: folded(&compact),
    })
}

fn compact(
    model: Model,
    x: Option<Tensor<4>>,
    hw: [usize; 2],
) -> Result<Compacted, ConformanceError> {
    match model {
        Model::Vgg(m) => measure(m.as_ref(), x, hw, |_| Vec::new()),
        Model::ResNet(m) => measure(m.as_ref(), x, hw, ResNet::folded_blocks),
    }
}

/// Params (with and without skeleton), FLOPs, and the per-kind FLOP lists.
fn check_cost(
    report: &mut Report,
    at: &str,
    ours: &CostReport,
    reference: &Value,
) -> Result<(), ConformanceError> {
    let params = field(reference, "params")?;
    report.check(
        &format!("{at}.params.total_excluding_FilterSkeleton"),
        &[ours.params() as f64],
        &[number(params, "total_excluding_FilterSkeleton")?],
        NanRule::Finite,
    );
    report.check(
        &format!("{at}.params.total"),
        &[(ours.params() + ours.skeleton()) as f64],
        &[number(params, "total")?],
        NanRule::Finite,
    );
    report.check_scalar(at, "flops", ours.flops() as f64, reference)?;
    let lists = field(reference, "flops_lists")?;
    for (key, kinds) in [
        ("strip", &[LayerKind::Conv, LayerKind::StripeConv][..]),
        ("bn", &[LayerKind::BatchNorm]),
        ("relu", &[LayerKind::Relu]),
        ("pooling", &[LayerKind::Pool]),
        ("linear", &[LayerKind::Linear]),
    ] {
        let flops: Vec<f64> = ours
            .layers
            .iter()
            .filter(|l| kinds.contains(&l.kind))
            .map(|l| l.flops as f64)
            .collect();
        report.check(
            &format!("{at}.flops_lists.{key}"),
            &flops,
            &values(lists, key)?,
            NanRule::Finite,
        );
    }
    Ok(())
}

fn check_case(
    case: &Value,
    x: Option<Tensor<4>>,
    device: &Device,
) -> Result<Report, ConformanceError> {
    let name = field(case, "name")?
        .as_str()
        .ok_or_else(|| format_err("`name` is not a string"))?
        .to_string();
    let threshold = number(case, "threshold")?;
    let dict = case.get("state_dict").and_then(Value::as_object);
    let skeletons: HashMap<String, &Value> = match dict {
        Some(d) => d
            .iter()
            .filter_map(|(k, v)| Some((k.strip_suffix(".FilterSkeleton")?.to_string(), v)))
            .collect(),
        None => field(case, "FilterSkeleton_inputs")?
            .as_object()
            .ok_or_else(|| format_err("`FilterSkeleton_inputs` is not an object"))?
            .iter()
            .map(|(k, v)| (k.clone(), v))
            .collect(),
    };
    let state = State {
        dict,
        skeletons,
        mask_threshold: dict.is_none().then_some(threshold),
        device: device.clone(),
    };
    let x = x.filter(|_| dict.is_some());
    let hw = x.as_ref().map_or([32, 32], |x| {
        let [_, _, h, w] = x.dims();
        [h, w]
    });
    let model = build(&state, case, hw)?;
    let result = compact(model, x, hw)?;
    let mut report = Report::default();
    let at = format!("prune.{name}");

    // The reference's masks are |S| > t on the convs it breaks; texprune's are S ≠ 0.
    let pruned = field(case, "pruned")?;
    let structure = field(pruned, "structure")?
        .as_array()
        .ok_or_else(|| format_err("`structure` is not an array"))?;
    let broken = |entry: &&Value| entry.get("broken").and_then(Value::as_bool) == Some(true);
    let same_masks = dict.is_none()
        || structure.iter().filter(broken).all(|entry| {
            let module = entry.get("module").and_then(Value::as_str).unwrap_or("");
            state.skeletons.get(module).is_some_and(|s| {
                flatten(s).is_ok_and(|(v, _)| v.iter().all(|v| *v == 0.0 || v.abs() > threshold))
            })
        });
    let mut exact_reference = dict.is_none();
    if let (Some(out), Some(masked)) = (result.output, result.masked_output) {
        let expected = values(case, "output_masked")?;
        report.check(
            &format!("{at}.output_masked"),
            &data(masked),
            &expected,
            NanRule::Finite,
        );
        report.check(
            &format!("{at}.compact_output"),
            &data(out),
            &expected,
            NanRule::Finite,
        );
        let scale = expected.iter().fold(0.0f64, |m, v| m.max(v.abs()));
        let diff = number(case, "max_abs_diff_pruned_vs_masked")?;
        exact_reference = diff <= super::TOLERANCE * (1.0 + scale);
    }
    check_cost(
        &mut report,
        &format!("{at}.dense"),
        &result.dense,
        field(case, "dense")?,
    )?;
    if !(same_masks && exact_reference) {
        report.notes.push(format!(
            "{at}: the reference's pruning changes the output here ({}); checked texprune's \
             exactness only",
            if same_masks {
                "it drops a non-zero residual constant"
            } else {
                "it prunes entries that are not masked"
            }
        ));
        return Ok(report);
    }
    check_cost(
        &mut report,
        &format!("{at}.pruned"),
        &result.compact,
        pruned,
    )?;
    let removed: Vec<String> = values_str(field(case, "removed_blocks")?);
    if removed == result.folded {
        report.passed += 1;
    } else {
        report.failures.push(format!(
            "{at}.removed_blocks: texprune folds {:?}, reference removes {removed:?}",
            result.folded
        ));
    }
    let ours: HashMap<&str, &StripeLayout> =
        result.convs.iter().map(|(n, p)| (n.as_str(), p)).collect();
    for entry in structure {
        let module = field(entry, "module")?
            .as_str()
            .ok_or_else(|| format_err("`module` is not a string"))?;
        let name = format!("{at}.structure.{module}");
        let Some(plan) = ours.get(module) else {
            report
                .failures
                .push(format!("{name}: texprune has no such conv"));
            continue;
        };
        report.check(
            &format!("{name}.[in_channels, filters]"),
            &[plan.in_channels as f64, plan.out_channels as f64],
            &[number(entry, "in_channels")?, number(entry, "filters")?],
            NanRule::Finite,
        );
        // A conv the reference does not break keeps its real-valued skeleton: no stripe data.
        if broken(&entry) {
            report.check(
                &format!("{name}.kept_stripes"),
                &[plan.live_stripes() as f64],
                &[number(entry, "kept_stripes")?],
                NanRule::Finite,
            );
            report.check_bools(
                &format!("{name}.stripe_mask"),
                &plan.stripe_mask(),
                &values(entry, "stripe_mask")?,
            );
        }
    }
    Ok(report)
}

fn values_str(v: &Value) -> Vec<String> {
    v.as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| s.as_str().map(String::from))
        .collect()
}
