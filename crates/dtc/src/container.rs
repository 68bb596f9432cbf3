//! The container: one threshold vector and mask per thresholded layer, kept across steps.

use burn::tensor::{Bool, Device, Tensor, TensorData};
use serde::{Deserialize, Serialize};

use crate::config::{DtcConfig, DtcError, ThresholdRule};
use crate::masks::{
    alive_filters, filter_norms, filter_thresholds, global_thresholds, skeleton_norms,
    smallest_norm_thresholds, stripe_mask,
};

/// What a threshold rule reads of one layer.
#[derive(Debug, Clone)]
pub struct LayerValues {
    /// The skeleton `S [Cout, kh, kw]`.
    pub skeleton: Tensor<3>,
    /// The weight `W [Cout, Cin, kh, kw]`, which [`ThresholdRule::FilterNorm`] ranks by
    /// (without it, the skeleton alone: `‖S_f‖₁`).
    pub weight: Option<Tensor<4>>,
    /// This layer's multiplier of δ (1: the base threshold as it is).
    pub scale: f64,
}

impl LayerValues {
    /// The skeleton alone, scale 1.
    pub fn new(skeleton: Tensor<3>) -> Self {
        Self {
            skeleton,
            weight: None,
            scale: 1.0,
        }
    }

    /// With the layer's weight.
    pub fn with_weight(mut self, weight: Tensor<4>) -> Self {
        self.weight = Some(weight);
        self
    }

    /// With a multiplier of δ for this layer.
    pub fn with_scale(mut self, scale: f64) -> Self {
        self.scale = scale;
        self
    }
}

impl From<Tensor<3>> for LayerValues {
    fn from(skeleton: Tensor<3>) -> Self {
        Self::new(skeleton)
    }
}

/// The thresholds and masks of one layer after a step.
#[derive(Debug, Clone)]
pub struct LayerMasks {
    /// `T_f [Cout]`.
    pub thresholds: Tensor<1>,
    /// Live stripes `[Cout, kh, kw]`.
    pub stripes: Tensor<3, Bool>,
    /// Live filters `[Cout]`.
    pub alive: Tensor<1, Bool>,
}

/// Serialisable DTC state: the stripe masks in force. Thresholds are not stored: each step
/// recomputes them from the skeleton.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct DtcState {
    /// Per layer, `[Cout, kh, kw]` and the row-major stripe mask; `None` before the first step.
    pub layers: Vec<Option<(Vec<usize>, Vec<bool>)>>,
}

/// Per-filter thresholds and stripe masks for every thresholded layer (METHOD §4).
#[derive(Debug, Clone)]
pub struct ThresholdContainer {
    config: DtcConfig,
    layers: Vec<Option<LayerMasks>>,
}

impl ThresholdContainer {
    /// An empty container; fails on an invalid configuration.
    ///
    /// # Errors
    /// [`DtcError::InvalidThreshold`] when `config` does not pass [`DtcConfig::validate`].
    pub fn new(config: DtcConfig) -> Result<Self, DtcError> {
        config.validate()?;
        Ok(Self {
            config,
            layers: Vec::new(),
        })
    }

    /// This container with its thresholds and masks on `device` (a replica's device in
    /// data-parallel training).
    pub fn to_device(&self, device: &Device) -> Self {
        let layers = self
            .layers
            .iter()
            .map(|l| {
                l.as_ref().map(|m| LayerMasks {
                    thresholds: m.thresholds.clone().to_device(device),
                    stripes: m.stripes.clone().to_device(device),
                    alive: m.alive.clone().to_device(device),
                })
            })
            .collect();
        Self {
            config: self.config.clone(),
            layers,
        }
    }

    /// The configuration.
    pub fn config(&self) -> &DtcConfig {
        &self.config
    }

    /// Sets the base threshold δ for the following steps.
    ///
    /// # Errors
    /// [`DtcError::InvalidThreshold`] when `threshold` is negative or not finite.
    pub fn set_threshold(&mut self, threshold: f64) -> Result<(), DtcError> {
        let config = self.config.clone().with_threshold(threshold);
        config.validate()?;
        self.config = config;
        Ok(())
    }

