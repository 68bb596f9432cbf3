//! Each layer's texture numbers as plain values, for the history, the sensitivity sweep and the
//! plots: the similarity `sim_f` of every filter to the layer's mean filter (METHOD §2) and the
//! fraction of live stripes.

use texprune_layer::Prunable;
use texprune_texture::WeightTexture;

/// One layer's texture numbers.
pub(crate) struct LayerTexture {
    pub name: String,
    pub similarity: Vec<f64>,
    pub live: f64,
}

pub(crate) fn textures<M: Prunable>(model: &M) -> Vec<LayerTexture> {
    model
        .collect_prunable()
        .iter()
        .map(|l| {
            let skeleton: Vec<f64> = l.skeleton.clone().into_data().iter::<f64>().collect();
            let live = skeleton.iter().filter(|v| **v != 0.0).count() as f64;
            let weight = l.weight.clone() * l.skeleton.clone().unsqueeze_dim(1);
            LayerTexture {
                name: l.name.clone(),
                similarity: WeightTexture::new(weight)
                    .similarity
                    .into_data()
                    .iter::<f64>()
                    .collect(),
                live: live / skeleton.len().max(1) as f64,
            }
        })
        .collect()
}

/// Mean and (population) standard deviation of `values`.
pub(crate) fn mean_std(values: &[f64]) -> (f64, f64) {
    let n = values.len().max(1) as f64;
    let mean = values.iter().sum::<f64>() / n;
    let var = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n;
    (mean, var.sqrt())
}
