//! Pixel data decoding: native and compressed transfer syntaxes through
//! dicom-pixeldata, with RescaleSlope/RescaleIntercept applied. Every build has
//! pure-Rust decoders for RLE, JPEG baseline and lossless, and JPEG 2000 (openjp2).
//! The `jpegls` feature adds CharLS (C++) for JPEG-LS.

use std::path::Path;

use dicom_pixeldata::PixelDecoder;

use super::header::{error_chain, open};
use crate::{Error, Result};

/// Decodes every frame of one file into real-world values, each frame row-major
/// (`value[row * columns + column]`), checking the frame size against the series.
pub fn decode_frames(path: &Path, rows: usize, columns: usize) -> Result<Vec<Vec<f32>>> {
    let object = open(path, false)?;
    let transfer_syntax = object.meta().transfer_syntax().trim_end_matches('\0').to_string();
    check_jpeg_ls_support(path, &transfer_syntax)?;

    let decoded = object.decode_pixel_data().map_err(|e| {
        Error::file(
            path,
            format!(
                "cannot decode pixel data (transfer syntax {transfer_syntax}): {}",
                error_chain(&e)
            ),
        )
    })?;

    let (got_rows, got_columns) = (decoded.rows() as usize, decoded.columns() as usize);
    if (got_rows, got_columns) != (rows, columns) {
        return Err(Error::file(
            path,
            format!("image is {got_rows} x {got_columns} pixels, the series is {rows} x {columns}"),
        ));
    }

    let expected = rows * columns;
    let mut frames = Vec::with_capacity(decoded.number_of_frames() as usize);
    for frame in 0..decoded.number_of_frames() {
        // The default conversion applies the modality LUT (RescaleSlope/Intercept).
        let values: Vec<f32> = decoded.to_vec_frame(frame).map_err(|e| {
            Error::file(path, format!("pixel data of frame {frame} is unreadable: {}", error_chain(&e)))
        })?;
        if values.len() != expected {
            return Err(Error::file(
                path,
                format!(
                    "pixel data of frame {frame} has {} values, {rows} x {columns} = {expected} expected (truncated file?)",
                    values.len()
                ),
            ));
        }
        frames.push(values);
    }
    Ok(frames)
}

/// Rejects JPEG-LS pixel data in a build without the `jpegls` feature, naming the
/// fix, because dicom-pixeldata only reports the transfer syntax as unsupported.
fn check_jpeg_ls_support(path: &Path, transfer_syntax: &str) -> Result<()> {
    let name = match transfer_syntax {
        "1.2.840.10008.1.2.4.80" => "JPEG-LS lossless",
        "1.2.840.10008.1.2.4.81" => "JPEG-LS near-lossless",
        _ => return Ok(()),
    };
    if cfg!(feature = "jpegls") {
        return Ok(());
    }
    Err(Error::file(
        path,
        format!(
            "{name} pixel data (transfer syntax {transfer_syntax}) needs the JPEG-LS decoder, which this build lacks: \
             rebuild with `--features jpegls` (needs cmake and a C++ compiler), or convert the file with dcm2niix or `gdcmconv --raw`"
        ),
    ))
}
