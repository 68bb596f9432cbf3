//! Conformance with values computed by the authors' PyTorch code (float64).
//!
//! [`check_file`] reads a reference file in the format of `tests/data/reference/penalty.json`
//! (`SeparateAngleLoss`), `dtc.json` (`update_skeleton`) or `prune_*.json` (`model.prune`, see
//! the `prune` module), recomputes every value with texprune in the reference mode on `device` in
//! float64, and counts one check per compared quantity (a loss, an intermediate vector, a
//! gradient tensor, a threshold vector, a mask, an output, a structure entry, a FLOP list).
//!
//! Tolerance: `|ours - theirs| ≤ 1e-9 · (1 + |theirs|)` per element ([`TOLERANCE`]). Both sides
//! are float64; they differ only by summation order (~1e-15), the `cos` clamp (≤ 7e-9 on a
//! similarity, only at `|cos| = 1`) and the 1e-30 shift under square roots, so any formula
//! difference (≥ 1e-6) fails. Where the reference is NaN for want of a clamp (an all-zero
//! skeleton row), the check is that our value is finite; a NaN DTC threshold (all-zero layer) must
//! be `+∞` here (the same masks follow).

use std::collections::HashMap;
use std::path::Path;

use serde_json::Value;
use texprune::burn::module::{Module, ModuleMapper, Param, ParamId};
use texprune::burn::nn::PaddingConfig2d;
use texprune::burn::optim::GradientsParams;
use texprune::burn::tensor::{Bool, DType, Device, Tensor, TensorData};
use texprune::cdp::{Cdp, CdpConfig, Formula, LayerParams};
use texprune::dtc::{DtcConfig, ThresholdContainer, mask_stripes};
use texprune::texture::{SkeletonTexture, WeightTexture};
use texprune::zoo::resnet::ResNetConfig;
use texprune::zoo::vgg::{VggConfig, VggLayer};
use texprune::{Prunable, PrunableLayers, SkeletonConv2d, SkeletonConv2dConfig};

use texprune::{Pruner, PrunerConfig};

mod prune;

/// Relative tolerance of every comparison (see the module doc).
pub const TOLERANCE: f64 = 1e-9;

/// A reference file that cannot be checked.
#[derive(Debug, thiserror::Error)]
pub enum ConformanceError {
    /// The file cannot be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not JSON.
    #[error("{path} is not JSON: {source}")]
    Json {
        /// The file.
        path: String,
        /// The parser's error.
        source: serde_json::Error,
    },
    /// The JSON does not have the expected layout.
    #[error("{0}")]
    Format(String),
}

fn format_err(msg: impl Into<String>) -> ConformanceError {
    ConformanceError::Format(msg.into())
}

/// Outcome of the checks.
#[derive(Debug, Default)]
pub struct Report {
    /// Checks that passed.
    pub passed: usize,
    /// One line per failed check.
    pub failures: Vec<String>,
    /// What was not compared, and why.
    pub notes: Vec<String>,
}

/// What a NaN in the reference stands for.
#[derive(Clone, Copy)]
enum NanRule {
    /// NaN from a missing clamp: ours must be finite.
    Finite,
    /// NaN threshold of an all-zero layer: ours must be `+∞`.
    Infinite,
}

impl Report {
    fn check(&mut self, name: &str, ours: &[f64], theirs: &[f64], nan: NanRule) {
        if ours.len() != theirs.len() {
            self.failures.push(format!(
                "{name}: {} values, reference has {}",
                ours.len(),
                theirs.len()
            ));
            return;
        }
        let mut worst: Option<(usize, f64, f64)> = None;
        for (i, (&a, &b)) in ours.iter().zip(theirs).enumerate() {
            let ok = if b.is_nan() {
                match nan {
                    NanRule::Finite => a.is_finite(),
                    NanRule::Infinite => a == f64::INFINITY,
                }
            } else if b.is_infinite() {
                a == b
            } else {
                (a - b).abs() <= TOLERANCE * (1.0 + b.abs())
            };
            if !ok && worst.is_none() {
                worst = Some((i, a, b));
            }
        }
        match worst {
            None => self.passed += 1,
            Some((i, a, b)) => self
                .failures
                .push(format!("{name}[{i}]: texprune {a:e}, reference {b:e}")),
        }
    }

