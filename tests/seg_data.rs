//! Tests of prism::seg::dataset and prism::seg::augment on real scans and label maps.
//!
//! The always-available pair is the ICBM152 2009a T1 template with the Harvard-Oxford
//! cortical atlas (both in MNI space) resampled onto the template's grid by nearest
//! neighbour and written to a temporary file. The shared data folder, when present, adds
//! the Colin27 T1 with its AAL labels and the brain1 lesion image with its mask (LAS,
//! 0.78 × 0.78 × 6.5 mm).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use candle_core::{DType, Device};
use ndarray::Array3;
use prism::io::{load_volume, write_volume, OutputDtype, WriteOptions};
use prism::preprocess::{resample_to_grid, spacing_grid, Interp};
use prism::seg::augment::{
    extract_patch, flip_axes, patches_to_batch, plan_patch, sample_batch, sample_patch,
    spatial_matrix, AugmentOptions, PatchPlan,
};
use prism::seg::dataset::{
    load_case, read_csv, read_nnunet, split_cases, Case, CaseSource, LoadOptions, Subset,
};
use prism::Volume;
use rand::rngs::StdRng;
use rand::SeedableRng;

/// Harvard-Oxford cortical max-probability atlas: 48 regions and background.
const HARVARD_OXFORD_CLASSES: usize = 49;

/// AAL on Colin27: 116 regions and background.
const AAL_CLASSES: usize = 117;

fn data(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name)
}

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

fn t1_path() -> PathBuf {
    data("mni152_2009a_t1.nii.gz")
}

/// Writes the Harvard-Oxford atlas, resampled onto the T1 template's grid, to `folder`.
fn write_atlas_on_t1_grid(folder: &Path, name: &str) -> PathBuf {
    let (t1, _) = load_volume(&t1_path(), None).unwrap();
    let (atlas, _) = load_volume(&data("harvardoxford_cort_maxprob_1mm.nii.gz"), None).unwrap();
    let on_grid = resample_to_grid(&atlas, &t1.affine, t1.shape(), Interp::Nearest, 0.0).unwrap();
    let path = folder.join(name);
    let options = WriteOptions::default().with_dtype(OutputDtype::Uint8);
    write_volume(&path, &on_grid, &options).unwrap();
    path
}

/// Loads the T1 template and the atlas on its grid as one case at 1 mm, once for all
/// tests of this file.
fn mni_case() -> &'static Case {
    static CASE: OnceLock<Case> = OnceLock::new();
    CASE.get_or_init(|| {
        let folder = tempfile::tempdir().unwrap();
        let source = CaseSource {
            id: "mni".into(),
            images: vec![t1_path()],
            label: write_atlas_on_t1_grid(folder.path(), "atlas.nii.gz"),
            subset: None,
        };
        load_case(&source, &mni_options()).unwrap()
    })
}

fn mni_options() -> LoadOptions {
    LoadOptions {
        spacing: [1.0; 3],
        n_classes: HARVARD_OXFORD_CLASSES,
    }
}

fn label_set(values: impl IntoIterator<Item = u32>) -> BTreeSet<u32> {
    values.into_iter().collect()
}

fn case_label_set(case: &Case) -> BTreeSet<u32> {
    label_set(case.label.data.iter().map(|v| *v as u32))
}

// ---------------------------------------------------------------- dataset

#[test]
fn load_case_zscores_nonzero_voxels() {
    let case = mni_case();
    assert_eq!(case.shape(), [197, 233, 189]);
    assert_eq!(case.channels.len(), 1);

    let nonzero: Vec<f64> = case.channels[0]
        .data
        .iter()
        .filter(|v| **v != 0.0)
        .map(|v| *v as f64)
        .collect();
    let mean = nonzero.iter().sum::<f64>() / nonzero.len() as f64;
    let variance = nonzero.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / nonzero.len() as f64;
    assert!(mean.abs() < 1e-4, "mean {mean}");
    assert!(
        (variance.sqrt() - 1.0).abs() < 1e-4,
        "std {}",
        variance.sqrt()
    );
}

