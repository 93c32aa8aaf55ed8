//! 3-D convolution with zero padding, as torch.nn.functional.conv3d, differentiable w.r.t. input,
//! weight and bias.
//!
//! On the CPU, f32 and f64 tensors go through the crate's kernels in [`cpu`]: AVX-512 tile
//! kernels for f32 where the CPU has them, the `gemm` crate otherwise. A [`CustomOp2`] wraps
//! them, and its backward pass computes both gradients with the same kernels. Every other device and dtype
//! uses [`conv3d_portable`], built from candle tensor operations that candle differentiates.

mod cpu;
mod gather;
mod geometry;
mod microkernel;
mod portable;

use candle_core::backend::BackendStorage;
use candle_core::{bail, CpuStorage, CustomOp2, DType, Device, Layout, Result, Shape, Tensor};

pub use geometry::Conv3dConfig;
use geometry::ConvGeometry;

/// Convolves `x` [N, C, D, H, W] with `w` [O, C, kd, kh, kw] and adds `bias` of shape `[O]` if given.
/// Returns [N, O, D', H', W'], where D' = (D + 2·padding - kd) / stride + 1 rounded down, and
/// likewise for H' and W'.
pub fn conv3d(
    x: &Tensor,
    w: &Tensor,
    bias: Option<&Tensor>,
    stride: usize,
    padding: usize,
) -> Result<Tensor> {
    conv3d_with_config(x, w, bias, &Conv3dConfig::new(stride, padding))
}

/// Same as [`conv3d`], with stride and padding set per axis.
pub fn conv3d_with_config(
    x: &Tensor,
    w: &Tensor,
    bias: Option<&Tensor>,
    config: &Conv3dConfig,
) -> Result<Tensor> {
    let geometry = checked_geometry(x, w, config)?;
    let out = if has_cpu_kernel(x) {
        let op = Conv3dForward { geometry };
        x.contiguous()?.apply_op2(&w.contiguous()?, op)?
    } else {
        portable::conv3d(x, w, &geometry)?
    };
    add_bias(out, bias, &geometry)
}

/// Same as [`conv3d_with_config`] but built only from candle tensor operations (pad, narrow,
/// stack, matmul) that candle implements and differentiates on all its devices. [`conv3d`] uses
/// it for devices and dtypes without a dedicated kernel.
pub fn conv3d_portable(
    x: &Tensor,
    w: &Tensor,
    bias: Option<&Tensor>,
    config: &Conv3dConfig,
) -> Result<Tensor> {
    let geometry = checked_geometry(x, w, config)?;
    let out = portable::conv3d(x, w, &geometry)?;
    add_bias(out, bias, &geometry)
}

fn checked_geometry(x: &Tensor, w: &Tensor, config: &Conv3dConfig) -> Result<ConvGeometry> {
    if x.dtype() != w.dtype() {
        bail!(
            "conv3d: input is {:?} but weight is {:?}, convert one of them",
            x.dtype(),
            w.dtype()
        )
    }
    if !x.device().same_device(w.device()) {
        bail!("conv3d: input and weight are on different devices, move both to the same device")
    }
    ConvGeometry::new(x.dims(), w.dims(), config)
}

fn has_cpu_kernel(x: &Tensor) -> bool {
    matches!(x.device(), Device::Cpu) && matches!(x.dtype(), DType::F32 | DType::F64)
}

/// Adds the bias outside the custom op so that candle differentiates it.
fn add_bias(out: Tensor, bias: Option<&Tensor>, g: &ConvGeometry) -> Result<Tensor> {
    let Some(bias) = bias else {
        return Ok(out);
    };
    if bias.dims() != [g.out_channels] {
        bail!(
            "conv3d: bias has shape {:?}, expected [{}]",
            bias.dims(),
            g.out_channels
        )
    }
    out.broadcast_add(&bias.reshape((1, g.out_channels, 1, 1, 1))?)
}

/// conv3d forward on the CPU: (x, w) -> out.
struct Conv3dForward {
    geometry: ConvGeometry,
}

/// Gradient w.r.t. the input: (grad_out, w) -> grad_x.
struct Conv3dGradInput {
    geometry: ConvGeometry,
}

/// Gradient w.r.t. the weight: (x, grad_out) -> grad_w.
struct Conv3dGradWeight {
    geometry: ConvGeometry,
}

/// A CPU kernel of two operands, instantiated for f32 and f64 by [`run_kernel`].
trait Conv3dKernel {
    const NAME: &'static str;

    /// Expected shapes of the two operands and of the result.
    fn dims(&self) -> [[usize; 5]; 3];

