//! Element types of the crate's own CPU kernels.

use candle_core::WithDType;

/// The float types that both the `gemm` crate and the crate's CPU kernels support.
pub(crate) trait Element: WithDType {
    const ZERO: Self;
    const ONE: Self;
}

impl Element for f32 {
    const ZERO: Self = 0.0;
    const ONE: Self = 1.0;
}

impl Element for f64 {
    const ZERO: Self = 0.0;
    const ONE: Self = 1.0;
}
