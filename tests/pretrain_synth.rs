//! Tests of prism::pretrain::synth on hand-made arrays and real tissue and label maps.
//!
//! Expected values come from the drawn plan and the definitions of the steps. With only
//! class means enabled, a voxel of label l is `mean[l] / max(mean)` and gamma raises that
//! to γ. The bias field at a control point is the control factor over the largest one.
//! The shared data folder, when present, adds the MNI152 2009a grey- and white-matter
//! probability maps (uint8, 0 to 255), 3-class tissue label maps of Colin27 and MNI152,
//! and the 116-region AAL atlas on Colin27.

use std::path::{Path, PathBuf};

use ndarray::{s, Array3, Axis};
use prism::io::load_volume;
use prism::pretrain::synth::{
    plan, render, render_plan, try_render, Anatomy, SynthConfig, SynthPlan, ThickSlices,
};
use rand::rngs::StdRng;
use rand::SeedableRng;

/// Returns a file of the shared data folder, or `None` (with a note) when it is absent.
fn shared(relative: &str) -> Option<PathBuf> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../shared/data")
        .join(relative);
    if path.is_file() {
        Some(path)
    } else {
        eprintln!("skipped: {} is absent", path.display());
        None
    }
}

fn load_labels(path: &Path) -> Array3<u16> {
    let (volume, _) = load_volume(path, None).unwrap();
    volume.data.mapv(|v| v.round() as u16)
}

/// Loads a uint8 probability map (0 to 255) as probabilities in [0, 1].
fn load_probabilities(path: &Path) -> Array3<f32> {
    let (volume, _) = load_volume(path, None).unwrap();
    volume.data.mapv(|v| v / 255.0)
}

fn rng(seed: u64) -> StdRng {
    StdRng::seed_from_u64(seed)
}

/// Builds a 24 × 20 × 16 map of four blocks: background, then labels 1, 2 and 3 along i, with
/// a background border of 2 voxels.
fn block_labels() -> Array3<u16> {
    let mut labels = Array3::<u16>::zeros((24, 20, 16));
    labels.slice_mut(s![2..8, 2..18, 2..14]).fill(1);
    labels.slice_mut(s![8..15, 2..18, 2..14]).fill(2);
    labels.slice_mut(s![15..22, 2..18, 2..14]).fill(3);
    labels
}

/// Value of each label in `image`, or `None` where a label is absent or its voxels differ.
fn label_values(image: &Array3<f32>, labels: &Array3<u16>, classes: usize) -> Vec<Option<f32>> {
    let mut first: Vec<Option<f32>> = vec![None; classes];
    let mut constant = vec![true; classes];
    for (&value, &label) in image.iter().zip(labels.iter()) {
        let c = label as usize;
        match first[c] {
            None => first[c] = Some(value),
            Some(seen) => constant[c] &= seen == value,
        }
    }
    first
        .into_iter()
        .zip(constant)
        .map(|(value, same)| value.filter(|_| same))
        .collect()
}

/// Expected means-only image value of each class: its mean over the largest present mean.
fn expected_unit_max(plan: &SynthPlan, present: &[usize]) -> Vec<f32> {
    let max = present.iter().map(|&c| plan.means[c]).fold(0.0f32, f32::max);
    plan.means.iter().map(|m| m / max).collect()
}

fn assert_finite_nonnegative(image: &Array3<f32>) {
    let bad = image.iter().filter(|v| !(v.is_finite() && **v >= 0.0)).count();
    assert_eq!(bad, 0, "{bad} voxels are negative or not finite");
}

fn assert_background_zero(image: &Array3<f32>, background: impl Fn([usize; 3]) -> bool) {
    let nonzero = image
        .indexed_iter()
        .filter(|((i, j, k), &v)| background([*i, *j, *k]) && v != 0.0)
        .count();
    assert_eq!(nonzero, 0, "{nonzero} background voxels are not 0");
}

#[test]
fn render_same_seed_identical() {
    let anatomy = Anatomy::Labels(block_labels());
    let config = SynthConfig::default();
    let first = render(&anatomy, &config, &mut rng(7));
    let second = render(&anatomy, &config, &mut rng(7));
    assert_eq!(first, second);
}

#[test]
fn render_identical_across_thread_counts() {
    let anatomy = Anatomy::Labels(block_labels());
    let config = SynthConfig {
        noise_std_range: [0.05, 0.05],
        std_range: [0.05, 0.05],
        ..SynthConfig::default()
    };
    let one_thread = rayon::ThreadPoolBuilder::new().num_threads(1).build().unwrap();
    let three_threads = rayon::ThreadPoolBuilder::new().num_threads(3).build().unwrap();
    let first = one_thread.install(|| render(&anatomy, &config, &mut rng(3)));
    let second = three_threads.install(|| render(&anatomy, &config, &mut rng(3)));
    assert_eq!(first, second);
}

