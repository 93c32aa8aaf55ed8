//! The trainable pretraining network: building it fresh or from a checkpoint, its three
//! optimizers, one training iteration (steps A, B and C of [`super::objective`]), the
//! validation reconstruction loss, and the exports.
//!
//! The loop itself (schedules, checkpoints, resume, signals, log) is [`crate::train::run`].

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::{VarBuilder, VarMap};
use rand::Rng;

use super::data::BatchTensors;
use super::objective::{
    discriminator_step, generator_step, reconstruction_step, style_noise, ObjectiveConfig, StepInputs, StepLoss,
};
use crate::error::{Error, Result};
use crate::model::prism_pretrain::{ParamGroup, PretrainConfig, PrismPretrain};
use crate::train::init::{fresh_tensor, normal};
use crate::train::{named_vars, AdamW, AdamWConfig, Losses, NamedOptimizer, Param, TrainState, WarmupCosine};
use crate::weights::{write_safetensors, Checkpoint};

/// Prefix of the encoder's tensors.
pub const ENCODER: &str = "swinViT.";

/// Names of the three optimizers (log columns `lr.NAME`): step A, B and C.
pub const OPTIMIZERS: [&str; 3] = ["all", "encoder", "generator"];

/// A pretraining network whose tensors are variables of `varmap`.
pub struct Trainable {
    pub net: PrismPretrain,
    pub varmap: VarMap,
    /// How many tensors came from the checkpoint (0 from scratch).
    pub loaded: usize,
}

/// Builds the network. `init` (a PRISM checkpoint, whole or encoder only, or a file this tool
/// exported) provides the tensors it has, and the rest start as PyTorch initializes them.
pub fn build(config: &PretrainConfig, init: Option<&Path>, device: &Device, rng: &mut impl Rng) -> Result<Trainable> {
    let varmap = VarMap::new();
    let net = PrismPretrain::load(config, VarBuilder::from_varmap(&varmap, DType::F32, device))
        .map_err(|e| Error::invalid(format!("cannot build the pretraining network: {e}")))?;

    let start = match init {
        Some(path) => starting_tensors(path)?,
        None => HashMap::new(),
    };
    let vars = named_vars(&varmap);
    let weight_dims: HashMap<String, Vec<usize>> = vars.iter().map(|(n, v)| (n.clone(), v.dims().to_vec())).collect();
    let mut loaded = 0;
    for (name, var) in &vars {
        let value = match start.get(name) {
            Some(t) => {
                loaded += 1;
                check_shape(name, t, var, init)?;
                t.to_dtype(DType::F32)?.to_device(device)?
            }
            None if is_modulated_weight(name) => {
                // PRISM's ModConv3d draws its kernel from N(0, 1); demodulation and the
                // InstanceNorm after it make the scale irrelevant.
                let n: usize = var.dims().iter().product();
                Tensor::from_vec((0..n).map(|_| normal(rng)).collect::<Vec<f32>>(), var.dims(), device)?
            }
            None => fresh_tensor(name, var.dims(), &weight_dims, device, rng)?,
        };
        var.set(&value)?;
    }
    Ok(Trainable { net, varmap, loaded })
}

fn is_modulated_weight(name: &str) -> bool {
    name.starts_with("decoder") && name.ends_with(".0.weight")
}

/// Reads a checkpoint's tensors under this module's names. PRISM's `state_dict()` also lists
/// every module under the aliases of its `D`/`G` dictionaries and `up_decoder` list. An alias
/// is mapped back when the primary name is absent.
fn starting_tensors(path: &Path) -> Result<HashMap<String, Tensor>> {
    let checkpoint = Checkpoint::read(path)?;
    let mut tensors = checkpoint.unwrapped();
    let aliases: Vec<(String, Tensor)> = tensors
        .iter()
        .filter_map(|(k, v)| primary_name(k).map(|p| (p, v.clone())))
        .collect();
    for (name, tensor) in aliases {
        tensors.entry(name).or_insert(tensor);
    }
    if !tensors.keys().any(|k| k.starts_with(ENCODER)) {
        // An encoder-only file (prism-embed's layout or another accepted encoder checkpoint).
        let encoder = checkpoint.encoder_tensors(path)?;
        tensors = encoder.into_iter().map(|(k, v)| (format!("{ENCODER}{k}"), v)).collect();
    }
    tensors.retain(|k, _| !k.ends_with("relative_position_index"));
    Ok(tensors)
}

