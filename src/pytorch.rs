//! PyTorch weights in and compact weights out.
//!
//! - [`load`] / [`Loader`]: a PyTorch state dict (`.pth`, `.pt`, any `torch.save` file) or a
//!   safetensors file read by burn-store's readers into a [`Prunable`] model, matched by the
//!   model's [`TorchLayout`]: every tensor the model has must be in the file with the model's
//!   shape, except a [`SkeletonConv2d`](crate::SkeletonConv2d)'s `FilterSkeleton`, which starts
//!   at ones when the file has none (torchvision's files); every tensor of the file must be
//!   used, except BatchNorm's `num_batches_tracked`. BatchNorm running statistics are carried.
//!   Float tensors of another precision (`float64`, `float16`, `bfloat16`) are converted.
//! - [`export`]: a (compact) model's tensors under their PyTorch names as safetensors, and a
//!   JSON layout beside them (the convs, their strides, paddings and live stripes, and the zoo's
//!   [`Architecture`]), which `scripts/read_compact.py` turns back into a PyTorch model.
//!
//! Names: a tensor at Burn path `m.p` is PyTorch's `t.p'` where `(m, t)` is the longest
//! matching pair of [`TorchLayout::torch_names`] (or `m` itself), and `p'` is `p` in burn-store's
//! PyTorch convention (BatchNorm `gamma`/`beta` are `weight`/`bias`, a linear weight is
//! transposed) with the skeleton named `FilterSkeleton`, as in the reference code.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};

use burn::nn::PaddingConfig2d;
use burn::store::burn_pack::Tensor as PackTensor;
use burn::store::{
    BurnToPyTorchAdapter, ModuleSnapshot, ModuleStore, PyTorchToBurnAdapter, PytorchStore,
    SafetensorsStore, bridge,
};
use burn::tensor::{DType, TensorData};
use serde::{Deserialize, Serialize};
use texprune_layer::{Prunable, PrunableLayers};
use texprune_zoo::{Architecture, TorchLayout};

use crate::checkpoint::write_atomic;

/// PyTorch's name of a skeleton (the reference code's `FilterStripe.FilterSkeleton`).
pub const SKELETON_KEY: &str = "FilterSkeleton";

/// Version of the JSON layout [`export`] writes.
pub const LAYOUT_VERSION: u32 = 2;

/// Weights that cannot be read into a model, or written out.
#[derive(Debug, thiserror::Error)]
pub enum WeightsError {
    /// The file cannot be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not a PyTorch or safetensors file, or is damaged.
    #[error("{}: not a readable {format} file: {reason}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// `PyTorch` or `safetensors`.
        format: &'static str,
        /// What the reader said.
        reason: String,
    },
    /// A tensor the model has is not in the file.
    #[error("{}: `{key}` is missing (the model expects shape {expected:?})", path.display())]
    Missing {
        /// The file.
        path: PathBuf,
        /// The PyTorch key.
        key: String,
        /// The model's shape, in PyTorch's layout.
        expected: Vec<usize>,
    },
    /// A tensor of the file that the model has no place for.
    #[error("{}: `{key}` (shape {found:?}) is not a tensor of the model", path.display())]
    Extra {
        /// The file.
        path: PathBuf,
        /// The PyTorch key.
        key: String,
        /// Its shape in the file.
        found: Vec<usize>,
    },
    /// A tensor of the file whose shape is not the model's.
    #[error("{}: `{key}` has shape {found:?}, the model expects {expected:?}", path.display())]
    Shape {
        /// The file.
        path: PathBuf,
        /// The PyTorch key.
        key: String,
        /// The model's shape, in PyTorch's layout.
        expected: Vec<usize>,
        /// The file's shape.
        found: Vec<usize>,
    },
    /// A tensor whose type cannot become the model's (an integer tensor for a float one, …).
    #[error("{}: `{key}` is {found:?}, the model holds {expected:?}", path.display())]
    DType {
        /// The file.
        path: PathBuf,
        /// The PyTorch key.
        key: String,
        /// The model's type.
        expected: DType,
        /// The file's type.
        found: DType,
    },
    /// Two of the model's tensors map to one PyTorch key (a [`TorchLayout`] that renames two
    /// modules alike).
    #[error("`{key}` names two tensors of the model: check its TorchLayout::torch_names")]
    Ambiguous {
        /// The PyTorch key.
        key: String,
    },
    /// A tensor could not be read from the file or written into the model.
    #[error("{}: `{key}`: {reason}", path.display())]
    Tensor {
        /// The file.
        path: PathBuf,
        /// The PyTorch key.
        key: String,
        /// What went wrong.
        reason: String,
    },
}

