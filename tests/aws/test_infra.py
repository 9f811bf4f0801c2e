"""infra/aws for real: ``terraform validate``, then ``terraform apply`` against the moto server
and a reconcile through the handlers of the deployed functions.

The AWS provider comes from a filesystem mirror (``/opt/tf-plugins`` or ``NCLAV_TF_PLUGIN_DIR``,
holding ``registry.terraform.io/hashicorp/aws``); without one these tests skip and say why (the
registry is not reachable from every test machine). infra/aws needs no other provider.

The apply copies infra/aws into a temporary directory and adds an override file there (never
committed) that points every service the root uses at moto. What moto cannot do is listed in
``MOTO_GAPS``, each with its reason; the rest is created for real.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import subprocess
import time
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import boto3
import pytest
from aws_harness import Api, Deployment, FakeContext, Pump, Queue, enclaves_tree, load_event
from botocore.exceptions import ClientError
from policy_check import CallRecorder, denied, role_policies

from functions_aws import api, bootstrap, iac_worker, schedule, worker
from functions_aws.driver import AwsDriver, AwsDriverConfig
from functions_aws.secrets import SecretsManagerSecretStore
from nclav import notify
from nclav.model import EnclaveConfig, PartitionConfig
from nclav.runtime.token import StoredToken

if TYPE_CHECKING:
    from collections.abc import Iterator

pytestmark = pytest.mark.terraform

ROOT = Path(__file__).resolve().parents[2]
INFRA = ROOT / "infra" / "aws"
# Every service infra/aws creates something in (the override points each at moto).
SERVICES = (
    "cloudwatch",
    "cloudwatchevents",
    "cloudwatchlogs",
    "dynamodb",
    "ecr",
    "iam",
    "lambda",
    "s3",
    "secretsmanager",
    "sqs",
    "sts",
)
# What moto cannot model, and so what this test does not prove (the reason for each).
MOTO_GAPS = {
    "lambda invoke": "moto stores functions but runs them only in Docker: the handlers are "
    "called in-process with the deployed functions' environment instead",
    "function URL 403": "moto does not enforce resource-based policies: the two public "
    "permissions are checked in the applied state and the function's policy instead",
    "IAM evaluation": "moto accepts every call: tests/aws/test_policy_check.py evaluates the "
    "deployed policies against the calls the functions make",
    "event source mappings": "moto hands each message sent to a mapped queue to a function it "
    "cannot run (no Docker) and drops it, even after the mapping is deleted: the test checks "
    "the mappings, then makes each queue again with the same name and attributes, and pumps",
    "DynamoDB TTL / S3 lifecycle": "stored, never acted on (time does not pass)",
    "TLS": "the moto server speaks plain HTTP, which the TLS-only bucket policy refuses (moto "
    "enforces it: the test shows the refusal, then removes the policy to go on)",
}


def plugin_dir() -> Path:
    found = Path(os.environ.get("NCLAV_TF_PLUGIN_DIR", "/opt/tf-plugins"))
    if not (found / "registry.terraform.io" / "hashicorp" / "aws").is_dir():
        if os.environ.get("CI") == "true" and os.environ.get("NCLAV_TF_PLUGIN_DIR"):
            pytest.fail(f"no hashicorp/aws provider mirror at {found}", pytrace=False)
        pytest.skip(
            f"no Terraform provider mirror with hashicorp/aws at {found} (set "
            "NCLAV_TF_PLUGIN_DIR): infra/aws cannot be initialised offline",
        )
    return found


def terraform(workdir: Path, *args: str, env: dict[str, str] | None = None) -> str:
    if shutil.which("terraform") is None:
        pytest.skip("terraform is not on PATH")
    done = subprocess.run(
        ["terraform", *args, *(["-no-color"] if args[0] != "fmt" else [])],
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=900,
        env={**os.environ, "TF_IN_AUTOMATION": "1", "CHECKPOINT_DISABLE": "1", **(env or {})},
        check=False,
    )
    assert done.returncode == 0, f"terraform {' '.join(args)}:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def copy_infra(tmp: Path) -> Path:
    work = tmp / "infra"
    work.mkdir()
    for tf in INFRA.glob("*.tf"):
        shutil.copy(tf, work / tf.name)
    return work


@pytest.fixture(scope="module")
def initialised(tmp_path_factory: pytest.TempPathFactory) -> Path:
    work = copy_infra(tmp_path_factory.mktemp("tf"))
    terraform(work, "init", "-input=false", f"-plugin-dir={plugin_dir()}")
    return work


def test_infra_validates_with_the_aws_provider_alone(initialised: Path) -> None:
    terraform(initialised, "validate")
    lock = (initialised / ".terraform.lock.hcl").read_text()
    assert "hashicorp/aws" in lock and "hashicorp/random" not in lock


# -- apply against moto -------------------------------------------------------------------------


def override(endpoint: str) -> str:
    endpoints = "\n".join(f'    {name} = "{endpoint}"' for name in SERVICES)
    return f"""
