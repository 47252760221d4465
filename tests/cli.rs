//! End-to-end tests of the `sclip` binary: files written, JSON printed, exit codes, and how hostile
//! inputs are reported. Every run uses the tiny random-weight fixture model with the single "photo"
//! template and never touches the network (HF_HUB_OFFLINE=1).

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

use assert_cmd::Command;
use image::{DynamicImage, GrayImage, ImageBuffer, Luma, Rgb, RgbImage, Rgba, RgbaImage};
use serde_json::Value;
use tempfile::TempDir;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn image_fixture(name: &str) -> PathBuf {
    fixtures().join("images").join(name)
}

fn model_dir() -> PathBuf {
    fixtures().join("models/tiny-p16")
}

/// `sclip` with no arguments yet, kept off the network, and run outside the repository so that a
/// default `--out-dir .` never writes into it.
fn sclip() -> Command {
    let mut cmd = Command::cargo_bin("sclip").expect("the sclip binary is built");
    // Class embeddings are cached under target/, never in the user's home.
    let cache = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("sclip-cache");
    cmd.env("HF_HUB_OFFLINE", "1").env("SCLIP_CACHE_DIR", cache).current_dir(std::env::temp_dir());
    cmd
}

/// `sclip segment --model <tiny-p16> --templates photo`.
fn segment() -> Command {
    let mut cmd = sclip();
    cmd.arg("segment").arg("--model").arg(model_dir()).args(["--templates", "photo"]);
    cmd
}

struct Run {
    code: i32,
    stdout: Vec<u8>,
    stderr: String,
}

impl Run {
    fn stdout_text(&self) -> String {
        String::from_utf8(self.stdout.clone()).expect("stdout is UTF-8")
    }

    /// The JSON Lines on stdout, each parsed.
    fn json(&self) -> Vec<Value> {
        self.stdout_text()
            .lines()
            .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}")))
            .collect()
    }
}

/// Runs `cmd` to completion; whatever happens, it must exit normally and never report a panic.
fn run(cmd: &mut Command) -> Run {
    let output = cmd.output().expect("sclip starts");
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert_no_panic(&stderr);
    let code = output.status.code().unwrap_or_else(|| panic!("killed by a signal: {:?}\n{stderr}", output.status));
    Run { code, stdout: output.stdout, stderr }
}

fn assert_no_panic(stderr: &str) {
    for sign in ["panicked", "RUST_BACKTRACE", "internal error"] {
        assert!(!stderr.contains(sign), "stderr shows a panic ({sign:?}):\n{stderr}");
    }
}

/// Every line of stderr is a one-line `sclip: error:` message, and the first one says `needles`.
fn assert_error_lines(stderr: &str, needles: &[&str]) {
    assert!(!stderr.trim().is_empty(), "no error message");
    for line in stderr.lines() {
        assert!(line.starts_with("sclip: error: "), "not an error line: {line:?}\n{stderr}");
    }
    let first = stderr.lines().next().unwrap();
    for needle in needles {
        assert!(first.contains(needle), "{needle:?} is not in the first line {first:?}");
    }
}

fn file_names(dir: &Path) -> BTreeSet<String> {
    fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect()
}

fn set(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|s| s.to_string()).collect()
}

fn read_mask(path: &Path) -> GrayImage {
    match image::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())) {
        DynamicImage::ImageLuma8(mask) => mask,
        other => panic!("{}: mask is {:?}, not 8-bit grey", path.display(), other.color()),
    }
}

/// A `.npy` file's shape and float32 data; the header must say little-endian float32, C order.
fn read_npy(path: &Path) -> (Vec<usize>, Vec<f32>) {
    let bytes = fs::read(path).unwrap();
    assert_eq!(&bytes[..8], b"\x93NUMPY\x01\x00", "magic and version 1.0");
    let header_len = u16::from_le_bytes([bytes[8], bytes[9]]) as usize;
    let header = std::str::from_utf8(&bytes[10..10 + header_len]).unwrap();
    assert!(header.contains("'descr': '<f4'"), "{header}");
    assert!(header.contains("'fortran_order': False"), "{header}");
    let shape = header.split("'shape': (").nth(1).and_then(|s| s.split(')').next()).expect("a shape");
    let shape: Vec<usize> =
        shape.split(',').map(str::trim).filter(|s| !s.is_empty()).map(|s| s.parse().unwrap()).collect();
    let data = &bytes[10 + header_len..];
    assert_eq!(data.len() % 4, 0);
    (shape, data.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect())
}

fn copy_image(name: &str, to: &Path) {
    fs::create_dir_all(to.parent().unwrap()).unwrap();
    fs::copy(image_fixture(name), to).unwrap();
}

/// Segments `input` with one label and an overlay at --alpha 0: with a single class there are no
/// class borders, so the overlay's image part is exactly the RGB image sclip decoded. Returns the mask
/// size and that decoded image.
fn decoded_as(input: &Path) -> ((u32, u32), RgbImage) {
    let out = TempDir::new().unwrap();
    let r = run(segment().arg(input).args(["--labels", "thing", "--alpha", "0"]).arg("-o").arg(out.path()));
    assert_eq!(r.code, 0, "{}", r.stderr);
    let stem = input.file_stem().unwrap().to_string_lossy().into_owned();
    let mask = read_mask(&out.path().join(format!("{stem}.mask.png")));
    let overlay = image::open(out.path().join(format!("{stem}.overlay.png"))).unwrap().into_rgb8();
    let (w, h) = mask.dimensions();
    assert!(mask.pixels().all(|p| p.0[0] == 1), "one label: every pixel is class 1");
    (mask.dimensions(), image::imageops::crop_imm(&overlay, 0, 0, w, h).to_image())
}