#[test]
fn load_case_indexes_class_voxels() {
    let case = mni_case();
    let present = case.present_classes();
    assert_eq!(present.len(), HARVARD_OXFORD_CLASSES - 1);

    let [_, nj, nk] = case.shape();
    for class in [1, 17, 48] {
        let voxels = case.class_voxels(class);
        let counted = case
            .label
            .data
            .iter()
            .filter(|v| **v == class as f32)
            .count();
        assert_eq!(voxels.len(), counted);
        let flat = voxels[voxels.len() / 2] as usize;
        let index = [flat / (nj * nk), (flat / nk) % nj, flat % nk];
        assert_eq!(case.label.data[index], class as f32);
    }
    assert!(case.class_voxels(0).is_empty());
}

#[test]
fn load_case_reorients_and_resamples_lesion() {
    let (Some(image), Some(label)) = (
        shared("lesion/brain1_image.nii.gz"),
        shared("lesion/brain1_label.nii.gz"),
    ) else {
        return;
    };
    let source = CaseSource {
        id: "brain1".into(),
        images: vec![image.clone()],
        label: label.clone(),
        subset: None,
    };
    let options = LoadOptions {
        spacing: [1.0, 1.0, 2.0],
        n_classes: 2,
    };
    let case = load_case(&source, &options).unwrap();

    assert_eq!(case.affine().axcodes(), "RAS");
    let spacing = case.affine().spacing();
    for (axis, expected) in [1.0, 1.0, 2.0].iter().enumerate() {
        assert!(
            (spacing[axis] - expected).abs() < 1e-9,
            "spacing {spacing:?}"
        );
    }

    // The grid the resampler builds for the reoriented input, computed independently here.
    let (raw, _) = load_volume(&image, None).unwrap();
    let (ras, _) = prism::preprocess::to_ras(&raw);
    let (_, shape) = spacing_grid(&ras.affine, ras.shape(), [1.0, 1.0, 2.0]).unwrap();
    assert_eq!(case.shape(), shape);
    assert_eq!(case.channels[0].shape(), shape);
    assert_eq!(case.present_classes(), vec![1]);
}

#[test]
fn load_case_reads_aal_classes() {
    let (Some(image), Some(label)) = (
        shared("anat/colin27_t1.nii.gz"),
        shared("labels/aal_colin27.nii.gz"),
    ) else {
        return;
    };
    let source = CaseSource {
        id: "colin27".into(),
        images: vec![image],
        label,
        subset: None,
    };
    let options = LoadOptions {
        spacing: [1.0; 3],
        n_classes: AAL_CLASSES,
    };
    let case = load_case(&source, &options).unwrap();
    assert_eq!(case.shape(), [181, 217, 181]);
    assert_eq!(case.present_classes().len(), AAL_CLASSES - 1);
}

#[test]
fn load_case_rejects_other_grid() {
    let label = data("harvardoxford_cort_maxprob_1mm.nii.gz");
    let source = CaseSource {
        id: "mismatch".into(),
        images: vec![t1_path()],
        label: label.clone(),
        subset: None,
    };
    let error = load_case(&source, &mni_options()).unwrap_err().to_string();
    assert!(error.contains(&t1_path().display().to_string()), "{error}");
    assert!(error.contains(&label.display().to_string()), "{error}");
    assert!(error.contains("different grids"), "{error}");
}

#[test]
fn load_case_rejects_label_out_of_range() {
    let folder = tempfile::tempdir().unwrap();
    let label = write_atlas_on_t1_grid(folder.path(), "atlas.nii.gz");
    let source = CaseSource {
        id: "mni".into(),
        images: vec![t1_path()],
        label: label.clone(),
        subset: None,
    };
    let options = LoadOptions {
        spacing: [1.0; 3],
        n_classes: 10,
    };
    let error = load_case(&source, &options).unwrap_err().to_string();
    assert!(error.starts_with(&label.display().to_string()), "{error}");
    assert!(error.contains("label value"), "{error}");
    assert!(error.contains("outside the classes 0..9"), "{error}");
}

#[test]
fn load_case_rejects_fractional_label() {
    let folder = tempfile::tempdir().unwrap();
    let (t1, _) = load_volume(&t1_path(), None).unwrap();
    let halved = Volume::new(t1.data.mapv(|v| v / 2.0), t1.affine);
    let label = folder.path().join("halved.nii.gz");
    write_volume(&label, &halved, &WriteOptions::default()).unwrap();
    let source = CaseSource {
        id: "halved".into(),
        images: vec![t1_path()],
        label: label.clone(),
        subset: None,
    };
    let options = LoadOptions {
        spacing: [1.0; 3],
        n_classes: 256,
    };
    let error = load_case(&source, &options).unwrap_err().to_string();
    assert!(error.starts_with(&label.display().to_string()), "{error}");
    assert!(error.contains(".5 is not a class index"), "{error}");
}

