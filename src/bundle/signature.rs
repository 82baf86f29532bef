//! Signatures: the names, element types and shapes of each graph's inputs and outputs, derived
//! from the sizes a manifest (or, at export, the model configuration) gives.
//!
//! The exporter declares exactly these values; the service checks a bundle's graphs against
//! them before loading it. A declared axis is checked when the graph states it: the batch axis
//! must be dynamic, the other axes must equal what the sizes imply. Axes a graph leaves unknown
//! are verified by the service's warm-up run, which sees real output shapes.

use thiserror::Error;

use super::names::{
    ABNORMAL_DISTANCE, ABNORMAL_INDICES, ABNORMAL_LATENT, ABNORMALITY, BATCH_AXIS, IMAGE,
    NORMAL_APPEARING, NORMAL_INDICES, NORMAL_LATENT, RECONSTRUCTION, SEGMENTATION,
};
use super::onnx::{
    FLOAT, GraphProto, INT64, TensorShapeProto, TypeProto, ValueInfoProto, tensor_shape_proto,
    type_proto,
};
use crate::manifest::Manifest;

/// One axis of a declared shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Axis {
    /// The dynamic batch axis, left symbolic (`N`) so any batch size runs.
    Batch,
    /// An axis of fixed size.
    Fixed(usize),
}

/// The element type of a graph input or output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Elem {
    /// 32-bit float (images, logits, distances).
    F32,
    /// 64-bit integer (code indices).
    I64,
}

impl Elem {
    /// The ONNX `TensorProto.DataType` value.
    pub fn onnx(self) -> i32 {
        match self {
            Elem::F32 => FLOAT,
            Elem::I64 => INT64,
        }
    }
}

/// One value a graph declares: its name, element type and axes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValueSpec {
    /// Its ONNX name (one of [`super::names`]).
    pub name: &'static str,
    /// Its element type.
    pub elem: Elem,
    /// Its axes.
    pub axes: Vec<Axis>,
}

impl ValueSpec {
    fn new(name: &'static str, elem: Elem, axes: &[Axis]) -> Self {
        Self {
            name,
            elem,
            axes: axes.to_vec(),
        }
    }

    /// The ONNX declaration of this value (a graph input or output).
    pub fn value_info(&self) -> ValueInfoProto {
        value_info(self.name, self.elem, &self.axes)
    }

    /// The axes with the batch axis set to `n`: the shape of a batch of n.
    pub fn shape(&self, n: usize) -> Vec<usize> {
        self.axes
            .iter()
            .map(|a| match a {
                Axis::Batch => n,
                Axis::Fixed(size) => *size,
            })
            .collect()
    }
}

/// The ONNX declaration of a tensor value `name` of `elem` with `axes` (the batch axis named
/// [`BATCH_AXIS`]).
pub fn value_info(name: &str, elem: Elem, axes: &[Axis]) -> ValueInfoProto {
    let dim = axes
        .iter()
        .map(|axis| tensor_shape_proto::Dimension {
            value: Some(match axis {
                Axis::Batch => tensor_shape_proto::dimension::Value::DimParam(BATCH_AXIS.into()),
                Axis::Fixed(n) => tensor_shape_proto::dimension::Value::DimValue(*n as i64),
            }),
            ..Default::default()
        })
        .collect();
    ValueInfoProto {
        name: Some(name.to_string()),
        r#type: Some(TypeProto {
            value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                elem_type: Some(elem.onnx()),
                shape: Some(TensorShapeProto { dim }),
            })),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The sizes the signatures depend on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sizes {
    /// Model input side S.
    pub input_size: usize,
    /// Code grid rows h.
    pub grid_rows: usize,
    /// Code grid columns w.
    pub grid_cols: usize,
    /// Code dimension D.
    pub code_dim: usize,
    /// Number of abnormal labels L.
    pub labels: usize,
}

impl Sizes {
    /// The sizes a manifest states.
    pub fn of(manifest: &Manifest) -> Self {
        Self {
            input_size: manifest.input_size(),
            grid_rows: manifest.grid.rows,
            grid_cols: manifest.grid.cols,
            code_dim: manifest.code_dim,
            labels: manifest.abnormal_labels.len(),
        }
    }
}

/// What one graph takes and gives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signature {
    /// The inputs, exactly: a graph may not take another (nothing would feed it).
    pub inputs: Vec<ValueSpec>,
    /// The outputs every bundle has.
    pub outputs: Vec<ValueSpec>,
    /// Outputs the exporter writes but older bundles lack (checked only where present).
    pub optional_outputs: Vec<ValueSpec>,
}

