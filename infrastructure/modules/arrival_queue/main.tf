# Object-created notifications of the fleet bucket on an SQS queue: they drive the central arrival
# sensor (docs/architecture.md, "Arrivals: notifications first, listing as backstop"). Only new
# batch keys are sent (prefix <base>/tenant=, suffix .batch); the archive prefix and desired-state
# documents are not. A bucket has one notification configuration: this module owns it.

data "aws_caller_identity" "current" {}

# Its own key, because S3 must be allowed to encrypt what it sends to the queue.
resource "aws_kms_key" "queue" {
  # checkov:skip=CKV2_AWS_64: the key policy is data.aws_iam_policy_document.queue_key
  description         = "edgeplat ${var.environment}: arrival notifications"
  enable_key_rotation = true
  policy              = data.aws_iam_policy_document.queue_key.json
}

data "aws_iam_policy_document" "queue_key" {
  # checkov:skip=CKV_AWS_111: a key policy's "*" is the key itself, and only the account root and S3 are trusted
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
  statement {
    sid       = "S3SendsNotifications"
    actions   = ["kms:GenerateDataKey", "kms:Decrypt"]
    resources = ["*"]
    principals {
      type        = "Service"
      identifiers = ["s3.amazonaws.com"]
    }
    condition {
      test     = "StringEquals"
      variable = "aws:SourceAccount"
      values   = [data.aws_caller_identity.current.account_id]
    }
  }
}

# Poison notifications (copied here by the sensor, with the reason as a message attribute) and
# messages received max_receive_count times without their objects settling (the listing
# backstop and reconciliation ingest those objects anyway).
resource "aws_sqs_queue" "dead_letter" {
  name                      = "edgeplat-${var.environment}-arrivals-dlq"
  kms_master_key_id         = aws_kms_key.queue.arn
  message_retention_seconds = 1209600 # 14 days, SQS's most
}

resource "aws_sqs_queue" "arrivals" {
  name = "edgeplat-${var.environment}-arrivals"
  # a message whose objects are not in the ledger yet is received again after this (the sensor
  # acks only settled objects); above the usual time from a run request to its commit
  visibility_timeout_seconds = var.visibility_timeout_seconds
  message_retention_seconds  = 345600 # 4 days: an outage longer than that is covered by listing
  kms_master_key_id          = aws_kms_key.queue.arn
  redrive_policy = jsonencode({
    deadLetterTargetArn = aws_sqs_queue.dead_letter.arn
    maxReceiveCount     = var.max_receive_count
  })
}

data "aws_iam_policy_document" "s3_sends" {
  statement {
    sid       = "FleetBucketSendsObjectCreated"
    actions   = ["sqs:SendMessage"]
    resources = [aws_sqs_queue.arrivals.arn]
    principals {
      type        = "Service"
      identifiers = ["s3.amazonaws.com"]
    }
    condition {
      test     = "ArnEquals"
      variable = "aws:SourceArn"
      values   = ["arn:aws:s3:::${var.bucket}"]
    }
    condition {
      test     = "StringEquals"
      variable = "aws:SourceAccount"
      values   = [data.aws_caller_identity.current.account_id]
    }
  }
}

resource "aws_sqs_queue_policy" "arrivals" {
  queue_url = aws_sqs_queue.arrivals.id
  policy    = data.aws_iam_policy_document.s3_sends.json
}

resource "aws_s3_bucket_notification" "fleet" {
  bucket = var.bucket
  queue {
    queue_arn     = aws_sqs_queue.arrivals.arn
    events        = ["s3:ObjectCreated:*"]
    filter_prefix = var.key_prefix
    filter_suffix = ".batch"
  }
  depends_on = [aws_sqs_queue_policy.arrivals]
}
