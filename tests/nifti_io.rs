//! NIfTI-1 reading and writing (`prism::io`), checked against nibabel 5.4.2's
//! view of real files, against synthetic files whose values are known, and on
//! broken inputs that must give one-line errors.
//!
//! The files in `tests/data/` and nibabel's readings of them (`nibabel_fixtures.json`)
//! are always available. The full MRI test set is read from `../shared/data` next
//! to the repository (or from `$PRISM_SHARED_DIR/data`) when present, and those
//! tests print a note and pass when it is absent.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use ndarray::Array3;
use serde_json::Value;

use prism::io::{
    count_non_finite, load_volume, read_header, write_volume, AffineSource, NiftiHeaderInfo,
    OutputDtype, WriteOptions,
};
use prism::{Affine, Volume};

// ---------------------------------------------------------------------------
// Locations and reference data

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name)
}

/// `data/` of the shared MRI test set, if present.
fn shared_data() -> Option<PathBuf> {
    let root = match std::env::var_os("PRISM_SHARED_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared"),
    };
    let data = root.join("data");
    if data.join("reference/nibabel.json").is_file() {
        Some(data)
    } else {
        eprintln!(
            "skipped: shared MRI test data not found at {}",
            data.display()
        );
        None
    }
}

fn read_json(path: &Path) -> Value {
    let text = fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap()
}

fn fixture_entry(name: &str) -> Value {
    let all = read_json(&fixture("nibabel_fixtures.json"));
    let files = all["files"].as_object().unwrap();
    let (_, entry) = files
        .iter()
        .find(|(key, _)| key.ends_with(name))
        .unwrap_or_else(|| panic!("no nibabel entry for {name}"));
    entry.clone()
}

fn as_f64(v: &Value) -> f64 {
    v.as_f64().unwrap_or(f64::NAN)
}

fn as_matrix(v: &Value) -> Affine {
    let mut m = [[0.0; 4]; 4];
    for (r, row) in v.as_array().unwrap().iter().enumerate() {
        for (c, cell) in row.as_array().unwrap().iter().enumerate() {
            m[r][c] = as_f64(cell);
        }
    }
    Affine(m)
}

fn scratch() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

fn err_text<T: std::fmt::Debug>(result: prism::Result<T>) -> String {
    result.expect_err("expected an error").to_string()
}

fn assert_err_names(message: &str, path: &Path, keyword: &str) {
    assert!(
        message.contains(&path.display().to_string()),
        "error does not name {}: {message}",
        path.display()
    );
    assert!(
        message.to_lowercase().contains(&keyword.to_lowercase()),
        "error lacks {keyword:?}: {message}"
    );
    assert!(!message.contains('\n'), "error is not one line: {message}");
}

// ---------------------------------------------------------------------------
// Comparison with nibabel's readings

/// Statistics of the scaled data over every volume, as nibabel's reference records them.
#[derive(Default)]
struct Stats {
    min: f64,
    max: f64,
    sum: f64,
    n_voxels: u64,
    n_nonzero: u64,
    n_nan: u64,
    counts: BTreeMap<String, u64>,
}

impl Stats {
    fn add(&mut self, data: &Array3<f32>) {
        if self.n_voxels == 0 {
            self.min = f64::INFINITY;
            self.max = f64::NEG_INFINITY;
        }
        for &v in data.iter() {
            let v = f64::from(v);
            self.n_voxels += 1;
            if v.is_nan() {
                self.n_nan += 1;
                continue;
            }
            self.min = self.min.min(v);
            self.max = self.max.max(v);
            self.sum += v;
            if v != 0.0 {
                self.n_nonzero += 1;
            }
            if v.fract() == 0.0 && self.counts.len() <= 300 {
                *self.counts.entry(format!("{}", v as i64)).or_default() += 1;
            }
        }
    }
}

fn assert_close(name: &str, got: f64, expected: f64, tolerance: f64, file: &str) {
    assert!(
        (got - expected).abs() <= tolerance,
        "{file}: {name} is {got}, nibabel gives {expected} (tolerance {tolerance})"
    );
}

fn assert_matrix_close(name: &str, got: &Affine, expected: &Affine, tolerance: f64, file: &str) {
    let diff = got.max_abs_diff(expected);
    assert!(
        diff <= tolerance,
        "{file}: {name} differs from nibabel's by {diff}: {got:?} vs {expected:?}"
    );
}

/// Checks the header fields present in a nibabel reference entry.
fn check_header(path: &Path, info: &NiftiHeaderInfo, entry: &Value) {
    let file = path.display().to_string();
    let shape: Vec<usize> = entry["shape"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap() as usize)
        .collect();
    assert_eq!(info.shape, shape, "{file}: shape");
    assert_matrix_close(
        "affine",
        &info.affine,
        &as_matrix(&entry["affine"]),
        1e-4,
        &file,
    );
    assert_eq!(
        info.affine.axcodes(),
        entry["axcodes"].as_str().unwrap(),
        "{file}: axcodes"
    );
    assert_eq!(
        i64::from(info.sform_code),
        entry["sform_code"].as_i64().unwrap(),
        "{file}: sform_code"
    );
    assert_eq!(
        i64::from(info.qform_code),
        entry["qform_code"].as_i64().unwrap(),
        "{file}: qform_code"
    );

    if let Some(sform) = entry.get("sform") {
        assert_matrix_close("sform", &info.sform, &as_matrix(sform), 1e-4, &file);
    }
    if let Some(qform) = entry.get("qform") {
        assert_matrix_close("qform", &info.qform, &as_matrix(qform), 1e-4, &file);
    }
    if let Some(source) = entry.get("affine_source").and_then(Value::as_str) {
        let expected = match source {
            "sform" => AffineSource::Sform,
            "qform" => AffineSource::Qform,
            _ => AffineSource::Pixdim,
        };
        assert_eq!(info.affine_source, expected, "{file}: affine source");
    }
    if let Some(code) = entry.get("datatype_code").and_then(Value::as_i64) {
        assert_eq!(i64::from(info.datatype), code, "{file}: datatype");
    }
    if let Some(pixdim) = entry.get("pixdim").and_then(Value::as_array) {
        for (n, p) in pixdim.iter().enumerate() {
            assert_close(
                &format!("pixdim[{n}]"),
                f64::from(info.pixdim[n]),
                as_f64(p),
                1e-6,
                &file,
            );
        }
    }
    if let Some(zooms) = entry.get("zooms").and_then(Value::as_array) {
        for (n, z) in zooms.iter().enumerate().take(3) {
            assert_close(
                &format!("zoom {n}"),
                f64::from(info.pixdim[n + 1]),
                as_f64(z),
                1e-6,
                &file,
            );
        }
    }
    if let Some(qfac) = entry.get("qfac") {
        assert_eq!(f64::from(info.qfac), as_f64(qfac), "{file}: qfac");
    }
    if let Some(units) = entry.get("xyzt_units").and_then(Value::as_u64) {
        assert_eq!(u64::from(info.xyzt_units), units, "{file}: xyzt_units");
    }
    if let Some(descrip) = entry.get("descrip").and_then(Value::as_str) {
        assert_eq!(info.descrip, descrip, "{file}: descrip");
    }
}