#[test]
fn read_csv_resolves_relative_channels() {
    let folder = tempfile::tempdir().unwrap();
    let label = write_atlas_on_t1_grid(folder.path(), "atlas.nii.gz");
    std::fs::copy(t1_path(), folder.path().join("t1.nii.gz")).unwrap();
    let csv = folder.path().join("cases.csv");
    let absolute_t1 = t1_path().display().to_string();
    let text = format!(
        "t1,id,second,seg,split\nt1.nii.gz,a,{absolute_t1},atlas.nii.gz,train\n\
         t1.nii.gz,b,t1.nii.gz,atlas.nii.gz,val\n"
    );
    std::fs::write(&csv, text).unwrap();

    let list = read_csv(&csv, "seg").unwrap();
    assert_eq!(list.channel_names, vec!["t1", "second"]);
    assert_eq!(list.cases.len(), 2);
    assert_eq!(list.cases[0].id, "a");
    assert_eq!(list.cases[0].images[0], folder.path().join("t1.nii.gz"));
    assert_eq!(list.cases[0].images[1], t1_path());
    assert_eq!(list.cases[0].label, label);
    assert_eq!(list.cases[1].subset, Some(Subset::Validation));

    let case = load_case(&list.cases[0], &mni_options()).unwrap();
    assert_eq!(case.channels.len(), 2);
    assert_eq!(case.channels[0].data, case.channels[1].data);
}

#[test]
fn read_csv_rejects_missing_label_column() {
    let folder = tempfile::tempdir().unwrap();
    let csv = folder.path().join("cases.csv");
    std::fs::write(&csv, "t1,seg\na.nii.gz,b.nii.gz\n").unwrap();
    let error = read_csv(&csv, "label").unwrap_err().to_string();
    assert!(error.contains("no label column 'label'"), "{error}");
}

#[test]
fn read_csv_rejects_unknown_split() {
    let folder = tempfile::tempdir().unwrap();
    let csv = folder.path().join("cases.csv");
    std::fs::write(&csv, "t1,label,split\na.nii.gz,b.nii.gz,test\n").unwrap();
    let error = read_csv(&csv, "label").unwrap_err().to_string();
    assert!(error.contains("row 2: split 'test' is invalid"), "{error}");
}

#[test]
fn read_csv_rejects_empty_cell() {
    let folder = tempfile::tempdir().unwrap();
    let csv = folder.path().join("cases.csv");
    std::fs::write(&csv, "t1,flair,label\na.nii.gz,,b.nii.gz\n").unwrap();
    let error = read_csv(&csv, "label").unwrap_err().to_string();
    assert!(error.contains("row 2: column 'flair' is empty"), "{error}");
}

/// Lays out an nnU-Net v2 raw dataset with one two-channel case (the T1 twice).
fn nnunet_folder(with_json: bool) -> tempfile::TempDir {
    let folder = tempfile::tempdir().unwrap();
    let images = folder.path().join("imagesTr");
    let labels = folder.path().join("labelsTr");
    std::fs::create_dir_all(&images).unwrap();
    std::fs::create_dir_all(&labels).unwrap();
    for channel in 0..2 {
        std::fs::copy(t1_path(), images.join(format!("mni_{channel:04}.nii.gz"))).unwrap();
    }
    write_atlas_on_t1_grid(&labels, "mni.nii.gz");
    if with_json {
        let json = r#"{"channel_names": {"0": "T1", "1": "T1 again"},
            "labels": {"background": 0, "frontal pole": 1, "cingulate": 29},
            "numTraining": 1, "file_ending": ".nii.gz"}"#;
        std::fs::write(folder.path().join("dataset.json"), json).unwrap();
    }
    folder
}

#[test]
fn read_nnunet_reads_dataset_json() {
    let folder = nnunet_folder(true);
    let list = read_nnunet(folder.path()).unwrap();
    assert_eq!(list.channel_names, vec!["T1", "T1 again"]);
    assert_eq!(list.declared_classes(), Some(30));
    assert_eq!(list.class_names[&29], "cingulate");
    assert_eq!(list.cases.len(), 1);
    assert_eq!(list.cases[0].id, "mni");
    assert_eq!(
        list.cases[0].images[1],
        folder.path().join("imagesTr/mni_0001.nii.gz")
    );
    assert_eq!(
        list.cases[0].label,
        folder.path().join("labelsTr/mni.nii.gz")
    );

    let case = load_case(&list.cases[0], &mni_options()).unwrap();
    assert_eq!(case.channels.len(), 2);
}

