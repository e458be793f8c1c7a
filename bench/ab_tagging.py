"""In-process tagging speed of two source trees, interleaved: A, B, A, B, ... in one run.

    .venv/bin/python bench/ab_tagging.py --a OLD_TREE --a-model MODEL_A --b . --b-model MODEL_B \
        [--a-python PY] [--b-python PY] [--a-alternatives K] [--b-alternatives K] [--rounds 3] [--backend auto] [--data ../shared/datasets/atis]

Each round runs ``bench/tagging_speed.py`` of tree A and of tree B, A first in odd rounds and B first in even
ones, so that a drift of the machine's speed weighs on both alike (each a fresh process with its own
interpreter, so each imports its own tree's code; ``--a-python``/``--b-python`` default to the running one),
on its model, the same data and backend, one thread. A tree's tagging_speed.py puts that tree first on the
import path. ``--a-alternatives``/``--b-alternatives`` pass ``--alternatives K`` to one side (the same tree and
model on both sides then prices that option). Prints every round's rates (one at a time, and in calls of 64), the median of each side and
B's medians over A's; ``--json`` prints those as one JSON object on the last line.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def run_side(python: str, tree: Path, model: Path, alternatives: int, args: argparse.Namespace) -> dict:
    command = [python, str(tree / "bench" / "tagging_speed.py"), "--model", str(model), "--data", str(args.data),
               "--backend", args.backend, "--threads", "1", "--repeat", str(args.repeat), "--json"]
    if alternatives:
        command += ["--alternatives", str(alternatives)]
    result = subprocess.run(command, cwd=tree, capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"{tree}: tagging_speed.py failed: {result.stderr.strip().splitlines()[-1:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for side in ("a", "b"):
        parser.add_argument(f"--{side}", required=True, type=Path, help=f"source tree {side.upper()}")
        parser.add_argument(f"--{side}-model", required=True, type=Path, help=f"the model tree {side.upper()} loads")
        parser.add_argument(f"--{side}-python", default=sys.executable, help="its interpreter")
        parser.add_argument(f"--{side}-alternatives", type=int, default=0, metavar="K",
                            help="ask for K alternatives in every call (0: the default answer)")
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "datasets" / "atis")
    parser.add_argument("--backend", default="auto")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--repeat", type=int, default=3, help="passes per run; each run reports its best")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    for side in ("a", "b"):
        tree, model = getattr(args, side), getattr(args, f"{side}_model")
        if not (tree / "bench" / "tagging_speed.py").is_file():
            parser.error(f"--{side} {tree}: no bench/tagging_speed.py there")
        if not model.is_dir():
            parser.error(f"--{side}-model {model}: no such model folder")
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    rates: dict[str, list[tuple[float, float]]] = {"a": [], "b": []}
    for round_no in range(1, args.rounds + 1):
        for side in (("a", "b") if round_no % 2 else ("b", "a")):
            result = run_side(getattr(args, f"{side}_python"), getattr(args, side).resolve(),
                              getattr(args, f"{side}_model").resolve(), getattr(args, f"{side}_alternatives"), args)
            rates[side].append((result["single_per_second"], result["batch64_per_second"]))
            print(f"round {round_no} {side.upper()} ({result['backend']}): {result['single_per_second']:,}/s one at "
                  f"a time, {result['batch64_per_second']:,}/s in calls of 64", flush=True)
    medians = {side: [statistics.median(r[i] for r in rates[side]) for i in (0, 1)] for side in rates}
    ratios = [medians["b"][i] / medians["a"][i] for i in (0, 1)]
    # Each round's own B/A, the two runs of a round being closest in time; their median.
    paired = [statistics.median(b[i] / a[i] for a, b in zip(rates["a"], rates["b"])) for i in (0, 1)]
    print(f"median A {medians['a'][0]:,.0f} / {medians['a'][1]:,.0f}, B {medians['b'][0]:,.0f} / "
          f"{medians['b'][1]:,.0f}: B/A {ratios[0]:.3f} one at a time, {ratios[1]:.3f} in calls of 64; "
          f"median of the rounds' B/A {paired[0]:.3f} and {paired[1]:.3f}")
    if args.json:
        print(json.dumps({"rounds": rates, "median": medians, "ratio_single": ratios[0], "ratio_batch64": ratios[1],
                          "paired_ratio_single": paired[0], "paired_ratio_batch64": paired[1],
                          "a": str(args.a), "b": str(args.b), "backend": args.backend}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