/// Loads every volume and checks statistics and sampled voxels against nibabel.
fn check_data(path: &Path, info: &NiftiHeaderInfo, entry: &Value) {
    let file = path.display().to_string();
    let mut stats = Stats::default();
    let mut volumes = Vec::new();
    for t in 0..info.n_volumes() {
        let (vol, _) = load_volume(path, Some(t)).unwrap_or_else(|e| panic!("{e}"));
        assert_matrix_close("volume affine", &vol.affine, &info.affine, 0.0, &file);
        stats.add(&vol.data);
        volumes.push(vol);
    }

    let expected = &entry["scaled_data_stats"];
    assert_eq!(
        stats.n_voxels,
        expected["n_voxels"].as_u64().unwrap(),
        "{file}: voxel count"
    );
    assert_eq!(
        stats.n_nonzero,
        expected["n_nonzero"].as_u64().unwrap(),
        "{file}: non-zero count"
    );
    assert_eq!(
        stats.n_nan,
        expected["n_nan"].as_u64().unwrap(),
        "{file}: NaN count"
    );
    assert_close("min", stats.min, as_f64(&expected["min"]), 0.0, &file);
    assert_close("max", stats.max, as_f64(&expected["max"]), 0.0, &file);
    let sum = as_f64(&expected["sum"]);
    assert_close("sum", stats.sum, sum, 1e-9 * sum.abs().max(1.0), &file);
    let mean = as_f64(&expected["mean"]);
    assert_close(
        "mean",
        stats.sum / stats.n_voxels as f64,
        mean,
        1e-9 * mean.abs().max(1.0),
        &file,
    );

    if let Some(counts) = expected.get("value_counts").and_then(Value::as_object) {
        let expected_counts: BTreeMap<String, u64> = counts
            .iter()
            .map(|(k, v)| (k.clone(), v.as_u64().unwrap()))
            .collect();
        assert_eq!(stats.counts, expected_counts, "{file}: value counts");
    }

    for sample in entry["samples"].as_array().unwrap() {
        let index: Vec<usize> = sample["index"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as usize)
            .collect();
        let t = index.get(3).copied().unwrap_or(0);
        let got = volumes[t].data[[index[0], index[1], index[2]]];
        assert_eq!(
            f64::from(got),
            as_f64(&sample["value"]),
            "{file}: voxel {index:?}"
        );
    }
}

fn check_against_nibabel(path: &Path, entry: &Value) {
    let info = read_header(path).unwrap_or_else(|e| panic!("{e}"));
    check_header(path, &info, entry);
    check_data(path, &info, entry);
}

// ---------------------------------------------------------------------------
// Real files

#[test]
fn fixtures_match_nibabel() {
    let all = read_json(&fixture("nibabel_fixtures.json"));
    let files = all["files"].as_object().unwrap();
    assert_eq!(files.len(), 4);
    for (key, entry) in files {
        let name = Path::new(key).file_name().unwrap();
        check_against_nibabel(&fixture(name.to_str().unwrap()), entry);
    }
}

#[test]
fn shared_nifti_files_match_nibabel() {
    let Some(data) = shared_data() else { return };
    let reference = read_json(&data.join("reference/nibabel.json"));
    let files = reference["files"].as_object().unwrap();
    assert!(files.len() >= 9);
    for (key, entry) in files {
        check_against_nibabel(&data.join(key), entry);
    }
}

#[test]
fn shared_dcm2niix_outputs_match_nibabel() {
    let Some(data) = shared_data() else { return };
    let reference = read_json(&data.join("reference/dcm2niix.json"));
    let mut checked = 0;
    for input in reference["inputs"].as_object().unwrap().values() {
        for output in input["outputs"].as_array().unwrap() {
            let file = output["file"].as_str().unwrap();
            if file.ends_with(".nii.gz") {
                check_against_nibabel(&data.join(file), output);
                checked += 1;
            }
        }
    }
    assert!(checked >= 10, "only {checked} dcm2niix outputs found");
}

/// Every other NIfTI file of the shared set either loads as a 3-D volume or, for
/// the 5-D displacement fields, gives an error; none panics.
#[test]
fn shared_registration_files_load_or_fail_cleanly() {
    let Some(data) = shared_data() else { return };
    let mut stack = vec![data.join("registration")];
    let mut seen = 0;
    while let Some(dir) = stack.pop() {
        let Ok(entries) = fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            if !path.to_string_lossy().ends_with(".nii.gz") {
                continue;
            }
            seen += 1;
            let info = read_header(&path).unwrap();
            if info.dim[0] == 5 {
                assert_err_names(&err_text(load_volume(&path, None)), &path, "5-D");
            } else {
                let (vol, _) = load_volume(&path, None).unwrap();
                assert_eq!(vol.shape().to_vec(), info.shape);
            }
        }
    }
    if seen == 0 {
        eprintln!("note: no registration NIfTI files in {}", data.display());
    }
}

#[test]
fn las_label_map_keeps_sform_over_qform() {
    let path = fixture("harvardoxford_cort_maxprob_1mm.nii.gz");
    let entry = fixture_entry("harvardoxford_cort_maxprob_1mm.nii.gz");
    let info = read_header(&path).unwrap();
    assert_eq!(info.affine_source, AffineSource::Sform);
    assert!(
        info.sform.max_abs_diff(&info.qform) > 100.0,
        "sform and qform should differ here"
    );
    assert_eq!(info.affine.axcodes(), "LAS");
    assert_eq!(
        i64::from(info.intent_code),
        entry["intent_code"].as_i64().unwrap()
    );
}

