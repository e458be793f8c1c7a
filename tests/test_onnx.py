"""The ONNX graph and the torch-free backend: same numbers as torch, same answers, no torch needed."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from slotfill.artifact.artifact import MANIFEST, ONNX_FILE, Artifact, LoadedModel, sha256_file
from slotfill.artifact.onnx_export import export_onnx, synthetic_sentences
from slotfill.errors import ArtifactError, ConfigError
from slotfill.inference.engines import OnnxEngine, TorchEngine, resolve_backend
from slotfill.inference.predictor import Predictor
from slotfill.models import SlotTagger, TaggerConfig
from slotfill.text.features import Featurizer
from slotfill.text.tokenizer import TokenizerConfig
from training.cli import main as cli_main

REPO = Path(__file__).resolve().parent.parent
LABELS = {0: "O", 1: "B-city", 2: "I-city", 3: "B-date", 4: "I-date"}
WORDS = ["from", "boston", "to", "new", "york", "on", "monday", "the", "flight", "please"]
UTTERANCES = ["book a table for four at an italian place tomorrow at 7pm",
              "find me a cheap thai restaurant in san francisco", "cancel my reservation at the golden dragon"]


def without_onnx(source: Path, target: Path) -> Path:
    """A copy of an artifact re-saved without its graph (training writes one)."""
    shutil.copytree(source, target)
    LoadedModel.from_pretrained(target).save_pretrained(target)
    assert not Artifact.from_pretrained(target).has_onnx
    return target


@pytest.fixture()
def plain_artifact(sample_model_dir, tmp_path) -> Path:
    return without_onnx(sample_model_dir, tmp_path / "plain")


@pytest.fixture()
def onnx_artifact(plain_artifact, tmp_path) -> Path:
    target = tmp_path / "model"
    shutil.copytree(plain_artifact, target)
    export_onnx(target)
    return target


def test_training_writes_a_checked_graph(sample_model_dir):
    assert Artifact.from_pretrained(sample_model_dir).has_onnx
    assert Predictor.load(sample_model_dir).backend == "onnx"


def random_artifact(directory: Path, seed: int = 0, **overrides) -> Path:
    """An untrained tagger of the given architecture, saved as a complete artifact."""
    torch.manual_seed(seed)
    featurizer = Featurizer.build([WORDS, ["ünïcode", "東京"]])
    settings = dict(vocab_size=len(featurizer.words), num_chars=len(featurizer.chars), id2label=LABELS,
                    id2intent={0: "flight", 1: "fare"}, word_dim=12, char_dim=6, char_channels=10, hidden_size=16)
    settings.update(overrides)
    model = SlotTagger(TaggerConfig(**settings)).eval()
    if model.crf is not None:  # random CRF scores, so decoding depends on them
        with torch.no_grad():
            model.crf.transitions.normal_(0, 2)
    LoadedModel(model=model, featurizer=featurizer, tokenizer=TokenizerConfig(),
                card={"name": "random", "version": "1"}).save_pretrained(directory)
    return directory


ARCHITECTURES = {
    "bilstm-crf": {},
    "lstm-softmax": {"bidirectional": False, "decoder": "softmax"},
    "bigru-crf": {"cell": "gru"},
    "gru-2layers": {"cell": "gru", "bidirectional": False, "num_layers": 2},
    "birnn-softmax": {"cell": "rnn", "decoder": "softmax"},
    "bilstm-2layers-mean": {"num_layers": 2, "intent_pooling": "mean"},
    "no-chars-no-intents": {"char_dim": 0, "char_channels": 0, "id2intent": {}},
    "kernel-5-bioes": {"char_kernel": 5, "scheme": "BIOES",
                       "id2label": {0: "O", 1: "B-city", 2: "I-city", 3: "E-city", 4: "S-city"}},
}


def test_weight_shapes_match_the_torch_state_dict():
    for overrides in ARCHITECTURES.values():
        config = TaggerConfig(vocab_size=20, num_chars=9, id2label=overrides.get("id2label", LABELS),
                              id2intent=overrides.get("id2intent", {0: "a"}),
                              **{k: v for k, v in overrides.items() if k not in ("id2label", "id2intent")})
        expected = {name: tuple(t.shape) for name, t in SlotTagger(config).state_dict().items()}
        assert config.weight_shapes() == expected


@pytest.mark.parametrize("name", sorted(ARCHITECTURES))
def test_graph_reproduces_torch(tmp_path, name):
    directory = random_artifact(tmp_path / name, **ARCHITECTURES[name])
    check = export_onnx(directory)
    assert check.labels_identical and check.intents_identical
    assert check.synthetic_max_emission_diff <= 1e-4  # small random models stay within the strict bound

    artifact = Artifact.from_pretrained(directory)
    assert artifact.has_onnx
    loaded = LoadedModel.from_pretrained(directory)
    sentences = synthetic_sentences(WORDS, count=40, seed=3)
    torch_em, torch_int, lengths = TorchEngine(loaded.model, loaded.featurizer).run_tokens(sentences)
    onnx_em, onnx_int, _ = OnnxEngine(artifact).run_tokens(sentences)
    assert_same_outputs((onnx_em, onnx_int), (torch_em, torch_int), lengths, atol=1e-4)


def assert_same_outputs(got, expected, lengths, atol: float) -> None:
    """Emissions at real positions (padding is read by no decoder) and intent logits within ``atol``."""
    (got_em, got_int), (expected_em, expected_int) = got, expected
    for row, n in enumerate(lengths):
        np.testing.assert_allclose(got_em[row, :n], expected_em[row, :n], atol=atol, rtol=0)
    if expected_int is None:
        assert got_int is None
    else:
        np.testing.assert_allclose(got_int, expected_int, atol=atol, rtol=0)


@pytest.mark.parametrize("name", ["bilstm-crf", "no-chars-no-intents"])
def test_the_token_path_gives_the_array_paths_numbers(tmp_path, name, monkeypatch):
    """``run_tokens`` (what the predictor calls) reuses the precomputed character features of frequent
    words and encodes the others once per call; it must give the numbers of an engine that precomputes
    nothing, and the torch model's, for words among the precomputed ones, words of the vocabulary past
    them, unseen words, a word repeated in a call, and tokens spelled like the vocabulary's padding and
    unknown entries."""
    import slotfill.inference.engines as engines

    directory = random_artifact(tmp_path / name, **ARCHITECTURES[name])
    export_onnx(directory)
    artifact = Artifact.from_pretrained(directory)
    monkeypatch.setattr(engines, "KNOWN_WORDS", 6)  # part of the vocabulary precomputed, part not
    engine = OnnxEngine(artifact)
    vocabulary = artifact.featurizer.words.itos
    assert len(vocabulary) > 6
    sentences = synthetic_sentences(WORDS + ["ünïcode", "東京"], count=30, seed=4)
    sentences.append([vocabulary[0], vocabulary[1], "zzqx", "zzqx", vocabulary[-1], "東京"])
    monkeypatch.setattr(engines, "KNOWN_WORDS", 0)
    nothing_known = OnnxEngine(artifact)
    expected_em, expected_int, _ = nothing_known.run_tokens(sentences)
    got_em, got_int, lengths = engine.run_tokens(sentences)
    assert lengths.tolist() == [len(s) for s in sentences]
    assert_same_outputs((got_em, got_int), (expected_em, expected_int), lengths, atol=1e-6)
    loaded = LoadedModel.from_pretrained(directory)
    torch_em, torch_int, _ = TorchEngine(loaded.model, loaded.featurizer).run_tokens(sentences)
    assert_same_outputs((got_em, got_int), (torch_em, torch_int), lengths, atol=1e-4)
    if name == "bilstm-crf":
        assert engine._known_chars.shape == (6, 10)


def test_a_graph_with_other_inputs_is_refused_by_name(onnx_artifact):
    """A graph whose inputs are not the ones the engine feeds is refused, naming them, not fed the wrong
    inputs."""
    import onnx

    model = onnx.load(str(onnx_artifact / ONNX_FILE))
    [graph_input] = [i for i in model.graph.input if i.name == "word_chars"]
    graph_input.name = "char_ids"
    for node in model.graph.node:
        node.input[:] = ["char_ids" if name == "word_chars" else name for name in node.input]
    with pytest.raises(ArtifactError, match=r"inputs \['word_ids', 'char_ids'.*expected \['word_ids', 'word_chars'"):
        OnnxEngine(Artifact.from_pretrained(onnx_artifact), graph=model.SerializeToString())


def test_padding_never_leaks_into_real_positions(tmp_path):
    """A sentence scores the same alone and padded in a batch next to a much longer one."""
    directory = random_artifact(tmp_path / "m")
    export_onnx(directory)
    artifact = Artifact.from_pretrained(directory)
    engine = OnnxEngine(artifact)
    short, long = ["from", "boston"], WORDS * 3
    alone_em, alone_int, _ = engine.run_tokens([short])
    batch_em, batch_int, _ = engine.run_tokens([long, short])
    np.testing.assert_allclose(batch_em[1, :2], alone_em[0], atol=1e-5, rtol=0)
    np.testing.assert_allclose(batch_int[1], alone_int[0], atol=1e-5, rtol=0)


def test_crf_tables_from_saved_weights_match_the_module(sample_model_dir):
    """The onnx engine's tables (saved scores and the scheme's grammar) equal the torch module's."""
    loaded = LoadedModel.from_pretrained(sample_model_dir)
    from_module = TorchEngine(loaded.model, loaded.featurizer).crf_tables()
    from_weights = OnnxEngine(Artifact.from_pretrained(sample_model_dir)).crf_tables()
    for a, b in ((from_module.transitions, from_weights.transitions), (from_module.start, from_weights.start),
                 (from_module.end, from_weights.end)):
        np.testing.assert_array_equal(a, b)


