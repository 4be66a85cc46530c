output "fleet_bucket" {
  value = aws_s3_bucket.fleet.id
}

output "lake_bucket" {
  value = aws_s3_bucket.lake.id
}

output "kms_key_arn" {
  value = aws_kms_key.objects.arn
}

output "tenant_prefixes" {
  description = "tenant -> s3:// URL of its prefix"
  value       = { for t, v in var.tenant_storage.tenants : t => "s3://${aws_s3_bucket.fleet.id}/${v.prefix}" }
}

output "tenant_users" {
  value = { for t, u in aws_iam_user.tenant : t => u.arn }
}
