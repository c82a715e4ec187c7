//! PyTorch's pickled tensors: the legacy `torch.save` blob that `torch.storage._load_from_bytes`
//! holds (magic, protocol, system info, the storage's persistent id, its key list, then raw
//! little-endian data), and `_rebuild_tensor_v2` views checked against their storage.

use super::pickle::{self, Global, Node, StorageType};
use super::ImportError;

/// Magic number that opens a legacy `torch.save` file.
const MAGIC: u128 = 0x1950a86a20f9469cfc6c;
/// The legacy format's protocol version.
const PROTOCOL: i64 = 1001;

/// One storage: element type and its raw little-endian bytes (a slice of the input file).
#[derive(Debug, Clone, Copy)]
pub struct Storage<'a> {
    /// Element type.
    pub dtype: StorageType,
    /// Raw bytes, exactly `numel · size` of them.
    pub data: &'a [u8],
}

impl Storage<'_> {
    /// Number of elements.
    pub fn numel(&self) -> usize {
        self.data.len() / self.dtype.size()
    }
}

/// A strided view of a storage, checked to stay inside it.
#[derive(Debug, Clone)]
pub struct TensorView<'a> {
    /// The storage it reads.
    pub storage: Storage<'a>,
    /// Offset of element [0, …, 0] in elements.
    pub offset: usize,
    /// Shape.
    pub size: Vec<usize>,
    /// Strides in elements.
    pub stride: Vec<usize>,
}

impl TensorView<'_> {
    /// Number of elements.
    pub fn numel(&self) -> usize {
        self.size.iter().product()
    }

    /// The elements in row-major order, as contiguous little-endian bytes.
    pub fn contiguous_bytes(&self) -> Vec<u8> {
        let es = self.storage.dtype.size();
        let n = self.numel();
        // n ≤ storage elements (checked at construction), so this allocation is backed by data.
        let mut out = Vec::with_capacity(n * es);
        if n == 0 {
            return out;
        }
        let nd = self.size.len();
        let mut idx = vec![0usize; nd];
        let mut pos = self.offset;
        for _ in 0..n {
            out.extend_from_slice(&self.storage.data[pos * es..(pos + 1) * es]);
            // Odometer increment, innermost dimension fastest.
            for d in (0..nd).rev() {
                idx[d] += 1;
                pos += self.stride[d];
                if idx[d] < self.size[d] {
                    break;
                }
                pos -= self.stride[d] * self.size[d];
                idx[d] = 0;
            }
        }
        out
    }
}

fn blob_err(what: &str, reason: impl Into<String>) -> ImportError {
    ImportError::Tensor {
        what: what.to_string(),
        reason: reason.into(),
    }
}

fn as_str<'n>(p: &'n pickle::Pickle<'_>, id: usize) -> Option<&'n str> {
    match &p.nodes[id] {
        Node::Str(s) => Some(s),
        _ => None,
    }
}

fn as_int(p: &pickle::Pickle<'_>, id: usize) -> Option<i64> {
    match p.nodes[id] {
        Node::Int(v) => Some(v),
        _ => None,
    }
}

