//! What compaction keeps, decided from the declaration and host copies of the skeletons, biases
//! and BatchNorms: no weight is read or built, so the budget controller can plan many masks per
//! step.
//!
//! The rule (METHOD §5; docs/compaction.md states it with its exactness argument):
//!
//! - a stripe `(f, i, j)` is *live* when `S[f, i, j] ≠ 0`, some input channel of filter `f`'s
//!   group is not identically zero and the conv's output is used;
//! - output channel `f` is *silent* when it has no live stripe and no bias: the conv writes 0
//!   there and the norm and activation turn it into the constant `c_f = act(bn(0))_f` (DTC
//!   zeroes `γ_f, β_f` of dead filters, which gives `c_f = 0`); every other channel varies;
//! - **one rule for a channel**: a channel can go when what reaches each of its readers is a
//!   constant the reader absorbs exactly — zero, which every reader absorbs, or `c ≠ 0` read by
//!   a conv with one group and no padding (a 1×1 conv) that has a bias or a coupled norm, or by
//!   a linear layer with a bias: `c · Σ (W ⊙ S)` over the channel's weights is folded into the
//!   bias (into the norm's running mean, `μ ← μ − δ`, without one). Then every layer on the
//!   channel's path loses it: the producer's filter and norm entries, the readers' input slices;
//! - channels that go together form one *class*: a depthwise conv's channel `c` reads only its
//!   input channel `c`, so the two go together (the depthwise channel must be removable too —
//!   constants propagate through it: a dead depthwise filter, or one reading a zero channel, makes
//!   its channel the constant `act(bn(b))` whatever the input); a residual stream's channel `c`
//!   is channel `c` of every writer, and goes only when it is zero before the activation in every
//!   writer (the stream's readers absorb zero);
//! - a channel stays when a reader is not declared (the conv names no reader and is in no stream:
//!   its output goes somewhere the plan cannot see), when it is read by a grouped conv with more
//!   than one input channel per group (removing it would shift the groups) or written by one;
//! - a conv whose readers are all convs without a live stripe is *unused*: its output is never
//!   read, so its stripes are dead too and its channels go whatever their value (a residual
//!   branch whose last conv is dead costs nothing: it adds the constant `bn_last(0)`);
//! - a conv left with no channel keeps its first channel's class rather than a zero-width tensor.

use std::collections::HashMap;

use burn::nn::PaddingConfig2d;

use crate::fold::{NormFold, host};
use crate::{Activation, ModelError, PrunableLayer, PrunableLayers};

