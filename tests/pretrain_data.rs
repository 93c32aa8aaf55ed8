//! Tests of prism::pretrain::data: the manifest, volume preparation, crops and axis
//! augmentation, the inpainting corruption and the background loader.
//!
//! Always available: the ICBM152 2009a T1 template (1 mm) and the brain1 lesion mask
//! (0.78 × 0.78 × 6.5 mm, LAS) in tests/data, and small NIfTI files written to a
//! temporary folder. The shared data folder, when present, adds a synthetic DICOM
//! series and the ICBM152 grey- and white-matter probability maps.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use candle_core::{DType, Device};
use ndarray::{s, Array3, Array4, Axis};
use prism::io::{write_volume, WriteOptions};
use prism::pretrain::data::corrupt::{corrupt_batch, CorruptConfig, Fill};
use prism::pretrain::data::dataset::{load_entry, Dataset, Prepared};
use prism::pretrain::data::loader::{
    make_batch, split_by_subject, validation_batches, Holdout, Loader, LoaderConfig,
};
use prism::pretrain::data::manifest::{
    read_manifest, scan_folder, write_manifest, BodyPart, ManifestEntry, SourceKind,
};
use prism::pretrain::data::sample::{
    prepare_scan, train_sample, validation_sample, AxisAugment, CropWindow,
};
use prism::pretrain::synth::{Anatomy, SynthConfig};
use prism::{Affine, Volume};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

fn data(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name)
}

/// Returns a path of the shared data folder, or `None` (with a note) when it is absent.
fn shared(relative: &str) -> Option<PathBuf> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../shared/data")
        .join(relative);
    if path.exists() {
        Some(path)
    } else {
        eprintln!("skipped: {} is absent", path.display());
        None
    }
}

fn write_nifti(path: &Path, data: Array3<f32>, spacing: [f64; 3]) {
    let volume = Volume::new(data, Affine::from_spacing(spacing));
    write_volume(path, &volume, &WriteOptions::default()).unwrap();
}

/// Builds a volume whose voxels are all different and non-zero: `100 i + 10 j + k + 1`.
fn ramp(shape: [usize; 3]) -> Array3<f32> {
    Array3::from_shape_fn(shape, |(i, j, k)| (100 * i + 10 * j + k + 1) as f32)
}

fn sorted(values: impl Iterator<Item = f32>) -> Vec<f32> {
    let mut values: Vec<f32> = values.collect();
    values.sort_by(f32::total_cmp);
    values
}

fn full_entry(path: PathBuf) -> ManifestEntry {
    ManifestEntry {
        paths: vec![path],
        subject: "sub-01".into(),
        body_part: BodyPart::Knee,
        tr_ms: Some(2300.0),
        te_ms: Some(2.98),
        flip_deg: Some(9.0),
        family: "T1w".into(),
        source: SourceKind::Scan,
    }
}

// ---- manifest ----

#[test]
fn manifest_round_trip_keeps_every_field() {
    let dir = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    let tissue = ManifestEntry {
        paths: vec![dir.path().join("gm.nii.gz"), dir.path().join("wm.nii.gz")],
        subject: "mni".into(),
        source: SourceKind::Tissue,
        ..ManifestEntry::default()
    };
    let entries = vec![
        full_entry(dir.path().join("sub-01/anat/sub-01_T1w.nii.gz")),
        full_entry(outside.path().join("elsewhere.nii")),
        tissue,
        ManifestEntry::scan(dir.path().join("plain.nii.gz")),
    ];
    let manifest = dir.path().join("manifest.csv");

    write_manifest(&entries, &manifest).unwrap();
    let read = read_manifest(&manifest).unwrap();

    assert_eq!(read, entries);
    let text = std::fs::read_to_string(&manifest).unwrap();
    assert!(
        text.contains("\nsub-01/anat/sub-01_T1w.nii.gz,"),
        "paths under the folder are written relative:\n{text}"
    );
}

#[test]
fn manifest_unknown_column_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let manifest = dir.path().join("m.csv");
    std::fs::write(&manifest, "path,subjcet\na.nii.gz,s1\n").unwrap();

    let message = read_manifest(&manifest).unwrap_err().to_string();

    assert!(message.contains("'subjcet'"), "{message}");
    assert!(message.contains("m.csv"), "{message}");
    assert!(message.contains("line 1"), "{message}");
}

