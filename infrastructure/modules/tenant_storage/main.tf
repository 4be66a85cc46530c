# The device object store (batches, desired-state documents) and the lakehouse bucket, and one
# IAM user per tenant whose inline policy is the platform's own (edgeplat/security/
# storage_policy.py), read from the document scripts/export-tenant-storage writes: the same
# user name, path, tag and policy `edgeplat security provision-storage` expects, which then
# only issues the tenant's access key into Vault. No access key is created here.

locals {
  tenants = var.tenant_storage.tenants
}

resource "aws_kms_key" "objects" {
  # checkov:skip=CKV2_AWS_64: the key policy is data.aws_iam_policy_document.kms
  description         = "edgeplat ${var.environment}: device objects and lakehouse files"
  enable_key_rotation = true
  policy              = data.aws_iam_policy_document.kms.json
}

data "aws_caller_identity" "current" {}

# The default key policy: the account administers the key through IAM; "*" is this key.
data "aws_iam_policy_document" "kms" {
  # checkov:skip=CKV_AWS_111: a key policy's "*" is the key itself, and only the account root is trusted
  # checkov:skip=CKV_AWS_356: a key policy's "*" is the key itself
  # checkov:skip=CKV_AWS_109: the account administers its own key (AWS's default key policy)
  statement {
    sid       = "AccountAdministers"
    actions   = ["kms:*"]
    resources = ["*"]
    principals {
      type        = "AWS"
      identifiers = ["arn:aws:iam::${data.aws_caller_identity.current.account_id}:root"]
    }
  }
}

resource "aws_s3_bucket" "fleet" {
  # checkov:skip=CKV_AWS_144: restores come from versioning and the catalog backup; a replica region is the operator's choice
  bucket = var.tenant_storage.bucket
}

resource "aws_s3_bucket" "lake" {
  # checkov:skip=CKV_AWS_144: restores come from versioning and the catalog backup; a replica region is the operator's choice
  bucket = "edgeplat-${var.environment}-lake"
}

resource "aws_s3_bucket" "logs" {
  # checkov:skip=CKV_AWS_144: restores come from versioning and the catalog backup; a replica region is the operator's choice
  bucket = "edgeplat-${var.environment}-access-logs"
}

locals {
  data_buckets = {
    fleet = aws_s3_bucket.fleet.id
    lake  = aws_s3_bucket.lake.id
  }
  all_buckets = merge(local.data_buckets, { logs = aws_s3_bucket.logs.id })
}

# Versioning on every bucket: an overwritten or deleted batch or lakehouse file can be
# restored (docs/operations.md, backup and restore).
resource "aws_s3_bucket_versioning" "all" {
  for_each = local.all_buckets
  bucket   = each.value
  versioning_configuration {
    status = "Enabled"
  }
}

resource "aws_s3_bucket_server_side_encryption_configuration" "all" {
  for_each = local.all_buckets
  bucket   = each.value
  rule {
    apply_server_side_encryption_by_default {
      sse_algorithm     = "aws:kms"
      kms_master_key_id = aws_kms_key.objects.arn
    }
    bucket_key_enabled = true
  }
}

resource "aws_s3_bucket_public_access_block" "all" {
  for_each                = local.all_buckets
  bucket                  = each.value
  block_public_acls       = true
  block_public_policy     = true
  ignore_public_acls      = true
  restrict_public_buckets = true
}

# Object events to EventBridge: the batch-arrival sensor may subscribe instead of listing.
resource "aws_s3_bucket_notification" "all" {
  for_each    = local.all_buckets
  bucket      = each.value
  eventbridge = true
}

resource "aws_s3_bucket_logging" "data" {
  for_each      = local.data_buckets
  bucket        = each.value
  target_bucket = aws_s3_bucket.logs.id
  target_prefix = "${each.key}/"
}

resource "aws_s3_bucket_lifecycle_configuration" "all" {
  for_each = { for name, id in local.all_buckets : name => id if name != "fleet" }
  bucket   = each.value
  rule {
    id     = "abort-incomplete-uploads-and-expire-old-versions"
    status = "Enabled"
    filter {}
    abort_incomplete_multipart_upload {
      days_after_initiation = 7
    }
    noncurrent_version_expiration {
      noncurrent_days = var.noncurrent_version_days
    }
  }
}

# The fleet bucket has one lifecycle configuration of its own (S3 takes one per bucket): the rule
# every bucket has, plus the archive's. Settled batches the platform moved to archive/
# (edgeplat/sync/archive.py) get colder; both classes answer a GET at once, so a replay needs no
# restore step (S3 leaves objects under 128 KiB in STANDARD: they would cost more in IA).
# Quarantined objects are kept for forensics only, never replayed: they expire.
resource "aws_s3_bucket_lifecycle_configuration" "fleet" {
  bucket = aws_s3_bucket.fleet.id
  rule {
    id     = "abort-incomplete-uploads-and-expire-old-versions"
    status = "Enabled"
    filter {}
    abort_incomplete_multipart_upload {
      days_after_initiation = 7
    }
    noncurrent_version_expiration {
      noncurrent_days = var.noncurrent_version_days
    }
  }
  rule {
    id     = "archive-to-colder-storage"
    status = "Enabled"
    filter {
      prefix = local.archive_prefix
    }
    transition {
      days          = var.archive_infrequent_access_days
      storage_class = "STANDARD_IA"
    }
    transition {
      days          = var.archive_glacier_ir_days
      storage_class = "GLACIER_IR"
    }
  }
  rule {
    id     = "expire-archived-quarantine"
    status = "Enabled"
    filter {
      prefix = local.quarantine_archive_prefix
    }
    expiration {
      days = var.quarantine_archive_days
    }
  }
}

moved {
  from = aws_s3_bucket_lifecycle_configuration.all["fleet"]
  to   = aws_s3_bucket_lifecycle_configuration.fleet
}

locals {
  # the platform's ARCHIVE_PREFIX and QUARANTINE_ARCHIVE_PREFIX under the store's base prefix
  archive_prefix            = trimprefix("${var.tenant_storage.base_prefix}/archive/", "/")
  quarantine_archive_prefix = "${local.archive_prefix}quarantine/"
}

# Per-tenant prefixes: tenant=<T>/ under the base prefix; each tenant's user reaches only its own.
resource "aws_iam_user" "tenant" {
  # checkov:skip=CKV_AWS_273: a tenant's devices, not people, hold this identity (tenant_storage.py says why not STS)
  for_each = local.tenants
  name     = each.value.iam_user
  path     = var.tenant_storage.user_path
  tags = {
    (var.tenant_storage.tenant_tag) = each.key
  }
}

resource "aws_iam_user_policy" "tenant" {
  # checkov:skip=CKV_AWS_40: provisioning checks every policy reaching the user; one inline policy is what it expects
  for_each = local.tenants
  name     = var.tenant_storage.policy_name
  user     = aws_iam_user.tenant[each.key].name
  policy   = jsonencode(each.value.policy)
}