#[test]
fn four_d_file_requires_volume_choice() {
    let path = fixture("example4d.nii.gz");
    let message = err_text(load_volume(&path, None));
    assert_err_names(&message, &path, "4-D");
    assert!(message.contains("2 volumes"), "{message}");
    assert!(message.contains("example4d.nii.gz:N"), "{message}");
    assert!(message.contains("--volume"), "{message}");
    assert!(message.contains("128x96x24x2"), "{message}");
}

#[test]
fn four_d_file_volume_out_of_range() {
    let path = fixture("example4d.nii.gz");
    let message = err_text(load_volume(&path, Some(2)));
    assert_err_names(&message, &path, "volume 2");
    assert!(message.contains("2 volumes"), "{message}");
}

#[test]
fn four_d_volumes_differ() {
    let path = fixture("example4d.nii.gz");
    let (first, info) = load_volume(&path, Some(0)).unwrap();
    let (second, _) = load_volume(&path, Some(1)).unwrap();
    assert_eq!(info.n_volumes(), 2);
    assert_eq!(first.shape(), [128, 96, 24]);
    assert_ne!(first.data, second.data);
}

#[test]
fn three_d_file_accepts_volume_zero_only() {
    let path = fixture("brain1_label.nii.gz");
    assert!(load_volume(&path, Some(0)).is_ok());
    let message = err_text(load_volume(&path, Some(1)));
    assert_err_names(&message, &path, "1 volume");
}

// ---------------------------------------------------------------------------
// Synthetic files with a hand-written header

/// A single-file NIfTI-1 image assembled byte by byte, to create datatypes and
/// damaged headers that the writer never produces.
#[derive(Clone)]
struct RawNifti {
    sizeof_hdr: i32,
    dim: [i16; 8],
    datatype: i16,
    bitpix: i16,
    pixdim: [f32; 8],
    vox_offset: f32,
    scl_slope: f32,
    scl_inter: f32,
    qform_code: i16,
    sform_code: i16,
    /// quatern_b, c, d, qoffset_x, y, z.
    quatern: [f32; 6],
    srow: [[f32; 4]; 3],
    magic: [u8; 4],
    big_endian: bool,
    /// Bytes between the header and the data: the extension flag and any extensions.
    extension: Vec<u8>,
    data: Vec<u8>,
}

impl RawNifti {
    fn new(shape: &[i16], datatype: i16, bitpix: i16, data: Vec<u8>) -> Self {
        let mut dim = [1i16; 8];
        dim[0] = shape.len() as i16;
        dim[1..=shape.len()].copy_from_slice(shape);
        RawNifti {
            sizeof_hdr: 348,
            dim,
            datatype,
            bitpix,
            pixdim: [1.0, 2.0, 3.0, 4.0, 1.0, 1.0, 1.0, 1.0],
            vox_offset: 352.0,
            scl_slope: f32::NAN,
            scl_inter: f32::NAN,
            qform_code: 0,
            sform_code: 1,
            quatern: [0.0; 6],
            srow: [
                [2.0, 0.0, 0.0, -10.0],
                [0.0, 3.0, 0.0, 20.0],
                [0.0, 0.0, 4.0, 30.0],
            ],
            magic: *b"n+1\0",
            big_endian: false,
            extension: vec![0; 4],
            data,
        }
    }

    fn to_bytes(&self) -> Vec<u8> {
        let mut h = vec![0u8; 348];
        let be = self.big_endian;
        let i16b = |v: i16| if be { v.to_be_bytes() } else { v.to_le_bytes() };
        let i32b = |v: i32| if be { v.to_be_bytes() } else { v.to_le_bytes() };
        let f32b = |v: f32| if be { v.to_be_bytes() } else { v.to_le_bytes() };

        h[0..4].copy_from_slice(&i32b(self.sizeof_hdr));
        for (n, d) in self.dim.iter().enumerate() {
            h[40 + 2 * n..42 + 2 * n].copy_from_slice(&i16b(*d));
        }
        h[70..72].copy_from_slice(&i16b(self.datatype));
        h[72..74].copy_from_slice(&i16b(self.bitpix));
        for (n, p) in self.pixdim.iter().enumerate() {
            h[76 + 4 * n..80 + 4 * n].copy_from_slice(&f32b(*p));
        }
        h[108..112].copy_from_slice(&f32b(self.vox_offset));
        h[112..116].copy_from_slice(&f32b(self.scl_slope));
        h[116..120].copy_from_slice(&f32b(self.scl_inter));
        h[123] = 2; // mm
        h[252..254].copy_from_slice(&i16b(self.qform_code));
        h[254..256].copy_from_slice(&i16b(self.sform_code));
        for (n, q) in self.quatern.iter().enumerate() {
            h[256 + 4 * n..260 + 4 * n].copy_from_slice(&f32b(*q));
        }
        for (r, row) in self.srow.iter().enumerate() {
            for (c, v) in row.iter().enumerate() {
                let at = 280 + 16 * r + 4 * c;
                h[at..at + 4].copy_from_slice(&f32b(*v));
            }
        }
        h[344..348].copy_from_slice(&self.magic);
        h.extend_from_slice(&self.extension);
        h.extend_from_slice(&self.data);
        h
    }

    /// Writes the file, gzip-compressed when the name ends in `.gz`.
    fn write(&self, path: &Path) {
        let bytes = self.to_bytes();
        if path.to_string_lossy().ends_with(".gz") {
            let mut encoder = flate2::write::GzEncoder::new(
                fs::File::create(path).unwrap(),
                flate2::Compression::fast(),
            );
            encoder.write_all(&bytes).unwrap();
            encoder.finish().unwrap();
        } else {
            fs::write(path, bytes).unwrap();
        }
    }
}

/// Voxel values of one datatype, in file order, with their expected `f32` values.
struct Samples {
    bytes_le: Vec<u8>,
    bytes_be: Vec<u8>,
    /// Values as exact `f64` (before scaling).
    values: Vec<f64>,
}

macro_rules! samples {
    ($t:ty, $values:expr) => {{
        let values: Vec<$t> = $values;
        Samples {
            bytes_le: values.iter().flat_map(|v| v.to_le_bytes()).collect(),
            bytes_be: values.iter().flat_map(|v| v.to_be_bytes()).collect(),
            values: values.iter().map(|&v| v as f64).collect(),
        }
    }};
}