#[test]
fn manifest_without_path_column_fails() {
    let dir = tempfile::tempdir().unwrap();
    let manifest = dir.path().join("m.csv");
    std::fs::write(&manifest, "subject\ns1\n").unwrap();

    let message = read_manifest(&manifest).unwrap_err().to_string();

    assert!(message.contains("'path'"), "{message}");
}

#[test]
fn manifest_invalid_value_names_line_and_column() {
    let dir = tempfile::tempdir().unwrap();
    let manifest = dir.path().join("m.csv");
    std::fs::write(
        &manifest,
        "path,tr_ms,body_part\na.nii,2000,head\nb.nii,fast,head\n",
    )
    .unwrap();
    let message = read_manifest(&manifest).unwrap_err().to_string();
    assert!(message.contains("line 3"), "{message}");
    assert!(message.contains("'tr_ms'"), "{message}");
    assert!(message.contains("'fast'"), "{message}");

    std::fs::write(&manifest, "path,body_part\na.nii,elbow\n").unwrap();
    let message = read_manifest(&manifest).unwrap_err().to_string();
    assert!(message.contains("line 2"), "{message}");
    assert!(message.contains("'body_part'"), "{message}");
}

#[test]
fn manifest_several_files_only_for_tissue() {
    let dir = tempfile::tempdir().unwrap();
    let manifest = dir.path().join("m.csv");
    std::fs::write(
        &manifest,
        "path,source\ngm.nii;wm.nii,tissue\ngm.nii;wm.nii,scan\n",
    )
    .unwrap();

    let message = read_manifest(&manifest).unwrap_err().to_string();

    assert!(message.contains("line 3"), "{message}");
    assert!(message.contains("'path'"), "{message}");
}

#[test]
fn manifest_resolves_relative_paths_against_its_folder() {
    let dir = tempfile::tempdir().unwrap();
    let manifest = dir.path().join("lists/m.csv");
    std::fs::create_dir(dir.path().join("lists")).unwrap();
    let absolute = dir.path().join("abs.nii.gz");
    let text = format!(
        "path,source\nscans/a.nii.gz,\n{},scan\ngm.nii.gz; wm.nii.gz,tissue\n",
        absolute.display()
    );
    std::fs::write(&manifest, text).unwrap();

    let entries = read_manifest(&manifest).unwrap();

    let folder = dir.path().join("lists");
    assert_eq!(entries[0].paths, vec![folder.join("scans/a.nii.gz")]);
    assert_eq!(entries[1].paths, vec![absolute]);
    assert_eq!(
        entries[2].paths,
        vec![folder.join("gm.nii.gz"), folder.join("wm.nii.gz")]
    );
}

#[test]
fn manifest_empty_fields_take_defaults() {
    let dir = tempfile::tempdir().unwrap();
    let manifest = dir.path().join("m.csv");
    std::fs::write(
        &manifest,
        "path,subject,body_part,tr_ms,te_ms,flip_deg,family,source\nx/scan_a.nii.gz,,,,,,,\n",
    )
    .unwrap();

    let entries = read_manifest(&manifest).unwrap();

    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0].subject, "scan_a");
    assert_eq!(entries[0].body_part, BodyPart::Unknown);
    assert_eq!(entries[0].tr_ms, None);
    assert_eq!(entries[0].te_ms, None);
    assert_eq!(entries[0].flip_deg, None);
    assert_eq!(entries[0].family, "");
    assert_eq!(entries[0].source, SourceKind::Scan);
}

#[test]
fn body_part_index_follows_classifier_order() {
    let names = [
        "head",
        "neck",
        "chest",
        "upper_abdomen",
        "lower_abdomen",
        "knee",
        "unknown",
    ];
    for (index, name) in names.iter().enumerate() {
        let part = BodyPart::parse(name).unwrap();
        assert_eq!(part.index(), index as u32, "{name}");
        assert_eq!(part.name(), *name);
    }
    assert_eq!(BodyPart::from_dicom("BRAIN"), BodyPart::Head);
    assert_eq!(BodyPart::from_dicom("KNEE"), BodyPart::Knee);
    assert_eq!(BodyPart::from_dicom("ELBOW"), BodyPart::Unknown);
}

