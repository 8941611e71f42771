"""Integration fixtures: a real S3 server (moto over HTTP on loopback) and fresh buckets."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.servers import threaded_s3_server

# Dummy credentials and a region for the local server; everything else that could make
# botocore look beyond the environment (profiles, ~/.aws, instance metadata) is switched off.
AWS_TEST_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_EC2_METADATA_DISABLED": "true",
}
AWS_CLEARED_ENV = (
    "AWS_PROFILE",
    "AWS_DEFAULT_PROFILE",
    "AWS_SESSION_TOKEN",
    "AWS_SECURITY_TOKEN",
    "AWS_REGION",
    "AWS_ENDPOINT_URL_S3",
    "S3_ENDPOINT_URL",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AWS_ROLE_ARN",
)


@pytest.fixture(scope="session")
def aws_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """Test credentials in os.environ for the session; the previous environment comes back after."""
    home = tmp_path_factory.mktemp("aws-home")
    (home / "config").write_text("")
    (home / "credentials").write_text("")
    with pytest.MonkeyPatch.context() as mp:
        for name in AWS_CLEARED_ENV:
            mp.delenv(name, raising=False)
        env = {**AWS_TEST_ENV, "AWS_CONFIG_FILE": str(home / "config"),
               "AWS_SHARED_CREDENTIALS_FILE": str(home / "credentials")}
        for name, value in env.items():
            mp.setenv(name, value)
        yield env


@pytest.fixture(scope="session")
def s3_server(aws_env: dict[str, str]) -> Iterator[str]:
    """Endpoint URL of a moto S3 server for the session; AWS_ENDPOINT_URL points at it too."""
    with threaded_s3_server() as endpoint, pytest.MonkeyPatch.context() as mp:
        mp.setenv("AWS_ENDPOINT_URL", endpoint)
        yield endpoint


def s3_client(endpoint: str) -> Any:
    """A raw boto3 client for test setup and tampering (the library goes through S3Store)."""
    import boto3

    return boto3.session.Session().client("s3", endpoint_url=endpoint, region_name="us-east-1")


def new_bucket(endpoint: str) -> str:
    name = f"seppo-test-{uuid.uuid4().hex[:12]}"
    s3_client(endpoint).create_bucket(Bucket=name)
    return name


@pytest.fixture
def s3_bucket(s3_server: str) -> str:
    """`s3://<fresh bucket>/prefix` on the session server."""
    return f"s3://{new_bucket(s3_server)}/prefix"


@pytest.fixture
def local_files(tmp_path: Path) -> Path:
    """A small folder tree with nested files."""
    root = tmp_path / "files"
    for rel, text in {"a.txt": "alpha", "sub/b.json": '{"b": 1}', "sub/deep/c.bin": "\x00\x01\x02"}.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    return root
