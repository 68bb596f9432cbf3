//! What compaction keeps, decided from the declaration and host copies of the skeletons, biases
//! and BatchNorms: no weight is read or built, so the budget controller can plan many masks per
//! step.
//!
//! The rule, layer by layer in declared order (METHOD §5):
//!
//! - a stripe `(f, i, j)` is *live* when `S[f, i, j] ≠ 0`, the conv's input is not identically
//!   zero and its output is used;
//! - output channel `f` is *silent* when it has no live stripe and no bias: the conv writes 0
//!   there and the norm and activation turn it into the constant `c_f = act(bn(0))_f`;
//! - a silent channel is removed, with its norm entries and its consumers' input slices, when
//!   the conv declares its consumers and `c_f = 0` — then the channel is exactly zero (DTC
//!   zeroes `γ_f, β_f` of dead filters, which gives `bn(0)_f = 0`). Every other channel is kept:
//!   a constant channel stays a channel, and a conv whose consumers are not declared (a residual
//!   stream, the model's output) keeps all of them. So compaction is exact whatever the state;
//! - a conv whose declared consumers are all convs without a live stripe is *unused*: its output
//!   is never read, so its stripes are dead too (a residual branch whose last conv is dead costs
//!   nothing: it adds the constant `bn_last(0)`, computed by the norm on a zero map);
//! - a conv left with no channel keeps one exactly-zero channel rather than a zero-width tensor;
//! - a grouped conv (depthwise included) keeps every output channel, and so does every conv
//!   that feeds one: filter `f` of a grouped conv reads the channels of its group only, so a
//!   channel removed on one side would shift the groups on the other. Its dead stripes go.

use std::collections::HashMap;

use crate::fold::{NormFold, host};
use crate::{ModelError, PrunableLayer, PrunableLayers};

/// Host copy of what the plan reads of one declared conv.
#[derive(Debug, Clone, PartialEq)]
pub struct LayerState {
    /// `S ≠ 0`, `[Cout, kh, kw]` row-major.
    pub stripes: Vec<bool>,
    /// `b_f ≠ 0` per filter (all false without a bias).
    pub bias: Vec<bool>,
    /// `c_f = act(bn(b_f))` per filter: the value of a silent channel after the norm and the
    /// activation.
    pub silent_value: Vec<f64>,
    /// Whether the conv has a coupled norm (whose `γ`, `β` DTC zeroes for dead filters).
    pub norm: bool,
}

impl LayerState {
    /// Reads `layer`'s skeleton, bias and norm (one device read each).
    ///
    /// # Errors
    /// [`ModelError::NonFinite`] when the skeleton, the bias or the norm's parameters hold NaN or
    /// infinite values.
    pub fn read(layer: &PrunableLayer) -> Result<Self, ModelError> {
        let non_finite = |what| ModelError::NonFinite {
            layer: layer.name.clone(),
            what,
        };
        let skeleton = host(layer.skeleton.clone().flatten(0, 2));
        if skeleton.iter().any(|v| !v.is_finite()) {
            return Err(non_finite("skeleton"));
        }
        let [cout, ..] = layer.weight_dims();
        let bias = match &layer.bias {
            Some((b, _)) => host(b.clone()),
            None => vec![0.0; cout],
        };
        let normed: Vec<f64> = match &layer.norm {
            Some(n) => {
                let values =
                    [&n.gamma, &n.beta, &n.running_mean, &n.running_var].map(|t| host(t.clone()));
                NormFold::of_values(values.each_ref().map(Vec::as_slice), n.epsilon, Some(&bias))
                    .shift
            }
            None => bias.clone(),
        };
        let silent_value: Vec<f64> = normed.iter().map(|&v| layer.activation.apply(v)).collect();
        if silent_value.iter().any(|v| !v.is_finite()) || bias.iter().any(|v| !v.is_finite()) {
            return Err(non_finite("bias or BatchNorm parameters"));
        }
        Ok(Self {
            stripes: skeleton.iter().map(|&v| v != 0.0).collect(),
            bias: bias.iter().map(|&v| v != 0.0).collect(),
            silent_value,
            norm: layer.norm.is_some(),
        })
    }