#[test]
fn scan_folder_reads_sidecar_units() {
    let dir = tempfile::tempdir().unwrap();
    let anat = dir.path().join("sub-07/anat");
    std::fs::create_dir_all(&anat).unwrap();
    write_nifti(&anat.join("sub-07_T1w.nii.gz"), ramp([4, 4, 4]), [1.0; 3]);
    let sidecar = r#"{"RepetitionTime": 2.3, "EchoTime": 0.0123, "FlipAngle": 9, "BodyPartExamined": "BRAIN"}"#;
    std::fs::write(anat.join("sub-07_T1w.json"), sidecar).unwrap();
    write_nifti(&dir.path().join("plain.nii"), ramp([4, 4, 4]), [1.0; 3]);

    let entries = scan_folder(dir.path()).unwrap();

    assert_eq!(entries.len(), 2);
    let plain = &entries[0];
    assert_eq!(plain.subject, "plain");
    assert_eq!(plain.tr_ms, None);
    assert_eq!(plain.body_part, BodyPart::Unknown);
    let bids = &entries[1];
    assert_eq!(bids.paths, vec![anat.join("sub-07_T1w.nii.gz")]);
    assert_eq!(bids.subject, "sub-07");
    assert_eq!(bids.family, "T1w");
    assert_eq!(bids.tr_ms, Some(2300.0));
    assert_eq!(bids.te_ms, Some(12.3));
    assert_eq!(bids.flip_deg, Some(9.0));
    assert_eq!(bids.body_part, BodyPart::Head);
}

// ---- preparation and crops ----

#[test]
fn prepare_scan_zscores_nonzero_voxels() {
    let (volume, _) = prism::io::load_volume(&data("mni152_2009a_t1.nii.gz"), None).unwrap();
    let zeros_before = volume.data.iter().filter(|v| **v == 0.0).count();

    let prepared = prepare_scan(volume).unwrap();

    let nonzero: Vec<f64> = prepared
        .iter()
        .filter(|v| **v != 0.0)
        .map(|v| *v as f64)
        .collect();
    let mean = nonzero.iter().sum::<f64>() / nonzero.len() as f64;
    let variance = nonzero.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / nonzero.len() as f64;
    assert_eq!(prepared.dim(), (197, 233, 189));
    assert_eq!(prepared.len() - nonzero.len(), zeros_before);
    assert!(mean.abs() < 1e-5, "mean {mean}");
    assert!(
        (variance.sqrt() - 1.0).abs() < 1e-5,
        "sd {}",
        variance.sqrt()
    );
}

#[test]
fn prepare_scan_resamples_anisotropic_to_1mm() {
    // brain1: 256 × 256 × 25 voxels of 0.78 × 0.78 × 6.5 mm (LAS).
    let entry = ManifestEntry::scan(data("brain1_label.nii.gz"));
    let (volume, _) = prism::io::load_volume(&entry.paths[0], None).unwrap();
    let spacing = volume.spacing();

    let Prepared::Scan(prepared) = load_entry(&entry).unwrap() else {
        panic!("a scan entry gives a scan");
    };

    // MONAI's Spacing grid: round((n - 1) · old / new + 1) voxels per axis.
    let expected: Vec<usize> = [256usize, 256, 25]
        .iter()
        .zip(spacing)
        .map(|(n, s)| ((*n as f64 - 1.0) * s + 1.0).round() as usize)
        .collect();
    assert_eq!(prepared.shape(), expected.as_slice());
}

#[test]
fn crop_pads_small_volume_centred() {
    let volume = ramp([3, 4, 5]);
    let mut rng = StdRng::seed_from_u64(1);

    let window = CropWindow::random([3, 4, 5], [6, 6, 6], &mut rng);
    let crop = window.extract(volume.view());

    // SpatialPad: (roi - n) / 2 zeros before, the rest after.
    assert_eq!(window.offset, [-1, -1, 0]);
    assert_eq!(crop.slice(s![1..4, 1..5, 0..5]), volume);
    let total: f32 = crop.sum();
    assert_eq!(total, volume.sum());
    assert_eq!(CropWindow::center([3, 4, 5], [6, 6, 6]), window);
}

#[test]
fn center_crop_matches_monai_start() {
    // CenterSpatialCrop starts at n / 2 - roi / 2: 7 / 2 - 4 / 2 = 1, 6 / 2 - 3 / 2 = 2.
    let window = CropWindow::center([7, 6, 8], [4, 3, 8]);
    assert_eq!(window.offset, [1, 2, 0]);

    let volume = ramp([7, 6, 8]);
    let sample = validation_sample(volume.view(), [4, 3, 8]);
    assert_eq!(sample, volume.slice(s![1..5, 2..5, ..]));
}

