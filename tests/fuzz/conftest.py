"""Hypothesis profiles shared by the fuzz suites in this directory.

``make test`` runs the bounded ``fuzz`` profile: 200 examples a test, seconds in all.  To hunt
longer (100 times the examples: some 20 minutes for the config suite on 2 cores), pick the
``long`` profile::

    HYPOTHESIS_PROFILE=long .venv/bin/python -m pytest tests/fuzz

A failure prints the smallest example found and a ``@reproduce_failure`` blob to replay it.
Loading a profile sets Hypothesis's defaults for the whole pytest session, but only the tests
in this directory use Hypothesis.
"""

from __future__ import annotations

import os

from hypothesis import settings

# No deadline: file writes and a shared 2-core machine make per-example times too noisy to
# judge, and the loader's own time bounds are checked in tests/unit/test_config.py.
settings.register_profile("fuzz", max_examples=200, deadline=None, print_blob=True)
settings.register_profile("long", max_examples=20_000, deadline=None, print_blob=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "fuzz"))
