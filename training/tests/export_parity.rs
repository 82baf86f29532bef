//! Export parity: a tiny network with non-trivial random weights is exported, both graphs are run
//! through ONNX Runtime on fresh phantom slices, and every output is compared with the tch
//! eval-mode forward pass (issue #2 §5): continuous outputs agree to 1e-4 of their range, code
//! indices on at least 99.9% of positions. The bundle's manifest must validate, its checksums
//! match, and the codebooks read back from the ONNX initializers equal the VarStore's.

mod export_fixture;

use diptych::bundle::names::{DECODER_FILE, ENCODER_FILE};
use diptych::manifest::Manifest;
use diptych_training::eval::runtime::BundleRunner;
use diptych_training::export::{BUNDLE_LIMIT_BYTES, read_initializer};
use export_fixture::{
    export_tiny, phantom_batch, phantom_pixels, require_ort, temp_dir, tiny_config, trained_tiny,
};
use tch::{Kind, Tensor};

/// Continuous outputs may differ by at most this fraction of the tch output's range.
const RELATIVE_TOLERANCE: f64 = 1e-4;
/// Code indices must agree on at least this share of positions.
const INDEX_AGREEMENT: f64 = 0.999;
/// Held-out slices compared (phantom seed 2; the train-mode passes used seed 1).
const SLICES: usize = 24;

fn floats(t: &Tensor) -> Vec<f32> {
    Vec::<f32>::try_from(t.to_kind(Kind::Float).contiguous().view([-1])).unwrap()
}

fn ints(t: &Tensor) -> Vec<i64> {
    Vec::<i64>::try_from(t.contiguous().view([-1])).unwrap()
}

/// Max-abs difference between two outputs, relative to the range of the reference (at least
/// `min_range`, so that an output that is nearly constant is not judged on noise).
fn relative_error(name: &str, reference: &[f32], onnx: &[f32], min_range: f64) -> f64 {
    assert_eq!(reference.len(), onnx.len(), "{name}: output sizes differ");
    let (lo, hi) = reference.iter().fold((f64::MAX, f64::MIN), |(lo, hi), &v| {
        (lo.min(v as f64), hi.max(v as f64))
    });
    let range = (hi - lo).max(min_range);
    let max_abs = reference
        .iter()
        .zip(onnx)
        .map(|(&a, &b)| (a as f64 - b as f64).abs())
        .fold(0.0, f64::max);
    let relative = max_abs / range;
    eprintln!("parity {name}: max-abs {max_abs:.3e}, range {range:.3e}, relative {relative:.3e}");
    assert!(
        relative <= RELATIVE_TOLERANCE,
        "{name}: ONNX differs from tch by {max_abs:e} = {relative:e} of its range {range:e} \
         (limit {RELATIVE_TOLERANCE:e})"
    );
    relative
}

fn agreement(name: &str, reference: &[i64], onnx: &[i64]) -> f64 {
    assert_eq!(reference.len(), onnx.len(), "{name}: output sizes differ");
    let same = reference.iter().zip(onnx).filter(|(a, b)| a == b).count();
    let share = same as f64 / reference.len() as f64;
    eprintln!(
        "parity {name}: {same}/{} positions agree ({:.4}%)",
        reference.len(),
        share * 100.0
    );
    assert!(
        share >= INDEX_AGREEMENT,
        "{name}: only {same}/{} indices agree (need {INDEX_AGREEMENT})",
        reference.len()
    );
    share
}

/// Two codes closer than this (in squared distance to a latent) count as a near tie.
const TIE_GAP: f64 = 1e-3;

/// The slices of z [N,D,h,w] on which every cell's nearest code of `codebook` [K,D] is nearer
/// by at least [`TIE_GAP`] than its second nearest.
fn tie_free_slices(z: &Tensor, codebook: &Tensor) -> Vec<usize> {
    let (n, d, _, _) = z.size4().unwrap();
    let flat = z.permute([0, 2, 3, 1]).reshape([n, -1, 1, d]);
    let distances = (flat - codebook.view([1, 1, -1, d]))
        .square()
        .sum_dim_intlist(-1, false, Kind::Float);
    let (sorted, _) = distances.sort(-1, false);
    let gap = sorted.select(-1, 1) - sorted.select(-1, 0);
    let smallest = floats(&gap.amin([1i64], false));
    let closest = smallest.iter().copied().fold(f32::MAX, f32::min);
    eprintln!("parity: the closest tie is {closest:.3e} apart (squared distance)");
    smallest
        .iter()
        .enumerate()
        .filter(|(_, g)| f64::from(**g) >= TIE_GAP)
        .map(|(i, _)| i)
        .collect()
}

#[test]
fn onnx_bundle_matches_tch_forward() {
    matches_tch_forward(&tiny_config(), "export-parity");
}

