//! A pickle reader that builds a data tree and executes nothing: the protocol 2–5 opcodes that
//! PyTorch and NVlabs/edm files use, globals resolved against an allowlist, every length checked
//! against the bytes that are actually there before anything is sliced or allocated.

use std::collections::HashMap;

use super::ImportError;

/// Index of a node in a [`Pickle`]'s arena.
pub type Id = usize;

/// The only callables and classes a pickle may name; anything else is refused by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Global {
    /// `torch_utils.persistence._reconstruct_persistent_obj(meta)` (EDM's persistent classes).
    ReconstructPersistent,
    /// `torch.storage._load_from_bytes(blob)`: a nested legacy `torch.save` file.
    LoadFromBytes,
    /// `torch._utils._rebuild_tensor_v2(storage, offset, size, stride, requires_grad, hooks[, meta])`.
    RebuildTensorV2,
    /// `torch._utils._rebuild_parameter(tensor, requires_grad, hooks)`.
    RebuildParameter,
    /// `torch._utils._rebuild_parameter_with_state(tensor, requires_grad, hooks, state)`.
    RebuildParameterWithState,
    /// `collections.OrderedDict` (called with no arguments, then filled by SETITEMS).
    OrderedDict,
    /// `builtins.set` / `__builtin__.set` (protocol 2 sets).
    Set,
    /// `torch.nn.modules.container.ModuleDict` (built by NEWOBJ + BUILD).
    ModuleDict,
    /// A typed storage class of a legacy blob (`torch.FloatStorage`, …), by element type.
    Storage(StorageType),
    /// `numpy.dtype(code, align, copy)` then BUILD with its state (EDM keeps e.g. `np.sqrt(0.5)`).
    NumpyDtype,
    /// `numpy.core.multiarray.scalar(dtype, raw bytes)`: a numpy scalar.
    NumpyScalar,
}

/// Element type of a legacy typed storage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StorageType {
    /// `torch.FloatStorage`.
    F32,
    /// `torch.DoubleStorage`.
    F64,
    /// `torch.HalfStorage`.
    F16,
    /// `torch.BFloat16Storage`.
    Bf16,
}

impl StorageType {
    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            StorageType::F32 => 4,
            StorageType::F64 => 8,
            StorageType::F16 | StorageType::Bf16 => 2,
        }
    }
}

/// The allowlist: (module, name) → what it stands for.
fn resolve(module: &str, name: &str) -> Option<Global> {
    Some(match (module, name) {
        ("torch_utils.persistence", "_reconstruct_persistent_obj") => Global::ReconstructPersistent,
        ("torch.storage", "_load_from_bytes") => Global::LoadFromBytes,
        ("torch._utils", "_rebuild_tensor_v2") => Global::RebuildTensorV2,
        ("torch._utils", "_rebuild_parameter") => Global::RebuildParameter,
        ("torch._utils", "_rebuild_parameter_with_state") => Global::RebuildParameterWithState,
        ("collections", "OrderedDict") => Global::OrderedDict,
        ("builtins" | "__builtin__", "set") => Global::Set,
        ("torch.nn.modules.container", "ModuleDict") => Global::ModuleDict,
        ("torch", "FloatStorage") => Global::Storage(StorageType::F32),
        ("torch", "DoubleStorage") => Global::Storage(StorageType::F64),
        ("torch", "HalfStorage") => Global::Storage(StorageType::F16),
        ("torch", "BFloat16Storage") => Global::Storage(StorageType::Bf16),
        ("numpy", "dtype") => Global::NumpyDtype,
        ("numpy.core.multiarray" | "numpy._core.multiarray", "scalar") => Global::NumpyScalar,
        _ => return None,
    })
}

