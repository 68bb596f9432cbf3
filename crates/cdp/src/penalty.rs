//! The penalty itself and its texture-mass history.

use burn::tensor::{Device, Tensor};
use serde::{Deserialize, Serialize};
use texprune_texture::{SkeletonTexture, WeightTexture, safe_sqrt};

use crate::config::{CdpConfig, CdpError, Formula};

/// Smallest texture mass a ratio divides by. A mass is a sum of similarities in `[0, 1]` and is
/// in practice far above this; the floor only keeps `T_{t-1} / T_t` finite in degenerate states.
const MIN_MASS: f64 = 1e-12;

/// The tensors of one prunable layer that the penalty reads.
#[derive(Debug, Clone)]
pub struct LayerParams {
    /// Conv weight `W [Cout, Cin, kh, kw]`.
    pub weight: Tensor<4>,
    /// Filter skeleton `S [Cout, kh, kw]`.
    pub skeleton: Tensor<3>,
}

/// One term of the penalty.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Term {
    /// `Σ_f sim(W_f, M)`.
    WeightTexture,
    /// `Σ_f sim(S_f, S̄)`.
    SkeletonTexture,
    /// `‖S‖₁`.
    L1,
    /// `‖S‖_F`.
    L2,
    /// `sqrt(Σ_f ‖S_f‖₁²)`.
    Group,
    /// `(T_t / T_{t-1}) · G + (T_{t-1} / T_t) · ‖S‖₁`.
    Adaptive,
}

/// The penalty of one evaluation.
#[derive(Debug, Clone)]
pub struct Penalty {
    /// The scalar to add to the loss, shape `[1]`, in the parameters' graph.
    pub total: Tensor<1>,
    /// Each active term with its coefficient applied, summed over layers.
    pub terms: Vec<(Term, Tensor<1>)>,
    /// Each layer's skeleton texture mass `T_t`, detached (what [`Cdp::commit`] stores);
    /// empty when the texture-adaptive term is off.
    pub masses: Vec<Tensor<1>>,
}

/// Serialisable CDP state: the texture-mass history, one entry per layer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct CdpState {
    /// `T_{t-1}` per layer; `None` before the first commit.
    pub history: Vec<Option<f64>>,
}

/// The CDP penalty with its per-layer texture-mass history.
#[derive(Debug, Clone)]
pub struct Cdp {
    config: CdpConfig,
    history: Vec<Option<Tensor<1>>>,
}

