"""Channel coding for the watermark payload: CRC-32 framing and a K=7, rate-1/3 convolutional code.

The payload is framed with its CRC-32 so that a decoded frame either checks out or is rejected: a random image
passes with probability 2^-32. The convolutional code (the LTE generators 133/171/165, octal) with soft-decision
Viterbi decoding lets the detector recover a frame whose individual chips are mostly noise.
"""

from __future__ import annotations

import zlib

import numpy as np

CONSTRAINT_LENGTH = 7
GENERATORS = (0o133, 0o171, 0o165)
CRC_BYTES = 4
_STATES = 1 << (CONSTRAINT_LENGTH - 1)
_TAIL = CONSTRAINT_LENGTH - 1


def _parity(value: int) -> int:
    return bin(value).count("1") & 1


def _trellis() -> tuple[np.ndarray, np.ndarray]:
    """For each next state: its two predecessor states, and the ±1 symbols emitted on each of those branches.

    The shift register is (input bit << 6) | state; the next state is that register shifted right by one, so
    the input bit is the next state's top bit and the predecessor's low bit is the one that fell off.
    """
    predecessors = np.zeros((_STATES, 2), dtype=np.int64)
    symbols = np.zeros((_STATES, 2, len(GENERATORS)), dtype=np.float32)
    for next_state in range(_STATES):
        input_bit = next_state >> (CONSTRAINT_LENGTH - 2)
        for low_bit in (0, 1):
            state = ((next_state << 1) & (_STATES - 1)) | low_bit
            register = (input_bit << (CONSTRAINT_LENGTH - 1)) | state
            predecessors[next_state, low_bit] = state
            symbols[next_state, low_bit] = [2 * _parity(register & g) - 1 for g in GENERATORS]
    return predecessors, symbols


_PREDECESSORS, _BRANCH_SYMBOLS = _trellis()


def coded_length(payload_bytes: int) -> int:
    """Number of code symbols carrying a payload of this size (with its CRC and the zero tail)."""
    return ((payload_bytes + CRC_BYTES) * 8 + _TAIL) * len(GENERATORS)


def encode(payload: bytes) -> np.ndarray:
    """payload → CRC-framed bits → convolutional code symbols, as ±1 float32."""
    frame = payload + zlib.crc32(payload).to_bytes(CRC_BYTES, "big")
    bits = np.unpackbits(np.frombuffer(frame, dtype=np.uint8)).tolist() + [0] * _TAIL
    state, symbols = 0, list[int]()
    for bit in bits:
        register = (bit << (CONSTRAINT_LENGTH - 1)) | state
        symbols.extend(2 * _parity(register & g) - 1 for g in GENERATORS)
        state = register >> 1
    return np.asarray(symbols, dtype=np.float32)


def decode(soft: np.ndarray, payload_bytes: int) -> bytes | None:
    """Soft symbols (positive means +1) → the payload, or None when the decoded frame fails its CRC."""
    per_step = soft.reshape(-1, len(GENERATORS)).astype(np.float32)
    metric = np.full(_STATES, -np.inf, dtype=np.float32)
    metric[0] = 0.0  # the encoder starts in state 0
    decisions = np.zeros((len(per_step), _STATES), dtype=np.int64)
    rows = np.arange(_STATES)
    for step, received in enumerate(per_step):
        candidates = metric[_PREDECESSORS] + _BRANCH_SYMBOLS @ received
        decisions[step] = np.argmax(candidates, axis=1)
        metric = candidates[rows, decisions[step]]
    state, bits = 0, []  # the zero tail brings the encoder back to state 0
    for choice in decisions[::-1]:
        bits.append(state >> (CONSTRAINT_LENGTH - 2))
        state = int(_PREDECESSORS[state, choice[state]])
    frame = np.packbits(np.asarray(bits[::-1][: (payload_bytes + CRC_BYTES) * 8], dtype=np.uint8)).tobytes()
    payload, crc = frame[:payload_bytes], frame[payload_bytes:]
    return payload if zlib.crc32(payload).to_bytes(CRC_BYTES, "big") == crc else None