/// One value of the data tree.
#[derive(Debug, Clone)]
pub enum Node<'a> {
    /// `None`.
    None,
    /// `True` / `False`.
    Bool(bool),
    /// An integer that fits in i64.
    Int(i64),
    /// A wider integer: its little-endian two's-complement bytes.
    Long(&'a [u8]),
    /// A float.
    Float(f64),
    /// A text string.
    Str(String),
    /// A bytes object (a slice of the input).
    Bytes(&'a [u8]),
    /// A tuple.
    Tuple(Vec<Id>),
    /// A list.
    List(Vec<Id>),
    /// A dict (insertion order kept).
    Dict(Vec<(Id, Id)>),
    /// A set.
    Set(Vec<Id>),
    /// An allowlisted global.
    Global(Global),
    /// An allowlisted callable applied to an argument tuple; nothing is called.
    Call { func: Global, args: Id },
    /// An instance of an allowlisted class (NEWOBJ, or REDUCE of `numpy.dtype`) with its
    /// constructor arguments and the state BUILD gave it.
    Object {
        class: Global,
        args: Option<Id>,
        state: Option<Id>,
    },
    /// A persistent id (legacy storages refer to their data this way).
    PersId(Id),
}

/// A parsed pickle: the arena of nodes and the root.
#[derive(Debug)]
pub struct Pickle<'a> {
    /// Every node; containers refer to children by index.
    pub nodes: Vec<Node<'a>>,
    /// The value STOP returned.
    pub root: Id,
    /// Offset just past the STOP opcode (legacy files hold several pickles in a row).
    pub end: usize,
}

enum Slot {
    Mark,
    Val(Id),
}

struct Reader<'a, 'w> {
    data: &'a [u8],
    pos: usize,
    what: &'w str,
}

impl<'a> Reader<'a, '_> {
    fn err(&self, at: usize, reason: impl Into<String>) -> ImportError {
        ImportError::Pickle {
            what: self.what.to_string(),
            offset: at,
            reason: reason.into(),
        }
    }

    /// The next `n` bytes, refusing (without allocating) when fewer remain.
    fn take(&mut self, n: usize) -> Result<&'a [u8], ImportError> {
        let left = self.data.len() - self.pos;
        if n > left {
            return Err(self.err(
                self.pos,
                format!("truncated: needs {n} bytes, {left} remain"),
            ));
        }
        let s = &self.data[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    fn u8(&mut self) -> Result<u8, ImportError> {
        Ok(self.take(1)?[0])
    }

    fn uint(&mut self, n: usize) -> Result<u64, ImportError> {
        let b = self.take(n)?;
        let mut v = [0u8; 8];
        v[..n].copy_from_slice(b);
        Ok(u64::from_le_bytes(v))
    }

    /// A length field: checked to fit in memory addresses (and later against the remaining bytes).
    fn len(&mut self, n: usize) -> Result<usize, ImportError> {
        let at = self.pos;
        let v = self.uint(n)?;
        usize::try_from(v).map_err(|_| self.err(at, format!("length {v} does not fit")))
    }

    fn line(&mut self) -> Result<&'a str, ImportError> {
        let at = self.pos;
        let rest = &self.data[self.pos..];
        let n = rest
            .iter()
            .position(|&b| b == b'\n')
            .ok_or_else(|| self.err(at, "truncated: unterminated GLOBAL name"))?;
        let s = std::str::from_utf8(&rest[..n])
            .map_err(|_| self.err(at, "GLOBAL name is not UTF-8"))?;
        self.pos += n + 1;
        Ok(s)
    }

    fn utf8(&mut self, n: usize) -> Result<String, ImportError> {
        let at = self.pos;
        let b = self.take(n)?;
        std::str::from_utf8(b)
            .map(str::to_string)
            .map_err(|_| self.err(at, "string is not UTF-8"))
    }
}