    /// One DTC step for layer `index` with its current values (a skeleton `[Cout, kh, kw]`
    /// converts): recomputes its thresholds by the configured rule and its mask (and-ed with the
    /// mask in force) and returns them.
    pub fn update(&mut self, index: usize, values: impl Into<LayerValues>) -> &LayerMasks {
        let masks = self.preview(index, values, self.config.threshold);
        if self.layers.len() <= index {
            self.layers.resize(index + 1, None);
        }
        self.layers[index].insert(masks)
    }

    /// What [`ThresholdContainer::update`] would give layer `index` with base threshold `delta`,
    /// without changing the container.
    pub fn preview(&self, index: usize, values: impl Into<LayerValues>, delta: f64) -> LayerMasks {
        let values = values.into();
        let skeleton = values.skeleton.clone().detach().inner();
        let thresholds = self.thresholds(&values, delta);
        let mut stripes = stripe_mask(skeleton, thresholds.clone());
        if let Some(previous) = self.masks(index) {
            stripes = stripes.bool_and(previous.stripes.clone());
        }
        let alive = alive_filters(stripes.clone());
        LayerMasks {
            thresholds,
            stripes,
            alive,
        }
    }

    /// Per-filter thresholds `[Cout]` of one layer by the configured rule at base threshold
    /// `delta · values.scale`.
    pub fn thresholds(&self, values: &LayerValues, delta: f64) -> Tensor<1> {
        let skeleton = values.skeleton.clone().detach().inner();
        let delta = delta * values.scale;
        match self.config.rule {
            ThresholdRule::PerFilter => filter_thresholds(skeleton, delta),
            ThresholdRule::Global => global_thresholds(skeleton, delta),
            ThresholdRule::FilterNorm => {
                let norms = match &values.weight {
                    Some(weight) => filter_norms(weight.clone().detach().inner(), skeleton),
                    None => skeleton_norms(skeleton),
                };
                smallest_norm_thresholds(norms, delta)
            }
        }
    }

    /// Puts `masks` in force for layer `index` (masks from [`preview`](Self::preview) changed
    /// elsewhere, as [`couple_groups`](crate::couple_groups) does).
    pub fn set_masks(&mut self, index: usize, masks: LayerMasks) {
        if self.layers.len() <= index {
            self.layers.resize(index + 1, None);
        }
        self.layers[index] = Some(masks);
    }

    /// The masks of layer `index` in force, if it was updated or loaded.
    pub fn masks(&self, index: usize) -> Option<&LayerMasks> {
        self.layers.get(index).and_then(Option::as_ref)
    }

    /// The masks as plain data (reads the device).
    pub fn state(&self) -> DtcState {
        DtcState {
            layers: self
                .layers
                .iter()
                .map(|l| {
                    l.as_ref().map(|m| {
                        let data = m.stripes.to_data();
                        (data.shape().to_vec(), data.iter::<bool>().collect())
                    })
                })
                .collect(),
        }
    }