fn assert_colour_near(image: &RgbImage, (x, y): (u32, u32), expected: [u8; 3], tolerance: u8) {
    let got = image.get_pixel(x, y).0;
    let close = got.iter().zip(expected).all(|(&g, e)| g.abs_diff(e) <= tolerance);
    assert!(close, "pixel ({x}, {y}) is {got:?}, expected {expected:?} ± {tolerance}");
}

#[test]
fn a_single_image_gets_a_mask_and_an_overlay_and_a_summary_on_stderr_only() {
    let out = TempDir::new().unwrap();
    let r = run(segment().arg(image_fixture("cat.png")).args(["--labels", "cat,dog"]).arg("-o").arg(out.path()));
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stdout.is_empty(), "stdout: {:?}", r.stdout_text());
    assert!(r.stderr.contains("cat.png (120x90)"), "{}", r.stderr);
    assert!(r.stderr.contains("cat.mask.png") && r.stderr.contains("cat.overlay.png"), "{}", r.stderr);
    assert_eq!(file_names(out.path()), set(&["cat.mask.png", "cat.overlay.png"]), "no temporary files are left");

    let mask = read_mask(&out.path().join("cat.mask.png"));
    assert_eq!(mask.dimensions(), (120, 90));
    assert!(mask.pixels().all(|p| (1..=2).contains(&p.0[0])), "labels are classes 1..=2 (nothing below threshold 0)");
    let overlay = image::open(out.path().join("cat.overlay.png")).unwrap();
    assert!(matches!(overlay, DynamicImage::ImageRgb8(_)), "overlay is {:?}", overlay.color());
    assert!(overlay.width() > 120 && overlay.height() >= 90, "{}x{}", overlay.width(), overlay.height());
}

#[test]
fn json_lines_describe_each_image_and_agree_with_its_mask() {
    let out = TempDir::new().unwrap();
    let r = run(segment()
        .arg(image_fixture("cat.png"))
        .arg(image_fixture("coffee.png"))
        .args(["--labels", "cat;kitten,cup", "--json"])
        .arg("-o")
        .arg(out.path()));
    assert_eq!(r.code, 0, "{}", r.stderr);
    let records = r.json();
    assert_eq!(records.len(), 2, "{}", r.stdout_text());
    for (record, (stem, w, h)) in records.iter().zip([("cat", 120u64, 90u64), ("coffee", 60, 40)]) {
        assert!(record["input"].as_str().unwrap().ends_with(&format!("{stem}.png")));
        assert_eq!((record["width"].as_u64(), record["height"].as_u64()), (Some(w), Some(h)));
        let classes = record["classes"].as_array().unwrap();
        let names: Vec<&str> = classes.iter().map(|c| c["name"].as_str().unwrap()).collect();
        assert_eq!(names, ["background", "cat", "cup"]);
        assert_eq!(classes[0]["queries"], serde_json::json!([]));
        assert_eq!(classes[1]["queries"], serde_json::json!(["cat", "kitten"]));
        assert_eq!(record["background"]["index"], 0);
        assert!(record["background"]["rule"].as_str().unwrap().contains("prob_threshold"));

        let outputs = record["outputs"].as_object().unwrap();
        assert_eq!(outputs.keys().collect::<Vec<_>>(), ["mask", "overlay"]);
        for path in outputs.values() {
            assert!(Path::new(path.as_str().unwrap()).is_file(), "{path}");
        }
        let mask = read_mask(Path::new(outputs["mask"].as_str().unwrap()));
        assert_eq!(mask.dimensions(), (w as u32, h as u32));
        let total = (w * h) as f64;
        let mut sum = 0.0;
        for (index, class) in classes.iter().enumerate() {
            assert_eq!(class["index"], index);
            let fraction = class["fraction"].as_f64().unwrap();
            let count = mask.pixels().filter(|p| p.0[0] as usize == index).count() as f64;
            assert!((fraction - count / total).abs() < 1e-9, "class {index}: {fraction} vs {count}/{total}");
            assert!(class["color"].as_str().unwrap().starts_with('#'));
            sum += fraction;
        }
        assert!((sum - 1.0).abs() < 1e-9, "fractions sum to {sum}");
    }
}

