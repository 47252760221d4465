/// One sliding-window crop, in resized-image pixels: rows `y..y + h`, columns `x..x + w`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub y: usize,
    pub x: usize,
    pub h: usize,
    pub w: usize,
}

/// SCLIP's sliding windows over an `h × w` image: a `crop` window every `stride` pixels, the last one
/// snapped to the border, and the whole dimension when it is shorter than the crop (no padding). All
/// windows therefore have one size.
pub fn sliding_windows(h: usize, w: usize, crop: usize, stride: usize) -> Vec<Window> {
    let starts = |len: usize| -> Vec<usize> {
        let count = (len + stride).saturating_sub(crop + 1) / stride + 1;
        (0..count).map(|i| (i * stride + crop).min(len).saturating_sub(crop)).collect()
    };
    let (ys, xs) = (starts(h), starts(w));
    ys.iter().flat_map(|&y| xs.iter().map(move |&x| Window { y, x, h: crop.min(h), w: crop.min(w) })).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_448_by_336_image_gets_six_windows_snapped_to_the_border() {
        let windows = sliding_windows(336, 448, 224, 112);
        let corners: Vec<(usize, usize)> = windows.iter().map(|w| (w.y, w.x)).collect();
        assert_eq!(corners, [(0, 0), (0, 112), (0, 224), (112, 0), (112, 112), (112, 224)]);
        assert!(windows.iter().all(|w| (w.h, w.w) == (224, 224)));
    }

    #[test]
    fn the_last_window_is_snapped_not_padded() {
        let ys: Vec<usize> = sliding_windows(300, 224, 224, 112).iter().map(|w| w.y).collect();
        assert_eq!(ys, [0, 76]);
    }

    #[test]
    fn an_image_smaller_than_the_crop_is_one_whole_window() {
        assert_eq!(sliding_windows(100, 150, 224, 112), [Window { y: 0, x: 0, h: 100, w: 150 }]);
    }
}
