# The whole nclav deployment on AWS: the API behind a function URL, the step workers on SQS,
# the terraform worker as a container image, DynamoDB state, S3 blobs, the API token in
# Secrets Manager and the sweeper on an EventBridge schedule.

data "aws_caller_identity" "current" {}
data "aws_partition" "current" {}

locals {
  account = data.aws_caller_identity.current.account_id
  arn     = data.aws_partition.current.partition

  # The worker records a step failed one delivery before SQS moves it to the dead-letter queue.
  common_env = {
    NCLAV_TABLE           = aws_dynamodb_table.state.name
    NCLAV_BUCKET          = aws_s3_bucket.blobs.bucket
    NCLAV_STEPS_QUEUE_URL = aws_sqs_queue.steps.url
    NCLAV_IAC_QUEUE_URL   = aws_sqs_queue.iac.url
    NCLAV_SECRET_PREFIX   = "${var.name}/"
    NCLAV_TOKEN_SECRET    = "api-token"
    NCLAV_CLOUD           = "aws"
    NCLAV_MAX_RECEIVES    = tostring(var.max_receives - 1)
    NCLAV_RETENTION_DAYS  = tostring(var.retention_days)

    NCLAV_AWS_ORG_UNIT_ID        = var.org_unit_id
    NCLAV_AWS_EMAIL_DOMAIN       = var.email_domain
    NCLAV_AWS_ACCOUNT_PREFIX     = var.account_prefix
    NCLAV_AWS_CROSS_ACCOUNT_ROLE = var.cross_account_role
    NCLAV_AWS_DEFAULT_REGION     = var.region
    NCLAV_AWS_ROLE_ARN           = var.management_role_arn

    # Every function may send notifications (core/nclav/notify.py); all read the drift
    # options (the schedule function sends the checks, the terraform function bounds them).
    NCLAV_NOTIFY_URL        = var.notify_url
    NCLAV_DRIFT_INTERVAL_S  = tostring(var.drift_interval_s)
    NCLAV_DRIFT_CONCURRENCY = tostring(var.drift_concurrency)
  }

  # The git source (core/nclav/gitsource): the API serves its routes, the worker fetches and
  # starts runs, the schedule function polls. Empty values mean "not set" to GitSettings.
  git_env = {
    NCLAV_GIT_URL              = var.git_url
    NCLAV_GIT_BRANCH           = var.git_branch
    NCLAV_GIT_PATH             = var.git_path
    NCLAV_GIT_POLL_S           = tostring(var.git_poll_s)
    NCLAV_GIT_PREVIEW_BRANCHES = tostring(var.git_preview_branches)
    NCLAV_GIT_PROVIDER         = var.git_provider
    NCLAV_GIT_API_URL          = var.git_api_url
  }

  # Secrets the functions generate on first use (functions_aws/secrets.py creates a missing
  # one, tagged), so they exist only once used: granted by name, the ARN of an existing secret
  # ending in the "-??????" suffix Secrets Manager appends, that of a missing one (a read
  # before the first write, CreateSecret) being the bare name.
  secret_arn     = "arn:${local.arn}:secretsmanager:${var.region}:${local.account}:secret:${var.name}/"
  webhook_secret = ["${local.secret_arn}git-webhook-secret", "${local.secret_arn}git-webhook-secret-??????"]
  git_token      = ["${local.secret_arn}git-token", "${local.secret_arn}git-token-??????"]
  notify_secret  = ["${local.secret_arn}notify-secret", "${local.secret_arn}notify-secret-??????"]
  # What reading, then generating or replacing, one of those secrets takes.
  secret_read  = ["secretsmanager:GetSecretValue", "secretsmanager:DescribeSecret"]
  secret_write = ["secretsmanager:PutSecretValue", "secretsmanager:CreateSecret", "secretsmanager:TagResource"]

  # Accounts nclav may close, move, tag or enter: those under the enclave OU (any depth).
  enclave_org_paths = ["*/${var.org_unit_id}/*"]
}

