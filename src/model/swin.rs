//! PRISM's image encoder: MONAI 1.4.0's `SwinTransformer` with `use_v2=True`.
//!
//! The network, stage by stage (C = `embed_dim`):
//!
//! ```text
//! x [B, in, D, H, W]
//!  └ patch_embed: Conv3d k=p s=p (input zero-padded at the end to a multiple of p)  → stage 0, C
//!     └ layers1c: residual conv block   └ layers1: 2 Swin blocks + patch merging    → stage 1, 2C
//!        └ layers2c …                      └ layers2 …                               → stage 2, 4C
//!           └ layers3c …                      └ layers3 …                            → stage 3, 8C
//!              └ layers4c …                      └ layers4 …                         → stage 4, 16C
//! ```
//!
//! Each of the five stage outputs goes through a layer norm over channels with no
//! weight or bias (`proj_out(normalize=True)`). Module and tensor names mirror the
//! checkpoint (`layers1.0.blocks.0.attn.qkv.weight`), so loading is a straight walk.
//!
//! Behaviour reproduced exactly from MONAI 1.4.0, because PRISM's weights were trained
//! with it:
//! - Patch merging concatenates the 2×2×2 neighbours in MONAI 1.4.0's order, which
//!   repeats two offsets and leaves out two (see [`MONAI_1_4_MERGE_ORDER`]).
//! - The window shrinks on an axis whose feature size is ≤ the window, and that axis is
//!   not shifted. The relative-position bias then uses the top-left `n×n` block of the
//!   index built for the full window.
//! - Odd blocks roll the features by −shift and mask cross-region attention with −100.
//! - GELU is the exact (erf) form; layer norms and instance norms use eps 1e-5.
//!
//! Tensors inside the Swin stages are channel-last `[B, D, H, W, C]`; stage inputs and
//! outputs are channel-first `[B, C, D, H, W]`, with D, H, W the NIfTI voxel axes i, j, k.

use candle_core::{Device, Module, Result, Tensor, D};
use candle_nn::{Linear, VarBuilder};

use super::unet_blocks::UnetResBlock;
use crate::ops;

/// Epsilon of every LayerNorm and InstanceNorm in the encoder (PyTorch's default).
const NORM_EPS: f64 = 1e-5;

/// Attention logit added between tokens from different regions of a shifted window.
const MASK_VALUE: f32 = -100.0;

/// Offsets `(d, h, w)` of the eight 2×2×2 neighbours as MONAI 1.4.0's `PatchMerging`
/// concatenates them: (1,0,1)'s partners (1,1,0) and (0,1,1) are missing and (0,1,0),
/// (0,0,1) appear twice. MONAI 1.5 fixed this; PRISM's checkpoints need the old order.
pub const MONAI_1_4_MERGE_ORDER: [(usize, usize, usize); 8] = [
    (0, 0, 0),
    (1, 0, 0),
    (0, 1, 0),
    (0, 0, 1),
    (1, 0, 1),
    (0, 1, 0),
    (0, 0, 1),
    (1, 1, 1),
];

/// The complete 2×2×2 neighbourhood in `itertools.product` order (MONAI's `PatchMergingV2`).
pub const FULL_MERGE_ORDER: [(usize, usize, usize); 8] = [
    (0, 0, 0),
    (0, 0, 1),
    (0, 1, 0),
    (0, 1, 1),
    (1, 0, 0),
    (1, 0, 1),
    (1, 1, 0),
    (1, 1, 1),
];

/// Neighbour order of patch merging.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Merging {
    /// MONAI ≤ 1.4 `"merging"`: the order PRISM was trained with.
    Monai14,
    /// MONAI `"mergingv2"` (and `"merging"` from 1.5 on): all eight neighbours.
    Full,
}