/// Parses one pickle starting at `start` of `data`. `persid` allows BINPERSID (legacy storage
/// references); `what` names the file or blob in errors.
pub fn parse<'a>(
    data: &'a [u8],
    start: usize,
    persid: bool,
    what: &str,
) -> Result<Pickle<'a>, ImportError> {
    let mut r = Reader {
        data,
        pos: start.min(data.len()),
        what,
    };
    let mut nodes: Vec<Node<'a>> = Vec::new();
    let mut stack: Vec<Slot> = Vec::new();
    let mut memo: HashMap<u64, Id> = HashMap::new();
    macro_rules! push {
        ($n:expr) => {{
            nodes.push($n);
            stack.push(Slot::Val(nodes.len() - 1));
        }};
    }
    loop {
        let at = r.pos;
        let op = r.u8()?;
        let pop = |stack: &mut Vec<Slot>, r: &Reader| -> Result<Id, ImportError> {
            match stack.pop() {
                Some(Slot::Val(id)) => Ok(id),
                Some(Slot::Mark) => Err(r.err(at, format!("opcode 0x{op:02x} found a MARK"))),
                None => Err(r.err(at, format!("opcode 0x{op:02x} on an empty stack"))),
            }
        };
        let pop_mark = |stack: &mut Vec<Slot>, r: &Reader| -> Result<Vec<Id>, ImportError> {
            let mut items = Vec::new();
            loop {
                match stack.pop() {
                    Some(Slot::Val(id)) => items.push(id),
                    Some(Slot::Mark) => break,
                    None => return Err(r.err(at, format!("opcode 0x{op:02x} without a MARK"))),
                }
            }
            items.reverse();
            Ok(items)
        };
        let top = |stack: &Vec<Slot>, r: &Reader| -> Result<Id, ImportError> {
            match stack.last() {
                Some(Slot::Val(id)) => Ok(*id),
                _ => Err(r.err(at, format!("opcode 0x{op:02x} needs a value on the stack"))),
            }
        };
        match op {
            0x80 => {
                // PROTO
                let p = r.u8()?;
                if !(2..=5).contains(&p) {
                    return Err(r.err(at, format!("pickle protocol {p} (this reader knows 2–5)")));
                }
            }
            0x95 => {
                // FRAME: a hint only; the length must still lie within the data.
                let n = r.len(8)?;
                if n > data.len() - r.pos {
                    return Err(r.err(
                        at,
                        format!(
                            "truncated: frame of {n} bytes, {} remain",
                            data.len() - r.pos
                        ),
                    ));
                }
            }
            b'.' => {
                let root = pop(&mut stack, &r)?;
                return Ok(Pickle {
                    nodes,
                    root,
                    end: r.pos,
                });
            }
            b'(' => stack.push(Slot::Mark),
            b'0' => {
                pop(&mut stack, &r)?;
            }
            b'1' => {
                pop_mark(&mut stack, &r)?;
            }
            b'2' => {
                let id = top(&stack, &r)?;
                stack.push(Slot::Val(id));
            }
            b'N' => push!(Node::None),
            0x88 => push!(Node::Bool(true)),
            0x89 => push!(Node::Bool(false)),
            b'J' => {
                let v = r.uint(4)? as u32 as i32;
                push!(Node::Int(v as i64))
            }
            b'K' => {
                let v = r.u8()?;
                push!(Node::Int(v as i64))
            }
            b'M' => {
                let v = r.uint(2)?;
                push!(Node::Int(v as i64))
            }
            0x8a | 0x8b => {
                // LONG1 / LONG4
                let n = if op == 0x8a {
                    r.u8()? as usize
                } else {
                    r.len(4)?
                };
                let b = r.take(n)?;
                if n <= 8 {
                    let mut v: i64 = 0;
                    for (i, &byte) in b.iter().enumerate() {
                        v |= (byte as i64) << (8 * i);
                    }
                    if n > 0 && n < 8 && b[n - 1] & 0x80 != 0 {
                        v -= 1i64 << (8 * n);
                    }
                    push!(Node::Int(v))
                } else {
                    push!(Node::Long(b))
                }
            }
            b'G' => {
                let b = r.take(8)?;
                let mut a = [0u8; 8];
                a.copy_from_slice(b);
                push!(Node::Float(f64::from_be_bytes(a)))
            }
            b'X' | 0x8c | 0x8d => {
                let n = match op {
                    b'X' => r.len(4)?,
                    0x8c => r.u8()? as usize,
                    _ => r.len(8)?,
                };
                let s = r.utf8(n)?;
                push!(Node::Str(s))
            }
            b'B' | b'C' | 0x8e | 0x96 => {
                let n = match op {
                    b'B' => r.len(4)?,
                    b'C' => r.u8()? as usize,
                    _ => r.len(8)?,
                };
                let b = r.take(n)?;
                push!(Node::Bytes(b))
            }
            b')' => push!(Node::Tuple(Vec::new())),
            0x85..=0x87 => {
                let n = (op - 0x84) as usize;
                let mut items = Vec::with_capacity(n);
                for _ in 0..n {
                    items.push(pop(&mut stack, &r)?);
                }
                items.reverse();
                push!(Node::Tuple(items))
            }
            b't' => {
                let items = pop_mark(&mut stack, &r)?;
                push!(Node::Tuple(items))
            }
            b']' => push!(Node::List(Vec::new())),
            b'l' => {
                let items = pop_mark(&mut stack, &r)?;
                push!(Node::List(items))
            }
            b'a' | b'e' => {
                let items = if op == b'a' {
                    vec![pop(&mut stack, &r)?]
                } else {
                    pop_mark(&mut stack, &r)?
                };
                let list = top(&stack, &r)?;
                match &mut nodes[list] {
                    Node::List(v) => v.extend(items),
                    other => return Err(r.err(at, format!("APPEND to a {}", kind(other)))),
                }
            }
            b'}' => push!(Node::Dict(Vec::new())),
            b'd' | b's' | b'u' => {
                let items = if op == b's' {
                    let v = pop(&mut stack, &r)?;
                    let k = pop(&mut stack, &r)?;
                    vec![k, v]
                } else {
                    pop_mark(&mut stack, &r)?
                };
                if items.len() % 2 != 0 {
                    return Err(r.err(at, "dict items come in an odd number"));
                }
                let pairs: Vec<(Id, Id)> = items.chunks(2).map(|c| (c[0], c[1])).collect();
                if op == b'd' {
                    push!(Node::Dict(pairs))
                } else {
                    let d = top(&stack, &r)?;
                    match &mut nodes[d] {
                        Node::Dict(v) => v.extend(pairs),
                        other => return Err(r.err(at, format!("SETITEM on a {}", kind(other)))),
                    }
                }
            }
            0x8f => push!(Node::Set(Vec::new())),
            0x90 => {
                let items = pop_mark(&mut stack, &r)?;
                let s = top(&stack, &r)?;
                match &mut nodes[s] {
                    Node::Set(v) => v.extend(items),
                    other => return Err(r.err(at, format!("ADDITEMS on a {}", kind(other)))),
                }
            }
            0x91 => {
                let items = pop_mark(&mut stack, &r)?;
                push!(Node::Set(items))
            }
            b'c' | 0x93 => {
                let (module, name) = if op == b'c' {
                    (r.line()?.to_string(), r.line()?.to_string())
                } else {
                    let n = pop(&mut stack, &r)?;
                    let m = pop(&mut stack, &r)?;
                    match (&nodes[m], &nodes[n]) {
                        (Node::Str(m), Node::Str(n)) => (m.clone(), n.clone()),
                        _ => return Err(r.err(at, "STACK_GLOBAL needs two strings")),
                    }
                };
                let g = resolve(&module, &name).ok_or_else(|| ImportError::ForbiddenGlobal {
                    what: what.to_string(),
                    offset: at,
                    name: format!("{module}.{name}"),
                })?;
                push!(Node::Global(g))
            }
            b'R' => {
                let args = pop(&mut stack, &r)?;
                let f = pop(&mut stack, &r)?;
                let Node::Global(func) = nodes[f] else {
                    return Err(r.err(at, format!("REDUCE calls a {}", kind(&nodes[f]))));
                };
                let Node::Tuple(a) = &nodes[args] else {
                    return Err(r.err(at, "REDUCE arguments are not a tuple"));
                };
                let node = match func {
                    Global::OrderedDict if a.is_empty() => Node::Dict(Vec::new()),
                    Global::Set => match a.as_slice() {
                        [] => Node::Set(Vec::new()),
                        [l] => match &nodes[*l] {
                            Node::List(v) => Node::Set(v.clone()),
                            _ => return Err(r.err(at, "set() of a non-list")),
                        },
                        _ => return Err(r.err(at, "set() with several arguments")),
                    },
                    Global::NumpyDtype => Node::Object {
                        class: func,
                        args: Some(args),
                        state: None,
                    },
                    Global::NumpyScalar
                    | Global::ReconstructPersistent
                    | Global::LoadFromBytes
                    | Global::RebuildTensorV2
                    | Global::RebuildParameter
                    | Global::RebuildParameterWithState => Node::Call { func, args },
                    other => {
                        return Err(r.err(
                            at,
                            format!("REDUCE of {other:?} with these arguments is not allowed"),
                        ))
                    }
                };
                push!(node)
            }
            0x81 | 0x92 => {
                // NEWOBJ / NEWOBJ_EX: only allowlisted classes, with no constructor arguments.
                if op == 0x92 {
                    pop(&mut stack, &r)?;
                }
                pop(&mut stack, &r)?;
                let c = pop(&mut stack, &r)?;
                match nodes[c] {
                    Node::Global(class @ Global::ModuleDict) => {
                        push!(Node::Object {
                            class,
                            args: None,
                            state: None
                        })
                    }
                    Node::Global(g) => {
                        return Err(r.err(at, format!("NEWOBJ of {g:?} is not allowed")))
                    }
                    ref other => return Err(r.err(at, format!("NEWOBJ of a {}", kind(other)))),
                }
            }
            b'b' => {
                let st = pop(&mut stack, &r)?;
                let o = top(&stack, &r)?;
                match &mut nodes[o] {
                    Node::Object { state, .. } if state.is_none() => *state = Some(st),
                    other => return Err(r.err(at, format!("BUILD on a {}", kind(other)))),
                }
            }
            b'q' | b'r' | 0x94 => {
                let key = match op {
                    b'q' => r.u8()? as u64,
                    b'r' => r.uint(4)?,
                    _ => memo.len() as u64,
                };
                let id = top(&stack, &r)?;
                memo.insert(key, id);
            }
            b'h' | b'j' => {
                let key = if op == b'h' {
                    r.u8()? as u64
                } else {
                    r.uint(4)?
                };
                let id = *memo
                    .get(&key)
                    .ok_or_else(|| r.err(at, format!("memo entry {key} was never stored")))?;
                stack.push(Slot::Val(id));
            }
            b'Q' if persid => {
                let pid = pop(&mut stack, &r)?;
                push!(Node::PersId(pid))
            }
            b'Q' | b'P' => {
                return Err(r.err(at, "persistent ids are only allowed inside storage blobs"))
            }
            0x97 | 0x98 => {
                return Err(r.err(at, "out-of-band buffers (protocol 5) are not supported"))
            }
            _ => {
                return Err(r.err(
                    at,
                    format!(
                        "opcode 0x{op:02x} ('{}') is not supported",
                        (op as char).escape_default()
                    ),
                ))
            }
        }
    }
}

/// A short name of a node's kind for error messages.
pub fn kind(n: &Node<'_>) -> &'static str {
    match n {
        Node::None => "None",
        Node::Bool(_) => "bool",
        Node::Int(_) | Node::Long(_) => "int",
        Node::Float(_) => "float",
        Node::Str(_) => "str",
        Node::Bytes(_) => "bytes",
        Node::Tuple(_) => "tuple",
        Node::List(_) => "list",
        Node::Dict(_) => "dict",
        Node::Set(_) => "set",
        Node::Global(_) => "global",
        Node::Call { .. } => "call result",
        Node::Object { .. } => "object",
        Node::PersId(_) => "persistent id",
    }
}