/// Maps one of PRISM's alias names to its primary name.
fn primary_name(alias: &str) -> Option<String> {
    const RENAMES: [(&str, &str); 12] = [
        ("D.swinViT.", "swinViT."),
        ("D.str_disen.", "structure_disentanglement."),
        ("D.seq_disen.", "sequence_disentanglement."),
        ("D.latent_agg.", "latent_agg."),
        ("D.meta_head.", "meta_head."),
        ("D.part_head.", "part_head."),
        ("D.disc_head.", "disc_head."),
        ("D.str_contrastive_head.", "str_contrastive_head."),
        ("D.seq_contrastive_head.", "seq_contrastive_head."),
        ("G.recon_head.", "recon_head."),
        ("G.wmap.", "w_mapping."),
        ("G.mix_w.", "mix_w."),
    ];
    for (from, to) in RENAMES {
        if let Some(rest) = alias.strip_prefix(from) {
            return Some(format!("{to}{rest}"));
        }
    }
    // `up_decoder.i.…` and `G.decoder.i.…` are `decoder{i+1}.…`.
    let rest = alias.strip_prefix("up_decoder.").or_else(|| alias.strip_prefix("G.decoder."))?;
    let (index, tail) = rest.split_once('.')?;
    let index: usize = index.parse().ok()?;
    Some(format!("decoder{}.{tail}", index + 1))
}

fn check_shape(name: &str, t: &Tensor, var: &Var, init: Option<&Path>) -> Result<()> {
    if t.dims() == var.dims() {
        return Ok(());
    }
    let source = init.map(|p| p.display().to_string()).unwrap_or_default();
    Err(Error::invalid(format!(
        "{source}: tensor `{name}` has shape {:?}, the network needs {:?}; the checkpoint was made for \
         another feature size",
        t.dims(),
        var.dims()
    )))
}

/// Learning-rate settings shared by the three optimizers.
#[derive(Debug, Clone, Copy)]
pub struct OptimizerSettings {
    pub lr: f64,
    pub weight_decay: f64,
    pub warmup_steps: u64,
    pub max_steps: u64,
}

/// Step 0 of a run: the model's variables and the three AdamW optimizers (every parameter;
/// the encoder side; the generator side), each with its own warm-up + cosine schedule.
/// Weight decay applies to every parameter, as PRISM's `torch.optim.AdamW(params)` does.
pub fn training_state(trainable: &Trainable, settings: OptimizerSettings, seed: u64) -> Result<TrainState> {
    let vars = named_vars(&trainable.varmap);
    let config = AdamWConfig { lr: settings.lr, weight_decay: settings.weight_decay, ..AdamWConfig::default() };
    let group = |keep: &dyn Fn(&str) -> bool| -> Vec<Param> {
        vars.iter()
            .filter(|(name, _)| keep(name))
            .map(|(name, var)| Param::with_weight_decay(name.clone(), var.clone(), true))
            .collect()
    };
    let sets = [
        group(&|_| true),
        group(&|n| ParamGroup::of(n) == ParamGroup::Encoder),
        group(&|n| ParamGroup::of(n) == ParamGroup::Generator),
    ];
    let mut optimizers = Vec::new();
    for (name, params) in OPTIMIZERS.iter().zip(sets) {
        optimizers.push(NamedOptimizer {
            name: name.to_string(),
            optimizer: AdamW::new(params, config)?,
            schedule: Some(WarmupCosine::new(settings.lr, settings.warmup_steps, settings.max_steps, 0.0)?),
        });
    }
    TrainState::new(vars, optimizers, seed)
}

