"""bottleneck's metadata (spec, preprocessing, calibration, training summary) from a model
file's safetensors header, for the bench scripts."""

import json
import struct


def metadata(path):
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        if n > 64 << 20:
            raise ValueError(f"{path}: header of {n} bytes")
        header = json.loads(f.read(n))
    return json.loads(header["__metadata__"]["bottleneck"])