#[test]
fn random_crop_stays_inside_larger_volume() {
    let mut rng = StdRng::seed_from_u64(2);
    for _ in 0..200 {
        let window = CropWindow::random([20, 9, 12], [8, 9, 4], &mut rng);
        assert!((0..=12).contains(&window.offset[0]), "{window:?}");
        assert_eq!(window.offset[1], 0);
        assert!((0..=8).contains(&window.offset[2]), "{window:?}");
    }
}

#[test]
fn train_sample_keeps_shape_and_voxel_multiset() {
    let volume = ramp([20, 17, 23]);
    for seed in 0..20 {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut replay = rng.clone();

        let sample = train_sample(volume.view(), [8, 8, 8], &mut rng);

        let crop = CropWindow::random([20, 17, 23], [8, 8, 8], &mut replay).extract(volume.view());
        assert_eq!(sample.dim(), (8, 8, 8));
        assert_eq!(sorted(sample.iter().copied()), sorted(crop.iter().copied()));
    }
}

#[test]
fn axis_augment_moves_voxels_as_stated() {
    let crop = ramp([4, 5, 6]);
    let augment = AxisAugment {
        permutation: [2, 0, 1],
        flips: [false, true, false],
    };

    let out = augment.apply(crop.clone());

    // Output axis a is input axis permutation[a]; then output axis 1 is reversed.
    assert_eq!(out.dim(), (6, 4, 5));
    for ((a, b, c), value) in out.indexed_iter() {
        assert_eq!(*value, crop[[3 - b, c, a]]);
    }
}

#[test]
fn axis_augment_draws_every_permutation_and_flip() {
    let mut rng = StdRng::seed_from_u64(3);
    let mut permutations = HashSet::new();
    let mut flipped = [0usize; 3];
    let draws = 600;
    for _ in 0..draws {
        let augment = AxisAugment::random([8, 8, 8], &mut rng);
        permutations.insert(augment.permutation);
        for (count, flip) in flipped.iter_mut().zip(augment.flips) {
            *count += usize::from(flip);
        }
    }
    assert_eq!(permutations.len(), 6);
    for count in flipped {
        assert!((200..400).contains(&count), "flip count {count} of {draws}");
    }
}

#[test]
fn axis_augment_keeps_non_cubic_shape() {
    let mut rng = StdRng::seed_from_u64(4);
    for _ in 0..50 {
        let augment = AxisAugment::random([8, 8, 4], &mut rng);
        assert_eq!(augment.permutation[2], 2, "{augment:?}");
    }
}

// ---- corruption ----

/// Builds a batch of `n` samples whose values tell the sample apart: sample b lies in
/// [1000 b, 1000 b + 1).
fn distinct_batch(n: usize, side: usize, seed: u64) -> Array4<f32> {
    let mut rng = StdRng::seed_from_u64(seed);
    Array4::from_shape_fn((n, side, side, side), |(b, ..)| {
        1000.0 * b as f32 + rng.random::<f32>()
    })
}

#[test]
fn corruption_reaches_target_fraction() {
    let clean = distinct_batch(4, 40, 5);
    let voxels = 40f64.powi(3);
    for seed in 0..10 {
        let (_, records) = corrupt_batch(
            &clean,
            &CorruptConfig::default(),
            &mut StdRng::seed_from_u64(seed),
        );
        for record in &records {
            assert!(
                (0.0..0.3 * voxels).contains(&record.noise_target),
                "{}",
                record.noise_target
            );
            let noise: Vec<usize> = record
                .cuboids
                .iter()
                .filter(|c| c.fill == Fill::Noise)
                .map(|c| c.voxels())
                .collect();
            let covered: usize = noise.iter().sum();
            assert!(covered as f64 >= record.noise_target);
            // The loop stops at the first cuboid that reaches the target.
            let before_last = covered - noise.last().copied().unwrap_or(0);
            assert!((before_last as f64) < record.noise_target || noise.is_empty());
            let pasted: usize = record
                .cuboids
                .iter()
                .filter(|c| c.fill != Fill::Noise)
                .map(|c| c.voxels())
                .sum();
            assert!(pasted as f64 >= record.paste_target);
            assert!(record.paste_target < 0.3 * voxels);
        }
    }
}

