"""The tagger's network as an ONNX graph, built from its saved weights (NumPy) and config.

The graph is written node by node rather than traced from torch: the recurrent layers map onto
ONNX's own ``LSTM`` / ``GRU`` / ``RNN`` operators, whose ``sequence_lens`` input gives exactly
what packed sequences give in torch (the backward direction starts at each row's last real
token, padding never leaks into real positions), and the result does not depend on the torch
exporter of the day. Building needs ``onnx`` and NumPy only.

Inputs: ``word_ids`` (B, T) int64, 0 = padding; ``lengths`` (B,) int64; with a character CNN also
``word_chars`` (N, L) int64, the character ids of N words to encode, ``known_chars`` (M, channels)
float32, features of words encoded by an earlier call, and ``char_index`` (B, T) int64, each
position's row in [known_chars; the N encoded words] (see :class:`slotfill.inference.engines.OnnxEngine`).
Outputs (float32): ``emissions`` (B, T, K); for a model with intents ``intent_logits`` (B, I); with a
character CNN ``word_char_features`` (N, channels), the encoded words. B, T, N, M and L are dynamic.
"""

from __future__ import annotations

import numpy as np

from slotfill.errors import ArtifactError
from slotfill.models.config import TaggerConfig

OPSET = 17
# torch packs gates as (i, f, g, o) for LSTM and (r, z, n) for GRU; ONNX wants (i, o, f, c) and (z, r, h).
_GATE_ORDER = {"lstm": (0, 3, 1, 2), "gru": (1, 0, 2), "rnn": (0,)}
_OPERATOR = {"lstm": "LSTM", "gru": "GRU", "rnn": "RNN"}


def _reorder(weight: np.ndarray, cell: str) -> np.ndarray:
    """Reorder the gate blocks along axis 0 from torch's order to ONNX's."""
    blocks = np.split(weight, len(_GATE_ORDER[cell]), axis=0)
    return np.concatenate([blocks[i] for i in _GATE_ORDER[cell]], axis=0)


