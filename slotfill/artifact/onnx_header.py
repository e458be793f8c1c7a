"""What an ONNX file declares (inputs, outputs, initializer shapes), read without onnx or onnxruntime.

The loader checks a graph against the model's config before onnxruntime builds a session from it, and
a service installed with ``slotfill[serve]`` has onnxruntime but not the ``onnx`` package, so this reads
the few protobuf fields it needs itself: ``ModelProto.graph`` (7); ``GraphProto.initializer`` (5),
``input`` (11), ``output`` (12); ``TensorProto.dims`` (1), ``external_data`` (13), ``data_location``
(14); ``ValueInfoProto.type`` (2) -> ``TypeProto.tensor_type`` (1) -> ``shape`` (2) -> ``dim`` (1) ->
``dim_value`` (1) / ``dim_param`` (2). Tensor data is skipped over, never copied.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from slotfill.errors import ArtifactError

_VARINT, _FIXED64, _BYTES, _FIXED32 = 0, 1, 2, 5
_EXTERNAL = 1  # TensorProto.DataLocation.EXTERNAL


class _Malformed(Exception):
    pass


@dataclass
class GraphSummary:
    """``inputs``/``outputs``: name -> dims (an int, or the name of a dynamic dimension), in graph order;
    ``initializers``: name -> dims; ``external``: initializers whose data lives in another file."""

    inputs: dict[str, list[int | str]] = field(default_factory=dict)
    outputs: dict[str, list[int | str]] = field(default_factory=dict)
    initializers: dict[str, list[int]] = field(default_factory=dict)
    external: list[str] = field(default_factory=list)

    @property
    def initializer_elements(self) -> int:
        total = 0
        for dims in self.initializers.values():
            count = 1
            for d in dims:
                count *= d
            total += count
        return total


def read_graph_summary(path: Path, max_bytes: int) -> GraphSummary:
    """Parse ``path`` as an ONNX ModelProto; :class:`ArtifactError` naming the file when it is not one, or
    when it is larger than ``max_bytes`` (checked before reading it)."""
    try:
        size = path.stat().st_size
        if size > max_bytes:
            raise ArtifactError(f"{path}: {size:,} bytes, more than the {max_bytes:,} a graph of this model could "
                                f"need")
        data = memoryview(path.read_bytes())
    except FileNotFoundError:
        raise ArtifactError(f"{path}: missing") from None
    try:
        graphs = [value for number, _, value in _fields(data) if number == 7]
        if len(graphs) != 1 or not isinstance(graphs[0], memoryview):
            raise _Malformed
        return _graph(graphs[0])
    except (_Malformed, IndexError, UnicodeDecodeError):
        raise ArtifactError(f"{path}: not an ONNX model (its protobuf does not parse as a graph)") from None


def _graph(data: memoryview) -> GraphSummary:
    summary = GraphSummary()
    for number, wire, value in _fields(data):
        if number in (5, 11, 12) and wire != _BYTES:
            raise _Malformed
        if number == 5:
            name, dims, external = _tensor(value)
            summary.initializers[name] = dims
            if external:
                summary.external.append(name)
        elif number in (11, 12):
            name, dims = _value_info(value)
            (summary.inputs if number == 11 else summary.outputs)[name] = dims
    return summary


def _tensor(data: memoryview) -> tuple[str, list[int], bool]:
    name, dims, external = "", [], False
    for number, wire, value in _fields(data):
        if number == 1:
            dims.extend(_ints(wire, value))
        elif number == 8:
            name = _text(value)
        elif number == 13 or (number == 14 and value == _EXTERNAL):
            external = True
    if any(d < 0 for d in dims):
        raise _Malformed
    return name, dims, external


def _value_info(data: memoryview) -> tuple[str, list[int | str]]:
    name, dims = "", []
    for number, _, value in _fields(data):
        if number == 1:
            name = _text(value)
        elif number == 2:
            dims = _type_dims(value)
    return name, dims


def _type_dims(data: memoryview) -> list[int | str]:
    for number, _, tensor_type in _fields(data):
        if number == 1:
            for shape_number, _, shape in _fields(tensor_type):
                if shape_number == 2:
                    return [_dimension(dim) for dim_number, _, dim in _fields(shape) if dim_number == 1]
    return []


def _dimension(data: memoryview) -> int | str:
    for number, _, value in _fields(data):
        if number == 1:
            return _signed(value)
        if number == 2:
            return _text(value)
    return "?"


def _fields(data: memoryview) -> Iterator[tuple[int, int, int | memoryview]]:
    """(field number, wire type, value) of each field of one message; length-delimited values as views."""
    if not isinstance(data, memoryview):
        raise _Malformed
    pos, end = 0, len(data)
    while pos < end:
        key, pos = _varint(data, pos)
        number, wire = key >> 3, key & 7
        if wire == _VARINT:
            value, pos = _varint(data, pos)
        elif wire == _BYTES:
            length, pos = _varint(data, pos)
            value, pos = data[pos:pos + length], pos + length
        elif wire in (_FIXED64, _FIXED32):
            value, pos = 0, pos + (8 if wire == _FIXED64 else 4)
        else:  # groups (3, 4) are not in ONNX's schema; anything else is not protobuf
            raise _Malformed
        if pos > end or number == 0:
            raise _Malformed
        yield number, wire, value


def _varint(data: memoryview, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(data) or shift > 63:
            raise _Malformed
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return result, pos


def _ints(wire: int, value: int | memoryview) -> list[int]:
    if wire == _VARINT:
        return [_signed(value)]
    if wire != _BYTES:
        raise _Malformed
    values, pos = [], 0
    while pos < len(value):
        item, pos = _varint(value, pos)
        values.append(_signed(item))
    return values


def _signed(value: int | memoryview) -> int:
    if not isinstance(value, int):
        raise _Malformed
    return value - (1 << 64) if value >= 1 << 63 else value


def _text(value: int | memoryview) -> str:
    if not isinstance(value, memoryview):
        raise _Malformed
    return bytes(value).decode("utf-8")
