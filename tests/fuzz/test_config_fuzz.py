"""Property-based tests of the config loader: whatever a file holds, loading it gives a Config
or one short ConfigError (naming a key path or a line), never another exception.

The documents are drawn from the real schema, found by introspecting the Config dataclasses,
so keys added to them are fuzzed without touching this file.  Budget: the profile in
tests/fuzz/conftest.py."""

from __future__ import annotations

import dataclasses
import re
import string
import types
import typing
from pathlib import Path
from typing import Any, Union

import pytest
import yaml
from hypothesis import event, given
from hypothesis import strategies as st

from streamwatch import config
from streamwatch.config import Config
from streamwatch.errors import ConfigError
from streamwatch.scoring import Scorer

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = (ROOT / "deploy/streamwatch.example.yaml").read_text()
MAX_MESSAGE = 300  # characters, beside the file's name


def _unwrap(tp: Any) -> Any:
    """X from ``X | None``."""
    if typing.get_origin(tp) in (Union, types.UnionType):
        return next(a for a in typing.get_args(tp) if a is not type(None))
    return tp


TOP = typing.get_type_hints(Config)  # the sections, and any plain top-level key
SECTIONS = {n: _unwrap(tp) for n, tp in TOP.items() if dataclasses.is_dataclass(_unwrap(tp))}
FIELDS = {name: dataclasses.fields(cls) for name, cls in SECTIONS.items()}
HINTS = {name: typing.get_type_hints(cls) for name, cls in SECTIONS.items()}


def _paths(path: str, cls: Any) -> set[str]:
    """The key paths of ``cls``'s fields under ``path``, and of the sections they hold."""
    out = set()
    for f in dataclasses.fields(cls):
        key = f"{path}.{f.name}"
        out.add(key)
        inner = _unwrap(typing.get_type_hints(cls)[f.name])
        if dataclasses.is_dataclass(inner):
            out |= _paths(key, inner)
    return out


# every key streamwatch knows: a check may name one the document leaves at its default
SCHEMA_PATHS = set(TOP).union(*(_paths(name, cls) for name, cls in SECTIONS.items()))
# words the validators look for, so that some drawn documents get past them
WORDS = [
    *config.SECURITY_PROTOCOLS,
    *config.SASL_MECHANISMS,
    *("earliest", "latest", "kafka", "file", "-", "text", "json", "DEBUG", "warning"),
    *("skip", "accept", "reset", "carry", "k:9092", "in", "KAFKA_PW"),
    *("http://127.0.0.1:9090/api/v1/write", "pump-*"),
]
SETTING_NAMES = [
    *sorted(config.CONSUMER_RESERVED | config.PRODUCER_RESERVED),
    *("fetch_max_bytes", "max_request_size", "linger_ms"),
]


def _in_document(node: Any, path: str) -> bool:
    """Whether the key path ``path`` (a.b[2].c) leads to something in ``node``, its keys named
    as the loader names them (a plain name as it is, others quoted and cut short)."""
    if path == "":
        return True
    if isinstance(node, dict):
        for key, value in node.items():
            label = config._label(key)
            if path == label:
                return True
            rest = path[len(label) :]
            if (
                path.startswith(label)
                and rest[0] in ".["
                and _in_document(value, rest.removeprefix("."))
            ):
                return True
        return False
    index = re.match(r"\[(\d+)\]", path)
    if isinstance(node, list) and index and int(index[1]) < len(node):
        return _in_document(node[int(index[1])], path[index.end() :].removeprefix("."))
    return False


def _names_a_key(data: Any, path: str) -> bool:
    return path in SCHEMA_PATHS or _in_document(data, path)


def _check_message(err: ConfigError, path: Path) -> None:
    message = str(err).removeprefix(f"{path}: ")
    assert "\n" not in message and "\r" not in message, message
    assert len(message) <= MAX_MESSAGE, message


# -- strategies --------------------------------------------------------------------------------

texts = st.text(max_size=20) | st.sampled_from(["", "é", "日本", "a\nb", "yes", "null", "0x10"])
numbers = (
    st.integers(-(10**6), 10**6)
    | st.sampled_from([0, -1, 2**63 - 1, 2**63, -(2**63) - 1, 10**40, 10**120])
    | st.floats()  # nan and the infinities included
)
scalars = (
    st.none()
    | st.booleans()
    | numbers
    | texts
    | st.sampled_from(WORDS)
    | st.binary(max_size=8)
    | st.dates()
)
anything = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(texts, inner, max_size=4),
    max_leaves=12,
)