#[test]
fn render_different_seeds_change_contrast_only() {
    let labels = block_labels();
    let anatomy = Anatomy::Labels(labels.clone());
    let config = SynthConfig::means_only();
    let first = render(&anatomy, &config, &mut rng(1));
    let second = render(&anatomy, &config, &mut rng(2));

    let first_values = label_values(&first, &labels, 4);
    let second_values = label_values(&second, &labels, 4);
    for c in 0..4 {
        assert!(first_values[c].is_some(), "seed 1: label {c} is not constant");
        assert!(second_values[c].is_some(), "seed 2: label {c} is not constant");
    }
    assert_ne!(first_values, second_values, "two seeds gave the same label values");
}

#[test]
fn render_means_only_gives_label_means() {
    let labels = block_labels();
    let anatomy = Anatomy::Labels(labels.clone());
    let drawn = plan(&anatomy, &SynthConfig::means_only(), &mut rng(11)).unwrap();
    let image = render_plan(&anatomy, &drawn).unwrap();

    let expected = expected_unit_max(&drawn, &[1, 2, 3]);
    let values = label_values(&image, &labels, 4);
    assert_eq!(values[0], Some(0.0));
    for c in 1..4 {
        let value = values[c].unwrap_or(f32::NAN);
        assert!((value - expected[c]).abs() < 1e-6, "label {c}: {value} != {}", expected[c]);
    }
}

#[test]
fn render_gamma_raises_unit_image() {
    let labels = block_labels();
    let anatomy = Anatomy::Labels(labels.clone());
    let config = SynthConfig {
        gamma_range: [2.5, 2.5],
        ..SynthConfig::means_only()
    };
    let drawn = plan(&anatomy, &config, &mut rng(12)).unwrap();
    assert_eq!(drawn.gamma, 2.5);
    let image = render_plan(&anatomy, &drawn).unwrap();

    let expected = expected_unit_max(&drawn, &[1, 2, 3]);
    let values = label_values(&image, &labels, 4);
    for c in 1..4 {
        let value = values[c].unwrap_or(f32::NAN);
        let want = expected[c].powf(2.5);
        assert!((value - want).abs() < 1e-5, "label {c}: {value} != {want}");
    }
}

#[test]
fn render_default_keeps_background_zero() {
    let labels = block_labels();
    let anatomy = Anatomy::Labels(labels.clone());
    let config = SynthConfig {
        blur_sigma_range: [1.5, 1.5],
        noise_std_range: [0.05, 0.05],
        ..SynthConfig::default()
    };
    for seed in 0..8 {
        let image = render(&anatomy, &config, &mut rng(seed));
        assert_background_zero(&image, |[i, j, k]| labels[[i, j, k]] == 0);
        assert_finite_nonnegative(&image);
        let max = image.iter().copied().fold(0.0f32, f32::max);
        assert!(max <= 1.0, "seed {seed}: maximum {max} > 1");
    }
}

#[test]
fn render_background_option_fills_background() {
    let labels = block_labels();
    let anatomy = Anatomy::Labels(labels.clone());
    let config = SynthConfig {
        render_background: true,
        mean_range: [0.2, 1.0],
        ..SynthConfig::means_only()
    };
    let drawn = plan(&anatomy, &config, &mut rng(5)).unwrap();
    let image = render_plan(&anatomy, &drawn).unwrap();

    let expected = expected_unit_max(&drawn, &[0, 1, 2, 3]);
    let values = label_values(&image, &labels, 4);
    let background = values[0].unwrap_or(f32::NAN);
    assert!(background > 0.0, "background is {background}");
    assert!((background - expected[0]).abs() < 1e-6);
}

#[test]
fn bias_field_matches_control_points() {
    // 64 voxels with 4 control points: point c sits at voxel 21c.
    let labels = Array3::<u16>::ones((64, 64, 64));
    let anatomy = Anatomy::Labels(labels);
    let config = SynthConfig {
        bias_std_range: [0.3, 0.3],
        ..SynthConfig::means_only()
    };
    let drawn = plan(&anatomy, &config, &mut rng(21)).unwrap();
    let control = drawn.bias_control.clone().unwrap();
    let image = render_plan(&anatomy, &drawn).unwrap();

    let max = control.iter().copied().fold(0.0f32, f32::max);
    for ((a, b, c), &factor) in control.indexed_iter() {
        let value = image[[21 * a, 21 * b, 21 * c]];
        assert!((value - factor / max).abs() < 1e-5, "control ({a}, {b}, {c}): {value} != {}", factor / max);
    }
}

