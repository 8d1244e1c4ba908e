from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from streamwatch.config import MAX_CONFIG_BYTES, load, parse
from streamwatch.errors import ConfigError

BASE = {"kafka": {"bootstrap_servers": "k:9092", "input_topics": ["in"]}}


def test_defaults_are_filled_in() -> None:
    cfg = parse(BASE)
    assert cfg.kafka.input_topics == ("in",)
    assert cfg.outputs.anomalies_topic == "anomalies"
    assert cfg.state.idle_ttl_seconds == 86400.0
    assert cfg.scoring.novelty == 0.13
    assert parse({**BASE, "scoring": {"novelty": None}}).scoring.novelty is None
    assert cfg.scoring.envelope is None  # off unless asked for
    assert parse({**BASE, "scoring": {"envelope": 0.05}}).scoring.envelope == 0.05


@pytest.mark.parametrize(
    ("data", "path"),
    [
        ({}, "kafka"),
        ({"kafka": {"input_topics": ["in"]}}, "kafka.bootstrap_servers"),
        ({**BASE, "extra": 1}, "extra"),
        ({**BASE, "model": {"threads": "two"}}, "model.threads"),
        ({**BASE, "model": {"threads": 0}}, "model.threads"),
        ({**BASE, "scoring": {"threshold": True}}, "scoring.threshold"),
        ({**BASE, "scoring": {"novelty": -1}}, "scoring.novelty"),
        ({**BASE, "scoring": {"envelope": -0.1}}, "scoring.envelope"),
        ({**BASE, "metrics": {"port": 70000}}, "metrics.port"),
        ({**BASE, "logging": {"format": "xml"}}, "logging.format"),
        ({"kafka": {"bootstrap_servers": "k", "input_topics": [1]}}, "kafka.input_topics[0]"),
        ({"kafka": {"bootstrap_servers": "k", "input_topics": []}}, "kafka.input_topics"),
        ({**BASE, "state": []}, "state"),
        ({**BASE, "state": {"changelog_topic": "cl"}}, "state.changelog_topic"),
        (
            {**BASE, "state": {"checkpoint_dir": "/tmp", "changelog_topic": "a b"}},
            "state.changelog_topic",
        ),
        (
            {**BASE, "state": {"checkpoint_dir": "/tmp", "changelog_topic": "anomalies"}},
            "state.changelog_topic",
        ),
    ],
)
def test_errors_name_the_key_path(data: dict, path: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse(data)
    assert err.value.path == path
    assert str(err.value).startswith(path)


def test_load_reports_bad_yaml(tmp_path: Path) -> None:
    p = tmp_path / "c.yaml"
    p.write_text("kafka: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load(p)


def _check_config(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "streamwatch", "check-config", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_check_config_exits_78_naming_the_key(tmp_path: Path) -> None:
    p = tmp_path / "c.yaml"
    p.write_text(
        "kafka:\n  bootstrap_servers: k:9092\n  input_topics: [in]\nscoring:\n  threshhold: 3\n"
    )
    proc = _check_config(p)
    assert proc.returncode == 78
    assert "scoring.threshhold: unknown key" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_run_with_bad_config_exits_78(tmp_path: Path) -> None:
    p = tmp_path / "c.yaml"
    p.write_text(
        "kafka:\n  bootstrap_servers: k:9092\n  input_topics: [in]\nmodel:\n  max_rows: -1\n"
    )
    proc = subprocess.run(
        [sys.executable, "-m", "streamwatch", "run", "--config", str(p)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 78
    assert "model.max_rows: must be > 0" in proc.stderr


def _kafka(**extra: object) -> dict:
    return {"kafka": {"bootstrap_servers": "a:1,b:2", "input_topics": ["in"], **extra}}


def test_sasl_ssl_settings_with_secrets_from_the_environment() -> None:
    cfg = parse(
        _kafka(
            security_protocol="SASL_SSL",
            sasl_mechanism="SCRAM-SHA-512",
            sasl_username="svc",
            sasl_password_env="KAFKA_PW",
            ssl_cafile="/etc/ca.pem",
        )
    )
    assert cfg.kafka is not None
    settings = cfg.kafka.client_settings({"KAFKA_PW": "s3cret"})
    assert settings["bootstrap_servers"] == ["a:1", "b:2"]
    assert settings["sasl_plain_password"] == "s3cret"
    assert settings["sasl_mechanism"] == "SCRAM-SHA-512" and settings["ssl_cafile"] == "/etc/ca.pem"
    assert "s3cret" not in repr(cfg)  # the config holds the variable's name, not the secret
    with pytest.raises(ConfigError) as err:
        cfg.kafka.client_settings({})
    assert err.value.path == "kafka.sasl_password_env"


@pytest.mark.parametrize(
    ("extra", "path"),
    [
        ({"security_protocol": "TLS"}, "kafka.security_protocol"),
        ({"security_protocol": "SASL_PLAINTEXT"}, "kafka.sasl_mechanism"),
        ({"security_protocol": "SASL_PLAINTEXT", "sasl_mechanism": "PLAIN"}, "kafka.sasl_username"),
        ({"consumer": {"enable_auto_commit": True}}, "kafka.consumer.enable_auto_commit"),
        ({"producer": {"acks": 1}}, "kafka.producer.acks"),
        ({"consumer": [1]}, "kafka.consumer"),
    ],
)
def test_security_and_tuning_errors_name_the_key(extra: dict, path: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse(_kafka(**extra))
    assert err.value.path == path


def test_check_config_knows_kafka_python_settings(tmp_path: Path) -> None:
    p = tmp_path / "c.yaml"
    p.write_text(
        "kafka:\n  bootstrap_servers: k:9092\n  input_topics: [in]\n  consumer:\n"
        "    fetch_max_bytes: 1048576\n    fetch_max_byts: 1\n"
    )
    proc = _check_config(p)
    assert proc.returncode == 78
    assert "kafka.consumer.fetch_max_byts: not a kafka-python setting" in proc.stderr


def test_file_source_needs_no_kafka_section_but_kafka_does() -> None:
    assert parse({"input": {"source": "file"}}).kafka is None
    with pytest.raises(ConfigError) as err:
        parse({"input": {"source": "kafka"}})
    assert err.value.path == "kafka"


# -- hostile and broken YAML -------------------------------------------------------------------
# A bad file must give one short line naming the key or the line, fast, whatever it holds.


def _refused(p: Path) -> ConfigError:
    with pytest.raises(ConfigError) as err:
        load(p)
    message = str(err.value)
    assert "\n" not in message and len(message) < 300, message
    return err.value


def _alias_bomb() -> str:
    """Nine levels of nine-fold aliases under scoring.threshold: 9**9 strings once expanded,
    3 GB and 38 s when the old loader put the value into its error message."""
    lines = [
        'kafka: {bootstrap_servers: "k:9092", input_topics: [in]}',
        "scoring:",
        "  threshold:",
        "    - &a [" + ", ".join(["lol"] * 9) + "]",
    ]
    for prev, name in zip("abcdefgh", "bcdefghi", strict=True):
        lines.append(f"    - &{name} [" + ", ".join([f"*{prev}"] * 9) + "]")
    return "\n".join(lines) + "\n"


def test_alias_bomb_is_refused_at_its_first_alias(tmp_path: Path) -> None:
    p = tmp_path / "bomb.yaml"
    p.write_text(_alias_bomb())
    start = time.perf_counter()
    err = _refused(p)
    assert time.perf_counter() - start < 2.0
    assert str(err) == (
        f"{p}: line 5, column 11: YAML aliases (*a) are not supported in a streamwatch config; "
        "write the value out"
    )
    assert "lol" not in str(err)


def test_check_config_refuses_the_alias_bomb_in_one_line(tmp_path: Path) -> None:
    p = tmp_path / "bomb.yaml"
    p.write_text(_alias_bomb())
    proc = _check_config(p)
    assert proc.returncode == 78
    assert proc.stderr.startswith(f"streamwatch: bad config {p}: ")
    assert "YAML aliases" in proc.stderr and "line 5" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_scalar_aliases_are_refused_and_anchors_alone_allowed(tmp_path: Path) -> None:
    p = tmp_path / "c.yaml"
    head = "kafka: {bootstrap_servers: k, input_topics: [in]}\nscoring:\n  threshold: &t 0.4\n"
    p.write_text(head)
    assert load(p).scoring.threshold == 0.4  # an anchor copies nothing
    p.write_text(head + "  short_alpha: *t\n")
    assert "line 4, column 16: YAML aliases (*t)" in str(_refused(p))
    p.write_text(head + "  <<: *t\n")  # the merge key is an alias too
    assert "YAML aliases (*t)" in str(_refused(p))


@pytest.mark.parametrize("size", [MAX_CONFIG_BYTES + 1, 10 * 2**30])
def test_oversized_file_is_refused_unread(tmp_path: Path, size: int) -> None:
    p = tmp_path / "big.yaml"
    with p.open("wb") as f:
        f.truncate(size)  # sparse: a 10 GiB file costs nothing here, nor to refuse
    start = time.perf_counter()
    err = _refused(p)
    assert time.perf_counter() - start < 2.0
    assert str(err) == f"{p}: a config may be at most {MAX_CONFIG_BYTES} bytes (1 MiB); " + (
        f"this one is {size} bytes"
    )


@pytest.mark.parametrize(
    "text",
    [
        "[" * 100_000,
        "{a: " * 100_000,
        "- " * 100_000 + "x",  # block sequences, all on one line
        "".join(" " * i + f"k{i}:\n" for i in range(200)),  # block mappings
        "x: [" + ", ".join(["1"] * 50_000) + "]",  # many values, each cheap
    ],
    ids=["brackets", "flow-mappings", "block-sequences", "block-mappings", "wide-list"],
)
def test_deep_or_huge_documents_are_refused_fast(tmp_path: Path, text: str) -> None:
    p = tmp_path / "c.yaml"
    p.write_text(text)
    start = time.perf_counter()
    err = _refused(p)
    assert time.perf_counter() - start < 2.0
    assert re.search(r"line \d+, column \d+: (nested more than|more than \d+ values)", str(err))


def test_non_utf8_bytes_are_refused_with_their_line(tmp_path: Path) -> None:
    p = tmp_path / "c.yaml"
    p.write_bytes(b"kafka:\n  bootstrap_servers: k\xe9\xff:9092\n")
    assert str(_refused(p)) == f"{p}: line 2: not UTF-8 text (byte 0xe9)"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("kafka: [unclosed\n", "line 2, column 1: not valid YAML: expected ',' or ']'"),
        ("a:\n\tb: 1\n", "line 2, column 1: not valid YAML: found character '\\t'"),
        ('a: "x"\n\x00\n', "line 2: not valid YAML: character #x0000 is not allowed"),
        ("a: 1\n---\nb: 2\n", "line 2, column 1: not valid YAML: but found another document"),
        ("a: 2020-13-01\n", "line 1, column 4: cannot read '2020-13-01' as timestamp (month"),
        ("a: !!bool maybe\n", "line 1, column 4: cannot read 'maybe' as bool"),
        ("a: !!python/object:os.system x\n", "line 1, column 4: not valid YAML: could not"),
        ("a: 1" + ":0" * 2000 + "\n", "line 1, column 4: int of 4001 characters; too long"),
        ("? [a, b]\n: 1\n", "line 1, column 3: not valid YAML: found unhashable key"),
    ],
)
def test_yaml_errors_are_one_line_naming_the_line(tmp_path: Path, text: str, expected: str) -> None:
    p = tmp_path / "c.yaml"
    p.write_text(text)
    assert str(_refused(p)).startswith(f"{p}: {expected}")


def test_a_huge_value_of_the_wrong_type_is_shown_cut_short() -> None:
    huge = [list(range(1000))] * 1000  # a million numbers, shown as a few
    with pytest.raises(ConfigError) as err:
        parse({**BASE, "scoring": {"threshold": huge}})
    assert str(err.value) == (
        "scoring.threshold: expected float, got list "
        "[[0, 1, 2, 3, ...], [0, 1, 2, 3, ...], [0, 1, 2, 3, ...],..."
    )


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("long_window", "x" * 10**6, f"expected int, got str '{'x' * 27}...{'x' * 28}'"),
        ("threshold", 10**5000, "out of range: <16610-bit int>"),  # too long for str() itself
        ("long_window", 2**63, "out of range: 9223372036854775808"),
        ("short_alpha", float("nan"), "expected a number, got nan"),  # passes any "> 0" check
    ],
    ids=["long-string", "huge-int", "int64-overflow", "nan"],  # str(10**5000) fails
)
def test_wrong_values_give_short_messages(key: str, value: object, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse({**BASE, "scoring": {key: value}})
    assert str(err.value) == f"scoring.{key}: {message}"


@pytest.mark.parametrize(
    ("text", "path", "message"),
    [
        ("scoring: {yes: 1}", "scoring.True", "not a boolean; quote it (YAML reads unquoted yes"),
        ("1: x", "1", "a key must be a string, not an integer; quote it"),
        ("~: x", "None", "a key must be a string, not null; quote it"),
        ("scoring: {1.5: x}", "scoring.1.5", "a key must be a string, not a number"),
        (
            "kafka: {bootstrap_servers: k, input_topics: [i], consumer: {off: 1}}",
            "kafka.consumer.False",
            "not a boolean",
        ),
        ("model: {2020-01-01: x}", "model.datetime.date(2020, 1, 1)", "not date; quote it"),
    ],
)
def test_keys_that_are_not_strings_are_named(
    tmp_path: Path, text: str, path: str, message: str
) -> None:
    p = tmp_path / "c.yaml"
    p.write_text("input: {source: file}\n" + text + "\n")
    err = _refused(p)
    assert err.path == path
    assert message in str(err)


def test_odd_keys_are_quoted_in_the_path() -> None:
    for key, path in [("a.b", "scoring.'a.b'"), ("x\ny", "scoring.'x\\ny'"), ("k" * 999, None)]:
        with pytest.raises(ConfigError) as err:
            parse({**BASE, "scoring": {key: 1}})
        assert err.value.path == (path or f"scoring.'{'k' * 27}...{'k' * 28}'")
        assert "\n" not in str(err.value) and len(str(err.value)) < 100
    with pytest.raises(ConfigError) as err:
        parse({**BASE, ("a", "b"): 1})  # a complex key, as from ? [a, b] in YAML
    assert err.value.path == "('a', 'b')"


def test_an_odd_kafka_python_key_is_named_short_and_on_one_line() -> None:
    from streamwatch.sources.kafka import check_extra_settings

    cfg = parse(_kafka(consumer={"x" * 5000 + "\n": 1}))
    with pytest.raises(ConfigError) as err:
        check_extra_settings(cfg.kafka)  # type: ignore[arg-type]
    message = str(err.value)
    assert message.startswith("kafka.consumer.'xxx") and message.endswith(
        "not a kafka-python setting"
    )
    assert len(message) < 200 and "\n" not in message


def test_core_settings_name_their_key_without_the_loader_parsing_text() -> None:
    """The scorer is the scoring section itself (one source for its defaults), and a core
    object's refusal carries its key: the loader places it under the section's path."""
    import dataclasses

    from streamwatch.errors import InvalidSetting
    from streamwatch.normalize import Normalizer
    from streamwatch.scoring import Scorer

    assert parse(BASE).scoring == Scorer()
    assert {f.name for f in dataclasses.fields(Scorer)} >= {"threshold", "warmup", "novelty"}
    with pytest.raises(InvalidSetting) as caught:
        Normalizer(target_clip=0.0)
    assert (caught.value.key, caught.value.message) == ("normalization.target_clip", "must be > 0")
    assert isinstance(caught.value, ValueError)  # callers outside the config still catch it
    with pytest.raises(ConfigError) as err:
        parse({**BASE, "scoring": {"long_window": 1}})
    assert err.value.path == "scoring.long_window"
    assert str(err.value) == "scoring.long_window: must be >= 2"
