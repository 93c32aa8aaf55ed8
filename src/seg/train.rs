//! Fine-tuning SwinUNETR: the trainable network (from a whole SwinUNETR, from a PRISM encoder
//! with a fresh decoder, or from scratch), which parameters train, one DiceCE step, validation
//! Dice, and the export `prism-seg predict` loads.
//!
//! The loop itself (schedules, checkpoints, resume, signals, log) is [`crate::train::run`].

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::{VarBuilder, VarMap};
use rand::Rng;

use super::augment::{sample_batch, AugmentOptions};
use super::dataset::Case;
use super::loss::{dice_ce_loss_with, DiceCeOptions};
use super::metrics::evaluate_labels;
use super::sliding::{self, SlidingWindow};
use crate::error::{Error, Result};
use crate::model::{SwinUnetr, SwinUnetrConfig};
use crate::train::init::fresh_tensor;
use crate::train::{AdamW, Losses};
use crate::weights::{Checkpoint, SEG_HEAD_WEIGHT};

/// Prefix of the encoder's tensors inside a SwinUNETR state dict.
const ENCODER: &str = "swinViT.";

/// Source of the starting weights.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Init<'a> {
    /// Every tensor drawn as PyTorch initializes a fresh module.
    Scratch,
    /// A checkpoint: a whole SwinUNETR (every tensor is taken) or a PRISM encoder (the encoder
    /// is taken, decoder and output head start fresh).
    Checkpoint(&'a Path),
}

/// Set of parameters kept fixed during training.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Freeze {
    /// Train everything.
    None,
    /// Keep the patch embedding and the first N of the four encoder stages fixed.
    Stages(usize),
    /// Keep the whole encoder fixed; train the decoder and output head.
    Encoder,
}

impl Freeze {
    /// Returns whether the tensor `name` (state-dict naming) stays fixed.
    pub fn is_frozen(self, name: &str) -> bool {
        let Some(rest) = name.strip_prefix(ENCODER) else { return false };
        match self {
            Freeze::None => false,
            Freeze::Encoder => true,
            Freeze::Stages(n) => {
                rest.starts_with("patch_embed.")
                    || (1..=n).any(|s| rest.starts_with(&format!("layers{s}.")) || rest.starts_with(&format!("layers{s}c.")))
            }
        }
    }
}

/// A SwinUNETR whose tensors are variables of `varmap`, so candle records gradients for them.
pub struct Trainable {
    pub net: SwinUnetr,
    pub varmap: VarMap,
    /// How many tensors came from the checkpoint (0 from scratch).
    pub loaded: usize,
}

/// Builds the trainable network. `config` gives the shape when starting from scratch or from an
/// encoder, and its encoder part must then match the checkpoint's (see
/// [`crate::weights::infer_swin_config`]). A whole SwinUNETR checkpoint brings its own shape.
pub fn build(config: &SwinUnetrConfig, init: Init<'_>, device: &Device, rng: &mut impl Rng) -> Result<Trainable> {
    let varmap = VarMap::new();
    let net = SwinUnetr::load(config, VarBuilder::from_varmap(&varmap, DType::F32, device))
        .map_err(|e| Error::invalid(format!("cannot build the SwinUNETR: {e}")))?;

    let start = match init {
        Init::Scratch => HashMap::new(),
        Init::Checkpoint(path) => starting_tensors(path)?,
    };
    let vars = crate::train::named_vars(&varmap);
    let weight_dims: HashMap<String, Vec<usize>> = vars.iter().map(|(n, v)| (n.clone(), v.dims().to_vec())).collect();
    let mut loaded = 0;
    for (name, var) in vars {
        let value = match start.get(&name) {
            Some(t) => {
                loaded += 1;
                check_shape(&name, t, &var, init)?;
                t.to_dtype(DType::F32)?.to_device(device)?
            }
            None => fresh_tensor(&name, var.dims(), &weight_dims, device, rng)?,
        };
        var.set(&value)?;
    }
    Ok(Trainable { net, varmap, loaded })
}

/// Reads the tensors a checkpoint provides, in SwinUNETR state-dict naming.
fn starting_tensors(path: &Path) -> Result<HashMap<String, Tensor>> {
    let checkpoint = Checkpoint::read(path)?;
    if checkpoint.has_segmentation_head() {
        return Ok(checkpoint.unwrapped());
    }
    let encoder = checkpoint.encoder_tensors(path)?;
    Ok(encoder.into_iter().map(|(k, v)| (format!("{ENCODER}{k}"), v)).collect())
}

