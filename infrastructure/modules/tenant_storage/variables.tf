variable "environment" {
  description = "dev or prod: part of every name"
  type        = string
}

variable "tenant_storage" {
  description = "The document scripts/export-tenant-storage writes (bucket, naming rules, per-tenant user and policy)"
  type        = any
}

variable "noncurrent_version_days" {
  description = "How long an overwritten or deleted object version stays restorable"
  type        = number
  default     = 35
}
