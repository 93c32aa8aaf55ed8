//! Checkpoint loading and conversion.
//!
//! Accepted layouts, all detected from the file itself:
//! - PRISM's pretraining checkpoint: a PyTorch `torch.save` zip holding
//!   `{"epoch", "state_dict", "optimizer", "scheduler", "global_step"}`, whose state
//!   dict has the encoder under `swinViT.` (a second copy under `D.swinViT.` and the
//!   decoder and head tensors are ignored).
//! - A bare state dict saved with `torch.save`, its names with or without the
//!   `module.` (DataParallel) and `swinViT.` prefixes; a SwinUNETR state dict works too.
//! - A `.safetensors` file with any of those names.
//!
//! The encoder's configuration (embed_dim, depths, heads, window, patch size, v2
//! blocks) is inferred from tensor names and shapes, so every PRISM size loads
//! without flags. Loading never executes pickled code: candle's reader only
//! interprets the tensor records of the pickle.

use std::collections::HashMap;
use std::io::Write;
use std::path::Path;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;

use crate::error::{Error, Result};
use crate::model::swin::{Merging, SwinConfig, SwinEncoder};
use crate::model::swin_unetr::{SwinUnetr, SwinUnetrConfig};

/// Prefixes in front of the encoder's own tensor names, outermost first.
const WRAPPER_PREFIX: &str = "module.";
const ENCODER_PREFIX: &str = "swinViT.";

/// Every tensor of a checkpoint, by name as stored.
pub struct Checkpoint {
    pub tensors: HashMap<String, Tensor>,
}

impl Checkpoint {
    /// Read a `.safetensors` file or a PyTorch `.pt`/`.pth`/`.ckpt` zip.
    pub fn read(path: &Path) -> Result<Self> {
        if !path.exists() {
            return Err(Error::file(path, "weights file not found"));
        }
        let tensors = if is_torch_zip(path)? {
            read_torch_zip(path)?
        } else {
            candle_core::safetensors::load(path, &Device::Cpu).map_err(|e| {
                Error::file(path, format!("neither a PyTorch checkpoint nor a readable safetensors file: {e}"))
            })?
        };
        if tensors.is_empty() {
            return Err(Error::file(path, "the checkpoint contains no tensors"));
        }
        Ok(Checkpoint { tensors })
    }

    /// Selects the encoder's tensors and names them as MONAI's `SwinTransformer` (no prefix).
    ///
    /// `module.` is stripped everywhere. Then, if any name starts with `swinViT.`,
    /// only those are kept, which drops `D.swinViT.`, decoders and heads.
    pub fn encoder_tensors(&self, path: &Path) -> Result<HashMap<String, Tensor>> {
        let unwrapped = self.unwrapped();
        let has_prefix = unwrapped.keys().any(|k| k.starts_with(ENCODER_PREFIX));
        let encoder: HashMap<String, Tensor> = if has_prefix {
            unwrapped
                .into_iter()
                .filter_map(|(k, v)| k.strip_prefix(ENCODER_PREFIX).map(|s| (s.to_string(), v)))
                .collect()
        } else {
            unwrapped
        };
        if !encoder.contains_key("patch_embed.proj.weight") {
            return Err(Error::file(
                path,
                "no PRISM encoder found: expected a tensor named `patch_embed.proj.weight` \
                 (optionally under `swinViT.` or `module.`)",
            ));
        }
        Ok(encoder)
    }
}

/// PyTorch's zip format starts with a local file header, `PK\x03\x04`.
fn is_torch_zip(path: &Path) -> Result<bool> {
    use std::io::Read;
    let mut magic = [0u8; 4];
    let mut f = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let n = f.read(&mut magic).map_err(|e| Error::io(path, e))?;
    Ok(n == 4 && &magic == b"PK\x03\x04")
}

/// Tensors of a `torch.save` zip: the `state_dict` entry of a training checkpoint,
/// or the top-level dict of a bare state dict.
fn read_torch_zip(path: &Path) -> Result<HashMap<String, Tensor>> {
    let with_key = candle_core::pickle::read_all_with_key(path, Some("state_dict"));
    let tensors = match with_key {
        Ok(t) if !t.is_empty() => t,
        _ => candle_core::pickle::read_all(path).map_err(|e| {
            Error::file(path, format!("not a readable PyTorch checkpoint (torch.save zip): {e}"))
        })?,
    };
    Ok(tensors.into_iter().collect())
}

