"""The GCP settings: core's plus the resource names, each from NCLAV_<FIELD>."""

from __future__ import annotations

import pytest

from functions_gcp.settings import Settings
from nclav.errors import ConfigurationError

NAMES = {
    "NCLAV_PROJECT": "platform-1",
    "NCLAV_BUCKET": "nclav-blobs",
    "NCLAV_STEPS_QUEUE": "projects/platform-1/locations/europe-west1/queues/steps",
    "NCLAV_IAC_QUEUE": "projects/platform-1/locations/europe-west1/queues/iac",
    "NCLAV_WORKER_URL": "https://worker.example.run.app/",
    "NCLAV_IAC_WORKER_URL": "https://iac.example.run.app/",
}


def test_resource_names_come_from_the_environment() -> None:
    settings = Settings.from_env({**NAMES, "NCLAV_DATABASE": "nclav"})
    assert settings.project == "platform-1"
    assert settings.database == "nclav"
    assert settings.cloud == "gcp"
    assert settings.collection_prefix == ""


def test_every_missing_name_is_listed() -> None:
    with pytest.raises(ConfigurationError) as caught:
        Settings.from_env({"NCLAV_PROJECT": "platform-1"})
    for name in ("NCLAV_BUCKET", "NCLAV_STEPS_QUEUE", "NCLAV_IAC_WORKER_URL"):
        assert name in str(caught.value)
    assert "NCLAV_PROJECT" not in str(caught.value)


def test_an_explicit_value_wins() -> None:
    assert Settings.from_env(NAMES, bucket="other").bucket == "other"
