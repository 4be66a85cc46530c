# AWS IoT for the Greengrass fleet: a thing group per tenant (static membership, for tenant-wide
# deployments such as the edge agent itself), the Greengrass token exchange role and its role
# alias, and the policy of the platform's own role, which creates the per-rollout thing groups
# (edgeplat-<rollout>-p<phase>, edgeplat/backends/greengrass.py) and their deployments.
# Tenant groups use another prefix: the backend reads every group under its prefix as a rollout's.

data "aws_partition" "current" {}
data "aws_caller_identity" "current" {}
data "aws_region" "current" {}

locals {
  arn_prefix = "arn:${data.aws_partition.current.partition}:iot:${data.aws_region.current.name}:${data.aws_caller_identity.current.account_id}"
}

resource "aws_iot_thing_group" "fleet" {
  name = "${var.tenant_group_prefix}${var.environment}"
  properties {
    description = "edgeplat ${var.environment}: every enrolled Greengrass core"
  }
}

resource "aws_iot_thing_group" "tenant" {
  for_each          = toset(var.tenants)
  name              = "${var.tenant_group_prefix}${var.environment}-${each.value}"
  parent_group_name = aws_iot_thing_group.fleet.name
  properties {
    description = "edgeplat ${var.environment}: Greengrass cores of tenant ${each.value}"
    attribute_payload {
      attributes = {
        tenant_id = each.value
      }
    }
  }
}

# The Greengrass token exchange service: cores assume this role through the role alias with
# their certificates, for component artifacts and their logs. Batches and desired state do
# not go this way: they use the tenant's scoped credential from Vault, or the tenant's device
# role alias (modules/tenant_storage/device_roles.tf), scoped to one device's prefix.
data "aws_iam_policy_document" "tes_trust" {
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["credentials.iot.amazonaws.com"]
    }
  }
}

resource "aws_iam_role" "token_exchange" {
  name               = "edgeplat-${var.environment}-greengrass-token-exchange"
  assume_role_policy = data.aws_iam_policy_document.tes_trust.json
}

data "aws_iam_policy_document" "token_exchange" {
  statement {
    sid       = "ComponentArtifacts"
    actions   = ["s3:GetObject"]
    resources = ["arn:${data.aws_partition.current.partition}:s3:::${var.artifacts_bucket}/*"]
  }
  statement {
    sid = "ComponentLogs"
    actions = [
      "logs:CreateLogGroup",
      "logs:CreateLogStream",
      "logs:PutLogEvents",
      "logs:DescribeLogStreams",
    ]
    resources = ["arn:${data.aws_partition.current.partition}:logs:*:${data.aws_caller_identity.current.account_id}:log-group:/aws/greengrass/*"]
  }
}

resource "aws_iam_role_policy" "token_exchange" {
  name   = "edgeplat-greengrass-token-exchange"
  role   = aws_iam_role.token_exchange.id
  policy = data.aws_iam_policy_document.token_exchange.json
}

resource "aws_iot_role_alias" "token_exchange" {
  alias               = "edgeplat-${var.environment}-greengrass-tes"
  role_arn            = aws_iam_role.token_exchange.arn
  credential_duration = 3600
}

# What the cores' certificates may do: assume the token exchange role, and nothing else here
# (Greengrass' own MQTT and shadow permissions come from its installer's policy).
resource "aws_iot_policy" "token_exchange" {
  name = "edgeplat-${var.environment}-greengrass-tes"
  policy = jsonencode({
    Version = "2012-10-17"
    Statement = [{
      Effect   = "Allow"
      Action   = "iot:AssumeRoleWithCertificate"
      Resource = aws_iot_role_alias.token_exchange.arn
    }]
  })
}

# The platform's Greengrass backend: deployments to its own thing groups only.
data "aws_iam_policy_document" "platform_greengrass" {
  # checkov:skip=CKV_AWS_111: ListThingGroups and the Greengrass deployment calls have no resource-level scoping
  # checkov:skip=CKV_AWS_356: ListThingGroups and the Greengrass deployment calls have no resource-level scoping
  statement {
    sid = "RolloutThingGroups"
    actions = [
      "iot:CreateThingGroup",
      "iot:DescribeThingGroup",
      "iot:AddThingToThingGroup",
      "iot:ListThingsInThingGroup",
    ]
    resources = ["${local.arn_prefix}:thinggroup/${var.platform_thing_group_prefix}*"]
  }
  statement {
    sid       = "Things"
    actions   = ["iot:CreateThing", "iot:DescribeThing", "iot:ListThingGroupsForThing"]
    resources = ["${local.arn_prefix}:thing/*"]
  }
  statement {
    sid       = "ListGroups"
    actions   = ["iot:ListThingGroups"]
    resources = ["*"]
  }
  statement {
    sid = "Deployments"
    actions = [
      "greengrass:CreateDeployment",
      "greengrass:CancelDeployment",
      "greengrass:GetDeployment",
      "greengrass:ListDeployments",
      "greengrass:ListEffectiveDeployments",
      "greengrass:ListInstalledComponents",
      "greengrass:GetCoreDevice",
      "iot:CancelJob",
      "iot:CreateJob",
      "iot:DescribeJob",
    ]
    resources = ["*"]
  }
}

resource "aws_iam_policy" "platform_greengrass" {
  name   = "edgeplat-${var.environment}-platform-greengrass"
  policy = data.aws_iam_policy_document.platform_greengrass.json
}