    /// This state under DTC masks: `stripes [Cout·kh·kw]` keeps a stripe, `alive [Cout]` a
    /// filter (a dead filter's coupled `γ`, `β` are zeroed, so its silent value is `act(0) = 0`
    /// when the layer has a norm).
    pub fn masked(&self, stripes: &[bool], alive: &[bool]) -> Self {
        Self {
            stripes: self
                .stripes
                .iter()
                .zip(stripes)
                .map(|(a, b)| *a && *b)
                .collect(),
            bias: self.bias.clone(),
            silent_value: self
                .silent_value
                .iter()
                .zip(alive)
                .map(|(&v, &a)| if a || !self.norm { v } else { 0.0 })
                .collect(),
            norm: self.norm,
        }
    }
}

/// What compaction keeps of one conv.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConvPlan {
    /// Kept output channels (original indices, ascending).
    pub kept: Vec<usize>,
    /// Kept input channels (original indices, ascending).
    pub inputs: Vec<usize>,
    /// Live stripes of the kept filters, `[kept, kh, kw]` row-major.
    pub live: Vec<bool>,
    /// Whether every kept channel is exactly zero after the norm and the activation.
    pub output_zero: bool,
    /// Whether the output is never read (see the module's rule).
    pub unused: bool,
}

impl ConvPlan {
    /// Number of live stripes.
    pub fn live_stripes(&self) -> usize {
        self.live.iter().filter(|&&l| l).count()
    }
}

/// What compaction keeps of every declared layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompactionPlan {
    /// Per declared conv.
    pub convs: Vec<ConvPlan>,
    /// Kept input rows of each declared linear layer (original indices, ascending).
    pub linears: Vec<Vec<usize>>,
}

/// Who reads whom in a declaration: the conv feeding each conv and each linear layer, resolved
/// from the declared names once ([`Wiring::resolve`]) and reused for every plan of that
/// declaration ([`CompactionPlan::with_wiring`]), as the budget controller's probes do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wiring {
    conv_producer: Vec<Option<usize>>,
    linear_producer: Vec<Option<usize>>,
    /// Conv consumers of each conv; `None` when a consumer is a linear layer (always reads).
    conv_consumers: Vec<Option<Vec<usize>>>,
    /// Convs whose output channels stay: grouped convs and the convs that feed one.
    fixed_channels: Vec<bool>,
}

fn declaration_error(message: String) -> ModelError {
    ModelError::Declaration(message)
}

