//! The gather path of the CPU conv3d: no im2col matrix, every tap read straight from a
//! zero-padded copy of the sample by [`GatherKernel`], vectorized over output channels.
//!
//! Used for f32 on AVX-512 CPUs when the output channels fill the kernel's 48-wide panels well
//! and there are enough taps per output; see [`applies`].

use std::ops::Range;

use rayon::prelude::*;

use super::cpu::{voxel_ranges, ConvElement, SyncPtr, Tap};
use super::geometry::ConvGeometry;
use super::microkernel::{self, GatherKernel, GatherTile};
use crate::ops::element::Element;

/// Minimum share of real output channels in the gather kernel's channel panels (O rounded up to
/// a multiple of the panel width). Below it, the explicit path wastes fewer products.
const MIN_GATHER_EFFICIENCY: f64 = 0.75;

/// Minimum taps (C·kd·kh·kw) for the gather path. With fewer, as in a 1-channel 2×2×2 patch
/// embedding, writing the output dominates and the explicit path's contiguous stores are faster.
const MIN_GATHER_DEPTH: usize = 64;

/// Output voxels per pass of the weight gradient over its taps: 1024 voxels of packed
/// grad_out (192 KiB in f32 at 48 channels) stay in L2 while the taps sweep them.
const GRAD_WEIGHT_VOXEL_BLOCK: usize = 1024;

/// Upper bound of [`GatherKernel::voxels`] over the kernels, for fixed-size delta arrays.
const MAX_TILE_VOXELS: usize = 16;

/// Returns whether the gather path should compute convolution `g` with `kernel`.
pub(super) fn applies<T>(g: &ConvGeometry, kernel: &GatherKernel<T>) -> bool {
    let panels = g.out_channels.div_ceil(kernel.channels);
    let efficiency = g.out_channels as f64 / (panels * kernel.channels) as f64;
    efficiency >= MIN_GATHER_EFFICIENCY
        && g.col_rows() >= MIN_GATHER_DEPTH
        && kernel.voxels <= MAX_TILE_VOXELS
}

/// Computes the forward pass: each task sweeps one packed weight panel (k × 48 channels) over a
/// range of output voxels. Beyond input and output it allocates the padded copy of one sample
/// and the packed weight.
pub(super) fn forward<T: ConvElement>(
    x: &[T],
    w: &[T],
    g: &ConvGeometry,
    kernel: &GatherKernel<T>,
) -> Vec<T> {
    let k = g.col_rows();
    let voxels = g.output_voxels();
    let sample_in = g.in_channels * g.input_voxels();
    let sample_out = g.out_channels * voxels;
    let padded = PaddedLayout::new(g);

    let offsets = tap_offsets(g, &padded);
    let mut packed_w = Vec::new();
    kernel.pack_weight(w, (g.out_channels, k), &mut packed_w);

    let mut padded_sample = Vec::new();
    let mut out = vec![T::ZERO; g.batch * sample_out];
    let out_ptr = SyncPtr(out.as_mut_ptr());
    let panel_len = k * kernel.channels;
    let panels = g.out_channels.div_ceil(kernel.channels);
    let ranges = voxel_ranges(voxels, gather_range_len(g, panels, kernel.voxels));
    let tasks: Vec<(usize, Range<usize>)> = (0..panels)
        .flat_map(|panel| ranges.iter().map(move |range| (panel, range.clone())))
        .collect();

    for sample in 0..g.batch {
        let input = sample_input(
            &x[sample * sample_in..][..sample_in],
            g,
            &padded,
            &mut padded_sample,
        );
        let range_len = ranges.first().map_or(0, |range| range.len());
        let new_sums =
            || vec![T::ZERO; range_len.next_multiple_of(kernel.voxels) * kernel.channels];
        tasks
            .par_iter()
            .for_each_init(new_sums, |sums, (panel, range)| {
                let weight = &packed_w[panel * panel_len..][..panel_len];
                let channels =
                    panel * kernel.channels..((panel + 1) * kernel.channels).min(g.out_channels);
                // SAFETY: the tasks partition (output channel panel, voxel range) pairs of this
                // sample, so this job is the only writer of those outputs.
                let dst = unsafe { out_ptr.get().add(sample * sample_out) };
                let operands = (input, weight, offsets.as_slice());
                gather_range(
                    g,
                    &padded,
                    kernel,
                    operands,
                    (channels, range.clone()),
                    sums,
                    dst,
                );
            });
    }
    out
}

