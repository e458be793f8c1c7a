"""Time flair's BiLSTM-CRF on a slot-filling data folder (train sentences/s, tagging sentences/s).

Runs INSIDE the flair virtual environment (see bench/setup.sh); of slotfill it imports only the torch-free
``slotfill.schemes`` (the spans of the tags, read once before anything is timed).

The data folder holds ``train/``, ``valid/`` and ``test/``, each with ``seq.in`` (space-separated tokens) and
``seq.out`` (IOB2 tags), one utterance per line. ``--limit K`` keeps the first K sentences of every split.

What is timed:
* training: only the epochs themselves (batching, forward_loss, backward, gradient clipping, optimizer step),
  summed over ``--epochs`` epochs, the same thing slotfill's ``TrainResult.sentences_per_second`` measures.
  Reading the data, building the vocabularies and the model are not timed; no evaluation is run.
  The loop is flair's own ``ModelTrainer`` loop without its logging/evaluation: SGD (lr 0.1 by default, as
  ``ModelTrainer.train``), gradient norm clipped to 5.0, shuffled batches, embeddings cleared after each batch.
* tagging: the test split (or valid, if there is no test), starting from token lists: building the flair
  ``Sentence`` objects is part of the timed work (slotfill's ``predict_tokens`` also starts from token lists).
  Same protocol as slotfill's ``training.compare.tagging_speed``: both modes warmed up, then the best of 3
  interleaved timed passes of one sentence per ``predict`` call and of batches of 64
  (``predict(..., mini_batch_size=64)``), the garbage collector held off during each pass.

The last stdout line is one JSON object with the results.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # slotfill.schemes, from the checkout


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True, help="data folder with train/, valid/, test/ (seq.in, seq.out)")
    parser.add_argument("--split", default="train", help="split to train on (default: train)")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--limit", type=int, default=0, help="keep the first K sentences of each split (0: all)")
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads (also OMP/MKL_NUM_THREADS)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=0.1, help="SGD learning rate (flair's ModelTrainer default)")
    parser.add_argument("--clip-norm", type=float, default=5.0, help="max gradient norm (flair's default)")
    parser.add_argument("--hidden-size", type=int, default=256)
    parser.add_argument("--rnn-layers", type=int, default=1)
    parser.add_argument("--rnn-type", default="LSTM", choices=["LSTM", "GRU", "RNN"])
    parser.add_argument("--unidirectional", action="store_true")
    parser.add_argument("--no-crf", action="store_true")
    parser.add_argument("--word-dim", type=int, default=100,
                        help="one-hot word embedding size (default 100 = slotfill's word_dim; flair's own is 300)")
    parser.add_argument("--min-freq", type=int, default=1,
                        help="vocabulary min frequency (default 1 = slotfill's min_freq; flair's own is 3)")
    parser.add_argument("--tag-format", default="BIO", choices=["BIO", "BIOES"],
                        help="tag encoding of the spans (default BIO = the data's IOB2; flair's own is BIOES)")
    parser.add_argument("--tag-batch-size", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


if __name__ == "__main__":
    ARGS = parse_args()
    # Thread counts must be fixed before torch is imported (a module importing this file -- bench/peer_app.py --
    # sets them itself before the import).
    for _name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[_name] = str(ARGS.threads)

import logging  # noqa: E402

import flair  # noqa: E402
import torch  # noqa: E402
from flair.data import Corpus, Dictionary, Sentence  # noqa: E402
from flair.datasets import DataLoader, FlairDatapointDataset  # noqa: E402
from flair.embeddings import CharacterEmbeddings, OneHotEmbeddings, StackedEmbeddings  # noqa: E402
from flair.models import SequenceTagger  # noqa: E402
from flair.training_utils import store_embeddings  # noqa: E402

LABEL_TYPE = "slot"


def log(message: str) -> None:
    print(f"[flair] {message}", file=sys.stderr, flush=True)


def read_split(data_dir: Path, split: str, limit: int) -> list[tuple[list[str], list[str]]] | None:
    folder = data_dir / split
    if not (folder / "seq.in").exists():
        return None
    tokens = (folder / "seq.in").read_text(encoding="utf-8").splitlines()
    tags = (folder / "seq.out").read_text(encoding="utf-8").splitlines()
    if len(tokens) != len(tags):
        raise SystemExit(f"{folder}: seq.in has {len(tokens)} lines but seq.out has {len(tags)}")
    pairs = []
    for line_no, (token_line, tag_line) in enumerate(zip(tokens, tags), 1):
        words, labels = token_line.split(), tag_line.split()
        if len(words) != len(labels):
            raise SystemExit(f"{folder}, line {line_no}: {len(words)} tokens but {len(labels)} tags")
        if words:
            pairs.append((words, labels))
        if limit and len(pairs) >= limit:
            break
    return pairs


def to_sentence(words: list[str], tags: list[str]) -> Sentence:
    sentence = Sentence(words)
    from slotfill.schemes import read_spans  # a stray I- starts a chunk, as conlleval does

    for kind, start, end in read_spans(tags, "IOB2"):
        sentence[start:end].add_label(LABEL_TYPE, kind)
    return sentence


def char_dictionary(sentences: list[Sentence]) -> Dictionary:
    """Characters of the training data (flair's default 'common-chars' list would be downloaded)."""
    chars = Dictionary()  # add_unk=True: unseen characters map to <unk>
    for char in sorted({c for s in sentences for t in s for c in t.text}):
        chars.add_item(char)
    return chars


def build_tagger(corpus: Corpus, train: list[Sentence], *, hidden_size: int = 256, use_crf: bool = True,
                 rnn_type: str = "LSTM", rnn_layers: int = 1, bidirectional: bool = True, tag_format: str = "BIO",
                 word_dim: int = 100, min_freq: int = 1) -> SequenceTagger:
    """flair's BiLSTM-CRF over one-hot word + character embeddings (see the module docstring), on ``flair.device``."""
    tag_dictionary = corpus.make_label_dictionary(label_type=LABEL_TYPE, add_unk=False)
    embeddings = StackedEmbeddings([
        OneHotEmbeddings.from_corpus(corpus, min_freq=min_freq, embedding_length=word_dim),
        CharacterEmbeddings(path_to_char_dict=char_dictionary(train)),
    ])
    tagger = SequenceTagger(hidden_size=hidden_size, embeddings=embeddings, tag_dictionary=tag_dictionary,
                            tag_type=LABEL_TYPE, use_crf=use_crf, rnn_type=rnn_type, rnn_layers=rnn_layers,
                            bidirectional=bidirectional, tag_format=tag_format)
    tagger.to(flair.device)
    return tagger


def train_epochs(tagger: SequenceTagger, train: list[Sentence], *, epochs: int, batch_size: int = 32,
                 lr: float = 0.1, clip_norm: float = 5.0) -> tuple[list[float], int]:
    """flair's ModelTrainer inner loop (SGD, clipping, shuffled batches), no logging/evaluation.
    Returns the seconds of each epoch and the number of sentences seen."""
    optimizer = torch.optim.SGD(tagger.parameters(), lr=lr)
    loader = DataLoader(FlairDatapointDataset(train), batch_size=batch_size, shuffle=True)
    epoch_seconds, sentences = [], 0
    for epoch in range(1, epochs + 1):
        tagger.train()
        total_loss, seen = 0.0, 0
        started = time.perf_counter()
        for batch in loader:
            tagger.zero_grad()
            optimizer.zero_grad()
            loss, count = tagger.forward_loss(batch)
            loss.backward()
            store_embeddings(batch, "none")
            if clip_norm > 0:
                torch.nn.utils.clip_grad_norm_(tagger.parameters(), clip_norm)
            optimizer.step()
            total_loss += loss.item()
            seen += len(batch)
        elapsed = time.perf_counter() - started
        epoch_seconds.append(elapsed)
        sentences += seen
        log(f"epoch {epoch}: loss {total_loss / max(1, seen):.4f}  {elapsed:.2f}s  ({seen / elapsed:.0f} sentences/s)")
    return epoch_seconds, sentences


def tagging_speed(tagger: SequenceTagger, token_lists: list[list[str]], batch_size: int, passes: int = 3
                  ) -> tuple[float, float]:
    """Sentences per second, one per predict() call and in batches, from token lists (slotfill's protocol:
    both modes warmed up, then the best of ``passes`` interleaved timed passes of each, the garbage
    collector run before each pass and held off during it)."""
    batches = [token_lists[i:i + batch_size] for i in range(0, len(token_lists), batch_size)]
    for size in sorted({len(batch) for batch in batches}):  # warm-up: each call shape the passes make
        batch = next(b for b in batches if len(b) == size)
        tagger.predict([Sentence(tokens) for tokens in batch], mini_batch_size=batch_size)
    for tokens in token_lists[:8]:
        tagger.predict(Sentence(tokens), mini_batch_size=1)

    def timed(run) -> float:
        gc.collect()
        gc.disable()
        try:
            started = time.perf_counter()
            run()
            return len(token_lists) / (time.perf_counter() - started)
        finally:
            gc.enable()

    def one_at_a_time() -> None:
        for tokens in token_lists:
            tagger.predict(Sentence(tokens), mini_batch_size=1)

    def in_batches() -> None:
        for batch in batches:
            tagger.predict([Sentence(tokens) for tokens in batch], mini_batch_size=batch_size)

    single = batched = 0.0
    for _ in range(max(1, passes)):
        single = max(single, timed(one_at_a_time))
        batched = max(batched, timed(in_batches))
    return single, batched


def main(args: argparse.Namespace) -> dict:
    torch.set_num_threads(args.threads)
    logging.getLogger("flair").setLevel(logging.WARNING)
    flair.device = torch.device("cpu")
    flair.set_seed(args.seed)

    data_dir = Path(args.data)
    train_pairs = read_split(data_dir, args.split, args.limit)
    if not train_pairs:
        raise SystemExit(f"{data_dir / args.split}: no training sentences")
    tag_split, test_pairs = "test", read_split(data_dir, "test", args.limit)
    if not test_pairs:
        tag_split, test_pairs = "valid", read_split(data_dir, "valid", args.limit) or []
    train = [to_sentence(w, t) for w, t in train_pairs]
    corpus = Corpus(train=FlairDatapointDataset(train), dev=None, test=None, name=data_dir.name,
                    sample_missing_splits=False)

    tagger = build_tagger(corpus, train, hidden_size=args.hidden_size, use_crf=not args.no_crf,
                          rnn_type=args.rnn_type, rnn_layers=args.rnn_layers, bidirectional=not args.unidirectional,
                          tag_format=args.tag_format, word_dim=args.word_dim, min_freq=args.min_freq)
    parameters = sum(p.numel() for p in tagger.parameters())
    log(f"training on {len(train)} sentences, {len(tagger.label_dictionary)} tags, {parameters:,} parameters, "
        f"{torch.get_num_threads()} threads")

    epoch_seconds, sentences = train_epochs(tagger, train, epochs=args.epochs, batch_size=args.batch_size,
                                            lr=args.lr, clip_norm=args.clip_norm)
    tagger.eval()
    single = batched = None
    if test_pairs:
        single, batched = tagging_speed(tagger, [w for w, _ in test_pairs], args.tag_batch_size)
        log(f"tagging {len(test_pairs)} {tag_split} sentences: {single:.0f}/s one at a time, "
            f"{batched:.0f}/s in batches of {args.tag_batch_size}")
    return {
        "train_sentences_per_second": sentences / sum(epoch_seconds),
        "epoch_seconds": epoch_seconds,
        "tag_single_per_second": single,
        "tag_batch64_per_second": batched,
        "parameters": parameters,
        "flair_version": flair.__version__,
        "torch_version": torch.__version__,
        "threads": torch.get_num_threads(),
        "train_sentences": len(train),
        "tag_sentences": len(test_pairs),
        "tag_split": tag_split,
        "tags": len(tagger.label_dictionary),
        "settings": vars(args),
    }


if __name__ == "__main__":
    print(json.dumps(main(ARGS)), flush=True)
