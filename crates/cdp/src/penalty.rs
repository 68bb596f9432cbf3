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
    /// Layers of one shape are evaluated together, stacked along a leading dimension (a
    /// ResNet-56 has 57 prunable convs of 8 shapes): each term's per-layer values are the same,
    /// in a few large tensor operations per shape instead of a few small ones per layer.
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
        let needs_mass = active(c.skeleton_texture) || active(c.adaptive);
        let mut masses = Vec::new();
        for group in self.groups(layers) {
            let n = group.len();
            // `S [L, Cout, kh, kw]`.
            let s: Tensor<4> = stack(group.iter().map(|&i| layers[i].skeleton.clone()).collect());
            let cout = s.dims()[1];
            if active(c.weight_texture) {
                let w: Tensor<5> = stack(group.iter().map(|&i| layers[i].weight.clone()).collect());
                push(
                    Term::WeightTexture,
                    WeightTexture::masses(w).sum().mul_scalar(c.weight_texture),
                );
            }
            let mass = needs_mass.then(|| SkeletonTexture::masses(s.clone())); // [L]
            let l1 = s.clone().abs().sum_dims(&[1, 2, 3]).reshape([n]);
            if let (true, Some(mass)) = (active(c.skeleton_texture), &mass) {
                push(
                    Term::SkeletonTexture,
                    mass.clone().sum().mul_scalar(c.skeleton_texture),
                );
            }
            if active(c.l1) && !reference {
                push(Term::L1, l1.clone().sum().mul_scalar(c.l1));
            }
            if active(c.l2) {
                let l2 = safe_sqrt(s.clone().square().sum_dims(&[1, 2, 3]).reshape([n]));
                push(Term::L2, l2.sum().mul_scalar(c.l2));
            }
            if active(c.group) {
                let row_l1 = s.clone().abs().sum_dims(&[2, 3]).reshape([n, cout]);
                let group_norm = safe_sqrt(row_l1.square().sum_dim(1).reshape([n]));
                push(Term::Group, group_norm.sum().mul_scalar(c.group));
            }
            if let (true, Some(mass)) = (active(c.adaptive), mass) {
                let group_norm = if reference {
                    l1.clone()
                } else {
                    safe_sqrt(s.clone().square().sum_dims(&[2, 3]).reshape([n, cout]))
                        .sum_dim(1)
                        .reshape([n])
                };
                // A group's layers all have a history or none has (see `groups`).
                let previous: Option<Vec<Tensor<1>>> = group
                    .iter()
                    .map(|&i| self.history.get(i).cloned().flatten())
                    .collect();
                let term = match (c.history, previous) {
                    (true, Some(prev)) => {
                        let now = mass.clone().clamp_min(MIN_MASS);
                        let prev = Tensor::cat(prev, 0).clamp_min(MIN_MASS);
                        group_norm * (now.clone() / prev.clone()) + l1 * (prev / now)
                    }
                    _ => group_norm + l1,
                };
                push(Term::Adaptive, term.sum().mul_scalar(c.adaptive));
                let detached = mass.detach().inner();
                for (k, &i) in group.iter().enumerate() {
                    masses.push((i, detached.clone().slice(k..k + 1)));
                }
            }
        }
        masses.sort_by_key(|(i, _)| *i);
        let terms: Vec<(Term, Tensor<1>)> = terms
            .into_iter()
            .map(|(term, values)| (term, Tensor::cat(values, 0).sum()))
            .collect();
        let total = terms.iter().map(|(_, v)| v.clone()).reduce(|a, b| a + b)?;
        Some(Penalty {
            total,
            terms,
            masses: masses.into_iter().map(|(_, m)| m).collect(),
        })
    }

    /// The layers evaluated together, in order of first appearance: those of equal weight and
    /// skeleton shapes that alike have (or lack) a texture-mass history.
    fn groups(&self, layers: &[LayerParams]) -> Vec<Vec<usize>> {
        let mut keys: Vec<([usize; 4], [usize; 3], bool)> = Vec::new();
        let mut groups: Vec<Vec<usize>> = Vec::new();
        for (i, layer) in layers.iter().enumerate() {
            let has_history = self.history.get(i).is_some_and(Option::is_some);
            let key = (layer.weight.dims(), layer.skeleton.dims(), has_history);
            match keys.iter().position(|k| *k == key) {
                Some(g) => groups[g].push(i),
                None => {
                    keys.push(key);
                    groups.push(vec![i]);
                }
            }
        }
        groups
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

/// `tensors` stacked along a new leading dimension (a reshape for one tensor).
fn stack<const D: usize, const D2: usize>(mut tensors: Vec<Tensor<D>>) -> Tensor<D2> {
    if tensors.len() == 1 {
        let t = tensors.remove(0);
        let mut shape = [1; D2];
        shape[1..].copy_from_slice(&t.dims());
        return t.reshape(shape);
    }
    Tensor::stack(tensors, 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::{DType, Distribution};

    fn layer(shape: [usize; 4], seed: u64) -> LayerParams {
        let device = Device::default();
        device.seed(seed);
        let [o, _, kh, kw] = shape;
        let ad = device.clone().autodiff();
        let f64s = |t: Tensor<4>| {
            Tensor::from_data(t.into_data().convert::<f64>(), (&ad, DType::F64)).require_grad()
        };
        let weight = f64s(Tensor::random(
            shape,
            Distribution::Normal(0.0, 1.0),
            &device,
        ));
        let skeleton = f64s(Tensor::random(
            [o, kh, kw, 1],
            Distribution::Uniform(-1.0, 1.0),
            &device,
        ))
        .reshape([o, kh, kw]);
        // A leaf again after the reshape.
        let skeleton = Tensor::from_data(skeleton.into_data(), (&ad, DType::F64)).require_grad();
        LayerParams { weight, skeleton }
    }

    /// The gradient of `t` in `grads`, as numbers.
    fn grad<const D: usize>(t: &Tensor<D>, grads: &burn::tensor::Gradients) -> Vec<f64> {
        t.grad(grads).unwrap().into_data().iter::<f64>().collect()
    }

    fn scalar(t: Tensor<1>) -> f64 {
        t.into_data().iter::<f64>().next().unwrap()
    }

    /// Layers evaluated together (equal shapes stacked) give each term, the total and the
    /// masses of evaluating every layer on its own, in both formulas, before and after a commit.
    #[test]
    fn stacked_layers_give_what_layers_alone_give() {
        let shapes = [
            [4, 3, 3, 3],
            [4, 3, 3, 3],
            [6, 4, 1, 1],
            [4, 3, 3, 3],
            [6, 4, 1, 1],
        ];
        let layers: Vec<LayerParams> = shapes
            .iter()
            .zip(1..)
            .map(|(s, seed)| layer(*s, seed))
            .collect();
        for formula in [Formula::Corrected, Formula::Reference] {
            let config = CdpConfig::every_term(1e-2).with_formula(formula);
            let mut together = Cdp::new(config.clone()).unwrap();
            let mut alone: Vec<Cdp> = layers
                .iter()
                .map(|_| Cdp::new(config.clone()).unwrap())
                .collect();
            for step in 0..2 {
                let joint = together.evaluate(&layers).unwrap();
                let single: Vec<Penalty> = layers
                    .iter()
                    .zip(&alone)
                    .map(|(l, cdp)| cdp.evaluate(std::slice::from_ref(l)).unwrap())
                    .collect();
                let total: f64 = single.iter().map(|p| scalar(p.total.clone())).sum();
                let close = |a: f64, b: f64| (a - b).abs() <= 1e-12 * (1.0 + b.abs());
                assert!(
                    close(scalar(joint.total.clone()), total),
                    "{formula:?} step {step}"
                );
                for (k, (term, value)) in joint.terms.iter().enumerate() {
                    let sum: f64 = single.iter().map(|p| scalar(p.terms[k].1.clone())).sum();
                    assert_eq!(*term, single[0].terms[k].0);
                    assert!(
                        close(scalar(value.clone()), sum),
                        "{term:?} {formula:?} step {step}"
                    );
                }
                assert_eq!(joint.masses.len(), layers.len());
                for (m, p) in joint.masses.iter().zip(&single) {
                    assert!(close(scalar(m.clone()), scalar(p.masses[0].clone())));
                }
                // And the gradients of the total, with respect to every weight and skeleton.
                let joint_grads = joint.total.backward();
                let single_total = single
                    .iter()
                    .map(|p| p.total.clone())
                    .reduce(|a, b| a + b)
                    .unwrap();
                let single_grads = single_total.backward();
                for l in &layers {
                    let same =
                        |a: Vec<f64>, b: Vec<f64>| a.iter().zip(&b).all(|(x, y)| close(*x, *y));
                    assert!(
                        same(
                            grad(&l.weight, &joint_grads),
                            grad(&l.weight, &single_grads)
                        ),
                        "weight grad {formula:?}"
                    );
                    assert!(
                        same(
                            grad(&l.skeleton, &joint_grads),
                            grad(&l.skeleton, &single_grads)
                        ),
                        "skeleton grad {formula:?}"
                    );
                }
                together.commit(joint.masses);
                for (cdp, p) in alone.iter_mut().zip(single) {
                    cdp.commit(p.masses);
                }
            }
        }
    }
}
