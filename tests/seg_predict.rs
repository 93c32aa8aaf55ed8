//! Sliding-window segmentation against MONAI 1.4.0, and label maps that land on the input's own
//! grid whatever its orientation and spacing.
//!
//! The network is the SwinUNETR reference (feature size 12, four classes, every parameter moved
//! off its initial value). Its 26 MB state dict is read from the shared reference data beside
//! the repository. Where it is absent, the tests that need it print a note and pass.

use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use ndarray::{s, Array3};
use prism::geometry::Affine;
use prism::io::load_volume;
use prism::model::SwinUnetr;
use prism::preprocess::{Normalize, PreprocessOptions};
use prism::seg::predict::{predict, PredictOptions};
use prism::seg::sliding::{self, gaussian_weights, window_starts, SlidingWindow};
use prism::{weights, Volume};

fn data(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data").join(name)
}

fn reference_net() -> Option<SwinUnetr> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/reference/swinunetr_f12/swinunetr_state_dict.pt");
    if !path.exists() {
        eprintln!("skipped: {} is absent", path.display());
        return None;
    }
    Some(weights::load_swin_unetr(&path, &Device::Cpu).unwrap())
}

fn monai() -> std::collections::HashMap<String, Tensor> {
    candle_core::safetensors::load(data("seg_sliding/monai_sliding.safetensors"), &Device::Cpu).unwrap()
}

fn max_abs(t: &Tensor) -> f32 {
    t.abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar().unwrap()
}

/// Returns the z-scored crop MONAI's reference run used: voxels [70:110, 70:150, 50:120] of the MNI152 T1.
fn reference_crop() -> Tensor {
    let (volume, _) = load_volume(&data("mni152_2009a_t1.nii.gz"), None).unwrap();
    let crop = volume.data.slice(s![70..110, 70..150, 50..120]).to_owned();
    let mut crop = Volume::new(crop, Affine::identity());
    prism::preprocess::zscore_nonzero(&mut crop);
    prism::preprocess::volume_to_tensor(&crop, &Device::Cpu).unwrap()
}

#[test]
fn window_starts_follow_monai_placement() {
    // A window as large as the axis: one window.
    assert_eq!(window_starts(96, 96, 0.5), vec![0]);
    // Step int(96 · 0.5) = 48; the second window moves back to end at the edge.
    assert_eq!(window_starts(100, 96, 0.5), vec![0, 4]);
    // Step int(96 · 0.75) = 72: windows at 0, 72 and 104 (moved back from 144).
    assert_eq!(window_starts(200, 96, 0.25), vec![0, 72, 104]);
    // An overlap that rounds the step to 0 still advances by one voxel.
    assert_eq!(window_starts(4, 2, 0.9), vec![0, 1, 2]);
}

#[test]
fn gaussian_weights_match_monai_importance_map() {
    let reference = monai();
    let small = gaussian_weights([5, 6, 7]);
    let want: Vec<f32> = reference["importance_5x6x7"].flatten_all().unwrap().to_vec1().unwrap();
    let worst = small.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
    assert!(worst < 1e-6, "5x6x7: max |diff| {worst}");

    let large = gaussian_weights([64, 64, 64]);
    let row = &large[(31 * 64 + 20) * 64..(31 * 64 + 21) * 64];
    let want: Vec<f32> = reference["importance_64_row"].to_vec1().unwrap();
    let worst = row.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
    assert!(worst < 1e-6, "64^3 row: max |diff| {worst}");
}