impl Signature {
    /// `encoder.onnx`: [`IMAGE`] → code indices, abnormal distance and abnormality, plus the
    /// continuous latents (optional).
    pub fn encoder(sizes: &Sizes) -> Self {
        use Axis::{Batch, Fixed};
        let s = sizes.input_size;
        let grid = [Batch, Fixed(sizes.grid_rows), Fixed(sizes.grid_cols)];
        let latent = [
            Batch,
            Fixed(sizes.code_dim),
            Fixed(sizes.grid_rows),
            Fixed(sizes.grid_cols),
        ];
        Self {
            inputs: vec![ValueSpec::new(
                IMAGE,
                Elem::F32,
                &[Batch, Fixed(1), Fixed(s), Fixed(s)],
            )],
            outputs: vec![
                ValueSpec::new(NORMAL_INDICES, Elem::I64, &grid),
                ValueSpec::new(ABNORMAL_INDICES, Elem::I64, &grid),
                ValueSpec::new(ABNORMAL_DISTANCE, Elem::F32, &grid),
                ValueSpec::new(ABNORMALITY, Elem::F32, &[Batch]),
            ],
            optional_outputs: vec![
                ValueSpec::new(NORMAL_LATENT, Elem::F32, &latent),
                ValueSpec::new(ABNORMAL_LATENT, Elem::F32, &latent),
            ],
        }
    }

    /// `decoder.onnx`: both code indices → segmentation logits, reconstruction and the
    /// normal-appearing image.
    pub fn decoder(sizes: &Sizes) -> Self {
        use Axis::{Batch, Fixed};
        let s = sizes.input_size;
        let grid = [Batch, Fixed(sizes.grid_rows), Fixed(sizes.grid_cols)];
        let image = |channels| [Batch, Fixed(channels), Fixed(s), Fixed(s)];
        Self {
            inputs: vec![
                ValueSpec::new(NORMAL_INDICES, Elem::I64, &grid),
                ValueSpec::new(ABNORMAL_INDICES, Elem::I64, &grid),
            ],
            outputs: vec![
                ValueSpec::new(SEGMENTATION, Elem::F32, &image(sizes.labels)),
                ValueSpec::new(RECONSTRUCTION, Elem::F32, &image(1)),
                ValueSpec::new(NORMAL_APPEARING, Elem::F32, &image(1)),
            ],
            optional_outputs: Vec::new(),
        }
    }

    /// The input called `name`.
    ///
    /// # Panics
    /// If the signature has no such input (a programming error: names come from
    /// [`super::names`]).
    pub fn input(&self, name: &str) -> &ValueSpec {
        self.inputs
            .iter()
            .find(|v| v.name == name)
            .unwrap_or_else(|| panic!("the signature has no input {name:?}"))
    }

    /// The output called `name`, required or optional.
    ///
    /// # Panics
    /// If the signature has no such output (a programming error: names come from
    /// [`super::names`]).
    pub fn output(&self, name: &str) -> &ValueSpec {
        self.all_outputs()
            .find(|v| v.name == name)
            .unwrap_or_else(|| panic!("the signature has no output {name:?}"))
    }

    /// Every output the exporter writes: the required ones, then the optional ones.
    pub fn all_outputs(&self) -> impl Iterator<Item = &ValueSpec> {
        self.outputs.iter().chain(&self.optional_outputs)
    }

    /// Checks that `graph` (from `file`) declares exactly these inputs and at least the required
    /// outputs, each with a compatible type and shape (optional outputs are checked where
    /// present).
    pub fn check(&self, graph: &GraphProto, file: &str) -> Result<(), SignatureError> {
        let refuse = |problem: String| SignatureError {
            file: file.to_string(),
            problem,
        };
        // Before IR 4, initializers also appear as graph inputs; nothing feeds them.
        let fed: Vec<&ValueInfoProto> = graph
            .input
            .iter()
            .filter(|i| !graph.initializer.iter().any(|t| t.name() == i.name()))
            .collect();
        for value in &fed {
            if !self.inputs.iter().any(|e| e.name == value.name()) {
                return Err(refuse(format!(
                    "has an input {:?} that the service does not feed; expected inputs: {}",
                    value.name(),
                    names(&self.inputs)
                )));
            }
        }
        for expected in &self.inputs {
            let value = fed
                .iter()
                .find(|v| v.name() == expected.name)
                .ok_or_else(|| {
                    refuse(format!(
                        "has no input {:?}; expected inputs: {}",
                        expected.name,
                        names(&self.inputs)
                    ))
                })?;
            check_value(value, expected, "input").map_err(&refuse)?;
        }
        for expected in &self.outputs {
            let value = graph
                .output
                .iter()
                .find(|v| v.name() == expected.name)
                .ok_or_else(|| {
                    refuse(format!(
                        "has no output {:?}; expected outputs: {}",
                        expected.name,
                        names(&self.outputs)
                    ))
                })?;
            check_value(value, expected, "output").map_err(&refuse)?;
        }
        for expected in &self.optional_outputs {
            if let Some(value) = graph.output.iter().find(|v| v.name() == expected.name) {
                check_value(value, expected, "output").map_err(&refuse)?;
            }
        }
        Ok(())
    }
}

