output "iothub_hostname" {
  value = azurerm_iothub.fleet.hostname
}

output "registry_login_server" {
  value = azurerm_container_registry.images.login_server
}

output "artifacts_container" {
  value = "${azurerm_storage_account.artifacts.primary_blob_endpoint}${azurerm_storage_container.artifacts.name}"
}
