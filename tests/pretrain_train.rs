//! The pretraining network and its three optimizer steps on a small configuration: output
//! shapes, which parameters each step's loss reaches, and that each of the three optimizers
//! changes the parameters it owns.

use std::collections::HashMap;

use candle_core::{DType, Device, Tensor};
use prism::model::prism_pretrain::{ParamGroup, PretrainConfig};
use prism::model::SwinConfig;
use prism::pretrain::objective::{
    discriminator_step, generator_step, reconstruction_step, style_noise, ObjectiveConfig, StepInputs,
};
use prism::pretrain::train::{build, train_step, training_state, OptimizerSettings, Trainable};
use prism::train::named_vars;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

const ROI: usize = 64;

fn small_config() -> PretrainConfig {
    PretrainConfig::around(SwinConfig { embed_dim: 12, depths: vec![1, 1, 1, 1], ..SwinConfig::prism_base() })
}

fn trainable() -> Trainable {
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    build(&small_config(), None, &Device::Cpu, &mut rng).unwrap()
}

/// Two smooth crops with known sequence parameters for the first and none for the second.
fn inputs() -> StepInputs {
    let n = ROI * ROI * ROI;
    let clean: Vec<f32> = (0..2 * n)
        .map(|i| {
            let (b, v) = (i / n, i % n);
            let (x, y, z) = (v / (ROI * ROI), (v / ROI) % ROI, v % ROI);
            ((x as f32 * 0.2).sin() + (y as f32 * 0.15).cos() * (b as f32 + 1.0) + z as f32 / ROI as f32) * 0.5
        })
        .collect();
    let clean = Tensor::from_vec(clean, (2, 1, ROI, ROI, ROI), &Device::Cpu).unwrap();
    let corrupted = clean.clone().affine(0.9, 0.05).unwrap();
    StepInputs {
        clean,
        corrupted,
        sequence: Tensor::new(&[[2000f32, 90.0, 90.0], [0.0, 0.0, 0.0]], &Device::Cpu).unwrap(),
        sequence_mask: Tensor::new(&[[1f32, 1.0, 1.0], [0.0, 0.0, 0.0]], &Device::Cpu).unwrap(),
        body_part: Tensor::new(&[0u32, 6], &Device::Cpu).unwrap(),
    }
}

/// Names of the variables whose gradient in `loss` is non-zero.
fn reached(trainable: &Trainable, loss: &Tensor) -> Vec<String> {
    let grads = loss.backward().unwrap();
    named_vars(&trainable.varmap)
        .into_iter()
        .filter(|(_, var)| {
            grads.get(var.as_tensor()).is_some_and(|g| {
                g.abs().unwrap().sum_all().unwrap().to_dtype(DType::F64).unwrap().to_scalar::<f64>().unwrap() > 0.0
            })
        })
        .map(|(name, _)| name)
        .collect()
}

fn all_names(trainable: &Trainable) -> Vec<String> {
    named_vars(&trainable.varmap).into_iter().map(|(n, _)| n).collect()
}

fn is_projector(name: &str) -> bool {
    name.contains(".projector.")
}

fn is_contrastive_head(name: &str) -> bool {
    name.starts_with("str_contrastive_head.") || name.starts_with("seq_contrastive_head.")
}

#[test]
fn network_reconstructs_at_input_size() {
    let t = trainable();
    let x = inputs();
    let encoded = t.net.encode(&x.corrupted, None).unwrap();
    assert_eq!(encoded.latent.dims(), &[2, 192, 2, 2, 2]);
    assert_eq!(encoded.structure.dims(), &[2, 192, 2, 2, 2]);
    let recon = t.net.decode(&encoded.latent, None).unwrap();
    assert_eq!(recon.dims(), &[2, 1, ROI, ROI, ROI]);
    let heads = t.net.heads(&encoded).unwrap();
    assert_eq!(heads.sequence_parameters.dims(), &[2, 3]);
    assert_eq!(heads.body_part_logits.dims(), &[2, 7]);
    assert_eq!(heads.structure_projection.dims(), &[2, 512]);
}