/// 24 values for a 2x3x4 image: voxel (i, j, k) contains `i + 2j + 6k` (its position
/// in file order), except the first and last voxels, which contain the type's
/// minimum and maximum.
fn pattern<T: Copy>(from_index: impl Fn(usize) -> T, min: T, max: T) -> Vec<T> {
    let mut v: Vec<T> = (0..24).map(from_index).collect();
    v[0] = min;
    v[23] = max;
    v
}

const SHAPE: [i16; 3] = [2, 3, 4];

/// Checks that voxel `(i, j, k)` contains value number `i + 2j + 6k`, scaled.
fn assert_voxels(vol: &Volume, values: &[f64], scaling: Option<(f64, f64)>, what: &str) {
    assert_eq!(vol.shape(), [2, 3, 4], "{what}: shape");
    for k in 0..4 {
        for j in 0..3 {
            for i in 0..2 {
                let raw = values[i + 2 * j + 6 * k];
                let expected = match scaling {
                    Some((slope, inter)) => (raw * slope + inter) as f32,
                    None => raw as f32,
                };
                assert_eq!(
                    vol.data[[i, j, k]],
                    expected,
                    "{what}: voxel [{i}, {j}, {k}]"
                );
            }
        }
    }
}

fn all_datatypes() -> Vec<(&'static str, i16, i16, Samples)> {
    vec![
        (
            "uint8",
            2,
            8,
            samples!(u8, pattern(|n| n as u8, u8::MIN, u8::MAX)),
        ),
        (
            "int8",
            256,
            8,
            samples!(i8, pattern(|n| n as i8 - 12, i8::MIN, i8::MAX)),
        ),
        (
            "int16",
            4,
            16,
            samples!(i16, pattern(|n| n as i16 * 100 - 1000, i16::MIN, i16::MAX)),
        ),
        (
            "uint16",
            512,
            16,
            samples!(u16, pattern(|n| n as u16 * 1000, u16::MIN, u16::MAX)),
        ),
        (
            "int32",
            8,
            32,
            samples!(i32, pattern(|n| n as i32 * 100_000 - 7, i32::MIN, i32::MAX)),
        ),
        (
            "uint32",
            768,
            32,
            samples!(u32, pattern(|n| n as u32 * 3_000_000, u32::MIN, u32::MAX)),
        ),
        (
            "int64",
            1024,
            64,
            samples!(
                i64,
                pattern(|n| n as i64 * (1 << 40) - 5, i64::MIN, i64::MAX)
            ),
        ),
        (
            "uint64",
            1280,
            64,
            samples!(u64, pattern(|n| n as u64 * (1 << 50), u64::MIN, u64::MAX)),
        ),
        (
            "float32",
            16,
            32,
            samples!(f32, pattern(|n| n as f32 * 0.25 - 2.5, -3.0e38, 3.0e38)),
        ),
        (
            "float64",
            64,
            64,
            samples!(f64, pattern(|n| n as f64 * 0.125 - 1.0, -1.0e300, 1.0e300)),
        ),
    ]
}

#[test]
fn reads_every_scalar_datatype() {
    let dir = scratch();
    for (name, code, bitpix, samples) in all_datatypes() {
        for gz in [false, true] {
            let path = dir
                .path()
                .join(format!("{name}.nii{}", if gz { ".gz" } else { "" }));
            RawNifti::new(&SHAPE, code, bitpix, samples.bytes_le.clone()).write(&path);
            let (vol, info) = load_volume(&path, None).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(info.datatype, code, "{name}");
            assert_voxels(&vol, &samples.values, None, name);
        }
    }
}

#[test]
fn reads_every_scalar_datatype_big_endian() {
    let dir = scratch();
    for (name, code, bitpix, samples) in all_datatypes() {
        let path = dir.path().join(format!("{name}_be.nii"));
        let mut raw = RawNifti::new(&SHAPE, code, bitpix, samples.bytes_be.clone());
        raw.big_endian = true;
        raw.write(&path);
        let (vol, info) = load_volume(&path, None).unwrap_or_else(|e| panic!("{e}"));
        assert!(info.big_endian, "{name}");
        assert_voxels(&vol, &samples.values, None, &format!("{name} big-endian"));
        let expected = Affine([
            [2.0, 0.0, 0.0, -10.0],
            [0.0, 3.0, 0.0, 20.0],
            [0.0, 0.0, 4.0, 30.0],
            [0.0, 0.0, 0.0, 1.0],
        ]);
        assert_matrix_close("affine", &vol.affine, &expected, 0.0, name);
    }
}

/// Translation-setting helper for expected affines.
trait WithOffset {
    fn with_offset(self, t: [f64; 3]) -> Affine;
}

impl WithOffset for Affine {
    fn with_offset(mut self, t: [f64; 3]) -> Affine {
        for (r, v) in t.iter().enumerate() {
            self.0[r][3] = *v;
        }
        self
    }
}

#[test]
fn applies_scl_slope_and_inter() {
    let dir = scratch();
    // (slope, inter, scaling expected): slope 0 or NaN disables scaling; a NaN
    // intercept with a valid slope counts as 0.
    let cases = [
        (0.5f32, 10.0f32, Some((0.5, 10.0))),
        (-2.0, 0.25, Some((-2.0, 0.25))),
        (0.0, 5.0, None),
        (f32::NAN, 5.0, None),
        (f32::INFINITY, 5.0, None),
        (2.0, f32::NAN, Some((2.0, 0.0))),
        (1.0, 0.0, Some((1.0, 0.0))),
    ];
    for (name, code, bitpix, samples) in all_datatypes() {
        for (n, (slope, inter, expected)) in cases.iter().enumerate() {
            let path = dir.path().join(format!("{name}_scaled_{n}.nii"));
            let mut raw = RawNifti::new(&SHAPE, code, bitpix, samples.bytes_le.clone());
            raw.scl_slope = *slope;
            raw.scl_inter = *inter;
            raw.write(&path);
            let (vol, info) = load_volume(&path, None).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(info.scaling(), *expected, "{name} case {n}");
            assert_voxels(
                &vol,
                &samples.values,
                *expected,
                &format!("{name} slope {slope} inter {inter}"),
            );
        }
    }
}

