"""The functions serve runs: name → pool, and the config in force. The one owner of serve's live state.

The relay routes with `registry.pools`; the supervisor builds each worker's spec from `worker_spec`; the
reloader hands over a plan and `apply` carries it out. Nobody else holds a copy of the config, so there
is nothing to keep in step by hand. See docs/architecture.md, "Hot reload".
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from edgecli.config import Config, FunctionConfig
from edgecli.host.env import build_function_env
from edgecli.host.plan import ReloadPlan
from edgecli.host.pool import Pool, make_pool
from edgecli.host.supervisor import Supervisor


class Registry:
    def __init__(
        self, config: Config, host_env: Mapping[str, str], extra_env: Mapping[str, str] | None = None
    ) -> None:
        self.config = config
        self.pools: dict[str, Pool] = {}
        self._host_env = dict(host_env)  # read once: what serve was started with
        self._extra_env = dict(extra_env or {})  # on top of every function's own (see ServeCommand)
        self._supervisor: Supervisor | None = None

    def open(self, supervisor: Supervisor) -> None:
        """A pool per configured function, its workers started by `supervisor`."""
        self._supervisor = supervisor
        for name, function in self.config.functions.items():
            self.pools[name] = self._new_pool(function)

    def worker_spec(self, function: FunctionConfig) -> dict[str, Any]:
        """What the fork server needs to start a worker of `function`, from the config in force."""
        return {
            "function": function.name,
            "entrypoint": str(function.entrypoint),
            "directory": str(function.directory),
            "functions_dir": str(self.config.functions_dir),
            "env": build_function_env(self.config, function, self._host_env).env | self._extra_env,
        }

    def apply(self, plan: ReloadPlan) -> None:
        """Adopt the plan's config, and recycle, create or close the pools it names."""
        config = self.config = plan.config
        pools = self.pools
        for name in plan.removed:
            pools.pop(name).close()  # its workers drain, then leave
        for name in plan.reloaded:
            function = config.functions[name]
            pool = pools.get(name)
            if pool is not None and not plan.new_pools:
                pool.reload(function)
                continue
            # A new pool is in the dict before the old one is retired: requests never see a gap.
            pools[name] = self._new_pool(function)
            if pool is not None:
                pool.close()
        for name in plan.added:
            pools[name] = self._new_pool(config.functions[name])

    def close(self) -> None:
        """No new workers; serve's shutdown drains the ones there are."""
        for pool in self.pools.values():
            pool.close(retire=False)

    def _new_pool(self, function: FunctionConfig) -> Pool:
        assert self._supervisor is not None, "open() first"
        return make_pool(self.config.policy, function, self._supervisor)
