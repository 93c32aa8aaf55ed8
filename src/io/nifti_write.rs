//! Writing a [`Volume`] as a single-file NIfTI-1 image (`.nii` or `.nii.gz`).
//!
//! The 348-byte header is composed here rather than by the `nifti` crate's writer.
//! That writer only writes to a path it creates itself and derives the sform and
//! qform fields on its own. Composing the header lets the output go through a
//! temporary file with both transforms, their codes and `xyzt_units` chosen by
//! the caller.

use std::io::{BufWriter, Write};
use std::path::Path;

use flate2::write::GzEncoder;
use flate2::Compression;

use super::nifti::{NiftiHeaderInfo, HEADER_SIZE, MIN_VOX_OFFSET};
use super::qform::{affine_to_qform, QformParams};
use crate::error::{Error, Result};
use crate::geometry::Affine;
use crate::volume::Volume;

/// The voxel type stored in the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OutputDtype {
    /// 32-bit float; any value, NaN and infinity included.
    #[default]
    Float32,
    /// Unsigned 8-bit integer (label maps and masks of up to 255 labels).
    Uint8,
    /// Signed 16-bit integer.
    Int16,
    /// Signed 32-bit integer.
    Int32,
}

impl OutputDtype {
    /// NIfTI datatype code and bits per voxel.
    fn code_and_bitpix(self) -> (i16, i16) {
        match self {
            OutputDtype::Float32 => (16, 32),
            OutputDtype::Uint8 => (2, 8),
            OutputDtype::Int16 => (4, 16),
            OutputDtype::Int32 => (8, 32),
        }
    }
}

/// Encoding settings for [`write_volume`].
#[derive(Debug, Clone, PartialEq)]
pub struct WriteOptions {
    /// Voxel type in the file. Integer types accept only integral values within range.
    pub dtype: OutputDtype,
    /// Meaning of the sform (`NIFTI_XFORM_*`: 1 scanner, 2 aligned, 3 Talairach, 4 MNI, 5 template).
    pub sform_code: i16,
    /// Meaning of the qform, same codes.
    pub qform_code: i16,
    /// Units of `pixdim`: bits 0-2 space (2 = mm), bits 3-5 time (8 = s).
    pub xyzt_units: u8,
    /// Free text, at most 79 bytes (longer text is cut).
    pub descrip: String,
}

/// `NIFTI_UNITS_MM`: the affine of a [`Volume`] is in millimetres.
const UNITS_MM: u8 = 2;

impl Default for WriteOptions {
    /// Float32, both transforms with code 1 (scanner anatomical), units mm.
    fn default() -> Self {
        WriteOptions {
            dtype: OutputDtype::Float32,
            sform_code: 1,
            qform_code: 1,
            xyzt_units: UNITS_MM,
            descrip: String::new(),
        }
    }
}

impl WriteOptions {
    /// Options that keep the sform/qform codes and `xyzt_units` of an input file.
    ///
    /// When the input had neither transform coded (its affine came from `pixdim`),
    /// both codes become 1 so that readers use the written affine rather than
    /// recomputing a `pixdim` fallback. The dtype stays float32.
    pub fn like(input: &NiftiHeaderInfo) -> Self {
        let (sform_code, qform_code) = if input.sform_code == 0 && input.qform_code == 0 {
            (1, 1)
        } else {
            (input.sform_code, input.qform_code)
        };
        WriteOptions {
            sform_code,
            qform_code,
            xyzt_units: input.xyzt_units,
            ..WriteOptions::default()
        }
    }

    /// Returns the same options with another voxel type.
    pub fn with_dtype(mut self, dtype: OutputDtype) -> Self {
        self.dtype = dtype;
        self
    }
}

/// Writes `vol` to `path` (`.nii`, or `.nii.gz` for gzip), replacing any existing file.
///
/// The output is written to a hidden temporary file in the same directory and
/// renamed over `path` once complete, so an interrupted run leaves either the old
/// file or the new one. The sform stores the affine exactly (in float32). The qform
/// stores its rotation, zooms and offset, with the nearest rotation for a sheared
/// affine. Header extensions of an input file are not carried over.
pub fn write_volume(path: &Path, vol: &Volume, opts: &WriteOptions) -> Result<()> {
    write_volumes(path, std::slice::from_ref(vol), opts)
}

