"""(Re)write the first two cells of every notebook from one template: the title with its
"Open in Colab" badge and the runtime it needs, and the setup cell. Also strips outputs and
Colab metadata, and rewrites the "Open in Colab" table in README.md / docs/colab.md (between
the markers ``<!-- colab-table:start -->`` and ``<!-- colab-table:end -->``).

    python scripts/notebook_header.py                       # use course.json
    python scripts/notebook_header.py --repo you/your-fork  # point badges and clones at a fork
    python scripts/notebook_header.py --repo you/fork --ref v1.0   # ... at a tag (saved too)
    python scripts/notebook_header.py --check               # exit 1 if a notebook would change
    python scripts/notebook_header.py --table               # print the Colab table

The repository (GitHub owner/name) and the branch or tag that the badges and the Colab clone use
live in course.json: a fork sets its own there, once (``--repo`` saves it), and re-runs this.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / "course.json"
HEADER_TAG = "course-header"
SETUP_TAG = "course-setup"
TABLE_FILES = ("README.md", "docs/colab.md")
TABLE_START, TABLE_END = "<!-- colab-table:start -->", "<!-- colab-table:end -->"
# Notebooks whose main work needs TensorFlow Federated (the Python 3.11 stack). The others run on
# any Python with TensorFlow 2.14+ (Keras 2 or 3), so also on Colab's default runtime.
NEEDS_TFF = {"00_environment_check", "04_tff_fedavg", "06_privacy_and_secure_aggregation",
             "07_robustness", "08_heterogeneity_remedies", "09_federated_core", "10_scaling"}
# A TFF notebook that runs its TFF work through data_utils.sidecar.run_job (mode "auto") is
# "sidecar-ready": on Colab's default runtime that work goes to the Python 3.11 side environment,
# so it runs there too (`make test-py313` checks that it does). Detected from its code.
SIDECAR_MARKER = "run_job("

BADGE = ("[![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)]"
         "(https://colab.research.google.com/github/{repo}/blob/{ref}/notebooks/{name})")
PY311_CLICKS = "Runtime → Change runtime type → Runtime version 2025.07"

SETUP_TEMPLATE = '''\
# Setup: written by scripts/notebook_header.py; what it does is data_utils.colab.setup_notebook.
import subprocess, sys; from pathlib import Path
COURSE_REPO, COURSE_REF, NEEDS_TFF = "{repo}", "{ref}", {needs_tff}  # repository: course.json
CLONE = Path("/content") / COURSE_REPO.split("/")[-1]  # where the course lives in Colab
if "google.colab" in sys.modules and not (CLONE / "colab_setup.sh").is_file():
    if subprocess.run(["git", "clone", "-q", "--depth", "1", "-b", COURSE_REF, f"https://github.com/{{COURSE_REPO}}", str(CLONE)]).returncode:
        raise RuntimeError(f"Could not clone {{COURSE_REPO}} at {{COURSE_REF!r}}: check the repository in course.json.")
COURSE_DIR = next((p for p in (Path.cwd(), *Path.cwd().parents, CLONE) if (p / "data_utils" / "__init__.py").is_file()), CLONE)
sys.path.insert(0, str(COURSE_DIR))
from data_utils.colab import setup_notebook
KEEP_BUILD_IN = None  # e.g. "/content/drive/MyDrive/fl-course": keep artifacts and results on Google Drive across notebooks
RUNTIME = setup_notebook(COURSE_DIR, needs_tff=NEEDS_TFF, keep_build_in_folder=KEEP_BUILD_IN)  # Colab: install what is missing; everywhere: check the runtime
'''


def sidecar_ready(nb) -> bool:
    """True when the notebook's own code (not its setup cell) calls data_utils.sidecar.run_job."""
    return any(c.cell_type == "code" and SETUP_TAG not in c.metadata.get("tags", [])
               and SIDECAR_MARKER in c.source for c in nb.cells)


def runtime_of(stem: str, nb=None, short: bool = False) -> str:
    """Which Colab runtime a notebook needs, in words (header line; ``short``: README table)."""
    if stem not in NEEDS_TFF:
        return ("any runtime (no TFF)" if short else
                "any Colab runtime (no TFF needed; the default runtime's TensorFlow is fine)")
    if nb is not None and sidecar_ready(nb):
        return ("any runtime (default runtime: TFF in the side environment)" if short else
                "any Colab runtime: Python 3.11 runs everything directly; on the default runtime "
                "its TFF work runs in a Python 3.11 side environment the setup cell builds")
    return ("Python 3.11 runtime (version 2025.07)" if short else
            f"Colab's Python 3.11 runtime for TFF ({PY311_CLICKS})")


