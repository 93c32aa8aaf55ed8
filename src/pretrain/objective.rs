//! PRISM's pretraining objective: the loss terms and the three optimizer steps of one training
//! iteration.
//!
//! - Step A (every parameter): reconstruct the clean crop from its corrupted copy (L1), and
//!   predict the sequence parameters (L1, missing values excluded) and the body part
//!   (cross-entropy).
//! - Step B (encoder side): the non-saturating discriminator loss on the real crop against the
//!   reconstruction and a synthesized crop (both detached), plus the sequence-parameter and
//!   body-part losses, all scaled by `discriminator_scale`.
//! - Step C (generator side, every `generator_every` steps): the generator's adversarial terms
//!   for the reconstruction and the synthesized crop, L1 reconstruction and NT-Xent between the
//!   structure projections of the real and the synthesized crop, scaled by `generator_scale`.
//!   The synthesized crop keeps the anatomy and takes a new appearance from a random style, so
//!   the contrastive term teaches the structure feature to ignore the sequence.
//!
//! Weights and scales default to the values of PRISM's public training code.
//!
//! NOTE: as in PRISM's code, the two contrastive projection heads never change. They belong to
//! the encoder side, but only step C reads them (the sequence head not even there), and step C
//! updates the generator side alone.

use candle_core::{Device, Result, Tensor, D};
use rand::Rng;
use serde::{Deserialize, Serialize};

use crate::model::PrismPretrain;
use crate::train::init::normal;

/// Loss weights and step settings; [`Default`] gives PRISM's values.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ObjectiveConfig {
    pub recon_weight: f64,
    pub sequence_weight: f64,
    pub body_part_weight: f64,
    pub adversarial_weight: f64,
    pub contrastive_weight: f64,
    /// NT-Xent temperature.
    pub temperature: f64,
    /// Factor on the whole step-B loss.
    pub discriminator_scale: f64,
    /// Factor on the whole step-C loss.
    pub generator_scale: f64,
    /// Step C runs when the step index (0-based) is a multiple of this.
    pub generator_every: u64,
    /// Divisors that bring TR (ms), TE (ms) and flip angle (degrees) to order one before the
    /// L1 loss, so no parameter dominates by its unit.
    ///
    /// NOTE: PRISM's public code does not show the units of its targets. These divisors are
    /// this toolkit's choice: TR in seconds, TE in units of 100 ms, flip angle in units of 90°.
    pub sequence_scale: [f64; 3],
}

impl Default for ObjectiveConfig {
    fn default() -> Self {
        ObjectiveConfig {
            recon_weight: 1.0,
            sequence_weight: 1.0,
            body_part_weight: 1.0,
            adversarial_weight: 1.0,
            contrastive_weight: 0.5,
            temperature: 0.5,
            discriminator_scale: 0.5,
            generator_scale: 0.2,
            generator_every: 10,
            sequence_scale: [1000.0, 100.0, 90.0],
        }
    }
}

/// One batch as the steps read it.
#[derive(Debug, Clone)]
pub struct StepInputs {
    /// Clean crops, the reconstruction target: [B, 1, D, H, W].
    pub clean: Tensor,
    /// The same crops after cuboid corruption.
    pub corrupted: Tensor,
    /// TR (ms), TE (ms), flip angle (degrees): [B, 3]; 0 where missing.
    pub sequence: Tensor,
    /// 1 where the value in `sequence` is known, else 0: [B, 3] f32.
    pub sequence_mask: Tensor,
    /// Body-part class indices: [B] u32.
    pub body_part: Tensor,
}