/// Writes `volumes` as one image, as [`write_volume`] does: 3-D for one volume, 4-D
/// (`dim[4]` = the number of volumes, `pixdim[4]` = 1) for several. Every volume
/// must have the shape and affine of the first; the header takes the first's affine.
pub fn write_volumes(path: &Path, volumes: &[Volume], opts: &WriteOptions) -> Result<()> {
    let gzip = output_is_gzip(path)?;
    let Some(vol) = volumes.first() else {
        return Err(Error::file(path, "no volume to write"));
    };
    if let Some(v) = volumes.iter().position(|v| v.shape() != vol.shape() || v.affine.max_abs_diff(&vol.affine) > 0.0) {
        return Err(Error::file(
            path,
            format!("volume {v} differs from volume 0 in shape or affine; a 4-D image needs one grid"),
        ));
    }
    let count = volumes.len();
    if let Some(size) = vol.shape().iter().chain([&count]).find(|&&s| s > i16::MAX as usize) {
        return Err(Error::file(
            path,
            format!(
                "a dimension of {size} voxels does not fit in a NIfTI-1 header (at most {})",
                i16::MAX
            ),
        ));
    }
    let qform = affine_to_qform(&vol.affine).map_err(|e| Error::file(path, e.to_string()))?;
    let header = compose_header(vol, count, opts, &qform);
    let mut parts = vec![header];
    for (v, volume) in volumes.iter().enumerate() {
        let data = encode_voxels(volume, opts.dtype).map_err(|msg| match count {
            1 => Error::file(path, msg),
            _ => Error::file(path, format!("volume {v}: {msg}")),
        })?;
        parts.push(data);
    }

    let parts: Vec<&[u8]> = parts.iter().map(Vec::as_slice).collect();
    write_atomically(path, gzip, &parts)
}

/// Writes `parts` to a hidden temporary file next to `path`, gzip-compressed when
/// `gzip` is set, syncs it and renames it over `path`.
fn write_atomically(path: &Path, gzip: bool, parts: &[&[u8]]) -> Result<()> {
    let temp = super::atomic::temp_file_beside(path)?;

    // Failures name the requested output; the temporary file is removed on drop.
    let io_err = |e: std::io::Error| Error::io(path, e);
    let mut out = BufWriter::new(temp.as_file());
    if gzip {
        let mut encoder = GzEncoder::new(&mut out, Compression::default());
        for part in parts {
            encoder.write_all(part).map_err(io_err)?;
        }
        encoder.finish().map_err(io_err)?;
    } else {
        for part in parts {
            out.write_all(part).map_err(io_err)?;
        }
    }
    out.flush().map_err(io_err)?;
    drop(out);

    // Data on disk before the rename, so a crash cannot leave a renamed but empty file.
    temp.as_file().sync_all().map_err(io_err)?;
    temp.persist(path).map_err(|e| Error::io(path, e.error))?;
    Ok(())
}

/// Returns whether the output name requests gzip, and rejects names other than
/// `.nii`/`.nii.gz`.
fn output_is_gzip(path: &Path) -> Result<bool> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    if name.ends_with(".nii.gz") {
        Ok(true)
    } else if name.ends_with(".nii") {
        Ok(false)
    } else {
        Err(Error::file(
            path,
            "output file name must end in .nii or .nii.gz",
        ))
    }
}