#[test]
fn saved_probabilities_are_a_float32_classes_by_height_by_width_npy_whose_argmax_is_the_mask() {
    let out = TempDir::new().unwrap();
    let r = run(segment()
        .arg(image_fixture("coffee.png"))
        .args(["--labels", "cup,table,wall", "--save-probs"])
        .arg("-o")
        .arg(out.path()));
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(file_names(out.path()), set(&["coffee.mask.png", "coffee.overlay.png", "coffee.probs.npy"]));
    let (shape, probs) = read_npy(&out.path().join("coffee.probs.npy"));
    assert_eq!(shape, [4, 40, 60]);
    assert_eq!(probs.len(), 4 * 40 * 60);
    assert!(probs.iter().all(|p| (0.0..=1.0).contains(p)), "probabilities lie in [0, 1]");

    let mask = read_mask(&out.path().join("coffee.mask.png"));
    let plane = 40 * 60;
    let (mut clear, mut agree) = (0, 0);
    for (i, label) in mask.pixels().map(|p| p.0[0] as usize).enumerate() {
        let mut ranked: Vec<(usize, f32)> = (0..4).map(|c| (c, probs[c * plane + i])).collect();
        ranked.sort_by(|a, b| b.1.total_cmp(&a.1));
        if ranked[0].1 - ranked[1].1 > 1e-4 {
            clear += 1;
            agree += usize::from(ranked[0].0 == label);
        }
    }
    assert!(clear > plane / 2, "only {clear} of {plane} pixels have a clear winner");
    assert_eq!(agree, clear, "the mask is the argmax of the probabilities wherever it is clear");
}

#[test]
fn write_mask_writes_only_the_mask() {
    let out = TempDir::new().unwrap();
    let r = run(segment()
        .arg(image_fixture("coffee.png"))
        .args(["--labels", "cup", "--write", "mask"])
        .arg("-o")
        .arg(out.path()));
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(file_names(out.path()), set(&["coffee.mask.png"]));
}

#[test]
fn stdout_mask_writes_one_png_to_stdout_and_no_files() {
    let out = TempDir::new().unwrap();
    let r = run(segment()
        .arg(image_fixture("coffee.png"))
        .args(["--labels", "cup", "--stdout", "mask"])
        .current_dir(out.path()));
    assert_eq!(r.code, 0, "{}", r.stderr);
    let png = image::load_from_memory_with_format(&r.stdout, image::ImageFormat::Png).expect("a PNG on stdout");
    assert_eq!((png.width(), png.height()), (60, 40));
    assert!(matches!(png, DynamicImage::ImageLuma8(_)));
    assert!(file_names(out.path()).is_empty(), "{:?}", file_names(out.path()));
}

#[test]
fn stdout_png_with_two_inputs_is_a_usage_error() {
    let out = TempDir::new().unwrap();
    let r = run(segment()
        .arg(image_fixture("coffee.png"))
        .arg(image_fixture("cat.png"))
        .args(["--labels", "cup", "--stdout", "mask"])
        .current_dir(out.path()));
    assert_eq!(r.code, 2);
    assert!(r.stdout.is_empty());
    assert_error_lines(&r.stderr, &["--stdout", "2 inputs"]);
    assert!(file_names(out.path()).is_empty());
}

/// A folder with one good image and three that cannot be decoded.
fn batch_with_bad_files() -> TempDir {
    let dir = TempDir::new().unwrap();
    copy_image("coffee.png", &dir.path().join("good.png"));
    let png = fs::read(image_fixture("coffee.png")).unwrap();
    fs::write(dir.path().join("trunc.png"), &png[..png.len() / 2]).unwrap();
    fs::write(dir.path().join("notimage.jpg"), "hello, this is text\n").unwrap();
    fs::write(dir.path().join("empty.png"), "").unwrap();
    dir
}

#[test]
fn a_batch_goes_on_past_bad_files_reports_each_and_exits_1() {
    let inputs = batch_with_bad_files();
    let out = TempDir::new().unwrap();
    let r = run(segment().arg(inputs.path()).args(["--labels", "cup", "--write", "mask"]).arg("-o").arg(out.path()));
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert_eq!(file_names(out.path()), set(&["good.mask.png"]));
    for bad in ["trunc.png", "notimage.jpg", "empty.png"] {
        let line = r
            .stderr
            .lines()
            .find(|l| l.contains(bad))
            .unwrap_or_else(|| panic!("{bad} is not reported:\n{}", r.stderr));
        assert!(line.starts_with("sclip: error: "), "{line}");
    }
    assert!(r.stderr.contains("3 of 4 inputs failed"), "{}", r.stderr);
    assert!(r.stderr.contains("good.png (60x40)"), "{}", r.stderr);
}

#[test]
fn json_reports_failed_inputs_as_error_objects() {
    let inputs = batch_with_bad_files();
    let out = TempDir::new().unwrap();
    let r = run(segment()
        .arg(inputs.path())
        .args(["--labels", "cup", "--write", "mask", "--json"])
        .arg("-o")
        .arg(out.path()));
    assert_eq!(r.code, 1, "{}", r.stderr);
    let records = r.json();
    assert_eq!(records.len(), 4, "{}", r.stdout_text());
    let file = |record: &Value| {
        Path::new(record["input"].as_str().unwrap()).file_name().unwrap().to_string_lossy().into_owned()
    };
    let failed: BTreeSet<String> = records.iter().filter(|r| r.get("error").is_some()).map(file).collect();
    assert_eq!(failed, set(&["empty.png", "notimage.jpg", "trunc.png"]));
    for record in records.iter().filter(|r| r.get("error").is_some()) {
        let error = record["error"].as_str().unwrap();
        assert!(error.contains(&file(record)) && !error.contains('\n'), "{error}");
    }
    let done: Vec<&Value> = records.iter().filter(|r| r.get("classes").is_some()).collect();
    assert_eq!(done.len(), 1);
    assert_eq!(file(done[0]), "good.png");
}

