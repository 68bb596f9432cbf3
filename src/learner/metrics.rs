//! The pruner's numbers as burn-train metrics: the CDP penalty and the live stripes.

use std::sync::Arc;

use burn::tensor::{ExecutionError, TensorReadError};
use burn::train::ClassificationOutput;
use burn::train::metric::state::{FormatOptions, NumericMetricState};
use burn::train::metric::{
    AccuracyInput, Adaptor, CerInput, ConfusionStatsInput, HammingScoreInput, ItemLazy, LossInput,
    Metric, MetricAttributes, MetricMetadata, MetricName, Numeric, NumericAttributes, NumericEntry,
    PerplexityInput, SerializedEntry, TopKAccuracyInput, WerInput,
};

use crate::StepSummary;

/// A training step's output: the task's output (loss, accuracy, … metrics; burn-train's
/// `ClassificationOutput` for a classifier) and the pruner's summary of the step (penalty, live
/// stripes metrics).
pub struct PrunedOutput<O = ClassificationOutput> {
    /// The task's output: its loss and what its metrics read.
    pub output: O,
    /// The pruner's numbers for this step (live counts: the masks the step ran with).
    pub summary: StepSummary,
}

impl<O: ItemLazy> ItemLazy for PrunedOutput<O> {
    fn sync(self) -> Result<Self, ExecutionError> {
        Ok(Self {
            output: self.output.sync()?,
            summary: self.summary,
        })
    }
}

/// burn-train's metric inputs, read from the task's output.
macro_rules! task_inputs {
    ($($input:ty),* $(,)?) => {$(
        impl<O: Adaptor<$input>> Adaptor<$input> for PrunedOutput<O> {
            fn adapt(&self) -> $input {
                self.output.adapt()
            }
        }
    )*};
}

task_inputs!(
    LossInput,
    AccuracyInput,
    TopKAccuracyInput,
    ConfusionStatsInput,
    HammingScoreInput,
    PerplexityInput,
    CerInput,
    WerInput,
);

/// [`PenaltyMetric`]'s input: the CDP penalty of a step.
pub struct PenaltyInput(pub f64);

impl<O> Adaptor<PenaltyInput> for PrunedOutput<O> {
    fn adapt(&self) -> PenaltyInput {
        PenaltyInput(self.summary.penalty)
    }
}

/// [`LiveStripesMetric`]'s input: live and total stripes of the thresholded layers.
pub struct LiveStripesInput {
    /// Stripes alive.
    pub live: u64,
    /// Stripes in all.
    pub total: u64,
}

impl<O> Adaptor<LiveStripesInput> for PrunedOutput<O> {
    fn adapt(&self) -> LiveStripesInput {
        LiveStripesInput {
            live: self.summary.live_stripes,
            total: self.summary.total_stripes,
        }
    }
}

/// One number per step, averaged over the epoch like burn-train's loss.
#[derive(Clone)]
struct Average {
    name: MetricName,
    unit: Option<&'static str>,
    precision: usize,
    state: NumericMetricState,
}

impl Average {
    fn new(name: &str, unit: Option<&'static str>, precision: usize) -> Self {
        Self {
            name: Arc::new(name.to_string()),
            unit,
            precision,
            state: NumericMetricState::default(),
        }
    }

    fn format(&self) -> FormatOptions {
        let format = FormatOptions::new(self.name.clone()).precision(self.precision);
        match self.unit {
            Some(unit) => format.unit(unit),
            None => format,
        }
    }

    fn update(&mut self, value: f64) -> SerializedEntry {
        self.state.update(value, 1);
        self.state.compute_update(self.format())
    }
}

macro_rules! average_metric {
    ($metric:ident, $input:ty, $value:expr, $name:literal, $unit:expr, $precision:literal,
     $higher:literal, $doc:literal) => {
        #[doc = $doc]
        #[derive(Clone)]
        pub struct $metric(Average);

        impl Default for $metric {
            fn default() -> Self {
                Self(Average::new($name, $unit, $precision))
            }
        }

        impl $metric {
            /// The metric, empty.
            pub fn new() -> Self {
                Self::default()
            }
        }

        impl Metric for $metric {
            type Input = $input;

            fn update(
                &mut self,
                input: &$input,
                _metadata: &MetricMetadata,
            ) -> Result<SerializedEntry, TensorReadError> {
                let value: fn(&$input) -> f64 = $value;
                Ok(self.0.update(value(input)))
            }

            fn compute(&mut self) -> Result<SerializedEntry, TensorReadError> {
                Ok(self.0.state.compute_final(self.0.format()))
            }

            fn clear(&mut self) {
                self.0.state.reset()
            }

            fn name(&self) -> MetricName {
                self.0.name.clone()
            }

            fn attributes(&self) -> MetricAttributes {
                NumericAttributes {
                    unit: self.0.unit.map(str::to_string),
                    higher_is_better: $higher,
                }
                .into()
            }
        }

        impl Numeric for $metric {
            fn value(&self) -> Option<NumericEntry> {
                Some(self.0.state.current_value())
            }

            fn running_value(&self) -> Option<NumericEntry> {
                Some(self.0.state.running_value())
            }

            fn final_value(&self) -> NumericEntry {
                self.0.state.final_value()
            }
        }
    };
}

average_metric!(
    PenaltyMetric,
    PenaltyInput,
    |input| input.0,
    "CDP penalty",
    None,
    4,
    false,
    "The CDP penalty per step, averaged over the epoch."
);

average_metric!(
    LiveStripesMetric,
    LiveStripesInput,
    |input| match input.total {
        0 => 100.0,
        total => 100.0 * input.live as f64 / total as f64,
    },
    "Live stripes",
    Some("%"),
    2,
    true,
    "Live stripes of the thresholded layers, in % of all, per step (averaged over the epoch)."
);
