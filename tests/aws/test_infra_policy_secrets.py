"""What the policy check asks IAM for when a function generates a secret on first use
(infra/aws grants the git and notification secrets by name): the bare name's ARN while the
secret does not exist, TagResource for a tagged CreateSecret."""

from __future__ import annotations

from policy_check import Call, Policy, denied, required

ARN = "arn:aws:secretsmanager:us-east-1:123456789012:secret:nclav/"
# Read and write on the existing secret only: the shape of a "-??????"-only grant.
SUFFIX_ONLY = {
    "Statement": [
        {
            "Effect": "Allow",
            "Action": [
                "secretsmanager:GetSecretValue",
                "secretsmanager:PutSecretValue",
                "secretsmanager:CreateSecret",
            ],
            "Resource": f"{ARN}notify-secret-??????",
        }
    ]
}


def test_a_tagged_create_of_a_missing_secret_needs_tag_resource_on_its_bare_name() -> None:
    create = Call(
        "worker",
        "secretsmanager",
        "CreateSecret",
        {"Name": "nclav/notify-secret", "SecretString": "s", "Tags": [{"Key": "k"}]},
    )
    assert required(create, {}) == [
        ("secretsmanager:CreateSecret", f"{ARN}notify-secret"),
        ("secretsmanager:TagResource", f"{ARN}notify-secret"),
    ]


def test_a_suffix_only_grant_refuses_the_first_read_and_create() -> None:
    first_read = Call(
        "api", "secretsmanager", "GetSecretValue", {"SecretId": "nclav/notify-secret"}
    )
    refused, _ = denied([first_read], Policy([SUFFIX_ONLY]), {})
    assert refused == [f"api: secretsmanager:GetSecretValue on {ARN}notify-secret"]
    # Once it exists (its ARN known), the same read is allowed.
    existing = {"nclav/notify-secret": f"{ARN}notify-secret-AbC123"}
    assert denied([first_read], Policy([SUFFIX_ONLY]), existing) == ([], set())
