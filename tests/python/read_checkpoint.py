#!/usr/bin/env python3
"""Reads an amp checkpoint with the standard safetensors Python package and prints what it holds.

Usage: python3 tests/python/read_checkpoint.py PATH.safetensors   (needs `pip install safetensors numpy`)

A manual interoperability check: the Rust test suite does not depend on Python.
"""
import sys

from safetensors import safe_open
from safetensors.numpy import load_file


def main(path: str) -> None:
    with safe_open(path, framework="numpy") as f:
        metadata = f.metadata() or {}
    print("metadata:")
    for key in sorted(metadata):
        print(f"  {key} = {metadata[key]}")
    tensors = load_file(path)
    print("tensors:")
    for name in sorted(tensors):
        t = tensors[name]
        values = f"  {t.tolist()}" if t.size <= 6 else ""
        print(f"  {name:40} {str(t.dtype):8} {str(tuple(t.shape)):10}{values}")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    main(sys.argv[1])
