//! A small builder for ONNX graphs: initializers, nodes with generated value names, graph inputs
//! and outputs with a dynamic batch dimension, and the final `ModelProto` (opset 17, IR 8).

use std::collections::HashSet;

use diptych::bundle::onnx::{
    AttributeProto, GraphProto, ModelProto, NodeProto, OperatorSetIdProto, TensorProto,
    ValueInfoProto, attribute_proto::AttributeType, tensor_proto::DataType,
};
pub use diptych::bundle::signature::{Axis, Elem};
use diptych::bundle::signature::{ValueSpec, value_info};

/// The ONNX operator set the exported graphs use (ONNX Runtime 1.31 supports it).
pub const OPSET: i64 = 17;

/// The ONNX IR version written into every model.
pub const IR_VERSION: i64 = 8;

/// Accumulates the nodes, initializers, inputs and outputs of one ONNX graph.
#[derive(Debug)]
pub struct GraphBuilder {
    name: String,
    nodes: Vec<NodeProto>,
    initializers: Vec<TensorProto>,
    inputs: Vec<ValueInfoProto>,
    outputs: Vec<ValueInfoProto>,
    names: HashSet<String>,
    next_id: usize,
}

impl GraphBuilder {
    /// Starts an empty graph called `name`.
    pub fn new(name: &str) -> Self {
        Self {
            name: name.to_string(),
            nodes: Vec::new(),
            initializers: Vec::new(),
            inputs: Vec::new(),
            outputs: Vec::new(),
            names: HashSet::new(),
            next_id: 0,
        }
    }

    /// Declares a graph input and returns its name.
    pub fn input(&mut self, name: &str, elem: Elem, axes: &[Axis]) -> String {
        self.claim(name);
        self.inputs.push(value_info(name, elem, axes));
        name.to_string()
    }

    /// Declares a graph output; some node must produce a value of that name (see [`Self::node_into`]).
    pub fn output(&mut self, name: &str, elem: Elem, axes: &[Axis]) {
        self.outputs.push(value_info(name, elem, axes));
    }

    /// Declares an input of the bundle contract and returns its name.
    pub fn declare_input(&mut self, spec: &ValueSpec) -> String {
        self.input(spec.name, spec.elem, &spec.axes)
    }

    /// Declares an output of the bundle contract; some node must produce it.
    pub fn declare_output(&mut self, spec: &ValueSpec) {
        self.output(spec.name, spec.elem, &spec.axes);
    }

    /// Adds a float initializer (a weight or constant) of the given shape and returns its name.
    pub fn initializer_f32(&mut self, name: &str, dims: &[usize], data: &[f32]) -> String {
        let raw = data.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.push_initializer(name, DataType::Float, dims, data.len(), raw)
    }

    /// Adds a 64-bit integer initializer (shapes, axes, slice bounds) and returns its name.
    pub fn initializer_i64(&mut self, name: &str, dims: &[usize], data: &[i64]) -> String {
        let raw = data.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.push_initializer(name, DataType::Int64, dims, data.len(), raw)
    }

    /// Checks the shape against the value count, claims the name and stores the raw bytes.
    fn push_initializer(
        &mut self,
        name: &str,
        elem: DataType,
        dims: &[usize],
        count: usize,
        raw: Vec<u8>,
    ) -> String {
        assert_eq!(
            dims.iter().product::<usize>(),
            count,
            "initializer {name}: shape {dims:?} does not match {count} values"
        );
        self.claim(name);
        self.initializers.push(tensor(name, elem, dims, raw));
        name.to_string()
    }

    /// Returns the name of a shared float initializer, adding it the first time it is asked for;
    /// a later request must carry the same values.
    pub fn shared_f32(&mut self, name: &str, dims: &[usize], data: &[f32]) -> String {
        if self.names.contains(name) {
            let raw: Vec<u8> = data.iter().flat_map(|v| v.to_le_bytes()).collect();
            self.assert_same(name, &raw);
            name.to_string()
        } else {
            self.initializer_f32(name, dims, data)
        }
    }

    /// Returns the name of a shared integer initializer, adding it the first time it is asked for;
    /// a later request must carry the same values.
    pub fn shared_i64(&mut self, name: &str, dims: &[usize], data: &[i64]) -> String {
        if self.names.contains(name) {
            let raw: Vec<u8> = data.iter().flat_map(|v| v.to_le_bytes()).collect();
            self.assert_same(name, &raw);
            name.to_string()
        } else {
            self.initializer_i64(name, dims, data)
        }
    }

