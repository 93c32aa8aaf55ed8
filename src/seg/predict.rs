//! Segmentation of one scan: preprocessing as the model was trained, sliding-window inference,
//! and the label map (and optional class probabilities) mapped back onto the scan's own grid.
//!
//! The label of a voxel is the argmax of the blended logits on the network's grid. Labels return
//! to the input grid with nearest-neighbour sampling after undoing crop, padding and
//! resampling. Reorientation is undone exactly, so the output has the input's shape and affine
//! whatever its orientation and spacing. Probabilities (softmax of the blended logits) return
//! with trilinear sampling.

use candle_core::{Device, Tensor};
use ndarray::{Array3, Array4, Axis};

use super::sliding::{self, SlidingWindow, Slab};
use crate::error::{Error, Result};
use crate::model::SwinUnetr;
use crate::preprocess::resample::Interp;
use crate::preprocess::{volume_to_tensor, PreprocessOptions};
use crate::volume::Volume;

/// Settings of [`predict`].
#[derive(Debug, Clone)]
pub struct PredictOptions {
    pub preprocess: PreprocessOptions,
    pub window: SlidingWindow,
    /// Also return per-class probability maps. They need `classes` floats per voxel of the
    /// network grid, which the label map alone avoids.
    pub probabilities: bool,
}

/// The result on the input scan's grid.
#[derive(Debug, Clone)]
pub struct Prediction {
    /// Class index per voxel (stored as f32, as every [`Volume`]).
    pub labels: Volume,
    /// Probability of each class, background first, when requested.
    pub probabilities: Option<Vec<Volume>>,
}

/// Segments `volume` with `net` on `device`.
pub fn predict(net: &SwinUnetr, volume: Volume, options: &PredictOptions, device: &Device) -> Result<Prediction> {
    let (prepared, applied) = options.preprocess.apply(volume)?;
    let classes = net.config().out_channels;
    let input = volume_to_tensor(&prepared, device).map_err(|e| Error::invalid(e.to_string()))?;
    let shape = prepared.shape();
    drop(prepared);

    let mut collector = Collector::new(classes, shape, options.probabilities);
    sliding::run(
        &input,
        classes,
        &options.window,
        |x: &Tensor| net.forward(x).map_err(|e| Error::invalid(format!("SwinUNETR forward: {e}"))),
        |slab| collector.take(slab),
    )?;

    let labels = applied.to_input_grid_labels(&collector.labels)?;
    let probabilities = match collector.probabilities {
        Some(p) => Some(
            p.axis_iter(Axis(0))
                .enumerate()
                .map(|(k, class)| {
                    // Outside the crop box only background is possible.
                    let fill = if k == 0 { 1.0 } else { 0.0 };
                    applied.to_input_grid(&class.to_owned(), Interp::Linear, fill)
                })
                .collect::<Result<Vec<_>>>()?,
        ),
        None => None,
    };
    Ok(Prediction { labels, probabilities })
}

/// Turns blended logit slabs into labels (and probabilities) on the network grid.
struct Collector {
    classes: usize,
    labels: Array3<f32>,
    probabilities: Option<Array4<f32>>,
}

impl Collector {
    fn new(classes: usize, shape: [usize; 3], probabilities: bool) -> Self {
        Collector {
            classes,
            labels: Array3::zeros(shape),
            probabilities: probabilities.then(|| Array4::zeros((classes, shape[0], shape[1], shape[2]))),
        }
    }

    fn take(&mut self, slab: Slab<'_>) -> Result<()> {
        let (_, h, w) = self.labels.dim();
        let plane = h * w;
        let n = slab.depth * plane;
        let labels = self.labels.as_slice_mut().ok_or_else(|| Error::invalid("label array not contiguous"))?;
        slab.argmax_into(self.classes, &mut labels[slab.start * plane..slab.start * plane + n], |k| k as f32);

        if let Some(p) = self.probabilities.as_mut() {
            softmax_into(p, &slab, self.classes, plane)?;
        }
        Ok(())
    }
}

/// Writes the softmax over classes of a slab's logits into `p` `[classes, D, H, W]`.
fn softmax_into(p: &mut Array4<f32>, slab: &Slab<'_>, classes: usize, plane: usize) -> Result<()> {
    let n = slab.depth * plane;
    let depth = p.dim().1;
    let p = p.as_slice_mut().ok_or_else(|| Error::invalid("probability array not contiguous"))?;
    for v in 0..n {
        let max = (0..classes).map(|k| slab.values[k * n + v]).fold(f32::NEG_INFINITY, f32::max);
        let total: f32 = (0..classes).map(|k| (slab.values[k * n + v] - max).exp()).sum();
        for k in 0..classes {
            p[k * depth * plane + slab.start * plane + v] = (slab.values[k * n + v] - max).exp() / total;
        }
    }
    Ok(())
}