/// Computes the weight gradient dW[o, k] = Σ_v grad_out[o, v] · x_padded[base(v) + offset(k)]
/// with the gather kernel in swapped roles: a tile's VOXELS rows are taps, its lanes output
/// channels, and its depth output voxels, with grad_out packed as [panel][v][CHANNELS]. Each
/// parallel task owns the sums of one channel panel and a run of taps, so no reduction is
/// needed. Beyond the operands it allocates the padded sample, the packed grad_out of one
/// sample and the sums. Returns [O, C, kd, kh, kw].
pub(super) fn grad_weight<T: ConvElement>(
    x: &[T],
    grad_out: &[T],
    g: &ConvGeometry,
    kernel: &GatherKernel<T>,
) -> Vec<T> {
    let k = g.col_rows();
    let voxels = g.output_voxels();
    let sample_in = g.in_channels * g.input_voxels();
    let sample_out = g.out_channels * voxels;
    let padded = PaddedLayout::new(g);
    let offsets = tap_offsets(g, &padded);
    let bases: Vec<isize> = padded
        .output_bases(0..voxels, g)
        .map(|base| base as isize)
        .collect();
    let panels = g.out_channels.div_ceil(kernel.channels);
    let padded_taps = k.next_multiple_of(kernel.voxels);

    // Tap tiles: VOXELS consecutive taps each, the last repeating its final tap into padding rows.
    let tap_tiles: Vec<[isize; MAX_TILE_VOXELS]> = (0..k)
        .step_by(kernel.voxels)
        .map(|first| std::array::from_fn(|j| offsets[(first + j).min(k - 1)]))
        .collect();
    let tasks = grad_weight_tasks(panels, tap_tiles.len());

    // Sums over all samples and voxels, [panel][padded tap][CHANNELS].
    let mut sums = vec![T::ZERO; panels * padded_taps * kernel.channels];
    let sums_ptr = SyncPtr(sums.as_mut_ptr());
    let mut padded_sample = Vec::new();
    let mut packed = Vec::new();
    for sample in 0..g.batch {
        let input = sample_input(
            &x[sample * sample_in..][..sample_in],
            g,
            &padded,
            &mut padded_sample,
        );
        pack_transposed(
            &grad_out[sample * sample_out..][..sample_out],
            g,
            kernel.channels,
            &mut packed,
        );

        tasks.par_iter().for_each(|(panel, tiles)| {
            let panel_grad =
                &packed[panel * voxels * kernel.channels..][..voxels * kernel.channels];
            // Voxel blocks keep one block of packed grad_out in cache across the task's taps.
            for depth in (0..voxels).step_by(GRAD_WEIGHT_VOXEL_BLOCK) {
                let depth = depth..(depth + GRAD_WEIGHT_VOXEL_BLOCK).min(voxels);
                let weight =
                    &panel_grad[depth.start * kernel.channels..depth.end * kernel.channels];
                for t in tiles.clone() {
                    let row = panel * padded_taps + t * kernel.voxels;
                    let operands = GatherTile {
                        weight,
                        base: input.as_ptr(),
                        offsets: &bases[depth.clone()],
                        deltas: &tap_tiles[t][..kernel.voxels],
                        // SAFETY: the tasks partition the (panel, tap) rows of the sums, so
                        // this job is the only one to touch these VOXELS × CHANNELS values.
                        dst: unsafe { sums_ptr.get().add(row * kernel.channels) },
                        accumulate: true,
                    };
                    // SAFETY: weight has depth.len() × CHANNELS values, and dst is in bounds
                    // (above). Every base(v) + offset(k) is the padded index of a tap of a real
                    // output voxel, inside `input`.
                    unsafe { kernel.run(&operands) };
                }
            }
        });
    }

    let mut grad_w = vec![T::ZERO; g.out_channels * k];
    for (o, row) in grad_w.chunks_exact_mut(k).enumerate() {
        let (panel, c) = (o / kernel.channels, o % kernel.channels);
        for (tap, value) in row.iter_mut().enumerate() {
            *value = sums[(panel * padded_taps + tap) * kernel.channels + c];
        }
    }
    grad_w
}

