//! Zero padding of the three spatial axes.

use candle_core::{bail, Result, Tensor};

/// Pads the last three axes of `x` (D, H, W) with zeros: `padding[axis] = (before, after)` voxels.
pub fn pad3d(x: &Tensor, padding: [(usize, usize); 3]) -> Result<Tensor> {
    let rank = x.rank();
    if rank < 3 {
        bail!(
            "pad3d: expected at least three axes, got shape {:?}",
            x.dims()
        )
    }
    let mut out = x.clone();
    for (axis, (before, after)) in padding.into_iter().enumerate() {
        out = out.pad_with_zeros(rank - 3 + axis, before, after)?;
    }
    Ok(out)
}
