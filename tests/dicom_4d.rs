//! 4-D DICOM series (`prism::io::dicom`, `prism-convert`, `prism-embed`): several
//! images at each slice position of one series become the volumes of one 4-D image.
//!
//! No shared test file contains such a series, so each test writes one: four slices of
//! the synthetic axial T1 series (`../shared/data/dicom/series_axial_t1`, skipped
//! with a note when absent), each copied twice with dicom-object. Multi-echo copies
//! get EchoNumbers 1 and 2 with EchoTime 10 and 30 ms; diffusion copies get
//! DiffusionBValue 0 and 1000 with a gradient direction. The second copy's pixel
//! values are halved, so the volume order shows in the voxels.

use std::path::{Path, PathBuf};

use assert_cmd::Command;
use dicom_core::{DataElement, PrimitiveValue, Tag, VR};
use prism::io::dicom::{load_series, read_sidecar, scan_folder, DicomOptions, PerVolume, SeriesInfo};
use prism::Volume;
use serde_json::Value;

const ECHO_TIME: Tag = Tag(0x0018, 0x0081);
const ECHO_NUMBERS: Tag = Tag(0x0018, 0x0086);
const SOP_INSTANCE_UID: Tag = Tag(0x0008, 0x0018);
const DIFFUSION_B_VALUE: Tag = Tag(0x0018, 0x9087);
const DIFFUSION_GRADIENT_ORIENTATION: Tag = Tag(0x0018, 0x9089);
const PIXEL_DATA: Tag = Tag(0x7FE0, 0x0010);

/// `data/` of the shared MRI test set, if present.
fn shared_data() -> Option<PathBuf> {
    let root = match std::env::var_os("PRISM_SHARED_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared"),
    };
    let data = root.join("data");
    if data.join("reference/dcm2niix.json").is_file() {
        Some(data)
    } else {
        eprintln!("skipped: shared MRI test data not found at {}", data.display());
        None
    }
}

