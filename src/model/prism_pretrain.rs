//! The network PRISM is pretrained as (`PT_MRI_FM` of PRISM's public code, in the configuration
//! it publishes: disentanglement, sequence-parameter and body-part heads, discriminator,
//! synthesis, contrastive heads and a modulated decoder).
//!
//! The encoder ([`SwinEncoder`], tensors under `swinViT.`) turns a crop into its deepest stage,
//! the latent, with L = 16·f channels at 1/32 of the input resolution (f = feature size). Two
//! branches split the latent into a structure (anatomy) feature and a sequence (appearance)
//! feature; an aggregation block joins them and adds the latent back. Heads read globally
//! pooled features:
//!
//! | tensor prefix | input | output |
//! |---|---|---|
//! | `structure_disentanglement.0` | latent | structure feature (1×1×1 conv + IN + LeakyReLU) |
//! | `sequence_disentanglement.0` | latent | sequence feature (same) |
//! | `latent_agg.0` | structure ‖ sequence (2L) | L, plus the latent |
//! | `meta_head` | pooled sequence feature | TR, TE, flip angle |
//! | `part_head` | pooled structure feature | 7 body-part logits |
//! | `disc_head` | pooled aggregated latent | real/fake logit |
//! | `str_contrastive_head`, `seq_contrastive_head` | pooled structure / sequence feature | 512 |
//! | `decoder1..5`, `recon_head` | aggregated latent | the image (no skip connections) |
//! | `w_mapping.noise_mapping.0..3.0` | z ~ N(0, I), L | style w, L |
//! | `mix_w.mix_conv` | sequence feature ‖ w (broadcast) | new sequence feature |
//!
//! Each decoder stage is a 3×3×3 modulated convolution (weight `decoder{n}.0.weight`, style
//! projection `decoder{n}.0.projector`), InstanceNorm, LeakyReLU and trilinear ×2 upsampling;
//! channels L → L/2 → L/4 → L/8 → L/16 → L/16. Without a style the convolution is plain, which
//! is how a scan is reconstructed; with one, the decoder renders the anatomy in a new
//! "sequence".
//!
//! PRISM groups the parameters in two sets that different optimizer steps update: the encoder
//! side ("D": encoder, branches, aggregation, heads) and the generator side ("G": decoder,
//! reconstruction head, style mapping and mixing); [`ParamGroup::of`] tells them apart.

use candle_core::{Result, Tensor, D};
use candle_nn::{Linear, Module, VarBuilder};

use super::swin::{global_average, SwinConfig, SwinEncoder};
use crate::ops;

/// InstanceNorm3d's default epsilon and LeakyReLU's default slope in PyTorch.
const NORM_EPS: f64 = 1e-5;
const LEAKY_SLOPE: f64 = 0.01;

/// Body-part classes of PRISM's classifier, in its index order.
pub const BODY_PARTS: [&str; 7] = ["head", "neck", "chest", "upper_abdomen", "lower_abdomen", "knee", "unknown"];

/// Sequence parameters the `meta_head` regresses, in its output order.
pub const SEQUENCE_PARAMETERS: [&str; 3] = ["repetition_time", "echo_time", "flip_angle"];

/// Shape of the pretraining network.
#[derive(Debug, Clone, PartialEq)]
pub struct PretrainConfig {
    pub encoder: SwinConfig,
    /// Output size of the two contrastive projection heads.
    pub projection_dim: usize,
    /// Linear + ReLU layers of the style mapping.
    pub mapping_layers: usize,
}

impl PretrainConfig {
    /// PRISM's published configuration around an encoder of the given shape.
    pub fn around(encoder: SwinConfig) -> Self {
        PretrainConfig { encoder, projection_dim: 512, mapping_layers: 4 }
    }

    /// Channels of the latent (the encoder's last stage): 16 × feature size.
    pub fn latent_dim(&self) -> usize {
        self.encoder.num_features()
    }

    /// Input and output channels of decoder stage `n` (1-based, as the tensor names).
    pub fn decoder_channels(&self, n: usize) -> (usize, usize) {
        let l = self.latent_dim();
        let widths = [l, l / 2, l / 4, l / 8, l / 16, l / 16];
        (widths[n - 1], widths[n])
    }
}

/// The optimizer set a parameter belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParamGroup {
    /// Encoder side: trained by the discriminator step.
    Encoder,
    /// Generator side: trained by the generator step.
    Generator,
}

impl ParamGroup {
    /// Returns the set of the tensor `name` (this module's naming).
    pub fn of(name: &str) -> ParamGroup {
        const GENERATOR: [&str; 4] = ["decoder", "recon_head.", "w_mapping.", "mix_w."];
        if GENERATOR.iter().any(|p| name.starts_with(p)) {
            ParamGroup::Generator
        } else {
            ParamGroup::Encoder
        }
    }
}

