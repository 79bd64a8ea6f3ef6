"""distkeras.core.cache_dirs: the on-by-default switches and the cache folders' rule."""

from __future__ import annotations

from pathlib import Path

import pytest

from distkeras.core.cache_dirs import cache_folder, switched_on


@pytest.mark.parametrize("value", ["0", "off", "False", " no ", "OFF"])
def test_a_switch_is_off_only_when_the_variable_says_so(value):
    assert switched_on("DK_TEST_SWITCH", {"DK_TEST_SWITCH": value}) is False


@pytest.mark.parametrize("env", [{}, {"DK_TEST_SWITCH": "1"}, {"DK_TEST_SWITCH": "yes"}, {"DK_TEST_SWITCH": "anything"}])
def test_a_switch_is_on_by_default(env):
    assert switched_on("DK_TEST_SWITCH", env) is True


def test_cache_folder_rule(tmp_path):
    env = {"XDG_CACHE_HOME": str(tmp_path)}
    assert cache_folder("DK_TEST_CACHE", "things", env) == tmp_path / "distkeras" / "things"
    assert cache_folder("DK_TEST_CACHE", "things", {**env, "DK_TEST_CACHE": "off"}) is None
    assert cache_folder("DK_TEST_CACHE", "things", {**env, "DK_TEST_CACHE": "/srv/c"}) == Path("/srv/c")
