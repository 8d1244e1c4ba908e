"""The metrics bundle: process metrics on the daemon's own registry, and the cgroup memory
limit the memory alert compares resident memory with."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from streamwatch.metrics import Metrics, cgroup_memory_limit


@pytest.mark.skipif(sys.platform != "linux", reason="process metrics read /proc")
def test_process_and_platform_metrics_are_on_the_registry() -> None:
    registry = CollectorRegistry()
    Metrics(registry)
    for name in ("process_start_time_seconds", "process_resident_memory_bytes"):
        assert (registry.get_sample_value(name) or 0.0) > 0, name
    assert b"python_info{" in generate_latest(registry)


def test_the_memory_limit_is_exported_where_there_is_one() -> None:
    registry = CollectorRegistry()
    Metrics(registry, memory_limit=lambda: 2 << 30)
    assert registry.get_sample_value("streamwatch_memory_limit_bytes") == float(2 << 30)
    bare = CollectorRegistry()
    Metrics(bare, memory_limit=lambda: None)
    text = generate_latest(bare).decode()
    assert "# TYPE streamwatch_memory_limit_bytes gauge" in text  # described, no sample
    assert bare.get_sample_value("streamwatch_memory_limit_bytes") is None


def _tree(tmp: Path, cgroup: str, files: dict[str, str]) -> tuple[Path, Path]:
    (tmp / "proc/self").mkdir(parents=True)
    (tmp / "proc/self/cgroup").write_text(cgroup)
    for name, text in files.items():
        path = tmp / "cg" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return tmp / "cg", tmp / "proc"


def test_cgroup_v2_the_smallest_limit_up_the_path(tmp_path: Path) -> None:
    root, proc = _tree(
        tmp_path,
        "0::/system.slice/streamwatch.service\n",
        {
            "system.slice/streamwatch.service/memory.max": "2147483648\n",
            "system.slice/memory.max": "1073741824\n",
            "memory.max": "max\n",
        },
    )
    assert cgroup_memory_limit(root, proc) == 1 << 30


def test_cgroup_v2_in_a_container_and_no_limit(tmp_path: Path) -> None:
    # the container sees its own cgroup at the root, under the host's path in /proc
    root, proc = _tree(tmp_path / "a", "0::/kubepods/pod1/c1\n", {"memory.max": "536870912\n"})
    assert cgroup_memory_limit(root, proc) == 512 << 20
    root, proc = _tree(tmp_path / "b", "0::/\n", {"memory.max": "max\n"})
    assert cgroup_memory_limit(root, proc) is None


def test_cgroup_v1(tmp_path: Path) -> None:
    root, proc = _tree(
        tmp_path / "a",
        "4:memory:/docker/abc\n3:cpu,cpuacct:/docker/abc\n",
        {"memory/memory.limit_in_bytes": "268435456\n"},
    )
    assert cgroup_memory_limit(root, proc) == 256 << 20
    root, proc = _tree(
        tmp_path / "b", "4:memory:/\n", {"memory/memory.limit_in_bytes": "9223372036854771712\n"}
    )
    assert cgroup_memory_limit(root, proc) is None
