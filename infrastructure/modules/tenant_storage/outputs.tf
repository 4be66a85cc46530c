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

output "device_role_aliases" {
  description = "tenant -> the role alias its devices name at the IoT credentials provider"
  value       = { for t, a in aws_iot_role_alias.device : t => a.alias }
}

output "device_iot_policies" {
  description = "tenant -> the IoT policy enrollment attaches to its device certificates"
  value       = { for t, p in aws_iot_policy.device : t => p.name }
}
