//! A plain-text renderer for burn-train's `Learner`: one line per epoch, with the epoch's value
//! of every registered metric for training and validation, e.g.
//!
//! ```text
//! epoch 1/3  train Loss 1.22  CDP penalty 10.2405  Live stripes 99.97 %  |  valid Loss 0.64  Accuracy 76.55 %
//! ```
//!
//! (the validation part when the run has validation metrics). burn-train's own text renderer
//! (`CliMetricsRenderer`, what `Learner` uses without its `tui` feature or off a terminal) prints
//! a `Debug` dump of its progress after every batch instead. Give this one to
//! `SupervisedTraining::renderer`.

use std::io::Write;
use std::sync::{Arc, Mutex};

use burn::train::logger::{EvaluationProgressLogger, TrainingProgressLogger};
use burn::train::metric::{MetricDefinition, MetricId};
use burn::train::renderer::{
    EvaluationName, MetricState, MetricsRenderer, MetricsRendererEvaluation,
    MetricsRendererTraining,
};

/// Where the lines go: standard output, or a shared buffer (a log, a test).
#[derive(Clone, Default)]
enum LineSink {
    /// Standard output.
    #[default]
    Stdout,
    /// Appended to this buffer.
    Buffer(Arc<Mutex<Vec<u8>>>),
}

/// A renderer for burn-train's `Learner` that writes one line per epoch: the epoch's value of
/// every registered metric, for training and (when the run has validation metrics) validation,
/// in place of burn-train's text renderer, which prints a `Debug` dump after every batch.
/// Give it to `SupervisedTraining::renderer`.
#[derive(Default)]
pub struct EpochLineRenderer {
    sink: LineSink,
    names: Vec<(MetricId, String)>,
    train: Vec<(MetricId, String)>,
    valid: Vec<(MetricId, String)>,
    epoch: usize,
    total_epochs: usize,
    in_valid: bool,
    /// An epoch's training ended and its line is not written yet.
    pending: bool,
}

impl EpochLineRenderer {
    /// Lines to standard output.
    pub fn new() -> Self {
        Self::default()
    }

    /// Lines appended to `buffer`.
    pub fn to_buffer(buffer: Arc<Mutex<Vec<u8>>>) -> Self {
        Self {
            sink: LineSink::Buffer(buffer),
            ..Self::default()
        }
    }

    fn write_line(&self, line: &str) {
        match &self.sink {
            LineSink::Stdout => println!("{line}"),
            LineSink::Buffer(buffer) => {
                // A poisoned buffer means a writer panicked; the lines are a log, keep going.
                let mut buffer = buffer.lock().unwrap_or_else(|e| e.into_inner());
                let _ = writeln!(buffer, "{line}");
            }
        }
    }

    /// Writes the pending epoch's line: after its validation, or, without one, when the next
    /// epoch starts or training ends.
    fn flush(&mut self) {
        if !self.pending {
            return;
        }
        self.pending = false;
        let mut line = format!(
            "epoch {}/{}  train {}",
            self.epoch,
            self.total_epochs,
            self.values(&self.train)
        );
        let valid = self.values(&self.valid);
        if !valid.is_empty() {
            line.push_str("  |  valid ");
            line.push_str(&valid);
        }
        self.write_line(&line);
    }

    /// The metrics of one split as `Name value` pairs, in registration order.
    fn values(&self, entries: &[(MetricId, String)]) -> String {
        self.names
            .iter()
            .filter_map(|(id, name)| {
                entries
                    .iter()
                    .find(|(e, _)| e == id)
                    .map(|(_, value)| format!("{name} {value}"))
            })
            .collect::<Vec<_>>()
            .join("  ")
    }

    fn record(entries: &mut Vec<(MetricId, String)>, state: MetricState) {
        let entry = match state {
            MetricState::Generic(entry) | MetricState::Numeric(entry, _) => entry,
        };
        let value = epoch_value(&entry.serialized_entry.formatted);
        match entries.iter_mut().find(|(id, _)| *id == entry.metric_id) {
            Some((_, v)) => *v = value,
            None => entries.push((entry.metric_id, value)),
        }
    }
}

/// The epoch's value in a metric's display text: burn-train formats numeric metrics as
/// `epoch <running value> - batch <current value>`; other texts are kept whole.
fn epoch_value(formatted: &str) -> String {
    match formatted.split_once(" - batch") {
        Some((epoch, _)) => epoch.trim_start_matches("epoch ").trim().to_string(),
        None => formatted.trim().to_string(),
    }
}

impl MetricsRendererTraining for EpochLineRenderer {
    fn update_train(&mut self, state: MetricState) {
        Self::record(&mut self.train, state);
    }

    fn update_valid(&mut self, state: MetricState) {
        Self::record(&mut self.valid, state);
    }
}

impl TrainingProgressLogger for EpochLineRenderer {
    fn start(
        &mut self,
        total_epochs: usize,
        starting_epoch: usize,
        _total_items: Option<usize>,
        _label: Option<&str>,
    ) {
        self.total_epochs = total_epochs;
        // `starting_epoch` is 1-based (the first epoch to run); `start_split` counts it in.
        self.epoch = starting_epoch.saturating_sub(1);
    }

    fn update_epoch(&mut self, _epoch: usize) {}

    fn start_split(&mut self, split: &str, _total_items: usize) {
        self.in_valid = split.eq_ignore_ascii_case("valid");
        if self.in_valid {
            self.valid.clear();
        } else {
            self.flush();
            self.train.clear();
            self.valid.clear();
            self.epoch += 1;
        }
    }

    fn update_split(&mut self, _items_processed: usize) {}

    fn end_split(&mut self) {
        if self.in_valid {
            self.flush();
        } else {
            self.pending = true;
        }
    }

    fn end(&mut self) {
        self.flush();
    }

    /// Per-step events ("Iteration"), not written: the lines are per epoch.
    fn log_event_training(&mut self, _event: String) {}
}

impl EvaluationProgressLogger for EpochLineRenderer {
    fn start_global_progress(&mut self, _total_tests: usize) {}

    fn start_test(&mut self, _name: &str, _total_items: usize) {}

    fn update_test_progress(&mut self, _items_processed: usize) {}

    fn end_test(&mut self) {}

    fn end_global_progress(&mut self) {}

    fn log_event_evaluation(&mut self, _event: String) {}
}

impl MetricsRendererEvaluation for EpochLineRenderer {
    fn update_test(&mut self, _name: EvaluationName, _state: MetricState) {}
}

impl MetricsRenderer for EpochLineRenderer {
    fn manual_close(&mut self) {}

    fn register_metric(&mut self, definition: MetricDefinition) {
        if !self.names.iter().any(|(id, _)| *id == definition.metric_id) {
            self.names
                .push((definition.metric_id, definition.name.to_string()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::epoch_value;

    #[test]
    fn the_epoch_value_is_read_from_burn_trains_text() {
        assert_eq!(epoch_value("epoch 0.532 - batch 0.611"), "0.532");
        assert_eq!(epoch_value("epoch 76.5 % - batch 80.0 %"), "76.5 %");
        assert_eq!(epoch_value("12.5"), "12.5");
    }
}
