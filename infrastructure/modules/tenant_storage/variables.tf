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

variable "archive_infrequent_access_days" {
  description = "Days after the platform archives a settled batch (archive/ prefix) before it moves to STANDARD_IA (30 at least)"
  type        = number
  default     = 30
}

variable "archive_glacier_ir_days" {
  description = "Days after archiving before a batch moves to GLACIER_IR (still read at once by a replay)"
  type        = number
  default     = 180
}

variable "quarantine_archive_days" {
  description = "Days an archived quarantined object (archive/quarantine/) is kept for forensics"
  type        = number
  default     = 400
}