/// Files of the axial series at truth slices 30 to 33, in slice order.
fn axial_slices(data: &Path) -> Vec<PathBuf> {
    let text = std::fs::read_to_string(data.join("reference/dcm2niix.json")).unwrap();
    let reference: Value = serde_json::from_str(&text).unwrap();
    let truth = &reference["inputs"]["dicom/series_axial_t1"]["truth_series"][0];
    let mut slices: Vec<(u64, String)> = truth["slices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["k"].as_u64().unwrap(), s["file"].as_str().unwrap().to_string()))
        .filter(|(k, _)| (30..34).contains(k))
        .collect();
    slices.sort();
    slices.into_iter().map(|(_, f)| data.join("dicom/series_axial_t1").join(f)).collect()
}

/// Copies `source` to `target` with `edits` applied, a new SOPInstanceUID and, when
/// `halve` is set, every 16-bit pixel value halved.
fn write_copy(source: &Path, target: &Path, copy: u32, halve: bool, edits: &[DataElement<dicom_object::InMemDicomObject>]) {
    let mut object = dicom_object::open_file(source).unwrap();
    for edit in edits {
        object.put(edit.clone());
    }
    let uid = object.element(SOP_INSTANCE_UID).unwrap().to_str().unwrap().trim_end_matches('\0').to_string();
    object.put(DataElement::new(SOP_INSTANCE_UID, VR::UI, PrimitiveValue::from(format!("{uid}.{copy}"))));
    if halve {
        let bytes = object.element(PIXEL_DATA).unwrap().to_bytes().unwrap().into_owned();
        let halved: Vec<u8> = bytes
            .chunks_exact(2)
            .flat_map(|b| (u16::from_le_bytes([b[0], b[1]]) / 2).to_le_bytes())
            .collect();
        object.put(DataElement::new(PIXEL_DATA, VR::OW, PrimitiveValue::from(halved)));
    }
    object.write_to_file(target).unwrap();
}

/// Writes the four slices twice into `dir`: the second copy (file names starting
/// with `a_`, so name order is not volume order) halved, each copy edited by `edits(copy)`.
fn write_two_volumes(data: &Path, dir: &Path, edits: impl Fn(u32) -> Vec<DataElement<dicom_object::InMemDicomObject>>) {
    for (n, source) in axial_slices(data).iter().enumerate() {
        write_copy(source, &dir.join(format!("b_{n}.dcm")), 1, false, &edits(1));
        write_copy(source, &dir.join(format!("a_{n}.dcm")), 2, true, &edits(2));
    }
}

fn multi_echo(copy: u32) -> Vec<DataElement<dicom_object::InMemDicomObject>> {
    let echo_time = if copy == 1 { "10" } else { "30" };
    vec![
        DataElement::new(ECHO_NUMBERS, VR::IS, PrimitiveValue::from(copy.to_string())),
        DataElement::new(ECHO_TIME, VR::DS, PrimitiveValue::from(echo_time)),
    ]
}

fn diffusion(copy: u32) -> Vec<DataElement<dicom_object::InMemDicomObject>> {
    let (b_value, gradient) = if copy == 1 { (0.0, [0.0, 0.0, 0.0]) } else { (1000.0, [0.6, 0.0, 0.8]) };
    vec![
        DataElement::new(DIFFUSION_B_VALUE, VR::FD, PrimitiveValue::from(b_value)),
        DataElement::new(
            DIFFUSION_GRADIENT_ORIENTATION,
            VR::FD,
            PrimitiveValue::F64(gradient.into_iter().collect()),
        ),
    ]
}

/// Loads the only series of `dir` with all its volumes.
fn load_dir(dir: &Path) -> (Vec<Volume>, SeriesInfo) {
    let scan = scan_folder(dir).unwrap();
    assert!(scan.unreadable.is_empty(), "{:?}", scan.unreadable);
    assert_eq!(scan.series.len(), 1);
    load_series(&scan.series[0], &DicomOptions::default()).unwrap()
}

/// Copies the four original slices into `dir` and loads them as a 3-D series.
fn three_d(data: &Path, dir: &Path) -> Volume {
    for (n, source) in axial_slices(data).iter().enumerate() {
        std::fs::copy(source, dir.join(format!("{n}.dcm"))).unwrap();
    }
    let (mut volumes, _) = load_dir(dir);
    assert_eq!(volumes.len(), 1);
    volumes.remove(0)
}

#[test]
fn multi_echo_loads_as_4d() {
    let Some(data) = shared_data() else { return };
    let (dir, plain) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    write_two_volumes(&data, dir.path(), multi_echo);
    let reference = three_d(&data, plain.path());

    let (volumes, info) = load_dir(dir.path());
    assert_eq!(volumes.len(), 2);
    assert_eq!(volumes[0].shape(), reference.shape());
    assert_eq!(volumes[1].shape(), reference.shape());
    assert!(volumes[0].affine.max_abs_diff(&reference.affine) < 1e-9);
    assert!(volumes[1].affine.max_abs_diff(&reference.affine) < 1e-9);

    // Volume 0 is echo 1 (the unchanged copies), volume 1 echo 2 (halved).
    assert_eq!(volumes[0].data, reference.data);
    assert_eq!(volumes[1].data, reference.data.mapv(|v| (v / 2.0).floor()));
    let echo_numbers: Vec<Option<i64>> = info.volumes.iter().map(|v| v.echo_number).collect();
    assert_eq!(echo_numbers, [Some(1), Some(2)]);
    assert_eq!(info.metadata.echo_time, Some(PerVolume::Volumes(vec![0.01, 0.03])));
    assert_eq!(info.metadata.bvals, None);
}

#[test]
fn diffusion_loads_with_bvals_and_bvecs() {
    let Some(data) = shared_data() else { return };
    let dir = tempfile::tempdir().unwrap();
    write_two_volumes(&data, dir.path(), diffusion);

    let (volumes, info) = load_dir(dir.path());
    assert_eq!(volumes.len(), 2);
    assert_eq!(info.metadata.bvals, Some(vec![0.0, 1000.0]));
    // Axial series: voxel axes i, j, k along LPS x, y, z, and a positive RAS
    // determinant, so FSL's bvec negates the first component: (-0.6, 0, 0.8).
    let bvecs = info.metadata.bvecs.unwrap();
    assert_eq!(bvecs[0], [0.0, 0.0, 0.0]);
    assert!((bvecs[1][0] + 0.6).abs() < 1e-9, "{bvecs:?}");
    assert!(bvecs[1][1].abs() < 1e-9, "{bvecs:?}");
    assert!((bvecs[1][2] - 0.8).abs() < 1e-9, "{bvecs:?}");
}

#[test]
fn convert_writes_4d_nifti_and_gradients() {
    let Some(data) = shared_data() else { return };
    let (dir, out) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    write_two_volumes(&data, dir.path(), diffusion);
    let (volumes, _) = load_dir(dir.path());

    Command::cargo_bin("prism-convert")
        .unwrap()
        .arg(dir.path())
        .arg("-o")
        .arg(out.path())
        .arg("-q")
        .assert()
        .success();
    let nifti = out.path().join("2_SYNTH_T1_AX_1.2mm.nii.gz");
    let header = prism::io::read_header(&nifti).unwrap();
    assert_eq!(header.shape, [volumes[0].shape().to_vec(), vec![2]].concat());
    for (v, expected) in volumes.iter().enumerate() {
        let (written, _) = prism::io::load_volume(&nifti, Some(v)).unwrap();
        assert_eq!(written.data, expected.data, "volume {v}");
        assert!(written.affine.max_abs_diff(&expected.affine) < 1e-4);
    }

    let bval = std::fs::read_to_string(out.path().join("2_SYNTH_T1_AX_1.2mm.bval")).unwrap();
    assert_eq!(bval, "0 1000 \n");
    let bvec = std::fs::read_to_string(out.path().join("2_SYNTH_T1_AX_1.2mm.bvec")).unwrap();
    assert_eq!(bvec.lines().count(), 3, "{bvec}");
    let sidecar = read_sidecar(&out.path().join("2_SYNTH_T1_AX_1.2mm.json")).unwrap();
    assert_eq!(sidecar.bvals, Some(vec![0.0, 1000.0]));
}

fn embed() -> Command {
    let mut command = Command::cargo_bin("prism-embed").unwrap();
    command
        .env_remove("SLURM_ARRAY_TASK_ID")
        .env_remove("SLURM_ARRAY_TASK_COUNT")
        .env_remove("SLURM_ARRAY_TASK_MIN")
        .arg("--weights")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/encoder_w6/encoder.safetensors"))
        .args(["--spacing", "4", "--threads", "2"]);
    command
}

/// Returns the id and embedding values of the only row of a prism-embed CSV.
fn only_row(stdout: &[u8]) -> (String, Vec<f64>) {
    let text = String::from_utf8_lossy(stdout);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "{text}");
    let fields: Vec<&str> = lines[1].split(',').collect();
    let values = fields[2..].iter().map(|v| v.parse().unwrap()).collect();
    (fields[0].to_string(), values)
}