def _typed(tp: Any) -> st.SearchStrategy[Any]:
    """Values of the annotation ``tp``, as YAML would hold them."""
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        return st.none() | _typed(_unwrap(tp))
    if origin is tuple:
        item = _typed(typing.get_args(tp)[0])
        return st.lists(item, max_size=3) | item  # a single str may stand for a list of one
    if origin is dict:
        return st.dictionaries(st.sampled_from(SETTING_NAMES) | texts, scalars, max_size=3)
    if tp is bool:
        return st.booleans()
    if tp is int:
        return st.integers(-2, 10**6) | st.sampled_from([2**63 - 1, 2**63])
    if tp is float:
        return st.floats() | st.integers(-2, 10**6)
    if tp is str:
        return st.sampled_from(WORDS) | texts
    if dataclasses.is_dataclass(tp):  # a section within a section (outputs.remote_write)
        hints = typing.get_type_hints(tp)
        return st.fixed_dictionaries(
            {}, optional={f.name: _typed(hints[f.name]) for f in dataclasses.fields(tp)}
        )
    return anything  # a type this file does not know yet still gets fuzzed


def _misspelt(key: str) -> st.SearchStrategy[Any]:
    letters = st.sampled_from(string.ascii_lowercase + "_")
    i = st.integers(0, len(key) - 1)
    return st.one_of(
        i.map(lambda n: key[:n] + key[n + 1 :]),  # a letter dropped
        st.tuples(i, letters).map(lambda t: key[: t[0]] + t[1] + key[t[0] :]),  # one added
        st.just(key.upper()),
        st.integers(-3, 3) | st.booleans() | st.none(),  # yes:, 1:, ~: as keys
    )


def _default(f: dataclasses.Field[Any]) -> Any:
    value = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
    return list(value) if isinstance(value, tuple) else value


# right values for the keys without a default, so that noiseless documents are valid configs
REQUIRED = {"kafka.bootstrap_servers": "k:9092", "kafka.input_topics": ["in"]}


@st.composite
def sections(draw: st.DrawFn, name: str, noise: int) -> Any:
    """Section ``name`` with about ``noise`` per cent of its keys given a drawn value (of the
    right type or not) or misspelt; the others left out or at their defaults."""
    if draw(st.integers(0, 99)) < noise // 3:
        return draw(anything)  # the whole section of the wrong type
    out: dict[Any, Any] = {}
    for f in FIELDS[name]:
        required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        key: Any = f.name
        if draw(st.integers(0, 99)) < noise:
            value = draw(_typed(HINTS[name][f.name]) | anything)
            if draw(st.integers(0, 9)) == 0:
                key = draw(_misspelt(f.name))
        elif required:
            value = REQUIRED.get(f"{name}.{f.name}", draw(_typed(HINTS[name][f.name])))
        elif draw(st.booleans()):
            continue  # left at its default
        else:
            value = _default(f)  # a right value, written out
        out[key] = value
    return out


@st.composite
def documents(draw: st.DrawFn) -> dict[Any, Any]:
    noise = draw(st.sampled_from([0, 3, 10, 30]))  # per cent; 0 gives valid configs
    doc: dict[Any, Any] = {}
    for name, tp in TOP.items():
        if name in SECTIONS and (draw(st.booleans()) or name == "kafka"):
            doc[name] = draw(sections(name, noise))
        elif draw(st.integers(0, 99)) < noise:
            doc[name] = draw(_typed(tp))
    if draw(st.integers(0, 4)) == 0:  # the other way to a valid config: no kafka, file input
        doc.pop("kafka", None)
        if not isinstance(doc.get("input"), dict):
            doc["input"] = {}
        doc["input"]["source"] = "file"
    if draw(st.integers(0, 99)) < noise // 3:
        doc[draw(st.sampled_from(list(TOP)).flatmap(_misspelt))] = draw(anything)
    return doc


def _dump(doc: Any, flow: bool | None = False, allow_unicode: bool = False) -> str:
    return yaml.safe_dump(
        doc, sort_keys=False, default_flow_style=flow, allow_unicode=allow_unicode, width=10**6
    )


def _mutated(text: str) -> st.SearchStrategy[str]:
    """``text`` with a few slices dropped, doubled or replaced by YAML's punctuation."""
    edit = st.tuples(
        st.integers(0, len(text)),
        st.integers(0, 40),
        st.sampled_from(["", "&a ", "*a", "[", "]", "{", "}", ": ", "- ", "\n", "\t", "? ", "!!"])
        | st.text(max_size=5),
    )

    def apply(edits: list[tuple[int, int, str]]) -> str:
        out = text
        for at, length, new in edits:
            out = out[:at] + new + out[at + length :]
        return out

    return st.lists(edit, min_size=1, max_size=4).map(apply)


