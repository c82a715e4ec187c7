"""Reads and writes the safetensors format (an 8-byte little-endian header length, a JSON header
of name → dtype, shape and byte range, then the raw little-endian data) with torch alone, so the
benchmark and fixture scripts need no package beyond torch, also on machines without internet."""

import json

import torch

_DTYPES = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "I64": torch.int64,
    "I32": torch.int32,
    "U8": torch.uint8,
}


def load(path):
    """name → CPU tensor of every tensor in the file (the metadata is skipped)."""
    with open(path, "rb") as f:
        data = f.read()
    n = int.from_bytes(data[:8], "little")
    header = json.loads(data[8 : 8 + n])
    body = memoryview(data)[8 + n :]
    out = {}
    for name, h in header.items():
        if name == "__metadata__":
            continue
        if h["dtype"] not in _DTYPES:
            raise ValueError(f"{path}: {name}: unsupported dtype {h['dtype']}")
        b, e = h["data_offsets"]
        t = torch.frombuffer(bytearray(body[b:e]), dtype=_DTYPES[h["dtype"]]) if e > b else torch.empty(0, dtype=_DTYPES[h["dtype"]])
        out[name] = t.reshape(h["shape"])
    return out


def save(path, tensors, meta=None):
    """Writes name → tensor as float32, with string metadata `meta`."""
    header, blobs, off = {}, [], 0
    for name, t in tensors.items():
        b = t.detach().cpu().contiguous().float().numpy().tobytes()
        header[name] = {"dtype": "F32", "shape": list(t.shape), "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    if meta:
        header["__metadata__"] = meta
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(len(h).to_bytes(8, "little") + h + b"".join(blobs))
