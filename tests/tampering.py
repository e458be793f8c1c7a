"""Hostile or broken artifacts, each made from a good copy with its manifest rehashed, so that only the check
under test can refuse it; with the message (a regex) that names the file and the problem.

Shared by the library and command-line tests (tests/test_artifact_checks.py) and the service's
(tests/service/test_service_hostile_artifacts.py).
"""

from __future__ import annotations

import json
import pickle
import struct
from collections.abc import Callable
from pathlib import Path

import numpy as np

from slotfill.artifact.artifact import MANIFEST, sha256_file


def rehash(directory: Path, name: str) -> None:
    """Make the manifest vouch for a changed file, so only the check under test can catch it."""
    manifest = json.loads((directory / MANIFEST).read_text())
    manifest["files"][name] = {"sha256": sha256_file(directory / name), "bytes": (directory / name).stat().st_size}
    (directory / MANIFEST).write_text(json.dumps(manifest))


def _edit_config(directory: Path, **changes) -> None:
    config = json.loads((directory / "config.json").read_text())
    config.update(changes)
    (directory / "config.json").write_text(json.dumps(config))
    rehash(directory, "config.json")


def big_recurrent_layer(d: Path) -> None:
    """The reproduction that took 2.4 GB and 27 s before the weights were compared with the config."""
    _edit_config(d, hidden_size=4096, num_layers=2)


def largest_config_within_field_limits(d: Path) -> None:
    """Every field within its own limit, yet tens of billions of parameters (ended in a RuntimeError)."""
    _edit_config(d, hidden_size=8192, num_layers=16)


def smaller_hidden_size(d: Path) -> None:
    _edit_config(d, hidden_size=32)


def dropout_not_a_number(d: Path) -> None:
    _edit_config(d, dropout="abc")


def deeply_nested_config(d: Path) -> None:
    (d / "config.json").write_text("[" * 100_000 + "]" * 100_000)
    rehash(d, "config.json")


def header_not_json(d: Path) -> None:
    data = bytearray((d / "model.safetensors").read_bytes())
    (length,) = struct.unpack("<Q", data[:8])
    data[8:8 + length] = b'{"x": ' + b" " * (length - 6)
    (d / "model.safetensors").write_bytes(bytes(data))
    rehash(d, "model.safetensors")


def weights_in_float64(d: Path) -> None:
    from safetensors.numpy import load_file, save_file

    tensors = load_file(str(d / "model.safetensors"))
    tensors["emissions.bias"] = tensors["emissions.bias"].astype(np.float64)
    save_file(tensors, str(d / "model.safetensors"))
    rehash(d, "model.safetensors")


def weights_padded(d: Path) -> None:
    with open(d / "model.safetensors", "ab") as handle:
        handle.write(bytes(4096))
    rehash(d, "model.safetensors")


def pickle_as_safetensors(d: Path) -> None:
    (d / "model.safetensors").write_bytes(pickle.dumps({"weights": [1.0, 2.0]}))
    rehash(d, "model.safetensors")


def garbage_graph(d: Path) -> None:
    (d / "model.onnx").write_bytes(np.random.default_rng(0).bytes(4096))
    rehash(d, "model.onnx")


def graph_with_one_label_less(d: Path) -> None:
    import onnx

    model = onnx.load(str(d / "model.onnx"))
    emissions = next(o for o in model.graph.output if o.name == "emissions")
    emissions.type.tensor_type.shape.dim[-1].dim_value -= 1
    onnx.save(model, str(d / "model.onnx"))
    rehash(d, "model.onnx")


