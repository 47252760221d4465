//! What a segmentation is written as: a colour overlay with a legend, a class-index mask, a NumPy
//! array of probabilities.

mod palette;

use std::io::Cursor;

use image::{ImageBuffer, Luma, Rgb, RgbImage};

pub use palette::{class_color, hex};

use crate::segment::Segmentation;

/// The fraction of pixels of each class.
pub fn class_fractions(segmentation: &Segmentation, classes: usize) -> Vec<f64> {
    let mut counts = vec![0usize; classes];
    for &label in &segmentation.labels {
        counts[label as usize] += 1;
    }
    let total = segmentation.labels.len().max(1) as f64;
    counts.into_iter().map(|c| c as f64 / total).collect()
}

/// The image with every class region tinted by `alpha`, 1-pixel white borders between classes, and to
/// its right a legend of the classes present with their share of the pixels.
pub fn overlay(image: &RgbImage, segmentation: &Segmentation, names: &[String], alpha: f32) -> RgbImage {
    let (w, h) = (segmentation.width, segmentation.height);
    let label = |x: u32, y: u32| segmentation.labels[(y * w + x) as usize];
    let tinted = RgbImage::from_fn(w, h, |x, y| {
        let here = label(x, y);
        let border = (x + 1 < w && label(x + 1, y) != here) || (y + 1 < h && label(x, y + 1) != here);
        if border {
            return Rgb([255, 255, 255]);
        }
        let color = class_color(here as usize);
        let px = image.get_pixel(x, y).0;
        Rgb(std::array::from_fn(|c| ((1.0 - alpha) * px[c] as f32 + alpha * color[c] as f32).round() as u8))
    });
    let fractions = class_fractions(segmentation, names.len());
    let entries: Vec<(usize, String)> = fractions
        .iter()
        .enumerate()
        .filter(|(_, &f)| f > 0.0)
        .map(|(i, f)| (i, format!("{} {:.1}%", legend_name(&names[i]), f * 100.0)))
        .collect();
    with_legend(&tinted, &entries)
}

const GLYPH: u32 = 8;
const SCALE: u32 = 2;
const ROW: u32 = GLYPH * SCALE + 6;
const PAD: u32 = 6;
const MAX_NAME: usize = 32;

/// The legend's font is ASCII: other characters are shown as `?`, long names are shortened.
fn legend_name(name: &str) -> String {
    let ascii: String = name.chars().map(|c| if c.is_ascii_graphic() || c == ' ' { c } else { '?' }).collect();
    if ascii.chars().count() > MAX_NAME {
        format!("{}...", &ascii[..MAX_NAME - 3])
    } else {
        ascii
    }
}

fn with_legend(tinted: &RgbImage, entries: &[(usize, String)]) -> RgbImage {
    let text_width = entries.iter().map(|(_, t)| t.len() as u32).max().unwrap_or(0) * GLYPH * SCALE;
    let panel_w = PAD + GLYPH * SCALE + PAD + text_width + PAD;
    let panel_h = PAD + ROW * entries.len() as u32 + PAD;
    let (w, h) = tinted.dimensions();
    let mut canvas = RgbImage::from_pixel(w + panel_w, h.max(panel_h), Rgb([32, 32, 32]));
    image::imageops::replace(&mut canvas, tinted, 0, 0);
    for (row, (class, text)) in entries.iter().enumerate() {
        let top = PAD + row as u32 * ROW;
        let swatch = Rgb(class_color(*class));
        for dy in 0..GLYPH * SCALE {
            for dx in 0..GLYPH * SCALE {
                let edge = dx == 0 || dy == 0 || dx == GLYPH * SCALE - 1 || dy == GLYPH * SCALE - 1;
                canvas.put_pixel(w + PAD + dx, top + dy, if edge { Rgb([255, 255, 255]) } else { swatch });
            }
        }
        draw_text(&mut canvas, w + PAD + GLYPH * SCALE + PAD, top, text);
    }
    canvas
}

fn draw_text(canvas: &mut RgbImage, left: u32, top: u32, text: &str) {
    for (i, c) in text.chars().enumerate() {
        let glyph = font8x8::legacy::BASIC_LEGACY.get(c as usize).copied().unwrap_or([0; 8]);
        for (gy, bits) in glyph.iter().enumerate() {
            for gx in 0..GLYPH {
                if bits >> gx & 1 == 1 {
                    for (sy, sx) in (0..SCALE).flat_map(|sy| (0..SCALE).map(move |sx| (sy, sx))) {
                        let x = left + (i as u32 * GLYPH + gx) * SCALE + sx;
                        let y = top + gy as u32 * SCALE + sy;
                        canvas.put_pixel(x, y, Rgb([240, 240, 240]));
                    }
                }
            }
        }
    }
}