provider "aws" {{
  access_key                  = "testing"
  secret_key                  = "testing"
  skip_credentials_validation = true
  skip_metadata_api_check     = true
  skip_region_validation      = true
  s3_use_path_style           = true
  endpoints {{
{endpoints}
  }}
}}
"""


def tiny_zip(path: Path) -> Path:
    """A stand-in deployment package: moto stores the code, it never runs it."""
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("functions_aws/__init__.py", "")
    return path


@pytest.fixture
def applied(aws: str, tmp_path: Path) -> Iterator[dict[str, Any]]:
    work = copy_infra(tmp_path)
    (work / "zz_moto_override.tf").write_text(override(aws))
    variables = {
        "lambda_zip": str(tiny_zip(tmp_path / "lambda.zip")),
        "iac_image_uri": "123456789012.dkr.ecr.us-east-1.amazonaws.com/nclav-iac:test",
        "org_unit_id": "ou-test-12345678",
        "email_domain": "example.com",
        "name": "nclavt",
    }
    (work / "moto.auto.tfvars.json").write_text(json.dumps(variables))
    env = {"AWS_ENDPOINT_URL": aws}
    terraform(work, "init", "-input=false", f"-plugin-dir={plugin_dir()}")
    terraform(work, "apply", "-input=false", "-auto-approve", "-lock=false", env=env)
    outputs = json.loads(terraform(work, "output", "-json", env=env))
    state = json.loads(terraform(work, "show", "-json", env=env))
    yield {"outputs": {k: v["value"] for k, v in outputs.items()}, "state": state, "dir": work}


def resources(state: dict[str, Any]) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = {}
    for resource in state["values"]["root_module"].get("resources", []):
        found[resource["address"]] = resource["values"]
    return found


class Deployed(Deployment):
    """The deployment terraform made: its table, bucket and queues, its functions' env."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, env: dict[str, str]):
        self.sqs = boto3.client("sqs")
        self.dynamodb = boto3.client("dynamodb")
        self.s3 = boto3.client("s3")
        self.secretsmanager = boto3.client("secretsmanager")
        self.table, self.bucket = env["NCLAV_TABLE"], env["NCLAV_BUCKET"]
        self.steps = self._deployed_queue(env["NCLAV_STEPS_QUEUE_URL"])
        self.iac = self._deployed_queue(env["NCLAV_IAC_QUEUE_URL"])
        self.workspaces = tmp_path / "workspaces"
        self.env = {
            **env,
            "NCLAV_WORKSPACES": str(self.workspaces),
            "NCLAV_REDELIVERY_BACKOFF_S": "0",
            "NCLAV_BACKOFF_S": "0",
        }
        for name, value in self.env.items():
            monkeypatch.setenv(name, value)
        bootstrap.install(None)
        self._store = SecretsManagerSecretStore(
            env["NCLAV_SECRET_PREFIX"], client=self.secretsmanager
        )

    def first_start(self) -> None:
        """The API's first start: what bootstrap's token read does (``write_first_token``)."""
        name = self.env["NCLAV_TOKEN_SECRET"]
        first = functools.partial(self._store.put_first, name)
        self.token = StoredToken(self._store, name, write_first=first)()
        self.api = Api(self.token)

    def _deployed_queue(self, url: str) -> Queue:
        names = ["QueueArn", "RedrivePolicy"]
        found = self.sqs.get_queue_attributes(QueueUrl=url, AttributeNames=names)["Attributes"]
        dlq_arn = json.loads(found["RedrivePolicy"])["deadLetterTargetArn"]
        dlq = self.sqs.get_queue_url(QueueName=dlq_arn.rsplit(":", 1)[1])["QueueUrl"]
        return Queue(url, dlq, found["QueueArn"])


