//! Writing masks into a model's parameters and gradients, by parameter id.

use std::collections::HashMap;

use burn::module::{ModuleMapper, Param, ParamId};
use burn::optim::GradientsParams;
use burn::tensor::{Bool, Tensor};
use texprune_dtc::alive_filters;
use texprune_layer::{Prunable, PrunableLayer};

use crate::PruneError;

/// `model` with stripe masks written into it as DTC writes them (METHOD §4): for each
/// `(layer name, stripes [Cout, kh, kw])`, the skeleton entries where `stripes` is false set to 0
/// and, when the layer has a coupled BatchNorm, `γ` and `β` of every filter left without a live
/// stripe (`alive_f = ∨_{i,j} stripes[f, i, j]`) set to 0. Layers not named are left as they are.
///
/// For masks that come from outside a [`Pruner`](crate::Pruner): a random pattern to time
/// compaction before training, a hand-made one, or masks another tool computed. The pruner, the
/// sensitivity sweep and this function write masks the same way.
///
/// # Errors
/// [`PruneError::UnknownLayer`] for a name that is not a prunable layer of `model`,
/// [`PruneError::MaskShape`] for a mask whose shape is not the layer's skeleton's; `model` is
/// not changed then.
pub fn apply_stripe_masks<M: Prunable>(
    model: M,
    masks: impl IntoIterator<Item = (String, Tensor<3, Bool>)>,
) -> Result<M, PruneError> {
    let layers = model.collect_prunable();
    let mut mapper = MaskMapper::default();
    for (name, stripes) in masks {
        let Some(layer) = layers.iter().find(|l| l.name == name) else {
            return Err(PruneError::unknown_layer(name, layers.iter()));
        };
        let (expected, found) = (layer.skeleton.dims(), stripes.dims());
        if expected != found {
            return Err(PruneError::MaskShape {
                name,
                expected,
                found,
            });
        }
        mapper.insert_stripes(layer, stripes);
    }
    Ok(model.map(&mut mapper))
}

/// Zeroes, in every parameter whose id it knows, the entries whose mask is false.
///
/// Masks are stored flattened and reshaped to the parameter, so one mapper serves skeletons
/// (`[Cout, kh, kw]`) and BatchNorm channels (`[Cout]`) alike.
#[derive(Default)]
pub(crate) struct MaskMapper {
    pub masks: HashMap<ParamId, Tensor<1, Bool>>,
}

impl MaskMapper {
    pub fn insert<const D: usize>(&mut self, id: ParamId, mask: Tensor<D, Bool>) {
        self.masks.insert(id, mask.flatten(0, D - 1));
    }

    /// Masks `layer` as DTC does (METHOD §4): `stripes [Cout, kh, kw]` on its skeleton and, when
    /// it has a coupled norm, the filter mask `alive [Cout]` on that norm's `γ` and `β`. The one
    /// way masks are written into a model: by the pruner, the benchmarks' random masks and the
    /// sensitivity sweep alike.
    pub fn insert_layer(
        &mut self,
        layer: &PrunableLayer,
        stripes: Tensor<3, Bool>,
        alive: Tensor<1, Bool>,
    ) {
        self.insert(layer.skeleton_id, stripes);
        if let Some(norm) = &layer.norm {
            self.insert(norm.gamma_id, alive.clone());
            self.insert(norm.beta_id, alive);
        }
    }

    /// [`MaskMapper::insert_layer`] with the filters alive that keep a stripe:
    /// `alive_f = ∨_{i,j} stripes[f, i, j]`.
    pub fn insert_stripes(&mut self, layer: &PrunableLayer, stripes: Tensor<3, Bool>) {
        let alive = alive_filters(stripes.clone());
        self.insert_layer(layer, stripes, alive);
    }
}

/// `t` with the entries where `mask` (flattened) is false set to 0, in `t`'s autodiff state.
fn zero_where_masked<const D: usize>(t: Tensor<D>, mask: &Tensor<1, Bool>) -> Tensor<D> {
    let (autodiff, require_grad) = (t.is_autodiff(), t.is_require_grad());
    let dims = t.dims();
    let inner = t.inner();
    let mask = mask.clone().to_device(&inner.device()).reshape(dims);
    let masked = inner.mask_fill(mask.bool_not(), 0.0);
    match (autodiff, require_grad) {
        (true, true) => masked.autodiff().require_grad(),
        (true, false) => masked.autodiff(),
        _ => masked,
    }
}

impl ModuleMapper for MaskMapper {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        match self.masks.get(&param.id) {
            Some(mask) => {
                let mask = mask.clone();
                param.map(|t| zero_where_masked(t, &mask))
            }
            None => param,
        }
    }
}

/// Zeroes the masked entries of the gradient of `id`, if it has one (NaN included), on the
/// gradient's device.
pub(crate) fn mask_gradient<const D: usize>(
    grads: &mut GradientsParams,
    id: ParamId,
    mask: &Tensor<D, Bool>,
) {
    if let Some(g) = grads.remove::<D>(id) {
        let mask = mask.clone().to_device(&g.device());
        grads.register(id, g.mask_fill(mask.bool_not(), 0.0));
    }
}

#[cfg(test)]
mod tests {
    use burn::module::Module;
    use burn::tensor::{Device, TensorData};
    use texprune_layer::Prunable;
    use texprune_zoo::vgg::{VggConfig, VggLayer};

    use super::*;

    /// `insert_stripes` masks the skeleton and the coupled BatchNorm as DTC does: a filter that
    /// keeps a stripe keeps its channel (γ, β untouched), one that keeps none loses it.
    #[test]
    fn stripes_mask_the_skeleton_and_the_channels_of_dead_filters() {
        let device = Device::default();
        let mut model = VggConfig::new(vec![VggLayer::Conv(3)])
            .with_input_size([4, 4])
            .init(&device)
            .unwrap();
        // β = 1 everywhere, so that a zeroed β is visible.
        model.norms[0].beta = model.norms[0].beta.clone().map(|b| b.ones_like());
        let layers = model.collect_prunable();
        let layer = layers.iter().next().unwrap();
        // Filter 0 keeps one stripe, filter 1 all nine, filter 2 none.
        let mut keep = vec![false; 27];
        keep[4] = true;
        keep[9..18].fill(true);
        let stripes =
            Tensor::<3, Bool>::from_data(TensorData::new(keep.clone(), [3, 3, 3]), &device);
        let mut mapper = MaskMapper::default();
        mapper.insert_stripes(layer, stripes);
        let masked = model.map(&mut mapper);

        let values = |t: Tensor<1>| -> Vec<f32> { t.into_data().iter::<f32>().collect() };
        let expected: Vec<f32> = keep.iter().map(|k| if *k { 1.0 } else { 0.0 }).collect();
        assert_eq!(
            values(masked.convs[0].skeleton.val().flatten(0, 2)),
            expected
        );
        assert_eq!(values(masked.norms[0].gamma.val()), [1.0, 1.0, 0.0]);
        assert_eq!(values(masked.norms[0].beta.val()), [1.0, 1.0, 0.0]);
    }
}
