//! The interpolation arithmetic of PyTorch's `F.interpolate`, which SCLIP leans on for image resizing,
//! logit upsampling and position-embedding resizing (`align_corners=False` throughout).

/// The two source samples and weights of one output coordinate of a linear resampling.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct LinearTap {
    pub i0: usize,
    pub i1: usize,
    pub w0: f32,
    pub w1: f32,
}

/// Half-pixel-centred linear taps from `in_len` to `out_len` samples, without antialiasing: output `i`
/// reads source coordinate `(i + 0.5)·in/out − 0.5`, clamped at 0 and at the last sample.
pub(crate) fn linear_taps(in_len: usize, out_len: usize) -> Vec<LinearTap> {
    let scale = in_len as f64 / out_len as f64;
    (0..out_len)
        .map(|i| {
            let src = ((i as f64 + 0.5) * scale - 0.5).max(0.0);
            let i0 = (src.floor() as usize).min(in_len - 1);
            let i1 = (i0 + 1).min(in_len - 1);
            let frac = if i1 == i0 { 0.0 } else { src - i0 as f64 };
            LinearTap { i0, i1, w0: (1.0 - frac) as f32, w1: frac as f32 }
        })
        .collect()
}

/// Bilinear resize of `planes` stacked `(in_h, in_w)` planes, as `F.interpolate(size=…,
/// mode="bilinear", align_corners=False)` computes it.
pub(crate) fn bilinear_planes(src: &[f32], in_h: usize, in_w: usize, out_h: usize, out_w: usize) -> Vec<f32> {
    let planes = src.len() / (in_h * in_w);
    let rows = linear_taps(in_h, out_h);
    let cols = linear_taps(in_w, out_w);
    let mut out = Vec::with_capacity(planes * out_h * out_w);
    for plane in src.chunks_exact(in_h * in_w) {
        for r in &rows {
            out.extend(bilinear_row(plane, in_w, r, &cols));
        }
    }
    debug_assert_eq!(out.len(), planes * out_h * out_w);
    out
}

/// One output row of a bilinear resize of a row-major plane `in_w` wide: the row tap `r` blends two
/// source rows, the column taps blend two samples of each.
pub(crate) fn bilinear_row<'a>(
    plane: &'a [f32],
    in_w: usize,
    r: &'a LinearTap,
    cols: &'a [LinearTap],
) -> impl Iterator<Item = f32> + 'a {
    let (top, bottom) = (&plane[r.i0 * in_w..][..in_w], &plane[r.i1 * in_w..][..in_w]);
    cols.iter()
        .map(move |c| r.w0 * (c.w0 * top[c.i0] + c.w1 * top[c.i1]) + r.w1 * (c.w0 * bottom[c.i0] + c.w1 * bottom[c.i1]))
}

/// Keys' cubic convolution kernel with PyTorch's A = −0.75: the weights of the 4 samples around a
/// source coordinate whose fractional part is `t`.
fn cubic_weights(t: f32) -> [f32; 4] {
    const A: f32 = -0.75;
    let near = |x: f32| ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0;
    let far = |x: f32| ((A * x - 5.0 * A) * x + 8.0 * A) * x - 4.0 * A;
    [far(t + 1.0), near(t), near(1.0 - t), far(2.0 - t)]
}

/// The 4 clamped source indices and weights of every output coordinate of a bicubic resampling with
/// an explicit `scale_factor` (so the source step is `1/scale_factor`, not `in/out`).
fn cubic_taps(in_len: usize, out_len: usize, scale_factor: f64) -> Vec<([usize; 4], [f32; 4])> {
    let step = (1.0 / scale_factor) as f32;
    (0..out_len)
        .map(|i| {
            let src = step * (i as f32 + 0.5) - 0.5;
            let floor = src.floor();
            let idx = std::array::from_fn(|k| (floor as isize - 1 + k as isize).clamp(0, in_len as isize - 1) as usize);
            (idx, cubic_weights(src - floor))
        })
        .collect()
}

/// Bicubic resize of a row-major `(in_h, in_w, channels)` grid, as `F.interpolate(scale_factor=…,
/// mode="bicubic", align_corners=False)` computes it: columns first, then rows.
pub(crate) fn bicubic_grid(
    src: &[f32],
    channels: usize,
    (in_h, in_w): (usize, usize),
    (out_h, out_w): (usize, usize),
    (scale_h, scale_w): (f64, f64),
) -> Vec<f32> {
    let rows = cubic_taps(in_h, out_h, scale_h);
    let cols = cubic_taps(in_w, out_w, scale_w);
    let mut out = vec![0f32; out_h * out_w * channels];
    let mut across = vec![0f32; channels];
    for (y, (row_idx, row_w)) in rows.iter().enumerate() {
        for (x, (col_idx, col_w)) in cols.iter().enumerate() {
            let dst = &mut out[(y * out_w + x) * channels..][..channels];
            for (&sy, &wy) in row_idx.iter().zip(row_w) {
                across.fill(0.0);
                for (&sx, &wx) in col_idx.iter().zip(col_w) {
                    let sample = &src[(sy * in_w + sx) * channels..][..channels];
                    across.iter_mut().zip(sample).for_each(|(a, s)| *a += wx * s);
                }
                dst.iter_mut().zip(&across).for_each(|(d, a)| *d += wy * a);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn linear_taps_match_half_pixel_centres() {
        // 2 → 4: sources −0.25 (clamped to 0), 0.25, 0.75, 1.25 (clamped to the last sample).
        let taps = linear_taps(2, 4);
        assert_eq!(taps[0], LinearTap { i0: 0, i1: 1, w0: 1.0, w1: 0.0 });
        assert_eq!(taps[1], LinearTap { i0: 0, i1: 1, w0: 0.75, w1: 0.25 });
        assert_eq!(taps[2], LinearTap { i0: 0, i1: 1, w0: 0.25, w1: 0.75 });
        assert_eq!(taps[3], LinearTap { i0: 1, i1: 1, w0: 1.0, w1: 0.0 });
    }

    #[test]
    fn bilinear_upsampling_of_a_ramp_is_linear_inside() {
        let out = bilinear_planes(&[0.0, 1.0], 1, 2, 1, 4);
        assert_eq!(out, vec![0.0, 0.25, 0.75, 1.0]);
    }

    #[test]
    fn cubic_weights_sum_to_one_and_interpolate_at_integers() {
        for t in [0.0f32, 0.3, 0.5, 0.9] {
            assert!((cubic_weights(t).iter().sum::<f32>() - 1.0).abs() < 1e-6);
        }
        assert_eq!(cubic_weights(0.0), [0.0, 1.0, 0.0, 0.0]);
    }

    #[test]
    fn bicubic_with_the_sclip_scale_quirk_is_not_the_size_based_resize() {
        // SCLIP passes scale (g + 0.1)/n: the source step is n/(g + 0.1), not n/g.
        let src: Vec<f32> = (0..16).map(|v| (v * v) as f32).collect();
        let quirk = bicubic_grid(&src, 1, (4, 4), (2, 2), (2.1 / 4.0, 2.1 / 4.0));
        let plain = bicubic_grid(&src, 1, (4, 4), (2, 2), (0.5, 0.5));
        assert_eq!(quirk.len(), 4);
        assert!(quirk.iter().zip(&plain).any(|(a, b)| (a - b).abs() > 1e-3));
    }
}
