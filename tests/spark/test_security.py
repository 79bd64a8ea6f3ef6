"""The warning a cluster run gets when Spark does not protect the run secret in the task closure."""

from __future__ import annotations

import warnings

import pytest

from distkeras.spark import security as sec

SAFE = {"spark.authenticate": "true", "spark.network.crypto.enabled": "true"}


@pytest.mark.parametrize("master", ["local", "local[*]", "local[4,2]", "local-cluster[2,1,1024]", "spark://127.0.0.1:7077", "spark://localhost:7077"])
def test_local_and_loopback_masters_never_warn(master):
    assert sec.unprotected_settings(master, {}) == []
    assert sec.security_warning(master, {}) is None


@pytest.mark.parametrize("master", ["spark://10.0.0.5:7077", "yarn", "k8s://https://api.example:6443", "spark://driver.example:7077,127.0.0.1:7077"])
def test_a_cluster_without_authentication_and_encryption_warns_naming_both(master):
    missing = sec.unprotected_settings(master, {})
    assert missing == ["spark.authenticate=true", "spark.network.crypto.enabled=true (or spark.ssl.rpc.enabled=true)"]
    text = sec.security_warning(master, {"spark.authenticate": "false"})
    assert master in text and "spark.authenticate=true" in text and "spark.network.crypto.enabled=true" in text


def test_each_missing_setting_is_named_alone_and_a_protected_cluster_is_quiet():
    assert sec.unprotected_settings("yarn", {"spark.authenticate": "true"}) == ["spark.network.crypto.enabled=true (or spark.ssl.rpc.enabled=true)"]
    assert sec.unprotected_settings("yarn", {"spark.network.crypto.enabled": "TRUE"}) == ["spark.authenticate=true"]
    assert sec.unprotected_settings("yarn", SAFE) == []
    assert sec.unprotected_settings("yarn", {"spark.authenticate": "true", "spark.ssl.rpc.enabled": "true"}) == []


class _Conf:
    def __init__(self, conf):
        self.conf = conf

    def getAll(self):
        return list(self.conf.items())

    def get(self, key, default=None):
        return self.conf.get(key, default)


class _Session:
    def __init__(self, master, conf):
        self.sparkContext = type("SC", (), {"master": master, "getConf": lambda _self: _Conf(conf)})()


def test_the_warning_is_given_once_per_process(monkeypatch):
    monkeypatch.setattr(sec, "_warned", False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert sec.warn_if_cluster_unprotected(_Session("local[2]", {})) is None
        assert sec.warn_if_cluster_unprotected(_Session("yarn", SAFE)) is None
        first = sec.warn_if_cluster_unprotected(_Session("yarn", {}))
        second = sec.warn_if_cluster_unprotected(_Session("yarn", {}))
    assert first and first == second
    assert [type(w.message) for w in caught] == [sec.ClusterSecurityWarning]
    assert sec.warn_if_cluster_unprotected(object()) is None  # no SparkContext (Spark Connect): nothing to read
