//! How a convolution slides over its input, with the semantics of Burn's `Conv2d`.

use burn::nn::PaddingConfig2d;
use burn::tensor::ops::ConvOptions;

/// The hyper-parameters of a 2-D convolution besides its channels: kernel size, stride,
/// dilation, groups and padding, as Burn's `Conv2d` has them.
///
/// With `groups = g` the `Cin` input and `Cout` output channels split into `g` groups, filter
/// `f` reading only the `Cin / g` input channels of its group (`g = Cin = Cout`: a depthwise
/// conv); the weight is `[Cout, Cin / g, kh, kw]`. With dilation `d` the kernel taps sit `d`
/// apart: tap `(i, j)` reads input row `s·y − p_top + d·i`.
#[derive(Debug, Clone, PartialEq)]
pub struct ConvSpec {
    /// `[kh, kw]`.
    pub kernel_size: [usize; 2],
    /// `[sh, sw]`.
    pub stride: [usize; 2],
    /// `[dh, dw]`.
    pub dilation: [usize; 2],
    /// Channel groups.
    pub groups: usize,
    /// Zero padding.
    pub padding: PaddingConfig2d,
}

impl ConvSpec {
    /// A conv of `kernel_size` with stride 1, no dilation, one group and no padding.
    #[must_use]
    pub fn new(kernel_size: [usize; 2]) -> Self {
        Self {
            kernel_size,
            stride: [1, 1],
            dilation: [1, 1],
            groups: 1,
            padding: PaddingConfig2d::Valid,
        }
    }

    /// The padding `[(top, bottom), (left, right)]` on an `[h, w]` input. `Same` is Burn's:
    /// the output keeps `⌈size / stride⌉`, with `(o − 1)·s + k − size` zeros split evenly and the
    /// odd one at the end, counted with the undilated kernel size as Burn's `Conv2d` does.
    #[must_use]
    pub fn padding_at(&self, [h, w]: [usize; 2]) -> [(usize, usize); 2] {
        let same = |k: usize, s: usize, size: usize| {
            let out = size.div_ceil(s);
            let total = match out {
                0 => 0,
                _ => ((out - 1) * s + k).saturating_sub(size),
            };
            (total / 2, total - total / 2)
        };
        let [kh, kw] = self.kernel_size;
        let [sh, sw] = self.stride;
        match self.padding {
            PaddingConfig2d::Valid => [(0, 0), (0, 0)],
            PaddingConfig2d::Same => [same(kh, sh, h), same(kw, sw, w)],
            PaddingConfig2d::Explicit(top, left, bottom, right) => [(top, bottom), (left, right)],
        }
    }

    /// The output `[Ho, Wo]` on an `[h, w]` input:
    /// `⌊(size + p_begin + p_end − d·(k − 1) − 1) / s⌋ + 1` per axis (a kernel that does not fit
    /// counts one output, as [`texprune_kernels::output_size`] has it).
    #[must_use]
    pub fn output_size(&self, input: [usize; 2]) -> [usize; 2] {
        let padding = self.padding_at(input);
        core::array::from_fn(|a| {
            let (begin, end) = padding[a];
            let reach = self.dilation[a] * (self.kernel_size[a] - 1) + 1;
            (input[a] + begin + end).saturating_sub(reach) / self.stride[a] + 1
        })
    }

    /// Burn's options for this conv on an `[h, w]` input.
    #[must_use]
    pub fn options(&self, input: [usize; 2]) -> ConvOptions<2> {
        ConvOptions::new_with_padding(
            self.stride,
            self.padding_at(input),
            self.dilation,
            self.groups,
        )
    }

    /// The symmetric padding `[ph, pw]` on an `[h, w]` input when the conv is plain — one
    /// group, no dilation, as much padding after as before — which is what the host training
    /// kernels take; `None` otherwise (those convs train on Burn's own convolution).
    #[must_use]
    pub fn host_padding(&self, input: [usize; 2]) -> Option<[usize; 2]> {
        self.stripe_padding(input)
            .filter(|_| self.dilation == [1, 1])
    }

    /// The symmetric padding `[ph, pw]` on an `[h, w]` input when the host stripe kernel runs
    /// the conv — one group, as much padding after as before, any dilation; `None` otherwise
    /// (a compacted grouped conv runs on Burn's own convolution).
    #[must_use]
    pub fn stripe_padding(&self, input: [usize; 2]) -> Option<[usize; 2]> {
        let [(top, bottom), (left, right)] = self.padding_at(input);
        (self.groups == 1 && top == bottom && left == right).then_some([top, left])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::nn::conv::Conv2dConfig;
    use burn::tensor::{Device, Tensor};

    /// Padding and output sizes equal Burn's `Conv2d`'s, for every padding mode, odd and even
    /// kernels, strides 1–3, dilations 1–2 and odd and even inputs.
    #[test]
    fn output_sizes_are_burns() {
        let device = Device::default();
        for padding in [
            PaddingConfig2d::Valid,
            PaddingConfig2d::Same,
            PaddingConfig2d::Explicit(1, 2, 0, 3),
        ] {
            for (k, s, d, size) in [
                (3, 1, 1, 9),
                (3, 2, 1, 8),
                (2, 1, 1, 7),
                (4, 2, 1, 9),
                (3, 1, 2, 9),
                (3, 3, 2, 10),
                (1, 2, 1, 5),
            ] {
                let burn = Conv2dConfig::new([1, 1], [k, k + 1])
                    .with_stride([s, s])
                    .with_dilation([d, d])
                    .with_padding(padding.clone())
                    .init(&device);
                let y = burn.forward(Tensor::zeros([1, 1, size, size + 1], &device));
                let spec = ConvSpec {
                    kernel_size: [k, k + 1],
                    stride: [s, s],
                    dilation: [d, d],
                    groups: 1,
                    padding: padding.clone(),
                };
                let [_, _, ho, wo] = y.dims();
                assert_eq!(
                    spec.output_size([size, size + 1]),
                    [ho, wo],
                    "{padding:?} k{k} s{s} d{d} {size}"
                );
            }
        }
    }

    #[test]
    fn only_plain_convs_take_the_host_kernels() {
        let mut spec = ConvSpec::new([3, 3]);
        spec.padding = PaddingConfig2d::Explicit(1, 1, 1, 1);
        assert_eq!(spec.host_padding([8, 8]), Some([1, 1]));
        spec.padding = PaddingConfig2d::Same;
        assert_eq!(spec.host_padding([8, 8]), Some([1, 1]));
        spec.stride = [2, 2];
        // Same with stride 2 on an even input pads (0, 1).
        assert_eq!(spec.padding_at([8, 8]), [(0, 1), (0, 1)]);
        assert_eq!(spec.host_padding([8, 8]), None);
        let mut grouped = ConvSpec::new([3, 3]);
        grouped.groups = 4;
        assert_eq!(grouped.host_padding([8, 8]), None);
        let mut dilated = ConvSpec::new([3, 3]);
        dilated.dilation = [2, 1];
        assert_eq!(dilated.host_padding([8, 8]), None);
        assert_eq!(dilated.stripe_padding([8, 8]), Some([0, 0]));
        assert_eq!(grouped.stripe_padding([8, 8]), None);
    }
}
