"""``slotfill export --format onnx``: add an ONNX graph (and optionally an int8 copy) to an artifact."""

from __future__ import annotations

import argparse
from pathlib import Path

from slotfill.errors import SlotfillError

from ._options import add_split_option, data_dir, split_name


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser("export", help="add an ONNX graph to an artifact, checked against the torch model")
    parser.add_argument("--model", required=True, type=Path, help="artifact directory (written in place)")
    parser.add_argument("--format", required=True, choices=("onnx",))
    parser.add_argument("--data", help="also check on this data directory's --split (e.g. the test set), or 'sample'")
    add_split_option(parser, "the split of --data to check on: train, valid (or dev) or test (default)")
    parser.add_argument("--tolerance", type=float, default=1e-4,
                        help="largest allowed difference of emissions and intent logits on --data (default 1e-4; "
                             "the seeded synthetic sentences are held to 1e-3)")
    parser.add_argument("--quantize", choices=("int8",),
                        help="also write model.int8.onnx, an int8 copy of the graph, compared with the float graph "
                             "on --data (needed) and refused below --min-agreement (backend onnx-int8 serves it)")
    parser.add_argument("--min-agreement", type=float, default=0.995,
                        help="with --quantize: least fraction of --data tokens decoded as by the float graph")
    return parser


def _sentences(args: argparse.Namespace) -> tuple[list[list[str]] | None, list[list[str]] | None]:
    """--data's --split as normalised tokens, and its gold tags (in the model's scheme); (None, None) without --data."""
    if not args.data:
        return None, None
    from slotfill.artifact.artifact import Artifact
    from slotfill.data import load_corpus
    from slotfill.text.tokenizer import normalize_token

    artifact = Artifact.from_pretrained(args.model)
    corpus = load_corpus(data_dir(args.data), scheme=artifact.config.scheme, tokenizer_config=artifact.tokenizer)
    examples = getattr(corpus, split_name(args.split))
    if not examples:
        raise SlotfillError(f"--data {args.data}: has no {args.split} split")
    sentences = [[normalize_token(t, artifact.tokenizer) or t for t in e.tokens] for e in examples]
    return sentences, [list(e.tags) for e in examples]


def run(args: argparse.Namespace) -> int:
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
        import torch  # noqa: F401

        from slotfill.artifact.onnx_export import export_onnx
    except ImportError as exc:
        raise SlotfillError(f"ONNX export needs onnx, onnxruntime and torch ({exc.name} is missing): "
                            "pip install 'slotfill[train]'") from None
    if args.quantize and not args.data:
        raise SlotfillError("--quantize needs --data: the int8 graph is measured against the float graph on it")
    if not 0.0 < args.min_agreement <= 1.0:
        raise SlotfillError(f"--min-agreement: must be in (0, 1], got {args.min_agreement}")
    sentences, gold = _sentences(args)
    check = export_onnx(args.model, sentences, tolerance=args.tolerance)
    print(f"wrote {args.model / 'model.onnx'}: checked on {check.sentences} sentences ({check.tokens} tokens); "
          f"labels identical, max emission difference {check.max_emission_diff:.1e} on the data and "
          f"{check.synthetic_max_emission_diff:.1e} on synthetic sentences, "
          f"max intent-logit difference {check.max_intent_diff:.1e}")
    if args.quantize:
        from slotfill.artifact.onnx_quantize import quantize_onnx

        quantized = quantize_onnx(args.model, sentences, gold, min_agreement=args.min_agreement)
        f1 = ""
        if quantized.slot_f1_float is not None:
            f1 = f"; slot F1 {100 * quantized.slot_f1_float:.2f} (float) vs {100 * quantized.slot_f1_int8:.2f} (int8)"
        intents = ("" if quantized.intent_agreement is None
                   else f", intents {100 * quantized.intent_agreement:.2f}% the same")
        print(f"wrote {args.model / 'model.int8.onnx'} ({quantized.graph_bytes_int8:,} bytes, float graph "
              f"{quantized.graph_bytes_float:,}): {100 * quantized.label_agreement:.2f}% of {quantized.tokens} "
              f"tokens decoded as by the float graph{intents}{f1}")
    return 0
