//! Shape arithmetic shared by both conv3d forward paths and the backward kernels.

use candle_core::{bail, Result};

/// Per-axis stride and zero padding of a 3-D convolution, in voxels, ordered (depth, height, width).
///
/// Dilation and groups are not supported: every convolution in the PRISM networks uses 1 for both.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Conv3dConfig {
    pub stride: [usize; 3],
    pub padding: [usize; 3],
}

impl Conv3dConfig {
    /// Builds a config with the same stride and padding on all three axes.
    pub fn new(stride: usize, padding: usize) -> Self {
        Self {
            stride: [stride; 3],
            padding: [padding; 3],
        }
    }
}

impl Default for Conv3dConfig {
    fn default() -> Self {
        Self::new(1, 0)
    }
}

/// Sizes of one convolution: input [N, C, D, H, W], weight [O, C, kd, kh, kw], output [N, O, D', H', W'].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ConvGeometry {
    pub batch: usize,
    pub in_channels: usize,
    pub out_channels: usize,
    pub input: [usize; 3],
    pub kernel: [usize; 3],
    pub stride: [usize; 3],
    pub padding: [usize; 3],
    pub output: [usize; 3],
}

impl ConvGeometry {
    /// Checks the input and weight shapes against each other and computes the output size
    /// as torch.nn.functional.conv3d does: `(in + 2 * padding - kernel) / stride + 1`, rounded down.
    pub fn new(x_dims: &[usize], w_dims: &[usize], config: &Conv3dConfig) -> Result<Self> {
        let (&[batch, in_channels, d, h, w], &[out_channels, w_channels, kd, kh, kw]) =
            (x_dims, w_dims)
        else {
            bail!(
                "conv3d: expected input [N, C, D, H, W] and weight [O, C, kd, kh, kw], got {x_dims:?} and {w_dims:?}"
            )
        };
        if w_channels != in_channels {
            bail!("conv3d: input has {in_channels} channels but weight {w_dims:?} expects {w_channels}")
        }
        if config.stride.contains(&0) {
            bail!(
                "conv3d: stride {:?} is invalid, every axis needs a stride of at least 1",
                config.stride
            )
        }

        let input = [d, h, w];
        let kernel = [kd, kh, kw];
        let mut output = [0; 3];
        for axis in 0..3 {
            let padded = input[axis] + 2 * config.padding[axis];
            if kernel[axis] == 0 || kernel[axis] > padded {
                bail!(
                    "conv3d: kernel {kernel:?} does not fit the input {input:?} padded by {:?} along axis {axis}",
                    config.padding
                )
            }
            output[axis] = (padded - kernel[axis]) / config.stride[axis] + 1;
        }

        Ok(Self {
            batch,
            in_channels,
            out_channels,
            input,
            kernel,
            stride: config.stride,
            padding: config.padding,
            output,
        })
    }

    /// Rows of the im2col matrix: one per (input channel, kernel offset), i.e. C·kd·kh·kw.
    pub fn col_rows(&self) -> usize {
        self.in_channels * self.kernel.iter().product::<usize>()
    }

    /// Voxels per channel of one input sample.
    pub fn input_voxels(&self) -> usize {
        self.input.iter().product()
    }

    /// Voxels per channel of one output sample, D'·H'·W'.
    pub fn output_voxels(&self) -> usize {
        self.output.iter().product()
    }

    pub fn output_dims(&self) -> [usize; 5] {
        let [d, h, w] = self.output;
        [self.batch, self.out_channels, d, h, w]
    }

    pub fn input_dims(&self) -> [usize; 5] {
        let [d, h, w] = self.input;
        [self.batch, self.in_channels, d, h, w]
    }

    pub fn weight_dims(&self) -> [usize; 5] {
        let [kd, kh, kw] = self.kernel;
        [self.out_channels, self.in_channels, kd, kh, kw]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_size_follows_torch_formula() {
        let patch = ConvGeometry::new(
            &[1, 1, 96, 96, 96],
            &[48, 1, 2, 2, 2],
            &Conv3dConfig::new(2, 0),
        )
        .unwrap();
        assert_eq!(patch.output, [48, 48, 48]);

        // floor((7 + 2 - 3) / 2) + 1 = 4; floor((8 + 0 - 2) / 3) + 1 = 3.
        let config = Conv3dConfig {
            stride: [2, 3, 1],
            padding: [1, 0, 0],
        };
        let mixed = ConvGeometry::new(&[1, 2, 7, 8, 5], &[3, 2, 3, 2, 1], &config).unwrap();
        assert_eq!(mixed.output, [4, 3, 5]);
    }

    #[test]
    fn kernel_larger_than_padded_input_is_rejected() {
        let result =
            ConvGeometry::new(&[1, 1, 2, 8, 8], &[1, 1, 5, 3, 3], &Conv3dConfig::new(1, 1));
        assert!(result.is_err());
    }
}