#[test]
fn directory_inputs_include_subdirectories_only_with_recursive() {
    let inputs = TempDir::new().unwrap();
    copy_image("coffee.png", &inputs.path().join("top.png"));
    copy_image("coffee.png", &inputs.path().join("sub/inner.png"));
    fs::write(inputs.path().join("notes.txt"), "not an image, and not picked up").unwrap();

    let flat = TempDir::new().unwrap();
    let r = run(segment().arg(inputs.path()).args(["--labels", "cup", "--write", "mask"]).arg("-o").arg(flat.path()));
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(file_names(flat.path()), set(&["top.mask.png"]));

    let deep = TempDir::new().unwrap();
    let r =
        run(segment().arg(inputs.path()).args(["--labels", "cup", "--write", "mask", "-r"]).arg("-o").arg(deep.path()));
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(file_names(deep.path()), set(&["inner.mask.png", "top.mask.png"]));

    // Once only a subdirectory has images, a usage error that points at --recursive.
    fs::remove_file(inputs.path().join("top.png")).unwrap();
    let empty_out = TempDir::new().unwrap();
    let r =
        run(segment().arg(inputs.path()).args(["--labels", "cup", "--write", "mask"]).arg("-o").arg(empty_out.path()));
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert_error_lines(&r.stderr, &["no images", "--recursive"]);
}

#[test]
fn a_dash_reads_newline_separated_paths_from_stdin() {
    let inputs = TempDir::new().unwrap();
    let (a, b) = (inputs.path().join("with space.png"), inputs.path().join("second.png"));
    copy_image("coffee.png", &a);
    copy_image("coffee.png", &b);
    let out = TempDir::new().unwrap();
    let stdin = format!("{}\r\n\n{}\n", a.display(), b.display());
    let r = run(segment()
        .arg("-")
        .args(["--labels", "cup", "--write", "mask"])
        .arg("-o")
        .arg(out.path())
        .write_stdin(stdin));
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(file_names(out.path()), set(&["second.mask.png", "with space.mask.png"]));
}

#[cfg(unix)]
#[test]
fn a_dash_with_null_reads_nul_separated_paths_even_with_newlines_in_names() {
    let inputs = TempDir::new().unwrap();
    let (a, b) = (inputs.path().join("line\nbreak.png"), inputs.path().join("plain.png"));
    copy_image("coffee.png", &a);
    copy_image("coffee.png", &b);
    let out = TempDir::new().unwrap();
    let mut stdin = Vec::new();
    for path in [&a, &b] {
        stdin.extend_from_slice(path.as_os_str().as_encoded_bytes());
        stdin.push(0);
    }
    let r = run(segment()
        .args(["-", "-0", "--labels", "cup", "--write", "mask"])
        .arg("-o")
        .arg(out.path())
        .write_stdin(stdin));
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(file_names(out.path()), set(&["line\nbreak.mask.png", "plain.mask.png"]));
}

#[test]
fn skip_existing_leaves_finished_outputs_alone_and_redoes_unfinished_ones() {
    let inputs = TempDir::new().unwrap();
    copy_image("coffee.png", &inputs.path().join("a.png"));
    copy_image("coffee.png", &inputs.path().join("b.png"));
    let out = TempDir::new().unwrap();
    let go = || {
        let mut cmd = segment();
        cmd.arg(inputs.path()).args(["--labels", "cup", "--skip-existing"]).arg("-o").arg(out.path());
        run(&mut cmd)
    };
    let first = go();
    assert_eq!(first.code, 0, "{}", first.stderr);
    assert_eq!(file_names(out.path()).len(), 4);
    let mtime = |name: &str| fs::metadata(out.path().join(name)).unwrap().modified().unwrap();
    let before = (mtime("a.mask.png"), mtime("a.overlay.png"), mtime("b.overlay.png"));
    fs::remove_file(out.path().join("b.mask.png")).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(20));

    let second = go();
    assert_eq!(second.code, 0, "{}", second.stderr);
    assert!(second.stderr.contains("skipping 1 inputs"), "{}", second.stderr);
    assert!(!second.stderr.contains("a.png ("), "a.png was segmented again:\n{}", second.stderr);
    assert!(second.stderr.contains("b.png (60x40)"), "{}", second.stderr);
    assert_eq!((before.0, before.1), (mtime("a.mask.png"), mtime("a.overlay.png")), "a's outputs are untouched");
    assert!(out.path().join("b.mask.png").is_file(), "b's missing mask is written again");
    assert_ne!(before.2, mtime("b.overlay.png"), "b, unfinished, is done again in full");
}

