output "endpoint" {
  value = aws_db_instance.catalog.address
}

output "master_user_secret_arn" {
  description = "Secrets Manager secret RDS keeps the master password in (copy into Vault, docs/operations.md)"
  value       = aws_db_instance.catalog.master_user_secret[0].secret_arn
}
