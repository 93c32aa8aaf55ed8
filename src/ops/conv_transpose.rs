//! 3-D transposed convolution whose kernel equals its stride (no overlap, no padding), the
//! up-sampling step of UNETR decoders (MONAI's `get_conv_layer(..., is_transposed=True)` with
//! kernel 2, stride 2).
//!
//! With kernel = stride every output voxel receives exactly one input voxel, so the operation is
//! one matrix product per voxel followed by a reshuffle of the kernel offsets into space. It is
//! built from candle operations only, so candle differentiates it on every device.

use candle_core::{bail, Result, Tensor};

/// `x` [N, C, D, H, W] and `w` [C, O, k, k, k] (PyTorch's `ConvTranspose3d` weight layout), kernel
/// = stride = k. Returns [N, O, k·D, k·H, k·W]; `bias` of shape [O] is added if given.
pub fn conv_transpose3d_strided(x: &Tensor, w: &Tensor, bias: Option<&Tensor>) -> Result<Tensor> {
    let (n, c, d, h, wd) = x.dims5()?;
    let (wc, o, k0, k1, k2) = w.dims5()?;
    if wc != c || k0 != k1 || k1 != k2 {
        bail!("transposed conv: input has {c} channels, weight is {:?} (expected [{c}, O, k, k, k])", w.dims());
    }
    let k = k0;

    // [N·D·H·W, C] × [C, O·k³] → one k³ block of outputs per input voxel.
    let columns = x.permute((0, 2, 3, 4, 1))?.reshape((n * d * h * wd, c))?;
    let blocks = columns.matmul(&w.reshape((c, o * k * k * k))?)?;

    // [N, D, H, W, O, kd, kh, kw] → [N, O, D, kd, H, kh, W, kw]: offset kd of voxel z lands at k·z + kd.
    let blocks = blocks.reshape(vec![n, d, h, wd, o, k, k, k])?;
    let y = blocks.permute([0, 4, 1, 5, 2, 6, 3, 7])?.reshape((n, o, k * d, k * h, k * wd))?;
    match bias {
        Some(b) => y.broadcast_add(&b.reshape((1, o, 1, 1, 1))?),
        None => Ok(y),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    /// Direct scatter definition: y[o, k·z + a, …] += x[c, z, …] · w[c, o, a, …].
    fn reference(x: &[f32], w: &[f32], c: usize, o: usize, dims: [usize; 3], k: usize) -> Vec<f32> {
        let [d, h, wd] = dims;
        let (od, oh, ow) = (k * d, k * h, k * wd);
        let mut y = vec![0f32; o * od * oh * ow];
        for ci in 0..c {
            for (z, yy, xx) in itertools3(d, h, wd) {
                let v = x[((ci * d + z) * h + yy) * wd + xx];
                for oi in 0..o {
                    for (a, b, e) in itertools3(k, k, k) {
                        let wv = w[((((ci * o + oi) * k + a) * k) + b) * k + e];
                        y[((oi * od + k * z + a) * oh + k * yy + b) * ow + k * xx + e] += v * wv;
                    }
                }
            }
        }
        y
    }

    fn itertools3(a: usize, b: usize, c: usize) -> impl Iterator<Item = (usize, usize, usize)> {
        (0..a).flat_map(move |i| (0..b).flat_map(move |j| (0..c).map(move |k| (i, j, k))))
    }

    #[test]
    fn conv_transpose_matches_scatter_definition() {
        let (c, o, dims, k) = (3, 2, [2, 3, 4], 2);
        let x: Vec<f32> = (0..c * 24).map(|i| ((i * 7 % 11) as f32) - 5.0).collect();
        let w: Vec<f32> = (0..c * o * 8).map(|i| ((i * 5 % 13) as f32) * 0.1 - 0.6).collect();
        let xt = Tensor::from_vec(x.clone(), (1, c, 2, 3, 4), &Device::Cpu).unwrap();
        let wt = Tensor::from_vec(w.clone(), (c, o, k, k, k), &Device::Cpu).unwrap();
        let got = conv_transpose3d_strided(&xt, &wt, None).unwrap();
        assert_eq!(got.dims(), &[1, o, 4, 6, 8]);
        let got: Vec<f32> = got.flatten_all().unwrap().to_vec1().unwrap();
        let want = reference(&x, &w, c, o, dims, k);
        let worst = got.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
        assert!(worst < 1e-5, "max |diff| {worst}");
    }

    #[test]
    fn conv_transpose_rejects_channel_mismatch() {
        let x = Tensor::zeros((1, 3, 2, 2, 2), candle_core::DType::F32, &Device::Cpu).unwrap();
        let w = Tensor::zeros((4, 2, 2, 2, 2), candle_core::DType::F32, &Device::Cpu).unwrap();
        assert!(conv_transpose3d_strided(&x, &w, None).is_err());
    }
}