#[test]
fn keeps_non_finite_values() {
    let dir = scratch();
    let path = dir.path().join("nan.nii.gz");
    let values = pattern(|n| n as f32, f32::NAN, f32::INFINITY);
    let bytes = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    RawNifti::new(&SHAPE, 16, 32, bytes).write(&path);
    let (vol, _) = load_volume(&path, None).unwrap();
    assert!(vol.data[[0, 0, 0]].is_nan());
    assert_eq!(vol.data[[1, 2, 3]], f32::INFINITY);
    assert_eq!(count_non_finite(&vol), 2);
}

#[test]
fn qform_used_when_sform_code_zero() {
    let dir = scratch();
    let path = dir.path().join("qform.nii");
    let mut raw = RawNifti::new(&SHAPE, 2, 8, vec![0; 24]);
    raw.sform_code = 0;
    raw.qform_code = 1;
    // 90 degrees about z: quaternion (cos 45°, 0, 0, sin 45°); qfac -1 flips k.
    let half = std::f32::consts::FRAC_1_SQRT_2;
    raw.quatern = [0.0, 0.0, half, 5.0, 6.0, 7.0];
    raw.pixdim[0] = -1.0;
    raw.write(&path);
    let info = read_header(&path).unwrap();
    assert_eq!(info.affine_source, AffineSource::Qform);
    let expected = Affine([
        [0.0, -3.0, 0.0, 5.0],
        [2.0, 0.0, 0.0, 6.0],
        [0.0, 0.0, -4.0, 7.0],
        [0.0, 0.0, 0.0, 1.0],
    ]);
    assert_matrix_close("qform", &info.affine, &expected, 1e-6, "qform.nii");
}

/// nibabel's `get_base_affine`: x flipped, voxel (n - 1) / 2 at the origin.
#[test]
fn pixdim_fallback_centres_image() {
    let dir = scratch();
    let path = dir.path().join("nocodes.nii");
    let mut raw = RawNifti::new(&SHAPE, 2, 8, vec![0; 24]);
    raw.sform_code = 0;
    raw.qform_code = 0;
    raw.write(&path);
    let info = read_header(&path).unwrap();
    assert_eq!(info.affine_source, AffineSource::Pixdim);
    let expected = Affine([
        [-2.0, 0.0, 0.0, 1.0],
        [0.0, 3.0, 0.0, -3.0],
        [0.0, 0.0, 4.0, -6.0],
        [0.0, 0.0, 0.0, 1.0],
    ]);
    assert_matrix_close("fallback", &info.affine, &expected, 0.0, "nocodes.nii");
}

#[test]
fn invalid_xform_code_reads_as_zero() {
    let dir = scratch();
    let path = dir.path().join("code7.nii");
    let mut raw = RawNifti::new(&SHAPE, 2, 8, vec![0; 24]);
    raw.sform_code = 7;
    raw.write(&path);
    let info = read_header(&path).unwrap();
    assert_eq!(info.sform_code, 0);
    assert_eq!(info.affine_source, AffineSource::Pixdim);
}

#[test]
fn data_after_header_extensions() {
    let dir = scratch();
    let path = dir.path().join("ext.nii.gz");
    let samples = samples!(i16, pattern(|n| n as i16, -1, 1));
    let mut raw = RawNifti::new(&SHAPE, 4, 16, samples.bytes_le);
    // Extension flag 1, then one 32-byte extension (esize 32, ecode 6 = comment).
    raw.extension = vec![1, 0, 0, 0];
    raw.extension.extend_from_slice(&32i32.to_le_bytes());
    raw.extension.extend_from_slice(&6i32.to_le_bytes());
    raw.extension.extend_from_slice(&[b'x'; 24]);
    raw.vox_offset = 384.0;
    raw.write(&path);
    let (vol, _) = load_volume(&path, None).unwrap();
    assert_voxels(&vol, &samples.values, None, "after extensions");
}

#[test]
fn four_d_with_one_volume_is_three_d() {
    let dir = scratch();
    let path = dir.path().join("t1.nii");
    let samples = samples!(u8, pattern(|n| n as u8, 0, 255));
    RawNifti::new(&[2, 3, 4, 1], 2, 8, samples.bytes_le).write(&path);
    let (vol, info) = load_volume(&path, None).unwrap();
    assert_eq!(info.n_volumes(), 1);
    assert_voxels(&vol, &samples.values, None, "4-D with dim[4] = 1");
}

#[test]
fn four_d_selects_volume_in_file_order() {
    let dir = scratch();
    let path = dir.path().join("series.nii.gz");
    // Three volumes; voxel n of volume t contains 100 t + n.
    let values: Vec<i16> = (0..3)
        .flat_map(|t| (0..24).map(move |n| 100 * t + n))
        .collect();
    let bytes = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    RawNifti::new(&[2, 3, 4, 3], 4, 16, bytes).write(&path);
    for t in 0..3 {
        let (vol, _) = load_volume(&path, Some(t)).unwrap();
        let expected: Vec<f64> = (0..24).map(|n| (100 * t + n) as f64).collect();
        assert_voxels(&vol, &expected, None, &format!("volume {t}"));
    }
}

// ---------------------------------------------------------------------------
// Bad input

fn raw_u8(shape: &[i16]) -> RawNifti {
    let n: i64 = shape.iter().map(|&s| i64::from(s.max(0))).product();
    RawNifti::new(shape, 2, 8, vec![7; n.clamp(0, 4096) as usize])
}

#[test]
fn missing_file_is_an_error() {
    let path = scratch().path().join("absent.nii.gz");
    assert_err_names(&err_text(load_volume(&path, None)), &path, "not found");
    assert_err_names(&err_text(read_header(&path)), &path, "not found");
}

#[test]
fn text_file_is_not_nifti() {
    let dir = scratch();
    let short = dir.path().join("notes.nii");
    fs::write(&short, "subject 1: T1 scan\n").unwrap();
    assert_err_names(&err_text(load_volume(&short, None)), &short, "not a NIfTI");

    let long = dir.path().join("long.nii");
    fs::write(&long, "lorem ipsum ".repeat(100)).unwrap();
    assert_err_names(&err_text(load_volume(&long, None)), &long, "not a NIfTI");
}