/// What [`Loader::load`] did.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Loaded {
    /// Tensors read from the file into the model.
    pub tensors: usize,
    /// Convs (PyTorch module paths) whose file had no `FilterSkeleton`: they start at ones.
    pub skeletons_at_ones: Vec<String>,
    /// Keys of the file left unused (`num_batches_tracked`, and others with
    /// [`Loader::ignore_extra`]).
    pub ignored: Vec<String>,
}

/// Reads PyTorch weights into a model; [`load`] with the defaults.
#[derive(Debug, Clone)]
pub struct Loader {
    path: PathBuf,
    top_level_key: Option<String>,
    ignore_extra: bool,
}

/// Reads the PyTorch or safetensors file at `path` into `model` ([`Loader`] with its defaults).
///
/// ```rust,no_run
/// use texprune::{pytorch, zoo::resnet::ResNetConfig, burn::tensor::Device};
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let model = ResNetConfig::cifar(56).init(&Device::default().autodiff())?;
/// let (model, loaded) = pytorch::load(model, "resnet56.pth")?;
/// println!("{} tensors; skeletons at ones: {:?}", loaded.tensors, loaded.skeletons_at_ones);
/// # Ok(())
/// # }
/// ```
///
/// # Errors
/// See [`Loader::load`].
pub fn load<M: Prunable + TorchLayout>(
    model: M,
    path: impl AsRef<Path>,
) -> Result<(M, Loaded), WeightsError> {
    Loader::new(path).load(model)
}

/// One tensor of the model as PyTorch sees it.
struct Expected {
    /// The tensor collected with burn-store's PyTorch adapter: named by its Burn module path
    /// and PyTorch's parameter name, shaped in PyTorch's layout.
    tensor: PackTensor,
    /// Whether it is a skeleton (which a file may lack).
    skeleton: bool,
}

/// Every tensor of `model` by its PyTorch key (execution markers excluded: they are
/// texprune's); `layers` is the model's declaration.
fn torch_keys<M: TorchLayout>(
    model: &M,
    layers: &PrunableLayers,
) -> Result<BTreeMap<String, Expected>, WeightsError> {
    let skeletons: HashSet<u64> = layers.iter().map(|l| l.skeleton_id.val()).collect();
    let markers: HashSet<u64> = layers.iter().map(|l| l.execution_id.val()).collect();
    let mut names = model.torch_names();
    names.sort_by_key(|(burn, _)| std::cmp::Reverse(burn.len()));
    let collected = model.collect(None, Some(Box::new(BurnToPyTorchAdapter)), false);
    let mut keys = BTreeMap::new();
    for tensor in collected {
        let id = tensor.param_id.unwrap_or(u64::MAX);
        if markers.contains(&id) {
            continue;
        }
        let skeleton = skeletons.contains(&id);
        let (module, param) = tensor.name.rsplit_once('.').unwrap_or(("", &tensor.name));
        let param = if skeleton { SKELETON_KEY } else { param };
        let module = rename(module, &names);
        let key = if module.is_empty() {
            param.to_string()
        } else {
            format!("{module}.{param}")
        };
        if keys
            .insert(key.clone(), Expected { tensor, skeleton })
            .is_some()
        {
            return Err(WeightsError::Ambiguous { key });
        }
    }
    Ok(keys)
}

/// The PyTorch state dict `model` reads and writes: every key with its shape, in PyTorch's layout
/// (what [`load`] expects of a file and [`export`] writes; a file may lack the `FilterSkeleton`s).
///
/// # Errors
/// [`WeightsError::Ambiguous`] for a [`TorchLayout`] that names two tensors alike.
pub fn state_dict_shapes<M: Prunable + TorchLayout>(
    model: &M,
) -> Result<BTreeMap<String, Vec<usize>>, WeightsError> {
    let keys = torch_keys(model, &model.collect_prunable())?;
    Ok(keys
        .into_iter()
        .map(|(k, e)| (k, e.tensor.shape.to_vec()))
        .collect())
}