/// Composes the 348-byte little-endian header and the 4-byte "no extensions" flag
/// for `count` volumes shaped like `vol`.
fn compose_header(vol: &Volume, count: usize, opts: &WriteOptions, qform: &QformParams) -> Vec<u8> {
    let mut h = vec![0u8; MIN_VOX_OFFSET as usize];
    let put_i16 = |h: &mut [u8], at: usize, v: i16| h[at..at + 2].copy_from_slice(&v.to_le_bytes());
    let put_f32 = |h: &mut [u8], at: usize, v: f32| h[at..at + 4].copy_from_slice(&v.to_le_bytes());

    h[0..4].copy_from_slice(&(HEADER_SIZE as i32).to_le_bytes());
    h[38] = b'r'; // `regular`, kept for ANALYZE 7.5 readers
    let shape = vol.shape();
    let dim = [
        if count > 1 { 4 } else { 3 },
        shape[0] as i16,
        shape[1] as i16,
        shape[2] as i16,
        count as i16,
        1,
        1,
        1,
    ];
    for (n, d) in dim.iter().enumerate() {
        put_i16(&mut h, 40 + 2 * n, *d);
    }
    let (datatype, bitpix) = opts.dtype.code_and_bitpix();
    put_i16(&mut h, 70, datatype);
    put_i16(&mut h, 72, bitpix);

    let pixdim = [
        qform.qfac,
        qform.zooms[0],
        qform.zooms[1],
        qform.zooms[2],
        1.0,
        1.0,
        1.0,
        1.0,
    ];
    for (n, p) in pixdim.iter().enumerate() {
        put_f32(&mut h, 76 + 4 * n, *p as f32);
    }
    put_f32(&mut h, 108, MIN_VOX_OFFSET as f32);
    put_f32(&mut h, 112, 1.0); // scl_slope: values are stored unscaled
    put_f32(&mut h, 116, 0.0); // scl_inter
    h[123] = opts.xyzt_units;

    let descrip = opts.descrip.as_bytes();
    let n = descrip.len().min(79);
    h[148..148 + n].copy_from_slice(&descrip[..n]);

    put_i16(&mut h, 252, opts.qform_code);
    put_i16(&mut h, 254, opts.sform_code);
    let quaternion = [qform.quatern_bcd, qform.qoffset].concat();
    for (n, q) in quaternion.iter().enumerate() {
        put_f32(&mut h, 256 + 4 * n, *q as f32);
    }
    write_sform(&mut h, &vol.affine);
    h[344..348].copy_from_slice(b"n+1\0");
    h
}

/// `srow_x`, `srow_y`, `srow_z`: the first three rows of the affine, at bytes 280-327.
fn write_sform(h: &mut [u8], affine: &Affine) {
    for r in 0..3 {
        for c in 0..4 {
            let at = 280 + 16 * r + 4 * c;
            h[at..at + 4].copy_from_slice(&(affine.0[r][c] as f32).to_le_bytes());
        }
    }
}

/// Voxel values in file order (i fastest), little-endian, in the requested type.
fn encode_voxels(vol: &Volume, dtype: OutputDtype) -> std::result::Result<Vec<u8>, String> {
    let (_, bitpix) = dtype.code_and_bitpix();
    let mut out = Vec::with_capacity(vol.data.len() * (bitpix as usize / 8));
    // The transposed view iterates k slowest and i fastest: NIfTI's Fortran order.
    let file_order = vol.data.t();

    type Push = fn(&mut Vec<u8>, f64);
    let (min, max, push): (f64, f64, Push) = match dtype {
        OutputDtype::Float32 => {
            for v in file_order.iter() {
                out.extend_from_slice(&v.to_le_bytes());
            }
            return Ok(out);
        }
        OutputDtype::Uint8 => (0.0, 255.0, |out, v| out.push(v as u8)),
        OutputDtype::Int16 => (f64::from(i16::MIN), f64::from(i16::MAX), |out, v| {
            out.extend_from_slice(&(v as i16).to_le_bytes())
        }),
        OutputDtype::Int32 => (f64::from(i32::MIN), f64::from(i32::MAX), |out, v| {
            out.extend_from_slice(&(v as i32).to_le_bytes())
        }),
    };
    for ((k, j, i), &v) in file_order.indexed_iter() {
        let value = f64::from(v);
        if !(value.fract() == 0.0 && value >= min && value <= max) {
            return Err(format!(
                "voxel [{i}, {j}, {k}] has value {v}, which is not an integer in the range of {dtype:?} ({min} to {max}); round or clip before writing, or write float32"
            ));
        }
        push(&mut out, value);
    }
    Ok(out)
}
