variable "environment" {
  type = string
}

variable "tenants" {
  description = "Tenant ids (the keys of the tenant-storage document)"
  type        = list(string)
}

variable "platform_thing_group_prefix" {
  description = "Prefix of the thing groups the platform creates per rollout phase (edgeplat.backends.greengrass.GROUP_PREFIX)"
  type        = string
  default     = "edgeplat-"
}

variable "tenant_group_prefix" {
  description = "Prefix of the static groups made here; must not start with platform_thing_group_prefix"
  type        = string
  default     = "fleet-"
}

variable "artifacts_bucket" {
  description = "Bucket of the Greengrass component artifacts (the agent wheel and releases)"
  type        = string
}
