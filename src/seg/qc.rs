//! Quality-control pictures: three orthogonal slices of a scan with its label map overlaid,
//! written as one RGB PNG.
//!
//! Both volumes are reordered to RAS+ first, so every picture has the same layout whatever the
//! file's voxel order. Axial, coronal and sagittal panels stand side by side in the neurological
//! convention: patient left on the picture's left, anterior and superior at the top, and
//! posterior on the left of the sagittal panel. Panels are sampled at the smallest voxel spacing with
//! nearest neighbours, so anisotropic scans keep their true proportions. Slices pass through the
//! centre of the labelled region's bounding box (the volume's centre when nothing is labelled).

use std::io::Write;
use std::path::Path;

use crate::error::{Error, Result};
use crate::preprocess::intensity::percentile;
use crate::preprocess::to_ras;
use crate::volume::Volume;

/// Opacity of the label colours over the grey image.
const ALPHA: f32 = 0.5;

/// Writes the overlay of `labels` (class index per voxel, 0 = background) on `image` to `path`.
/// Both must share one grid.
pub fn write_overlay(path: &Path, image: &Volume, labels: &Volume) -> Result<()> {
    if image.shape() != labels.shape() {
        return Err(Error::file(path, "QC picture: image and label map have different shapes"));
    }
    let (image, _) = to_ras(image);
    let (labels, _) = to_ras(labels);
    let (lo, hi) = intensity_window(&image);
    let centre = labelled_centre(&labels);
    let spacing = image.spacing();
    let pixel = spacing.iter().copied().fold(f64::INFINITY, f64::min);

    // (fixed axis, horizontal axis, vertical axis): axial, coronal, sagittal.
    let panels: Vec<Panel> = [(2, 0, 1), (1, 0, 2), (0, 1, 2)]
        .iter()
        .map(|&(fixed, across, up)| Panel::render(&image, &labels, [fixed, across, up], centre[fixed], spacing, pixel, (lo, hi)))
        .collect();
    encode_png(path, &panels)
}

/// One slice rendered as RGB rows, top row first.
struct Panel {
    width: usize,
    height: usize,
    rgb: Vec<u8>,
}

impl Panel {
    fn render(
        image: &Volume,
        labels: &Volume,
        [fixed, across, up]: [usize; 3],
        at: usize,
        spacing: [f64; 3],
        pixel: f64,
        (lo, hi): (f32, f32),
    ) -> Panel {
        let shape = image.shape();
        let width = ((shape[across] as f64 * spacing[across] / pixel).round() as usize).max(1);
        let height = ((shape[up] as f64 * spacing[up] / pixel).round() as usize).max(1);
        let mut rgb = Vec::with_capacity(width * height * 3);
        for row in 0..height {
            // Top row = the largest index along `up` (anterior or superior).
            let v = ((height - 1 - row) as f64 * pixel / spacing[up]) as usize;
            for col in 0..width {
                let u = (col as f64 * pixel / spacing[across]) as usize;
                let mut index = [0usize; 3];
                index[fixed] = at;
                index[across] = u.min(shape[across] - 1);
                index[up] = v.min(shape[up] - 1);
                let grey = ((image.data[index] - lo) / (hi - lo).max(f32::EPSILON)).clamp(0.0, 1.0) * 255.0;
                let label = labels.data[index] as usize;
                rgb.extend(blend(grey, label));
            }
        }
        Panel { width, height, rgb }
    }
}

/// Grey value with the colour of `label` laid over it (label 0 stays grey).
fn blend(grey: f32, label: usize) -> [u8; 3] {
    if label == 0 {
        return [grey as u8; 3];
    }
    let colour = label_colour(label);
    let mix = |c: u8| (grey * (1.0 - ALPHA) + c as f32 * ALPHA) as u8;
    [mix(colour[0]), mix(colour[1]), mix(colour[2])]
}

/// Returns a saturated colour for `label`; hues step by the golden angle so neighbours differ.
fn label_colour(label: usize) -> [u8; 3] {
    let hue = (label as f64 * 137.507_764) % 360.0;
    let sector = hue / 60.0;
    let x = 1.0 - (sector % 2.0 - 1.0).abs();
    let (r, g, b) = match sector as usize {
        0 => (1.0, x, 0.0),
        1 => (x, 1.0, 0.0),
        2 => (0.0, 1.0, x),
        3 => (0.0, x, 1.0),
        4 => (x, 0.0, 1.0),
        _ => (1.0, 0.0, x),
    };
    [(r * 255.0) as u8, (g * 255.0) as u8, (b * 255.0) as u8]
}

/// Display range: the 1st and 99th percentiles of the non-zero voxels.
fn intensity_window(image: &Volume) -> (f32, f32) {
    let mut values: Vec<f32> = image.data.iter().copied().filter(|v| *v != 0.0 && v.is_finite()).collect();
    let lo = percentile(&mut values, 1.0).unwrap_or(0.0) as f32;
    let hi = percentile(&mut values, 99.0).unwrap_or(1.0) as f32;
    (lo, hi)
}

/// Centre of the bounding box of the labelled voxels, or of the volume when none is labelled.
fn labelled_centre(labels: &Volume) -> [usize; 3] {
    let shape = labels.shape();
    let mut lo = shape;
    let mut hi = [0usize; 3];
    for ((i, j, k), &v) in labels.data.indexed_iter() {
        if v != 0.0 {
            for (a, x) in [i, j, k].into_iter().enumerate() {
                lo[a] = lo[a].min(x);
                hi[a] = hi[a].max(x);
            }
        }
    }
    std::array::from_fn(|a| if lo[a] > hi[a] { shape[a] / 2 } else { (lo[a] + hi[a]) / 2 })
}

/// Places the panels side by side on black, top-aligned, and writes the PNG atomically.
fn encode_png(path: &Path, panels: &[Panel]) -> Result<()> {
    let width: usize = panels.iter().map(|p| p.width).sum();
    let height = panels.iter().map(|p| p.height).max().unwrap_or(1);
    let mut canvas = vec![0u8; width * height * 3];
    let mut left = 0;
    for panel in panels {
        for row in 0..panel.height {
            let dst = (row * width + left) * 3;
            canvas[dst..dst + panel.width * 3].copy_from_slice(&panel.rgb[row * panel.width * 3..(row + 1) * panel.width * 3]);
        }
        left += panel.width;
    }

    let mut bytes = Vec::new();
    {
        let mut encoder = png::Encoder::new(&mut bytes, width as u32, height as u32);
        encoder.set_color(png::ColorType::Rgb);
        encoder.set_depth(png::BitDepth::Eight);
        let mut writer = encoder.write_header().map_err(|e| Error::file(path, format!("PNG encoding failed: {e}")))?;
        writer.write_image_data(&canvas).map_err(|e| Error::file(path, format!("PNG encoding failed: {e}")))?;
    }
    let mut tmp = crate::io::atomic::temp_file_beside(path)?;
    tmp.write_all(&bytes).and_then(|_| tmp.as_file().sync_all()).map_err(|e| Error::io(path, e))?;
    tmp.persist(path).map_err(|e| Error::io(path, e.error))?;
    Ok(())
}
