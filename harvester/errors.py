"""Error classes shared across the pipeline.

Every failure a user can cause or meet has its own class, so the CLI can print one clear
line and pick an exit code without parsing messages. None of them ever carries the API key.
"""

from __future__ import annotations


class HarvesterError(Exception):
    """Base of every error the harvester reports to its user as one line."""

    exit_code: int = 1


class ConfigError(HarvesterError):
    """A setting is missing or invalid (named in the message). Raised before any work."""

    exit_code = 2


class ApiError(HarvesterError):
    """The API answered in a way that stops the run at once (no retry would help)."""

    exit_code = 3


class AuthError(ApiError):
    """403: the API key is missing or wrong."""


class QueryError(ApiError):
    """400: the service could not parse a query or refused its paging window."""


class ApiUnreachable(ApiError):
    """The service could not be reached at all (DNS, refused connection) at start-up."""


class RetriesExhausted(HarvesterError):
    """A request kept failing with retryable errors; carries the last cause."""

    def __init__(self, cause: str, attempts: int) -> None:
        super().__init__(f"gave up after {attempts} attempts: {cause}")
        self.cause = cause
        self.attempts = attempts


class LakeError(HarvesterError):
    """The lake is not in a state this command can work on (e.g. no completed harvest)."""

    exit_code = 4