#[test]
fn read_nnunet_infers_channels_without_json() {
    let folder = nnunet_folder(false);
    let list = read_nnunet(folder.path()).unwrap();
    assert_eq!(list.channel_names, vec!["0000", "0001"]);
    assert_eq!(list.declared_classes(), None);
}

#[test]
fn read_nnunet_rejects_missing_channel() {
    let folder = nnunet_folder(false);
    let images = folder.path().join("imagesTr");
    std::fs::copy(t1_path(), images.join("other_0001.nii.gz")).unwrap();
    let error = read_nnunet(folder.path()).unwrap_err().to_string();
    assert!(error.contains("other_0000.nii.gz"), "{error}");
    assert!(error.contains("lacks channel 0"), "{error}");
}

#[test]
fn read_nnunet_rejects_missing_label() {
    let folder = nnunet_folder(false);
    std::fs::remove_file(folder.path().join("labelsTr/mni.nii.gz")).unwrap();
    let error = read_nnunet(folder.path()).unwrap_err().to_string();
    assert!(error.contains("label file not found"), "{error}");
}

#[test]
fn split_cases_is_deterministic_per_seed() {
    let cases: Vec<CaseSource> = (0..50)
        .map(|i| CaseSource {
            id: format!("case{i:03}"),
            images: vec![PathBuf::from(format!("case{i:03}_0000.nii.gz"))],
            label: PathBuf::from(format!("case{i:03}.nii.gz")),
            subset: None,
        })
        .collect();
    let first = split_cases(&cases, 0.2, 42).unwrap();
    let again = split_cases(&cases, 0.2, 42).unwrap();
    let other_seed = split_cases(&cases, 0.2, 43).unwrap();
    assert_eq!(first, again);
    assert_eq!(first.validation.len(), 10);
    assert_eq!(first.train.len(), 40);
    assert_ne!(first.validation, other_seed.validation);
}

#[test]
fn split_cases_follows_split_column() {
    let folder = tempfile::tempdir().unwrap();
    let csv = folder.path().join("cases.csv");
    std::fs::write(
        &csv,
        "t1,label,split\na.nii.gz,a_seg.nii.gz,val\nb.nii.gz,b_seg.nii.gz,train\nc.nii.gz,c_seg.nii.gz,train\n",
    )
    .unwrap();
    let list = read_csv(&csv, "label").unwrap();
    let split = split_cases(&list.cases, 0.5, 0).unwrap();
    let ids = |cases: &[CaseSource]| cases.iter().map(|c| c.id.clone()).collect::<Vec<_>>();
    assert_eq!(ids(&split.validation), vec!["a_seg"]);
    assert_eq!(ids(&split.train), vec!["b_seg", "c_seg"]);
}

// ---------------------------------------------------------------- augment

#[test]
fn forced_foreground_patch_contains_foreground() {
    let case = mni_case();
    let mut options = AugmentOptions::new([48, 40, 32]);
    options.affine_probability = 0.5;
    let mut rng = StdRng::seed_from_u64(11);
    for _ in 0..20 {
        let plan = plan_patch(case, &options, true, &mut rng).unwrap();
        let patch = extract_patch(case, &plan).unwrap();
        assert!(patch.label.iter().any(|v| *v > 0), "plan {plan:?}");

        // The pivot is the chosen foreground voxel; flips move it to the mirrored index.
        let pivot = [0, 1, 2].map(|d| {
            let index = plan.pivot[d] as usize;
            if plan.flips[d] {
                plan.size[d] - 1 - index
            } else {
                index
            }
        });
        assert!(patch.label[pivot] > 0, "plan {plan:?}");
    }
}

#[test]
fn random_patch_may_miss_foreground() {
    // The atlas labels only the cortex, so unforced 16³ patches land on background now and
    // then, which the forced patches of the test above never do.
    let case = mni_case();
    let options = AugmentOptions::crop_only([16, 16, 16]);
    let mut rng = StdRng::seed_from_u64(3);
    let empty = (0..200)
        .filter(|_| {
            let patch = sample_patch(case, &options, false, &mut rng).unwrap();
            patch.label.iter().all(|v| *v == 0)
        })
        .count();
    assert!(empty > 0);
}