# -- state: one DynamoDB table (key design: functions_aws/dynamodb_store.py) --------------------

resource "aws_dynamodb_table" "state" {
  name         = "${var.name}-state"
  billing_mode = "PAY_PER_REQUEST"
  hash_key     = "pk"
  range_key    = "sk"

  attribute {
    name = "pk"
    type = "S"
  }
  attribute {
    name = "sk"
    type = "S"
  }
  attribute {
    name = "gsi1pk"
    type = "S"
  }
  attribute {
    name = "gsi1sk"
    type = "S"
  }
  attribute {
    name = "gsi2pk"
    type = "S"
  }
  attribute {
    name = "gsi2sk"
    type = "S"
  }
  attribute {
    name = "lease_pk"
    type = "S"
  }
  attribute {
    name = "lease_expires_at"
    type = "N"
  }
  attribute {
    name = "ready_pk"
    type = "S"
  }
  attribute {
    name = "ready_at"
    type = "N"
  }

  global_secondary_index {
    name            = "gsi1"
    hash_key        = "gsi1pk"
    range_key       = "gsi1sk"
    projection_type = "ALL"
  }
  global_secondary_index {
    name            = "gsi2"
    hash_key        = "gsi2pk"
    range_key       = "gsi2sk"
    projection_type = "ALL"
  }
  global_secondary_index {
    name            = "leases"
    hash_key        = "lease_pk"
    range_key       = "lease_expires_at"
    projection_type = "KEYS_ONLY"
  }
  # The sweeper's candidates: ready steps by when their message was sent or became due.
  global_secondary_index {
    name            = "ready"
    hash_key        = "ready_pk"
    range_key       = "ready_at"
    projection_type = "KEYS_ONLY"
  }

  # Runs, steps, events and IaC records carry ``expires_at`` (NCLAV_RETENTION_DAYS after they
  # were written); enclave and partition records never do, so they never expire.
  ttl {
    attribute_name = "expires_at"
    enabled        = true
  }

  point_in_time_recovery {
    enabled = true
  }
  server_side_encryption {
    enabled = true
  }
  deletion_protection_enabled = true
}

# -- blobs: bundles, IaC logs, every Terraform state version --------------------------------

resource "aws_s3_bucket" "blobs" {
  bucket = "${var.name}-blobs-${local.account}"
}

resource "aws_s3_bucket_versioning" "blobs" {
  bucket = aws_s3_bucket.blobs.id
  versioning_configuration {
    status = "Enabled"
  }
}

resource "aws_s3_bucket_server_side_encryption_configuration" "blobs" {
  bucket = aws_s3_bucket.blobs.id
  rule {
    apply_server_side_encryption_by_default {
      sse_algorithm = "aws:kms"
    }
    bucket_key_enabled = true
  }
}

resource "aws_s3_bucket_public_access_block" "blobs" {
  bucket                  = aws_s3_bucket.blobs.id
  block_public_acls       = true
  block_public_policy     = true
  ignore_public_acls      = true
  restrict_public_buckets = true
}

# Noncurrent versions: IaC logs after a day, bundles after var.bundle_version_days (bundles
# are content-addressed: a noncurrent one was deleted or replaced); Terraform state versions
# (tfstate/) are kept. No object tags anywhere: tagging would need s3:PutObjectTagging.
resource "aws_s3_bucket_lifecycle_configuration" "blobs" {
  bucket     = aws_s3_bucket.blobs.id
  depends_on = [aws_s3_bucket_versioning.blobs]

  rule {
    id     = "nclav-noncurrent-iac-logs"
    status = "Enabled"
    filter {
      prefix = "iac-logs/"
    }
    noncurrent_version_expiration {
      noncurrent_days = 1
    }
  }

  rule {
    id     = "nclav-noncurrent-bundles"
    status = "Enabled"
    filter {
      prefix = "bundles/"
    }
    noncurrent_version_expiration {
      noncurrent_days = var.bundle_version_days
    }
  }

  # Signed bundle uploads (POST /bundles/uploads) that were never completed.
  rule {
    id     = "nclav-abandoned-uploads"
    status = "Enabled"
    filter {
      prefix = "uploads/"
    }
    expiration {
      days = 1
    }
  }

  rule {
    id     = "nclav-housekeeping"
    status = "Enabled"
    filter {}
    expiration {
      expired_object_delete_marker = true
    }
    abort_incomplete_multipart_upload {
      days_after_initiation = 7
    }
  }
}

