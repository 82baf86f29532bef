//! Loading a model bundle: a good one is accepted with its codebooks read from the graphs; one
//! whose graphs disagree with the manifest is refused with the reason. No ONNX Runtime needed.

mod support;

use diptych::bundle::onnx::{FLOAT, ModelProto};
use diptych_service::bundle::{Bundle, BundleError};
use support::{Toy, decoder, encoder, manifest, write_bundle, write_toy};

fn refused(
    tamper: impl FnOnce(&mut diptych::manifest::Manifest, &mut ModelProto, &mut ModelProto),
) -> BundleError {
    let toy = Toy::default();
    let dir = tempfile::tempdir().unwrap();
    let (mut m, mut e, mut d) = (manifest(&toy), encoder(&toy), decoder(&toy));
    tamper(&mut m, &mut e, &mut d);
    write_bundle(dir.path(), &m, &e, &d);
    Bundle::load(dir.path()).expect_err("the bundle must be refused")
}

#[test]
fn a_consistent_bundle_loads_with_its_codebooks() {
    let toy = Toy::default();
    let dir = tempfile::tempdir().unwrap();
    write_toy(dir.path(), &toy);
    let bundle = Bundle::load(dir.path()).unwrap();
    assert_eq!(bundle.manifest.model_id, "toy-v1");
    let normal = &bundle.codebooks.normal;
    assert_eq!((normal.size, normal.dim), (toy.k, toy.d));
    // Vector 3 of the normal codebook holds values 12..16 × 0.01.
    let expected: Vec<f32> = (12..16).map(|i| i as f32 * 0.01).collect();
    assert_eq!(normal.vector(3), expected.as_slice());
    assert_eq!(bundle.codebooks.abnormal.vector(0)[1], 1.0 - 0.02);
}

#[test]
fn a_missing_folder_says_how_to_get_a_model() {
    let err = Bundle::load("/nonexistent/models/phantom-v1")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("--model") && err.contains("make train-default"),
        "{err}"
    );
}

#[test]
fn a_codebook_of_the_wrong_size_is_refused() {
    let err = refused(|m, _, _| m.codebook_size = 32);
    assert!(
        matches!(&err, BundleError::BadCodebook { name, problem, .. }
            if name == "codebook_normal" && problem.contains("16, 4") && problem.contains("32×4")),
        "{err}"
    );
}

#[test]
fn different_codebooks_in_encoder_and_decoder_are_refused() {
    let err = refused(|_, _, d| {
        let graph = d.graph.as_mut().unwrap();
        let book = graph
            .initializer
            .iter_mut()
            .find(|t| t.name() == "codebook_abnormal")
            .unwrap();
        book.raw_data.as_mut().unwrap()[0] ^= 0x40;
    });
    assert!(
        matches!(&err, BundleError::CodebooksDiffer { name, .. } if name == "codebook_abnormal"),
        "{err}"
    );
    assert!(err.to_string().contains("export them together"), "{err}");
}

#[test]
fn a_missing_codebook_initializer_is_refused() {
    let err = refused(|m, _, _| m.codebooks.abnormal = "codebook_lesion".to_string());
    assert!(
        matches!(&err, BundleError::MissingCodebook { name, file } if name == "codebook_lesion" && file == "encoder.onnx"),
        "{err}"
    );
}

#[test]
fn a_missing_output_is_refused_with_its_name() {
    let err = refused(|_, e, _| {
        e.graph
            .as_mut()
            .unwrap()
            .output
            .retain(|o| o.name() != "abnormality");
    });
    let text = err.to_string();
    assert!(
        text.contains("encoder.onnx") && text.contains("\"abnormality\""),
        "{text}"
    );
}

#[test]
fn a_fixed_batch_axis_is_refused() {
    let err = refused(|_, e, _| {
        let input = &mut e.graph.as_mut().unwrap().input[0];
        let shape = support::shape_mut(input);
        shape.dim[0] = support::dim_value(1);
    });
    assert!(err.to_string().contains("dynamic batch axis"), "{err}");
}

#[test]
fn an_input_size_the_manifest_does_not_imply_is_refused() {
    let err = refused(|m, _, _| m.preprocess.input_size = 64);
    let text = err.to_string();
    assert!(text.contains("\"image\"") && text.contains("64"), "{text}");
}

#[test]
fn the_segmentation_must_have_one_channel_per_abnormal_label() {
    let err = refused(|m, _, _| m.abnormal_labels.push("extra".to_string()));
    let text = err.to_string();
    assert!(
        text.contains("decoder.onnx") && text.contains("segmentation"),
        "{text}"
    );
}

#[test]
fn an_unexpected_input_or_a_wrong_type_is_refused() {
    let err = refused(|_, e, _| {
        e.graph
            .as_mut()
            .unwrap()
            .input
            .push(support::value("temperature", FLOAT, None));
    });
    assert!(err.to_string().contains("\"temperature\""), "{err}");

    let err = refused(|_, _, d| {
        let input = &mut d.graph.as_mut().unwrap().input[0];
        support::tensor_type_mut(input).elem_type = Some(FLOAT);
    });
    assert!(err.to_string().contains("int64"), "{err}");
}

#[test]
fn bytes_that_are_not_onnx_are_refused() {
    let toy = Toy::default();
    let dir = tempfile::tempdir().unwrap();
    write_toy(dir.path(), &toy);
    std::fs::write(
        dir.path().join("decoder.onnx"),
        b"\xff\xff\xff not protobuf",
    )
    .unwrap();
    // Keep the manifest's checksum honest so that the ONNX check is what refuses it.
    let mut m = diptych::manifest::Manifest::read(dir.path()).unwrap();
    m.decoder.sha256 = diptych::manifest::sha256_file(dir.path().join("decoder.onnx")).unwrap();
    m.write(dir.path()).unwrap();
    let err = Bundle::load(dir.path()).unwrap_err();
    assert!(
        matches!(err, BundleError::NotOnnx { ref file, .. } if file == "decoder.onnx"),
        "{err}"
    );
}

#[test]
fn a_modified_graph_fails_the_manifest_checksum() {
    let toy = Toy::default();
    let dir = tempfile::tempdir().unwrap();
    write_toy(dir.path(), &toy);
    let path = dir.path().join("encoder.onnx");
    let mut bytes = std::fs::read(&path).unwrap();
    bytes.push(0);
    std::fs::write(&path, bytes).unwrap();
    let err = Bundle::load(dir.path()).unwrap_err();
    assert!(matches!(err, BundleError::Manifest { .. }), "{err}");
    assert!(err.to_string().contains("SHA-256"), "{err}");
}
