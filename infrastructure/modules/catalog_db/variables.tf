variable "environment" {
  type = string
}

variable "vpc_id" {
  type = string
}

variable "subnet_ids" {
  description = "Private subnets of the database"
  type        = list(string)
}

variable "client_security_group_ids" {
  description = "Security groups of the Kubernetes nodes that connect"
  type        = list(string)
}

variable "kms_key_arn" {
  type = string
}

variable "instance_class" {
  type    = string
  default = "db.t4g.medium"
}

variable "allocated_storage_gb" {
  type    = number
  default = 50
}

variable "multi_az" {
  type    = bool
  default = true
}

variable "backup_retention_days" {
  description = "Point-in-time restore window of the catalog (docs/operations.md)"
  type        = number
  default     = 14
}
