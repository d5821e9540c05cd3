"""Connecting to Ray (a cluster when one is given or running, else an embedded local one) and
waiting out an actor that Ray is restarting."""

from __future__ import annotations

import os
import signal
import threading
import time
from typing import Callable

import ray


def init_ray(address: str | None = None, num_cpus: int | None = None, dashboard: bool = True, quiet: bool = False):
    """Start or join Ray once per process; returns the dashboard URL when there is one.

    `address=None` joins the cluster a `ray job submit` placed us in (RAY_ADDRESS)
    and otherwise starts a local one, the embedded default.
    """
    if ray.is_initialized():
        return None
    address = address or os.environ.get("RAY_ADDRESS")
    kwargs: dict = {"ignore_reinit_error": True, "log_to_driver": not quiet}
    if address:
        kwargs["address"] = address
    else:
        kwargs["include_dashboard"] = dashboard
        if num_cpus is not None:
            kwargs["num_cpus"] = num_cpus
        # Workers import raylign from the same environment; keep them quiet about it.
        kwargs["runtime_env"] = {"env_vars": {"TOKENIZERS_PARALLELISM": "false", "PYTHONWARNINGS": "ignore"}}
    handler = _python_sigterm_handler()
    context = ray.init(**kwargs)
    if handler is not None:  # Ray's core installs a C handler that aborts; keep the program's own
        signal.signal(signal.SIGTERM, handler)
    url = getattr(context, "dashboard_url", None)
    if url and not quiet:
        print(f"[raylign] Ray dashboard: http://{url}", flush=True)
    return url


def _python_sigterm_handler():
    """The SIGTERM handler the program installed in Python (the CLI's: unwind like Ctrl-C)."""
    if threading.current_thread() is not threading.main_thread():
        return None
    handler = signal.getsignal(signal.SIGTERM)
    return handler if callable(handler) else None


# a call to an actor that died (and that Ray may be restarting)
ACTOR_LOST = (ray.exceptions.RayActorError, ray.exceptions.ActorUnavailableError)


class RoleFailedError(RuntimeError):
    """An actor role (sampler-N, reward, reference) could not finish its work."""


def when_alive(call: Callable, role: str, timeout_s: float = 300.0, poll_s: float = 1.0):
    """`ray.get(call())`, re-submitted while the actor is down and being restarted (an
    idempotent call only: a version query, a weight load, a pure scoring call)."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return ray.get(call())
        except ACTOR_LOST as err:
            if time.monotonic() > deadline:
                raise RoleFailedError(f"{role} is down and did not come back within {timeout_s:.0f} s "
                                      f"({type(err).__name__}); raise its max_restarts or check its logs") from None
            time.sleep(poll_s)
