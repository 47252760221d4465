//! From cosine logits at working resolution to class probabilities and a label map at the original
//! resolution (SCLIP's `postprocess_result`), one output row at a time so that the per-query logits
//! never exist at full resolution.

use crate::resample::{bilinear_row, linear_taps};

/// Cosine logits `(queries, h, w)`, row-major.
#[derive(Debug, Clone)]
pub struct Logits {
    pub data: Vec<f32>,
    pub queries: usize,
    pub h: usize,
    pub w: usize,
}

/// What turns logits into labels.
#[derive(Debug, Clone, Copy)]
pub struct Decision {
    pub logit_scale: f32,
    pub prob_threshold: f32,
    pub area_threshold: Option<f32>,
}

/// Per-class probabilities `(classes, height, width)` and the label of every pixel.
#[derive(Debug, Clone)]
pub struct ClassMaps {
    pub probs: Vec<f32>,
    pub labels: Vec<u16>,
}

/// Bilinear upsampling to `out_h × out_w`, softmax over all queries (synonyms compete), max over each
/// class's synonyms (a class without queries has probability 0), then the thresholds.
pub fn decide(
    logits: &Logits,
    query_class: &[usize],
    classes: usize,
    out_h: usize,
    out_w: usize,
    d: Decision,
) -> ClassMaps {
    let plane = logits.h * logits.w;
    let rows = linear_taps(logits.h, out_h);
    let cols = linear_taps(logits.w, out_w);
    let pixels = out_h * out_w;
    let mut probs = vec![0f32; classes * pixels];
    let mut row = vec![0f32; logits.queries * out_w];
    let mut softmax = vec![0f32; logits.queries];
    for (y, r) in rows.iter().enumerate() {
        for (q, dst) in row.chunks_exact_mut(out_w).enumerate() {
            let src = &logits.data[q * plane..][..plane];
            dst.iter_mut().zip(bilinear_row(src, logits.w, r, &cols)).for_each(|(d, v)| *d = v);
        }
        for x in 0..out_w {
            for (q, s) in softmax.iter_mut().enumerate() {
                *s = row[q * out_w + x] * d.logit_scale;
            }
            let max = softmax.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let mut sum = 0f32;
            for s in softmax.iter_mut() {
                *s = (*s - max).exp();
                sum += *s;
            }
            let pixel = y * out_w + x;
            for (&s, &c) in softmax.iter().zip(query_class) {
                let p = &mut probs[c * pixels + pixel];
                *p = p.max(s / sum);
            }
        }
    }
    if let Some(threshold) = d.area_threshold {
        drop_small_classes(&mut probs, classes, pixels, threshold);
    }
    let labels = (0..pixels)
        .map(|pixel| {
            let (best, p) = argmax((0..classes).map(|c| probs[c * pixels + pixel]));
            if p < d.prob_threshold {
                0
            } else {
                best as u16
            }
        })
        .collect();
    ClassMaps { probs, labels }
}

/// The first index of the largest value, as `torch.argmax` picks it.
fn argmax(values: impl Iterator<Item = f32>) -> (usize, f32) {
    values.enumerate().fold((0, f32::NEG_INFINITY), |best, (i, v)| if v > best.1 { (i, v) } else { best })
}

/// SCLIP's area threshold: a non-background class whose predicted area is not more than `threshold` of
/// all non-background predicted pixels loses its whole probability map.
fn drop_small_classes(probs: &mut [f32], classes: usize, pixels: usize, threshold: f32) {
    let mut area = vec![0usize; classes];
    for pixel in 0..pixels {
        area[argmax((0..classes).map(|c| probs[c * pixels + pixel])).0] += 1;
    }
    let foreground: usize = area[1..].iter().sum();
    for c in 1..classes {
        if area[c] as f32 <= threshold * foreground as f32 {
            probs[c * pixels..][..pixels].fill(0.0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn logits(data: Vec<f32>, queries: usize) -> Logits {
        let w = data.len() / queries;
        Logits { data, queries, h: 1, w }
    }

    const PLAIN: Decision = Decision { logit_scale: 1.0, prob_threshold: 0.0, area_threshold: None };

    #[test]
    fn synonyms_compete_in_the_softmax_and_classes_take_their_best_synonym() {
        // Queries: class 0 has one, class 1 two identical synonyms.
        let maps = decide(&logits(vec![0.0, 0.0, 0.0], 3), &[0, 1, 1], 2, 1, 1, PLAIN);
        assert!((maps.probs[0] - 1.0 / 3.0).abs() < 1e-6);
        assert!((maps.probs[1] - 1.0 / 3.0).abs() < 1e-6);
        // A tie goes to the first class, as torch.argmax breaks it.
        assert_eq!(maps.labels, [0]);
    }

    #[test]
    fn pixels_below_the_probability_threshold_go_to_class_0() {
        let d = Decision { prob_threshold: 0.6, ..PLAIN };
        // Pixel 0: class 1 wins at ~0.73; pixel 1: class 1 wins at only 0.5.
        let maps = decide(&logits(vec![0.0, 0.0, 1.0, 0.0], 2), &[0, 1], 2, 1, 2, d);
        assert_eq!(maps.labels, [1, 0]);
    }

    #[test]
    fn small_foreground_classes_are_dropped_by_area() {
        // Four pixels: class 1 wins three, class 2 wins one (1/4 of the foreground).
        let data = vec![
            0.0, 0.0, 0.0, 0.0, // class 0
            5.0, 5.0, 5.0, 0.0, // class 1
            0.0, 0.0, 0.0, 5.0, // class 2
        ];
        let keep =
            decide(&logits(data.clone(), 3), &[0, 1, 2], 3, 1, 4, Decision { area_threshold: Some(0.2), ..PLAIN });
        assert_eq!(keep.labels, [1, 1, 1, 2]);
        let drop = decide(&logits(data, 3), &[0, 1, 2], 3, 1, 4, Decision { area_threshold: Some(0.25), ..PLAIN });
        assert_eq!(drop.labels, [1, 1, 1, 0]);
        assert!(drop.probs[8..].iter().all(|&p| p == 0.0));
    }
}
