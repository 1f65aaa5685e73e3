"""Every name agent.config served before its tables moved to agent.configtables still comes from it."""

from __future__ import annotations

import importlib

NAMES = ("AgentSettings", "Config", "EndpointConfig", "ListenerOptions", "MetricsConfig", "ProbeCommon", "ProbeConfig",
         "SinkCommon", "SPOOL_MIN_BYTES", "MAX_JSON_DEPTH", "Overflow", "ENV_KEY", "ENV_HOST_ID", "default_config",
         "endpoint", "listener", "load", "parse", "read_document", "repeated_addresses", "split_hostport",
         "_TOP_KEYS")


def test_every_name_is_still_importable_from_agent_config() -> None:
    mod = importlib.import_module("agent.config")
    missing = [n for n in NAMES if not hasattr(mod, n)]
    assert not missing
    assert set(mod.__all__) <= set(dir(mod))
