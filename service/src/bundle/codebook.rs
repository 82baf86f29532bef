//! Codebooks: the K×D tables of a bundle, read from the graphs' initializers.
//!
//! Both graphs carry `codebook_normal` and `codebook_abnormal` (names from the manifest). The
//! service reads them from each graph, checks them against the manifest's K and D, and checks that
//! the encoder and the decoder carry the same values: a bundle whose two halves were exported from
//! different checkpoints would decode codes into the wrong images.

use super::BundleError;
use diptych::bundle::onnx::{FLOAT, GraphProto, TensorProto, tensor_proto::DataLocation};

/// One codebook: K vectors of dimension D, row-major.
#[derive(Debug, Clone, PartialEq)]
pub struct Codebook {
    /// Number of vectors K.
    pub size: usize,
    /// Dimension D of each vector.
    pub dim: usize,
    /// `size * dim` values, vector after vector.
    pub values: Vec<f32>,
}

impl Codebook {
    /// Vector `index` of the codebook.
    pub fn vector(&self, index: usize) -> &[f32] {
        &self.values[index * self.dim..(index + 1) * self.dim]
    }
}

/// The two codebooks of a bundle.
#[derive(Debug, Clone, PartialEq)]
pub struct Codebooks {
    /// The normal anatomy codebook.
    pub normal: Codebook,
    /// The abnormal anatomy codebook.
    pub abnormal: Codebook,
}

/// Reads initializer `name` of `graph` (in file `file`) as a K×D float table.
pub(crate) fn read_codebook(
    graph: &GraphProto,
    file: &str,
    name: &str,
    size: usize,
    dim: usize,
) -> Result<Codebook, BundleError> {
    let tensor = graph
        .initializer
        .iter()
        .find(|t| t.name() == name)
        .ok_or_else(|| BundleError::MissingCodebook {
            file: file.to_string(),
            name: name.to_string(),
        })?;
    let wrong = |problem: String| BundleError::BadCodebook {
        file: file.to_string(),
        name: name.to_string(),
        problem,
    };
    if tensor.data_type() != FLOAT {
        return Err(wrong(format!(
            "has ONNX data type {} but must be FLOAT (1)",
            tensor.data_type()
        )));
    }
    if tensor.data_location() == DataLocation::External {
        return Err(wrong(
            "keeps its values in an external file; export with the codebooks inside the graph"
                .to_string(),
        ));
    }
    let expected = [size as i64, dim as i64];
    if tensor.dims != expected {
        return Err(wrong(format!(
            "has shape {:?} but the manifest says K×D = {size}×{dim}",
            tensor.dims
        )));
    }
    let values = float_values(tensor).map_err(wrong)?;
    if values.len() != size * dim {
        return Err(wrong(format!(
            "holds {} values for a {size}×{dim} shape",
            values.len()
        )));
    }
    if let Some(i) = values.iter().position(|v| !v.is_finite()) {
        return Err(wrong(format!("value {i} is not a finite number")));
    }
    Ok(Codebook { size, dim, values })
}

fn float_values(tensor: &TensorProto) -> Result<Vec<f32>, String> {
    let raw = tensor.raw_data();
    if !raw.is_empty() {
        if !raw.len().is_multiple_of(4) {
            return Err(format!(
                "raw data of {} bytes is not a whole number of floats",
                raw.len()
            ));
        }
        Ok(raw
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect())
    } else {
        Ok(tensor.float_data.clone())
    }
}