#[test]
fn empty_file_is_not_nifti() {
    let dir = scratch();
    let path = dir.path().join("empty.nii.gz");
    fs::write(&path, b"").unwrap();
    assert_err_names(&err_text(load_volume(&path, None)), &path, "not a NIfTI");
}

#[test]
fn truncated_gzip_is_an_error() {
    let dir = scratch();
    let whole = fs::read(fixture("brain1_label.nii.gz")).unwrap();
    let path = dir.path().join("half.nii.gz");
    fs::write(&path, &whole[..whole.len() / 2]).unwrap();
    assert_err_names(&err_text(load_volume(&path, None)), &path, "truncated");

    let in_header = dir.path().join("header_cut.nii.gz");
    fs::write(&in_header, &whole[..40]).unwrap();
    assert_err_names(
        &err_text(load_volume(&in_header, None)),
        &in_header,
        "truncated",
    );
}

#[test]
fn corrupt_gzip_is_an_error() {
    let dir = scratch();
    let mut bytes = fs::read(fixture("brain1_label.nii.gz")).unwrap();
    for b in bytes.iter_mut().skip(200).take(200) {
        *b ^= 0x5a;
    }
    let path = dir.path().join("corrupt.nii.gz");
    fs::write(&path, &bytes).unwrap();
    assert_err_names(&err_text(load_volume(&path, None)), &path, "corrupt");
}

#[test]
fn header_claiming_more_data_is_an_error() {
    let dir = scratch();
    for name in ["short.nii", "short.nii.gz"] {
        let path = dir.path().join(name);
        let mut raw = raw_u8(&SHAPE);
        raw.data.truncate(10);
        raw.write(&path);
        let message = err_text(load_volume(&path, None));
        assert_err_names(&message, &path, "truncated");
        assert!(
            message.contains("376"),
            "names the expected end of the data: {message}"
        );
    }
}

#[test]
fn unsupported_datatypes_are_errors() {
    let dir = scratch();
    let cases = [
        (128, 24, "RGB24"),
        (2304, 32, "RGBA32"),
        (32, 64, "complex64"),
        (1792, 128, "complex128"),
        (2048, 256, "complex256"),
        (1536, 128, "float128"),
        (1, 1, "1-bit"),
        (9999, 8, "unknown datatype"),
    ];
    for (code, bitpix, keyword) in cases {
        let path = dir.path().join(format!("type{code}.nii.gz"));
        let bytes = vec![1u8; 24 * (bitpix as usize).div_ceil(8)];
        RawNifti::new(&SHAPE, code, bitpix, bytes).write(&path);
        assert_err_names(&err_text(load_volume(&path, None)), &path, keyword);
        // The header alone is still readable.
        assert_eq!(read_header(&path).unwrap().datatype, code);
    }
}

#[test]
fn nifti2_is_an_error() {
    let dir = scratch();
    let path = dir.path().join("n2.nii");
    // A NIfTI-2 header starts with sizeof_hdr 540 and has its magic at byte 4.
    let mut bytes = vec![0u8; 560];
    bytes[0..4].copy_from_slice(&540i32.to_le_bytes());
    bytes[4..8].copy_from_slice(b"n+2\0");
    fs::write(&path, &bytes).unwrap();
    assert_err_names(&err_text(load_volume(&path, None)), &path, "NIfTI-2");

    let gz = dir.path().join("n2.nii.gz");
    let mut encoder =
        flate2::write::GzEncoder::new(fs::File::create(&gz).unwrap(), flate2::Compression::fast());
    encoder.write_all(&bytes).unwrap();
    encoder.finish().unwrap();
    assert_err_names(&err_text(read_header(&gz)), &gz, "NIfTI-2");
}

#[test]
fn header_of_pair_is_an_error() {
    let dir = scratch();
    let path = dir.path().join("pair.nii");
    let mut raw = raw_u8(&SHAPE);
    raw.magic = *b"ni1\0";
    raw.write(&path);
    assert_err_names(&err_text(load_volume(&path, None)), &path, ".hdr/.img");
}

/// nibabel tolerates a wrong `sizeof_hdr` when the magic string is right.
#[test]
fn wrong_sizeof_hdr_is_tolerated() {
    let dir = scratch();
    let path = dir.path().join("size.nii");
    let mut raw = raw_u8(&SHAPE);
    raw.sizeof_hdr = 1234;
    raw.write(&path);
    let (vol, _) = load_volume(&path, None).unwrap();
    assert_eq!(vol.data[[1, 2, 3]], 7.0);
}

#[test]
fn analyze_header_is_not_nifti() {
    let dir = scratch();
    let path = dir.path().join("analyze.nii");
    let mut raw = raw_u8(&SHAPE);
    raw.magic = [0; 4];
    raw.write(&path);
    assert_err_names(&err_text(load_volume(&path, None)), &path, "ANALYZE");
}

#[test]
fn two_d_image_is_an_error() {
    let dir = scratch();
    let path = dir.path().join("slice.nii.gz");
    raw_u8(&[64, 48]).write(&path);
    let message = err_text(load_volume(&path, None));
    assert_err_names(&message, &path, "2-D image");
    assert!(message.contains("64x48"), "{message}");
    assert!(message.contains("3-D volume is required"), "{message}");
}

#[test]
fn five_d_image_is_an_error() {
    let dir = scratch();
    let path = dir.path().join("field.nii");
    raw_u8(&[2, 3, 4, 1, 3]).write(&path);
    assert_err_names(&err_text(load_volume(&path, None)), &path, "5-D image");
}

#[test]
fn zero_and_negative_dimensions_are_errors() {
    let dir = scratch();
    for (n, shape) in [[2i16, 0, 4], [2, -3, 4]].iter().enumerate() {
        let path = dir.path().join(format!("dim{n}.nii"));
        raw_u8(shape).write(&path);
        assert_err_names(&err_text(load_volume(&path, None)), &path, "dim[2]");
        assert_err_names(&err_text(read_header(&path)), &path, "at least 1");
    }

    let path = dir.path().join("dim0.nii");
    let mut raw = raw_u8(&SHAPE);
    raw.dim[0] = 0;
    raw.write(&path);
    assert_err_names(&err_text(load_volume(&path, None)), &path, "dim[0]");
}

#[test]
fn absurd_dimensions_are_errors() {
    let dir = scratch();
    let path = dir.path().join("huge.nii.gz");
    raw_u8(&[32767, 32767, 32767]).write(&path);
    assert_err_names(&err_text(load_volume(&path, None)), &path, "too large");
}

