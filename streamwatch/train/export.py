"""Export a trained Forecaster as a one-step ONNX graph with packed, explicit LSTM state.

The graph is written node by node with ``onnx.helper`` instead of through torch's exporters:
the result does not depend on which exporter a torch release ships, and the state is one
contiguous row per stream ([h0, c0, h1, c1, ...]), which the daemon gathers and scatters
without reshaping.  PyTorch's gate order (input, forget, cell, output) is kept.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx
import torch
from onnx import TensorProto, helper, numpy_helper

from streamwatch.model.artifact import (
    INPUT_STATE,
    INPUT_X,
    OUTPUT_MU,
    OUTPUT_SIGMA,
    OUTPUT_STATE,
)
from streamwatch.train.module import LOG_SIGMA_BOUND, Forecaster

OPSET = 17


def export_onnx(model: Forecaster) -> bytes:
    """Serialise ``model`` as ONNX bytes: (x, state) -> (mu, sigma, state_out)."""
    hidden, layers = model.hidden_size, model.layers
    nodes: list[onnx.NodeProto] = []
    inits: list[onnx.TensorProto] = []

    def const(name: str, value: np.ndarray) -> str:
        inits.append(numpy_helper.from_array(np.ascontiguousarray(value), name))
        return name

    def node(op: str, inputs: list[str], name: str, **attrs: Any) -> str:
        nodes.append(helper.make_node(op, inputs, [name], name=name, **attrs))
        return name

    def cols(src: str, start: int, stop: int, name: str) -> str:
        s = const(f"{name}_s", np.array([start], np.int64))
        e = const(f"{name}_e", np.array([stop], np.int64))
        a = const(f"{name}_a", np.array([1], np.int64))
        return node("Slice", [src, s, e, a], name)

    layer_in = INPUT_X
    packed: list[str] = []
    for layer in range(layers):
        w_ih = getattr(model.lstm, f"weight_ih_l{layer}").detach().cpu().numpy()
        w_hh = getattr(model.lstm, f"weight_hh_l{layer}").detach().cpu().numpy()
        b = getattr(model.lstm, f"bias_ih_l{layer}") + getattr(model.lstm, f"bias_hh_l{layer}")
        w = const(f"W{layer}", np.concatenate([w_ih, w_hh], axis=1).T.astype(np.float32))
        bias = const(f"B{layer}", b.detach().cpu().numpy().astype(np.float32))
        base = 2 * layer * hidden
        h_prev = cols(INPUT_STATE, base, base + hidden, f"h_prev{layer}")
        c_prev = cols(INPUT_STATE, base + hidden, base + 2 * hidden, f"c_prev{layer}")
        xh = node("Concat", [layer_in, h_prev], f"xh{layer}", axis=1)
        gates = node("Add", [node("MatMul", [xh, w], f"mm{layer}"), bias], f"gates{layer}")
        i, f, g, o = (
            cols(gates, k * hidden, (k + 1) * hidden, f"{n}{layer}") for k, n in enumerate("ifgo")
        )
        c_new = node(
            "Add",
            [
                node("Mul", [node("Sigmoid", [f], f"sf{layer}"), c_prev], f"fc{layer}"),
                node(
                    "Mul",
                    [node("Sigmoid", [i], f"si{layer}"), node("Tanh", [g], f"tg{layer}")],
                    f"ig{layer}",
                ),
            ],
            f"c{layer}",
        )
        h_new = node(
            "Mul",
            [node("Sigmoid", [o], f"so{layer}"), node("Tanh", [c_new], f"tc{layer}")],
            f"h{layer}",
        )
        packed += [h_new, c_new]
        layer_in = h_new

    n_t = model.n_targets
    w_head = const("W_head", model.head.weight.detach().cpu().numpy().T.astype(np.float32))
    b_head = const("B_head", model.head.bias.detach().cpu().numpy().astype(np.float32))
    y = node("Add", [node("MatMul", [layer_in, w_head], "head_mm"), b_head], "head")
    # mu is a residual on the current reading, as in Forecaster.forward
    nodes.append(
        helper.make_node(
            "Add", [cols(INPUT_X, 0, n_t, "x_targets"), cols(y, 0, n_t, "delta")], [OUTPUT_MU]
        )
    )
    lo = const("ls_lo", np.array(-LOG_SIGMA_BOUND, np.float32))
    hi = const("ls_hi", np.array(LOG_SIGMA_BOUND, np.float32))
    log_sigma = node("Clip", [cols(y, n_t, 2 * n_t, "ls_cols"), lo, hi], "log_sigma")
    nodes.append(helper.make_node("Exp", [log_sigma], [OUTPUT_SIGMA]))
    nodes.append(helper.make_node("Concat", packed, [OUTPUT_STATE], axis=1))

    state_size = 2 * layers * hidden

    def io(name: str, width: int) -> onnx.ValueInfoProto:
        return helper.make_tensor_value_info(name, TensorProto.FLOAT, ["batch", width])

    graph = helper.make_graph(
        nodes,
        "streamwatch_lstm_step",
        [io(INPUT_X, model.n_features), io(INPUT_STATE, state_size)],
        [io(OUTPUT_MU, n_t), io(OUTPUT_SIGMA, n_t), io(OUTPUT_STATE, state_size)],
        initializer=inits,
    )
    proto = helper.make_model(
        graph, producer_name="streamwatch", opset_imports=[helper.make_opsetid("", OPSET)]
    )
    proto.ir_version = 8  # readable by onnxruntime >= 1.10
    onnx.checker.check_model(proto, full_check=True)
    return proto.SerializeToString()


def forecaster_from_onnx(onnx_bytes: bytes, layers: int, hidden: int) -> Forecaster:
    """Rebuild the torch module from an exported graph's weights (the inverse of export_onnx),
    so that a shipped model, which carries no torch checkpoint, can be checked against torch."""
    proto = onnx.load_from_string(onnx_bytes)
    w = {t.name: numpy_helper.to_array(t) for t in proto.graph.initializer}
    n_t = w["B_head"].shape[0] // 2
    n_features = w["W0"].shape[0] - hidden
    model = Forecaster(n_features, n_t, hidden, layers)
    with torch.no_grad():
        for layer in range(layers):
            both = torch.from_numpy(w[f"W{layer}"].T.copy())
            n_in = both.shape[1] - hidden
            getattr(model.lstm, f"weight_ih_l{layer}").copy_(both[:, :n_in])
            getattr(model.lstm, f"weight_hh_l{layer}").copy_(both[:, n_in:])
            getattr(model.lstm, f"bias_ih_l{layer}").copy_(torch.from_numpy(w[f"B{layer}"].copy()))
            getattr(model.lstm, f"bias_hh_l{layer}").zero_()
        model.head.weight.copy_(torch.from_numpy(w["W_head"].T.copy()))
        model.head.bias.copy_(torch.from_numpy(w["B_head"].copy()))
    return model.eval()
