"""(Re)write the first two cells of every notebook from one template: the title with its
"Open in Colab" badge, and the setup cell. Also strips outputs and Colab metadata.

    python scripts/notebook_header.py                      # use course.json
    python scripts/notebook_header.py --repo you/your-fork --ref main   # and save them there

The repository (GitHub owner/name) and the branch or tag the badges and the Colab clone use
live in course.json: a fork sets its own there, once, and re-runs this script.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / "course.json"
HEADER_TAG = "course-header"
SETUP_TAG = "course-setup"
# Notebooks whose main work needs TensorFlow Federated (Python 3.11 stack or the side env).
NEEDS_TFF = {"00_environment_check", "04_tff_fedavg", "06_privacy_and_secure_aggregation",
             "07_robustness"}

BADGE = ("[![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)]"
         "(https://colab.research.google.com/github/{repo}/blob/{ref}/notebooks/{name})")

SETUP_TEMPLATE = '''\
# Setup (written by scripts/notebook_header.py; edit the template there, not here).
# In Colab: clone the course at a pinned ref and install its stack; elsewhere: find the repo.
import os, subprocess, sys
from pathlib import Path

COURSE_REPO, COURSE_REF = "{repo}", "{ref}"
if "google.colab" in sys.modules:
    COURSE_DIR = Path("/content") / COURSE_REPO.split("/")[-1]
    if not (COURSE_DIR / "data_utils").is_dir():
        subprocess.run(["git", "clone", "--quiet", "--depth", "1", "--branch", COURSE_REF,
                        f"https://github.com/{{COURSE_REPO}}.git", str(COURSE_DIR)], check=True)
    # colab_setup.sh exits 0 when the runtime is ready, 3 when it replaced an already-imported
    # package (TensorFlow) and the runtime must restart; it prints what it did either way.
    setup = subprocess.run(["bash", str(COURSE_DIR / "colab_setup.sh")], check=False)
    if setup.returncode == 3:
        print("Restarting the runtime to load the new packages: run all cells again afterwards.")
        os.kill(os.getpid(), 9)  # Colab only: this branch never runs under papermill or nbval
    elif setup.returncode not in (0,):
        print("colab_setup.sh failed (see its message above); the notebook continues with what works.")
else:
    COURSE_DIR = next((p for p in (Path.cwd(), *Path.cwd().parents)
                       if (p / "data_utils" / "__init__.py").is_file()), Path.cwd())
if str(COURSE_DIR) not in sys.path:
    sys.path.insert(0, str(COURSE_DIR))
'''


def load_config(repo: str | None, ref: str | None) -> dict:
    config = json.loads(CONFIG.read_text()) if CONFIG.is_file() else {}
    if repo:
        if repo.count("/") != 1 or not all(repo.split("/")):
            raise ValueError(f"--repo must be a GitHub owner/name such as 'me/fl-course', got {repo!r}")
        config["github_repo"] = repo
    if ref:
        config["ref"] = ref
    config.setdefault("ref", "main")
    if "github_repo" not in config:
        raise ValueError("no repository set: pass --repo owner/name (it is saved in course.json)")
    return config


def clean(nb) -> None:
    """Strip outputs, execution counts and editor/Colab metadata from a notebook."""
    for key in ("colab", "widgets", "accelerator", "gpuClass"):
        nb.metadata.pop(key, None)
    nb.metadata["kernelspec"] = {"display_name": "Python 3", "language": "python", "name": "python3"}
    nb.metadata["language_info"] = {"name": "python"}
    for cell in nb.cells:
        for key in ("colab", "id", "outputId", "executionInfo", "collapsed", "scrolled"):
            cell.metadata.pop(key, None)
        cell.pop("id", None)
        if cell.cell_type == "code":
            cell.outputs = []
            cell.execution_count = None


def apply_header(path: Path, config: dict) -> bool:
    """Rewrite ``path``'s header cells; returns True if the file changed."""
    before = path.read_text(encoding="utf-8")
    nb = nbformat.reads(before, as_version=4)
    tags = lambda c: c.metadata.get("tags", [])  # noqa: E731
    title = path.stem
    if nb.cells and HEADER_TAG in tags(nb.cells[0]):
        first = nb.cells[0].source.splitlines()[0]
        title = first.lstrip("# ").strip() or title
    body = [c for c in nb.cells if HEADER_TAG not in tags(c) and SETUP_TAG not in tags(c)]
    runtime = ("Python 3.11 runtime for TFF (or the default runtime with the side environment)"
               if path.stem in NEEDS_TFF else "any Colab runtime (no TFF needed)")
    header = nbformat.v4.new_markdown_cell(
        f"# {title}\n\n" + BADGE.format(repo=config["github_repo"], ref=config["ref"], name=path.name)
        + f"\n\n*Runs on: {runtime}.*", metadata={"tags": [HEADER_TAG]})
    setup = nbformat.v4.new_code_cell(SETUP_TEMPLATE.format(**{"repo": config["github_repo"],
                                                                 "ref": config["ref"]}),
                                      metadata={"tags": [SETUP_TAG]})
    nb.cells = [header, setup, *body]
    clean(nb)
    nb.nbformat, nb.nbformat_minor = 4, 4  # 4.4: no random cell ids, so re-runs give the same file
    after = nbformat.writes(nb)
    if not after.endswith("\n"):
        after += "\n"
    if after != before:
        path.write_text(after, encoding="utf-8")
        return True
    return False


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repo", help="GitHub owner/name the badges and the Colab clone point at")
    parser.add_argument("--ref", help="branch or tag Colab clones (default: course.json's, else main)")
    parser.add_argument("--check", action="store_true", help="only report notebooks that would change")
    parser.add_argument("notebooks", nargs="*", type=Path)
    args = parser.parse_args(argv)
    try:
        config = load_config(args.repo, args.ref)
    except ValueError as err:
        parser.error(str(err))
    if (args.repo or args.ref) and not args.check:
        CONFIG.write_text(json.dumps(config, indent=2) + "\n")
    paths = args.notebooks or sorted((ROOT / "notebooks").glob("*.ipynb"))
    changed = []
    for path in paths:
        if args.check:
            original = path.read_text(encoding="utf-8")
            if apply_header(path, config):
                changed.append(path.name)
                path.write_text(original, encoding="utf-8")
        elif apply_header(path, config):
            changed.append(path.name)
    verb = "would change" if args.check else "rewrote"
    print(f"{verb} {len(changed)} notebook(s)" + (": " + ", ".join(changed) if changed else ""))
    return 1 if args.check and changed else 0


if __name__ == "__main__":
    sys.exit(main())