/// Reads a legacy `torch.save` blob holding one typed storage.
pub fn load_storage_blob<'a>(blob: &'a [u8], what: &str) -> Result<Storage<'a>, ImportError> {
    // 1. magic number
    let p = pickle::parse(blob, 0, false, what)?;
    let magic_ok = match &p.nodes[p.root] {
        Node::Long(b) if b.len() <= 16 => {
            let mut a = [0u8; 16];
            a[..b.len()].copy_from_slice(b);
            u128::from_le_bytes(a) == MAGIC
        }
        _ => false,
    };
    if !magic_ok {
        return Err(blob_err(
            what,
            "not a legacy torch.save blob (bad magic number)",
        ));
    }
    // 2. protocol version
    let p = pickle::parse(blob, p.end, false, what)?;
    if as_int(&p, p.root) != Some(PROTOCOL) {
        return Err(blob_err(
            what,
            format!("legacy format version is not {PROTOCOL}"),
        ));
    }
    // 3. system info: data must be little-endian
    let p = pickle::parse(blob, p.end, false, what)?;
    if let Node::Dict(items) = &p.nodes[p.root] {
        for &(k, v) in items {
            if as_str(&p, k) == Some("little_endian") && !matches!(p.nodes[v], Node::Bool(true)) {
                return Err(blob_err(what, "big-endian storage data is not supported"));
            }
        }
    } else {
        return Err(blob_err(what, "system info is not a dict"));
    }
    // 4. the object: one storage by persistent id ('storage', type, key, location, numel, view)
    let p = pickle::parse(blob, p.end, true, what)?;
    let Node::PersId(pid) = p.nodes[p.root] else {
        return Err(blob_err(
            what,
            format!(
                "blob holds a {}, not a storage",
                pickle::kind(&p.nodes[p.root])
            ),
        ));
    };
    let Node::Tuple(f) = &p.nodes[pid] else {
        return Err(blob_err(what, "storage persistent id is not a tuple"));
    };
    if f.len() < 5 || as_str(&p, f[0]) != Some("storage") {
        return Err(blob_err(
            what,
            "persistent id is not ('storage', type, key, location, numel, …)",
        ));
    }
    let Node::Global(Global::Storage(dtype)) = p.nodes[f[1]] else {
        return Err(blob_err(what, "storage type is not a float storage class"));
    };
    let key = as_str(&p, f[2])
        .ok_or_else(|| blob_err(what, "storage key is not a string"))?
        .to_string();
    let numel = as_int(&p, f[4])
        .and_then(|v| usize::try_from(v).ok())
        .ok_or_else(|| blob_err(what, "storage size is not a non-negative integer"))?;
    if f.len() > 5 && !matches!(p.nodes[f[5]], Node::None) {
        return Err(blob_err(
            what,
            "storage views (view_metadata) are not supported",
        ));
    }
    // 5. key list
    let keys = pickle::parse(blob, p.end, false, what)?;
    let Node::List(ks) = &keys.nodes[keys.root] else {
        return Err(blob_err(what, "storage key list is not a list"));
    };
    if ks.len() != 1 || as_str(&keys, ks[0]) != Some(key.as_str()) {
        return Err(blob_err(
            what,
            format!("key list does not name exactly storage `{key}`"),
        ));
    }
    // 6. raw data: int64 element count, then the elements
    let mut pos = keys.end;
    let head = blob
        .get(pos..pos + 8)
        .ok_or_else(|| blob_err(what, "truncated before the storage's element count"))?;
    let mut a = [0u8; 8];
    a.copy_from_slice(head);
    let stored = i64::from_le_bytes(a);
    pos += 8;
    if usize::try_from(stored).ok() != Some(numel) {
        return Err(blob_err(
            what,
            format!("storage `{key}` declares {numel} elements but its data header says {stored}"),
        ));
    }
    let nbytes = numel
        .checked_mul(dtype.size())
        .ok_or_else(|| blob_err(what, "storage size overflows"))?;
    let left = blob.len() - pos;
    if nbytes > left {
        return Err(blob_err(
            what,
            format!("truncated: storage `{key}` needs {nbytes} bytes, {left} remain"),
        ));
    }
    if nbytes < left {
        return Err(blob_err(
            what,
            format!("{} trailing bytes after storage `{key}`", left - nbytes),
        ));
    }
    Ok(Storage {
        dtype,
        data: &blob[pos..pos + nbytes],
    })
}

/// Builds a view from `_rebuild_tensor_v2`'s offset, size and stride, checking every index
/// against the storage, and refusing views with more elements than their storage holds.
pub fn make_view<'a>(
    storage: Storage<'a>,
    offset: i64,
    size: &[i64],
    stride: &[i64],
    what: &str,
) -> Result<TensorView<'a>, ImportError> {
    let bad = |r: String| blob_err(what, r);
    if size.len() != stride.len() {
        return Err(bad(format!(
            "size {size:?} and stride {stride:?} differ in length"
        )));
    }
    let offset =
        usize::try_from(offset).map_err(|_| bad(format!("negative storage offset {offset}")))?;
    let to_u = |v: &[i64], name: &str| -> Result<Vec<usize>, ImportError> {
        v.iter()
            .map(|&x| usize::try_from(x).map_err(|_| bad(format!("negative {name} in {v:?}"))))
            .collect()
    };
    let (size, stride) = (to_u(size, "size")?, to_u(stride, "stride")?);
    let avail = storage.numel();
    let mut numel: usize = 1;
    let mut last = offset;
    for (&n, &s) in size.iter().zip(&stride) {
        numel = numel
            .checked_mul(n)
            .ok_or_else(|| bad(format!("size {size:?} overflows")))?;
        if n > 0 {
            last = (n - 1)
                .checked_mul(s)
                .and_then(|d| last.checked_add(d))
                .ok_or_else(|| bad(format!("stride {stride:?} overflows")))?;
        }
    }
    if numel > 0 && last >= avail {
        return Err(bad(format!(
            "size {size:?}, stride {stride:?}, offset {offset} reach element {last} of a storage of {avail}"
        )));
    }
    if numel == 0 && offset > avail {
        return Err(bad(format!("offset {offset} beyond a storage of {avail}")));
    }
    if numel > avail {
        return Err(bad(format!(
            "{numel} elements from a storage of {avail}: overlapping (broadcast) views are not supported"
        )));
    }
    Ok(TensorView {
        storage,
        offset,
        size,
        stride,
    })
}
