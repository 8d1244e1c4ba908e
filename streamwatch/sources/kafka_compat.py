"""The kafka-python versions whose private internals streamwatch patches, named in one place.

The fast record path (kafka_records) and the group-join fix (kafka_join) reach into the
fetcher's and the coordinator's internals, which a minor release may keep by name but change
in meaning.  Each patch installs only on a version in this range and otherwise stands down
(the daemon works, slower or with the join stall back).  pyproject.toml pins kafka-python to
the same range, and a unit test holds the two together: widen both only after the patches'
tests pass on the new version.
"""

from __future__ import annotations

import re

LOWEST = (3, 0, 12)  # the first release these internals were written and tested against
BELOW = (3, 1)  # the first release they are not known to hold for
REQUIREMENT = f">={'.'.join(map(str, LOWEST))},<{'.'.join(map(str, BELOW))}"


def release(version: str) -> tuple[int, ...]:
    """The leading numeric components of a version: a pre- or dev-release counts as its
    release, which is all the range needs.

    >>> release("3.0.12"), release("3.1.0rc1"), release("3.0.13.dev0")
    ((3, 0, 12), (3, 1, 0), (3, 0, 13))
    """
    out: list[int] = []
    for part in version.split(".")[:3]:
        digits = re.match(r"\d+", part)
        if digits is None:
            break
        out.append(int(digits.group()))
        if digits.end() < len(part):  # "0rc1": nothing numeric follows
            break
    return tuple(out)


def known(version: str) -> bool:
    """Whether the patches know kafka-python ``version``'s internals.

    >>> REQUIREMENT
    '>=3.0.12,<3.1'
    >>> [known(v) for v in ("3.0.11", "3.0.12", "3.0.20", "3.1.0", "4.0")]
    [False, True, True, False, False]
    """
    return LOWEST <= release(version) < BELOW
