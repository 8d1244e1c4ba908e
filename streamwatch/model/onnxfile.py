"""Just enough of the ONNX protobuf wire format to refuse external-data references.

The serving path has no ``onnx`` package (it is a training extra), and onnxruntime would read
external tensors from paths named inside the file.  Walking the few fields that can hold them
needs no schema: ModelProto.graph (7) -> GraphProto.initializer (5) / sparse_initializer (15) /
node (1) -> NodeProto.attribute (5) -> AttributeProto.t (5) / g (6) / tensors (10) / graphs (11);
a TensorProto is external when data_location (14) == 1 or external_data (13) is present.
"""

from __future__ import annotations

from collections.abc import Iterator

_EXTERNAL_DATA, _DATA_LOCATION = 13, 14


def _fields(buf: bytes) -> Iterator[tuple[int, int, int | bytes]]:
    """(field number, wire type, value) of one message; fixed-width values are skipped."""
    i, n = 0, len(buf)
    while i < n:
        key, i = _varint(buf, i)
        field, wire = key >> 3, key & 7
        if wire == 0:
            value, i = _varint(buf, i)
            yield field, wire, value
        elif wire == 1:
            i += 8
        elif wire == 2:
            size, i = _varint(buf, i)
            if i + size > n:
                raise ValueError("truncated field")
            yield field, wire, buf[i : i + size]
            i += size
        elif wire == 5:
            i += 4
        else:
            raise ValueError(f"unsupported wire type {wire}")


def _varint(buf: bytes, i: int) -> tuple[int, int]:
    shift = result = 0
    while True:
        if i >= len(buf):
            raise ValueError("truncated varint")
        b = buf[i]
        i += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, i
        shift += 7


def _messages(buf: bytes, numbers: tuple[int, ...]) -> Iterator[tuple[int, bytes]]:
    for f, w, v in _fields(buf):
        if w == 2 and f in numbers and isinstance(v, bytes):
            yield f, v


def _tensor_is_external(t: bytes) -> bool:
    return any(
        (f == _EXTERNAL_DATA and w == 2) or (f == _DATA_LOCATION and w == 0 and v == 1)
        for f, w, v in _fields(t)
    )


def _graph_has_external(g: bytes) -> bool:
    for f, v in _messages(g, (1, 5, 15)):
        if f == 5 and _tensor_is_external(v):  # initializer
            return True
        if f == 15 and any(_tensor_is_external(t) for _, t in _messages(v, (1, 2))):
            return True  # sparse initializer: values and indices
        if f == 1 and _node_has_external(v):
            return True
    return False


def _node_has_external(node: bytes) -> bool:
    for _, attr in _messages(node, (5,)):
        for f, v in _messages(attr, (5, 6, 10, 11)):
            if f in (5, 10) and _tensor_is_external(v):
                return True
            if f in (6, 11) and _graph_has_external(v):
                return True
    return False


def has_external_data(model: bytes) -> bool:
    """True when any tensor of the ONNX model lives outside the file.

    Raises ValueError when the bytes are not a well-formed protobuf message.
    """
    return any(_graph_has_external(g) for _, g in _messages(model, (7,)))