fn check_shape(name: &str, t: &Tensor, var: &Var, init: Init<'_>) -> Result<()> {
    if t.dims() == var.dims() {
        return Ok(());
    }
    let source = match init {
        Init::Checkpoint(p) => p.display().to_string(),
        Init::Scratch => String::new(),
    };
    Err(Error::invalid(format!(
        "{source}: tensor `{name}` has shape {:?}, the network needs {:?}; the checkpoint was made for \
         another feature size, class count or number of input channels",
        t.dims(),
        var.dims()
    )))
}

/// Runs one optimization step on a fresh batch and returns the loss terms.
///
/// NOTE: a step needs about 1.7 times the memory of torch's (docs/BENCHMARKS.md): besides the
/// attention weights, the graph keeps every element-wise intermediate of the MLPs, residual
/// adds and activations.
pub fn train_step(
    net: &SwinUnetr,
    optimizer: &mut AdamW,
    cases: &[Case],
    batch_size: usize,
    augment: &AugmentOptions,
    rng: &mut impl Rng,
    device: &Device,
) -> Result<Losses> {
    let batch = sample_batch(cases, batch_size, augment, rng, device)?;
    let logits = net.forward(&batch.images)?;
    let loss = dice_ce_loss_with(&logits, &batch.labels, &DiceCeOptions::default())?;
    let grads = loss.total.backward()?;
    optimizer.step(&grads)?;

    let scalar = |t: &Tensor| -> Result<f64> { Ok(t.to_dtype(DType::F64)?.to_scalar::<f64>()?) };
    Ok(Losses::from([
        ("total".to_string(), scalar(&loss.total)?),
        ("dice".to_string(), scalar(&loss.dice)?),
        ("ce".to_string(), scalar(&loss.cross_entropy)?),
    ]))
}

/// Returns the network with its variables' current values as plain tensors. Inference through
/// it records no gradient graph and takes the fused kernels.
pub fn frozen_copy(trainable: &Trainable, device: &Device) -> Result<SwinUnetr> {
    let tensors: HashMap<String, Tensor> = crate::train::named_vars(&trainable.varmap)
        .into_iter()
        .map(|(name, var)| (name, var.as_tensor().detach()))
        .collect();
    let config = trainable.net.config().clone();
    Ok(SwinUnetr::load(&config, VarBuilder::from_tensors(tensors, DType::F32, device))?)
}

/// Computes the mean foreground Dice of `net` over whole validation cases (sliding windows of
/// `roi`, overlap 0.5), each class weighted equally. A class absent from both prediction and
/// reference counts as 1, as in [`evaluate_labels`].
pub fn validation_dice(net: &SwinUnetr, cases: &[Case], roi: [usize; 3], device: &Device) -> Result<f64> {
    let window = SlidingWindow { roi, overlap: 0.5, mirror: false };
    let mut total = 0.0;
    let mut count = 0usize;
    for case in cases {
        let predicted = predict_case(net, case, &window, device)?;
        let reference = case.label.data.mapv(|v| v as u32);
        let classes: Vec<u32> = (1..case.n_classes as u32).collect();
        for m in evaluate_labels(predicted.view(), reference.view(), case.label.spacing(), &classes)? {
            total += m.dice;
            count += 1;
        }
    }
    Ok(if count == 0 { 0.0 } else { total / count as f64 })
}

/// Segments a loaded case, which is already on the network's grid.
fn predict_case(net: &SwinUnetr, case: &Case, window: &SlidingWindow, device: &Device) -> Result<ndarray::Array3<u32>> {
    let [d, h, w] = case.shape();
    let channels: Vec<Tensor> = case
        .channels
        .iter()
        .map(|c| crate::preprocess::volume_to_tensor(c, device))
        .collect::<candle_core::Result<_>>()?;
    let input = Tensor::cat(&channels, 1)?;
    let classes = case.n_classes;
    let mut labels = ndarray::Array3::<u32>::zeros((d, h, w));
    let plane = h * w;
    sliding::run(&input, classes, window, |x| Ok(net.forward(x)?), |slab| {
        let n = slab.depth * plane;
        let out = labels.as_slice_mut().ok_or_else(|| Error::invalid("label array not contiguous"))?;
        slab.argmax_into(classes, &mut out[slab.start * plane..slab.start * plane + n], |k| k as u32);
        Ok(())
    })?;
    Ok(labels)
}

/// Writes the network's current weights as a SwinUNETR state dict in safetensors, which
/// `prism-seg predict` and PyTorch (`safetensors.torch.load_file`) both read.
pub fn export(trainable: &Trainable, path: &Path) -> Result<()> {
    let tensors: HashMap<String, Tensor> = crate::train::named_vars(&trainable.varmap)
        .into_iter()
        .map(|(name, var)| (name, var.as_tensor().detach()))
        .collect();
    if !tensors.contains_key(SEG_HEAD_WEIGHT) {
        return Err(Error::file(path, "internal: the network has no output head to export"));
    }
    crate::weights::write_safetensors(&tensors, path)
}
