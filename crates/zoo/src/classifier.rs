//! The one call training and evaluation loops need from any model of the zoo.

use burn::tensor::Tensor;

use crate::compact::{CompactResNet, CompactVgg};
use crate::resnet::ResNet;
use crate::vgg::Vgg;

/// A model mapping images `[batch, C, H, W]` to logits `[batch, classes]`.
pub trait Classifier {
    /// The logits.
    fn logits(&self, images: Tensor<4>) -> Tensor<2>;
}

macro_rules! classifier {
    ($($model:ty),*) => {
        $(impl Classifier for $model {
            fn logits(&self, images: Tensor<4>) -> Tensor<2> {
                self.forward(images)
            }
        })*
    };
}

classifier!(Vgg, ResNet, CompactVgg, CompactResNet);
