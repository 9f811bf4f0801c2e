"""The destroy prompt says what the enclave's own cloud keeps (issue 8 §9: it mentioned GCP's
30-day hold for local enclaves). tests/e2e/test_cli.py::test_destroy sees it on a real server."""

from __future__ import annotations

from nclav.cli.teardown import destroy_prompt


def test_a_local_enclave_mentions_no_hold() -> None:
    (line,) = destroy_prompt("web-dev", "local")
    assert line == "This will destroy enclave 'web-dev' and delete its local environment."


def test_each_cloud_says_what_it_keeps() -> None:
    assert "GCP project (held 30 days" in destroy_prompt("e", "gcp")[0]
    aws = destroy_prompt("e", "aws")[0]
    assert "close its AWS account" in aws and "90 days" in aws and "GCP" not in aws
    azure = destroy_prompt("e", "azure")[0]
    assert "Azure subscription" in azure and "GCP" not in azure


def test_an_unknown_cloud_promises_nothing() -> None:
    assert destroy_prompt("e", None) == [
        "This will destroy enclave 'e' and delete its cloud environment."
    ]