    fn check_bools(&mut self, name: &str, ours: &[bool], theirs: &[f64]) {
        let theirs: Vec<bool> = theirs.iter().map(|v| *v != 0.0).collect();
        if ours == theirs.as_slice() {
            self.passed += 1;
        } else {
            self.failures
                .push(format!("{name}: mask differs from the reference"));
        }
    }

    /// Checks the scalar `ours` against the reference's field `key` of `reference`.
    fn check_scalar(
        &mut self,
        at: &str,
        key: &str,
        ours: f64,
        reference: &Value,
    ) -> Result<(), ConformanceError> {
        self.check(
            &format!("{at}.{key}"),
            &[ours],
            &[number(reference, key)?],
            NanRule::Finite,
        );
        Ok(())
    }

    fn merge(&mut self, other: Report) {
        self.passed += other.passed;
        self.failures.extend(other.failures);
        self.notes.extend(other.notes);
    }
}

/// Flattens a nested JSON array of numbers, booleans and "NaN"/"Infinity" strings.
fn flatten(v: &Value) -> Result<(Vec<f64>, Vec<usize>), ConformanceError> {
    match v {
        Value::Array(items) => {
            let mut values = Vec::new();
            let mut inner: Option<Vec<usize>> = None;
            for item in items {
                let (vals, shape) = flatten(item)?;
                if inner.as_ref().is_some_and(|s| *s != shape) {
                    return Err(format_err("ragged nested array"));
                }
                inner = Some(shape);
                values.extend(vals);
            }
            let mut shape = vec![items.len()];
            shape.extend(inner.unwrap_or_default());
            Ok((values, shape))
        }
        Value::Number(n) => Ok((vec![n.as_f64().unwrap_or(f64::NAN)], vec![])),
        Value::Bool(b) => Ok((vec![f64::from(u8::from(*b))], vec![])),
        Value::String(s) => match s.as_str() {
            "NaN" => Ok((vec![f64::NAN], vec![])),
            "Infinity" => Ok((vec![f64::INFINITY], vec![])),
            "-Infinity" => Ok((vec![f64::NEG_INFINITY], vec![])),
            other => Err(format_err(format!("expected a number, found \"{other}\""))),
        },
        other => Err(format_err(format!(
            "expected a number or array, found {other}"
        ))),
    }
}

fn field<'a>(v: &'a Value, key: &str) -> Result<&'a Value, ConformanceError> {
    v.get(key)
        .ok_or_else(|| format_err(format!("missing field `{key}`")))
}

fn values(v: &Value, key: &str) -> Result<Vec<f64>, ConformanceError> {
    Ok(flatten(field(v, key)?)?.0)
}

fn number(v: &Value, key: &str) -> Result<f64, ConformanceError> {
    let (vals, _) = flatten(field(v, key)?)?;
    vals.first()
        .copied()
        .ok_or_else(|| format_err(format!("`{key}` is empty")))
}

fn tensor<const D: usize>(v: &Value, device: &Device) -> Result<Tensor<D>, ConformanceError> {
    let (vals, shape) = flatten(v)?;
    if shape.len() != D {
        return Err(format_err(format!(
            "expected a {D}-d tensor, found shape {shape:?}"
        )));
    }
    Ok(Tensor::from_data(
        TensorData::new(vals, shape),
        (device, DType::F64),
    ))
}

fn data<const D: usize>(t: Tensor<D>) -> Vec<f64> {
    t.into_data().iter::<f64>().collect()
}

fn bools<const D: usize>(t: Tensor<D, Bool>) -> Vec<bool> {
    t.into_data().iter::<bool>().collect()
}

/// Checks one reference file; the format is recognised by its fields.
///
/// # Errors
/// [`ConformanceError`] when the file cannot be read or parsed, or its format is not recognised.
pub fn check_file(path: &Path, device: &Device) -> Result<Report, ConformanceError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConformanceError::Io {
        path: path.display().to_string(),
        source,
    })?;
    let json: Value = serde_json::from_str(&text).map_err(|source| ConformanceError::Json {
        path: path.display().to_string(),
        source,
    })?;
    if json.get("models").is_some() && json.get("ce").is_some() {
        check_penalty(&json, device)
    } else if json.get("layer_cases").is_some() || json.get("model_cases").is_some() {
        check_dtc(&json, device)
    } else if prune::is_prune_file(&json) {
        prune::check_prune(&json, device)
    } else {
        Err(format_err(format!(
            "{}: not a penalty (`models`, `ce`), DTC (`layer_cases`, `model_cases`) or pruning \
             (`cases` with `dense` and `pruned`) reference file",
            path.display()
        )))
    }
}

