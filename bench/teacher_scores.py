"""What a distillation run spends on its teacher before the first epoch: the whole network against the feature cache.

    .venv/bin/python bench/teacher_scores.py --teacher RUN --data ../shared/datasets/atis [--augment 1] [--seed 0]
        [--cache DIR] [--threads 1]

The teacher is a trained artifact with a frozen transformer front-end (``contextual=...``). The sentences
are the data's training sentences and ``--augment`` slot-substituted copies of them (drawn from
``--seed``), as ``slotfill train --set distill_from=RUN augment=N`` makes them. Three ways, in one process:

- A, the whole network: the teacher's scores (``load_teacher`` without states) and its word vectors
  (``teacher_word_vectors`` without states), each running the transformer over the sentences;
- B, first student: the encoder's states through the feature cache (``teacher_word_states``), where the
  teacher's training left its training sentences' states and the copies are computed and stored, then
  the scores and word vectors from them;
- C, a second student with the same copies: everything read from the cache.

Prints each one's seconds, B/A and C/A, and how far B's scores are from A's (largest absolute difference
of the emissions; share of sentences with the same best label at every token). ``--cache`` is the
feature cache the teacher was trained with (default: ``$SLOTFILL_FEATURE_CACHE`` or its default); B computes
the copies' states into a temporary folder, so repeated runs measure the same thing.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--teacher", required=True)
    parser.add_argument("--data", required=True)
    parser.add_argument("--augment", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cache", default=None)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()

    sys.path.insert(0, str(REPO))
    import numpy as np
    import torch

    from slotfill.artifact.artifact import LoadedModel
    from slotfill.data import load_corpus
    from slotfill.errors import SlotfillError
    from training.augment import slot_substitution
    from training.distillation import (
        load_teacher,
        teacher_norms,
        teacher_state_cache,
        teacher_word_states,
        teacher_word_vectors,
    )
    from training.feature_cache import default_cache_dir
    from training.prepare import label_order

    torch.set_num_threads(args.threads)
    try:
        teacher = LoadedModel.from_pretrained(args.teacher)
        corpus = load_corpus(Path(args.data), scheme=teacher.config.scheme, tokenizer_config=teacher.tokenizer)
    except SlotfillError as exc:
        sys.exit(f"teacher_scores: {exc}")
    config = teacher.config
    train = list(corpus.train)
    copies = slot_substitution(train, args.augment, args.seed, config.scheme)
    originals = teacher_norms(teacher, [e.tokens for e in train])
    extra = teacher_norms(teacher, [e.tokens for e in copies])
    labels = label_order({tag for e in train for tag in e.tags} | {"O"})
    intents = sorted({e.intent for e in train if e.intent is not None})
    words = sorted({token for tokens in originals for token in tokens})
    dim = 100

    def scores_and_vectors(states):
        scored = load_teacher(teacher, originals + extra, labels, intents, config.decoder, 1.0, states=states)
        teacher_word_vectors(teacher, originals, words, originals, dim,
                             states=None if states is None else states[: len(originals)])
        return scored

    cache = Path(args.cache) if args.cache else default_cache_dir()
    store = teacher_state_cache(teacher, str(cache))
    if store is None:
        sys.exit(f"{args.teacher}: no frozen encoder on record in its model card; retrain it with this version "
                 "to read its states from the feature cache")
    stored = store.path(originals)
    if not stored.is_file():
        sys.exit(f"{stored}: not there; give --cache the feature cache the teacher was trained with")

    started = time.perf_counter()
    whole = scores_and_vectors(None)
    seconds_a = time.perf_counter() - started

    scratch = Path(tempfile.mkdtemp(prefix="teacher-scores-"))
    try:
        # The training sentences' states where the teacher's training stored them (their file is linked in
        # scratch, under the key teacher_word_states looks for); the copies' are computed into scratch.
        os.symlink(stored, scratch / stored.name)
        parts = [("training sentences", originals), ("slot-substituted copies", extra)]
        timings = []
        for _ in range(2):
            lines: list[str] = []
            started = time.perf_counter()
            states = teacher_word_states(teacher, parts, str(scratch), lines.append)
            cached = scores_and_vectors(states)
            timings.append(time.perf_counter() - started)
            print("\n".join(f"  {line}" for line in lines))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)

    difference = max(float(np.abs(a - b).max()) for a, b in zip(whole.emissions, cached.emissions))
    same = np.mean([np.array_equal(a.argmax(-1), b.argmax(-1)) for a, b in zip(whole.emissions, cached.emissions)])
    print(f"teacher {args.teacher}: {len(originals)} training sentences + {len(extra)} copies, "
          f"{args.threads} thread(s), {platform.processor() or platform.machine()}, "
          f"{datetime.now(timezone.utc).date()}")
    print(f"A  whole network (scores + word vectors)        {seconds_a:8.1f} s")
    print(f"B  feature cache, copies computed (first run)   {timings[0]:8.1f} s   B/A {timings[0] / seconds_a:.3f}")
    print(f"C  feature cache, everything read (second run)  {timings[1]:8.1f} s   C/A {timings[1] / seconds_a:.3f}")
    print(f"scores from cached float16 states vs the whole network: max |difference| {difference:.4f}, "
          f"same best labels in {same:.2%} of sentences")


if __name__ == "__main__":
    main()
