"""The course's words: every notebook ends with references a learner can follow, links the
glossary, and the glossary defines the terms the lessons use (issue 14, section 3)."""
import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
GLOSSARY = ROOT / "docs" / "glossary.md"
GLOSSARY_URL = "docs/glossary.md"
LINK = re.compile(r"(https?://[^)\s>]+)")  # markdown links, <autolinks> and bare URLs alike
# Terms issue 14 found used without definition, and the other words every lesson leans on.
REQUIRED_TERMS = ["federated learning", "FedAvg", "round", "client", "IID", "non-IID", "Dirichlet",
                  "cross-device", "cross-silo", "threat model", "federated type", "RDP", "PLD",
                  "replace-one", "Shamir", "total variation distance", "differential privacy",
                  "secure aggregation", "backdoor", "trimmed mean", "median"]


def anchor(heading: str) -> str:
    """GitHub's anchor for a markdown heading: lower case, punctuation dropped, spaces to '-'."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def glossary_headings() -> dict[str, str]:
    text = GLOSSARY.read_text(encoding="utf-8")
    return {anchor(h): h for h in re.findall(r"^#{2,4} (.+)$", text, re.MULTILINE)}


def markdown(nb_path: Path) -> list[str]:
    nb = json.loads(nb_path.read_text(encoding="utf-8"))
    return ["".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "markdown"]


def test_the_glossary_defines_every_term_the_issue_lists():
    assert GLOSSARY.is_file(), "docs/glossary.md is missing"
    headings = " | ".join(glossary_headings().values()).lower()
    missing = [t for t in REQUIRED_TERMS if t.lower() not in headings]
    assert not missing, f"docs/glossary.md has no entry (heading) for: {missing}"
    entry = GLOSSARY.read_text(encoding="utf-8").split("### Federated type", 1)[1].split("\n### ", 1)[0]
    assert "@CLIENTS" in entry and "@SERVER" in entry, "the federated-type entry must explain {...}@CLIENTS and @SERVER"


@pytest.mark.parametrize("nb_path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_every_notebook_ends_with_references_that_link(nb_path):
    cells = markdown(nb_path)
    refs = [c for c in cells if re.match(r"#+ References", c.strip())]
    assert refs, f"{nb_path.name} has no '## References' cell"
    links = LINK.findall(refs[-1])
    assert len(links) >= 2, f"{nb_path.name}: its References cite fewer than two links: {links}"


@pytest.mark.parametrize("nb_path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_glossary_links_point_at_real_entries(nb_path):
    text = "\n".join(markdown(nb_path))
    targets = re.findall(re.escape(GLOSSARY_URL) + r"(#[\w\-]*)?", text)
    assert targets, f"{nb_path.name} never links the glossary ({GLOSSARY_URL})"
    known = glossary_headings()
    broken = sorted({t for t in targets if t and t[1:] not in known})
    assert not broken, f"{nb_path.name} links glossary anchors that do not exist: {broken}"


def test_anchor_follows_github():
    assert anchor("RDP (Rényi differential privacy)") == "rdp-rényi-differential-privacy"
    assert anchor("Federated type ({...}@CLIENTS, T@SERVER)") == "federated-type-clients-tserver"