#[test]
fn crop_copies_case_voxels() {
    let case = mni_case();
    let plan = PatchPlan {
        size: [20, 30, 40],
        start: [50, 60, 70],
        pivot: [0.0; 3],
        matrix: None,
        flips: [false; 3],
        intensity: vec![(1.0, 0.0)],
    };
    let patch = extract_patch(case, &plan).unwrap();
    for index in [[0, 0, 0], [19, 29, 39], [7, 11, 13]] {
        let source = [50 + index[0], 60 + index[1], 70 + index[2]];
        assert_eq!(
            patch.image[[0, index[0], index[1], index[2]]],
            case.channels[0].data[source]
        );
        assert_eq!(patch.label[index] as f32, case.label.data[source]);
    }
}

#[test]
fn crop_pads_short_axis() {
    let case = mni_case();
    let options = AugmentOptions::crop_only([32, 32, 200]);
    let mut rng = StdRng::seed_from_u64(5);
    let plan = plan_patch(case, &options, false, &mut rng).unwrap();
    // 200 − 189 = 11 padding voxels: 5 before the case and 6 after.
    assert_eq!(plan.start[2], -5);

    let patch = extract_patch(case, &plan).unwrap();
    let [i0, j0] = [plan.start[0] as usize, plan.start[1] as usize];
    for k in [0, 4, 194, 199] {
        assert!(patch
            .image
            .slice(ndarray::s![0, .., .., k])
            .iter()
            .all(|v| *v == 0.0));
        assert!(patch
            .label
            .slice(ndarray::s![.., .., k])
            .iter()
            .all(|v| *v == 0));
    }
    for (i, j, k) in [(3, 4, 5), (16, 16, 100), (31, 31, 193)] {
        let source = [i0 + i, j0 + j, k - 5];
        assert_eq!(patch.image[[0, i, j, k]], case.channels[0].data[source]);
    }
}

#[test]
fn flip_axes_is_involution() {
    let case = mni_case();
    let mut rng = StdRng::seed_from_u64(8);
    let patch = sample_patch(
        case,
        &AugmentOptions::crop_only([24, 20, 16]),
        true,
        &mut rng,
    )
    .unwrap();
    for axes in [
        [true, false, false],
        [false, true, true],
        [true, true, true],
    ] {
        let once = flip_axes(&patch.label, axes);
        assert_ne!(once, patch.label, "flip {axes:?} changed nothing");
        assert_eq!(flip_axes(&once, axes), patch.label);
    }
}

#[test]
fn flip_axes_mirrors_indices() {
    let array = Array3::from_shape_fn([4, 3, 2], |(i, j, k)| (i * 100 + j * 10 + k) as u32);
    let flipped = flip_axes(&array, [true, false, true]);
    assert_eq!(flipped[[0, 2, 0]], array[[3, 2, 1]]);
    assert_eq!(flipped[[1, 0, 1]], array[[2, 0, 0]]);
}

#[test]
fn identity_affine_equals_crop() {
    let case = mni_case();
    let mut rng = StdRng::seed_from_u64(21);
    let plan = plan_patch(
        case,
        &AugmentOptions::crop_only([40, 36, 32]),
        true,
        &mut rng,
    )
    .unwrap();
    assert!(plan.matrix.is_none());
    let identity = spatial_matrix([0.0; 3], 1.0, case.affine().spacing());
    let warped_plan = PatchPlan {
        matrix: Some(identity),
        ..plan.clone()
    };

    let cropped = extract_patch(case, &plan).unwrap();
    let warped = extract_patch(case, &warped_plan).unwrap();
    assert_eq!(warped.label, cropped.label);
    let difference = (&warped.image - &cropped.image).mapv(f32::abs);
    assert!(difference.iter().all(|d| *d < 1e-5));
}