/// `module` with the longest matching Burn prefix of `names` replaced by its PyTorch path.
fn rename(module: &str, names: &[(String, String)]) -> String {
    for (burn, torch) in names {
        if module == burn {
            return torch.clone();
        }
        if let Some(rest) = module
            .strip_prefix(burn.as_str())
            .and_then(|r| r.strip_prefix('.'))
        {
            return format!("{torch}.{rest}");
        }
    }
    module.to_string()
}

impl Loader {
    /// Reads `path`: safetensors when it ends in `.safetensors`, a PyTorch file otherwise.
    pub fn new(path: impl AsRef<Path>) -> Self {
        Self {
            path: path.as_ref().to_path_buf(),
            top_level_key: None,
            ignore_extra: false,
        }
    }

    /// The state dict is under this key of the file's top-level dict (checkpoints saved as
    /// `torch.save({"state_dict": model.state_dict(), …})`; PyTorch files only).
    #[must_use]
    pub fn top_level_key(mut self, key: impl Into<String>) -> Self {
        self.top_level_key = Some(key.into());
        self
    }

    /// Leaves tensors of the file that the model has no place for unused instead of failing
    /// (to load a backbone without its head, say); they are listed in [`Loaded::ignored`].
    #[must_use]
    pub fn ignore_extra(mut self, ignore: bool) -> Self {
        self.ignore_extra = ignore;
        self
    }

    fn is_safetensors(&self) -> bool {
        self.path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("safetensors"))
    }

    /// The file's tensors by key.
    fn read(&self) -> Result<BTreeMap<String, PackTensor>, WeightsError> {
        // The readers' own errors are strings; a missing or unreadable file gets its I/O error.
        std::fs::File::open(&self.path).map_err(|source| WeightsError::Io {
            path: self.path.clone(),
            source,
        })?;
        let read_error = |format, reason: String| WeightsError::Read {
            path: self.path.clone(),
            format,
            reason,
        };
        if self.is_safetensors() {
            let mut store = SafetensorsStore::from_file(&self.path);
            let tensors = store
                .get_all_tensors()
                .map_err(|e| read_error("safetensors", e.to_string()))?;
            Ok(tensors.clone())
        } else {
            // The file's keys as PyTorch wrote them (the store renumbers `Sequential` indices by
            // default; `TorchLayout` names the real ones).
            let mut store = PytorchStore::from_file(&self.path).map_indices_contiguous(false);
            if let Some(key) = &self.top_level_key {
                store = store.with_top_level_key(key);
            }
            let tensors = store
                .get_all_tensors()
                .map_err(|e| read_error("PyTorch", e.to_string()))?;
            Ok(tensors.clone())
        }
    }

    /// Reads the file into `model`: every tensor of the model from the file, matched by the
    /// model's [`TorchLayout`]; a missing `FilterSkeleton` is set to ones.
    ///
    /// # Errors
    /// [`WeightsError::Io`] or [`WeightsError::Read`] for a file that cannot be read;
    /// [`WeightsError::Missing`], [`WeightsError::Extra`] (unless ignored),
    /// [`WeightsError::Shape`] and [`WeightsError::DType`] naming the first key that does not
    /// fit; [`WeightsError::Tensor`] for tensor data that cannot be read.
    pub fn load<M: Prunable + TorchLayout>(
        &self,
        mut model: M,
    ) -> Result<(M, Loaded), WeightsError> {
        let expected = torch_keys(&model, &model.collect_prunable())?;
        let file = self.read()?;
        let path = || self.path.clone();
        let mut loaded = Loaded::default();
        let mut tensors = Vec::with_capacity(expected.len());
        for (
            key,
            Expected {
                tensor: want,
                skeleton,
            },
        ) in &expected
        {
            let Some(found) = file.get(key) else {
                if !skeleton {
                    return Err(WeightsError::Missing {
                        path: path(),
                        key: key.clone(),
                        expected: want.shape.to_vec(),
                    });
                }
                let module = key.trim_end_matches(SKELETON_KEY).trim_end_matches('.');
                loaded.skeletons_at_ones.push(module.to_string());
                let ones =
                    TensorData::new(vec![1.0f32; want.shape.num_elements()], want.shape.to_vec());
                tensors.push(bridge::from_data(
                    ones.convert_dtype(want.dtype),
                    want.name.clone(),
                    None,
                ));
                continue;
            };
            if found.shape != want.shape {
                return Err(WeightsError::Shape {
                    path: path(),
                    key: key.clone(),
                    expected: want.shape.to_vec(),
                    found: found.shape.to_vec(),
                });
            }
            if found.dtype != want.dtype && !(found.dtype.is_float() && want.dtype.is_float()) {
                return Err(WeightsError::DType {
                    path: path(),
                    key: key.clone(),
                    expected: want.dtype,
                    found: found.dtype,
                });
            }
            let data = bridge::to_data(found).map_err(|e| WeightsError::Tensor {
                path: path(),
                key: key.clone(),
                reason: e.to_string(),
            })?;
            tensors.push(bridge::from_data(
                data.convert_dtype(want.dtype),
                want.name.clone(),
                None,
            ));
        }
        for (key, tensor) in &file {
            if expected.contains_key(key) {
                continue;
            }
            if key.ends_with("num_batches_tracked") || self.ignore_extra {
                loaded.ignored.push(key.clone());
                continue;
            }
            return Err(WeightsError::Extra {
                path: path(),
                key: key.clone(),
                found: tensor.shape.to_vec(),
            });
        }
        loaded.tensors = tensors.len() - loaded.skeletons_at_ones.len();
        let result = model.apply(tensors, None, Some(Box::new(PyTorchToBurnAdapter)), false);
        if let Some(error) = result.errors.first() {
            let at = error_path(error);
            let key = expected.iter().find(|(_, e)| e.tensor.name == at);
            return Err(WeightsError::Tensor {
                path: path(),
                key: key.map_or(at, |(k, _)| k.as_str()).to_string(),
                reason: error.to_string(),
            });
        }
        Ok((model, loaded))
    }
}

