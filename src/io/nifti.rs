//! Reading NIfTI-1 images (`.nii`, `.nii.gz`) into a [`Volume`].
//!
//! The header is parsed by the `nifti` crate from a 348-byte buffer that this
//! module reads itself. The voxel data is read here too, and the crate only decodes
//! the bytes of each datatype. Reading by hand lets every failure become one error
//! line: the crate's object reader panics on RGB data converted to `f32`, trusts
//! the extension sizes stored in the file, and cannot skip to one volume of a 4-D
//! series.
//!
//! Geometry and scaling follow nibabel 5.4, including the header fixes it applies
//! on load: invalid sform/qform codes read as 0, `pixdim[0]` other than ±1 reads as
//! 1, zero spatial `pixdim` as 1 and negative ones as their absolute value.

use std::path::Path;

use ndarray::{Array3, ShapeBuilder};
use nifti::{DataElement, Endianness, NiftiHeader};

use super::qform::{qform_to_affine, QformParams};
use super::stream::{SkipError, Source};
use crate::error::{Error, Result};
use crate::geometry::Affine;
use crate::volume::Volume;

/// Size of a NIfTI-1 header in bytes.
pub(crate) const HEADER_SIZE: usize = 348;
/// Size of a NIfTI-2 header, stored in its first field where NIfTI-1 stores 348.
const NIFTI2_HEADER_SIZE: i32 = 540;
/// The smallest `vox_offset` of a single-file NIfTI-1: the header and the
/// 4-byte extension flag come first.
pub(crate) const MIN_VOX_OFFSET: u64 = 352;
/// Most voxels accepted in one 3-D volume (2³¹), checked before allocating.
pub const MAX_VOXELS: u64 = 1 << 31;

/// Origin of [`NiftiHeaderInfo::affine`]: the header fields it was computed from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AffineSource {
    /// `srow_x/y/z`, used when `sform_code > 0`.
    Sform,
    /// The quaternion fields, used when only `qform_code > 0`.
    Qform,
    /// Neither code set: nibabel's fallback from `pixdim` alone (x flipped, image centred).
    Pixdim,
}

/// Header fields of a NIfTI-1 file and the transforms derived from them.
#[derive(Debug, Clone, PartialEq)]
pub struct NiftiHeaderInfo {
    /// `dim[0..8]` as stored: `dim[0]` is the number of dimensions.
    pub dim: [i16; 8],
    /// Image shape, `dim[1..=dim[0]]`.
    pub shape: Vec<usize>,
    /// NIfTI datatype code (2 = uint8, 4 = int16, 16 = float32, ...).
    pub datatype: i16,
    pub bitpix: i16,
    /// `pixdim[0..8]` after nibabel's fixes (see the module documentation).
    pub pixdim: [f32; 8],
    /// Byte offset of the voxel data in the uncompressed file.
    pub vox_offset: f32,
    /// Stored data scaling. [`NiftiHeaderInfo::scaling`] returns the scaling that applies.
    pub scl_slope: f32,
    pub scl_inter: f32,
    /// Spatial units in bits 0-2 (2 = mm), temporal units in bits 3-5 (8 = s).
    pub xyzt_units: u8,
    pub intent_code: i16,
    pub cal_min: f32,
    pub cal_max: f32,
    /// Text of `descrip` up to the first NUL byte.
    pub descrip: String,
    /// The sform matrix as stored, whatever its code.
    pub sform: Affine,
    /// 0 (unknown) to 5 (template); codes outside that range read as 0.
    pub sform_code: i16,
    /// The matrix of the quaternion fields, whatever its code.
    pub qform: Affine,
    pub qform_code: i16,
    pub quatern_bcd: [f32; 3],
    pub qoffset: [f32; 3],
    /// `pixdim[0]`, -1 or 1.
    pub qfac: f32,
    /// Voxel-to-world transform: the sform when `sform_code > 0`, else the qform
    /// when `qform_code > 0`, else the `pixdim` fallback (nibabel's `img.affine`).
    pub affine: Affine,
    pub affine_source: AffineSource,
    /// Whether the file is big-endian.
    pub big_endian: bool,
}

impl NiftiHeaderInfo {
    /// Number of 3-D volumes: `dim[4]` for a 4-D image, otherwise 1.
    pub fn n_volumes(&self) -> usize {
        self.shape.get(3).copied().unwrap_or(1)
    }

