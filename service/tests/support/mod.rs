//! A toy model bundle for tests: small ONNX graphs that honour the bundle contract (names,
//! types, shapes, codebook initializers) with arithmetic simple enough to predict.
//!
//! Encoder: p = average of each (S/h)×(S/w) block of the image;
//! normal index = ⌊p·(K−1)⌋, abnormal index = ⌊(1−p)·(K−1)⌋, abnormal distance = p,
//! abnormality = mean of p. Decoder: reconstruction = normal-appearing = normal index/(K−1)
//! upsampled (nearest); segmentation logit of label c = −(a − c/(L−1))² with a the upsampled
//! abnormal index/(K−1).

#![allow(dead_code)]

use std::path::Path;

use diptych::bundle::onnx::{
    AttributeProto, FLOAT, GraphProto, INT64, ModelProto, NodeProto, OperatorSetIdProto,
    TensorProto, TensorShapeProto, TypeProto, ValueInfoProto, tensor_shape_proto, type_proto,
};
use diptych::manifest::{CodebookNames, GraphFile, Grid, Manifest, sha256_file};
use diptych::preprocess::PreprocessParams;

/// One axis of a declared shape.
pub type DimensionProto = tensor_shape_proto::Dimension;
use prost::Message;

/// Sizes of a toy bundle.
#[derive(Debug, Clone, Copy)]
pub struct Toy {
    /// Model input side S.
    pub size: usize,
    /// Grid side (h = w).
    pub grid: usize,
    /// Codebook size K.
    pub k: usize,
    /// Code dimension D.
    pub d: usize,
    /// Whether graph outputs declare their shapes.
    pub declare_output_shapes: bool,
}

impl Default for Toy {
    fn default() -> Self {
        Self {
            size: 32,
            grid: 4,
            k: 16,
            d: 4,
            declare_output_shapes: true,
        }
    }
}

pub const LABELS: usize = 4;

/// The tensor type of a graph input or output, for tests that corrupt it.
pub fn tensor_type_mut(value: &mut ValueInfoProto) -> &mut type_proto::Tensor {
    match value.r#type.as_mut().unwrap().value.as_mut().unwrap() {
        type_proto::Value::TensorType(tensor) => tensor,
        _ => panic!("not a tensor"),
    }
}

/// The declared shape of a graph input or output, for tests that corrupt it.
pub fn shape_mut(value: &mut ValueInfoProto) -> &mut TensorShapeProto {
    tensor_type_mut(value).shape.as_mut().unwrap()
}

/// A fixed axis of size `v`.
pub fn dim_value(v: usize) -> DimensionProto {
    DimensionProto {
        value: Some(tensor_shape_proto::dimension::Value::DimValue(v as i64)),
        ..Default::default()
    }
}

fn dim_param(name: &str) -> DimensionProto {
    DimensionProto {
        value: Some(tensor_shape_proto::dimension::Value::DimParam(
            name.to_string(),
        )),
        ..Default::default()
    }
}

pub fn value(name: &str, elem_type: i32, dims: Option<Vec<DimensionProto>>) -> ValueInfoProto {
    ValueInfoProto {
        name: Some(name.to_string()),
        r#type: Some(TypeProto {
            value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                elem_type: Some(elem_type),
                shape: dims.map(|dim| TensorShapeProto { dim }),
            })),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn node(op: &str, inputs: &[&str], outputs: &[&str], attributes: Vec<AttributeProto>) -> NodeProto {
    NodeProto {
        input: inputs.iter().map(|s| s.to_string()).collect(),
        output: outputs.iter().map(|s| s.to_string()).collect(),
        name: Some(format!("{op}_{}", outputs[0])),
        op_type: Some(op.to_string()),
        attribute: attributes,
        ..Default::default()
    }
}

fn ints(name: &str, values: &[i64]) -> AttributeProto {
    AttributeProto {
        name: Some(name.to_string()),
        ints: values.to_vec(),
        r#type: Some(7),
        ..Default::default()
    }
}

fn int(name: &str, value: i64) -> AttributeProto {
    AttributeProto {
        name: Some(name.to_string()),
        i: Some(value),
        r#type: Some(2),
        ..Default::default()
    }
}

fn string(name: &str, value: &str) -> AttributeProto {
    AttributeProto {
        name: Some(name.to_string()),
        s: Some(value.as_bytes().to_vec()),
        r#type: Some(3),
        ..Default::default()
    }
}