# TLS only: any request over plain HTTP is refused, whoever makes it.
data "aws_iam_policy_document" "blobs_tls" {
  statement {
    sid       = "TlsOnly"
    effect    = "Deny"
    actions   = ["s3:*"]
    resources = [aws_s3_bucket.blobs.arn, "${aws_s3_bucket.blobs.arn}/*"]
    principals {
      type        = "*"
      identifiers = ["*"]
    }
    condition {
      test     = "Bool"
      variable = "aws:SecureTransport"
      values   = ["false"]
    }
  }
}

resource "aws_s3_bucket_policy" "blobs" {
  bucket     = aws_s3_bucket.blobs.id
  policy     = data.aws_iam_policy_document.blobs_tls.json
  depends_on = [aws_s3_bucket_public_access_block.blobs]
}

resource "aws_s3_bucket_ownership_controls" "blobs" {
  bucket = aws_s3_bucket.blobs.id
  rule {
    object_ownership = "BucketOwnerEnforced"
  }
}

# -- queues: driver steps and terraform steps, each with a dead-letter queue ------------------

resource "aws_sqs_queue" "steps_dlq" {
  name                      = "${var.name}-steps-dlq"
  message_retention_seconds = 1209600
  sqs_managed_sse_enabled   = true
}

resource "aws_sqs_queue" "steps" {
  name                       = "${var.name}-steps"
  visibility_timeout_seconds = 360 # at least 6 x the worker's timeout, as Lambda advises
  sqs_managed_sse_enabled    = true
  redrive_policy = jsonencode({
    deadLetterTargetArn = aws_sqs_queue.steps_dlq.arn
    maxReceiveCount     = var.max_receives
  })
}

resource "aws_sqs_queue" "iac_dlq" {
  name                      = "${var.name}-iac-dlq"
  message_retention_seconds = 1209600
  sqs_managed_sse_enabled   = true
}

resource "aws_sqs_queue" "iac" {
  name = "${var.name}-iac"
  # At least 6 x the function timeout (900 s), as Lambda advises for SQS event sources.
  visibility_timeout_seconds = 5400
  sqs_managed_sse_enabled    = true
  redrive_policy = jsonencode({
    deadLetterTargetArn = aws_sqs_queue.iac_dlq.arn
    maxReceiveCount     = var.max_receives
  })
}

# A message in a dead-letter queue is a step nclav gave up on: alarm on the first one.
resource "aws_cloudwatch_metric_alarm" "dlq" {
  for_each = {
    steps = aws_sqs_queue.steps_dlq.name
    iac   = aws_sqs_queue.iac_dlq.name
  }
  alarm_name          = "${var.name}-${each.key}-dlq"
  alarm_description   = "nclav ${each.key} steps reached the dead-letter queue ${each.value}"
  namespace           = "AWS/SQS"
  metric_name         = "ApproximateNumberOfMessagesVisible"
  dimensions          = { QueueName = each.value }
  statistic           = "Maximum"
  period              = 300
  evaluation_periods  = 1
  threshold           = 0
  comparison_operator = "GreaterThanThreshold"
  treat_missing_data  = "notBreaching"
  alarm_actions       = var.alarm_actions
}

# -- the API token ------------------------------------------------------------------------------

