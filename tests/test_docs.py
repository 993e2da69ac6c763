"""The documentation holds together: every relative link of README.md, config/README.md and docs/*.md
(Markdown links, images and HTML src/href) names an existing file, every #anchor into a Markdown file
names one of its headings, and README.md stays short enough to read in five minutes."""

from __future__ import annotations

import re
import unicodedata
from pathlib import Path
from urllib.parse import unquote

import pytest
from conftest import ROOT

README_LIMIT = 10_000  # characters
PAGES = [ROOT / "README.md", ROOT / "config/README.md", *sorted((ROOT / "docs").glob("*.md"))]

FENCE = re.compile(r"^(```|~~~).*?^\1[ \t]*$", re.M | re.S)
CODE_SPAN = re.compile(r"(`+)(?!`).+?(?<!`)\1(?!`)", re.S)
INLINE = re.compile(r"!?\[(?:[^\[\]]|\[[^\[\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+[\"'(][^)]*)?\)")
REFERENCE = re.compile(r"^ {0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s+.*)?$", re.M)
HTML = re.compile(r"""<(?:img|a|source)\b[^>]*?\b(?:src|href)\s*=\s*["']([^"']+)["']""", re.I)
HEADING = re.compile(r"^ {0,3}(#{1,6})[ \t]+(.+?)[ \t#]*$", re.M)


def prose(text: str) -> str:
    """The text without fenced code blocks and code spans, where brackets are not links."""
    return CODE_SPAN.sub("", FENCE.sub("", text))


def links(text: str) -> list[str]:
    text = prose(text)
    return [m.group(1) for pattern in (INLINE, REFERENCE, HTML) for m in pattern.finditer(text)]


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: markup dropped, lower case, punctuation removed, spaces to hyphens."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link keeps its text
    text = re.sub(r"<[^>]+>", "", text).replace("`", "").replace("*", "").lower()
    keep = (c for c in text if c in "-_ " or unicodedata.category(c)[0] in "LMN")
    return "".join(keep).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    seen: dict[str, int] = {}
    out = set()
    for m in HEADING.finditer(FENCE.sub("", path.read_text())):
        base = slug(m.group(2))
        n = seen.get(base, 0)
        seen[base] = n + 1
        out.add(base if n == 0 else f"{base}-{n}")
    return out


def broken(page: Path) -> list[str]:
    bad = []
    for link in links(page.read_text()):
        if re.match(r"^[a-z][a-z0-9+.-]*:", link, re.I) or link.startswith("//"):
            continue  # a URL (http:, mailto:, ...), not a file of the repository
        target, _, anchor = link.partition("#")
        path = (page.parent / unquote(target)).resolve() if target else page
        if not path.exists():
            bad.append(f"{link}: no file {path}")
        elif anchor and path.suffix == ".md" and anchor.lower() not in anchors(path):
            bad.append(f"{link}: no heading #{anchor} in {path}")
    return bad


def test_the_pages_exist():
    assert (ROOT / "README.md").is_file() and (ROOT / "config/README.md").is_file()
    assert len(PAGES) > 2, "docs/ holds no page"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_resolves(page):
    assert not broken(page), broken(page)


def test_readme_reads_in_five_minutes():
    size = len((ROOT / "README.md").read_text())
    assert size <= README_LIMIT, f"README.md has {size} characters, at most {README_LIMIT}"


def test_readme_links_every_docs_page():
    linked = {(ROOT / link.partition("#")[0]).resolve() for link in links((ROOT / "README.md").read_text())}
    missing = [p.name for p in sorted((ROOT / "docs").glob("*.md")) if p.resolve() not in linked]
    assert not missing, f"README.md links no {missing}"


# --- the checker itself ------------------------------------------------------------------------------------

def test_links_are_found_outside_code_only():
    text = ("See [a](docs/a.md), ![img](x.png \"title\") and [b][ref].\n\n[ref]: docs/b.md\n"
            "`[not](code.md)`\n```\n[nor](block.md)\n```\n<img src=\"pic.png\" alt=\"\"> [web](https://x.org)\n")
    assert sorted(links(text)) == sorted(["docs/a.md", "x.png", "docs/b.md", "pic.png", "https://x.org"])


def test_slugs_follow_github():
    assert slug("Evidence on CPU: `config/evidence.yaml`") == "evidence-on-cpu-configevidenceyaml"
    assert slug("A recipe (defaults: the authors' CIFAR recipe)") == "a-recipe-defaults-the-authors-cifar-recipe"
    assert slug("Training step and data, against plain PyTorch") == "training-step-and-data-against-plain-pytorch"
    assert slug("The paper's setups: `config/paper.yaml` → GPU") == "the-papers-setups-configpaperyaml--gpu"


def test_a_broken_link_and_a_missing_anchor_are_reported(tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs/a.md").write_text("# A page\n\n## Its part\n")
    page = tmp_path / "README.md"
    page.write_text("[ok](docs/a.md#its-part) [gone](docs/b.md) [no heading](docs/a.md#nowhere) [self](#a)\n")
    got = broken(page)
    assert [g.split(":")[0] for g in got] == ["docs/b.md", "docs/a.md#nowhere", "#a"]



def test_the_readmes_own_pair_is_the_shipped_config_and_plans_as_it_says():
    """The README's YAML lines are config/own-pair.yaml's, and the run count it states is the plan's."""
    import textwrap

    import yaml

    from atlib.plan import build_plan

    section = (ROOT / "README.md").read_text().split("## Your own pairs and methods", 1)[1].split("\n## ", 1)[0]
    snippet = yaml.safe_load(textwrap.dedent(re.search(r"```yaml\n(.*?)```", section, re.S).group(1)))
    config = yaml.safe_load((ROOT / "config/own-pair.yaml").read_text())
    table = next(iter(config["tables"].values()))
    assert snippet == {key: table[key] for key in snippet} and set(snippet) == {"columns", "rows"}
    runs = int(re.search(r"lists its (\d+) runs", section).group(1))
    assert runs == len(build_plan(config).runs)