/// Whether `layer` pads its input on no side, whatever the input size: its output on a constant
/// input is constant.
fn unpadded(layer: &PrunableLayer) -> bool {
    match layer.spec.padding {
        PaddingConfig2d::Valid => true,
        PaddingConfig2d::Explicit(top, left, bottom, right) => top + left + bottom + right == 0,
        PaddingConfig2d::Same => layer.spec.kernel_size == [1, 1],
    }
}

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
    /// `bn(b_f)` per filter: the value of a silent channel before the activation (what a
    /// residual stream adds).
    pub silent_normed: Vec<f64>,
    /// `act(0)`: what a channel that is zero before the activation carries after it.
    pub activation_at_zero: f64,
    /// The norm's `γ_f / √(σ²_f + ε)` per filter (1 without a norm).
    pub scale: Vec<f64>,
    /// The activation after the norm.
    pub activation: Activation,
    /// For a conv without padding (whose output on a constant input is constant): `W ⊙ S`,
    /// `[Cout, Cin / groups, kh·kw]` row-major.
    pub taps: Option<Vec<f64>>,
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
        let (scale, normed): (Vec<f64>, Vec<f64>) = match &layer.norm {
            Some(n) => {
                let values =
                    [&n.gamma, &n.beta, &n.running_mean, &n.running_var].map(|t| host(t.clone()));
                let fold = NormFold::of_values(
                    values.each_ref().map(Vec::as_slice),
                    n.epsilon,
                    Some(&bias),
                );
                (fold.scale, fold.shift)
            }
            None => (vec![1.0; cout], bias.clone()),
        };
        let taps = unpadded(layer).then(|| {
            let folded = layer.weight.clone() * layer.skeleton.clone().unsqueeze_dim(1);
            host(folded.flatten(0, 3))
        });
        if taps
            .as_ref()
            .is_some_and(|t| t.iter().any(|v| !v.is_finite()))
        {
            return Err(non_finite("weight"));
        }
        let silent_value: Vec<f64> = normed.iter().map(|&v| layer.activation.apply(v)).collect();
        if silent_value.iter().any(|v| !v.is_finite()) || bias.iter().any(|v| !v.is_finite()) {
            return Err(non_finite("bias or BatchNorm parameters"));
        }
        Ok(Self {
            stripes: skeleton.iter().map(|&v| v != 0.0).collect(),
            bias: bias.iter().map(|&v| v != 0.0).collect(),
            silent_value,
            silent_normed: normed,
            activation_at_zero: layer.activation.apply(0.0),
            scale,
            activation: layer.activation,
            taps,
            norm: layer.norm.is_some(),
        })
    }

    /// This state under DTC masks: `stripes [Cout·kh·kw]` keeps a stripe, `alive [Cout]` a
    /// filter (a dead filter's coupled `γ`, `β` are zeroed, so its silent value is `act(0)`
    /// when the layer has a norm).
    pub fn masked(&self, stripes: &[bool], alive: &[bool]) -> Self {
        let dead_zeroed = |f: usize| !alive[f] && self.norm;
        let area = self.stripes.len() / alive.len().max(1);
        Self {
            stripes: self
                .stripes
                .iter()
                .zip(stripes)
                .map(|(a, b)| *a && *b)
                .collect(),
            bias: self.bias.clone(),
            silent_value: (0..self.silent_value.len())
                .map(|f| match dead_zeroed(f) {
                    true => self.activation_at_zero,
                    false => self.silent_value[f],
                })
                .collect(),
            silent_normed: (0..self.silent_normed.len())
                .map(|f| match dead_zeroed(f) {
                    true => 0.0,
                    false => self.silent_normed[f],
                })
                .collect(),
            activation_at_zero: self.activation_at_zero,
            scale: (0..self.scale.len())
                .map(|f| match dead_zeroed(f) {
                    true => 0.0,
                    false => self.scale[f],
                })
                .collect(),
            activation: self.activation,
            taps: self.taps.as_ref().map(|taps| {
                let per_filter = taps.len() / alive.len().max(1);
                taps.iter()
                    .enumerate()
                    .map(|(t, &v)| {
                        let (f, k) = (t / per_filter, t % area.max(1));
                        if stripes[f * area + k] { v } else { 0.0 }
                    })
                    .collect()
            }),
            norm: self.norm,
        }
    }
}

/// What compaction keeps of one conv.
#[derive(Debug, Clone, PartialEq)]
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
    /// `(input channel, c)`: removed input channels that carry the constant `c ≠ 0`, which the
    /// conv folds into its bias (or its norm's running mean).
    pub folded: Vec<(usize, f64)>,
}

impl ConvPlan {
    /// Number of live stripes.
    pub fn live_stripes(&self) -> usize {
        self.live.iter().filter(|&&l| l).count()
    }
}

/// What compaction keeps of one declared linear layer.
#[derive(Debug, Clone, PartialEq)]
pub struct LinearPlan {
    /// Kept input rows (original indices, ascending).
    pub rows: Vec<usize>,
    /// `(first row, rows, c)`: removed input channels (their `rows` rows from `first row`) that
    /// carry the constant `c ≠ 0`, folded into the bias.
    pub folded: Vec<(usize, usize, f64)>,
}

/// What compaction keeps of every declared layer.
#[derive(Debug, Clone, PartialEq)]
pub struct CompactionPlan {
    /// Per declared conv.
    pub convs: Vec<ConvPlan>,
    /// Per declared linear layer.
    pub linears: Vec<LinearPlan>,
}

/// Where part of a layer's input channels come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Source {
    /// A declared conv's output.
    Conv(usize),
    /// A residual stream (its channels are its writers').
    Stream(usize),
}

impl Source {
    /// The conv whose output channels this source is (a stream's: its first writer's).
    fn conv(self, streams: &[Vec<usize>]) -> usize {
        match self {
            Source::Conv(p) => p,
            Source::Stream(s) => streams[s][0],
        }
    }
}

/// Who reads a conv's output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reader {
    Conv(usize),
    Linear(usize),
    Stream,
}