// ---------------------------------------------------------------------------------------------
// penalty.json: SeparateAngleLoss

/// The convs of a penalty case, named `convs.{i}` like the reference's container.
#[derive(Module, Debug)]
struct ConvStack {
    convs: Vec<SkeletonConv2d>,
}

impl Prunable for ConvStack {
    fn prunable_layers(&self, layers: &mut PrunableLayers) {
        for (i, conv) in self.convs.iter().enumerate() {
            layers.conv(format!("convs.{i}"), conv);
        }
    }
}

impl ConvStack {
    /// Builds the stack from `params` (`convs.{i}.weight`, `convs.{i}.FilterSkeleton`), adding
    /// `deltas` to the skeletons where given.
    fn new(
        params: &Value,
        deltas: Option<&Value>,
        device: &Device,
    ) -> Result<Self, ConformanceError> {
        let mut convs = Vec::new();
        while let Some(w) = params.get(format!("convs.{}.weight", convs.len())) {
            let i = convs.len();
            let weight: Tensor<4> = tensor(w, device)?;
            let mut skeleton: Tensor<3> =
                tensor(field(params, &format!("convs.{i}.FilterSkeleton"))?, device)?;
            if let Some(d) = deltas.and_then(|d| d.get(format!("convs.{i}.FilterSkeleton"))) {
                skeleton = skeleton + tensor(d, device)?;
            }
            let [cout, cin, kh, kw] = weight.dims();
            let conv = SkeletonConv2dConfig::new([cin, cout], [kh, kw])
                .with_padding(PaddingConfig2d::Explicit(kh / 2, kw / 2, kh / 2, kw / 2))
                .with_bias(false)
                .init_from(weight.require_grad(), skeleton.require_grad(), None)
                .map_err(|e| format_err(e.to_string()))?;
            convs.push(conv);
        }
        if convs.is_empty() {
            return Err(format_err("no `convs.0.weight` in params"));
        }
        Ok(Self { convs })
    }

    fn layer_params(&self) -> Vec<LayerParams> {
        self.convs
            .iter()
            .map(|c| LayerParams {
                weight: c.weight.val(),
                skeleton: c.skeleton.val(),
            })
            .collect()
    }

    /// Penalty value and every parameter's gradient, by reference name.
    fn penalty(&self, cdp: &Cdp) -> (f64, HashMap<String, Vec<f64>>, Vec<Tensor<1>>) {
        let mut grads = HashMap::new();
        let Some(p) = cdp.evaluate(&self.layer_params()) else {
            for (i, c) in self.convs.iter().enumerate() {
                grads.insert(
                    format!("convs.{i}.weight"),
                    vec![0.0; c.weight.shape().num_elements()],
                );
                grads.insert(
                    format!("convs.{i}.FilterSkeleton"),
                    vec![0.0; c.skeleton.shape().num_elements()],
                );
            }
            return (0.0, grads, Vec::new());
        };
        let value = data(p.total.clone())[0];
        let g = p.total.backward();
        for (i, c) in self.convs.iter().enumerate() {
            let zeros = |n: usize| vec![0.0; n];
            let w = c
                .weight
                .val()
                .grad(&g)
                .map(data)
                .unwrap_or_else(|| zeros(c.weight.shape().num_elements()));
            let s = c
                .skeleton
                .val()
                .grad(&g)
                .map(data)
                .unwrap_or_else(|| zeros(c.skeleton.shape().num_elements()));
            grads.insert(format!("convs.{i}.weight"), w);
            grads.insert(format!("convs.{i}.FilterSkeleton"), s);
        }
        (value, grads, p.masses)
    }
}

fn cdp_from_args(args: &Value, history: bool) -> Result<Cdp, ConformanceError> {
    let args: Value = match args {
        Value::String(s) => {
            serde_json::from_str(s).map_err(|e| format_err(format!("args: {e}")))?
        }
        other => other.clone(),
    };
    let get = |k: &str| args.get(k).and_then(Value::as_f64).unwrap_or(0.0);
    let config = CdpConfig::new()
        .with_weight_texture(get("var"))
        .with_skeleton_texture(get("var2"))
        .with_l1(get("l1_value"))
        .with_l2(get("l2_value"))
        .with_group(get("gl_a"))
        .with_adaptive(get("prop"))
        .with_formula(Formula::Reference)
        .with_history(history);
    Cdp::new(config).map_err(|e| format_err(e.to_string()))
}