#[test]
fn bias_field_smooth_between_neighbours() {
    let labels = Array3::<u16>::ones((64, 64, 64));
    let anatomy = Anatomy::Labels(labels);
    let config = SynthConfig {
        bias_std_range: [0.3, 0.3],
        ..SynthConfig::means_only()
    };
    let drawn = plan(&anatomy, &config, &mut rng(22)).unwrap();
    let control = drawn.bias_control.clone().unwrap();
    let image = render_plan(&anatomy, &drawn).unwrap();

    // Linear interpolation from a to b over 21 steps changes by at most a factor
    // 1 + (b / a − 1) / 21 per step, for the largest ratio of two control points.
    let min = control.iter().copied().fold(f32::INFINITY, f32::min);
    let max = control.iter().copied().fold(0.0f32, f32::max);
    let bound = 1.0 + (max / min - 1.0) / 21.0 + 1e-5;
    for axis in 0..3 {
        let n = image.len_of(Axis(axis));
        let lower = image.slice_axis(Axis(axis), (0..n - 1).into());
        let upper = image.slice_axis(Axis(axis), (1..n).into());
        let worst = lower
            .iter()
            .zip(upper.iter())
            .map(|(a, b)| (a / b).max(b / a))
            .fold(1.0f32, f32::max);
        assert!(worst <= bound, "axis {axis}: neighbour ratio {worst} > {bound}");
    }
    let contrast = max / min;
    assert!(contrast > 1.05, "bias field is nearly flat: max / min = {contrast}");
}

#[test]
fn blur_keeps_interior_of_uniform_block() {
    let labels = block_labels();
    let anatomy = Anatomy::Labels(labels.clone());
    let config = SynthConfig {
        blur_sigma_range: [1.0, 1.0],
        ..SynthConfig::means_only()
    };
    let drawn = plan(&anatomy, &config, &mut rng(31)).unwrap();
    let mut unblurred_plan = drawn.clone();
    unblurred_plan.blur_sigma = [0.0; 3];
    let blurred = render_plan(&anatomy, &drawn).unwrap();
    let sharp = render_plan(&anatomy, &unblurred_plan).unwrap();

    // Kernel radius 3: label 2 occupies i 8..15, so only i = 11 is 3 voxels from both
    // neighbours, and j, k need 3 voxels from the background border.
    let blurred_core = blurred.slice(s![11..12, 5..15, 5..11]);
    let sharp_core = sharp.slice(s![11..12, 5..15, 5..11]);
    let ratio = blurred_core[[0, 0, 0]] / sharp_core[[0, 0, 0]];
    for (b, s) in blurred_core.iter().zip(sharp_core.iter()) {
        assert!((b / s - ratio).abs() < 1e-5, "interior voxel changed: {b} vs {s}");
    }
    let edge_changed = blurred
        .iter()
        .zip(sharp.iter())
        .any(|(b, s)| (b / ratio - s).abs() > 1e-3);
    assert!(edge_changed, "blur changed no voxel near an edge");
}

#[test]
fn thick_slices_make_groups_equal() {
    // No background, because the final mask would set background voxels of a mixed
    // group back to 0.
    let labels = block_labels().mapv(|l| l + 1);
    let anatomy = Anatomy::Labels(labels);
    let config = SynthConfig {
        std_range: [0.1, 0.1],
        ..SynthConfig::means_only()
    };
    for axis in 0..3 {
        let mut drawn = plan(&anatomy, &config, &mut rng(40)).unwrap();
        drawn.thick_slices = Some(ThickSlices { axis, group: 3 });
        let image = render_plan(&anatomy, &drawn).unwrap();

        let n = image.len_of(Axis(axis));
        for start in (0..n).step_by(3) {
            let first = image.index_axis(Axis(axis), start);
            for slice in start + 1..(start + 3).min(n) {
                assert_eq!(image.index_axis(Axis(axis), slice), first, "axis {axis}: slice {slice} differs from {start}");
            }
        }
        let next_group_differs = image.index_axis(Axis(axis), 3) != image.index_axis(Axis(axis), 6);
        assert!(next_group_differs, "axis {axis}: groups 1 and 2 are equal");
    }
}