/// Who reads whom in a declaration, resolved from the declared names once
/// ([`Wiring::resolve`]) and reused for every plan of that declaration
/// ([`CompactionPlan::with_wiring`]), as the budget controller's probes do: each layer's input
/// as a concatenation of sources, each conv's readers, and the classes of channels that can only
/// go together.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wiring {
    /// Input of each conv, in channel order (empty: not declared, every channel stays).
    conv_inputs: Vec<Vec<Source>>,
    /// Input of each linear layer.
    linear_inputs: Vec<Vec<Source>>,
    /// Readers of each conv (empty: the output leaves the declaration).
    readers: Vec<Vec<Reader>>,
    /// Writers of each stream.
    streams: Vec<Vec<usize>>,
    /// Whether each conv is a depthwise conv whose channels follow its input's.
    depthwise: Vec<bool>,
    /// Whether each conv can fold a constant input channel into its bias or norm.
    absorbs: Vec<bool>,
    /// Whether each linear layer has a bias (to fold a constant input channel into).
    linear_bias: Vec<bool>,
    /// Index of each conv's first output channel among all of them.
    offsets: Vec<usize>,
    /// The class of every output channel (`offsets[i] + f`).
    class: Vec<usize>,
    /// Whether each class must stay.
    fixed: Vec<bool>,
}

fn declaration_error(message: String) -> ModelError {
    ModelError::Declaration(message)
}

/// A declared layer that reads channels.
#[derive(Debug, Clone, Copy)]
enum Layer {
    Conv(usize),
    Linear(usize),
}

/// The input being resolved of each conv and linear layer.
struct Inputs {
    convs: Vec<Option<Vec<Source>>>,
    linears: Vec<Option<Vec<Source>>>,
}

impl Inputs {
    fn of(&mut self, layer: Layer) -> &mut Option<Vec<Source>> {
        match layer {
            Layer::Conv(c) => &mut self.convs[c],
            Layer::Linear(l) => &mut self.linears[l],
        }
    }
}

/// Union-find over channel indices.
struct Classes(Vec<usize>);

impl Classes {
    fn find(&mut self, mut a: usize) -> usize {
        while self.0[a] != a {
            self.0[a] = self.0[self.0[a]];
            a = self.0[a];
        }
        a
    }

    fn union(&mut self, a: usize, b: usize) {
        let (a, b) = (self.find(a), self.find(b));
        self.0[a.max(b)] = a.min(b);
    }
}