def test_onnx_backend_answers_like_torch(onnx_artifact):
    onnx_predictor = Predictor.load(onnx_artifact)  # auto: the manifest lists a graph
    torch_predictor = Predictor.load(onnx_artifact, backend="torch")
    assert (onnx_predictor.backend, torch_predictor.backend) == ("onnx", "torch")
    for got, expected in zip(onnx_predictor.predict_texts(UTTERANCES), torch_predictor.predict_texts(UTTERANCES)):
        assert [t.label for t in got.tokens] == [t.label for t in expected.tokens]
        assert [(s.slot, s.value, s.start, s.end) for s in got.slots] == \
            [(s.slot, s.value, s.start, s.end) for s in expected.slots]
        assert got.intent.name == expected.intent.name
        for a, b in zip(got.tokens, expected.tokens):
            assert a.confidence == pytest.approx(b.confidence, abs=1e-4)
        for a, b in zip(got.slots, expected.slots):
            assert a.confidence == pytest.approx(b.confidence, abs=1e-4)


def test_export_cli_checks_on_data_and_updates_the_manifest(plain_artifact, sample_model_dir, capsys):
    target = plain_artifact
    assert cli_main(["export", "--model", str(target), "--format", "onnx", "--data", "sample"]) == 0
    out = capsys.readouterr().out
    assert "labels identical" in out
    manifest = json.loads((target / MANIFEST).read_text())
    assert manifest["files"][ONNX_FILE]["sha256"] == sha256_file(target / ONNX_FILE)
    assert manifest["name"] == json.loads((sample_model_dir / MANIFEST).read_text())["name"]
    # the sample test split has 300 sentences, plus 256 synthetic ones
    assert "checked on 556 sentences" in out