#[test]
fn slice_group_range_draws_thick_slices() {
    let anatomy = Anatomy::Labels(block_labels());
    let config = SynthConfig {
        slice_group_range: [2, 4],
        ..SynthConfig::means_only()
    };
    let drawn = plan(&anatomy, &config, &mut rng(41)).unwrap();
    let thick = drawn.thick_slices.unwrap();
    assert!(thick.axis < 3);
    assert!((2..=4).contains(&thick.group));
}

#[test]
fn gaussian_noise_has_configured_std() {
    let labels = Array3::<u16>::ones((40, 40, 40));
    let anatomy = Anatomy::Labels(labels);
    let config = SynthConfig {
        noise_std_range: [0.05, 0.05],
        rician_probability: 0.0,
        ..SynthConfig::means_only()
    };
    let image = render(&anatomy, &config, &mut rng(50));

    // The noiseless image is 1 everywhere. Rescaling the noisy maximum to 1 changes the
    // mean and deviation alike, so their ratio is the configured fraction.
    let n = image.len() as f64;
    let mean = image.iter().map(|&v| v as f64).sum::<f64>() / n;
    let var = image.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / n;
    let relative = var.sqrt() / mean;
    assert!((relative - 0.05).abs() < 0.002, "relative deviation {relative} != 0.05");
}

#[test]
fn rician_noise_stays_nonnegative_on_dark_label() {
    let mut labels = Array3::<u16>::ones((30, 30, 30));
    labels.slice_mut(s![15.., .., ..]).fill(2);
    let anatomy = Anatomy::Labels(labels);
    let config = SynthConfig {
        noise_std_range: [0.2, 0.2],
        rician_probability: 1.0,
        ..SynthConfig::means_only()
    };
    let mut drawn = plan(&anatomy, &config, &mut rng(51)).unwrap();
    drawn.means[1] = 0.0;
    drawn.means[2] = 1.0;
    assert!(drawn.rician);
    let image = render_plan(&anatomy, &drawn).unwrap();

    assert_finite_nonnegative(&image);
    let dark = image.slice(s![..15, .., ..]);
    let dark_mean = dark.iter().sum::<f32>() / dark.len() as f32;
    // Rician noise on a zero signal is Rayleigh, whose mean is σ·√(π/2) > 0.
    assert!(dark_mean > 0.0, "Rician noise left a zero signal at {dark_mean}");
}

#[test]
fn tissue_maps_mix_means() {
    // Tissue 0 fades out along i while tissue 1 fades in; the last two planes sum below
    // the threshold.
    let (ni, nj, nk) = (12, 4, 4);
    let gm = Array3::from_shape_fn((ni, nj, nk), |(i, _, _)| if i < 10 { 1.0 - i as f32 / 10.0 } else { 0.0 });
    let wm = Array3::from_shape_fn((ni, nj, nk), |(i, _, _)| if i < 10 { i as f32 / 10.0 } else { 0.05 });
    let anatomy = Anatomy::Tissue(vec![gm.clone(), wm.clone()]);
    let drawn = plan(&anatomy, &SynthConfig::means_only(), &mut rng(60)).unwrap();
    let image = render_plan(&anatomy, &drawn).unwrap();

    let mixed = (&gm * drawn.means[1]) + (&wm * drawn.means[2]);
    let max = mixed.slice(s![..10, .., ..]).iter().copied().fold(0.0f32, f32::max);
    for ((i, j, k), &value) in image.indexed_iter() {
        let want = if i < 10 { mixed[[i, j, k]] / max } else { 0.0 };
        assert!((value - want).abs() < 1e-5, "voxel ({i}, {j}, {k}): {value} != {want}");
    }
}

#[test]
fn config_validate_rejects_bad_ranges() {
    let cases = [
        SynthConfig { mean_range: [0.5, 0.2], ..SynthConfig::default() },
        SynthConfig { std_range: [-0.1, 0.1], ..SynthConfig::default() },
        SynthConfig { blur_sigma_range: [0.0, f32::NAN], ..SynthConfig::default() },
        SynthConfig { gamma_range: [0.0, 2.0], ..SynthConfig::default() },
        SynthConfig { slice_group_range: [0, 2], ..SynthConfig::default() },
        SynthConfig { bias_control_points: 1, ..SynthConfig::default() },
        SynthConfig { rician_probability: 1.5, ..SynthConfig::default() },
    ];
    for config in cases {
        assert!(config.validate().is_err(), "accepted {config:?}");
    }
    assert!(SynthConfig::default().validate().is_ok());
}