impl Wiring {
    /// Resolves the declared readers, concatenations and residual streams, checking them
    /// against the layers' shapes.
    ///
    /// # Errors
    /// [`ModelError::Declaration`] for an unknown name, a reader declared before a conv it reads,
    /// a layer with two inputs not declared as a concatenation, channel counts that do not line
    /// up, a stream writer that also feeds a layer, or a layer in two streams.
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
        let layer = |name: &str, role: &str| -> Result<Layer, ModelError> {
            if let Some(&c) = conv_index.get(name) {
                Ok(Layer::Conv(c))
            } else if let Some(&l) = linear_index.get(name) {
                Ok(Layer::Linear(l))
            } else {
                Err(declaration_error(format!(
                    "`{name}` {role}, but it is not a declared conv or linear layer"
                )))
            }
        };
        let conv = |name: &str, role: &str| match layer(name, role)? {
            Layer::Conv(c) => Ok(c),
            Layer::Linear(_) => Err(declaration_error(format!(
                "`{name}` {role}, but it is a linear layer, not a declared conv"
            ))),
        };
        let mut inputs = Inputs {
            convs: vec![None; convs.len()],
            linears: vec![None; linears.len()],
        };
        // Concatenations first: they say the whole input of their reader.
        for (reader, sources) in layers.concats() {
            let r = layer(reader, "is declared to read a concatenation")?;
            let sources = sources
                .iter()
                .map(|s| {
                    conv(
                        s,
                        &format!("is declared as part of the input of `{reader}`"),
                    )
                    .map(Source::Conv)
                })
                .collect::<Result<Vec<_>, _>>()?;
            if inputs.of(r).replace(sources).is_some() {
                return Err(declaration_error(format!(
                    "`{reader}` is declared to read two concatenations"
                )));
            }
        }
        // Streams: writers and readers.
        let mut streams: Vec<Vec<usize>> = Vec::new();
        let mut writer_of: Vec<Option<usize>> = vec![None; convs.len()];
        for (s, stream) in layers.streams().iter().enumerate() {
            let role = format!("is declared to write the residual stream `{}`", stream.name);
            let writers = stream
                .writers
                .iter()
                .map(|w| conv(w, &role))
                .collect::<Result<Vec<_>, _>>()?;
            let Some(&first) = writers.first() else {
                return Err(declaration_error(format!(
                    "the residual stream `{}` has no writer",
                    stream.name
                )));
            };
            let width = convs[first].weight_dims()[0];
            for &w in &writers {
                let cout = convs[w].weight_dims()[0];
                if cout != width {
                    return Err(declaration_error(format!(
                        "`{}` writes {cout} channels into the residual stream `{}`, whose \
                         writer `{}` writes {width}",
                        convs[w].name, stream.name, convs[first].name
                    )));
                }
                if writer_of[w].replace(s).is_some() {
                    return Err(declaration_error(format!(
                        "`{}` is declared to write two residual streams",
                        convs[w].name
                    )));
                }
            }
            for reader in &stream.readers {
                let role = format!("is declared to read the residual stream `{}`", stream.name);
                let r = layer(reader, &role)?;
                if inputs.of(r).replace(vec![Source::Stream(s)]).is_some() {
                    return Err(declaration_error(format!(
                        "`{reader}` reads the residual stream `{}` and another input; a layer \
                         reads one stream, one conv or one concatenation",
                        stream.name
                    )));
                }
            }
            streams.push(writers);
        }
        // `feeds`: a reader of one conv's whole output, unless a concatenation names it.
        for (p, producer) in convs.iter().enumerate() {
            for name in &producer.consumers {
                let r = layer(name, &format!("is declared to read `{}`", producer.name))?;
                if let Some(s) = writer_of[p] {
                    return Err(declaration_error(format!(
                        "`{}` writes the residual stream `{}` and feeds `{name}`; declare \
                         `{name}` a reader of the stream",
                        producer.name,
                        layers.streams()[s].name
                    )));
                }
                match inputs.of(r) {
                    None => *inputs.of(r) = Some(vec![Source::Conv(p)]),
                    Some(sources) if sources.contains(&Source::Conv(p)) => {}
                    Some(_) => {
                        return Err(declaration_error(format!(
                            "`{name}` is declared to read `{}` and another input; declare \
                             the concatenation it reads with `PrunableLayers::concat`",
                            producer.name
                        )));
                    }
                }
            }
        }
        let flatten = |inputs: Vec<Option<Vec<Source>>>| -> Vec<Vec<Source>> {
            inputs.into_iter().map(Option::unwrap_or_default).collect()
        };
        let conv_inputs = flatten(inputs.convs);
        let linear_inputs = flatten(inputs.linears);
        let width = |source: Source| convs[source.conv(&streams)].weight_dims()[0];
        let describe = |sources: &[Source]| -> String {
            let names: Vec<String> = sources
                .iter()
                .map(|&s| match s {
                    Source::Conv(p) => format!("`{}` ({})", convs[p].name, width(s)),
                    Source::Stream(k) => {
                        format!("the stream `{}` ({})", layers.streams()[k].name, width(s))
                    }
                })
                .collect();
            names.join(" + ")
        };
        // Shapes and order.
        let mut readers: Vec<Vec<Reader>> = vec![Vec::new(); convs.len()];
        for (c, sources) in conv_inputs.iter().enumerate() {
            let total: usize = sources.iter().map(|&s| width(s)).sum();
            let cin = convs[c].in_channels();
            if !sources.is_empty() && total != cin {
                return Err(declaration_error(format!(
                    "`{}` takes {cin} input channels, but it is declared to read {} = {total}",
                    convs[c].name,
                    describe(sources)
                )));
            }
            for &source in sources {
                if let Source::Conv(p) = source {
                    if p >= c {
                        return Err(declaration_error(format!(
                            "`{}` reads `{}`, which is declared after it; declare layers in \
                             forward order",
                            convs[c].name, convs[p].name
                        )));
                    }
                    readers[p].push(Reader::Conv(c));
                }
            }
        }
        for (l, sources) in linear_inputs.iter().enumerate() {
            let total: usize = sources.iter().map(|&s| width(s)).sum();
            let [d_in, _] = linears[l].weight.dims();
            if !sources.is_empty() && !d_in.is_multiple_of(total) {
                return Err(declaration_error(format!(
                    "`{}` takes {d_in} inputs, not a whole number of rows for each of the {total} \
                     channels of {}",
                    linears[l].name,
                    describe(sources)
                )));
            }
            for &source in sources {
                if let Source::Conv(p) = source {
                    readers[p].push(Reader::Linear(l));
                }
            }
        }
        for writers in &streams {
            for &w in writers {
                readers[w].push(Reader::Stream);
            }
        }
        Ok(Self::with_classes(
            layers,
            conv_inputs,
            linear_inputs,
            readers,
            streams,
        ))
    }

    /// The channel classes of a resolved wiring (see the module's rule).
    fn with_classes(
        layers: &PrunableLayers,
        conv_inputs: Vec<Vec<Source>>,
        linear_inputs: Vec<Vec<Source>>,
        readers: Vec<Vec<Reader>>,
        streams: Vec<Vec<usize>>,
    ) -> Self {
        let convs: Vec<&PrunableLayer> = layers.iter().collect();
        let mut offsets = Vec::with_capacity(convs.len());
        let mut total = 0;
        for layer in &convs {
            offsets.push(total);
            total += layer.weight_dims()[0];
        }
        let depthwise: Vec<bool> = convs.iter().map(|l| l.is_depthwise()).collect();
        let absorbs: Vec<bool> = convs
            .iter()
            .map(|l| l.spec.groups == 1 && unpadded(l) && (l.bias.is_some() || l.norm.is_some()))
            .collect();
        let mut classes = Classes((0..total).collect());
        let mut fixed_channel = vec![false; total];
        // The channel (of a conv's output) that input channel `c` of `sources` is.
        let width = |source: Source| convs[source.conv(&streams)].weight_dims()[0];
        let channel_of = |sources: &[Source], mut c: usize| -> usize {
            for &source in sources {
                let (p, width) = (source.conv(&streams), width(source));
                if c < width {
                    return offsets[p] + c;
                }
                c -= width;
            }
            unreachable!("the input widths were checked")
        };
        for (i, layer) in convs.iter().enumerate() {
            let [cout, ..] = layer.weight_dims();
            let own = offsets[i]..offsets[i] + cout;
            let sources = &conv_inputs[i];
            if depthwise[i] && !sources.is_empty() {
                for f in 0..cout {
                    classes.union(offsets[i] + f, channel_of(sources, f));
                }
            } else if layer.spec.groups > 1 {
                // Grouped: its channels and its inputs' stay.
                own.clone().for_each(|c| fixed_channel[c] = true);
                for c in 0..sources.iter().map(|&s| width(s)).sum() {
                    fixed_channel[channel_of(sources, c)] = true;
                }
            }
            if depthwise[i] && sources.is_empty() {
                own.clone().for_each(|c| fixed_channel[c] = true);
            }
            if readers[i].is_empty() {
                own.for_each(|c| fixed_channel[c] = true);
            }
        }
        for writers in &streams {
            let width = convs[writers[0]].weight_dims()[0];
            for &w in &writers[1..] {
                for c in 0..width {
                    classes.union(offsets[writers[0]] + c, offsets[w] + c);
                }
            }
        }
        let class: Vec<usize> = (0..total).map(|c| classes.find(c)).collect();
        let mut fixed = vec![false; total];
        for c in 0..total {
            fixed[class[c]] |= fixed_channel[c];
        }
        if let Some(only) = layers.only {
            let cout = convs.get(only).map_or(0, |l| l.weight_dims()[0]);
            let free: std::collections::HashSet<usize> =
                (0..cout).map(|f| class[offsets[only] + f]).collect();
            for (k, fixed) in fixed.iter_mut().enumerate() {
                *fixed |= !free.contains(&k);
            }
        }
        Self {
            conv_inputs,
            linear_inputs,
            readers,
            streams,
            depthwise,
            absorbs,
            linear_bias: layers.linears().iter().map(|l| l.bias).collect(),
            offsets,
            class,
            fixed,
        }
    }

    /// The channels that can only go together across several convs — a residual stream's
    /// channel in every writer, a depthwise conv's channel with its producer's — as
    /// `(declared conv, filter)` lists, one per such class (classes that must stay are left
    /// out). A pruner that masks a class whole (`PrunerConfig::coupled_channels`) is what lets
    /// compaction remove it.
    #[must_use]
    pub fn coupled_channels(&self) -> Vec<Vec<(usize, usize)>> {
        let mut members: HashMap<usize, Vec<(usize, usize)>> = HashMap::new();
        for i in 0..self.offsets.len() {
            for c in self.channels(i) {
                let class = self.class[c];
                if !self.fixed[class] {
                    members
                        .entry(class)
                        .or_default()
                        .push((i, c - self.offsets[i]));
                }
            }
        }
        let mut classes: Vec<(usize, Vec<(usize, usize)>)> = members
            .into_iter()
            .filter(|(_, m)| m.iter().any(|&(i, _)| i != m[0].0))
            .collect();
        classes.sort_unstable_by_key(|(class, _)| *class);
        classes.into_iter().map(|(_, m)| m).collect()
    }

    /// The output channels of conv `i`, as indices among all of them.
    fn channels(&self, i: usize) -> core::ops::Range<usize> {
        let end = self.offsets.get(i + 1).copied().unwrap_or(self.class.len());
        self.offsets[i]..end
    }

    /// The (conv, channel) of every input channel of `sources`, in order.
    fn input_channels(&self, sources: &[Source]) -> Vec<(usize, usize)> {
        sources
            .iter()
            .flat_map(|&source| {
                let p = source.conv(&self.streams);
                self.channels(p).map(move |c| (p, c - self.offsets[p]))
            })
            .collect()
    }
}