#[test]
fn style_changes_rendering_not_structure() {
    let t = trainable();
    let x = inputs();
    let mut rng = ChaCha8Rng::seed_from_u64(9);
    let w = t.net.style(&style_noise(2, 192, &mut rng, &Device::Cpu).unwrap()).unwrap();
    let plain = t.net.encode(&x.clean, None).unwrap();
    let styled = t.net.encode(&x.clean, Some(&w)).unwrap();
    let diff = |a: &Tensor, b: &Tensor| -> f32 { (a - b).unwrap().abs().unwrap().max_all().unwrap().to_scalar().unwrap() };
    assert_eq!(diff(&plain.structure, &styled.structure), 0.0);
    assert!(diff(&plain.sequence, &styled.sequence) > 0.0);
    let a = t.net.decode(&plain.latent, None).unwrap();
    let b = t.net.decode(&styled.latent, Some(&w)).unwrap();
    assert!(diff(&a, &b) > 0.0);
}

#[test]
fn reconstruction_step_reaches_encoder_heads_and_plain_decoder() {
    let t = trainable();
    let (loss, _) = reconstruction_step(&t.net, &inputs(), &ObjectiveConfig::default()).unwrap();
    let reached = reached(&t, &loss.total);
    let unused = ["disc_head.", "w_mapping.", "mix_w."];
    for name in all_names(&t) {
        let expected = !is_projector(&name) && !is_contrastive_head(&name) && !unused.iter().any(|p| name.starts_with(p));
        assert_eq!(reached.contains(&name), expected, "{name}");
    }
}

#[test]
fn discriminator_step_reaches_every_trained_encoder_parameter() {
    let t = trainable();
    let x = inputs();
    let (_, recon) = reconstruction_step(&t.net, &x, &ObjectiveConfig::default()).unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let z = style_noise(2, 192, &mut rng, &Device::Cpu).unwrap();
    let loss = discriminator_step(&t.net, &x, &recon, &z, &ObjectiveConfig::default()).unwrap();
    let reached = reached(&t, &loss.total);
    for name in all_names(&t) {
        // The contrastive heads belong to the encoder side but only the generator step uses
        // them, as in PRISM.
        if ParamGroup::of(&name) == ParamGroup::Encoder && !is_contrastive_head(&name) {
            assert!(reached.contains(&name), "{name} gets no gradient in step B");
        }
        if ParamGroup::of(&name) == ParamGroup::Generator {
            assert!(!reached.contains(&name), "{name}: the synthesized crop must be detached in step B");
        }
    }
}

#[test]
fn generator_step_reaches_every_generator_parameter() {
    let t = trainable();
    let mut rng = ChaCha8Rng::seed_from_u64(2);
    let z = style_noise(2, 192, &mut rng, &Device::Cpu).unwrap();
    let loss = generator_step(&t.net, &inputs(), &z, &ObjectiveConfig::default()).unwrap();
    let reached = reached(&t, &loss.total);
    for name in all_names(&t) {
        if ParamGroup::of(&name) == ParamGroup::Generator {
            assert!(reached.contains(&name), "{name} gets no gradient in step C");
        }
    }
}

#[test]
fn all_three_optimizers_change_their_parameters() {
    let t = trainable();
    let settings = OptimizerSettings { lr: 1e-3, weight_decay: 0.1, warmup_steps: 1, max_steps: 10 };
    let mut state = training_state(&t, settings, 5).unwrap();
    let objective = ObjectiveConfig { generator_every: 1, ..ObjectiveConfig::default() };
    let snapshot = || -> HashMap<String, Tensor> {
        named_vars(&t.varmap).into_iter().map(|(n, v)| (n, v.as_tensor().copy().unwrap())).collect()
    };

    // Step 0 is the first of the warm-up (learning rate 0); step 1 runs at the peak.
    state.step = 1;
    state.apply_schedules();
    for (name, lr) in state.learning_rates() {
        assert!(lr > 0.0, "optimizer {name} has learning rate {lr}");
    }
    let before = snapshot();
    let losses = train_step(&t.net, &mut state, &inputs(), &objective).unwrap();
    let after = snapshot();
    for term in ["a_total", "b_total", "c_total", "contrastive"] {
        assert!(losses.get(term).is_some_and(|v| v.is_finite()), "{term}: {losses:?}");
    }

    let changed = |name: &str| -> bool {
        let d: f32 = (&before[name] - &after[name]).unwrap().abs().unwrap().max_all().unwrap().to_scalar().unwrap();
        d > 0.0
    };
    // Only optimizer B owns the discriminator head, only C the style mapping and the decoder's
    // style projections; A and B both move the encoder.
    assert!(changed("disc_head.weight"), "step B did not train the discriminator head");
    assert!(changed("w_mapping.noise_mapping.0.0.weight"), "step C did not train the style mapping");
    assert!(changed("decoder1.0.projector.weight"), "step C did not train the style projections");
    assert!(changed("mix_w.mix_conv.weight"), "step C did not train the style mixing");
    assert!(changed("swinViT.patch_embed.proj.weight"));
}