impl Wiring {
    /// Resolves the declared consumer names, checking that each consumer is declared after its
    /// producer, has one producer, and takes that producer's channels.
    ///
    /// # Errors
    /// [`ModelError::Declaration`] for a layer read twice, an unknown reader, a reader declared
    /// before its producer, or channel counts that do not line up.
    pub fn resolve(layers: &PrunableLayers) -> Result<Self, ModelError> {
        let convs: Vec<&PrunableLayer> = layers.iter().collect();
        let linears = layers.linears();
        let conv_index: HashMap<&str, usize> = convs
            .iter()
            .enumerate()
            .map(|(i, l)| (l.name.as_str(), i))
            .collect();
        let linear_index: HashMap<&str, usize> = linears
            .iter()
            .enumerate()
            .map(|(i, l)| (l.name.as_str(), i))
            .collect();
        let mut wiring = Self {
            conv_producer: vec![None; convs.len()],
            linear_producer: vec![None; linears.len()],
            conv_consumers: vec![Some(Vec::new()); convs.len()],
            fixed_channels: convs.iter().map(|l| l.spec.groups > 1).collect(),
        };
        for (p, producer) in convs.iter().enumerate() {
            let [cout, ..] = producer.weight_dims();
            for name in &producer.consumers {
                let twice = |what: &str| {
                    declaration_error(format!(
                        "`{name}` is declared to read the channels of `{}` and of another {what}; \
                         a layer reads one conv's channels",
                        producer.name
                    ))
                };
                if let Some(&c) = conv_index.get(name.as_str()) {
                    if c <= p {
                        return Err(declaration_error(format!(
                            "`{}` feeds `{name}`, which is declared before it; declare layers \
                             in forward order",
                            producer.name
                        )));
                    }
                    let cin = convs[c].in_channels();
                    if cin != cout {
                        return Err(declaration_error(format!(
                            "`{}` feeds `{name}`, but `{name}` takes {cin} input channels and \
                             `{}` has {cout} filters",
                            producer.name, producer.name
                        )));
                    }
                    if wiring.conv_producer[c].replace(p).is_some() {
                        return Err(twice("conv"));
                    }
                    if let Some(list) = &mut wiring.conv_consumers[p] {
                        list.push(c);
                    }
                    if convs[c].spec.groups > 1 {
                        wiring.fixed_channels[p] = true;
                    }
                } else if let Some(&l) = linear_index.get(name.as_str()) {
                    let [d_in, _] = linears[l].weight.dims();
                    if !d_in.is_multiple_of(cout) {
                        return Err(declaration_error(format!(
                            "`{}` feeds `{name}`, whose {d_in} inputs are not a whole number of \
                             rows for each of its {cout} channels",
                            producer.name
                        )));
                    }
                    if wiring.linear_producer[l].replace(p).is_some() {
                        return Err(twice("conv"));
                    }
                    wiring.conv_consumers[p] = None;
                } else {
                    return Err(declaration_error(format!(
                        "`{}` feeds `{name}`, which is not a declared conv or linear layer",
                        producer.name
                    )));
                }
            }
        }
        Ok(wiring)
    }
}

impl CompactionPlan {
    /// The plan for `layers` in the states `states` (one per declared conv).
    ///
    /// # Errors
    /// [`ModelError::Declaration`] when the declaration is inconsistent (a layer read twice, an unknown
    /// reader, channel counts that do not line up) or `states` does not match `layers`.
    pub fn new(layers: &PrunableLayers, states: &[LayerState]) -> Result<Self, ModelError> {
        Self::with_wiring(layers, &Wiring::resolve(layers)?, states)
    }

    /// The plan for `layers` in the states `states`, with `wiring` resolved from `layers` before
    /// (no name is looked up again).
    ///
    /// # Errors
    /// [`ModelError::Declaration`] when `wiring` or `states` does not match `layers`.
    pub fn with_wiring(
        layers: &PrunableLayers,
        wiring: &Wiring,
        states: &[LayerState],
    ) -> Result<Self, ModelError> {
        Self::build(layers, wiring, states, 1)
    }

    /// [`with_wiring`](Self::with_wiring) with the channels each conv keeps rounded up to a
    /// multiple of `channel_multiple` (at most all of them): removable channels are kept back,
    /// lowest index first, until the count is a multiple. A channel kept back is exactly zero
    /// (or never read), so the model stays exact; its readers read it through zero-valued
    /// stripes. For runtimes whose convolutions are fastest on channel counts that are multiples
    /// of their vector width (ONNX Runtime's NCHWc layout: 8 with AVX2, 16 with AVX-512).
    fn build(
        layers: &PrunableLayers,
        wiring: &Wiring,
        states: &[LayerState],
        channel_multiple: usize,
    ) -> Result<Self, ModelError> {
        let convs: Vec<&PrunableLayer> = layers.iter().collect();
        if wiring.conv_producer.len() != convs.len()
            || wiring.linear_producer.len() != layers.linears().len()
            || states.len() != convs.len()
        {
            return Err(declaration_error(format!(
                "a plan of {} convs and {} linear layers was given the wiring of {} and {} and \
                 {} layer states",
                convs.len(),
                layers.linears().len(),
                wiring.conv_producer.len(),
                wiring.linear_producer.len(),
                states.len()
            )));
        }
        let mut unused = vec![false; convs.len()];
        loop {
            let plans = Self::forward(&convs, states, wiring, &unused, channel_multiple.max(1));
            let mut changed = false;
            for p in (0..convs.len()).rev() {
                let Some(consumers) = &wiring.conv_consumers[p] else {
                    continue;
                };
                let reads_nothing = |c: &usize| unused[*c] || plans[*c].live_stripes() == 0;
                if !unused[p] && !consumers.is_empty() && consumers.iter().all(reads_nothing) {
                    unused[p] = true;
                    changed = true;
                }
            }
            if !changed {
                let linears = layers
                    .linears()
                    .iter()
                    .zip(&wiring.linear_producer)
                    .map(|(linear, producer)| {
                        let [d_in, _] = linear.weight.dims();
                        match producer {
                            Some(p) => {
                                let area = d_in / convs[*p].weight_dims()[0];
                                plans[*p]
                                    .kept
                                    .iter()
                                    .flat_map(|&c| c * area..(c + 1) * area)
                                    .collect()
                            }
                            None => (0..d_in).collect(),
                        }
                    })
                    .collect();
                return Ok(Self {
                    convs: plans,
                    linears,
                });
            }
        }
    }