def partition(path: Path) -> None:
    """A partition whose terraform needs no provider (the IaC worker runs it for real)."""
    path.mkdir(parents=True)
    (path / "config.yml").write_text("id: db\nname: db\ndeclared_outputs: [name]\n")
    (path / "main.tf").write_text(
        'variable "nclav_enclave" { type = string }\n'
        'variable "nclav_partition" { type = string }\n'
        'resource "terraform_data" "db" { input = "db-${var.nclav_enclave}" }\n'
        'output "name" { value = terraform_data.db.output }\n'
    )


def vend_and_enter(recorder: CallRecorder) -> None:
    """The AWS driver's calls as each function makes them: the worker vends an account, the
    terraform function provisions a partition role and its credentials (moto's organization)."""
    org = boto3.client("organizations")
    org.create_organization(FeatureSet="ALL")
    root = org.list_roots()["Roots"][0]["Id"]
    ou = org.create_organizational_unit(ParentId=root, Name="enclaves")["OrganizationalUnit"]
    config = AwsDriverConfig(org_unit_id=ou["Id"], email_domain="example.com")
    enclave = EnclaveConfig(id="vend", name="vend", region="us-east-1")
    with recorder.running("worker"):
        handle, _ = AwsDriver(config).provision_enclave(enclave, None)
    with recorder.running("iac"):  # a fresh sandbox: nothing cached
        iac = AwsDriver(config, partition_policy_arns=())
        part = iac.provision_partition(
            enclave, PartitionConfig(id="db", name="db"), None, enclave_handle=handle
        )
        iac.auth_env(handle, part)


def unmapped(url: str) -> None:
    """The queue at ``url`` again, as terraform made it, without moto's Lambda hook."""
    sqs = boto3.client("sqs")
    keep = ("VisibilityTimeout", "MessageRetentionPeriod", "RedrivePolicy", "SqsManagedSseEnabled")
    found = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
    sqs.delete_queue(QueueUrl=url)
    made = sqs.create_queue(
        QueueName=url.rsplit("/", 1)[1], Attributes={k: found[k] for k in keep if k in found}
    )
    assert made["QueueUrl"] == url


