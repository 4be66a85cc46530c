# Per-device write scopes (edgeplat/security/device_scopes.py, docs/security.md): per tenant, the
# IAM role the AWS IoT credentials provider assumes for the tenant's devices, whose policy reaches
# only tenant=<T>/device=${credentials-iot:ThingName}/, its role alias, and the IoT policy that lets
# the tenant's device certificates assume that alias and nothing else. Every document comes from
# the generated tenant-storage.json; only the alias ARN, which AWS assigns, is filled in here.
# Enrollment attaches the IoT policy to each device certificate, and the certificate to the thing
# named like the device.

locals {
  device_roles = var.tenant_storage.device_roles
}

resource "aws_iam_role" "device" {
  for_each           = local.device_roles.tenants
  name               = each.value.role_name
  assume_role_policy = jsonencode(each.value.trust_policy)
  tags = {
    (var.tenant_storage.tenant_tag) = each.key
  }
}

resource "aws_iam_role_policy" "device" {
  for_each = local.device_roles.tenants
  name     = local.device_roles.policy_name
  role     = aws_iam_role.device[each.key].id
  policy   = jsonencode(each.value.role_policy)
}

resource "aws_iot_role_alias" "device" {
  for_each            = local.device_roles.tenants
  alias               = each.value.role_alias
  role_arn            = aws_iam_role.device[each.key].arn
  credential_duration = local.device_roles.credential_duration
}

resource "aws_iot_policy" "device" {
  for_each = local.device_roles.tenants
  name     = each.value.iot_policy_name
  policy   = replace(jsonencode(each.value.iot_policy), local.device_roles.role_alias_arn_placeholder, aws_iot_role_alias.device[each.key].arn)
}