    /// Returns the `(slope, intercept)` applied to stored values, or `None` when the
    /// slope is 0 or not finite. A non-finite intercept with a valid slope counts as 0,
    /// as in `nifti1_io.c`, where nibabel 5.4 raises an error instead.
    pub fn scaling(&self) -> Option<(f64, f64)> {
        let slope = f64::from(self.scl_slope);
        if slope == 0.0 || !slope.is_finite() {
            return None;
        }
        let inter = f64::from(self.scl_inter);
        Some((slope, if inter.is_finite() { inter } else { 0.0 }))
    }

    /// Name of the datatype, as in the NIfTI-1 standard's `NIFTI_TYPE_*` list.
    pub fn datatype_name(&self) -> String {
        datatype_name(self.datatype)
    }
}

/// A voxel type the reader converts to `f32`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ScalarType {
    U8,
    I8,
    I16,
    U16,
    I32,
    U32,
    I64,
    U64,
    F32,
    F64,
}

impl ScalarType {
    fn bytes(self) -> u64 {
        match self {
            ScalarType::U8 | ScalarType::I8 => 1,
            ScalarType::I16 | ScalarType::U16 => 2,
            ScalarType::I32 | ScalarType::U32 | ScalarType::F32 => 4,
            ScalarType::I64 | ScalarType::U64 | ScalarType::F64 => 8,
        }
    }
}

fn datatype_name(code: i16) -> String {
    let name = match code {
        1 => "binary",
        2 => "uint8",
        4 => "int16",
        8 => "int32",
        16 => "float32",
        32 => "complex64",
        64 => "float64",
        128 => "RGB24",
        256 => "int8",
        512 => "uint16",
        768 => "uint32",
        1024 => "int64",
        1280 => "uint64",
        1536 => "float128",
        1792 => "complex128",
        2048 => "complex256",
        2304 => "RGBA32",
        _ => return format!("unknown datatype {code}"),
    };
    name.to_string()
}

/// Maps a datatype code to a scalar type, or explains why it is not supported.
fn scalar_type(code: i16) -> std::result::Result<ScalarType, String> {
    let name = datatype_name(code);
    match code {
        2 => Ok(ScalarType::U8),
        256 => Ok(ScalarType::I8),
        4 => Ok(ScalarType::I16),
        512 => Ok(ScalarType::U16),
        8 => Ok(ScalarType::I32),
        768 => Ok(ScalarType::U32),
        1024 => Ok(ScalarType::I64),
        1280 => Ok(ScalarType::U64),
        16 => Ok(ScalarType::F32),
        64 => Ok(ScalarType::F64),
        128 | 2304 => Err(format!(
            "{name} colour voxels (datatype {code}) are not supported; a scalar (grey-value) image is required"
        )),
        32 | 1792 | 2048 => Err(format!(
            "{name} voxels (datatype {code}) are not supported; save a real-valued image such as the magnitude"
        )),
        1536 => Err(format!(
            "float128 voxels (datatype {code}) are not supported; save the image as float32 or float64"
        )),
        1 => Err(format!("1-bit voxels (datatype {code}) are not supported")),
        _ => Err(format!(
            "unknown datatype code {code}; the header is corrupt or not NIfTI-1"
        )),
    }
}

/// Reads the header of a `.nii` or `.nii.gz` file.
///
/// Fails on files that are not single-file NIfTI-1 or whose `dim` is invalid. It
/// does not check that the datatype or the number of dimensions can be loaded.
pub fn read_header(path: &Path) -> Result<NiftiHeaderInfo> {
    let mut source = Source::open(path)?;
    let (info, _) = read_header_from(path, &mut source)?;
    Ok(info)
}

/// Loads one 3-D volume with its voxel values scaled to `f32` and the header.
///
/// `volume` picks a volume of a 4-D series (0-based). It is required when the file
/// contains more than one volume, and may be `None` or `Some(0)` for a 3-D image.
/// Non-finite voxel values are kept; see [`super::count_non_finite`]. The array is
/// indexed `[i, j, k]` and stored in standard (row-major) layout.
pub fn load_volume(path: &Path, volume: Option<usize>) -> Result<(Volume, NiftiHeaderInfo)> {
    let mut source = Source::open(path)?;
    let (info, endianness) = read_header_from(path, &mut source)?;
    let scalar = scalar_type(info.datatype).map_err(|msg| Error::file(path, msg))?;
    let shape = volume_shape(path, &info)?;
    let index = choose_volume(path, &info, volume)?;

    let n_voxels = (shape[0] * shape[1] * shape[2]) as u64;
    let volume_bytes = n_voxels * scalar.bytes();
    let vox_offset = data_offset(path, &info)?;
    let start = vox_offset + index as u64 * volume_bytes;
    let end_of_data = vox_offset + info.n_volumes() as u64 * volume_bytes;
    let truncated = |available: u64| {
        Error::file(
            path,
            format!(
                "file is truncated: the header declares voxel data up to byte {end_of_data}, but it ends at byte {available}"
            ),
        )
    };

    source.skip_to(path, start).map_err(|e| match e {
        SkipError::Short(at) => truncated(at),
        SkipError::Other(err) => err,
    })?;
    let raw = source.read_bytes(path, volume_bytes)?;
    if (raw.len() as u64) < volume_bytes {
        return Err(truncated(start + raw.len() as u64));
    }
    source.check_integrity(path)?;

    let values = decode(raw, scalar, endianness, info.scaling())
        .map_err(|e| Error::file(path, format!("cannot decode voxel data: {e}")))?;
    let data = fortran_to_array(values, shape).map_err(|e| Error::file(path, e))?;
    Ok((Volume::new(data, info.affine), info))
}

