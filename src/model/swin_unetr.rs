//! SwinUNETR (v2), the segmentation network PRISM is fine-tuned as: MONAI 1.4.0's
//! `SwinUNETR(use_v2=True, norm_name="instance", normalize=True)`.
//!
//! The PRISM encoder ([`SwinEncoder`], tensors under `swinViT.`) gives five stage outputs at
//! 1/2 … 1/32 of the input resolution. Residual blocks `encoder1..4` turn the input and the first
//! three stages into skip features, and `encoder10` refines the deepest stage. Each of
//! `decoder5..1` doubles the resolution and fuses one skip. At full resolution a 1×1×1
//! convolution (`out`) gives one logit per class. Channel counts, with feature size f:
//!
//! | block | input | output |
//! |---|---|---|
//! | encoder1 | image (in_channels) | f |
//! | encoder2, 3, 4 | stage 0, 1, 2 (f, 2f, 4f) | same |
//! | encoder10 | stage 4 (16f) | 16f |
//! | decoder5 | encoder10 + stage 3 (8f) | 8f |
//! | decoder4, 3, 2 | previous + encoder4, 3, 2 | 4f, 2f, f |
//! | decoder1 | decoder2 + encoder1 | f |

use candle_core::{bail, Result, Tensor};
use candle_nn::VarBuilder;

use super::swin::{SwinConfig, SwinEncoder};
use super::unet_blocks::{UnetResBlock, UnetrUpBlock};
use crate::ops;

/// Shape of a SwinUNETR: the encoder's configuration (its `embed_dim` is MONAI's
/// `feature_size`) and the number of output classes, background included.
#[derive(Debug, Clone, PartialEq)]
pub struct SwinUnetrConfig {
    pub encoder: SwinConfig,
    pub out_channels: usize,
}

impl SwinUnetrConfig {
    /// Each spatial input size must be a multiple of this (five halvings), as MONAI requires.
    pub fn size_multiple(&self) -> usize {
        self.encoder.downsampling()
    }
}

#[derive(Debug, Clone)]
pub struct SwinUnetr {
    swin_vit: SwinEncoder,
    encoder1: UnetResBlock,
    encoder2: UnetResBlock,
    encoder3: UnetResBlock,
    encoder4: UnetResBlock,
    encoder10: UnetResBlock,
    decoder5: UnetrUpBlock,
    decoder4: UnetrUpBlock,
    decoder3: UnetrUpBlock,
    decoder2: UnetrUpBlock,
    decoder1: UnetrUpBlock,
    out_w: Tensor,
    out_b: Tensor,
    config: SwinUnetrConfig,
}

impl SwinUnetr {
    /// Build from tensors named as in `SwinUNETR.state_dict()` (no `module.` prefix).
    pub fn load(cfg: &SwinUnetrConfig, vb: VarBuilder) -> Result<Self> {
        let enc = &cfg.encoder;
        if enc.depths.len() != 4 {
            bail!("SwinUNETR needs a 4-stage encoder, this one has {} stages", enc.depths.len());
        }
        let f = enc.embed_dim;
        let block = |c_in, c_out, name: &str| UnetResBlock::load(c_in, c_out, vb.pp(name).pp("layer"));
        let up = |c_in, c_out, name: &str| UnetrUpBlock::load(c_in, c_out, vb.pp(name));
        Ok(SwinUnetr {
            swin_vit: SwinEncoder::load(enc, vb.pp("swinViT"))?,
            encoder1: block(enc.in_chans, f, "encoder1")?,
            encoder2: block(f, f, "encoder2")?,
            encoder3: block(2 * f, 2 * f, "encoder3")?,
            encoder4: block(4 * f, 4 * f, "encoder4")?,
            encoder10: block(16 * f, 16 * f, "encoder10")?,
            decoder5: up(16 * f, 8 * f, "decoder5")?,
            decoder4: up(8 * f, 4 * f, "decoder4")?,
            decoder3: up(4 * f, 2 * f, "decoder3")?,
            decoder2: up(2 * f, f, "decoder2")?,
            decoder1: up(f, f, "decoder1")?,
            out_w: vb.get((cfg.out_channels, f, 1, 1, 1), "out.conv.conv.weight")?,
            out_b: vb.get(cfg.out_channels, "out.conv.conv.bias")?,
            config: cfg.clone(),
        })
    }

    pub fn config(&self) -> &SwinUnetrConfig {
        &self.config
    }

    pub fn encoder(&self) -> &SwinEncoder {
        &self.swin_vit
    }

    /// `x`: [B, in_channels, D, H, W], each of D, H, W a multiple of 32. Returns the logits
    /// [B, out_channels, D, H, W].
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let m = self.config.size_multiple();
        let (_, _, d, h, w) = x.dims5()?;
        if d % m != 0 || h % m != 0 || w % m != 0 {
            bail!("SwinUNETR input {d}x{h}x{w} is not a multiple of {m} along every axis");
        }

        let hidden = self.swin_vit.forward(x)?;
        let enc0 = self.encoder1.forward(x)?;
        let enc1 = self.encoder2.forward(&hidden[0])?;
        let enc2 = self.encoder3.forward(&hidden[1])?;
        let enc3 = self.encoder4.forward(&hidden[2])?;
        let dec4 = self.encoder10.forward(&hidden[4])?;

        let dec3 = self.decoder5.forward(&dec4, &hidden[3])?;
        let dec2 = self.decoder4.forward(&dec3, &enc3)?;
        let dec1 = self.decoder3.forward(&dec2, &enc2)?;
        let dec0 = self.decoder2.forward(&dec1, &enc1)?;
        let out = self.decoder1.forward(&dec0, &enc0)?;
        ops::conv3d(&out, &self.out_w, Some(&self.out_b), 1, 0)
    }
}
