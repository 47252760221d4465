//! sclip against the independent PyTorch reference (`tests/reference/make_fixtures.py`): random-weight
//! CLIP checkpoints, golden float32 outputs in `tests/fixtures/golden/`.
//!
//! Tolerances: features, embeddings and probabilities within 1e-4; label maps identical wherever the
//! reference's top-1/top-2 probability margin exceeds 1e-3 (random weights make classes close).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, IndexOp, Tensor};
use sclip::segment::{normalize, rescaled_size, resize_rgb};
use sclip::{
    ClassEmbeddings, Clip, DenseAttention, ModelFiles, SegmentOptions, Segmenter, Slide, Templates, Vocabulary,
};
use serde_json::Value;

const TOLERANCE: f32 = 1e-4;
const MARGIN: f32 = 1e-3;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn cases() -> Value {
    let text = std::fs::read_to_string(fixtures().join("golden/cases.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn load_model(name: &str) -> Clip {
    let files = ModelFiles::in_dir(&fixtures().join("models").join(name)).unwrap();
    Clip::load(&files, &Device::Cpu, DType::F32).unwrap()
}

fn golden(case: &Value) -> HashMap<String, Tensor> {
    candle_core::safetensors::load(fixtures().join(case["file"].as_str().unwrap()), &Device::Cpu).unwrap()
}

fn templates(name: &str) -> Templates {
    match name {
        "imagenet80" => Templates::imagenet80(),
        "photo" => Templates::photo(),
        other => panic!("unknown template set {other}"),
    }
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array().unwrap().iter().map(|s| s.as_str().unwrap().to_string()).collect()
}

fn read_image(case: &Value) -> image::RgbImage {
    sclip::read_rgb(&fixtures().join(case["image"].as_str().unwrap()), sclip::DEFAULT_MAX_PIXELS).unwrap()
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    assert_eq!(a.dims(), b.dims());
    let a = a.to_dtype(DType::F32).unwrap();
    let b = b.to_dtype(DType::F32).unwrap();
    (a - b).unwrap().abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar::<f32>().unwrap()
}

#[test]
fn the_real_clip_tokenizer_gives_openai_ids() {
    let tokenizer = sclip::PromptTokenizer::from_file(&fixtures().join("models/tiny-p16/tokenizer.json")).unwrap();
    let cases = cases();
    let cases = cases["tokenizer"].as_array().unwrap();
    assert!(cases.len() >= 5);
    for case in cases {
        let text = case["text"].as_str().unwrap();
        let expected: Vec<u32> = case["ids"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as u32).collect();
        assert_eq!(tokenizer.encode(text).unwrap(), expected, "{text:?}");
    }
    assert_eq!(tokenizer.encode("a photo of a flamingo.").unwrap(), [49406, 320, 1125, 539, 320, 30323, 269, 49407]);
}

#[test]
fn builtin_imagenet_templates_are_sclips() {
    let reference = std::fs::read_to_string(fixtures().join("templates_imagenet80.txt")).unwrap();
    let reference: Vec<&str> = reference.lines().collect();
    assert_eq!(Templates::imagenet80().as_slice(), reference.as_slice());
}

#[test]
fn text_embeddings_match_the_reference() {
    let cases = cases();
    for case in cases["text"].as_array().unwrap() {
        let clip = load_model(case["model"].as_str().unwrap());
        let expected = golden(case);
        let queries = strings(&case["queries"]);
        let names: Vec<&str> = queries.iter().map(String::as_str).collect();
        let ours = sclip::text::embed_queries(&clip, &names, &templates(case["templates"].as_str().unwrap())).unwrap();
        let diff = max_abs_diff(&ours, &expected["query_embeddings"]);
        assert!(diff < TOLERANCE, "{}: query embeddings differ by {diff}", case["file"]);

        let prompts: Vec<Vec<u32>> =
            strings(&case["prompts"]).iter().map(|p| clip.tokenizer.encode(p).unwrap()).collect();
        let ours = sclip::text::embed_prompts(&clip, &prompts).unwrap();
        let diff = max_abs_diff(&ours, &expected["prompt_embeddings"]);
        assert!(diff < TOLERANCE, "{}: prompt embeddings differ by {diff}", case["file"]);
    }
}

#[test]
fn resized_images_and_dense_crop_features_match_the_reference() {
    let cases = cases();
    for case in cases["crops"].as_array().unwrap() {
        let clip = load_model(case["model"].as_str().unwrap());
        let expected = golden(case);
        let image = read_image(case);
        let short_side = case["short_side"].as_u64().unwrap() as u32;
        let (w, h) = rescaled_size(image.width(), image.height(), short_side, 2048);
        let resized = resize_rgb(&image, w, h);
        let reference = expected["resized"].flatten_all().unwrap().to_vec1::<u8>().unwrap();
        assert_eq!(resized.as_raw(), &reference, "{}: resized pixels differ", case["file"]);

        let window: Vec<usize> =
            case["window"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as usize).collect();
        let pixels = normalize(&resized, &Device::Cpu).unwrap();
        let crop = pixels.i((.., window[0]..window[2], window[1]..window[3])).unwrap().unsqueeze(0).unwrap();
        let features = clip.dense_image_features(&crop, DenseAttention::Csa).unwrap().squeeze(0).unwrap();
        let diff = max_abs_diff(&features, &expected["features"]);
        assert!(diff < TOLERANCE, "{}: features differ by {diff}", case["file"]);
    }
}

fn options(case: &Value) -> SegmentOptions {
    SegmentOptions {
        short_side: case["short_side"].as_u64().unwrap() as u32,
        long_side_cap: 2048,
        slide: case["slide"].as_bool().unwrap().then(|| Slide {
            crop: case["crop"].as_u64().unwrap() as u32,
            stride: case["stride"].as_u64().unwrap() as u32,
        }),
        logit_scale: case["logit_scale"].as_f64().unwrap() as f32,
        prob_threshold: case["prob_threshold"].as_f64().unwrap() as f32,
        area_threshold: case["area_threshold"].as_f64().map(|a| a as f32),
        attention: match case["attention"].as_str().unwrap() {
            "csa" => DenseAttention::Csa,
            "vanilla" => DenseAttention::Vanilla,
            other => panic!("unknown attention {other}"),
        },
    }
}

#[test]
fn full_resolution_probabilities_and_labels_match_the_reference() {
    let cases = cases();
    let cases = cases["segment"].as_array().unwrap();
    assert!(cases.len() >= 6);
    let mut models: HashMap<String, Clip> = HashMap::new();
    for case in cases {
        let name = case["model"].as_str().unwrap();
        let clip = models.entry(name.to_string()).or_insert_with(|| load_model(name));
        let expected = golden(case);
        let spec: Vec<String> = case["labels"].as_array().unwrap().iter().map(|c| strings(c).join(";")).collect();
        let vocabulary = Vocabulary::parse_labels(&spec.join(",")).unwrap();
        let classes = ClassEmbeddings::new(clip, vocabulary, &templates(case["templates"].as_str().unwrap())).unwrap();
        let options = options(case);
        let prob_threshold = options.prob_threshold;
        let segmenter = Segmenter::new(clip, classes, options).unwrap();
        let result = segmenter.segment(&read_image(case)).unwrap();

        let probs = &expected["probs"];
        let (c, h, w) = probs.dims3().unwrap();
        assert_eq!((result.width as usize, result.height as usize), (w, h), "{}", case["file"]);
        let ours = Tensor::from_vec(result.probs.clone(), (c, h, w), &Device::Cpu).unwrap();
        let diff = max_abs_diff(&ours, probs);
        assert!(diff < TOLERANCE, "{}: probabilities differ by {diff}", case["file"]);

        let reference_labels = expected["labels"].flatten_all().unwrap().to_vec1::<i64>().unwrap();
        let probs = probs.to_vec3::<f32>().unwrap();
        let (mut compared, mut classes_seen) = (0, std::collections::BTreeSet::new());
        for pixel in 0..h * w {
            let mut column: Vec<f32> = (0..c).map(|k| probs[k][pixel / w][pixel % w]).collect();
            column.sort_by(|a, b| b.total_cmp(a));
            let clear = c < 2 || column[0] - column[1] > MARGIN;
            let near_threshold = (column[0] - prob_threshold).abs() < MARGIN;
            if clear && !near_threshold {
                compared += 1;
                classes_seen.insert(reference_labels[pixel]);
                assert_eq!(result.labels[pixel] as i64, reference_labels[pixel], "{}: pixel {pixel}", case["file"]);
            }
        }
        assert!(compared * 10 > h * w * 9, "{}: only {compared} of {} pixels have a clear margin", case["file"], h * w);
        assert!(classes_seen.len() >= 2, "{}: the labels compared use one class only", case["file"]);
    }
}