#[test]
fn embed_4d_series_needs_volume() {
    let Some(data) = shared_data() else { return };
    let dir = tempfile::tempdir().unwrap();
    write_two_volumes(&data, dir.path(), multi_echo);
    let output = embed().arg(dir.path()).output().unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("4-D with 2 volumes"), "{stderr}");
    assert!(stderr.contains("--volume N"), "{stderr}");
}

#[test]
fn embed_4d_series_equals_its_nifti() {
    let Some(data) = shared_data() else { return };
    let (dir, out) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    write_two_volumes(&data, dir.path(), multi_echo);
    Command::cargo_bin("prism-convert").unwrap().arg(dir.path()).arg("-o").arg(out.path()).arg("-q").assert().success();

    // `--preprocess none` feeds the voxel arrays as they are, so equal arrays give
    // equal rows. (Resampling would start from the affine, which the NIfTI file
    // stores in float32, and with four slices a rounding of the resampled size can
    // change the embedding.)
    let options = ["--volume", "1", "--preprocess", "none"];
    let from_dicom = embed().args(options).arg(dir.path()).output().unwrap();
    assert!(from_dicom.status.success(), "{}", String::from_utf8_lossy(&from_dicom.stderr));
    let from_nifti = embed().args(options).arg(out.path()).output().unwrap();
    assert!(from_nifti.status.success(), "{}", String::from_utf8_lossy(&from_nifti.stderr));

    let (dicom_id, dicom_values) = only_row(&from_dicom.stdout);
    let (nifti_id, nifti_values) = only_row(&from_nifti.stdout);
    assert_eq!(dicom_id, "2_SYNTH_T1_AX_1.2mm_v1");
    assert_eq!(nifti_id, "2_SYNTH_T1_AX_1.2mm_v1");
    assert_eq!(dicom_values, nifti_values);
}
