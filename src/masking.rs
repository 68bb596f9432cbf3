//! Writing masks into a model's parameters and gradients, by parameter id.

use std::collections::HashMap;

use burn::module::{ModuleMapper, Param, ParamId};
use burn::optim::GradientsParams;
use burn::tensor::{Bool, Tensor};

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