#[test]
fn shards_together_cover_every_input_exactly_once() {
    let inputs = TempDir::new().unwrap();
    let names: Vec<String> = (0..6).map(|i| format!("p{i}")).collect();
    for name in &names {
        copy_image("coffee.png", &inputs.path().join(format!("{name}.png")));
    }
    let mut seen = Vec::new();
    for shard in ["1/2", "2/2"] {
        let out = TempDir::new().unwrap();
        let r = run(segment()
            .arg(inputs.path())
            .args(["--labels", "cup", "--write", "mask", "--shard", shard])
            .arg("-o")
            .arg(out.path()));
        assert_eq!(r.code, 0, "{}", r.stderr);
        seen.push(file_names(out.path()));
    }
    assert!(seen[0].is_disjoint(&seen[1]), "{seen:?}");
    let all: BTreeSet<String> = seen[0].union(&seen[1]).cloned().collect();
    assert_eq!(all, names.iter().map(|n| format!("{n}.mask.png")).collect::<BTreeSet<_>>());

    let r = run(segment().arg(inputs.path()).args(["--labels", "cup", "--shard", "3/2"]));
    assert_eq!(r.code, 2, "K > N is refused: {}", r.stderr);
}

#[test]
fn same_stems_in_different_directories_get_distinct_outputs() {
    let inputs = TempDir::new().unwrap();
    let (a, b) = (inputs.path().join("a/pic.png"), inputs.path().join("b/pic.png"));
    copy_image("coffee.png", &a);
    copy_image("cat.png", &b);
    let out = TempDir::new().unwrap();
    let r = run(segment().arg(&a).arg(&b).args(["--labels", "cup", "--json"]).arg("-o").arg(out.path()));
    assert_eq!(r.code, 0, "{}", r.stderr);
    let files = file_names(out.path());
    assert_eq!(files.len(), 4, "{files:?}");
    assert!(files.iter().all(|f| f.starts_with("pic-")), "{files:?}");
    // Each mask belongs to its own input.
    for record in r.json() {
        let mask = read_mask(Path::new(record["outputs"]["mask"].as_str().unwrap()));
        assert_eq!(mask.width() as u64, record["width"].as_u64().unwrap());
    }
}

#[test]
fn undecodable_files_fail_with_one_line_naming_the_file() {
    let dir = TempDir::new().unwrap();
    let png = fs::read(image_fixture("coffee.png")).unwrap();
    let cases: [(&str, &[u8]); 5] = [
        ("truncated.png", &png[..png.len() / 2]),
        ("header-only.png", &png[..40]),
        ("text.jpg", b"plain text, not a JPEG\n"),
        ("notes.txt", b"plain text with no image extension\n"),
        ("zero.png", b""),
    ];
    for (name, bytes) in cases {
        let path = dir.path().join(name);
        fs::write(&path, bytes).unwrap();
        let out = TempDir::new().unwrap();
        let r = run(segment().arg(&path).args(["--labels", "cup"]).arg("-o").arg(out.path()));
        assert_eq!(r.code, 1, "{name}: {}", r.stderr);
        assert_error_lines(&r.stderr, &[name]);
        assert!(file_names(out.path()).is_empty(), "{name}: {:?}", file_names(out.path()));
    }
}

#[test]
fn a_one_pixel_image_is_segmented() {
    let dir = TempDir::new().unwrap();
    let path = dir.path().join("dot.png");
    RgbImage::from_pixel(1, 1, Rgb([10, 200, 30])).save(&path).unwrap();
    let (size, decoded) = decoded_as(&path);
    assert_eq!(size, (1, 1));
    assert_eq!(decoded.get_pixel(0, 0).0, [10, 200, 30]);
}

#[test]
fn an_image_too_thin_for_one_patch_fails_alone_with_a_clear_message() {
    let dir = TempDir::new().unwrap();
    let path = dir.path().join("sliver.png");
    RgbImage::from_pixel(1, 3000, Rgb([0, 0, 0])).save(&path).unwrap();
    let out = TempDir::new().unwrap();
    let r = run(segment()
        .arg(&path)
        .arg(image_fixture("coffee.png"))
        .args(["--labels", "cup", "--write", "mask"])
        .arg("-o")
        .arg(out.path()));
    assert_eq!(r.code, 1, "{}", r.stderr);
    let line = r.stderr.lines().find(|l| l.contains("sliver.png")).expect("sliver.png is reported");
    assert!(line.starts_with("sclip: error: ") && line.contains("patch"), "{line}");
    assert_eq!(file_names(out.path()), set(&["coffee.mask.png"]));
}

#[test]
fn an_image_over_max_pixels_is_refused_naming_the_limit() {
    let out = TempDir::new().unwrap();
    let r = run(segment()
        .arg(image_fixture("cat.png"))
        .args(["--labels", "cat", "--max-pixels", "100"])
        .arg("-o")
        .arg(out.path()));
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert_error_lines(&r.stderr, &["cat.png", "10800", "100", "--max-pixels"]);
    assert!(file_names(out.path()).is_empty());

    let r = run(segment()
        .arg(image_fixture("cat.png"))
        .args(["--labels", "cat", "--max-pixels", "10800", "--write", "mask"])
        .arg("-o")
        .arg(out.path()));
    assert_eq!(r.code, 0, "exactly at the limit is allowed: {}", r.stderr);
}