/// Reads and validates the 348-byte header, leaving `source` just after it.
fn read_header_from(path: &Path, source: &mut Source) -> Result<(NiftiHeaderInfo, Endianness)> {
    let mut raw = [0u8; HEADER_SIZE];
    let got = source.read_up_to(path, &mut raw)?;
    check_header_kind(path, &raw[..got])?;

    let header = NiftiHeader::from_reader(&raw[..])
        .map_err(|e| Error::file(path, format!("invalid NIfTI-1 header: {e}")))?;
    let info = header_info(path, &header)?;
    Ok((info, header.endianness))
}

/// Rejects NIfTI-2, ANALYZE, `.hdr/.img` pairs and other non-NIfTI-1 files, using
/// the first field (`sizeof_hdr`) and the magic string at byte 344.
///
/// A wrong `sizeof_hdr` alone is tolerated, as nibabel does, because the magic
/// string identifies the format.
fn check_header_kind(path: &Path, raw: &[u8]) -> Result<()> {
    let sizeof_hdr = raw
        .get(..4)
        .and_then(|b| <[u8; 4]>::try_from(b).ok())
        .map(|b| [i32::from_le_bytes(b), i32::from_be_bytes(b)]);
    let nifti2_magic = raw
        .get(4..8)
        .is_some_and(|m| m == b"n+2\0" || m == b"ni2\0");
    if nifti2_magic || sizeof_hdr.is_some_and(|s| s.contains(&NIFTI2_HEADER_SIZE)) {
        return Err(Error::file(
            path,
            "NIfTI-2 file; only NIfTI-1 is supported (save it as NIfTI-1, e.g. with nibabel's Nifti1Image)",
        ));
    }
    if raw.len() < HEADER_SIZE {
        return Err(Error::file(
            path,
            format!(
                "not a NIfTI-1 file: it has {} bytes, fewer than the {HEADER_SIZE}-byte header",
                raw.len()
            ),
        ));
    }
    match &raw[344..348] {
        b"n+1\0" => Ok(()),
        b"ni1\0" => Err(Error::file(
            path,
            "this is the header of a .hdr/.img pair; only single-file .nii or .nii.gz is supported",
        )),
        _ if sizeof_hdr.is_some_and(|s| s.contains(&(HEADER_SIZE as i32))) => Err(Error::file(
            path,
            "not a NIfTI-1 file: no \"n+1\" magic at byte 344 (an ANALYZE 7.5 image?)",
        )),
        _ => Err(Error::file(
            path,
            "not a NIfTI-1 file: no \"n+1\" magic at byte 344",
        )),
    }
}

