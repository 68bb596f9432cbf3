//! A model's declaration as one pruning step sees it, collected once per step and shared by the
//! penalty, the gradient masks, the target controller and DTC.

use burn::tensor::{Tensor, Transaction};
use texprune_cdp::LayerParams;
use texprune_dtc::LayerMasks;
use texprune_layer::{Prunable, PrunableLayer, PrunableLayers};

use crate::PruneError;

/// The declared layers of a model at one step. Tensors are shared handles, so a snapshot copies
/// no parameter; it holds the graph of the step's forward pass, for the penalty's backward.
#[derive(Debug, Clone)]
pub(crate) struct Snapshot {
    /// Everything the model declares (what the cost probe plans).
    pub declaration: PrunableLayers,
    /// The pruner's layers: the declared convs less the exempt ones, in declared order (the
    /// index of the CDP history and the DTC masks).
    pub layers: Vec<PrunableLayer>,
    /// For each declared conv, its index among `layers` (None: exempt).
    pub index: Vec<Option<usize>>,
}

impl Snapshot {
    /// Collects `model`'s declaration once and selects the layers to prune: all but `exempt`
    /// and those declared [`not_pruned`](texprune_layer::PrunableLayer::not_pruned).
    /// Every name in `exempt` and `scaled` (the layer scales') must be one of `model`'s.
    ///
    /// # Errors
    /// [`PruneError::UnknownLayer`] when an exempt or scaled layer name is not one of `model`'s,
    /// [`PruneError::NoLayers`] when it declares no prunable layer left to prune.
    pub fn collect<M: Prunable>(
        model: &M,
        exempt: &[String],
        scaled: &[(String, f64)],
    ) -> Result<Self, PruneError> {
        let declaration = model.collect_prunable();
        if let Some(name) = exempt
            .iter()
            .chain(scaled.iter().map(|(name, _)| name))
            .find(|e| !declaration.iter().any(|l| &l.name == *e))
        {
            return Err(PruneError::unknown_layer(name.clone(), declaration.iter()));
        }
        let mut layers = Vec::new();
        let index = declaration
            .iter()
            .map(|l| {
                (l.pruned && !exempt.contains(&l.name)).then(|| {
                    layers.push(l.clone());
                    layers.len() - 1
                })
            })
            .collect();
        if layers.is_empty() {
            return Err(PruneError::NoLayers);
        }
        Ok(Self {
            declaration,
            layers,
            index,
        })
    }

    /// What the CDP penalty reads of each pruned layer.
    pub fn params(&self) -> Vec<LayerParams> {
        self.layers
            .iter()
            .map(|l| LayerParams {
                weight: l.weight.clone(),
                skeleton: l.skeleton.clone(),
            })
            .collect()
    }

    /// Stripes and filters of the thresholded layers.
    pub fn totals(&self) -> (u64, u64) {
        totals(&self.layers)
    }

    /// Live stripes and filters of the thresholded layers under `masks` (per layer index; a
    /// layer without masks is all alive), read in one transaction.
    pub fn live_counts<'a>(&self, masks: impl Fn(usize) -> Option<&'a LayerMasks>) -> (u64, u64) {
        let (mut unmasked_stripes, mut unmasked_filters) = (0, 0);
        let mut stripes = Vec::new();
        let mut filters = Vec::new();
        for (index, layer) in self
            .layers
            .iter()
            .enumerate()
            .filter(|(_, l)| l.thresholded)
        {
            match masks(index) {
                Some(m) => {
                    stripes.push(m.stripes.clone().int().sum());
                    filters.push(m.alive.clone().int().sum());
                }
                None => {
                    let (s, f) = totals(core::slice::from_ref(layer));
                    unmasked_stripes += s;
                    unmasked_filters += f;
                }
            }
        }
        if stripes.is_empty() {
            return (unmasked_stripes, unmasked_filters);
        }
        let data = Transaction::default()
            .register(Tensor::cat(stripes, 0).sum())
            .register(Tensor::cat(filters, 0).sum())
            .execute();
        let value = |i: usize| {
            data.get(i)
                .and_then(|d| d.iter::<f64>().next())
                .map_or(0, |v| v as u64)
        };
        (value(0) + unmasked_stripes, value(1) + unmasked_filters)
    }
}

/// Stripes and filters of the thresholded layers among `layers`.
fn totals(layers: &[PrunableLayer]) -> (u64, u64) {
    layers
        .iter()
        .filter(|l| l.thresholded)
        .map(|l| {
            let [cout, kh, kw] = l.skeleton.dims();
            ((cout * kh * kw) as u64, cout as u64)
        })
        .fold((0, 0), |(s, f), (a, b)| (s + a, f + b))
}