# No value here: the API function generates the token on its first start and writes it
# (functions_aws/api_token.py), so it never sits in the operator's Terraform state.
resource "aws_secretsmanager_secret" "token" {
  name                    = "${var.name}/api-token"
  recovery_window_in_days = 7
}

# -- identities: one role per function, each with only what it uses ---------------------------

data "aws_iam_policy_document" "lambda_trust" {
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["lambda.amazonaws.com"]
    }
  }
}

resource "aws_iam_role" "fn" {
  for_each           = toset(["api", "worker", "iac", "schedule"])
  name               = "${var.name}-${each.key}"
  assume_role_policy = data.aws_iam_policy_document.lambda_trust.json
}

# Each function writes its own log group only (which this root creates, so no CreateLogGroup:
# narrower than AWSLambdaBasicExecutionRole).
resource "aws_iam_role_policy" "logs" {
  for_each = aws_iam_role.fn
  name     = "nclav-logs"
  role     = each.value.id
  policy = jsonencode({
    Version = "2012-10-17"
    Statement = [{
      Sid      = "OwnLogGroup"
      Effect   = "Allow"
      Action   = ["logs:CreateLogStream", "logs:PutLogEvents"]
      Resource = "${aws_cloudwatch_log_group.fn[each.key].arn}:*"
    }]
  })
}

data "aws_iam_policy_document" "core" {
  statement {
    sid = "State"
    actions = [
      "dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem", "dynamodb:DeleteItem",
      "dynamodb:Query", "dynamodb:BatchGetItem", "dynamodb:BatchWriteItem",
      "dynamodb:ConditionCheckItem",
    ]
    resources = [aws_dynamodb_table.state.arn, "${aws_dynamodb_table.state.arn}/index/*"]
  }
  statement {
    sid       = "Blobs"
    actions   = ["s3:GetObject", "s3:PutObject", "s3:DeleteObject"]
    resources = ["${aws_s3_bucket.blobs.arn}/*"]
  }
  statement {
    sid       = "BlobListing"
    actions   = ["s3:ListBucket"]
    resources = [aws_s3_bucket.blobs.arn]
  }
  statement {
    sid       = "Enqueue"
    actions   = ["sqs:SendMessage", "sqs:GetQueueAttributes"]
    resources = [aws_sqs_queue.steps.arn, aws_sqs_queue.iac.arn]
  }
}

# Only the API reads the token (and writes its first value, see the secret above).
data "aws_iam_policy_document" "token" {
  statement {
    sid = "Token"
    actions = [
      "secretsmanager:GetSecretValue", "secretsmanager:PutSecretValue",
      "secretsmanager:DescribeSecret",
    ]
    resources = [aws_secretsmanager_secret.token.arn]
  }
}

# GET /status counts the messages waiting in each dead-letter queue (functions_aws/sqs_queue.py).
data "aws_iam_policy_document" "dead_letters" {
  statement {
    sid       = "DeadLetterCounts"
    actions   = ["sqs:GetQueueAttributes"]
    resources = [aws_sqs_queue.steps_dlq.arn, aws_sqs_queue.iac_dlq.arn]
  }
}

# The git source's secrets. Whichever of the API, worker and schedule functions builds the
# source first generates the webhook secret; the API also stores the token (PUT /source),
# the others only read it.
data "aws_iam_policy_document" "git_api" {
  statement {
    sid       = "GitSecrets"
    actions   = concat(local.secret_read, local.secret_write)
    resources = concat(local.webhook_secret, local.git_token)
  }
}

data "aws_iam_policy_document" "git_reader" {
  statement {
    sid       = "GitWebhookSecret"
    actions   = concat(local.secret_read, local.secret_write)
    resources = local.webhook_secret
  }
  statement {
    sid       = "GitToken"
    actions   = local.secret_read
    resources = local.git_token
  }
}

# Every function installs the notifier when NCLAV_NOTIFY_URL is set: the first generates
# the signing secret.
data "aws_iam_policy_document" "notify" {
  statement {
    sid       = "NotifySecret"
    actions   = concat(local.secret_read, local.secret_write)
    resources = local.notify_secret
  }
}