#[test]
fn bad_vox_offset_is_an_error() {
    let dir = scratch();
    for (n, offset) in [0.0f32, 100.0, f32::NAN, -400.0].iter().enumerate() {
        let path = dir.path().join(format!("offset{n}.nii"));
        let mut raw = raw_u8(&SHAPE);
        raw.vox_offset = *offset;
        raw.write(&path);
        assert_err_names(&err_text(load_volume(&path, None)), &path, "vox_offset");
    }
}

#[test]
fn vox_offset_beyond_end_is_truncation() {
    let dir = scratch();
    let path = dir.path().join("far.nii");
    let mut raw = raw_u8(&SHAPE);
    raw.vox_offset = 1.0e6;
    raw.write(&path);
    assert_err_names(&err_text(load_volume(&path, None)), &path, "truncated");
}

// ---------------------------------------------------------------------------
// Writing

fn synthetic_volume(affine: Affine) -> Volume {
    let data = Array3::from_shape_fn((5, 4, 3), |(i, j, k)| (i + 5 * j + 20 * k) as f32 - 7.0);
    Volume::new(data, affine)
}

/// Returns a rotation by 0.3 rad about x, then 0.2 rad about z.
fn rotation() -> Affine {
    let (sx, cx) = 0.3f64.sin_cos();
    let (sz, cz) = 0.2f64.sin_cos();
    let rx = Affine([
        [1.0, 0.0, 0.0, 0.0],
        [0.0, cx, -sx, 0.0],
        [0.0, sx, cx, 0.0],
        [0.0, 0.0, 0.0, 1.0],
    ]);
    let rz = Affine([
        [cz, -sz, 0.0, 0.0],
        [sz, cz, 0.0, 0.0],
        [0.0, 0.0, 1.0, 0.0],
        [0.0, 0.0, 0.0, 1.0],
    ]);
    rz.compose(&rx)
}

/// Returns an oblique, left-handed (x flipped) affine with anisotropic voxels.
fn oblique_affine() -> Affine {
    let zooms = Affine::from_spacing([-1.5, 0.9, 2.5]);
    rotation()
        .compose(&zooms)
        .with_offset([88.5, -120.25, -60.0])
}

#[test]
fn writes_every_output_dtype() {
    let dir = scratch();
    let vol = synthetic_volume(oblique_affine());
    let label_vol = Volume::new(vol.data.mapv(|v| v + 7.0), vol.affine);
    let cases = [
        (OutputDtype::Float32, 16, &vol),
        (OutputDtype::Uint8, 2, &label_vol),
        (OutputDtype::Int16, 4, &vol),
        (OutputDtype::Int32, 8, &vol),
    ];
    for (dtype, code, source) in cases {
        for ext in ["nii", "nii.gz"] {
            let path = dir.path().join(format!("out_{code}.{ext}"));
            write_volume(&path, source, &WriteOptions::default().with_dtype(dtype)).unwrap();
            let (back, info) = load_volume(&path, None).unwrap();
            assert_eq!(info.datatype, code, "{dtype:?} {ext}");
            assert_eq!(back.data, source.data, "{dtype:?} {ext}: data");
            assert_matrix_close("affine", &back.affine, &source.affine, 1e-5, ext);
            assert_matrix_close("qform", &info.qform, &source.affine, 1e-5, ext);
            assert_eq!((info.sform_code, info.qform_code), (1, 1));
            assert_eq!(info.xyzt_units, 2);
        }
    }
}

#[test]
fn gzip_output_is_compressed() {
    let dir = scratch();
    let path = dir.path().join("out.nii.gz");
    write_volume(
        &path,
        &synthetic_volume(Affine::identity()),
        &WriteOptions::default(),
    )
    .unwrap();
    let bytes = fs::read(&path).unwrap();
    assert_eq!(&bytes[..2], &[0x1f, 0x8b]);
    let plain = dir.path().join("out.nii");
    write_volume(
        &plain,
        &synthetic_volume(Affine::identity()),
        &WriteOptions::default(),
    )
    .unwrap();
    assert_eq!(fs::metadata(&plain).unwrap().len(), 352 + 60 * 4);
}

#[test]
fn integer_output_rejects_unrepresentable_values() {
    let dir = scratch();
    let path = dir.path().join("labels.nii.gz");
    let mut vol = synthetic_volume(Affine::identity());
    vol.data.mapv_inplace(|v| v.abs());
    vol.data[[1, 2, 0]] = 300.0;
    let message = err_text(write_volume(
        &path,
        &vol,
        &WriteOptions::default().with_dtype(OutputDtype::Uint8),
    ));
    assert_err_names(&message, &path, "voxel [1, 2, 0]");

    vol.data[[1, 2, 0]] = 2.5;
    let message = err_text(write_volume(
        &path,
        &vol,
        &WriteOptions::default().with_dtype(OutputDtype::Int16),
    ));
    assert_err_names(&message, &path, "not an integer");

    vol.data[[1, 2, 0]] = f32::NAN;
    assert!(write_volume(
        &path,
        &vol,
        &WriteOptions::default().with_dtype(OutputDtype::Int32)
    )
    .is_err());
    assert!(!path.exists());
    assert_eq!(
        fs::read_dir(dir.path()).unwrap().count(),
        0,
        "nothing left behind"
    );
}

#[test]
fn round_trip_las_label_map_keeps_codes() {
    let dir = scratch();
    let input = fixture("harvardoxford_cort_maxprob_1mm.nii.gz");
    let (vol, info) = load_volume(&input, None).unwrap();
    let output = dir.path().join("ho.nii.gz");
    write_volume(
        &output,
        &vol,
        &WriteOptions::like(&info).with_dtype(OutputDtype::Uint8),
    )
    .unwrap();

    let (back, back_info) = load_volume(&output, None).unwrap();
    assert_eq!(back.data, vol.data);
    assert_eq!(back_info.datatype, 2);
    assert_eq!(
        (back_info.sform_code, back_info.qform_code),
        (info.sform_code, info.qform_code)
    );
    assert_eq!(back_info.xyzt_units, info.xyzt_units);
    assert_matrix_close("affine", &back.affine, &vol.affine, 1e-5, "ho");
    // The written qform describes the volume's affine (the input's sform).
    assert_matrix_close("qform", &back_info.qform, &vol.affine, 1e-5, "ho");
    assert_eq!(back_info.qfac, -1.0);
    assert_eq!(back.affine.axcodes(), "LAS");
}