/// Collects the header fields, applying nibabel's load-time fixes and choosing the affine.
fn header_info(path: &Path, h: &NiftiHeader) -> Result<NiftiHeaderInfo> {
    // The crate stores dim as u16; NIfTI-1 defines it as int16, so negative sizes
    // come back as large numbers unless reinterpreted.
    let dim = h.dim.map(|d| d as i16);
    let shape = validate_dim(path, &dim)?;

    let mut pixdim = h.pixdim;
    if pixdim[0] != 1.0 && pixdim[0] != -1.0 {
        pixdim[0] = 1.0;
    }
    for p in &mut pixdim[1..4] {
        *p = if *p == 0.0 { 1.0 } else { p.abs() };
    }
    let valid_code = |code: i16| if (0..=5).contains(&code) { code } else { 0 };
    let (sform_code, qform_code) = (valid_code(h.sform_code), valid_code(h.qform_code));

    let sform = sform_matrix(h);
    let qform = qform_to_affine(&QformParams {
        quatern_bcd: [h.quatern_b, h.quatern_c, h.quatern_d].map(f64::from),
        qoffset: [h.quatern_x, h.quatern_y, h.quatern_z].map(f64::from),
        zooms: [pixdim[1], pixdim[2], pixdim[3]].map(f64::from),
        qfac: f64::from(pixdim[0]),
    });
    let (affine, affine_source) = if sform_code > 0 {
        (sform, AffineSource::Sform)
    } else if qform_code > 0 {
        (qform, AffineSource::Qform)
    } else {
        (pixdim_affine(&shape, &pixdim), AffineSource::Pixdim)
    };

    let descrip_len = h
        .descrip
        .iter()
        .position(|&b| b == 0)
        .unwrap_or(h.descrip.len());
    Ok(NiftiHeaderInfo {
        dim,
        shape,
        datatype: h.datatype,
        bitpix: h.bitpix,
        pixdim,
        vox_offset: h.vox_offset,
        scl_slope: h.scl_slope,
        scl_inter: h.scl_inter,
        xyzt_units: h.xyzt_units,
        intent_code: h.intent_code,
        cal_min: h.cal_min,
        cal_max: h.cal_max,
        descrip: String::from_utf8_lossy(&h.descrip[..descrip_len]).into_owned(),
        sform,
        sform_code,
        qform,
        qform_code,
        quatern_bcd: [h.quatern_b, h.quatern_c, h.quatern_d],
        qoffset: [h.quatern_x, h.quatern_y, h.quatern_z],
        qfac: pixdim[0],
        affine,
        affine_source,
        big_endian: h.endianness == Endianness::Big,
    })
}

/// Checks `dim[0]` and that every used dimension is positive; returns the shape.
fn validate_dim(path: &Path, dim: &[i16; 8]) -> Result<Vec<usize>> {
    let ndim = dim[0];
    if !(1..=7).contains(&ndim) {
        return Err(Error::file(
            path,
            format!("invalid header: dim[0] is {ndim}, the number of dimensions must be 1 to 7"),
        ));
    }
    let mut shape = Vec::with_capacity(ndim as usize);
    for (axis, &size) in dim.iter().enumerate().skip(1).take(ndim as usize) {
        if size < 1 {
            return Err(Error::file(
                path,
                format!("invalid header: dim[{axis}] is {size}, every image dimension must be at least 1"),
            ));
        }
        shape.push(size as usize);
    }
    Ok(shape)
}

fn sform_matrix(h: &NiftiHeader) -> Affine {
    let mut m = Affine::identity();
    for (out_row, row) in m.0.iter_mut().zip([h.srow_x, h.srow_y, h.srow_z]) {
        *out_row = row.map(f64::from);
    }
    m
}

/// nibabel's affine for a header without sform or qform (`get_base_affine`):
/// `diag(-dx, dy, dz)` with the origin at the centre of the image, so voxel
/// `(n - 1) / 2` maps to 0 on each axis. Missing dimensions count as size 1.
fn pixdim_affine(shape: &[usize], pixdim: &[f32; 8]) -> Affine {
    let mut affine = Affine::identity();
    for axis in 0..3 {
        let size = shape.get(axis).copied().unwrap_or(1) as f64;
        let mut zoom = f64::from(pixdim[axis + 1]);
        if axis == 0 {
            zoom = -zoom;
        }
        affine.0[axis][axis] = zoom;
        affine.0[axis][3] = -(size - 1.0) / 2.0 * zoom;
    }
    affine
}

/// Shape of one 3-D volume, or an error for images that are not 3-D or 4-D.
/// Trailing dimensions of size 1 beyond the third are ignored.
fn volume_shape(path: &Path, info: &NiftiHeaderInfo) -> Result<[usize; 3]> {
    let shape = &info.shape;
    let shape_text = shape
        .iter()
        .map(|s| s.to_string())
        .collect::<Vec<_>>()
        .join("x");
    let last_non_unit = shape.iter().rposition(|&s| s > 1).unwrap_or(0);

    if shape.len() < 3 {
        return Err(Error::file(
            path,
            format!(
                "{}-D image (shape {shape_text}); a 3-D volume is required",
                shape.len()
            ),
        ));
    }
    if last_non_unit > 3 {
        let kind = if info.intent_code == 1007 {
            ", a vector field"
        } else {
            ""
        };
        return Err(Error::file(
            path,
            format!(
                "{}-D image (shape {shape_text}, intent code {}{kind}); only 3-D images and 4-D series are supported",
                shape.len(),
                info.intent_code
            ),
        ));
    }

    let volume = [shape[0], shape[1], shape[2]];
    let n_voxels = volume
        .iter()
        .try_fold(1u64, |acc, &s| acc.checked_mul(s as u64));
    if n_voxels.is_none_or(|n| n > MAX_VOXELS) {
        return Err(Error::file(
            path,
            format!(
                "image too large: a volume of {shape_text} voxels exceeds the limit of 2^31 voxels"
            ),
        ));
    }
    Ok(volume)
}