data "aws_iam_policy_document" "consume_steps" {
  statement {
    actions   = ["sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:ChangeMessageVisibility"]
    resources = [aws_sqs_queue.steps.arn]
  }
}

data "aws_iam_policy_document" "consume_iac" {
  statement {
    actions   = ["sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:ChangeMessageVisibility"]
    resources = [aws_sqs_queue.iac.arn]
  }
}

# The step worker vends accounts and wires networks: Organizations in the management account,
# everything else through the cross-account role of each enclave account. Without
# var.management_role_arn the function roles make these calls themselves; with it (nclav
# deployed outside the management account) they only assume that role, which the operator
# creates in the management account with the "vending" statements below.
data "aws_iam_policy_document" "vending" {
  statement {
    sid = "OrganizationsRead"
    actions = [
      "organizations:DescribeCreateAccountStatus", "organizations:ListCreateAccountStatus",
      "organizations:ListParents", "organizations:ListAccounts",
      "organizations:ListAccountsForParent", "organizations:DescribeAccount",
    ]
    resources = ["*"] # read-only calls with no resource-level scoping
  }
  statement {
    sid       = "CreateAccount"
    actions   = ["organizations:CreateAccount"]
    resources = ["*"]
  }
  # CreateAccount with tags needs TagResource: only nclav's own tags.
  statement {
    sid       = "TagNewAccounts"
    actions   = ["organizations:TagResource"]
    resources = ["*"]
    condition {
      test     = "StringEquals"
      variable = "aws:RequestTag/nclav-managed"
      values   = ["true"]
    }
    condition {
      test     = "ForAllValues:StringEquals"
      variable = "aws:TagKeys"
      values   = ["nclav-managed", "nclav-enclave"]
    }
  }
  # A new account starts at the root: only accounts nclav created (its tag) may be moved.
  statement {
    sid       = "MoveOwnAccounts"
    actions   = ["organizations:MoveAccount"]
    resources = ["*"]
    condition {
      test     = "StringEquals"
      variable = "aws:ResourceTag/nclav-managed"
      values   = ["true"]
    }
  }
  statement {
    sid       = "CloseEnclaveAccounts"
    actions   = ["organizations:CloseAccount"]
    resources = ["*"]
    condition {
      test     = "ForAnyValue:StringLike"
      variable = "aws:ResourceOrgPaths"
      values   = local.enclave_org_paths
    }
    condition {
      test     = "StringEquals"
      variable = "aws:ResourceTag/nclav-managed"
      values   = ["true"]
    }
  }
  statement {
    sid       = "EnclaveAccounts"
    actions   = ["sts:AssumeRole", "sts:TagSession"]
    resources = ["arn:${local.arn}:iam::*:role/${var.cross_account_role}"]
    condition {
      test     = "ForAnyValue:StringLike"
      variable = "aws:ResourceOrgPaths"
      values   = local.enclave_org_paths
    }
  }
}

# The terraform function only enters enclave accounts (never Organizations): the account id
# comes from the enclave's applied handle in the step.
data "aws_iam_policy_document" "assume_enclaves" {
  statement {
    sid       = "EnclaveAccounts"
    actions   = ["sts:AssumeRole", "sts:TagSession"]
    resources = ["arn:${local.arn}:iam::*:role/${var.cross_account_role}"]
    condition {
      test     = "ForAnyValue:StringLike"
      variable = "aws:ResourceOrgPaths"
      values   = local.enclave_org_paths
    }
  }
}

# Outside the management account: the worker and the terraform function start every chain
# by assuming the operator's management role (NCLAV_AWS_ROLE_ARN).
data "aws_iam_policy_document" "assume_management" {
  statement {
    sid       = "ManagementRole"
    actions   = ["sts:AssumeRole"]
    resources = [var.management_role_arn == "" ? "arn:${local.arn}:iam::${local.account}:role/none" : var.management_role_arn]
  }
}