fn check_grads(
    report: &mut Report,
    name: &str,
    ours: &HashMap<String, Vec<f64>>,
    theirs: &Value,
) -> Result<(), ConformanceError> {
    let theirs = theirs
        .as_object()
        .ok_or_else(|| format_err(format!("{name}: grads is not an object")))?;
    for (param, g) in theirs {
        let ours = ours.get(param).map(Vec::as_slice).unwrap_or(&[]);
        report.check(
            &format!("{name}.{param}"),
            ours,
            &flatten(g)?.0,
            NanRule::Finite,
        );
    }
    Ok(())
}

fn check_penalty(json: &Value, device: &Device) -> Result<Report, ConformanceError> {
    let device = device.clone().autodiff();
    let ce = number(json, "ce")?;
    let models = field(json, "models")?
        .as_object()
        .ok_or_else(|| format_err("`models` is not an object"))?;
    let mut report = Report::default();
    for (name, model) in models {
        let params = field(model, "params")?;
        let stack = ConvStack::new(params, None, &device)?;
        if let Some(Value::Array(layers)) = model.get("breakdown") {
            for (i, b) in layers.iter().enumerate() {
                let conv = stack
                    .convs
                    .get(i)
                    .ok_or_else(|| format_err("breakdown has more layers than params"))?;
                check_breakdown(&mut report, &format!("{name}.breakdown[{i}]"), conv, b)?;
            }
        }
        if let Some(Value::Object(configs)) = model.get("configs") {
            for (cfg, c) in configs {
                let cdp = cdp_from_args(field(c, "args")?, false)?;
                let (value, grads, _) = ConvStack::new(params, None, &device)?.penalty(&cdp);
                let at = format!("{name}.configs.{cfg}");
                report.check_scalar(&at, "loss", ce + value, c)?;
                if c.get("loss_minus_ce").is_some() {
                    report.check_scalar(&at, "loss_minus_ce", value, c)?;
                }
                if let Some(g) = c.get("grads") {
                    check_grads(&mut report, &format!("{at}.grads"), &grads, g)?;
                }
            }
        }
        let prop = serde_json::json!({ "prop": 1.0 });
        for (key, history) in [
            ("prop_history_inplace", false),
            ("prop_history_replaced", true),
        ] {
            let Some(h) = model.get(key) else { continue };
            let deltas = model
                .get("prop_history_inplace")
                .and_then(|i| i.get("deltas"))
                .or_else(|| h.get("deltas"))
                .ok_or_else(|| format_err(format!("{key}: no deltas")))?;
            let at = format!("{name}.{key}");
            let mut cdp = cdp_from_args(&prop, history)?;
            let (v1, g1, masses) = ConvStack::new(params, None, &device)?.penalty(&cdp);
            report.check_scalar(&at, "loss_call1", ce + v1, h)?;
            check_grads(
                &mut report,
                &format!("{at}.grads_call1"),
                &g1,
                field(h, "grads_call1")?,
            )?;
            let previous: Vec<f64> = masses.iter().map(|m| data(m.clone())[0]).collect();
            cdp.commit(masses);
            let next = ConvStack::new(params, Some(deltas), &device)?;
            let (v2, g2, _) = next.penalty(&cdp);
            report.check_scalar(&at, "loss_call2", ce + v2, h)?;
            if h.get("loss2_minus_ce").is_some() {
                report.check_scalar(&at, "loss2_minus_ce", v2, h)?;
            }
            check_grads(
                &mut report,
                &format!("{at}.grads_call2"),
                &g2,
                field(h, "grads_call2")?,
            )?;
            if let Some(Value::Array(per_layer)) = h.get("per_layer") {
                for (i, l) in per_layer.iter().enumerate() {
                    let conv = next
                        .convs
                        .get(i)
                        .ok_or_else(|| format_err("per_layer has more layers than params"))?;
                    let now = data(SkeletonTexture::new(conv.skeleton.val()).mass())[0];
                    let last = previous.get(i).copied().unwrap_or(f64::NAN);
                    let l1 = data(conv.skeleton.val().abs().sum())[0];
                    let (a, b) = (last / now, now / last);
                    let at = format!("{at}.per_layer[{i}]");
                    for (k, v) in [
                        ("S_now", now),
                        ("S_last", last),
                        ("a", a),
                        ("b", b),
                        ("now_g", l1),
                        ("now_l1", l1),
                        ("term", b * l1 + a * l1),
                    ] {
                        report.check(
                            &format!("{at}.{k}"),
                            &[v],
                            &[number(l, k)?],
                            NanRule::Finite,
                        );
                    }
                }
            }
        }
    }
    Ok(report)
}

