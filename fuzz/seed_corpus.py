"""Seeds for the checkpoint fuzz targets, written by the tools that write real checkpoints:
torch.save (a zip archive with data.pkl), pickle itself, and safetensors.

    python fuzz/seed_corpus.py fuzz/corpus     (then `cargo fuzz run pickle_read` etc.)
"""
import io
import os
import pickle
import sys
import zipfile
from collections import OrderedDict

import torch
from safetensors.torch import save as safetensors_bytes

out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "corpus")
pk = os.path.join(out, "pickle_read")
st = os.path.join(out, "safetensors_header")
os.makedirs(pk, exist_ok=True)
os.makedirs(st, exist_ok=True)

torch.manual_seed(0)
sd = OrderedDict(
    [
        ("image_encoder.w", torch.randn(2, 3)),
        ("obj_ptr_proj.b", torch.randn(4).to(torch.bfloat16)),
        ("maskmem_tpos_enc", torch.randn(3, 2).t()),  # a non-contiguous view
        ("counts", torch.arange(3, dtype=torch.int64)),
        ("flag", torch.tensor([True, False])),
        ("half", torch.randn(2).half()),
    ]
)


def write(path, data):
    with open(path, "wb") as f:
        f.write(data)


# torch.save: the official {"model": state_dict} and a bare state dict.
for name, obj in [("official.pt", {"model": sd}), ("bare.pt", sd)]:
    buf = io.BytesIO()
    torch.save(obj, buf)
    write(os.path.join(pk, name), buf.getvalue())
    # The pickle inside, on its own: what the VM reads.
    with zipfile.ZipFile(io.BytesIO(buf.getvalue())) as z:
        pkl = next(n for n in z.namelist() if n.endswith("/data.pkl"))
        write(os.path.join(pk, name.replace(".pt", ".data.pkl")), z.read(pkl))

# Plain pickles of the values a state dict holds, protocols 2 and 4.
plain = {"model": {"a": 1, "b": [1.5, None, True], "c": (b"bytes", "text" * 3), "d": -(2**40)}}
for proto in (2, 4):
    write(os.path.join(pk, f"plain.p{proto}.pkl"), pickle.dumps(plain, protocol=proto))

# safetensors: the file, and the same split as "header\nbody" (the target reframes it).
small = {k: v.contiguous() for k, v in sd.items()}
blob = safetensors_bytes(small)
write(os.path.join(st, "small.safetensors"), blob)
n = int.from_bytes(blob[:8], "little")
write(os.path.join(st, "small.framed"), blob[8 : 8 + n] + b"\n" + blob[8 + n :])
write(os.path.join(st, "one.safetensors"), safetensors_bytes({"x": torch.zeros(1)}))
print(f"seeds in {pk} ({len(os.listdir(pk))}) and {st} ({len(os.listdir(st))})")