/// Encoder hyper-parameters. `SwinConfig::prism_base()` is the published PRISM size.
#[derive(Debug, Clone, PartialEq)]
pub struct SwinConfig {
    pub in_chans: usize,
    pub embed_dim: usize,
    pub depths: Vec<usize>,
    pub num_heads: Vec<usize>,
    pub window_size: usize,
    pub patch_size: usize,
    pub mlp_ratio: usize,
    pub use_v2: bool,
    pub merging: Merging,
}

impl SwinConfig {
    /// PRISM's published encoder: embed_dim 48, depths 2-2-2-2, heads 3-6-12-24, window 7.
    pub fn prism_base() -> Self {
        SwinConfig {
            in_chans: 1,
            embed_dim: 48,
            depths: vec![2, 2, 2, 2],
            num_heads: vec![3, 6, 12, 24],
            window_size: 7,
            patch_size: 2,
            mlp_ratio: 4,
            use_v2: true,
            merging: Merging::Monai14,
        }
    }

    /// Channels of stage `s` output (s = 0 is the patch embedding).
    pub fn stage_channels(&self, s: usize) -> usize {
        self.embed_dim << s
    }

    /// Channels of the last stage: the length of the default embedding.
    pub fn num_features(&self) -> usize {
        self.stage_channels(self.depths.len())
    }

    /// Total down-sampling factor from input to the last stage (32 for PRISM).
    pub fn downsampling(&self) -> usize {
        self.patch_size << self.depths.len()
    }
}

/// Window size and shift actually used for a feature map of size `dims`: an axis no
/// larger than the window gets a window of its own size and no shift.
fn window_and_shift(dims: [usize; 3], window: usize, shift: usize) -> ([usize; 3], [usize; 3]) {
    let mut ws = [window; 3];
    let mut ss = [shift; 3];
    for a in 0..3 {
        if dims[a] <= window {
            ws[a] = dims[a];
            ss[a] = 0;
        }
    }
    (ws, ss)
}

/// Flat relative-position index of a full `w×w×w` window, `[w³ · w³]`, as MONAI builds it.
fn relative_position_index(w: usize) -> Vec<u32> {
    let n = w * w * w;
    let coords: Vec<[i64; 3]> = (0..n)
        .map(|t| [(t / (w * w)) as i64, ((t / w) % w) as i64, (t % w) as i64])
        .collect();
    let span = (2 * w - 1) as i64;
    let shift = (w - 1) as i64;
    let mut index = Vec::with_capacity(n * n);
    for a in &coords {
        for b in &coords {
            let rel = [a[0] - b[0] + shift, a[1] - b[1] + shift, a[2] - b[2] + shift];
            index.push((rel[0] * span * span + rel[1] * span + rel[2]) as u32);
        }
    }
    index
}

/// Python's `slice(start, stop)` on an axis of length `len`, as a half-open range.
fn py_slice(start: Option<i64>, stop: Option<i64>, len: usize) -> std::ops::Range<usize> {
    let len = len as i64;
    let resolve = |v: i64| if v < 0 { (v + len).max(0) } else { v.min(len) };
    let s = start.map_or(0, resolve);
    let e = stop.map_or(len, resolve);
    s as usize..(e.max(s)) as usize
}

/// The shifted-window attention masks of one stage, stored once per distinct mask.
///
/// MONAI's `compute_mask` builds a `[num_windows, n, n]` tensor (1.3 GB at the first
/// stage of a 192³ input), but windows away from the far edges hold a single region
/// and share an all-zero mask: at most 8 distinct masks exist in 3-D.
#[derive(Debug, Clone)]
struct ShiftMask {
    /// `[m, n, n]`: 0 within a region, −100 across regions.
    masks: Tensor,
    /// For each window in raster order, the index of its mask.
    class: Vec<u32>,
}