/// The input channels filter `f` of `layer` reads: those of its group.
fn group_inputs(layer: &PrunableLayer, f: usize) -> core::ops::Range<usize> {
    let groups = layer.spec.groups.max(1);
    let (cin_g, cout_g) = (
        layer.in_channels() / groups,
        layer.weight_dims()[0] / groups,
    );
    let group = f / cout_g.max(1);
    group * cin_g..(group + 1) * cin_g
}

/// What a channel carries after its conv, norm and activation.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Value {
    /// Varies with the input.
    Varies,
    /// This constant everywhere (0: exactly zero).
    Constant(f64),
}

impl Value {
    fn is_zero(self) -> bool {
        self == Value::Constant(0.0)
    }
}

/// The output of filter `f` of an unpadded conv whose inputs of its group are `inputs`: a
/// constant when they all are.
fn constant_output(
    state: &LayerState,
    taps: &[f64],
    f: usize,
    inputs: &[Value],
    area: usize,
) -> Value {
    let mut sum = 0.0;
    for (c, input) in inputs.iter().enumerate() {
        let Value::Constant(v) = *input else {
            return Value::Varies;
        };
        let start = (f * inputs.len() + c) * area;
        sum += v * taps[start..start + area].iter().sum::<f64>();
    }
    let value = state
        .activation
        .apply(state.silent_normed[f] + state.scale[f] * sum);
    match value.is_finite() {
        true => Value::Constant(value),
        false => Value::Varies,
    }
}

