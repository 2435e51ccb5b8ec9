"""The documentation holds together: every relative link reaches a file, every `#anchor` a
heading of its target (GitHub's slugs), and the README stays a front page."""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCS = [
    ROOT / "README.md",
    ROOT / "CONTRIBUTING.md",
    ROOT / "CHANGELOG.md",
    *sorted(ROOT.glob("docs/*.md")),
]
README_LIMIT = 12_000
_FENCE = re.compile(r"^(```|~~~).*?^\1[ \t]*$", re.S | re.M)
_INLINE_CODE = re.compile(r"`[^`\n]*`")
_LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_HEADING = re.compile(r"^#{1,6}[ \t]+(.+?)[ \t#]*$", re.M)


def _prose(text: str) -> str:
    """The text without code blocks and inline code, where links and headings are not."""
    return _INLINE_CODE.sub("", _FENCE.sub("", text))


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: its text, lowercased, without punctuation other than
    '-' and '_', spaces turned into '-'."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link's text only
    text = re.sub(r"<[^>]+>", "", text).strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


@cache
def anchors(doc: Path) -> frozenset[str]:
    """Every heading's anchor in a document (a repeated heading gets -1, -2, ...)."""
    seen: dict[str, int] = {}
    found = set()
    for heading in _HEADING.findall(_FENCE.sub("", doc.read_text())):
        base = slug(heading)
        count = seen.get(base, 0)
        seen[base] = count + 1
        found.add(base if count == 0 else f"{base}-{count}")
    return frozenset(found)


def _links() -> list[tuple[str, str]]:
    found = []
    for doc in DOCS:
        for target in _LINK.findall(_prose(doc.read_text())):
            if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I):
                continue  # http:, https:, mailto:
            found.append((doc.relative_to(ROOT).as_posix(), target))
    return sorted(set(found))


LINKS = _links()


def test_the_docs_link_to_each_other() -> None:
    assert len(LINKS) > 30
    linked = {
        (ROOT / doc).parent.joinpath(t.split("#")[0]).resolve()
        for doc, t in LINKS
        if doc == "README.md" and t.split("#")[0]
    }
    pages = {d.resolve() for d in DOCS if d.name != "README.md"}
    assert pages <= linked, f"the README links no page {sorted(p.name for p in pages - linked)}"


@pytest.mark.parametrize(("doc", "target"), LINKS)
def test_a_relative_link_resolves(doc: str, target: str) -> None:
    path, _, anchor = target.partition("#")
    source = ROOT / doc
    file = source.parent.joinpath(path).resolve() if path else source
    assert file.exists(), f"{doc}: link {target!r} points at a missing {path}"
    if anchor:
        assert file.suffix == ".md", f"{doc}: link {target!r} has an anchor in a non-document"
        assert anchor in anchors(file), (
            f"{doc}: link {target!r}: {file.relative_to(ROOT)} has no heading #{anchor}"
        )


def test_the_slugs_follow_github() -> None:
    assert slug("The relay") == "the-relay"
    assert slug("On a cluster: what three nodes change in the guarantees") == (
        "on-a-cluster-what-three-nodes-change-in-the-guarantees"
    )
    assert slug("Dead letters: `python -m topology dlq`") == "dead-letters-python--m-topology-dlq"
    assert slug("BusLagAboveScaleOut") == "buslagabovescaleout"
    assert slug("fraud_audit's store") == "fraud_audits-store"


def test_the_readme_is_a_front_page() -> None:
    size = len((ROOT / "README.md").read_text())
    assert size <= README_LIMIT, f"README.md is {size:,} characters; at most {README_LIMIT:,}"


def test_every_test_the_docs_name_exists() -> None:
    """A doc that says which test proves a claim names a test that is there."""
    named = re.compile(r"`(tests/[\w/]+\.py)(?:::(\w+))?`")
    for doc in [ROOT / "docs" / "rabbitmq-versions.md", ROOT / "docs" / "design.md"]:
        for path, name in named.findall(doc.read_text()):
            file = ROOT / path
            assert file.exists(), f"{doc.name} names {path}, which does not exist"
            if name:
                assert f"def {name}(" in file.read_text(), f"{doc.name} names {path}::{name}"
