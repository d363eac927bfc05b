"""The issue-7 evaluation of the optical core on CPU (``resnetbk.optics.evaluate``).

Writes ``bench/results/optics_eval.json``, the plots ``bench/results/optics_*.png`` and
regenerates the "## Evaluation" section of docs/OPTICS.md (everything from that heading to the
end of the file). The full run takes a few minutes on 2 CPU cores; sizes are in the JSON.

Usage:
    python bench/optics_eval.py               # full run
    python bench/optics_eval.py --quick       # a few seconds, writes nothing under docs/
    python bench/optics_eval.py --docs-only   # regenerate the docs section from the JSON
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from resnetbk.optics.evaluate import EvalConfig, markdown, plot, run_evaluation

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
DOC = ROOT / "docs" / "OPTICS.md"
HEADING = "## Evaluation"


def write_docs(results: dict, doc: Path = DOC) -> None:
    """Replace the doc's "## Evaluation" section (to the end of the file) with the new one."""
    text = doc.read_text()
    lines = text.splitlines(keepends=True)
    starts = [i for i, line in enumerate(lines) if line.rstrip("\n") == HEADING]
    if len(starts) != 1:
        sys.exit(f"{doc} must contain exactly one line '{HEADING}', found {len(starts)}")
    doc.write_text("".join(lines[:starts[0]]) + markdown(results))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny run, results to --out only")
    parser.add_argument("--docs-only", action="store_true",
                        help="regenerate docs/OPTICS.md from the existing JSON")
    parser.add_argument("--out", default=None, help="folder for the JSON and plots "
                        "(default bench/results; --quick: a folder under the temp dir)")
    args = parser.parse_args()
    out = Path(args.out) if args.out else (
        Path(tempfile.gettempdir()) / "resnetbk-optics-quick" if args.quick else RESULTS)
    path = out / "optics_eval.json"
    if args.docs_only:
        write_docs(json.loads(path.read_text()))
        print(f"rewrote the evaluation section of {DOC}")
        return
    results = run_evaluation(EvalConfig.quick() if args.quick else EvalConfig())
    out.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=1) + "\n")
    pngs = plot(results, out)
    print(f"wrote {path} and {', '.join(str(p) for p in pngs)} "
          f"({results['seconds']['total']:.0f} s)")
    if not args.quick:
        write_docs(results)
        print(f"rewrote the evaluation section of {DOC}")


if __name__ == "__main__":
    main()
