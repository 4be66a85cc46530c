variable "environment" {
  description = "dev or prod"
  type        = string
}

variable "bucket" {
  description = "the fleet bucket whose new batch objects are notified"
  type        = string
}

variable "key_prefix" {
  description = "where new batch keys start: '<base_prefix>/tenant=' (not the archive prefix)"
  type        = string
}

variable "visibility_timeout_seconds" {
  description = "EDGEPLAT's arrival visibility timeout: a message not acked is received again after it"
  type        = number
  default     = 300
}

variable "max_receive_count" {
  description = "receives after which a message whose objects never settled moves to the dead-letter queue"
  type        = number
  default     = 100
}
