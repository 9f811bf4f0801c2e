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

    NCLAV_AWS_ORG_UNIT_ID        = var.org_unit_id
    NCLAV_AWS_EMAIL_DOMAIN       = var.email_domain
    NCLAV_AWS_ACCOUNT_PREFIX     = var.account_prefix
    NCLAV_AWS_CROSS_ACCOUNT_ROLE = var.cross_account_role
    NCLAV_AWS_DEFAULT_REGION     = var.region
  }
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

# Superseded versions of IaC log segments (rewritten as a log grows; see
# functions_aws/s3_blobs.py) expire after a day; Terraform state versions are kept.
resource "aws_s3_bucket_lifecycle_configuration" "blobs" {
  bucket     = aws_s3_bucket.blobs.id
  depends_on = [aws_s3_bucket_versioning.blobs]

  rule {
    id     = "nclav-log-segment-versions"
    status = "Enabled"
    filter {
      tag {
        key   = "nclav-segment"
        value = "1"
      }
    }
    noncurrent_version_expiration {
      noncurrent_days = 1
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
  # The terraform worker extends its message's visibility while terraform runs.
  visibility_timeout_seconds = 960
  sqs_managed_sse_enabled    = true
  redrive_policy = jsonencode({
    deadLetterTargetArn = aws_sqs_queue.iac_dlq.arn
    maxReceiveCount     = var.max_receives
  })
}

# -- the API token ------------------------------------------------------------------------------

resource "random_id" "token" {
  byte_length = 32
}

resource "aws_secretsmanager_secret" "token" {
  name                    = "${var.name}/api-token"
  recovery_window_in_days = 7
}

resource "aws_secretsmanager_secret_version" "token" {
  secret_id     = aws_secretsmanager_secret.token.id
  secret_string = random_id.token.hex
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

resource "aws_iam_role_policy_attachment" "logs" {
  for_each   = aws_iam_role.fn
  role       = each.value.name
  policy_arn = "arn:${local.arn}:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole"
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
  statement {
    sid       = "Token"
    actions   = ["secretsmanager:GetSecretValue"]
    resources = [aws_secretsmanager_secret.token.arn]
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
# everything else through the cross-account role of each enclave account.
data "aws_iam_policy_document" "vending" {
  statement {
    sid = "Organizations"
    actions = [
      "organizations:CreateAccount", "organizations:DescribeCreateAccountStatus",
      "organizations:MoveAccount", "organizations:ListParents", "organizations:ListAccounts",
      "organizations:ListAccountsForParent", "organizations:DescribeAccount",
      "organizations:CloseAccount", "organizations:TagResource",
    ]
    resources = ["*"] # Organizations has no resource-level scoping for these calls
  }
  statement {
    sid       = "EnclaveAccounts"
    actions   = ["sts:AssumeRole", "sts:TagSession"]
    resources = ["arn:${local.arn}:iam::*:role/${var.cross_account_role}"]
  }
}

data "aws_iam_policy_document" "assume_enclaves" {
  statement {
    actions   = ["sts:AssumeRole", "sts:TagSession"]
    resources = ["arn:${local.arn}:iam::*:role/${var.cross_account_role}"]
  }
}

resource "aws_iam_role_policy" "core" {
  for_each = aws_iam_role.fn
  name     = "nclav-core"
  role     = each.value.id
  policy   = data.aws_iam_policy_document.core.json
}

resource "aws_iam_role_policy" "worker" {
  name   = "nclav-worker"
  role   = aws_iam_role.fn["worker"].id
  policy = data.aws_iam_policy_document.consume_steps.json
}

resource "aws_iam_role_policy" "worker_vending" {
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
  name   = "nclav-enclaves"
  role   = aws_iam_role.fn["iac"].id
  policy = data.aws_iam_policy_document.assume_enclaves.json
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
  runtime          = "python3.11"
  handler          = "functions_aws.api.handler"
  filename         = var.lambda_zip
  source_code_hash = filebase64sha256(var.lambda_zip)
  memory_size      = 1024
  timeout          = 60
  environment {
    variables = local.common_env
  }
  depends_on = [aws_cloudwatch_log_group.fn]
}

# The API authenticates every request with nclav's own bearer token (constant-time compare).
resource "aws_lambda_function_url" "api" {
  function_name      = aws_lambda_function.api.function_name
  authorization_type = "NONE"
}

resource "aws_lambda_function" "worker" {
  function_name    = "${var.name}-worker"
  role             = aws_iam_role.fn["worker"].arn
  runtime          = "python3.11"
  handler          = "functions_aws.worker.handler"
  filename         = var.lambda_zip
  source_code_hash = filebase64sha256(var.lambda_zip)
  memory_size      = 1024
  timeout          = 60
  environment {
    variables = merge(local.common_env, { NCLAV_API_URL = aws_lambda_function_url.api.function_url })
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
  ephemeral_storage {
    size = 4096 # terraform working directories live in /tmp
  }
  environment {
    variables = merge(local.common_env, { NCLAV_API_URL = aws_lambda_function_url.api.function_url })
  }
  depends_on = [aws_cloudwatch_log_group.fn]
}

resource "aws_lambda_function" "schedule" {
  function_name    = "${var.name}-schedule"
  role             = aws_iam_role.fn["schedule"].arn
  runtime          = "python3.11"
  handler          = "functions_aws.schedule.handler"
  filename         = var.lambda_zip
  source_code_hash = filebase64sha256(var.lambda_zip)
  memory_size      = 512
  timeout          = 60
  environment {
    variables = local.common_env
  }
  depends_on = [aws_cloudwatch_log_group.fn]
}

resource "aws_lambda_event_source_mapping" "steps" {
  event_source_arn                   = aws_sqs_queue.steps.arn
  function_name                      = aws_lambda_function.worker.arn
  batch_size                         = 10
  maximum_batching_window_in_seconds = 0
  function_response_types            = ["ReportBatchItemFailures"]
}

resource "aws_lambda_event_source_mapping" "iac" {
  event_source_arn        = aws_sqs_queue.iac.arn
  function_name           = aws_lambda_function.iac.arn
  batch_size              = 1 # one terraform per invocation: the heartbeat extends one message
  function_response_types = ["ReportBatchItemFailures"]
  scaling_config {
    maximum_concurrency = 20
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