def test_a_graph_that_disagrees_is_not_written(plain_artifact, monkeypatch):
    import slotfill.artifact.onnx_graph as onnx_graph

    target = plain_artifact
    manifest_before = (target / MANIFEST).read_bytes()
    real_build = onnx_graph.build_graph

    def skewed(config, weights):
        weights = dict(weights)
        weights["emissions.bias"] = weights["emissions.bias"] + 0.01  # a small, systematic error
        return real_build(config, weights)

    monkeypatch.setattr(onnx_graph, "build_graph", skewed)
    with pytest.raises(ArtifactError, match="does not reproduce the torch model"):
        export_onnx(target)
    assert not (target / ONNX_FILE).exists()
    assert (target / MANIFEST).read_bytes() == manifest_before


def test_tampered_graph_is_refused(onnx_artifact):
    data = bytearray((onnx_artifact / ONNX_FILE).read_bytes())
    data[len(data) // 2] ^= 0xFF
    (onnx_artifact / ONNX_FILE).write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match="model.onnx: sha256 does not match"):
        Predictor.load(onnx_artifact)


def test_unlisted_graph_is_ignored_and_resaving_drops_a_stale_one(plain_artifact, onnx_artifact):
    plain = plain_artifact
    shutil.copy(onnx_artifact / ONNX_FILE, plain / ONNX_FILE)  # present, but no manifest vouches for it
    assert Predictor.load(plain).backend == "torch"
    with pytest.raises(ArtifactError, match="needs model.onnx listed in the manifest"):
        Predictor.load(plain, backend="onnx")

    LoadedModel.from_pretrained(onnx_artifact).save_pretrained(onnx_artifact)
    assert not (onnx_artifact / ONNX_FILE).exists()
    assert not Artifact.from_pretrained(onnx_artifact).has_onnx