/// Writes the tensors of `t`, renamed by `rename`, to a safetensors file in `dir`.
fn write_renamed(t: &Trainable, dir: &std::path::Path, rename: impl Fn(&str) -> Option<String>) -> std::path::PathBuf {
    let tensors: HashMap<String, Tensor> = named_vars(&t.varmap)
        .into_iter()
        .filter_map(|(name, var)| rename(&name).map(|n| (n, var.as_tensor().copy().unwrap())))
        .collect();
    let path = dir.join("weights.safetensors");
    prism::weights::write_safetensors(&tensors, &path).unwrap();
    path
}

fn assert_same_values(a: &Trainable, b: &Trainable, keep: impl Fn(&str) -> bool) {
    let b_vars: HashMap<String, Tensor> =
        named_vars(&b.varmap).into_iter().map(|(n, v)| (n, v.as_tensor().clone())).collect();
    for (name, var) in named_vars(&a.varmap) {
        if !keep(&name) {
            continue;
        }
        let d: f32 = (var.as_tensor() - &b_vars[&name]).unwrap().abs().unwrap().max_all().unwrap().to_scalar().unwrap();
        assert_eq!(d, 0.0, "{name}");
    }
}

#[test]
fn init_loads_every_tensor_of_a_network() {
    let source = trainable();
    let dir = tempfile::tempdir().unwrap();
    let path = write_renamed(&source, dir.path(), |n| Some(n.to_string()));
    let mut rng = ChaCha8Rng::seed_from_u64(77);
    let loaded = build(&small_config(), Some(&path), &Device::Cpu, &mut rng).unwrap();
    assert_eq!(loaded.loaded, all_names(&source).len());
    assert_same_values(&source, &loaded, |_| true);
}

#[test]
fn init_maps_prism_alias_names() {
    // PRISM's state dict also lists its modules under the `D`/`G` dictionaries and the
    // `up_decoder` list; a checkpoint with only those names must load the same.
    let source = trainable();
    let alias = |name: &str| -> Option<String> {
        let renames = [
            ("swinViT.", "D.swinViT."),
            ("structure_disentanglement.", "D.str_disen."),
            ("sequence_disentanglement.", "D.seq_disen."),
            ("latent_agg.", "D.latent_agg."),
            ("w_mapping.", "G.wmap."),
            ("mix_w.", "G.mix_w."),
            ("recon_head.", "G.recon_head."),
        ];
        for (from, to) in renames {
            if let Some(rest) = name.strip_prefix(from) {
                return Some(format!("{to}{rest}"));
            }
        }
        if let Some(rest) = name.strip_prefix("decoder") {
            let (n, tail) = rest.split_once('.').unwrap();
            let index: usize = n.parse().unwrap();
            return Some(format!("up_decoder.{}.{tail}", index - 1));
        }
        Some(name.to_string())
    };
    let dir = tempfile::tempdir().unwrap();
    let path = write_renamed(&source, dir.path(), alias);
    let mut rng = ChaCha8Rng::seed_from_u64(77);
    let loaded = build(&small_config(), Some(&path), &Device::Cpu, &mut rng).unwrap();
    assert_eq!(loaded.loaded, all_names(&source).len());
    assert_same_values(&source, &loaded, |_| true);
}

#[test]
fn init_from_an_encoder_starts_the_rest_fresh() {
    let source = trainable();
    let dir = tempfile::tempdir().unwrap();
    let path = write_renamed(&source, dir.path(), |n| n.strip_prefix("swinViT.").map(str::to_string));
    let mut rng = ChaCha8Rng::seed_from_u64(77);
    let loaded = build(&small_config(), Some(&path), &Device::Cpu, &mut rng).unwrap();
    let encoder = all_names(&source).iter().filter(|n| n.starts_with("swinViT.")).count();
    assert_eq!(loaded.loaded, encoder);
    assert_same_values(&source, &loaded, |n| n.starts_with("swinViT."));
    let d: f32 = {
        let a = &named_vars(&source.varmap).into_iter().find(|(n, _)| n == "disc_head.weight").unwrap().1;
        let b = &named_vars(&loaded.varmap).into_iter().find(|(n, _)| n == "disc_head.weight").unwrap().1;
        (a.as_tensor() - b.as_tensor()).unwrap().abs().unwrap().max_all().unwrap().to_scalar().unwrap()
    };
    assert!(d > 0.0, "the heads come from the new seed, not the encoder file");
}