/// A graph that does not declare what its [`Signature`] says.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{file} disagrees with manifest.json: {problem}")]
pub struct SignatureError {
    /// The graph file name.
    pub file: String,
    /// What disagrees, naming the value and what it must be.
    pub problem: String,
}

fn names(values: &[ValueSpec]) -> String {
    values.iter().map(|e| e.name).collect::<Vec<_>>().join(", ")
}

fn check_value(value: &ValueInfoProto, expected: &ValueSpec, role: &str) -> Result<(), String> {
    let Some(tensor) = value.r#type.as_ref().and_then(TypeProto::tensor) else {
        return Err(format!("{role} {:?} is not a tensor", expected.name));
    };
    let want_type = expected.elem.onnx();
    if tensor.elem_type() != want_type {
        return Err(format!(
            "{role} {:?} has element type {} but must be {} ({want_type})",
            expected.name,
            type_name(tensor.elem_type()),
            type_name(want_type),
        ));
    }
    let Some(shape) = &tensor.shape else {
        return Ok(()); // unknown shape: the service's warm-up run checks it
    };
    let want: Vec<String> = expected.axes.iter().map(axis_text).collect();
    if shape.dim.len() != expected.axes.len() {
        return Err(format!(
            "{role} {:?} has {} axes but must have {} [{}]",
            expected.name,
            shape.dim.len(),
            expected.axes.len(),
            want.join(", ")
        ));
    }
    for (i, (dim, axis)) in shape.dim.iter().zip(&expected.axes).enumerate() {
        let fixed = match dim.value {
            Some(tensor_shape_proto::dimension::Value::DimValue(n)) => Some(n),
            _ => None,
        };
        match (axis, fixed) {
            (Axis::Batch, Some(n)) => {
                return Err(format!(
                    "{role} {:?} fixes its batch axis at {n}; export it with a dynamic batch \
                     axis so requests can be batched",
                    expected.name
                ));
            }
            (Axis::Fixed(want_n), Some(n)) if n != *want_n as i64 => {
                return Err(format!(
                    "{role} {:?} has size {n} on axis {i} but the manifest implies {want_n} \
                     (expected [{}])",
                    expected.name,
                    want.join(", ")
                ));
            }
            _ => {}
        }
    }
    Ok(())
}

fn axis_text(axis: &Axis) -> String {
    match axis {
        Axis::Batch => BATCH_AXIS.to_string(),
        Axis::Fixed(n) => n.to_string(),
    }
}

fn type_name(elem_type: i32) -> &'static str {
    match elem_type {
        FLOAT => "float32",
        INT64 => "int64",
        2 => "uint8",
        6 => "int32",
        10 => "float16",
        11 => "float64",
        _ => "another type",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sizes() -> Sizes {
        Sizes {
            input_size: 32,
            grid_rows: 4,
            grid_cols: 4,
            code_dim: 8,
            labels: 4,
        }
    }

    fn graph(signature: &Signature) -> GraphProto {
        GraphProto {
            input: signature.inputs.iter().map(ValueSpec::value_info).collect(),
            output: signature.all_outputs().map(ValueSpec::value_info).collect(),
            ..Default::default()
        }
    }

    #[test]
    fn a_graph_declaring_its_signature_passes_and_older_bundles_may_lack_the_latents() {
        let encoder = Signature::encoder(&sizes());
        encoder.check(&graph(&encoder), "encoder.onnx").unwrap();
        let mut old = graph(&encoder);
        old.output.retain(|o| !o.name().ends_with("_latent"));
        encoder.check(&old, "encoder.onnx").unwrap();
        let decoder = Signature::decoder(&sizes());
        decoder.check(&graph(&decoder), "decoder.onnx").unwrap();
    }

    #[test]
    fn a_wrong_latent_or_a_fixed_batch_is_named() {
        let encoder = Signature::encoder(&sizes());
        let mut g = graph(&encoder);
        let wrong = Sizes {
            code_dim: 16,
            ..sizes()
        };
        g.output[4] = Signature::encoder(&wrong)
            .output(NORMAL_LATENT)
            .value_info();
        let err = encoder.check(&g, "encoder.onnx").unwrap_err().to_string();
        assert!(err.contains("normal_latent") && err.contains("16"), "{err}");

        let mut g = graph(&encoder);
        g.input[0] = value_info(IMAGE, Elem::F32, &[Axis::Fixed(1), Axis::Fixed(1)]);
        let err = encoder.check(&g, "encoder.onnx").unwrap_err().to_string();
        assert!(
            err.contains("encoder.onnx") && err.contains("axes"),
            "{err}"
        );
    }

    #[test]
    fn shapes_of_a_batch_fill_in_the_batch_axis() {
        let decoder = Signature::decoder(&sizes());
        assert_eq!(decoder.output(SEGMENTATION).shape(3), vec![3, 4, 32, 32]);
    }
}