#[test]
fn sliding_window_matches_monai_inference() {
    let Some(net) = reference_net() else { return };
    let reference = monai();
    let window = SlidingWindow { roi: [64; 3], overlap: 0.5, mirror: false };
    let input = reference_crop();

    let mut logits = vec![0f32; 4 * 40 * 80 * 70];
    let mut seen = 0;
    sliding::run(&input, 4, &window, |x| Ok(net.forward(x).unwrap()), |slab| {
        let plane = 80 * 70;
        for k in 0..4 {
            let src = &slab.values[k * slab.depth * plane..(k + 1) * slab.depth * plane];
            let dst = (k * 40 + slab.start) * plane;
            logits[dst..dst + src.len()].copy_from_slice(src);
        }
        seen += slab.depth;
        Ok(())
    })
    .unwrap();
    assert_eq!(seen, 40, "every slice is emitted once");

    let got = Tensor::from_vec(logits, (1, 4, 40, 80, 70), &Device::Cpu).unwrap();
    let strided = got.to_dtype(candle_core::DType::F32).unwrap();
    let index = |n: usize| Tensor::arange_step(0u32, n as u32, 2, &Device::Cpu).unwrap();
    let strided = strided.index_select(&index(40), 2).unwrap().index_select(&index(80), 3).unwrap();
    let strided = strided.index_select(&index(70), 4).unwrap();
    let want = &reference["logits_stride2"];
    let diff = max_abs(&(&strided - want).unwrap());
    assert!(diff <= 1e-4 * max_abs(want), "max |diff| {diff} vs max |ref| {}", max_abs(want));

    let labels: Vec<u8> = got.argmax(1).unwrap().to_dtype(candle_core::DType::U8).unwrap().flatten_all().unwrap().to_vec1().unwrap();
    let want: Vec<u8> = reference["labels"].flatten_all().unwrap().to_vec1().unwrap();
    let differ = labels.iter().zip(&want).filter(|(a, b)| a != b).count();
    // Voxels whose two best logits tie within rounding may flip; there should be almost none.
    assert!(differ * 10_000 <= labels.len(), "{differ} of {} labels differ", labels.len());
}

#[test]
fn single_window_gives_network_output_exactly() {
    let Some(net) = reference_net() else { return };
    let input = reference_crop().narrow(2, 0, 32).unwrap().narrow(3, 0, 64).unwrap().narrow(4, 0, 64).unwrap();
    let input = input.contiguous().unwrap();
    let direct: Vec<f32> = net.forward(&input).unwrap().flatten_all().unwrap().to_vec1().unwrap();

    let window = SlidingWindow { roi: [32, 64, 64], overlap: 0.5, mirror: false };
    let mut stitched = Vec::new();
    sliding::run(&input, 4, &window, |x| Ok(net.forward(x).unwrap()), |slab| {
        stitched.extend_from_slice(slab.values);
        Ok(())
    })
    .unwrap();
    assert_eq!(stitched, direct);
}

/// Options for the grid tests: PRISM preprocessing at 2 mm to keep the network input small.
fn coarse_options() -> PredictOptions {
    let mut preprocess = PreprocessOptions::prism_default();
    preprocess.spacing = Some([2.0; 3]);
    preprocess.normalize = Normalize::ZScoreNonZero;
    PredictOptions {
        preprocess,
        window: SlidingWindow { roi: [64; 3], overlap: 0.25, mirror: false },
        probabilities: false,
    }
}

/// Returns a 60×70×50 crop of the MNI152 T1 (1 mm, RAS) with its affine.
fn mni_crop() -> Volume {
    let (volume, _) = load_volume(&data("mni152_2009a_t1.nii.gz"), None).unwrap();
    let offset = [60.0, 80.0, 60.0];
    let corner = volume.affine.apply(offset);
    let mut affine = volume.affine;
    for (r, c) in corner.iter().enumerate() {
        affine.0[r][3] = *c;
    }
    Volume::new(volume.data.slice(s![60..120, 80..150, 60..110]).to_owned(), affine)
}

fn assert_same_grid(got: &Volume, want: &Volume, case: &str) {
    assert_eq!(got.shape(), want.shape(), "{case}: shape");
    assert_eq!(got.affine, want.affine, "{case}: affine");
}

#[test]
fn prediction_keeps_grid_of_ras_input() {
    let Some(net) = reference_net() else { return };
    let input = mni_crop();
    let prediction = predict(&net, input.clone(), &coarse_options(), &Device::Cpu).unwrap();
    assert_same_grid(&prediction.labels, &input, "RAS");
    let labels: std::collections::BTreeSet<i64> = prediction.labels.data.iter().map(|&v| v as i64).collect();
    assert!(labels.iter().all(|l| (0..4).contains(l)), "labels {labels:?}");
}