pub fn float_tensor(name: &str, dims: &[i64], values: &[f32]) -> TensorProto {
    TensorProto {
        dims: dims.to_vec(),
        data_type: Some(FLOAT),
        raw_data: Some(values.iter().flat_map(|v| v.to_le_bytes()).collect()),
        name: Some(name.to_string()),
        ..Default::default()
    }
}

fn int64_tensor(name: &str, dims: &[i64], values: &[i64]) -> TensorProto {
    TensorProto {
        dims: dims.to_vec(),
        data_type: Some(INT64),
        int64_data: values.to_vec(),
        name: Some(name.to_string()),
        ..Default::default()
    }
}

/// The codebook initializers of a toy bundle (distinct, predictable values).
pub fn codebooks(toy: &Toy) -> Vec<TensorProto> {
    let normal: Vec<f32> = (0..toy.k * toy.d).map(|i| i as f32 * 0.01).collect();
    let abnormal: Vec<f32> = (0..toy.k * toy.d).map(|i| 1.0 - i as f32 * 0.02).collect();
    let dims = [toy.k as i64, toy.d as i64];
    vec![
        float_tensor("codebook_normal", &dims, &normal),
        float_tensor("codebook_abnormal", &dims, &abnormal),
    ]
}

fn model(graph: GraphProto) -> ModelProto {
    ModelProto {
        ir_version: Some(8),
        producer_name: Some("diptych-service tests".to_string()),
        graph: Some(graph),
        opset_import: vec![OperatorSetIdProto {
            domain: Some(String::new()),
            version: Some(17),
        }],
        ..Default::default()
    }
}

/// The toy encoder graph.
pub fn encoder(toy: &Toy) -> ModelProto {
    let (s, g) = (toy.size, toy.grid);
    let block = (s / g) as i64;
    let km1 = (toy.k - 1) as f32;
    let grid_dims = || {
        toy.declare_output_shapes
            .then(|| vec![dim_param("N"), dim_value(g), dim_value(g)])
    };
    let mut initializer = codebooks(toy);
    initializer.push(int64_tensor("axes1", &[1], &[1]));
    initializer.push(float_tensor("k_minus_1", &[], &[km1]));
    initializer.push(float_tensor("one", &[], &[1.0]));
    model(GraphProto {
        name: Some("toy_encoder".to_string()),
        node: vec![
            node(
                "AveragePool",
                &["image"],
                &["pooled"],
                vec![
                    ints("kernel_shape", &[block, block]),
                    ints("strides", &[block, block]),
                ],
            ),
            node("Squeeze", &["pooled", "axes1"], &["p"], vec![]),
            node("Mul", &["p", "k_minus_1"], &["scaled"], vec![]),
            node(
                "Cast",
                &["scaled"],
                &["normal_indices"],
                vec![int("to", INT64 as i64)],
            ),
            node("Sub", &["one", "p"], &["q"], vec![]),
            node("Mul", &["q", "k_minus_1"], &["q_scaled"], vec![]),
            node(
                "Cast",
                &["q_scaled"],
                &["abnormal_indices"],
                vec![int("to", INT64 as i64)],
            ),
            node("Identity", &["p"], &["abnormal_distance"], vec![]),
            node(
                "ReduceMean",
                &["p"],
                &["abnormality"],
                vec![ints("axes", &[1, 2]), int("keepdims", 0)],
            ),
        ],
        initializer,
        input: vec![value(
            "image",
            FLOAT,
            Some(vec![
                dim_param("N"),
                dim_value(1),
                dim_value(s),
                dim_value(s),
            ]),
        )],
        output: vec![
            value("normal_indices", INT64, grid_dims()),
            value("abnormal_indices", INT64, grid_dims()),
            value("abnormal_distance", FLOAT, grid_dims()),
            value(
                "abnormality",
                FLOAT,
                toy.declare_output_shapes.then(|| vec![dim_param("N")]),
            ),
        ],
        ..Default::default()
    })
}