/// Region labels as MONAI's `compute_mask` assigns them, for padded feature dims
/// `dims`. Python's slice semantics matter when a shift is 0: `slice(-0, None)`
/// covers the whole axis.
fn region_labels(dims: [usize; 3], ws: [usize; 3], ss: [usize; 3]) -> Vec<u32> {
    let mut region = vec![0u32; dims[0] * dims[1] * dims[2]];
    let slices = |a: usize| {
        let (w, s) = (ws[a] as i64, ss[a] as i64);
        [
            py_slice(None, Some(-w), dims[a]),
            py_slice(Some(-w), Some(-s), dims[a]),
            py_slice(Some(-s), None, dims[a]),
        ]
    };
    let mut count = 0;
    for rd in slices(0) {
        for rh in slices(1) {
            for rw in slices(2) {
                for d in rd.clone() {
                    for h in rh.clone() {
                        for w in rw.clone() {
                            region[(d * dims[1] + h) * dims[2] + w] = count;
                        }
                    }
                }
                count += 1;
            }
        }
    }
    region
}

/// Build the stage's masks: windows whose tokens share the same pattern of region
/// equalities get one mask, so the result is exactly MONAI's mask per window.
fn attention_mask(dims: [usize; 3], ws: [usize; 3], ss: [usize; 3], device: &Device) -> Result<ShiftMask> {
    let region = region_labels(dims, ws, ss);
    let n = ws[0] * ws[1] * ws[2];
    let mut patterns: Vec<Vec<u32>> = Vec::new();
    let mut class = Vec::new();
    let mut tokens = Vec::with_capacity(n);

    for wd in 0..dims[0] / ws[0] {
        for wh in 0..dims[1] / ws[1] {
            for ww in 0..dims[2] / ws[2] {
                // Labels of the window's tokens in (d, h, w) raster order, renumbered
                // by first occurrence so equal patterns compare equal.
                tokens.clear();
                let mut seen: Vec<u32> = Vec::new();
                for d in 0..ws[0] {
                    for h in 0..ws[1] {
                        for w in 0..ws[2] {
                            let v = (wd * ws[0] + d, wh * ws[1] + h, ww * ws[2] + w);
                            let label = region[(v.0 * dims[1] + v.1) * dims[2] + v.2];
                            let id = seen.iter().position(|&l| l == label).unwrap_or_else(|| {
                                seen.push(label);
                                seen.len() - 1
                            });
                            tokens.push(id as u32);
                        }
                    }
                }
                let id = patterns.iter().position(|p| *p == tokens).unwrap_or_else(|| {
                    patterns.push(tokens.clone());
                    patterns.len() - 1
                });
                class.push(id as u32);
            }
        }
    }

    let mut masks = Vec::with_capacity(patterns.len() * n * n);
    for p in &patterns {
        for a in p {
            masks.extend(p.iter().map(|b| if a == b { 0.0 } else { MASK_VALUE }));
        }
    }
    let masks = Tensor::from_vec(masks, (patterns.len(), n, n), device)?;
    Ok(ShiftMask { masks, class })
}

/// `[B, D, H, W, C]` → `[B·nW, wd·wh·ww, C]`, windows in (d, h, w) raster order.
fn window_partition(x: &Tensor, ws: [usize; 3]) -> Result<Tensor> {
    let (b, d, h, w, c) = x.dims5()?;
    x.reshape(vec![b, d / ws[0], ws[0], h / ws[1], ws[1], w / ws[2], ws[2], c])?
        .permute(vec![0, 1, 3, 5, 2, 4, 6, 7])?
        .contiguous()?
        .reshape((b * (d / ws[0]) * (h / ws[1]) * (w / ws[2]), ws[0] * ws[1] * ws[2], c))
}

/// Inverse of [`window_partition`] for a map of size `[b, d, h, w]`.
fn window_reverse(windows: &Tensor, ws: [usize; 3], b: usize, dims: [usize; 3]) -> Result<Tensor> {
    let [d, h, w] = dims;
    let c = windows.dim(D::Minus1)?;
    windows
        .reshape(vec![b, d / ws[0], h / ws[1], w / ws[2], ws[0], ws[1], ws[2], c])?
        .permute(vec![0, 1, 4, 2, 5, 3, 6, 7])?
        .contiguous()?
        .reshape((b, d, h, w, c))
}