def runs_without_tff_here(path: Path) -> bool:
    """True for notebooks that run on a Python/TensorFlow without TFF (Colab's default runtime,
    .venv313): those that need no TFF, and the TFF notebooks that use the side environment."""
    path = Path(path)
    return path.stem not in NEEDS_TFF or sidecar_ready(
        nbformat.reads(path.read_text(encoding="utf-8"), as_version=4))


def load_config(repo: str | None, ref: str | None) -> dict:
    config = json.loads(CONFIG.read_text()) if CONFIG.is_file() else {}
    if repo:
        if not re.fullmatch(r"[A-Za-z0-9-]+/[A-Za-z0-9._-]+", repo):
            raise ValueError(f"--repo must be a GitHub owner/name such as 'me/fl-course', got {repo!r}")
        config["github_repo"] = repo
    if ref:
        if not re.fullmatch(r"[A-Za-z0-9._/-]+", ref) or ref.startswith("-"):
            raise ValueError(f"--ref must be a branch or tag name such as 'main' or 'v1.0', got {ref!r}")
        config["ref"] = ref
    config.setdefault("ref", "main")
    if "github_repo" not in config:
        raise ValueError("no repository set: pass --repo owner/name (it is saved in course.json)")
    return config


def clean(nb) -> None:
    """Strip outputs, execution counts and editor/Colab metadata from a notebook."""
    for key in ("colab", "widgets", "accelerator", "gpuClass", "papermill", "execution"):
        nb.metadata.pop(key, None)
    nb.metadata["kernelspec"] = {"display_name": "Python 3", "language": "python", "name": "python3"}
    nb.metadata["language_info"] = {"name": "python"}
    for cell in nb.cells:
        for key in ("colab", "id", "outputId", "executionInfo", "collapsed", "scrolled",
                    "papermill", "execution"):
            cell.metadata.pop(key, None)
        cell.pop("id", None)
        if cell.cell_type == "code":
            cell.outputs = []
            cell.execution_count = None


def title_of(nb, stem: str) -> str:
    first = nb.cells[0] if nb.cells else None
    if first is not None and first.cell_type == "markdown" and first.source.strip():
        line = first.source.strip().splitlines()[0]
        if line.startswith("#"):
            return line.lstrip("# ").strip() or stem
    return stem


def render(path: Path, config: dict) -> str:
    """The notebook at ``path`` with freshly written header and setup cells, as text."""
    nb = nbformat.reads(path.read_text(encoding="utf-8"), as_version=4)
    title = title_of(nb, path.stem)
    tags = lambda c: c.metadata.get("tags", [])  # noqa: E731
    first = nb.cells[0] if nb.cells else None
    if first is not None and HEADER_TAG not in tags(first) and title != path.stem:
        # an untagged first cell that starts with the title: the title moves into the header
        rest = first.source.strip().split("\n", 1)[1:] or [""]
        first.source = rest[0].strip("\n")
        if not first.source.strip():
            nb.cells = nb.cells[1:]
    body = [c for c in nb.cells if HEADER_TAG not in tags(c) and SETUP_TAG not in tags(c)]
    header = nbformat.v4.new_markdown_cell(
        f"# {title}\n\n" + BADGE.format(repo=config["github_repo"], ref=config["ref"], name=path.name)
        + f"\n\n*Runs on: {runtime_of(path.stem, nb)}.*", metadata={"tags": [HEADER_TAG]})
    setup = nbformat.v4.new_code_cell(
        SETUP_TEMPLATE.format(repo=config["github_repo"], ref=config["ref"],
                              needs_tff=path.stem in NEEDS_TFF),
        metadata={"tags": [SETUP_TAG]})
    nb.cells = [header, setup, *body]
    clean(nb)
    nb.nbformat, nb.nbformat_minor = 4, 4  # 4.4: no random cell ids, so re-runs give the same file
    text = nbformat.writes(nb)
    return text if text.endswith("\n") else text + "\n"