fn error_path(error: &burn::store::ApplyError) -> &str {
    use burn::store::ApplyError as E;
    match error {
        E::ShapeMismatch { path, .. }
        | E::DTypeMismatch { path, .. }
        | E::AdapterError { path, .. }
        | E::LoadError { path, .. } => path,
    }
}

/// One conv of an exported model, as the JSON layout lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConvEntry {
    /// PyTorch module path (`layer1.0.conv1`); its tensors are `<name>.weight`,
    /// `<name>.FilterSkeleton` and, with a bias, `<name>.bias`.
    pub name: String,
    /// `[Cout, Cin / groups, kh, kw]`.
    pub weight: Vec<usize>,
    /// Whether it has a bias.
    pub bias: bool,
    /// Stride `[sh, sw]`.
    pub stride: [usize; 2],
    /// Dilation `[dh, dw]`.
    pub dilation: [usize; 2],
    /// Channel groups.
    pub groups: usize,
    /// Zero padding, as Burn's `PaddingConfig2d` has it.
    pub padding: PaddingEntry,
    /// Whether compaction marked it stripe-wise: its weight is `W ⊙ S` and its skeleton the
    /// 0/1 indicator of the live stripes, which are all it computes.
    pub stripe_wise: bool,
    /// Stripes with a non-zero skeleton entry.
    pub live_stripes: usize,
}

/// A conv's zero padding in the JSON layout: `"valid"`, `"same"` (Burn's: `⌈size / stride⌉`
/// outputs, `(o − 1)·s + k − size` zeros split evenly, the odd one after, with the undilated
/// kernel size) or `{"explicit": [top, left, bottom, right]}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PaddingEntry {
    /// No padding.
    Valid,
    /// Burn's `Same`.
    Same,
    /// `[top, left, bottom, right]`.
    Explicit([usize; 4]),
}

impl From<&PaddingConfig2d> for PaddingEntry {
    fn from(padding: &PaddingConfig2d) -> Self {
        match *padding {
            PaddingConfig2d::Valid => Self::Valid,
            PaddingConfig2d::Same => Self::Same,
            PaddingConfig2d::Explicit(top, left, bottom, right) => {
                Self::Explicit([top, left, bottom, right])
            }
        }
    }
}

