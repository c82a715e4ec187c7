//! The pickle's data tree made owned and typed: allowlisted calls resolved into tensors,
//! persistent objects and module dicts, with a depth limit and an expansion budget so that
//! neither cycles nor shared-reference blow-ups ("billion laughs") can exhaust memory.

use std::collections::HashMap;

use super::pickle::{Global, Id, Node, Pickle};
use super::torch::{load_storage_blob, make_view, Storage, TensorView};
use super::ImportError;

/// Deepest nesting accepted (an EDM snapshot needs about 30 levels).
const MAX_DEPTH: usize = 256;

/// An owned value of the data tree.
#[derive(Debug, Clone)]
pub enum Value<'a> {
    /// `None`.
    None,
    /// A bool.
    Bool(bool),
    /// An integer.
    Int(i64),
    /// An integer wider than 64 bits (kept only as "present").
    BigInt,
    /// A float.
    Float(f64),
    /// A string.
    Str(String),
    /// A bytes object, by length.
    Bytes(usize),
    /// A tuple.
    Tuple(Vec<Value<'a>>),
    /// A list.
    List(Vec<Value<'a>>),
    /// A dict, in insertion order.
    Dict(Vec<(Value<'a>, Value<'a>)>),
    /// A set.
    Set(Vec<Value<'a>>),
    /// A storage (only meaningful inside a tensor).
    Storage(Storage<'a>),
    /// A tensor view.
    Tensor(TensorView<'a>),
    /// An EDM persistent object: class name, length of its (never executed) source, state dict.
    Persistent {
        class_name: String,
        source_len: usize,
        state: Box<Value<'a>>,
    },
    /// A `torch.nn.ModuleDict` with its state dict.
    ModuleDict(Box<Value<'a>>),
}

impl<'a> Value<'a> {
    /// The kind of value, for error messages.
    pub fn kind(&self) -> &'static str {
        match self {
            Value::None => "None",
            Value::Bool(_) => "bool",
            Value::Int(_) | Value::BigInt => "int",
            Value::Float(_) => "float",
            Value::Str(_) => "str",
            Value::Bytes(_) => "bytes",
            Value::Tuple(_) => "tuple",
            Value::List(_) => "list",
            Value::Dict(_) => "dict",
            Value::Set(_) => "set",
            Value::Storage(_) => "storage",
            Value::Tensor(_) => "tensor",
            Value::Persistent { .. } => "persistent object",
            Value::ModuleDict(_) => "ModuleDict",
        }
    }

    /// The value under string key `key` of a dict.
    pub fn get(&self, key: &str) -> Option<&Value<'a>> {
        match self {
            Value::Dict(items) => items
                .iter()
                .find(|(k, _)| matches!(k, Value::Str(s) if s == key))
                .map(|(_, v)| v),
            _ => None,
        }
    }
}

/// Converts a parsed pickle into owned values.
pub struct Converter<'p, 'a> {
    pickle: &'p Pickle<'a>,
    what: String,
    storages: HashMap<Id, Storage<'a>>,
    budget: usize,
}

impl<'p, 'a> Converter<'p, 'a> {
    /// A converter for `pickle` read from `len` bytes (the expansion budget is proportional).
    pub fn new(pickle: &'p Pickle<'a>, len: usize, what: &str) -> Self {
        Converter {
            pickle,
            what: what.to_string(),
            storages: HashMap::new(),
            budget: 2 * len + 4096,
        }
    }

    fn err(&self, reason: impl Into<String>) -> ImportError {
        ImportError::Structure {
            what: self.what.clone(),
            reason: reason.into(),
        }
    }

    /// The root value.
    pub fn root(&mut self) -> Result<Value<'a>, ImportError> {
        self.convert(self.pickle.root, 0)
    }

    fn spend(&mut self, n: usize) -> Result<(), ImportError> {
        if n > self.budget {
            return Err(self.err(
                "the data tree expands far beyond the file's size (shared references nested in a loop?)",
            ));
        }
        self.budget -= n;
        Ok(())
    }

    fn convert(&mut self, id: Id, depth: usize) -> Result<Value<'a>, ImportError> {
        if depth > MAX_DEPTH {
            return Err(self.err(format!(
                "nesting deeper than {MAX_DEPTH} levels (or a cycle)"
            )));
        }
        self.spend(1)?;
        let nodes = &self.pickle.nodes;
        let list = |c: &mut Self, ids: &[Id]| -> Result<Vec<Value<'a>>, ImportError> {
            ids.iter().map(|&i| c.convert(i, depth + 1)).collect()
        };
        Ok(match &nodes[id] {
            Node::None => Value::None,
            Node::Bool(b) => Value::Bool(*b),
            Node::Int(v) => Value::Int(*v),
            Node::Long(_) => Value::BigInt,
            Node::Float(v) => Value::Float(*v),
            Node::Str(s) => {
                self.spend(s.len())?;
                Value::Str(s.clone())
            }
            Node::Bytes(b) => Value::Bytes(b.len()),
            Node::Tuple(ids) => Value::Tuple(list(self, ids)?),
            Node::List(ids) => Value::List(list(self, ids)?),
            Node::Set(ids) => Value::Set(list(self, ids)?),
            Node::Dict(pairs) => {
                let mut out = Vec::with_capacity(pairs.len());
                for &(k, v) in pairs {
                    out.push((self.convert(k, depth + 1)?, self.convert(v, depth + 1)?));
                }
                Value::Dict(out)
            }
            Node::Object {
                class: Global::NumpyDtype,
                ..
            } => return Err(self.err("a numpy dtype outside a numpy scalar")),
            Node::Object { class, state, .. } => {
                let state = match state {
                    Some(s) => self.convert(*s, depth + 1)?,
                    None => Value::Dict(Vec::new()),
                };
                match class {
                    Global::ModuleDict => Value::ModuleDict(Box::new(state)),
                    g => return Err(self.err(format!("object of class {g:?}"))),
                }
            }
            Node::Global(g) => return Err(self.err(format!("a bare global {g:?} as a value"))),
            Node::PersId(_) => return Err(self.err("a persistent id outside a storage blob")),
            Node::Call { func, args } => {
                let (func, args) = (*func, *args);
                let Node::Tuple(a) = &nodes[args] else {
                    return Err(self.err("call arguments are not a tuple"));
                };
                let a = a.clone();
                self.call(func, &a, id, depth)?
            }
        })
    }

    fn int(&mut self, id: Id, depth: usize, name: &str) -> Result<i64, ImportError> {
        match self.convert(id, depth + 1)? {
            Value::Int(v) => Ok(v),
            other => Err(self.err(format!("{name} is a {}, not an int", other.kind()))),
        }
    }

    fn ints(&mut self, id: Id, depth: usize, name: &str) -> Result<Vec<i64>, ImportError> {
        match self.convert(id, depth + 1)? {
            Value::Tuple(v) | Value::List(v) => v
                .into_iter()
                .map(|x| match x {
                    Value::Int(i) => Ok(i),
                    o => Err(self.err(format!("{name} holds a {}", o.kind()))),
                })
                .collect(),
            other => Err(self.err(format!("{name} is a {}, not a tuple", other.kind()))),
        }
    }

    fn call(
        &mut self,
        func: Global,
        a: &[Id],
        call_id: Id,
        depth: usize,
    ) -> Result<Value<'a>, ImportError> {
        let nodes = &self.pickle.nodes;
        match func {
            Global::LoadFromBytes => {
                if let Some(s) = self.storages.get(&call_id) {
                    return Ok(Value::Storage(*s));
                }
                let [b] = a else {
                    return Err(self.err("_load_from_bytes takes one argument"));
                };
                let Node::Bytes(blob) = nodes[*b] else {
                    return Err(self.err("_load_from_bytes of a non-bytes value"));
                };
                let what = format!("{} (storage blob)", self.what);
                let s = load_storage_blob(blob, &what)?;
                self.storages.insert(call_id, s);
                Ok(Value::Storage(s))
            }
            Global::RebuildTensorV2 => {
                if a.len() < 6 || a.len() > 7 {
                    return Err(self.err(format!("_rebuild_tensor_v2 with {} arguments", a.len())));
                }
                let storage = match self.convert(a[0], depth + 1)? {
                    Value::Storage(s) => s,
                    o => return Err(self.err(format!("tensor storage is a {}", o.kind()))),
                };
                let offset = self.int(a[1], depth, "storage offset")?;
                let size = self.ints(a[2], depth, "size")?;
                let stride = self.ints(a[3], depth, "stride")?;
                self.no_hooks(a[5], depth)?;
                Ok(Value::Tensor(make_view(
                    storage, offset, &size, &stride, &self.what,
                )?))
            }
            Global::RebuildParameter | Global::RebuildParameterWithState => {
                if a.len() < 3 {
                    return Err(self.err("_rebuild_parameter with too few arguments"));
                }
                self.no_hooks(a[2], depth)?;
                match self.convert(a[0], depth + 1)? {
                    t @ Value::Tensor(_) => Ok(t),
                    o => Err(self.err(format!("parameter data is a {}", o.kind()))),
                }
            }
            Global::ReconstructPersistent => {
                let [m] = a else {
                    return Err(self.err("_reconstruct_persistent_obj takes one argument"));
                };
                let Node::Dict(pairs) = &nodes[*m] else {
                    return Err(self.err("persistent object meta is not a dict"));
                };
                let (mut class_name, mut source_len, mut state, mut ty) = (None, None, None, None);
                for &(k, v) in pairs {
                    let Node::Str(k) = &nodes[k] else { continue };
                    match (k.as_str(), &nodes[v]) {
                        ("class_name", Node::Str(s)) => class_name = Some(s.clone()),
                        // The source is never executed; only its presence is recorded.
                        ("module_src", Node::Str(s)) => source_len = Some(s.len()),
                        ("type", Node::Str(s)) => ty = Some(s.clone()),
                        ("state", _) => state = Some(v),
                        _ => {}
                    }
                }
                if ty.as_deref() != Some("class") {
                    return Err(self.err(format!(
                        "persistent object of type {ty:?}, expected 'class'"
                    )));
                }
                let class_name =
                    class_name.ok_or_else(|| self.err("persistent object without class_name"))?;
                let state = state
                    .ok_or_else(|| self.err(format!("persistent `{class_name}` without state")))?;
                let state = self.convert(state, depth + 1)?;
                Ok(Value::Persistent {
                    class_name,
                    source_len: source_len.unwrap_or(0),
                    state: Box::new(state),
                })
            }
            Global::NumpyScalar => self.numpy_scalar(a),
            g => Err(self.err(format!("call of {g:?}"))),
        }
    }

    /// `scalar(dtype(code, …) with state (version, byte order, …), raw)` → a plain number.
    fn numpy_scalar(&self, a: &[Id]) -> Result<Value<'a>, ImportError> {
        let nodes = &self.pickle.nodes;
        let [d, raw] = a else {
            return Err(self.err("numpy scalar takes (dtype, bytes)"));
        };
        let Node::Object {
            class: Global::NumpyDtype,
            args: Some(dargs),
            state,
        } = &nodes[*d]
        else {
            return Err(self.err("numpy scalar without a dtype"));
        };
        let code = match &nodes[*dargs] {
            Node::Tuple(t) => t.first().and_then(|&i| match &nodes[i] {
                Node::Str(s) => Some(s.as_str()),
                _ => None,
            }),
            _ => None,
        }
        .ok_or_else(|| self.err("numpy dtype without a type code"))?;
        let order = state
            .and_then(|s| match &nodes[s] {
                Node::Tuple(t) => t.get(1).and_then(|&i| match &nodes[i] {
                    Node::Str(s) => Some(s.as_str()),
                    _ => None,
                }),
                _ => None,
            })
            .unwrap_or("|");
        if order == ">" {
            return Err(self.err(format!("big-endian numpy scalar ({code})")));
        }
        let b = match nodes[*raw] {
            Node::Bytes(b) => b,
            // Protocol 2 writes the raw bytes as a latin-1 str; not produced by these files.
            _ => return Err(self.err("numpy scalar data is not bytes")),
        };
        let fixed = |n: usize| -> Result<[u8; 8], ImportError> {
            if b.len() != n {
                return Err(self.err(format!("numpy {code} scalar of {} bytes", b.len())));
            }
            let mut a = [0u8; 8];
            a[..n].copy_from_slice(b);
            Ok(a)
        };
        Ok(match code {
            "f8" => Value::Float(f64::from_le_bytes(fixed(8)?)),
            "f4" => {
                let a = fixed(4)?;
                Value::Float(f32::from_le_bytes([a[0], a[1], a[2], a[3]]) as f64)
            }
            "i8" => Value::Int(i64::from_le_bytes(fixed(8)?)),
            "i4" => {
                let a = fixed(4)?;
                Value::Int(i32::from_le_bytes([a[0], a[1], a[2], a[3]]) as i64)
            }
            "b1" => Value::Bool(fixed(1)?[0] != 0),
            c => return Err(self.err(format!("numpy scalar of dtype '{c}'"))),
        })
    }

    /// Backward hooks would be code; only an empty dict is accepted.
    fn no_hooks(&mut self, id: Id, depth: usize) -> Result<(), ImportError> {
        match self.convert(id, depth + 1)? {
            Value::Dict(d) if d.is_empty() => Ok(()),
            Value::None => Ok(()),
            o => Err(self.err(format!("tensor with backward hooks ({})", o.kind()))),
        }
    }
}
