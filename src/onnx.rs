//! A model — dense, masked or compacted, from the zoo or your own — written as an ONNX file
//! (cargo feature `onnx`), for ONNX Runtime, TensorRT, OpenVINO, tract and mobile runtimes:
//!
//! ```rust,no_run
//! # use texprune::burn::tensor::{Device, Tensor};
//! # use texprune::zoo::resnet::ResNetConfig;
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let device = Device::default();
//! # let model = ResNetConfig::cifar(20).init(&device)?;
//! let example = Tensor::<4>::zeros([1, 3, 32, 32], &device);
//! texprune::onnx::export(&model, example, |m, x| m.forward(x))?.save("resnet20.onnx")?;
//! # Ok(())
//! # }
//! ```
//!
//! The forward pass is recorded once on Burn's capture device (`burn-onnx`'s `OnnxExporter`,
//! opset 18) and lowered to standard ONNX operators, weights embedded, the batch axis dynamic,
//! the input named `input` and the output `output`. Each [`SkeletonConv2d`](crate::SkeletonConv2d)
//! is recorded as one `Conv` with a constant weight `W ⊙ S`, the BatchNorm it drives folded in
//! where the model calls [`forward_norm`](crate::SkeletonConv2d::forward_norm); a compacted conv
//! keeps only its live input channels and the bounding box of its live kernel positions
//! ([`ExportForm`]; docs/deployment.md has the forms measured in ONNX Runtime).
//!
//! Burn's own `BatchNorm` cannot be recorded as it is: in inference it moves its running
//! statistics to the input's device, and Burn 0.22 cannot move a tensor off a capture device,
//! even onto the same one. [`export`] keeps the running statistics on the model's own device
//! while the forward pass is recorded (they enter the file as constants) and leaves the model as
//! it found it.

use std::collections::HashMap;
use std::path::Path;

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param, ParamId};
use burn::tensor::Tensor;
use burn_onnx::export::{AxisSpec, ExportError, InputSpec, OnnxExporter};
use onnx_ir::ModelProto;
use protobuf::Message;
use thiserror::Error;

pub use texprune_layer::ExportForm;

/// Why a model could not be written as ONNX. Nothing is written when an export fails.
#[derive(Debug, Error)]
pub enum OnnxError {
    /// The example is not one input the model can take.
    #[error("the example cannot be exported: {0}")]
    Input(String),
    /// The forward pass uses an operation with no ONNX form.
    #[error(
        "the forward pass uses `{operation}`, which has no ONNX form in burn-onnx (operation {index} of the recorded graph)"
    )]
    Unsupported {
        /// Burn's name of the operation.
        operation: String,
        /// Its position in the recorded graph.
        index: usize,
    },
    /// The forward pass panicked while it was recorded.
    #[error("the forward pass failed while it was recorded: {0}")]
    Forward(String),
    /// The recorded graph could not be lowered or encoded.
    #[error("the recorded graph could not be written as ONNX: {0}")]
    Export(String),
    /// The file could not be written.
    #[error("cannot write `{path}`: {source}")]
    Io {
        /// The file.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
}

/// An ONNX model in memory, as [`export`] wrote it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OnnxModel {
    bytes: Vec<u8>,
}

impl OnnxModel {
    /// The serialized `ModelProto`.
    #[must_use]
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The serialized `ModelProto`, owned.
    #[must_use]
    pub fn into_bytes(self) -> Vec<u8> {
        self.bytes
    }

    /// Writes the model to `path` atomically (a temporary file renamed over it).
    ///
    /// # Errors
    /// [`OnnxError::Io`] when the file cannot be written; no file is left behind.
    pub fn save(&self, path: impl AsRef<Path>) -> Result<(), OnnxError> {
        let path = path.as_ref();
        crate::checkpoint::write_atomic(path, &self.bytes).map_err(|source| OnnxError::Io {
            path: path.display().to_string(),
            source,
        })
    }
}

/// Options of an export: the form of stripe-wise convs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OnnxExport {
    /// How a compacted conv is written ([`ExportForm::BoundingBox`] by default).
    pub form: ExportForm,
}