/// The JSON layout written beside the safetensors file by [`export`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Layout {
    /// `"texprune-compact"`.
    pub format: String,
    /// [`LAYOUT_VERSION`].
    pub version: u32,
    /// The zoo architecture, or `None` for a model outside the zoo.
    pub architecture: Option<Architecture>,
    /// The prunable convs in forward order.
    pub convs: Vec<ConvEntry>,
    /// Every tensor of the safetensors file, with its shape.
    pub tensors: BTreeMap<String, Vec<usize>>,
}

/// Writes `model`'s tensors under their PyTorch names (float32 safetensors) to `weights` and its
/// [`Layout`] as JSON to `layout`, each written atomically. Meant for compact models
/// (`pruner.compact(model)`), but any model exports.
///
/// # Errors
/// [`WeightsError::Ambiguous`] for a [`TorchLayout`] that names two tensors alike,
/// [`WeightsError::Tensor`] for a tensor that cannot be read back, [`WeightsError::Io`] when a
/// file cannot be written.
pub fn export<M: Prunable + TorchLayout>(
    model: &M,
    weights: impl AsRef<Path>,
    layout: impl AsRef<Path>,
) -> Result<Layout, WeightsError> {
    let layers = model.collect_prunable();
    let keys = torch_keys(model, &layers)?;
    let mut values = Vec::with_capacity(keys.len());
    for (key, Expected { tensor, .. }) in &keys {
        let key = key.clone();
        let data = bridge::to_data(tensor).map_err(|e| WeightsError::Tensor {
            path: weights.as_ref().to_path_buf(),
            key: key.clone(),
            reason: e.to_string(),
        })?;
        let data = data.convert_dtype(DType::F32);
        values.push((key, tensor.shape.to_vec(), data));
    }
    let views = values
        .iter()
        .map(|(key, shape, data)| {
            let view = safetensors::tensor::TensorView::new(
                safetensors::Dtype::F32,
                shape.clone(),
                data.as_bytes(),
            )
            .map_err(|e| WeightsError::Tensor {
                path: weights.as_ref().to_path_buf(),
                key: key.clone(),
                reason: e.to_string(),
            })?;
            Ok((key.clone(), view))
        })
        .collect::<Result<Vec<_>, WeightsError>>()?;
    let metadata = HashMap::from([("format".to_string(), "pt".to_string())]);
    let bytes =
        safetensors::serialize(views, Some(metadata)).map_err(|e| WeightsError::Tensor {
            path: weights.as_ref().to_path_buf(),
            key: String::new(),
            reason: e.to_string(),
        })?;
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| WeightsError::Io { path, source }
    };
    write_atomic(weights.as_ref(), &bytes).map_err(io(weights.as_ref()))?;

    let weight_key: HashMap<u64, &str> = keys
        .iter()
        .filter_map(|(k, e)| Some((e.tensor.param_id?, k.as_str())))
        .collect();
    let convs = layers
        .iter()
        .map(|l| {
            let name = weight_key
                .get(&l.weight_id.val())
                .map_or(l.name.as_str(), |k| k.trim_end_matches(".weight"))
                .to_string();
            let live = l
                .skeleton
                .clone()
                .into_data()
                .iter::<f32>()
                .filter(|v| *v != 0.0)
                .count();
            ConvEntry {
                name,
                weight: l.weight.dims().to_vec(),
                bias: l.bias.is_some(),
                stride: l.spec.stride,
                dilation: l.spec.dilation,
                groups: l.spec.groups,
                padding: PaddingEntry::from(&l.spec.padding),
                stripe_wise: l.stripe_wise,
                live_stripes: live,
            }
        })
        .collect();
    let description = Layout {
        format: "texprune-compact".into(),
        version: LAYOUT_VERSION,
        architecture: model.architecture(),
        convs,
        tensors: values.into_iter().map(|(k, s, _)| (k, s)).collect(),
    };
    let json = serde_json::to_string_pretty(&description).map_err(|e| WeightsError::Io {
        path: layout.as_ref().to_path_buf(),
        source: std::io::Error::other(e),
    })?;
    write_atomic(layout.as_ref(), json.as_bytes()).map_err(io(layout.as_ref()))?;
    Ok(description)
}