#[test]
fn sixteen_bit_grey_and_rgba_pngs_are_read_as_8_bit_rgb() {
    let dir = TempDir::new().unwrap();
    let wide = dir.path().join("sixteen.png");
    ImageBuffer::<Rgb<u16>, Vec<u16>>::from_pixel(20, 10, Rgb([65535, 0, 0x8080])).save(&wide).unwrap();
    let grey = dir.path().join("grey.png");
    GrayImage::from_pixel(20, 10, Luma([77])).save(&grey).unwrap();
    let grey16 = dir.path().join("grey16.png");
    ImageBuffer::<Luma<u16>, Vec<u16>>::from_pixel(20, 10, Luma([0x4040])).save(&grey16).unwrap();
    let rgba = dir.path().join("rgba.png");
    RgbaImage::from_pixel(20, 10, Rgba([200, 100, 50, 0])).save(&rgba).unwrap();

    for (path, expected) in
        [(wide, [255, 0, 128]), (grey, [77, 77, 77]), (grey16, [64, 64, 64]), (rgba, [200, 100, 50])]
    {
        let (size, decoded) = decoded_as(&path);
        assert_eq!(size, (20, 10), "{}", path.display());
        assert_colour_near(&decoded, (10, 5), expected, 0);
    }
}

#[test]
fn an_animated_gif_is_read_from_its_first_frame() {
    let dir = TempDir::new().unwrap();
    let path = dir.path().join("anim.gif");
    {
        let file = fs::File::create(&path).unwrap();
        let mut encoder = image::codecs::gif::GifEncoder::new(file);
        let frames = [[255, 0, 0, 255], [0, 0, 255, 255]]
            .map(|colour| image::Frame::new(RgbaImage::from_pixel(24, 12, Rgba(colour))));
        encoder.encode_frames(frames).unwrap();
    }
    let (size, decoded) = decoded_as(&path);
    assert_eq!(size, (24, 12));
    assert_colour_near(&decoded, (12, 6), [255, 0, 0], 8);
}

/// A JPEG APP1 segment holding a big-endian TIFF structure with one IFD entry: Orientation.
fn exif_orientation_segment(orientation: u16) -> Vec<u8> {
    let mut tiff = Vec::new();
    tiff.extend_from_slice(b"MM\x00\x2a"); // big-endian TIFF magic
    tiff.extend_from_slice(&8u32.to_be_bytes()); // IFD0 right after this header
    tiff.extend_from_slice(&1u16.to_be_bytes()); // one entry
    tiff.extend_from_slice(&0x0112u16.to_be_bytes()); // tag: Orientation
    tiff.extend_from_slice(&3u16.to_be_bytes()); // type: SHORT
    tiff.extend_from_slice(&1u32.to_be_bytes()); // one value
    tiff.extend_from_slice(&orientation.to_be_bytes());
    tiff.extend_from_slice(&[0, 0]); // the value field is 4 bytes
    tiff.extend_from_slice(&0u32.to_be_bytes()); // no next IFD
    let payload = [b"Exif\0\0".as_slice(), &tiff].concat();
    let mut segment = vec![0xFF, 0xE1];
    segment.extend_from_slice(&(payload.len() as u16 + 2).to_be_bytes());
    segment.extend(payload);
    segment
}

#[test]
fn an_exif_rotated_jpeg_is_turned_upright() {
    // 32x16, left half red and right half blue; Orientation 6 means "rotate 90° clockwise to view",
    // so the upright image is 16x32 with red on top.
    let stored = RgbImage::from_fn(32, 16, |x, _| if x < 16 { Rgb([255, 0, 0]) } else { Rgb([0, 0, 255]) });
    let mut jpeg = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut jpeg, 95).encode_image(&stored).unwrap();
    assert_eq!(&jpeg[..2], [0xFF, 0xD8]);
    let jpeg = [&jpeg[..2], &exif_orientation_segment(6), &jpeg[2..]].concat();
    let dir = TempDir::new().unwrap();
    let path = dir.path().join("rotated.jpg");
    fs::write(&path, jpeg).unwrap();

    let (size, decoded) = decoded_as(&path);
    assert_eq!(size, (16, 32), "width and height are swapped");
    assert_colour_near(&decoded, (8, 4), [255, 0, 0], 40);
    assert_colour_near(&decoded, (8, 27), [0, 0, 255], 40);
}

#[test]
fn a_cmyk_jpeg_is_read_as_rgb() {
    // tests/fixtures/hostile/cmyk.jpg: 16x8 Adobe CMYK JPEG made with Pillow, left half pure cyan
    // (C=255), right half pure magenta (M=255).
    let (size, decoded) = decoded_as(&fixtures().join("hostile/cmyk.jpg"));
    assert_eq!(size, (16, 8));
    assert_colour_near(&decoded, (2, 4), [0, 255, 255], 24);
    assert_colour_near(&decoded, (13, 4), [255, 0, 255], 24);
}

#[cfg(unix)]
#[test]
fn a_file_name_that_is_not_utf8_is_processed_and_reported_readably() {
    use std::os::unix::ffi::OsStrExt;
    let dir = TempDir::new().unwrap();
    let good = dir.path().join(std::ffi::OsStr::from_bytes(b"caf\xe9.png"));
    copy_image("coffee.png", &good);
    let bad = dir.path().join(std::ffi::OsStr::from_bytes(b"bro\xffken.png"));
    fs::write(&bad, b"not a png").unwrap();
    let out = TempDir::new().unwrap();
    let r = run(segment()
        .arg(&good)
        .arg(&bad)
        .args(["--labels", "cup", "--write", "mask", "--json"])
        .arg("-o")
        .arg(out.path()));
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert_eq!(file_names(out.path()), set(&["caf\u{fffd}.mask.png"]));
    let records = r.json();
    assert_eq!(records.len(), 2);
    assert!(records[0]["input"].as_str().unwrap().ends_with("caf\u{fffd}.png"));
    assert!(records[1]["error"].as_str().unwrap().contains("bro\u{fffd}ken.png"), "{}", records[1]);
    let line = r.stderr.lines().next().unwrap();
    assert!(line.starts_with("sclip: error: ") && line.contains("bro\u{fffd}ken.png"), "{line}");
}

