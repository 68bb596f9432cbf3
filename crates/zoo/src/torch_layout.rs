//! How a model is laid out in PyTorch: the PyTorch path of each module and, for the zoo, the
//! architecture, so that PyTorch weights can be read into the model and a compact model written
//! out for PyTorch to rebuild.

use burn::module::Module;
use serde::{Deserialize, Serialize};

use crate::mobilenet::MobileNetV2;
use crate::resnet::{ResNet, ResNetStyle};
use crate::vgg::{Vgg, VggLayer};

/// What a reader outside Rust needs, besides the tensors, to rebuild a zoo model's forward pass.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Architecture {
    /// A [`ResNet`]: blocks `layer{s}.{b}` with convs `conv1…`, BatchNorms `bn1…` and an optional
    /// projection `downsample.{0,1}`; `relu(branch(x) + shortcut(x))`, then average pool and `fc`.
    ResNet {
        /// CIFAR (3×3 stem) or ImageNet (7×7 stride-2 stem and 3×3 stride-2 max pool).
        style: ResNetStyle,
        /// Blocks in each stage.
        stage_blocks: Vec<usize>,
    },
    /// A [`Vgg`]: `features.N` conv + BatchNorm + ReLU or a 2×2 max pool per layer, then
    /// `classifier` on the flattened features.
    Vgg {
        /// The layer list.
        layers: Vec<VggLayer>,
    },
}

/// A model's modules as PyTorch names them.
///
/// A model whose Burn module paths already are its PyTorch class's attribute paths (fields
/// `conv1`, `bn1`, `fc`, …) implements it with no body: `impl TorchLayout for MyNet {}`.
/// Parameter names inside a module follow burn-store's PyTorch convention (BatchNorm `gamma`,
/// `beta` ↔ `weight`, `bias`; a linear weight transposed); a [`SkeletonConv2d`]'s skeleton is
/// the reference code's `FilterSkeleton`.
///
/// [`SkeletonConv2d`]: crate::SkeletonConv2d
pub trait TorchLayout: Module {
    /// `(Burn module path, PyTorch module path)` pairs for the modules PyTorch names
    /// differently, such as `("blocks.3.convs.0", "layer2.0.conv1")`; a path inside a listed
    /// module is renamed with it (the longest listed prefix wins). Empty by default.
    fn torch_names(&self) -> Vec<(String, String)> {
        Vec::new()
    }

    /// The architecture, for readers that rebuild the model's forward pass outside Rust
    /// (`None` by default: a reader gets the layers and their tensors only).
    fn architecture(&self) -> Option<Architecture> {
        None
    }
}

impl TorchLayout for ResNet {
    /// The reference code's and torchvision's names: `layer{s}.{b}.conv{k}`, `.bn{k}`,
    /// `.downsample.0` (conv) and `.downsample.1` (BatchNorm); the stem and `fc` keep theirs.
    fn torch_names(&self) -> Vec<(String, String)> {
        let mut names = Vec::new();
        for (i, block) in self.blocks.iter().enumerate() {
            let path = self.block_path(i);
            for k in 0..block.convs.len() {
                names.push((
                    format!("blocks.{i}.convs.{k}"),
                    format!("{path}.conv{}", k + 1),
                ));
                names.push((
                    format!("blocks.{i}.norms.{k}"),
                    format!("{path}.bn{}", k + 1),
                ));
            }
            if block.shortcut.is_some() {
                names.push((
                    format!("blocks.{i}.shortcut.conv"),
                    format!("{path}.downsample.0"),
                ));
                names.push((
                    format!("blocks.{i}.shortcut.norm"),
                    format!("{path}.downsample.1"),
                ));
            }
        }
        names
    }

    fn architecture(&self) -> Option<Architecture> {
        let style = if self.pool.is_some() {
            ResNetStyle::ImageNet
        } else {
            ResNetStyle::Cifar
        };
        Some(Architecture::ResNet {
            style,
            stage_blocks: self.stage_blocks.clone(),
        })
    }
}

impl TorchLayout for MobileNetV2 {
    /// torchvision's `mobilenet_v2` names: `features.0.{0,1}`, `features.N.conv.K[.0|.1]`,
    /// `features.18.{0,1}`, `classifier.1`.
    fn torch_names(&self) -> Vec<(String, String)> {
        self.torch_paths()
    }
}

impl TorchLayout for Vgg {
    /// The reference's `Sequential` indices: conv `features.N`, its BatchNorm `features.N+1`.
    fn torch_names(&self) -> Vec<(String, String)> {
        self.conv_indices()
            .into_iter()
            .enumerate()
            .flat_map(|(k, index)| {
                [
                    (format!("convs.{k}"), format!("features.{index}")),
                    (format!("norms.{k}"), format!("features.{}", index + 1)),
                ]
            })
            .collect()
    }

    fn architecture(&self) -> Option<Architecture> {
        Some(Architecture::Vgg {
            layers: self.layers.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mobilenet::MobileNetV2Config;
    use crate::resnet::ResNetConfig;
    use crate::vgg::VggConfig;
    use burn::tensor::Device;
    use texprune_layer::Prunable;

    /// Every declared layer's PyTorch name is the one `torch_names` gives its module: the two
    /// naming schemes of the zoo agree.
    #[test]
    fn declared_names_are_the_torch_names() {
        let device = Device::default();
        let resnet = ResNetConfig::resnet50()
            .with_base_width(Some(4))
            .init(&device)
            .unwrap();
        let names = resnet.torch_names();
        for layer in resnet.collect_prunable().iter() {
            if layer.name != "conv1" {
                assert!(
                    names.iter().any(|(_, t)| *t == layer.name),
                    "{}",
                    layer.name
                );
            }
        }
        assert!(names.contains(&(
            "blocks.0.shortcut.norm".into(),
            "layer1.0.downsample.1".into()
        )));
        let mobilenet = MobileNetV2Config::cifar()
            .with_width_mult(0.25)
            .init(&device)
            .unwrap();
        let names = mobilenet.torch_names();
        for layer in mobilenet.collect_prunable().iter() {
            for name in std::iter::once(&layer.name).chain(layer.norm.as_ref().map(|n| &n.name)) {
                assert!(names.iter().any(|(_, t)| t == name), "{name}");
            }
        }
        assert!(names.contains(&(
            "blocks.1.depthwise.conv".into(),
            "features.2.conv.1.0".into()
        )));
        let vgg = VggConfig::vgg11().init(&device).unwrap();
        let names = vgg.torch_names();
        assert_eq!(names[2], ("convs.1".into(), "features.4".into()));
        for layer in vgg.collect_prunable().iter() {
            assert!(
                names.iter().any(|(_, t)| *t == layer.name),
                "{}",
                layer.name
            );
        }
    }
}