def test_resolve_backend_explains_what_is_missing(plain_artifact, onnx_artifact, monkeypatch):
    import slotfill.inference.engines as engines

    with pytest.raises(ConfigError, match="backend: must be one of"):
        resolve_backend(Artifact.from_pretrained(onnx_artifact), "tensorflow")
    monkeypatch.setattr(engines, "torch_available", lambda: False)
    with pytest.raises(ArtifactError, match="has no ONNX graph and torch is not installed"):
        resolve_backend(Artifact.from_pretrained(plain_artifact), "auto")
    assert resolve_backend(Artifact.from_pretrained(onnx_artifact), "auto") == "onnx"
    monkeypatch.setattr(engines, "onnxruntime_available", lambda: False)
    with pytest.raises(ConfigError, match="neither onnxruntime nor torch"):
        resolve_backend(Artifact.from_pretrained(onnx_artifact), "auto")


@pytest.fixture()
def int8_artifact(onnx_artifact, sample_dir) -> Path:
    code = cli_main(["export", "--model", str(onnx_artifact), "--format", "onnx", "--quantize", "int8",
                     "--data", str(sample_dir)])
    assert code == 0
    return onnx_artifact


@pytest.mark.parametrize("backend", ["onnx", "onnx-int8"])
def test_onnx_backend_and_service_run_without_torch(backend, onnx_artifact, sample_dir):
    """In a process where importing torch fails, the onnx backends load, tag and serve."""
    if backend == "onnx-int8":
        assert cli_main(["export", "--model", str(onnx_artifact), "--format", "onnx", "--quantize", "int8",
                         "--data", str(sample_dir)]) == 0
    script = textwrap.dedent(f"""
        import sys

        class BlockTorch:
            def find_spec(self, name, path=None, target=None):
                if name == "torch" or name.startswith("torch."):
                    raise ImportError("torch is blocked in this test")
                return None

        sys.meta_path.insert(0, BlockTorch())

        from fastapi.testclient import TestClient
        from service.app import create_app
        from service.settings import Settings

        app = create_app(Settings(model_dir={str(onnx_artifact)!r}, batching=True, backend={backend!r}))
        with TestClient(app) as client:
            info = client.get("/v1/model").json()
            answer = client.post("/v1/tag", json={{"text": "book a table for two tomorrow at 7pm"}}).json()
        assert info["backend"] == {backend!r}, info
        assert (info["quantization"] is None) == ({backend!r} == "onnx"), info
        assert {backend!r} == "onnx" or info["quantization"]["label_agreement"] >= 0.995, info
        assert answer["labels"] and answer["intent"] is not None, answer
        assert not any(name == "torch" or name.startswith("torch.") for name in sys.modules)
        print("OK", answer["labels"])
    """)
    result = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("OK")