@pytest.mark.slow
def test_infra_applies_on_moto_and_a_reconcile_runs_through_the_deployed_functions(
    applied: dict[str, Any], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    outputs, made = applied["outputs"], resources(applied["state"])
    assert outputs["api_url"].startswith("http")
    # What the deployment is made of, as terraform recorded it.
    assert made["aws_sqs_queue.iac"]["visibility_timeout_seconds"] >= 6 * 900
    assert made["aws_sqs_queue.steps"]["visibility_timeout_seconds"] >= 6 * 60
    assert made["aws_dynamodb_table.state"]["ttl"][0] == {
        "attribute_name": "expires_at",
        "enabled": True,
    }
    assert set(made) >= {
        'aws_cloudwatch_metric_alarm.dlq["steps"]',
        'aws_cloudwatch_metric_alarm.dlq["iac"]',
        "aws_s3_bucket_policy.blobs",
        "aws_lambda_permission.url",
        "aws_lambda_permission.url_invoke",
    }
    assert not any(a.startswith("random_") for a in made)
    assert_function_url_is_public(made)
    # The secret exists without a value: the API makes the token.
    sm = boto3.client("secretsmanager")
    assert not sm.list_secret_version_ids(SecretId=outputs["token_secret_arn"])["Versions"]

    lam = boto3.client("lambda")
    config = lam.get_function_configuration(FunctionName="nclavt-worker")
    env = dict(config["Environment"]["Variables"])
    assert "NCLAV_API_URL" not in env
    iac_env = lam.get_function_configuration(FunctionName="nclavt-iac")["Environment"]
    assert "NCLAV_API_URL" not in iac_env["Variables"]
    # The tree below has local-cloud enclaves: the AWS driver needs a real organization.
    env["NCLAV_CLOUD"] = "local"

    mappings = lam.list_event_source_mappings()["EventSourceMappings"]
    assert len(mappings) == 2
    for mapping in mappings:
        lam.delete_event_source_mapping(UUID=mapping["UUID"])
    for url in (env["NCLAV_STEPS_QUEUE_URL"], env["NCLAV_IAC_QUEUE_URL"]):
        unmapped(url)

    # TLS only: plain HTTP (all moto speaks) is refused by the bucket policy.
    s3 = boto3.client("s3")
    with pytest.raises(ClientError, match="AccessDenied|Forbidden|403"):
        s3.put_object(Bucket=outputs["bucket"], Key="probe", Body=b"x")
    s3.delete_bucket_policy(Bucket=outputs["bucket"])

    recorder = CallRecorder()
    handlers = ((api, "api"), (worker, "worker"), (iac_worker, "iac"), (schedule, "schedule"))
    for module, name in handlers:
        monkeypatch.setattr(module, "handler", recorder.wrap(module.handler, name))
    with recorder.installed():
        deployed = Deployed(monkeypatch, tmp_path, env)
        with recorder.running("api"):  # its first start makes the token
            deployed.first_start()
        assert sm.list_secret_version_ids(SecretId=outputs["token_secret_arn"])["Versions"]
        tree = enclaves_tree(tmp_path / "tree", "alpha", "beta")
        partition(tree / "alpha" / "db")
        deployed.api.dry_run(tree)
        run = deployed.api.start_reconcile(tree)
        pump = Pump(deployed)
        final = pump.run(run)
        assert final["status"] == "succeeded", (final, pump.invocations)
        enclaves = deployed.api.ok("GET", "/enclaves")
        assert sorted(e["enclave_id"] for e in enclaves) == ["alpha", "beta"]
        # GET /status counts both dead-letter queues (sqs:GetQueueAttributes on each DLQ).
        status = deployed.api.ok("GET", "/status")
        assert status["dead_letters"] == 0, status
        drift_ticks(deployed, monkeypatch)
        first_notifier(recorder, deployed)
        vend_and_enter(recorder)

    # The policy check: every call each function made is allowed by its role's policies.
    policies = role_policies(applied["state"])
    secrets = {s["Name"]: s["ARN"] for s in sm.list_secrets()["SecretList"]}
    assert {"nclavt/git-webhook-secret", "nclavt/notify-secret"} <= set(secrets)
    assert {c.function for c in recorder.calls} >= {"api", "worker", "iac", "schedule"}
    dlqs = {deployed.steps.dlq_url, deployed.iac.dlq_url}
    read_dlqs = {
        c.params["QueueUrl"]
        for c in recorder.of("api")
        if c.operation == "GetQueueAttributes"
        and c.params.get("AttributeNames") == ["ApproximateNumberOfMessages"]
    }
    assert read_dlqs == dlqs
    conditions: set[str] = set()
    for function in ("api", "worker", "iac", "schedule"):
        calls = recorder.of(function)
        assert calls, function
        refused, assumed = denied(calls, policies[function], secrets)
        assert not refused, refused
        conditions |= assumed
    # Conditions taken as satisfied (the evaluator does not model them): listed, and known.
    assert {c.split(": ", 1)[1] for c in conditions} <= {
        "ForAnyValue:StringLike aws:ResourceOrgPaths",
        "StringEquals aws:ResourceTag/nclav-managed",
        "StringEquals aws:RequestTag/nclav-managed",
        "ForAllValues:StringEquals aws:TagKeys",
    }
    # What the blockers were: the IaC worker may not call Organizations or tag S3 objects.
    iac_policy = policies["iac"]
    assert not iac_policy.decide("organizations:ListAccountsForParent", "*").allowed
    assert not iac_policy.decide(
        "s3:PutObjectTagging", f"arn:aws:s3:::{outputs['bucket']}/k"
    ).allowed
    assert (
        not policies["worker"]
        .decide("secretsmanager:GetSecretValue", outputs["token_secret_arn"])
        .allowed
    )
    assert_secret_grants(policies)


def assert_secret_grants(policies: dict[str, Any]) -> None:
    """Each secret generated on first use, by name: who may read it, who may create or replace
    it (tags on create need TagResource), and nothing beyond those names."""
    arn = "arn:aws:secretsmanager:us-east-1:123456789012:secret:nclavt/"
    read = ("secretsmanager:GetSecretValue", "secretsmanager:DescribeSecret")
    write = read + (
        "secretsmanager:CreateSecret",
        "secretsmanager:PutSecretValue",
        "secretsmanager:TagResource",
    )
    expected = {
        "git-webhook-secret": {"api": write, "worker": write, "schedule": write, "iac": ()},
        "git-token": {"api": write, "worker": read, "schedule": read, "iac": ()},
        "notify-secret": dict.fromkeys(("api", "worker", "iac", "schedule"), write),
    }
    for name, grants in expected.items():
        for function, actions in grants.items():
            for action in write:
                for secret in (f"{arn}{name}-AbC123", f"{arn}{name}"):  # existing, missing
                    allowed = policies[function].decide(action, secret).allowed
                    assert allowed == (action in actions), (function, action, secret)
    for function in ("api", "worker", "iac", "schedule"):  # the suffix is 6 characters
        for other in ("git-token-x-AbC123", "git-tokens-AbC123", "git-token-", "other"):
            assert not policies[function].decide(read[0], f"{arn}{other}").allowed


def drift_ticks(deployed: Deployed, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two sweeps of the schedule function with a tiny drift interval: the first spreads the
    first checks over it, the second sends the due one (alpha/db) to the IaC queue."""
    monkeypatch.setenv("NCLAV_DRIFT_INTERVAL_S", "0.01")
    event = load_event("eventbridge_scheduled")
    schedule.handler(event, FakeContext("nclav-schedule"))
    time.sleep(0.05)
    schedule.handler(event, FakeContext("nclav-schedule"))
    found = deployed.sqs.get_queue_attributes(
        QueueUrl=deployed.iac.url, AttributeNames=["ApproximateNumberOfMessages"]
    )
    assert int(found["Attributes"]["ApproximateNumberOfMessages"]) >= 1


def first_notifier(recorder: CallRecorder, deployed: Deployed) -> None:
    """The notifier's first start in the worker (generates and stores the signing secret,
    tagged), then in the other functions (read it): what compose does with NCLAV_NOTIFY_URL."""
    prefix, client = deployed.env["NCLAV_SECRET_PREFIX"], deployed.secretsmanager
    secrets: list[str] = []
    for function in ("worker", "api", "iac", "schedule"):
        with recorder.running(function):
            store = SecretsManagerSecretStore(prefix, client=client)
            found = notify.notify_settings("https://hooks.example.com/nclav", {}, lambda s=store: s)
            secrets.append(found.secret)
    assert len(set(secrets)) == 1 and secrets[0]
    made = [c for c in recorder.of("worker") if c.operation == "CreateSecret"]
    assert [c.params["Name"] for c in made] == [f"{prefix}{notify.SECRET_NAME}"]


def assert_function_url_is_public(made: dict[str, dict[str, Any]]) -> None:
    """Both permissions a NONE-auth URL needs since October 2025 (else it answers 403)."""
    url = made["aws_lambda_permission.url"]
    invoke = made["aws_lambda_permission.url_invoke"]
    assert (url["action"], url["principal"], url["function_url_auth_type"]) == (
        "lambda:InvokeFunctionUrl",
        "*",
        "NONE",
    )
    assert (invoke["action"], invoke["principal"]) == ("lambda:InvokeFunction", "*")
    policy = json.loads(boto3.client("lambda").get_policy(FunctionName="nclavt-api")["Policy"])
    actions = {s["Action"] for s in policy["Statement"]}
    assert actions >= {"lambda:InvokeFunctionUrl", "lambda:InvokeFunction"}