/// Loss terms of one step, as scalar tensors. `total` carries the graph.
#[derive(Debug, Clone)]
pub struct StepLoss {
    pub total: Tensor,
    pub terms: Vec<(&'static str, Tensor)>,
}

/// Mean absolute difference.
pub fn l1(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    (a - b)?.abs()?.mean_all()
}

/// L1 on the sequence parameters after dividing by `scale`: the sum over the three parameters
/// of the batch mean, where a missing value (mask 0) adds nothing. The batch mean still divides
/// by the whole batch, as PRISM's loss does.
pub fn sequence_loss(pred: &Tensor, target: &Tensor, mask: &Tensor, scale: [f64; 3]) -> Result<Tensor> {
    let divisor = Tensor::new(&[scale[0] as f32, scale[1] as f32, scale[2] as f32], pred.device())?;
    let target = target.broadcast_div(&divisor)?;
    let error = (pred - target)?.abs()?.mul(mask)?;
    let batch = pred.dim(0)? as f64;
    error.sum_all()? / batch
}

/// Cross-entropy of class logits [B, K] against indices [B] (u32), batch mean.
pub fn cross_entropy(logits: &Tensor, classes: &Tensor) -> Result<Tensor> {
    candle_nn::loss::cross_entropy(logits, classes)
}

/// softplus(x) = log(1 + eˣ), computed as max(x, 0) + log(1 + e^−|x|), so the exponential
/// stays at most 1.
pub fn softplus(x: &Tensor) -> Result<Tensor> {
    let tail = (x.abs()?.neg()?.exp()? + 1.0)?.log()?;
    x.relu()? + tail
}

/// Discriminator loss on real logits: mean softplus(−x). It is also the generator's
/// non-saturating loss on the logits of generated crops.
pub fn real_loss(logits: &Tensor) -> Result<Tensor> {
    softplus(&logits.neg()?)?.mean_all()
}

/// Discriminator loss on generated logits: mean softplus(x).
pub fn fake_loss(logits: &Tensor) -> Result<Tensor> {
    softplus(logits)?.mean_all()
}

/// NT-Xent (SimCLR's normalized temperature-scaled cross-entropy), as MONAI's
/// `ContrastiveLoss`: rows of `a` and `b` [B, n] at the same index are positive pairs; each of
/// the 2B embeddings is contrasted against the 2B − 1 others; the result is the mean of
/// −log(exp(s⁺/T) / Σ_{k≠i} exp(s_ik/T)) over the 2B rows, with s the cosine similarity.
pub fn nt_xent(a: &Tensor, b: &Tensor, temperature: f64) -> Result<Tensor> {
    let n = a.dim(0)?;
    let z = normalize_rows(&Tensor::cat(&[a, b], 0)?)?;
    let logits = (z.matmul(&z.t()?)? / temperature)?;

    // Leave each row's similarity with itself out of the denominator.
    let eye = Tensor::eye(2 * n, a.dtype(), a.device())?;
    let masked = (logits.clone() - (eye * 1e9)?)?;
    let log_denominator = log_sum_exp_rows(&masked)?;

    // Positive of row i: i + n for the first half, i − n for the second.
    let partner: Vec<u32> = (0..2 * n).map(|i| ((i + n) % (2 * n)) as u32).collect();
    let partner = Tensor::new(partner.as_slice(), a.device())?.unsqueeze(1)?;
    let positive = logits.gather(&partner, 1)?.squeeze(1)?;
    (log_denominator - positive)?.mean_all()
}

fn normalize_rows(x: &Tensor) -> Result<Tensor> {
    // F.normalize's eps: a zero row stays zero instead of dividing by zero.
    let norm = x.sqr()?.sum_keepdim(D::Minus1)?.sqrt()?.clamp(1e-12, f64::MAX)?;
    x.broadcast_div(&norm)
}

fn log_sum_exp_rows(x: &Tensor) -> Result<Tensor> {
    let max = x.max_keepdim(D::Minus1)?.detach();
    let sum = x.broadcast_sub(&max)?.exp()?.sum_keepdim(D::Minus1)?;
    (sum.log()? + max)?.squeeze(D::Minus1)
}

/// Draws the noise z ~ N(0, I) [B, L] that the style mapping turns into a style.
pub fn style_noise(batch: usize, latent: usize, rng: &mut impl Rng, device: &Device) -> Result<Tensor> {
    let values: Vec<f32> = (0..batch * latent).map(|_| normal(rng)).collect();
    Tensor::from_vec(values, (batch, latent), device)
}

/// Step A's loss. Also returns the reconstruction, detached, for step B.
pub fn reconstruction_step(net: &PrismPretrain, x: &StepInputs, cfg: &ObjectiveConfig) -> Result<(StepLoss, Tensor)> {
    let encoded = net.encode(&x.corrupted, None)?;
    let heads = net.heads(&encoded)?;
    let recon = net.decode(&encoded.latent, None)?;

    let recon_loss = l1(&recon, &x.clean)?;
    let seq = sequence_loss(&heads.sequence_parameters, &x.sequence, &x.sequence_mask, cfg.sequence_scale)?;
    let part = cross_entropy(&heads.body_part_logits, &x.body_part)?;
    let total = ((recon_loss.clone() * cfg.recon_weight)?
        + (seq.clone() * cfg.sequence_weight)?
        + (part.clone() * cfg.body_part_weight)?)?;
    let loss = StepLoss { total, terms: vec![("recon", recon_loss), ("sequence", seq), ("body_part", part)] };
    Ok((loss, recon.detach()))
}

/// Renders the anatomy of `clean` under the style made from noise `z`; also returns the
/// structure projection of `clean`. With `frozen_encoder` the encoder's output is detached:
/// the generator step trains nothing upstream of it, so its backward pass would be wasted.
pub fn synthesize(net: &PrismPretrain, clean: &Tensor, z: &Tensor, frozen_encoder: bool) -> Result<(Tensor, Tensor)> {
    let w = net.style(z)?;
    let mut latent = net.backbone(clean)?;
    if frozen_encoder {
        latent = latent.detach();
    }
    let encoded = net.disentangle(&latent, Some(&w))?;
    let synthetic = net.decode(&encoded.latent, Some(&w))?;
    let real_structure = net.heads(&encoded)?.structure_projection;
    Ok((synthetic, real_structure))
}

/// Step B's loss: `recon` is step A's reconstruction (detached); the synthesized crop is made
/// here from noise `z` and detached.
///
/// NOTE: PRISM reconstructs the corrupted crop again after step A's update; reusing step A's
/// reconstruction saves one encoder and decoder pass per step.
pub fn discriminator_step(
    net: &PrismPretrain,
    x: &StepInputs,
    recon: &Tensor,
    z: &Tensor,
    cfg: &ObjectiveConfig,
) -> Result<StepLoss> {
    let real = net.encode(&x.clean, None)?;
    let real_heads = net.heads(&real)?;
    let real_logit = net.discriminate(&real)?;
    let recon_logit = net.discriminate(&net.encode(recon, None)?)?;
    // Detached inside the block, so the generator's graph is freed before the encoder runs.
    let synthetic = {
        let (synthetic, _) = synthesize(net, &x.clean, z, true)?;
        synthetic.detach()
    };
    let fake_logit = net.discriminate(&net.encode(&synthetic, None)?)?;

    let adversarial = ((real_loss(&real_logit)? + fake_loss(&recon_logit)?)? + fake_loss(&fake_logit)?)?;
    let seq = sequence_loss(&real_heads.sequence_parameters, &x.sequence, &x.sequence_mask, cfg.sequence_scale)?;
    let part = cross_entropy(&real_heads.body_part_logits, &x.body_part)?;
    let sum = ((adversarial.clone() * cfg.adversarial_weight)?
        + (seq.clone() * cfg.sequence_weight)?
        + (part.clone() * cfg.body_part_weight)?)?;
    let total = (sum * cfg.discriminator_scale)?;
    Ok(StepLoss {
        total,
        terms: vec![("disc", adversarial), ("disc_sequence", seq), ("disc_body_part", part)],
    })
}

/// Step C's loss, with the synthesized crop made from noise `z`.
pub fn generator_step(net: &PrismPretrain, x: &StepInputs, z: &Tensor, cfg: &ObjectiveConfig) -> Result<StepLoss> {
    let encoded = net.encode(&x.corrupted, None)?;
    let recon = net.decode(&encoded.latent, None)?;
    let recon_logit = net.discriminate(&net.encode(&recon, None)?)?;

    let (synthetic, real_structure) = synthesize(net, &x.clean, z, true)?;
    let fake = net.encode(&synthetic, None)?;
    let fake_logit = net.discriminate(&fake)?;
    let fake_structure = net.heads(&fake)?.structure_projection;

    let adversarial = (real_loss(&recon_logit)? + real_loss(&fake_logit)?)?;
    let recon_loss = l1(&recon, &x.clean)?;
    let contrastive = nt_xent(&real_structure, &fake_structure, cfg.temperature)?;
    let sum = ((adversarial.clone() * cfg.adversarial_weight)?
        + (recon_loss.clone() * cfg.recon_weight)?
        + (contrastive.clone() * cfg.contrastive_weight)?)?;
    let total = (sum * cfg.generator_scale)?;
    Ok(StepLoss {
        total,
        terms: vec![("gen_adversarial", adversarial), ("gen_recon", recon_loss), ("contrastive", contrastive)],
    })
}