#[test]
fn prediction_on_lps_input_is_flipped_ras() {
    let Some(net) = reference_net() else { return };
    let ras = mni_crop();
    // Same voxels stored with i and j reversed: an LPS+ grid covering the same space.
    let mut lps_data = ras.data.clone();
    lps_data.invert_axis(ndarray::Axis(0));
    lps_data.invert_axis(ndarray::Axis(1));
    let [ni, nj, _] = ras.shape();
    let flip = Affine([
        [-1.0, 0.0, 0.0, (ni - 1) as f64],
        [0.0, -1.0, 0.0, (nj - 1) as f64],
        [0.0, 0.0, 1.0, 0.0],
        [0.0, 0.0, 0.0, 1.0],
    ]);
    let lps = Volume::new(lps_data, ras.affine.compose(&flip));
    assert_eq!(lps.affine.axcodes(), "LPS");

    let from_ras = predict(&net, ras, &coarse_options(), &Device::Cpu).unwrap().labels;
    let from_lps = predict(&net, lps.clone(), &coarse_options(), &Device::Cpu).unwrap().labels;
    assert_same_grid(&from_lps, &lps, "LPS");
    let mut back = from_lps.data.clone();
    back.invert_axis(ndarray::Axis(0));
    back.invert_axis(ndarray::Axis(1));
    assert_eq!(back, from_ras.data);
}

#[test]
fn prediction_keeps_grid_of_oblique_input() {
    let Some(net) = reference_net() else { return };
    let crop = mni_crop();
    // Rotate the grid 20 degrees about the z axis and 10 about x: an oblique acquisition.
    let (a, b) = (20f64.to_radians(), 10f64.to_radians());
    let rz = [[a.cos(), -a.sin(), 0.0], [a.sin(), a.cos(), 0.0], [0.0, 0.0, 1.0]];
    let rx = [[1.0, 0.0, 0.0], [0.0, b.cos(), -b.sin()], [0.0, b.sin(), b.cos()]];
    let mut affine = Affine::identity();
    for r in 0..3 {
        for c in 0..3 {
            affine.0[r][c] = (0..3).map(|k| rz[r][k] * rx[k][c]).sum::<f64>() * [1.0, 1.2, 1.5][c];
        }
        affine.0[r][3] = crop.affine.0[r][3];
    }
    let oblique = Volume::new(crop.data.clone(), affine);
    let prediction = predict(&net, oblique.clone(), &coarse_options(), &Device::Cpu).unwrap();
    assert_same_grid(&prediction.labels, &oblique, "oblique");
}

#[test]
fn prediction_keeps_grid_of_anisotropic_input() {
    let Some(net) = reference_net() else { return };
    // 0.78 x 0.78 x 6.5 mm, LAS: the grid of a clinical 2-D acquisition. The lesion mask
    // replaces the image because only the grid matters here.
    let (scan, _) = load_volume(&data("brain1_label.nii.gz"), None).unwrap();
    let prediction = predict(&net, scan.clone(), &coarse_options(), &Device::Cpu).unwrap();
    assert_same_grid(&prediction.labels, &scan, "anisotropic");
}

#[test]
fn probabilities_sum_to_one_on_input_grid() {
    let Some(net) = reference_net() else { return };
    let input = mni_crop();
    let mut options = coarse_options();
    options.probabilities = true;
    let prediction = predict(&net, input.clone(), &options, &Device::Cpu).unwrap();
    let maps = prediction.probabilities.unwrap();
    assert_eq!(maps.len(), 4);
    let mut total = Array3::<f32>::zeros(input.shape());
    for map in &maps {
        assert_same_grid(map, &input, "probability map");
        total += &map.data;
    }
    let worst = total.iter().map(|v| (v - 1.0).abs()).fold(0f32, f32::max);
    assert!(worst < 1e-4, "probabilities sum to 1 within {worst}");
}

#[test]
fn mirrored_prediction_is_flip_equivariant() {
    let Some(net) = reference_net() else { return };
    let input = reference_crop().narrow(2, 0, 32).unwrap().narrow(3, 0, 64).unwrap().narrow(4, 0, 64).unwrap();
    let input = input.contiguous().unwrap();
    let window = SlidingWindow { roi: [32, 64, 64], overlap: 0.5, mirror: true };
    let run = |x: &Tensor| -> Tensor {
        let mut values = Vec::new();
        sliding::run(x, 4, &window, |w| Ok(net.forward(w).unwrap()), |slab| {
            values.extend_from_slice(slab.values);
            Ok(())
        })
        .unwrap();
        Tensor::from_vec(values, (1, 4, 32, 64, 64), &Device::Cpu).unwrap()
    };
    let flip = |t: &Tensor| t.flip(&[4]).unwrap();

    // Averaging over all 8 flips makes the output follow a flip of the input, up to the order
    // in which the 8 terms are summed.
    let direct = run(&input);
    let from_flipped = flip(&run(&flip(&input)));
    let diff = max_abs(&(&direct - &from_flipped).unwrap());
    assert!(diff <= 1e-5 * max_abs(&direct), "max |diff| {diff}");
}