/// Resolves the requested volume index against the number of volumes in the file.
fn choose_volume(path: &Path, info: &NiftiHeaderInfo, volume: Option<usize>) -> Result<usize> {
    let count = info.n_volumes();
    let shape_text = info
        .shape
        .iter()
        .map(|s| s.to_string())
        .collect::<Vec<_>>()
        .join("x");
    let file_name = path.file_name().map_or_else(
        || path.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    );
    match volume {
        None if count > 1 => Err(Error::file(
            path,
            format!(
                "4-D image with {count} volumes (shape {shape_text}); choose one as `{file_name}:N` or with --volume N (N from 0 to {})",
                count - 1
            ),
        )),
        None => Ok(0),
        Some(v) if v >= count => Err(Error::file(
            path,
            format!(
                "volume {v} requested, but the image has {count} volume{} (valid: 0 to {})",
                if count == 1 { "" } else { "s" },
                count - 1
            ),
        )),
        Some(v) => Ok(v),
    }
}

/// Start of the voxel data, `int(vox_offset)` as nibabel reads it. Values below 352
/// would overlap the header of a single-file NIfTI-1 and are rejected. nibabel
/// rejects them too, except 0, where it returns header bytes as voxels.
fn data_offset(path: &Path, info: &NiftiHeaderInfo) -> Result<u64> {
    let offset = info.vox_offset;
    if !offset.is_finite() || offset < MIN_VOX_OFFSET as f32 || offset > u32::MAX as f32 {
        return Err(Error::file(
            path,
            format!("invalid header: vox_offset is {offset}, it must be at least {MIN_VOX_OFFSET} in a .nii file"),
        ));
    }
    Ok(offset as u64)
}

/// Converts raw voxel bytes to `f32`, scaling in `f64` as nibabel's `get_fdata` does.
fn decode(
    raw: Vec<u8>,
    scalar: ScalarType,
    endianness: Endianness,
    scaling: Option<(f64, f64)>,
) -> nifti::Result<Vec<f32>> {
    fn convert<T: DataElement + AsF64>(
        raw: Vec<u8>,
        endianness: Endianness,
        scaling: Option<(f64, f64)>,
    ) -> nifti::Result<Vec<f32>> {
        let values = T::from_raw_vec(raw, endianness)?;
        Ok(match scaling {
            Some((slope, inter)) => values
                .into_iter()
                .map(|v| (v.as_f64() * slope + inter) as f32)
                .collect(),
            None => values.into_iter().map(|v| v.as_f64() as f32).collect(),
        })
    }
    match scalar {
        ScalarType::U8 => convert::<u8>(raw, endianness, scaling),
        ScalarType::I8 => convert::<i8>(raw, endianness, scaling),
        ScalarType::I16 => convert::<i16>(raw, endianness, scaling),
        ScalarType::U16 => convert::<u16>(raw, endianness, scaling),
        ScalarType::I32 => convert::<i32>(raw, endianness, scaling),
        ScalarType::U32 => convert::<u32>(raw, endianness, scaling),
        ScalarType::I64 => convert::<i64>(raw, endianness, scaling),
        ScalarType::U64 => convert::<u64>(raw, endianness, scaling),
        ScalarType::F32 => convert::<f32>(raw, endianness, scaling),
        ScalarType::F64 => convert::<f64>(raw, endianness, scaling),
    }
}

/// Lossless or nearest conversion to `f64` (plain `as`, which std lacks as a trait).
trait AsF64: Copy {
    fn as_f64(self) -> f64;
}

macro_rules! impl_as_f64 {
    ($($t:ty),*) => {
        $(impl AsF64 for $t {
            fn as_f64(self) -> f64 {
                self as f64
            }
        })*
    };
}
impl_as_f64!(u8, i8, i16, u16, i32, u32, i64, u64, f32, f64);

/// Builds the `[i, j, k]` array from values in file order (i fastest, Fortran
/// order), returned in standard (row-major) memory layout.
fn fortran_to_array(
    values: Vec<f32>,
    shape: [usize; 3],
) -> std::result::Result<Array3<f32>, String> {
    let array = Array3::from_shape_vec((shape[0], shape[1], shape[2]).f(), values)
        .map_err(|e| format!("voxel count does not match the shape: {e}"))?;
    Ok(array.as_standard_layout().into_owned())
}
