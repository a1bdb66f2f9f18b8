"""The hub's error answer: raised anywhere while answering, worded by the API that was called."""

from __future__ import annotations


class HubError(Exception):
    """An error answer, rendered in the style of the API called (HF headers + JSON, or ModelScope's envelope)."""

    def __init__(self, status: int, message: str, code: str | None = None, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.headers = headers or {}

