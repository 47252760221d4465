//! SCLIP's test-time preprocessing: keep-ratio resize (mmcv `imrescale` to `scale=(2048, S)`) and
//! CLIP normalisation on the 0–255 scale.

use candle_core::{Device, Tensor};
use image::RgbImage;

use crate::resample::linear_taps;

/// CLIP's mean and std ×255, rounded to 3 decimals as SCLIP's data preprocessor has them.
const MEAN: [f32; 3] = [122.771, 116.746, 104.094];
const STD: [f32; 3] = [68.501, 66.632, 70.323];

/// The size mmcv's `rescale_size` picks: the short side becomes `short_side` unless the long side would
/// then exceed `long_side_cap`. Small images are upscaled.
pub fn rescaled_size(width: u32, height: u32, short_side: u32, long_side_cap: u32) -> (u32, u32) {
    let (w, h) = (width as f64, height as f64);
    let scale = (long_side_cap as f64 / w.max(h)).min(short_side as f64 / w.min(h));
    let round = |v: f64| ((v * scale + 0.5) as u32).max(1);
    (round(w), round(h))
}

/// Bilinear resize with half-pixel centres and no antialiasing (what cv2's `INTER_LINEAR` does),
/// computed in f32, rows first then columns, and rounded half-to-even back to 8 bits.
pub fn resize_rgb(image: &RgbImage, width: u32, height: u32) -> RgbImage {
    let (in_w, in_h) = (image.width() as usize, image.height() as usize);
    let (out_w, out_h) = (width as usize, height as usize);
    if (in_w, in_h) == (out_w, out_h) {
        return image.clone();
    }
    let cols = linear_taps(in_w, out_w);
    let rows = linear_taps(in_h, out_h);
    let src = image.as_raw();
    // Horizontal pass: every source row resampled to the output width.
    let mut across = vec![0f32; in_h * out_w * 3];
    for y in 0..in_h {
        let row = &src[y * in_w * 3..][..in_w * 3];
        for (x, c) in cols.iter().enumerate() {
            for ch in 0..3 {
                across[(y * out_w + x) * 3 + ch] = c.w0 * row[c.i0 * 3 + ch] as f32 + c.w1 * row[c.i1 * 3 + ch] as f32;
            }
        }
    }
    let mut out = Vec::with_capacity(out_h * out_w * 3);
    for r in &rows {
        let (top, bottom) = (&across[r.i0 * out_w * 3..][..out_w * 3], &across[r.i1 * out_w * 3..][..out_w * 3]);
        out.extend(
            top.iter().zip(bottom).map(|(t, b)| (r.w0 * t + r.w1 * b).round_ties_even().clamp(0.0, 255.0) as u8),
        );
    }
    RgbImage::from_raw(width, height, out).expect("the buffer has width × height × 3 bytes")
}

/// `(3, h, w)` f32 on `device`, `(x − mean)/std` per RGB channel.
pub fn normalize(image: &RgbImage, device: &Device) -> candle_core::Result<Tensor> {
    let (w, h) = (image.width() as usize, image.height() as usize);
    let mut planes = vec![0f32; 3 * h * w];
    for (i, px) in image.pixels().enumerate() {
        for ch in 0..3 {
            planes[ch * h * w + i] = (px[ch] as f32 - MEAN[ch]) / STD[ch];
        }
    }
    Tensor::from_vec(planes, (3, h, w), device)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_side_becomes_336_and_long_side_is_capped() {
        assert_eq!(rescaled_size(500, 375, 336, 2048), (448, 336));
        assert_eq!(rescaled_size(120, 90, 336, 2048), (448, 336));
        assert_eq!(rescaled_size(4000, 500, 336, 2048), (2048, 256));
        assert_eq!(rescaled_size(1, 1, 336, 2048), (336, 336));
    }

    #[test]
    fn resizing_a_flat_image_keeps_its_colour() {
        let image = RgbImage::from_pixel(7, 5, image::Rgb([10, 200, 255]));
        let resized = resize_rgb(&image, 20, 3);
        assert!(resized.pixels().all(|p| p.0 == [10, 200, 255]));
    }

    #[test]
    fn normalisation_uses_clip_statistics() {
        let image = RgbImage::from_pixel(1, 1, image::Rgb([122, 117, 104]));
        let t = normalize(&image, &Device::Cpu).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert!((t[0] - (122.0 - 122.771) / 68.501).abs() < 1e-7);
        assert!((t[2] - (104.0 - 104.094) / 70.323).abs() < 1e-7);
    }
}
