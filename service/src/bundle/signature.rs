//! Signatures: the names, element types and shapes the graphs must declare for their inputs and
//! outputs, derived from the manifest (docs/DESIGN.md, "Model bundle").
//!
//! A declared axis is checked when the graph states it: the batch axis must be dynamic, the other
//! axes must equal what the manifest implies. Axes a graph leaves unknown are verified by the
//! warm-up run, which sees real output shapes.

use diptych::manifest::Manifest;

use super::BundleError;
use super::onnx::{FLOAT, GraphProto, INT64, ValueInfoProto};

/// One axis of an expected shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Axis {
    /// The dynamic batch axis N.
    Batch,
    /// A fixed size.
    Fixed(usize),
}

/// A value a graph must declare.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Expected {
    /// Its ONNX name.
    pub name: &'static str,
    /// ONNX element type (FLOAT or INT64).
    pub elem_type: i32,
    /// Its axes.
    pub axes: Vec<Axis>,
}

impl Expected {
    fn new(name: &'static str, elem_type: i32, axes: &[Axis]) -> Self {
        Self {
            name,
            elem_type,
            axes: axes.to_vec(),
        }
    }
}

/// The encoder's inputs and outputs for this manifest.
pub(crate) fn encoder(manifest: &Manifest) -> (Vec<Expected>, Vec<Expected>) {
    use Axis::{Batch, Fixed};
    let s = manifest.input_size();
    let (h, w) = (manifest.grid.rows, manifest.grid.cols);
    (
        vec![Expected::new(
            "image",
            FLOAT,
            &[Batch, Fixed(1), Fixed(s), Fixed(s)],
        )],
        vec![
            Expected::new("normal_indices", INT64, &[Batch, Fixed(h), Fixed(w)]),
            Expected::new("abnormal_indices", INT64, &[Batch, Fixed(h), Fixed(w)]),
            Expected::new("abnormal_distance", FLOAT, &[Batch, Fixed(h), Fixed(w)]),
            Expected::new("abnormality", FLOAT, &[Batch]),
        ],
    )
}

/// The decoder's inputs and outputs for this manifest.
pub(crate) fn decoder(manifest: &Manifest) -> (Vec<Expected>, Vec<Expected>) {
    use Axis::{Batch, Fixed};
    let s = manifest.input_size();
    let (h, w) = (manifest.grid.rows, manifest.grid.cols);
    let labels = manifest.abnormal_labels.len();
    (
        vec![
            Expected::new("normal_indices", INT64, &[Batch, Fixed(h), Fixed(w)]),
            Expected::new("abnormal_indices", INT64, &[Batch, Fixed(h), Fixed(w)]),
        ],
        vec![
            Expected::new(
                "segmentation",
                FLOAT,
                &[Batch, Fixed(labels), Fixed(s), Fixed(s)],
            ),
            Expected::new(
                "reconstruction",
                FLOAT,
                &[Batch, Fixed(1), Fixed(s), Fixed(s)],
            ),
            Expected::new(
                "normal_appearing",
                FLOAT,
                &[Batch, Fixed(1), Fixed(s), Fixed(s)],
            ),
        ],
    )
}

/// Checks that `graph` (from `file`) declares exactly the expected inputs and at least the
/// expected outputs, with compatible types and shapes.
pub(crate) fn check(
    graph: &GraphProto,
    file: &str,
    inputs: &[Expected],
    outputs: &[Expected],
) -> Result<(), BundleError> {
    let refuse = |problem: String| BundleError::Signature {
        file: file.to_string(),
        problem,
    };
    // Before IR 4, initializers also appear as graph inputs; they are not fed by the service.
    let fed: Vec<&ValueInfoProto> = graph
        .input
        .iter()
        .filter(|i| !graph.initializer.iter().any(|t| t.name == i.name))
        .collect();
    for value in &fed {
        if !inputs.iter().any(|e| e.name == value.name) {
            return Err(refuse(format!(
                "has an input {:?} that the service does not feed; expected inputs: {}",
                value.name,
                names(inputs)
            )));
        }
    }
    for expected in inputs {
        let value = fed
            .iter()
            .find(|v| v.name == expected.name)
            .ok_or_else(|| {
                refuse(format!(
                    "has no input {:?}; expected inputs: {}",
                    expected.name,
                    names(inputs)
                ))
            })?;
        check_value(value, expected, "input").map_err(&refuse)?;
    }
    for expected in outputs {
        let value = graph
            .output
            .iter()
            .find(|v| v.name == expected.name)
            .ok_or_else(|| {
                refuse(format!(
                    "has no output {:?}; expected outputs: {}",
                    expected.name,
                    names(outputs)
                ))
            })?;
        check_value(value, expected, "output").map_err(&refuse)?;
    }
    Ok(())
}

fn names(values: &[Expected]) -> String {
    values.iter().map(|e| e.name).collect::<Vec<_>>().join(", ")
}

fn check_value(value: &ValueInfoProto, expected: &Expected, role: &str) -> Result<(), String> {
    let Some(tensor) = value.r#type.as_ref().and_then(|t| t.tensor_type.as_ref()) else {
        return Err(format!("{role} {:?} is not a tensor", expected.name));
    };
    if tensor.elem_type != expected.elem_type {
        return Err(format!(
            "{role} {:?} has element type {} but must be {} ({})",
            expected.name,
            type_name(tensor.elem_type),
            type_name(expected.elem_type),
            expected.elem_type
        ));
    }
    let Some(shape) = &tensor.shape else {
        return Ok(()); // unknown shape: the warm-up run checks it
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
        match (axis, dim.dim_value) {
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
        Axis::Batch => "N".to_string(),
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
