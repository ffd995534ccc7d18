"""What a learner should not have to read past, checked in notebooks (issue 14, section 5).

In the committed notebooks (sources): no code cell over :data:`MAX_CELL_LINES` lines and the setup
cell at most :data:`MAX_SETUP_LINES`. In executed notebooks (outputs): no Python warning, no
TensorFlow/absl warning line, no traceback or error output, no line over :data:`MAX_LINE` characters.

    python scripts/check_notebooks.py                    # the committed notebooks' sources
    python scripts/check_notebooks.py build/notebooks/*.ipynb   # executed copies: outputs too

Exit code 1 and one line per problem when something is found. ``make course`` runs it on the
executed copies; tests/test_notebooks.py on every smoke run.
"""
from __future__ import annotations

import json
import re
import sys
from pathlib import Path

MAX_CELL_LINES = 30
MAX_SETUP_LINES = 12
MAX_LINE = 200
SETUP_TAG = "course-setup"
WARNING = re.compile(r"\b[A-Z]\w*Warning: |^WARNING:(tensorflow|absl|root)|^W\d{4} \d\d:\d\d|"
                     r"warnings\.warn\(", re.MULTILINE)
TRACEBACK = re.compile(r"Traceback \(most recent call last\)|^\s*File \".+\", line \d+", re.MULTILINE)
ANSI = re.compile(r"\x1b\[[0-9;]*m")


def _source(cell) -> str:
    src = cell.get("source", "")
    return "".join(src) if isinstance(src, list) else src


def source_problems(nb: dict, name: str = "") -> list[str]:
    """Code cells longer than the limits (the setup cell has its own)."""
    problems = []
    for i, cell in enumerate(nb.get("cells", [])):
        if cell.get("cell_type") != "code":
            continue
        n = len(_source(cell).rstrip("\n").splitlines())
        setup = SETUP_TAG in cell.get("metadata", {}).get("tags", [])
        limit = MAX_SETUP_LINES if setup else MAX_CELL_LINES
        if n > limit:
            problems.append(f"{name} cell {i}: {'setup cell' if setup else 'code cell'} has {n} lines "
                            f"(at most {limit})")
    return problems


def _texts(output: dict):
    """The text a reader sees in one output (images and HTML excluded)."""
    if output.get("output_type") == "stream":
        yield _source({"source": output.get("text", "")})
    elif output.get("output_type") == "error":
        yield "\n".join(output.get("traceback", []))
    else:
        text = output.get("data", {}).get("text/plain")
        if text is not None:
            yield _source({"source": text})


def output_problems(nb: dict, name: str = "") -> list[str]:
    """Warnings, tracebacks, error outputs and over-long lines in an executed notebook."""
    problems = []
    for i, cell in enumerate(nb.get("cells", [])):
        for output in cell.get("outputs", []):
            where = f"{name} cell {i}"
            if output.get("output_type") == "error":
                problems.append(f"{where}: error output {output.get('ename')}: {output.get('evalue', '')[:120]}")
                continue
            for text in _texts(output):
                text = ANSI.sub("", text)
                if m := WARNING.search(text):
                    line = text[text.rfind("\n", 0, m.start()) + 1:].split("\n", 1)[0]
                    problems.append(f"{where}: warning: {line[:160]}")
                if TRACEBACK.search(text):
                    problems.append(f"{where}: traceback in the output")
                for line in re.split(r"[\r\n]", text):
                    if len(line) > MAX_LINE:
                        problems.append(f"{where}: output line of {len(line)} characters (at most {MAX_LINE}): "
                                        f"{line[:80]}...")
    return problems


def check(paths, outputs: bool) -> list[str]:
    problems = []
    for path in map(Path, paths):
        nb = json.loads(path.read_text(encoding="utf-8"))
        problems += source_problems(nb, path.name)
        if outputs:
            problems += output_problems(nb, path.name)
    return problems


def main(argv=None) -> int:
    args = sys.argv[1:] if argv is None else argv
    root = Path(__file__).resolve().parent.parent
    paths = args or sorted((root / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    problems = check(paths, outputs=bool(args))
    for p in problems:
        print(p)
    print(f"{len(problems)} problem(s) in {len(paths)} notebook(s)" if problems
          else f"{len(paths)} notebook(s): no long cells" + (", no warnings, tracebacks or long output lines"
                                                              if args else ""))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