impl CompactionPlan {
    /// The plan for `layers` in the states `states` (one per declared conv).
    ///
    /// # Errors
    /// [`ModelError::Declaration`] when the declaration is inconsistent ([`Wiring::resolve`]) or
    /// `states` does not match `layers`.
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
    /// multiple of `channel_multiple` (at most all of them): removable channel classes are kept
    /// back, lowest index first, until every conv's count is a multiple. A channel kept back is
    /// read as it is, so the model stays exact. For runtimes whose convolutions are fastest on
    /// channel counts that are multiples of their vector width (ONNX Runtime's NCHWc layout: 8
    /// with AVX2, 16 with AVX-512).
    fn build(
        layers: &PrunableLayers,
        wiring: &Wiring,
        states: &[LayerState],
        channel_multiple: usize,
    ) -> Result<Self, ModelError> {
        let convs: Vec<&PrunableLayer> = layers.iter().collect();
        if wiring.conv_inputs.len() != convs.len()
            || wiring.linear_inputs.len() != layers.linears().len()
            || states.len() != convs.len()
        {
            return Err(declaration_error(format!(
                "a plan of {} convs and {} linear layers was given the wiring of {} and {} and \
                 {} layer states",
                convs.len(),
                layers.linears().len(),
                wiring.conv_inputs.len(),
                wiring.linear_inputs.len(),
                states.len()
            )));
        }
        let mut unused = vec![false; convs.len()];
        loop {
            let (live, values) = Self::values(&convs, states, wiring, &unused);
            let mut changed = false;
            for p in (0..convs.len()).rev() {
                let readers = &wiring.readers[p];
                let reads_nothing = |r: &Reader| match *r {
                    Reader::Conv(c) => unused[c] || !live[c].iter().any(|&l| l),
                    Reader::Linear(_) | Reader::Stream => false,
                };
                if !unused[p] && !readers.is_empty() && readers.iter().all(reads_nothing) {
                    unused[p] = true;
                    changed = true;
                }
            }
            if !changed {
                let removed = Self::removed(&convs, states, wiring, &unused, &values);
                let removed = Self::keep_back(&convs, wiring, removed, channel_multiple.max(1));
                return Ok(Self::assemble(
                    &convs, layers, wiring, &unused, &live, &values, &removed,
                ));
            }
        }
    }