/// Infer the encoder configuration from MONAI tensor names and shapes.
pub fn infer_swin_config(t: &HashMap<String, Tensor>, path: &Path) -> Result<SwinConfig> {
    let shape = |name: &str| -> Result<Vec<usize>> {
        t.get(name)
            .map(|x| x.dims().to_vec())
            .ok_or_else(|| Error::file(path, format!("missing tensor `{name}`")))
    };

    let pe = shape("patch_embed.proj.weight")?;
    if pe.len() != 5 || pe[2] != pe[3] || pe[3] != pe[4] {
        return Err(Error::file(
            path,
            format!("tensor `patch_embed.proj.weight` has shape {pe:?}, expected [C, in, p, p, p]"),
        ));
    }

    let mut depths = Vec::new();
    let mut heads = Vec::new();
    let mut window = 0;
    while t.contains_key(&format!("layers{}.0.blocks.0.norm1.weight", depths.len() + 1)) {
        let stage = depths.len() + 1;
        let depth = (0..)
            .take_while(|b| t.contains_key(&format!("layers{stage}.0.blocks.{b}.norm1.weight")))
            .count();
        let table = shape(&format!("layers{stage}.0.blocks.0.attn.relative_position_bias_table"))?;
        let span = (table[0] as f64).cbrt().round() as usize;
        if table.len() != 2 || span * span * span != table[0] || span % 2 == 0 {
            return Err(Error::file(
                path,
                format!("relative-position table of stage {stage} has shape {table:?}, expected [(2w-1)^3, heads]"),
            ));
        }
        window = span.div_ceil(2);
        depths.push(depth);
        heads.push(table[1]);
    }
    if depths.is_empty() {
        return Err(Error::file(path, "no Swin stages found (`layers1.0.blocks.0.*` is missing)"));
    }

    let hidden = shape("layers1.0.blocks.0.mlp.linear1.weight")?;
    Ok(SwinConfig {
        in_chans: pe[1],
        embed_dim: pe[0],
        depths,
        num_heads: heads,
        window_size: window,
        patch_size: pe[2],
        mlp_ratio: hidden[0] / pe[0].max(1),
        use_v2: t.contains_key("layers1c.0.layer.conv1.conv.weight"),
        merging: Merging::Monai14,
    })
}

/// Load a PRISM encoder from any accepted checkpoint layout onto `device`.
pub fn load_encoder(path: &Path, device: &Device) -> Result<SwinEncoder> {
    let ckpt = Checkpoint::read(path)?;
    let tensors = ckpt.encoder_tensors(path)?;
    let cfg = infer_swin_config(&tensors, path)?;
    let vb = VarBuilder::from_tensors(to_f32(tensors)?, DType::F32, device);
    SwinEncoder::load(&cfg, vb).map_err(|e| Error::file(path, format!("cannot build the encoder: {e}")))
}

/// Name under which provenance records the built-in encoder.
pub const BUILTIN_ENCODER: &str = "builtin:prism-mri-default-f12";

/// The encoder built into the binaries, used when no weights are given: feature size 12,
/// pretrained by `prism-pretrain` on open brain MRI (model card: docs/models/default-encoder.md).
/// It is small enough to ship, so the tools work without a download. It is not PRISM's
/// published model.
static BUILTIN_ENCODER_BYTES: &[u8] = include_bytes!("../weights/default-encoder.safetensors");

/// Builds the built-in encoder on `device`.
pub fn load_builtin_encoder(device: &Device) -> Result<SwinEncoder> {
    let name = Path::new(BUILTIN_ENCODER);
    let tensors = candle_core::safetensors::load_buffer(BUILTIN_ENCODER_BYTES, &Device::Cpu)
        .map_err(|e| Error::file(name, format!("the built-in weights are unreadable: {e}")))?;
    let tensors = Checkpoint { tensors }.encoder_tensors(name)?;
    let cfg = infer_swin_config(&tensors, name)?;
    let vb = VarBuilder::from_tensors(to_f32(tensors)?, DType::F32, device);
    SwinEncoder::load(&cfg, vb).map_err(|e| Error::file(name, format!("cannot build the encoder: {e}")))
}