impl From<BatchTensors> for StepInputs {
    fn from(b: BatchTensors) -> StepInputs {
        StepInputs {
            clean: b.clean,
            corrupted: b.corrupted,
            sequence: b.seq_params,
            sequence_mask: b.seq_mask,
            body_part: b.body_part,
        }
    }
}

/// Runs steps A, B and (when due) C on one batch and returns every loss term by name. On the
/// steps that skip C its terms are absent, and the log leaves their cells empty.
pub fn train_step(net: &PrismPretrain, state: &mut TrainState, x: &StepInputs, cfg: &ObjectiveConfig) -> Result<Losses> {
    let mut losses = Losses::new();
    let batch = x.clean.dim(0)?;
    let latent = net.config().latent_dim();
    let device = x.clean.device().clone();

    // Each step's graph is dropped before the next starts, so only one is in memory.
    let recon = {
        let (loss, recon) = reconstruction_step(net, x, cfg)?;
        apply(state, 0, &loss)?;
        record(&mut losses, "a", &loss)?;
        recon
    };
    {
        let z = style_noise(batch, latent, &mut state.rng, &device)?;
        let loss = discriminator_step(net, x, &recon, &z, cfg)?;
        apply(state, 1, &loss)?;
        record(&mut losses, "b", &loss)?;
    }
    if cfg.generator_every > 0 && state.step.is_multiple_of(cfg.generator_every) {
        let z = style_noise(batch, latent, &mut state.rng, &device)?;
        let loss = generator_step(net, x, &z, cfg)?;
        apply(state, 2, &loss)?;
        record(&mut losses, "c", &loss)?;
    }
    Ok(losses)
}

/// Backpropagates `loss` and steps optimizer `index`; the other optimizers' parameters get
/// gradients too but are not changed.
fn apply(state: &mut TrainState, index: usize, loss: &StepLoss) -> Result<()> {
    let grads = loss.total.backward()?;
    state.optimizers[index].optimizer.step(&grads)?;
    Ok(())
}

fn record(losses: &mut Losses, step: &str, loss: &StepLoss) -> Result<()> {
    losses.insert(format!("{step}_total"), scalar(&loss.total)?);
    for (name, value) in &loss.terms {
        losses.insert(name.to_string(), scalar(value)?);
    }
    Ok(())
}

fn scalar(t: &Tensor) -> Result<f64> {
    Ok(t.to_dtype(DType::F64)?.to_scalar::<f64>()?)
}

/// Names of every loss term [`train_step`] can return, in log order.
pub fn loss_names() -> Vec<String> {
    [
        "a_total", "recon", "sequence", "body_part", "b_total", "disc", "disc_sequence", "disc_body_part", "c_total",
        "gen_adversarial", "gen_recon", "contrastive",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// Mean L1 reconstruction loss of the corrupted validation crops against the clean ones.
pub fn validation_loss(net: &PrismPretrain, batches: &[StepInputs]) -> Result<f64> {
    let mut sum = 0.0;
    for x in batches {
        let encoded = net.encode(&x.corrupted.detach(), None)?;
        let recon = net.decode(&encoded.latent, None)?;
        sum += scalar(&super::objective::l1(&recon, &x.clean)?)?;
    }
    Ok(sum / batches.len().max(1) as f64)
}

/// Writes the encoder, in the layout `prism-embed --weights` loads (bare MONAI names).
pub fn export_encoder(trainable: &Trainable, path: &Path) -> Result<()> {
    let tensors: HashMap<String, Tensor> = named_vars(&trainable.varmap)
        .into_iter()
        .filter_map(|(name, var)| name.strip_prefix(ENCODER).map(|n| (n.to_string(), var.as_tensor().clone())))
        .collect();
    write_safetensors(&tensors, path)
}

/// Writes every tensor of the network under PRISM's primary names, so `--init` and other
/// tools can start from it.
pub fn export_network(trainable: &Trainable, path: &Path) -> Result<()> {
    let tensors: HashMap<String, Tensor> = named_vars(&trainable.varmap)
        .into_iter()
        .map(|(name, var)| (name, var.as_tensor().clone()))
        .collect();
    write_safetensors(&tensors, path)
}
