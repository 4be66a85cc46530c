# The platform on AWS for one environment: the object store with per-tenant identities, the
# Greengrass fleet's IoT resources, the catalog database, and the container registry.

module "tenant_storage" {
  source         = "../modules/tenant_storage"
  environment    = var.environment
  tenant_storage = var.tenant_storage
}

module "iot_fleet" {
  source           = "../modules/iot_fleet"
  environment      = var.environment
  tenants          = keys(var.tenant_storage.tenants)
  artifacts_bucket = module.tenant_storage.fleet_bucket
}

# New batch objects notify the arrival sensor through SQS (modules/arrival_queue).
module "arrival_queue" {
  source      = "../modules/arrival_queue"
  environment = var.environment
  bucket      = module.tenant_storage.fleet_bucket
  key_prefix  = "${var.tenant_storage.base_prefix}/tenant="
}

module "catalog_db" {
  source                    = "../modules/catalog_db"
  environment               = var.environment
  vpc_id                    = var.vpc_id
  subnet_ids                = var.database_subnet_ids
  client_security_group_ids = var.cluster_node_security_group_ids
  kms_key_arn               = module.tenant_storage.kms_key_arn
  multi_az                  = var.environment == "prod"
  instance_class            = var.database_instance_class
}

resource "aws_ecr_repository" "code_location" {
  name                 = "edgeplat/code-location"
  image_tag_mutability = "IMMUTABLE"
  image_scanning_configuration {
    scan_on_push = true
  }
  encryption_configuration {
    encryption_type = "KMS"
    kms_key         = module.tenant_storage.kms_key_arn
  }
}

resource "aws_ecr_repository" "edge_agent" {
  name                 = "edgeplat/edge-agent"
  image_tag_mutability = "IMMUTABLE"
  image_scanning_configuration {
    scan_on_push = true
  }
  encryption_configuration {
    encryption_type = "KMS"
    kms_key         = module.tenant_storage.kms_key_arn
  }
}