def build_graph(config: TaggerConfig, weights: dict[str, np.ndarray]):
    """Return an ``onnx.ModelProto`` computing the tagger's emissions and intent logits.

    ``weights`` holds the tagger's ``state_dict`` as NumPy arrays (names as in
    :meth:`TaggerConfig.weight_shapes`).
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    if config.contextual_dim:
        raise ArtifactError("a model over contextual (transformer) features cannot be exported to ONNX here")

    nodes: list = []
    initializers: dict[str, object] = {}

    def const(name: str, value: np.ndarray) -> str:
        if name not in initializers:  # shared constants (shapes, axes) are added once
            initializers[name] = numpy_helper.from_array(np.ascontiguousarray(value), name)
        return name

    def node(op: str, inputs: list[str], output: str, **attrs) -> str:
        nodes.append(helper.make_node(op, inputs, [output], name=output, **attrs))
        return output

    f32 = lambda key: np.asarray(weights[key], dtype=np.float32)  # noqa: E731

    # ---------------------------------------------------------------- features
    mask = node("Not", [node("Equal", ["word_ids", const("zero_i64", np.array(0, dtype=np.int64))], "is_pad")],
                "mask")  # (B, T) bool
    mask3 = node("Unsqueeze", [mask, const("axis_last", np.array([-1], dtype=np.int64))], "mask3")  # (B, T, 1)
    features = [node("Gather", [const("word_embedding", f32("word_embedding.weight")), "word_ids"], "words", axis=0)]
    if config.uses_char_cnn:
        # Characters come per word rather than per position, so that a caller can encode each word once
        # and keep the result: ``word_chars`` (N, L) are the character ids of the words this call encodes
        # (0 = padding), ``known_chars`` (M, channels) features the caller encoded earlier, and
        # ``char_index`` (B, T) each position's row in [known_chars; encoded words].
        kernel = config.char_kernel
        chars = node("Gather", [const("char_embedding", f32("char_cnn.embedding.weight")), "word_chars"], "chars",
                     axis=0)  # (N, L, C)
        chars = node("Transpose", [chars], "chars_ncl", perm=[0, 2, 1])  # (N, C, L)
        conv = node("Conv", [chars, const("char_conv_weight", f32("char_cnn.conv.weight")),
                             const("char_conv_bias", f32("char_cnn.conv.bias"))],
                    "char_conv", pads=[kernel // 2, kernel // 2], kernel_shape=[kernel])  # (N, channels, L)
        char_pad = node("Unsqueeze", [node("Equal", ["word_chars", "zero_i64"], "char_is_pad"),
                                      const("axis_1", np.array([1], dtype=np.int64))], "char_pad")  # (N, 1, L)
        # Padding characters must not win the max.
        conv = node("Where", [char_pad, const("minus_inf", np.array(-np.inf, dtype=np.float32)), conv], "char_masked")
        node("ReduceMax", [conv], "word_char_features", axes=[2], keepdims=0)  # (N, channels)
        table = node("Concat", ["known_chars", "word_char_features"], "char_table", axis=0)  # (M + N, channels)
        pooled = node("Gather", [table, "char_index"], "char_pooled", axis=0)  # (B, T, channels)
        # Padded word positions are zeros, as in torch.
        features.append(node("Where", [mask3, pooled, const("zero_f32", np.array(0.0, dtype=np.float32))],
                             "char_features"))
    inputs = node("Concat", features, "inputs", axis=-1) if len(features) > 1 else features[0]

    # ---------------------------------------------------------------- recurrent encoder
    hidden = config.hidden_size
    directions = ("", "_reverse") if config.bidirectional else ("",)
    sequence = node("Transpose", [inputs], "inputs_tbd", perm=[1, 0, 2])  # (T, B, D)
    lengths = node("Cast", ["lengths"], "sequence_lens", to=TensorProto.INT32)
    for layer in range(config.num_layers):
        w = np.stack([_reorder(f32(f"encoder.rnn.weight_ih_l{layer}{d}"), config.cell) for d in directions])
        r = np.stack([_reorder(f32(f"encoder.rnn.weight_hh_l{layer}{d}"), config.cell) for d in directions])
        b = np.stack([np.concatenate([_reorder(f32(f"encoder.rnn.bias_ih_l{layer}{d}"), config.cell),
                                      _reorder(f32(f"encoder.rnn.bias_hh_l{layer}{d}"), config.cell)])
                      for d in directions])
        attrs = {"hidden_size": hidden, "direction": "bidirectional" if config.bidirectional else "forward"}
        if config.cell == "gru":
            attrs["linear_before_reset"] = 1  # torch applies the reset gate after the recurrent product
        y = node(_OPERATOR[config.cell], [sequence, const(f"W{layer}", w), const(f"R{layer}", r),
                                          const(f"B{layer}", b), lengths], f"rnn{layer}", **attrs)
        # Y is (T, directions, B, H): put the directions next to H and concatenate them, as torch does.
        y = node("Transpose", [y], f"rnn{layer}_tbdh", perm=[0, 2, 1, 3])
        sequence = node("Reshape", [y, const("shape_tb_", np.array([0, 0, -1], dtype=np.int64))], f"layer{layer}")
    states = node("Transpose", [sequence], "states", perm=[1, 0, 2])  # (B, T, H * directions)

    # ---------------------------------------------------------------- heads
    emissions = node("MatMul", [states, const("emissions_weight", f32("emissions.weight").T)], "emissions_mm")
    node("Add", [emissions, const("emissions_bias", f32("emissions.bias"))], "emissions")
    outputs = [helper.make_tensor_value_info("emissions", TensorProto.FLOAT, ["batch", "steps", config.num_labels])]
    if config.num_intents:
        if config.intent_pooling == "mean":
            weights_bt = node("Cast", [mask3], "mask_f32", to=TensorProto.FLOAT)
            total = node("ReduceSum", [node("Mul", [states, weights_bt], "masked_states"),
                                       const("axis_steps", np.array([1], dtype=np.int64))], "state_sum", keepdims=0)
            count = node("ReduceSum", [weights_bt, "axis_steps"], "token_count", keepdims=0)
            count = node("Max", [count, const("one_f32", np.array(1.0, dtype=np.float32))], "token_count_min1")
            pooled_states = node("Div", [total, count], "pooled_states")
        else:
            masked = node("Where", [mask3, states, const("minus_inf_states", np.array(-np.inf, dtype=np.float32))],
                          "masked_states")
            pooled_states = node("ReduceMax", [masked], "pooled_states", axes=[1], keepdims=0)
        logits = node("MatMul", [pooled_states, const("intent_weight", f32("intent_head.weight").T)], "intent_mm")
        node("Add", [logits, const("intent_bias", f32("intent_head.bias"))], "intent_logits")
        outputs.append(helper.make_tensor_value_info("intent_logits", TensorProto.FLOAT,
                                                     ["batch", config.num_intents]))

    inputs_info = [helper.make_tensor_value_info("word_ids", TensorProto.INT64, ["batch", "steps"])]
    if config.uses_char_cnn:
        inputs_info += [helper.make_tensor_value_info("word_chars", TensorProto.INT64, ["words", "chars"]),
                        helper.make_tensor_value_info("known_chars", TensorProto.FLOAT,
                                                      ["known", config.char_channels]),
                        helper.make_tensor_value_info("char_index", TensorProto.INT64, ["batch", "steps"])]
        outputs.append(helper.make_tensor_value_info("word_char_features", TensorProto.FLOAT,
                                                     ["words", config.char_channels]))
    inputs_info.append(helper.make_tensor_value_info("lengths", TensorProto.INT64, ["batch"]))
    graph = helper.make_graph(nodes, "slotfill_tagger", inputs_info, outputs, list(initializers.values()))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="slotfill")
    model.ir_version = min(model.ir_version, 8)  # readable by onnxruntime releases of the last few years
    onnx.checker.check_model(model, full_check=True)
    return model
