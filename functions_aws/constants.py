"""Every ``NCLAV_*`` environment variable the AWS runtime reads, and its default.

Only ``functions_aws.bootstrap`` reads the environment; handlers and core take values as
arguments. infra/aws sets these on the functions (README: deploying).
"""

from __future__ import annotations

# -- where things live ---------------------------------------------------------------------
TABLE = "NCLAV_TABLE"  # DynamoDB table: applied state, runs, steps, events, locks (required)
BUCKET = "NCLAV_BUCKET"  # S3 bucket: bundles, IaC logs, Terraform state versions (required)
BLOB_PREFIX = "NCLAV_BLOB_PREFIX"  # key prefix inside the bucket
STEPS_QUEUE_URL = "NCLAV_STEPS_QUEUE_URL"  # SQS queue of driver steps (required)
IAC_QUEUE_URL = "NCLAV_IAC_QUEUE_URL"  # SQS queue of terraform steps (required)
SECRET_PREFIX = "NCLAV_SECRET_PREFIX"  # Secrets Manager name prefix
TOKEN_SECRET = "NCLAV_TOKEN_SECRET"  # the API token's secret name, under the prefix
API_URL = "NCLAV_API_URL"  # the API's base URL (function URL): Terraform's state backend
WORKSPACES = "NCLAV_WORKSPACES"  # terraform working directories (Lambda: only /tmp is writable)

# -- clouds ----------------------------------------------------------------------------------
CLOUD = "NCLAV_CLOUD"  # the default cloud of enclaves that name none
ENABLE_CLOUDS = "NCLAV_ENABLE_CLOUDS"  # more clouds, comma-separated (e.g. "local")

# -- steps: leases and retries -----------------------------------------------------------------
LEASE_S = "NCLAV_LEASE_S"  # a step's lease, renewed while it runs
MAX_ATTEMPTS = "NCLAV_MAX_ATTEMPTS"  # attempts of a step that raised TemporaryError
BACKOFF_S = "NCLAV_BACKOFF_S"  # the engine's retry backoff base
# Deliveries of one SQS message before the worker records its step failed and acks it. Keep it
# below the redrive policy's maxReceiveCount, so the worker records the failure before SQS
# moves the message to the dead-letter queue.
MAX_RECEIVES = "NCLAV_MAX_RECEIVES"
REDELIVERY_BACKOFF_S = "NCLAV_REDELIVERY_BACKOFF_S"  # first redelivery delay, doubled each time
REDELIVERY_MAX_S = "NCLAV_REDELIVERY_MAX_S"  # longest redelivery delay

# -- terraform on Lambda (functions_aws.iac_worker: the long-apply design) --------------------
IAC_MIN_REMAINING_S = "NCLAV_IAC_MIN_REMAINING_S"  # refuse to start terraform with less left
IAC_MARGIN_S = "NCLAV_IAC_MARGIN_S"  # kept back at the end to stop terraform cleanly
IAC_HEARTBEAT_S = "NCLAV_IAC_HEARTBEAT_S"  # how often the message's visibility is extended
IAC_VISIBILITY_S = "NCLAV_IAC_VISIBILITY_S"  # ...and to how long from then

DEFAULTS: dict[str, str] = {
    BLOB_PREFIX: "",
    SECRET_PREFIX: "nclav/",
    TOKEN_SECRET: "api-token",
    WORKSPACES: "/tmp/nclav/workspaces",
    CLOUD: "aws",
    ENABLE_CLOUDS: "",
    LEASE_S: "120",
    MAX_ATTEMPTS: "4",
    BACKOFF_S: "2",
    MAX_RECEIVES: "5",
    REDELIVERY_BACKOFF_S: "5",
    REDELIVERY_MAX_S: "900",
    IAC_MIN_REMAINING_S: "120",
    IAC_MARGIN_S: "60",
    IAC_HEARTBEAT_S: "60",
    IAC_VISIBILITY_S: "180",
}
REQUIRED = (TABLE, BUCKET, STEPS_QUEUE_URL, IAC_QUEUE_URL)

# The AWS driver's settings (cloud-drivers-spec 4.2), read when a cloud is "aws".
AWS_ORG_UNIT_ID = "NCLAV_AWS_ORG_UNIT_ID"
AWS_EMAIL_DOMAIN = "NCLAV_AWS_EMAIL_DOMAIN"
AWS_DEFAULT_REGION = "NCLAV_AWS_DEFAULT_REGION"
AWS_ACCOUNT_PREFIX = "NCLAV_AWS_ACCOUNT_PREFIX"
AWS_CROSS_ACCOUNT_ROLE = "NCLAV_AWS_CROSS_ACCOUNT_ROLE"
AWS_ROLE_ARN = "NCLAV_AWS_ROLE_ARN"
AWS_DRIVER_OPTIONS = {  # variable -> the driver's option (functions_aws.driver.make_driver)
    AWS_ORG_UNIT_ID: "org_unit_id",
    AWS_EMAIL_DOMAIN: "email_domain",
    AWS_DEFAULT_REGION: "default_region",
    AWS_ACCOUNT_PREFIX: "account_prefix",
    AWS_CROSS_ACCOUNT_ROLE: "cross_account_role",
    AWS_ROLE_ARN: "role_arn",
}

# Steps that run terraform go to the IaC queue (the container-image worker); the rest to the
# steps queue. The values of nclav.plan.Action (tests/aws checks they match).
IAC_ACTIONS = frozenset({"provision_partition", "teardown_partition"})

__all__ = [
    "API_URL",
    "AWS_ACCOUNT_PREFIX",
    "AWS_CROSS_ACCOUNT_ROLE",
    "AWS_DEFAULT_REGION",
    "AWS_DRIVER_OPTIONS",
    "AWS_EMAIL_DOMAIN",
    "AWS_ORG_UNIT_ID",
    "AWS_ROLE_ARN",
    "BACKOFF_S",
    "BLOB_PREFIX",
    "BUCKET",
    "CLOUD",
    "DEFAULTS",
    "ENABLE_CLOUDS",
    "IAC_ACTIONS",
    "IAC_HEARTBEAT_S",
    "IAC_MARGIN_S",
    "IAC_MIN_REMAINING_S",
    "IAC_QUEUE_URL",
    "IAC_VISIBILITY_S",
    "LEASE_S",
    "MAX_ATTEMPTS",
    "MAX_RECEIVES",
    "REDELIVERY_BACKOFF_S",
    "REDELIVERY_MAX_S",
    "REQUIRED",
    "SECRET_PREFIX",
    "STEPS_QUEUE_URL",
    "TABLE",
    "TOKEN_SECRET",
    "WORKSPACES",
]
