"""Every gateway test runs with fake AWS credentials and a Lambda endpoint nobody listens on.

The gateway calls Lambda targets through the standard AWS configuration
chain: without this, a test calling one would look for real credentials and
endpoints beyond 127.0.0.1.
"""

from __future__ import annotations

import pytest

from tests.helpers import free_port


@pytest.fixture(autouse=True)
def offline_aws(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT_URL_LAMBDA": f"http://127.0.0.1:{free_port()}",
        "AWS_EC2_METADATA_DISABLED": "true",
    }.items():
        monkeypatch.setenv(name, value)
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL"):
        monkeypatch.delenv(name, raising=False)