    /// Panics unless `name` is an initializer holding exactly `raw`: one name, one value.
    fn assert_same(&self, name: &str, raw: &[u8]) {
        let existing = self
            .initializers
            .iter()
            .find(|t| t.name.as_deref() == Some(name));
        assert!(
            existing.is_some_and(|t| t.raw_data.as_deref() == Some(raw)),
            "graph {}: {name} reused for a different value",
            self.name
        );
    }

    /// Adds a node with one output, named after the operator, and returns that output's name.
    pub fn node(&mut self, op: &str, inputs: &[&str], attributes: Vec<AttributeProto>) -> String {
        let output = format!("{}_{}", op.to_lowercase(), self.next_id);
        self.next_id += 1;
        self.node_into(op, inputs, attributes, &output)
    }

    /// Adds a node whose one output has the given name (a graph output) and returns that name.
    pub fn node_into(
        &mut self,
        op: &str,
        inputs: &[&str],
        attributes: Vec<AttributeProto>,
        output: &str,
    ) -> String {
        self.claim(output);
        let index = self.nodes.len();
        self.nodes.push(NodeProto {
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: vec![output.to_string()],
            name: Some(format!("{op}_{index}")),
            op_type: Some(op.to_string()),
            attribute: attributes,
            ..Default::default()
        });
        output.to_string()
    }

    /// Finishes the graph as a model with the project's opset, IR version and producer.
    pub fn finish(self, doc: &str) -> ModelProto {
        for output in &self.outputs {
            let name = output.name.as_deref().unwrap_or_default();
            assert!(
                self.nodes
                    .iter()
                    .any(|n| n.output.iter().any(|o| o == name)),
                "graph {}: output {name} is produced by no node",
                self.name
            );
        }
        ModelProto {
            ir_version: Some(IR_VERSION),
            opset_import: vec![OperatorSetIdProto {
                domain: Some(String::new()),
                version: Some(OPSET),
            }],
            producer_name: Some("diptych-train".to_string()),
            producer_version: Some(env!("CARGO_PKG_VERSION").to_string()),
            doc_string: Some(doc.to_string()),
            graph: Some(GraphProto {
                node: self.nodes,
                name: Some(self.name),
                initializer: self.initializers,
                input: self.inputs,
                output: self.outputs,
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    /// Reserves a value name; two values of one graph must never share a name.
    fn claim(&mut self, name: &str) {
        assert!(
            self.names.insert(name.to_string()),
            "graph {}: value name {name} used twice",
            self.name
        );
    }
}

fn tensor(name: &str, data_type: DataType, dims: &[usize], raw: Vec<u8>) -> TensorProto {
    TensorProto {
        dims: dims.iter().map(|&d| d as i64).collect(),
        data_type: Some(data_type as i32),
        name: Some(name.to_string()),
        raw_data: Some(raw),
        ..Default::default()
    }
}

/// An integer attribute (`axis`, `keepdims`, ...).
pub fn attr_int(name: &str, value: i64) -> AttributeProto {
    AttributeProto {
        name: Some(name.to_string()),
        r#type: Some(AttributeType::Int as i32),
        i: Some(value),
        ..Default::default()
    }
}

/// An integer-list attribute (`kernel_shape`, `pads`, `perm`, ...).
pub fn attr_ints(name: &str, values: &[i64]) -> AttributeProto {
    AttributeProto {
        name: Some(name.to_string()),
        r#type: Some(AttributeType::Ints as i32),
        ints: values.to_vec(),
        ..Default::default()
    }
}

/// A float attribute (`alpha`, ...).
pub fn attr_float(name: &str, value: f32) -> AttributeProto {
    AttributeProto {
        name: Some(name.to_string()),
        r#type: Some(AttributeType::Float as i32),
        f: Some(value),
        ..Default::default()
    }
}

/// A string attribute (`mode`, ...).
pub fn attr_string(name: &str, value: &str) -> AttributeProto {
    AttributeProto {
        name: Some(name.to_string()),
        r#type: Some(AttributeType::String as i32),
        s: Some(value.as_bytes().to_vec()),
        ..Default::default()
    }
}

/// A tensor attribute holding one float (the fill value of `ConstantOfShape`).
pub fn attr_scalar_f32(name: &str, value: f32) -> AttributeProto {
    AttributeProto {
        name: Some(name.to_string()),
        r#type: Some(AttributeType::Tensor as i32),
        t: Some(tensor(
            "value",
            DataType::Float,
            &[1],
            value.to_le_bytes().to_vec(),
        )),
        ..Default::default()
    }
}
