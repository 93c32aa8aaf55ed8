//! Retrieval benchmark for a pretrained network: does the structure feature of a crop find
//! the same anatomy rendered under another synthetic sequence?
//!
//! A label map (tissue classes of a brain the network never saw) is rendered under K random
//! contrasts by the synthetic generator; N crop positions inside the brain are cut from each
//! rendering, z-scored as in training. For every one of the N·K crops, the nearest other crop
//! by cosine similarity counts as a hit when it is the same position under another sequence.
//! Chance is (K − 1)/(N·K − 1). Prints one JSON line with top-1 for three features of a crop:
//! the structure feature map (flattened), the pooled structure feature the contrastive head
//! reads, and the embedding prism-embed writes (the pooled last encoder stage).
//!
//! ```text
//! bench_pretrain_retrieval LABELS.nii.gz (--network FILE | --random SEED) [--feature-size 12]
//!                          [--sequences 4] [--crops 24] [--roi 64] [--seed 0]
//! ```

use std::path::PathBuf;

use candle_core::{Device, Tensor};
use ndarray::{s, Array3};
use prism::model::prism_pretrain::PretrainConfig;
use prism::model::swin::global_average;
use prism::model::SwinConfig;
use prism::pretrain::synth::{try_render, Anatomy, SynthConfig};
use prism::pretrain::train::build;
use prism::preprocess::{to_ras, zscore_nonzero};
use prism::volume::Volume;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

struct Options {
    labels: PathBuf,
    network: Option<PathBuf>,
    random_seed: u64,
    feature_size: usize,
    sequences: usize,
    crops: usize,
    roi: usize,
    seed: u64,
}

fn parse() -> Options {
    let mut args = std::env::args().skip(1);
    let mut o = Options {
        labels: PathBuf::new(),
        network: None,
        random_seed: 0,
        feature_size: 12,
        sequences: 4,
        crops: 24,
        roi: 64,
        seed: 0,
    };
    while let Some(a) = args.next() {
        let mut value = || args.next().unwrap_or_else(|| panic!("{a} needs a value"));
        match a.as_str() {
            "--network" => o.network = Some(PathBuf::from(value())),
            "--random" => o.random_seed = value().parse().unwrap(),
            "--feature-size" => o.feature_size = value().parse().unwrap(),
            "--sequences" => o.sequences = value().parse().unwrap(),
            "--crops" => o.crops = value().parse().unwrap(),
            "--roi" => o.roi = value().parse().unwrap(),
            "--seed" => o.seed = value().parse().unwrap(),
            _ => o.labels = PathBuf::from(a),
        }
    }
    o
}

/// Crop corners on a regular grid whose crops are at least 40 % inside the label map's
/// foreground, the `count` most-covered ones, in grid order.
fn crop_positions(labels: &Array3<u16>, roi: usize, count: usize) -> Vec<[usize; 3]> {
    let (x, y, z) = labels.dim();
    let step = roi * 3 / 8;
    let mut candidates = Vec::new();
    for i in (0..=x.saturating_sub(roi)).step_by(step) {
        for j in (0..=y.saturating_sub(roi)).step_by(step) {
            for k in (0..=z.saturating_sub(roi)).step_by(step) {
                let crop = labels.slice(s![i..i + roi, j..j + roi, k..k + roi]);
                let inside = crop.iter().filter(|&&v| v > 0).count() as f64 / crop.len() as f64;
                if inside >= 0.4 {
                    candidates.push((inside, [i, j, k]));
                }
            }
        }
    }
    candidates.sort_by(|a, b| b.0.total_cmp(&a.0));
    let mut chosen: Vec<[usize; 3]> = candidates.into_iter().take(count).map(|(_, p)| p).collect();
    chosen.sort();
    chosen
}

fn cosine_top1(features: &[Vec<f32>], position_of: &[usize]) -> f64 {
    let unit: Vec<Vec<f32>> = features
        .iter()
        .map(|f| {
            let norm = f.iter().map(|v| v * v).sum::<f32>().sqrt().max(1e-12);
            f.iter().map(|v| v / norm).collect()
        })
        .collect();
    let mut hits = 0;
    for (a, fa) in unit.iter().enumerate() {
        let best = unit
            .iter()
            .enumerate()
            .filter(|(b, _)| *b != a)
            .map(|(b, fb)| (b, fa.iter().zip(fb).map(|(x, y)| x * y).sum::<f32>()))
            .max_by(|x, y| x.1.total_cmp(&y.1))
            .map(|(b, _)| b);
        if best.is_some_and(|b| position_of[b] == position_of[a]) {
            hits += 1;
        }
    }
    hits as f64 / unit.len() as f64
}

fn main() {
    prism::alloc::retain_freed_memory();
    let o = parse();
    let (volume, _) = prism::io::load_volume(&o.labels, None).unwrap_or_else(|e| panic!("{e}"));
    let (ras, _) = to_ras(&volume);
    let labels: Array3<u16> = ras.data.mapv(|v| v.round().max(0.0) as u16);
    let anatomy = Anatomy::Labels(labels.clone());
    let positions = crop_positions(&labels, o.roi, o.crops);

    let encoder = SwinConfig { embed_dim: o.feature_size, ..SwinConfig::prism_base() };
    let mut init_rng = ChaCha8Rng::seed_from_u64(o.random_seed);
    let trainable = build(&PretrainConfig::around(encoder), o.network.as_deref(), &Device::Cpu, &mut init_rng)
        .unwrap_or_else(|e| panic!("{e}"));
    let net = &trainable.net;

    let mut structure_map = Vec::new();
    let mut structure = Vec::new();
    let mut embedding = Vec::new();
    let mut position_of = Vec::new();
    for sequence in 0..o.sequences {
        let mut rng = ChaCha8Rng::seed_from_u64(o.seed * 1000 + sequence as u64);
        let image = try_render(&anatomy, &SynthConfig::default(), &mut rng).unwrap_or_else(|e| panic!("{e}"));
        let mut image = Volume::new(image, ras.affine);
        zscore_nonzero(&mut image);
        for (p, c) in positions.iter().enumerate() {
            let crop = image.data.slice(s![c[0]..c[0] + o.roi, c[1]..c[1] + o.roi, c[2]..c[2] + o.roi]);
            let values: Vec<f32> = crop.iter().copied().collect();
            let x = Tensor::from_vec(values, (1, 1, o.roi, o.roi, o.roi), &Device::Cpu).unwrap().detach();
            // One encoder pass gives both: the embedding pools the latent, the branches read it.
            let latent = net.backbone(&x).unwrap();
            let encoded = net.disentangle(&latent, None).unwrap();
            structure_map.push(encoded.structure.flatten_all().unwrap().to_vec1::<f32>().unwrap());
            structure.push(global_average(&encoded.structure).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap());
            embedding.push(global_average(&latent).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap());
            position_of.push(p);
        }
    }

    let n = position_of.len();
    let chance = (o.sequences as f64 - 1.0) / (n as f64 - 1.0);
    println!(
        "{}",
        serde_json::json!({
            "network": o.network.as_ref().map(|p| p.display().to_string()).unwrap_or(format!("random init, seed {}", o.random_seed)),
            "labels": o.labels.display().to_string(),
            "crops": positions.len(),
            "sequences": o.sequences,
            "roi": o.roi,
            "top1_structure_map": cosine_top1(&structure_map, &position_of),
            "top1_structure_pooled": cosine_top1(&structure, &position_of),
            "top1_embedding": cosine_top1(&embedding, &position_of),
            "chance": chance,
        })
    );
}