/// `model.seg_refine_convs` adds blocks to the segmentation decoder: the exporter must emit
/// every one of them, in order, or the bundle's segmentation (and so its abnormality score,
/// its null-code mask and x̂'s condition) differs from the network's.
#[test]
fn a_deeper_segmentation_decoder_exports_alike() {
    let mut config = tiny_config();
    config.model.seg_refine_convs = 2;
    let (vs, _) = trained_tiny(&config, 11);
    let refine = vs
        .variables()
        .keys()
        .filter(|k| k.contains("_refine") && k.ends_with(".conv.weight"))
        .count();
    assert_eq!(
        refine,
        2 * (config.model.downsamples + 1),
        "refine blocks built"
    );
    matches_tch_forward(&config, "export-parity-refine");
}

/// Trains the tiny network of `config` briefly, exports it and checks that ONNX Runtime's
/// encoder and decoder give what tch gives.
fn matches_tch_forward(config: &diptych_training::config::TrainConfig, name: &str) {
    require_ort();
    let (vs, net) = trained_tiny(config, 11);
    let dir = temp_dir(name);
    let exported = export_tiny(config, &vs, &dir);
    assert!(exported.bundle_bytes < BUNDLE_LIMIT_BYTES);

    let params = config.preprocess();
    let x = phantom_batch(2, 0, SLICES, &params);
    let reference = net.encode(&x);
    let mut runner = BundleRunner::open(&dir).expect("bundle opens in ONNX Runtime");
    let encoded = runner
        .encode(&phantom_pixels(2, 0, SLICES, &params))
        .expect("encoder runs");

    agreement(
        "normal_indices",
        &ints(&reference.idx_n),
        &encoded.normal_indices,
    );
    agreement(
        "abnormal_indices",
        &ints(&reference.idx_a),
        &encoded.abnormal_indices,
    );
    let distance = floats(&reference.abnormal_distance);
    assert!(
        distance.iter().any(|&d| d > 0.0),
        "a degenerate test: all distances are zero"
    );
    relative_error(
        "abnormal_distance",
        &distance,
        &encoded.abnormal_distance,
        1e-6,
    );
    // The abnormality score is defined on [0, 1]: its range is 1 however little it varies here.
    let abnormality = floats(&reference.abnormality);
    assert!(
        abnormality.iter().any(|&a| a > 0.0 && a < 1.0),
        "a degenerate test: every abnormality score is clamped ({abnormality:?})"
    );
    relative_error("abnormality", &abnormality, &encoded.abnormality, 1.0);
    let (z_n, z_a) = (floats(&reference.z_n), floats(&reference.z_a));
    relative_error("normal_latent", &z_n, &encoded.normal_latent, 1e-6);
    relative_error("abnormal_latent", &z_a, &encoded.abnormal_latent, 1e-6);

    // Decode the same indices on both sides, so that the decoder is judged on its own.
    let (idx_n, idx_a) = (ints(&reference.idx_n), ints(&reference.idx_a));
    let decoded_ref = net.decode(&reference.idx_n, &reference.idx_a);
    let decoded = runner.decode(&idx_n, &idx_a).expect("decoder runs");
    relative_error(
        "segmentation",
        &floats(&decoded_ref.seg_logits),
        &decoded.segmentation,
        1e-6,
    );
    relative_error(
        "reconstruction",
        &floats(&decoded_ref.recon),
        &decoded.reconstruction,
        1e-6,
    );
    relative_error(
        "normal_appearing",
        &floats(&decoded_ref.normal_appearing),
        &decoded.normal_appearing,
        1e-6,
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn bundle_manifest_validates_and_codebooks_read_back() {
    let config = tiny_config();
    let (vs, _net) = trained_tiny(&config, 12);
    let dir = temp_dir("export-manifest");
    let exported = export_tiny(&config, &vs, &dir);

    let manifest = Manifest::load(&dir).expect("the manifest validates and checksums match");
    assert_eq!(manifest, exported.manifest);
    assert_eq!(manifest.model_id, "tiny-test");
    assert_eq!(manifest.opset, 17);
    assert_eq!((manifest.grid.rows, manifest.grid.cols), (8, 8));
    assert_eq!((manifest.codebook_size, manifest.code_dim), (16, 4));
    assert_eq!(manifest.preprocess, config.preprocess());
    assert_eq!(manifest.abnormality_margin, 4.0);
    assert_eq!(manifest.abnormal_labels[0], "background");
    assert_eq!(manifest.training["seed"], 7);
    assert_eq!(manifest.training["config"]["model"]["input_size"], 32);
    assert_eq!(manifest.encoder.file, ENCODER_FILE);
    assert_eq!(manifest.decoder.file, DECODER_FILE);
    assert_eq!(
        manifest.encoder.sha256,
        diptych::manifest::sha256_file(dir.join(ENCODER_FILE)).unwrap()
    );

    let variables = vs.variables();
    for (path, name) in [
        ("quantizer_normal.codebook", &manifest.codebooks.normal),
        ("quantizer_abnormal.codebook", &manifest.codebooks.abnormal),
    ] {
        let expected = floats(&variables[path]);
        for file in [ENCODER_FILE, DECODER_FILE] {
            let (dims, values) = read_initializer(&dir.join(file), name).unwrap();
            assert_eq!(dims, [16, 4], "{file} {name}");
            assert_eq!(values, expected, "{file} {name} differs from {path}");
        }
    }

    // A bundle whose graph was altered after export is refused.
    let mut bytes = std::fs::read(dir.join(DECODER_FILE)).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    std::fs::write(dir.join(DECODER_FILE), bytes).unwrap();
    let err = Manifest::load(&dir).unwrap_err().to_string();
    assert!(err.contains("SHA-256"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn healthy_cells_take_the_null_code_in_onnx_as_in_tch() {
    require_ort();
    let mut config = tiny_config();
    config.model.null_outside_lesion = true;
    let (vs, net) = trained_tiny(&config, 11);
    let params = config.preprocess();
    let x = phantom_batch(2, 0, SLICES, &params);
    // Random weights may predict lesion everywhere or nowhere. Raise the background logit so
    // that only the most lesion-like 0.2–1 % of pixels are predicted as lesion: then there are
    // cells to null and cells to keep, whatever the weights. The threshold sits in the widest
    // gap between neighbouring margins there, so that no pixel is near a tie that rounding
    // could break differently in ONNX Runtime.
    let logits = tch::no_grad(|| net.forward_t(&x, false)).seg_logits;
    let labels = logits.size()[1];
    let lesion = logits.narrow(1, 1, labels - 1).amax([1i64], true);
    let margin = (lesion - logits.narrow(1, 0, 1)).flatten(0, -1);
    let sorted = Vec::<f32>::try_from(margin.sort(0, false).0).unwrap();
    let n = sorted.len();
    let (low, high) = (n * 990 / 1000, n * 998 / 1000);
    let at = (low..high)
        .max_by(|&a, &b| (sorted[a + 1] - sorted[a]).total_cmp(&(sorted[b + 1] - sorted[b])))
        .unwrap();
    let threshold = f64::from(sorted[at] + sorted[at + 1]) / 2.0;
    tch::no_grad(|| {
        let bias = &vs.variables()["seg_decoder.head.bias"];
        let _ = bias.narrow(0, 0, 1).g_add_scalar_(threshold);
    });
    let dir = temp_dir("export-null-outside-lesion");
    export_tiny(&config, &vs, &dir);

    // The forward pass quantises to the nearest code and masks nothing.
    let nearest = ints(&tch::no_grad(|| net.forward_t(&x, false)).idx_a);
    let reference = net.encode(&x);
    let masked = ints(&reference.idx_a);
    let mut runner = BundleRunner::open(&dir).expect("bundle opens in ONNX Runtime");
    let encoded = runner
        .encode(&phantom_pixels(2, 0, SLICES, &params))
        .expect("encoder runs");
    // One cell whose two nearest codes are a rounding error apart may take the other code in
    // ONNX Runtime; its new code moves the lesion the decoder draws around it, and so the mask
    // of several cells. Compare the slices on which no cell is that close to a tie.
    let codebook = &vs.variables()["quantizer_abnormal.codebook"];
    let clear = tie_free_slices(&reference.z_a, codebook);
    eprintln!(
        "parity: {}/{SLICES} slices have no near-tie cell",
        clear.len()
    );
    assert!(
        clear.len() * 2 >= SLICES,
        "a degenerate test: only {} of {SLICES} slices are free of near ties",
        clear.len()
    );
    let cells = masked.len() / SLICES;
    let on_clear = |all: &[i64]| -> Vec<i64> {
        clear
            .iter()
            .flat_map(|&i| all[i * cells..(i + 1) * cells].to_vec())
            .collect()
    };
    let (nearest, masked) = (on_clear(&nearest), on_clear(&masked));
    agreement(
        "abnormal_indices",
        &masked,
        &on_clear(&encoded.abnormal_indices),
    );

    let nulled = nearest
        .iter()
        .zip(&masked)
        .filter(|(n, m)| n != m)
        .inspect(|(_, m)| assert_eq!(**m, 0, "a masked cell takes the null code"))
        .count();
    let kept = nearest
        .iter()
        .zip(&masked)
        .filter(|(n, m)| n == m && **n != 0)
        .count();
    assert!(
        nulled > 0 && kept > 0,
        "a degenerate test: {nulled} cells nulled, {kept} non-null cells kept"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
