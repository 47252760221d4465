//! Reading images as SCLIP sees them: 8-bit RGB, upright.

use std::path::Path;

use image::{ImageDecoder, ImageReader, RgbImage};

use crate::error::{Error, Result};

/// Refuse images above this many pixels unless told otherwise: far beyond any photo, well below what
/// a decompression bomb asks for.
pub const DEFAULT_MAX_PIXELS: u64 = 100_000_000;

/// Decodes an image file to 8-bit RGB: EXIF orientation applied, alpha dropped, grey expanded, 16-bit
/// scaled down, and only the first frame of an animation. The size is checked from the header before
/// any pixel is decoded.
pub fn read_rgb(path: &Path, max_pixels: u64) -> Result<RgbImage> {
    let fail = |reason: String| Error::Image { path: path.to_path_buf(), reason };
    let reader = ImageReader::open(path).map_err(Error::io(path))?.with_guessed_format().map_err(Error::io(path))?;
    if reader.format().is_none() {
        return Err(fail("not a supported image format (PNG, JPEG, GIF, WebP, BMP)".into()));
    }
    let mut decoder = reader.into_decoder().map_err(|e| fail(e.to_string()))?;
    let (width, height) = decoder.dimensions();
    let pixels = width as u64 * height as u64;
    if pixels == 0 {
        return Err(fail(format!("image is empty ({width}×{height})")));
    }
    if pixels > max_pixels {
        return Err(fail(format!(
            "{width}×{height} is {pixels} pixels, over the limit of {max_pixels} (see --max-pixels)"
        )));
    }
    let orientation = decoder.orientation().map_err(|e| fail(e.to_string()))?;
    let mut image = image::DynamicImage::from_decoder(decoder).map_err(|e| fail(e.to_string()))?;
    image.apply_orientation(orientation);
    Ok(image.into_rgb8())
}