#[test]
fn bad_label_lists_are_usage_errors() {
    for (labels, message) in [
        ("", "label 1 of \"\" is empty"),
        ("   ", "is empty"),
        ("cat,,dog", "label 2"),
        ("cat,cat", "\"cat\" is given more than once"),
        ("cat,Cat", "given more than once"),
        ("cat,background", "\"background\" is given more than once"),
    ] {
        let out = TempDir::new().unwrap();
        let r = run(segment().arg(image_fixture("coffee.png")).args(["--labels", labels]).arg("-o").arg(out.path()));
        assert_eq!(r.code, 2, "{labels:?}: {}", r.stderr);
        assert_error_lines(&r.stderr, &[message]);
        assert!(file_names(out.path()).is_empty());
    }
}

#[test]
fn a_prompt_longer_than_77_tokens_is_a_usage_error_mentioning_tokens() {
    let long = vec!["word"; 100].join(" ");
    let out = TempDir::new().unwrap();
    let r = run(segment()
        .arg(image_fixture("coffee.png"))
        .args(["--labels", &format!("cup,{long}")])
        .arg("-o")
        .arg(out.path()));
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert_error_lines(&r.stderr, &["tokens", "77"]);
    assert!(file_names(out.path()).is_empty());
}

#[test]
fn a_missing_out_dir_is_a_usage_error_naming_it() {
    let parent = TempDir::new().unwrap();
    let missing = parent.path().join("nope");
    let r = run(segment().arg(image_fixture("coffee.png")).args(["--labels", "cup"]).arg("-o").arg(&missing));
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert_error_lines(&r.stderr, &[&missing.display().to_string(), "does not exist"]);
    assert!(!missing.exists(), "the directory is not created");
}

#[cfg(unix)]
#[test]
fn an_unwritable_out_dir_is_refused_before_any_work() {
    use std::os::unix::fs::PermissionsExt;
    let out = TempDir::new().unwrap();
    fs::set_permissions(out.path(), fs::Permissions::from_mode(0o555)).unwrap();
    let probe = out.path().join("probe");
    let privileged = fs::write(&probe, b"").is_ok();
    let _ = fs::remove_file(&probe);
    let r = run(segment().arg(image_fixture("coffee.png")).args(["--labels", "cup"]).arg("-o").arg(out.path()));
    fs::set_permissions(out.path(), fs::Permissions::from_mode(0o755)).unwrap();
    if privileged {
        // Root (as in CI containers) writes through mode 555, so sclip can and does too.
        assert_eq!(r.code, 0, "{}", r.stderr);
        assert_eq!(file_names(out.path()), set(&["coffee.mask.png", "coffee.overlay.png"]));
    } else {
        assert_eq!(r.code, 2, "{}", r.stderr);
        assert_error_lines(&r.stderr, &[&out.path().display().to_string(), "cannot write"]);
        assert!(file_names(out.path()).is_empty());
    }
}

#[test]
fn a_model_dir_with_only_a_pickle_checkpoint_is_refused_clearly() {
    let model = TempDir::new().unwrap();
    fs::write(model.path().join("pytorch_model.bin"), b"pickle").unwrap();
    fs::copy(model_dir().join("config.json"), model.path().join("config.json")).unwrap();
    let r = run(sclip()
        .arg("segment")
        .arg(image_fixture("coffee.png"))
        .args(["--labels", "cup"])
        .arg("--model")
        .arg(model.path()));
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert_error_lines(&r.stderr, &[&model.path().display().to_string(), "model.safetensors", "pickle"]);
}

#[test]
fn a_model_dir_without_a_tokenizer_is_refused_naming_the_file() {
    let model = TempDir::new().unwrap();
    for file in ["config.json", "model.safetensors"] {
        fs::copy(model_dir().join(file), model.path().join(file)).unwrap();
    }
    let r = run(sclip()
        .arg("segment")
        .arg(image_fixture("coffee.png"))
        .args(["--labels", "cup"])
        .arg("--model")
        .arg(model.path()));
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert_error_lines(&r.stderr, &["tokenizer.json", "missing"]);
}

#[test]
fn a_missing_model_dir_is_reported_as_a_missing_directory() {
    let parent = TempDir::new().unwrap();
    let missing = parent.path().join("no-such-model");
    let r = run(sclip()
        .arg("segment")
        .env("HF_HOME", parent.path())
        .arg(image_fixture("coffee.png"))
        .args(["--labels", "cup"])
        .arg("--model")
        .arg(&missing));
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert_error_lines(&r.stderr, &["no-such-model"]);
    let first = r.stderr.lines().next().unwrap_or_default().to_lowercase();
    assert!(["does not exist", "no such", "not a directory", "not found"].iter().any(|m| first.contains(m)), "{first}");
    assert!(!first.contains("hugging face cache") && !first.contains("huggingface.co"), "{first}");
}