/// Splits (channel panel, tap tile) pairs into tasks, (panel, tile range), enough for four
/// tasks per thread.
fn grad_weight_tasks(panels: usize, tiles: usize) -> Vec<(usize, Range<usize>)> {
    let groups = (4 * rayon::current_num_threads())
        .div_ceil(panels)
        .min(tiles);
    let per_group = tiles.div_ceil(groups);
    (0..panels)
        .flat_map(|panel| {
            (0..tiles)
                .step_by(per_group)
                .map(move |first| (panel, first..(first + per_group).min(tiles)))
        })
        .collect()
}

/// Packs one sample's grad_out [O, voxels] as [panel][voxels][CHANNELS], zero-padding the
/// channels past O.
fn pack_transposed<T: Element>(
    grad_out: &[T],
    g: &ConvGeometry,
    channels: usize,
    packed: &mut Vec<T>,
) {
    let voxels = g.output_voxels();
    packed.clear();
    packed.resize(
        g.out_channels.div_ceil(channels) * voxels * channels,
        T::ZERO,
    );
    packed
        .par_chunks_mut(voxels * channels)
        .zip(grad_out.par_chunks(channels * voxels))
        .for_each(|(panel, rows)| {
            for (c, row) in rows.chunks_exact(voxels).enumerate() {
                for (d, &value) in panel[c..].iter_mut().step_by(channels).zip(row) {
                    *d = value;
                }
            }
        });
}

/// Padded index of every tap (row of the im2col matrix) relative to an output voxel's base.
fn tap_offsets(g: &ConvGeometry, padded: &PaddedLayout) -> Vec<isize> {
    (0..g.col_rows())
        .map(|row| {
            let tap = Tap::new(row, g);
            padded.index(tap.channel, tap.offset) as isize
        })
        .collect()
}

/// Computes the outputs at voxels `range` (flat indices) of output channels `channels` (one
/// panel, whose packed weight is `weight`) of one sample.
fn gather_range<T: ConvElement>(
    g: &ConvGeometry,
    padded: &PaddedLayout,
    kernel: &GatherKernel<T>,
    (input, weight, offsets): (&[T], &[T], &[isize]),
    (channels, range): (Range<usize>, Range<usize>),
    sums: &mut [T],
    sample_out: *mut T,
) {
    let voxels = g.output_voxels();
    let bases: Vec<usize> = padded.output_bases(range.clone(), g).collect();
    let tiles: Vec<(usize, usize, [isize; MAX_TILE_VOXELS])> = bases
        .chunks(kernel.voxels)
        .enumerate()
        .map(|(t, tile_bases)| {
            // A short last tile repeats its last voxel, whose outputs are then not stored.
            let last = tile_bases.len() - 1;
            let deltas =
                std::array::from_fn(|j| (tile_bases[j.min(last)] - tile_bases[0]) as isize);
            (range.start + t * kernel.voxels, tile_bases[0], deltas)
        })
        .collect();

    // One depth block of the weight panel stays in cache while it sweeps all tiles of the range.
    // The sums over depth blocks collect in `sums`, [range.len() rounded up to tiles][CHANNELS].
    for depth in microkernel::depth_blocks(offsets.len()) {
        let weight = &weight[depth.start * kernel.channels..depth.end * kernel.channels];
        for (first, base, deltas) in &tiles {
            let operands = GatherTile {
                weight,
                // SAFETY: base + delta + offset is the padded index of a tap of a real output
                // voxel, inside `input`.
                base: unsafe { input.as_ptr().add(*base) },
                offsets: &offsets[depth.clone()],
                deltas: &deltas[..kernel.voxels],
                dst: sums[(first - range.start) * kernel.channels..].as_mut_ptr(),
                accumulate: depth.start > 0,
            };
            // SAFETY: weight holds the depth block × CHANNELS, deltas has VOXELS entries, sums
            // has room for VOXELS × CHANNELS values from dst, and every read address is in
            // `input` (above).
            unsafe { kernel.run(&operands) };
        }
    }

    for (c, o) in channels.enumerate() {
        for (i, v) in range.clone().enumerate() {
            // SAFETY: o < O and v < D'·H'·W', inside this sample's output, which the caller
            // lets this job write at these channels and voxels.
            unsafe { *sample_out.add(o * voxels + v) = sums[i * kernel.channels + c] };
        }
    }
}