#[test]
fn try_render_rejects_mismatched_tissue_maps() {
    let anatomy = Anatomy::Tissue(vec![Array3::zeros((4, 4, 4)), Array3::zeros((4, 4, 5))]);
    let error = try_render(&anatomy, &SynthConfig::default(), &mut rng(0)).unwrap_err();
    assert!(error.to_string().contains("shape"), "{error}");
    let empty = Anatomy::Tissue(Vec::new());
    assert!(try_render(&empty, &SynthConfig::default(), &mut rng(0)).is_err());
}

#[test]
fn render_plan_rejects_plan_of_fewer_classes() {
    let small = Anatomy::Labels(Array3::from_elem((4, 4, 4), 2u16));
    let drawn = plan(&small, &SynthConfig::default(), &mut rng(0)).unwrap();
    let large = Anatomy::Labels(Array3::from_elem((4, 4, 4), 9u16));
    assert!(render_plan(&large, &drawn).is_err());
}

#[test]
fn config_round_trips_through_json() {
    let config = SynthConfig { gamma_range: [0.7, 1.4], ..SynthConfig::default() };
    let json = serde_json::to_string(&config).unwrap();
    let back: SynthConfig = serde_json::from_str(&json).unwrap();
    assert_eq!(back, config);
    let partial: SynthConfig = serde_json::from_str(r#"{"noise_std_range": [0.0, 0.1]}"#).unwrap();
    assert_eq!(partial.noise_std_range, [0.0, 0.1]);
    assert_eq!(partial.mean_range, SynthConfig::default().mean_range);
}

#[test]
fn tissue_labels_render_real_colin27() {
    let Some(path) = shared("registration/inter_colin27_to_mni2009a/moving_labels.nii.gz") else {
        return;
    };
    let labels = load_labels(&path);
    let anatomy = Anatomy::Labels(labels.clone());

    let config = SynthConfig::default();
    let first = render(&anatomy, &config, &mut rng(100));
    let again = render(&anatomy, &config, &mut rng(100));
    assert_eq!(first, again);
    assert_finite_nonnegative(&first);
    assert_background_zero(&first, |v| labels[v] == 0);

    let clean = SynthConfig::means_only();
    let one = render(&anatomy, &clean, &mut rng(101));
    let two = render(&anatomy, &clean, &mut rng(102));
    let one_values = label_values(&one, &labels, 4);
    let two_values = label_values(&two, &labels, 4);
    for c in 1..4 {
        assert!(one_values[c].is_some(), "seed 101: label {c} is not constant");
        assert!(two_values[c].is_some(), "seed 102: label {c} is not constant");
        assert_ne!(one_values[c], two_values[c], "label {c} kept its value across seeds");
    }
}

#[test]
fn atlas_labels_render_real_aal() {
    let Some(path) = shared("labels/aal_colin27.nii.gz") else {
        return;
    };
    let labels = load_labels(&path);
    let anatomy = Anatomy::Labels(labels.clone());
    assert_eq!(anatomy.class_count(), 117);

    let drawn = plan(&anatomy, &SynthConfig::means_only(), &mut rng(110)).unwrap();
    let image = render_plan(&anatomy, &drawn).unwrap();
    let present: Vec<usize> = (1..117).filter(|&c| labels.iter().any(|&l| l as usize == c)).collect();
    let expected = expected_unit_max(&drawn, &present);
    let values = label_values(&image, &labels, 117);
    for &c in &present {
        let value = values[c].unwrap_or(f32::NAN);
        assert!((value - expected[c]).abs() < 1e-6, "region {c}: {value} != {}", expected[c]);
    }
    assert_eq!(values[0], Some(0.0));
}

#[test]
fn probability_maps_render_real_mni152() {
    let (Some(gm_path), Some(wm_path)) = (
        shared("labels/mni152_2009a_gm.nii.gz"),
        shared("labels/mni152_2009a_wm.nii.gz"),
    ) else {
        return;
    };
    let gm = load_probabilities(&gm_path);
    let wm = load_probabilities(&wm_path);
    let total = &gm + &wm;
    let anatomy = Anatomy::Tissue(vec![gm, wm]);

    let config = SynthConfig::default();
    let image = render(&anatomy, &config, &mut rng(120));
    assert_finite_nonnegative(&image);
    assert_background_zero(&image, |v| total[v] < config.tissue_threshold);
    let foreground = image.iter().filter(|&&v| v > 0.0).count();
    let brain = total.iter().filter(|&&p| p >= config.tissue_threshold).count();
    assert!(foreground > brain / 2, "only {foreground} of {brain} brain voxels are non-zero");

    let other = render(&anatomy, &config, &mut rng(121));
    assert_ne!(image, other);
}
