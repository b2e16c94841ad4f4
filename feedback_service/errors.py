"""The one shape of a refused change, shared by every layer that checks input field by field."""
from __future__ import annotations


class FieldErrors(ValueError):
    """A change refused; `errors` maps a field (path) to a message."""

    def __init__(self, errors: dict[str, str]):
        super().__init__("; ".join(f"{k}: {v}" for k, v in errors.items()))
        self.errors = errors
