variable "environment" {
  description = "dev or prod"
  type        = string
}

variable "tenant_storage" {
  description = "jsondecode of environments/<env>/tenant-storage.json (scripts/export-tenant-storage)"
  type        = any
}

variable "vpc_id" {
  type = string
}

variable "database_subnet_ids" {
  type = list(string)
}

variable "cluster_node_security_group_ids" {
  type = list(string)
}

variable "database_instance_class" {
  type    = string
  default = "db.t4g.medium"
}