    /// Restores masks saved by [`ThresholdContainer::state`]. `skeletons` gives each layer's
    /// current skeleton (for its shape and device); thresholds are recomputed from it alone.
    ///
    /// # Errors
    /// [`DtcError::StateMismatch`] for a saved layer that has no skeleton in `skeletons`, another
    /// shape, or a mask of another length.
    pub fn load_state(
        &mut self,
        state: &DtcState,
        skeletons: &[Tensor<3>],
    ) -> Result<(), DtcError> {
        let mut layers = Vec::with_capacity(state.layers.len());
        for (layer, saved) in state.layers.iter().enumerate() {
            let Some((shape, mask)) = saved else {
                layers.push(None);
                continue;
            };
            let skeleton = skeletons.get(layer).map(|s| s.clone().detach().inner());
            let expected = skeleton
                .as_ref()
                .map(|s| s.dims().to_vec())
                .unwrap_or_default();
            if skeleton.is_none()
                || *shape != expected
                || mask.len() != shape.iter().product::<usize>()
            {
                return Err(DtcError::StateMismatch {
                    layer,
                    expected,
                    found: shape.clone(),
                });
            }
            let skeleton = skeleton.expect("checked above");
            let stripes = Tensor::<3, Bool>::from_data(
                TensorData::new(mask.clone(), shape.clone()),
                &skeleton.device(),
            );
            layers.push(Some(LayerMasks {
                thresholds: self.thresholds(&LayerValues::new(skeleton), self.config.threshold),
                alive: alive_filters(stripes.clone()),
                stripes,
            }));
        }
        self.layers = layers;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::{bools, tensor};

    #[test]
    fn a_pruned_stripe_stays_pruned() {
        let mut dtc = ThresholdContainer::new(DtcConfig::new().with_threshold(0.5)).unwrap();
        // Step 1: L1s 4, 1 → T = 0.3125, 1.25: row 1 (0.5, 0.5) dies.
        let s = tensor(vec![1.0, -3.0, 0.5, 0.5], [2, 1, 2]);
        assert_eq!(
            bools(dtc.update(0, s).stripes.clone()),
            vec![true, true, false, false]
        );
        // Step 2: row 1 grew back above its threshold, but stays pruned.
        let s = tensor(vec![1.0, -3.0, 5.0, 5.0], [2, 1, 2]);
        let m = dtc.update(0, s);
        assert_eq!(bools(m.stripes.clone()), vec![true, true, false, false]);
        assert_eq!(bools(m.alive.clone()), vec![true, false]);
    }

    #[test]
    fn one_by_one_kernels() {
        // 1×1: one stripe per filter; L1 = |s|; T_f = δ·mean/|s_f|: 0.5·2/1 = 1, 0.5·2/3 = 1/3.
        let mut dtc = ThresholdContainer::new(DtcConfig::new().with_threshold(0.5)).unwrap();
        let m = dtc.update(0, tensor(vec![1.0, -3.0], [2, 1, 1]));
        assert_eq!(bools(m.stripes.clone()), vec![false, true]);
    }

    #[test]
    fn the_baseline_rules_through_the_container() {
        // Global: |S| > 0.6 in every layer; the layer scale multiplies δ.
        let config = DtcConfig::new()
            .with_threshold(0.6)
            .with_rule(ThresholdRule::Global);
        let mut dtc = ThresholdContainer::new(config).unwrap();
        let s = tensor(vec![1.0, -0.5, 0.7, 0.65], [2, 1, 2]);
        let m = dtc.update(0, s.clone());
        assert_eq!(bools(m.stripes.clone()), vec![true, false, true, true]);
        let m = dtc.preview(1, LayerValues::new(s).with_scale(1.5), 0.6);
        assert_eq!(bools(m.stripes.clone()), vec![true, false, false, false]);
        // Filter norm: the weight decides, not the skeleton. ‖W_f ⊙ S_f‖₁ = 6, 0.5, 2 → δ = 0.5
        // removes ⌊1.5⌋ = 1 filter, the second, although its skeleton is the largest.
        let config = DtcConfig::new()
            .with_threshold(0.5)
            .with_rule(ThresholdRule::FilterNorm);
        let mut dtc = ThresholdContainer::new(config).unwrap();
        let w = tensor(vec![3.0, 3.0, 0.1, 0.1, 1.0, 1.0], [3, 1, 1, 2]);
        let s = tensor(vec![1.0, 1.0, 2.5, 2.5, 1.0, 1.0], [3, 1, 2]);
        let m = dtc.update(0, LayerValues::new(s.clone()).with_weight(w.clone()));
        assert_eq!(bools(m.alive.clone()), vec![true, false, true]);
        // δ set later keeps the rule; the removed filter stays removed.
        dtc.set_threshold(0.0).unwrap();
        assert_eq!(dtc.config().rule, ThresholdRule::FilterNorm);
        let m = dtc.update(0, LayerValues::new(s).with_weight(w));
        assert_eq!(bools(m.alive.clone()), vec![true, false, true]);
    }

    #[test]
    fn state_round_trips_and_checks_shapes() {
        let mut dtc = ThresholdContainer::new(DtcConfig::new().with_threshold(0.5)).unwrap();
        let s = tensor(vec![1.0, -3.0, 0.5, 0.5], [2, 1, 2]);
        dtc.update(0, s.clone());
        let state = dtc.state();
        assert_eq!(
            state.layers[0],
            Some((vec![2, 1, 2], vec![true, true, false, false]))
        );
        let mut restored = ThresholdContainer::new(DtcConfig::new().with_threshold(0.5)).unwrap();
        restored.load_state(&state, &[s]).unwrap();
        assert_eq!(restored.state(), state);
        let wrong = tensor(vec![1.0; 6], [3, 1, 2]);
        assert!(matches!(
            restored.load_state(&state, &[wrong]),
            Err(DtcError::StateMismatch { layer: 0, .. })
        ));
        assert!(DtcConfig::new().with_threshold(-0.1).validate().is_err());
    }
}