resource "aws_iam_role_policy" "core" {
  for_each = aws_iam_role.fn
  name     = "nclav-core"
  role     = each.value.id
  policy   = data.aws_iam_policy_document.core.json
}

resource "aws_iam_role_policy" "token" {
  name   = "nclav-token"
  role   = aws_iam_role.fn["api"].id
  policy = data.aws_iam_policy_document.token.json
}

resource "aws_iam_role_policy" "dead_letters" {
  name   = "nclav-dead-letters"
  role   = aws_iam_role.fn["api"].id
  policy = data.aws_iam_policy_document.dead_letters.json
}

resource "aws_iam_role_policy" "git" {
  for_each = toset(["api", "worker", "schedule"])
  name     = "nclav-git"
  role     = aws_iam_role.fn[each.key].id
  policy   = each.key == "api" ? data.aws_iam_policy_document.git_api.json : data.aws_iam_policy_document.git_reader.json
}

resource "aws_iam_role_policy" "notify" {
  for_each = aws_iam_role.fn
  name     = "nclav-notify"
  role     = each.value.id
  policy   = data.aws_iam_policy_document.notify.json
}

resource "aws_iam_role_policy" "worker" {
  name   = "nclav-worker"
  role   = aws_iam_role.fn["worker"].id
  policy = data.aws_iam_policy_document.consume_steps.json
}

resource "aws_iam_role_policy" "worker_vending" {
  count  = var.management_role_arn == "" ? 1 : 0
  name   = "nclav-vending"
  role   = aws_iam_role.fn["worker"].id
  policy = data.aws_iam_policy_document.vending.json
}

resource "aws_iam_role_policy" "iac" {
  name   = "nclav-iac"
  role   = aws_iam_role.fn["iac"].id
  policy = data.aws_iam_policy_document.consume_iac.json
}

resource "aws_iam_role_policy" "iac_assume" {
  count  = var.management_role_arn == "" ? 1 : 0
  name   = "nclav-enclaves"
  role   = aws_iam_role.fn["iac"].id
  policy = data.aws_iam_policy_document.assume_enclaves.json
}

resource "aws_iam_role_policy" "management" {
  for_each = var.management_role_arn == "" ? toset([]) : toset(["worker", "iac"])
  name     = "nclav-management"
  role     = aws_iam_role.fn[each.key].id
  policy   = data.aws_iam_policy_document.assume_management.json
}

# -- functions ------------------------------------------------------------------------------

resource "aws_cloudwatch_log_group" "fn" {
  for_each          = aws_iam_role.fn
  name              = "/aws/lambda/${var.name}-${each.key}"
  retention_in_days = var.log_retention_days
}

resource "aws_lambda_function" "api" {
  function_name    = "${var.name}-api"
  role             = aws_iam_role.fn["api"].arn
  runtime          = var.runtime
  architectures    = [var.architecture]
  handler          = "functions_aws.api.handler"
  filename         = var.lambda_zip
  source_code_hash = filebase64sha256(var.lambda_zip)
  memory_size      = 1024
  timeout          = 60
  # Kept for the API whatever the workers do: a burst of steps cannot starve it.
  reserved_concurrent_executions = var.api_reserved_concurrency
  environment {
    variables = merge(local.common_env, local.git_env)
  }
  depends_on = [aws_cloudwatch_log_group.fn]
}

# The API authenticates every request with nclav's own bearer token (constant-time compare).
resource "aws_lambda_function_url" "api" {
  function_name      = aws_lambda_function.api.function_name
  authorization_type = "NONE"
}

# Since October 2025 a NONE-auth function URL needs both permissions granted to everyone,
# or it answers 403 to every request. (Provider 5.x cannot add the InvokedViaFunctionUrl
# condition to the second, so anyone may also invoke the function directly: such a request
# meets the same bearer-token check as one through the URL.)
resource "aws_lambda_permission" "url" {
  statement_id           = "function-url-public"
  action                 = "lambda:InvokeFunctionUrl"
  function_name          = aws_lambda_function.api.function_name
  principal              = "*"
  function_url_auth_type = "NONE"
}