    /// In declared order with the unused convs known: the live stripes of each conv and the
    /// value of each output channel.
    fn values(
        convs: &[&PrunableLayer],
        states: &[LayerState],
        wiring: &Wiring,
        unused: &[bool],
    ) -> (Vec<Vec<bool>>, Vec<Value>) {
        let mut values: Vec<Value> = Vec::with_capacity(wiring.class.len());
        let mut live_all = Vec::with_capacity(convs.len());
        for (index, (layer, state)) in convs.iter().zip(states).enumerate() {
            let [cout, _, kh, kw] = layer.weight_dims();
            let cin = layer.in_channels();
            let area = kh * kw;
            let sources = &wiring.conv_inputs[index];
            // A stream's channels count as varying (they are removed only when zero in every
            // writer, which the plan decides after this pass).
            let inputs: Vec<Value> = match sources.as_slice() {
                [] | [Source::Stream(_)] => vec![Value::Varies; cin],
                _ => wiring
                    .input_channels(sources)
                    .iter()
                    .map(|&(p, c)| values[wiring.offsets[p] + c])
                    .collect(),
            };
            let mut live = vec![false; cout * area];
            for f in 0..cout {
                let group_inputs = &inputs[group_inputs(layer, f)];
                let reads = !unused[index] && group_inputs.iter().any(|v| !v.is_zero());
                for k in 0..area {
                    live[f * area + k] = reads && state.stripes[f * area + k];
                }
                let silent = !live[f * area..(f + 1) * area].iter().any(|&l| l) && !state.bias[f];
                let value = state.silent_value[f];
                values.push(match (silent && value.is_finite(), &state.taps) {
                    (true, _) => Value::Constant(value),
                    // An unpadded conv on constant inputs: `act(bn(b + Σ_c v_c Σ_k (W ⊙ S)))`.
                    (false, Some(taps)) if !unused[index] => {
                        constant_output(state, taps, f, group_inputs, area)
                    }
                    _ => Value::Varies,
                });
            }
            live_all.push(live);
        }
        (live_all, values)
    }

    /// Which channel classes go (indexed by class; a class is the index of its first channel).
    fn removed(
        convs: &[&PrunableLayer],
        states: &[LayerState],
        wiring: &Wiring,
        unused: &[bool],
        values: &[Value],
    ) -> Vec<bool> {
        let mut removed: Vec<bool> = wiring.fixed.iter().map(|&f| !f).collect();
        for i in 0..convs.len() {
            let state = &states[i];
            for c in wiring.channels(i) {
                let f = c - wiring.offsets[i];
                let class = wiring.class[c];
                if !removed[class] {
                    continue;
                }
                let value = values[c];
                let ok = wiring.readers[i].iter().all(|reader| match *reader {
                    Reader::Stream => {
                        // Zero before the activation, and the activation keeps it zero.
                        value != Value::Varies
                            && state.silent_normed[f] == 0.0
                            && state.activation_at_zero == 0.0
                    }
                    _ if unused[i] => true,
                    // The depthwise channel reading it is in its class: it goes when that
                    // channel can (whatever this one carries, when its filter is dead).
                    Reader::Conv(r) if wiring.depthwise[r] => true,
                    Reader::Conv(r) => match value {
                        Value::Varies => false,
                        Value::Constant(v) => v == 0.0 || wiring.absorbs[r],
                    },
                    Reader::Linear(l) => match value {
                        Value::Varies => false,
                        Value::Constant(v) => v == 0.0 || wiring.linear_bias[l],
                    },
                });
                removed[class] = ok;
            }
        }
        // A conv keeps at least its first channel's class.
        for i in 0..convs.len() {
            let channels = wiring.channels(i);
            if channels.clone().all(|c| removed[wiring.class[c]]) {
                removed[wiring.class[channels.start]] = false;
            }
        }
        removed
    }