    /// One pass in declared order with the unused convs known.
    fn forward(
        convs: &[&PrunableLayer],
        states: &[LayerState],
        wiring: &Wiring,
        unused: &[bool],
        channel_multiple: usize,
    ) -> Vec<ConvPlan> {
        let mut plans: Vec<ConvPlan> = Vec::with_capacity(convs.len());
        for (index, (layer, state)) in convs.iter().zip(states).enumerate() {
            let [cout, _, kh, kw] = layer.weight_dims();
            let cin = layer.in_channels();
            let area = kh * kw;
            let (inputs, inputs_zero) = match wiring.conv_producer[index] {
                Some(p) => (plans[p].kept.clone(), plans[p].output_zero),
                None => ((0..cin).collect(), false),
            };
            let reads = !unused[index] && !inputs_zero;
            let live = |f: usize, k: usize| reads && state.stripes[f * area + k];
            let zero_after: Vec<bool> = (0..cout)
                .map(|f| {
                    let silent = (0..area).all(|k| !live(f, k)) && !state.bias[f];
                    silent && state.silent_value[f] == 0.0
                })
                .collect();
            let removable = !layer.consumers.is_empty() && !wiring.fixed_channels[index];
            let mut kept: Vec<usize> = (0..cout)
                .filter(|&f| !(removable && (unused[index] || zero_after[f])))
                .collect();
            if kept.is_empty() {
                kept.push(0);
            }
            if removable {
                let rounded = kept.len().div_ceil(channel_multiple) * channel_multiple;
                let back: Vec<usize> = (0..cout)
                    .filter(|f| kept.binary_search(f).is_err())
                    .take(rounded.min(cout) - kept.len())
                    .collect();
                kept.extend(back);
                kept.sort_unstable();
            }
            plans.push(ConvPlan {
                live: kept
                    .iter()
                    .flat_map(|&f| (0..area).map(move |k| (f, k)))
                    .map(|(f, k)| live(f, k))
                    .collect(),
                output_zero: kept.iter().all(|&f| zero_after[f]),
                unused: unused[index],
                inputs,
                kept,
            });
        }
        plans
    }

    /// The plan of `layers` as they are (reads every skeleton, bias and norm).
    ///
    /// # Errors
    /// What [`LayerState::read`] and [`CompactionPlan::new`] return.
    pub fn of(layers: &PrunableLayers) -> Result<Self, ModelError> {
        Self::rounded(layers, 1)
    }

    /// [`of`](Self::of) with the kept channels of each conv rounded up to a multiple of
    /// `channel_multiple` (see [`build`](Self::build)).
    ///
    /// # Errors
    /// What [`of`](Self::of) returns.
    pub fn rounded(layers: &PrunableLayers, channel_multiple: usize) -> Result<Self, ModelError> {
        let states = layers
            .iter()
            .map(LayerState::read)
            .collect::<Result<Vec<_>, _>>()?;
        Self::build(layers, &Wiring::resolve(layers)?, &states, channel_multiple)
    }
}