/// 1×1×1 convolution (with bias), InstanceNorm, LeakyReLU: PRISM's branch and aggregation block.
#[derive(Debug, Clone)]
struct PointwiseBlock {
    weight: Tensor,
    bias: Tensor,
}

impl PointwiseBlock {
    fn load(in_channels: usize, out_channels: usize, vb: VarBuilder) -> Result<Self> {
        Ok(PointwiseBlock {
            weight: vb.get((out_channels, in_channels, 1, 1, 1), "weight")?,
            bias: vb.get(out_channels, "bias")?,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let y = ops::conv3d(x, &self.weight, Some(&self.bias), 1, 0)?;
        ops::leaky_relu(&ops::instance_norm3d(&y, NORM_EPS)?, LEAKY_SLOPE)
    }
}

/// One generator stage: modulated 3×3×3 convolution, InstanceNorm, LeakyReLU, ×2 upsampling.
#[derive(Debug, Clone)]
struct DecoderStage {
    weight: Tensor,
    projector: Linear,
}

impl DecoderStage {
    fn load(in_channels: usize, out_channels: usize, latent: usize, vb: VarBuilder) -> Result<Self> {
        let vb = vb.pp(0);
        Ok(DecoderStage {
            weight: vb.get((out_channels, in_channels, 3, 3, 3), "weight")?,
            projector: candle_nn::linear(latent, in_channels, vb.pp("projector"))?,
        })
    }

    fn forward(&self, x: &Tensor, style: Option<&Tensor>) -> Result<Tensor> {
        let scale = style.map(|w| self.projector.forward(w)).transpose()?;
        let y = ops::modulated_conv3d(x, &self.weight, scale.as_ref(), 1, true)?;
        let y = ops::leaky_relu(&ops::instance_norm3d(&y, NORM_EPS)?, LEAKY_SLOPE)?;
        ops::upsample_trilinear_x2(&y)
    }
}

/// Features of one encoded crop.
#[derive(Debug, Clone)]
pub struct Encoded {
    /// Structure ‖ sequence aggregated and added to the latent: what the decoder and the
    /// discriminator read. [B, L, d, h, w].
    pub latent: Tensor,
    pub structure: Tensor,
    /// The sequence feature, after mixing in the style when one was given.
    pub sequence: Tensor,
}

/// Outputs of the heads on an [`Encoded`] crop, each [B, n].
#[derive(Debug, Clone)]
pub struct HeadOutputs {
    pub sequence_parameters: Tensor,
    pub body_part_logits: Tensor,
    pub structure_projection: Tensor,
    pub sequence_projection: Tensor,
}

/// PRISM's pretraining network; see the module documentation.
#[derive(Debug, Clone)]
pub struct PrismPretrain {
    swin_vit: SwinEncoder,
    structure: PointwiseBlock,
    sequence: PointwiseBlock,
    aggregate: PointwiseBlock,
    meta_head: Linear,
    part_head: Linear,
    disc_head: Linear,
    str_projection: Linear,
    seq_projection: Linear,
    decoder: Vec<DecoderStage>,
    recon_head: PointwiseConv,
    mapping: Vec<Linear>,
    mix: PointwiseConv,
    config: PretrainConfig,
}

/// A plain 1×1×1 convolution with bias.
#[derive(Debug, Clone)]
struct PointwiseConv {
    weight: Tensor,
    bias: Tensor,
}

impl PointwiseConv {
    fn load(in_channels: usize, out_channels: usize, vb: VarBuilder) -> Result<Self> {
        Ok(PointwiseConv {
            weight: vb.get((out_channels, in_channels, 1, 1, 1), "weight")?,
            bias: vb.get(out_channels, "bias")?,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        ops::conv3d(x, &self.weight, Some(&self.bias), 1, 0)
    }
}

impl PrismPretrain {
    /// Builds the network from tensors named as in PRISM's `PT_MRI_FM.state_dict()` (primary
    /// attribute names, no `module.` prefix).
    pub fn load(config: &PretrainConfig, vb: VarBuilder) -> Result<Self> {
        let l = config.latent_dim();
        let f = config.encoder.embed_dim;
        let decoder = (1..=5)
            .map(|n| {
                let (cin, cout) = config.decoder_channels(n);
                DecoderStage::load(cin, cout, l, vb.pp(format!("decoder{n}")))
            })
            .collect::<Result<Vec<_>>>()?;
        let mapping = (0..config.mapping_layers)
            .map(|i| candle_nn::linear(l, l, vb.pp(format!("w_mapping.noise_mapping.{i}.0"))))
            .collect::<Result<Vec<_>>>()?;
        let projection = config.projection_dim;
        Ok(PrismPretrain {
            swin_vit: SwinEncoder::load(&config.encoder, vb.pp("swinViT"))?,
            structure: PointwiseBlock::load(l, l, vb.pp("structure_disentanglement.0"))?,
            sequence: PointwiseBlock::load(l, l, vb.pp("sequence_disentanglement.0"))?,
            aggregate: PointwiseBlock::load(2 * l, l, vb.pp("latent_agg.0"))?,
            meta_head: candle_nn::linear(l, 3, vb.pp("meta_head"))?,
            part_head: candle_nn::linear(l, BODY_PARTS.len(), vb.pp("part_head"))?,
            disc_head: candle_nn::linear(l, 1, vb.pp("disc_head"))?,
            str_projection: candle_nn::linear(l, projection, vb.pp("str_contrastive_head"))?,
            seq_projection: candle_nn::linear(l, projection, vb.pp("seq_contrastive_head"))?,
            decoder,
            recon_head: PointwiseConv::load(f, config.encoder.in_chans, vb.pp("recon_head"))?,
            mapping,
            mix: PointwiseConv::load(2 * l, l, vb.pp("mix_w.mix_conv"))?,
            config: config.clone(),
        })
    }

    pub fn config(&self) -> &PretrainConfig {
        &self.config
    }

    pub fn encoder(&self) -> &SwinEncoder {
        &self.swin_vit
    }

    /// Encodes `x` [B, 1, D, H, W] (each size a multiple of 32). With a style `w` [B, L] the
    /// sequence feature is replaced by its mix with w, as for synthesis.
    pub fn encode(&self, x: &Tensor, style: Option<&Tensor>) -> Result<Encoded> {
        self.disentangle(&self.backbone(x)?, style)
    }

    /// Runs the encoder and returns its last stage (layer-normalized), the latent
    /// [B, L, D/32, H/32, W/32].
    pub fn backbone(&self, x: &Tensor) -> Result<Tensor> {
        let mut stages = self.swin_vit.forward(x)?;
        stages.pop().ok_or_else(|| candle_core::Error::Msg("the encoder returned no stage".into()))
    }

    /// Splits a latent into structure and sequence features (mixing in `style` when given)
    /// and aggregates them back.
    pub fn disentangle(&self, latent: &Tensor, style: Option<&Tensor>) -> Result<Encoded> {
        let structure = self.structure.forward(latent)?;
        let mut sequence = self.sequence.forward(latent)?;
        if let Some(w) = style {
            sequence = self.mix_style(&sequence, w)?;
        }
        let joined = Tensor::cat(&[&structure, &sequence], 1)?;
        let latent = (self.aggregate.forward(&joined)? + latent)?;
        Ok(Encoded { latent, structure, sequence })
    }

    /// Concatenates w, broadcast over space, to the sequence feature and mixes them with a
    /// 1×1×1 convolution (PRISM's `MixW`).
    fn mix_style(&self, sequence: &Tensor, w: &Tensor) -> Result<Tensor> {
        let (b, l, d, h, wd) = sequence.dims5()?;
        let w = w.reshape((b, l, 1, 1, 1))?.broadcast_as((b, l, d, h, wd))?;
        self.mix.forward(&Tensor::cat(&[sequence, &w], 1)?)
    }

    /// Decodes an aggregated latent back to an image [B, 1, D, H, W]; a style modulates every
    /// decoder convolution.
    pub fn decode(&self, latent: &Tensor, style: Option<&Tensor>) -> Result<Tensor> {
        let mut y = latent.clone();
        for stage in &self.decoder {
            y = stage.forward(&y, style)?;
        }
        self.recon_head.forward(&y)
    }

    /// Runs the heads that read the pooled structure and sequence features.
    pub fn heads(&self, encoded: &Encoded) -> Result<HeadOutputs> {
        let structure = global_average(&encoded.structure)?;
        let sequence = global_average(&encoded.sequence)?;
        Ok(HeadOutputs {
            sequence_parameters: self.meta_head.forward(&sequence)?,
            body_part_logits: self.part_head.forward(&structure)?,
            structure_projection: self.str_projection.forward(&structure)?,
            sequence_projection: self.seq_projection.forward(&sequence)?,
        })
    }

    /// Returns the discriminator's logit [B, 1] on the pooled aggregated latent.
    pub fn discriminate(&self, encoded: &Encoded) -> Result<Tensor> {
        self.disc_head.forward(&global_average(&encoded.latent)?)
    }

    /// Maps noise z [B, L] to a style w: pixel norm, then Linear + ReLU layers.
    pub fn style(&self, z: &Tensor) -> Result<Tensor> {
        let norm = (z.sqr()?.mean_keepdim(D::Minus1)? + 1e-8)?.sqrt()?;
        let mut w = z.broadcast_div(&norm)?;
        for layer in &self.mapping {
            w = layer.forward(&w)?.relu()?;
        }
        Ok(w)
    }
}