    /// `removed` with classes kept back until every conv keeps a multiple of `multiple`
    /// channels (or all of them).
    fn keep_back(
        convs: &[&PrunableLayer],
        wiring: &Wiring,
        mut removed: Vec<bool>,
        multiple: usize,
    ) -> Vec<bool> {
        if multiple == 1 {
            return removed;
        }
        loop {
            let mut changed = false;
            for i in 0..convs.len() {
                let channels = wiring.channels(i);
                let kept = channels
                    .clone()
                    .filter(|&c| !removed[wiring.class[c]])
                    .count();
                let target = kept.div_ceil(multiple) * multiple;
                let mut missing = target.min(channels.len()) - kept;
                for c in channels {
                    if missing == 0 {
                        break;
                    }
                    if removed[wiring.class[c]] {
                        removed[wiring.class[c]] = false;
                        missing -= 1;
                        changed = true;
                    }
                }
            }
            if !changed {
                return removed;
            }
        }
    }

    /// The per-layer plans from the removed classes.
    fn assemble(
        convs: &[&PrunableLayer],
        layers: &PrunableLayers,
        wiring: &Wiring,
        unused: &[bool],
        live: &[Vec<bool>],
        values: &[Value],
        removed: &[bool],
    ) -> Self {
        let kept_of = |i: usize| -> Vec<usize> {
            wiring
                .channels(i)
                .filter(|&c| !removed[wiring.class[c]])
                .map(|c| c - wiring.offsets[i])
                .collect()
        };
        // The kept input channels among `channels` (a layer's input, `(conv, channel)` each) and
        // the constants of the removed ones.
        let inputs_of = |channels: &[(usize, usize)]| -> (Vec<usize>, Vec<(usize, f64)>) {
            let mut kept = Vec::new();
            let mut folded = Vec::new();
            for (index, &(p, c)) in channels.iter().enumerate() {
                let channel = wiring.offsets[p] + c;
                if !removed[wiring.class[channel]] {
                    kept.push(index);
                } else if let Value::Constant(v) = values[channel]
                    && v != 0.0
                    && !unused[p]
                {
                    folded.push((index, v));
                }
            }
            (kept, folded)
        };
        let plans = convs
            .iter()
            .enumerate()
            .map(|(i, layer)| {
                let [_, _, kh, kw] = layer.weight_dims();
                let area = kh * kw;
                let kept = kept_of(i);
                let sources = &wiring.conv_inputs[i];
                let channels = wiring.input_channels(sources);
                let (inputs, folded) = match sources.as_slice() {
                    [] => ((0..layer.in_channels()).collect(), Vec::new()),
                    _ => inputs_of(&channels),
                };
                // A filter whose group keeps no input channel that varies computes nothing:
                // the constants it read are folded into the bias. (A stream's channels, and
                // undeclared inputs, count as varying.)
                let reads = |f: usize| match sources.as_slice() {
                    [Source::Conv(_), ..] => {
                        channels[group_inputs(layer, f)].iter().any(|&(p, c)| {
                            let channel = wiring.offsets[p] + c;
                            !removed[wiring.class[channel]] && !values[channel].is_zero()
                        })
                    }
                    _ => true,
                };
                ConvPlan {
                    live: kept
                        .iter()
                        .flat_map(|&f| {
                            let reads = reads(f);
                            (0..area).map(move |k| reads && live[i][f * area + k])
                        })
                        .collect(),
                    output_zero: kept
                        .iter()
                        .all(|&f| values[wiring.offsets[i] + f].is_zero()),
                    unused: unused[i],
                    // A depthwise conv reads its input channel by channel: nothing to fold.
                    folded: match wiring.depthwise[i] {
                        true => Vec::new(),
                        false => folded,
                    },
                    inputs,
                    kept,
                }
            })
            .collect();
        let linears = layers
            .linears()
            .iter()
            .zip(&wiring.linear_inputs)
            .map(|(linear, sources)| {
                let [d_in, _] = linear.weight.dims();
                if sources.is_empty() {
                    return LinearPlan {
                        rows: (0..d_in).collect(),
                        folded: Vec::new(),
                    };
                }
                let channels = wiring.input_channels(sources);
                let (kept, folded) = inputs_of(&channels);
                let area = d_in / channels.len();
                LinearPlan {
                    rows: kept
                        .iter()
                        .flat_map(|&c| c * area..(c + 1) * area)
                        .collect(),
                    folded: folded
                        .into_iter()
                        .map(|(c, v)| (c * area, area, v))
                        .collect(),
                }
            })
            .collect();
        Self {
            convs: plans,
            linears,
        }
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