/// Output voxels per task of the gather path, a multiple of the tile's voxel count. Each task
/// sweeps one weight panel over its voxels, so ranges are as long as the balance allows (four
/// tasks per thread over all panels) and at most 1024 voxels, to keep the input they touch in cache.
fn gather_range_len(g: &ConvGeometry, panels: usize, granule: usize) -> usize {
    let target_ranges = (4 * rayon::current_num_threads()).div_ceil(panels);
    let len = g.output_voxels().div_ceil(target_ranges).min(1024);
    len.div_ceil(granule) * granule
}

/// Index arithmetic of a zero-padded copy of one sample, [C, D + 2pd, H + 2ph, W + 2pw].
struct PaddedLayout {
    dims: [usize; 3],
}

impl PaddedLayout {
    fn new(g: &ConvGeometry) -> Self {
        Self {
            dims: std::array::from_fn(|axis| g.input[axis] + 2 * g.padding[axis]),
        }
    }

    fn plane(&self) -> usize {
        self.dims[1] * self.dims[2]
    }

    fn volume(&self) -> usize {
        self.dims[0] * self.plane()
    }

    fn index(&self, channel: usize, [z, y, x]: [usize; 3]) -> usize {
        channel * self.volume() + z * self.plane() + y * self.dims[2] + x
    }

    /// Padded index of the first tap (channel 0, offset 0) of each output voxel in `voxels`
    /// (flat over D'·H'·W').
    fn output_bases(
        &self,
        voxels: Range<usize>,
        g: &ConvGeometry,
    ) -> impl Iterator<Item = usize> + '_ {
        let [_, out_h, out_w] = g.output;
        let stride = g.stride;
        let start = voxels.start;
        let mut position = [
            start / (out_h * out_w),
            (start / out_w) % out_h,
            start % out_w,
        ];
        voxels.map(move |_| {
            let [od, oh, ow] = position;
            let base = self.index(0, [od * stride[0], oh * stride[1], ow * stride[2]]);
            position = match (ow + 1 < out_w, oh + 1 < out_h) {
                (true, _) => [od, oh, ow + 1],
                (false, true) => [od, oh + 1, 0],
                (false, false) => [od + 1, 0, 0],
            };
            base
        })
    }
}

/// Returns the array the taps of one sample [C, D, H, W] are read from: the sample itself when
/// there is no padding, else its zero-padded copy, written into `buffer`.
fn sample_input<'a, T: Element>(
    x: &'a [T],
    g: &ConvGeometry,
    layout: &PaddedLayout,
    buffer: &'a mut Vec<T>,
) -> &'a [T] {
    if g.padding == [0; 3] {
        return x;
    }
    // The border is written once, here, and stays zero for later samples.
    if buffer.is_empty() {
        buffer.resize(g.in_channels * layout.volume(), T::ZERO);
    }
    pad_sample(x, g, layout, buffer);
    buffer
}

/// Copies one sample [C, D, H, W] into the interior of `padded`.
fn pad_sample<T: Element>(x: &[T], g: &ConvGeometry, layout: &PaddedLayout, padded: &mut [T]) {
    let [d, h, w] = g.input;
    let [pd, ph, pw] = g.padding;
    padded
        .par_chunks_mut(layout.volume())
        .zip(x.par_chunks(d * h * w))
        .for_each(|(dst, src)| {
            for (line, values) in src.chunks_exact(w).enumerate() {
                let (z, y) = (line / h, line % h);
                dst[layout.index(0, [z + pd, y + ph, pw])..][..w].copy_from_slice(values);
            }
        });
}
