"""The documentation agrees with the code: the generated configuration reference is current,
every relative link (and #anchor) resolves, and every config key and metric named exists."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path
from types import ModuleType

from prometheus_client import CollectorRegistry

from streamwatch import config
from streamwatch.metrics import Metrics
from streamwatch.sinks import remote_write

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
PAGES = [ROOT / "README.md", *sorted(DOCS.glob("*.md")), *sorted(DOCS.glob("notes/*.md"))]
FENCE = re.compile(r"^```.*?^```", re.M | re.S)
CODE_SPAN = re.compile(r"`[^`\n]*`")
FILE_SUFFIXES = {"py", "json", "onnx", "md", "yaml", "yml", "txt", "npz"}
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def _generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "gen_config_reference", DOCS / "gen_config_reference.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _anchors(markdown: str) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to hyphens (as in
    test_monitoring.py), for headings outside code blocks."""
    out = set()
    for heading in re.findall(r"^#+\s+(.+?)\s*$", FENCE.sub("", markdown), re.M):
        text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link's text only
        out.add(re.sub(r"[^\w\- ]", "", text.lower()).replace(" ", "-"))
    return out


def _prose(markdown: str) -> str:
    return FENCE.sub("", markdown)


def test_configuration_reference_is_generated_from_the_code() -> None:
    gen = _generator()
    committed = (DOCS / "configuration.md").read_text()
    fresh = gen.render()
    if committed == fresh:
        return
    have = {
        m.group(1): line
        for line in committed.splitlines()
        if (m := re.match(r"\| `([^`]+)` \|", line))
    }
    want = gen.rows()
    for key, row in want.items():
        assert key in have, f"{key}: in streamwatch/config.py, not in docs/configuration.md"
        assert have[key] == row, f"{key}: docs/configuration.md says\n{have[key]}\nthe code\n{row}"
    for key in have:
        assert key in want, f"{key}: in docs/configuration.md, no longer in the code"
    raise AssertionError(
        "docs/configuration.md differs from the code outside the key tables: "
        "run .venv/bin/python docs/gen_config_reference.py"
    )


def test_relative_links_point_at_files_and_sections_that_exist() -> None:
    broken = []
    for page in PAGES:
        for target in LINK.findall(CODE_SPAN.sub("", _prose(page.read_text()))):
            if re.match(r"[a-z]+:", target):  # http:, https:, mailto:
                continue
            path, _, anchor = target.partition("#")
            dest = (page.parent / path).resolve() if path else page
            where = f"{page.relative_to(ROOT)}: ({target})"
            if not dest.exists():
                broken.append(f"{where}: no file {dest.relative_to(ROOT)}")
            elif anchor and dest.suffix == ".md" and anchor not in _anchors(dest.read_text()):
                broken.append(f"{where}: no section #{anchor} in {dest.relative_to(ROOT)}")
    assert broken == []


def test_config_keys_named_in_the_docs_exist() -> None:
    keys = set(_generator().rows())
    sections = {k.split(".", 1)[0] for k in keys}
    named = re.compile(r"`((?:" + "|".join(sorted(sections)) + r")(?:\.[a-z_]+)+)")
    keys |= set(config.RENAMED) | {"scoring.threshhold"}  # old keys; a misspelling on purpose
    unknown = []
    for page in PAGES:
        for key in named.findall(page.read_text()):
            if key.rsplit(".", 1)[-1] in FILE_SUFFIXES:  # model.json, state.py: files
                continue
            top = ".".join(key.split(".")[:2])
            if top in ("kafka.consumer", "kafka.producer"):  # kafka-python's own settings
                continue
            if key not in keys and top not in keys:
                unknown.append(f"{page.relative_to(ROOT)}: {key}")
    assert unknown == []


def _metric_names() -> set[str]:
    registry = CollectorRegistry()
    Metrics(registry, memory_limit=lambda: None)
    out = set(remote_write.SERIES)  # sent by remote write, not exported on /metrics
    for family in registry.collect():
        name = family.name
        out.add(name)
        out |= {f"{name}{s}" for s in ("_total", "_info", "_bucket", "_sum", "_count")}
    return out


def test_metrics_named_in_the_docs_exist() -> None:
    names = _metric_names()
    unknown = []
    for page in PAGES:
        for name in re.findall(r"\bstreamwatch_[a-z_]+[a-z]", page.read_text()):
            if name not in names:
                unknown.append(f"{page.relative_to(ROOT)}: {name}")
    assert unknown == []