#[test]
fn corruption_cuboid_sides_within_bounds() {
    let clean = distinct_batch(2, 40, 6);
    let (_, records) = corrupt_batch(
        &clean,
        &CorruptConfig::default(),
        &mut StdRng::seed_from_u64(7),
    );
    // 40 voxels: sides from floor(0.05 · 40) = 2 up to floor(0.25 · 40) - 1 = 9, starts below 38.
    for cuboid in records.iter().flat_map(|r| &r.cuboids) {
        for a in 0..3 {
            let side = cuboid.end[a] - cuboid.start[a];
            assert!(cuboid.start[a] < 38, "{cuboid:?}");
            assert!(side <= 9, "{cuboid:?}");
            assert!(side >= 2 || cuboid.end[a] == 40, "{cuboid:?}");
        }
    }
}

#[test]
fn corruption_pastes_other_sample_voxels() {
    let clean = distinct_batch(4, 32, 8);
    let mut pastes = 0;
    for seed in 0..8 {
        let (corrupted, records) = corrupt_batch(
            &clean,
            &CorruptConfig::default(),
            &mut StdRng::seed_from_u64(seed),
        );
        for (i, record) in records.iter().enumerate() {
            let sample = corrupted.index_axis(Axis(0), i);
            for (position, cuboid) in record.cuboids.iter().enumerate() {
                let Fill::Sample(j) = cuboid.fill else {
                    continue;
                };
                pastes += 1;
                // Sample j is corrupted already when j < i and still clean when j > i.
                let source = if j < i {
                    corrupted.index_axis(Axis(0), j)
                } else {
                    clean.index_axis(Axis(0), j)
                };
                let later = &record.cuboids[position + 1..];
                for x in cuboid.start[0]..cuboid.end[0] {
                    for y in cuboid.start[1]..cuboid.end[1] {
                        for z in cuboid.start[2]..cuboid.end[2] {
                            let covered_later = later.iter().any(|c| {
                                (c.start[0]..c.end[0]).contains(&x)
                                    && (c.start[1]..c.end[1]).contains(&y)
                                    && (c.start[2]..c.end[2]).contains(&z)
                            });
                            if !covered_later {
                                assert_eq!(
                                    sample[[x, y, z]],
                                    source[[x, y, z]],
                                    "sample {i} from {j} at {x},{y},{z}"
                                );
                            }
                        }
                    }
                }
            }
        }
    }
    assert!(pastes > 0, "no cuboid was pasted in 8 batches");
}

#[test]
fn corruption_leaves_uncovered_voxels_and_bounds_noise() {
    let clean = distinct_batch(3, 32, 9);
    let (corrupted, records) = corrupt_batch(
        &clean,
        &CorruptConfig::default(),
        &mut StdRng::seed_from_u64(10),
    );
    for (i, record) in records.iter().enumerate() {
        let (low, high) = (1000.0 * i as f32, 1000.0 * i as f32 + 1.0);
        for ((x, y, z), value) in corrupted.index_axis(Axis(0), i).indexed_iter() {
            let inside: Vec<_> = record
                .cuboids
                .iter()
                .filter(|c| {
                    (c.start[0]..c.end[0]).contains(&x)
                        && (c.start[1]..c.end[1]).contains(&y)
                        && (c.start[2]..c.end[2]).contains(&z)
                })
                .collect();
            match inside.last() {
                None => assert_eq!(*value, clean[[i, x, y, z]]),
                Some(c) if c.fill == Fill::Noise => assert!(
                    (low..=high).contains(value),
                    "{value} outside [{low}, {high}]"
                ),
                Some(_) => {}
            }
        }
    }
}

// ---- dataset and loader ----

/// Loads the ICBM152 T1 (a scan) and the brain1 lesion mask (a label map) once.
fn small_dataset() -> Arc<Dataset> {
    static DATASET: OnceLock<Arc<Dataset>> = OnceLock::new();
    DATASET
        .get_or_init(|| {
            let mut labels = ManifestEntry::scan(data("brain1_label.nii.gz"));
            labels.source = SourceKind::Labels;
            labels.body_part = BodyPart::Head;
            let entries = vec![full_entry(data("mni152_2009a_t1.nii.gz")), labels];
            Arc::new(Dataset::load(entries, SynthConfig::default()).unwrap())
        })
        .clone()
}