# -- properties --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cfg_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fuzz") / "c.yaml"


@given(
    content=st.binary(max_size=200)
    | st.text(max_size=200).map(str.encode)
    | st.text(alphabet="{}[]:,-&*!|>'\"#?%@`~ \n\tab01._", max_size=200).map(str.encode)
    | _mutated(EXAMPLE).map(str.encode)
)
def test_any_file_gives_a_config_or_one_short_config_error(cfg_file: Path, content: bytes) -> None:
    cfg_file.write_bytes(content)
    try:
        config.load(cfg_file)
    except ConfigError as err:
        _check_message(err, cfg_file)


@given(doc=documents(), flow=st.sampled_from([False, True, None]), uni=st.booleans())
def test_schema_documents_give_a_config_or_an_error_naming_their_key(
    cfg_file: Path, doc: dict[Any, Any], flow: bool | None, uni: bool
) -> None:
    cfg_file.write_text(_dump(doc, flow, uni), encoding="utf-8")
    try:
        data = config.read_yaml(cfg_file)
    except ConfigError as err:  # e.g. a 121-digit number: refused as it is read
        _check_message(err, cfg_file)
        assert err.path == ""
        return
    try:
        cfg = config.parse(data)
        if cfg.kafka is not None:
            cfg.kafka.client_settings({})  # check-config reads the secrets it names
        event("a Config")  # --hypothesis-show-statistics: how many get through
    except ConfigError as err:
        _check_message(err, cfg_file)
        assert _names_a_key(data, err.path), (err.path, str(err))
        event(f"ConfigError at {err.path.split('.')[0] or 'the top'}")


@given(doc=documents(), shared=st.lists(scalars, max_size=3) | st.dictionaries(texts, scalars))
def test_shared_values_written_as_aliases_are_refused(
    cfg_file: Path, doc: dict[Any, Any], shared: Any
) -> None:
    """yaml.safe_dump writes a value met twice as &id001 ... *id001."""
    section = next((v for v in doc.values() if isinstance(v, dict)), doc)
    section["first"] = shared
    doc["second"] = shared
    text = _dump(doc)
    alias_line = next(n for n, line in enumerate(text.splitlines(), 1) if " *id0" in line)
    cfg_file.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as err:
        config.load(cfg_file)
    _check_message(err.value, cfg_file)
    assert f"line {alias_line}, " in str(err.value)
    assert "YAML aliases (*id0" in str(err.value)


@given(
    doc=documents(),
    name=st.from_regex(r"[A-Za-z0-9_-]{1,80}", fullmatch=True),
    value=scalars,
    where=st.integers(0, 1000),
)
def test_aliases_anywhere_are_refused(
    cfg_file: Path, doc: dict[Any, Any], name: str, value: Any, where: int
) -> None:
    """An anchored scalar first, and an alias to it between two top-level keys."""
    anchor = _dump({"anchored": value}, flow=True).strip()[1:-1].replace(": ", f": &{name} ", 1)
    keys = [_dump({k: v}) for k, v in doc.items()]  # one block mapping each: they concatenate
    at = where % (len(keys) + 1)
    head = anchor + "\n" + "".join(keys[:at])
    cfg_file.write_text(f"{head}aliased: *{name}\n" + "".join(keys[at:]), encoding="utf-8")
    with pytest.raises(ConfigError) as err:
        config.load(cfg_file)
    _check_message(err.value, cfg_file)
    shown = name if len(name) <= 40 else name[:37] + "..."
    line = head.count("\n") + 1
    assert f"line {line}, column 10: YAML aliases (*{shown})" in str(err.value)


def test_the_schema_at_its_defaults_loads_back(cfg_file: Path) -> None:
    """Every section and key this suite fuzzes, written out at its default, is a valid config:
    the introspection finds the real schema (and a new key's default passes its own check)."""
    doc = {name: {f.name: _default(f) for f in fields} for name, fields in FIELDS.items()}
    doc["kafka"].update(bootstrap_servers="k:9092", input_topics=["in"])
    cfg_file.write_text(_dump(doc))
    cfg = config.load(cfg_file)
    assert cfg.kafka is not None and cfg.kafka.input_topics == ("in",)
    assert cfg.scoring == Scorer()
    assert len(SCHEMA_PATHS) > 50
