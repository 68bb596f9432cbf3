//! What a [`PrunedModel`](super::PrunedModel) trains its model on: the batch type and the task
//! loss, burn-train style.

use burn::nn::loss::CrossEntropyLossConfig;
use burn::tensor::Tensor;
use burn::train::ClassificationOutput;
use burn::train::metric::ItemLazy;
use texprune_data::ImageBatch;
use texprune_zoo::Classifier;

/// The task a model learns under burn-train's `Learner`: the batches it reads, the output of a
/// step (what burn-train's metrics read) and the task loss in it, to which the pruner adds the
/// CDP penalty.
///
/// Every [`Classifier`] has one: [`ImageBatch`]es, cross-entropy and burn-train's
/// `ClassificationOutput` (for the loss, accuracy, top-k, precision, recall and F-score
/// metrics). For another task, implement it on the model, for example with burn-train's
/// `RegressionOutput`:
///
/// ```rust,ignore
/// impl Task for MyRegressor {
///     type Batch = MyBatch;
///     type Output = RegressionOutput;
///     fn run(&self, batch: MyBatch) -> RegressionOutput {
///         let output = self.forward(batch.inputs);
///         let loss = MseLoss::new().forward(output.clone(), batch.targets.clone(), Reduction::Mean);
///         RegressionOutput { loss, output, targets: batch.targets }
///     }
///     fn loss(output: &RegressionOutput) -> Tensor<1> {
///         output.loss.clone()
///     }
/// }
/// ```
pub trait Task {
    /// One batch of the task.
    type Batch: Send + 'static;
    /// A step's output: the task loss and what the metrics read.
    type Output: ItemLazy + 'static;

    /// The model's output on `batch`, its task loss included.
    fn run(&self, batch: Self::Batch) -> Self::Output;

    /// The scalar task loss in `output` (tracked by autodiff in training).
    fn loss(output: &Self::Output) -> Tensor<1>;
}

/// Classification: logits of the images, cross-entropy against the labels.
impl<M: Classifier> Task for M {
    type Batch = ImageBatch;
    type Output = ClassificationOutput;

    fn run(&self, batch: ImageBatch) -> ClassificationOutput {
        let device = batch.images.device();
        let logits = self.logits(batch.images);
        let loss = CrossEntropyLossConfig::new()
            .init(&device)
            .forward(logits.clone(), batch.labels.clone());
        ClassificationOutput::new(loss, logits, batch.labels)
    }

    fn loss(output: &ClassificationOutput) -> Tensor<1> {
        output.loss.clone()
    }
}
