"""Config types for URIs that must not carry credentials (they come from the environment, so they
never reach a compiled pipeline, a log line or the run identity)."""

from __future__ import annotations

import re
from typing import Annotated
from urllib.parse import parse_qsl, urlsplit

from pydantic import AfterValidator
from pydantic_core import PydanticCustomError

_SECRET_QUERY = re.compile(r"pass|secret|token|signature|credential|api[_-]?key|access[_-]?key", re.IGNORECASE)
_CREDENTIAL_ENV = {
    "http": "MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD (or MLFLOW_TRACKING_TOKEN)",
    "s3": "AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY",
    "git": "a git credential helper or GIT_ASKPASS",
}


def _credentials_in(value: str) -> str | None:
    """What credential a URI carries (password, token user, secret query), or None."""
    if "://" not in value:
        return None
    try:
        parts = urlsplit(value)
        password, user = parts.password, parts.username
    except ValueError:
        return None  # not a URL the code could use either; the reader reports it
    if password is not None:
        return "a password (user:password@)"
    if user and parts.scheme in ("http", "https"):
        return "a user name or token (name@)"
    if any(_SECRET_QUERY.search(k) for k, _ in parse_qsl(parts.query)):
        return "a secret query parameter"
    return None


def check_uri(value: str | None, kind: str) -> str | None:
    found = _credentials_in(value) if value else None
    if found:
        raise PydanticCustomError(
            "credentials_in_uri", f"URI contains {found}; remove it and set {_CREDENTIAL_ENV[kind]} in the environment"
        )
    return value


def _no_credentials(kind: str) -> AfterValidator:
    return AfterValidator(lambda value: check_uri(value, kind))


TrackingURI = Annotated[str | None, _no_credentials("http")]
S3URI = Annotated[str | None, _no_credentials("s3")]
GitURI = Annotated[str | None, _no_credentials("git")]
Location = Annotated[str, _no_credentials("s3")]
