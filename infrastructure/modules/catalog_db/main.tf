# PostgreSQL for the Dagster instance (runs, events, schedules) and the DuckLake catalog of the
# lakehouse (database `edgeplat`, created by the operator, docs/operations.md). The master
# password is generated and kept by RDS in Secrets Manager; nothing secret is in Terraform.

resource "aws_db_subnet_group" "catalog" {
  name       = "edgeplat-${var.environment}-catalog"
  subnet_ids = var.subnet_ids
}

resource "aws_security_group" "catalog" {
  name        = "edgeplat-${var.environment}-catalog"
  description = "PostgreSQL reachable from the cluster's nodes only"
  vpc_id      = var.vpc_id

  ingress {
    description     = "PostgreSQL from the Kubernetes nodes"
    from_port       = 5432
    to_port         = 5432
    protocol        = "tcp"
    security_groups = var.client_security_group_ids
  }
}

resource "aws_db_parameter_group" "catalog" {
  name   = "edgeplat-${var.environment}-catalog"
  family = "postgres16"

  parameter {
    name  = "log_min_duration_statement"
    value = "1000"
  }
  parameter {
    name  = "rds.force_ssl"
    value = "1"
  }
}

resource "aws_db_instance" "catalog" {
  # checkov:skip=CKV_AWS_157: multi_az is on in prod (var.multi_az, set by infrastructure/aws); dev runs in one zone
  identifier                          = "edgeplat-${var.environment}-catalog"
  engine                              = "postgres"
  engine_version                      = "16.4"
  instance_class                      = var.instance_class
  allocated_storage                   = var.allocated_storage_gb
  max_allocated_storage               = var.allocated_storage_gb * 4
  storage_type                        = "gp3"
  storage_encrypted                   = true
  kms_key_id                          = var.kms_key_arn
  db_name                             = "dagster"
  username                            = "dagster"
  manage_master_user_password         = true
  iam_database_authentication_enabled = true
  db_subnet_group_name                = aws_db_subnet_group.catalog.name
  vpc_security_group_ids              = [aws_security_group.catalog.id]
  parameter_group_name                = aws_db_parameter_group.catalog.name
  multi_az                            = var.multi_az
  publicly_accessible                 = false
  backup_retention_period             = var.backup_retention_days
  copy_tags_to_snapshot               = true
  deletion_protection                 = true
  skip_final_snapshot                 = false
  final_snapshot_identifier           = "edgeplat-${var.environment}-catalog-final"
  auto_minor_version_upgrade          = true
  performance_insights_enabled        = true
  performance_insights_kms_key_id     = var.kms_key_arn
  monitoring_interval                 = 60
  monitoring_role_arn                 = aws_iam_role.monitoring.arn
  enabled_cloudwatch_logs_exports     = ["postgresql", "upgrade"]
}

data "aws_iam_policy_document" "monitoring_trust" {
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["monitoring.rds.amazonaws.com"]
    }
  }
}

resource "aws_iam_role" "monitoring" {
  name               = "edgeplat-${var.environment}-rds-monitoring"
  assume_role_policy = data.aws_iam_policy_document.monitoring_trust.json
}

resource "aws_iam_role_policy_attachment" "monitoring" {
  role       = aws_iam_role.monitoring.name
  policy_arn = "arn:aws:iam::aws:policy/service-role/AmazonRDSEnhancedMonitoringRole"
}
