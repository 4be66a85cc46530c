variable "environment" {
  description = "dev or prod"
  type        = string
}

variable "location" {
  type    = string
  default = "westeurope"
}

variable "iothub_sku" {
  type    = string
  default = "S1"
}

variable "iothub_units" {
  type    = number
  default = 1
}
