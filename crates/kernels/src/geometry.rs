//! The shapes of one convolution, as every kernel here takes them.

/// Output size of a window of `kernel` with `stride` and `padding` over `size`:
/// `⌊(size + 2·padding − kernel) / stride⌋ + 1` per axis (0 rows past the kernel's reach count as
/// one output, as Burn and PyTorch have it).
pub fn output_size(
    size: [usize; 2],
    kernel: [usize; 2],
    stride: [usize; 2],
    padding: [usize; 2],
) -> [usize; 2] {
    core::array::from_fn(|d| (size[d] + 2 * padding[d]).saturating_sub(kernel[d]) / stride[d] + 1)
}

/// The geometry of one convolution: `x [N, Cin, H, W] ⊛ W [Cout, Cin, kh, kw] → y [N, Cout, Ho,
/// Wo]` with symmetric zero padding and dilation (tap `(i, j)` reads input row
/// `s·y − p + d·i`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Geometry {
    /// `[N, Cin, H, W]`.
    pub input: [usize; 4],
    /// `[Cout, Cin, kh, kw]`.
    pub weight: [usize; 4],
    /// `[sh, sw]`.
    pub stride: [usize; 2],
    /// `[ph, pw]`, before and after each axis.
    pub padding: [usize; 2],
    /// `[dh, dw]`: kernel taps `d` apart.
    pub dilation: [usize; 2],
    /// `[Ho, Wo]`, from [`output_size`].
    pub output: [usize; 2],
}

impl Geometry {
    /// The geometry of `input` through `weight`, the output size computed.
    #[must_use]
    pub fn new(
        input: [usize; 4],
        weight: [usize; 4],
        stride: [usize; 2],
        padding: [usize; 2],
    ) -> Self {
        let [_, _, h, w] = input;
        let [_, _, kh, kw] = weight;
        Self {
            input,
            weight,
            stride,
            padding,
            dilation: [1, 1],
            output: output_size([h, w], [kh, kw], stride, padding),
        }
    }

    /// This geometry with the kernel taps `dilation` apart: the kernel reaches `d·(k − 1) + 1`
    /// rows and columns, and the output size follows.
    #[must_use]
    pub fn with_dilation(mut self, dilation: [usize; 2]) -> Self {
        let [_, _, h, w] = self.input;
        let [_, _, kh, kw] = self.weight;
        let reach = [dilation[0] * (kh - 1) + 1, dilation[1] * (kw - 1) + 1];
        self.dilation = dilation;
        self.output = output_size([h, w], reach, self.stride, self.padding);
        self
    }

    /// Floats of one input image, `Cin · H · W`.
    #[must_use]
    pub fn input_len(&self) -> usize {
        let [_, cin, h, w] = self.input;
        cin * h * w
    }

    /// Floats of one output image, `Cout · Ho · Wo`.
    #[must_use]
    pub fn output_len(&self) -> usize {
        self.weight[0] * self.output[0] * self.output[1]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_sizes_of_common_convs() {
        assert_eq!(output_size([32, 32], [3, 3], [1, 1], [1, 1]), [32, 32]);
        assert_eq!(output_size([32, 32], [3, 3], [2, 2], [1, 1]), [16, 16]);
        assert_eq!(output_size([7, 5], [1, 1], [2, 2], [0, 0]), [4, 3]);
        let g = Geometry::new([2, 3, 8, 6], [4, 3, 3, 3], [1, 1], [0, 0]);
        assert_eq!(g.output, [6, 4]);
        assert_eq!((g.input_len(), g.output_len()), (144, 96));
        // Dilation 2: a 3×3 kernel reaches 5×5.
        let g = Geometry::new([1, 1, 9, 9], [1, 1, 3, 3], [1, 1], [2, 2]).with_dilation([2, 2]);
        assert_eq!(g.output, [9, 9]);
    }
}
