"""The ``slotfill`` command line."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from service.main import add_serve_arguments
from slotfill import __version__
from slotfill.engines import BACKENDS
from slotfill.errors import SlotfillError


def _add_train_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, help="JSON file of training settings (see training/config.py)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", nargs="+",
                        help="override one setting, e.g. --set cell=gru epochs=20 (repeatable)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="slotfill", description="Train, evaluate and serve recurrent slot taggers.")
    parser.add_argument("--version", action="version", version=f"slotfill {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    train = commands.add_parser("train", help="train a tagger and export its artifact")
    train.add_argument("--data", default="sample",
                       help="data directory (folder, CoNLL or JSONL format), or 'sample' for the bundled data")
    train.add_argument("--out", required=True, type=Path, help="output directory for the model artifact")
    train.add_argument("--seed", type=int, help="random seed (default: the config's, 0)")
    _add_train_options(train)
    train.add_argument("--resume", action="store_true", help="continue an interrupted run in --out")
    train.add_argument("--overwrite", action="store_true", help="replace an existing run in --out")
    train.add_argument("--quiet", action="store_true", help="no progress bar or per-epoch lines")

    evaluate = commands.add_parser("evaluate", help="evaluate an artifact on a data split")
    evaluate.add_argument("--model", required=True, type=Path)
    evaluate.add_argument("--data", required=True, help="data directory, or 'sample'")
    evaluate.add_argument("--split", default="test", choices=("train", "valid", "test"))
    evaluate.add_argument("--out", type=Path, help="write report.json and report.txt here")
    evaluate.add_argument("--backend", choices=BACKENDS, default="auto",
                          help="inference backend (auto: onnx when the artifact has a graph)")

    tag = commands.add_parser("tag", help="tag text lines or JSONL requests, writing JSONL")
    tag.add_argument("--model", required=True, type=Path)
    tag.add_argument("--input", type=Path, help="input file (default: standard input)")
    tag.add_argument("--output", type=Path, help="output file (default: standard output)")
    tag.add_argument("--format", choices=("auto", "text", "jsonl"), default="auto",
                     help="input format: one utterance per line, or JSON objects with 'text' or 'tokens'")
    tag.add_argument("--batch-size", type=int, default=64)

    compare = commands.add_parser("compare", help="train several configurations over seeds; write a Markdown table")
    compare.add_argument("--data", default="sample")
    compare.add_argument("--out", required=True, type=Path)
    compare.add_argument("--configs", nargs="+", default=None,
                         help="configurations to compare: default lstm gru bilstm bigru bilstm-crf bigru-crf "
                              "(default: all but 'default')")
    compare.add_argument("--seeds", type=int, default=3, help="number of seeds per configuration")
    _add_train_options(compare)

    export = commands.add_parser("export", help="add an ONNX graph to an artifact, checked against the torch model")
    export.add_argument("--model", required=True, type=Path, help="artifact directory (written in place)")
    export.add_argument("--format", required=True, choices=("onnx",))
    export.add_argument("--data", help="also check on this data directory's --split (e.g. the test set), "
                                       "or 'sample'")
    export.add_argument("--split", default="test", choices=("train", "valid", "test"))
    export.add_argument("--tolerance", type=float, default=1e-4,
                        help="largest allowed difference of emissions and intent logits on --data (default 1e-4; "
                             "the seeded synthetic sentences are held to 1e-3)")
    export.add_argument("--quantize", choices=("int8",),
                        help="also write model.int8.onnx, an int8 copy of the graph, compared with the float graph "
                             "on --data (needed) and refused below --min-agreement (backend onnx-int8 serves it)")
    export.add_argument("--min-agreement", type=float, default=0.995,
                        help="with --quantize: least fraction of --data tokens decoded as by the float graph")

    calibrate = commands.add_parser("calibrate", help="fit confidence temperatures on a data set's dev split "
                                                      "and store them in an artifact")
    calibrate.add_argument("--model", required=True, type=Path, help="artifact directory (written in place)")
    calibrate.add_argument("--data", required=True, help="data directory with a valid split, or 'sample'")
    calibrate.add_argument("--png", type=Path, help="also draw the span reliability diagram here")

    add_serve_arguments(commands.add_parser("serve", help="serve an artifact over HTTP"))

    data = commands.add_parser("data", help="dataset utilities")
    data_commands = data.add_subparsers(dest="data_command", metavar="ACTION", required=True)
    fetch = data_commands.add_parser("fetch", help="download a standard dataset (sha256-checked) into a cache")
    fetch.add_argument("name", choices=("atis", "snips"))
    fetch.add_argument("--cache", type=Path, default=Path.home() / ".cache" / "slotfill" / "datasets")
    fetch.add_argument("--mirror", help="base URL serving {name}/{split}/{file} instead of the public source")
    return parser


def _data_dir(value: str) -> Path:
    if value == "sample":
        from slotfill.data.sample import sample_data_dir

        return sample_data_dir()
    return Path(value)


def _train_config(args: argparse.Namespace):
    from .config import TrainConfig

    config = TrainConfig.from_file(args.config) if args.config else TrainConfig()
    config.apply_overrides([pair for group in args.overrides for pair in group])
    return config


def cmd_train(args: argparse.Namespace) -> int:
    from .pipeline import Trainer

    config = _train_config(args)
    if args.seed is not None:
        config.seed = args.seed
    log = (lambda message: None) if args.quiet else None
    result = Trainer(_data_dir(args.data), args.out, config, resume=args.resume, overwrite=args.overwrite,
                     progress=None if not args.quiet else False, log=log).run()
    if os.environ.get("RANK", "0") != "0":  # under torchrun, rank 0 speaks for the run
        return 0
    report = result.report
    intent = "" if report["intent_accuracy"] is None else f", intent accuracy {100 * report['intent_accuracy']:.2f}"
    print(f"{report['split']} slot F1 {100 * report['slot_f1']:.2f}{intent}; model written to {result.out_dir}")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from slotfill.artifact import atomic_write_json, atomic_write_text
    from slotfill.evaluation import evaluate_artifact
    from slotfill.reporting import format_report

    report = evaluate_artifact(args.model, _data_dir(args.data), args.split, backend=args.backend)
    text = format_report(report, title=f"{args.model} on {args.data} ({args.split})")
    print(text)
    if args.out:
        atomic_write_json(args.out / "report.json", report)
        atomic_write_text(args.out / "report.txt", text)
    return 0


def cmd_tag(args: argparse.Namespace) -> int:
    from .tagging import tag_stream

    source = open(args.input, "rb") if args.input else sys.stdin.buffer
    try:
        tag_stream(args.model, source, args.output, input_format=args.format, batch_size=args.batch_size,
                   source_name=str(args.input or "<stdin>"))
    finally:
        if args.input:
            source.close()
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from .compare import run_comparison

    base = _train_config(args)
    table = run_comparison(_data_dir(args.data), args.out, base, configs=args.configs, seeds=args.seeds)
    print(table)
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    try:
        from slotfill.onnx_export import export_onnx
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
        import torch  # noqa: F401
    except ImportError as exc:
        raise SlotfillError(f"ONNX export needs onnx, onnxruntime and torch ({exc.name} is missing): "
                            "pip install 'slotfill[train]'") from None
    if args.quantize and not args.data:
        raise SlotfillError("--quantize needs --data: the int8 graph is measured against the float graph on it")
    if not 0.0 < args.min_agreement <= 1.0:
        raise SlotfillError(f"--min-agreement: must be in (0, 1], got {args.min_agreement}")
    sentences = gold = None
    if args.data:
        from slotfill.data import load_corpus
        from slotfill.model_io import read_artifact
        from slotfill.text import normalize_token

        artifact = read_artifact(args.model)
        corpus = load_corpus(_data_dir(args.data), scheme=artifact.config.scheme, tokenizer_config=artifact.tokenizer)
        examples = getattr(corpus, args.split)
        if not examples:
            raise SlotfillError(f"--data {args.data}: has no {args.split} split")
        sentences = [[normalize_token(t, artifact.tokenizer) or t for t in e.tokens] for e in examples]
        gold = [list(e.tags) for e in examples] if artifact.config.scheme == "IOB2" else None
    check = export_onnx(args.model, sentences, tolerance=args.tolerance)
    print(f"wrote {args.model / 'model.onnx'}: checked on {check.sentences} sentences ({check.tokens} tokens); "
          f"labels identical, max emission difference {check.max_emission_diff:.1e} on the data and "
          f"{check.synthetic_max_emission_diff:.1e} on synthetic sentences, "
          f"max intent-logit difference {check.max_intent_diff:.1e}")
    if args.quantize:
        from slotfill.onnx_quantize import quantize_onnx

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


def cmd_calibrate(args: argparse.Namespace) -> int:
    from slotfill.calibration import calibrate_artifact

    result = calibrate_artifact(args.model, _data_dir(args.data))
    print(f"slot temperature {result['slot_temperature']:.4f}, intent temperature {result['intent_temperature']:.4f}")
    for kind in ("span", "intent"):
        if f"{kind}_ece_before" in result:
            print(f"{kind} ECE on {result['split']}: {result[f'{kind}_ece_before']:.4f} -> "
                  f"{result[f'{kind}_ece_after']:.4f}")
    if args.png and "span_bins_before" in result:
        from slotfill.reporting import plot_reliability

        plot_reliability(result["span_bins_before"], result["span_bins_after"], args.png,
                         f"span confidence, temperature {result['slot_temperature']:.3f}")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from service.main import serve_from_args

    serve_from_args(args)
    return 0


def cmd_data(args: argparse.Namespace) -> int:
    from .fetch import fetch

    path = fetch(args.name, args.cache, mirror=args.mirror)
    print(path)
    return 0


COMMANDS = {"train": cmd_train, "evaluate": cmd_evaluate, "tag": cmd_tag, "compare": cmd_compare,
            "export": cmd_export, "calibrate": cmd_calibrate, "serve": cmd_serve, "data": cmd_data}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except SlotfillError as exc:
        print(f"slotfill {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"slotfill {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    sys.exit(main())
