output "objects_url" {
  description = "EDGEPLAT_OBJECTS_URL"
  value       = var.tenant_storage.store_url
}

output "arrival_queue_url" {
  description = "EDGEPLAT_ARRIVAL_QUEUE_URL"
  value       = module.arrival_queue.queue_url
}

output "arrival_dead_letter_url" {
  description = "EDGEPLAT_ARRIVAL_DLQ_URL"
  value       = module.arrival_queue.dead_letter_url
}

output "lake_data" {
  description = "EDGEPLAT_LAKE_DATA"
  value       = "s3://${module.tenant_storage.lake_bucket}/edgeplat/"
}

output "catalog_endpoint" {
  value = module.catalog_db.endpoint
}

output "catalog_master_secret_arn" {
  value = module.catalog_db.master_user_secret_arn
}

output "tenant_prefixes" {
  value = module.tenant_storage.tenant_prefixes
}

output "token_exchange_role_alias" {
  value = module.iot_fleet.token_exchange_role_alias
}

output "code_location_repository" {
  value = aws_ecr_repository.code_location.repository_url
}

output "device_role_aliases" {
  description = "tenant -> role alias for object_store.iot.role_alias in device.toml (per-device write scopes)"
  value       = module.tenant_storage.device_role_aliases
}
