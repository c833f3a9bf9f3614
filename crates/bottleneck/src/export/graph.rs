//! A small builder over ONNX's messages: values are named by the builder, nodes take the
//! names of their inputs and give the name of their output, weights become initializers.
//! Everything the exporters write goes through it, so the messages are filled in one place.

use super::proto::{
    AttributeProto, GraphProto, ModelProto, NodeProto, OperatorSetIdProto, StringStringEntryProto,
    TensorProto, TensorShapeProto, TypeProto, ValueInfoProto, attribute_proto::AttributeType,
    tensor_proto::DataType, tensor_shape_proto, type_proto,
};

/// The operator set every exported graph uses (ONNX 1.12 and later, onnxruntime 1.12 and
/// later, TensorRT 8.6 and later read it).
pub const OPSET: i64 = 17;
/// The IR version that goes with [`OPSET`].
const IR_VERSION: i64 = 8;

/// A dimension of a graph input or output: fixed, or named and free (the batch).
#[derive(Debug, Clone, Copy)]
pub enum Dim {
    Fixed(usize),
    Free(&'static str),
}

/// An attribute's value.
pub enum Attr {
    Int(i64),
    Ints(Vec<i64>),
    Float(f32),
    Str(&'static str),
    Tensor(Box<TensorProto>),
}

/// Element types the graphs use.
#[derive(Debug, Clone, Copy)]
pub enum Elem {
    F32,
    F64,
    I64,
    Bool,
}

impl Elem {
    fn onnx(self) -> i32 {
        (match self {
            Elem::F32 => DataType::Float,
            Elem::F64 => DataType::Double,
            Elem::I64 => DataType::Int64,
            Elem::Bool => DataType::Bool,
        }) as i32
    }
}

/// A graph under construction.
#[derive(Default)]
pub struct Graph {
    nodes: Vec<NodeProto>,
    initializers: Vec<TensorProto>,
    inputs: Vec<ValueInfoProto>,
    outputs: Vec<ValueInfoProto>,
    next: usize,
}

fn value_info(name: &str, elem: Elem, dims: &[Dim], doc: &str) -> ValueInfoProto {
    let dim = dims
        .iter()
        .map(|d| tensor_shape_proto::Dimension {
            denotation: None,
            value: Some(match *d {
                Dim::Fixed(n) => tensor_shape_proto::dimension::Value::DimValue(n as i64),
                Dim::Free(name) => tensor_shape_proto::dimension::Value::DimParam(name.into()),
            }),
        })
        .collect();
    ValueInfoProto {
        name: Some(name.into()),
        r#type: Some(TypeProto {
            denotation: None,
            value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                elem_type: Some(elem.onnx()),
                shape: Some(TensorShapeProto { dim }),
            })),
        }),
        doc_string: Some(doc.into()),
        ..Default::default()
    }
}

/// A float32 tensor holding `values` with shape `dims` (raw little-endian data).
pub fn f32_tensor(name: &str, dims: &[usize], values: &[f32]) -> TensorProto {
    debug_assert_eq!(dims.iter().product::<usize>(), values.len());
    TensorProto {
        name: Some(name.into()),
        dims: dims.iter().map(|&d| d as i64).collect(),
        data_type: Some(DataType::Float as i32),
        raw_data: Some(values.iter().flat_map(|v| v.to_le_bytes()).collect()),
        ..Default::default()
    }
}

fn attribute(name: &str, value: Attr) -> AttributeProto {
    let mut a = AttributeProto {
        name: Some(name.into()),
        ..Default::default()
    };
    let kind = match value {
        Attr::Int(v) => {
            a.i = Some(v);
            AttributeType::Int
        }
        Attr::Ints(v) => {
            a.ints = v;
            AttributeType::Ints
        }
        Attr::Float(v) => {
            a.f = Some(v);
            AttributeType::Float
        }
        Attr::Str(v) => {
            a.s = Some(v.as_bytes().to_vec());
            AttributeType::String
        }
        Attr::Tensor(t) => {
            a.t = Some(*t);
            AttributeType::Tensor
        }
    };
    a.r#type = Some(kind as i32);
    a
}

impl Graph {
    pub fn new() -> Self {
        Self::default()
    }

    fn fresh(&mut self, hint: &str) -> String {
        self.next += 1;
        format!("{hint}_{}", self.next)
    }

    /// Declares a graph input and returns its name.
    pub fn input(&mut self, name: &str, elem: Elem, dims: &[Dim], doc: &str) -> String {
        self.inputs.push(value_info(name, elem, dims, doc));
        name.to_string()
    }

    /// Makes `value` a graph output called `name`.
    pub fn output(&mut self, value: &str, name: &str, elem: Elem, dims: &[Dim], doc: &str) {
        self.nodes.push(NodeProto {
            input: vec![value.into()],
            output: vec![name.into()],
            name: Some(format!("output_{name}")),
            op_type: Some("Identity".into()),
            ..Default::default()
        });
        self.outputs.push(value_info(name, elem, dims, doc));
    }

    /// A float32 initializer (weights, statistics, constants).
    pub fn f32s(&mut self, hint: &str, dims: &[usize], values: &[f32]) -> String {
        let name = self.fresh(hint);
        self.initializers.push(f32_tensor(&name, dims, values));
        name
    }

    /// A float32 scalar constant.
    pub fn scalar(&mut self, v: f32) -> String {
        self.f32s("const", &[], &[v])
    }

    /// A float64 initializer.
    pub fn f64s(&mut self, hint: &str, dims: &[usize], values: &[f64]) -> String {
        let name = self.fresh(hint);
        self.initializers.push(TensorProto {
            name: Some(name.clone()),
            dims: dims.iter().map(|&d| d as i64).collect(),
            data_type: Some(DataType::Double as i32),
            double_data: values.to_vec(),
            ..Default::default()
        });
        name
    }