def render_solution(path: Path, config: dict) -> str:
    """A ``solutions/`` notebook with its setup cell (its first code cell) freshly written; its
    own title and links stay. It trains nothing, so it needs no TFF (its TFF checks skip
    without it)."""
    nb = nbformat.reads(path.read_text(encoding="utf-8"), as_version=4)
    code = [i for i, c in enumerate(nb.cells) if c.cell_type == "code"]
    setup = nbformat.v4.new_code_cell(
        SETUP_TEMPLATE.format(repo=config["github_repo"], ref=config["ref"], needs_tff=False),
        metadata={"tags": [SETUP_TAG]})
    if code:
        nb.cells[code[0]] = setup
    else:
        nb.cells.insert(1, setup)
    clean(nb)
    nb.nbformat, nb.nbformat_minor = 4, 4
    text = nbformat.writes(nb)
    return text if text.endswith("\n") else text + "\n"


def render_any(path: Path, config: dict) -> str:
    """:func:`render_solution` for ``solutions/`` notebooks, :func:`render` for lessons."""
    return render_solution(path, config) if path.parent.name == "solutions" else render(path, config)


def apply_header(path: Path, config: dict) -> bool:
    """Rewrite ``path``'s header cells; returns True if the file changed."""
    before = path.read_text(encoding="utf-8")
    after = render_any(path, config)
    if after != before:
        path.write_text(after, encoding="utf-8")
        return True
    return False


def colab_table(paths: list[Path], config: dict) -> str:
    """The README's "Open in Colab" table: every notebook, its badge and the runtime it needs."""
    rows = ["| notebook | open | Colab runtime |", "|---|---|---|"]
    for path in paths:
        nb = nbformat.reads(path.read_text(encoding="utf-8"), as_version=4)
        badge = BADGE.format(repo=config["github_repo"], ref=config["ref"], name=path.name)
        rows.append(f"| {title_of(nb, path.stem)} | {badge} | {runtime_of(path.stem, nb, short=True)} |")
    return "\n".join(rows)


def update_tables(table: str, check: bool = False) -> list[str]:
    """Put ``table`` between the markers in each of :data:`TABLE_FILES` that has them."""
    changed = []
    for name in TABLE_FILES:
        path = ROOT / name
        if not path.is_file():
            continue
        text = path.read_text(encoding="utf-8")
        if TABLE_START not in text or TABLE_END not in text:
            continue
        head, rest = text.split(TABLE_START, 1)
        _, tail = rest.split(TABLE_END, 1)
        new = f"{head}{TABLE_START}\n{table}\n{TABLE_END}{tail}"
        if new != text:
            changed.append(name)
            if not check:
                path.write_text(new, encoding="utf-8")
    return changed


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repo", help="GitHub owner/name the badges and the Colab clone point at")
    parser.add_argument("--ref", help="branch or tag Colab clones (default: course.json's, else main)")
    parser.add_argument("--check", action="store_true", help="only report what would change (exit 1 if any)")
    parser.add_argument("--table", action="store_true", help="print the Colab table and exit")
    parser.add_argument("notebooks", nargs="*", type=Path)
    args = parser.parse_args(argv)
    try:
        config = load_config(args.repo, args.ref)
    except ValueError as err:
        parser.error(str(err))
    all_notebooks = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    if args.table:
        print(colab_table(all_notebooks, config))
        return 0
    if (args.repo or args.ref) and not args.check:
        CONFIG.write_text(json.dumps(config, indent=2) + "\n")
    paths = args.notebooks or [*all_notebooks, *sorted((ROOT / "solutions").glob("[0-9][0-9]_*.ipynb"))]
    missing = [str(p) for p in paths if not Path(p).is_file()]
    if missing:
        parser.error(f"no such notebook: {', '.join(missing)}")
    changed = []
    for path in paths:
        if args.check:
            if render_any(Path(path), config) != Path(path).read_text(encoding="utf-8"):
                changed.append(Path(path).name)
        elif apply_header(Path(path), config):
            changed.append(Path(path).name)
    changed += update_tables(colab_table(all_notebooks, config), check=args.check)
    verb = "would change" if args.check else "rewrote"
    print(f"{verb} {len(changed)} file(s)" + (": " + ", ".join(changed) if changed else ""))
    return 1 if args.check and changed else 0


if __name__ == "__main__":
    sys.exit(main())
