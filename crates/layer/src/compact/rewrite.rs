//! Writing a [`CompactionPlan`] into the model's own parameters, by parameter id: the compacted
//! model is the user's type with smaller tensors, its convs marked stripe-wise.

use std::collections::HashMap;

use burn::module::{ModuleMapper, Param, ParamId};
use burn::tensor::{Device, Int, Tensor, TensorData};

use super::plan::CompactionPlan;
use crate::PrunableLayers;

/// Replaces, in every parameter whose id it knows, the tensor by its compacted value, and sets
/// the execution markers it knows to stripe-wise (with fresh ids).
#[derive(Default)]
pub(crate) struct Rewrite {
    /// New values, flattened, with their shapes.
    floats: HashMap<ParamId, (Tensor<1>, Vec<usize>)>,
    /// Execution markers to set.
    markers: Vec<ParamId>,
}

impl Rewrite {
    fn insert<const D: usize>(&mut self, id: ParamId, value: Tensor<D>) {
        let dims = value.dims().to_vec();
        self.floats.insert(id, (value.flatten(0, D - 1), dims));
    }

    /// The rewrite that `plan` makes of `layers`.
    pub fn new(layers: &PrunableLayers, plan: &CompactionPlan) -> Self {
        let mut rewrite = Self::default();
        for (layer, conv) in layers.iter().zip(&plan.convs) {
            let device = layer.weight.device();
            let [cout, _, kh, kw] = layer.weight_dims();
            let kept = index_tensor(&conv.kept, &device);
            // W ⊙ S folded; the skeleton becomes the 0/1 indicator of the live stripes, so the
            // dense product W' ⊙ S' is still the masked model's weight.
            let folded_weight = layer.weight.clone() * layer.skeleton.clone().unsqueeze_dim(1);
            // The constants of removed input channels, `δ_f = Σ c · Σ_ij (W ⊙ S)[f, ch, i, j]`
            // (the plan folds only into one-group convs).
            let shift = (!conv.folded.is_empty()).then(|| {
                let (channels, constants): (Vec<usize>, Vec<f64>) =
                    conv.folded.iter().copied().unzip();
                let taps = folded_weight
                    .clone()
                    .select(1, index_tensor(&channels, &device))
                    .sum_dim(3)
                    .sum_dim(2)
                    .reshape([cout, channels.len()]);
                let constants = Tensor::<1>::from_data(
                    TensorData::new(
                        constants.iter().map(|&c| c as f32).collect(),
                        [channels.len()],
                    ),
                    (&device, layer.weight.dtype()),
                );
                (taps * constants.unsqueeze_dim(0))
                    .sum_dim(1)
                    .reshape([cout])
            });
            let weight = folded_weight.select(0, kept.clone());
            // A one-group conv loses its removed input channels; a depthwise conv reads one
            // channel per filter, and a grouped conv keeps all its channels (the plan's rule).
            let weight = match layer.spec.groups {
                1 => weight.select(1, index_tensor(&conv.inputs, &device)),
                _ => weight,
            };
            let live: Vec<f32> = conv.live.iter().map(|&l| f32::from(u8::from(l))).collect();
            let skeleton = Tensor::<3>::from_data(
                TensorData::new(live, [conv.kept.len(), kh, kw]),
                (&device, layer.skeleton.dtype()),
            );
            rewrite.insert(layer.weight_id, weight);
            rewrite.insert(layer.skeleton_id, skeleton);
            // The shift goes into the bias, or, without one, into the norm's running mean
            // (`bn(y + δ) = bn'(y)` with `μ' = μ − δ`).
            let mut shift_left = shift;
            if let Some((bias, id)) = &layer.bias {
                let bias = match shift_left.take() {
                    Some(delta) => bias.clone() + delta,
                    None => bias.clone(),
                };
                rewrite.insert(*id, bias.select(0, kept.clone()));
            }
            if let Some(norm) = &layer.norm {
                let mean = match shift_left.take() {
                    Some(delta) => norm.running_mean.clone() - delta,
                    None => norm.running_mean.clone(),
                };
                for (value, id) in [
                    (&norm.gamma, norm.gamma_id),
                    (&norm.beta, norm.beta_id),
                    (&mean, norm.running_mean_id),
                    (&norm.running_var, norm.running_var_id),
                ] {
                    rewrite.insert(id, value.clone().select(0, kept.clone()));
                }
            }
            rewrite.markers.push(layer.execution_id);
        }
        for (linear, planned) in layers.linears().iter().zip(&plan.linears) {
            let device = linear.weight.device();
            let [_, d_out] = linear.weight.dims();
            if let Some((bias, id)) = &linear.bias_param
                && !planned.folded.is_empty()
            {
                // `b_o += c · Σ_rows W[row, o]` over each removed constant channel's rows.
                let mut bias = bias.clone();
                for &(first, rows, constant) in &planned.folded {
                    let rows = linear.weight.clone().slice([first..first + rows, 0..d_out]);
                    bias = bias + rows.sum_dim(0).reshape([d_out]) * constant;
                }
                rewrite.insert(*id, bias);
            }
            rewrite.insert(
                linear.weight_id,
                linear
                    .weight
                    .clone()
                    .select(0, index_tensor(&planned.rows, &device)),
            );
        }
        rewrite
    }
}

impl ModuleMapper for Rewrite {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        match self.floats.remove(&param.id) {
            Some((value, dims)) => {
                let shape: [usize; D] = core::array::from_fn(|i| dims[i]);
                param.map(|_| value.reshape(shape))
            }
            None => param,
        }
    }

    fn map_int<const D: usize>(&mut self, param: Param<Tensor<D, Int>>) -> Param<Tensor<D, Int>> {
        if !self.markers.contains(&param.id) {
            return param;
        }
        let marker = param.val().ones_like();
        Param::initialized(ParamId::new(), marker)
    }
}

/// Indices as an int tensor on `device`.
fn index_tensor(indices: &[usize], device: &Device) -> Tensor<1, Int> {
    let idx: Vec<i64> = indices.iter().map(|&i| i as i64).collect();
    Tensor::from_data(TensorData::new(idx, [indices.len()]), device)
}