def test_large_onnx_batches_run_in_length_chunks_with_the_same_answers(onnx_artifact, monkeypatch):
    """Batches over OnnxEngine.CHUNK go to onnxruntime sorted by length, in chunks; answers do not change."""
    predictor = Predictor.load(onnx_artifact, backend="onnx")
    sentences = synthetic_sentences(["book", "a", "table", "for", "two", "tomorrow", "at", "7pm"], count=40, seed=5)
    calls = []
    real_run = predictor.engine._run_tokens

    def counting_run(token_lists):
        calls.append([len(tokens) for tokens in token_lists])
        return real_run(token_lists)

    monkeypatch.setattr(predictor.engine, "_run_tokens", counting_run)
    together = predictor.predict_tokens(sentences)
    assert len(calls) == -(-len(sentences) // OnnxEngine.CHUNK)
    assert [n for chunk in calls for n in chunk] == sorted(map(len, sentences)), "each chunk holds similar lengths"
    for sentence, got in zip(sentences, together):
        [alone] = predictor.predict_tokens([sentence])
        assert [t.label for t in got.tokens] == [t.label for t in alone.tokens]
        assert got.intent.name == alone.intent.name
        for a, b in zip(got.tokens, alone.tokens):
            assert a.confidence == pytest.approx(b.confidence, abs=1e-5)


def test_training_keeps_its_artifact_when_the_graph_check_fails(small_corpus, tmp_path, monkeypatch):
    """A graph that does not reproduce the model is left out with a warning; the run still ends with
    a complete, verifiable artifact that serves on the torch backend."""
    from slotfill.artifact import onnx_graph
    from training.pipeline import train

    real_build = onnx_graph.build_graph

    def skewed(config, weights):
        weights = dict(weights)
        weights["emissions.bias"] = weights["emissions.bias"] + 0.01
        return real_build(config, weights)

    monkeypatch.setattr(onnx_graph, "build_graph", skewed)
    messages: list[str] = []
    out = tmp_path / "model"
    train(small_corpus, out, overrides={"epochs": 1, "hidden_size": 16, "word_dim": 16, "char_dim": 8,
                                        "char_channels": 8, "patience": 0, "threads": 1},
          seed=0, progress=False, log=messages.append)
    assert any("model.onnx not written" in m and "does not reproduce the torch model" in m for m in messages)
    artifact = Artifact.from_pretrained(out)
    assert not artifact.has_onnx and not (out / ONNX_FILE).exists()
    assert Predictor.load(out).backend == "torch"
    assert (out / "report.json").is_file()


def test_int8_graph_is_measured_listed_and_served_on_request(int8_artifact, sample_dir, capsys):
    """--quantize int8 writes an int8 copy beside the float graph with its measured agreement; the
    manifest vouches for both; auto keeps the exact float graph and onnx-int8 serves the copy."""
    from slotfill.artifact.artifact import ONNX_INT8_FILE, QUANTIZATION_FILE
    from slotfill.data import load_corpus

    artifact = Artifact.from_pretrained(int8_artifact)
    assert artifact.has_onnx and artifact.has_int8
    report = json.loads((int8_artifact / QUANTIZATION_FILE).read_text())
    assert report["sentences"] == len(load_corpus(sample_dir).test)
    assert 0.995 <= report["label_agreement"] <= 1.0 and 0.9 <= report["intent_agreement"] <= 1.0
    assert abs(report["slot_f1_int8"] - report["slot_f1_float"]) < 0.02
    assert report["graph_bytes_int8"] == (int8_artifact / ONNX_INT8_FILE).stat().st_size
    assert report["graph_bytes_int8"] < report["graph_bytes_float"]

    assert Predictor.load(int8_artifact).backend == "onnx"
    exact = Predictor.load(int8_artifact, backend="onnx")
    quantized = Predictor.load(int8_artifact, backend="onnx-int8")
    assert quantized.backend == "onnx-int8"
    emissions = [p.run_network([["book", "a", "table", "for", "two", "tomorrow"]])[0] for p in (exact, quantized)]
    assert 0 < float(np.abs(emissions[0] - emissions[1]).max()) < 1.0  # a different graph, close scores
    answers = [p.predict_texts(UTTERANCES) for p in (exact, quantized)]
    for a, b in zip(*answers):
        assert [t.label for t in a.tokens] == [t.label for t in b.tokens]
        assert a.intent.name == b.intent.name

    data = bytearray((int8_artifact / ONNX_INT8_FILE).read_bytes())
    data[len(data) // 2] ^= 0xFF
    (int8_artifact / ONNX_INT8_FILE).write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match="model.int8.onnx: sha256 does not match"):
        Predictor.load(int8_artifact, backend="onnx-int8")


def test_resaving_drops_the_int8_graph_and_the_backend_says_how_to_make_one(int8_artifact):
    from slotfill.artifact.artifact import ONNX_INT8_FILE, QUANTIZATION_FILE

    LoadedModel.from_pretrained(int8_artifact).save_pretrained(int8_artifact)
    assert not (int8_artifact / ONNX_INT8_FILE).exists() and not (int8_artifact / QUANTIZATION_FILE).exists()
    with pytest.raises(ArtifactError, match="backend onnx-int8 needs model.int8.onnx .*--quantize int8"):
        Predictor.load(int8_artifact, backend="onnx-int8")


def test_quantize_needs_data_and_refuses_a_graph_that_decodes_differently(onnx_artifact, sample_dir, monkeypatch,
                                                                           capsys):
    import slotfill.artifact.onnx_quantize as onnx_quantize
    from slotfill.artifact.artifact import ONNX_INT8_FILE

    manifest_before = (onnx_artifact / MANIFEST).read_bytes()
    assert cli_main(["export", "--model", str(onnx_artifact), "--format", "onnx", "--quantize", "int8"]) != 0
    assert "--quantize needs --data" in capsys.readouterr().err

    import onnx
    from onnx import numpy_helper

    real_quantize = onnx_quantize.quantize_graph

    def broken(graph_path):  # an int8 graph whose emission bias favours one label everywhere
        graph = onnx.load_from_string(real_quantize(graph_path))
        for init in graph.graph.initializer:
            if init.name == "emissions_bias":
                bias = numpy_helper.to_array(init).copy()
                bias[1] += 100.0
                init.CopyFrom(numpy_helper.from_array(bias, init.name))
        return graph.SerializeToString()

    monkeypatch.setattr(onnx_quantize, "quantize_graph", broken)
    with pytest.raises(ArtifactError, match="the int8 graph decodes .* like the float graph"):
        onnx_quantize.quantize_onnx(onnx_artifact, [["book", "a", "table"], ["for", "two"]])
    assert not (onnx_artifact / ONNX_INT8_FILE).exists()
    assert Artifact.from_pretrained(onnx_artifact).has_onnx and not Artifact.from_pretrained(onnx_artifact).has_int8
    assert (onnx_artifact / MANIFEST).read_bytes() == manifest_before  # nothing was written by either attempt
