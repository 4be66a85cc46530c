output "tenant_thing_groups" {
  value = { for t, g in aws_iot_thing_group.tenant : t => g.arn }
}

output "token_exchange_role_alias" {
  value = aws_iot_role_alias.token_exchange.alias
}

output "platform_greengrass_policy_arn" {
  value = aws_iam_policy.platform_greengrass.arn
}
