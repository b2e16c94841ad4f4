"""A circuit breaker per channel, so that a provider that is down is not hammered.

After FEEDBACK_BREAKER_FAILURES sends in a row end in provider trouble (a 5xx or 429, a refused
connection, a timeout), the circuit opens: for FEEDBACK_BREAKER_RESET_SECONDS nothing is handed to
that provider, and the dispatcher claims nothing for its medium (claimed rows go back to the queue
untouched: nothing left us). Then one trial send is let through (half open); its success closes
the circuit, its failure opens it again. Refusals of one address are the patient's, not the
provider's trouble, and count as the provider answering. The state is per worker process.
"""
from __future__ import annotations

import threading
from weakref import WeakKeyDictionary

from circuitbreaker import STATE_HALF_OPEN, CircuitBreaker
from flask import current_app

from .base import Channel, SendError, UncertainSendError

_breakers: WeakKeyDictionary = WeakKeyDictionary()
_lock = threading.Lock()


def provider_trouble(exc_type, exc) -> bool:
    return issubclass(exc_type, UncertainSendError) or (issubclass(exc_type, SendError) and exc.transient)


def breaker_for(channel: Channel) -> CircuitBreaker:
    """The channel's breaker, made on first use from the app's settings."""
    with _lock:
        breaker = _breakers.get(channel)
        if breaker is None:
            config = current_app.config
            breaker = _breakers[channel] = CircuitBreaker(
                failure_threshold=config["FEEDBACK_BREAKER_FAILURES"],
                recovery_timeout=config["FEEDBACK_BREAKER_RESET_SECONDS"],
                expected_exception=provider_trouble, name=f"{channel.name} provider")
        return breaker


def sends_allowed(breaker: CircuitBreaker, concurrency: int) -> int:
    """How many sends may be in flight: none while open, one trial while half open."""
    if breaker.opened:
        return 0
    return 1 if breaker.state == STATE_HALF_OPEN else concurrency


def reset_breakers() -> None:
    """Forget every circuit's history (tests start each case with a provider in good health)."""
    with _lock:
        _breakers.clear()