    /// A float64 scalar constant.
    pub fn f64_scalar(&mut self, v: f64) -> String {
        self.f64s("const", &[], &[v])
    }

    /// An int64 scalar constant.
    pub fn i64_scalar(&mut self, v: i64) -> String {
        let name = self.fresh("const");
        self.initializers.push(TensorProto {
            name: Some(name.clone()),
            data_type: Some(DataType::Int64 as i32),
            int64_data: vec![v],
            ..Default::default()
        });
        name
    }

    /// An int64 initializer (shapes, axes, pads, k).
    pub fn i64s(&mut self, hint: &str, values: &[i64]) -> String {
        let name = self.fresh(hint);
        self.initializers.push(TensorProto {
            name: Some(name.clone()),
            dims: vec![values.len() as i64],
            data_type: Some(DataType::Int64 as i32),
            int64_data: values.to_vec(),
            ..Default::default()
        });
        name
    }

    /// A node of `op` with one output, whose name is returned.
    pub fn op(&mut self, op: &str, inputs: &[&str], attrs: Vec<(&str, Attr)>) -> String {
        self.op_n(op, inputs, attrs, 1).remove(0)
    }

    /// A node of `op` with `outputs` outputs.
    pub fn op_n(
        &mut self,
        op: &str,
        inputs: &[&str],
        attrs: Vec<(&str, Attr)>,
        outputs: usize,
    ) -> Vec<String> {
        let hint = op.to_lowercase();
        let names: Vec<String> = (0..outputs).map(|_| self.fresh(&hint)).collect();
        self.nodes.push(NodeProto {
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: names.clone(),
            name: Some(format!("{}_node", names[0])),
            op_type: Some(op.into()),
            attribute: attrs.into_iter().map(|(n, v)| attribute(n, v)).collect(),
            ..Default::default()
        });
        names
    }

    /// `a OP b` for an element-wise binary operator (`Add`, `Sub`, `Mul`, `Div`, `Max`, ...).
    pub fn bin(&mut self, op: &str, a: &str, b: &str) -> String {
        self.op(op, &[a, b], vec![])
    }

    /// `a OP c` for a scalar constant `c`.
    pub fn bin_scalar(&mut self, op: &str, a: &str, c: f32) -> String {
        let c = self.scalar(c);
        self.bin(op, a, &c)
    }

    /// Reduces over `axes` with `op` (`ReduceMean`, `ReduceMax`: axes as an attribute in
    /// opset 17), keeping the reduced axes when `keep`.
    pub fn reduce(&mut self, op: &str, x: &str, axes: &[i64], keep: bool) -> String {
        self.op(
            op,
            &[x],
            vec![
                ("axes", Attr::Ints(axes.to_vec())),
                ("keepdims", Attr::Int(keep as i64)),
            ],
        )
    }

    /// Sum over `axes` (an input in opset 13 and later).
    pub fn reduce_sum(&mut self, x: &str, axes: &[i64], keep: bool) -> String {
        let axes = self.i64s("axes", axes);
        self.op(
            "ReduceSum",
            &[x, &axes],
            vec![("keepdims", Attr::Int(keep as i64))],
        )
    }

    /// `x` reshaped to `shape` (`-1` once for the free dimension).
    pub fn reshape(&mut self, x: &str, shape: &[i64]) -> String {
        let shape = self.i64s("shape", shape);
        self.op("Reshape", &[x, &shape], vec![])
    }

    /// `x` cast to `to`.
    pub fn cast(&mut self, x: &str, to: Elem) -> String {
        self.op("Cast", &[x], vec![("to", Attr::Int(to.onnx() as i64))])
    }

    /// The graph's inputs and outputs, one `name [d0, d1, ...]` each.
    pub fn signature(&self) -> (Vec<String>, Vec<String>) {
        let describe = |v: &ValueInfoProto| {
            let dims = match &v.r#type {
                Some(TypeProto {
                    value: Some(type_proto::Value::TensorType(t)),
                    ..
                }) => t.shape.as_ref().map_or(Vec::new(), |s| {
                    s.dim
                        .iter()
                        .map(|d| match &d.value {
                            Some(tensor_shape_proto::dimension::Value::DimValue(n)) => {
                                n.to_string()
                            }
                            Some(tensor_shape_proto::dimension::Value::DimParam(p)) => p.clone(),
                            None => "?".into(),
                        })
                        .collect()
                }),
                _ => Vec::new(),
            };
            format!("{} [{}]", v.name.as_deref().unwrap_or(""), dims.join(", "))
        };
        (
            self.inputs.iter().map(describe).collect(),
            self.outputs.iter().map(describe).collect(),
        )
    }

    /// The model message: this graph under `name`, with `metadata` as `metadata_props`.
    pub fn into_model(self, name: &str, doc: &str, metadata: Vec<(String, String)>) -> ModelProto {
        ModelProto {
            ir_version: Some(IR_VERSION),
            opset_import: vec![OperatorSetIdProto {
                domain: Some(String::new()),
                version: Some(OPSET),
            }],
            producer_name: Some("bottleneck".into()),
            producer_version: Some(env!("CARGO_PKG_VERSION").into()),
            doc_string: Some(doc.into()),
            graph: Some(GraphProto {
                node: self.nodes,
                name: Some(name.into()),
                initializer: self.initializers,
                input: self.inputs,
                output: self.outputs,
                ..Default::default()
            }),
            metadata_props: metadata
                .into_iter()
                .map(|(key, value)| StringStringEntryProto {
                    key: Some(key),
                    value: Some(value),
                })
                .collect(),
            ..Default::default()
        }
    }
}