resource "aws_lambda_permission" "url_invoke" {
  statement_id  = "function-url-invoke"
  action        = "lambda:InvokeFunction"
  function_name = aws_lambda_function.api.function_name
  principal     = "*"
}

resource "aws_lambda_function" "worker" {
  function_name    = "${var.name}-worker"
  role             = aws_iam_role.fn["worker"].arn
  runtime          = var.runtime
  architectures    = [var.architecture]
  handler          = "functions_aws.worker.handler"
  filename         = var.lambda_zip
  source_code_hash = filebase64sha256(var.lambda_zip)
  memory_size      = 1024
  timeout          = 60
  environment {
    variables = merge(local.common_env, local.git_env)
  }
  depends_on = [aws_cloudwatch_log_group.fn]
}

resource "aws_lambda_function" "iac" {
  function_name = "${var.name}-iac"
  role          = aws_iam_role.fn["iac"].arn
  package_type  = "Image"
  image_uri     = var.iac_image_uri
  memory_size   = 2048
  timeout       = 900
  architectures = [var.iac_architecture]
  ephemeral_storage {
    size = 4096 # terraform working directories live in /tmp
  }
  # Its state backend is a loopback server inside the function: no API URL, no token.
  environment {
    variables = local.common_env
  }
  depends_on = [aws_cloudwatch_log_group.fn]
}

resource "aws_lambda_function" "schedule" {
  function_name    = "${var.name}-schedule"
  role             = aws_iam_role.fn["schedule"].arn
  runtime          = var.runtime
  architectures    = [var.architecture]
  handler          = "functions_aws.schedule.handler"
  filename         = var.lambda_zip
  source_code_hash = filebase64sha256(var.lambda_zip)
  memory_size      = 512
  timeout          = 60
  environment {
    variables = merge(local.common_env, local.git_env)
  }
  depends_on = [aws_cloudwatch_log_group.fn]
}

resource "aws_lambda_event_source_mapping" "steps" {
  event_source_arn                   = aws_sqs_queue.steps.arn
  function_name                      = aws_lambda_function.worker.arn
  batch_size                         = 10
  maximum_batching_window_in_seconds = 0
  function_response_types            = ["ReportBatchItemFailures"]
  scaling_config {
    maximum_concurrency = var.steps_max_concurrency
  }
}

resource "aws_lambda_event_source_mapping" "iac" {
  event_source_arn        = aws_sqs_queue.iac.arn
  function_name           = aws_lambda_function.iac.arn
  batch_size              = 1 # one terraform per invocation: the heartbeat extends one message
  function_response_types = ["ReportBatchItemFailures"]
  scaling_config {
    maximum_concurrency = var.iac_max_concurrency
  }
}

# -- the sweeper ------------------------------------------------------------------------------

resource "aws_cloudwatch_event_rule" "sweep" {
  name                = "${var.name}-sweep"
  schedule_expression = "rate(1 minute)"
}

resource "aws_cloudwatch_event_target" "sweep" {
  rule = aws_cloudwatch_event_rule.sweep.name
  arn  = aws_lambda_function.schedule.arn
}

resource "aws_lambda_permission" "sweep" {
  statement_id  = "events"
  action        = "lambda:InvokeFunction"
  function_name = aws_lambda_function.schedule.function_name
  principal     = "events.amazonaws.com"
  source_arn    = aws_cloudwatch_event_rule.sweep.arn
}

# -- the terraform worker's image repository --------------------------------------------------

resource "aws_ecr_repository" "iac" {
  name                 = "${var.name}-iac"
  image_tag_mutability = "IMMUTABLE"
  image_scanning_configuration {
    scan_on_push = true
  }
  encryption_configuration {
    encryption_type = "KMS"
  }
}
