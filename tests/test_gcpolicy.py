"""`ehrsim serve`'s collector policy keeps its promises: survivors are frozen, reference counting
still frees what is dropped, and a full collection reclaims frozen cycles.

Each check runs in a fresh interpreter: the policy changes process-wide collector state, which the
test worker must not inherit.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run(code: str) -> str:
    script = "import gc, weakref\nfrom simulator import gcpolicy\n" + textwrap.dedent(code)
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_survivors_of_a_collection_are_frozen_and_not_scanned_again() -> None:
    out = run(
        """
        gcpolicy.install()
        kept = [[n] for n in range(50_000)]  # young, tracked, alive
        gc.collect(0)
        print(gc.get_freeze_count() >= 50_000, len(gc.get_objects(0)) + len(gc.get_objects(1)) < 1_000)
        """
    )
    assert out == "True True"


def test_dropping_frozen_data_frees_it_at_once() -> None:
    out = run(
        """
        class Resource(dict):
            pass
        gcpolicy.install()
        stored = Resource(meta={"versionId": "1"})
        gone = weakref.ref(stored)
        gc.collect(0)
        print(gc.get_freeze_count() > 0, gone() is not None)
        del stored  # as a reset or a delete drops it: no cycle, reference counting frees it
        print(gone() is None)
        """
    )
    assert out.splitlines() == ["True True", "True"]


def test_a_cycle_frozen_while_alive_waits_for_the_next_reset() -> None:
    out = run(
        """
        from simulator.sandbox import Sandbox
        from simulator.scenario import load_scenario

        class Node:
            pass
        sandbox = Sandbox(load_scenario("default"), service_factories=[])
        gcpolicy.install()
        a, b = Node(), Node()
        a.other, b.other = b, a
        gone = weakref.ref(a)
        gc.collect(0)  # frozen while alive
        del a, b
        gc.collect()  # a normal full collection does not look at frozen objects
        print(gone() is not None)
        sandbox.reset()
        print(gone() is None, gc.get_freeze_count() > 0, gcpolicy.installed())
        """
    )
    assert out.splitlines() == ["True", "True True True"]


def test_without_the_policy_a_reset_leaves_the_collector_alone() -> None:
    out = run(
        """
        from simulator.sandbox import Sandbox
        from simulator.scenario import load_scenario

        sandbox = Sandbox(load_scenario("default"), service_factories=[])
        sandbox.reset()
        print(gc.get_freeze_count(), gcpolicy.full_collection(), gcpolicy.installed())
        """
    )
    assert out == "0 0 False"