/// SHA-256 of the built-in encoder's safetensors bytes, as hex.
pub fn builtin_encoder_sha256() -> String {
    use sha2::{Digest, Sha256};
    Sha256::digest(BUILTIN_ENCODER_BYTES).iter().map(|b| format!("{b:02x}")).collect()
}

/// Name of SwinUNETR's output convolution weight, [classes, feature_size, 1, 1, 1]. Only a
/// full segmentation network has it, an encoder-only checkpoint does not.
pub const SEG_HEAD_WEIGHT: &str = "out.conv.conv.weight";

impl Checkpoint {
    /// Returns every tensor with the DataParallel `module.` prefix removed.
    pub fn unwrapped(&self) -> HashMap<String, Tensor> {
        self.tensors
            .iter()
            .map(|(k, v)| (k.strip_prefix(WRAPPER_PREFIX).unwrap_or(k).to_string(), v.clone()))
            .collect()
    }

    /// Returns whether the checkpoint contains a whole SwinUNETR (encoder, decoder and output head).
    pub fn has_segmentation_head(&self) -> bool {
        self.unwrapped().contains_key(SEG_HEAD_WEIGHT)
    }
}

/// Infer a SwinUNETR's configuration from a full state dict (`module.` already stripped).
pub fn infer_swin_unetr_config(t: &HashMap<String, Tensor>, path: &Path) -> Result<SwinUnetrConfig> {
    let head = t.get(SEG_HEAD_WEIGHT).ok_or_else(|| {
        Error::file(path, format!("not a SwinUNETR checkpoint: tensor `{SEG_HEAD_WEIGHT}` is missing"))
    })?;
    let encoder: HashMap<String, Tensor> = t
        .iter()
        .filter_map(|(k, v)| k.strip_prefix(ENCODER_PREFIX).map(|s| (s.to_string(), v.clone())))
        .collect();
    let encoder = infer_swin_config(&encoder, path)?;
    Ok(SwinUnetrConfig { out_channels: head.dims()[0], encoder })
}

/// Load a fine-tuned SwinUNETR (the layout `torch.save(model.state_dict())` gives, or the
/// same names in safetensors) onto `device`.
pub fn load_swin_unetr(path: &Path, device: &Device) -> Result<SwinUnetr> {
    let tensors = Checkpoint::read(path)?.unwrapped();
    let cfg = infer_swin_unetr_config(&tensors, path)?;
    let vb = VarBuilder::from_tensors(to_f32(tensors)?, DType::F32, device);
    SwinUnetr::load(&cfg, vb).map_err(|e| Error::file(path, format!("cannot build the SwinUNETR: {e}")))
}

fn to_f32(t: HashMap<String, Tensor>) -> Result<HashMap<String, Tensor>> {
    t.into_iter()
        .map(|(k, v)| {
            let v = if v.dtype().is_float() { v.to_dtype(DType::F32)? } else { v };
            Ok((k, v))
        })
        .collect()
}

/// Write the encoder of any accepted checkpoint as a `.safetensors` file with bare
/// MONAI names, f32, leaving out `relative_position_index` buffers (the loader
/// rebuilds them). The file is written to a temporary name and renamed.
pub fn convert_to_safetensors(input: &Path, output: &Path) -> Result<SwinConfig> {
    let ckpt = Checkpoint::read(input)?;
    let tensors = ckpt.encoder_tensors(input)?;
    let cfg = infer_swin_config(&tensors, input)?;
    let kept: HashMap<String, Tensor> = to_f32(tensors)?
        .into_iter()
        .filter(|(k, _)| !k.ends_with("relative_position_index"))
        .collect();

    write_safetensors(&kept, output)?;
    Ok(cfg)
}

/// Writes `tensors` to `output` as safetensors, atomically (temporary file beside it, then
/// rename).
pub fn write_safetensors(tensors: &HashMap<String, Tensor>, output: &Path) -> Result<()> {
    // Serialized in memory and written through our own temporary file: the
    // safetensors crate's file writer makes a 0600 temporary of its own.
    let bytes = safetensors::serialize(tensors, None).map_err(|e| Error::file(output, e.to_string()))?;
    let mut tmp = crate::io::atomic::temp_file_beside(output)?;
    tmp.write_all(&bytes).and_then(|_| tmp.as_file().sync_all()).map_err(|e| Error::io(output, e))?;
    tmp.persist(output).map_err(|e| Error::io(output, e.error))?;
    Ok(())
}