/// [`OnnxExport::default`]`.export(model, example, forward)`.
///
/// # Errors
/// As [`OnnxExport::export`].
pub fn export<M, F, const D: usize>(
    model: &M,
    example: Tensor<4>,
    forward: F,
) -> Result<OnnxModel, OnnxError>
where
    M: Module,
    F: Fn(&M, Tensor<4>) -> Tensor<D>,
{
    OnnxExport::default().export(model, example, forward)
}

impl OnnxExport {
    /// These options with stripe-wise convs written in `form`.
    #[must_use]
    pub fn with_form(mut self, form: ExportForm) -> Self {
        self.form = form;
        self
    }

    /// `forward(model, x)` recorded for inputs shaped like `example` `[N, C, H, W]` and written
    /// as ONNX (module documentation). The batch axis is dynamic in the
    /// [`ExportForm::BoundingBox`] form (the pass is recorded at `N` and `2N` and the two
    /// compared) and `N` in the [`ExportForm::Stripes`] form. Run it on a model in inference
    /// form (no autodiff); `model` is left as it was.
    ///
    /// # Errors
    /// - [`OnnxError::Input`]: an empty example, or one on an autodiff device;
    /// - [`OnnxError::Unsupported`]: an operation burn-onnx cannot lower;
    /// - [`OnnxError::Forward`]: the forward pass panics on the example;
    /// - [`OnnxError::Export`]: anything else the exporter reports.
    pub fn export<M, F, const D: usize>(
        &self,
        model: &M,
        example: Tensor<4>,
        forward: F,
    ) -> Result<OnnxModel, OnnxError>
    where
        M: Module,
        F: Fn(&M, Tensor<4>) -> Tensor<D>,
    {
        let dims = example.dims();
        if dims.contains(&0) {
            return Err(OnnxError::Input(format!("the example is empty: {dims:?}")));
        }
        if example.device().is_autodiff() {
            return Err(OnnxError::Input(
                "the example is on an autodiff device; export a model in inference form \
                 (`model.valid()` and a device without autodiff)"
                    .into(),
            ));
        }
        let state = FloatState::of(model);
        let record = |m: &M, x: Tensor<4>| {
            // The exporter's copy of `model` shares its running statistics with `model`: put them
            // back on the model's device for the forward pass (module documentation).
            state.restore(model);
            forward(m, x)
        };
        let exporter = OnnxExporter::new();
        let form = self.form;
        let result = texprune_layer::compact::check::quietly(|| {
            texprune_layer::with_export_form(form, || match form {
                ExportForm::BoundingBox => {
                    let twice = Tensor::cat(vec![example.clone(), example.clone()], 0);
                    let spec = InputSpec::new([
                        AxisSpec::dynamic("batch"),
                        AxisSpec::Static,
                        AxisSpec::Static,
                        AxisSpec::Static,
                    ]);
                    exporter.export_dynamic(model, example.clone(), twice, &[spec], record)
                }
                ExportForm::Stripes => exporter.export(model, example.clone(), record),
            })
        });
        state.restore(model);
        let onnx = match result {
            Err(panic) => return Err(OnnxError::Forward(panic)),
            Ok(Err(error)) => return Err(error.into()),
            Ok(Ok(onnx)) => onnx,
        };
        tidy(onnx.as_bytes()).map(|bytes| OnnxModel { bytes })
    }
}

impl From<ExportError> for OnnxError {
    fn from(error: ExportError) -> Self {
        match error {
            ExportError::UnsupportedOperation { operation, kind } => Self::Unsupported {
                operation: operation_name(&kind),
                index: operation,
            },
            other => Self::Export(other.to_string()),
        }
    }
}

/// The operation's name in burn-onnx's description of it: `Clamp` in
/// `NumericFloat(F32, Clamp(ClampOpIr { … }))` (the name before its `…Ir` record), else the
/// description up to its first `{`.
fn operation_name(kind: &str) -> String {
    let words: Vec<&str> = kind
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .collect();
    match words.iter().position(|w| w.ends_with("Ir")) {
        Some(i) if i > 0 => words[i - 1].to_string(),
        _ => kind.split('{').next().unwrap_or(kind).trim().to_string(),
    }
}