def graph_computing_one_label_less(d: Path) -> None:
    """Declares the right outputs but computes 14 label scores: only running it shows the difference."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(d / "model.onnx"))
    for tensor in model.graph.initializer:
        if tensor.name in ("emissions_weight", "emissions_bias"):
            array = numpy_helper.to_array(tensor)[..., :-1]
            tensor.CopyFrom(numpy_helper.from_array(np.ascontiguousarray(array), tensor.name))
    onnx.save(model, str(d / "model.onnx"))
    rehash(d, "model.onnx")


def graph_with_external_weights(d: Path) -> None:
    import onnx

    model = onnx.load(str(d / "model.onnx"))
    tensor = next(t for t in model.graph.initializer if t.name == "word_embedding")
    tensor.ClearField("raw_data")
    tensor.data_location = onnx.TensorProto.EXTERNAL
    location = tensor.external_data.add()
    location.key, location.value = "location", "../../outside.bin"  # onnxruntime would read it from there
    (d / "model.onnx").write_bytes(model.SerializeToString())  # onnx.save would try to write that file
    rehash(d, "model.onnx")


def vocabulary_in_latin1(d: Path) -> None:
    vocab = json.loads((d / "vocab.json").read_text())
    vocab["items"][3] = "café"
    (d / "vocab.json").write_bytes(json.dumps(vocab, ensure_ascii=False).encode("latin-1"))
    rehash(d, "vocab.json")


def labels_in_latin1(d: Path) -> None:
    (d / "labels.txt").write_bytes((d / "labels.txt").read_bytes() + "B-caf\xe9\n".encode("latin-1"))
    rehash(d, "labels.txt")


def surrogate_in_the_card(d: Path) -> None:
    card = json.loads((d / "model_card.json").read_text())
    (d / "model_card.json").write_text(json.dumps({**card, "version": "\ud800"}))  # ensure_ascii: "\ud800"
    rehash(d, "model_card.json")


def surrogate_in_the_vocabulary(d: Path) -> None:
    vocab = json.loads((d / "vocab.json").read_text())
    vocab["items"][5] = "a\udc00"
    (d / "vocab.json").write_text(json.dumps(vocab))
    rehash(d, "vocab.json")


def manifest_through_a_symlink(d: Path) -> None:
    elsewhere = d.parent / f"{d.name}-manifest.json"
    (d / MANIFEST).rename(elsewhere)
    (d / MANIFEST).symlink_to(elsewhere)


LIMIT = r"config\.json: the model would have [\d,]+ parameters, more than the limit 500,000,000"
CASES: dict[str, tuple[Callable[[Path], None], str]] = {
    "hidden 4096, 2 layers": (big_recurrent_layer, LIMIT),
    "hidden 8192, 16 layers": (largest_config_within_field_limits, LIMIT),
    "weights of another hidden size": (smaller_hidden_size,
                                       r"model\.safetensors: tensor '[\w.]+' has shape \[.*\], the config implies"),
    "dropout abc": (dropout_not_a_number, r"config\.json: model config: dropout: must be in \[0, 1\), got 'abc'"),
    "config nested 100000 deep": (deeply_nested_config, r"config\.json: JSON nested too deeply"),
    "safetensors header not JSON": (header_not_json, r"model\.safetensors: not a safetensors file"),
    "a tensor in float64": (weights_in_float64,
                            r"model\.safetensors: tensor 'emissions\.bias' is F64, the model holds F32"),
    "weights padded with 4096 bytes": (weights_padded, r"model\.safetensors: 4096 bytes after its last tensor"),
    "pickle renamed to .safetensors": (pickle_as_safetensors, r"model\.safetensors: not a safetensors file"),
    "garbage model.onnx": (garbage_graph, r"model\.onnx: not an ONNX model"),
    "graph with one label less": (graph_with_one_label_less,
                                  r"model\.onnx: output 'emissions' has 14 columns, config\.json has 15 slot labels"),
    "graph with external weights": (graph_with_external_weights,
                                    r"model\.onnx: initializer 'word_embedding' keeps its data in another file"),
    "vocab.json in Latin-1": (vocabulary_in_latin1, r"vocab\.json: not UTF-8 text"),
    "labels.txt in Latin-1": (labels_in_latin1, r"labels\.txt: not UTF-8 text"),
    "lone surrogate in the card": (surrogate_in_the_card,
                                   r"model_card\.json: version: lone surrogate U\+D800 at character 0"),
    "lone surrogate in the vocabulary": (surrogate_in_the_vocabulary,
                                         r"vocab\.json: items\[5\]: lone surrogate U\+DC00 at character 1"),
    "manifest.json a symlink": (manifest_through_a_symlink, r"manifest\.json: symbolic links are not allowed"),
}
