//! The layers of a model that its declaration leaves out, found by walking its modules.
//!
//! A [`Prunable`] declaration lists the layers that pruning touches and that cost counts. A
//! module that holds parameters none of which is declared — a Burn `Conv2d`, a `Linear` or a
//! norm the declaration does not name, a [`SkeletonConv2d`](crate::SkeletonConv2d) left out —
//! is still part of the network: [`undeclared`] finds each one (Burn's module visitor gives its
//! path and type), so that cost reports count its parameters and say its FLOPs are unknown
//! (its input size is recorded only for declared convs), and a FLOPs or MACs target can refuse
//! to count a fraction of a network it cannot see whole.

use std::collections::HashSet;

use burn::module::{ModuleVisitor, Param, ParamId};
use burn::tensor::Tensor;
use serde::{Deserialize, Serialize};

use crate::{Prunable, PrunableLayers};

/// A module whose parameters the declaration does not mention.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UndeclaredLayer {
    /// Path of the module in the model (`blocks.0.conv`).
    pub name: String,
    /// The module's type (`Conv2d`, `BatchNorm`, `Linear`, …).
    pub module: String,
    /// Its parameters (a BatchNorm's `γ` and `β`, not its running statistics; a skeleton conv's
    /// weight and bias, not its skeleton).
    pub params: u64,
    /// Whether it holds a weight of rank ≥ 2 (a conv or a linear layer, whose FLOPs dominate):
    /// a FLOPs or MACs target cannot leave such a layer out.
    pub weighted: bool,
}

/// The modules of `model` that hold parameters of which `layers` (its declaration) declares
/// none, in the model's field order.
#[must_use]
pub fn undeclared<M: Prunable>(model: &M, layers: &PrunableLayers) -> Vec<UndeclaredLayer> {
    let mut declared: HashSet<ParamId> = HashSet::new();
    for layer in layers.iter() {
        declared.extend([layer.weight_id, layer.skeleton_id]);
        declared.extend(layer.bias.as_ref().map(|(_, id)| *id));
        if let Some(norm) = &layer.norm {
            declared.extend([
                norm.gamma_id,
                norm.beta_id,
                norm.running_mean_id,
                norm.running_var_id,
            ]);
        }
    }
    declared.extend(layers.linears().iter().map(|l| l.weight_id));
    let mut walk = Walk {
        declared: &declared,
        frames: vec![Frame::default()],
        found: Vec::new(),
    };
    model.visit(&mut walk);
    let root = walk.frames.pop().expect("the root frame stays");
    walk.close(root);
    walk.found
}

/// One field being walked: a module, a parameter, or a container of them. Burn's visitor
/// enters each field with the type of the struct that holds it, so a frame learns its own type
/// from its first field.
#[derive(Default)]
struct Frame {
    name: String,
    /// The module's type, from its fields' `enter_module` (empty for a parameter).
    module: String,
    /// Whether fields were entered below it (false: a parameter field).
    fields: bool,
    /// `(id, dims)` of each float tensor of the module, in field order.
    tensors: Vec<(ParamId, Vec<usize>)>,
}

struct Walk<'a> {
    declared: &'a HashSet<ParamId>,
    frames: Vec<Frame>,
    found: Vec<UndeclaredLayer>,
}

impl Walk<'_> {
    fn path(&self, last: &Frame) -> String {
        let names = self.frames.iter().chain([last]).map(|f| f.name.as_str());
        names
            .filter(|n| !n.is_empty())
            .collect::<Vec<_>>()
            .join(".")
    }

    /// Records `frame` (just left) when it holds parameters and none is declared.
    fn close(&mut self, frame: Frame) {
        if frame.tensors.is_empty()
            || frame
                .tensors
                .iter()
                .any(|(id, _)| self.declared.contains(id))
        {
            return;
        }
        let counted = frame
            .tensors
            .iter()
            .enumerate()
            .filter(|(index, (_, dims))| match frame.module.as_str() {
                // γ and β come first; the running statistics are not parameters.
                "BatchNorm" => *index < 2,
                "SkeletonConv2d" => dims.len() != 3,
                _ => true,
            });
        let params = counted.map(|(_, (_, dims))| dims.iter().product::<usize>() as u64);
        let found = UndeclaredLayer {
            name: match self.path(&frame) {
                path if path.is_empty() => "(model)".into(),
                path => path,
            },
            module: match frame.module.as_str() {
                "" => "model".into(),
                m => m.to_string(),
            },
            params: params.sum(),
            weighted: frame.tensors.iter().any(|(_, dims)| dims.len() >= 2),
        };
        self.found.push(found);
    }
}

impl ModuleVisitor for Walk<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let dims = param.lazy_shape().dims::<D>().to_vec();
        let frame = self.frames.last_mut().expect("the root frame stays");
        frame.tensors.push((param.id, dims));
    }

    fn enter_module(&mut self, name: &str, container_type: &str) {
        let parent = self.frames.last_mut().expect("the root frame stays");
        if !parent.fields {
            parent.fields = true;
            parent.module = container_type
                .strip_prefix("Struct:")
                .or_else(|| container_type.strip_prefix("Enum:"))
                .unwrap_or(container_type)
                .to_string();
        }
        self.frames.push(Frame {
            name: name.to_string(),
            ..Frame::default()
        });
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        if self.frames.len() < 2 {
            return;
        }
        let frame = self.frames.pop().expect("checked");
        // A parameter field, or a list of parameters: its tensors are the enclosing module's.
        let container = matches!(frame.module.as_str(), "Vec" | "Array" | "Tuple");
        if !frame.fields || container {
            let parent = self.frames.last_mut().expect("checked");
            parent.tensors.extend(frame.tensors);
        } else {
            self.close(frame);
        }
    }
}