fn check_breakdown(
    report: &mut Report,
    at: &str,
    conv: &SkeletonConv2d,
    b: &Value,
) -> Result<(), ConformanceError> {
    let w = WeightTexture::new(conv.weight.val());
    let cout = conv.weight.dims()[0];
    let repeat = |t: Tensor<1>| vec![data(t)[0]; cout];
    let weight: [(&str, Vec<f64>); 7] = [
        ("channel_mean", data(w.channel_mean.clone())),
        ("filter_norm", data(w.filter_norm.clone())),
        ("mean_filter_norm", repeat(w.mean_filter_norm.clone())),
        ("dot", data(w.dot.clone())),
        ("cos", data(w.cos.clone())),
        ("similarity", data(w.similarity.clone())),
        ("similarity_sum", data(w.mass())),
    ];
    let s = SkeletonTexture::new(conv.skeleton.val());
    let skeleton: [(&str, Vec<f64>); 7] = [
        ("mean_skeleton", data(s.mean_skeleton.clone())),
        ("skeleton_norm", data(s.skeleton_norm.clone())),
        ("mean_skeleton_norm", repeat(s.mean_skeleton_norm.clone())),
        ("dot", data(s.dot.clone())),
        ("cos", data(s.cos.clone())),
        ("similarity", data(s.similarity.clone())),
        ("similarity_sum", data(s.mass())),
    ];
    for (group, stats) in [("var", weight), ("var2", skeleton)] {
        let reference = field(b, group)?;
        for (k, ours) in stats {
            report.check(
                &format!("{at}.{group}.{k}"),
                &ours,
                &values(reference, k)?,
                NanRule::Finite,
            );
        }
    }
    let sk = conv.skeleton.val();
    let row_l1 = sk.clone().abs().sum_dims(&[1, 2]).reshape([cout]);
    let other = field(b, "other")?;
    let l1 = data(sk.clone().abs().sum());
    let ours: [(&str, Vec<f64>); 5] = [
        ("l1", l1.clone()),
        ("l2", data(sk.square().sum().sqrt())),
        ("row_l1", data(row_l1.clone())),
        ("gl", data(row_l1.square().sum().sqrt())),
        ("prop_now_g", l1),
    ];
    for (k, v) in ours {
        if other.get(k).is_some() {
            report.check(
                &format!("{at}.other.{k}"),
                &v,
                &values(other, k)?,
                NanRule::Finite,
            );
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// dtc.json: update_skeleton_skeleton + update_skeleton

fn check_dtc(json: &Value, device: &Device) -> Result<Report, ConformanceError> {
    let mut report = Report::default();
    if let Some(Value::Array(cases)) = json.get("layer_cases") {
        for case in cases {
            report.merge(check_dtc_layer(case, device)?);
        }
    }
    if let Some(Value::Array(cases)) = json.get("model_cases") {
        for case in cases {
            report.merge(check_dtc_model(case, device)?);
        }
    }
    Ok(report)
}

fn check_dtc_layer(case: &Value, device: &Device) -> Result<Report, ConformanceError> {
    let at = format!(
        "layer_cases.{}",
        case.get("name").and_then(Value::as_str).unwrap_or("?")
    );
    let mut report = Report::default();
    let skeleton: Tensor<3> = tensor(field(case, "FilterSkeleton_before")?, device)?;
    let grad: Tensor<3> = tensor(field(case, "grad_before")?, device)?;
    let threshold = number(case, "threshold")?;
    let cout = skeleton.dims()[0];
    let l1 = skeleton.clone().abs().sum_dims(&[1, 2]).reshape([cout]);
    report.check(
        &format!("{at}.filter_l1"),
        &data(l1.clone()),
        &values(case, "filter_l1")?,
        NanRule::Finite,
    );
    report.check(
        &format!("{at}.mean_filter_l1"),
        &data(l1.mean()),
        &[number(case, "mean_filter_l1")?],
        NanRule::Finite,
    );
    let mut dtc = ThresholdContainer::new(DtcConfig::new().with_threshold(threshold))
        .map_err(|e| format_err(e.to_string()))?;
    let masks = dtc.update(0, skeleton.clone()).clone();
    report.check(
        &format!("{at}.Skeleton_skeleton"),
        &data(masks.thresholds),
        &values(case, "Skeleton_skeleton")?,
        NanRule::Infinite,
    );
    report.check_bools(
        &format!("{at}.mask"),
        &bools(masks.stripes.clone()),
        &values(case, "mask")?,
    );
    let after = mask_stripes(skeleton, masks.stripes.clone());
    report.check(
        &format!("{at}.FilterSkeleton_after"),
        &data(after),
        &values(case, "FilterSkeleton_after")?,
        NanRule::Finite,
    );
    let grad_after = mask_stripes(grad, masks.stripes);
    report.check(
        &format!("{at}.grad_after"),
        &data(grad_after),
        &values(case, "grad_after")?,
        NanRule::Finite,
    );
    report.check_bools(
        &format!("{at}.out_mask"),
        &bools(masks.alive),
        &values(case, "out_mask")?,
    );
    Ok(report)
}

/// Replaces parameter values by id, keeping each parameter's autodiff state.
struct SetParams(HashMap<ParamId, TensorData>);

impl ModuleMapper for SetParams {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        match self.0.remove(&param.id) {
            Some(data) => param.map(|t| {
                let v = Tensor::from_data(data, (&t.device(), DType::F64));
                if t.is_require_grad() {
                    v.require_grad()
                } else {
                    v
                }
            }),
            None => param,
        }
    }
}

/// Parses the case's `kind` (`"VGG cfg=[4, 'M', 6]"`, `"ResNet56 cfg=[2, 2, …]"`).
fn parse_kind(kind: &str) -> Result<(String, Vec<String>), ConformanceError> {
    let (arch, cfg) = kind
        .split_once("cfg=")
        .ok_or_else(|| format_err(format!("kind `{kind}` has no cfg")))?;
    let items = cfg
        .trim()
        .trim_start_matches('[')
        .trim_end_matches(']')
        .split(',')
        .map(|s| s.trim().trim_matches('\'').to_string())
        .filter(|s| !s.is_empty())
        .collect();
    Ok((arch.trim().to_string(), items))
}

fn check_dtc_model(case: &Value, device: &Device) -> Result<Report, ConformanceError> {
    let kind = field(case, "kind")?
        .as_str()
        .ok_or_else(|| format_err("`kind` is not a string"))?;
    let (arch, cfg) = parse_kind(kind)?;
    let ints = || -> Result<Vec<usize>, ConformanceError> {
        cfg.iter()
            .map(|s| {
                s.parse()
                    .map_err(|_| format_err(format!("bad cfg entry `{s}`")))
            })
            .collect()
    };
    let threshold = number(case, "threshold")?;
    let zoo = |e: texprune::ModelError| format_err(e.to_string());
    if arch.starts_with("VGG") {
        let layers = cfg
            .iter()
            .map(|s| {
                if s == "M" {
                    Ok(VggLayer::MaxPool)
                } else {
                    s.parse()
                        .map(VggLayer::Conv)
                        .map_err(|_| format_err(format!("bad cfg entry `{s}`")))
                }
            })
            .collect::<Result<Vec<_>, _>>()?;
        let model = VggConfig::new(layers).init(device).map_err(zoo)?;
        run_dtc_model(&format!("model_cases.{kind}"), model, case, threshold)
    } else if let Some(depth) = arch.strip_prefix("ResNet") {
        let depth = depth
            .parse()
            .map_err(|_| format_err(format!("bad ResNet depth in `{kind}`")))?;
        let model = ResNetConfig::new()
            .with_depth(depth)
            .with_widths(Some(ints()?))
            .init(device)
            .map_err(zoo)?;
        run_dtc_model(&format!("model_cases.{kind}"), model, case, threshold)
    } else {
        Err(format_err(format!("unknown model kind `{kind}`")))
    }
}

fn run_dtc_model<M: Prunable>(
    at: &str,
    model: M,
    case: &Value,
    threshold: f64,
) -> Result<Report, ConformanceError> {
    let before = field(case, "before")?;
    let after = field(case, "after")?;
    let mut pruner = Pruner::new(PrunerConfig::new(
        CdpConfig::new(),
        DtcConfig::new().with_threshold(threshold),
    ))
    .map_err(|e| format_err(e.to_string()))?;
    let layers = pruner
        .layers(&model)
        .map_err(|e| format_err(e.to_string()))?;
    let device = layers[0].skeleton.device();
    let mut values_by_id = HashMap::new();
    let mut grads = GradientsParams::new();
    let entry = |name: &str| field(before, name);
    let load = |v: &Value| -> Result<TensorData, ConformanceError> {
        let (vals, shape) = flatten(v)?;
        Ok(TensorData::new(vals, shape))
    };
    for l in &layers {
        let b = entry(&l.name)?;
        values_by_id.insert(l.skeleton_id, load(field(b, "FilterSkeleton")?)?);
        grads.register::<3>(l.skeleton_id, tensor(field(b, "grad")?, &device)?);
        if let Some(n) = &l.norm {
            let b = entry(&n.name)?;
            values_by_id.insert(n.gamma_id, load(field(b, "weight")?)?);
            values_by_id.insert(n.beta_id, load(field(b, "bias")?)?);
            grads.register::<1>(n.gamma_id, tensor(field(b, "weight_grad")?, &device)?);
            grads.register::<1>(n.beta_id, tensor(field(b, "bias_grad")?, &device)?);
        }
    }
    let model = model.map(&mut SetParams(values_by_id));
    pruner
        .threshold_step(&model, &mut grads)
        .map_err(|e| format_err(e.to_string()))?;
    let model = pruner.apply_masks(model);
    let mut report = Report::default();
    let mut coupled = Vec::new();
    for (index, l) in pruner
        .layers(&model)
        .map_err(|e| format_err(e.to_string()))?
        .iter()
        .enumerate()
    {
        let a = field(after, &l.name)?;
        let name = format!("{at}.{}", l.name);
        let updated = a
            .get("skeleton_updated")
            .and_then(Value::as_bool)
            .unwrap_or(true);
        if updated != l.thresholded {
            report.failures.push(format!(
                "{name}: reference thresholds it: {updated}, texprune: {}",
                l.thresholded
            ));
            continue;
        }
        report.passed += 1;
        if let Some(m) = pruner.container().masks(index).filter(|_| l.thresholded) {
            report.check(
                &format!("{name}.Skeleton_skeleton"),
                &data(m.thresholds.clone()),
                &values(a, "Skeleton_skeleton")?,
                NanRule::Infinite,
            );
        }
        report.check(
            &format!("{name}.FilterSkeleton"),
            &data(l.skeleton.clone()),
            &values(a, "FilterSkeleton")?,
            NanRule::Finite,
        );
        let g = grads.get::<3>(l.skeleton_id).map(data).unwrap_or_default();
        report.check(
            &format!("{name}.grad"),
            &g,
            &values(a, "grad")?,
            NanRule::Finite,
        );
        if let Some(n) = &l.norm {
            coupled.push(n.name.clone());
            let a = field(after, &n.name)?;
            let name = format!("{at}.{}", n.name);
            report.check(
                &format!("{name}.weight"),
                &data(n.gamma.clone()),
                &values(a, "weight")?,
                NanRule::Finite,
            );
            report.check(
                &format!("{name}.bias"),
                &data(n.beta.clone()),
                &values(a, "bias")?,
                NanRule::Finite,
            );
            let g = |id| grads.get::<1>(id).map(data).unwrap_or_default();
            report.check(
                &format!("{name}.weight_grad"),
                &g(n.gamma_id),
                &values(a, "weight_grad")?,
                NanRule::Finite,
            );
            report.check(
                &format!("{name}.bias_grad"),
                &g(n.beta_id),
                &values(a, "bias_grad")?,
                NanRule::Finite,
            );
        }
    }
    // Every BatchNorm the model does not couple must be one the reference left unchanged.
    for (key, a) in after.as_object().into_iter().flatten() {
        if a.get("type").and_then(Value::as_str) == Some("BatchNorm") && !coupled.contains(key) {
            if a.get("changed").and_then(Value::as_bool) == Some(false) {
                report.passed += 1;
            } else {
                report.failures.push(format!(
                    "{at}.{key}: the reference masks this BatchNorm, texprune does not couple it"
                ));
            }
        }
    }
    Ok(report)
}
