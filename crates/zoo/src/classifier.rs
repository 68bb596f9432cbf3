//! The calls training and evaluation loops need from any model of the zoo.

use burn::tensor::Tensor;

use crate::mobilenet::MobileNetV2;
use crate::resnet::ResNet;
use crate::vgg::{Vgg, VggLayer};
use texprune_layer::ModelError;

/// A model mapping images `[batch, C, H, W]` to logits `[batch, classes]`.
pub trait Classifier {
    /// The logits.
    fn logits(&self, images: Tensor<4>) -> Tensor<2>;

    /// Whether images of shape `[batch, C, H, W]` fit the model: `Err` says what it expects.
    /// [`Classifier::logits`] on images that do not fit panics inside the backend; check once
    /// before a loop.
    ///
    /// # Errors
    /// [`ModelError::Input`] saying what the model expects.
    fn check_input(&self, shape: [usize; 4]) -> Result<(), ModelError>;
}

/// Every size positive and `C` the model's input channels.
fn check_images(shape: [usize; 4], channels: usize) -> Result<(), ModelError> {
    let [n, c, h, w] = shape;
    let reason = if n == 0 || h == 0 || w == 0 {
        "batch, height and width must be ≥ 1".to_string()
    } else if c != channels {
        format!("the model takes {channels} input channels, the images have {c}")
    } else {
        return Ok(());
    };
    Err(ModelError::Input {
        found: shape.to_vec(),
        reason,
    })
}

/// A VGG's classifier takes `C_last · (H >> pools) · (W >> pools)` features.
fn check_vgg(vgg: &Vgg, shape: [usize; 4]) -> Result<(), ModelError> {
    let channels = vgg.convs[0].weight_dims()[1];
    let features = vgg.classifier.weight.dims()[0];
    check_images(shape, channels)?;
    let pools = vgg
        .layers
        .iter()
        .filter(|l| **l == VggLayer::MaxPool)
        .count();
    let last = vgg.convs.last().map(|c| c.weight_dims()[0]);
    let [_, _, h, w] = shape;
    let (h, w) = (
        h.checked_shr(pools as u32).unwrap_or(0),
        w.checked_shr(pools as u32).unwrap_or(0),
    );
    let given = last.unwrap_or(channels) * h * w;
    if given == features {
        return Ok(());
    }
    Err(ModelError::Input {
        found: shape.to_vec(),
        reason: format!(
            "after {pools} 2×2 pools the classifier would get {given} features, it takes \
             {features} (the input size the model was built for)"
        ),
    })
}

impl Classifier for Vgg {
    fn logits(&self, images: Tensor<4>) -> Tensor<2> {
        self.forward(images)
    }

    fn check_input(&self, shape: [usize; 4]) -> Result<(), ModelError> {
        check_vgg(self, shape)
    }
}

impl Classifier for ResNet {
    fn logits(&self, images: Tensor<4>) -> Tensor<2> {
        self.forward(images)
    }

    /// Global average pooling takes any height and width.
    fn check_input(&self, shape: [usize; 4]) -> Result<(), ModelError> {
        check_images(shape, self.conv1.weight.dims()[1])
    }
}

impl Classifier for MobileNetV2 {
    fn logits(&self, images: Tensor<4>) -> Tensor<2> {
        self.forward(images)
    }

    /// Any size fits (global pooling before the classifier).
    fn check_input(&self, shape: [usize; 4]) -> Result<(), ModelError> {
        check_images(shape, self.stem.conv.in_channels())
    }
}

#[cfg(test)]
mod tests {
    use burn::tensor::{Device, Distribution};

    use super::*;
    use crate::resnet::ResNetConfig;
    use crate::vgg::VggConfig;

    #[test]
    fn inputs_that_do_not_fit_are_errors_and_those_that_fit_run() {
        let device = Device::default();
        let vgg = VggConfig::small().init(&device).unwrap();
        assert!(vgg.check_input([2, 1, 28, 28]).is_ok());
        let run =
            |shape: [usize; 4]| vgg.logits(Tensor::random(shape, Distribution::Default, &device));
        assert_eq!(run([2, 1, 28, 28]).dims(), [2, 10]);
        // 29 × 29 floors to the same features as 28 × 28 after three pools.
        assert!(vgg.check_input([1, 1, 29, 29]).is_ok());
        assert_eq!(run([1, 1, 29, 29]).dims(), [1, 10]);
        let err = vgg.check_input([2, 3, 28, 28]).unwrap_err().to_string();
        assert!(
            err.contains("1 input channels") && err.contains("have 3"),
            "{err}"
        );
        let err = vgg.check_input([2, 1, 32, 32]).unwrap_err().to_string();
        assert!(
            err.contains("2048 features") && err.contains("1152"),
            "{err}"
        );
        assert!(vgg.check_input([0, 1, 28, 28]).is_err());
        let resnet = ResNetConfig::cifar(8).init(&device).unwrap();
        assert!(resnet.check_input([1, 3, 17, 9]).is_ok());
        let odd = Tensor::random([1, 3, 17, 9], Distribution::Default, &device);
        assert_eq!(resnet.logits(odd).dims(), [1, 10]);
        assert!(resnet.check_input([1, 1, 32, 32]).is_err());
    }
}