#[test]
fn quarter_turn_permutes_voxels() {
    // A 90° rotation about z maps patch offset (a, b, c) from the pivot to case offset
    // (−b, a, c) on a 1 mm grid, so the warp must copy voxels without blending.
    let case = mni_case();
    let plan = PatchPlan {
        size: [21, 21, 9],
        start: [80, 100, 80],
        pivot: [10.0, 10.0, 4.0],
        matrix: Some(spatial_matrix([0.0, 0.0, 90.0], 1.0, [1.0; 3])),
        flips: [false; 3],
        intensity: vec![(1.0, 0.0)],
    };
    let patch = extract_patch(case, &plan).unwrap();
    for (i, j, k) in [(0, 0, 0), (20, 3, 8), (5, 17, 2), (10, 10, 4)] {
        let (a, b, c) = (i as i64 - 10, j as i64 - 10, k as i64 - 4);
        let source = [(90 - b) as usize, (110 + a) as usize, (84 + c) as usize];
        let expected = case.channels[0].data[source];
        assert!((patch.image[[0, i, j, k]] - expected).abs() < 1e-5);
        assert_eq!(patch.label[[i, j, k]] as f32, case.label.data[source]);
    }
}

#[test]
fn affine_keeps_labels_integer() {
    let case = mni_case();
    let classes = case_label_set(case);
    let (low, high) = case.channels[0]
        .data
        .iter()
        .fold((0.0f32, 0.0f32), |(lo, hi), v| (lo.min(*v), hi.max(*v)));
    let mut options = AugmentOptions::crop_only([32, 32, 32]);
    options.affine_probability = 1.0;
    let mut rng = StdRng::seed_from_u64(17);
    for force in [true, false, true] {
        let plan = plan_patch(case, &options, force, &mut rng).unwrap();
        assert!(plan.matrix.is_some());
        let patch = extract_patch(case, &plan).unwrap();
        assert!(label_set(patch.label.iter().copied()).is_subset(&classes));
        // Trilinear samples with zero padding are convex combinations of case voxels and 0.
        assert!(patch
            .image
            .iter()
            .all(|v| *v >= low - 1e-5 && *v <= high + 1e-5));
    }
}

#[test]
fn intensity_scale_and_shift_per_channel() {
    let case = mni_case();
    let plan = PatchPlan {
        size: [8, 8, 8],
        start: [90, 110, 80],
        pivot: [0.0; 3],
        matrix: None,
        flips: [false; 3],
        intensity: vec![(1.0, 0.0)],
    };
    let jittered_plan = PatchPlan {
        intensity: vec![(1.5, -0.25)],
        ..plan.clone()
    };
    let plain = extract_patch(case, &plan).unwrap();
    let jittered = extract_patch(case, &jittered_plan).unwrap();
    for (a, b) in plain.image.iter().zip(jittered.image.iter()) {
        assert!((a * 1.5 - 0.25 - b).abs() < 1e-6);
    }
    assert_eq!(plain.label, jittered.label);
}

#[test]
fn sample_batch_shapes_and_dtypes() {
    let case = mni_case();
    let options = AugmentOptions::new([32, 24, 16]);
    let mut rng = StdRng::seed_from_u64(1);
    let batch = sample_batch(
        std::slice::from_ref(case),
        2,
        &options,
        &mut rng,
        &Device::Cpu,
    )
    .unwrap();
    assert_eq!(batch.images.dims(), &[2, 1, 32, 24, 16]);
    assert_eq!(batch.images.dtype(), DType::F32);
    assert_eq!(batch.labels.dims(), &[2, 32, 24, 16]);
    assert_eq!(batch.labels.dtype(), DType::U32);
    let max_label = batch.labels.max_all().unwrap().to_scalar::<u32>().unwrap();
    assert!(max_label < HARVARD_OXFORD_CLASSES as u32);
}

#[test]
fn sample_batch_repeats_with_seed() {
    let case = mni_case();
    let options = AugmentOptions::new([24, 24, 24]);
    let cases = std::slice::from_ref(case);
    let draw = |seed| {
        let mut rng = StdRng::seed_from_u64(seed);
        let batch = sample_batch(cases, 3, &options, &mut rng, &Device::Cpu).unwrap();
        batch
            .images
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap()
    };
    assert_eq!(draw(9), draw(9));
    assert_ne!(draw(9), draw(10));
}

#[test]
fn patches_to_batch_keeps_patch_order() {
    let case = mni_case();
    let mut rng = StdRng::seed_from_u64(4);
    let options = AugmentOptions::crop_only([8, 8, 8]);
    let patches: Vec<_> = (0..2)
        .map(|_| sample_patch(case, &options, true, &mut rng).unwrap())
        .collect();
    let batch = patches_to_batch(&patches, &Device::Cpu).unwrap();
    let second = batch
        .labels
        .get(1)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<u32>()
        .unwrap();
    assert_eq!(second, patches[1].label.iter().copied().collect::<Vec<_>>());
}
