# The prod environment: AWS (object store, tenant identities, Greengrass IoT, catalog database,
# registry) and Azure (IoT Hub, storage, registry). Tenants and their policies come from
# tenant-storage.json, written by scripts/export-tenant-storage (never edited by hand).
# State in S3 with locking; plan and apply from CI (ci-cd/) or by an operator.

terraform {
  required_version = ">= 1.6"
  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = "~> 5.80"
    }
    azurerm = {
      source  = "hashicorp/azurerm"
      version = "~> 4.10"
    }
  }
  backend "s3" {
    bucket       = "edgeplat-terraform-state"
    key          = "prod/terraform.tfstate"
    region       = "eu-west-1"
    encrypt      = true
    use_lockfile = true
  }
}

locals {
  environment    = "prod"
  region         = "eu-west-1"
  tenant_storage = jsondecode(file("${path.module}/tenant-storage.json"))
}

provider "aws" {
  region = local.region
  default_tags {
    tags = {
      project     = "edgeplat"
      environment = local.environment
    }
  }
}

provider "azurerm" {
  features {}
}

module "aws" {
  source                          = "../../aws"
  environment                     = local.environment
  tenant_storage                  = local.tenant_storage
  vpc_id                          = var.vpc_id
  database_subnet_ids             = var.database_subnet_ids
  cluster_node_security_group_ids = var.cluster_node_security_group_ids
  database_instance_class         = "db.r6g.large"
}

module "azure" {
  source       = "../../azure"
  environment  = local.environment
  iothub_units = 2
}

variable "vpc_id" {
  description = "VPC of the Kubernetes cluster"
  type        = string
}

variable "database_subnet_ids" {
  type = list(string)
}

variable "cluster_node_security_group_ids" {
  type = list(string)
}

output "aws" {
  value = {
    objects_url          = module.aws.objects_url
    lake_data            = module.aws.lake_data
    catalog_endpoint     = module.aws.catalog_endpoint
    tenant_prefixes      = module.aws.tenant_prefixes
    token_exchange_alias = module.aws.token_exchange_role_alias
  }
}

output "azure" {
  value = {
    iothub_hostname = module.azure.iothub_hostname
    registry        = module.azure.registry_login_server
  }
}
