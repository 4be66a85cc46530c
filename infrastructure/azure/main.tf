# The platform's Azure side for one environment: the IoT Hub of the IoT Edge fleet (the
# azure_iot_edge backend deploys through it; its service connection string goes into Vault as
# EDGEPLAT_IOTHUB_CONNECTION_STRING, never into Terraform output), a storage account for the
# IoT Edge devices' module artifacts, and the container registry the IoT Edge agents pull from.

resource "azurerm_resource_group" "platform" {
  name     = "edgeplat-${var.environment}"
  location = var.location
}

resource "azurerm_iothub" "fleet" {
  # checkov:skip=CKV_AZURE_108: the devices connect over the internet; they authenticate with their own X.509 or SAS identities
  name                          = "edgeplat-${var.environment}-hub"
  resource_group_name           = azurerm_resource_group.platform.name
  location                      = azurerm_resource_group.platform.location
  local_authentication_enabled  = true
  public_network_access_enabled = true
  min_tls_version               = "1.2"

  sku {
    name     = var.iothub_sku
    capacity = var.iothub_units
  }
}

resource "azurerm_storage_account" "artifacts" {
  # checkov:skip=CKV2_AZURE_33: the private endpoint belongs to the network of the deployment, not to this module
  # checkov:skip=CKV2_AZURE_1: Microsoft-managed keys with infrastructure (double) encryption
  name                            = "edgeplat${var.environment}artifacts"
  resource_group_name             = azurerm_resource_group.platform.name
  location                        = azurerm_resource_group.platform.location
  account_tier                    = "Standard"
  account_replication_type        = "GRS"
  min_tls_version                 = "TLS1_2"
  https_traffic_only_enabled      = true
  allow_nested_items_to_be_public = false
  shared_access_key_enabled       = false
  public_network_access_enabled   = false
  infrastructure_encryption_enabled = true

  blob_properties {
    versioning_enabled = true
    delete_retention_policy {
      days = 35
    }
    container_delete_retention_policy {
      days = 35
    }
  }

  queue_properties {
    logging {
      delete                = true
      read                  = true
      write                 = true
      version               = "1.0"
      retention_policy_days = 30
    }
  }

  sas_policy {
    expiration_period = "01.00:00:00"
  }
}

resource "azurerm_storage_container" "artifacts" {
  # checkov:skip=CKV2_AZURE_21: blob read logging goes through the account's diagnostic settings of the deployment
  name                  = "artifacts"
  storage_account_id    = azurerm_storage_account.artifacts.id
  container_access_type = "private"
}

resource "azurerm_container_registry" "images" {
  # checkov:skip=CKV_AZURE_165: one region per environment; geo-replication follows a multi-region fleet
  name                          = "edgeplat${var.environment}registry"
  resource_group_name           = azurerm_resource_group.platform.name
  location                      = azurerm_resource_group.platform.location
  sku                           = "Premium"
  admin_enabled                 = false
  public_network_access_enabled = false
  zone_redundancy_enabled       = true
  quarantine_policy_enabled     = true
  data_endpoint_enabled         = true

  retention_policy {
    days    = 30
    enabled = true
  }
  trust_policy {
    enabled = true
  }
}