fn loader_config(workers: usize) -> LoaderConfig {
    LoaderConfig {
        workers,
        ..LoaderConfig::new(3, [24, 24, 24], 11)
    }
}

fn take(loader: &mut Loader, count: usize) -> Vec<(u64, prism::pretrain::data::Batch)> {
    (0..count).map(|_| loader.next().unwrap()).collect()
}

#[test]
fn loader_batches_independent_of_workers() {
    let dataset = small_dataset();
    let mut one = Loader::start(dataset.clone(), loader_config(1), 0).unwrap();
    let mut three = Loader::start(dataset.clone(), loader_config(3), 0).unwrap();

    let from_one = take(&mut one, 5);
    let from_three = take(&mut three, 5);

    for ((step_a, a), (step_b, b)) in from_one.iter().zip(&from_three) {
        assert_eq!(step_a, step_b);
        assert_eq!(a, b, "step {step_a}");
    }
    assert_eq!(
        from_one.iter().map(|(s, _)| *s).collect::<Vec<_>>(),
        vec![0, 1, 2, 3, 4]
    );
    assert_ne!(from_one[0].1.clean, from_one[1].1.clean);
    assert_eq!(
        from_one[3].1,
        make_batch(&dataset, &loader_config(1), 3).unwrap()
    );
}

#[test]
fn loader_resumes_at_step() {
    let dataset = small_dataset();
    let mut from_start = Loader::start(dataset.clone(), loader_config(2), 0).unwrap();
    let mut resumed = Loader::start(dataset, loader_config(2), 3).unwrap();

    let batches = take(&mut from_start, 5);
    let (step, batch) = resumed.next().unwrap();

    assert_eq!(step, 3);
    assert_eq!(batch, batches[3].1);
    assert_eq!(resumed.next_step(), 4);
}

#[test]
fn loader_batch_fields_and_tensors() {
    let dataset = small_dataset();
    let batch = make_batch(&dataset, &loader_config(1), 0).unwrap();

    assert_eq!(batch.clean.dim(), (3, 24, 24, 24));
    assert_eq!(batch.corrupted.dim(), (3, 24, 24, 24));
    assert_ne!(batch.clean, batch.corrupted);
    for (item, entry) in batch.entries.iter().enumerate() {
        let (params, mask) = if *entry == 0 {
            ([2300.0, 2.98, 9.0], [true; 3])
        } else {
            ([0.0; 3], [false; 3])
        };
        assert_eq!(batch.seq_params[item], params);
        assert_eq!(batch.seq_mask[item], mask);
        let part = if *entry == 0 {
            BodyPart::Knee
        } else {
            BodyPart::Head
        };
        assert_eq!(batch.body_part[item], part.index());
    }

    let tensors = batch.to_tensors(&Device::Cpu).unwrap();
    assert_eq!(tensors.clean.dims(), &[3, 1, 24, 24, 24]);
    assert_eq!(tensors.corrupted.dims(), &[3, 1, 24, 24, 24]);
    assert_eq!(tensors.seq_params.dims(), &[3, 3]);
    assert_eq!(tensors.seq_mask.dims(), &[3, 3]);
    assert_eq!(tensors.body_part.dims(), &[3]);
    assert_eq!(tensors.body_part.dtype(), DType::U32);
    let first = tensors
        .clean
        .get(1)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    let expected: Vec<f32> = batch.clean.index_axis(Axis(0), 1).iter().copied().collect();
    assert_eq!(first, expected);
}

#[test]
fn loader_reports_waiting_time() {
    let mut loader = Loader::start(small_dataset(), loader_config(1), 0).unwrap();
    assert_eq!(loader.waited(), Duration::ZERO);

    // The first batch cannot be ready at once: rendering the label map alone takes
    // milliseconds.
    loader.next().unwrap();
    let first_wait = loader.waited();
    assert!(first_wait > Duration::ZERO);

    loader.next().unwrap();
    assert!(loader.waited() >= first_wait);
}

#[test]
fn loader_drop_stops_threads() {
    let loader = Loader::start(small_dataset(), loader_config(2), 0).unwrap();
    std::thread::sleep(Duration::from_millis(50));
    drop(loader); // joins the workers; a hang here fails the test by timeout
}