#[test]
fn offline_with_an_uncached_hub_model_says_it_is_not_in_the_cache() {
    let home = TempDir::new().unwrap();
    let base = || {
        let mut cmd = sclip();
        cmd.env("HF_HOME", home.path()).env_remove("HF_HUB_OFFLINE");
        cmd.arg("segment").arg(image_fixture("coffee.png")).args([
            "--labels",
            "cup",
            "--model",
            "openai/clip-vit-base-patch16",
        ]);
        cmd
    };
    for r in [run(base().arg("--offline")), run(base().env("HF_HUB_OFFLINE", "1"))] {
        assert_eq!(r.code, 2, "{}", r.stderr);
        assert_error_lines(&r.stderr, &["openai/clip-vit-base-patch16", "offline", "cache"]);
        assert!(r.stderr.contains(&home.path().display().to_string()), "the cache searched is named: {}", r.stderr);
    }
    assert!(
        fs::read_dir(home.path()).unwrap().next().is_none()
            || !home.path().join("hub").join("models--openai--clip-vit-base-patch16").join("blobs").exists()
    );
}

#[test]
fn a_closed_stdout_ends_the_run_quietly() {
    let mut child = std::process::Command::new(assert_cmd::cargo::cargo_bin("sclip"))
        .arg("segment")
        .arg(image_fixture("coffee.png"))
        .arg(image_fixture("cat.png"))
        .arg(image_fixture("astronaut_tall.png"))
        .args(["--labels", "cup", "--json", "--write", "none", "--templates", "photo", "--model"])
        .arg(model_dir())
        .current_dir(std::env::temp_dir())
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take()); // like `| head -c0`: the reader is gone before anything is written
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_no_panic(&stderr);
    assert!(!stderr.contains("Broken pipe") && !stderr.contains("error"), "{stderr}");
    assert_eq!(output.status.code(), Some(0), "{stderr}");
}

#[test]
fn bash_completions_are_a_script_for_sclip() {
    let r = run(sclip().args(["completions", "bash"]));
    assert_eq!(r.code, 0, "{}", r.stderr);
    let script = r.stdout_text();
    assert!(script.contains("_sclip()") || script.contains("complete -F"), "{script}");
    assert!(script.contains("sclip") && script.contains("--labels") && script.contains("--skip-existing"));
}

#[test]
fn segment_help_explains_the_background_rule_and_exit_codes() {
    let r = run(sclip().args(["segment", "--help"]));
    assert_eq!(r.code, 0, "{}", r.stderr);
    let help = r.stdout_text();
    for needle in ["Background", "class 0", "--prob-threshold", "Exit status", "--labels-file", "--shard"] {
        assert!(help.contains(needle), "{needle:?} is not in the help:\n{help}");
    }
}

#[test]
fn preset_voc21_has_21_classes_with_its_first_line_as_class_0() {
    let out = TempDir::new().unwrap();
    let r = run(segment()
        .arg(image_fixture("coffee.png"))
        .args(["--preset", "voc21", "--json", "--write", "mask"])
        .arg("-o")
        .arg(out.path()));
    assert_eq!(r.code, 0, "{}", r.stderr);
    let record = &r.json()[0];
    let classes = record["classes"].as_array().unwrap();
    assert_eq!(classes.len(), 21);
    assert_eq!(classes[0]["name"], "sky", "SCLIP's VOC file starts with its background words");
    assert!(classes[0]["queries"].as_array().unwrap().iter().any(|q| q == "wall"));
    assert_eq!(classes[1]["name"], "aeroplane");
    assert_eq!(classes[1]["queries"], serde_json::json!(["aeroplane"]));
    assert!((record["background"]["prob_threshold"].as_f64().unwrap() - 0.1).abs() < 1e-6, "voc21's threshold");
    let mask = read_mask(Path::new(record["outputs"]["mask"].as_str().unwrap()));
    assert!(mask.pixels().all(|p| p.0[0] < 21));
}

#[test]
fn a_labels_file_in_sclip_format_keeps_synonyms_and_its_first_line_is_class_0() {
    let dir = TempDir::new().unwrap();
    let names = dir.path().join("names.txt");
    fs::write(&names, "background\nperson, man, woman\ncup\n\n").unwrap();
    let out = TempDir::new().unwrap();
    let r = run(segment()
        .arg(image_fixture("coffee.png"))
        .arg("--labels-file")
        .arg(&names)
        .args(["--json", "--write", "mask"])
        .arg("-o")
        .arg(out.path()));
    assert_eq!(r.code, 0, "{}", r.stderr);
    let classes = r.json()[0]["classes"].as_array().unwrap().clone();
    let names: Vec<&str> = classes.iter().map(|c| c["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["background", "person", "cup"]);
    assert_eq!(classes[0]["queries"], serde_json::json!(["background"]));
    assert_eq!(classes[1]["queries"], serde_json::json!(["person", "man", "woman"]));

    let missing = dir.path().join("missing.txt");
    let r =
        run(segment().arg(image_fixture("coffee.png")).arg("--labels-file").arg(&missing).arg("-o").arg(out.path()));
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert_error_lines(&r.stderr, &["missing.txt"]);
}
