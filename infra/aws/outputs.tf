output "api_url" {
  description = "Point the CLI here: export NCLAV_URL=<api_url>."
  value       = aws_lambda_function_url.api.function_url
}

output "token_secret_arn" {
  description = "The API generates the token on its first request: curl <api_url>/health once, then export NCLAV_TOKEN=$(aws secretsmanager get-secret-value --secret-id <arn> --query SecretString --output text)"
  value       = aws_secretsmanager_secret.token.arn
}

output "iac_repository_url" {
  description = "Push the terraform worker image (functions_aws/Dockerfile) here."
  value       = aws_ecr_repository.iac.repository_url
}

output "table_name" {
  value = aws_dynamodb_table.state.name
}

output "bucket" {
  value = aws_s3_bucket.blobs.bucket
}