impl Cdp {
    /// A penalty with empty history; fails on an invalid configuration.
    ///
    /// # Errors
    /// [`CdpError::InvalidCoefficient`] when `config` does not pass [`CdpConfig::validate`].
    pub fn new(config: CdpConfig) -> Result<Self, CdpError> {
        config.validate()?;
        Ok(Self {
            config,
            history: Vec::new(),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &CdpConfig {
        &self.config
    }

    /// This penalty with its texture-mass history on `device` (a replica's device in
    /// data-parallel training).
    pub fn to_device(&self, device: &Device) -> Self {
        Self {
            config: self.config.clone(),
            history: self
                .history
                .iter()
                .map(|h| h.as_ref().map(|t| t.clone().to_device(device)))
                .collect(),
        }
    }

    /// Evaluates the penalty over `layers` without changing the history (METHOD §3).
    ///
    /// Returns `None` when no term is active (nothing to add to the loss): every coefficient is
    /// 0, or only `l1` is set under [`Formula::Reference`], which drops the L1 term.
    pub fn evaluate(&self, layers: &[LayerParams]) -> Option<Penalty> {
        let c = &self.config;
        let reference = c.formula == Formula::Reference;
        let active = |coef: f64| coef != 0.0;
        let mut terms: Vec<(Term, Vec<Tensor<1>>)> = Vec::new();
        let mut push =
            |term: Term, value: Tensor<1>| match terms.iter_mut().find(|(t, _)| *t == term) {
                Some((_, values)) => values.push(value),
                None => terms.push((term, vec![value])),
            };
        let mut masses = Vec::new();
        for (index, layer) in layers.iter().enumerate() {
            let s = layer.skeleton.clone();
            let cout = s.dims()[0];
            if active(c.weight_texture) {
                let mass = WeightTexture::new(layer.weight.clone()).mass();
                push(Term::WeightTexture, mass.mul_scalar(c.weight_texture));
            }
            let needs_mass = active(c.skeleton_texture) || active(c.adaptive);
            let mass = needs_mass.then(|| SkeletonTexture::new(s.clone()).mass());
            let l1 = s.clone().abs().sum();
            let row_l1 = || s.clone().abs().sum_dims(&[1, 2]).reshape([cout]);
            if let (true, Some(mass)) = (active(c.skeleton_texture), &mass) {
                push(
                    Term::SkeletonTexture,
                    mass.clone().mul_scalar(c.skeleton_texture),
                );
            }
            if active(c.l1) && !reference {
                push(Term::L1, l1.clone().mul_scalar(c.l1));
            }
            if active(c.l2) {
                push(
                    Term::L2,
                    safe_sqrt(s.clone().square().sum()).mul_scalar(c.l2),
                );
            }
            if active(c.group) {
                push(
                    Term::Group,
                    safe_sqrt(row_l1().square().sum()).mul_scalar(c.group),
                );
            }
            if let (true, Some(mass)) = (active(c.adaptive), mass) {
                let group = if reference {
                    l1.clone()
                } else {
                    safe_sqrt(s.clone().square().sum_dims(&[1, 2])).sum()
                };
                let previous = self.history.get(index).cloned().flatten();
                let term = match (c.history, previous) {
                    (true, Some(prev)) => {
                        let now = mass.clone().clamp_min(MIN_MASS);
                        let prev = prev.clamp_min(MIN_MASS);
                        group * (now.clone() / prev.clone()) + l1 * (prev / now)
                    }
                    _ => group + l1,
                };
                push(Term::Adaptive, term.mul_scalar(c.adaptive));
                masses.push(mass.detach().inner());
            }
        }
        let terms: Vec<(Term, Tensor<1>)> = terms
            .into_iter()
            .map(|(term, values)| (term, Tensor::cat(values, 0).sum()))
            .collect();
        let total = terms.iter().map(|(_, v)| v.clone()).reduce(|a, b| a + b)?;
        Some(Penalty {
            total,
            terms,
            masses,
        })
    }

    /// Stores the texture masses of an evaluation as `T_{t-1}` for the next one. Call once per
    /// training step, after the step that used the penalty.
    pub fn commit(&mut self, masses: Vec<Tensor<1>>) {
        if !masses.is_empty() {
            self.history = masses.into_iter().map(Some).collect();
        }
    }

    /// The history as plain numbers (reads the device).
    pub fn state(&self) -> CdpState {
        CdpState {
            history: self
                .history
                .iter()
                .map(|m| {
                    m.as_ref()
                        .map(|t| t.to_data().iter::<f64>().next().unwrap_or(f64::NAN))
                })
                .collect(),
        }
    }

    /// Restores a history saved by [`Cdp::state`] for a model with `layers` prunable layers,
    /// creating the tensors like `like` (device and float type).
    ///
    /// # Errors
    /// [`CdpError::StateMismatch`] when the state holds another number of layers than `layers`.
    pub fn load_state(
        &mut self,
        state: &CdpState,
        layers: usize,
        like: &Tensor<1>,
    ) -> Result<(), CdpError> {
        if !state.history.is_empty() && state.history.len() != layers {
            return Err(CdpError::StateMismatch {
                expected: layers,
                found: state.history.len(),
            });
        }
        let like = like.clone().detach().inner();
        self.history = state
            .history
            .iter()
            .map(|m| m.map(|v| like.clone().slice(0..1).full_like(v)))
            .collect();
        Ok(())
    }
}