/// The label map as a PNG of class indices: 8-bit for up to 255 classes, 16-bit beyond.
pub fn mask_png(segmentation: &Segmentation, classes: usize) -> Vec<u8> {
    let (w, h) = (segmentation.width, segmentation.height);
    let mut bytes = Cursor::new(Vec::new());
    let written = if classes <= 255 {
        let data: Vec<u8> = segmentation.labels.iter().map(|&l| l as u8).collect();
        ImageBuffer::<Luma<u8>, _>::from_raw(w, h, data)
            .expect("one label per pixel")
            .write_to(&mut bytes, image::ImageFormat::Png)
    } else {
        let data = segmentation.labels.clone();
        ImageBuffer::<Luma<u16>, _>::from_raw(w, h, data)
            .expect("one label per pixel")
            .write_to(&mut bytes, image::ImageFormat::Png)
    };
    written.expect("encoding a PNG in memory cannot fail");
    bytes.into_inner()
}

/// Any RGB image as PNG bytes.
pub fn rgb_png(image: &RgbImage) -> Vec<u8> {
    let mut bytes = Cursor::new(Vec::new());
    image.write_to(&mut bytes, image::ImageFormat::Png).expect("encoding a PNG in memory cannot fail");
    bytes.into_inner()
}

/// The probabilities as a NumPy `.npy` file: little-endian float32, shape `(classes, height, width)`.
pub fn probs_npy(segmentation: &Segmentation, classes: usize) -> Vec<u8> {
    let header = format!(
        "{{'descr': '<f4', 'fortran_order': False, 'shape': ({}, {}, {}), }}",
        classes, segmentation.height, segmentation.width
    );
    // Magic, version 1.0, header length; the header is space-padded so the data starts 64-byte aligned.
    let unpadded = 10 + header.len() + 1;
    let padding = (64 - unpadded % 64) % 64;
    let header_len = header.len() + padding + 1;
    let mut out = Vec::with_capacity(10 + header_len + segmentation.probs.len() * 4);
    out.extend_from_slice(b"\x93NUMPY\x01\x00");
    out.extend_from_slice(&(header_len as u16).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    out.extend(std::iter::repeat(b' ').take(padding));
    out.push(b'\n');
    for p in &segmentation.probs {
        out.extend_from_slice(&p.to_le_bytes());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn two_by_one() -> Segmentation {
        Segmentation { width: 2, height: 1, probs: vec![0.9, 0.2, 0.1, 0.8], labels: vec![0, 1] }
    }

    #[test]
    fn npy_header_is_aligned_and_describes_the_array() {
        let bytes = probs_npy(&two_by_one(), 2);
        let header_len = u16::from_le_bytes([bytes[8], bytes[9]]) as usize;
        assert_eq!((10 + header_len) % 64, 0);
        let header = std::str::from_utf8(&bytes[10..10 + header_len]).unwrap();
        assert!(header.contains("'shape': (2, 1, 2)"), "{header}");
        assert!(header.ends_with('\n'));
        assert_eq!(&bytes[10 + header_len..][..4], &0.9f32.to_le_bytes());
        assert_eq!(bytes.len(), 10 + header_len + 16);
    }

    #[test]
    fn masks_hold_class_indices() {
        let decoded = image::load_from_memory(&mask_png(&two_by_one(), 2)).unwrap();
        assert_eq!(decoded.as_luma8().unwrap().as_raw(), &[0, 1]);
        let wide = image::load_from_memory(&mask_png(&two_by_one(), 300)).unwrap();
        assert_eq!(wide.as_luma16().unwrap().as_raw(), &[0, 1]);
    }

    #[test]
    fn the_overlay_tints_marks_borders_and_adds_a_legend() {
        let image = RgbImage::from_pixel(2, 1, Rgb([200, 200, 200]));
        let names = vec!["background".to_string(), "cat".to_string()];
        let out = overlay(&image, &two_by_one(), &names, 0.5);
        assert_eq!(out.get_pixel(0, 0).0, [255, 255, 255], "class border");
        assert_eq!(out.get_pixel(1, 0).0, [222, 198, 100], "half image, half class colour");
        assert!(out.width() > 2 && out.height() >= PAD * 2 + ROW * 2);
    }

    #[test]
    fn legend_names_are_ascii_and_bounded() {
        assert_eq!(legend_name("café"), "caf?");
        assert_eq!(legend_name(&"x".repeat(50)).len(), MAX_NAME);
    }
}