/// Apply a linear layer to the last axis of a tensor of any rank.
fn linear_last(layer: &Linear, x: &Tensor) -> Result<Tensor> {
    let dims = x.dims().to_vec();
    let k = dims[dims.len() - 1];
    let rows: usize = dims[..dims.len() - 1].iter().product();
    let y = layer.forward(&x.reshape((rows, k))?)?;
    let mut out = dims;
    let last = out.len() - 1;
    out[last] = y.dim(1)?;
    y.reshape(out)
}

/// A LayerNorm with learned weight and bias, loaded as `{prefix}.weight/bias`.
#[derive(Debug, Clone)]
struct LayerNorm {
    weight: Tensor,
    bias: Tensor,
}

impl LayerNorm {
    fn load(dim: usize, vb: VarBuilder) -> Result<Self> {
        Ok(LayerNorm {
            weight: vb.get(dim, "weight")?,
            bias: vb.get(dim, "bias")?,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        ops::layer_norm(x, Some(&self.weight), Some(&self.bias), NORM_EPS)
    }
}

/// Multi-head self-attention within windows, with a learned relative-position bias.
#[derive(Debug, Clone)]
struct WindowAttention {
    qkv: Linear,
    proj: Linear,
    /// `[(2w−1)³, heads]`
    bias_table: Tensor,
    /// Flat index into `bias_table` for the full window, `[w³·w³]` (row-major `[w³, w³]`).
    full_index: Vec<u32>,
    num_heads: usize,
    scale: f64,
}

impl WindowAttention {
    fn load(dim: usize, heads: usize, window: usize, vb: VarBuilder) -> Result<Self> {
        let span = 2 * window - 1;
        Ok(WindowAttention {
            qkv: candle_nn::linear(dim, 3 * dim, vb.pp("qkv"))?,
            proj: candle_nn::linear(dim, dim, vb.pp("proj"))?,
            bias_table: vb.get((span * span * span, heads), "relative_position_bias_table")?,
            full_index: relative_position_index(window),
            num_heads: heads,
            scale: ((dim / heads) as f64).powf(-0.5),
        })
    }

    /// Gathers the bias `[heads, n, n]` for windows of `n` tokens. MONAI slices the
    /// full window's index to its top-left `n×n` block, whatever the clipped window's shape.
    fn position_bias(&self, n: usize) -> Result<Tensor> {
        let full = (self.full_index.len() as f64).sqrt() as usize;
        let mut idx = Vec::with_capacity(n * n);
        for r in 0..n {
            idx.extend_from_slice(&self.full_index[r * full..r * full + n]);
        }
        let idx = Tensor::from_vec(idx, n * n, self.bias_table.device())?;
        self.bias_table
            .index_select(&idx, 0)?
            .reshape((n, n, self.num_heads))?
            .permute((2, 0, 1))?
            .contiguous()
    }

    /// `x`: `[nW, n, C]` windows of one image; `bias`: `[m, heads, n, n]` per window
    /// class; `class`: `[nW]` u32.
    fn forward(&self, x: &Tensor, bias: &Tensor, class: &Tensor) -> Result<Tensor> {
        let (nw, n, c) = x.dims3()?;
        let qkv = linear_last(&self.qkv, x)?.reshape((nw, n, 3, self.num_heads, c / self.num_heads))?;
        let y = ops::window_attention(&qkv, bias, class, self.scale)?;
        linear_last(&self.proj, &y)
    }
}

/// Upper bound on attention-matrix elements computed at once; windows are processed
/// in groups below it so whole-volume inference does not hold every window's
/// `heads × n × n` logits at the same time (64 Mi floats = 256 MiB).
const ATTENTION_CHUNK_ELEMS: usize = 64 << 20;

#[derive(Debug, Clone)]
struct Mlp {
    linear1: Linear,
    linear2: Linear,
}

impl Mlp {
    fn load(dim: usize, hidden: usize, vb: VarBuilder) -> Result<Self> {
        Ok(Mlp {
            linear1: candle_nn::linear(dim, hidden, vb.pp("linear1"))?,
            linear2: candle_nn::linear(hidden, dim, vb.pp("linear2"))?,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let h = linear_last(&self.linear1, x)?.gelu_erf()?;
        linear_last(&self.linear2, &h)
    }
}

/// One Swin Transformer block: (shifted) window attention and an MLP, each pre-norm
/// and residual.
#[derive(Debug, Clone)]
struct SwinBlock {
    norm1: LayerNorm,
    attn: WindowAttention,
    norm2: LayerNorm,
    mlp: Mlp,
    window: usize,
    shift: usize,
}

impl SwinBlock {
    fn load(dim: usize, heads: usize, cfg: &SwinConfig, shift: usize, vb: VarBuilder) -> Result<Self> {
        Ok(SwinBlock {
            norm1: LayerNorm::load(dim, vb.pp("norm1"))?,
            attn: WindowAttention::load(dim, heads, cfg.window_size, vb.pp("attn"))?,
            norm2: LayerNorm::load(dim, vb.pp("norm2"))?,
            mlp: Mlp::load(dim, dim * cfg.mlp_ratio, vb.pp("mlp"))?,
            window: cfg.window_size,
            shift,
        })
    }

    /// `x`: `[B, D, H, W, C]`; `mask`: the stage's shifted-window mask.
    fn forward(&self, x: &Tensor, mask: &ShiftMask) -> Result<Tensor> {
        let attended = self.attention_part(x, mask)?;
        let x = (x + attended)?;
        let mlp = self.mlp.forward(&self.norm2.forward(&x)?)?;
        x + mlp
    }

    fn attention_part(&self, x: &Tensor, mask: &ShiftMask) -> Result<Tensor> {
        let (b, d, h, w, _) = x.dims5()?;
        let (ws, ss) = window_and_shift([d, h, w], self.window, self.shift);
        let shifted = ss.iter().any(|&s| s > 0);

        // Normalize, then zero-pad at the end of each axis to a multiple of the window.
        let mut y = self.norm1.forward(x)?;
        let dims = [d, h, w];
        let mut pdims = dims;
        for a in 0..3 {
            pdims[a] = dims[a].div_ceil(ws[a]) * ws[a];
            y = y.pad_with_zeros(a + 1, 0, pdims[a] - dims[a])?;
        }
        if shifted {
            for a in 0..3 {
                y = y.roll(-(ss[a] as i32), a + 1)?;
            }
        }

        // Position bias plus, in shifted blocks, each mask class: [m, heads, n, n].
        let n = ws[0] * ws[1] * ws[2];
        let bias = self.attn.position_bias(n)?.unsqueeze(0)?;
        let windows = window_partition(&y, ws)?;
        let nw = windows.dim(0)? / b;
        let (bias, class) = if shifted {
            (bias.broadcast_add(&mask.masks.unsqueeze(1)?)?, mask.class.clone())
        } else {
            (bias, vec![0; nw])
        };
        let class = Tensor::from_vec(class, nw, x.device())?;

        let per_window = self.attn.num_heads * n * n;
        let chunk = (ATTENTION_CHUNK_ELEMS / per_window).clamp(1, nw);
        let mut outs = Vec::with_capacity(b * nw.div_ceil(chunk));
        for bi in 0..b {
            for start in (0..nw).step_by(chunk) {
                let len = chunk.min(nw - start);
                let xw = windows.narrow(0, bi * nw + start, len)?;
                outs.push(self.attn.forward(&xw, &bias, &class.narrow(0, start, len)?)?);
            }
        }
        let attended = Tensor::cat(&outs, 0)?;

        let mut y = window_reverse(&attended, ws, b, pdims)?;
        if shifted {
            for a in 0..3 {
                y = y.roll(ss[a] as i32, a + 1)?;
            }
        }
        y.narrow(1, 0, d)?.narrow(2, 0, h)?.narrow(3, 0, w)
    }
}

/// Halve each spatial axis and double the channels: concatenate 2×2×2 neighbours,
/// LayerNorm over 8C, then a bias-free Linear 8C → 2C.
#[derive(Debug, Clone)]
struct PatchMerging {
    norm: LayerNorm,
    reduction: Linear,
    order: Tensor,
}

impl PatchMerging {
    fn load(dim: usize, merging: Merging, vb: VarBuilder) -> Result<Self> {
        let offsets = match merging {
            Merging::Monai14 => MONAI_1_4_MERGE_ORDER,
            Merging::Full => FULL_MERGE_ORDER,
        };
        let order: Vec<u32> = offsets.iter().map(|&(i, j, k)| (i * 4 + j * 2 + k) as u32).collect();
        Ok(PatchMerging {
            norm: LayerNorm::load(8 * dim, vb.pp("norm"))?,
            reduction: candle_nn::linear_no_bias(8 * dim, 2 * dim, vb.pp("reduction"))?,
            order: Tensor::from_vec(order, 8, vb.device())?,
        })
    }

    /// `x`: `[B, D, H, W, C]` → `[B, ⌈D/2⌉, ⌈H/2⌉, ⌈W/2⌉, 2C]`; odd axes are zero-padded at the end.
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (b, d, h, w, c) = x.dims5()?;
        let x = x
            .pad_with_zeros(1, 0, d % 2)?
            .pad_with_zeros(2, 0, h % 2)?
            .pad_with_zeros(3, 0, w % 2)?;
        let (d2, h2, w2) = (d.div_ceil(2), h.div_ceil(2), w.div_ceil(2));

        // Gather the neighbours as [B, D/2, H/2, W/2, 8 (= i·4 + j·2 + k), C], then
        // pick them in the merge order.
        let neighbours = x
            .reshape(vec![b, d2, 2, h2, 2, w2, 2, c])?
            .permute(vec![0, 1, 3, 5, 2, 4, 6, 7])?
            .contiguous()?
            .reshape((b, d2, h2, w2, 8, c))?;
        let merged = neighbours
            .index_select(&self.order, 4)?
            .reshape((b, d2, h2, w2, 8 * c))?;
        linear_last(&self.reduction, &self.norm.forward(&merged)?)
    }
}

/// One Swin stage (`layersN.0`): its blocks, alternately unshifted and shifted, then
/// patch merging.
#[derive(Debug, Clone)]
struct BasicLayer {
    blocks: Vec<SwinBlock>,
    downsample: PatchMerging,
    window: usize,
}

impl BasicLayer {
    fn load(stage: usize, cfg: &SwinConfig, vb: VarBuilder) -> Result<Self> {
        let dim = cfg.stage_channels(stage);
        let shift = cfg.window_size / 2;
        let blocks = (0..cfg.depths[stage])
            .map(|i| {
                let s = if i % 2 == 0 { 0 } else { shift };
                SwinBlock::load(dim, cfg.num_heads[stage], cfg, s, vb.pp("blocks").pp(i))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(BasicLayer {
            blocks,
            downsample: PatchMerging::load(dim, cfg.merging, vb.pp("downsample"))?,
            window: cfg.window_size,
        })
    }

    /// `x`: `[B, C, D, H, W]` → `[B, 2C, D/2, H/2, W/2]`.
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (_, _, d, h, w) = x.dims5()?;
        let (ws, ss) = window_and_shift([d, h, w], self.window, self.window / 2);
        let padded = [d.div_ceil(ws[0]) * ws[0], h.div_ceil(ws[1]) * ws[1], w.div_ceil(ws[2]) * ws[2]];
        let mask = attention_mask(padded, ws, ss, x.device())?;

        let mut y = x.permute((0, 2, 3, 4, 1))?.contiguous()?;
        for block in &self.blocks {
            y = block.forward(&y, &mask)?;
        }
        self.downsample.forward(&y)?.permute((0, 4, 1, 2, 3))?.contiguous()
    }
}

/// The PRISM encoder. [`SwinEncoder::forward`] returns the five normalized stage outputs.
#[derive(Debug, Clone)]
pub struct SwinEncoder {
    patch_embed_w: Tensor,
    patch_embed_b: Tensor,
    conv_blocks: Vec<UnetResBlock>,
    layers: Vec<BasicLayer>,
    config: SwinConfig,
}

impl SwinEncoder {
    /// Build from tensors named as in MONAI's `SwinTransformer.state_dict()` (no prefix).
    pub fn load(cfg: &SwinConfig, vb: VarBuilder) -> Result<Self> {
        let p = cfg.patch_size;
        let stages = cfg.depths.len();
        let conv_blocks = if cfg.use_v2 {
            (0..stages)
                .map(|s| {
                    let c = cfg.stage_channels(s);
                    UnetResBlock::load(c, c, vb.pp(format!("layers{}c", s + 1)).pp(0).pp("layer"))
                })
                .collect::<Result<Vec<_>>>()?
        } else {
            Vec::new()
        };
        let layers = (0..stages)
            .map(|s| BasicLayer::load(s, cfg, vb.pp(format!("layers{}", s + 1)).pp(0)))
            .collect::<Result<Vec<_>>>()?;
        Ok(SwinEncoder {
            patch_embed_w: vb.get((cfg.embed_dim, cfg.in_chans, p, p, p), "patch_embed.proj.weight")?,
            patch_embed_b: vb.get(cfg.embed_dim, "patch_embed.proj.bias")?,
            conv_blocks,
            layers,
            config: cfg.clone(),
        })
    }

    pub fn config(&self) -> &SwinConfig {
        &self.config
    }

    /// `x`: `[B, in_chans, D, H, W]` (f32). Returns the five stage outputs, each
    /// layer-normalized over channels: `[B, C·2^s, ⌈D/2^(s+1)⌉, …]` for s = 0..4.
    pub fn forward(&self, x: &Tensor) -> Result<Vec<Tensor>> {
        let mut y = self.patch_embed(x)?;
        let mut outputs = vec![normalize_channels(&y)?];
        for (s, layer) in self.layers.iter().enumerate() {
            if let Some(block) = self.conv_blocks.get(s) {
                y = block.forward(&y)?;
            }
            y = layer.forward(&y)?;
            outputs.push(normalize_channels(&y)?);
        }
        Ok(outputs)
    }

    /// Conv3d with kernel = stride = patch size, after zero-padding each spatial axis
    /// at its end to a multiple of the patch size.
    fn patch_embed(&self, x: &Tensor) -> Result<Tensor> {
        let p = self.config.patch_size;
        let mut x = x.clone();
        for axis in 2..5 {
            let n = x.dim(axis)?;
            x = x.pad_with_zeros(axis, 0, (p - n % p) % p)?;
        }
        ops::conv3d(&x, &self.patch_embed_w, Some(&self.patch_embed_b), p, 0)
    }
}

/// Layer norm over the channel axis of `[B, C, D, H, W]`, without weight or bias
/// (MONAI's `proj_out(x, normalize=True)`).
fn normalize_channels(x: &Tensor) -> Result<Tensor> {
    let y = x.permute((0, 2, 3, 4, 1))?;
    ops::layer_norm(&y, None, None, NORM_EPS)?.permute((0, 4, 1, 2, 3))?.contiguous()
}

/// Mean over the spatial axes of a `[B, C, D, H, W]` stage output: `[B, C]`.
pub fn global_average(stage: &Tensor) -> Result<Tensor> {
    let (b, c, _, _, _) = stage.dims5()?;
    stage.reshape((b, c, ()))?.mean(2)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_clipped_on_small_axes() {
        let (ws, ss) = window_and_shift([12, 7, 3], 7, 3);
        assert_eq!(ws, [7, 7, 3]);
        assert_eq!(ss, [3, 0, 0]);
    }

    #[test]
    fn relative_index_matches_monai_corners() {
        let idx = relative_position_index(7);
        // Token 0 against itself sits at the table centre (6, 6, 6).
        assert_eq!(idx[0], 6 * 169 + 6 * 13 + 6);
        // Last token (6,6,6) against token 0: offset (6,6,6) shifted to (12,12,12).
        assert_eq!(idx[342 * 343], 2196);
        // Token 0 against the last token: offset (−6,−6,−6) shifted to (0,0,0).
        assert_eq!(idx[342], 0);
    }

    #[test]
    fn py_slice_follows_python_semantics() {
        assert_eq!(py_slice(None, Some(-7), 14), 0..7);
        assert_eq!(py_slice(Some(-7), Some(-3), 14), 7..11);
        assert_eq!(py_slice(Some(-3), None, 14), 11..14);
        // A zero shift: slice(-7, -0) is empty and slice(-0, None) is the whole axis.
        assert_eq!(py_slice(Some(-7), Some(0), 14), 7..7);
        assert_eq!(py_slice(Some(0), None, 14), 0..14);
    }

    #[test]
    fn mask_blocks_cross_region_attention() {
        let mask = attention_mask([14, 14, 14], [7, 7, 7], [3, 3, 3], &Device::Cpu).unwrap();
        // 2×2×2 windows: one single-region window and seven with distinct splits.
        assert_eq!(mask.class.len(), 8);
        assert_eq!(mask.masks.dims(), &[8, 343, 343]);
        // The first window lies in a single region: no masking.
        let first = mask.masks.get(mask.class[0] as usize).unwrap();
        let first: f32 = first.abs().unwrap().sum_all().unwrap().to_scalar().unwrap();
        assert_eq!(first, 0.0);
        // The last window contains 8 regions: tokens (0,0,0) and (6,6,6) differ.
        let last = mask.masks.get(mask.class[7] as usize).unwrap();
        let corner = last.get(0).unwrap().get(342).unwrap().to_scalar::<f32>().unwrap();
        assert_eq!(corner, MASK_VALUE);
    }

    #[test]
    fn mask_classes_are_shared_by_inner_windows() {
        let mask = attention_mask([28, 28, 28], [7, 7, 7], [3, 3, 3], &Device::Cpu).unwrap();
        assert_eq!(mask.class.len(), 64);
        assert_eq!(mask.masks.dim(0).unwrap(), 8);
        // Window (0,0,0) and (1,2,1) are both interior: same class.
        assert_eq!(mask.class[0], mask.class[16 + 2 * 4 + 1]);
    }

    #[test]
    fn window_partition_round_trip() {
        let x = Tensor::arange(0f32, (2 * 14 * 7 * 21 * 3) as f32, &Device::Cpu)
            .unwrap()
            .reshape((2, 14, 7, 21, 3))
            .unwrap();
        let w = window_partition(&x, [7, 7, 7]).unwrap();
        assert_eq!(w.dims(), &[12, 343, 3]);
        let back = window_reverse(&w, [7, 7, 7], 2, [14, 7, 21]).unwrap();
        let diff: f32 = (back - &x).unwrap().abs().unwrap().sum_all().unwrap().to_scalar().unwrap();
        assert_eq!(diff, 0.0);
    }
}