#[test]
fn validation_batches_fixed_and_centred() {
    let dataset = small_dataset();
    let a = validation_batches(&dataset, 1, [24, 24, 24], &CorruptConfig::default(), 5).unwrap();
    let b = validation_batches(&dataset, 1, [24, 24, 24], &CorruptConfig::default(), 5).unwrap();

    assert_eq!(a, b);
    assert_eq!(a.len(), 2);
    let Some(Prepared::Scan(t1)) = dataset.prepared(0) else {
        panic!("entry 0 is a scan");
    };
    let centre = validation_sample(t1.view(), [24, 24, 24]);
    assert_eq!(a[0].clean.index_axis(Axis(0), 0), centre);
}

#[test]
fn split_by_subject_keeps_subjects_whole() {
    let entries: Vec<ManifestEntry> = (0..40)
        .map(|n| ManifestEntry {
            subject: format!("sub-{:02}", n / 2),
            ..ManifestEntry::scan(format!("scan{n}.nii.gz"))
        })
        .collect();

    let split = split_by_subject(&entries, Holdout::Fraction(0.25), 3).unwrap();

    let subjects = |list: &[ManifestEntry]| {
        list.iter()
            .map(|e| e.subject.clone())
            .collect::<HashSet<_>>()
    };
    assert_eq!(subjects(&split.validation).len(), 5);
    assert_eq!(split.validation.len(), 10);
    assert_eq!(split.train.len(), 30);
    assert!(subjects(&split.train).is_disjoint(&subjects(&split.validation)));

    let mut reversed = entries.clone();
    reversed.reverse();
    let again = split_by_subject(&reversed, Holdout::Fraction(0.25), 3).unwrap();
    assert_eq!(subjects(&again.validation), subjects(&split.validation));

    let counted = split_by_subject(&entries, Holdout::Count(3), 3).unwrap();
    assert_eq!(subjects(&counted.validation).len(), 3);
    assert!(split_by_subject(&entries, Holdout::Count(20), 3).is_err());
}

// ---- other sources ----

#[test]
fn labels_entry_rejects_fractional_values() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("labels.nii.gz");
    let mut values = Array3::<f32>::zeros((4, 4, 4));
    values[[1, 1, 1]] = 0.5;
    write_nifti(&path, values, [1.0; 3]);
    let mut entry = ManifestEntry::scan(&path);
    entry.source = SourceKind::Labels;

    let message = load_entry(&entry).unwrap_err().to_string();

    assert!(message.contains("label value 0.5"), "{message}");
    assert!(message.contains("labels.nii.gz"), "{message}");
}

#[test]
fn dicom_folder_entry_loads_at_1mm() {
    // 160 columns × 192 rows × 80 slices of 1.2 × 1.2 × 2 mm.
    let Some(folder) = shared("dicom/series_axial_t1") else {
        return;
    };
    let entry = ManifestEntry::scan(folder);

    let Prepared::Scan(prepared) = load_entry(&entry).unwrap() else {
        panic!("a scan entry gives a scan");
    };

    let expected = [
        (159.0 * 1.2 + 1.0f64).round() as usize,
        (191.0 * 1.2 + 1.0f64).round() as usize,
        159,
    ];
    assert_eq!(prepared.shape(), expected.as_slice());
}

#[test]
fn tissue_entry_loads_maps_on_one_grid() {
    let (Some(gm), Some(wm)) = (
        shared("labels/mni152_2009a_gm.nii.gz"),
        shared("labels/mni152_2009a_wm.nii.gz"),
    ) else {
        return;
    };
    let entry = ManifestEntry {
        paths: vec![gm, wm],
        source: SourceKind::Tissue,
        ..ManifestEntry::default()
    };

    let prepared = load_entry(&entry).unwrap();

    let Prepared::Anatomy(Anatomy::Tissue(maps)) = &prepared else {
        panic!("a tissue entry gives tissue maps");
    };
    assert_eq!(maps.len(), 2);
    assert_eq!(maps[0].dim(), maps[1].dim());
    assert_eq!(prepared.memory_bytes(), 2 * maps[0].len() * 4);
}

#[test]
fn scan_folder_without_nifti_fails() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("notes.txt"), "no images here").unwrap();

    let message = scan_folder(dir.path()).unwrap_err().to_string();

    assert!(message.contains("no .nii or .nii.gz file found"), "{message}");
}