#[test]
fn round_trip_4d_volume_keeps_oblique_geometry() {
    let dir = scratch();
    let (vol, info) = load_volume(&fixture("example4d.nii.gz"), Some(1)).unwrap();
    let output = dir.path().join("vol1.nii");
    write_volume(
        &output,
        &vol,
        &WriteOptions::like(&info).with_dtype(OutputDtype::Int16),
    )
    .unwrap();
    let (back, back_info) = load_volume(&output, None).unwrap();
    assert_eq!(back.data, vol.data);
    assert_matrix_close("affine", &back.affine, &vol.affine, 1e-5, "example4d");
    assert_matrix_close("qform", &back_info.qform, &vol.affine, 1e-5, "example4d");
    assert_eq!(back_info.xyzt_units, 10);
}

#[test]
fn round_trip_rotated_real_volume() {
    let dir = scratch();
    let (mut vol, info) = load_volume(&fixture("brain1_label.nii.gz"), None).unwrap();
    vol.affine = rotation().compose(&vol.affine);
    let output = dir.path().join("oblique.nii.gz");
    write_volume(
        &output,
        &vol,
        &WriteOptions::like(&info).with_dtype(OutputDtype::Int32),
    )
    .unwrap();
    let (back, back_info) = load_volume(&output, None).unwrap();
    assert_eq!(back.data, vol.data);
    assert_matrix_close("sform", &back_info.sform, &vol.affine, 1e-5, "oblique");
    assert_matrix_close("qform", &back_info.qform, &vol.affine, 1e-5, "oblique");
    let spacing = vol.affine.spacing();
    for (axis, expected) in spacing.iter().enumerate() {
        assert_close(
            "pixdim",
            f64::from(back_info.pixdim[axis + 1]),
            *expected,
            1e-5,
            "oblique",
        );
    }
}

#[test]
fn like_without_codes_sets_scanner_codes() {
    let dir = scratch();
    let input = dir.path().join("nocodes.nii");
    let mut raw = raw_u8(&SHAPE);
    raw.sform_code = 0;
    raw.write(&input);
    let (vol, info) = load_volume(&input, None).unwrap();
    let output = dir.path().join("coded.nii");
    write_volume(&output, &vol, &WriteOptions::like(&info)).unwrap();
    let (back, back_info) = load_volume(&output, None).unwrap();
    assert_eq!((back_info.sform_code, back_info.qform_code), (1, 1));
    assert_matrix_close("affine", &back.affine, &info.affine, 1e-6, "nocodes");
}

/// For a sheared affine the sform is exact and the qform stores the nearest
/// rotation. Expected quaternion from nibabel 5.4.2:
/// `hdr.set_qform([[1, .3, 0, 0], [0, 1, 0, 0], [0, 0, 2, 0], [0, 0, 0, 1]])`
/// gives quatern_b, c, d = (0, 0, -0.07279974) and pixdim (1, 1.0440307, 2).
#[test]
fn sheared_affine_qform_matches_nibabel() {
    let dir = scratch();
    let affine = Affine([
        [1.0, 0.3, 0.0, 0.0],
        [0.0, 1.0, 0.0, 0.0],
        [0.0, 0.0, 2.0, 0.0],
        [0.0, 0.0, 0.0, 1.0],
    ]);
    let path = dir.path().join("shear.nii");
    write_volume(&path, &synthetic_volume(affine), &WriteOptions::default()).unwrap();
    let info = read_header(&path).unwrap();
    assert_matrix_close("sform", &info.sform, &affine, 1e-7, "shear");
    assert_close(
        "quatern_b",
        f64::from(info.quatern_bcd[0]),
        0.0,
        1e-7,
        "shear",
    );
    assert_close(
        "quatern_c",
        f64::from(info.quatern_bcd[1]),
        0.0,
        1e-7,
        "shear",
    );
    assert_close(
        "quatern_d",
        f64::from(info.quatern_bcd[2]),
        -0.072_799_74,
        1e-7,
        "shear",
    );
    assert_close(
        "pixdim[2]",
        f64::from(info.pixdim[2]),
        1.044_030_7,
        1e-6,
        "shear",
    );
}

#[test]
fn write_leaves_no_temporary_file() {
    let dir = scratch();
    let path = dir.path().join("scan.nii.gz");
    let vol = synthetic_volume(Affine::identity());
    write_volume(&path, &vol, &WriteOptions::default()).unwrap();
    // Overwriting an existing output goes through the same rename.
    write_volume(&path, &vol, &WriteOptions::default()).unwrap();
    let names: Vec<String> = fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, vec!["scan.nii.gz".to_string()]);
}

#[test]
fn write_into_missing_directory_is_an_error() {
    let dir = scratch();
    let missing = dir.path().join("no/such/dir");
    let path = missing.join("scan.nii.gz");
    let message = err_text(write_volume(
        &path,
        &synthetic_volume(Affine::identity()),
        &WriteOptions::default(),
    ));
    assert_err_names(&message, &missing, "does not exist");
}

#[test]
fn write_with_other_extension_is_an_error() {
    let dir = scratch();
    let path = dir.path().join("scan.mgz");
    let message = err_text(write_volume(
        &path,
        &synthetic_volume(Affine::identity()),
        &WriteOptions::default(),
    ));
    assert_err_names(&message, &path, ".nii.gz");
}

#[test]
fn write_singular_affine_is_an_error() {
    let dir = scratch();
    let path = dir.path().join("flat.nii");
    let affine = Affine::from_spacing([1.0, 0.0, 1.0]);
    let message = err_text(write_volume(
        &path,
        &synthetic_volume(affine),
        &WriteOptions::default(),
    ));
    assert_err_names(&message, &path, "qform");
    assert!(!path.exists());
}

#[test]
fn write_keeps_description() {
    let dir = scratch();
    let path = dir.path().join("d.nii");
    let opts = WriteOptions {
        descrip: "prism-embed test".into(),
        ..WriteOptions::default()
    };
    write_volume(&path, &synthetic_volume(Affine::identity()), &opts).unwrap();
    assert_eq!(read_header(&path).unwrap().descrip, "prism-embed test");
}