/// The toy decoder graph.
pub fn decoder(toy: &Toy) -> ModelProto {
    let (s, g) = (toy.size, toy.grid);
    let factor = (s / g) as f32;
    let km1 = (toy.k - 1) as f32;
    let image_dims = |c: usize| {
        toy.declare_output_shapes
            .then(|| vec![dim_param("N"), dim_value(c), dim_value(s), dim_value(s)])
    };
    let centers: Vec<f32> = (0..LABELS)
        .map(|c| c as f32 / (LABELS - 1) as f32)
        .collect();
    let mut initializer = codebooks(toy);
    initializer.push(int64_tensor("axes1", &[1], &[1]));
    initializer.push(float_tensor("k_minus_1", &[], &[km1]));
    initializer.push(float_tensor("scales", &[4], &[1.0, 1.0, factor, factor]));
    initializer.push(float_tensor("centers", &[1, LABELS as i64, 1, 1], &centers));
    let nearest = || vec![string("mode", "nearest")];
    let code_dims = || Some(vec![dim_param("N"), dim_value(g), dim_value(g)]);
    model(GraphProto {
        name: Some("toy_decoder".to_string()),
        node: vec![
            node(
                "Cast",
                &["normal_indices"],
                &["nf"],
                vec![int("to", FLOAT as i64)],
            ),
            node("Div", &["nf", "k_minus_1"], &["nv"], vec![]),
            node("Unsqueeze", &["nv", "axes1"], &["nv4"], vec![]),
            node(
                "Resize",
                &["nv4", "", "scales"],
                &["reconstruction"],
                nearest(),
            ),
            node(
                "Identity",
                &["reconstruction"],
                &["normal_appearing"],
                vec![],
            ),
            node(
                "Cast",
                &["abnormal_indices"],
                &["af"],
                vec![int("to", FLOAT as i64)],
            ),
            node("Div", &["af", "k_minus_1"], &["av"], vec![]),
            node("Unsqueeze", &["av", "axes1"], &["av4"], vec![]),
            node("Resize", &["av4", "", "scales"], &["a_up"], nearest()),
            node("Sub", &["a_up", "centers"], &["diff"], vec![]),
            node("Mul", &["diff", "diff"], &["sq"], vec![]),
            node("Neg", &["sq"], &["segmentation"], vec![]),
        ],
        initializer,
        input: vec![
            value("normal_indices", INT64, code_dims()),
            value("abnormal_indices", INT64, code_dims()),
        ],
        output: vec![
            value("segmentation", FLOAT, image_dims(LABELS)),
            value("reconstruction", FLOAT, image_dims(1)),
            value("normal_appearing", FLOAT, image_dims(1)),
        ],
        ..Default::default()
    })
}

/// The manifest of a toy bundle (checksums filled in by [`write_bundle`]).
pub fn manifest(toy: &Toy) -> Manifest {
    Manifest {
        format_version: 1,
        model_id: "toy-v1".to_string(),
        preprocess: PreprocessParams {
            input_size: toy.size,
            ..PreprocessParams::default()
        },
        grid: Grid {
            rows: toy.grid,
            cols: toy.grid,
        },
        codebook_size: toy.k,
        code_dim: toy.d,
        normal_labels: diptych::phantom::NORMAL_LABELS
            .iter()
            .map(|s| s.to_string())
            .collect(),
        abnormal_labels: diptych::phantom::ABNORMAL_LABELS
            .iter()
            .map(|s| s.to_string())
            .collect(),
        abnormality_margin: 0.5,
        opset: 17,
        encoder: GraphFile {
            file: "encoder.onnx".to_string(),
            sha256: String::new(),
        },
        decoder: GraphFile {
            file: "decoder.onnx".to_string(),
            sha256: String::new(),
        },
        codebooks: CodebookNames::default(),
        training: serde_json::json!({"recipe": "toy graphs written by the service tests"}),
        combined_balance: 1.0,
        encoder_int8: None,
    }
}

/// Writes a bundle into `dir`: the two graphs and a manifest with their checksums.
pub fn write_bundle(dir: &Path, manifest: &Manifest, encoder: &ModelProto, decoder: &ModelProto) {
    std::fs::create_dir_all(dir).unwrap();
    let mut manifest = manifest.clone();
    for (graph, file) in [
        (encoder, &mut manifest.encoder),
        (decoder, &mut manifest.decoder),
    ] {
        let path = dir.join(&file.file);
        std::fs::write(&path, graph.encode_to_vec()).unwrap();
        file.sha256 = sha256_file(&path).unwrap();
    }
    manifest.write(dir).unwrap();
}

/// Writes the default toy bundle into `dir`.
pub fn write_toy(dir: &Path, toy: &Toy) {
    write_bundle(dir, &manifest(toy), &encoder(toy), &decoder(toy));
}
