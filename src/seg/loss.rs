//! The segmentation training loss: Dice plus cross-entropy, as MONAI 1.4.0's
//! `DiceCELoss(to_onehot_y=True, softmax=True, squared_pred=False, jaccard=False,
//! batch=False, reduction="mean")`, built from candle operations so that candle's
//! autograd differentiates it.
//!
//! For logits `x` `[B, K, i, j, k]`, `p = softmax(x)` over the class axis and one-hot
//! targets `g`:
//! - Dice: for each sample `b` and class `c` (from class 1 unless the background is
//!   included), `1 − (2 Σ p·g + smooth_nr) / (Σ p + Σ g + smooth_dr)` with sums over the
//!   voxels, averaged over samples and classes. An absent class that is also not
//!   predicted scores near 0, one that is predicted scores near 1.
//! - Cross-entropy: `−log p[target]` averaged over all voxels of the batch, over all
//!   classes (torch's `CrossEntropyLoss` with class-index targets, which MONAI uses).

use candle_core::{DType, Tensor};

use crate::error::{Error, Result};

/// Settings of [`dice_ce_loss_with`]. The defaults are the PRISM fine-tuning loss.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DiceCeOptions {
    /// Count class 0 in the Dice term (the cross-entropy always covers every class).
    pub include_background: bool,
    /// Added to the Dice numerator.
    pub smooth_nr: f64,
    /// Added to the Dice denominator.
    pub smooth_dr: f64,
    /// Weight of the Dice term.
    pub lambda_dice: f64,
    /// Weight of the cross-entropy term.
    pub lambda_ce: f64,
}

impl Default for DiceCeOptions {
    /// `include_background=False`, `smooth_nr = smooth_dr = 1e-5`, both weights 1.
    fn default() -> Self {
        DiceCeOptions {
            include_background: false,
            smooth_nr: 1e-5,
            smooth_dr: 1e-5,
            lambda_dice: 1.0,
            lambda_ce: 1.0,
        }
    }
}

/// The loss and its two terms, each a scalar tensor in the graph of the logits.
#[derive(Debug, Clone)]
pub struct DiceCe {
    /// `lambda_dice · dice + lambda_ce · cross_entropy`.
    pub total: Tensor,
    pub dice: Tensor,
    pub cross_entropy: Tensor,
}

/// Computes the DiceCE loss with the default options as a scalar tensor.
///
/// `logits` is `[B, K, i, j, k]` f32 or f64 with `K >= 2`, and `targets` contains class
/// indices `[B, i, j, k]` (or `[B, 1, i, j, k]`) as u8, u32 or i64.
pub fn dice_ce_loss(logits: &Tensor, targets: &Tensor) -> Result<Tensor> {
    Ok(dice_ce_loss_with(logits, targets, &DiceCeOptions::default())?.total)
}

/// Computes the DiceCE loss and its terms. Fails on shapes that do not fit together,
/// fewer than two classes, or a target outside `0..K`.
pub fn dice_ce_loss_with(
    logits: &Tensor,
    targets: &Tensor,
    options: &DiceCeOptions,
) -> Result<DiceCe> {
    let classes = check_shapes(logits, targets)?;
    let dtype = logits.dtype();
    if !matches!(dtype, DType::F32 | DType::F64) {
        return Err(Error::invalid(format!(
            "DiceCE loss needs f32 or f64 logits, got {dtype:?}"
        )));
    }
    let one_hot = one_hot(targets, classes, dtype)?;

    // Log-softmax over the class axis, composed here because crate::ops::softmax_last_dim
    // covers only the last axis. The max is a constant per voxel for softmax, so it needs
    // no gradient.
    let max = logits.max_keepdim(1)?.detach();
    let shifted = logits.broadcast_sub(&max)?;
    let exp = shifted.exp()?;
    let sum = exp.sum_keepdim(1)?;
    let log_probs = shifted.broadcast_sub(&sum.log()?)?;
    let probs = exp.broadcast_div(&sum)?;

    let voxels = (one_hot.elem_count() / classes) as f64;
    let cross_entropy = (one_hot.mul(&log_probs)?.sum_all()? / -voxels)?;

    let first = if options.include_background { 0 } else { 1 };
    let p = probs.narrow(1, first, classes - first)?;
    let g = one_hot.narrow(1, first, classes - first)?;
    let intersection = p.mul(&g)?.sum((2, 3, 4))?;
    let denominator = (p.sum((2, 3, 4))? + g.sum((2, 3, 4))?)?;
    let ratio =
        ((intersection * 2.0)? + options.smooth_nr)?.div(&(denominator + options.smooth_dr)?)?;
    let dice = ratio.affine(-1.0, 1.0)?.mean_all()?;

    let total = ((&dice * options.lambda_dice)? + (&cross_entropy * options.lambda_ce)?)?;
    Ok(DiceCe {
        total,
        dice,
        cross_entropy,
    })
}

/// Checks `[B, K, i, j, k]` logits against `[B, i, j, k]` or `[B, 1, i, j, k]` targets
/// and returns K.
fn check_shapes(logits: &Tensor, targets: &Tensor) -> Result<usize> {
    let &[b, k, i, j, l] = logits.dims() else {
        return Err(Error::invalid(format!(
            "DiceCE loss expects logits [B, K, i, j, k], got {:?}",
            logits.dims()
        )));
    };
    if k < 2 {
        return Err(Error::invalid(format!(
            "DiceCE loss needs at least 2 classes (background and one more), got {k}"
        )));
    }
    let expected = [b, i, j, l];
    let fits = targets.dims() == expected || targets.dims() == [b, 1, i, j, l];
    if !fits {
        return Err(Error::invalid(format!(
            "targets {:?} do not fit logits {:?}; give class indices [B, i, j, k]",
            targets.dims(),
            logits.dims()
        )));
    }
    Ok(k)
}

/// One-hot `[B, K, i, j, k]` in `dtype` from class indices; fails on an index outside `0..K`.
fn one_hot(targets: &Tensor, classes: usize, dtype: DType) -> Result<Tensor> {
    if !matches!(targets.dtype(), DType::U8 | DType::U32 | DType::I64) {
        return Err(Error::invalid(format!(
            "targets must be class indices (u8, u32 or i64), got {:?}",
            targets.dtype()
        )));
    }
    let indices = targets.to_dtype(DType::F64)?;
    let range = [
        indices.min_all()?.to_scalar::<f64>()?,
        indices.max_all()?.to_scalar::<f64>()?,
    ];
    if range[0] < 0.0 || range[1] >= classes as f64 {
        return Err(Error::invalid(format!(
            "targets span {}..={}, outside the {classes} classes of the logits",
            range[0], range[1]
        )));
    }

    let dims = targets.dims();
    let spatial = &dims[dims.len() - 3..];
    let indices = indices.reshape((dims[0], 1, spatial[0], spatial[1], spatial[2]))?;
    let class_values =
        Tensor::arange(0.0f64, classes as f64, targets.device())?.reshape((1, classes, 1, 1, 1))?;
    Ok(indices.broadcast_eq(&class_values)?.to_dtype(dtype)?)
}