    fn run<T: cpu::ConvElement>(&self, a: &[T], b: &[T]) -> Vec<T>;
}

impl Conv3dKernel for Conv3dForward {
    const NAME: &'static str = "conv3d";

    fn dims(&self) -> [[usize; 5]; 3] {
        let g = &self.geometry;
        [g.input_dims(), g.weight_dims(), g.output_dims()]
    }

    fn run<T: cpu::ConvElement>(&self, x: &[T], w: &[T]) -> Vec<T> {
        cpu::forward(x, w, &self.geometry)
    }
}

impl Conv3dKernel for Conv3dGradInput {
    const NAME: &'static str = "conv3d-grad-input";

    fn dims(&self) -> [[usize; 5]; 3] {
        let g = &self.geometry;
        [g.output_dims(), g.weight_dims(), g.input_dims()]
    }

    fn run<T: cpu::ConvElement>(&self, grad_out: &[T], w: &[T]) -> Vec<T> {
        cpu::grad_input(grad_out, w, &self.geometry)
    }
}

impl Conv3dKernel for Conv3dGradWeight {
    const NAME: &'static str = "conv3d-grad-weight";

    fn dims(&self) -> [[usize; 5]; 3] {
        let g = &self.geometry;
        [g.input_dims(), g.output_dims(), g.weight_dims()]
    }

    fn run<T: cpu::ConvElement>(&self, x: &[T], grad_out: &[T]) -> Vec<T> {
        cpu::grad_weight(x, grad_out, &self.geometry)
    }
}

impl CustomOp2 for Conv3dForward {
    fn name(&self) -> &'static str {
        Self::NAME
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        run_kernel(self, s1, l1, s2, l2)
    }

    /// Returns no gradient for an operand that is not part of a graph that needs gradients,
    /// which skips the input gradient of a network's first layer.
    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _out: &Tensor,
        grad_out: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let grad_out = grad_out.contiguous()?;
        let geometry = self.geometry;
        let grad_x = if x.track_op() {
            Some(grad_out.apply_op2_no_bwd(w, &Conv3dGradInput { geometry })?)
        } else {
            None
        };
        let grad_w = if w.track_op() {
            Some(x.apply_op2_no_bwd(&grad_out, &Conv3dGradWeight { geometry })?)
        } else {
            None
        };
        Ok((grad_x, grad_w))
    }
}

impl CustomOp2 for Conv3dGradInput {
    fn name(&self) -> &'static str {
        Self::NAME
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        run_kernel(self, s1, l1, s2, l2)
    }
}

impl CustomOp2 for Conv3dGradWeight {
    fn name(&self) -> &'static str {
        Self::NAME
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        run_kernel(self, s1, l1, s2, l2)
    }
}

/// Checks both operands' shapes and layouts, then runs the f32 or f64 instance of `kernel`.
fn run_kernel<K: Conv3dKernel>(
    kernel: &K,
    s1: &CpuStorage,
    l1: &Layout,
    s2: &CpuStorage,
    l2: &Layout,
) -> Result<(CpuStorage, Shape)> {
    let [dims1, dims2, out_dims] = kernel.dims();
    let storage = match (s1, s2) {
        (CpuStorage::F32(a), CpuStorage::F32(b)) => {
            let a = contiguous_slice::<K, _>(a, l1, &dims1)?;
            let b = contiguous_slice::<K, _>(b, l2, &dims2)?;
            CpuStorage::F32(kernel.run(a, b))
        }
        (CpuStorage::F64(a), CpuStorage::F64(b)) => {
            let a = contiguous_slice::<K, _>(a, l1, &dims1)?;
            let b = contiguous_slice::<K, _>(b, l2, &dims2)?;
            CpuStorage::F64(kernel.run(a, b))
        }
        _ => bail!(
            "{}: expected two f32 or two f64 tensors, got {:?} and {:?}",
            K::NAME,
            s1.dtype(),
            s2.dtype()
        ),
    };
    Ok((storage, Shape::from_dims(&out_dims)))
}

fn contiguous_slice<'a, K: Conv3dKernel, T>(
    data: &'a [T],
    layout: &Layout,
    dims: &[usize],
) -> Result<&'a [T]> {
    if layout.dims() != dims {
        bail!(
            "{}: operand has shape {:?}, expected {dims:?}",
            K::NAME,
            layout.dims()
        )
    }
    match layout.contiguous_offsets() {
        Some((start, end)) => Ok(&data[start..end]),
        None => bail!(
            "{}: operand of shape {dims:?} is not contiguous, call .contiguous() first",
            K::NAME
        ),
    }
}