/// The exported protobuf with the input named `input`, the output `output`, initializers no
/// node reads removed (the skeletons and execution markers the conv weights were computed from,
/// and the running statistics the exporter copied), and texprune as the producer.
fn tidy(bytes: &[u8]) -> Result<Vec<u8>, OnnxError> {
    let parse = |e: protobuf::Error| OnnxError::Export(e.to_string());
    let mut model = ModelProto::parse_from_bytes(bytes).map_err(parse)?;
    model.producer_name = "texprune".into();
    model.producer_version = env!("CARGO_PKG_VERSION").into();
    let graph = model.graph.mut_or_insert_default();
    graph.name = "texprune".into();
    let mut renames = HashMap::new();
    for (values, name) in [(&mut graph.input, "input"), (&mut graph.output, "output")] {
        let many = values.len() > 1;
        for (k, value) in values.iter_mut().enumerate() {
            let new = if many {
                format!("{name}_{k}")
            } else {
                name.to_string()
            };
            renames.insert(std::mem::replace(&mut value.name, new.clone()), new);
        }
    }
    for node in &mut graph.node {
        for name in node.input.iter_mut().chain(node.output.iter_mut()) {
            if let Some(new) = renames.get(name) {
                name.clone_from(new);
            }
        }
    }
    let read: std::collections::HashSet<String> = graph
        .node
        .iter()
        .flat_map(|n| n.input.iter().cloned())
        .chain(graph.output.iter().map(|o| o.name.clone()))
        .collect();
    graph.initializer.retain(|i| read.contains(&i.name));
    // A `Pad`'s `constant_value` is a scalar (rank 0) in ONNX; burn-onnx writes it with shape
    // `[1]`, which ONNX Runtime accepts and tract rejects.
    let pad_values: std::collections::HashSet<String> = graph
        .node
        .iter()
        .filter(|n| n.op_type == "Pad")
        .filter_map(|n| n.input.get(2).cloned())
        .collect();
    for initializer in &mut graph.initializer {
        if pad_values.contains(&initializer.name) && initializer.dims == [1] {
            initializer.dims.clear();
        }
    }
    model.write_to_bytes().map_err(parse)
}

/// Every float tensor of a model (parameters and running statistics) by id, as it was before
/// the export moved the shared running statistics to the capture device.
struct FloatState {
    tensors: HashMap<ParamId, (Vec<usize>, Tensor<1>)>,
}

impl FloatState {
    fn of<M: Module>(model: &M) -> Self {
        struct Collect(HashMap<ParamId, (Vec<usize>, Tensor<1>)>);
        impl ModuleVisitor for Collect {
            fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
                let value = param.val();
                let dims = value.dims().to_vec();
                let flat = value.reshape([dims.iter().product::<usize>()]);
                self.0.insert(param.id, (dims, flat));
            }
        }
        let mut collect = Collect(HashMap::new());
        model.visit(&mut collect);
        Self { tensors: collect.0 }
    }

    /// Writes the saved tensors back through a copy of `model`: a running statistic shares its
    /// storage with every copy of the model (the exporter's included); a parameter does not,
    /// and the copy is dropped.
    fn restore<M: Module>(&self, model: &M) {
        struct Restore<'a>(&'a HashMap<ParamId, (Vec<usize>, Tensor<1>)>);
        impl ModuleMapper for Restore<'_> {
            fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
                match self.0.get(&param.id) {
                    Some((dims, flat)) => match <[usize; D]>::try_from(dims.as_slice()) {
                        Ok(shape) => Param::initialized(param.id, flat.clone().reshape(shape)),
                        Err(_) => param,
                    },
                    None => param,
                }
            }
        }
        let _ = model.clone().map(&mut Restore(&self.tensors));
    }
}

#[cfg(test)]
mod tests {
    use super::operation_name;

    #[test]
    fn an_unsupported_operation_is_named_by_its_operation() {
        let clamp = "NumericFloat(F32, Clamp(ClampOpIr { tensor: TensorIr { id: TensorId { \
                     value: 194 } }, min: Float(0.0), max: Float(6.0) }))";
        assert_eq!(operation_name(clamp), "Clamp");
        let erf = "Float(F32, Erf(UnaryOpIr { input: TensorIr { id: TensorId { value: 3 } } }))";
        assert_eq!(operation_name(erf), "Erf");
        let plain = "ReduceSum with F16 input in ONNX opset 18";
        assert_eq!(operation_name(plain), plain);
    }
}
